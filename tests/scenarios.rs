//! Every scenario in `scenarios/` passes, run twice: in memory and over real TLS WebSockets
//! through the production server and client. The two transcripts are byte-identical but for the
//! connections' source addresses — the runner and the engine are deterministic, and the sockets
//! change nothing anyone sees (docs/RULES.md §7.4) — scenarios driving real agent processes
//! (`echo_agent`, `fake_claude`) included, deltas and all. The client-side delivery checks catch
//! duplicated or missing seqs. No scenario and no event is excluded: the slow-consumer fault is
//! modelled at the host end of the socket so that it is exact (docs/SCENARIOS.md, "The ws
//! transport").

use roundtable::scenario::{load_all, run_scenario, RunOptions, RunReport, Scenario, TransportKind};
use std::path::PathBuf;

fn scenarios() -> Vec<(PathBuf, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let all = load_all(&[dir]).expect("every scenario file parses");
    assert!(all.len() >= 30, "expected at least 30 scenarios, found {}", all.len());
    all
}

fn run(scenario: &Scenario, transport: TransportKind) -> RunReport {
    run_scenario(scenario, &RunOptions { transport, ..Default::default() })
}

/// The transcript without the source addresses of connections (`10.0.0.2:40003` in memory,
/// the real `127.0.0.2:51234` over sockets) — the only thing that may differ.
fn without_addresses(transcript: &str) -> String {
    transcript
        .lines()
        .map(|line| match line.find("** opened from ") {
            Some(at) => &line[..at + "** opened from ".len()],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn short(frame: Option<&String>) -> String {
    match frame {
        None => "(nothing)".into(),
        Some(f) if f.chars().count() > 300 => format!("{}…", f.chars().take(300).collect::<String>()),
        Some(f) => f.clone(),
    }
}

/// Where two runs' per-participant event sequences first differ, if they do.
fn first_difference(memory: &RunReport, ws: &RunReport) -> Option<String> {
    let names: std::collections::BTreeSet<&String> = memory.events.keys().chain(ws.events.keys()).collect();
    for name in names {
        let (m, w) = (memory.events.get(name), ws.events.get(name));
        let (m, w) = (m.map(Vec::as_slice).unwrap_or(&[]), w.map(Vec::as_slice).unwrap_or(&[]));
        if let Some(i) = (0..m.len().max(w.len())).find(|&i| m.get(i) != w.get(i)) {
            return Some(format!(
                "{name}: event #{i} differs ({} events in memory, {} over ws)\n      memory: {}\n      ws:     {}",
                m.len(),
                w.len(),
                short(m.get(i)),
                short(w.get(i))
            ));
        }
    }
    None
}

#[test]
fn every_scenario_passes_in_memory_and_over_websockets_with_identical_transcripts() {
    let mut problems = Vec::new();
    for (path, scenario) in scenarios() {
        // The in-memory run on another core while this one drives the sockets.
        let (memory, ws) = std::thread::scope(|s| {
            let memory = s.spawn(|| run(&scenario, TransportKind::Memory));
            let ws = run(&scenario, TransportKind::Ws);
            (memory.join().expect("the memory run never panics"), ws)
        });
        let what = format!("{} ({}, seed {})", scenario.name, path.display(), ws.seed);
        if !memory.passed() {
            let lines: Vec<String> = memory.failures.iter().map(|f| format!("    {f}")).collect();
            problems.push(format!("{what} fails in memory:\n{}", lines.join("\n")));
            continue;
        }
        if !ws.passed() {
            let lines: Vec<String> = ws.failures.iter().map(|f| format!("    {f}")).collect();
            problems.push(format!("{what} fails over ws:\n{}", lines.join("\n")));
            continue;
        }
        assert!(memory.events.values().any(|e| !e.is_empty()), "{what}: nobody received any event");
        if let Some(diff) = first_difference(&memory, &ws) {
            problems.push(format!("{what}: per-participant events differ between transports:\n    {diff}"));
            continue;
        }
        if memory.digest != ws.digest {
            problems.push(format!("{what}: the final state differs between transports"));
            continue;
        }
        // Responses, requests, closes and the digest too: the whole transcript is the same.
        if without_addresses(&memory.transcript) != without_addresses(&ws.transcript) {
            problems.push(format!("{what}: transcripts differ beyond the connections' source addresses"));
        }
    }
    assert!(problems.is_empty(), "{} scenario(s) failed:\n{}", problems.len(), problems.join("\n"));
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
    assert!(what.contains("no_such_roundtable_agent") && what.contains("roundtable-testbins"), "{what}");
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
