//! The routes against a real server on 127.0.0.1:0: which fixture `Auto` picks, what is served
//! (status, headers, bodies byte for byte), SSE replay, models, health and unknown routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use openai_replay::{FIXTURE_NAMES, ReplayConfig, ReplayError, ReplayServer, fixture_file};
use serde_json::{Value, json};

fn recorded(file: &str) -> Value {
    serde_json::from_str(fixture_file(file).unwrap()).unwrap()
}

fn chat_url(server: &ReplayServer) -> String {
    format!("{}/chat/completions", server.base_url())
}

#[tokio::test]
async fn each_recorded_request_gets_its_recorded_answer() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let client = reqwest::Client::new();
    for name in FIXTURE_NAMES.iter().filter(|n| **n != "chat_basic") {
        let request = recorded(&format!("{name}.request.json"));
        let response = client
            .post(chat_url(&server))
            .bearer_auth("sk-anything")
            .json(&request["body"])
            .send()
            .await
            .unwrap();
        let sse = fixture_file(&format!("{name}.response.sse"));
        let meta = match sse {
            Some(_) => recorded(&format!("{name}.meta.json")),
            None => recorded(&format!("{name}.response.json")),
        };
        assert_eq!(response.status().as_u16(), meta["status"], "{name}");
        for header in ["content-type", "x-request-id"] {
            assert_eq!(
                response.headers()[header].to_str().unwrap(),
                meta["headers"][header].as_str().unwrap(),
                "{name}: {header}"
            );
        }
        let body = response.bytes().await.unwrap();
        match sse {
            Some(text) => assert_eq!(body, text.as_bytes(), "{name}"),
            None => {
                let served: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(served, meta["body"], "{name}");
            }
        }
        let last = server.requests().pop().unwrap();
        assert_eq!(last.fixture.as_deref(), Some(*name));
        assert_eq!(last.status, meta["status"]);
    }
    server.shutdown().await.unwrap();
}

/// Requests shaped like other clients' (not the recorded ones) pick by the documented rules.
#[tokio::test]
async fn auto_rules_for_other_requests() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let client = reqwest::Client::new();
    let messages = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let cases = [
        (
            json!({"model": "gpt-4.1", "messages": messages}),
            "chat_gpt4o_mini",
            200,
        ),
        (
            json!({"model": "gpt-4.1", "messages": messages, "stream": true,
                   "stream_options": {"include_usage": true}}),
            "chat_stream_include_usage",
            200,
        ),
        (
            json!({"model": "gpt-4.1", "messages": messages, "stream": true}),
            "chat_stream",
            200,
        ),
        (
            json!({"model": "gpt-4.1", "messages": messages, "stream": true, "tools": tools}),
            "chat_tool_call_stream",
            200,
        ),
        (
            json!({"model": "gpt-4.1", "messages": messages, "tools": tools}),
            "chat_tool_call",
            200,
        ),
        (
            json!({"model": "gpt-4.1", "messages": messages, "n": 2}),
            "chat_multi_choice_n2",
            200,
        ),
        (
            json!({"model": "gpt-3.5-turbo-0613", "messages": messages}),
            "chat_error_404_model_not_found",
            404,
        ),
        (
            json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
            "chat_error_400_invalid_image_url",
            400,
        ),
    ];
    for (body, fixture, status) in cases {
        let response = client
            .post(chat_url(&server))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{fixture}");
        let text = response.text().await.unwrap();
        assert!(!text.is_empty());
        assert_eq!(
            server.requests().pop().unwrap().fixture.as_deref(),
            Some(fixture)
        );
    }
    // The answer's model is the recorded one, not the one asked for.
    let answer: Value = client
        .post(chat_url(&server))
        .json(&json!({"model": "gpt-4.1", "messages": messages}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "2 + 2 equals 4."
    );
}

#[tokio::test]
async fn path_without_v1_prefix_works_too() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let url = format!("http://{}/chat/completions", server.addr());
    let response = reqwest::Client::new()
        .post(url)
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sse_replays_each_recorded_event_then_done() {
    let chunk_delay = Duration::from_millis(15);
    let server = ReplayServer::start(ReplayConfig::new().with_chunk_delay(chunk_delay))
        .await
        .unwrap();
    let recorded_text = fixture_file("chat_stream_include_usage.response.sse").unwrap();
    let recorded_events: Vec<&str> = recorded_text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .collect();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(chat_url(&server))
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                      "stream": true, "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut received = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8(received).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events, recorded_events);
    assert_eq!(events.len(), 12, "11 chunks and [DONE]");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let usage: Value =
        serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 31);
    assert!(
        elapsed >= chunk_delay * 11,
        "12 events, 11 gaps of {chunk_delay:?}: took {elapsed:?}"
    );
}

#[tokio::test]
async fn fixed_scenario_always_serves_its_fixture() {
    let server = ReplayServer::start(ReplayConfig::new().with_fixture("chat_basic"))
        .await
        .unwrap();
    let answer: Value = reqwest::Client::new()
        .post(chat_url(&server))
        .json(&json!({"model": "gpt-4o", "messages": [], "stream": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["model"], "gpt-3.5-turbo-0125");
    assert_eq!(server.requests()[0].fixture.as_deref(), Some("chat_basic"));
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let err = ReplayServer::start(ReplayConfig::new().with_fixture("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::UnknownFixture { .. }), "{err}");
    assert!(err.to_string().contains("chat_stream"), "{err}");
    let err = ReplayServer::start(
        ReplayConfig::new().with_faults(openai_replay::Faults::fail_first(1).with_status(200)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplayError::InvalidFaultStatus(200)), "{err}");
    let taken = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let err = ReplayServer::start(ReplayConfig::new().with_addr(taken.addr()))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::Bind { .. }), "{err}");
}

#[tokio::test]
async fn invalid_bodies_get_openai_400s() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let client = reqwest::Client::new();
    for body in ["not json", "[1]", r#"{"messages": []}"#] {
        let response = client
            .post(chat_url(&server))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let client = reqwest::Client::new();
    let base = server.base_url();

    let list: Value = client
        .get(format!("{base}/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "gpt-4o-mini",
        "gpt-3.5-turbo",
        "gpt-4",
        "gpt-4o-mini-2024-07-18",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    assert!(!ids.contains(&"gpt-3.5-turbo-0613"), "{ids:?}");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let one = client
        .get(format!("{base}/models/gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let missing = client
        .get(format!("{base}/models/gpt-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");

    let health = client
        .get(format!("http://{}/healthz", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let unknown = client
        .post(format!("{base}/embeddings"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "Invalid URL (POST /v1/embeddings)"
    );
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let wrong_method = client
        .get(format!("{base}/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 404);
    let error: Value = wrong_method.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "Invalid URL (GET /v1/chat/completions)"
    );

    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert!(!paths.iter().any(|p| p == "/healthz"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "/v1/embeddings"), "{paths:?}");
}

#[tokio::test]
async fn azure_deployment_urls_take_the_api_key_header_and_record_the_query() {
    let server = ReplayServer::start(ReplayConfig::new().with_api_key("az-key"))
        .await
        .unwrap();
    let base = server.base_url().trim_end_matches("/v1").to_owned();
    let url = format!("{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let client = reqwest::Client::new();
    let ok = client
        .post(&url)
        .header("api-key", "az-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = client
        .post(&url)
        .header("api-key", "other")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(first.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(first.header("api-key"), Some("<redacted>"));
    assert_eq!(first.header("authorization"), None);
    assert_eq!(first.fixture.as_deref(), Some("chat_gpt4o_mini"));
    server.shutdown().await.unwrap();
}
