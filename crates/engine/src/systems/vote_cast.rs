//! Rule: casting ballots. Re-voting replaces your ballot; ballots from non-voters or on resolved
//! votes are rejected (`not_a_voter`, `stale_vote`); observers are `forbidden`; the host may
//! always decide alone.

use super::params::*;
use super::requests::{Cast, Req};
use super::resources::*;
use super::util::{caller, emit, in_scope, reply_err, reply_ok};
use crate::components::*;
use crate::persist::{AuditRow, BallotRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

/// Progress payload for a vote.
pub fn progress(v: &PendingVote) -> VoteProgress {
    let mut p = VoteProgress {
        vote_id: v.id.clone(),
        required: v.required.iter().cloned().collect(),
        approved: vec![],
        denied: vec![],
        answered: vec![],
        pending: vec![],
    };
    for r in &v.required {
        match v.ballots.get(r) {
            Some(Ballot::Approve) => p.approved.push(r.clone()),
            Some(Ballot::Deny(_)) => p.denied.push(r.clone()),
            Some(Ballot::Answer(_)) => p.answered.push(r.clone()),
            None => p.pending.push(r.clone()),
        }
    }
    p
}

pub fn cast_ballot(
    mut requests: MessageReader<Req<Cast>>,
    clock: Res<Clock>,
    dir: Directory,
    mut votes: Query<&mut PendingVote>,
    mut sessions: Query<(&mut Session, &TurnLock, &mut EventLog)>,
    fx: Effects,
) {
    let Directory { index, conns, participants, shares } = dir;
    let Effects { mut staged, mut batch } = fx;
    for req in requests.read() {
        let (vote_id, ballot, always) = match &req.params {
            Cast::VotePlan(p) => {
                let b = if p.approve { Ballot::Approve } else { Ballot::Deny(p.reason.clone().unwrap_or_default()) };
                (&p.vote_id, b, p.always)
            }
            Cast::AnswerQuestion(p) => (&p.vote_id, Ballot::Answer(p.answers.clone()), false),
        };
        let Some((me, share)) = caller(&index, &conns, &participants, &shares, req.conn) else { continue };
        let Some(mut vote) = index.votes.get(vote_id).and_then(|&e| votes.get_mut(e).ok()).filter(|v| {
            index
                .sessions
                .get(&v.session)
                .and_then(|&e| sessions.get(e).ok())
                .is_some_and(|(s, ..)| in_scope(me, share, &s.workspace))
        }) else {
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("no vote {vote_id}"));
            continue;
        };
        if !me.can_write() {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::Forbidden,
                "observers can read but not vote or answer",
            );
            continue;
        }
        if vote.outcome.is_some() {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::StaleVote,
                format!("vote {vote_id} is already resolved"),
            );
            continue;
        }
        match (&vote.subject, &ballot) {
            (VoteSubject::Question { questions }, Ballot::Answer(a))
                if a.len() != questions.len() || a.iter().any(|x| x.trim().is_empty()) =>
            {
                reply_err(
                    &mut staged,
                    req.conn,
                    &req.id,
                    ErrorCode::InvalidParams,
                    format!("give exactly {} non-empty answer(s), one per question", questions.len()),
                );
                continue;
            }
            (VoteSubject::Question { .. }, Ballot::Answer(_)) => {}
            (VoteSubject::Question { .. }, _) => {
                reply_err(
                    &mut staged,
                    req.conn,
                    &req.id,
                    ErrorCode::InvalidParams,
                    format!("{vote_id} is a question: use answer_question"),
                );
                continue;
            }
            (_, Ballot::Answer(_)) => {
                reply_err(
                    &mut staged,
                    req.conn,
                    &req.id,
                    ErrorCode::InvalidParams,
                    format!("{vote_id} is an approval: use vote_plan"),
                );
                continue;
            }
            _ => {}
        }
        let tool = match &vote.subject {
            VoteSubject::Tool { tool, .. } => Some(tool.clone()),
            _ => None,
        };
        if always && (!me.id.is_host() || tool.is_none() || ballot != Ballot::Approve) {
            let msg = "`always` is only for the host approving a tool request";
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::InvalidParams, msg);
            continue;
        }
        if me.id.is_host() {
            vote.host_decision = Some(ballot.clone());
            if let (true, Some(tool)) = (always, tool) {
                if let Some((mut session, lock, log)) =
                    index.sessions.get(&vote.session).and_then(|&e| sessions.get_mut(e).ok())
                {
                    session.allowed_tools.insert(tool.clone());
                    batch.push(StoreOp::PutSession(session.row(lock, &log)));
                    batch.push(StoreOp::Audit(AuditRow {
                        at: clock.now,
                        actor: "host".into(),
                        action: "tool_allowed".into(),
                        target: vote.session.to_string(),
                        detail: tool,
                    }));
                }
            }
        } else if vote.required.contains(&me.id) {
            vote.ballots.insert(me.id.clone(), ballot.clone());
        } else {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::NotAVoter,
                format!("you are not a required voter of {vote_id}"),
            );
            continue;
        }
        let (choice, detail) = match &ballot {
            Ballot::Approve => ("approve", None),
            Ballot::Deny(r) => ("deny", Some(r.clone())),
            Ballot::Answer(a) => ("answer", Some(serde_json::to_string(a).expect("strings serialise"))),
        };
        batch.push(StoreOp::PutBallot(BallotRow {
            vote: vote.id.clone(),
            voter: me.id.clone(),
            choice: choice.into(),
            detail,
            at: clock.now,
        }));
        batch.push(StoreOp::Audit(AuditRow {
            at: clock.now,
            actor: me.id.to_string(),
            action: "voted".into(),
            target: vote.id.to_string(),
            detail: choice.into(),
        }));
        if let Some((_, _, mut log)) = index.sessions.get(&vote.session).and_then(|&e| sessions.get_mut(e).ok()) {
            emit(&mut log, &vote.session, Event::VoteProgress(progress(&vote)), &mut batch, &mut staged);
        }
        reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
    }
}
