//! [`SqliteStore`]: the engine's persistence on a SQLite file.
//!
//! The engine thread owns one connection. Each tick's [`StoreOp`]s are applied in a single
//! `BEGIN IMMEDIATE` transaction, so a crash (or an error in any op) leaves either the whole tick
//! or none of it — never a part. The database runs in WAL mode with `synchronous = FULL`: once
//! `commit` returns, the tick survives a process kill and a power cut, which is what lets the
//! broadcast system send frames right after.

use super::{migrate, rows};
use crate::ids::{SessionId, VoteId};
use crate::persist::{
    AuditRow, BallotRow, MessageRow, Restored, ShareRow, Store, StoreError, StoreOp, WorkspaceRow, HISTORY_TAIL,
};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another writer (the CLI, the host) before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating if needed) and migrates the database at `path`, with the connection settings
/// every roundtable connection uses.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    let mut conn = Connection::open(path).map_err(|e| StoreError::Db(format!("cannot open database {shown}: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| StoreError::Db(format!("cannot open database {shown}: {e}")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!("database {shown} runs in journal mode {mode}, not WAL (unsupported file system?)");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate::migrate(&mut conn, &shown)?;
    Ok(conn)
}

/// The engine's store on a SQLite database.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    /// Last seen `PRAGMA data_version`; `None` until the first poll.
    data_version: Option<i64>,
    /// The database file as opened, to notice it being deleted or replaced while in use.
    file: Option<FileWatch>,
}

/// Identity of the database file (device and inode) and when it was last checked.
struct FileWatch {
    path: std::path::PathBuf,
    id: (u64, u64),
    checked: std::time::Instant,
    /// Set for good once the file was found deleted or replaced: a file put back at the path is
    /// still not the one this connection writes to.
    lost: Option<String>,
}

impl FileWatch {
    /// How often the file is checked (at most).
    const EVERY: Duration = Duration::from_secs(1);

    fn id_of(path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    fn open(path: &Path) -> Option<FileWatch> {
        Some(FileWatch {
            path: path.to_path_buf(),
            id: Self::id_of(path)?,
            checked: std::time::Instant::now(),
            lost: None,
        })
    }

    /// An error when the file at the path is no longer the one we opened (checked at most once
    /// a second): writes would go to an unlinked file and be lost at the next start.
    fn check(&mut self) -> Result<(), StoreError> {
        if let Some(lost) = &self.lost {
            return Err(StoreError::Db(lost.clone()));
        }
        if self.checked.elapsed() < Self::EVERY {
            return Ok(());
        }
        self.checked = std::time::Instant::now();
        let lost = match Self::id_of(&self.path) {
            Some(id) if id == self.id => return Ok(()),
            Some(_) => format!(
                "the database file {} was replaced while the host was running; stop the host and check which file is the right one",
                self.path.display()
            ),
            None => format!(
                "the database file {} was deleted while the host was running; stop the host and restore it",
                self.path.display()
            ),
        };
        self.lost = Some(lost.clone());
        Err(StoreError::Db(lost))
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    ///
    /// Fails with [`StoreError::TooNew`] when the file was written by a newer roundtable.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = open_connection(path)?;
        tracing::debug!(path = %path.display(), "opened database");
        Ok(SqliteStore { conn, path: path.display().to_string(), data_version: None, file: FileWatch::open(path) })
    }

    /// A private in-memory database (tests, the simulator).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate::migrate(&mut conn, ":memory:")?;
        Ok(SqliteStore { conn, path: ":memory:".into(), data_version: None, file: None })
    }

    /// The database path (`:memory:` for an in-memory store).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrate::version(&self.conn)
    }

    /// `PRAGMA quick_check`: an error naming the first problems when the file is damaged (a
    /// corrupt page would otherwise start fine and then fail every write). Reads every page
    /// once, so it takes time proportional to the file (see docs/PERFORMANCE.md).
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check(5)")?;
        let problems: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            table: "database",
            detail: format!(
                "{} fails its integrity check ({}); restore a backup or move it away and start with --fresh",
                self.path,
                problems.join("; ")
            ),
        })
    }

    /// All shares, ordered by id.
    pub fn shares(&self) -> Result<Vec<ShareRow>, StoreError> {
        rows::shares(&self.conn)
    }
}

/// Applies one op inside the tick's transaction.
fn apply(conn: &Connection, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::PutWorkspace(w) => rows::put_workspace(conn, w),
        StoreOp::PutSession(s) => rows::put_session(conn, s),
        StoreOp::PutShare(s) => rows::put_share(conn, s),
        StoreOp::PutParticipant(p) => rows::put_participant(conn, p),
        StoreOp::PutMessage(m) => rows::put_message(conn, m),
        StoreOp::ClearSession(s) => rows::clear_session(conn, s),
        StoreOp::AppendEvent(e) => rows::append_event(conn, e),
        StoreOp::AppendStreamed { session, offset, text } => rows::append_streamed(conn, session, *offset, text),
        StoreOp::ClearStreamed(session) => rows::clear_streamed(conn, session),
        StoreOp::PutVote(v) => rows::put_vote(conn, v),
        StoreOp::PutBallot(b) => rows::put_ballot(conn, b),
        StoreOp::Audit(a) => rows::audit(conn, a),
        StoreOp::PutSettings(s) => rows::put_settings(conn, s),
    }
}

/// A short name of an op for error messages.
fn describe(op: &StoreOp) -> String {
    match op {
        StoreOp::PutWorkspace(w) => format!("workspace {}", w.id),
        StoreOp::PutSession(s) => format!("session {}", s.id),
        StoreOp::PutShare(s) => format!("share {}", s.id),
        StoreOp::PutParticipant(p) => format!("participant {}", p.id),
        StoreOp::PutMessage(m) => format!("message {} of {}", m.id, m.session),
        StoreOp::ClearSession(s) => format!("clearing session {s}"),
        StoreOp::AppendEvent(e) => format!("event {}#{}", e.session, e.seq),
        StoreOp::AppendStreamed { session, offset, .. } => format!("streamed text of {session} at {offset}"),
        StoreOp::ClearStreamed(session) => format!("clearing the streamed text of {session}"),
        StoreOp::PutVote(v) => format!("vote {}", v.id),
        StoreOp::PutBallot(b) => format!("ballot of {} on {}", b.voter, b.vote),
        StoreOp::Audit(a) => format!("audit {}", a.action),
        StoreOp::PutSettings(_) => "the host's settings".to_string(),
    }
}

impl Store for SqliteStore {
    fn check_health(&mut self) -> Result<(), StoreError> {
        match self.file.as_mut() {
            Some(file) => file.check(),
            None => Ok(()),
        }
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(file) = self.file.as_mut() {
            file.check()?;
        }
        // IMMEDIATE takes the write lock up front, so a concurrent CLI write makes us wait
        // (busy_timeout) rather than fail half-way. Dropping `tx` on error rolls everything back.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in ops {
            apply(&tx, op).map_err(|e| match e {
                StoreError::Db(detail) => StoreError::Db(format!("{} failed: {detail}", describe(op))),
                other => other,
            })?;
        }
        // Deferred foreign keys are checked here: a batch leaving a dangling reference fails whole.
        tx.commit().map_err(|e| StoreError::Db(format!("committing {} ops failed: {e}", ops.len())))?;
        Ok(())
    }

    fn load(&mut self) -> Result<Restored, StoreError> {
        // One read transaction: a consistent snapshot even if the CLI writes meanwhile.
        let tx = self.conn.transaction()?;
        let restored = Restored {
            workspaces: rows::workspaces(&tx)?,
            sessions: rows::sessions(&tx)?,
            shares: rows::shares(&tx)?,
            participants: rows::participants(&tx)?,
            messages: Vec::new(),
            older_messages: Default::default(),
            events: rows::event_tails(&tx)?,
            votes: rows::votes(&tx)?,
            ballots: rows::ballots(&tx)?,
            audit_count: rows::audit_count(&tx)?,
            settings: rows::settings(&tx)?,
        };
        let (messages, older) = rows::message_tails(&tx, HISTORY_TAIL)?;
        tx.commit()?;
        Ok(Restored { messages, older_messages: older, ..restored })
    }

    fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        rows::messages_before(&self.conn, session, before_seq, limit)
    }

    fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        rows::message_by_client_id(&self.conn, session, author_id, client_msg_id)
    }

    fn audit_log(&mut self) -> Result<Vec<AuditRow>, StoreError> {
        rows::audit_tail(&self.conn, usize::MAX)
    }

    fn ballots_of(&mut self, vote: &VoteId) -> Result<Vec<BallotRow>, StoreError> {
        Ok(rows::ballots(&self.conn)?.into_iter().filter(|b| &b.vote == vote).collect())
    }

    /// `PRAGMA data_version` changes only when *another* connection commits (the CLI), never for
    /// our own commits, so polling it each tick is a cheap way to notice share edits.
    fn workspaces(&mut self) -> Result<Vec<WorkspaceRow>, StoreError> {
        rows::workspaces(&self.conn)
    }

    fn shares_changed_externally(&mut self) -> Result<Option<Vec<ShareRow>>, StoreError> {
        let now: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        match self.data_version.replace(now) {
            Some(before) if before != now => {
                tracing::debug!("database changed by another process; reloading shares");
                Ok(Some(rows::shares(&self.conn)?))
            }
            _ => Ok(None),
        }
    }
}
