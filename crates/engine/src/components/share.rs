//! Share: a pairing link's settings. Only the SHA-256 of the token is kept.

use crate::persist::ShareRow;
use bevy_ecs::prelude::Component;

/// A share entity: its stored row, as it is ([`ShareRow`] is the one definition of a share's
/// fields; a share has no runtime state). Systems read and write the fields through `Deref`
/// (`share.uses += 1`), bevy's idiom for a newtype component.
#[derive(Component, Clone, Debug, PartialEq, Eq)]
pub struct Share(pub ShareRow);

impl std::ops::Deref for Share {
    type Target = ShareRow;
    fn deref(&self) -> &ShareRow {
        &self.0
    }
}

impl std::ops::DerefMut for Share {
    fn deref_mut(&mut self) -> &mut ShareRow {
        &mut self.0
    }
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

    /// The row to store.
    pub fn row(&self) -> ShareRow {
        self.0.clone()
    }
}
