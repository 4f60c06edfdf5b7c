//! The simulator's reference model: docs/RULES.md's rules as plain, single-threaded Rust (no ECS, no
//! I/O besides reading workspace files), used as an oracle.
//!
//! Before each tick the model takes the engine's state as plain structs ([`Projector::project`]).
//! It then replays the inputs the tick consumed — the engine's input [`Journal`]: connections
//! opened and closed, frames in the order they were handled, agent output — through its own
//! implementation of the rules, in the phase order of docs/RULES.md §7.1, and predicts
//! - the response code of every request (`ok` or the error code), and
//! - the state after the tick: each session's turn holder, turn id and status; each vote's
//!   required voters, ballots, outcome, reason and who resolved it; each participant's presence
//!   (with its grace deadline), mute, admission, joined sessions, display name and role; each
//!   share's revocation and use count; each connection's authentication; the host's settings;
//!   and the store's health (failing or not, and when the commit was last tried).
//!
//! Storage faults (docs/RELIABILITY.md, "Storage faults"): the runner tells the model whether the
//! store fails during the tick. A tick that starts with the store failing refuses every request
//! except the harmless reads with `storage_unavailable`; the first tick whose commit fails has
//! its successful replies *held* (they must not reach anyone before a retry commits them); a
//! retry happens once a second and heals the store when the fault is gone. Everything else —
//! presence, agent output, votes — goes on as usual, so the rest of the prediction is unchanged.
//!
//! The runner compares the prediction with the engine after the tick and with every response a
//! client receives; a mismatch is a failure naming the tick and both answers. Checking each tick
//! from the engine's own starting state keeps one divergence from cascading into many, and
//! makes every tick an independent test of the rules.
//!
//! What the model does not predict (the runner skips it): the first tick after an engine start
//! (restart recovery is checked against the store instead), requests that only set things up
//! (`add_workspace`, `mint_share`, `list_shares`), and a retry whose original message is older
//! than the session's in-memory tail (the answer depends on the store).
//!
//! The model shares no rule code with the engine: vote evaluation, scope, the rate-limit
//! bucket, share liveness, name de-duplication and file confinement are written again here.
//! It reuses only plain data types, the wire codec (`Request::parse`) and the token hash check.

use crate::engine::agent::AgentEvent;
use crate::engine::components::{
    AuthState, Ballot, Connection, EventLog, History, Participant, PendingVote, Presence, Session, Share, TurnLock,
    Workspace,
};
use crate::engine::config::EngineConfig;
use crate::engine::io::Journaled;
use crate::engine::systems::persist_tick::StorageHealth;
use crate::engine::systems::resources::{AuthFailures, Counters};
use crate::ids::{ConnId, ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use crate::protocol::{Admission, DecidedBy, Method, Request, Role, SessionStatus, VoteOutcome, VoteSubject};
use bevy_ecs::change_detection::{DetectChanges, Ref, Tick as ChangeTick};
use bevy_ecs::prelude::World;
use bevy_ecs::query::QueryState;
use bevy_ecs::world::WorldId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A session's (author, client_msg_id) → text, for the messages in its in-memory tail.
pub type ClientIds = BTreeMap<(ParticipantId, String), String>;

/// Requests per connection: a burst of this many, refilled at [`REFILL_PER_SEC`] (PROTOCOL §1.3).
const BURST: f64 = 40.0;
const REFILL_PER_SEC: f64 = 20.0;
/// Longest message text (bytes) and client_msg_id (characters).
const MAX_TEXT: usize = 32 * 1024;
const MAX_CLIENT_MSG_ID: usize = 128;
/// A predicted response code that matches any answer.
pub const ANY: &str = "*";
/// Failed authentications are counted over a minute.
const FAILURE_WINDOW_MS: u64 = 60_000;
/// While the store fails, the commit is retried at most this often (and clients are told to
/// wait this long).
pub const STORAGE_RETRY_MS: u64 = 1_000;

/// What may run while the store fails: requests that change nothing and reveal nothing unstored.
fn harmless(method: &Method) -> bool {
    matches!(
        method,
        Method::Ping(_) | Method::ListWorkspaces(_) | Method::ListSessions(_) | Method::ReadWorkspaceFile(_)
    )
}

/// The host's settings (`update_settings` changes them from the next request on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MSettings {
    pub host_name: String,
    pub default_consensus: bool,
    pub default_vote_deadline_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MConn {
    pub auth: AuthState,
    pub is_host: bool,
    pub addr: String,
    pub tokens: f64,
    pub last_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MParticipant {
    pub display_name: String,
    pub role: Role,
    pub share: Option<ShareId>,
    pub muted: bool,
    pub admission: Admission,
    pub sessions: BTreeSet<SessionId>,
    pub presence: Presence,
    /// `None` also for a participant the model created this tick (its token is random).
    pub resume_hash: Option<[u8; 32]>,
    /// Read markers per session.
    pub read: BTreeMap<SessionId, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MSession {
    pub workspace: WorkspaceId,
    pub holder: Option<ParticipantId>,
    pub turn_id: u64,
    pub consensus: bool,
    pub status: SessionStatus,
    pub vote_deadline_ms: Option<u64>,
    pub allowed_tools: BTreeSet<String>,
    /// (author, client_msg_id) → text, for the messages in the in-memory tail. Shared with the
    /// projector's copy until the model changes it: most ticks change no session's messages.
    pub client_ids: Rc<ClientIds>,
    /// Messages older than the tail exist (only in the store).
    pub has_older: bool,
    /// The seq of the session's latest event when the tick started.
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Plan,
    Question(usize),
    Tool(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MVote {
    pub session: SessionId,
    pub turn_id: u64,
    pub request_id: String,
    pub kind: Kind,
    pub holder_decides: bool,
    pub required: BTreeSet<ParticipantId>,
    pub ballots: BTreeMap<ParticipantId, Ballot>,
    pub host_decision: Option<Ballot>,
    pub allow_listed: bool,
    pub deadline: Option<u64>,
    /// (outcome, reason, resolved_by)
    pub outcome: Option<(VoteOutcome, Option<String>, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MShare {
    pub token_hash: [u8; 32],
    pub workspaces: BTreeSet<WorkspaceId>,
    pub collaborative: bool,
    pub consensus_required: bool,
    pub admission_required: bool,
    pub role: Role,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    pub vote_deadline_ms: Option<u64>,
}

impl MShare {
    /// A new participant may authenticate with it.
    fn usable(&self, now: u64) -> bool {
        let expired = self.expires_at.is_some_and(|t| t <= now);
        let used_up = self.max_uses.is_some_and(|m| self.uses >= m);
        !(self.revoked || expired || used_up)
    }

    /// Its participants must be disconnected.
    fn dead(&self, now: u64) -> bool {
        self.revoked || self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Everything the rules look at.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub now: u64,
    pub tick: u64,
    pub conns: BTreeMap<ConnId, MConn>,
    pub participants: BTreeMap<ParticipantId, MParticipant>,
    pub sessions: BTreeMap<SessionId, MSession>,
    pub votes: BTreeMap<VoteId, MVote>,
    pub shares: BTreeMap<ShareId, MShare>,
    pub workspaces: BTreeMap<WorkspaceId, PathBuf>,
    pub failures: BTreeMap<String, VecDeque<u64>>,
    pub next_participant: u64,
    pub next_session: u64,
    pub next_vote: u64,
    pub settings: MSettings,
    /// While the store fails: when its commit was last tried (`None`: it works).
    pub storage: Option<u64>,
}

/// The settings the rules depend on.
#[derive(Clone, Debug)]
pub struct Rules {
    pub grace_ms: u64,
    pub auth_timeout_ms: u64,
    pub auth_failures_per_minute: usize,
    pub max_file_bytes: u64,
    pub suspend_gap_ms: u64,
    pub max_connections_per_share: usize,
    pub max_connections_per_participant: usize,
}

impl Rules {
    pub fn from_config(c: &EngineConfig) -> Rules {
        Rules {
            grace_ms: c.grace_ms,
            auth_timeout_ms: c.auth_timeout_ms,
            auth_failures_per_minute: c.auth_failures_per_minute,
            max_file_bytes: c.max_file_bytes,
            suspend_gap_ms: c.suspend_gap_ms,
            max_connections_per_share: c.max_connections_per_share,
            max_connections_per_participant: c.max_connections_per_participant,
        }
    }
}

/// A predicted response: the request's connection, its id (JSON text), method and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predicted {
    pub conn: ConnId,
    pub id: String,
    pub method: String,
    /// `ok` or the error code.
    pub code: String,
    /// A success of the tick whose commit failed: it must not reach the client before the store
    /// has taken that tick's writes (it is sent once a retry commits them).
    pub held: bool,
}

/// The outcome of one tick as the model sees it.
pub struct Step {
    pub state: State,
    pub responses: Vec<Predicted>,
    /// Sessions whose outcome depends on what only the store knows: not compared this tick.
    pub uncertain: BTreeSet<SessionId>,
}

/// The queries [`Projector::project`] runs, kept from one tick to the next: building a query's state
/// cost as much as the rest of a projection. Built again for another world (a restarted engine).
#[derive(Default)]
pub struct Projector {
    queries: Option<(WorldId, Queries)>,
}

/// A session's message ids as last projected, with the change tick of the history they were
/// read from: while the history is unchanged (bevy marks every mutable access), so are they.
type ClientIdsSeen = BTreeMap<SessionId, (ChangeTick, Rc<ClientIds>)>;

struct Queries {
    conns: QueryState<&'static Connection>,
    participants: QueryState<&'static Participant>,
    sessions: QueryState<(&'static Session, &'static TurnLock, Ref<'static, History>, &'static EventLog)>,
    /// This world's sessions' message ids, as last read.
    client_ids: ClientIdsSeen,
    votes: QueryState<&'static PendingVote>,
    shares: QueryState<&'static Share>,
    workspaces: QueryState<&'static Workspace>,
}

impl Projector {
    /// The engine's state, as plain structs ([`Projector::project`]).
    pub fn project(&mut self, world: &mut World) -> State {
        if self.queries.as_ref().is_none_or(|(id, _)| *id != world.id()) {
            let queries = Queries {
                conns: world.query(),
                participants: world.query(),
                sessions: world.query(),
                votes: world.query(),
                shares: world.query(),
                workspaces: world.query(),
                client_ids: BTreeMap::new(),
            };
            self.queries = Some((world.id(), queries));
        }
        let (_, queries) = self.queries.as_mut().expect("built above");
        State::project_with(queries, world)
    }
}

/// A session's message ids: those read before while its history has not changed since, else
/// read again (and remembered).
fn client_ids_of(seen: &mut ClientIdsSeen, session: &SessionId, history: &Ref<History>) -> Rc<ClientIds> {
    let changed = history.last_changed();
    if let Some((tick, ids)) = seen.get(session) {
        if *tick == changed {
            // (Tests run debug builds: there every reuse is checked against a fresh read.)
            debug_assert_eq!(**ids, read_client_ids(history), "{session}: history changed unnoticed");
            return ids.clone();
        }
    }
    let ids = Rc::new(read_client_ids(history));
    seen.insert(session.clone(), (changed, ids.clone()));
    ids
}

/// (author, client_msg_id) → text of the messages in `history`.
fn read_client_ids(history: &History) -> ClientIds {
    history
        .messages
        .iter()
        .filter_map(|m| {
            let cmid = m.client_msg_id.clone()?;
            Some(((ParticipantId::from(m.author_id.as_str()), cmid), m.text.clone()))
        })
        .collect()
}

impl State {
    /// The engine's state, as plain structs.
    fn project_with(qs: &mut Queries, world: &World) -> State {
        let clock = *world.resource::<crate::engine::systems::resources::Clock>();
        let counters = world.resource::<Counters>();
        let (next_participant, next_session, next_vote) = (counters.participant, counters.session, counters.vote);
        let failures = world.resource::<AuthFailures>().0.clone();
        let config = world.resource::<EngineConfig>();
        let settings = MSettings {
            host_name: config.host_name.clone(),
            default_consensus: config.default_consensus,
            default_vote_deadline_ms: config.default_vote_deadline_ms,
        };
        let storage = world.resource::<StorageHealth>().failing.as_ref().map(|f| f.last_try_ms);
        let conns = qs
            .conns
            .iter(world)
            .map(|c| {
                (
                    c.id,
                    MConn {
                        auth: c.auth.clone(),
                        is_host: c.is_host,
                        addr: c.addr.clone(),
                        tokens: c.bucket.tokens,
                        last_ms: c.bucket.last_ms,
                    },
                )
            })
            .collect();
        let participants = qs
            .participants
            .iter(world)
            .map(|p| {
                (
                    p.id.clone(),
                    MParticipant {
                        display_name: p.display_name.clone(),
                        role: p.role,
                        share: p.share.clone(),
                        muted: p.muted,
                        admission: p.admission,
                        sessions: p.sessions.clone(),
                        presence: p.presence,
                        resume_hash: p.resume_hash,
                        read: p.read.clone(),
                    },
                )
            })
            .collect();
        let seen = &mut qs.client_ids;
        let sessions = qs
            .sessions
            .iter(world)
            .map(|(s, l, h, log)| {
                let client_ids = client_ids_of(seen, &s.id, &h);
                (
                    s.id.clone(),
                    MSession {
                        workspace: s.workspace.clone(),
                        holder: l.holder.clone(),
                        turn_id: l.turn_id,
                        consensus: l.consensus,
                        status: s.status,
                        vote_deadline_ms: s.vote_deadline_ms,
                        allowed_tools: s.allowed_tools.clone(),
                        client_ids,
                        has_older: h.has_older,
                        last_seq: log.last_seq(),
                    },
                )
            })
            .collect();
        let votes = qs
            .votes
            .iter(world)
            .map(|v| {
                let kind = match &v.subject {
                    VoteSubject::Plan { .. } => Kind::Plan,
                    VoteSubject::Question { questions } => Kind::Question(questions.len()),
                    VoteSubject::Tool { tool, .. } => Kind::Tool(tool.clone()),
                };
                (
                    v.id.clone(),
                    MVote {
                        session: v.session.clone(),
                        turn_id: v.turn_id,
                        request_id: v.request_id.clone(),
                        kind,
                        holder_decides: v.decided_by == DecidedBy::Holder,
                        required: v.required.clone(),
                        ballots: v.ballots.clone(),
                        host_decision: v.host_decision.clone(),
                        allow_listed: v.allow_listed,
                        deadline: v.deadline,
                        outcome: v.outcome.as_ref().map(|o| (o.outcome, o.reason.clone(), o.resolved_by.clone())),
                    },
                )
            })
            .collect();
        let shares = qs
            .shares
            .iter(world)
            .map(|s| {
                (
                    s.id.clone(),
                    MShare {
                        token_hash: s.token_hash,
                        workspaces: s.workspaces.clone(),
                        collaborative: s.collaborative,
                        consensus_required: s.consensus_required,
                        admission_required: s.admission_required,
                        role: s.role,
                        expires_at: s.expires_at,
                        max_uses: s.max_uses,
                        uses: s.uses,
                        revoked: s.revoked,
                        vote_deadline_ms: s.vote_deadline_ms,
                    },
                )
            })
            .collect();
        let workspaces = qs.workspaces.iter(world).map(|w| (w.id.clone(), PathBuf::from(&w.dir))).collect();
        State {
            now: clock.now,
            tick: clock.tick,
            conns,
            participants,
            sessions,
            votes,
            shares,
            workspaces,
            failures,
            next_participant,
            next_session,
            next_vote,
            settings,
            storage,
        }
    }

    /// Where the prediction and the engine differ (empty when they agree).
    pub fn differences(&self, engine: &State, uncertain: &BTreeSet<SessionId>) -> Vec<String> {
        let mut out = Vec::new();
        if self.storage != engine.storage {
            let say = |s: Option<u64>| match s {
                None => "works".to_string(),
                Some(t) => format!("fails (commit last tried at t={t}ms)"),
            };
            out.push(format!("the store: model says it {}, engine says it {}", say(self.storage), say(engine.storage)));
        }
        if self.settings != engine.settings {
            out.push(format!("host settings: model {:?}, engine {:?}", self.settings, engine.settings));
        }
        // The key lists are spelled out only when they differ (comparing is all most ticks need).
        fn keys<K: PartialEq + std::fmt::Display, V>(
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
            what: &str,
            out: &mut Vec<String>,
        ) {
            if !a.keys().eq(b.keys()) {
                let list = |m: &BTreeMap<K, V>| m.keys().map(|k| k.to_string()).collect::<Vec<String>>();
                out.push(format!("{what}: model has {:?}, engine has {:?}", list(a), list(b)));
            }
        }
        keys(&self.sessions, &engine.sessions, "sessions", &mut out);
        for (id, m) in &self.sessions {
            let Some(e) = engine.sessions.get(id) else { continue };
            if uncertain.contains(id) {
                continue;
            }
            let mine = (&m.holder, m.turn_id, m.status);
            let theirs = (&e.holder, e.turn_id, e.status);
            if mine != theirs {
                out.push(format!("session {id} (holder, turn, status): model {mine:?}, engine {theirs:?}"));
            }
        }
        keys(&self.votes, &engine.votes, "votes", &mut out);
        for (id, m) in &self.votes {
            let Some(e) = engine.votes.get(id) else { continue };
            if uncertain.contains(&m.session) {
                continue;
            }
            let mine = (&m.required, &m.ballots, &m.host_decision, &m.outcome, m.deadline);
            let theirs = (&e.required, &e.ballots, &e.host_decision, &e.outcome, e.deadline);
            if mine != theirs {
                out.push(format!(
                    "vote {id} (required, ballots, host decision, outcome, deadline): model {mine:?}, engine {theirs:?}"
                ));
            }
        }
        keys(&self.participants, &engine.participants, "participants", &mut out);
        for (id, m) in &self.participants {
            let Some(e) = engine.participants.get(id) else { continue };
            #[allow(clippy::type_complexity)]
            fn view(
                p: &MParticipant,
            ) -> (
                (&String, Role, &Option<ShareId>, bool, Admission),
                &BTreeSet<SessionId>,
                Presence,
                &BTreeMap<SessionId, u64>,
            ) {
                ((&p.display_name, p.role, &p.share, p.muted, p.admission), &p.sessions, p.presence, &p.read)
            }
            if view(m) != view(e) {
                out.push(format!(
                    "participant {id} ((name, role, share, muted, admission), sessions, presence, read markers): model {:?}, engine {:?}",
                    view(m),
                    view(e)
                ));
            }
            // A departed participant's resume token is dead.
            if m.resume_hash.is_none() && e.resume_hash.is_some() && matches!(m.presence, Presence::Gone) {
                out.push(format!("participant {id} is gone but its resume token still works"));
            }
        }
        for (id, m) in &self.shares {
            let Some(e) = engine.shares.get(id) else { continue };
            if (m.revoked, m.uses) != (e.revoked, e.uses) {
                out.push(format!(
                    "share {id} (revoked, uses): model {:?}, engine {:?}",
                    (m.revoked, m.uses),
                    (e.revoked, e.uses)
                ));
            }
        }
        for (id, m) in &self.conns {
            let Some(e) = engine.conns.get(id) else { continue };
            // A connection too slow to read its outbox is closed too; outboxes are not modelled.
            let too_slow = e.auth.is_closing() && matches!(m.auth, AuthState::Authenticated(_));
            if m.auth != e.auth && !too_slow {
                out.push(format!("connection {id}: model {:?}, engine {:?}", m.auth, e.auth));
            }
        }
        out
    }
}

/// A request the tick handles after ingest.
struct Req {
    conn: ConnId,
    id: String,
    method: Method,
}

/// The working state of one tick.
struct Tick<'a> {
    s: State,
    rules: &'a Rules,
    responses: Vec<Predicted>,
    uncertain: BTreeSet<SessionId>,
    departed: Vec<ParticipantId>,
    dropped: Vec<(ParticipantId, Option<SessionId>)>,
    /// Turns that ended this tick: (session, turn id, reason).
    closed: Vec<(SessionId, u64, &'static str)>,
    vote_requests: Vec<(SessionId, u64, String, Kind)>,
    withdrawn: Vec<(SessionId, u64, String)>,
    /// Connections the host closes at the end of the tick.
    closing: Vec<ConnId>,
}

/// Replays one tick's inputs from `before` at time `now`; `store_fails` says whether the store
/// refuses writes (a `storage_fault`) during the tick. (`before` becomes the prediction: the
/// caller has no further use for it, and copying the whole state every tick was a good part of
/// the model's cost.)
pub fn step(before: State, journal: &[Journaled], now: u64, rules: &Rules, store_fails: bool) -> Step {
    let storage_before = before.storage;
    let mut s = before;
    let gap = now.saturating_sub(s.now);
    let resumed = s.tick > 0 && gap > rules.suspend_gap_ms;
    s.now = s.now.max(now);
    s.tick += 1;
    let mut t = Tick {
        s,
        rules,
        responses: Vec::new(),
        uncertain: BTreeSet::new(),
        departed: Vec::new(),
        dropped: Vec::new(),
        closed: Vec::new(),
        vote_requests: Vec::new(),
        withdrawn: Vec::new(),
        closing: Vec::new(),
    };
    // Ingest. Connections the previous tick closed (kick, revocation, authentication timeout…)
    // are gone in this tick's presence phase, before those the transport reports.
    let mut requests = Vec::new();
    let mut closed_conns: Vec<ConnId> =
        t.s.conns.iter().filter(|(_, c)| c.auth.is_closing()).map(|(id, _)| *id).collect();
    for entry in journal {
        match entry {
            Journaled::Opened { conn, addr } => {
                let deadline = t.s.now + rules.auth_timeout_ms;
                t.s.conns.insert(
                    *conn,
                    MConn {
                        auth: AuthState::Pending { deadline },
                        is_host: false,
                        addr: addr.clone(),
                        tokens: BURST,
                        last_ms: t.s.now,
                    },
                );
            }
            Journaled::OpenedHost { conn } => {
                t.s.conns.insert(
                    *conn,
                    MConn {
                        auth: AuthState::Authenticated(ParticipantId::host()),
                        is_host: true,
                        addr: "host".into(),
                        tokens: BURST,
                        last_ms: t.s.now,
                    },
                );
                if let Some(h) = t.s.participants.get_mut(&ParticipantId::host()) {
                    h.presence = match h.presence {
                        Presence::Connected(n) => Presence::Connected(n + 1),
                        _ => Presence::Connected(1),
                    };
                }
            }
            Journaled::Closed { conn } => closed_conns.push(*conn),
            Journaled::Frame { conn, text } => {
                if let Some(r) = t.ingest(*conn, text) {
                    requests.push(r);
                }
            }
            Journaled::Agent(_) => {}
        }
    }
    // Access.
    for c in t.s.conns.values_mut() {
        if matches!(c.auth, AuthState::Pending { deadline } if deadline <= t.s.now) {
            c.auth = c.auth.closing();
        }
    }
    t.authenticate(&requests);
    for r in &requests {
        match &r.method {
            Method::RevokeShare(p) | Method::RotateShare(p) => match t.s.shares.get_mut(&p.share_id) {
                None => t.reply(r, "not_found"),
                Some(share) => {
                    if matches!(r.method, Method::RevokeShare(_)) {
                        share.revoked = true;
                    }
                    t.reply(r, "ok");
                }
            },
            _ => {}
        }
    }
    t.close_dead_shares();
    for r in &requests {
        t.query(r);
    }
    for r in &requests {
        if let Method::MarkRead(p) = &r.method {
            t.mark_read(r, &p.session_id, p.seq);
        }
    }
    // Presence.
    for conn in closed_conns {
        t.connection_closed(conn);
    }
    if resumed {
        let until = t.s.now + rules.grace_ms;
        for p in t.s.participants.values_mut() {
            if matches!(p.presence, Presence::Grace { .. }) {
                p.presence = Presence::Grace { until };
            }
        }
    }
    let expired: Vec<ParticipantId> =
        t.s.participants
            .iter()
            .filter(|(_, p)| matches!(p.presence, Presence::Grace { until } if until <= t.s.now))
            .map(|(id, _)| id.clone())
            .collect();
    for id in expired {
        t.depart(&id);
    }
    for r in &requests {
        t.join_leave(r);
    }
    // Moderation.
    for r in &requests {
        t.moderate(r);
    }
    t.close_dead_shares();
    for r in &requests {
        t.session_admin(r);
    }
    for r in &requests {
        t.fork(r);
    }
    for r in &requests {
        t.settings(r);
    }
    // Room chat, then the turn lock.
    for r in &requests {
        if let Method::SendChat(_) = r.method {
            t.send_message(r);
        }
    }
    for r in &requests {
        if let Method::Typing(p) = &r.method {
            t.typing(r, &p.session_id);
        }
    }
    for r in &requests {
        if let Method::SendMessage(_) = r.method {
            t.send_message(r);
        }
    }
    for r in &requests {
        if let Method::CancelTurn(p) = &r.method {
            t.cancel_turn(r, &p.session_id);
        }
    }
    let gone = t.departed.clone();
    let holding: Vec<SessionId> =
        t.s.sessions
            .iter()
            .filter(|(_, s)| s.holder.as_ref().is_some_and(|h| gone.contains(h)))
            .map(|(id, _)| id.clone())
            .collect();
    for id in holding {
        t.end_turn(&id, "holder_gone");
    }
    // Agent output.
    for entry in journal {
        if let Journaled::Agent(out) = entry {
            t.agent_output(&out.session, out.turn_id, &out.event);
        }
    }
    // Votes.
    t.open_votes();
    for r in &requests {
        t.cast(r);
    }
    t.prune();
    t.resolve();
    // Requests the model does not predict (setup methods, retries only the store can answer)
    // are answered "anything": the entry keeps two requests with the same id apart.
    for r in &requests {
        if !t.responses.iter().any(|p| p.conn == r.conn && p.id == r.id) {
            t.reply(r, ANY);
        }
    }
    // Persist: the tick's writes are committed, or the store fails (see the module docs).
    if t.persist(storage_before, store_fails) {
        for p in t.responses.iter_mut().filter(|p| p.code == "ok") {
            p.held = true;
        }
    }
    // Broadcast: the closes go out.
    for conn in std::mem::take(&mut t.closing) {
        if let Some(c) = t.s.conns.get_mut(&conn) {
            c.auth = c.auth.closing();
        }
    }
    Step { state: t.s, responses: t.responses, uncertain: t.uncertain }
}

impl Tick<'_> {
    fn reply(&mut self, r: &Req, code: &str) {
        self.responses.push(Predicted {
            conn: r.conn,
            id: r.id.clone(),
            method: r.method.name().to_string(),
            code: code.to_string(),
            held: false,
        });
    }

    fn reply_raw(&mut self, conn: ConnId, id: String, code: &str) {
        self.responses.push(Predicted { conn, id, method: "(frame)".into(), code: code.to_string(), held: false });
    }

    /// The persist phase: a tick that starts healthy commits, unless the store fails now; a
    /// failing store is retried once [`STORAGE_RETRY_MS`] have passed since the last try, and
    /// works again when the fault is gone. Returns whether this is the tick whose commit failed.
    fn persist(&mut self, before: Option<u64>, store_fails: bool) -> bool {
        let now = self.s.now;
        match before {
            None if store_fails => {
                self.s.storage = Some(now);
                true
            }
            None => false,
            Some(last) => {
                if now.saturating_sub(last) >= STORAGE_RETRY_MS {
                    self.s.storage = store_fails.then_some(now);
                }
                false
            }
        }
    }

    /// `get_settings` and `update_settings`, and the host's views `list_lobby` and `fetch_audit`
    /// (host only; the gate refused everyone else).
    fn settings(&mut self, r: &Req) {
        let p = match &r.method {
            Method::GetSettings(_) | Method::ListLobby(_) | Method::FetchAudit(_) => return self.reply(r, "ok"),
            Method::UpdateSettings(p) => p,
            _ => return,
        };
        let name = match p.host_name.as_deref().map(str::trim) {
            // "Host" is the host's to take, whatever the display-name rules say.
            Some(n) if n.eq_ignore_ascii_case("host") => Some(n.to_string()),
            Some(n) => match crate::engine::systems::util::valid_display_name(n) {
                Ok(n) => Some(n),
                Err(_) => return self.reply(r, "invalid_params"),
            },
            None => None,
        };
        if let Some(name) = name {
            if let Some(h) = self.s.participants.get_mut(&ParticipantId::host()) {
                h.display_name = name.clone();
            }
            self.s.settings.host_name = name;
        }
        if let Some(on) = p.default_consensus {
            self.s.settings.default_consensus = on;
        }
        if let Some(ms) = p.default_vote_deadline_ms {
            self.s.settings.default_vote_deadline_ms = (ms > 0).then_some(ms);
        }
        self.reply(r, "ok");
    }

    /// Ingest: the rate limit, the codec, then the gate (authentication, host-only methods, the
    /// lobby). Returns the request when it goes on to the rules.
    fn ingest(&mut self, conn: ConnId, text: &str) -> Option<Req> {
        let now = self.s.now;
        let c = self.s.conns.get_mut(&conn)?;
        let allowed = c.is_host || {
            let elapsed = now.saturating_sub(c.last_ms) as f64 / 1000.0;
            c.tokens = (c.tokens + elapsed * REFILL_PER_SEC).min(BURST);
            c.last_ms = now;
            let ok = c.tokens >= 1.0;
            if ok {
                c.tokens -= 1.0;
            }
            ok
        };
        let (auth, is_host) = (c.auth.clone(), c.is_host);
        if auth.is_closing() {
            return None;
        }
        if !allowed {
            let id = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(serde_json::Value::Null);
            self.reply_raw(conn, id.to_string(), "rate_limited");
            return None;
        }
        let req = match Request::parse(text) {
            Ok(r) => r,
            Err(f) => {
                let code = serde_json::to_value(f.error.code).ok().and_then(|v| v.as_str().map(str::to_string));
                self.reply_raw(conn, f.id.to_string(), &code.unwrap_or_default());
                return None;
            }
        };
        let r = Req { conn, id: req.id.to_string(), method: req.method };
        let gate = match (&auth, &r.method) {
            (_, Method::Ping(_)) => None,
            (AuthState::Pending { .. }, Method::Authenticate(_)) => None,
            (AuthState::Pending { .. }, _) => Some("unauthenticated"),
            (AuthState::Authenticated(_), Method::Authenticate(_)) => Some("already_authenticated"),
            (AuthState::Authenticated(_), m) if m.host_only() && !is_host => Some("forbidden"),
            (AuthState::Authenticated(p), _) => match self.s.participants.get(p).map(|p| p.admission) {
                Some(Admission::Admitted) => None,
                Some(_) => Some("not_admitted"),
                None => Some("unauthenticated"),
            },
            (AuthState::Closing(_), _) => Some("unauthenticated"),
        };
        if let Some(code) = gate {
            self.reply(&r, code);
            return None;
        }
        // While the store fails, nothing that changes state or shows unstored state runs.
        if self.s.storage.is_some() && !harmless(&r.method) {
            self.reply(&r, "storage_unavailable");
            return None;
        }
        Some(r)
    }

    /// The caller behind a connection: its participant id, the participant and its share.
    fn caller(&self, conn: ConnId) -> Option<(ParticipantId, &MParticipant, Option<&MShare>)> {
        let AuthState::Authenticated(pid) = &self.s.conns.get(&conn)?.auth else { return None };
        let p = self.s.participants.get(pid)?;
        let share = p.share.as_ref().and_then(|s| self.s.shares.get(s));
        Some((pid.clone(), p, share))
    }

    /// Whether the participant may see a workspace: the host sees all, an admitted remote what
    /// its share names.
    fn in_scope(p: &MParticipant, share: Option<&MShare>, w: &WorkspaceId) -> bool {
        p.role == Role::Host || (p.admission == Admission::Admitted && share.is_some_and(|s| s.workspaces.contains(w)))
    }

    /// The session, when it exists and the caller may see it.
    fn visible(&self, conn: ConnId, session: &SessionId) -> Option<(ParticipantId, bool)> {
        let (pid, p, share) = self.caller(conn)?;
        let s = self.s.sessions.get(session)?;
        let can_write = p.role != Role::Observer && p.admission == Admission::Admitted;
        Self::in_scope(p, share, &s.workspace).then_some((pid, can_write))
    }

    fn authenticate(&mut self, requests: &[Req]) {
        let now = self.s.now;
        let mut fresh: Vec<(String, ShareId)> = Vec::new();
        for r in requests {
            let Method::Authenticate(params) = &r.method else { continue };
            let Some(c) = self.s.conns.get(&r.conn) else { continue };
            let addr = match c.addr.parse::<std::net::SocketAddr>() {
                Ok(sa) => sa.ip().to_string(),
                Err(_) => c.addr.clone(),
            };
            let window = self.s.failures.entry(addr.clone()).or_default();
            while window.front().is_some_and(|&t| t + FAILURE_WINDOW_MS <= now) {
                window.pop_front();
            }
            if window.len() >= self.rules.auth_failures_per_minute {
                self.reply(r, "rate_limited");
                continue;
            }
            let Ok(name) = crate::engine::systems::util::valid_display_name(&params.display_name) else {
                self.reply(r, "invalid_params");
                continue;
            };
            let connections = |p: &MParticipant| match p.presence {
                Presence::Connected(n) => n as usize,
                _ => 0,
            };
            if let Some(resume) = &params.resume_token {
                let found = self.s.participants.iter().find_map(|(id, p)| {
                    let ok = p.role != Role::Host && p.resume_hash.is_some_and(|h| crate::token::matches(resume, &h));
                    ok.then(|| id.clone())
                });
                if let Some(pid) = found {
                    let p = &self.s.participants[&pid];
                    let share_id = p.share.clone();
                    let alive = share_id.as_ref().and_then(|s| self.s.shares.get(s)).is_some_and(|s| !s.dead(now));
                    let mine = connections(p);
                    let on_share =
                        self.s.participants.values().filter(|q| q.share == share_id).map(connections).sum::<usize>()
                            + fresh.iter().filter(|(_, s)| Some(s) == share_id.as_ref()).count();
                    if alive && on_share >= self.rules.max_connections_per_share {
                        self.reply(r, "share_in_use");
                        continue;
                    }
                    if alive && mine >= self.rules.max_connections_per_participant {
                        self.reply(r, "share_in_use");
                        continue;
                    }
                    if alive {
                        let p = self.s.participants.get_mut(&pid).expect("found");
                        p.presence = Presence::Connected(mine as u32 + 1);
                        self.s.conns.get_mut(&r.conn).expect("checked").auth = AuthState::Authenticated(pid);
                        self.reply(r, "ok");
                        continue;
                    }
                }
            }
            let found = self
                .s
                .shares
                .iter()
                .find(|(_, s)| crate::token::matches(&params.token, &s.token_hash) && s.usable(now))
                .map(|(id, _)| id.clone());
            let Some(share_id) = found else {
                self.s.failures.entry(addr).or_default().push_back(now);
                self.reply(r, "unauthenticated");
                continue;
            };
            let share = self.s.shares[&share_id].clone();
            let live: Vec<&MParticipant> = self
                .s
                .participants
                .values()
                .filter(|p| p.share.as_ref() == Some(&share_id) && !matches!(p.presence, Presence::Gone))
                .collect();
            let fresh_here = fresh.iter().filter(|(_, s)| *s == share_id).count();
            if !share.collaborative && (!live.is_empty() || fresh_here > 0) {
                self.reply(r, "share_in_use");
                continue;
            }
            if live.iter().map(|p| connections(p)).sum::<usize>() + fresh_here >= self.rules.max_connections_per_share {
                self.reply(r, "share_in_use");
                continue;
            }
            // A second "Ann" becomes "Ann (2)" (compared as names read: case and look-alike
            // letters aside, among everyone present).
            use crate::engine::systems::util::name_forms;
            let taken: BTreeSet<String> = self
                .s
                .participants
                .values()
                .filter(|p| !matches!(p.presence, Presence::Gone))
                .map(|p| p.display_name.as_str())
                .chain(fresh.iter().map(|(n, _)| n.as_str()))
                .flat_map(name_forms)
                .collect();
            let mut display_name = name.clone();
            let mut n = 2;
            while name_forms(&display_name).iter().any(|f| taken.contains(f)) {
                display_name = format!("{name} ({n})");
                n += 1;
            }
            fresh.push((display_name.clone(), share_id.clone()));
            self.s.next_participant += 1;
            let pid = ParticipantId::nth(self.s.next_participant);
            let admission = if share.admission_required { Admission::Pending } else { Admission::Admitted };
            self.s.participants.insert(
                pid.clone(),
                MParticipant {
                    display_name,
                    role: share.role,
                    share: Some(share_id.clone()),
                    muted: false,
                    admission,
                    sessions: BTreeSet::new(),
                    presence: Presence::Connected(1),
                    resume_hash: None,
                    read: BTreeMap::new(),
                },
            );
            self.s.shares.get_mut(&share_id).expect("found").uses += 1;
            self.s.conns.get_mut(&r.conn).expect("checked").auth = AuthState::Authenticated(pid);
            self.reply(r, "ok");
        }
    }

    /// Gone for good: no longer present, out of every session, resume token dead.
    fn depart(&mut self, pid: &ParticipantId) {
        let Some(p) = self.s.participants.get_mut(pid) else { return };
        if matches!(p.presence, Presence::Gone) {
            return;
        }
        p.presence = Presence::Gone;
        p.resume_hash = None;
        p.sessions.clear();
        self.departed.push(pid.clone());
    }

    /// The host closes every connection of a participant (kicked, refused, share dead) when
    /// the tick sends its frames: until then the connection still speaks for them.
    fn close_connections_of(&mut self, pid: &ParticipantId) {
        let theirs = self.s.conns.iter().filter(|(_, c)| c.auth == AuthState::Authenticated(pid.clone()));
        self.closing.extend(theirs.map(|(id, _)| *id));
    }

    fn close_dead_shares(&mut self) {
        let now = self.s.now;
        let dead: Vec<ShareId> = self.s.shares.iter().filter(|(_, s)| s.dead(now)).map(|(id, _)| id.clone()).collect();
        for share in dead {
            let on_it: Vec<ParticipantId> = self
                .s
                .participants
                .iter()
                .filter(|(_, p)| p.share.as_ref() == Some(&share) && !matches!(p.presence, Presence::Gone))
                .map(|(id, _)| id.clone())
                .collect();
            for pid in on_it {
                self.close_connections_of(&pid);
                self.depart(&pid);
            }
        }
    }

    fn query(&mut self, r: &Req) {
        match &r.method {
            Method::Ping(_) => self.reply(r, "ok"),
            Method::ListWorkspaces(_) if self.caller(r.conn).is_some() => self.reply(r, "ok"),
            Method::ListSessions(p) => {
                let Some((_, me, share)) = self.caller(r.conn) else { return };
                let code = match &p.workspace_id {
                    Some(w) if !self.s.workspaces.contains_key(w) || !Self::in_scope(me, share, w) => "not_found",
                    _ => "ok",
                };
                self.reply(r, code);
            }
            Method::ReadWorkspaceFile(p) => {
                if self.caller(r.conn).is_none() {
                    return;
                }
                if self.visible(r.conn, &p.session_id).is_none() {
                    return self.reply(r, "not_found");
                }
                let ws = &self.s.sessions[&p.session_id].workspace;
                let Some(dir) = self.s.workspaces.get(ws).cloned() else { return self.reply(r, "not_found") };
                let code = if readable(&dir, &p.path, self.rules.max_file_bytes) { "ok" } else { "file_refused" };
                self.reply(r, code);
            }
            Method::FetchHistory(p) => {
                if self.caller(r.conn).is_none() {
                    return;
                }
                if self.visible(r.conn, &p.session_id).is_none() {
                    return self.reply(r, "not_found");
                }
                // Absent means the default page; a given limit must be 1–200.
                let bad = p.limit.is_some_and(|l| l == 0 || l as usize > crate::protocol::HISTORY_PAGE_MESSAGES);
                let code = if bad { "invalid_params" } else { "ok" };
                self.reply(r, code);
            }
            _ => {}
        }
    }

    /// `mark_read`: a member's marker moves forward, never past the session's last event.
    fn mark_read(&mut self, r: &Req, session: &SessionId, seq: u64) {
        if self.caller(r.conn).is_none() {
            return;
        }
        let Some((pid, _)) = self.visible(r.conn, session) else { return self.reply(r, "not_found") };
        let last = self.s.sessions[session].last_seq;
        let me = self.s.participants.get_mut(&pid).expect("the caller exists");
        if !me.sessions.contains(session) {
            return self.reply(r, "not_joined");
        }
        if seq > last {
            return self.reply(r, "invalid_params");
        }
        if seq > me.read.get(session).copied().unwrap_or(0) {
            me.read.insert(session.clone(), seq);
        }
        self.reply(r, "ok");
    }

    fn connection_closed(&mut self, conn: ConnId) {
        let Some(c) = self.s.conns.remove(&conn) else { return };
        let Some(pid) = c.auth.owner().cloned() else { return };
        let until = self.s.now + self.rules.grace_ms;
        let Some(p) = self.s.participants.get_mut(&pid) else { return };
        p.presence = match p.presence {
            Presence::Connected(n) if n > 1 => Presence::Connected(n - 1),
            Presence::Connected(_) if pid.is_host() => Presence::Connected(0),
            Presence::Connected(_) => Presence::Grace { until },
            other => other,
        };
    }

    fn join_leave(&mut self, r: &Req) {
        let (session, join) = match &r.method {
            Method::JoinSession(p) => (&p.session_id, true),
            Method::LeaveSession(p) => (&p.session_id, false),
            _ => return,
        };
        let Some(AuthState::Authenticated(pid)) = self.s.conns.get(&r.conn).map(|c| c.auth.clone()) else { return };
        if !self.s.participants.contains_key(&pid) {
            return;
        }
        if self.visible(r.conn, session).is_none() {
            return self.reply(r, "not_found");
        }
        let p = self.s.participants.get_mut(&pid).expect("checked");
        if join {
            p.sessions.insert(session.clone());
            return self.reply(r, "ok");
        }
        if pid.is_host() {
            return self.reply(r, "forbidden");
        }
        if !p.sessions.remove(session) {
            return self.reply(r, "not_joined");
        }
        self.dropped.push((pid, Some(session.clone())));
        self.reply(r, "ok");
    }

    fn moderate(&mut self, r: &Req) {
        let target = match &r.method {
            Method::Kick(k) => &k.participant_id,
            Method::Admit(p) | Method::Refuse(p) => &p.participant_id,
            Method::Mute(m) => &m.participant_id,
            _ => return,
        };
        let Some(p) = self.s.participants.get(target) else { return self.reply(r, "not_found") };
        if target.is_host() {
            return self.reply(r, "forbidden");
        }
        if matches!(p.presence, Presence::Gone) {
            return self.reply(r, "not_found");
        }
        let (share, admission) = (p.share.clone(), p.admission);
        match &r.method {
            Method::Kick(k) => {
                self.close_connections_of(target);
                self.depart(target);
                if let (true, Some(share)) = (k.revoke_share, share.and_then(|s| self.s.shares.get_mut(&s))) {
                    share.revoked = true;
                }
            }
            Method::Mute(m) => {
                let p = self.s.participants.get_mut(target).expect("checked");
                if p.muted != m.muted {
                    p.muted = m.muted;
                    if m.muted {
                        self.dropped.push((target.clone(), None));
                    }
                }
            }
            _ => {
                if admission != Admission::Pending {
                    return self.reply(r, "invalid_params");
                }
                let admit = matches!(r.method, Method::Admit(_));
                self.s.participants.get_mut(target).expect("checked").admission =
                    if admit { Admission::Admitted } else { Admission::Refused };
                if !admit {
                    self.close_connections_of(target);
                    self.depart(target);
                }
            }
        }
        self.reply(r, "ok");
    }

    /// A new idle session, which the host is in.
    fn new_session(&mut self, workspace: WorkspaceId, vote_deadline_ms: Option<u64>) {
        self.s.next_session += 1;
        let id = SessionId::nth(self.s.next_session);
        self.s.sessions.insert(
            id.clone(),
            MSession {
                workspace,
                holder: None,
                turn_id: 0,
                consensus: false,
                status: SessionStatus::Idle,
                vote_deadline_ms,
                allowed_tools: BTreeSet::new(),
                client_ids: Rc::default(),
                has_older: false,
                last_seq: 0,
            },
        );
        if let Some(h) = self.s.participants.get_mut(&ParticipantId::host()) {
            h.sessions.insert(id);
        }
    }

    fn session_admin(&mut self, r: &Req) {
        match &r.method {
            Method::CreateSession(p) => {
                if !self.s.workspaces.contains_key(&p.workspace_id) {
                    return self.reply(r, "not_found");
                }
                self.new_session(p.workspace_id.clone(), p.vote_deadline_ms);
                self.reply(r, "ok");
            }
            Method::RenameSession(p) => {
                let code = if self.s.sessions.contains_key(&p.session_id) { "ok" } else { "not_found" };
                self.reply(r, code);
            }
            Method::ClearSession(p) => {
                let Some(s) = self.s.sessions.get_mut(&p.session_id) else { return self.reply(r, "not_found") };
                s.client_ids = Rc::default();
                s.has_older = false;
                self.reply(r, "ok");
            }
            _ => {}
        }
    }

    fn fork(&mut self, r: &Req) {
        let Method::ForkSession(p) = &r.method else { return };
        let Some(src) = self.s.sessions.get(&p.session_id) else { return self.reply(r, "not_found") };
        let (workspace, deadline) = (src.workspace.clone(), src.vote_deadline_ms);
        self.new_session(workspace, deadline);
        self.reply(r, "ok");
    }

    /// A prompt (`send_message`) or room chat (`send_chat`: no turn needed or taken).
    fn send_message(&mut self, r: &Req) {
        let (p, chat) = match &r.method {
            Method::SendMessage(p) => (p, false),
            Method::SendChat(p) => (p, true),
            _ => return,
        };
        if self.caller(r.conn).is_none() {
            return;
        }
        let Some((pid, can_write)) = self.visible(r.conn, &p.session_id) else { return self.reply(r, "not_found") };
        let me = &self.s.participants[&pid];
        if !can_write || me.muted {
            return self.reply(r, "forbidden");
        }
        if !me.sessions.contains(&p.session_id) {
            return self.reply(r, "not_joined");
        }
        let cmid_len = p.client_msg_id.chars().count();
        if cmid_len == 0 || cmid_len > MAX_CLIENT_MSG_ID || p.text.trim().is_empty() || p.text.len() > MAX_TEXT {
            return self.reply(r, "invalid_params");
        }
        let consensus = match me.share.as_ref().and_then(|s| self.s.shares.get(s)) {
            Some(s) => s.consensus_required && s.collaborative,
            None => self.s.settings.default_consensus,
        };
        let session = self.s.sessions.get_mut(&p.session_id).expect("visible");
        let key = (pid.clone(), p.client_msg_id.clone());
        if let Some(text) = session.client_ids.get(&key) {
            let code = if *text == p.text { "ok" } else { "duplicate_client_msg_id" };
            return self.reply(r, code);
        }
        if session.has_older {
            // The original may be older than the tail: only the store knows.
            self.uncertain.insert(p.session_id.clone());
            return;
        }
        if chat {
            Rc::make_mut(&mut session.client_ids).insert(key, p.text.clone());
            return self.reply(r, "ok");
        }
        if session.holder.is_some() {
            return self.reply(r, "turn_locked");
        }
        Rc::make_mut(&mut session.client_ids).insert(key, p.text.clone());
        session.holder = Some(pid);
        session.turn_id += 1;
        session.consensus = consensus;
        session.status = SessionStatus::Running;
        self.reply(r, "ok");
    }

    /// `typing`: answered for those who may send in a session they joined (the event itself is
    /// ephemeral and throttled, and not part of the model's state).
    fn typing(&mut self, r: &Req, session: &SessionId) {
        if self.caller(r.conn).is_none() {
            return;
        }
        let Some((pid, can_write)) = self.visible(r.conn, session) else { return self.reply(r, "not_found") };
        let me = &self.s.participants[&pid];
        let code = if !can_write || me.muted {
            "forbidden"
        } else if !me.sessions.contains(session) {
            "not_joined"
        } else {
            "ok"
        };
        self.reply(r, code);
    }

    fn cancel_turn(&mut self, r: &Req, session: &SessionId) {
        if self.caller(r.conn).is_none() {
            return;
        }
        let Some((pid, _)) = self.visible(r.conn, session) else { return self.reply(r, "not_found") };
        let Some(holder) = self.s.sessions[session].holder.clone() else { return self.reply(r, "no_turn") };
        if holder != pid && !pid.is_host() {
            return self.reply(r, "forbidden");
        }
        self.end_turn(session, "cancelled");
        self.reply(r, "ok");
    }

    /// Every way a turn ends releases the lock and closes the turn's votes.
    fn end_turn(&mut self, session: &SessionId, reason: &'static str) {
        let Some(s) = self.s.sessions.get_mut(session) else { return };
        if s.holder.take().is_none() {
            return;
        }
        s.status = SessionStatus::Idle;
        self.closed.push((session.clone(), s.turn_id, reason));
    }

    fn agent_output(&mut self, session: &SessionId, turn_id: u64, event: &AgentEvent) {
        let Some(s) = self.s.sessions.get(session) else { return };
        if s.holder.is_none() || s.turn_id != turn_id {
            return; // a finished turn's late output
        }
        let request = |kind: Kind, id: &str| (session.clone(), turn_id, id.to_string(), kind);
        match event {
            AgentEvent::Delta(_) | AgentEvent::Conversation(_) => {}
            AgentEvent::Plan { request_id, .. } => self.vote_requests.push(request(Kind::Plan, request_id)),
            AgentEvent::Question { request_id, questions } => self.vote_requests.push(request(
                Kind::Question(questions.len().min(crate::engine::systems::agent_io::MAX_QUESTIONS)),
                request_id,
            )),
            AgentEvent::ToolRequest { request_id, tool, .. } => {
                self.vote_requests.push(request(Kind::Tool(tool.clone()), request_id))
            }
            AgentEvent::Withdrawn { request_id } => self.withdrawn.push((session.clone(), turn_id, request_id.clone())),
            AgentEvent::Done => self.end_turn(session, "completed"),
            AgentEvent::Failed(_) => self.end_turn(session, "failed"),
        }
    }

    fn open_votes(&mut self) {
        let now = self.s.now;
        for (session, turn_id, request_id, kind) in std::mem::take(&mut self.vote_requests) {
            let Some(s) = self.s.sessions.get(&session) else { continue };
            let Some(holder) = s.holder.clone() else { continue };
            let eligible = |p: &MParticipant| {
                !matches!(p.presence, Presence::Gone)
                    && !p.muted
                    && p.role == Role::Participant
                    && p.sessions.contains(&session)
            };
            let holder_p = self.s.participants.get(&holder);
            let holder_share = holder_p.and_then(|p| p.share.as_ref()).and_then(|id| self.s.shares.get(id));
            let (holder_decides, required): (bool, BTreeSet<ParticipantId>) = match (&kind, s.consensus) {
                (Kind::Tool(_), _) => (false, BTreeSet::new()),
                (_, true) => {
                    (false, self.s.participants.iter().filter(|(_, p)| eligible(p)).map(|(id, _)| id.clone()).collect())
                }
                (_, false) => (true, holder_p.filter(|p| eligible(p)).map(|_| holder.clone()).into_iter().collect()),
            };
            let deadline = s
                .vote_deadline_ms
                .or(holder_share.and_then(|sh| sh.vote_deadline_ms))
                .or(self.s.settings.default_vote_deadline_ms)
                .map(|d| now + d);
            let allow_listed = matches!(&kind, Kind::Tool(t) if s.allowed_tools.contains(t));
            self.s.next_vote += 1;
            self.s.votes.insert(
                VoteId::nth(self.s.next_vote),
                MVote {
                    session: session.clone(),
                    turn_id,
                    request_id,
                    kind,
                    holder_decides,
                    required,
                    ballots: BTreeMap::new(),
                    host_decision: allow_listed.then_some(Ballot::Approve),
                    allow_listed,
                    deadline,
                    outcome: None,
                },
            );
            self.s.sessions.get_mut(&session).expect("checked").status = SessionStatus::AwaitingVote;
        }
    }

    fn cast(&mut self, r: &Req) {
        let (vote_id, ballot, always) = match &r.method {
            Method::VotePlan(p) => {
                let b = if p.approve { Ballot::Approve } else { Ballot::Deny(p.reason.clone().unwrap_or_default()) };
                (&p.vote_id, b, p.always)
            }
            Method::AnswerQuestion(p) => (&p.vote_id, Ballot::Answer(p.answers.clone()), false),
            _ => return,
        };
        if self.caller(r.conn).is_none() {
            return;
        }
        let Some(session) = self.s.votes.get(vote_id).map(|v| v.session.clone()) else {
            return self.reply(r, "not_found");
        };
        let Some((pid, can_write)) = self.visible(r.conn, &session) else { return self.reply(r, "not_found") };
        if !can_write {
            return self.reply(r, "forbidden");
        }
        let vote = self.s.votes.get_mut(vote_id).expect("checked");
        if vote.outcome.is_some() {
            return self.reply(r, "stale_vote");
        }
        let fits = match (&vote.kind, &ballot) {
            (Kind::Question(n), Ballot::Answer(a)) => a.len() == *n && a.iter().all(|x| !x.trim().is_empty()),
            (Kind::Question(_), _) | (_, Ballot::Answer(_)) => false,
            _ => true,
        };
        if !fits {
            return self.reply(r, "invalid_params");
        }
        let tool = match &vote.kind {
            Kind::Tool(t) => Some(t.clone()),
            _ => None,
        };
        if always && (!pid.is_host() || tool.is_none() || ballot != Ballot::Approve) {
            return self.reply(r, "invalid_params");
        }
        if pid.is_host() {
            vote.host_decision = Some(ballot);
            if let (true, Some(tool)) = (always, tool) {
                self.s.sessions.get_mut(&session).expect("visible").allowed_tools.insert(tool);
            }
        } else if vote.required.contains(&pid) {
            vote.ballots.insert(pid, ballot);
        } else {
            return self.reply(r, "not_a_voter");
        }
        self.reply(r, "ok");
    }

    /// Departure (from everything), leaving a session or being muted: no longer a required voter.
    fn prune(&mut self) {
        let mut removals: Vec<(ParticipantId, Option<SessionId>)> =
            self.departed.iter().map(|p| (p.clone(), None)).collect();
        removals.extend(self.dropped.iter().cloned());
        for vote in self.s.votes.values_mut().filter(|v| v.outcome.is_none()) {
            for (p, s) in &removals {
                if s.as_ref().is_none_or(|s| *s == vote.session) {
                    vote.required.remove(p);
                    vote.ballots.remove(p);
                }
            }
        }
    }

    fn resolve(&mut self) {
        let now = self.s.now;
        let names: BTreeMap<ParticipantId, String> =
            self.s.participants.iter().map(|(id, p)| (id.clone(), p.display_name.clone())).collect();
        let mut running_again = Vec::new();
        for vote in self.s.votes.values_mut().filter(|v| v.outcome.is_none()) {
            let pulled = self
                .withdrawn
                .iter()
                .any(|(s, t, r)| *s == vote.session && *t == vote.turn_id && *r == vote.request_id);
            let ended = self.closed.iter().find(|(s, t, _)| *s == vote.session && *t == vote.turn_id);
            let outcome = if pulled {
                Some((VoteOutcome::Denied, Some("withdrawn by the agent".to_string()), "system".to_string()))
            } else if let Some((_, _, reason)) = ended {
                Some((VoteOutcome::Denied, Some(format!("turn ended ({reason})")), "system".to_string()))
            } else if let Some(decided) = decide(vote, &names) {
                Some(decided)
            } else if vote.deadline.is_some_and(|d| d <= now) {
                Some((VoteOutcome::Denied, Some("timed out".to_string()), "deadline".to_string()))
            } else {
                None
            };
            if outcome.is_some() {
                vote.outcome = outcome;
                running_again.push(vote.session.clone());
            }
        }
        for id in running_again {
            let s = self.s.sessions.get_mut(&id).expect("a vote's session exists");
            if s.holder.is_some() && s.status == SessionStatus::AwaitingVote {
                s.status = SessionStatus::Running;
            }
        }
    }
}

/// The rules of a vote that nothing closed from outside: the host may always decide alone; any
/// required deny denies at once; all required approvals approve; questions resolve when every
/// required voter answered; an empty required set waits for the host.
fn decide(vote: &MVote, names: &BTreeMap<ParticipantId, String>) -> Option<(VoteOutcome, Option<String>, String)> {
    if let Some(h) = &vote.host_decision {
        let by = if vote.allow_listed { "allow_list" } else { "host" }.to_string();
        return Some(match h {
            Ballot::Approve => (VoteOutcome::Approved, None, by),
            Ballot::Deny(r) => {
                let reason = if r.is_empty() { "denied by the host".to_string() } else { r.clone() };
                (VoteOutcome::Denied, Some(reason), by)
            }
            Ballot::Answer(_) => (VoteOutcome::Answered, None, by),
        });
    }
    if vote.required.is_empty() {
        return None;
    }
    let by = if vote.holder_decides { "holder" } else { "consensus" }.to_string();
    let name = |p: &ParticipantId| names.get(p).cloned().unwrap_or_else(|| p.to_string());
    match vote.kind {
        Kind::Question(_) => {
            let all = vote.required.iter().all(|p| matches!(vote.ballots.get(p), Some(Ballot::Answer(_))));
            all.then_some((VoteOutcome::Answered, None, by))
        }
        _ => {
            let mut denials: Vec<String> = vote
                .required
                .iter()
                .filter_map(|p| match vote.ballots.get(p) {
                    Some(Ballot::Deny(r)) if r.is_empty() => Some(format!("{}: denied", name(p))),
                    Some(Ballot::Deny(r)) => Some(format!("{}: {r}", name(p))),
                    _ => None,
                })
                .collect();
            if !denials.is_empty() {
                denials.sort();
                return Some((VoteOutcome::Denied, Some(denials.join("\n")), by));
            }
            let all = vote.required.iter().all(|p| vote.ballots.get(p) == Some(&Ballot::Approve));
            all.then_some((VoteOutcome::Approved, None, by))
        }
    }
}

/// Whether a plan card may read `rel` in the workspace `root`: a relative path without `..`
/// naming a regular UTF-8 file of at most `max` bytes whose real location is inside the
/// workspace's real location (no symlink escape).
fn readable(root: &Path, rel: &str, max: u64) -> bool {
    let rel_path = Path::new(rel);
    if rel.is_empty() || rel_path.is_absolute() || rel.split(['/', '\\']).any(|part| part == "..") {
        return false;
    }
    let (Ok(root), Ok(real)) = (std::fs::canonicalize(root), std::fs::canonicalize(root.join(rel_path))) else {
        return false;
    };
    let inside = real.ancestors().any(|a| a == root);
    let Ok(meta) = std::fs::metadata(&real) else { return false };
    inside && meta.is_file() && meta.len() <= max && std::fs::read(&real).is_ok_and(|b| std::str::from_utf8(&b).is_ok())
}

/// The (connection, request id) of every frame in a journal whose id can be read.
pub fn request_ids(journal: &[Journaled]) -> Vec<(ConnId, String)> {
    journal
        .iter()
        .filter_map(|j| match j {
            Journaled::Frame { conn, text } => {
                let v: serde_json::Value = serde_json::from_str(text).ok()?;
                Some((*conn, v.get("id")?.to_string()))
            }
            _ => None,
        })
        .collect()
}
