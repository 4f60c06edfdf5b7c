//! The `codex` backend against a fake `codex app-server` (`crates/testbins/examples/fake_codex.rs`)
//! replaying the scripts below (the JSON-RPC lines of the real 0.171.0, see
//! docs/AGENTS.md). Each test drives [`ExternalAgents`] directly and checks the `AgentOutput`s
//! it reports and what the fake received on stdin.

use crossbeam_channel::Receiver;
use roundtable::agent::external::{ExternalAgents, ExternalConfig};
use roundtable::agent::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, Resolution};
use roundtable::engine::Inbound;
use roundtable::ids::SessionId;
use roundtable::persist::AgentSpec;
use roundtable::protocol::Question;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const THREAD: &str = "019a0c1e-7d2f-7c3b-9a1e-2b3c4d5e6f70";

fn fake() -> String {
    roundtable::scenario::agents::find_bin("fake_codex").unwrap().display().to_string()
}

/// The greeting every fresh process gets, up to the first turn's `turn/start` answer.
fn greeting(thread_method: &str) -> String {
    [
        json!({"fake": "handshake"}),
        json!({"fake": "answer", "method": thread_method, "result": {"thread": {"id": THREAD}, "model": "gpt-5.5"}}),
        json!({"fake": "answer", "method": "turn/start", "result": {"turn": {"id": "turn-1", "status": "inProgress"}}}),
        json!({"method": "turn/started", "params": {"threadId": THREAD, "turn": {"id": "turn-1"}}}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect()
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|l| format!("{l}\n")).collect()
}

fn completed(turn: &str, status: &str) -> Value {
    json!({"method": "turn/completed", "params": {"threadId": THREAD, "turn": {"id": turn, "status": status, "error": null}}})
}

struct Harness {
    agents: ExternalAgents,
    rx: Receiver<Inbound>,
    dir: tempfile::TempDir,
    log: PathBuf,
    conversations: Vec<Option<String>>,
}

fn harness() -> Harness {
    let (tx, rx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fake-codex.log");
    let config = ExternalConfig {
        exit_grace: Duration::from_secs(2),
        cancel_grace: Duration::from_secs(5),
        ..ExternalConfig::default()
    };
    Harness { agents: ExternalAgents::new(tx, config), rx, dir, log, conversations: Vec::new() }
}

impl Harness {
    fn spec(&self, script: &str) -> AgentSpec {
        let path = self.dir.path().join("script.jsonl");
        std::fs::write(&path, script).unwrap();
        AgentSpec {
            kind: "codex".into(),
            command: Some(fake()),
            args: vec![
                "--fake-script".into(),
                path.display().to_string(),
                "--fake-log".into(),
                self.log.display().to_string(),
            ],
            plan_first: Some(false),
        }
    }

    fn start_spec(&mut self, turn_id: u64, spec: AgentSpec, conversation: Option<&str>) {
        self.agents.send(AgentCommand::StartTurn {
            session: SessionId::nth(1),
            turn_id,
            workspace_dir: self.dir.path().display().to_string(),
            spec,
            prompt: "Please help".into(),
            author_name: "Ann".into(),
            conversation: conversation.map(str::to_string),
            settings: Default::default(),
        });
    }

    fn start(&mut self, script: &str) {
        let spec = self.spec(script);
        self.start_spec(1, spec, None);
    }

    fn resolve(&mut self, request_id: &str, resolution: Resolution) {
        self.agents.send(AgentCommand::Resolve {
            session: SessionId::nth(1),
            turn_id: 1,
            request_id: request_id.into(),
            resolution,
        });
    }

    fn cancel(&mut self) {
        self.agents.send(AgentCommand::Cancel { session: SessionId::nth(1), turn_id: 1 });
    }

    fn next_within(&mut self, wait: Duration) -> Option<AgentOutput> {
        let deadline = Instant::now() + wait;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Inbound::Agent(AgentOutput { event: AgentEvent::Conversation(c), .. })) => {
                    self.conversations.push(c)
                }
                Ok(Inbound::Agent(out)) => return Some(out),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Events up to and including the next request, `Done` or `Failed`.
    fn until_pause(&mut self) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        loop {
            let out = self.next_within(WAIT).unwrap_or_else(|| panic!("no agent output within {WAIT:?}: {events:?}"));
            let pause = !matches!(out.event, AgentEvent::Delta(_));
            events.push(out.event);
            if pause {
                return events;
            }
        }
    }

    fn stdin(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get("stdin").cloned())
            .collect()
    }

    fn wait_for_stdin(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self.stdin().into_iter().find(|m| check(m)) {
                return found;
            }
            assert!(Instant::now() < deadline, "the fake never received {what}: {:#?}", self.stdin());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn request(&self, method: &str) -> Value {
        self.wait_for_stdin(method, |m| m["method"] == method)
    }

    fn reply_to(&self, id: u64) -> Value {
        self.wait_for_stdin(&format!("the answer to {id}"), |m| m.get("method").is_none() && m["id"] == id)
    }
}

fn text(events: &[AgentEvent]) -> String {
    events.iter().filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None }).collect()
}

fn failure(events: &[AgentEvent]) -> String {
    match events.last() {
        Some(AgentEvent::Failed(reason)) => reason.clone(),
        other => panic!("expected the turn to fail, it ended with {other:?}"),
    }
}

#[test]
fn a_turn_streams_deltas_stores_the_thread_and_the_next_turn_reuses_the_process() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/agentMessage/delta", "params": {"threadId": THREAD, "turnId": "turn-1", "itemId": "m1", "delta": "Hello"}}),
            json!({"method": "item/agentMessage/delta", "params": {"threadId": THREAD, "turnId": "turn-1", "itemId": "m1", "delta": " from Codex."}}),
            json!({"method": "item/completed", "params": {"item": {"type": "agentMessage", "id": "m1", "text": "Hello from Codex."}}}),
            completed("turn-1", "completed"),
            json!({"fake": "answer", "method": "turn/start", "result": {"turn": {"id": "turn-2"}}}),
            json!({"method": "item/completed", "params": {"item": {"type": "agentMessage", "id": "m2", "text": "Again."}}}),
            completed("turn-2", "completed"),
        ]);
    h.start(&script);
    let events = h.until_pause();
    assert_eq!(
        events,
        vec![AgentEvent::Delta("Hello".into()), AgentEvent::Delta(" from Codex.".into()), AgentEvent::Done]
    );
    assert_eq!(h.conversations, vec![Some(THREAD.to_string())], "the thread id is stored with the session");
    let init = h.request("initialize");
    assert_eq!(init["params"]["capabilities"]["experimentalApi"], true);
    let start = h.request("thread/start");
    let cwd = PathBuf::from(start["params"]["cwd"].as_str().unwrap());
    assert_eq!(cwd, h.dir.path());
    assert_eq!(start["params"]["approvalPolicy"], "untrusted");
    assert_eq!(h.request("turn/start")["params"]["input"], json!([{"type": "text", "text": "Please help"}]));

    let spec = h.spec(&script); // the same spec: the same process
    h.start_spec(2, spec, Some(THREAD));
    let out = h.next_within(WAIT).unwrap();
    assert_eq!((out.turn_id, out.event), (2, AgentEvent::Delta("Again.".into())));
    assert_eq!(h.next_within(WAIT).unwrap().event, AgentEvent::Done);
    let inits = h.stdin().iter().filter(|m| m["method"] == "initialize").count();
    assert_eq!(inits, 1, "one process, greeted once");
}

#[test]
fn a_stored_thread_is_resumed_by_a_new_process() {
    let mut h = harness();
    let script = greeting("thread/resume") + &lines(&[completed("turn-1", "completed")]);
    let spec = h.spec(&script);
    h.start_spec(1, spec, Some(THREAD));
    assert_eq!(h.until_pause(), vec![AgentEvent::Done]);
    assert_eq!(h.request("thread/resume")["params"]["threadId"], THREAD);
    assert!(h.conversations.is_empty(), "the same thread: nothing new to store");
}

#[test]
fn command_approvals_are_tool_votes_approved_and_denied_with_the_reasons() {
    let mut h = harness();
    let ask = |id: u64, item: &str, command: &str| {
        json!({"method": "item/commandExecution/requestApproval", "id": id, "params": {"threadId": THREAD,
            "turnId": "turn-1", "itemId": item, "command": command, "cwd": "/ws", "reason": null}})
    };
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/started", "params": {"item": {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc 'touch a.txt'"}}}),
            ask(0, "c1", "/bin/bash -lc 'touch a.txt'"),
            json!({"fake": "await_reply", "id": 0}),
            json!({"method": "item/commandExecution/outputDelta", "params": {"itemId": "c1", "delta": "done\n"}}),
            ask(1, "c2", "/bin/bash -lc 'rm -rf build'"),
            json!({"fake": "answer", "method": "turn/steer", "result": {"turnId": "turn-1"}}),
            json!({"fake": "await_reply", "id": 1}),
            completed("turn-1", "completed"),
        ]);
    h.start(&script);
    let events = h.until_pause();
    assert_eq!(text(&events), "$ /bin/bash -lc 'touch a.txt'\n");
    let Some(AgentEvent::ToolRequest { request_id, tool, input }) = events.last() else { panic!("{events:?}") };
    assert_eq!(tool, "shell");
    let input: Value = serde_json::from_str(input).unwrap();
    assert_eq!(input, json!({"command": "/bin/bash -lc 'touch a.txt'", "cwd": "/ws"}));
    h.resolve(&request_id.clone(), Resolution::Approved);
    let events = h.until_pause();
    assert_eq!(text(&events), "done\n");
    let Some(AgentEvent::ToolRequest { request_id, .. }) = events.last() else { panic!("{events:?}") };
    h.resolve(&request_id.clone(), Resolution::Denied("not the build dir".into()));
    assert_eq!(h.until_pause(), vec![AgentEvent::Done]);
    assert_eq!(h.reply_to(0)["result"], json!({"decision": "accept"}));
    assert_eq!(h.reply_to(1)["result"], json!({"decision": "decline"}));
    let steer = h.request("turn/steer");
    assert_eq!(steer["params"]["expectedTurnId"], "turn-1");
    assert!(steer["params"]["input"][0]["text"].as_str().unwrap().contains("not the build dir"), "{steer}");
}

#[test]
fn a_question_is_answered_by_question_id() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/tool/requestUserInput", "id": 0, "params": {"threadId": THREAD, "turnId": "turn-1",
                "itemId": "q1", "questions": [
                    {"id": "color", "header": "Color", "question": "Which color?", "isOther": true, "isSecret": false,
                     "options": [{"label": "Red", "description": ""}, {"label": "Blue", "description": ""}]},
                    {"id": "size", "header": "Size", "question": "Which size?", "options": null}]}}),
            json!({"fake": "await_reply", "id": 0}),
            completed("turn-1", "completed"),
        ]);
    h.start(&script);
    let events = h.until_pause();
    let Some(AgentEvent::Question { request_id, questions }) = events.last() else { panic!("{events:?}") };
    assert_eq!(
        questions,
        &vec![
            Question {
                question: "Which color?".into(),
                options: vec!["Red".into(), "Blue".into()],
                multi_select: false
            },
            Question { question: "Which size?".into(), options: vec![], multi_select: false },
        ]
    );
    h.resolve(&request_id.clone(), Resolution::Answered(vec!["Blue".into(), "large".into()]));
    assert_eq!(h.until_pause(), vec![AgentEvent::Done]);
    assert_eq!(
        h.reply_to(0)["result"],
        json!({"answers": {"color": {"answers": ["Blue"]}, "size": {"answers": ["large"]}}})
    );
}

#[test]
fn a_plan_is_voted_on_and_approval_implements_it_in_default_mode() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/completed", "params": {"item": {"type": "plan", "id": "p1", "text": "1. add a.txt\n2. test"}}}),
            completed("turn-1", "completed"),
            json!({"fake": "answer", "method": "turn/start", "result": {"turn": {"id": "turn-2"}}}),
            json!({"method": "item/completed", "params": {"item": {"type": "agentMessage", "id": "m2", "text": "Done."}}}),
            completed("turn-2", "completed"),
        ]);
    let mut spec = h.spec(&script);
    spec.plan_first = Some(true); // workspace add --agent codex --plan-first (see docs/AGENTS.md)
    h.start_spec(1, spec, None);
    let events = h.until_pause();
    let Some(AgentEvent::Plan { request_id, plan, on_approval }) = events.last() else { panic!("{events:?}") };
    assert_eq!(plan, "1. add a.txt\n2. test");
    let card = on_approval.clone().unwrap();
    assert!(card.contains("inside the workspace") && card.contains("Commands"), "{card}");
    h.resolve(&request_id.clone(), Resolution::Approved);
    assert_eq!(h.until_pause(), vec![AgentEvent::Delta("Done.".into()), AgentEvent::Done]);
    let starts: Vec<Value> = h.stdin().into_iter().filter(|m| m["method"] == "turn/start").collect();
    assert_eq!(starts[0]["params"]["collaborationMode"]["mode"], "plan");
    assert_eq!(starts[0]["params"]["collaborationMode"]["settings"]["model"], "gpt-5.5");
    assert_eq!(starts[1]["params"]["collaborationMode"]["mode"], "default");
    assert_eq!(starts[1]["params"]["input"][0]["text"], "Implement the plan.");
}

#[test]
fn cancel_mid_command_interrupts_the_turn_and_nothing_more_is_reported() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/started", "params": {"item": {"type": "commandExecution", "id": "c1", "command": "sleep 100"}}}),
            json!({"fake": "answer", "method": "turn/interrupt", "result": {}}),
            json!({"method": "item/commandExecution/outputDelta", "params": {"itemId": "c1", "delta": "late\n"}}),
            completed("turn-1", "interrupted"),
        ]);
    h.start(&script);
    let out = h.next_within(WAIT).unwrap();
    assert_eq!(out.event, AgentEvent::Delta("$ sleep 100\n".into()));
    h.cancel();
    let interrupt = h.request("turn/interrupt");
    assert_eq!(interrupt["params"], json!({"threadId": THREAD, "turnId": "turn-1"}));
    assert_eq!(h.next_within(Duration::from_millis(300)), None, "the engine already ended the turn");
}

#[test]
fn a_crash_mid_turn_fails_the_turn_once() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "item/agentMessage/delta", "params": {"itemId": "m1", "delta": "Work"}}),
            json!({"fake": "exit", "code": 101, "stderr": "thread 'main' panicked"}),
        ]);
    h.start(&script);
    let events = h.until_pause();
    let reason = failure(&events);
    assert!(reason.starts_with("codex exited during the turn") && reason.contains("panicked"), "{reason}");
    assert_eq!(h.next_within(Duration::from_millis(300)), None, "one end only");
}

#[test]
fn a_missing_cli_another_version_or_no_login_fail_with_what_to_do() {
    let mut h = harness();
    let mut spec = h.spec("");
    spec.command = Some(h.dir.path().join("no-codex-here").display().to_string());
    h.start_spec(1, spec, None);
    let reason = failure(&h.until_pause());
    assert!(reason.starts_with("codex CLI not found at") && reason.contains("@openai/codex@0.171.0"), "{reason}");

    let mut h = harness();
    h.start(&lines(&[json!({"fake": "handshake", "version": "0.160.0"})]));
    let reason = failure(&h.until_pause());
    assert!(reason.contains("codex CLI 0.160.0 is not supported") && reason.contains("0.171.0"), "{reason}");

    let mut h = harness();
    h.start(&lines(&[json!({"fake": "handshake", "account": {"account": null, "requiresOpenaiAuth": true}})]));
    let reason = failure(&h.until_pause());
    assert!(reason.contains("not logged in") && reason.contains("codex login"), "{reason}");
}

#[test]
fn an_api_error_fails_the_turn_with_codexs_message() {
    let mut h = harness();
    let script = greeting("thread/start")
        + &lines(&[
            json!({"method": "error", "params": {"error": {"message": "unexpected status 401 Unauthorized: bad key",
                "codexErrorInfo": {"httpConnectionFailed": {"httpStatusCode": 401}}}, "willRetry": false}}),
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "failed",
                "error": {"message": "unexpected status 401 Unauthorized: bad key"}}}}),
        ]);
    h.start(&script);
    let reason = failure(&h.until_pause());
    assert!(reason.starts_with("codex: unexpected status 401") && reason.contains("codex login"), "{reason}");
}

#[test]
fn a_stored_thread_codex_no_longer_has_starts_a_new_one_and_says_so() {
    let mut h = harness();
    let script = lines(&[
        json!({"fake": "handshake"}),
        json!({"fake": "answer", "method": "thread/resume", "error": {"code": -32600, "message": "invalid thread id: gone"}}),
        json!({"fake": "answer", "method": "account/read", "result": {"account": {"type": "apiKey"}}}),
        json!({"fake": "answer", "method": "thread/start", "result": {"thread": {"id": THREAD}, "model": "gpt-5.5"}}),
        json!({"fake": "answer", "method": "turn/start", "result": {"turn": {"id": "turn-1"}}}),
        completed("turn-1", "completed"),
    ]);
    let spec = h.spec(&script);
    h.start_spec(1, spec, Some("gone"));
    let events = h.until_pause();
    assert!(text(&events).contains("could not resume") && text(&events).contains("new conversation"), "{events:?}");
    assert_eq!(events.last(), Some(&AgentEvent::Done));
    assert_eq!(h.conversations, vec![None, Some(THREAD.to_string())], "forgotten, then the new thread stored");
    assert_eq!(h.request("turn/start")["params"]["input"][0]["text"], "Please help", "the prompt is not lost");
}
