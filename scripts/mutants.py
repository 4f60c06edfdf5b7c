#!/usr/bin/env python3
"""Plants one known bug at a time in the engine's rules and reports which check catches it.

For each mutant: apply it to a scratch copy of the repository (`git worktree`, so the working
tree is untouched), build (release), then run (1) `roundtable simulate --seeds 200 --ticks 900 --no-shrink`
and (2) `roundtable scenario run scenarios/`. A mutant is caught by a layer when that layer fails.
A scenario counts as catching a mutant only if it passes on the unmutated tree (a baseline run
comes first). Usage: python3 scripts/mutants.py [--only NAME] [--keep] [--target-dir DIR]
(needs git and cargo; a first build, then about a minute a mutant)
"""
import argparse, os, subprocess, sys, tempfile

# (name, file, original text, planted text). Each original must occur in the file; the first
# occurrence is replaced.
MUTANTS = [
    ("second sender through the turn lock", "crates/engine/src/systems/turn_lock.rs",
     "        if let Some(holder) = &lock.holder {\n            let name = dir",
     "        if let Some(holder) = lock.holder.as_ref().filter(|_| false) {\n            let name = dir"),
    ("approval with a voter still pending", "crates/engine/src/systems/vote_logic.rs",
     "let all = vote.required.iter().all(|p| matches!(vote.ballots.get(p), Some(Ballot::Approve)));",
     "let all = vote.required.iter().any(|p| matches!(vote.ballots.get(p), Some(Ballot::Approve)));"),
    ("no short-circuit on deny", "crates/engine/src/systems/vote_logic.rs",
     "            if !denials.is_empty() {", "            if !denials.is_empty() && ballots.len() == vote.required.len() {"),
    ("empty required set auto-approves", "crates/engine/src/systems/vote_logic.rs",
     "    if vote.required.is_empty() {", "    if false {"),
    ("a gone voter not pruned", "crates/engine/src/systems/vote_prune.rs",
     "departed.read().map(|d| (d.participant.clone(), None)).collect();",
     "departed.read().filter(|_| false).map(|d| (d.participant.clone(), None)).collect();"),
    ("grace halved", "crates/engine/src/systems/presence.rs",
     "Presence::Grace { until: clock.now + config.grace_ms }", "Presence::Grace { until: clock.now + config.grace_ms / 2 }"),
    ("idempotency broken", "crates/engine/src/systems/turn_lock.rs",
     "Some((mid, seq, text)) => Some((mid.clone(), *seq, text.clone())),",
     "Some(_) => None,"),
    ("replay off by one", "crates/engine/src/components/session.rs",
     "filter(|(s, _)| *s > since)", "filter(|(s, _)| *s >= since)"),
    ("forbidden instead of not_found", "crates/engine/src/systems/turn_lock.rs",
     "fx.reply_err(req.conn, &req.id, ErrorCode::NotFound, format!(\"no session {}\", p.session_id));",
     "fx.reply_err(req.conn, &req.id, ErrorCode::Forbidden, format!(\"no session {}\", p.session_id));"),
    ("revoke leaves sockets open", "crates/engine/src/systems/share_lifecycle.rs",
     "                    staged.0.push(Outgoing::Close { conn: c.id, reason: reason.to_string() });",
     "                    let _ = (c.id, reason);"),
    ("rate limit off by one", "crates/engine/src/components/connection.rs",
     "        if self.tokens >= 1.0 {", "        if self.tokens >= 0.0 {"),
    ("symlink check skipped", "crates/engine/src/systems/queries.rs",
     "    if !full.starts_with(&root) {", "    if false {"),
    ("a dropped event", "crates/engine/src/systems/util.rs",
     "    staged.0.push(Outgoing::Session { session: session.clone(), seq, frame });",
     "    if seq % 13 != 0 {\n        staged.0.push(Outgoing::Session { session: session.clone(), seq, frame });\n    }"),
    ("deadline approves", "crates/engine/src/systems/vote_resolve.rs",
     "                    outcome: VoteOutcome::Denied,\n                    reason: Some(\"timed out\".into()),",
     "                    outcome: VoteOutcome::Approved,\n                    reason: Some(\"timed out\".into()),"),
    ("kick leaves the resume token alive", "crates/engine/src/systems/departure.rs",
     "    p.resume_hash = None;", ""),
    ("dropped agent_delta frames", "crates/engine/src/systems/broadcast.rs",
     "                        } else if !remote_text.is_empty() {",
     "                        } else if !remote_text.is_empty() && remote_text.len() % 7 != 3 {"),
    ("observers can send", "crates/engine/src/systems/turn_lock.rs",
     "    if !me.can_write() {\n        return refuse", "    if false {\n        return refuse"),
    ("muted participants can send", "crates/engine/src/systems/turn_lock.rs",
     "    if me.muted {\n        return refuse", "    if false {\n        return refuse"),
    ("room chat refused while the agent works", "crates/engine/src/systems/room_chat.rs",
     "        counters.message += 1;",
     "        if session.status != SessionStatus::Idle {\n            fx.reply_err(req.conn, &req.id, ErrorCode::TurnLocked, \"busy\");\n            continue;\n        }\n        counters.message += 1;"),
    ("max uses off by one", "crates/engine/src/components/share.rs",
     "self.max_uses.is_none_or(|m| self.uses < m)", "self.max_uses.is_none_or(|m| self.uses <= m)"),
    ("the host made a required voter", "crates/engine/src/systems/vote_open.rs",
     "p.role == Role::Participant && p.sessions.contains(&req.session)",
     "p.role != Role::Observer && p.sessions.contains(&req.session)"),
    ("a 1:1 share admits a second person", "crates/engine/src/systems/authenticate.rs",
     "        if !share.collaborative && (!live.is_empty() || fresh_on_share > 0) {",
     "        if false && !share.collaborative && (!live.is_empty() || fresh_on_share > 0) {"),
    ("a restarted engine's clock behind the stored time", "crates/engine/src/clock.rs",
     "EngineClock { anchor_ms: wall_ms.max(floor_ms), started: monotonic }",
     "EngineClock { anchor_ms: wall_ms, started: monotonic }"),
    ("a connection closed as too slow keeps its participant connected", "crates/engine/src/systems/presence.rs",
     "c.auth.owner().cloned()", "c.participant().cloned()"),
]


def which_check(output):
    """Which of the simulator's checks fired first (from its first FAIL line)."""
    line = next((l for l in output.splitlines() if l.startswith("FAIL seed")), "")
    for needle, name in [("reference model", "reference model"), ("invariant", "invariant"),
                         ("store check", "store check"), ("client check", "client check"), ("panic", "panic")]:
        if needle in line:
            return f"{name}, {line.split(':')[0].removeprefix('FAIL ')}"
    return line[:60]


def run(cmd, cwd, env=None):
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch worktree")
    ap.add_argument("--target-dir", help="cargo target dir to reuse between runs")
    args = ap.parse_args()
    repo = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
    scratch = tempfile.mkdtemp(prefix="roundtable-mutants-")
    tree = os.path.join(scratch, "tree")
    run(["git", "worktree", "add", "--detach", tree, "HEAD"], repo).check_returncode()
    shared = os.path.join(os.path.dirname(repo), "shared")
    if os.path.isdir(shared) and not os.path.exists(os.path.join(scratch, "shared")):
        os.symlink(shared, os.path.join(scratch, "shared"))
    target = args.target_dir or os.path.join(scratch, "target")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    binary = os.path.join(target, "release", "roundtable")
    rows = []

    def scenario_failures():
        sc = run([binary, "scenario", "run", "scenarios/"], tree, env)
        return {l.split()[1] for l in sc.stdout.splitlines() if l.startswith("FAIL ")}

    # The helper binaries (fake agents) are needed by some scenarios: build every binary.
    run(["cargo", "build", "--locked", "--quiet", "--release", "--bins", "--examples"], tree, env).check_returncode()
    baseline = scenario_failures()
    if baseline:
        print(f"baseline: {len(baseline)} scenarios fail without any mutant; they are not counted", flush=True)
    try:
        for name, path, old, new in MUTANTS:
            if args.only and args.only not in name:
                continue
            file = os.path.join(tree, path)
            original = open(file).read()
            if old not in original:
                rows.append((name, "not applied (the code changed: update scripts/mutants.py)", "", ""))
                continue
            open(file, "w").write(original.replace(old, new, 1))
            try:
                built = run(["cargo", "build", "--locked", "--quiet", "--release", "--bins", "--examples"], tree, env)
                if built.returncode != 0:
                    rows.append((name, "does not build", "", ""))
                    continue
                sim = run([binary, "simulate", "--seeds", "200", "--ticks", "900", "--no-shrink", "--out", scratch], tree, env)
                caught_sim = f"caught ({which_check(sim.stdout)})" if sim.returncode != 0 else "missed"
                fails = sorted(scenario_failures() - baseline)
                caught_sc = f"caught ({len(fails)}: {', '.join(fails[:2])}{', …' if len(fails) > 2 else ''})" if fails else "missed"
                rows.append((name, "applied", caught_sim, caught_sc))
                print(f"{name}: simulate {caught_sim}; scenarios {caught_sc}", flush=True)
            finally:
                open(file, "w").write(original)
    finally:
        if not args.keep:
            run(["git", "worktree", "remove", "--force", tree], repo)
    print("\n| planted bug | simulate (200 seeds × 300 steps) | scenarios |\n|---|---|---|")
    for name, state, sim, sc in rows:
        print(f"| {name} | {sim or state} | {sc} |")


if __name__ == "__main__":
    sys.exit(main())
