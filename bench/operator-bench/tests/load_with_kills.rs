//! Issue 19's load with faults, small enough for CI: 80 LlmJobs while the operator is SIGKILLed
//! every 2 s (and started again at once). Runs `operator-bench --kill-every 2s --only-kills` on
//! its own control plane with the fake kubelet running the runner binary as each pod and a real
//! collector, and requires its checks: every LlmJob `Succeeded`, each with exactly one Job, one
//! request to the model API, and exactly one `llm_job.workflow` span in its trace.
//!
//! Uses the debug `llmjob-operator` and `llmjob-runner` that `cargo xtask test` builds first
//! (`cargo build --workspace --bins`); a missing one fails the test, naming the command.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

/// The LlmJobs of the run.
const COUNT: &str = "80";
/// How often the operator is SIGKILLed.
const KILL_EVERY: &str = "2s";

#[test]
fn every_llmjob_runs_exactly_once_while_the_operator_is_sigkilled() {
    let operator = testenv::tools::cargo_bin("llmjob-operator", "llmjob-operator")
        .unwrap_or_else(|e| panic!("{e}"));
    testenv::tools::cargo_bin("llmjob-runner", "llmjob-runner").unwrap_or_else(|e| panic!("{e}"));
    let bin_dir = operator.parent().expect("the binary is in a directory");
    let out = Command::new(env!("CARGO_BIN_EXE_operator-bench"))
        .args(["--count", COUNT, "--kill-every", KILL_EVERY, "--only-kills"])
        // No time is compared here, so the clock need not wait for the garbage collector; one
        // create at a time makes the load last long enough for several kills.
        .args([
            "--gc-wait",
            "0s",
            "--create-concurrency",
            "1",
            "--timeout",
            "5m",
        ])
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("running operator-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "operator-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The four guarantees, each PASS (the bench exits non-zero on a MISS; this names them).
    for guarantee in [
        "| LlmJobs Succeeded |",
        "| LlmJobs with exactly one Job |",
        "| LlmJobs whose trace holds exactly one `llm_job.workflow` span |",
        "| requests to the model API |",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(guarantee))
            .unwrap_or_else(|| panic!("no row {guarantee} in:\n{stdout}"));
        assert!(row.ends_with("| PASS |"), "{row}\n{stdout}\n{stderr}");
    }
    // The operator really was killed mid-load, more than once.
    let kills: usize = stdout
        .split_once(" kills)")
        .and_then(|(head, _)| head.rsplit_once('(')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no kill count in:\n{stdout}"));
    assert!(kills >= 2, "only {kills} kills:\n{stdout}\n{stderr}");
}
