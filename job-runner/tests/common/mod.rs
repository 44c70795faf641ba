//! Shared harness of the job-runner's integration tests: runs the real `llmjob-runner` binary
//! with a clean environment against a real `openai-replay` server and a real OpenTelemetry
//! Collector (`otelcol-test` from `tools/ensure-tools.sh`), and reads back what each received.
//!
//! Every test starts its own collector and replay server (about a second), so the raw output
//! files of a collector hold one test's telemetry only and can be searched byte for byte.
//! A missing collector binary fails the test with the message naming `tools/ensure-tools.sh`;
//! nothing is skipped.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use llmjob_crds::result::RunResult;
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::collector::Collector;
use testenv::telemetry::{LogRecord, Metric, Span, Telemetry};

/// The binary under test.
pub const RUNNER: &str = env!("CARGO_BIN_EXE_llmjob-runner");

/// A distinctive API key: it must never appear in any output.
pub const KEY: &str = "sk-test-LEAKCHECK-1234567890";

/// A distinctive prompt: it must never appear in telemetry unless capture is `full`.
pub const PROMPT: &str = "Say something about the PROMPT-CANARY-31415 please";

/// The answer text of the `chat_gpt4o_mini` fixture (non-streaming, `Scenario::Auto`).
pub const ANSWER: &str = "2 + 2 equals 4.";
/// The response id of the `chat_gpt4o_mini` fixture.
pub const RESPONSE_ID: &str = "chatcmpl-CdxiAHnlfo5sBde5BSPewqJ0kjEej";
/// The answer text of the `chat_stream_include_usage` fixture.
pub const STREAM_ANSWER: &str = "10 + 5 equals 15.";
/// The response id of the `chat_stream_include_usage` fixture.
pub const STREAM_RESPONSE_ID: &str = "chatcmpl-ChZNa5AVXUvGOZAleY7FgQlVr6bxn";
/// The model both fixtures answer with (the recorded one, not the requested one).
pub const RESPONSE_MODEL: &str = "gpt-4o-mini-2024-07-18";

/// Outer bound on one run of the binary, only so that a hang fails instead of stalling CI.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the collector to write what a finished run exported.
pub const TELEMETRY_WAIT: Duration = Duration::from_secs(20);

/// The contract's `gen_ai.client.token.usage` bucket boundaries.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The contract's duration (and time-to-first-chunk) bucket boundaries.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Starts a collector, failing loudly (naming `tools/ensure-tools.sh`) when it cannot.
pub async fn collector() -> Collector {
    match Collector::start().await {
        Ok(c) => c,
        Err(e) => panic!("cannot start the OpenTelemetry Collector: {e}"),
    }
}

/// Starts a replay server.
pub async fn replay(config: ReplayConfig) -> ReplayServer {
    match ReplayServer::start(config).await {
        Ok(s) => s,
        Err(e) => panic!("cannot start openai-replay: {e}"),
    }
}

/// One invocation of the runner: a clean environment (only `PATH` is inherited) plus the
/// variables set here. The result file goes to a fresh temporary directory.
pub struct Runner {
    vars: Vec<(String, String)>,
    raw_vars: Vec<(String, std::ffi::OsString)>,
    dir: tempfile::TempDir,
}

impl Runner {
    /// A runner with `OPENAI_API_KEY` = [`KEY`], the given `OTEL_SERVICE_NAME`, `OPENAI_PROMPT`
    /// = [`PROMPT`] and `LLMJOB_RESULT_PATH` in a temporary directory; nothing else.
    pub fn new(service_name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut runner = Runner {
            vars: Vec::new(),
            raw_vars: Vec::new(),
            dir,
        };
        let result_path = runner.result_path();
        runner = runner
            .env("OPENAI_API_KEY", KEY)
            .env("OTEL_SERVICE_NAME", service_name)
            .env("OPENAI_PROMPT", PROMPT)
            .env("LLMJOB_RESULT_PATH", result_path.display().to_string());
        runner
    }

    /// A runner with no variables at all (besides `PATH`).
    pub fn bare() -> Self {
        Runner {
            vars: Vec::new(),
            raw_vars: Vec::new(),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Sets (or replaces) a variable.
    #[must_use]
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Sets a variable to raw bytes (which need not be UTF-8), replacing any other value.
    #[must_use]
    pub fn env_bytes(mut self, name: &str, value: &[u8]) -> Self {
        use std::os::unix::ffi::OsStringExt as _;
        self.vars.retain(|(n, _)| n != name);
        self.raw_vars.push((
            name.to_owned(),
            std::ffi::OsString::from_vec(value.to_vec()),
        ));
        self
    }

    /// Removes a variable.
    #[must_use]
    pub fn unset(mut self, name: &str) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self
    }

    /// Points the runner at a replay server.
    #[must_use]
    pub fn openai(self, server: &ReplayServer) -> Self {
        self.env("OPENAI_BASE_URL", server.base_url())
    }

    /// Exports to a collector over OTLP/gRPC.
    #[must_use]
    pub fn otlp_grpc(self, collector: &Collector) -> Self {
        self.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    }

    /// Exports to a collector over OTLP/HTTP with protobuf bodies.
    #[must_use]
    pub fn otlp_http(self, collector: &Collector) -> Self {
        self.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    }

    /// Where `LLMJOB_RESULT_PATH` points by default.
    pub fn result_path(&self) -> PathBuf {
        self.dir.path().join("termination-log")
    }

    /// Runs the binary to completion (bounded by [`RUN_TIMEOUT`]).
    pub async fn run(self) -> Run {
        self.run_within(RUN_TIMEOUT).await
    }

    /// Runs the binary, failing the test when it has not exited within `deadline`.
    pub async fn run_within(self, deadline: Duration) -> Run {
        self.run_signalled(deadline, std::future::pending(), "TERM")
            .await
    }

    /// Runs the binary and, once `ready` completes (e.g. the API received the request), sends it
    /// `signal` (a name `kill -s` takes, such as `TERM`); fails the test when it has not exited
    /// within `deadline`.
    pub async fn run_signalled(
        self,
        deadline: Duration,
        ready: impl std::future::Future<Output = ()>,
        signal: &str,
    ) -> Run {
        let mut command = tokio::process::Command::new(RUNNER);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(
                self.raw_vars
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_os_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {RUNNER}: {e}"));
        let pid = child.id().expect("the runner's pid").to_string();
        let output = child.wait_with_output();
        tokio::pin!(output);
        let with_signal = async {
            tokio::select! {
                output = &mut output => return output,
                () = ready => {}
            }
            let status = std::process::Command::new("kill")
                .args(["-s", signal, &pid])
                .status()
                .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
            assert!(status.success(), "kill -s {signal} {pid} failed");
            output.await
        };
        let output = match tokio::time::timeout(deadline, with_signal).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("cannot run {RUNNER}: {e}"),
            Err(_) => panic!(
                "{RUNNER} did not finish within {deadline:?} (env {:?})",
                self.vars
            ),
        };
        let elapsed = started.elapsed();
        let result_path = self
            .vars
            .iter()
            .find(|(k, _)| k == "LLMJOB_RESULT_PATH")
            .map(|(_, v)| PathBuf::from(v));
        let result_text = result_path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            result_text,
            elapsed,
            _dir: self.dir,
        }
    }
}

/// What one run of the binary left behind.
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// The result file's content, if it was written.
    pub result_text: Option<String>,
    /// Wall time of the process.
    pub elapsed: Duration,
    _dir: tempfile::TempDir,
}

impl Run {
    /// Asserts that a successful run under content capture `none` or `hash` printed its summary on
    /// stdout and neither the prompt nor `answer` (`docs/job-runner.md`, Content capture).
    pub fn assert_summary_without_content(&self, answer: &str) {
        assert!(
            self.stdout.starts_with("succeeded: response "),
            "stdout is the result's summary: {:?}",
            self.stdout
        );
        assert!(
            self.stdout.contains("the answer is not printed"),
            "{:?}",
            self.stdout
        );
        for text in [answer, PROMPT] {
            assert!(
                !self.stdout.contains(text),
                "no content on stdout: {text:?} in {:?}",
                self.stdout
            );
        }
    }

    /// Asserts the exit code, showing stderr when it differs.
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// The parsed result file; fails when it is missing or does not parse.
    pub fn result(&self) -> RunResult {
        let text = self.result_text.as_deref().unwrap_or_else(|| {
            panic!(
                "the result file was not written\n--- stderr ---\n{}",
                self.stderr
            )
        });
        assert_eq!(
            text.trim_end().lines().count(),
            1,
            "the result is not one line: {text:?}"
        );
        assert!(text.len() <= 4096, "the result is longer than 4096 bytes");
        RunResult::parse(text).unwrap_or_else(|e| panic!("result {text:?} does not parse: {e}"))
    }

    /// The trace id from the result file.
    pub fn trace_id(&self) -> String {
        self.result()
            .trace_id
            .unwrap_or_else(|| panic!("no traceId in the result {:?}", self.result_text))
    }
}

/// Waits until the collector holds the run's whole trace (its root `llm_job.workflow` span),
/// its closing log record (`job finished` / `job failed`) and its duration metric, then returns
/// everything the collector received.
pub async fn wait_for_run(collector: &Collector, trace_id: &str) -> Telemetry {
    let result = collector
        .wait_for(TELEMETRY_WAIT, |t| {
            let has_root = t
                .trace(trace_id)
                .iter()
                .any(|s| s.name == "llm_job.workflow");
            let has_last_log = t.logs_for_trace(trace_id).iter().any(|l| {
                l.body_str()
                    .is_some_and(|b| b.starts_with("job finished") || b.starts_with("job failed"))
            });
            let has_metric = t.metric("gen_ai.client.operation.duration").is_some();
            (has_root && has_last_log && has_metric).then(|| t.clone())
        })
        .await;
    match result {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// Asserts that nothing from `service_name` reached `collector`: runs a second, marker run
/// (service `<service_name>-marker`) against the same collector, waits until the marker's
/// telemetry was written, and then checks that no span, metric or log record carries
/// `service_name`. The first run had exited before the marker started, so anything it had sent
/// would have been written before the marker's telemetry.
pub async fn assert_nothing_received_from(
    collector: &Collector,
    server: &ReplayServer,
    service_name: &str,
) {
    let marker = format!("{service_name}-marker");
    let run = Runner::new(&marker)
        .openai(server)
        .otlp_grpc(collector)
        .run()
        .await;
    run.assert_exit(0);
    let telemetry = wait_for_run(collector, &run.trace_id()).await;
    // Metrics of the marker too, so that all three pipelines have been written.
    assert!(
        telemetry
            .logs
            .iter()
            .any(|l| l.resource.str("service.name") == Some(marker.as_str())),
        "the marker's logs did not arrive"
    );
    let from = |resource: &testenv::telemetry::Attributes| {
        resource.str("service.name") == Some(service_name)
    };
    let spans: Vec<&str> = telemetry
        .spans
        .iter()
        .filter(|s| from(&s.resource))
        .map(|s| s.name.as_str())
        .collect();
    let metrics: Vec<&str> = telemetry
        .metrics
        .iter()
        .filter(|m| from(&m.resource))
        .map(|m| m.name.as_str())
        .collect();
    let logs = telemetry.logs.iter().filter(|l| from(&l.resource)).count();
    assert!(
        spans.is_empty() && metrics.is_empty() && logs == 0,
        "{service_name} exported telemetry: spans {spans:?}, metrics {metrics:?}, {logs} logs"
    );
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The files of the collector's directory (config, log, `out/{traces,metrics,logs}.jsonl`)
/// that contain `needle` as raw bytes.
pub fn collector_files_containing(collector: &Collector, needle: &str) -> Vec<PathBuf> {
    let files = files_under(collector.dir());
    for signal in ["traces.jsonl", "metrics.jsonl", "logs.jsonl"] {
        assert!(
            files.iter().any(|f| f.ends_with(signal)),
            "the collector wrote no {signal} in {}",
            collector.dir().display()
        );
    }
    files
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .collect()
}

/// The spans of one trace as the contract's tree: (workflow, task, chat spans by start time).
/// Asserts the parentage and kinds on the way.
pub fn span_tree<'a>(
    telemetry: &'a Telemetry,
    trace_id: &str,
    model: &str,
) -> (&'a Span, &'a Span, Vec<&'a Span>) {
    let spans = telemetry.trace(trace_id);
    let named = |name: &str| -> Vec<&'a Span> {
        telemetry
            .trace(trace_id)
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    };
    let workflows = named("llm_job.workflow");
    let tasks = named("openai_call.task");
    let chats = named(&format!("chat {model}"));
    assert_eq!(
        workflows.len(),
        1,
        "spans of trace {trace_id}: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(tasks.len(), 1);
    assert!(!chats.is_empty(), "no chat span in trace {trace_id}");
    assert_eq!(
        spans.len(),
        2 + chats.len(),
        "unexpected spans in trace {trace_id}: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let (workflow, task) = (workflows[0], tasks[0]);
    assert_eq!(workflow.kind, testenv::telemetry::SpanKind::Internal);
    assert_eq!(task.kind, testenv::telemetry::SpanKind::Internal);
    assert_eq!(
        task.parent_span_id.as_deref(),
        Some(workflow.span_id.as_str())
    );
    for chat in &chats {
        assert_eq!(chat.kind, testenv::telemetry::SpanKind::Client);
        assert_eq!(
            chat.parent_span_id.as_deref(),
            Some(task.span_id.as_str()),
            "a chat span is not a child of the task span"
        );
    }
    (workflow, task, chats)
}

/// The histogram points of the latest export of `name`, failing when absent.
pub fn metric<'a>(telemetry: &'a Telemetry, name: &str) -> &'a Metric {
    telemetry
        .metric(name)
        .unwrap_or_else(|| panic!("no metric {name}; received: {}", telemetry.summary()))
}

/// The log records of a trace whose body starts with `prefix`.
pub fn logs_starting<'a>(
    telemetry: &'a Telemetry,
    trace_id: &str,
    prefix: &str,
) -> Vec<&'a LogRecord> {
    telemetry
        .logs_for_trace(trace_id)
        .into_iter()
        .filter(|l| l.body_str().is_some_and(|b| b.starts_with(prefix)))
        .collect()
}

/// Asserts that none of `needles` appears in the run's stdout, stderr or result file, nor in any
/// file the collector wrote.
pub fn assert_no_leaks(run: &Run, collector: &Collector, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(!run.stdout.contains(needle), "{what}: {needle:?} on stdout");
        assert!(
            !run.stderr.contains(needle),
            "{what}: {needle:?} on stderr:\n{}",
            run.stderr
        );
        assert!(
            !run.result_text
                .as_deref()
                .unwrap_or_default()
                .contains(needle),
            "{what}: {needle:?} in the result {:?}",
            run.result_text
        );
        let files = collector_files_containing(collector, needle);
        assert!(
            files.is_empty(),
            "{what}: {needle:?} reached the collector: {files:?}"
        );
    }
}
