//! Where a batch shard's results go (`LLMJOB_OUTPUT_URL`), and writing them there.
//!
//! - An object-store URL (`s3://`, `gs://`, `az://`, `file://`): the object
//!   `{url}/part-{index:05}.jsonl`, written with one `PUT` through the `object_store` crate.
//!   The store is configured from each store's usual variables (`AWS_ACCESS_KEY_ID`,
//!   `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...)
//!   in the environment (a runner run outside Kubernetes), then from the credentials directory
//!   (`LLMJOB_OUTPUT_CREDENTIALS_DIR`: the Secret `spec.output.credentialsSecretRef` names,
//!   mounted one file per key). Of that directory only the files named as a configuration key of
//!   the store the URL selects are read (`object_store`'s own key enums decide, in either
//!   spelling: `AWS_ACCESS_KEY_ID` or `aws_access_key_id`), and they win over the environment;
//!   the others are ignored and named, never read, so a Secret holding `OPENAI_ORG_ID` or
//!   `OTEL_EXPORTER_OTLP_HEADERS` changes nothing but the store.
//! - `configmap://NAME`: the key `part-{index:05}.jsonl` of ConfigMap NAME in the pod's namespace,
//!   written by server-side apply with the pod's service account and one field manager per shard
//!   (`llmjob-runner-shard-{index}`), so shards never remove each other's keys.
//!
//! This module owns the transport only; the lines are made by [`crate::batch`]. Credentials are
//! never logged: errors name the URL, which holds none (a URL with a user or password is refused),
//! or a credentials file by its path, never its contents.

use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;
use object_store::gcp::GoogleConfigKey;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, ObjectStoreScheme, PutPayload};
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
    /// A file of the credentials directory (`LLMJOB_OUTPUT_CREDENTIALS_DIR`) could not be read.
    #[error("cannot write {location}: cannot read the output credentials {path}: {source}")]
    Credentials {
        /// The object's URL.
        location: String,
        /// The directory or file that could not be read (its path, never its contents).
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
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
            OutputError::Kubeconfig { .. } | OutputError::Credentials { .. } => true,
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
    /// wrote. `credentials` is the directory of the object store's configuration
    /// (`LLMJOB_OUTPUT_CREDENTIALS_DIR`), unused by a ConfigMap. Returns the location written.
    pub async fn write(
        &self,
        index: u32,
        body: Vec<u8>,
        credentials: Option<&Path>,
    ) -> Result<String, OutputError> {
        let location = self.location(index);
        match self {
            Output::Store(url) => {
                let store_error = |source| OutputError::Store {
                    location: location.clone(),
                    source,
                };
                let (scheme, _) =
                    ObjectStoreScheme::parse(url).map_err(|e| store_error(e.into()))?;
                let mounted = match credentials {
                    Some(dir) => mounted_config(dir, &scheme).map_err(|(path, source)| {
                        OutputError::Credentials {
                            location: location.clone(),
                            path,
                            source,
                        }
                    })?,
                    None => MountedConfig::default(),
                };
                if !mounted.ignored.is_empty() {
                    // Names only: the ignored files are never read.
                    tracing::warn!(
                        ignored = %mounted.ignored.join(","),
                        "output credentials: ignoring the files that are not configuration keys of the {} store",
                        store_name(&scheme),
                    );
                }
                let (store, prefix) = store_for(url, mounted.options).map_err(store_error)?;
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

/// The store and the prefix an object-store URL names, configured from the process environment
/// (the store's usual variables) and then from `mounted`, the configuration keys of the
/// credentials directory: `parse_url_opts` applies the options in order with the builder's
/// `with_config` (keys it does not know are skipped), so a mounted file wins over the same key in
/// the environment.
fn store_for(
    url: &Url,
    mounted: Vec<(String, String)>,
) -> Result<(Arc<dyn ObjectStore>, StorePath), object_store::Error> {
    let (store, prefix) = object_store::parse_url_opts(url, std::env::vars().chain(mounted))?;
    Ok((Arc::from(store), prefix))
}

/// What the credentials directory gives the store. No `Debug`: it holds the secrets.
#[derive(Default)]
struct MountedConfig {
    /// `(file name, value)` of the files named as a configuration key of the store, in name
    /// order; the value without its trailing newline.
    options: Vec<(String, String)>,
    /// Names of the other files, in name order; never read.
    ignored: Vec<String>,
}

/// The store's name in the warning about ignored files.
fn store_name(scheme: &ObjectStoreScheme) -> &'static str {
    match scheme {
        ObjectStoreScheme::AmazonS3 => "S3",
        ObjectStoreScheme::GoogleCloudStorage => "Google Cloud Storage",
        ObjectStoreScheme::MicrosoftAzure => "Azure Blob Storage",
        ObjectStoreScheme::Local => "local file system",
        _ => "object",
    }
}

/// Whether a file named `name` is a configuration key of the store `scheme` selects, as
/// `object_store`'s key enum of that store parses it (the lower-case spelling, as
/// `parse_url_opts` parses it: `AWS_ACCESS_KEY_ID` and `aws_access_key_id` are one key). A local
/// directory has no configuration keys.
fn is_config_key(scheme: &ObjectStoreScheme, name: &str) -> bool {
    let key = name.to_ascii_lowercase();
    match scheme {
        ObjectStoreScheme::AmazonS3 => key.parse::<AmazonS3ConfigKey>().is_ok(),
        ObjectStoreScheme::GoogleCloudStorage => key.parse::<GoogleConfigKey>().is_ok(),
        ObjectStoreScheme::MicrosoftAzure => key.parse::<AzureConfigKey>().is_ok(),
        _ => false,
    }
}

/// Reads the credentials directory `dir` (a mounted Secret: one file per key) for the store
/// `scheme` selects: the files named as one of its configuration keys, and the names of the
/// others. The kubelet's own entries of a mounted volume (`..data`, `..2025_...`) are skipped.
/// An error names the path that could not be read, never a value.
fn mounted_config(
    dir: &Path,
    scheme: &ObjectStoreScheme,
) -> Result<MountedConfig, (String, std::io::Error)> {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> (String, std::io::Error) + '_ {
        move |e| (path.display().to_string(), e)
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") {
            names.push(name);
        }
    }
    names.sort_unstable();
    let mut config = MountedConfig::default();
    for name in names {
        if !is_config_key(scheme, &name) {
            config.ignored.push(name);
            continue;
        }
        let path = dir.join(&name);
        let mut value = std::fs::read_to_string(&path).map_err(at(&path))?;
        // `kubectl create secret --from-file` keeps the file's final newline.
        value.truncate(value.trim_end_matches(['\n', '\r']).len());
        config.options.push((name, value));
    }
    Ok(config)
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
        let at = out.write(2, b"old\n".to_vec(), None).await.unwrap();
        assert_eq!(at, format!("{url}/part-00002.jsonl"));
        out.write(2, b"{\"a\":1}\n".to_vec(), None).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("out/run/part-00002.jsonl")).unwrap();
        assert_eq!(text, "{\"a\":1}\n");
    }

    /// A credentials directory as the kubelet mounts a Secret: one file per key (here plain
    /// files), and its own `..data` entry.
    fn secret_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        for (name, value) in files {
            std::fs::write(dir.path().join(name), value).unwrap();
        }
        dir
    }

    fn scheme(url: &str) -> ObjectStoreScheme {
        ObjectStoreScheme::parse(&Url::parse(url).unwrap())
            .unwrap()
            .0
    }

    fn names(options: &[(String, String)]) -> Vec<&str> {
        options.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn an_s3_url_reads_only_the_s3_keys_of_the_directory() {
        let dir = secret_dir(&[
            ("AWS_ACCESS_KEY_ID", "AKIAFILE\n"),
            ("aws_secret_access_key", "file-secret\r\n"),
            ("AWS_ENDPOINT", "http://s3.storage:9000\n"),
            ("AWS_ALLOW_HTTP", "true"),
            ("OPENAI_ORG_ID", "org-hijacked"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer hijacked",
            ),
            ("GOOGLE_SERVICE_ACCOUNT_KEY", "{}"),
        ]);
        let config = mounted_config(dir.path(), &scheme("s3://bucket/run")).unwrap();
        assert_eq!(
            names(&config.options),
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_ALLOW_HTTP",
                "AWS_ENDPOINT",
                "aws_secret_access_key"
            ]
        );
        assert_eq!(
            config.ignored,
            [
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "OPENAI_ORG_ID",
                "OTEL_EXPORTER_OTLP_HEADERS"
            ]
        );

        // Applied as `parse_url_opts` applies them, after the environment: the files win, and
        // their trailing newline is gone.
        use object_store::aws::AmazonS3Builder;
        let environment = [
            ("AWS_ACCESS_KEY_ID".to_owned(), "AKIAENV".to_owned()),
            ("AWS_REGION".to_owned(), "eu-west-1".to_owned()),
        ];
        let builder = environment
            .into_iter()
            .chain(config.options)
            .fold(AmazonS3Builder::new(), |b, (k, v)| {
                b.with_config(k.to_ascii_lowercase().parse().unwrap(), v)
            });
        for (key, value) in [
            (AmazonS3ConfigKey::AccessKeyId, "AKIAFILE"),
            (AmazonS3ConfigKey::SecretAccessKey, "file-secret"),
            (AmazonS3ConfigKey::Endpoint, "http://s3.storage:9000"),
            (AmazonS3ConfigKey::Region, "eu-west-1"),
        ] {
            assert_eq!(
                builder.get_config_value(&key).as_deref(),
                Some(value),
                "{key:?}"
            );
        }
    }

    #[test]
    fn gs_and_az_urls_read_only_their_own_keys() {
        let dir = secret_dir(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            (
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "{\"type\":\"service_account\"}\n",
            ),
            ("google_bucket", "b"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "account\n"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5"),
            ("OPENAI_PROJECT_ID", "p"),
        ]);
        let gs = mounted_config(dir.path(), &scheme("gs://bucket/run")).unwrap();
        assert_eq!(
            names(&gs.options),
            ["GOOGLE_SERVICE_ACCOUNT_KEY", "google_bucket"]
        );
        assert_eq!(gs.options[0].1, "{\"type\":\"service_account\"}");
        assert_eq!(
            gs.ignored,
            [
                "AWS_ACCESS_KEY_ID",
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_ACCOUNT_NAME",
                "OPENAI_PROJECT_ID"
            ]
        );
        let az = mounted_config(dir.path(), &scheme("az://container/run")).unwrap();
        assert_eq!(
            names(&az.options),
            ["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCOUNT_NAME"]
        );
        assert_eq!(az.options[1].1, "account");
        assert_eq!(
            az.ignored,
            [
                "AWS_ACCESS_KEY_ID",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "OPENAI_PROJECT_ID",
                "google_bucket"
            ]
        );
        let local = mounted_config(dir.path(), &scheme("file:///results")).unwrap();
        assert!(local.options.is_empty());
        assert_eq!(local.ignored.len(), 6);
    }

    #[tokio::test]
    async fn an_unreadable_credentials_directory_is_a_permanent_error_naming_the_path() {
        let out = parse("s3://bucket/run").unwrap();
        let missing = Path::new("/nonexistent/llmjob-output-credentials");
        let err = out
            .write(0, b"x\n".to_vec(), Some(missing))
            .await
            .unwrap_err();
        assert!(matches!(err, OutputError::Credentials { .. }), "{err}");
        assert!(err.is_permanent());
        let text = err.to_string();
        assert!(
            text.contains("s3://bucket/run/part-00000.jsonl")
                && text.contains("/nonexistent/llmjob-output-credentials"),
            "{text}"
        );

        // A key that cannot be read names its file, never a value.
        let dir = secret_dir(&[("AWS_REGION", "us-east-1")]);
        std::fs::write(dir.path().join("AWS_SECRET_ACCESS_KEY"), [0xff, 0xfe]).unwrap();
        let err = out
            .write(0, b"x\n".to_vec(), Some(dir.path()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}/AWS_SECRET_ACCESS_KEY", dir.path().display())),
            "{text}"
        );
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn a_file_url_ignores_a_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = secret_dir(&[("AWS_ACCESS_KEY_ID", "a")]);
        let url = format!("file://{}/out", dir.path().display());
        parse(&url)
            .unwrap()
            .write(0, b"{}\n".to_vec(), Some(secrets.path()))
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("out/part-00000.jsonl")).unwrap();
        assert_eq!(text, "{}\n");
    }
}
