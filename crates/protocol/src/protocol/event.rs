//! Events (host → client): `{"event": NAME, "session_id": "s1"?, "seq": N?, "payload": {...}}`.
//!
//! Session events that change state carry `seq` (contiguous per session, starting at 1) and are
//! committed to SQLite before they are sent. Connection-level events (lobby, resync, agent text
//! previews, snapshots) carry no `seq`.

use super::request::{PresenceState, Role, RosterEntry, SessionInfo, SessionStatus};
use crate::ids::{MessageId, ParticipantId, SessionId, VoteId};
use serde::{Deserialize, Serialize};

/// A full event frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub body: Event,
}

impl EventFrame {
    /// Serialises to the wire text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }
}

/// Every event with its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "payload", rename_all = "snake_case")]
pub enum Event {
    // ---- session events (seq'd, persisted) ----
    /// A chat message from a participant, or the agent's reply (`author_id` = `agent`).
    Message(MessageEvent),
    /// Room chat: a message to the people in the session, never to the agent (`room: true`).
    Chat(MessageEvent),
    /// Someone took the turn; the agent starts working on their message.
    TurnStarted(TurnStarted),
    /// The turn is over and the lock is free.
    TurnEnded(TurnEnded),
    /// A participant entered the session.
    ParticipantJoined(RosterEntry),
    /// A participant left the session (explicitly, gone past grace, or kicked).
    ParticipantLeft(ParticipantLeft),
    /// Presence changed (connected / reconnecting / gone).
    PresenceChanged(PresenceChanged),
    /// The host muted or unmuted someone.
    ParticipantMuted(ParticipantMuted),
    /// Someone's display name changed (the host renamed itself in its settings).
    ParticipantRenamed(ParticipantRenamed),
    /// A plan approval, question or tool permission vote opened.
    VoteOpened(VoteOpened),
    /// Someone voted; shows progress (answers of question votes stay hidden until resolution).
    VoteProgress(VoteProgress),
    /// A vote resolved. Exactly once per vote.
    VoteResolved(VoteResolved),
    /// Title or status changed.
    SessionUpdated(SessionUpdated),
    /// The host cleared the history; clients drop what they have and refetch with `join_session`.
    HistoryReplaced(HistoryReplaced),

    // ---- connection events (no seq) ----
    /// Streamed agent text (preview). The authoritative text arrives as the agent's `message`.
    AgentDelta(AgentDelta),
    /// Full state of a session, sent after `join_session` when replay is not possible.
    Snapshot(Snapshot),
    /// Your outbox overflowed: rejoin with `since_seq = last_seq` to catch up; nothing is lost.
    ResyncRequired(ResyncRequired),
    /// Lobby: the host admitted you (`admitted`) or refused you (`refused`).
    Admission(AdmissionEvent),
    /// The host is closing this connection (revoked, kicked, expired, shutdown).
    Closing(Closing),
    /// To the host: someone is waiting in the lobby, or was admitted/refused.
    Lobby(LobbyEvent),
    /// The host cannot store (`available: false`): nothing new is acknowledged until it can
    /// again (`available: true`).
    Storage(StorageStatus),
    /// Someone in the session is typing (a prompt or room chat). Ephemeral: never stored or
    /// replayed; at most one per person per session every 2 s. Show "Ann is typing…" until a
    /// message or chat from them arrives, or for a few seconds.
    Typing(TypingEvent),
}

impl Event {
    /// The wire name of the event.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::Chat(_) => "chat",
            Event::TurnStarted(_) => "turn_started",
            Event::TurnEnded(_) => "turn_ended",
            Event::ParticipantJoined(_) => "participant_joined",
            Event::ParticipantLeft(_) => "participant_left",
            Event::PresenceChanged(_) => "presence_changed",
            Event::ParticipantMuted(_) => "participant_muted",
            Event::ParticipantRenamed(_) => "participant_renamed",
            Event::VoteOpened(_) => "vote_opened",
            Event::VoteProgress(_) => "vote_progress",
            Event::VoteResolved(_) => "vote_resolved",
            Event::SessionUpdated(_) => "session_updated",
            Event::HistoryReplaced(_) => "history_replaced",
            Event::AgentDelta(_) => "agent_delta",
            Event::Snapshot(_) => "snapshot",
            Event::ResyncRequired(_) => "resync_required",
            Event::Admission(_) => "admission",
            Event::Closing(_) => "closing",
            Event::Lobby(_) => "lobby",
            Event::Storage(_) => "storage",
            Event::Typing(_) => "typing",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub message_id: MessageId,
    /// `agent` for agent replies.
    pub author_id: String,
    pub author_name: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// Room chat (to the people, not the agent): present and `true` only then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room: bool,
    /// When the host stored it: ms since the Unix epoch on the host's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnStarted {
    pub turn_id: u64,
    pub holder_id: ParticipantId,
    pub holder_name: String,
}

/// Why a turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEndReason {
    Completed,
    Failed,
    Cancelled,
    HolderGone,
    AgentDied,
}

impl TurnEndReason {
    /// The wire name, e.g. `holder_gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnEndReason::Completed => "completed",
            TurnEndReason::Failed => "failed",
            TurnEndReason::Cancelled => "cancelled",
            TurnEndReason::HolderGone => "holder_gone",
            TurnEndReason::AgentDied => "agent_died",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnEnded {
    pub turn_id: u64,
    pub holder_id: ParticipantId,
    pub reason: TurnEndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    pub participant_id: ParticipantId,
    /// `left`, `gone`, `kicked` or `refused`.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChanged {
    pub participant_id: ParticipantId,
    pub presence: PresenceState,
    pub connections: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantMuted {
    pub participant_id: ParticipantId,
    pub muted: bool,
}

/// What a vote decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VoteSubject {
    /// Approve or deny the agent's plan. `on_approval`, when the agent says, is what approving
    /// lets it do next (e.g. which file edits it may then make without another vote).
    Plan {
        plan: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_approval: Option<String>,
    },
    /// Answer the agent's questions.
    Question { questions: Vec<Question> },
    /// Allow or deny one tool use (decided by the host).
    Tool { tool: String, input: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_select: bool,
}

/// Who decides a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// Every required voter (consensus).
    Consensus,
    /// The turn holder alone (share not consensus_required) — the host may always decide.
    Holder,
    /// The host alone.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteOpened {
    pub vote_id: VoteId,
    #[serde(flatten)]
    pub subject: VoteSubject,
    pub decided_by: DecidedBy,
    /// Required voters, sorted by id.
    pub required: Vec<ParticipantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteProgress {
    pub vote_id: VoteId,
    pub required: Vec<ParticipantId>,
    pub approved: Vec<ParticipantId>,
    pub denied: Vec<ParticipantId>,
    pub answered: Vec<ParticipantId>,
    pub pending: Vec<ParticipantId>,
}

/// Final result of a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteOutcome {
    Approved,
    Denied,
    Answered,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResolved {
    pub vote_id: VoteId,
    pub outcome: VoteOutcome,
    /// Deny reasons (`Name: reason` lines) or `timed out`, `host restarted`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Merged answers of a question vote, one per question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// Who resolved it: `consensus`, `holder`, `host`, `allow_list`, `deadline` or `system`.
    pub resolved_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUpdated {
    pub title: String,
    pub status: SessionStatus,
    /// The agent settings every turn gets from now on (always present; `{}`: defaults).
    #[serde(default)]
    pub agent_settings: crate::protocol::AgentSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReplaced {
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDelta {
    pub turn_id: u64,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub session: SessionInfo,
    pub roster: Vec<RosterEntry>,
    /// The latest messages of the session (at most 200 and 256 KiB of text), oldest first,
    /// each with its seq. Older ones: `fetch_history` with `before_seq` = the first one's seq.
    pub messages: Vec<HistoryMessage>,
    /// Whether the session has messages older than the first one here.
    #[serde(default)]
    pub has_older: bool,
    /// Open votes.
    pub votes: Vec<VoteOpened>,
    /// Text the agent has streamed so far in the running turn.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub streaming_text: String,
    /// Seq of the last event reflected in this snapshot.
    pub last_seq: u64,
}

/// A message in a snapshot or a history page: the `message` event's body plus its seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub seq: u64,
    #[serde(flatten)]
    pub message: MessageEvent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequired {
    /// Last seq delivered to you before the overflow.
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionEvent {
    pub admission: super::Admission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRenamed {
    pub participant_id: ParticipantId,
    pub display_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub participant_id: ParticipantId,
    pub display_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyEvent {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub share_id: crate::ids::ShareId,
    pub admission: super::Admission,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Whether the host can store (and so acknowledge) again.
    pub available: bool,
    /// What went wrong, for people (empty when available).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When to try again, while unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closing {
    /// `revoked`, `kicked`, `expired`, `auth_timeout`, `refused`, `shutdown`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_documented_envelope() {
        let f = EventFrame {
            session_id: Some(SessionId::nth(1)),
            seq: Some(4),
            body: Event::TurnStarted(TurnStarted {
                turn_id: 2,
                holder_id: ParticipantId::nth(1),
                holder_name: "Ann".into(),
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["event"], "turn_started");
        assert_eq!(v["seq"], 4);
        assert_eq!(v["session_id"], "s1");
        assert_eq!(v["payload"]["holder_name"], "Ann");
        let back: EventFrame = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn vote_opened_flattens_its_subject() {
        let f = EventFrame {
            session_id: Some(SessionId::nth(1)),
            seq: Some(9),
            body: Event::VoteOpened(VoteOpened {
                vote_id: VoteId::nth(1),
                subject: VoteSubject::Plan { plan: "1. do it".into(), on_approval: None },
                decided_by: DecidedBy::Consensus,
                required: vec![ParticipantId::host()],
                deadline_ms: None,
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["payload"]["kind"], "plan");
        assert_eq!(v["payload"]["plan"], "1. do it");
        assert_eq!(serde_json::from_value::<EventFrame>(v).unwrap(), f);
    }
}
