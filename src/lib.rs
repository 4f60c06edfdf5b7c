//! roundtable: run an AI coding agent on your machine and invite others into the same live
//! sessions over WebSocket.
//!
//! - [`engine`]: the deterministic ECS core (world, schedule, tick) — pure, no I/O.
//! - [`components`], [`systems`]: the domain data and one system per rule.
//! - [`protocol`]: wire types (JSON frames).
//! - [`persist`]: the contract with the store; [`store`]: SQLite implementation.
//! - [`agent`]: agent backends (demo in-engine; claude and command out of process).
//! - [`net`]: TLS WebSocket host and the `join` client.
//! - [`scenario`]: the deterministic scenario runner and simulator.

pub mod agent;
pub mod components;
pub mod engine;
pub mod ids;
pub mod net;
pub mod paths;
pub mod persist;
pub mod protocol;
pub mod scenario;
pub mod store;
pub mod systems;
pub mod testkit;
pub mod token;
pub mod ui;
