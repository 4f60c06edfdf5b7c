//! The VOPR-style simulator's CI seeds: random multi-user flows with faults must never panic the
//! engine, violate an invariant, break what a client sees (duplicate, reordered or missing seq'd
//! events — the runner's client-side checks), or disagree with the reference model
//! (`scenario::model`) on any tick's outcome or any response code. On failure the shrunk replay
//! scenario is printed.

use roundtable::scenario::simulate::{run_seed, shrink};

/// Seeds 1..=200, 300 steps each (the count README.md quotes), in four parallel tests.
fn seeds(range: std::ops::RangeInclusive<u64>) {
    let mut failures = Vec::new();
    let (mut ticks, mut predicted, mut responses) = (0, 0, 0);
    for seed in range {
        let outcome = run_seed(seed, 300);
        ticks += outcome.report.ticks;
        predicted += outcome.report.model_checked.0;
        responses += outcome.report.model_checked.1;
        if outcome.failed() {
            let minimal = shrink(&outcome.scenario, 60);
            failures.push(format!("seed {seed}: {}\nreplay:\n{}", outcome.failure(), minimal.to_toml()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The oracle ran: every tick but an engine's first (the start, each restart) was predicted,
    // and thousands of responses were compared.
    assert!(predicted * 100 >= ticks * 98, "the reference model checked only {predicted} of {ticks} ticks");
    assert!(responses > 5_000, "the reference model compared only {responses} responses");
}

#[test]
fn random_flows_never_break_engine_invariants_seeds_1_to_50() {
    seeds(1..=50);
}

#[test]
fn random_flows_never_break_engine_invariants_seeds_51_to_100() {
    seeds(51..=100);
}

#[test]
fn random_flows_never_break_engine_invariants_seeds_101_to_150() {
    seeds(101..=150);
}

#[test]
fn random_flows_never_break_engine_invariants_seeds_151_to_200() {
    seeds(151..=200);
}

#[test]
fn a_seed_replays_identically() {
    let a = run_seed(42, 80);
    let b = run_seed(42, 80);
    assert_eq!(a.scenario, b.scenario);
    assert_eq!(a.report.transcript, b.report.transcript);
}
