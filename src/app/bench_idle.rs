//! `roundtable bench idle`: what an idle connection costs the host, in resident memory.
//!
//! Starts a real `roundtable serve` (this executable) as a child process on a fresh data
//! directory and a free loopback port, opens `--connections N` WebSocket connections to it (TLS
//! with the pinned certificate by default, plain `ws://` with `--insecure`), lets them sit, and
//! reads the child's `VmRSS` from `/proc` before and after: (after − before) / N is the cost of
//! one idle connection. The connections do not authenticate, so they must all be open within
//! the host's authentication timeout (10 s); the bench says so if they were not. Linux only.
//!
//! With `--join`, every connection authenticates through a share and joins session `s1` (a
//! stored session of 200 messages, so each join gets a full snapshot), keeps reading what the
//! host sends (as a real client does: everyone else's joins), and the measurement is repeated
//! at three head-counts (a tenth, half and all of `--connections`, each on a fresh host): a
//! joined connection should cost the same whatever the session's head-count.

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

impl IdleReport {
    /// The report of `connections` that took the host's RSS from `rss.0` to `rss.1` KiB.
    fn new(connections: usize, tls: bool, (before, after): (u64, u64), open_seconds: f64) -> IdleReport {
        IdleReport {
            connections,
            tls,
            rss_before_kib: before,
            rss_after_kib: after,
            kib_per_connection: after.saturating_sub(before) as f64 / connections as f64,
            open_seconds,
        }
    }
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

/// What `bench idle --join` measured: one report per head-count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinedReport {
    pub joined: Vec<IdleReport>,
}

/// `bench idle --join`: joined connections at three head-counts.
pub fn run_joined(connections: usize, insecure: bool, json: bool, out: &mut dyn Write) -> anyhow::Result<JoinedReport> {
    let mut counts = vec![(connections / 10).max(1), (connections / 2).max(1), connections.max(1)];
    counts.dedup();
    let mut joined = Vec::new();
    for n in counts {
        joined.push(measure_joined(n, insecure)?);
        let r = joined.last().expect("pushed");
        if !json {
            writeln!(
                out,
                "joined {n} connections ({}): host RSS {} KiB → {} KiB, {:.1} KiB per joined connection (joined in {:.1} s)",
                if insecure { "ws" } else { "TLS" },
                r.rss_before_kib,
                r.rss_after_kib,
                r.kib_per_connection,
                r.open_seconds
            )?;
        }
    }
    let report = JoinedReport { joined };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(report)
}

/// One host with `connections` remotes authenticated and joined to `s1`, reading what it sends.
fn measure_joined(connections: usize, insecure: bool) -> anyhow::Result<IdleReport> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = scratch_dir("idle-joined")?;
    let db = crate::app::paths::database(dir.path());
    crate::scenario::bench::build_sessions_db(&db, &[crate::protocol::HISTORY_PAGE_MESSAGES], 0, &mut |_| {})?;
    // A share holds at most 64 connections: one share per 50.
    let params = crate::protocol::MintShareParams::team("bench", vec![crate::ids::WorkspaceId::nth(1)]);
    let mut admin = crate::store::Admin::open(&db)?;
    let tokens: Vec<String> = (0..connections.div_ceil(50))
        .map(|_| admin.mint_share(&params, 0).map(|(_, t)| t))
        .collect::<Result<_, _>>()?;
    drop(admin);
    let fingerprint = if insecure { None } else { Some(tls::load_or_create(dir.path())?.fingerprint) };
    let port = free_port()?;
    let extra: &[&str] = if insecure { &["--insecure"] } else { &[] };
    let host = ServeChild::start(dir.path(), &dir.path().join("serve.log"), port, extra)?;
    let pid = host.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    let link = Link::new("127.0.0.1", port, "", fingerprint);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid)?;
    let opening = Instant::now();
    let readers = runtime.block_on(async {
        let mut readers = Vec::with_capacity(connections);
        for i in 0..connections {
            let mut ws = connect_ws(&link).await.map_err(|e| anyhow::anyhow!("connection {} failed: {e}", i + 1))?;
            let auth = serde_json::json!({"id": 1, "method": "authenticate",
                "params": {"token": tokens[i / 50], "display_name": format!("Idle {i}")}});
            ws.send(Message::text(auth.to_string())).await?;
            let join = serde_json::json!({"id": 2, "method": "join_session", "params": {"session_id": "s1"}});
            ws.send(Message::text(join.to_string())).await?;
            // Until the snapshot: then this one is in, and reads on in the background.
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"event\":\"snapshot\"") => break,
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"error\"") => {
                        anyhow::bail!("connection {} was refused: {}", i + 1, t.as_str())
                    }
                    Some(Ok(_)) => {}
                    other => anyhow::bail!("connection {} ended before its snapshot: {other:?}", i + 1),
                }
            }
            readers.push(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }));
        }
        anyhow::Ok(readers)
    })?;
    let open_seconds = opening.elapsed().as_secs_f64();
    // Everyone's joins have reached everyone.
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(pid)?;
    drop(host);
    runtime.block_on(async {
        for r in readers {
            r.abort();
        }
    });
    Ok(IdleReport::new(connections, !insecure, (before, after), open_seconds))
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
    let report = IdleReport::new(connections, !insecure, (before, after), open_seconds);
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
