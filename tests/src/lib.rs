//! Shared helpers for the cross-crate integration tests: real servers on
//! 127.0.0.1:0 and real clients.
