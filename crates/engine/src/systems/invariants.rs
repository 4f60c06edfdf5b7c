//! Invariant checks (docs/RULES.md §8), run every tick in tests, scenarios and simulation (only when
//! `check_invariants` is on; production skips the system). A violation is recorded with the
//! tick and fails loudly (panics).

use super::params::*;
use super::resources::*;
use super::util::in_scope;
use crate::components::*;
use bevy_ecs::prelude::*;

/// What the checker remembers from tick to tick.
#[derive(Default)]
pub struct Seen {
    /// Per session: the turn id and holder last seen.
    turns: std::collections::BTreeMap<crate::ids::SessionId, (u64, crate::ids::ParticipantId)>,
    /// Per session: the last seq read from the event log and the turn it left running.
    turn_events: std::collections::BTreeMap<crate::ids::SessionId, (u64, Option<u64>)>,
    /// Participants in grace and until when.
    graces: std::collections::BTreeMap<crate::ids::ParticipantId, u64>,
}

pub fn check_invariants(
    env: TickEnv,
    dir: Directory,
    sessions: Query<(&Session, &TurnLock, &EventLog, &History)>,
    votes: Query<&PendingVote>,
    mut violations: ResMut<Violations>,
    mut seen: Local<Seen>,
) {
    let Seen { turns: turns_seen, turn_events, graces } = &mut *seen;
    let TickEnv { clock, config } = env;
    let Directory { index, conns, participants, shares } = dir;
    let mut found: Vec<String> = Vec::new();
    if clock.driver < clock.now {
        found.push(format!(
            "the driver's clock reads {} ms, behind engine time: deadlines and grace periods stand still",
            clock.driver
        ));
    }
    let participant =
        |id: &crate::ids::ParticipantId| index.participants.get(id).and_then(|&e| participants.get(e).ok());
    for (sid, &se) in index.sessions.iter() {
        let Ok((session, lock, log, history)) = sessions.get(se) else { continue };
        // Scope checks read the session's workspace from the index (`Index::session_in_scope`).
        if index.session_workspaces.get(sid) != Some(&session.workspace) {
            found.push(format!("session {sid}: the index does not know its workspace {}", session.workspace));
        }
        // Time in history never goes back, and nothing is stamped in the future (engine time
        // continues from the stored world after a restart, whatever the wall clock says).
        let mut previous = 0;
        for m in &history.messages {
            if m.created_at < previous {
                found.push(format!("session {sid}: message {} (seq {}) is older than the one before it", m.id, m.seq));
            }
            if m.created_at > clock.now {
                found.push(format!("session {sid}: message {} is stamped after the engine's time", m.id));
            }
            previous = m.created_at;
        }
        // The turn lock and the session's status tell the same story.
        use crate::protocol::SessionStatus;
        match (&lock.holder, session.status) {
            (None, SessionStatus::Idle) | (Some(_), SessionStatus::Running | SessionStatus::AwaitingVote) => {}
            (holder, status) => {
                found.push(format!("session {sid}: status {} with turn holder {holder:?}", status.as_str()))
            }
        }
        if session.status == SessionStatus::AwaitingVote {
            let open = index
                .votes
                .values()
                .filter_map(|&e| votes.get(e).ok())
                .any(|v| v.outcome.is_none() && v.session == *sid && v.turn_id == lock.turn_id);
            if !open {
                found.push(format!("session {sid}: awaiting a vote but turn {} has no open vote", lock.turn_id));
            }
        }
        // One holder per turn: a turn's holder never changes hands (a new holder means a new
        // turn, after the old one ended).
        if let Some(h) = &lock.holder {
            if let Some((turn, before)) = turns_seen.get(sid) {
                if *turn == lock.turn_id && before != h {
                    found.push(format!("session {sid}: turn {turn} changed holder from {before} to {h}"));
                }
                if lock.turn_id < *turn {
                    found.push(format!("session {sid}: turn id went back from {turn} to {}", lock.turn_id));
                }
            }
            turns_seen.insert(sid.clone(), (lock.turn_id, h.clone()));
        }
        if let Some(h) = &lock.holder {
            if !participant(h).is_some_and(|p| p.presence.is_present()) {
                found.push(format!("session {sid}: turn holder {h} is neither present nor within grace"));
            }
        }
        // In the event log, a turn starts only after the previous one ended (checked on the
        // events appended since the last tick: each frame is read once).
        let (checked, open) = turn_events.entry(sid.clone()).or_insert((0, None));
        let from = *checked;
        for (seq, frame) in log.tail.iter().filter(|(seq, _)| *seq > from) {
            *checked = *seq;
            if !may_start_or_end_a_turn(&frame.host) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&frame.host) else { continue };
            let turn = v["payload"]["turn_id"].as_u64();
            match v["event"].as_str() {
                Some("turn_started") => {
                    if let (Some(running), Some(turn)) = (*open, turn) {
                        found.push(format!("session {sid}: turn {turn} started (seq {seq}) while turn {running} runs"));
                    }
                    *open = turn;
                }
                Some("turn_ended") => *open = None,
                _ => {}
            }
        }
        // Residency (`residency`): a session's tails are in memory or not at all, and a session
        // whose turn runs has them.
        if log.resident.is_none() {
            if !log.tail.is_empty() || !history.messages.is_empty() || !history.client_ids.is_empty() {
                found.push(format!(
                    "session {sid}: not resident but holds {} events and {} messages in memory",
                    log.tail.len(),
                    history.messages.len()
                ));
            }
            if lock.holder.is_some() {
                found.push(format!("session {sid}: turn {} runs but its tails are not resident", lock.turn_id));
            }
        } else if let Some(last) = history.messages.back() {
            if last.seq >= log.next_seq {
                found.push(format!("session {sid}: message seq {} is not below next_seq {}", last.seq, log.next_seq));
            }
        }
        let mut expected = log.tail.front().map(|(s, _)| *s).unwrap_or(log.next_seq);
        for (seq, _) in &log.tail {
            if *seq != expected {
                found.push(format!("session {sid}: seq {seq} follows {} (not contiguous)", expected - 1));
                break;
            }
            expected += 1;
        }
        if !log.tail.is_empty() && expected != log.next_seq {
            found.push(format!("session {sid}: log ends at {} but next_seq is {}", expected - 1, log.next_seq));
        }
    }
    for (vid, &ve) in index.votes.iter() {
        let Ok(v) = votes.get(ve) else { continue };
        if let Some(problem) = vote_rule_broken(v, clock.now) {
            found.push(format!("vote {vid}: {problem}"));
        }
        if v.outcome.is_some() {
            continue;
        }
        if index
            .sessions
            .get(&v.session)
            .and_then(|&e| sessions.get(e).ok())
            .is_some_and(|(_, _, log, _)| log.resident.is_none())
        {
            found.push(format!("vote {vid}: open but the tails of {} are not resident", v.session));
        }
        for r in &v.required {
            if !participant(r).is_some_and(|p| p.presence.is_present() && p.sessions.contains(&v.session)) {
                found.push(format!("vote {vid}: required voter {r} is not a participant of {}", v.session));
            }
        }
    }
    // A grace period, when it starts (a connection lost, a restart, a suspension), is the
    // configured length from now.
    let mut in_grace = std::collections::BTreeMap::new();
    for (pid, &pe) in index.participants.iter() {
        let Ok(p) = participants.get(pe) else { continue };
        if let crate::components::Presence::Grace { until } = p.presence {
            if graces.get(pid) != Some(&until) && until != clock.now + config.grace_ms {
                found.push(format!(
                    "participant {pid}: grace until {until} set at {}, not {} ms from now",
                    clock.now, config.grace_ms
                ));
            }
            in_grace.insert(pid.clone(), until);
        }
    }
    *graces = in_grace;
    // The lookups authentication relies on: every resume token and every remote's name present,
    // each share's members and open connections.
    let mut open: std::collections::BTreeMap<&crate::ids::ShareId, usize> = Default::default();
    for (_, &ce) in index.conns.iter() {
        let Some(pid) = conns.get(ce).ok().and_then(|c| c.auth.owner()) else { continue };
        if let Some(share) =
            index.participants.get(pid).and_then(|&e| participants.get(e).ok()).and_then(|p| p.share.as_ref())
        {
            *open.entry(share).or_default() += 1;
        }
    }
    for (share, &n) in &index.share_connections {
        if open.get(share).copied().unwrap_or(0) != n {
            found.push(format!(
                "share {share}: {n} connections counted, {} open",
                open.get(share).copied().unwrap_or(0)
            ));
        }
    }
    for (share, n) in open {
        if !index.share_connections.contains_key(share) {
            found.push(format!("share {share}: {n} connections open, none counted"));
        }
    }
    for (pid, &pe) in index.participants.iter() {
        let Ok(p) = participants.get(pe) else { continue };
        if let Some(hash) = p.resume_hash {
            if index.resume.get(&hash) != Some(pid) {
                found.push(format!("participant {pid}: its resume token is not in the index"));
            }
        }
        let present = !matches!(p.presence, crate::components::Presence::Gone);
        if matches!(p.presence, crate::components::Presence::Grace { until } if !index.in_grace.contains(&(until, pid.clone())))
        {
            found.push(format!("participant {pid}: in its grace period but not among those the expiry checks"));
        }
        if present && !pid.is_host() && !index.names.holds(pid, &p.display_name) {
            found.push(format!("participant {pid}: its name {:?} is not among the names present", p.display_name));
        }
        if let Some(share) = p.share.as_ref().filter(|_| present) {
            if !index.share_members.get(share).is_some_and(|m| m.contains(pid)) {
                found.push(format!("participant {pid}: not among the members of its share {share}"));
            }
        }
    }
    for (pid, &pe) in index.participants.iter() {
        let Ok(p) = participants.get(pe) else { continue };
        let share = p.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
        for s in &p.sessions {
            let Some(ws) = index.sessions.get(s).and_then(|&e| sessions.get(e).ok()).map(|(s, ..)| s.workspace.clone())
            else {
                found.push(format!("participant {pid}: joined unknown session {s}"));
                continue;
            };
            if !in_scope(p, share, &ws) {
                found.push(format!("participant {pid}: in session {s} outside its share scope"));
            }
        }
    }
    for (cid, &ce) in index.conns.iter() {
        let Ok(c) = conns.get(ce) else { continue };
        if c.auth.is_closing() {
            continue;
        }
        let Some(p) = c.participant().and_then(participant) else { continue };
        if let Some(share) = p.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok()) {
            if share.revoked {
                found.push(format!("connection {cid}: still open on revoked share {}", share.id));
            }
        }
    }
    if found.is_empty() {
        return;
    }
    for f in &found {
        tracing::error!(tick = clock.tick, now = clock.now, "invariant violated: {f}");
        violations.0.push(format!("tick {} (t={} ms): {f}", clock.tick, clock.now));
    }
    if config.check_invariants {
        panic!("invariant violated at tick {} (t={} ms): {}", clock.tick, clock.now, found.join("; "));
    }
}

/// Whether an event frame's text may be a `turn_started` or `turn_ended` (most frames are not,
/// and parsing each one was most of the checker's cost): the name appears in the text as it is
/// unless written with a `\u` escape.
fn may_start_or_end_a_turn(frame: &str) -> bool {
    frame.contains("turn_started") || frame.contains("turn_ended") || frame.contains("\\u")
}

/// The vote rules (docs/RULES.md §3.3, §3.4, §3.7, §3.9: consensus, deny short-circuits, deadline denies, the host decides alone)
/// checked on a vote's state at the end of a tick: what it resolved to must follow from its
/// ballots, and a vote whose outcome is already determined must not be open.
fn vote_rule_broken(v: &PendingVote, now: u64) -> Option<String> {
    use crate::protocol::{VoteOutcome, VoteSubject};
    let ballot = |p| v.ballots.get(p);
    let denied = v.required.iter().any(|p| matches!(ballot(p), Some(Ballot::Deny(_))));
    let all_approved = !v.required.is_empty() && v.required.iter().all(|p| matches!(ballot(p), Some(Ballot::Approve)));
    let all_answered =
        !v.required.is_empty() && v.required.iter().all(|p| matches!(ballot(p), Some(Ballot::Answer(_))));
    let yes_no = !matches!(v.subject, VoteSubject::Question { .. });
    let Some(r) = &v.outcome else {
        return if v.host_decision.is_some() {
            Some("the host decided but it is still open".into())
        } else if yes_no && denied {
            Some("a required voter denied but it did not resolve at once".into())
        } else if yes_no && all_approved {
            Some("every required voter approved but it is still open".into())
        } else if !yes_no && all_answered {
            Some("every required voter answered but it is still open".into())
        } else if v.deadline.is_some_and(|d| d <= now) {
            Some("its deadline passed but it is still open".into())
        } else {
            None
        };
    };
    let ok = match r.resolved_by.as_str() {
        "consensus" | "holder" => match r.outcome {
            VoteOutcome::Approved => all_approved && !denied,
            VoteOutcome::Denied => denied,
            VoteOutcome::Answered => all_answered,
        },
        "deadline" => r.outcome == VoteOutcome::Denied,
        "host" | "allow_list" => matches!(
            (&v.host_decision, r.outcome),
            (Some(Ballot::Approve), VoteOutcome::Approved)
                | (Some(Ballot::Deny(_)), VoteOutcome::Denied)
                | (Some(Ballot::Answer(_)), VoteOutcome::Answered)
        ),
        _ => true, // system (turn ended, withdrawn) and participant ids: no ballot rule applies
    };
    (!ok).then(|| format!("resolved {:?} by {} against its ballots", r.outcome, r.resolved_by))
}

#[cfg(test)]
mod tests {
    use super::may_start_or_end_a_turn;

    #[test]
    fn only_frames_that_may_name_a_turn_event_are_parsed() {
        assert!(may_start_or_end_a_turn(r#"{"event":"turn_started","payload":{"turn_id":1}}"#));
        assert!(may_start_or_end_a_turn(r#"{"event":"turn_ended","payload":{"turn_id":1}}"#));
        // The same name spelled with an escape is still that event.
        assert!(may_start_or_end_a_turn(r#"{"event":"turn\u005fended","payload":{"turn_id":1}}"#));
        assert!(!may_start_or_end_a_turn(r#"{"event":"agent_delta","payload":{"turn_id":1,"text":"hi"}}"#));
    }
}
