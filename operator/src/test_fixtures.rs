//! YAML fixtures shared by the unit tests.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use llmjob_crds::v1alpha1::LlmJob;

/// An LlmJob from YAML; `apiVersion` and `kind` are added when missing.
pub fn llmjob(yaml: &str) -> LlmJob {
    let mut value: serde_json::Value =
        serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("fixture: {e}\n{yaml}"));
    if let Some(obj) = value.as_object_mut() {
        obj.entry("apiVersion")
            .or_insert_with(|| "llmjob.dev/v1alpha1".into());
        obj.entry("kind").or_insert_with(|| "LlmJob".into());
    }
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fixture: {e}\n{yaml}"))
}

/// A Job from YAML.
pub fn job(yaml: &str) -> Job {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("fixture: {e}\n{yaml}"))
}

/// A Pod from YAML.
pub fn pod(yaml: &str) -> Pod {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("fixture: {e}\n{yaml}"))
}

/// `full` read as a watch cache reads it (e.g. a `Pod` as a [`crate::cache::CachedPod`]).
pub fn cached<T: serde::de::DeserializeOwned>(full: &impl serde::Serialize) -> T {
    serde_json::from_value(serde_json::to_value(full).unwrap_or_else(|e| panic!("fixture: {e}")))
        .unwrap_or_else(|e| panic!("fixture: {e}"))
}
