//! Workspace files as the engine reads them (`read_workspace_file`): confined to the workspace
//! directory, symbolic links included. The engine only knows the [`WorkspaceFiles`] contract.

use crate::persist::WorkspaceFiles;
use std::path::Path;

/// The file system, read inside a workspace only.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConfinedFiles;

impl WorkspaceFiles for ConfinedFiles {
    fn read(&self, root: &Path, rel: &str, max: u64) -> Result<(u64, String), String> {
        read_confined(root, rel, max)
    }
}

/// Reads `rel` inside `root`, refusing anything that resolves outside it.
fn read_confined(root: &Path, rel: &str, max: u64) -> Result<(u64, String), String> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() || rel_path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err("path must be relative to the workspace and must not contain '..'".into());
    }
    let root = root.canonicalize().map_err(|e| format!("workspace directory unavailable: {e}"))?;
    let full = root.join(rel_path).canonicalize().map_err(|_| format!("no file {rel} in the workspace"))?;
    if !full.starts_with(&root) {
        return Err("path resolves outside the workspace (symlink escape refused)".into());
    }
    let meta = std::fs::metadata(&full).map_err(|e| format!("cannot read {rel}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{rel} is {} bytes; the limit is {max} bytes", meta.len()));
    }
    let bytes = std::fs::read(&full).map_err(|e| format!("cannot read {rel}: {e}"))?;
    let content = String::from_utf8(bytes).map_err(|_| format!("{rel} is not UTF-8 text"))?;
    Ok((meta.len(), content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reads_are_confined_to_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(read_confined(dir.path(), "a.txt", 100).unwrap(), (5, "hello".into()));
        assert!(read_confined(dir.path(), "../a.txt", 100).is_err());
        assert!(read_confined(dir.path(), "/etc/passwd", 100).is_err());
        assert!(read_confined(dir.path(), "a.txt", 2).unwrap_err().contains("limit"));
        assert!(read_confined(dir.path(), "sub", 100).is_err());
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("secret"), "s").unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
            assert!(read_confined(dir.path(), "link", 100).unwrap_err().contains("outside"));
        }
    }
}
