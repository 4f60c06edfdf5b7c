//! [`SqliteStore`]: the engine's persistence on a SQLite file.
//!
//! The engine thread owns one connection. Each tick's [`StoreOp`]s are applied in a single
//! `BEGIN IMMEDIATE` transaction, so a crash (or an error in any op) leaves either the whole tick
//! or none of it — never a part. The database runs in WAL mode with `synchronous = FULL`: once
//! `commit` returns, the tick survives a process kill and a power cut, which is what lets the
//! broadcast system send frames right after. The exception is a tick that wrote nothing but
//! text the agent streamed (previews of a reply stored whole, with a sync, when its turn ends):
//! it is committed with `synchronous = NORMAL`, in the log when `commit` returns (a killed host
//! keeps it) but not waited onto the disk (a power cut may lose it until the next synced commit,
//! which syncs the whole log).
//!
//! A commit lands in the write-ahead log (`-wal`) first; a checkpoint copies it into the main
//! file. The log is only as safe as the file it is in, so the store keeps the main file close
//! behind: a passive checkpoint when the host is idle (at most once a second, see
//! [`SqliteStore::check_health_at`]) and whenever the log reaches [`WAL_AUTOCHECKPOINT_PAGES`]
//! pages. Before every commit, and on every idle tick, it checks that the main file, the log
//! and its index (`-shm`) are still the files it opened ([`super::files`]): a deleted or
//! replaced one fails the commit, so nothing written after it is acknowledged.
//!
//! A host opens the store with [`SqliteStore::open_for_host`], which reads whether the last host
//! stopped cleanly ([`LastStop`], the `host_state` row) and durably records that one is running;
//! [`Store::stop_cleanly`] records the clean stop after the engine's last commit. Only after an
//! unclean stop does the host read the whole file before serving ([`SqliteStore::check_integrity`]);
//! otherwise the same check runs on its own read-only connection in the background
//! ([`IntegrityChecker`]). SQLite finding damage — that check, or `SQLITE_CORRUPT` /
//! `SQLITE_NOTADB` from any read or commit — makes the store refuse every later commit with
//! [`StoreError::Corrupt`] naming the file and the fix, and it never records a clean stop after.

use super::files::{self, Identities, Part};
use super::{migrate, rows};
use crate::ids::{SessionId, VoteId};
use crate::persist::{
    AuditRow, BallotRow, MessageRow, Restored, SessionTails, ShareRow, Store, StoreError, StoreOp, WorkspaceRow,
    HISTORY_TAIL,
};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

thread_local! {
    /// An in-memory database with every migration applied, which [`SqliteStore::open_in_memory`]
    /// copies (built by the first call on each thread).
    static MIGRATED_TEMPLATE: std::cell::RefCell<Option<Connection>> = const { std::cell::RefCell::new(None) };
}

/// How long a writer waits for another writer (the CLI, the host) before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Log pages after which a commit checkpoints by itself (SQLite's default is 1000 pages,
/// about 4 MB, which a quiet host takes hours to write): about 1 MB with 4 KiB pages.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;

/// The size the log file is cut back to after a checkpoint let it start over, so one burst
/// does not keep its disk space. The file is truncated in place, never recreated, so its
/// identity (which the host watches) stays.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 4 << 20;

/// How often an idle host checkpoints (at most).
pub const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The `table` of a [`StoreError::Corrupt`] that is about the database file itself (SQLite found
/// it damaged), not about one row's contents.
pub const DAMAGED_FILE: &str = "database";

/// A SQLite error on the database at `path` as a [`StoreError`] naming the file (and, for a
/// read-only file, a full disk or a damaged file, what to do). SQLite finding the file damaged
/// is [`StoreError::Corrupt`] (table [`DAMAGED_FILE`]), everything else [`StoreError::Db`].
pub(crate) fn db_error(path: &Path, error: rusqlite::Error) -> StoreError {
    if files::is_damage(&error) {
        return StoreError::Corrupt { table: DAMAGED_FILE, detail: files::explain(path, &error) };
    }
    StoreError::Db(files::explain(path, &error))
}

/// An error of this crate on the database at `path` in the store contract's terms: SQLite
/// finding the file damaged becomes [`StoreError::Corrupt`] naming the file and the fix (see
/// [`db_error`]); anything else converts as `?` would.
fn sql_failure(path: &Path, error: crate::Error) -> StoreError {
    match error {
        crate::Error::Sql(e) if files::is_damage(&e) => db_error(path, e),
        other => other.into(),
    }
}

/// Opens (creating if needed) and migrates the database at `path`, with the connection settings
/// every roundtable connection uses. Every error names the file.
/// Prepared statements a connection keeps (rusqlite keeps 16 by default): more than the store
/// has, so none is pushed out by the others and prepared (parsed) again; each statement is
/// prepared once per connection.
const STATEMENT_CACHE: usize = 128;

pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    open_migrated(path).map(|(conn, _)| conn)
}

/// [`open_connection`], also returning the schema version found before migrating (0: the
/// database was just created).
fn open_migrated(path: &Path) -> Result<(Connection, u32), StoreError> {
    let shown = path.display().to_string();
    let fail = |e| db_error(path, e);
    let mut conn = Connection::open(path).map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!("database {shown} runs in journal mode {mode}, not WAL (unsupported file system?)");
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(fail)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(fail)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES).map_err(fail)?;
    // Read the schema version here, so a file that is not a database (or whose first page is
    // damaged) is refused naming the file, not by a bare "file is not a database" later.
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map_err(fail)?;
    let found = migrate::migrate(&mut conn, &shown).map_err(|e| sql_failure(path, e)).map_err(|e| match e {
        StoreError::Db(detail) if !detail.contains(&shown) => StoreError::Db(format!("{shown}: {detail}")),
        other => other,
    })?;
    Ok((conn, found))
}

/// `PRAGMA quick_check(5)` on `conn`: an error naming the file, its first problems and the fix
/// when the file is damaged. Reads every page once.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let check = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
        let problems = stmt.query_map([], |r| r.get(0))?.collect();
        problems
    };
    // A page too damaged for quick_check to even walk fails the query itself.
    let problems = check().map_err(|e| db_error(path, e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        table: DAMAGED_FILE,
        detail: files::damaged(path, &format!("fails its integrity check ({})", problems.join("; "))),
    })
}

/// Refuses a database this connection cannot write: SQLite opens a read-only (or immutable)
/// file read-only without a word, and every commit would then fail. Taking the write lock and
/// letting it go writes nothing; the directory is checked too, since the log and its index
/// are (re)created there.
fn check_writable(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let refuse = |why: String| {
        StoreError::Db(format!(
            "{why}. The host cannot store anything there, so it does not start; fix that and start again"
        ))
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
        return Err(refuse(files::explain(path, &e)));
    }
    if conn.is_readonly("main").unwrap_or(false) {
        return Err(refuse(
            files::unwritable(path).unwrap_or_else(|| format!("{} was opened read-only", path.display())),
        ));
    }
    match files::unwritable(path) {
        Some(why) => Err(refuse(why)),
        None => Ok(()),
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can of the log into the main file without
/// waiting for anyone. Returns (frames in the log, frames copied).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
}

/// How the last host left the database, as [`SqliteStore::open_for_host`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastStop {
    /// The database was created by this open: there is nothing to check.
    New,
    /// The last host recorded a clean stop after its last commit.
    Clean,
    /// Not stopped cleanly: a host was running and never recorded its stop (a crash, a kill, a
    /// power cut, or it found the file damaged), or — `recorded: false` — no host ever recorded
    /// anything here (a database written before roundtable recorded stops, or created by the CLI).
    Unclean { recorded: bool },
}

/// The engine's store on a SQLite database.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    /// Last seen `PRAGMA data_version`; `None` until the first poll.
    data_version: Option<i64>,
    /// The database's files as opened, to notice them being deleted or replaced while in use.
    file: Option<FileWatch>,
    /// Set for good once SQLite found the file damaged (the background check, or a read or a
    /// commit failing with `SQLITE_CORRUPT`): why, naming the file and the fix. Every later
    /// commit fails with it, and no clean stop is recorded.
    damage: Arc<OnceLock<String>>,
    /// Opened by [`SqliteStore::open_for_host`]: records the host's stops in `host_state`.
    records_stops: bool,
    /// A clean stop was recorded (a commit after it records "running" again).
    stopped_cleanly: bool,
}

/// The integrity check of a running host's database, ready to run in the background
/// ([`SqliteStore::integrity_checker`]). Damage it finds reaches the store it came from.
pub struct IntegrityChecker {
    path: PathBuf,
    damage: Arc<OnceLock<String>>,
}

/// A running background integrity check ([`IntegrityChecker::spawn`]).
pub struct IntegrityCheck(std::thread::JoinHandle<Result<(), StoreError>>);

impl IntegrityCheck {
    /// Waits for the check: `Err(StoreError::Corrupt)` when it found the file damaged (the store
    /// already refuses commits then), another error when it could not run.
    pub fn join(self) -> Result<(), StoreError> {
        self.0.join().unwrap_or_else(|_| Err(StoreError::Db("the background integrity check panicked".into())))
    }
}

impl IntegrityChecker {
    /// Runs `PRAGMA quick_check` on its own read-only connection on a new thread; the store
    /// keeps serving meanwhile. Damage found is logged as an error naming the file and the fix,
    /// and makes the store refuse every later commit.
    pub fn spawn(self) -> std::io::Result<IntegrityCheck> {
        let IntegrityChecker { path, damage } = self;
        let thread = std::thread::Builder::new().name("integrity-check".into()).spawn(move || {
            let started = Instant::now();
            let outcome = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|conn| conn.busy_timeout(BUSY_TIMEOUT).map(|()| conn))
                .map_err(|e| db_error(&path, e))
                .and_then(|conn| quick_check(&conn, &path));
            match &outcome {
                Ok(()) => tracing::info!(
                    "background integrity check of {} passed ({:.1} s)",
                    path.display(),
                    started.elapsed().as_secs_f64()
                ),
                Err(StoreError::Corrupt { detail, .. }) => {
                    let _ = damage.set(detail.clone());
                    tracing::error!(
                        "{detail}. The host stores nothing more (every change is refused as storage unavailable) \
                         and the next start checks the whole file before serving"
                    );
                }
                Err(e) => tracing::warn!("the background integrity check of {} could not run: {e}", path.display()),
            }
            outcome
        })?;
        Ok(IntegrityCheck(thread))
    }
}

/// The database's files as opened, and the checkpoint schedule.
struct FileWatch {
    db: PathBuf,
    ids: Identities,
    /// Set for good once a file was found deleted or replaced: a file put back at the path is
    /// still not the one this connection writes to.
    lost: Option<String>,
    /// `PRAGMA data_version` when the files were last found intact. Unchanged when a loss is
    /// found, no other connection wrote since, so the log and index this connection holds are
    /// exactly what it wrote and may be copied into the main file.
    version_when_intact: Option<i64>,
    /// When the idle checkpoint last ran.
    checkpointed_at: Instant,
    /// The last idle checkpoint failed (a full disk): said once, not every second.
    checkpoint_failing: bool,
    /// The connection's `synchronous` level is `NORMAL` (set for a tick that wrote only
    /// streamed text, see [`SqliteStore::commit`]); `FULL` otherwise.
    sync_normal: bool,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    ///
    /// Fails with [`StoreError::TooNew`] when the file was written by a newer roundtable, and
    /// with a message naming the file and the fix when it cannot be written (read-only or
    /// immutable file, read-only directory), when the disk is full, or when it is damaged.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = open_connection(path)?;
        Self::on_file(conn, path)
    }

    /// [`SqliteStore::open`] for a host: also reads how the last host stopped and durably
    /// records (before returning) that a host is running, so that a crash, a kill or a power cut
    /// from now on leaves [`LastStop::Unclean`] for the next start. [`Store::stop_cleanly`]
    /// records the clean stop.
    pub fn open_for_host(path: &Path) -> Result<(SqliteStore, LastStop), StoreError> {
        let (conn, found) = open_migrated(path)?;
        let mut store = Self::on_file(conn, path)?;
        let tx = store.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| db_error(path, e))?;
        let clean = rows::stopped_cleanly(&tx).map_err(|e| sql_failure(path, e))?;
        // Already "running" after an unclean stop: nothing is written into a file not yet checked.
        if clean != Some(false) {
            rows::set_stopped_cleanly(&tx, false).map_err(|e| sql_failure(path, e))?;
        }
        tx.commit().map_err(|e| db_error(path, e))?;
        store.records_stops = true;
        let last = match clean {
            _ if found == 0 => LastStop::New,
            Some(true) => LastStop::Clean,
            Some(false) => LastStop::Unclean { recorded: true },
            None => LastStop::Unclean { recorded: false },
        };
        tracing::debug!(path = %path.display(), ?last, "recorded a running host");
        Ok((store, last))
    }

    fn on_file(conn: Connection, path: &Path) -> Result<SqliteStore, StoreError> {
        check_writable(&conn, path)?;
        tracing::debug!(path = %path.display(), "opened database");
        let file = FileWatch {
            db: path.to_path_buf(),
            ids: Identities::read(path),
            lost: None,
            version_when_intact: data_version(&conn).ok(),
            checkpointed_at: Instant::now(),
            checkpoint_failing: false,
            sync_normal: false,
        };
        Ok(SqliteStore {
            conn,
            path: path.display().to_string(),
            data_version: None,
            file: Some(file),
            damage: Default::default(),
            records_stops: false,
            stopped_cleanly: false,
        })
    }

    /// A private in-memory database (tests, the simulator).
    ///
    /// The migrations run once per thread, into a template database; each store starts as a
    /// page-for-page copy of it (SQLite's online backup), so it holds exactly what migrating a
    /// fresh database gives (schema, triggers, `user_version`) without running every migration
    /// again — the simulator opens one per seed and per host restart.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open_in_memory().map_err(crate::db)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        MIGRATED_TEMPLATE.with(|template| -> Result<(), StoreError> {
            let mut template = template.borrow_mut();
            if template.is_none() {
                let mut fresh = Connection::open_in_memory().map_err(crate::db)?;
                migrate::migrate(&mut fresh, ":memory:")?;
                *template = Some(fresh);
            }
            let template = template.as_ref().expect("migrated above");
            let backup = rusqlite::backup::Backup::new(template, &mut conn).map_err(crate::db)?;
            backup.run_to_completion(i32::MAX, Duration::ZERO, None).map_err(crate::db)
        })?;
        conn.pragma_update(None, "foreign_keys", true).map_err(crate::db)?;
        Ok(SqliteStore {
            conn,
            path: ":memory:".into(),
            data_version: None,
            file: None,
            damage: Default::default(),
            records_stops: false,
            stopped_cleanly: false,
        })
    }

    /// Sets the connection's `synchronous` level for the next commit: `NORMAL` (the commit is in
    /// the log, in the operating system's hands, when it returns) for a tick of streamed text
    /// only, else `FULL` (the log is synced to the disk before the commit returns; that also
    /// syncs every earlier commit in it). In-memory databases never sync.
    fn set_sync(&mut self, normal: bool) -> rusqlite::Result<()> {
        let Some(w) = self.file.as_mut() else { return Ok(()) };
        if w.sync_normal != normal {
            self.conn.pragma_update(None, "synchronous", if normal { "NORMAL" } else { "FULL" })?;
            w.sync_normal = normal;
        }
        Ok(())
    }

    /// The connection's `synchronous` level as SQLite reports it (1 `NORMAL`, 2 `FULL`): that of
    /// the last commit.
    pub fn synchronous(&self) -> Result<i64, StoreError> {
        self.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).map_err(crate::db)
    }

    /// [`Store::check_health`] at `now`: the database's files are still the ones opened, and
    /// when [`IDLE_CHECKPOINT_EVERY`] has passed since the last idle checkpoint, a passive
    /// checkpoint copies the log into the main file (so a lost log costs at most about a
    /// second of writes). A failing checkpoint (a full disk) is logged, not fatal: commits
    /// still go to the log, and fail by themselves if it cannot take them.
    pub fn check_health_at(&mut self, now: Instant) -> Result<(), StoreError> {
        self.check_undamaged()?;
        self.check_files()?;
        let Some(watch) = self.file.as_mut() else { return Ok(()) };
        if now.saturating_duration_since(watch.checkpointed_at) >= IDLE_CHECKPOINT_EVERY {
            watch.checkpointed_at = now;
            match checkpoint(&self.conn) {
                Err(e) if !watch.checkpoint_failing => {
                    watch.checkpoint_failing = true;
                    tracing::warn!(
                        "idle checkpoint of {} failed: {}",
                        watch.db.display(),
                        files::explain(&watch.db, &e)
                    );
                }
                Err(_) => {}
                Ok(_) => watch.checkpoint_failing = false,
            }
        }
        Ok(())
    }

    /// [`StoreError::Corrupt`] once SQLite found the file damaged.
    fn check_undamaged(&self) -> Result<(), StoreError> {
        match self.damage.get() {
            Some(detail) => Err(StoreError::Corrupt { table: DAMAGED_FILE, detail: detail.clone() }),
            None => Ok(()),
        }
    }

    /// `e`, remembering for good when it says SQLite found the file damaged (see
    /// [`SqliteStore::check_undamaged`]).
    fn noting_damage(&self, e: StoreError) -> StoreError {
        if let StoreError::Corrupt { table: DAMAGED_FILE, detail } = &e {
            if self.damage.set(detail.clone()).is_ok() {
                tracing::error!("{detail}. The host stores nothing more and the next start checks the whole file");
            }
        }
        e
    }

    /// A failed read in the store contract's terms, damage named and remembered.
    fn read_failed(&self, e: crate::Error) -> StoreError {
        self.noting_damage(sql_failure(Path::new(&self.path), e))
    }

    /// The integrity check of this database, to run in the background while the host serves
    /// ([`IntegrityChecker::spawn`]); damage it finds makes this store refuse every commit.
    pub fn integrity_checker(&self) -> IntegrityChecker {
        IntegrityChecker { path: PathBuf::from(&self.path), damage: self.damage.clone() }
    }

    /// An error when one of the database's files is no longer the one opened (three `stat`s).
    fn check_files(&mut self) -> Result<(), StoreError> {
        let Some(watch) = self.file.as_mut() else { return Ok(()) };
        if let Some(lost) = &watch.lost {
            return Err(StoreError::Db(lost.clone()));
        }
        let Some(change) = watch.ids.changed() else {
            watch.version_when_intact = data_version(&self.conn).ok();
            return Ok(());
        };
        let lost = match change.part {
            Part::Main if change.deleted => {
                format!("{}; stop the host and restore it", change.describe("the host was running"))
            }
            Part::Main => format!(
                "{}; stop the host and check which file is the right one",
                change.describe("the host was running")
            ),
            Part::Wal | Part::Shm => format!(
                "{}, so nothing more can be stored safely; {}. Stop the host and start it again",
                change.describe("the host was running"),
                rescue(&self.conn, &watch.db, watch.version_when_intact)
            ),
        };
        // Closing the connection must not checkpoint through files that are not at the path any
        // more, nor delete the ones that are (they may be another process's now).
        let _ = self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        tracing::error!("{lost}");
        watch.lost = Some(lost.clone());
        Err(StoreError::Db(lost))
    }

    /// The database path (`:memory:` for an in-memory store).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrate::version(&self.conn).map_err(Into::into)
    }

    /// `PRAGMA quick_check`: an error naming the first problems when the file is damaged (a
    /// corrupt page would otherwise start fine and then fail every write). Reads every page
    /// once, so it takes time proportional to the file (see docs/PERFORMANCE.md).
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        quick_check(&self.conn, Path::new(&self.path)).map_err(|e| self.noting_damage(e))
    }

    /// Bytes of the database's free pages (`PRAGMA freelist_count` × `page_size`): space that
    /// deleted rows left inside the file, reused by later writes before the file grows.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).map_err(crate::db)?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(crate::db)?;
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
    }

    /// All shares, ordered by id.
    pub fn shares(&self) -> Result<Vec<ShareRow>, StoreError> {
        rows::shares(&self.conn).map_err(|e| self.read_failed(e))
    }

    /// Whether the database has no workspace and no share: what a data dir whose database was
    /// lost looks like (a host registers a workspace before it is ready, and neither is ever
    /// deleted).
    pub fn holds_no_workspace_or_share(&self) -> Result<bool, StoreError> {
        let empty = || -> Result<bool, crate::Error> {
            Ok(rows::workspaces(&self.conn)?.is_empty() && rows::shares(&self.conn)?.is_empty())
        };
        empty().map_err(|e| self.read_failed(e))
    }

    /// `e` with the database's path in it, so a damaged file is named.
    fn named(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Db(detail) if !detail.contains(&self.path) => {
                StoreError::Db(format!("reading {}: {detail}", self.path))
            }
            StoreError::Corrupt { table, detail } if !detail.contains(&self.path) => {
                StoreError::Corrupt { table, detail: format!("{detail} (in {})", self.path) }
            }
            other => other,
        }
    }

    fn load_snapshot(&mut self) -> Result<Restored, crate::Error> {
        // One read transaction: a consistent snapshot even if the CLI writes meanwhile.
        let tx = self.conn.transaction()?;
        let (messages, older_messages) = rows::message_tails(&tx, HISTORY_TAIL)?;
        let restored = Restored { events: rows::event_tails(&tx)?, messages, older_messages, ..world_rows(&tx)? };
        tx.commit()?;
        Ok(restored)
    }

    /// [`Store::load_without_tails`]: `load_snapshot` with each session's summary instead of
    /// its tails, in one read transaction.
    fn load_rows(&mut self) -> Result<Restored, crate::Error> {
        let tx = self.conn.transaction()?;
        let restored = Restored { summaries: rows::session_summaries(&tx)?, ..world_rows(&tx)? };
        tx.commit()?;
        Ok(restored)
    }

    /// [`Store::load_tails`]: one session's tails, in one read transaction.
    fn session_tails(&mut self, session: &SessionId) -> Result<SessionTails, crate::Error> {
        let tx = self.conn.transaction()?;
        let (messages, has_older) = rows::messages_before(&tx, session, u64::MAX, HISTORY_TAIL)?;
        let events = rows::event_tail(&tx, session)?;
        tx.commit()?;
        Ok(SessionTails { messages, has_older, events })
    }
}

impl SqliteStore {
    /// One tick's ops in one transaction (see [`Store::commit`]).
    fn commit_tick(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        // Before: never write into a file nobody will read.
        self.check_files()?;
        let db = self.file.as_ref().map_or_else(|| PathBuf::from(&self.path), |w| w.db.clone());
        self.set_sync(previews_only(ops) && !self.stopped_cleanly).map_err(|e| db_error(&db, e))?;
        // IMMEDIATE takes the write lock up front, so a concurrent CLI write makes us wait
        // (busy_timeout) rather than fail half-way. Dropping `tx` on error rolls everything back.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| db_error(&db, e))?;
        if self.stopped_cleanly {
            // Written after the clean stop was recorded: a host is running again.
            rows::set_stopped_cleanly(&tx, false).map_err(|e| sql_failure(&db, e))?;
        }
        for op in ops {
            apply(&tx, op).map_err(|e| sql_failure(&db, e)).map_err(|e| match e {
                StoreError::Db(detail) => StoreError::Db(format!("{} failed: {detail}", describe(op))),
                other => other,
            })?;
        }
        // The event log keeps only each session's replay tail (all that is ever read): one range
        // delete per session that got events, in the same transaction as the events.
        for (session, latest) in latest_events(ops) {
            rows::prune_events(&tx, session, latest).map_err(|e| sql_failure(&db, e)).map_err(|e| match e {
                StoreError::Db(detail) => StoreError::Db(format!("pruning the events of {session} failed: {detail}")),
                other => other,
            })?;
        }
        // Deferred foreign keys are checked here: a batch leaving a dangling reference fails whole.
        tx.commit().map_err(|e| match db_error(&db, e) {
            StoreError::Db(detail) => StoreError::Db(format!("committing {} ops failed: {detail}", ops.len())),
            other => other,
        })?;
        self.stopped_cleanly = false;
        // After: a file lost during the commit fails it too, so it is not acknowledged (what it
        // wrote is copied into the main file when that is safe, see `rescue`).
        self.check_files()
    }
}

/// Everything a start reads but the sessions' tails and summaries (the callers add theirs).
fn world_rows(tx: &Connection) -> Result<Restored, crate::Error> {
    Ok(Restored {
        workspaces: rows::workspaces(tx)?,
        sessions: rows::sessions(tx)?,
        shares: rows::shares(tx)?,
        participants: rows::participants(tx)?,
        votes: rows::votes(tx)?,
        ballots: rows::ballots(tx)?,
        audit_count: rows::audit_count(tx)?,
        settings: rows::settings(tx)?,
        ..Restored::default()
    })
}

/// Whether a tick wrote nothing but text the agent streamed: previews of a reply that is stored
/// whole (with an fsync) when the turn ends. Such a commit does not wait for the disk: the log
/// is written before the frames go out, so a killed host keeps it; a power cut may lose it (and
/// the next commit that syncs makes it durable too).
fn previews_only(ops: &[StoreOp]) -> bool {
    ops.iter().all(|op| matches!(op, StoreOp::AppendStreamed { .. }))
}

/// Applies one op inside the tick's transaction.
fn apply(conn: &Connection, op: &StoreOp) -> Result<(), crate::Error> {
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

/// After the log or its index was deleted or replaced: saves what this connection sees — the
/// main file plus the log it still holds open — as a complete new database that replaces the
/// main file, so a crash or restart loses nothing that was acknowledged. The copy is written
/// beside it (`VACUUM INTO`), synced, and renamed over the main file (after any stray log and
/// index at the path are removed, which would not match the copy), so a crash at any moment
/// leaves either the old main file or the whole copy — never a main file half overwritten, as a
/// checkpoint through a log that is no longer at the path would (a crash in the middle of one
/// cannot be recovered: the log it came from is gone). Only when no other connection wrote
/// since the files were last found intact: otherwise this connection's view may be stale.
/// Returns what happened, for the error message.
fn rescue(conn: &Connection, db: &Path, version_when_intact: Option<i64>) -> String {
    let unchanged = version_when_intact.is_some() && data_version(conn).ok() == version_when_intact;
    if !unchanged {
        return format!(
            "another connection wrote since, so the host did not save its view over {} (that could mix two \
             logs); what it stored since its last checkpoint (about a second) may be lost",
            db.display()
        );
    }
    let copy = db.with_extension("db.rescued");
    let save = || -> Result<(), String> {
        let _ = std::fs::remove_file(&copy);
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()]).map_err(|e| files::explain(db, &e))?;
        std::fs::File::open(&copy).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
        for suffix in ["-wal", "-shm"] {
            let stray = PathBuf::from(format!("{}{suffix}", db.display()));
            match std::fs::remove_file(&stray) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
                _ => {}
            }
        }
        std::fs::rename(&copy, db).map_err(|e| e.to_string())?;
        if let Some(dir) = db.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    };
    match save() {
        Ok(()) => format!("everything the host had stored was saved as a complete copy that replaced {}", db.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&copy);
            format!("saving what the host had stored over {} failed: {e}", db.display())
        }
    }
}

/// The newest seq each session's event log gets in `ops`.
fn latest_events(ops: &[StoreOp]) -> BTreeMap<&SessionId, u64> {
    let mut latest = BTreeMap::new();
    for op in ops {
        if let StoreOp::AppendEvent(e) = op {
            let seq = latest.entry(&e.session).or_insert(e.seq);
            *seq = (*seq).max(e.seq);
        }
    }
    latest
}

/// A short name of an op for error messages.
fn describe(op: &StoreOp) -> String {
    match op {
        StoreOp::PutWorkspace(w) => format!("workspace {}", w.id),
        StoreOp::PutSession(s) => format!("session {}", s.session.id),
        StoreOp::PutShare(s) => format!("share {}", s.id),
        StoreOp::PutParticipant(p) => format!("participant {}", p.participant.id),
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
        self.check_health_at(Instant::now())
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        // Never write into a file found damaged: it would only get worse.
        self.check_undamaged()?;
        let outcome = self.commit_tick(ops);
        outcome.map_err(|e| self.noting_damage(e))
    }

    fn stop_cleanly(&mut self) {
        if !self.records_stops {
            return;
        }
        if let Some(detail) = self.damage.get() {
            tracing::warn!("no clean stop recorded ({detail}): the next start checks the whole file");
            return;
        }
        if let Err(e) = self.check_files() {
            tracing::warn!("no clean stop recorded: {e}");
            return;
        }
        // Synced, and so is every commit of streamed text before it.
        if let Err(e) = self.set_sync(false) {
            tracing::warn!("no clean stop recorded: {}", self.read_failed(e.into()));
            return;
        }
        match rows::set_stopped_cleanly(&self.conn, true) {
            Ok(()) => {
                self.stopped_cleanly = true;
                tracing::debug!(path = %self.path, "recorded a clean stop");
            }
            Err(e) => tracing::warn!(
                "recording the clean stop in {} failed ({}): the next start checks the whole file",
                self.path,
                self.read_failed(e)
            ),
        }
    }

    fn load(&mut self) -> Result<Restored, StoreError> {
        self.load_snapshot().map_err(|e| self.read_failed(e)).map_err(|e| self.named(e))
    }

    fn load_without_tails(&mut self) -> Result<Restored, StoreError> {
        self.load_rows().map_err(|e| self.read_failed(e)).map_err(|e| self.named(e))
    }

    fn load_tails(&mut self, session: &SessionId) -> Result<SessionTails, StoreError> {
        self.session_tails(session).map_err(|e| self.read_failed(e)).map_err(|e| self.named(e))
    }

    fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        rows::messages_before(&self.conn, session, before_seq, limit).map_err(|e| self.read_failed(e))
    }

    fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        rows::message_by_client_id(&self.conn, session, author_id, client_msg_id).map_err(|e| self.read_failed(e))
    }

    fn audit_log(&mut self) -> Result<Vec<AuditRow>, StoreError> {
        rows::audit_tail(&self.conn, usize::MAX).map_err(|e| self.read_failed(e))
    }

    fn audit_tail(&mut self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        rows::audit_tail(&self.conn, limit).map_err(|e| self.read_failed(e))
    }

    fn ballots_of(&mut self, vote: &VoteId) -> Result<Vec<BallotRow>, StoreError> {
        let ballots = rows::ballots(&self.conn).map_err(|e| self.read_failed(e))?;
        Ok(ballots.into_iter().filter(|b| &b.vote == vote).collect())
    }

    fn workspaces(&mut self) -> Result<Vec<WorkspaceRow>, StoreError> {
        rows::workspaces(&self.conn).map_err(|e| self.read_failed(e))
    }

    /// `PRAGMA data_version` changes only when *another* connection commits (the CLI), never for
    /// our own commits, so polling it each tick is a cheap way to notice share edits.
    fn shares_changed_externally(&mut self) -> Result<Option<Vec<ShareRow>>, StoreError> {
        let now = data_version(&self.conn).map_err(crate::db)?;
        match self.data_version.replace(now) {
            Some(before) if before != now => {
                tracing::debug!("database changed by another process; reloading shares");
                Ok(Some(rows::shares(&self.conn).map_err(|e| self.read_failed(e))?))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkspaceId;
    use crate::persist::AgentSpec;

    fn workspace(n: u64) -> StoreOp {
        StoreOp::PutWorkspace(WorkspaceRow {
            id: WorkspaceId::nth(n),
            name: format!("ws {n}"),
            dir: format!("/tmp/ws{n}"),
            agent: AgentSpec::demo(),
        })
    }

    /// Everything in `sqlite_master`, the schema version and the enforced foreign keys.
    fn schema_of(conn: &Connection) -> (Vec<(String, String, String)>, u32, bool) {
        let mut q =
            conn.prepare("SELECT type, name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name").unwrap();
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        (rows, migrate::version(conn).unwrap(), fk)
    }

    #[test]
    fn an_in_memory_store_is_what_migrating_a_fresh_database_gives_and_starts_empty() {
        let mut fresh = Connection::open_in_memory().unwrap();
        fresh.pragma_update(None, "foreign_keys", true).unwrap();
        migrate::migrate(&mut fresh, ":memory:").unwrap();
        let expected = schema_of(&fresh);
        assert_eq!(expected.1, migrate::LATEST);
        // The first copies the per-thread template, the second copies it again: a store's
        // writes never reach the template.
        let mut first = SqliteStore::open_in_memory().unwrap();
        assert_eq!(schema_of(&first.conn), expected);
        first.commit(&[workspace(1)]).unwrap();
        let second = SqliteStore::open_in_memory().unwrap();
        assert_eq!(schema_of(&second.conn), expected);
        let count =
            |s: &SqliteStore| -> i64 { s.conn.query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0)).unwrap() };
        assert_eq!((count(&first), count(&second)), (1, 0));
        // Another thread builds its own template and gets the same.
        let other = std::thread::spawn(|| schema_of(&SqliteStore::open_in_memory().unwrap().conn)).join().unwrap();
        assert_eq!(other, expected);
    }

    #[test]
    fn a_new_database_needs_no_check_and_a_clean_stop_is_read_back_as_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let (mut store, last) = SqliteStore::open_for_host(&path).unwrap();
        assert_eq!(last, LastStop::New);
        store.commit(&[workspace(1)]).unwrap();
        store.stop_cleanly();
        drop(store);
        let (store, last) = SqliteStore::open_for_host(&path).unwrap();
        assert_eq!(last, LastStop::Clean);
        drop(store);
    }

    #[test]
    fn a_host_store_dropped_without_a_clean_stop_leaves_the_database_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let (mut store, _) = SqliteStore::open_for_host(&path).unwrap();
        store.commit(&[workspace(1)]).unwrap();
        store.stop_cleanly();
        drop(store);
        // A crash: the host that opened it next never records its stop.
        let (mut store, last) = SqliteStore::open_for_host(&path).unwrap();
        assert_eq!(last, LastStop::Clean);
        store.commit(&[workspace(2)]).unwrap();
        drop(store);
        assert_eq!(SqliteStore::open_for_host(&path).unwrap().1, LastStop::Unclean { recorded: true });
        // Nor does the next start's own crash right after opening make it clean again.
        assert_eq!(SqliteStore::open_for_host(&path).unwrap().1, LastStop::Unclean { recorded: true });
    }

    #[test]
    fn a_commit_after_the_clean_stop_records_a_running_host_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let (mut store, _) = SqliteStore::open_for_host(&path).unwrap();
        store.stop_cleanly();
        store.commit(&[workspace(1)]).unwrap();
        drop(store);
        assert_eq!(SqliteStore::open_for_host(&path).unwrap().1, LastStop::Unclean { recorded: true });
    }

    #[test]
    fn a_database_written_before_stops_were_recorded_counts_as_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.commit(&[workspace(1)]).unwrap();
        drop(store);
        // As a roundtable before migration 0013 left it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE host_state; PRAGMA user_version = 12;").unwrap();
        drop(conn);
        let (store, last) = SqliteStore::open_for_host(&path).unwrap();
        assert_eq!(last, LastStop::Unclean { recorded: false });
        assert_eq!(store.schema_version().unwrap(), migrate::LATEST);
    }

    #[test]
    fn only_a_host_store_records_stops_so_the_cli_writing_beside_leaves_the_marker_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let (mut store, _) = SqliteStore::open_for_host(&path).unwrap();
        store.stop_cleanly();
        drop(store);
        let mut cli = SqliteStore::open(&path).unwrap();
        cli.commit(&[workspace(1)]).unwrap();
        cli.stop_cleanly();
        drop(cli);
        assert_eq!(SqliteStore::open_for_host(&path).unwrap().1, LastStop::Clean);
    }

    #[test]
    fn sqlite_finding_damage_is_corrupt_naming_the_file_and_the_fix() {
        let path = Path::new("/data/roundtable.db");
        let malformed = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        let StoreError::Corrupt { table, detail } = sql_failure(path, crate::Error::Sql(malformed)) else {
            panic!("not Corrupt")
        };
        assert_eq!(table, DAMAGED_FILE);
        assert!(detail.contains("/data/roundtable.db is damaged (database disk image is malformed)"), "{detail}");
        assert!(detail.contains("roundtable serve --fresh"), "{detail}");
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(matches!(db_error(path, busy), StoreError::Db(_)));
    }

    #[test]
    fn a_lost_log_is_not_saved_over_the_main_file_when_another_connection_wrote_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.commit(&[workspace(1)]).unwrap();
        // Another connection (the CLI) commits; then the log goes. This connection's index may
        // now describe frames it does not hold, so it must not copy them.
        let other = open_connection(&path).unwrap();
        other.execute("UPDATE workspaces SET name = 'renamed'", []).unwrap();
        std::fs::remove_file(Part::Wal.of(&path)).unwrap();
        let err = store.commit(&[workspace(2)]).unwrap_err().to_string();
        assert!(err.contains("another connection wrote since, so the host did not save its view"), "{err}");
    }

    #[test]
    fn other_connections_coming_and_going_and_checkpoints_never_look_like_a_lost_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roundtable.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let start = Instant::now();
        for n in 1..=50u64 {
            store.commit(&[workspace(n)]).unwrap();
            // A CLI opens, writes and closes (it is never the last connection, so it neither
            // checkpoints on close nor deletes the log).
            let cli = open_connection(&path).unwrap();
            cli.execute("UPDATE workspaces SET name = name", []).unwrap();
            drop(cli);
            store.check_health_at(start + IDLE_CHECKPOINT_EVERY * n as u32).unwrap();
            store.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        }
        assert!(store.file.as_ref().unwrap().ids.changed().is_none());
        store.commit(&[workspace(51)]).unwrap();
    }
}
