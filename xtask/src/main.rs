//! Project chores (`cargo xtask ci`): filled by the foundation issue.
fn main() {}
