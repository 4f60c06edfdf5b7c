//! Progress of long benchmark steps on stderr: a bar redrawn in place on a terminal, a line
//! every tenth of the way otherwise (logs, CI), nothing with `--json` (the caller passes
//! `quiet`). Stdout stays for results.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// One long step with a known total.
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    tty: bool,
    quiet: bool,
    /// Tenths already reported (non-terminal output).
    tenths: u64,
    last_draw: Option<Instant>,
    started: Instant,
}

impl Progress {
    pub fn new(what: impl Into<String>, total: u64, quiet: bool) -> Progress {
        Progress {
            what: what.into(),
            total: total.max(1),
            done: 0,
            tty: std::io::stderr().is_terminal(),
            quiet,
            tenths: 0,
            last_draw: None,
            started: Instant::now(),
        }
    }

    /// Sets how much is done (redrawn at most 10 times a second).
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        if self.quiet {
            return;
        }
        if self.tty {
            if self.last_draw.is_some_and(|t| t.elapsed().as_millis() < 100) && self.done < self.total {
                return;
            }
            self.last_draw = Some(Instant::now());
            let _ = write!(std::io::stderr(), "\r{}", self.line());
        } else {
            let tenths = self.done * 10 / self.total;
            if tenths > self.tenths {
                self.tenths = tenths;
                let _ = writeln!(std::io::stderr(), "{}", self.line());
            }
        }
    }

    fn line(&self) -> String {
        const WIDTH: u64 = 30;
        let filled = (self.done * WIDTH / self.total) as usize;
        format!(
            "  {} [{}{}] {}/{} ({:.0}%, {:.1} s)",
            self.what,
            "#".repeat(filled),
            "-".repeat(WIDTH as usize - filled),
            self.done,
            self.total,
            self.done as f64 * 100.0 / self.total as f64,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Ends the bar (a newline on a terminal).
    pub fn finish(mut self) {
        let total = self.total;
        self.set(total);
        if self.tty && !self.quiet {
            let _ = writeln!(std::io::stderr());
        }
    }
}
