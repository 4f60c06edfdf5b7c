//! The engine: one `World`, one `Schedule`, one tick.
//!
//! ```text
//! Ingest → Access → Presence → Moderation → Turn → Agent → Votes → Persist → Broadcast → Check
//! ```
//!
//! Everything inbound (frames, connection open/close, agent output) arrives as an [`Inbound`] on
//! a crossbeam channel and is drained by the ingest system at the start of a tick; share edits
//! made by the CLI on the database are noticed by the `reload_shares` system, which asks the
//! store every tick. Frames leave through each connection's bounded outbox into its
//! [`FrameSink`] after the tick's writes were committed by the persist system. Time is the
//! [`Clock`] resource, advanced only by the driver ([`Engine::tick`]).
//!
//! The installers listed at the bottom of this file register every system (`systems/mod.rs`
//! defines them, one per concern, each naming its systems in tick order).
//!
//! This folder is the core layer (docs/ARCHITECTURE.md): it depends only on `protocol`, `ids`,
//! `token` and the `persist` contract. Its parts:
//!
//! - [`config`]: [`EngineConfig`], the settings every system may read.
//! - [`io`]: [`Inbound`] and [`FrameSink`], the edges transports plug into.
//! - [`agent`]: the agent contract ([`AgentRuntime`], [`InTickAgent`]) backends implement.
//! - [`mask`]: the secret-masking rules applied to everything sent to remotes; [`mask_patterns`]:
//!   the built-in patterns and the literals that locate them.
//! - [`schedule`]: [`TickSet`] and the [`Installer`] contract.
//! - [`components`], [`systems`]: the domain data and one system per rule.

#![deny(clippy::print_stdout, clippy::print_stderr)]
#![deny(clippy::disallowed_methods)]
#![forbid(clippy::too_many_arguments)]

use roundtable_protocol::{ids, persist, protocol, token};

pub use systems::resources::PersistBatch;

pub mod agent;
pub mod clock;
pub mod components;
pub mod config;
pub mod io;
pub mod mask;
pub mod mask_json;
pub mod mask_patterns;
pub mod schedule;
pub mod systems;

pub use agent::{AgentRuntime, InTickAgent};
pub use config::EngineConfig;
pub use io::{Frame, FrameSink, Inbound};
pub use schedule::{Installer, TickSet};
pub use systems::resources::*;

use crate::persist::{Store, StoreError};
use agent::NoExternalAgents;
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings, SingleThreadedExecutor};
use crossbeam_channel::{Receiver, Sender};
use rand::SeedableRng;

/// The engine: a world, its schedule, the inbound channel and the store.
pub struct Engine {
    pub world: World,
    schedule: Schedule,
    tx: Sender<Inbound>,
}

/// The RNG for tokens: the configured seed mixed with every token hash the store holds, so that
/// an engine restarted with the same seed (scenarios, the simulator) never issues a token again
/// that it issued before the restart (each issued token left its hash in the store).
fn token_rng(seed: u64, secret: &[u8; 32], restored: &crate::persist::Restored) -> rand::rngs::ChaCha20Rng {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    if secret != &[0; 32] {
        h.update(secret);
    }
    for s in &restored.shares {
        h.update(s.token_hash);
    }
    for p in &restored.participants {
        h.update(p.participant.resume_hash.unwrap_or_default());
    }
    rand::rngs::ChaCha20Rng::from_seed(h.finalize().into())
}

impl Engine {
    /// Builds an engine, restoring state from `store`. Turns and votes left open by a previous
    /// run (whose agent is gone) are closed with a reason in the first tick.
    pub fn new(config: EngineConfig, mut store: Box<dyn Store>) -> Result<Engine, StoreError> {
        // Without the sessions' tails: each is read when first needed (`systems::residency`).
        let restored = if config.eager_tails { store.load()? } else { store.load_without_tails()? };
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut world = World::new();
        // Engine time never goes back behind what the store already holds (`clock`).
        world.insert_resource(Clock { now: restored.latest_time(), ..Clock::default() });
        world.insert_resource(EngineRng(token_rng(config.seed, &config.token_secret, &restored)));
        world.insert_resource(Inbox(rx));
        world.insert_resource(InboxSender(tx.clone()));
        world.insert_resource(PersistBatch::default());
        world.init_resource::<systems::resources::Files>();
        world.init_resource::<io::Journal>();
        world.insert_resource(StoreRes(std::sync::Mutex::new(store)));
        world.insert_resource(Agents {
            in_tick: Default::default(),
            external: std::sync::Mutex::new(Box::new(NoExternalAgents { tx: tx.clone() })),
            queued: Vec::new(),
        });
        world.insert_resource(config);
        let mut schedule = Schedule::default();
        schedule.set_executor(SingleThreadedExecutor::new());
        // In tests and scenarios an unordered pair of conflicting systems is an error, not a
        // heisenbug waiting to happen.
        let ambiguity =
            if world.resource::<EngineConfig>().check_invariants { LogLevel::Error } else { LogLevel::Ignore };
        schedule.set_build_settings(ScheduleBuildSettings { ambiguity_detection: ambiguity, ..Default::default() });
        schedule.configure_sets(
            (
                TickSet::Ingest,
                TickSet::Access,
                TickSet::Presence,
                TickSet::Moderation,
                TickSet::Turn,
                TickSet::Agent,
                TickSet::Votes,
                TickSet::Persist,
                TickSet::Broadcast,
                TickSet::Check,
            )
                .chain(),
        );
        for installer in installers() {
            installer.install(&mut world, &mut schedule);
        }
        systems::restore::restore_world(&mut world, restored);
        Ok(Engine { world, schedule, tx })
    }

    /// A sender for inbound commands (transports, agents, CLI watchers).
    pub fn sender(&self) -> Sender<Inbound> {
        self.tx.clone()
    }

    /// How `read_workspace_file` reads files (the engine touches no file system itself).
    pub fn set_workspace_files(&mut self, files: Box<dyn crate::persist::WorkspaceFiles>) {
        self.world.insert_resource(systems::resources::Files(files));
    }

    /// Replaces the external agent runtime (claude, command backends).
    pub fn set_agent_runtime(&mut self, runtime: Box<dyn AgentRuntime>) {
        self.world.resource_mut::<Agents>().external = std::sync::Mutex::new(runtime);
    }

    /// Registers an agent that runs inside the tick for sessions whose backend is `kind`
    /// (the built-in `demo` agent: `crate::agent::install_builtin`).
    pub fn add_in_tick_agent(&mut self, kind: &str, agent: Box<dyn InTickAgent>) {
        self.world.resource_mut::<Agents>().in_tick.insert(kind.to_string(), agent);
    }

    /// Testing (the simulator's crash points): runs one tick whose writes are committed but
    /// whose frames are never sent, as if the process died between the commit and the send.
    /// The engine must not be ticked again: take its store (`into_store`) and start anew.
    pub fn tick_and_crash_after_commit(&mut self, now_ms: u64) {
        self.world.resource_mut::<systems::broadcast::CrashAfterCommit>().0 = true;
        self.tick(now_ms);
    }

    /// Testing: records every input from now on (see [`io::Journal`]).
    pub fn record_journal(&mut self) {
        self.world.resource_mut::<io::Journal>().on = true;
    }

    /// The inputs recorded since the last call (empty unless [`Engine::record_journal`]).
    pub fn take_journal(&mut self) -> Vec<io::Journaled> {
        std::mem::take(&mut self.world.resource_mut::<io::Journal>().entries)
    }

    /// Runs one tick at time `now_ms` (must not go backwards; a backwards clock is held).
    pub fn tick(&mut self, now_ms: u64) {
        {
            let suspend_gap = self.world.resource::<EngineConfig>().suspend_gap_ms;
            let mut clock = self.world.resource_mut::<Clock>();
            let gap = now_ms.saturating_sub(clock.now);
            let resumed = clock.tick > 0 && gap > suspend_gap;
            clock.now = clock.now.max(now_ms);
            clock.driver = now_ms;
            clock.tick += 1;
            if resumed {
                self.world.resource_mut::<ClockGap>().0 = Some(gap);
            }
        }
        self.schedule.run(&mut self.world);
        systems::resources::update_messages(&mut self.world);
    }

    /// Current engine time.
    pub fn now(&self) -> u64 {
        self.world.resource::<Clock>().now
    }

    /// Whether the engine has inbound work waiting.
    pub fn has_input(&self) -> bool {
        !self.world.resource::<Inbox>().0.is_empty() || !self.world.resource::<systems::ingest::Deferred>().0.is_empty()
    }

    /// Blocks until inbound work is waiting or `timeout` passed (does not consume anything).
    /// Returns whether input is waiting. Real-time drivers call this between ticks.
    pub fn wait_for_input(&self, timeout: std::time::Duration) -> bool {
        if !self.world.resource::<systems::ingest::Deferred>().0.is_empty() {
            return true;
        }
        let rx = &self.world.resource::<Inbox>().0;
        let mut sel = crossbeam_channel::Select::new();
        sel.recv(rx);
        sel.ready_timeout(timeout).is_ok()
    }

    /// The inbound receiver.
    pub fn inbox(&self) -> Receiver<Inbound> {
        self.world.resource::<Inbox>().0.clone()
    }

    /// Takes the store back (the scenario runner uses this to simulate a host restart).
    pub fn into_store(mut self) -> Box<dyn Store> {
        self.world
            .remove_resource::<StoreRes>()
            .expect("store present")
            .0
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the store the host stops gracefully, after the last tick committed (the driver calls
    /// it once, last; see [`Store::stop_cleanly`]).
    pub fn close_store_cleanly(&mut self) {
        self.world.resource_mut::<StoreRes>().get().stop_cleanly();
    }

    /// Invariant violations seen so far (empty when healthy).
    pub fn violations(&self) -> Vec<String> {
        self.world.resource::<Violations>().0.clone()
    }

    /// A stable, human-readable digest of the domain state (for transcripts and tests).
    pub fn state_digest(&mut self) -> String {
        systems::digest::state_digest(&mut self.world)
    }
}

/// Every installer, in one place.
fn installers() -> Vec<Box<dyn Installer>> {
    vec![
        Box::new(systems::CoreInstaller),
        Box::new(systems::AccessInstaller),
        Box::new(systems::PresenceInstaller),
        Box::new(systems::ModerationInstaller),
        Box::new(systems::TurnInstaller),
        Box::new(systems::AgentInstaller),
        Box::new(systems::VotesInstaller),
        Box::new(systems::DeliveryInstaller),
    ]
}
