//! Session: one agent conversation inside a workspace, with its turn lock and event log.

use crate::ids::{MessageId, ParticipantId, SessionId, WorkspaceId};
use crate::persist::{AgentSpec, MessageRow, SessionRow, HISTORY_TAIL};
use crate::protocol::SessionStatus;
use bevy_ecs::prelude::Component;
use std::collections::{BTreeMap, VecDeque};

#[derive(Component, Clone, Debug)]
pub struct Session {
    pub id: SessionId,
    pub workspace: WorkspaceId,
    pub title: String,
    pub status: SessionStatus,
    pub agent: AgentSpec,
    pub vote_deadline_ms: Option<u64>,
    pub created_at: u64,
    /// Tools the host allowed "always": their requests are approved without asking.
    pub allowed_tools: std::collections::BTreeSet<String>,
    /// What the agent keeps between turns (its conversation); sent with every turn.
    pub agent_memory: crate::persist::AgentMemory,
    /// The agent settings every turn gets (`set_agent_settings`).
    pub agent_settings: crate::protocol::AgentSettings,
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
    /// for remotes.
    pub tail: VecDeque<(u64, crate::io::Framed)>,
}

impl EventLog {
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Events after `since`, or `None` when some were dropped from the tail (snapshot needed).
    pub fn since(&self, since: u64) -> Option<Vec<(u64, crate::io::Framed)>> {
        if since >= self.last_seq() {
            return Some(Vec::new());
        }
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
    pub fn row(&self, lock: &TurnLock, log: &EventLog) -> SessionRow {
        SessionRow {
            id: self.id.clone(),
            workspace: self.workspace.clone(),
            title: self.title.clone(),
            status: self.status,
            turn_holder: lock.holder.clone(),
            turn_id: lock.turn_id,
            next_seq: log.next_seq,
            agent: self.agent.clone(),
            vote_deadline_ms: self.vote_deadline_ms,
            created_at: self.created_at,
            // The streamed text is saved as it grows (`StoreOp::AppendStreamed`), never with
            // the row: rewriting it on every save made a long reply cost quadratic time.
            streamed: String::new(),
            allowed_tools: self.allowed_tools.iter().cloned().collect(),
            agent_memory: self.agent_memory.clone(),
            agent_settings: self.agent_settings.clone(),
        }
    }
}
