//! Rules: deadlines and resolution. At its deadline a vote resolves denied ("timed out"), never
//! approved. A vote whose turn ended resolves denied. Otherwise the pure [`evaluate`] decides.
//! Every outcome is emitted once, persisted, audited and sent back to the agent.

use super::params::*;
use super::resources::*;
use super::util::emit;
use super::vote_logic::evaluate;
use crate::agent::{AgentCommand, Resolution};
use crate::components::*;
use crate::ids::ParticipantId;
use crate::persist::{AuditRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use std::collections::BTreeMap;

/// What closes a vote besides its ballots: its turn ended, or the agent withdrew its request.
#[derive(SystemParam)]
pub struct VoteEndings<'w, 's> {
    pub turn_closed: MessageReader<'w, 's, TurnClosed>,
    pub withdrawn: MessageReader<'w, 's, VoteWithdrawn>,
}

/// Resolves votes: deadlines, ended turns, withdrawn requests, and the ballots cast this tick.
pub fn resolve_votes(
    mut ended: VoteEndings,
    clock: Res<Clock>,
    dir: Directory,
    mut agents: ResMut<Agents>,
    mut votes: Query<&mut PendingVote>,
    mut sessions: Query<(&mut Session, &TurnLock, &mut EventLog)>,
    fx: Effects,
) {
    let VoteEndings { turn_closed, withdrawn } = &mut ended;
    let Directory { index, participants, .. } = dir;
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    let closed: Vec<TurnClosed> = turn_closed.read().cloned().collect();
    let withdrawn: Vec<VoteWithdrawn> = withdrawn.read().cloned().collect();
    // Names of a vote's voters, looked up when it is evaluated (not every participant every tick).
    let names_of = |vote: &PendingVote| -> BTreeMap<ParticipantId, String> {
        vote.required
            .iter()
            .filter_map(|p| index.participants.get(p).and_then(|&e| participants.get(e).ok()))
            .map(|p| (p.id.clone(), p.display_name.clone()))
            .collect()
    };
    for (_, &ve) in index.votes.iter() {
        let Ok(mut vote) = votes.get_mut(ve) else { continue };
        if vote.outcome.is_some() {
            continue;
        }
        let ended = closed.iter().find(|c| c.session == vote.session && c.turn_id == vote.turn_id);
        let pulled = withdrawn
            .iter()
            .any(|w| w.session == vote.session && w.turn_id == vote.turn_id && w.request_id == vote.request_id);
        let (resolved, tell_agent) = if pulled {
            (
                Resolved {
                    outcome: VoteOutcome::Denied,
                    reason: Some("withdrawn by the agent".into()),
                    answers: vec![],
                    resolved_by: "system".into(),
                },
                false,
            )
        } else if let Some(c) = ended {
            (
                Resolved {
                    outcome: VoteOutcome::Denied,
                    reason: Some(c.reason.clone()),
                    answers: vec![],
                    resolved_by: "system".into(),
                },
                false,
            )
        } else if let Some(mut r) = evaluate(&vote, &names_of(&vote)) {
            if vote.decided_by == DecidedBy::Holder && r.resolved_by == "consensus" {
                r.resolved_by = "holder".into();
            }
            (r, true)
        } else if vote.deadline.is_some_and(|d| d <= now) {
            (
                Resolved {
                    outcome: VoteOutcome::Denied,
                    reason: Some("timed out".into()),
                    answers: vec![],
                    resolved_by: "deadline".into(),
                },
                true,
            )
        } else {
            continue;
        };
        vote.outcome = Some(resolved.clone());
        batch.push(StoreOp::PutVote(super::vote_open::vote_row(&vote)));
        batch.push(StoreOp::Audit(AuditRow {
            at: now,
            actor: resolved.resolved_by.clone(),
            action: "vote_resolved".into(),
            target: vote.id.to_string(),
            // The outcome as a word; the reason as people typed it.
            detail: format!(
                "{}{}",
                format!("{:?}", resolved.outcome).to_lowercase(),
                resolved.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
        }));
        if let Some((mut session, lock, mut log)) =
            index.sessions.get(&vote.session).and_then(|&e| sessions.get_mut(e).ok())
        {
            emit(
                &mut log,
                &vote.session,
                Event::VoteResolved(VoteResolved {
                    vote_id: vote.id.clone(),
                    outcome: resolved.outcome,
                    reason: resolved.reason.clone(),
                    answers: resolved.answers.clone(),
                    resolved_by: resolved.resolved_by.clone(),
                }),
                &mut batch,
                &mut staged,
            );
            if lock.holder.is_some() && session.status == SessionStatus::AwaitingVote {
                session.status = SessionStatus::Running;
                batch.push(StoreOp::PutSession(session.row(lock, &log)));
            }
        }
        if tell_agent {
            let resolution = match resolved.outcome {
                VoteOutcome::Approved => Resolution::Approved,
                VoteOutcome::Denied => Resolution::Denied(resolved.reason.clone().unwrap_or_default()),
                VoteOutcome::Answered => Resolution::Answered(resolved.answers.clone()),
            };
            agents.queued.push(AgentCommand::Resolve {
                session: vote.session.clone(),
                turn_id: vote.turn_id,
                request_id: vote.request_id.clone(),
                resolution,
            });
        }
    }
}
