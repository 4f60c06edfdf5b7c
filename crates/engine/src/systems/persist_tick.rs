//! Persist: one transaction per tick, committed before the broadcast releases the tick's frames,
//! so no client ever sees what a crash could lose.
//!
//! Rule: **nothing acknowledged that is not stored.** When a tick's commit fails (disk full, the
//! database gone read-only, a corrupt page), nothing of that tick becomes visible:
//!
//! - its successful replies are withheld with its session events: the requests are not refused
//!   (their writes are kept and will be stored), only their acknowledgement waits until they are
//!   stored — and so are the replays and snapshots of its joins, which go out with their
//!   replies; only its deltas (previews of text stored with the turn) are dropped;
//! - its writes are kept, with the world that made them, and retried (at most once a second) until
//!   the store takes them; only then are the withheld session events released, in order. The
//!   world is never rolled back, so seqs and message ids are never issued twice;
//! - every connection gets a `storage` event (`available: false`), and `available: true` when
//!   writing works again;
//! - meanwhile, requests that would change anything — and reads that would reveal unstored state
//!   (`join_session`, `fetch_history`) — are refused with `storage_unavailable` by the ingest
//!   gate ([`storage_gate`]); agent output and presence changes still happen and wait with the
//!   rest.
//!
//! So `storage_unavailable` ("nothing of this request was kept") is only ever said of a request
//! that was in fact dropped: one the gate refused. A request of the failed tick is either
//! acknowledged once stored, or — when the host dies before that — never answered, and a client
//! that retries it (a `send_message` with the same `client_msg_id` is idempotent) stores it once.

use super::resources::{Clock, Index, Outgoing, Staged, StoreRes};
use crate::ids::ConnId;
use crate::io::{Frame, Framed};
use crate::persist::StoreOp;
use crate::protocol::{ErrorCode, Event, EventFrame, Method, StorageStatus};
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;
use std::sync::Arc;

/// How long clients are told to wait before retrying, and how often the commit is retried.
pub const RETRY_AFTER_MS: u64 = 1_000;

/// The store's health, as the last commit found it.
#[derive(Resource, Default, Debug)]
pub struct StorageHealth {
    /// Set while commits fail.
    pub failing: Option<Failing>,
}

/// What waits for the store to work again.
#[derive(Debug)]
pub struct Failing {
    /// The last error, for people.
    pub error: String,
    /// When the commit was last tried.
    pub last_try_ms: u64,
    /// Every write made since the first failure, in order.
    pub pending: Vec<StoreOp>,
    /// Session and participant frames made since the first failure, released once stored.
    pub withheld: Vec<Outgoing>,
}

impl StorageHealth {
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// Whether a method may run while the store fails: only requests that neither change anything
/// nor reveal what is not stored.
pub fn allowed_while_failing(method: &Method) -> bool {
    matches!(
        method,
        Method::Ping(_) | Method::ListWorkspaces(_) | Method::ListSessions(_) | Method::ReadWorkspaceFile(_)
    )
}

/// The error a request gets while the store fails (used by the ingest gate and for the replies
/// of a failed tick).
pub fn storage_error(id: &serde_json::Value, detail: &str) -> Frame {
    let message = format!(
        "the host cannot store anything right now ({detail}); nothing of this request was kept — retry in a \
         moment (a send_message retried with the same client_msg_id is idempotent)"
    );
    Arc::from(
        serde_json::json!({
            "id": id,
            "error": {"code": ErrorCode::StorageUnavailable, "message": message, "retry_after_ms": RETRY_AFTER_MS}
        })
        .to_string(),
    )
}

/// Replies `storage_unavailable` to a request refused by the gate.
pub fn storage_gate(staged: &mut Staged, health: &StorageHealth, conn: ConnId, id: &serde_json::Value) {
    let detail = health.failing.as_ref().map_or("storage unavailable", |f| f.error.as_str());
    let frame = Framed::same(storage_error(id, detail));
    staged.out.push(Outgoing::Reply { conn, frame, ok: false });
}

/// The `storage` event for every connection.
fn tell_everyone(staged: &mut Staged, index: &Index, status: StorageStatus) {
    let frame =
        Framed::same(Arc::from(EventFrame { session_id: None, seq: None, body: Event::Storage(status) }.to_json()));
    for &conn in index.conns.keys() {
        staged.out.push(Outgoing::ConnEvent { conn, frame: frame.clone() });
    }
}

/// The frames of a tick whose writes are not stored: session and participant frames are kept
/// for later; previews dropped; with `failed_tick` (the tick whose commit failed) successful
/// replies, and the replays and snapshots of its joins, are kept for later too, in order with the
/// events (later ticks' replays and snapshots are dropped: those joins were refused): what they
/// acknowledge is stored with the retry, so they are sent then — never refused. Later ticks only
/// answer what the gate let through: reads that reveal nothing unstored.
fn withhold(staged: Vec<Outgoing>, failed_tick: bool, withheld: &mut Vec<Outgoing>) -> Vec<Outgoing> {
    let mut now = Vec::new();
    for out in staged {
        match out {
            // The failed tick's successes acknowledge what the retry stores: they wait for it.
            Outgoing::Reply { ok: true, .. } if failed_tick => withheld.push(out),
            // Errors (nothing happened) and connection events go out as they are.
            Outgoing::Reply { .. } | Outgoing::ConnEvent { .. } => now.push(out),
            // The failed tick's replays and snapshots belong to joins whose replies are held:
            // they wait with them, in order (dropping them lost what those clients missed).
            Outgoing::Snapshot { .. } | Outgoing::Replay { .. } if failed_tick => withheld.push(out),
            // Later ticks: a replay or a snapshot would show unstored events; the join was refused.
            Outgoing::Snapshot { .. } | Outgoing::Replay { .. } | Outgoing::Delta { .. } => {}
            // (A flush stays before the withheld reply it precedes.)
            Outgoing::Session { .. } | Outgoing::Participant { .. } | Outgoing::FlushStream { .. } => {
                withheld.push(out)
            }
            Outgoing::Close { .. } => now.push(out),
        }
    }
    now
}

pub fn persist(
    mut batch: ResMut<PersistBatch>,
    mut store: ResMut<StoreRes>,
    mut health: ResMut<StorageHealth>,
    mut staged: ResMut<Staged>,
    clock: Res<Clock>,
    index: Res<Index>,
) {
    let ops = std::mem::take(&mut batch.ops);
    if let Some(failing) = health.failing.as_mut() {
        failing.pending.extend(ops);
        if clock.now.saturating_sub(failing.last_try_ms) >= RETRY_AFTER_MS {
            failing.last_try_ms = clock.now;
            // With nothing to write (the failure was found by the idle check), the check again.
            let retried = if failing.pending.is_empty() {
                store.get().check_health()
            } else {
                store.get().commit(&failing.pending)
            };
            match retried {
                Ok(()) => {
                    let failing = health.failing.take().expect("failing");
                    tracing::warn!("the store works again: {} writes committed", failing.pending.len());
                    // Withheld frames first (they are older), then this tick's.
                    let this_tick = std::mem::take(&mut staged.out);
                    staged.out = failing.withheld;
                    staged.out.extend(this_tick);
                    tell_everyone(
                        &mut staged,
                        &index,
                        StorageStatus { available: true, message: String::new(), retry_after_ms: None },
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!("the store still fails: {e}");
                    failing.error = e.to_string();
                }
            }
        }
        // Between retries the files are still watched every tick: a log deleted during an outage
        // must be noticed (and its contents saved by the store) at once, not at the next retry.
        if health.failing.as_ref().is_some_and(|f| f.last_try_ms != clock.now) {
            let _ = store.get().check_health();
        }
        let failing = health.failing.as_mut().expect("still failing");
        let this_tick = std::mem::take(&mut staged.out);
        staged.out = withhold(this_tick, false, &mut failing.withheld);
        return;
    }
    let outcome = if ops.is_empty() { store.get().check_health() } else { store.get().commit(&ops) };
    if let Err(e) = outcome {
        let error = e.to_string();
        if ops.is_empty() {
            tracing::error!("the store cannot take writes: {error}; refusing changes until it can");
        } else {
            tracing::error!("commit of {} writes failed: {error}; nothing of this tick is acknowledged", ops.len());
        }
        let mut withheld = Vec::new();
        let this_tick = std::mem::take(&mut staged.out);
        staged.out = withhold(this_tick, true, &mut withheld);
        tell_everyone(
            &mut staged,
            &index,
            StorageStatus { available: false, message: error.clone(), retry_after_ms: Some(RETRY_AFTER_MS) },
        );
        health.failing = Some(Failing { error, last_try_ms: clock.now, pending: ops, withheld });
    }
}
