//! The real node ([`testenv::node`]) end to end: containerd + runc + the kubelet + kube-proxy +
//! CoreDNS + kube-scheduler against the test control plane, pods from imported OCI archives.
//!
//! One environment for the whole file (it takes a network namespace, a cgroup tree and a few
//! hundred MB), one test that checks, in order: the node is Ready; a pod runs from an imported
//! image with a `containerd://` container id and the imported image's digest; `kubectl logs`
//! reaches its output through the apiserver and the kubelet; a pod resolves a Service name
//! through CoreDNS, reaches a host process (the collector) through that Service and the API
//! server through in-cluster configuration; a namespace enforcing the restricted Pod Security
//! Standard admits a restricted pod and refuses a privileged one; and the shutdown leaves no
//! namespace, cgroup or mount behind.
//!
//! Needs: root, the tools of `tools/ensure-tools.sh`, and the pause and probe (Debian's static
//! busybox) image archives that `cargo xtask images` writes (`$LLMJOB_IMAGES_DIR` or
//! `<target>/images/`). Nothing is skipped: a missing piece fails the test with a message naming
//! what to run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use testenv::env::TestEnv;
use testenv::images::{self, ImageArchive};
use testenv::node::{self, NodeConfig};

const WAIT: Duration = Duration::from_secs(120);

/// A pod of the probe image running `script`, compliant with the restricted Pod Security
/// Standard.
fn probe_pod(name: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "probe",
                "image": images::PROBE.reference(),
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    }))
    .unwrap()
}

/// Waits until the pod has finished and returns it; panics with its logs if it failed.
async fn finished(env: &TestEnv, ns: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client(), ns);
    let pod = testenv::wait::until(&format!("pod {ns}/{name} to finish"), WAIT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get(name).await.ok()?;
            let phase = pod.status.as_ref()?.phase.clone()?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(pod)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; logs in {}", env.dir().display()));
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    assert_eq!(
        phase.as_deref(),
        Some("Succeeded"),
        "pod {ns}/{name} failed; its logs:\n{}\nstatus: {:?}",
        logs(env, ns, name).await,
        pod.status
    );
    pod
}

/// `kubectl logs` (apiserver → kubelet → containerd's log file).
async fn logs(env: &TestEnv, ns: &str, name: &str) -> String {
    let out = env.kubectl(&["logs", "-n", ns, name]).await.unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Peak resident memory (VmHWM) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_runs_pods_from_imported_images() {
    let probe = ImageArchive::open(&images::PROBE).unwrap_or_else(|e| panic!("{e}"));
    let probe_digest = probe.config_digest.clone();
    let probe_image = images::PROBE.reference();
    let config =
        NodeConfig::built_images(&[images::PAUSE, images::PROBE]).unwrap_or_else(|e| panic!("{e}"));
    let env = TestEnv::builder()
        .real_node(config)
        .collector(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let node = env.node().unwrap();
    let slot = env.node().map(|n| n.slot()).unwrap();
    eprintln!("node Ready after {:?}", node.ready_after());

    // A namespace enforcing the restricted Pod Security Standard.
    let ns = env.create_namespace("node-smoke").await.unwrap();
    let label = serde_json::json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
    }}});
    Api::<Namespace>::all(env.client())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);

    // 1. A pod from an imported image; its output through `kubectl logs`.
    pods.create(
        &PostParams::default(),
        &probe_pod("hello", "echo hello from a real node"),
    )
    .await
    .unwrap();
    let pod = finished(&env, &ns, "hello").await;
    let status = &pod.status.unwrap().container_statuses.unwrap()[0];
    let container_id = status.container_id.clone().unwrap_or_default();
    assert!(container_id.starts_with("containerd://"), "{container_id}");
    assert_eq!(
        status.image_id, probe_digest,
        "imageID is not the imported image's id"
    );
    let imported = node.ctr(&["images", "list", "--quiet"]).unwrap();
    assert!(imported.contains(&probe_image), "{imported}");
    let hello_logs = logs(&env, &ns, "hello").await;
    assert!(
        hello_logs.contains("hello from a real node"),
        "kubectl logs: {hello_logs}"
    );

    // 2. DNS, a host process behind a Service, and the API server through in-cluster config:
    // the collector answers an OTLP/HTTP export through its Service name; the API server is
    // reached at KUBERNETES_SERVICE_HOST:PORT (TCP) and through `kubernetes.default.svc`, where
    // a plain-HTTP request gets the Go HTTPS server's "400 Bad Request" (busybox's TLS client
    // cannot negotiate the apiserver's ECDSA suites; the operator's pod checks TLS and the
    // token end to end).
    let (collector_ns, collector_svc) = node::COLLECTOR_SERVICE;
    let collector = format!("{collector_svc}.{collector_ns}.svc.cluster.local");
    let script = format!(
        "set -e
nslookup {collector}
echo dns-ok
wget -q -O- --header 'Content-Type: application/json' --post-data '{{}}' http://{collector_svc}.{collector_ns}.svc:4318/v1/traces
echo
echo collector-ok
nc -w 5 \"$KUBERNETES_SERVICE_HOST\" \"$KUBERNETES_SERVICE_PORT\" </dev/null
echo apiserver-tcp-ok
test -s /var/run/secrets/kubernetes.io/serviceaccount/token
echo token-ok
wget -q -O- http://kubernetes.default.svc:$KUBERNETES_SERVICE_PORT/ 2>&1 || true"
    );
    pods.create(&PostParams::default(), &probe_pod("probe", &script))
        .await
        .unwrap();
    finished(&env, &ns, "probe").await;
    let probe_logs = logs(&env, &ns, "probe").await;
    for marker in [
        "dns-ok",
        "partialSuccess",
        "collector-ok",
        "apiserver-tcp-ok",
        "token-ok",
        "400 Bad Request",
    ] {
        assert!(
            probe_logs.contains(marker),
            "{marker} missing: {probe_logs}"
        );
    }

    // 3. The restricted namespace refuses a privileged pod.
    let mut privileged = probe_pod("privileged", "true");
    let spec = privileged.spec.as_mut().unwrap();
    spec.containers[0].security_context =
        Some(serde_json::from_value(serde_json::json!({ "privileged": true })).unwrap());
    let refused = pods.create(&PostParams::default(), &privileged).await;
    let message = format!("{refused:?}");
    assert!(
        message.contains("violates PodSecurity"),
        "a privileged pod was not refused: {message}"
    );

    // The stack's peak memory, for docs/test-infra.md.
    let mut total = 0;
    let mut parts = Vec::new();
    for (name, pid) in env
        .cluster()
        .unwrap()
        .processes()
        .into_iter()
        .chain(node.processes())
    {
        let kib = peak_rss_kib(pid);
        total += kib;
        parts.push(format!("{name} {} MiB", kib / 1024));
    }
    eprintln!("peak RSS {} MiB: {}", total / 1024, parts.join(", "));

    // Shutdown leaves nothing on the host.
    let dir = env.dir().to_owned();
    env.shutdown().await.unwrap();
    assert!(
        !Path::new(&format!("/run/netns/testenv-{slot}")).exists(),
        "network namespace left behind"
    );
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/pids/testenv-{slot}")).exists(),
        "cgroup tree left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let node_dir = dir.join("node");
    assert!(
        !mounts.contains(&*node_dir.to_string_lossy()),
        "mounts left under {}",
        node_dir.display()
    );
}
