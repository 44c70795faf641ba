//! Batch mode (`LLMJOB_ITEMS_FILE` set): one pod of an Indexed Job runs its shard of the items.
//!
//! One `llm_job.workflow` span for the pod (a child of the launch `TRACEPARENT`, the same for
//! every pod, so the whole LlmJob is one trace); per item an `openai_call.task` span with its
//! `chat {model}` spans, metrics, logs and content capture exactly as a single-prompt run has
//! them ([`crate::workflow`]'s task). `LLMJOB_CONCURRENCY` items are in flight at once and every
//! request of every item goes through one pod-wide [`Limiter`].
//!
//! Each item's result (its answer, usage and error: the answer is the product, written whatever
//! the content-capture mode, which governs telemetry only) becomes one JSON line, in item order,
//! written to the output ([`crate::output`]). The pod's result line carries the shard's totals
//! ([`ShardResult`]). A shard whose own failed items exceed `LLMJOB_MAX_FAILED_ITEMS` starts no
//! further item and exits 6; what it ran is still written.
//!
//! Like [`crate::workflow`], it performs no output of its own besides the results: printing,
//! the result file and the telemetry flush are `main`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt as _;
use llmjob_crds::result::{ItemError, RunError, RunResult, RunStatus, ShardResult, TokenUsage};
use llmjob_crds::v1alpha1::ContentCapture;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{Value, json};

use crate::attributes as attr;
use crate::capture;
use crate::config::{BatchConfig, Config, Input};
use crate::items::Item;
use crate::limiter::{self, Limiter};
use crate::openai::{self, ChatClient, Completion};
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;
use crate::workflow::{self, CallContext, Exit, Failure, Outcome};

/// Item errors a shard's result line carries at most (the first ones, in item order).
pub const MAX_ITEM_ERRORS: usize = 5;

/// `error.type` of a shard whose failed items exceeded the run's budget.
pub const TOO_MANY_FAILED_ITEMS: &str = "too_many_failed_items";
/// `error.type` of a shard whose results could not be written.
pub const OUTPUT_FAILED: &str = "output";

/// What one item ended with.
struct ItemOutcome {
    /// The item's id.
    id: String,
    /// Its line of the results.
    line: String,
    usage: Option<openai::Usage>,
    attempts: u32,
    error: Option<RunError>,
}

/// What every item of the pod shares.
struct Shared<'a> {
    config: &'a Config,
    batch: &'a BatchConfig,
    telemetry: &'a Telemetry,
    shutdown: &'a Shutdown,
    limiter: Limiter,
    client: ChatClient,
    failed: AtomicU64,
    workflow_cx: Context,
}

/// Runs the pod's shard (see the module documentation).
pub async fn run(
    config: &Config,
    batch: &BatchConfig,
    telemetry: &Telemetry,
    shutdown: &Shutdown,
) -> Outcome {
    let started = Instant::now();
    let shard = &batch.shard;
    let workflow_cx = workflow::start_workflow(
        config,
        telemetry,
        [
            KeyValue::new(attr::LLMJOB_SHARD_INDEX, i64::from(shard.index)),
            KeyValue::new(
                attr::LLMJOB_SHARD_ITEMS,
                i64::try_from(shard.items.len()).unwrap_or(i64::MAX),
            ),
        ],
    );
    let span_context = workflow_cx.span().span_context().clone();
    let client = match ChatClient::new(&config.base_url, config.api_key.clone(), &config.connection)
    {
        Ok(client) => client,
        // Nothing was sent: the environment is wrong (e.g. no CA store), as in a
        // single-prompt run.
        Err(e) => {
            let message = e.describe(config.capture);
            workflow::fail_span(&workflow_cx, e.error_type(), &message);
            workflow_cx.span().end();
            let mut result = RunResult::status_only(RunStatus::Failed);
            result.trace_id = Some(span_context.trace_id().to_string());
            result.span_id = Some(span_context.span_id().to_string());
            result.error = Some(RunError {
                kind: e.error_type().to_owned(),
                message,
                http_status: None,
            });
            return Outcome {
                exit: Exit::Config,
                stdout: None,
                result,
            };
        }
    };
    let shared = Shared {
        config,
        batch,
        telemetry,
        shutdown,
        limiter: Limiter::new(batch.limits),
        client,
        failed: AtomicU64::new(0),
        workflow_cx: workflow_cx.clone(),
    };
    {
        let _guard = workflow_cx.clone().attach();
        tracing::info!(
            gen_ai.request.model = %config.model,
            llmjob.shard.index = shard.index,
            llmjob.shard.items = shard.items.len(),
            batch.items = shard.total_items,
            concurrency = batch.concurrency,
            requests_per_minute = batch.limits.requests_per_minute,
            tokens_per_minute = batch.limits.tokens_per_minute,
            "batch shard started"
        );
    }

    let outcomes: Vec<ItemOutcome> = futures::stream::iter(&shard.items)
        .map(|item| run_item(&shared, item))
        .buffered(batch.concurrency)
        .filter_map(|outcome| async move { outcome })
        .collect()
        .await;

    let failed = shared.failed.load(Ordering::SeqCst);
    let succeeded = outcomes.len() as u64 - failed.min(outcomes.len() as u64);
    let mut usage = TokenUsage::default();
    let mut attempts = 0u32;
    let mut item_errors = Vec::new();
    let mut body = Vec::new();
    for outcome in &outcomes {
        if let Some(u) = outcome.usage {
            let add =
                |sum: &mut Option<u64>, n: u64| *sum = Some(sum.unwrap_or(0).saturating_add(n));
            add(&mut usage.input_tokens, u.input);
            add(&mut usage.output_tokens, u.output);
            add(&mut usage.total_tokens, u.total);
        }
        attempts = attempts.saturating_add(outcome.attempts);
        if let Some(error) = &outcome.error
            && item_errors.len() < MAX_ITEM_ERRORS
        {
            item_errors.push(ItemError {
                id: outcome.id.clone(),
                error: error.clone(),
            });
        }
        body.extend_from_slice(outcome.line.as_bytes());
        body.push(b'\n');
    }
    let written = batch
        .output
        .write(shard.index, body, batch.output_credentials.as_deref())
        .await;

    let mut result = RunResult::status_only(RunStatus::Succeeded);
    result.trace_id = Some(span_context.trace_id().to_string());
    result.span_id = Some(span_context.span_id().to_string());
    result.usage = Some(usage);
    result.attempts = Some(attempts);
    result.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    result.shard = Some(ShardResult {
        index: shard.index,
        succeeded,
        failed,
        output: written.as_ref().ok().cloned(),
        item_errors,
    });
    let cancelled = shutdown.signal();
    let failure = if let Some(signal) = cancelled {
        Some((
            Exit::Cancelled,
            RunError {
                kind: "cancelled".to_owned(),
                message: format!(
                    "{signal} received: {} of {} items ran",
                    outcomes.len(),
                    shard.items.len()
                ),
                http_status: None,
            },
        ))
    } else if failed > batch.max_failed_items {
        Some((
            Exit::TooManyFailedItems,
            RunError {
                kind: TOO_MANY_FAILED_ITEMS.to_owned(),
                message: format!(
                    "{failed} items of this shard failed; the run tolerates {} \
                     (LLMJOB_MAX_FAILED_ITEMS): {} of {} items ran",
                    batch.max_failed_items,
                    outcomes.len(),
                    shard.items.len()
                ),
                http_status: None,
            },
        ))
    } else {
        None
    };
    let failure = match (&written, failure) {
        // A cancellation or the budget decides the exit; a write error is reported besides.
        (_, Some(failure)) => Some(failure),
        (Err(e), None) => Some((
            if e.is_permanent() {
                Exit::Config
            } else {
                Exit::Exhausted
            },
            RunError {
                kind: OUTPUT_FAILED.to_owned(),
                message: e.to_string(),
                http_status: None,
            },
        )),
        (Ok(_), None) => None,
    };

    let _guard = workflow_cx.clone().attach();
    if let Err(e) = &written {
        tracing::error!(error.type = OUTPUT_FAILED, "the results were not written: {e}");
    }
    let exit = match failure {
        Some((exit, error)) => {
            workflow::fail_span(&workflow_cx, error_type(&error.kind), &error.message);
            tracing::error!(
                error.type = %error.kind,
                llmjob.shard.index = shard.index,
                succeeded,
                failed,
                "batch shard failed: {}",
                error.message
            );
            result.status = RunStatus::Failed;
            result.error = Some(error);
            exit
        }
        None => {
            workflow_cx.span().set_status(Status::Ok);
            tracing::info!(
                llmjob.shard.index = shard.index,
                succeeded,
                failed,
                gen_ai.usage.input_tokens = result.usage.as_ref().and_then(|u| u.input_tokens),
                gen_ai.usage.output_tokens = result.usage.as_ref().and_then(|u| u.output_tokens),
                llmjob.attempts = attempts,
                output = result.shard.as_ref().and_then(|s| s.output.as_deref()),
                "batch shard finished"
            );
            Exit::Success
        }
    };
    workflow_cx.span().set_attribute(KeyValue::new(
        attr::LLMJOB_SHARD_FAILED,
        i64::try_from(failed).unwrap_or(i64::MAX),
    ));
    workflow_cx.span().end();
    Outcome {
        exit,
        stdout: Some(summary(&result)),
        result,
    }
}

/// The span's `error.type` for a shard error kind (a static, low-cardinality value).
fn error_type(kind: &str) -> &'static str {
    match kind {
        "cancelled" => "cancelled",
        TOO_MANY_FAILED_ITEMS => TOO_MANY_FAILED_ITEMS,
        _ => OUTPUT_FAILED,
    }
}

/// What a batch pod prints: its totals and where the results are (never content: the answers
/// are in the output).
fn summary(result: &RunResult) -> String {
    let shard = result.shard.clone().unwrap_or_default();
    format!(
        "{}: shard {}: {} items succeeded, {} failed; results {}; trace {}",
        match result.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        },
        shard.index,
        shard.succeeded,
        shard.failed,
        shard.output.as_deref().unwrap_or("not written"),
        result.trace_id.as_deref().unwrap_or("?"),
    )
}

/// Runs one item, unless the shard is stopping (a signal, or its failed items are over the
/// budget): then `None`, and the item is not in the results.
async fn run_item(shared: &Shared<'_>, item: &Item) -> Option<ItemOutcome> {
    let config = shared.config;
    if shared.shutdown.signal().is_some()
        || shared.failed.load(Ordering::SeqCst) > shared.batch.max_failed_items
    {
        return None;
    }
    let started = Instant::now();
    let (server_address, server_port) = openai::server_of(&config.base_url);
    let input_json =
        (config.capture != ContentCapture::None).then(|| capture::input_messages(&item.input));
    let tokens = limiter::estimate_tokens(
        input_chars(&item.input),
        config.parameters.max_tokens,
        config.parameters.n,
    );
    let call = CallContext {
        config,
        telemetry: shared.telemetry,
        server_address,
        server_port,
        provider: openai::provider_of(&config.base_url),
        input: &item.input,
        input_json,
        shutdown: shared.shutdown,
        limiter: Some((&shared.limiter, tokens)),
        item: Some((item.id.as_str(), item.index)),
        client: Some(&shared.client),
    };
    let (result, attempts, task) = workflow::task(&call)
        .with_context(shared.workflow_cx.clone())
        .await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // The item's logs belong to its task span.
    let _guard = Context::new()
        .with_remote_span_context(task.clone())
        .attach();
    let mut line = json!({
        "id": item.id,
        "index": item.index,
        "attempts": attempts,
        "durationMs": duration_ms,
        "traceId": task.trace_id().to_string(),
        "spanId": task.span_id().to_string(),
    });
    let (usage, error) = match &result {
        Ok(completion) => {
            line["status"] = json!("succeeded");
            line["response"] = response_json(completion);
            if let Some(u) = completion.usage {
                line["usage"] = json!({
                    "inputTokens": u.input,
                    "outputTokens": u.output,
                    "totalTokens": u.total,
                });
            }
            let output_json = (config.capture != ContentCapture::None)
                .then(|| capture::output_messages(&completion.choices));
            workflow::log_content(
                config.capture,
                call.input_json.as_deref(),
                output_json.as_deref(),
            );
            log_item(item, Some(completion), None, attempts, duration_ms);
            (completion.usage, None)
        }
        Err(failure) => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            let error = item_error(failure, config.capture);
            line["status"] = json!("failed");
            line["error"] = json!({
                "type": error.kind,
                "message": error.message,
                "httpStatus": error.http_status,
            });
            log_item(item, None, Some(&error), attempts, duration_ms);
            (None, Some(error))
        }
    };
    Some(ItemOutcome {
        id: item.id.clone(),
        line: line.to_string(),
        usage,
        attempts,
        error,
    })
}

/// An item's error, described as the run's would be under `capture`.
fn item_error(failure: &Failure, capture: ContentCapture) -> RunError {
    let error = failure.error();
    RunError {
        kind: error.error_type().to_owned(),
        message: failure.message(capture),
        http_status: error.http_status(),
    }
}

/// The `response` object of a succeeded item's line: the first choice's answer, and every
/// choice when there are several.
fn response_json(completion: &Completion) -> Value {
    let first = completion.first();
    let mut response = json!({
        "id": completion.id,
        "model": completion.model,
        "finishReason": first.and_then(|c| c.finish_reason.clone()),
        "content": first.and_then(|c| c.content.clone()),
    });
    if let Some(choice) = first
        && !choice.tool_calls.is_empty()
    {
        response["toolCalls"] = Value::Array(choice.tool_calls.clone());
    }
    if completion.choices.len() > 1 {
        response["choices"] = completion
            .choices
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "finishReason": c.finish_reason,
                    "content": c.content,
                    "toolCalls": c.tool_calls,
                })
            })
            .collect();
    }
    response
}

/// Characters of an item's input, for its token estimate.
fn input_chars(input: &Input) -> usize {
    match input {
        Input::Prompt(prompt) => prompt.chars().count(),
        Input::Messages(messages) => serde_json::to_string(messages).map_or(0, |s| s.len()),
    }
}

fn log_item(
    item: &Item,
    completion: Option<&Completion>,
    error: Option<&RunError>,
    attempts: u32,
    duration_ms: u64,
) {
    match (completion, error) {
        (Some(c), _) => {
            let usage = c.usage.unwrap_or_default();
            tracing::info!(
                llmjob.item.id = %item.id,
                llmjob.item.index = item.index,
                gen_ai.response.id = %c.id,
                gen_ai.response.model = %c.model,
                gen_ai.response.finish_reasons = %c.finish_reasons.join(","),
                gen_ai.usage.input_tokens = usage.input,
                gen_ai.usage.output_tokens = usage.output,
                llm.usage.total_tokens = usage.total,
                llmjob.attempts = attempts,
                duration_ms,
                "item finished"
            );
        }
        (None, Some(e)) => tracing::warn!(
            llmjob.item.id = %item.id,
            llmjob.item.index = item.index,
            error.type = %e.kind,
            http.response.status_code = e.http_status,
            llmjob.attempts = attempts,
            duration_ms,
            "item failed: {}",
            e.message
        ),
        (None, None) => {}
    }
}
