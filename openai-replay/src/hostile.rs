//! Hostile and odd servers: answers that break the usual shape of the OpenAI API, for testing
//! how a client holds up. A [`Hostile`] behaviour replaces the fixture answer of every
//! chat-completions request (after the API-key check and the injected [`crate::Faults`]).
//!
//! Each behaviour is one thing compatible servers, proxies or attackers really do: absurd
//! headers, bodies that are not JSON or stop halfway, oversized fields and bodies, enum values
//! the OpenAI schema does not list, missing optional fields, answers with no choices or only a
//! refusal, errors inside a stream, connections dropped mid-stream, streams that drip a byte at
//! a time, and error messages that echo the request, credentials included.
//!
//! The CLI spelling ([`Hostile::from_str`]) is `NAME` or `NAME=ARG`; [`HOSTILE_NAMES`] lists the
//! names.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::{Value, json};

/// The CLI names of the behaviours, with their argument where they take one.
pub const HOSTILE_NAMES: &[&str] = &[
    "retry-after=VALUE",
    "non-json",
    "truncated-body",
    "oversized-body=BYTES",
    "oversized-fields=BYTES",
    "unknown-enums",
    "empty-choices",
    "refusal",
    "stream-error",
    "stream-drop",
    "done-only",
    "slow-drip=MS",
    "echo-error=STATUS",
];

/// The answer text of the behaviours that answer successfully.
pub const HOSTILE_ANSWER: &str = "An odd server answered.";
/// The refusal text of [`Hostile::Refusal`].
pub const REFUSAL: &str = "I'm sorry, I can't help with that.";

/// One way of misbehaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// HTTP 429 with this literal value as `Retry-After` and `retry-after-ms`, plus a
    /// rate-limit header holding bytes that are not UTF-8.
    RetryAfter(String),
    /// HTTP 200, `content-type: application/json`, and an HTML error page as the body.
    NonJson,
    /// HTTP 200 whose JSON body stops halfway: the connection is closed mid-body.
    TruncatedBody,
    /// HTTP 200 with a well-formed completion whose answer is this many bytes long.
    OversizedBody(usize),
    /// HTTP 200 with a completion whose `id`, `model` and `system_fingerprint` are each this many
    /// bytes long.
    OversizedFields(usize),
    /// HTTP 200 with `finish_reason` and `service_tier` values the OpenAI schema does not list,
    /// `usage` without `total_tokens`, and no `object`, `created` or `system_fingerprint`.
    UnknownEnums,
    /// HTTP 200 with `choices: []`.
    EmptyChoices,
    /// HTTP 200 whose only choice has `content: null` and a `refusal` ([`REFUSAL`]).
    Refusal,
    /// A stream whose second event is an `error` object whose message echoes the request.
    StreamError,
    /// A stream that stops after its first chunk: the connection is dropped, no `[DONE]`.
    StreamDrop,
    /// A stream of nothing but `data: [DONE]`.
    DoneOnly,
    /// A complete, valid stream sent one byte per interval.
    SlowDrip(Duration),
    /// This error status, with an OpenAI-shaped error whose message quotes the request body and
    /// its `Authorization` header (as FastAPI-based servers quote bodies in validation errors).
    EchoError(u16),
}

/// A [`Hostile`] spelling that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hostile behaviour {0:?}; known: {known}", known = HOSTILE_NAMES.join(", "))]
pub struct UnknownHostile(String);

impl FromStr for Hostile {
    type Err = UnknownHostile;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownHostile(spec.to_owned());
        let (name, arg) = match spec.split_once('=') {
            Some((name, arg)) => (name, Some(arg)),
            None => (spec, None),
        };
        let number = |arg: Option<&str>| -> Result<u64, UnknownHostile> {
            arg.and_then(|a| a.parse().ok()).ok_or_else(unknown)
        };
        let size = |arg| number(arg).and_then(|n| usize::try_from(n).map_err(|_| unknown()));
        Ok(match (name, arg) {
            ("retry-after", Some(value)) => Hostile::RetryAfter(value.to_owned()),
            ("non-json", None) => Hostile::NonJson,
            ("truncated-body", None) => Hostile::TruncatedBody,
            ("oversized-body", arg) => Hostile::OversizedBody(size(arg)?),
            ("oversized-fields", arg) => Hostile::OversizedFields(size(arg)?),
            ("unknown-enums", None) => Hostile::UnknownEnums,
            ("empty-choices", None) => Hostile::EmptyChoices,
            ("refusal", None) => Hostile::Refusal,
            ("stream-error", None) => Hostile::StreamError,
            ("stream-drop", None) => Hostile::StreamDrop,
            ("done-only", None) => Hostile::DoneOnly,
            ("slow-drip", arg) => Hostile::SlowDrip(Duration::from_millis(number(arg)?)),
            ("echo-error", arg) => {
                let status = number(arg)?;
                match u16::try_from(status) {
                    Ok(s) if (400..=599).contains(&s) => Hostile::EchoError(s),
                    _ => return Err(unknown()),
                }
            }
            _ => return Err(unknown()),
        })
    }
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hostile::RetryAfter(v) => write!(f, "retry-after={v}"),
            Hostile::NonJson => f.write_str("non-json"),
            Hostile::TruncatedBody => f.write_str("truncated-body"),
            Hostile::OversizedBody(n) => write!(f, "oversized-body={n}"),
            Hostile::OversizedFields(n) => write!(f, "oversized-fields={n}"),
            Hostile::UnknownEnums => f.write_str("unknown-enums"),
            Hostile::EmptyChoices => f.write_str("empty-choices"),
            Hostile::Refusal => f.write_str("refusal"),
            Hostile::StreamError => f.write_str("stream-error"),
            Hostile::StreamDrop => f.write_str("stream-drop"),
            Hostile::DoneOnly => f.write_str("done-only"),
            Hostile::SlowDrip(d) => write!(f, "slow-drip={}", d.as_millis()),
            Hostile::EchoError(s) => write!(f, "echo-error={s}"),
        }
    }
}

fn completion(id: &str, model: &str, message: Value, finish_reason: &str) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        "system_fingerprint": "fp_hostile",
    })
}

fn answer_message(content: &str) -> Value {
    json!({"role": "assistant", "content": content, "refusal": null})
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let value = json!({
        "id": "chatcmpl-hostile-stream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "hostile-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    format!("data: {value}\n\n")
}

/// A complete, valid stream answering [`HOSTILE_ANSWER`].
fn good_stream() -> Vec<String> {
    let usage = json!({
        "id": "chatcmpl-hostile-stream", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "hostile-model", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    });
    vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": HOSTILE_ANSWER}), None),
        chunk(json!({}), Some("stop")),
        format!("data: {usage}\n\n"),
        "data: [DONE]\n\n".to_owned(),
    ]
}

/// What the request said, quoted: its body and its `Authorization` header.
fn echo(body: Option<&Value>, headers: &HeaderMap) -> String {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let body = body.map_or_else(|| "-".to_owned(), Value::to_string);
    format!("1 validation error: input {body} (Authorization: {authorization}) is not valid")
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

/// A body that sends `parts` and then fails, which makes the server drop the connection.
fn then_drop(parts: Vec<String>) -> Body {
    let items = parts
        .into_iter()
        .map(|p| Ok(Bytes::from(p)))
        .chain(std::iter::once(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "hostile: connection dropped mid-body",
        ))));
    Body::from_stream(futures::stream::iter(items))
}

/// A pretty-printed value (serialising a `Value` cannot fail).
fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Hostile {
    /// The answer to a chat-completions request with this `body` (parsed, when JSON) and these
    /// `headers`.
    pub(crate) fn respond(&self, body: Option<&Value>, headers: &HeaderMap) -> Response {
        match self {
            Hostile::RetryAfter(value) => {
                let mut response = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    text(
                        &json!({"error": {"message": "Rate limit reached.", "type": "requests",
                        "param": null, "code": "rate_limit_exceeded"}}),
                    ),
                );
                let h = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(header::RETRY_AFTER, v.clone());
                    h.insert(HeaderName::from_static("retry-after-ms"), v);
                }
                if let Ok(v) = HeaderValue::from_bytes(b"\xff\xfe-not-utf8") {
                    h.insert(HeaderName::from_static("x-ratelimit-reset-requests"), v);
                }
                response
            }
            Hostile::NonJson => json_response(
                StatusCode::OK,
                "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            ),
            Hostile::TruncatedBody => {
                let whole = text(&completion(
                    "chatcmpl-hostile",
                    "hostile-model",
                    answer_message(HOSTILE_ANSWER),
                    "stop",
                ));
                let half = whole[..whole.len() / 2].to_owned();
                json_response(StatusCode::OK, then_drop(vec![half]))
            }
            Hostile::OversizedBody(bytes) => json_response(
                StatusCode::OK,
                text(&completion(
                    "chatcmpl-hostile",
                    "hostile-model",
                    answer_message(&"x".repeat(*bytes)),
                    "stop",
                )),
            ),
            Hostile::OversizedFields(bytes) => {
                let mut value = completion(
                    &"i".repeat(*bytes),
                    &"m".repeat(*bytes),
                    answer_message(HOSTILE_ANSWER),
                    "stop",
                );
                value["system_fingerprint"] = Value::String("f".repeat(*bytes));
                json_response(StatusCode::OK, text(&value))
            }
            Hostile::UnknownEnums => json_response(
                StatusCode::OK,
                text(&json!({
                    "id": "chatcmpl-hostile",
                    "model": "hostile-model",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": HOSTILE_ANSWER},
                        "finish_reason": "eos_token"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5},
                    "service_tier": "flex-2",
                })),
            ),
            Hostile::EmptyChoices => {
                let mut value = completion("chatcmpl-hostile", "hostile-model", json!({}), "stop");
                value["choices"] = json!([]);
                json_response(StatusCode::OK, text(&value))
            }
            Hostile::Refusal => json_response(
                StatusCode::OK,
                text(&completion(
                    "chatcmpl-hostile",
                    "hostile-model",
                    json!({"role": "assistant", "content": null, "refusal": REFUSAL}),
                    "stop",
                )),
            ),
            Hostile::StreamError => {
                let error = json!({"error": {"message": echo(body, headers),
                    "type": "server_error", "param": null, "code": "stream_failed"}});
                let events = vec![
                    chunk(json!({"role": "assistant", "content": "An odd"}), None),
                    format!("data: {error}\n\n"),
                ];
                sse_response(Body::from_stream(futures::stream::iter(
                    events
                        .into_iter()
                        .map(|e| Ok::<_, Infallible>(Bytes::from(e))),
                )))
            }
            Hostile::StreamDrop => sse_response(then_drop(vec![chunk(
                json!({"role": "assistant", "content": "An odd"}),
                None,
            )])),
            Hostile::DoneOnly => sse_response(Body::from("data: [DONE]\n\n")),
            Hostile::SlowDrip(interval) => {
                let interval = *interval;
                let bytes: Vec<u8> = good_stream().concat().into_bytes();
                let drip = futures::stream::iter(bytes).then(move |b| async move {
                    tokio::time::sleep(interval).await;
                    Ok::<_, Infallible>(Bytes::from(vec![b]))
                });
                sse_response(Body::from_stream(drip))
            }
            Hostile::EchoError(status) => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                json_response(
                    status,
                    text(&json!({"error": {"message": echo(body, headers),
                        "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}})),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_and_round_trips() {
        for name in HOSTILE_NAMES {
            let spec = name
                .replace("=VALUE", "=1e308")
                .replace("=BYTES", "=100")
                .replace("=MS", "=5")
                .replace("=STATUS", "=422");
            let parsed: Hostile = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(parsed.to_string(), spec);
        }
        assert!("nope".parse::<Hostile>().is_err());
        assert!("echo-error=200".parse::<Hostile>().is_err());
        assert!("slow-drip".parse::<Hostile>().is_err());
    }
}
