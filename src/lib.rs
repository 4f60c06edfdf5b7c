//! roundtable: run an AI coding agent on your machine and invite others into the same live
//! sessions over WebSocket.
//!
//! The layers are crates of one workspace, so the compiler enforces that dependencies point
//! down only (docs/ARCHITECTURE.md has the picture):
//!
//! - this crate: [`app`], everything a person runs — command line, `serve`/`host` bootstrap, the
//!   host console, `join`, `workspace`/`share` commands; [`ui`], the egui windows over the app.
//! - `roundtable-sim` ([`scenario`], [`testkit`]): the deterministic scenario runner, simulator,
//!   reference model and benchmarks; the in-memory harness the rule tests drive the engine with.
//! - `roundtable-net` ([`net`]): TLS WebSocket server, client connector, links, certificates,
//!   known hosts.
//! - `roundtable-store` ([`store`]): the SQLite implementation of the store and its admin
//!   operations.
//! - `roundtable-agent` ([`agent`]): agent backends (demo in the tick; claude and command as
//!   processes).
//! - `roundtable-engine` ([`engine`]): the deterministic ECS core (world, components, systems,
//!   tick) — no I/O; it cannot name tokio, SQLite or egui.
//! - `roundtable-protocol` ([`protocol`], [`ids`], [`token`], [`persist`], [`vote_status`]): the
//!   vocabulary every layer shares (wire types, ids, token hashing, the `Store` contract, how a
//!   vote's state is worded).
//!
//! The lower crates are re-exported under their layer's name, so `roundtable::engine::Engine`
//! and `crate::net::…` read as before.

pub use roundtable_agent as agent;
pub use roundtable_engine as engine;
pub use roundtable_net as net;
pub use roundtable_protocol::{client_session, ids, persist, protocol, token, vote_status};
pub use roundtable_sim as scenario;
pub use roundtable_sim::testkit;
pub use roundtable_store as store;

pub mod app;
#[cfg(feature = "gui")]
pub mod ui;
