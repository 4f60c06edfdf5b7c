//! The vocabulary every layer of roundtable shares: the wire protocol's types ([`protocol`]),
//! ids ([`ids`]), token hashing ([`token`]) and the store contract ([`persist`]). It depends on no
//! other roundtable crate and on no I/O.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod client_session;
pub mod ids;
pub mod persist;
pub mod protocol;
pub mod token;
pub mod vote_status;
