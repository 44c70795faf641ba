//! W3C Trace Context `traceparent` values: parsing the `llmjob.dev/traceparent` annotation and
//! formatting the `TRACEPARENT` a run's pod gets.
//!
//! Pure: no I/O and no OpenTelemetry SDK; `telemetry` turns these into span contexts.

use std::fmt;

/// A parsed `traceparent` (version `00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (16 bytes, never all zero).
    pub trace_id: [u8; 16],
    /// The parent span id (8 bytes, never all zero).
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (flag `01`).
    pub sampled: bool,
}

/// Why a `traceparent` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not four `-`-separated fields of the right lengths.
    #[error("expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, got {0:?}")]
    Format(String),
    /// A field holds something other than lowercase hex digits.
    #[error("{field} is not lowercase hex")]
    NotHex {
        /// The field that is wrong.
        field: &'static str,
    },
    /// The trace id or span id is all zeros, which W3C Trace Context forbids.
    #[error("{field} must not be all zeros")]
    Zero {
        /// The field that is wrong.
        field: &'static str,
    },
    /// Version `ff` is invalid.
    #[error("version ff is invalid")]
    Version,
}

impl TraceParent {
    /// Parses a `traceparent` value. Future versions (not `00`, not `ff`) are accepted when their
    /// first four fields have the version-00 layout, as the specification asks.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim();
        let parts: Vec<&str> = value.split('-').collect();
        if parts.len() < 4
            || parts[0].len() != 2
            || parts[1].len() != 32
            || parts[2].len() != 16
            || parts[3].len() != 2
        {
            return Err(TraceParentError::Format(value.chars().take(80).collect()));
        }
        let version = decode::<1>(parts[0], "version")?;
        if version[0] == 0xff {
            return Err(TraceParentError::Version);
        }
        if version[0] == 0 && parts.len() != 4 {
            return Err(TraceParentError::Format(value.chars().take(80).collect()));
        }
        let trace_id = decode::<16>(parts[1], "trace id")?;
        let span_id = decode::<8>(parts[2], "span id")?;
        let flags = decode::<1>(parts[3], "flags")?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::Zero { field: "trace id" });
        }
        if span_id == [0; 8] {
            return Err(TraceParentError::Zero { field: "span id" });
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{}",
            self.trace_id_hex(),
            self.span_id_hex(),
            if self.sampled { "01" } else { "00" }
        )
    }
}

fn decode<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], TraceParentError> {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(TraceParentError::NotHex { field });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| TraceParentError::NotHex { field })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn round_trips() {
        let tp = TraceParent::parse(VALID).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tp.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(tp.span_id_hex(), "b7ad6b7169203331");
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn future_versions_and_unsampled() {
        let tp = TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!tp.sampled);
        assert!(tp.to_string().starts_with("00-"));
    }
}
