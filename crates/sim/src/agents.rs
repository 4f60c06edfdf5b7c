//! Real external agents in scenarios: the `command` and `claude` backends as processes.
//!
//! A scenario workspace with `agent = "command"` / `"claude"` and an `agent_cmd` runs a real
//! process (usually this package's `echo_agent` or `fake_claude`, named `${bin.NAME}`). The
//! runner installs [`ExternalAgents`] in the engine, wrapped in a [`TrackedAgents`] that notes
//! what the engine asked of each session's agent, and keeps the receiving end of the agents'
//! output channel in an [`AgentPump`]: agent output never goes straight into the engine's inbox
//! but through the runner, which forwards it before a tick like every other input (over
//! `--transport ws`, through the transport's relay queue).
//!
//! Virtual time against real processes. The engine runs on the scenario's virtual clock, the
//! agents in real time. So that virtual time never outruns an agent, the runner does not tick
//! while an agent is *working*: from the moment the engine hands it a turn (or a decision on one
//! of its requests) until it reaches a *pause* — it asks for a decision (plan, question, tool
//! request), or the turn ends (done or failed) — the runner blocks before the next tick, in real
//! time, until the pause arrives (at most [`AGENT_WAIT`], then the run fails). Everything the
//! agent said up to the pause then enters the engine in that one tick, per session in the order
//! the agent said it, sessions in id order. Which tick agent output lands in therefore depends
//! only on the scenario, never on process timing, and runs are byte-for-byte reproducible.
//! A cancelled turn is not waited for (the agent's acknowledgement is swallowed by the runtime).

use crate::agent::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, ExternalAgents, ExternalConfig};
use crate::engine::Inbound;
use crate::ids::SessionId;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest the runner waits, in real time, for a working agent to reach a pause.
pub const AGENT_WAIT: Duration = Duration::from_secs(10);

/// The hang watchdog of scenario agents: shorter than [`AGENT_WAIT`], so a hung agent fails its
/// turn (as in production, only sooner) instead of failing the run.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(4);

/// Environment variable naming the directory of this package's binaries (`${bin.NAME}`).
pub const BIN_DIR_ENV: &str = "ROUNDTABLE_BIN_DIR";

/// Finds the test agent `name` (`crates/testbins/examples/NAME.rs`, built by `cargo test` or
/// `cargo build --examples`): in `$ROUNDTABLE_BIN_DIR` when set, else next to the running
/// executable or in its parent directory, or their `examples/` (`target/debug/roundtable` and
/// `target/debug/deps/TEST` both find `target/debug/examples/NAME`).
pub fn find_bin(name: &str) -> Result<PathBuf, String> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(dir));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.extend([dir.to_path_buf(), dir.join("examples")]);
            if let Some(parent) = dir.parent() {
                dirs.extend([parent.to_path_buf(), parent.join("examples")]);
            }
        }
    }
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()).ok_or_else(|| {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "`${{bin.{name}}}`: no executable `{file}` in {} (build the test agents with `cargo build --examples -p roundtable-testbins` — `cargo test` does — or set {BIN_DIR_ENV})",
            if looked.is_empty() { "(no directory to look in)".to_string() } else { looked.join(" or ") }
        )
    })
}

/// The directory of a scenario file, for `${scenario_dir}`.
pub fn scenario_dir(source: Option<&Path>) -> Result<String, String> {
    let file = source.ok_or("`${scenario_dir}` needs a scenario loaded from a file")?;
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = dir.canonicalize().map_err(|e| format!("`${{scenario_dir}}`: {}: {e}", dir.display()))?;
    Ok(dir.display().to_string())
}

/// What the engine asked of each session's agent, as far as the runner must wait for it.
#[derive(Debug, Default)]
struct Tracker {
    /// Per session: the turn the agent is working on (started, or resumed by a decision) and has
    /// not paused yet.
    working: BTreeMap<SessionId, u64>,
    /// Per session: the turn the agent runs (from `StartTurn` until it ends or is cancelled).
    live: BTreeMap<SessionId, u64>,
}

/// The engine's agent runtime in scenarios: [`ExternalAgents`], with every command noted in the
/// shared [`Tracker`].
pub struct TrackedAgents {
    inner: ExternalAgents,
    tracker: Arc<Mutex<Tracker>>,
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // A poisoned lock only means a panic elsewhere; the bookkeeping is still valid.
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

impl AgentRuntime for TrackedAgents {
    fn send(&mut self, cmd: AgentCommand) {
        {
            let mut t = lock(&self.tracker);
            match &cmd {
                AgentCommand::StartTurn { session, turn_id, .. } => {
                    t.live.insert(session.clone(), *turn_id);
                    t.working.insert(session.clone(), *turn_id);
                }
                AgentCommand::Resolve { session, turn_id, .. } => {
                    // A decision for a turn the agent no longer runs is ignored by the runtime:
                    // nothing will come back.
                    if t.live.get(session) == Some(turn_id) {
                        t.working.insert(session.clone(), *turn_id);
                    }
                }
                AgentCommand::Cancel { session, turn_id } => {
                    if t.live.get(session) == Some(turn_id) {
                        t.live.remove(session);
                        t.working.remove(session);
                    }
                }
            }
        }
        self.inner.send(cmd);
    }
}

/// The runner's end of the external agents: their output, held back until the tick it belongs to.
pub struct AgentPump {
    rx: Receiver<Inbound>,
    tracker: Arc<Mutex<Tracker>>,
}

impl AgentPump {
    /// A runtime for a (new) engine and the pump that receives its output.
    pub fn new() -> (AgentPump, TrackedAgents) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let config = ExternalConfig {
            hang_timeout: HANG_TIMEOUT,
            cancel_grace: Duration::from_secs(1),
            exit_grace: Duration::from_secs(1),
            ..ExternalConfig::default()
        };
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let runtime = TrackedAgents { inner: ExternalAgents::new(tx, config), tracker: tracker.clone() };
        (AgentPump { rx, tracker }, runtime)
    }

    /// Everything the agents said since the last call, once every working agent has paused
    /// (blocking in real time up to [`AGENT_WAIT`]): per session in order, sessions in id order.
    pub fn collect(&mut self) -> Result<Vec<AgentOutput>, String> {
        let deadline = Instant::now() + AGENT_WAIT;
        let mut by_session: BTreeMap<SessionId, Vec<AgentOutput>> = BTreeMap::new();
        loop {
            while let Ok(inbound) = self.rx.try_recv() {
                self.take(inbound, &mut by_session);
            }
            let waiting_for = lock(&self.tracker).working.iter().next().map(|(s, t)| (s.clone(), *t));
            let Some((session, turn)) = waiting_for else { break };
            match self.rx.recv_deadline(deadline) {
                Ok(inbound) => self.take(inbound, &mut by_session),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "agent of {session} (turn {turn}) neither asked for a decision nor ended its turn within \
                         {AGENT_WAIT:?} of real time"
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("agent runtime of {session} stopped while turn {turn} was running"))
                }
            }
        }
        Ok(by_session.into_values().flatten().collect())
    }

    fn take(&self, inbound: Inbound, by_session: &mut BTreeMap<SessionId, Vec<AgentOutput>>) {
        let Inbound::Agent(out) = inbound else { return };
        let pause = matches!(
            out.event,
            AgentEvent::Plan { .. }
                | AgentEvent::Question { .. }
                | AgentEvent::ToolRequest { .. }
                | AgentEvent::Done
                | AgentEvent::Failed(_)
        );
        if pause {
            let mut t = lock(&self.tracker);
            if t.working.get(&out.session) == Some(&out.turn_id) {
                t.working.remove(&out.session);
            }
            if matches!(out.event, AgentEvent::Done | AgentEvent::Failed(_))
                && t.live.get(&out.session) == Some(&out.turn_id)
            {
                t.live.remove(&out.session);
            }
        }
        by_session.entry(out.session.clone()).or_default().push(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_where_it_looked() {
        let err = find_bin("no_such_roundtable_binary").unwrap_err();
        assert!(err.contains("no_such_roundtable_binary"), "{err}");
        assert!(err.contains("roundtable-testbins"), "{err}");
    }

    #[test]
    fn scenario_dir_needs_a_file() {
        assert!(scenario_dir(None).is_err());
        let here = scenario_dir(Some(Path::new("Cargo.toml"))).unwrap();
        assert!(Path::new(&here).join("Cargo.toml").is_file());
    }
}
