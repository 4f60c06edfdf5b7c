//! [`ExternalAgents`]: the runtime for agent backends that run as processes (`claude`,
//! `codex`, `command`).
//!
//! The engine calls [`AgentRuntime::send`] from inside its tick, so `send` only queues: every
//! session gets its own worker thread (created on first use) that owns the session's agent
//! process and turn state. A worker waits on three things at once — commands from the engine,
//! lines from the agent's stdout, and a timer — and turns them into [`AgentOutput`]s pushed into
//! the engine's inbound channel as [`Inbound::Agent`].
//!
//! The protocol spoken with the process is a [`Backend`] (see `claude.rs`, `codex.rs` and `command.rs`); the
//! worker owns everything they share:
//! - **exactly one end per turn**: every started turn ends with one `Done` or `Failed(reason)` —
//!   normal end, error result, crash or exit mid-turn, exit before any output, an over-long line,
//!   a missing binary, or the hang watchdog;
//! - **hang watchdog**: a running turn with no output for [`ExternalConfig::hang_timeout`] is
//!   killed and fails. It is paused while the agent waits for the host (a vote can take long);
//! - **cancel**: the backend asks the agent to stop; nothing more is reported for that turn (the
//!   engine already ended it), and the process is killed if it has not acknowledged within
//!   [`ExternalConfig::cancel_grace`].
//!
//! Threads rather than tokio tasks: agent processes are few (one per active session), the work
//! is blocking pipe I/O, and a plain thread with `select!` keeps the state machine readable.

use super::claude::ClaudeBackend;
use super::codex::CodexBackend;
use super::command::CommandBackend;
use super::process::{describe_status, AgentProcess, ProcEvent, SpawnError, SpawnSpec};
use super::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, Resolution};
use crate::engine::Inbound;
use crate::ids::SessionId;
use crate::persist::AgentSpec;
use crossbeam_channel::{select, Receiver, Sender};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the external agent runtime.
#[derive(Clone, Debug)]
pub struct ExternalConfig {
    /// The Claude Code CLI (a name on `PATH` or a path). A workspace's `AgentSpec.command`
    /// overrides it.
    pub claude_binary: String,
    /// Extra arguments for every `claude` run (e.g. `--model`, `--permission-mode`).
    pub claude_args: Vec<String>,
    /// The OpenAI Codex CLI (a name on `PATH` or a path), run as `codex app-server`. A
    /// workspace's `AgentSpec.command` overrides it.
    pub codex_binary: String,
    /// Extra arguments for every `codex app-server` (e.g. `-c model=…`).
    pub codex_args: Vec<String>,
    /// Tools the host allowed "always": passed as `--allowedTools`, they never ask.
    pub allowed_tools: Vec<String>,
    /// A running turn whose agent produced no output for this long is killed and fails.
    pub hang_timeout: Duration,
    /// After a cancel, how long the agent gets to stop on its own before it is killed.
    pub cancel_grace: Duration,
    /// After a one-shot agent (claude) finished its turn and its stdin was closed, how long it
    /// gets to exit before it is killed.
    pub exit_grace: Duration,
    /// Longest accepted stdout line; a longer one fails the turn.
    pub max_line_bytes: usize,
    /// What a plan approved by consensus lets the `claude` CLI do next.
    pub after_plan: crate::claude::AfterPlan,
    /// The clock the watchdog, the cancel grace and the restart backoff run on (tests move a
    /// manual one instead of waiting).
    pub clock: crate::clock::Clock,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            claude_binary: "claude".to_string(),
            claude_args: Vec::new(),
            codex_binary: "codex".to_string(),
            codex_args: Vec::new(),
            allowed_tools: Vec::new(),
            hang_timeout: Duration::from_secs(600),
            cancel_grace: Duration::from_secs(5),
            exit_grace: Duration::from_secs(3),
            max_line_bytes: 1024 * 1024,
            after_plan: Default::default(),
            clock: Default::default(),
        }
    }
}

/// The agent runtime for the `claude` and `command` backends. See the module docs.
///
/// Dropping it stops every agent process (each worker, when its command channel closes, closes
/// the agent's stdin, sends SIGTERM after `exit_grace`, SIGKILL after another) and waits for the
/// workers to finish.
pub struct ExternalAgents {
    tx: Sender<Inbound>,
    config: Arc<ExternalConfig>,
    workers: BTreeMap<SessionId, Worker>,
}

struct Worker {
    commands: Sender<AgentCommand>,
    thread: std::thread::JoinHandle<()>,
}

/// How long dropping [`ExternalAgents`] waits for its workers to stop their processes, beyond
/// the two `exit_grace` waits of [`AgentProcess::stop`].
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

impl ExternalAgents {
    /// A runtime that reports to the engine's inbound channel (`Engine::sender`).
    pub fn new(tx: Sender<Inbound>, config: ExternalConfig) -> ExternalAgents {
        ExternalAgents { tx, config: Arc::new(config), workers: BTreeMap::new() }
    }

    fn worker(&mut self, session: &SessionId) -> std::io::Result<&Sender<AgentCommand>> {
        if !self.workers.contains_key(session) {
            let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
            let worker = SessionWorker::new(session.clone(), self.tx.clone(), self.config.clone());
            let thread =
                std::thread::Builder::new().name(format!("agent-{session}")).spawn(move || worker.run(cmd_rx))?;
            self.workers.insert(session.clone(), Worker { commands: cmd_tx, thread });
        }
        Ok(&self.workers[session].commands)
    }
}

impl Drop for ExternalAgents {
    fn drop(&mut self) {
        let workers = std::mem::take(&mut self.workers);
        let threads: Vec<_> = workers.into_values().map(|w| w.thread).collect();
        let deadline = Instant::now() + self.config.exit_grace * 2 + SHUTDOWN_SLACK;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("an agent worker did not stop in time");
            }
        }
    }
}

impl AgentRuntime for ExternalAgents {
    fn send(&mut self, cmd: AgentCommand) {
        let session = session_of(&cmd).clone();
        let mut cmd = cmd;
        // Two attempts: a worker whose thread died (a panic) is replaced once.
        for _ in 0..2 {
            let sent = match self.worker(&session) {
                Ok(worker) => worker.send(cmd),
                Err(e) => {
                    tracing::error!(%session, error = %e, "could not start an agent worker thread");
                    if let AgentCommand::StartTurn { turn_id, .. } = cmd {
                        let event = AgentEvent::Failed(format!("could not start the agent worker: {e}"));
                        let _ = self.tx.send(Inbound::Agent(AgentOutput { session, turn_id, event }));
                    }
                    return;
                }
            };
            match sent {
                Ok(()) => return,
                Err(crossbeam_channel::SendError(back)) => {
                    tracing::warn!(%session, "agent worker is gone; starting a new one");
                    self.workers.remove(&session);
                    cmd = back;
                }
            }
        }
    }
}

fn session_of(cmd: &AgentCommand) -> &SessionId {
    match cmd {
        AgentCommand::StartTurn { session, .. }
        | AgentCommand::Resolve { session, .. }
        | AgentCommand::Cancel { session, .. } => session,
    }
}

/// A turn as the backends see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnInput {
    pub session: SessionId,
    pub turn_id: u64,
    pub workspace_dir: String,
    pub spec: AgentSpec,
    pub prompt: String,
    pub author_name: String,
    /// The conversation to continue, as the engine stored it (`None`: a new one).
    pub conversation: Option<String>,
    /// The session's agent settings (model, permission mode).
    pub settings: crate::protocol::AgentSettings,
}

/// How a backend says a turn ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    Done,
    Failed(String),
    /// The agent could not continue the stored conversation (the reason): the worker asks
    /// [`Backend::start_afresh`] and runs the turn again in a new one, or fails it with the reason.
    ConversationLost(String),
}

/// A backend's answer to one line or command.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    /// Output for the engine (never `Done`/`Failed`: those go in `end`).
    pub events: Vec<AgentEvent>,
    /// Lines to write to the agent's stdin.
    pub replies: Vec<Value>,
    /// The turn ended.
    pub end: Option<TurnEnd>,
}

impl Reaction {
    pub(crate) fn event(event: AgentEvent) -> Reaction {
        Reaction { events: vec![event], ..Reaction::default() }
    }

    pub(crate) fn reply(line: Value) -> Reaction {
        Reaction { replies: vec![line], ..Reaction::default() }
    }

    pub(crate) fn end(end: TurnEnd) -> Reaction {
        Reaction { end: Some(end), ..Reaction::default() }
    }
}

/// The wire protocol of one backend kind, for one session. Pure: no I/O, no clocks — the
/// worker does those, which keeps backends unit-testable line by line.
pub trait Backend: Send {
    /// Name used in error messages ("claude", "the agent command").
    fn label(&self) -> &'static str;
    /// Whether one process serves many turns (`command`) or each turn gets a fresh one (`claude`).
    fn long_lived(&self) -> bool;
    /// What to run for this turn.
    fn spawn_spec(&self, turn: &TurnInput) -> Result<SpawnSpec, String>;
    /// The message when the program does not exist.
    fn not_found(&self, program: &str) -> String;
    /// Lines that start the turn. `fresh` when the process was just started.
    fn begin_turn(&mut self, turn: &TurnInput, fresh: bool) -> Vec<Value>;
    /// One line of the agent's stdout.
    fn on_line(&mut self, line: &str) -> Reaction;
    /// The engine's decision on one of the agent's requests.
    fn resolve(&mut self, request_id: &str, resolution: Resolution) -> Reaction;
    /// Lines that ask the agent to stop the turn; empty when it cannot be asked (then it is killed).
    fn cancel(&mut self) -> Vec<Value>;
    /// Whether the agent is waiting for the host (pauses the hang watchdog).
    fn waiting_on_host(&self) -> bool;
    /// The turn is over (any way); `ok` when it ended with `Done`.
    fn end_turn(&mut self, ok: bool);
    /// The process ended while `turn` was running, before the turn ended. When the cause is that
    /// the stored conversation could not be continued, returns what to tell the room and changes
    /// `turn` so that starting it again begins a new conversation; the worker then runs the turn
    /// once more (the prompt is not lost). `None`: the turn fails as usual.
    fn start_afresh(&mut self, turn: &mut TurnInput) -> Option<String> {
        let _ = turn;
        None
    }
}

/// One stdout line of a CLI that speaks JSON lines, parsed; `None` (logged) for a line that is
/// not JSON — CLIs print banners and warnings between their messages — or is malformed.
pub(crate) fn json_line(line: &str, cli: &str) -> Option<Value> {
    let line = line.trim();
    if !line.starts_with('{') {
        if !line.is_empty() {
            tracing::debug!(line, cli, "skipping a non-JSON line");
        }
        return None;
    }
    serde_json::from_str(line).inspect_err(|e| tracing::warn!(error = %e, cli, "skipping a malformed JSON line")).ok()
}

fn make_backend(kind: &str, session: &SessionId, config: &ExternalConfig) -> Option<Box<dyn Backend>> {
    match kind {
        "claude" => Some(Box::new(
            ClaudeBackend::new(config.claude_binary.clone(), config.claude_args.clone(), config.allowed_tools.clone())
                .with_after_plan(config.after_plan),
        )),
        "codex" => Some(Box::new(
            CodexBackend::new(config.codex_binary.clone(), config.codex_args.clone())
                .with_after_plan(config.after_plan),
        )),
        "command" => Some(Box::new(CommandBackend::new(session.clone()))),
        _ => None,
    }
}

#[derive(Debug)]
enum Phase {
    Running,
    /// Cancelled by the engine: output is swallowed until the agent acknowledges or `kill_at`.
    Cancelling {
        kill_at: Instant,
    },
}

#[derive(Debug)]
struct Turn {
    id: u64,
    phase: Phase,
    last_output: Instant,
    saw_output: bool,
    /// What started it (run again when the backend starts afresh, see [`Backend::start_afresh`]).
    input: TurnInput,
}

struct Running {
    process: AgentProcess,
    spec: SpawnSpec,
    /// The agent was sent its first turn (and with it the backend's greeting).
    greeted: bool,
}

/// A long-lived agent that exited, to be started again before the next turn needs it.
#[derive(Debug)]
struct Restart {
    at: Instant,
    spec: SpawnSpec,
}

/// Exits in a row after which a crashed agent is no longer restarted ahead of time (the next
/// turn starts it, and reports why it cannot start). docs/AGENTS.md says the same number.
const MAX_EXITS_IN_A_ROW: u32 = 5;

/// When to start again an agent that has now exited `crashes` times in a row without a completed
/// turn: at once, then after 1 s, 2 s, 4 s; `None` from the [`MAX_EXITS_IN_A_ROW`]th exit on.
fn restart_after(crashes: u32) -> Option<Duration> {
    match crashes {
        n if n >= MAX_EXITS_IN_A_ROW => None,
        0 | 1 => Some(Duration::ZERO),
        n => Some(Duration::from_secs(1 << (n - 2))),
    }
}

/// One session's agent: its backend, process and current turn. Lives on its own thread.
struct SessionWorker {
    session: SessionId,
    out: Sender<Inbound>,
    config: Arc<ExternalConfig>,
    backend: Option<(String, Box<dyn Backend>)>,
    running: Option<Running>,
    turn: Option<Turn>,
    /// A turn that arrived while a long-lived agent was still acknowledging a cancel.
    queued: Option<TurnInput>,
    /// A long-lived agent that exited, waiting to be started again.
    restart: Option<Restart>,
    /// Exits of the long-lived agent since a turn last completed.
    crashes: u32,
}

impl SessionWorker {
    fn new(session: SessionId, out: Sender<Inbound>, config: Arc<ExternalConfig>) -> SessionWorker {
        SessionWorker {
            session,
            out,
            config,
            backend: None,
            running: None,
            turn: None,
            queued: None,
            restart: None,
            crashes: 0,
        }
    }

    fn run(mut self, commands: Receiver<AgentCommand>) {
        loop {
            let events = match &self.running {
                Some(r) => r.process.events().clone(),
                None => crossbeam_channel::never(),
            };
            let timer = match self.deadline() {
                Some(at) => self.config.clock.at(at),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(commands) -> cmd => match cmd {
                    Ok(cmd) => self.on_command(cmd),
                    Err(_) => break,
                },
                recv(events) -> event => self.on_process_event(event.unwrap_or(ProcEvent::Closed { error: None })),
                recv(timer) -> _ => self.on_timer(),
            }
        }
        // The runtime was dropped (host shutting down): end of input, SIGTERM, then SIGKILL.
        if let Some(mut running) = self.running.take() {
            running.process.stop(self.config.exit_grace);
        }
    }

    fn label(&self) -> &'static str {
        self.backend.as_ref().map_or("the agent", |(_, b)| b.label())
    }

    fn emit(&self, turn_id: u64, event: AgentEvent) {
        let output = AgentOutput { session: self.session.clone(), turn_id, event };
        if self.out.send(Inbound::Agent(output)).is_err() {
            tracing::debug!(session = %self.session, "engine gone; agent output dropped");
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let restart = self.restart.as_ref().map(|r| r.at);
        let turn = self.turn_deadline();
        match (restart, turn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn turn_deadline(&self) -> Option<Instant> {
        let turn = self.turn.as_ref()?;
        match turn.phase {
            Phase::Cancelling { kill_at } => Some(kill_at),
            Phase::Running if self.running.is_none() => None,
            Phase::Running => {
                let waiting = self.backend.as_ref().is_some_and(|(_, b)| b.waiting_on_host());
                (!waiting).then(|| turn.last_output + self.config.hang_timeout)
            }
        }
    }

    fn on_command(&mut self, cmd: AgentCommand) {
        match cmd {
            AgentCommand::StartTurn {
                session,
                turn_id,
                workspace_dir,
                spec,
                prompt,
                author_name,
                conversation,
                settings,
            } => {
                let input =
                    TurnInput { session, turn_id, workspace_dir, spec, prompt, author_name, conversation, settings };
                match &self.turn {
                    None => self.start_turn(input),
                    Some(Turn { phase: Phase::Cancelling { .. }, .. })
                        if self.backend.as_ref().is_some_and(|(_, b)| b.long_lived()) =>
                    {
                        // Let the agent finish acknowledging the cancel; start right after.
                        self.queued = Some(input);
                    }
                    Some(old) => {
                        tracing::warn!(session = %self.session, old = old.id, new = input.turn_id, "new turn while another is open; stopping the old one");
                        self.turn = None;
                        self.end_backend_turn(false);
                        self.kill_process();
                        self.start_turn(input);
                    }
                }
            }
            AgentCommand::Resolve { turn_id, request_id, resolution, .. } => {
                let live = matches!(&self.turn, Some(t) if t.id == turn_id && matches!(t.phase, Phase::Running));
                if !live {
                    tracing::debug!(session = %self.session, turn_id, %request_id, "resolution for a turn that is not running; ignored");
                    return;
                }
                let Some((_, backend)) = self.backend.as_mut() else { return };
                let reaction = backend.resolve(&request_id, resolution);
                if let Some(turn) = self.turn.as_mut() {
                    // The watchdog restarts from the decision, not from the agent's last line.
                    turn.last_output = self.config.clock.now();
                }
                self.apply(reaction);
            }
            AgentCommand::Cancel { turn_id, .. } => {
                if self.queued.as_ref().is_some_and(|q| q.turn_id == turn_id) {
                    self.queued = None;
                    return;
                }
                let live = matches!(&self.turn, Some(t) if t.id == turn_id && matches!(t.phase, Phase::Running));
                if !live {
                    return;
                }
                let lines = match (self.backend.as_mut(), self.running.is_some()) {
                    (Some((_, backend)), true) => backend.cancel(),
                    _ => Vec::new(),
                };
                let sent = !lines.is_empty() && lines.iter().all(|l| self.write(l));
                if sent {
                    let kill_at = self.config.clock.now() + self.config.cancel_grace;
                    if let Some(turn) = self.turn.as_mut() {
                        turn.phase = Phase::Cancelling { kill_at };
                    }
                } else {
                    self.turn = None;
                    self.end_backend_turn(false);
                    self.kill_process();
                }
            }
        }
    }

    fn start_turn(&mut self, input: TurnInput) {
        self.restart = None;
        let turn_id = input.turn_id;
        let kind = input.spec.kind.clone();
        if self.backend.as_ref().is_none_or(|(k, _)| *k != kind) {
            self.kill_process();
            match make_backend(&kind, &self.session, &self.config) {
                Some(backend) => self.backend = Some((kind.clone(), backend)),
                None => {
                    self.backend = None;
                    self.emit(
                        turn_id,
                        AgentEvent::Failed(format!(
                            "unknown agent backend '{kind}' (expected claude, codex or command)"
                        )),
                    );
                    return;
                }
            }
        }
        let Some((_, backend)) = self.backend.as_mut() else { return };
        let spec = match backend.spawn_spec(&input) {
            Ok(spec) => spec,
            Err(reason) => {
                backend.end_turn(false);
                self.emit(turn_id, AgentEvent::Failed(reason));
                return;
            }
        };
        let reusable = backend.long_lived()
            && self.running.as_mut().is_some_and(|r| r.spec == spec && r.process.try_wait().is_none());
        if !reusable {
            if let Some(mut old) = self.running.take() {
                old.process.kill();
            }
            match AgentProcess::spawn(&spec, self.config.max_line_bytes) {
                Ok(process) => self.running = Some(Running { process, spec, greeted: false }),
                Err(e) => {
                    let reason = match e {
                        SpawnError::NotFound { program } => backend.not_found(&program),
                        other => other.to_string(),
                    };
                    backend.end_turn(false);
                    tracing::warn!(session = %self.session, %reason, "agent could not start");
                    self.emit(turn_id, AgentEvent::Failed(reason));
                    return;
                }
            }
        }
        // A process started ahead of the turn (after a crash) still needs its greeting.
        let fresh = !reusable || self.running.as_ref().is_some_and(|r| !r.greeted);
        if let Some(running) = self.running.as_mut() {
            running.greeted = true;
        }
        let lines = backend.begin_turn(&input, fresh);
        self.turn = Some(Turn {
            id: turn_id,
            phase: Phase::Running,
            last_output: self.config.clock.now(),
            saw_output: false,
            input,
        });
        for line in &lines {
            self.write(line);
        }
    }

    fn write(&self, line: &Value) -> bool {
        self.running.as_ref().is_some_and(|r| r.process.send_json(line))
    }

    /// Applies a backend reaction to the current turn.
    fn apply(&mut self, reaction: Reaction) {
        for line in &reaction.replies {
            self.write(line);
        }
        let Some(turn) = &self.turn else {
            if !reaction.events.is_empty() || reaction.end.is_some() {
                tracing::debug!(session = %self.session, "agent output outside a turn ignored");
            }
            return;
        };
        let (turn_id, cancelling) = (turn.id, matches!(turn.phase, Phase::Cancelling { .. }));
        if !cancelling {
            for event in reaction.events {
                self.emit(turn_id, event);
            }
        }
        if let Some(end) = reaction.end {
            if let (TurnEnd::ConversationLost(reason), false) = (&end, cancelling) {
                if !self.start_afresh(reason) {
                    self.finish(TurnEnd::Failed(reason.clone()));
                }
                return;
            }
            if cancelling {
                // The agent acknowledged the cancel; the engine already ended the turn.
                self.turn = None;
                self.end_backend_turn(false);
                self.after_turn();
            } else {
                self.finish(end);
            }
        }
    }

    /// Ends the running turn with `end`, reported to the engine.
    fn finish(&mut self, end: TurnEnd) {
        let Some(turn) = self.turn.take() else { return };
        let ok = end == TurnEnd::Done;
        if ok {
            self.crashes = 0;
        }
        self.end_backend_turn(ok);
        self.emit(
            turn.id,
            match end {
                TurnEnd::Done => AgentEvent::Done,
                TurnEnd::Failed(reason) | TurnEnd::ConversationLost(reason) => AgentEvent::Failed(reason),
            },
        );
        self.after_turn();
    }

    /// Between turns: a one-shot agent is retired; a queued turn starts.
    fn after_turn(&mut self) {
        let one_shot = self.backend.as_ref().is_some_and(|(_, b)| !b.long_lived());
        if one_shot {
            if let Some(mut running) = self.running.take() {
                running.process.retire(self.config.exit_grace);
            }
        }
        if let Some(next) = self.queued.take() {
            self.start_turn(next);
        }
    }

    fn end_backend_turn(&mut self, ok: bool) {
        if let Some((_, backend)) = self.backend.as_mut() {
            backend.end_turn(ok);
        }
    }

    fn kill_process(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.process.kill();
        }
    }

    fn on_process_event(&mut self, event: ProcEvent) {
        match event {
            ProcEvent::Line(line) => {
                if let Some(turn) = self.turn.as_mut() {
                    turn.last_output = self.config.clock.now();
                    turn.saw_output = true;
                }
                let Some((_, backend)) = self.backend.as_mut() else { return };
                let reaction = backend.on_line(&line);
                self.apply(reaction);
            }
            ProcEvent::LineTooLong { limit } => {
                let reason =
                    format!("{} wrote an output line longer than {limit} bytes; the turn was stopped", self.label());
                tracing::warn!(session = %self.session, %reason);
                self.kill_process();
                self.fail_or_drop(reason);
            }
            ProcEvent::Closed { error } => {
                let Some(mut running) = self.running.take() else { return };
                let status = running.process.wait_timeout(self.config.exit_grace).or_else(|| running.process.kill());
                let stderr = running.process.stderr_summary(400);
                let label = self.label();
                let mut reason = match &self.turn {
                    Some(t) if !t.saw_output => {
                        format!("{label} exited before producing any output ({})", describe_status(status))
                    }
                    _ => format!("{label} exited during the turn ({})", describe_status(status)),
                };
                if let Some(error) = error {
                    reason.push_str(&format!("; reading its output failed: {error}"));
                }
                if !stderr.is_empty() {
                    reason.push_str(&format!(": {stderr}"));
                }
                if self.turn.is_none() {
                    tracing::info!(session = %self.session, %reason, "agent process ended between turns");
                }
                if self.start_afresh(&reason) {
                    return;
                }
                self.fail_or_drop(reason);
                self.schedule_restart(running.spec);
            }
        }
    }

    /// The process of a running turn ended because its conversation could not be continued:
    /// tell the room, forget the conversation, and run the same turn again in a new one.
    fn start_afresh(&mut self, reason: &str) -> bool {
        let Some(Turn { phase: Phase::Running, input, .. }) = &self.turn else { return false };
        let mut input = input.clone();
        let Some((_, backend)) = self.backend.as_mut() else { return false };
        let Some(notice) = backend.start_afresh(&mut input) else { return false };
        tracing::warn!(session = %self.session, %reason, "the agent could not continue its conversation; starting a new one");
        let turn_id = input.turn_id;
        self.emit(turn_id, AgentEvent::Delta(format!("{notice}\n\n")));
        self.emit(turn_id, AgentEvent::Conversation(None));
        self.turn = None;
        self.end_backend_turn(false);
        self.start_turn(input);
        true
    }

    /// Fails a running turn with `reason`; a cancelled turn just ends silently.
    fn fail_or_drop(&mut self, reason: String) {
        match &self.turn {
            Some(Turn { phase: Phase::Running, .. }) => self.finish(TurnEnd::Failed(reason)),
            Some(Turn { phase: Phase::Cancelling { .. }, .. }) => {
                self.turn = None;
                self.end_backend_turn(false);
                self.after_turn();
            }
            None => {}
        }
    }

    /// A long-lived agent exited: start it again (at once, then backing off) so the next turn
    /// does not wait for its start-up. Not when a turn already started a new process.
    fn schedule_restart(&mut self, spec: SpawnSpec) {
        let long_lived = self.backend.as_ref().is_some_and(|(_, b)| b.long_lived());
        self.crashes += 1;
        if !long_lived || self.running.is_some() {
            return;
        }
        let Some(wait) = restart_after(self.crashes) else { return };
        self.restart = Some(Restart { at: self.config.clock.now() + wait, spec });
    }

    /// Starts the agent scheduled by [`schedule_restart`](Self::schedule_restart), if it is due.
    fn restart_if_due(&mut self) {
        if self.restart.as_ref().is_none_or(|r| self.config.clock.now() < r.at) || self.running.is_some() {
            return;
        }
        let Some(restart) = self.restart.take() else { return };
        match AgentProcess::spawn(&restart.spec, self.config.max_line_bytes) {
            Ok(process) => {
                tracing::info!(session = %self.session, crashes = self.crashes, "agent restarted after it exited");
                self.running = Some(Running { process, spec: restart.spec, greeted: false });
            }
            Err(e) => {
                tracing::warn!(session = %self.session, error = %e, "agent could not be restarted; the next turn will try")
            }
        }
    }

    fn on_timer(&mut self) {
        self.restart_if_due();
        let Some(deadline) = self.turn_deadline() else { return };
        if self.config.clock.now() < deadline {
            return;
        }
        match self.turn.as_ref().map(|t| &t.phase) {
            Some(Phase::Running) => {
                let reason = format!(
                    "{} produced no output for {} s and was stopped (hang watchdog)",
                    self.label(),
                    self.config.hang_timeout.as_secs_f64()
                );
                tracing::warn!(session = %self.session, %reason);
                self.kill_process();
                self.finish(TurnEnd::Failed(reason));
            }
            Some(Phase::Cancelling { .. }) => {
                tracing::info!(session = %self.session, "agent did not stop after cancel; killing it");
                self.kill_process();
                self.fail_or_drop(String::new());
            }
            None => {}
        }
    }
}

impl Drop for SessionWorker {
    fn drop(&mut self) {
        // A panic in the worker must not leave the engine waiting for a turn that never ends.
        if std::thread::panicking() {
            if let Some(Turn { id, phase: Phase::Running, .. }) = &self.turn {
                self.emit(*id, AgentEvent::Failed("internal error in the agent worker".to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_that_keeps_exiting_is_restarted_four_times_and_left_stopped_after_five_exits() {
        let waits: Vec<Option<u64>> = (1..=7).map(|n| restart_after(n).map(|d| d.as_secs())).collect();
        assert_eq!(
            waits,
            [Some(0), Some(1), Some(2), Some(4), None, None, None],
            "docs/AGENTS.md: after 5 exits in a row"
        );
    }
}
