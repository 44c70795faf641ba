//! Waiting until something holds: the one polling helper of the harness, the tests and the demo.
//! [`until`] waits for a `Some`; [`until_ok`] also keeps what it saw last, so a timeout says what
//! state things were stuck in; [`until_ok_or_abort`] also stops at once on a fatal observation
//! (a process that exited). The timeout is a guard against a hung run, never a performance
//! assertion.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::ops::ControlFlow;
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
    let done = poll(what, timeout, || {
        let next = check();
        async move {
            match next.await {
                Some(value) => ControlFlow::Break(Ok::<_, Infallible>(value)),
                None => ControlFlow::Continue(None),
            }
        }
    })
    .await;
    flatten(done)
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
    let done = until_ok_or_abort(what, timeout, || {
        let next = check();
        async move { Ok::<_, Infallible>(next.await) }
    })
    .await;
    flatten(done)
}

/// [`until_ok`] whose check can also give up at once: `Err(fatal)` ends the wait with `Err(fatal)`
/// (e.g. the process being waited for exited); `Ok(Err(observation))` means not yet. The inner
/// result is the timeout.
pub async fn until_ok_or_abort<T, O, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<Result<T, TimedOut>, E>
where
    O: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, O>, E>>,
{
    poll(what, timeout, || {
        let next = check();
        async move {
            match next.await {
                Ok(Ok(value)) => ControlFlow::Break(Ok(value)),
                Ok(Err(seen)) => ControlFlow::Continue(Some(seen.to_string())),
                Err(fatal) => ControlFlow::Break(Err(fatal)),
            }
        }
    })
    .await
}

fn flatten<T>(done: Result<Result<T, TimedOut>, Infallible>) -> Result<T, TimedOut> {
    match done {
        Ok(result) => result,
        Err(never) => match never {},
    }
}

/// The loop: `Break(Ok)` is done, `Break(Err)` aborts, `Continue(observation)` polls again.
async fn poll<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<Result<T, TimedOut>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ControlFlow<Result<T, E>, Option<String>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            ControlFlow::Break(Ok(value)) => return Ok(Ok(value)),
            ControlFlow::Break(Err(fatal)) => return Err(fatal),
            ControlFlow::Continue(Some(seen)) => last = Some(seen),
            ControlFlow::Continue(None) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(TimedOut {
                what: what.to_owned(),
                timeout,
                last,
            }));
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

    #[tokio::test]
    async fn until_ok_or_abort_stops_at_a_fatal_observation() {
        let mut n = 0;
        let aborted = until_ok_or_abort("never", Duration::from_secs(30), || {
            n += 1;
            std::future::ready(if n == 2 {
                Err("exited")
            } else {
                Ok(Err::<(), _>("running"))
            })
        })
        .await;
        assert_eq!(aborted, Err("exited"));
        assert_eq!(n, 2);
    }
}
