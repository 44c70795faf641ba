//! The committed CRD YAML must be what `crdgen` prints from the Rust types.

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/llmjobs.llmjob.dev.yaml"
    ))
    .unwrap_or_default();
    let generated = serde_norway::to_string(&llmjob_crds::v1alpha1::crd()).unwrap_or_default();
    assert!(
        committed.ends_with(&generated) && !generated.is_empty(),
        "crds/llmjobs.llmjob.dev.yaml is out of date: run `cargo xtask generate` and commit the result"
    );
}
