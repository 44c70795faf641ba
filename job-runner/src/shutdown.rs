//! Termination signals: SIGTERM (the kubelet stopping a deleted or evicted pod) and SIGINT
//! (Ctrl-C) cancel the in-flight API call, so that the run still ends with a classified result
//! (`error.type=cancelled`, exit code 5) and flushed telemetry within the pod's grace period,
//! instead of being killed with nothing reported. The runner is PID 1 in its container, where an
//! unhandled SIGTERM is ignored: without this it would wait out the whole grace period.
//!
//! It only listens and tells; the workflow decides what a cancellation means and `main` still
//! writes the result and flushes.

use tokio::sync::watch;

/// A handle that says when (and by which signal) the run was asked to stop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Option<&'static str>>);

impl Shutdown {
    /// Listens for SIGTERM and SIGINT from now on (needs a running Tokio runtime). The first one
    /// cancels the run; later ones are ignored (the flush is already bounded).
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    else => return,
                };
                tracing::warn!(signal = name, "{name} received: cancelling the run");
                // The first signal wins; the receivers may all be gone (the run ended).
                tx.send_if_modified(|current| {
                    let first = current.is_none();
                    if first {
                        *current = Some(name);
                    }
                    first
                });
            }
        });
        Ok(Shutdown(rx))
    }

    /// A handle and the sender that triggers it (tests, and callers with their own signal).
    pub fn channel() -> (watch::Sender<Option<&'static str>>, Shutdown) {
        let (tx, rx) = watch::channel(None);
        (tx, Shutdown(rx))
    }

    /// The signal received so far, if any.
    pub fn signal(&self) -> Option<&'static str> {
        *self.0.borrow()
    }

    /// Waits until a signal is received and returns its name; never returns when none comes.
    pub async fn requested(&self) -> &'static str {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(signal) => signal.unwrap_or("a signal"),
            // The sender is gone: no signal can come any more.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn requested_returns_the_first_signal() {
        let (tx, shutdown) = Shutdown::channel();
        assert_eq!(shutdown.signal(), None);
        let pending = tokio::time::timeout(Duration::from_millis(20), shutdown.requested()).await;
        assert!(pending.is_err(), "nothing requested yet");
        tx.send_replace(Some("SIGTERM"));
        assert_eq!(shutdown.requested().await, "SIGTERM");
        assert_eq!(shutdown.signal(), Some("SIGTERM"));
    }

    #[tokio::test]
    async fn a_dropped_sender_never_requests() {
        let (tx, shutdown) = Shutdown::channel();
        drop(tx);
        let pending = tokio::time::timeout(Duration::from_millis(20), shutdown.requested()).await;
        assert!(pending.is_err());
    }
}
