//! The database's files on disk, and what can go wrong with them.
//!
//! A SQLite database in WAL mode is three files: the main file (`roundtable.db`), its
//! write-ahead log (`roundtable.db-wal`, where every commit lands first) and the log's
//! shared-memory index (`roundtable.db-shm`, which tells every connection which log frames are
//! valid). A connection keeps all three open for as long as it lives, and SQLite itself never
//! deletes or recreates the log or the index while any connection is open (a checkpoint rewinds
//! and at most truncates the log, in place). So deleting or replacing any of them while a host
//! runs splits the database in two: the host keeps writing into the unlinked file, which no
//! one reads after a restart, and a command opened later makes fresh files that the host never
//! reads. SQLite notices none of it. This module lets the store notice:
//!
//! - [`Identities`]: device and inode of the three files as a connection opened them. The host
//!   compares them before every commit and on every idle tick, the CLI before each write.
//! - [`check_beside_others`]: for a command writing beside a running host: every other process
//!   that has the database open must have the very log and index that are at the path open too
//!   (read from `/proc/locks` and `/proc/PID/fd`, Linux only; elsewhere nothing is checked),
//!   or the write would land where the host never looks.
//! - [`explain`]: SQLite's terse errors ("disk I/O error", "attempt to write a readonly
//!   database", "database disk image is malformed") turned into a sentence that names the file
//!   and what to do.

use std::path::{Path, PathBuf};

/// (device, inode) of a file.
pub type FileId = (u64, u64);

/// Below this many free bytes, an I/O error is reported as a full disk.
pub const FULL_BELOW_BYTES: u64 = 1 << 20;

/// One of the database's three files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Wal,
    Shm,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Main, Part::Wal, Part::Shm];

    /// What SQLite appends to the main file's path.
    pub fn suffix(self) -> &'static str {
        match self {
            Part::Main => "",
            Part::Wal => "-wal",
            Part::Shm => "-shm",
        }
    }

    /// What the file is, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Part::Main => "database file",
            Part::Wal => "database's write-ahead log",
            Part::Shm => "database's shared-memory index",
        }
    }

    /// The path of this part of the database at `db`.
    pub fn of(self, db: &Path) -> PathBuf {
        let mut path = db.as_os_str().to_owned();
        path.push(self.suffix());
        PathBuf::from(path)
    }
}

/// Device and inode of the file at `path` (following symlinks), `None` when there is none.
pub fn id_of(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identities of a database's three files at one moment.
#[derive(Clone, Debug)]
pub struct Identities {
    db: PathBuf,
    ids: [Option<FileId>; 3],
}

/// A file that is no longer the one a connection opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub part: Part,
    pub file: PathBuf,
    /// Gone from the path (else another file is there now).
    pub deleted: bool,
}

impl Change {
    /// "the database's write-ahead log X-wal was deleted while {during}".
    pub fn describe(&self, during: &str) -> String {
        let how = if self.deleted { "deleted" } else { "replaced" };
        format!("the {} {} was {how} while {during}", self.part.what(), self.file.display())
    }
}

impl Identities {
    /// The identities of the files of the database at `db` now (a file that does not exist has
    /// none and is not watched).
    pub fn read(db: &Path) -> Identities {
        Identities { db: db.to_path_buf(), ids: Part::ALL.map(|part| id_of(&part.of(db))) }
    }

    /// The first file (main file first) that is not the one it was when read: three `stat`s.
    pub fn changed(&self) -> Option<Change> {
        Part::ALL.into_iter().zip(self.ids).find_map(|(part, then)| {
            let then = then?;
            let file = part.of(&self.db);
            match id_of(&file) {
                Some(now) if now == then => None,
                now => Some(Change { part, file, deleted: now.is_none() }),
            }
        })
    }
}

/// For a writer beside a running host: every other process that holds a lock on the database
/// file (a connection in WAL mode holds one for its whole life) must have open the very
/// write-ahead log and shared-memory index that are at the path now. When the host's are
/// deleted or replaced, this connection made or uses new ones, and anything written here would
/// never be seen by the host, which would overwrite it or drop it when it stops.
///
/// Looks through `/proc`, so only on Linux; a process whose files cannot be listed (another
/// user's) is not judged. Tried three times 50 ms apart, since a process that is just opening
/// the database holds its lock a moment before it opens the log.
pub fn check_beside_others(db: &Path) -> Result<(), String> {
    let mut outcome = Ok(());
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        outcome = check_beside_others_once(db);
        if outcome.is_ok() {
            break;
        }
    }
    outcome
}

fn check_beside_others_once(db: &Path) -> Result<(), String> {
    let Some(db_id) = id_of(db) else { return Ok(()) };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return Ok(()) };
    let me = std::process::id();
    let mut holders: Vec<u32> = lock_holders(&locks, db_id).into_iter().filter(|&pid| pid != me).collect();
    holders.sort_unstable();
    holders.dedup();
    for pid in holders {
        let Some(open) = open_files(pid) else { continue };
        if !open.contains(&db_id) {
            continue;
        }
        for part in [Part::Wal, Part::Shm] {
            let file = part.of(db);
            let now = id_of(&file);
            if now.is_some_and(|id| open.contains(&id)) {
                continue;
            }
            let change = Change { part, file, deleted: now.is_none() };
            return Err(format!(
                "process {pid} (the running host?) has {} open, but {}, so it and this command would not see \
                 each other's writes (nothing was written). Stop that process and start the host again, then \
                 retry",
                db.display(),
                change.describe("it was running")
            ));
        }
    }
    Ok(())
}

/// The pids holding a lock on the file `id`, from the text of `/proc/locks`
/// (`1: POSIX  ADVISORY  READ 1234 fe:00:5349397 1073741826 1073742335`; the device is
/// `MAJOR:MINOR` in hex, the inode decimal).
fn lock_holders(locks: &str, id: FileId) -> Vec<u32> {
    let (dev, ino) = id;
    let (major, minor) = (libc::major(dev as libc::dev_t) as u64, libc::minor(dev as libc::dev_t) as u64);
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let mut file = fields.get(5)?.split(':');
            let maj = u64::from_str_radix(file.next()?, 16).ok()?;
            let min = u64::from_str_radix(file.next()?, 16).ok()?;
            let inode: u64 = file.next()?.parse().ok()?;
            (maj == major && min == minor && inode == ino).then_some(pid)
        })
        .collect()
}

/// The files process `pid` has open, by identity (deleted ones included); `None` when its
/// descriptors cannot be listed.
fn open_files(pid: u32) -> Option<std::collections::BTreeSet<FileId>> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.filter_map(|e| id_of(&e.ok()?.path())).collect())
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, for which all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a pointer to a statvfs we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Why `path` cannot be written (`access(W_OK)`, which opens nothing: closing a descriptor
/// of a database file would drop this process's SQLite locks on it), `None` when it can.
fn write_error(path: &Path) -> Option<std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        return None;
    }
    Some(std::io::Error::last_os_error())
}

/// What to do about a file or directory that cannot be written.
fn how_to_fix(error: &std::io::Error, path: &Path) -> String {
    match error.raw_os_error() {
        Some(libc::EPERM) => format!("it is probably immutable: `chattr -i {}` (as root) lifts that", path.display()),
        Some(libc::EROFS) => {
            "its file system is mounted read-only: remount it read-write or use another --data-dir".into()
        }
        Some(libc::EACCES) => format!("`chmod u+w {}` (or run as its owner) makes it writable", path.display()),
        _ => "make it writable".into(),
    }
}

/// The first of the database's files, or its directory, that this process cannot write, and
/// what to do about it.
pub fn unwritable(db: &Path) -> Option<String> {
    for part in Part::ALL {
        let file = part.of(db);
        if !file.exists() {
            continue;
        }
        if let Some(e) = write_error(&file) {
            return Some(format!(
                "the {} {} cannot be written ({e}): {}",
                part.what(),
                file.display(),
                how_to_fix(&e, &file)
            ));
        }
    }
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let e = write_error(dir)?;
    Some(format!(
        "the directory {} holding the database cannot be written ({e}), and SQLite keeps {} and {} there: {}",
        dir.display(),
        Part::Wal.of(db).display(),
        Part::Shm.of(db).display(),
        how_to_fix(&e, dir)
    ))
}

/// A SQLite error on the database at `db` as a sentence that names the file and the fix:
/// a read-only file (which one, and `chmod`/`chattr`), a full disk (and how many bytes are
/// free), a damaged file. Anything else is SQLite's message with the file's path.
pub fn explain(db: &Path, error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => match unwritable(db) {
            Some(why) => format!("{why} ({error})"),
            None => format!("cannot write {}: {error}", db.display()),
        },
        Some(code @ (ErrorCode::DiskFull | ErrorCode::SystemIoFailure)) => {
            let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            match free_bytes(dir) {
                Some(free) if code == ErrorCode::DiskFull || free < FULL_BELOW_BYTES => format!(
                    "the disk holding {} is full ({free} bytes free): free some space and try again ({error})",
                    db.display()
                ),
                _ => format!("{}: {error}", db.display()),
            }
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => damaged(db, &format!("is damaged ({error})")),
        _ => format!("{}: {error}", db.display()),
    }
}

/// Whether `error` is SQLite finding the file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`), at
/// open, in a read, in a commit or in an integrity check.
pub fn is_damage(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(error.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// "FILE {what}: restore it from a backup, or …": a damaged database named, with the fix.
pub fn damaged(db: &Path, what: &str) -> String {
    format!(
        "{} {what}: restore it from a backup, or move it (with its -wal and -shm files) away and start over with \
         `roundtable serve --fresh`",
        db.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holders_are_read_from_proc_locks_by_device_and_inode() {
        let dev = libc::makedev(0xfe, 0x01) as u64;
        let text = "1: POSIX  ADVISORY  READ 4242 fe:01:77 1073741826 1073742335\n\
                    2: -> POSIX  ADVISORY  WRITE 4343 fe:01:77 128 128\n\
                    3: POSIX  ADVISORY  READ 4444 fe:01:78 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 4545 fe:02:77 0 EOF\n";
        assert_eq!(lock_holders(text, (dev, 77)), vec![4242, 4343]);
        assert_eq!(lock_holders(text, (dev, 99)), Vec::<u32>::new());
    }

    #[test]
    fn a_deleted_or_replaced_log_is_told_apart_from_an_intact_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        for part in Part::ALL {
            std::fs::write(part.of(&db), b"x").unwrap();
        }
        let ids = Identities::read(&db);
        assert_eq!(ids.changed(), None);
        std::fs::remove_file(Part::Shm.of(&db)).unwrap();
        assert_eq!(ids.changed(), Some(Change { part: Part::Shm, file: Part::Shm.of(&db), deleted: true }));
        std::fs::write(dir.path().join("other"), b"y").unwrap();
        std::fs::rename(dir.path().join("other"), Part::Wal.of(&db)).unwrap();
        let change = ids.changed().unwrap();
        assert_eq!((change.part, change.deleted), (Part::Wal, false), "the log comes before the index");
        assert!(change.describe("the host was running").contains("x.db-wal was replaced while the host was running"));
    }

    #[test]
    fn this_process_alone_on_a_database_is_never_judged() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
        std::fs::remove_file(Part::Shm.of(&db)).unwrap();
        assert_eq!(check_beside_others(&db), Ok(()), "our own locks are not another process's");
    }
}
