//! Helpers for the deployment tests in `tests/`: where the chart and manifests live, how to run
//! the real `helm`, `kubectl`, validator and `lua` from `tools/ensure-tools.sh`, and how to read
//! multi-document YAML. The tests themselves live in `tests/*.rs`; this crate has no other use.
//!
//! Tools are found only through [`testenv::tools::bin`]; a missing tool is an error naming
//! `tools/ensure-tools.sh`, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An external command failed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The tool is not installed.
    #[error(transparent)]
    MissingTool(#[from] testenv::tools::MissingTool),
    /// The process could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The process exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
        /// What it printed on stdout.
        stdout: String,
    },
    /// The output was not UTF-8.
    #[error("`{command}` printed non-UTF-8 output")]
    NotUtf8 {
        /// The command line.
        command: String,
    },
}

/// A YAML document could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid YAML in {what}: {source}")]
pub struct YamlError {
    /// Which text was parsed.
    pub what: String,
    /// Why.
    pub source: serde_norway::Error,
}

/// The workspace root.
pub fn root() -> PathBuf {
    testenv::tools::workspace_root()
}

/// The chart directory, `charts/llmjob-operator`.
pub fn chart_dir() -> PathBuf {
    root().join("charts").join("llmjob-operator")
}

/// The generated CRD, `crds/llmjobs.llmjob.dev.yaml`: what `kubectl apply --server-side -f`
/// installs or upgrades when the CRD is managed apart from the chart (docs/install.md).
pub fn crd_file() -> PathBuf {
    root().join("crds").join("llmjobs.llmjob.dev.yaml")
}

/// The `manifests/` directory.
pub fn manifests_dir() -> PathBuf {
    root().join("manifests")
}

/// Kubernetes version the chart is validated against (the project's pinned control plane).
pub const KUBE_VERSION: &str = "1.36.2";

/// Runs a tool from the tools cache (`helm`, `kubectl`, `lua`, ...) in `cwd`, with extra
/// environment variables, and returns its output when it exits successfully.
pub fn run_tool(
    tool: &str,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Result<Output, CmdError> {
    let program = testenv::tools::bin(tool)?;
    run_program(&program, args, cwd, env)
}

/// Runs `program` (a path) like [`run_tool`].
pub fn run_program(
    program: &Path,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Result<Output, CmdError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .map_err(|source| CmdError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(CmdError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        });
    }
    Ok(out)
}

/// Stdout of a successful command as text.
pub fn stdout_text(out: Output, command: &str) -> Result<String, CmdError> {
    String::from_utf8(out.stdout).map_err(|_| CmdError::NotUtf8 {
        command: command.to_owned(),
    })
}

/// `helm template llmjob-operator charts/llmjob-operator --namespace <ns> --kube-version 1.36.2
/// --skip-tests <extra>`: the manifests an install applies (without the `helm test` hooks), or the
/// error (which carries helm's message).
pub fn helm_template(namespace: &str, extra: &[&str]) -> Result<String, CmdError> {
    let mut args = vec!["--kube-version", KUBE_VERSION, "--skip-tests"];
    args.extend_from_slice(extra);
    helm_template_raw(namespace, &args)
}

/// `helm template llmjob-operator charts/llmjob-operator --namespace <ns> <args>`, with nothing
/// added: no `--kube-version` (helm's built-in default applies), `helm test` hooks included.
pub fn helm_template_raw(namespace: &str, args: &[&str]) -> Result<String, CmdError> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut all = vec![
        "template",
        "llmjob-operator",
        chart.as_ref(),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    let out = run_tool("helm", &all, &root(), &[])?;
    stdout_text(out, "helm template")
}

/// The non-null documents of a multi-document YAML text.
pub fn yaml_docs(text: &str, what: &str) -> Result<Vec<serde_norway::Value>, YamlError> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc).map_err(|source| YamlError {
            what: what.to_owned(),
            source,
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `kind/name` (with `namespace/` when namespaced) of a Kubernetes object, for messages.
pub fn object_id(obj: &serde_norway::Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("?");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The objects of `docs` with the given kind.
pub fn of_kind<'a>(docs: &'a [serde_norway::Value], kind: &str) -> Vec<&'a serde_norway::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// What the offline validator said about a set of manifests.
#[derive(Debug)]
pub struct Validation {
    /// Its warnings (e.g. "Couldn't find schema for kind ServiceMonitor").
    pub warnings: Vec<String>,
}

/// Validates `yaml` (multi-document) strictly (unknown fields rejected) against the Kubernetes
/// [`KUBE_VERSION`] schemas with `kubernetes-validate` from the tools cache. Objects of kinds it
/// has no schema for (custom resources) only produce warnings, returned for the caller to judge.
pub fn validate_kubernetes(yaml: &str, what: &str) -> Result<Validation, CmdError> {
    let dir = tempfile::tempdir().map_err(|source| CmdError::Spawn {
        command: "tempdir".to_owned(),
        source,
    })?;
    let file = dir
        .path()
        .join(format!("{}.yaml", what.replace(['/', ' '], "_")));
    std::fs::write(&file, yaml).map_err(|source| CmdError::Spawn {
        command: format!("write {}", file.display()),
        source,
    })?;
    let file = file.to_string_lossy().into_owned();
    let out = run_tool(
        "kubernetes-validate",
        &["-k", "1.36.0", "--strict", "--quiet", &file],
        &root(),
        &[],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Validation {
        warnings: text
            .lines()
            .filter(|l| l.starts_with("WARN"))
            .map(str::to_owned)
            .collect(),
    })
}
