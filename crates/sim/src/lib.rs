//! Scenario runner, simulator and benchmarks: QA's headless, deterministic view of the engine.
//!
//! - [`format`]: the TOML scenario format (docs/SCENARIOS.md documents it for scenario writers).
//! - [`runner`]: drives one engine through one scenario on a virtual clock; [`expect`] checks
//!   the outcome.
//! - [`transport`]: how the runner's clients reach the engine — in memory, or over real TLS
//!   WebSockets through the production server ([`ws`]), with the same per-participant events.
//! - [`agents`]: real `command` / `claude` agent processes in scenarios, kept in step with the
//!   virtual clock.
//! - [`model`]: the reference model of the rules the simulator checks the engine against.
//! - [`simulate`]: VOPR-style random flows from a seed, with shrinking to a minimal scenario.
//! - [`bench`]: fan-out throughput as a ratio against a one-client reference.
//!
//! The command-line front-ends (`roundtable scenario|simulate|bench`) are in `crate::app::qa`;
//! this layer reports through the writers they hand it.
//!
//! Everything here is deterministic: one seed drives every random choice, time moves only when
//! the runner ticks, and transcripts of the same file and seed are byte-identical.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use roundtable_agent as agent;
use roundtable_engine as engine;
use roundtable_net as net;
use roundtable_protocol::{client_session, ids, persist, protocol, token};
use roundtable_store as store;

pub mod agents;
pub mod bench;
pub mod expect;
pub mod format;
pub mod model;
pub mod runner;
pub mod simulate;
pub mod testkit;
pub mod transport;
pub mod ws;

pub use format::{expand_paths, Scenario, ScenarioError};
pub use runner::{run_scenario, run_scenario_reusing, Failure, Reuse, RunOptions, RunReport};
pub use transport::TransportKind;

use std::path::PathBuf;

/// Loads every scenario under `paths`.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Scenario)>, ScenarioError> {
    expand_paths(paths)?.into_iter().map(|p| Scenario::load(&p).map(|s| (p, s))).collect()
}
