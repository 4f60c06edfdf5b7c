//! Read-only requests: `ping`, `list_workspaces`, `list_sessions`, `read_workspace_file`.
//!
//! Scope rule: a remote asking about anything outside its share's workspaces gets `not_found`,
//! exactly as if it did not exist. File reads are confined to the workspace directory after
//! canonicalisation (no `..`, no symlink escape) and capped in size.

use super::params::*;
use super::requests::{Lookup, Req};
use super::resources::*;
use super::util::{in_scope, reply_err, reply_no_session, reply_ok};
use crate::components::{EventLog, Participant, Presence, Session, TurnLock, Workspace};
use crate::config::EngineConfig;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use std::path::Path;

/// Builds the `SessionInfo` row for a session.
pub fn session_info(
    s: &Session,
    lock: &TurnLock,
    log: &EventLog,
    participants: &mut dyn Iterator<Item = &Participant>,
    agent: &str,
) -> SessionInfo {
    let participant_count =
        participants.filter(|p| p.presence.is_present() && p.sessions.contains(&s.id)).count() as u32;
    SessionInfo {
        id: s.id.clone(),
        workspace_id: s.workspace.clone(),
        title: s.title.clone(),
        status: s.status,
        turn_holder: lock.holder.clone(),
        participant_count,
        agent: agent.to_string(),
        last_seq: log.last_seq(),
        plan_first: s.agent.plan_first(),
        read_seq: None,
        agent_settings: s.agent_settings.clone(),
    }
}

/// What the read-only requests read.
#[derive(SystemParam)]
pub struct Lookups<'w, 's> {
    dir: Directory<'w, 's>,
    config: Res<'w, EngineConfig>,
    files: Res<'w, Files>,
    workspaces: Query<'w, 's, &'static Workspace>,
    sessions: Query<'w, 's, (&'static Session, &'static TurnLock, &'static EventLog)>,
    staged: ResMut<'w, Staged>,
}

pub fn queries(mut requests: MessageReader<Req<Lookup>>, mut lookups: Lookups) {
    for req in requests.read() {
        match &req.params {
            Lookup::Ping(p) => lookups.ping(req, p),
            Lookup::ListWorkspaces => lookups.list_workspaces(req),
            Lookup::ListSessions(p) => lookups.list_sessions(req, p),
            Lookup::ReadWorkspaceFile(p) => lookups.read_workspace_file(req, p),
        }
    }
}

impl Lookups<'_, '_> {
    /// `ping`: answered to anyone, authenticated or not.
    fn ping(&mut self, req: &Req<Lookup>, p: &PingParams) {
        let result = PingResult { pong: true, nonce: p.nonce.clone(), protocol_version: PROTOCOL_VERSION };
        reply_ok(&mut self.staged, req.conn, &req.id, result);
    }

    /// `list_workspaces`: the workspaces in the caller's scope, by id.
    fn list_workspaces(&mut self, req: &Req<Lookup>) {
        let Some((me, share)) = self.dir.get(req.conn) else { return };
        let list = self
            .dir
            .index
            .workspaces
            .values()
            .filter_map(|&e| self.workspaces.get(e).ok())
            .filter(|w| in_scope(me, share, &w.id))
            .map(|w| WorkspaceInfo {
                id: w.id.clone(),
                name: w.name.clone(),
                agent: w.agent.kind.clone(),
                // The command line names the host's paths: the host's eyes only.
                agent_detail: me.id.is_host().then(|| w.agent.label()),
            })
            .collect();
        reply_ok(&mut self.staged, req.conn, &req.id, ListWorkspacesResult { workspaces: list });
    }

    /// `list_sessions`: the sessions in the caller's scope (of one workspace, if named), by id.
    fn list_sessions(&mut self, req: &Req<Lookup>, p: &ListSessionsParams) {
        let Some((me, share)) = self.dir.get(req.conn) else { return };
        let index = &self.dir.index;
        if let Some(w) = &p.workspace_id {
            if !index.workspaces.contains_key(w) || !in_scope(me, share, w) {
                return reply_err(
                    &mut self.staged,
                    req.conn,
                    &req.id,
                    ErrorCode::NotFound,
                    format!("no workspace {w}"),
                );
            }
        }
        let list = index
            .sessions
            .values()
            .filter_map(|&e| self.sessions.get(e).ok())
            .filter(|(s, _, _)| in_scope(me, share, &s.workspace))
            .filter(|(s, _, _)| p.workspace_id.as_ref().is_none_or(|w| *w == s.workspace))
            .map(|(s, l, g)| SessionInfo {
                read_seq: me.read.get(&s.id).copied(),
                ..session_info(s, l, g, &mut self.dir.participants.iter(), &s.agent.kind)
            })
            .collect();
        reply_ok(&mut self.staged, req.conn, &req.id, ListSessionsResult { sessions: list });
    }

    /// `read_workspace_file`: a file of the session's workspace, through [`Files`].
    fn read_workspace_file(&mut self, req: &Req<Lookup>, p: &ReadFileParams) {
        let Some((me, share)) = self.dir.get(req.conn) else { return };
        let index = &self.dir.index;
        let Some(e) = index.session_in_scope(me, share, &p.session_id) else {
            return reply_no_session(&mut self.staged, req.conn, &req.id, &p.session_id);
        };
        let Ok((s, _, _)) = self.sessions.get(e) else { return };
        let Some(w) = index.workspaces.get(&s.workspace).and_then(|&e| self.workspaces.get(e).ok()) else {
            return reply_err(&mut self.staged, req.conn, &req.id, ErrorCode::NotFound, "workspace missing");
        };
        let staged = &mut self.staged;
        match self.files.0.read(Path::new(&w.dir), &p.path, self.config.max_file_bytes) {
            // Control characters take six bytes each on the wire: the frame bound holds.
            Ok((_, content)) if crate::protocol::json_len(&content) > crate::protocol::MAX_HOST_FRAME_BYTES / 2 => {
                let why = "the file is mostly control characters and too large to send as text";
                reply_err(staged, req.conn, &req.id, ErrorCode::FileRefused, why)
            }
            Ok((size, content)) => {
                reply_ok(staged, req.conn, &req.id, ReadFileResult { path: p.path.clone(), size, content })
            }
            Err(m) => reply_err(staged, req.conn, &req.id, ErrorCode::FileRefused, m),
        }
    }
}

/// Whether the participant is present (not gone).
pub fn present(p: &Participant) -> bool {
    !matches!(p.presence, Presence::Gone)
}
