//! `cargo xtask demo --backends` end to end (with `--no-build`, after `cargo xtask images`): a
//! real LlmJob through the real operator on the real node, its telemetry forwarded by the demo's
//! collector through the reference pipelines to a real Prometheus and Jaeger. Checks what the
//! demo prints from them: Prometheus's token totals equal the LlmJob's `status.result.usage`
//! (the demo's `tokens:` line), and Jaeger's trace, fetched by `status.traceId`, is the tree
//! `llmjob.launch` (the operator, linked to its reconcile trace) → `llm_job.workflow` →
//! `openai_call.task` → `chat gpt-4o-mini`. Needs root, the tools of
//! `tools/ensure-tools.sh` and the image archives.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

/// Guard against a hung demo, not a performance target.
const DEMO_WAIT: Duration = Duration::from_secs(600);

/// The value at the end of the first line that starts (after its indent) with `prefix`.
fn value_after(stdout: &str, prefix: &str) -> f64 {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_the_llmjob_in_prometheus_and_jaeger() {
    let demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--no-build", "--backends"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEMO_WAIT, demo)
        .await
        .unwrap_or_else(|_| panic!("the demo did not finish within {DEMO_WAIT:?}"))
        .expect("running `cargo xtask demo --backends`");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );

    // `tokens: 23 input + 8 output = 31 total`, from status.result.usage.
    let usage = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tokens: "))
        .unwrap_or_else(|| panic!("no `tokens:` line in\n{stdout}"));
    let numbers: Vec<f64> = usage
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (input, output_tokens) = (numbers[0], numbers[1]);
    assert!(input > 0.0 && output_tokens > 0.0, "{usage}");
    // The panels (the step headers go to stderr); the first is the tokens panel.
    let panels = stdout
        .split("tokens by model, namespace and type\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no panels in\n{stdout}"));
    assert_eq!(
        value_after(
            panels,
            "gen_ai_request_model=gpt-4o-mini gen_ai_token_type=input k8s_namespace_name=demo"
        ),
        input,
        "Prometheus's input tokens vs status.result.usage\n{panels}"
    );
    assert_eq!(
        value_after(
            panels,
            "gen_ai_request_model=gpt-4o-mini gen_ai_token_type=output k8s_namespace_name=demo"
        ),
        output_tokens,
        "Prometheus's output tokens vs status.result.usage\n{panels}"
    );

    // The trace from Jaeger: each span one level below the one before.
    // Jaeger's tree is the one headed `trace <id> (<n> spans)` (the collector's waterfall before
    // it says `spans, <ms>`).
    // The batch's report after it has `trace <id>: <n> spans: ...` lines, not this header.
    let tree = stdout
        .split("\ntrace ")
        .skip(1)
        .find(|t| t.lines().next().is_some_and(|l| l.ends_with(" spans)")))
        .unwrap_or_else(|| panic!("no Jaeger trace in\n{stdout}"));
    let expected = [
        ("llmjob.launch  [llmjob-operator]", 2),
        ("llm_job.workflow  [", 4),
        ("openai_call.task  [", 6),
        ("chat gpt-4o-mini  [", 8),
    ];
    let lines: Vec<&str> = tree.lines().collect();
    let mut at = 0;
    for (span, indent) in expected {
        let found = lines[at..]
            .iter()
            .position(|l| l.trim_start().starts_with(span))
            .unwrap_or_else(|| panic!("no {span:?} after line {at} of the tree:\n{tree}"));
        at += found;
        let line = lines[at];
        assert_eq!(
            line.len() - line.trim_start().len(),
            indent,
            "{span:?} nesting:\n{tree}"
        );
        if span.starts_with("llmjob.launch") {
            assert!(
                line.contains("(linked to span "),
                "the launch span links to the operator's reconcile: {line}"
            );
        }
    }
}
