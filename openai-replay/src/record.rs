//! What the server remembers about each request, for tests to inspect. Secrets never enter the
//! record: `authorization` becomes `Bearer <redacted>`, other credential headers `<redacted>`.

use axum::http::HeaderMap;
use serde_json::Value;

/// One request the server answered (`GET /healthz` is not recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request path without the query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string without the `?` (e.g. Azure's `api-version=2024-10-21`), when there is one.
    pub query: Option<String>,
    /// The request headers in arrival order, names lower-case, credentials redacted.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<Value>,
    /// The fixture served, when the answer came from one.
    pub fixture: Option<String>,
    /// The status returned.
    pub status: u16,
    /// When the server received the request (its own clock, taken before any
    /// [`ReplayConfig::delay`](crate::ReplayConfig::delay)): tests count requests in time windows
    /// from it, so a slow client machine cannot skew the count.
    pub received: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Headers that carry credentials and are recorded as `<redacted>`.
const SECRET_HEADERS: &[&str] = &["api-key", "x-api-key", "cookie", "proxy-authorization"];

/// The headers to record, credentials redacted.
pub(crate) fn redacted_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let value = if name == "authorization" {
                let text = value.to_str().unwrap_or_default();
                let is_bearer = text
                    .split_whitespace()
                    .next()
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"));
                if is_bearer {
                    "Bearer <redacted>".to_owned()
                } else {
                    "<redacted>".to_owned()
                }
            } else if SECRET_HEADERS.contains(&name.as_str()) {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

/// The key a request presents: its `api-key` header (Azure OpenAI's key authentication) or else
/// its bearer token, when non-empty.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| bearer_token(headers))
}

/// The bearer token of a request, if it has a non-empty one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("api-key", "sk-secret".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let recorded = redacted_headers(&h);
        let text = format!("{recorded:?}");
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(recorded.contains(&("authorization".into(), "Bearer <redacted>".into())));
        assert!(recorded.contains(&("content-type".into(), "application/json".into())));
        h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(redacted_headers(&h).contains(&("authorization".into(), "<redacted>".into())));
    }

    #[test]
    fn an_api_key_header_is_a_presented_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sk-1"));
        h.insert("api-key", " az-2 ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("az-2"));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("sk-1"));
        h.insert("authorization", "bearer  sk-2 ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("sk-2"));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
