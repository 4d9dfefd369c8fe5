//! Black-box tests of the layers through tower: one named test per behaviour rule.

mod breaker;
mod breaker_states;
mod budget;
mod common;
mod deadline;
mod end_to_end;
mod properties;
mod retry;
mod review;
