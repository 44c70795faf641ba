//! The pod-wide rate limiter of a batch: every request of every item goes through one
//! [`Limiter`], which holds the pod to its share of the run's limits
//! (`LLMJOB_REQUESTS_PER_MINUTE`, `LLMJOB_TOKENS_PER_MINUTE`) and pauses the whole pod when the
//! provider answers 429 with `Retry-After`.
//!
//! - Requests per minute: requests are evenly spaced, at least `60 s / limit` apart, checked and
//!   recorded at the moment a request is let through, so no burst ever exceeds the share and any
//!   window of a minute holds at most `limit` requests.
//! - Tokens per minute: a token bucket of a minute's tokens, refilled continuously. A request
//!   reserves an estimate before it is sent ([`estimate_tokens`]) and settles with the real usage
//!   once answered (the difference is returned or charged).
//! - A 429: [`Limiter::pause`] holds every request of the pod until the server's wait has passed.
//!
//! It is written here rather than taken from `governor`: the three rules share one state (a pause
//! must hold the request spacing and the token bucket alike, and a reservation must be settled
//! afterwards, which `governor` cannot), and it runs on tokio's clock, so its tests use tokio's
//! paused clock and assert on virtual time, never on wall time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Completion tokens assumed for a request without `LLMJOB_MAX_TOKENS` when reserving tokens.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 256;

/// The token estimate of a request, reserved before it is sent: a quarter of the input's
/// characters (OpenAI's rule of thumb of four characters a token) plus the completion tokens it
/// may use (`LLMJOB_MAX_TOKENS`, or [`DEFAULT_COMPLETION_TOKENS`]), times the choices asked for.
pub fn estimate_tokens(input_chars: usize, max_tokens: Option<u32>, choices: Option<u8>) -> u64 {
    let input = u64::try_from(input_chars.div_ceil(4)).unwrap_or(u64::MAX);
    let output = max_tokens.map_or(DEFAULT_COMPLETION_TOKENS, u64::from);
    input.saturating_add(output.saturating_mul(u64::from(choices.unwrap_or(1).max(1))))
}

/// The limits of one pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute, when limited.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, when limited.
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug)]
struct State {
    /// The earliest moment the next request may go (requests per minute).
    next_request: Instant,
    /// No request goes before this moment (a 429's `Retry-After`).
    paused_until: Instant,
    /// Tokens available now; negative after an underestimate was settled.
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Instant,
}

/// The pod-wide limiter (see the module documentation).
#[derive(Debug)]
pub struct Limiter {
    interval: Option<Duration>,
    tokens_per_minute: Option<f64>,
    state: Mutex<State>,
}

/// Tokens reserved for one request, to [`Limiter::settle`] once it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    tokens: u64,
}

impl Limiter {
    /// A limiter with `limits`, starting now with a full token bucket.
    pub fn new(limits: Limits) -> Self {
        let now = Instant::now();
        let tokens_per_minute = limits.tokens_per_minute.map(f64::from);
        Limiter {
            interval: limits
                .requests_per_minute
                .filter(|&rpm| rpm > 0)
                .map(|rpm| Duration::from_secs(60) / rpm),
            tokens_per_minute,
            state: Mutex::new(State {
                next_request: now,
                paused_until: now,
                tokens: tokens_per_minute.unwrap_or(0.0),
                refilled: now,
            }),
        }
    }

    /// Waits until a request estimated at `tokens` may be sent, and records it as sent. An
    /// estimate above the bucket (a minute's tokens) waits for a full bucket.
    pub async fn acquire(&self, tokens: u64) -> Reservation {
        loop {
            let wait_until = {
                let mut state = self.lock();
                let now = Instant::now();
                self.refill(&mut state, now);
                let mut ready_at = state.paused_until.max(now);
                if self.interval.is_some() {
                    ready_at = ready_at.max(state.next_request);
                }
                let mut reserved = 0;
                if let Some(capacity) = self.tokens_per_minute {
                    let needed = (tokens as f64).min(capacity);
                    // A hair of slack for floating point: the refill wait is computed to the
                    // nanosecond and must not be followed by one more nanosecond's wait.
                    if state.tokens + 1e-6 < needed {
                        let missing = needed - state.tokens;
                        let refill = Duration::from_secs_f64(missing * 60.0 / capacity);
                        ready_at = ready_at.max(now + refill);
                    }
                    reserved = tokens;
                }
                if ready_at <= now {
                    if let Some(interval) = self.interval {
                        state.next_request = now + interval;
                    }
                    if self.tokens_per_minute.is_some() {
                        state.tokens -= reserved as f64;
                    }
                    return Reservation { tokens: reserved };
                }
                ready_at
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Settles a reservation with the tokens the request really used (`None`: unknown, the
    /// estimate stands).
    pub fn settle(&self, reservation: Reservation, used: Option<u64>) {
        if self.tokens_per_minute.is_none() {
            return;
        }
        if let Some(used) = used {
            let mut state = self.lock();
            state.tokens += reservation.tokens as f64 - used as f64;
        }
    }

    /// Holds every request of the pod for `wait` from now (a 429's `Retry-After`); a later pause
    /// extends it, an earlier one changes nothing.
    pub fn pause(&self, wait: Duration) {
        let mut state = self.lock();
        let until = Instant::now() + wait;
        state.paused_until = state.paused_until.max(until);
    }

    fn refill(&self, state: &mut State, now: Instant) {
        if let Some(capacity) = self.tokens_per_minute {
            let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
            state.tokens = (state.tokens + elapsed * capacity / 60.0).min(capacity);
            state.refilled = now;
        }
    }

    /// Locks the state, ignoring poisoning: every update leaves it consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Runs `n` acquisitions of `tokens` each from `tasks` concurrent tasks, and returns the
    /// (virtual) moments they were let through, in order.
    async fn let_through(
        limiter: Arc<Limiter>,
        tasks: usize,
        n: usize,
        tokens: u64,
    ) -> Vec<Instant> {
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(n));
        let times = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (limiter, remaining, times) =
                    (limiter.clone(), remaining.clone(), times.clone());
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering;
                    while remaining
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                        .is_ok()
                    {
                        let _ = limiter.acquire(tokens).await;
                        times.lock().unwrap().push(Instant::now());
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_evenly_spaced_whatever_the_concurrency() {
        let start = Instant::now();
        let limiter = Arc::new(Limiter::new(Limits {
            requests_per_minute: Some(120),
            tokens_per_minute: None,
        }));
        let times = let_through(limiter, 8, 20, 1).await;
        assert_eq!(times.len(), 20);
        assert_eq!(times[0], start, "the first request waits for nothing");
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(500), "{pair:?}");
        }
        // No idle gaps either: 20 requests at 2 per second take 9.5 s.
        assert_eq!(times[19] - start, Duration::from_millis(9500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request_and_the_spacing_resumes() {
        let limiter = Arc::new(Limiter::new(Limits {
            requests_per_minute: Some(600),
            tokens_per_minute: None,
        }));
        let _ = limiter.acquire(1).await;
        limiter.pause(Duration::from_secs(3));
        let paused_at = Instant::now();
        let times = let_through(limiter.clone(), 4, 5, 1).await;
        assert!(times[0] >= paused_at + Duration::from_secs(3), "{times:?}");
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{pair:?}");
        }
        // A shorter pause does not cut a longer one short.
        limiter.pause(Duration::from_secs(5));
        limiter.pause(Duration::from_secs(1));
        let before = Instant::now();
        let _ = limiter.acquire(1).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reserved_then_settled() {
        let limiter = Limiter::new(Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(600),
        });
        let start = Instant::now();
        // A full bucket: two reservations of 300 go at once, the third waits for 300 tokens
        // (30 s at 10 tokens a second).
        let a = limiter.acquire(300).await;
        let b = limiter.acquire(300).await;
        assert_eq!(Instant::now(), start);
        // The first used only 100: 200 come back, so 200 of the next 300 are there already.
        limiter.settle(a, Some(100));
        limiter.settle(b, None);
        let c = limiter.acquire(300).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        // An underestimate is charged: 300 reserved, 900 used, the bucket is 600 in debt.
        limiter.settle(c, Some(900));
        let _ = limiter.acquire(60).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10 + 66));
        // An estimate above a minute's tokens waits for a full bucket, not for ever.
        let before = Instant::now();
        let _ = limiter.acquire(10_000).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_let_everything_through_at_once() {
        let start = Instant::now();
        let times = let_through(Arc::new(Limiter::new(Limits::default())), 4, 50, 1000).await;
        assert!(times.iter().all(|t| *t == start));
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_tokens(0, None, None), DEFAULT_COMPLETION_TOKENS);
        assert_eq!(estimate_tokens(9, Some(10), None), 3 + 10);
        assert_eq!(estimate_tokens(8, Some(10), Some(3)), 2 + 30);
        assert_eq!(
            estimate_tokens(0, Some(u32::MAX), Some(128)),
            u64::from(u32::MAX) * 128
        );
    }
}
