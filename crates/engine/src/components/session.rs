//! Session: one agent conversation inside a workspace, with its turn lock and event log.

use crate::ids::{MessageId, ParticipantId};
use crate::persist::{MessageRow, SessionRecord, SessionRow, HISTORY_TAIL};
use bevy_ecs::prelude::Component;
use std::collections::{BTreeMap, VecDeque};

/// A session entity's own stored fields ([`SessionRecord`], the one definition the store shares;
/// the session's other stored fields live in its [`TurnLock`] and [`EventLog`]). Systems read and
/// write them through `Deref` (`session.title = ..`), bevy's idiom for a newtype component.
#[derive(Component, Clone, Debug)]
pub struct Session(pub SessionRecord);

impl std::ops::Deref for Session {
    type Target = SessionRecord;
    fn deref(&self) -> &SessionRecord {
        &self.0
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut SessionRecord {
        &mut self.0
    }
}

/// The turn lock. `holder` is `Some` exactly while a turn runs.
#[derive(Component, Clone, Debug, Default)]
pub struct TurnLock {
    pub holder: Option<ParticipantId>,
    /// Id of the running turn, or of the last one.
    pub turn_id: u64,
    /// Text streamed by the agent in the running turn.
    pub streamed: String,
    /// Whether the share of the holder requires consensus (captured at turn start).
    pub consensus: bool,
}

/// Sequence numbers and the in-memory tail of the session's event log (for `since_seq` replay).
#[derive(Component, Clone, Debug, Default)]
pub struct EventLog {
    /// Seq of the next event (first event is 1).
    pub next_seq: u64,
    /// Most recent events `(seq, frame)`, at most `persist::EVENT_TAIL`, each already masked
    /// for remotes. Empty while the session's tails are not resident.
    pub tail: VecDeque<(u64, crate::io::Framed)>,
    /// `Some(when they were last needed, engine time)` while the session's tails — this `tail`
    /// and its [`History`]'s messages — are in memory; `None` while they are only in the store
    /// (`systems::residency`). Events and messages of a session not resident are stored and
    /// sent as usual, only not kept in memory.
    pub resident: Option<u64>,
}

impl EventLog {
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Events after `since`, or `None` when some were dropped from the tail (snapshot needed).
    /// Only meaningful while the tails are resident (joins load them first).
    pub fn since(&self, since: u64) -> Option<Vec<(u64, crate::io::Framed)>> {
        if since >= self.last_seq() {
            return Some(Vec::new());
        }
        debug_assert!(self.resident.is_some(), "replay from a log whose tail is not loaded");
        let first = self.tail.front().map(|(s, _)| *s).unwrap_or(self.next_seq);
        if since + 1 < first {
            return None;
        }
        Some(self.tail.iter().filter(|(s, _)| *s > since).cloned().collect())
    }
}

/// The latest messages of the session (at most [`HISTORY_TAIL`]) and their idempotency keys.
/// Older messages live only in the store and are read page by page, so memory stays bounded
/// however long the session gets.
#[derive(Component, Clone, Debug, Default)]
pub struct History {
    /// The tail, oldest first.
    pub messages: VecDeque<MessageRow>,
    /// Whether the store has messages older than the tail.
    pub has_older: bool,
    /// (author, client_msg_id) → (message id, seq, text) for idempotent retries of the tail's
    /// messages; a retry of an older one is looked up in the store.
    pub client_ids: BTreeMap<(ParticipantId, String), (MessageId, u64, String)>,
}

impl History {
    /// Appends a message, dropping the oldest one (and its idempotency key) past the tail size.
    pub fn push(&mut self, row: MessageRow) {
        if let Some(cmid) = &row.client_msg_id {
            self.client_ids.insert(
                (ParticipantId(row.author_id.clone()), cmid.clone()),
                (row.id.clone(), row.seq, row.text.clone()),
            );
        }
        self.messages.push_back(row);
        while self.messages.len() > HISTORY_TAIL {
            if let Some(old) = self.messages.pop_front() {
                if let Some(cmid) = old.client_msg_id {
                    self.client_ids.remove(&(ParticipantId(old.author_id), cmid));
                }
            }
            self.has_older = true;
        }
    }

    /// Seq of the oldest message in memory.
    pub fn first_seq(&self) -> Option<u64> {
        self.messages.front().map(|m| m.seq)
    }

    /// Forgets everything (the session was cleared).
    pub fn clear(&mut self) {
        *self = History::default();
    }
}

impl Session {
    /// The row to store: the session's record with its turn lock's and event log's parts.
    pub fn row(&self, lock: &TurnLock, log: &EventLog) -> SessionRow {
        SessionRow {
            session: self.0.clone(),
            turn_holder: lock.holder.clone(),
            turn_id: lock.turn_id,
            next_seq: log.next_seq,
            // The streamed text is saved as it grows (`StoreOp::AppendStreamed`), never with
            // the row: rewriting it on every save made a long reply cost quadratic time.
            streamed: String::new(),
        }
    }
}
