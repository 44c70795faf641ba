//! Keeps `docs/job-runner.md` honest: its environment-variable table is generated from
//! `llmjob_crds::env::ALL` (the contract both the operator and the runner use), and every test
//! its "Verified by" section names exists in `job-runner/tests/` or `job-runner/src/`.
//!
//! After changing `crds/src/env.rs`, regenerate the table with
//! `LLMJOB_UPDATE_DOCS=1 cargo test -p llmjob-runner --test docs`.

use std::path::PathBuf;

use llmjob_crds::env::ALL;

const BEGIN: &str =
    "<!-- env-table:begin (generated from crds/src/env.rs; see job-runner/tests/docs.rs) -->";
const END: &str = "<!-- env-table:end -->";
const UPDATE_VAR: &str = "LLMJOB_UPDATE_DOCS";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join("job-runner.md")
}

/// The table as generated from the contract: name, default, meaning and accepted values.
fn generated_table() -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let mut table =
        String::from("| variable | default | meaning and accepted values |\n|---|---|---|\n");
    for var in ALL {
        let default = match var.default {
            Some(d) => format!("`{}`", cell(d)),
            None => "—".to_owned(),
        };
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            var.name,
            default,
            cell(var.help)
        ));
    }
    table
}

#[test]
fn the_environment_table_is_generated_from_the_contract() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no line {BEGIN}", path.display()));
    let body_start = start + BEGIN.len() + 1;
    let end = doc[body_start..]
        .find(END)
        .map(|i| body_start + i)
        .unwrap_or_else(|| panic!("{} has no line {END}", path.display()));
    let expected = generated_table();
    if doc[body_start..end] == expected {
        return;
    }
    if std::env::var_os(UPDATE_VAR).is_some() {
        let updated = format!("{}{}{}", &doc[..body_start], expected, &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "the environment table of {} is stale; regenerate it with \
         `{UPDATE_VAR}=1 cargo test -p llmjob-runner --test docs`. Expected:\n{expected}",
        path.display()
    );
}

#[test]
fn every_test_named_in_verified_by_exists() {
    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let section = doc
        .split("## Verified by")
        .nth(1)
        .expect("a `## Verified by` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let tests_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    // Integration tests live in tests/, unit and property tests in src/.
    let src_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = String::new();
    for dir in [&tests_dir, &src_dir] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut named = 0;
    for name in section.split('`').skip(1).step_by(2) {
        // `file.rs` names a test file; a `snake_case_name` names a test function; other code
        // spans (variables, attribute names, paths) are prose.
        if let Some(file) = name.strip_suffix(".rs")
            && !file.contains('/')
        {
            assert!(
                tests_dir.join(name).is_file(),
                "Verified by names {name}, which is not in {}",
                tests_dir.display()
            );
            continue;
        }
        let is_test_name = name.contains('_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !is_test_name {
            continue;
        }
        assert!(
            sources.contains(&format!("fn {name}(")),
            "Verified by names `{name}`, which is no test in {}",
            tests_dir.display()
        );
        named += 1;
    }
    assert!(
        named > 10,
        "the Verified by section names only {named} tests"
    );
}
