//! `manifests/kustomization.yaml` builds, with the kustomize embedded in the tools' `kubectl`, to
//! exactly the objects of `manifests/install.yaml`, every namespaced one in `llmjob-system`; and
//! `install.yaml` itself holds the Namespace, the CRD and the chart's default objects.

use std::collections::BTreeSet;

use deploy_tests::{manifests_dir, object_id, root, run_tool, yaml_docs};

const NS: &str = "llmjob-system";

fn ids(docs: &[serde_norway::Value]) -> BTreeSet<String> {
    docs.iter().map(object_id).collect()
}

#[test]
fn kustomize_build_equals_install_yaml() {
    let dir = manifests_dir().to_string_lossy().into_owned();
    let out =
        run_tool("kubectl", &["kustomize", &dir], &root(), &[]).unwrap_or_else(|e| panic!("{e}"));
    let built = yaml_docs(&String::from_utf8_lossy(&out.stdout), "kubectl kustomize").unwrap();
    let install = std::fs::read_to_string(manifests_dir().join("install.yaml")).unwrap();
    let install = yaml_docs(&install, "install.yaml").unwrap();
    assert_eq!(ids(&built), ids(&install));
    for obj in &built {
        let kind = obj["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        if cluster_scoped {
            assert!(
                obj["metadata"].get("namespace").is_none(),
                "{} is cluster-scoped",
                object_id(obj)
            );
        } else {
            assert_eq!(obj["metadata"]["namespace"], NS, "{}", object_id(obj));
        }
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "llmjob-operator",
            "{}",
            object_id(obj)
        );
    }
}

#[test]
fn install_yaml_holds_namespace_crd_and_operator() {
    let install = std::fs::read_to_string(manifests_dir().join("install.yaml")).unwrap();
    let docs = yaml_docs(&install, "install.yaml").unwrap();
    assert_eq!(docs[0]["kind"], "Namespace", "the Namespace comes first");
    assert_eq!(docs[0]["metadata"]["name"], NS);
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(kind), "install.yaml lacks a {kind}");
    }
    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(crd["metadata"]["name"], "llmjobs.llmjob.dev");
}
