//! Writes the run's one-line JSON result to the termination-message file, where the kubelet
//! picks it up for the operator. Failing to write never changes the exit code: it is reported.

use std::io;
use std::path::Path;

use llmjob_crds::result::RunResult;

/// Writes `result` as one line (at most 4096 bytes) to `path`, replacing what was there.
pub fn write(path: &Path, result: &RunResult) -> io::Result<()> {
    std::fs::write(path, result.to_line())
}

#[cfg(test)]
mod tests {

    use llmjob_crds::result::RunStatus;

    use super::*;

    #[test]
    fn writes_one_parsable_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let result = RunResult {
            status: RunStatus::Succeeded,
            shard: None,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            span_id: None,
            response_id: Some("chatcmpl-1".into()),
            model: None,
            finish_reason: None,
            finish_reasons: Vec::new(),
            usage: None,
            duration_ms: Some(12),
            attempts: Some(1),
            input_sha256: None,
            output_sha256: None,
            error: None,
        };
        write(&path, &result).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(RunResult::parse(&text).unwrap(), result);
    }

    fn any_string() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        proptest::option::of(proptest::prop_oneof![
            "\\PC{0,64}",
            (proptest::char::any(), 0usize..12_000).prop_map(|(c, n)| c.to_string().repeat(n)),
        ])
    }

    use proptest::prelude::*;

    /// A shard's item error messages go first: ids, types and counts stay while they fit.
    #[test]
    fn item_error_messages_are_dropped_first() {
        let mut result = RunResult::status_only(RunStatus::Succeeded);
        result.shard = Some(llmjob_crds::result::ShardResult {
            index: 3,
            succeeded: 5,
            failed: 5,
            output: Some("s3://bucket/run/part-00003.jsonl".into()),
            item_errors: (0..5)
                .map(|i| llmjob_crds::result::ItemError {
                    id: format!("item-{i}"),
                    error: llmjob_crds::result::RunError {
                        kind: "invalid_request".into(),
                        message: "m".repeat(2_000),
                        http_status: Some(400),
                    },
                })
                .collect(),
        });
        let line = result.to_line();
        assert!(
            line.len() <= llmjob_crds::result::MAX_BYTES,
            "{}",
            line.len()
        );
        let shard = RunResult::parse(&line).unwrap().shard.unwrap();
        assert_eq!(shard.item_errors.len(), 5);
        assert!(shard.item_errors.iter().all(|e| e.error.message.is_empty()));
        assert_eq!(shard.item_errors[4].id, "item-4");
        assert_eq!(
            shard.output.as_deref(),
            Some("s3://bucket/run/part-00003.jsonl")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// `to_line` ends, fits and parses back, whatever the server's strings are.
        #[test]
        fn any_result_becomes_one_short_line(
            response_id in any_string(),
            model in any_string(),
            finish_reason in any_string(),
            kind in any_string(),
            message in any_string(),
            hash in any_string(),
            finish_reasons in proptest::collection::vec(".{0,300}", 0..130),
            shard in proptest::option::of((
                any_string(),
                proptest::collection::vec((any_string(), any_string(), any_string()), 0..6),
            )),
        ) {
            let shard = shard.map(|(output, errors)| llmjob_crds::result::ShardResult {
                index: u32::MAX,
                succeeded: u64::MAX,
                failed: u64::MAX,
                output,
                item_errors: errors
                    .into_iter()
                    .map(|(id, kind, message)| llmjob_crds::result::ItemError {
                        id: id.unwrap_or_default(),
                        error: llmjob_crds::result::RunError {
                            kind: kind.unwrap_or_default(),
                            message: message.unwrap_or_default(),
                            http_status: Some(429),
                        },
                    })
                    .collect(),
            });
            let counts = shard.as_ref().map(|s| (s.index, s.succeeded, s.failed));
            let result = RunResult {
                status: RunStatus::Failed,
                shard,
                trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
                span_id: Some("b7ad6b7169203331".into()),
                response_id,
                model,
                finish_reason,
                finish_reasons,
                usage: None,
                duration_ms: Some(u64::MAX),
                attempts: Some(u32::MAX),
                input_sha256: hash.clone(),
                output_sha256: hash,
                error: kind.map(|kind| llmjob_crds::result::RunError {
                    kind,
                    message: message.unwrap_or_default(),
                    http_status: Some(599),
                }),
            };
            let line = result.to_line();
            prop_assert!(line.len() <= llmjob_crds::result::MAX_BYTES);
            prop_assert!(!line.contains('\n'));
            let parsed = RunResult::parse(&line);
            prop_assert!(parsed.is_ok());
            // A shard's counts always survive.
            let parsed_counts = parsed
                .ok()
                .and_then(|p| p.shard)
                .map(|s| (s.index, s.succeeded, s.failed));
            prop_assert_eq!(parsed_counts, counts);
        }
    }
}
