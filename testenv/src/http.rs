//! A plain HTTP/1.0 `GET`, for the HTTP servers the tests and benches start as processes (the
//! operator's `/readyz` and `/metrics`).

use std::io::{Error, ErrorKind};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` on `addr` over plain HTTP/1.0: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
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
    async fn garbage_is_an_error() {
        let addr = serve_once("SSH-2.0-OpenSSH\r\n").await;
        let err = get(addr, "/metrics").await.unwrap_err();
        assert!(err.to_string().contains("not an HTTP response"), "{err}");
    }
}
