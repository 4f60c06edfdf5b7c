//! Read-only requests: `ping`, `list_workspaces`, `list_sessions`, `read_workspace_file`.
//!
//! Scope rule: a remote asking about anything outside its share's workspaces gets `not_found`,
//! exactly as if it did not exist. File reads are confined to the workspace directory after
//! canonicalisation (no `..`, no symlink escape) and capped in size.

use super::params::*;
use super::resources::*;
use super::util::{caller, in_scope, reply_err, reply_ok};
use crate::engine::components::{EventLog, Participant, Presence, Session, Share, TurnLock, Workspace};
use crate::engine::config::EngineConfig;
use crate::ids::SessionId;
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
                    .map(|w| WorkspaceInfo { id: w.id.clone(), name: w.name.clone(), agent: w.agent.kind.clone() })
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
                let Some((s, _, _)) = visible_session(&index, &sessions, me, share, &p.session_id) else {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::NotFound,
                        format!("no session {}", p.session_id),
                    );
                    continue;
                };
                let Some(w) = index.workspaces.get(&s.workspace).and_then(|&e| workspaces.get(e).ok()) else {
                    reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, "workspace missing");
                    continue;
                };
                match read_confined(Path::new(&w.dir), &p.path, config.max_file_bytes) {
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

/// The session if it exists and is in the caller's scope.
pub fn visible_session<'a>(
    index: &Index,
    sessions: &'a Query<(&Session, &TurnLock, &EventLog)>,
    me: &Participant,
    share: Option<&Share>,
    id: &SessionId,
) -> Option<(&'a Session, &'a TurnLock, &'a EventLog)> {
    let row = sessions.get(*index.sessions.get(id)?).ok()?;
    in_scope(me, share, &row.0.workspace).then_some(row)
}

/// Reads `rel` inside `root`, refusing anything that resolves outside it.
pub fn read_confined(root: &Path, rel: &str, max: u64) -> Result<(u64, String), String> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() || rel_path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err("path must be relative to the workspace and must not contain '..'".into());
    }
    let root = root.canonicalize().map_err(|e| format!("workspace directory unavailable: {e}"))?;
    let full = root.join(rel_path).canonicalize().map_err(|_| format!("no file {rel} in the workspace"))?;
    if !full.starts_with(&root) {
        return Err("path resolves outside the workspace (symlink escape refused)".into());
    }
    let meta = std::fs::metadata(&full).map_err(|e| format!("cannot read {rel}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{rel} is {} bytes; the limit is {max} bytes", meta.len()));
    }
    let bytes = std::fs::read(&full).map_err(|e| format!("cannot read {rel}: {e}"))?;
    let content = String::from_utf8(bytes).map_err(|_| format!("{rel} is not UTF-8 text"))?;
    Ok((meta.len(), content))
}

/// Whether the participant is present (not gone).
pub fn present(p: &Participant) -> bool {
    !matches!(p.presence, Presence::Gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reads_are_confined_to_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(read_confined(dir.path(), "a.txt", 100).unwrap(), (5, "hello".into()));
        assert!(read_confined(dir.path(), "../a.txt", 100).is_err());
        assert!(read_confined(dir.path(), "/etc/passwd", 100).is_err());
        assert!(read_confined(dir.path(), "a.txt", 2).unwrap_err().contains("limit"));
        assert!(read_confined(dir.path(), "sub", 100).is_err());
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("secret"), "s").unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
            assert!(read_confined(dir.path(), "link", 100).unwrap_err().contains("outside"));
        }
    }
}
