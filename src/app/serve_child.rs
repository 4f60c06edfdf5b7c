//! A real `roundtable serve` (this executable) as a child process, for the benches that measure
//! or kill the host from outside (`bench idle`, `bench soak`), and the scratch data directory
//! it runs on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::scenario::bench::scratch_dir;

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A remote of the benches: connects over `link` and authenticates as `name` (a new
/// participant, no resume token). Returns the client, its events and who it is.
pub async fn bench_remote(
    link: &crate::net::link::Link,
    name: &str,
) -> Result<
    (crate::net::client::Client, crate::net::client::Events, crate::protocol::AuthenticateResult),
    crate::net::client::ClientError,
> {
    bench_remote_over(crate::net::client::Client::connect(link).await?, link, name).await
}

/// [`bench_remote`] over a connection already made.
pub async fn bench_remote_over(
    (client, events): (crate::net::client::Client, crate::net::client::Events),
    link: &crate::net::link::Link,
    name: &str,
) -> Result<
    (crate::net::client::Client, crate::net::client::Events, crate::protocol::AuthenticateResult),
    crate::net::client::ClientError,
> {
    use crate::protocol::{AuthenticateParams, AuthenticateResult, Method};
    let auth = AuthenticateParams { token: link.token.clone(), display_name: name.into(), resume_token: None };
    let me = client.call::<AuthenticateResult>(Method::Authenticate(auth)).await?;
    Ok((client, events, me))
}

/// `roundtable serve` on 127.0.0.1:`port`; killed (SIGKILL) when dropped.
pub struct ServeChild {
    child: Child,
}

impl ServeChild {
    /// How long [`ServeChild::start`] waits for the host to become ready.
    pub const READY_WITHIN: Duration = Duration::from_secs(30);

    /// Starts `serve --data-dir DATA_DIR --bind 127.0.0.1:PORT EXTRA…` (console off, output
    /// discarded, its log appended to `log_path`) and waits until it is ready: its `serve.json`
    /// names this child's pid, which the host writes once its sessions are open, just before it
    /// accepts anyone (an open port alone is not ready). At most [`Self::READY_WITHIN`]; if it
    /// exits first, the error names the end of its log. The child is killed if this process
    /// dies, however it dies.
    pub fn start(data_dir: &Path, log_path: &Path, port: u16, extra: &[&str]) -> anyhow::Result<ServeChild> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--data-dir")
            .arg(data_dir)
            // Benches measure this machine: no relays (and nothing leaves it).
            .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--relay", "off"])
            .args(extra)
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("NO_COLOR", "1");
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| anyhow::anyhow!("cannot start `roundtable serve`: {e}"))?;
        let mut child = ServeChild { child };
        let started = Instant::now();
        loop {
            let ready = crate::app::admin::read_serve_info(data_dir).is_some_and(|i| i.pid == Some(child.pid()));
            if ready {
                return Ok(child);
            }
            if let Some(status) = child.child.try_wait()? {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                anyhow::bail!("`roundtable serve` exited ({status}) before it was ready:\n{}", tail.join("\n"));
            }
            if started.elapsed() > Self::READY_WITHIN {
                anyhow::bail!(
                    "the host on 127.0.0.1:{port} was not ready within {:?} (no serve.json with its pid {} in {}); \
                     its log is {}",
                    Self::READY_WITHIN,
                    child.pid(),
                    data_dir.display(),
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no last tick, no goodbye.
    pub fn kill(self) {
        drop(self);
    }

    /// SIGTERM, as a person stopping the host does: its graceful shutdown (the last tick, the
    /// clean stop recorded in the database). Waits up to a minute for it to exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if asked.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("the host (pid {}) did not stop within a minute of SIGTERM", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Makes the child receive SIGKILL when the thread that started it ends (this process dying
/// included), so a bench killed from outside leaves no host behind.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid, kill).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent as libc::pid_t {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
