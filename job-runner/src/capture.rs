//! Content capture: turns the prompt and the completion into the GenAI conventions' message JSON
//! (`gen_ai.input.messages` / `gen_ai.output.messages`) and, in `hash` mode, into the hex SHA-256
//! of exactly those strings.
//!
//! Pure functions only; deciding where captured content goes (spans, logs, result) is the
//! workflow's job, following the content-capture table of `docs/job-runner.md`.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::config::Input;
use crate::openai::Choice;

/// Hex SHA-256 of a string.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One text part.
fn text_part(content: &str) -> Value {
    json!({"type": "text", "content": content})
}

/// Converts an OpenAI `content` (a string or an array of parts) to GenAI parts.
fn content_parts(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![text_part(s)],
        Value::Array(parts) => parts
            .iter()
            .map(|part| {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => text_part(text),
                    (Some(kind), _) => json!({"type": kind}),
                    (None, _) => json!({"type": "unknown"}),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `gen_ai.input.messages` for the request's input.
pub fn input_messages(input: &Input) -> String {
    let messages: Vec<Value> = match input {
        Input::Prompt(prompt) => vec![json!({"role": "user", "parts": [text_part(prompt)]})],
        Input::Messages(messages) => messages
            .iter()
            .map(|message| {
                let raw = serde_json::to_value(message).unwrap_or(Value::Null);
                let role = raw
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user")
                    .to_owned();
                let mut parts = raw.get("content").map(content_parts).unwrap_or_default();
                if role == "tool" {
                    let id = raw.get("tool_call_id").cloned().unwrap_or(Value::Null);
                    let response = raw.get("content").cloned().unwrap_or(Value::Null);
                    parts =
                        vec![json!({"type": "tool_call_response", "id": id, "response": response})];
                }
                if let Some(Value::Array(calls)) = raw.get("tool_calls") {
                    parts.extend(calls.iter().map(tool_call_part));
                }
                json!({"role": role, "parts": parts})
            })
            .collect(),
    };
    Value::Array(messages).to_string()
}

fn tool_call_part(call: &Value) -> Value {
    json!({
        "type": "tool_call",
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
        "arguments": call.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
    })
}

/// `gen_ai.output.messages` for every choice, in index order: one assistant message each, with
/// its text and tool calls as parts.
pub fn output_messages(choices: &[Choice]) -> String {
    let messages: Vec<Value> = choices
        .iter()
        .map(|choice| {
            let mut parts: Vec<Value> = choice
                .content
                .as_deref()
                .map(text_part)
                .into_iter()
                .collect();
            parts.extend(choice.tool_calls.iter().map(tool_call_part));
            json!({
                "role": "assistant",
                "parts": parts,
                "finish_reason": choice.finish_reason.as_deref().unwrap_or(""),
            })
        })
        .collect();
    Value::Array(messages).to_string()
}

/// OpenLLMetry's flat completion attributes for every choice (content capture `full` only):
/// `gen_ai.completion.<i>.role`, `.content`, `.finish_reason`, `.refusal` and
/// `.tool_calls.<j>.id` / `.name` / `.arguments`, as its OpenAI instrumentation sets them.
pub fn completion_attributes(choices: &[Choice]) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    for choice in choices {
        let prefix = format!("gen_ai.completion.{}", choice.index);
        attrs.push((format!("{prefix}.role"), "assistant".to_owned()));
        if let Some(reason) = &choice.finish_reason {
            attrs.push((format!("{prefix}.finish_reason"), reason.clone()));
        }
        if let Some(content) = &choice.content {
            attrs.push((format!("{prefix}.content"), content.clone()));
        }
        if let Some(refusal) = &choice.refusal {
            attrs.push((format!("{prefix}.refusal"), refusal.clone()));
        }
        for (j, call) in choice.tool_calls.iter().enumerate() {
            let text = |pointer: &str| match call.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let call_prefix = format!("{prefix}.tool_calls.{j}");
            attrs.push((format!("{call_prefix}.id"), text("/id")));
            attrs.push((format!("{call_prefix}.name"), text("/function/name")));
            attrs.push((
                format!("{call_prefix}.arguments"),
                text("/function/arguments"),
            ));
        }
    }
    attrs
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn prompt_becomes_one_user_message() {
        let json = input_messages(&Input::Prompt("Hi".into()));
        assert_eq!(
            json,
            r#"[{"parts":[{"content":"Hi","type":"text"}],"role":"user"}]"#
        );
    }

    #[test]
    fn messages_keep_roles_and_text_parts() {
        let messages = serde_json::from_str(
            r#"[{"role":"developer","content":"Be brief"},
                {"role":"user","content":[{"type":"text","text":"Look"},{"type":"image_url","image_url":{"url":"http://x"}}]}]"#,
        )
        .unwrap();
        let json: Value =
            serde_json::from_str(&input_messages(&Input::Messages(messages))).unwrap();
        assert_eq!(json[0]["role"], "developer");
        assert_eq!(json[0]["parts"][0]["content"], "Be brief");
        assert_eq!(json[1]["parts"][0]["content"], "Look");
        assert_eq!(json[1]["parts"][1]["type"], "image_url");
        assert!(
            json[1]["parts"][1].get("image_url").is_none(),
            "only the part type is kept"
        );
    }

    #[test]
    fn output_carries_finish_reason_and_tool_calls() {
        let call = json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let choice = Choice {
            tool_calls: vec![call],
            finish_reason: Some("tool_calls".into()),
            ..Choice::default()
        };
        let json: Value =
            serde_json::from_str(&output_messages(std::slice::from_ref(&choice))).unwrap();
        assert_eq!(json[0]["finish_reason"], "tool_calls");
        assert_eq!(json[0]["parts"][0]["name"], "f");
        let attrs = completion_attributes(&[choice]);
        assert!(attrs.contains(&(
            "gen_ai.completion.0.finish_reason".into(),
            "tool_calls".into()
        )));
        assert!(attrs.contains(&("gen_ai.completion.0.tool_calls.0.name".into(), "f".into())));
        assert!(attrs.contains(&(
            "gen_ai.completion.0.tool_calls.0.id".into(),
            "call_1".into()
        )));
        assert!(attrs.contains(&(
            "gen_ai.completion.0.tool_calls.0.arguments".into(),
            "{}".into()
        )));
    }

    #[test]
    fn every_choice_is_an_output_message() {
        let choices: Vec<Choice> = (0..2)
            .map(|i| Choice {
                index: i,
                content: Some(format!("answer {i}")),
                finish_reason: Some("stop".into()),
                ..Choice::default()
            })
            .collect();
        let json: Value = serde_json::from_str(&output_messages(&choices)).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(2));
        assert_eq!(json[1]["parts"][0]["content"], "answer 1");
        let attrs = completion_attributes(&choices);
        assert!(attrs.contains(&("gen_ai.completion.1.content".into(), "answer 1".into())));
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
