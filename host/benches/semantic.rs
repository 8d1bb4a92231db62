//! Semantic index lookup latency (filled in below).
fn main() {}
