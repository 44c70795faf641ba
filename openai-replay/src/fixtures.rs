//! The recorded OpenAI exchanges, embedded at build time from `fixtures/` (a copy of
//! `shared/fixtures/openai`, kept byte-identical by a test), and parsed once into a catalog of
//! ready-to-serve responses. This module owns the fixture format; it does not choose fixtures
//! ([`crate::select`]) nor speak HTTP ([`crate::server`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ReplayError;

/// `chat_basic`: `gpt-3.5-turbo`, one message, older response shape.
pub(crate) const CHAT_BASIC: &str = "chat_basic";
/// `chat_gpt4o_mini`: the default non-streaming answer.
pub(crate) const CHAT_GPT4O_MINI: &str = "chat_gpt4o_mini";
/// `chat_stream`: streaming without a usage chunk.
pub(crate) const CHAT_STREAM: &str = "chat_stream";
/// `chat_stream_include_usage`: streaming with a final usage chunk.
pub(crate) const CHAT_STREAM_INCLUDE_USAGE: &str = "chat_stream_include_usage";
/// `chat_tool_call`: one tool call, non-streaming.
pub(crate) const CHAT_TOOL_CALL: &str = "chat_tool_call";
/// `chat_tool_call_stream`: one tool call, streamed.
pub(crate) const CHAT_TOOL_CALL_STREAM: &str = "chat_tool_call_stream";
/// `chat_multi_choice_n2`: two choices.
pub(crate) const CHAT_MULTI_CHOICE_N2: &str = "chat_multi_choice_n2";
/// `chat_error_400_invalid_image_url`: 400 `invalid_image_url`.
pub(crate) const CHAT_ERROR_400: &str = "chat_error_400_invalid_image_url";
/// `chat_error_404_model_not_found`: 404 `model_not_found`.
pub(crate) const CHAT_ERROR_404: &str = "chat_error_404_model_not_found";

/// The names of the embedded fixtures, valid for [`crate::Scenario::Fixed`].
pub const FIXTURE_NAMES: &[&str] = &[
    CHAT_BASIC,
    CHAT_GPT4O_MINI,
    CHAT_STREAM,
    CHAT_STREAM_INCLUDE_USAGE,
    CHAT_TOOL_CALL,
    CHAT_TOOL_CALL_STREAM,
    CHAT_MULTI_CHOICE_N2,
    CHAT_ERROR_400,
    CHAT_ERROR_404,
];

macro_rules! embed {
    ($($file:literal),* $(,)?) => {
        /// Every embedded file, as (file name, contents).
        const FILES: &[(&str, &str)] = &[
            $( ($file, include_str!(concat!("../fixtures/", $file))) ),*
        ];
    };
}

embed!(
    "README.md",
    "chat_basic.request.json",
    "chat_basic.response.json",
    "chat_error_400_invalid_image_url.request.json",
    "chat_error_400_invalid_image_url.response.json",
    "chat_error_404_model_not_found.request.json",
    "chat_error_404_model_not_found.response.json",
    "chat_gpt4o_mini.request.json",
    "chat_gpt4o_mini.response.json",
    "chat_multi_choice_n2.request.json",
    "chat_multi_choice_n2.response.json",
    "chat_stream.meta.json",
    "chat_stream.request.json",
    "chat_stream.response.sse",
    "chat_stream_include_usage.meta.json",
    "chat_stream_include_usage.request.json",
    "chat_stream_include_usage.response.sse",
    "chat_tool_call.request.json",
    "chat_tool_call.response.json",
    "chat_tool_call_stream.meta.json",
    "chat_tool_call_stream.request.json",
    "chat_tool_call_stream.response.sse",
);

/// The contents of an embedded fixture file, by file name (e.g. `"chat_stream.response.sse"`,
/// `"chat_basic.request.json"`, `"README.md"`); `None` for an unknown name.
///
/// Tests can use it to compare what a client received with what was recorded, or to send the
/// recorded request body.
pub fn fixture_file(file_name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(name, _)| *name == file_name)
        .map(|(_, contents)| *contents)
}

/// A recorded response body, ready to serve.
#[derive(Debug)]
pub(crate) enum FixtureBody {
    /// A JSON document (the recorded text, de-indented one level, key order kept).
    Json(String),
    /// Server-sent events, each with its trailing blank line; concatenated they are the
    /// recorded bytes.
    Sse(Vec<&'static str>),
}

/// One recorded exchange.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// The fixture name (one of [`FIXTURE_NAMES`]).
    pub(crate) name: &'static str,
    /// The recorded status.
    pub(crate) status: StatusCode,
    /// The recorded response headers.
    pub(crate) headers: HeaderMap,
    /// The recorded response body.
    pub(crate) body: FixtureBody,
}

/// A model the fixtures know, for `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KnownModel {
    /// The model id.
    pub(crate) id: String,
    /// The earliest `created` of a response that mentions it.
    pub(crate) created: i64,
}

/// All fixtures, parsed.
#[derive(Debug)]
pub(crate) struct Catalog {
    fixtures: Vec<Fixture>,
    /// Request models whose recorded answer is `model_not_found`.
    pub(crate) not_found_models: BTreeSet<String>,
    /// Models of the successful exchanges (requested and answered), sorted by id.
    pub(crate) models: Vec<KnownModel>,
}

impl Catalog {
    /// The fixture with this name.
    pub(crate) fn get(&self, name: &str) -> Option<&Fixture> {
        self.fixtures.iter().find(|f| f.name == name)
    }

    fn parse() -> Result<Catalog, ReplayError> {
        let mut fixtures = Vec::new();
        let mut not_found_models = BTreeSet::new();
        let mut models: BTreeMap<String, i64> = BTreeMap::new();
        for &name in FIXTURE_NAMES {
            let request_file = format!("{name}.request.json");
            let request: RequestFile = parse_json(&request_file)?;
            let request_model = request.body.get("model").and_then(Value::as_str);
            let sse_file = format!("{name}.response.sse");
            let (fixture, answer) = match fixture_file(&sse_file) {
                Some(text) => {
                    let meta_file = format!("{name}.meta.json");
                    let meta: MetaFile = parse_json(&meta_file)?;
                    let events: Vec<&'static str> = text.split_inclusive("\n\n").collect();
                    let first = events
                        .first()
                        .and_then(|e| e.trim().strip_prefix("data:"))
                        .and_then(|data| serde_json::from_str::<Value>(data.trim()).ok())
                        .unwrap_or(Value::Null);
                    let fixture = Fixture {
                        name,
                        status: status(&meta_file, meta.status)?,
                        headers: headers(&meta_file, &meta.headers)?,
                        body: FixtureBody::Sse(events),
                    };
                    (fixture, first)
                }
                None => {
                    let response_file = format!("{name}.response.json");
                    let response: ResponseFile<'static> = parse_json(&response_file)?;
                    let answer = serde_json::from_str::<Value>(response.body.get())
                        .map_err(|e| invalid(&response_file, e))?;
                    let fixture = Fixture {
                        name,
                        status: status(&response_file, response.status)?,
                        headers: headers(&response_file, &response.headers)?,
                        body: FixtureBody::Json(dedent(response.body.get())),
                    };
                    (fixture, answer)
                }
            };
            let error_code = answer.pointer("/error/code").and_then(Value::as_str);
            if error_code == Some("model_not_found") {
                not_found_models.extend(request_model.map(str::to_owned));
            } else if fixture.status.is_success() {
                let created = answer.get("created").and_then(Value::as_i64).unwrap_or(0);
                let answered = answer.get("model").and_then(Value::as_str);
                for model in request_model.into_iter().chain(answered) {
                    let entry = models.entry(model.to_owned()).or_insert(created);
                    *entry = (*entry).min(created);
                }
            }
            fixtures.push(fixture);
        }
        let models = models
            .into_iter()
            .filter(|(id, _)| !not_found_models.contains(id))
            .map(|(id, created)| KnownModel { id, created })
            .collect();
        Ok(Catalog {
            fixtures,
            not_found_models,
            models,
        })
    }
}

/// The catalog, parsed on first use. The embedded files never change at run time, so the
/// outcome (success or error) is computed once.
pub(crate) fn catalog() -> Result<&'static Catalog, ReplayError> {
    static CATALOG: OnceLock<Result<Catalog, (String, String)>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            Catalog::parse().map_err(|e| match e {
                ReplayError::Fixture { file, message } => (file, message),
                other => (String::from("(catalog)"), other.to_string()),
            })
        })
        .as_ref()
        .map_err(|(file, message)| ReplayError::Fixture {
            file: file.clone(),
            message: message.clone(),
        })
}

#[derive(Deserialize)]
struct RequestFile {
    body: Value,
}

#[derive(Deserialize)]
struct ResponseFile<'a> {
    status: u16,
    headers: BTreeMap<String, String>,
    #[serde(borrow)]
    body: &'a RawValue,
}

#[derive(Deserialize)]
struct MetaFile {
    status: u16,
    headers: BTreeMap<String, String>,
}

fn invalid(file: &str, message: impl ToString) -> ReplayError {
    ReplayError::Fixture {
        file: file.to_owned(),
        message: message.to_string(),
    }
}

fn parse_json<T: Deserialize<'static>>(file: &str) -> Result<T, ReplayError> {
    let text = fixture_file(file).ok_or_else(|| invalid(file, "not embedded"))?;
    serde_json::from_str(text).map_err(|e| invalid(file, e))
}

fn status(file: &str, code: u16) -> Result<StatusCode, ReplayError> {
    StatusCode::from_u16(code).map_err(|e| invalid(file, e))
}

fn headers(file: &str, recorded: &BTreeMap<String, String>) -> Result<HeaderMap, ReplayError> {
    let mut map = HeaderMap::new();
    for (name, value) in recorded {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(file, e))?;
        let value = HeaderValue::from_str(value).map_err(|e| invalid(file, e))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Removes the one level of indentation a nested JSON value has in its fixture file. JSON
/// strings cannot hold raw newlines, so every newline is structural; when some line lacks the
/// indentation the text is returned unchanged.
fn dedent(raw: &str) -> String {
    let mut lines = raw.split('\n');
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    if rest.iter().all(|line| line.starts_with("  ")) {
        let mut out = String::with_capacity(raw.len());
        out.push_str(first);
        for line in rest {
            out.push('\n');
            out.push_str(&line[2..]);
        }
        out
    } else {
        raw.to_owned()
    }
}

#[cfg(test)]
mod tests {

    use std::path::{Path, PathBuf};

    use super::*;

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    fn embedded_names() -> Vec<String> {
        sorted(FILES.iter().map(|(name, _)| (*name).to_owned()).collect())
    }

    fn listing(dir: &Path) -> Vec<String> {
        sorted(
            std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
        )
    }

    /// The shared fixtures: `LLMJOB_SHARED_DIR/fixtures/openai` when that variable is set (a git
    /// worktree elsewhere), else `../shared/fixtures/openai` beside the repository, where CI and a
    /// developer checkout have them.
    fn shared_dir() -> PathBuf {
        let shared = std::env::var_os("LLMJOB_SHARED_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        shared.join("fixtures/openai")
    }

    #[test]
    fn embedded_copies_match_the_shared_fixtures() {
        let shared = shared_dir();
        assert!(
            shared.is_dir(),
            "{} is missing: the shared fixtures belong in ../shared/fixtures/openai beside the \
             repository (or set LLMJOB_SHARED_DIR to the directory holding fixtures/openai)",
            shared.display()
        );
        assert_eq!(
            listing(&shared),
            embedded_names(),
            "the shared fixtures changed: copy them into openai-replay/fixtures/ and list them in embed!"
        );
        for (name, contents) in FILES {
            let original = std::fs::read(shared.join(name)).unwrap();
            assert!(
                original == contents.as_bytes(),
                "openai-replay/fixtures/{name} differs from shared/fixtures/openai/{name}: copy it again"
            );
        }
    }

    #[test]
    fn every_local_copy_is_embedded() {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        assert_eq!(listing(&local), embedded_names());
    }

    #[test]
    fn catalog_parses() {
        let catalog = catalog().unwrap();
        for name in FIXTURE_NAMES {
            assert!(catalog.get(name).is_some(), "{name}");
        }
        assert_eq!(
            catalog.not_found_models.iter().collect::<Vec<_>>(),
            ["gpt-3.5-turbo-0613"]
        );
        let ids: Vec<&str> = catalog.models.iter().map(|m| m.id.as_str()).collect();
        for id in [
            "gpt-3.5-turbo",
            "gpt-4o-mini",
            "gpt-4",
            "gpt-4o-mini-2024-07-18",
        ] {
            assert!(ids.contains(&id), "{ids:?}");
        }
        assert!(!ids.contains(&"gpt-3.5-turbo-0613"));
    }

    #[test]
    fn sse_events_concatenate_to_the_recording() {
        let catalog = catalog().unwrap();
        for name in [
            CHAT_STREAM,
            CHAT_STREAM_INCLUDE_USAGE,
            CHAT_TOOL_CALL_STREAM,
        ] {
            let fixture = catalog.get(name).unwrap();
            let FixtureBody::Sse(events) = &fixture.body else {
                panic!("{name} is not SSE");
            };
            assert_eq!(
                events.concat(),
                fixture_file(&format!("{name}.response.sse")).unwrap()
            );
            assert_eq!(events.last().unwrap().trim(), "data: [DONE]");
        }
    }

    #[test]
    fn json_bodies_keep_their_content_and_key_order() {
        let catalog = catalog().unwrap();
        let FixtureBody::Json(text) = &catalog.get(CHAT_GPT4O_MINI).unwrap().body else {
            panic!("not JSON");
        };
        assert!(text.starts_with("{\n  \"id\": \"chatcmpl-"), "{text}");
        assert!(text.ends_with("\n}"), "{text}");
        let served: Value = serde_json::from_str(text).unwrap();
        let recorded: Value =
            serde_json::from_str(fixture_file("chat_gpt4o_mini.response.json").unwrap()).unwrap();
        assert_eq!(served, recorded["body"]);
    }

    #[test]
    fn dedent_is_conservative() {
        assert_eq!(dedent("{\n    \"a\": 1\n  }"), "{\n  \"a\": 1\n}");
        assert_eq!(dedent("{\n\"a\": 1\n}"), "{\n\"a\": 1\n}");
        assert_eq!(dedent("1"), "1");
    }
}
