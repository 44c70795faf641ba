//! The traced job: the `llm_job` workflow span, the `openai_call` task span and one
//! `chat {model}` client span per HTTP attempt, with the GenAI and OpenLLMetry attributes, the
//! GenAI metrics and the runner's log events, exactly as the Telemetry section of `docs/job-runner.md` lists them.
//!
//! It decides the run's [`Outcome`] (exit code, what stdout gets, result line) but performs no
//! output of its own: printing, writing the result file and flushing telemetry are `main`'s.
//! Stdout follows the content-capture policy of the spans ([`stdout_text`]): the answer only with
//! `full`, a summary without content otherwise.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use async_openai::types::chat::{ChatCompletionTools, ResponseFormat};
use llmjob_crds::result::{RunError, RunResult, RunStatus, TokenUsage};
use llmjob_crds::v1alpha1::{ContentCapture, wire_name};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::attributes as attr;
use crate::capture;
use crate::config::{Config, Input};
use crate::limiter::Limiter;
use crate::openai::{self, CallError, ChatClient, Completion};
use crate::retry::{Decision, RetryPolicy};
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;

/// The runner's exit codes (documented in the README and the telemetry contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The completion was received.
    Success = 0,
    /// Internal error (a bug).
    Internal = 1,
    /// Configuration error.
    Config = 2,
    /// The API refused the request permanently.
    Permanent = 3,
    /// Retryable failures exhausted or the deadline passed.
    Exhausted = 4,
    /// Cancelled by SIGTERM or SIGINT before the run finished (see [`crate::shutdown`]).
    Cancelled = 5,
    /// A batch shard's own failed items exceeded the run's budget (`LLMJOB_MAX_FAILED_ITEMS`).
    TooManyFailedItems = 6,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the process exits.
    pub exit: Exit,
    /// What to print on stdout, on success ([`stdout_text`]): the answer only with content
    /// capture `full`.
    pub stdout: Option<String>,
    /// The one-line result for the termination-message file.
    pub result: RunResult,
}

/// How the attempts ended.
pub(crate) enum Failure {
    /// A non-retryable error.
    Permanent(CallError),
    /// Retryable errors until the attempts or the deadline ran out.
    Exhausted {
        last: CallError,
        reason: &'static str,
    },
}

impl Failure {
    pub(crate) fn error(&self) -> &CallError {
        match self {
            Failure::Permanent(e) | Failure::Exhausted { last: e, .. } => e,
        }
    }

    /// The failure's description as `capture` allows it (see [`CallError::describe`]).
    pub(crate) fn message(&self, capture: ContentCapture) -> String {
        match self {
            Failure::Permanent(e) => e.describe(capture),
            Failure::Exhausted { last, reason } => {
                format!("{reason}; last error: {}", last.describe(capture))
            }
        }
    }

    /// How the process exits.
    fn exit(&self) -> Exit {
        match self {
            // The request or the client cannot be built (e.g. no CA store): nothing was sent;
            // the configuration or the environment is wrong.
            Failure::Permanent(CallError::Request(_) | CallError::Client(_)) => Exit::Config,
            Failure::Permanent(CallError::Cancelled(_)) => Exit::Cancelled,
            Failure::Permanent(_) => Exit::Permanent,
            Failure::Exhausted { .. } => Exit::Exhausted,
        }
    }
}

/// Request-level facts shared by the spans and metrics of every attempt.
pub(crate) struct CallContext<'a> {
    pub(crate) config: &'a Config,
    pub(crate) telemetry: &'a Telemetry,
    pub(crate) server_address: String,
    pub(crate) server_port: u16,
    /// `gen_ai.provider.name` (and `gen_ai.system`), detected from the base URL.
    pub(crate) provider: &'static str,
    /// What the model is asked (`config.input`, or a batch item's).
    pub(crate) input: &'a Input,
    /// `gen_ai.input.messages` when capture is on.
    pub(crate) input_json: Option<String>,
    /// Cancels the in-flight attempt (or the wait before the next) on SIGTERM/SIGINT.
    pub(crate) shutdown: &'a Shutdown,
    /// A batch's pod-wide rate limiter and the tokens each request reserves in it (single-prompt
    /// runs have none).
    pub(crate) limiter: Option<(&'a Limiter, u64)>,
    /// A batch item's id and position, set on its task span.
    pub(crate) item: Option<(&'a str, u64)>,
    /// A batch pod's one client, shared by its items (one connection pool, one TLS setup);
    /// a single-prompt run builds its own.
    pub(crate) client: Option<&'a ChatClient>,
}

impl CallContext<'_> {
    /// Attributes of the metrics (without token type / error type).
    fn metric_attributes(&self, response_model: Option<&str>) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OPERATION_CHAT),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, self.provider),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, self.config.model.clone()),
            KeyValue::new(attr::SERVER_ADDRESS, self.server_address.clone()),
            KeyValue::new(attr::SERVER_PORT, i64::from(self.server_port)),
        ];
        if let Some(model) = response_model {
            attrs.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, model.to_owned()));
        }
        attrs
    }

    /// Attributes of a chat span known before the request is sent.
    fn chat_attributes(&self, attempt: u32) -> Vec<KeyValue> {
        let c = self.config;
        let p = &c.parameters;
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OPERATION_CHAT),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, self.provider),
            KeyValue::new(attr::GEN_AI_SYSTEM, self.provider),
            KeyValue::new(attr::LLM_REQUEST_TYPE, attr::OPERATION_CHAT),
            KeyValue::new(attr::TRACELOOP_WORKFLOW_NAME, attr::WORKFLOW),
            KeyValue::new(attr::TRACELOOP_ENTITY_PATH, attr::TASK),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, c.model.clone()),
            KeyValue::new(attr::GEN_AI_REQUEST_STREAM, p.stream),
            KeyValue::new(attr::LLM_IS_STREAMING, p.stream),
            KeyValue::new(attr::SERVER_ADDRESS, self.server_address.clone()),
            KeyValue::new(attr::SERVER_PORT, i64::from(self.server_port)),
            KeyValue::new(attr::GEN_AI_OPENAI_API_BASE, openai::api_base(&c.base_url)),
            KeyValue::new(attr::LLMJOB_ATTEMPT, i64::from(attempt)),
        ];
        if let Some(t) = p.temperature {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_TEMPERATURE,
                f64::from(t),
            ));
        }
        if let Some(t) = p.top_p {
            attrs.push(KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, f64::from(t)));
        }
        if let Some(m) = p.max_tokens {
            attrs.push(KeyValue::new(attr::GEN_AI_REQUEST_MAX_TOKENS, i64::from(m)));
        }
        if let Some(s) = p.seed {
            attrs.push(KeyValue::new(attr::GEN_AI_REQUEST_SEED, s));
        }
        attrs.extend(self.option_attributes());
        match (c.capture, &self.input_json) {
            (ContentCapture::Full, Some(json)) => {
                attrs.push(KeyValue::new(attr::GEN_AI_INPUT_MESSAGES, json.clone()))
            }
            (ContentCapture::Hash, Some(json)) => {
                attrs.push(KeyValue::new(
                    attr::LLMJOB_INPUT_SHA256,
                    capture::sha256_hex(json),
                ));
            }
            _ => {}
        }
        attrs
    }
}

impl CallContext<'_> {
    /// Attributes of the request options that were set (`stop`, the penalties, `n`, reasoning
    /// effort, service tier, response format, Azure's api-version), and under content capture
    /// `full` those that may identify a person or describe the task (`user`, tool definitions,
    /// the JSON schema), as OpenLLMetry names them.
    fn option_attributes(&self) -> Vec<KeyValue> {
        let c = self.config;
        let p = &c.parameters;
        let mut attrs = Vec::new();
        if let Some(stop) = &p.stop {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_STOP_SEQUENCES,
                string_array(stop),
            ));
        }
        if let Some(v) = p.frequency_penalty {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_FREQUENCY_PENALTY,
                f64::from(v),
            ));
            attrs.push(KeyValue::new(attr::LLM_FREQUENCY_PENALTY, f64::from(v)));
        }
        if let Some(v) = p.presence_penalty {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_PRESENCE_PENALTY,
                f64::from(v),
            ));
            attrs.push(KeyValue::new(attr::LLM_PRESENCE_PENALTY, f64::from(v)));
        }
        if let Some(n) = p.n {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_CHOICE_COUNT,
                i64::from(n),
            ));
        }
        if let Some(effort) = &p.reasoning_effort {
            attrs.push(KeyValue::new(
                attr::GEN_AI_REQUEST_REASONING_EFFORT,
                wire_name(effort),
            ));
        }
        if let Some(tier) = &p.service_tier {
            let tier = wire_name(tier);
            attrs.push(KeyValue::new(
                attr::OPENAI_REQUEST_SERVICE_TIER,
                tier.clone(),
            ));
            attrs.push(KeyValue::new(
                attr::GEN_AI_OPENAI_REQUEST_SERVICE_TIER,
                tier,
            ));
        }
        if let Some(format) = &p.response_format {
            let output_type = match format {
                ResponseFormat::Text => "text",
                ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. } => "json",
            };
            attrs.push(KeyValue::new(attr::GEN_AI_OUTPUT_TYPE, output_type));
        }
        if let Some(version) = &c.connection.api_version {
            attrs.push(KeyValue::new(
                attr::GEN_AI_OPENAI_API_VERSION,
                version.clone(),
            ));
        }
        if c.capture == ContentCapture::Full {
            if let Some(user) = &p.user {
                attrs.push(KeyValue::new(attr::LLM_USER, user.clone()));
            }
            if let Some(ResponseFormat::JsonSchema { json_schema }) = &p.response_format {
                attrs.push(KeyValue::new(
                    attr::GEN_AI_REQUEST_STRUCTURED_OUTPUT_SCHEMA,
                    json_schema.schema.to_string(),
                ));
            }
            for (i, tool) in p.tools.iter().flatten().enumerate() {
                if let ChatCompletionTools::Function(tool) = tool {
                    let prefix = format!("{}.{i}", attr::LLM_REQUEST_FUNCTIONS);
                    let f = &tool.function;
                    attrs.push(KeyValue::new(format!("{prefix}.name"), f.name.clone()));
                    if let Some(d) = &f.description {
                        attrs.push(KeyValue::new(format!("{prefix}.description"), d.clone()));
                    }
                    if let Some(params) = &f.parameters {
                        attrs.push(KeyValue::new(
                            format!("{prefix}.parameters"),
                            params.to_string(),
                        ));
                    }
                }
            }
        }
        attrs
    }
}

fn string_array(values: &[String]) -> Value {
    Value::Array(Array::String(
        values
            .iter()
            .map(|v| StringValue::from(v.clone()))
            .collect(),
    ))
}

/// Marks a span failed: status ERROR, `error.type`, and an `exception` event.
pub(crate) fn fail_span(cx: &Context, error_type: &'static str, message: &str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type),
            KeyValue::new("exception.message", message.to_owned()),
        ],
    );
    span.set_status(Status::error(message.to_owned()));
}

/// Starts a pod's `llm_job.workflow` span (Traceloop's workflow attributes and `extra`), the
/// child of the run's `TRACEPARENT` when there is one, and returns its context: the one way a
/// single-prompt run and a batch shard begin their trace.
pub(crate) fn start_workflow(
    config: &Config,
    telemetry: &Telemetry,
    extra: impl IntoIterator<Item = KeyValue>,
) -> opentelemetry::Context {
    let tracer = &telemetry.tracer;
    let parent = config.telemetry.parent.clone().unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new(attr::TRACELOOP_WORKFLOW_NAME, attr::WORKFLOW),
        KeyValue::new(attr::TRACELOOP_SPAN_KIND, "workflow"),
        KeyValue::new(attr::TRACELOOP_ENTITY_NAME, attr::WORKFLOW),
    ];
    attributes.extend(extra);
    let workflow = tracer
        .span_builder("llm_job.workflow")
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    parent.with_span(workflow)
}

/// Runs the job: the workflow, its task and the attempts. A signal on `shutdown` cancels the
/// in-flight attempt: the run then fails with `error.type=cancelled` and [`Exit::Cancelled`].
pub async fn run(config: &Config, telemetry: &Telemetry, shutdown: &Shutdown) -> Outcome {
    let started = Instant::now();
    let workflow_cx = start_workflow(config, telemetry, []);
    let span_context = workflow_cx.span().span_context().clone();

    let (server_address, server_port) = openai::server_of(&config.base_url);
    let input_json =
        (config.capture != ContentCapture::None).then(|| capture::input_messages(&config.input));
    if let (ContentCapture::Full, Some(json)) = (config.capture, &input_json) {
        workflow_cx
            .span()
            .set_attribute(KeyValue::new(attr::TRACELOOP_ENTITY_INPUT, json.clone()));
    }
    let call = CallContext {
        config,
        telemetry,
        server_address,
        server_port,
        provider: openai::provider_of(&config.base_url),
        input: &config.input,
        input_json,
        shutdown,
        limiter: None,
        item: None,
        client: None,
    };

    let (outcome, attempts) = async {
        log_started(config);
        let (result, attempts, _) = task(&call).await;
        (result, attempts)
    }
    .with_context(workflow_cx.clone())
    .await;

    let duration = started.elapsed();
    let mut result = RunResult {
        status: RunStatus::Succeeded,
        shard: None,
        trace_id: Some(span_context.trace_id().to_string()),
        span_id: Some(span_context.span_id().to_string()),
        response_id: None,
        model: None,
        finish_reason: None,
        finish_reasons: Vec::new(),
        usage: None,
        duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        attempts: Some(attempts),
        input_sha256: None,
        output_sha256: None,
        error: None,
    };
    let (exit, stdout) = {
        let _guard = workflow_cx.clone().attach();
        match outcome {
            Ok(completion) => {
                result.response_id = Some(completion.id.clone());
                result.model = Some(completion.model.clone());
                result.finish_reason = completion.finish_reasons.first().cloned();
                if completion.choices.len() > 1 {
                    result.finish_reasons = completion.finish_reasons.clone();
                }
                result.usage = completion.usage.map(|u| TokenUsage {
                    input_tokens: Some(u.input),
                    output_tokens: Some(u.output),
                    total_tokens: Some(u.total),
                });
                let output_json = (config.capture != ContentCapture::None)
                    .then(|| capture::output_messages(&completion.choices));
                if config.capture == ContentCapture::Full
                    && let Some(json) = &output_json
                {
                    workflow_cx
                        .span()
                        .set_attribute(KeyValue::new(attr::TRACELOOP_ENTITY_OUTPUT, json.clone()));
                }
                if config.capture == ContentCapture::Hash {
                    result.input_sha256 = call.input_json.as_deref().map(capture::sha256_hex);
                    result.output_sha256 = output_json.as_deref().map(capture::sha256_hex);
                }
                log_content(
                    config.capture,
                    call.input_json.as_deref(),
                    output_json.as_deref(),
                );
                log_finished(&completion, attempts, duration);
                workflow_cx.span().set_status(Status::Ok);
                (
                    Exit::Success,
                    Some(stdout_text(config.capture, &completion.answer(), &result)),
                )
            }
            Err(failure) => {
                let error = failure.error();
                let message = failure.message(config.capture);
                fail_span(&workflow_cx, error.error_type(), &message);
                tracing::error!(
                    error.type = error.error_type(),
                    http.response.status_code = error.http_status(),
                    llmjob.attempts = attempts,
                    duration_ms = result.duration_ms,
                    "job failed: {message}"
                );
                result.status = RunStatus::Failed;
                result.error = Some(RunError {
                    kind: error.error_type().to_owned(),
                    message,
                    http_status: error.http_status(),
                });
                (failure.exit(), None)
            }
        }
    };
    workflow_cx.span().end();
    Outcome {
        exit,
        stdout,
        result,
    }
}

/// What a successful run prints on stdout, following the same content policy as the spans:
/// with `full`, the answer; with `none` (the default) and `hash`, no prompt or answer but a
/// summary of the result (response id, model, finish reason, tokens, trace id; with `hash` the
/// SHA-256 of input and output, as on the chat span) and a line saying how to get the answer.
/// The summary is built from `result`, whose fields are already bounded.
pub fn stdout_text(capture: ContentCapture, answer: &str, result: &RunResult) -> String {
    if capture == ContentCapture::Full {
        return answer.to_owned();
    }
    let unknown = || "?".to_owned();
    let usage = result.usage.as_ref();
    let tokens = |n: Option<u64>| n.map_or_else(unknown, |n| n.to_string());
    let mut summary = format!(
        "succeeded: response {}, model {}, finish reason {}, tokens {} input / {} output / {} total, trace {}",
        result.response_id.clone().unwrap_or_else(unknown),
        result.model.clone().unwrap_or_else(unknown),
        result.finish_reason.clone().unwrap_or_else(unknown),
        tokens(usage.and_then(|u| u.input_tokens)),
        tokens(usage.and_then(|u| u.output_tokens)),
        tokens(usage.and_then(|u| u.total_tokens)),
        result.trace_id.clone().unwrap_or_else(unknown),
    );
    if let Some(h) = &result.input_sha256 {
        summary.push_str(&format!(", input sha256 {h}"));
    }
    if let Some(h) = &result.output_sha256 {
        summary.push_str(&format!(", output sha256 {h}"));
    }
    format!(
        "{summary}\nthe answer is not printed (content capture {}): it is printed here with \
         spec.telemetry.contentCapture: full (LLMJOB_CONTENT_CAPTURE=full)",
        capture.as_str()
    )
}

fn log_started(config: &Config) {
    match &config.input {
        Input::Prompt(prompt) => tracing::info!(
            gen_ai.request.model = %config.model,
            prompt_chars = prompt.chars().count(),
            stream = config.parameters.stream,
            "job started"
        ),
        Input::Messages(messages) => tracing::info!(
            gen_ai.request.model = %config.model,
            messages = messages.len(),
            stream = config.parameters.stream,
            "job started"
        ),
    }
}

fn log_finished(completion: &Completion, attempts: u32, duration: Duration) {
    let usage = completion.usage.unwrap_or_default();
    tracing::info!(
        gen_ai.response.id = %completion.id,
        gen_ai.response.model = %completion.model,
        gen_ai.response.finish_reasons = %completion.finish_reasons.join(","),
        gen_ai.usage.input_tokens = usage.input,
        gen_ai.usage.output_tokens = usage.output,
        llm.usage.total_tokens = usage.total,
        response_chars = completion.answer().chars().count(),
        llmjob.attempts = attempts,
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        "job finished"
    );
}

/// The content event of capture modes `full` (the messages) and `hash` (their hashes).
pub(crate) fn log_content(mode: ContentCapture, input: Option<&str>, output: Option<&str>) {
    match mode {
        ContentCapture::None => {}
        ContentCapture::Full => tracing::event!(
            name: attr::EVENT_OPERATION_DETAILS,
            tracing::Level::INFO,
            gen_ai.operation.name = attr::OPERATION_CHAT,
            gen_ai.input.messages = input.unwrap_or_default(),
            gen_ai.output.messages = output.unwrap_or_default(),
            "{}",
            attr::EVENT_OPERATION_DETAILS
        ),
        ContentCapture::Hash => tracing::event!(
            name: attr::EVENT_OPERATION_DETAILS,
            tracing::Level::INFO,
            gen_ai.operation.name = attr::OPERATION_CHAT,
            llmjob.input.sha256 = input.map(capture::sha256_hex).unwrap_or_default(),
            llmjob.output.sha256 = output.map(capture::sha256_hex).unwrap_or_default(),
            "{}",
            attr::EVENT_OPERATION_DETAILS
        ),
    }
}

/// The `openai_call` task: attempts until success, a permanent error, or the budget runs out.
/// Returns the outcome, the attempts made and the task span's context.
pub(crate) async fn task(
    call: &CallContext<'_>,
) -> (
    Result<Completion, Failure>,
    u32,
    opentelemetry::trace::SpanContext,
) {
    let tracer = &call.telemetry.tracer;
    let task_span = tracer
        .span_builder("openai_call.task")
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new(attr::TRACELOOP_WORKFLOW_NAME, attr::WORKFLOW),
            KeyValue::new(attr::TRACELOOP_SPAN_KIND, "task"),
            KeyValue::new(attr::TRACELOOP_ENTITY_NAME, attr::TASK),
        ])
        .start(tracer);
    let task_cx = Context::current_with_span(task_span);
    if let Some((id, index)) = call.item {
        task_cx
            .span()
            .set_attribute(KeyValue::new(attr::LLMJOB_ITEM_ID, id.to_owned()));
        task_cx.span().set_attribute(KeyValue::new(
            attr::LLMJOB_ITEM_INDEX,
            i64::try_from(index).unwrap_or(i64::MAX),
        ));
    }
    if let (ContentCapture::Full, Some(json)) = (call.config.capture, &call.input_json) {
        task_cx
            .span()
            .set_attribute(KeyValue::new(attr::TRACELOOP_ENTITY_INPUT, json.clone()));
    }
    let (result, attempts) = attempts(call, &task_cx).with_context(task_cx.clone()).await;
    task_cx
        .span()
        .set_attribute(KeyValue::new(attr::LLMJOB_ATTEMPTS, i64::from(attempts)));
    match &result {
        Ok(completion) => {
            if call.config.capture == ContentCapture::Full {
                let output = capture::output_messages(&completion.choices);
                task_cx
                    .span()
                    .set_attribute(KeyValue::new(attr::TRACELOOP_ENTITY_OUTPUT, output));
            }
            task_cx.span().set_status(Status::Ok);
        }
        Err(failure) => fail_span(
            &task_cx,
            failure.error().error_type(),
            &failure.message(call.config.capture),
        ),
    }
    task_cx.span().end();
    (result, attempts, task_cx.span().span_context().clone())
}

async fn attempts(call: &CallContext<'_>, task_cx: &Context) -> (Result<Completion, Failure>, u32) {
    let config = call.config;
    let policy = RetryPolicy::new(config.max_attempts, config.timeout, Instant::now());
    let own;
    let client = match call.client {
        Some(client) => client,
        None => {
            match ChatClient::new(&config.base_url, config.api_key.clone(), &config.connection) {
                Ok(client) => {
                    own = client;
                    &own
                }
                Err(e) => return (Err(Failure::Permanent(e)), 0),
            }
        }
    };
    let request = openai::build_request(config, call.input);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A batch's requests wait for the pod's limiter (spacing, tokens, a 429's pause).
        let reservation = match call.limiter {
            None => None,
            Some((limiter, tokens)) => tokio::select! {
                reservation = limiter.acquire(tokens) => Some((limiter, reservation)),
                signal = call.shutdown.requested() => {
                    return (Err(Failure::Permanent(CallError::Cancelled(signal))), attempt - 1);
                }
            },
        };
        let result = chat_attempt(
            call,
            client,
            &request,
            attempt,
            policy.remaining(Instant::now()),
        )
        .await;
        if let Some((limiter, reservation)) = reservation {
            let used = result.as_ref().ok().and_then(|c| c.usage).map(|u| u.total);
            limiter.settle(reservation, used);
        }
        let error = match result {
            Ok(completion) => return (Ok(completion), attempt),
            Err(error) if !error.is_retryable() => {
                return (Err(Failure::Permanent(error)), attempt);
            }
            Err(error) => error,
        };
        let reason = match policy.decide(attempt, error.retry_after(), Instant::now()) {
            Decision::RetryAfter(delay) => {
                // A 429 slows the whole pod, not only this item: every request waits as long.
                if let (Some((limiter, _)), Some(429)) = (call.limiter, error.http_status()) {
                    limiter.pause(delay);
                }
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                task_cx.span().add_event(
                    attr::EVENT_RETRY,
                    vec![
                        KeyValue::new(attr::LLMJOB_ATTEMPT, i64::from(attempt)),
                        KeyValue::new(attr::ERROR_TYPE, error.error_type()),
                        KeyValue::new(
                            attr::HTTP_RESPONSE_STATUS_CODE,
                            error.http_status().map_or(0, i64::from),
                        ),
                        KeyValue::new(attr::LLMJOB_RETRY_DELAY_MS, delay_ms),
                    ],
                );
                tracing::warn!(
                    llmjob.attempt = attempt,
                    error.type = error.error_type(),
                    http.response.status_code = error.http_status(),
                    retry.delay_ms = delay_ms,
                    "attempt {attempt} failed ({}); retrying in {delay:?}",
                    error.describe(config.capture)
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    signal = call.shutdown.requested() => {
                        tracing::warn!(llmjob.attempt = attempt, "{signal} received while waiting to retry");
                        return (Err(Failure::Permanent(CallError::Cancelled(signal))), attempt);
                    }
                }
            }
            Decision::AttemptsExhausted => "retry attempts exhausted",
            Decision::DeadlineExceeded => "the run's deadline (LLMJOB_TIMEOUT) passed",
        };
        tracing::warn!(
            llmjob.attempt = attempt,
            error.type = error.error_type(),
            http.response.status_code = error.http_status(),
            "attempt {attempt} failed ({}); giving up: {reason}",
            error.describe(config.capture)
        );
        return (
            Err(Failure::Exhausted {
                last: error,
                reason,
            }),
            attempt,
        );
    }
}

/// One HTTP attempt under its own `chat {model}` client span.
async fn chat_attempt(
    call: &CallContext<'_>,
    client: &ChatClient,
    request: &async_openai::types::chat::CreateChatCompletionRequest,
    attempt: u32,
    time_left: Duration,
) -> Result<Completion, CallError> {
    let tracer = &call.telemetry.tracer;
    let span = tracer
        .span_builder(format!("chat {}", call.config.model))
        .with_kind(SpanKind::Client)
        .with_attributes(call.chat_attributes(attempt))
        .start(tracer);
    let cx = Context::current_with_span(span);
    let mut headers = http::HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));

    let started = Instant::now();
    let result = if let Some(signal) = call.shutdown.signal() {
        Err(CallError::Cancelled(signal))
    } else if time_left.is_zero() {
        Err(CallError::Timeout(Duration::ZERO))
    } else {
        tokio::select! {
            result = client.send(request, headers, time_left).with_context(cx.clone()) => result,
            signal = call.shutdown.requested() => Err(CallError::Cancelled(signal)),
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let instruments = &call.telemetry.instruments;
    let span = cx.span();
    match &result {
        Ok(c) => {
            let mut attrs = call.metric_attributes(Some(&c.model));
            instruments.duration.record(elapsed, &attrs);
            if let Some(ttfc) = c.time_to_first_chunk {
                instruments
                    .time_to_first_chunk
                    .record(ttfc.as_secs_f64(), &attrs);
                span.set_attribute(KeyValue::new(
                    attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                    ttfc.as_secs_f64(),
                ));
            }
            for reason in &c.finish_reasons {
                let mut with_reason = attrs.clone();
                with_reason.push(KeyValue::new(
                    attr::GEN_AI_RESPONSE_FINISH_REASON,
                    reason.clone(),
                ));
                instruments.choices.add(1, &with_reason);
            }
            span.set_attribute(KeyValue::new(attr::GEN_AI_RESPONSE_ID, c.id.clone()));
            span.set_attribute(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, c.model.clone()));
            span.set_attribute(KeyValue::new(
                attr::GEN_AI_RESPONSE_FINISH_REASONS,
                string_array(&c.finish_reasons),
            ));
            if let Some(tier) = &c.service_tier {
                span.set_attribute(KeyValue::new(
                    attr::OPENAI_RESPONSE_SERVICE_TIER,
                    tier.clone(),
                ));
                span.set_attribute(KeyValue::new(
                    attr::GEN_AI_OPENAI_RESPONSE_SERVICE_TIER,
                    tier.clone(),
                ));
            }
            if let Some(fp) = &c.system_fingerprint {
                span.set_attribute(KeyValue::new(
                    attr::OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
                    fp.clone(),
                ));
            }
            if let Some(u) = c.usage {
                let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                span.set_attribute(KeyValue::new(
                    attr::GEN_AI_USAGE_INPUT_TOKENS,
                    to_i64(u.input),
                ));
                span.set_attribute(KeyValue::new(
                    attr::GEN_AI_USAGE_OUTPUT_TOKENS,
                    to_i64(u.output),
                ));
                span.set_attribute(KeyValue::new(attr::LLM_USAGE_TOTAL_TOKENS, to_i64(u.total)));
                if let Some(cached) = u.cache_read {
                    span.set_attribute(KeyValue::new(
                        attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                        to_i64(cached),
                    ));
                }
                if let Some(reasoning) = u.reasoning {
                    span.set_attribute(KeyValue::new(
                        attr::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
                        to_i64(reasoning),
                    ));
                }
                attrs.push(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, "input"));
                instruments.token_usage.record(u.input, &attrs);
                if let Some(last) = attrs.last_mut() {
                    *last = KeyValue::new(attr::GEN_AI_TOKEN_TYPE, "output");
                }
                instruments.token_usage.record(u.output, &attrs);
            }
            if call.config.capture == ContentCapture::Full {
                for (key, value) in capture::completion_attributes(&c.choices) {
                    span.set_attribute(KeyValue::new(key, value));
                }
            }
            if call.config.capture != ContentCapture::None {
                let output = capture::output_messages(&c.choices);
                let (key, value): (&'static str, Cow<'_, str>) = match call.config.capture {
                    ContentCapture::Full => (attr::GEN_AI_OUTPUT_MESSAGES, Cow::Owned(output)),
                    _ => (
                        attr::LLMJOB_OUTPUT_SHA256,
                        Cow::Owned(capture::sha256_hex(&output)),
                    ),
                };
                span.set_attribute(KeyValue::new(key, value.into_owned()));
            }
            if refusal_of(c).is_none() {
                span.set_status(Status::Ok);
            }
        }
        Err(e) => {
            let mut attrs = call.metric_attributes(None);
            attrs.push(KeyValue::new(attr::ERROR_TYPE, e.error_type()));
            instruments.duration.record(elapsed, &attrs);
            if let Some(status) = e.http_status() {
                span.set_attribute(KeyValue::new(
                    attr::HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status),
                ));
            }
            fail_span(&cx, e.error_type(), &e.describe(call.config.capture));
        }
    }
    // A refusal is a complete response (recorded above) that answers nothing: the run fails.
    let result = match result {
        Ok(c) => match refusal_of(&c) {
            Some(text) => {
                let e = CallError::Refused { text };
                fail_span(&cx, e.error_type(), &e.describe(call.config.capture));
                Err(e)
            }
            None => Ok(c),
        },
        Err(e) => Err(e),
    };
    span.end();
    result
}

/// The first choice's refusal: the run fails when the model refused to answer.
fn refusal_of(completion: &Completion) -> Option<String> {
    completion.first().and_then(|c| c.refusal.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_operators_contract() {
        use llmjob_crds::env::exit;
        assert_eq!(i32::from(Exit::Config.code()), exit::CONFIG);
        assert_eq!(i32::from(Exit::Permanent.code()), exit::PERMANENT);
        assert_eq!(i32::from(Exit::Cancelled.code()), exit::CANCELLED);
        assert_eq!(
            i32::from(Exit::TooManyFailedItems.code()),
            exit::TOO_MANY_FAILED_ITEMS
        );
        let cancelled = Failure::Permanent(CallError::Cancelled("SIGTERM"));
        assert_eq!(cancelled.exit(), Exit::Cancelled);
        assert_eq!(cancelled.error().error_type(), "cancelled");
        assert!(!cancelled.error().is_retryable());
    }

    fn result() -> RunResult {
        RunResult::parse(
            r#"{"status":"succeeded","traceId":"1111111111111111111111111111111a","responseId":"chatcmpl-1","model":"gpt-4o-mini","finishReason":"stop","usage":{"inputTokens":23,"outputTokens":8,"totalTokens":31}}"#,
        )
        .unwrap()
    }

    #[test]
    fn stdout_carries_the_answer_only_with_full() {
        assert_eq!(
            stdout_text(ContentCapture::Full, "ANSWER-CANARY", &result()),
            "ANSWER-CANARY"
        );
        let none = stdout_text(ContentCapture::None, "ANSWER-CANARY", &result());
        assert!(!none.contains("ANSWER-CANARY"), "{none}");
        assert_eq!(
            none.lines().next(),
            Some(
                "succeeded: response chatcmpl-1, model gpt-4o-mini, finish reason stop, tokens 23 \
                 input / 8 output / 31 total, trace 1111111111111111111111111111111a"
            )
        );
        assert!(none.contains("content capture none"), "{none}");
        assert!(none.contains("contentCapture: full"), "{none}");
    }

    #[test]
    fn stdout_under_hash_has_the_hashes_as_the_span_does() {
        let mut r = result();
        r.input_sha256 = Some("aa".repeat(32));
        r.output_sha256 = Some("bb".repeat(32));
        r.usage = None;
        let text = stdout_text(ContentCapture::Hash, "ANSWER-CANARY", &r);
        assert!(!text.contains("ANSWER-CANARY"), "{text}");
        assert!(text.contains("tokens ? input"), "{text}");
        assert!(
            text.contains(&format!("input sha256 {}", "aa".repeat(32))),
            "{text}"
        );
        assert!(
            text.contains(&format!("output sha256 {}", "bb".repeat(32))),
            "{text}"
        );
        assert!(text.contains("content capture hash"), "{text}");
    }
}
