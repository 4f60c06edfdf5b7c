//! roundtable: run an AI coding agent on your machine and invite others into the same live
//! sessions over WebSocket.
//!
//! One folder per layer; dependencies point down only (docs/ARCHITECTURE.md has the picture,
//! `tests/architecture.rs` guards it):
//!
//! - [`app`]: everything a person runs — command line, `serve`/`host` bootstrap, the host
//!   console, `join`, `workspace`/`share` commands. [`ui`]: the egui windows over the app.
//! - [`scenario`]: the deterministic scenario runner, simulator and benchmarks; [`testkit`]: the
//!   in-memory harness the rule tests drive the engine with.
//! - [`net`]: TLS WebSocket server, client connector, links, certificates, known hosts.
//! - [`store`]: the SQLite implementation of the store and its admin operations.
//! - [`agent`]: agent backends (demo in the tick; claude and command as processes).
//! - [`engine`]: the deterministic ECS core (world, components, systems, tick) — no I/O.
//! - [`protocol`], [`ids`], [`token`], [`persist`]: the vocabulary every layer shares (wire
//!   types, ids, token hashing, the `Store` contract).

pub mod agent;
pub mod app;
pub mod engine;
pub mod ids;
pub mod net;
pub mod persist;
pub mod protocol;
pub mod scenario;
pub mod store;
pub mod testkit;
pub mod token;
#[cfg(feature = "gui")]
pub mod ui;
