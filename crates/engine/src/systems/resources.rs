//! Resources and messages shared by the systems.

use crate::agent::{AgentCommand, AgentOutput, AgentRuntime, InTickAgent};
use crate::ids::{ConnId, ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use crate::io::{Frame, Framed, Inbound};
use crate::persist::Store;
use crate::protocol::VoteSubject;
use bevy_ecs::message::MessageRegistry;
use bevy_ecs::prelude::*;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, VecDeque};

/// Engine time in milliseconds, advanced only by the driver.
#[derive(Resource, Default, Debug, Clone, Copy)]
pub struct Clock {
    pub now: u64,
    pub tick: u64,
    /// The time the driver gave this tick. Engine time never goes back, so `now` is the later
    /// of this and the last tick's; a driver behind `now` would freeze every deadline
    /// (an invariant: `check_invariants`).
    pub driver: u64,
}

/// Set by the driver when a tick comes much later than the previous one (the host was
/// suspended): the gap in ms. Taken by `presence::fresh_grace_after_gap`.
#[derive(Resource, Default, Debug)]
pub struct ClockGap(pub Option<u64>);

/// The engine's seeded RNG (tokens). ChaCha20: cryptographically strong when seeded from the OS.
#[derive(Resource)]
pub struct EngineRng(pub rand::rngs::ChaCha20Rng);

/// Inbound commands, drained by the ingest system.
#[derive(Resource)]
pub struct Inbox(pub Receiver<Inbound>);

/// A sender into the inbox (for agents living outside the engine).
#[derive(Resource)]
pub struct InboxSender(pub Sender<Inbound>);

/// The store the persist system commits to.
#[derive(Resource)]
pub struct StoreRes(pub std::sync::Mutex<Box<dyn Store>>);

impl StoreRes {
    /// The store (the mutex only makes the resource `Sync`; it is never contended).
    pub fn get(&mut self) -> &mut Box<dyn Store> {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// Agent backends: agents stepped inside the tick (by backend kind, e.g. `demo`) and the
/// external runtime for every other kind.
#[derive(Resource)]
pub struct Agents {
    /// In-tick agents by backend kind; `BTreeMap` so they are stepped in a stable order.
    pub in_tick: BTreeMap<String, Box<dyn InTickAgent>>,
    /// Behind a mutex only to make the resource `Sync`; never contended.
    pub external: std::sync::Mutex<Box<dyn AgentRuntime>>,
    /// Commands issued this tick, dispatched by the agent system in order.
    pub queued: Vec<AgentCommand>,
}

/// Domain id → entity maps. `BTreeMap` so iteration is in id order.
#[derive(Resource, Default, Debug)]
pub struct Index {
    pub workspaces: BTreeMap<WorkspaceId, Entity>,
    /// Add with [`Index::add_session`] (which also records the session's workspace).
    pub sessions: BTreeMap<SessionId, Entity>,
    /// Each session's workspace (it never changes), so scope checks need no session query.
    pub session_workspaces: BTreeMap<SessionId, WorkspaceId>,
    pub shares: BTreeMap<ShareId, Entity>,
    pub participants: BTreeMap<ParticipantId, Entity>,
    pub conns: BTreeMap<ConnId, Entity>,
    pub votes: BTreeMap<VoteId, Entity>,
    /// Resume-token hash → participant: resuming is one lookup, not the token's hash compared
    /// with everyone ever seen. Filled when a participant is paired or restored; an entry whose
    /// participant has left (its hash cleared) is dropped when met.
    pub resume: BTreeMap<[u8; 32], ParticipantId>,
    /// The display names of remotes present, by the forms they read as.
    pub names: PresentNames,
    /// Each share's participants who have not left (filled when one is paired or restored; one
    /// who left is dropped when met): a share's caps are counted over them, not everyone ever
    /// seen.
    pub share_members: BTreeMap<ShareId, std::collections::BTreeSet<ParticipantId>>,
    /// Authenticated connections open per share (counted when one authenticates, and until it
    /// is closed): the share's connection cap without counting anyone's connections.
    pub share_connections: BTreeMap<ShareId, usize>,
    /// Grace periods by their end: `(until, participant)` added when one starts; the expiry
    /// takes those ended from the front (an entry whose participant is back, or whose grace was
    /// renewed, is dropped then), so it never walks everyone ever seen.
    pub in_grace: std::collections::BTreeSet<(u64, ParticipantId)>,
}

/// Remotes' display names by the forms they read as (`util::name_forms`), so a newcomer's name
/// is checked without walking everyone ever seen. A name is added when it is given (pairing,
/// restore) and forgotten lazily: a holder that has left no longer counts, and is dropped, when
/// a name is checked. (The host's name is checked against the host itself: it can change.)
#[derive(Default, Debug)]
pub struct PresentNames(BTreeMap<String, std::collections::BTreeSet<ParticipantId>>);

impl PresentNames {
    pub fn add(&mut self, pid: &ParticipantId, name: &str) {
        for form in super::util::name_forms(name) {
            self.0.entry(form).or_default().insert(pid.clone());
        }
    }

    /// Whether someone present has a name that reads as `form`: a holder for whom
    /// `still_holds(pid, form)` is false (gone, or renamed) is forgotten.
    pub fn taken(&mut self, form: &str, still_holds: impl Fn(&ParticipantId, &str) -> bool) -> bool {
        let Some(holders) = self.0.get_mut(form) else { return false };
        holders.retain(|pid| still_holds(pid, form));
        let taken = !holders.is_empty();
        if !taken {
            self.0.remove(form);
        }
        taken
    }

    /// Whether `pid` is recorded under every form of `name` (the invariant checker).
    pub fn holds(&self, pid: &ParticipantId, name: &str) -> bool {
        super::util::name_forms_memo(name, |forms| forms.iter().all(|f| self.0.get(f).is_some_and(|h| h.contains(pid))))
    }
}

impl Index {
    /// Records a new session.
    pub fn add_session(&mut self, id: SessionId, workspace: WorkspaceId, entity: Entity) {
        self.session_workspaces.insert(id.clone(), workspace);
        self.sessions.insert(id, entity);
    }

    /// Session `id`'s entity, if `me` may see it (docs/RULES.md §1: a session outside one's
    /// scope does not exist for them).
    pub fn session_in_scope(
        &self,
        me: &crate::components::Participant,
        share: Option<&crate::components::Share>,
        id: &SessionId,
    ) -> Option<Entity> {
        let workspace = self.session_workspaces.get(id)?;
        super::util::in_scope(me, share, workspace).then_some(*self.sessions.get(id)?)
    }
}

/// Counters for minting ids (`n` of the last id given out).
#[derive(Resource, Default, Debug)]
pub struct Counters {
    pub workspace: u64,
    pub session: u64,
    pub share: u64,
    pub participant: u64,
    pub vote: u64,
    pub message: u64,
}

/// Failed authentication times per source address (IP without port).
#[derive(Resource, Default, Debug)]
pub struct AuthFailures(pub BTreeMap<String, VecDeque<u64>>);

/// Invariant violations found by the checker.
#[derive(Resource, Default, Debug)]
pub struct Violations(pub Vec<String>);

/// Outgoing frames staged during the tick; released by broadcast after the commit. Carries the
/// masker, so every frame is masked for remotes when it is made (`Framed`).
#[derive(Resource, Default, Debug)]
pub struct Staged {
    /// This tick's output, in order.
    pub out: Vec<Outgoing>,
    /// The secret masker every frame for remotes goes through.
    pub masker: crate::mask::Masker,
}

impl Staged {
    /// `value` as a frame for the host and for remotes.
    pub fn framed<T: serde::Serialize + ?Sized>(&self, value: &T) -> crate::io::Framed {
        crate::io::Framed::of(value, &self.masker)
    }
}

/// One staged output.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// The answer to a request: a result (`ok`) or an error.
    Reply { conn: ConnId, frame: Framed, ok: bool },
    /// A connection-level event for one connection (no seq: `storage`, `resync_required`, …).
    ConnEvent { conn: ConnId, frame: Framed },
    /// A session's snapshot for one connection (a newer one replaces it while it waits).
    Snapshot { conn: ConnId, session: SessionId, frame: Framed },
    /// A session event replayed to one connection (`since_seq`), tracked like a live one.
    Replay { conn: ConnId, session: SessionId, seq: u64, frame: Framed },
    /// A seq'd session event for every member of the session.
    Session { session: SessionId, seq: u64, frame: Framed },
    /// Streamed agent text for every member of the session.
    Delta { session: SessionId, turn_id: u64, text: String, frame: Frame },
    /// The agent paused (a vote opens) or its turn ends: send remotes, masked, the text the
    /// session's stream masker still holds back, and start a new stream. Staged before the
    /// vote or the agent's reply, so a remote's screen never lags them.
    FlushStream { session: SessionId },
    /// A frame for every connection of a participant.
    Participant { participant: ParticipantId, frame: Framed },
    /// Close a connection (after a `closing` event).
    Close { conn: ConnId, reason: String },
}

/// Output of an agent, for the agent system.
#[derive(Message, Debug, Clone)]
pub struct AgentMsg(pub AgentOutput);

/// The transport closed a connection.
#[derive(Message, Debug, Clone)]
pub struct ConnClosed {
    pub conn: ConnId,
}

/// A participant is gone for good (past grace, kicked, share revoked/expired, refused).
#[derive(Message, Debug, Clone)]
pub struct Departed {
    pub participant: ParticipantId,
    pub reason: &'static str,
}

/// A participant stops being a voter in a session (`None` = everywhere): mute, leave.
#[derive(Message, Debug, Clone)]
pub struct VoterDropped {
    pub participant: ParticipantId,
    pub session: Option<SessionId>,
}

/// The agent asks for a decision: opens a vote.
#[derive(Message, Debug, Clone)]
pub struct VoteRequested {
    pub session: SessionId,
    pub turn_id: u64,
    pub request_id: String,
    pub subject: VoteSubject,
}

/// The agent withdrew a request: its open vote closes (denied, "withdrawn by the agent").
#[derive(Message, Debug, Clone)]
pub struct VoteWithdrawn {
    pub session: SessionId,
    pub turn_id: u64,
    pub request_id: String,
}

/// A turn ended (any path); open votes of the turn are closed.
#[derive(Message, Debug, Clone)]
pub struct TurnClosed {
    pub session: SessionId,
    pub turn_id: u64,
    pub reason: String,
}

/// Registers every message type, once: bevy's [`MessageRegistry`] then swaps all their buffers
/// each tick ([`update_messages`]), so a type cannot be registered and never updated.
pub fn add_messages(world: &mut World) {
    super::requests::register(world);
    MessageRegistry::register_message::<AgentMsg>(world);
    MessageRegistry::register_message::<ConnClosed>(world);
    MessageRegistry::register_message::<Departed>(world);
    MessageRegistry::register_message::<VoterDropped>(world);
    MessageRegistry::register_message::<VoteRequested>(world);
    MessageRegistry::register_message::<TurnClosed>(world);
    MessageRegistry::register_message::<VoteWithdrawn>(world);
    world.init_resource::<MessagesUpdated>();
}

/// The world's change tick when the message buffers were last swapped.
#[derive(Resource, Default)]
pub struct MessagesUpdated(pub bevy_ecs::change_detection::Tick);

/// Swaps the buffers of every registered message type once per tick, as bevy's
/// `message_update_system` does (messages live for this tick and the next).
pub fn update_messages(world: &mut World) {
    let last = world.resource::<MessagesUpdated>().0;
    world.resource_scope(|world, mut registry: Mut<MessageRegistry>| registry.run_updates(world, last));
    let now = world.change_tick();
    world.resource_mut::<MessagesUpdated>().0 = now;
}

/// How the engine reads workspace files (set by the driver: [`crate::Engine::set_workspace_files`]);
/// until then every read is refused.
#[derive(Resource)]
pub struct Files(pub Box<dyn crate::persist::WorkspaceFiles>);

impl Default for Files {
    fn default() -> Self {
        Files(Box::new(NoFiles))
    }
}

struct NoFiles;

impl crate::persist::WorkspaceFiles for NoFiles {
    fn read(&self, _: &std::path::Path, _: &str, _: u64) -> Result<(u64, String), String> {
        Err("this host does not read workspace files".into())
    }
}

/// Store ops gathered during the current tick, committed together (`persist_tick`).
#[derive(Resource, Default)]
pub struct PersistBatch {
    pub ops: Vec<crate::persist::StoreOp>,
}

impl PersistBatch {
    pub fn push(&mut self, op: crate::persist::StoreOp) {
        self.ops.push(op);
    }
}
