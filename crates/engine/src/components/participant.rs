//! Participant: a person (the host or a remote), possibly with several connections.

use crate::persist::{ParticipantRecord, ParticipantRow};
use crate::protocol::{Admission, PresenceState, Role, RosterEntry};
use bevy_ecs::prelude::Component;

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

/// A participant entity: its stored fields ([`ParticipantRecord`], the one definition the store
/// shares) and its presence, which is runtime state (only "gone for good" is stored). Systems
/// read and write the stored fields through `Deref` (`p.muted = true`), as if they were the
/// component's own.
#[derive(Component, Clone, Debug)]
pub struct Participant {
    pub record: ParticipantRecord,
    pub presence: Presence,
}

impl std::ops::Deref for Participant {
    type Target = ParticipantRecord;
    fn deref(&self) -> &ParticipantRecord {
        &self.record
    }
}

impl std::ops::DerefMut for Participant {
    fn deref_mut(&mut self) -> &mut ParticipantRecord {
        &mut self.record
    }
}

impl Participant {
    /// The roster row clients see. It differs from the stored row on purpose: it shows presence
    /// (connected / reconnecting / gone) and the per-connection `you` flag, and leaves out what is
    /// the host's business (share, admission, sessions, read markers, the resume token's hash).
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

    /// The row to store.
    pub fn row(&self) -> ParticipantRow {
        ParticipantRow { participant: self.record.clone(), gone: matches!(self.presence, Presence::Gone) }
    }

    /// Can write (send, vote, answer): admitted, not an observer.
    pub fn can_write(&self) -> bool {
        self.role != Role::Observer && self.admission == Admission::Admitted
    }
}
