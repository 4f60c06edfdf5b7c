//! Mapping between the row types of [`crate::persist`] and SQL rows.
//!
//! Every write is an upsert keyed by the domain id, so replaying a batch is harmless. Two share
//! columns are protected against a writer holding a stale copy of the row (the running host,
//! while the CLI edits the same share): `revoked` only ever goes from 0 to 1, and a token hash
//! that a rotation retired is never written back (see `retired_token_hashes` in the schema).
//!
//! Reads return rows sorted by domain id (natural order: `s2` before `s10`), as the engine
//! iterates in id order wherever order is observable.

use crate::ids::{MessageId, ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use crate::persist::{
    AgentSpec, AuditRow, BallotRow, EventRow, MessageRow, ParticipantRecord, ParticipantRow, SessionRecord, SessionRow,
    SessionSummary, SettingsRow, ShareRow, StoreError, VoteRow, WorkspaceRow, EVENT_TAIL,
};
use crate::protocol::{Admission, Role, SessionStatus};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, Row, ToSql};
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Small conversions
// ---------------------------------------------------------------------------------------------

/// A `u64` column. SQLite integers are `i64`; our times, seqs and turn ids never exceed
/// `i64::MAX`, and a value that did would be refused, never wrapped.
struct Int(u64);

impl ToSql for Int {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = i64::try_from(self.0).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(v))
    }
}

impl FromSql for Int {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let v = i64::column_result(value)?;
        u64::try_from(v).map(Int).map_err(|_| FromSqlError::OutOfRange(v))
    }
}

fn int(v: u64) -> Int {
    Int(v)
}

fn opt(v: Option<u64>) -> Option<Int> {
    v.map(Int)
}

fn get_u64(r: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, Int>(idx)?.0)
}

fn get_opt_u64(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<Int>>(idx)?.map(|i| i.0))
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("row fields serialise to JSON")
}

fn from_json<T: DeserializeOwned>(table: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { table, detail: format!("bad JSON {text:?}: {e}") })
}

fn role_from(table: &'static str, s: &str) -> Result<Role, StoreError> {
    match s {
        "host" => Ok(Role::Host),
        "participant" => Ok(Role::Participant),
        "observer" => Ok(Role::Observer),
        other => Err(StoreError::Corrupt { table, detail: format!("unknown role {other:?}") }),
    }
}

fn status_from(s: &str) -> Result<SessionStatus, StoreError> {
    match s {
        "idle" => Ok(SessionStatus::Idle),
        "running" => Ok(SessionStatus::Running),
        "awaiting_vote" => Ok(SessionStatus::AwaitingVote),
        other => Err(StoreError::Corrupt { table: "sessions", detail: format!("unknown status {other:?}") }),
    }
}

fn admission_str(a: Admission) -> &'static str {
    match a {
        Admission::Admitted => "admitted",
        Admission::Pending => "pending",
        Admission::Refused => "refused",
    }
}

fn admission_from(s: &str) -> Result<Admission, StoreError> {
    match s {
        "admitted" => Ok(Admission::Admitted),
        "pending" => Ok(Admission::Pending),
        "refused" => Ok(Admission::Refused),
        other => Err(StoreError::Corrupt { table: "participants", detail: format!("unknown admission {other:?}") }),
    }
}

fn hash_from(table: &'static str, bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt { table, detail: format!("hash of {} bytes, expected 32", bytes.len()) })
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

pub(crate) fn put_workspace(conn: &Connection, w: &WorkspaceRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO workspaces (id, name, dir, agent_json) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, dir = excluded.dir, agent_json = excluded.agent_json",
    )?
    .execute(params![w.id.as_str(), w.name, w.dir, json(&w.agent)])?;
    Ok(())
}

pub(crate) fn put_session(conn: &Connection, row: &SessionRow) -> Result<(), crate::Error> {
    let s = &row.session;
    conn.prepare_cached(
        "INSERT INTO sessions (id, workspace, title, status, turn_holder, turn_id, next_seq, agent_json,
                               vote_deadline_ms, created_at, streamed, allowed_tools_json, agent_memory_json,
                               agent_settings_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET workspace = excluded.workspace, title = excluded.title,
             status = excluded.status, turn_holder = excluded.turn_holder, turn_id = excluded.turn_id,
             next_seq = excluded.next_seq, agent_json = excluded.agent_json,
             vote_deadline_ms = excluded.vote_deadline_ms, created_at = excluded.created_at,
             streamed = excluded.streamed, allowed_tools_json = excluded.allowed_tools_json,
             agent_memory_json = excluded.agent_memory_json, agent_settings_json = excluded.agent_settings_json",
    )?
    .execute(params![
        s.id.as_str(),
        s.workspace.as_str(),
        s.title,
        s.status.as_str(),
        row.turn_holder.as_ref().map(|p| p.as_str()),
        int(row.turn_id),
        int(row.next_seq),
        json(&s.agent),
        opt(s.vote_deadline_ms),
        int(s.created_at),
        row.streamed,
        json(&s.allowed_tools),
        json(&s.agent_memory),
        json(&s.agent_settings),
    ])?;
    Ok(())
}

pub(crate) fn put_share(conn: &Connection, s: &ShareRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO shares (id, label, token_hash, workspaces_json, collaborative, consensus_required,
                             admission_required, role, expires_at, max_uses, uses, revoked, created_at,
                             vote_deadline_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET label = excluded.label,
             token_hash = CASE WHEN EXISTS (SELECT 1 FROM retired_token_hashes r
                                            WHERE r.token_hash = excluded.token_hash)
                               THEN shares.token_hash ELSE excluded.token_hash END,
             workspaces_json = excluded.workspaces_json, collaborative = excluded.collaborative,
             consensus_required = excluded.consensus_required, admission_required = excluded.admission_required,
             role = excluded.role, expires_at = excluded.expires_at, max_uses = excluded.max_uses,
             uses = excluded.uses, revoked = max(shares.revoked, excluded.revoked),
             created_at = excluded.created_at, vote_deadline_ms = excluded.vote_deadline_ms",
    )?
    .execute(params![
        s.id.as_str(),
        s.label,
        &s.token_hash[..],
        json(&s.workspaces),
        s.collaborative,
        s.consensus_required,
        s.admission_required,
        s.role.as_str(),
        opt(s.expires_at),
        s.max_uses,
        s.uses,
        s.revoked,
        int(s.created_at),
        opt(s.vote_deadline_ms),
    ])?;
    Ok(())
}

pub(crate) fn put_participant(conn: &Connection, row: &ParticipantRow) -> Result<(), crate::Error> {
    let p = &row.participant;
    conn.prepare_cached(
        "INSERT INTO participants (id, display_name, role, share, muted, admission, resume_hash, gone, sessions_json,
                                   read_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
             share = excluded.share, muted = excluded.muted, admission = excluded.admission,
             resume_hash = excluded.resume_hash, gone = excluded.gone, sessions_json = excluded.sessions_json,
             read_json = excluded.read_json",
    )?
    .execute(params![
        p.id.as_str(),
        p.display_name,
        p.role.as_str(),
        p.share.as_ref().map(|s| s.as_str()),
        p.muted,
        admission_str(p.admission),
        p.resume_hash.as_ref().map(|h| &h[..]),
        row.gone,
        json(&p.sessions),
        json(&p.read),
    ])?;
    Ok(())
}

pub(crate) fn put_message(conn: &Connection, m: &MessageRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO messages (id, session, seq, author_id, author_name, text, client_msg_id, created_at, room)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET session = excluded.session, seq = excluded.seq,
             author_id = excluded.author_id, author_name = excluded.author_name, text = excluded.text,
             client_msg_id = excluded.client_msg_id, created_at = excluded.created_at, room = excluded.room",
    )?
    .execute(params![
        m.id.as_str(),
        m.session.as_str(),
        int(m.seq),
        m.author_id,
        m.author_name,
        m.text,
        m.client_msg_id,
        int(m.created_at),
        m.room,
    ])?;
    Ok(())
}

pub(crate) fn clear_session(conn: &Connection, session: &SessionId) -> Result<(), crate::Error> {
    conn.prepare_cached("DELETE FROM messages WHERE session = ?1")?.execute([session.as_str()])?;
    conn.prepare_cached("DELETE FROM events WHERE session = ?1")?.execute([session.as_str()])?;
    clear_streamed(conn, session)
}

pub(crate) fn append_streamed(
    conn: &Connection,
    session: &SessionId,
    offset: u64,
    text: &str,
) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO streamed_chunks (session, offset, text) VALUES (?1, ?2, ?3)
         ON CONFLICT (session, offset) DO UPDATE SET text = excluded.text",
    )?
    .execute(params![session.as_str(), int(offset), text])?;
    Ok(())
}

pub(crate) fn clear_streamed(conn: &Connection, session: &SessionId) -> Result<(), crate::Error> {
    conn.prepare_cached("DELETE FROM streamed_chunks WHERE session = ?1")?.execute([session.as_str()])?;
    Ok(())
}

/// The streamed text of a session's running turn: its chunks in offset order.
fn streamed_chunks(conn: &Connection, session: &SessionId) -> Result<String, crate::Error> {
    let mut stmt = conn.prepare_cached("SELECT text FROM streamed_chunks WHERE session = ?1 ORDER BY offset")?;
    let chunks: Vec<String> = stmt.query_map([session.as_str()], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(chunks.concat())
}

pub(crate) fn append_event(conn: &Connection, e: &EventRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO events (session, seq, frame) VALUES (?1, ?2, ?3)
         ON CONFLICT (session, seq) DO UPDATE SET frame = excluded.frame",
    )?
    .execute(params![e.session.as_str(), int(e.seq), e.frame])?;
    Ok(())
}

/// Deletes the events of `session` that fell out of its replay tail once `latest` was appended:
/// those with seq <= `latest` - [`EVENT_TAIL`]. Seqs are issued one by one and never reused, so
/// this keeps exactly the last [`EVENT_TAIL`] events, the ones the engine holds and `load` reads.
/// One range delete on the primary key (session, seq).
pub(crate) fn prune_events(conn: &Connection, session: &SessionId, latest: u64) -> Result<(), crate::Error> {
    let last_dropped = latest.saturating_sub(EVENT_TAIL as u64);
    if last_dropped == 0 {
        return Ok(());
    }
    conn.prepare_cached("DELETE FROM events WHERE session = ?1 AND seq <= ?2")?
        .execute(params![session.as_str(), int(last_dropped)])?;
    Ok(())
}

pub(crate) fn put_vote(conn: &Connection, v: &VoteRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO votes (id, session, turn_id, request_id, subject_json, decided_by, required_json, deadline,
                            outcome, reason, opened_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET session = excluded.session, turn_id = excluded.turn_id,
             request_id = excluded.request_id, subject_json = excluded.subject_json,
             decided_by = excluded.decided_by, required_json = excluded.required_json,
             deadline = excluded.deadline, outcome = excluded.outcome, reason = excluded.reason,
             opened_at = excluded.opened_at",
    )?
    .execute(params![
        v.id.as_str(),
        v.session.as_str(),
        int(v.turn_id),
        v.request_id,
        v.subject_json,
        v.decided_by,
        json(&v.required),
        opt(v.deadline),
        v.outcome,
        v.reason,
        int(v.opened_at),
    ])?;
    Ok(())
}

pub(crate) fn put_ballot(conn: &Connection, b: &BallotRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO ballots (vote, voter, choice, detail, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (vote, voter) DO UPDATE SET choice = excluded.choice, detail = excluded.detail, at = excluded.at",
    )?
    .execute(params![b.vote.as_str(), b.voter.as_str(), b.choice, b.detail, int(b.at)])?;
    Ok(())
}

pub(crate) fn put_settings(conn: &Connection, s: &SettingsRow) -> Result<(), crate::Error> {
    conn.prepare_cached(
        "INSERT INTO settings (id, json) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET json = excluded.json",
    )?
    .execute(params![json(s)])?;
    Ok(())
}

pub(crate) fn audit(conn: &Connection, a: &AuditRow) -> Result<(), crate::Error> {
    conn.prepare_cached("INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![int(a.at), a.actor, a.action, a.target, a.detail])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Runs `sql` and converts each row; conversion errors abort the read.
fn read_all<T>(
    conn: &Connection,
    sql: &str,
    convert: impl Fn(&Row<'_>) -> Result<T, crate::Error>,
) -> Result<Vec<T>, crate::Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(convert(row)?);
    }
    Ok(out)
}

pub(crate) fn workspaces(conn: &Connection) -> Result<Vec<WorkspaceRow>, crate::Error> {
    let mut rows = read_all(conn, "SELECT id, name, dir, agent_json FROM workspaces", |r| {
        Ok(WorkspaceRow {
            id: WorkspaceId(r.get(0)?),
            name: r.get(1)?,
            dir: r.get(2)?,
            agent: from_json::<AgentSpec>("workspaces", &r.get::<_, String>(3)?)?,
        })
    })?;
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

pub(crate) fn sessions(conn: &Connection) -> Result<Vec<SessionRow>, crate::Error> {
    let mut rows = read_all(
        conn,
        "SELECT id, workspace, title, status, turn_holder, turn_id, next_seq, agent_json, vote_deadline_ms, created_at,
                streamed, allowed_tools_json, agent_memory_json, agent_settings_json
         FROM sessions",
        |r| {
            Ok(SessionRow {
                session: SessionRecord {
                    id: SessionId(r.get(0)?),
                    workspace: WorkspaceId(r.get(1)?),
                    title: r.get(2)?,
                    status: status_from(&r.get::<_, String>(3)?)?,
                    agent: from_json("sessions", &r.get::<_, String>(7)?)?,
                    vote_deadline_ms: get_opt_u64(r, 8)?,
                    created_at: get_u64(r, 9)?,
                    allowed_tools: from_json("sessions", &r.get::<_, String>(11)?)?,
                    agent_memory: from_json("sessions", &r.get::<_, String>(12)?)?,
                    agent_settings: from_json("sessions", &r.get::<_, String>(13)?)?,
                },
                turn_holder: r.get::<_, Option<String>>(4)?.map(ParticipantId),
                turn_id: get_u64(r, 5)?,
                next_seq: get_u64(r, 6)?,
                streamed: r.get(10)?,
            })
        },
    )?;
    rows.sort_by(|a, b| a.session.id.cmp(&b.session.id));
    // The running turn's text: the (legacy) column, then the chunks appended since.
    for row in &mut rows {
        row.streamed.push_str(&streamed_chunks(conn, &row.session.id)?);
    }
    Ok(rows)
}

pub(crate) fn shares(conn: &Connection) -> Result<Vec<ShareRow>, crate::Error> {
    let mut rows = read_all(
        conn,
        "SELECT id, label, token_hash, workspaces_json, collaborative, consensus_required, admission_required, role,
                expires_at, max_uses, uses, revoked, created_at, vote_deadline_ms
         FROM shares",
        |r| {
            Ok(ShareRow {
                id: ShareId(r.get(0)?),
                label: r.get(1)?,
                token_hash: hash_from("shares", r.get(2)?)?,
                workspaces: from_json("shares", &r.get::<_, String>(3)?)?,
                collaborative: r.get(4)?,
                consensus_required: r.get(5)?,
                admission_required: r.get(6)?,
                role: role_from("shares", &r.get::<_, String>(7)?)?,
                expires_at: get_opt_u64(r, 8)?,
                max_uses: r.get(9)?,
                uses: r.get(10)?,
                revoked: r.get(11)?,
                created_at: get_u64(r, 12)?,
                vote_deadline_ms: get_opt_u64(r, 13)?,
            })
        },
    )?;
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

pub(crate) fn participants(conn: &Connection) -> Result<Vec<ParticipantRow>, crate::Error> {
    let mut rows = read_all(
        conn,
        "SELECT id, display_name, role, share, muted, admission, resume_hash, gone, sessions_json, read_json
         FROM participants",
        |r| {
            Ok(ParticipantRow {
                participant: ParticipantRecord {
                    id: ParticipantId(r.get(0)?),
                    display_name: r.get(1)?,
                    role: role_from("participants", &r.get::<_, String>(2)?)?,
                    share: r.get::<_, Option<String>>(3)?.map(ShareId),
                    muted: r.get(4)?,
                    admission: admission_from(&r.get::<_, String>(5)?)?,
                    resume_hash: r.get::<_, Option<Vec<u8>>>(6)?.map(|h| hash_from("participants", h)).transpose()?,
                    sessions: from_json("participants", &r.get::<_, String>(8)?)?,
                    read: from_json("participants", &r.get::<_, String>(9)?)?,
                },
                gone: r.get(7)?,
            })
        },
    )?;
    rows.sort_by(|a, b| a.participant.id.cmp(&b.participant.id));
    Ok(rows)
}

const MESSAGE_COLUMNS: &str = "id, session, seq, author_id, author_name, text, client_msg_id, created_at, room";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: MessageId(r.get(0)?),
        session: SessionId(r.get(1)?),
        seq: get_u64(r, 2)?,
        author_id: r.get(3)?,
        author_name: r.get(4)?,
        text: r.get(5)?,
        client_msg_id: r.get(6)?,
        created_at: get_u64(r, 7)?,
        room: r.get(8)?,
    })
}

/// Session ids, in id order (`s2` before `s10`).
fn session_ids(conn: &Connection) -> Result<Vec<SessionId>, crate::Error> {
    let mut ids = read_all(conn, "SELECT id FROM sessions", |r| Ok(SessionId(r.get(0)?)))?;
    ids.sort();
    Ok(ids)
}

/// Up to `limit` messages of `session` with a seq below `before_seq`, oldest first, and whether
/// older ones exist. One indexed range scan (`messages_by_session_seq`), newest first.
pub(crate) fn messages_before(
    conn: &Connection,
    session: &SessionId,
    before_seq: u64,
    limit: usize,
) -> Result<(Vec<MessageRow>, bool), crate::Error> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
    let mut stmt = conn.prepare_cached(&sql)?;
    let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let before = i64::try_from(before_seq).unwrap_or(i64::MAX);
    let mut rows: Vec<MessageRow> =
        stmt.query_map(rusqlite::params![session.0, before, want], message_row)?.collect::<Result<_, _>>()?;
    let has_older = rows.len() > limit;
    rows.truncate(limit);
    rows.reverse();
    Ok((rows, has_older))
}

/// The latest `tail` messages of every session (ordered by session, seq) and the sessions
/// that have older ones. Reads `tail + 1` rows per session through the index, never the table.
pub(crate) fn message_tails(
    conn: &Connection,
    tail: usize,
) -> Result<(Vec<MessageRow>, std::collections::BTreeSet<SessionId>), crate::Error> {
    let mut all = Vec::new();
    let mut older = std::collections::BTreeSet::new();
    for session in session_ids(conn)? {
        let (rows, has_older) = messages_before(conn, &session, u64::MAX, tail)?;
        if has_older {
            older.insert(session);
        }
        all.extend(rows);
    }
    Ok((all, older))
}

/// The message `author_id` sent to `session` with `client_msg_id`, if any.
pub(crate) fn message_by_client_id(
    conn: &Connection,
    session: &SessionId,
    author_id: &str,
    client_msg_id: &str,
) -> Result<Option<MessageRow>, crate::Error> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE session = ?1 AND author_id = ?2 AND client_msg_id = ?3 ORDER BY seq LIMIT 1"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query_map(rusqlite::params![session.0, author_id, client_msg_id], message_row)?;
    Ok(rows.next().transpose()?)
}

/// The last [`EVENT_TAIL`] events of every session, ordered by (session, seq): one indexed
/// range scan per session (the primary key), never the whole table.
pub(crate) fn event_tails(conn: &Connection) -> Result<Vec<EventRow>, crate::Error> {
    let mut all = Vec::new();
    for session in session_ids(conn)? {
        all.extend(event_tail(conn, &session)?);
    }
    Ok(all)
}

/// The last [`EVENT_TAIL`] events of `session`, by seq: one indexed range scan (the primary key).
pub(crate) fn event_tail(conn: &Connection, session: &SessionId) -> Result<Vec<EventRow>, crate::Error> {
    let mut stmt =
        conn.prepare_cached("SELECT session, seq, frame FROM events WHERE session = ?1 ORDER BY seq DESC LIMIT ?2")?;
    let mut rows: Vec<EventRow> = stmt
        .query_map(rusqlite::params![session.0, EVENT_TAIL as i64], |r| {
            Ok(EventRow { session: SessionId(r.get(0)?), seq: get_u64(r, 1)?, frame: r.get(2)? })
        })?
        .collect::<Result<_, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// What the engine needs at start of every session instead of its tails: its last event's seq
/// and its newest message. Two indexed lookups per session (the events' primary key and
/// `messages_by_session_seq`), reading no frame and no message text.
pub(crate) fn session_summaries(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<SessionId, SessionSummary>, crate::Error> {
    let mut last_event = conn.prepare_cached("SELECT MAX(seq) FROM events WHERE session = ?1")?;
    let mut newest =
        conn.prepare_cached("SELECT id, created_at FROM messages WHERE session = ?1 ORDER BY seq DESC LIMIT 1")?;
    let mut out = std::collections::BTreeMap::new();
    for session in session_ids(conn)? {
        let last_event_seq =
            last_event.query_row(rusqlite::params![session.0], |r| r.get::<_, Option<Int>>(0))?.map_or(0, |seq| seq.0);
        let newest_message = newest
            .query_map(rusqlite::params![session.0], |r| Ok((MessageId(r.get(0)?), get_u64(r, 1)?)))?
            .next()
            .transpose()?;
        let summary = SessionSummary { last_event_seq, has_messages: newest_message.is_some(), newest_message };
        out.insert(session, summary);
    }
    Ok(out)
}

pub(crate) fn votes(conn: &Connection) -> Result<Vec<VoteRow>, crate::Error> {
    let mut rows = read_all(
        conn,
        "SELECT id, session, turn_id, request_id, subject_json, decided_by, required_json, deadline, outcome, reason,
                opened_at
         FROM votes",
        |r| {
            Ok(VoteRow {
                id: VoteId(r.get(0)?),
                session: SessionId(r.get(1)?),
                turn_id: get_u64(r, 2)?,
                request_id: r.get(3)?,
                subject_json: r.get(4)?,
                decided_by: r.get(5)?,
                required: from_json("votes", &r.get::<_, String>(6)?)?,
                deadline: get_opt_u64(r, 7)?,
                outcome: r.get(8)?,
                reason: r.get(9)?,
                opened_at: get_u64(r, 10)?,
            })
        },
    )?;
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

pub(crate) fn ballots(conn: &Connection) -> Result<Vec<BallotRow>, crate::Error> {
    let mut rows = read_all(conn, "SELECT vote, voter, choice, detail, at FROM ballots", |r| {
        Ok(BallotRow {
            vote: VoteId(r.get(0)?),
            voter: ParticipantId(r.get(1)?),
            choice: r.get(2)?,
            detail: r.get(3)?,
            at: get_u64(r, 4)?,
        })
    })?;
    rows.sort_by(|a, b| (&a.vote, &a.voter).cmp(&(&b.vote, &b.voter)));
    Ok(rows)
}

/// The host's saved settings, if it ever saved any.
pub(crate) fn settings(conn: &Connection) -> Result<Option<SettingsRow>, crate::Error> {
    let text: Option<String> = conn
        .query_row("SELECT json FROM settings WHERE id = 1", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    Ok(text.map(|t| from_json("settings", &t)).transpose()?)
}

/// Largest audit id (0 when the log is empty).
pub(crate) fn audit_count(conn: &Connection) -> Result<u64, crate::Error> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM audit", [], |r| get_u64(r, 0))?)
}

/// The newest `limit` audit rows, oldest first.
pub(crate) fn audit_tail(conn: &Connection, limit: usize) -> Result<Vec<AuditRow>, crate::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, actor, action, target, detail FROM
             (SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1)
         ORDER BY id",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditRow { at: get_u64(r, 0)?, actor: r.get(1)?, action: r.get(2)?, target: r.get(3)?, detail: r.get(4)? })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether the last host stopped cleanly (`host_state`); `None` when no host ever recorded it.
pub(crate) fn stopped_cleanly(conn: &Connection) -> Result<Option<bool>, crate::Error> {
    let clean: Option<bool> = conn
        .query_row("SELECT stopped_cleanly FROM host_state WHERE id = 1", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    Ok(clean)
}

/// Records whether the host stopped cleanly (`false`: a host is running).
pub(crate) fn set_stopped_cleanly(conn: &Connection, clean: bool) -> Result<(), crate::Error> {
    conn.execute(
        "INSERT INTO host_state (id, stopped_cleanly) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET stopped_cleanly = excluded.stopped_cleanly",
        [clean],
    )?;
    Ok(())
}
