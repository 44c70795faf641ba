//! The demo's batch step: `manifests/examples/batch.yaml` (100 items, one LlmJob fanned out over
//! an Indexed Job) on the same stack, its results written to a real S3-compatible object store
//! (versitygw, `testenv::s3`) that the runner pods reach through a Service, and what shows it
//! worked: the LlmJob's batch totals from its status, the number of `openai_call.task` spans
//! under its one trace id, and the number of result lines in the bucket.
//!
//! The example is read as plain YAML (not the Rust types), so only the fields the demo sets are
//! touched: the namespace, `spec.openai.baseURL` (the replay server) and, for an `s3://` output,
//! the credentials Secret the example names (created here, holding the store's usual variables
//! for the in-cluster endpoint). Everything else is applied as the example has it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use testenv::env::TestEnv;
use testenv::s3::S3Server;

use super::{NAMESPACE, Watch, kubectl, kubectl_apply, step};

/// The batch example the demo applies.
pub const EXAMPLE: &str = "manifests/examples/batch.yaml";
/// The Service the runner pods reach the object store through, in [`NAMESPACE`].
const S3_SERVICE: &str = "s3";
/// The credentials Secret when the example names none.
const DEFAULT_SECRET: &str = "llmjob-results-s3";
/// Upper bound of the wait for the trace's spans: a guard against a hang.
const TELEMETRY_WAIT: Duration = Duration::from_secs(60);

/// What the batch step saw, printed as the lines `xtask/tests/demo.rs` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The LlmJob's name.
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// `status.traceId`.
    pub trace_id: String,
    /// `openai_call.task` spans under the trace id.
    pub task_spans: usize,
    /// Result lines in the output.
    pub output_lines: usize,
}

/// Where an `s3://bucket/prefix` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    prefix: String,
}

fn parse_s3_url(url: &str) -> Option<S3Url> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| S3Url {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

/// The example as JSON, in [`NAMESPACE`], pointed at `base_url` (the replay server inside the
/// cluster, or `None` for the real API's default), with a credentials Secret named.
fn prepare(text: &str, base_url: Option<&str>) -> Result<Value> {
    let mut llmjob: Value = serde_norway::from_str(text).context("parsing the batch example")?;
    let Some(object) = llmjob.as_object_mut() else {
        bail!("the batch example is not a YAML mapping");
    };
    object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()))["namespace"] =
        Value::String(NAMESPACE.to_owned());
    if llmjob.pointer("/spec/batch").is_none() {
        bail!("{EXAMPLE} has no spec.batch");
    }
    if let Some(url) = base_url {
        llmjob["spec"]["openai"]["baseURL"] = Value::String(url.to_owned());
    }
    let s3 = llmjob
        .pointer("/spec/output/url")
        .and_then(Value::as_str)
        .is_some_and(|u| u.starts_with("s3://"));
    if s3
        && llmjob
            .pointer("/spec/output/credentialsSecretRef/name")
            .is_none()
    {
        llmjob["spec"]["output"]["credentialsSecretRef"] =
            serde_json::json!({ "name": DEFAULT_SECRET });
    }
    Ok(llmjob)
}

/// Runs the batch example on `env` and prints what it did. `base_url` is the OpenAI base URL
/// the pods use (`None`: the example's). The returned S3 server (when the output is `s3://`)
/// must outlive the caller's `--keep` instructions.
pub async fn run(
    root: &std::path::Path,
    env: &TestEnv,
    base_url: Option<&str>,
) -> Result<(BatchOutcome, Option<S3Server>)> {
    let path = root.join(EXAMPLE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let llmjob = prepare(&text, base_url)?;
    let name = llmjob
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .context("the batch example has no metadata.name")?
        .to_owned();
    let items = llmjob
        .pointer("/spec/batch/items")
        .and_then(Value::as_array)
        .map(Vec::len);
    let output_url = llmjob
        .pointer("/spec/output/url")
        .and_then(Value::as_str)
        .map(str::to_owned);

    let s3 = match output_url.as_deref().and_then(parse_s3_url) {
        Some(url) => {
            step(&format!(
                "starting the object store for the results: versitygw (Apache-2.0, S3 API, posix backend) with bucket {}, the Service {S3_SERVICE}.{NAMESPACE} and its credentials Secret",
                url.bucket
            ));
            let node = env.node().context("the demo runs on a real node")?;
            let server = S3Server::start_in(env.dir(), node.host_ip(), &url.bucket)
                .await
                .context("starting versitygw")?;
            let secret = llmjob
                .pointer("/spec/output/credentialsSecretRef/name")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_SECRET);
            let endpoint = server
                .expose(&env.client(), NAMESPACE, S3_SERVICE, secret)
                .await
                .context("exposing versitygw to the pods")?;
            node.wait_for_service(&env.client(), NAMESPACE, S3_SERVICE, 80, super::WAIT)
                .await
                .context("waiting for the object store's Service")?;
            eprintln!(
                "versitygw {} serves s3://{} to the pods at {endpoint} (Secret {NAMESPACE}/{secret}: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT, AWS_REGION, AWS_ALLOW_HTTP)",
                server.endpoint(),
                url.bucket
            );
            Some((server, url))
        }
        None => None,
    };

    step(&format!(
        "the batch: {EXAMPLE} ({} items), one LlmJob fanned out over an Indexed Job",
        items.map_or_else(|| "its".to_owned(), |n| n.to_string())
    ));
    let watch = Watch::start(env).await?;
    eprint!(
        "{}",
        kubectl_apply(env, &serde_norway::to_string(&llmjob)?)
            .await
            .context("applying the batch LlmJob")?
    );
    watch.until_finished(&name).await?;
    step("the batch LlmJob and its Indexed Job: kubectl get llmjob,jobs -o wide");
    print!(
        "{}",
        kubectl(
            env,
            &["get", "llmjob", &name, "-n", NAMESPACE, "-o", "wide"]
        )
        .await?
    );
    print!(
        "{}",
        kubectl(env, &["get", "jobs", "-n", NAMESPACE, "-o", "wide"]).await?
    );
    let json = kubectl(
        env,
        &["get", "llmjob", &name, "-n", NAMESPACE, "-o", "json"],
    )
    .await?;
    let done: Value = serde_json::from_str(&json).context("parsing the batch LlmJob")?;
    let status = done.get("status").cloned().unwrap_or_default();
    let phase = status
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned();
    let trace_id = status
        .get("traceId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    step("its batch totals: status.batch");
    let batch = status.get("batch").cloned().unwrap_or_default();
    print!("{}", serde_norway::to_string(&batch)?);
    let count = |field: &str| batch.get(field).and_then(Value::as_u64).unwrap_or_default();
    println!(
        "batch {name}: {} items, {} succeeded, {} failed, phase {phase}",
        count("items"),
        count("succeeded"),
        count("failed")
    );

    let collector = env.collector().context("the stack runs a collector")?;
    let expected = items.unwrap_or_else(|| usize::try_from(count("items")).unwrap_or_default());
    let task_spans = |t: &testenv::telemetry::Telemetry| {
        t.trace(&trace_id)
            .iter()
            .filter(|s| s.name == "openai_call.task")
            .count()
    };
    let telemetry = collector
        .wait_for(TELEMETRY_WAIT, |t| {
            (!trace_id.is_empty() && task_spans(t) >= expected).then(|| t.clone())
        })
        .await
        .or_else(|_| collector.read())
        .context("reading the collector's output")?;
    let spans = telemetry.trace(&trace_id);
    let named = |n: &str| spans.iter().filter(|s| s.name == n).count();
    step("its one trace, as received by the collector");
    println!(
        "trace {trace_id}: {} spans: {} llmjob.launch, {} llm_job.workflow (one per pod), {} openai_call.task (one per item), {} chat spans",
        spans.len(),
        named("llmjob.launch"),
        named("llm_job.workflow"),
        named("openai_call.task"),
        spans.iter().filter(|s| s.name.starts_with("chat ")).count()
    );
    let outcome_spans = named("openai_call.task");

    let output_lines = match &s3 {
        Some((server, url)) => {
            step(&format!(
                "its results: the JSON Lines objects under s3://{}/{} (through the S3 API)",
                url.bucket, url.prefix
            ));
            let keys = server.list(&url.prefix).await?;
            let lines = server.lines(&url.prefix).await?;
            for key in &keys {
                println!("s3://{}/{key}", url.bucket);
            }
            if let Some(first) = lines.first() {
                println!("first line: {first}");
            }
            println!(
                "output s3://{}/{}: {} objects, {} lines",
                url.bucket,
                url.prefix,
                keys.len(),
                lines.len()
            );
            lines.len()
        }
        None => {
            let name = llmjob
                .pointer("/spec/output/configMap/name")
                .and_then(Value::as_str)
                .context("the batch example's output is neither s3:// nor a ConfigMap")?;
            step(&format!(
                "its results: the JSON Lines keys of ConfigMap {NAMESPACE}/{name}"
            ));
            let json = kubectl(
                env,
                &["get", "configmap", name, "-n", NAMESPACE, "-o", "json"],
            )
            .await?;
            let cm: Value = serde_json::from_str(&json).context("parsing the output ConfigMap")?;
            let data = cm
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let lines: usize = data
                .values()
                .filter_map(Value::as_str)
                .map(|v| v.lines().count())
                .sum();
            println!(
                "output configmap://{name}: {} keys, {lines} lines",
                data.len()
            );
            lines
        }
    };
    let outcome = BatchOutcome {
        name,
        phase,
        trace_id,
        task_spans: outcome_spans,
        output_lines,
    };
    Ok((outcome, s3.map(|(server, _)| server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_s3_url("s3://results/batch/run-1/"),
            Some(S3Url {
                bucket: "results".into(),
                prefix: "batch/run-1".into()
            })
        );
        assert_eq!(
            parse_s3_url("s3://results"),
            Some(S3Url {
                bucket: "results".into(),
                prefix: String::new()
            })
        );
        assert_eq!(parse_s3_url("s3:///x"), None);
        assert_eq!(parse_s3_url("gs://b/x"), None);
    }

    #[test]
    fn the_example_is_pointed_at_the_demo() {
        let text = "apiVersion: llmjob.example.com/v1alpha1\nkind: LlmJob\nmetadata:\n  name: b\nspec:\n  openai:\n    model: gpt-4o-mini\n  batch:\n    items:\n    - prompt: a\n  output:\n    url: s3://r/x\n";
        let llmjob = prepare(text, Some("http://replay/v1")).unwrap();
        assert_eq!(llmjob["metadata"]["namespace"], NAMESPACE);
        assert_eq!(llmjob["spec"]["openai"]["baseURL"], "http://replay/v1");
        assert_eq!(
            llmjob["spec"]["output"]["credentialsSecretRef"]["name"],
            DEFAULT_SECRET
        );
        let named = text.replace(
            "url: s3://r/x\n",
            "url: s3://r/x\n    credentialsSecretRef:\n      name: mine\n",
        );
        let llmjob = prepare(&named, None).unwrap();
        assert_eq!(
            llmjob["spec"]["output"]["credentialsSecretRef"]["name"],
            "mine"
        );
        assert!(llmjob["spec"]["openai"].get("baseURL").is_none());
        assert!(prepare("kind: LlmJob\nspec: {}\n", None).is_err());
    }
}
