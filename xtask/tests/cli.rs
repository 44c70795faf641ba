//! `cargo xtask --help` names the command a user types.

use std::process::Command;

#[test]
fn help_says_cargo_xtask() {
    for args in [&["--help"][..], &["demo", "--help"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running xtask {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", out.status);
        let usage = stdout
            .lines()
            .find(|line| line.starts_with("Usage: "))
            .unwrap_or_else(|| panic!("{args:?}: no usage line in\n{stdout}"));
        assert!(
            usage.starts_with("Usage: cargo xtask "),
            "{args:?}: {usage}"
        );
    }
}
