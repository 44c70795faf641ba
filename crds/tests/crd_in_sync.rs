//! The committed CRD YAML must be exactly what `crdgen` prints from the Rust types.

#![allow(clippy::expect_used)]

use std::process::Command;

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/llmjobs.llmjob.dev.yaml");
    let committed = std::fs::read_to_string(path).expect("reading crds/llmjobs.llmjob.dev.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .output()
        .expect("running crdgen");
    assert!(
        out.status.success(),
        "crdgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("crdgen prints UTF-8");
    if committed == generated {
        return;
    }
    let committed_lines: Vec<&str> = committed.lines().collect();
    let generated_lines: Vec<&str> = generated.lines().collect();
    let first = committed_lines
        .iter()
        .zip(&generated_lines)
        .position(|(c, g)| c != g)
        .unwrap_or(committed_lines.len().min(generated_lines.len()));
    panic!(
        "crds/llmjobs.llmjob.dev.yaml is out of date: run `cargo xtask generate` and commit the \
         result.\nfirst difference at line {} ({} lines committed, {} generated):\n  committed: {:?}\n  generated: {:?}",
        first + 1,
        committed_lines.len(),
        generated_lines.len(),
        committed_lines
            .get(first)
            .copied()
            .unwrap_or("<end of file>"),
        generated_lines
            .get(first)
            .copied()
            .unwrap_or("<end of file>"),
    );
}
