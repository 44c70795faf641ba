//! What a user applies from `manifests/` besides the operator itself, checked as far as the tools
//! here can check it:
//!
//! * every YAML file under `manifests/` validates offline (`kubernetes-validate --strict`), and the
//!   only objects without a schema are the custom resources listed in [`NO_SCHEMA`], each with where
//!   it is checked instead;
//! * what the Flux `llmjobs-examples` Kustomization and the Argo CD `llmjobs-examples`
//!   Application would apply from `manifests/examples/` (the Secret and the LlmJobs, in their
//!   target namespace) passes a server-side dry run on a real API server with the CRD installed;
//! * the `argocd-cm` snippet merges into an existing `argocd-cm` with the documented
//!   `kubectl patch --patch-file` command.
//!
//! Each LlmJob example alone is dry-run in `operator/tests/admission.rs`
//! (`the_examples_are_accepted`); this file does not repeat that. The Argo CD and Flux objects
//! themselves cannot be dry-run: their CRDs are not installed here (no package registry the project
//! uses ships them), so `tests/gitops.rs` checks them structurally.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{WAIT_FLAG, kubectl};
use deploy_tests::{manifests_dir, root, validate_kubernetes, yaml_docs};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::PostParams;
use serde_norway::Value;
use testenv::env::TestEnv;

/// (kind, apiVersion) of the objects under `manifests/` that have no Kubernetes schema, and where
/// each is checked instead.
const NO_SCHEMA: &[(&str, &str, &str)] = &[
    (
        "LlmJob",
        "llmjob.dev/v1alpha1",
        "server-side dry run against the CRD (operator/tests/admission.rs, and below)",
    ),
    (
        "Application",
        "argoproj.io/v1alpha1",
        "Argo CD CRD, not installed: tests/gitops.rs",
    ),
    (
        "GitRepository",
        "source.toolkit.fluxcd.io/v1",
        "Flux CRD, not installed: tests/gitops.rs",
    ),
    (
        "Kustomization",
        "kustomize.toolkit.fluxcd.io/v1",
        "Flux CRD, not installed: tests/gitops.rs",
    ),
    (
        "Kustomization",
        "kustomize.config.k8s.io/v1beta1",
        "kustomize's own file: built by tests/kustomize.rs",
    ),
];

/// Directories under `manifests/` that hold no Kubernetes objects: the reference collector
/// pipelines are collector configs (validated by the collector itself in
/// `testenv/tests/backends_config.rs`).
const NOT_OBJECTS: &[&str] = &["observability"];

/// Every `*.yaml` under `dir` (but not under [`NOT_OBJECTS`]), sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| NOT_OBJECTS.iter().any(|skip| n == *skip))
        {
            continue;
        }
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn load_one(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs = yaml_docs(&text, &rel(path)).unwrap();
    assert_eq!(docs.len(), 1, "{}: one object per file", rel(path));
    docs.remove(0)
}

#[test]
fn every_manifest_validates_offline_and_only_custom_resources_lack_a_schema() {
    let files = yaml_files(&manifests_dir());
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = yaml_docs(&text, &rel(file)).unwrap();
        assert!(!docs.is_empty(), "{}: no object", rel(file));
        let validation =
            validate_kubernetes(&text, &rel(file)).unwrap_or_else(|e| panic!("{}: {e}", rel(file)));
        for warning in &validation.warnings {
            let known = NO_SCHEMA.iter().any(|(kind, api, _)| {
                warning.contains(&format!("kind {kind} with api version {api} "))
            });
            assert!(
                known,
                "{}: an object the validator cannot check, and no other test covers: {warning}",
                rel(file)
            );
        }
        let unchecked = docs
            .iter()
            .filter(|d| {
                NO_SCHEMA
                    .iter()
                    .any(|(kind, api, _)| d["kind"] == *kind && d["apiVersion"] == *api)
            })
            .count();
        assert_eq!(
            validation.warnings.len(),
            unchecked,
            "{}: each custom resource (and only those) lacks a schema: {:?}",
            rel(file),
            validation.warnings
        );
    }
}

/// Applies with `kubectl apply --server-side --dry-run=server` and returns kubectl's output.
async fn dry_run(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["apply", "--server-side", "--dry-run=server"];
    all.extend_from_slice(args);
    kubectl(env, &all).await
}

/// A control plane (no images, no collector) with the CRD installed as docs/install.md tells a user
/// who manages it apart from the chart.
async fn env_with_crd() -> TestEnv {
    let env = TestEnv::builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let crds = deploy_tests::crd_file();
    kubectl(
        &env,
        &["apply", "--server-side", "-f", &crds.to_string_lossy()],
    )
    .await;
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
    env
}

/// The Flux example, as Flux would run it after `kubectl apply -f manifests/gitops/flux/`: the
/// folder's Namespace objects exist, and the examples Kustomization applies every YAML file of its
/// `spec.path` (Flux generates a kustomization.yaml listing them) into `spec.targetNamespace`,
/// which Flux does not create.
async fn flux_examples_apply(env: &TestEnv, dir: &Path) {
    let flux = manifests_dir().join("gitops").join("flux");
    let ks = load_one(&flux.join("kustomization-llmjobs.yaml"));
    let target = ks["spec"]["targetNamespace"].as_str().unwrap();
    let namespaces: Vec<PathBuf> = yaml_files(&flux)
        .into_iter()
        .filter(|f| load_one(f)["kind"] == "Namespace")
        .collect();
    assert!(
        namespaces
            .iter()
            .any(|f| load_one(f)["metadata"]["name"] == target),
        "manifests/gitops/flux/: nothing creates the namespace {target} that \
         kustomization-llmjobs.yaml targets (Flux does not create spec.targetNamespace)"
    );
    for ns in &namespaces {
        kubectl(
            env,
            &["apply", "--server-side", "-f", &ns.to_string_lossy()],
        )
        .await;
    }

    let path = root().join(
        ks["spec"]["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("./"),
    );
    let overlay = dir.join("flux-llmjobs");
    std::fs::create_dir(&overlay).unwrap();
    // Files the GitRepository's ignore rules leave out never reach Flux (exact-path rules only,
    // which is what the example uses).
    let source = load_one(&flux.join("gitrepository.yaml"));
    let ignored: Vec<PathBuf> = source["spec"]["ignore"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/manifests/") && !l.ends_with('/'))
        .map(|l| root().join(l.trim_start_matches('/')))
        .collect();
    assert!(
        ignored.iter().any(|f| f.ends_with("examples/secret.yaml")),
        "the Flux GitRepository must not sync the placeholder API-key Secret"
    );
    let resources: Vec<String> = yaml_files(&path)
        .iter()
        .filter(|f| !ignored.contains(f))
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(f, overlay.join(&name)).unwrap();
            name
        })
        .collect();
    assert!(
        !resources.iter().any(|r| r == "secret.yaml"),
        "ignored files are left out: {resources:?}"
    );
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": target,
        "resources": resources,
    });
    std::fs::write(
        overlay.join("kustomization.yaml"),
        serde_norway::to_string(&kustomization).unwrap(),
    )
    .unwrap();
    let out = dry_run(env, &["-k", &overlay.to_string_lossy()]).await;
    for file in &resources {
        let obj = load_one(&path.join(file));
        let name = obj["metadata"]["name"].as_str().unwrap();
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("/{name} ")) && l.contains("server dry run")),
            "Flux examples: {file} ({name}) not applied:\n{out}"
        );
    }
}

/// The Argo CD example: `spec.source.directory.include` (a `{a,b}` list) of
/// `spec.source.path`, into `spec.destination.namespace`, created by Argo CD
/// (`CreateNamespace=true`).
async fn argocd_examples_apply(env: &TestEnv) {
    let app = load_one(
        &manifests_dir()
            .join("gitops")
            .join("argocd")
            .join("application-llmjobs.yaml"),
    );
    let path = root().join(app["spec"]["source"]["path"].as_str().unwrap());
    let include = app["spec"]["source"]["directory"]["include"]
        .as_str()
        .unwrap();
    let files: Vec<&str> = include
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .collect();
    assert!(
        files.iter().all(|f| !f.contains(['*', '?', '['])),
        "application-llmjobs.yaml: this test reads only a plain {{a,b}} include list: {include}"
    );
    let sync: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        sync.contains(&"CreateNamespace=true"),
        "application-llmjobs.yaml: the destination namespace must be created: {sync:?}"
    );
    let ns = app["spec"]["destination"]["namespace"].as_str().unwrap();
    let namespaces: Api<Namespace> = Api::all(env.client());
    if namespaces.get_opt(ns).await.unwrap().is_none() {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    for file in files {
        let file = path.join(file);
        assert!(
            file.is_file(),
            "application-llmjobs.yaml includes a missing {}",
            rel(&file)
        );
        let out = dry_run(env, &["-n", ns, "-f", &file.to_string_lossy()]).await;
        assert!(out.contains("server dry run"), "{}: {out}", rel(&file));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_flux_and_argocd_apply_from_the_examples_passes_a_server_side_dry_run() {
    let env = env_with_crd().await;
    let dir = tempfile::tempdir().unwrap();
    flux_examples_apply(&env, dir.path()).await;
    argocd_examples_apply(&env).await;
    env.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_argocd_cm_snippet_merges_into_an_existing_argocd_cm() {
    let env = TestEnv::builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let file = manifests_dir()
        .join("gitops")
        .join("argocd")
        .join("argocd-cm-health-llmjob.yaml");
    let snippet = load_one(&file);
    let ns = snippet["metadata"]["namespace"].as_str().unwrap();
    let name = snippet["metadata"]["name"].as_str().unwrap();
    // What an Argo CD install leaves: the namespace and an argocd-cm with settings of its own.
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let existing: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {"url": "https://argocd.example.com", "timeout.reconciliation": "180s"}
    }))
    .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client(), ns);
    configmaps
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();

    // The command docs/install.md and the snippet's header give.
    kubectl(
        &env,
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            name,
            "--patch-file",
            &file.to_string_lossy(),
        ],
    )
    .await;
    let merged = configmaps.get(name).await.unwrap().data.unwrap_or_default();
    let key = "resource.customizations.health.llmjob.dev_LlmJob";
    let lua =
        std::fs::read_to_string(manifests_dir().join("gitops/argocd/health-llmjob.lua")).unwrap();
    assert_eq!(
        merged.get(key).map(|s| s.trim_end()),
        Some(lua.trim_end()),
        "the health script after the patch"
    );
    assert_eq!(
        merged.get("url").map(String::as_str),
        Some("https://argocd.example.com"),
        "the patch must keep Argo CD's other settings: {merged:?}"
    );
    assert_eq!(merged.len(), 3, "{merged:?}");
    env.shutdown().await.unwrap();
}
