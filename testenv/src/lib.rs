//! testenv (being written).
