//! `--transport ws`: every scenario, played over real TLS WebSockets through the production
//! server, passes and gives each participant exactly the event sequence it gets over the
//! in-memory transport (SPEC §5). No scenario and no event is excluded: the slow-consumer fault
//! is modelled at the host end of the socket so that it is exact (docs/SCENARIOS.md, "The ws
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
fn every_scenario_gives_the_same_per_participant_events_over_websockets_as_in_memory() {
    let mut problems = Vec::new();
    for (path, scenario) in scenarios() {
        // The in-memory run on another core while this one drives the sockets.
        let (memory, ws) = std::thread::scope(|s| {
            let memory = s.spawn(|| run(&scenario, TransportKind::Memory));
            let ws = run(&scenario, TransportKind::Ws);
            (memory.join().expect("the memory run never panics"), ws)
        });
        let what = format!("{} ({}, seed {})", scenario.name, path.display(), ws.seed);
        assert!(memory.passed(), "{what} fails in memory: {:?}", memory.failures);
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
    assert!(problems.is_empty(), "{} scenario(s) differ over ws:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn websocket_connections_come_from_one_loopback_address_per_participant_address() {
    let (_, scenario) = scenarios()
        .into_iter()
        .find(|(_, s)| s.name == "auth_rate_limited_after_five_failures")
        .expect("scenario exists");
    let report = run(&scenario, TransportKind::Ws);
    assert!(report.passed(), "{:?}", report.failures);
    // Source addresses as the host's socket saw them, per participant section of the transcript.
    let mut by_participant: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut section = String::new();
    for line in report.transcript.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            section = name.to_string();
        } else if let Some(at) = line.find("** opened from ") {
            let addr = &line[at + "** opened from ".len()..];
            let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
            by_participant.entry(section.clone()).or_default().insert(ip.to_string());
        }
    }
    let mallory = &by_participant["mallory"];
    let ann = &by_participant["ann"];
    assert_eq!(mallory.len(), 1, "all of mallory's sockets share one address: {mallory:?}");
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert_ne!(mallory, ann, "different participant addresses stay different over loopback");
    for ip in mallory.iter().chain(ann) {
        let ip: std::net::IpAddr = ip.parse().expect("a real socket address");
        assert!(ip.is_loopback(), "{ip} is the real peer address of a loopback socket");
    }
}
