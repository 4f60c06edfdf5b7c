//! Connection: one transport connection with its bounded outbox and rate-limit bucket.

use crate::ids::{ConnId, ParticipantId, SessionId};
use crate::io::{Frame, FrameSink};
use bevy_ecs::prelude::Component;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Authentication state of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthState {
    /// Must authenticate before `deadline` (ms).
    Pending { deadline: u64 },
    /// Authenticated as this participant.
    Authenticated(ParticipantId),
    /// Being closed; ignores further input. Keeps the participant it was authenticated as, so
    /// that its close starts that participant's grace period like any other lost connection.
    Closing(Option<ParticipantId>),
}

impl AuthState {
    /// The state of this connection once it is being closed.
    pub fn closing(&self) -> AuthState {
        match self {
            AuthState::Authenticated(p) => AuthState::Closing(Some(p.clone())),
            AuthState::Closing(p) => AuthState::Closing(p.clone()),
            AuthState::Pending { .. } => AuthState::Closing(None),
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self, AuthState::Closing(_))
    }

    /// The participant this connection belongs (or belonged, while closing) to.
    pub fn owner(&self) -> Option<&ParticipantId> {
        match self {
            AuthState::Authenticated(p) | AuthState::Closing(Some(p)) => Some(p),
            _ => None,
        }
    }
}

/// Token bucket for per-connection request rate limiting.
#[derive(Clone, Debug, PartialEq)]
pub struct RateBucket {
    pub tokens: f64,
    pub last_ms: u64,
}

impl RateBucket {
    /// Burst size.
    pub const CAPACITY: f64 = 40.0;
    /// Refill per second.
    pub const PER_SEC: f64 = 20.0;

    pub fn new(now: u64) -> Self {
        Self { tokens: Self::CAPACITY, last_ms: now }
    }

    /// Takes one token; false when empty.
    pub fn take(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * Self::PER_SEC).min(Self::CAPACITY);
        self.last_ms = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What an outbox entry is, for coalescing and resync bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutKind {
    /// A response or connection-level event.
    Direct,
    /// A seq'd session event.
    Session { session: SessionId, seq: u64 },
    /// A session's snapshot: a newer one for the same session replaces it while it waits, so
    /// repeated joins from a connection that does not read cannot pile snapshots up.
    Snapshot { session: SessionId },
    /// A streamed agent text delta (may be merged with the next one). `stale` is set when text
    /// was merged in: the frame is rebuilt once, when it is offered to the transport.
    Delta { session: SessionId, turn_id: u64, text: String, stale: bool },
}

#[derive(Clone, Debug)]
pub struct OutFrame {
    pub frame: Frame,
    pub kind: OutKind,
}

impl OutFrame {
    /// Bytes this entry holds for its connection (a waiting delta: its merged text too).
    pub fn bytes(&self) -> usize {
        match &self.kind {
            OutKind::Delta { text, stale: true, .. } => self.frame.len() + text.len(),
            _ => self.frame.len(),
        }
    }
}

/// Frames waiting to be taken by the transport. Bounded in frames ([`Outbox::CAPACITY`]) and in
/// bytes ([`Outbox::MAX_BYTES`]): a client that stops reading costs the host a bounded amount of
/// memory, however large the frames.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// Read it freely; change it only through [`Outbox::push`], [`Outbox::pop_front`],
    /// [`Outbox::retain`] and [`Outbox::grow_back_delta`], which keep [`Outbox::bytes`] right.
    pub queue: VecDeque<OutFrame>,
    /// Bytes held by `queue`.
    pub bytes: usize,
    /// Sessions whose events are suspended until the client rejoins; value = last delivered seq.
    pub resync: BTreeMap<SessionId, u64>,
    /// Last seq handed to the transport, per session.
    pub delivered: BTreeMap<SessionId, u64>,
    /// Highest seq queued (or replayed) per session; later duplicates are skipped.
    pub queued: BTreeMap<SessionId, u64>,
}

impl Outbox {
    /// Most frames queued for one connection before it must resync.
    pub const CAPACITY: usize = 256;
    /// Capacity an emptied queue keeps.
    const KEPT_CAPACITY: usize = 8;
    /// Default for `EngineConfig::outbox_max_bytes`: most bytes of session events and deltas
    /// queued for one connection before it must resync. Responses may take it up to twice this;
    /// beyond, the connection is closed (`too_slow`).
    pub const MAX_BYTES: usize = 4 * 1024 * 1024;

    /// Whether `extra` more bytes of session traffic still fit under `max_bytes`.
    pub fn fits(&self, extra: usize, max_bytes: usize) -> bool {
        self.queue.len() < Self::CAPACITY && self.bytes + extra <= max_bytes
    }

    /// Whether the connection stopped reading even its responses (frames or bytes at twice the
    /// bounds): it is closed.
    pub fn hopeless(&self, max_bytes: usize) -> bool {
        self.queue.len() > 2 * Self::CAPACITY || self.bytes > 2 * max_bytes
    }

    pub fn push(&mut self, out: OutFrame) {
        self.bytes += out.bytes();
        self.queue.push_back(out);
    }

    pub fn pop_front(&mut self) -> Option<OutFrame> {
        let out = self.queue.pop_front()?;
        self.bytes -= out.bytes();
        // A burst (a join's replay, a slow reader catching up) must not leave its capacity
        // behind in every connection that once had one.
        if self.queue.is_empty() && self.queue.capacity() > Self::KEPT_CAPACITY {
            self.queue.shrink_to(Self::KEPT_CAPACITY);
        }
        Some(out)
    }

    pub fn retain(&mut self, keep: impl FnMut(&OutFrame) -> bool) {
        self.queue.retain(keep);
        self.bytes = self.queue.iter().map(OutFrame::bytes).sum();
    }

    /// Appends `more` to the delta at the back of the queue if it is one of `session`'s turn
    /// `turn_id`; returns whether it did.
    pub fn grow_back_delta(&mut self, session: &SessionId, turn_id: u64, more: &str) -> bool {
        let Some(back) = self.queue.back_mut() else { return false };
        let before = back.bytes();
        let OutKind::Delta { session: s, turn_id: t, text, stale } = &mut back.kind else { return false };
        // A merged delta stays within the delta bound (docs/PROTOCOL.md §1.3).
        let fits = || {
            crate::protocol::json_len(text) + crate::protocol::json_len(more) <= crate::protocol::MAX_DELTA_JSON_BYTES
        };
        if s != session || *t != turn_id || !fits() {
            return false;
        }
        text.push_str(more);
        *stale = true;
        self.bytes = self.bytes - before + back.bytes();
        true
    }

    /// Rebuilds the front delta's frame from its merged text (once, when it is offered).
    pub fn refresh_front(&mut self, rebuild: impl FnOnce(&SessionId, u64, &str) -> Frame) {
        let Some(front) = self.queue.front_mut() else { return };
        let before = front.bytes();
        if let OutKind::Delta { session, turn_id, text, stale: stale @ true } = &mut front.kind {
            front.frame = rebuild(session, *turn_id, text);
            *stale = false;
            self.bytes = self.bytes - before + front.bytes();
        }
    }
}

#[derive(Component)]
pub struct Connection {
    pub id: ConnId,
    /// Source address (`ip:port`, or a label on the memory transport).
    pub addr: String,
    pub auth: AuthState,
    pub bucket: RateBucket,
    pub outbox: Outbox,
    pub sink: Arc<dyn FrameSink>,
    /// The host's own in-process connection.
    pub is_host: bool,
    /// Sessions this connection has joined (`join_session`). Session events reach a connection
    /// only after it joined, so a resumed connection gets exactly its replay, then live events.
    pub joined: std::collections::BTreeSet<SessionId>,
}

impl Connection {
    pub fn participant(&self) -> Option<&ParticipantId> {
        match &self.auth {
            AuthState::Authenticated(p) => Some(p),
            _ => None,
        }
    }
}
