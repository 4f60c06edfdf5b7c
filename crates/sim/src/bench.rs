//! `roundtable bench`: modest throughput figures, always reported as a ratio against a reference
//! measured in the same process (absolute numbers depend on the machine; ratios much less so).
//!
//! `fanout`: one session, the host chatting with the demo agent replying, and N remote clients
//! receiving every event over the in-memory transport. Reference: the same flow with one client.

use super::format::*;
use super::runner::{run_scenario, RunOptions};
use std::io::Write;

/// Available benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchKind {
    /// Ticks per second with N clients in one session, against one client.
    Fanout,
}

/// The fan-out flow: `clients` remotes in one session; the host sends a message every 100 ms.
pub fn fanout_scenario(clients: usize, ticks: u64) -> Scenario {
    let tick_ms = DEFAULT_TICK_MS;
    let duration = ticks * tick_ms;
    let mut sc = Scenario {
        name: format!("fanout {clients}"),
        seed: Some(1),
        settle_ms: Some(0),
        workspaces: vec![WorkspaceDef {
            name: "app".into(),
            files: Default::default(),
            outside_files: Default::default(),
            symlinks: Default::default(),
            agent: None,
            agent_cmd: None,
            agent_args: Vec::new(),
        }],
        sessions: vec![SessionDef { workspace: "app".into(), title: "bench".into(), vote_deadline_ms: None }],
        shares: vec![ShareDef {
            label: "team".into(),
            workspaces: Vec::new(),
            collaborative: true,
            consensus_required: true,
            admission_required: false,
            role: "participant".into(),
            expires_in_ms: None,
            max_uses: None,
            vote_deadline_ms: None,
        }],
        ..Default::default()
    };
    for i in 0..clients {
        sc.participants.push(ParticipantDef {
            name: format!("c{i}"),
            display_name: None,
            share: Some("team".into()),
            connections: 1,
            connect_at: 0,
            authenticate: true,
            join: None,
            addr: None,
            auto_resync: true,
            auto_refetch: true,
        });
    }
    let mut params = toml::Table::new();
    params.insert("session".into(), "s1".into());
    params.insert("text".into(), "benchmark message ${i} streaming back".into());
    sc.steps.push(Step {
        at: 0,
        who: "host".into(),
        action: "send_message".into(),
        conn: None,
        response: Some("any".into()),
        expect_error: None,
        error_contains: None,
        expect_result: None,
        repeat: Some((duration / 100).max(1) as u32),
        every: Some(100),
        then: Vec::new(),
        params,
    });
    sc
}

/// Runs a scenario and returns (ticks per second of the whole run, ticks per second of engine
/// time alone, frames delivered).
fn measure(sc: &Scenario) -> anyhow::Result<(f64, f64, usize)> {
    let options = RunOptions { seed: None, ignore_expectations: true, no_invariants: true, ..Default::default() };
    let report = run_scenario(sc, &options);
    if report.crashed() {
        anyhow::bail!("benchmark run failed: {}", report.failures.first().map(|f| f.to_string()).unwrap_or_default());
    }
    let frames = report.events.values().map(Vec::len).sum();
    let ticks = report.ticks as f64;
    Ok((ticks / report.wall.as_secs_f64().max(1e-9), ticks / report.engine_wall.as_secs_f64().max(1e-9), frames))
}

/// What a bench run measures.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub kind: BenchKind,
    /// Clients in the measured run.
    pub clients: usize,
    /// Ticks per run.
    pub ticks: u64,
    /// Print one JSON object instead of text.
    pub json: bool,
}

/// What `bench fanout` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FanoutReport {
    pub clients: usize,
    pub ticks: u64,
    /// Whole-run tick rate (runner included) and engine-only tick rate, reference (1 client).
    pub reference_ticks_per_s: f64,
    pub reference_engine_ticks_per_s: f64,
    pub reference_events: usize,
    pub ticks_per_s: f64,
    pub engine_ticks_per_s: f64,
    pub events: usize,
    pub ratio: f64,
    pub engine_ratio: f64,
}

/// Runs a benchmark and writes its report (figures and the ratio) to `out`.
pub fn run(options: &BenchOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    match options.kind {
        BenchKind::Fanout => {
            let clients = options.clients.max(1);
            let (reference, ref_engine, ref_frames) = measure(&fanout_scenario(1, options.ticks))?;
            let (measured, engine, frames) = measure(&fanout_scenario(clients, options.ticks))?;
            if options.json {
                let report = FanoutReport {
                    clients,
                    ticks: options.ticks,
                    reference_ticks_per_s: reference,
                    reference_engine_ticks_per_s: ref_engine,
                    reference_events: ref_frames,
                    ticks_per_s: measured,
                    engine_ticks_per_s: engine,
                    events: frames,
                    ratio: measured / reference,
                    engine_ratio: engine / ref_engine,
                };
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "fanout reference (1 client):   {reference:>10.0} ticks/s ({ref_engine:>10.0} in engine time), {ref_frames} events delivered"
            )?;
            writeln!(
                out,
                "fanout measured ({clients} clients): {measured:>10.0} ticks/s ({engine:>10.0} in engine time), {frames} events delivered"
            )?;
            writeln!(
                out,
                "ratio: {:.3} of the reference tick rate for {clients}x the clients ({:.1}x the events); engine alone: {:.3}",
                measured / reference,
                frames as f64 / ref_frames.max(1) as f64,
                engine / ref_engine
            )?;
            Ok(())
        }
    }
}

/// What `bench history` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryReport {
    /// Messages in the long session.
    pub messages: usize,
    /// Messages in the reference session (one page).
    pub reference_messages: usize,
    /// `PRAGMA quick_check` of the database, as the host runs it at start, ms.
    pub integrity_check_ms: f64,
    /// Engine start on the database (load + restore), ms.
    pub start_ms: f64,
    /// `join_session` → snapshot of the long session, ms (one tick, in process; median of 21).
    pub join_ms: f64,
    /// The same for the reference session.
    pub reference_join_ms: f64,
    /// join_ms / reference_join_ms: the first screen should not cost more for a longer history.
    pub join_ratio: f64,
    /// Bytes of the long session's snapshot frame.
    pub snapshot_bytes: usize,
    /// `fetch_history` pages (200 messages) to reach the first message.
    pub pages: usize,
    /// Mean time per page, ms.
    pub page_ms: f64,
    /// Messages seen on the way (snapshot + pages); equals `messages` when nothing is lost.
    pub paged_messages: usize,
    /// Size of the database as built (main file and log, after the builder closed it), bytes:
    /// `messages` + `reference_messages` messages with their events, as a host stores them.
    pub db_bytes: u64,
    /// Of which free pages (space deleted rows left, reused by later writes), bytes.
    pub db_free_bytes: u64,
}

/// Keeps the frames the engine hands the bench's host connection.
#[derive(Default)]
struct KeepFrames(std::sync::Mutex<Vec<crate::engine::Frame>>);

impl crate::engine::FrameSink for KeepFrames {
    fn try_send(&self, frame: &crate::engine::Frame) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(frame.clone());
        true
    }
    fn close(&self, _reason: &str) {}
}

/// Builds a database with a `messages`-message session (s1) and a one-page session (s2).
fn build_history_db(path: &std::path::Path, messages: usize, reference: usize) -> anyhow::Result<()> {
    build_sessions_db(path, &[messages, reference], 0, &mut |_| {})
}

/// Writes a database with one workspace (`w1`, demo agent) and one session per entry of
/// `counts` (`s1`, `s2`, …), each with that many messages and their `message` events, as a host
/// would have stored them; with `text_bytes` > 0 every message is that long. `progress` gets the
/// number of messages written so far.
pub fn build_sessions_db(
    path: &std::path::Path,
    counts: &[usize],
    text_bytes: usize,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<()> {
    use crate::ids::{MessageId, SessionId, WorkspaceId};
    use crate::persist::{AgentSpec, EventRow, MessageRow, SessionRecord, SessionRow, Store, StoreOp, WorkspaceRow};
    let mut store = crate::store::SqliteStore::open(path)?;
    let ws = WorkspaceId::nth(1);
    let session = |n: u64, next_seq: u64| SessionRow {
        session: SessionRecord {
            id: SessionId::nth(n),
            workspace: ws.clone(),
            title: format!("session {n}"),
            status: crate::protocol::SessionStatus::Idle,
            agent: AgentSpec::demo(),
            vote_deadline_ms: None,
            created_at: 0,
            allowed_tools: Default::default(),
            agent_memory: Default::default(),
            agent_settings: Default::default(),
        },
        turn_holder: None,
        turn_id: 0,
        next_seq,
        streamed: String::new(),
    };
    let mut setup = vec![StoreOp::PutWorkspace(WorkspaceRow {
        id: ws.clone(),
        name: "bench".into(),
        dir: ".".into(),
        agent: AgentSpec::demo(),
    })];
    for (i, &count) in counts.iter().enumerate() {
        setup.push(StoreOp::PutSession(session(i as u64 + 1, count as u64 + 1)));
    }
    store.commit(&setup)?;
    let (mut id, mut written) = (0u64, 0usize);
    for (i, &count) in counts.iter().enumerate() {
        let sid = SessionId::nth(i as u64 + 1);
        let mut batch = Vec::with_capacity(20_000);
        for seq in 1..=count as u64 {
            id += 1;
            let (author_id, author_name) = if seq % 2 == 1 { ("host", "Host") } else { ("agent", "Agent") };
            let mut text = format!("message {seq}: the quick brown fox jumps over the lazy dog, then checks the tests");
            if text_bytes > 0 {
                while text.len() < text_bytes {
                    text.push_str(" and then some more text");
                }
                text.truncate(text_bytes);
            }
            let client_msg_id = (seq % 2 == 1).then(|| format!("c{seq}"));
            let body = crate::protocol::Event::Message(crate::protocol::MessageEvent {
                message_id: MessageId::nth(id),
                author_id: author_id.into(),
                author_name: author_name.into(),
                text: text.clone(),
                client_msg_id: client_msg_id.clone(),
                room: false,
                at_ms: None,
            });
            let frame = crate::protocol::EventFrame { session_id: Some(sid.clone()), seq: Some(seq), body }.to_json();
            batch.push(StoreOp::PutMessage(MessageRow {
                id: MessageId::nth(id),
                session: sid.clone(),
                seq,
                author_id: author_id.into(),
                author_name: author_name.into(),
                text,
                client_msg_id,
                created_at: seq,
                room: false,
            }));
            batch.push(StoreOp::AppendEvent(EventRow { session: sid.clone(), seq, frame }));
            if batch.len() >= 20_000 {
                store.commit(&batch)?;
                written += batch.len() / 2;
                progress(written);
                batch.clear();
            }
        }
        store.commit(&batch)?;
        written += batch.len() / 2;
        progress(written);
    }
    Ok(())
}

/// Measures start, first screen and paging for a `messages`-message session against a
/// one-page reference session in the same engine.
pub fn history(messages: usize, out: &mut dyn Write, json: bool) -> anyhow::Result<HistoryReport> {
    use crate::engine::{Engine, EngineConfig, Inbound};
    use crate::ids::ConnId;
    use std::time::Instant;
    let reference = crate::protocol::HISTORY_PAGE_MESSAGES;
    let scratch = scratch_dir("history")?;
    let dir = scratch.path().to_path_buf();
    let db = dir.join("roundtable.db");
    if !json {
        writeln!(out, "building a database with {messages} messages…")?;
    }
    build_history_db(&db, messages, reference)?;
    let file_bytes = |suffix: &str| std::fs::metadata(format!("{}{suffix}", db.display())).map_or(0, |m| m.len());
    let db_bytes = file_bytes("") + file_bytes("-wal");
    let db_free_bytes = crate::store::SqliteStore::open(&db)?.free_bytes()?;

    let checked = Instant::now();
    crate::store::SqliteStore::open(&db)?.check_integrity()?;
    let integrity_check_ms = checked.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let store = crate::store::SqliteStore::open(&db)?;
    let config = EngineConfig { check_invariants: false, ..EngineConfig::default() };
    let mut engine = Engine::new(config, Box::new(store))?;
    crate::agent::install_builtin(&mut engine);
    let start_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sink = std::sync::Arc::new(KeepFrames::default());
    let conn = ConnId(0);
    let tx = engine.sender();
    tx.send(Inbound::OpenedHost { conn, sink: sink.clone() })?;
    let mut now = 1_000;
    engine.tick(now);
    let mut request = |engine: &mut Engine,
                       id: u64,
                       method: &str,
                       params: serde_json::Value|
     -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
        sink.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let frame = serde_json::json!({"id": id, "method": method, "params": params}).to_string();
        tx.send(Inbound::Frame { conn, text: frame })?;
        now += 10;
        let t = Instant::now();
        engine.tick(now);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let frames = sink.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect::<Vec<_>>();
        Ok((ms, frames.iter().map(|f| serde_json::from_str(f)).collect::<Result<_, _>>()?))
    };
    let snapshot_of = |frames: &[serde_json::Value]| frames.iter().find(|f| f["event"] == "snapshot").cloned();
    // Each join is repeated, alternating with the reference, and the medians compared (the
    // first call of anything pays for warming caches).
    const JOINS: usize = 21;
    let (mut long, mut short) = (Vec::with_capacity(JOINS), Vec::with_capacity(JOINS));
    let mut snap = None;
    for i in 0..JOINS as u64 {
        let (ms, frames) = request(&mut engine, 1 + 2 * i, "join_session", serde_json::json!({"session_id": "s1"}))?;
        long.push(ms);
        snap = snapshot_of(&frames);
        short.push(request(&mut engine, 2 + 2 * i, "join_session", serde_json::json!({"session_id": "s2"}))?.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (join_ms, reference_join_ms) = (median(&mut long), median(&mut short));
    let snap = snap.ok_or_else(|| anyhow::anyhow!("no snapshot for s1"))?;
    let snapshot_bytes = snap.to_string().len();
    let mut seen = snap["payload"]["messages"].as_array().map_or(0, Vec::len);
    let mut oldest = snap["payload"]["messages"][0]["seq"].as_u64();
    let mut has_older = snap["payload"]["has_older"].as_bool().unwrap_or(false);
    let (mut pages, mut page_total) = (0usize, 0.0);
    while has_older {
        let params = serde_json::json!({"session_id": "s1", "before_seq": oldest, "limit": 200});
        let (ms, frames) = request(&mut engine, 1000 + pages as u64, "fetch_history", params)?;
        let result = frames.iter().find(|f| f.get("result").is_some()).ok_or_else(|| anyhow::anyhow!("no page"))?;
        let page = result["result"]["messages"].as_array().cloned().unwrap_or_default();
        seen += page.len();
        oldest = page.first().and_then(|m| m["seq"].as_u64());
        has_older = result["result"]["has_older"].as_bool().unwrap_or(false) && oldest.is_some();
        pages += 1;
        page_total += ms;
        if !json && pages % 100 == 0 {
            writeln!(out, "  paged {seen}/{messages} messages")?;
        }
    }
    let report = HistoryReport {
        messages,
        reference_messages: reference,
        integrity_check_ms,
        start_ms,
        join_ms,
        reference_join_ms,
        join_ratio: join_ms / reference_join_ms.max(1e-6),
        snapshot_bytes,
        pages,
        page_ms: page_total / pages.max(1) as f64,
        paged_messages: seen,
        db_bytes,
        db_free_bytes,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        writeln!(
            out,
            "database of {} messages: {:.1} MB ({:.1} MB of it free pages)",
            messages + reference,
            mb(db_bytes),
            mb(db_free_bytes)
        )?;
        writeln!(out, "integrity check (PRAGMA quick_check) of the database: {integrity_check_ms:.1} ms")?;
        writeln!(out, "engine start with {messages} stored messages: {start_ms:.1} ms")?;
        writeln!(
            out,
            "first screen (join_session → snapshot, {} KiB): {join_ms:.2} ms; reference session of {reference} messages: {reference_join_ms:.2} ms (ratio {:.2})",
            snapshot_bytes / 1024,
            report.join_ratio
        )?;
        writeln!(out, "paging back: {pages} pages of 200, {:.2} ms per page, {seen} messages seen", report.page_ms)?;
    }
    Ok(report)
}

/// Prefix of the benches' scratch directories in the system temp dir.
const SCRATCH_PREFIX: &str = "roundtable-bench-";

/// A fresh scratch directory `roundtable-bench-TAG-PID.RANDOM` under the system temp dir (made
/// by `tempfile`: a name nobody can predict, created only if nothing had that name), removed
/// when the returned guard drops. A bench killed from outside cannot remove its own, so
/// first every scratch directory whose process is gone is removed.
pub fn scratch_dir(tag: &str) -> anyhow::Result<tempfile::TempDir> {
    let temp = std::env::temp_dir();
    sweep_dead_scratch_dirs(&temp);
    let prefix = scratch_prefix(tag, std::process::id());
    Ok(tempfile::Builder::new().prefix(&prefix).tempdir_in(&temp)?)
}

/// The start of the name of the scratch directory of bench `tag` run by process `pid`
/// (`roundtable-bench-TAG-PID.`, then random letters and digits).
fn scratch_prefix(tag: &str, pid: u32) -> String {
    format!("{SCRATCH_PREFIX}{tag}-{pid}.")
}

/// The PID in a scratch directory's name after [`SCRATCH_PREFIX`]: `TAG-PID.RANDOM` (or
/// `TAG-PID`, as older versions named them).
fn scratch_pid(rest: &str) -> Option<u32> {
    let before_random = rest.split_once('.').map_or(rest, |(head, _)| head);
    before_random.rsplit_once('-')?.1.parse().ok()
}

/// Removes `roundtable-bench-…-PID.…` directories in `temp` whose PID no longer runs.
fn sweep_dead_scratch_dirs(temp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SCRATCH_PREFIX).and_then(scratch_pid) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing {} (its bench, PID {pid}, is gone)", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What `bench tick` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TickReport {
    pub sessions: usize,
    pub participants_per_session: usize,
    /// Mean engine time of an idle tick (nothing arrives), microseconds: measured world and the
    /// reference world (only the `busy_sessions` sessions).
    pub idle_tick_us: f64,
    pub reference_idle_tick_us: f64,
    /// Mean engine time of a busy tick (an agent turn streaming one delta per tick in each of
    /// `busy_sessions` sessions, to everyone in them), microseconds: measured world and the
    /// reference (the same deltas, all of them in the reference's one session).
    pub busy_tick_us: f64,
    pub reference_busy_tick_us: f64,
    pub busy_sessions: usize,
    /// idle_tick_us / reference_idle_tick_us (1.0: idle sessions cost nothing).
    pub idle_ratio: f64,
    /// busy_tick_us / reference_busy_tick_us.
    pub busy_ratio: f64,
}

/// A world of `sessions` sessions with `per_session` connected remotes each, driven tick by tick
/// on the in-memory transport.
struct TickWorld {
    engine: crate::engine::Engine,
    now: u64,
    next_id: u64,
    host: crate::ids::ConnId,
    sink: std::sync::Arc<DropFrames>,
}

/// A sink that counts and forgets (a client that keeps up).
#[derive(Default)]
struct DropFrames(std::sync::atomic::AtomicU64);

impl crate::engine::FrameSink for DropFrames {
    fn try_send(&self, _frame: &crate::engine::Frame) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
    fn close(&self, _reason: &str) {}
}

impl TickWorld {
    fn build(sessions: usize, per_session: usize, progress: &mut dyn FnMut(usize)) -> anyhow::Result<TickWorld> {
        Self::build_on(Box::new(crate::store::SqliteStore::open_in_memory()?), sessions, per_session, progress)
    }

    fn build_on(
        store: Box<dyn crate::persist::Store>,
        sessions: usize,
        per_session: usize,
        progress: &mut dyn FnMut(usize),
    ) -> anyhow::Result<TickWorld> {
        use crate::engine::{Engine, EngineConfig, Inbound};
        use crate::ids::ConnId;
        let config =
            EngineConfig { check_invariants: false, max_connections_per_share: usize::MAX, ..EngineConfig::default() };
        let mut engine = Engine::new(config, store)?;
        crate::agent::install_builtin(&mut engine);
        let sink = std::sync::Arc::new(DropFrames::default());
        let host = ConnId(0);
        engine.sender().send(Inbound::OpenedHost { conn: host, sink: sink.clone() })?;
        let mut w = TickWorld { engine, now: 1_000, next_id: 1, host, sink };
        w.tick();
        w.send(host, "add_workspace", serde_json::json!({"name": "bench", "dir": "."}))?;
        w.tick();
        let mint = serde_json::json!({"workspaces": ["w1"], "label": "bench", "collaborative": true});
        let token = w.call_host("mint_share", mint)?["token"].as_str().unwrap_or_default().to_string();
        let mut conn = 1u64;
        for s in 1..=sessions {
            w.send(host, "create_session", serde_json::json!({"workspace_id": "w1", "title": format!("s{s}")}))?;
            let first = conn;
            for p in 0..per_session {
                let c = ConnId(conn);
                conn += 1;
                let addr = format!("10.{}.{}.{}:5000", conn >> 16 & 255, conn >> 8 & 255, conn & 255);
                w.engine.sender().send(Inbound::Opened { conn: c, addr, sink: w.sink.clone() })?;
                let auth = serde_json::json!({"token": token, "display_name": format!("p{s}-{p}")});
                w.send(c, "authenticate", auth)?;
            }
            w.tick();
            for c in first..conn {
                w.send(ConnId(c), "join_session", serde_json::json!({"session_id": format!("s{s}")}))?;
            }
            w.tick();
            progress(s);
        }
        w.tick();
        // Honest figures only: every remote must be in its session.
        let list = w.call_host("list_sessions", serde_json::json!({}))?;
        let present: u64 =
            list["sessions"].as_array().map_or(0, |a| a.iter().filter_map(|s| s["participant_count"].as_u64()).sum());
        let wanted = (sessions * per_session) as u64;
        if present < wanted {
            anyhow::bail!("only {present} of {wanted} remotes joined their sessions");
        }
        Ok(w)
    }

    fn tick(&mut self) {
        self.now += DEFAULT_TICK_MS;
        self.engine.tick(self.now);
    }

    fn send(&mut self, conn: crate::ids::ConnId, method: &str, params: serde_json::Value) -> anyhow::Result<()> {
        self.next_id += 1;
        let text = serde_json::json!({"id": self.next_id, "method": method, "params": params}).to_string();
        self.engine.sender().send(crate::engine::Inbound::Frame { conn, text })?;
        Ok(())
    }

    /// A host request answered within one tick, with its result.
    fn call_host(&mut self, method: &str, params: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let keep = std::sync::Arc::new(KeepFrames::default());
        let conn = crate::ids::ConnId(u64::MAX);
        self.engine.sender().send(crate::engine::Inbound::OpenedHost { conn, sink: keep.clone() })?;
        self.send(conn, method, params)?;
        self.tick();
        self.engine.sender().send(crate::engine::Inbound::Closed { conn })?;
        let frames = keep.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for f in frames {
            let v: serde_json::Value = serde_json::from_str(&f)?;
            if let Some(result) = v.get("result") {
                return Ok(result.clone());
            }
            if let Some(e) = v.get("error") {
                anyhow::bail!("{method} failed: {e}");
            }
        }
        anyhow::bail!("{method} got no answer")
    }

    /// Opens an agent turn in each of `sessions` (the host asks; the demo agent's question keeps
    /// the turn open), so deltas can stream into them.
    fn open_turns(&mut self, sessions: &[usize]) -> anyhow::Result<()> {
        let host = self.host;
        for &s in sessions {
            let params = serde_json::json!({"session_id": format!("s{s}"), "text": "/ask go on", "client_msg_id": format!("turn-s{s}")});
            self.send(host, "send_message", params)?;
        }
        for _ in 0..20 {
            self.tick();
        }
        Ok(())
    }

    /// Queues agent output for the running turn (turn 1) of `session`.
    fn delta(&mut self, session: &str, text: &str) {
        use crate::engine::agent::{AgentEvent, AgentOutput};
        let event = AgentEvent::Delta(text.to_string());
        let out = AgentOutput { session: session.into(), turn_id: 1, event };
        let _ = self.engine.sender().send(crate::engine::Inbound::Agent(out));
    }

    /// Mean engine time of `ticks` ticks, microseconds; `each` queues the tick's input.
    fn measure(&mut self, ticks: u64, each: &mut dyn FnMut(&mut TickWorld, u64)) -> f64 {
        let mut total = std::time::Duration::ZERO;
        for i in 0..ticks {
            each(self, i);
            self.now += DEFAULT_TICK_MS;
            let t = std::time::Instant::now();
            self.engine.tick(self.now);
            total += t.elapsed();
        }
        total.as_secs_f64() * 1e6 / ticks as f64
    }
}

/// `bench tick`: the engine's cost per tick with `sessions` × `per_session` connected remotes,
/// idle and busy, against a world of only the 10 busy sessions in the same process.
pub fn tick(
    sessions: usize,
    per_session: usize,
    ticks: u64,
    out: &mut dyn Write,
    json: bool,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> anyhow::Result<TickReport> {
    let (sessions, per_session, ticks) = (sessions.max(1), per_session.max(1), ticks.max(10));
    let busy_sessions = sessions.min(10);
    let mut world = TickWorld::build(sessions, per_session, &mut |n| progress("building sessions", n, sessions))?;
    let mut reference = TickWorld::build(busy_sessions, per_session, &mut |_| {})?;
    // Let joins, snapshots and the demo agent's greetings settle.
    for _ in 0..50 {
        world.tick();
        reference.tick();
    }
    let idle_tick_us = world.measure(ticks, &mut |_, _| {});
    let reference_idle_tick_us = reference.measure(ticks, &mut |_, _| {});
    // Busy: an agent turn streams in `busy_sessions` sessions (spread over the world), one delta
    // per session per tick, to everyone in them. The reference is a world of just those
    // sessions streaming the same way: the difference is what the idle sessions cost.
    let stride = (sessions / busy_sessions).max(1);
    let chosen: Vec<usize> = (0..busy_sessions).map(|k| 1 + k * stride).collect();
    world.open_turns(&chosen)?;
    let all_reference: Vec<usize> = (1..=busy_sessions).collect();
    reference.open_turns(&all_reference)?;
    let busy = |sessions_used: Vec<usize>| {
        move |w: &mut TickWorld, i: u64| {
            for &s in &sessions_used {
                w.delta(&format!("s{s}"), &format!("tick {i}: some streamed text of the agent\n"));
            }
        }
    };
    let delivered = world.sink.0.load(std::sync::atomic::Ordering::Relaxed);
    let busy_tick_us = world.measure(ticks, &mut busy(chosen));
    // Honest figures only: the deltas must have reached everyone in the streaming sessions.
    let delivered = world.sink.0.load(std::sync::atomic::Ordering::Relaxed) - delivered;
    let expected = ticks * (busy_sessions * per_session) as u64;
    if delivered < expected {
        anyhow::bail!("only {delivered} of {expected} deltas were delivered: the turns did not stream");
    }
    let reference_busy_tick_us = reference.measure(ticks, &mut busy(all_reference));
    progress("done", sessions, sessions);
    let report = TickReport {
        sessions,
        participants_per_session: per_session,
        idle_tick_us,
        reference_idle_tick_us,
        busy_tick_us,
        reference_busy_tick_us,
        busy_sessions,
        idle_ratio: idle_tick_us / reference_idle_tick_us.max(1e-9),
        busy_ratio: busy_tick_us / reference_busy_tick_us.max(1e-9),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "tick: {sessions} sessions × {per_session} remotes — idle {:.1} µs/tick vs {:.1} µs for {busy_sessions} sessions ({:.2}×); \
             busy ({busy_sessions} streaming sessions) {:.1} µs vs {:.1} µs ({:.2}×)",
            report.idle_tick_us,
            report.reference_idle_tick_us,
            report.idle_ratio,
            report.busy_tick_us,
            report.reference_busy_tick_us,
            report.busy_ratio
        )?;
    }
    Ok(report)
}

/// What `bench stream` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamReport {
    pub remotes: usize,
    pub deltas_per_second: u64,
    /// Bytes the agent streamed in the turn.
    pub turn_bytes: usize,
    /// Mean engine time per tick over the turn's first and last tenth, microseconds.
    pub first_tenth_tick_us: f64,
    pub last_tenth_tick_us: f64,
    /// last / first: 1.0 when a tick costs the same however long the turn already is.
    pub ratio: f64,
}

/// `bench stream`: one agent turn of `megabytes` MB streamed at `deltas_per_second` (40-byte
/// deltas) to `remotes` connected remotes, on a SQLite file (each tick's commit included);
/// compares the engine time per tick at the start and at the end of the turn.
pub fn stream(
    megabytes: usize,
    deltas_per_second: u64,
    remotes: usize,
    out: &mut dyn Write,
    json: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<StreamReport> {
    const DELTA: &str = "streamed text of the agent's long turn.\n"; // 40 bytes
    let scratch = scratch_dir("stream")?;
    let dir = scratch.path().to_path_buf();
    let store = crate::store::SqliteStore::open(&dir.join("roundtable.db"))?;
    let mut w = TickWorld::build_on(Box::new(store), 1, remotes.max(1), &mut |_| {})?;
    // A turn that waits for an answer: the demo agent asks, so the turn stays open while the
    // bench streams into it.
    w.open_turns(&[1])?;
    let per_tick = (deltas_per_second * DEFAULT_TICK_MS / 1000).max(1) as usize;
    let total = megabytes.max(1) * 1024 * 1024;
    let ticks = total.div_ceil(per_tick * DELTA.len());
    let mut times = Vec::with_capacity(ticks);
    for t in 0..ticks {
        for _ in 0..per_tick {
            w.delta("s1", DELTA);
        }
        w.now += DEFAULT_TICK_MS;
        let started = std::time::Instant::now();
        w.engine.tick(w.now);
        times.push(started.elapsed().as_secs_f64() * 1e6);
        progress(t + 1, ticks);
    }
    let tenth = (ticks / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (first, last) = (mean(&times[..tenth]), mean(&times[ticks - tenth..]));
    let report = StreamReport {
        remotes: remotes.max(1),
        deltas_per_second,
        turn_bytes: ticks * per_tick * DELTA.len(),
        first_tenth_tick_us: first,
        last_tenth_tick_us: last,
        ratio: last / first.max(1e-9),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "stream: a {:.1} MB turn at {} deltas/s to {} remotes — {:.1} µs per tick in its first tenth, {:.1} µs in its \
             last ({:.2}×)",
            report.turn_bytes as f64 / 1e6,
            deltas_per_second,
            report.remotes,
            first,
            last,
            report.ratio
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_named_after_their_pid_with_a_random_part() {
        let a = scratch_dir("unit-test").unwrap();
        let b = scratch_dir("unit-test").unwrap();
        let prefix = scratch_prefix("unit-test", std::process::id());
        for dir in [&a, &b] {
            let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(&prefix) && name.len() > prefix.len(), "{name}");
            assert_eq!(scratch_pid(name.strip_prefix(SCRATCH_PREFIX).unwrap()), Some(std::process::id()));
        }
        assert_ne!(a.path(), b.path(), "two dirs of one bench and process do not collide");
        let (path_a, path_b) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop((a, b));
        assert!(!path_a.exists() && !path_b.exists(), "removed when dropped");
    }

    #[test]
    fn the_sweep_reads_the_pid_of_new_and_old_names() {
        assert_eq!(scratch_pid("soak-123.aB3xYz"), Some(123));
        assert_eq!(scratch_pid("startup-1000-123.000777"), Some(123), "a tag with a dash, an all-digit random part");
        assert_eq!(scratch_pid("soak-123"), Some(123), "as older versions named them");
        assert_eq!(scratch_pid("soak"), None);
        assert_eq!(scratch_pid("soak-x.123"), None);
    }
}
