//! The LAN, for real and offline: a host started with `serve --lan` in one network namespace is
//! found by `join --nearby` in another, over a veth pair between them — real interfaces, real
//! multicast, and nothing leaves the machine (the namespaces have no other interface).
//!
//! Needs root and `ip` (iproute2), as CI has. Without them the test is skipped — except under
//! `CI=true`, where it fails, so it cannot quietly stop running there. (mDNS over loopback alone
//! would not do: a host bound to loopback is not advertised, and multicast on `lo` is not how a
//! LAN works.)

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netns::Namespaces;
use support::proc::*;

const HOST_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.2";

/// `join --nearby --json` in the client namespace: the hosts it lists, and whether it exited 0.
fn browse(pair: &Namespaces, data: &str) -> (Vec<Value>, bool, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            pair.name(1),
            BIN,
            "--data-dir",
            data,
            "join",
            "--nearby",
            "--nearby-seconds",
            "3",
            "--json",
        ])
        .env_remove("ROUNDTABLE_LINK")
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec runs");
    let hosts = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (hosts, out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_lan_host_is_found_by_join_nearby_in_another_namespace_and_its_link_falls_back_to_the_found_address() {
    // Two namespaces joined by a veth pair: host side 10.77.0.1/24, client side 10.77.0.2/24.
    let made = Namespaces::create(&["rtlan-h", "rtlan-c"])
        .and_then(|n| n.link((0, &format!("{HOST_IP}/24")), (1, &format!("{CLIENT_IP}/24"))).map(|()| n));
    let Some(pair) = Namespaces::or_skip(made) else { return };
    let data = tempfile::tempdir().unwrap();
    let (host_dir, quiet_dir, client_dir) =
        (data.path().join("host"), data.path().join("quiet"), data.path().join("client"));
    for d in [&host_dir, &quiet_dir, &client_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let client_arg = client_dir.display().to_string();

    // `--no-mdns`: on the LAN, but not advertised. Started first, so had it been advertised it
    // would be found no later than the host below.
    let quiet_arg = quiet_dir.display().to_string();
    let mut quiet = Proc::spawn_in_netns(
        "quiet serve",
        pair.name(0),
        &["--data-dir", &quiet_arg, "serve", "--lan", "--no-mdns", "--bind", "127.0.0.1:0"],
        &quiet_dir,
    );
    let banner = quiet.expect_within("the banner", Duration::from_secs(60), |l| l.contains("listening on"));
    let quiet_fp = banner.split("sha256=").nth(1).expect("a fingerprint")[..16].to_string();

    // `--lan`: every interface, the LAN address in links, advertised.
    let host_arg = host_dir.display().to_string();
    let mut serve = Proc::spawn_in_netns(
        "serve --lan",
        pair.name(0),
        &["--data-dir", &host_arg, "serve", "--lan", "--bind", "127.0.0.1:0", "--mint"],
        &host_dir,
    );
    let listening = serve.expect_within("the banner", Duration::from_secs(60), |l| l.contains("listening on"));
    serve.expect("the mDNS note", |l| l.contains("advertised on the LAN by mDNS"));
    let link = serve.expect("the minted link", |l| l.trim().starts_with("roundtable://")).trim().to_string();
    let parsed = roundtable::net::link::Link::parse(&link).expect("a valid link");
    assert_eq!(parsed.host, HOST_IP, "the link names the LAN address first: {link}");
    let port = parsed.port;
    assert_eq!(parsed.also, [("127.0.0.1".to_string(), port)], "then the host's other addresses: {link}");
    assert!(
        listening.contains(&format!("listening on {HOST_IP}:{port} (LAN), 127.0.0.1:{port} (this machine)")),
        "{listening}"
    );
    let (token, fingerprint) = (parsed.token.as_str(), parsed.fingerprint.as_deref().expect("a TLS host"));

    // Found from the other namespace (mDNS probes, then announces: polled, generously).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (found, seen) = loop {
        let (hosts, ok, stderr) = browse(&pair, &client_arg);
        let ours = hosts.iter().find(|h| h["fingerprint_prefix"] == fingerprint[..16]).cloned();
        if let Some(h) = ours {
            assert!(ok, "{stderr}");
            break (h, hosts);
        }
        assert!(Instant::now() < deadline, "no host found by mDNS within 90 s; last try: {hosts:?}\n{stderr}");
    };
    let (hosts, _, _) = browse(&pair, &client_arg);
    for listing in [&seen, &hosts] {
        assert!(
            !listing.iter().any(|h| h["fingerprint_prefix"] == quiet_fp),
            "--no-mdns is not advertised: {listing:?}"
        );
    }
    drop(quiet);
    assert_eq!(found["addresses"], serde_json::json!([format!("{HOST_IP}:{port}")]), "{found}");
    assert_eq!(found["version"], env!("CARGO_PKG_VERSION"), "{found}");
    assert!(!found.to_string().contains(token), "discovery never carries the token: {found}");

    // A link whose own address does not answer (loopback, in the client's namespace) falls back to
    // the nearby host with the same certificate: the token still lets Ann in.
    let unreachable = format!("roundtable://127.0.0.1:{port}/{token}#sha256={fingerprint}");
    let mut ann = Proc::spawn_in_netns(
        "join --nearby",
        pair.name(1),
        &["--data-dir", &client_arg, "join", "--json", "--nearby", "--name", "Ann", &unreachable],
        &client_dir,
    );
    ann.expect_json_within("a session event", Duration::from_secs(90), |v| v["session_id"].is_string());
    ann.expect_stderr("the fallback note", &format!("found the host on the LAN at {HOST_IP}:{port}"));
    drop(ann);

    // A link pinning another certificate finds no nearby host to fall back to.
    let other = format!("roundtable://127.0.0.1:{port}/{token}#sha256={}", "ab".repeat(32));
    let stranger = Proc::spawn_in_netns(
        "join --nearby, other certificate",
        pair.name(1),
        &["--data-dir", &client_arg, "join", "--json", "--nearby", "--name", "Eve", &other],
        &client_dir,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !stranger.stderr.lock().unwrap().contains("no nearby host with the link's certificate answered") {
        assert!(Instant::now() < deadline, "{}", stranger.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stranger);
    drop(serve);
    drop(pair);
}
