//! The API-key Secret: the check that it and its key exist before a Job is created, and the
//! mapping from a changed Secret to the LlmJobs waiting for it.
//!
//! It looks at which keys a Secret holds, never at a value: nothing here logs, copies or returns
//! secret data. The pod gets the key only as a `secretKeyRef`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, SecretKeySelector};

use crate::events::Reason;

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

impl SecretError {
    /// The category of the problem (see [`Reason`]).
    pub fn reason(&self) -> Reason {
        match self {
            SecretError::NotFound { .. } => Reason::SecretNotFound,
            SecretError::KeyNotFound { .. } => Reason::SecretKeyNotFound,
            SecretError::Read { .. } => Reason::SecretReadFailed,
        }
    }

    /// Whether the Secret or its key is missing: the LlmJob waits for the user (a read that
    /// failed is retried instead).
    pub fn is_missing(&self) -> bool {
        !matches!(self, SecretError::Read { .. })
    }
}

/// The key names of the API-key Secrets checked so far, each remembered with the Secret's
/// `resourceVersion`, so that a thousand LlmJobs naming one Secret cost one read of it.
///
/// The scope's metadata-only watch of Secrets (`meta`) says whether a Secret exists and which
/// version it is at; only a Secret missing from it, or at a version not read yet, is read from the
/// API server. Only key names are kept, never a value.
#[derive(Clone, Default)]
pub struct SecretKeys {
    meta: Option<Store<PartialObjectMeta<Secret>>>,
    known: Arc<Mutex<HashMap<(String, String), Known>>>,
}

/// The key names of one version of a Secret.
struct Known {
    resource_version: Option<String>,
    keys: Vec<String>,
}

impl SecretKeys {
    /// Key names checked against the watch cache `meta` of the scope's Secrets.
    pub fn new(meta: Store<PartialObjectMeta<Secret>>) -> Self {
        SecretKeys {
            meta: Some(meta),
            known: Arc::default(),
        }
    }

    /// The key names of the Secret, if the cache knows its current version.
    fn cached(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let meta = self
            .meta
            .as_ref()?
            .get(&ObjectRef::new(name).within(namespace))?;
        let known = self.known.lock().ok()?;
        let entry = known.get(&(namespace.to_owned(), name.to_owned()))?;
        (entry.resource_version.is_some() && entry.resource_version == meta.resource_version())
            .then(|| entry.keys.clone())
    }

    fn remember(&self, namespace: &str, name: &str, secret: Option<&Secret>) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let key = (namespace.to_owned(), name.to_owned());
        match secret {
            Some(s) => {
                known.insert(
                    key,
                    Known {
                        resource_version: s.resource_version(),
                        keys: key_names(s),
                    },
                );
            }
            None => {
                known.remove(&key);
            }
        }
    }

    /// Checks that the Secret and key named by `selector` exist in `namespace`: from the cache
    /// when it holds the Secret's current version, else by reading the Secret.
    pub async fn check(
        &self,
        client: &Client,
        namespace: &str,
        selector: &SecretKeySelector,
    ) -> Result<(), SecretError> {
        if let Some(keys) = self.cached(namespace, &selector.name) {
            return key_present(namespace, selector, Some(&keys));
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = api
            .get_opt(&selector.name)
            .await
            .map_err(|source| SecretError::Read {
                namespace: namespace.to_owned(),
                name: selector.name.clone(),
                source,
            })?;
        self.remember(namespace, &selector.name, secret.as_ref());
        key_present(
            namespace,
            selector,
            secret.as_ref().map(key_names).as_deref(),
        )
    }
}

/// The names of the keys a Secret holds (`data` and `stringData`), sorted, without duplicates.
fn key_names(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The pure part of [`SecretKeys::check`]: whether the Secret (`None`: missing), given by the
/// names of its keys, has the key `selector` names.
pub fn key_present(
    namespace: &str,
    selector: &SecretKeySelector,
    keys: Option<&[String]>,
) -> Result<(), SecretError> {
    let Some(keys) = keys else {
        return Err(SecretError::NotFound {
            namespace: namespace.to_owned(),
            name: selector.name.clone(),
            key: selector.key.clone(),
        });
    };
    if keys.contains(&selector.key) {
        return Ok(());
    }
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
        let err = key_present("team-a", &selector(), Some(&key_names(&secret))).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SecretError::KeyNotFound { .. }));
        assert!(msg.contains("its keys: token"), "{msg}");
        assert!(!msg.contains("sk-very-secret"), "never the value: {msg}");
    }

    #[test]
    fn key_names_are_remembered_per_version() {
        let (meta, mut writer) = kube::runtime::reflector::store::<PartialObjectMeta<Secret>>();
        let keys = SecretKeys::new(meta);
        let at = |rv: &str| {
            let mut m = PartialObjectMeta::<Secret>::default();
            m.metadata.name = Some("openai".into());
            m.metadata.namespace = Some("team-a".into());
            m.metadata.resource_version = Some(rv.into());
            kube::runtime::watcher::Event::Apply(m)
        };
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                resource_version: Some("1".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "api-key".to_owned(),
                ByteString(b"sk-very-secret".to_vec()),
            )])),
            ..Secret::default()
        };
        // Not read yet: nothing known.
        writer.apply_watcher_event(&at("1"));
        assert_eq!(keys.cached("team-a", "openai"), None);
        keys.remember("team-a", "openai", Some(&secret));
        assert_eq!(
            keys.cached("team-a", "openai"),
            Some(vec!["api-key".to_owned()])
        );
        // A new version must be read again.
        writer.apply_watcher_event(&at("2"));
        assert_eq!(keys.cached("team-a", "openai"), None);
        // Gone from the watch: read again (to say "not found" with certainty).
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Delete(PartialObjectMeta::<
            Secret,
        > {
            metadata: kube::api::ObjectMeta {
                name: Some("openai".into()),
                namespace: Some("team-a".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        assert_eq!(keys.cached("team-a", "openai"), None);
        // Without a watch cache every check reads the Secret.
        let uncached = SecretKeys::default();
        uncached.remember("team-a", "openai", Some(&secret));
        assert_eq!(uncached.cached("team-a", "openai"), None);
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
        assert!(key_present("team-a", &selector(), Some(&key_names(&secret))).is_ok());
    }
}
