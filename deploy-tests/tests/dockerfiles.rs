//! The container images' Dockerfiles (`images/*.Dockerfile`). No Docker engine is reachable here,
//! so the images are not built by the tests: instead each Dockerfile is linted by `hadolint`
//! (from the tools cache) and parsed for what the chart relies on: a multi-stage build whose
//! final stage is distroless, runs as uid 65532, has no shell (no RUN, exec-form ENTRYPOINT) and
//! starts the binary the fake kubelet maps the image to.
//!
//! The images `cargo xtask images` builds (no Docker) must have the Dockerfiles' layout: the
//! built archives' configuration (user, entrypoint, environment, working directory, labels) is
//! compared with each Dockerfile's final stage, and their file lists are checked (binary, CA
//! bundle, dynamic loader, users, no shell). The archives come from `testenv::images` (built by
//! `cargo xtask images`, which `cargo xtask test` runs; a missing one fails naming that command).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use deploy_tests::{root, run_tool};
use testenv::images::{self, ImageArchive};

/// (Dockerfile, binary it must ship).
const IMAGES: &[(&str, &str)] = &[
    ("images/operator.Dockerfile", "llmjob-operator"),
    ("images/runner.Dockerfile", "llmjob-runner"),
];

/// One instruction: keyword (upper case) and its arguments, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (kw, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((kw.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn images_are_multi_stage_distroless_non_root_without_a_shell() {
    for (path, binary) in IMAGES {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        let ins = instructions(&text);
        let froms: Vec<usize> = ins
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| k == "FROM")
            .map(|(i, _)| i)
            .collect();
        assert!(froms.len() >= 2, "{path}: not a multi-stage build");
        assert!(
            ins[froms[0]].1.contains(" AS builder"),
            "{path}: first stage must be the named builder: {}",
            ins[froms[0]].1
        );
        assert!(
            ins[froms[0]].1.contains("rust:"),
            "{path}: builder is not a Rust image"
        );
        let last = *froms.last().unwrap();
        let base = &ins[last].1;
        assert!(
            base.starts_with("gcr.io/distroless/") && base.contains(":nonroot"),
            "{path}: final stage must be a distroless nonroot image, got {base}"
        );
        let final_stage = &ins[last + 1..];
        assert!(
            final_stage.iter().all(|(k, _)| k != "RUN"),
            "{path}: RUN in the final stage (there is no shell at run time)"
        );
        let users: Vec<&String> = final_stage
            .iter()
            .filter(|(k, _)| k == "USER")
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            users.last().map(|u| u.as_str()),
            Some("65532:65532"),
            "{path}: final USER"
        );
        let entrypoint = final_stage
            .iter()
            .find(|(k, _)| k == "ENTRYPOINT")
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("{path}: no ENTRYPOINT"));
        let exec: Vec<String> = serde_json::from_str(&entrypoint)
            .unwrap_or_else(|e| panic!("{path}: ENTRYPOINT is not exec form ({e}): {entrypoint}"));
        assert_eq!(exec, vec![format!("/usr/local/bin/{binary}")], "{path}");
        let builds = ins
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains(&format!("-p {binary} --bin {binary}")));
        assert!(builds, "{path}: the builder does not build {binary}");
        let copies = final_stage.iter().any(|(k, a)| {
            k == "COPY"
                && a.contains("--from=builder")
                && a.ends_with(&format!("/usr/local/bin/{binary}"))
        });
        assert!(copies, "{path}: {binary} is not copied from the builder");
        assert!(
            root().join(format!("{path}.dockerignore")).is_file(),
            "{path}: no {path}.dockerignore (the build context would include target/)"
        );
    }
}

#[test]
fn hadolint_finds_nothing() {
    let files: Vec<String> = IMAGES.iter().map(|(p, _)| p.to_string()).collect();
    let mut args = vec!["--no-color", "--failure-threshold", "info"];
    args.extend(files.iter().map(String::as_str));
    if let Err(err) = run_tool("hadolint", &args, &root(), &[]) {
        panic!("{err}");
    }
}

/// The linter really lints (so `hadolint_finds_nothing` cannot pass vacuously): an untagged base
/// image and an unpinned `apt-get install` are reported and fail the run.
#[test]
fn hadolint_reports_a_bad_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.Dockerfile");
    std::fs::write(
        &file,
        "FROM debian\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    match run_tool(
        "hadolint",
        &["--no-color", "--failure-threshold", "info", &file],
        &root(),
        &[],
    ) {
        Ok(out) => panic!(
            "hadolint accepted a bad Dockerfile: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(deploy_tests::CmdError::Failed { stdout, .. }) => {
            assert!(stdout.contains("DL3006"), "{stdout}");
            assert!(stdout.contains("DL3008"), "{stdout}");
        }
        Err(other) => panic!("{other}"),
    }
}

/// Splits a Dockerfile argument list on whitespace outside double quotes, removing the quotes.
fn words(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in args.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(current);
    }
    out
}

/// What a Dockerfile's final stage declares: user, entrypoint, environment, working directory and
/// labels (`${VERSION}` replaced by the `ARG VERSION` default).
#[derive(Debug, Default)]
struct FinalStage {
    user: Option<String>,
    entrypoint: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    labels: BTreeMap<String, String>,
}

fn final_stage(path: &str) -> FinalStage {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let ins = instructions(&text);
    let last = ins.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let mut stage = FinalStage::default();
    let mut args = BTreeMap::new();
    let pairs = |a: &str| -> Vec<(String, String)> {
        words(a)
            .into_iter()
            .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    };
    for (k, a) in &ins[last + 1..] {
        match k.as_str() {
            "ARG" => args.extend(pairs(a)),
            "USER" => stage.user = Some(a.clone()),
            "WORKDIR" => stage.workdir = Some(a.clone()),
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(a).unwrap(),
            "ENV" => stage.env.extend(pairs(a)),
            "LABEL" => stage.labels.extend(pairs(a)),
            _ => {}
        }
    }
    for value in stage.labels.values_mut() {
        for (arg, default) in &args {
            *value = value.replace(&format!("${{{arg}}}"), default);
        }
    }
    stage
}

fn image_of(binary: &str) -> images::Image {
    match binary {
        "llmjob-operator" => images::OPERATOR,
        "llmjob-runner" => images::RUNNER,
        other => panic!("no image for {other}"),
    }
}

#[test]
fn built_images_have_the_dockerfiles_layout() {
    for (path, binary) in IMAGES {
        let image = image_of(binary);
        let archive = ImageArchive::open(&image).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(archive.reference, image.reference(), "{path}");
        let config = archive.config.config().clone().expect("a config");
        let stage = final_stage(path);

        assert_eq!(
            config.user().as_deref(),
            stage.user.as_deref(),
            "{path}: user"
        );
        assert_eq!(
            config.entrypoint().clone().unwrap_or_default(),
            stage.entrypoint,
            "{path}: entrypoint"
        );
        assert!(config.cmd().is_none(), "{path}: no CMD");
        let env: BTreeMap<String, String> = config
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        assert_eq!(env, stage.env, "{path}: environment");
        assert_eq!(
            config.working_dir().as_deref(),
            stage.workdir.as_deref(),
            "{path}: working directory"
        );
        let labels: BTreeMap<String, String> = config
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert_eq!(labels, stage.labels, "{path}: labels");

        // The file system: the binary, what it needs to start, the users, and no shell.
        let (_, bin) = archive
            .resolve(&format!("/usr/local/bin/{binary}"))
            .unwrap_or_else(|| panic!("{path}: no /usr/local/bin/{binary}"));
        assert_eq!(bin.kind, tar_regular(), "{path}");
        assert_eq!(bin.mode & 0o777, 0o755, "{path}: binary mode");
        assert!(bin.size > 1_000_000, "{path}: binary of {} bytes", bin.size);
        for needed in [
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/etc/passwd",
            "/etc/group",
        ] {
            let found = archive.resolve(needed);
            assert!(
                found.is_some_and(|(_, e)| e.kind == tar_regular()),
                "{path}: {needed} does not resolve to a file"
            );
        }
        let ca = env["SSL_CERT_FILE"].clone();
        let (_, bundle) = archive
            .resolve(&ca)
            .unwrap_or_else(|| panic!("{path}: no CA bundle at {ca}"));
        assert!(
            bundle.size > 100_000,
            "{path}: CA bundle of {} bytes",
            bundle.size
        );
        for shell in [
            "/bin/sh",
            "/usr/bin/sh",
            "/bin/bash",
            "/usr/bin/bash",
            "/bin/busybox",
        ] {
            assert!(archive.resolve(shell).is_none(), "{path}: {shell} exists");
        }
        let (_, home) = archive.resolve("/home/nonroot").expect("/home/nonroot");
        assert_eq!((home.uid, home.gid), (65532, 65532), "{path}: home owner");
        let (_, tmp) = archive.resolve("/tmp").expect("/tmp");
        assert_eq!(tmp.mode & 0o7777, 0o1777, "{path}: /tmp mode");
        // Everything else belongs to root: nothing in the image is writable by the user.
        for (file, entry) in &archive.files {
            if !file.starts_with("home/nonroot") {
                assert_eq!((entry.uid, entry.gid), (0, 0), "{path}: {}", file.display());
            }
        }
    }
}

#[test]
fn built_images_users_are_the_dockerfiles() {
    // The nonroot user and group exist under the uid the Dockerfiles name, without a login shell.
    for (path, binary) in IMAGES {
        let archive = ImageArchive::open(&image_of(binary)).unwrap_or_else(|e| panic!("{e}"));
        let passwd = layer_file(&archive, "etc/passwd");
        assert!(
            passwd.contains("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"),
            "{path}: {passwd}"
        );
        let group = layer_file(&archive, "etc/group");
        assert!(group.contains("nonroot:x:65532:"), "{path}: {group}");
    }
}

#[test]
fn the_pause_image_is_upstreams_layout() {
    let archive = ImageArchive::open(&images::PAUSE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(archive.reference, "registry.k8s.io/pause:3.10.2");
    let config = archive.config.config().clone().expect("a config");
    assert_eq!(config.user().as_deref(), Some("65535:65535"));
    assert_eq!(config.entrypoint().clone(), Some(vec!["/pause".to_owned()]));
    let files: Vec<_> = archive.files.keys().collect();
    assert_eq!(files, [std::path::Path::new("pause")]);
    assert!(archive.config_digest.starts_with("sha256:"));
}

fn tar_regular() -> tar::EntryType {
    tar::EntryType::Regular
}

/// The content of a file of the image's layers (the last layer holding it).
fn layer_file(archive: &ImageArchive, name: &str) -> String {
    use std::io::Read;
    let mut outer = tar::Archive::new(std::fs::File::open(&archive.path).unwrap());
    let mut blobs = BTreeMap::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        blobs.insert(path, data);
    }
    let mut found = None;
    for layer in archive.manifest.layers() {
        let blob = &blobs[&format!("blobs/{}", layer.digest().to_string().replacen(':', "/", 1))];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                == name
            {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                found = Some(text);
            }
        }
    }
    found.unwrap_or_else(|| panic!("no {name} in {}", archive.path.display()))
}
