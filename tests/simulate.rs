//! A few seeds of the VOPR-style simulator: random multi-user flows with faults must never
//! panic the engine, violate an invariant, or break what a client sees (duplicate, reordered or
//! missing seq'd events — the runner's client-side checks). On failure the shrunk replay
//! scenario is printed.

use roundtable::scenario::simulate::{run_seed, shrink};

#[test]
fn random_flows_never_break_engine_invariants() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for seed in 1..=8 {
        let outcome = run_seed(seed, 120);
        if outcome.failed() {
            let minimal = shrink(&outcome.scenario, 60);
            failures.push(format!("seed {seed}: {}\nreplay:\n{}", outcome.failure(), minimal.to_toml()));
        }
    }
    std::panic::set_hook(hook);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_seed_replays_identically() {
    let a = run_seed(42, 80);
    let b = run_seed(42, 80);
    assert_eq!(a.scenario, b.scenario);
    assert_eq!(a.report.transcript, b.report.transcript);
}
