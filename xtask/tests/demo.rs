//! The README's demo, end to end, as a user runs it: `cargo xtask demo` (here with `--no-build`,
//! since `cargo xtask test` built the binaries first) on the real stack, with the replay server.

use std::process::Command;

#[test]
fn the_demo_runs_an_llmjob_to_succeeded_and_shows_its_trace() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--no-build"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("running `cargo xtask demo`: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // The phases, as `kubectl get llmjobs` shows them.
    for phase in ["Pending", "Succeeded"] {
        assert!(stdout.contains(phase), "no {phase} row in\n{stdout}");
    }
    // Token usage and the trace id in the wide view and the summary.
    assert!(
        stdout.contains("tokens: 23 input + 8 output = 31 total"),
        "{stdout}"
    );
    let trace_line = stdout
        .lines()
        .find(|l| l.starts_with("trace "))
        .unwrap_or_else(|| panic!("no waterfall in\n{stdout}"));
    let trace_id = trace_line.split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "{trace_line}");
    assert!(
        stdout.contains(&format!(
            "haiku   Succeeded   gpt-4o-mini   31       {trace_id}"
        )),
        "the wide view shows the trace id\n{stdout}"
    );
    // The waterfall nests the run under the operator's launch span.
    for span in [
        "llmjob.launch",
        "└─ llm_job.workflow",
        "└─ openai_call.task",
        "└─ chat gpt-4o-mini",
    ] {
        assert!(
            stdout.contains(span),
            "no {span:?} in the waterfall\n{stdout}"
        );
    }
    assert!(stdout.contains("k8s.pod.name=haiku-"), "{stdout}");
    // Metrics and logs of that run.
    assert!(
        stdout.contains("gen_ai.client.token.usage [{token}]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gen_ai.client.operation.duration [s]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("job finished  trace={trace_id}")),
        "a log record with the trace id\n{stdout}"
    );
}
