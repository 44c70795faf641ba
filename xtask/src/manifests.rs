//! `cargo xtask manifests [--check]`: writes (or checks) the deployment files derived from other
//! committed sources, so each has exactly one source of truth:
//!
//! | generated file | source |
//! |---|---|
//! | `charts/llmjob-operator/crds/llmjobs.llmjob.dev.yaml` | `crds/llmjobs.llmjob.dev.yaml` (itself from `crdgen`), copied byte for byte |
//! | `manifests/gitops/argocd/argocd-cm-health-llmjob.yaml` | `manifests/gitops/argocd/health-llmjob.lua`, embedded in an `argocd-cm` snippet |
//! | `manifests/install.yaml` | `helm template` of the chart with default values, plus the Namespace |
//!
//! This module is also compiled into the `deploy-tests` crate (`#[path]`), whose test fails when a
//! committed file is stale; keep it free of anything but `anyhow` and `testenv`. It never touches
//! files outside the three above.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

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
    write_or_check(&root.join(ARGOCD_CM), argocd_cm(&lua).as_bytes(), check)?;

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

/// The `argocd-cm` ConfigMap snippet that installs `lua` as LlmJob's health check.
pub fn argocd_cm(lua: &str) -> String {
    let mut out = String::from(
        "# Generated from health-llmjob.lua by `cargo xtask manifests`; do not edit by hand.\n\
         # Merge into Argo CD's argocd-cm ConfigMap (e.g. `kubectl -n argocd patch configmap argocd-cm\n\
         # --patch-file argocd-cm-health-llmjob.yaml`), or copy the data key into your Argo CD\n\
         # Helm values under configs.cm.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  \
           name: argocd-cm\n  \
           namespace: argocd\n  \
           labels:\n    \
             app.kubernetes.io/name: argocd-cm\n    \
             app.kubernetes.io/part-of: argocd\n\
         data:\n  \
           resource.customizations.health.llmjob.dev_LlmJob: |\n",
    );
    for line in lua.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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
    let mut text = format!(
        "# llmjob-operator install manifest: the Helm chart {CHART_DIR} rendered with its default\n\
         # values into namespace {NAMESPACE}. Generated by `{COMMAND}`; do not edit by hand.\n\
         # Install: kubectl apply --server-side -f manifests/install.yaml\n\
         #      or: kubectl apply --server-side -k manifests/\n\
         ---\n\
         apiVersion: v1\n\
         kind: Namespace\n\
         metadata:\n  \
           name: {NAMESPACE}\n  \
           labels:\n    \
             app.kubernetes.io/part-of: llmjob-operator\n    \
             # The operator's pod meets the restricted Pod Security Standard.\n    \
             pod-security.kubernetes.io/enforce: restricted\n"
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
