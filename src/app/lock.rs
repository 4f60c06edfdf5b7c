//! One host per data directory: [`DataDirLock`] holds an exclusive lock on `host.lock` for the
//! host's lifetime, so a second host on the same data dir refuses to start (two hosts would
//! issue the same message ids and overwrite each other's rows). The `workspace` / `share`
//! commands do not take it: they keep working beside a running host.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside the data directory.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("host.lock")
}

/// An exclusive lock on a data directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock and writes this process's PID into the lock file, or explains who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = lock_path(data_dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let who = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("PID {pid}"),
                };
                anyhow::bail!(
                    "another roundtable host is already running on {} ({who}); stop it first, or give this \
                     host its own --data-dir",
                    data_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
        let other = tempfile::tempdir().unwrap();
        DataDirLock::acquire(other.path()).expect("another data dir is independent");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the first host stopped");
    }
}
