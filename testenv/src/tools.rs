//! Finds the tools built by `tools/ensure-tools.sh` (etcd, kube-apiserver, kubectl, the collector,
//! helm, ...). The one place that knows where they live; it never builds or downloads anything.

use std::path::PathBuf;

/// Environment variable naming the directory that holds the tools (overrides the cache).
pub const TOOLS_BIN_ENV: &str = "LLMJOB_TOOLS_BIN";
/// Environment variable naming the cache root that `tools/ensure-tools.sh` fills.
pub const CACHE_ENV: &str = "LLMJOB_CACHE";

/// A tool could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "required tool `{name}` not found at {path}: run `bash tools/ensure-tools.sh` (or set {TOOLS_BIN_ENV} to the directory that holds it)"
)]
pub struct MissingTool {
    /// The tool's file name.
    pub name: String,
    /// Where it was looked for.
    pub path: PathBuf,
}

/// The directory that holds the tools: `$LLMJOB_TOOLS_BIN`, else `$LLMJOB_CACHE/bin`, else
/// `$HOME/.cache/llmjob-operator/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_BIN_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    cache_dir().join("bin")
}

/// The cache root that `tools/ensure-tools.sh` fills: `$LLMJOB_CACHE`, else
/// `$HOME/.cache/llmjob-operator`.
pub fn cache_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(cache);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("llmjob-operator")
}

/// The path of tool `name`, or an error that tells the user how to build it.
pub fn bin(name: &str) -> Result<PathBuf, MissingTool> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingTool {
            name: name.to_owned(),
            path,
        })
    }
}

/// A binary of this workspace could not be found in the cargo target directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "workspace binary `{name}` not found at {path}: run `cargo build -p {package}` first (`cargo xtask test` does)"
)]
pub struct MissingBinary {
    /// The binary's name.
    pub name: String,
    /// The package that builds it.
    pub package: String,
    /// Where it was looked for.
    pub path: PathBuf,
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // This crate lives at <workspace>/testenv.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.join("target"))
        .unwrap_or_else(|| manifest.join("target"))
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The path of a binary built from this workspace (debug profile), e.g.
/// `cargo_bin("llmjob-runner", "llmjob-runner")`. Tests of one package use this to run binaries of
/// another package (`CARGO_BIN_EXE_*` only covers the package's own binaries).
pub fn cargo_bin(name: &str, package: &str) -> Result<PathBuf, MissingBinary> {
    let path = target_dir().join("debug").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingBinary {
            name: name.to_owned(),
            package: package.to_owned(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_script() {
        let err = bin("surely-not-a-tool-name")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("tools/ensure-tools.sh"), "{err}");
        assert!(err.contains("surely-not-a-tool-name"), "{err}");
    }
}
