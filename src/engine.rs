//! The engine: one `World`, one `Schedule`, one tick.
//!
//! ```text
//! Ingest → Access → Presence → Moderation → Turn → Agent → Votes → Persist → Broadcast → Check
//! ```
//!
//! Everything inbound (frames, connection open/close, agent output, share edits from the CLI)
//! arrives as an [`Inbound`] on a crossbeam channel and is drained by the ingest system at the
//! start of a tick. Frames leave through each connection's bounded outbox into its
//! [`FrameSink`] after the tick's writes were committed by the persist system. Time is the
//! [`Clock`] resource, advanced only by the driver ([`Engine::tick`]).
//!
//! The installers at the bottom of this file list every system in one place.

use crate::agent::{AgentOutput, AgentRuntime, NoExternalAgents};
use crate::ids::ConnId;
use crate::persist::{PersistBatch, Store, StoreError};
use crate::systems;
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings, SingleThreadedExecutor};
use crossbeam_channel::{Receiver, Sender};
use rand::SeedableRng;
use std::sync::Arc;

pub use crate::systems::resources::*;

/// A serialised frame, shared by every recipient (serialised once per tick, not per recipient).
pub type Frame = Arc<str>;

/// Where the engine hands a connection's frames. Implemented by the transports (WebSocket,
/// in-memory). Must never block.
pub trait FrameSink: Send + Sync {
    /// Offers a frame. Returns false when the transport's queue is full; the engine keeps the
    /// frame in its outbox and offers it again next tick.
    fn try_send(&self, frame: &Frame) -> bool;
    /// Closes the connection after the frames already accepted (with a close reason).
    fn close(&self, reason: &str);
}

/// Everything that enters the engine.
pub enum Inbound {
    /// A transport accepted a connection. `addr` is the source address (`ip:port`).
    Opened { conn: ConnId, addr: String, sink: Arc<dyn FrameSink> },
    /// The host's own in-process connection (UI, scenario runner): authenticated as `host`.
    OpenedHost { conn: ConnId, sink: Arc<dyn FrameSink> },
    /// A text frame from a connection.
    Frame { conn: ConnId, text: String },
    /// The transport closed (socket dropped, client went away).
    Closed { conn: ConnId },
    /// Output of an external agent backend.
    Agent(AgentOutput),
    /// Shares were edited outside the engine (CLI); reload them from the store.
    SharesChanged,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Opened { conn, addr, .. } => write!(f, "Opened({conn}, {addr})"),
            Inbound::OpenedHost { conn, .. } => write!(f, "OpenedHost({conn})"),
            Inbound::Frame { conn, text } => write!(f, "Frame({conn}, {} bytes)", text.len()),
            Inbound::Closed { conn } => write!(f, "Closed({conn})"),
            Inbound::Agent(o) => write!(f, "Agent({o:?})"),
            Inbound::SharesChanged => write!(f, "SharesChanged"),
        }
    }
}

/// The tick's phases, in SPEC §4 order. Systems only say `.in_set(TickSet::X)`.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickSet {
    Ingest,
    Access,
    Presence,
    Moderation,
    Turn,
    Agent,
    Votes,
    Persist,
    Broadcast,
    Check,
}

/// Registers one concern's resources, messages and systems (our stand-in for bevy plugins).
pub trait Installer {
    fn install(&self, world: &mut World, schedule: &mut Schedule);
}

/// Engine settings.
#[derive(Resource, Clone, Debug)]
pub struct EngineConfig {
    /// Seed of the engine RNG (tokens, resume tokens). Production seeds from the OS.
    pub seed: u64,
    /// Reconnect grace period.
    pub grace_ms: u64,
    /// Time allowed to authenticate.
    pub auth_timeout_ms: u64,
    /// Failed authentications per source address per minute before `rate_limited`.
    pub auth_failures_per_minute: usize,
    /// Host's display name.
    pub host_name: String,
    /// Whether votes in the host's own turns need consensus.
    pub default_consensus: bool,
    /// Default vote deadline for sessions and shares without their own.
    pub default_vote_deadline_ms: Option<u64>,
    /// `roundtable://HOST:PORT/` and `#sha256=...` parts used to format links in `mint_share`.
    pub link_prefix: Option<String>,
    pub link_suffix: Option<String>,
    /// Largest file `read_workspace_file` returns.
    pub max_file_bytes: u64,
    /// Most live connections per share.
    pub max_connections_per_share: usize,
    /// Run the invariant checker every tick and panic on a violation (tests, scenarios).
    pub check_invariants: bool,
    /// Extra secret patterns (regexes) masked in text sent to remotes, besides the built-in ones.
    pub mask_patterns: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            grace_ms: 30_000,
            auth_timeout_ms: 10_000,
            auth_failures_per_minute: 5,
            host_name: "Host".into(),
            default_consensus: true,
            default_vote_deadline_ms: None,
            link_prefix: None,
            link_suffix: None,
            max_file_bytes: 256 * 1024,
            max_connections_per_share: 64,
            check_invariants: cfg!(debug_assertions),
            mask_patterns: Vec::new(),
        }
    }
}

/// The engine: a world, its schedule, the inbound channel and the store.
pub struct Engine {
    pub world: World,
    schedule: Schedule,
    tx: Sender<Inbound>,
}

impl Engine {
    /// Builds an engine, restoring state from `store`. Turns and votes left open by a previous
    /// run (whose agent is gone) are closed with a reason in the first tick.
    pub fn new(config: EngineConfig, mut store: Box<dyn Store>) -> Result<Engine, StoreError> {
        let restored = store.load()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut world = World::new();
        world.insert_resource(Clock::default());
        world.insert_resource(EngineRng(rand_chacha::ChaCha20Rng::seed_from_u64(config.seed)));
        world.insert_resource(Inbox(rx));
        world.insert_resource(InboxSender(tx.clone()));
        world.insert_resource(PersistBatch::default());
        world.insert_resource(StoreRes(std::sync::Mutex::new(store)));
        world.insert_resource(Agents {
            demo: Default::default(),
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

    /// Replaces the external agent runtime (claude, command backends).
    pub fn set_agent_runtime(&mut self, runtime: Box<dyn AgentRuntime>) {
        self.world.resource_mut::<Agents>().external = std::sync::Mutex::new(runtime);
    }

    /// Runs one tick at time `now_ms` (must not go backwards; a backwards clock is held).
    pub fn tick(&mut self, now_ms: u64) {
        {
            let mut clock = self.world.resource_mut::<Clock>();
            clock.now = clock.now.max(now_ms);
            clock.tick += 1;
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
        !self.world.resource::<Inbox>().0.is_empty()
            || !self.world.resource::<crate::systems::ingest::Deferred>().0.is_empty()
    }

    /// Blocks until inbound work is waiting or `timeout` passed (does not consume anything).
    /// Returns whether input is waiting. Real-time drivers call this between ticks.
    pub fn wait_for_input(&self, timeout: std::time::Duration) -> bool {
        if !self.world.resource::<crate::systems::ingest::Deferred>().0.is_empty() {
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
