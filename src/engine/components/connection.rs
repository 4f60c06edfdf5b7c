//! Connection: one transport connection with its bounded outbox and rate-limit bucket.

use crate::engine::io::{Frame, FrameSink};
use crate::ids::{ConnId, ParticipantId, SessionId};
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
    /// Being closed; ignores further input.
    Closing,
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
    /// A streamed agent text delta (may be merged with the next one). `stale` is set when text
    /// was merged in: the frame is rebuilt once, when it is offered to the transport.
    Delta { session: SessionId, turn_id: u64, text: String, stale: bool },
}

#[derive(Clone, Debug)]
pub struct OutFrame {
    pub frame: Frame,
    pub kind: OutKind,
}

/// Frames waiting to be taken by the transport. Bounded: see [`Outbox::CAPACITY`].
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    pub queue: VecDeque<OutFrame>,
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
