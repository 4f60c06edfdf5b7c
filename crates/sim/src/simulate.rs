//! `roundtable simulate`: VOPR-style random multi-user flows.
//!
//! One seed drives every choice: a ChaCha RNG seeded with it builds a [`Scenario`] (host
//! settings, workspaces, sessions, shares with random settings, participants, and a timeline of
//! random requests and faults), which the ordinary runner executes with invariant checks on.
//! The engine's RNG gets the same seed, so a seed alone reproduces a run.
//!
//! A run fails when the engine panics or reports an invariant violation, or when a client sees a
//! delivery guarantee broken (the runner's client-side checks: seq'd events duplicated,
//! reordered, or missing for a client still connected and joined at the end), or the storage
//! checks fail (something delivered before it was stored, or kept after it was refused), or the
//! engine disagrees with the reference model. Storage faults and changes of the host's settings
//! come from streams of the seed of their own, so adding them left every seed's other steps as
//! they were. The failing flow is
//! shrunk (steps dropped, chunk by chunk, while it still fails) and written as a scenario file
//! that replays it with `roundtable scenario run`.

use super::format::*;
use super::runner::{run_scenario, run_scenario_reusing, Reuse, RunOptions, RunReport};
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Names the simulator gives participants.
const NAMES: [&str; 6] = ["ann", "bob", "cat", "dan", "eve", "fay"];

/// Message texts: plain chat and the demo agent's commands.
const TEXTS: [&str; 7] = [
    "hello",
    "/plan refactor the parser",
    "/ask deploy",
    "/fail",
    "a longer message that streams over several ticks",
    "/plan",
    "ok",
];

/// Frames that are not valid requests. Their ids are strings, so they never collide with the
/// runner's own (numeric) request ids on the connection (PROTOCOL §1: ids unique per connection).
const BAD_FRAMES: [&str; 6] = [
    "{nope",
    "[]",
    r#"{"id":"bad-1"}"#,
    r#"{"id":"bad-2","method":"explode"}"#,
    r#"{"id":"bad-3","method":"vote_plan","params":{"vote_id":"v1","approve":"yes"}}"#,
    r#"{"id":"bad-4","method":"send_message","params":7}"#,
];

/// The outcome of one seed.
pub struct SeedOutcome {
    pub seed: u64,
    pub scenario: Scenario,
    pub report: RunReport,
}

impl SeedOutcome {
    pub fn failed(&self) -> bool {
        self.report.crashed()
    }

    /// One line describing the failure.
    pub fn failure(&self) -> String {
        let r = &self.report;
        match (&r.panic, r.violations.first(), r.client_violations.first(), r.model_violations.first()) {
            (Some(p), ..) => format!("panic: {p}"),
            (None, Some(v), ..) => format!("invariant violated: {v}"),
            (None, None, Some(c), _) => c.clone(),
            (None, None, None, Some(m)) => m.clone(),
            (None, None, None, None) => "ok".into(),
        }
    }
}

/// Builds the random flow for `seed` with about `steps` steps.
///
/// One RNG, drawn from in a fixed order: the host, workspaces, sessions, shares, participants,
/// then the timeline step by step. Each part below takes its draws in that order, so a seed
/// builds the same flow whatever the parts are called.
pub fn generate(seed: u64, steps: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sc = Scenario { name: format!("simulate seed {seed}"), seed: Some(seed), ..Default::default() };
    draw_host(&mut rng, &mut sc);
    let nws = draw_workspaces(&mut rng, &mut sc);
    let nsessions = draw_sessions(&mut rng, &mut sc, nws);
    draw_shares(&mut rng, &mut sc, nws);
    draw_participants(&mut rng, &mut sc);
    let t = draw_timeline(&mut rng, &mut sc, steps, nsessions);
    // Faults of the store and changes of the host's settings are drawn from streams of their own
    // of the seed: a seed's other steps are the same with or without them.
    let t = storage_faults(seed, &mut sc.steps).max(t);
    host_settings(seed, &mut sc.steps);
    // Let every slow consumer go at the end, so the flow can settle.
    for p in &sc.participants {
        let release = step_at(t + 10, &p.name, "release");
        sc.steps.push(release);
    }
    sc.settle_ms = Some(2_000);
    sc
}

/// The host's grace period, vote deadline and default consensus.
fn draw_host(rng: &mut ChaCha8Rng, sc: &mut Scenario) {
    sc.host.grace_ms = Some(*[1_000u64, 3_000, 30_000].choose(rng).expect("non-empty"));
    if rng.random_bool(0.3) {
        sc.host.vote_deadline_ms = Some(rng.random_range(500..5_000));
    }
    sc.host.default_consensus = rng.random_bool(0.7);
}

/// One or two workspaces, each with a file, a file outside it and two symlinks; returns how many.
fn draw_workspaces(rng: &mut ChaCha8Rng, sc: &mut Scenario) -> usize {
    let nws = rng.random_range(1..=2);
    for w in 0..nws {
        let name = ["app", "lib"][w].to_string();
        let files = BTreeMap::from([("README.md".to_string(), format!("# {name}\n"))]);
        let outside = BTreeMap::from([("secret.txt".to_string(), "outside\n".to_string())]);
        // One link escapes the workspace (refused), one stays inside it (readable).
        let symlinks = BTreeMap::from([
            ("escape.md".to_string(), "../secret.txt".to_string()),
            ("docs/inner.md".to_string(), "../README.md".to_string()),
        ]);
        sc.workspaces.push(WorkspaceDef {
            name,
            files,
            outside_files: outside,
            symlinks,
            agent: None,
            agent_cmd: None,
            agent_args: Vec::new(),
        });
    }
    nws
}

/// One to three sessions over the workspaces, some with a vote deadline; returns how many.
fn draw_sessions(rng: &mut ChaCha8Rng, sc: &mut Scenario, nws: usize) -> usize {
    let nsessions = rng.random_range(1..=3);
    for s in 0..nsessions {
        let workspace = sc.workspaces[s % nws].name.clone();
        let deadline = rng.random_bool(0.2).then(|| rng.random_range(300..3_000));
        sc.sessions.push(SessionDef { workspace, title: format!("session {}", s + 1), vote_deadline_ms: deadline });
    }
    nsessions
}

/// One to three shares with random settings.
fn draw_shares(rng: &mut ChaCha8Rng, sc: &mut Scenario, nws: usize) {
    let nshares: usize = rng.random_range(1..=3);
    for s in 0..nshares {
        let workspaces = if nws > 1 && rng.random_bool(0.4) {
            vec![sc.workspaces[rng.random_range(0..nws)].name.clone()]
        } else {
            Vec::new()
        };
        sc.shares.push(ShareDef {
            label: format!("share{s}"),
            workspaces,
            collaborative: rng.random_bool(0.8),
            consensus_required: rng.random_bool(0.7),
            admission_required: rng.random_bool(0.2),
            role: if rng.random_bool(0.15) { "observer".into() } else { "participant".into() },
            expires_in_ms: rng.random_bool(0.1).then(|| rng.random_range(2_000..20_000)),
            max_uses: rng.random_bool(0.1).then(|| rng.random_range(1..4)),
            vote_deadline_ms: rng.random_bool(0.15).then(|| rng.random_range(300..3_000)),
        });
    }
}

/// Two to six participants, each pairing through one of the shares.
fn draw_participants(rng: &mut ChaCha8Rng, sc: &mut Scenario) {
    let nparts = rng.random_range(2..=NAMES.len());
    for name in NAMES.iter().take(nparts) {
        let share = sc.shares[rng.random_range(0..sc.shares.len())].label.clone();
        sc.participants.push(ParticipantDef {
            name: name.to_string(),
            // Sometimes two people ask for the same name.
            display_name: rng.random_bool(0.15).then(|| "Ann".to_string()),
            share: Some(share),
            connections: if rng.random_bool(0.2) { 2 } else { 1 },
            connect_at: if rng.random_bool(0.2) { rng.random_range(1..200) * 10 } else { 0 },
            authenticate: true,
            join: None,
            addr: None,
            auto_resync: true,
            auto_refetch: true,
        });
    }
}

/// Who and what the timeline's steps pick from.
struct Cast {
    /// The host and every participant.
    who_all: Vec<String>,
    remotes: Vec<String>,
    session_ids: Vec<String>,
    labels: Vec<String>,
}

/// One step's picks, drawn before its action: its index and time, whoever (host or remote) does
/// it, a remote it may concern, and a session.
struct Pick {
    n: u64,
    t: u64,
    who: String,
    remote: String,
    session: String,
}

/// A step as drawn, before it becomes a [`Step`]: a burst (`repeat`), and how far a clock
/// jump moves the later steps.
struct Draw {
    who: String,
    action: &'static str,
    params: toml::Table,
    repeat: Option<u32>,
    jumped: u64,
}

impl Draw {
    fn set(&mut self, key: &str, value: toml::Value) {
        self.params.insert(key.to_string(), value);
    }

    /// Who does it and what; the parameters are set before or after.
    fn is(&mut self, who: String, action: &'static str) {
        self.who = who;
        self.action = action;
    }
}

/// The timeline: `steps` random requests and faults, 0 to 50 ms apart. Returns the time of the
/// last one (after any clock jump).
fn draw_timeline(rng: &mut ChaCha8Rng, sc: &mut Scenario, steps: u64, nsessions: usize) -> u64 {
    let mut who_all: Vec<String> = vec!["host".into()];
    who_all.extend(sc.participants.iter().map(|p| p.name.clone()));
    let cast = Cast {
        who_all,
        remotes: sc.participants.iter().map(|p| p.name.clone()).collect(),
        session_ids: (1..=nsessions).map(|i| format!("s{i}")).collect(),
        labels: sc.shares.iter().map(|s| s.label.clone()).collect(),
    };
    let mut t = 0u64;
    for n in 0..steps {
        t += rng.random_range(0..6) * 10;
        let who = cast.who_all.choose(rng).expect("non-empty").clone();
        let remote = cast.remotes.choose(rng).expect("non-empty").clone();
        let session = cast.session_ids.choose(rng).expect("non-empty").clone();
        let draw = draw_step(rng, &cast, Pick { n, t, who, remote, session }, &mut sc.steps);
        sc.steps.push(Step {
            at: t,
            who: draw.who,
            action: draw.action.into(),
            conn: None,
            response: Some("any".into()),
            expect_error: None,
            error_contains: None,
            expect_result: None,
            repeat: draw.repeat,
            every: draw.repeat.map(|_| 0),
            then: Vec::new(),
            params: draw.params,
        });
        t += draw.jumped;
    }
    t
}

/// One step of the timeline: the roll picks its kind. A wall-clock step pushes a step of its own
/// into `steps` first.
fn draw_step(rng: &mut ChaCha8Rng, cast: &Cast, pick: Pick, steps: &mut Vec<Step>) -> Draw {
    let mut draw = Draw { who: String::new(), action: "", params: toml::Table::new(), repeat: None, jumped: 0 };
    let roll: i32 = rng.random_range(0..100);
    match roll {
        0..=49 => draw_conversation(rng, roll, pick, &mut draw),
        50..=68 => draw_moderation_and_links(rng, roll, pick, &mut draw),
        69..=70 => draw_clock(rng, pick, &mut draw, steps),
        71..=81 => draw_odd_requests(rng, roll, pick, &mut draw),
        82..=89 => draw_host_admin(rng, roll, cast, pick, &mut draw),
        _ => draw_chat(rng, roll, pick, &mut draw),
    }
    draw
}

/// Prompts, ballots, answers, cancels, joins and leaves.
fn draw_conversation(rng: &mut ChaCha8Rng, roll: i32, pick: Pick, d: &mut Draw) {
    let Pick { who, session, .. } = pick;
    match roll {
        0..=24 => {
            d.set("session", session.into());
            d.set("text", (*TEXTS.choose(rng).expect("non-empty")).into());
            if rng.random_bool(0.1) {
                d.set("client_msg_id", "retry-me".into());
            }
            d.is(who, "send_message")
        }
        25..=34 => {
            d.set("vote", "$vote".into());
            let approve = rng.random_bool(0.7);
            d.set("approve", approve.into());
            if !approve {
                d.set("reason", "not like this".into());
            }
            d.is(who, "vote_plan")
        }
        35..=41 => {
            d.set("vote", "$vote".into());
            d.set("answers", toml::Value::Array(vec![(*["yes", "no"].choose(rng).expect("non-empty")).into()]));
            d.is(who, "answer_question")
        }
        42..=44 => {
            d.set("session", session.into());
            d.is(who, "cancel_turn")
        }
        45..=47 => {
            d.set("session", session.into());
            d.is(who, "join_session")
        }
        _ => {
            d.set("session", session.into());
            d.is(who, "leave_session")
        }
    }
}

/// Moderation (host-only: now and then a remote tries it, `forbidden`) and a remote's link:
/// disconnect, reconnect, slow, release.
fn draw_moderation_and_links(rng: &mut ChaCha8Rng, roll: i32, pick: Pick, d: &mut Draw) {
    let Pick { who, remote, .. } = pick;
    match roll {
        50..=52 => {
            d.set("participant", remote.into());
            d.set("muted", rng.random_bool(0.6).into());
            d.is(moderator(rng, &who), "mute")
        }
        53 => {
            d.set("participant", remote.into());
            if rng.random_bool(0.2) {
                d.set("revoke_share", true.into());
            }
            d.is(moderator(rng, &who), "kick")
        }
        54..=55 => {
            d.set("participant", remote.into());
            let moderator = moderator(rng, &who);
            d.is(moderator, if rng.random_bool(0.7) { "admit" } else { "refuse" })
        }
        56..=59 => d.is(remote, "disconnect"),
        60..=64 => d.is(remote, "reconnect"),
        65..=66 => {
            d.set("capacity", toml::Value::Integer(rng.random_range(0..3)));
            d.is(remote, "slow")
        }
        _ => d.is(remote, "release"),
    }
}

/// The host's wall clock stepped (then, half the time, a restart or a crash), or engine time
/// jumping ahead.
fn draw_clock(rng: &mut ChaCha8Rng, pick: Pick, d: &mut Draw, steps: &mut Vec<Step>) {
    if rng.random_bool(0.4) {
        // The host's wall clock is set back or forward (a minute to a day): a running
        // engine must not notice, and one restarted after it (as happens here half the
        // time) must keep time moving and never go back.
        let minutes = rng.random_range(1..=1440i64);
        let by = if rng.random_bool(0.5) { -minutes } else { minutes } * 60_000;
        let mut step = step_at(pick.t, "host", "wall_step");
        step.params.insert("by".into(), toml::Value::Integer(by));
        steps.push(step);
        let then = if rng.random_bool(0.5) { "restart_host" } else { "crash_after_commit" };
        d.is("host".into(), if rng.random_bool(0.5) { then } else { "wait" })
    } else {
        // Time moves on by `by`: later steps keep their spacing after the jump.
        let by = rng.random_range(1..40) * 1_000;
        d.set("by", toml::Value::Integer(by));
        d.jumped = by as u64;
        d.is(pick.who, "clock_jump")
    }
}

/// Bad frames, crash points, an agent failure, file reads, listings and history pages.
fn draw_odd_requests(rng: &mut ChaCha8Rng, roll: i32, pick: Pick, d: &mut Draw) {
    let Pick { who, session, .. } = pick;
    match roll {
        71..=73 => {
            if rng.random_bool(0.1) {
                // Over the 64 KiB frame cap: refused with frame_too_large, connection kept.
                let nonce = "x".repeat(crate::protocol::MAX_FRAME_BYTES);
                d.set("text", format!(r#"{{"id":"big","method":"ping","params":{{"nonce":"{nonce}"}}}}"#).into());
            } else {
                d.set("text", (*BAD_FRAMES.choose(rng).expect("non-empty")).into());
            }
            d.is(who, "raw")
        }
        // Crash points: at a tick boundary (mid-turn, after a rejected message, …) or
        // between a tick's commit and its send.
        74 => d.is("host".into(), if rng.random_bool(0.5) { "restart_host" } else { "crash_after_commit" }),
        75 => {
            d.set("session", session.into());
            d.is("host".into(), "agent_fail")
        }
        76..=77 => {
            d.set("session", session.into());
            let paths = ["README.md", "../secret.txt", "missing.md", "escape.md", "docs/inner.md", "docs"];
            d.set("path", (*paths.choose(rng).expect("non-empty")).into());
            d.is(who, "read_workspace_file")
        }
        78..=80 => {
            let listings = ["ping", "list_workspaces", "list_sessions", "list_shares", "list_lobby", "fetch_audit"];
            d.is(who, listings.choose(rng).expect("non-empty"))
        }
        _ => {
            d.set("session", session.into());
            if rng.random_bool(0.5) {
                d.set("before_seq", toml::Value::Integer(rng.random_range(1..40)));
            }
            d.set("limit", toml::Value::Integer(rng.random_range(1..5)));
            d.is(who, "fetch_history")
        }
    }
}

/// The host renaming, clearing and forking sessions, rotating and revoking shares; a remote
/// connecting; a burst of requests in one tick.
fn draw_host_admin(rng: &mut ChaCha8Rng, roll: i32, cast: &Cast, pick: Pick, d: &mut Draw) {
    let Pick { n, who, remote, session, .. } = pick;
    match roll {
        82 => {
            d.set("session", session.into());
            d.set("title", format!("renamed {n}").into());
            d.is("host".into(), "rename_session")
        }
        83 => {
            d.set("session", session.into());
            d.is("host".into(), "clear_session")
        }
        84 => {
            d.set("session", session.into());
            d.is("host".into(), "fork_session")
        }
        85 => {
            d.set("share", (*cast.labels.choose(rng).expect("non-empty")).clone().into());
            d.is("host".into(), if rng.random_bool(0.5) { "rotate_share" } else { "revoke_share" })
        }
        86..=88 => d.is(remote, "connect"),
        _ => {
            // A burst in one tick, around the per-connection request budget (40).
            d.repeat = Some(rng.random_range(30..50));
            d.is(who, "ping")
        }
    }
}

/// Typing and read markers, room chat, and plain chat prompts.
fn draw_chat(rng: &mut ChaCha8Rng, roll: i32, pick: Pick, d: &mut Draw) {
    let Pick { n, who, session, .. } = pick;
    d.set("session", session.into());
    match roll {
        95 => {
            if rng.random_bool(0.5) {
                d.is(who, "typing")
            } else {
                d.set("seq", toml::Value::Integer(rng.random_range(0..30)));
                d.is(who, "mark_read")
            }
        }
        90..=94 => {
            // Room chat: to the people, never to the agent, fine while someone holds the turn.
            d.set("text", format!("room {n}").into());
            if rng.random_bool(0.1) {
                d.set("client_msg_id", "retry-me".into());
            }
            d.is(who, "send_chat")
        }
        _ => {
            d.set("text", format!("chat {n}").into());
            d.is(who, "send_message")
        }
    }
}

/// In two flows out of five, one or two windows in which every commit fails (a full disk, a
/// database gone read-only), each starting at a random step and lasting 10 ms to 3 s of engine
/// time: requests during it are refused with `storage_unavailable`, and the tick whose commit
/// failed is acknowledged only once a retry stores it. Returns when the last window ends.
fn storage_faults(seed: u64, steps: &mut Vec<Step>) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let mut end = 0;
    if steps.is_empty() || !rng.random_bool(0.4) {
        return end;
    }
    for _ in 0..rng.random_range(1..=2) {
        let at = steps[rng.random_range(0..steps.len())].at;
        let ms: u64 = rng.random_range(1..=300) * 10;
        let mut step = step_at(at, "host", "storage_fault");
        step.params.insert("ms".into(), toml::Value::Integer(ms as i64));
        insert_in_time_order(steps, step);
        end = end.max(at + ms);
    }
    end
}

/// In one flow out of five, the host changes its settings once: its name, the default consensus
/// or the default vote deadline (which votes opened after it use).
fn host_settings(seed: u64, steps: &mut Vec<Step>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2);
    if steps.is_empty() || !rng.random_bool(0.2) {
        return;
    }
    let at = steps[rng.random_range(0..steps.len())].at;
    let mut step = step_at(at, "host", "update_settings");
    match rng.random_range(0..3) {
        // "Ann" sometimes: the host may take a name a remote has.
        0 => step
            .params
            .insert("host_name".into(), (*["Hal", "Ann", "Host"].choose(&mut rng).expect("non-empty")).into()),
        1 => step.params.insert("default_consensus".into(), rng.random_bool(0.5).into()),
        _ => step.params.insert(
            "default_vote_deadline_ms".into(),
            toml::Value::Integer(*[0, 800, 4_000].choose(&mut rng).expect("non-empty")),
        ),
    };
    insert_in_time_order(steps, step);
}

/// Inserts `step` after every step at or before its time.
fn insert_in_time_order(steps: &mut Vec<Step>, step: Step) {
    let i = steps.partition_point(|s| s.at <= step.at);
    steps.insert(i, step);
}

/// Who sends a moderation request: the host, or (one time in ten) whoever the step drew.
fn moderator(rng: &mut ChaCha8Rng, who: &str) -> String {
    if rng.random_bool(0.1) {
        who.to_string()
    } else {
        "host".to_string()
    }
}

fn step_at(at: u64, who: &str, action: &str) -> Step {
    Step {
        at,
        who: who.into(),
        action: action.into(),
        conn: None,
        response: Some("any".into()),
        expect_error: None,
        error_contains: None,
        expect_result: None,
        repeat: None,
        every: None,
        then: Vec::new(),
        params: toml::Table::new(),
    }
}

fn options() -> RunOptions {
    RunOptions { seed: None, ignore_expectations: true, reference_model: true, ..Default::default() }
}

/// Runs one seed.
pub fn run_seed(seed: u64, steps: u64) -> SeedOutcome {
    run_seed_reusing(seed, steps, &mut Reuse::default())
}

/// Runs one seed with what earlier seeds on this thread left in `reuse` (the outcome is the same
/// as [`run_seed`]'s).
pub fn run_seed_reusing(seed: u64, steps: u64, reuse: &mut Reuse) -> SeedOutcome {
    let scenario = generate(seed, steps);
    let report = run_scenario_reusing(&scenario, &options(), reuse);
    SeedOutcome { seed, scenario, report }
}

/// Drops steps (then unused participants) while the flow still fails. At most `budget` runs.
pub fn shrink(scenario: &Scenario, budget: usize) -> Scenario {
    let fails = |s: &Scenario| run_scenario(s, &options()).crashed();
    let mut best = scenario.clone();
    let mut runs = 0;
    let mut chunk = best.steps.len().div_ceil(2).max(1);
    while chunk >= 1 && runs < budget {
        let mut removed_any = false;
        let mut start = 0;
        while start < best.steps.len() && runs < budget {
            let mut candidate = best.clone();
            let end = (start + chunk).min(candidate.steps.len());
            candidate.steps.drain(start..end);
            runs += 1;
            if fails(&candidate) {
                best = candidate;
                removed_any = true;
            } else {
                start += chunk;
            }
        }
        if !removed_any {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    // Participants no step mentions.
    let mut i = 0;
    while i < best.participants.len() && runs < budget {
        let name = best.participants[i].name.clone();
        let used =
            best.steps.iter().any(|s| s.who == name || s.params.values().any(|v| v.as_str() == Some(name.as_str())));
        if !used {
            let mut candidate = best.clone();
            candidate.participants.remove(i);
            runs += 1;
            if candidate.validate().is_ok() && fails(&candidate) {
                best = candidate;
                continue;
            }
        }
        i += 1;
    }
    best
}

/// Writes a replayable scenario for a failing seed; returns its path.
pub fn write_replay(
    dir: &std::path::Path,
    outcome: &SeedOutcome,
    minimal: &Scenario,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("simulate-seed-{}.toml", outcome.seed));
    let mut s = minimal.clone();
    s.name = format!("simulate_seed_{}_replay", outcome.seed);
    let text = format!(
        "# Replays `roundtable simulate` seed {} (shrunk to {} of {} steps).\n# It proves the engine bug below is fixed once this scenario passes:\n#   {}\n# Run: roundtable scenario run {}\n\n{}",
        outcome.seed,
        s.steps.len(),
        outcome.scenario.steps.len(),
        outcome.failure().replace('\n', "\n#   "),
        path.display(),
        s.to_toml()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What a simulation run covers.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// Number of seeds to run.
    pub seeds: u64,
    /// First seed.
    pub start_seed: u64,
    /// Steps per flow are `ticks / 3`.
    pub ticks: u64,
    /// Directory for minimal scenarios of failing seeds.
    pub out: PathBuf,
    /// Do not shrink failing flows (faster).
    pub no_shrink: bool,
    /// Threads running seeds (at least 1). Each seed runs alone on one thread and the results
    /// are reported in seed order, so the report is the same for any number.
    pub jobs: usize,
}

/// Runs the seeds, writing progress (at least every 2 s), each failure with its replay file,
/// and a summary to `report`. Returns the number of failed seeds.
pub fn run(args: &SimulateOptions, report: &mut dyn Write) -> anyhow::Result<u64> {
    let started = Instant::now();
    // Panics are caught and reported per seed; keep the default hook from spamming stderr.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = run_seeds(args, report, started);
    std::panic::set_hook(hook);
    let failed = result?;
    writeln!(report, "{} seeds, {} passed, {} failed", args.seeds, args.seeds - failed, failed)?;
    Ok(failed)
}

fn run_seeds(args: &SimulateOptions, report: &mut dyn Write, started: Instant) -> anyhow::Result<u64> {
    let steps = (args.ticks / 3).max(1);
    let mut failed = 0u64;
    let (mut ticks, mut events) = (0u64, 0usize);
    let (mut model_ticks, mut model_responses) = (0u64, 0u64);
    let mut coverage = Coverage::default();
    let mut last_progress = Instant::now();
    let seeds = args.start_seed..args.start_seed.saturating_add(args.seeds);
    let mut on_outcome = |n: usize, outcome: SeedOutcome| -> anyhow::Result<()> {
        let seed = outcome.seed;
        ticks += outcome.report.ticks;
        model_ticks += outcome.report.model_checked.0;
        model_responses += outcome.report.model_checked.1;
        events += outcome.report.events.values().map(Vec::len).sum::<usize>();
        coverage.add(&outcome.report.transcript);
        if outcome.failed() {
            failed += 1;
            writeln!(report, "FAIL seed {seed}: {}", outcome.failure())?;
            let minimal = if args.no_shrink { outcome.scenario.clone() } else { shrink(&outcome.scenario, 200) };
            let path = write_replay(&args.out, &outcome, &minimal)?;
            writeln!(report, "     replay: roundtable scenario run {}", path.display())?;
        }
        if last_progress.elapsed().as_secs() >= 2 || n as u64 + 1 == args.seeds {
            last_progress = Instant::now();
            writeln!(
                report,
                "simulated {}/{} seeds, {} failed, {} ticks, {} events delivered, {:.1} s ({:.0} events/s)",
                n + 1,
                args.seeds,
                failed,
                ticks,
                events,
                started.elapsed().as_secs_f64(),
                events as f64 / started.elapsed().as_secs_f64().max(1e-9)
            )?;
        }
        Ok(())
    };
    if args.jobs <= 1 {
        let mut reuse = Reuse::default();
        for (n, seed) in seeds.enumerate() {
            on_outcome(n, run_seed_reusing(seed, steps, &mut reuse))?;
        }
    } else {
        in_parallel(seeds, steps, args.jobs, &mut on_outcome)?;
    }
    writeln!(
        report,
        "reference model: {model_ticks} ticks predicted and compared, {model_responses} response codes compared"
    )?;
    coverage.write(report)?;
    Ok(failed)
}

/// Runs `seeds` on `jobs` threads (each takes the next seed not yet taken) and hands every
/// outcome to `on_outcome` on this thread, in seed order, as soon as the ones before it are in.
/// Stops taking seeds once `on_outcome` fails.
fn in_parallel(
    seeds: std::ops::Range<u64>,
    steps: u64,
    jobs: usize,
    on_outcome: &mut dyn FnMut(usize, SeedOutcome) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<SeedOutcome>();
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop, end) = (&next, &stop, seeds.end);
            scope.spawn(move || {
                let mut reuse = Reuse::default();
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end || tx.send(run_seed_reusing(seed, steps, &mut reuse)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Outcomes that arrived before the ones in front of them.
        let mut waiting: BTreeMap<u64, SeedOutcome> = BTreeMap::new();
        let mut due = seeds.start;
        let result = (|| {
            for outcome in rx.iter() {
                waiting.insert(outcome.seed, outcome);
                while let Some(outcome) = waiting.remove(&due) {
                    on_outcome((due - seeds.start) as usize, outcome)?;
                    due += 1;
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_generates_the_same_flow() {
        assert_eq!(generate(7, 50), generate(7, 50));
        assert_ne!(generate(7, 50), generate(8, 50));
    }

    #[test]
    fn generated_flows_are_valid_scenarios_and_survive_toml() {
        for seed in 0..20 {
            let s = generate(seed, 40);
            s.validate().unwrap();
            let back = Scenario::parse(&s.to_toml(), std::path::Path::new("sim.toml")).unwrap();
            assert_eq!(back, s);
        }
    }
}

/// How often each method, error code, event and vote outcome occurred over a simulation run:
/// a rule random flows never reach shows up as a zero.
#[derive(Default, Debug)]
pub struct Coverage {
    pub methods: std::collections::BTreeMap<String, u64>,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub events: std::collections::BTreeMap<String, u64>,
    /// "outcome by resolved_by" of every `vote_resolved` the host saw.
    pub votes: std::collections::BTreeMap<String, u64>,
}

/// The string value of `"key":"…"` in a JSON line, without parsing it.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

impl Coverage {
    /// Counts what one flow's transcript shows (requests `>` and frames `<`).
    pub fn add(&mut self, transcript: &str) {
        let mut host = false;
        for line in transcript.lines() {
            if let Some(handle) = line.strip_prefix("== ") {
                host = handle == "host";
            } else if line.contains(" > {") {
                if let Some(m) = field(line, "\"method\":\"") {
                    *self.methods.entry(m.to_string()).or_default() += 1;
                }
            } else if line.contains(" < {") {
                if let Some(code) = field(line, "\"error\":{\"code\":\"") {
                    *self.errors.entry(code.to_string()).or_default() += 1;
                }
                if let Some(event) = field(line, "\"event\":\"") {
                    *self.events.entry(event.to_string()).or_default() += 1;
                    if event == "vote_resolved" && host {
                        let outcome = field(line, "\"outcome\":\"").unwrap_or("?");
                        let by = field(line, "\"resolved_by\":\"").unwrap_or("?");
                        let by = if by.starts_with('p') { "participant" } else { by };
                        *self.votes.entry(format!("{outcome} by {by}")).or_default() += 1;
                    }
                }
            }
        }
    }

    /// The report: every method and error code of the protocol (zeros included), every event
    /// and vote outcome seen.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let line = |out: &mut dyn Write, title: &str, items: Vec<(String, u64)>| -> std::io::Result<()> {
            let never: Vec<&str> = items.iter().filter(|(_, n)| *n == 0).map(|(k, _)| k.as_str()).collect();
            let seen: Vec<String> = items.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(out, "  {title}: {}", seen.join(", "))?;
            if !never.is_empty() {
                writeln!(out, "  {title} never exercised: {}", never.join(", "))?;
            }
            Ok(())
        };
        writeln!(out, "coverage:")?;
        let methods = crate::protocol::Method::NAMES
            .iter()
            .map(|m| (m.to_string(), self.methods.get(*m).copied().unwrap_or(0)))
            .collect();
        line(out, "methods", methods)?;
        let errors = crate::protocol::ErrorCode::ALL
            .iter()
            .map(|c| {
                let name =
                    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let n = self.errors.get(&name).copied().unwrap_or(0);
                (name, n)
            })
            .collect();
        line(out, "error codes", errors)?;
        line(out, "events", self.events.iter().map(|(k, n)| (k.clone(), *n)).collect())?;
        line(out, "vote outcomes", self.votes.iter().map(|(k, n)| (k.clone(), *n)).collect())?;
        Ok(())
    }
}
