//! llmjob-operator (being written).
