//! A real, local test environment for llmjob-operator: etcd, kube-apiserver,
//! kube-controller-manager, a fake kubelet that runs pods as local processes (or a real node:
//! containerd, runc, the kubelet, kube-proxy, CoreDNS, kube-scheduler), and a custom
//! OpenTelemetry Collector writing JSON lines; on demand a real Prometheus and Jaeger behind the
//! reference collector pipelines ([`backends`]); a real S3-compatible object store ([`s3`],
//! versitygw). Used by the integration tests and by the demo.
//!
//! The binaries come from `tools/ensure-tools.sh` (see [`tools`]); this crate never downloads
//! anything and fails loudly, naming that script, when a tool is missing.

pub mod backends;
pub mod certs;
pub mod cluster;
pub mod collector;
pub mod crd;
pub mod env;
pub mod faultproxy;
pub mod http;
pub mod images;
pub mod kubelet;
pub mod node;
pub mod process;
pub mod promql;
pub mod s3;
pub mod telemetry;
pub mod tools;
pub mod wait;
