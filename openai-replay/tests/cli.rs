//! The `openai-replay` binary: prints its listening line, serves, keeps the key out of its
//! logs, and exits cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

const KEY: &str = "sk-cli-secret-key-0123456789";

#[tokio::test]
async fn binary_prints_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_openai-replay"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--fail-first",
            "1",
        ])
        .args(["--fail-every", "2"])
        .args(["--fail-status", "429", "--retry-after-ms", "250"])
        .env_remove("OPENAI_REPLAY_API_KEY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .expect("no listening line within 30 s")
        .unwrap();
    let line = line.trim_end();
    let base = line
        .strip_prefix("openai-replay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"),
        "{base}"
    );

    let client = reqwest::Client::new();
    let send = || {
        client
            .post(format!("{base}/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after-ms"], "250");
    assert_eq!(first.headers()["retry-after"], "1");
    let second = send().await.unwrap();
    assert_eq!(second.status(), 200);
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    // --fail-every 2: the second request after the first --fail-first fails again.
    assert_eq!(send().await.unwrap().status(), 429);

    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("did not exit within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "", "only one line on stdout");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("/v1/chat/completions"),
        "requests are logged: {stderr}"
    );
    assert!(
        !stderr.contains(KEY),
        "the key leaked into the logs: {stderr}"
    );
}

#[tokio::test]
async fn binary_refuses_an_unknown_fixture() {
    let output = Command::new(env!("CARGO_BIN_EXE_openai-replay"))
        .args(["--addr", "127.0.0.1:0", "--fixture", "nope"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chat_gpt4o_mini"));
}
