//! Requests (client → host) and their results.

use super::{ErrorCode, ProtocolError, MAX_FRAME_BYTES};
use crate::ids::{ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The request envelope. `id` is echoed back verbatim (number or string).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawRequest {
    pub id: Value,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// A parsed request: the echoed id plus typed params.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: Value,
    pub method: Method,
}

/// Every method of the protocol with its params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Method {
    Authenticate(AuthenticateParams),
    Ping(PingParams),
    ListWorkspaces(Empty),
    ListSessions(ListSessionsParams),
    JoinSession(JoinSessionParams),
    FetchHistory(FetchHistoryParams),
    /// Read marker: "I have seen this session up to `seq`".
    MarkRead(MarkReadParams),
    LeaveSession(SessionRef),
    SendMessage(SendMessageParams),
    /// Room chat: a message to the people in the session, never to the agent (no turn needed).
    SendChat(SendMessageParams),
    /// "I am typing" in a session (ephemeral; see the `typing` event).
    Typing(SessionRef),
    CancelTurn(SessionRef),
    VotePlan(VotePlanParams),
    AnswerQuestion(AnswerQuestionParams),
    ReadWorkspaceFile(ReadFileParams),
    // ---- host-only methods (the host's in-process connection; remotes get `forbidden`) ----
    AddWorkspace(AddWorkspaceParams),
    CreateSession(CreateSessionParams),
    RenameSession(RenameSessionParams),
    ClearSession(SessionRef),
    ForkSession(ForkSessionParams),
    Kick(KickParams),
    Mute(MuteParams),
    Admit(ParticipantRef),
    Refuse(ParticipantRef),
    MintShare(MintShareParams),
    ListShares(Empty),
    RevokeShare(ShareRef),
    RotateShare(ShareRef),
    /// The host's settings (name, default consensus, default vote deadline).
    GetSettings(Empty),
    /// Changes the host's settings; they apply at once and are kept across restarts.
    UpdateSettings(UpdateSettingsParams),
    /// The people waiting in the lobby for the host's decision.
    ListLobby(Empty),
    /// The newest rows of the audit log, oldest first.
    FetchAudit(FetchAuditParams),
    /// A session's agent settings (model; permission mode for the host), kept by the host and
    /// passed to the agent on every turn. Not host-only: participants may choose the model.
    SetAgentSettings(SetAgentSettingsParams),
}

impl Method {
    /// Every method name, in documentation order.
    pub const NAMES: [&'static str; 33] = [
        "authenticate",
        "ping",
        "list_workspaces",
        "list_sessions",
        "join_session",
        "fetch_history",
        "mark_read",
        "leave_session",
        "send_message",
        "send_chat",
        "typing",
        "cancel_turn",
        "vote_plan",
        "answer_question",
        "read_workspace_file",
        "add_workspace",
        "create_session",
        "rename_session",
        "clear_session",
        "fork_session",
        "kick",
        "mute",
        "admit",
        "refuse",
        "mint_share",
        "list_shares",
        "revoke_share",
        "rotate_share",
        "get_settings",
        "update_settings",
        "list_lobby",
        "fetch_audit",
        "set_agent_settings",
    ];

    /// Methods only the host may call.
    pub fn host_only(&self) -> bool {
        matches!(
            self,
            Method::AddWorkspace(_)
                | Method::CreateSession(_)
                | Method::RenameSession(_)
                | Method::ClearSession(_)
                | Method::ForkSession(_)
                | Method::Kick(_)
                | Method::Mute(_)
                | Method::Admit(_)
                | Method::Refuse(_)
                | Method::MintShare(_)
                | Method::ListShares(_)
                | Method::RevokeShare(_)
                | Method::RotateShare(_)
                | Method::GetSettings(_)
                | Method::UpdateSettings(_)
                | Method::ListLobby(_)
                | Method::FetchAudit(_)
        )
    }

    /// The wire name of this method.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Authenticate(_) => "authenticate",
            Method::Ping(_) => "ping",
            Method::ListWorkspaces(_) => "list_workspaces",
            Method::ListSessions(_) => "list_sessions",
            Method::JoinSession(_) => "join_session",
            Method::FetchHistory(_) => "fetch_history",
            Method::MarkRead(_) => "mark_read",
            Method::LeaveSession(_) => "leave_session",
            Method::SendMessage(_) => "send_message",
            Method::SendChat(_) => "send_chat",
            Method::Typing(_) => "typing",
            Method::CancelTurn(_) => "cancel_turn",
            Method::VotePlan(_) => "vote_plan",
            Method::AnswerQuestion(_) => "answer_question",
            Method::ReadWorkspaceFile(_) => "read_workspace_file",
            Method::AddWorkspace(_) => "add_workspace",
            Method::CreateSession(_) => "create_session",
            Method::RenameSession(_) => "rename_session",
            Method::ClearSession(_) => "clear_session",
            Method::ForkSession(_) => "fork_session",
            Method::Kick(_) => "kick",
            Method::Mute(_) => "mute",
            Method::Admit(_) => "admit",
            Method::Refuse(_) => "refuse",
            Method::MintShare(_) => "mint_share",
            Method::ListShares(_) => "list_shares",
            Method::RevokeShare(_) => "revoke_share",
            Method::RotateShare(_) => "rotate_share",
            Method::GetSettings(_) => "get_settings",
            Method::UpdateSettings(_) => "update_settings",
            Method::ListLobby(_) => "list_lobby",
            Method::FetchAudit(_) => "fetch_audit",
            Method::SetAgentSettings(_) => "set_agent_settings",
        }
    }
}

/// Why a frame could not become a [`Request`]. `id` is present when the envelope was readable,
/// so the error can be answered to the right request.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseFailure {
    pub id: Value,
    pub error: ProtocolError,
}

impl Request {
    /// Parses one text frame. Never panics; every failure is a typed [`ProtocolError`].
    pub fn parse(text: &str) -> Result<Request, ParseFailure> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(ParseFailure {
                id: Value::Null,
                error: ProtocolError::new(
                    ErrorCode::FrameTooLarge,
                    format!("frame is {} bytes; the limit is {} bytes", text.len(), MAX_FRAME_BYTES),
                ),
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| ParseFailure {
            id: Value::Null,
            error: ProtocolError::new(ErrorCode::BadFrame, format!("frame is not valid JSON: {e}")),
        })?;
        let Value::Object(mut obj) = value else {
            return Err(ParseFailure {
                id: Value::Null,
                error: ProtocolError::new(ErrorCode::BadFrame, "frame must be a JSON object"),
            });
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        if !(id.is_number() || id.is_string()) {
            return Err(ParseFailure {
                id: Value::Null,
                error: ProtocolError::new(ErrorCode::BadFrame, "request needs an \"id\" that is a number or a string"),
            });
        }
        let method = match obj.remove("method") {
            Some(Value::String(m)) => m,
            _ => {
                return Err(ParseFailure {
                    id,
                    error: ProtocolError::new(ErrorCode::BadFrame, "request needs a \"method\" string"),
                })
            }
        };
        if !Method::NAMES.contains(&method.as_str()) {
            return Err(ParseFailure {
                id,
                error: ProtocolError::new(ErrorCode::UnknownMethod, format!("unknown method \"{method}\"")),
            });
        }
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                return Err(ParseFailure {
                    id,
                    error: ProtocolError::new(ErrorCode::InvalidParams, "\"params\" must be an object"),
                })
            }
        };
        let tagged = serde_json::json!({ "method": method, "params": params });
        match serde_json::from_value::<Method>(tagged) {
            Ok(method) => Ok(Request { id, method }),
            Err(e) => Err(ParseFailure {
                id,
                error: ProtocolError::new(ErrorCode::InvalidParams, format!("invalid params for {method}: {e}")),
            }),
        }
    }

    /// Serialises the request as a frame (used by clients and tests).
    pub fn to_frame(&self) -> String {
        let tagged = serde_json::to_value(&self.method).expect("method serialises");
        serde_json::json!({ "id": self.id, "method": tagged["method"], "params": tagged["params"] }).to_string()
    }
}

/// No params.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingParams {
    /// Opaque value echoed back in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateParams {
    /// The TOKEN part of the share link.
    pub token: String,
    /// Requested display name (1–64 chars); made unique by the host.
    pub display_name: String,
    /// A resume token from an earlier `authenticate`, to keep the same participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<WorkspaceId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSessionParams {
    pub session_id: SessionId,
    /// Last seq the client has seen; events after it are replayed. Absent: a snapshot is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<u64>,
}

/// Most messages one `fetch_history` page (or a snapshot) carries.
pub const HISTORY_PAGE_MESSAGES: usize = 200;
/// Most message text (bytes of `text`, summed) one page carries; a page always has at least one
/// message when older ones exist (a message is at most 32 KiB).
pub const HISTORY_PAGE_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchHistoryParams {
    pub session_id: SessionId,
    /// Messages with a seq below this one (the oldest seq you have). Absent: the latest page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
    /// Most messages wanted (1–200, default 100); the page may hold fewer to stay within
    /// 256 KiB of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkReadParams {
    pub session_id: SessionId,
    /// The last seq seen. Markers only move forward.
    pub seq: u64,
}

/// Result of `mark_read`: the marker now kept (never lower than before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkReadResult {
    pub read_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KickParams {
    pub participant_id: ParticipantId,
    /// Also revoke the share the participant joined with: its link stops working and everyone
    /// connected through it is disconnected (so the person cannot simply come back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoke_share: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    pub session_id: SessionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageParams {
    pub session_id: SessionId,
    pub text: String,
    /// Client-chosen id making retries idempotent (1–128 chars).
    pub client_msg_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotePlanParams {
    pub vote_id: VoteId,
    pub approve: bool,
    /// Why you deny (shown to everyone and sent to the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Host only, tool votes only: approve and allow this tool for the rest of the session
    /// (later requests for it are approved without a vote).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerQuestionParams {
    pub vote_id: VoteId,
    /// One answer per question of the vote, in order (an option label or free text).
    pub answers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileParams {
    pub session_id: SessionId,
    /// Path relative to the session's workspace directory.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddWorkspaceParams {
    pub name: String,
    pub dir: String,
    /// Agent backend: `demo` (default), `claude` or `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::persist::AgentSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionParams {
    pub workspace_id: WorkspaceId,
    pub title: String,
    /// Start every turn in plan mode (default: the workspace's setting; see `SessionInfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_first: Option<bool>,
    /// Vote deadline for this session (ms), overriding the share's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_deadline_ms: Option<u64>,
}

/// A session's agent settings, passed to the agent on every turn (the `claude` backend:
/// `--model`, `--permission-mode`). Absent fields are the agent's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `plan` or `default` (the modes in which the agent still asks before acting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

impl AgentSettings {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.permission_mode.is_none()
    }
}

/// `set_agent_settings`: each field present is set (an empty string goes back to the agent's
/// default); absent fields stay as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAgentSettingsParams {
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameSessionParams {
    pub session_id: SessionId,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkSessionParams {
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRef {
    pub participant_id: ParticipantId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteParams {
    pub participant_id: ParticipantId,
    pub muted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRef {
    pub share_id: crate::ids::ShareId,
}

/// Settings of a new share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintShareParams {
    #[serde(default)]
    pub label: String,
    /// Workspaces the share allows (non-empty).
    pub workspaces: Vec<WorkspaceId>,
    /// Any number of remotes share the room (default true); false = 1:1 remote control.
    #[serde(default = "yes")]
    pub collaborative: bool,
    /// Plan approvals and questions need every present voter (default true).
    #[serde(default = "yes")]
    pub consensus_required: bool,
    /// New participants wait in a lobby until the host admits them (default false).
    #[serde(default)]
    pub admission_required: bool,
    /// `participant` (default) or `observer`.
    #[serde(default = "participant_role")]
    pub role: Role,
    /// Expiry, in ms after minting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// Vote deadline for votes in turns of this share's participants (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_deadline_ms: Option<u64>,
}

impl MintShareParams {
    /// A collaborative share for `workspaces` where plans need consensus, with no lobby, expiry
    /// or use limit: what `serve --mint` gives.
    pub fn team(label: impl Into<String>, workspaces: Vec<WorkspaceId>) -> Self {
        MintShareParams {
            label: label.into(),
            workspaces,
            collaborative: true,
            consensus_required: true,
            admission_required: false,
            role: Role::Participant,
            expires_in_ms: None,
            max_uses: None,
            vote_deadline_ms: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn participant_role() -> Role {
    Role::Participant
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// Result of `authenticate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResult {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub role: Role,
    /// Present this on reconnect (within the grace period) to stay the same participant.
    pub resume_token: String,
    /// `admitted`, or `pending` when the share requires the host to admit you first.
    pub admission: Admission,
    pub protocol_version: u32,
    /// Whether this participant is resuming an existing identity.
    pub resumed: bool,
}

/// Lobby state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Admitted,
    Pending,
    Refused,
}

/// A participant's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Participant,
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Participant => "participant",
            Role::Observer => "observer",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    pub pong: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub protocol_version: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub id: WorkspaceId,
    pub name: String,
    pub agent: String,
    /// The agent as the host registered it — kind, command line, plan first — shown to the host
    /// only (remotes never see the host's paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListWorkspacesResult {
    pub workspaces: Vec<WorkspaceInfo>,
}

/// Session status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Idle,
    Running,
    AwaitingVote,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Idle => "idle",
            SessionStatus::Running => "running",
            SessionStatus::AwaitingVote => "awaiting_vote",
        }
    }
}

/// A session as clients see it. Not the stored row ([`crate::persist::SessionRow`]) on purpose:
/// it names the workspace `workspace_id`, shows the agent by kind and whether it plans first
/// (not its command line, which names the host's paths), adds what is computed (participant
/// count, last seq, the caller's read marker) and leaves out the host's business (allowed tools,
/// the agent's memory, vote deadline, turn id, creation time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub workspace_id: WorkspaceId,
    pub title: String,
    pub status: SessionStatus,
    pub turn_holder: Option<ParticipantId>,
    pub participant_count: u32,
    pub agent: String,
    pub last_seq: u64,
    /// Present (`true`) when every turn starts the agent in plan mode, so its plan goes to a
    /// vote before it changes anything (`claude` workspaces by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plan_first: bool,
    /// Your read marker in this session (`mark_read`), in `list_sessions` and `join_session`
    /// results; absent when you never marked anything read there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
    /// The agent settings every turn gets (`set_agent_settings`); absent when all are defaults.
    #[serde(default, skip_serializing_if = "AgentSettings::is_empty")]
    pub agent_settings: AgentSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSessionsResult {
    pub sessions: Vec<SessionInfo>,
}

/// One roster row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub role: Role,
    pub muted: bool,
    pub presence: PresenceState,
    /// True on the row describing the receiving client (only in per-connection results).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub you: bool,
}

/// Presence as shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Connected,
    Reconnecting,
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSessionResult {
    pub session: SessionInfo,
    pub roster: Vec<RosterEntry>,
    /// Your own participant id (the roster row with `you: true`).
    pub you: ParticipantId,
    /// How the client catches up: `events` (missed events follow this response in order),
    /// `snapshot` (a `snapshot` event follows) or `none` (already up to date).
    pub catch_up: CatchUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    Events,
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageResult {
    pub message_id: crate::ids::MessageId,
    pub seq: u64,
    /// True when this was a retry of an already accepted `client_msg_id`.
    pub duplicate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileResult {
    pub path: String,
    pub size: u64,
    pub content: String,
}

/// A page of a session's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchHistoryResult {
    /// Messages oldest first, each with its seq.
    pub messages: Vec<crate::protocol::HistoryMessage>,
    /// Whether messages older than the first one of this page exist.
    pub has_older: bool,
}

/// `{}` result for methods that only acknowledge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ok: bool,
}

/// `update_settings`: only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettingsParams {
    /// The host's display name (1–64 characters, no control or invisible characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// Whether votes in the host's own turns need consensus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_consensus: Option<bool>,
    /// Vote deadline for sessions and shares without their own, in ms; `0`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_vote_deadline_ms: Option<u64>,
}

/// The host's settings (`get_settings`, `update_settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    pub host_name: String,
    pub default_consensus: bool,
    /// Absent: no default deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_vote_deadline_ms: Option<u64>,
}

/// One share as listed to the host (never includes the token). Not the stored row
/// ([`crate::persist::ShareRow`]) on purpose: it leaves out the token's hash (a secret's hash
/// never goes on the wire) and adds the live connection count; it is made from the row by
/// [`ShareInfo::new`] only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub share_id: crate::ids::ShareId,
    pub label: String,
    pub workspaces: Vec<WorkspaceId>,
    pub collaborative: bool,
    pub consensus_required: bool,
    pub admission_required: bool,
    pub role: Role,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    pub created_at: u64,
    /// Live connections using this share.
    pub connections: u32,
}

impl ShareInfo {
    /// The stored share as listed, with its live connection count.
    pub fn new(row: &crate::persist::ShareRow, connections: u32) -> Self {
        ShareInfo {
            share_id: row.id.clone(),
            label: row.label.clone(),
            workspaces: row.workspaces.iter().cloned().collect(),
            collaborative: row.collaborative,
            consensus_required: row.consensus_required,
            admission_required: row.admission_required,
            role: row.role,
            expires_at: row.expires_at,
            max_uses: row.max_uses,
            uses: row.uses,
            revoked: row.revoked,
            created_at: row.created_at,
            connections,
        }
    }
}

/// Result of `mint_share` / `rotate_share`: the token is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintShareResult {
    pub share: ShareInfo,
    pub token: String,
    /// Full link when the host knows its address and fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSharesResult {
    pub shares: Vec<ShareInfo>,
}

/// Someone waiting in the lobby (`list_lobby`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingInfo {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub share_id: ShareId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListLobbyResult {
    /// Everyone waiting, by participant id.
    pub waiting: Vec<WaitingInfo>,
}

/// `fetch_audit` params.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchAuditParams {
    /// How many of the newest rows (default 200, at most [`AUDIT_PAGE_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The most audit rows one `fetch_audit` returns.
pub const AUDIT_PAGE_MAX: u32 = 1000;

/// One row of the audit log — who did what to whom, when — as stored.
pub type AuditEntry = crate::persist::AuditRow;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchAuditResult {
    /// The newest rows, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// Per-session map of last seen seqs (used by clients to resume).
pub type LastSeqs = BTreeMap<SessionId, u64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_well_formed_request() {
        let r = Request::parse(
            r#"{"id":1,"method":"send_message","params":{"session_id":"s1","text":"hi","client_msg_id":"a"}}"#,
        )
        .unwrap();
        assert_eq!(r.method.name(), "send_message");
        assert_eq!(r.id, serde_json::json!(1));
    }

    #[test]
    fn bad_json_is_bad_frame() {
        let e = Request::parse("{nope").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadFrame);
    }

    #[test]
    fn unknown_method_keeps_the_id() {
        let e = Request::parse(r#"{"id":"x","method":"explode"}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::UnknownMethod);
        assert_eq!(e.id, serde_json::json!("x"));
    }

    #[test]
    fn wrong_param_types_are_invalid_params() {
        let e =
            Request::parse(r#"{"id":2,"method":"vote_plan","params":{"vote_id":"v1","approve":"yes"}}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidParams);
    }

    #[test]
    fn oversize_frames_are_refused_before_parsing() {
        let big =
            format!("{{\"id\":1,\"method\":\"ping\",\"params\":{{\"nonce\":\"{}\"}}}}", "x".repeat(MAX_FRAME_BYTES));
        assert_eq!(Request::parse(&big).unwrap_err().error.code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn request_round_trips_through_a_frame() {
        let r = Request {
            id: serde_json::json!(9),
            method: Method::JoinSession(JoinSessionParams { session_id: SessionId::nth(1), since_seq: Some(3) }),
        };
        assert_eq!(Request::parse(&r.to_frame()).unwrap(), r);
    }

    #[test]
    fn nesting_deeper_than_the_documented_limit_is_a_bad_frame() {
        let deep =
            format!(r#"{{"id":1,"method":"ping","params":{{"nonce":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
        let err = Request::parse(&deep).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadFrame);
        assert!(err.error.message.contains("recursion limit"), "{}", err.error.message);
    }

    mod decoder {
        use super::*;
        use proptest::prelude::*;

        /// Frames that look like requests: real method names, params of any JSON shape.
        fn near_requests() -> impl Strategy<Value = String> {
            let json = prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| String::from_utf8_lossy(&b).into_owned());
            let leaf = prop_oneof![
                Just("null".to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "[a-z_ ]{0,12}".prop_map(|s| format!("{s:?}")),
            ];
            let value = leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                    prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| {
                        let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                        format!("{{{}}}", fields.join(","))
                    }),
                ]
            });
            let method = prop::sample::select(Method::NAMES.to_vec());
            prop_oneof![
                json,
                (value.clone(), method, value)
                    .prop_map(|(id, m, params)| { format!(r#"{{"id":{id},"method":"{m}","params":{params}}}"#) }),
            ]
        }

        proptest! {
            /// The decoder never panics: every input is a request or a typed error, and a
            /// failure's id is the frame's own id when it had a usable one.
            #[test]
            fn every_frame_decodes_or_gets_a_typed_error(text in near_requests()) {
                match Request::parse(&text) {
                    Ok(r) => prop_assert!(r.id.is_number() || r.id.is_string()),
                    Err(f) => {
                        prop_assert!(ErrorCode::ALL.contains(&f.error.code));
                        prop_assert!(!f.error.message.is_empty());
                        prop_assert!(f.id.is_null() || f.id.is_number() || f.id.is_string());
                    }
                }
            }
        }
    }
}
