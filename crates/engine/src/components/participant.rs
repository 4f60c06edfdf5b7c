//! Participant: a person (the host or a remote), possibly with several connections.

use crate::ids::{ParticipantId, SessionId, ShareId};
use crate::persist::ParticipantRow;
use crate::protocol::{Admission, PresenceState, Role, RosterEntry};
use bevy_ecs::prelude::Component;
use std::collections::BTreeSet;

/// Presence of a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Connected with this many connections (≥ 1; the host is always connected).
    Connected(u32),
    /// Lost its last connection; stays in the roster until the given time.
    Grace { until: u64 },
    /// Gone past grace, kicked or left for good.
    Gone,
}

impl Presence {
    pub fn state(self) -> PresenceState {
        match self {
            Presence::Connected(_) => PresenceState::Connected,
            Presence::Grace { .. } => PresenceState::Reconnecting,
            Presence::Gone => PresenceState::Gone,
        }
    }

    /// Present or within grace.
    pub fn is_present(self) -> bool {
        !matches!(self, Presence::Gone)
    }
}

#[derive(Component, Clone, Debug)]
pub struct Participant {
    pub id: ParticipantId,
    pub display_name: String,
    pub role: Role,
    pub share: Option<ShareId>,
    pub muted: bool,
    pub admission: Admission,
    pub sessions: BTreeSet<SessionId>,
    pub presence: Presence,
    /// SHA-256 of the resume token; cleared when the participant is kicked or gone.
    pub resume_hash: Option<[u8; 32]>,
    /// Read markers: the last seq this person has seen, per session (`mark_read`).
    pub read: std::collections::BTreeMap<SessionId, u64>,
}

impl Participant {
    pub fn roster_entry(&self) -> RosterEntry {
        RosterEntry {
            participant_id: self.id.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            muted: self.muted,
            presence: self.presence.state(),
            you: false,
        }
    }

    pub fn row(&self) -> ParticipantRow {
        ParticipantRow {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            share: self.share.clone(),
            muted: self.muted,
            admission: self.admission,
            resume_hash: self.resume_hash,
            gone: matches!(self.presence, Presence::Gone),
            sessions: self.sessions.iter().cloned().collect(),
            read: self.read.clone(),
        }
    }

    /// Can write (send, vote, answer): admitted, not an observer.
    pub fn can_write(&self) -> bool {
        self.role != Role::Observer && self.admission == Admission::Admitted
    }
}
