//! The SQLite store: the engine's [`crate::persist::Store`] on a file, plus the admin operations
//! the `workspace` / `share` CLI performs on the same file while a host may be running.
//!
//! - [`sqlite`]: [`SqliteStore`] — one connection owned by the engine thread; one transaction per
//!   tick; `load` at start; `PRAGMA data_version` polling to notice other writers.
//! - [`admin`]: [`Admin`] — workspace registration and share mint/list/revoke/rotate, each a short
//!   `BEGIN IMMEDIATE` transaction with an audit row.
//! - [`files`]: the database's three files (main, `-wal`, `-shm`): noticing one deleted or
//!   replaced under a running host, and explaining a read-only file, a full disk or damage.
//! - [`migrate`]: numbered migrations from `migrations/`, embedded in the binary.
//! - `rows`: the mapping between row types and SQL.
//!
//! The `roundtable workspace ...` / `roundtable share ...` commands that drive [`Admin`] live in
//! `crate::app::admin`: this layer knows no command line and no link.
//!
//! Concurrency model: SQLite in WAL mode lets the host keep writing while the CLI reads; writers
//! serialise on the database lock (`busy_timeout` makes them wait instead of failing). A running
//! host notices CLI edits through `PRAGMA data_version` ([`SqliteStore`]'s
//! `shares_changed_externally`), so they take effect within one tick.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use roundtable_protocol::{ids, persist, protocol, token};

pub mod admin;
pub mod fault;
pub mod files;
pub mod migrate;
mod rows;
pub mod sqlite;
pub mod workspace_files;

pub use admin::{Admin, AdminError};
pub use sqlite::{IntegrityCheck, IntegrityChecker, LastStop, SqliteStore};
pub use workspace_files::ConfinedFiles;

use crate::persist::StoreError;

/// An error inside this crate: SQLite's own, or one already in the store contract's terms. It
/// becomes a [`StoreError`] at the crate's edge (`?` converts it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SQLite's error in the store contract's terms (`.map_err(db)?` where `?` alone cannot say it).
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    Error::Sql(e).into()
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sql(e) => StoreError::Db(e.to_string()),
            Error::Store(e) => e,
        }
    }
}
