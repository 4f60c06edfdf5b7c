//! Restart: rebuild the world from the store, then (in the first tick, once the clock is set)
//! close what a dead agent left open: running turns end with `agent_died`, open votes resolve
//! denied ("host restarted"), and remotes get a fresh grace period to reconnect.

use super::resources::*;
use super::turn_lock::TurnEnds;
use crate::components::*;
use crate::config::EngineConfig;
use crate::ids::ParticipantId;
use crate::persist::{AuditRow, ParticipantRecord, ParticipantRow, Restored, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Work left for the first tick after a restart.
#[derive(Resource, Default)]
pub struct Recovery {
    pub pending: bool,
}

/// Spawns every restored entity and sets the id counters. Always creates the host participant.
pub fn restore_world(world: &mut World, r: Restored) {
    let masker = world.resource::<super::resources::Staged>().masker.clone();
    let masker = &masker;
    if let Some(saved) = &r.settings {
        let mut config = world.resource_mut::<EngineConfig>();
        config.host_name = saved.host_name.clone();
        config.default_consensus = saved.default_consensus;
        if !config.vote_deadline_pinned {
            config.default_vote_deadline_ms = saved.default_vote_deadline_ms;
        }
    }
    let host_name = world.resource::<EngineConfig>().host_name.clone();
    let mut index = Index::default();
    let mut counters = Counters::default();
    let num = |n: Option<u64>| n.unwrap_or(0);
    for w in r.workspaces {
        counters.workspace = counters.workspace.max(num(w.id.number()));
        let id = w.id.clone();
        index.workspaces.insert(id, world.spawn(Workspace(w)).id());
    }
    let mut messages: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for m in r.messages {
        counters.message = counters.message.max(num(m.id.number()));
        messages.entry(m.session.clone()).or_insert_with(Vec::new).push(m);
    }
    let mut events: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for e in r.events {
        events.entry(e.session.clone()).or_insert_with(Vec::new).push(e);
    }
    let all_sessions: BTreeSet<_> = r.sessions.iter().map(|s| s.session.id.clone()).collect();
    for s in r.sessions {
        let id = s.session.id.clone();
        counters.session = counters.session.max(num(id.number()));
        let mut history = History::default();
        for m in messages.remove(&id).unwrap_or_default() {
            history.push(m);
        }
        history.has_older |= r.older_messages.contains(&id);
        // Stored frames are the host's copies: the remotes' copies are masked once, here.
        let tail: std::collections::VecDeque<(u64, crate::io::Framed)> = events
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.seq, crate::mask_json::framed_from_stored(Arc::<str>::from(e.frame), masker)))
            .collect();
        // The event log is authoritative: the session row is not rewritten on every event.
        let after_tail = tail.back().map(|(seq, _)| seq + 1).unwrap_or(1);
        let log = EventLog { next_seq: s.next_seq.max(after_tail), tail };
        let lock = TurnLock {
            holder: s.turn_holder.clone(),
            turn_id: s.turn_id,
            streamed: s.streamed.clone(),
            consensus: true,
        };
        let session = Session(s.session);
        let workspace = session.workspace.clone();
        index.add_session(id, workspace, world.spawn((session, lock, log, history)).id());
    }
    for sh in r.shares {
        counters.share = counters.share.max(num(sh.id.number()));
        let id = sh.id.clone();
        index.shares.insert(id, world.spawn(Share(sh)).id());
    }
    let mut has_host = false;
    for ParticipantRow { participant: mut record, gone } in r.participants {
        let is_host = record.id.is_host();
        has_host |= is_host;
        counters.participant = counters.participant.max(num(record.id.number()));
        let presence = if is_host {
            record.display_name = host_name.clone();
            record.sessions = all_sessions.clone();
            Presence::Connected(0)
        } else if gone {
            Presence::Gone
        } else {
            // Fixed in the first tick (the clock is not set yet).
            Presence::Grace { until: u64::MAX }
        };
        let id = record.id.clone();
        index.participants.insert(id, world.spawn(Participant { record, presence }).id());
    }
    if !has_host {
        let host = Participant {
            record: ParticipantRecord {
                id: ParticipantId::host(),
                display_name: host_name,
                role: Role::Host,
                share: None,
                muted: false,
                admission: Admission::Admitted,
                resume_hash: None,
                sessions: all_sessions,
                read: Default::default(),
            },
            presence: Presence::Connected(0),
        };
        world.resource_mut::<PersistBatch>().push(StoreOp::PutParticipant(host.row()));
        index.participants.insert(ParticipantId::host(), world.spawn(host).id());
    }
    let mut ballots: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for b in r.ballots {
        ballots.entry(b.vote.clone()).or_insert_with(Vec::new).push(b);
    }
    for v in r.votes {
        counters.vote = counters.vote.max(num(v.id.number()));
        let Ok(subject) = serde_json::from_str::<VoteSubject>(&v.subject_json) else {
            tracing::warn!(vote = %v.id, "unreadable vote subject; skipped");
            continue;
        };
        let decided_by =
            serde_json::from_value(serde_json::Value::String(v.decided_by.clone())).unwrap_or(DecidedBy::Consensus);
        let outcome = v.outcome.as_ref().map(|o| Resolved {
            outcome: serde_json::from_value(serde_json::Value::String(o.clone())).unwrap_or(VoteOutcome::Denied),
            reason: v.reason.clone(),
            answers: Vec::new(),
            resolved_by: "restored".into(),
        });
        let mut vote = PendingVote {
            id: v.id.clone(),
            session: v.session,
            turn_id: v.turn_id,
            request_id: v.request_id,
            subject,
            decided_by,
            required: v.required.into_iter().collect(),
            ballots: Default::default(),
            deadline: v.deadline,
            opened_at: v.opened_at,
            host_decision: None,
            allow_listed: false,
            outcome,
        };
        for b in ballots.remove(&v.id).unwrap_or_default() {
            let ballot = match b.choice.as_str() {
                "approve" => Ballot::Approve,
                "deny" => Ballot::Deny(b.detail.unwrap_or_default()),
                _ => Ballot::Answer(b.detail.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default()),
            };
            if b.voter.is_host() {
                vote.host_decision = Some(ballot);
            } else {
                vote.ballots.insert(b.voter, ballot);
            }
        }
        index.votes.insert(v.id, world.spawn(vote).id());
    }
    world.insert_resource(index);
    world.insert_resource(counters);
    world.insert_resource(Recovery { pending: true });
}

/// First tick after start: give remotes a fresh grace period and close what the dead agent left.
pub fn recover(
    mut recovery: ResMut<Recovery>,
    config: Res<EngineConfig>,
    index: Res<Index>,
    mut participants: Query<&mut Participant>,
    mut votes: Query<&mut PendingVote>,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut turns: TurnEnds,
) {
    if !std::mem::take(&mut recovery.pending) {
        return;
    }
    super::presence::fresh_grace(&index, &mut participants, turns.clock.now + config.grace_ms);
    for (vid, &ve) in index.votes.iter() {
        let Ok(mut v) = votes.get_mut(ve) else { continue };
        if v.outcome.is_some() {
            continue;
        }
        let reason = "host restarted; the agent that asked is gone".to_string();
        v.outcome = Some(Resolved {
            outcome: VoteOutcome::Denied,
            reason: Some(reason.clone()),
            answers: vec![],
            resolved_by: "system".into(),
        });
        turns.fx.persist(StoreOp::PutVote(super::vote_open::vote_row(&v)));
        if let Some((_, _, mut log, _)) = index.sessions.get(&v.session).and_then(|&e| sessions.get_mut(e).ok()) {
            turns.fx.emit(
                &mut log,
                &v.session,
                Event::VoteResolved(VoteResolved {
                    vote_id: vid.clone(),
                    outcome: VoteOutcome::Denied,
                    reason: Some(reason),
                    answers: vec![],
                    resolved_by: "system".into(),
                }),
            );
        }
    }
    for (sid, &se) in index.sessions.iter() {
        let Ok((mut session, mut lock, mut log, mut history)) = sessions.get_mut(se) else { continue };
        if lock.holder.is_some() {
            turns.end_turn(
                &mut session,
                &mut lock,
                &mut log,
                &mut history,
                TurnEndReason::AgentDied,
                Some("the host restarted while the agent was working".into()),
            );
            turns.fx.persist(StoreOp::Audit(AuditRow {
                at: turns.clock.now,
                actor: "system".into(),
                action: "turn_closed".into(),
                target: sid.to_string(),
                detail: "agent died (host restart)".into(),
            }));
        } else if session.status != SessionStatus::Idle {
            session.status = SessionStatus::Idle;
            turns.fx.persist(StoreOp::PutSession(session.row(&lock, &log)));
        }
    }
}
