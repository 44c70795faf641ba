//! The README's demo, end to end, as a user runs it: `cargo xtask demo --keep` (here with
//! `--no-build`, since `cargo xtask test` built the binaries first) on the real stack, with the
//! replay server. Then, as the printed instructions say, a second LlmJob is applied to the kept
//! stack with its kubectl and must succeed; Ctrl-C (SIGINT) stops the demo, which exits 0.

#![allow(clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Guard against a hung demo (cold start included), not a performance target.
const DEMO_WAIT: Duration = Duration::from_secs(600);
/// Guard for the second LlmJob on the running stack.
const JOB_WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_an_llmjob_to_succeeded_and_keeps_a_stack_that_runs_another() {
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--no-build", "--keep"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running `cargo xtask demo`: {e}"));
    let mut stderr_pipe = demo.stderr.take().expect("piped stderr");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(demo.stdout.take().expect("piped stdout")).lines();

    // Everything up to the --keep instruction that names the prepared example.
    let mut stdout = String::new();
    let mut apply_line = None;
    let read = tokio::time::timeout(DEMO_WAIT, async {
        while let Some(line) = lines.next_line().await.expect("reading the demo's stdout") {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.trim_start().starts_with("kubectl apply -f ") {
                apply_line = Some(line);
                break;
            }
        }
    })
    .await;
    let Some(apply_line) = apply_line else {
        let _ = demo.start_kill();
        let status = demo.wait().await;
        let stderr = stderr_task.await.unwrap_or_default();
        panic!(
            "the demo did not reach its --keep instructions ({}; exit {status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            if read.is_err() {
                "timed out"
            } else {
                "stdout ended"
            }
        );
    };

    // The printed instructions, followed literally.
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("no KUBECONFIG line in\n{stdout}"))
        .to_owned();
    let file = apply_line
        .trim_start()
        .strip_prefix("kubectl apply -f ")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a file after `kubectl apply -f`")
        .to_owned();
    let kubectl = testenv::tools::bin("kubectl").unwrap_or_else(|e| panic!("{e}"));
    let run_kubectl = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::process::Command::new(kubectl)
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .await
                .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
        }
    };
    let applied = run_kubectl(vec!["apply".into(), "-f".into(), file.clone()]).await;
    assert!(
        applied.status.success(),
        "kubectl apply -f {file}: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let get_phase = || {
        run_kubectl(
            [
                "get",
                "llmjob",
                "release-notes",
                "-n",
                "demo",
                "-o",
                "jsonpath={.status.phase}",
            ]
            .map(String::from)
            .to_vec(),
        )
    };
    let second = testenv::wait::until("the second LlmJob to finish", JOB_WAIT, || async {
        let phase = String::from_utf8_lossy(&get_phase().await.stdout).into_owned();
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let described = run_kubectl(
        ["get", "llmjob", "release-notes", "-n", "demo", "-o", "yaml"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_eq!(
        second.as_deref(),
        Ok("Succeeded"),
        "the LlmJob applied as the --keep instructions say:\n{}",
        String::from_utf8_lossy(&described.stdout)
    );

    // Ctrl-C stops the kept stack, and the demo exits 0.
    let pid = demo.id().expect("the demo is running");
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("a pid fits i32"))
        .expect("a non-zero pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("sending SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .expect("the demo stops within 60 s of Ctrl-C")
        .expect("waiting for the demo");
    let stderr = stderr_task.await.unwrap_or_default();
    assert!(
        status.success(),
        "the demo failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
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
