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
    let report = run_scenario(sc, &RunOptions { seed: None, ignore_expectations: true, ..Default::default() });
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
}

/// Runs a benchmark and writes its report (figures and the ratio) to `out`.
pub fn run(options: &BenchOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    match options.kind {
        BenchKind::Fanout => {
            let clients = options.clients.max(1);
            let (reference, ref_engine, ref_frames) = measure(&fanout_scenario(1, options.ticks))?;
            let (measured, engine, frames) = measure(&fanout_scenario(clients, options.ticks))?;
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
    use crate::ids::{MessageId, SessionId, WorkspaceId};
    use crate::persist::{AgentSpec, MessageRow, SessionRow, Store, StoreOp, WorkspaceRow};
    let mut store = crate::store::SqliteStore::open(path)?;
    let ws = WorkspaceId::nth(1);
    let session = |n: u64, next_seq: u64| SessionRow {
        id: SessionId::nth(n),
        workspace: ws.clone(),
        title: format!("session {n}"),
        status: crate::protocol::SessionStatus::Idle,
        turn_holder: None,
        turn_id: 0,
        next_seq,
        agent: AgentSpec::demo(),
        vote_deadline_ms: None,
        created_at: 0,
        streamed: String::new(),
        allowed_tools: Vec::new(),
    };
    store.commit(&[
        StoreOp::PutWorkspace(WorkspaceRow {
            id: ws.clone(),
            name: "bench".into(),
            dir: ".".into(),
            agent: AgentSpec::demo(),
        }),
        StoreOp::PutSession(session(1, messages as u64 + 1)),
        StoreOp::PutSession(session(2, reference as u64 + 1)),
    ])?;
    let mut id = 0u64;
    for (sid, count) in [(1u64, messages), (2, reference)] {
        let mut batch = Vec::with_capacity(20_000);
        for seq in 1..=count as u64 {
            id += 1;
            batch.push(StoreOp::PutMessage(MessageRow {
                id: MessageId::nth(id),
                session: SessionId::nth(sid),
                seq,
                author_id: if seq % 2 == 1 { "host".into() } else { "agent".into() },
                author_name: if seq % 2 == 1 { "Host".into() } else { "Agent".into() },
                text: format!("message {seq}: the quick brown fox jumps over the lazy dog, then checks the tests"),
                client_msg_id: (seq % 2 == 1).then(|| format!("c{seq}")),
                created_at: seq,
            }));
            if batch.len() == 20_000 {
                store.commit(&batch)?;
                batch.clear();
            }
        }
        store.commit(&batch)?;
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
    let dir = std::env::temp_dir().join(format!("roundtable-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let db = dir.join("roundtable.db");
    if !json {
        writeln!(out, "building a database with {messages} messages…")?;
    }
    build_history_db(&db, messages, reference)?;

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
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
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

/// Removes a directory when dropped.
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl RemoveOnDrop {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn to_path_buf(&self) -> std::path::PathBuf {
        self.0.clone()
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
