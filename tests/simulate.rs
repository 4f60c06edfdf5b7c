//! The VOPR-style simulator's CI seeds: random multi-user flows with faults must never panic the
//! engine, violate an invariant, break what a client sees (duplicate, reordered or missing seq'd
//! events — the runner's client-side checks), or disagree with the reference model
//! (`scenario::model`) on any tick's outcome or any response code. On failure the shrunk replay
//! scenario is printed.
//!
//! Storage faults are among the random faults (issue 21): in two flows out of five every commit
//! fails for a while, and the model and the runner's storage checks must agree that nothing was
//! acknowledged or delivered before it was stored, nothing refused as `storage_unavailable` was
//! kept, and everything acknowledged reached every client once the store worked again.

use roundtable::scenario::format::Step;
use roundtable::scenario::simulate::{generate, run_seed, run_seed_reusing, shrink, SimulateOptions};
use roundtable::scenario::{run_scenario, Reuse, RunOptions, Scenario};
use std::path::PathBuf;

/// Seeds 1..=200, 300 steps each (the count README.md quotes), in four parallel tests.
fn seeds(range: std::ops::RangeInclusive<u64>) {
    let mut failures = Vec::new();
    let (mut ticks, mut predicted, mut responses) = (0, 0, 0);
    let (mut refused, mut healed) = (0, 0);
    for seed in range {
        let outcome = run_seed(seed, 300);
        ticks += outcome.report.ticks;
        predicted += outcome.report.model_checked.0;
        responses += outcome.report.model_checked.1;
        refused += outcome.report.transcript.matches(r#""code":"storage_unavailable""#).count();
        healed += outcome.report.transcript.matches(r#""available":true"#).count();
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
    // Storage faults were among the faults: requests were refused and the store healed.
    assert!(refused > 0 && healed > 0, "storage faults not exercised: {refused} refusals, {healed} heals");
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

/// What one seed leaves for the next on its thread (workspace directories, the model's
/// projection) changes nothing a seed reports: seeds run one after another with one [`Reuse`],
/// in two orders, give the transcripts, event sequences and model counts that each seed gives
/// alone.
#[test]
fn seeds_sharing_a_thread_report_what_each_reports_alone() {
    let seeds: Vec<u64> = (1..=6).collect();
    let alone: Vec<_> = seeds.iter().map(|&seed| run_seed(seed, 60).report).collect();
    for order in [seeds.clone(), seeds.iter().rev().copied().collect()] {
        let mut reuse = Reuse::default();
        for seed in order {
            let shared = run_seed_reusing(seed, 60, &mut reuse).report;
            let own = &alone[seed as usize - 1];
            assert_eq!(shared.transcript, own.transcript, "seed {seed}");
            assert_eq!(shared.events, own.events, "seed {seed}");
            assert_eq!((shared.ticks, shared.model_checked), (own.ticks, own.model_checked), "seed {seed}");
        }
    }
}

/// `roundtable simulate` reports the same with one thread or two (each thread reuses its own
/// set-up from seed to seed; the report is in seed order), apart from the progress lines' timings.
#[test]
fn the_report_is_the_same_on_one_thread_or_two() {
    let out = tempfile::tempdir().unwrap();
    let report = |jobs: usize| {
        let args = SimulateOptions {
            seeds: 8,
            start_seed: 11,
            ticks: 150,
            out: out.path().to_path_buf(),
            no_shrink: true,
            jobs,
        };
        let mut text = Vec::new();
        roundtable::scenario::simulate::run(&args, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        // Progress lines come with the wall clock (how many, and their timings); the last one
        // also has the totals: seeds, failures, ticks and events delivered.
        let progress = |l: &&str| l.starts_with("simulated ");
        let last = text.lines().rfind(progress).expect("a progress line").split(" s (").next().unwrap();
        let totals = last.rsplit_once(", ").expect("totals, then the time").0.to_string();
        let mut lines: Vec<String> = text.lines().filter(|l| !progress(l)).map(str::to_string).collect();
        lines.push(totals);
        lines
    };
    let one = report(1);
    assert_eq!(one, report(2));
    assert!(one.iter().any(|l| l.starts_with("reference model: ")), "{one:?}");
}

/// Like `simulate`'s options: any response is fine, the checks and the reference model decide.
fn checked() -> RunOptions {
    RunOptions { ignore_expectations: true, reference_model: true, ..Default::default() }
}

/// A storm of storage faults: eight random flows (seeds 201–208, 200 steps) with, on top of their
/// own faults, a window of 100 ms to 1.5 s in which every commit fails at every 25th step — so a
/// fault starts mid-turn, mid-vote, during joins, reconnects and host restarts. No tick may
/// acknowledge or deliver what is not stored, keep what it refused, or leave anything behind once
/// the store works again; the model compares every refusal.
///
/// How this was checked against real bugs (planted by hand in `engine/systems/persist_tick.rs`,
/// one at a time, then removed; `simulate`'s flows with storage faults, seeds 1, 2, …): each was
/// reported within the first four such seeds —
/// - the failed tick's successful replies sent at once, before the retry stored them: the
///   reference model (a held reply "answered ok while the store still fails"), seed 12;
/// - a failing tick's session events sent at once: the storage check ("received … s1#86, but the
///   store holds s1 only up to seq 85"), seed 2;
/// - the gate letting `send_message` through (a gated request handled and stored): the reference
///   model ("model says storage_unavailable, engine answered turn_locked"), seed 2;
/// - the failed tick's requests refused as "nothing kept" yet stored by the retry (the bug issue
///   21 item 6 fixed): the storage check ("received message … which was refused as
///   storage_unavailable"), seed 12;
/// - the held frames dropped instead of released: the client check (a seq gap), seed 9;
/// - nobody told that the store works again: the storage check, seed 9;
/// - the commit retried every tick instead of once a second: the reference model ("the store:
///   model says it fails (commit last tried at t=3780ms), engine … t=3790ms"), seed 2.
#[test]
fn a_storm_of_storage_faults_acknowledges_only_what_is_stored_and_keeps_nothing_refused() {
    let mut failures = Vec::new();
    let (mut refused, mut failed_ticks) = (0, 0);
    for seed in 201..=208 {
        let mut scenario = generate(seed, 200);
        let times: Vec<u64> = scenario.steps.iter().step_by(25).map(|s| s.at).collect();
        for (i, at) in times.into_iter().enumerate() {
            let mut fault =
                Step { at, who: "host".into(), action: "storage_fault".into(), ..scenario.steps[0].clone() };
            fault.params =
                toml::Table::from_iter([("ms".to_string(), toml::Value::Integer(100 + (i as i64 * 370) % 1_400))]);
            fault.repeat = None;
            fault.every = None;
            let pos = scenario.steps.partition_point(|s| s.at <= at);
            scenario.steps.insert(pos, fault);
        }
        let report = run_scenario(&scenario, &checked());
        refused += report.transcript.matches(r#""code":"storage_unavailable""#).count();
        failed_ticks += report.transcript.matches(r#""available":false"#).count();
        if report.crashed() {
            let minimal = shrink(&scenario, 60);
            let first = report.failures.first().map(|f| f.to_string()).unwrap_or_default();
            failures.push(format!("seed {seed}: {first}\nreplay:\n{}", minimal.to_toml()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        refused > 100 && failed_ticks > 20,
        "the storm was mild: {refused} refusals, {failed_ticks} storage notices"
    );
}

fn scenario_file(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"));
    Scenario::load(&path).expect("the scenario parses")
}

/// The scenario files about storage faults and the host's settings pass with the reference
/// model on (as `roundtable scenario run` plays them): the model knows the gate, the held reply
/// and the heal, and `update_settings` (issue 22 item 8: renaming the host or changing the
/// default deadline used to read "the reference model disagrees").
#[test]
fn storage_fault_and_settings_scenarios_agree_with_the_reference_model() {
    for name in
        ["storage_fault_holds_the_reply_and_refuses_changes_until_stored", "host_settings_apply_from_the_next_request"]
    {
        let report = run_scenario(&scenario_file(name), &RunOptions { reference_model: true, ..Default::default() });
        let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
        assert!(report.passed(), "{name}:\n{}", failures.join("\n"));
        assert!(report.model_checked.0 > 50 && report.model_checked.1 >= 5, "{name}: {:?}", report.model_checked);
    }
}

/// Found by this simulator (in about one seed in ten with storage faults): a `join_session`
/// handled in the tick whose commit fails was acknowledged once the retry stored it, but
/// `persist_tick::withhold` dropped its replay or snapshot instead of holding it with the reply,
/// so the client never got what it missed. The failed tick's replays now wait with its replies.
#[test]
fn a_join_in_the_tick_whose_commit_fails_still_gets_what_it_missed() {
    let text = r#"
        name = "join_in_the_failed_tick"
        [[workspaces]]
        name = "app"
        [[sessions]]
        workspace = "app"
        [[shares]]
        label = "team"
        [[participants]]
        name = "ann"
        share = "team"
        [[participants]]
        name = "bob"
        share = "team"
        [[step]]
        at = 100
        who = "bob"
        do = "disconnect"
        [[step]]
        at = 200
        who = "ann"
        do = "send_message"
        session = "s1"
        text = "while Bob is away"
        # Bob's rejoin (sent when his authentication is answered) lands in the failing tick.
        [[step]]
        at = 1000
        who = "bob"
        do = "reconnect"
        [[step]]
        at = 1010
        do = "storage_fault"
        ms = 300
        [final.participants.bob]
        saw_every_event_of = ["s1"]
    "#;
    let scenario = Scenario::parse(text, std::path::Path::new("join_in_the_failed_tick.toml")).unwrap();
    let report = run_scenario(&scenario, &RunOptions { reference_model: true, ..Default::default() });
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert!(report.passed(), "{}", failures.join("\n"));
}
