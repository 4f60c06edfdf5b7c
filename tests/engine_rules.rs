//! The rules of docs/RULES.md §2–§14 driven through the engine with the in-memory harness (no sockets).
//! Each test is named after the rule it proves.

use roundtable::engine::EngineConfig;
use roundtable::testkit::{Harness, HOST};
use serde_json::{json, Value};

fn setup() -> (Harness, String, String) {
    let mut h = Harness::new(EngineConfig::default());
    let (w, s) = h.workspace_and_session(".");
    (h, w, s)
}

fn code(r: Result<Value, Value>) -> String {
    r.expect_err("expected an error")["code"].as_str().unwrap().to_string()
}

fn names(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

#[test]
fn rejected_message_is_never_persisted_or_broadcast() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "hello agent", "client_msg_id": "a1"})).unwrap();
    let err = h.call(bob, "send_message", json!({"session_id": s, "text": "SECRET-REJECTED", "client_msg_id": "b1"}));
    let err = err.unwrap_err();
    assert_eq!(err["code"], "turn_locked");
    assert!(err["message"].as_str().unwrap().contains("Ann"), "names the holder: {err}");
    h.run(500);
    for conn in [HOST, ann, bob] {
        let all = serde_json::to_string(&h.frames(conn)).unwrap();
        let leaked = all.matches("SECRET-REJECTED").count();
        // Bob's own request frame is not echoed; nobody gets the text in an event.
        assert_eq!(leaked, 0, "rejected text reached {conn}");
    }
    assert!(!h.engine.state_digest().contains("SECRET-REJECTED"));
}

#[test]
fn turn_is_released_when_the_agent_finishes_and_the_reply_is_posted() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "hello there friend", "client_msg_id": "a1"})).unwrap();
    h.run(300);
    let ev = h.take(ann);
    let n = names(&ev);
    assert!(n.iter().filter(|e| *e == "agent_delta").count() >= 2, "streams over several ticks: {n:?}");
    let reply =
        ev.iter().find(|e| e["event"] == "message" && e["payload"]["author_id"] == "agent").expect("agent reply");
    assert_eq!(reply["payload"]["text"], "You said: hello there friend");
    let ended = ev.iter().find(|e| e["event"] == "turn_ended").unwrap();
    assert_eq!(ended["payload"]["reason"], "completed");
    h.call(ann, "send_message", json!({"session_id": s, "text": "again", "client_msg_id": "a2"})).unwrap();
}

#[test]
fn seqs_are_contiguous_per_session() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "one", "client_msg_id": "1"})).unwrap();
    h.run(300);
    let seqs: Vec<u64> = h.frames(HOST).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    assert!(!seqs.is_empty());
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1, "host sees every seq once, in order: {seqs:?}");
    }
}

#[test]
fn retry_with_same_client_msg_id_is_idempotent() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let a = h.call(ann, "send_message", json!({"session_id": s, "text": "hi", "client_msg_id": "x"})).unwrap();
    let b = h.call(ann, "send_message", json!({"session_id": s, "text": "hi", "client_msg_id": "x"})).unwrap();
    assert_eq!(a["message_id"], b["message_id"]);
    assert_eq!(b["duplicate"], true);
    h.run(300);
    let msgs = h.events_named(HOST, "message").into_iter().filter(|m| m["payload"]["text"] == "hi").count();
    assert_eq!(msgs, 1);
}

#[test]
fn wrong_expired_exhausted_and_revoked_tokens_fail_identically() {
    let (mut h, w, _s) = setup();
    let expired = h.mint(&[&w], json!({"expires_in_ms": 100}));
    let exhausted = h.mint(&[&w], json!({"max_uses": 1}));
    let revoked_tok = h.mint(&[&w], json!({}));
    let c = h.open("10.1.0.1:1");
    h.call(c, "authenticate", json!({"token": exhausted, "display_name": "First"})).unwrap();
    h.host("revoke_share", json!({"share_id": "sh3"}));
    h.run(200);
    let mut errors = Vec::new();
    for (i, t) in ["not-a-token".to_string(), expired, exhausted, revoked_tok].iter().enumerate() {
        let c = h.open(&format!("10.2.0.{i}:1"));
        errors.push(h.call(c, "authenticate", json!({"token": t, "display_name": "X"})).unwrap_err());
    }
    for e in &errors {
        assert_eq!(e, &errors[0], "all failures look the same");
    }
    assert_eq!(errors[0]["code"], "unauthenticated");
}

#[test]
fn five_failures_per_address_then_rate_limited() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({}));
    for i in 0..5 {
        let c = h.open(&format!("10.9.9.9:{i}"));
        assert_eq!(code(h.call(c, "authenticate", json!({"token": "bad", "display_name": "X"}))), "unauthenticated");
    }
    let c = h.open("10.9.9.9:77");
    assert_eq!(code(h.call(c, "authenticate", json!({"token": tok, "display_name": "X"}))), "rate_limited");
    let other = h.open("10.9.9.8:1");
    h.call(other, "authenticate", json!({"token": tok, "display_name": "Y"})).unwrap();
    h.run(60_000);
    let c = h.open("10.9.9.9:78");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "X"})).unwrap();
}

#[test]
fn unauthenticated_connections_are_closed_after_the_auth_timeout() {
    let (mut h, _w, _s) = setup();
    let c = h.open("10.0.0.5:1");
    h.run(9_000);
    assert!(h.sinks[&c].closed.lock().unwrap().is_none());
    h.run(1_100);
    assert_eq!(h.sinks[&c].closed.lock().unwrap().as_deref(), Some("auth_timeout"));
}

#[test]
fn out_of_scope_session_is_not_found_and_observers_cannot_write() {
    let (mut h, w, s) = setup();
    let other = h.host("add_workspace", json!({"name": "secret", "dir": "."}))["id"].as_str().unwrap().to_string();
    let hidden =
        h.host("create_session", json!({"workspace_id": other, "title": "hidden"}))["id"].as_str().unwrap().to_string();
    let obs = h.mint(&[&w], json!({"role": "observer"}));
    let (o, _) = h.join(&obs, "Olga", &s);
    assert_eq!(code(h.call(o, "join_session", json!({"session_id": hidden}))), "not_found");
    assert_eq!(code(h.call(o, "join_session", json!({"session_id": "s999"}))), "not_found");
    let listed = h.call(o, "list_sessions", json!({})).unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        code(h.call(o, "send_message", json!({"session_id": s, "text": "x", "client_msg_id": "1"}))),
        "forbidden"
    );
    assert_eq!(
        code(h.call(o, "send_message", json!({"session_id": hidden, "text": "x", "client_msg_id": "1"}))),
        "not_found"
    );
    assert_eq!(code(h.call(o, "kick", json!({"participant_id": "host"}))), "forbidden");
}

#[test]
fn one_to_one_share_refuses_a_second_person() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({"collaborative": false}));
    h.join(&tok, "Ann", &s);
    let c = h.open("10.3.0.1:1");
    assert_eq!(code(h.call(c, "authenticate", json!({"token": tok, "display_name": "Bob"}))), "share_in_use");
}

#[test]
fn duplicate_display_names_are_suffixed_and_you_is_marked() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    h.join(&tok, "Ann", &s);
    let c = h.open("10.4.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    assert_eq!(auth["display_name"], "Ann (2)");
    let joined = h.call(c, "join_session", json!({"session_id": s})).unwrap();
    let me: Vec<&Value> = joined["roster"].as_array().unwrap().iter().filter(|r| r["you"] == true).collect();
    assert_eq!(me.len(), 1);
    assert_eq!(me[0]["display_name"], "Ann (2)");
}

fn open_plan(h: &mut Harness, driver: roundtable::ids::ConnId, s: &str) -> String {
    h.call(driver, "send_message", json!({"session_id": s, "text": "/plan refactor", "client_msg_id": "plan"}))
        .unwrap();
    h.run(100);
    let v = h.events_named(HOST, "vote_opened");
    v.last().expect("vote opened")["payload"]["vote_id"].as_str().unwrap().to_string()
}

fn resolved(h: &Harness) -> Option<Value> {
    h.events_named(HOST, "vote_resolved").last().map(|v| v["payload"].clone())
}

#[test]
fn plan_needs_every_required_approval_and_a_deny_short_circuits() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let (cat, _) = h.join(&tok, "Cat", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    h.call(bob, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert!(resolved(&h).is_none());
    h.call(cat, "vote_plan", json!({"vote_id": v, "approve": false, "reason": "no tests"})).unwrap();
    let r = resolved(&h).unwrap();
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["reason"], "Cat: no tests");
    assert_eq!(code(h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true}))), "stale_vote");
}

#[test]
fn the_audit_log_keeps_a_denial_reason_as_it_was_typed() {
    // Issue 26 item 7: the reason was lowercased ("denied: cat: too big for today").
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (cat, _) = h.join(&tok, "Cat", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(cat, "vote_plan", json!({"vote_id": v, "approve": false, "reason": "Too big for TODAY"})).unwrap();
    let audit = h.host("fetch_audit", json!({}));
    let row = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "vote_resolved").cloned();
    assert_eq!(row.expect("a vote_resolved row")["detail"], "denied: Cat: Too big for TODAY", "{audit}");
}

#[test]
fn unanimous_approval_approves_and_revote_replaces() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert!(resolved(&h).is_none());
    h.call(bob, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert_eq!(resolved(&h).unwrap()["outcome"], "approved");
    h.run(400);
    assert_eq!(h.events_named(HOST, "turn_ended").last().unwrap()["payload"]["reason"], "completed");
}

#[test]
fn late_joiner_is_not_a_voter_and_observer_cannot_vote() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let obs = h.mint(&[&w], json!({"role": "observer"}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (o, _) = h.join(&obs, "Olga", &s);
    let v = open_plan(&mut h, ann, &s);
    let (late, _) = h.join(&tok, "Late", &s);
    assert_eq!(code(h.call(late, "vote_plan", json!({"vote_id": v, "approve": true}))), "not_a_voter");
    assert_eq!(code(h.call(o, "vote_plan", json!({"vote_id": v, "approve": true}))), "forbidden");
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert_eq!(resolved(&h).unwrap()["outcome"], "approved");
}

#[test]
fn muted_or_kicked_voter_is_pruned_and_the_vote_resolves_at_once() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (_bob, bob_id) = h.join(&tok, "Bob", &s);
    let (_cat, cat_id) = h.join(&tok, "Cat", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    h.host("mute", json!({"participant_id": bob_id, "muted": true}));
    assert!(resolved(&h).is_none());
    h.host("kick", json!({"participant_id": cat_id}));
    assert_eq!(resolved(&h).unwrap()["outcome"], "approved");
}

#[test]
fn all_voters_gone_leaves_the_decision_to_the_host_never_auto_approves() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, ann_id) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(bob, "leave_session", json!({"session_id": s})).unwrap();
    // Ann disconnects and is gone after grace: the turn is released and the vote closed.
    h.close(ann);
    h.run(31_000);
    let r = resolved(&h).unwrap();
    assert_ne!(r["outcome"], "approved");
    assert!(h.engine.state_digest().contains(&format!(
        "participant {ann_id} name=\"Ann\" role=participant muted=false admission=Admitted presence=gone"
    )));
    let _ = v;
}

#[test]
fn host_decides_when_the_required_set_is_empty() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let obs = h.mint(&[&w], json!({"role": "observer"}));
    let (ann, ann_id) = h.join(&tok, "Ann", &s);
    h.join(&obs, "Olga", &s);
    let v = open_plan(&mut h, ann, &s);
    h.host("mute", json!({"participant_id": ann_id, "muted": true}));
    h.run(1000);
    assert!(resolved(&h).is_none(), "empty required set must not auto-resolve");
    h.host("vote_plan", json!({"vote_id": v, "approve": true}));
    let r = resolved(&h).unwrap();
    assert_eq!(r["outcome"], "approved");
    assert_eq!(r["resolved_by"], "host");
}

#[test]
fn vote_deadline_resolves_denied_timed_out() {
    let mut h = Harness::new(EngineConfig::default());
    let (w, _) = h.workspace_and_session(".");
    let s = h.host("create_session", json!({"workspace_id": w, "title": "t", "vote_deadline_ms": 2000}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    open_plan(&mut h, ann, &s);
    h.run(1500);
    assert!(resolved(&h).is_none());
    h.run(600);
    let r = resolved(&h).unwrap();
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["reason"], "timed out");
}

#[test]
fn differing_question_answers_are_merged_by_name() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    h.call(bob, "send_message", json!({"session_id": s, "text": "/ask deploy", "client_msg_id": "q"})).unwrap();
    h.run(50);
    let v = h.events_named(HOST, "vote_opened").last().unwrap()["payload"]["vote_id"].as_str().unwrap().to_string();
    h.call(bob, "answer_question", json!({"vote_id": v, "answers": ["no"]})).unwrap();
    h.call(ann, "answer_question", json!({"vote_id": v, "answers": ["yes"]})).unwrap();
    let r = resolved(&h).unwrap();
    assert_eq!(r["answers"], json!(["Ann: yes\nBob: no"]));
}

#[test]
fn non_consensus_share_lets_the_holder_decide_alone() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({"consensus_required": false}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let v = open_plan(&mut h, ann, &s);
    assert_eq!(code(h.call(bob, "vote_plan", json!({"vote_id": v, "approve": false}))), "not_a_voter");
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert_eq!(resolved(&h).unwrap()["outcome"], "approved");
}

#[test]
fn reconnect_within_grace_keeps_turn_and_ballot() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let addr = "10.5.0.1:1";
    let ann = h.open(addr);
    let auth = h.call(ann, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    let resume = auth["resume_token"].as_str().unwrap().to_string();
    h.call(ann, "join_session", json!({"session_id": s})).unwrap();
    let (bob, _) = h.join(&tok, "Bob", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    h.close(ann);
    h.run(20_000);
    let again = h.open("10.5.0.1:2");
    let auth2 = h
        .call(again, "authenticate", json!({"token": "whatever", "display_name": "Ann", "resume_token": resume}))
        .unwrap();
    assert_eq!(auth2["participant_id"], auth["participant_id"]);
    assert_eq!(auth2["resumed"], true);
    h.run(20_000);
    h.call(bob, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert_eq!(resolved(&h).unwrap()["outcome"], "approved", "Ann's ballot survived the reconnect");
    let digest = h.engine.state_digest();
    assert!(digest.contains("holder=p1"), "turn kept: {digest}");
}

#[test]
fn holder_gone_past_grace_releases_the_turn() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    open_plan(&mut h, ann, &s);
    h.close(ann);
    h.run(29_000);
    assert_eq!(
        code(h.call(bob, "send_message", json!({"session_id": s, "text": "me", "client_msg_id": "b"}))),
        "turn_locked"
    );
    h.run(1_500);
    assert_eq!(h.events_named(HOST, "turn_ended").last().unwrap()["payload"]["reason"], "holder_gone");
    h.call(bob, "send_message", json!({"session_id": s, "text": "me", "client_msg_id": "b2"})).unwrap();
}

#[test]
fn agent_failure_releases_the_lock() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/fail", "client_msg_id": "f"})).unwrap();
    h.run(200);
    let ended = h.events_named(HOST, "turn_ended");
    assert_eq!(ended.last().unwrap()["payload"]["reason"], "failed");
    h.call(ann, "send_message", json!({"session_id": s, "text": "ok?", "client_msg_id": "g"})).unwrap();
}

#[test]
fn lobby_hides_sessions_until_admitted_and_refusal_closes() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({"admission_required": true}));
    let c = h.open("10.6.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Eve"})).unwrap();
    assert_eq!(auth["admission"], "pending");
    let pid = auth["participant_id"].as_str().unwrap().to_string();
    assert_eq!(code(h.call(c, "list_sessions", json!({}))), "not_admitted");
    assert_eq!(code(h.call(c, "join_session", json!({"session_id": s}))), "not_admitted");
    assert_eq!(h.events_named(HOST, "lobby").len(), 1);
    h.host("admit", json!({"participant_id": pid}));
    assert_eq!(h.events_named(c, "admission").last().unwrap()["payload"]["admission"], "admitted");
    h.call(c, "join_session", json!({"session_id": s})).unwrap();
    let d = h.open("10.6.0.2:1");
    let auth = h.call(d, "authenticate", json!({"token": tok, "display_name": "Mallory"})).unwrap();
    h.host("refuse", json!({"participant_id": auth["participant_id"]}));
    assert_eq!(h.sinks[&d].closed.lock().unwrap().as_deref(), Some("refused"));
}

#[test]
fn revoke_and_kick_close_sockets_within_one_tick_and_kill_resume() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.7.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    h.call(c, "join_session", json!({"session_id": s})).unwrap();
    h.host("kick", json!({"participant_id": auth["participant_id"]}));
    assert_eq!(h.sinks[&c].closed.lock().unwrap().as_deref(), Some("kicked"));
    let again = h.open("10.7.0.1:2");
    let r = h.call(
        again,
        "authenticate",
        json!({"token": "nope", "display_name": "Ann", "resume_token": auth["resume_token"]}),
    );
    assert_eq!(code(r), "unauthenticated");
    let tok2 = h.mint(&[&w], json!({}));
    let (b, _) = h.join(&tok2, "Bob", &s);
    h.host("revoke_share", json!({"share_id": "sh2"}));
    assert_eq!(h.sinks[&b].closed.lock().unwrap().as_deref(), Some("revoked"));
}

#[test]
fn rotate_refuses_the_old_token_but_keeps_live_connections() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let new_tok = h.host("rotate_share", json!({"share_id": "sh1"}))["token"].as_str().unwrap().to_string();
    let c = h.open("10.8.0.1:1");
    assert_eq!(code(h.call(c, "authenticate", json!({"token": tok, "display_name": "B"}))), "unauthenticated");
    h.call(c, "authenticate", json!({"token": new_tok, "display_name": "B"})).unwrap();
    h.call(ann, "ping", json!({})).unwrap();
    assert!(h.sinks[&ann].closed.lock().unwrap().is_none());
}

#[test]
fn slow_consumer_gets_resync_and_catches_up_with_nothing_lost() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    *h.sinks[&bob].capacity.lock().unwrap() = Some(0);
    for i in 0..150 {
        h.call(
            ann,
            "send_message",
            json!({"session_id": s, "text": format!("m{i}"), "client_msg_id": format!("c{i}")}),
        )
        .unwrap();
        h.run(150);
    }
    *h.sinks[&bob].capacity.lock().unwrap() = None;
    h.tick();
    let resync = h.events_named(bob, "resync_required");
    assert_eq!(resync.len(), 1, "one resync notice");
    let last = resync[0]["payload"]["last_seq"].as_u64().unwrap();
    let joined = h.call(bob, "join_session", json!({"session_id": s, "since_seq": last})).unwrap();
    // Too far behind for replay: a snapshot carries the latest page, and older pages come from
    // fetch_history; either way nothing is lost.
    assert_eq!(joined["catch_up"], "snapshot");
    let snapshot = h.events_named(bob, "snapshot");
    let payload = &snapshot.last().unwrap()["payload"];
    let mut snap: Vec<Value> = payload["messages"].as_array().unwrap().clone();
    assert_eq!(snap.len(), 200, "the snapshot's first page is bounded");
    let mut has_older = payload["has_older"].as_bool().unwrap();
    assert!(has_older, "300 messages do not fit one page");
    while has_older {
        let before = snap[0]["seq"].as_u64().unwrap();
        let page = h.call(bob, "fetch_history", json!({"session_id": s, "before_seq": before})).unwrap();
        let mut older = page["messages"].as_array().unwrap().clone();
        assert!(!older.is_empty() && older.last().unwrap()["seq"].as_u64().unwrap() < before);
        older.extend(snap);
        snap = older;
        has_older = page["has_older"].as_bool().unwrap();
    }
    // Messages seen live before the overflow, then the paged history (which repeats them):
    // dedup of the sorted-by-arrival list must give every message exactly once, in order.
    let live: Vec<Value> = h.events_named(bob, "message").into_iter().map(|m| m["payload"].clone()).collect();
    let snap_ids: Vec<&Value> = snap.iter().map(|m| &m["message_id"]).collect();
    let mut texts: Vec<String> = live
        .iter()
        .filter(|m| !snap_ids.contains(&&m["message_id"]))
        .chain(snap.iter())
        .filter(|m| m["author_id"] != "agent")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort_by_key(|t| t[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every message exactly once, in order");
    let seqs: Vec<u64> = h.frames(bob).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs, sorted, "no duplicate seqs");
}

#[test]
fn join_with_since_seq_replays_exactly_the_missed_events() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "first", "client_msg_id": "1"})).unwrap();
    h.run(300);
    let host_seqs: Vec<u64> = h.frames(HOST).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    let mid = host_seqs[host_seqs.len() / 2];
    let c = h.open("10.10.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Zed"})).unwrap();
    let r = h.call(c, "join_session", json!({"session_id": s, "since_seq": mid})).unwrap();
    assert_eq!(r["catch_up"], "events");
    let replayed: Vec<u64> = h.frames(c).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    let last = *host_seqs.last().unwrap();
    let expected: Vec<u64> = (mid + 1..=last + 1).collect(); // + Zed's own participant_joined
    assert_eq!(replayed, expected);
}

#[test]
fn malformed_frames_get_typed_errors_and_the_connection_keeps_working() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.11.0.1:1");
    h.send_raw(c, "{not json");
    h.send_raw(c, r#"{"id": 5, "method": "launch_missiles"}"#);
    h.send_raw(c, r#"{"id": 6, "method": "authenticate", "params": {"token": 5}}"#);
    h.send_raw(c, &format!(r#"{{"id": 7, "method": "ping", "params": {{"nonce": "{}"}}}}"#, "x".repeat(70_000)));
    h.tick();
    let codes: Vec<String> =
        h.frames(c).iter().map(|f| f["error"]["code"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(codes, vec!["bad_frame", "unknown_method", "invalid_params", "frame_too_large"]);
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Ok"})).unwrap();
}

#[test]
fn clear_sends_history_replaced_and_fork_keeps_authors() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "keep me", "client_msg_id": "1"})).unwrap();
    h.run(300);
    let fork = h.host("fork_session", json!({"session_id": s}));
    let digest = h.engine.state_digest();
    assert!(digest.contains("author=p1(\"Ann\") text=\"keep me\""), "{digest}");
    assert!(fork["title"].as_str().unwrap().contains("fork"));
    h.host("clear_session", json!({"session_id": s}));
    assert_eq!(h.events_named(ann, "history_replaced").len(), 1);
}

#[test]
fn cancel_by_holder_or_host_only() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    open_plan(&mut h, ann, &s);
    assert_eq!(code(h.call(bob, "cancel_turn", json!({"session_id": s}))), "forbidden");
    h.host("cancel_turn", json!({"session_id": s}));
    assert_eq!(h.events_named(HOST, "turn_ended").last().unwrap()["payload"]["reason"], "cancelled");
    assert_eq!(resolved(&h).unwrap()["outcome"], "denied");
    assert_eq!(code(h.call(ann, "cancel_turn", json!({"session_id": s}))), "no_turn");
}

#[test]
fn secrets_are_masked_for_remotes_but_not_for_the_host() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    h.call(
        ann,
        "send_message",
        json!({"session_id": s, "text": format!("use token {secret} please"), "client_msg_id": "s"}),
    )
    .unwrap();
    h.run(600);
    let host_all = serde_json::to_string(&h.frames(HOST)).unwrap();
    assert!(host_all.contains(secret), "the host sees the original");
    for conn in [ann, bob] {
        let all = serde_json::to_string(&h.frames(conn)).unwrap();
        assert!(!all.contains("ghp_abcdef"), "remote {conn} saw the secret (live or streamed)");
        assert!(all.contains("[masked]") || all.contains("masked"), "remote sees a mask marker");
        let streamed: String = h
            .events_named(conn, "agent_delta")
            .iter()
            .map(|d| d["payload"]["text"].as_str().unwrap().to_string())
            .collect();
        assert!(streamed.contains("You said: use token"), "deltas still stream: {streamed}");
        assert!(!streamed.contains("abcdefghij"), "a secret split across chunks is masked: {streamed}");
    }
    let host_streamed: String = h
        .events_named(HOST, "agent_delta")
        .iter()
        .map(|d| d["payload"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(host_streamed.contains(secret));
    // Replay after a reconnect is masked too.
    let c = h.open("10.12.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Late"})).unwrap();
    h.call(c, "join_session", json!({"session_id": s, "since_seq": 0})).unwrap();
    h.call(c, "join_session", json!({"session_id": s})).unwrap();
    let all = serde_json::to_string(&h.frames(c)).unwrap();
    assert!(!all.contains("ghp_abcdef"));
}

#[test]
fn cli_edits_to_the_database_reach_a_running_engine_within_one_tick() {
    use roundtable::persist::AgentSpec;
    use roundtable::protocol::MintShareParams;
    use roundtable::store::{Admin, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    let (w, s) = h.workspace_and_session(".");
    h.tick();
    // Another process (the `share`/`workspace` CLI) writes the same database.
    let mut admin = Admin::open(&db).unwrap();
    let ws2 = admin.add_workspace(Some("other"), dir.path(), AgentSpec::demo(), 0).unwrap();
    let params: MintShareParams = serde_json::from_value(json!({"workspaces": [w]})).unwrap();
    let (share, token) = admin.mint_share(&params, 0).unwrap();
    h.tick();
    let (ann, _) = h.join(&token, "Ann", &s);
    assert!(h.host("list_workspaces", json!({}))["workspaces"].to_string().contains(ws2.id.as_str()));
    admin.revoke_share(&share.id, 0).unwrap();
    h.tick();
    assert_eq!(h.sinks[&ann].closed.lock().unwrap().as_deref(), Some("revoked"));
}

#[test]
fn holder_votes_say_they_were_resolved_by_the_holder() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({"consensus_required": false}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let v = open_plan(&mut h, ann, &s);
    h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
    assert_eq!(resolved(&h).unwrap()["resolved_by"], "holder");
}

#[test]
fn pipelined_requests_after_authenticate_are_answered_in_order() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.13.0.1:1");
    let a = h.send(c, "authenticate", json!({"token": tok, "display_name": "Pip"}));
    let j = h.send(c, "join_session", json!({"session_id": s}));
    h.tick();
    h.tick();
    assert!(h.response(c, a).unwrap().is_ok());
    assert!(h.response(c, j).expect("join answered").is_ok(), "join waited for the authentication");
    let ids: Vec<Value> = h.frames(c).iter().filter_map(|f| f.get("id").cloned()).collect();
    assert_eq!(ids, vec![json!(a), json!(j)]);
}

#[test]
fn refused_lobby_participant_is_told_before_the_socket_closes() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({"admission_required": true}));
    let c = h.open("10.14.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Eve"})).unwrap();
    h.host("refuse", json!({"participant_id": auth["participant_id"]}));
    let names: Vec<String> = h.take(c).iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, vec!["admission", "closing"]);
    assert_eq!(h.events_named(c, "admission")[0]["payload"]["admission"], "refused");
}

#[test]
fn restart_continues_seqs_after_the_last_committed_event() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let (tok, s, last) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        let tok = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        let (_bob, _) = h.join(&tok, "Bob", &s);
        let v = open_plan(&mut h, ann, &s);
        h.call(ann, "vote_plan", json!({"vote_id": v, "approve": true})).unwrap();
        let last = h.frames(HOST).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).max().unwrap();
        (tok, s, last)
    };
    // "Kill" the host: drop it mid-turn with a vote open, then restart on the same database.
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    let seqs: Vec<u64> = h.frames(HOST).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    assert_eq!(seqs.first().copied(), Some(last + 1), "continues after the last committed seq");
    assert!(h.events_named(HOST, "turn_ended").iter().any(|e| e["payload"]["reason"] == "agent_died"));
    assert!(h.events_named(HOST, "vote_resolved").iter().any(|e| e["payload"]["outcome"] == "denied"));
    let c = h.open("10.15.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
    let r = h.call(c, "join_session", json!({"session_id": s, "since_seq": 0})).unwrap();
    assert_eq!(r["catch_up"], "events");
}

#[test]
fn the_database_keeps_only_the_replay_tail_and_a_restarted_host_replays_from_it() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let tail = roundtable::persist::EVENT_TAIL as u64;
    let (tok, s, texts) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        let tok = h.mint(&[&w], json!({}));
        // Room chat from the host (one event each, no agent turn), 50 per tick.
        let mut texts = std::collections::BTreeMap::new();
        let mut n = 0;
        while texts.keys().last().copied().unwrap_or(0) < tail + 500 {
            let sent: Vec<(u64, String)> = (n..n + 50)
                .map(|i| {
                    let text = format!("r{i}");
                    (h.send(HOST, "send_chat", json!({"session_id": s, "text": text, "client_msg_id": text})), text)
                })
                .collect();
            n += 50;
            h.tick();
            for (id, text) in sent {
                texts.insert(h.response(HOST, id).unwrap().unwrap()["seq"].as_u64().unwrap(), text);
            }
        }
        (tok, s, texts)
    };
    let last = *texts.keys().last().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: (u64, u64, u64) = conn
        .query_row("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events WHERE session = ?1", [&s], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
        })
        .unwrap();
    drop(conn);
    assert_eq!(stored, (tail, last - tail + 1, last), "the events table holds the newest EVENT_TAIL events");

    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    let c = h.open("10.17.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
    let since = last - 200;
    let r = h.call(c, "join_session", json!({"session_id": s, "since_seq": since})).unwrap();
    assert_eq!(r["catch_up"], "events", "{r}");
    let replayed: Vec<(u64, String)> = h
        .events_named(c, "chat")
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["payload"]["text"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(u64, String)> = texts.range(since + 1..).map(|(&seq, text)| (seq, text.clone())).collect();
    assert_eq!(replayed, expected, "exactly the missed events, as stored before the restart");
    let seqs: Vec<u64> = h.frames(c).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    assert_eq!(seqs, (since + 1..=r["session"]["last_seq"].as_u64().unwrap()).collect::<Vec<_>>(), "no gap");
}

#[test]
fn a_resumed_connection_gets_its_replay_then_live_events_without_duplicates() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.16.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    h.call(c, "join_session", json!({"session_id": s})).unwrap();
    let (bob, _) = h.join(&tok, "Bob", &s);
    let seen = h.frames(c).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).max().unwrap_or(0);
    h.close(c);
    h.tick();
    h.call(bob, "send_message", json!({"session_id": s, "text": "while away", "client_msg_id": "w"})).unwrap();
    h.run(300);
    let c2 = h.open("10.16.0.1:2");
    h.call(c2, "authenticate", json!({"token": "x", "display_name": "Ann", "resume_token": auth["resume_token"]}))
        .unwrap();
    h.run(50);
    assert!(h.frames(c2).iter().all(|f| f.get("seq").is_none()), "no session events before rejoining");
    h.call(c2, "join_session", json!({"session_id": s, "since_seq": seen})).unwrap();
    h.call(bob, "send_message", json!({"session_id": s, "text": "after", "client_msg_id": "a"})).unwrap();
    h.run(300);
    let seqs: Vec<u64> = h.frames(c2).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    let expected: Vec<u64> = (seen + 1..=*seqs.last().unwrap()).collect();
    assert_eq!(seqs, expected, "every missed event once, in order, then live ones");
}

#[test]
fn a_withdrawn_agent_request_closes_its_vote_without_approving() {
    use roundtable::agent::{AgentEvent, AgentOutput};
    use roundtable::engine::Inbound;
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    open_plan(&mut h, ann, &s);
    let out = AgentOutput {
        session: s.as_str().into(),
        turn_id: 1,
        event: AgentEvent::Withdrawn { request_id: "plan-1".into() },
    };
    h.engine.sender().send(Inbound::Agent(out)).unwrap();
    h.tick();
    let r = resolved(&h).unwrap();
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["reason"], "withdrawn by the agent");
}

#[test]
fn host_can_allow_a_tool_for_the_rest_of_the_session() {
    use roundtable::agent::{AgentEvent, AgentOutput};
    use roundtable::engine::Inbound;
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(50);
    let tool = |h: &mut Harness, request: &str, tool: &str| {
        let event = AgentEvent::ToolRequest { request_id: request.into(), tool: tool.into(), input: "{}".into() };
        h.engine.sender().send(Inbound::Agent(AgentOutput { session: s.as_str().into(), turn_id: 1, event })).unwrap();
        h.tick();
        h.events_named(HOST, "vote_opened").last().unwrap()["payload"]["vote_id"].as_str().unwrap().to_string()
    };
    let v1 = tool(&mut h, "t1", "Bash");
    assert_eq!(
        code(h.call(ann, "vote_plan", json!({"vote_id": v1, "approve": true, "always": true}))),
        "invalid_params"
    );
    h.host("vote_plan", json!({"vote_id": v1, "approve": true, "always": true}));
    assert_eq!(resolved(&h).unwrap()["resolved_by"], "host");
    let v2 = tool(&mut h, "t2", "Bash");
    let r = resolved(&h).unwrap();
    assert_eq!((r["vote_id"].as_str().unwrap(), r["outcome"].as_str().unwrap()), (v2.as_str(), "approved"));
    assert_eq!(r["resolved_by"], "allow_list");
    let v3 = tool(&mut h, "t3", "Write");
    assert_ne!(resolved(&h).unwrap()["vote_id"], json!(v3), "other tools still ask");
}

#[test]
fn a_slow_consumer_gets_coalesced_deltas_with_the_same_text() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    *h.sinks[&bob].capacity.lock().unwrap() = Some(0);
    let text = "a fairly long message so that the demo agent streams it over many ticks";
    h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": "c"})).unwrap();
    h.run(40);
    *h.sinks[&bob].capacity.lock().unwrap() = None;
    h.run(400);
    let deltas = |h: &Harness, c| -> Vec<String> {
        h.events_named(c, "agent_delta").iter().map(|d| d["payload"]["text"].as_str().unwrap().to_string()).collect()
    };
    let (fast, slow) = (deltas(&h, ann), deltas(&h, bob));
    assert_eq!(fast.concat(), slow.concat(), "same text either way");
    assert!(slow.len() < fast.len(), "the slow consumer's deltas were merged: {} vs {}", slow.len(), fast.len());
}

// ---- history paging: memory bounded by the tail, older pages from the store ----------------

/// Ann chats `n` times with the demo agent (each message gets a reply): 2n messages.
fn chat(h: &mut Harness, ann: roundtable::ids::ConnId, s: &str, n: usize) {
    chat_from(h, ann, s, 0, n);
}

/// Every message of `s` as `conn` sees it: the snapshot's page, then `fetch_history` pages back
/// to the start. Returns (seq, text) oldest first and the number of pages fetched.
fn page_back(h: &mut Harness, conn: roundtable::ids::ConnId, s: &str, limit: u64) -> (Vec<(u64, String)>, usize) {
    h.call(conn, "join_session", json!({"session_id": s})).unwrap();
    let snap = h.events_named(conn, "snapshot").pop().expect("a snapshot");
    let entry = |m: &Value| (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap().to_string());
    let mut all: Vec<(u64, String)> = snap["payload"]["messages"].as_array().unwrap().iter().map(entry).collect();
    let mut has_older = snap["payload"]["has_older"].as_bool().unwrap();
    let mut pages = 0;
    while has_older {
        let page =
            h.call(conn, "fetch_history", json!({"session_id": s, "before_seq": all[0].0, "limit": limit})).unwrap();
        let older: Vec<(u64, String)> = page["messages"].as_array().unwrap().iter().map(entry).collect();
        assert!(!older.is_empty() && older.len() as u64 <= limit, "a page holds 1..=limit messages");
        all.splice(0..0, older);
        has_older = page["has_older"].as_bool().unwrap();
        pages += 1;
    }
    (all, pages)
}

fn history_len(h: &mut Harness) -> Vec<usize> {
    let mut q = h.engine.world.query::<&roundtable::engine::components::History>();
    q.iter(&h.engine.world).map(|hist| hist.messages.len()).collect()
}

#[test]
fn a_long_session_keeps_only_its_tail_in_memory_and_pages_the_rest_from_the_store() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    chat(&mut h, ann, &s, 130);
    assert!(history_len(&mut h).iter().all(|&n| n <= roundtable::persist::HISTORY_TAIL), "memory is bounded");

    let (bob, _) = h.join(&tok, "Bob", &s);
    let snap = h.events_named(bob, "snapshot").pop().unwrap();
    assert_eq!(snap["payload"]["messages"].as_array().unwrap().len(), 200, "the first page is bounded");
    assert_eq!(snap["payload"]["has_older"], true);
    let (all, pages) = page_back(&mut h, bob, &s, 25);
    assert_eq!(pages, 3, "60 older messages in pages of 25");
    assert_eq!(all.len(), 260, "every message exactly once");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in seq order, no duplicates");
    assert_eq!(all[0].1, "q0");
    assert_eq!(all[1].1, "You said: q0");
    assert_eq!(all[259].1, "You said: q129");
}

#[test]
fn fetch_history_checks_its_limit_and_scope() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    chat(&mut h, ann, &s, 2);
    assert_eq!(code(h.call(ann, "fetch_history", json!({"session_id": s, "limit": 0}))), "invalid_params");
    assert_eq!(code(h.call(ann, "fetch_history", json!({"session_id": s, "limit": 201}))), "invalid_params");
    assert_eq!(code(h.call(ann, "fetch_history", json!({"session_id": "s99"}))), "not_found");
    let (_w2, s2) = h.workspace_and_session("/tmp");
    assert_eq!(code(h.call(ann, "fetch_history", json!({"session_id": s2}))), "not_found", "out of scope");
    // Without before_seq: the latest page; before the first message: nothing.
    let page = h.call(ann, "fetch_history", json!({"session_id": s, "limit": 3})).unwrap();
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 3);
    assert_eq!(page["has_older"], true);
    let first = h.call(ann, "fetch_history", json!({"session_id": s})).unwrap()["messages"][0]["seq"].as_u64().unwrap();
    let none = h.call(ann, "fetch_history", json!({"session_id": s, "before_seq": first})).unwrap();
    assert_eq!(none, json!({"messages": [], "has_older": false}));
}

#[test]
fn a_page_is_bounded_in_bytes_too() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    // 20 messages of 30 KB (plus the agent's replies of the same size): far over 256 KiB.
    for i in 0..20 {
        let text = format!("{i:02}{}", "x".repeat(30_000));
        h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": format!("b{i}")})).unwrap();
        h.run(30_000);
    }
    let page = h.call(ann, "fetch_history", json!({"session_id": s, "limit": 200})).unwrap();
    let bytes: usize = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().len()).sum();
    assert!(bytes <= 256 * 1024, "{bytes} bytes of text in one page");
    assert!(page["messages"].as_array().unwrap().len() >= 8);
    assert_eq!(page["has_older"], true);
    let (all, _) = page_back(&mut h, ann, &s, 200);
    assert_eq!(all.len(), 40, "byte-bounded pages still reach every message");
}

#[test]
fn history_paging_and_old_retries_survive_a_restart() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let (tok, s, before) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        let tok = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        chat(&mut h, ann, &s, 110);
        let (all, _) = page_back(&mut h, ann, &s, 200);
        (tok, s, all)
    };
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    assert!(history_len(&mut h).iter().all(|&n| n <= roundtable::persist::HISTORY_TAIL), "only the tail is loaded");
    let c = h.open("10.40.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
    let (after, _) = page_back(&mut h, c, &s, 200);
    assert_eq!(after, before, "the same history, page by page, after a restart");
}

#[test]
fn a_retry_of_a_message_older_than_the_tail_is_still_a_duplicate() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let first = h.call(ann, "send_message", json!({"session_id": s, "text": "q0", "client_msg_id": "c0"})).unwrap();
    h.run(100);
    chat_from(&mut h, ann, &s, 1, 120);
    let retry = h.call(ann, "send_message", json!({"session_id": s, "text": "q0", "client_msg_id": "c0"})).unwrap();
    assert_eq!(retry["duplicate"], true, "found in the store, not posted again");
    assert_eq!((&retry["message_id"], &retry["seq"]), (&first["message_id"], &first["seq"]));
    let other = h.call(ann, "send_message", json!({"session_id": s, "text": "changed", "client_msg_id": "c0"}));
    assert_eq!(code(other), "duplicate_client_msg_id");
}

/// Like [`chat`], numbering from `from`.
fn chat_from(h: &mut Harness, ann: roundtable::ids::ConnId, s: &str, from: usize, n: usize) {
    for i in from..from + n {
        h.call(
            ann,
            "send_message",
            json!({"session_id": s, "text": format!("q{i}"), "client_msg_id": format!("c{i}")}),
        )
        .unwrap();
        h.run(100);
    }
}

// ---- outboxes bounded in bytes -----------------------------------------------------------------

fn outbox_bytes(h: &mut Harness, conn: roundtable::ids::ConnId) -> usize {
    let mut q = h.engine.world.query::<&roundtable::engine::components::Connection>();
    q.iter(&h.engine.world).find(|c| c.id == conn).map(|c| c.outbox.bytes).unwrap_or(0)
}

#[test]
fn a_client_that_never_reads_holds_a_bounded_number_of_bytes_then_resyncs() {
    const MAX: usize = 256 * 1024;
    let mut h = Harness::new(EngineConfig { outbox_max_bytes: MAX, ..EngineConfig::default() });
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    *h.sinks[&bob].capacity.lock().unwrap() = Some(0);
    let mut peak = 0;
    for i in 0..40 {
        let text = format!("{i:02}{}", "x".repeat(30_000));
        h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": format!("b{i}")})).unwrap();
        h.call(ann, "cancel_turn", json!({"session_id": s})).unwrap();
        h.run(100); // within Ann's request rate
        peak = peak.max(outbox_bytes(&mut h, bob));
    }
    assert!(peak <= MAX, "{peak} bytes queued for a client that reads nothing");
    assert!(peak > MAX - 40_000, "the byte bound was what stopped it ({peak})");
    *h.sinks[&bob].capacity.lock().unwrap() = None;
    h.tick();
    assert_eq!(h.events_named(bob, "resync_required").len(), 1, "told to resync, nothing silently lost");
}

#[test]
fn repeated_snapshots_to_a_client_that_never_reads_replace_each_other_instead_of_piling_up() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    for i in 0..12 {
        let text = format!("{i:02}{}", "x".repeat(30_000));
        h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": format!("b{i}")})).unwrap();
        h.call(ann, "cancel_turn", json!({"session_id": s})).unwrap();
    }
    let (bob, _) = h.join(&tok, "Bob", &s);
    *h.sinks[&bob].capacity.lock().unwrap() = Some(0);
    let mut peak = 0;
    for _ in 0..40 {
        h.send(bob, "join_session", json!({"session_id": s}));
        h.tick();
        peak = peak.max(outbox_bytes(&mut h, bob));
    }
    // A newer snapshot replaces one still waiting: memory holds one snapshot, not forty.
    let one_snapshot = roundtable::protocol::HISTORY_PAGE_BYTES + 64 * 1024;
    assert!(peak <= one_snapshot + 64 * 1024, "{peak} bytes queued: one snapshot and the replies");
    assert_eq!(h.sinks[&bob].closed.lock().unwrap().as_deref(), None, "not closed: nothing piled up");
    let before = h.frames(bob).len();
    *h.sinks[&bob].capacity.lock().unwrap() = None;
    h.tick();
    let got = h.frames(bob).split_off(before);
    assert_eq!(got.iter().filter(|f| f["event"] == "snapshot").count(), 1, "the latest snapshot, once");
    assert_eq!(got.iter().filter(|f| f.get("result").is_some()).count(), 40, "every join answered");
    h.call(ann, "ping", json!({})).unwrap();
}

// ---- streamed text: appended as it grows, posted after a crash ---------------------------------

#[test]
fn streamed_text_is_appended_tick_by_tick_and_a_killed_host_posts_it_after_restart() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let text = "tell me about the quarterly numbers please";
    let (s, seen) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (_w, s) = h.workspace_and_session(".");
        h.host("send_message", json!({"session_id": s, "text": text, "client_msg_id": "k1"}));
        h.run(30); // a few ticks: part of the reply is streamed, the turn still runs
        let seen: String =
            h.events_named(HOST, "agent_delta").iter().map(|d| d["payload"]["text"].as_str().unwrap()).collect();
        assert!(!seen.is_empty() && seen.len() < format!("You said: {text}").len(), "mid-turn: {seen:?}");
        (s, seen)
    }; // the host is killed here

    // What the store holds: one chunk per tick with only that tick's text; the row is not rewritten.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let chunks: Vec<(i64, String)> = conn
        .prepare("SELECT offset, text FROM streamed_chunks WHERE session = ?1 ORDER BY offset")
        .unwrap()
        .query_map([&s], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(chunks.len() >= 2, "several ticks streamed: {chunks:?}");
    let mut offset = 0;
    for (o, t) in &chunks {
        assert_eq!(*o, offset, "chunks are contiguous");
        offset += t.len() as i64;
    }
    assert_eq!(chunks.iter().map(|(_, t)| t.as_str()).collect::<String>(), seen, "exactly what everyone saw");
    let column: String = conn.query_row("SELECT streamed FROM sessions WHERE id = ?1", [&s], |r| r.get(0)).unwrap();
    assert_eq!(column, "", "the growing text is never rewritten with the session row");
    drop(conn);

    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    let posted = h.events_named(HOST, "message");
    assert!(posted.iter().any(|m| m["payload"]["author_id"] == "agent" && m["payload"]["text"] == seen.as_str()));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let left: i64 = conn.query_row("SELECT count(*) FROM streamed_chunks", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "the ended turn's chunks are gone: its text is a message now");
}

#[test]
fn a_remote_cannot_take_the_hosts_or_the_agents_name_or_hide_characters_in_its_own() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({}));
    for (i, name) in ["Host", "agent", "Host\u{200B}", "Bob\u{202E}boB"].iter().enumerate() {
        let c = h.open(&format!("10.50.0.{i}:1"));
        let err = h.call(c, "authenticate", json!({"token": tok, "display_name": name})).unwrap_err();
        assert_eq!(err["code"], "invalid_params", "{name:?}: {err}");
    }
    let c = h.open("10.50.1.1:1");
    let ok = h.call(c, "authenticate", json!({"token": tok, "display_name": "Hostess"})).unwrap();
    assert_eq!(ok["display_name"], "Hostess");
}

// ---- resync and replay windows -------------------------------------------------------------------

/// Bob sends and cancels `n` times (about four session events each), within his request rate.
fn churn(h: &mut Harness, bob: roundtable::ids::ConnId, s: &str, n: usize) {
    for _ in 0..n {
        let i = h.now; // unique per call: the virtual clock only moves forward
        h.call(
            bob,
            "send_message",
            json!({"session_id": s, "text": format!("churn {i}"), "client_msg_id": format!("ch{i}")}),
        )
        .unwrap();
        h.call(bob, "cancel_turn", json!({"session_id": s})).unwrap();
        h.run(100);
    }
}

#[test]
fn resync_after_a_snapshot_join_names_the_snapshots_seq_not_zero() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (_bob, _) = h.join(&tok, "Bob", &s);
    let (bob, _) = h.join(&tok, "Bob2", &s);
    churn(&mut h, bob, &s, 3);
    // Ann's second connection (resumed) joins with a snapshot and hears nothing live before it
    // stops reading.
    let c1 = h.open("10.60.0.1:1");
    let auth = h.call(c1, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    let c2 = h.open("10.60.0.1:2");
    let resume = json!({"token": tok, "display_name": "Ann", "resume_token": auth["resume_token"]});
    h.call(c2, "authenticate", resume).unwrap();
    h.call(c1, "join_session", json!({"session_id": s})).unwrap();
    h.call(c2, "join_session", json!({"session_id": s})).unwrap();
    let snap_seq = h.events_named(c2, "snapshot").pop().unwrap()["payload"]["last_seq"].as_u64().unwrap();
    *h.sinks[&c2].capacity.lock().unwrap() = Some(0);
    churn(&mut h, bob, &s, 70);
    *h.sinks[&c2].capacity.lock().unwrap() = None;
    h.tick();
    let resync = h.events_named(c2, "resync_required");
    assert_eq!(resync.len(), 1);
    assert_eq!(resync[0]["payload"]["last_seq"].as_u64().unwrap(), snap_seq, "the snapshot's seq, not 0");
}

#[test]
fn a_client_that_missed_more_than_128_events_still_gets_a_replay() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (bob, _) = h.join(&tok, "Bob", &s);
    churn(&mut h, bob, &s, 60);
    let last = h.frames(bob).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).max().unwrap();
    let (cy, _) = {
        let c = h.open("10.61.0.1:1");
        let a = h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
        (c, a)
    };
    let since = last - 200;
    let r = h.call(cy, "join_session", json!({"session_id": s, "since_seq": since})).unwrap();
    assert_eq!(r["catch_up"], "events", "200 missed events fit one outbox: replayed, not a snapshot");
    let seqs: Vec<u64> = h.frames(cy).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    assert_eq!(seqs.first().copied(), Some(since + 1));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
}

#[test]
fn a_resume_token_cannot_open_more_connections_than_the_caps_allow() {
    let mut h = Harness::new(EngineConfig { max_connections_per_share: 6, ..EngineConfig::default() });
    let (w, _s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.70.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    let resume = json!({"token": tok, "display_name": "Ann", "resume_token": auth["resume_token"]});
    // One person: 8 connections at most (the first plus 7 resumed).
    let mut codes = Vec::new();
    for i in 0..9 {
        let c = h.open(&format!("10.70.0.1:{}", i + 2));
        codes.push(h.call(c, "authenticate", resume.clone()).map(|_| "ok".to_string()).unwrap_or_else(|e| {
            assert!(e["message"].as_str().unwrap().contains("too many connections"), "{e}");
            e["code"].as_str().unwrap().to_string()
        }));
    }
    // The share's cap (6 here) comes first: 5 resumed connections join the first one.
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 5, "{codes:?}");
    assert!(codes[5..].iter().all(|c| c == "share_in_use"), "{codes:?}");
}

#[test]
fn one_participant_cannot_hold_more_than_eight_connections() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let c = h.open("10.71.0.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "Ann"})).unwrap();
    let resume = json!({"token": tok, "display_name": "Ann", "resume_token": auth["resume_token"]});
    let mut ok = 1;
    for i in 0..10 {
        let c = h.open(&format!("10.71.0.1:{}", i + 2));
        match h.call(c, "authenticate", resume.clone()) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e["code"], "share_in_use");
                assert!(e["message"].as_str().unwrap().contains("at most 8"), "{e}");
            }
        }
    }
    assert_eq!(ok, 8);
}

// ---- nothing acknowledged that is not stored --------------------------------------------------

#[test]
fn a_failed_commit_acknowledges_nothing_and_everything_lands_once_the_store_works_again() {
    use roundtable::store::SqliteStore;
    use roundtable::testkit::FaultyStore;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let (store, failing) = FaultyStore::new(Box::new(SqliteStore::open(&db).unwrap()));
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(store));
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let stored = |text: &str| -> i64 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT count(*) FROM messages WHERE text = ?1", [text], |r| r.get(0)).unwrap()
    };
    h.take(bob);

    failing.store(true, Ordering::SeqCst);
    // The request of the tick whose commit fails is not refused (its write is kept and will be
    // stored): it is not answered until it is stored (issue 21: it used to be refused as "nothing
    // of this request was kept" and then stored anyway, so a person who retyped it got it twice).
    let k1 = h.send(ann, "send_message", json!({"session_id": s, "text": "kept or not?", "client_msg_id": "k1"}));
    h.tick();
    assert_eq!(h.response(ann, k1), None, "neither acknowledged nor refused while it is not stored");
    let storage = h.events_named(bob, "storage");
    assert_eq!(storage.last().unwrap()["payload"]["available"], false, "everyone is told");
    h.run(300);
    let seen = names(&h.take(bob));
    assert!(!seen.iter().any(|e| e == "message" || e == "turn_started" || e == "agent_delta"), "{seen:?}");
    assert_eq!(stored("kept or not?"), 0);
    // While it fails: changes and reads of unstored state are refused, harmless reads work.
    let refused = h.call(bob, "send_message", json!({"session_id": s, "text": "me too", "client_msg_id": "b1"}));
    let refused = refused.unwrap_err();
    assert_eq!(refused["code"], "storage_unavailable", "{refused}");
    assert_eq!(refused["retry_after_ms"], 1000);
    assert!(refused["message"].as_str().unwrap().contains("nothing of this request was kept"), "{refused}");
    assert_eq!(code(h.call(bob, "join_session", json!({"session_id": s, "since_seq": 0}))), "storage_unavailable");
    h.call(bob, "list_sessions", json!({})).unwrap();

    failing.store(false, Ordering::SeqCst);
    h.run(1_500);
    assert_eq!(h.events_named(bob, "storage").last().unwrap()["payload"]["available"], true);
    assert_eq!(stored("kept or not?"), 1, "stored once the store works");
    let acked = h.response(ann, k1).expect("acknowledged once stored").expect("a success");
    assert_eq!(acked["duplicate"], false, "{acked}");
    assert_eq!(stored("me too"), 0, "what was refused as not kept was indeed never kept");
    let released: Vec<Value> = h.events_named(bob, "message");
    assert!(released.iter().any(|m| m["payload"]["text"] == "kept or not?"), "released after the commit");
    // The retry learns the outcome: the same message, not a second one.
    let retry = h.call(ann, "send_message", json!({"session_id": s, "text": "kept or not?", "client_msg_id": "k1"}));
    assert_eq!(retry.unwrap()["duplicate"], true);
    assert_eq!(stored("kept or not?"), 1);
    let seqs: Vec<u64> = h.frames(bob).iter().filter_map(|f| f.get("seq").and_then(Value::as_u64)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no duplicate: {seqs:?}");
}

#[test]
fn a_rejected_message_never_reaches_the_database() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/plan the work", "client_msg_id": "a1"})).unwrap();
    let err = h.call(bob, "send_message", json!({"session_id": s, "text": "SECRET-REJECTED", "client_msg_id": "b1"}));
    assert_eq!(code(err), "turn_locked");
    h.run(500);
    // Checked where the promise is kept: nothing in any table mentions it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (table, column) in [("messages", "text"), ("events", "frame"), ("sessions", "streamed"), ("audit", "detail")] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table} WHERE {column} LIKE '%SECRET-REJECTED%'"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 0, "{table}.{column} holds the rejected message");
    }
    let kept: i64 =
        conn.query_row("SELECT count(*) FROM messages WHERE text = '/plan the work'", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 1, "the accepted one is there (the check can see messages)");
}

#[test]
fn kick_with_revoke_share_keeps_the_person_out() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, ann_id) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    h.host("kick", json!({"participant_id": ann_id, "revoke_share": true}));
    assert_eq!(h.sinks[&ann].closed.lock().unwrap().as_deref(), Some("kicked"));
    assert_eq!(h.sinks[&bob].closed.lock().unwrap().as_deref(), Some("revoked"), "the share's other people go too");
    let again = h.open("10.80.0.1:1");
    assert_eq!(code(h.call(again, "authenticate", json!({"token": tok, "display_name": "Ann"}))), "unauthenticated");
}

#[test]
fn no_frame_the_host_sends_exceeds_the_wire_bound_and_a_huge_turn_loses_nothing() {
    use roundtable::agent::{AgentEvent, AgentOutput};
    use roundtable::engine::Inbound;
    use roundtable::protocol::MAX_HOST_FRAME_BYTES;
    let config = EngineConfig { check_invariants: true, ..EngineConfig::default() };
    let mut h = Harness::new(config);
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    // A turn that waits (the demo agent asks a question), so the injected output belongs to it.
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(100);
    let agent = |h: &mut Harness, event: AgentEvent| {
        h.engine.sender().send(Inbound::Agent(AgentOutput { session: s.as_str().into(), turn_id: 1, event })).unwrap();
    };
    // Bob stops reading while 3 MB stream in (quotes and control characters are six times
    // bigger on the wire): his waiting deltas are merged, but never beyond the delta bound.
    *h.sinks[&bob].capacity.lock().unwrap() = Some(0);
    let chunk: String = "line \"quoted\" \u{1}\u{2} and é 漢\n".repeat(25_000);
    for _ in 0..3 {
        agent(&mut h, AgentEvent::Delta(chunk.clone()));
        h.tick();
    }
    *h.sinks[&bob].capacity.lock().unwrap() = None;
    h.run(200);
    let huge = "x\u{1}".repeat(1_000_000);
    agent(&mut h, AgentEvent::Plan { request_id: "p".into(), plan: huge.clone(), on_approval: None });
    agent(&mut h, AgentEvent::ToolRequest { request_id: "t".into(), tool: "Write".into(), input: huge });
    h.tick();
    let (cara, _) = h.join(&tok, "Cara", &s); // a snapshot while the long turn runs
    agent(&mut h, AgentEvent::Done);
    h.run(100);
    let page = h.call(cara, "fetch_history", json!({"session_id": s, "limit": 200})).unwrap();
    assert!(page.to_string().len() <= MAX_HOST_FRAME_BYTES);
    for conn in [HOST, ann, bob, cara] {
        for f in h.frames(conn) {
            let n = f.to_string().len();
            assert!(n <= MAX_HOST_FRAME_BYTES, "a {n}-byte {} frame", f["event"]);
        }
    }
    // Nothing was lost: the agent's messages, in order, are everything it streamed.
    let streamed: String = h
        .events_named(HOST, "agent_delta")
        .iter()
        .map(|d| d["payload"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(streamed.len() >= 3 * chunk.len(), "the host saw every delta: {} of {}", streamed.len(), 3 * chunk.len());
    for conn in [ann, bob] {
        let posted: String = h
            .events_named(conn, "message")
            .iter()
            .filter(|m| m["payload"]["author_id"] == "agent")
            .map(|m| m["payload"]["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(posted, streamed, "the whole turn, split into bounded messages");
    }
    assert!(h.events_named(ann, "message").iter().filter(|m| m["payload"]["author_id"] == "agent").count() > 3);
    let opened = h.events_named(ann, "vote_opened");
    assert!(opened.iter().any(|v| v.to_string().contains("more bytes not shown")), "clipped subjects say so");
}

#[test]
fn secrets_stay_masked_in_history_pages_and_in_replays_after_a_restart() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let config = EngineConfig { seed: 3, ..EngineConfig::default() };
    let (tok, s) = {
        let mut h = Harness::with_store(config.clone(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        let tok = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        let text = format!("use token {secret} please");
        h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": "s"})).unwrap();
        h.run(600);
        (tok, s)
    };
    // A new engine on the same database: the tail is restored from stored (host) frames.
    let mut h = Harness::with_store(config, Box::new(SqliteStore::open(&db).unwrap()));
    let c = h.open("10.13.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Late"})).unwrap();
    h.call(c, "join_session", json!({"session_id": s, "since_seq": 0})).unwrap();
    let page = h.call(c, "fetch_history", json!({"session_id": s, "limit": 50})).unwrap();
    let all = serde_json::to_string(&h.frames(c)).unwrap() + &page.to_string();
    assert!(all.contains("use token"), "the message was replayed and paged: {all}");
    assert!(!all.contains("ghp_abcdef"), "a remote saw the secret after the restart");
    let host = h.call(HOST, "fetch_history", json!({"session_id": s, "limit": 50})).unwrap();
    assert!(host.to_string().contains(secret), "the host still sees the original");
}

#[test]
fn deltas_of_one_tick_go_out_as_one_frame_in_order_before_the_turn_ends() {
    use roundtable::agent::{AgentEvent, AgentOutput};
    use roundtable::engine::Inbound;
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(100);
    h.take(ann);
    for event in [
        AgentEvent::Delta("one ".into()),
        AgentEvent::Delta("two ".into()),
        AgentEvent::Delta("three".into()),
        AgentEvent::Done,
    ] {
        h.engine.sender().send(Inbound::Agent(AgentOutput { session: s.as_str().into(), turn_id: 1, event })).unwrap();
    }
    h.tick();
    let frames = h.take(ann);
    let names: Vec<&str> = frames.iter().filter_map(|f| f["event"].as_str()).collect();
    let deltas: Vec<&Value> = frames.iter().filter(|f| f["event"] == "agent_delta").collect();
    assert_eq!(deltas.len(), 1, "one merged delta, serialised once: {names:?}");
    assert_eq!(deltas[0]["payload"]["text"], "one two three");
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no {name} in {names:?}"));
    assert!(at("agent_delta") < at("turn_ended"), "the preview comes before the turn ends: {names:?}");
}

#[test]
fn claude_sessions_are_plan_first_unless_the_workspace_or_session_says_otherwise() {
    let mut h = Harness::new(EngineConfig::default());
    let dir = std::env::temp_dir().display().to_string();
    let claude = h.host("add_workspace", json!({"name": "c", "dir": dir, "agent": {"kind": "claude"}}));
    let demo = h.host("add_workspace", json!({"name": "d", "dir": dir}));
    let off =
        h.host("add_workspace", json!({"name": "o", "dir": dir, "agent": {"kind": "claude", "plan_first": false}}));
    let session = |h: &mut Harness, w: &Value, extra: Value| {
        let mut params = json!({"workspace_id": w["id"], "title": "t"});
        params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        h.host("create_session", params)
    };
    assert_eq!(session(&mut h, &claude, json!({}))["plan_first"], true, "claude: on by default");
    assert!(session(&mut h, &demo, json!({})).get("plan_first").is_none(), "demo: off (absent)");
    assert!(session(&mut h, &off, json!({})).get("plan_first").is_none(), "workspace --no-plan-first");
    let one_off = session(&mut h, &claude, json!({"plan_first": false}));
    assert!(one_off.get("plan_first").is_none(), "a session can differ from its workspace");
    let listed = h.host("list_sessions", json!({}));
    let flags: Vec<bool> = listed["sessions"].as_array().unwrap().iter().map(|s| s["plan_first"] == true).collect();
    assert_eq!(flags, [true, false, false, false], "list_sessions reports it");
}

#[test]
fn room_chat_is_masked_for_remotes_and_in_history_pages() {
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let text = format!("the token is {secret}");
    h.call(ann, "send_chat", json!({"session_id": s, "text": text, "client_msg_id": "r"})).unwrap();
    h.run(100);
    assert!(serde_json::to_string(&h.frames(HOST)).unwrap().contains(secret), "the host sees the original");
    let chats = h.events_named(bob, "chat");
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert_eq!(chats[0]["payload"]["room"], true);
    assert!(!chats[0]["payload"]["text"].as_str().unwrap().contains("ghp_abcdef"), "{chats:?}");
    let page = h.call(bob, "fetch_history", json!({"session_id": s})).unwrap();
    let page_text = page.to_string();
    assert!(page_text.contains("\"room\":true") && !page_text.contains("ghp_abcdef"), "{page_text}");
    assert!(h.events_named(bob, "agent_delta").is_empty(), "room chat starts no agent turn");
}

#[test]
fn host_settings_apply_to_the_next_vote_rename_the_host_everywhere_and_survive_a_restart() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let tok;
    {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        tok = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        assert_eq!(
            h.host("get_settings", json!({})),
            json!({"host_name": "Host", "default_consensus": true}),
            "the defaults"
        );
        // Remotes may neither read nor change them.
        assert_eq!(code(h.call(ann, "get_settings", json!({}))), "forbidden");
        assert_eq!(code(h.call(ann, "update_settings", json!({"default_consensus": false}))), "forbidden");
        // Bad input is refused whole.
        assert_eq!(code(h.call(HOST, "update_settings", json!({"host_name": " "}))), "invalid_params");
        assert_eq!(code(h.call(HOST, "update_settings", json!({"host_name": "Agent"}))), "invalid_params");
        assert_eq!(code(h.call(HOST, "update_settings", json!({"colour": "red"}))), "invalid_params");

        let after = h.host(
            "update_settings",
            json!({"host_name": "Maya", "default_consensus": false, "default_vote_deadline_ms": 90_000}),
        );
        assert_eq!(after, json!({"host_name": "Maya", "default_consensus": false, "default_vote_deadline_ms": 90_000}));
        h.run(50);
        let renamed = h.events_named(ann, "participant_renamed");
        assert_eq!(renamed.len(), 1, "the session learns the new name");
        assert_eq!(renamed[0]["payload"], json!({"participant_id": "host", "display_name": "Maya"}));
        h.host("send_message", json!({"session_id": s, "text": "hi", "client_msg_id": "h1"}));
        h.run(100);
        let msg = h.events_named(ann, "message").into_iter().find(|m| m["payload"]["text"] == "hi").unwrap();
        assert_eq!(msg["payload"]["author_name"], "Maya");
        h.run(2_000);
        // The host's own plan vote: the holder (the host) decides now, and it has the new deadline.
        let v = open_plan(&mut h, HOST, &s);
        let opened =
            h.events_named(ann, "vote_opened").into_iter().find(|e| e["payload"]["vote_id"] == v.as_str()).unwrap();
        assert_eq!(opened["payload"]["decided_by"], "holder", "{opened}");
        assert!(opened["payload"]["deadline_ms"].as_u64().is_some(), "{opened}");
        let audit = h.host("get_settings", json!({}));
        assert_eq!(audit["host_name"], "Maya");
    }
    let h = &mut Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    assert_eq!(
        h.host("get_settings", json!({})),
        json!({"host_name": "Maya", "default_consensus": false, "default_vote_deadline_ms": 90_000}),
        "kept across a restart"
    );
    // A deadline given on the command line wins for that run, without changing what is saved.
    let pinned =
        EngineConfig { default_vote_deadline_ms: Some(5_000), vote_deadline_pinned: true, ..Default::default() };
    drop(std::mem::replace(h, Harness::with_store(pinned, Box::new(SqliteStore::open(&db).unwrap()))));
    h.run(50);
    assert_eq!(h.host("get_settings", json!({}))["default_vote_deadline_ms"], 5_000);
    assert_eq!(h.host("get_settings", json!({}))["host_name"], "Maya");
}

/// `ann`'s frames after `/ask x` opened a question vote in turn 1, and after `events` from the
/// agent: the deltas' text before the first of `before`, and every event name.
fn remote_view_after(events: Vec<roundtable::agent::AgentEvent>, before: &[&str]) -> (String, Vec<String>) {
    use roundtable::agent::AgentOutput;
    use roundtable::engine::Inbound;
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(100);
    h.take(ann);
    for event in events {
        h.engine.sender().send(Inbound::Agent(AgentOutput { session: s.as_str().into(), turn_id: 1, event })).unwrap();
    }
    h.tick();
    let frames = h.take(ann);
    let names = names(&frames);
    let end =
        names.iter().position(|n| before.contains(&n.as_str())).unwrap_or_else(|| panic!("{before:?} in {names:?}"));
    let streamed = frames[..end]
        .iter()
        .filter(|f| f["event"] == "agent_delta")
        .map(|d| d["payload"]["text"].as_str().unwrap().to_string())
        .collect();
    (streamed, names)
}

#[test]
fn text_held_back_for_masking_reaches_remotes_before_the_reply_and_turn_ended() {
    use roundtable::agent::AgentEvent;
    // `sk-an` could still become a key, so the stream masker holds it back until the turn ends.
    let events = vec![AgentEvent::Delta("the key starts sk-an".into()), AgentEvent::Done];
    let (streamed, names) = remote_view_after(events, &["message", "turn_ended"]);
    assert_eq!(streamed, "the key starts sk-an", "{names:?}");
    let last_delta = names.iter().rposition(|n| n == "agent_delta").unwrap();
    assert!(last_delta < names.iter().position(|n| n == "message").unwrap(), "{names:?}");
}

#[test]
fn text_held_back_for_masking_stays_held_across_a_vote_and_is_masked_whole() {
    use roundtable::agent::AgentEvent;
    // The key's first half, a plan vote, the second half, each in its own tick: ending the
    // stream at the vote masked each half apart (neither matches alone) and sent both in clear.
    let plan = AgentEvent::Plan { request_id: "p2".into(), plan: "1. do it".into(), on_approval: None };
    let mut a = agent_speaking_to_ann();
    a.say(AgentEvent::Delta("Plan below; my key is sk-ant-api03-AbCdEfGh".into()));
    a.say(plan);
    let seen: Vec<String> = a.h.frames(a.ann).iter().filter_map(|f| f["event"].as_str().map(String::from)).collect();
    assert!(seen.contains(&"vote_opened".to_string()), "{seen:?}");
    assert_eq!(streamed_text(&a.h, a.ann), "Plan below; my key is ", "held back across the vote: {seen:?}");
    a.say(AgentEvent::Delta("IjKlMnOpQrStUvWxYz0123 and more".into()));
    a.say(AgentEvent::Done);
    assert_eq!(streamed_text(&a.h, a.ann), "Plan below; my key is [masked] and more");
}

/// A session whose agent (turn 1, started by Ann's `/ask x`) the test speaks for.
struct AgentSpeaking {
    h: Harness,
    ann: roundtable::ids::ConnId,
    token: String,
    session: String,
}

fn agent_speaking_to_ann() -> AgentSpeaking {
    let (mut h, w, s) = setup();
    let token = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&token, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(100);
    h.take(ann);
    AgentSpeaking { h, ann, token, session: s }
}

impl AgentSpeaking {
    /// Delivers one agent event of turn 1, and ticks.
    fn say(&mut self, event: roundtable::agent::AgentEvent) {
        use roundtable::agent::AgentOutput;
        use roundtable::engine::Inbound;
        let out = AgentOutput { session: self.session.as_str().into(), turn_id: 1, event };
        self.h.engine.sender().send(Inbound::Agent(out)).unwrap();
        self.h.tick();
    }
}

/// The text of the `agent_delta`s `conn` received (since its frames were last taken).
fn streamed_text(h: &Harness, conn: roundtable::ids::ConnId) -> String {
    h.events_named(conn, "agent_delta").iter().map(|d| d["payload"]["text"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_late_joiners_snapshot_stops_where_remotes_deltas_stopped() {
    use roundtable::agent::AgentEvent;
    let mut a = agent_speaking_to_ann();
    a.say(AgentEvent::Delta("here: the token is ghp_HMI4fS9z6yKr".into()));
    // Bob joins while the token is half streamed: the stream masker holds its start back.
    let (bob, _) = a.h.join(&a.token.clone(), "Bob", &a.session.clone());
    let snapshot = a.h.events_named(bob, "snapshot").pop().unwrap();
    let text = snapshot["payload"]["streaming_text"].as_str().unwrap().to_string();
    assert!(text.ends_with("here: the token is "), "{text:?}");
    a.say(AgentEvent::Delta("yu7OE1WnwQKU5nR50dJQg96e, done".into()));
    a.say(AgentEvent::Done);
    let anns = streamed_text(&a.h, a.ann);
    assert!(anns.ends_with("here: the token is [masked], done"), "{anns:?}");
    let bobs = format!("{text}{}", streamed_text(&a.h, bob));
    assert_eq!(bobs, anns, "Bob's snapshot and deltas: Ann's text, nothing repeated or missing");
    assert!(streamed_text(&a.h, HOST).ends_with("ghp_HMI4fS9z6yKryu7OE1WnwQKU5nR50dJQg96e, done"));
}

#[test]
fn add_workspace_stores_the_hosts_resolved_agent_command_or_refuses_it() {
    fn resolve(spec: &roundtable::persist::AgentSpec) -> Result<roundtable::persist::AgentSpec, String> {
        match spec.command.as_deref() {
            Some("./agent.py") => {
                Ok(roundtable::persist::AgentSpec { command: Some("/home/me/agent.py".into()), ..spec.clone() })
            }
            Some(other) => Err(format!("agent command not found at '/home/me/{other}'")),
            None => Ok(spec.clone()),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let config = EngineConfig { resolve_agent: Some(resolve), ..EngineConfig::default() };
    let store = roundtable::store::SqliteStore::open(&db).unwrap();
    let mut h = Harness::with_store(config, Box::new(store));
    let agent = |cmd: &str| json!({"kind": "command", "command": cmd});
    let ok = h.call(HOST, "add_workspace", json!({"name": "a", "dir": "/w", "agent": agent("./agent.py")}));
    assert!(ok.is_ok(), "{ok:?}");
    let err = h.call(HOST, "add_workspace", json!({"name": "b", "dir": "/w2", "agent": agent("nope")})).unwrap_err();
    assert_eq!(err["code"], "invalid_params");
    assert_eq!(err["message"], "agent command not found at '/home/me/nope'");
    drop(h);
    let stored = roundtable::store::Admin::open(&db).unwrap().list_workspaces().unwrap();
    let stored: Vec<_> = stored.iter().map(|w| (w.name.as_str(), w.agent.command.as_deref())).collect();
    assert_eq!(stored, vec![("a", Some("/home/me/agent.py"))]);
}

#[test]
fn the_formats_issue_15_found_leaking_are_masked_for_remotes_live_streamed_and_in_deny_reasons() {
    let secrets = [
        "s3cr3t-Pa55word",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "glpat-xY3kP9mQ2vR7sT1uW4zA",
        "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "pypi-AgEIcHlwaS5vcmcCJGI4YjQ2ZWY0LTk2NmEtNDVjNy04ZjZhLTc3ZDk1ZDIxNGQ0MAACKl",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
        "d3pl0y-pw",
    ];
    let text = format!(
        "[client]\npassword = {}\nAuthorization: Bearer {}\nkeys {} {} {} {} {}\nremote https://deploy:{}@git.example.com/app.git",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6], secrets[7]
    );
    let (mut h, w, s) = setup();
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    let (bob, _) = h.join(&tok, "Bob", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": text, "client_msg_id": "k"})).unwrap();
    h.run(2000);
    let v = open_plan(&mut h, ann, &s);
    let reason = format!("use {} instead", secrets[2]);
    h.call(bob, "vote_plan", json!({"vote_id": v, "approve": false, "reason": reason})).unwrap();
    h.run(200);
    let host_all = serde_json::to_string(&h.frames(HOST)).unwrap();
    for conn in [ann, bob] {
        let all = serde_json::to_string(&h.frames(conn)).unwrap();
        for secret in secrets {
            assert!(host_all.contains(secret), "the host sees {secret}");
            assert!(!all.contains(secret), "remote {conn} saw {secret}");
        }
        assert!(
            all.contains("password = [masked]") && all.contains("https://deploy:[masked]@git.example.com"),
            "{all}"
        );
        let streamed: String = h
            .events_named(conn, "agent_delta")
            .iter()
            .map(|d| d["payload"]["text"].as_str().unwrap().to_string())
            .collect();
        assert!(streamed.contains("Authorization: Bearer [masked]"), "the streamed echo is masked: {streamed}");
    }
}

/// An external runtime that records every command the engine sends it.
#[derive(Clone, Default)]
struct RecordingRuntime(std::sync::Arc<std::sync::Mutex<Vec<roundtable::agent::AgentCommand>>>);

impl roundtable::agent::AgentRuntime for RecordingRuntime {
    fn send(&mut self, cmd: roundtable::agent::AgentCommand) {
        self.0.lock().unwrap().push(cmd);
    }
}

impl RecordingRuntime {
    /// The `conversation` of every turn started so far.
    fn conversations(&self) -> Vec<Option<String>> {
        use roundtable::agent::AgentCommand;
        let commands = self.0.lock().unwrap();
        commands
            .iter()
            .filter_map(|c| match c {
                AgentCommand::StartTurn { conversation, .. } => Some(conversation.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A harness on the SQLite file `db` whose external agents are `runtime`.
fn recording_host(db: &std::path::Path, runtime: &RecordingRuntime) -> Harness {
    let store = roundtable::store::SqliteStore::open(db).unwrap();
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(store));
    h.engine.set_agent_runtime(Box::new(runtime.clone()));
    h
}

/// Turn `n` in session `s`: `conn` prompts, the agent says `events` and is done.
fn agent_turn(
    h: &mut Harness,
    conn: roundtable::ids::ConnId,
    s: &str,
    n: u64,
    events: Vec<roundtable::agent::AgentEvent>,
) {
    use roundtable::agent::{AgentEvent, AgentOutput};
    use roundtable::engine::Inbound;
    let params = json!({"session_id": s, "text": format!("prompt {n}"), "client_msg_id": format!("m{n}")});
    h.call(conn, "send_message", params).unwrap();
    h.tick();
    for event in events.into_iter().chain([AgentEvent::Done]) {
        h.engine.sender().send(Inbound::Agent(AgentOutput { session: s.into(), turn_id: n, event })).unwrap();
    }
    h.run(50);
}

/// A `command`-agent workspace and its session on `h`: (workspace id, session id).
fn command_workspace(h: &mut Harness) -> (String, String) {
    let w = h.host("add_workspace", json!({"name": "ws", "dir": ".", "agent": {"kind": "command", "command": "x"}}));
    let w = w["id"].as_str().unwrap().to_string();
    let s = h.host("create_session", json!({"workspace_id": w, "title": "main"}))["id"].as_str().unwrap().to_string();
    (w, s)
}

/// Issue 21 (items 2 and 4): the conversation an agent reports is stored with its session and
/// sent with every later turn — also after a restart — and clearing the session forgets it, so
/// "clear" means one thing: the room's history and the agent's memory go together.
#[test]
fn the_agents_conversation_survives_a_restart_and_clearing_the_session_forgets_it() {
    use roundtable::agent::AgentEvent;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let start = |runtime: &RecordingRuntime| recording_host(&db, runtime);
    let turn = agent_turn;
    let runtime = RecordingRuntime::default();
    let (tok, s) = {
        let mut h = start(&runtime);
        let (w, s) = command_workspace(&mut h);
        let tok = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        turn(
            &mut h,
            ann,
            &s,
            1,
            vec![AgentEvent::Conversation(Some("cli-1".into())), AgentEvent::Delta("kiwi".into())],
        );
        turn(&mut h, ann, &s, 2, vec![]);
        (tok, s)
    };
    assert_eq!(runtime.conversations(), [None, Some("cli-1".to_string())]);

    // A restart on the same database: the next turn continues the stored conversation.
    let runtime = RecordingRuntime::default();
    let mut h = start(&runtime);
    let (ann, _) = h.join(&tok, "Ann", &s);
    turn(&mut h, ann, &s, 3, vec![AgentEvent::Conversation(Some("cli-1".into()))]);
    assert_eq!(runtime.conversations(), [Some("cli-1".to_string())], "remembered across the restart");

    // Clearing the session forgets it (and a conversation the agent could not continue is
    // forgotten when the agent says so).
    h.host("clear_session", json!({"session_id": s}));
    turn(&mut h, ann, &s, 4, vec![AgentEvent::Conversation(Some("cli-2".into()))]);
    turn(&mut h, ann, &s, 5, vec![AgentEvent::Conversation(None)]);
    turn(&mut h, ann, &s, 6, vec![]);
    assert_eq!(
        runtime.conversations(),
        [Some("cli-1".to_string()), None, Some("cli-2".to_string()), None],
        "cleared → new; then cli-2; then forgotten"
    );
}

/// Issue 21 (item 3): a session's agent settings are the host's to keep: set once, they go with
/// every later turn (also after a restart) and everyone sees them; participants choose the model,
/// only the host the permission mode, and never one that skips votes.
#[test]
fn agent_settings_are_kept_per_session_sent_with_every_turn_and_shown_to_everyone() {
    use roundtable::agent::AgentCommand;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let start = |runtime: &RecordingRuntime| recording_host(&db, runtime);
    let settings_of_turns = |runtime: &RecordingRuntime| -> Vec<Value> {
        let commands = runtime.0.lock().unwrap();
        commands
            .iter()
            .filter_map(|c| match c {
                AgentCommand::StartTurn { settings, .. } => Some(serde_json::to_value(settings).unwrap()),
                _ => None,
            })
            .collect()
    };
    let turn = |h: &mut Harness, conn, s: &str, n: u64| agent_turn(h, conn, s, n, Vec::new());
    let runtime = RecordingRuntime::default();
    let (tok, s) = {
        let mut h = start(&runtime);
        let (w, s) = command_workspace(&mut h);
        let tok = h.mint(&[&w], json!({}));
        let obs = h.mint(&[&w], json!({"role": "observer"}));
        let (ann, _) = h.join(&tok, "Ann", &s);
        let (bob, _) = h.join(&tok, "Bob", &s);
        let (olga, _) = h.join(&obs, "Olga", &s);
        turn(&mut h, ann, &s, 1);

        let set = |h: &mut Harness, conn, params: Value| {
            let mut p = json!({"session_id": s});
            p.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
            h.call(conn, "set_agent_settings", p)
        };
        assert_eq!(set(&mut h, ann, json!({"model": "haiku"})).unwrap(), json!({"model": "haiku"}));
        let updated = h.events_named(bob, "session_updated");
        assert_eq!(updated.last().unwrap()["payload"]["agent_settings"], json!({"model": "haiku"}), "everyone sees it");
        assert_eq!(code(set(&mut h, olga, json!({"model": "opus"}))), "forbidden", "observers cannot");
        assert_eq!(code(set(&mut h, bob, json!({"permission_mode": "plan"}))), "forbidden", "the mode is the host's");
        assert_eq!(code(set(&mut h, ann, json!({"model": "--dangerously-skip-permissions"}))), "invalid_params");
        let skip = h.call(HOST, "set_agent_settings", json!({"session_id": s, "permission_mode": "bypassPermissions"}));
        assert_eq!(code(skip), "invalid_params", "never a mode that skips votes");
        h.host("set_agent_settings", json!({"session_id": s, "permission_mode": "plan"}));
        let listed = h.call(ann, "list_sessions", json!({})).unwrap();
        assert_eq!(listed["sessions"][0]["agent_settings"], json!({"model": "haiku", "permission_mode": "plan"}));
        turn(&mut h, ann, &s, 2);
        (tok, s)
    };
    // After a restart the next turn still gets them; "" goes back to the default.
    let runtime2 = RecordingRuntime::default();
    let mut h = start(&runtime2);
    let (ann, _) = h.join(&tok, "Ann", &s);
    turn(&mut h, ann, &s, 3);
    h.call(ann, "set_agent_settings", json!({"session_id": s, "model": ""})).unwrap();
    turn(&mut h, ann, &s, 4);
    let mut all = settings_of_turns(&runtime);
    all.extend(settings_of_turns(&runtime2));
    assert_eq!(
        all,
        [
            json!({}),
            json!({"model": "haiku", "permission_mode": "plan"}),
            json!({"model": "haiku", "permission_mode": "plan"}),
            json!({"permission_mode": "plan"})
        ]
    );
}

/// Issue 22: the host's window asks for the lobby, the audit log and each workspace's agent
/// instead of reading the database behind the protocol's back: host-only methods, `forbidden` to
/// remotes, and the command line (the host's paths) never shown to a remote.
#[test]
fn the_host_lists_the_lobby_the_audit_log_and_workspace_agents_and_remotes_cannot() {
    let (mut h, w, _s) = setup();
    let tok = h.mint(&[&w], json!({"admission_required": true}));
    let (c, d) = (h.open("10.6.1.1:1"), h.open("10.6.1.2:1"));
    let eve = h.call(c, "authenticate", json!({"token": tok, "display_name": "Eve"})).unwrap();
    let dan = h.call(d, "authenticate", json!({"token": tok, "display_name": "Dan"})).unwrap();
    let lobby = h.host("list_lobby", json!({}));
    let waiting: Vec<(&str, &str)> = lobby["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["participant_id"].as_str().unwrap(), e["display_name"].as_str().unwrap()))
        .collect();
    let (eve_id, dan_id) = (eve["participant_id"].as_str().unwrap(), dan["participant_id"].as_str().unwrap());
    assert_eq!(waiting, vec![(eve_id, "Eve"), (dan_id, "Dan")], "{lobby}");
    assert!(lobby["waiting"].as_array().unwrap().iter().all(|e| e["share_id"].is_string()), "{lobby}");

    h.host("admit", json!({"participant_id": eve_id}));
    let lobby = h.host("list_lobby", json!({}));
    assert_eq!(lobby["waiting"].as_array().unwrap().len(), 1, "Eve is in: {lobby}");
    assert_eq!(lobby["waiting"][0]["display_name"], "Dan");

    // The newest rows, oldest first; the admission is the last thing that happened.
    let audit = h.host("fetch_audit", json!({"limit": 2}));
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert!(entries[0]["at"].as_u64() <= entries[1]["at"].as_u64(), "oldest first: {audit}");
    assert_eq!(entries[1]["action"], "admitted", "{audit}");
    let everything = h.host("fetch_audit", json!({}));
    let actions: Vec<&str> =
        everything["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["share_minted", "authenticated", "authenticated", "admitted"], "{everything}");
    assert_eq!(code(h.call(HOST, "fetch_audit", json!({"limit": 2, "since": 1}))), "invalid_params");

    // The host sees how each workspace's agent is registered; a remote only its kind.
    let host_view = h.host("list_workspaces", json!({}));
    assert_eq!(host_view["workspaces"][0]["agent_detail"], "demo", "{host_view}");
    let eve_view = h.call(c, "list_workspaces", json!({})).unwrap();
    assert_eq!(eve_view["workspaces"][0]["agent"], "demo");
    assert!(eve_view["workspaces"][0].get("agent_detail").is_none(), "{eve_view}");
    for method in ["list_lobby", "fetch_audit"] {
        assert_eq!(code(h.call(c, method, json!({}))), "forbidden", "{method} is the host's");
    }
}

/// A host's tokens rest on 256 bits from the OS, not only on its 64-bit seed: two hosts with the
/// same seed but different secrets mint different tokens, while a zero secret (scenarios, tests)
/// keeps runs replayable.
#[test]
fn tokens_depend_on_the_hosts_secret_not_only_on_its_seed() {
    let mint = |secret: [u8; 32]| {
        let mut h = Harness::new(EngineConfig { seed: 7, token_secret: secret, ..EngineConfig::default() });
        let (w, _) = h.workspace_and_session(".");
        h.mint(&[&w], json!({}))
    };
    assert_eq!(mint([0; 32]), mint([0; 32]), "deterministic without a secret");
    assert_ne!(mint([1; 32]), mint([2; 32]), "the secret changes the tokens");
    assert_ne!(mint([0; 32]), mint([1; 32]));
}

// ---- session tails in memory only while needed (issue 25) ------------------------------------

/// Per session, in id order: (events in the in-memory replay tail, messages in memory).
fn tails_in_memory(h: &mut Harness) -> Vec<(String, usize, usize)> {
    use roundtable::engine::components::{EventLog, History, Session};
    let mut q = h.engine.world.query::<(&Session, &EventLog, &History)>();
    let mut out: Vec<(String, usize, usize)> =
        q.iter(&h.engine.world).map(|(s, log, hist)| (s.id.to_string(), log.tail.len(), hist.messages.len())).collect();
    out.sort();
    out
}

/// The parts of a snapshot that come from the session's tails and state (not the roster).
fn snapshot_core(h: &mut Harness, conn: roundtable::ids::ConnId, s: &str) -> Value {
    h.take(conn);
    h.call(conn, "join_session", json!({"session_id": s})).unwrap();
    let snap = h.events_named(conn, "snapshot").pop().expect("a snapshot");
    let p = &snap["payload"];
    json!({"messages": p["messages"], "has_older": p["has_older"], "last_seq": p["last_seq"], "votes": p["votes"],
           "streaming_text": p["streaming_text"]})
}

#[test]
fn a_restarted_host_holds_no_session_tails_until_one_is_needed_and_then_serves_the_same_snapshot() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let (w, sessions, before) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s1) = h.workspace_and_session(".");
        let mut sessions = vec![s1];
        for title in ["two", "three"] {
            let s = h.host("create_session", json!({"workspace_id": w, "title": title}));
            sessions.push(s["id"].as_str().unwrap().to_string());
        }
        for s in &sessions {
            for i in 0..5 {
                let text = format!("{s} r{i}");
                h.host("send_chat", json!({"session_id": s, "text": text, "client_msg_id": format!("{s}-{i}")}));
            }
        }
        let before = snapshot_core(&mut h, HOST, &sessions[0]);
        (w, sessions, before)
    };
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
    h.run(50);
    assert!(
        tails_in_memory(&mut h).iter().all(|(_, events, messages)| *events == 0 && *messages == 0),
        "nothing of any session's history is in memory after a restart: {:?}",
        tails_in_memory(&mut h)
    );
    // Listing costs no load; neither does following a session without missing anything (the
    // host's console does that for every session at start).
    h.host("join_session", json!({"session_id": sessions[2], "since_seq": u64::MAX}));
    let list = h.host("list_sessions", json!({"workspace_id": w}));
    assert_eq!(list["sessions"].as_array().unwrap().len(), 3);
    assert!(tails_in_memory(&mut h).iter().all(|(_, events, _)| *events == 0));
    // A join loads that session (only that one) and gets what it got before the restart.
    assert_eq!(snapshot_core(&mut h, HOST, &sessions[0]), before, "the same snapshot as before the restart");
    let mem = tails_in_memory(&mut h);
    let loaded: Vec<&String> = mem.iter().filter(|(_, events, _)| *events > 0).map(|(s, ..)| s).collect();
    assert_eq!(loaded, vec![&sessions[0]], "{mem:?}");
    // A retry of a message sent before the restart, in a session not loaded yet: a duplicate.
    let s2 = &sessions[1];
    let retry =
        h.host("send_chat", json!({"session_id": s2, "text": format!("{s2} r4"), "client_msg_id": format!("{s2}-4")}));
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(h.engine.violations(), Vec::<String>::new());
}

#[test]
fn an_idle_session_gives_its_tails_back_and_a_reload_replays_exactly_the_missed_frames() {
    use roundtable::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let config = EngineConfig { grace_ms: 1_000, unload_idle_ms: 5_000, ..EngineConfig::default() };
    let mut h = Harness::with_store(config, Box::new(SqliteStore::open(&db).unwrap()));
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    for i in 0..20 {
        h.call(ann, "send_chat", json!({"session_id": s, "text": format!("a{i}"), "client_msg_id": format!("a{i}")}))
            .unwrap();
    }
    let ann_frames: Vec<Value> = h.frames(ann).into_iter().filter(|f| f.get("seq").is_some()).collect();
    let since = ann_frames[5]["seq"].as_u64().unwrap();
    let history_before = {
        let mut q = h.engine.world.query::<&roundtable::engine::components::History>();
        q.iter(&h.engine.world).map(|hist| hist.messages.clone()).collect::<Vec<_>>()
    };
    h.close(ann);
    // In use while Ann may come back (grace), then idle: the tails stay until the idle time ends.
    h.run(4_000);
    assert!(tails_in_memory(&mut h)[0].1 > 0, "not yet: idle for less than unload_idle_ms");
    h.run(4_000);
    assert_eq!(tails_in_memory(&mut h), vec![(s.clone(), 0, 0)], "idle past unload_idle_ms: given back");
    // Events go on without the tails (stored, seq'd): a rename while unloaded.
    h.host("rename_session", json!({"session_id": s, "title": "renamed"}));
    assert_eq!(tails_in_memory(&mut h), vec![(s.clone(), 0, 0)], "an event does not load the session");
    // A returning reader gets exactly the frames it missed, the same bytes as first sent.
    let c = h.open("10.25.0.1:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
    let r = h.call(c, "join_session", json!({"session_id": s, "since_seq": since})).unwrap();
    assert_eq!(r["catch_up"], "events", "{r}");
    let replayed: Vec<Value> = h.frames(c).into_iter().filter(|f| f.get("seq").is_some()).collect();
    let expected: Vec<&Value> = ann_frames.iter().filter(|f| f["seq"].as_u64().unwrap() > since).collect();
    assert_eq!(replayed.iter().take(expected.len()).collect::<Vec<_>>(), expected, "the missed frames, unchanged");
    let seqs: Vec<u64> = replayed.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "contiguous through the unload: {seqs:?}");
    assert!(replayed.iter().any(|f| f["event"] == "session_updated"), "with what happened while unloaded");
    let history_after = {
        let mut q = h.engine.world.query::<&roundtable::engine::components::History>();
        q.iter(&h.engine.world).map(|hist| hist.messages.clone()).collect::<Vec<_>>()
    };
    assert_eq!(history_after, history_before, "the same messages back in memory");
    assert_eq!(h.engine.violations(), Vec::<String>::new());
}

/// A store whose `load_tails` fails while `fail` is set (everything else works).
struct TailsFail {
    inner: roundtable::store::SqliteStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl roundtable::persist::Store for TailsFail {
    fn commit(&mut self, ops: &[roundtable::persist::StoreOp]) -> Result<(), roundtable::persist::StoreError> {
        self.inner.commit(ops)
    }
    fn load(&mut self) -> Result<roundtable::persist::Restored, roundtable::persist::StoreError> {
        self.inner.load()
    }
    fn load_without_tails(&mut self) -> Result<roundtable::persist::Restored, roundtable::persist::StoreError> {
        self.inner.load_without_tails()
    }
    fn load_tails(
        &mut self,
        session: &roundtable::ids::SessionId,
    ) -> Result<roundtable::persist::SessionTails, roundtable::persist::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(roundtable::persist::StoreError::Db("disk I/O error (injected)".into()));
        }
        self.inner.load_tails(session)
    }
    fn messages_before(
        &mut self,
        session: &roundtable::ids::SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<roundtable::persist::MessageRow>, bool), roundtable::persist::StoreError> {
        self.inner.messages_before(session, before_seq, limit)
    }
    fn message_by_client_id(
        &mut self,
        session: &roundtable::ids::SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<roundtable::persist::MessageRow>, roundtable::persist::StoreError> {
        self.inner.message_by_client_id(session, author_id, client_msg_id)
    }
    fn audit_log(&mut self) -> Result<Vec<roundtable::persist::AuditRow>, roundtable::persist::StoreError> {
        self.inner.audit_log()
    }
    fn ballots_of(
        &mut self,
        vote: &roundtable::ids::VoteId,
    ) -> Result<Vec<roundtable::persist::BallotRow>, roundtable::persist::StoreError> {
        self.inner.ballots_of(vote)
    }
}

#[test]
fn a_store_error_while_loading_a_session_refuses_the_request_and_the_host_runs_on() {
    use roundtable::store::SqliteStore;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("roundtable.db");
    let (tok, s) = {
        let mut h = Harness::with_store(EngineConfig::default(), Box::new(SqliteStore::open(&db).unwrap()));
        let (w, s) = h.workspace_and_session(".");
        let tok = h.mint(&[&w], json!({}));
        h.host("send_chat", json!({"session_id": s, "text": "before", "client_msg_id": "b"}));
        (tok, s)
    };
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let store = TailsFail { inner: SqliteStore::open(&db).unwrap(), fail: fail.clone() };
    let mut h = Harness::with_store(EngineConfig::default(), Box::new(store));
    let c = h.open("10.25.0.2:1");
    h.call(c, "authenticate", json!({"token": tok, "display_name": "Cy"})).unwrap();
    let err = h.call(c, "join_session", json!({"session_id": s})).unwrap_err();
    assert_eq!(err["code"], "storage_unavailable", "{err}");
    assert_eq!(
        code(h.call(c, "send_chat", json!({"session_id": s, "text": "x", "client_msg_id": "x"}))),
        "storage_unavailable"
    );
    // Nothing of the refused requests happened; the host and the connection work on.
    h.call(c, "list_sessions", json!({})).unwrap();
    assert_eq!(tails_in_memory(&mut h), vec![(s.clone(), 0, 0)]);
    fail.store(false, Ordering::SeqCst);
    h.call(c, "join_session", json!({"session_id": s})).unwrap();
    let snap = h.events_named(c, "snapshot").pop().expect("a snapshot");
    assert_eq!(snap["payload"]["messages"][0]["text"], "before");
    assert_eq!(h.engine.violations(), Vec::<String>::new());
}
