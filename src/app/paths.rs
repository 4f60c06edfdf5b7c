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
