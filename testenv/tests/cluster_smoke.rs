//! End-to-end checks of the test control plane: a real etcd, kube-apiserver and
//! kube-controller-manager (built by `tools/ensure-tools.sh`) plus a real node (the pods run
//! from the probe image of `cargo xtask images`, Debian's static busybox).
//!
//! Most tests share one environment ([`env`]) and work in their own namespace; one starts and
//! stops a standalone [`Cluster`] to check the lifecycle. Nothing is skipped: a missing tool or
//! image fails every test with the message naming what to run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use testenv::cluster::Cluster;
use testenv::env::TestEnv;
use testenv::images;
use testenv::node::{self, NodeConfig};

const WAIT: Duration = Duration::from_secs(90);

/// The environment shared by this binary's tests: a control plane, and a real node that imports
/// the pause and probe images.
fn env() -> &'static TestEnv {
    TestEnv::shared_with(|| {
        let node = NodeConfig::built_images(&[images::PAUSE, images::PROBE])
            .unwrap_or_else(|e| panic!("{e}"));
        TestEnv::builder().real_node(node)
    })
}

/// Polls `check` every 100 ms until it returns `Some`, failing the test after `timeout` with
/// `what` and the environment's directory.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}; logs in {}", env().dir().display()))
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ConfigMap::default()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn apiserver_is_ready_and_configmaps_round_trip() {
    let env = env();
    let client = env.client();
    let readyz = client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(readyz, "ok");
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.2");

    let ns = env.create_namespace("crud").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let pp = PostParams::default();
    api.create(&pp, &config_map("settings", &[("mode", "fast")]))
        .await
        .unwrap();
    let got = api.get("settings").await.unwrap();
    assert_eq!(got.data.unwrap()["mode"], "fast");

    let patch = serde_json::json!({ "data": { "mode": "slow", "extra": "1" } });
    api.patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert!(names.contains(&"settings".to_owned()), "{names:?}");
    // The root-ca-certificate-publisher runs too.
    assert!(names.contains(&"kube-root-ca.crt".to_owned()), "{names:?}");
    let patched = api.get("settings").await.unwrap().data.unwrap();
    assert_eq!(patched["mode"], "slow");
    assert_eq!(patched["extra"], "1");

    api.delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    assert!(api.get_opt("settings").await.unwrap().is_none());
}

#[tokio::test]
async fn kubectl_talks_to_the_cluster_with_the_admin_kubeconfig() {
    let env = env();
    let ns = env.create_namespace("kubectl").await.unwrap();
    let out = env
        .kubectl(&["get", "namespace", &ns, "-o", "name"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("namespace/{ns}")
    );
    let out = env
        .kubectl(&["auth", "whoami", "-o", "json"])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"admin\""), "{stdout}");
    assert!(stdout.contains("system:masters"), "{stdout}");
}

#[tokio::test]
async fn job_completes_through_the_job_controller() {
    let env = env();
    let ns = env.create_namespace("job").await.unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client(), &ns);
    let job: Job = from_json(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "hello" },
        "spec": {
            "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": images::PROBE.reference(),
                    "command": ["sh", "-c", "echo hi"],
                }],
            }},
        },
    }));
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let done = eventually("Job hello to complete", WAIT, || async {
        let job = jobs.get("hello").await.ok()?;
        let conditions = job.status.as_ref()?.conditions.clone()?;
        if let Some(failed) = conditions
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
        {
            panic!("Job hello failed: {failed:?}");
        }
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(job)
    })
    .await;
    assert_eq!(done.status.and_then(|s| s.succeeded), Some(1));

    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let listed = pods
        .list(&ListParams::default().labels("job-name=hello"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    let pod_name = pod.metadata.name.clone().unwrap();
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node::NODE_NAME)
    );
    let out = env
        .kubectl(&["logs", "-n", &ns, &pod_name, "-c", "main"])
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.trim(), "hi", "kubectl logs {ns}/{pod_name}: {out:?}");
}

#[tokio::test]
async fn deleting_an_owner_cascades_through_the_garbage_collector() {
    let env = env();
    let ns = env.create_namespace("gc").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    let pp = PostParams::default();
    let owner = api
        .create(&pp, &config_map("owner", &[("role", "owner")]))
        .await
        .unwrap();
    let mut dependent = config_map("dependent", &[("role", "dependent")]);
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..OwnerReference::default()
    }]);
    api.create(&pp, &dependent).await.unwrap();

    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the dependent ConfigMap to be collected", WAIT, || async {
        api.get_opt("dependent")
            .await
            .ok()
            .and_then(|found| found.is_none().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn namespace_deletion_finishes_with_a_running_pod_inside() {
    let env = env();
    let ns = env.create_namespace("nsdel").await.unwrap();
    let client = env.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &config_map("c", &[("k", "v")]))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = from_json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "sleeper" },
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": images::PROBE.reference(),
                "command": ["sh", "-c", "echo started; sleep 300"],
            }],
        },
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("pod sleeper to run", WAIT, || async {
        let pod = pods.get("sleeper").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace to be gone", WAIT, || async {
        namespaces
            .get_opt(&ns)
            .await
            .ok()
            .and_then(|found| found.is_none().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn service_account_clients_are_subject_to_rbac() {
    let env = env();
    let ns = env.create_namespace("rbac").await.unwrap();
    let as_sa = env.client_as_service_account(&ns, "default").await.unwrap();
    let sa_pods: Api<Pod> = Api::namespaced(as_sa, &ns);
    match sa_pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }

    let role: Role = from_json(serde_json::json!({
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["list"] }],
    }));
    let binding: RoleBinding = from_json(serde_json::json!({
        "metadata": { "name": "pod-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": ns }],
    }));
    let pp = PostParams::default();
    Api::<Role>::namespaced(env.client(), &ns)
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(env.client(), &ns)
        .create(&pp, &binding)
        .await
        .unwrap();
    eventually("the RoleBinding to take effect", WAIT, || async {
        sa_pods.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
}

/// A standalone control plane (no kubelet): starts, serves, reports its timings, shuts down and
/// leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_cluster_starts_and_shuts_down() {
    let dir = testenv::tools::target_dir()
        .join("testenv-logs")
        .join(format!("cluster-smoke-{}", std::process::id()));
    let cluster = match Cluster::start(&dir).await {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let timings = cluster.timings();
    eprintln!(
        "cluster start: total {:?} (certs {:?}, etcd {:?}, kube-apiserver {:?}, kube-controller-manager {:?}); logs in {}",
        timings.total,
        timings.certs,
        timings.etcd,
        timings.apiserver,
        timings.controller_manager,
        dir.display()
    );
    assert!(cluster.kubeconfig_path().is_file());
    assert!(cluster.api_server_url().starts_with("https://127.0.0.1:"));
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }

    let processes = cluster.processes();
    let names: Vec<&str> = processes.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["kube-controller-manager", "kube-apiserver", "etcd"],
        "{processes:?}"
    );
    let api_addr: std::net::SocketAddr = cluster
        .api_server_url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    assert!(testenv::process::accepts_tcp(api_addr).await);

    cluster.shutdown().await.unwrap();
    for (name, pid) in processes {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) still exists after shutdown"
        );
    }
    assert!(!testenv::process::accepts_tcp(api_addr).await);
}
