//! Every scenario in `scenarios/` passes, and replaying one with the same seed gives a
//! byte-identical transcript (the runner and the engine are deterministic) — scenarios driving
//! real agent processes (`echo_agent`, `fake_claude`) included, deltas and all. The client-side
//! delivery checks catch duplicated or missing seqs.

use roundtable::scenario::{load_all, run_scenario, RunOptions, Scenario};
use std::path::PathBuf;

fn scenarios() -> Vec<(PathBuf, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let all = load_all(&[dir]).expect("every scenario file parses");
    assert!(all.len() >= 30, "expected at least 30 scenarios, found {}", all.len());
    all
}

#[test]
fn every_scenario_passes() {
    let mut failed = Vec::new();
    for (path, scenario) in scenarios() {
        let report = run_scenario(&scenario, &RunOptions::default());
        if !report.passed() {
            let lines: Vec<String> = report.failures.iter().map(|f| format!("    {f}")).collect();
            failed.push(format!("{} ({}):\n{}", report.name, path.display(), lines.join("\n")));
        }
    }
    assert!(failed.is_empty(), "{} scenario(s) failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn same_scenario_and_seed_give_byte_identical_transcripts() {
    for (path, scenario) in scenarios() {
        let first = run_scenario(&scenario, &RunOptions::default());
        let second = run_scenario(&scenario, &RunOptions::default());
        assert!(
            first.transcript == second.transcript,
            "{} ({}) gave different transcripts on two runs with seed {}",
            first.name,
            path.display(),
            first.seed
        );
    }
}

#[test]
fn a_different_seed_changes_the_tokens_but_not_the_story() {
    let (_, scenario) =
        scenarios().into_iter().find(|(_, s)| s.name == "message_streams_reply_to_everyone").expect("scenario exists");
    let a = run_scenario(&scenario, &RunOptions { seed: Some(1), ..Default::default() });
    let b = run_scenario(&scenario, &RunOptions { seed: Some(2), ..Default::default() });
    assert!(a.passed() && b.passed());
    assert_ne!(a.transcript, b.transcript, "tokens come from the seeded RNG");
    assert_eq!(a.events, b.events, "events carry no tokens, so they are the same");
}

#[test]
fn the_documented_example_scenario_passes() {
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/SCENARIOS.md")).unwrap();
    let start = doc.find("## A full example").expect("docs have a full example");
    let block = &doc[start..];
    let body = block.split("```toml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a toml block");
    let scenario = Scenario::parse(body, std::path::Path::new("docs/SCENARIOS.md")).expect("the example parses");
    let report = run_scenario(&scenario, &RunOptions::default());
    assert!(report.passed(), "the documented example fails: {:?}", report.failures);
}

#[test]
fn a_wrong_expectation_fails_with_tick_time_and_participant() {
    let text = r#"
name = "wrong_on_purpose"
[[workspaces]]
name = "app"
[[sessions]]
workspace = "app"
[[shares]]
label = "team"
[[participants]]
name = "ann"
share = "team"
[[step]]
at = 100
who = "ann"
do = "send_message"
session = "s1"
text = "hello"
[[expect]]
who = "ann"
event = "message"
payload = { text = "hello" }
absent = true
"#;
    let scenario = Scenario::parse(text, std::path::Path::new("inline.toml")).unwrap();
    let report = run_scenario(&scenario, &RunOptions::default());
    assert!(!report.passed());
    let f = &report.failures[0];
    assert_eq!(f.who.as_deref(), Some("ann"));
    assert_eq!(f.time, Some(100));
    assert!(f.tick.is_some());
}

/// A scenario with one participant, `ann`, in session `s1`, plus extra steps.
fn one_session(name: &str, steps: &str) -> Scenario {
    let text = format!(
        r#"
name = "{name}"
[[workspaces]]
name = "app"
[[sessions]]
workspace = "app"
[[shares]]
label = "team"
[[participants]]
name = "ann"
share = "team"
{steps}
"#
    );
    Scenario::parse(&text, std::path::Path::new("inline.toml")).unwrap()
}

#[test]
fn a_client_receiving_a_seq_twice_fails_the_run_with_tick_and_participant() {
    // A join the runner does not know about (sent raw) asks for a replay from seq 0 on a
    // connection that already has every event: the replayed seqs arrive a second time.
    let steps = r#"
[[step]]
at = 100
who = "host"
do = "send_message"
session = "s1"
text = "hello"
[[step]]
at = 300
who = "ann"
do = "raw"
text = '{"id": 99, "method": "join_session", "params": {"session_id": "s1", "since_seq": 0}}'
"#;
    let report = run_scenario(&one_session("duplicate_on_purpose", steps), &RunOptions::default());
    assert!(report.crashed(), "a duplicate seq is a delivery failure, as the simulator counts");
    let v = &report.client_violations;
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("ann") && v[0].contains("already received seq"), "{v:?}");
    let f = report.failures.iter().find(|f| f.what.contains("client check")).expect("listed in failures");
    assert_eq!((f.who.as_deref(), f.time), (Some("ann"), Some(300)));
}

#[test]
fn a_joined_client_that_misses_committed_events_fails_the_run() {
    // A leave the runner does not know about (sent raw): the runner still counts ann in the
    // session, but the host stops sending her its events.
    let steps = r#"
[[step]]
at = 100
who = "ann"
do = "raw"
text = '{"id": 99, "method": "leave_session", "params": {"session_id": "s1"}}'
[[step]]
at = 200
who = "host"
do = "send_message"
session = "s1"
text = "you will not see this"
"#;
    let report = run_scenario(&one_session("missed_on_purpose", steps), &RunOptions::default());
    let v = &report.client_violations;
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("ann") && v[0].contains("committed"), "{v:?}");
}

#[test]
fn a_missing_agent_binary_fails_the_run_with_a_clear_message() {
    let text = r#"
name = "missing_binary"
[[workspaces]]
name = "app"
agent = "command"
agent_cmd = "${bin.no_such_roundtable_agent}"
[[sessions]]
workspace = "app"
"#;
    let scenario = Scenario::parse(text, std::path::Path::new("inline.toml")).unwrap();
    let report = run_scenario(&scenario, &RunOptions::default());
    assert!(!report.passed());
    let what = &report.failures[0].what;
    assert!(what.contains("no_such_roundtable_agent") && what.contains("cargo build --bins"), "{what}");
}

#[test]
fn real_agent_scenarios_cover_both_external_backends() {
    let all = scenarios();
    for kind in ["command", "claude"] {
        let n = all
            .iter()
            .filter(|(_, s)| s.workspaces.iter().any(|w| w.runs_external_agent() && w.agent.as_deref() == Some(kind)))
            .count();
        assert!(n >= 4, "expected at least 4 scenarios driving a real `{kind}` agent, found {n}");
    }
}
