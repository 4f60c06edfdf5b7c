//! Checking a finished run against the scenario's expectations: step responses, events
//! received (or not), their order, and the final state of the engine.
//!
//! Matching is by *subset*: an expected payload lists only the fields that matter, so scenarios
//! stay robust when events grow fields. A string starting with `~` matches any string that
//! contains the rest. Failures name the participant, tick and virtual time, and show the nearest
//! frames that did arrive, so a failing scenario explains itself.

use super::format::{
    table_to_json, EventPattern, Expect, FinalState, ParticipantFinal, SessionFinal, ShareFinal, Step, VoteFinal, Who,
};
use super::runner::{Failure, Runner, Seen};
use crate::engine::components::Participant;
use crate::persist::MessageRow;
use serde_json::Value;

/// Whether `expected` is a subset of `actual` (see module docs).
pub fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Null, Value::Null) => true,
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, ev)| match a.get(k) {
            Some(av) => json_subset(ev, av),
            None => ev.is_null(),
        }),
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_subset(x, y)),
        (Value::String(e), Value::String(a)) => str_matches(e, a),
        (Value::Number(e), Value::Number(a)) => match (e.as_i64(), a.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => e.as_f64() == a.as_f64(),
        },
        (Value::Bool(e), Value::Bool(a)) => e == a,
        _ => false,
    }
}

/// Exact match, or containment when `expected` starts with `~`.
pub fn str_matches(expected: &str, actual: &str) -> bool {
    match expected.strip_prefix('~') {
        Some(part) => actual.contains(part),
        None => expected == actual,
    }
}

/// `[final]` with its placeholders (`$ann`, `${name.ann}`, `${share.team}`…) expanded; a string
/// whose placeholder is unknown is kept as written (and then fails its check visibly).
fn resolve_final(r: &Runner, fin: &crate::format::FinalState) -> crate::format::FinalState {
    let one = |s: &String| r.resolve_str(s).unwrap_or_else(|_| s.clone());
    let all = |v: &Vec<String>| v.iter().map(one).collect::<Vec<_>>();
    let mut fin = fin.clone();
    for want in fin.sessions.values_mut() {
        want.title = want.title.as_ref().map(one);
        want.texts = want.texts.as_ref().map(all);
        want.authors = want.authors.as_ref().map(all);
        want.roster = want.roster.as_ref().map(all);
        want.has_texts = all(&want.has_texts);
        want.lacks_texts = all(&want.lacks_texts);
    }
    for want in fin.participants.values_mut() {
        want.display_name = want.display_name.as_ref().map(one);
        want.id = want.id.as_ref().map(one);
    }
    for want in fin.votes.values_mut() {
        want.reason = want.reason.as_ref().map(one);
        want.answers = want.answers.as_ref().map(all);
        want.ballots = want.ballots.as_ref().map(all);
    }
    fin.digest_contains = all(&fin.digest_contains);
    fin.audit = all(&fin.audit);
    fin.digest_lacks = all(&fin.digest_lacks);
    fin
}

/// Every check of a finished run, in file order: steps (and their `then`), `[[expect]]`,
/// `[[expect_order]]`, `[final]`.
pub(crate) fn check_all(r: &mut Runner) -> Vec<Failure> {
    let mut out = Vec::new();
    let steps = r.steps.clone();
    for (i, (orig, step)) in steps.iter().enumerate() {
        out.extend(check_step(r, i, *orig, step));
        if let Some((_, at)) = r.records[i].executed {
            // `$ann` in a `then` is who `ann` was when the step ran.
            r.bound_pids = Some(r.records[i].pids.clone());
            for e in &step.then {
                let mut e = e.clone();
                e.after = Some(e.after.unwrap_or(at));
                if let Some(w) = e.within {
                    e.before = Some(at + w);
                }
                out.extend(check_expect(r, &e, &format!("`then` of step {} (at {})", orig + 1, step.at)));
            }
            r.bound_pids = None;
        }
    }
    for (n, e) in r.sc.expect.clone().iter().enumerate() {
        out.extend(check_expect(r, e, &format!("expect {}", n + 1)));
    }
    for (n, o) in r.sc.expect_order.clone().iter().enumerate() {
        for who in handles(r, &o.who) {
            if let Some(f) = check_order(r, &who, o.after.unwrap_or(0), &o.events) {
                let note = o.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
                out.push(Failure { what: format!("expect_order {}{note}: {}", n + 1, f.what), ..f });
            }
        }
    }
    out.extend(check_final(r));
    out
}

fn handles(r: &Runner, who: &Who) -> Vec<String> {
    match who {
        Who::One(s) if s == "*" => r.clients.keys().cloned().collect(),
        Who::One(s) => vec![s.clone()],
        Who::Many(v) => v.clone(),
    }
}

fn check_step(r: &mut Runner, i: usize, orig: usize, step: &Step) -> Option<Failure> {
    let rec = r.records[i].clone();
    let (tick, at) = rec.executed?;
    if rec.error.is_some() {
        return None; // already reported when it ran
    }
    let is_method = crate::protocol::Method::NAMES.contains(&step.action.as_str());
    let mode = if step.expect_error.is_some() || step.error_contains.is_some() {
        "error"
    } else if step.expect_result.is_some() {
        "ok"
    } else {
        step.response.as_deref().unwrap_or(if is_method { "ok" } else { "any" })
    };
    let label = format!("step {} `{}` at {}", orig + 1, step.action, step.at);
    let fail = |what: String, t: Option<(u64, u64)>| Failure {
        what: format!("{label}: {what}"),
        who: Some(step.who.clone()),
        tick: Some(t.map(|x| x.0).unwrap_or(tick)),
        time: Some(t.map(|x| x.1).unwrap_or(at)),
    };
    match (mode, &rec.response) {
        ("any", _) => None,
        ("none", None) => None,
        ("none", Some((t, tm, v))) => Some(fail(format!("expected no response, got {v}"), Some((*t, *tm)))),
        (_, None) => Some(fail("no response arrived".into(), None)),
        ("ok", Some((t, tm, v))) => {
            let Some(result) = v.get("result") else {
                return Some(fail(format!("expected success, got {}", v.get("error").unwrap_or(v)), Some((*t, *tm))));
            };
            let expected = step.expect_result.as_ref().map(table_to_json)?;
            match r.matches(&expected, result) {
                Ok(true) => None,
                Ok(false) => Some(fail(format!("result {result} does not contain {expected}"), Some((*t, *tm)))),
                Err(e) => Some(fail(e, Some((*t, *tm)))),
            }
        }
        (_, Some((t, tm, v))) => {
            let Some(err) = v.get("error") else {
                return Some(fail(
                    format!("expected error {}, got success {}", step.expect_error.as_deref().unwrap_or("(any)"), v),
                    Some((*t, *tm)),
                ));
            };
            let code = err.get("code").and_then(Value::as_str).unwrap_or("");
            let message = err.get("message").and_then(Value::as_str).unwrap_or("");
            if let Some(want) = &step.expect_error {
                if want != code {
                    return Some(fail(format!("expected error {want}, got {code}: {message}"), Some((*t, *tm))));
                }
            }
            if let Some(part) = &step.error_contains {
                let part = r.resolve_str(part).unwrap_or(part.clone());
                if !message.contains(&part) {
                    return Some(fail(format!("error message {message:?} does not contain {part:?}"), Some((*t, *tm))));
                }
            }
            None
        }
    }
}

/// Whether a received frame matches an expectation's filters.
fn frame_matches(r: &Runner, e: &Expect, s: &Seen) -> Result<bool, String> {
    if e.conn.is_some_and(|c| c != s.conn_index) {
        return Ok(false);
    }
    if e.after.is_some_and(|t| s.time < t) || e.before.is_some_and(|t| s.time > t) {
        return Ok(false);
    }
    if let Some(code) = &e.error {
        let Some(err) = s.json.get("error") else { return Ok(false) };
        if err.get("code").and_then(Value::as_str) != Some(code.as_str()) {
            return Ok(false);
        }
        return match &e.payload {
            Some(p) => r.matches(&table_to_json(p), err),
            None => Ok(true),
        };
    }
    let pattern = EventPattern {
        event: e.event.clone().unwrap_or_default(),
        session: e.session.clone(),
        seq: e.seq,
        payload: e.payload.clone(),
    };
    event_matches(r, &pattern, s)
}

fn event_matches(r: &Runner, p: &EventPattern, s: &Seen) -> Result<bool, String> {
    if s.json.get("event").and_then(Value::as_str) != Some(p.event.as_str()) {
        return Ok(false);
    }
    if let Some(sess) = &p.session {
        if s.json.get("session_id").and_then(Value::as_str) != Some(sess.as_str()) {
            return Ok(false);
        }
    }
    if p.seq.is_some() && s.json.get("seq").and_then(Value::as_u64) != p.seq {
        return Ok(false);
    }
    match &p.payload {
        Some(payload) => r.matches(&table_to_json(payload), s.json.get("payload").unwrap_or(&Value::Null)),
        None => Ok(true),
    }
}

fn describe(e: &Expect) -> String {
    let mut d = match (&e.event, &e.error) {
        (Some(ev), _) => format!("event `{ev}`"),
        (None, Some(code)) => format!("error `{code}`"),
        (None, None) => "frame".into(),
    };
    if let Some(s) = &e.session {
        d.push_str(&format!(" in {s}"));
    }
    if let Some(s) = e.seq {
        d.push_str(&format!(" seq {s}"));
    }
    if let Some(p) = &e.payload {
        d.push_str(&format!(" with {}", table_to_json(p)));
    }
    match (e.after, e.before) {
        (Some(a), Some(b)) => d.push_str(&format!(" between t={a} and t={b}")),
        (Some(a), None) => d.push_str(&format!(" after t={a}")),
        (None, Some(b)) => d.push_str(&format!(" by t={b}")),
        (None, None) => {}
    }
    d
}

fn check_expect(r: &Runner, e: &Expect, label: &str) -> Vec<Failure> {
    let mut out = Vec::new();
    let note = e.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    let want = if e.absent { Some(0) } else { e.count };
    for who in handles(r, &e.who) {
        let mut matched = Vec::new();
        for s in r.seen(&who) {
            match frame_matches(r, e, s) {
                Ok(true) => matched.push(s),
                Ok(false) => {}
                Err(err) => {
                    out.push(Failure {
                        what: format!("{label}{note}: {err}"),
                        who: Some(who.clone()),
                        tick: None,
                        time: None,
                    });
                    return out;
                }
            }
        }
        match want {
            Some(0) if !matched.is_empty() => {
                let s = matched[0];
                out.push(Failure {
                    what: format!("{label}{note}: {who} received {} but must not: {}", describe(e), s.json),
                    who: Some(who.clone()),
                    tick: Some(s.tick),
                    time: Some(s.time),
                });
            }
            Some(n) if matched.len() != n => {
                let last = matched.last();
                out.push(Failure {
                    what: format!(
                        "{label}{note}: {who} received {} {} time(s), expected {n}",
                        describe(e),
                        matched.len()
                    ),
                    who: Some(who.clone()),
                    tick: last.map(|s| s.tick),
                    time: last.map(|s| s.time),
                });
            }
            None if matched.is_empty() => {
                let near: Vec<String> = r
                    .seen(&who)
                    .iter()
                    .filter(|s| {
                        e.event.as_deref().is_some_and(|ev| s.json.get("event").and_then(Value::as_str) == Some(ev))
                            || e.error
                                .as_deref()
                                .is_some_and(|c| s.json.pointer("/error/code").and_then(Value::as_str) == Some(c))
                    })
                    .take(3)
                    .map(|s| format!("t={}: {}", s.time, s.json))
                    .collect();
                let hint = if near.is_empty() {
                    " (none of that kind arrived)".to_string()
                } else {
                    format!("; closest: {}", near.join(" | "))
                };
                out.push(Failure {
                    what: format!("{label}{note}: {who} never received {}{hint}", describe(e)),
                    who: Some(who.clone()),
                    tick: None,
                    time: e.before,
                });
            }
            _ => {}
        }
    }
    out
}

fn check_order(r: &Runner, who: &str, after: u64, events: &[EventPattern]) -> Option<Failure> {
    let seen = r.seen(who);
    let mut pos = 0;
    let mut last: Option<&Seen> = None;
    for (k, p) in events.iter().enumerate() {
        let found = seen[pos..].iter().position(|s| s.time >= after && event_matches(r, p, s).unwrap_or(false));
        match found {
            Some(off) => {
                last = Some(&seen[pos + off]);
                pos += off + 1;
            }
            None => {
                let payload = p.payload.as_ref().map(|t| format!(" with {}", table_to_json(t))).unwrap_or_default();
                return Some(Failure {
                    what: format!("{who}: event {} `{}`{payload} did not follow the previous ones", k + 1, p.event),
                    who: Some(who.to_string()),
                    tick: last.map(|s| s.tick),
                    time: last.map(|s| s.time),
                });
            }
        }
    }
    None
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// `[final]`: the engine's state at the end of the run (sessions, participants, votes, shares,
/// the digest) and, for what is persisted, the store's. Failures come in that order.
fn check_final(r: &mut Runner) -> Vec<Failure> {
    if r.engine.is_none() {
        return Vec::new();
    }
    let fin = resolve_final(r, &r.sc.final_state.clone());
    let mut f = Fails { out: Vec::new(), tick: r.tick, now: r.now };
    let participants = r.participants_state();
    for (sid, want) in &fin.sessions {
        final_session(r, &mut f, sid, want, &participants);
    }
    for (handle, want) in &fin.participants {
        final_connections(r, &mut f, handle, want);
        final_participant(r, &mut f, handle, want, &participants);
    }
    for (vid, want) in &fin.votes {
        final_vote(r, &mut f, vid, want);
    }
    for (label, want) in &fin.shares {
        final_share(r, &mut f, label, want);
    }
    final_stored_ballots_and_audit(r, &mut f, &fin);
    final_digest(r, &mut f, &fin);
    let mut out = f.out;
    out.extend(check_final_stored(r, &fin));
    out
}

/// Failures of `[final]`, each stamped with the run's last tick and virtual time.
struct Fails {
    out: Vec<Failure>,
    tick: u64,
    now: u64,
}

impl Fails {
    fn fail(&mut self, what: String, who: Option<String>) {
        self.out.push(Failure { what, who, tick: Some(self.tick), time: Some(self.now) });
    }
}

/// A session's status, turn holder and title (engine), its messages (store) and its roster.
fn final_session(r: &mut Runner, f: &mut Fails, sid: &str, want: &SessionFinal, participants: &[Participant]) {
    let (s, lock, stored) = match r.session_state(sid) {
        Some(Ok(state)) => (state.session, state.lock, state.stored),
        Some(Err(e)) => {
            return f.fail(format!("final: session {sid}: cannot read its messages from the store: {e}"), None)
        }
        None => return f.fail(format!("final: session {sid} does not exist"), None),
    };
    let got = |what: &str, g: String, w: String| format!("final: session {sid} {what} is {g}, expected {w}");
    if let Some(w) = &want.status {
        if s.status.as_str() != w {
            f.fail(got("status", s.status.as_str().into(), w.clone()), None);
        }
    }
    if let Some(w) = &want.turn_holder {
        let g = lock.holder.as_ref().map(|h| r.handle_of(h.as_str())).unwrap_or("none".into());
        if &g != w {
            f.fail(got("turn holder", g, w.clone()), None);
        }
    }
    if let Some(w) = &want.title {
        if !str_matches(w, &s.title) {
            f.fail(got("title", format!("{:?}", s.title), format!("{w:?}")), None);
        }
    }
    final_messages(f, sid, want, &stored);
    if let Some(w) = &want.roster {
        let mut names: Vec<String> = participants
            .iter()
            .filter(|p| p.presence.is_present() && p.sessions.iter().any(|x| x.as_str() == sid))
            .map(|p| p.display_name.clone())
            .collect();
        names.sort();
        let mut w = w.clone();
        w.sort();
        if names != w {
            f.fail(got("roster", format!("{names:?}"), format!("{w:?}")), None);
        }
    }
}

/// A session's stored messages: count, texts, authors, texts it must have or lack.
fn final_messages(f: &mut Fails, sid: &str, want: &SessionFinal, stored: &[MessageRow]) {
    let got = |what: &str, g: String, w: String| format!("final: session {sid} {what} is {g}, expected {w}");
    let texts: Vec<String> = stored.iter().map(|m| m.text.clone()).collect();
    if let Some(w) = want.messages {
        if texts.len() != w {
            f.fail(got("message count", texts.len().to_string(), format!("{w} (texts: {texts:?})")), None);
        }
    }
    if let Some(w) = &want.texts {
        let ok = w.len() == texts.len() && w.iter().zip(&texts).all(|(e, a)| str_matches(e, a));
        if !ok {
            f.fail(got("texts", format!("{texts:?}"), format!("{w:?}")), None);
        }
    }
    if let Some(w) = &want.authors {
        let authors: Vec<String> = stored.iter().map(|m| m.author_name.clone()).collect();
        if !(authors.len() == w.len() && w.iter().zip(&authors).all(|(e, a)| str_matches(e, a))) {
            f.fail(got("authors", format!("{authors:?}"), format!("{w:?}")), None);
        }
    }
    for t in &want.has_texts {
        if !texts.iter().any(|x| str_matches(t, x)) {
            f.fail(format!("final: session {sid} has no message {t:?} (texts: {texts:?})"), None);
        }
    }
    for t in &want.lacks_texts {
        if texts.iter().any(|x| str_matches(t, x)) {
            f.fail(format!("final: session {sid} has message {t:?} but must not"), None);
        }
    }
}

/// What a client saw and how its connections ended (also for one never authenticated).
fn final_connections(r: &Runner, f: &mut Fails, handle: &str, want: &ParticipantFinal) {
    let Some(c) = r.clients.get(handle) else { return };
    if let Some(w) = &want.closed_by_host {
        let ok = if w == "none" { c.closed_by_host.is_empty() } else { c.closed_by_host.contains(w) };
        if !ok {
            let what = format!("final: {handle} was closed by the host with {:?}, expected {w:?}", c.closed_by_host);
            f.fail(what, Some(handle.to_string()));
        }
    }
    for sid in &want.saw_no_event_of {
        let got: Vec<String> = c
            .seen
            .iter()
            .filter(|s| s.json.get("event").is_some() && s.json.get("session_id").and_then(Value::as_str) == Some(sid))
            .filter_map(|s| s.json.get("event").and_then(Value::as_str).map(str::to_string))
            .collect();
        if !got.is_empty() {
            f.fail(format!("final: {handle} received events of {sid} but must not: {got:?}"), Some(handle.to_string()));
        }
    }
}

/// A participant's presence, mute, name, admission and id, and the sessions it saw every event
/// of — unless only its connections were to be checked (it need not have become a participant).
fn final_participant(r: &mut Runner, f: &mut Fails, handle: &str, want: &ParticipantFinal, all: &[Participant]) {
    let only_connection_checks = ParticipantFinal {
        closed_by_host: want.closed_by_host.clone(),
        saw_no_event_of: want.saw_no_event_of.clone(),
        ..Default::default()
    };
    if *want == only_connection_checks {
        return;
    }
    let who = Some(handle.to_string());
    let pid = r.clients.get(handle).and_then(|c| c.pid.clone());
    let Some(p) = pid.as_ref().and_then(|pid| all.iter().find(|p| p.id.as_str() == pid)) else {
        return f.fail(format!("final: {handle} never became a participant"), who);
    };
    let got = |what: &str, g: String, w: String| format!("final: {handle} {what} is {g}, expected {w}");
    let checks = [
        want.presence.as_ref().map(|w| ("presence", enum_str(&p.presence.state()), w.clone())),
        want.muted.map(|w| ("muted", p.muted.to_string(), w.to_string())),
        want.display_name.as_ref().map(|w| ("display name", format!("{:?}", p.display_name), format!("{w:?}"))),
        want.admission.as_ref().map(|w| ("admission", enum_str(&p.admission), w.clone())),
        want.id.as_ref().map(|w| ("id", p.id.to_string(), w.clone())),
    ];
    for (what, g, w) in checks.into_iter().flatten() {
        if g != w {
            f.fail(got(what, g, w), who.clone());
        }
    }
    for sid in &want.saw_every_event_of {
        let last = r.last_seq_of(sid);
        let seen = r.clients.get(handle).map(|c| c.last_seq(sid)).unwrap_or(0);
        if seen < last {
            let missing = r.clients.get(handle).map(|c| c.missing_seqs(sid, last)).unwrap_or_default();
            let what = format!("final: {handle} saw {sid} only up to seq {seen} of {last} (missing {missing:?})");
            f.fail(what, who.clone());
        }
    }
}

/// A vote's outcome, reason, answers and who resolved it: from the engine while it is pending,
/// else from its `vote_resolved` event.
fn final_vote(r: &mut Runner, f: &mut Fails, vid: &str, want: &VoteFinal) {
    let (outcome, reason, answers, by) = match r.vote_state(vid) {
        Some(v) => match v.outcome {
            Some(res) => (enum_str(&res.outcome), res.reason, res.answers, Some(res.resolved_by)),
            None => ("open".to_string(), None, Vec::new(), None),
        },
        None => match resolved_event(r, vid) {
            Some(p) => (
                p.get("outcome").and_then(Value::as_str).unwrap_or("").to_string(),
                p.get("reason").and_then(Value::as_str).map(str::to_string),
                p.get("answers")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                p.get("resolved_by").and_then(Value::as_str).map(str::to_string),
            ),
            None => return f.fail(format!("final: vote {vid} does not exist"), None),
        },
    };
    if let Some(w) = &want.outcome {
        if &outcome != w {
            f.fail(format!("final: vote {vid} outcome is {outcome}, expected {w} (reason {reason:?})"), None);
        }
    }
    if let Some(w) = &want.reason {
        if !reason.as_deref().is_some_and(|g| str_matches(w, g)) {
            f.fail(format!("final: vote {vid} reason is {reason:?}, expected {w:?}"), None);
        }
    }
    if let Some(w) = &want.answers {
        if &answers != w {
            f.fail(format!("final: vote {vid} answers are {answers:?}, expected {w:?}"), None);
        }
    }
    if let Some(w) = &want.resolved_by {
        let w = r.resolve_str(w).unwrap_or(w.clone());
        if by.as_deref() != Some(w.as_str()) {
            f.fail(format!("final: vote {vid} resolved by {by:?}, expected {w:?}"), None);
        }
    }
}

/// A share's revocation and use count.
fn final_share(r: &mut Runner, f: &mut Fails, label: &str, want: &ShareFinal) {
    let Some(share) = r.share_ids.get(label).cloned().and_then(|id| r.share_state(&id)) else {
        return f.fail(format!("final: share {label} does not exist"), None);
    };
    if want.revoked.is_some_and(|w| w != share.revoked) {
        f.fail(format!("final: share {label} revoked is {}, expected {}", share.revoked, !share.revoked), None);
    }
    if let Some(w) = want.uses {
        if share.uses != w {
            f.fail(format!("final: share {label} uses is {}, expected {w}", share.uses), None);
        }
    }
}

/// Votes' ballots and the audit log, as the store holds them.
fn final_stored_ballots_and_audit(r: &mut Runner, f: &mut Fails, fin: &FinalState) {
    for (vid, want) in &fin.votes {
        let Some(w) = &want.ballots else { continue };
        let mut w = w.clone();
        w.sort();
        match r.stored_ballots(vid) {
            Ok(got) if got == w => {}
            Ok(got) => f.fail(format!("final: vote {vid} stored ballots are {got:?}, expected {w:?}"), None),
            Err(e) => f.fail(format!("final: vote {vid}: cannot read its ballots from the store: {e}"), None),
        }
    }
    if fin.audit.is_empty() {
        return;
    }
    match r.stored_audit() {
        Ok(got) => {
            for w in &fin.audit {
                if !got.contains(w) {
                    f.fail(format!("final: the stored audit log has no {w:?} (it has {got:?})"), None);
                }
            }
        }
        Err(e) => f.fail(format!("final: cannot read the audit log from the store: {e}"), None),
    }
}

/// Lines the engine's state digest must contain or lack.
fn final_digest(r: &mut Runner, f: &mut Fails, fin: &FinalState) {
    if fin.digest_contains.is_empty() && fin.digest_lacks.is_empty() {
        return;
    }
    let digest = r.digest();
    for line in &fin.digest_contains {
        if !digest.contains(line.as_str()) {
            f.fail(format!("final: state digest lacks {line:?}"), None);
        }
    }
    for line in &fin.digest_lacks {
        if digest.contains(line.as_str()) {
            f.fail(format!("final: state digest contains {line:?}"), None);
        }
    }
}

/// The persisted fields of `[final]` checked once more against what the store holds (what a
/// restart would see): a rule is kept only if it is kept where it survives a crash. Presence,
/// rosters and the digest are runtime state and were checked against the engine only.
fn check_final_stored(r: &mut Runner, fin: &crate::format::FinalState) -> Vec<Failure> {
    let (tick, now) = (r.tick, r.now);
    let mut out = Vec::new();
    let mut fail = |what: String| out.push(Failure { what, who: None, tick: Some(tick), time: Some(now) });
    let stored = match r.stored_state() {
        Ok(stored) => stored,
        Err(e) => {
            fail(format!("final: cannot read the store: {e}"));
            return out;
        }
    };
    for (sid, want) in &fin.sessions {
        let Some(row) = stored.sessions.iter().find(|s| s.session.id.as_str() == sid) else {
            fail(format!("final: session {sid} is not in the store"));
            continue;
        };
        let got =
            |what: &str, g: String, w: &str| format!("final: the store holds session {sid} {what} {g}, expected {w}");
        if let Some(w) = &want.status {
            if row.session.status.as_str() != w {
                fail(got("status", row.session.status.as_str().into(), w));
            }
        }
        if let Some(w) = &want.turn_holder {
            let g = row.turn_holder.as_ref().map(|h| r.handle_of(h.as_str())).unwrap_or("none".into());
            if &g != w {
                fail(got("turn holder", g, w));
            }
        }
        if let Some(w) = &want.title {
            if !str_matches(w, &row.session.title) {
                fail(got("title", format!("{:?}", row.session.title), &format!("{w:?}")));
            }
        }
    }
    for (handle, want) in &fin.participants {
        let Some(pid) = r.clients.get(handle).and_then(|c| c.pid.clone()) else { continue };
        let Some(row) = stored.participants.iter().map(|p| &p.participant).find(|p| p.id.as_str() == pid) else {
            if want.muted.is_some() || want.display_name.is_some() || want.admission.is_some() {
                fail(format!("final: {handle} ({pid}) is not in the store"));
            }
            continue;
        };
        let got =
            |what: &str, g: String, w: String| format!("final: the store holds {handle}'s {what} {g}, expected {w}");
        if want.muted.is_some_and(|w| w != row.muted) {
            fail(got("muted", row.muted.to_string(), (!row.muted).to_string()));
        }
        if let Some(w) = &want.display_name {
            if &row.display_name != w {
                fail(got("display name", format!("{:?}", row.display_name), format!("{w:?}")));
            }
        }
        if let Some(w) = &want.admission {
            let g = enum_str(&row.admission);
            if &g != w {
                fail(got("admission", g, w.clone()));
            }
        }
    }
    for (vid, want) in &fin.votes {
        let Some(row) = stored.votes.iter().find(|v| v.id.as_str() == vid) else {
            fail(format!("final: vote {vid} is not in the store"));
            continue;
        };
        if let Some(w) = &want.outcome {
            let g = row.outcome.clone().unwrap_or_else(|| "open".into());
            if &g != w {
                fail(format!("final: the store holds vote {vid} outcome {g}, expected {w}"));
            }
        }
        if let Some(w) = &want.reason {
            if !row.reason.as_deref().is_some_and(|g| str_matches(w, g)) {
                fail(format!("final: the store holds vote {vid} reason {:?}, expected {w:?}", row.reason));
            }
        }
    }
    for (label, want) in &fin.shares {
        let Some(id) = r.share_ids.get(label).cloned() else { continue };
        let Some(row) = stored.shares.iter().find(|s| s.id.as_str() == id) else {
            fail(format!("final: share {label} is not in the store"));
            continue;
        };
        if want.revoked.is_some_and(|w| w != row.revoked) {
            fail(format!("final: the store holds share {label} revoked {}, expected {}", row.revoked, !row.revoked));
        }
        if want.uses.is_some_and(|w| w != row.uses) {
            fail(format!("final: the store holds share {label} uses {}, expected {:?}", row.uses, want.uses));
        }
    }
    out
}

/// Payload of the `vote_resolved` event for `vid`, as any participant saw it.
fn resolved_event(r: &Runner, vid: &str) -> Option<Value> {
    r.clients.values().flat_map(|c| c.seen.iter()).find_map(|s| {
        let p = s.json.get("payload")?;
        (s.json.get("event").and_then(Value::as_str) == Some("vote_resolved")
            && p.get("vote_id").and_then(Value::as_str) == Some(vid))
        .then(|| p.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching_ignores_extra_fields_but_not_wrong_values() {
        let actual = json!({"a": 1, "b": {"c": "hello world", "d": [1, 2]}});
        assert!(json_subset(&json!({"b": {"c": "hello world"}}), &actual));
        assert!(json_subset(&json!({"b": {"c": "~world"}}), &actual));
        assert!(json_subset(&json!({"b": {"d": [1, 2]}}), &actual));
        assert!(!json_subset(&json!({"b": {"d": [1]}}), &actual));
        assert!(!json_subset(&json!({"a": 2}), &actual));
        assert!(!json_subset(&json!({"z": 1}), &actual));
        assert!(json_subset(&json!({"z": null}), &actual));
    }
}
