//! Through NAT, for real and offline: a host and a remote in two network namespaces with no route
//! between them, and a local iroh relay (`crates/testbins/examples/relay_server.rs`, the
//! `iroh_relay` server as `iroh-relay --dev` runs it) in a third that both reach but that forwards
//! nothing (IP forwarding off). The only way from the remote to the host is through the relay:
//! join, chat, a vote, a relay restart with the same participant carrying on, and a link pinning
//! another endpoint key refused.
//!
//! ```text
//!   host ns 10.78.1.2 ── 10.78.1.1  relay ns  10.78.2.1 ── 10.78.2.2 client ns
//! ```
//!
//! Needs root and `ip` (iproute2), as CI has; skipped without them except under `CI=true`.

mod support;

use roundtable::net::link::Link;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::netns::{ip, Namespaces};
use support::proc::*;

const HOST_IP: &str = "10.78.1.2";
const RELAY_HOST_SIDE: &str = "10.78.1.1";
const RELAY_CLIENT_SIDE: &str = "10.78.2.1";
const CLIENT_IP: &str = "10.78.2.2";
const RELAY_PORT: u16 = 3340;

/// The relay process in its namespace; killed on drop.
struct Relay(Child);

impl Relay {
    fn start(nets: &Namespaces) -> Relay {
        let bin = roundtable::scenario::agents::find_bin("relay_server")
            .expect("the relay server is built (cargo build --examples -p roundtable-testbins)");
        let mut child = Command::new("ip")
            .args(["netns", "exec", nets.name(1)])
            .arg(bin)
            .arg(format!("0.0.0.0:{RELAY_PORT}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("relay listening on"), "the relay says where it listens: {first:?}");
        Relay(child)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn three_hosts() -> Result<Namespaces, String> {
    let nets = Namespaces::create(&["rtrel-h", "rtrel-r", "rtrel-c"])?;
    nets.link((0, &format!("{HOST_IP}/24")), (1, &format!("{RELAY_HOST_SIDE}/24")))?;
    nets.link((1, &format!("{RELAY_CLIENT_SIDE}/24")), (2, &format!("{CLIENT_IP}/24")))?;
    ip(&["-n", nets.name(0), "route", "add", "default", "via", RELAY_HOST_SIDE])?;
    ip(&["-n", nets.name(2), "route", "add", "default", "via", RELAY_CLIENT_SIDE])?;
    // A new namespace does not forward (net.ipv4.ip_forward=0): say so rather than trust it.
    let forward = Command::new("ip")
        .args(["netns", "exec", nets.name(1), "sysctl", "-n", "net.ipv4.ip_forward"])
        .output()
        .map_err(|e| format!("sysctl: {e}"))?;
    let forward = String::from_utf8_lossy(&forward.stdout).trim().to_string();
    if forward != "0" {
        return Err(format!("the relay namespace forwards packets (ip_forward={forward})"));
    }
    Ok(nets)
}

#[test]
fn a_remote_with_no_route_to_the_host_joins_chats_and_votes_through_a_local_relay_and_survives_its_restart() {
    let Some(nets) = Namespaces::or_skip(three_hosts()) else { return };
    let data = tempfile::tempdir().unwrap();
    let (host_dir, client_dir) = (data.path().join("host"), data.path().join("client"));
    for d in [&host_dir, &client_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let relay = Relay::start(&nets);
    let relay_url = format!("http://{RELAY_HOST_SIDE}:{RELAY_PORT}");

    let host_arg = host_dir.display().to_string();
    let bind = format!("{HOST_IP}:7447");
    let args = ["--data-dir", &host_arg, "serve", "--bind", &bind, "--no-mdns", "--relay", &relay_url, "--mint"];
    let mut serve = Proc::spawn_in_netns("serve --relay", nets.name(0), &args, &host_dir);
    let reachable =
        serve.expect_within("the relay line", Duration::from_secs(60), |l| l.contains("reachable from anywhere"));
    assert!(reachable.contains(&format!("through the relay {relay_url}/")), "{reachable}");
    let text = serve.expect("the minted link", |l| l.trim().starts_with("roundtable://")).trim().to_string();
    let link = Link::parse(&text).expect("a valid link");
    let iroh = link.iroh.clone().expect("the link names the host's iroh endpoint");
    assert_eq!(iroh.relay.as_deref(), Some(format!("{relay_url}/").as_str()), "and its relay: {text}");
    assert_eq!((link.host.as_str(), link.port), (HOST_IP, 7447), "the direct address first: {text}");
    let serve_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host_dir.join("serve.json")).unwrap()).unwrap();
    assert_eq!(serve_json["iroh"], iroh.id.as_str(), "serve.json names the endpoint, for `share mint`");

    // The remote cannot reach 10.78.1.2 (the relay namespace does not forward): only the relay.
    let client_arg = client_dir.display().to_string();
    let mut ann = Proc::spawn_in_netns(
        "join through the relay",
        nets.name(2),
        &["--data-dir", &client_arg, "join", "--json", "--name", "Ann", &text],
        &client_dir,
    );
    let snapshot = ann.expect_json_within("Ann's snapshot", Duration::from_secs(90), |v| is_event(v, "snapshot"));
    assert!(snapshot["session_id"].is_string());
    ann.expect_stderr("how Ann is connected", &format!("the host's iroh endpoint, relayed through {relay_url}/"));

    // Chat.
    ann.send("hello through the relay");
    ann.expect_json("Ann's message", |v| is_event(v, "message") && v["payload"]["text"] == "hello through the relay");
    let reply =
        ann.expect_json("the agent's reply", |v| is_event(v, "message") && v["payload"]["author_id"] == "agent");
    assert!(reply["payload"]["text"].as_str().unwrap().contains("hello through the relay"), "{reply}");
    ann.expect_json("the end of the turn", |v| is_event(v, "turn_ended"));

    // A vote: Ann's plan, Ann's approval (the host's console decides too; consensus needs both).
    ann.send("/plan cross the NAT");
    let opened = ann.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    assert_eq!(opened["payload"]["kind"], "plan");
    ann.send("/approve");
    serve.send("/approve");
    let resolved = ann.expect_json("the outcome", |v| is_event(v, "vote_resolved"));
    assert_eq!(resolved["payload"]["outcome"], "approved", "{resolved}");
    ann.expect_json("the end of the turn", |v| is_event(v, "turn_ended"));

    // The relay restarts. Ann carries on as the same participant: the connection survives the
    // outage or join reconnects through the relay and resumes.
    drop(relay);
    let relay = Relay::start(&nets);
    ann.send("after the relay came back");
    let after = ann.expect_json_within("Ann's message after the restart", Duration::from_secs(120), |v| {
        is_event(v, "message") && v["payload"]["text"] == "after the relay came back"
    });
    assert_eq!(after["payload"]["author_id"], "p1", "still Ann, not a new participant: {after}");
    assert!(
        !ann.stderr.lock().unwrap().contains("you are back as a new participant"),
        "{}",
        ann.stderr.lock().unwrap()
    );
    ann.send("/quit");
    assert!(ann.wait(), "join leaves cleanly");

    // A link pinning another endpoint key reaches nobody through the relay: refused, never
    // connected to something else.
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger_key = roundtable::net::relay::load_or_create_key(elsewhere.path()).unwrap().public().to_string();
    let wrong = Link {
        iroh: Some(roundtable::net::link::IrohAddr { id: stranger_key, relay: iroh.relay.clone() }),
        ..link.clone()
    };
    let mut eve = Proc::spawn_in_netns(
        "join, another endpoint key",
        nets.name(2),
        &["--data-dir", &client_arg, "join", "--json", "--name", "Eve", &wrong.to_string()],
        &client_dir,
    );
    assert!(!eve.wait_within(Duration::from_secs(60)), "join fails");
    let stderr = eve.stderr.lock().unwrap().clone();
    assert!(stderr.contains(&format!("cannot reach {HOST_IP}:7447")), "{stderr}");
    assert!(stderr.contains(&format!("through the relay {relay_url}/")), "the relay attempt is named: {stderr}");
    assert!(!eve.json_seen().iter().any(|v| is_event(v, "snapshot")), "Eve saw nothing");
    drop(relay);
    drop(serve);
}
