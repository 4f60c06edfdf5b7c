//! End to end over real sockets: a host (engine thread, TLS WebSocket server, SQLite file in a
//! temp dir) on a free loopback port, and remotes connecting through share links.

mod support;

use futures_util::{SinkExt, StreamExt};
use roundtable::net::client::{self, Client, ClientError};
use roundtable::protocol::*;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn auth(token: &str, name: &str) -> Method {
    Method::Authenticate(AuthenticateParams { token: token.into(), display_name: name.into(), resume_token: None })
}

const WRONG_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

// ---- pairing and access ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_unauthenticated() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let (c, _events) = Client::connect(&link).await.unwrap();
    assert_eq!(code(c.request(Method::ListSessions(ListSessionsParams::default())).await), ErrorCode::Unauthenticated);
    assert_eq!(code(c.request(auth(WRONG_TOKEN, "Eve")).await), ErrorCode::Unauthenticated);
    // The right token still works afterwards on a new connection.
    remote(&link, "Ann").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_fingerprint_is_refused_with_a_clear_message() {
    let h = TestHost::start().await;
    let (mut link, _) = h.mint(|_| {}).await;
    let real = link.fingerprint.clone().unwrap();
    link.fingerprint = Some("ab".repeat(32));
    match Client::connect(&link).await {
        Err(e @ ClientError::FingerprintMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("certificate fingerprint mismatch"), "{text}");
            assert!(text.contains(&"ab".repeat(32)) && text.contains(&real), "{text}");
            assert!(text.contains("someone is intercepting"), "{text}");
        }
        Err(other) => panic!("expected a fingerprint mismatch, got {other}"),
        Ok(_) => panic!("a mismatched fingerprint must not connect"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_attempts_then_rate_limited_even_with_the_right_token() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    for _ in 0..5 {
        let (c, _e) = Client::connect(&link).await.unwrap();
        assert_eq!(code(c.request(auth(WRONG_TOKEN, "Eve")).await), ErrorCode::Unauthenticated);
    }
    let (c, _e) = Client::connect(&link).await.unwrap();
    assert_eq!(code(c.request(auth(&link.token, "Eve")).await), ErrorCode::RateLimited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_connection_is_closed_after_the_auth_timeout() {
    let h = TestHost::start_with(|o| o.engine.auth_timeout_ms = 300).await;
    let (link, _) = h.mint(|_| {}).await;
    let (c, events) = Client::connect(&link).await.unwrap();
    let mut r = Remote { client: c, events, me: "none".into(), resume_token: String::new(), link, seen: vec![] };
    let started = std::time::Instant::now();
    let (closing, _) = r.expect_closed().await;
    assert_eq!(closing.as_deref(), Some("auth_timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outside_the_share_are_not_found() {
    let h = TestHost::start().await;
    let (w2, s2) = h.add_workspace("beta").await;
    let (link, _) = h.mint(|_| {}).await; // only the first workspace
    let ann = remote(&link, "Ann").await;
    let list: ListSessionsResult = ann.client.call(Method::ListSessions(ListSessionsParams::default())).await.unwrap();
    assert_eq!(list.sessions.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![h.session.clone()]);
    let join = ann.client.request(Method::JoinSession(JoinSessionParams { session_id: s2.clone(), since_seq: None }));
    assert_eq!(code(join.await), ErrorCode::NotFound);
    let in_w2 = ann.client.request(Method::ListSessions(ListSessionsParams { workspace_id: Some(w2) }));
    assert_eq!(code(in_w2.await), ErrorCode::NotFound);
    let read =
        ann.client.request(Method::ReadWorkspaceFile(ReadFileParams { session_id: s2.clone(), path: "x".into() }));
    assert_eq!(code(read.await), ErrorCode::NotFound);
    let send = ann.say(&s2, "hi").await;
    assert_eq!(code(send), ErrorCode::NotFound);
    // Unknown and out-of-scope look the same.
    let missing =
        ann.client.request(Method::JoinSession(JoinSessionParams { session_id: "s999".into(), since_seq: None }));
    assert_eq!(code(missing.await), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_can_read_but_not_send() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|p| p.role = Role::Observer).await;
    let obs = remote(&link, "Olga").await;
    let joined = obs.join(&h.session, None).await;
    assert_eq!(joined.session.id, h.session);
    assert_eq!(code(obs.say(&h.session, "let me talk").await), ErrorCode::Forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_share_closes_its_live_sockets_and_the_token_fails_like_a_wrong_one() {
    let h = TestHost::start().await;
    let (link, minted) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    h.call::<Value>(Method::RevokeShare(ShareRef { share_id: minted.share.share_id.clone() })).await;
    let (closing, _) = ann.expect_closed().await;
    assert_eq!(closing.as_deref(), Some("revoked"));

    let (c, _e) = Client::connect(&link).await.unwrap();
    let revoked = c.request(auth(&link.token, "Ann")).await.unwrap_err();
    let wrong = c.request(auth(WRONG_TOKEN, "Ann")).await.unwrap_err();
    assert_eq!(revoked.code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(revoked.to_string(), wrong.to_string(), "a revoked share fails exactly like a wrong token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicking_closes_the_socket_and_kills_the_resume_token() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    h.call::<Value>(Method::Kick(KickParams { participant_id: ann.me.clone(), revoke_share: false })).await;
    let (closing, _) = ann.expect_closed().await;
    assert_eq!(closing.as_deref(), Some("kicked"));

    // The resume token no longer names anyone: without a valid share token it is refused, and
    // with one it makes a new participant, never the kicked one.
    let mut bogus = link.clone();
    bogus.token = WRONG_TOKEN.into();
    let refused = resume(&bogus, "Ann", &ann.resume_token).await;
    assert_eq!(code(refused.map(|(_, a)| a)), ErrorCode::Unauthenticated);
    let (_, again) = resume(&link, "Ann", &ann.resume_token).await.unwrap();
    assert!(!again.resumed);
    assert_ne!(again.participant_id, ann.me);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_share_closes_its_live_sockets() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|p| p.expires_in_ms = Some(400)).await;
    let mut ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    let (closing, _) = ann.expect_closed().await;
    assert_eq!(closing.as_deref(), Some("expired"));
    let (c, _e) = Client::connect(&link).await.unwrap();
    assert_eq!(code(c.request(auth(&link.token, "Ann")).await), ErrorCode::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refuses_the_old_token_but_keeps_live_sockets() {
    let h = TestHost::start().await;
    let (link, minted) = h.mint(|_| {}).await;
    let ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    let rotated: MintShareResult =
        h.call(Method::RotateShare(ShareRef { share_id: minted.share.share_id.clone() })).await;
    assert_ne!(rotated.token, link.token);

    let (c, _e) = Client::connect(&link).await.unwrap();
    assert_eq!(code(c.request(auth(&link.token, "Bob")).await), ErrorCode::Unauthenticated);
    let mut new_link = link.clone();
    new_link.token = rotated.token.clone();
    remote(&new_link, "Bob").await;
    // Ann's live socket still works.
    let sent = ann.say(&h.session, "still here").await.unwrap();
    assert!(sent.seq > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_loopback_host_speaks_plain_websocket_with_insecure_links() {
    let h = TestHost::start_with(|o| o.insecure = true).await;
    assert_eq!(h.host.fingerprint, None);
    let (link, _) = h.mint(|_| {}).await;
    assert!(link.to_string().ends_with("#insecure"), "{link}");
    let ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    ann.say(&h.session, "plain text on loopback").await.unwrap();
}

// ---- frames ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_many_times_the_read_buffer_arrives_whole_over_tls() {
    // The server reads in small steps (ServerOptions::read_buffer_bytes, 4 KiB, so idle
    // connections stay cheap); a message close to the 32 KiB text limit must still arrive whole.
    assert!(roundtable::net::server::ServerOptions::default().read_buffer_bytes <= 8 * 1024);
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let ann = remote(&link, "Ann").await;
    let mut bob = remote(&link, "Bob").await;
    ann.join(&h.session, None).await;
    bob.join(&h.session, None).await;
    let text: String = (0..31 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    ann.say(&h.session, &text).await.unwrap();
    let got =
        bob.expect("Ann's long message", |f| matches!(&f.body, Event::Message(m) if m.author_name == "Ann")).await;
    let Event::Message(m) = got.body else { unreachable!() };
    assert_eq!(m.text, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_gets_frame_too_large_and_the_connection_keeps_working() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    let big = json!({"id": 1, "method": "ping", "params": {"nonce": "x".repeat(70 * 1024)}}).to_string();
    ann.client.send_raw(big).unwrap();
    let resp = ann.expect_response().await;
    assert_eq!(resp["error"]["code"], "frame_too_large", "{resp}");
    let pong: PingResult = ann.client.call(Method::Ping(PingParams { nonce: Some("n".into()) })).await.unwrap();
    assert_eq!(pong.nonce.as_deref(), Some("n"));

    // Far beyond the limit the socket itself is closed (with a close frame).
    let huge = json!({"id": 2, "method": "ping", "params": {"nonce": "x".repeat(2 * 1024 * 1024)}}).to_string();
    ann.client.send_raw(huge).unwrap();
    let (_, close_reason) = ann.expect_closed().await;
    assert_eq!(close_reason.as_deref(), Some("message too big"));
    // The host is fine.
    remote(&link, "Bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_unknown_methods_get_typed_errors_and_everything_keeps_working() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    ann.client.send_raw("{nope".into()).unwrap();
    assert_eq!(ann.expect_response().await["error"]["code"], "bad_frame");
    ann.client.send_raw(json!({"id": 5, "method": "explode"}).to_string()).unwrap();
    let resp = ann.expect_response().await;
    assert_eq!((resp["id"].clone(), resp["error"]["code"].clone()), (json!(5), json!("unknown_method")));
    ann.client.send_raw(json!({"id": 6, "method": "send_message", "params": {"session_id": 1}}).to_string()).unwrap();
    assert_eq!(ann.expect_response().await["error"]["code"], "invalid_params");
    ann.client.send_raw("[1,2,3]".into()).unwrap();
    assert_eq!(ann.expect_response().await["error"]["code"], "bad_frame");

    ann.join(&h.session, None).await;
    ann.say(&h.session, "fine").await.unwrap();
    let bob = remote(&link, "Bob").await;
    bob.join(&h.session, None).await;
}

// ---- presence --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_with_one_resume_token_are_one_participant() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    let (mut ann2, auth2) = resume(&link, "Ann", &ann.resume_token).await.unwrap();
    assert!(auth2.resumed);
    assert_eq!(auth2.participant_id, ann.me);
    let joined = ann2.join(&h.session, None).await;
    let rows: Vec<_> = joined.roster.iter().filter(|r| r.display_name.starts_with("Ann")).collect();
    assert_eq!(rows.len(), 1, "one roster row for both connections: {:?}", joined.roster);
    assert!(rows[0].you);

    // Closing one connection leaves the participant connected (no "reconnecting").
    ann.client.close();
    let bob = remote(&link, "Bob").await;
    let seen_by_bob = bob.join(&h.session, None).await;
    assert!(seen_by_bob.roster.iter().any(|r| r.participant_id == ann.me && r.presence == PresenceState::Connected));
    ann2.say(&h.session, "from the second tab").await.unwrap();
    ann2.expect("my message", |f| matches!(&f.body, Event::Message(m) if m.text == "from the second tab")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_within_grace_keeps_the_turn_and_the_ballot() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    let mut bob = remote(&link, "Bob").await;
    ann.join(&h.session, None).await;
    bob.join(&h.session, None).await;

    ann.say(&h.session, "/plan refactor the parser").await.unwrap();
    let opened = bob.expect("the plan vote", |f| matches!(f.body, Event::VoteOpened(_))).await;
    let Event::VoteOpened(vote) = opened.body else { unreachable!() };
    assert_eq!(vote.required, {
        let mut v = vec![ann.me.clone(), bob.me.clone()];
        v.sort();
        v
    });
    ann.client
        .call::<Value>(Method::VotePlan(VotePlanParams {
            vote_id: vote.vote_id.clone(),
            approve: true,
            reason: None,
            always: false,
        }))
        .await
        .unwrap();
    bob.expect("Ann's ballot", |f| matches!(&f.body, Event::VoteProgress(p) if p.approved == vec![ann.me.clone()]))
        .await;

    // Ann's connection drops; she comes back with her resume token.
    ann.client.close();
    ann.expect_closed().await;
    bob.expect("Ann reconnecting", |f| {
        matches!(&f.body, Event::PresenceChanged(p) if p.participant_id == ann.me && p.presence == PresenceState::Reconnecting)
    })
    .await;
    let last = *ann.seqs(&h.session).last().unwrap_or(&0);
    let (ann2, auth2) = resume(&link, "Ann", &ann.resume_token).await.unwrap();
    assert!(auth2.resumed);
    assert_eq!(auth2.participant_id, ann.me);
    ann2.join(&h.session, Some(last)).await;

    let sessions: ListSessionsResult =
        bob.client.call(Method::ListSessions(ListSessionsParams::default())).await.unwrap();
    assert_eq!(sessions.sessions[0].turn_holder.as_ref(), Some(&ann.me), "Ann still holds the turn");

    // Bob's approval completes the vote: Ann's ballot survived her reconnect.
    bob.client
        .call::<Value>(Method::VotePlan(VotePlanParams {
            vote_id: vote.vote_id.clone(),
            approve: true,
            reason: None,
            always: false,
        }))
        .await
        .unwrap();
    let resolved = bob.expect("the outcome", |f| matches!(f.body, Event::VoteResolved(_))).await;
    let Event::VoteResolved(outcome) = resolved.body else { unreachable!() };
    assert_eq!(outcome.outcome, VoteOutcome::Approved);
}

// ---- delivery --------------------------------------------------------------------------------

/// A raw WebSocket client whose reading the test controls (the library client always reads).
struct RawWs {
    write: futures_util::stream::SplitSink<client::WsStream, Message>,
    read: futures_util::stream::SplitStream<client::WsStream>,
    next_id: u64,
}

impl RawWs {
    async fn connect(h: &TestHost, link: &roundtable::net::link::Link, recv_buffer: u32) -> RawWs {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(recv_buffer).unwrap();
        let tcp = sock.connect(h.host.local_addr).await.unwrap();
        let ws = client::handshake(tcp, link).await.unwrap();
        let (write, read) = ws.split();
        RawWs { write, read, next_id: 0 }
    }

    async fn send(&mut self, method: Method) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.write.send(Message::text(Request { id: id.clone(), method }.to_frame())).await.unwrap();
        id
    }

    async fn next(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.read.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads until the response to `id`, collecting events on the way.
    async fn until_response(&mut self, id: &Value, events: &mut Vec<Value>) -> Value {
        loop {
            let v = self.next().await;
            if v.get("event").is_some() {
                events.push(v);
            } else if &v["id"] == id {
                return v;
            }
        }
    }
}

/// What a client shows of one session, built only from frames, checking continuity as it goes.
#[derive(Default)]
struct View {
    session: String,
    last_seq: u64,
    /// (message id, first two words of the text)
    messages: Vec<(String, String)>,
    resync: Option<u64>,
    /// From the last snapshot: the seq of its first message, and whether older ones exist.
    oldest: Option<u64>,
    has_older: bool,
}

impl View {
    fn apply(&mut self, v: &Value) {
        if v["session_id"] != json!(self.session) {
            return;
        }
        let payload = &v["payload"];
        let short = |m: &Value| m["text"].as_str().unwrap().split(' ').take(2).collect::<Vec<_>>().join(" ");
        match v["event"].as_str() {
            Some("snapshot") => {
                self.last_seq = payload["last_seq"].as_u64().unwrap();
                let msgs = payload["messages"].as_array().unwrap();
                self.messages = msgs.iter().map(|m| (m["message_id"].to_string(), short(m))).collect();
                self.oldest = msgs.first().map(|m| m["seq"].as_u64().unwrap());
                self.has_older = payload["has_older"].as_bool().unwrap();
            }
            Some("resync_required") => self.resync = Some(payload["last_seq"].as_u64().unwrap()),
            Some(event) => {
                if let Some(seq) = v["seq"].as_u64() {
                    assert_eq!(seq, self.last_seq + 1, "{event}: a gap or a duplicate after seq {}", self.last_seq);
                    self.last_seq = seq;
                    if event == "message" {
                        self.messages.push((payload["message_id"].to_string(), short(payload)));
                    }
                }
            }
            None => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_resync_required_then_catches_up_with_nothing_lost_or_duplicated() {
    let h = TestHost::start_with(|o| {
        o.server.send_buffer_bytes = Some(4096);
        o.server.write_buffer_bytes = 0;
    })
    .await;
    let (link, _) = h.mint(|_| {}).await;
    let mut slow = RawWs::connect(&h, &link, 4096).await;
    let mut view = View { session: h.session.to_string(), ..View::default() };
    let mut early = Vec::new();
    let id = slow.send(auth(&link.token, "Sloth")).await;
    slow.until_response(&id, &mut early).await;
    let id = slow.send(Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None })).await;
    slow.until_response(&id, &mut early).await;
    loop {
        let v = slow.next().await;
        view.apply(&v);
        if v["event"] == "snapshot" {
            break;
        }
    }

    // The slow client stops reading while the host talks a lot.
    const N: usize = 150;
    let filler = "y".repeat(1000);
    h.flood(N, |i| format!("flood {i} {filler}")).await;
    let info: ListSessionsResult = h.call(Method::ListSessions(ListSessionsParams::default())).await;
    let final_seq = info.sessions.iter().find(|s| s.id == h.session).unwrap().last_seq;

    // Reading again: what was queued arrives in order, then resync_required.
    while view.resync.is_none() {
        view.apply(&slow.next().await);
    }
    assert_eq!(view.resync, Some(view.last_seq), "resync_required names the last seq delivered");
    assert!(view.last_seq < final_seq, "the slow client must actually have fallen behind");

    // Catch up from the last seq seen (replayed events or a snapshot, as the host decides).
    let since = view.last_seq;
    slow.send(Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: Some(since) })).await;
    while view.last_seq < final_seq {
        view.apply(&slow.next().await);
    }
    // A snapshot carries the latest page; the rest comes page by page.
    while view.has_older {
        let before = view.oldest.expect("a snapshot with older messages has a first one");
        let params = FetchHistoryParams { session_id: h.session.clone(), before_seq: Some(before), limit: Some(50) };
        let id = slow.send(Method::FetchHistory(params)).await;
        let page = slow.until_response(&id, &mut early).await;
        let page = &page["result"];
        let msgs = page["messages"].as_array().unwrap();
        let short = |m: &Value| m["text"].as_str().unwrap().split(' ').take(2).collect::<Vec<_>>().join(" ");
        let older: Vec<(String, String)> = msgs.iter().map(|m| (m["message_id"].to_string(), short(m))).collect();
        view.messages.splice(0..0, older);
        view.oldest = msgs.first().map(|m| m["seq"].as_u64().unwrap());
        view.has_older = page["has_older"].as_bool().unwrap();
    }
    let ids: std::collections::BTreeSet<&String> = view.messages.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), view.messages.len(), "no message twice");
    let floods: Vec<&str> = view.messages.iter().map(|(_, t)| t.as_str()).filter(|t| t.starts_with("flood ")).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("flood {i}")).collect();
    assert_eq!(floods, expected, "every message exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_host_resumes_clients_with_no_gap_and_no_duplicate() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let session = h.session.clone();
    let mut ann = remote(&link, "Ann").await;
    let mut bob = remote(&link, "Bob").await;
    ann.join(&session, None).await;
    bob.join(&session, None).await;
    ann.say(&session, "before the crash").await.unwrap();
    bob.expect("the agent's reply", |f| matches!(f.body, Event::TurnEnded(_))).await;

    let (dir, addr, temp) = h.kill().await;
    bob.expect_closed().await;
    ann.expect_closed().await;
    let h = TestHost::restart_on(dir, addr, temp).await;
    assert_eq!(h.session, session);

    let bob_last = *bob.seqs(&session).last().unwrap();
    let (mut bob2, auth) = resume(&link, "Bob", &bob.resume_token).await.unwrap();
    assert!(auth.resumed, "Bob keeps his identity across the restart");
    assert_eq!(auth.participant_id, bob.me);
    bob2.join(&session, Some(bob_last)).await;
    let ann_last = *ann.seqs(&session).last().unwrap();
    let (ann2, _) = resume(&link, "Ann", &ann.resume_token).await.unwrap();
    ann2.join(&session, Some(ann_last)).await;
    ann2.say(&session, "after the restart").await.unwrap();
    bob2.expect("the new message", |f| matches!(&f.body, Event::Message(m) if m.text == "after the restart")).await;

    let mut all = bob.seqs(&session);
    all.extend(bob2.seqs(&session));
    let first = all[0];
    assert_eq!(
        all,
        (first..first + all.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate: {:?} then {:?}",
        names(&bob.seen),
        names(&bob2.seen)
    );
    let texts: Vec<String> = bob
        .seen
        .iter()
        .chain(&bob2.seen)
        .filter_map(|f| match &f.body {
            Event::Message(m) if m.author_id != "agent" => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["before the crash", "after the restart"]);
}

// ---- keepalive and WebSocket-level errors ------------------------------------------------------

async fn ping(r: &Remote) -> Result<PingResult, ClientError> {
    r.client.call::<PingResult>(Method::Ping(PingParams { nonce: None })).await
}

/// Waits (up to [`WAIT`] of real time) until the host's own connection receives an event that
/// `pred` accepts; returns it.
async fn host_sees(h: &mut TestHost, what: &str, pred: impl Fn(&EventFrame) -> bool) -> EventFrame {
    within(what, async {
        loop {
            match h.events.recv().await {
                Some(client::ClientEvent::Event { frame, .. }) if pred(&frame) => return *frame,
                Some(_) => {}
                None => panic!("the host's connection ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// After the test moved tokio's clock on: lets the connection tasks whose timers came due run
/// (the runtime runs them while the test waits), then makes sure the engine handled whatever
/// they told it, and that the events that came of it reached the host's own connection: each
/// round trip of that connection is handled in a later tick than the one before it, and its
/// answer comes after everything that tick sent.
async fn settle(h: &TestHost) {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    for _ in 0..4 {
        let _: PingResult =
            within("a round trip of the host's connection", h.call(Method::Ping(PingParams { nonce: None }))).await;
    }
}

fn quick_keepalive() -> roundtable::net::keepalive::Keepalive {
    roundtable::net::keepalive::Keepalive {
        every: Duration::from_millis(100),
        silent_after: Duration::from_millis(350),
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_answering_pings_is_disconnected_and_enters_grace() {
    // Tokio's clock is held: the host's 100 ms pings and 350 ms silence limit count only the
    // time the test moves on, so a slow machine cannot make anyone look silent. (That a client
    // answering pings and sending nothing else stays connected is proven over an in-memory pipe,
    // where time is exact: `server::tests` in crates/net.)
    let _clock = hold_clock();
    let h = within("the host", TestHost::start_with(|o| o.server.keepalive = quick_keepalive())).await;
    let (link, _) = within("a share", h.mint(|_| {})).await;
    let mut watcher = within("the watcher", remote(&link, "Wes")).await;
    within("the watcher's join", watcher.join(&h.session, None)).await;
    // A raw client that authenticates and joins, then never reads again: no pongs leave it.
    let mut silent = within("Sid", RawWs::connect(&h, &link, 64 * 1024)).await;
    let mut seen = Vec::new();
    let id = silent.send(auth(&link.token, "Sid")).await;
    let authed = within("Sid's authentication", silent.until_response(&id, &mut seen)).await;
    let me = authed["result"]["participant_id"].as_str().unwrap().to_string();
    let id =
        silent.send(Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None })).await;
    within("Sid's join", silent.until_response(&id, &mut seen)).await;

    // Both were last heard at this moment. 100 ms on, the host pings both; the watcher answers
    // and asks something, so it was last heard then.
    tokio::time::advance(Duration::from_millis(100)).await;
    within("the watcher's ping", ping(&watcher)).await.expect("the watcher is connected");
    // At 350 ms Sid has been silent for the limit: disconnected, and its grace period starts.
    // The watcher, heard 250 ms ago, is not.
    tokio::time::advance(Duration::from_millis(250)).await;
    let went = within(
        "Sid's grace period",
        watcher.expect("Sid's grace period", |f| {
            matches!(&f.body, Event::PresenceChanged(p) if p.participant_id.as_str() == me && p.presence == PresenceState::Reconnecting)
        }),
    )
    .await;
    assert!(went.seq.is_some());
    // A client that is heard from stays connected meanwhile, for many silence limits.
    for _ in 0..10 {
        within("the watcher's ping", ping(&watcher)).await.expect("the watcher is still connected");
        tokio::time::advance(Duration::from_millis(300)).await;
    }
    within("the watcher's last ping", ping(&watcher)).await.expect("the watcher is still connected");
}

#[tokio::test(start_paused = true)]
async fn the_client_gives_up_on_a_host_that_stops_answering() {
    // Tokio's clock is held while connecting (see `hold_clock`), then let go: with nothing else
    // to do, the runtime moves it from one of the client's timers to the next, so the client's
    // silence limit comes at exactly its time, however slow the machine.
    let clock = hold_clock();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A "host" that completes the handshake and then never reads (so never answers a ping).
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
    });
    let link = roundtable::net::link::Link::new("127.0.0.1", addr.port(), "t", None);
    let ws = within("the handshake", client::connect_ws(&link)).await.unwrap();
    let started = tokio::time::Instant::now();
    let (_client, mut events) = Client::over_with(ws, quick_keepalive());
    drop(clock);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(client::ClientEvent::Closed { reason }) => return reason,
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("closed within the silence limit");
    assert_eq!(closed.as_deref(), Some("the host stopped answering"));
    assert_eq!(started.elapsed(), quick_keepalive().silent_after, "closed at the silence limit");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_gets_close_1007_with_a_reason() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let mut raw = RawWs::connect(&h, &link, 64 * 1024).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    raw.write.send(Message::Frame(bad)).await.unwrap();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match raw.read.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame");
    let close = close.expect("with a code");
    assert_eq!(close.code, CloseCode::Invalid);
    assert!(close.reason.as_str().contains("UTF-8"), "{close:?}");
    remote(&link, "Ok").await; // the host is fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_while_the_host_is_idle_is_noticed_without_anyone_writing() {
    let skip = roundtable::app::host::TimeSkip::default();
    let h = TestHost::start_with(|o| o.time_skip = skip.clone()).await;
    let (link, _) = h.mint(|_| {}).await;
    let mut ann = remote(&link, "Ann").await;
    ann.join(&h.session, None).await;
    std::fs::remove_file(h.dir.join("roundtable.db")).unwrap();
    // Nobody sends anything: the host's idle check finds the file gone (within about a second)
    // and tells everyone, instead of acknowledging the next message into an unlinked file.
    let told = ann.expect("the storage event", |f| matches!(&f.body, Event::Storage(s) if !s.available)).await;
    let Event::Storage(status) = &told.body else { unreachable!() };
    assert!(status.message.contains("was deleted while the host was running"), "{status:?}");
    let refused = ann.say(&h.session, "into the void?").await;
    assert_eq!(code(refused), ErrorCode::StorageUnavailable);
    // Putting a file back at the path does not make the host write into the wrong file, not
    // even once it tried the store again (at most once a second of engine time, which the test
    // skips instead of waiting for: a request handled after the skip is handled after a retry).
    std::fs::write(h.dir.join("roundtable.db"), b"").unwrap();
    skip.skip(Duration::from_millis(roundtable::engine::systems::persist_tick::RETRY_AFTER_MS + 100));
    let _: ListSessionsResult = h.call(Method::ListSessions(ListSessionsParams::default())).await;
    assert_eq!(code(ann.say(&h.session, "still refused").await), ErrorCode::StorageUnavailable);
}

// ---- flow control and silence timing ---------------------------------------------------------

/// What a raw client reads next, WebSocket pings and pongs skipped (tungstenite answers pings).
enum Read {
    Text(Value),
    /// The connection ended: how (a close frame, an error, the end of the stream).
    Ended(String),
}

async fn read_text(read: &mut futures_util::stream::SplitStream<client::WsStream>) -> Read {
    loop {
        match tokio::time::timeout(WAIT, read.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Read::Text(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(frame)))) => return Read::Ended(format!("close frame {frame:?}")),
            Ok(other) => return Read::Ended(format!("{other:?}")),
            Err(_) => panic!("nothing from the host for {WAIT:?}"),
        }
    }
}

/// Reads text frames until the response to `id`; events go to `view`, responses to other
/// requests (their ids) to `answered`.
async fn read_until_response(
    read: &mut futures_util::stream::SplitStream<client::WsStream>,
    id: &Value,
    view: &mut View,
    answered: &mut Vec<Value>,
) -> Value {
    loop {
        match read_text(read).await {
            Read::Text(v) if v.get("event").is_some() => view.apply(&v),
            Read::Text(v) if &v["id"] == id => return v,
            Read::Text(v) => answered.push(v["id"].clone()),
            Read::Ended(how) => panic!("the connection ended ({how}) while waiting for the response to {id}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_but_keeps_sending_is_not_silent_and_gets_resync_required() {
    // The host pings every 100 ms and gives up on a client silent for 1 s. This client stops
    // reading for three times that (a small receive buffer, so the host's writes block at once)
    // while it sends a chat line every 100 ms: it is heard all along, so it must not be closed
    // as silent; it falls behind, so it must get resync_required (§7.6). Tokio's clock is held
    // (see `hold_clock`): those 3 s pass as the test moves it on, 100 ms after each line reached
    // the host, so a slow machine cannot make the client look silent.
    let _clock = hold_clock();
    let keepalive = roundtable::net::keepalive::Keepalive {
        every: Duration::from_millis(100),
        silent_after: Duration::from_millis(1000),
    };
    let mut h = within(
        "the host",
        TestHost::start_with(|o| {
            o.server.send_buffer_bytes = Some(4096);
            o.server.write_buffer_bytes = 0;
            o.server.keepalive = keepalive;
        }),
    )
    .await;
    // The host's own connection watches the lines arrive.
    within(
        "the host's join",
        h.call::<Value>(Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None })),
    )
    .await;
    let (link, _) = within("a share", h.mint(|_| {})).await;
    let RawWs { mut write, mut read, .. } = within("the client", RawWs::connect(&h, &link, 4096)).await;
    let mut view = View { session: h.session.to_string(), ..View::default() };
    let mut answered = Vec::new();
    let request = |id: &str, method: Method| Message::text(Request { id: json!(id), method }.to_frame());
    write.send(request("auth", auth(&link.token, "Sloth"))).await.unwrap();
    within("the authentication", read_until_response(&mut read, &json!("auth"), &mut view, &mut answered)).await;
    let join = Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None });
    write.send(request("join", join)).await.unwrap();
    within("the join", read_until_response(&mut read, &json!("join"), &mut view, &mut answered)).await;
    within("the snapshot", async {
        loop {
            match read_text(&mut read).await {
                Read::Text(v) => {
                    view.apply(&v);
                    if v["event"] == "snapshot" {
                        break;
                    }
                }
                Read::Ended(how) => panic!("the connection ended ({how}) before the snapshot"),
            }
        }
    })
    .await;

    // From here on it does not read; it keeps sending.
    const N: usize = 150;
    let filler = "y".repeat(1000);
    within("the flood", h.flood(N, |i| format!("flood {i} {filler}"))).await;
    let info: ListSessionsResult =
        within("the sessions", h.call(Method::ListSessions(ListSessionsParams::default()))).await;
    let final_seq = info.sessions.iter().find(|s| s.id == h.session).unwrap().last_seq;
    let stalled = tokio::time::Instant::now();
    let mut sent = Vec::new();
    while stalled.elapsed() < keepalive.silent_after * 3 {
        tokio::time::advance(Duration::from_millis(100)).await;
        let id = format!("keep-{}", sent.len());
        let text = format!("still here {}", sent.len());
        let line = SendMessageParams { session_id: h.session.clone(), text: text.clone(), client_msg_id: id.clone() };
        if let Err(e) = within("a line to go out", write.send(request(&id, Method::SendChat(line)))).await {
            panic!("the host dropped a client that kept sending, after {:?}: {e}", stalled.elapsed());
        }
        sent.push(json!(id));
        let what =
            format!("the host to hear line {} ({:?} after the client stopped reading)", sent.len(), stalled.elapsed());
        host_sees(&mut h, &what, |f| matches!(&f.body, Event::Chat(m) if m.text == text)).await;
    }
    let not_reading = stalled.elapsed();

    // Reading again: what was queued arrives in order, then resync_required — no close.
    within("resync_required", async {
        while view.resync.is_none() {
            match read_text(&mut read).await {
                Read::Text(v) if v.get("event").is_some() => view.apply(&v),
                Read::Text(v) => answered.push(v["id"].clone()),
                Read::Ended(how) => panic!(
                    "closed ({how}) before resync_required, after {not_reading:?} without reading but sending \
                     every 100 ms (silence limit {:?})",
                    keepalive.silent_after
                ),
            }
        }
    })
    .await;
    assert_eq!(view.resync, Some(view.last_seq), "resync_required names the last seq delivered");
    assert!(view.last_seq < final_seq, "the client must actually have fallen behind");

    // Every request it sent while not reading was read and answered (responses are never dropped),
    // and the connection still works: rejoining catches up.
    let rejoin =
        Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: Some(view.last_seq) });
    if let Err(e) = write.send(request("rejoin", rejoin)).await {
        panic!("the host dropped a client that kept sending: {e}");
    }
    let joined = within("the rejoin", read_until_response(&mut read, &json!("rejoin"), &mut view, &mut answered)).await;
    assert!(joined.get("result").is_some(), "{joined}");
    assert_eq!(answered, sent, "one answer per request, in order");
    assert!(sent.len() >= 20, "it kept sending while it did not read ({} requests)", sent.len());
    within("the catch-up", async {
        while view.last_seq < final_seq {
            match read_text(&mut read).await {
                Read::Text(v) => view.apply(&v),
                Read::Ended(how) => panic!("the connection ended ({how}) while catching up"),
            }
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_at_the_limit_after_its_last_frame_not_at_a_later_ping() {
    // Pings every second, silence limit 1.2 s. The client's last frame follows a ping at once;
    // checked only at ping times, it was closed at the second ping after it, ~2 s later. Tokio's
    // clock is held (see `hold_clock`): the test moves it to just before the limit, then to it.
    let _clock = hold_clock();
    let keepalive = roundtable::net::keepalive::Keepalive {
        every: Duration::from_millis(1000),
        silent_after: Duration::from_millis(1200),
    };
    let mut h = within("the host", TestHost::start_with(|o| o.server.keepalive = keepalive)).await;
    let (link, _) = within("a share", h.mint(|_| {})).await;
    // The host's own connection watches (it is in-process: no keepalive of its own to miss).
    within(
        "the host's join",
        h.call::<Value>(Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None })),
    )
    .await;
    let RawWs { mut write, mut read, .. } = within("the client", RawWs::connect(&h, &link, 64 * 1024)).await;
    let (mut view, mut answered) = (View::default(), Vec::new());
    let request = |id: &str, method: Method| Message::text(Request { id: json!(id), method }.to_frame());
    write.send(request("auth", auth(&link.token, "Sid"))).await.unwrap();
    let authed =
        within("the authentication", read_until_response(&mut read, &json!("auth"), &mut view, &mut answered)).await;
    let me = authed["result"]["participant_id"].as_str().unwrap().to_string();
    let join = Method::JoinSession(JoinSessionParams { session_id: h.session.clone(), since_seq: None });
    write.send(request("join", join)).await.unwrap();
    within("the join", read_until_response(&mut read, &json!("join"), &mut view, &mut answered)).await;

    // At the host's first ping, the client answers with one last frame (tungstenite sends the
    // pong with it), then says nothing more and reads nothing more (reading would answer later
    // pings).
    tokio::time::advance(keepalive.every).await;
    within("the host's ping", async {
        loop {
            match read.next().await {
                Some(Ok(Message::Ping(_))) => break,
                Some(Ok(_)) => continue,
                other => panic!("expected the host's ping, got {other:?}"),
            }
        }
    })
    .await;
    let last_words =
        SendMessageParams { session_id: h.session.clone(), text: "last words".into(), client_msg_id: "last".into() };
    write.send(request("last", Method::SendChat(last_words))).await.unwrap();
    host_sees(&mut h, "the last frame", |f| matches!(&f.body, Event::Chat(m) if m.text == "last words")).await;
    let gone = |f: &EventFrame| matches!(&f.body, Event::PresenceChanged(p) if p.participant_id.as_str() == me && p.presence == PresenceState::Reconnecting);

    // Just before the limit it is still there (the next ping, at 2 s, came and went unanswered).
    tokio::time::advance(keepalive.silent_after - Duration::from_millis(1)).await;
    settle(&h).await;
    while let Ok(event) = h.events.try_recv() {
        if let client::ClientEvent::Event { frame, .. } = event {
            assert!(
                !gone(&frame),
                "closed before the limit, {:?} after its last frame",
                keepalive.silent_after - Duration::from_millis(1)
            );
        }
    }
    // At the limit it is gone, not at a later ping (the clock stops there).
    tokio::time::advance(Duration::from_millis(1)).await;
    host_sees(&mut h, "Sid to go", gone).await;
    drop((write, read));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closed_as_too_slow_is_let_go_after_the_silence_limit_even_while_it_keeps_sending() {
    // §7.6: a connection that does not even read its responses is closed (`too_slow`); its
    // close frame waits behind what it has not read. A client that keeps sending but never
    // reads must not hold its socket for ever: once it has not taken them within the silence
    // limit (§1.4), the host drops the connection, and the client's sends start failing.
    let keepalive = roundtable::net::keepalive::Keepalive {
        every: Duration::from_millis(100),
        silent_after: Duration::from_millis(500),
    };
    let h = TestHost::start_with(|o| {
        o.server.send_buffer_bytes = Some(4096);
        o.server.write_buffer_bytes = 0;
        o.server.queue_bytes = 64 * 1024;
        o.server.keepalive = keepalive;
        o.engine.outbox_max_bytes = 64 * 1024;
    })
    .await;
    let (link, _) = h.mint(|_| {}).await;
    let RawWs { mut write, mut read, .. } = RawWs::connect(&h, &link, 4096).await;
    let (mut view, mut answered) = (View::default(), Vec::new());
    let request = |id: &str, method: Method| Message::text(Request { id: json!(id), method }.to_frame());
    write.send(request("auth", auth(&link.token, "Sloth"))).await.unwrap();
    read_until_response(&mut read, &json!("auth"), &mut view, &mut answered).await;

    // It never reads again, and asks for a 32 KiB answer every 100 ms until a send fails:
    // 128 KiB of answers waiting (twice `outbox_max_bytes`) is too slow.
    let stalled = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        let nonce = "n".repeat(32 * 1024);
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let mut sent = 0;
        loop {
            every.tick().await;
            sent += 1;
            let ping = request(&format!("big-{sent}"), Method::Ping(PingParams { nonce: Some(nonce.clone()) }));
            if let Err(e) = write.send(ping).await {
                return (sent, e);
            }
        }
    });
    let (sent, error) = tokio::time::timeout(WAIT, sender)
        .await
        .expect("the host still holds the socket of a client that never reads, because it keeps sending")
        .unwrap();
    // Closed after ~6 answers (~0.6 s), dropped 0.5 s later: far less than WAIT.
    let held = stalled.elapsed();
    assert!(held < WAIT / 2, "dropped only after {held:?} ({sent} requests, then {error})");
    drop(read);
}
