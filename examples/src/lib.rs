//! Runnable examples of Waypost (`cargo run -p waypost-examples --example NAME`). The curl
//! walkthrough is in `examples/walkthrough.sh`.
