//! A vote's status in words, from its real state — shared by the host's window, a remote's
//! window and `roundtable join`, so the three say the same thing.
//!
//! A vote is what its frames say: `vote_opened` (the subject, who decides, the required
//! voters), the latest `vote_progress` (who approved, denied, answered, who is pending) and
//! `vote_resolved` (the outcome and who resolved it). [`VoteState`] holds the three and words:
//!
//! - who decides ([`VoteState::deciders`]): "everyone must approve: Ann, Bob", "Ann decides, as
//!   the turn holder", "the host decides";
//! - the ballots ([`VoteState::ballots`]): "Approved: Ann", "Denied: Bob", "Answered: Ann",
//!   "Pending: Bob" — only lists that have someone in them; a vote nobody else can vote on lists
//!   the host as pending until the host decides;
//! - the outcome ([`VoteState::outcome`]): "approved — the host decided for everyone",
//!   "answered — Ann: yes · Bob: no" (a question is answered, not agreed: who answered what).
//!
//! Names come from the caller ([`Names`]), which knows the rosters; ids are never shown.

use crate::ids::ParticipantId;
use crate::protocol::{DecidedBy, VoteOpened, VoteOutcome, VoteProgress, VoteResolved, VoteSubject};

/// How the caller names people: `name` is the display name the host used when it merged answers
/// ("Ann"); `me`, when given, is marked "(you)" in what is shown.
pub struct Names<'a> {
    pub name: &'a dyn Fn(&ParticipantId) -> String,
    pub me: Option<&'a ParticipantId>,
}

impl Names<'_> {
    fn label(&self, id: &ParticipantId) -> String {
        if self.me == Some(id) {
            format!("{} (you)", (self.name)(id))
        } else {
            (self.name)(id)
        }
    }

    fn list(&self, ids: &[ParticipantId]) -> String {
        ids.iter().map(|p| self.label(p)).collect::<Vec<_>>().join(", ")
    }
}

/// A vote as far as it is known: opened, its latest progress, its resolution.
#[derive(Clone, Copy, Debug)]
pub struct VoteState<'a> {
    pub opened: &'a VoteOpened,
    pub progress: Option<&'a VoteProgress>,
    pub resolved: Option<&'a VoteResolved>,
}

/// What the host is called where it decides or is pending.
pub const THE_HOST: &str = "the host";

impl<'a> VoteState<'a> {
    /// A vote known from its `vote_opened` only.
    pub fn opened(opened: &'a VoteOpened) -> Self {
        Self { opened, progress: None, resolved: None }
    }

    fn is_question(&self) -> bool {
        matches!(self.opened.subject, VoteSubject::Question { .. })
    }

    /// Required voters (from the latest progress: people who left are no longer required).
    fn required(&self) -> &'a [ParticipantId] {
        self.progress.map_or(&self.opened.required, |p| &p.required)
    }

    /// Whether the host alone decides: tool uses, and votes nobody else can vote on (the host's
    /// own turn, or nobody eligible).
    pub fn host_alone(&self) -> bool {
        self.opened.decided_by == DecidedBy::Host || self.opened.required.is_empty()
    }

    /// Whether the host may decide for everyone over other required voters (their ballots are
    /// then not needed): the host's window says so; when the host alone decides, there is
    /// nobody to overrule.
    pub fn host_may_overrule(&self) -> bool {
        !self.host_alone() && !matches!(self.opened.subject, VoteSubject::Tool { .. })
    }

    /// Who decides: "everyone must approve: Ann, Bob", "everyone answers: Ann, Bob", "Ann
    /// decides, as the turn holder", "the host decides".
    pub fn deciders(&self, names: &Names) -> String {
        if self.host_alone() {
            return format!("{THE_HOST} decides");
        }
        let required = &self.opened.required;
        match self.opened.decided_by {
            DecidedBy::Consensus if self.is_question() => format!("everyone answers: {}", names.list(required)),
            DecidedBy::Consensus => format!("everyone must approve: {}", names.list(required)),
            DecidedBy::Holder => format!("{} decides, as the turn holder", names.list(required)),
            DecidedBy::Host => format!("{THE_HOST} decides"),
        }
    }

    /// Who is still to decide: the pending required voters, or the host when nobody else can
    /// vote. Empty once resolved.
    pub fn pending(&self, names: &Names) -> Vec<String> {
        if self.resolved.is_some() {
            return Vec::new();
        }
        let pending = self.progress.map_or(&self.opened.required, |p| &p.pending);
        if self.host_alone() || pending.is_empty() {
            // Nobody else can (or still may) vote: it waits for the host.
            return vec![THE_HOST.to_string()];
        }
        pending.iter().map(|p| names.label(p)).collect()
    }

    /// The ballots, one line per list that has someone in it: "Approved: Ann", "Denied: Bob",
    /// "Answered: Ann" (open questions: once answered, [`VoteState::outcome`] says who answered
    /// what), "Pending: Bob".
    pub fn ballots(&self, names: &Names) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(p) = self.progress {
            if self.is_question() {
                if self.resolved.is_none() && !p.answered.is_empty() {
                    lines.push(format!("Answered: {}", names.list(&p.answered)));
                }
            } else {
                if !p.approved.is_empty() {
                    lines.push(format!("Approved: {}", names.list(&p.approved)));
                }
                if !p.denied.is_empty() {
                    lines.push(format!("Denied: {}", names.list(&p.denied)));
                }
            }
        }
        let pending = self.pending(names);
        if !pending.is_empty() {
            lines.push(format!("Pending: {}", pending.join(", ")));
        }
        lines
    }

    /// How the vote ended, `None` while it is open: "approved by consensus — everyone approved:
    /// Ann, Bob",
    /// "denied — Bob: needs tests", "answered — Ann: yes · Bob: no", "approved — Ann decided, as
    /// the turn holder", "approved — the host decided for everyone", "denied — the deadline
    /// passed". An answer of several lines keeps its line breaks.
    pub fn outcome(&self, names: &Names) -> Option<String> {
        let r = self.resolved?;
        let word = match r.outcome {
            VoteOutcome::Approved => "approved",
            VoteOutcome::Denied => "denied",
            VoteOutcome::Answered => "answered",
        };
        let answers = || self.answers_text(r, names);
        let reason = r.reason.as_deref().filter(|s| !s.is_empty());
        let how = match (r.resolved_by.as_str(), r.outcome) {
            ("consensus", VoteOutcome::Answered) => answers(),
            // Approval is agreement: everyone required approved.
            ("consensus", VoteOutcome::Approved) => {
                let approved = self.progress.map_or(self.required(), |p| &p.approved);
                return Some(if approved.is_empty() {
                    "approved by consensus".to_string()
                } else {
                    format!("approved by consensus — everyone approved: {}", names.list(approved))
                });
            }
            // The reason names who denied and why ("Bob: needs tests").
            ("consensus", VoteOutcome::Denied) => match (reason, self.progress.map(|p| &p.denied)) {
                (Some(reason), _) => return Some(format!("{word} — {reason}")),
                (None, Some(d)) if !d.is_empty() => format!("denied by {}", names.list(d)),
                (None, _) => "someone required denied".to_string(),
            },
            ("holder", VoteOutcome::Answered) => answers(),
            ("holder", _) => {
                let holder = names.list(&self.opened.required);
                if holder.is_empty() {
                    "the turn holder decided".to_string()
                } else {
                    format!("{holder} decided, as the turn holder")
                }
            }
            ("host", VoteOutcome::Answered) => format!("{THE_HOST} answered for everyone: {}", r.answers.join("; ")),
            ("host", _) => format!("{THE_HOST} decided for everyone"),
            ("allow_list", _) => "allowed by the host's allow list".to_string(),
            ("deadline", _) => "the deadline passed".to_string(),
            ("system", _) => "closed without a decision".to_string(),
            (other, _) => format!("by {other}"),
        };
        let mut text = format!("{word} — {how}");
        if let Some(reason) = reason {
            text.push_str(&format!(" — {reason}"));
        }
        Some(text)
    }

    /// Who answered what: "Ann: yes · Bob: no" per question ("1. …; 2. …" for several).
    fn answers_text(&self, r: &VoteResolved, names: &Names) -> String {
        let voters: &[ParticipantId] = match self.progress {
            Some(p) if !p.answered.is_empty() => &p.answered,
            _ => self.required(),
        };
        let per_question: Vec<String> =
            r.answers.iter().map(|merged| who_answered_what(merged, voters, names)).collect();
        match per_question.as_slice() {
            [one] => one.clone(),
            many => many.iter().enumerate().map(|(i, a)| format!("{}. {a}", i + 1)).collect::<Vec<_>>().join("; "),
        }
    }
}

/// One question's merged answer as "Ann: yes · Bob: no". The host merges identical answers into
/// one ("yes": everyone answered that) and writes differing ones as `Name: answer` lines sorted
/// by name; anything else is shown as it is.
fn who_answered_what(merged: &str, voters: &[ParticipantId], names: &Names) -> String {
    if voters.is_empty() {
        return merged.to_string();
    }
    let mut by_name: Vec<(String, &ParticipantId)> = voters.iter().map(|p| ((names.name)(p), p)).collect();
    // The host sorts its `Name: answer` lines as text.
    by_name.sort_by_key(|(n, _)| format!("{n}: "));
    let each = |answers: Vec<(&ParticipantId, &str)>| {
        answers.iter().map(|(p, a)| format!("{}: {a}", names.label(p))).collect::<Vec<_>>().join(" · ")
    };
    if by_name.len() > 1 {
        if let Some(split) = split_by_name(merged, &by_name) {
            return each(split);
        }
        if by_name.iter().any(|(n, _)| merged.starts_with(&format!("{n}: "))) && merged.contains('\n') {
            // Per-person lines this window cannot match to its names (someone was renamed).
            return merged.lines().collect::<Vec<_>>().join(" · ");
        }
    }
    each(by_name.iter().map(|(_, p)| (*p, merged)).collect())
}

/// Splits "Ann: yes\nBob: no" at each voter's `Name: ` in name order, or `None` when it is not
/// written that way.
fn split_by_name<'m, 'p>(
    merged: &'m str,
    by_name: &[(String, &'p ParticipantId)],
) -> Option<Vec<(&'p ParticipantId, &'m str)>> {
    let mut rest = merged.strip_prefix(&format!("{}: ", by_name[0].0))?;
    let mut out = Vec::new();
    for (i, (_, id)) in by_name.iter().enumerate() {
        let answer = match by_name.get(i + 1) {
            Some((next, _)) => {
                let marker = format!("\n{next}: ");
                let at = rest.find(&marker)?;
                let (answer, tail) = rest.split_at(at);
                rest = &tail[marker.len()..];
                answer
            }
            None => rest,
        };
        out.push((*id, answer));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VoteId;
    use crate::protocol::Question;

    fn name(id: &ParticipantId) -> String {
        match id.as_str() {
            "p1" => "Ann".into(),
            "p2" => "Bob".into(),
            other => other.into(),
        }
    }

    fn question(required: &[&str]) -> VoteOpened {
        VoteOpened {
            vote_id: VoteId::nth(1),
            subject: VoteSubject::Question {
                questions: vec![Question {
                    question: "Go?".into(),
                    options: vec!["yes".into(), "no".into()],
                    multi_select: false,
                }],
            },
            decided_by: DecidedBy::Consensus,
            required: required.iter().map(|p| ParticipantId::from(*p)).collect(),
            deadline_ms: None,
        }
    }

    fn answered(answers: &[&str], by: &str) -> VoteResolved {
        VoteResolved {
            vote_id: VoteId::nth(1),
            outcome: VoteOutcome::Answered,
            reason: None,
            answers: answers.iter().map(|a| a.to_string()).collect(),
            resolved_by: by.into(),
        }
    }

    #[test]
    fn a_question_says_who_answered_what_whether_the_answers_differ_or_not() {
        let names = Names { name: &name, me: None };
        let opened = question(&["p1", "p2"]);
        let differ = answered(&["Ann: yes\nBob: no"], "consensus");
        let state = VoteState { opened: &opened, progress: None, resolved: Some(&differ) };
        assert_eq!(state.outcome(&names).unwrap(), "answered — Ann: yes · Bob: no");
        let same = answered(&["yes"], "consensus");
        let state = VoteState { opened: &opened, progress: None, resolved: Some(&same) };
        assert_eq!(state.outcome(&names).unwrap(), "answered — Ann: yes · Bob: yes");
        // Multi-line answers keep their lines.
        let long = answered(&["Ann: yes\nbut later\nBob: no"], "consensus");
        let state = VoteState { opened: &opened, progress: None, resolved: Some(&long) };
        assert_eq!(state.outcome(&names).unwrap(), "answered — Ann: yes\nbut later · Bob: no");
    }

    #[test]
    fn a_vote_only_the_host_can_decide_lists_the_host_as_pending_and_no_empty_lists() {
        let names = Names { name: &name, me: None };
        let mut opened = question(&[]);
        opened.subject = VoteSubject::Plan { plan: "p".into(), on_approval: None };
        opened.decided_by = DecidedBy::Holder;
        let state = VoteState::opened(&opened);
        assert_eq!(state.deciders(&names), "the host decides");
        assert_eq!(state.ballots(&names), vec!["Pending: the host".to_string()]);
        assert!(!state.host_may_overrule());
        let r = VoteResolved {
            vote_id: VoteId::nth(1),
            outcome: VoteOutcome::Approved,
            reason: None,
            answers: vec![],
            resolved_by: "host".into(),
        };
        let state = VoteState { resolved: Some(&r), ..state };
        assert!(state.ballots(&names).is_empty());
        assert_eq!(state.outcome(&names).unwrap(), "approved — the host decided for everyone");
    }
}
