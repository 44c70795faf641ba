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
    if let Some(cache) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(cache).join("bin");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("llmjob-operator").join("bin")
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
