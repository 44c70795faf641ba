//! Validate step: the checks an LlmJob must pass before the operator builds its Job.
//!
//! Pure. The API server already enforces the CRD's OpenAPI and CEL rules; this step re-checks
//! what the build relies on (metadata, exactly one of prompt and messages, a parseable timeout)
//! so that an object that slipped past admission (an older CRD, a hand-edited status) becomes a
//! clear `InvalidSpec` condition instead of a broken pod. It never reports on secrets or
//! anything else that needs the cluster.

use kube::Resource;
use llmjob_crds::env::DEFAULT_TIMEOUT_SECS;
use llmjob_crds::v1alpha1::{ChatMessage, LlmJob, TRACEPARENT_ANNOTATION};

use crate::traceparent::{TraceParent, TraceParentError};

/// Longest accepted `spec.run.timeout` (the CRD's bound).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Why an LlmJob cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A metadata field the operator needs is missing.
    #[error("{0} is missing")]
    MissingMetadata(&'static str),
    /// Neither `spec.prompt` nor `spec.messages` is set.
    #[error("set exactly one of spec.prompt and spec.messages (neither is set)")]
    NoPrompt,
    /// Both `spec.prompt` and `spec.messages` are set.
    #[error("set exactly one of spec.prompt and spec.messages (both are set)")]
    PromptAndMessages,
    /// `spec.messages` is an empty list.
    #[error("spec.messages must hold at least one message")]
    NoMessages,
    /// `spec.run.timeout` is not a duration such as `90s`, `5m` or `1h30m` between 1s and 24h.
    #[error(
        "spec.run.timeout {0:?} must be a duration such as 90s, 5m or 1h30m, between 1s and 24h"
    )]
    Timeout(String),
}

/// What the model is asked: exactly one of `spec.prompt` and `spec.messages`.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `spec.prompt`.
    Prompt(String),
    /// `spec.messages`, at least one.
    Messages(Vec<ChatMessage>),
}

/// What the later steps need from a valid LlmJob.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The prompt or the messages.
    pub input: Input,
    /// The run's deadline in seconds.
    pub timeout_secs: u64,
    /// The trace context of the `llmjob.dev/traceparent` annotation, when it holds a valid one.
    pub parent: Option<TraceParent>,
    /// Why the annotation was ignored, when it is set but invalid (the run then starts a new
    /// trace; this is a warning, not an error).
    pub parent_error: Option<TraceParentError>,
}

/// Checks the LlmJob.
pub fn validate(llmjob: &LlmJob) -> Result<Validated, ValidationError> {
    let meta = llmjob.meta();
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.name"))?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.namespace"))?;
    let uid = meta
        .uid
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.uid"))?;
    let input = match (&llmjob.spec.prompt, &llmjob.spec.messages) {
        (None, None) => return Err(ValidationError::NoPrompt),
        (Some(_), Some(_)) => return Err(ValidationError::PromptAndMessages),
        (None, Some(m)) if m.is_empty() => return Err(ValidationError::NoMessages),
        (Some(prompt), None) => Input::Prompt(prompt.clone()),
        (None, Some(messages)) => Input::Messages(messages.clone()),
    };
    let timeout_secs = match llmjob.spec.run.as_ref().and_then(|r| r.timeout.as_deref()) {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) => parse_timeout(t).ok_or_else(|| ValidationError::Timeout(t.to_owned()))?,
    };
    let (parent, parent_error) = match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACEPARENT_ANNOTATION))
    {
        None => (None, None),
        Some(v) => match TraceParent::parse(v) {
            Ok(tp) => (Some(tp), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(Validated {
        name,
        namespace,
        uid,
        input,
        timeout_secs,
        parent,
        parent_error,
    })
}

/// Parses a timeout of the CRD's pattern `([0-9]+h)?([0-9]+m)?([0-9]+s)?` into seconds, between
/// 1s and 24h. humantime reads the duration; it accepts more than the pattern (days, spaces,
/// units in any order), so the shape is checked first.
pub fn parse_timeout(value: &str) -> Option<u64> {
    let mut last_unit = None;
    for part in value.split_inclusive(['h', 'm', 's']) {
        let digits = part.strip_suffix(['h', 'm', 's'])?;
        let unit = part.get(digits.len()..)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Each unit once, in the order h, m, s (which is alphabetical).
        if last_unit.is_some_and(|last| last >= unit) {
            return None;
        }
        last_unit = Some(unit);
    }
    last_unit?;
    let secs = humantime::parse_duration(value).ok()?.as_secs();
    (1..=MAX_TIMEOUT_SECS).contains(&secs).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::llmjob;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("90s"), Some(90));
        assert_eq!(parse_timeout("5m"), Some(300));
        assert_eq!(parse_timeout("1h30m"), Some(5400));
        assert_eq!(parse_timeout("1h2m3s"), Some(3723));
        assert_eq!(parse_timeout("24h"), Some(86400));
        for bad in [
            "",
            "0s",
            "25h",
            "5",
            "m",
            "1s1h",
            "1m1m",
            "1.5s",
            "-1s",
            "1d",
            "1h 30m",
            "1é",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn valid_llmjob() {
        let v = validate(&llmjob(
            r#"
metadata:
  name: a
  namespace: ns
  uid: u
  annotations: {llmjob.dev/traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, run: {timeout: 2m}}
"#,
        ))
        .unwrap();
        assert_eq!(v.timeout_secs, 120);
        assert_eq!(v.input, Input::Prompt("hi".to_owned()));
        assert_eq!(
            v.parent.map(|p| p.trace_id_hex()).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(v.parent_error.is_none());
    }

    #[test]
    fn an_invalid_traceparent_is_a_warning() {
        let v = validate(&llmjob(
            r#"
metadata: {name: a, namespace: ns, uid: u, annotations: {llmjob.dev/traceparent: nope}}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}
"#,
        ))
        .unwrap();
        assert!(v.parent.is_none());
        assert!(v.parent_error.is_some());
    }

    #[test]
    fn invalid_llmjobs() {
        let cases = [
            (
                "metadata: {namespace: ns, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.name"),
            ),
            (
                "metadata: {name: a, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.namespace"),
            ),
            (
                "metadata: {name: a, namespace: ns}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.uid"),
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::NoPrompt,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {prompt: hi, messages: [{role: user, content: x}], openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::PromptAndMessages,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {messages: [], openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::NoMessages,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, run: {timeout: 2d}}",
                ValidationError::Timeout("2d".into()),
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(validate(&llmjob(yaml)), Err(want), "{yaml}");
        }
    }
}
