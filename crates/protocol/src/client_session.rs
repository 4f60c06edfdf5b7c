//! The client's side of the protocol, without I/O (PROTOCOL §7): which sessions it follows and
//! the last seq it has of each, what an event frame means for it (show it, skip it, or rejoin),
//! its resume token, and when to try again after the connection drops.
//!
//! `roundtable join`, the remote window and the scenario runner's simulated clients each feed
//! their frames through one [`ClientSession`] and do what it answers; they differ only in how
//! they show things and how they wait. Nothing here reads a socket or a clock: the caller says
//! what happened (an event, an answered join, a failed attempt at time `now`) and gets back what
//! to do next. That keeps the rules of §7 in one place, and unit-testable.
//!
//! ```text
//!  connect ─► authenticate(params()) ─► authenticated(result) ─► enter: joins()/rejoins()
//!      ▲                                                              │
//!      │      event(frame) ─► Handled { show, then: rejoin / enter / refused }
//!      │                                                              │
//!      └── Reconnect::after(Attempt, now) ◄── closed(reason) = Reconnect
//! ```
//!
//! The seq rules. Every session event carries the session's seq (1, 2, 3, …). A client shows an
//! event once, in order: a seq it has already shown is a duplicate (a replay overlapping what it
//! saw live); a seq beyond the next one means events were missed, so it rejoins with `since_seq` =
//! the last seq it has and the replay brings the missing ones — and this one — in order. While a
//! join is on its way, the session's live events are skipped: the catch-up that follows the join's
//! answer covers them (a resumed connection receives broadcasts before it has rejoined, possibly
//! ahead of older events the replay will bring).

use crate::ids::SessionId;
use crate::protocol::{
    Admission, AuthenticateParams, AuthenticateResult, CatchUp, Event, EventFrame, JoinSessionParams, JoinSessionResult,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Close reasons after which reconnecting cannot help (the participant is gone for good).
pub const FINAL_REASONS: [&str; 5] = ["revoked", "kicked", "expired", "refused", "auth_timeout"];

/// First wait before reconnecting after the connection dropped.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Longest wait between reconnect attempts while the host is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a client keeps retrying a host that refuses for now (`storage_unavailable`,
/// `rate_limited`) before giving up, saying why.
pub const TRANSIENT_PATIENCE: Duration = Duration::from_secs(600);

/// One followed session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Followed {
    /// Last seq shown; every seq up to it was shown once (0: none yet).
    last_seq: u64,
    /// The `join_session` request on its way, until its answer is reached in the event stream:
    /// the session's live events are skipped meanwhile.
    joining: Option<Joining>,
    /// A rejoin was asked for (gap or `resync_required`) and not answered yet: the session's
    /// live events are skipped (the rejoin's replay brings them) and nothing more is asked.
    resyncing: bool,
}

/// A join on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Joining {
    id: Value,
    /// The last seq before it (`None`: the session was not followed): what a refused join
    /// leaves in place.
    before: Option<u64>,
}

/// What to do with an event frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Show (apply) it: it is new and in order, or it carries no seq.
    pub show: bool,
    /// What must follow.
    pub then: Then,
}

/// What must follow an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    Nothing,
    /// Send these joins (a rejoin with `since_seq` after a gap or `resync_required`, or a fresh
    /// join for a snapshot after `history_replaced`). Call [`ClientSession::join_sent`] with each
    /// request's id.
    Join(Vec<JoinSessionParams>),
    /// The host admitted us from the lobby: enter ([`ClientSession::rejoins`], or join the
    /// session the person asked for).
    Enter,
    /// The host refused to let us in.
    Refused,
}

impl Handled {
    fn skip() -> Self {
        Handled { show: false, then: Then::Nothing }
    }
    fn show() -> Self {
        Handled { show: true, then: Then::Nothing }
    }
}

/// How an authentication went, for what the client tells the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The first connection of this run, as a new participant.
    New,
    /// The first connection of this run, as the participant an earlier run left (its resume
    /// token was kept between runs).
    Restored,
    /// A reconnection within the grace period: the same participant, turn and ballots.
    Resumed,
    /// A reconnection after the grace period: a new participant. Its sessions are rejoined from
    /// where it was; what was its own (turn, ballots) is gone.
    Replaced,
}

/// Why the connection ended, as far as reconnecting goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Gone for good (`FINAL_REASONS`): say why and stop. The resume token is forgotten.
    Final(String),
    /// Try again ([`Reconnect`]).
    Reconnect,
}

/// A client's protocol state across connections.
#[derive(Clone, Debug, Default)]
pub struct ClientSession {
    resume_token: Option<String>,
    /// The resume token came from an earlier run and was not presented yet.
    restored: bool,
    admitted: bool,
    /// Reason of the last `closing` event on this connection.
    closing: Option<String>,
    followed: BTreeMap<SessionId, Followed>,
}

impl ClientSession {
    /// A client that may resume the participant an earlier run left (its kept resume token).
    pub fn new(resume_token: Option<String>) -> Self {
        ClientSession { restored: resume_token.is_some(), resume_token, ..ClientSession::default() }
    }

    /// The `authenticate` params: the link's token, the name asked for, the resume token if any.
    pub fn authenticate(&self, token: &str, display_name: &str) -> AuthenticateParams {
        AuthenticateParams {
            token: token.to_string(),
            display_name: display_name.to_string(),
            resume_token: self.resume_token.clone(),
        }
    }

    /// The host answered `authenticate`: keep the new resume token (also to save it between
    /// runs: [`ClientSession::resume_token`]).
    pub fn authenticated(&mut self, auth: &AuthenticateResult) -> Identity {
        let reconnecting = self.resume_token.is_some() && !self.restored;
        let restored = std::mem::take(&mut self.restored);
        self.resume_token = Some(auth.resume_token.clone());
        self.admitted = auth.admission == Admission::Admitted;
        self.closing = None;
        // A new connection: joins of the old one will never be answered.
        for f in self.followed.values_mut() {
            f.joining = None;
            f.resyncing = false;
        }
        match (reconnecting, auth.resumed) {
            (true, true) => Identity::Resumed,
            (true, false) => Identity::Replaced,
            (false, true) if restored => Identity::Restored,
            (false, _) => Identity::New,
        }
    }

    /// The host refused the resume token we kept (or the link): the next run starts afresh.
    pub fn forget_resume(&mut self) {
        self.resume_token = None;
        self.restored = false;
    }

    pub fn resume_token(&self) -> Option<&str> {
        self.resume_token.as_deref()
    }

    pub fn admitted(&self) -> bool {
        self.admitted
    }

    /// Sessions followed, in id order.
    pub fn followed(&self) -> impl Iterator<Item = &SessionId> {
        self.followed.keys()
    }

    pub fn follows(&self, session: &SessionId) -> bool {
        self.followed.contains_key(session)
    }

    /// Last seq shown of a session (0: none, or not followed).
    pub fn last_seq(&self, session: &SessionId) -> u64 {
        self.followed.get(session).map_or(0, |f| f.last_seq)
    }

    /// Joins that take a (re)connected client back where it was: every followed session from
    /// its last seq (a snapshot when it has none yet).
    pub fn rejoins(&self) -> Vec<JoinSessionParams> {
        self.followed.iter().map(|(s, f)| rejoin(s, f.last_seq)).collect()
    }

    /// A `join_session` for `params` was sent as request `id`: the session's live events are
    /// skipped until its answer is reached in the event stream ([`ClientSession::answered`]),
    /// and the catch-up that follows starts after its `since_seq` (a join without one starts the
    /// session afresh: a snapshot follows).
    pub fn join_sent(&mut self, params: &JoinSessionParams, id: Value) {
        let before = self.followed.get(&params.session_id).map(|f| f.last_seq);
        let f = self.followed.entry(params.session_id.clone()).or_default();
        f.last_seq = params.since_seq.unwrap_or(0);
        f.joining = Some(Joining { id, before });
    }

    /// The answer to request `id` was reached in the event stream; `ok`: it was a result. A
    /// refused join leaves the session as it was before it.
    pub fn answered(&mut self, id: &Value, ok: bool) {
        let Some(session) =
            self.followed.iter().find(|(_, f)| f.joining.as_ref().is_some_and(|j| &j.id == id)).map(|(s, _)| s.clone())
        else {
            return;
        };
        let f = self.followed.get_mut(&session).expect("found above");
        let joining = f.joining.take().expect("found above");
        f.resyncing = false;
        if !ok {
            match joining.before {
                Some(last) => f.last_seq = last,
                None => {
                    self.followed.remove(&session);
                }
            }
        }
    }

    /// A `join_session` succeeded.
    pub fn joined(&mut self, result: &JoinSessionResult) {
        let f = self.followed.entry(result.session.id.clone()).or_default();
        if result.catch_up == CatchUp::None {
            // Up to date: nothing follows, the session is live from its last seq on.
            f.last_seq = f.last_seq.max(result.session.last_seq);
        }
    }

    /// We left a session: its events are no longer ours.
    pub fn left(&mut self, session: &SessionId) {
        self.followed.remove(session);
    }

    /// What an event frame means: whether to show it, and what must follow.
    pub fn event(&mut self, frame: &EventFrame) -> Handled {
        match &frame.body {
            Event::Admission(a) => {
                return match a.admission {
                    Admission::Admitted if !self.admitted => {
                        self.admitted = true;
                        Handled { show: true, then: Then::Enter }
                    }
                    Admission::Refused => Handled { show: true, then: Then::Refused },
                    _ => Handled::show(),
                }
            }
            Event::Closing(c) => {
                self.closing = Some(c.reason.clone());
                return Handled::show();
            }
            Event::ResyncRequired(_) => {
                let sessions: Vec<SessionId> = match &frame.session_id {
                    Some(s) => vec![s.clone()],
                    None => self.followed.keys().cloned().collect(),
                };
                return Handled { show: true, then: self.resync(sessions) };
            }
            _ => {}
        }
        let Some(session) = &frame.session_id else { return Handled::show() };
        let live = frame.seq.is_some() || matches!(frame.body, Event::AgentDelta(_));
        let Some(f) = self.followed.get_mut(session) else {
            // Not (yet) followed: a host's first connection sees every session; show it.
            return Handled::show();
        };
        if live && (f.joining.is_some() || f.resyncing) {
            return Handled::skip(); // the catch-up after the (re)join's answer covers it
        }
        if let Event::Snapshot(s) = &frame.body {
            f.last_seq = s.last_seq;
            f.resyncing = false;
            return Handled::show();
        }
        let Some(seq) = frame.seq else { return Handled::show() };
        if seq <= f.last_seq {
            return Handled::skip(); // shown already (a replay overlapping what we saw)
        }
        if seq > f.last_seq + 1 {
            // Missed events: rejoin from the last one shown; the replay brings this one again.
            return Handled { show: false, then: self.resync(vec![session.clone()]) };
        }
        f.last_seq = seq;
        let then = match &frame.body {
            Event::HistoryReplaced(_) => {
                // The history was cleared: what we have of it is void; a snapshot starts afresh.
                Then::Join(vec![JoinSessionParams { session_id: session.clone(), since_seq: None }])
            }
            _ => Then::Nothing,
        };
        Handled { show: true, then }
    }

    /// Rejoins for sessions that missed events, unless one is already on its way.
    fn resync(&mut self, sessions: Vec<SessionId>) -> Then {
        let mut joins = Vec::new();
        for s in sessions {
            let Some(f) = self.followed.get_mut(&s) else { continue };
            if f.resyncing || f.joining.is_some() {
                continue;
            }
            f.resyncing = true;
            joins.push(rejoin(&s, f.last_seq));
        }
        if joins.is_empty() {
            Then::Nothing
        } else {
            Then::Join(joins)
        }
    }

    /// The connection ended (`close_reason`: the close frame's, if any; a `closing` event's
    /// reason comes first). Joins on their way will never be answered.
    pub fn closed(&mut self, close_reason: Option<String>) -> Closed {
        let reason = self.closing.take().or(close_reason);
        for f in self.followed.values_mut() {
            f.joining = None;
            f.resyncing = false;
        }
        match reason.filter(|r| FINAL_REASONS.contains(&r.as_str())) {
            Some(r) => {
                self.forget_resume();
                Closed::Final(r)
            }
            None => Closed::Reconnect,
        }
    }
}

fn rejoin(session: &SessionId, last_seq: u64) -> JoinSessionParams {
    JoinSessionParams { session_id: session.clone(), since_seq: (last_seq > 0).then_some(last_seq) }
}

/// How a connection attempt (or a connection) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// An established connection dropped.
    Dropped,
    /// The host could not be reached (or the handshake failed).
    Unreachable,
    /// The host refused for now (`storage_unavailable`, `rate_limited`) and asked to wait this long.
    Busy(Duration),
}

/// Why to stop trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The very first connection failed: the link is probably wrong; say so rather than retry.
    NeverConnected,
    /// The host kept refusing for [`TRANSIENT_PATIENCE`].
    OutOfPatience,
}

/// When to try connecting again: exponential back-off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]
/// while the host is unreachable; the host's own `retry_after` while it refuses for now, for at
/// most [`TRANSIENT_PATIENCE`].
#[derive(Clone, Debug)]
pub struct Reconnect {
    delay: Duration,
    connected_once: bool,
    busy_since: Option<Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { delay: FIRST_BACKOFF, connected_once: false, busy_since: None }
    }
}

impl Reconnect {
    /// A connection was established (and authenticated): the back-off starts over.
    pub fn connected(&mut self) {
        self.connected_once = true;
        self.delay = FIRST_BACKOFF;
        self.busy_since = None;
    }

    /// Whether a connection was ever established (a new attempt is a reconnection).
    pub fn has_connected(&self) -> bool {
        self.connected_once
    }

    /// How long to wait before the next attempt, or why to stop.
    pub fn after(&mut self, attempt: Attempt, now: Instant) -> Result<Duration, GiveUp> {
        match attempt {
            Attempt::Dropped => {
                self.delay = FIRST_BACKOFF;
                self.busy_since = None;
            }
            Attempt::Unreachable if !self.connected_once => return Err(GiveUp::NeverConnected),
            Attempt::Unreachable => self.delay = (self.delay * 2).min(MAX_BACKOFF),
            Attempt::Busy(wait) => {
                let since = *self.busy_since.get_or_insert(now);
                if now.duration_since(since) >= TRANSIENT_PATIENCE {
                    return Err(GiveUp::OutOfPatience);
                }
                self.delay = wait.max(FIRST_BACKOFF).min(MAX_BACKOFF * 2);
            }
        }
        Ok(self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Closing, ResyncRequired, Role};
    use proptest::prelude::*;

    fn s1() -> SessionId {
        SessionId::from("s1")
    }

    fn message(seq: u64) -> EventFrame {
        let raw = format!(
            r#"{{"event":"message","session_id":"s1","seq":{seq},"payload":{{"message_id":"m{seq}","author_id":"p2","author_name":"Bob","text":"hi {seq}"}}}}"#
        );
        serde_json::from_str(&raw).expect("an event frame")
    }

    fn following(last: u64) -> ClientSession {
        let mut c = ClientSession::new(None);
        c.followed.insert(s1(), Followed { last_seq: last, ..Followed::default() });
        c
    }

    fn auth(resumed: bool) -> AuthenticateResult {
        AuthenticateResult {
            participant_id: "p1".into(),
            display_name: "Ann".into(),
            role: Role::Participant,
            resume_token: "r2".into(),
            admission: Admission::Admitted,
            protocol_version: 1,
            resumed,
        }
    }

    #[test]
    fn a_seq_gap_rejoins_from_the_last_seq_shown_and_duplicates_are_skipped() {
        let mut c = following(1);
        assert_eq!(c.event(&message(2)), Handled::show());
        let gap = c.event(&message(5));
        let rejoin = JoinSessionParams { session_id: s1(), since_seq: Some(2) };
        assert_eq!(gap, Handled { show: false, then: Then::Join(vec![rejoin.clone()]) }, "3 and 4 are missing");
        assert_eq!(c.event(&message(6)), Handled::skip(), "one rejoin is enough");
        assert_eq!(c.event(&message(2)), Handled::skip(), "a duplicate is skipped");
        c.join_sent(&rejoin, Value::from(7));
        assert_eq!(c.event(&message(7)), Handled::skip(), "live events wait for the join's catch-up");
        c.answered(&Value::from(7), true);
        for seq in 3..=7 {
            assert_eq!(c.event(&message(seq)), Handled::show(), "the replay, in order: {seq}");
        }
        assert_eq!(c.last_seq(&s1()), 7);
    }

    #[test]
    fn a_refused_join_leaves_the_session_as_it_was() {
        let mut c = following(2);
        c.join_sent(&JoinSessionParams { session_id: s1(), since_seq: Some(0) }, Value::from(1));
        c.answered(&Value::from(1), false);
        assert_eq!(c.last_seq(&s1()), 2, "still where it was");
        assert_eq!(c.event(&message(3)), Handled::show());
        let s2 = SessionId::from("s2");
        c.join_sent(&JoinSessionParams { session_id: s2.clone(), since_seq: None }, Value::from(2));
        c.answered(&Value::from(2), false);
        assert!(!c.follows(&s2), "a session never joined is not followed");
    }

    #[test]
    fn resync_required_rejoins_from_the_last_seq_shown() {
        let mut c = following(4);
        let frame = EventFrame {
            session_id: Some(s1()),
            seq: None,
            body: Event::ResyncRequired(ResyncRequired { last_seq: 4 }),
        };
        let h = c.event(&frame);
        assert_eq!(h.then, Then::Join(vec![JoinSessionParams { session_id: s1(), since_seq: Some(4) }]));
    }

    #[test]
    fn history_replaced_starts_the_session_afresh_with_a_snapshot() {
        let mut c = following(2);
        let raw = r#"{"event":"history_replaced","session_id":"s1","seq":3,"payload":{"reason":"cleared"}}"#;
        let frame: EventFrame = serde_json::from_str(raw).expect("a frame");
        let h = c.event(&frame);
        assert!(h.show);
        let fresh = JoinSessionParams { session_id: s1(), since_seq: None };
        assert_eq!(h.then, Then::Join(vec![fresh.clone()]));
        c.join_sent(&fresh, Value::from(1));
        c.answered(&Value::from(1), true);
        assert_eq!(c.last_seq(&s1()), 0, "what we had is void");
    }

    #[test]
    fn a_snapshot_sets_the_last_seq() {
        let mut c = following(0);
        let raw = r#"{"event":"snapshot","session_id":"s1","payload":{"session":{"id":"s1","workspace_id":"w1",
            "title":"t","status":"idle","turn_holder":null,"participant_count":1,"agent":"demo","last_seq":9},
            "roster":[],"messages":[],"votes":[],"last_seq":9}}"#;
        let frame: EventFrame = serde_json::from_str(raw).expect("a snapshot frame");
        assert!(c.event(&frame).show);
        assert_eq!(c.rejoins(), vec![JoinSessionParams { session_id: s1(), since_seq: Some(9) }]);
        assert_eq!(c.event(&message(9)), Handled::skip());
        assert_eq!(c.event(&message(10)), Handled::show());
    }

    #[test]
    fn identities_across_runs_and_reconnects() {
        let mut c = ClientSession::new(Some("kept".into()));
        assert_eq!(c.authenticate("tok", "Ann").resume_token.as_deref(), Some("kept"));
        assert_eq!(c.authenticated(&auth(true)), Identity::Restored);
        assert_eq!(c.resume_token(), Some("r2"));
        assert_eq!(c.authenticated(&auth(true)), Identity::Resumed);
        assert_eq!(c.authenticated(&auth(false)), Identity::Replaced);
        let mut fresh = ClientSession::new(None);
        assert_eq!(fresh.authenticated(&auth(false)), Identity::New);
    }

    #[test]
    fn a_final_close_forgets_the_resume_token_and_others_reconnect() {
        let mut c = ClientSession::new(None);
        c.authenticated(&auth(false));
        assert_eq!(c.closed(Some("shutdown".into())), Closed::Reconnect);
        let closing =
            EventFrame { session_id: None, seq: None, body: Event::Closing(Closing { reason: "kicked".into() }) };
        c.event(&closing);
        assert_eq!(c.closed(None), Closed::Final("kicked".into()), "the closing event's reason comes first");
        assert_eq!(c.resume_token(), None);
    }

    #[test]
    fn back_off_doubles_to_its_cap_waits_as_asked_and_gives_up_when_told() {
        let t0 = Instant::now();
        let mut r = Reconnect::default();
        assert_eq!(r.after(Attempt::Unreachable, t0), Err(GiveUp::NeverConnected));
        assert_eq!(r.after(Attempt::Busy(Duration::from_secs(2)), t0), Ok(Duration::from_secs(2)));
        r.connected();
        assert_eq!(r.after(Attempt::Dropped, t0), Ok(FIRST_BACKOFF));
        let waits: Vec<Duration> = (0..7).map(|_| r.after(Attempt::Unreachable, t0).expect("retry")).collect();
        assert_eq!(waits[0], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().expect("waits"), MAX_BACKOFF);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(r.after(Attempt::Busy(Duration::from_secs(1)), t0), Ok(Duration::from_secs(1)));
        let later = t0 + TRANSIENT_PATIENCE;
        assert_eq!(r.after(Attempt::Busy(Duration::from_secs(1)), later), Err(GiveUp::OutOfPatience));
    }

    proptest! {
        /// However a session's events arrive — repeated, reordered, with gaps — what is shown
        /// is each seq once, in order; and after the rejoins the session asked for are answered
        /// with their replays, everything up to the newest seq has been shown.
        #[test]
        fn every_seq_is_shown_once_in_order_whatever_arrives(
            arrivals in proptest::collection::vec(1u64..30, 0..60)
        ) {
            let mut c = following(0);
            let mut shown = Vec::new();
            let mut pending: Vec<JoinSessionParams> = Vec::new();
            let deliver = |c: &mut ClientSession, seq: u64, shown: &mut Vec<u64>, pending: &mut Vec<JoinSessionParams>| {
                let h = c.event(&message(seq));
                if h.show {
                    shown.push(seq);
                }
                if let Then::Join(j) = h.then {
                    pending.extend(j);
                }
            };
            for &seq in &arrivals {
                deliver(&mut c, seq, &mut shown, &mut pending);
            }
            // The host answers each rejoin with the replay after its since_seq.
            let newest = arrivals.iter().copied().max().unwrap_or(0);
            let mut id = 0u64;
            while let Some(join) = pending.pop() {
                id += 1;
                c.join_sent(&join, Value::from(id));
                c.answered(&Value::from(id), true);
                for seq in join.since_seq.unwrap_or(0) + 1..=newest {
                    deliver(&mut c, seq, &mut shown, &mut pending);
                }
            }
            let expected: Vec<u64> = (1..=newest).collect();
            prop_assert_eq!(&shown, &expected, "each seq once, in order, none missing");
            prop_assert_eq!(c.last_seq(&s1()), newest);
        }
    }
}
