//! Load with faults (`--kill-every`): the operator process that is SIGKILLed and started again
//! on a period, the checks of the outcome (every LlmJob `Succeeded`, with exactly one Job, one
//! request to the model API and one `llm_job.workflow` span in its trace), and the report that
//! compares the run with kills with the same load without them.
//!
//! The checks are the bench's result: [`print_report`] says PASS or MISS for each and `main`
//! fails when one missed. The times are printed, never asserted.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt as _};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::ReplayServer;
use testenv::collector::Collector;
use testenv::process::{ManagedProcess, ProcessSpec};

use crate::{Cli, RunFigures, log, secs};

/// The span the runner opens around a whole run (docs/telemetry.md).
const WORKFLOW_SPAN: &str = "llm_job.workflow";
/// How long the checks wait for the last runs' spans to reach the collector's files (the runner
/// flushes before it exits and the file exporter every 100 ms): a bound against hanging.
const SPAN_WAIT: Duration = Duration::from_secs(120);

/// The operator's process, which [`Operator::kill_every`] SIGKILLs and starts again.
pub struct Operator {
    spec: ProcessSpec,
    process: Option<ManagedProcess>,
    kills: usize,
}

impl Operator {
    /// Starts the operator.
    pub fn spawn(spec: ProcessSpec) -> anyhow::Result<Self> {
        let process = ManagedProcess::spawn(spec.clone())?;
        Ok(Self {
            spec,
            process: Some(process),
            kills: 0,
        })
    }

    /// The running process's id (`None` between a kill and the restart).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ManagedProcess::pid)
    }

    /// The log file every life of the operator appends to.
    pub fn log_path(&self) -> &Path {
        self.spec.log_path()
    }

    /// How often it was SIGKILLed.
    pub fn kills(&self) -> usize {
        self.kills
    }

    /// Every `period`: SIGKILL the operator, reap it and start it again at once (a pod's
    /// container restarted by its kubelet, without the back-off). Runs until it fails, so it
    /// returns only an error; the caller drops it when the load has finished.
    pub async fn kill_every(&mut self, period: Duration) -> anyhow::Error {
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = self.kill_and_restart().await {
                return e;
            }
        }
    }

    async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        // Taken out first: if this future is dropped while the kill is awaited, dropping the
        // process SIGKILLs it, and [`Operator::stop`] finds none running.
        if let Some(process) = self.process.take() {
            let pid = process.pid();
            let status = process.kill().await?;
            self.kills += 1;
            log(format!(
                "SIGKILLed the operator (pid {pid}, {status}), kill {}; starting it again",
                self.kills
            ));
        }
        self.process = Some(ManagedProcess::spawn(self.spec.clone())?);
        Ok(())
    }

    /// Stops the running operator (SIGTERM, then SIGKILL after `grace`) and says how it ended.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<String> {
        Ok(match self.process {
            Some(process) => process.stop(grace).await?.to_string(),
            None => "already killed".to_owned(),
        })
    }
}

/// The outcome of a run, checked after every LlmJob and Job finished.
#[derive(Debug, Default, Clone)]
pub struct Checks {
    /// LlmJobs in the namespace.
    pub llmjobs: usize,
    /// Of them, `Succeeded`.
    pub succeeded: usize,
    /// Of them, owning exactly one Job.
    pub one_job: usize,
    /// Jobs in the namespace.
    pub jobs: usize,
    /// LlmJobs whose trace (`status.traceId`, one per LlmJob) holds exactly one
    /// `llm_job.workflow` span.
    pub one_workflow_span: usize,
    /// `llm_job.workflow` spans in those traces, all told.
    pub workflow_spans: usize,
    /// Chat completions the model API (the replay server) received during the run.
    pub api_calls: usize,
}

impl Checks {
    /// Reads the LlmJobs and Jobs of `ns`, waits (up to [`SPAN_WAIT`]) until every LlmJob's
    /// trace holds a workflow span, and counts.
    pub async fn run(
        client: &Client,
        ns: &str,
        collector: &Collector,
        replay: &ReplayServer,
        count: usize,
    ) -> anyhow::Result<Self> {
        let llmjobs = Api::<LlmJob>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items;
        let jobs = Api::<Job>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items;
        let mut jobs_per_owner: HashMap<String, usize> = HashMap::new();
        for job in &jobs {
            for owner in job.owner_references() {
                if owner.kind == "LlmJob" && owner.controller == Some(true) {
                    *jobs_per_owner.entry(owner.uid.clone()).or_default() += 1;
                }
            }
        }
        let trace_ids: HashSet<String> = llmjobs
            .iter()
            .filter_map(|l| l.status.as_ref()?.trace_id.clone())
            .collect();
        let count_spans = |t: &testenv::telemetry::Telemetry| {
            let mut per_trace: HashMap<String, usize> = HashMap::new();
            for span in t.spans.iter().filter(|s| s.name == WORKFLOW_SPAN) {
                if trace_ids.contains(&span.trace_id) {
                    *per_trace.entry(span.trace_id.clone()).or_default() += 1;
                }
            }
            per_trace
        };
        let spans = match collector
            .wait_for(SPAN_WAIT, |t| {
                let per_trace = count_spans(t);
                (per_trace.len() >= trace_ids.len()).then_some(per_trace)
            })
            .await
        {
            Ok(per_trace) => per_trace,
            // Some traces have no workflow span: count what arrived (the check will miss).
            Err(e) => {
                log(format!("not every LlmJob's trace has a workflow span: {e}"));
                count_spans(&collector.read()?)
            }
        };
        let checks = Self {
            llmjobs: llmjobs.len(),
            succeeded: llmjobs
                .iter()
                .filter(|l| l.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded))
                .count(),
            one_job: llmjobs
                .iter()
                .filter(|l| {
                    l.metadata
                        .uid
                        .as_ref()
                        .and_then(|uid| jobs_per_owner.get(uid))
                        == Some(&1)
                })
                .count(),
            jobs: jobs.len(),
            // Distinct trace ids: two LlmJobs sharing one trace would fail this too.
            one_workflow_span: llmjobs
                .iter()
                .filter_map(|l| l.status.as_ref()?.trace_id.as_ref())
                .filter(|id| spans.get(*id) == Some(&1))
                .count()
                .min(trace_ids.len()),
            workflow_spans: spans.values().sum(),
            api_calls: replay.requests().len(),
        };
        log(format!("checks of {count} LlmJobs: {checks:?}"));
        Ok(checks)
    }

    /// One row per guarantee: (what, figure, passed).
    fn rows(&self, n: usize) -> Vec<(&'static str, String, bool)> {
        vec![
            (
                "LlmJobs Succeeded",
                format!("{} of {n}", self.succeeded),
                self.llmjobs == n && self.succeeded == n,
            ),
            (
                "LlmJobs with exactly one Job",
                format!("{} of {n} ({} Jobs in all)", self.one_job, self.jobs),
                self.one_job == n && self.jobs == n,
            ),
            (
                "LlmJobs whose trace holds exactly one `llm_job.workflow` span",
                format!(
                    "{} of {n} ({} such spans in all)",
                    self.one_workflow_span, self.workflow_spans
                ),
                self.one_workflow_span == n && self.workflow_spans == n,
            ),
            (
                "requests to the model API",
                format!("{} for {n} LlmJobs", self.api_calls),
                self.api_calls == n,
            ),
        ]
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// Prints the load-with-faults tables; returns whether every check passed (in both runs).
pub fn print_report(
    cli: &Cli,
    every: Duration,
    baseline: Option<&RunFigures>,
    killed: &RunFigures,
    load_start: &str,
    load_end: &str,
) -> bool {
    let n = cli.count;
    let every = humantime::format_duration(every);
    let mut out = vec![
        format!(
            "### Load with faults: {n} LlmJobs, the operator SIGKILLed every {every} ({} kills), create concurrency {}",
            killed.kills, cli.create_concurrency
        ),
        String::new(),
        format!("| measure | no kills | SIGKILL every {every} | with / without |"),
        "|---|---|---|---|".to_owned(),
    ];
    let row = |label: &str, with: Duration, without: Option<Duration>| {
        let (b, ratio) = without.map_or(("—".to_owned(), "—".to_owned()), |b| {
            (
                secs(b),
                format!("{:.2}×", with.as_secs_f64() / b.as_secs_f64().max(1e-9)),
            )
        });
        format!("| {label} (s) | {b} | {} | {ratio} |", secs(with))
    };
    out.push(row(
        "all Jobs created",
        killed.jobs_created,
        baseline.map(|b| b.jobs_created),
    ));
    if let Some(with) = killed.llmjobs_succeeded {
        out.push(row(
            "all LlmJobs Succeeded",
            with,
            baseline.and_then(|b| b.llmjobs_succeeded),
        ));
    }
    out.push(row(
        "all Jobs Complete",
        killed.jobs_complete,
        baseline.map(|b| b.jobs_complete),
    ));
    let per = |f: &RunFigures| f.api_requests / n as f64;
    out.push(format!(
        "| API requests per LlmJob (all clients) | {} | {:.1} | {} |",
        baseline.map_or("—".to_owned(), |b| format!("{:.1}", per(b))),
        per(killed),
        baseline.map_or("—".to_owned(), |b| format!(
            "{:.2}×",
            per(killed) / per(b).max(1e-9)
        )),
    ));
    out.push(String::new());
    out.push("| guarantee | no kills | SIGKILL every ".to_owned() + &format!("{every} | |"));
    out.push("|---|---|---|---|".to_owned());
    let mut passed = true;
    let killed_rows = killed
        .checks
        .as_ref()
        .map(|c| c.rows(n))
        .unwrap_or_default();
    let base_rows = baseline.and_then(|b| b.checks.as_ref()).map(|c| c.rows(n));
    if killed_rows.is_empty() {
        passed = false;
    }
    for (i, (what, figure, ok)) in killed_rows.iter().enumerate() {
        let base = base_rows.as_ref().and_then(|r| r.get(i));
        let base_text = base.map_or("—".to_owned(), |(_, f, ok)| {
            format!("{f} ({})", verdict(*ok))
        });
        let all_ok = *ok && base.is_none_or(|(_, _, ok)| *ok);
        passed &= all_ok;
        out.push(format!(
            "| {what} | {base_text} | {figure} | {} |",
            verdict(all_ok)
        ));
    }
    out.push(String::new());
    out.push(format!(
        "Load average (1/5/15 min): start {load_start}, end {load_end}; {} CPUs. Runs: {}each on a fresh control plane.",
        std::thread::available_parallelism().map_or(0, usize::from),
        if baseline.is_some() {
            "without kills, then with them, "
        } else {
            ""
        }
    ));
    println!("{}", out.join("\n"));
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Checks {
        fn passed(&self, n: usize) -> bool {
            self.rows(n).iter().all(|(_, _, ok)| *ok)
        }
    }

    #[test]
    fn every_guarantee_must_hold_for_every_llmjob() {
        let good = Checks {
            llmjobs: 3,
            succeeded: 3,
            one_job: 3,
            jobs: 3,
            one_workflow_span: 3,
            workflow_spans: 3,
            api_calls: 3,
        };
        assert!(good.passed(3));
        assert!(!good.passed(4), "a missing LlmJob misses");
        for broken in [
            Checks {
                succeeded: 2,
                ..good.clone()
            },
            Checks {
                jobs: 4,
                ..good.clone()
            },
            Checks {
                workflow_spans: 4,
                ..good.clone()
            },
            Checks {
                one_workflow_span: 2,
                ..good.clone()
            },
            Checks {
                api_calls: 4,
                ..good.clone()
            },
        ] {
            assert!(!broken.passed(3), "{broken:?}");
        }
    }
}
