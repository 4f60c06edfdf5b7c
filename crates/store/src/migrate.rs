//! Numbered schema migrations, embedded in the binary and applied in order at open.
//!
//! Migration `n` lives in `migrations/000n_*.sql`. The schema version is SQLite's
//! `PRAGMA user_version`: migration `n` runs in its own transaction that also sets the version to
//! `n`, so a crash mid-migration leaves the previous version intact. A database whose version is
//! newer than [`LATEST`] was written by a newer roundtable and is refused rather than guessed at.

use crate::persist::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// The migrations, in order. Index `i` holds migration number `i + 1`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_streamed_text", include_str!("../migrations/0002_streamed_text.sql")),
    ("0003_session_allowed_tools", include_str!("../migrations/0003_session_allowed_tools.sql")),
    ("0004_history_paging", include_str!("../migrations/0004_history_paging.sql")),
    ("0005_streamed_chunks", include_str!("../migrations/0005_streamed_chunks.sql")),
    ("0006_retire_token_hash_once", include_str!("../migrations/0006_retire_token_hash_once.sql")),
    ("0007_room_chat", include_str!("../migrations/0007_room_chat.sql")),
    ("0008_read_markers", include_str!("../migrations/0008_read_markers.sql")),
    ("0009_host_settings", include_str!("../migrations/0009_host_settings.sql")),
    ("0010_agent_memory", include_str!("../migrations/0010_agent_memory.sql")),
    ("0011_agent_settings", include_str!("../migrations/0011_agent_settings.sql")),
    ("0012_prune_events", include_str!("../migrations/0012_prune_events.sql")),
    ("0013_host_state", include_str!("../migrations/0013_host_state.sql")),
];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The database's schema version (`PRAGMA user_version`).
pub fn version(conn: &Connection) -> Result<u32, crate::Error> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(u32::try_from(v).map_err(|_| StoreError::Corrupt { table: "user_version", detail: format!("version {v}") })?)
}

/// Brings the schema up to [`LATEST`]. Returns the version found before migrating.
///
/// Safe against a concurrent opener (the CLI and the host starting at once): the version is
/// re-read inside each write transaction, so a migration already applied by the other process is
/// skipped instead of failing.
pub fn migrate(conn: &mut Connection, path: &str) -> Result<u32, crate::Error> {
    let found = version(conn)?;
    check_not_newer(found, path)?;
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let number = index as u32 + 1;
        if number <= found {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = version(&tx)?;
        check_not_newer(current, path)?;
        if current >= number {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| StoreError::Db(format!("migration {name} failed: {e}")))?;
        tx.pragma_update(None, "user_version", number)?;
        tx.commit()?;
        tracing::info!(migration = name, "applied database migration");
    }
    Ok(found)
}

fn check_not_newer(found: u32, path: &str) -> Result<(), crate::Error> {
    if found > LATEST {
        return Err(StoreError::TooNew { path: path.to_string(), found, supported: LATEST }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sql_file_in_migrations_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| name.strip_suffix(".sql").map(str::to_string))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(files, embedded);
        for (i, name) in embedded.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name} is not migration {}", i + 1);
        }
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, ":memory:").unwrap(), 0);
        assert_eq!(version(&conn).unwrap(), LATEST);
        assert_eq!(migrate(&mut conn, ":memory:").unwrap(), LATEST);
        assert_eq!(version(&conn).unwrap(), LATEST);
    }
}
