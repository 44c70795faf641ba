//! An OpenAI-compatible replay server: answers `POST /v1/chat/completions` with real, recorded
//! OpenAI responses (see `fixtures/README.md` for their provenance), so that the job-runner's
//! integration tests, the operator's end-to-end tests and the local demo run without an OpenAI
//! account or network.
//!
//! The server runs on a thread of its own with its own tokio runtime, so it keeps answering
//! while a test blocks (for instance on `std::process::Command::output`), under any runtime or
//! none ([`ReplayServer::start_blocking`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use openai_replay::{Faults, ReplayConfig, ReplayServer};
//!
//! # async fn demo() -> Result<(), openai_replay::ReplayError> {
//! let server = ReplayServer::start(
//!     ReplayConfig::new()
//!         .with_api_key("sk-test")
//!         .with_faults(Faults::fail_first(1).with_status(429).with_retry_after(Duration::from_millis(200))),
//! )
//! .await?;
//! // Point the client at it: OPENAI_BASE_URL=http://127.0.0.1:PORT/v1, key "sk-test".
//! let base_url = server.base_url();
//! # let _ = base_url;
//! // ... run the client: its first request gets a 429, its retry the recorded answer ...
//! for request in server.requests() {
//!     assert_eq!(request.header("authorization"), Some("Bearer <redacted>"));
//! }
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! - `POST /v1/chat/completions` (also `/chat/completions`): a recorded answer, chosen by the
//!   [`Scenario`]. The recorded status, headers (`content-type`, `x-request-id`) and body are
//!   served as recorded: in particular the response's `model` is the recorded one (e.g.
//!   `gpt-4o-mini-2024-07-18`), whatever model was asked for, and never rewritten. Streamed
//!   fixtures are sent event by event, [`ReplayConfig::chunk_delay`] apart, byte for byte as
//!   recorded, as `text/event-stream`.
//! - `GET /v1/models` (also `/models`, and `/v1/models/{id}`): the models that appear in the
//!   successful recordings.
//! - `GET /healthz`: `ok` (not recorded, never needs a key).
//! - anything else: OpenAI's 404 `Invalid URL (METHOD /path)` error.
//!
//! # Choosing the fixture (`Scenario::Auto`)
//!
//! First match wins: a model recorded as not found (`gpt-3.5-turbo-0613`) → the recorded 404;
//! a content part of type `image_url` → the recorded 400; `stream` with tools →
//! `chat_tool_call_stream`; `stream` with `stream_options.include_usage` →
//! `chat_stream_include_usage`; `stream` → `chat_stream`; tools → `chat_tool_call`; `n` ≥ 2 →
//! `chat_multi_choice_n2`; otherwise `chat_gpt4o_mini`. `chat_basic` is served only with
//! [`Scenario::Fixed`].
//!
//! # Order of checks for a chat request
//!
//! API key (401, when [`ReplayConfig::api_key`] is set) → injected [`Faults`] → the
//! [`Hostile`] misbehaviour, when one is set ([`ReplayConfig::hostile`]; see its module for the
//! list) → body must be a JSON object with a `model` string (400) → the fixture. Every answer, whichever step produced
//! it, waits [`ReplayConfig::delay`] first, and every request is recorded
//! ([`ReplayServer::requests`]) with its `authorization` header redacted.

mod config;
mod error;
mod fixtures;
mod hostile;
mod openai_error;
mod record;
mod select;
mod server;

pub use config::{Faults, ReplayConfig, Scenario};
pub use error::ReplayError;
pub use fixtures::{FIXTURE_NAMES, fixture_file};
pub use hostile::{HOSTILE_ANSWER, HOSTILE_NAMES, Hostile, REFUSAL, UnknownHostile};
pub use record::RecordedRequest;
pub use server::ReplayServer;
