//! Error codes a client can see. Each has a stable `code` string listed in docs/PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// Stable error codes. The JSON form is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or not a JSON object with `id` and `method`.
    BadFrame,
    /// The frame is larger than 64 KiB.
    FrameTooLarge,
    /// `method` names no method of this protocol.
    UnknownMethod,
    /// `params` do not match the method (missing field, wrong type, bad value).
    InvalidParams,
    /// A method other than `authenticate`/`ping` before authentication, or a bad/expired/revoked token.
    Unauthenticated,
    /// Already authenticated on this connection.
    AlreadyAuthenticated,
    /// Too many failed authentications from this address, or too many requests on this connection.
    RateLimited,
    /// The id does not exist or is outside the caller's share scope.
    NotFound,
    /// The caller's role does not allow this (observers, muted participants, non-holders cancelling).
    Forbidden,
    /// The participant is waiting in the lobby for the host to admit them.
    NotAdmitted,
    /// A 1:1 share already has its one remote participant.
    ShareInUse,
    /// The session's turn is held by someone else.
    TurnLocked,
    /// The caller has not joined this session.
    NotJoined,
    /// The caller is not a required voter of this vote.
    NotAVoter,
    /// The vote is already resolved.
    StaleVote,
    /// No turn is running.
    NoTurn,
    /// The file is outside the workspace, missing, or too large.
    FileRefused,
    /// A `client_msg_id` was reused for a different message.
    DuplicateClientMsgId,
    /// The host failed internally; the request had no effect.
    Internal,
    /// The host cannot store right now (disk full, database unavailable): nothing of this
    /// request is acknowledged. Retry after `retry_after_ms` (a retried `send_message` with the
    /// same `client_msg_id` is idempotent).
    StorageUnavailable,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownMethod,
        ErrorCode::InvalidParams,
        ErrorCode::Unauthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::NotAdmitted,
        ErrorCode::ShareInUse,
        ErrorCode::TurnLocked,
        ErrorCode::NotJoined,
        ErrorCode::NotAVoter,
        ErrorCode::StaleVote,
        ErrorCode::NoTurn,
        ErrorCode::FileRefused,
        ErrorCode::DuplicateClientMsgId,
        ErrorCode::Internal,
        ErrorCode::StorageUnavailable,
    ];

    /// The wire string, e.g. `turn_locked`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotAdmitted => "not_admitted",
            ErrorCode::ShareInUse => "share_in_use",
            ErrorCode::TurnLocked => "turn_locked",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::NotAVoter => "not_a_voter",
            ErrorCode::StaleVote => "stale_vote",
            ErrorCode::NoTurn => "no_turn",
            ErrorCode::FileRefused => "file_refused",
            ErrorCode::DuplicateClientMsgId => "duplicate_client_msg_id",
            ErrorCode::Internal => "internal",
            ErrorCode::StorageUnavailable => "storage_unavailable",
        }
    }
}

/// An error returned to a client: `{"code": "...", "message": "..."}` (plus `retry_after_ms`
/// with `storage_unavailable`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// When to retry (`storage_unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: None }
    }

    /// How long to wait before retrying a refusal for now: the host's `retry_after_ms`, else a
    /// second, kept within 0.1–60 s (`rate_limited` after failed authentications lasts up to a
    /// minute; callers back off).
    pub fn retry_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.retry_after_ms.unwrap_or(1_000).clamp(100, 60_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_to_its_documented_string() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }
}
