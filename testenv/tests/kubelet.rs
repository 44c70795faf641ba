//! The fake kubelet against the real control plane: Jobs complete with environment from Secrets,
//! configuration errors resolve when the Secret appears, exit codes and termination messages
//! reach the pod status, deletion kills processes, restarts, deadlines, service-account
//! kubeconfigs, mapped and unknown images, Deployments become Available, and the kubelet's
//! shutdown and drop stop its processes.
//!
//! All tests but the last share one environment ([`shared_env`]: `busybox` runs on the host, two
//! test images map to local files) and each works in its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use testenv::env::TestEnv;

const WAIT: Duration = Duration::from_secs(90);

/// The shared environment on the fake kubelet: `busybox` runs on the host, and two image
/// mappings for the mapped-binary tests (every test of this binary asks through here, so the
/// first one's configuration is everyone's).
fn shared_env() -> &'static TestEnv {
    TestEnv::shared_with(|| {
        TestEnv::builder()
            .host_image("busybox")
            .image("testenv.local/echo", "/bin/echo")
            .image("testenv.local/missing", "/nonexistent/binary")
    })
}

/// Polls `check` every 100 ms until it returns `Some`; fails after `timeout` naming `what` and
/// the environment's directory.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}; logs in {}", shared_env().dir().display()))
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    from_json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name },
        "stringData": { key: value },
    }))
}

/// A bare pod running `script` with the host's `sh`.
fn shell_pod(name: &str, restart_policy: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut container = serde_json::json!({
        "name": "main",
        "image": "busybox:1.37",
        "command": ["sh", "-c", script],
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    from_json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
        },
    }))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn main_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "main")
}

/// Waits for pod `name` to reach `Succeeded` or `Failed` and returns it.
async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} to finish"), WAIT, || async {
        let pod = pods.get(name).await.ok()?;
        matches!(phase(&pod), Some("Succeeded" | "Failed")).then_some(pod)
    })
    .await
}

#[tokio::test]
async fn node_is_registered_ready_with_a_lease() {
    let env = shared_env();
    let node = Api::<Node>::all(env.client())
        .get("testenv-node")
        .await
        .unwrap();
    let status = node.status.unwrap();
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(status.allocatable.unwrap()["pods"].0, "110");
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .all(|t| t.key != "node.kubernetes.io/not-ready"),
        "{taints:?}"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        env.client(),
        "kube-node-lease",
    )
    .get("testenv-node")
    .await
    .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("testenv-node")
    );
}

#[tokio::test]
async fn job_completes_with_environment_from_a_secret() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-job").await.unwrap();
    Api::<Secret>::namespaced(env.client(), &ns)
        .create(
            &PostParams::default(),
            &secret("creds", "foo", "value-from-secret"),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client(), &ns);
    let job: Job = from_json(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "echo" },
        "spec": {
            "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo $FOO; echo pod=$POD_NAME home=${HOME:+set}; exit 0"],
                    "env": [
                        { "name": "FOO", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "foo" } } },
                        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    ],
                }],
            }},
        },
    }));
    jobs.create(&PostParams::default(), &job).await.unwrap();

    eventually("Job echo to complete", WAIT, || async {
        let job = jobs.get("echo").await.ok()?;
        let conditions = job.status.as_ref()?.conditions.clone()?;
        if let Some(failed) = conditions
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
        {
            panic!("Job echo failed: {failed:?}");
        }
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = pods
        .list(&ListParams::default().labels("job-name=echo"))
        .await
        .unwrap()
        .items
        .remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let log = env.pod_log(&ns, &name, "main");
    assert!(log.contains("value-from-secret"), "log: {log}");
    assert!(log.contains(&format!("pod={name} home=set")), "log: {log}");
    let terminated = main_status(&pod)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.terminated)
        .unwrap();
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
}

#[tokio::test]
async fn missing_secret_blocks_the_container_until_it_exists() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-cfg").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = shell_pod(
        "waits",
        "Never",
        "echo token=$TOKEN",
        serde_json::json!({
            "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "late", "key": "token" } } }],
        }),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let waiting = eventually("CreateContainerConfigError", WAIT, || async {
        let pod = pods.get("waits").await.ok()?;
        let waiting = main_status(&pod)?.state.clone()?.waiting?;
        (waiting.reason.as_deref() == Some("CreateContainerConfigError")).then_some((pod, waiting))
    })
    .await;
    assert_eq!(
        waiting.1.message.as_deref(),
        Some("secret \"late\" not found")
    );
    assert_eq!(phase(&waiting.0), Some("Pending"));

    Api::<Secret>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &secret("late", "token", "arrived"))
        .await
        .unwrap();
    let pod = finished(&pods, "waits").await;
    assert_eq!(phase(&pod), Some("Succeeded"));
    assert_eq!(env.pod_log(&ns, "waits", "main").trim(), "token=arrived");
}

#[tokio::test]
async fn exit_code_and_termination_message_reach_the_status() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-exit").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = shell_pod(
        "fails",
        "Never",
        "echo msg > $MSG_PATH; exit 3",
        serde_json::json!({ "env": [{ "name": "MSG_PATH", "value": "/dev/termination-log" }] }),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "fails").await;
    assert_eq!(phase(&pod), Some("Failed"));
    let terminated = main_status(&pod)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.terminated)
        .unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(terminated.message.as_deref(), Some("msg\n"));
    assert!(terminated.started_at.is_some() && terminated.finished_at.is_some());
    // Nothing was written to the host's /dev.
    assert!(!std::path::Path::new("/dev/termination-log").exists());
}

#[tokio::test]
async fn fallback_to_logs_on_error() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-fallback").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = shell_pod(
        "fallback",
        "Never",
        "echo first; echo last words; exit 1",
        serde_json::json!({ "terminationMessagePolicy": "FallbackToLogsOnError" }),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "fallback").await;
    let terminated = main_status(&pod)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.terminated)
        .unwrap();
    assert_eq!(terminated.message.as_deref(), Some("first\nlast words"));
}

/// `true` once process `pid` is gone (or a zombie).
fn process_gone(pid: u32) -> bool {
    let stat =
        std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

#[tokio::test]
async fn deleting_a_running_pod_kills_it_and_removes_it() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-del").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = shell_pod(
        "sleeper",
        "Always",
        // `$$$$`: the kubelet's expansion turns `$$` into `$`, so the shell sees `$$`.
        "echo pid=$$$$; exec sleep 300",
        serde_json::json!({}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pid: u32 = eventually("sleeper to run and print its pid", WAIT, || async {
        let pod = pods.get("sleeper").await.ok()?;
        if phase(&pod) != Some("Running") {
            return None;
        }
        let log = env.pod_log(&ns, "sleeper", "main");
        log.lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.trim().parse().ok())
    })
    .await;
    assert!(!process_gone(pid));

    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    eventually("pod sleeper to disappear", WAIT, || async {
        pods.get_opt("sleeper")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually(
        "the sleep process to die",
        Duration::from_secs(10),
        || async { process_gone(pid).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn on_failure_restarts_until_success() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-restart").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    // The working directory (the pod's directory) survives restarts.
    let pod = shell_pod(
        "retry",
        "OnFailure",
        "if [ -f ran-once ]; then echo second; exit 0; fi; touch ran-once; echo first; exit 1",
        serde_json::json!({}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "retry").await;
    assert_eq!(phase(&pod), Some("Succeeded"));
    let status = main_status(&pod).unwrap();
    assert_eq!(status.restart_count, 1);
    let last = status
        .last_state
        .clone()
        .and_then(|s| s.terminated)
        .unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(env.pod_log(&ns, "retry", "main"), "first\nsecond\n");
}

#[tokio::test]
async fn active_deadline_fails_the_pod() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-deadline").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let mut pod = shell_pod("slow", "Never", "exec sleep 300", serde_json::json!({}));
    pod.spec.as_mut().unwrap().active_deadline_seconds = Some(2);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "slow").await;
    assert_eq!(phase(&pod), Some("Failed"));
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.reason.as_deref()),
        Some("DeadlineExceeded")
    );
    let terminated = main_status(&pod)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.terminated)
        .unwrap();
    assert_eq!(terminated.exit_code, 143, "killed by SIGTERM");
}

#[tokio::test]
async fn unknown_images_wait_with_a_hint() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-image").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let mut pod = shell_pod("nope", "Never", "true", serde_json::json!({}));
    pod.spec.as_mut().unwrap().containers[0].image = Some("example.com/not-mapped:1.0".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let waiting = eventually("ErrImagePull", WAIT, || async {
        let pod = pods.get("nope").await.ok()?;
        let waiting = main_status(&pod)?.state.clone()?.waiting?;
        matches!(
            waiting.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(waiting)
    })
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("example.com/not-mapped"), "{message}");
    assert!(message.contains("host_image"), "{message}");
}

#[tokio::test]
async fn deployment_becomes_available() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-deploy").await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(env.client(), &ns);
    let deployment: Deployment = from_json(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{ "name": "main", "image": "busybox", "command": ["sleep", "3600"] }],
                },
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("Deployment web to become Available", WAIT, || async {
        let d = deployments.get("web").await.ok()?;
        let status = d.status?;
        let available = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        (available && status.ready_replicas == Some(2)).then_some(())
    })
    .await;
    // Deleting it stops the processes and removes the pods.
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the Deployment's pods to disappear", WAIT, || async {
        let listed = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        listed.items.is_empty().then_some(())
    })
    .await;
}

/// Starts a `sleep 300` pod in `env` and returns the pid of the `sleep` process once it runs.
async fn running_sleep_pid(env: &TestEnv) -> u32 {
    let ns = env.create_namespace("kubelet-stop").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = shell_pod(
        "sleeper",
        "Always",
        "echo pid=$$$$; exec sleep 300",
        serde_json::json!({}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    testenv::wait::until("the sleeper to print its pid", WAIT, || async {
        env.pod_log(&ns, "sleeper", "main")
            .lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.trim().parse().ok())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; logs in {}", env.dir().display()))
}

/// Waits up to 10 s for `pid` to be gone.
async fn assert_gone(pid: u32, what: &str) {
    let gone = testenv::wait::until(
        &format!("pid {pid} to be gone after {what}"),
        Duration::from_secs(10),
        || std::future::ready(process_gone(pid).then_some(())),
    )
    .await;
    assert_eq!(gone, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_environment_stops_its_pods_on_shutdown_and_on_drop() {
    let env = TestEnv::builder()
        .host_image("busybox")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = running_sleep_pid(&env).await;
    env.shutdown().await.unwrap();
    assert_gone(pid, "TestEnv::shutdown").await;

    let env = TestEnv::builder()
        .host_image("busybox")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = running_sleep_pid(&env).await;
    drop(env);
    assert_gone(pid, "dropping the TestEnv").await;
}

#[tokio::test]
async fn mapped_images_run_their_binary_with_the_args() {
    let env = shared_env();
    let ns = env.create_namespace("kubelet-mapped").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod: Pod = from_json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "echo" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "testenv.local/missing:v1",
            }],
        },
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "echo").await;
    assert_eq!(phase(&pod), Some("Failed"));
    let main = main_status(&pod).unwrap();
    let terminated = main.state.clone().and_then(|s| s.terminated).unwrap();
    assert_eq!(terminated.exit_code, 128);
    assert_eq!(terminated.reason.as_deref(), Some("StartError"));
    assert!(
        terminated
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("build it first"),
        "{terminated:?}"
    );

    // The binary is the entrypoint: a foreign command is ignored, args are expanded and passed.
    let pod: Pod = from_json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "echo2" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "testenv.local/echo@sha256:0123",
                "command": ["/app/entrypoint"],
                "args": ["hello", "$(NAME)"],
                "env": [{ "name": "NAME", "value": "world" }],
            }],
        },
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = finished(&pods, "echo2").await;
    assert_eq!(phase(&pod), Some("Succeeded"));
    assert_eq!(env.pod_log(&ns, "echo2", "main"), "hello world\n");
}
