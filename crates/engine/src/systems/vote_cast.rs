//! Rule: casting ballots. Re-voting replaces your ballot; ballots from non-voters or on resolved
//! votes are rejected (`not_a_voter`, `stale_vote`); observers are `forbidden`; the host may
//! always decide alone.

use super::params::*;
use super::requests::{Cast, Req};
use super::resources::*;
use super::util::in_scope;
use crate::components::*;
use crate::ids::{ParticipantId, SessionId, VoteId};
use crate::persist::{AuditRow, BallotRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

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

/// What casting a ballot reads and writes.
#[derive(SystemParam)]
pub struct Ballots<'w, 's> {
    clock: Res<'w, Clock>,
    dir: Directory<'w, 's>,
    votes: Query<'w, 's, &'static mut PendingVote>,
    sessions: Query<'w, 's, (&'static mut Session, &'static TurnLock, &'static mut EventLog)>,
    fx: Effects<'w>,
}

/// `vote_plan` and `answer_question`: both cast a ballot, checked and recorded the same way.
pub fn cast_ballot(mut requests: MessageReader<Req<Cast>>, mut ballots: Ballots) {
    for req in requests.read() {
        let (vote_id, ballot, always) = match &req.params {
            Cast::VotePlan(p) => {
                let b = if p.approve { Ballot::Approve } else { Ballot::Deny(p.reason.clone().unwrap_or_default()) };
                (&p.vote_id, b, p.always)
            }
            Cast::AnswerQuestion(p) => (&p.vote_id, Ballot::Answer(p.answers.clone()), false),
        };
        ballots.cast(req, vote_id, ballot, always);
    }
}

impl Ballots<'_, '_> {
    /// Casts the caller's ballot on a vote in its scope: the host's decides alone (and with
    /// `always` allows the tool for the session), a required voter's counts; answered either way.
    fn cast(&mut self, req: &Req<Cast>, vote_id: &VoteId, ballot: Ballot, always: bool) {
        let Some((me, share)) = self.dir.get(req.conn) else { return };
        let Some(ve) = self.visible_vote(me, share, vote_id) else {
            return self.fx.reply_err(req.conn, &req.id, ErrorCode::NotFound, format!("no vote {vote_id}"));
        };
        let vote = self.votes.get(ve).expect("found");
        if let Some((code, why)) = refusal(me, vote, vote_id, &ballot, always) {
            return self.fx.reply_err(req.conn, &req.id, code, why);
        }
        let voter = me.id.clone();
        let session = vote.session.clone();
        if voter.is_host() {
            let tool = match &vote.subject {
                VoteSubject::Tool { tool, .. } => Some(tool.clone()),
                _ => None,
            };
            self.votes.get_mut(ve).expect("found").host_decision = Some(ballot.clone());
            if let (true, Some(tool)) = (always, tool) {
                self.allow_tool(&session, tool);
            }
        } else if vote.required.contains(&voter) {
            self.votes.get_mut(ve).expect("found").ballots.insert(voter.clone(), ballot.clone());
        } else {
            let why = format!("you are not a required voter of {vote_id}");
            return self.fx.reply_err(req.conn, &req.id, ErrorCode::NotAVoter, why);
        }
        self.record(ve, &voter, &ballot);
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }

    /// Vote `id`'s entity, if its session is in the caller's scope.
    fn visible_vote(&self, me: &Participant, share: Option<&Share>, id: &VoteId) -> Option<Entity> {
        let index = &self.dir.index;
        let visible = |v: &PendingVote| {
            let session = index.sessions.get(&v.session).and_then(|&e| self.sessions.get(e).ok());
            session.is_some_and(|(s, ..)| in_scope(me, share, &s.workspace))
        };
        index.votes.get(id).copied().filter(|&e| self.votes.get(e).is_ok_and(visible))
    }

    /// The host approved a tool request `always`: the session runs the tool without asking again.
    fn allow_tool(&mut self, session_id: &SessionId, tool: String) {
        let entity = self.dir.index.sessions.get(session_id).copied();
        let Some((mut session, lock, log)) = entity.and_then(|e| self.sessions.get_mut(e).ok()) else { return };
        session.allowed_tools.insert(tool.clone());
        self.fx.persist(StoreOp::PutSession(session.row(lock, &log)));
        self.fx.persist(StoreOp::Audit(AuditRow {
            at: self.clock.now,
            actor: "host".into(),
            action: "tool_allowed".into(),
            target: session_id.to_string(),
            detail: tool,
        }));
    }

    /// Stores the ballot, audits it and shows the vote's progress to the session.
    fn record(&mut self, ve: Entity, voter: &ParticipantId, ballot: &Ballot) {
        let vote = self.votes.get(ve).expect("found");
        let (choice, detail) = match ballot {
            Ballot::Approve => ("approve", None),
            Ballot::Deny(r) => ("deny", Some(r.clone())),
            Ballot::Answer(a) => ("answer", Some(serde_json::to_string(a).expect("strings serialise"))),
        };
        let at = self.clock.now;
        let row = BallotRow { vote: vote.id.clone(), voter: voter.clone(), choice: choice.into(), detail, at };
        self.fx.persist(StoreOp::PutBallot(row));
        self.fx.persist(StoreOp::Audit(AuditRow {
            at,
            actor: voter.to_string(),
            action: "voted".into(),
            target: vote.id.to_string(),
            detail: choice.into(),
        }));
        let entity = self.dir.index.sessions.get(&vote.session).copied();
        if let Some((_, _, mut log)) = entity.and_then(|e| self.sessions.get_mut(e).ok()) {
            self.fx.emit(&mut log, &vote.session, Event::VoteProgress(progress(vote)));
        }
    }
}

/// Why `me` may not cast `ballot` on `vote` (code and message), if it may not: observers never
/// vote, a resolved vote takes no ballots, a question takes answers (one per question) and an
/// approval takes approve/deny, and `always` is only for the host approving a tool request.
fn refusal(
    me: &Participant,
    vote: &PendingVote,
    vote_id: &VoteId,
    ballot: &Ballot,
    always: bool,
) -> Option<(ErrorCode, String)> {
    if !me.can_write() {
        return Some((ErrorCode::Forbidden, "observers can read but not vote or answer".into()));
    }
    if vote.outcome.is_some() {
        return Some((ErrorCode::StaleVote, format!("vote {vote_id} is already resolved")));
    }
    match (&vote.subject, ballot) {
        (VoteSubject::Question { questions }, Ballot::Answer(a))
            if a.len() != questions.len() || a.iter().any(|x| x.trim().is_empty()) =>
        {
            let why = format!("give exactly {} non-empty answer(s), one per question", questions.len());
            return Some((ErrorCode::InvalidParams, why));
        }
        (VoteSubject::Question { .. }, Ballot::Answer(_)) => {}
        (VoteSubject::Question { .. }, _) => {
            return Some((ErrorCode::InvalidParams, format!("{vote_id} is a question: use answer_question")));
        }
        (_, Ballot::Answer(_)) => {
            return Some((ErrorCode::InvalidParams, format!("{vote_id} is an approval: use vote_plan")));
        }
        _ => {}
    }
    let tool_request = matches!(vote.subject, VoteSubject::Tool { .. });
    if always && (!me.id.is_host() || !tool_request || *ballot != Ballot::Approve) {
        let why = "`always` is only for the host approving a tool request";
        return Some((ErrorCode::InvalidParams, why.into()));
    }
    None
}
