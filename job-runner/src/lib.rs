//! The job-runner: one OpenAI chat completion, traced like the OpenLLMetry (Traceloop) Python
//! SDK traces it (`llm_job` workflow → `openai_call` task → `chat {model}`), with the GenAI
//! semantic-convention attributes and metrics and the runner's logs correlated with the trace,
//! all exported over OTLP and flushed before exit.
//!
//! Configuration comes from environment variables (names in [`llmjob_crds::env`]); the contract
//! (variables, telemetry, exit codes, result) is `docs/job-runner.md`. The binary (`main.rs`) wires [`config`], [`telemetry`] and
//! [`workflow`] together and owns the process's output and exit code.

pub mod attributes;
pub mod batch;
pub mod capture;
pub mod config;
pub mod crash;
pub mod items;
pub mod limiter;
pub mod openai;
pub mod output;
pub mod result_file;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod workflow;
