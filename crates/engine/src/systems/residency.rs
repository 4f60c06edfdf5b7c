//! Residency: a session's *tails* — its event log's replay tail ([`EventLog::tail`], the last
//! `EVENT_TAIL` events, each masked for remotes) and its latest messages ([`History`]) — are in
//! memory only while someone may need them, so the host's memory and start-up grow with the
//! sessions in use, not with the sessions stored.
//!
//! - **Start**: every session is restored without its tails (`Store::load_without_tails`): its
//!   row, turn lock and next seq (from its last stored event), and whether it has messages
//!   (`History::has_older`). Nothing is resident.
//! - **Load**, the one place ([`ensure_loaded`]): ingest calls [`load_for_request`] for every
//!   request that reads or extends a session's tails ([`tails_needed`]: `join_session` (snapshot
//!   or `since_seq` replay), `fetch_history`, `send_message` and `send_chat` (idempotent
//!   retries, the new message), `fork_session` (the copy)) before routing it: before any system
//!   of the tick touched the session, so the store holds exactly what the world made of it
//!   (the ingest gate refuses these requests while the store fails, so nothing is waiting to be
//!   stored). The load is synchronous, reads one session (`Store::load_tails`), and is
//!   deterministic: the same store gives the same tails. A load that fails answers the request
//!   `storage_unavailable` and nothing else happens; the host runs on. A member's join that
//!   missed nothing needs no tail and loads nothing.
//! - **Without the tails** everything else still works: an event (presence, settings, votes, a
//!   turn ended at restart) gets its seq, is stored and sent; a message is stored. Only the
//!   in-memory copy is skipped — the store has it for the next load.
//! - **Unload** ([`unload_idle`], after the tick's commit, once a second of engine time): a
//!   resident session that no remote's connection has joined, no remote in its grace period belongs to,
//!   with no turn running, for `EngineConfig::unload_idle_ms`, gives its tails back. Never while
//!   the store fails (what it would read back is not all stored yet).
//!
//! The invariant checker holds the two states apart: a session not resident keeps no tail and no
//! message in memory; one that runs a turn or has an open vote is resident.

use super::params::{Directory, TickEnv};
use super::persist_tick::StorageHealth;
use super::resources::{Clock, Index, Staged, StoreRes};
use crate::components::{Connection, EventLog, History, Participant, Presence, Share, TurnLock};
use crate::ids::{ConnId, SessionId};
use crate::io::Framed;
use crate::mask::Masker;
use crate::persist::{SessionTails, StoreError};
use crate::protocol::Method;
use bevy_ecs::prelude::*;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// A `since_seq` at or past this means "nothing missed" whatever happens in the tick.
pub const NOTHING_MISSED: u64 = u64::MAX / 2;

/// How often (engine time) [`unload_idle`] looks for idle sessions.
pub const SWEEP_MS: u64 = 1_000;

/// The session whose tails `method` reads or extends, if any.
pub fn tails_needed(method: &Method) -> Option<&SessionId> {
    match method {
        Method::JoinSession(p) => Some(&p.session_id),
        Method::FetchHistory(p) => Some(&p.session_id),
        Method::SendMessage(p) | Method::SendChat(p) => Some(&p.session_id),
        Method::ForkSession(p) => Some(&p.session_id),
        _ => None,
    }
}

/// Makes `session`'s tails resident for a request of `conn` (marking them used now). A session
/// that does not exist or that the caller cannot see is left alone: its system answers
/// `not_found`, and nothing was read for it.
///
/// A join of a member that can have missed nothing (`since_seq` of [`NOTHING_MISSED`] or more: the
/// host's console follows every session with `u64::MAX`) reads no tail and loads nothing.
pub fn load_for_request(
    world: &mut World,
    conn: ConnId,
    session: &SessionId,
    since_seq: Option<u64>,
) -> Result<(), StoreError> {
    let index = world.resource::<Index>();
    let Some((entity, member)) = (|| {
        let c = world.get::<Connection>(*index.conns.get(&conn)?)?;
        let me = world.get::<Participant>(*index.participants.get(c.participant()?)?)?;
        let share = me.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| world.get::<Share>(e));
        Some((index.session_in_scope(me, share, session)?, me.sessions.contains(session)))
    })() else {
        return Ok(());
    };
    // Only a `since_seq` no session reaches: events emitted later in this tick (a presence
    // change before the join is handled) must not turn "nothing missed" into a replay.
    if member && since_seq.is_some_and(|since| since >= NOTHING_MISSED) {
        return Ok(());
    }
    ensure_loaded(world, entity, session)
}

/// The one load point: reads `session`'s tails from the store unless they are resident, and
/// marks them used now.
pub fn ensure_loaded(world: &mut World, entity: Entity, session: &SessionId) -> Result<(), StoreError> {
    let now = world.resource::<Clock>().now;
    let Some(mut log) = world.get_mut::<EventLog>(entity) else { return Ok(()) };
    if log.resident.is_some() {
        log.resident = Some(now);
        return Ok(());
    }
    let tails = world.resource_mut::<StoreRes>().get().load_tails(session)?;
    let masker = world.resource::<Staged>().masker.clone();
    let (tail, history) = resident_tails(tails, &masker);
    tracing::debug!(%session, events = tail.len(), messages = history.messages.len(), "session tails loaded");
    if let Some(mut log) = world.get_mut::<EventLog>(entity) {
        // The store holds every committed event: the next seq is never behind its last one.
        log.next_seq = log.next_seq.max(tail.back().map_or(1, |(seq, _)| seq + 1));
        log.tail = tail;
        log.resident = Some(now);
    }
    if let Some(mut h) = world.get_mut::<History>(entity) {
        *h = history;
    }
    Ok(())
}

/// Stored tails as they are kept in memory: each event with its remotes' copy (masked once,
/// here), the messages with their idempotency keys.
pub fn resident_tails(tails: SessionTails, masker: &Masker) -> (VecDeque<(u64, Framed)>, History) {
    let tail = tails
        .events
        .into_iter()
        .map(|e| (e.seq, crate::mask_json::framed_from_stored(Arc::<str>::from(e.frame), masker)))
        .collect();
    let mut history = History::default();
    for m in tails.messages {
        history.push(m);
    }
    history.has_older |= tails.has_older;
    (tail, history)
}

/// Gives the tails of a session back to the store (see the module's rule).
pub fn unload(log: &mut EventLog, history: &mut History) {
    log.tail = VecDeque::new();
    log.resident = None;
    let has_messages = history.has_older || !history.messages.is_empty();
    *history = History { has_older: has_messages, ..History::default() };
}

/// The sessions someone uses now: joined by a remote's connection, or belonging to a remote
/// within its grace period (it will be back for its replay). The host's connections do not
/// count: the host is in every session, and its console follows them all.
fn in_use(dir: &Directory) -> BTreeSet<SessionId> {
    let mut used: BTreeSet<SessionId> = BTreeSet::new();
    for c in dir.index.conns.values().filter_map(|&e| dir.conns.get(e).ok()) {
        if c.participant().is_some_and(|p| !p.is_host()) {
            used.extend(c.joined.iter().cloned());
        }
    }
    for (_, pid) in &dir.index.in_grace {
        let Some(p) = dir.index.participants.get(pid).and_then(|&e| dir.participants.get(e).ok()) else { continue };
        if matches!(p.presence, Presence::Grace { .. }) && !pid.is_host() {
            used.extend(p.sessions.iter().cloned());
        }
    }
    used
}

/// After the tick's commit: unloads the tails of sessions idle for `unload_idle_ms`.
pub fn unload_idle(
    env: TickEnv,
    dir: Directory,
    health: Res<StorageHealth>,
    mut sessions: Query<(&TurnLock, &mut EventLog, &mut History)>,
    mut next_sweep: Local<u64>,
) {
    let now = env.clock.now;
    if health.is_failing() || now < *next_sweep {
        return;
    }
    *next_sweep = now + SWEEP_MS;
    let used = in_use(&dir);
    for (sid, &e) in dir.index.sessions.iter() {
        let Ok((lock, mut log, mut history)) = sessions.get_mut(e) else { continue };
        let Some(last) = log.resident else { continue };
        if used.contains(sid) || lock.holder.is_some() {
            log.resident = Some(now);
        } else if now.saturating_sub(last) >= env.config.unload_idle_ms {
            tracing::debug!(session = %sid, "session tails unloaded (idle)");
            unload(&mut log, &mut history);
        }
    }
}
