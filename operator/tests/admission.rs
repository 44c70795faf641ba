//! Bad input is rejected at admission by the CRD's OpenAPI schema and CEL rules, with a message
//! that says what to do, against a real kube-apiserver (no kubelet: nothing here runs a pod).
//! Valid manifests (including every example in `manifests/examples/`) are accepted.

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
            "must not set k8s.*, service.name",
        ),
        (
            "service.name as attribute",
            Box::new(|m| {
                m["spec"]["telemetry"] =
                    serde_json::json!({"resourceAttributes": {"service.name": "x"}})
            }),
            "must not set k8s.*, service.name",
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
            "unknown field",
            Box::new(|m| m["spec"]["promt"] = "typo".into()),
            "promt",
        ),
    ];
    let mut problems = Vec::new();
    let mut rejections = Vec::new();
    for (what, edit, want) in cases.into_iter().chain(request_option_cases()) {
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
        ("no choices", param("n", 0.into()), "spec.parameters.n"),
        (
            "too many choices",
            param("n", 129.into()),
            "spec.parameters.n",
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
    let env = env().await;
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
            "stop": ["END"], "frequencyPenalty": -2, "presencePenalty": 2, "n": 128,
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
