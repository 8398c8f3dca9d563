//! Example programs.
fn main() {}
