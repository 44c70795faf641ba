//! Issue 17 end to end on the real node: a batch LlmJob becomes an Indexed Job whose pods (the
//! runner's batch mode, from the runner image) each take their shard of the items from the
//! operator's input ConfigMap, answer them through the replay server, write their results to a
//! ConfigMap output, and report their totals, which the operator sums into the status. The
//! whole LlmJob is one trace. A batch whose s3 output names a credentials Secret that does not
//! exist waits, says so in its status and an Event, and runs once the Secret is created.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use llmjob_crds::v1alpha1::Phase;
use llmjob_operator::input;
use openai_replay::ReplayConfig;
use testenv::node::services;
use testenv::s3::S3Server;

/// Creates `value` (a namespaced object of kind `K`) in `ns`.
#[allow(clippy::expect_used)]
async fn create<K>(env: &testenv::env::TestEnv, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(value).expect("an object");
    Api::<K>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("creating an object");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_runs_as_an_indexed_job_and_reports_its_totals() {
    let env = env().await;
    let ns = namespace_with_secret(env, "batch").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    // The pods write their results to ConfigMap `results` as ServiceAccount `batch-writer`
    // (docs/batches.md: the Role a ConfigMap output needs).
    create::<ServiceAccount>(
        env,
        &ns,
        serde_json::json!({"metadata": {"name": "batch-writer"}}),
    )
    .await;
    create::<Role>(
        env,
        &ns,
        serde_json::json!({"metadata": {"name": "batch-writer"}, "rules": [{"apiGroups": [""],
            "resources": ["configmaps"], "resourceNames": ["results"], "verbs": ["get", "patch"]}]}),
    )
    .await;
    create::<RoleBinding>(
        env,
        &ns,
        serde_json::json!({"metadata": {"name": "batch-writer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "batch-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "batch-writer", "namespace": ns}]}),
    )
    .await;
    create::<ConfigMap>(
        env,
        &ns,
        serde_json::json!({"metadata": {"name": "results"}}),
    )
    .await;
    let _op = Operator::start(env, &ns, &["--allow-service-accounts=true"]).await;

    let ids = ["a", "b", "c", "d", "e"];
    let mut manifest = llmjob_json("many", &replay.base_url());
    let spec = manifest["spec"].as_object_mut().expect("spec");
    spec.remove("prompt");
    spec.insert(
        "batch".into(),
        serde_json::json!({
            "items": ids.iter().map(|id| serde_json::json!({"id": id, "prompt": format!("Say {id}.")})).collect::<Vec<_>>(),
            "itemsPerPod": 2, "parallelism": 2, "concurrency": 2,
            "rateLimit": {"requestsPerMinute": 600}
        }),
    );
    spec.insert(
        "output".into(),
        serde_json::json!({"configMap": {"name": "results"}}),
    );
    spec.insert(
        "pod".into(),
        serde_json::json!({"serviceAccountName": "batch-writer"}),
    );
    create_llmjob(env, &ns, manifest).await;
    let done = wait_for_phase(env, &ns, "many", Phase::Succeeded).await;
    let status = done.status.clone().expect("status");

    let batch = status.batch.as_ref().expect("status.batch");
    assert_eq!(
        (
            batch.items,
            batch.succeeded,
            batch.failed,
            batch.shards_done,
            batch.shards
        ),
        (Some(5), 5, 0, 3, Some(3)),
        "{batch:?}"
    );
    assert_eq!(batch.output.as_deref(), Some("configmap://results"));
    assert!(batch.item_errors.is_empty(), "{batch:?}");
    let result = status.result.as_ref().expect("status.result");
    assert!(
        result
            .usage
            .as_ref()
            .and_then(|u| u.total_tokens)
            .is_some_and(|t| t > 0),
        "{result:?}"
    );
    assert_eq!(result.attempts, Some(5), "one attempt per item");

    let job = Api::<Job>::namespaced(env.client(), &ns)
        .get("many")
        .await
        .expect("the Job");
    let job_spec = job.spec.expect("spec");
    assert_eq!(job_spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(
        (job_spec.completions, job_spec.parallelism),
        (Some(3), Some(2))
    );
    let items = Api::<ConfigMap>::namespaced(env.client(), &ns)
        .get(&input::config_map_name("many"))
        .await
        .expect("the input ConfigMap");
    assert_eq!(
        items
            .data
            .as_ref()
            .map(|d| input::count_items(&d[input::ITEMS_KEY])),
        Some(5)
    );

    // Every item answered once, in shard order, in the output ConfigMap.
    let results = Api::<ConfigMap>::namespaced(env.client(), &ns)
        .get("results")
        .await
        .expect("the output ConfigMap")
        .data
        .unwrap_or_default();
    let parts: BTreeMap<_, _> = results
        .iter()
        .filter(|(k, _)| k.starts_with("part-"))
        .collect();
    assert_eq!(
        parts.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    );
    let lines: Vec<serde_json::Value> = parts
        .values()
        .flat_map(|text| text.lines())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let got: Vec<_> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, ids);
    assert!(
        lines.iter().all(|l| l["status"] == "succeeded"),
        "{lines:?}"
    );
    let chats = replay
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(chats, 5, "one request per item");

    // One trace: the launch span, a workflow span per pod, a task span per item.
    let trace_id = status.trace_id.clone().expect("trace id");
    let collector = env.collector().expect("collector");
    let telemetry = collector
        .wait_for(WAIT, |t| {
            let spans = t.trace(&trace_id);
            (spans
                .iter()
                .filter(|s| s.name == "openai_call.task")
                .count()
                == 5
                && spans
                    .iter()
                    .filter(|s| s.name == "llm_job.workflow")
                    .count()
                    == 3)
                .then(|| t.clone())
        })
        .await
        .expect("every pod's and item's span in the run's trace");
    assert!(
        telemetry
            .trace(&trace_id)
            .iter()
            .any(|s| s.name == "llmjob.launch")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_output_credentials_secret_is_reported_until_it_is_created() {
    let env = env().await;
    let ns = namespace_with_secret(env, "creds").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    // The object store the pods write to, behind Service `s3`; its credentials Secret is not
    // created yet.
    let node = env.node().expect("a real node");
    let s3 = S3Server::start_in(env.dir(), node.host_ip(), "results")
        .await
        .expect("starting versitygw");
    let std::net::IpAddr::V4(host) = s3.addr().ip() else {
        panic!("versitygw listens on {}, not IPv4", s3.addr());
    };
    let endpoint = services::host_http_service(&env.client(), &ns, "s3", host, s3.addr().port())
        .await
        .expect("the object store's Service");
    node.wait_for_service(&env.client(), &ns, "s3", 80, WAIT)
        .await
        .expect("kube-proxy serving the object store's Service");
    let _op = Operator::start(env, &ns, &[]).await;

    let mut manifest = llmjob_json("stored", &replay.base_url());
    let spec = manifest["spec"].as_object_mut().expect("spec");
    spec.remove("prompt");
    spec.insert(
        "batch".into(),
        serde_json::json!({"items": [{"id": "a", "prompt": "Say a."}, {"id": "b", "prompt": "Say b."}]}),
    );
    spec.insert(
        "output".into(),
        serde_json::json!({"url": s3.url("run-1"), "credentialsSecretRef": {"name": "s3-credentials"}}),
    );
    create_llmjob(env, &ns, manifest).await;

    // The kubelet cannot mount the Secret: the pod stays in ContainerCreating, and the status
    // says which Secret to create and which field names it.
    let blocked = wait_for_stalled(env, &ns, "stored", "SecretNotFound").await;
    assert_eq!(
        blocked.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let (_, _, message) = condition(&blocked, "Stalled").expect("Stalled");
    assert!(
        message.starts_with(&format!(
            "Secret {ns}/s3-credentials (spec.output.credentialsSecretRef) not found: create it"
        )),
        "{message}"
    );
    let note = wait_for_event(env, &ns, "stored", "SecretNotFound").await;
    assert!(
        note.contains("s3-credentials (spec.output.credentialsSecretRef)"),
        "{note}"
    );
    assert!(
        events_of(env, &ns, "stored")
            .await
            .iter()
            .any(|(type_, reason, _)| type_ == "Warning" && reason == "SecretNotFound")
    );
    assert!(
        replay.requests().is_empty(),
        "nothing ran without the Secret"
    );

    // The Secret appears: the kubelet mounts it on its next retry (its backoff grows to two
    // minutes), the pod starts, the items are written to the store.
    Api::<Secret>::namespaced(env.client(), &ns)
        .create(
            &PostParams::default(),
            &s3.secret(&ns, "s3-credentials", &endpoint),
        )
        .await
        .expect("creating the credentials Secret");
    let done = wait_for_phase_within(
        env,
        &ns,
        "stored",
        Phase::Succeeded,
        std::time::Duration::from_secs(300),
    )
    .await;
    let (stalled, reason, _) = condition(&done, "Stalled").expect("Stalled");
    assert_eq!(stalled, "False", "{reason}");
    let batch = done
        .status
        .as_ref()
        .and_then(|s| s.batch.clone())
        .expect("status.batch");
    assert_eq!(
        (batch.items, batch.succeeded, batch.failed),
        (Some(2), 2, 0)
    );
    let lines = s3.lines("run-1").await.expect("the results in the store");
    assert_eq!(lines.len(), 2, "{lines:?}");
}
