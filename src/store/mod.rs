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

pub mod admin;
pub mod fault;
pub mod files;
pub mod migrate;
mod rows;
pub mod sqlite;

pub use admin::{Admin, AdminError};
pub use sqlite::SqliteStore;

use crate::persist::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}
