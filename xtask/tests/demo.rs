//! The README's demo, end to end, as a user runs it: `cargo xtask demo --keep` (here with
//! `--no-build`, since `cargo xtask test` built the images first) on the real stack and a real
//! node, with the replay server. It checks what the demo prints: both pods ran in containerd
//! from the images `cargo xtask images` built, `kubectl logs` of both, the restricted namespace,
//! the trace. Then, as the printed instructions say, a second LlmJob is applied to the kept stack
//! with its kubectl and must succeed; Ctrl-C (SIGINT) stops the demo, which exits 0. Needs root,
//! the tools of `tools/ensure-tools.sh` and the image archives; the demo fails, naming what to
//! run, when one is missing.

#![allow(clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use testenv::images::{self, ImageArchive};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Guard against a hung demo (cold start included), not a performance target.
const DEMO_WAIT: Duration = Duration::from_secs(600);
/// Guard for the second LlmJob on the running stack.
const JOB_WAIT: Duration = Duration::from_secs(120);

/// The `containerID` and `imageID` the demo prints for the first container of the pods whose
/// name starts with `pod_prefix` (`pod <ns>/<name> container <c> node <node>` and the lines
/// below it).
fn container_ids(stdout: &str, pod_prefix: &str) -> (String, String, String) {
    let mut lines = stdout.lines();
    let header = lines
        .by_ref()
        .find(|l| l.starts_with(&format!("pod {pod_prefix}")))
        .unwrap_or_else(|| panic!("no `pod {pod_prefix}...` line in\n{stdout}"));
    let node = header.rsplit(' ').next().unwrap_or_default().to_owned();
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} after {header:?} in\n{stdout}"))
    };
    let _image = field("image ");
    let container_id = field("containerID ");
    let image_id = field("imageID ");
    (node, container_id, image_id)
}

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
    assert!(
        stdout.contains(&format!("k8s.node.name={}", testenv::node::NODE_NAME)),
        "the run's resource names the real node\n{stdout}"
    );

    // The batch: manifests/examples/batch.yaml's 100 items in one LlmJob, one trace, 100 lines
    // in the object store, totals in its status.
    let totals = stdout
        .lines()
        .find(|l| l.starts_with("batch ") && l.contains(" items, "))
        .unwrap_or_else(|| panic!("no batch totals line in\n{stdout}"));
    assert!(
        totals.ends_with(": 100 items, 100 succeeded, 0 failed, phase Succeeded"),
        "{totals}"
    );
    let batch_trace = stdout
        .lines()
        .find(|l| l.starts_with("trace ") && l.contains("openai_call.task (one per item)"))
        .unwrap_or_else(|| panic!("no batch trace line in\n{stdout}"));
    let batch_trace_id = batch_trace
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(':');
    assert_eq!(batch_trace_id.len(), 32, "{batch_trace}");
    assert_ne!(batch_trace_id, trace_id, "the batch is a trace of its own");
    assert!(
        batch_trace.contains(" 1 llmjob.launch,")
            && batch_trace.contains(" 100 openai_call.task (one per item),")
            && batch_trace.contains(" 100 chat spans"),
        "one launch span and 100 task spans under one trace id: {batch_trace}"
    );
    let output = stdout
        .lines()
        .find(|l| l.starts_with("output s3://"))
        .unwrap_or_else(|| panic!("no batch output line in\n{stdout}"));
    assert!(output.ends_with(" objects, 100 lines"), "{output}");
    let first_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("first line: "))
        .unwrap_or_else(|| panic!("no result line shown in\n{stdout}"));
    let first: serde_json::Value =
        serde_json::from_str(first_line).unwrap_or_else(|e| panic!("{e}: {first_line}"));
    assert_eq!(first["status"], "succeeded", "{first_line}");
    assert_eq!(first["traceId"], batch_trace_id, "{first_line}");

    // The namespace enforces the restricted Pod Security Standard.
    let labels = stdout
        .lines()
        .find(|l| l.starts_with("demo "))
        .unwrap_or_else(|| {
            panic!("no `kubectl get namespace demo --show-labels` row in\n{stdout}")
        });
    assert!(
        labels.contains("pod-security.kubernetes.io/enforce=restricted"),
        "{labels}"
    );

    // Both pods ran in containerd, from the images `cargo xtask images` built.
    for (prefix, image) in [
        ("llmjob-system/llmjob-operator-", images::OPERATOR),
        ("demo/haiku-", images::RUNNER),
    ] {
        let (node, container_id, image_id) = container_ids(&stdout, prefix);
        assert_eq!(node, testenv::node::NODE_NAME, "{prefix}");
        assert!(
            container_id.starts_with("containerd://"),
            "{prefix}: {container_id}"
        );
        let built = ImageArchive::open(&image).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            image_id,
            built.config_digest,
            "{prefix}: imageID is not the digest of {}",
            built.path.display()
        );
    }

    // `kubectl logs` of both pods (apiserver -> kubelet -> containerd's log file), printed in
    // that order before the containers.
    let runner_header = "$ kubectl logs -n demo haiku-";
    let operator_header = "$ kubectl logs -n llmjob-system deploy/llmjob-operator";
    let section = |from: &str, to: &str| -> String {
        let start = stdout
            .find(from)
            .unwrap_or_else(|| panic!("no {from:?} in\n{stdout}"));
        let rest = &stdout[start..];
        let end = rest
            .find(to)
            .unwrap_or_else(|| panic!("no {to:?} after {from:?} in\n{stdout}"));
        rest[..end].lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let runner_log = section(runner_header, operator_header);
    assert!(
        runner_log
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("job finished")),
        "`kubectl logs` of the runner pod shows its log lines:\n{runner_log}\nstderr:\n{stderr}"
    );
    let operator_log = section(operator_header, "\ncontainers:\n");
    assert!(
        operator_log.lines().any(|l| l.contains("llmjob_operator")),
        "`kubectl logs` of the operator pod shows its log lines:\n{operator_log}\nstderr:\n{stderr}"
    );
}
