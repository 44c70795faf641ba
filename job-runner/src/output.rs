//! Where a batch shard's results go (`LLMJOB_OUTPUT_URL`), and writing them there.
//!
//! - An object-store URL (`s3://`, `gs://`, `az://`, `file://`): the object
//!   `{url}/part-{index:05}.jsonl`, written with one `PUT` through the `object_store` crate,
//!   whose builders read each store's usual variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
//!   `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...), which the pod
//!   gets from the Secret `spec.output.credentialsSecretRef` names.
//! - `configmap://NAME`: the key `part-{index:05}.jsonl` of ConfigMap NAME in the pod's namespace,
//!   written by server-side apply with the pod's service account and one field manager per shard
//!   (`llmjob-runner-shard-{index}`), so shards never remove each other's keys.
//!
//! This module owns the transport only; the lines are made by [`crate::batch`]. Credentials are
//! never logged: errors name the URL, which holds none (a URL with a user or password is refused).

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use url::Url;

/// The field manager prefix of the ConfigMap writer (`llmjob-runner-shard-{index}`).
pub const FIELD_MANAGER_PREFIX: &str = "llmjob-runner-shard-";

/// Where results go, as `LLMJOB_OUTPUT_URL` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An object store (`s3://bucket/prefix`, `gs://`, `az://`, `file:///dir`).
    Store(Url),
    /// A ConfigMap of the pod's namespace (`configmap://NAME`).
    ConfigMap(String),
}

/// Why the results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The object store refused or failed the write.
    #[error("cannot write {location}: {source}")]
    Store {
        /// The object's URL.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The Kubernetes API refused or failed the write.
    #[error("cannot write {location}: {source}")]
    ConfigMap {
        /// `configmap://NAME/KEY`.
        location: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No in-cluster (or kubeconfig) credentials to reach the Kubernetes API.
    #[error("cannot write {location}: no Kubernetes client configuration: {source}")]
    Kubeconfig {
        /// `configmap://NAME/KEY`.
        location: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl OutputError {
    /// Whether a retry of the pod could not succeed either: the store or the API refused the
    /// credentials or the permission, or the configuration is wrong.
    pub fn is_permanent(&self) -> bool {
        match self {
            OutputError::Store { source, .. } => matches!(
                source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
            ),
            OutputError::ConfigMap { source, .. } => matches!(
                source,
                kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 404 | 422)
            ),
            OutputError::Kubeconfig { .. } => true,
        }
    }
}

/// Parses `LLMJOB_OUTPUT_URL`: `s3://`, `gs://`, `az://` with a bucket (container), `file://`
/// with an absolute path, or `configmap://NAME` with a valid ConfigMap name.
pub fn parse(value: &str) -> Result<Output, String> {
    if let Some(name) = value.strip_prefix("configmap://") {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        return if valid {
            Ok(Output::ConfigMap(name.to_owned()))
        } else {
            Err("not a ConfigMap name (lower-case letters, digits, '-' and '.')".to_owned())
        };
    }
    let url = Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials do not belong in the URL: put them in the output Secret".to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL has a query or fragment".to_owned());
    }
    match url.scheme() {
        "s3" | "gs" | "az" if url.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(Output::Store(url))
        }
        "s3" | "gs" | "az" => Err("the URL names no bucket (container)".to_owned()),
        "file" if url.host_str().is_none_or(str::is_empty) && url.path().len() > 1 => {
            Ok(Output::Store(url))
        }
        "file" => Err("a file URL needs an absolute directory, e.g. file:///results".to_owned()),
        other => Err(format!("unsupported scheme {other}")),
    }
}

/// The object name of shard `index`'s results.
pub fn part_name(index: u32) -> String {
    format!("part-{index:05}.jsonl")
}

impl Output {
    /// Where shard `index`'s results go: the object's URL, or `configmap://NAME/KEY`.
    pub fn location(&self, index: u32) -> String {
        match self {
            Output::Store(url) => format!(
                "{}/{}",
                url.as_str().trim_end_matches('/'),
                part_name(index)
            ),
            Output::ConfigMap(name) => format!("configmap://{name}/{}", part_name(index)),
        }
    }

    /// Writes `body` as shard `index`'s results, replacing what a previous attempt of the shard
    /// wrote. Returns the location written.
    pub async fn write(&self, index: u32, body: Vec<u8>) -> Result<String, OutputError> {
        let location = self.location(index);
        match self {
            Output::Store(url) => {
                let store_error = |source| OutputError::Store {
                    location: location.clone(),
                    source,
                };
                let (store, prefix) = store_for(url).map_err(store_error)?;
                let path = prefix.clone().join(part_name(index));
                store
                    .put(&path, PutPayload::from(body))
                    .await
                    .map_err(store_error)?;
            }
            Output::ConfigMap(name) => write_configmap(name, index, body, &location).await?,
        }
        Ok(location)
    }
}

/// The store and the prefix an object-store URL names; the store reads its credentials and
/// endpoint from the process environment (the store's usual variables).
fn store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath), object_store::Error> {
    let (store, prefix) = object_store::parse_url_opts(url, std::env::vars())?;
    Ok((Arc::from(store), prefix))
}

async fn write_configmap(
    name: &str,
    index: u32,
    body: Vec<u8>,
    location: &str,
) -> Result<(), OutputError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};

    // kube's rustls and reqwest's rustls enable two crypto providers: name one for the process
    // (an error only means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|source| OutputError::Kubeconfig {
            location: location.to_owned(),
            source,
        })?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let text = String::from_utf8_lossy(&body).into_owned();
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { part_name(index): text },
    });
    let params = PatchParams::apply(&format!("{FIELD_MANAGER_PREFIX}{index}")).force();
    api.patch(name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| OutputError::ConfigMap {
            location: location.to_owned(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse("configmap://results-1").unwrap(),
            Output::ConfigMap("results-1".into())
        );
        for ok in [
            "s3://bucket/prefix",
            "s3://bucket",
            "gs://bucket/a/b",
            "az://container/p",
            "file:///tmp/out",
        ] {
            assert!(matches!(parse(ok), Ok(Output::Store(_))), "{ok}");
        }
        for (bad, reason) in [
            ("configmap://", "ConfigMap name"),
            ("configmap://Bad_Name", "ConfigMap name"),
            ("s3://key:secret@bucket/x", "credentials"),
            ("s3:///x", "bucket"),
            ("file://", "absolute"),
            ("http://example.com/x", "unsupported scheme http"),
            ("s3://b/x?sig=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn locations() {
        let out = parse("s3://bucket/run-1/").unwrap();
        assert_eq!(out.location(3), "s3://bucket/run-1/part-00003.jsonl");
        let out = parse("configmap://r").unwrap();
        assert_eq!(out.location(12), "configmap://r/part-00012.jsonl");
    }

    #[tokio::test]
    async fn a_file_url_gets_one_object_per_shard_replaced_on_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/out/run", dir.path().display());
        let out = parse(&url).unwrap();
        let at = out.write(2, b"old\n".to_vec()).await.unwrap();
        assert_eq!(at, format!("{url}/part-00002.jsonl"));
        out.write(2, b"{\"a\":1}\n".to_vec()).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("out/run/part-00002.jsonl")).unwrap();
        assert_eq!(text, "{\"a\":1}\n");
    }
}
