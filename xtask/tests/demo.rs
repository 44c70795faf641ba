//! The README's demo, end to end, as a user runs it: `cargo xtask demo` (here with `--no-build`,
//! since `cargo xtask test` built the images first) on the real stack and a real node, with the
//! replay server. Needs root, the tools of `tools/ensure-tools.sh` and the archives of `cargo
//! xtask images`; the demo fails, naming what to run, when one is missing.

use std::process::Command;

use testenv::images::{self, ImageArchive};

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
    assert!(
        stdout.contains(&format!("k8s.node.name={}", testenv::node::NODE_NAME)),
        "the run's resource names the real node\n{stdout}"
    );

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
