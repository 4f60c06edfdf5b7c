//! Network namespaces for tests that need real separate hosts (root and iproute2, as CI has).
//! Nothing leaves the machine: a namespace has only the links the test gives it.

use std::process::{Command, Stdio};

/// Whether this is CI, where tests that need namespaces must fail instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Namespaces made by a test, deleted on drop — a panic included (deleting a namespace deletes
/// its ends of veth pairs, and the other ends with them).
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// Makes one namespace per name (suffixed with the process id), each with `lo` up.
    /// `Err`: namespaces cannot be made here (not root, no `ip`).
    pub fn create(names: &[&str]) -> Result<Namespaces, String> {
        let mut made = Namespaces(Vec::new());
        for name in names {
            let ns = format!("{name}-{}", std::process::id());
            ip(&["netns", "add", &ns])?;
            made.0.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(made)
    }

    /// The full name of the `i`th namespace.
    pub fn name(&self, i: usize) -> &str {
        &self.0[i]
    }

    /// A veth pair between namespaces `a` and `b`, with these addresses (`10.0.0.1/24`), up.
    pub fn link(&self, (a, addr_a): (usize, &str), (b, addr_b): (usize, &str)) -> Result<(), String> {
        let (dev_a, dev_b) = (format!("rt{a}{b}a{}", std::process::id()), format!("rt{a}{b}b{}", std::process::id()));
        let (ns_a, ns_b) = (self.name(a), self.name(b));
        ip(&["link", "add", &dev_a, "netns", ns_a, "type", "veth", "peer", "name", &dev_b, "netns", ns_b])?;
        for (ns, dev, addr) in [(ns_a, &dev_a, addr_a), (ns_b, &dev_b, addr_b)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Namespaces made here, or the reason they cannot be: a skip outside CI, a failure under it.
    pub fn or_skip(made: Result<Namespaces, String>) -> Option<Namespaces> {
        match made {
            Ok(made) => Some(made),
            Err(e) if !under_ci() => {
                eprintln!("skipped: cannot make network namespaces here ({e}); CI runs this as root");
                None
            }
            Err(e) => panic!("CI must be able to make network namespaces (root, iproute2): {e}"),
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
