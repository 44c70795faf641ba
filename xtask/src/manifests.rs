//! `cargo xtask manifests [--check]`: writes (or checks) the deployment files derived from other
//! committed sources, so each has exactly one source of truth:
//!
//! | generated file | source |
//! |---|---|
//! | `charts/llmjob-operator/crds/llmjobs.llmjob.dev.yaml` | `crds/llmjobs.llmjob.dev.yaml` (itself from `crdgen`), copied byte for byte |
//! | `manifests/gitops/argocd/argocd-cm-health-llmjob.yaml` | `manifests/gitops/argocd/health-llmjob.lua`, embedded in an `argocd-cm` snippet |
//! | `manifests/install.yaml` | `helm template` of the chart with default values, plus the Namespace |
//!
//! The objects written here (the `argocd-cm` snippet, the Namespace) are `k8s-openapi` types
//! serialised with `serde_norway`; only the comment headers are text.
//!
//! This module is also compiled into the `deploy-tests` crate (`#[path]`), whose test fails when a
//! committed file is stale; keep it free of anything but `anyhow`, `k8s-openapi`, `serde_norway`
//! and `testenv`. It never touches files outside the three above.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The command that regenerates these files, named in every staleness error.
pub const COMMAND: &str = "cargo xtask manifests";

/// The generated CRD, relative to the workspace root.
pub const CRD_SOURCE: &str = "crds/llmjobs.llmjob.dev.yaml";
/// The chart's copy of the CRD, relative to the workspace root.
pub const CHART_CRD: &str = "charts/llmjob-operator/crds/llmjobs.llmjob.dev.yaml";
/// The chart, relative to the workspace root.
pub const CHART_DIR: &str = "charts/llmjob-operator";
/// The rendered install manifest, relative to the workspace root.
pub const INSTALL_YAML: &str = "manifests/install.yaml";
/// The Argo CD health script, relative to the workspace root.
pub const HEALTH_LUA: &str = "manifests/gitops/argocd/health-llmjob.lua";
/// The `argocd-cm` snippet embedding [`HEALTH_LUA`], relative to the workspace root.
pub const ARGOCD_CM: &str = "manifests/gitops/argocd/argocd-cm-health-llmjob.yaml";

/// Release name and namespace of `manifests/install.yaml`.
pub const RELEASE: &str = "llmjob-operator";
/// Namespace of `manifests/install.yaml`.
pub const NAMESPACE: &str = "llmjob-system";
/// Kubernetes version the chart is rendered for (the project's pinned control plane).
pub const KUBE_VERSION: &str = "1.36.2";

/// Writes every generated deployment file, or with `check` fails (naming [`COMMAND`]) when a
/// committed one differs from what would be generated.
pub fn run(check: bool) -> Result<()> {
    let root = testenv::tools::workspace_root();
    let lua = std::fs::read_to_string(root.join(HEALTH_LUA))
        .with_context(|| format!("reading {HEALTH_LUA}"))?;
    write_or_check(&root.join(ARGOCD_CM), argocd_cm(&lua)?.as_bytes(), check)?;

    let crd = std::fs::read(root.join(CRD_SOURCE)).with_context(|| {
        format!("reading {CRD_SOURCE} (generate it first: `cargo xtask generate`)")
    })?;
    write_or_check(&root.join(CHART_CRD), &crd, check)?;

    // Rendered after the CRD copy, so the manifest embeds the current CRD in write mode; in check
    // mode a stale chart CRD has already failed above.
    let install = render_install(&root)?;
    write_or_check(&root.join(INSTALL_YAML), install.as_bytes(), check)?;
    Ok(())
}

/// The key of `argocd-cm` under which Argo CD looks for LlmJob's health check.
pub const HEALTH_KEY: &str = "resource.customizations.health.llmjob.dev_LlmJob";

/// String pairs as a label or data map.
fn string_map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The `argocd-cm` ConfigMap snippet that installs `lua` as LlmJob's health check.
pub fn argocd_cm(lua: &str) -> Result<String> {
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("argocd-cm".to_owned()),
            namespace: Some("argocd".to_owned()),
            labels: Some(string_map([
                ("app.kubernetes.io/name", "argocd-cm"),
                ("app.kubernetes.io/part-of", "argocd"),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(string_map([(HEALTH_KEY, lua)])),
        ..ConfigMap::default()
    };
    let yaml = serde_norway::to_string(&config_map).context("serialising the argocd-cm snippet")?;
    Ok(format!(
        "# Generated from health-llmjob.lua by `{COMMAND}`; do not edit by hand.\n\
         # Merge into Argo CD's argocd-cm ConfigMap (e.g. `kubectl -n argocd patch configmap argocd-cm\n\
         # --patch-file argocd-cm-health-llmjob.yaml`), or copy the data key into your Argo CD\n\
         # Helm values under configs.cm.\n\
         {yaml}"
    ))
}

/// The namespace `manifests/install.yaml` installs into. Its pods (the operator's) meet the
/// restricted Pod Security Standard, which the label enforces.
fn namespace() -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.to_owned()),
            labels: Some(string_map([
                ("app.kubernetes.io/part-of", "llmjob-operator"),
                ("pod-security.kubernetes.io/enforce", "restricted"),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// `manifests/install.yaml`: a header, the Namespace, then the chart rendered with default values.
pub fn render_install(root: &Path) -> Result<String> {
    let helm = testenv::tools::bin("helm")?;
    let out = Command::new(&helm)
        .args(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE])
        .args(["--include-crds", "--kube-version", KUBE_VERSION])
        .current_dir(root)
        .output()
        .with_context(|| format!("could not start {}", helm.display()))?;
    if !out.status.success() {
        bail!(
            "`helm template` of {CHART_DIR} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rendered = String::from_utf8(out.stdout).context("helm printed non-UTF-8 output")?;
    let namespace = serde_norway::to_string(&namespace()).context("serialising the Namespace")?;
    let mut text = format!(
        "# llmjob-operator install manifest: the Helm chart {CHART_DIR} rendered with its default\n\
         # values into namespace {NAMESPACE}, which enforces the restricted Pod Security Standard\n\
         # (the operator's pod meets it). Generated by `{COMMAND}`; do not edit by hand.\n\
         # Install: kubectl apply --server-side -f manifests/install.yaml\n\
         #      or: kubectl apply --server-side -k manifests/\n\
         ---\n\
         {namespace}"
    );
    if !rendered.starts_with("---") {
        text.push_str("---\n");
    }
    text.push_str(&rendered);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Writes `content` to `path`, or with `check` fails when the committed file differs.
fn write_or_check(path: &Path, content: &[u8], check: bool) -> Result<()> {
    let current = std::fs::read(path).ok();
    if current.as_deref() == Some(content) {
        return Ok(());
    }
    if check {
        bail!(
            "{} is out of date: run `{COMMAND}` and commit the result",
            path.display()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
