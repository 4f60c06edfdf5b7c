//! Share: a pairing link's settings. Only the SHA-256 of the token is kept.

use crate::ids::{ShareId, WorkspaceId};
use crate::persist::ShareRow;
use crate::protocol::Role;
use bevy_ecs::prelude::Component;
use std::collections::BTreeSet;

#[derive(Component, Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub id: ShareId,
    pub label: String,
    pub token_hash: [u8; 32],
    pub workspaces: BTreeSet<WorkspaceId>,
    pub collaborative: bool,
    pub consensus_required: bool,
    pub admission_required: bool,
    pub role: Role,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    pub created_at: u64,
    pub vote_deadline_ms: Option<u64>,
}

impl Share {
    /// Whether new authentications may use this share at `now`.
    pub fn usable(&self, now: u64) -> bool {
        !self.revoked && self.expires_at.is_none_or(|t| now < t) && self.max_uses.is_none_or(|m| self.uses < m)
    }

    /// Whether live connections must be closed (revoked or expired; exhausted shares keep theirs).
    pub fn dead(&self, now: u64) -> bool {
        self.revoked || self.expires_at.is_some_and(|t| now >= t)
    }

    pub fn row(&self) -> ShareRow {
        ShareRow {
            id: self.id.clone(),
            label: self.label.clone(),
            token_hash: self.token_hash,
            workspaces: self.workspaces.iter().cloned().collect(),
            collaborative: self.collaborative,
            consensus_required: self.consensus_required,
            admission_required: self.admission_required,
            role: self.role,
            expires_at: self.expires_at,
            max_uses: self.max_uses,
            uses: self.uses,
            revoked: self.revoked,
            created_at: self.created_at,
            vote_deadline_ms: self.vote_deadline_ms,
        }
    }

    pub fn from_row(r: ShareRow) -> Self {
        Self {
            id: r.id,
            label: r.label,
            token_hash: r.token_hash,
            workspaces: r.workspaces.into_iter().collect(),
            collaborative: r.collaborative,
            consensus_required: r.consensus_required,
            admission_required: r.admission_required,
            role: r.role,
            expires_at: r.expires_at,
            max_uses: r.max_uses,
            uses: r.uses,
            revoked: r.revoked,
            created_at: r.created_at,
            vote_deadline_ms: r.vote_deadline_ms,
        }
    }
}
