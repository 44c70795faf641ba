//! When to try again: exponential backoff with jitter, `Retry-After` honoured, everything bounded
//! by the run's overall deadline and attempt budget. Pure: it computes delays, the caller sleeps.

use std::time::{Duration, Instant};

use rand::Rng as _;

/// The first backoff step.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// The largest backoff step (before jitter).
pub const MAX_DELAY: Duration = Duration::from_secs(8);

/// The retry policy of one run.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (the first one included).
    pub max_attempts: u32,
    /// When the run must give up.
    pub deadline: Instant,
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Stop: the attempts are used up.
    AttemptsExhausted,
    /// Stop: the wait would pass the deadline.
    DeadlineExceeded,
}

impl RetryPolicy {
    /// The policy of a run that starts at `now` and may take `timeout`. A timeout too large for
    /// the clock (`LLMJOB_TIMEOUT=500000000y`) is shortened to the largest deadline it can
    /// represent, never a panic.
    pub fn new(max_attempts: u32, timeout: Duration, now: Instant) -> Self {
        let mut step = timeout;
        let deadline = loop {
            // Halving ends at zero, which `checked_add` always accepts.
            if let Some(deadline) = now.checked_add(step) {
                break deadline;
            }
            step /= 2;
        };
        RetryPolicy {
            max_attempts,
            deadline,
        }
    }

    /// The decision after failed attempt number `attempt` (1-based). `server_wait` is the
    /// server's `Retry-After`, which replaces the computed backoff when present.
    pub fn decide(&self, attempt: u32, server_wait: Option<Duration>, now: Instant) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::AttemptsExhausted;
        }
        let wait =
            server_wait.unwrap_or_else(|| backoff(attempt, rand::rng().random_range(0.75..=1.0)));
        match self.deadline.checked_duration_since(now) {
            Some(left) if wait < left => Decision::RetryAfter(wait),
            _ => Decision::DeadlineExceeded,
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

/// Exponential backoff after failed attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, ... capped at
/// [`MAX_DELAY`], scaled by `jitter` (0.75 to 1.0, as the OpenAI SDKs do).
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = BASE_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(MAX_DELAY).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(10, 1.0), MAX_DELAY);
        assert_eq!(backoff(40, 1.0), MAX_DELAY);
        assert_eq!(backoff(1, 0.75), Duration::from_millis(375));
    }

    #[test]
    fn a_huge_timeout_saturates() {
        let now = Instant::now();
        let policy = RetryPolicy::new(2, Duration::MAX, now);
        assert!(policy.remaining(now) > Duration::from_secs(86_400 * 365));
        assert_eq!(
            policy.decide(1, Some(Duration::MAX), now),
            Decision::DeadlineExceeded
        );
    }

    #[test]
    fn decisions() {
        let now = Instant::now();
        let policy = RetryPolicy {
            max_attempts: 3,
            deadline: now + Duration::from_secs(10),
        };
        assert_eq!(
            policy.decide(1, Some(Duration::from_secs(2)), now),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert!(
            matches!(policy.decide(2, None, now), Decision::RetryAfter(d) if d <= Duration::from_secs(1))
        );
        assert_eq!(policy.decide(3, None, now), Decision::AttemptsExhausted);
        assert_eq!(
            policy.decide(1, Some(Duration::from_secs(30)), now),
            Decision::DeadlineExceeded
        );
    }
}
