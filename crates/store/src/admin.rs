//! Admin operations on the database file: register workspaces, mint / list / revoke / rotate
//! shares, read the audit log. Used by the CLI while a host may be running on the same file.
//!
//! Each mutation is one `BEGIN IMMEDIATE` transaction: ids (`w{n}`, `sh{n}`: one more than the
//! largest existing number) are allocated while holding the write lock, so two writers never
//! pick the same id from the database. Every mutation also writes an audit row. The running host
//! notices the commit through `PRAGMA data_version` and applies share edits within one tick.
//!
//! Before it writes, each mutation makes sure the write will be seen (while it holds the write
//! lock, so the host cannot commit meanwhile): the database's files are still the ones this
//! connection opened, and every other process that has the database open uses the same
//! `-wal` and `-shm` files as this one ([`files::check_beside_others`]). Otherwise — the
//! `-shm` deleted beside a running host, say — this connection would rebuild its own index,
//! the write would land where the host never looks, and a link would be printed that the host
//! refuses and later overwrites. (Reading the row back in a fresh connection would not tell:
//! connections in one process share the index of the file they open.)

use super::files::{self, Identities};
use super::{rows, sqlite};
use crate::ids::{ShareId, WorkspaceId};
use crate::persist::{AgentSpec, AuditRow, SessionRow, ShareRow, StoreError, WorkspaceRow};
use crate::protocol::{MintShareParams, Role};
use crate::token;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// Who admin edits are attributed to in the audit log (the CLI runs as the host's user).
pub const ACTOR: &str = "host";
/// Audit detail marking edits made through the CLI.
pub const VIA_CLI: &str = "via cli";

/// The agent backends a workspace can run.
pub const AGENT_KINDS: [&str; 4] = ["demo", "claude", "codex", "command"];

/// Admin failures, each with a message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no workspace \"{id}\" ({})", known_list("workspaces", .known, "add one with `roundtable workspace add DIR`"))]
    UnknownWorkspace { id: WorkspaceId, known: Vec<WorkspaceId> },
    #[error("no share \"{id}\" ({})", known_list("shares", .known, "mint one with `roundtable share mint --workspace ID`"))]
    UnknownShare { id: ShareId, known: Vec<ShareId> },
    #[error("a share needs at least one workspace (--workspace ID)")]
    NoWorkspaces,
    #[error("directory {} does not exist", .0.display())]
    NoSuchDir(PathBuf),
    #[error("cannot use {}: {error}", .dir.display())]
    BadDir { dir: PathBuf, error: std::io::Error },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} is not valid UTF-8; use a directory with a UTF-8 path", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("{dir} is already registered as workspace {id} (\"{name}\")")]
    DuplicateDir { dir: String, id: WorkspaceId, name: String },
    #[error("invalid agent: {0}")]
    BadAgent(String),
    #[error("invalid share settings: {0}")]
    BadSettings(String),
    #[error("share {0} is revoked; mint a new share instead (`roundtable share mint`)")]
    Revoked(ShareId),
}

impl From<crate::Error> for AdminError {
    fn from(e: crate::Error) -> Self {
        AdminError::Store(e.into())
    }
}

impl From<rusqlite::Error> for AdminError {
    fn from(e: rusqlite::Error) -> Self {
        AdminError::Store(crate::Error::from(e).into())
    }
}

fn known_list<T: Display>(what: &str, known: &[T], hint: &str) -> String {
    if known.is_empty() {
        format!("there are no {what} yet; {hint}")
    } else {
        let ids: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        format!("existing {what}: {}", ids.join(", "))
    }
}

/// Checks an agent spec: a known kind, and a command for `command`.
pub fn validate_agent(agent: &AgentSpec) -> Result<(), AdminError> {
    if !AGENT_KINDS.contains(&agent.kind.as_str()) {
        return Err(AdminError::BadAgent(format!(
            "unknown agent \"{}\" (expected one of: {})",
            agent.kind,
            AGENT_KINDS.join(", ")
        )));
    }
    match agent.kind.as_str() {
        "command" if agent.command.as_deref().is_none_or(str::is_empty) => {
            Err(AdminError::BadAgent("the `command` agent needs the executable to run (--agent-cmd PATH)".into()))
        }
        "demo" if agent.command.is_some() || !agent.args.is_empty() => {
            Err(AdminError::BadAgent("the `demo` agent is built in and takes no --agent-cmd or --agent-arg".into()))
        }
        _ => Ok(()),
    }
}

/// Checks share settings (before any id is allocated).
pub fn validate_share(params: &MintShareParams) -> Result<(), AdminError> {
    if params.workspaces.is_empty() {
        return Err(AdminError::NoWorkspaces);
    }
    if params.role == Role::Host {
        return Err(AdminError::BadSettings("a share grants `participant` or `observer`, never `host`".into()));
    }
    if params.max_uses == Some(0) {
        return Err(AdminError::BadSettings("--max-uses must be at least 1".into()));
    }
    if params.expires_in_ms == Some(0) {
        return Err(AdminError::BadSettings("--expires-in must be longer than zero".into()));
    }
    if params.vote_deadline_ms == Some(0) {
        return Err(AdminError::BadSettings("--vote-deadline must be longer than zero".into()));
    }
    Ok(())
}

/// One more than the largest number among `ids` (ids that are not `prefix{n}` are ignored).
fn next_number(numbers: impl Iterator<Item = Option<u64>>) -> u64 {
    numbers.flatten().max().unwrap_or(0) + 1
}

/// An admin connection on the database file.
pub struct Admin {
    conn: Connection,
    db: PathBuf,
    /// The database's files as this connection opened them.
    ids: Identities,
}

/// Starts a write transaction and checks that what it writes will be seen (see the module
/// docs); an error names the file and what to do.
fn begin_write<'c>(conn: &'c mut Connection, db: &Path, ids: &Identities) -> Result<Transaction<'c>, AdminError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sqlite::db_error(db, e))?;
    // SQLite opens a file it may not write read-only without a word (the write would fail
    // with a bare "attempt to write a readonly database").
    if tx.is_readonly("main").unwrap_or(false) {
        let why = files::unwritable(db).unwrap_or_else(|| format!("{} was opened read-only", db.display()));
        return Err(StoreError::Db(format!("nothing was written: {why}")).into());
    }
    if let Some(change) = ids.changed() {
        let what = change.describe("this command ran");
        return Err(StoreError::Db(format!("nothing was written: {what}; check the data dir and try again")).into());
    }
    files::check_beside_others(db).map_err(StoreError::Db)?;
    Ok(tx)
}

/// Commits a write; an error (a full disk, a read-only file) names the file.
fn commit(tx: Transaction<'_>, db: &Path) -> Result<(), AdminError> {
    tx.commit().map_err(|e| sqlite::db_error(db, e))?;
    Ok(())
}

impl Admin {
    /// Opens (creating and migrating if needed) the database at `path`. Refused beside a
    /// process (the host) that has the database open through a `-wal` or `-shm` file that is
    /// no longer at the path: this connection would make new ones, and neither would see the
    /// other's writes.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        files::check_beside_others(path).map_err(StoreError::Db)?;
        let conn = sqlite::open_connection(path)?;
        Ok(Admin { conn, db: path.to_path_buf(), ids: Identities::read(path) })
    }

    /// Registers `dir` (canonicalised; must exist) as workspace `w{n}`. `name` defaults to the
    /// directory's name.
    pub fn add_workspace(
        &mut self,
        name: Option<&str>,
        dir: &Path,
        agent: AgentSpec,
        now_ms: u64,
    ) -> Result<WorkspaceRow, AdminError> {
        validate_agent(&agent)?;
        let canonical = std::fs::canonicalize(dir).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => AdminError::NoSuchDir(dir.to_path_buf()),
            _ => AdminError::BadDir { dir: dir.to_path_buf(), error },
        })?;
        if !canonical.is_dir() {
            return Err(AdminError::NotADirectory(canonical));
        }
        let dir_text = canonical.to_str().ok_or_else(|| AdminError::NonUtf8Path(canonical.clone()))?.to_string();
        let name = match name.map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => canonical.file_name().and_then(|n| n.to_str()).unwrap_or(&dir_text).to_string(),
        };

        let tx = begin_write(&mut self.conn, &self.db, &self.ids)?;
        let existing = rows::workspaces(&tx)?;
        if let Some(w) = existing.iter().find(|w| w.dir == dir_text) {
            return Err(AdminError::DuplicateDir { dir: dir_text, id: w.id.clone(), name: w.name.clone() });
        }
        let id = WorkspaceId::nth(next_number(existing.iter().map(|w| w.id.number())));
        let row = WorkspaceRow { id: id.clone(), name, dir: dir_text, agent };
        rows::put_workspace(&tx, &row)?;
        rows::audit(
            &tx,
            &AuditRow {
                at: now_ms,
                actor: ACTOR.into(),
                action: "workspace_added".into(),
                target: id.to_string(),
                detail: format!("{VIA_CLI}: {} ({}, agent {})", row.name, row.dir, row.agent.kind),
            },
        )?;
        commit(tx, &self.db)?;
        Ok(row)
    }

    /// All workspaces, ordered by id.
    pub fn list_workspaces(&self) -> Result<Vec<WorkspaceRow>, AdminError> {
        Ok(rows::workspaces(&self.conn)?)
    }

    /// All sessions, ordered by id.
    pub fn list_sessions(&self) -> Result<Vec<SessionRow>, AdminError> {
        Ok(rows::sessions(&self.conn)?)
    }

    /// Mints share `sh{n}` with `params` and returns it with its token. The token is returned
    /// only here; the database keeps its SHA-256.
    pub fn mint_share(&mut self, params: &MintShareParams, now_ms: u64) -> Result<(ShareRow, String), AdminError> {
        validate_share(params)?;
        let workspaces: std::collections::BTreeSet<WorkspaceId> = params.workspaces.iter().cloned().collect();

        let tx = begin_write(&mut self.conn, &self.db, &self.ids)?;
        let known: Vec<WorkspaceId> = rows::workspaces(&tx)?.into_iter().map(|w| w.id).collect();
        if let Some(missing) = workspaces.iter().find(|w| !known.contains(w)) {
            return Err(AdminError::UnknownWorkspace { id: missing.clone(), known });
        }
        let shares = rows::shares(&tx)?;
        let id = ShareId::nth(next_number(shares.iter().map(|s| s.id.number())));
        let token = token::generate_os();
        let row = ShareRow {
            id: id.clone(),
            label: params.label.trim().to_string(),
            token_hash: token::hash(&token),
            workspaces,
            collaborative: params.collaborative,
            consensus_required: params.consensus_required,
            admission_required: params.admission_required,
            role: params.role,
            expires_at: params.expires_in_ms.map(|d| now_ms.saturating_add(d)),
            max_uses: params.max_uses,
            uses: 0,
            revoked: false,
            created_at: now_ms,
            vote_deadline_ms: params.vote_deadline_ms,
        };
        rows::put_share(&tx, &row)?;
        rows::audit(&tx, &audit_row(now_ms, "share_minted", &id, &row.label))?;
        commit(tx, &self.db)?;
        Ok((row, token))
    }

    /// All shares, ordered by id.
    pub fn list_shares(&self) -> Result<Vec<ShareRow>, AdminError> {
        Ok(rows::shares(&self.conn)?)
    }

    /// Revokes a share. Returns the share and whether this call revoked it (`false`: it already
    /// was). A running host closes the share's connections within one tick.
    pub fn revoke_share(&mut self, id: &ShareId, now_ms: u64) -> Result<(ShareRow, bool), AdminError> {
        let tx = begin_write(&mut self.conn, &self.db, &self.ids)?;
        let mut row = find_share(&tx, id)?;
        if row.revoked {
            return Ok((row, false));
        }
        row.revoked = true;
        rows::put_share(&tx, &row)?;
        rows::audit(&tx, &audit_row(now_ms, "share_revoked", id, ""))?;
        commit(tx, &self.db)?;
        Ok((row, true))
    }

    /// Replaces a share's token and returns the new one. The old token stops working; live
    /// connections stay.
    pub fn rotate_share(&mut self, id: &ShareId, now_ms: u64) -> Result<(ShareRow, String), AdminError> {
        let tx = begin_write(&mut self.conn, &self.db, &self.ids)?;
        let mut row = find_share(&tx, id)?;
        if row.revoked {
            return Err(AdminError::Revoked(id.clone()));
        }
        let token = token::generate_os();
        row.token_hash = token::hash(&token);
        rows::put_share(&tx, &row)?;
        rows::audit(&tx, &audit_row(now_ms, "share_rotated", id, ""))?;
        commit(tx, &self.db)?;
        Ok((row, token))
    }

    /// The newest `limit` audit rows, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, AdminError> {
        Ok(rows::audit_tail(&self.conn, limit)?)
    }
}

fn find_share(conn: &Connection, id: &ShareId) -> Result<ShareRow, AdminError> {
    let shares = rows::shares(conn)?;
    if let Some(found) = shares.iter().find(|s| &s.id == id) {
        return Ok(found.clone());
    }
    Err(AdminError::UnknownShare { id: id.clone(), known: shares.into_iter().map(|s| s.id).collect() })
}

fn audit_row(now_ms: u64, action: &str, id: &ShareId, label: &str) -> AuditRow {
    let detail = if label.is_empty() { VIA_CLI.to_string() } else { format!("{VIA_CLI}: {label}") };
    AuditRow { at: now_ms, actor: ACTOR.into(), action: action.into(), target: id.to_string(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_is_a_known_agent_kind_and_needs_no_command() {
        let codex = AgentSpec { kind: "codex".into(), command: None, args: Vec::new(), plan_first: Some(true) };
        assert!(validate_agent(&codex).is_ok());
        let gpt = AgentSpec { kind: "gpt".into(), ..codex };
        let err = validate_agent(&gpt).unwrap_err().to_string();
        assert!(err.contains("demo, claude, codex, command"), "{err}");
    }
}
