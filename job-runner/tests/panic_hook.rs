//! The panic path of `llmjob_runner::crash`, in a test binary of its own because the hook is
//! process-wide: a panic inside a span marks that span failed (`error.type=internal_error`, an
//! `exception` event, the source location but never the panic's message) and the guarded run
//! becomes exit 1 with a failed result naming the trace. The spans are read with a recording
//! span processor; nothing is exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmjob_crds::result::RunStatus;
use llmjob_runner::crash;
use llmjob_runner::workflow::Exit;
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};

/// Keeps every ended span.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Recorder {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

const CANARY: &str = "PROMPT-CANARY-in-the-panic-message";

#[tokio::test]
async fn a_panic_marks_the_current_span_and_becomes_an_internal_error() {
    crash::install_hook();
    let recorder = Recorder::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(recorder.clone())
        .build();
    let tracer = provider.tracer("test");
    let cx = Context::current_with_span(tracer.start("chat gpt-4o-mini"));
    let trace_id = cx.span().span_context().trace_id().to_string();

    let outcome = crash::guarded(
        async {
            if std::hint::black_box(true) {
                panic!("{CANARY}");
            }
            crash::internal_error(None)
        }
        .with_context(cx.clone()),
    )
    .await;
    cx.span().end();

    assert_eq!(outcome.exit, Exit::Internal);
    assert_eq!(outcome.exit.code(), 1);
    assert!(outcome.stdout.is_none());
    let result = outcome.result;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.trace_id.as_deref(), Some(trace_id.as_str()));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, crash::ERROR_TYPE);
    assert!(!result.to_line().contains(CANARY));

    let spans = recorder.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    let Status::Error { description } = &span.status else {
        panic!("the span is not failed: {:?}", span.status);
    };
    assert!(
        description.contains("panicked at job-runner/tests/panic_hook.rs"),
        "{description}"
    );
    assert!(!description.contains(CANARY));
    assert!(
        span.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "error.type" && kv.value.as_str() == crash::ERROR_TYPE)
    );
    let exception = span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event");
    assert!(
        exception
            .attributes
            .iter()
            .all(|kv| !kv.value.as_str().contains(CANARY))
    );
}
