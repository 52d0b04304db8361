//! Test support that integration tests and benchmarks share: [`mock_connector`], a mock RFC 38 accounting
//! system that behaves like interledger-rs. Part of the library (not `cfg(test)`) so `tests/` and `examples/` can
//! use it; it only ever talks to loopback addresses it is given.

pub mod mock_connector;
