//! The delta bound (docs/PROTOCOL.md §1.3) as remotes receive it: every `agent_delta` carries at
//! most `MAX_DELTA_JSON_BYTES` of JSON-escaped text, whatever characters the agent streams and
//! however the secret masker changes the text after it was cut (a held-back tail sent together
//! with the next delta, a short secret replaced by the longer `[masked]`).

use roundtable::agent::{AgentEvent, AgentOutput};
use roundtable::engine::{EngineConfig, Inbound};
use roundtable::protocol::MAX_DELTA_JSON_BYTES;
use roundtable::testkit::{Harness, HOST};
use serde_json::{json, Value};

/// Bytes `text` takes inside a JSON string, as serde_json writes it.
fn escaped_len(text: &str) -> usize {
    serde_json::to_string(text).unwrap().len() - 2
}

/// A session with one remote (Ann) in a turn that waits on a question (`/ask`), so injected agent
/// output belongs to turn 1.
fn turn_with_a_remote() -> (Harness, String, roundtable::ids::ConnId) {
    let mut h = Harness::new(EngineConfig { check_invariants: true, ..EngineConfig::default() });
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    let (ann, _) = h.join(&tok, "Ann", &s);
    h.call(ann, "send_message", json!({"session_id": s, "text": "/ask x", "client_msg_id": "q"})).unwrap();
    h.run(100);
    (h, s, ann)
}

fn agent(h: &mut Harness, session: &str, event: AgentEvent) {
    h.engine.sender().send(Inbound::Agent(AgentOutput { session: session.into(), turn_id: 1, event })).unwrap();
}

fn delta_texts(h: &Harness, conn: roundtable::ids::ConnId) -> Vec<String> {
    h.events_named(conn, "agent_delta").iter().map(|d| d["payload"]["text"].as_str().unwrap().to_string()).collect()
}

/// `n` JSON bytes of `unit` repeated (the unit's escaped length must divide `n`).
fn fill(unit: &str, n: usize) -> String {
    assert_eq!(n % escaped_len(unit), 0, "{unit:?}");
    unit.repeat(n / escaped_len(unit))
}

/// Streams `deltas` (one per tick), ends the turn, and checks every delta frame each connection
/// got against the bound; returns what the remote was streamed.
fn stream(deltas: &[String]) -> String {
    let (mut h, s, ann) = turn_with_a_remote();
    for d in deltas {
        agent(&mut h, &s, AgentEvent::Delta(d.clone()));
        h.tick();
    }
    agent(&mut h, &s, AgentEvent::Done);
    h.run(100);
    for conn in [HOST, ann] {
        for text in delta_texts(&h, conn) {
            let n = escaped_len(&text);
            let head: String = text.chars().take(30).collect();
            assert!(n <= MAX_DELTA_JSON_BYTES, "a delta of {n} escaped bytes to {conn}: {head:?}…");
        }
    }
    assert_eq!(delta_texts(&h, HOST).concat(), deltas.concat(), "the host gets the text as it came");
    let reply: Vec<Value> =
        h.events_named(ann, "message").into_iter().filter(|m| m["payload"]["author_id"] == "agent").collect();
    let posted: String = reply.iter().map(|m| m["payload"]["text"].as_str().unwrap()).collect();
    let streamed = delta_texts(&h, ann).concat();
    assert_eq!(streamed, posted, "the remote's stream is the (masked) reply, nothing lost");
    streamed
}

#[test]
fn a_held_back_tail_and_a_full_multibyte_delta_stay_within_the_delta_bound() {
    // `sk-an` could still become a key: the masker holds it back and sends it with the next
    // delta, which is already a full piece.
    for unit in ["é", "日", "🎉", "\"", "\u{1}", "é\"日\n🎉\u{7}\\"] {
        let unit_len = escaped_len(unit);
        let full = fill(unit, MAX_DELTA_JSON_BYTES / unit_len * unit_len);
        let streamed = stream(&["the key starts sk-an".to_string(), full.clone()]);
        assert!(streamed.starts_with("the key starts sk-an"), "{unit:?}");
    }
}

#[test]
fn a_short_secret_masked_into_a_longer_mask_stays_within_the_delta_bound() {
    // A one-character password becomes `[masked]` (7 bytes longer) in a delta that was full.
    for unit in ["é", "日", "🎉", "\u{1}"] {
        let head = "clone https://u:p@git.example.com/x.git ";
        let rest = MAX_DELTA_JSON_BYTES - head.len();
        let unit_len = escaped_len(unit);
        let text = format!("{head}{}{}", fill(unit, rest / unit_len * unit_len), "x".repeat(rest % unit_len));
        assert_eq!(escaped_len(&text), MAX_DELTA_JSON_BYTES);
        let streamed = stream(&[text]);
        assert!(streamed.starts_with("clone https://u:[masked]@git"), "{unit:?}");
    }
}

#[test]
fn many_multibyte_deltas_with_secrets_split_anywhere_stay_within_the_delta_bound() {
    // Deltas of every size around the bound, each ending in the start of a possible secret.
    let mut deltas = Vec::new();
    for (i, unit) in ["é", "日", "🎉", "a\"é", "\u{1}日"].iter().enumerate() {
        let body = unit.repeat(70_000 / unit.len() + i * 7);
        deltas.push(format!("{body} password: \"p\" sk-an"));
        deltas.push(format!("t-x https://u:{}@h {body} eyJ", "é".repeat(i)));
    }
    stream(&deltas);
}
