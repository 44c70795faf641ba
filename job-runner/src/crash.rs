//! Turns a panic (a bug) into a classified failure instead of exit 101 with nothing reported:
//! [`install_hook`] marks the span that was current when the panic happened and logs where it
//! happened; [`guarded`] catches the unwinding run and returns an [`Outcome`] with exit code 1
//! (internal error) and a failed result, so `main` still prints, writes the result and flushes
//! telemetry as on any other failure.
//!
//! The panic's own message is never exported or printed: it may quote a prompt, an answer or a
//! header. Only its source location is.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};

use futures::FutureExt as _;
use llmjob_crds::result::{RunError, RunResult, RunStatus};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use crate::attributes as attr;
use crate::workflow::{Exit, Outcome};

/// The `error.type` of a panic.
pub const ERROR_TYPE: &str = "internal_error";

/// The trace id current when the last panic happened, for the result.
static PANIC_TRACE: Mutex<Option<String>> = Mutex::new(None);

/// Installs the panic hook: a line on stderr naming the source location, an ERROR status,
/// `error.type` and `exception` event on the current span (when there is one), and an ERROR log
/// record. Replaces the default hook, which prints the panic's message.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "an unknown location".to_owned(), ToString::to_string);
        let description = format!("internal error: the runner panicked at {location}");
        eprintln!("llmjob-runner: {description}");
        let cx = Context::current();
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            *PANIC_TRACE.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(span_context.trace_id().to_string());
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, ERROR_TYPE));
            span.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", ERROR_TYPE),
                    KeyValue::new("exception.message", description.clone()),
                ],
            );
            span.set_status(Status::error(description.clone()));
        }
        tracing::error!(error.type = ERROR_TYPE, "{description}");
    }));
}

/// Runs `run`; if it panics, returns the internal-error outcome instead.
pub async fn guarded(run: impl Future<Output = Outcome>) -> Outcome {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            let trace_id = PANIC_TRACE
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            internal_error(trace_id)
        }
    }
}

/// The outcome of a run that ended in a panic.
pub fn internal_error(trace_id: Option<String>) -> Outcome {
    Outcome {
        exit: Exit::Internal,
        stdout: None,
        result: RunResult {
            trace_id,
            error: Some(RunError {
                kind: ERROR_TYPE.to_owned(),
                message: "internal error (a bug): the runner panicked; stderr names where"
                    .to_owned(),
                http_status: None,
            }),
            ..RunResult::status_only(RunStatus::Failed)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_run_becomes_an_internal_error() {
        let outcome = guarded(async {
            let values: Vec<u8> = Vec::new();
            // An out-of-bounds index the compiler cannot see through.
            let index = values.len() + usize::from(std::hint::black_box(true));
            if values[index] == 0 {
                unreachable!("indexing panicked");
            }
            internal_error(None)
        })
        .await;
        assert_eq!(outcome.exit, Exit::Internal);
        assert_eq!(outcome.exit.code(), 1);
        assert_eq!(outcome.result.status, RunStatus::Failed);
        let error = outcome
            .result
            .error
            .clone()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(error.kind, ERROR_TYPE);
        assert!(outcome.result.to_line().len() < 4096);
    }

    #[tokio::test]
    async fn a_run_that_does_not_panic_is_unchanged() {
        let outcome = guarded(async { internal_error(Some("t".into())) }).await;
        assert_eq!(outcome.result.trace_id.as_deref(), Some("t"));
    }
}
