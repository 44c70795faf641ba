//! Bad input is rejected at admission by the CRD's OpenAPI schema and CEL rules, with a message
//! that says what to do, against a real kube-apiserver (no kubelet: nothing here runs a pod).
//! Valid manifests (including every example in `manifests/examples/`) are accepted. The tenant
//! policy (docs/security.md) is refused at admission by the ValidatingAdmissionPolicy of
//! `manifests/install.yaml`, loosened by namespace labels, and refused again by the operator
//! before a launch.

mod common;

use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use llmjob_crds::v1alpha1::LlmJob;

/// A valid spec, changed by `edit`.
fn manifest(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut m = serde_json::json!({
        "apiVersion": "llmjob.dev/v1alpha1",
        "kind": "LlmJob",
        "metadata": {"name": "candidate"},
        "spec": {
            "prompt": "hi",
            "openai": {"apiKeySecretRef": {"name": "openai"}}
        }
    });
    edit(&mut m);
    m
}

/// Creates `manifest` with a server-side dry run, untyped so that unknown fields and wrong types
/// reach the API server; the error message if rejected.
async fn dry_run(api: &Api<DynamicObject>, manifest: &serde_json::Value) -> Result<(), String> {
    let mut manifest = manifest.clone();
    if let Some(meta) = manifest["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    let object: DynamicObject = serde_json::from_value(manifest).map_err(|e| e.to_string())?;
    let name = object.metadata.name.clone().unwrap_or_default();
    // What `kubectl apply --server-side --dry-run=server` sends (kubectl validates strictly by
    // default, so unknown fields are errors, not silently pruned).
    let pp = PatchParams::apply("llmjob-tests")
        .dry_run()
        .validation_strict();
    api.patch(&name, &pp, &Patch::Apply(&object))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Every CEL rule of the generated CRD: (rule, message), from each `x-kubernetes-validations`.
#[allow(clippy::expect_used)]
fn cel_rules() -> Vec<(String, String)> {
    fn collect(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for rule in map
                    .get("x-kubernetes-validations")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    out.push((
                        rule["rule"].as_str().unwrap_or_default().to_owned(),
                        rule["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                map.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let crd = serde_json::to_value(llmjob_crds::v1alpha1::crd()).expect("the CRD serialises");
    let mut rules = Vec::new();
    collect(&crd, &mut rules);
    assert!(
        !rules.is_empty(),
        "the CRD has no CEL rules: the walk is broken"
    );
    for (rule, message) in &rules {
        assert!(!message.is_empty(), "the CEL rule {rule:?} has no message");
    }
    rules
}

fn untyped(env: &testenv::env::TestEnv, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(env.client(), ns, &ApiResource::erase::<LlmJob>(&()))
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_llmjobs_are_rejected_with_actionable_messages() {
    let env = api_env().await;
    let ns = env.create_namespace("admission").await.expect("namespace");
    let api = untyped(env, &ns);
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no prompt nor messages",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
            }),
            "set exactly one of spec.prompt and spec.messages",
        ),
        (
            "prompt and messages",
            Box::new(|m| {
                m["spec"]["messages"] = serde_json::json!([{"role": "user", "content": "x"}])
            }),
            "set exactly one of spec.prompt and spec.messages",
        ),
        (
            "empty prompt",
            Box::new(|m| m["spec"]["prompt"] = "".into()),
            "spec.prompt",
        ),
        (
            "empty messages",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
                m["spec"]["messages"] = serde_json::json!([]);
            }),
            "spec.messages",
        ),
        (
            "unknown role",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
                m["spec"]["messages"] = serde_json::json!([{"role": "robot", "content": "x"}]);
            }),
            "role",
        ),
        (
            "message without content",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
                m["spec"]["messages"] = serde_json::json!([{"role": "user"}]);
            }),
            "content",
        ),
        (
            "bad participant name",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
                m["spec"]["messages"] =
                    serde_json::json!([{"role": "user", "content": "x", "name": "a b"}]);
            }),
            "name",
        ),
        (
            "empty model",
            Box::new(|m| m["spec"]["model"] = "".into()),
            "spec.model",
        ),
        (
            "temperature too high",
            Box::new(|m| m["spec"]["parameters"] = serde_json::json!({"temperature": 2.5})),
            "temperature",
        ),
        (
            "negative temperature",
            Box::new(|m| m["spec"]["parameters"] = serde_json::json!({"temperature": -1})),
            "temperature",
        ),
        (
            "top_p above 1",
            Box::new(|m| m["spec"]["parameters"] = serde_json::json!({"topP": 1.5})),
            "topP",
        ),
        (
            "zero max tokens",
            Box::new(|m| m["spec"]["parameters"] = serde_json::json!({"maxTokens": 0})),
            "maxTokens",
        ),
        (
            "temperature as text",
            Box::new(|m| m["spec"]["parameters"] = serde_json::json!({"temperature": "hot"})),
            "temperature",
        ),
        (
            "no API key Secret",
            Box::new(|m| m["spec"]["openai"] = serde_json::json!({})),
            "apiKeySecretRef",
        ),
        (
            "Secret name not a DNS name",
            Box::new(|m| m["spec"]["openai"]["apiKeySecretRef"]["name"] = "Not_A_Name".into()),
            "apiKeySecretRef.name",
        ),
        (
            "baseURL without scheme",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "api.openai.com/v1".into()),
            "spec.openai.baseURL must be an http:// or https:// URL",
        ),
        (
            "ftp baseURL",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "ftp://x/v1".into()),
            "spec.openai.baseURL must be an http:// or https:// URL",
        ),
        (
            "unknown OTLP protocol",
            Box::new(|m| m["spec"]["telemetry"] = serde_json::json!({"protocol": "http/json"})),
            "protocol",
        ),
        (
            "endpoint with a path only",
            Box::new(|m| m["spec"]["telemetry"] = serde_json::json!({"endpoint": "/v1/traces"})),
            "spec.telemetry.endpoint must be host:port or an http(s):// URL",
        ),
        (
            "unknown content capture",
            Box::new(|m| m["spec"]["telemetry"] = serde_json::json!({"contentCapture": "some"})),
            "contentCapture",
        ),
        (
            "reserved resource attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"k8s.pod.name": "x"}})
            }),
            "must not set service.*, k8s.*, llmjob.*",
        ),
        (
            "service.name as attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"service.name": "x"}})
            }),
            "must not set service.*, k8s.*, llmjob.*",
        ),
        (
            "service.version as attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"service.version": "x"}})
            }),
            "must not set service.*, k8s.*, llmjob.*",
        ),
        (
            "llmjob.name as attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"llmjob.name": "x"}})
            }),
            "must not set service.*, k8s.*, llmjob.*",
        ),
        (
            "deployment.environment.name as attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] = serde_json::json!(
                    {"resourceAttributes": {"deployment.environment.name": "x"}}
                )
            }),
            "must not set service.*, k8s.*, llmjob.*",
        ),
        (
            "attribute value too long",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"team": "x".repeat(256)}})
            }),
            "resourceAttributes values must be at most 255 characters",
        ),
        (
            "bad attribute key",
            Box::new(|m| {
                m["spec"]["telemetry"] = serde_json::json!({"resourceAttributes": {"a b": "x"}})
            }),
            "resourceAttributes keys must be",
        ),
        (
            "timeout not a duration",
            Box::new(|m| m["spec"]["run"] = serde_json::json!({"timeout": "soon"})),
            "spec.run.timeout",
        ),
        (
            "timeout above 24h",
            Box::new(|m| m["spec"]["run"] = serde_json::json!({"timeout": "25h"})),
            "spec.run.timeout must be between 1s and 24h",
        ),
        (
            "zero attempts",
            Box::new(|m| m["spec"]["run"] = serde_json::json!({"maxAttempts": 0})),
            "maxAttempts",
        ),
        (
            "too many attempts",
            Box::new(|m| m["spec"]["run"] = serde_json::json!({"maxAttempts": 21})),
            "maxAttempts",
        ),
        (
            "negative backoffLimit",
            Box::new(|m| m["spec"]["run"] = serde_json::json!({"backoffLimit": -1})),
            "backoffLimit",
        ),
        (
            "reserved env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "OPENAI_API_KEY", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "reserved OTEL env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "OTEL_SERVICE_NAME", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "OTEL_ prefix env var (export headers)",
            Box::new(|m| {
                m["spec"]["pod"] = serde_json::json!({"env": [
                    {"name": "A", "value": "x"},
                    {"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "authorization=x"}
                ]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "OPENAI_ prefix env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "OPENAI_ORG_ID", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "LLMJOB_ prefix env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "LLMJOB_ANYTHING", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "TRACEPARENT prefix env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "TRACEPARENT", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "TRACESTATE env var",
            Box::new(|m| {
                m["spec"]["pod"] =
                    serde_json::json!({"env": [{"name": "TRACESTATE", "value": "x"}]})
            }),
            "spec.pod.env must not set a variable the operator sets itself",
        ),
        (
            "unknown field",
            Box::new(|m| m["spec"]["promt"] = "typo".into()),
            "promt",
        ),
    ];
    let mut problems = Vec::new();
    let mut rejections = Vec::new();
    for (what, edit, want) in cases
        .into_iter()
        .chain(request_option_cases())
        .chain(batch_cases())
    {
        match dry_run(&api, &manifest(edit)).await {
            Ok(()) => problems.push(format!("{what}: accepted")),
            Err(message) if !message.contains(want) => problems.push(format!(
                "{what}: message {message:?} does not contain {want:?}"
            )),
            Err(message) => rejections.push(message),
        }
    }
    // Every CEL rule of the CRD is exercised: its message is what some case got back. Transition
    // rules (`oldSelf`) need an update, not a create: the_spec_is_immutable_except_suspend has them.
    for (rule, message) in cel_rules() {
        if rule.contains("oldSelf") {
            assert!(
                message.contains("spec is immutable"),
                "a new transition rule needs a test like the_spec_is_immutable_except_suspend: {rule}"
            );
        } else if !rejections.iter().any(|r| r.contains(&message)) {
            problems.push(format!(
                "no case is rejected by the CEL rule {rule:?} (message {message:?})"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

type OptionEdit = Box<dyn FnOnce(&mut serde_json::Value)>;

/// A valid batch spec (`spec.batch` + `spec.output`, no prompt), changed by `edit`.
fn batch_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    manifest(|m| {
        m["spec"].as_object_mut().map(|s| s.remove("prompt"));
        m["spec"]["batch"] = serde_json::json!({
            "items": [{"id": "a", "prompt": "one"}, {"messages": [{"role": "user", "content": "two"}]}],
            "itemsPerPod": 1, "parallelism": 2, "concurrency": 4,
            "rateLimit": {"requestsPerMinute": 60, "tokensPerMinute": 10000},
            "maxFailedItems": 1
        });
        m["spec"]["output"] = serde_json::json!({"url": "s3://results/run-1",
            "credentialsSecretRef": {"name": "s3-credentials"}});
        edit(m);
    })
}

/// Batches (issue 17) that admission refuses: run by
/// `invalid_llmjobs_are_rejected_with_actionable_messages`, which also checks that every CEL
/// rule is exercised.
fn batch_cases() -> Vec<(&'static str, OptionEdit, &'static str)> {
    // Each case edits the valid batch spec (the `manifest` it gets is replaced wholesale).
    fn batch(edit: impl FnOnce(&mut serde_json::Value) + 'static) -> OptionEdit {
        Box::new(move |m| *m = batch_manifest(edit))
    }
    let long = "x".repeat(60_000);
    vec![
        (
            "batch and prompt",
            batch(|m| m["spec"]["prompt"] = "hi".into()),
            "spec.batch is exclusive with spec.prompt and spec.messages",
        ),
        (
            "batch without output",
            batch(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("output"));
            }),
            "spec.batch needs spec.output",
        ),
        (
            "output without batch",
            Box::new(|m| m["spec"]["output"] = serde_json::json!({"url": "s3://b/p"})),
            "spec.batch needs spec.output",
        ),
        (
            "items and itemsFrom",
            batch(|m| {
                m["spec"]["batch"]["itemsFrom"] =
                    serde_json::json!({"configMapKeyRef": {"name": "items", "key": "items.jsonl"}})
            }),
            "set exactly one of spec.batch.items (inline) and spec.batch.itemsFrom",
        ),
        (
            "neither items nor itemsFrom",
            batch(|m| {
                m["spec"]["batch"]
                    .as_object_mut()
                    .map(|b| b.remove("items"));
            }),
            "set exactly one of spec.batch.items (inline) and spec.batch.itemsFrom",
        ),
        (
            "empty items",
            batch(|m| m["spec"]["batch"]["items"] = serde_json::json!([])),
            "spec.batch.items",
        ),
        (
            "item with prompt and messages",
            batch(|m| {
                m["spec"]["batch"]["items"] = serde_json::json!([{"prompt": "x",
                    "messages": [{"role": "user", "content": "y"}]}])
            }),
            "each item of spec.batch.items sets exactly one of prompt and messages",
        ),
        (
            "inline items over the ConfigMap budget",
            batch(move |m| {
                let items: Vec<_> = (0..17)
                    .map(|_| serde_json::json!({"prompt": long.clone()}))
                    .collect();
                m["spec"]["batch"]["items"] = serde_json::Value::from(items);
            }),
            "spec.batch.items hold at most 1000000 characters",
        ),
        (
            "concurrency above 64",
            batch(|m| m["spec"]["batch"]["concurrency"] = 65.into()),
            "spec.batch.concurrency",
        ),
        (
            "zero items per pod",
            batch(|m| m["spec"]["batch"]["itemsPerPod"] = 0.into()),
            "spec.batch.itemsPerPod",
        ),
        (
            "negative failure budget",
            batch(|m| m["spec"]["batch"]["maxFailedItems"] = (-1).into()),
            "spec.batch.maxFailedItems",
        ),
        (
            "request limit below parallelism",
            batch(|m| m["spec"]["batch"]["rateLimit"]["requestsPerMinute"] = 1.into()),
            "spec.batch.rateLimit.requestsPerMinute must be at least spec.batch.parallelism",
        ),
        (
            "token limit below parallelism",
            batch(|m| m["spec"]["batch"]["rateLimit"]["tokensPerMinute"] = 1.into()),
            "spec.batch.rateLimit.tokensPerMinute must be at least spec.batch.parallelism",
        ),
        (
            "output url and configMap",
            batch(|m| m["spec"]["output"]["configMap"] = serde_json::json!({"name": "results"})),
            "set exactly one of spec.output.url and spec.output.configMap",
        ),
        (
            "credentials with a ConfigMap output",
            batch(|m| {
                m["spec"]["output"] = serde_json::json!({"configMap": {"name": "results"},
                    "credentialsSecretRef": {"name": "s3-credentials"}})
            }),
            "spec.output.credentialsSecretRef goes with spec.output.url",
        ),
        (
            "http output url",
            batch(|m| m["spec"]["output"]["url"] = "https://bucket.example/results".into()),
            "spec.output.url must be an s3://, gs://, az:// or file:// URL",
        ),
        (
            "messages over the ConfigMap budget",
            Box::new(|m| {
                m["spec"].as_object_mut().map(|s| s.remove("prompt"));
                let content = "y".repeat(65_536);
                let messages: Vec<_> = (0..16)
                    .map(|_| serde_json::json!({"role": "user", "content": content.clone()}))
                    .collect();
                m["spec"]["messages"] = serde_json::Value::from(messages);
            }),
            "spec.messages hold at most 1000000 characters of content in all",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_batches_are_accepted() {
    let env = api_env().await;
    let ns = env.create_namespace("batches").await.expect("namespace");
    let api = untyped(env, &ns);
    dry_run(&api, &batch_manifest(|_| {}))
        .await
        .unwrap_or_else(|e| panic!("inline items to s3: {e}"));
    let from_config_map = batch_manifest(|m| {
        m["spec"]["batch"] = serde_json::json!({
            "itemsFrom": {"configMapKeyRef": {"name": "items", "key": "items.jsonl"}}
        });
        m["spec"]["output"] = serde_json::json!({"configMap": {"name": "results"}});
    });
    dry_run(&api, &from_config_map)
        .await
        .unwrap_or_else(|e| panic!("items from a ConfigMap to a ConfigMap: {e}"));
    for url in ["gs://b/p", "az://c/p", "file:///results"] {
        let m = batch_manifest(|m| m["spec"]["output"] = serde_json::json!({"url": url}));
        dry_run(&api, &m)
            .await
            .unwrap_or_else(|e| panic!("output {url}: {e}"));
    }
    // The largest inline batch admission takes: 10,000 items.
    let many = batch_manifest(|m| {
        let items: Vec<_> = (0..10_000)
            .map(|i| serde_json::json!({"prompt": format!("item {i}")}))
            .collect();
        m["spec"]["batch"]["items"] = serde_json::Value::from(items);
    });
    dry_run(&api, &many)
        .await
        .unwrap_or_else(|e| panic!("10,000 inline items: {e}"));
    // A large single chat (issue 19): 15 messages of 65,536 characters, over the 128 KiB of an
    // environment variable and under the input ConfigMap's budget.
    let large = manifest(|m| {
        m["spec"].as_object_mut().map(|s| s.remove("prompt"));
        let content = "y".repeat(65_536);
        let messages: Vec<_> = (0..15)
            .map(|_| serde_json::json!({"role": "user", "content": content.clone()}))
            .collect();
        m["spec"]["messages"] = serde_json::Value::from(messages);
    });
    dry_run(&api, &large)
        .await
        .unwrap_or_else(|e| panic!("983,040 characters of messages: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_and_its_output_are_immutable() {
    let env = api_env().await;
    let ns = env
        .create_namespace("batch-immutable")
        .await
        .expect("namespace");
    let api: Api<LlmJob> = Api::namespaced(env.client(), &ns);
    let created: LlmJob =
        serde_json::from_value(batch_manifest(|m| m["spec"]["suspend"] = true.into()))
            .expect("LlmJob");
    api.create(&PostParams::default(), &created)
        .await
        .expect("create");
    for (what, patch) in [
        (
            "parallelism",
            serde_json::json!({"spec": {"batch": {"parallelism": 3}}}),
        ),
        (
            "output",
            serde_json::json!({"spec": {"output": {"url": "s3://other/p"}}}),
        ),
    ] {
        let err = api
            .patch("candidate", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect_err(what);
        assert!(
            err.to_string().contains("spec is immutable"),
            "{what}: {err}"
        );
    }
    api.patch(
        "candidate",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("suspend may change");
}

/// Request options and connection settings that admission refuses (issue 20 item 4): run by
/// `invalid_llmjobs_are_rejected_with_actionable_messages`, which also checks that every CEL
/// rule is exercised.
fn request_option_cases() -> Vec<(&'static str, OptionEdit, &'static str)> {
    let param = |field: &'static str, value: serde_json::Value| -> OptionEdit {
        Box::new(move |m| m["spec"]["parameters"] = serde_json::json!({ field: value }))
    };
    let openai = |field: &'static str, value: &'static str| -> OptionEdit {
        Box::new(move |m| m["spec"]["openai"][field] = value.into())
    };
    let tool = serde_json::json!([{"type": "function", "function": {"name": "get_weather"}}]);
    vec![
        (
            "frequency penalty above 2",
            param("frequencyPenalty", 3.into()),
            "frequencyPenalty",
        ),
        (
            "presence penalty below -2",
            param("presencePenalty", (-2.5).into()),
            "presencePenalty",
        ),
        (
            "no choices",
            param("choiceCount", 0.into()),
            "spec.parameters.choiceCount",
        ),
        (
            "too many choices",
            param("choiceCount", 129.into()),
            "spec.parameters.choiceCount",
        ),
        (
            "five stop sequences",
            param("stop", serde_json::json!(["a", "b", "c", "d", "e"])),
            "spec.parameters.stop",
        ),
        (
            "a tool name with a space",
            param(
                "tools",
                serde_json::json!([{"type": "function", "function": {"name": "get weather"}}]),
            ),
            "spec.parameters.tools[0].function.name",
        ),
        (
            "a tool that is not a function",
            param(
                "tools",
                serde_json::json!([{"type": "retrieval", "function": {"name": "f"}}]),
            ),
            "spec.parameters.tools[0].type",
        ),
        (
            "a tool choice without tools",
            param("toolChoice", "auto".into()),
            "spec.parameters.toolChoice needs spec.parameters.tools",
        ),
        (
            "a tool choice naming no tool",
            Box::new(move |m| {
                m["spec"]["parameters"] = serde_json::json!({"tools": tool, "toolChoice": "other"})
            }),
            "spec.parameters.toolChoice must be none, auto, required or the name of one of",
        ),
        (
            "json_schema without a schema",
            param("responseFormat", serde_json::json!({"type": "json_schema"})),
            "spec.parameters.responseFormat.jsonSchema is required with type json_schema",
        ),
        (
            "a schema with type json_object",
            param(
                "responseFormat",
                serde_json::json!({"type": "json_object",
                    "jsonSchema": {"name": "a", "schema": {"type": "object"}}}),
            ),
            "spec.parameters.responseFormat.jsonSchema is required with type json_schema",
        ),
        (
            "an unknown response format",
            param("responseFormat", serde_json::json!({"type": "yaml"})),
            "spec.parameters.responseFormat.type",
        ),
        (
            "an unknown reasoning effort",
            param("reasoningEffort", "extreme".into()),
            "reasoningEffort",
        ),
        (
            "an unknown service tier",
            param("serviceTier", "gold".into()),
            "serviceTier",
        ),
        (
            "an empty user",
            param("user", "".into()),
            "spec.parameters.user",
        ),
        (
            "an unknown auth style",
            openai("authStyle", "basic"),
            "authStyle",
        ),
        (
            "an api version with a space",
            openai("apiVersion", "2024 10"),
            "apiVersion",
        ),
        (
            "an organisation with a space",
            openai("organization", "org 1"),
            "organization",
        ),
        (
            "a project with a line break",
            openai("project", "proj\n2"),
            "project",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_request_options_are_accepted() {
    let env = api_env().await;
    let ns = env.create_namespace("options").await.expect("namespace");
    let api = untyped(env, &ns);
    let all = manifest(|m| {
        m["spec"]["openai"] = serde_json::json!({
            "apiKeySecretRef": {"name": "openai"},
            "baseURL": "https://res.openai.azure.com/openai/deployments/gpt-4o",
            "organization": "org-1", "project": "proj_2",
            "apiVersion": "2025-04-01-preview", "authStyle": "api-key"
        });
        m["spec"]["parameters"] = serde_json::json!({
            "stop": ["END"], "frequencyPenalty": -2, "presencePenalty": 2, "choiceCount": 128,
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "d", "strict": true,
                "parameters": {"type": "object", "properties": {"location": {"type": "string",
                    "enum": ["a", "b"]}}, "required": ["location"], "additionalProperties": false}}}],
            "toolChoice": "get_weather",
            "responseFormat": {"type": "json_schema", "jsonSchema": {"name": "answer",
                "schema": {"type": "object", "$defs": {"x": {"type": "string"}}}, "strict": true}},
            "reasoningEffort": "xhigh", "serviceTier": "priority", "user": "u-1"
        });
    });
    dry_run(&api, &all)
        .await
        .unwrap_or_else(|e| panic!("every option at once: {e}"));
    for choice in ["none", "auto", "required"] {
        let m = manifest(|m| {
            m["spec"]["parameters"] = serde_json::json!({
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "toolChoice": choice, "responseFormat": {"type": "json_object"}
            });
        });
        dry_run(&api, &m)
            .await
            .unwrap_or_else(|e| panic!("toolChoice {choice}: {e}"));
    }
    let none_alone =
        manifest(|m| m["spec"]["parameters"] = serde_json::json!({"toolChoice": "none"}));
    dry_run(&api, &none_alone)
        .await
        .unwrap_or_else(|e| panic!("toolChoice none without tools: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spec_is_immutable_except_suspend() {
    let env = api_env().await;
    let ns = env.create_namespace("immutable").await.expect("namespace");
    let api: Api<LlmJob> = Api::namespaced(env.client(), &ns);
    let created: LlmJob =
        serde_json::from_value(manifest(|m| m["spec"]["suspend"] = true.into())).expect("LlmJob");
    api.create(&PostParams::default(), &created)
        .await
        .expect("create");
    let err = api
        .patch(
            "candidate",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"prompt": "something else"}})),
        )
        .await
        .expect_err("changing the prompt must be rejected");
    assert!(err.to_string().contains("spec is immutable"), "{err}");
    api.patch(
        "candidate",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("suspend may change");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_are_accepted() {
    let env = api_env().await;
    let ns = env.create_namespace("examples").await.expect("namespace");
    let api = untyped(env, &ns);
    let dir = testenv::tools::workspace_root()
        .join("manifests")
        .join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(doc).expect("YAML document");
            if value["kind"] != "LlmJob" {
                continue;
            }
            dry_run(&api, &value)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "no LlmJob examples found in {}",
        dir.display()
    );
}

/// The operator reconciles from its watch cache and relies on this: a status write carrying the
/// `resourceVersion` it was derived from fails with `409 Conflict` once the LlmJob has moved on,
/// so a status (and the events that follow it) is never derived from a stale copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_write_from_a_stale_copy_conflicts() {
    use llmjob_crds::v1alpha1::{LlmJobStatus, Phase};
    use llmjob_operator::status;

    let env = api_env().await;
    let ns = env.create_namespace("status-rv").await.expect("namespace");
    let api: Api<LlmJob> = Api::namespaced(env.client(), &ns);
    let created = create_llmjob(env, &ns, manifest(|_| {})).await;
    let base = created
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    let pending = LlmJobStatus {
        phase: Some(Phase::Pending),
        ..LlmJobStatus::default()
    };
    let written = status::apply(&api, "candidate", Some(&base), &pending)
        .await
        .expect("a write on the current version succeeds");
    assert_eq!(written.status.and_then(|s| s.phase), Some(Phase::Pending));

    let running = LlmJobStatus {
        phase: Some(Phase::Running),
        ..LlmJobStatus::default()
    };
    let err = status::apply(&api, "candidate", Some(&base), &running)
        .await
        .expect_err("a write on a stale version must fail");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.is_conflict()),
        "expected 409 Conflict, got {err}"
    );
    let now = api.get("candidate").await.expect("get");
    assert_eq!(
        now.status.and_then(|s| s.phase),
        Some(Phase::Pending),
        "the stale write changed nothing"
    );
    // Without a version the write is unconditional.
    status::apply(&api, "candidate", None, &running)
        .await
        .expect("an unconditional write succeeds");
}

/// The tenant policy's ValidatingAdmissionPolicy and its binding, as `manifests/install.yaml`
/// (the chart with default values) ships them.
#[allow(clippy::expect_used)]
fn tenancy_policy_from_manifests() -> Vec<serde_json::Value> {
    let path = testenv::tools::workspace_root()
        .join("manifests")
        .join("install.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/install.yaml");
    let objects: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|v: &serde_json::Value| {
            matches!(
                v["kind"].as_str(),
                Some("ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding")
            )
        })
        .collect();
    assert_eq!(
        objects.len(),
        2,
        "manifests/install.yaml must hold the tenancy ValidatingAdmissionPolicy and its binding"
    );
    objects
}

/// Applies the tenancy policy from `manifests/install.yaml` (as `kubectl apply --server-side`
/// would) and waits until it refuses.
#[allow(clippy::expect_used)]
async fn install_tenancy_policy(env: &testenv::env::TestEnv, probe_ns: &str) {
    for object in tenancy_policy_from_manifests() {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let plural = match kind.as_str() {
            "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
            _ => "validatingadmissionpolicybindings",
        }
        .to_owned();
        let ar = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind.clone(),
            plural,
        };
        let obj: DynamicObject = serde_json::from_value(object).expect("an object");
        let name = obj.metadata.name.clone().expect("a name");
        Api::<DynamicObject>::all_with(env.client(), &ar)
            .patch(
                &name,
                &PatchParams::apply("llmjob-tests").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
    // A CEL expression that does not compile is refused by the apply above; one that fails at
    // run time refuses every LlmJob (failurePolicy Fail), which the accepted cases would show.
    // The policy takes effect asynchronously: wait until a refused LlmJob is refused.
    let api = untyped(env, probe_ns);
    let probe = manifest(|m| {
        m["spec"]["openai"]["baseURL"] = "http://probe.example/v1".into();
    });
    wait_until("the tenancy policy to take effect", || async {
        dry_run(&api, &probe)
            .await
            .err()
            .filter(|e| e.contains("allow-insecure-base-url"))
    })
    .await;
}

/// Each refusal of the tenant policy happens at admission, with a message naming the field and
/// the label that allows it; a namespace carrying the labels accepts the same LlmJobs.
#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_policy_refuses_at_admission_unless_the_namespace_allows() {
    use k8s_openapi::api::core::v1::Namespace;
    use llmjob_operator::validate::labels;

    let env = api_env().await;
    let strict = env.create_namespace("tenancy").await.expect("namespace");
    install_tenancy_policy(env, &strict).await;

    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let refused: Vec<(&str, Edit, &str)> = vec![
        (
            "env from a Secret",
            Box::new(|m| {
                m["spec"]["pod"] = serde_json::json!({"env": [{"name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}]})
            }),
            labels::ALLOW_ENV_REFS,
        ),
        (
            "env from a ConfigMap",
            Box::new(|m| {
                m["spec"]["pod"] = serde_json::json!({"env": [{"name": "SETTING",
                    "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]})
            }),
            labels::ALLOW_ENV_REFS,
        ),
        (
            "another ServiceAccount",
            Box::new(|m| m["spec"]["pod"] = serde_json::json!({"serviceAccountName": "deployer"})),
            labels::ALLOW_SERVICE_ACCOUNTS,
        ),
        (
            "plain http outside the cluster",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "http://llm.example.com:8080/v1".into()),
            labels::ALLOW_INSECURE_BASE_URL,
        ),
        (
            "plain http to a non-loopback IP",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "http://203.0.113.7/v1".into()),
            labels::ALLOW_INSECURE_BASE_URL,
        ),
    ];
    let strict_api = untyped(env, &strict);
    let mut problems = Vec::new();
    for (what, edit, label) in &refused {
        match dry_run(&strict_api, &manifest(edit)).await {
            Ok(()) => problems.push(format!("{what}: accepted in a namespace without labels")),
            Err(m) if !(m.contains(&format!("{label}=true")) && m.contains("spec.")) => problems
                .push(format!(
                    "{what}: message {m:?} does not name the field and {label}=true"
                )),
            Err(_) => {}
        }
    }
    // What the policy lets through everywhere.
    let accepted: Vec<(&str, Edit)> = vec![
        (
            "plain env and fieldRef",
            Box::new(|m| {
                m["spec"]["pod"] = serde_json::json!({"env": [{"name": "A", "value": "x"},
                    {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]})
            }),
        ),
        (
            "https anywhere",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "https://llm.example.com/v1".into()),
        ),
        (
            "plain http to a Service",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "http://vllm.models.svc:8000/v1".into()),
        ),
        (
            "plain http to a Service, full name",
            Box::new(|m| {
                m["spec"]["openai"]["baseURL"] =
                    "http://vllm.models.svc.cluster.local:8000/v1".into()
            }),
        ),
        (
            "plain http to loopback",
            Box::new(|m| m["spec"]["openai"]["baseURL"] = "http://127.0.0.1:8080/v1".into()),
        ),
    ];
    for (what, edit) in &accepted {
        if let Err(e) = dry_run(&strict_api, &manifest(edit)).await {
            problems.push(format!("{what}: refused: {e}"));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A loosened namespace per label: the label allows its refusal, and only its own. The
    // policy reads namespaces from a cache, so a label just set is waited for.
    let namespaces: Api<Namespace> = Api::all(env.client());
    for (i, (what, edit, label)) in refused.iter().enumerate() {
        let loose = env
            .create_namespace("tenancy-loose")
            .await
            .expect("namespace");
        namespaces
            .patch(
                &loose,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {*label: "true"}}})),
            )
            .await
            .expect("labelling the namespace");
        let loose_api = untyped(env, &loose);
        let wanted = manifest(edit);
        wait_until(
            &format!("{what} to be accepted with {label}=true"),
            || async { dry_run(&loose_api, &wanted).await.ok() },
        )
        .await;
        // Another refusal (of another label) is still refused there.
        let (other, other_edit, _) = refused
            .iter()
            .cycle()
            .skip(i + 1)
            .find(|(_, _, l)| l != label)
            .expect("another label");
        let mut both = manifest(edit);
        other_edit(&mut both);
        assert!(
            dry_run(&loose_api, &both).await.is_err(),
            "{what} + {other}: {label}=true allowed both"
        );
    }
}

/// Defence in depth: an LlmJob the policy admitted (its namespace allowed it then) is refused by
/// the operator once the namespace no longer allows it: `Stalled` with reason `NotPermitted`, a
/// Warning event naming the field and the label, and no Job.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_refuses_what_the_namespace_no_longer_allows() {
    use k8s_openapi::api::core::v1::Namespace;
    use llmjob_crds::v1alpha1::condition::STALLED;
    use llmjob_operator::validate::labels;

    let env = api_env().await;
    let ns = env.create_namespace("tenancy-op").await.expect("namespace");
    let namespaces: Api<Namespace> = Api::all(env.client());
    let label = |value: Option<&str>| {
        Patch::Merge(serde_json::json!({"metadata": {"labels": {labels::ALLOW_ENV_REFS: value}}}))
    };
    namespaces
        .patch(&ns, &PatchParams::default(), &label(Some("true")))
        .await
        .expect("labelling the namespace");
    // The tenancy policy (when another test installed it) reads namespaces from a cache: the
    // create is retried until it sees the label.
    let wanted: LlmJob = serde_json::from_value(manifest(|m| {
        m["spec"]["pod"] = serde_json::json!({"env": [{"name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}]})
    }))
    .expect("an LlmJob");
    let llmjobs: Api<LlmJob> = Api::namespaced(env.client(), &ns);
    wait_until(
        "the LlmJob to be created in the labelled namespace",
        || async { llmjobs.create(&PostParams::default(), &wanted).await.ok() },
    )
    .await;
    namespaces
        .patch(&ns, &PatchParams::default(), &label(None))
        .await
        .expect("unlabelling the namespace");

    let operator = Operator::start(env, &ns, &[]).await;
    let note = wait_for_event(env, &ns, "candidate", "NotPermitted").await;
    assert!(
        note.contains("spec.pod.env[0] (TOKEN)")
            && note.contains(&format!("{}=true", labels::ALLOW_ENV_REFS)),
        "{note}"
    );
    let llmjob = llmjobs.get("candidate").await.expect("the LlmJob");
    let (status, reason, message) = condition(&llmjob, STALLED).expect("a Stalled condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NotPermitted"));
    assert_eq!(message, note);
    assert!(
        jobs(env, &ns).await.is_empty(),
        "a refused LlmJob has no Job"
    );
    operator.stop().await;
}
