//! Criterion benches of the proxy path (written next).

fn main() {}
