//! `roundtable bench hostile`: what clients that misbehave cost the host, and whether others
//! notice.
//!
//! A real `roundtable serve` (plain ws on loopback) on a database with one large session (`s1`:
//! `--messages` messages of 32 KB, 9 MB by default). Two phases, while a well-behaved remote
//! pings the host every 20 ms and records its worst round trip:
//!
//! 1. **Never-reading clients**: `--clients` (4) remotes authenticate, then each asks for the
//!    session 40 times (`join_session` without `since_seq`: a snapshot each) and never reads a
//!    byte. Host RSS is read before, while they hang on, and after they left.
//! 2. **A remote repeating 32 KB messages** (and cancelling the agent's turn each time) for
//!    `--seconds`; host RSS is sampled every second (the last minus the first is the growth).

use crate::app::bench_idle::rss_kib;
use crate::app::serve_child::{bench_remote, free_port, scratch_dir, ServeChild};
use crate::ids::{SessionId, WorkspaceId};
use crate::net::client::{connect_ws, Client};
use crate::net::link::Link;
use crate::protocol::*;
use futures_util::SinkExt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What `bench hostile` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostileReport {
    /// Bytes of message text in the large session.
    pub session_bytes: usize,
    pub readers_that_never_read: usize,
    pub snapshots_asked: usize,
    /// Host RSS (KiB): at rest, while the never-reading clients hang on, after they left.
    pub rss_before_kib: u64,
    pub rss_during_kib: u64,
    pub rss_after_kib: u64,
    /// Worst ping round trip of the well-behaved remote during phase 1, ms.
    pub worst_ping_ms_phase1: f64,
    /// Phase 2: 32 KB messages sent (acknowledged) and the host RSS at its start and end, KiB.
    pub big_messages: usize,
    pub rss_big_start_kib: u64,
    pub rss_big_end_kib: u64,
    pub rss_big_max_kib: u64,
    /// Worst ping round trip during phase 2, ms.
    pub worst_ping_ms_phase2: f64,
    /// Phase 2 sends refused, by error code (rate limit, turn lock).
    pub refused: std::collections::BTreeMap<String, usize>,
}

/// Pings every 20 ms until stopped; the worst round trip in microseconds.
async fn pinger(client: Client, stop: Arc<AtomicBool>, worst_us: Arc<AtomicU64>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let sent = Instant::now();
        let ping = client.request(Method::Ping(PingParams { nonce: Some(format!("p{n}")) }));
        if tokio::time::timeout(Duration::from_secs(10), ping).await.is_err() {
            worst_us.fetch_max(10_000_000, Ordering::SeqCst);
        }
        worst_us.fetch_max(sent.elapsed().as_micros() as u64, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the bench, writing progress and the result to `out` (JSON when `json`).
pub fn run(
    messages: usize,
    clients: usize,
    seconds: u64,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<HostileReport> {
    const TEXT: usize = 32 * 1024;
    const SNAPSHOTS: usize = 40;
    let scratch = scratch_dir("hostile")?;
    let dir = scratch.path().to_path_buf();
    let db = crate::app::paths::database(&dir);
    crate::scenario::bench::build_sessions_db(&db, &[messages.max(1)], TEXT, &mut |_| {})?;
    let mut admin = crate::store::Admin::open(&db)?;
    let (_, token) = admin.mint_share(&MintShareParams::team("bench", vec![WorkspaceId::nth(1)]), 0)?;
    drop(admin);
    let port = free_port()?;
    let host = ServeChild::start(&dir, &dir.join("serve.log"), port, &["--insecure"])?;
    let pid = host.pid();
    let link = Link::new("127.0.0.1", port, token, None);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    let report = runtime.block_on(async {
        let good = bench_remote(&link, "Good").await?.0;
        good.request(Method::JoinSession(JoinSessionParams { session_id: SessionId::nth(1), since_seq: None })).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before_kib = rss_kib(pid)?;

        // Phase 1: clients that ask and never read.
        if !json {
            writeln!(out, "phase 1: {clients} clients ask {SNAPSHOTS} snapshots each and never read")?;
        }
        let (stop, worst) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let ping = tokio::spawn(pinger(good.clone(), stop.clone(), worst.clone()));
        let mut sockets = Vec::new();
        for i in 0..clients {
            let mut ws = connect_ws(&link).await?;
            let auth = serde_json::json!({"id": 1, "method": "authenticate",
                "params": {"token": link.token, "display_name": format!("Mute{i}")}});
            ws.send(Message::text(auth.to_string())).await?;
            for n in 0..SNAPSHOTS {
                let join = serde_json::json!({"id": 2 + n, "method": "join_session", "params": {"session_id": "s1"}});
                ws.send(Message::text(join.to_string())).await?;
            }
            sockets.push(ws); // kept open, never read
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_during_kib = rss_kib(pid)?;
        drop(sockets);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after_kib = rss_kib(pid)?;
        stop.store(true, Ordering::SeqCst);
        let _ = ping.await;
        let worst_ping_ms_phase1 = worst.load(Ordering::SeqCst) as f64 / 1000.0;

        // Phase 2: 32 KB messages, each turn cancelled at once.
        if !json {
            writeln!(out, "phase 2: a remote repeats 32 KB messages for {seconds} s")?;
        }
        let (stop, worst) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let ping = tokio::spawn(pinger(good.clone(), stop.clone(), worst.clone()));
        let talker = bench_remote(&link, "Talker").await?.0;
        talker
            .request(Method::JoinSession(JoinSessionParams { session_id: SessionId::nth(1), since_seq: None }))
            .await?;
        let big = "x".repeat(TEXT);
        let started = Instant::now();
        let (mut sent, mut samples) = (0usize, vec![rss_kib(pid)?]);
        let mut refused: std::collections::BTreeMap<String, usize> = Default::default();
        let mut next_sample = Instant::now() + Duration::from_secs(1);
        while started.elapsed() < Duration::from_secs(seconds) {
            let params = SendMessageParams {
                session_id: SessionId::nth(1),
                text: big.clone(),
                client_msg_id: format!("big{sent}"),
            };
            let result = talker.call::<SendMessageResult>(Method::SendMessage(params)).await;
            let code = match &result {
                Ok(_) => None,
                Err(crate::net::client::ClientError::Protocol(p)) => Some(format!("{:?}", p.code)),
                Err(other) => Some(other.to_string()),
            };
            if let Some(code) = &code {
                *refused.entry(code.clone()).or_default() += 1;
            } else {
                sent += 1;
            }
            // Cancel the turn (ours, or still ours after a refused cancel), at the rate allowed.
            if result.is_ok() || code.as_deref() == Some("TurnLocked") {
                loop {
                    let cancel = Method::CancelTurn(SessionRef { session_id: SessionId::nth(1) });
                    match talker.request(cancel).await {
                        Err(crate::net::client::ClientError::Protocol(p)) if p.code == ErrorCode::RateLimited => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        _ => break,
                    }
                }
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if Instant::now() >= next_sample {
                samples.push(rss_kib(pid)?);
                next_sample += Duration::from_secs(1);
            }
        }
        samples.push(rss_kib(pid)?);
        stop.store(true, Ordering::SeqCst);
        let _ = ping.await;
        anyhow::Ok(HostileReport {
            session_bytes: messages.max(1) * TEXT,
            readers_that_never_read: clients,
            snapshots_asked: clients * SNAPSHOTS,
            rss_before_kib,
            rss_during_kib,
            rss_after_kib,
            worst_ping_ms_phase1,
            big_messages: sent,
            rss_big_start_kib: samples[0],
            rss_big_end_kib: *samples.last().expect("sampled"),
            rss_big_max_kib: samples.iter().copied().max().unwrap_or(0),
            worst_ping_ms_phase2: worst.load(Ordering::SeqCst) as f64 / 1000.0,
            refused,
        })
    })?;
    drop(host);
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "never-reading clients: host RSS {} → {} KiB while they hang on (+{} KiB), {} KiB after they left; \
             a well-behaved remote's worst ping {:.1} ms",
            report.rss_before_kib,
            report.rss_during_kib,
            report.rss_during_kib.saturating_sub(report.rss_before_kib),
            report.rss_after_kib,
            report.worst_ping_ms_phase1
        )?;
        writeln!(
            out,
            "32 KB messages: {} sent in {seconds} s (refused: {:?}); host RSS {} → {} KiB (max {}); worst ping {:.1} ms",
            report.big_messages,
            report.refused,
            report.rss_big_start_kib,
            report.rss_big_end_kib,
            report.rss_big_max_kib,
            report.worst_ping_ms_phase2
        )?;
    }
    Ok(report)
}
