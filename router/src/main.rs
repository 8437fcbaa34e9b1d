//! The router binary (being built).
fn main() {}
