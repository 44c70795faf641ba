//! `cargo xtask demo`: one command from a fresh machine to an LlmJob's trace on screen.

pub mod report;
