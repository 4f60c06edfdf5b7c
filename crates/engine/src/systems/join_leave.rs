//! Rules: joining and leaving sessions, and catching up.
//!
//! `join_session` with `since_seq` replays exactly the missed events (the same bytes that were
//! broadcast), or sends a `snapshot` when they are too old (or `since_seq` is absent). The
//! roster is sent with the caller's own row marked `you`.

use super::params::*;
use super::queries::session_info;
use super::requests::{Membership, Req};
use super::resources::*;
use super::util::{reply_no_session, reply_ok, send_snapshot};
use crate::components::*;
use crate::ids::{ParticipantId, SessionId};
use crate::persist::StoreOp;
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use std::collections::BTreeMap;

/// Roster of a session: present members, sorted by id.
pub fn roster(
    session: &SessionId,
    participants: &mut dyn Iterator<Item = &Participant>,
    me: Option<&ParticipantId>,
) -> Vec<RosterEntry> {
    let mut rows: Vec<RosterEntry> = participants
        .filter(|p| p.presence.is_present() && p.sessions.contains(session))
        .map(|p| {
            let mut r = p.roster_entry();
            r.you = me == Some(&p.id);
            r
        })
        .collect();
    rows.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
    rows
}

/// Open votes of a session as `VoteOpened` payloads, by vote id.
pub fn open_votes(
    index: &crate::systems::resources::Index,
    votes: &Query<&PendingVote>,
    session: &SessionId,
) -> Vec<VoteOpened> {
    index
        .votes
        .values()
        .filter_map(|&e| votes.get(e).ok())
        .filter(|v| v.session == *session && v.outcome.is_none())
        .map(|v| VoteOpened {
            vote_id: v.id.clone(),
            subject: v.subject.clone(),
            decided_by: v.decided_by,
            required: v.required.iter().cloned().collect(),
            deadline_ms: v.deadline,
        })
        .collect()
}

/// What joining and leaving read and write.
#[derive(SystemParam)]
pub struct Memberships<'w, 's> {
    index: Res<'w, Index>,
    people: People<'w, 's>,
    sessions: Query<'w, 's, (&'static Session, &'static TurnLock, &'static mut EventLog, &'static History)>,
    votes: Query<'w, 's, &'static PendingVote>,
    /// What each turn's stream masker still holds back from remotes.
    mask: Res<'w, super::broadcast::SecretMask>,
    fx: Effects<'w>,
    dropped: MessageWriter<'w, VoterDropped>,
}

/// Who asks to join or leave, and the session: the connection's, the participant's and the
/// session's entities.
struct Member {
    conn: Entity,
    pid: ParticipantId,
    participant: Entity,
    session: Entity,
}

/// Snapshots built this tick, by (session, participant, last seq): forty joins in one burst
/// cost one snapshot.
type Snapshots = BTreeMap<(SessionId, ParticipantId, u64), crate::io::Framed>;

pub fn join_leave(mut requests: MessageReader<Req<Membership>>, mut m: Memberships) {
    let mut snapshots = Snapshots::new();
    for req in requests.read() {
        let Some(member) = m.find(req, req.params.session_id()) else { continue };
        match &req.params {
            Membership::JoinSession(p) => m.join(req, member, p, &mut snapshots),
            Membership::LeaveSession(p) => m.leave(req, member, &p.session_id),
        }
    }
}

impl Memberships<'_, '_> {
    /// The participant behind the request and the session it names, if in its scope; answers
    /// `not_found` otherwise. `None` without an answer for a connection gone or not a participant.
    fn find(&mut self, req: &Req<Membership>, session_id: &SessionId) -> Option<Member> {
        let People { conns, participants, shares } = &self.people;
        let conn = *self.index.conns.get(&req.conn)?;
        let pid = conns.get(conn).ok().and_then(|c| c.participant().cloned())?;
        let participant = *self.index.participants.get(&pid)?;
        let me = participants.get(participant).expect("indexed");
        let share = me.share.as_ref().and_then(|s| self.index.shares.get(s)).and_then(|&e| shares.get(e).ok());
        let Some(session) = self.index.session_in_scope(me, share, session_id) else {
            reply_no_session(&mut self.fx.staged, req.conn, &req.id, session_id);
            return None;
        };
        Some(Member { conn, pid, participant, session })
    }

    /// `join_session`: joins (announced with `participant_joined` the first time), answers with
    /// the session and its roster, then catches the connection up: the missed events replayed,
    /// or a snapshot when they no longer fit one outbox (or `since_seq` is absent).
    fn join(&mut self, req: &Req<Membership>, m: Member, p: &JoinSessionParams, snapshots: &mut Snapshots) {
        let session_id = &p.session_id;
        self.enter(&m, session_id);
        let (session, lock, log, history) = self.sessions.get(m.session).expect("indexed");
        let last_seq = log.last_seq();
        // Replay what fits one outbox (in frames and in bytes); beyond that a snapshot is
        // cheaper for everyone.
        let replay = p.since_seq.and_then(|s| log.since(s)).filter(|ev| {
            ev.len() <= Outbox::CAPACITY && ev.iter().map(|(_, f)| f.len()).sum::<usize>() <= Outbox::MAX_BYTES
        });
        let catch_up = match &replay {
            Some(ev) if ev.is_empty() => CatchUp::None,
            Some(_) => CatchUp::Events,
            None => CatchUp::Snapshot,
        };
        let participants = &self.people.participants;
        let mut info = session_info(session, lock, log, &mut participants.iter(), &session.agent.kind);
        info.read_seq = participants.get(m.participant).ok().and_then(|me| me.read.get(session_id).copied());
        let rows = roster(session_id, &mut participants.iter(), Some(&m.pid));
        let result = JoinSessionResult { session: info.clone(), roster: rows.clone(), you: m.pid.clone(), catch_up };
        let staged = &mut self.fx.staged;
        reply_ok(staged, req.conn, &req.id, result);
        match replay {
            Some(events) => {
                for (seq, frame) in events {
                    staged.out.push(Outgoing::Replay { conn: req.conn, session: session_id.clone(), seq, frame });
                }
            }
            None => {
                let key = (session_id.clone(), m.pid.clone(), last_seq);
                let held_back = self.mask.held_back(session_id, lock.turn_id);
                let frame = snapshots
                    .entry(key)
                    .or_insert_with(|| {
                        let votes = open_votes(&self.index, &self.votes, session_id);
                        let body = Snapshot {
                            session: info,
                            roster: rows,
                            messages: Vec::new(),
                            has_older: false,
                            votes,
                            streaming_text: String::new(),
                            last_seq,
                        };
                        snapshot(body, history, &lock.streamed, held_back, staged)
                    })
                    .clone();
                send_snapshot(staged, req.conn, session_id.clone(), frame);
            }
        }
        self.caught_up(&m, session_id, last_seq, catch_up);
    }

    /// Adds the session to the participant's (persisted, and announced to the session with
    /// `participant_joined`) unless it is there already.
    fn enter(&mut self, m: &Member, session_id: &SessionId) {
        let mut me = self.people.participants.get_mut(m.participant).expect("indexed");
        if !me.sessions.insert(session_id.clone()) {
            return;
        }
        self.fx.persist(StoreOp::PutParticipant(me.row()));
        let entry = me.roster_entry();
        let (_, _, mut log, _) = self.sessions.get_mut(m.session).expect("indexed");
        self.fx.emit(&mut log, session_id, Event::ParticipantJoined(entry));
    }

    /// The connection now receives the session, and has had everything up to `last_seq` queued.
    fn caught_up(&mut self, m: &Member, session_id: &SessionId, last_seq: u64, catch_up: CatchUp) {
        let Ok(mut c) = self.people.conns.get_mut(m.conn) else { return };
        c.joined.insert(session_id.clone());
        c.outbox.resync.remove(session_id);
        c.outbox.queued.insert(session_id.clone(), last_seq);
        // After a snapshot (never dropped; a later resync_required is queued behind it) or with
        // nothing missed, the client has everything up to `last_seq`: a resync must name that,
        // not an older seq. (A replay's frames count as they are handed over, like live events:
        // they can still be dropped on overflow.)
        if catch_up != CatchUp::Events {
            let delivered = c.outbox.delivered.entry(session_id.clone()).or_insert(0);
            *delivered = (*delivered).max(last_seq);
        }
    }

    /// `leave_session`: the participant (never the host) leaves the session on every one of its
    /// connections, and stops being one of its voters.
    fn leave(&mut self, req: &Req<Membership>, m: Member, session_id: &SessionId) {
        let refuse = |fx: &mut Effects, code, message: String| fx.reply_err(req.conn, &req.id, code, message);
        if m.pid.is_host() {
            return refuse(&mut self.fx, ErrorCode::Forbidden, "the host is always present in its sessions".into());
        }
        let mut me = self.people.participants.get_mut(m.participant).expect("indexed");
        if !me.sessions.contains(session_id) {
            return refuse(&mut self.fx, ErrorCode::NotJoined, format!("you have not joined {session_id}"));
        }
        let (_, _, mut log, _) = self.sessions.get_mut(m.session).expect("indexed");
        let left = ParticipantLeft { participant_id: m.pid.clone(), reason: "left".into() };
        self.fx.emit(&mut log, session_id, Event::ParticipantLeft(left));
        me.sessions.remove(session_id);
        // Every connection of this participant stops receiving the session.
        for (_, &other) in self.index.conns.iter() {
            if let Ok(mut c) = self.people.conns.get_mut(other) {
                if c.participant() == Some(&m.pid) {
                    c.joined.remove(session_id);
                }
            }
        }
        self.fx.persist(StoreOp::PutParticipant(me.row()));
        self.dropped.write(VoterDropped { participant: m.pid.clone(), session: Some(session_id.clone()) });
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }
}

/// The `snapshot` frame of `body` (its session, roster, open votes and seq): with the latest
/// page of messages and the text the running turn has streamed so far (a tail of it, starting
/// outside the secrets the masker finds in the whole text: the tail is masked on its own for
/// remotes). Remotes' copy leaves out the last `held_back` bytes, which their stream masker has
/// not released yet (they may begin a secret): they arrive with the deltas that follow.
fn snapshot(
    mut body: Snapshot,
    history: &History,
    streamed: &str,
    held_back: usize,
    staged: &Staged,
) -> crate::io::Framed {
    (body.messages, body.has_older) = super::history::latest_page(history);
    let frame = |body: Snapshot, text: &str| {
        let streaming_text = crate::protocol::snapshot_streaming_text(text, |t| staged.masker.spans(t));
        EventFrame {
            session_id: Some(body.session.id.clone()),
            seq: None,
            body: Event::Snapshot(Snapshot { streaming_text, ..body }),
        }
    };
    if held_back == 0 {
        return staged.framed(&frame(body, streamed));
    }
    // The held-back bytes are the end of what the turn streamed; should they not line up (a
    // tick's deltas were dropped with a failed commit), the remotes' copy has none of it.
    let released = streamed
        .len()
        .checked_sub(held_back)
        .filter(|&end| streamed.is_char_boundary(end))
        .map_or("", |end| &streamed[..end]);
    let host = staged.framed(&frame(body.clone(), streamed)).host;
    let remote = staged.framed(&frame(body, released)).remote;
    crate::io::Framed { host, remote }
}
