//! `cargo xtask images`: the OCI images of the operator, the job-runner, the pod sandbox
//! (pause) and the tests' probe, built with no Docker, no daemon and no registry, into `testenv::images::dir()`
//! (`$LLMJOB_IMAGES_DIR`, else `<cargo target dir>/images`), one OCI image-layout archive each,
//! importable with `ctr -n k8s.io images import` under the references of `testenv::images`.
//!
//! * **pause**: `build/pause/linux/pause.c` of the Kubernetes module pinned in `tools/kube/go.mod`,
//!   compiled with `gcc -Os -Wall -Werror -static` as Kubernetes' `build/pause/Makefile` does; one
//!   layer holding `/pause`, user 65535:65535, entrypoint `/pause`, as upstream.
//! * **llmjob-operator, llmjob-runner**: the release binaries on a minimal base layer made from
//!   Debian's `libc6`, `libgcc-s1` and `ca-certificates` (`apt-get download`, `dpkg-deb -x`),
//!   the CA bundle at `/etc/ssl/certs/ca-certificates.crt`, a `nonroot` user 65532 in
//!   `/etc/passwd` and `/etc/group`, and no shell. The layout (paths, user, entrypoint,
//!   environment, labels) is the one of `images/*.Dockerfile`; `deploy-tests/tests/dockerfiles.rs`
//!   checks both against each other. The base layer is cached in
//!   `$LLMJOB_CACHE/images/base-<key>.tar`, the key a hash of the package versions.
//! * **probe** (tests only): `/bin/busybox` of Debian's `busybox-static` (`apt-get download`,
//!   `dpkg-deb -x`, never installed) and applet links in `/bin`, user 65532, `PATH=/bin`,
//!   entrypoint `/bin/sh`.
//!
//! `ocidir` (the containers project's OCI layout crate) writes blobs, digests, manifests and the
//! index; this module only decides what goes into the layers and the configuration. Everything
//! is reproducible: fixed timestamps, sorted entries, owners set explicitly.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ocidir::OciDir;
use ocidir::cap_std::{ambient_authority, fs::Dir};
use ocidir::oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, Platform, PlatformBuilder, RootFsBuilder, SCHEMA_VERSION,
};
use sha2::{Digest, Sha256};
use testenv::images::{self as imgs, Image, NONROOT_UID};

/// The Debian packages of the base layer: the C library, libgcc (unwinding) and the CA store.
const BASE_PACKAGES: [&str; 3] = ["libc6", "libgcc-s1", "ca-certificates"];
/// Part of the base layer's cache key: bump it when the layer's layout changes.
const BASE_LAYOUT_REVISION: u32 = 1;
/// Every timestamp in the images (reproducible builds).
const CREATED: &str = "1970-01-01T00:00:00Z";
/// The environment of the operator and runner images (distroless's).
pub const ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];
/// The CA bundle, relative to the root.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// The working directory (the nonroot user's home, as in distroless `:nonroot`).
const WORKDIR: &str = "/home/nonroot";
/// The pause image's user (upstream's).
const PAUSE_USER: &str = "65535:65535";
/// The Debian package whose static `/bin/busybox` the probe image carries.
const PROBE_PACKAGE: &str = "busybox-static";
/// The applets the probe pods' scripts use, as links to `/bin/busybox`.
const PROBE_APPLETS: [&str; 7] = ["sh", "echo", "cat", "nslookup", "wget", "nc", "sleep"];

/// One application image: which binary, and the labels of its Dockerfile.
struct App {
    image: Image,
    binary: &'static str,
    description: &'static str,
}

const APPS: [App; 2] = [
    App {
        image: imgs::OPERATOR,
        binary: "llmjob-operator",
        description: "The llmjob-operator controller: reconciles LlmJobs into Kubernetes Jobs.",
    },
    App {
        image: imgs::RUNNER,
        binary: "llmjob-runner",
        description: "The llmjob job-runner: makes one OpenAI-compatible call and exports OpenTelemetry telemetry.",
    },
];

/// Builds the images named in `only` (all of `testenv::images::BUILT` when empty): pause first,
/// then the release binaries, the base layer and the application images, then the probe.
pub fn run(root: &Path, only: &[String]) -> Result<()> {
    let known: Vec<&str> = imgs::BUILT.iter().map(|i| i.name).collect();
    if let Some(unknown) = only.iter().find(|n| !known.contains(&n.as_str())) {
        bail!("no image `{unknown}`: choose among {}", known.join(", "));
    }
    let wanted = |image: &Image| only.is_empty() || only.iter().any(|n| n == image.name);
    let start = Instant::now();
    let out = imgs::dir();
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    if wanted(&imgs::PAUSE) {
        crate::step("image registry.k8s.io/pause: compiling Kubernetes' pause.c (gcc -static)");
        let t = Instant::now();
        build_pause(root, &out)?;
        report(&imgs::PAUSE, &out, t)?;
    }

    let apps: Vec<&App> = APPS.iter().filter(|a| wanted(&a.image)).collect();
    if !apps.is_empty() {
        crate::step(
            "building the release binaries: cargo build --release -p llmjob-operator -p llmjob-runner",
        );
        // The LTO link prints nothing for minutes: say it is still going.
        with_heartbeat("the release build", || {
            crate::cargo(
                root,
                &[
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "llmjob-operator",
                    "-p",
                    "llmjob-runner",
                ],
            )
        })?;
        crate::step("the base layer: Debian's libc6, libgcc-s1 and ca-certificates, user nonroot");
        let base = base_layer()?;
        let release = testenv::tools::target_dir().join("release");
        for app in apps {
            crate::step(&format!("image {}", app.image.reference()));
            let t = Instant::now();
            build_app(app, &release.join(app.binary), &base, &out)?;
            report(&app.image, &out, t)?;
        }
    }

    if wanted(&imgs::PROBE) {
        crate::step("image testenv.local/busybox:probe (tests): Debian's busybox-static");
        let t = Instant::now();
        build_probe(&out)?;
        report(&imgs::PROBE, &out, t)?;
    }
    eprintln!(
        "images: done in {:.1} s, in {} (import: ctr -n k8s.io images import <file>)",
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// How often a long step says it is still running.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `f`, printing "xtask: <what>: still running (1m30s)" every 30 s until it returns.
fn with_heartbeat<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let start = Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(HEARTBEAT)
            {
                let s = start.elapsed().as_secs();
                eprintln!("xtask: {what}: still running ({}m{:02}s)", s / 60, s % 60);
            }
        });
        let result = f();
        drop(done);
        result
    })
}

/// Prints an image's archive size, digest and build time.
fn report(image: &Image, out: &Path, started: Instant) -> Result<()> {
    let path = out.join(image.file_name());
    let archive = testenv::images::ImageArchive::read(&path)?;
    let size = fs::metadata(&path)?.len();
    eprintln!(
        "  {}: {} ({:.1} MB, config {}) in {:.1} s",
        archive.reference,
        path.display(),
        size as f64 / 1e6,
        archive.config_digest,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// --- pause ---------------------------------------------------------------------------------------

/// Compiles pause.c and writes the pause image.
fn build_pause(root: &Path, out: &Path) -> Result<()> {
    let kube = kube_version(root)?;
    let module = go_module_dir(root, &format!("k8s.io/kubernetes@v{kube}"))?;
    let source = module.join("build/pause/linux/pause.c");
    let makefile = fs::read_to_string(module.join("build/pause/Makefile"))
        .with_context(|| format!("reading {}", module.join("build/pause/Makefile").display()))?;
    let tag = makefile
        .lines()
        .find_map(|l| l.strip_prefix("TAG ?= "))
        .map(str::trim)
        .context("build/pause/Makefile has no `TAG ?= ` line")?;
    if tag != imgs::PAUSE.tag {
        bail!(
            "Kubernetes v{kube} builds pause {tag}, but testenv::images::PAUSE says {}: update it (and the node's sandbox image)",
            imgs::PAUSE.tag
        );
    }
    let work = tempfile_dir(out, "pause")?;
    let binary = work.join("pause");
    let version = format!("-DVERSION=v{tag}-v{kube}");
    let mut gcc = Command::new("gcc");
    gcc.args(["-Os", "-Wall", "-Werror", "-static", &version, "-o"])
        .arg(&binary)
        .arg(&source);
    run_checked(&mut gcc).context(
        "compiling pause.c needs gcc and the static C library (Debian: gcc and libc6-dev)",
    )?;
    run_checked(Command::new("strip").arg(&binary))?;

    let layout = work.join("layout");
    let oci = open_layout(&layout)?;
    let config = image_config(
        ConfigBuilder::default()
            .user(PAUSE_USER)
            .entrypoint(vec!["/pause".to_owned()])
            .build()?,
    )?;
    let mut tar = oci.create_layer(None)?;
    append_file(&mut tar, &binary, Path::new("pause"), 0o755)?;
    let layer = tar.into_inner()?.complete()?;
    let created_by = format!("pause.c of k8s.io/kubernetes v{kube}, gcc -Os -static");
    insert_image(
        &oci,
        config,
        vec![(layer, created_by)],
        &imgs::PAUSE.reference(),
    )?;
    write_archive(&layout, &out.join(imgs::PAUSE.file_name()))?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

/// The Kubernetes version `tools/kube/go.mod` pins (`k8s.io/kubernetes vX.Y.Z`).
fn kube_version(root: &Path) -> Result<String> {
    let gomod = root.join("tools/kube/go.mod");
    let text =
        fs::read_to_string(&gomod).with_context(|| format!("reading {}", gomod.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("{} pins no k8s.io/kubernetes version", gomod.display()))
}

/// The directory of a Go module in the tools cache's module cache (`go mod download -json`, run
/// in `tools/kube` so its `go.sum` verifies the download; a no-op once `tools/ensure-tools.sh`
/// has built kube).
fn go_module_dir(root: &Path, module: &str) -> Result<PathBuf> {
    let cache = testenv::tools::cache_dir();
    let venv_go = cache.join("venv/bin/go");
    let go = if venv_go.is_file() && which("go").is_none() {
        venv_go
    } else {
        PathBuf::from("go")
    };
    let out = Command::new(&go)
        .args(["mod", "download", "-json", module])
        .current_dir(root.join("tools/kube"))
        .env("GOMODCACHE", cache.join("go/mod"))
        .env("GOPATH", cache.join("go/path"))
        .env("GOTOOLCHAIN", "local")
        .output()
        .with_context(|| {
            format!(
                "could not run `{}` (run `cargo xtask tools` first)",
                go.display()
            )
        })?;
    // `go mod download -json` prints the JSON (with an Error field) on stdout even on failure.
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "go mod download {module}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = info.get("Error").and_then(|e| e.as_str()) {
        bail!("go mod download {module}: {err}");
    }
    info.get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .with_context(|| format!("go mod download {module}: no Dir in {info}"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

// --- the base layer ------------------------------------------------------------------------------

/// Downloads the Debian packages `versions` (`name=version` each) into `dir` with
/// `apt-get download` (nothing is installed).
fn download_debs(versions: &[String], dir: &Path) -> Result<()> {
    eprintln!(
        "  apt-get download {} (Debian's archive)",
        versions.join(" ")
    );
    run_checked(
        Command::new("apt-get")
            .arg("download")
            .args(versions)
            .current_dir(dir),
    )
    .context(
        "the images are made from Debian packages: apt-get and Debian's package archive are needed",
    )
}

/// The cached base layer (an uncompressed tar), built when its key is new.
fn base_layer() -> Result<PathBuf> {
    let versions = BASE_PACKAGES
        .iter()
        .map(|p| candidate_version(p).map(|v| format!("{p}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    let key_text = format!(
        "revision {BASE_LAYOUT_REVISION}\narch {arch}\n{}\n",
        versions.join("\n")
    );
    let key = hex::encode(&Sha256::digest(key_text.as_bytes())[..6]);
    let dir = testenv::tools::cache_dir().join("images");
    let path = dir.join(format!("base-{key}.tar"));
    if path.is_file() {
        eprintln!("  cached: {} ({})", path.display(), versions.join(" "));
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile_dir(&dir, &format!("base-{key}"))?;
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    download_debs(&versions, &debs)?;
    let rootfs = work.join("rootfs");
    let ca = work.join("ca-certificates");
    for entry in sorted_dir(&debs)? {
        let name = entry.to_string_lossy();
        let target = if name.starts_with("ca-certificates_") {
            &ca
        } else {
            &rootfs
        };
        run_checked(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(debs.join(&entry))
                .arg(target),
        )?;
    }
    stage_base(&rootfs, &ca)?;
    let partial = dir.join(format!(".base-{key}.tar.partial"));
    let file =
        fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let home = PathBuf::from(WORKDIR.trim_start_matches('/'));
    append_tree(&mut tar, &rootfs, Path::new(""), &|p: &Path| {
        if p == home {
            (NONROOT_UID, NONROOT_UID)
        } else {
            (0, 0)
        }
    })?;
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    fs::rename(&partial, &path)?;
    fs::write(dir.join(format!("base-{key}.txt")), &key_text)?;
    fs::remove_dir_all(&work).ok();
    eprintln!("  built: {}", path.display());
    Ok(path)
}

/// The version `apt-get download` fetches: the candidate of `apt-cache policy`.
fn candidate_version(package: &str) -> Result<String> {
    let policy = command_output(Command::new("apt-cache").args(["policy", package]))
        .context("the image base is made from Debian packages: apt-cache is required")?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .map(str::to_owned)
        .filter(|v| v != "(none)")
        .with_context(|| format!("apt knows no candidate version of {package}: run apt-get update"))
}

/// Turns the extracted packages into the base file system: no documentation but the copyright
/// files, the CA bundle, the users, the directories a container expects.
fn stage_base(rootfs: &Path, ca: &Path) -> Result<()> {
    for dir in ["usr/share/lintian", "usr/share/man", "usr/share/info"] {
        let p = rootfs.join(dir);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
    }
    let docs = rootfs.join("usr/share/doc");
    for package in sorted_dir(&docs)? {
        for file in sorted_dir(&docs.join(&package))? {
            if file != "copyright" {
                let p = docs.join(&package).join(&file);
                if p.is_dir() {
                    fs::remove_dir_all(&p)?;
                } else {
                    fs::remove_file(&p)?;
                }
            }
        }
    }
    // The bundle update-ca-certificates would write: every certificate the package ships, in
    // file-name order.
    let mut certs = Vec::new();
    collect_certs(&ca.join("usr/share/ca-certificates"), &mut certs)?;
    certs.sort();
    if certs.is_empty() {
        bail!("the ca-certificates package holds no certificates");
    }
    let mut bundle = Vec::new();
    for cert in &certs {
        let mut pem = fs::read(cert)?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        bundle.extend_from_slice(&pem);
    }
    write(rootfs, CA_BUNDLE, &bundle, 0o644)?;
    fs::create_dir_all(docs.join("ca-certificates"))?;
    fs::copy(
        ca.join("usr/share/doc/ca-certificates/copyright"),
        docs.join("ca-certificates/copyright"),
    )?;
    // The users and groups of distroless, without login shells (there is no shell).
    write(
        rootfs,
        "etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\n\
          nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
          nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        0o644,
    )?;
    write(
        rootfs,
        "etc/group",
        b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
        0o644,
    )?;
    write(
        rootfs,
        "etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
        0o644,
    )?;
    for (dir, mode) in [("tmp", 0o1777), ("root", 0o700), ("home/nonroot", 0o700)] {
        let p = rootfs.join(dir);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    }
    for forbidden in ["bin/sh", "usr/bin/sh", "bin/bash"] {
        if rootfs.join(forbidden).symlink_metadata().is_ok() {
            bail!("the base layer would carry a shell ({forbidden})");
        }
    }
    Ok(())
}

fn collect_certs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for name in sorted_dir(dir)? {
        let p = dir.join(&name);
        if p.is_dir() {
            collect_certs(&p, out)?;
        } else if name.to_string_lossy().ends_with(".crt") {
            out.push(p);
        }
    }
    Ok(())
}

/// Writes `content` to `root/rel` with `mode`, creating parent directories.
fn write(root: &Path, rel: &str, content: &[u8], mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

// --- the probe image ----------------------------------------------------------------------------

/// Writes the probe image: one layer with Debian's static busybox and its applet links.
fn build_probe(out: &Path) -> Result<()> {
    let version = candidate_version(PROBE_PACKAGE)?;
    let work = tempfile_dir(out, imgs::PROBE.name)?;
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    download_debs(&[format!("{PROBE_PACKAGE}={version}")], &debs)?;
    let extracted = work.join("extracted");
    for entry in sorted_dir(&debs)? {
        run_checked(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(debs.join(&entry))
                .arg(&extracted),
        )?;
    }
    let busybox = extracted.join("bin/busybox");
    if !busybox.is_file() {
        bail!("{PROBE_PACKAGE} {version} holds no /bin/busybox");
    }

    let layout = work.join("layout");
    let oci = open_layout(&layout)?;
    let config = image_config(
        ConfigBuilder::default()
            .user(format!("{NONROOT_UID}:{NONROOT_UID}"))
            .entrypoint(vec!["/bin/sh".to_owned()])
            .env(vec!["PATH=/bin".to_owned()])
            .build()?,
    )?;
    let mut tar = oci.create_layer(None)?;
    append_dir(&mut tar, Path::new("bin"), 0o755)?;
    append_file(&mut tar, &busybox, Path::new("bin/busybox"), 0o755)?;
    for applet in PROBE_APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, (0, 0));
        tar.append_link(&mut h, Path::new("bin").join(applet), "busybox")?;
    }
    let layer = tar.into_inner()?.complete()?;
    insert_image(
        &oci,
        config,
        vec![(
            layer,
            format!("/bin/busybox of Debian's {PROBE_PACKAGE} {version}"),
        )],
        &imgs::PROBE.reference(),
    )?;
    write_archive(&layout, &out.join(imgs::PROBE.file_name()))?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

// --- application images --------------------------------------------------------------------------

/// Writes the image of one binary: the base layer, then `/usr/local/bin/<binary>`.
fn build_app(app: &App, binary: &Path, base: &Path, out: &Path) -> Result<()> {
    if !binary.is_file() {
        bail!("{} is missing after the release build", binary.display());
    }
    let work = tempfile_dir(out, app.image.name)?;
    let layout = work.join("layout");
    let oci = open_layout(&layout)?;
    let labels: HashMap<String, String> = labels(app).into_iter().collect();
    let config = image_config(
        ConfigBuilder::default()
            .user(format!("{NONROOT_UID}:{NONROOT_UID}"))
            .entrypoint(vec![format!("/usr/local/bin/{}", app.binary)])
            .env(ENV.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .working_dir(WORKDIR)
            .labels(labels)
            .build()?,
    )?;

    let mut writer = oci.create_gzip_layer(None)?;
    let mut file = fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    io::copy(&mut file, &mut writer)?;
    let base_layer = writer.complete()?;
    let base_name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut tar = oci.create_layer(None)?;
    for dir in ["usr", "usr/local", "usr/local/bin"] {
        append_dir(&mut tar, Path::new(dir), 0o755)?;
    }
    let target = PathBuf::from("usr/local/bin").join(app.binary);
    append_file(&mut tar, binary, &target, 0o755)?;
    let app_layer = tar.into_inner()?.complete()?;
    insert_image(
        &oci,
        config,
        vec![
            (
                base_layer,
                format!(
                    "base: Debian {} + CA bundle + user nonroot ({base_name})",
                    BASE_PACKAGES.join(", ")
                ),
            ),
            (
                app_layer,
                format!(
                    "COPY {} /usr/local/bin/{} (cargo build --release)",
                    app.binary, app.binary
                ),
            ),
        ],
        &app.image.reference(),
    )?;
    write_archive(&layout, &out.join(app.image.file_name()))?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

/// The OCI labels of an image: those of its Dockerfile.
fn labels(app: &App) -> Vec<(String, String)> {
    [
        ("org.opencontainers.image.title", app.binary),
        ("org.opencontainers.image.description", app.description),
        (
            "org.opencontainers.image.source",
            "https://github.com/llmjob-dev/llmjob-operator",
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        ("org.opencontainers.image.version", app.image.tag),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// --- OCI plumbing --------------------------------------------------------------------------------

fn open_layout(path: &Path) -> Result<OciDir> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let dir = Dir::open_ambient_dir(path, ambient_authority())
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(OciDir::ensure(dir)?)
}

fn platform() -> Result<Platform> {
    Ok(PlatformBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .build()?)
}

fn arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_owned()),
    }
}

/// An image configuration around `config`; [`insert_image`] fills in the layers.
fn image_config(config: ocidir::oci_spec::image::Config) -> Result<ImageConfiguration> {
    Ok(ImageConfigurationBuilder::default()
        .created(CREATED)
        .architecture(arch())
        .os(Os::Linux)
        .config(config)
        .build()?)
}

/// Writes the configuration (with the layers' diff ids and history) and the manifest, and
/// names the image `reference` in `index.json`.
fn insert_image(
    oci: &OciDir,
    mut config: ImageConfiguration,
    layers: Vec<(ocidir::Layer, String)>,
    reference: &str,
) -> Result<()> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (layer, created_by) in layers {
        descriptors.push(layer.descriptor().build()?);
        diff_ids.push(layer.uncompressed_sha256_as_digest().to_string());
        history.push(
            HistoryBuilder::default()
                .created(CREATED)
                .created_by(created_by)
                .build()?,
        );
    }
    config.set_rootfs(
        RootFsBuilder::default()
            .typ("layers")
            .diff_ids(diff_ids)
            .build()?,
    );
    config.set_history(Some(history));
    let config = oci.write_config(config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(descriptors)
        .build()?;
    oci.insert_manifest(manifest, Some(reference), platform()?)?;
    Ok(())
}

/// A fresh work directory `<parent>/.<name>.partial`.
fn tempfile_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(format!(".{name}.partial"));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A header with reproducible metadata: root-owned unless told, timestamp 0.
fn header(kind: tar::EntryType, mode: u32, size: u64, owner: (u32, u32)) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(owner.0.into());
    h.set_gid(owner.1.into());
    h.set_mtime(0);
    h
}

fn append_dir<W: io::Write>(tar: &mut tar::Builder<W>, path: &Path, mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0, (0, 0));
    tar.append_data(&mut h, path, io::empty())?;
    Ok(())
}

fn append_file<W: io::Write>(
    tar: &mut tar::Builder<W>,
    source: &Path,
    path: &Path,
    mode: u32,
) -> Result<()> {
    let file = fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let mut h = header(
        tar::EntryType::Regular,
        mode,
        file.metadata()?.len(),
        (0, 0),
    );
    tar.append_data(&mut h, path, file)?;
    Ok(())
}

/// Appends `root/rel` recursively in file-name order, keeping modes and symbolic links, with
/// owners from `owner` and timestamp 0.
fn append_tree<W: io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    owner: &dyn Fn(&Path) -> (u32, u32),
) -> Result<()> {
    for name in sorted_dir(&root.join(rel))? {
        let path = rel.join(&name);
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full)?;
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, owner(&path));
            tar.append_link(&mut h, &path, fs::read_link(&full)?)?;
        } else if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0, owner(&path));
            tar.append_data(&mut h, &path, io::empty())?;
            append_tree(tar, root, &path, owner)?;
        } else if meta.is_file() {
            let mut h = header(tar::EntryType::Regular, mode, meta.len(), owner(&path));
            tar.append_data(&mut h, &path, fs::File::open(&full)?)?;
        } else {
            bail!("{}: not a file, directory or symbolic link", full.display());
        }
    }
    Ok(())
}

/// The names in a directory, sorted (empty when it does not exist).
fn sorted_dir(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut names = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Writes the OCI layout directory as an archive (its entries in file-name order), via a
/// `.partial` file renamed into place.
fn write_archive(layout: &Path, archive: &Path) -> Result<()> {
    let partial = archive.with_extension("tar.partial");
    let file =
        fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    append_tree(&mut tar, layout, Path::new(""), &|_| (0, 0))?;
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    fs::rename(&partial, archive)
        .with_context(|| format!("renaming {} to {}", partial.display(), archive.display()))?;
    Ok(())
}

// --- commands ------------------------------------------------------------------------------------

/// Runs a command, failing with its output when it fails.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
