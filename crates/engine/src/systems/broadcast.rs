//! Broadcast: releases the tick's staged frames into per-connection bounded outboxes and offers
//! them to the transports.
//!
//! Each event was serialised once (an `Arc<str>` shared by every recipient). A slow consumer
//! never slows the tick or other clients: frames the transport refuses stay in that connection's
//! outbox; consecutive agent deltas there are coalesced; when the outbox still overflows, the
//! session's queued events are dropped and the client gets `resync_required` with its last
//! delivered seq, then catches up with `join_session(since_seq)` — nothing is lost.
//!
//! Secret masking: every frame sent to a remote (live, replayed or in a snapshot) has common
//! secret shapes masked in its strings; the host's own connection gets the original. Both copies
//! are made when the frame is made (`Framed`, `engine::mask_json`: masked while serialising, one
//! allocation when nothing needed masking), so broadcast only picks one. Streamed deltas go
//! through a per-turn `StreamMasker`, so a secret split across chunks is still masked; what it
//! holds back is flushed as a last (masked) delta before the turn's reply and `turn_ended`
//! (`Outgoing::FlushStream`), so a remote's screen never lags them. (Not before a vote: the agent
//! may go on with the secret after it; a late joiner's snapshot leaves the held-back text out too,
//! since its deltas follow.)

use super::resources::*;
use crate::components::*;
use crate::config::EngineConfig;
use crate::ids::{ConnId, SessionId};
use crate::io::Frame;
use crate::mask::{Masker, StreamMasker};
use crate::protocol::{Closing, Event, EventFrame, ResyncRequired};
use bevy_ecs::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The masker and the per-turn stream maskers for agent deltas sent to remotes.
#[derive(Resource)]
pub struct SecretMask {
    pub masker: Masker,
    pub streams: BTreeMap<SessionId, (u64, StreamMasker)>,
    /// Stream maskers of ended turns, reset, for the next turns: building one builds a lazy DFA
    /// cache per pattern, which cost more than masking a short turn.
    pub spare: Vec<StreamMasker>,
}

/// Stream maskers kept for reuse.
const SPARE_STREAMS: usize = 4;

impl SecretMask {
    /// How many bytes at the end of what turn `turn_id` of `session` streamed so far remotes
    /// have not been sent yet (the stream masker holds them back: they may begin a secret).
    pub fn held_back(&self, session: &SessionId, turn_id: u64) -> usize {
        match self.streams.get(session) {
            Some((turn, stream)) if *turn == turn_id => stream.pending_len(),
            _ => 0,
        }
    }
}

fn event_frame(session: Option<SessionId>, body: Event) -> Frame {
    Arc::from(EventFrame { session_id: session, seq: None, body }.to_json())
}

/// Queues a seq'd session event, entering resync on overflow.
fn enqueue_session(outbox: &mut Outbox, max_bytes: usize, session: &SessionId, seq: u64, frame: &Frame) {
    if outbox.resync.contains_key(session) || outbox.queued.get(session).is_some_and(|&q| seq <= q) {
        return;
    }
    outbox.queued.insert(session.clone(), seq);
    if !outbox.fits(frame.len(), max_bytes) {
        let last = outbox.delivered.get(session).copied().unwrap_or(0);
        outbox.retain(|f| match &f.kind {
            OutKind::Session { session: s, .. } | OutKind::Delta { session: s, .. } => s != session,
            OutKind::Direct | OutKind::Snapshot { .. } => true,
        });
        outbox.resync.insert(session.clone(), last);
        outbox.push(OutFrame {
            frame: event_frame(Some(session.clone()), Event::ResyncRequired(ResyncRequired { last_seq: last })),
            kind: OutKind::Direct,
        });
        return;
    }
    outbox.push(OutFrame { frame: frame.clone(), kind: OutKind::Session { session: session.clone(), seq } });
}

/// Queues a delta, merging it into a waiting delta of the same turn (the consumer is behind).
fn enqueue_delta(outbox: &mut Outbox, max_bytes: usize, session: &SessionId, turn_id: u64, text: &str, frame: &Frame) {
    if outbox.resync.contains_key(session) {
        return;
    }
    // Only the text grows here; re-serialising on every merge would be quadratic.
    if outbox.fits(text.len(), max_bytes) && outbox.grow_back_delta(session, turn_id, text) {
        return;
    }
    if !outbox.fits(frame.len(), max_bytes) {
        // Deltas are previews; the authoritative text arrives in the agent's message.
        return;
    }
    outbox.push(OutFrame {
        frame: frame.clone(),
        kind: OutKind::Delta { session: session.clone(), turn_id, text: text.to_string(), stale: false },
    });
}

/// Testing: when set, the tick's frames are dropped instead of sent — as if the process died
/// right after its commit (`Engine::tick_and_crash_after_commit`).
#[derive(Resource, Default)]
pub struct CrashAfterCommit(pub bool);

/// Who receives what: session → its members' connections and participant → its connections,
/// in connection-id order.
#[derive(Default, PartialEq, Debug)]
pub struct Members {
    pub sessions: BTreeMap<SessionId, Vec<Entity>>,
    pub participants: BTreeMap<crate::ids::ParticipantId, Vec<Entity>>,
}

impl Members {
    /// Built from every connection (what the cache must equal).
    fn build(index: &Index, conns: &Query<&mut Connection>, participants: &Query<&Participant>) -> Members {
        let mut m = Members::default();
        for (_, &ce) in index.conns.iter() {
            let Ok(c) = conns.get(ce) else { continue };
            if c.auth.is_closing() {
                continue;
            }
            let Some(pid) = c.participant() else { continue };
            m.participants.entry(pid.clone()).or_default().push(ce);
            let Some(p) = index.participants.get(pid).and_then(|&e| participants.get(e).ok()) else { continue };
            if !p.presence.is_present() {
                continue;
            }
            for s in p.sessions.iter().filter(|s| c.is_host || c.joined.contains(*s)) {
                m.sessions.entry(s.clone()).or_default().push(ce);
            }
        }
        m
    }
}

/// [`Members`] kept from tick to tick, rebuilt only after a membership input changed: a
/// connection or participant added or changed (its outbox and rate bucket are written without
/// change detection), or broadcast itself closing connections. With `check_invariants` every
/// use is compared with a fresh build.
#[derive(Default)]
pub struct MemberCache {
    members: Members,
    /// The map matches the world (false at first: nothing built yet).
    current: bool,
}

/// What tells broadcast that membership may have changed since its last run.
#[derive(bevy_ecs::system::SystemParam)]
pub struct MembershipChanges<'w, 's> {
    participants: Query<'w, 's, (), Changed<Participant>>, // an added one counts as changed
    removed_conns: RemovedComponents<'w, 's, Connection>,
    removed_participants: RemovedComponents<'w, 's, Participant>,
}

impl MembershipChanges<'_, '_> {
    fn any(&mut self) -> bool {
        let removed = self.removed_conns.read().count() + self.removed_participants.read().count() > 0;
        removed || !self.participants.is_empty()
    }
}

/// What releasing the tick's frames reads and writes: who is who, the connections and their
/// outboxes, the secret masks, and what broadcast keeps from tick to tick (connections still
/// holding frames, the membership cache).
#[derive(bevy_ecs::system::SystemParam)]
pub struct Delivery<'w, 's> {
    index: Res<'w, Index>,
    participants: Query<'w, 's, &'static Participant>,
    conns: Query<'w, 's, &'static mut Connection>,
    closed: MessageWriter<'w, ConnClosed>,
    mask: ResMut<'w, SecretMask>,
    config: Res<'w, EngineConfig>,
    /// Connections still holding frames from earlier ticks.
    backlog: Local<'s, BTreeSet<ConnId>>,
    cache: Local<'s, MemberCache>,
    changes: MembershipChanges<'w, 's>,
}

/// This run's bookkeeping: the connections given something (the only ones offered frames: an
/// idle tick touches none) and those to close once their frames were offered.
struct Round {
    touched: BTreeSet<ConnId>,
    closes: Vec<(ConnId, String)>,
}

/// Releases the tick's staged frames, in four steps (each a [`Delivery`] method): bring the
/// membership map up to date, queue every output in its recipients' outboxes, offer the
/// outboxes to the transports, close the connections that asked for it or cannot keep up.
pub fn broadcast(mut staged: ResMut<Staged>, crash: Res<CrashAfterCommit>, mut delivery: Delivery) {
    let staged = std::mem::take(&mut staged.out);
    if crash.0 {
        return; // committed, never sent: the process "died" here
    }
    delivery.refresh_members(&staged);
    let mut round = Round { touched: std::mem::take(&mut *delivery.backlog), closes: Vec::new() };
    for output in staged {
        delivery.queue(&mut round, output);
    }
    delivery.offer(&mut round);
    delivery.close(round.closes);
}

/// The connections of `key` in `map` (none when it has none).
fn members_of<'a, K: Ord>(map: &'a BTreeMap<K, Vec<Entity>>, key: &K) -> &'a [Entity] {
    map.get(key).map(Vec::as_slice).unwrap_or(&[])
}

impl Delivery<'_, '_> {
    /// Session membership → connections, in connection-id order: rebuilt (walking every
    /// connection) only when something it depends on changed and this tick has something for a
    /// session or a participant.
    fn refresh_members(&mut self, staged: &[Outgoing]) {
        // (`is_changed` through the mutable query itself: a second query on connections would
        // conflict with it.)
        if self.changes.any() || self.conns.iter_mut().any(|c| c.is_changed()) {
            self.cache.current = false;
        }
        let fan_out = staged.iter().any(|o| {
            matches!(
                o,
                Outgoing::Session { .. }
                    | Outgoing::Delta { .. }
                    | Outgoing::FlushStream { .. }
                    | Outgoing::Participant { .. }
            )
        });
        if fan_out && !self.cache.current {
            self.cache.members = Members::build(&self.index, &self.conns, &self.participants);
            self.cache.current = true;
        } else if fan_out && self.config.check_invariants {
            let fresh = Members::build(&self.index, &self.conns, &self.participants);
            assert_eq!(self.cache.members, fresh, "broadcast's cached membership is stale");
        }
    }

    /// Queues one staged output in the outbox of each connection it is for.
    fn queue(&mut self, round: &mut Round, out: Outgoing) {
        match out {
            Outgoing::Reply { conn, frame, .. } | Outgoing::ConnEvent { conn, frame } => {
                self.direct(round, conn, frame, OutKind::Direct);
            }
            Outgoing::Snapshot { conn, session, frame } => {
                self.direct(round, conn, frame, OutKind::Snapshot { session });
            }
            Outgoing::Replay { conn, session, seq, frame } => {
                self.direct(round, conn, frame, OutKind::Session { session, seq });
            }
            Outgoing::Session { session, seq, frame } => self.session_event(round, &session, seq, &frame),
            Outgoing::Delta { session, turn_id, text, frame } => self.delta(round, &session, turn_id, &text, &frame),
            Outgoing::FlushStream { session } => self.flush_stream(round, &session),
            Outgoing::Participant { participant, frame } => {
                for &ce in members_of(&self.cache.members.participants, &participant) {
                    if let Ok(mut c) = self.conns.get_mut(ce) {
                        let c = c.bypass_change_detection();
                        let frame = frame.for_conn(c.is_host).clone();
                        round.touched.insert(c.id);
                        c.outbox.push(OutFrame { frame, kind: OutKind::Direct });
                    }
                }
            }
            Outgoing::Close { conn, reason } => {
                if let Some(mut c) = self.index.conns.get(&conn).and_then(|&e| self.conns.get_mut(e).ok()) {
                    let c = c.bypass_change_detection();
                    let frame = event_frame(None, Event::Closing(Closing { reason: reason.clone() }));
                    c.outbox.push(OutFrame { frame, kind: OutKind::Direct });
                    round.touched.insert(conn);
                    round.closes.push((conn, reason));
                }
            }
        }
    }

    /// Queues a frame for one connection; a snapshot replaces one of the same session still queued.
    fn direct(&mut self, round: &mut Round, conn: ConnId, frame: crate::io::Framed, kind: OutKind) {
        let Some(mut c) = self.index.conns.get(&conn).and_then(|&e| self.conns.get_mut(e).ok()) else { return };
        let c = c.bypass_change_detection();
        if let OutKind::Snapshot { session } = &kind {
            c.outbox.retain(|f| !matches!(&f.kind, OutKind::Snapshot { session: s } if s == session));
        }
        let frame = frame.for_conn(c.is_host).clone();
        round.touched.insert(c.id);
        c.outbox.push(OutFrame { frame, kind });
    }

    /// Queues a seq'd session event for every member of the session.
    fn session_event(&mut self, round: &mut Round, session: &SessionId, seq: u64, frame: &crate::io::Framed) {
        let max_bytes = self.config.outbox_max_bytes;
        for &ce in members_of(&self.cache.members.sessions, session) {
            if let Ok(mut c) = self.conns.get_mut(ce) {
                let c = c.bypass_change_detection();
                let frame = frame.for_conn(c.is_host);
                round.touched.insert(c.id);
                enqueue_session(&mut c.outbox, max_bytes, session, seq, frame);
            }
        }
    }

    /// Queues streamed agent text for every member of the session: the original for the host,
    /// what the turn's stream masker lets through for remotes.
    fn delta(&mut self, round: &mut Round, session: &SessionId, turn_id: u64, text: &str, frame: &Frame) {
        let max_bytes = self.config.outbox_max_bytes;
        let SecretMask { masker, streams, spare } = &mut *self.mask;
        let stream =
            streams.entry(session.clone()).or_insert_with(|| (turn_id, spare.pop().unwrap_or_else(|| masker.stream())));
        if stream.0 != turn_id {
            // (A turn that ended without a flush: what it held back is not sent.)
            stream.1.finish();
            stream.0 = turn_id;
        }
        // Held-back text (a possible secret prefix) follows with the next delta, or is
        // flushed (`FlushStream`) before the turn's reply.
        let remote_text = stream.1.feed(text);
        // `text` was cut to the delta bound, but masking can lengthen it: a held-back tail
        // goes out in front of it, a short secret becomes the longer `[masked]`. What
        // remotes get is cut again (PROTOCOL §1.3); nothing when all of it is held back.
        let remote: Vec<(&str, Frame)> = if remote_text == text {
            vec![(text, frame.clone())]
        } else {
            crate::protocol::split_json(&remote_text, crate::protocol::MAX_DELTA_JSON_BYTES, crate::protocol::no_spans)
                .into_iter()
                .map(|piece| {
                    let body = Event::AgentDelta(crate::protocol::AgentDelta { turn_id, text: piece.into() });
                    (piece, event_frame(Some(session.clone()), body))
                })
                .collect()
        };
        for &ce in members_of(&self.cache.members.sessions, session) {
            if let Ok(mut c) = self.conns.get_mut(ce) {
                let c = c.bypass_change_detection();
                round.touched.insert(c.id);
                if c.is_host {
                    enqueue_delta(&mut c.outbox, max_bytes, session, turn_id, text, frame);
                    continue;
                }
                for (piece, piece_frame) in &remote {
                    enqueue_delta(&mut c.outbox, max_bytes, session, turn_id, piece, piece_frame);
                }
            }
        }
    }

    /// Sends remotes, as deltas, what the session's stream masker still holds back, and ends
    /// the stream. The host was sent the original text as it came.
    fn flush_stream(&mut self, round: &mut Round, session: &SessionId) {
        let Some((turn_id, mut stream)) = self.mask.streams.remove(session) else { return };
        let rest = stream.finish();
        if self.mask.spare.len() < SPARE_STREAMS {
            self.mask.spare.push(stream);
        }
        if rest.is_empty() {
            return;
        }
        let max_bytes = self.config.outbox_max_bytes;
        let remotes = members_of(&self.cache.members.sessions, session);
        // Already masked: cuts here split nothing secret.
        for piece in
            crate::protocol::split_json(&rest, crate::protocol::MAX_DELTA_JSON_BYTES, crate::protocol::no_spans)
        {
            let body = Event::AgentDelta(crate::protocol::AgentDelta { turn_id, text: piece.to_string() });
            let frame = event_frame(Some(session.clone()), body);
            for &ce in remotes {
                if let Ok(mut c) = self.conns.get_mut(ce) {
                    let c = c.bypass_change_detection();
                    if !c.is_host {
                        round.touched.insert(c.id);
                        enqueue_delta(&mut c.outbox, max_bytes, session, turn_id, piece, &frame);
                    }
                }
            }
        }
    }

    /// Offers queued frames to the transports, oldest first, for every connection touched;
    /// those left holding frames wait in the backlog for the next run.
    fn offer(&mut self, round: &mut Round) {
        let max_bytes = self.config.outbox_max_bytes;
        for conn in std::mem::take(&mut round.touched) {
            let Some(mut c) = self.index.conns.get(&conn).and_then(|&ce| self.conns.get_mut(ce).ok()) else { continue };
            let c = c.bypass_change_detection();
            while !c.outbox.queue.is_empty() {
                c.outbox.refresh_front(|session, turn_id, text| {
                    let body = Event::AgentDelta(crate::protocol::AgentDelta { turn_id, text: text.to_string() });
                    event_frame(Some(session.clone()), body)
                });
                let front = c.outbox.queue.front().expect("not empty");
                if front.frame.len() > crate::protocol::MAX_HOST_FRAME_BYTES {
                    // Every producer bounds its text (protocol::bounds); this is the proof in tests.
                    assert!(!self.config.check_invariants, "a {}-byte frame exceeds the wire bound", front.frame.len());
                    tracing::error!(bytes = front.frame.len(), "a frame exceeds the documented bound");
                }
                if !c.sink.try_send(&front.frame) {
                    break;
                }
                let sent = c.outbox.pop_front().expect("front exists");
                if let OutKind::Session { session, seq } = sent.kind {
                    let d = c.outbox.delivered.entry(session).or_insert(0);
                    *d = (*d).max(seq);
                }
            }
            if c.outbox.hopeless(max_bytes) && !c.auth.is_closing() {
                // Not even reading responses: give up on this connection (it may resume).
                c.auth = c.auth.closing();
                round.closes.push((c.id, "too_slow".into()));
            }
            if !c.outbox.queue.is_empty() {
                self.backlog.insert(c.id);
            }
        }
    }

    /// Closes connections. The close frame follows what was already accepted; presence is
    /// updated next tick by the connection_closed system, exactly as if the transport had
    /// reported the close.
    fn close(&mut self, closes: Vec<(ConnId, String)>) {
        if !closes.is_empty() {
            self.cache.current = false; // our own changes are not seen by the change queries
        }
        for (conn, reason) in closes {
            if let Some(mut c) = self.index.conns.get(&conn).and_then(|&e| self.conns.get_mut(e).ok()) {
                c.auth = c.auth.closing();
                c.sink.close(&reason);
                self.closed.write(ConnClosed { conn });
            }
        }
    }
}
