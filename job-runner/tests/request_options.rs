//! The request options of `docs/job-runner.md` ("Request options") end to end: the real
//! `llmjob-runner` binary against `openai-replay` (recorded answers: `chat_tool_call` for tools,
//! `chat_multi_choice_n2` for `n`) and a real OpenTelemetry Collector. Each test checks the
//! request the server received, the result and the chat span; the configuration errors of the
//! new variables exit 2 before any request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use openai_replay::ReplayConfig;
use serde_json::json;

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather in a given location","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}}]"#;
/// The tool call of the recorded `chat_tool_call` answer.
const TOOL_CALL_ID: &str = "call_b4lU3wKOqwO7Xb2Ksok2XWyB";
const TOOL_ARGUMENTS: &str = "{\n  \"location\": \"Boston\"\n}";
/// The two answers of the recorded `chat_multi_choice_n2` answer.
const CHOICE_0: &str = "Why don't scientists trust atoms?";
const CHOICE_1: &str = "Why couldn't the bicycle find its way home?";

/// The one chat span of a run, after waiting for its telemetry.
async fn chat_span(
    collector: &testenv::collector::Collector,
    run: &Run,
    model: &str,
) -> testenv::telemetry::Span {
    let telemetry = wait_for_run(collector, &run.trace_id()).await;
    let (_, _, chats) = span_tree(&telemetry, &run.trace_id(), model);
    assert_eq!(chats.len(), 1);
    chats[0].clone()
}

#[tokio::test]
async fn tools_and_sampling_options_reach_the_server_the_result_and_the_span() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let run = Runner::new("it-options-tools")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_MODEL", "gpt-4")
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .env("LLMJOB_TOOLS", TOOLS)
        .env(
            "LLMJOB_TOOL_CHOICE",
            r#"{"type":"function","function":{"name":"get_current_weather"}}"#,
        )
        .env("LLMJOB_STOP", r#"["END","STOP"]"#)
        .env("LLMJOB_FREQUENCY_PENALTY", "0.5")
        .env("LLMJOB_PRESENCE_PENALTY", "-0.25")
        .env("LLMJOB_REASONING_EFFORT", "low")
        .env("LLMJOB_SERVICE_TIER", "flex")
        .env("LLMJOB_USER", "user-hash-42")
        .env("OPENAI_ORG_ID", "org-IT123")
        .env("OPENAI_PROJECT_ID", "proj_IT456")
        .run()
        .await;
    run.assert_exit(0);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.fixture.as_deref(), Some("chat_tool_call"));
    assert_eq!(request.header("authorization"), Some("Bearer <redacted>"));
    assert_eq!(request.header("openai-organization"), Some("org-IT123"));
    assert_eq!(request.header("openai-project"), Some("proj_IT456"));
    assert_eq!(request.query, None);
    let body = request.body.as_ref().unwrap();
    let tools: serde_json::Value = serde_json::from_str(TOOLS).unwrap();
    assert_eq!(body["tools"], tools);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_current_weather"}})
    );
    assert_eq!(body["stop"], json!(["END", "STOP"]));
    assert_eq!(body["frequency_penalty"], 0.5);
    assert_eq!(body["presence_penalty"], -0.25);
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(body["service_tier"], "flex");
    assert_eq!(body["user"], "user-hash-42");
    assert!(body.get("n").is_none() && body.get("response_format").is_none());

    // The answer is a tool call: full capture prints it as JSON.
    let printed: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(printed[0]["id"], TOOL_CALL_ID);
    assert_eq!(printed[0]["function"]["name"], "get_current_weather");
    assert_eq!(printed[0]["function"]["arguments"], TOOL_ARGUMENTS);
    let result = run.result();
    assert_eq!(result.finish_reason.as_deref(), Some("tool_calls"));
    assert!(result.finish_reasons.is_empty(), "one choice: no array");

    let chat = chat_span(&collector, &run, "gpt-4").await;
    let a = &chat.attributes;
    assert_eq!(
        a.str_array("gen_ai.request.stop_sequences"),
        Some(vec!["END", "STOP"])
    );
    assert_eq!(a.double("gen_ai.request.frequency_penalty"), Some(0.5));
    assert_eq!(a.double("llm.frequency_penalty"), Some(0.5));
    assert_eq!(a.double("gen_ai.request.presence_penalty"), Some(-0.25));
    assert_eq!(a.double("llm.presence_penalty"), Some(-0.25));
    assert_eq!(a.str("gen_ai.request.reasoning_effort"), Some("low"));
    assert_eq!(a.str("openai.request.service_tier"), Some("flex"));
    assert_eq!(a.str("gen_ai.openai.request.service_tier"), Some("flex"));
    assert_eq!(a.str("llm.user"), Some("user-hash-42"), "full capture");
    assert_eq!(
        a.str("llm.request.functions.0.name"),
        Some("get_current_weather")
    );
    assert!(
        a.str("llm.request.functions.0.parameters")
            .is_some_and(|p| p.contains("\"location\""))
    );
    assert_eq!(
        a.str_array("gen_ai.response.finish_reasons"),
        Some(vec!["tool_calls"])
    );
    assert_eq!(
        a.str("gen_ai.completion.0.finish_reason"),
        Some("tool_calls")
    );
    assert_eq!(a.str("gen_ai.completion.0.role"), Some("assistant"));
    assert_eq!(
        a.str("gen_ai.completion.0.tool_calls.0.id"),
        Some(TOOL_CALL_ID)
    );
    assert_eq!(
        a.str("gen_ai.completion.0.tool_calls.0.name"),
        Some("get_current_weather")
    );
    assert_eq!(
        a.str("gen_ai.completion.0.tool_calls.0.arguments"),
        Some(TOOL_ARGUMENTS)
    );
    assert!(!a.contains_key("gen_ai.completion.0.content"), "no text");
    let output: serde_json::Value =
        serde_json::from_str(a.str("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output[0]["parts"][0]["type"], "tool_call");
    assert_eq!(output[0]["parts"][0]["name"], "get_current_weather");
    assert_no_leaks(&run, &collector, &[KEY], "tools run");
}

#[tokio::test]
async fn a_streamed_tool_call_is_assembled_from_its_fragments() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-options-stream-tools")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_MODEL", "gpt-3.5-turbo")
        .env("LLMJOB_STREAM", "true")
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .env("LLMJOB_TOOLS", TOOLS)
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(
        server.requests()[0].fixture.as_deref(),
        Some("chat_tool_call_stream")
    );
    // The recorded stream sends the id and name once, then the arguments in fragments.
    let printed: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let arguments: serde_json::Value =
        serde_json::from_str(printed[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"location": "San Francisco, CA"}));
    assert_eq!(printed[0]["id"], "call_90R0NgAY0rQUYihSqVx7OuIs");
    assert_eq!(run.result().finish_reason.as_deref(), Some("tool_calls"));
    let chat = chat_span(&collector, &run, "gpt-3.5-turbo").await;
    assert_eq!(
        chat.attributes.str("gen_ai.completion.0.tool_calls.0.name"),
        Some("get_current_weather")
    );
    assert_eq!(
        chat.attributes
            .str("gen_ai.completion.0.tool_calls.0.arguments"),
        printed[0]["function"]["arguments"].as_str()
    );
}

#[tokio::test]
async fn without_full_capture_tool_calls_user_and_schemas_stay_out_of_telemetry() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-options-none")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_TOOLS", TOOLS)
        .env("LLMJOB_TOOL_CHOICE", "auto")
        .env("LLMJOB_USER", "USER-CANARY-2718")
        .env(
            "LLMJOB_RESPONSE_FORMAT",
            r#"{"type":"json_schema","json_schema":{"name":"weather","schema":{"type":"object","properties":{"SCHEMA-CANARY":{"type":"string"}}},"strict":true}}"#,
        )
        .run()
        .await;
    run.assert_exit(0);
    let body = server.requests()[0].body.clone().unwrap();
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "weather");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["user"], "USER-CANARY-2718");
    assert_eq!(run.result().finish_reason.as_deref(), Some("tool_calls"));
    run.assert_summary_without_content("get_current_weather");
    assert!(
        run.stdout.contains("finish reason tool_calls"),
        "{}",
        run.stdout
    );

    let chat = chat_span(&collector, &run, "gpt-4o-mini").await;
    assert_eq!(chat.attributes.str("gen_ai.output.type"), Some("json"));
    assert!(
        !chat
            .attributes
            .keys()
            .any(|k| k.starts_with("gen_ai.completion.") || k.starts_with("llm.request.functions")),
        "completion and tool attributes only with full capture"
    );
    assert_no_leaks(
        &run,
        &collector,
        &[
            KEY,
            PROMPT,
            "USER-CANARY-2718",
            "SCHEMA-CANARY",
            TOOL_CALL_ID,
            "Boston",
        ],
        "default capture",
    );
}

#[tokio::test]
async fn every_choice_of_n_is_reported() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-options-n")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_MODEL", "gpt-3.5-turbo")
        .env("LLMJOB_N", "2")
        .env("LLMJOB_RESPONSE_FORMAT", "text")
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .run()
        .await;
    run.assert_exit(0);
    let request = &server.requests()[0];
    assert_eq!(request.fixture.as_deref(), Some("chat_multi_choice_n2"));
    let body = request.body.as_ref().unwrap();
    assert_eq!(body["n"], 2);
    assert_eq!(body["response_format"], json!({"type": "text"}));

    assert!(
        run.stdout.starts_with("[choice 0]\n") && run.stdout.contains("\n[choice 1]\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(CHOICE_0) && run.stdout.contains(CHOICE_1));
    let result = run.result();
    assert_eq!(result.finish_reason.as_deref(), Some("stop"));
    assert_eq!(result.finish_reasons, vec!["stop", "stop"]);

    let chat = chat_span(&collector, &run, "gpt-3.5-turbo").await;
    let a = &chat.attributes;
    assert_eq!(a.int("gen_ai.request.choice.count"), Some(2));
    assert_eq!(a.str("gen_ai.output.type"), Some("text"));
    assert_eq!(
        a.str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop", "stop"])
    );
    for (i, text) in [CHOICE_0, CHOICE_1].iter().enumerate() {
        assert!(
            a.str(&format!("gen_ai.completion.{i}.content"))
                .is_some_and(|c| c.starts_with(text)),
            "choice {i}"
        );
        assert_eq!(
            a.str(&format!("gen_ai.completion.{i}.finish_reason")),
            Some("stop")
        );
    }
    let output: serde_json::Value =
        serde_json::from_str(a.str("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output.as_array().map(Vec::len), Some(2));
    assert_eq!(a.str("openai.response.service_tier"), Some("default"));
    assert_eq!(
        a.str("gen_ai.openai.response.service_tier"),
        Some("default")
    );
}

#[tokio::test]
async fn azure_gets_the_api_key_header_and_the_api_version() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    // The replay server stands in for https://RESOURCE.openai.azure.com: the deployment URL form,
    // with the key style chosen explicitly (the default follows *.openai.azure.com).
    let base = format!(
        "{}/openai/deployments/gpt-4o-prod",
        server.base_url().trim_end_matches("/v1")
    );
    let run = Runner::new("it-options-azure")
        .env("OPENAI_BASE_URL", base)
        .otlp_grpc(&collector)
        .env("LLMJOB_AUTH_STYLE", "api-key")
        .env("OPENAI_API_VERSION", "2024-10-21")
        .run()
        .await;
    run.assert_exit(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.path,
        "/openai/deployments/gpt-4o-prod/chat/completions"
    );
    assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(request.header("api-key"), Some("<redacted>"));
    assert_eq!(request.header("authorization"), None, "no bearer token");
    assert_eq!(request.status, 200, "the server accepted the key");

    let chat = chat_span(&collector, &run, "gpt-4o-mini").await;
    assert_eq!(
        chat.attributes.str("gen_ai.openai.api_version"),
        Some("2024-10-21")
    );
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "azure run");
}

#[tokio::test]
async fn prompt_and_messages_files_are_read() {
    let server = replay(ReplayConfig::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt");
    std::fs::write(&prompt, "PROMPT-FROM-FILE, with a line\nbreak\n").unwrap();
    let run = Runner::new("it-options-file")
        .unset("OPENAI_PROMPT")
        .openai(&server)
        .env("OTEL_SDK_DISABLED", "true")
        .env("OPENAI_PROMPT_FILE", prompt.display().to_string())
        .run()
        .await;
    run.assert_exit(0);
    let body = server.requests()[0].body.clone().unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "PROMPT-FROM-FILE, with a line\nbreak\n"}])
    );

    server.clear_requests();
    let messages = dir.path().join("messages.json");
    let array = json!([
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": "MESSAGES-FROM-FILE"}
    ]);
    std::fs::write(&messages, array.to_string()).unwrap();
    let run = Runner::new("it-options-file")
        .unset("OPENAI_PROMPT")
        .openai(&server)
        .env("OTEL_SDK_DISABLED", "true")
        .env("LLMJOB_MESSAGES_FILE", messages.display().to_string())
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(
        server.requests()[0].body.clone().unwrap()["messages"],
        array
    );
}

#[tokio::test]
async fn unusable_option_values_and_files_exit_2_before_any_request() {
    let server = replay(ReplayConfig::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let blank = write("blank", b"  \n");
    let latin1 = write("latin1", b"caf\xe9 FILE-CANARY");
    let not_messages = write(
        "not-messages",
        br#"{"role":"user","content":"FILE-CANARY"}"#,
    );
    let missing = dir.path().join("missing").display().to_string();
    let directory = dir.path().display().to_string();
    /// (variables, what the stderr line names, what it says is accepted or wrong)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("OPENAI_PROMPT_FILE", missing)],
            "OPENAI_PROMPT_FILE",
            "cannot open",
        ),
        (
            vec![("OPENAI_PROMPT_FILE", directory)],
            "OPENAI_PROMPT_FILE",
            "cannot read",
        ),
        (
            vec![("OPENAI_PROMPT_FILE", blank.clone())],
            "OPENAI_PROMPT_FILE",
            "blank",
        ),
        (
            vec![("OPENAI_PROMPT_FILE", latin1)],
            "OPENAI_PROMPT_FILE",
            "not valid UTF-8",
        ),
        (
            vec![("LLMJOB_MESSAGES_FILE", blank.clone())],
            "LLMJOB_MESSAGES_FILE",
            "blank",
        ),
        (
            vec![("LLMJOB_MESSAGES_FILE", not_messages)],
            "LLMJOB_MESSAGES_FILE",
            "not a JSON array",
        ),
        (
            vec![
                ("OPENAI_PROMPT", "hi".into()),
                ("OPENAI_PROMPT_FILE", blank.clone()),
            ],
            "OPENAI_PROMPT and OPENAI_PROMPT_FILE are both set",
            "set only one",
        ),
        (
            vec![
                ("OPENAI_PROMPT_FILE", blank.clone()),
                ("LLMJOB_MESSAGES_FILE", blank),
            ],
            "OPENAI_PROMPT_FILE and LLMJOB_MESSAGES_FILE are both set",
            "set only one",
        ),
        (vec![("LLMJOB_N", "0".into())], "LLMJOB_N", "1 to 128"),
        (vec![("LLMJOB_STOP", "[]".into())], "LLMJOB_STOP", "1 to 4"),
        (
            vec![("LLMJOB_FREQUENCY_PENALTY", "3".into())],
            "LLMJOB_FREQUENCY_PENALTY",
            "-2 to 2",
        ),
        (
            vec![("LLMJOB_PRESENCE_PENALTY", "x".into())],
            "LLMJOB_PRESENCE_PENALTY",
            "-2 to 2",
        ),
        (
            vec![("LLMJOB_TOOLS", "{}".into())],
            "LLMJOB_TOOLS",
            "JSON array of tools",
        ),
        (
            vec![("LLMJOB_TOOL_CHOICE", "required".into())],
            "LLMJOB_TOOL_CHOICE",
            "LLMJOB_TOOLS is not set",
        ),
        (
            vec![("LLMJOB_RESPONSE_FORMAT", "xml".into())],
            "LLMJOB_RESPONSE_FORMAT",
            "json_object",
        ),
        (
            vec![("LLMJOB_REASONING_EFFORT", "max-ish".into())],
            "LLMJOB_REASONING_EFFORT",
            "minimal",
        ),
        (
            vec![("LLMJOB_SERVICE_TIER", "gold".into())],
            "LLMJOB_SERVICE_TIER",
            "priority",
        ),
        (vec![("LLMJOB_USER", "u".repeat(257))], "LLMJOB_USER", "256"),
        (
            vec![("OPENAI_ORG_ID", "org one".into())],
            "OPENAI_ORG_ID",
            "visible ASCII",
        ),
        (
            vec![("OPENAI_API_VERSION", "2024\t10".into())],
            "OPENAI_API_VERSION",
            "visible ASCII",
        ),
        (
            vec![("LLMJOB_AUTH_STYLE", "basic".into())],
            "LLMJOB_AUTH_STYLE",
            "bearer",
        ),
    ];
    for (vars, names, accepted) in cases {
        let mut runner = Runner::new("it-options-invalid")
            .openai(&server)
            .env("OTEL_SDK_DISABLED", "true");
        if vars.iter().any(|(name, _)| name.ends_with("_FILE"))
            && names != "OPENAI_PROMPT and OPENAI_PROMPT_FILE are both set"
        {
            runner = runner.unset("OPENAI_PROMPT");
        }
        for (name, value) in &vars {
            runner = runner.env(name, value.clone());
        }
        let run = runner.run().await;
        run.assert_exit(2);
        let line = run.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{vars:?}: one line: {line}");
        assert!(line.contains(names), "{vars:?}: {line}");
        assert!(line.contains(accepted), "{vars:?}: {line}");
        assert!(
            !line.contains("FILE-CANARY"),
            "a file's content is never quoted: {line}"
        );
        assert!(
            run.result_text.is_none(),
            "{vars:?}: no result before the run"
        );
    }
    assert!(server.requests().is_empty(), "no request was sent");
}
