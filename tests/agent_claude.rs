//! The `claude` backend against a fake Claude Code CLI (`crates/testbins/examples/fake_claude.rs`) replaying the
//! recorded stream-json transcripts in `tests/fixtures/claude/`. Each test drives
//! [`ExternalAgents`] directly and checks the `AgentOutput`s it reports and what the fake CLI
//! received on stdin.

use crossbeam_channel::Receiver;
use roundtable::agent::clock::{Clock, ManualClock};
use roundtable::agent::external::{ExternalAgents, ExternalConfig};
use roundtable::agent::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, Resolution};
use roundtable::engine::Inbound;
use roundtable::ids::SessionId;
use roundtable::persist::AgentSpec;
use roundtable::protocol::Question;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fake Claude Code CLI (`crates/testbins`), built beside the test binaries.
fn fake() -> String {
    roundtable::scenario::agents::find_bin("fake_claude").unwrap().display().to_string()
}
const SESSION_ID: &str = "5d0f0c9e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    agents: ExternalAgents,
    rx: Receiver<Inbound>,
    dir: tempfile::TempDir,
    log: PathBuf,
    /// The conversation the engine would have stored from the agent's `Conversation` events
    /// (sent with every turn, as the engine does); those events are not returned by `next`.
    conversation: std::cell::RefCell<Option<String>>,
    /// Every `Conversation` event seen, in order.
    conversations: std::cell::RefCell<Vec<Option<String>>>,
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/claude/{name}.jsonl", env!("CARGO_MANIFEST_DIR"))
}

fn harness(config: ExternalConfig) -> Harness {
    let (tx, rx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fake-claude.log");
    Harness {
        agents: ExternalAgents::new(tx, config),
        rx,
        dir,
        log,
        conversation: None.into(),
        conversations: Vec::new().into(),
    }
}

fn session() -> SessionId {
    SessionId::nth(1)
}

impl Harness {
    fn spec(&self, script: &str) -> AgentSpec {
        AgentSpec {
            kind: "claude".into(),
            command: Some(fake()),
            args: vec!["--fake-script".into(), fixture(script), "--fake-log".into(), self.log.display().to_string()],
            plan_first: None,
        }
    }

    fn start_with(&mut self, turn_id: u64, spec: AgentSpec, prompt: &str) {
        self.agents.send(AgentCommand::StartTurn {
            session: session(),
            turn_id,
            workspace_dir: self.dir.path().display().to_string(),
            spec,
            prompt: prompt.into(),
            author_name: "Ann".into(),
            conversation: self.conversation.borrow().clone(),
            settings: Default::default(),
        });
    }

    fn start(&mut self, turn_id: u64, script: &str) {
        let spec = self.spec(script);
        self.start_with(turn_id, spec, "Please help");
    }

    fn resolve(&mut self, turn_id: u64, request_id: &str, resolution: Resolution) {
        self.agents.send(AgentCommand::Resolve {
            session: session(),
            turn_id,
            request_id: request_id.into(),
            resolution,
        });
    }

    fn next(&self) -> AgentOutput {
        self.next_within(WAIT).unwrap_or_else(|| panic!("no agent output within {WAIT:?}"))
    }

    /// The next output (not a `Conversation` event), if one comes within `wait`.
    fn next_within(&self, wait: Duration) -> Option<AgentOutput> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Inbound::Agent(AgentOutput { event: AgentEvent::Conversation(c), .. })) => {
                    self.conversation.replace(c.clone());
                    self.conversations.borrow_mut().push(c);
                }
                Ok(Inbound::Agent(out)) => return Some(out),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Moves the agents' clock on by `step` until the next output arrives. (The watchdog counts
    /// from the CLI's last line, and a line the worker reads after a step moves its deadline on,
    /// so the clock is moved again until it fires, however slowly the lines arrive.)
    fn advance_until_output(&self, clock: &ManualClock, step: Duration) -> AgentOutput {
        let deadline = Instant::now() + WAIT;
        loop {
            clock.advance(step);
            if let Some(out) = self.next_within(Duration::from_millis(20)) {
                return out;
            }
            assert!(Instant::now() < deadline, "no agent output within {WAIT:?}");
        }
    }

    /// Events of `turn_id` up to and including the next request, `Done` or `Failed`.
    fn until_pause(&self, turn_id: u64) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        loop {
            let out = self.next();
            assert_eq!(out.session, session());
            assert_eq!(out.turn_id, turn_id, "output for the wrong turn: {out:?}");
            let pause = !matches!(out.event, AgentEvent::Delta(_));
            events.push(out.event);
            if pause {
                return events;
            }
        }
    }

    fn log_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Everything the fake CLI read on stdin, over all runs.
    fn stdin(&self) -> Vec<Value> {
        self.log_entries().into_iter().filter_map(|e| e.get("stdin").cloned()).collect()
    }

    /// argv of each run.
    fn runs(&self) -> Vec<Vec<String>> {
        self.log_entries()
            .into_iter()
            .filter_map(|e| e.get("argv").and_then(|a| serde_json::from_value(a.clone()).ok()))
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.log_entries().into_iter().filter_map(|e| e["pid"].as_u64()).map(|p| p as u32).collect()
    }

    /// Waits until `check` holds for the log (the fake writes it asynchronously).
    fn wait_for_log(&self, what: &str, check: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check(&self.stdin()) {
            assert!(Instant::now() < deadline, "the fake CLI never received {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn control_response_for(&self, request_id: &str) -> Value {
        self.stdin()
            .into_iter()
            .find(|m| m["type"] == "control_response" && m["response"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no control_response for {request_id} in {:#?}", self.stdin()))
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

fn fast() -> ExternalConfig {
    ExternalConfig {
        exit_grace: Duration::from_secs(2),
        cancel_grace: Duration::from_secs(2),
        ..ExternalConfig::default()
    }
}

#[cfg(target_os = "linux")]
fn wait_dead(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(not(target_os = "linux"))]
fn wait_dead(_pid: u32) {}

#[test]
fn a_normal_turn_streams_partial_deltas_then_done() {
    let mut h = harness(fast());
    h.start(1, "normal");
    let events = h.until_pause(1);
    assert_eq!(
        events,
        vec![
            AgentEvent::Delta("Hello".into()),
            AgentEvent::Delta(" from".into()),
            AgentEvent::Delta(" Claude.".into()),
            AgentEvent::Done
        ]
    );
    let stdin = h.stdin();
    assert_eq!(stdin[0]["type"], "control_request");
    assert_eq!(stdin[0]["request"]["subtype"], "initialize");
    assert_eq!(
        stdin[1],
        json!({"type":"user","message":{"role":"user","content":"Please help"},"parent_tool_use_id":null,"session_id":"default"})
    );
    let argv = &h.runs()[0];
    for flag in
        ["--output-format", "--verbose", "--input-format", "--permission-prompt-tool", "--include-partial-messages"]
    {
        assert!(argv.contains(&flag.to_string()), "{flag} missing from {argv:?}");
    }
    assert!(!argv.iter().any(|a| a.starts_with("--resume")), "first turn must not resume: {argv:?}");
}

#[test]
fn the_workspace_directory_is_the_working_directory() {
    let mut h = harness(fast());
    h.start(1, "normal");
    h.until_pause(1);
    let cwd = h.log_entries()[0]["cwd"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&cwd).canonicalize().unwrap(), h.dir.path().canonicalize().unwrap());
}

#[test]
fn the_next_turn_resumes_the_cli_session_from_init() {
    let mut h = harness(fast());
    h.start(1, "normal");
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
    h.start(2, "normal");
    assert_eq!(h.until_pause(2).last(), Some(&AgentEvent::Done));
    let runs = h.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs[1].contains(&format!("--resume={SESSION_ID}")), "{:?}", runs[1]);
    assert_eq!(*h.conversations.borrow(), [Some(SESSION_ID.to_string())], "reported once, for the engine to store");
}

/// Issue 21: the conversation to resume comes from the engine (stored with the session), not
/// from the backend's memory — a fresh runtime (a host restart) resumes it, and a turn without
/// one (the session was cleared) starts a new conversation.
#[test]
fn the_engines_stored_conversation_decides_what_a_turn_resumes() {
    let mut h = harness(fast());
    h.conversation.replace(Some("stored-before-the-restart".into()));
    h.start(1, "normal");
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
    h.conversation.replace(None);
    h.start(2, "normal");
    assert_eq!(h.until_pause(2).last(), Some(&AgentEvent::Done));
    let runs = h.runs();
    assert!(runs[0].contains(&"--resume=stored-before-the-restart".to_string()), "{:?}", runs[0]);
    assert!(!runs[1].iter().any(|a| a.starts_with("--resume")), "cleared: a new conversation: {:?}", runs[1]);
}

#[test]
fn complete_messages_are_used_when_no_partial_deltas_arrive() {
    let mut h = harness(fast());
    h.start(1, "assistant_only");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "Let me look at the files.\n\nThere are two Rust files.");
    assert_eq!(events.last(), Some(&AgentEvent::Done));
}

#[test]
fn an_approved_plan_is_allowed_with_the_original_input_and_returns_the_cli_to_default_mode() {
    let mut h = harness(fast());
    h.start(1, "plan");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "I'll make a plan.");
    let request_id = "8a6f1c2e-5b3d-4e7f-9a0b-1c2d3e4f5a6b";
    assert_eq!(
        events.last(),
        Some(&AgentEvent::Plan {
            request_id: request_id.into(),
            plan: "1. Read src/lib.rs\n2. Add the --verbose flag\n3. Run cargo test".into(),
            on_approval: Some(roundtable::agent::claude::AfterPlan::EditWorkspace.on_approval()),
        })
    );
    h.resolve(1, request_id, Resolution::Approved);
    let rest = h.until_pause(1);
    assert_eq!(rest, vec![AgentEvent::Delta("\n\nDone.".into()), AgentEvent::Done]);
    let answer = h.control_response_for(request_id);
    assert_eq!(
        answer["response"],
        json!({"subtype":"success","request_id":request_id,"response":{"behavior":"allow","updatedInput":{
            "plan":"1. Read src/lib.rs\n2. Add the --verbose flag\n3. Run cargo test"},
            "updatedPermissions":[{"type":"setMode","mode":"default","destination":"session"}]}})
    );
}

/// Recorded from the real CLI 2.1.332 (`tests/real_claude.rs` drives it live): the model wrote
/// its plan to the plans folder and called ExitPlanMode with `{}`; the CLI's request carries the
/// file's text as `plan` with `planFilePath`, plus `display_name` and
/// `requires_user_interaction`, and no `permission_suggestions`.
#[test]
fn a_2_1_332_plan_request_opens_a_vote_on_the_plan_files_text() {
    let mut h = harness(fast());
    h.start(1, "plan_2_1_332");
    let events = h.until_pause(1);
    let Some(AgentEvent::Plan { request_id, plan, on_approval }) = events.last() else { panic!("no plan: {events:?}") };
    assert_eq!(plan, "# Plan\n1. Add NOTES.md with a greeting\n2. Done");
    assert!(on_approval.as_deref().is_some_and(|n| n.contains("inside the workspace")));
    let request_id = request_id.clone();
    h.resolve(1, &request_id, Resolution::Denied("Bob: too risky".into()));
    let rest = h.until_pause(1);
    assert_eq!(rest.last(), Some(&AgentEvent::Done), "{rest:?}");
    let answer = h.control_response_for(&request_id);
    assert_eq!(answer["response"]["response"], json!({"behavior":"deny","message":"Bob: too risky","interrupt":false}));
}

/// Recorded from the real CLI 2.1.332: ExitPlanMode before any plan was written; the request's
/// input is `{}`. Nobody is asked to vote on nothing: it is denied at once, telling the model.
#[test]
fn a_2_1_332_plan_request_without_any_plan_is_denied_without_a_vote() {
    let mut h = harness(fast());
    h.start(1, "plan_2_1_332_no_plan");
    let events = h.until_pause(1);
    assert!(!events.iter().any(|e| matches!(e, AgentEvent::Plan { .. })), "no vote: {events:?}");
    assert_eq!(events.last(), Some(&AgentEvent::Done), "{events:?}");
    let answer = h.control_response_for("2b3aac72-650c-4fc8-9c33-5c5eb7a0ceee");
    assert_eq!(answer["response"]["response"]["behavior"], "deny");
    let message = answer["response"]["response"]["message"].as_str().unwrap();
    assert!(message.contains("write your plan"), "{message}");
}

#[test]
fn a_denied_plan_is_denied_with_the_voters_reason() {
    let mut h = harness(fast());
    h.start(1, "plan");
    let events = h.until_pause(1);
    let Some(AgentEvent::Plan { request_id, .. }) = events.last() else { panic!("no plan: {events:?}") };
    h.resolve(1, request_id, Resolution::Denied("Bob: too risky".into()));
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
    let answer = h.control_response_for(request_id);
    assert_eq!(answer["response"]["response"], json!({"behavior":"deny","message":"Bob: too risky","interrupt":false}));
}

#[test]
fn answered_questions_are_sent_back_as_updated_input_with_answers() {
    let mut h = harness(fast());
    h.start(1, "question");
    let events = h.until_pause(1);
    let request_id = "c41d2b7a-0e9f-4a8b-b6c5-d4e3f2a1b0c9";
    assert_eq!(
        events,
        vec![AgentEvent::Question {
            request_id: request_id.into(),
            questions: vec![
                Question {
                    question: "Which database should I use?".into(),
                    options: vec!["SQLite".into(), "Postgres".into()],
                    multi_select: false
                },
                Question {
                    question: "Which features do you want?".into(),
                    options: vec!["Auth".into(), "Search".into(), "Export".into()],
                    multi_select: true
                },
            ],
        }]
    );
    h.resolve(1, request_id, Resolution::Answered(vec!["SQLite".into(), "Auth, Search".into()]));
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
    let decision = &h.control_response_for(request_id)["response"]["response"];
    assert_eq!(decision["behavior"], "allow");
    let updated = &decision["updatedInput"];
    assert_eq!(
        updated["answers"],
        json!({"Which database should I use?": "SQLite", "Which features do you want?": "Auth, Search"})
    );
    assert_eq!(updated["questions"].as_array().unwrap().len(), 2);
    assert_eq!(updated["questions"][1]["options"][2]["label"], "Export");
}

#[test]
fn other_tools_ask_permission_with_their_input_as_compact_json() {
    let mut h = harness(fast());
    h.start(1, "tool");
    let events = h.until_pause(1);
    let request_id = "f0e1d2c3-b4a5-4968-8776-655443322110";
    assert_eq!(
        events,
        vec![AgentEvent::ToolRequest {
            request_id: request_id.into(),
            tool: "Bash".into(),
            input: r#"{"command":"cargo test","description":"Run the test suite"}"#.into(),
        }]
    );
    h.resolve(1, request_id, Resolution::Approved);
    assert_eq!(h.until_pause(1), vec![AgentEvent::Delta("All 12 tests pass.".into()), AgentEvent::Done]);
    assert_eq!(h.control_response_for(request_id)["response"]["response"]["behavior"], "allow");
}

#[test]
fn the_allow_list_is_passed_as_allowed_tools() {
    let mut h = harness(ExternalConfig { allowed_tools: vec!["Read".into(), "Bash(git status:*)".into()], ..fast() });
    h.start(1, "normal");
    h.until_pause(1);
    let argv = &h.runs()[0];
    let at = argv.iter().position(|a| a == "--allowedTools").expect("--allowedTools missing");
    assert_eq!(argv[at + 1], "Read,Bash(git status:*)");
}

#[test]
fn noise_and_malformed_lines_are_skipped_and_the_turn_completes() {
    let mut h = harness(fast());
    h.start(1, "malformed");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "Still here.");
    assert_eq!(events.last(), Some(&AgentEvent::Done));
}

#[test]
fn lines_split_across_reads_are_reassembled() {
    let mut h = harness(fast());
    h.start(1, "split_lines");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "Split across several reads.");
    assert_eq!(events.last(), Some(&AgentEvent::Done));
}

#[test]
fn very_large_output_arrives_complete() {
    let mut h = harness(fast());
    h.start(1, "large_output");
    let events = h.until_pause(1);
    assert_eq!(events.last(), Some(&AgentEvent::Done));
    let expected: String =
        (0..2 * 1024 * 1024).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[i % 37] as char).collect();
    let got = text(&events);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the streamed text differs from what the CLI wrote");
}

#[test]
fn an_over_long_line_fails_the_turn() {
    let mut h = harness(ExternalConfig { max_line_bytes: 64 * 1024, ..fast() });
    h.start(1, "long_line");
    let reason = failure(&h.until_pause(1));
    assert!(reason.contains("longer than 65536 bytes"), "{reason}");
    wait_dead(h.pids()[0]);
}

#[test]
fn a_hung_cli_is_killed_by_the_watchdog() {
    let clock = ManualClock::new();
    let hang_timeout = Duration::from_millis(1000);
    let mut h = harness(ExternalConfig { hang_timeout, clock: Clock::Manual(clock.clone()), ..fast() });
    h.start(1, "hang");
    assert_eq!(h.next().event, AgentEvent::Delta("Thinking".into()));
    // Then the CLI says nothing more: once the watchdog's time has passed, it is stopped.
    let reason = failure(&[h.advance_until_output(&clock, hang_timeout).event]);
    assert!(reason.contains("hang watchdog"), "{reason}");
    wait_dead(h.pids()[0]);
}

#[test]
fn the_watchdog_does_not_fire_while_a_vote_is_open() {
    let clock = ManualClock::new();
    let config =
        ExternalConfig { hang_timeout: Duration::from_millis(800), clock: Clock::Manual(clock.clone()), ..fast() };
    let mut h = harness(config);
    h.start(1, "plan");
    let events = h.until_pause(1);
    let Some(AgentEvent::Plan { request_id, .. }) = events.last() else { panic!("no plan: {events:?}") };
    // Voting takes longer than the watchdog allows for silence. (`advance` returns once a
    // watchdog that came due was taken by the worker, so it would act before the resolution.)
    clock.advance(Duration::from_millis(1200));
    assert!(h.rx.try_recv().is_err(), "the turn ended while waiting for the vote");
    h.resolve(1, request_id, Resolution::Approved);
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
}

#[test]
fn a_crash_mid_turn_fails_with_the_exit_status() {
    let mut h = harness(fast());
    h.start(1, "crash");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "Starting");
    let reason = failure(&events);
    assert!(reason.contains("exited during the turn"), "{reason}");
    assert!(reason.contains("exit status: 3"), "{reason}");
    assert!(reason.contains("something broke in the CLI"), "{reason}");
}

#[test]
fn exiting_before_any_output_fails_the_turn() {
    let mut h = harness(fast());
    h.start(1, "exit_early");
    let events = h.until_pause(1);
    assert_eq!(events.len(), 1);
    let reason = failure(&events);
    assert!(reason.contains("exited before producing any output"), "{reason}");
    assert!(reason.contains("exit status: 1"), "{reason}");
    assert!(reason.contains("Please run /login"), "{reason}");
}

#[test]
fn an_error_result_fails_the_turn_with_its_text() {
    let mut h = harness(fast());
    h.start(1, "error_result");
    let reason = failure(&h.until_pause(1));
    assert!(reason.starts_with("claude: API Error: 529"), "{reason}");
}

#[test]
fn a_missing_binary_fails_with_a_clear_message() {
    let mut h = harness(ExternalConfig { claude_binary: "roundtable-test-no-such-claude".into(), ..fast() });
    h.start_with(1, AgentSpec { kind: "claude".into(), command: None, args: vec![], plan_first: None }, "hi");
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Failed(
            "claude CLI not found at 'roundtable-test-no-such-claude': install Claude Code or set the binary path"
                .into()
        )]
    );
    h.start_with(
        2,
        AgentSpec {
            kind: "claude".into(),
            command: Some("/nonexistent/bin/claude".into()),
            args: vec![],
            plan_first: None,
        },
        "hi",
    );
    assert_eq!(
        h.until_pause(2),
        vec![AgentEvent::Failed(
            "claude CLI not found at '/nonexistent/bin/claude': install Claude Code or set the binary path".into()
        )]
    );
}

#[test]
fn cancel_interrupts_the_turn_and_nothing_more_is_reported_for_it() {
    let mut h = harness(fast());
    h.start(1, "interrupt");
    assert_eq!(h.next().event, AgentEvent::Delta("Working".into()));
    assert_eq!(h.next().event, AgentEvent::Delta(" on it".into()));
    h.agents.send(AgentCommand::Cancel { session: session(), turn_id: 1 });
    h.wait_for_log("an interrupt request", |stdin| stdin.iter().any(|m| m["request"]["subtype"] == "interrupt"));
    // The CLI acknowledges (late text, then an error result) and exits once stdin closes.
    wait_dead(h.pids()[0]);
    h.start(2, "normal");
    let events = h.until_pause(2);
    assert_eq!(text(&events), "Hello from Claude.");
}

#[test]
fn cancel_kills_a_cli_that_ignores_the_interrupt() {
    let mut h = harness(ExternalConfig { cancel_grace: Duration::from_millis(300), ..fast() });
    h.start(1, "hang");
    assert_eq!(h.next().event, AgentEvent::Delta("Thinking".into()));
    h.agents.send(AgentCommand::Cancel { session: session(), turn_id: 1 });
    wait_dead(h.pids()[0]);
    h.start(2, "normal");
    assert_eq!(h.until_pause(2).last(), Some(&AgentEvent::Done));
}

#[test]
fn sessions_run_their_turns_independently() {
    let mut h = harness(fast());
    let other = SessionId::nth(2);
    h.agents.send(AgentCommand::StartTurn {
        session: other.clone(),
        turn_id: 7,
        workspace_dir: h.dir.path().display().to_string(),
        spec: AgentSpec {
            kind: "claude".into(),
            command: Some(fake()),
            args: vec!["--fake-script".into(), fixture("hang")],
            plan_first: None,
        },
        prompt: "x".into(),
        author_name: "Bob".into(),
        conversation: None,
        settings: Default::default(),
    });
    h.start(1, "normal");
    // Session 2 hangs; session 1 still completes.
    let mut done = false;
    while !done {
        let out = h.next();
        if out.session == session() {
            done = out.event == AgentEvent::Done;
        } else {
            assert_eq!((out.session, out.turn_id), (other.clone(), 7));
        }
    }
}

#[test]
fn dropping_the_runtime_stops_running_agents() {
    let mut h = harness(fast());
    h.start(1, "hang");
    assert_eq!(h.next().event, AgentEvent::Delta("Thinking".into()));
    let pid = h.pids()[0];
    drop(h.agents);
    wait_dead(pid);
}
