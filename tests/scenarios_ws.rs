//! `--transport ws` itself: what only real sockets show. (Every scenario runs over WebSockets,
//! compared with its in-memory run, in `tests/scenarios.rs`.)

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
