//! `kubectl apply --server-side -k` of a user's overlay of `manifests/` into a real control plane
//! and a real node, as `docs/install.md` describes it: the overlay replaces the operator's
//! argument list as a whole (here with the collector's Service as `--default-otlp-endpoint`). The
//! operator runs as the manifests' Deployment, from the image `cargo xtask images` built, as the
//! manifests' ServiceAccount, so the example LlmJob succeeding proves `install.yaml`'s image
//! reference, pull policy and RBAC. Then `kubectl delete -k` removes everything, the Namespace
//! and the CRD included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

/// The namespace and Deployment of `manifests/install.yaml`.
const NS: &str = "llmjob-system";
const DEPLOYMENT: &str = "llmjob-operator";

/// The operator container's args in `manifests/install.yaml`, with `--default-otlp-endpoint`
/// replaced (it must be there: a renamed flag fails here).
fn overlay_args(otlp_endpoint: &str) -> Vec<String> {
    let text = std::fs::read_to_string(deploy_tests::manifests_dir().join("install.yaml")).unwrap();
    let docs = deploy_tests::yaml_docs(&text, "install.yaml").unwrap();
    let deployment = deploy_tests::of_kind(&docs, "Deployment")[0];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("install.yaml: the operator's args");
    let mut replaced = 0;
    let out: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.starts_with("--default-otlp-endpoint=") {
                replaced += 1;
                format!("--default-otlp-endpoint={otlp_endpoint}")
            } else {
                a.to_owned()
            }
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "install.yaml's args lack --default-otlp-endpoint: {out:?}"
    );
    out
}

/// `to` relative to the directory `from` (kustomize refuses absolute resource paths): up to `/`,
/// then down to `to`. Both must be absolute.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for _ in from.components().skip(1) {
        out.push("..");
    }
    out.join(to.strip_prefix("/").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_k_of_an_overlay_runs_an_llmjob_and_delete_k_cleans_up() {
    let env = start_env().await;
    let dir = tempfile::tempdir().unwrap();
    let args = overlay_args(&collector_grpc());
    let overlay = dir.path().canonicalize().unwrap().join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    let base = relative_path(&overlay, &deploy_tests::manifests_dir());
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base.to_string_lossy()],
        "patches": [{
            "target": {"kind": "Deployment", "name": DEPLOYMENT},
            "patch": serde_json::json!([{
                "op": "replace",
                "path": "/spec/template/spec/containers/0/args",
                "value": args,
            }]).to_string(),
        }],
    });
    std::fs::write(
        overlay.join("kustomization.yaml"),
        serde_norway::to_string(&kustomization).unwrap(),
    )
    .unwrap();
    let overlay = overlay.to_string_lossy().into_owned();

    kubectl(&env, &["apply", "--server-side", "-k", &overlay]).await;
    kubectl(
        &env,
        &[
            "wait",
            "--for=condition=Established",
            "crd/llmjobs.llmjob.dev",
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
    kubectl(
        &env,
        &[
            "-n",
            NS,
            "wait",
            "--for=condition=Available",
            &format!("deployment/{DEPLOYMENT}"),
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
    // Available: the kubelet's readiness probe on /readyz passed.
    let pod = operator_pod(&env, NS).await;
    wait_for_leader(&env, NS, "llmjob-operator", &pod).await;

    // The manifests' operator watches every namespace: the LlmJob goes into a fresh one.
    let jobs_ns = env.create_namespace("llm-jobs").await.unwrap();
    let replay = replay(&env).await;
    run_example(&env, &jobs_ns, &replay, dir.path()).await;
    let log = operator_log(&env, NS, &pod).await;
    assert_no_rbac_denials(&log, "kubectl apply -k");

    kubectl(
        &env,
        &[
            "delete",
            "-k",
            &overlay,
            "--wait",
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(env.client());
    wait_until(&format!("namespace {NS} to be gone"), || async {
        namespaces.get_opt(NS).await.ok()?.is_none().then_some(())
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(crds.get_opt("llmjobs.llmjob.dev").await.unwrap().is_none());
    let cluster_roles: Api<ClusterRole> = Api::all(env.client());
    assert!(cluster_roles.get_opt(DEPLOYMENT).await.unwrap().is_none());
    env.shutdown().await.unwrap();
}
