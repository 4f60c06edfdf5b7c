//! Host session management: add workspaces, create, rename, clear and fork sessions.
//! Clearing sends `history_replaced` (clients refetch); a fork keeps message authors.

use super::params::*;
use super::queries::session_info;
use super::requests::{ForkSession, Req, SessionCommand};
use super::resources::*;
use super::util::{emit, reply_history_unreadable, reply_no_session, reply_ok};
use crate::components::*;
use crate::ids::{MessageId, ParticipantId, SessionId, WorkspaceId};
use crate::persist::{AuditRow, MessageRow, SessionRecord, StoreOp, WorkspaceRow};
use crate::protocol::Event;
use crate::protocol::*;
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

/// What workspace and session administration reads and writes.
#[derive(SystemParam)]
pub struct SessionDesk<'w, 's> {
    env: TickEnv<'w>,
    registry: Registry<'w, 's>,
    workspaces: Query<'w, 's, &'static Workspace>,
    participants: Query<'w, 's, &'static mut Participant>,
    sessions: Query<'w, 's, (&'static mut Session, &'static TurnLock, &'static mut EventLog, &'static mut History)>,
    fx: Effects<'w>,
}

pub fn session_admin(mut requests: MessageReader<Req<SessionCommand>>, mut desk: SessionDesk) {
    for req in requests.read() {
        match &req.params {
            SessionCommand::AddWorkspace(p) => desk.add_workspace(req, p),
            SessionCommand::CreateSession(p) => desk.create_session(req, p),
            SessionCommand::RenameSession(p) => desk.rename_session(req, p),
            SessionCommand::ClearSession(p) => desk.clear_session(req, p),
        }
    }
}

impl SessionDesk<'_, '_> {
    /// `add_workspace`: a new workspace (its agent command resolved by the host, if it set a
    /// resolver).
    fn add_workspace(&mut self, req: &Req<SessionCommand>, p: &AddWorkspaceParams) {
        if p.name.trim().is_empty() || p.dir.trim().is_empty() {
            let why = "name and dir must not be empty";
            return self.fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, why);
        }
        let agent = p.agent.clone().unwrap_or_default();
        // The host's resolver (absolute, executable agent command) when it set one.
        let agent = match self.env.config.resolve_agent.map(|resolve| resolve(&agent)) {
            None => agent,
            Some(Ok(resolved)) => resolved,
            Some(Err(message)) => return self.fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, message),
        };
        let Registry { index, counters, commands } = &mut self.registry;
        counters.workspace += 1;
        let w = Workspace(WorkspaceRow {
            id: WorkspaceId::nth(counters.workspace),
            name: p.name.trim().to_string(),
            dir: p.dir.clone(),
            agent,
        });
        self.fx.persist(StoreOp::PutWorkspace(w.row()));
        let info = WorkspaceInfo {
            id: w.id.clone(),
            name: w.name.clone(),
            agent: w.agent.kind.clone(),
            agent_detail: Some(w.agent.label()),
        };
        let id = w.id.clone();
        let e = commands.spawn(w).id();
        index.workspaces.insert(id, e);
        self.fx.reply_ok(req.conn, &req.id, info);
    }

    /// `create_session`: a new idle session in a workspace; the host joins it.
    fn create_session(&mut self, req: &Req<SessionCommand>, p: &CreateSessionParams) {
        let Registry { index, counters, commands } = &mut self.registry;
        let Some(w) = index.workspaces.get(&p.workspace_id).and_then(|&e| self.workspaces.get(e).ok()) else {
            let why = format!("no workspace {}", p.workspace_id);
            return self.fx.reply_err(req.conn, &req.id, ErrorCode::NotFound, why);
        };
        let title = title_or(&p.title, "Untitled");
        // A session may start its turns in plan mode differently from its workspace.
        let agent = crate::persist::AgentSpec { plan_first: p.plan_first.or(w.agent.plan_first), ..w.agent.clone() };
        let (session, lock, log) = new_session(counters, &w.id, title, &agent, p.vote_deadline_ms, self.env.clock.now);
        let id = session.id.clone();
        self.fx.persist(StoreOp::PutSession(session.row(&lock, &log)));
        let info = host_joins(index, &mut self.participants, &session, &lock, &log, &mut self.fx.batch);
        let workspace = session.workspace.clone();
        let e = commands.spawn((session, lock, log, History::default())).id();
        index.add_session(id, workspace, e);
        self.fx.reply_ok(req.conn, &req.id, info);
    }

    /// `rename_session`: a new title, announced with `session_updated`.
    fn rename_session(&mut self, req: &Req<SessionCommand>, p: &RenameSessionParams) {
        let index = &self.registry.index;
        let Some((mut s, lock, mut log, _)) =
            index.sessions.get(&p.session_id).and_then(|&e| self.sessions.get_mut(e).ok())
        else {
            return reply_no_session(&mut self.fx.staged, req.conn, &req.id, &p.session_id);
        };
        s.title = title_or(&p.title, &s.title.clone());
        let body = Event::SessionUpdated(SessionUpdated {
            title: s.title.clone(),
            status: s.status,
            agent_settings: s.agent_settings.clone(),
        });
        self.fx.emit(&mut log, &p.session_id, body);
        self.fx.persist(StoreOp::PutSession(s.row(lock, &log)));
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }

    /// `clear_session`: the history and the agent's memory go; clients refetch
    /// (`history_replaced`).
    fn clear_session(&mut self, req: &Req<SessionCommand>, p: &SessionRef) {
        let index = &self.registry.index;
        let Some((mut s, lock, mut log, mut history)) =
            index.sessions.get(&p.session_id).and_then(|&e| self.sessions.get_mut(e).ok())
        else {
            return reply_no_session(&mut self.fx.staged, req.conn, &req.id, &p.session_id);
        };
        history.clear();
        log.tail.clear();
        // One meaning of "clear": the room's history and the agent's memory go together;
        // the next turn starts the agent on a new conversation.
        s.agent_memory = Default::default();
        self.fx.persist(StoreOp::ClearSession(p.session_id.clone()));
        let body = Event::HistoryReplaced(HistoryReplaced { reason: "cleared by the host".into() });
        self.fx.emit(&mut log, &p.session_id, body);
        self.fx.persist(StoreOp::PutSession(s.row(lock, &log)));
        self.fx.persist(StoreOp::Audit(AuditRow {
            at: self.env.clock.now,
            actor: "host".into(),
            action: "session_cleared".into(),
            target: p.session_id.to_string(),
            detail: String::new(),
        }));
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }
}

/// A new idle session with an empty log (the first event will be seq 1).
fn new_session(
    counters: &mut Counters,
    workspace: &WorkspaceId,
    title: String,
    agent: &crate::persist::AgentSpec,
    vote_deadline_ms: Option<u64>,
    now: u64,
) -> (Session, TurnLock, EventLog) {
    counters.session += 1;
    let session = Session(SessionRecord {
        id: SessionId::nth(counters.session),
        workspace: workspace.clone(),
        title,
        status: SessionStatus::Idle,
        agent: agent.clone(),
        vote_deadline_ms,
        created_at: now,
        allowed_tools: Default::default(),
        agent_memory: Default::default(),
        agent_settings: Default::default(),
    });
    (session, TurnLock::default(), EventLog { next_seq: 1, tail: Default::default(), resident: Some(now) })
}

fn title_or(t: &str, default: &str) -> String {
    let t = t.trim();
    if t.is_empty() {
        default.to_string()
    } else {
        t.chars().take(200).collect()
    }
}

/// The host is always present in its sessions.
fn host_joins(
    index: &Index,
    participants: &mut Query<&mut Participant>,
    session: &Session,
    lock: &TurnLock,
    log: &EventLog,
    batch: &mut PersistBatch,
) -> SessionInfo {
    if let Some(mut host) = index.participants.get(&ParticipantId::host()).and_then(|&e| participants.get_mut(e).ok()) {
        host.sessions.insert(session.id.clone());
        batch.push(StoreOp::PutParticipant(host.row()));
    }
    let mut info = session_info(session, lock, log, &mut std::iter::empty(), &session.agent.kind);
    info.participant_count = 1;
    info
}

/// `fork_session`: a new session holding a copy of the source's whole history (authors kept,
/// new message ids and seqs); the host joins it.
pub fn fork_session(
    mut requests: MessageReader<Req<ForkSession>>,
    clock: Res<Clock>,
    registry: Registry,
    mut participants: Query<&mut Participant>,
    sessions: Query<(&Session, &History)>,
    fx: Effects,
    mut archive: Archive,
) {
    let Registry { mut index, mut counters, mut commands } = registry;
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    for req in requests.read() {
        let ForkSession(p) = &req.params;
        let Some((src, history)) = index.sessions.get(&p.session_id).and_then(|&e| sessions.get(e).ok()) else {
            reply_no_session(&mut staged, req.conn, &req.id, &p.session_id);
            continue;
        };
        let title = p.title.as_deref().map(|t| title_or(t, "Fork")).unwrap_or_else(|| format!("{} (fork)", src.title));
        let (session, lock, mut log) =
            new_session(&mut counters, &src.workspace, title, &src.agent, src.vote_deadline_ms, now);
        let id = session.id.clone();
        // The source's whole history: the store's part older than the in-memory tail,
        // then the tail (which may hold messages of this very tick, not committed yet).
        let older = match history.first_seq().filter(|_| history.has_older) {
            Some(first) => match archive.messages_before(&p.session_id, first, usize::MAX) {
                Ok((rows, _)) => rows,
                Err(e) => {
                    reply_history_unreadable(&mut staged, req.conn, &req.id, &p.session_id, &e);
                    continue;
                }
            },
            None => Vec::new(),
        };
        let mut copy = History::default();
        // Commit the session row before its messages (messages reference the session).
        batch.push(StoreOp::PutSession(session.row(&lock, &log)));
        for m in older.into_iter().chain(history.messages.iter().cloned()) {
            counters.message += 1;
            let mid = MessageId::nth(counters.message);
            let row = MessageRow { id: mid, session: id.clone(), seq: 0, client_msg_id: None, created_at: now, ..m };
            let seq = emit(&mut log, &id, super::history::message_event(&row), &mut batch, &mut staged);
            let row = MessageRow { seq, ..row };
            batch.push(StoreOp::PutMessage(row.clone()));
            copy.push(row);
        }
        batch.push(StoreOp::PutSession(session.row(&lock, &log)));
        let info = host_joins(&index, &mut participants, &session, &lock, &log, &mut batch);
        let workspace = session.workspace.clone();
        let e = commands.spawn((session, lock, log, copy)).id();
        index.add_session(id, workspace, e);
        reply_ok(&mut staged, req.conn, &req.id, info);
    }
}
