//! The desktop window: view-model rules (events → state) and rendering checked headlessly with
//! egui_kittest through the AccessKit tree (no GPU, no display).

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use roundtable::ids::{ParticipantId, SessionId, VoteId, WorkspaceId};
use roundtable::protocol::*;
use roundtable::ui::app::{RoundtableApp, Tab};
use roundtable::ui::model::*;
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn ev(frame: serde_json::Value) -> Update {
    Update::Event(Box::new(serde_json::from_value(frame).expect("a valid event frame")))
}

fn roster(you: &str) -> serde_json::Value {
    let row = |id: &str, name: &str, role: &str| {
        let mut r =
            json!({"participant_id": id, "display_name": name, "role": role, "muted": false, "presence": "connected"});
        if id == you {
            r["you"] = json!(true);
        }
        r
    };
    json!([row("host", "Host", "host"), row("p1", "Ann", "participant"), row("p2", "Bob", "participant")])
}

fn session_info(last_seq: u64) -> serde_json::Value {
    json!({"id": "s1", "workspace_id": "w1", "title": "Fix login", "status": "idle", "turn_holder": null,
           "participant_count": 3, "agent": "demo", "last_seq": last_seq})
}

/// Updates that put a window into session s1 (Host, Ann p1, Bob p2) as `me`, up to seq 4.
fn joined_as(me: &str, name: &str, role: Role) -> Vec<Update> {
    vec![
        Update::Identity { me: me.into(), name: name.into(), role },
        Update::Connection(ConnectionState::Connected),
        Update::Workspaces(vec![WorkspaceInfo {
            id: WorkspaceId::from("w1"),
            name: "api".into(),
            agent: "demo".into(),
            agent_detail: None,
        }]),
        Update::Sessions(vec![serde_json::from_value(session_info(4)).unwrap()]),
        Update::Joined(
            serde_json::from_value(
                json!({"session": session_info(4), "roster": roster(me), "you": me, "catch_up": "snapshot"}),
            )
            .unwrap(),
        ),
        ev(
            json!({"event": "snapshot", "session_id": "s1", "payload": {"session": session_info(4), "roster": roster(me),
            "messages": [], "votes": [], "last_seq": 4}}),
        ),
    ]
}

fn ann_takes_the_turn() -> Vec<Update> {
    vec![
        ev(json!({"event": "message", "session_id": "s1", "seq": 5, "payload": {"message_id": "m1", "author_id": "p1",
            "author_name": "Ann", "text": "/plan login fix", "client_msg_id": "c-1"}})),
        ev(
            json!({"event": "turn_started", "session_id": "s1", "seq": 6, "payload": {"turn_id": 1, "holder_id": "p1", "holder_name": "Ann"}}),
        ),
    ]
}

fn plan_vote() -> Vec<Update> {
    vec![
        ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v1", "kind": "plan",
            "plan": "1. Read the code\n2. Fix it", "decided_by": "consensus", "required": ["p1", "p2"]}})),
        ev(
            json!({"event": "vote_progress", "session_id": "s1", "seq": 8, "payload": {"vote_id": "v1", "required": ["p1", "p2"],
            "approved": ["p1"], "denied": [], "answered": [], "pending": ["p2"]}}),
        ),
    ]
}

fn model_with(updates: Vec<Update>, is_host: bool) -> ViewModel {
    let mut m = ViewModel::new(is_host);
    for u in updates {
        m.apply(u);
    }
    m
}

fn s1() -> SessionId {
    SessionId::from("s1")
}

#[test]
fn turn_held_by_someone_else_locks_the_composer_naming_the_holder() {
    let m = model_with([joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat(), false);
    assert_eq!(m.composer_lock(), Some(ComposerLock::WaitingFor("Ann".into())));
    assert_eq!(m.composer_lock().unwrap().text(), "Waiting for Ann — chat with the room");
    assert!(!m.can_cancel(), "only the holder or the host may cancel");

    let host = model_with([joined_as("host", "Host", Role::Host), ann_takes_the_turn()].concat(), true);
    assert!(host.can_cancel(), "the host may cancel anyone's turn");

    let ann = model_with([joined_as("p1", "Ann", Role::Participant), ann_takes_the_turn()].concat(), false);
    assert_eq!(
        ann.composer_lock(),
        Some(ComposerLock::OwnTurn),
        "while the agent works on Ann's prompt she may talk to the room, not prompt again"
    );
    assert!(ann.can_cancel());
}

#[test]
fn streamed_agent_text_is_replaced_by_the_final_message_and_the_turn_end_unlocks() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(
        json!({"event": "agent_delta", "session_id": "s1", "payload": {"turn_id": 1, "text": "You said: he"}}),
    ));
    updates.push(ev(json!({"event": "agent_delta", "session_id": "s1", "payload": {"turn_id": 1, "text": "llo"}})));
    let mut m = model_with(updates, false);
    assert_eq!(m.sessions[&s1()].streaming, "You said: hello");
    m.apply(ev(json!({"event": "message", "session_id": "s1", "seq": 7, "payload": {"message_id": "m2",
        "author_id": "agent", "author_name": "Agent", "text": "You said: hello"}})));
    let s = &m.sessions[&s1()];
    assert_eq!(s.streaming, "");
    assert!(
        matches!(s.timeline.last(), Some(Entry::Message(msg)) if msg.message.text == "You said: hello" && msg.message.author_id == "agent")
    );
    m.apply(ev(json!({"event": "turn_ended", "session_id": "s1", "seq": 8, "payload": {"turn_id": 1, "holder_id": "p1", "reason": "completed"}})));
    assert_eq!(m.composer_lock(), None);
    assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().status, SessionStatus::Idle);
}

#[test]
fn plan_card_shows_who_approved_who_is_pending_and_the_deny_reason() {
    let mut m =
        model_with([joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn(), plan_vote()].concat(), false);
    let card = m.sessions[&s1()].votes[&VoteId::from("v1")].clone();
    assert_eq!(card.approved(), &[ParticipantId::from("p1")]);
    assert_eq!(card.pending(), vec![ParticipantId::from("p2")]);
    assert!(m.can_vote(&card), "Bob is a required voter");
    assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().status, SessionStatus::AwaitingVote);

    // (A replayed seq never reaches the model: the backend's ClientSession drops it, see
    // tests/ui_host_e2e.rs.)
    m.apply(ev(json!({"event": "vote_progress", "session_id": "s1", "seq": 9, "payload": {"vote_id": "v1",
        "required": ["p1", "p2"], "approved": ["p1"], "denied": ["p2"], "answered": [], "pending": []}})));
    m.apply(ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 10, "payload": {"vote_id": "v1",
        "outcome": "denied", "reason": "Bob: needs tests", "resolved_by": "consensus"}})));
    let card = &m.sessions[&s1()].votes[&VoteId::from("v1")];
    assert_eq!(card.denied(), &[ParticipantId::from("p2")]);
    let resolved = card.resolved.as_ref().expect("resolved");
    assert_eq!(resolved.reason.as_deref(), Some("Bob: needs tests"));
    assert!(!m.can_vote(card), "a resolved vote takes no ballots");
}

#[test]
fn question_card_keeps_the_options_and_late_joiners_cannot_vote() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(
        json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v2", "kind": "question",
        "questions": [{"question": "Go ahead with the migration?", "options": ["yes", "no"]}],
        "decided_by": "consensus", "required": ["p1"]}}),
    ));
    let m = model_with(updates, false);
    let card = &m.sessions[&s1()].votes[&VoteId::from("v2")];
    match &card.opened.subject {
        VoteSubject::Question { questions } => assert_eq!(questions[0].options, vec!["yes", "no"]),
        other => panic!("expected a question, got {other:?}"),
    }
    assert!(!m.can_vote(card), "Bob is not in the required set");
    let host = model_with(
        [
            joined_as("host", "Host", Role::Host),
            ann_takes_the_turn(),
            vec![ev(json!({"event": "vote_opened",
            "session_id": "s1", "seq": 7, "payload": {"vote_id": "v2", "kind": "question",
            "questions": [{"question": "Go?", "options": []}], "decided_by": "consensus", "required": ["p1"]}}))],
        ]
        .concat(),
        true,
    );
    assert!(host.can_vote(&host.sessions[&s1()].votes[&VoteId::from("v2")]), "the host may always decide");
}

#[test]
fn roster_tracks_reconnecting_muted_and_departures() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(ev(json!({"event": "presence_changed", "session_id": "s1", "seq": 5, "payload": {"participant_id": "p1", "presence": "reconnecting", "connections": 0}})));
    updates.push(ev(json!({"event": "participant_muted", "session_id": "s1", "seq": 6, "payload": {"participant_id": "p2", "muted": true}})));
    let mut m = model_with(updates, true);
    let s = &m.sessions[&s1()];
    assert_eq!(s.roster[&ParticipantId::from("p1")].presence, PresenceState::Reconnecting);
    assert!(s.roster[&ParticipantId::from("p2")].muted);
    m.apply(ev(json!({"event": "participant_left", "session_id": "s1", "seq": 7, "payload": {"participant_id": "p1", "reason": "gone"}})));
    let s = &m.sessions[&s1()];
    assert!(!s.roster.contains_key(&ParticipantId::from("p1")));
    assert_eq!(s.info.as_ref().unwrap().participant_count, 2);
    assert!(matches!(s.timeline.last(), Some(Entry::Note(n)) if n == "Ann left (gone)"));
}

#[test]
fn a_muted_participant_and_an_observer_cannot_type() {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    updates.push(ev(json!({"event": "participant_muted", "session_id": "s1", "seq": 5, "payload": {"participant_id": "p2", "muted": true}})));
    let m = model_with(updates, false);
    assert_eq!(m.composer_lock(), Some(ComposerLock::Muted));
    let o = model_with(joined_as("p2", "Bob", Role::Observer), false);
    assert_eq!(o.composer_lock(), Some(ComposerLock::Observer));
}

#[test]
fn history_replaced_drops_the_messages_and_refetches_a_snapshot() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(json!({"event": "history_replaced", "session_id": "s1", "seq": 7, "payload": {"reason": "cleared by the host"}})));
    let m = model_with(updates, false);
    assert!(m.sessions[&s1()].timeline.is_empty());
    assert!(!m.sessions[&s1()].loaded, "it waits for the snapshot the backend fetches (tests/ui_host_e2e.rs)");
}

#[test]
fn lobby_lists_waiting_people_until_admitted_or_refused() {
    let lobby = |id: &str, admission: &str| {
        ev(
            json!({"event": "lobby", "payload": {"participant_id": id, "display_name": "Dan", "share_id": "sh2", "admission": admission}}),
        )
    };
    let mut m = model_with(vec![lobby("p4", "pending"), lobby("p5", "pending")], true);
    assert_eq!(m.lobby.len(), 2);
    m.apply(lobby("p4", "admitted"));
    m.apply(lobby("p5", "refused"));
    assert!(m.lobby.is_empty());
}

// ------------------------------------------------------------------------------------------
// Rendering (egui_kittest, AccessKit queries)
// ------------------------------------------------------------------------------------------

struct Window {
    harness: Harness<'static, RoundtableApp>,
    actions: UnboundedReceiver<Action>,
    updates: std::sync::mpsc::Sender<Update>,
}

impl Window {
    fn new(is_host: bool, updates: Vec<Update>) -> Window {
        Window::over(ViewModel::new(is_host), updates, egui::vec2(1400.0, 1000.0))
    }

    /// A window of `size` over `model`, after `updates`.
    fn over(model: ViewModel, updates: Vec<Update>, size: egui::Vec2) -> Window {
        let (actions_tx, actions) = unbounded_channel();
        let (updates_tx, updates_rx) = std::sync::mpsc::channel();
        for u in updates {
            updates_tx.send(u).unwrap();
        }
        let app = RoundtableApp::new(model, actions_tx, updates_rx);
        let harness = Harness::builder().with_size(size).build_ui_state(
            |ui, app: &mut RoundtableApp| {
                app.pump();
                app.show(ui);
            },
            app,
        );
        let mut w = Window { harness, actions, updates: updates_tx };
        w.settle();
        w
    }

    fn settle(&mut self) {
        self.harness.run_steps(3);
    }

    fn push(&mut self, update: Update) {
        self.updates.send(update).unwrap();
        self.settle();
    }

    fn click(&mut self, label: &str) {
        self.harness.get_by_label(label).click();
        self.settle();
    }

    /// Protocol requests sent so far, except the ones the window makes on its own (read
    /// markers and "typing"); other actions are skipped.
    fn calls(&mut self) -> Vec<Method> {
        self.all_calls().into_iter().filter(|m| !matches!(m, Method::MarkRead(_) | Method::Typing(_))).collect()
    }

    /// The host accepts the messages among `calls` (the composer lets go of their text).
    fn accept(&mut self, calls: &[Method]) {
        for m in calls {
            if let Method::SendMessage(p) | Method::SendChat(p) = m {
                self.push(Update::Sent { client_msg_id: p.client_msg_id.clone() });
            }
        }
    }

    /// Every protocol request sent so far.
    fn all_calls(&mut self) -> Vec<Method> {
        let mut out = Vec::new();
        while let Ok(a) = self.actions.try_recv() {
            if let Action::Call(m) = a {
                out.push(m);
            }
        }
        out
    }
}

use eframe::egui;

#[test]
fn composer_offers_the_room_while_someone_else_holds_the_turn() {
    let mut w = Window::new(false, [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat());
    let waiting = "Waiting for Ann — chat with the room";
    assert!(w.harness.query_by_label(waiting).is_some(), "the composer names the holder and offers the room");
    assert!(w.harness.query_by_label("Cancel turn").is_none(), "Bob cannot cancel Ann's turn");
    assert!(w.harness.query_by_label("To the agent").is_none(), "no prompt while Ann holds the turn");
    w.calls();
    w.harness.state_mut().composer = "wait, don't touch the migrations".into();
    w.settle();
    w.click("Send");
    let calls = w.calls();
    assert!(
        matches!(&calls[..], [Method::SendChat(p)] if p.session_id == s1() && p.text == "wait, don't touch the migrations"),
        "mid-turn the composer talks to the room: {calls:?}"
    );
    w.push(ev(json!({"event": "turn_ended", "session_id": "s1", "seq": 7, "payload": {"turn_id": 1, "holder_id": "p1", "reason": "completed"}})));
    assert!(w.harness.query_by_label(waiting).is_none());
    assert!(w.harness.query_by_label("To the agent").is_some(), "the switch is back once the turn is free");
}

#[test]
fn the_composer_switch_sends_to_the_agent_or_to_the_room() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.calls();
    let send = |w: &mut Window, text: &str| {
        w.harness.state_mut().composer = text.into();
        w.settle();
        w.click("Send");
        let calls = w.calls();
        w.accept(&calls);
        calls
    };
    assert!(matches!(&send(&mut w, "fix the bug")[..], [Method::SendMessage(p)] if p.text == "fix the bug"));
    w.click("To the room");
    assert!(matches!(&send(&mut w, "coffee?")[..], [Method::SendChat(p)] if p.text == "coffee?"));
    w.click("To the agent");
    assert!(matches!(&send(&mut w, "and the tests")[..], [Method::SendMessage(_)]));
    // Room chat shows in the timeline, marked as such.
    w.push(ev(json!({"event": "chat", "session_id": "s1", "seq": 5, "payload": {"message_id": "m9",
        "author_id": "p1", "author_name": "Ann", "text": "coffee!", "room": true}})));
    assert!(w.harness.query_by_label("coffee!").is_some());
    assert!(w.harness.query_by_label("to the room").is_some(), "room chat is marked");
}

#[test]
fn own_messages_are_marked_you() {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    updates.push(ev(json!({"event": "message", "session_id": "s1", "seq": 5, "payload": {"message_id": "m1",
        "author_id": "p2", "author_name": "Bob", "text": "hi from bob", "client_msg_id": "x-1"}})));
    let w = Window::new(false, updates);
    assert!(w.harness.query_by_label("hi from bob").is_some());
    // One "(you)" on Bob's roster row and one on his message.
    assert_eq!(w.harness.query_all_by_label("(you)").count(), 2);
}

#[test]
fn clicking_approve_on_a_plan_card_sends_vote_plan() {
    let mut w =
        Window::new(false, [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn(), plan_vote()].concat());
    assert!(w.harness.query_by_label("Approved: Ann").is_some());
    assert!(w.harness.query_by_label("Pending: Bob").is_some());
    w.calls();
    w.click("Approve");
    assert_eq!(
        w.calls(),
        vec![Method::VotePlan(VotePlanParams {
            vote_id: VoteId::from("v1"),
            approve: true,
            reason: None,
            always: false
        })]
    );
}

#[test]
fn clicking_an_option_of_a_single_question_sends_answer_question() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(
        json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v2", "kind": "question",
        "questions": [{"question": "Go ahead with the migration?", "options": ["yes", "no"]}],
        "decided_by": "consensus", "required": ["p1", "p2"]}}),
    ));
    let mut w = Window::new(false, updates);
    w.calls();
    w.click("no");
    assert_eq!(
        w.calls(),
        vec![Method::AnswerQuestion(AnswerQuestionParams { vote_id: VoteId::from("v2"), answers: vec!["no".into()] })],
        "one click on an option answers a single question (issue 26 item 5)"
    );
}

#[test]
fn host_roster_has_kick_and_mute_for_remotes_and_the_remote_roster_has_none() {
    let mut host = Window::new(true, joined_as("host", "Host", Role::Host));
    // Ann and Bob get moderation buttons; the host's own row does not.
    assert_eq!(host.harness.query_all_by_label("Kick").count(), 2);
    assert_eq!(host.harness.query_all_by_label("Mute").count(), 2);
    host.calls();
    host.harness.get_all_by_label("Kick").next().unwrap().click();
    host.settle();
    assert!(host.calls().is_empty(), "a kick waits for confirmation");
    assert!(host.harness.query_by_label("Kick Ann? Their link still works.").is_some());
    host.click("Keep them");
    assert!(host.calls().is_empty(), "and can be called off");
    host.harness.get_all_by_label("Kick").next().unwrap().click();
    host.settle();
    host.click("Yes, kick");
    assert_eq!(
        host.calls(),
        vec![Method::Kick(KickParams { participant_id: ParticipantId::from("p1"), revoke_share: false })]
    );

    host.harness.get_all_by_label("Kick and revoke link").nth(1).unwrap().click();
    host.settle();
    assert!(host
        .harness
        .query_by_label("Kick Bob and revoke their link? Everyone who has that link loses it.")
        .is_some());
    host.click("Yes, kick");
    assert_eq!(
        host.calls(),
        vec![Method::Kick(KickParams { participant_id: ParticipantId::from("p2"), revoke_share: true })],
        "the second row (Bob) is kicked and his share revoked"
    );

    let remote = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    assert_eq!(remote.harness.query_all_by_label("Kick").count(), 0);
    assert_eq!(remote.harness.query_all_by_label("Kick and revoke link").count(), 0);
    assert_eq!(remote.harness.query_all_by_label("Mute").count(), 0);
    assert!(remote.harness.query_by_label("Shares").is_none(), "no share manager for remotes");
}

#[test]
fn share_manager_mint_sends_the_chosen_settings_and_then_shows_the_link_once() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(Update::Workspaces(vec![
        WorkspaceInfo { id: WorkspaceId::from("w1"), name: "api".into(), agent: "demo".into(), agent_detail: None },
        WorkspaceInfo { id: WorkspaceId::from("w2"), name: "web".into(), agent: "demo".into(), agent_detail: None },
    ]));
    let mut w = Window::new(true, updates);
    w.click("Shares");
    assert_eq!(w.harness.state().tab, Tab::Shares);
    assert!(w.harness.state().mint.workspaces[&WorkspaceId::from("w1")], "the shown session's workspace is ticked");
    w.click("api");
    w.click("web");
    w.click("Admission required (lobby)");
    w.click("Consensus required");
    w.harness.state_mut().mint.max_uses = 3;
    w.harness.state_mut().mint.expires_minutes = 60;
    w.settle();
    w.calls();
    w.click("Mint");
    let expected = MintShareParams {
        label: String::new(),
        workspaces: vec![WorkspaceId::from("w2")],
        collaborative: true,
        consensus_required: false,
        admission_required: true,
        role: Role::Participant,
        expires_in_ms: Some(3_600_000),
        max_uses: Some(3),
        vote_deadline_ms: None,
    };
    assert_eq!(w.calls(), vec![Method::MintShare(expected)]);

    let link = "roundtable://127.0.0.1:7447/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ#sha256=00ff";
    let result: MintShareResult = serde_json::from_value(json!({"share": {"share_id": "sh1", "label": "",
        "workspaces": ["w2"], "collaborative": true, "consensus_required": false, "admission_required": true,
        "role": "participant", "expires_at": 3600000, "max_uses": 3, "uses": 0, "revoked": false, "created_at": 0,
        "connections": 0}, "token": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "link": link}))
    .unwrap();
    w.push(Update::Minted(result));
    assert!(w.harness.query_by_label(link).is_some(), "the link is shown");
    assert!(w.harness.query_by_label("Copy").is_some());
    assert!(w.harness.query_by_label("0/3 uses, 0 live").is_some(), "the list shows usage");
    w.click("Hide link");
    assert!(w.harness.query_by_label(link).is_none(), "hidden for good once dismissed");
}

// ------------------------------------------------------------------------------------------
// Host session admin, workspaces, lobby seed, deadlines, plan files, known hosts
// ------------------------------------------------------------------------------------------

fn host_window() -> Window {
    let mut w = Window::new(true, joined_as("host", "Host", Role::Host));
    w.calls();
    w
}

#[test]
fn rename_edits_the_title_inline_and_sends_rename_session() {
    let mut w = host_window();
    w.click("Rename");
    assert_eq!(w.harness.state().renaming, Some((s1(), "Fix login".to_string())), "prefilled with the title");
    w.harness.state_mut().renaming.as_mut().unwrap().1 = "Fix login bug".into();
    w.settle();
    w.click("Save title");
    assert_eq!(
        w.calls(),
        vec![Method::RenameSession(RenameSessionParams { session_id: s1(), title: "Fix login bug".into() })]
    );
    assert!(w.harness.query_by_label("Save title").is_none(), "the inline editor closes");

    // The title changes when the host's session_updated arrives.
    w.push(ev(json!({"event": "session_updated", "session_id": "s1", "seq": 5,
        "payload": {"title": "Fix login bug", "status": "idle"}})));
    assert!(w.harness.query_by_label("Fix login bug").is_some());

    // Cancelling sends nothing.
    w.click("Rename");
    w.click("Cancel rename");
    assert!(w.calls().is_empty());
}

#[test]
fn clear_sends_clear_session_only_after_confirmation() {
    let mut w = host_window();
    w.click("Clear");
    assert!(w.calls().is_empty(), "the first click only asks");
    assert!(w.harness.query_by_label_contains("This cannot be undone").is_some());
    w.click("Keep messages");
    assert!(w.calls().is_empty());
    assert!(w.harness.query_by_label("Yes, clear").is_none());

    w.click("Clear");
    w.click("Yes, clear");
    assert_eq!(w.calls(), vec![Method::ClearSession(SessionRef { session_id: s1() })]);
}

#[test]
fn history_replaced_in_the_window_waits_for_a_fresh_snapshot() {
    let mut w = host_window();
    w.push(ev(json!({"event": "history_replaced", "session_id": "s1", "seq": 5,
        "payload": {"reason": "cleared by the host"}})));
    assert!(w.harness.query_by_label("loading…").is_some(), "the chat waits for the snapshot");
}

#[test]
fn fork_sends_fork_session_and_the_window_switches_to_the_fork() {
    let mut w = host_window();
    w.click("Fork");
    assert_eq!(w.calls(), vec![Method::ForkSession(ForkSessionParams { session_id: s1(), title: None })]);

    // What the backend sends once the fork exists and is joined.
    let fork = json!({"id": "s2", "workspace_id": "w1", "title": "Fix login (fork)", "status": "idle",
        "turn_holder": null, "participant_count": 1, "agent": "demo", "last_seq": 0});
    w.push(Update::Sessions(vec![
        serde_json::from_value(session_info(4)).unwrap(),
        serde_json::from_value(fork.clone()).unwrap(),
    ]));
    w.push(Update::Joined(
        serde_json::from_value(json!({"session": fork, "roster": [{"participant_id": "host", "display_name": "Host",
            "role": "host", "muted": false, "presence": "connected", "you": true}], "you": "host", "catch_up": "none"}))
        .unwrap(),
    ));
    w.push(Update::Open(SessionId::from("s2")));
    assert_eq!(w.harness.state().model.current, Some(SessionId::from("s2")));
    assert!(w.harness.query_by_label("Fix login (fork)").is_some(), "the fork's title heads the chat");
}

#[test]
fn a_claude_workspace_is_plan_first_unless_the_box_is_unticked() {
    let mut w = host_window();
    w.click("Add workspace…");
    {
        let form = &mut w.harness.state_mut().workspace_form;
        form.name = "app".into();
        form.dir = "/home/ann/app".into();
    }
    w.settle();
    assert!(w.harness.query_by_label("Plan first").is_none(), "only offered for claude and codex");
    w.click("claude");
    assert!(w.harness.query_by_label("Plan first").is_some(), "offered for claude");
    w.click("Plan first");
    w.click("Add");
    let plan_first = |m: &Method| match m {
        Method::AddWorkspace(p) => p.agent.as_ref().and_then(|a| a.plan_first),
        _ => None,
    };
    assert_eq!(w.calls().iter().map(plan_first).collect::<Vec<_>>(), vec![Some(false)], "unticked: off");

    w.click("Add workspace…");
    {
        let form = &mut w.harness.state_mut().workspace_form;
        form.name = "lib".into();
        form.dir = "/home/ann/lib".into();
    }
    w.settle();
    w.click("claude");
    w.click("Add");
    assert_eq!(w.calls().iter().map(plan_first).collect::<Vec<_>>(), vec![Some(true)], "ticked by default");

    // A codex workspace from the window (issue 27): plan first offered and ticked.
    w.click("Add workspace…");
    {
        let form = &mut w.harness.state_mut().workspace_form;
        form.name = "svc".into();
        form.dir = "/home/ann/svc".into();
    }
    w.settle();
    w.click("codex");
    assert!(w.harness.query_by_label("Plan first").is_some(), "offered for codex");
    w.click("Add");
    let kinds: Vec<(String, Option<bool>)> = w
        .calls()
        .iter()
        .filter_map(|m| match m {
            Method::AddWorkspace(p) => p.agent.as_ref().map(|a| (a.kind.clone(), a.plan_first)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![("codex".to_string(), Some(true))]);
}

#[test]
fn add_workspace_form_sends_add_workspace_and_then_offers_a_first_session() {
    let mut w = host_window();
    w.click("Add workspace…");
    w.click("Add");
    assert!(w.calls().is_empty(), "an empty form sends nothing");
    {
        let form = &mut w.harness.state_mut().workspace_form;
        form.name = "web".into();
        form.dir = "/home/ann/web".into();
    }
    w.settle();
    w.click("command");
    w.click("Add");
    assert!(w.calls().is_empty(), "the command agent needs a path");
    assert!(w.harness.query_by_label("the command agent needs the executable's path").is_some());
    w.harness.state_mut().workspace_form.command = "/usr/local/bin/my-agent".into();
    w.settle();
    w.click("Add");
    assert_eq!(
        w.calls(),
        vec![Method::AddWorkspace(AddWorkspaceParams {
            name: "web".into(),
            dir: "/home/ann/web".into(),
            agent: Some(roundtable::persist::AgentSpec {
                kind: "command".into(),
                command: Some("/usr/local/bin/my-agent".into()),
                args: vec![],
                plan_first: None,
            }),
        })]
    );

    w.push(Update::WorkspaceAdded(WorkspaceInfo {
        id: WorkspaceId::from("w2"),
        name: "web".into(),
        agent: "command".into(),
        agent_detail: None,
    }));
    assert!(w.harness.query_by_label("Workspace web added.").is_some());
    w.harness.state_mut().first_session_title = "Landing page".into();
    w.settle();
    w.click("Create first session");
    assert_eq!(
        w.calls(),
        vec![Method::CreateSession(CreateSessionParams {
            workspace_id: WorkspaceId::from("w2"),
            title: "Landing page".into(),
            vote_deadline_ms: None,
            plan_first: None,
        })]
    );
    assert!(w.harness.query_by_label("Workspace web added.").is_none(), "the offer is done");
}

#[test]
fn workspace_form_defaults_to_the_demo_agent_and_claude_takes_an_optional_binary() {
    use roundtable::ui::app::{AgentChoice, WorkspaceForm};
    let mut form = WorkspaceForm { name: " api ".into(), dir: "/srv/api".into(), ..WorkspaceForm::default() };
    let p = form.params().unwrap();
    assert_eq!((p.name.as_str(), p.agent), ("api", None));
    form.agent = AgentChoice::Claude;
    assert_eq!(form.params().unwrap().agent.unwrap().command, None);
    // Issue 27: the window adds codex workspaces too, planning first unless unticked.
    form.agent = AgentChoice::Codex;
    let codex = form.params().unwrap().agent.unwrap();
    assert_eq!((codex.kind.as_str(), codex.command, codex.plan_first), ("codex", None, Some(true)));
    form.plan_first = false;
    assert_eq!(form.params().unwrap().agent.unwrap().plan_first, Some(false));
    form.dir = "  ".into();
    assert!(form.params().is_err(), "a directory is required");
}

#[test]
fn lobby_seed_from_list_lobby_merges_with_live_lobby_events() {
    let entry = |id: &str, name: &str| LobbyEntry {
        participant_id: ParticipantId::from(id),
        display_name: name.into(),
        share_id: roundtable::ids::ShareId::from("sh2"),
    };
    let lobby = |id: &str, admission: &str| {
        ev(json!({"event": "lobby", "payload": {"participant_id": id, "display_name": "X", "share_id": "sh2",
            "admission": admission}}))
    };
    // p4 was admitted live before the (older) database read arrived; p7 is waiting live.
    let mut m = model_with(vec![lobby("p4", "pending"), lobby("p4", "admitted"), lobby("p7", "pending")], true);
    m.apply(Update::LobbySeed(vec![entry("p4", "Dan"), entry("p6", "Eve")]));
    let waiting: Vec<&str> = m.lobby.keys().map(|p| p.as_str()).collect();
    assert_eq!(waiting, vec!["p6", "p7"], "settled people stay out; seeded and live ones merge");
    m.apply(lobby("p6", "refused"));
    assert!(!m.lobby.contains_key(&ParticipantId::from("p6")));
}

#[test]
fn host_window_shows_people_waiting_from_the_seed_with_admit_buttons() {
    let mut w = host_window();
    w.push(Update::LobbySeed(vec![LobbyEntry {
        participant_id: ParticipantId::from("p4"),
        display_name: "Dan".into(),
        share_id: roundtable::ids::ShareId::from("sh2"),
    }]));
    assert!(w.harness.query_by_label("Dan (via share sh2)").is_some());
    // With the share list known, its label names it.
    w.push(Update::Shares(vec![serde_json::from_value(json!({"share_id": "sh2", "label": "design review",
        "workspaces": ["w1"], "collaborative": true, "consensus_required": true, "admission_required": true,
        "role": "participant", "uses": 1, "revoked": false, "created_at": 0, "connections": 0}))
    .unwrap()]));
    assert!(w.harness.query_by_label("Dan (via \"design review\")").is_some());
    w.click("Admit");
    assert_eq!(w.calls(), vec![Method::Admit(ParticipantRef { participant_id: ParticipantId::from("p4") })]);
}

fn vote_with_deadline(deadline_ms: u64) -> Update {
    ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v1", "kind": "plan",
        "plan": "1. Edit src/login.rs\n2. Update Cargo.toml, e.g. the version", "decided_by": "consensus",
        "required": ["p1", "p2"], "deadline_ms": deadline_ms}}))
}

#[test]
fn a_vote_deadline_counts_down_on_the_local_clock() {
    let t0 = 1_700_000_000_000;
    let mut host = ViewModel::new(true);
    for u in [joined_as("host", "Host", Role::Host), ann_takes_the_turn()].concat() {
        host.apply_at(u, t0);
    }
    host.apply_at(vote_with_deadline(t0 + 83_000), t0);
    let card = host.sessions[&s1()].votes[&VoteId::from("v1")].clone();
    assert_eq!(host.deadline_text(&card, t0).as_deref(), Some("closes in 1:23"));
    assert_eq!(host.deadline_text(&card, t0 + 82_500).as_deref(), Some("closes in 0:01"));
    assert_eq!(host.deadline_text(&card, t0 + 83_000).as_deref(), Some("closing…"));
    host.apply_at(
        ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 8, "payload": {"vote_id": "v1",
        "outcome": "denied", "reason": "timed out", "resolved_by": "deadline"}})),
        t0 + 83_100,
    );
    let card = host.sessions[&s1()].votes[&VoteId::from("v1")].clone();
    assert_eq!(host.deadline_text(&card, t0 + 83_100), None, "a resolved vote has no countdown");
}

#[test]
fn a_remote_whose_clock_disagrees_with_the_host_gets_no_false_countdown() {
    let t0 = 1_700_000_000_000;
    let remote_at = |now: u64| {
        let mut m = ViewModel::new(false);
        for u in [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat() {
            m.apply_at(u, now);
        }
        m.apply_at(vote_with_deadline(t0 + 60_000), now);
        m
    };
    // Clocks agree: a countdown.
    let m = remote_at(t0);
    let card = &m.sessions[&s1()].votes[&VoteId::from("v1")];
    assert_eq!(m.deadline_text(card, t0 + 1_000).as_deref(), Some("closes in 0:59"));
    // This computer is 10 minutes ahead: a just-opened vote cannot already be past its deadline.
    let m = remote_at(t0 + 600_000);
    let card = &m.sessions[&s1()].votes[&VoteId::from("v1")];
    assert!(m.deadline_text(card, t0 + 600_000).unwrap().contains("clock differs"));
    // This computer is a month behind: a deadline weeks away is not believable either.
    let m = remote_at(t0 - 30 * 24 * 3600 * 1000);
    let card = &m.sessions[&s1()].votes[&VoteId::from("v1")];
    assert!(m.deadline_text(card, t0).unwrap().contains("no countdown"));
}

#[test]
fn clock_text_rounds_up_to_whole_seconds() {
    assert_eq!(clock_text(83_000), "1:23");
    assert_eq!(clock_text(82_001), "1:23");
    assert_eq!(clock_text(1), "0:01");
    assert_eq!(clock_text(3_723_000), "1:02:03");
}

#[test]
fn file_refs_finds_relative_paths_named_in_a_plan() {
    let plan = "1. Read `src/login.rs` and src/login.rs:42.\n2. Update Cargo.toml (e.g. bump v1.2).\n\
                3. Leave /etc/passwd, ../secret.txt and https://x.io/a.rs alone; see docs/README.md, i.e. done.\n\
                4. Run scripts/check";
    assert_eq!(file_refs(plan), vec!["src/login.rs", "Cargo.toml", "docs/README.md", "scripts/check"]);
    let many: String = (0..20).map(|i| format!("f{i}.rs ")).collect();
    assert_eq!(file_refs(&many).len(), MAX_FILE_REFS);
}

#[test]
fn plan_card_shows_a_countdown_and_view_buttons_that_read_the_named_files() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(vote_with_deadline(wall_ms() + 83_900));
    let mut w = Window::new(false, updates);
    assert!(w.harness.query_by_label_contains("closes in 1:2").is_some(), "a countdown, not engine-clock ms");
    assert!(w.harness.query_by_label("View Cargo.toml").is_some());
    w.calls();
    w.click("View src/login.rs");
    assert_eq!(
        w.calls(),
        vec![Method::ReadWorkspaceFile(ReadFileParams { session_id: s1(), path: "src/login.rs".into() })]
    );

    // A refusal is shown plainly in the file window.
    w.push(Update::FileRead {
        session_id: s1(),
        path: "src/login.rs".into(),
        result: Err("file_refused: no such file in the workspace".into()),
    });
    assert!(w.harness.query_by_label_contains("Cannot show src/login.rs: file_refused").is_some());

    // The content, in a scrollable window that closes.
    w.push(Update::FileRead {
        session_id: s1(),
        path: "Cargo.toml".into(),
        result: Ok(ReadFileResult { path: "Cargo.toml".into(), size: 20, content: "[package]\nname = \"x\"\n".into() }),
    });
    assert!(w.harness.query_by_label("[package]\nname = \"x\"\n").is_some());
    w.click("Close file");
    assert!(w.harness.query_by_label_contains("[package]").is_none());
    assert_eq!(w.harness.state().model.file_view, None);
}

#[test]
fn the_remote_window_records_the_host_in_known_hosts_like_join() {
    use roundtable::net::known_hosts::KnownHosts;
    use roundtable::net::link::Link;
    let dir = tempfile::tempdir().unwrap();
    let token = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
    let link =
        |fp: char| Link::parse(&format!("roundtable://127.0.0.1:7447/{token}#sha256={}", fp.to_string().repeat(64)));
    // Opening the window records nothing: the backend does, once the host proved it holds the
    // pinned certificate (a wrong link must not become "presented before").
    let model = roundtable::ui::remote_model(&link('a').unwrap());
    assert_eq!(model.status, None);
    assert!(KnownHosts::load(dir.path()).unwrap().hosts.is_empty());
    // What the backend then calls, shared with `join`.
    let remember = |fp| roundtable::app::join::remember_host(dir.path(), &link(fp).unwrap());
    assert!(remember('a').is_empty(), "a new host is recorded silently");
    assert_eq!(KnownHosts::load(dir.path()).unwrap().hosts["127.0.0.1:7447"], "a".repeat(64));
    let notes = remember('b');
    assert!(notes.concat().contains("presented another certificate before"), "{notes:?}");
    assert_eq!(KnownHosts::load(dir.path()).unwrap().hosts["127.0.0.1:7447"], "b".repeat(64));
    let mut m = ViewModel::new(false);
    m.apply(Update::Warning(notes.join("\n")));
    assert!(m.status.is_some_and(|n| n.error), "shown until dismissed");
}

#[test]
fn audit_times_are_shown_as_utc_dates() {
    use roundtable::ui::app::utc_text;
    assert_eq!(utc_text(0), "1970-01-01 00:00:00");
    assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00");
    assert_eq!(utc_text(1_700_000_000_123), "2023-11-14 22:13:20");
}

/// A snapshot holding the latest page (seqs 10 and 11) of a longer history.
fn joined_with_older_history() -> Vec<Update> {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    updates.pop();
    updates.push(ev(json!({"event": "snapshot", "session_id": "s1", "payload": {"session": session_info(11),
        "roster": roster("p2"), "messages": [
            {"seq": 10, "message_id": "m5", "author_id": "p1", "author_name": "Ann", "text": "newer question"},
            {"seq": 11, "message_id": "m6", "author_id": "agent", "author_name": "Agent", "text": "newer answer"}],
        "has_older": true, "votes": [], "last_seq": 11}})));
    updates
}

#[test]
fn earlier_messages_load_above_the_timeline_a_page_at_a_time() {
    let mut m = model_with(joined_with_older_history(), false);
    let Some(Method::FetchHistory(p)) = m.request_older(&s1()) else { panic!("a fetch_history request") };
    assert_eq!(p.before_seq, Some(10), "pages back from the oldest message shown");
    assert!(m.request_older(&s1()).is_none(), "one page at a time");
    let page: FetchHistoryResult = serde_json::from_value(json!({"messages": [
        {"seq": 3, "message_id": "m1", "author_id": "p1", "author_name": "Ann", "text": "first question"}],
        "has_older": false}))
    .unwrap();
    m.apply(Update::HistoryPage { session_id: s1(), page: page.clone() });
    let texts: Vec<String> = m.sessions[&s1()]
        .timeline
        .iter()
        .filter_map(|e| match e {
            Entry::Message(msg) => Some(msg.message.text.clone()),
            Entry::Note(_) | Entry::Failure(_) => None,
        })
        .collect();
    assert_eq!(texts, vec!["first question", "newer question", "newer answer"]);
    assert!(m.request_older(&s1()).is_none(), "the start of the session was reached");
    // The same page again (a duplicate answer) never shows a message twice.
    m.apply(Update::HistoryPage { session_id: s1(), page });
    assert_eq!(m.sessions[&s1()].timeline.len(), 3);
}

#[test]
fn the_window_offers_earlier_messages_and_asks_for_them() {
    let mut w = Window::new(false, joined_with_older_history());
    assert!(w.harness.query_by_label("newer question").is_some());
    w.calls();
    w.click("Load earlier messages");
    let calls = w.calls();
    assert!(
        matches!(calls.as_slice(), [Method::FetchHistory(p)] if p.before_seq == Some(10)),
        "one fetch_history before seq 10: {calls:?}"
    );
    assert!(w.harness.query_by_label("loading earlier messages…").is_some());
    w.push(Update::HistoryPage {
        session_id: s1(),
        page: serde_json::from_value(json!({"messages": [
            {"seq": 3, "message_id": "m1", "author_id": "p1", "author_name": "Ann", "text": "first question"}],
            "has_older": false}))
        .unwrap(),
    });
    assert!(w.harness.query_by_label("first question").is_some());
    assert!(w.harness.query_by_label("Load earlier messages").is_none(), "nothing older is left");
}

fn chat(seq: u64, session: &str, author: (&str, &str), text: &str) -> Update {
    ev(json!({"event": "chat", "session_id": session, "seq": seq, "payload": {"message_id": format!("m{seq}"),
        "author_id": author.0, "author_name": author.1, "text": text, "room": true}}))
}

/// Bob's window in s1 (seq 4, read up to 2) and s2 "Deploy" (loaded in the background, seq 3,
/// read up to 3).
fn bob_in_two_sessions() -> Vec<Update> {
    bob_in_two_sessions_titled("Deploy")
}

/// [`bob_in_two_sessions`] with s2 titled `title`.
fn bob_in_two_sessions_titled(title: &str) -> Vec<Update> {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    let s2 = json!({"id": "s2", "workspace_id": "w1", "title": title, "status": "idle", "turn_holder": null,
        "participant_count": 3, "agent": "demo", "last_seq": 3, "read_seq": 3});
    let mut s1 = session_info(4);
    s1["read_seq"] = json!(2);
    updates.insert(
        3,
        Update::Sessions(vec![serde_json::from_value(s1).unwrap(), serde_json::from_value(s2.clone()).unwrap()]),
    );
    updates.push(Update::Joined(
        serde_json::from_value(json!({"session": s2, "roster": roster("p2"), "you": "p2", "catch_up": "snapshot"}))
            .unwrap(),
    ));
    updates
        .push(ev(json!({"event": "snapshot", "session_id": "s2", "payload": {"session": s2, "roster": roster("p2"),
        "messages": [], "votes": [], "last_seq": 3}})));
    updates
}

/// Issue 26 item 10: side panels grew with their content, so the chat column jumped when you
/// switched sessions.
#[test]
fn the_chat_column_stays_put_when_you_switch_to_a_session_with_a_long_title_or_long_names() {
    let long = "Migrate the billing service from the legacy cron jobs to the new event queue";
    let mut updates = bob_in_two_sessions_titled(long);
    updates.push(ev(
        json!({"event": "participant_joined", "session_id": "s2", "seq": 4, "payload": {"participant_id": "p9",
        "display_name": "Maximiliane Alexandrovna Featherstonehaugh-Worthington", "role": "participant", "muted": false,
        "presence": "connected"}}),
    ));
    let mut w = Window::sized(false, updates, egui::vec2(1200.0, 760.0));
    let columns = |w: &Window| {
        let people = w.harness.get_by_label("People").rect().min.x;
        let sessions = w.harness.get_by_label("Sessions").rect().min.x;
        let row = w.harness.get_by_label_contains("event queue — idle").rect();
        (people, sessions, row.max.x)
    };
    let before = columns(&w);
    assert!(before.2 <= 250.0, "the long title wraps inside the 240 px panel: {before:?}");
    w.harness.get_by_label_contains("event queue — idle").click();
    w.settle();
    assert_eq!(w.harness.state().model.current, Some(SessionId::from("s2")));
    let after = columns(&w);
    assert_eq!(before.0, after.0, "the people panel did not move");
    assert!(after.2 <= 250.0, "{after:?}");
}

#[test]
fn unread_counts_messages_by_others_after_the_marker_and_mark_read_follows_what_is_shown() {
    let mut m = model_with(bob_in_two_sessions(), false);
    let me = m.me.clone();
    let s2 = SessionId::from("s2");
    assert_eq!(m.current, Some(s1()));
    assert_eq!(m.sessions[&s1()].read_seq, 2, "the marker comes from the session list");
    // Shown: s1 is marked read up to its last seq, once.
    let now = 1_000_000;
    assert_eq!(m.mark_read_call(now), Some(Method::MarkRead(MarkReadParams { session_id: s1(), seq: 4 })));
    assert_eq!(m.mark_read_call(now + 5_000), None, "nothing new to mark");
    // In the background s2 collects unread messages: others' chat and the agent, not Bob's own.
    m.apply_at(chat(4, "s2", ("p1", "Ann"), "deploying at 5?"), now);
    m.apply_at(chat(5, "s2", ("p2", "Bob"), "fine by me"), now);
    m.apply_at(
        ev(json!({"event": "message", "session_id": "s2", "seq": 6, "payload": {"message_id": "m6",
        "author_id": "agent", "author_name": "Agent", "text": "done"}})),
        now,
    );
    assert_eq!(m.sessions[&s2].unread(me.as_ref()), Some(2));
    assert_eq!(m.sessions[&s1()].unread(me.as_ref()), Some(0));
    assert_eq!(m.mark_read_call(now + 5_000), None, "s2 is not shown, so not read");
    // Opening s2: the "new messages" line goes above Ann's chat and stays there while read.
    m.open(s2.clone());
    assert_eq!(m.sessions[&s2].first_new(me.as_ref()), Some(4));
    assert_eq!(
        m.mark_read_call(now + 5_000),
        Some(Method::MarkRead(MarkReadParams { session_id: s2.clone(), seq: 6 }))
    );
    assert_eq!(m.sessions[&s2].unread(me.as_ref()), Some(0));
    assert_eq!(m.sessions[&s2].first_new(me.as_ref()), Some(4), "the line stays until the session is opened again");
    // At most one marker a second.
    m.apply_at(chat(7, "s2", ("p1", "Ann"), "ok"), now);
    assert_eq!(m.mark_read_call(now + 5_500), None);
    assert_eq!(
        m.mark_read_call(now + 6_000),
        Some(Method::MarkRead(MarkReadParams { session_id: s2.clone(), seq: 7 }))
    );
    // A session never opened here: only "there is something new".
    m.apply(Update::Sessions(vec![serde_json::from_value(json!({"id": "s3", "workspace_id": "w1", "title": "Docs",
        "status": "idle", "turn_holder": null, "participant_count": 1, "agent": "demo", "last_seq": 9, "read_seq": 5}))
    .unwrap()]));
    assert_eq!(m.sessions[&SessionId::from("s3")].unread(me.as_ref()), None);
    m.open(s2.clone());
    assert_eq!(m.sessions[&s2].first_new(me.as_ref()), None, "reopened after reading: no line");
}

#[test]
fn the_sessions_list_shows_unread_counts_and_opening_a_session_marks_it_read_under_a_new_messages_line() {
    let mut w = Window::new(false, bob_in_two_sessions());
    let marks = w.all_calls();
    assert!(
        marks.contains(&Method::MarkRead(MarkReadParams { session_id: s1(), seq: 4 })),
        "the session shown is marked read: {marks:?}"
    );
    assert!(w.harness.query_by_label("Deploy — idle, 3 present").is_some());
    w.push(chat(4, "s2", ("p1", "Ann"), "deploying at 5?"));
    w.push(chat(5, "s2", ("p1", "Ann"), "anyone?"));
    assert!(w.harness.query_by_label("Deploy — idle, 3 present · 2 unread").is_some(), "two unread in the list");
    assert!(w.harness.query_by_label("— new messages —").is_none());
    w.click("Deploy — idle, 3 present · 2 unread");
    assert!(w.harness.query_by_label("deploying at 5?").is_some());
    assert!(w.harness.query_by_label("— new messages —").is_some(), "a line above the first unread message");
    assert!(w.harness.query_by_label("Deploy — idle, 3 present").is_some(), "read once shown");
    let marks = w.all_calls();
    assert!(
        marks.contains(&Method::MarkRead(MarkReadParams { session_id: SessionId::from("s2"), seq: 5 })),
        "opening marks it read: {marks:?}"
    );
}

#[test]
fn someone_typing_is_shown_until_their_message_arrives_and_typing_here_tells_the_host() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(ev(
        json!({"event": "typing", "session_id": "s1", "payload": {"participant_id": "p1", "display_name": "Ann"}}),
    ));
    assert!(w.harness.query_by_label("Ann is typing…").is_some());
    w.push(chat(5, "s1", ("p1", "Ann"), "hello"));
    assert!(w.harness.query_by_label("Ann is typing…").is_none(), "her message ends it");
    // Bob's own typing note (echoed by nobody, but guard anyway) is never shown to him.
    w.push(ev(
        json!({"event": "typing", "session_id": "s1", "payload": {"participant_id": "p2", "display_name": "Bob"}}),
    ));
    assert!(w.harness.query_by_label("Bob is typing…").is_none());
    w.all_calls();
    w.harness.get_by_role(egui::accesskit::Role::TextInput).focus();
    w.settle();
    w.harness.get_by_role(egui::accesskit::Role::TextInput).type_text("wait");
    w.settle();
    w.harness.get_by_role(egui::accesskit::Role::TextInput).type_text(" a sec");
    w.settle();
    let typing: Vec<Method> = w.all_calls().into_iter().filter(|m| matches!(m, Method::Typing(_))).collect();
    assert_eq!(typing, vec![Method::Typing(SessionRef { session_id: s1() })], "once per 2 s, not per key");
}

#[test]
fn typing_notes_expire_and_name_several_people() {
    let mut m = model_with(joined_as("p2", "Bob", Role::Participant), false);
    let typing = |id: &str, name: &str| {
        ev(json!({"event": "typing", "session_id": "s1", "payload": {"participant_id": id, "display_name": name}}))
    };
    m.apply_at(typing("p1", "Ann"), 10_000);
    m.apply_at(typing("host", "Host"), 11_000);
    let s = &m.sessions[&s1()];
    assert_eq!(s.typing_text(11_000).as_deref(), Some("Host and Ann are typing…"));
    assert_eq!(s.typing_text(10_000 + TYPING_SHOWN_MS).as_deref(), Some("Host is typing…"), "Ann's note expired");
    assert_eq!(s.typing_text(11_000 + TYPING_SHOWN_MS), None);
    assert_eq!(m.typing_call(0), Some(Method::Typing(SessionRef { session_id: s1() })));
    assert_eq!(m.typing_call(TYPING_EVERY_MS - 1), None);
    assert!(m.typing_call(TYPING_EVERY_MS).is_some());
}

#[test]
fn quoting_room_chat_puts_the_lines_with_their_authors_in_the_next_prompt() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(chat(5, "s1", ("p1", "Ann"), "don't touch the migrations"));
    w.push(chat(6, "s1", ("host", "Host"), "and keep the API stable"));
    let quotes: Vec<_> = w.harness.query_all_by_label("Quote").collect();
    assert_eq!(quotes.len(), 2, "each room line can be quoted");
    quotes[0].click();
    w.settle();
    w.harness.query_all_by_label("Quote").nth(1).unwrap().click();
    w.settle();
    assert!(w.harness.query_by_label("Quoted in your next prompt:").is_some());
    w.calls();
    w.harness.state_mut().composer = "refactor the login".into();
    w.settle();
    w.click("Send");
    let calls = w.calls();
    let want = "> Ann (room chat): don't touch the migrations\n> Host (room chat): and keep the API stable\n\nrefactor the login";
    assert!(matches!(&calls[..], [Method::SendMessage(p)] if p.text == want), "{calls:?}");
    w.accept(&calls);
    assert!(w.harness.query_by_label("Quoted in your next prompt:").is_none(), "quotes go with that prompt");
}

fn turn_ended(seq: u64, reason: &str) -> Update {
    ev(
        json!({"event": "turn_ended", "session_id": "s1", "seq": seq, "payload": {"turn_id": 1, "holder_id": "p1", "reason": reason}}),
    )
}

fn resolved(seq: u64, outcome: &str, by: &str) -> Update {
    ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": seq, "payload": {"vote_id": "v1",
        "outcome": outcome, "resolved_by": by}}))
}

#[test]
fn a_turn_cancelled_while_its_vote_was_open_leaves_the_session_idle_in_either_order() {
    let start = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn(), plan_vote()].concat();
    for events in [
        vec![turn_ended(9, "cancelled"), resolved(10, "denied", "system")],
        vec![resolved(9, "denied", "system"), turn_ended(10, "cancelled")],
    ] {
        let m = model_with([start.clone(), events].concat(), false);
        assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().status, SessionStatus::Idle);
    }
    // Resolved while the turn goes on: running again.
    let m = model_with([start.clone(), vec![resolved(9, "approved", "consensus")]].concat(), false);
    assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().status, SessionStatus::Running);
    // The list of a window that never opened the session follows the same rule.
    let mut m = ViewModel::new(false);
    m.apply(Update::Sessions(vec![serde_json::from_value(session_info(4)).unwrap()]));
    for u in
        [ann_takes_the_turn(), plan_vote(), vec![turn_ended(9, "cancelled"), resolved(10, "denied", "system")]].concat()
    {
        m.apply(u);
    }
    assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().status, SessionStatus::Idle);
}

#[test]
fn a_card_the_host_decided_says_so_and_lists_no_one_as_pending() {
    let mut w = Window::new(true, [joined_as("host", "Host", Role::Host), ann_takes_the_turn(), plan_vote()].concat());
    assert!(w.harness.query_by_label("Plan (v1) — everyone must approve: Ann, Bob").is_some());
    assert!(
        w.harness
            .query_by_label("As the host, your answer decides for everyone; the others' ballots are then not needed.")
            .is_some(),
        "the host is told what the button does"
    );
    w.push(resolved(9, "approved", "host"));
    assert!(w.harness.query_by_label("Resolved: approved — the host decided for everyone").is_some());
    assert!(w.harness.query_by_label("Pending: Bob").is_none(), "no one is pending once decided");
    assert!(w.harness.query_by_label("Plan (v1) — everyone must approve: Ann, Bob").is_none());
    assert!(w.harness.query_by_label("Plan (v1) — approved").is_some());
    assert!(
        w.harness.query_by_label("· plan approved — the host decided for everyone").is_some(),
        "and the timeline notes it"
    );
    // Once the turn is over the card is no longer pinned above the composer.
    w.push(turn_ended(10, "completed"));
    assert!(w.harness.query_by_label("Plan (v1) — approved").is_none());
}

#[test]
fn a_lost_connection_empties_the_roster_names_the_reason_once_and_reconnecting_clears_it() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    assert_eq!(w.harness.state().model.sessions[&s1()].roster.len(), 3);
    w.push(ev(json!({"event": "closing", "payload": {"reason": "host_shutdown"}})));
    w.push(Update::Failed { method: "send_message".into(), code: None, message: "connection lost".into() });
    w.push(Update::Connection(ConnectionState::Reconnecting));
    let m = &w.harness.state().model;
    assert!(m.sessions[&s1()].roster.is_empty(), "nobody is known to be present while disconnected");
    assert_eq!(m.sessions[&s1()].info.as_ref().unwrap().participant_count, 0);
    let reason = m.disconnect_reason.clone().expect("the host's reason is kept");
    assert_eq!(w.harness.query_all_by_label_contains(&reason).count(), 1, "the reason is shown once");
    // Back: the roster comes from the rejoin, the stale error goes.
    w.push(Update::Connection(ConnectionState::Connected));
    w.push(Update::Joined(
        serde_json::from_value(
            json!({"session": session_info(4), "roster": roster("p2"), "you": "p2", "catch_up": "events"}),
        )
        .unwrap(),
    ));
    let m = &w.harness.state().model;
    assert_eq!(m.sessions[&s1()].roster.len(), 3);
    assert_eq!(m.status, None, "no stale error beside \"connected\"");
    assert_eq!(m.disconnect_reason, None);
    assert!(w.harness.query_by_label("connected").is_some());
    assert!(w.harness.query_all_by_label_contains(&reason).next().is_none());
}

#[test]
fn notices_go_away_by_themselves_and_errors_stay_until_dismissed() {
    let mut m = ViewModel::new(false);
    m.apply_at(Update::Notice("link copied".into()), 1_000);
    let n = m.status.clone().unwrap();
    assert!(!n.error && n.shown(1_000) && !n.shown(1_000 + NOTICE_SHOWN_MS));
    let host_only = || Update::Failed {
        method: "rename_session".into(),
        code: Some(ErrorCode::Forbidden),
        message: "rename_session is a host-only method".into(),
    };
    m.apply_at(host_only(), 1_000);
    let n = m.status.clone().unwrap();
    assert!(n.error && n.shown(1_000 + 100 * NOTICE_SHOWN_MS));
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(host_only());
    assert!(w.harness.query_by_label("Not renamed: only the host can do that").is_some());
    w.click("Dismiss");
    assert!(w.harness.query_by_label("Not renamed: only the host can do that").is_none());
}

#[test]
fn an_agent_failure_is_shown_as_an_error_and_a_cancel_as_a_note() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(json!({"event": "turn_ended", "session_id": "s1", "seq": 7, "payload": {"turn_id": 1,
        "holder_id": "p1", "reason": "failed", "error": "agent command not found at './agent.py'"}})));
    let w = Window::new(false, updates);
    let failure = "Error: Ann's turn ended (failed): agent command not found at './agent.py'";
    assert!(w.harness.query_by_label(failure).is_some());
    assert!(matches!(w.harness.state().model.sessions[&s1()].timeline.last(), Some(Entry::Failure(_))));
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(turn_ended(7, "cancelled"));
    let m = model_with(updates, false);
    assert!(matches!(m.sessions[&s1()].timeline.last(), Some(Entry::Note(n)) if n == "Ann's turn ended (cancelled)"));
}

/// Issue 26: a returning Bob's old lines changed colour, the host's and Ann's windows showed
/// one person in different colours, a rename changed it, and after a restart old authors were
/// light grey under white text. A colour now follows the participant id alone.
#[test]
fn a_name_colour_follows_the_participant_in_every_window_and_is_readable() {
    let m = model_with(joined_as("p2", "Bob", Role::Participant), false);
    let slots = m.sessions[&s1()].colour_slots(10);
    let mut used: Vec<usize> = slots.values().copied().collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "Host, Ann and Bob each have their own colour: {slots:?}");
    let bob = slots[&ParticipantId::from("p2")];
    // The host's window, where Bob leaves, someone else comes and Bob is renamed: his colour
    // (and his old lines') stay what Bob's own window shows.
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(ev(json!({"event": "participant_left", "session_id": "s1", "seq": 5, "payload": {"participant_id": "p2", "reason": "gone"}})));
    updates.push(ev(
        json!({"event": "participant_joined", "session_id": "s1", "seq": 6, "payload": {"participant_id": "p7",
        "display_name": "Bob (2)", "role": "participant", "muted": false, "presence": "connected"}}),
    ));
    let m = model_with(updates, true);
    let host_slots = m.sessions[&s1()].colour_slots(10);
    assert_eq!(host_slots[&ParticipantId::from("p2")], bob, "the same colour in both windows, after he left");
    assert_ne!(host_slots[&ParticipantId::from("p7")], bob, "a new participant is someone else");
    assert_eq!(colour_slot("p2", 10), bob, "and for a window that never saw him (after a restart)");
    // More people than colours: everyone still gets one.
    assert_eq!(m.sessions[&s1()].colour_slots(2).len(), 4);
    // White text on every chip colour meets WCAG AA (4.5:1).
    let luminance = |c: egui::Color32| {
        let channel = |v: u8| {
            let v = f64::from(v) / 255.0;
            if v <= 0.039_28 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(c.r()) + 0.7152 * channel(c.g()) + 0.0722 * channel(c.b())
    };
    for colour in roundtable::ui::app::PALETTE {
        let contrast = 1.05 / (luminance(colour) + 0.05);
        assert!(contrast >= 4.5, "{colour:?}: {contrast:.2}:1");
    }
}

#[test]
fn question_options_are_buttons_and_timestamps_show_beside_names() {
    let mut updates = [joined_as("p1", "Ann", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v2", "kind": "question",
        "questions": [{"question": "Which colour?", "options": ["red", "blue"]}], "decided_by": "consensus", "required": ["p1"]}})));
    updates.push(ev(json!({"event": "chat", "session_id": "s1", "seq": 8, "payload": {"message_id": "m8",
        "author_id": "p2", "author_name": "Bob", "text": "red please", "room": true, "at_ms": 1_796_047_400_000u64}})));
    let mut w = Window::new(false, updates);
    w.calls();
    let red = w.harness.query_by_role_and_label(egui::accesskit::Role::Button, "red");
    red.expect("an option is a button").click();
    w.settle();
    assert_eq!(
        w.calls(),
        vec![Method::AnswerQuestion(AnswerQuestionParams { vote_id: VoteId::from("v2"), answers: vec!["red".into()] })]
    );
    let time = roundtable::app::render::local_time_text(1_796_047_400_000);
    assert!(w.harness.query_by_label(&time).is_some(), "the message's time ({time}) is shown");
}

#[test]
fn rename_puts_the_cursor_in_the_title_field() {
    let mut w = host_window();
    w.click("Rename");
    w.settle();
    let title = w
        .harness
        .query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.value().as_deref() == Some("Fix login"))
        .expect("the title field");
    assert!(title.is_focused(), "typing goes to the title at once");
}

#[test]
fn shares_and_the_audit_log_name_workspaces_and_people_with_ids_on_hover_and_revoke_asks_first() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(Update::Shares(vec![serde_json::from_value(json!({"share_id": "sh1", "label": "for Ann",
        "workspaces": ["w1"], "collaborative": true, "consensus_required": true, "admission_required": false,
        "role": "participant", "uses": 1, "revoked": false, "created_at": 0, "connections": 1}))
    .unwrap()]));
    updates.push(Update::Audit(vec![roundtable::protocol::AuditEntry {
        at: 0,
        actor: "host".into(),
        action: "kicked".into(),
        target: "p1".into(),
        detail: String::new(),
    }]));
    updates.push(Update::Audit(vec![roundtable::protocol::AuditEntry {
        at: 0,
        actor: "host".into(),
        action: "kicked_and_share_revoked".into(),
        target: "p1".into(),
        detail: String::new(),
    }]));
    let mut w = Window::new(true, updates);
    w.click("Shares");
    assert!(w.harness.query_all_by_label("api").count() >= 2, "the scope names workspace w1 by its name");
    assert!(w.harness.query_by_label("w1").is_none(), "not by its id");
    assert!(w.harness.query_by_label("1 use, 1 live").is_some(), "one use, not \"1 uses\"");
    w.calls();
    w.click("Revoke");
    assert!(w.calls().is_empty(), "revoking asks first");
    w.click("Yes, revoke");
    assert_eq!(w.calls(), vec![Method::RevokeShare(ShareRef { share_id: roundtable::ids::ShareId::from("sh1") })]);
    w.click("Audit log");
    assert!(w.harness.query_by_label("Host").is_some());
    assert!(w.harness.query_by_label("Ann").is_some(), "the kicked participant p1 is named");
    assert!(w.harness.query_by_label("p1").is_none());
    // Issue 26 item 7: actions in words, not stored names.
    assert!(w.harness.query_by_label("removed, and their link revoked").is_some());
    assert!(w.harness.query_by_label("kicked_and_share_revoked").is_none());
}

#[test]
fn the_host_edits_its_settings_in_the_window_and_the_theme_is_kept() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(Update::HostSettings(HostSettings {
        host_name: "Host".into(),
        default_consensus: true,
        default_vote_deadline_ms: None,
    }));
    let mut w = Window::new(true, updates);
    let dir = tempfile::tempdir().unwrap();
    let prefs = roundtable::ui::app::prefs_path(dir.path());
    let ctx = w.harness.ctx.clone();
    w.harness.state_mut().use_prefs(prefs.clone(), &ctx);
    w.click("Settings");
    assert!(w.harness.query_by_label("Save settings").is_some());
    {
        let form = w.harness.state_mut().settings_form.as_mut().expect("the form, filled from the host's settings");
        assert_eq!(form.host_name, "Host");
        form.host_name = "Maya".into();
        form.default_consensus = false;
        form.deadline_secs = 90;
    }
    w.settle();
    w.calls();
    w.click("Save settings");
    assert_eq!(
        w.calls(),
        vec![Method::UpdateSettings(UpdateSettingsParams {
            host_name: Some("Maya".into()),
            default_consensus: Some(false),
            default_vote_deadline_ms: Some(90_000),
        })]
    );
    w.push(Update::HostSettings(HostSettings {
        host_name: "Maya".into(),
        default_consensus: false,
        default_vote_deadline_ms: Some(90_000),
    }));
    assert_eq!(w.harness.state().model.my_name, "Maya");
    assert_eq!(w.harness.state().settings_form.as_ref().unwrap().deadline_secs, 90);
    // The theme: switched at once and kept for the next start.
    w.click("Light");
    assert_eq!(w.harness.ctx.theme(), egui::Theme::Light);
    let kept = std::fs::read_to_string(&prefs).unwrap();
    assert!(kept.contains("\"light\""), "{kept}");
    w.click("Dark");
    assert_eq!(w.harness.ctx.theme(), egui::Theme::Dark);
}

#[test]
fn a_renamed_host_is_renamed_in_the_roster_and_the_timeline_says_so() {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    updates.push(ev(json!({"event": "participant_renamed", "session_id": "s1", "seq": 5,
        "payload": {"participant_id": "host", "display_name": "Maya"}})));
    let w = Window::new(false, updates);
    let s = &w.harness.state().model.sessions[&s1()];
    assert_eq!(s.roster[&ParticipantId::from("host")].display_name, "Maya");
    assert!(w.harness.query_by_label("· Host is now called Maya").is_some());
}

impl Window {
    /// A window of `size` points.
    fn sized(is_host: bool, updates: Vec<Update>, size: egui::Vec2) -> Window {
        let mut w = Window::new(is_host, updates);
        w.harness.set_size(size);
        w.settle();
        w
    }

    /// Text the window put on the clipboard in its last frame.
    fn copied(&self) -> Vec<String> {
        self.harness
            .output()
            .platform_output
            .commands
            .iter()
            .filter_map(|c| match c {
                egui::OutputCommand::CopyText(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

fn one_share() -> Update {
    Update::Shares(vec![serde_json::from_value(json!({"share_id": "sh1", "label": "for the design review team",
        "workspaces": ["w1"], "collaborative": true, "consensus_required": true, "admission_required": true,
        "role": "participant", "expires_at": 99_999_999_999_999u64, "max_uses": 10, "uses": 1, "revoked": false,
        "created_at": 0, "connections": 1}))
    .unwrap()])
}

#[test]
fn at_800_by_600_the_side_panels_fold_away_and_every_share_button_is_reachable() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(one_share());
    let mut w = Window::sized(true, updates, egui::vec2(800.0, 600.0));
    assert!(w.harness.query_by_label("Lobby").is_none(), "the sessions panel is folded away");
    assert!(w.harness.query_by_label("Mute").is_none(), "and so is the roster");
    w.click("People");
    assert_eq!(w.harness.query_all_by_label("Mute").count(), 2, "opened on demand");
    w.click("Sessions list");
    assert!(w.harness.query_by_label("Lobby").is_some());
    w.click("Shares");
    let revoke = w.harness.get_by_label("Revoke");
    revoke.scroll_to_me();
    w.harness.run_steps(30);
    let r = w.harness.get_by_label("Revoke").rect();
    assert!(r.max.x < 800.0 && r.max.y < 600.0, "in view: {r:?}");
    w.harness.get_by_label("Revoke").click_accesskit();
    w.settle();
    assert!(w.harness.query_by_label("Yes, revoke").is_some(), "Revoke is reachable in a small window");
    // Wide again: both panels come back.
    w.harness.set_size(egui::vec2(1400.0, 900.0));
    w.settle();
    w.click("Chat");
    assert!(w.harness.query_by_label("Lobby").is_some() && w.harness.query_all_by_label("Mute").count() == 2);
}

/// Issue 26 item 8: at the default 1200×760, once someone had waited in the lobby, the left panel
/// widened for good and the Shares table lost its Revoke button off the right edge; its
/// confirmation was off-screen.
#[test]
fn at_the_default_size_a_lobby_entry_does_not_widen_the_panel_and_revoke_and_its_confirmation_are_in_view() {
    let mut updates = joined_as("host", "Host", Role::Host);
    updates.push(one_share());
    updates.push(ev(
        json!({"event": "lobby", "payload": {"participant_id": "p4", "display_name": "Daniela Schmidt-Okonkwo",
        "share_id": "sh1", "admission": "pending"}}),
    ));
    let mut w = Window::sized(true, updates, egui::vec2(1200.0, 760.0));
    let refuse = w.harness.get_by_label("Refuse").rect();
    assert!(refuse.max.x <= 250.0, "the lobby entry fits the 240 px panel: {refuse:?}");
    w.click("Shares");
    let right_panel = w.harness.get_all_by_label("Mute").map(|m| m.rect().min.x).fold(f32::MAX, f32::min);
    let revoke = w.harness.get_by_label("Revoke").rect();
    assert!(revoke.min.x > 250.0 && revoke.max.x < right_panel, "Revoke is whole, between the panels: {revoke:?}");
    assert!(revoke.max.y < 760.0, "{revoke:?}");
    w.click("Revoke");
    let yes = w.harness.get_by_label("Yes, revoke").rect();
    assert!(yes.max.x < right_panel && yes.max.y < 760.0, "the confirmation is in view: {yes:?}");
    let says =
        w.harness.query_by_label("Revoke this link? It stops working and the 1 connection through it is closed.");
    assert!(says.is_some(), "the confirmation says what revoking does");
}

/// Issue 26: the roster read "Host (you) host" with tiny badges.
#[test]
fn the_roster_says_who_someone_is_once() {
    let w = Window::new(true, joined_as("host", "Host", Role::Host));
    assert!(w.harness.query_by_label("(you)").is_some(), "the host's own row: its name already says host");
    assert!(w.harness.query_by_label(" host ").is_none() && w.harness.query_by_label("(you, host)").is_none());
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    assert!(w.harness.query_by_label("(you)").is_some());
    assert!(w.harness.query_by_label("(host)").is_none(), "a host named Host needs no badge");
    w.push(ev(json!({"event": "participant_renamed", "session_id": "s1", "seq": 5,
        "payload": {"participant_id": "host", "display_name": "Maya"}})));
    assert!(w.harness.query_by_label("(host)").is_some(), "a host named Maya is marked as the host");
}

/// Issue 26: a remote refused at the lobby was left on "No session yet.".
#[test]
fn a_remote_refused_at_the_lobby_is_told_so_where_the_chat_would_be() {
    let updates = vec![
        Update::Identity { me: "p4".into(), name: "Dan".into(), role: Role::Participant },
        Update::Connection(ConnectionState::Lobby),
    ];
    let mut w = Window::new(false, updates);
    assert!(w.harness.query_by_label("You are in the lobby. The host will let you in.").is_some());
    w.push(ev(json!({"event": "admission", "payload": {"admission": "refused"}})));
    assert!(w.harness.query_by_label("Not connected: the host refused to let you in.").is_some());
    assert!(w.harness.query_by_label("No session yet.").is_none());
}

#[test]
fn the_host_invites_from_the_chat_view_and_copies_the_link_and_commands() {
    let mut w = host_window();
    w.click("Invite people");
    w.calls();
    w.click("Create invite link");
    let calls = w.calls();
    assert!(
        matches!(&calls[..], [Method::MintShare(p)] if p.workspaces == vec![WorkspaceId::from("w1")] && p.collaborative),
        "{calls:?}"
    );
    let link = "roundtable://127.0.0.1:7447/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ#sha256=00ff";
    w.push(Update::Minted(
        serde_json::from_value(json!({"share": {"share_id": "sh1", "label": "invite Fix login",
        "workspaces": ["w1"], "collaborative": true, "consensus_required": true, "admission_required": false,
        "role": "participant", "uses": 0, "revoked": false, "created_at": 0, "connections": 0},
        "token": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "link": link}))
        .unwrap(),
    ));
    assert!(w.harness.query_by_label(link).is_some(), "the link is on the chat view");
    w.harness.get_by_label("Copy link").click();
    w.harness.step();
    assert_eq!(w.copied(), vec![link.to_string()]);
    w.settle();
    assert!(w.harness.query_by_label("link copied to the clipboard").is_some());
    w.harness.get_by_label("Copy command").click();
    w.harness.step();
    assert_eq!(w.copied(), vec![format!("roundtable connect '{link}' --name THEIR_NAME")]);
    w.harness.get_by_label("Copy join command").click();
    w.harness.step();
    assert_eq!(w.copied(), vec![format!("ROUNDTABLE_LINK='{link}' roundtable join --name THEIR_NAME")]);
    // People without roundtable get the one-line install beside the link.
    w.harness.get_by_label("Copy install command").click();
    w.harness.step();
    assert_eq!(w.copied(), vec![roundtable::app::install::install_one_liner()]);
    // Someone comes in: the box folds away, and opens again with the link still there.
    w.push(ev(json!({"event": "participant_joined", "session_id": "s1", "seq": 5, "payload": {"participant_id": "p5",
        "display_name": "Cy", "role": "participant", "muted": false, "presence": "connected"}})));
    assert!(w.harness.query_by_label(link).is_none());
    w.click("Invite people");
    assert!(w.harness.query_by_label(link).is_some());
}

#[test]
fn a_lobby_entry_with_an_unknown_share_makes_the_host_window_fetch_the_share_list() {
    let mut w = host_window();
    while w.actions.try_recv().is_ok() {}
    w.push(ev(json!({"event": "lobby", "payload": {"participant_id": "p9", "display_name": "Dan", "share_id": "sh7",
        "admission": "pending"}})));
    let mut refreshed = false;
    while let Ok(a) = w.actions.try_recv() {
        refreshed |= a == Action::RefreshShares;
    }
    assert!(refreshed, "so the lobby can name the share by its label");
}

#[test]
fn the_host_sees_each_workspaces_agent_as_registered_and_refreshes_it_after_adding_one() {
    let mut w = host_window();
    w.push(Update::WorkspaceAgents(
        [(WorkspaceId::from("w1"), "command (/home/ann/bots/agent.py --fast)".to_string())].into(),
    ));
    assert!(w.harness.query_by_label("agent: command (/home/ann/bots/agent.py --fast)").is_some());
    while w.actions.try_recv().is_ok() {}
    w.push(Update::WorkspaceAdded(WorkspaceInfo {
        id: WorkspaceId::from("w2"),
        name: "web".into(),
        agent: "command".into(),
        agent_detail: None,
    }));
    let mut asked = false;
    while let Ok(a) = w.actions.try_recv() {
        asked |= a == Action::LoadWorkspaceAgents;
    }
    assert!(asked, "the new workspace's resolved command is read back");
}

// ------------------------------------------------------------------------------------------
// The start screen of `roundtable connect` without a link (nearby hosts injected as updates: no
// real mDNS here)
// ------------------------------------------------------------------------------------------

/// The host of [`start_link`]: its certificate's fingerprint starts with `0123456789abcdef`.
const LINK_FP_PREFIX: &str = "0123456789abcdef";

fn start_link() -> String {
    format!(
        "roundtable://127.0.0.1:7447/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ#sha256={LINK_FP_PREFIX}{}",
        "0".repeat(48)
    )
}

fn nearby(instance: &str, name: &str, fp: &str, addresses: &[&str]) -> Update {
    Update::Nearby(NearbyChange::Seen(NearbyHost {
        instance: instance.into(),
        name: name.into(),
        version: "0.1.0".into(),
        fingerprint_prefix: fp.into(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }))
}

/// The host of [`start_link`], found on the LAN at 192.168.1.20.
fn ann_laptop() -> Update {
    nearby("ann-laptop", "Ann's laptop", LINK_FP_PREFIX, &["192.168.1.20:7447"])
}

impl Window {
    /// A remote window opened without a link, on its start screen.
    fn start_screen(ask_name: bool, updates: Vec<Update>) -> Window {
        Window::over(ViewModel::start_screen("ann".into(), ask_name), updates, egui::vec2(1200.0, 800.0))
    }

    /// Pastes `text` into the start screen's link field, in place of what it held.
    fn paste_link(&mut self, text: &str) {
        self.harness.state_mut().start_link.clear();
        self.settle();
        self.harness.get_by_label("Link you were sent").focus();
        self.settle();
        self.harness.get_by_label("Link you were sent").type_text(text);
        self.settle();
    }

    fn connect_enabled(&self) -> bool {
        use egui_kittest::kittest::NodeT as _;
        !self.harness.get_by_label("Connect").accesskit_node().is_disabled()
    }

    /// Every action sent so far.
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.actions.try_recv().ok()).collect()
    }
}

#[test]
fn the_start_screen_lists_nearby_hosts_as_they_come_and_go_saying_a_link_is_still_needed() {
    let mut w = Window::start_screen(
        true,
        vec![ann_laptop(), nearby("bob-desk", "Bob's desk", "fedcba9876543210", &["192.168.1.31:7447"])],
    );
    assert!(w.harness.query_by_label("Join a roundtable").is_some());
    assert!(w.harness.query_by_label("roundtable — remote").is_none(), "no chat view yet");
    assert!(w.harness.query_by_label("Nearby hosts").is_some());
    let note = "Joining still needs the link from the host: its token is what lets you in";
    assert!(w.harness.query_by_label_contains(note).is_some(), "the list is no way in by itself");
    let ann = "Ann's laptop — roundtable 0.1.0 — 192.168.1.20:7447 — certificate sha256=0123456789abcdef…";
    assert!(w.harness.query_by_label(ann).is_some(), "name, version, address and fingerprint prefix");
    assert!(w.harness.query_by_label_contains("Bob's desk — roundtable 0.1.0 — 192.168.1.31:7447").is_some());
    assert_eq!(w.harness.query_all_by_label("seen just now").count(), 2, "and how long ago each was seen");
    assert!(w.harness.query_by_label_contains("the host of your link").is_none(), "no link pasted yet");
    // A host that withdraws its advertisement leaves the list.
    w.push(Update::Nearby(NearbyChange::Gone("bob-desk".into())));
    assert!(w.harness.query_by_label_contains("Bob's desk").is_none());
    assert!(w.harness.query_by_label(ann).is_some());
    // The name asked for (no --name), filled with the account's.
    assert_eq!(w.harness.get_by_label("Your name").value().as_deref(), Some("ann"));
    assert!(w.actions().is_empty(), "nothing is sent before Connect");
}

#[test]
fn connect_waits_for_a_link_that_parses_and_a_bad_link_says_why_under_the_field() {
    let mut w = Window::start_screen(false, vec![]);
    assert!(w.harness.query_by_label("Your name").is_none(), "--name was given");
    assert!(!w.connect_enabled(), "no link yet");
    assert!(w.harness.query_by_label_contains("none found yet").is_some(), "an empty list says so");
    w.paste_link("https://example.org/join");
    assert!(!w.connect_enabled());
    assert!(
        w.harness
            .query_by_label_contains(
                "Not a link roundtable can use: not a roundtable link: it must start with \"roundtable://\""
            )
            .is_some(),
        "the reason is under the field"
    );
    // A link cut short (no fingerprint) is not one either.
    w.paste_link("roundtable://127.0.0.1:7447/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ");
    assert!(!w.connect_enabled());
    assert!(w.harness.query_by_label_contains("copy the whole link").is_some());
    w.paste_link(&start_link());
    assert!(w.harness.query_by_label_contains("Not a link").is_none());
    assert!(w.connect_enabled());
    w.click("Connect");
    let link = roundtable::net::link::Link::parse(&start_link()).unwrap();
    assert_eq!(w.actions(), vec![Action::Connect { link, name: "ann".into() }]);
    assert!(w.harness.query_by_label("Join a roundtable").is_none(), "the window connects");
    assert!(w.harness.query_by_label("connecting…").is_some());
    // A first connection that never works brings the start screen back, saying why.
    w.push(Update::BackToStart("cannot connect: cannot reach 127.0.0.1:7447: Connection refused".into()));
    assert!(w.harness.query_by_label("Join a roundtable").is_some());
    assert!(w
        .harness
        .query_by_label("Could not connect: cannot connect: cannot reach 127.0.0.1:7447: Connection refused")
        .is_some());
    assert!(w.connect_enabled(), "the link is still there to fix or try again");
}

#[test]
fn the_host_of_the_pasted_link_is_marked_with_the_address_the_window_falls_back_to() {
    let mut w = Window::start_screen(
        true,
        vec![ann_laptop(), nearby("impostor", "Ann's laptop", "0123456789abcdee", &["192.168.1.66:7447"])],
    );
    w.paste_link(&start_link());
    let marks: Vec<String> =
        w.harness.query_all_by_label_contains("the host of your link").map(|n| n.value().unwrap_or_default()).collect();
    assert_eq!(marks, ["the host of your link — also at 192.168.1.20:7447"], "one mark, on the matching host only");
    // The same decision `join --nearby` makes: only other addresses than the link's own.
    let m = &w.harness.state().model;
    let link = roundtable::net::link::Link::parse(&start_link()).unwrap();
    let hosts: Vec<NearbyHost> = m.start.as_ref().unwrap().nearby.values().map(|(h, _)| h.clone()).collect();
    let fallback: Vec<String> =
        roundtable::app::nearby::fallback_addresses(&link, &hosts).iter().map(ToString::to_string).collect();
    assert_eq!(fallback, ["192.168.1.20:7447"]);
    // A host found at the link's own address is its host, with nothing else to fall back to.
    let rows = m.nearby_rows(
        Some(&roundtable::net::link::Link::parse(&start_link().replace("127.0.0.1", "192.168.1.20")).unwrap()),
        0,
    );
    assert_eq!(rows.iter().filter_map(|r| r.of_link.clone()).collect::<Vec<_>>(), ["the host of your link"]);
}

#[test]
fn nearby_hosts_say_how_long_ago_they_were_seen_and_only_the_start_screen_keeps_them() {
    let mut m = ViewModel::start_screen("ann".into(), true);
    m.apply_at(nearby("a", "Zed", "", &[]), 1_000);
    m.apply_at(nearby("b", "Amy", LINK_FP_PREFIX, &["10.0.0.5:7447"]), 1_000);
    m.apply_at(nearby("a", "Zed", "", &["10.0.0.9:7447"]), 50_000);
    let rows = m.nearby_rows(None, 61_000);
    let seen: Vec<(&str, &str)> = rows.iter().map(|r| (r.text.as_str(), r.seen.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("Amy — roundtable 0.1.0 — 10.0.0.5:7447 — certificate sha256=0123456789abcdef…", "seen 1 min ago"),
            ("Zed — roundtable 0.1.0 — 10.0.0.9:7447 — no certificate fingerprint", "seen 11 s ago"),
        ],
        "by name; seen again when the LAN answers again"
    );
    assert_eq!(seen_text(1_999), "seen just now");
    // The host's window and a remote opened with a link have no start screen: nothing is kept.
    let mut host = ViewModel::new(true);
    host.apply(nearby("a", "Zed", "", &[]));
    assert_eq!(host.start, None);
    assert!(host.nearby_rows(None, 0).is_empty());
}

#[test]
fn a_remote_window_says_whether_its_connection_is_relayed_or_direct() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(Update::Route("relayed through http://10.0.0.1:3340/".into()));
    assert!(w.harness.query_by_label("connected — relayed through http://10.0.0.1:3340/").is_some());
    // Hole punching succeeded: iroh moved the connection to a direct path.
    w.push(Update::Route("direct to 203.0.113.7:41000 (peer to peer)".into()));
    assert!(w.harness.query_by_label("connected — direct to 203.0.113.7:41000 (peer to peer)").is_some());
    assert!(w.harness.query_by_label("connected — relayed through http://10.0.0.1:3340/").is_none());
}

#[test]
fn a_resolved_card_of_an_earlier_turn_is_not_pinned_during_the_next_turn() {
    // Issue 26 item 2.
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn(), plan_vote()].concat();
    updates.push(ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 9, "payload": {"vote_id": "v1",
        "outcome": "approved", "resolved_by": "consensus"}})));
    let mut w = Window::new(false, updates);
    assert!(w.harness.query_by_label_contains("Read the code").is_some(), "the outcome stays up during its turn");
    w.push(ev(json!({"event": "turn_ended", "session_id": "s1", "seq": 10, "payload": {"turn_id": 1,
        "holder_id": "p1", "reason": "completed"}})));
    w.push(ev(json!({"event": "message", "session_id": "s1", "seq": 11, "payload": {"message_id": "m2",
        "author_id": "p2", "author_name": "Bob", "text": "next", "client_msg_id": "c-2"}})));
    w.push(ev(json!({"event": "turn_started", "session_id": "s1", "seq": 12, "payload": {"turn_id": 2,
        "holder_id": "p2", "holder_name": "Bob"}})));
    assert!(w.harness.query_by_label_contains("Read the code").is_none(), "turn 1's plan card is gone in turn 2");
}

#[test]
fn the_agents_text_does_not_say_streaming_while_it_waits_for_a_vote() {
    // Issue 26: "streaming…" was shown while the agent waited for the room's vote.
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(ev(json!({"event": "agent_delta", "session_id": "s1", "payload": {"turn_id": 1,
        "text": "Here is my plan."}})));
    let mut w = Window::new(false, updates);
    assert!(w.harness.query_by_label("streaming…").is_some());
    for u in plan_vote() {
        w.push(u);
    }
    assert!(w.harness.query_by_label("streaming…").is_none(), "it is not streaming");
    assert!(w.harness.query_by_label("waiting for the vote…").is_some());
}

#[test]
fn the_mint_form_starts_blank_after_a_link_is_made() {
    // Issue 26: the form kept the last link's label.
    let mut w = Window::new(true, joined_as("host", "Host", Role::Host));
    w.harness.state_mut().mint.label = "for Ann".into();
    let result: MintShareResult = serde_json::from_value(json!({"share": {"share_id": "sh1", "label": "for Ann",
        "workspaces": ["w1"], "collaborative": true, "consensus_required": true, "admission_required": false,
        "role": "participant", "uses": 0, "revoked": false, "created_at": 0, "connections": 0},
        "token": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ",
        "link": "roundtable://127.0.0.1:7447/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ#sha256=00ff"}))
    .unwrap();
    w.push(Update::Minted(result));
    assert_eq!(w.harness.state().mint.label, "");
}

// ------------------------------------------------------------------------------------------
// Issue 26: nothing typed is lost; errors speak to people
// ------------------------------------------------------------------------------------------

#[test]
fn the_turn_holder_is_offered_the_room_not_the_agent_while_their_turn_runs() {
    for (me, name, role, is_host, turn) in [
        ("p1", "Ann", Role::Participant, false, ann_takes_the_turn()),
        (
            "host",
            "Host",
            Role::Host,
            true,
            vec![ev(json!({"event": "turn_started", "session_id": "s1", "seq": 5,
                "payload": {"turn_id": 1, "holder_id": "host", "holder_name": "Host"}}))],
        ),
    ] {
        let mut w = Window::new(is_host, [joined_as(me, name, role), turn].concat());
        assert!(w.harness.query_by_label("To the agent").is_none(), "{name} cannot prompt during their own turn");
        assert!(
            w.harness.query_by_label("The agent is working on your prompt — chat with the room").is_some(),
            "{name} is told why"
        );
        assert!(w.harness.query_by_label("Cancel turn").is_some(), "{name} may still cancel");
        w.calls();
        w.harness.state_mut().composer = "while you work: the tests are in tests/".into();
        w.settle();
        w.click("Send");
        let calls = w.calls();
        assert!(matches!(&calls[..], [Method::SendChat(p)] if p.text.starts_with("while you work")), "{calls:?}");
    }
}

#[test]
fn the_composer_keeps_the_text_until_the_host_accepts_it() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.calls();
    w.harness.state_mut().composer = "fix the login".into();
    w.settle();
    w.click("Send");
    let calls = w.calls();
    assert!(matches!(&calls[..], [Method::SendMessage(p)] if p.text == "fix the login"), "{calls:?}");
    assert_eq!(w.harness.state().composer, "fix the login", "nothing is cleared before the host accepts it");
}

// ------------------------------------------------------------------------------------------
// Issue 26: a vote's card says what really happened, in the same words everywhere
// ------------------------------------------------------------------------------------------

fn question_vote(required: serde_json::Value) -> Update {
    ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v2", "kind": "question",
        "questions": [{"question": "Go ahead with the migration?", "options": ["yes", "no"]}],
        "decided_by": "consensus", "required": required}}))
}

#[test]
fn a_question_answered_differently_says_who_answered_what_not_that_everyone_agreed() {
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(question_vote(json!(["p1", "p2"])));
    updates.push(ev(json!({"event": "vote_progress", "session_id": "s1", "seq": 8, "payload": {"vote_id": "v2",
        "required": ["p1", "p2"], "approved": [], "denied": [], "answered": ["p1", "p2"], "pending": []}})));
    updates.push(ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 9, "payload": {"vote_id": "v2",
        "outcome": "answered", "answers": ["Ann: yes\nBob: no"], "resolved_by": "consensus"}})));
    let w = Window::new(false, updates);
    assert_eq!(w.harness.query_all_by_label_contains("agreed").count(), 0, "nobody agreed");
    assert_eq!(w.harness.query_all_by_label_contains("consensus").count(), 0);
    assert!(w.harness.query_by_label("Resolved: answered — Ann: yes · Bob: no").is_some(), "the card");
    assert!(w.harness.query_by_label("· question answered — Ann: yes · Bob: no").is_some(), "the timeline");
    // The same answer from both: still who answered what.
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    updates.push(question_vote(json!(["p1", "p2"])));
    updates.push(ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 8, "payload": {"vote_id": "v2",
        "outcome": "answered", "answers": ["yes"], "resolved_by": "consensus"}})));
    let w = Window::new(false, updates);
    assert!(w.harness.query_by_label("Resolved: answered — Ann: yes · Bob: yes").is_some());
}

/// The host's own turn (nobody else can vote): a plan vote the host alone decides.
fn host_turn_with_plan(decided_by: &str) -> Vec<Update> {
    vec![
        ev(json!({"event": "turn_started", "session_id": "s1", "seq": 5,
            "payload": {"turn_id": 1, "holder_id": "host", "holder_name": "Host"}})),
        ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 6, "payload": {"vote_id": "v1", "kind": "plan",
            "plan": "1. Read the code", "decided_by": decided_by, "required": []}})),
    ]
}

#[test]
fn a_card_the_host_alone_decides_lists_the_host_as_pending_and_no_empty_lists() {
    for decided_by in ["holder", "consensus"] {
        let mut w =
            Window::new(true, [joined_as("host", "Host", Role::Host), host_turn_with_plan(decided_by)].concat());
        assert!(w.harness.query_by_label("Plan (v1) — the host decides").is_some(), "{decided_by}: who decides");
        assert!(w.harness.query_by_label("Pending: the host").is_some(), "{decided_by}: the host still has to decide");
        for empty in ["Approved: —", "Denied: —", "Pending: —"] {
            assert!(w.harness.query_by_label(empty).is_none(), "{decided_by}: {empty}");
        }
        assert_eq!(
            w.harness.query_all_by_label_contains("your answer decides for everyone").count(),
            0,
            "{decided_by}: nobody else votes, so there is nobody to overrule"
        );
        w.push(ev(json!({"event": "vote_resolved", "session_id": "s1", "seq": 7, "payload": {"vote_id": "v1",
            "outcome": "approved", "resolved_by": "host"}})));
        assert!(w.harness.query_by_label("Resolved: approved — the host decided for everyone").is_some());
        for empty in ["Approved: —", "Denied: —", "Pending: —", "Pending: the host"] {
            assert!(w.harness.query_by_label(empty).is_none(), "{decided_by}: {empty}");
        }
    }
}

#[test]
fn the_window_and_join_word_who_decides_alike() {
    // The holder decides (no consensus) and the holder is Ann.
    let mut updates = [joined_as("p2", "Bob", Role::Participant), ann_takes_the_turn()].concat();
    let opened =
        json!({"vote_id": "v1", "kind": "plan", "plan": "1. Fix it", "decided_by": "holder", "required": ["p1"]});
    updates.push(ev(json!({"event": "vote_opened", "session_id": "s1", "seq": 7, "payload": opened})));
    let w = Window::new(false, updates);
    let join = roundtable::app::render::Renderer::new(true);
    let card = join.vote_card(&serde_json::from_value(opened).unwrap());
    // join knows no names here: Ann is "p1" to it.
    assert!(card.contains("p1 decides, as the turn holder"), "{card}");
    assert!(w.harness.query_by_label("Plan (v1) — Ann decides, as the turn holder").is_some());
    assert!(w.harness.query_by_label("Pending: Ann").is_some());
}

#[test]
fn a_refused_send_keeps_the_text_and_says_why_in_words_without_ids_or_method_names() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.calls();
    w.harness.state_mut().composer = "fix the login".into();
    w.settle();
    w.click("Send");
    let calls = w.calls();
    let Some(Method::SendMessage(sent)) = calls.first().cloned() else { panic!("{calls:?}") };
    assert!(w.harness.query_by_label("Send").is_none(), "one message at a time: {calls:?}");
    // Ann took the turn just before; the host refuses Bob's prompt.
    for u in ann_takes_the_turn() {
        w.push(u);
    }
    w.push(Update::SendFailed {
        session_id: s1(),
        client_msg_id: sent.client_msg_id.clone(),
        text: sent.text.clone(),
        code: Some(ErrorCode::TurnLocked),
        message: "Ann (p1) holds the turn; wait until the agent finishes".into(),
    });
    assert_eq!(w.harness.state().composer, "fix the login", "the text is kept");
    let said = "Ann has the turn; your message is kept until the agent finishes";
    assert!(w.harness.query_by_label(said).is_some());
    assert_eq!(w.harness.query_all_by_label_contains("send_message").count(), 0);
    assert_eq!(w.harness.query_all_by_label_contains("(p1)").count(), 0);
    // The turn ends; Bob sends again and the host accepts: only now the composer empties.
    w.push(turn_ended(7, "completed"));
    w.calls();
    w.click("Send");
    let calls = w.calls();
    let Some(Method::SendMessage(again)) = calls.first().cloned() else { panic!("{calls:?}") };
    assert_eq!(w.harness.state().composer, "fix the login");
    w.push(Update::Sent { client_msg_id: again.client_msg_id });
    assert_eq!(w.harness.state().composer, "", "accepted: the composer is free");

    // Any other refusal is worded from its code, never the method or an id.
    w.push(Update::Failed {
        method: "rename_session".into(),
        code: Some(ErrorCode::Forbidden),
        message: "rename_session is a host-only method".into(),
    });
    assert!(w.harness.query_by_label("Not renamed: only the host can do that").is_some());
    w.push(Update::Failed {
        method: "vote_plan".into(),
        code: Some(ErrorCode::StaleVote),
        message: "vote v3 is already resolved".into(),
    });
    assert!(w.harness.query_by_label("Your vote was not counted: the vote was already decided").is_some());
}

#[test]
fn a_message_resent_after_a_reconnect_and_refused_comes_back_to_the_composer() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.harness.state_mut().composer = "and the tests".into();
    w.settle();
    w.push(Update::SendFailed {
        session_id: s1(),
        client_msg_id: "earlier-1".into(),
        text: "fix the login".into(),
        code: Some(ErrorCode::StorageUnavailable),
        message: "storage unavailable".into(),
    });
    assert_eq!(w.harness.state().composer, "fix the login\nand the tests");
    assert!(w
        .harness
        .query_by_label(
            "Not sent: the host cannot store anything right now; try again in a moment; your message is kept"
        )
        .is_some());
}

#[test]
fn quote_puts_the_cursor_in_the_composer() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(chat(5, "s1", ("p1", "Ann"), "don't touch the migrations"));
    let focused = |w: &Window| w.harness.query_all_by_role(egui::accesskit::Role::TextInput).any(|n| n.is_focused());
    assert!(!focused(&w));
    w.click("Quote");
    assert!(focused(&w), "after Quote the next thing typed goes into the prompt");
}

#[test]
fn no_new_messages_line_above_messages_you_watched_arrive() {
    let mut w = Window::new(false, joined_as("p2", "Bob", Role::Participant));
    w.push(chat(5, "s1", ("p1", "Ann"), "hello while you look"));
    assert!(w.harness.query_by_label("hello while you look").is_some());
    assert!(w.harness.query_by_label("— new messages —").is_none(), "you watched it arrive");
    assert_eq!(w.harness.state().model.sessions[&s1()].unread(Some(&"p2".into())), Some(0));
    // Away (another window in front): what arrives then is new, and stays marked when you are back
    // while more arrives under your eyes.
    let mut m = model_with(joined_as("p2", "Bob", Role::Participant), false);
    let me = Some(ParticipantId::from("p2"));
    m.looking(true);
    m.apply(chat(5, "s1", ("p1", "Ann"), "seen"));
    m.looking(true);
    assert_eq!(m.sessions[&s1()].first_new(me.as_ref()), None);
    assert_eq!(m.sessions[&s1()].unread(me.as_ref()), Some(0));
    m.looking(false);
    m.apply(chat(6, "s1", ("p1", "Ann"), "while you were away"));
    assert_eq!(m.sessions[&s1()].unread(me.as_ref()), Some(1));
    m.looking(true);
    m.apply(chat(7, "s1", ("p1", "Ann"), "and now"));
    m.looking(true);
    assert_eq!(m.sessions[&s1()].first_new(me.as_ref()), Some(6), "the line goes above what you missed");
    assert_eq!(m.sessions[&s1()].unread(me.as_ref()), Some(0));
}

#[test]
fn a_prompt_with_quotes_shows_them_as_quotes_not_bare_markdown_lines() {
    let mut updates = joined_as("p2", "Bob", Role::Participant);
    updates.push(ev(json!({"event": "message", "session_id": "s1", "seq": 5, "payload": {"message_id": "m1",
        "author_id": "p1", "author_name": "Ann", "text": "> Bob (room chat): don't touch the migrations\n\nrefactor the login"}})));
    let w = Window::new(false, updates);
    assert!(w.harness.query_by_label("refactor the login").is_some(), "the prompt itself");
    assert!(w.harness.query_by_label("Quoting Bob (room chat): don't touch the migrations").is_some());
    assert_eq!(w.harness.query_all_by_label_contains("> ").count(), 0, "no bare \"> \" line");
}
