//! A plain HTTP/1.0 `GET`, for the HTTP servers the tests and benches start as processes (the
//! operator's `/readyz` and `/metrics`).

use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long [`get`] waits for the whole exchange: a server that accepts and never answers (a
/// stopped process, a port someone else holds) is an error, not a wait that never ends.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on `addr` over plain HTTP/1.0: the status code and the body. An exchange that
/// takes over 10 s is a [`ErrorKind::TimedOut`] error.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_within(addr, path, TIMEOUT).await
}

async fn get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    tokio::time::timeout(timeout, exchange(addr, path))
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::TimedOut,
                format!("GET {addr}{path}: no response within {timeout:?}"),
            ))
        })
}

async fn exchange(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: testenv\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    let code = head
        .strip_prefix("HTTP/1.")
        .and_then(|h| h.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidData,
                format!(
                    "GET {addr}{path}: not an HTTP response: {:?}",
                    head.lines().next().unwrap_or_default()
                ),
            )
        })?;
    Ok((code, body.to_owned()))
}

/// [`get`] that wants a 200: the body, or what came instead (the status and body, or the
/// error) as the observation of a wait ([`crate::wait::until_ok`]).
pub async fn get_ok(addr: SocketAddr, path: &str) -> Result<String, String> {
    match get(addr, path).await {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("GET {addr}{path}: {code}: {body}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Serves one connection with `response`, after reading the request.
    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(response.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn code_and_body() {
        let addr = serve_once("HTTP/1.0 503 Service Unavailable\r\nX: y\r\n\r\nnot ready").await;
        assert_eq!(
            get(addr, "/readyz").await.unwrap(),
            (503, "not ready".to_owned())
        );
    }

    #[tokio::test]
    async fn get_ok_wants_a_200() {
        let addr = serve_once("HTTP/1.1 200 OK\r\n\r\nok").await;
        assert_eq!(get_ok(addr, "/readyz").await, Ok("ok".to_owned()));
        let addr = serve_once("HTTP/1.0 503 Service Unavailable\r\n\r\nstandby").await;
        let seen = get_ok(addr, "/readyz").await.unwrap_err();
        assert_eq!(seen, format!("GET {addr}/readyz: 503: standby"));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = get_within(addr, "/readyz", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let addr = serve_once("SSH-2.0-OpenSSH\r\n").await;
        let err = get(addr, "/metrics").await.unwrap_err();
        assert!(err.to_string().contains("not an HTTP response"), "{err}");
    }
}
