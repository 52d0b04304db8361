//! The `ilp-bridge` command.
fn main() {}
