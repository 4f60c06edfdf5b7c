//! Small helpers shared by systems: replies, event emission, scope checks.

use super::resources::{Outgoing, Staged};
use crate::engine::components::{EventLog, Participant, Share};
use crate::ids::{ConnId, SessionId};
use crate::persist::{EventRow, PersistBatch, StoreOp};
use crate::protocol::{ErrorCode, Event, EventFrame, Role};
use bevy_ecs::prelude::Query;
use serde::Serialize;
use serde_json::{json, Value};

/// Stages `{"id": id, "result": result}` for `conn`.
pub fn reply_ok(staged: &mut Staged, conn: ConnId, id: &Value, result: impl Serialize) {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        id: &'a Value,
        result: T,
    }
    let frame = staged.framed(&Reply { id, result });
    staged.0.push(Outgoing::Direct { conn, frame, session: None, seq: None });
}

/// Stages `{"id": id, "error": {"code", "message"}}` for `conn`.
pub fn reply_err(staged: &mut Staged, conn: ConnId, id: &Value, code: ErrorCode, message: impl Into<String>) {
    let frame = staged.framed(&json!({ "id": id, "error": { "code": code, "message": message.into() } }));
    staged.0.push(Outgoing::Direct { conn, frame, session: None, seq: None });
}

/// Answers `internal` when the store could not read a session's older history (logged too).
pub fn reply_history_unreadable(
    staged: &mut Staged,
    conn: ConnId,
    id: &Value,
    session: &SessionId,
    error: &crate::persist::StoreError,
) {
    tracing::error!("cannot read the history of {session}: {error}");
    reply_err(staged, conn, id, ErrorCode::Internal, format!("cannot read the history of {session}: {error}"));
}

/// Stages a connection-level event (no seq) for one connection.
pub fn send_direct(staged: &mut Staged, conn: ConnId, session: Option<SessionId>, body: Event) {
    let frame = staged.framed(&EventFrame { session_id: session, seq: None, body });
    staged.0.push(Outgoing::Direct { conn, frame, session: None, seq: None });
}

/// Stages a prepared snapshot frame of `session` for one connection (see `OutKind::Snapshot`).
pub fn send_snapshot(staged: &mut Staged, conn: ConnId, session: SessionId, frame: crate::engine::io::Framed) {
    staged.0.push(Outgoing::Direct { conn, frame, session: Some(session), seq: None });
}

/// Emits a session event: assigns the next seq, logs it, persists it and stages it for every
/// member of the session. Returns the seq.
pub fn emit(
    log: &mut EventLog,
    session: &SessionId,
    body: Event,
    batch: &mut PersistBatch,
    staged: &mut Staged,
) -> u64 {
    if log.next_seq == 0 {
        log.next_seq = 1;
    }
    let seq = log.next_seq;
    log.next_seq += 1;
    let frame = staged.framed(&EventFrame { session_id: Some(session.clone()), seq: Some(seq), body });
    let text = frame.host.to_string();
    log.tail.push_back((seq, frame.clone()));
    while log.tail.len() > crate::persist::EVENT_TAIL {
        log.tail.pop_front();
    }
    batch.push(StoreOp::AppendEvent(EventRow { session: session.clone(), seq, frame: text }));
    staged.0.push(Outgoing::Session { session: session.clone(), seq, frame });
    seq
}

/// Whether `participant` may see a session of `workspace`: the host sees everything; a remote
/// only what its share allows, and nothing while waiting in the lobby.
pub fn in_scope(participant: &Participant, share: Option<&Share>, workspace: &crate::ids::WorkspaceId) -> bool {
    if participant.role == Role::Host {
        return true;
    }
    if participant.admission != crate::protocol::Admission::Admitted {
        return false;
    }
    share.is_some_and(|s| s.workspaces.contains(workspace))
}

/// The participant behind a connection, and its share (none for the host).
pub fn caller<'a>(
    index: &super::resources::Index,
    conns: &'a Query<&crate::engine::components::Connection>,
    participants: &'a Query<&Participant>,
    shares: &'a Query<&Share>,
    conn: crate::ids::ConnId,
) -> Option<(&'a Participant, Option<&'a Share>)> {
    let c = conns.get(*index.conns.get(&conn)?).ok()?;
    let pid: &crate::ids::ParticipantId = c.participant()?;
    let p = participants.get(*index.participants.get(pid)?).ok()?;
    let share = p.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
    Some((p, share))
}

/// Source address without the port (rate limits are per address).
pub fn addr_key(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    addr.to_string()
}

/// Whether `c` is an invisible formatting character (Unicode general category Cf: zero-width
/// spaces and joiners, bidi overrides and isolates, word joiners, the BOM, tag characters…) or a
/// line/paragraph separator (U+2028, U+2029). Such characters make one name look like another
/// ("Host\u{200B}" shows as "Host"; U+202E reverses what follows).
pub fn is_invisible_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// Names only the host and the agent may carry (compared case-insensitively, after trimming).
pub const RESERVED_NAMES: [&str; 2] = ["host", "agent"];

/// Display names of remotes: trimmed, 1–64 characters, no control or invisible formatting
/// characters, and not a name reserved for the host or the agent.
pub fn valid_display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("display_name must not be empty".into());
    }
    if name.chars().count() > 64 {
        return Err("display_name must be at most 64 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("display_name must not contain control characters".into());
    }
    if let Some(c) = name.chars().find(|&c| is_invisible_format(c)) {
        return Err(format!(
            "display_name must not contain invisible formatting characters (found U+{:04X})",
            c as u32
        ));
    }
    if RESERVED_NAMES.contains(&name.to_lowercase().as_str()) {
        return Err(format!("\"{name}\" is reserved for the host and the agent; choose another display_name"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_impersonate_are_refused() {
        for name in ["Host", " host ", "AGENT", "Agent", "Host\u{200B}", "Ann\u{202E}nnA", "A\u{2060}nn", "\u{FEFF}Bob"]
        {
            assert!(valid_display_name(name).is_err(), "{name:?} must be refused");
        }
        assert!(valid_display_name("Host\u{200B}").unwrap_err().contains("U+200B"));
        for name in ["Ann", "Hostess", "Agent Smith", "Zoë", "李雷", "Ann (2)"] {
            assert_eq!(valid_display_name(name).as_deref(), Ok(name), "{name:?} is a fine name");
        }
    }
}
