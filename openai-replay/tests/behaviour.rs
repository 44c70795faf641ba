//! Behaviour a client's tests rely on: API-key checks, injected faults (at start and at run
//! time), the request log and its redaction, the answer delay, and stopping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use openai_replay::{Faults, ReplayConfig, ReplayError, ReplayServer};
use serde_json::{Value, json};

const KEY: &str = "sk-replay-test-key-0123456789";

fn body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
}

async fn post(server: &ReplayServer, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn wrong_or_missing_key_gets_openai_401() {
    let server = ReplayServer::start(ReplayConfig::new().with_api_key(KEY))
        .await
        .unwrap();
    for key in [Some("sk-wrong-key-abcdefghijkl"), None, Some("")] {
        let response = post(&server, key).await;
        assert_eq!(response.status(), 401, "{key:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{key:?}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(!message.contains("wrong-key-abcdef"), "{message}");
    }
    let models = reqwest::Client::new()
        .get(format!("{}/models", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    let ok = post(&server, Some(KEY)).await;
    assert_eq!(ok.status(), 200);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.fixture.is_none() || r.status == 200)
    );
}

#[tokio::test]
async fn any_key_is_accepted_without_a_configured_key() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    assert_eq!(post(&server, None).await.status(), 200);
    assert_eq!(post(&server, Some("whatever")).await.status(), 200);
}

#[tokio::test]
async fn first_requests_fail_with_retry_headers_then_succeed() {
    let faults = Faults::fail_first(2)
        .with_status(429)
        .with_retry_after(Duration::from_millis(1500));
    let server = ReplayServer::start(ReplayConfig::new().with_api_key(KEY).with_faults(faults))
        .await
        .unwrap();
    // A rejected key does not use up a fault.
    assert_eq!(post(&server, Some("sk-other")).await.status(), 401);
    for attempt in 1..=2 {
        let response = post(&server, Some(KEY)).await;
        assert_eq!(response.status(), 429, "attempt {attempt}");
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    }
    let response = post(&server, Some(KEY)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("retry-after").is_none());
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 429, 429, 200]);
}

#[tokio::test]
async fn every_nth_request_fails_after_the_first_ones() {
    let faults = Faults {
        fail_first: 1,
        ..Faults::fail_every(3)
    }
    .with_status(429)
    .with_retry_after(Duration::from_millis(200));
    let server = ReplayServer::start(ReplayConfig::new().with_faults(faults))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post(&server, None).await.status().as_u16());
    }
    // The first fails, then the 3rd and 6th of the following ones.
    assert_eq!(statuses, [429, 200, 200, 429, 200, 200, 429, 200]);
    let recorded = server.requests();
    assert!(
        recorded.windows(2).all(|w| w[0].received <= w[1].received),
        "requests are recorded with their arrival instants, in order"
    );
    // set_faults restarts both counts.
    server.set_faults(Faults::fail_every(2)).unwrap();
    assert_eq!(post(&server, None).await.status(), 200);
    assert_eq!(post(&server, None).await.status(), 500);
}

#[tokio::test]
async fn faults_can_be_changed_at_run_time() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    assert_eq!(post(&server, None).await.status(), 200);
    server
        .set_faults(Faults::fail_first(1).with_status(503))
        .unwrap();
    let response = post(&server, None).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after-ms").is_none());
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(post(&server, None).await.status(), 200);
    // Setting faults again restarts the count.
    server.set_faults(Faults::fail_first(1)).unwrap();
    assert_eq!(post(&server, None).await.status(), 500);
    assert_eq!(post(&server, None).await.status(), 200);
    let err = server
        .set_faults(Faults::fail_first(1).with_status(302))
        .unwrap_err();
    assert!(matches!(err, ReplayError::InvalidFaultStatus(302)), "{err}");
    server.set_faults(Faults::none()).unwrap();
    assert_eq!(post(&server, None).await.status(), 200);
}

#[tokio::test]
async fn requests_are_recorded_with_the_key_redacted() {
    let server = ReplayServer::start(ReplayConfig::new().with_api_key(KEY))
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth(KEY)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.body.as_ref(), Some(&body()));
    assert_eq!(request.fixture.as_deref(), Some("chat_gpt4o_mini"));
    assert_eq!(request.status, 200);
    assert_eq!(request.header("Authorization"), Some("Bearer <redacted>"));
    assert_eq!(
        request.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert!(!format!("{requests:?}").contains(KEY));
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn delay_is_honoured() {
    let delay = Duration::from_millis(300);
    let server = ReplayServer::start(ReplayConfig::new().with_delay(delay))
        .await
        .unwrap();
    let started = Instant::now();
    let response = post(&server, None).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );
}

/// Waits until connecting to `addr` fails, with a deadline.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    let refused = testenv::wait::until(
        &format!("{addr} to refuse connections"),
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert_eq!(refused, Ok(()));
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let addr = server.addr();
    assert_eq!(post(&server, None).await.status(), 200);
    server.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let addr = server.addr();
    assert_eq!(post(&server, None).await.status(), 200);
    drop(server);
    wait_until_refused(addr).await;
}

#[tokio::test]
async fn base_url_is_the_openai_v1_root() {
    let server = ReplayServer::start(ReplayConfig::new()).await.unwrap();
    let port = server.addr().port();
    assert_ne!(port, 0);
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}/v1"));
}

/// The server has its own thread and runtime: a plain test (no runtime) that blocks on a socket
/// still gets its answer.
#[test]
fn serves_without_a_runtime_while_the_caller_blocks() {
    use std::io::{Read as _, Write as _};

    let server = ReplayServer::start_blocking(ReplayConfig::new()).unwrap();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: replay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}
