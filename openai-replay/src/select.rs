//! The `Auto` scenario: which recorded exchange best answers a chat-completions request. Pure:
//! it reads the request body and nothing else.
//!
//! Rules, first match wins:
//! 1. `model` is one whose recording says `model_not_found` (`gpt-3.5-turbo-0613`) → the 404
//!    fixture (OpenAI checks the model before anything else, streaming or not);
//! 2. a message content part of type `image_url` → the 400 `invalid_image_url` fixture;
//! 3. `stream: true` with tools → `chat_tool_call_stream`;
//! 4. `stream: true` with `stream_options.include_usage: true` → `chat_stream_include_usage`;
//! 5. `stream: true` → `chat_stream`;
//! 6. tools (a non-empty `tools` or legacy `functions` array) → `chat_tool_call`;
//! 7. `n` of 2 or more → `chat_multi_choice_n2` (which has exactly two choices);
//! 8. otherwise → `chat_gpt4o_mini`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::fixtures::{
    CHAT_ERROR_400, CHAT_ERROR_404, CHAT_GPT4O_MINI, CHAT_MULTI_CHOICE_N2, CHAT_STREAM,
    CHAT_STREAM_INCLUDE_USAGE, CHAT_TOOL_CALL, CHAT_TOOL_CALL_STREAM,
};

/// The fixture that answers `body` in the `Auto` scenario.
pub(crate) fn auto_fixture(body: &Value, not_found_models: &BTreeSet<String>) -> &'static str {
    let model = body.get("model").and_then(Value::as_str);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    if model.is_some_and(|m| not_found_models.contains(m)) {
        CHAT_ERROR_404
    } else if has_image_part(body) {
        CHAT_ERROR_400
    } else if stream && has_tools(body) {
        CHAT_TOOL_CALL_STREAM
    } else if stream && include_usage {
        CHAT_STREAM_INCLUDE_USAGE
    } else if stream {
        CHAT_STREAM
    } else if has_tools(body) {
        CHAT_TOOL_CALL
    } else if body
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n >= 2)
    {
        CHAT_MULTI_CHOICE_N2
    } else {
        CHAT_GPT4O_MINI
    }
}

fn non_empty_array(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn has_tools(body: &Value) -> bool {
    non_empty_array(body.get("tools")) || non_empty_array(body.get("functions"))
}

fn has_image_part(body: &Value) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content").and_then(Value::as_array))
        .flatten()
        .any(|part| part.get("type").and_then(Value::as_str) == Some("image_url"))
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;
    use crate::fixtures::{FIXTURE_NAMES, catalog, fixture_file};

    fn pick(body: Value) -> &'static str {
        auto_fixture(&body, &catalog().unwrap().not_found_models)
    }

    #[test]
    fn rules() {
        let msg = json!([{"role": "user", "content": "hi"}]);
        let tool = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(
            pick(json!({"model": "gpt-4o-mini", "messages": msg})),
            CHAT_GPT4O_MINI
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "stream": true})),
            CHAT_STREAM
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "stream": true,
                        "stream_options": {"include_usage": true}})),
            CHAT_STREAM_INCLUDE_USAGE
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "stream": true,
                        "stream_options": {"include_usage": false}})),
            CHAT_STREAM
        );
        assert_eq!(
            pick(
                json!({"model": "m", "messages": msg, "stream": true, "tools": tool,
                        "stream_options": {"include_usage": true}})
            ),
            CHAT_TOOL_CALL_STREAM
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "tools": tool})),
            CHAT_TOOL_CALL
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "tools": []})),
            CHAT_GPT4O_MINI
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "n": 2})),
            CHAT_MULTI_CHOICE_N2
        );
        assert_eq!(
            pick(json!({"model": "m", "messages": msg, "n": 1})),
            CHAT_GPT4O_MINI
        );
        assert_eq!(
            pick(json!({"model": "gpt-3.5-turbo-0613", "messages": msg, "stream": true})),
            CHAT_ERROR_404
        );
        assert_eq!(
            pick(
                json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}}
                ]}]})
            ),
            CHAT_ERROR_400
        );
    }

    #[test]
    fn each_recorded_request_selects_its_own_fixture() {
        for name in FIXTURE_NAMES {
            if *name == crate::fixtures::CHAT_BASIC {
                continue; // only reachable with `Scenario::Fixed`
            }
            let file: Value =
                serde_json::from_str(fixture_file(&format!("{name}.request.json")).unwrap())
                    .unwrap();
            assert_eq!(pick(file["body"].clone()), *name);
        }
    }
}
