//! `roundtable bench auth`: what authenticating costs the engine when many participants are
//! stored.
//!
//! Two engines in one process, each on an in-memory SQLite store holding one collaborative share
//! and stored participants of it, all within their grace period after a restart (so each can
//! resume and each one's name is taken): `--participants N` in the measured one, 10 in the
//! reference. In rounds that alternate between the two, `BATCH` new connections authenticate in
//! one tick — first with the resume tokens of stored participants, then as newcomers through
//! the share's token (their names checked against everyone present) — then close.
//! The report gives the median engine time per authentication over the rounds and its ratio to
//! the reference: 1.0 when the cost does not grow with everyone ever stored. Every
//! authentication must succeed (checked in the replies), or the bench fails.

use crate::engine::{Engine, EngineConfig, Frame, FrameSink, Inbound};
use crate::ids::{ConnId, ParticipantId, ShareId, WorkspaceId};
use crate::persist::{AgentSpec, ParticipantRecord, ParticipantRow, ShareRow, Store, StoreOp, WorkspaceRow};
use crate::protocol::{Admission, Role};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Authentications per round (one tick).
const BATCH: usize = 20;
/// Rounds per side and kind.
const ROUNDS: usize = 15;
/// Participants stored in the reference engine.
const REFERENCE: usize = 10;
/// The share's token.
const SHARE_TOKEN: &str = "bench-share-token-0123456789abcdef0123456789";

/// What `bench auth` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuthReport {
    pub stored: usize,
    pub reference_stored: usize,
    pub per_round: usize,
    pub rounds: usize,
    /// Median engine time per resume (`resume_token`), µs, and the min–max over rounds.
    pub resume_us: f64,
    pub resume_spread_us: (f64, f64),
    pub reference_resume_us: f64,
    pub resume_ratio: f64,
    /// Median engine time per newcomer (share token, a new name), µs.
    pub pair_us: f64,
    pub pair_spread_us: (f64, f64),
    pub reference_pair_us: f64,
    pub pair_ratio: f64,
}

/// The resume token of stored participant `n`.
fn resume_token(n: usize) -> String {
    format!("bench-resume-token-{n:08}-0123456789abcdef0123456789")
}

/// Keeps the replies (to check that every authentication succeeded).
#[derive(Default)]
struct Replies(Mutex<Vec<Frame>>);

impl FrameSink for Replies {
    fn try_send(&self, frame: &Frame) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(frame.clone());
        true
    }
    fn close(&self, _reason: &str) {}
}

/// One engine with `stored` stored participants.
struct AuthWorld {
    engine: Engine,
    stored: usize,
    now: u64,
    next_conn: u64,
    next_stored: usize,
    sink: Arc<Replies>,
}

impl AuthWorld {
    fn build(stored: usize, progress: &mut dyn FnMut(usize)) -> anyhow::Result<AuthWorld> {
        let mut store = crate::store::SqliteStore::open_in_memory()?;
        let ws = WorkspaceId::nth(1);
        let share = ShareId::nth(1);
        store.commit(&[
            StoreOp::PutWorkspace(WorkspaceRow {
                id: ws.clone(),
                name: "bench".into(),
                dir: ".".into(),
                agent: AgentSpec::demo(),
            }),
            StoreOp::PutShare(ShareRow {
                id: share.clone(),
                label: "bench".into(),
                token_hash: crate::token::hash(SHARE_TOKEN),
                workspaces: [ws].into(),
                collaborative: true,
                consensus_required: false,
                admission_required: false,
                role: Role::Participant,
                expires_at: None,
                max_uses: None,
                uses: 0,
                revoked: false,
                created_at: 0,
                vote_deadline_ms: None,
            }),
        ])?;
        let mut batch = Vec::with_capacity(20_000);
        for n in 1..=stored {
            batch.push(StoreOp::PutParticipant(ParticipantRow {
                participant: ParticipantRecord {
                    id: ParticipantId::nth(n as u64),
                    display_name: format!("Person {n}"),
                    role: Role::Participant,
                    share: Some(share.clone()),
                    muted: false,
                    admission: Admission::Admitted,
                    resume_hash: Some(crate::token::hash(&resume_token(n))),
                    sessions: Default::default(),
                    read: Default::default(),
                },
                gone: false,
            }));
            if batch.len() == 20_000 || n == stored {
                store.commit(&batch)?;
                batch.clear();
                progress(n);
            }
        }
        let config = EngineConfig {
            check_invariants: false,
            max_connections_per_share: usize::MAX,
            auth_failures_per_minute: usize::MAX,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, Box::new(store))?;
        crate::agent::install_builtin(&mut engine);
        let mut world =
            AuthWorld { engine, stored, now: 1_000, next_conn: 1, next_stored: 0, sink: Default::default() };
        world.tick();
        Ok(world)
    }

    fn tick(&mut self) {
        self.now += 10;
        self.engine.tick(self.now);
    }

    /// One round: `BATCH` connections authenticate in one tick (by resume token, or as
    /// newcomers), then close. Returns the engine time per authentication, µs.
    fn round(&mut self, resume: bool) -> anyhow::Result<f64> {
        let conns: Vec<ConnId> = (0..BATCH).map(|k| ConnId(self.next_conn + k as u64)).collect();
        self.next_conn += BATCH as u64;
        for (k, &conn) in conns.iter().enumerate() {
            let addr = format!("10.0.{}.{}:5000", (conn.0 >> 8) & 255, conn.0 & 255);
            self.engine.sender().send(Inbound::Opened { conn, addr, sink: self.sink.clone() })?;
            let name = format!("Newcomer {}", conn.0);
            let mut params = serde_json::json!({"token": SHARE_TOKEN, "display_name": name});
            if resume {
                self.next_stored = self.next_stored % self.stored + 1;
                params["resume_token"] = resume_token(self.next_stored).into();
            }
            let text = serde_json::json!({"id": k + 1, "method": "authenticate", "params": params}).to_string();
            self.engine.sender().send(Inbound::Frame { conn, text })?;
        }
        self.sink.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.now += 10;
        let started = Instant::now();
        self.engine.tick(self.now);
        let took = started.elapsed();
        let replies = std::mem::take(&mut *self.sink.0.lock().unwrap_or_else(|e| e.into_inner()));
        let wanted = if resume { "\"resumed\":true" } else { "\"resumed\":false" };
        let ok = replies.iter().filter(|f| f.contains(wanted)).count();
        if ok != BATCH {
            let first = replies.iter().find(|f| !f.contains(wanted)).map(|f| f.to_string()).unwrap_or_default();
            anyhow::bail!("{ok} of {BATCH} authentications succeeded with {} stored; one answer: {first}", self.stored);
        }
        for conn in conns {
            self.engine.sender().send(Inbound::Closed { conn })?;
        }
        self.tick();
        Ok(took.as_secs_f64() * 1e6 / BATCH as f64)
    }
}

/// The median and the min–max of `v`.
fn median_spread(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    (median, (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0)))
}

/// `roundtable bench auth --participants N`.
pub fn run(stored: usize, json: bool, out: &mut dyn Write) -> anyhow::Result<AuthReport> {
    let stored = stored.max(REFERENCE);
    let mut bar = super::progress::Progress::new("storing participants", stored as u64, json);
    let mut world = AuthWorld::build(stored, &mut |n| bar.set(n as u64))?;
    drop(bar);
    let mut reference = AuthWorld::build(REFERENCE, &mut |_| {})?;
    let mut measure = |resume: bool| -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let (mut big, mut small) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            big.push(world.round(resume)?);
            small.push(reference.round(resume)?);
        }
        Ok((big, small))
    };
    let (resumes, reference_resumes) = measure(true)?;
    let (pairs, reference_pairs) = measure(false)?;
    let (resume_us, resume_spread_us) = median_spread(resumes);
    let (reference_resume_us, _) = median_spread(reference_resumes);
    let (pair_us, pair_spread_us) = median_spread(pairs);
    let (reference_pair_us, _) = median_spread(reference_pairs);
    let report = AuthReport {
        stored,
        reference_stored: REFERENCE,
        per_round: BATCH,
        rounds: ROUNDS,
        resume_us,
        resume_spread_us,
        reference_resume_us,
        resume_ratio: resume_us / reference_resume_us.max(1e-9),
        pair_us,
        pair_spread_us,
        reference_pair_us,
        pair_ratio: pair_us / reference_pair_us.max(1e-9),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "auth: {stored} stored participants vs {REFERENCE}, {BATCH} per tick, median of {ROUNDS} alternating rounds\n  \
             resume: {:.1} µs (rounds {:.1}–{:.1}) vs {:.1} µs — {:.2}×\n  \
             newcomer: {:.1} µs (rounds {:.1}–{:.1}) vs {:.1} µs — {:.2}×",
            report.resume_us,
            report.resume_spread_us.0,
            report.resume_spread_us.1,
            report.reference_resume_us,
            report.resume_ratio,
            report.pair_us,
            report.pair_spread_us.0,
            report.pair_spread_us.1,
            report.reference_pair_us,
            report.pair_ratio,
        )?;
    }
    Ok(report)
}
