//! What a replay server does: which fixture it answers with, which faults it injects, how slowly
//! it answers and where it listens. Plain data with builder helpers; validation happens in
//! [`crate::ReplayServer::start`] and [`crate::ReplayServer::set_faults`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::Hostile;

/// How the fixture answering a chat-completions request is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Pick the fixture from the request (see the crate documentation for the rules).
    #[default]
    Auto,
    /// Always answer with this fixture (one of [`crate::FIXTURE_NAMES`]), whatever was asked.
    Fixed(String),
}

/// Errors injected before normal replies, e.g. to exercise a client's retries.
///
/// The first [`fail_first`](Faults::fail_first) chat-completions requests (counted from server
/// start, or from the last [`crate::ReplayServer::set_faults`]) are answered with
/// [`status`](Faults::status) and an OpenAI-style error body; later ones get normal replies,
/// except every [`fail_every`](Faults::fail_every)-th of them (faults spread over a whole run,
/// e.g. a provider's 429s under load). Requests rejected for a wrong API key do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// How many chat-completions requests fail before normal replies start (0: none).
    pub fail_first: u32,
    /// After those, every N-th chat-completions request fails too (0: none; 3: the 3rd, 6th, ...
    /// of the requests after the first `fail_first`).
    pub fail_every: u32,
    /// The HTTP status of the injected failures (400..=599; default 500).
    /// 429 gets `code: rate_limit_exceeded`, 5xx `type`/`code: server_error`.
    pub status: u16,
    /// When set, failures carry `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after: Option<Duration>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_first: 0,
            fail_every: 0,
            status: 500,
            retry_after: None,
        }
    }
}

impl Faults {
    /// No faults: every request gets its normal reply.
    pub fn none() -> Self {
        Faults::default()
    }

    /// The first `n` chat-completions requests fail with HTTP 500.
    pub fn fail_first(n: u32) -> Self {
        Faults {
            fail_first: n,
            ..Faults::default()
        }
    }

    /// Every `n`-th chat-completions request fails with HTTP 500 (after the first
    /// [`fail_first`](Faults::fail_first), none by default).
    pub fn fail_every(n: u32) -> Self {
        Faults {
            fail_every: n,
            ..Faults::default()
        }
    }

    /// The same faults with another HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same faults, telling the client to wait `retry_after`.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

/// The configuration of a [`crate::ReplayServer`].
///
/// `Debug` never prints the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    /// When set, requests whose `Authorization: Bearer` token differs (or is missing) get
    /// OpenAI's 401 `invalid_api_key` error. When `None`, any or no key is accepted.
    pub api_key: Option<String>,
    /// How the answering fixture is chosen.
    pub scenario: Scenario,
    /// Errors injected before normal replies.
    pub faults: Faults,
    /// When set, this misbehaviour replaces every fixture answer (after the key check and the
    /// injected faults).
    pub hostile: Option<Hostile>,
    /// How long to wait before answering each chat-completions request.
    pub delay: Duration,
    /// How long to wait between two server-sent events of a streamed reply.
    pub chunk_delay: Duration,
    /// Where to listen (default `127.0.0.1:0`: a free port on the loopback interface).
    pub addr: SocketAddr,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            api_key: None,
            scenario: Scenario::Auto,
            faults: Faults::default(),
            hostile: None,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl fmt::Debug for ReplayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("scenario", &self.scenario)
            .field("faults", &self.faults)
            .field("hostile", &self.hostile)
            .field("delay", &self.delay)
            .field("chunk_delay", &self.chunk_delay)
            .field("addr", &self.addr)
            .finish()
    }
}

impl ReplayConfig {
    /// The default configuration: automatic fixtures, no key, no faults, no delay, a free port.
    pub fn new() -> Self {
        ReplayConfig::default()
    }

    /// Requires this API key as `Authorization: Bearer <key>`.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Always answers with the named fixture ([`Scenario::Fixed`]).
    #[must_use]
    pub fn with_fixture(mut self, name: impl Into<String>) -> Self {
        self.scenario = Scenario::Fixed(name.into());
        self
    }

    /// Sets the scenario.
    #[must_use]
    pub fn with_scenario(mut self, scenario: Scenario) -> Self {
        self.scenario = scenario;
        self
    }

    /// Injects these faults.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Misbehaves this way instead of answering from the fixtures.
    #[must_use]
    pub fn with_hostile(mut self, hostile: Hostile) -> Self {
        self.hostile = Some(hostile);
        self
    }

    /// Waits this long before answering each chat-completions request.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long between two server-sent events.
    #[must_use]
    pub fn with_chunk_delay(mut self, chunk_delay: Duration) -> Self {
        self.chunk_delay = chunk_delay;
        self
    }

    /// Listens on this address.
    #[must_use]
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let config = ReplayConfig::new().with_api_key("sk-secret-value");
        let text = format!("{config:?}");
        assert!(!text.contains("sk-secret-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn defaults() {
        let config = ReplayConfig::default();
        assert_eq!(config.addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.faults.status, 500);
        assert_eq!(config.faults.fail_first, 0);
        assert_eq!(config.scenario, Scenario::Auto);
        let faults = Faults::fail_first(2)
            .with_status(429)
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(faults.fail_first, 2);
        assert_eq!(faults.status, 429);
        assert_eq!(Faults::fail_every(3).fail_every, 3);
        assert_eq!(Faults::fail_every(3).fail_first, 0);
        assert_eq!(faults.retry_after, Some(Duration::from_millis(1500)));
    }
}
