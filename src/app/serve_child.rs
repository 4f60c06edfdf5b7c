//! A real `roundtable serve` (this executable) as a child process, for the benches that measure
//! or kill the host from outside (`bench idle`, `bench soak`), and the scratch data directory
//! it runs on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::scenario::bench::RemoveOnDrop;

/// A fresh data directory under the system temp dir, removed when the returned guard drops.
pub fn scratch_dir(tag: &str) -> anyhow::Result<RemoveOnDrop> {
    let dir = std::env::temp_dir().join(format!("roundtable-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(RemoveOnDrop(dir))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A remote of the benches: connects over `link` and authenticates as `name` (a new
/// participant, no resume token). Returns the client and its events.
pub async fn bench_remote(
    link: &crate::net::link::Link,
    name: &str,
) -> Result<(crate::net::client::Client, crate::net::client::Events), crate::net::client::ClientError> {
    use crate::protocol::{AuthenticateParams, AuthenticateResult, Method};
    let (client, events) = crate::net::client::Client::connect(link).await?;
    let auth = AuthenticateParams { token: link.token.clone(), display_name: name.into(), resume_token: None };
    client.call::<AuthenticateResult>(Method::Authenticate(auth)).await?;
    Ok((client, events))
}

/// `roundtable serve` on 127.0.0.1:`port`; killed (SIGKILL) when dropped.
pub struct ServeChild {
    child: Child,
}

impl ServeChild {
    /// Starts `serve --data-dir DATA_DIR --bind 127.0.0.1:PORT EXTRA…` (console off, output
    /// discarded, its log appended to `log_path`) and waits until it listens (30 s at most);
    /// if it exits first, the error names the end of its log.
    pub fn start(data_dir: &Path, log_path: &Path, port: u16, extra: &[&str]) -> anyhow::Result<ServeChild> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("NO_COLOR", "1")
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start `roundtable serve`: {e}"))?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                anyhow::bail!("`roundtable serve` exited ({status}) before listening:\n{}", tail.join("\n"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the host did not listen on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ServeChild { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no last tick, no goodbye.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
