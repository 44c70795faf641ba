//! The CRD's upgrade paths, on a real API server, exactly as docs/install.md documents them:
//!
//! * with the chart (`crds.enabled`, the default) the CRD is a template, so `helm upgrade
//!   --reuse-values` upgrades it: install the chart, create an LlmJob, upgrade to a copy of the
//!   chart whose CRD has one more (documented) field; the API server then serves the new schema
//!   (an LlmJob using the field passes strict validation, which refused it before) and the LlmJob
//!   is still there;
//! * apart from the chart (`crds.enabled=false`, or the plain manifests): `kubectl apply
//!   --server-side -f crds/llmjobs.llmjob.dev.yaml`, first to install, then again with the changed
//!   CRD to upgrade.
//!
//! Both also check the CRD's categories as the API server serves them: `llmjob`, not `all`. And,
//! with the operator's pod never ready (no kubelet here), the chart's `helm test` command,
//! `llmjob-operator check`, fails and says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{WAIT_FLAG, helm, kubectl, wait_until};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use testenv::env::TestEnv;

const CRD: &str = "llmjobs.llmjob.dev";
const RELEASE: &str = "llmjob-operator";
/// The field the "next" CRD adds under `spec`.
const NEW_FIELD: &str = "upgradeProbe";

/// A control plane without a kubelet (the operator's pod stays Pending: only the API objects
/// matter here).
async fn env() -> TestEnv {
    TestEnv::builder()
        .api_only()
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The generated CRD with one more documented string field, `spec.upgradeProbe`.
fn next_crd() -> String {
    let text = std::fs::read_to_string(deploy_tests::crd_file()).unwrap();
    let mut crd: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let spec_props = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert!(spec_props.is_mapping(), "the CRD's spec has properties");
    spec_props[NEW_FIELD] = serde_norway::from_str(
        "{type: string, description: A field added by a later version of the CRD.}",
    )
    .unwrap();
    serde_norway::to_string(&crd).unwrap()
}

/// Copies the directory `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Whether the served CRD's `spec` has [`NEW_FIELD`].
async fn served_has_new_field(env: &TestEnv) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    let crd = crds.get(CRD).await.unwrap();
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"))
        .and_then(|s| s.properties.as_ref())
        .is_some_and(|p| p.contains_key(NEW_FIELD))
}

/// An LlmJob (the example `prompt.yaml`) that sets [`NEW_FIELD`], written to `dir`.
fn llmjob_with_new_field(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(common::example("prompt.yaml")).unwrap();
    let mut job: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    job["metadata"]["name"] = "uses-new-field".into();
    job["spec"][NEW_FIELD] = "set".into();
    let file = dir.join("uses-new-field.yaml");
    std::fs::write(&file, serde_norway::to_string(&job).unwrap()).unwrap();
    file
}

/// `kubectl apply --server-side --dry-run=server --validate=strict` of `file` in `ns`: `Ok` when
/// the API server accepts it, else its message.
async fn strict_dry_run(env: &TestEnv, ns: &str, file: &Path) -> Result<(), String> {
    let file = file.to_string_lossy();
    let out = env
        .kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            ns,
            "-f",
            &file,
        ])
        .await
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Before the upgrade the API server refuses the new field; after it, it accepts it (waiting for
/// the API server to switch to the new schema).
async fn assert_new_field_refused(env: &TestEnv, ns: &str, file: &Path) {
    let err = strict_dry_run(env, ns, file)
        .await
        .expect_err("the current CRD must refuse a field it does not declare");
    assert!(err.contains(NEW_FIELD), "{err}");
}

async fn wait_new_field_served(env: &TestEnv, ns: &str, file: &Path) {
    assert!(
        served_has_new_field(env).await,
        "the served CRD lacks spec.{NEW_FIELD}"
    );
    wait_until(
        "the API server to accept an LlmJob with the upgraded CRD's new field",
        || async { strict_dry_run(env, ns, file).await.ok() },
    )
    .await;
}

/// The categories the API server serves LlmJobs in: `llmjob`, and not `all` (so `kubectl
/// delete all --all` leaves LlmJobs and their results alone).
async fn assert_categories(env: &TestEnv) {
    let llmjob = kubectl(env, &["api-resources", "--categories=llmjob", "-o", "name"]).await;
    assert_eq!(llmjob.trim(), CRD);
    let all = kubectl(env, &["api-resources", "--categories=all", "-o", "name"]).await;
    assert!(!all.contains(CRD), "LlmJobs are in `all`:\n{all}");
}

async fn wait_established(env: &TestEnv) {
    kubectl(
        env,
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{CRD}"),
            &format!("--timeout={WAIT_FLAG}"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_upgrades_the_crd() {
    let env = env().await;
    let home = tempfile::tempdir().unwrap();
    let release_ns = env.create_namespace("llmjob-system").await.unwrap();
    let jobs_ns = env.create_namespace("llm-jobs").await.unwrap();
    let chart = deploy_tests::chart_dir().to_string_lossy().into_owned();
    helm(
        &env,
        home.path(),
        &["install", RELEASE, &chart, "--namespace", &release_ns],
    )
    .await;
    wait_established(&env).await;
    assert_categories(&env).await;
    assert!(!served_has_new_field(&env).await);
    // What the helm test pod runs, here as the admin: the CRD is served but no replica is ready.
    let operator = common::workspace_binary("llmjob-operator");
    let kubeconfig = env.kubeconfig_path().to_string_lossy().into_owned();
    let err = deploy_tests::run_program(
        &operator,
        &[
            "check",
            &format!("--namespace={release_ns}"),
            &format!("--deployment={RELEASE}"),
        ],
        &deploy_tests::root(),
        &[("KUBECONFIG", &kubeconfig)],
    )
    .expect_err("no operator replica is ready: the check must fail");
    assert!(err.to_string().contains("has no ready replica"), "{err}");
    // An LlmJob that must survive the upgrade.
    let example = common::example("prompt.yaml")
        .to_string_lossy()
        .into_owned();
    kubectl(
        &env,
        &["apply", "--server-side", "-n", &jobs_ns, "-f", &example],
    )
    .await;
    let probe = llmjob_with_new_field(home.path());
    assert_new_field_refused(&env, &jobs_ns, &probe).await;

    // The next chart version: this chart with the changed CRD.
    let next = home.path().join("next-chart");
    copy_dir(&deploy_tests::chart_dir(), &next);
    std::fs::write(
        next.join("files")
            .join("crds")
            .join("llmjobs.llmjob.dev.yaml"),
        next_crd(),
    )
    .unwrap();
    // docs/install.md: `helm upgrade llmjob-operator charts/llmjob-operator -n llmjob-system
    // --reuse-values`.
    helm(
        &env,
        home.path(),
        &[
            "upgrade",
            RELEASE,
            &next.to_string_lossy(),
            "-n",
            &release_ns,
            "--reuse-values",
        ],
    )
    .await;
    wait_new_field_served(&env, &jobs_ns, &probe).await;
    kubectl(&env, &["get", "-n", &jobs_ns, "llmjob/haiku"]).await;
    env.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_server_side_apply_installs_and_upgrades_the_crd() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs_ns = env.create_namespace("llm-jobs").await.unwrap();
    // docs/install.md: `kubectl apply --server-side -f crds/llmjobs.llmjob.dev.yaml`.
    let current = deploy_tests::crd_file().to_string_lossy().into_owned();
    kubectl(&env, &["apply", "--server-side", "-f", &current]).await;
    wait_established(&env).await;
    assert_categories(&env).await;
    let probe = llmjob_with_new_field(dir.path());
    assert_new_field_refused(&env, &jobs_ns, &probe).await;

    let next = dir.path().join("llmjobs.llmjob.dev.yaml");
    std::fs::write(&next, next_crd()).unwrap();
    kubectl(
        &env,
        &["apply", "--server-side", "-f", &next.to_string_lossy()],
    )
    .await;
    wait_new_field_served(&env, &jobs_ns, &probe).await;
    env.shutdown().await.unwrap();
}
