//! `roundtable bench startup --messages N`: how long a host with a long history takes to be
//! usable, and what that history costs it in memory.
//!
//! Builds a database with N messages spread over 10 sessions (and their events, as a host stores
//! them), mints a link with the `share` machinery, then starts a real `roundtable serve` (this
//! executable) on it and times, from the moment the process is spawned: the listener accepting,
//! a remote authenticating, and the first page of session `s1` (its snapshot) arriving. It then
//! reads the host's resident memory. The reference is the same run on a database of 10 sessions
//! with one message each, in the same process; the report gives both and their ratio.
//!
//! The database as built has no clean stop recorded, so that first start checks the whole file
//! before serving, as after a crash. The bench then stops the host as a person does (SIGTERM)
//! and times a second start, after that clean stop, which serves at once and checks the file in
//! the background. `--drop-caches` (root) empties the page cache before each start: a cold disk.

use crate::app::bench_idle::rss_kib;
use crate::app::progress::Progress;
use crate::app::serve_child::{bench_remote, free_port, scratch_dir, ServeChild};
use crate::ids::{SessionId, WorkspaceId};
use crate::net::client::ClientEvent;
use crate::net::link::Link;
use crate::net::tls;
use crate::protocol::*;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sessions the messages are spread over.
const SESSIONS: usize = 10;

/// One start of a host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StartupRun {
    pub messages: usize,
    /// Spawn → the listener accepts a TCP connection.
    pub listen_ms: f64,
    /// Spawn → `authenticate` answered.
    pub authenticated_ms: f64,
    /// Spawn → the snapshot (first page) of `s1` received.
    pub first_page_ms: f64,
    /// Messages in that first page.
    pub first_page_messages: usize,
    /// Host resident memory after the join, KiB.
    pub rss_kib: u64,
}

/// What `bench startup` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartupReport {
    pub tls: bool,
    pub sessions: usize,
    /// The page cache was emptied before each start.
    pub drop_caches: bool,
    /// The first start on the built database: no clean stop recorded, so the whole file is
    /// checked before serving.
    pub measured: StartupRun,
    /// The same database started again after a graceful stop: checked in the background.
    pub after_clean_stop: StartupRun,
    pub reference: StartupRun,
    /// measured.first_page_ms / reference.first_page_ms.
    pub first_page_ratio: f64,
    /// Seconds spent building the measured database (not part of the figures).
    pub build_seconds: f64,
    /// Size of the measured database (main file and log) when the first host stopped: what the
    /// integrity check reads.
    pub db_bytes: u64,
}

/// What [`one_run`] measured on one database.
struct OneRun {
    first: StartupRun,
    /// The start after a graceful stop (with `restart`).
    again: Option<StartupRun>,
    /// Main file and log after the first host stopped (0 without `restart`).
    db_bytes: u64,
    build_seconds: f64,
}

/// Builds the database, starts a host on it and times the first screen; then, with `restart`,
/// stops it gracefully and times a second start.
fn one_run(messages: usize, tls_on: bool, json: bool, drop_caches: bool, restart: bool) -> anyhow::Result<OneRun> {
    let scratch = scratch_dir(&format!("startup-{messages}"))?;
    let dir = scratch.path().to_path_buf();
    let db = crate::app::paths::database(&dir);
    let per_session = messages.div_ceil(SESSIONS).max(1);
    let counts: Vec<usize> =
        (0..SESSIONS).map(|i| per_session.min(messages.saturating_sub(i * per_session)).max(1)).collect();
    let total: usize = counts.iter().sum();
    let building = Instant::now();
    let mut bar = Progress::new(format!("building {total} messages"), total as u64, json || total < 50_000);
    crate::scenario::bench::build_sessions_db(&db, &counts, 0, &mut |n| bar.set(n as u64))?;
    bar.finish();
    let build_seconds = building.elapsed().as_secs_f64();
    let mut admin = crate::store::Admin::open(&db)?;
    let (_, token) = admin.mint_share(&MintShareParams::team("bench", vec![WorkspaceId::nth(1)]), 0)?;
    drop(admin);
    let fingerprint = if tls_on { Some(tls::load_or_create(&dir)?.fingerprint) } else { None };
    let port = free_port()?;
    let link = Link::new("127.0.0.1", port, token.clone(), fingerprint);
    let extra: &[&str] = if tls_on { &[] } else { &["--insecure"] };
    let (run, host) = time_start(&dir, &link, port, extra, drop_caches)?;
    let run = StartupRun { messages: total, ..run };
    if !restart {
        drop(host);
        return Ok(OneRun { first: run, again: None, db_bytes: 0, build_seconds });
    }
    let status = host.stop()?;
    anyhow::ensure!(status.success(), "the host exited with {status} on SIGTERM");
    let db_bytes = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let (again, host) = time_start(&dir, &link, port, extra, drop_caches)?;
    drop(host);
    Ok(OneRun { first: run, again: Some(StartupRun { messages: total, ..again }), db_bytes, build_seconds })
}

/// The snapshot a join sends (within a minute).
async fn first_snapshot(events: &mut crate::net::client::Events) -> anyhow::Result<Snapshot> {
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Event { frame, .. } = ev {
                if let Event::Snapshot(s) = frame.body {
                    return Some(s);
                }
            }
        }
        None
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("the connection ended before the snapshot"))
}

/// Empties the page cache (`sync`, then `3` into /proc/sys/vm/drop_caches; root only).
fn drop_page_cache() -> anyhow::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| anyhow::anyhow!("--drop-caches: cannot write /proc/sys/vm/drop_caches (root only): {e}"))
}

/// Spawns `roundtable serve` on `dir` and times it (see [`StartupRun`]; `messages` left 0);
/// returns the running host.
fn time_start(
    dir: &Path,
    link: &Link,
    port: u16,
    extra: &[&str],
    drop_caches: bool,
) -> anyhow::Result<(StartupRun, ServeChild)> {
    if drop_caches {
        drop_page_cache()?;
    }
    let spawned = Instant::now();
    let host = ServeChild::start(dir, &dir.join("serve.log"), port, extra)?;
    let listen_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (authenticated_ms, first_page_ms, first_page_messages) = runtime.block_on(async {
        let (client, mut events, _) = bench_remote(link, "Bench").await?;
        let authenticated_ms = spawned.elapsed().as_secs_f64() * 1000.0;
        client
            .request(Method::JoinSession(JoinSessionParams { session_id: SessionId::nth(1), since_seq: None }))
            .await?;
        let snapshot = first_snapshot(&mut events).await?;
        let first_page_ms = spawned.elapsed().as_secs_f64() * 1000.0;
        client.close();
        anyhow::Ok((authenticated_ms, first_page_ms, snapshot.messages.len()))
    })?;
    let rss = rss_kib(host.pid())?;
    let run = StartupRun { messages: 0, listen_ms, authenticated_ms, first_page_ms, first_page_messages, rss_kib: rss };
    Ok((run, host))
}

/// Runs the bench, writing progress and the result to `out` (JSON when `json`).
pub fn run(
    messages: usize,
    tls_on: bool,
    drop_caches: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<StartupReport> {
    if !json {
        writeln!(out, "startup with {messages} stored messages in {SESSIONS} sessions, against {SESSIONS} messages")?;
    }
    let reference = one_run(SESSIONS, tls_on, json, drop_caches, false)?.first;
    let OneRun { first: measured, again, db_bytes, build_seconds } =
        one_run(messages, tls_on, json, drop_caches, true)?;
    let after_clean_stop = again.ok_or_else(|| anyhow::anyhow!("no second start"))?;
    let report = StartupReport {
        tls: tls_on,
        sessions: SESSIONS,
        drop_caches,
        after_clean_stop,
        first_page_ratio: measured.first_page_ms / reference.first_page_ms.max(0.001),
        measured,
        reference,
        build_seconds,
        db_bytes,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let runs = [
            ("reference", &report.reference),
            ("measured (no clean stop recorded: checked before serving)", &report.measured),
            ("measured again after a clean stop (checked in the background)", &report.after_clean_stop),
        ];
        for (name, r) in runs {
            writeln!(
                out,
                "  {name}: {:>8} messages — listening {:>6.1} ms, authenticated {:>6.1} ms, first page ({} messages) \
                 {:>6.1} ms after spawn; host RSS {} KiB",
                r.messages, r.listen_ms, r.authenticated_ms, r.first_page_messages, r.first_page_ms, r.rss_kib
            )?;
        }
        writeln!(
            out,
            "first page {:.2}× the reference ({}{}; database {:.1} MB, building it took {:.1} s)",
            report.first_page_ratio,
            if tls_on { "TLS" } else { "ws" },
            if drop_caches { ", page cache dropped before each start" } else { "" },
            db_bytes as f64 / 1e6,
            build_seconds
        )?;
    }
    Ok(report)
}

// ---- many sessions: tails loaded on demand against all loaded at start ----------------------

/// The database `run_sessions` builds: `sessions` sessions, each with `events` stored events of
/// which the last `messages` are messages (the others `session_updated`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SessionsShape {
    pub sessions: usize,
    pub events: usize,
    pub messages: usize,
}

/// One start of a host on the many-sessions database.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionsRun {
    /// Every session's tails loaded at start (`serve --eager-tails`, the behaviour before
    /// issue 25) rather than on demand.
    pub eager: bool,
    /// Spawn → the host is ready (listening, `serve.json` written).
    pub ready_ms: f64,
    /// Spawn → `authenticate` answered.
    pub authenticated_ms: f64,
    /// Host resident memory once a remote is authenticated (nobody joined), KiB.
    pub rss_ready_kib: u64,
    /// Spawn → the snapshot of `s1` received (its tails loaded first when on demand).
    pub first_page_ms: f64,
    pub first_page_messages: usize,
    /// Host resident memory after joining `s1`, KiB.
    pub rss_joined_kib: u64,
}

/// What `bench startup --events-per-session` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionsReport {
    pub tls: bool,
    pub shape: SessionsShape,
    /// Tails loaded on demand (the default).
    pub on_demand: SessionsRun,
    /// Every session's tails loaded at start.
    pub eager: SessionsRun,
    /// Seconds spent building the database (not part of the figures).
    pub build_seconds: f64,
    /// Size of the database (main file and log).
    pub db_bytes: u64,
}

/// Writes the many-sessions database (see [`SessionsShape`]); calls `progress` with the events
/// written so far.
fn build_many_sessions_db(path: &Path, shape: SessionsShape, progress: &mut dyn FnMut(usize)) -> anyhow::Result<()> {
    use crate::ids::MessageId;
    use crate::persist::{AgentSpec, EventRow, MessageRow, SessionRecord, SessionRow, Store, StoreOp, WorkspaceRow};
    let mut store = crate::store::SqliteStore::open(path)?;
    let ws = WorkspaceId::nth(1);
    let agent = AgentSpec::demo();
    let mut batch = vec![StoreOp::PutWorkspace(WorkspaceRow {
        id: ws.clone(),
        name: "bench".into(),
        dir: ".".into(),
        agent: agent.clone(),
    })];
    let (mut message_id, mut written) = (0u64, 0usize);
    for n in 1..=shape.sessions as u64 {
        let sid = SessionId::nth(n);
        let title = format!("session {n}");
        batch.push(StoreOp::PutSession(SessionRow {
            session: SessionRecord {
                id: sid.clone(),
                workspace: ws.clone(),
                title: title.clone(),
                status: SessionStatus::Idle,
                agent: agent.clone(),
                vote_deadline_ms: None,
                created_at: 0,
                allowed_tools: Default::default(),
                agent_memory: Default::default(),
                agent_settings: Default::default(),
            },
            turn_holder: None,
            turn_id: 0,
            next_seq: shape.events as u64 + 1,
            streamed: String::new(),
        }));
        let first_message = (shape.events - shape.messages) as u64 + 1;
        for seq in 1..=shape.events as u64 {
            let body = if seq < first_message {
                Event::SessionUpdated(SessionUpdated {
                    title: format!("{title}, renamed {seq} times"),
                    status: SessionStatus::Idle,
                    agent_settings: Default::default(),
                })
            } else {
                message_id += 1;
                let (author_id, author_name) = if seq % 2 == 1 { ("host", "Host") } else { ("agent", "Agent") };
                let text = format!("message {seq}: the quick brown fox jumps over the lazy dog, then checks the tests");
                let client_msg_id = (seq % 2 == 1).then(|| format!("c{seq}"));
                batch.push(StoreOp::PutMessage(MessageRow {
                    id: MessageId::nth(message_id),
                    session: sid.clone(),
                    seq,
                    author_id: author_id.into(),
                    author_name: author_name.into(),
                    text: text.clone(),
                    client_msg_id: client_msg_id.clone(),
                    created_at: seq,
                    room: false,
                }));
                Event::Message(MessageEvent {
                    message_id: MessageId::nth(message_id),
                    author_id: author_id.into(),
                    author_name: author_name.into(),
                    text,
                    client_msg_id,
                    room: false,
                    at_ms: None,
                })
            };
            let frame = EventFrame { session_id: Some(sid.clone()), seq: Some(seq), body }.to_json();
            batch.push(StoreOp::AppendEvent(EventRow { session: sid.clone(), seq, frame }));
            written += 1;
        }
        if batch.len() >= 20_000 || n == shape.sessions as u64 {
            store.commit(&batch)?;
            batch.clear();
            progress(written);
        }
    }
    store.commit(&batch)?;
    store.stop_cleanly();
    Ok(())
}

/// Starts a host on `dir` (with `--eager-tails` when `eager`), measures it (see
/// [`SessionsRun`]) and stops it gracefully.
fn time_sessions_start(dir: &Path, link: &Link, port: u16, tls_on: bool, eager: bool) -> anyhow::Result<SessionsRun> {
    let mut extra: Vec<&str> = Vec::new();
    if !tls_on {
        extra.push("--insecure");
    }
    if eager {
        extra.push("--eager-tails");
    }
    let spawned = Instant::now();
    let host = ServeChild::start(dir, &dir.join("serve.log"), port, &extra)?;
    let ready_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    let pid = host.pid();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let run = runtime.block_on(async {
        let (client, mut events, _) = bench_remote(link, "Bench").await?;
        let authenticated_ms = spawned.elapsed().as_secs_f64() * 1000.0;
        let rss_ready_kib = rss_kib(pid)?;
        client
            .request(Method::JoinSession(JoinSessionParams { session_id: SessionId::nth(1), since_seq: None }))
            .await?;
        let snapshot = first_snapshot(&mut events).await?;
        let first_page_ms = spawned.elapsed().as_secs_f64() * 1000.0;
        let rss_joined_kib = rss_kib(pid)?;
        client.close();
        anyhow::Ok(SessionsRun {
            eager,
            ready_ms,
            authenticated_ms,
            rss_ready_kib,
            first_page_ms,
            first_page_messages: snapshot.messages.len(),
            rss_joined_kib,
        })
    })?;
    let status = host.stop()?;
    anyhow::ensure!(status.success(), "the host exited with {status} on SIGTERM");
    Ok(run)
}

/// `bench startup --sessions N --events-per-session E --messages-per-session M`: builds the
/// database once, starts a host on it once unmeasured (so every measured start follows a clean
/// stop), then with tails loaded on demand and with every session's tails loaded at start.
pub fn run_sessions(
    shape: SessionsShape,
    tls_on: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<SessionsReport> {
    anyhow::ensure!(shape.sessions > 0, "--sessions must be at least 1");
    if !json {
        writeln!(
            out,
            "startup with {} stored sessions of {} events ({} of them messages) each",
            shape.sessions, shape.events, shape.messages
        )?;
    }
    let scratch = scratch_dir("startup-sessions")?;
    let dir = scratch.path().to_path_buf();
    let db = crate::app::paths::database(&dir);
    let total = shape.sessions * shape.events;
    let building = Instant::now();
    let mut bar = Progress::new(format!("building {total} events"), total as u64, json);
    build_many_sessions_db(&db, shape, &mut |n| bar.set(n as u64))?;
    bar.finish();
    let build_seconds = building.elapsed().as_secs_f64();
    let mut admin = crate::store::Admin::open(&db)?;
    let (_, token) = admin.mint_share(&MintShareParams::team("bench", vec![WorkspaceId::nth(1)]), 0)?;
    drop(admin);
    let fingerprint = if tls_on { Some(tls::load_or_create(&dir)?.fingerprint) } else { None };
    let port = free_port()?;
    let link = Link::new("127.0.0.1", port, token, fingerprint);
    // Warm-up (page cache, first-start work), not measured.
    time_sessions_start(&dir, &link, port, tls_on, false)?;
    let on_demand = time_sessions_start(&dir, &link, port, tls_on, false)?;
    let eager = time_sessions_start(&dir, &link, port, tls_on, true)?;
    let db_bytes = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let report = SessionsReport { tls: tls_on, shape, on_demand, eager, build_seconds, db_bytes };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(report);
    }
    for (name, r) in [("tails on demand", &report.on_demand), ("all tails at start (--eager-tails)", &report.eager)] {
        writeln!(
            out,
            "  {name}: ready {:>7.1} ms, authenticated {:>7.1} ms, host RSS {:>7} KiB; first page of s1 ({} messages) \
             {:>7.1} ms after spawn, host RSS then {:>7} KiB",
            r.ready_ms, r.authenticated_ms, r.rss_ready_kib, r.first_page_messages, r.first_page_ms, r.rss_joined_kib
        )?;
    }
    let per_session = |r: &SessionsRun| r.rss_ready_kib as f64 / shape.sessions as f64;
    writeln!(
        out,
        "RSS per stored session (whole host / sessions): {:.1} KiB on demand, {:.1} KiB all at start \
         ({}; database {:.1} MB, building it took {:.1} s)",
        per_session(&report.on_demand),
        per_session(&report.eager),
        if tls_on { "TLS" } else { "ws" },
        report.db_bytes as f64 / 1e6,
        build_seconds
    )?;
    Ok(report)
}
