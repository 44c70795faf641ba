//! Starts the custom OpenTelemetry Collector (`otelcol-test`) on free loopback ports (being written).
