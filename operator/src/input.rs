//! Input step: the ConfigMap the operator writes for a run whose input does not go in the pod's
//! environment, and where the pod finds it.
//!
//! A batch's inline items (`spec.batch.items`) become JSON Lines in key [`ITEMS_KEY`]; a prompt or
//! messages too large for one environment variable (the kernel's 128 KiB per string, issue 19)
//! become key [`PROMPT_KEY`] or [`MESSAGES_KEY`]. The ConfigMap is named after the Job
//! ([`config_map_name`]), owned by the LlmJob (garbage-collected with it), immutable, and written
//! by server-side apply with the operator's field manager before the Job is created, so the pod
//! never waits for it. `spec.batch.itemsFrom` is mounted from the user's ConfigMap directly; the
//! operator only counts its lines ([`count_items`]) for the Indexed Job's completions.
//!
//! [`contents`] and [`config_map`] are pure; [`apply`] and [`read_items`] are the I/O at the edge.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use llmjob_crds::env;
use llmjob_crds::v1alpha1::BatchItem;

use crate::FIELD_MANAGER;
use crate::contract::{MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, job_name, owner_reference};
use crate::validate::{Input, Items, Validated};

/// Name of the pod volume that holds the input.
pub const VOLUME: &str = "input";
/// Where the runner container mounts the input (read-only).
pub const MOUNT_PATH: &str = "/var/run/llmjob/input";
/// The key (and file name) of a batch's items, JSON Lines.
pub const ITEMS_KEY: &str = "items.jsonl";
/// The key (and file name) of a prompt too large for an environment variable.
pub const PROMPT_KEY: &str = "prompt";
/// The key (and file name) of messages too large for an environment variable.
pub const MESSAGES_KEY: &str = "messages.json";
/// Linux's limit on one environment string `NAME=value` with its NUL (`MAX_ARG_STRLEN`, 32
/// pages): a longer variable makes the container's `execve` fail with `E2BIG`.
pub const MAX_ENV_STRING_BYTES: usize = 131_072;
/// What a ConfigMap holds at most (`data` and `binaryData` together; the API server's
/// `MaxSecretSize` applies to ConfigMaps too), less a margin for its key and metadata.
pub const MAX_CONFIG_MAP_BYTES: usize = 1_048_576 - 4_096;

/// Why the input ConfigMap could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input does not fit a ConfigMap.
    #[error(
        "the run's input is {bytes} bytes once encoded ({what}), more than a ConfigMap holds \
         ({MAX_CONFIG_MAP_BYTES} bytes): use fewer or shorter items, or spec.batch.itemsFrom \
         with several LlmJobs"
    )]
    TooLarge {
        /// What was encoded.
        what: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// The items or messages could not be encoded as JSON.
    #[error("the run's input could not be encoded as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The input ConfigMap of the LlmJob named `name` (one per Job).
pub fn config_map_name(name: &str) -> String {
    format!("{}-input", job_name(name))
}

/// Whether the environment variable `name=value` fits one environment string.
pub fn fits_env(name: &str, value: &str) -> bool {
    name.len() + 1 + value.len() + 1 <= MAX_ENV_STRING_BYTES
}

/// The messages as the runner reads them (`LLMJOB_MESSAGES`, `LLMJOB_MESSAGES_FILE`).
pub fn messages_json(
    messages: &[llmjob_crds::v1alpha1::ChatMessage],
) -> Result<String, serde_json::Error> {
    serde_json::to_string(messages)
}

/// A batch's items as JSON Lines, one item per line, in order.
pub fn items_jsonl(items: &[BatchItem]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::to_string(item)?);
        out.push('\n');
    }
    Ok(out)
}

/// Items in JSON Lines text: its non-blank lines (the runner's reading of the file).
pub fn count_items(text: &str) -> u64 {
    text.lines().filter(|l| !l.trim().is_empty()).count() as u64
}

/// The key and content of the input ConfigMap of a validated LlmJob, or `None` when its input
/// goes in the environment (a prompt or messages that fit) or comes from the user's ConfigMap.
pub fn contents(valid: &Validated) -> Result<Option<(&'static str, String)>, InputError> {
    let (key, what, content) = match &valid.input {
        Input::Prompt(prompt) if fits_env(env::OPENAI_PROMPT.name, prompt) => return Ok(None),
        Input::Prompt(prompt) => (PROMPT_KEY, "spec.prompt", prompt.clone()),
        Input::Messages(messages) => {
            let json = messages_json(messages).map_err(InputError::Encode)?;
            if fits_env(env::LLMJOB_MESSAGES.name, &json) {
                return Ok(None);
            }
            (MESSAGES_KEY, "spec.messages", json)
        }
        Input::Batch(batch) => match &batch.items {
            Items::Inline(items) => (
                ITEMS_KEY,
                "spec.batch.items",
                items_jsonl(items).map_err(InputError::Encode)?,
            ),
            Items::ConfigMap { .. } => return Ok(None),
        },
    };
    if content.len() > MAX_CONFIG_MAP_BYTES {
        return Err(InputError::TooLarge {
            what,
            bytes: content.len(),
        });
    }
    Ok(Some((key, content)))
}

/// The input ConfigMap of a validated LlmJob, when it needs one (see [`contents`]).
pub fn config_map(valid: &Validated) -> Result<Option<ConfigMap>, InputError> {
    let Some((key, content)) = contents(valid)? else {
        return Ok(None);
    };
    Ok(Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&valid.name)),
            namespace: Some(valid.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (NAME_LABEL.to_owned(), job_name(&valid.name)),
            ])),
            owner_references: Some(vec![owner_reference(&valid.name, &valid.uid)]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(key.to_owned(), content)])),
        // The run's input never changes; immutable ConfigMaps are not watched by the kubelet.
        immutable: Some(true),
        ..ConfigMap::default()
    }))
}

/// Writes the input ConfigMap by server-side apply with the operator's field manager.
pub async fn apply(api: &Api<ConfigMap>, config_map: &ConfigMap) -> Result<ConfigMap, kube::Error> {
    api.patch(
        &config_map.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(config_map),
    )
    .await
}

/// The text of key `key` of the user's ConfigMap `name` (`spec.batch.itemsFrom`); `None` when the
/// ConfigMap or the key is missing.
pub async fn read_items(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
) -> Result<Option<String>, kube::Error> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|mut data| data.remove(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::llmjob;
    use crate::validate::validate;

    fn valid(yaml: &str) -> Validated {
        validate(&llmjob(yaml)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn inline_items_become_json_lines_in_an_owned_immutable_config_map() {
        let v = valid(
            r#"
metadata: {name: many, namespace: ns, uid: u-1}
spec:
  openai: {apiKeySecretRef: {name: o}}
  batch:
    items: [{id: a, prompt: "one"}, {messages: [{role: user, content: "two\nlines"}]}]
  output: {url: "s3://b/p"}
"#,
        );
        let cm = config_map(&v).unwrap().expect("a ConfigMap");
        assert_eq!(cm.metadata.name.as_deref(), Some("many-input"));
        assert_eq!(cm.immutable, Some(true));
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("LlmJob", "u-1"));
        let text = &cm.data.as_ref().unwrap()[ITEMS_KEY];
        assert_eq!(
            text,
            "{\"id\":\"a\",\"prompt\":\"one\"}\n{\"messages\":[{\"role\":\"user\",\"content\":\"two\\nlines\"}]}\n"
        );
        assert_eq!(count_items(text), 2);
    }

    #[test]
    fn items_from_a_config_map_need_no_config_map_of_the_operator() {
        let v = valid(
            r#"
metadata: {name: many, namespace: ns, uid: u-1}
spec:
  openai: {apiKeySecretRef: {name: o}}
  batch: {itemsFrom: {configMapKeyRef: {name: mine, key: items.jsonl}}}
  output: {configMap: {name: results}}
"#,
        );
        assert!(config_map(&v).unwrap().is_none());
        assert_eq!(count_items("{}\n\n  \n{}\n{}"), 3);
    }

    #[test]
    fn only_an_input_too_large_for_the_environment_goes_in_the_config_map() {
        let fits = "p".repeat(MAX_ENV_STRING_BYTES - "OPENAI_PROMPT".len() - 2);
        let yaml = |prompt: &str| {
            format!(
                "metadata: {{name: big, namespace: ns, uid: u}}\nspec: {{prompt: \"{prompt}\", openai: {{apiKeySecretRef: {{name: o}}}}}}\n"
            )
        };
        assert!(config_map(&valid(&yaml(&fits))).unwrap().is_none());
        let over = format!("{fits}q");
        let cm = config_map(&valid(&yaml(&over)))
            .unwrap()
            .expect("a ConfigMap");
        assert_eq!(cm.data.as_ref().unwrap()[PROMPT_KEY], over);
        // 4-byte characters: 65,536 of them are 256 KiB.
        let wide = "😀".repeat(65_536);
        let cm = config_map(&valid(&yaml(&wide)))
            .unwrap()
            .expect("a ConfigMap");
        assert_eq!(cm.data.as_ref().unwrap()[PROMPT_KEY].len(), 262_144);
    }

    #[test]
    fn large_messages_go_in_the_config_map_and_too_large_ones_are_refused() {
        let messages = |count: usize, content: &str| {
            let list: Vec<String> = (0..count)
                .map(|_| format!("{{role: user, content: \"{content}\"}}"))
                .collect();
            format!(
                "metadata: {{name: chat, namespace: ns, uid: u}}\nspec: {{messages: [{}], openai: {{apiKeySecretRef: {{name: o}}}}}}\n",
                list.join(", ")
            )
        };
        let content = "m".repeat(65_536);
        let cm = config_map(&valid(&messages(3, &content)))
            .unwrap()
            .expect("a ConfigMap");
        let json = &cm.data.as_ref().unwrap()[MESSAGES_KEY];
        assert!(
            json.starts_with("[{\"role\":\"user\",\"content\":\"mmm"),
            "{json:.40}"
        );
        let err = config_map(&valid(&messages(17, &content))).unwrap_err();
        assert!(
            err.to_string().contains("more than a ConfigMap holds"),
            "{err}"
        );
    }
}
