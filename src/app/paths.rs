//! Where roundtable keeps its data: `--data-dir`, else `ROUNDTABLE_DATA_DIR`, else the platform
//! data directory (e.g. `~/.local/share/roundtable` on Linux).

use std::path::{Path, PathBuf};

/// Resolves the data directory and creates it.
pub fn data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(p) => p.to_path_buf(),
        None => directories::ProjectDirs::from("", "", "roundtable").map(|d| d.data_dir().to_path_buf()).ok_or_else(
            || anyhow::anyhow!("cannot determine a data directory; pass --data-dir or set ROUNDTABLE_DATA_DIR"),
        )?,
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The SQLite database inside the data directory.
pub fn database(data_dir: &Path) -> PathBuf {
    data_dir.join("roundtable.db")
}

/// A small file that holds a secret (a resume token, the link `--mint` printed): written
/// atomically with mode 0600, read back trimmed. Failing to keep it only costs the reuse, so a
/// write error is logged, never fatal.
#[derive(Clone, Debug)]
pub struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    pub fn new(path: PathBuf) -> SecretFile {
        SecretFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an earlier run kept, if anything.
    pub fn load(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// Keeps `text`; `what` names it in the warning when that fails.
    pub fn save(&self, text: &str, what: &str) {
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&tmp)?.write_all(text.as_bytes())?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot keep {what} in {}: {e}", self.path.display());
        }
    }

    /// Drops what was kept.
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_private_and_reads_back_what_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = SecretFile::new(dir.path().join("sub").join("secret"));
        assert_eq!(file.load(), None);
        file.save("s1 token\n", "a test secret");
        assert_eq!(file.load().as_deref(), Some("s1 token"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        file.forget();
        assert_eq!(file.load(), None);
    }
}
