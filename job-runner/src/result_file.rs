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
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            span_id: None,
            response_id: Some("chatcmpl-1".into()),
            model: None,
            finish_reason: None,
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
}
