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
        ) {
            let result = RunResult {
                status: RunStatus::Failed,
                shard: None,
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
        }
    }
}
