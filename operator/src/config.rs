//! The operator's configuration: command-line flags with `LLMJOB_*` environment fallbacks.
//!
//! Owns parsing and defaults only. The Helm chart passes exactly these flags
//! (`charts/llmjob-operator/templates/deployment.yaml`); a flag added here must have a default so
//! an older chart keeps working. Nothing here talks to the cluster.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use llmjob_crds::env::{self, Var};
use llmjob_crds::v1alpha1::OtlpProtocol;

use crate::trace_url::TraceUrlTemplate;
use crate::validate::{DEFAULT_CLUSTER_DOMAIN, TenantPolicy};

/// The runner image used when `--runner-image` is not given: the job-runner of the same version.
pub const DEFAULT_RUNNER_IMAGE: &str = concat!(
    "ghcr.io/llmjob-dev/llmjob-runner:",
    env!("CARGO_PKG_VERSION")
);

/// The default of a variable of the runner's contract (`""` for one without a default).
const fn contract_default(var: Var) -> &'static str {
    match var.default {
        Some(value) => value,
        None => "",
    }
}

/// The OTLP endpoint of runs whose LlmJob sets none, when `--default-otlp-endpoint` is not given
/// (the job-runner's own default, and the chart's).
pub const DEFAULT_OTLP_ENDPOINT: &str = contract_default(env::OTEL_EXPORTER_OTLP_ENDPOINT);

/// `service.name` of runs whose LlmJob sets none (the job-runner's own default).
pub const DEFAULT_SERVICE_NAME: &str = contract_default(env::OTEL_SERVICE_NAME);

/// `deployment.environment.name` of runs whose LlmJob sets none (the job-runner's own default).
pub const DEFAULT_ENVIRONMENT: &str = contract_default(env::DEPLOYMENT_ENVIRONMENT);

/// `--max-concurrent-reconciles` when not given: enough to keep the API server busy creating
/// Jobs (at 10,000 LlmJobs, creation is bound by the API server, not by this), few enough that
/// the operator's connections and memory stay bounded (docs/benchmarks.md).
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 32;

/// The operator's configuration.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "llmjob-operator",
    version,
    about = "Runs LlmJobs (llmjob.dev/v1alpha1) as traced Kubernetes Jobs.",
    // A flag given twice takes the last value, so a kustomize overlay can append args to the
    // Deployment's list instead of rewriting it.
    args_override_self = true
)]
pub struct Config {
    /// Image of the job-runner that each LlmJob's pod runs.
    #[arg(long, env = "LLMJOB_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,

    /// Pull policy of the runner container: IfNotPresent, Always or Never.
    #[arg(
        long,
        env = "LLMJOB_RUNNER_IMAGE_PULL_POLICY",
        value_enum,
        default_value_t = PullPolicy::IfNotPresent
    )]
    pub runner_image_pull_policy: PullPolicy,

    /// OTLP endpoint of runs whose LlmJob sets no spec.telemetry.endpoint.
    #[arg(long, env = "LLMJOB_DEFAULT_OTLP_ENDPOINT", default_value = DEFAULT_OTLP_ENDPOINT)]
    pub default_otlp_endpoint: String,

    /// OTLP protocol of runs whose LlmJob sets no spec.telemetry.protocol: grpc or http/protobuf.
    #[arg(
        long,
        env = "LLMJOB_DEFAULT_OTLP_PROTOCOL",
        default_value = "grpc",
        value_parser = otlp_protocol_parser()
    )]
    pub default_otlp_protocol: OtlpProtocol,

    /// `deployment.environment.name` of runs whose LlmJob sets no spec.telemetry.environment.
    #[arg(
        long,
        env = "LLMJOB_DEFAULT_ENVIRONMENT",
        default_value = DEFAULT_ENVIRONMENT
    )]
    pub default_environment: String,

    /// `service.name` of runs whose LlmJob sets no spec.telemetry.serviceName.
    #[arg(long, env = "LLMJOB_DEFAULT_SERVICE_NAME", default_value = DEFAULT_SERVICE_NAME)]
    pub default_service_name: String,

    /// Namespaces to watch, comma-separated; empty means every namespace. With a list the
    /// operator runs one watch per namespace, so namespaced Roles are enough.
    #[arg(
        long,
        env = "LLMJOB_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,

    /// Address of the HTTP server: /metrics, /healthz, /readyz.
    #[arg(long, env = "LLMJOB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Serve /metrics over HTTPS on this address instead of on --http-addr, to clients whose
    /// bearer token the API server authenticates (TokenReview) and allows `get` on the
    /// non-resource URL /metrics (SubjectAccessReview). The health endpoints stay on
    /// --http-addr. Unset: /metrics is plain HTTP on --http-addr.
    #[arg(long, env = "LLMJOB_METRICS_SECURE_ADDR")]
    pub metrics_secure_addr: Option<SocketAddr>,

    /// Directory holding the HTTPS metrics server's `tls.crt` and `tls.key` (PEM), e.g. a
    /// mounted cert-manager or `kubernetes.io/tls` Secret. Unset: a self-signed certificate is
    /// generated at start.
    #[arg(long, env = "LLMJOB_METRICS_CERT_DIR")]
    pub metrics_cert_dir: Option<std::path::PathBuf>,

    /// Elect a leader through a Lease, so that only one replica reconciles (`--leader-elect=true`).
    #[arg(
        long,
        env = "LLMJOB_LEADER_ELECT",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LLMJOB_LEADER_ELECTION_LEASE_NAME",
        default_value = "llmjob-operator"
    )]
    pub leader_election_lease_name: String,

    /// Namespace of the leader-election Lease (default: the operator's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// Identity of this replica in the Lease (default: the pod name, else the host name with
    /// the process id and start time).
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,

    /// URL of a run's trace in your trace UI, with `{traceId}` where the trace id goes, e.g.
    /// `http://jaeger:16686/trace/{traceId}`: fills `status.traceURL` and the Succeeded and
    /// Failed events. Must be an absolute http(s) URL. Not given: no trace links.
    #[arg(long, env = "LLMJOB_TRACE_URL_TEMPLATE", value_parser = trace_url_parser)]
    pub trace_url_template: Option<TraceUrlTemplate>,

    /// ServiceAccount of runner pods whose LlmJob sets no spec.pod.serviceAccountName (it must
    /// exist in each namespace). Empty: the namespace's `default`, with no token mounted. LlmJobs
    /// may always name this one.
    #[arg(long, env = "LLMJOB_RUNNER_SERVICE_ACCOUNT", default_value = "")]
    pub runner_service_account: String,

    /// Allow spec.pod.env entries with valueFrom.secretKeyRef / configMapKeyRef in every
    /// namespace (otherwise only where the namespace has the label
    /// `llmjob.dev/allow-env-refs=true`).
    #[arg(long, env = "LLMJOB_ALLOW_ENV_REFS", default_value_t = false, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_env_refs: bool,

    /// Allow any ServiceAccount in spec.pod.serviceAccountName in every namespace (otherwise
    /// only the runner's, or any where the namespace has `llmjob.dev/allow-service-accounts=true`).
    #[arg(long, env = "LLMJOB_ALLOW_SERVICE_ACCOUNTS", default_value_t = false, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_service_accounts: bool,

    /// Allow a plain-http spec.openai.baseURL to a host outside the cluster in every namespace
    /// (otherwise only where the namespace has `llmjob.dev/allow-insecure-base-url=true`).
    #[arg(long, env = "LLMJOB_ALLOW_INSECURE_BASE_URL", default_value_t = false, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_insecure_base_url: bool,

    /// The cluster's DNS domain: a plain-http baseURL to `*.svc` or `*.svc.<domain>` stays in the
    /// cluster.
    #[arg(long, env = "LLMJOB_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// Reconciles in flight at once, per watched namespace (or for the cluster): 0 means no
    /// bound. Each reconcile in flight may hold its own HTTP/1.1 connection to the API server,
    /// so the bound caps the operator's connections and memory when thousands of LlmJobs
    /// change at once; LlmJobs past it wait their turn, one reconcile each.
    #[arg(
        long,
        env = "LLMJOB_MAX_CONCURRENT_RECONCILES",
        default_value_t = DEFAULT_MAX_CONCURRENT_RECONCILES
    )]
    pub max_concurrent_reconciles: u16,

    /// Log format on stderr: text or json.
    #[arg(long, env = "LLMJOB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Something else than running the operator (none: run it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `llmjob-operator <command>` does instead of running the operator.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Check a running operator and exit (the Helm chart's `helm test`): the LlmJob CRD is
    /// served and the operator's Deployment has a ready replica. Exit 0 when healthy, 1 with the
    /// reason on stderr.
    Check {
        /// Namespace of the operator's Deployment (LlmJobs are listed there too).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        /// Name of the operator's Deployment.
        #[arg(long)]
        deployment: String,
    },
}

impl Config {
    /// The namespaces to watch; `None` means all of them.
    pub fn namespaces(&self) -> Option<Vec<String>> {
        let mut list: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        list.sort();
        list.dedup();
        (!list.is_empty()).then_some(list)
    }

    /// What a run's pod gets when its LlmJob leaves a field out.
    pub fn job_defaults(&self) -> JobDefaults {
        JobDefaults {
            runner_image: self.runner_image.clone(),
            pull_policy: self.runner_image_pull_policy,
            otlp_endpoint: self.default_otlp_endpoint.clone(),
            otlp_protocol: self.default_otlp_protocol,
            environment: self.default_environment.clone(),
            service_name: self.default_service_name.clone(),
            service_account: self.runner_service_account(),
        }
    }

    /// The tenant policy the flags set (cluster-wide; namespace labels loosen it further).
    pub fn tenant_policy(&self) -> TenantPolicy {
        TenantPolicy {
            allow_env_refs: self.allow_env_refs,
            allow_service_accounts: self.allow_service_accounts,
            allow_insecure_base_url: self.allow_insecure_base_url,
            runner_service_account: self.runner_service_account(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    /// `--runner-service-account`, `None` when empty.
    fn runner_service_account(&self) -> Option<String> {
        Some(self.runner_service_account.trim().to_owned()).filter(|s| !s.is_empty())
    }

    /// The identity of this replica in the leader-election Lease: the pod name when given (unique
    /// per pod), else the host name with the process id and start time, as controller-runtime
    /// does, so that two processes on one host never share an identity (both would lead).
    pub fn identity(&self) -> String {
        if let Some(name) = self
            .leader_election_identity
            .clone()
            .filter(|s| !s.is_empty())
        {
            return name;
        }
        static DEFAULT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .or_else(|| {
                        std::fs::read_to_string("/etc/hostname")
                            .ok()
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                    })
                    .unwrap_or_else(|| "llmjob-operator".to_owned());
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("{host}_{}_{started:x}", std::process::id())
            })
            .clone()
    }
}

/// The operator's settings that end up in every run's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefaults {
    /// Image of the runner container.
    pub runner_image: String,
    /// Pull policy of the runner container.
    pub pull_policy: PullPolicy,
    /// OTLP endpoint when the LlmJob sets none.
    pub otlp_endpoint: String,
    /// OTLP protocol when the LlmJob sets none.
    pub otlp_protocol: OtlpProtocol,
    /// `deployment.environment.name` when the LlmJob sets none.
    pub environment: String,
    /// `service.name` when the LlmJob sets none.
    pub service_name: String,
    /// The runner pods' ServiceAccount when the LlmJob names none; `None`: the namespace's
    /// `default`, with no token mounted.
    pub service_account: Option<String>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            runner_image: DEFAULT_RUNNER_IMAGE.to_owned(),
            pull_policy: PullPolicy::IfNotPresent,
            otlp_endpoint: DEFAULT_OTLP_ENDPOINT.to_owned(),
            otlp_protocol: OtlpProtocol::Grpc,
            environment: DEFAULT_ENVIRONMENT.to_owned(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            service_account: None,
        }
    }
}

/// Image pull policy of the runner container.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull when the image is not on the node.
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    /// Always pull.
    #[value(name = "Always")]
    Always,
    /// Never pull.
    #[value(name = "Never")]
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
        }
    }
}

/// Parses a flag value into the protocol type of the CRD, listing the accepted values in
/// `--help` and in the error.
fn otlp_protocol_parser() -> impl clap::builder::TypedValueParser<Value = OtlpProtocol> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(OtlpProtocol::ALL.map(OtlpProtocol::as_str))
        // Only the listed names get here, and each is some protocol's name.
        .map(|name| OtlpProtocol::from_name(&name).unwrap_or(OtlpProtocol::Grpc))
}

/// Parses `--trace-url-template`, with the reason a template is refused as clap's message.
fn trace_url_parser(value: &str) -> Result<TraceUrlTemplate, String> {
    TraceUrlTemplate::parse(value).map_err(|e| e.to_string())
}

/// Log format on stderr.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["llmjob-operator"];
        all.extend_from_slice(args);
        match Config::try_parse_from(all) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_charts_helm_test_command_parses() {
        let c = parse(&[
            "check",
            "--namespace=llmjob-system",
            "--deployment=llmjob-operator",
        ]);
        assert_eq!(
            c.command,
            Some(Command::Check {
                namespace: "llmjob-system".to_owned(),
                deployment: "llmjob-operator".to_owned(),
            })
        );
        assert_eq!(parse(&[]).command, None, "no command: run the operator");
    }

    #[test]
    fn the_charts_flags_parse() {
        let c = parse(&[
            "--runner-image=ghcr.io/llmjob-dev/llmjob-runner:0.1.0",
            "--default-otlp-endpoint=http://collector:4317",
            "--default-otlp-protocol=http/protobuf",
            "--default-environment=staging",
            "--watch-namespaces=b,a",
            "--http-addr=0.0.0.0:9090",
            "--leader-elect=true",
            "--leader-election-lease-name=my-lease",
            "--log-format=json",
        ]);
        assert_eq!(c.default_otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.namespaces(), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(c.leader_elect);
        assert_eq!(c.leader_election_lease_name, "my-lease");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.http_addr.port(), 9090);
        assert_eq!(c.job_defaults().environment, "staging");
    }

    #[test]
    fn defaults_and_leader_elect_false() {
        let c = parse(&["--leader-elect=false"]);
        assert!(!c.leader_elect);
        assert_eq!(c.namespaces(), None);
        assert_eq!(c.runner_image, DEFAULT_RUNNER_IMAGE);
        assert_eq!(c.job_defaults().service_name, "llm-job");
        assert!(parse(&["--leader-elect"]).leader_elect);
    }

    #[test]
    fn identity_is_the_pod_name_or_unique_to_the_process() {
        let c = parse(&[]);
        if c.leader_election_identity.is_none() {
            let id = c.identity();
            assert!(id.contains(&format!("_{}_", std::process::id())), "{id}");
            assert_eq!(id, parse(&[]).identity(), "stable within the process");
        }
        let named = parse(&["--leader-election-identity=pod-a"]);
        assert_eq!(named.identity(), "pod-a");
    }

    #[test]
    fn max_concurrent_reconciles_is_bounded_by_default() {
        assert_eq!(
            parse(&[]).max_concurrent_reconciles,
            DEFAULT_MAX_CONCURRENT_RECONCILES
        );
        assert_eq!(
            parse(&["--max-concurrent-reconciles=0"]).max_concurrent_reconciles,
            0,
            "0: no bound"
        );
        let err = Config::try_parse_from(["llmjob-operator", "--max-concurrent-reconciles=-1"])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("--max-concurrent-reconciles")),
            "{err:?}"
        );
    }

    #[test]
    fn the_last_value_of_a_repeated_flag_wins() {
        let c = parse(&["--http-addr=0.0.0.0:8080", "--http-addr=127.0.0.1:9000"]);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn the_tenant_policy_flags() {
        let strict = parse(&[]).tenant_policy();
        assert_eq!(strict, TenantPolicy::default());
        let loose = parse(&[
            "--allow-env-refs",
            "--allow-service-accounts=true",
            "--allow-insecure-base-url=true",
            "--runner-service-account=llm-runner",
            "--cluster-domain=corp.internal",
        ]);
        assert_eq!(
            loose.tenant_policy(),
            TenantPolicy {
                allow_env_refs: true,
                allow_service_accounts: true,
                allow_insecure_base_url: true,
                runner_service_account: Some("llm-runner".to_owned()),
                cluster_domain: "corp.internal".to_owned(),
            }
        );
        assert_eq!(
            loose.job_defaults().service_account.as_deref(),
            Some("llm-runner")
        );
        assert!(!parse(&["--allow-env-refs=false"]).allow_env_refs);
    }

    #[test]
    fn otlp_protocol_values() {
        assert_eq!(parse(&[]).default_otlp_protocol, OtlpProtocol::Grpc);
        let err = Config::try_parse_from(["x", "--default-otlp-protocol=http/json"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("grpc, http/protobuf"), "{err}");
    }

    #[test]
    fn trace_url_template_is_validated_at_start() {
        assert_eq!(parse(&[]).trace_url_template, None);
        let c = parse(&["--trace-url-template=http://jaeger:16686/trace/{traceId}"]);
        assert_eq!(
            c.trace_url_template
                .map(|t| t.as_str().to_owned())
                .as_deref(),
            Some("http://jaeger:16686/trace/{traceId}")
        );
        for bad in [
            "",
            "http://jaeger:16686/trace/",
            "jaeger/trace/{traceId}",
            "file:///trace/{traceId}",
        ] {
            let err = Config::try_parse_from(["x", &format!("--trace-url-template={bad}")])
                .err()
                .map(|e| (e.kind(), e.to_string()));
            let Some((kind, message)) = err else {
                panic!("{bad} must be refused")
            };
            assert_eq!(kind, clap::error::ErrorKind::ValueValidation, "{message}");
            assert!(message.contains("trace URL template"), "{message}");
        }
    }

    #[test]
    fn pull_policy_values() {
        let c = parse(&["--runner-image-pull-policy=Never"]);
        assert_eq!(c.runner_image_pull_policy.as_str(), "Never");
        assert!(
            Config::try_parse_from(["x", "--runner-image-pull-policy=sometimes"]).is_err(),
            "an unknown pull policy must be rejected"
        );
    }
}
