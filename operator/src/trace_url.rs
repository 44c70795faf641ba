//! Trace links: the `--trace-url-template` that turns a run's trace id into a URL of the user's
//! trace backend (Jaeger, Grafana's Explore, a vendor's UI).
//!
//! Owns the template's validation (at start, so a bad template stops the operator with exit code
//! 2 instead of filling every status with a broken link) and its rendering. It never fetches the
//! URL, and the URL never holds more than the template and the trace id.

use std::fmt;
use std::str::FromStr;

/// The placeholder a template must contain; it is replaced by the run's trace id (32 lowercase
/// hex digits).
pub const PLACEHOLDER: &str = "{traceId}";

/// A trace id used to check that a template renders into a valid URL.
const SAMPLE_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// Why a trace URL template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template lacks the placeholder.
    #[error("the trace URL template {template:?} has no {PLACEHOLDER} placeholder")]
    NoPlaceholder {
        /// The template.
        template: String,
    },
    /// The rendered template is not an absolute URL.
    #[error(
        "the trace URL template {template:?} is not an absolute URL once {PLACEHOLDER} is \
         replaced ({source})"
    )]
    NotAUrl {
        /// The template.
        template: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
    /// The URL's scheme is not `http` or `https`, or it has no host.
    #[error(
        "the trace URL template {template:?} must be an http:// or https:// URL with a host (got \
         scheme {scheme:?})"
    )]
    NotHttp {
        /// The template.
        template: String,
        /// The scheme it has.
        scheme: String,
    },
}

/// A validated trace URL template: an absolute `http(s)` URL containing [`PLACEHOLDER`], e.g.
/// `http://jaeger:16686/trace/{traceId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceUrlTemplate(String);

impl TraceUrlTemplate {
    /// Validates `template`.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let template = template.trim();
        if !template.contains(PLACEHOLDER) {
            return Err(TemplateError::NoPlaceholder {
                template: template.to_owned(),
            });
        }
        let sample = template.replace(PLACEHOLDER, SAMPLE_TRACE_ID);
        let url = url::Url::parse(&sample).map_err(|source| TemplateError::NotAUrl {
            template: template.to_owned(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(TemplateError::NotHttp {
                template: template.to_owned(),
                scheme: url.scheme().to_owned(),
            });
        }
        Ok(TraceUrlTemplate(template.to_owned()))
    }

    /// The URL of the trace `trace_id`: every [`PLACEHOLDER`] replaced by it. `None` for a
    /// trace id that is not 32 hex digits (nothing else ever lands in the URL).
    pub fn render(&self, trace_id: &str) -> Option<String> {
        let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.0.replace(PLACEHOLDER, &trace_id.to_ascii_lowercase()))
    }

    /// The template as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TraceUrlTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceUrlTemplate::parse(s)
    }
}

impl fmt::Display for TraceUrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn jaeger_and_grafana_templates_render() {
        let jaeger = TraceUrlTemplate::parse("http://jaeger:16686/trace/{traceId}").unwrap();
        assert_eq!(
            jaeger.render(ID).as_deref(),
            Some("http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let grafana = TraceUrlTemplate::parse(
            r#"https://grafana.example.com/explore?left={"datasource":"tempo","queries":[{"query":"{traceId}"}]}"#,
        )
        .unwrap();
        assert_eq!(
            grafana.render(&ID.to_ascii_uppercase()).as_deref(),
            Some(
                r#"https://grafana.example.com/explore?left={"datasource":"tempo","queries":[{"query":"4bf92f3577b34da6a3ce929d0e0e4736"}]}"#
            )
        );
    }

    #[test]
    fn only_trace_ids_are_rendered() {
        let t = TraceUrlTemplate::parse("https://ui.example.com/t/{traceId}").unwrap();
        assert_eq!(t.render(""), None);
        assert_eq!(t.render("not-a-trace-id-not-a-trace-id-xx"), None);
        assert_eq!(t.render(&format!("{ID}00")), None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let err = |t: &str| TraceUrlTemplate::parse(t).unwrap_err();
        assert!(matches!(
            err("http://jaeger:16686/trace/"),
            TemplateError::NoPlaceholder { .. }
        ));
        assert!(matches!(
            err("http://jaeger:16686/trace/{traceid}"),
            TemplateError::NoPlaceholder { .. }
        ));
        assert!(matches!(
            err("/trace/{traceId}"),
            TemplateError::NotAUrl { .. }
        ));
        assert!(matches!(
            err("ftp://files.example.com/{traceId}"),
            TemplateError::NotHttp { .. }
        ));
        let message = err("jaeger:16686/trace/{traceId}").to_string();
        assert!(message.contains("http://"), "{message}");
    }
}
