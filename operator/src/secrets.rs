//! The API-key Secret: the check that it and its key exist before a Job is created, and the
//! mapping from a changed Secret to the LlmJobs waiting for it.
//!
//! It looks at which keys a Secret holds, never at a value: nothing here logs, copies or returns
//! secret data. The pod gets the key only as a `secretKeyRef`.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, SecretKeySelector};

/// Why the API-key Secret is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The Secret does not exist.
    #[error(
        "Secret {namespace}/{name} not found: create it with the API key under key {key:?} \
         (kubectl create secret generic {name} -n {namespace} --from-literal={key}=<API key>); \
         the run starts as soon as it exists"
    )]
    NotFound {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key the LlmJob names.
        key: String,
    },
    /// The Secret exists without the key.
    #[error(
        "Secret {namespace}/{name} has no key {key:?} (its keys: {present}): add the API key under \
         {key:?} or set spec.openai.apiKeySecretRef.key to one of its keys in a new LlmJob"
    )]
    KeyNotFound {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key the LlmJob names.
        key: String,
        /// The keys the Secret has, comma-separated (names only).
        present: String,
    },
    /// The Secret could not be read.
    #[error("reading Secret {namespace}/{name} failed: {source}")]
    Read {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Checks that the Secret and key named by `selector` exist in `namespace`.
pub async fn check(
    client: &Client,
    namespace: &str,
    selector: &SecretKeySelector,
) -> Result<(), SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&selector.name)
        .await
        .map_err(|source| SecretError::Read {
            namespace: namespace.to_owned(),
            name: selector.name.clone(),
            source,
        })?;
    key_present(namespace, selector, secret.as_ref())
}

/// The pure part of [`check`]: which keys the Secret has.
pub fn key_present(
    namespace: &str,
    selector: &SecretKeySelector,
    secret: Option<&Secret>,
) -> Result<(), SecretError> {
    let Some(secret) = secret else {
        return Err(SecretError::NotFound {
            namespace: namespace.to_owned(),
            name: selector.name.clone(),
            key: selector.key.clone(),
        });
    };
    let mut keys: Vec<&str> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .map(String::as_str)
        .collect();
    if keys.contains(&selector.key.as_str()) {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    Err(SecretError::KeyNotFound {
        namespace: namespace.to_owned(),
        name: selector.name.clone(),
        key: selector.key.clone(),
        present: if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        },
    })
}

/// The unfinished LlmJobs of `store` in `namespace` that use the Secret `name`: the ones to
/// reconcile when that Secret changes.
pub fn llmjobs_using(store: &Store<LlmJob>, namespace: &str, name: &str) -> Vec<ObjectRef<LlmJob>> {
    store
        .state()
        .iter()
        .filter(|j| j.namespace().as_deref() == Some(namespace))
        .filter(|j| j.spec.openai.api_key_secret_ref.name == name)
        .filter(|j| {
            !j.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        })
        .map(|j| ObjectRef::from_obj(j.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn selector() -> SecretKeySelector {
        SecretKeySelector {
            name: "openai".into(),
            key: "api-key".into(),
        }
    }

    #[test]
    fn missing_secret_names_namespace_secret_and_key() {
        let err = key_present("team-a", &selector(), None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SecretError::NotFound { .. }));
        assert!(msg.contains("team-a/openai"), "{msg}");
        assert!(msg.contains("\"api-key\""), "{msg}");
        assert!(msg.contains("kubectl create secret"), "{msg}");
    }

    #[test]
    fn missing_key_lists_key_names_only() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "token".to_owned(),
                ByteString(b"sk-very-secret".to_vec()),
            )])),
            ..Secret::default()
        };
        let err = key_present("team-a", &selector(), Some(&secret)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SecretError::KeyNotFound { .. }));
        assert!(msg.contains("its keys: token"), "{msg}");
        assert!(!msg.contains("sk-very-secret"), "never the value: {msg}");
    }

    #[test]
    fn present_key() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "api-key".to_owned(),
                ByteString(b"x".to_vec()),
            )])),
            ..Secret::default()
        };
        assert!(key_present("team-a", &selector(), Some(&secret)).is_ok());
    }
}
