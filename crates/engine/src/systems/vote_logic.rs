//! Pure vote resolution (the property-tested heart of consensus).
//!
//! - The host may always decide alone: its ballot resolves the vote at once.
//! - Plan / tool approval: any required deny resolves it denied at once (reasons as
//!   `Name: reason` lines sorted by name); all required approvals resolve it approved.
//! - Questions: when every required voter answered, identical answers merge; differing answers
//!   are combined as `Name: answer` lines sorted by name (per question).
//! - An empty required set never auto-approves: the decision falls to the host.

use crate::components::{Ballot, PendingVote, Resolved};
use crate::ids::ParticipantId;
use crate::protocol::{VoteOutcome, VoteSubject};
use std::collections::BTreeMap;

/// Decides whether the vote resolves now. `names` maps voters to display names.
pub fn evaluate(vote: &PendingVote, names: &BTreeMap<ParticipantId, String>) -> Option<Resolved> {
    if vote.outcome.is_some() {
        return None;
    }
    if let Some(decision) = &vote.host_decision {
        return Some(from_single(decision, if vote.allow_listed { "allow_list" } else { "host" }));
    }
    if vote.required.is_empty() {
        return None;
    }
    let name = |p: &ParticipantId| names.get(p).cloned().unwrap_or_else(|| p.to_string());
    let ballots: Vec<(&ParticipantId, &Ballot)> =
        vote.required.iter().filter_map(|p| vote.ballots.get(p).map(|b| (p, b))).collect();
    match &vote.subject {
        VoteSubject::Plan { .. } | VoteSubject::Tool { .. } => {
            let mut denials: Vec<(String, String)> = ballots
                .iter()
                .filter_map(|(p, b)| match b {
                    Ballot::Deny(r) => Some((name(p), r.clone())),
                    _ => None,
                })
                .collect();
            if !denials.is_empty() {
                denials.sort();
                let reason = denials
                    .iter()
                    .map(|(n, r)| if r.is_empty() { format!("{n}: denied") } else { format!("{n}: {r}") })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Some(Resolved {
                    outcome: VoteOutcome::Denied,
                    reason: Some(reason),
                    answers: Vec::new(),
                    resolved_by: "consensus".into(),
                });
            }
            let all = vote.required.iter().all(|p| matches!(vote.ballots.get(p), Some(Ballot::Approve)));
            all.then(|| Resolved {
                outcome: VoteOutcome::Approved,
                reason: None,
                answers: Vec::new(),
                resolved_by: "consensus".into(),
            })
        }
        VoteSubject::Question { questions } => {
            let answers: Vec<(String, &Vec<String>)> = vote
                .required
                .iter()
                .map(|p| match vote.ballots.get(p) {
                    Some(Ballot::Answer(a)) => Some((name(p), a)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let mut sorted = answers;
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let merged = (0..questions.len().max(1))
                .map(|i| {
                    let per: Vec<(&str, &str)> =
                        sorted.iter().map(|(n, a)| (n.as_str(), a.get(i).map(String::as_str).unwrap_or(""))).collect();
                    merge_answers(&per)
                })
                .collect();
            Some(Resolved {
                outcome: VoteOutcome::Answered,
                reason: None,
                answers: merged,
                resolved_by: "consensus".into(),
            })
        }
    }
}

/// Identical answers merge into one; differing answers become `Name: answer` lines sorted by name.
pub fn merge_answers(per_voter: &[(&str, &str)]) -> String {
    let first = per_voter.first().map(|(_, a)| *a).unwrap_or("");
    if per_voter.iter().all(|(_, a)| *a == first) {
        return first.to_string();
    }
    let mut lines: Vec<String> = per_voter.iter().map(|(n, a)| format!("{n}: {a}")).collect();
    lines.sort();
    lines.join("\n")
}

fn from_single(b: &Ballot, by: &str) -> Resolved {
    match b {
        Ballot::Approve => {
            Resolved { outcome: VoteOutcome::Approved, reason: None, answers: Vec::new(), resolved_by: by.into() }
        }
        Ballot::Deny(r) => Resolved {
            outcome: VoteOutcome::Denied,
            reason: Some(if r.is_empty() { "denied by the host".into() } else { r.clone() }),
            answers: Vec::new(),
            resolved_by: by.into(),
        },
        Ballot::Answer(a) => {
            Resolved { outcome: VoteOutcome::Answered, reason: None, answers: a.clone(), resolved_by: by.into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, VoteId};
    use crate::protocol::{DecidedBy, Question};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn vote(subject: VoteSubject, required: &[u64]) -> PendingVote {
        PendingVote {
            id: VoteId::nth(1),
            session: SessionId::nth(1),
            turn_id: 1,
            request_id: "r".into(),
            subject,
            decided_by: DecidedBy::Consensus,
            required: required.iter().map(|&n| ParticipantId::nth(n)).collect(),
            ballots: Default::default(),
            deadline: None,
            opened_at: 0,
            host_decision: None,
            allow_listed: false,
            outcome: None,
        }
    }

    fn plan() -> VoteSubject {
        VoteSubject::Plan { plan: "p".into(), on_approval: None }
    }

    fn names() -> BTreeMap<ParticipantId, String> {
        (1..10).map(|n| (ParticipantId::nth(n), format!("N{n}"))).collect()
    }

    #[test]
    fn any_deny_resolves_denied_with_reasons_sorted_by_name() {
        let mut v = vote(plan(), &[1, 2, 3]);
        v.ballots.insert(ParticipantId::nth(2), Ballot::Deny("no tests".into()));
        v.ballots.insert(ParticipantId::nth(1), Ballot::Deny("too big".into()));
        let r = evaluate(&v, &names()).unwrap();
        assert_eq!(r.outcome, VoteOutcome::Denied);
        assert_eq!(r.reason.unwrap(), "N1: too big\nN2: no tests");
    }

    #[test]
    fn all_approvals_resolve_approved() {
        let mut v = vote(plan(), &[1, 2]);
        v.ballots.insert(ParticipantId::nth(1), Ballot::Approve);
        assert!(evaluate(&v, &names()).is_none());
        v.ballots.insert(ParticipantId::nth(2), Ballot::Approve);
        assert_eq!(evaluate(&v, &names()).unwrap().outcome, VoteOutcome::Approved);
    }

    #[test]
    fn empty_required_set_never_auto_approves() {
        let v = vote(plan(), &[]);
        assert!(evaluate(&v, &names()).is_none());
    }

    #[test]
    fn differing_answers_are_combined_by_name() {
        let q = VoteSubject::Question {
            questions: vec![Question { question: "q".into(), options: vec![], multi_select: false }],
        };
        let mut v = vote(q, &[1, 2]);
        v.ballots.insert(ParticipantId::nth(2), Ballot::Answer(vec!["no".into()]));
        v.ballots.insert(ParticipantId::nth(1), Ballot::Answer(vec!["yes".into()]));
        assert_eq!(evaluate(&v, &names()).unwrap().answers, vec!["N1: yes\nN2: no".to_string()]);
        v.ballots.insert(ParticipantId::nth(2), Ballot::Answer(vec!["yes".into()]));
        assert_eq!(evaluate(&v, &names()).unwrap().answers, vec!["yes".to_string()]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Approve(u64),
        Deny(u64),
        Remove(u64),
        /// The host decides (approve when true).
        Host(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..6).prop_map(Op::Approve),
            2 => (1u64..6).prop_map(Op::Deny),
            2 => (1u64..6).prop_map(Op::Remove),
            1 => any::<bool>().prop_map(Op::Host),
        ]
    }

    proptest! {
        /// After every ballot, removal or host decision the outcome is exactly what the rules
        /// say (an oracle, not a bound): a host decision resolves at once as the host said; else
        /// any deny from a remaining voter denies at once; else approval needs every remaining
        /// voter's approval (and someone left to give it); else the vote stays open.
        #[test]
        fn plan_votes_resolve_exactly_as_the_rules_say(ops in proptest::collection::vec(op(), 0..30), n in 1u64..6) {
            let mut v = vote(plan(), &(1..=n).collect::<Vec<_>>());
            for o in ops {
                match o {
                    Op::Approve(p) if v.required.contains(&ParticipantId::nth(p)) => { v.ballots.insert(ParticipantId::nth(p), Ballot::Approve); }
                    Op::Deny(p) if v.required.contains(&ParticipantId::nth(p)) => { v.ballots.insert(ParticipantId::nth(p), Ballot::Deny("x".into())); }
                    Op::Remove(p) => { v.required.remove(&ParticipantId::nth(p)); }
                    Op::Host(approve) => {
                        v.host_decision = Some(if approve { Ballot::Approve } else { Ballot::Deny("host says no".into()) });
                    }
                    _ => {}
                }
                let expected = match &v.host_decision {
                    Some(Ballot::Approve) => Some((VoteOutcome::Approved, "host")),
                    Some(_) => Some((VoteOutcome::Denied, "host")),
                    None if v.required.iter().any(|p| matches!(v.ballots.get(p), Some(Ballot::Deny(_)))) => {
                        Some((VoteOutcome::Denied, "consensus"))
                    }
                    None if !v.required.is_empty() && v.required.iter().all(|p| v.ballots.get(p) == Some(&Ballot::Approve)) => {
                        Some((VoteOutcome::Approved, "consensus"))
                    }
                    None => None,
                };
                let got = evaluate(&v, &names());
                prop_assert_eq!(got.as_ref().map(|r| (r.outcome, r.resolved_by.as_str())), expected, "after {:?}", o);
                if let Some(r) = got {
                    v.outcome = Some(r);
                    break;
                }
            }
        }

        /// Question votes resolve exactly when every remaining required voter answered.
        #[test]
        fn question_votes_resolve_when_everyone_answered(answers in proptest::collection::vec((1u64..5, "[ab]"), 0..12), removed in proptest::collection::btree_set(1u64..5, 0..3)) {
            let q = VoteSubject::Question { questions: vec![Question { question: "q".into(), options: vec![], multi_select: false }] };
            let mut v = vote(q, &[1, 2, 3, 4]);
            for (p, a) in answers { v.ballots.insert(ParticipantId::nth(p), Ballot::Answer(vec![a])); }
            for r in &removed { v.required.remove(&ParticipantId::nth(*r)); }
            let all: BTreeSet<_> = v.required.iter().filter(|p| v.ballots.contains_key(*p)).cloned().collect();
            let resolved = evaluate(&v, &names());
            prop_assert_eq!(resolved.is_some(), !v.required.is_empty() && all.len() == v.required.len());
        }
    }
}
