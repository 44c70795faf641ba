//! The container images that `cargo xtask images` builds: where their OCI archives are, under
//! which references, and what is inside them. The one place tests and the node look them up; it
//! never builds anything (that is `cargo xtask images`, which `cargo xtask test` and `cargo xtask
//! demo` run) and fails loudly, naming that command, when an archive is missing.
//!
//! Each image is an OCI image-layout archive (`<name>.oci.tar`, importable with
//! `ctr -n k8s.io images import`), whose `index.json` names the image by its full reference in
//! the `org.opencontainers.image.ref.name` annotation, e.g.
//! `ghcr.io/llmjob-dev/llmjob-operator:0.1.0`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

/// Environment variable naming the directory that holds the archives (overrides
/// `<cargo target dir>/images`).
pub const IMAGES_DIR_ENV: &str = "LLMJOB_IMAGES_DIR";

/// The version of this workspace, the tag of the operator and runner images (the chart's
/// `appVersion`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One image `cargo xtask images` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Short name: the archive is `<name>.oci.tar`.
    pub name: &'static str,
    /// Repository, without the tag (the chart's `image.repository`).
    pub repository: &'static str,
    /// Tag.
    pub tag: &'static str,
}

impl Image {
    /// The full reference, `repository:tag`, as the chart and `manifests/` name it.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The archive's file name.
    pub fn file_name(&self) -> String {
        format!("{}.oci.tar", self.name)
    }
}

/// The operator: `/usr/local/bin/llmjob-operator` on the minimal Debian base.
pub const OPERATOR: Image = Image {
    name: "llmjob-operator",
    repository: "ghcr.io/llmjob-dev/llmjob-operator",
    tag: VERSION,
};
/// The job-runner: `/usr/local/bin/llmjob-runner` on the minimal Debian base.
pub const RUNNER: Image = Image {
    name: "llmjob-runner",
    repository: "ghcr.io/llmjob-dev/llmjob-runner",
    tag: VERSION,
};
/// The pod sandbox image, built from Kubernetes' `build/pause/linux/pause.c` (the tag is that
/// source's `TAG` in `build/pause/Makefile` of the Kubernetes version in `tools/kube/go.mod`).
pub const PAUSE: Image = Image {
    name: "pause",
    repository: "registry.k8s.io/pause",
    tag: "3.10.2",
};
/// Every image the chart, `manifests/` and the demo use, in build order.
pub const ALL: [Image; 3] = [PAUSE, OPERATOR, RUNNER];
/// A test-only image: Debian's static busybox (`/bin/busybox` and a few applets), user 65532,
/// entrypoint `/bin/sh`; the probe pods of `testenv/tests/node_smoke.rs` run shell scripts in it.
/// `cargo xtask images` builds it with the others (not `cargo xtask demo`).
pub const PROBE: Image = Image {
    name: "probe",
    repository: "testenv.local/busybox",
    tag: "probe",
};
/// Every image `cargo xtask images` builds: [`ALL`] and [`PROBE`].
pub const BUILT: [Image; 4] = [PAUSE, OPERATOR, RUNNER, PROBE];

/// The image user of the operator and runner images (distroless `nonroot`).
pub const NONROOT_UID: u32 = 65532;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No archive where it should be.
    #[error(
        "image archive {path} not found: run `cargo xtask images` (`cargo xtask test` and `cargo xtask demo` do), or set {IMAGES_DIR_ENV}"
    )]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The archive could not be read.
    #[error("reading image archive {path}: {source}")]
    Io {
        /// The archive.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The archive is not the OCI layout this module expects.
    #[error("image archive {path} is not a single-image OCI layout: {reason}")]
    Layout {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The directory that holds the archives: `$LLMJOB_IMAGES_DIR`, else `<cargo target dir>/images`.
pub fn dir() -> PathBuf {
    match std::env::var_os(IMAGES_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => crate::tools::target_dir().join("images"),
    }
}

/// The path of an image's archive, or an error that names `cargo xtask images`.
pub fn archive(image: &Image) -> Result<PathBuf, ImageError> {
    let path = dir().join(image.file_name());
    if path.is_file() {
        Ok(path)
    } else {
        Err(ImageError::Missing { path })
    }
}

/// One entry of an image's file system (the union of its layers, later layers winning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The tar entry type.
    pub kind: tar::EntryType,
    /// Permission bits (including setuid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Target of a symbolic or hard link.
    pub link: Option<PathBuf>,
}

/// An image archive read into memory: its index entry, manifest, configuration and file list.
#[derive(Debug, Clone)]
pub struct ImageArchive {
    /// The archive's path.
    pub path: PathBuf,
    /// The reference in `index.json` (`org.opencontainers.image.ref.name`).
    pub reference: String,
    /// Digest of the manifest (`sha256:...`).
    pub manifest_digest: String,
    /// Digest of the configuration: what containerd and the kubelet report as the image id.
    pub config_digest: String,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The configuration (user, entrypoint, environment, ...).
    pub config: ImageConfiguration,
    /// Every path of the root file system (without a leading `/` or `./`).
    pub files: BTreeMap<PathBuf, FileEntry>,
}

impl ImageArchive {
    /// Reads the archive of `image` from [`dir`].
    pub fn open(image: &Image) -> Result<Self, ImageError> {
        Self::read(&archive(image)?)
    }

    /// Reads an OCI image-layout archive holding one image.
    pub fn read(path: &Path) -> Result<Self, ImageError> {
        let io = |source| ImageError::Io {
            path: path.to_owned(),
            source,
        };
        let layout = |reason: String| ImageError::Layout {
            path: path.to_owned(),
            reason,
        };
        // The blobs are small enough (tens of MB) to hold in memory.
        let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let file = std::fs::File::open(path).map_err(io)?;
        let mut tar = tar::Archive::new(file);
        for entry in tar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = lexical(&entry.path().map_err(io)?);
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(io)?;
            blobs.insert(name.to_string_lossy().into_owned(), data);
        }
        let blob = |digest: &str| -> Result<&Vec<u8>, ImageError> {
            let path = format!("blobs/{}", digest.replacen(':', "/", 1));
            blobs
                .get(&path)
                .ok_or_else(|| layout(format!("no blob {path}")))
        };
        let index: ImageIndex = serde_json::from_slice(
            blobs
                .get("index.json")
                .ok_or_else(|| layout("no index.json".into()))?,
        )
        .map_err(|e| layout(format!("index.json: {e}")))?;
        let [descriptor] = index.manifests().as_slice() else {
            return Err(layout(format!(
                "index.json lists {} manifests, not 1",
                index.manifests().len()
            )));
        };
        let reference = descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .cloned()
            .ok_or_else(|| layout("the manifest has no ref.name annotation".into()))?;
        let manifest_digest = descriptor.digest().to_string();
        let manifest: ImageManifest = serde_json::from_slice(blob(&manifest_digest)?)
            .map_err(|e| layout(format!("manifest: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration = serde_json::from_slice(blob(&config_digest)?)
            .map_err(|e| layout(format!("config: {e}")))?;
        let mut files = BTreeMap::new();
        for layer in manifest.layers() {
            let data = blob(layer.digest().as_ref())?;
            let reader: Box<dyn Read> = if layer.media_type().to_string().ends_with("+gzip") {
                Box::new(flate2::read::GzDecoder::new(data.as_slice()))
            } else {
                Box::new(data.as_slice())
            };
            let mut tar = tar::Archive::new(reader);
            for entry in tar.entries().map_err(io)? {
                let entry = entry.map_err(io)?;
                let h = entry.header();
                let name = lexical(&entry.path().map_err(io)?);
                if name.as_os_str().is_empty() {
                    continue;
                }
                files.insert(
                    name,
                    FileEntry {
                        kind: h.entry_type(),
                        mode: h.mode().map_err(io)?,
                        uid: h.uid().map_err(io)?,
                        gid: h.gid().map_err(io)?,
                        size: h.size().map_err(io)?,
                        link: entry.link_name().map_err(io)?.map(|l| l.into_owned()),
                    },
                );
            }
        }
        Ok(Self {
            path: path.to_owned(),
            reference,
            manifest_digest,
            config_digest,
            manifest,
            config,
            files,
        })
    }

    /// Resolves `path` in the image's file system, following symbolic links in every component
    /// (at most 32 of them), and returns the entry it ends at.
    pub fn resolve(&self, path: &str) -> Option<(&Path, &FileEntry)> {
        let mut current = lexical(Path::new(path));
        'links: for _ in 0..32 {
            let components: Vec<_> = current.components().collect();
            let mut prefix = PathBuf::new();
            for (i, component) in components.iter().enumerate() {
                prefix.push(component);
                let Some(entry) = self.files.get(&prefix) else {
                    continue;
                };
                if entry.kind == tar::EntryType::Symlink {
                    let target = entry.link.as_ref()?;
                    let mut next = if target.is_absolute() {
                        target.clone()
                    } else {
                        prefix.parent().unwrap_or(Path::new("")).join(target)
                    };
                    next.extend(&components[i + 1..]);
                    current = lexical(&next);
                    continue 'links;
                }
            }
            return self
                .files
                .get_key_value(&current)
                .map(|(k, e)| (k.as_path(), e));
        }
        None
    }
}

/// Removes `.`, `..` and the root lexically (paths inside an image never escape its root).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_the_charts() {
        assert_eq!(
            OPERATOR.reference(),
            format!("ghcr.io/llmjob-dev/llmjob-operator:{VERSION}")
        );
        assert_eq!(RUNNER.file_name(), "llmjob-runner.oci.tar");
        assert_eq!(PAUSE.reference(), "registry.k8s.io/pause:3.10.2");
    }

    #[test]
    fn a_missing_archive_names_the_command() {
        let err = ImageArchive::read(Path::new("/nonexistent/x.oci.tar"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/x.oci.tar"), "{err}");
        let missing = ImageError::Missing {
            path: PathBuf::from("/x"),
        }
        .to_string();
        assert!(missing.contains("cargo xtask images"), "{missing}");
    }

    #[test]
    fn lexical_paths() {
        assert_eq!(lexical(Path::new("./a/b/../c")), PathBuf::from("a/c"));
        assert_eq!(lexical(Path::new("/lib64/x")), PathBuf::from("lib64/x"));
    }
}
