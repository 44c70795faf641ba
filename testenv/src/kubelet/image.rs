//! Image references → what to execute on the host. Pure: no I/O except the `PATH` search, which
//! takes its file check as a parameter.
//!
//! An image is matched by its *name* (the reference without tag and digest), first exactly, then
//! in its familiar Docker Hub form (`docker.io/library/busybox:1.36` matches `busybox`).
//! [`KubeletConfig::images`](super::KubeletConfig) maps a name to a local binary;
//! [`KubeletConfig::host_images`](super::KubeletConfig) lists names whose command runs directly on
//! the host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What an image stands for on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageSource {
    /// The image is a local binary: it is the entrypoint.
    Binary(PathBuf),
    /// The container's command runs on the host, resolved through `PATH`.
    Host,
}

/// The image name: `reference` without `@digest` and without `:tag` (a colon before the last
/// `/` belongs to a registry port and stays).
pub(crate) fn image_name(reference: &str) -> &str {
    let without_digest = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let last_slash = without_digest.rfind('/');
    match without_digest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => &without_digest[..colon],
        _ => without_digest,
    }
}

/// The Docker Hub short form of an image name: `docker.io/library/busybox` → `busybox`,
/// `docker.io/org/app` → `org/app`; other names are returned unchanged.
pub(crate) fn familiar_name(name: &str) -> &str {
    for registry in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(registry) {
            return rest.strip_prefix("library/").unwrap_or(rest);
        }
    }
    name
}

/// Looks `reference` up: binaries first, then host images; `None` if neither knows it.
pub(crate) fn resolve_image(
    reference: &str,
    images: &HashMap<String, PathBuf>,
    host_images: &[String],
) -> Option<ImageSource> {
    let name = image_name(reference);
    let familiar = familiar_name(name);
    let matches = |candidate: &str| {
        let candidate = image_name(candidate);
        candidate == name || familiar_name(candidate) == familiar
    };
    if let Some(binary) = images.get(name) {
        return Some(ImageSource::Binary(binary.clone()));
    }
    if let Some((_, binary)) = images.iter().find(|(candidate, _)| matches(candidate)) {
        return Some(ImageSource::Binary(binary.clone()));
    }
    host_images
        .iter()
        .any(|candidate| matches(candidate))
        .then_some(ImageSource::Host)
}

/// The `waiting.message` for an image that is neither mapped nor a host image.
pub(crate) fn unknown_image_message(reference: &str) -> String {
    let name = image_name(reference);
    format!(
        "image \"{reference}\" is not available in the test environment: map \"{name}\" to a local binary \
         (KubeletConfig::images, TestEnv builder .image(\"{name}\", path)) or run its command on the host \
         (KubeletConfig::host_images, .host_image(\"{name}\"))"
    )
}

/// The program and arguments to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Argv {
    /// The executable's path.
    pub program: PathBuf,
    /// Its arguments (without argv\[0\]).
    pub args: Vec<String>,
}

/// Builds the argv of a container whose `command` and `args` are already expanded.
///
/// * [`ImageSource::Binary`]: the binary is the entrypoint and `args` are passed. `command` is
///   ignored (the image's entrypoint is the binary), except when `command[0]`'s file name equals
///   the binary's file name: then `command[1..]` come before `args`, as they would in the image.
/// * [`ImageSource::Host`]: `command + args` is the argv (with no `command`, `args` alone: a host
///   image has no entrypoint of its own); argv\[0\] is looked up in `path` (the host's `PATH`)
///   unless it contains a `/`. `is_executable` checks a candidate file.
///
/// The error is the message of a container that cannot start (kubelet's `StartError`).
pub(crate) fn build_argv(
    source: &ImageSource,
    command: &[String],
    args: &[String],
    path: &str,
    is_executable: impl Fn(&Path) -> bool,
) -> Result<Argv, String> {
    match source {
        ImageSource::Binary(binary) => {
            let mut argv = Vec::new();
            if let Some((first, rest)) = command.split_first() {
                let same_binary = Path::new(first).file_name().is_some()
                    && Path::new(first).file_name() == binary.file_name();
                if same_binary {
                    argv.extend(rest.iter().cloned());
                }
            }
            argv.extend(args.iter().cloned());
            Ok(Argv {
                program: binary.clone(),
                args: argv,
            })
        }
        ImageSource::Host => {
            let full: Vec<&String> = command.iter().chain(args).collect();
            let Some((first, rest)) = full.split_first() else {
                return Err(
                    "a host image has no entrypoint: set the container's command (or args)"
                        .to_owned(),
                );
            };
            let program = if first.contains('/') {
                PathBuf::from(first)
            } else {
                path.split(':')
                    .filter(|dir| !dir.is_empty())
                    .map(|dir| Path::new(dir).join(first))
                    .find(|candidate| is_executable(candidate))
                    .ok_or_else(|| {
                        format!(
                            "failed to create the container process: exec: \"{first}\": executable file not found in $PATH"
                        )
                    })?
            };
            Ok(Argv {
                program,
                args: rest.iter().map(|s| (*s).clone()).collect(),
            })
        }
    }
}

/// `true` if `path` is a regular file with an execute bit.
pub(crate) fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn names_lose_tags_and_digests_but_keep_registry_ports() {
        assert_eq!(image_name("busybox"), "busybox");
        assert_eq!(image_name("busybox:1.36"), "busybox");
        assert_eq!(
            image_name("ghcr.io/llmjob-dev/llmjob-runner:v0.1.0"),
            "ghcr.io/llmjob-dev/llmjob-runner"
        );
        assert_eq!(
            image_name("ghcr.io/llmjob-dev/llmjob-runner@sha256:abcd"),
            "ghcr.io/llmjob-dev/llmjob-runner"
        );
        assert_eq!(
            image_name("ghcr.io/llmjob-dev/llmjob-runner:v1@sha256:abcd"),
            "ghcr.io/llmjob-dev/llmjob-runner"
        );
        assert_eq!(image_name("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(image_name("localhost:5000/app:dev"), "localhost:5000/app");
        assert_eq!(
            image_name("localhost:5000/app@sha256:ff"),
            "localhost:5000/app"
        );
    }

    #[test]
    fn docker_hub_names_match_their_short_form() {
        assert_eq!(familiar_name("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar_name("docker.io/org/app"), "org/app");
        assert_eq!(familiar_name("ghcr.io/org/app"), "ghcr.io/org/app");
        let host = s(&["busybox"]);
        let images = HashMap::new();
        assert_eq!(
            resolve_image("docker.io/library/busybox:1.36", &images, &host),
            Some(ImageSource::Host)
        );
        assert_eq!(
            resolve_image("busybox@sha256:00", &images, &host),
            Some(ImageSource::Host)
        );
        assert_eq!(resolve_image("alpine", &images, &host), None);
    }

    #[test]
    fn binaries_win_over_host_images() {
        let images = HashMap::from([(
            "ghcr.io/llmjob-dev/llmjob-runner".to_owned(),
            PathBuf::from("/target/debug/llmjob-runner"),
        )]);
        let host = s(&["ghcr.io/llmjob-dev/llmjob-runner"]);
        assert_eq!(
            resolve_image("ghcr.io/llmjob-dev/llmjob-runner:latest", &images, &host),
            Some(ImageSource::Binary(PathBuf::from(
                "/target/debug/llmjob-runner"
            )))
        );
        assert!(unknown_image_message("x.io/y:1").contains("\"x.io/y\""));
    }

    #[test]
    fn binary_argv_ignores_foreign_commands() {
        let source = ImageSource::Binary(PathBuf::from("/bin/runner"));
        let no_path = |_: &Path| false;
        let argv = build_argv(&source, &s(&["/app/entry"]), &s(&["--x"]), "", no_path).unwrap();
        assert_eq!(argv.program, PathBuf::from("/bin/runner"));
        assert_eq!(argv.args, s(&["--x"]));
        let argv = build_argv(
            &source,
            &s(&["/usr/local/bin/runner", "run"]),
            &s(&["--x"]),
            "",
            no_path,
        )
        .unwrap();
        assert_eq!(argv.args, s(&["run", "--x"]));
    }

    #[test]
    fn host_argv_searches_path() {
        let exists = |p: &Path| p == Path::new("/usr/bin/sh");
        let argv = build_argv(
            &ImageSource::Host,
            &s(&["sh", "-c"]),
            &s(&["echo hi"]),
            "/nope:/usr/bin",
            exists,
        )
        .unwrap();
        assert_eq!(argv.program, PathBuf::from("/usr/bin/sh"));
        assert_eq!(argv.args, s(&["-c", "echo hi"]));
        let argv = build_argv(&ImageSource::Host, &[], &s(&["/bin/true"]), "", exists).unwrap();
        assert_eq!(argv.program, PathBuf::from("/bin/true"));
        let err = build_argv(
            &ImageSource::Host,
            &s(&["nothere"]),
            &[],
            "/usr/bin",
            exists,
        )
        .unwrap_err();
        assert!(
            err.contains("\"nothere\": executable file not found in $PATH"),
            "{err}"
        );
        assert!(build_argv(&ImageSource::Host, &[], &[], "/usr/bin", exists).is_err());
    }
}
