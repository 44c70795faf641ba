//! `helm install` of `charts/llmjob-operator` into a real control plane and a real node, with the
//! real `helm`: the operator's pod runs from the image `cargo xtask images` built (imported under
//! the chart's reference), reaches the API server through in-cluster configuration as the chart's
//! ServiceAccount, passes the kubelet's readiness probe, and runs the runner's pod from its image,
//! so an LlmJob that succeeds proves the chart's image, RBAC, flags and environment are enough for
//! the operator to do its job. Both RBAC modes:
//! cluster-wide (the default) and namespaced (`watchNamespaces`). Then `helm test` runs the chart's
//! test hook (`llmjob-operator check` in the operator's image, as its own ServiceAccount), and
//! `helm uninstall` removes the release and stops the operator, and keeps the CRD (`crds.keep`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ListParams;

/// The release name of the chart's README (`helm install llmjob-operator ...`), so the objects are
/// named `llmjob-operator`.
const RELEASE: &str = "llmjob-operator";
const LEASE: &str = "llmjob-operator";

/// Installs the chart (cluster-wide, or watching only the LlmJobs' namespace), runs the example
/// LlmJob through it, checks RBAC, leader election and telemetry, and uninstalls.
async fn install_run_uninstall(namespaced: bool) {
    let env = start_env().await;
    let home = tempfile::tempdir().unwrap();
    let release_ns = env.create_namespace("llmjob-system").await.unwrap();
    let jobs_ns = env.create_namespace("llm-jobs").await.unwrap();
    let replay = replay(&env).await;
    let collector = collector_grpc();
    let watch: Vec<&str> = if namespaced { vec![&jobs_ns] } else { vec![] };
    let values = serde_json::json!({
        "defaults": {"otlp": {"endpoint": collector, "protocol": "grpc"}, "environment": "test"},
        "operatorTelemetry": {"otlp": {"endpoint": collector, "protocol": "grpc"}},
        "watchNamespaces": watch,
        "leaderElection": {"enabled": true, "leaseName": LEASE},
        "logging": {"level": "info,llmjob_operator=debug"},
    });
    let values_file = home.path().join("values.yaml");
    std::fs::write(&values_file, values.to_string()).unwrap();

    let chart = deploy_tests::chart_dir().to_string_lossy().into_owned();
    let notes = helm(
        &env,
        home.path(),
        &[
            "install",
            RELEASE,
            &chart,
            "--namespace",
            &release_ns,
            "--values",
            &values_file.to_string_lossy(),
            "--wait",
            "--timeout",
            WAIT_FLAG,
        ],
    )
    .await;
    let scope_note = if namespaced {
        format!("It watches LlmJobs in: {jobs_ns}.")
    } else {
        "It watches LlmJobs in every namespace.".to_owned()
    };
    assert!(notes.contains(&scope_note), "NOTES.txt:\n{notes}");

    // What NOTES.txt tells the user to run, then Available (the kubelet's readiness probe on
    // /readyz passed: the operator's caches synced with the permissions it was given).
    kubectl(
        &env,
        &[
            "-n",
            &release_ns,
            "rollout",
            "status",
            &format!("deployment/{RELEASE}"),
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
    kubectl(
        &env,
        &[
            "-n",
            &release_ns,
            "wait",
            "--for=condition=Available",
            &format!("deployment/{RELEASE}"),
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
    let pod = operator_pod(&env, &release_ns).await;
    wait_for_leader(&env, &release_ns, LEASE, &pod).await;

    // RBAC as the API server sees it: the LlmJobs' namespace always; every namespace only in the
    // cluster-wide mode.
    let sa = (release_ns.as_str(), RELEASE);
    assert!(can_i(&env, sa, "watch", "llmjobs.llmjob.dev", &["-n", &jobs_ns]).await);
    assert!(can_i(&env, sa, "create", "jobs.batch", &["-n", &jobs_ns]).await);
    assert_eq!(
        can_i(&env, sa, "list", "llmjobs.llmjob.dev", &["-A"]).await,
        !namespaced,
        "cluster-wide list of LlmJobs (namespaced mode: {namespaced})"
    );
    // No Secret, anywhere, in either mode: a missing one is read from the runner pod.
    for verb in ["get", "list", "watch"] {
        assert!(
            !can_i(&env, sa, verb, "secrets", &["-n", &jobs_ns]).await,
            "{verb} secrets in the LlmJobs' namespace (namespaced mode: {namespaced})"
        );
        assert!(
            !can_i(&env, sa, verb, "secrets", &["-A"]).await,
            "{verb} secrets cluster-wide (namespaced mode: {namespaced})"
        );
    }

    let done = run_example(&env, &jobs_ns, &replay, home.path()).await;
    let trace_id = done
        .status
        .as_ref()
        .and_then(|s| s.trace_id.clone())
        .unwrap();
    wait_for_operator_span(&env, &trace_id, &pod).await;
    let log = operator_log(&env, &release_ns, &pod).await;
    assert_no_rbac_denials(&log, &format!("helm install (namespaced: {namespaced})"));

    // What the chart's README tells the user to run after installing.
    let tested = helm(
        &env,
        home.path(),
        &[
            "test",
            RELEASE,
            "--namespace",
            &release_ns,
            "--timeout",
            WAIT_FLAG,
        ],
    )
    .await;
    assert!(
        tested.contains(&format!("TEST SUITE:     {RELEASE}-test")) && tested.contains("Succeeded"),
        "helm test:\n{tested}"
    );

    helm(
        &env,
        home.path(),
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            &release_ns,
            "--wait",
            "--timeout",
            WAIT_FLAG,
        ],
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client(), &release_ns);
    assert!(deployments.get_opt(RELEASE).await.unwrap().is_none());
    let pods: Api<Pod> = Api::namespaced(env.client(), &release_ns);
    wait_until(
        "the operator's pod to be gone after helm uninstall",
        || async {
            let params = ListParams::default().labels("app.kubernetes.io/name=llmjob-operator");
            pods.list(&params)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let cluster_roles: Api<ClusterRole> = Api::all(env.client());
    assert!(cluster_roles.get_opt(RELEASE).await.unwrap().is_none());
    let roles: Api<Role> = Api::namespaced(env.client(), &jobs_ns);
    assert!(roles.get_opt(RELEASE).await.unwrap().is_none());
    // The test hook's objects went with the passed test (hook-delete-policy hook-succeeded).
    let test_pods: Api<Pod> = Api::namespaced(env.client(), &release_ns);
    wait_until("the helm test pod to be deleted", || async {
        test_pods
            .get_opt(&format!("{RELEASE}-test"))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // Helm keeps the CRD (and so every LlmJob): `crds.keep`, as the chart's README says.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(crds.get_opt("llmjobs.llmjob.dev").await.unwrap().is_some());
    env.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_cluster_wide_runs_an_llmjob_and_uninstalls() {
    install_run_uninstall(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_namespaced_runs_an_llmjob_with_roles_only_and_uninstalls() {
    install_run_uninstall(true).await;
}
