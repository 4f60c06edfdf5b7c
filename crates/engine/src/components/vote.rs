//! PendingVote: a plan approval, question or tool permission awaiting ballots.

use crate::ids::{ParticipantId, SessionId, VoteId};
use crate::protocol::{DecidedBy, VoteOutcome, VoteSubject};
use bevy_ecs::prelude::Component;
use std::collections::{BTreeMap, BTreeSet};

/// One voter's ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ballot {
    Approve,
    Deny(String),
    Answer(Vec<String>),
}

#[derive(Component, Clone, Debug)]
pub struct PendingVote {
    pub id: VoteId,
    pub session: SessionId,
    pub turn_id: u64,
    pub request_id: String,
    pub subject: VoteSubject,
    pub decided_by: DecidedBy,
    /// Required voters (snapshot at opening, shrinks on departure/mute/kick).
    pub required: BTreeSet<ParticipantId>,
    pub ballots: BTreeMap<ParticipantId, Ballot>,
    pub deadline: Option<u64>,
    pub opened_at: u64,
    /// The host's decision (the host may always decide alone).
    pub host_decision: Option<Ballot>,
    /// Approved at once by the session's tool allow-list.
    pub allow_listed: bool,
    /// Set once, when the vote resolves.
    pub outcome: Option<Resolved>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub outcome: VoteOutcome,
    pub reason: Option<String>,
    pub answers: Vec<String>,
    pub resolved_by: String,
}
