//! API types of llmjob-operator, shared by the operator, the job-runner and the tests.
//!
//! - [`env`]: the environment-variable contract. The operator injects exactly these names into a
//!   run's pod and the job-runner reads exactly these names; nothing else defines them.
//! - [`v1alpha1`]: the `LlmJob` custom resource (`llmjob.dev/v1alpha1`): spec, status, CEL rules.
//! - [`result`]: the one-line JSON the job-runner writes to the container's termination-message
//!   file and the operator copies into the `LlmJob` status.
//! - [`text`]: cutting a message to a size in bytes on a character boundary.
//!
//! This crate does no I/O.

pub mod env;
pub mod result;
pub mod text;
pub mod v1alpha1;
