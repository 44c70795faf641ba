//! The reference pipelines of `manifests/observability/` are valid for the collector they are
//! written for (`otelcol-test validate`, the test collector built with the same components as
//! any `otelcol-contrib`), alone and merged, and `prometheus.yml` is valid for Prometheus 3
//! (`promtool check config`). A broken file fails here with the tool's own message, before the
//! backends test runs it (`job-runner/tests/backends.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use testenv::backends::{PIPELINE_DIR, PIPELINE_FILES};
use testenv::tools;

fn dir() -> PathBuf {
    tools::workspace_root().join(PIPELINE_DIR)
}

/// `otelcol-test validate` over `files`, with the variables the files read set.
fn validate(files: &[&str]) -> std::process::Output {
    let otelcol = tools::bin("otelcol-test").unwrap_or_else(|e| panic!("{e}"));
    let mut command = Command::new(otelcol);
    command
        .arg("validate")
        .env("OTLP_TRACES_ENDPOINT", "jaeger-collector:4317")
        .env("OTLP_TRACES_INSECURE", "true")
        .env("OTLP_LOGS_ENDPOINT", "http://logs:4318")
        .env(
            "PROMETHEUS_OTLP_ENDPOINT",
            "http://prometheus:9090/api/v1/otlp/v1/metrics",
        );
    for file in files {
        command.arg(format!("--config=file:{}", dir().join(file).display()));
    }
    command.output().unwrap()
}

#[test]
fn each_pipeline_and_all_merged_validate() {
    let mut sets: Vec<Vec<&str>> = PIPELINE_FILES.iter().map(|f| vec![*f]).collect();
    sets.push(PIPELINE_FILES.to_vec());
    for files in sets {
        let out = validate(&files);
        assert!(
            out.status.success(),
            "otelcol-test validate {files:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn validation_catches_an_unset_endpoint() {
    // The check above could not fail if `validate` ignored the exporters: without its endpoint
    // the traces exporter's config is invalid.
    let otelcol = tools::bin("otelcol-test").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(otelcol)
        .arg("validate")
        .arg(format!(
            "--config=file:{}",
            dir().join("traces-otlp.yaml").display()
        ))
        .env_remove("OTLP_TRACES_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success(), "validate accepted an empty endpoint");
}

#[test]
fn prometheus_settings_are_valid() {
    let promtool = tools::bin("promtool").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(dir().join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
