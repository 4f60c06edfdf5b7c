//! Remembered host fingerprints: `DATA_DIR/known_hosts.json`, a JSON object mapping `HOST:PORT`
//! to the certificate fingerprint last paired with.
//!
//! The link's fingerprint is always what the client pins (no trust-on-first-use). The file only
//! lets `join` tell the user when a host presents a *different* certificate than last time (a new
//! link after the host regenerated its certificate, or a link from someone else). Re-pairing
//! replaces the entry; a host is never listed twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name inside the data directory.
pub const FILE: &str = "known_hosts.json";

/// What pairing with a link changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// First time this host:port is seen.
    New,
    /// Same fingerprint as before.
    Known,
    /// The host:port was known with another fingerprint, now replaced.
    Changed { previous: String },
}

/// The known hosts file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownHosts {
    path: PathBuf,
    /// `HOST:PORT` → fingerprint.
    pub hosts: BTreeMap<String, String>,
}

impl KnownHosts {
    /// Loads the file from `data_dir` (missing file = empty; a corrupt file is reported).
    pub fn load(data_dir: &Path) -> anyhow::Result<KnownHosts> {
        let path = data_dir.join(FILE);
        let hosts = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not valid ({e}); delete it to start over", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        Ok(KnownHosts { path, hosts })
    }

    /// Records `fingerprint` for `authority` (upsert) and says what changed.
    pub fn pair(&mut self, authority: &str, fingerprint: &str) -> Pairing {
        match self.hosts.insert(authority.to_string(), fingerprint.to_string()) {
            None => Pairing::New,
            Some(prev) if prev == fingerprint => Pairing::Known,
            Some(previous) => Pairing::Changed { previous },
        }
    }

    /// Writes the file (atomically: a temporary file renamed over it).
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.hosts)?;
        std::fs::write(&tmp, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_pairing_a_host_replaces_its_entry_instead_of_duplicating_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut known = KnownHosts::load(dir.path()).unwrap();
        assert_eq!(known.pair("h:1", "aa"), Pairing::New);
        known.save().unwrap();
        let mut known = KnownHosts::load(dir.path()).unwrap();
        assert_eq!(known.pair("h:1", "aa"), Pairing::Known);
        assert_eq!(known.pair("h:1", "bb"), Pairing::Changed { previous: "aa".into() });
        known.save().unwrap();
        let known = KnownHosts::load(dir.path()).unwrap();
        assert_eq!(known.hosts.len(), 1);
        assert_eq!(known.hosts["h:1"], "bb");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "not json").unwrap();
        let err = KnownHosts::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }
}
