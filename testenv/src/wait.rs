//! Waiting until something holds: the one polling helper of the harness, the tests and the demo.
//! The timeout is a guard against a hung run, never a performance assertion.

use std::future::Future;
use std::time::Duration;

/// How often [`until`] checks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// [`until`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub timeout: Duration,
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, or fails after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_or_times_out() {
        let mut n = 0;
        let got = until("the third try", Duration::from_secs(30), || {
            n += 1;
            std::future::ready((n == 3).then_some(n))
        })
        .await;
        assert_eq!(got, Ok(3));
        let gave_up = until("nothing", Duration::from_millis(10), || {
            std::future::ready(None::<()>)
        })
        .await
        .map_err(|e| e.to_string());
        assert_eq!(
            gave_up,
            Err("timed out after 10ms waiting for nothing".to_owned())
        );
    }
}
