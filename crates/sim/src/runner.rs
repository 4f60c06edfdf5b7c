//! The deterministic scenario runner.
//!
//! One [`Runner`] drives one engine through one scenario on a virtual clock:
//!
//! ```text
//! setup (ticks at t=0): host connection → workspaces → sessions + shares → participants
//!                       authenticate → join
//! loop every tick_ms:   run due steps (requests, faults) → transport delivers the input →
//!                       engine.tick(now) → transport delivers the output → every client reads
//!                       (responses, events, auto-behaviours of well-behaved clients)
//! end:                  check expectations, write the transcript
//! ```
//!
//! The clients talk to the engine through a [`Transport`]: in memory, or over real WebSockets
//! ([`super::ws`]). Either way the engine sees the same input in the same order and the clients
//! read the same frames, so the per-participant event sequences are the same.
//!
//! Nothing here reads the wall clock or iterates a hash map, so the same scenario and seed give
//! a byte-identical transcript. Clients are modelled as well-behaved programs: they rejoin with
//! `since_seq` after `resync_required`, refetch after `history_replaced`, join their sessions
//! once admitted, and resume with their resume token when reconnecting.

use super::agents::{find_bin, scenario_dir, AgentPump};
use super::expect::{self, json_subset};
use super::format::*;
use super::model;
use super::transport::{new_transport, ClientEnd, Transport, TransportKind, VirtualTime};
use crate::agent::{AgentEvent, AgentOutput};
use crate::client_session::{ClientSession, Then};
use crate::engine::clock::EngineClock;
use crate::engine::components::{Participant, PendingVote, Session, Share, TurnLock};
use crate::engine::{Engine, EngineConfig, Inbound};
use crate::ids::{ConnId, SessionId};
use crate::net::server::ConnIds;
use crate::persist::MessageRow;
use crate::persist::Store;
use crate::protocol::{AuthenticateResult, EventFrame, JoinSessionParams, JoinSessionResult};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::StorageFaults;

/// How a scenario run is configured from outside the file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Stop at the first invariant violation or panic only (the simulator ignores expectations).
    pub ignore_expectations: bool,
    /// Which transport carries the frames.
    pub transport: TransportKind,
    /// Run the engine as a host does: no invariant checker (benchmarks measure production work).
    pub no_invariants: bool,
    /// Check every tick and every response against the reference model ([`super::model`]).
    pub reference_model: bool,
}

/// One unmet expectation (or a crash), with where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub what: String,
    pub who: Option<String>,
    pub tick: Option<u64>,
    pub time: Option<u64>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut at = Vec::new();
        if let Some(t) = self.tick {
            at.push(format!("tick {t}"));
        }
        if let Some(t) = self.time {
            at.push(format!("t={t}ms"));
        }
        if let Some(w) = &self.who {
            at.push(w.clone());
        }
        if at.is_empty() {
            write!(f, "{}", self.what)
        } else {
            write!(f, "[{}] {}", at.join(", "), self.what)
        }
    }
}

/// What happened in a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub name: String,
    pub seed: u64,
    pub failures: Vec<Failure>,
    /// Engine invariant violations (also listed in `failures`).
    pub violations: Vec<String>,
    /// What clients saw that the delivery guarantees forbid — duplicate, reordered or missing
    /// seq'd events (also listed in `failures`).
    pub client_violations: Vec<String>,
    /// Where the engine disagreed with the reference model (also listed in `failures`).
    pub model_violations: Vec<String>,
    /// Ticks and responses the reference model checked (zeros when it was off).
    pub model_checked: (u64, u64),
    /// Panic message, if the engine (or runner) panicked.
    pub panic: Option<String>,
    pub transcript: String,
    /// Per participant: every frame received that is not a response, in order (for comparing
    /// transports).
    pub events: BTreeMap<String, Vec<String>>,
    /// The engine's state digest after the last tick (empty when there is no engine).
    pub digest: String,
    pub ticks: u64,
    pub virtual_ms: u64,
    pub wall: Duration,
    /// Wall time spent inside `Engine::tick` (the engine's share of `wall`; benchmarks).
    pub engine_wall: Duration,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether the engine itself failed (panic, invariant violation, or a client saw a delivery
    /// guarantee broken), as the simulator counts.
    pub fn crashed(&self) -> bool {
        self.panic.is_some()
            || !self.violations.is_empty()
            || !self.client_violations.is_empty()
            || !self.model_violations.is_empty()
    }
}

/// Runs one scenario. Never panics: panics inside are caught and reported as failures.
pub fn run_scenario(scenario: &Scenario, options: &RunOptions) -> RunReport {
    run_scenario_reusing(scenario, options, &mut Reuse::default())
}

/// What runs of scenarios on one thread share: set-up that many runs need alike and that no run
/// changes. The simulator runs hundreds of flows per thread, and making and removing their
/// workspace directories was a good part of a short flow's cost.
#[derive(Default)]
pub struct Reuse {
    /// Workspace directories made by earlier runs, by the definitions they were made from.
    workspaces: Vec<(Vec<WorkspaceDef>, Rc<tempfile::TempDir>)>,
}

impl Reuse {
    /// At most this many sets of workspace directories are kept (the simulator's flows use two).
    const KEPT: usize = 4;

    /// Directories already holding exactly `sc`'s workspaces, when `sc` may read them: a run
    /// with an external agent (a program that may write into its workspace) gets its own.
    fn workspaces_for(&self, sc: &Scenario) -> Option<Rc<tempfile::TempDir>> {
        if sc.uses_external_agents() {
            return None;
        }
        self.workspaces.iter().find(|(defs, _)| *defs == sc.workspaces).map(|(_, dir)| dir.clone())
    }

    /// Keeps `dir`, made for `sc`'s workspaces, for later runs with the same ones.
    fn keep_workspaces(&mut self, sc: &Scenario, dir: Rc<tempfile::TempDir>) {
        if sc.uses_external_agents() || self.workspaces.len() >= Self::KEPT {
            return;
        }
        self.workspaces.push((sc.workspaces.clone(), dir));
    }
}

/// Like [`run_scenario`], with what earlier runs on this thread left in `reuse` (and leaving
/// there what later ones may use). A run's transcript and report are the same either way.
pub fn run_scenario_reusing(scenario: &Scenario, options: &RunOptions, reuse: &mut Reuse) -> RunReport {
    let started = Instant::now();
    let seed = options.seed.or(scenario.seed).unwrap_or(1);
    let shared = reuse.workspaces_for(scenario);
    let made_here = shared.is_none();
    let mut runner = Runner::new(scenario, seed, options.transport, !options.no_invariants, shared);
    if options.reference_model {
        runner.model = Some(ModelCheck::new(&runner.config));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run()));
    let panic = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            runner.fail(None, e);
            // Without an engine (it or its transport failed to start) there is nothing to check.
            runner.stopped |= runner.engine.is_none();
            None
        }
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            let (tick, now) = (runner.tick, runner.now);
            runner.failures.push(Failure {
                what: format!("panic: {msg}"),
                who: None,
                tick: Some(tick),
                time: Some(now),
            });
            Some(msg)
        }
    };
    if made_here && runner.workspaces_made {
        reuse.keep_workspaces(scenario, runner.tmp.clone());
    }
    if panic.is_none() && !runner.stopped {
        runner.check_delivery_at_end();
        runner.check_acknowledged_are_stored();
        runner.check_storage_at_end();
    }
    if panic.is_none() && !options.ignore_expectations && !runner.stopped {
        let failures = expect::check_all(&mut runner);
        runner.failures.extend(failures);
    }
    let digest = runner.final_digest(panic.as_deref());
    let has_digest = panic.is_none() && runner.engine.is_some();
    let transcript = runner.transcript(&digest);
    let events = runner.event_sequences();
    RunReport {
        name: scenario.name.clone(),
        seed,
        failures: runner.failures.clone(),
        violations: runner.violations.clone(),
        client_violations: runner.client_violations.clone(),
        model_violations: runner.model.as_ref().map(|m| m.violations.clone()).unwrap_or_default(),
        model_checked: runner.model.as_ref().map(|m| (m.ticks, m.responses)).unwrap_or_default(),
        panic,
        transcript,
        events,
        digest: if has_digest { runner.normalise(&digest) } else { String::new() },
        ticks: runner.tick,
        virtual_ms: runner.now,
        wall: started.elapsed(),
        engine_wall: runner.engine_wall,
    }
}

/// Text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}

mod storage;

/// A fresh store for a run: SQLite in memory, so a host restart reloads committed state, behind
/// a [`FaultyStore`](crate::store::fault::FaultyStore) whose switch the `storage_fault` steps
/// turn on and off.
fn new_store() -> Result<(Box<dyn Store>, Arc<std::sync::atomic::AtomicBool>), String> {
    let store =
        crate::store::SqliteStore::open_in_memory().map_err(|e| format!("cannot open the in-memory store: {e}"))?;
    let (store, switch) = crate::store::fault::FaultyStore::new(Box::new(store));
    Ok((Box::new(store), switch))
}

/// A session as `[final]` checks it.
pub struct SessionAtEnd {
    pub session: Session,
    pub lock: TurnLock,
    /// Its messages as the store committed them, oldest first.
    pub stored: Vec<MessageRow>,
}

/// A frame a client received, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub tick: u64,
    pub time: u64,
    pub conn_index: usize,
    pub json: Value,
}

/// Why a request was sent (to route its response).
#[derive(Clone, Debug)]
enum Purpose {
    /// Sent by a step (index into the expanded steps).
    Step(usize),
    /// Sent by setup or a client auto-behaviour.
    Auto,
}

#[derive(Clone, Debug)]
struct Pending {
    method: String,
    purpose: Purpose,
    /// For join/leave: the session.
    session: Option<String>,
    /// For mint/rotate: the share label.
    label: Option<String>,
    /// For add_workspace: the workspace name.
    workspace: Option<String>,
    /// A setup authentication: once admitted, open the other connections and join sessions.
    setup: bool,
    /// A reconnect: once authenticated, rejoin every session with `since_seq`.
    rejoin: bool,
    /// For join: the `since_seq` sent, and the highest seq the connection had received then.
    join_since: Option<u64>,
    join_seen: u64,
    /// When the client sent it, among all its requests (to order a late answer).
    order: u64,
    /// The params it was sent with (a well-behaved client sends its own requests again after
    /// `storage_unavailable`).
    params: Value,
    /// The tick that handles it (the next one when it was sent).
    tick: u64,
}

/// What one connection received of one session's seq'd events: the client-side delivery checks
/// (docs/SCENARIOS.md, "Client-side checks").
#[derive(Clone, Debug, Default)]
struct SeqTrack {
    /// Highest seq received on this connection (0: none yet).
    last: u64,
    /// The seq the next event must carry, while the connection is in the session and in sync
    /// (`None` before the join's catch-up, after `resync_required` or leaving).
    next: Option<u64>,
    /// A join answered `catch_up: "snapshot"`: the `snapshot` event sets `next`.
    awaiting_snapshot: bool,
    /// A violation was reported for this connection and session (one is enough).
    reported: bool,
}

/// One connection of a client.
struct Conn {
    id: ConnId,
    end: Arc<dyn ClientEnd>,
    open: bool,
    authed: bool,
    /// Runner-chosen request ids, increasing per connection.
    next_req: u64,
    /// Pending requests by the JSON text of their id.
    pending: BTreeMap<String, Pending>,
    /// Frames of the client end already read.
    read: usize,
    /// Per session: what this connection received (client-side checks).
    streams: BTreeMap<String, SeqTrack>,
    /// Made slow by a `slow` step and not released since.
    slow: bool,
    /// Per session: the running turn's preview as this connection saw it from its start (agent
    /// deltas) and the agent's messages posted in it, to check that the deltas add up to a
    /// prefix of the reply. `None` when it cannot be checked (joined mid-turn, was slow, resynced).
    previews: BTreeMap<String, Option<Preview>>,
    /// Per session: the `last_seq` its latest join answered; events up to it are a replay.
    replayed_until: BTreeMap<String, u64>,
    /// The host's first connection, open before any session existed: it receives every session's
    /// events from seq 1 without joining.
    sees_all: bool,
    /// What the latest `storage` event said (`available`) and in which tick it came, if any.
    storage: Option<(bool, u64)>,
}

/// One turn's streamed preview and posted reply on one connection.
#[derive(Clone, Debug, Default)]
struct Preview {
    turn: u64,
    deltas: String,
    posted: String,
}

/// A participant as the runner models its client program.
pub(crate) struct Client {
    pub handle: String,
    pub def: Option<ParticipantDef>,
    pub display_name: String,
    ip: String,
    pub pid: Option<String>,
    pub assigned_name: Option<String>,
    /// The client program's protocol state — the same `ClientSession` `roundtable join` and the
    /// window drive: resume token, followed sessions and the last seq of each, and what an event
    /// calls for (rejoins after `resync_required` or a gap, a fresh join after
    /// `history_replaced`, entering after admission). Fed every frame of every connection.
    program: ClientSession,
    conns: Vec<Conn>,
    /// Sessions whose seqs up to N are covered by a snapshot or `none` catch-up.
    covered_to: BTreeMap<String, u64>,
    /// Requests sent so far (every connection).
    sent_requests: u64,
    /// Per session: when (in [`Client::sent_requests`] order) the latest acknowledged
    /// `leave_session` was sent. A join sent before it but answered after it (a slow connection)
    /// does not make the client a member again.
    left_at: BTreeMap<String, u64>,
    /// Seqs received, per session (the checker's record; the program's view is `program`).
    seqs: BTreeMap<String, BTreeSet<u64>>,
    /// Sessions to join once admitted.
    want_join: Vec<String>,
    pub admitted: bool,
    msg_counter: u64,
    /// Transcript lines, in order.
    log: Vec<String>,
    /// Frames received, in order.
    pub seen: Vec<Seen>,
    /// Reasons the host closed this client's connections with, in order.
    pub closed_by_host: Vec<String>,
}

/// The id a request goes by in the client program: connections number their requests apart.
fn program_id(index: usize, id: &Value) -> Value {
    json!(format!("{index}:{id}"))
}

impl Client {
    /// The resume token the program keeps.
    fn resume(&self) -> Option<String> {
        self.program.resume_token().map(str::to_string)
    }

    /// Last seq such that every seq up to it was seen (replayed, live or via snapshot).
    pub fn last_seq(&self, session: &str) -> u64 {
        let mut last = self.covered_to.get(session).copied().unwrap_or(0);
        if let Some(seqs) = self.seqs.get(session) {
            while seqs.contains(&(last + 1)) {
                last += 1;
            }
        }
        last
    }

    /// Seqs in `1..=last` this client never received.
    pub fn missing_seqs(&self, session: &str, last: u64) -> Vec<u64> {
        let covered = self.covered_to.get(session).copied().unwrap_or(0);
        let seqs = self.seqs.get(session);
        (covered + 1..=last).filter(|n| !seqs.is_some_and(|s| s.contains(n))).collect()
    }

    fn latest_open(&self) -> Option<usize> {
        self.conns.iter().rposition(|c| c.open)
    }
}

/// The outcome recorded for a step.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepRecord {
    pub executed: Option<(u64, u64)>,
    pub response: Option<(u64, u64, Value)>,
    pub error: Option<String>,
    /// Participant id of every handle when the step ran: `$ann` in the step's `then` means who
    /// `ann` was then, even if `ann` later came back as a new participant.
    pub pids: BTreeMap<String, String>,
}

/// `text` with each of `names` (a temporary directory's spellings) replaced by `$TMP`.
fn normalise_with(names: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for name in names {
        if out.contains(name.as_str()) {
            out = out.replace(name.as_str(), "$TMP");
        }
    }
    out
}

/// Runs one scenario against one engine.
pub(crate) struct Runner<'a> {
    pub sc: &'a Scenario,
    pub seed: u64,
    config: EngineConfig,
    pub engine: Option<Engine>,
    transport_kind: TransportKind,
    /// Created with the engine (a transport failing to start fails the run, not the constructor).
    transport: Option<Box<dyn Transport>>,
    conn_ids: Arc<ConnIds>,
    clock: Arc<VirtualTime>,
    pub tick: u64,
    pub now: u64,
    tick_ms: u64,
    jump: u64,
    /// How far the host's wall clock is from virtual time (`wall_step`): read by the next engine
    /// start, as a restarted host reads its wall clock.
    wall_offset: i64,
    /// The running engine's clock (the host's own arithmetic, `engine::clock`), over virtual time.
    engine_clock: EngineClock,
    pub clients: BTreeMap<String, Client>,
    pub tokens: BTreeMap<String, String>,
    old_tokens: BTreeMap<String, String>,
    pub share_ids: BTreeMap<String, String>,
    pub workspace_ids: BTreeMap<String, String>,
    workspace_dirs: BTreeMap<String, PathBuf>,
    pub latest_vote: Option<String>,
    pub steps: Vec<(usize, Step)>,
    pub records: Vec<StepRecord>,
    pub failures: Vec<Failure>,
    pub violations: Vec<String>,
    /// Client-side delivery violations (also in `failures`).
    pub client_violations: Vec<String>,
    /// Acknowledged `send_message`s: message id → (session, seq), to check against the store at
    /// the end (stored exactly once, ids never reused, even across host restarts).
    acked: BTreeMap<String, (String, u64)>,
    /// Per session: the seq of the latest `history_replaced` any client saw. An acknowledgement
    /// that arrives late (a slow client) for a message older than the clear is not expected in
    /// the store.
    cleared_at: BTreeMap<String, u64>,
    /// Set when the run cannot continue meaningfully (setup failed, engine crashed).
    pub stopped: bool,
    /// A temporary directory holding the scenario's workspaces, removed when the run ends (or,
    /// when shared through [`Reuse`], when the last run using it has ended).
    tmp: Rc<tempfile::TempDir>,
    /// Whether `tmp` holds the scenario's workspaces (made by this run or an earlier one).
    workspaces_made: bool,
    /// Wall time spent inside `Engine::tick`.
    engine_wall: Duration,
    /// While a step's `then` is checked: the handles' participant ids when the step ran.
    pub(crate) bound_pids: Option<BTreeMap<String, String>>,
    restarts: u32,
    /// The next tick commits and then "dies" before sending (a `crash_after_commit` step).
    crash_next_tick: bool,
    /// Output of the real external agents, when the scenario runs any (see [`super::agents`]).
    agents: Option<AgentPump>,
    /// The reference model's check, when the run uses it.
    model: Option<ModelCheck>,
    /// Storage faults: the store's switch, and what the storage checks remember.
    storage: StorageFaults,
}

/// The engine checked against the reference model ([`super::model`]) tick by tick.
struct ModelCheck {
    rules: model::Rules,
    /// The queries of the projection, kept between ticks.
    projector: model::Projector,
    /// The engine's state after the previous tick (`None` right after an engine start: the
    /// first tick of an engine is not predicted).
    before: Option<model::State>,
    /// Predicted responses not received yet, by (connection, request id).
    expected: BTreeMap<(ConnId, String), model::Predicted>,
    violations: Vec<String>,
    /// Ticks predicted and responses compared.
    ticks: u64,
    responses: u64,
}

impl ModelCheck {
    fn new(config: &EngineConfig) -> ModelCheck {
        ModelCheck {
            rules: model::Rules::from_config(config),
            projector: model::Projector::default(),
            before: None,
            expected: BTreeMap::new(),
            violations: Vec::new(),
            ticks: 0,
            responses: 0,
        }
    }
}

impl<'a> Runner<'a> {
    /// A runner for `sc`; `workspaces`: a directory already holding `sc`'s workspaces.
    pub fn new(
        sc: &'a Scenario,
        seed: u64,
        transport: TransportKind,
        check_invariants: bool,
        workspaces: Option<Rc<tempfile::TempDir>>,
    ) -> Runner<'a> {
        let h = &sc.host;
        let defaults = EngineConfig::default();
        let config = EngineConfig {
            seed,
            grace_ms: h.grace_ms.unwrap_or(defaults.grace_ms),
            auth_timeout_ms: h.auth_timeout_ms.unwrap_or(defaults.auth_timeout_ms),
            auth_failures_per_minute: h.auth_failures_per_minute.unwrap_or(defaults.auth_failures_per_minute),
            host_name: h.name.clone(),
            default_consensus: h.default_consensus,
            default_vote_deadline_ms: h.vote_deadline_ms,
            max_file_bytes: h.max_file_bytes.unwrap_or(defaults.max_file_bytes),
            check_invariants,
            ..defaults
        };
        let workspaces_made = workspaces.is_some();
        let tmp =
            workspaces.unwrap_or_else(|| {
                Rc::new(tempfile::Builder::new().prefix("roundtable-scenario-").tempdir().unwrap_or_else(|e| {
                    panic!("cannot create a temporary directory for the scenario's workspaces: {e}")
                }))
            });
        let steps = sc.expanded_steps();
        let records = vec![StepRecord::default(); steps.len()];
        Runner {
            sc,
            seed,
            config,
            engine: None,
            transport_kind: transport,
            transport: None,
            conn_ids: ConnIds::new(),
            clock: Arc::new(VirtualTime::default()),
            tick: 0,
            now: 0,
            tick_ms: sc.tick_ms.unwrap_or(DEFAULT_TICK_MS),
            jump: 0,
            wall_offset: 0,
            engine_clock: EngineClock::start(0, 0, Duration::ZERO),
            clients: BTreeMap::new(),
            tokens: BTreeMap::new(),
            old_tokens: BTreeMap::new(),
            share_ids: BTreeMap::new(),
            workspace_ids: BTreeMap::new(),
            workspace_dirs: BTreeMap::new(),
            latest_vote: None,
            steps,
            records,
            failures: Vec::new(),
            violations: Vec::new(),
            client_violations: Vec::new(),
            acked: BTreeMap::new(),
            cleared_at: BTreeMap::new(),
            stopped: false,
            tmp,
            workspaces_made,
            restarts: 0,
            crash_next_tick: false,
            agents: None,
            model: None,
            storage: StorageFaults::default(),
            engine_wall: Duration::ZERO,
            bound_pids: None,
        }
    }

    pub fn fail(&mut self, who: Option<&str>, what: impl Into<String>) {
        self.failures.push(Failure {
            what: what.into(),
            who: who.map(str::to_string),
            tick: Some(self.tick),
            time: Some(self.now),
        });
    }

    /// The whole run: setup, the timed loop, a final settle.
    pub fn run(&mut self) -> Result<(), String> {
        self.make_workspace_dirs()?;
        self.start_engine()?;
        self.setup()?;
        // (A storage fault's window counts as a step: the run settles after the store heals.)
        let last_step = self.steps.iter().map(|(_, s)| storage::step_end(s)).max().unwrap_or(0);
        let last_connect = self.sc.participants.iter().map(|p| p.connect_at).max().unwrap_or(0);
        let end = last_step.max(last_connect) + self.sc.settle_ms.unwrap_or(DEFAULT_SETTLE_MS);
        let mut next_step = 0;
        let mut connected: BTreeSet<String> =
            self.sc.participants.iter().filter(|p| p.connect_at == 0).map(|p| p.name.clone()).collect();
        loop {
            // Participants arriving later.
            for p in &self.sc.participants {
                if p.connect_at <= self.now && !connected.contains(&p.name) {
                    connected.insert(p.name.clone());
                    self.connect_participant(&p.name);
                }
            }
            self.send_due_retries();
            while next_step < self.steps.len() && self.steps[next_step].1.at <= self.now {
                self.exec_step(next_step);
                next_step += 1;
            }
            self.do_tick();
            if self.stopped {
                return Ok(());
            }
            if self.now >= end && next_step >= self.steps.len() {
                return Ok(());
            }
            self.now += self.tick_ms + std::mem::take(&mut self.jump);
        }
    }

    fn engine(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("engine running")
    }

    fn transport(&mut self) -> &mut dyn Transport {
        self.transport.as_deref_mut().expect("transport running")
    }

    /// Installs the workspace file reader, the built-in demo agent, and the real external agents when the scenario runs
    /// any, in a (new) engine.
    fn install_agents(&mut self, engine: &mut Engine) {
        engine.set_workspace_files(Box::new(crate::store::ConfinedFiles));
        crate::agent::install_builtin(engine);
        self.agents = None;
        if self.sc.uses_external_agents() {
            let (pump, runtime) = AgentPump::new();
            engine.set_agent_runtime(Box::new(runtime));
            self.agents = Some(pump);
        }
    }

    fn start_engine(&mut self) -> Result<(), String> {
        let (store, switch) = new_store()?;
        self.storage.switch = switch;
        let mut engine = Engine::new(self.config.clone(), store).map_err(|e| format!("engine start: {e}"))?;
        self.start_clock(&engine);
        self.install_agents(&mut engine);
        if self.model.is_some() {
            engine.record_journal();
        }
        let mut transport = new_transport(self.transport_kind, self.conn_ids.clone(), self.clock.clone())?;
        transport.attach(engine.sender())?;
        self.transport = Some(transport);
        self.engine = Some(engine);
        Ok(())
    }

    /// A (re)started engine reads the host's wall clock once, as the host does.
    fn start_clock(&mut self, engine: &Engine) {
        let wall = self.now.saturating_add_signed(self.wall_offset);
        self.engine_clock = EngineClock::start(wall, engine.now(), Duration::from_millis(self.now));
    }

    /// The engine's time at the current virtual time: virtual time itself unless a `wall_step`
    /// moved a restarted engine's start.
    fn engine_now(&self) -> u64 {
        self.engine_clock.now_ms(Duration::from_millis(self.now))
    }

    /// One engine tick at the current virtual time, then every client reads what it received.
    pub fn do_tick(&mut self) {
        self.tick += 1;
        // Agent output enters like any other input, after this tick's steps, once every working
        // agent has paused (see `super::agents`).
        if let Some(pump) = self.agents.as_mut() {
            match pump.collect() {
                Ok(outputs) => {
                    for out in outputs {
                        self.transport().send_local(Inbound::Agent(out));
                    }
                }
                Err(e) => {
                    self.fail(None, e);
                    self.stopped = true;
                    return;
                }
            }
        }
        if let Err(e) = self.transport().before_tick() {
            self.fail(None, e);
            self.stopped = true;
            return;
        }
        self.clock.set(self.tick, self.now);
        let store_fails = self.storage.switch_for(self.now);
        let now = self.engine_now();
        let ticking = Instant::now();
        if std::mem::take(&mut self.crash_next_tick) {
            // Committed, never sent; then the host comes back from its store and everyone
            // reconnects (a crash between the commit and the send).
            self.engine().tick_and_crash_after_commit(now);
            self.engine_wall += ticking.elapsed();
            if let Err(e) = self.restart_host(true) {
                self.fail(None, e);
                self.stopped = true;
            }
            return;
        }
        self.engine().tick(now);
        self.engine_wall += ticking.elapsed();
        self.check_model(now, store_fails);
        let was_failing = self.storage_after_tick();
        if let Err(e) = self.transport().after_tick() {
            self.fail(None, e);
            self.stopped = true;
            return;
        }
        self.collect();
        self.check_storage_notices(was_failing);
        let v = self.engine().violations();
        if v.len() > self.violations.len() {
            let seen = self.violations.len();
            for msg in &v[seen..] {
                self.fail(None, format!("invariant violated: {msg}"));
            }
            self.violations = v;
            self.stopped = true;
        }
    }

    /// Replays the tick's inputs through the reference model from the state before the tick,
    /// and compares the state after it; keeps the predicted responses for the clients' checks.
    fn check_model(&mut self, now: u64, store_fails: bool) {
        let Some(mut m) = self.model.take() else { return };
        let engine = self.engine.as_mut().expect("engine running");
        let journal = engine.take_journal();
        let after = m.projector.project(&mut engine.world);
        if let Some(before) = m.before.take() {
            let predicted = model::step(before, &journal, now, &m.rules, store_fails);
            m.ticks += 1;
            for d in predicted.state.differences(&after, &predicted.uncertain) {
                self.model_violation(&mut m, d);
            }
            for mut p in predicted.responses {
                // Two requests in flight with the same id on one connection (a raw frame can
                // reuse an id): their answers cannot be told apart, so either is accepted.
                if let Some(earlier) = m.expected.get(&(p.conn, p.id.clone())) {
                    if earlier.code != p.code {
                        p.code = model::ANY.to_string();
                    }
                }
                m.expected.insert((p.conn, p.id.clone()), p);
            }
        } else {
            // Not predicted (an engine's first tick): its requests may be answered anything,
            // but their ids stay reserved so that a later request reusing one is told apart.
            for (conn, id) in model::request_ids(&journal) {
                let method = "(unpredicted)".to_string();
                let code = model::ANY.into();
                m.expected.insert((conn, id.clone()), model::Predicted { conn, id, method, code, held: false });
            }
        }
        m.before = Some(after);
        self.model = Some(m);
    }

    fn model_violation(&mut self, m: &mut ModelCheck, what: String) {
        // The first few are enough to diagnose; the run goes on (each tick is checked from the
        // engine's own state).
        if m.violations.len() < 5 {
            let what = format!("the reference model disagrees: {what}");
            self.fail(None, what.clone());
            m.violations.push(format!("tick {}: {what}", self.tick));
        }
    }

    /// A response against the model's prediction for it, if it made one.
    fn check_response(&mut self, conn: ConnId, id: &Value, json: &Value) {
        let Some(mut m) = self.model.take() else { return };
        let predicted = m.expected.remove(&(conn, id.to_string()));
        // A success of the tick whose commit failed, answered while the store still fails: it
        // acknowledges what is not stored (docs/RELIABILITY.md, "Storage faults").
        if let Some(p) = predicted.as_ref().filter(|p| p.held && json.get("result").is_some()) {
            if m.before.as_ref().is_some_and(|s| s.storage.is_some()) {
                let what = format!(
                    "{} on {conn} (id {}) was answered ok while the store still fails: its tick's writes are not stored yet",
                    p.method, p.id
                );
                self.model_violation(&mut m, what);
            }
        }
        if let Some(p) = predicted.filter(|p| p.code != model::ANY) {
            m.responses += 1;
            let code = match json.pointer("/error/code").and_then(Value::as_str) {
                Some(c) => c.to_string(),
                None => "ok".to_string(),
            };
            if code != p.code {
                let detail = json.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                self.model_violation(
                    &mut m,
                    format!(
                        "{} on {conn} (id {}): model says {}, engine answered {code} {detail}",
                        p.method, p.id, p.code
                    ),
                );
            }
        }
        self.model = Some(m);
    }

    // ------------------------------------------------------------------------------------
    // Setup
    // ------------------------------------------------------------------------------------

    fn make_workspace_dirs(&mut self) -> Result<(), String> {
        let root = self.tmp.path().to_path_buf();
        if self.workspaces_made {
            for ws in &self.sc.workspaces {
                self.workspace_dirs.insert(ws.name.clone(), root.join(format!("ws-{}", sanitize(&ws.name))));
            }
            return Ok(());
        }
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        for ws in &self.sc.workspaces {
            let dir = root.join(format!("ws-{}", sanitize(&ws.name)));
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (rel, content) in &ws.files {
                write_file(&dir.join(rel), content)?;
            }
            for (rel, content) in &ws.outside_files {
                write_file(&root.join(rel), content)?;
            }
            #[cfg(unix)]
            for (link, target) in &ws.symlinks {
                let path = dir.join(link);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::os::unix::fs::symlink(target, &path).map_err(|e| format!("symlink {link}: {e}"))?;
            }
            self.workspace_dirs.insert(ws.name.clone(), dir);
        }
        self.workspaces_made = true;
        Ok(())
    }

    /// Host, workspaces, sessions, shares, then the participants that connect at 0.
    fn setup(&mut self) -> Result<(), String> {
        self.clients.insert("host".into(), self.new_client("host", None, 0));
        for (i, p) in self.sc.participants.iter().enumerate() {
            self.clients.insert(p.name.clone(), self.new_client(&p.name, Some(p.clone()), i + 1));
        }
        self.open_host_conn();
        for ws in &self.sc.workspaces {
            let dir = self.workspace_dirs[&ws.name].display().to_string();
            let mut agent = match ws.agent.as_deref().unwrap_or("demo") {
                "demo" => json!({"kind": "demo"}),
                "command" => json!({"kind": "command", "command": "/bin/false"}),
                other => json!({"kind": other}),
            };
            if let Some(cmd) = &ws.agent_cmd {
                agent["command"] = json!(self.resolve_str(cmd)?);
            }
            if !ws.agent_args.is_empty() {
                let args: Vec<String> = ws.agent_args.iter().map(|a| self.resolve_str(a)).collect::<Result<_, _>>()?;
                agent["args"] = json!(args);
            }
            let params = json!({"name": ws.name, "dir": dir, "agent": agent});
            let p = Pending { workspace: Some(ws.name.clone()), ..pending("add_workspace", Purpose::Auto) };
            self.request("host", None, "add_workspace", params, p);
        }
        self.setup_tick()?;
        for (i, s) in self.sc.sessions.iter().enumerate() {
            let ws = self.workspace_id(&s.workspace).ok_or(format!(
                "session {}: unknown workspace `{}`",
                i + 1,
                s.workspace
            ))?;
            let mut params = json!({"workspace_id": ws, "title": s.title});
            if let Some(d) = s.vote_deadline_ms {
                params["vote_deadline_ms"] = json!(d);
            }
            self.request("host", None, "create_session", params, pending("create_session", Purpose::Auto));
        }
        for sh in &self.sc.shares {
            let params = self.share_params(sh)?;
            let p = Pending { label: Some(sh.label.clone()), ..pending("mint_share", Purpose::Auto) };
            self.request("host", None, "mint_share", params, p);
        }
        self.setup_tick()?;
        if self.sc.host.join {
            for i in 0..self.sc.sessions.len() {
                let sid = SessionId::nth(i as u64 + 1).to_string();
                self.join("host", None, &sid, None, Purpose::Auto);
            }
        }
        let first: Vec<String> =
            self.sc.participants.iter().filter(|p| p.connect_at == 0).map(|p| p.name.clone()).collect();
        for name in &first {
            self.connect_participant(name);
        }
        // Authentication, extra connections and joins take a few ticks; all at t=0.
        for _ in 0..6 {
            self.setup_tick()?;
        }
        Ok(())
    }

    fn setup_tick(&mut self) -> Result<(), String> {
        self.do_tick();
        if self.stopped {
            return Err("engine failed during setup".into());
        }
        // Every setup request must have succeeded.
        let errors: Vec<String> = self
            .clients
            .values()
            .flat_map(|c| c.seen.iter().map(move |s| (c, s)))
            .filter(|(_, s)| s.tick == self.tick && s.json.get("error").is_some())
            .filter(|(c, _)| c.handle == "host")
            .map(|(_, s)| s.json.to_string())
            .collect();
        if let Some(e) = errors.first() {
            return Err(format!("setup request failed: {e}"));
        }
        Ok(())
    }

    fn new_client(&self, handle: &str, def: Option<ParticipantDef>, index: usize) -> Client {
        let display_name = match &def {
            Some(d) => d.display_name.clone().unwrap_or_else(|| capitalise(handle)),
            None => self.sc.host.name.clone(),
        };
        let ip = def
            .as_ref()
            .and_then(|d| d.addr.clone())
            .unwrap_or_else(|| format!("10.0.{}.{}", index / 250, index % 250 + 1));
        Client {
            handle: handle.to_string(),
            def,
            display_name,
            ip,
            pid: if handle == "host" { Some("host".into()) } else { None },
            assigned_name: None,
            program: ClientSession::new(None),
            conns: Vec::new(),
            covered_to: BTreeMap::new(),
            sent_requests: 0,
            left_at: BTreeMap::new(),
            seqs: BTreeMap::new(),
            want_join: Vec::new(),
            admitted: handle == "host",
            msg_counter: 0,
            log: Vec::new(),
            seen: Vec::new(),
            closed_by_host: Vec::new(),
        }
    }

    fn share_params(&self, sh: &ShareDef) -> Result<Value, String> {
        let workspaces: Vec<String> = if sh.workspaces.is_empty() {
            self.sc.workspaces.iter().filter_map(|w| self.workspace_id(&w.name)).collect()
        } else {
            sh.workspaces
                .iter()
                .map(|w| self.workspace_id(w).ok_or(format!("share {}: unknown workspace `{w}`", sh.label)))
                .collect::<Result<_, _>>()?
        };
        let mut v = json!({
            "label": sh.label,
            "workspaces": workspaces,
            "collaborative": sh.collaborative,
            "consensus_required": sh.consensus_required,
            "admission_required": sh.admission_required,
            "role": sh.role,
        });
        if let Some(x) = sh.expires_in_ms {
            v["expires_in_ms"] = json!(x);
        }
        if let Some(x) = sh.max_uses {
            v["max_uses"] = json!(x);
        }
        if let Some(x) = sh.vote_deadline_ms {
            v["vote_deadline_ms"] = json!(x);
        }
        Ok(v)
    }

    /// A workspace id from a name or an id.
    pub fn workspace_id(&self, name_or_id: &str) -> Option<String> {
        self.workspace_ids
            .get(name_or_id)
            .cloned()
            .or_else(|| self.workspace_ids.values().any(|id| id == name_or_id).then(|| name_or_id.to_string()))
    }

    /// Sessions a participant joins by default: every declared session in its share's scope.
    fn default_joins(&self, def: &ParticipantDef) -> Vec<String> {
        if let Some(list) = &def.join {
            return list.clone();
        }
        let share = def.share.as_ref().and_then(|l| self.sc.shares.iter().find(|s| &s.label == l));
        let Some(share) = share else { return Vec::new() };
        let scope: BTreeSet<String> = if share.workspaces.is_empty() {
            self.workspace_ids.values().cloned().collect()
        } else {
            share.workspaces.iter().filter_map(|w| self.workspace_id(w)).collect()
        };
        self.sc
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| self.workspace_id(&s.workspace).is_some_and(|w| scope.contains(&w)))
            .map(|(i, _)| SessionId::nth(i as u64 + 1).to_string())
            .collect()
    }

    /// Opens the participant's setup connections and authenticates the first.
    fn connect_participant(&mut self, name: &str) {
        let def = self.clients[name].def.clone().expect("participants have a definition");
        let joins = self.default_joins(&def);
        self.clients.get_mut(name).expect("client").want_join = joins;
        for _ in 0..def.connections {
            self.open_conn(name);
        }
        if def.authenticate && def.connections > 0 {
            if let Some(share) = &def.share {
                let token = self.tokens.get(share).cloned().unwrap_or_default();
                let params = json!({"token": token, "display_name": self.clients[name].display_name});
                let p = Pending { setup: true, ..pending("authenticate", Purpose::Auto) };
                self.request(name, Some(0), "authenticate", params, p);
            }
        }
    }

    fn open_host_conn(&mut self) {
        let first = self.restarts == 0 && self.tick == 0;
        let (id, end) = self.transport().open_host();
        let c = self.clients.get_mut("host").expect("host client");
        c.log.push(format!("t={} {id} ** opened (host)", self.now));
        c.conns.push(Conn {
            id,
            end,
            open: true,
            authed: true,
            next_req: 1,
            pending: BTreeMap::new(),
            read: 0,
            streams: BTreeMap::new(),
            slow: false,
            previews: BTreeMap::new(),
            replayed_until: BTreeMap::new(),
            sees_all: first,
            storage: None,
        });
    }

    /// Opens a new unauthenticated connection for `name`; returns its index.
    fn open_conn(&mut self, name: &str) -> usize {
        let ip = self.clients[name].ip.clone();
        let (id, addr, end) = self.transport().open(&ip);
        let now = self.now;
        let c = self.clients.get_mut(name).expect("client");
        c.log.push(format!("t={now} {id} ** opened from {addr}"));
        c.conns.push(Conn {
            id,
            end,
            open: true,
            authed: false,
            next_req: 1,
            pending: BTreeMap::new(),
            read: 0,
            streams: BTreeMap::new(),
            slow: false,
            previews: BTreeMap::new(),
            replayed_until: BTreeMap::new(),
            sees_all: false,
            storage: None,
        });
        c.conns.len() - 1
    }

    /// Sends a request on a connection (default: the latest open one). Returns false when the
    /// client has no open connection.
    fn request(&mut self, name: &str, conn: Option<usize>, method: &str, params: Value, p: Pending) -> bool {
        let now = self.now;
        let c = self.clients.get_mut(name).expect("client");
        let Some(index) = conn.or_else(|| c.latest_open()) else { return false };
        let Some(cn) = c.conns.get_mut(index) else { return false };
        if !cn.open {
            return false;
        }
        let id = cn.next_req;
        cn.next_req += 1;
        let mut p = p;
        c.sent_requests += 1;
        p.order = c.sent_requests;
        if method == "join_session" {
            let session = params.get("session_id").and_then(Value::as_str).unwrap_or_default();
            p.join_since = params.get("since_seq").and_then(Value::as_u64);
            p.join_seen = cn.streams.get(session).map_or(0, |t| t.last);
            if let Ok(join) = serde_json::from_value::<JoinSessionParams>(params.clone()) {
                c.program.join_sent(&join, program_id(index, &json!(id)));
            }
        }
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        p.params = params;
        p.tick = self.tick + 1;
        let order = p.order;
        let sent = p.clone();
        cn.pending.insert(json!(id).to_string(), p);
        let conn_id = cn.id;
        c.log.push(format!("t={now} {conn_id} > {text}"));
        self.transport().send_frame(conn_id, text);
        self.note_message_sent(name, &sent, order);
        true
    }

    fn join(&mut self, name: &str, conn: Option<usize>, session: &str, since: Option<u64>, purpose: Purpose) -> bool {
        let mut params = json!({"session_id": session});
        if let Some(s) = since {
            params["since_seq"] = json!(s);
        }
        let p = Pending { session: Some(session.to_string()), ..pending("join_session", purpose) };
        self.request(name, conn, "join_session", params, p)
    }

    // ------------------------------------------------------------------------------------
    // Reading what the engine delivered
    // ------------------------------------------------------------------------------------

    fn collect(&mut self) {
        let names: Vec<String> = self.clients.keys().cloned().collect();
        for name in names {
            let nconns = self.clients[&name].conns.len();
            for index in 0..nconns {
                let (frames, closed, was_open, conn_id) = {
                    let cn = &self.clients[&name].conns[index];
                    (cn.end.delivered_since(cn.read), cn.end.closed_by_host(), cn.open, cn.id)
                };
                self.clients.get_mut(&name).expect("client").conns[index].read += frames.len();
                for d in frames {
                    let text: &str = &d.frame;
                    let json: Value = serde_json::from_str(text).unwrap_or_else(|_| json!({"unparsable": text}));
                    let c = self.clients.get_mut(&name).expect("client");
                    c.log.push(format!("t={} {} < {}", d.time, conn_id, text));
                    self.on_frame(&name, index, &json, text, d.tick, d.time);
                    // (Nothing in `on_frame` reads `seen`: the frame is recorded after it.)
                    let c = self.clients.get_mut(&name).expect("client");
                    c.seen.push(Seen { tick: d.tick, time: d.time, conn_index: index, json });
                }
                if let (Some(reason), true) = (closed, was_open) {
                    let now = self.now;
                    let c = self.clients.get_mut(&name).expect("client");
                    c.conns[index].open = false;
                    c.log.push(format!("t={now} {conn_id} ** closed by host: {reason}"));
                    c.closed_by_host.push(reason.clone());
                    // The transport reports the socket as gone, like a real one would.
                    self.transport().report_closed(conn_id);
                }
            }
        }
    }

    /// One frame a client read: `json` is `text` parsed.
    fn on_frame(&mut self, name: &str, index: usize, json: &Value, text: &str, tick: u64, time: u64) {
        if let Some(id) = json.get("id") {
            if json.get("result").is_some() || json.get("error").is_some() {
                let conn_id = self.clients[name].conns[index].id;
                self.check_response(conn_id, id, json);
                let key = id.to_string();
                let cn = &mut self.clients.get_mut(name).expect("client").conns[index];
                let mut p = cn.pending.remove(&key);
                if p.is_none() && id.is_null() {
                    // Frames refused before their id could be read (oversized) are answered
                    // with a null id: attribute it to the earliest raw step still waiting.
                    let raw = cn
                        .pending
                        .iter()
                        .filter(|(_, p)| p.method == "raw")
                        .min_by_key(|(_, p)| match p.purpose {
                            Purpose::Step(i) => i,
                            Purpose::Auto => usize::MAX,
                        })
                        .map(|(k, _)| k.clone());
                    p = raw.and_then(|k| cn.pending.remove(&k));
                }
                if let Some(p) = p {
                    if p.method == "join_session" {
                        // The join's catch-up (if any) follows from here.
                        let c = self.clients.get_mut(name).expect("client");
                        c.program.answered(&program_id(index, id), json.get("result").is_some());
                    }
                    self.on_response(name, index, p, json, tick, time);
                }
                return;
            }
        }
        let Some(event) = json.get("event").and_then(Value::as_str) else { return };
        let session = json.get("session_id").and_then(Value::as_str).map(str::to_string);
        let payload = json.get("payload").unwrap_or(&Value::Null);
        if let (Some(s), Some(seq)) = (&session, json.get("seq").and_then(Value::as_u64)) {
            let c = self.clients.get_mut(name).expect("client");
            c.seqs.entry(s.clone()).or_default().insert(seq);
            self.check_seq(name, index, s, seq, event);
            self.check_seq_is_stored(name, index, s, seq, event, payload);
        }
        if let Some(s) = &session {
            let seq = json.get("seq").and_then(Value::as_u64);
            self.track_preview(name, index, s, event, seq, payload);
        }
        let def = self.clients[name].def.as_ref();
        let auto_resync = def.is_none_or(|d| d.auto_resync);
        let auto_refetch = def.is_none_or(|d| d.auto_refetch);
        // What the client program makes of it (the rules `join` and the window follow).
        let then = match serde_json::from_str::<EventFrame>(text) {
            Ok(frame) => self.clients.get_mut(name).expect("client").program.event(&frame).then,
            Err(_) => Then::Nothing,
        };
        match event {
            "storage" => self.on_storage_event(name, index, payload),
            "vote_opened" => {
                if let Some(v) = payload.get("vote_id").and_then(Value::as_str) {
                    self.latest_vote = Some(v.to_string());
                }
            }
            "snapshot" => {
                let s = session.or_else(|| payload.pointer("/session/id").and_then(Value::as_str).map(str::to_string));
                if let (Some(s), Some(last)) = (s, payload.get("last_seq").and_then(Value::as_u64)) {
                    let c = self.clients.get_mut(name).expect("client");
                    let t = c.conns[index].streams.entry(s.clone()).or_default();
                    if t.awaiting_snapshot {
                        t.awaiting_snapshot = false;
                        t.next = Some(t.last.max(last) + 1);
                    }
                    let e = c.covered_to.entry(s).or_insert(0);
                    *e = (*e).max(last);
                }
            }
            "resync_required" => {
                // Events of the session stop on this connection until it rejoins.
                let c = self.clients.get_mut(name).expect("client");
                let streams = &mut c.conns[index].streams;
                match &session {
                    Some(s) => streams.entry(s.clone()).or_default().next = None,
                    None => streams.values_mut().for_each(|t| t.next = None),
                }
            }
            "history_replaced" if auto_refetch => {
                if let (Some(s), Some(seq)) = (&session, json.get("seq").and_then(Value::as_u64)) {
                    let at = self.cleared_at.entry(s.clone()).or_insert(0);
                    *at = (*at).max(seq);
                }
            }
            _ => {}
        }
        match then {
            Then::Join(joins) => {
                // A fresh join after `history_replaced`; a rejoin after `resync_required` or a gap.
                let allowed = |j: &JoinSessionParams| {
                    if j.since_seq.is_none() && event == "history_replaced" {
                        auto_refetch
                    } else {
                        auto_resync
                    }
                };
                for j in joins.into_iter().filter(allowed) {
                    self.join(name, Some(index), j.session_id.as_str(), j.since_seq, Purpose::Auto);
                }
            }
            Then::Enter => {
                let c = self.clients.get_mut(name).expect("client");
                c.admitted = true;
                let joins = c.want_join.clone();
                let authed: Vec<usize> = (0..c.conns.len()).filter(|&i| c.conns[i].open && c.conns[i].authed).collect();
                for i in authed {
                    for s in &joins {
                        self.join(name, Some(i), s, None, Purpose::Auto);
                    }
                }
            }
            Then::Refused | Then::Nothing => {}
        }
    }

    /// The deltas a connection received in a turn it saw from the start, joined, are a prefix of
    /// the agent's reply posted at its end (a dropped or doubled delta breaks that). Connections
    /// that were slow or resynced (deltas may be dropped there by design) are not checked.
    fn track_preview(
        &mut self,
        name: &str,
        index: usize,
        session: &str,
        event: &str,
        seq: Option<u64>,
        payload: &Value,
    ) {
        let cn = &mut self.clients.get_mut(name).expect("client").conns[index];
        // A replayed turn start: the deltas sent before this connection joined never reach it.
        let replayed = seq.is_some_and(|q| q <= cn.replayed_until.get(session).copied().unwrap_or(0));
        let slow = cn.slow || replayed;
        let entry = cn.previews.entry(session.to_string()).or_insert(None);
        match event {
            "turn_started" => {
                let turn = payload.get("turn_id").and_then(Value::as_u64).unwrap_or(0);
                *entry = (!slow).then(|| Preview { turn, ..Preview::default() });
            }
            "agent_delta" => {
                let turn = payload.get("turn_id").and_then(Value::as_u64).unwrap_or(0);
                if slow || entry.as_ref().is_some_and(|p| p.turn != turn) {
                    *entry = None;
                } else if let Some(p) = entry.as_mut() {
                    p.deltas.push_str(payload.get("text").and_then(Value::as_str).unwrap_or(""));
                }
            }
            "message" if payload.get("author_id").and_then(Value::as_str) == Some("agent") => {
                if let Some(p) = entry.as_mut() {
                    p.posted.push_str(payload.get("text").and_then(Value::as_str).unwrap_or(""));
                }
            }
            "snapshot" | "resync_required" | "history_replaced" => *entry = None,
            "turn_ended" => {
                let turn = payload.get("turn_id").and_then(Value::as_u64).unwrap_or(0);
                if let Some(p) = entry.take().filter(|p| p.turn == turn && !slow) {
                    // Secrets are masked differently in a stream than in a whole text.
                    let masked =
                        p.posted.contains(crate::engine::mask::MASK) || p.deltas.contains(crate::engine::mask::MASK);
                    if !masked && !p.posted.starts_with(&p.deltas) {
                        let what = format!(
                            "turn {turn}: the agent_delta texts ({} bytes) are not a prefix of the agent's reply ({} bytes)",
                            p.deltas.len(),
                            p.posted.len()
                        );
                        self.client_violation(name, index, session, what);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_response(&mut self, name: &str, index: usize, p: Pending, json: &Value, tick: u64, time: u64) {
        if let Purpose::Step(i) = p.purpose {
            self.records[i].response = Some((tick, time, json.clone()));
        }
        if json.pointer("/error/code").and_then(Value::as_str) == Some("storage_unavailable") {
            self.on_storage_refusal(name, index, &p, json);
        }
        let Some(result) = json.get("result") else { return };
        self.note_acknowledged(name, &p, result);
        match p.method.as_str() {
            "authenticate" => {
                let first_auth = self.clients[name].pid.is_none();
                let c = self.clients.get_mut(name).expect("client");
                c.conns[index].authed = true;
                c.pid = result.get("participant_id").and_then(Value::as_str).map(str::to_string).or(c.pid.take());
                c.assigned_name = result.get("display_name").and_then(Value::as_str).map(str::to_string);
                if let Ok(auth) = serde_json::from_value::<AuthenticateResult>(result.clone()) {
                    c.program.authenticated(&auth);
                }
                let admitted = result.get("admission").and_then(Value::as_str) == Some("admitted");
                c.admitted = admitted;
                let resumed = result.get("resumed").and_then(Value::as_bool).unwrap_or(false);
                if !admitted {
                    return;
                }
                if p.rejoin {
                    // A client waits for the authentication before rejoining where it was,
                    // asking only for what it missed.
                    for j in c.program.rejoins() {
                        self.join(name, Some(index), j.session_id.as_str(), j.since_seq, Purpose::Auto);
                    }
                    return;
                }
                if p.setup {
                    // Setup: extra connections authenticate with the resume token, then every
                    // connection joins the participant's sessions.
                    if first_auth && !resumed {
                        let extra: Vec<usize> = (0..c.conns.len())
                            .filter(|&i| i != index && c.conns[i].open && !c.conns[i].authed)
                            .collect();
                        let share = c.def.as_ref().and_then(|d| d.share.clone()).unwrap_or_default();
                        let token = self.tokens.get(&share).cloned().unwrap_or_default();
                        let resume = c.resume();
                        let display = c.display_name.clone();
                        for i in extra {
                            let params = json!({"token": token, "display_name": display, "resume_token": resume});
                            let p = Pending { setup: true, ..pending("authenticate", Purpose::Auto) };
                            self.request(name, Some(i), "authenticate", params, p);
                        }
                    }
                    let joins = self.clients[name].want_join.clone();
                    for s in joins {
                        self.join(name, Some(index), &s, None, Purpose::Auto);
                    }
                }
            }
            "join_session" => {
                let superseded = |s: &String| self.clients[name].left_at.get(s).is_some_and(|&left| left > p.order);
                if let Some(s) = p.session.clone().filter(|s| !superseded(s)) {
                    if let Some(last) = result.pointer("/session/last_seq").and_then(Value::as_u64) {
                        let cn = &mut self.clients.get_mut(name).expect("client").conns[index];
                        cn.replayed_until.insert(s.clone(), last);
                    }
                    self.on_joined(name, index, &s, &p, result);
                    let c = self.clients.get_mut(name).expect("client");
                    if let Ok(joined) = serde_json::from_value::<JoinSessionResult>(result.clone()) {
                        c.program.joined(&joined);
                    }
                    if result.get("catch_up").and_then(Value::as_str) == Some("none") {
                        if let Some(last) = result.pointer("/session/last_seq").and_then(Value::as_u64) {
                            let e = c.covered_to.entry(s).or_insert(0);
                            *e = (*e).max(last);
                        }
                    }
                }
            }
            "leave_session" => {
                if let Some(s) = p.session {
                    // The participant leaves: every one of its connections stops receiving it.
                    let c = self.clients.get_mut(name).expect("client");
                    for cn in c.conns.iter_mut() {
                        if let Some(t) = cn.streams.get_mut(&s) {
                            t.next = None;
                            t.awaiting_snapshot = false;
                        }
                    }
                    c.program.left(&s.as_str().into());
                    c.left_at.insert(s, p.order);
                }
            }
            "add_workspace" => {
                if let (Some(ws), Some(id)) = (p.workspace, result.get("id").and_then(Value::as_str)) {
                    self.workspace_ids.insert(ws, id.to_string());
                }
            }
            "mint_share" | "rotate_share" => {
                let label =
                    p.label.or_else(|| result.pointer("/share/label").and_then(Value::as_str).map(str::to_string));
                if let (Some(label), Some(token)) = (label, result.get("token").and_then(Value::as_str)) {
                    if let Some(old) = self.tokens.insert(label.clone(), token.to_string()) {
                        self.old_tokens.insert(label.clone(), old);
                    }
                    if let Some(id) = result.pointer("/share/share_id").and_then(Value::as_str) {
                        self.share_ids.insert(label, id.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------------------------
    // Client-side checks: what each connection received of each session's seq'd events
    // ------------------------------------------------------------------------------------

    /// Records a client-side delivery violation (once per connection and session).
    /// A durability violation (not tied to one connection's stream).
    fn store_violation(&mut self, name: &str, what: String) {
        let msg = format!("store check: {what}");
        self.client_violations.push(format!("[tick {}, t={}ms, {name}] {msg}", self.tick, self.now));
        self.fail(Some(name), msg);
    }

    fn client_violation(&mut self, name: &str, index: usize, session: &str, what: String) {
        let c = self.clients.get_mut(name).expect("client");
        let conn_id = c.conns[index].id;
        let t = c.conns[index].streams.entry(session.to_string()).or_default();
        if std::mem::replace(&mut t.reported, true) {
            return;
        }
        let msg = format!("client check: {name} on {conn_id}, {session}: {what}");
        self.client_violations.push(format!("[tick {}, t={}ms, {name}] {msg}", self.tick, self.now));
        self.fail(Some(name), msg);
    }

    /// A seq'd event on a connection: seqs strictly increase, and while the connection is in
    /// sync (after its join's catch-up) each one is the next.
    fn check_seq(&mut self, name: &str, index: usize, session: &str, seq: u64, event: &str) {
        let c = self.clients.get_mut(name).expect("client");
        let cn = &mut c.conns[index];
        let sees_all = cn.sees_all;
        let t = cn
            .streams
            .entry(session.to_string())
            .or_insert_with(|| SeqTrack { next: sees_all.then_some(1), ..SeqTrack::default() });
        let (last, next) = (t.last, t.next);
        t.last = t.last.max(seq);
        if t.next.is_some() {
            t.next = Some(seq + 1);
        }
        if seq <= last {
            let what = if seq == last { "a duplicate" } else { "out of order" };
            let msg = format!("`{event}` seq {seq} is {what}: this connection already received seq {last}");
            self.client_violation(name, index, session, msg);
        } else if let Some(want) = next.filter(|&n| n != seq) {
            let msg = format!("`{event}` seq {seq} leaves a gap: the next event should have been seq {want}");
            self.client_violation(name, index, session, msg);
        }
    }

    /// A join's result: where the catch-up leaves this connection.
    fn on_joined(&mut self, name: &str, index: usize, session: &str, p: &Pending, result: &Value) {
        let catch_up = result.get("catch_up").and_then(Value::as_str).unwrap_or_default().to_string();
        let session_last = result.pointer("/session/last_seq").and_then(Value::as_u64).unwrap_or(0);
        let c = self.clients.get_mut(name).expect("client");
        let t = c.conns[index].streams.entry(session.to_string()).or_default();
        t.awaiting_snapshot = false;
        // The client asked for everything after `since`: seqs it received on this connection after
        // that may legitimately come again (it asked for them), those received after it sent the
        // join may not.
        if let Some(since) = p.join_since {
            if since < p.join_seen {
                t.last = since;
            }
        }
        let mut problem = None;
        match (catch_up.as_str(), p.join_since) {
            ("events", Some(since)) => t.next = Some(t.last.max(since) + 1),
            ("none", since) => {
                if since.is_some_and(|s| s < session_last) {
                    problem = Some(format!(
                        "join with since_seq {} answered catch_up none, but the session is at seq {session_last}",
                        since.unwrap_or(0)
                    ));
                }
                t.next = Some(t.last.max(session_last) + 1);
            }
            ("snapshot", _) => {
                t.next = None;
                t.awaiting_snapshot = true;
            }
            (other, since) => {
                t.next = None;
                problem = Some(format!("join (since_seq {since:?}) answered with unexpected catch_up `{other}`"));
            }
        }
        if let Some(what) = problem {
            self.client_violation(name, index, session, what);
        }
    }

    /// At the end: every open, authenticated connection that is in a session and not held back
    /// as a slow consumer has received every committed event of that session.
    /// Records a sent message the host acknowledged: its id must never be issued again for another
    /// message.
    fn note_acknowledged(&mut self, name: &str, p: &Pending, result: &Value) {
        // (A clear is accounted for when it is sent: `note_clear_sent`.)
        if p.method != "send_message" && p.method != "send_chat" {
            return;
        }
        let (Some(id), Some(seq), Some(session)) = (
            result.get("message_id").and_then(Value::as_str),
            result.get("seq").and_then(Value::as_u64),
            p.session.clone(),
        ) else {
            return;
        };
        match self.acked.get(id) {
            Some((s, q)) if *s != session || *q != seq => {
                let msg = format!("message id {id} acknowledged twice: {s}#{q} and {session}#{seq} (ids reused)");
                self.store_violation(name, msg);
            }
            _ => {
                self.acked.insert(id.to_string(), (session, seq));
            }
        }
    }

    /// A `clear_session` the host sent may have been committed even if its answer never came (a
    /// crash between the commit and the send): its session's acknowledged messages may be gone.
    fn note_clear_sent(&mut self, method: &str, params: &Map<String, Value>) {
        if method == "clear_session" {
            if let Some(session) = params.get("session_id").and_then(Value::as_str) {
                self.acked.retain(|_, (s, _)| s != session);
            }
        }
    }

    /// Every acknowledged message is in the store exactly once, with the seq it was acknowledged
    /// with (what survives a crash: checked where it is kept).
    fn check_acknowledged_are_stored(&mut self) {
        let sessions: std::collections::BTreeSet<String> = self.acked.values().map(|(s, _)| s.clone()).collect();
        let mut stored: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for session in &sessions {
            let rows = {
                let store = &mut self.engine().world.resource_mut::<crate::engine::StoreRes>();
                store.get().messages_before(&crate::ids::SessionId::from(session.as_str()), u64::MAX, usize::MAX)
            };
            match rows {
                Ok((rows, _)) => {
                    for m in rows {
                        stored.entry(m.id.to_string()).or_default().push((m.session.to_string(), m.seq));
                    }
                }
                Err(e) => self.store_violation("host", format!("cannot read the messages of {session}: {e}")),
            }
        }
        let acked = std::mem::take(&mut self.acked);
        for (id, (session, seq)) in &acked {
            if self.cleared_at.get(session).is_some_and(|c| seq < c) {
                continue; // cleared after it was stored (the acknowledgement came late)
            }
            let found = stored.get(id).map(Vec::as_slice).unwrap_or(&[]);
            if found != [(session.clone(), *seq)] {
                let msg =
                    format!("acknowledged message {id} ({session}#{seq}) is stored as {found:?}, not exactly once");
                self.store_violation("host", msg);
            }
        }
        self.acked = acked;
    }

    fn check_delivery_at_end(&mut self) {
        let mut targets = Vec::new();
        for (name, c) in &self.clients {
            for (index, cn) in c.conns.iter().enumerate() {
                if !cn.open || !cn.authed || cn.slow {
                    continue;
                }
                for (session, t) in &cn.streams {
                    if t.awaiting_snapshot || t.next.is_some() {
                        targets.push((name.clone(), index, session.clone(), t.clone()));
                    }
                }
            }
        }
        for (name, index, session, t) in targets {
            let committed = self.last_seq_of(&session);
            if t.awaiting_snapshot {
                let msg = "joined with a snapshot catch-up but never received the snapshot".to_string();
                self.client_violation(&name, index, &session, msg);
            } else if let Some(next) = t.next.filter(|&n| n <= committed) {
                let msg = format!(
                    "ended the run in the session having received up to seq {} of {committed} committed",
                    next - 1
                );
                self.client_violation(&name, index, &session, msg);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Steps
    // ------------------------------------------------------------------------------------

    fn exec_step(&mut self, i: usize) {
        let step = self.steps[i].1.clone();
        self.records[i].executed = Some((self.tick + 1, self.now));
        if let Err(e) = self.try_step(i, &step) {
            self.records[i].pids = self.current_pids();
            self.records[i].error = Some(e.clone());
            let who = step.who.clone();
            self.fail(Some(&who), format!("step {} `{}` at {}: {e}", self.steps[i].0 + 1, step.action, step.at));
        } else {
            self.records[i].pids = self.current_pids();
        }
    }

    /// Every handle's participant id now.
    fn current_pids(&self) -> BTreeMap<String, String> {
        self.clients.iter().filter_map(|(h, c)| c.pid.clone().map(|p| (h.clone(), p))).collect()
    }

    fn try_step(&mut self, i: usize, step: &Step) -> Result<(), String> {
        let who = step.who.as_str();
        let mut conn = match &step.conn {
            Some(ConnRef::Index(n)) => Some(*n),
            Some(ConnRef::Named(s)) if s == "new" => {
                if who == "host" {
                    return Err("the host has a single in-process connection".into());
                }
                Some(self.open_conn(who))
            }
            Some(ConnRef::Named(s)) => return Err(format!("conn must be an index or \"new\", not `{s}`")),
            None => None,
        };
        let params = self.resolve_table(&step.params)?;
        let get_str = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_string);
        let get_u64 = |k: &str| params.get(k).and_then(Value::as_u64);
        let allow = |keys: &[&str]| -> Result<(), String> {
            match params.keys().find(|k| !keys.contains(&k.as_str())) {
                Some(k) => Err(format!("unknown setting `{k}` for `{}`", step.action)),
                None => Ok(()),
            }
        };
        match step.action.as_str() {
            "wait" => allow(&[]),
            "connect" => {
                allow(&[])?;
                if step.conn.is_none() {
                    self.open_conn(who);
                }
                Ok(())
            }
            "disconnect" => {
                allow(&[])?;
                let c = self.clients.get_mut(who).expect("client");
                let targets: Vec<usize> = match conn {
                    Some(n) => vec![n],
                    None => (0..c.conns.len()).filter(|&n| c.conns[n].open).collect(),
                };
                if targets.is_empty() {
                    return Err(format!("{who} has no open connection to drop"));
                }
                let now = self.now;
                let mut closed = Vec::new();
                for n in targets {
                    let cn = c.conns.get_mut(n).ok_or(format!("{who} has no connection {n}"))?;
                    if cn.open {
                        cn.open = false;
                        closed.push(cn.id);
                        c.log.push(format!("t={now} {} ** disconnected by client", cn.id));
                    }
                }
                for id in closed {
                    self.transport().drop_client(id);
                }
                Ok(())
            }
            "reconnect" => {
                allow(&["share", "token", "resume", "rejoin", "display_name"])?;
                let resume = params.get("resume").and_then(Value::as_bool).unwrap_or(true);
                let rejoin = params.get("rejoin").and_then(Value::as_bool).unwrap_or(true);
                let token = match (get_str("token"), get_str("share")) {
                    (Some(t), _) => t,
                    (None, Some(label)) => {
                        self.tokens.get(&label).cloned().ok_or(format!("unknown share `{label}`"))?
                    }
                    (None, None) => self.client_token(who)?,
                };
                self.reconnect(who, token, resume, rejoin, get_str("display_name"), Some(i));
                Ok(())
            }
            "slow" => {
                allow(&["capacity"])?;
                let c = &self.clients[who];
                let n = conn.or_else(|| c.latest_open()).ok_or(format!("{who} has no open connection"))?;
                c.conns
                    .get(n)
                    .ok_or(format!("{who} has no connection {n}"))?
                    .end
                    .set_slow(get_u64("capacity").unwrap_or(0) as usize);
                self.clients.get_mut(who).expect("client").conns[n].slow = true;
                Ok(())
            }
            "release" => {
                allow(&[])?;
                let c = &self.clients[who];
                let targets: Vec<usize> = match conn {
                    Some(n) => vec![n],
                    None => (0..c.conns.len()).collect(),
                };
                for n in targets {
                    c.conns.get(n).ok_or(format!("{who} has no connection {n}"))?.end.release();
                }
                let c = self.clients.get_mut(who).expect("client");
                for (n, cn) in c.conns.iter_mut().enumerate() {
                    if conn.is_none_or(|want| want == n) {
                        cn.slow = false;
                    }
                }
                Ok(())
            }
            "clock_jump" => {
                allow(&["by"])?;
                self.jump += get_u64("by").ok_or("clock_jump needs `by` (ms)")?;
                Ok(())
            }
            "wall_step" => {
                allow(&["by"])?;
                let by =
                    params.get("by").and_then(Value::as_i64).ok_or("wall_step needs `by` (ms, may be negative)")?;
                self.wall_offset = self.wall_offset.saturating_add(by);
                Ok(())
            }
            "storage_fault" | "storage_heal" => {
                allow(if step.action == "storage_fault" { &["ms"] } else { &[] })?;
                self.storage.step(&step.action, get_u64("ms"), self.now);
                Ok(())
            }
            "crash_after_commit" => {
                allow(&[])?;
                self.crash_next_tick = true;
                Ok(())
            }
            "restart_host" => {
                allow(&["reconnect"])?;
                let reconnect = params.get("reconnect").and_then(Value::as_bool).unwrap_or(true);
                self.restart_host(reconnect)
            }
            "agent_fail" => {
                allow(&["session", "session_id", "reason"])?;
                let session = get_str("session").or(get_str("session_id")).unwrap_or_else(|| "s1".into());
                let reason = get_str("reason").unwrap_or_else(|| "injected agent crash".into());
                let turn_id = self.turn_id(&session).ok_or(format!("session {session} does not exist"))?;
                self.transport().send_local(Inbound::Agent(AgentOutput {
                    session: SessionId::from(session.as_str()),
                    turn_id,
                    event: AgentEvent::Failed(reason),
                }));
                Ok(())
            }
            "raw" => {
                allow(&["text"])?;
                let text = get_str("text").ok_or("raw needs `text`")?;
                let c = self.clients.get_mut(who).expect("client");
                let n = conn.or_else(|| c.latest_open()).ok_or(format!("{who} has no open connection"))?;
                let cn = c.conns.get_mut(n).ok_or(format!("{who} has no connection {n}"))?;
                if !cn.open {
                    return Err(format!("{who}'s connection {n} is closed"));
                }
                // Route the response by the frame's id when it has one (bad JSON is answered
                // with a null id).
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .filter(|id| id.is_number() || id.is_string())
                    .unwrap_or(Value::Null);
                cn.pending.insert(id.to_string(), pending("raw", Purpose::Step(i)));
                let id = cn.id;
                c.log.push(format!("t={} {id} > {text}", self.now));
                self.transport().send_frame(id, text);
                Ok(())
            }
            method => {
                let (params, p) = self.method_params(who, method, params, i)?;
                if conn.is_none() && method == "authenticate" {
                    conn = self.clients[who].latest_open();
                }
                if self.request(who, conn, method, Value::Object(params), p) {
                    Ok(())
                } else {
                    Err(format!("{who} has no open connection"))
                }
            }
        }
    }

    /// Builds a method's params from a step: aliases, handles and defaults.
    fn method_params(
        &mut self,
        who: &str,
        method: &str,
        mut params: Map<String, Value>,
        i: usize,
    ) -> Result<(Map<String, Value>, Pending), String> {
        for (alias, field) in [
            ("session", "session_id"),
            ("participant", "participant_id"),
            ("vote", "vote_id"),
            ("workspace", "workspace_id"),
        ] {
            if let Some(v) = params.remove(alias) {
                params.insert(field.into(), v);
            }
        }
        if method != "authenticate" && method != "mint_share" {
            if let Some(v) = params.remove("share") {
                params.insert("share_id".into(), v);
            }
        }
        if let Some(Value::String(h)) = params.get("participant_id").cloned() {
            if let Some(c) = self.clients.get(&h) {
                let pid = c.pid.clone().ok_or(format!("`{h}` has no participant id yet"))?;
                params.insert("participant_id".into(), json!(pid));
            }
        }
        if let Some(Value::String(l)) = params.get("share_id").cloned() {
            if let Some(id) = self.share_ids.get(&l) {
                params.insert("share_id".into(), json!(id));
            }
        }
        if let Some(Value::String(w)) = params.get("workspace_id").cloned() {
            if let Some(id) = self.workspace_id(&w) {
                params.insert("workspace_id".into(), json!(id));
            }
        }
        self.note_clear_sent(method, &params);
        let mut p = pending(method, Purpose::Step(i));
        p.session = params.get("session_id").and_then(Value::as_str).map(str::to_string);
        match method {
            "authenticate" => {
                if let Some(Value::String(label)) = params.remove("share") {
                    let t = self.tokens.get(&label).cloned().ok_or(format!("unknown share `{label}`"))?;
                    params.insert("token".into(), json!(t));
                }
                if !params.contains_key("token") {
                    params.insert("token".into(), json!(self.client_token(who)?));
                }
                if !params.contains_key("display_name") {
                    params.insert("display_name".into(), json!(self.clients[who].display_name));
                }
                if let Some(Value::Bool(true)) = params.remove("resume") {
                    let r = self.clients[who].resume().ok_or(format!("{who} has no resume token yet"))?;
                    params.insert("resume_token".into(), json!(r));
                }
            }
            "send_message" | "send_chat" if !params.contains_key("client_msg_id") => {
                let c = self.clients.get_mut(who).expect("client");
                c.msg_counter += 1;
                params.insert("client_msg_id".into(), json!(format!("{who}-{}", c.msg_counter)));
            }
            "join_session" if params.get("since_seq").and_then(Value::as_str) == Some("last") => {
                let s = p.session.clone().unwrap_or_default();
                params.insert("since_seq".into(), json!(self.clients[who].last_seq(&s)));
            }
            "mint_share" => {
                if let Some(Value::String(l)) = params.get("label") {
                    p.label = Some(l.clone());
                }
                let ws = match params.remove("workspaces") {
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|w| w.as_str().and_then(|w| self.workspace_id(w)).map(Value::from).unwrap_or(w.clone()))
                        .collect(),
                    Some(other) => vec![other],
                    None => self.workspace_ids.values().cloned().map(Value::from).collect(),
                };
                params.insert("workspaces".into(), Value::Array(ws));
            }
            "rotate_share" | "revoke_share" => {
                let id = params.get("share_id").and_then(Value::as_str).map(str::to_string);
                p.label = self.share_ids.iter().find(|(_, v)| Some(*v) == id.as_ref()).map(|(k, _)| k.clone());
            }
            _ => {}
        }
        Ok((params, p))
    }

    fn client_token(&self, who: &str) -> Result<String, String> {
        let share =
            self.clients[who].def.as_ref().and_then(|d| d.share.clone()).ok_or(format!("{who} has no share"))?;
        self.tokens.get(&share).cloned().ok_or(format!("share `{share}` has no token"))
    }

    /// Opens a new connection and authenticates with the resume token, then rejoins every
    /// session with `since_seq` = the last seq this participant saw.
    fn reconnect(
        &mut self,
        who: &str,
        token: String,
        resume: bool,
        rejoin: bool,
        name: Option<String>,
        step: Option<usize>,
    ) {
        let index = self.open_conn(who);
        let c = &self.clients[who];
        let mut params = json!({"token": token, "display_name": name.unwrap_or(c.display_name.clone())});
        if resume {
            if let Some(r) = c.resume() {
                params["resume_token"] = json!(r);
            }
        }
        let purpose = match step {
            Some(i) => Purpose::Step(i),
            None => Purpose::Auto,
        };
        let p = Pending { rejoin, ..pending("authenticate", purpose) };
        self.request(who, Some(index), "authenticate", params, p);
    }

    fn restart_host(&mut self, reconnect: bool) -> Result<(), String> {
        self.restarts += 1;
        let engine = self.engine.take().expect("engine running");
        let store = engine.into_store();
        let now = self.now;
        let mut to_reconnect = Vec::new();
        for (name, c) in self.clients.iter_mut() {
            let mut had_open = false;
            for cn in c.conns.iter_mut().filter(|cn| cn.open) {
                cn.open = false;
                had_open |= cn.authed;
                c.log.push(format!("t={now} {} ** host restarted", cn.id));
            }
            if had_open && name != "host" {
                to_reconnect.push(name.clone());
            }
        }
        let mut engine = Engine::new(self.config.clone(), store).map_err(|e| format!("engine restart: {e}"))?;
        self.start_clock(&engine);
        // A new engine knows nothing of the old one's failing store until its first commit.
        self.storage.failing = false;
        self.install_agents(&mut engine);
        if let Some(m) = self.model.as_mut() {
            engine.record_journal();
            m.before = None;
            m.expected.clear();
        }
        // The transport drops every connection of the old engine (a real restart also restarts
        // the server) and carries the new ones to the new engine.
        self.transport().attach(engine.sender())?;
        self.engine = Some(engine);
        self.open_host_conn();
        for j in self.clients["host"].program.rejoins() {
            self.join("host", None, j.session_id.as_str(), j.since_seq, Purpose::Auto);
        }
        if reconnect {
            for name in to_reconnect {
                let token = self.client_token(&name).unwrap_or_default();
                self.reconnect(&name, token, true, true, None, None);
            }
        }
        Ok(())
    }

    /// The running (or last) turn id of a session.
    pub fn turn_id(&mut self, session: &str) -> Option<u64> {
        let world = &mut self.engine().world;
        let mut q = world.query::<(&Session, &TurnLock)>();
        q.iter(world).find(|(s, _)| s.id.as_str() == session).map(|(_, t)| t.turn_id)
    }

    // ------------------------------------------------------------------------------------
    // Placeholders
    // ------------------------------------------------------------------------------------

    /// Resolves `$key` (whole string) and `${key}` (anywhere) in every string of a table.
    pub fn resolve_table(&self, t: &toml::Table) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for (k, v) in t {
            out.insert(k.clone(), self.resolve_value(&toml_to_json(v))?);
        }
        Ok(out)
    }

    pub fn resolve_value(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.resolve_str(s)?),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.resolve_value(x)).collect::<Result<_, _>>()?),
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.resolve_value(x)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
    }

    pub fn resolve_str(&self, s: &str) -> Result<String, String> {
        if let Some(key) = s.strip_prefix('$') {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                return self.lookup(key);
            }
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(format!("unclosed `${{` in `{s}`"))?;
            out.push_str(&self.lookup(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, key: &str) -> Result<String, String> {
        let (kind, arg) = key.split_once('.').unwrap_or((key, ""));
        match (kind, arg) {
            ("bin", name) => return find_bin(name).map(|p| p.display().to_string()),
            ("scenario_dir", "") => return scenario_dir(self.sc.source.as_deref()),
            _ => {}
        }
        let found = match (kind, arg) {
            ("vote", "") => self.latest_vote.clone(),
            ("tmp", "") => Some(self.tmp.path().display().to_string()),
            ("token", l) => self.tokens.get(l).cloned(),
            ("old_token", l) => self.old_tokens.get(l).cloned(),
            ("share", l) => self.share_ids.get(l).cloned(),
            ("workspace", w) => self.workspace_id(w),
            ("dir", w) => self.workspace_dirs.get(w).map(|d| d.display().to_string()),
            ("pad", n) => n.parse::<usize>().ok().filter(|n| *n <= 1 << 24).map(|n| "x".repeat(n)),
            ("resume", h) => self.clients.get(h).and_then(|c| c.resume()),
            ("name", h) => self.clients.get(h).and_then(|c| c.assigned_name.clone().or(Some(c.display_name.clone()))),
            (h, "") => match &self.bound_pids {
                Some(bound) if bound.contains_key(h) => bound.get(h).cloned(),
                _ => self.clients.get(h).and_then(|c| c.pid.clone()),
            },
            _ => None,
        };
        found.ok_or(format!("`${key}` is unknown here (see docs/SCENARIOS.md, Placeholders)"))
    }

    // ------------------------------------------------------------------------------------
    // Output
    // ------------------------------------------------------------------------------------

    /// The state digest for the transcript, or why there is none.
    fn final_digest(&mut self, panic: Option<&str>) -> String {
        match (panic, self.engine.as_mut()) {
            (None, Some(e)) => {
                let digest = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.state_digest()));
                match digest {
                    Ok(d) => d,
                    Err(p) => format!("(state digest panicked: {})", panic_message(p.as_ref())),
                }
            }
            (Some(p), _) => format!("(engine panicked: {p})"),
            (None, None) => "(no engine)".into(),
        }
    }

    /// Every frame to every participant (by handle, then delivery order), then the digest.
    fn transcript(&self, digest: &str) -> String {
        let mut out = format!("# scenario {} seed {}\n", self.sc.name, self.seed);
        for (name, c) in &self.clients {
            out.push_str(&format!("== {name}\n"));
            for line in &c.log {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("== state\n");
        out.push_str(digest);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if !self.failures.is_empty() {
            out.push_str("== failures\n");
            for f in &self.failures {
                out.push_str(&format!("{f}\n"));
            }
        }
        self.normalise(&out)
    }

    /// Replaces the temporary directory (which differs between runs) with `$TMP`.
    fn normalise(&self, text: &str) -> String {
        normalise_with(&self.tmp_names(), text)
    }

    /// The temporary directory as written, and canonicalised (resolved once: a transcript
    /// normalises every frame of every client).
    fn tmp_names(&self) -> Vec<String> {
        let mut names = vec![self.tmp.path().display().to_string()];
        if let Ok(canon) = self.tmp.path().canonicalize() {
            names.push(canon.display().to_string());
        }
        names
    }

    /// Per participant, the non-response frames received, in order.
    fn event_sequences(&self) -> BTreeMap<String, Vec<String>> {
        let tmp = self.tmp_names();
        self.clients
            .iter()
            .map(|(name, c)| {
                let evs = c
                    .seen
                    .iter()
                    .filter(|s| s.json.get("event").is_some())
                    .map(|s| normalise_with(&tmp, &s.json.to_string()))
                    .collect();
                (name.clone(), evs)
            })
            .collect()
    }

    // ------------------------------------------------------------------------------------
    // State queries for `[final]`
    // ------------------------------------------------------------------------------------

    pub fn digest(&mut self) -> String {
        self.engine().state_digest()
    }

    /// A session for `[final]` (see [`SessionAtEnd`]): the engine's session and turn lock, and its messages **as the
    /// store holds them** (what survives a crash; a durability rule is checked where it is kept),
    /// oldest first. `Err` when the store cannot be read.
    pub fn session_state(&mut self, id: &str) -> Option<Result<SessionAtEnd, String>> {
        let world = &mut self.engine().world;
        let mut q = world.query::<(&Session, &TurnLock)>();
        let (s, t) = q.iter(world).find(|(s, _)| s.id.as_str() == id).map(|(s, t)| (s.clone(), t.clone()))?;
        let stored = world.resource_mut::<crate::engine::StoreRes>().get().messages_before(&s.id, u64::MAX, usize::MAX);
        Some(stored.map(|(stored, _)| SessionAtEnd { session: s, lock: t, stored }).map_err(|e| e.to_string()))
    }

    /// Everything the store holds (what a restart would load), for `[final]`.
    pub fn stored_state(&mut self) -> Result<crate::persist::Restored, String> {
        let store = &mut self.engine().world.resource_mut::<crate::engine::StoreRes>();
        store.get().load().map_err(|e| e.to_string())
    }

    /// The audit log as the store holds it, as `"ACTION TARGET"` lines.
    pub fn stored_audit(&mut self) -> Result<Vec<String>, String> {
        let store = &mut self.engine().world.resource_mut::<crate::engine::StoreRes>();
        let rows = store.get().audit_log().map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|a| format!("{} {}", a.action, a.target)).collect())
    }

    /// A vote's ballots as the store holds them, as `"VOTER:CHOICE"`, sorted.
    pub fn stored_ballots(&mut self, vote: &str) -> Result<Vec<String>, String> {
        let store = &mut self.engine().world.resource_mut::<crate::engine::StoreRes>();
        let rows = store.get().ballots_of(&crate::ids::VoteId::from(vote)).map_err(|e| e.to_string())?;
        let mut out: Vec<String> = rows.into_iter().map(|b| format!("{}:{}", b.voter, b.choice)).collect();
        out.sort();
        Ok(out)
    }

    /// Last seq of a session's event log (0 when it does not exist).
    pub fn last_seq_of(&mut self, id: &str) -> u64 {
        let world = &mut self.engine().world;
        let mut q = world.query::<(&Session, &crate::engine::components::EventLog)>();
        q.iter(world).find(|(s, _)| s.id.as_str() == id).map(|(_, l)| l.last_seq()).unwrap_or(0)
    }

    pub fn participants_state(&mut self) -> Vec<Participant> {
        let world = &mut self.engine().world;
        let mut q = world.query::<&Participant>();
        let mut v: Vec<Participant> = q.iter(world).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn vote_state(&mut self, id: &str) -> Option<PendingVote> {
        let world = &mut self.engine().world;
        let mut q = world.query::<&PendingVote>();
        q.iter(world).find(|v| v.id.as_str() == id).cloned()
    }

    pub fn share_state(&mut self, id: &str) -> Option<Share> {
        let world = &mut self.engine().world;
        let mut q = world.query::<&Share>();
        q.iter(world).find(|s| s.id.as_str() == id).cloned()
    }

    /// Handle of a participant id (`host`, `ann`), or the id itself.
    pub fn handle_of(&self, pid: &str) -> String {
        self.clients
            .values()
            .find(|c| c.pid.as_deref() == Some(pid))
            .map(|c| c.handle.clone())
            .unwrap_or(pid.to_string())
    }

    /// Frames received by a handle.
    pub fn seen(&self, handle: &str) -> &[Seen] {
        self.clients.get(handle).map(|c| c.seen.as_slice()).unwrap_or(&[])
    }

    /// `json_subset` with placeholders resolved in the expected value.
    pub fn matches(&self, expected: &Value, actual: &Value) -> Result<bool, String> {
        Ok(json_subset(&self.resolve_value(expected)?, actual))
    }
}

fn pending(method: &str, purpose: Purpose) -> Pending {
    Pending {
        method: method.to_string(),
        purpose,
        session: None,
        label: None,
        workspace: None,
        setup: false,
        rejoin: false,
        join_since: None,
        join_seen: 0,
        order: 0,
        params: Value::Null,
        tick: 0,
    }
}

fn write_file(path: &std::path::Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// `ann` → `Ann`.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
