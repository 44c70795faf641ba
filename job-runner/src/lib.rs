//! llmjob-runner (being written).
