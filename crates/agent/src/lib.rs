//! Agent backends.
//!
//! The engine talks to agents through [`AgentCommand`]s and receives [`AgentOutput`]s. The
//! built-in [`demo::DemoAgent`] runs inside the tick (pure and deterministic). External backends
//! (`claude`, `codex`, `command`) implement [`AgentRuntime`] outside the engine: they run processes on
//! their own threads and push their output into the engine's inbound channel as
//! `Inbound::Agent`, so it is handled in the next tick like network input.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use roundtable_engine as engine;
use roundtable_protocol::{ids, persist, protocol};

pub mod claude;
pub mod clock;
pub mod codex;
pub mod command;
pub mod demo;
pub mod external;
pub mod process;
pub mod resolve;

pub use external::{ExternalAgents, ExternalConfig};

pub use crate::engine::agent::{
    AgentCommand, AgentEvent, AgentOutput, AgentRuntime, InTickAgent, NoExternalAgents, Resolution,
};

/// Registers the built-in in-tick backends (the `demo` agent) with an engine. Every driver of a
/// production-like engine (host, scenario runner, test harness) calls this once after
/// `Engine::new`; without it a `demo` session's turn fails like any unavailable backend.
pub fn install_builtin(engine: &mut crate::engine::Engine) {
    engine.add_in_tick_agent(demo::KIND, Box::new(demo::DemoAgent::default()));
}
