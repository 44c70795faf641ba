//! The GitOps examples under `manifests/gitops/`: they parse, point at paths that exist in this
//! repository, reference each other consistently, and the `argocd-cm` snippet carries exactly the
//! tested health script under the key Argo CD looks up for `llmjob.dev/LlmJob`. (Argo CD and Flux
//! CRDs are not installed in the test API server, so these objects are checked structurally.)

use deploy_tests::{manifests_dir, root, yaml_docs};
use serde_norway::Value;

fn load(rel: &str) -> Value {
    let path = manifests_dir().join("gitops").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = yaml_docs(&text, rel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 1, "{rel}: one object per file");
    docs.remove(0)
}

fn assert_repo_path(path: &str, what: &str) {
    let p = root().join(path.trim_start_matches("./"));
    assert!(
        p.is_dir(),
        "{what}: path {path} does not exist in the repository"
    );
}

#[test]
fn argocd_applications_point_at_the_chart_and_the_examples() {
    let app = load("argocd/application.yaml");
    assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(app["kind"], "Application");
    let path = app["spec"]["source"]["path"].as_str().unwrap();
    assert_eq!(path, "charts/llmjob-operator");
    assert_repo_path(path, "application.yaml");
    let sync: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(sync.contains(&"ServerSideApply=true"), "{sync:?}");
    // The Helm values it sets must be values the chart knows (the schema forbids others).
    let values = app["spec"]["source"]["helm"]["valuesObject"].clone();
    let chart_values: Value = serde_norway::from_str(
        &std::fs::read_to_string(deploy_tests::chart_dir().join("values.yaml")).unwrap(),
    )
    .unwrap();
    for (k, _) in values.as_mapping().unwrap() {
        assert!(chart_values.get(k).is_some(), "unknown chart value {k:?}");
    }

    let jobs = load("argocd/application-llmjobs.yaml");
    assert_repo_path(
        jobs["spec"]["source"]["path"].as_str().unwrap(),
        "application-llmjobs.yaml",
    );
}

#[test]
fn argocd_cm_snippet_carries_the_health_script() {
    let cm = load("argocd/argocd-cm-health-llmjob.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let script = cm["data"]["resource.customizations.health.llmjob.dev_LlmJob"]
        .as_str()
        .expect("the health key Argo CD looks up for group llmjob.dev, kind LlmJob");
    let lua =
        std::fs::read_to_string(manifests_dir().join("gitops/argocd/health-llmjob.lua")).unwrap();
    assert_eq!(
        script.trim_end(),
        lua.trim_end(),
        "the snippet differs from health-llmjob.lua: run `cargo xtask manifests`"
    );
}

#[test]
fn flux_objects_reference_the_source_and_existing_paths() {
    let repo = load("flux/gitrepository.yaml");
    assert_eq!(repo["apiVersion"], "source.toolkit.fluxcd.io/v1");
    assert_eq!(repo["kind"], "GitRepository");
    let source_name = repo["metadata"]["name"].as_str().unwrap();
    let mut names = Vec::new();
    for file in [
        "flux/kustomization-operator.yaml",
        "flux/kustomization-llmjobs.yaml",
    ] {
        let ks = load(file);
        assert_eq!(ks["apiVersion"], "kustomize.toolkit.fluxcd.io/v1", "{file}");
        assert_eq!(ks["kind"], "Kustomization", "{file}");
        assert_eq!(ks["spec"]["sourceRef"]["kind"], "GitRepository", "{file}");
        assert_eq!(ks["spec"]["sourceRef"]["name"], source_name, "{file}");
        assert_eq!(
            ks["spec"]["wait"], true,
            "{file}: health checks need wait: true"
        );
        assert_repo_path(ks["spec"]["path"].as_str().unwrap(), file);
        names.push(ks["metadata"]["name"].as_str().unwrap().to_owned());
    }
    let jobs = load("flux/kustomization-llmjobs.yaml");
    assert_eq!(jobs["spec"]["dependsOn"][0]["name"], names[0].as_str());
    // The operator Kustomization builds manifests/, which must hold a kustomization.yaml.
    assert!(manifests_dir().join("kustomization.yaml").is_file());
}
