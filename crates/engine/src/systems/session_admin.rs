//! Host session management: add workspaces, create, rename, clear and fork sessions.
//! Clearing sends `history_replaced` (clients refetch); a fork keeps message authors.

use super::params::*;
use super::queries::session_info;
use super::resources::*;
use super::util::{emit, reply_err, reply_history_unreadable, reply_no_session, reply_ok};
use crate::components::*;
use crate::ids::{MessageId, ParticipantId, SessionId, WorkspaceId};
use crate::persist::{AuditRow, MessageRow, SessionRecord, StoreOp, WorkspaceRow};
use crate::protocol::Event;
use crate::protocol::*;
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;

pub fn session_admin(
    mut requests: MessageReader<Incoming>,
    env: TickEnv,
    registry: Registry,
    workspaces: Query<&Workspace>,
    mut participants: Query<&mut Participant>,
    mut sessions: Query<(&mut Session, &TurnLock, &mut EventLog, &mut History)>,
    fx: Effects,
) {
    let Registry { mut index, mut counters, mut commands } = registry;
    let Effects { mut staged, mut batch } = fx;
    let TickEnv { clock, config } = env;
    let now = clock.now;
    for req in requests.read() {
        match &req.method {
            Method::AddWorkspace(p) => {
                if p.name.trim().is_empty() || p.dir.trim().is_empty() {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::InvalidParams,
                        "name and dir must not be empty",
                    );
                    continue;
                }
                let agent = p.agent.clone().unwrap_or_default();
                // The host's resolver (absolute, executable agent command) when it set one.
                let agent = match config.resolve_agent.map(|resolve| resolve(&agent)) {
                    None => agent,
                    Some(Ok(resolved)) => resolved,
                    Some(Err(message)) => {
                        reply_err(&mut staged, req.conn, &req.id, ErrorCode::InvalidParams, message);
                        continue;
                    }
                };
                counters.workspace += 1;
                let w = Workspace(WorkspaceRow {
                    id: WorkspaceId::nth(counters.workspace),
                    name: p.name.trim().to_string(),
                    dir: p.dir.clone(),
                    agent,
                });
                batch.push(StoreOp::PutWorkspace(w.row()));
                let info = WorkspaceInfo {
                    id: w.id.clone(),
                    name: w.name.clone(),
                    agent: w.agent.kind.clone(),
                    agent_detail: Some(w.agent.label()),
                };
                let id = w.id.clone();
                let e = commands.spawn(w).id();
                index.workspaces.insert(id, e);
                reply_ok(&mut staged, req.conn, &req.id, info);
            }
            Method::CreateSession(p) => {
                let Some(w) = index.workspaces.get(&p.workspace_id).and_then(|&e| workspaces.get(e).ok()) else {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::NotFound,
                        format!("no workspace {}", p.workspace_id),
                    );
                    continue;
                };
                let title = title_or(&p.title, "Untitled");
                // A session may start its turns in plan mode differently from its workspace.
                let agent =
                    crate::persist::AgentSpec { plan_first: p.plan_first.or(w.agent.plan_first), ..w.agent.clone() };
                let (session, lock, log) = new_session(&mut counters, &w.id, title, &agent, p.vote_deadline_ms, now);
                let id = session.id.clone();
                batch.push(StoreOp::PutSession(session.row(&lock, &log)));
                let info = host_joins(&index, &mut participants, &session, &lock, &log, &mut batch);
                let workspace = session.workspace.clone();
                let e = commands.spawn((session, lock, log, History::default())).id();
                index.add_session(id, workspace, e);
                reply_ok(&mut staged, req.conn, &req.id, info);
            }
            Method::RenameSession(p) => {
                let Some((mut s, lock, mut log, _)) =
                    index.sessions.get(&p.session_id).and_then(|&e| sessions.get_mut(e).ok())
                else {
                    reply_no_session(&mut staged, req.conn, &req.id, &p.session_id);
                    continue;
                };
                s.title = title_or(&p.title, &s.title.clone());
                let body = Event::SessionUpdated(SessionUpdated {
                    title: s.title.clone(),
                    status: s.status,
                    agent_settings: s.agent_settings.clone(),
                });
                emit(&mut log, &p.session_id, body, &mut batch, &mut staged);
                batch.push(StoreOp::PutSession(s.row(lock, &log)));
                reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
            }
            Method::ClearSession(p) => {
                let Some((mut s, lock, mut log, mut history)) =
                    index.sessions.get(&p.session_id).and_then(|&e| sessions.get_mut(e).ok())
                else {
                    reply_no_session(&mut staged, req.conn, &req.id, &p.session_id);
                    continue;
                };
                history.clear();
                log.tail.clear();
                // One meaning of "clear": the room's history and the agent's memory go together;
                // the next turn starts the agent on a new conversation.
                s.agent_memory = Default::default();
                batch.push(StoreOp::ClearSession(p.session_id.clone()));
                emit(
                    &mut log,
                    &p.session_id,
                    Event::HistoryReplaced(HistoryReplaced { reason: "cleared by the host".into() }),
                    &mut batch,
                    &mut staged,
                );
                batch.push(StoreOp::PutSession(s.row(lock, &log)));
                batch.push(StoreOp::Audit(AuditRow {
                    at: now,
                    actor: "host".into(),
                    action: "session_cleared".into(),
                    target: p.session_id.to_string(),
                    detail: String::new(),
                }));
                reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
            }
            _ => {}
        }
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
    (session, TurnLock::default(), EventLog { next_seq: 1, tail: Default::default() })
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
    mut requests: MessageReader<Incoming>,
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
        let Method::ForkSession(p) = &req.method else { continue };
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
