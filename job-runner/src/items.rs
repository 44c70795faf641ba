//! A batch's items (`LLMJOB_ITEMS_FILE`, JSON Lines) and the shard a pod runs
//! (`JOB_COMPLETION_INDEX`, `LLMJOB_ITEMS_PER_POD`).
//!
//! Pure: it parses text it is given and keeps only the shard's items, so a pod's memory holds its
//! own items, not the whole batch. It never quotes an item's content in an error (it is the
//! user's prompt): errors name the line and the column only.

use async_openai::types::chat::ChatCompletionRequestMessage;
use serde::Deserialize;

use crate::config::Input;

/// One item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The item's `id`, or its line number in the file (from 1) when it has none.
    pub id: String,
    /// The item's position in the whole batch (from 0): its shard is `index / items per pod`.
    pub index: u64,
    /// What the model is asked.
    pub input: Input,
}

/// The items one pod runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The shard's index (`JOB_COMPLETION_INDEX`).
    pub index: u32,
    /// The shard's items, in item order.
    pub items: Vec<Item>,
    /// Items in the whole batch.
    pub total_items: u64,
}

/// An item line as written: an optional `id` (a string or a number) and exactly one of `prompt`
/// and `messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatCompletionRequestMessage>>,
}

/// Picks shard `index` out of the JSON Lines `text`: the items `index * per_pod` to
/// `(index + 1) * per_pod - 1` (`per_pod` `None`: all items, one shard). Blank lines are not
/// items (a trailing newline is usual); an item's default id is its line number in the file.
/// Only the shard's lines are parsed; a shard with no item is an error (the Job has more
/// completions than the batch has shards).
pub fn shard(text: &str, index: u32, per_pod: Option<u64>) -> Result<Shard, String> {
    let per_pod = per_pod.unwrap_or(u64::MAX);
    let first = u64::from(index).saturating_mul(per_pod);
    let last = first.saturating_add(per_pod);
    let mut items = Vec::new();
    let mut total_items = 0u64;
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let position = total_items;
        total_items += 1;
        if !(first..last).contains(&position) {
            continue;
        }
        let line_number = line_index + 1;
        items.push(parse_item(line, line_number, position)?);
    }
    if total_items == 0 {
        return Err("the file holds no item".to_owned());
    }
    if items.is_empty() {
        return Err(format!(
            "shard {index} is empty: the file holds {total_items} items, {per_pod} per shard"
        ));
    }
    Ok(Shard {
        index,
        items,
        total_items,
    })
}

fn parse_item(line: &str, line_number: usize, position: u64) -> Result<Item, String> {
    let at = |what: &str| format!("line {line_number}: {what}");
    // The parser's position only, never its words: they quote the line, which is the prompt.
    let raw: RawItem = serde_json::from_str(line).map_err(|e| {
        at(&format!(
            "not an item {{\"id\"?, \"prompt\" | \"messages\"}} (column {}{})",
            e.column(),
            if e.is_data() {
                ": unknown field or wrong type"
            } else {
                ""
            }
        ))
    })?;
    let id = match raw.id {
        None | Some(serde_json::Value::Null) => line_number.to_string(),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err(at("the id is not a non-blank string or a number")),
    };
    let input = match (raw.prompt, raw.messages) {
        (Some(prompt), None) if !prompt.trim().is_empty() => Input::Prompt(prompt),
        (Some(_), None) => return Err(at("the prompt is blank")),
        (None, Some(messages)) if !messages.is_empty() => Input::Messages(messages),
        (None, Some(_)) => return Err(at("the messages array is empty")),
        (Some(_), Some(_)) => return Err(at("both prompt and messages are set: set only one")),
        (None, None) => return Err(at("neither prompt nor messages is set")),
    };
    Ok(Item {
        id,
        index: position,
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"id":"a","prompt":"one"}
{"prompt":"two"}

{"id":7,"messages":[{"role":"user","content":"three"}]}
{"prompt":"four"}
{"id":"e","prompt":"five"}
"#;

    fn ids(shard: &Shard) -> Vec<(&str, u64)> {
        shard
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.index))
            .collect()
    }

    #[test]
    fn shards_take_consecutive_items_and_default_ids_are_line_numbers() {
        let s0 = shard(FILE, 0, Some(2)).unwrap();
        assert_eq!(ids(&s0), [("a", 0), ("2", 1)]);
        assert_eq!(s0.total_items, 5);
        let s1 = shard(FILE, 1, Some(2)).unwrap();
        assert_eq!(ids(&s1), [("7", 2), ("5", 3)]);
        assert!(matches!(s1.items[0].input, Input::Messages(ref m) if m.len() == 1));
        let s2 = shard(FILE, 2, Some(2)).unwrap();
        assert_eq!(ids(&s2), [("e", 4)]);
        let err = shard(FILE, 3, Some(2)).unwrap_err();
        assert!(err.contains("shard 3 is empty"), "{err}");
        assert_eq!(shard(FILE, 0, None).unwrap().items.len(), 5);
    }

    #[test]
    fn only_the_shards_lines_are_parsed() {
        let text = "{\"prompt\":\"ok\"}\nnot json at all\n";
        assert!(shard(text, 0, Some(1)).is_ok());
        let err = shard(text, 1, Some(1)).unwrap_err();
        assert!(err.starts_with("line 2: not an item"), "{err}");
    }

    #[test]
    fn bad_items_are_named_by_line_without_quoting_them() {
        for (line, expected) in [
            (
                r#"{"prompt":"SECRET","messages":[{"role":"user","content":"x"}]}"#,
                "both",
            ),
            (r#"{"id":"x"}"#, "neither"),
            (r#"{"prompt":"   "}"#, "blank"),
            (r#"{"messages":[]}"#, "empty"),
            (r#"{"id":["SECRET"],"prompt":"x"}"#, "id"),
            (r#"{"prompt":"x","promt":"SECRET"}"#, "unknown field"),
            (r#"{"prompt":"SECRET"#, "column"),
        ] {
            let err = shard(line, 0, None).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
            assert!(!err.contains("SECRET"), "{err}");
        }
        assert_eq!(
            shard("\n\n", 0, None).unwrap_err(),
            "the file holds no item"
        );
    }
}
