//! Rule: opening a vote snapshots the required voters — present, non-muted, non-observer
//! participants of the session (the host decides separately and may always decide alone).
//! Without consensus (share not consensus_required, or 1:1) the turn holder alone decides.

use super::params::*;
use super::resources::*;
use super::util::emit;
use crate::components::*;
use crate::ids::VoteId;
use crate::persist::{AuditRow, StoreOp, VoteRow};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use std::collections::BTreeSet;

pub fn open_vote(
    mut requests: MessageReader<VoteRequested>,
    env: TickEnv,
    registry: Registry,
    participants: Query<&Participant>,
    shares: Query<&Share>,
    mut sessions: Query<(&mut Session, &TurnLock, &mut EventLog)>,
    fx: Effects,
) {
    let TickEnv { clock, config } = env;
    let Registry { mut index, mut counters, mut commands } = registry;
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    for req in requests.read() {
        let Some(&se) = index.sessions.get(&req.session) else { continue };
        let Ok((mut session, lock, mut log)) = sessions.get_mut(se) else { continue };
        let Some(holder) = lock.holder.clone() else { continue };
        let holder_p = index.participants.get(&holder).and_then(|&e| participants.get(e).ok());
        let holder_share =
            holder_p.and_then(|p| p.share.as_ref()).and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
        let eligible = |p: &Participant| {
            p.presence.is_present() && !p.muted && p.role == Role::Participant && p.sessions.contains(&req.session)
        };
        let (decided_by, required): (DecidedBy, BTreeSet<_>) = match (&req.subject, lock.consensus) {
            (VoteSubject::Tool { .. }, _) => (DecidedBy::Host, BTreeSet::new()),
            (_, true) => (
                DecidedBy::Consensus,
                index
                    .participants
                    .values()
                    .filter_map(|&e| participants.get(e).ok())
                    .filter(|p| eligible(p))
                    .map(|p| p.id.clone())
                    .collect(),
            ),
            (_, false) => {
                (DecidedBy::Holder, holder_p.filter(|p| eligible(p)).map(|p| p.id.clone()).into_iter().collect())
            }
        };
        let deadline_ms = session
            .vote_deadline_ms
            .or(holder_share.and_then(|s| s.vote_deadline_ms))
            .or(config.default_vote_deadline_ms);
        counters.vote += 1;
        let id = VoteId::nth(counters.vote);
        let vote = PendingVote {
            id: id.clone(),
            session: req.session.clone(),
            turn_id: req.turn_id,
            request_id: req.request_id.clone(),
            subject: req.subject.clone(),
            decided_by,
            required,
            ballots: Default::default(),
            deadline: deadline_ms.map(|d| now + d),
            opened_at: now,
            host_decision: None,
            allow_listed: false,
            outcome: None,
        };
        // A tool the host allowed "always" in this session is approved at once, in the open.
        let mut vote = vote;
        if let VoteSubject::Tool { tool, .. } = &vote.subject {
            if session.allowed_tools.contains(tool) {
                vote.allow_listed = true;
                vote.host_decision = Some(Ballot::Approve);
            }
        }
        session.status = SessionStatus::AwaitingVote;
        // What remotes' stream masker holds back stays held: it may be the start of a secret the
        // agent goes on writing after the vote (it goes out with the next delta or the reply).
        emit(
            &mut log,
            &req.session,
            Event::VoteOpened(VoteOpened {
                vote_id: id.clone(),
                subject: vote.subject.clone(),
                decided_by,
                required: vote.required.iter().cloned().collect(),
                deadline_ms: vote.deadline,
            }),
            &mut batch,
            &mut staged,
        );
        batch.push(StoreOp::PutSession(session.row(lock, &log)));
        batch.push(StoreOp::PutVote(vote_row(&vote)));
        batch.push(StoreOp::Audit(AuditRow {
            at: now,
            actor: "agent".into(),
            action: "vote_opened".into(),
            target: id.to_string(),
            detail: format!("{} in {}", subject_kind(&vote.subject), req.session),
        }));
        let e = commands.spawn(vote).id();
        index.votes.insert(id, e);
    }
}

pub fn subject_kind(s: &VoteSubject) -> &'static str {
    match s {
        VoteSubject::Plan { .. } => "plan",
        VoteSubject::Question { .. } => "question",
        VoteSubject::Tool { .. } => "tool",
    }
}

/// The persisted form of a vote.
pub fn vote_row(v: &PendingVote) -> VoteRow {
    VoteRow {
        id: v.id.clone(),
        session: v.session.clone(),
        turn_id: v.turn_id,
        request_id: v.request_id.clone(),
        subject_json: serde_json::to_string(&v.subject).expect("subject serialises"),
        decided_by: serde_json::to_value(v.decided_by)
            .ok()
            .and_then(|x| x.as_str().map(String::from))
            .unwrap_or_default(),
        required: v.required.iter().cloned().collect(),
        deadline: v.deadline,
        outcome: v.outcome.as_ref().map(|o| {
            serde_json::to_value(o.outcome).ok().and_then(|x| x.as_str().map(String::from)).unwrap_or_default()
        }),
        reason: v.outcome.as_ref().and_then(|o| o.reason.clone()),
        opened_at: v.opened_at,
    }
}
