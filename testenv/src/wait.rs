//! Waiting until something holds: the one polling helper of the harness, the tests, the demo and
//! the benchmarks. [`until`] waits for a `Some`; [`until_ok`] also keeps what it saw last, so a
//! timeout says what state things were stuck in. The timeout is a guard against a hung run,
//! never a performance assertion.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How often [`until`] and [`until_ok`] check again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// [`until`] or [`until_ok`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}{}", last_seen(.last))]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub timeout: Duration,
    /// The last observation [`until_ok`]'s check reported (`None` for [`until`], or when the
    /// check never ran to an observation).
    pub last: Option<String>,
}

fn last_seen(last: &Option<String>) -> String {
    match last {
        Some(seen) => format!("; last seen: {seen}"),
        None => String::new(),
    }
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, or fails after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, timeout, || {
        let next = check();
        async move { next.await.ok_or(None) }
    })
    .await
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok`, or fails after `timeout`. An
/// `Err` is what the check saw instead (a phase, a status, an error); the timeout error carries
/// the last one.
pub async fn until_ok<T, O, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    O: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, O>>,
{
    poll(what, timeout, || {
        let next = check();
        async move { next.await.map_err(|seen| Some(seen.to_string())) }
    })
    .await
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Option<String>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(Some(seen)) => last = Some(seen),
            Err(None) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[tokio::test]
    async fn until_ok_reports_the_last_observation() {
        let mut n = 0;
        let got = until_ok("the third try", Duration::from_secs(30), || {
            n += 1;
            std::future::ready(if n == 3 { Ok(n) } else { Err(n) })
        })
        .await;
        assert_eq!(got, Ok(3));
        let mut n = 0;
        let gave_up = until_ok("Succeeded", Duration::from_millis(250), || {
            n += 1;
            std::future::ready(Err::<(), _>(format!("phase Running (check {n})")))
        })
        .await
        .map_err(|e| e.to_string())
        .unwrap_err();
        assert!(
            gave_up.starts_with(
                "timed out after 250ms waiting for Succeeded; last seen: phase Running (check "
            ),
            "{gave_up}"
        );
        assert!(gave_up.ends_with(&format!("(check {n})")), "{gave_up}");
    }
}
