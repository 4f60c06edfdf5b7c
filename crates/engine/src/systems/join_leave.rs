//! Rules: joining and leaving sessions, and catching up.
//!
//! `join_session` with `since_seq` replays exactly the missed events (the same bytes that were
//! broadcast), or sends a `snapshot` when they are too old (or `since_seq` is absent). The
//! roster is sent with the caller's own row marked `you`.

use super::params::*;
use super::queries::session_info;
use super::resources::*;
use super::util::{emit, reply_err, reply_no_session, reply_ok, send_snapshot};
use crate::components::*;
use crate::ids::{ParticipantId, SessionId};
use crate::persist::StoreOp;
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

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

pub fn join_leave(
    mut requests: MessageReader<Incoming>,
    index: Res<Index>,
    people: People,
    mut sessions: Query<(&Session, &TurnLock, &mut EventLog, &History)>,
    votes: Query<&PendingVote>,
    fx: Effects,
    mut dropped: MessageWriter<VoterDropped>,
) {
    let People { mut conns, mut participants, shares } = people;
    let Effects { mut staged, mut batch } = fx;
    let mut snapshots: std::collections::BTreeMap<(SessionId, ParticipantId, u64), crate::io::Framed> =
        Default::default();
    for req in requests.read() {
        let (session_id, since) = match &req.method {
            Method::JoinSession(p) => (p.session_id.clone(), Some(p.since_seq)),
            Method::LeaveSession(p) => (p.session_id.clone(), None),
            _ => continue,
        };
        let Some(&ce) = index.conns.get(&req.conn) else { continue };
        let Some(pid) = conns.get(ce).ok().and_then(|c| c.participant().cloned()) else { continue };
        let Some(&pe) = index.participants.get(&pid) else { continue };
        let visible = {
            let me = participants.get(pe).expect("indexed");
            let share = me.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
            index.session_in_scope(me, share, &session_id)
        };
        let Some(se) = visible else {
            reply_no_session(&mut staged, req.conn, &req.id, &session_id);
            continue;
        };
        match since {
            Some(since_seq) => {
                let joined_now = {
                    let mut me = participants.get_mut(pe).expect("indexed");
                    let fresh = me.sessions.insert(session_id.clone());
                    if fresh {
                        batch.push(StoreOp::PutParticipant(me.row()));
                    }
                    fresh.then(|| me.roster_entry())
                };
                let (session, lock, mut log, history) = sessions.get_mut(se).expect("indexed");
                if let Some(entry) = joined_now {
                    emit(&mut log, &session_id, Event::ParticipantJoined(entry), &mut batch, &mut staged);
                }
                let last_seq = log.last_seq();
                // Replay what fits one outbox (in frames and in bytes); beyond that a snapshot is
                // cheaper for everyone.
                let replay = since_seq.and_then(|s| log.since(s)).filter(|ev| {
                    ev.len() <= Outbox::CAPACITY && ev.iter().map(|(_, f)| f.len()).sum::<usize>() <= Outbox::MAX_BYTES
                });
                let catch_up = match &replay {
                    Some(ev) if ev.is_empty() => CatchUp::None,
                    Some(_) => CatchUp::Events,
                    None => CatchUp::Snapshot,
                };
                let mut info = session_info(session, lock, &log, &mut participants.iter(), &session.agent.kind);
                info.read_seq = participants.get(pe).ok().and_then(|me| me.read.get(&session_id).copied());
                let rows = roster(&session_id, &mut participants.iter(), Some(&pid));
                reply_ok(
                    &mut staged,
                    req.conn,
                    &req.id,
                    JoinSessionResult { session: info.clone(), roster: rows.clone(), you: pid.clone(), catch_up },
                );
                match replay {
                    Some(events) => {
                        for (seq, frame) in events {
                            staged.out.push(Outgoing::Replay {
                                conn: req.conn,
                                session: session_id.clone(),
                                seq,
                                frame,
                            });
                        }
                    }
                    None => {
                        // Built once per (session, participant, last_seq) in a tick: forty joins
                        // in one burst cost one snapshot.
                        let key = (session_id.clone(), pid.clone(), last_seq);
                        let frame = match snapshots.get(&key) {
                            Some(frame) => frame.clone(),
                            None => {
                                let (messages, has_older) = super::history::latest_page(history);
                                let body = Event::Snapshot(Snapshot {
                                    session: info,
                                    roster: rows,
                                    messages,
                                    has_older,
                                    votes: open_votes(&index, &votes, &session_id),
                                    streaming_text: crate::protocol::snapshot_streaming_text(&lock.streamed),
                                    last_seq,
                                });
                                let frame = staged.framed(&EventFrame {
                                    session_id: Some(session_id.clone()),
                                    seq: None,
                                    body,
                                });
                                snapshots.insert(key, frame.clone());
                                frame
                            }
                        };
                        send_snapshot(&mut staged, req.conn, session_id.clone(), frame);
                    }
                }
                if let Ok(mut c) = conns.get_mut(ce) {
                    c.joined.insert(session_id.clone());
                    c.outbox.resync.remove(&session_id);
                    c.outbox.queued.insert(session_id.clone(), last_seq);
                    // After a snapshot (never dropped; a later resync_required is queued behind
                    // it) or with nothing missed, the client has everything up to `last_seq`: a
                    // resync must name that, not an older seq. (A replay's frames count as they
                    // are handed over, like live events: they can still be dropped on overflow.)
                    if catch_up != CatchUp::Events {
                        let delivered = c.outbox.delivered.entry(session_id.clone()).or_insert(0);
                        *delivered = (*delivered).max(last_seq);
                    }
                }
            }
            None => {
                if pid.is_host() {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::Forbidden,
                        "the host is always present in its sessions",
                    );
                    continue;
                }
                let mut me = participants.get_mut(pe).expect("indexed");
                if !me.sessions.contains(&session_id) {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::NotJoined,
                        format!("you have not joined {session_id}"),
                    );
                    continue;
                }
                let (_, _, mut log, _) = sessions.get_mut(se).expect("indexed");
                emit(
                    &mut log,
                    &session_id,
                    Event::ParticipantLeft(ParticipantLeft { participant_id: pid.clone(), reason: "left".into() }),
                    &mut batch,
                    &mut staged,
                );
                me.sessions.remove(&session_id);
                // Every connection of this participant stops receiving the session.
                for (_, &other) in index.conns.iter() {
                    if let Ok(mut c) = conns.get_mut(other) {
                        if c.participant() == Some(&pid) {
                            c.joined.remove(&session_id);
                        }
                    }
                }
                batch.push(StoreOp::PutParticipant(me.row()));
                dropped.write(VoterDropped { participant: pid.clone(), session: Some(session_id.clone()) });
                reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
            }
        }
    }
}
