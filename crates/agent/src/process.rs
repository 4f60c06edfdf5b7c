//! Child processes of external agents (`claude`, `command`).
//!
//! An [`AgentProcess`] is one running agent executable with piped stdio, run by three small
//! threads so that the session worker driving it never blocks on I/O:
//! - a **writer** takes lines from a channel and writes them to stdin (a full pipe stalls only
//!   the writer; dropping the channel closes stdin, which is how an agent is told "no more");
//! - a **reader** splits stdout into lines, by bytes rather than by read chunks (a JSON line may
//!   arrive in several reads), caps the line length, and delivers [`ProcEvent`]s on a channel;
//! - a **stderr drain** keeps the last few KiB of stderr for error messages and logs it.
//!
//! On Unix the child gets its own process group, so [`AgentProcess::kill`] also stops the tools
//! the agent started (shells, test runners) instead of leaving them orphaned.

use crossbeam_channel::{Receiver, Sender};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many bytes of stderr are kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Working directory (the workspace).
    pub cwd: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program does not exist (or is not on `PATH`).
    #[error("'{program}' not found")]
    NotFound { program: String },
    #[error("the workspace directory '{0}' does not exist or is not a directory")]
    NoWorkdir(String),
    #[error("could not start '{program}': {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Something the agent's stdout produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// One line, without its line terminator (invalid UTF-8 is replaced).
    Line(String),
    /// A line exceeded the cap; the reader stopped.
    LineTooLong { limit: usize },
    /// stdout ended (the process exited or closed it), with the read error if there was one.
    Closed { error: Option<String> },
}

/// A running agent process. Dropping it kills the process if it is still running.
pub struct AgentProcess {
    program: String,
    child: Child,
    stdin: Option<Sender<Vec<u8>>>,
    events: Receiver<ProcEvent>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_done: Receiver<()>,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for AgentProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentProcess").field("program", &self.program).field("pid", &self.child.id()).finish()
    }
}

/// Spawns `cmd`, trying again for a moment while the program is "busy" (`ETXTBSY`): a script
/// written just before (by a tool, an editor, a test) is still open for writing in a process
/// another thread forked meanwhile, until that process execs. The race is Linux's, the wait
/// is short (at most ~0.5 s), and any other error is returned at once.
fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}
impl AgentProcess {
    /// Starts `spec` with piped stdio. Lines longer than `max_line_bytes` end the output with
    /// [`ProcEvent::LineTooLong`].
    pub fn spawn(spec: &SpawnSpec, max_line_bytes: usize) -> Result<AgentProcess, SpawnError> {
        // Checked first: a missing cwd also surfaces as `NotFound` from spawn, which would be
        // reported as a missing program.
        if !spec.cwd.is_dir() {
            return Err(SpawnError::NoWorkdir(spec.cwd.display().to_string()));
        }
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = spawn_retrying_busy(&mut cmd).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound { program: spec.program.clone() },
            _ => SpawnError::Io { program: spec.program.clone(), source },
        })?;
        let pid = child.id();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (in_tx, in_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let name = spec.program.clone();
        let threads = [
            std::thread::Builder::new().name(format!("agent-stdin-{pid}")).spawn(move || write_lines(stdin, in_rx)),
            std::thread::Builder::new()
                .name(format!("agent-stdout-{pid}"))
                .spawn(move || read_lines(stdout, ev_tx, max_line_bytes)),
            std::thread::Builder::new().name(format!("agent-stderr-{pid}")).spawn(move || {
                drain_stderr(stderr, &tail, &name);
                let _ = done_tx.send(());
            }),
        ];
        let mut process = AgentProcess {
            program: spec.program.clone(),
            child,
            stdin: Some(in_tx),
            events: ev_rx,
            stderr_tail,
            stderr_done: done_rx,
            status: None,
        };
        for t in threads {
            if let Err(source) = t {
                process.kill();
                return Err(SpawnError::Io { program: spec.program.clone(), source });
            }
        }
        tracing::debug!(program = %spec.program, pid, cwd = %spec.cwd.display(), "agent process started");
        Ok(process)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stdout events. After [`ProcEvent::Closed`] or [`ProcEvent::LineTooLong`] the channel
    /// disconnects.
    pub fn events(&self) -> &Receiver<ProcEvent> {
        &self.events
    }

    /// Queues one JSON value as a line on stdin. Returns false when stdin is closed (the writer
    /// stopped because the process went away, or [`close_stdin`](Self::close_stdin) was called).
    pub fn send_json(&self, value: &serde_json::Value) -> bool {
        let Some(stdin) = &self.stdin else { return false };
        let mut line = serde_json::to_vec(value).expect("a JSON value always serialises");
        line.push(b'\n');
        stdin.send(line).is_ok()
    }

    /// Closes stdin once the queued lines are written.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Kills the process (and, on Unix, its process group) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.stdin = None;
        if let Some(status) = self.status {
            return Some(status);
        }
        #[cfg(unix)]
        {
            // The child leads its own group (see `spawn`) and is not reaped yet, so the group id
            // cannot have been reused.
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        tracing::debug!(program = %self.program, pid = self.child.id(), "agent process killed");
        self.status
    }

    /// Stops the process politely (host shutdown): closes stdin (end of input), waits `grace`;
    /// if it is still running sends SIGTERM to its process group and waits `grace` again; then
    /// kills it (SIGKILL).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.close_stdin();
        if let Some(status) = self.wait_timeout(grace) {
            return Some(status);
        }
        #[cfg(unix)]
        {
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                tracing::info!(program = %self.program, "agent did not exit at end of input; sending SIGTERM");
                // SAFETY: kill(2) has no memory-safety preconditions. The group is not reaped
                // yet (`wait_timeout` returned None), so its id cannot have been reused.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
            }
            if let Some(status) = self.wait_timeout(grace) {
                return Some(status);
            }
        }
        tracing::warn!(program = %self.program, "agent did not stop; killing it");
        self.kill()
    }

    /// Closes stdin and gives the process `grace` to exit on its own, then kills it.
    pub fn retire(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.close_stdin();
        match self.wait_timeout(grace) {
            Some(status) => Some(status),
            None => {
                tracing::warn!(program = %self.program, "agent did not exit after its stdin closed; killing it");
                self.kill()
            }
        }
    }

    /// The last lines of stderr (at most `max_chars` characters, trimmed), waiting briefly for
    /// the stderr pipe to drain when the process has exited.
    pub fn stderr_summary(&self, max_chars: usize) -> String {
        if self.status.is_some() {
            let _ = self.stderr_done.recv_timeout(Duration::from_millis(200));
        }
        let tail = self.stderr_tail.lock().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
        let text = tail.trim();
        let chars: Vec<char> = text.chars().collect();
        let start = chars.len().saturating_sub(max_chars);
        chars[start..].iter().collect::<String>().trim().to_string()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// Describes how a process ended, for error messages (`exit status: 3`, `signal: 9 (SIGKILL)`).
pub fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "exit status unknown".to_string(),
    }
}

fn write_lines(mut stdin: ChildStdin, lines: Receiver<Vec<u8>>) {
    for line in lines {
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            tracing::debug!(error = %e, "agent stdin closed");
            return;
        }
    }
}

fn read_lines(stdout: ChildStdout, events: Sender<ProcEvent>, max_line_bytes: usize) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = events.send(ProcEvent::Closed { error: Some(e.to_string()) });
                return;
            }
        };
        if buf.is_empty() {
            if !line.is_empty() {
                let _ = events.send(ProcEvent::Line(decode(std::mem::take(&mut line))));
            }
            let _ = events.send(ProcEvent::Closed { error: None });
            return;
        }
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max_line_bytes {
            let _ = events.send(ProcEvent::LineTooLong { limit: max_line_bytes });
            return;
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(if complete { take + 1 } else { take });
        if complete && events.send(ProcEvent::Line(decode(std::mem::take(&mut line)))).is_err() {
            // Nobody listens any more (the worker replaced or dropped this process).
            return;
        }
    }
}

fn decode(mut line: Vec<u8>) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn drain_stderr(mut stderr: impl Read, tail: &Mutex<Vec<u8>>, program: &str) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        tracing::debug!(program, stderr = %String::from_utf8_lossy(&buf[..n]).trim_end(), "agent stderr");
        if let Ok(mut tail) = tail.lock() {
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
            tail.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_program_still_open_for_writing_is_started_once_it_is_closed() {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sh");
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(&path).unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        // Open for writing right now: exec fails with ETXTBSY until the writer lets go.
        let busy = Command::new(&path).spawn().map(|mut c| c.wait()).err().map(|e| e.kind());
        assert_eq!(busy, Some(std::io::ErrorKind::ExecutableFileBusy));
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(file);
        });
        let mut child = spawn_retrying_busy(&mut Command::new(&path)).expect("started once the file was closed");
        assert!(child.wait().unwrap().success());
        closer.join().unwrap();
    }
}
