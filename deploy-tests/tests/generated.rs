//! Generated deployment files are up to date: the chart's CRD copy is byte-identical to
//! `crds/llmjobs.llmjob.dev.yaml`, `manifests/install.yaml` is what the chart renders today, and the
//! `argocd-cm` snippet embeds the current health script. The check is the very code of
//! `cargo xtask manifests --check` (compiled in from `xtask/src/manifests.rs`), so a failure names
//! the command that fixes it.

#[path = "../../xtask/src/manifests.rs"]
#[allow(dead_code)]
mod manifests;

#[test]
fn chart_crd_install_yaml_and_argocd_snippet_are_up_to_date() {
    if let Err(err) = manifests::run(true) {
        panic!("{err:#}");
    }
}

#[test]
fn chart_crd_is_a_byte_identical_copy() {
    let root = deploy_tests::root();
    let source = std::fs::read(root.join(manifests::CRD_SOURCE));
    let copy = std::fs::read(root.join(manifests::CHART_CRD));
    match (source, copy) {
        (Ok(source), Ok(copy)) => assert!(
            source == copy,
            "{} differs from {}: run `{}` and commit the result",
            manifests::CHART_CRD,
            manifests::CRD_SOURCE,
            manifests::COMMAND
        ),
        (Err(e), _) => panic!(
            "{} missing ({e}): run `cargo xtask generate`",
            manifests::CRD_SOURCE
        ),
        (_, Err(e)) => panic!(
            "{} missing ({e}): run `{}`",
            manifests::CHART_CRD,
            manifests::COMMAND
        ),
    }
}
