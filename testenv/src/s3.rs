//! A real S3-compatible object store: versitygw (Apache-2.0, built from source by
//! `tools/ensure-tools.sh`) serving a fresh directory through its posix backend, with one bucket
//! and a random root credential. The batch tests and the demo point LlmJobs' `spec.output.url` at
//! it (`s3://<bucket>/<prefix>`) and read what the runner pods wrote back through the S3 API
//! ([`S3Server::list`], [`S3Server::get`], over the `object_store` crate the runner writes with).
//!
//! Pods on the real node reach it through a Service without a selector, as they reach the replay
//! server: [`S3Server::expose`]. The credentials go to pods in a Secret ([`S3Server::secret`]),
//! holding the configuration keys `object_store` reads (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, ...).
//!
//! This module owns starting, probing and stopping versitygw; it never writes objects itself
//! (what is in the bucket is what the code under test put there), and never logs the secret.
//!
//! Where things go: `<target>/testenv-logs/s3-<millis>-<pid>[-n]/` holds `versitygw.log` and
//! `data/<bucket>/` (the posix backend's files: a bucket is a top-level directory, an object a
//! file under it).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::node::services;
use crate::process::{self, ManagedProcess, ProcessError, ProcessSpec, unique_dir};
use crate::tools::{self, MissingTool};

/// How long [`S3Server::start`] waits for versitygw to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`S3Server::shutdown`] waits after SIGTERM before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The region versitygw signs for (object_store's default too).
pub const REGION: &str = "us-east-1";
/// The path versitygw answers health checks on.
const HEALTH_PATH: &str = "/health";
/// Lines of versitygw's log quoted in errors.
const LOG_TAIL_LINES: usize = 30;
/// The field manager of the objects [`S3Server::expose`] applies.
const FIELD_MANAGER: &str = "testenv-s3";

/// Errors from starting, exposing, reading or stopping the S3 server.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// `versitygw` is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// The data directory could not be created.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No free port could be found.
    #[error("cannot pick a free port: {0}")]
    Port(#[source] std::io::Error),
    /// Spawning or stopping versitygw failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// versitygw exited or did not answer in time.
    #[error("versitygw did not become ready: {reason}; log {log}:\n{tail}")]
    NotReady {
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The S3 client could not be built, or a request through it failed.
    #[error("{what}: {source}")]
    Store {
        /// The request.
        what: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The Service, its EndpointSlice or the credentials Secret could not be applied.
    #[error("cannot expose the S3 server in namespace {namespace}: {reason}")]
    Expose {
        /// The namespace.
        namespace: String,
        /// The API error.
        reason: String,
    },
    /// The server listens on an address a Service cannot point at (not IPv4).
    #[error("the S3 server listens on {0}, which an EndpointSlice of type IPv4 cannot name")]
    NotIpv4(SocketAddr),
}

/// A running versitygw with one bucket. Killed on drop; [`S3Server::shutdown`] stops it
/// gracefully.
pub struct S3Server {
    process: Option<ManagedProcess>,
    addr: SocketAddr,
    dir: PathBuf,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for S3Server {
    // By hand: the secret key stays out of every Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("addr", &self.addr)
            .field("dir", &self.dir)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts versitygw on a free loopback port under `<target>/testenv-logs/`, with bucket
    /// `bucket`.
    pub async fn start(bucket: &str) -> Result<Self, S3Error> {
        Self::start_in(
            &tools::target_dir().join("testenv-logs"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            bucket,
        )
        .await
    }

    /// [`S3Server::start`] in a new directory under `parent`, listening on `listen` (a real
    /// node's pods reach the host on its non-loopback address, [`crate::node::Node::host_ip`]).
    pub async fn start_in(parent: &Path, listen: IpAddr, bucket: &str) -> Result<Self, S3Error> {
        let bin = tools::bin("versitygw")?;
        let dir = unique_dir(parent, "s3");
        let data = dir.join("data");
        // The posix backend's layout: a bucket is a top-level directory of the served root, owned
        // by the root account (an empty ACL), exactly what CreateBucket would make.
        let bucket_dir = data.join(bucket);
        std::fs::create_dir_all(&bucket_dir).map_err(|source| S3Error::Prepare {
            path: bucket_dir.clone(),
            source,
        })?;
        let port = process::free_loopback_port().map_err(S3Error::Port)?;
        let addr = SocketAddr::new(listen, port);
        let access_key_id = format!("testenv{}", &random_hex()[..12]);
        let secret_access_key = format!("{}{}", random_hex(), random_hex());
        // The credential goes in the environment, never on the command line (`ps` shows that).
        let spec = ProcessSpec::new("versitygw", &bin, dir.join("versitygw.log"))
            .env("ROOT_ACCESS_KEY_ID", &access_key_id)
            .env("ROOT_SECRET_ACCESS_KEY", &secret_access_key)
            .env("VGW_REGION", REGION)
            .arg("--port")
            .arg(addr.to_string())
            .arg("--health")
            .arg(HEALTH_PATH)
            .arg("posix")
            // Metadata (ETags, content types) in a sidecar directory rather than in extended
            // attributes, which not every filesystem under the target directory has.
            .arg("--sidecar")
            .arg(dir.join("meta"))
            .arg(&data)
            .current_dir(&dir);
        let prepare_meta = dir.join("meta");
        std::fs::create_dir_all(&prepare_meta).map_err(|source| S3Error::Prepare {
            path: prepare_meta,
            source,
        })?;
        let process = ManagedProcess::spawn(spec)?;
        let store = build_store(
            &format!("http://{addr}"),
            bucket,
            &access_key_id,
            &secret_access_key,
        )?;
        let mut server = Self {
            process: Some(process),
            addr,
            dir,
            bucket: bucket.to_owned(),
            access_key_id,
            secret_access_key,
            store,
        };
        server.wait_ready().await?;
        tracing::debug!(dir = %server.dir.display(), addr = %server.addr, bucket, "versitygw ready");
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), S3Error> {
        let url = format!("{}{HEALTH_PATH}", self.endpoint());
        let http = reqwest::Client::new();
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        let log = process.log_path().to_owned();
        let mut process = Some(process);
        let ready = crate::wait::until_ok_or_abort("versitygw", START_TIMEOUT, || {
            let exited = process.as_mut().map(|p| p.try_exit_status()).transpose();
            let (http, url) = (http.clone(), url.clone());
            async move {
                match exited {
                    Err(e) => Err(e.to_string()),
                    Ok(Some(Some(status))) => Err(format!("exited with {status}")),
                    Ok(_) => Ok(match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("{url}: {}", r.status())),
                        Err(e) => Err(format!("{url}: {e}")),
                    }),
                }
            }
        })
        .await;
        let reason = match ready {
            Ok(Ok(())) => return Ok(()),
            Err(reason) => reason,
            Ok(Err(last)) => format!("not answering after {START_TIMEOUT:?}: {last}"),
        };
        Err(S3Error::NotReady {
            reason,
            tail: process::log_tail(&log, LOG_TAIL_LINES),
            log,
        })
    }

    /// The S3 endpoint from the host, e.g. `http://127.0.0.1:40123` (path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address versitygw listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The `s3://` URL of `prefix` in the bucket, e.g. `s3://results/run-1` (an LlmJob's
    /// `spec.output.url`).
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
    }

    /// The access key id of the root account.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key of the root account (never log it).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The directory holding the log and the served data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The variables `object_store`'s `AmazonS3Builder::from_env` reads to reach this server at
    /// `endpoint` (the host's [`S3Server::endpoint`], or the in-cluster URL [`S3Server::expose`]
    /// returns): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`.
    pub fn credentials_env(&self, endpoint: &str) -> BTreeMap<String, String> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
            ("AWS_ENDPOINT", endpoint),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The Secret `namespace/name` holding [`S3Server::credentials_env`] for `endpoint`: what an
    /// LlmJob's `spec.output.credentialsSecretRef` names (the pod mounts it as a directory, one
    /// file per key, and the runner reads these store configuration keys from it).
    pub fn secret(&self, namespace: &str, name: &str, endpoint: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            string_data: Some(self.credentials_env(endpoint)),
            ..Secret::default()
        }
    }

    /// Makes the server reachable from pods on the real node: Service `namespace/name` (port 80,
    /// no selector) with an EndpointSlice naming the host address it listens on (see
    /// [`services::host_http_service`]), and the Secret `namespace/secret_name` of
    /// [`S3Server::secret`] for the in-cluster endpoint. Returns that endpoint,
    /// `http://<name>.<namespace>.svc`. The server must listen on the node's host address
    /// ([`S3Server::start_in`]); the caller waits for kube-proxy
    /// ([`crate::node::Node::wait_for_service`]) before the first pod relies on it.
    pub async fn expose(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        secret_name: &str,
    ) -> Result<String, S3Error> {
        let IpAddr::V4(address) = self.addr.ip() else {
            return Err(S3Error::NotIpv4(self.addr));
        };
        let expose_err = |reason: String| S3Error::Expose {
            namespace: namespace.to_owned(),
            reason,
        };
        let endpoint =
            services::host_http_service(client, namespace, name, address, self.addr.port())
                .await
                .map_err(|e| expose_err(e.to_string()))?;
        let secret = self.secret(namespace, secret_name, &endpoint);
        Api::<Secret>::namespaced(client.clone(), namespace)
            .patch(
                secret_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            // The error names the object, never its data.
            .map_err(|e| expose_err(format!("cannot apply Secret {secret_name}: {e}")))?;
        Ok(endpoint)
    }

    /// The keys of the objects under `prefix` (all of them for `""`), sorted, through the S3 API
    /// (ListObjectsV2).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let prefix = prefix.trim_matches('/');
        let location = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let mut keys: Vec<String> = self
            .store
            .list(location.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|source| S3Error::Store {
                what: format!("listing s3://{}/{prefix}", self.bucket),
                source,
            })?;
        keys.sort();
        Ok(keys)
    }

    /// The content of object `key`, through the S3 API (GetObject).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let what = format!("reading s3://{}/{key}", self.bucket);
        let store_err = |source| S3Error::Store {
            what: what.clone(),
            source,
        };
        let result = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(store_err)?;
        Ok(result.bytes().await.map_err(store_err)?.to_vec())
    }

    /// The lines of every object under `prefix`, objects in key order (e.g. the JSON Lines of a
    /// batch's `part-00000.jsonl`, `part-00001.jsonl`, ...).
    pub async fn lines(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut lines = Vec::new();
        for key in self.list(prefix).await? {
            let body = self.get(&key).await?;
            lines.extend(String::from_utf8_lossy(&body).lines().map(str::to_owned));
        }
        Ok(lines)
    }

    /// Stops versitygw: SIGTERM, then SIGKILL after [`SHUTDOWN_GRACE`].
    pub async fn shutdown(mut self) -> Result<(), S3Error> {
        if let Some(process) = self.process.take() {
            process.stop(SHUTDOWN_GRACE).await?;
        }
        Ok(())
    }
}

/// The S3 client of the assertions: path-style requests to `endpoint`, plain HTTP allowed.
fn build_store(
    endpoint: &str,
    bucket: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> Result<Arc<dyn ObjectStore>, S3Error> {
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region(REGION)
        .with_access_key_id(access_key_id)
        .with_secret_access_key(secret_access_key)
        .with_allow_http(true)
        .build()
        .map_err(|source| S3Error::Store {
            what: format!("building the S3 client for {endpoint}"),
            source,
        })?;
    Ok(Arc::new(store))
}

/// 16 hex digits from the standard library's per-process random hasher keys: credentials of a
/// throwaway test server, not cryptographic secrets.
fn random_hex() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_differs_between_calls() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
