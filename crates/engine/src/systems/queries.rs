//! Read-only requests: `ping`, `list_workspaces`, `list_sessions`, `read_workspace_file`.
//!
//! Scope rule: a remote asking about anything outside its share's workspaces gets `not_found`,
//! exactly as if it did not exist. File reads are confined to the workspace directory after
//! canonicalisation (no `..`, no symlink escape) and capped in size.

use super::params::*;
use super::resources::*;
use super::util::{caller, in_scope, reply_err, reply_no_session, reply_ok};
use crate::components::{EventLog, Participant, Presence, Session, TurnLock, Workspace};
use crate::config::EngineConfig;
use crate::protocol::*;
use bevy_ecs::prelude::*;
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

pub fn queries(
    mut requests: MessageReader<Incoming>,
    dir: Directory,
    config: Res<EngineConfig>,
    files: Res<Files>,
    workspaces: Query<&Workspace>,
    sessions: Query<(&Session, &TurnLock, &EventLog)>,
    mut staged: ResMut<Staged>,
) {
    let Directory { index, conns, participants, shares } = dir;
    for req in requests.read() {
        match &req.method {
            Method::Ping(p) => {
                reply_ok(
                    &mut staged,
                    req.conn,
                    &req.id,
                    PingResult { pong: true, nonce: p.nonce.clone(), protocol_version: PROTOCOL_VERSION },
                );
            }
            Method::ListWorkspaces(_) => {
                let Some((me, share)) = caller(&index, &conns, &participants, &shares, req.conn) else { continue };
                let list = index
                    .workspaces
                    .values()
                    .filter_map(|&e| workspaces.get(e).ok())
                    .filter(|w| in_scope(me, share, &w.id))
                    .map(|w| WorkspaceInfo {
                        id: w.id.clone(),
                        name: w.name.clone(),
                        agent: w.agent.kind.clone(),
                        // The command line names the host's paths: the host's eyes only.
                        agent_detail: me.id.is_host().then(|| w.agent.label()),
                    })
                    .collect();
                reply_ok(&mut staged, req.conn, &req.id, ListWorkspacesResult { workspaces: list });
            }
            Method::ListSessions(p) => {
                let Some((me, share)) = caller(&index, &conns, &participants, &shares, req.conn) else { continue };
                if let Some(w) = &p.workspace_id {
                    if !index.workspaces.contains_key(w) || !in_scope(me, share, w) {
                        reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("no workspace {w}"));
                        continue;
                    }
                }
                let list = index
                    .sessions
                    .values()
                    .filter_map(|&e| sessions.get(e).ok())
                    .filter(|(s, _, _)| in_scope(me, share, &s.workspace))
                    .filter(|(s, _, _)| p.workspace_id.as_ref().is_none_or(|w| *w == s.workspace))
                    .map(|(s, l, g)| SessionInfo {
                        read_seq: me.read.get(&s.id).copied(),
                        ..session_info(s, l, g, &mut participants.iter(), &s.agent.kind)
                    })
                    .collect();
                reply_ok(&mut staged, req.conn, &req.id, ListSessionsResult { sessions: list });
            }
            Method::ReadWorkspaceFile(p) => {
                let Some((me, share)) = caller(&index, &conns, &participants, &shares, req.conn) else { continue };
                let Some(e) = index.session_in_scope(me, share, &p.session_id) else {
                    reply_no_session(&mut staged, req.conn, &req.id, &p.session_id);
                    continue;
                };
                let Ok((s, _, _)) = sessions.get(e) else { continue };
                let Some(w) = index.workspaces.get(&s.workspace).and_then(|&e| workspaces.get(e).ok()) else {
                    reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, "workspace missing");
                    continue;
                };
                match files.0.read(Path::new(&w.dir), &p.path, config.max_file_bytes) {
                    // Control characters take six bytes each on the wire: the frame bound holds.
                    Ok((_, content))
                        if crate::protocol::json_len(&content) > crate::protocol::MAX_HOST_FRAME_BYTES / 2 =>
                    {
                        reply_err(
                            &mut staged,
                            req.conn,
                            &req.id,
                            ErrorCode::FileRefused,
                            "the file is mostly control characters and too large to send as text",
                        )
                    }
                    Ok((size, content)) => {
                        reply_ok(&mut staged, req.conn, &req.id, ReadFileResult { path: p.path.clone(), size, content })
                    }
                    Err(m) => reply_err(&mut staged, req.conn, &req.id, ErrorCode::FileRefused, m),
                }
            }
            _ => {}
        }
    }
}

/// Whether the participant is present (not gone).
pub fn present(p: &Participant) -> bool {
    !matches!(p.presence, Presence::Gone)
}
