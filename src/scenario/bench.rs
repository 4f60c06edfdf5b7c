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

/// Runs a scenario and returns (ticks per second, frames delivered).
fn measure(sc: &Scenario) -> anyhow::Result<(f64, usize)> {
    let report = run_scenario(sc, &RunOptions { seed: None, ignore_expectations: true, ..Default::default() });
    if report.crashed() {
        anyhow::bail!("benchmark run failed: {}", report.failures.first().map(|f| f.to_string()).unwrap_or_default());
    }
    let frames = report.events.values().map(Vec::len).sum();
    Ok((report.ticks as f64 / report.wall.as_secs_f64().max(1e-9), frames))
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
            let (reference, ref_frames) = measure(&fanout_scenario(1, options.ticks))?;
            let (measured, frames) = measure(&fanout_scenario(clients, options.ticks))?;
            writeln!(out, "fanout reference (1 client):   {reference:>10.0} ticks/s, {ref_frames} events delivered")?;
            writeln!(out, "fanout measured ({clients} clients): {measured:>10.0} ticks/s, {frames} events delivered")?;
            writeln!(
                out,
                "ratio: {:.3} of the reference tick rate for {clients}x the clients ({:.1}x the events)",
                measured / reference,
                frames as f64 / ref_frames.max(1) as f64
            )?;
            Ok(())
        }
    }
}
