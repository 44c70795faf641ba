//! The error bodies this server writes itself (the recorded ones come from fixtures), in
//! OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`. Texts follow what the
//! OpenAI API returns; this module never echoes a full API key.

use serde_json::{Value, json};

fn body(message: &str, kind: &str, code: Option<&str>) -> String {
    let value = json!({
        "error": {
            "message": message,
            "type": kind,
            "param": Value::Null,
            "code": code,
        }
    });
    // Pretty, like the API's own error bodies. Serialising a `Value` cannot fail.
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// A presented key as OpenAI quotes it: a few characters at each end, the rest masked. Short
/// keys are masked entirely.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

/// 401 for a missing or wrong bearer token (`code: invalid_api_key`).
pub(crate) fn invalid_api_key(presented: Option<&str>) -> String {
    let message = match presented {
        Some(key) => format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            mask(key)
        ),
        None => "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), \
                 or as the password field (with blank username) if you're accessing the API \
                 from your browser and are prompted for a username and password. You can \
                 obtain an API key from https://platform.openai.com/account/api-keys."
            .to_owned(),
    };
    body(&message, "invalid_request_error", Some("invalid_api_key"))
}

/// 404 for a route the API does not have.
pub(crate) fn invalid_url(method: &str, path: &str) -> String {
    body(
        &format!("Invalid URL ({method} {path})"),
        "invalid_request_error",
        None,
    )
}

/// 400 for a body that is not a JSON object.
pub(crate) fn invalid_json() -> String {
    body(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON. If you have trouble figuring out how to fix this, please \
         contact us through our help center at help.openai.com.)",
        "invalid_request_error",
        None,
    )
}

/// 400 for a request without `model`.
pub(crate) fn missing_model() -> String {
    body(
        "you must provide a model parameter",
        "invalid_request_error",
        None,
    )
}

/// 404 for `GET /v1/models/{id}` with an unknown id.
pub(crate) fn model_not_found(model: &str) -> String {
    body(
        &format!("The model '{model}' does not exist"),
        "invalid_request_error",
        Some("model_not_found"),
    )
}

/// An injected failure with this status: 429 is a rate limit, 5xx a server error.
pub(crate) fn fault(status: u16) -> String {
    match status {
        429 => body(
            "Rate limit reached for requests (injected by openai-replay). Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500..=599 => body(
            "The server had an error while processing your request. Sorry about that! \
             (injected by openai-replay)",
            "server_error",
            Some("server_error"),
        ),
        _ => body(
            &format!("Injected failure with HTTP {status} (openai-replay)"),
            "invalid_request_error",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn keys_are_masked() {
        let text = invalid_api_key(Some("sk-proj-abcdefghijklmnop1234"));
        assert!(!text.contains("abcdefghijklmnop"), "{text}");
        assert!(text.contains("sk-***1234"), "{text}");
        assert!(invalid_api_key(Some("short")).contains("***."));
        assert!(!invalid_api_key(Some("short")).contains("short"));
        let v = parse(&invalid_api_key(None));
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn fault_bodies() {
        assert_eq!(parse(&fault(429))["error"]["code"], "rate_limit_exceeded");
        assert_eq!(parse(&fault(503))["error"]["type"], "server_error");
        assert_eq!(parse(&fault(500))["error"]["code"], "server_error");
        assert!(parse(&fault(408))["error"]["code"].is_null());
        assert_eq!(
            parse(&invalid_url("GET", "/v1/nope"))["error"]["message"],
            "Invalid URL (GET /v1/nope)"
        );
    }
}
