//! Rule: departure (gone past grace), mute, kick or leaving the session removes a voter from the
//! required set, so nobody can stall a vote by leaving. Resolution is re-evaluated the same tick.

use super::params::*;
use super::resources::*;
use super::util::emit;
use super::vote_cast::progress;
use crate::components::*;
use crate::persist::StoreOp;
use crate::protocol::Event;
use bevy_ecs::prelude::*;

pub fn prune_voters(
    mut departed: MessageReader<Departed>,
    mut dropped: MessageReader<VoterDropped>,
    index: Res<Index>,
    mut votes: Query<&mut PendingVote>,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
) {
    let Effects { mut staged, mut batch } = fx;
    let mut removals: Vec<(crate::ids::ParticipantId, Option<crate::ids::SessionId>)> =
        departed.read().map(|d| (d.participant.clone(), None)).collect();
    removals.extend(dropped.read().map(|d| (d.participant.clone(), d.session.clone())));
    if removals.is_empty() {
        return;
    }
    for (_, &ve) in index.votes.iter() {
        let Ok(mut vote) = votes.get_mut(ve) else { continue };
        if vote.outcome.is_some() {
            continue;
        }
        let before = vote.required.len();
        for (p, s) in &removals {
            if s.as_ref().is_none_or(|s| *s == vote.session) {
                vote.required.remove(p);
                vote.ballots.remove(p);
            }
        }
        if vote.required.len() != before {
            batch.push(StoreOp::PutVote(super::vote_open::vote_row(&vote)));
            if let Some(mut log) = index.sessions.get(&vote.session).and_then(|&e| logs.get_mut(e).ok()) {
                emit(&mut log, &vote.session, Event::VoteProgress(progress(&vote)), &mut batch, &mut staged);
            }
        }
    }
}
