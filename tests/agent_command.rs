//! The `command` backend with the example agent `crates/testbins/examples/echo_agent.rs`: full turns, plan,
//! question, tool permission, failure, cancel, and a crashed agent restarting on the next turn.

use crossbeam_channel::Receiver;
use roundtable::agent::clock::{Clock, ManualClock};
use roundtable::agent::external::{ExternalAgents, ExternalConfig};
use roundtable::agent::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, Resolution};
use roundtable::engine::Inbound;
use roundtable::ids::SessionId;
use roundtable::persist::AgentSpec;
use roundtable::protocol::Question;
use std::time::{Duration, Instant};

/// The test agent (`crates/testbins`), built beside the test binaries.
fn echo() -> String {
    roundtable::scenario::agents::find_bin("echo_agent").unwrap().display().to_string()
}
const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    agents: ExternalAgents,
    rx: Receiver<Inbound>,
    dir: tempfile::TempDir,
}

fn harness(config: ExternalConfig) -> Harness {
    let (tx, rx) = crossbeam_channel::unbounded();
    Harness { agents: ExternalAgents::new(tx, config), rx, dir: tempfile::tempdir().unwrap() }
}

fn session() -> SessionId {
    SessionId::nth(1)
}

fn echo_spec() -> AgentSpec {
    AgentSpec { kind: "command".into(), command: Some(echo()), args: vec![], plan_first: None }
}

impl Harness {
    fn start_with(&mut self, turn_id: u64, spec: AgentSpec, prompt: &str) {
        self.agents.send(AgentCommand::StartTurn {
            session: session(),
            turn_id,
            workspace_dir: self.dir.path().display().to_string(),
            spec,
            prompt: prompt.into(),
            author_name: "Ann".into(),
            conversation: None,
            settings: Default::default(),
        });
    }

    fn start(&mut self, turn_id: u64, prompt: &str) {
        self.start_with(turn_id, echo_spec(), prompt);
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
        let deadline = Instant::now() + WAIT;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Inbound::Agent(out)) => return out,
                Ok(_) => continue,
                Err(_) => panic!("no agent output within {WAIT:?}"),
            }
        }
    }

    /// Events of `turn_id` up to and including the next request, `Done` or `Failed`.
    fn until_pause(&self, turn_id: u64) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        loop {
            let out = self.next();
            assert_eq!(out.turn_id, turn_id, "output for the wrong turn: {out:?}");
            let pause = !matches!(out.event, AgentEvent::Delta(_));
            events.push(out.event);
            if pause {
                return events;
            }
        }
    }

    /// Runs `/pid` as turn `turn_id` and returns the agent's process id.
    fn agent_pid(&mut self, turn_id: u64) -> u32 {
        self.start(turn_id, "/pid");
        let events = self.until_pause(turn_id);
        assert_eq!(events.last(), Some(&AgentEvent::Done));
        text(&events).strip_prefix("pid ").and_then(|p| p.parse().ok()).expect("a pid")
    }
}

fn text(events: &[AgentEvent]) -> String {
    events.iter().filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None }).collect()
}

#[test]
fn a_full_turn_streams_several_deltas_then_done() {
    let mut h = harness(ExternalConfig::default());
    h.start(1, "hello there, world");
    let events = h.until_pause(1);
    assert!(events.len() > 3, "the reply should come in several deltas: {events:?}");
    assert_eq!(text(&events), "You said: hello there, world");
    assert_eq!(events.last(), Some(&AgentEvent::Done));
}

#[test]
fn one_process_serves_every_turn_of_a_session() {
    let mut h = harness(ExternalConfig::default());
    let first = h.agent_pid(1);
    h.start(2, "again");
    assert_eq!(h.until_pause(2).last(), Some(&AgentEvent::Done));
    assert_eq!(h.agent_pid(3), first);
}

#[test]
fn a_plan_waits_for_the_vote_and_hears_the_outcome() {
    let mut h = harness(ExternalConfig::default());
    h.start(1, "/plan refactor");
    let events = h.until_pause(1);
    assert_eq!(text(&events), "I have a plan.");
    assert_eq!(
        events.last(),
        Some(&AgentEvent::Plan {
            request_id: "plan-1".into(),
            plan: "1. Read the code for refactor\n2. Make the change\n3. Run the tests".into(),
            on_approval: None,
        })
    );
    h.resolve(1, "plan-1", Resolution::Denied("Bob: too risky".into()));
    let rest = h.until_pause(1);
    assert_eq!(text(&rest), "Denied (Bob: too risky). I stopped.");
    assert_eq!(rest.last(), Some(&AgentEvent::Done));

    h.start(2, "/plan it");
    h.until_pause(2);
    h.resolve(2, "plan-2", Resolution::Approved);
    assert_eq!(text(&h.until_pause(2)), "Plan approved. Done: all three steps complete.");
}

#[test]
fn a_question_is_answered_with_the_merged_answers() {
    let mut h = harness(ExternalConfig::default());
    h.start(1, "/ask the migration");
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Question {
            request_id: "ask-1".into(),
            questions: vec![Question {
                question: "Should I go ahead with the migration?".into(),
                options: vec!["yes".into(), "no".into()],
                multi_select: false
            }],
        }]
    );
    h.resolve(1, "ask-1", Resolution::Answered(vec!["Ann: yes\nBob: no".into()]));
    let rest = h.until_pause(1);
    assert_eq!(text(&rest), "Thanks. Answer: Ann: yes\nBob: no");
    assert_eq!(rest.last(), Some(&AgentEvent::Done));
}

#[test]
fn a_tool_request_carries_its_input_as_json() {
    let mut h = harness(ExternalConfig::default());
    h.start(1, "/tool");
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::ToolRequest {
            request_id: "tool-1".into(),
            tool: "Bash".into(),
            input: r#"{"command":"ls"}"#.into()
        }]
    );
    h.resolve(1, "tool-1", Resolution::Approved);
    assert_eq!(text(&h.until_pause(1)), "Allowed; ran ls.");
}

#[test]
fn an_agent_error_fails_the_turn_and_the_agent_keeps_serving() {
    let mut h = harness(ExternalConfig::default());
    let pid = h.agent_pid(1);
    h.start(2, "/fail");
    let events = h.until_pause(2);
    assert_eq!(text(&events), "Working on it");
    assert_eq!(events.last(), Some(&AgentEvent::Failed("the echo agent failed as asked (/fail)".into())));
    assert_eq!(h.agent_pid(3), pid);
}

#[test]
fn a_crashed_agent_fails_the_turn_and_restarts_on_the_next() {
    let mut h = harness(ExternalConfig::default());
    let before = h.agent_pid(1);
    h.start(2, "/crash");
    let events = h.until_pause(2);
    assert_eq!(text(&events), "About to crash");
    let Some(AgentEvent::Failed(reason)) = events.last() else { panic!("expected a failure: {events:?}") };
    assert!(reason.contains("exited during the turn") && reason.contains("exit status: 3"), "{reason}");
    let after = h.agent_pid(3);
    assert_ne!(before, after, "a new agent process should have been started");
}

#[test]
fn a_silent_agent_is_stopped_by_the_watchdog_and_restarted() {
    let clock = ManualClock::new();
    let hang_timeout = Duration::from_millis(1000);
    let mut h =
        harness(ExternalConfig { hang_timeout, clock: Clock::Manual(clock.clone()), ..ExternalConfig::default() });
    let before = h.agent_pid(1);
    h.start(2, "/hang");
    // "Thinking forever" comes in two deltas. Both must have been handled before the clock moves:
    // a line read after `advance` would restart the watchdog from the new time, and it would
    // never fire.
    let mut said = String::new();
    while said != "Thinking forever" {
        let AgentEvent::Delta(delta) = h.next().event else { panic!("expected the agent's deltas, got {said:?}") };
        said.push_str(&delta);
    }
    // Its last line was handled, so the watchdog counts from it: moved on by the timeout, the
    // clock makes it fire.
    clock.advance(hang_timeout);
    let events = h.until_pause(2);
    let Some(AgentEvent::Failed(reason)) = events.last() else { panic!("expected a failure: {events:?}") };
    assert!(reason.contains("hang watchdog"), "{reason}");
    assert_ne!(h.agent_pid(3), before);
}

#[test]
fn cancel_is_acknowledged_and_the_next_turn_reuses_the_agent() {
    let mut h = harness(ExternalConfig::default());
    let pid = h.agent_pid(1);
    h.start(2, "/plan something");
    h.until_pause(2);
    h.agents.send(AgentCommand::Cancel { session: session(), turn_id: 2 });
    // Sent right away: the worker holds it until the agent acknowledged the cancel.
    h.start(3, "next");
    let events = h.until_pause(3);
    assert_eq!(text(&events), "You said: next");
    assert_eq!(h.agent_pid(4), pid);
}

#[test]
fn a_missing_command_fails_with_a_clear_message() {
    let mut h = harness(ExternalConfig::default());
    h.start_with(
        1,
        AgentSpec {
            kind: "command".into(),
            command: Some("/nonexistent/agent".into()),
            args: vec![],
            plan_first: None,
        },
        "x",
    );
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Failed(
            "agent command not found at '/nonexistent/agent': check the workspace's --agent-cmd".into()
        )]
    );
    h.start_with(2, AgentSpec { kind: "command".into(), command: None, args: vec![], plan_first: None }, "x");
    let events = h.until_pause(2);
    assert!(matches!(&events[0], AgentEvent::Failed(r) if r.contains("--agent-cmd")), "{events:?}");
}

#[test]
fn an_unknown_backend_fails_the_turn() {
    let mut h = harness(ExternalConfig::default());
    h.start_with(1, AgentSpec { kind: "gpt".into(), command: None, args: vec![], plan_first: None }, "x");
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Failed("unknown agent backend 'gpt' (expected claude, codex or command)".into())]
    );
}

/// A `command` agent that is a shell script (`body` after `#!/bin/sh`) in the workspace.
fn script_spec(h: &Harness, body: &str) -> AgentSpec {
    use std::os::unix::fs::PermissionsExt;
    let path = h.dir.path().join("agent.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    AgentSpec { kind: "command".into(), command: Some(path.display().to_string()), args: vec![], plan_first: None }
}

/// Reads the greeting and the turn, says something, then runs `rest`.
const TALKS_THEN: &str = r#"read hello; read turn; echo '{"type":"text","delta":"Working"}'"#;

#[test]
fn wording_an_agent_that_exits_before_any_output() {
    let mut h = harness(ExternalConfig::default());
    let spec = script_spec(&h, "echo boom >&2; exit 1");
    h.start_with(1, spec, "x");
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Failed("the agent command exited before producing any output (exit status: 1): boom".into())]
    );
}

#[test]
fn wording_an_agent_that_exits_during_the_turn() {
    let mut h = harness(ExternalConfig::default());
    let spec = script_spec(&h, &format!("{TALKS_THEN}; echo 'it broke' >&2; exit 3"));
    h.start_with(1, spec, "x");
    assert_eq!(
        h.until_pause(1),
        vec![
            AgentEvent::Delta("Working".into()),
            AgentEvent::Failed("the agent command exited during the turn (exit status: 3): it broke".into())
        ]
    );
}

#[test]
fn wording_an_agent_that_stops_talking() {
    let clock = ManualClock::new();
    let hang_timeout = Duration::from_millis(1000);
    let mut h =
        harness(ExternalConfig { hang_timeout, clock: Clock::Manual(clock.clone()), ..ExternalConfig::default() });
    let spec = script_spec(&h, &format!("{TALKS_THEN}; sleep 30"));
    h.start_with(1, spec, "x");
    assert_eq!(h.next().event, AgentEvent::Delta("Working".into()));
    clock.advance(hang_timeout);
    assert_eq!(
        h.until_pause(1),
        vec![AgentEvent::Failed("the agent command produced no output for 1 s and was stopped (hang watchdog)".into())]
    );
}

#[test]
fn wording_an_agent_that_writes_an_over_long_line() {
    let mut h = harness(ExternalConfig { max_line_bytes: 64, ..ExternalConfig::default() });
    let long = "x".repeat(100);
    let spec = script_spec(&h, &format!("{TALKS_THEN}; echo '{long}'; sleep 30"));
    h.start_with(1, spec, "x");
    assert_eq!(
        h.until_pause(1),
        vec![
            AgentEvent::Delta("Working".into()),
            AgentEvent::Failed(
                "the agent command wrote an output line longer than 64 bytes; the turn was stopped".into()
            )
        ]
    );
}

/// Counts its starts in `starts.log`, insists on the greeting, exits 3 on a prompt containing
/// `crash`, answers every other turn with `ok`.
const COUNTS_STARTS: &str = r#"echo started >> starts.log
read hello
case "$hello" in *'"hello"'*) ;; *) echo "no greeting: $hello" >&2; exit 9;; esac
while read line; do
  case "$line" in
    *crash*) exit 3;;
    *turn_start*) echo '{"type":"text","delta":"ok"}'; echo '{"type":"turn_end"}';;
  esac
done"#;

#[test]
fn a_crashed_agent_is_restarted_at_once_and_greeted_at_its_next_turn() {
    let mut h = harness(ExternalConfig::default());
    let spec = script_spec(&h, COUNTS_STARTS);
    let log = h.dir.path().join("starts.log");
    let starts = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    h.start_with(1, spec.clone(), "crash now");
    let Some(AgentEvent::Failed(reason)) = h.until_pause(1).pop() else { panic!("turn 1 should fail") };
    assert!(reason.contains("exit status: 3"), "{reason}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while starts() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(starts(), 2, "restarted without waiting for a turn");
    h.start_with(2, spec, "hi");
    assert_eq!(h.until_pause(2), vec![AgentEvent::Delta("ok".into()), AgentEvent::Done]);
    assert_eq!(starts(), 2, "the next turn used the restarted agent");
}

/// Runs one turn of `body`'s agent, drops the runtime (host shutdown) and returns what the agent
/// wrote to `state`.
fn state_after_shutdown(body: &str) -> String {
    let mut h = harness(ExternalConfig { exit_grace: Duration::from_millis(300), ..ExternalConfig::default() });
    let spec = script_spec(&h, body);
    h.start_with(1, spec, "x");
    assert_eq!(h.until_pause(1).last(), Some(&AgentEvent::Done));
    let Harness { agents, rx: _rx, dir } = h;
    drop(agents);
    std::fs::read_to_string(dir.path().join("state")).unwrap_or_default()
}

#[test]
fn at_shutdown_an_agent_first_gets_end_of_input() {
    let body = r#"read hello; read turn; echo '{"type":"turn_end"}'
while read line; do :; done
echo eof > state"#;
    assert_eq!(state_after_shutdown(body), "eof\n");
}

#[test]
fn at_shutdown_an_agent_that_ignores_end_of_input_gets_sigterm() {
    let body = r#"trap 'echo term > state; exit 0' TERM
read hello; read turn; echo '{"type":"turn_end"}'
exec 0</dev/null
while :; do sleep 0.05; done"#;
    assert_eq!(state_after_shutdown(body), "term\n");
}

#[test]
fn wording_a_missing_workspace_directory() {
    let mut h = harness(ExternalConfig::default());
    let gone = h.dir.path().join("gone");
    h.agents.send(AgentCommand::StartTurn {
        session: session(),
        turn_id: 1,
        workspace_dir: gone.display().to_string(),
        spec: echo_spec(),
        prompt: "x".into(),
        author_name: "Ann".into(),
        conversation: None,
        settings: Default::default(),
    });
    let reason = format!("the workspace directory '{}' does not exist or is not a directory", gone.display());
    assert_eq!(h.until_pause(1), vec![AgentEvent::Failed(reason)]);
}
