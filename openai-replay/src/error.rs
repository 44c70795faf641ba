//! The crate's error type. Owns every way starting, configuring or stopping a replay server can
//! fail; request-level failures are HTTP answers, never `ReplayError`s.

use std::net::SocketAddr;

/// Why a replay server could not be started, reconfigured or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// `Scenario::Fixed` named a fixture that is not embedded.
    #[error("unknown fixture {name:?} (known: {known})")]
    UnknownFixture {
        /// The name asked for.
        name: String,
        /// The embedded fixture names, comma-separated.
        known: String,
    },
    /// A fault status outside 400..=599.
    #[error("fault status {0} is not an HTTP error status (400..=599)")]
    InvalidFaultStatus(u16),
    /// An embedded fixture file could not be parsed (a build of this crate with a broken copy).
    #[error("embedded fixture {file} is invalid: {message}")]
    Fixture {
        /// The fixture file name.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The server's thread or runtime could not be created.
    #[error("cannot start the server thread: {0}")]
    Runtime(#[source] std::io::Error),
    /// The server stopped with an I/O error.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The server thread panicked.
    #[error("server task ended abnormally: {0}")]
    Task(String),
}
