//! The command line of the real `llmjob-runner` binary: `--help` and `--version` print and exit
//! 0 with no environment at all; any other argument is a usage error (exit 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use llmjob_crds::env::ALL;

/// Runs the binary with `args` and an empty environment (the API key is missing on purpose).
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmjob-runner"))
        .args(args)
        .env_clear()
        .output()
        .expect("running llmjob-runner")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn help_prints_usage_every_variable_and_the_exit_codes() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{flag}: stdout {stdout}\nstderr {}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Usage: llmjob-runner"), "{flag}: {stdout}");
        for var in ALL {
            let line = stdout
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("{} ", var.name)))
                .unwrap_or_else(|| panic!("{flag}: no line for {}:\n{stdout}", var.name));
            assert!(line.contains(var.help), "{flag}: {line}");
            if let Some(default) = var.default {
                assert!(
                    line.contains(&format!("[default: {default}]")),
                    "{flag}: {line}"
                );
            }
        }
        let exit_codes = stdout
            .split("Exit codes:")
            .nth(1)
            .unwrap_or_else(|| panic!("{flag}: no exit codes:\n{stdout}"));
        for code in 0..=4 {
            assert!(
                exit_codes
                    .lines()
                    .any(|line| line.trim_start().starts_with(&format!("{code} "))),
                "{flag}: exit code {code} missing:\n{exit_codes}"
            );
        }
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
    }
}

#[test]
fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim_end(),
            format!("llmjob-runner {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn an_unknown_argument_exits_2_with_the_usage() {
    let out = run(&["--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--prompt"), "{stderr}");
    assert!(stderr.contains("Usage: llmjob-runner"), "{stderr}");
    assert!(out.stdout.is_empty());
}
