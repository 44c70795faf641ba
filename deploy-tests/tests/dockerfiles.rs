//! The container images' Dockerfiles (`images/*.Dockerfile`). No Docker engine is reachable here,
//! so the images are not built by the tests: instead each Dockerfile is linted by `hadolint`
//! (from the tools cache) and parsed for what the chart relies on: a multi-stage build whose
//! final stage is distroless, runs as uid 65532, has no shell (no RUN, exec-form ENTRYPOINT) and
//! starts the binary the fake kubelet maps the image to.

use deploy_tests::{root, run_tool};

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
