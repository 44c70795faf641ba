//! The operator's Prometheus metrics, served on `/metrics` in the OpenMetrics text format.
//!
//! Labels are of low cardinality only: phases, error categories, namespaces and models; never
//! an object's name or uid. The model is user text (`spec.model`), so its label is normalised
//! ([`normalise_model`]) and bounded: at most [`MAX_MODEL_LABELS`] distinct values, then `other`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use llmjob_crds::result::RunResult;
use llmjob_crds::v1alpha1::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::events::Reason;

/// Labels of the reconcile-error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's category: an [`events::Reason`](crate::events::Reason), the type that also
    /// names the reasons of events and conditions.
    pub category: String,
}

/// Labels of the LlmJob gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Suspended` or `Unknown` (no status yet).
    pub phase: String,
}

/// Labels of the fresh-read counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FreshReadLabels {
    /// `create`: no Job in the cache, so the create decision reads the LlmJob fresh;
    /// `conflict`: a status write found the cached copy stale.
    pub reason: String,
}

/// Labels of the token counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Namespace of the LlmJob.
    pub namespace: String,
    /// The requested model (`spec.model`), normalised and bounded (see [`Metrics::count_tokens`]).
    pub model: String,
    /// `input` or `output`.
    pub r#type: String,
}

/// Labels of the finished-run counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// Namespace of the LlmJob.
    pub namespace: String,
    /// `Succeeded` or `Failed`.
    pub phase: String,
    /// The reason of the `Ready` condition (`Succeeded`) or of the `Failed` condition
    /// (`RateLimited`, `AuthenticationFailed`, `DeadlineExceeded`, ...): a short fixed list.
    pub reason: String,
}

/// Labels of the attempt counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// Namespace of the LlmJob.
    pub namespace: String,
}

/// Labels of the runner-image info metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabels {
    /// The image new runs' pods get (`--runner-image`).
    pub image: String,
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that ended in an error, by category.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Duration of reconciles in seconds.
    pub reconcile_duration: Histogram,
    /// Reconciles that read the LlmJob from the API server instead of the watch cache, by reason.
    pub fresh_reads: Family<FreshReadLabels, Counter>,
    /// LlmJobs by phase, as last seen by the controller.
    pub llmjobs: Family<PhaseLabels, Gauge>,
    /// Tokens of finished runs, by namespace, model and type.
    pub tokens: Family<TokenLabels, Counter>,
    /// 1 while this replica leads (or runs without leader election), else 0.
    pub leader: Gauge,
    /// LlmJobs that finished, by namespace, phase and reason.
    pub runs: Family<RunLabels, Counter>,
    /// HTTP attempts of the runs that finished, by namespace (retries = attempts - runs).
    pub run_attempts: Family<NamespaceLabels, Counter>,
    /// Reconciles running now.
    pub reconciles_in_flight: Gauge,
    /// Age in seconds of the oldest LlmJob that is Pending or has no status yet; 0 when none.
    pub oldest_pending_seconds: Gauge,
    /// 1, labelled with the runner image of new runs.
    pub runner_image: Family<ImageLabels, Gauge>,
    /// The model labels handed out so far (at most [`MAX_MODEL_LABELS`]).
    models: Mutex<BTreeSet<String>>,
}

/// Most distinct `model` label values; the runs of further models count under [`OTHER_MODEL`].
pub const MAX_MODEL_LABELS: usize = 50;
/// The `model` label of the runs of models beyond [`MAX_MODEL_LABELS`].
pub const OTHER_MODEL: &str = "other";
/// Longest `model` label, in characters.
const MODEL_LABEL_CHARS: usize = 64;

/// The `model` label for `model`: trimmed, characters other than ASCII letters, digits and
/// `. _ - : / @ +` replaced by `_`, cut at 64 characters; `unknown` when empty.
pub fn normalise_model(model: &str) -> String {
    let label: String = model
        .trim()
        .chars()
        .take(MODEL_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:/@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.is_empty() {
        "unknown".to_owned()
    } else {
        label
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llmjob_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles of LlmJobs", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        for reason in Reason::RECONCILE_ERRORS {
            // Creating the label set is the point; the guard is dropped at once.
            drop(reconcile_errors.get_or_create(&ErrorLabels {
                category: reason.as_str().to_owned(),
            }));
        }
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by category",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of a reconcile",
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        let fresh_reads = Family::<FreshReadLabels, Counter>::default();
        registry.register(
            "fresh_reads",
            "Reconciles that read the LlmJob from the API server instead of the watch cache, by \
             reason (create: deciding to create its Job; conflict: the cached copy was stale)",
            fresh_reads.clone(),
        );
        let llmjobs = Family::<PhaseLabels, Gauge>::default();
        registry.register("llmjobs", "LlmJobs by phase", llmjobs.clone());
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens of finished runs, by namespace, requested model and type (input/output)",
            tokens.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller",
            leader.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "LlmJobs that finished, by namespace, phase (Succeeded/Failed) and reason",
            runs.clone(),
        );
        let run_attempts = Family::<NamespaceLabels, Counter>::default();
        registry.register(
            "run_attempts",
            "HTTP attempts of the LlmJobs that finished, by namespace (retries: attempts minus runs)",
            run_attempts.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            reconciles_in_flight.clone(),
        );
        let oldest_pending_seconds = Gauge::default();
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest LlmJob that is Pending or has no status yet (0: none)",
            oldest_pending_seconds.clone(),
        );
        let runner_image = Family::<ImageLabels, Gauge>::default();
        registry.register(
            "runner_image_info",
            "The job-runner image new runs' pods get (--runner-image), as a label; the value is 1",
            runner_image.clone(),
        );
        Metrics {
            registry,
            runs,
            run_attempts,
            reconciles_in_flight,
            oldest_pending_seconds,
            runner_image,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            fresh_reads,
            llmjobs,
            tokens,
            leader,
            models: Mutex::default(),
        }
    }

    /// The bounded `model` label of `model`: its [`normalise_model`] form while fewer than
    /// [`MAX_MODEL_LABELS`] values were handed out (or this one already was), else
    /// [`OTHER_MODEL`].
    fn model_label(&self, model: &str) -> String {
        let label = normalise_model(model);
        let Ok(mut seen) = self.models.lock() else {
            return OTHER_MODEL.to_owned();
        };
        if seen.contains(&label) {
            return label;
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return OTHER_MODEL.to_owned();
        }
        seen.insert(label.clone());
        label
    }

    /// Counts a fresh read of an LlmJob for `reason` (see [`FreshReadLabels`]).
    pub fn fresh_read(&self, reason: &str) {
        self.fresh_reads
            .get_or_create(&FreshReadLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a reconcile error of `category`.
    pub fn error(&self, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                category: category.to_owned(),
            })
            .inc();
    }

    /// Records the duration of one reconcile.
    pub fn reconciled(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Adds the tokens of a finished run, under the run's bounded model label.
    pub fn count_tokens(&self, namespace: &str, model: &str, result: &RunResult) {
        let Some(usage) = &result.usage else { return };
        let model = self.model_label(model);
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            if let Some(n) = n {
                self.tokens
                    .get_or_create(&TokenLabels {
                        namespace: namespace.to_owned(),
                        model: model.clone(),
                        r#type: kind.to_owned(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Sets the runner-image info metric to `image` (once, at start).
    pub fn set_runner_image(&self, image: &str) {
        self.runner_image.clear();
        self.runner_image
            .get_or_create(&ImageLabels {
                image: image.to_owned(),
            })
            .set(1);
    }

    /// Counts a run that finished in `phase` for `reason`, and its HTTP attempts.
    pub fn count_run(&self, namespace: &str, phase: Phase, reason: &str, attempts: Option<u32>) {
        self.runs
            .get_or_create(&RunLabels {
                namespace: namespace.to_owned(),
                phase: phase.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        if let Some(n) = attempts {
            self.run_attempts
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_owned(),
                })
                .inc_by(u64::from(n));
        }
    }

    /// Sets the oldest-Pending gauge from the creation times of the LlmJobs that are Pending (or
    /// have no status yet), at `now`.
    pub fn set_oldest_pending(
        &self,
        pending_since: impl IntoIterator<Item = k8s_openapi::jiff::Timestamp>,
        now: k8s_openapi::jiff::Timestamp,
    ) {
        let oldest = pending_since
            .into_iter()
            .map(|t| now.duration_since(t).as_secs().max(0))
            .max()
            .unwrap_or(0);
        self.oldest_pending_seconds.set(oldest);
    }

    /// Sets the LlmJob gauge from the phases of every LlmJob the controller sees.
    pub fn set_phases(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let mut counts = std::collections::BTreeMap::<&'static str, i64>::from([
            ("Pending", 0),
            ("Running", 0),
            ("Succeeded", 0),
            ("Failed", 0),
            ("Suspended", 0),
            ("Unknown", 0),
        ]);
        for p in phases {
            *counts
                .entry(p.map_or("Unknown", Phase::as_str))
                .or_default() += 1;
        }
        for (phase, n) in counts {
            self.llmjobs
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .set(n);
        }
    }

    /// Marks a reconcile as running until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.reconciles_in_flight.inc();
        InFlight(self.reconciles_in_flight.clone())
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A reconcile counted in `llmjob_operator_reconciles_in_flight` while this lives.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmjob_crds::result::{RunStatus, TokenUsage};

    #[test]
    fn runs_attempts_image_queue_and_pending_age() {
        let m = Metrics::new();
        m.set_runner_image("ghcr.io/llmjob-dev/llmjob-runner:0.1.0");
        m.count_run("team-a", Phase::Succeeded, "Succeeded", Some(1));
        m.count_run("team-a", Phase::Failed, "RateLimited", Some(4));
        m.count_run("team-a", Phase::Failed, "JobDeleted", None);
        let guard = m.in_flight();
        let now: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        m.set_oldest_pending(
            [
                "2026-01-02T03:00:05Z".parse().unwrap(),
                "2026-01-02T03:04:00Z".parse().unwrap(),
            ],
            now,
        );
        let text = m.encode().unwrap();
        for want in [
            r#"llmjob_operator_runner_image_info{image="ghcr.io/llmjob-dev/llmjob-runner:0.1.0"} 1"#,
            r#"llmjob_operator_runs_total{namespace="team-a",phase="Succeeded",reason="Succeeded"} 1"#,
            r#"llmjob_operator_runs_total{namespace="team-a",phase="Failed",reason="RateLimited"} 1"#,
            r#"llmjob_operator_run_attempts_total{namespace="team-a"} 5"#,
            "llmjob_operator_reconciles_in_flight 1",
            "llmjob_operator_oldest_pending_seconds 240",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        drop(guard);
        m.set_oldest_pending([], now);
        let text = m.encode().unwrap();
        assert!(
            text.contains("llmjob_operator_reconciles_in_flight 0"),
            "{text}"
        );
        assert!(
            text.contains("llmjob_operator_oldest_pending_seconds 0"),
            "{text}"
        );
    }

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.error("SecretNotFound");
        m.reconciled(Duration::from_millis(20));
        m.fresh_read("create");
        m.set_phases([Some(Phase::Running), Some(Phase::Running), None]);
        let result = RunResult {
            status: RunStatus::Succeeded,
            shard: None,
            trace_id: None,
            span_id: None,
            response_id: None,
            model: None,
            finish_reason: None,
            finish_reasons: Vec::new(),
            usage: Some(TokenUsage {
                input_tokens: Some(23),
                output_tokens: Some(8),
                total_tokens: Some(31),
            }),
            duration_ms: None,
            attempts: None,
            input_sha256: None,
            output_sha256: None,
            error: None,
        };
        m.count_tokens("team-a", "gpt-4o-mini", &result);
        let text = m.encode().unwrap();
        for want in [
            "llmjob_operator_reconciles_total 1",
            "llmjob_operator_reconcile_errors_total{category=\"SecretNotFound\"} 1",
            "llmjob_operator_reconcile_errors_total{category=\"StatusWriteFailed\"} 0",
            "llmjob_operator_reconcile_errors_total{category=\"ReadFailed\"} 0",
            "llmjob_operator_reconcile_duration_seconds_count 1",
            "llmjob_operator_fresh_reads_total{reason=\"create\"} 1",
            "llmjob_operator_llmjobs{phase=\"Running\"} 2",
            "llmjob_operator_llmjobs{phase=\"Unknown\"} 1",
            "llmjob_operator_llmjobs{phase=\"Failed\"} 0",
            "llmjob_operator_tokens_total{namespace=\"team-a\",model=\"gpt-4o-mini\",type=\"input\"} 23",
            "llmjob_operator_tokens_total{namespace=\"team-a\",model=\"gpt-4o-mini\",type=\"output\"} 8",
            "llmjob_operator_leader 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn model_labels_are_normalised_and_bounded() {
        assert_eq!(normalise_model(" gpt-4o-mini "), "gpt-4o-mini");
        assert_eq!(normalise_model("a\"b}\nc é"), "a_b__c__");
        assert_eq!(normalise_model(""), "unknown");
        assert_eq!(normalise_model(&"m".repeat(300)).len(), 64);

        let m = Metrics::new();
        let result = RunResult::parse(
            r#"{"status":"succeeded","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2}}"#,
        )
        .unwrap();
        for i in 0..MAX_MODEL_LABELS + 10 {
            m.count_tokens("ns", &format!("model-{i}"), &result);
        }
        // A model already labelled keeps its label after the bound is reached.
        m.count_tokens("ns", "model-0", &result);
        let text = m.encode().unwrap();
        let models: BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("llmjob_operator_tokens_total{"))
            .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(models.len(), MAX_MODEL_LABELS + 1, "{models:?}");
        assert!(models.contains(OTHER_MODEL));
        assert!(text.contains(
            "llmjob_operator_tokens_total{namespace=\"ns\",model=\"other\",type=\"input\"} 10"
        ));
        assert!(text.contains(
            "llmjob_operator_tokens_total{namespace=\"ns\",model=\"model-0\",type=\"input\"} 2"
        ));
    }
}
