//! Restart: rebuild the world from the store, then (in the first tick, once the clock is set)
//! close what a dead agent left open: running turns end with `agent_died`, open votes resolve
//! denied ("host restarted"), and remotes get a fresh grace period to reconnect.

use super::resources::*;
use super::turn_lock::TurnEnds;
use crate::components::*;
use crate::config::EngineConfig;
use crate::ids::{ParticipantId, SessionId};
use crate::mask::Masker;
use crate::persist::{
    AuditRow, BallotRow, EventRow, MessageRow, ParticipantRecord, ParticipantRow, Restored, SessionRow, SessionSummary,
    SessionTails, SettingsRow, ShareRow, StoreOp, VoteRow, WorkspaceRow,
};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Work left for the first tick after a restart.
#[derive(Resource, Default)]
pub struct Recovery {
    pub pending: bool,
}

/// Spawns every restored entity and sets the id counters. Always creates the host participant.
///
/// Entities are spawned in a fixed order — workspaces, sessions, shares, participants, votes —
/// each kind in id order, as the store returns them.
pub fn restore_world(world: &mut World, r: Restored) {
    apply_saved_settings(world, r.settings.as_ref());
    let masker = world.resource::<Staged>().masker.clone();
    let host_name = world.resource::<EngineConfig>().host_name.clone();
    let mut rebuild = Rebuild { world, index: Index::default(), counters: Counters::default() };
    rebuild.workspaces(r.workspaces);
    let all_sessions = rebuild.sessions(
        r.sessions,
        Tails { messages: r.messages, older: &r.older_messages, events: r.events, summaries: r.summaries },
        &masker,
    );
    rebuild.shares(r.shares);
    rebuild.participants(r.participants, all_sessions, host_name);
    rebuild.votes(r.votes, r.ballots);
    let Rebuild { world, index, counters } = rebuild;
    world.insert_resource(index);
    world.insert_resource(counters);
    world.insert_resource(Recovery { pending: true });
}

/// The host's saved settings win over the built-in defaults (a vote deadline given on the
/// command line wins over both).
fn apply_saved_settings(world: &mut World, saved: Option<&SettingsRow>) {
    let Some(saved) = saved else { return };
    let mut config = world.resource_mut::<EngineConfig>();
    config.host_name = saved.host_name.clone();
    config.default_consensus = saved.default_consensus;
    if !config.vote_deadline_pinned {
        config.default_vote_deadline_ms = saved.default_vote_deadline_ms;
    }
}

/// Raises an id counter to the number of a restored id (ids are never issued twice).
fn bump(counter: &mut u64, number: Option<u64>) {
    *counter = (*counter).max(number.unwrap_or(0));
}

/// Rows grouped by key, each group in the order given.
fn group_by<K: Ord, T>(rows: Vec<T>, key: impl Fn(&T) -> K) -> BTreeMap<K, Vec<T>> {
    let mut groups: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for row in rows {
        groups.entry(key(&row)).or_default().push(row);
    }
    groups
}

/// The world being rebuilt, with the id index and counters it fills.
struct Rebuild<'w> {
    world: &'w mut World,
    index: Index,
    counters: Counters,
}

impl Rebuild<'_> {
    fn workspaces(&mut self, rows: Vec<WorkspaceRow>) {
        for w in rows {
            bump(&mut self.counters.workspace, w.id.number());
            let id = w.id.clone();
            self.index.workspaces.insert(id, self.world.spawn(Workspace(w)).id());
        }
    }

    /// Spawns every session with its turn lock, event log and history — with its tails when
    /// the store gave them, else without (not resident, `residency`); returns their ids.
    fn sessions(&mut self, rows: Vec<SessionRow>, tails: Tails, masker: &Masker) -> BTreeSet<SessionId> {
        let Tails { messages, older, events, summaries } = tails;
        for m in &messages {
            bump(&mut self.counters.message, m.id.number());
        }
        for (id, _) in summaries.values().filter_map(|s| s.newest_message.as_ref()) {
            bump(&mut self.counters.message, id.number());
        }
        let now = self.world.resource::<Clock>().now;
        let mut messages = group_by(messages, |m| m.session.clone());
        let mut events = group_by(events, |e| e.session.clone());
        let all: BTreeSet<_> = rows.iter().map(|s| s.session.id.clone()).collect();
        for row in rows {
            let id = row.session.id.clone();
            bump(&mut self.counters.session, id.number());
            let (session, lock, log, history) = match summaries.get(&id) {
                Some(summary) => unloaded_session(row, summary),
                None => {
                    let stored = SessionTails {
                        messages: messages.remove(&id).unwrap_or_default(),
                        has_older: older.contains(&id),
                        events: events.remove(&id).unwrap_or_default(),
                    };
                    loaded_session(row, stored, masker, now)
                }
            };
            let workspace = session.workspace.clone();
            self.index.add_session(id, workspace, self.world.spawn((session, lock, log, history)).id());
        }
        all
    }

    fn shares(&mut self, rows: Vec<ShareRow>) {
        for sh in rows {
            bump(&mut self.counters.share, sh.id.number());
            let id = sh.id.clone();
            self.index.shares.insert(id, self.world.spawn(Share(sh)).id());
        }
    }

    /// Spawns every participant — the host connected, in every session and named as configured;
    /// remotes gone or in grace — and the host when the store has none (stored this tick).
    fn participants(&mut self, rows: Vec<ParticipantRow>, all_sessions: BTreeSet<SessionId>, host_name: String) {
        let mut has_host = false;
        for ParticipantRow { participant: mut record, gone } in rows {
            let is_host = record.id.is_host();
            has_host |= is_host;
            bump(&mut self.counters.participant, record.id.number());
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
            if matches!(presence, Presence::Grace { .. }) {
                self.index.in_grace.insert((u64::MAX, id.clone()));
            }
            if let Some(hash) = record.resume_hash {
                self.index.resume.insert(hash, id.clone());
            }
            if !is_host && !matches!(presence, Presence::Gone) {
                self.index.names.add(&id, &record.display_name);
                if let Some(share) = &record.share {
                    self.index.share_members.entry(share.clone()).or_default().insert(id.clone());
                }
            }
            self.index.participants.insert(id, self.world.spawn(Participant { record, presence }).id());
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
            self.world.resource_mut::<PersistBatch>().push(StoreOp::PutParticipant(host.row()));
            self.index.participants.insert(ParticipantId::host(), self.world.spawn(host).id());
        }
    }

    /// Spawns every vote with its ballots; a vote whose subject cannot be read is skipped.
    fn votes(&mut self, rows: Vec<VoteRow>, ballots: Vec<BallotRow>) {
        let mut ballots = group_by(ballots, |b| b.vote.clone());
        for v in rows {
            bump(&mut self.counters.vote, v.id.number());
            let id = v.id.clone();
            let Some(vote) = pending_vote(v, ballots.remove(&id).unwrap_or_default()) else { continue };
            self.index.votes.insert(id, self.world.spawn(vote).id());
        }
    }
}

/// What the store gave of the sessions' tails: for some sessions the tails themselves, for the
/// others (`summaries`) what stands in for them until they are loaded.
struct Tails<'r> {
    messages: Vec<MessageRow>,
    older: &'r BTreeSet<SessionId>,
    events: Vec<EventRow>,
    summaries: BTreeMap<SessionId, SessionSummary>,
}

/// A stored session restored with its tails (resident). The event log is authoritative for the
/// next seq (the session row is not rewritten on every event); stored frames are the host's
/// copies, and the remotes' copies are masked once, when loaded.
fn loaded_session(
    row: SessionRow,
    stored: SessionTails,
    masker: &Masker,
    now: u64,
) -> (Session, TurnLock, EventLog, History) {
    let (tail, history) = super::residency::resident_tails(stored, masker);
    let after_tail = tail.back().map(|(seq, _)| seq + 1).unwrap_or(1);
    let log = EventLog { next_seq: row.next_seq.max(after_tail), tail, resident: Some(now) };
    let (session, lock) = session_and_lock(row);
    (session, lock, log, history)
}

/// A stored session restored without its tails: its next seq follows its last stored event, and
/// its history says only whether the store has messages.
fn unloaded_session(row: SessionRow, summary: &SessionSummary) -> (Session, TurnLock, EventLog, History) {
    let log =
        EventLog { next_seq: row.next_seq.max(summary.last_event_seq + 1), tail: VecDeque::new(), resident: None };
    let history = History { has_older: summary.has_messages, ..History::default() };
    let (session, lock) = session_and_lock(row);
    (session, lock, log, history)
}

fn session_and_lock(row: SessionRow) -> (Session, TurnLock) {
    let lock = TurnLock { holder: row.turn_holder, turn_id: row.turn_id, streamed: row.streamed, consensus: true };
    (Session(row.session), lock)
}

/// A stored vote with its ballots (the host's is its decision), or `None` when its subject
/// cannot be read.
fn pending_vote(v: VoteRow, ballots: Vec<BallotRow>) -> Option<PendingVote> {
    let Ok(subject) = serde_json::from_str::<VoteSubject>(&v.subject_json) else {
        tracing::warn!(vote = %v.id, "unreadable vote subject; skipped");
        return None;
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
        id: v.id,
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
    for b in ballots {
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
    Some(vote)
}

/// First tick after start: give remotes a fresh grace period and close what the dead agent left.
pub fn recover(
    mut recovery: ResMut<Recovery>,
    config: Res<EngineConfig>,
    mut index: ResMut<Index>,
    mut participants: Query<&mut Participant>,
    mut votes: Query<&mut PendingVote>,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut turns: TurnEnds,
) {
    if !std::mem::take(&mut recovery.pending) {
        return;
    }
    super::presence::fresh_grace(&mut index, &mut participants, turns.clock.now + config.grace_ms);
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
