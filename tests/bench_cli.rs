//! `roundtable bench idle` runs end to end against a real `serve` child and reports a result a
//! script can read. (Figures are for docs/PERFORMANCE.md; this test asserts behaviour only.)

use std::process::Command;
use std::sync::Mutex;

/// Runs `roundtable ARGS`, one bench at a time: they measure a real host on a 2-core machine, and
/// several soaks at once would starve each other's hosts into timeouts.
fn roundtable(args: &[&str]) -> std::process::Output {
    let _turn = one_at_a_time();
    Command::new(env!("CARGO_BIN_EXE_roundtable")).args(args).output().expect("run roundtable")
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(text) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Issue 28: a soak killed from outside (SIGKILL: no destructor runs) leaves neither its hosts
/// running nor its 64 MiB tmpfs mounted, and the next bench sweeps its scratch directory away.
#[test]
fn a_killed_storage_fault_soak_leaves_no_host_no_mount_and_no_scratch_dir() {
    use std::io::{BufRead, BufReader};
    let _turn = one_at_a_time();
    let mut soak = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args(["bench", "soak", "--clients", "2", "--seconds", "60", "--kill-every", "300", "--storage-faults"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // `roundtable-bench-soak-PID.` and then random characters (tempfile): found by its PID.
    let scratch = format!("roundtable-bench-soak-{}.", soak.id());
    let mut lines = BufReader::new(soak.stdout.take().unwrap()).lines();
    let kind = lines.next().expect("the soak says how it makes faults").unwrap();
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&scratch))
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "one scratch dir named after the soak's PID: {dirs:?}");
    let dir = dirs[0].clone();
    assert!(dir.file_name().unwrap().len() > scratch.len(), "a random part follows the PID: {dir:?}");
    let full_disk = kind.contains("full disk");
    if !full_disk {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and mounts a tmpfs: {kind}");
    }
    // Once the first kill or fault happened, kill the soak itself.
    let first = lines.next().expect("a first progress line").unwrap();
    assert!(first.contains(" s: "), "{first}");
    assert!(!processes_mentioning(&scratch).is_empty(), "its host runs on its scratch dir");
    soak.kill().unwrap();
    soak.wait().unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_mentioning(&scratch).is_empty() {
        assert!(std::time::Instant::now() < deadline, "hosts left behind: {:?}", processes_mentioning(&scratch));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&scratch), "the tmpfs is still mounted:\n{mounts}");
    assert!(dir.exists(), "SIGKILL leaves the scratch dir until the next bench");
    let out = Command::new(env!("CARGO_BIN_EXE_roundtable")).args(["bench", "history", "--messages", "10"]).output();
    assert!(out.unwrap().status.success());
    assert!(!dir.exists(), "the next bench removed the dead soak's scratch dir");
}

#[test]
fn bench_idle_reports_json_for_a_real_host() {
    let out = roundtable(&["bench", "idle", "--connections", "8", "--insecure", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["connections"], 8);
    assert_eq!(report["tls"], false);
    assert!(report["rss_before_kib"].as_u64().unwrap() > 0, "{report}");
    assert!(report["rss_after_kib"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn bench_idle_join_authenticates_and_joins_every_connection_at_three_head_counts() {
    let out = roundtable(&["bench", "idle", "--join", "--connections", "60", "--insecure", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let counts: Vec<u64> =
        report["joined"].as_array().unwrap().iter().map(|r| r["connections"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![6, 30, 60], "{report}");
}

#[test]
fn insecure_is_refused_where_it_means_nothing() {
    let out = roundtable(&["bench", "fanout", "--insecure"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("applies to `bench idle` and `bench startup`"));
}

#[test]
fn bench_history_pages_every_message_of_a_long_session() {
    let out = roundtable(&["bench", "history", "--messages", "1000", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report["messages"], 1000);
    assert_eq!(report["paged_messages"], 1000, "snapshot + pages = every message: {report}");
    assert_eq!(report["pages"], 4, "200 in the snapshot, then 4 pages of 200: {report}");
    let (size, free) = (report["db_bytes"].as_u64().unwrap(), report["db_free_bytes"].as_u64().unwrap());
    assert!(size > 0 && free < size, "the database's size is measured: {report}");
}

#[test]
fn bench_soak_kills_the_host_and_proves_nothing_acknowledged_was_lost() {
    let out =
        roundtable(&["bench", "soak", "--clients", "3", "--seconds", "4", "--kill-every", "700", "--flaky", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(report["kills"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["cuts"].as_u64().unwrap() >= 1, "the flaky proxy cut connections: {report}");
    let acked = report["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["stored"].as_u64().unwrap(), acked, "{report}");
    assert_eq!(report["delivered"].as_u64().unwrap(), acked * 3, "{report}");
    for zero in ["lost", "duplicated", "undelivered", "delivered_twice", "seq_gaps"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
}

#[test]
fn bench_soak_with_storage_faults_acknowledges_and_shows_only_what_was_stored() {
    let out = roundtable(&[
        "bench",
        "soak",
        "--clients",
        "3",
        "--seconds",
        "5",
        "--kill-every",
        "600",
        "--storage-faults",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(report["fault_windows"].as_u64().unwrap() >= 1, "commits failed for a while: {report}");
    let acked = report["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["stored"].as_u64().unwrap(), acked, "{report}");
    assert_eq!(report["delivered"].as_u64().unwrap(), acked * 3, "{report}");
    for zero in [
        "lost",
        "duplicated",
        "undelivered",
        "delivered_twice",
        "seq_gaps",
        "delivered_unstored",
        "retyped_stored_twice",
    ] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
}

/// Issue 21 (item 8): the host's wall clock stepped back and forward, with restarts between:
/// everyone dropped after a step is gone one (5 s) grace period later, and history stays in time
/// order. (With the restarted engine starting from the wall clock alone, the same soak found 3
/// messages out of order; with its time held at the stored time while the clock was behind, 6
/// of 6 dropped participants never went.)
#[test]
fn bench_soak_with_clock_steps_keeps_grace_periods_and_history_in_time() {
    let out = roundtable(&[
        "bench",
        "soak",
        "--clients",
        "2",
        // Seed 10 draws clock steps for its 1st, 3rd and 4th events (each event waits for a host
        // restart, ~2 s on a debug build): two steps however slowly the host starts. (Seed 1 in
        // 6 s drew its second step only as its 5th event, which a slower start did not reach.)
        "--seed",
        "10",
        "--seconds",
        "8",
        "--kill-every",
        "300",
        "--clock-steps",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let steps = report["clock_steps"].as_u64().unwrap();
    assert!(steps >= 2, "the clock was stepped: {report}");
    assert_eq!(report["dropped"].as_u64().unwrap(), steps, "someone dropped out after every step: {report}");
    let acked = report["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["stored"].as_u64().unwrap(), acked, "{report}");
    for zero in ["lost", "duplicated", "undelivered", "seq_gaps", "dropped_not_gone", "history_out_of_order"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
}

#[test]
fn bench_wire_delivers_every_agent_delta_to_every_client_and_reports_both_sides() {
    let out = roundtable(&["bench", "wire", "--clients", "3", "--sends", "20", "--rate", "100", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report["workload"], "deltas", "agent deltas by default: {report}");
    assert_eq!(report["per_second"], 100, "{report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["roundtable"]["samples"], 60, "{report}");
    assert_eq!(report["reference"]["samples"], 60, "{report}");
    assert_eq!(report["reference_fsync"]["samples"], 60, "{report}");
    assert_eq!(report["rounds"], 3, "three alternating rounds by default: {report}");
    assert!(report["p99_ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["p99_ratio_fsync"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn bench_wire_delivers_every_message_to_every_client_and_reports_both_sides() {
    let out = roundtable(&[
        "bench",
        "wire",
        "--workload",
        "messages",
        "--clients",
        "3",
        "--sends",
        "20",
        "--every-ms",
        "10",
        "--json",
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report["workload"], "messages", "{report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["roundtable"]["samples"], 60, "{report}");
    assert_eq!(report["reference"]["samples"], 60, "{report}");
    assert_eq!(report["reference_fsync"]["samples"], 60, "{report}");
    assert_eq!(report["rounds"], 3, "three alternating rounds by default: {report}");
    assert!(report["p99_ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["p99_ratio_fsync"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn bench_startup_reaches_the_first_page_of_a_stored_history_over_a_real_socket() {
    let out = roundtable(&["bench", "startup", "--messages", "3000", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["measured"]["messages"], 3000, "{report}");
    assert_eq!(report["measured"]["first_page_messages"], 200, "the latest page, not everything: {report}");
    assert_eq!(report["reference"]["first_page_messages"], 1, "{report}");
    let m = &report["measured"];
    assert!(m["listen_ms"].as_f64() <= m["authenticated_ms"].as_f64(), "{report}");
    assert!(m["authenticated_ms"].as_f64() <= m["first_page_ms"].as_f64(), "{report}");
    assert!(m["rss_kib"].as_u64().unwrap() > 0, "{report}");
    // Stopped gracefully and started again: the same first page.
    assert_eq!(report["after_clean_stop"]["first_page_messages"], 200, "{report}");
}

#[test]
fn bench_tick_builds_every_session_with_its_remotes_and_reports_both_worlds() {
    let out = roundtable(&["bench", "tick", "--sessions", "20", "--per-session", "3", "--ticks", "30", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["sessions"], 20, "{report}");
    assert_eq!(report["participants_per_session"], 3, "{report}");
    assert_eq!(report["busy_sessions"], 10, "{report}");
    for key in ["idle_tick_us", "reference_idle_tick_us", "busy_tick_us", "reference_busy_tick_us"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
}

#[test]
fn bench_hostile_keeps_never_reading_clients_cheap_and_reports_both_phases() {
    let out = roundtable(&["bench", "hostile", "--messages", "20", "--clients", "2", "--seconds", "2", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["snapshots_asked"], 80, "{report}");
    assert!(report["big_messages"].as_u64().unwrap() > 0, "{report}");
    let growth = report["rss_during_kib"].as_u64().unwrap().saturating_sub(report["rss_before_kib"].as_u64().unwrap());
    // Behaviour, not timing: 80 queued snapshots of a 640 KB session would be tens of MB; one
    // waiting snapshot per connection is well under this (without it: ~8 MiB per connection).
    assert!(growth < 6 * 1024, "host RSS grew {growth} KiB: {report}");
}

#[test]
fn bench_stream_runs_one_long_turn_and_compares_its_start_with_its_end() {
    let out =
        roundtable(&["bench", "stream", "--megabytes", "1", "--deltas-per-second", "2000", "--clients", "3", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(report["turn_bytes"].as_u64().unwrap() >= 1024 * 1024, "{report}");
    assert_eq!(report["remotes"], 3, "{report}");
    assert!(report["first_tenth_tick_us"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["last_tenth_tick_us"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn bench_mask_streams_deltas_through_the_masker_and_reports_both_sides() {
    let out = roundtable(&["bench", "mask", "--megabytes", "1", "--delta-bytes", "100", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report["delta_bytes"], 100);
    assert!(report["deltas"].as_u64().unwrap() >= 10_000, "{report}");
    assert!(report["secrets"].as_u64().unwrap() > 100, "secrets are planted: {report}");
    assert!(report["masker"]["ns_per_delta"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["reference"]["mb_per_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn bench_auth_resumes_and_pairs_in_both_engines_and_reports_both_sides() {
    let out = roundtable(&["bench", "auth", "--participants", "500", "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report["stored"], 500);
    assert_eq!(report["reference_stored"], 10);
    for key in ["resume_us", "reference_resume_us", "pair_us", "reference_pair_us", "resume_ratio", "pair_ratio"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
}
