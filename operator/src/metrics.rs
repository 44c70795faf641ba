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
        Metrics {
            registry,
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

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmjob_crds::result::{RunStatus, TokenUsage};

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
