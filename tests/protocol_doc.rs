//! docs/PROTOCOL.md is the contract client authors code against, so its examples must be real.
//!
//! Every ```json block of the document is checked against our wire types:
//! - a request (`"method"`) must pass `Request::parse`, unless the block is preceded by
//!   `<!-- invalid: CODE -->`, in which case parsing must fail with exactly that error code;
//! - an event (`"event"`) must deserialise into `EventFrame` and serialise back to the same JSON
//!   (so no field is misspelt or silently ignored), and carry `seq` exactly when it is a session event;
//! - a response (`"result"` / `"error"`) must have an `id` and exactly one of the two; an error's
//!   code must be a documented `ErrorCode`; a result must round-trip through the result type of the
//!   request with the same id shown just before it.
//!
//! The document must also name every method, event and error code, and show an example of every
//! method and every event.

use roundtable::protocol::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DOC: &str = include_str!("../docs/PROTOCOL.md");

/// One ```json block: its text, the line it starts on, and the error code if marked invalid.
struct Block {
    line: usize,
    text: String,
    invalid: Option<String>,
}

fn json_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = DOC.lines().enumerate().peekable();
    let mut last_text_line = "";
    while let Some((n, line)) = lines.next() {
        if line.trim_start().starts_with("```") {
            let tag = line.trim_start().trim_start_matches('`').trim();
            let mut body = Vec::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push(l);
            }
            if tag == "json" {
                let invalid = last_text_line
                    .trim()
                    .strip_prefix("<!-- invalid:")
                    .and_then(|r| r.strip_suffix("-->"))
                    .map(|c| c.trim().to_string());
                blocks.push(Block { line: n + 1, text: body.join("\n"), invalid });
            }
            last_text_line = "";
            continue;
        }
        if !line.trim().is_empty() {
            last_text_line = line;
        }
    }
    blocks
}

/// Every event name (the documented list; checked against `Event::name` — an exhaustive match,
/// so a new variant must be named there — through the examples).
fn event_names() -> Vec<&'static str> {
    vec![
        "message",
        "chat",
        "turn_started",
        "turn_ended",
        "participant_joined",
        "participant_left",
        "presence_changed",
        "participant_muted",
        "participant_renamed",
        "vote_opened",
        "vote_progress",
        "vote_resolved",
        "session_updated",
        "history_replaced",
        "agent_delta",
        "snapshot",
        "resync_required",
        "admission",
        "closing",
        "lobby",
        "storage",
        "typing",
    ]
}

/// Connection-level events: never carry `seq`.
const UNSEQUENCED: [&str; 8] =
    ["agent_delta", "snapshot", "resync_required", "admission", "closing", "lobby", "storage", "typing"];

/// Deserialises `v` as `T` and checks it serialises back to the same JSON.
fn round_trips<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &back == v {
        Ok(())
    } else {
        Err(format!("does not round-trip; our types give {back}"))
    }
}

/// Checks a `result` against the result type of `method`.
fn check_result(method: &str, result: &Value) -> Result<(), String> {
    match method {
        "authenticate" => round_trips::<AuthenticateResult>(result),
        "ping" => round_trips::<PingResult>(result),
        "list_workspaces" => round_trips::<ListWorkspacesResult>(result),
        "list_sessions" => round_trips::<ListSessionsResult>(result),
        "join_session" => round_trips::<JoinSessionResult>(result),
        "fetch_history" => round_trips::<FetchHistoryResult>(result),
        "send_message" | "send_chat" => round_trips::<SendMessageResult>(result),
        "mark_read" => round_trips::<MarkReadResult>(result),
        "read_workspace_file" => round_trips::<ReadFileResult>(result),
        "add_workspace" => round_trips::<WorkspaceInfo>(result),
        "create_session" | "fork_session" => round_trips::<SessionInfo>(result),
        "mint_share" | "rotate_share" => round_trips::<MintShareResult>(result),
        "get_settings" | "update_settings" => round_trips::<HostSettings>(result),
        "set_agent_settings" => round_trips::<AgentSettings>(result),
        "list_shares" => round_trips::<ListSharesResult>(result),
        "list_lobby" => round_trips::<ListLobbyResult>(result),
        "fetch_audit" => round_trips::<FetchAuditResult>(result),
        "leave_session" | "typing" | "cancel_turn" | "vote_plan" | "answer_question" | "rename_session"
        | "clear_session" | "kick" | "mute" | "admit" | "refuse" | "revoke_share" => round_trips::<Ack>(result),
        other => Err(format!("no result type known for method {other}")),
    }
}

#[test]
fn every_json_example_in_the_protocol_doc_matches_the_wire_types() {
    let blocks = json_blocks();
    assert!(blocks.len() > 50, "the document should be full of examples; found {}", blocks.len());
    let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut failures = Vec::new();
    // Method of the most recent request example per id, to type the response that follows it.
    let mut last_request: BTreeMap<String, String> = BTreeMap::new();
    for b in &blocks {
        let at = format!("PROTOCOL.md line {}", b.line);
        if let Some(code) = &b.invalid {
            match Request::parse(&b.text) {
                Ok(_) => failures.push(format!("{at}: marked invalid ({code}) but parses")),
                Err(f) if f.error.code.as_str() != code => {
                    failures.push(format!("{at}: marked invalid ({code}) but fails with {}", f.error.code.as_str()))
                }
                Err(_) => {}
            }
            continue;
        }
        let v: Value = match serde_json::from_str(&b.text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{at}: not valid JSON: {e}"));
                continue;
            }
        };
        let Some(obj) = v.as_object() else {
            failures.push(format!("{at}: a frame must be a JSON object"));
            continue;
        };
        if obj.contains_key("method") {
            match Request::parse(&b.text) {
                Ok(r) => {
                    last_request.insert(r.id.to_string(), r.method.name().to_string());
                }
                Err(f) => failures.push(format!("{at}: request does not parse: {}", f.error.message)),
            }
        } else if let Some(name) = obj.get("event").and_then(Value::as_str) {
            if let Err(e) = round_trips::<EventFrame>(&v) {
                failures.push(format!("{at}: event frame: {e}"));
            }
            let seqd = obj.contains_key("seq");
            if UNSEQUENCED.contains(&name) && seqd {
                failures.push(format!("{at}: {name} never carries seq"));
            }
            if !(UNSEQUENCED.contains(&name) || seqd && obj.contains_key("session_id")) {
                failures.push(format!("{at}: session event {name} must carry session_id and seq"));
            }
        } else if obj.contains_key("result") || obj.contains_key("error") {
            let Some(id) = obj.get("id") else {
                failures.push(format!("{at}: response without id"));
                continue;
            };
            if !(id.is_number() || id.is_string() || id.is_null()) {
                failures.push(format!("{at}: response id must be a number, a string or null"));
            }
            let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
            if keys != BTreeSet::from(["id", "result"]) && keys != BTreeSet::from(["id", "error"]) {
                failures.push(format!("{at}: a response has id and exactly one of result/error, found {keys:?}"));
                continue;
            }
            if let Some(err) = obj.get("error") {
                // `retry_after_ms` (a number) comes with `storage_unavailable` only.
                let ok = err.as_object().is_some_and(|e| {
                    let retry = e.get("retry_after_ms");
                    let code = e.get("code").and_then(Value::as_str);
                    let retry_ok = match retry {
                        None => code != Some("storage_unavailable"),
                        Some(r) => r.is_u64() && code == Some("storage_unavailable"),
                    };
                    e.len() == 2 + usize::from(retry.is_some())
                        && retry_ok
                        && e.get("message").is_some_and(Value::is_string)
                        && code.is_some_and(|c| codes.contains(c))
                });
                if !ok {
                    failures.push(format!(
                        "{at}: error must be {{code, message}} (plus retry_after_ms for storage_unavailable) with a documented code: {err}"
                    ));
                }
            } else if let Some(method) = last_request.get(&id.to_string()) {
                if let Err(e) = check_result(method, &obj["result"]) {
                    failures.push(format!("{at}: result of {method}: {e}"));
                }
            } else {
                failures.push(format!("{at}: result without a request example with id {id} before it"));
            }
        } else {
            failures.push(format!("{at}: neither a request, an event nor a response"));
        }
    }
    assert!(failures.is_empty(), "PROTOCOL.md examples out of date:\n{}", failures.join("\n"));
}

#[test]
fn protocol_doc_names_every_method_event_and_error_code() {
    let mut missing = Vec::new();
    for m in Method::NAMES {
        if !DOC.contains(&format!("`{m}`")) {
            missing.push(format!("method {m}"));
        }
    }
    for e in event_names() {
        if !DOC.contains(&format!("`{e}`")) {
            missing.push(format!("event {e}"));
        }
    }
    for c in ErrorCode::ALL {
        if !DOC.contains(&format!("`{}`", c.as_str())) {
            missing.push(format!("error code {}", c.as_str()));
        }
    }
    assert!(missing.is_empty(), "PROTOCOL.md does not mention: {missing:?}");
}

#[test]
fn protocol_doc_shows_an_example_of_every_method_and_event() {
    let mut methods = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut named: BTreeSet<&'static str> = BTreeSet::new();
    for b in json_blocks().iter().filter(|b| b.invalid.is_none()) {
        let Ok(v) = serde_json::from_str::<Value>(&b.text) else { continue };
        if let Ok(r) = Request::parse(&b.text) {
            methods.insert(r.method.name().to_string());
        }
        if let Some(e) = v.get("event").and_then(Value::as_str) {
            events.insert(e.to_string());
            if let Ok(frame) = serde_json::from_value::<EventFrame>(v.clone()) {
                assert_eq!(frame.body.name(), e, "the example's tag and the variant's name agree");
                named.insert(frame.body.name());
            }
        }
    }
    let listed: BTreeSet<&str> = event_names().into_iter().collect();
    assert_eq!(named, listed, "every event variant has an example, and event_names lists exactly those");
    let no_request: Vec<&str> = Method::NAMES.iter().copied().filter(|m| !methods.contains(*m)).collect();
    let no_event: Vec<&str> = event_names().into_iter().filter(|e| !events.contains(*e)).collect();
    assert!(no_request.is_empty(), "methods without a request example: {no_request:?}");
    assert!(no_event.is_empty(), "events without an example frame: {no_event:?}");
}
