//! Placeholder until the decision bench lands.
fn main() {}
