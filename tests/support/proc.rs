//! A `roundtable` process driven through its stdin and stdout (the CLI tests).

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

/// A running `roundtable` process with its stdout as a stream of lines.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
    /// Fires when the stderr reader has read to the end (the child and everything it started
    /// closed the pipe).
    stderr_done: mpsc::Receiver<()>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], cwd: &Path) -> Proc {
        Proc::spawn_env(name, args, cwd, &[], &[])
    }

    /// [`Proc::spawn`] with some inherited environment variables removed, then others set.
    pub fn spawn_env(name: &str, args: &[&str], cwd: &Path, set: &[(&str, String)], remove: &[&str]) -> Proc {
        Proc::spawn_command(name, Command::new(BIN), args, cwd, set, remove)
    }

    /// [`Proc::spawn`] inside a network namespace (`ip netns exec NETNS roundtable ARGS`; `ip`
    /// execs the binary, so the child is roundtable itself).
    pub fn spawn_in_netns(name: &str, netns: &str, args: &[&str], cwd: &Path) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, BIN]);
        Proc::spawn_command(name, cmd, args, cwd, &[], &[])
    }

    fn spawn_command(
        name: &str,
        mut cmd: Command,
        args: &[&str],
        cwd: &Path,
        set: &[(&str, String)],
        remove: &[&str],
    ) -> Proc {
        // Tests reach nothing outside the machine: no public relays unless a test names its own.
        cmd.env_remove("ROUNDTABLE_DATA_DIR").env("RUST_LOG", "warn").env("ROUNDTABLE_RELAY", "off");
        for k in remove {
            cmd.env_remove(k);
        }
        for (k, v) in set {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the roundtable binary runs");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_buf) = (child.stderr.take().unwrap(), stderr.clone());
        let (done_tx, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut b = err_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
            let _ = done_tx.send(());
        });
        let stdin = child.stdin.take();
        Proc { name: name.into(), child, stdin, lines, stderr, stderr_done, seen: Vec::new() }
    }

    /// Waits for a stdout line matching `pred`.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.expect_within(what, WAIT, pred)
    }

    /// [`Proc::expect`] with its own time limit.
    pub fn expect_within(&mut self, what: &str, wait: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {wait:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for a JSON line (event or response) matching `pred`.
    pub fn expect_json(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_json_within(what, WAIT, pred)
    }

    /// [`Proc::expect_json`] with its own time limit.
    pub fn expect_json_within(&mut self, what: &str, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let line = self.expect_within(what, wait, |l| serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v)));
        serde_json::from_str(&line).unwrap()
    }

    /// Waits until stderr contains `text`.
    pub fn expect_stderr(&self, what: &str, text: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{}: no {what} on stderr within {WAIT:?}:\n{}", self.name, self.stderr.lock().unwrap());
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the process to exit and for its stderr to be read to the end (so what it
    /// printed last is in [`Proc::stderr`]); returns whether it succeeded.
    pub fn wait(&mut self) -> bool {
        self.wait_within(WAIT)
    }

    /// [`Proc::wait`], allowing `wait` for the exit.
    pub fn wait_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit within {wait:?}; stderr:\n{}", self.name, self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        if self.stderr_done.recv_timeout(left).is_err() {
            panic!(
                "{} exited but its stderr stayed open for {left:?} (a process it started still holds it); stderr so far:\n{}",
                self.name,
                self.stderr.lock().unwrap()
            );
        }
        status.success()
    }

    /// Every stdout line seen so far, parsed as JSON.
    pub fn json_seen(&self) -> Vec<Value> {
        self.seen.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_event(v: &Value, name: &str) -> bool {
    v["event"] == name
}
