//! The project's task runner (being written).
fn main() {}
