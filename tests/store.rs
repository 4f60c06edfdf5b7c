//! The SQLite store on real files: migrations, round trips, atomic ticks, crash recovery,
//! external edits seen through `data_version`, and tokens never touching the disk.

use roundtable::ids::{MessageId, ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use roundtable::persist::{
    AgentSpec, AuditRow, BallotRow, EventRow, MessageRow, ParticipantRecord, ParticipantRow, Restored, SessionRecord,
    SessionRow, ShareRow, Store, StoreError, StoreOp, VoteRow, WorkspaceRow, EVENT_TAIL, HISTORY_TAIL,
};
use roundtable::protocol::{Admission, MintShareParams, Role, SessionStatus};
use roundtable::store::{migrate, Admin, AdminError, LastStop, SqliteStore};
use roundtable::token;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("roundtable.db")
}

fn workspace(n: u64) -> WorkspaceRow {
    WorkspaceRow {
        id: WorkspaceId::nth(n),
        name: format!("ws {n}"),
        dir: format!("/tmp/ws{n}"),
        agent: AgentSpec {
            kind: "command".into(),
            command: Some("/bin/agent".into()),
            args: vec!["-x".into()],
            plan_first: None,
        },
    }
}

fn session(n: u64, ws: u64) -> SessionRow {
    SessionRow {
        session: SessionRecord {
            id: SessionId::nth(n),
            workspace: WorkspaceId::nth(ws),
            title: format!("session {n}"),
            status: SessionStatus::AwaitingVote,
            agent: AgentSpec::demo(),
            vote_deadline_ms: Some(120_000),
            created_at: 1_700_000_000_000,
            allowed_tools: ["Bash".to_string(), "Read".to_string()].into(),
            agent_memory: roundtable::persist::AgentMemory { conversation: Some("cli-session-7".into()) },
            agent_settings: roundtable::protocol::AgentSettings { model: Some("haiku".into()), permission_mode: None },
        },
        turn_holder: Some(ParticipantId::nth(1)),
        turn_id: 7,
        next_seq: 12,
        streamed: "half a reply".into(),
    }
}

fn share(n: u64, token: &str) -> ShareRow {
    ShareRow {
        id: ShareId::nth(n),
        label: "for ann".into(),
        token_hash: token::hash(token),
        workspaces: [WorkspaceId::nth(1), WorkspaceId::nth(2)].into(),
        collaborative: false,
        consensus_required: true,
        admission_required: true,
        role: Role::Observer,
        expires_at: Some(1_700_000_600_000),
        max_uses: Some(3),
        uses: 1,
        revoked: false,
        created_at: 1_700_000_000_000,
        vote_deadline_ms: None,
    }
}

fn participant(n: u64) -> ParticipantRow {
    ParticipantRow {
        participant: ParticipantRecord {
            id: ParticipantId::nth(n),
            display_name: format!("Ann ({n})"),
            role: Role::Participant,
            share: Some(ShareId::nth(1)),
            muted: true,
            admission: Admission::Pending,
            resume_hash: Some(token::hash("resume")),
            sessions: [SessionId::nth(1), SessionId::nth(10)].into(),
            read: Default::default(),
        },
        gone: false,
    }
}

/// The host's row as a host writes it first.
fn host() -> ParticipantRow {
    ParticipantRow {
        participant: ParticipantRecord {
            id: ParticipantId::host(),
            display_name: "Host".into(),
            role: Role::Host,
            share: None,
            muted: false,
            admission: Admission::Admitted,
            resume_hash: None,
            sessions: Default::default(),
            read: Default::default(),
        },
        gone: false,
    }
}

fn message(n: u64, session: u64, seq: u64) -> MessageRow {
    MessageRow {
        id: MessageId::nth(n),
        session: SessionId::nth(session),
        seq,
        author_id: "p1".into(),
        author_name: "Ann".into(),
        text: format!("hello {n} ✓"),
        client_msg_id: Some(format!("c{n}")),
        created_at: 1_700_000_000_000 + n,
        room: false,
    }
}

fn event(session: u64, seq: u64) -> EventRow {
    EventRow { session: SessionId::nth(session), seq, frame: format!(r#"{{"event":"x","seq":{seq}}}"#) }
}

fn vote(n: u64, session: u64) -> VoteRow {
    VoteRow {
        id: VoteId::nth(n),
        session: SessionId::nth(session),
        turn_id: 7,
        request_id: format!("req-{n}"),
        subject_json: r#"{"kind":"plan","plan":"do it"}"#.into(),
        decided_by: "consensus".into(),
        required: vec![ParticipantId::host(), ParticipantId::nth(1)],
        deadline: Some(1_700_000_120_000),
        outcome: None,
        reason: None,
        opened_at: 1_700_000_000_000,
    }
}

fn ballot(vote: u64, voter: &str) -> BallotRow {
    BallotRow {
        vote: VoteId::nth(vote),
        voter: ParticipantId(voter.into()),
        choice: "deny".into(),
        detail: Some("too risky".into()),
        at: 1_700_000_000_500,
    }
}

fn audit(action: &str) -> AuditRow {
    AuditRow { at: 5, actor: "host".into(), action: action.into(), target: "p1".into(), detail: String::new() }
}

/// One batch with every kind of op.
fn full_batch() -> Vec<StoreOp> {
    vec![
        StoreOp::PutWorkspace(workspace(1)),
        StoreOp::PutWorkspace(workspace(2)),
        StoreOp::PutSession(session(10, 2)),
        StoreOp::PutSession(session(1, 1)),
        StoreOp::PutShare(share(1, "tok-1")),
        StoreOp::PutParticipant(participant(1)),
        StoreOp::PutParticipant(host()),
        StoreOp::PutMessage(message(2, 10, 1)),
        StoreOp::PutMessage(message(1, 1, 2)),
        StoreOp::PutMessage(MessageRow { client_msg_id: None, ..message(3, 1, 1) }),
        StoreOp::AppendEvent(event(10, 1)),
        StoreOp::AppendEvent(event(1, 2)),
        StoreOp::AppendEvent(event(1, 1)),
        StoreOp::PutVote(vote(1, 1)),
        StoreOp::PutBallot(ballot(1, "p1")),
        StoreOp::PutBallot(ballot(1, "host")),
        StoreOp::Audit(audit("joined")),
        StoreOp::Audit(audit("voted")),
        StoreOp::PutSettings(settings("Host")),
        StoreOp::PutSettings(settings("Maya")),
    ]
}

fn settings(name: &str) -> roundtable::persist::SettingsRow {
    roundtable::persist::SettingsRow {
        host_name: name.into(),
        default_consensus: false,
        default_vote_deadline_ms: Some(60_000),
    }
}

/// What `load` must return after [`full_batch`]: everything, in the documented order.
fn full_restored() -> Restored {
    let mut participants = vec![host(), participant(1)];
    participants.sort_by(|a, b| a.participant.id.cmp(&b.participant.id));
    Restored {
        workspaces: vec![workspace(1), workspace(2)],
        sessions: vec![session(1, 1), session(10, 2)],
        shares: vec![share(1, "tok-1")],
        participants,
        messages: vec![MessageRow { client_msg_id: None, ..message(3, 1, 1) }, message(1, 1, 2), message(2, 10, 1)],
        older_messages: Default::default(),
        events: vec![event(1, 1), event(1, 2), event(10, 1)],
        votes: vec![vote(1, 1)],
        ballots: vec![ballot(1, "host"), ballot(1, "p1")],
        audit_count: 2,
        settings: Some(settings("Maya")),
        summaries: Default::default(),
    }
}

fn mint_params(workspaces: &[u64]) -> MintShareParams {
    MintShareParams {
        label: "bob".into(),
        workspaces: workspaces.iter().map(|&n| WorkspaceId::nth(n)).collect(),
        collaborative: true,
        consensus_required: true,
        admission_required: false,
        role: Role::Participant,
        expires_in_ms: Some(3_600_000),
        max_uses: Some(2),
        vote_deadline_ms: None,
    }
}

/// An admin connection with one registered workspace (`w1`) pointing at a real directory.
fn admin_with_workspace(dir: &tempfile::TempDir) -> Admin {
    let mut admin = Admin::open(&db_in(dir)).unwrap();
    let work = dir.path().join("project");
    std::fs::create_dir_all(&work).unwrap();
    admin.add_workspace(None, &work, AgentSpec::demo(), 1).unwrap();
    admin
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

#[test]
fn migrations_are_applied_in_order_and_reopening_is_idempotent() {
    for (i, (name, _)) in migrate::MIGRATIONS.iter().enumerate() {
        assert!(name.starts_with(&format!("{:04}_", i + 1)), "migration {name} is out of order");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrate::LATEST);
    store.commit(&full_batch()).unwrap();
    drop(store);

    for _ in 0..2 {
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrate::LATEST);
        assert_eq!(store.load().unwrap(), full_restored());
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_database_from_a_newer_roundtable_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let newer = migrate::LATEST + 1;
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", newer).unwrap();

    let err = SqliteStore::open(&path).err().expect("a newer database must be refused");
    match &err {
        StoreError::TooNew { found, supported, path: shown } => {
            assert_eq!((*found, *supported), (newer, migrate::LATEST));
            assert!(shown.contains("roundtable.db"));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("newer than this roundtable supports") && message.contains("upgrade"), "{message}");
    assert!(matches!(Admin::open(&path), Err(StoreError::TooNew { .. })));
    // Refusing must not touch the file.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, newer);
}

#[test]
fn an_in_memory_store_round_trips_too() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    store.commit(&full_batch()).unwrap();
    assert_eq!(store.load().unwrap(), full_restored());
    assert_eq!(store.shares_changed_externally().unwrap(), None);
    assert_eq!(store.shares_changed_externally().unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Round trips and ordering
// ---------------------------------------------------------------------------------------------

#[test]
fn every_op_kind_survives_commit_and_reopen_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&full_batch()).unwrap();
    drop(store);
    assert_eq!(SqliteStore::open(&path).unwrap().load().unwrap(), full_restored());
}

#[test]
fn later_puts_replace_earlier_rows_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&full_batch()).unwrap();
    let mut s = session(1, 1);
    s.session.status = SessionStatus::Idle;
    s.turn_holder = None;
    s.next_seq = 40;
    let mut v = vote(1, 1);
    v.outcome = Some("denied".into());
    v.reason = Some("too risky".into());
    let mut b = ballot(1, "p1");
    b.choice = "approve".into();
    b.detail = None;
    let mut p = participant(1);
    p.gone = true;
    p.participant.resume_hash = None;
    let replaced_event = EventRow { frame: "replaced".into(), ..event(1, 2) };
    store
        .commit(&[
            StoreOp::PutSession(s.clone()),
            StoreOp::PutVote(v.clone()),
            StoreOp::PutBallot(b.clone()),
            StoreOp::PutParticipant(p.clone()),
            StoreOp::AppendEvent(replaced_event.clone()),
        ])
        .unwrap();
    let r = store.load().unwrap();
    assert_eq!(r.sessions[0], s);
    assert_eq!(r.votes, vec![v]);
    assert_eq!(r.ballots[1], b);
    assert_eq!(r.participants.iter().find(|x| x.participant.id == p.participant.id), Some(&p));
    assert_eq!(r.events[1], replaced_event);
    assert_eq!(r.audit_count, 2);
}

#[test]
fn clear_session_deletes_only_that_sessions_messages_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&full_batch()).unwrap();
    // The clear and the first event of the new history are in the same tick, in that order.
    store.commit(&[StoreOp::ClearSession(SessionId::nth(1)), StoreOp::AppendEvent(event(1, 3))]).unwrap();
    let r = store.load().unwrap();
    assert_eq!(r.messages, vec![message(2, 10, 1)]);
    assert_eq!(r.events, vec![event(1, 3), event(10, 1)]);
    assert_eq!(r.sessions.len(), 2, "the session itself stays");
    assert_eq!(r.votes.len(), 1, "votes and the audit trail stay");
}

#[test]
fn load_returns_only_the_last_event_tail_of_each_session_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    let extra = 5u64;
    let mut ops = vec![
        StoreOp::PutWorkspace(workspace(1)),
        StoreOp::PutSession(session(2, 1)),
        StoreOp::PutSession(session(10, 1)),
    ];
    // Written newest first, to show that order comes from the seq, not from insertion.
    ops.extend((1..=EVENT_TAIL as u64 + extra).rev().map(|seq| StoreOp::AppendEvent(event(10, seq))));
    ops.extend((1..=3).map(|seq| StoreOp::AppendEvent(event(2, seq))));
    store.commit(&ops).unwrap();

    let events = store.load().unwrap().events;
    assert_eq!(events.len(), EVENT_TAIL + 3);
    assert_eq!(&events[..3], &[event(2, 1), event(2, 2), event(2, 3)], "s2 sorts before s10");
    let s10: Vec<u64> = events[3..].iter().map(|e| e.seq).collect();
    assert_eq!(s10, (extra + 1..=EVENT_TAIL as u64 + extra).collect::<Vec<_>>());
}

#[test]
fn load_returns_only_the_latest_messages_of_each_session_and_older_pages_come_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    let total = HISTORY_TAIL as u64 + 50;
    let mut ops = vec![
        StoreOp::PutWorkspace(workspace(1)),
        StoreOp::PutSession(session(2, 1)),
        StoreOp::PutSession(session(10, 1)),
    ];
    // s10 has more than the tail; s2 has three messages. Written newest first: order comes from seq.
    ops.extend((1..=total).rev().map(|n| StoreOp::PutMessage(message(100 + n, 10, n))));
    ops.extend((1..=3).map(|n| StoreOp::PutMessage(message(n, 2, n))));
    store.commit(&ops).unwrap();

    let r = store.load().unwrap();
    assert_eq!(r.messages.len(), HISTORY_TAIL + 3);
    assert_eq!(r.messages[..3].iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3], "s2 sorts before s10");
    let s10: Vec<u64> = r.messages[3..].iter().map(|m| m.seq).collect();
    assert_eq!(s10, (total - HISTORY_TAIL as u64 + 1..=total).collect::<Vec<_>>());
    assert_eq!(r.older_messages, [SessionId::nth(10)].into_iter().collect(), "only s10 has older messages");

    // Paging back from the tail reaches the first message, each page oldest first.
    let (page, more) = store.messages_before(&SessionId::nth(10), 51, 20).unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), (31..=50).collect::<Vec<_>>());
    assert!(more);
    let (page, more) = store.messages_before(&SessionId::nth(10), 31, 100).unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
    assert!(!more, "nothing before seq 1");
    let (page, more) = store.messages_before(&SessionId::nth(2), u64::MAX, 3).unwrap();
    assert_eq!(page.len(), 3);
    assert!(!more);

    // Idempotency keys of old messages are found in the store, per session and author.
    let found = store.message_by_client_id(&SessionId::nth(10), "p1", "c105").unwrap().unwrap();
    assert_eq!((found.id, found.seq), (MessageId::nth(105), 5));
    assert_eq!(store.message_by_client_id(&SessionId::nth(2), "p1", "c105").unwrap(), None);
    assert_eq!(store.message_by_client_id(&SessionId::nth(10), "p2", "c105").unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Atomicity and crashes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_tick_of_streamed_text_only_does_not_wait_for_the_disk_and_everything_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&full_batch()).unwrap();
    assert_eq!(store.synchronous().unwrap(), 2, "FULL");
    let streamed =
        |offset: u64, text: &str| StoreOp::AppendStreamed { session: SessionId::nth(1), offset, text: text.into() };
    // Previews of a reply: committed (in the log, kept by a killed host), not synced.
    store.commit(&[streamed(0, "Hello, ")]).unwrap();
    assert_eq!(store.synchronous().unwrap(), 1, "NORMAL for streamed text only");
    // Anything else in the tick (here a message with it) is synced, with the log before it.
    store.commit(&[streamed(7, "world"), StoreOp::PutMessage(message(9, 1, 3))]).unwrap();
    assert_eq!(store.synchronous().unwrap(), 2, "FULL again");
    store.commit(&[streamed(12, "!")]).unwrap();
    assert_eq!(store.synchronous().unwrap(), 1);
    // The process goes away without a clean stop: every commit is there.
    drop(store);
    let restored = SqliteStore::open(&path).unwrap().load().unwrap();
    let s1 = restored.sessions.iter().find(|s| s.session.id == SessionId::nth(1)).unwrap();
    assert_eq!(s1.streamed, "half a replyHello, world!", "the session row's text, then every chunk");
    assert!(restored.messages.iter().any(|m| m.id == MessageId::nth(9)));
}

#[test]
fn a_clean_stop_is_synced_even_after_a_tick_of_streamed_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (mut store, _) = SqliteStore::open_for_host(&path).unwrap();
    store.commit(&full_batch()).unwrap();
    store.commit(&[StoreOp::AppendStreamed { session: SessionId::nth(1), offset: 0, text: "Hi".into() }]).unwrap();
    assert_eq!(store.synchronous().unwrap(), 1);
    store.stop_cleanly();
    assert_eq!(store.synchronous().unwrap(), 2, "the clean stop (and the log before it) reaches the disk");
}

#[test]
fn a_failing_batch_applies_nothing_and_keeps_earlier_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&full_batch()).unwrap();

    // Valid writes first, then a ballot on a vote that does not exist: the whole tick fails.
    let batch_b = vec![
        StoreOp::PutMessage(message(9, 1, 3)),
        StoreOp::AppendEvent(event(1, 3)),
        StoreOp::PutSession({
            let mut s = session(1, 1);
            s.session.title = "renamed".into();
            s
        }),
        StoreOp::ClearSession(SessionId::nth(10)),
        StoreOp::Audit(audit("kicked")),
        StoreOp::PutBallot(ballot(99, "p1")),
    ];
    let err = store.commit(&batch_b).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.load().unwrap(), full_restored());

    // The connection stays usable, and a reopen sees the same state.
    store.commit(&[StoreOp::Audit(audit("after"))]).unwrap();
    drop(store);
    let expected = Restored { audit_count: 3, ..full_restored() };
    assert_eq!(SqliteStore::open(&path).unwrap().load().unwrap(), expected);
}

#[test]
fn an_out_of_range_value_fails_the_tick_naming_the_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&full_batch()).unwrap();
    let huge = u64::MAX;
    let err = store
        .commit(&[StoreOp::PutMessage(message(8, 1, 9)), StoreOp::AppendEvent(event(1, huge))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("event s1#"), "{err}");
    assert_eq!(store.load().unwrap(), full_restored());
}

/// `session`'s rows in the events table, read past the store: (how many, lowest seq, highest
/// seq). Seqs are unique, so `count == highest - lowest + 1` means no gap.
fn stored_events(path: &Path, session: u64) -> (u64, u64, u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM events WHERE session = ?1",
        [SessionId::nth(session).as_str()],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )
    .unwrap()
}

#[test]
fn the_event_log_keeps_only_each_sessions_replay_tail_and_a_restart_loads_that_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    let sessions = [session(1, 1), session(2, 1)].map(StoreOp::PutSession);
    store.commit(&[vec![StoreOp::PutWorkspace(workspace(1))], sessions.to_vec()].concat()).unwrap();
    let (tail, last) = (EVENT_TAIL as u64, EVENT_TAIL as u64 + 500);
    let append = |seqs: std::ops::RangeInclusive<u64>| seqs.map(|seq| StoreOp::AppendEvent(event(1, seq)));
    // A few events per tick, as a host appends them...
    let mut seq = 1;
    while seq + 7 <= tail {
        store.commit(&append(seq..=seq + 6).collect::<Vec<_>>()).unwrap();
        seq += 7;
    }
    store.commit(&append(seq..=tail).collect::<Vec<_>>()).unwrap();
    assert_eq!(stored_events(&path, 1), (tail, 1, tail), "nothing goes before the tail is full");
    store
        .commit(&append(tail + 1..=tail + 200).chain([StoreOp::AppendEvent(event(2, 1))]).collect::<Vec<_>>())
        .unwrap();
    // ...and the rest in one commit, as the retry after a storage failure stores everything since.
    store.commit(&append(tail + 201..=last).collect::<Vec<_>>()).unwrap();

    assert_eq!(stored_events(&path, 1), (tail, last - tail + 1, last), "exactly the newest EVENT_TAIL events stay");
    assert_eq!(stored_events(&path, 2), (1, 1, 1), "other sessions keep theirs");
    drop(store);
    let restored = SqliteStore::open(&path).unwrap().load().unwrap().events;
    let expected: Vec<EventRow> = (last - tail + 1..=last).map(|seq| event(1, seq)).chain([event(2, 1)]).collect();
    assert!(restored == expected, "a restart loads the same tail");
}

#[test]
fn a_session_summary_and_its_tails_are_what_a_full_load_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&full_batch()).unwrap();
    // s10 past both tails, s3 with neither events nor messages.
    let total = EVENT_TAIL as u64 + 30;
    let mut ops = vec![StoreOp::PutSession(session(3, 1))];
    ops.extend((2..=total).map(|n| StoreOp::PutMessage(message(100 + n, 10, n))));
    ops.extend((2..=total).map(|seq| StoreOp::AppendEvent(event(10, seq))));
    store.commit(&ops).unwrap();

    let full = store.load().unwrap();
    let lazy = store.load_without_tails().unwrap();
    assert_eq!(lazy, full.clone().without_tails(), "the rows, and per session its last seq and newest message");
    assert!(lazy.messages.is_empty() && lazy.events.is_empty() && lazy.older_messages.is_empty());
    let s10 = &lazy.summaries[&SessionId::nth(10)];
    assert_eq!(s10.last_event_seq, total);
    assert_eq!(s10.newest_message, Some((MessageId::nth(100 + total), message(100 + total, 10, total).created_at)));
    assert_eq!(lazy.summaries[&SessionId::nth(3)], Default::default(), "nothing stored: nothing to summarise");
    for n in [1, 3, 10] {
        let sid = SessionId::nth(n);
        assert_eq!(store.load_tails(&sid).unwrap(), full.tails_of(&sid), "the tails of s{n}");
    }
    let tails = store.load_tails(&SessionId::nth(10)).unwrap();
    assert_eq!((tails.messages.len(), tails.has_older, tails.events.len()), (HISTORY_TAIL, true, EVENT_TAIL));
}

#[test]
fn opening_a_database_written_before_pruning_cuts_its_event_log_to_each_sessions_tail() {
    // The schema as roundtable wrote it while the event log grew for ever (migrations 1–11).
    const UNPRUNED: usize = 11;
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let tail = EVENT_TAIL as u64;
    let lengths = [(1, tail + 500), (2, tail), (3, 10), (4, tail + 1)];
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for (_, sql) in &migrate::MIGRATIONS[..UNPRUNED] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", UNPRUNED as i64).unwrap();
        tx.execute(
            "INSERT INTO workspaces (id, name, dir, agent_json) VALUES ('w1', 'ws', '/tmp', '{\"kind\":\"demo\"}')",
            [],
        )
        .unwrap();
        for (n, count) in lengths {
            tx.execute(
                "INSERT INTO sessions (id, workspace, title, status, turn_id, next_seq, agent_json, created_at)
                 VALUES (?1, 'w1', 'old', 'idle', 0, ?2, '{\"kind\":\"demo\"}', 0)",
                rusqlite::params![SessionId::nth(n).as_str(), count as i64 + 1],
            )
            .unwrap();
            for seq in 1..=count {
                let e = event(n, seq);
                tx.execute(
                    "INSERT INTO events (session, seq, frame) VALUES (?1, ?2, ?3)",
                    rusqlite::params![e.session.as_str(), seq as i64, e.frame],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrate::LATEST);
    for (n, count) in lengths {
        let kept = count.min(tail);
        assert_eq!(stored_events(&path, n), (kept, count - kept + 1, count), "s{n} had {count} events");
    }
    let restored = store.load().unwrap().events;
    assert_eq!(restored.len(), 3 * EVENT_TAIL + 10, "load still reads each session's whole tail");
}

/// Child-process half of [`a_writer_killed_mid_transaction_loses_nothing_committed`]: commits
/// the full batch, then writes a large uncommitted transaction until the parent kills it.
#[test]
#[ignore = "helper process, started by a_writer_killed_mid_transaction_loses_nothing_committed"]
fn killed_writer_helper() {
    let Ok(path) = std::env::var("ROUNDTABLE_TEST_KILL_DB") else { return };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    store.commit(&full_batch()).unwrap();
    drop(store);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    // A tiny page cache forces the uncommitted pages out into the WAL file.
    conn.pragma_update(None, "cache_size", 2).unwrap();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let frame = "x".repeat(1000);
    for seq in 100..2100 {
        tx.execute("INSERT INTO events (session, seq, frame) VALUES ('s1', ?1, ?2)", rusqlite::params![seq, frame])
            .unwrap();
    }
    tx.execute("UPDATE sessions SET title = 'half-written'", []).unwrap();
    println!("MID_TRANSACTION");
    std::thread::sleep(Duration::from_secs(120));
    unreachable!("the parent kills this process");
}

#[test]
fn a_writer_killed_mid_transaction_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_writer_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env("ROUNDTABLE_TEST_KILL_DB", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("MID_TRANSACTION") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    ready.expect("the helper reached the middle of its transaction");

    let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(wal > 0, "the uncommitted transaction reached the WAL file");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.load().unwrap(), full_restored());
    store.commit(&[StoreOp::AppendEvent(event(1, 3))]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// External edits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_mint_from_another_connection_is_seen_through_data_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    assert_eq!(store.shares_changed_externally().unwrap(), None, "the first poll sets the baseline");
    assert_eq!(store.shares_changed_externally().unwrap(), None);

    // Our own commits are not "external".
    store.commit(&[StoreOp::PutShare(share(1, "engine-token"))]).unwrap();
    assert_eq!(store.shares_changed_externally().unwrap(), None);

    let (minted, token) = admin.mint_share(&mint_params(&[1]), 1_000).unwrap();
    let seen = store.shares_changed_externally().unwrap().expect("the CLI mint is noticed");
    assert_eq!(seen.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(), vec!["sh1", "sh2"]);
    assert_eq!(seen[1], minted);
    assert!(token::matches(&token, &seen[1].token_hash));
    assert_eq!(store.shares_changed_externally().unwrap(), None, "reported once");

    admin.revoke_share(&minted.id, 2_000).unwrap();
    let seen = store.shares_changed_externally().unwrap().expect("the CLI revoke is noticed");
    assert!(seen[1].revoked);
}

#[test]
fn a_stale_engine_upsert_cannot_unrevoke_or_bring_back_a_rotated_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    let (minted, old_token) = admin.mint_share(&mint_params(&[1]), 1_000).unwrap();

    // The CLI rotates; before the host notices, it writes its stale copy (with a new use).
    let (_, new_token) = admin.rotate_share(&minted.id, 2_000).unwrap();
    let stale = ShareRow { uses: 1, ..minted.clone() };
    store.commit(&[StoreOp::PutShare(stale.clone())]).unwrap();
    let row = store.load().unwrap().shares.remove(0);
    assert!(token::matches(&new_token, &row.token_hash), "the rotated token stays valid");
    assert!(!token::matches(&old_token, &row.token_hash), "the old token never comes back");
    assert_eq!(row.uses, 1, "the engine's own change is kept");

    // The CLI revokes; the host's stale copy still says `revoked: false`.
    admin.revoke_share(&minted.id, 3_000).unwrap();
    store.commit(&[StoreOp::PutShare(ShareRow { uses: 2, ..stale })]).unwrap();
    let row = store.load().unwrap().shares.remove(0);
    assert!(row.revoked, "revocation is permanent");
    assert_eq!(row.uses, 2);
}

#[test]
fn the_engine_can_still_rotate_to_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1)), StoreOp::PutShare(share(1, "a"))]).unwrap();
    store.commit(&[StoreOp::PutShare(share(1, "b"))]).unwrap();
    assert_eq!(store.load().unwrap().shares[0].token_hash, token::hash("b"));
}

#[test]
fn retiring_a_hash_that_is_already_retired_does_not_fail_the_commit() {
    // (Found by the simulator: a share whose current hash had been retired by another share's
    // rotation made every later commit fail with a UNIQUE constraint error.)
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1)), StoreOp::PutShare(share(1, "a"))]).unwrap();
    store.commit(&[StoreOp::PutShare(share(1, "b"))]).unwrap();
    store.commit(&[StoreOp::PutShare(share(2, "a"))]).unwrap();
    store.commit(&[StoreOp::PutShare(share(2, "c"))]).expect("rotating share 2 retires `a` a second time");
    let shares = store.load().unwrap().shares;
    assert_eq!(shares[1].token_hash, token::hash("c"));
}

// ---------------------------------------------------------------------------------------------
// Admin operations
// ---------------------------------------------------------------------------------------------

#[test]
fn tokens_never_reach_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let (row, first) = admin.mint_share(&mint_params(&[1]), 1_000).unwrap();
    let (_, second) = admin.rotate_share(&row.id, 2_000).unwrap();
    let (_, third) = admin.mint_share(&mint_params(&[1]), 3_000).unwrap();
    drop(admin);

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("roundtable.db") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!bytes.is_empty());
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for tok in [&first, &second, &third] {
        assert!(!contains(tok.as_bytes()), "token {tok} found in the database files");
        assert!(contains(&token::hash(tok)), "its hash is what is stored");
    }
}

#[test]
fn ids_are_one_more_than_the_largest_existing_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .commit(&[
            StoreOp::PutWorkspace(workspace(1)),
            StoreOp::PutWorkspace(workspace(9)),
            StoreOp::PutShare(share(10, "x")),
        ])
        .unwrap();
    let mut admin = Admin::open(&path).unwrap();
    let work = dir.path().join("p");
    std::fs::create_dir(&work).unwrap();
    assert_eq!(admin.add_workspace(Some("P"), &work, AgentSpec::demo(), 0).unwrap().id, WorkspaceId::nth(10));
    assert_eq!(admin.mint_share(&mint_params(&[1]), 0).unwrap().0.id, ShareId::nth(11));
    assert_eq!(admin.mint_share(&mint_params(&[9]), 0).unwrap().0.id, ShareId::nth(12));
}

#[test]
fn concurrent_mints_from_two_connections_never_share_an_id() {
    let dir = tempfile::tempdir().unwrap();
    drop(admin_with_workspace(&dir));
    let path = db_in(&dir);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut admin = Admin::open(&path).unwrap();
                (0..10).map(|i| admin.mint_share(&mint_params(&[1]), i).unwrap().0.id).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<ShareId> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    ids.sort();
    let expected: Vec<ShareId> = (1..=20).map(ShareId::nth).collect();
    assert_eq!(ids, expected);
}

#[test]
fn a_minted_share_has_the_requested_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let params = MintShareParams {
        label: "  carol ".into(),
        workspaces: vec![WorkspaceId::nth(1), WorkspaceId::nth(1)],
        collaborative: false,
        consensus_required: false,
        admission_required: true,
        role: Role::Observer,
        expires_in_ms: Some(60_000),
        max_uses: Some(1),
        vote_deadline_ms: Some(120_000),
    };
    let (row, token) = admin.mint_share(&params, 5_000).unwrap();
    assert_eq!(token.len(), 43, "256 bits in base64url");
    let expected = ShareRow {
        id: ShareId::nth(1),
        label: "carol".into(),
        token_hash: token::hash(&token),
        workspaces: [WorkspaceId::nth(1)].into(),
        collaborative: false,
        consensus_required: false,
        admission_required: true,
        role: Role::Observer,
        expires_at: Some(65_000),
        max_uses: Some(1),
        uses: 0,
        revoked: false,
        created_at: 5_000,
        vote_deadline_ms: Some(120_000),
    };
    assert_eq!(row, expected);
    assert_eq!(admin.list_shares().unwrap(), vec![expected]);
}

#[test]
fn an_unknown_workspace_is_refused_naming_the_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let err = admin.mint_share(&mint_params(&[1, 7]), 0).unwrap_err();
    assert!(matches!(&err, AdminError::UnknownWorkspace { id, .. } if id.as_str() == "w7"));
    let message = err.to_string();
    assert!(message.contains("w7") && message.contains("existing workspaces: w1"), "{message}");
    assert!(admin.list_shares().unwrap().is_empty(), "nothing minted");

    let empty = tempfile::tempdir().unwrap();
    let err = Admin::open(&db_in(&empty)).unwrap().mint_share(&mint_params(&[1]), 0).unwrap_err().to_string();
    assert!(err.contains("roundtable workspace add"), "{err}");
}

#[test]
fn share_settings_are_validated_before_minting() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    assert!(matches!(admin.mint_share(&mint_params(&[]), 0), Err(AdminError::NoWorkspaces)));
    let host_role = MintShareParams { role: Role::Host, ..mint_params(&[1]) };
    assert!(matches!(admin.mint_share(&host_role, 0), Err(AdminError::BadSettings(_))));
    let zero_uses = MintShareParams { max_uses: Some(0), ..mint_params(&[1]) };
    assert!(matches!(admin.mint_share(&zero_uses, 0), Err(AdminError::BadSettings(_))));
}

#[test]
fn revoke_and_rotate_report_unknown_ids_and_revoked_shares() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let (row, _) = admin.mint_share(&mint_params(&[1]), 0).unwrap();

    let err = admin.revoke_share(&ShareId::nth(5), 0).unwrap_err().to_string();
    assert!(err.contains("sh5") && err.contains("existing shares: sh1"), "{err}");
    assert!(admin.rotate_share(&ShareId::nth(5), 0).is_err());

    let (revoked, newly) = admin.revoke_share(&row.id, 1).unwrap();
    assert!(revoked.revoked && newly);
    let (_, newly) = admin.revoke_share(&row.id, 2).unwrap();
    assert!(!newly, "revoking twice is reported, not repeated");
    let err = admin.rotate_share(&row.id, 3).unwrap_err();
    assert!(matches!(err, AdminError::Revoked(_)), "{err}");
}

#[test]
fn admin_mutations_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = admin_with_workspace(&dir);
    let (row, _) = admin.mint_share(&mint_params(&[1]), 10).unwrap();
    admin.rotate_share(&row.id, 20).unwrap();
    admin.revoke_share(&row.id, 30).unwrap();
    admin.revoke_share(&row.id, 40).unwrap();

    let log = admin.audit(10).unwrap();
    let actions: Vec<(&str, &str, u64)> = log.iter().map(|a| (a.action.as_str(), a.target.as_str(), a.at)).collect();
    assert_eq!(
        actions,
        vec![
            ("workspace_added", "w1", 1),
            ("share_minted", "sh1", 10),
            ("share_rotated", "sh1", 20),
            ("share_revoked", "sh1", 30)
        ]
    );
    assert!(log.iter().all(|a| a.actor == "host" && a.detail.contains("via cli")));
    assert_eq!(admin.audit(1).unwrap().len(), 1, "the newest rows only");
    assert_eq!(admin.audit(1).unwrap()[0].action, "share_revoked");
}

#[test]
fn workspaces_are_canonical_existing_unique_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = Admin::open(&db_in(&dir)).unwrap();
    let work = dir.path().join("proj");
    std::fs::create_dir(&work).unwrap();
    let row = admin.add_workspace(None, &work.join("."), AgentSpec::demo(), 0).unwrap();
    assert_eq!(row.id, WorkspaceId::nth(1));
    assert_eq!(row.name, "proj");
    assert_eq!(Path::new(&row.dir), std::fs::canonicalize(&work).unwrap());

    let err = admin.add_workspace(None, &work, AgentSpec::demo(), 0).unwrap_err().to_string();
    assert!(err.contains("already registered as workspace w1"), "{err}");
    let err = admin.add_workspace(None, &dir.path().join("missing"), AgentSpec::demo(), 0).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(admin.add_workspace(None, &file, AgentSpec::demo(), 0), Err(AdminError::NotADirectory(_))));
    let no_cmd = AgentSpec { kind: "command".into(), command: None, args: vec![], plan_first: None };
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    assert!(matches!(admin.add_workspace(None, &other, no_cmd, 0), Err(AdminError::BadAgent(_))));
    let unknown = AgentSpec { kind: "gpt".into(), command: None, args: vec![], plan_first: None };
    assert!(matches!(admin.add_workspace(None, &other, unknown, 0), Err(AdminError::BadAgent(_))));
    assert_eq!(admin.list_workspaces().unwrap(), vec![row]);
}

#[test]
fn the_host_store_sees_cli_workspaces_on_load() {
    let dir = tempfile::tempdir().unwrap();
    drop(admin_with_workspace(&dir));
    let mut store = SqliteStore::open(&db_in(&dir)).unwrap();
    let restored = store.load().unwrap();
    assert_eq!(restored.workspaces.len(), 1);
    assert_eq!(restored.workspaces[0].agent, AgentSpec::demo());
    assert_eq!(restored.audit_count, 1);
}

#[test]
fn a_commit_waits_for_a_concurrent_writer_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1))]).unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let tx = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
        tx.execute("UPDATE workspaces SET name = 'held'", []).unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    let started = Instant::now();
    store.commit(&[StoreOp::PutWorkspace(WorkspaceRow { name: "mine".into(), ..workspace(1) })]).unwrap();
    holder.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(store.load().unwrap().workspaces[0].name, "mine", "applied after the other writer");
}

// ---------------------------------------------------------------------------------------------
// The CLI binary
// ---------------------------------------------------------------------------------------------

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("ROUNDTABLE_DATA_DIR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_cli_mints_a_pinned_link_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = dir.path().join("project");
    std::fs::create_dir(&work).unwrap();

    let out = cli(&data, &["workspace", "add", work.to_str().unwrap(), "--name", "Project"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Added workspace w1 \"Project\""));

    let out = cli(&data, &["share", "mint", "--workspace", "w1", "--label", "ann", "--expires-in", "2h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let link = roundtable::net::link::Link::parse(stdout.trim()).expect("stdout is exactly the link");
    assert_eq!((link.host.as_str(), link.port), ("127.0.0.1", 7447));
    let identity = roundtable::net::tls::load_or_create(&data).unwrap();
    assert_eq!(link.fingerprint.as_deref(), Some(identity.fingerprint.as_str()));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("shown only once") && stderr.contains("roundtable share rotate sh1"), "{stderr}");
    // Issue 26: the workspace by its name, not "w1".
    assert!(stderr.contains("participant for \"Project\" ("), "{stderr}");

    let shares = Admin::open(&roundtable::app::paths::database(&data)).unwrap().list_shares().unwrap();
    assert!(token::matches(&link.token, &shares[0].token_hash));

    let out = cli(&data, &["share", "list"]);
    let listing = text(&out.stdout);
    assert!(listing.starts_with("ID") && listing.contains("sh1") && listing.contains("ann"), "{listing}");
    assert!(listing.contains("Project"), "workspaces by name: {listing}");
    assert!(!listing.contains(&link.token), "share list never shows tokens");

    let out = cli(&data, &["share", "rotate", "sh1"]);
    let rotated = roundtable::net::link::Link::parse(text(&out.stdout).trim()).unwrap();
    assert_ne!(rotated.token, link.token);
    let out = cli(&data, &["share", "revoke", "sh1"]);
    assert!(out.status.success());
    assert!(text(&cli(&data, &["share", "list"]).stdout).contains("revoked"));
}

#[test]
fn the_cli_uses_the_running_hosts_address_and_explains_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("serve.json"), r#"{"addr":"127.0.0.1:9123","insecure":true}"#).unwrap();
    let work = dir.path().join("w");
    std::fs::create_dir(&work).unwrap();
    assert!(cli(&data, &["workspace", "add", work.to_str().unwrap()]).status.success());

    let out = cli(&data, &["share", "mint", "-w", "w1"]);
    assert_eq!(text(&out.stdout).trim().split('/').nth(2), Some("127.0.0.1:9123"));
    assert!(text(&out.stdout).trim().ends_with("#insecure"));

    let out = cli(&data, &["share", "mint", "-w", "w9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no workspace has the id or name \"w9\"; workspaces: w1 (w)"),
        "{}",
        text(&out.stderr)
    );
    // A workspace can be named by its name too.
    let out = cli(&data, &["share", "mint", "-w", "w", "--label", "by name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&cli(&data, &["share", "list"]).stdout).contains("by name"));
    let out = cli(&data, &["share", "revoke", "sh9"]);
    assert!(text(&out.stderr).contains("existing shares: sh1"), "{}", text(&out.stderr));
    let out = cli(&data, &["workspace", "add", dir.path().join("nope").to_str().unwrap()]);
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

#[test]
fn a_database_deleted_or_replaced_while_in_use_fails_the_next_commit_instead_of_writing_into_the_void() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1))]).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    // Checked before every commit, not once a second: no time needs to pass.
    let err = store.commit(&[StoreOp::PutWorkspace(workspace(2))]).unwrap_err().to_string();
    assert!(err.contains("was deleted while the host was running"), "{err}");

    // Replaced by another file: also refused.
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1))]).unwrap();
    let other = dir.path().join("other.db");
    drop(SqliteStore::open(&other).unwrap());
    std::fs::rename(&other, &path).unwrap();
    let err = store.commit(&[StoreOp::PutWorkspace(workspace(2))]).unwrap_err().to_string();
    assert!(err.contains("was replaced"), "{err}");
}

/// A workspace, its session and 2 000 messages, as one tick: a file of a few hundred pages.
fn two_thousand_messages() -> Vec<StoreOp> {
    let mut ops = vec![StoreOp::PutWorkspace(workspace(1)), StoreOp::PutSession(session(1, 1))];
    ops.extend((1..=2000).map(|n| StoreOp::PutMessage(message(n, 1, n))));
    ops
}

/// Checkpoints the log into the main file at `path`, then scribbles over three pages in its
/// middle (older messages: a host's start reads only each session's newest ones).
fn damage_middle_pages(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    drop(rusqlite::Connection::open(path).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"));
    let len = std::fs::metadata(path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(len / 2 / 4096 * 4096)).unwrap();
    f.write_all(&vec![0xA5; 3 * 4096]).unwrap();
}

#[test]
fn a_damaged_database_fails_its_integrity_check_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store.commit(&two_thousand_messages()).unwrap();
        store.check_integrity().expect("a healthy database passes");
    }
    damage_middle_pages(&path);
    let store = SqliteStore::open(&path).unwrap();
    let err = store.check_integrity().unwrap_err().to_string();
    assert!(err.contains("fails its integrity check"), "{err}");
}

/// A host's database holding [`two_thousand_messages`], stopped cleanly, then damaged.
fn damaged_after_a_clean_stop(path: &Path) {
    let (mut store, last) = SqliteStore::open_for_host(path).unwrap();
    assert_eq!(last, LastStop::New);
    store.commit(&two_thousand_messages()).unwrap();
    store.stop_cleanly();
    drop(store);
    damage_middle_pages(path);
}

#[test]
fn damage_found_in_the_background_after_a_clean_stop_refuses_every_commit_and_keeps_the_stop_unclean() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    damaged_after_a_clean_stop(&path);
    let (mut store, last) = SqliteStore::open_for_host(&path).unwrap();
    assert_eq!(last, LastStop::Clean, "nothing made the host check the whole file before serving");
    store.check_health().expect("healthy until the check finds the damage");

    let found = store.integrity_checker().spawn().unwrap().join().unwrap_err();
    let StoreError::Corrupt { detail, .. } = &found else { panic!("not Corrupt: {found}") };
    assert!(detail.contains(&format!("{} fails its integrity check", path.display())), "{detail}");
    assert!(detail.contains("roundtable serve --fresh"), "names the fix: {detail}");
    // The running store writes nothing more into the damaged file, with that message.
    let commit = store.commit(&[StoreOp::PutWorkspace(workspace(2))]).unwrap_err();
    assert_eq!(commit.to_string(), found.to_string());
    assert_eq!(store.check_health().unwrap_err().to_string(), found.to_string());
    // Nor does it record a clean stop: the next start checks the whole file first.
    store.stop_cleanly();
    drop(store);
    let (_store, last) = SqliteStore::open_for_host(&path).unwrap();
    assert_eq!(last, LastStop::Unclean { recorded: true });
}

#[test]
fn sqlite_finding_damage_in_a_read_makes_the_store_refuse_commits_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    damaged_after_a_clean_stop(&path);
    let (mut store, _) = SqliteStore::open_for_host(&path).unwrap();
    // Every older message: the damaged pages are among them.
    let read = store.messages_before(&SessionId::nth(1), 2001, 5000).unwrap_err();
    let StoreError::Corrupt { detail, .. } = &read else { panic!("not Corrupt: {read}") };
    assert!(detail.contains(&format!("{} is damaged (database disk image is malformed)", path.display())), "{detail}");
    assert!(detail.contains("roundtable serve --fresh"), "names the fix: {detail}");
    let commit = store.commit(&[StoreOp::PutWorkspace(workspace(2))]).unwrap_err();
    assert_eq!(commit.to_string(), read.to_string());
    store.stop_cleanly();
    drop(store);
    assert_eq!(SqliteStore::open_for_host(&path).unwrap().1, LastStop::Unclean { recorded: true });
}

#[test]
fn workspace_add_resolves_the_agent_command_where_it_was_typed_and_refuses_a_missing_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let typed = dir.path().join("typed");
    std::fs::create_dir(&typed).unwrap();
    std::fs::write(typed.join("agent.py"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(typed.join("agent.py"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(typed.join("my_agent.sh"), "echo hi\n").unwrap();
    let typed = typed.canonicalize().unwrap();
    // Each registration in its own workspace directory (a directory is registered once).
    let add = |name: &str, cmd: &str| {
        let work = dir.path().join(name);
        std::fs::create_dir_all(&work).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_roundtable"))
            .current_dir(&typed)
            .arg("--data-dir")
            .arg(&data)
            .args(["workspace", "add", work.to_str().unwrap(), "--agent", "command", "--agent-cmd", cmd])
            .env_remove("ROUNDTABLE_DATA_DIR")
            .output()
            .unwrap()
    };
    let out = add("w1", "./agent.py");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agent = typed.join("agent.py").display().to_string();
    assert!(text(&out.stdout).contains(&format!("agent command ({agent})")), "{}", text(&out.stdout));

    let out = add("w2", "sh -e my_agent.sh");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = typed.join("my_agent.sh").display().to_string();
    let listing = text(&cli(&data, &["workspace", "list"]).stdout);
    assert!(listing.contains(&format!("({agent})")), "{listing}");
    assert!(listing.contains(&format!("sh -e {script})")) && listing.contains("(/"), "absolute sh: {listing}");

    let out = add("w3", "./missing.py");
    assert!(!out.status.success());
    let missing = typed.join("missing.py").display().to_string();
    assert!(text(&out.stderr).contains(&format!("agent command not found at '{missing}'")), "{}", text(&out.stderr));
    let out = add("w4", "./my_agent.sh");
    assert!(text(&out.stderr).contains("is not executable"), "{}", text(&out.stderr));
    assert_eq!(text(&cli(&data, &["workspace", "list"]).stdout).lines().count(), 3, "two workspaces were added");
}

// ---------------------------------------------------------------------------------------------
// The database's files: a lost -wal/-shm, checkpoints, read-only files, a full disk, damage
// ---------------------------------------------------------------------------------------------

/// `roundtable.db-wal` / `roundtable.db-shm` beside `db`.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// How many rows of `table` a crash that lost the log would leave: a copy of the main file
/// alone, opened on its own (0 when even the table is not in it yet).
fn rows_in_main_file_alone(db: &Path, table: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::copy(db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    match conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)) {
        Ok(n) => n,
        Err(e) if e.to_string().contains("no such table") => 0,
        Err(e) => panic!("reading the copy of {}: {e}", db.display()),
    }
}

/// A workspace, its session and `n` messages, as one tick each.
fn ticks_with_messages(store: &mut SqliteStore, n: u64) {
    store.commit(&[StoreOp::PutWorkspace(workspace(1)), StoreOp::PutSession(session(1, 1))]).unwrap();
    for i in 1..=n {
        store.commit(&[StoreOp::PutMessage(message(i, 1, i))]).unwrap();
    }
}

#[test]
fn a_deleted_wal_or_shm_fails_every_later_commit_and_what_was_acknowledged_is_in_the_main_file() {
    for suffix in ["-wal", "-shm"] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_in(&dir);
        let mut store = SqliteStore::open(&path).unwrap();
        ticks_with_messages(&mut store, 5);
        assert_eq!(rows_in_main_file_alone(&path, "messages"), 0, "{suffix}: the messages are only in the log so far");

        std::fs::remove_file(beside(&path, suffix)).unwrap();
        // The very next commit, with no time passing: nothing is acknowledged into a lost file.
        let err = store.commit(&[StoreOp::PutMessage(message(6, 1, 6))]).unwrap_err().to_string();
        assert!(err.contains(&format!("roundtable.db{suffix} was deleted while the host was running")), "{err}");
        assert!(err.contains("everything the host had stored was saved as a complete copy that replaced"), "{err}");
        assert!(store.check_health().is_err(), "{suffix}: the failure is sticky");
        assert!(store.commit(&[StoreOp::PutMessage(message(7, 1, 7))]).is_err(), "{suffix}: and so is every commit");

        // A crash now (the log is gone for good): the main file alone has every acknowledged
        // message and none of the refused ones.
        assert_eq!(rows_in_main_file_alone(&path, "messages"), 5, "{suffix}");
        std::mem::forget(store); // as if killed: no close, no checkpoint on close
        let copy = dir.path().join("after-crash.db");
        std::fs::copy(&path, &copy).unwrap();
        let restored = SqliteStore::open(&copy).unwrap().load().unwrap();
        let ids: Vec<String> = restored.messages.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(ids.len(), 5, "{suffix}: {ids:?}");
        assert_eq!(restored.workspaces, vec![workspace(1)], "{suffix}");
    }
}

#[test]
fn an_idle_tick_checkpoints_the_log_into_the_main_file_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    let opened = Instant::now();
    ticks_with_messages(&mut store, 20);
    assert_eq!(rows_in_main_file_alone(&path, "messages"), 0, "the messages are only in the log so far");
    // Idle ticks within the first second of the last checkpoint (here: the open) leave it be…
    store.check_health_at(opened).unwrap();
    assert_eq!(rows_in_main_file_alone(&path, "messages"), 0);
    // …and the first one a second later copies the log into the main file.
    store.check_health_at(opened + Duration::from_millis(1_001)).unwrap();
    assert_eq!(rows_in_main_file_alone(&path, "messages"), 20);
    store.commit(&[StoreOp::PutMessage(message(21, 1, 21))]).unwrap();
    store.check_health_at(opened + Duration::from_millis(1_500)).unwrap();
    assert_eq!(rows_in_main_file_alone(&path, "messages"), 20, "not again within the second");
    store.check_health_at(opened + Duration::from_millis(2_100)).unwrap();
    assert_eq!(rows_in_main_file_alone(&path, "messages"), 21);
}

#[test]
fn a_busy_host_keeps_its_log_near_one_megabyte_with_the_same_file_all_along() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1)), StoreOp::PutSession(session(1, 1))]).unwrap();
    let wal = beside(&path, "-wal");
    let id = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    let (wal_id, shm_id) = (id(&wal), id(&beside(&path, "-shm")));
    // About 6 MB of messages without an idle tick: SQLite's default would let the log grow to
    // about 4 MB before copying it into the main file.
    let text = "x".repeat(12_000);
    let mut largest = 0;
    for i in 1..=500u64 {
        store.commit(&[StoreOp::PutMessage(MessageRow { text: text.clone(), ..message(i, 1, i) })]).unwrap();
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    }
    assert!(largest < 1_400_000, "the log grew to {largest} bytes");
    assert!(rows_in_main_file_alone(&path, "messages") >= 400, "the main file stays close behind");
    assert_eq!((id(&wal), id(&beside(&path, "-shm"))), (wal_id, shm_id), "checkpoints never recreate the files");
    store.check_health_at(Instant::now() + Duration::from_secs(2)).expect("nor do they look like a lost file");
}

/// Makes `path` unwritable even for root: `chattr +i` (immutable), undone on drop so the
/// temporary directory can be removed. Root ignores file modes, and the tests run as root in
/// CI, so a plain `chmod 0444` would prove nothing there; without `chattr` (or a file system
/// that supports it) the test falls back to `chmod 0444`, which works when not root.
struct Unwritable(PathBuf, &'static str);

impl Unwritable {
    fn make(path: &Path) -> Option<Unwritable> {
        let chattr = std::process::Command::new("chattr").arg("+i").arg(path).output();
        if chattr.is_ok_and(|o| o.status.success()) {
            return Some(Unwritable(path.to_path_buf(), "chattr -i"));
        }
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: a plain system call.
        if unsafe { libc::geteuid() } != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
            return Some(Unwritable(path.to_path_buf(), "chmod u+w"));
        }
        eprintln!("cannot make {} unwritable here (no chattr, and root ignores modes); skipped", path.display());
        None
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).output();
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_read_only_database_or_directory_is_refused_at_open_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let path = data.join("roundtable.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&[StoreOp::PutWorkspace(workspace(1))]).unwrap();
    drop(store);

    let Some(file) = Unwritable::make(&path) else { return };
    let err = SqliteStore::open(&path).err().expect("a read-only database is refused at open").to_string();
    assert!(err.contains(&format!("the database file {} cannot be written", path.display())), "{err}");
    assert!(err.contains(&format!("{} {}", file.1, path.display())), "says how to fix it: {err}");
    // The CLI's writes say the same, and its reads still work.
    let mut admin = Admin::open(&path).unwrap();
    assert_eq!(admin.list_workspaces().unwrap().len(), 1);
    let err = admin.mint_share(&mint_params(&[1]), 1).unwrap_err().to_string();
    assert!(err.contains(&format!("{} cannot be written", path.display())), "{err}");
    drop(admin);
    drop(file);

    let Some(folder) = Unwritable::make(&data) else { return };
    let err = SqliteStore::open(&path).err().expect("an unwritable directory is refused at open").to_string();
    assert!(err.contains(&format!("the directory {} holding the database cannot be written", data.display())), "{err}");
    assert!(err.contains(&format!("{} {}", folder.1, data.display())), "{err}");
}

/// Runs `f` in a directory that is a 1 MiB tmpfs, mounted in a private mount namespace of a
/// thread of its own (`unshare(CLONE_NEWNS)` only affects the calling thread), so the mount is
/// gone with the thread however the test ends, and unmounted on drop before that. `None` when
/// this process may not mount (not root).
fn on_a_small_tmpfs<T: Send + 'static>(f: impl FnOnce(&Path) -> T + Send + 'static) -> Option<T> {
    struct Unmount(std::ffi::CString);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // SAFETY: a valid path; detaching never blocks.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let thread = std::thread::spawn(move || {
        let base = tempfile::tempdir().unwrap();
        let target = std::ffi::CString::new(base.path().to_str().unwrap()).unwrap();
        // SAFETY: plain system calls with valid NUL-terminated arguments.
        let mounted = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=1m".as_ptr().cast())
                    == 0
        };
        if !mounted {
            eprintln!("cannot mount a tmpfs here ({}); skipped", std::io::Error::last_os_error());
            return None;
        }
        let _unmount = Unmount(target);
        Some(f(base.path()))
    });
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Writes a file until the disk takes not one byte more.
fn fill_the_disk(dir: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    for size in [64 << 10, 4096, 1] {
        let chunk = vec![0u8; size];
        while filler.write_all(&chunk).is_ok() {}
    }
}

#[test]
fn a_full_disk_is_named_with_its_free_bytes_on_commit_and_when_a_start_fails() {
    let outcome = on_a_small_tmpfs(|dir| {
        // A host that is running when the disk fills up…
        let running = dir.join("running.db");
        let mut store = SqliteStore::open(&running).unwrap();
        store.commit(&[StoreOp::PutWorkspace(workspace(1)), StoreOp::PutSession(session(1, 1))]).unwrap();
        // …and one that starts on the full disk (closed cleanly: its -wal and -shm are gone).
        let starting = dir.join("roundtable.db");
        drop(SqliteStore::open(&starting).unwrap());
        fill_the_disk(dir);
        let big = "y".repeat(200_000);
        let commit = store.commit(&[StoreOp::PutMessage(MessageRow { text: big, ..message(1, 1, 1) })]);
        let open = SqliteStore::open(&starting).err().map(|e| e.to_string());
        (running, commit.unwrap_err().to_string(), starting, open.expect("a host cannot start on a full disk"))
    });
    let Some((running, commit, starting, open)) = outcome else { return };
    assert!(commit.contains(&format!("the disk holding {} is full (0 bytes free)", running.display())), "{commit}");
    assert!(open.contains(&format!("the disk holding {} is full (0 bytes free)", starting.display())), "{open}");
}

#[test]
fn a_damaged_database_is_refused_naming_the_file() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let healthy = dir.path().join("healthy.db");
    {
        let mut store = SqliteStore::open(&healthy).unwrap();
        store.commit(&full_batch()).unwrap();
    } // closing checkpoints everything into the main file
    let damaged = |name: &str, offset: u64, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::copy(&healthy, &path).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(bytes).unwrap();
        path
    };
    let last_page = (std::fs::metadata(&healthy).unwrap().len() / 4096 - 1) * 4096;
    let cases = [
        ("not a database at all", damaged("garbage.db", 0, &[0x5A; 100])),
        // The file opens, but `quick_check` itself fails ("database disk image is malformed")
        // instead of listing problems.
        ("the schema's records", damaged("schema.db", 4000, &[0xA5; 96])),
        ("a table's last page", damaged("table.db", last_page, &[0x0D, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),
    ];
    for (what, path) in cases {
        let refused = SqliteStore::open(&path).and_then(|mut store| {
            store.check_integrity()?;
            store.load().map(drop)
        });
        let err = refused.err().unwrap_or_else(|| panic!("{what}: accepted")).to_string();
        assert!(err.contains(&path.display().to_string()), "{what}: names the file: {err}");
    }
}

/// Child-process half of [`the_cli_refuses_to_write_beside_a_host_whose_wal_or_shm_was_deleted`]:
/// a host's store that stays open until the parent kills it.
#[test]
#[ignore = "helper process, started by the_cli_refuses_to_write_beside_a_host_whose_wal_or_shm_was_deleted"]
fn open_store_helper() {
    let Ok(path) = std::env::var("ROUNDTABLE_TEST_OPEN_DB") else { return };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    ticks_with_messages(&mut store, 3);
    println!("STORE_OPEN");
    std::thread::sleep(Duration::from_secs(120));
    unreachable!("the parent kills this process");
}

/// A child process, killed when dropped (also when the test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts [`open_store_helper`] on `path` and waits until its store is open.
fn host_process(path: &Path) -> Killed {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "open_store_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env("ROUNDTABLE_TEST_OPEN_DB", path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("STORE_OPEN") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the helper opened its store");
    child
}

#[test]
fn the_cli_refuses_to_write_beside_a_host_whose_wal_or_shm_was_deleted() {
    for suffix in ["-shm", "-wal"] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_in(&dir);
        let host = host_process(&path);
        // Beside a healthy host, the CLI writes as ever.
        Admin::open(&path).unwrap().mint_share(&mint_params(&[1]), 1).expect("a mint beside a healthy host");

        std::fs::remove_file(beside(&path, suffix)).unwrap();
        let outcome = Admin::open(&path).map_err(AdminError::from).and_then(|mut admin| {
            let minted = admin.mint_share(&mint_params(&[1]), 2);
            minted.map(|(row, _)| row.id)
        });
        let err = match outcome {
            Ok(id) => panic!("{suffix}: minted {id}, which the host would never see"),
            Err(e) => e.to_string(),
        };
        let pid = host.0.id();
        assert!(err.contains(&format!("process {pid} (the running host?) has {} open", path.display())), "{err}");
        assert!(err.contains(&format!("roundtable.db{suffix} was deleted while it was running")), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
        drop(host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_that_held_a_host_but_lost_its_workspaces_and_shares_is_refused_unless_fresh() {
    use roundtable::app::host::{Host, HostOptions};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = roundtable::app::paths::database(&data);
    let options = |fresh: bool| {
        let mut o = HostOptions::new(data.clone(), "127.0.0.1:0".parse().unwrap());
        o.insecure = true;
        o.fresh = fresh;
        o
    };
    // `workspace add` before the first `serve` is normal, and so is a first start on it.
    let work = dir.path().join("project");
    std::fs::create_dir(&work).unwrap();
    Admin::open(&db).unwrap().add_workspace(None, &work, AgentSpec::demo(), 1).unwrap();
    let (host, _events) = Host::start(options(false)).await.expect("a first start");
    host.shutdown().await;

    // That host became ready (serve.json) and then lost its database's contents: the file that
    // is left has the schema and no rows, as after a crash that lost the log.
    std::fs::write(data.join("serve.json"), r#"{"addr":"127.0.0.1:7447","insecure":true,"pid":1}"#).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(beside(&db, suffix));
    }
    drop(SqliteStore::open(&db).unwrap());
    let err = format!("{:#}", Host::start(options(false)).await.err().expect("refused"));
    assert!(err.contains(&format!("its database {} has no workspaces and no shares", db.display())), "{err}");
    assert!(err.contains("--fresh"), "{err}");
    assert!(Admin::open(&db).unwrap().list_workspaces().unwrap().is_empty(), "nothing was registered");

    let (host, _events) = Host::start(options(true)).await.expect("--fresh starts over on purpose");
    host.shutdown().await;
}

/// What `host_state` says now, read without opening the database for a host (which would
/// record one running): `Some(true)` after a clean stop.
fn recorded_clean_stop(db: &Path) -> Option<bool> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT stopped_cleanly FROM host_state WHERE id = 1", [], |r| r.get(0)).ok()
}

fn host_options(data: &Path) -> roundtable::app::host::HostOptions {
    let mut o = roundtable::app::host::HostOptions::new(data.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    o.insecure = true;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_gracefully_records_a_clean_stop_and_a_killed_one_does_not() {
    use roundtable::app::host::Host;
    let dir = tempfile::tempdir().unwrap();
    let db = roundtable::app::paths::database(dir.path());
    let (host, _events) = Host::start(host_options(dir.path())).await.expect("a first start");
    host.shutdown().await;
    assert_eq!(recorded_clean_stop(&db), Some(true));

    let (mut host, _events) = Host::start(host_options(dir.path())).await.expect("a start after a clean stop");
    host.take_integrity_check().expect("the check runs in the background").join().expect("a healthy file");
    host.kill().await;
    assert_eq!(recorded_clean_stop(&db), Some(false));
    assert_eq!(SqliteStore::open_for_host(&db).unwrap().1, LastStop::Unclean { recorded: true });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_the_host_serves_at_once_and_damage_found_in_the_background_stops_its_writes() {
    use roundtable::app::host::Host;
    use roundtable::net::client::ClientEvent;
    use roundtable::protocol::Event;
    let dir = tempfile::tempdir().unwrap();
    let db = roundtable::app::paths::database(dir.path());
    damaged_after_a_clean_stop(&db);

    // The damage is not looked for before serving: the start does not read the whole file.
    let (mut host, mut events) =
        Host::start(host_options(dir.path())).await.expect("a start after a clean stop does not check first");
    let found = host.take_integrity_check().expect("checked in the background").join().unwrap_err().to_string();
    assert!(found.contains(&format!("{} fails its integrity check", db.display())), "{found}");
    // Within a tick the engine finds the store refusing and tells every connection.
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Event { frame, .. } = ev {
                if let Event::Storage(s) = frame.body {
                    return Some(s);
                }
            }
        }
        None
    })
    .await
    .expect("a storage event")
    .expect("before the connection ended");
    assert!(!told.available && told.message.contains("fails its integrity check"), "{told:?}");
    host.shutdown().await;
    assert_eq!(recorded_clean_stop(&db), Some(false));

    // That stop was not clean, so the next start checks the whole file and refuses it.
    let refused = format!("{:#}", Host::start(host_options(dir.path())).await.err().expect("refused"));
    assert!(refused.contains(&format!("{} fails its integrity check", db.display())), "{refused}");
}
