//! The Argo CD health check `manifests/gitops/argocd/health-llmjob.lua`, run by the real Lua
//! interpreter from the tools cache through the harness in `manifests/gitops/argocd/test/`
//! (one status sample per phase and edge case, in `cases.lua`).

use deploy_tests::{manifests_dir, run_tool};

fn harness_dir() -> std::path::PathBuf {
    manifests_dir().join("gitops").join("argocd").join("test")
}

#[test]
fn health_script_maps_every_phase() {
    let dir = harness_dir();
    let out = run_tool("lua", &["run.lua", ".."], &dir, &[]).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let cases = std::fs::read_to_string(dir.join("cases.lua")).unwrap();
    let expected = cases.matches("    name = ").count();
    assert!(
        expected >= 10,
        "too few cases found in cases.lua: {expected}"
    );
    assert!(
        text.contains(&format!("{expected} passed, 0 failed")),
        "harness output:\n{text}"
    );
    for status in ["Progressing", "Healthy", "Degraded", "Suspended"] {
        assert!(
            text.contains(&format!("-> {status}:")),
            "no case ends {status}:\n{text}"
        );
    }
}

#[test]
fn harness_fails_on_a_wrong_script() {
    // A script that calls everything Healthy must fail the harness: the harness can fail.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("health-llmjob.lua"),
        "local hs = {}\nhs.status = \"Healthy\"\nhs.message = \"always\"\nreturn hs\n",
    )
    .unwrap();
    let tmp_dir = tmp.path().to_string_lossy().into_owned();
    let err = run_tool("lua", &["run.lua", &tmp_dir], &harness_dir(), &[])
        .expect_err("a health script that is always Healthy must fail the harness");
    let msg = err.to_string();
    assert!(msg.contains("FAIL"), "{msg}");
    assert!(!msg.contains(" 0 failed"), "{msg}");
}
