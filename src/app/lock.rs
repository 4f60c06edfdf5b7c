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
        // `running_host` probes with a shared lock held for an instant: try a few times before
        // concluding another host holds it.
        let mut tries = 0;
        let taken = loop {
            match file.try_lock() {
                Err(TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match taken {
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

/// The PID of the host running on `data_dir` right now (it holds the lock), if any. Probes with
/// a shared lock released at once, so it never stops a host from starting.
pub fn running_host(data_dir: &Path) -> Option<u32> {
    let mut file = OpenOptions::new().read(true).open(lock_path(data_dir)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok()?;
            // A host writes its PID right after taking the lock; an empty file is one starting.
            Some(holder.trim().parse().unwrap_or(0))
        }
        Err(TryLockError::Error(_)) => None,
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
        assert_eq!(running_host(dir.path()), Some(std::process::id()));
        drop(first);
        assert_eq!(running_host(dir.path()), None);
        DataDirLock::acquire(dir.path()).expect("free again once the first host stopped");
    }
}
