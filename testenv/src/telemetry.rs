//! A typed reader over the collector's JSON-lines output (being written).
