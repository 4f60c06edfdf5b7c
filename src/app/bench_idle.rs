//! `roundtable bench idle`: what an idle connection costs the host, in resident memory.
//!
//! Starts a real `roundtable serve` (this executable) as a child process on a fresh data
//! directory and a free loopback port, opens `--connections N` WebSocket connections to it (TLS
//! with the pinned certificate by default, plain `ws://` with `--insecure`), lets them sit, and
//! reads the child's `VmRSS` from `/proc` before and after: (after − before) / N is the cost of
//! one idle connection. The connections do not authenticate, so they must all be open within
//! the host's authentication timeout (10 s); the bench says so if they were not. Linux only.

use crate::app::serve_child::{free_port, scratch_dir, ServeChild};
use crate::net::client::connect_ws;
use crate::net::link::Link;
use crate::net::tls;
use std::io::Write;
use std::time::{Duration, Instant};

/// What `bench idle` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleReport {
    pub connections: usize,
    pub tls: bool,
    /// Host RSS with the listener up and no connection, KiB.
    pub rss_before_kib: u64,
    /// Host RSS with every connection open and idle, KiB.
    pub rss_after_kib: u64,
    /// (after − before) / connections.
    pub kib_per_connection: f64,
    /// Seconds it took to open every connection.
    pub open_seconds: f64,
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("cannot read the host's memory use from /proc (Linux only): {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/{pid}/status"))
}

/// Runs the bench, writing progress and the result to `out` (JSON when `json`).
pub fn run(connections: usize, insecure: bool, json: bool, out: &mut dyn Write) -> anyhow::Result<IdleReport> {
    let connections = connections.max(1);
    let dir = scratch_dir("idle")?;
    // The host's certificate is created here first so the links can pin it (so the data dir
    // looks used: --fresh).
    let fingerprint = if insecure { None } else { Some(tls::load_or_create(dir.path())?.fingerprint) };
    let port = free_port()?;
    let extra: &[&str] = if insecure { &["--fresh", "--insecure"] } else { &["--fresh"] };
    let host = ServeChild::start(dir.path(), &dir.path().join("serve.log"), port, extra)?;
    let pid = host.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    let link = Link::new("127.0.0.1", port, "bench", fingerprint);
    let before = rss_kib(pid)?;
    let opening = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    runtime.block_on(async {
        for i in 0..connections {
            let ws = connect_ws(&link).await.map_err(|e| anyhow::anyhow!("connection {} failed: {e}", i + 1))?;
            sockets.push(ws);
            if !json && (i + 1) % 500 == 0 {
                let _ = writeln!(out, "  opened {}/{connections}", i + 1);
            }
        }
        anyhow::Ok(())
    })?;
    let open_seconds = opening.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid)?;
    if opening.elapsed() > Duration::from_secs(9) {
        writeln!(
            out,
            "warning: opening took {open_seconds:.1} s; unauthenticated connections are closed after 10 s, \
             so some may have been closed before the measurement (use fewer connections)"
        )?;
    }
    drop(sockets);
    drop(host);
    let report = IdleReport {
        connections,
        tls: !insecure,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: after.saturating_sub(before) as f64 / connections as f64,
        open_seconds,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "idle {} connections ({}): host RSS {} KiB → {} KiB, {:.1} KiB per connection (opened in {:.1} s)",
            connections,
            if insecure { "ws" } else { "TLS" },
            before,
            after,
            report.kib_per_connection,
            open_seconds
        )?;
    }
    Ok(report)
}
