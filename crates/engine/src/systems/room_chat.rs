//! Rules: room chat.
//!
//! A message to the people in a session, never to the agent: it neither needs nor takes the
//! turn and is accepted while someone holds it. Otherwise it is a message like a prompt — the
//! same checks (observers and muted participants cannot send it, members only, bounded text,
//! idempotent by `client_msg_id`), a host-assigned id, a seq, persisted, replayed and paged.

use super::params::{Archive, Directory, Effects};
use super::requests::{Req, SendChat, Typing};
use super::resources::*;
use super::turn_lock::{admit_message, new_message, Admit};
use crate::components::*;
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

pub fn send_chat(
    mut requests: MessageReader<Req<SendChat>>,
    clock: Res<Clock>,
    dir: Directory,
    mut counters: ResMut<Counters>,
    mut sessions: Query<(&Session, &mut EventLog, &mut History)>,
    mut fx: Effects,
    mut archive: Archive,
) {
    for req in requests.read() {
        let SendChat(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some(e) = fx.session_in_scope(&dir.index, req, me, share, &p.session_id) else { continue };
        let Ok((session, mut log, mut history)) = sessions.get_mut(e) else { continue };
        if admit_message(req, p, me, &session.id, &history, &mut archive, &mut fx) == Admit::Answered {
            continue;
        }
        let row = new_message(&mut counters, &session.id, me, p, clock.now, true);
        let message_id = row.id.clone();
        let seq = fx.post_message(&mut log, &mut history, row);
        fx.reply_ok(req.conn, &req.id, SendMessageResult { message_id, seq, duplicate: false });
    }
}

/// When each person last had a `typing` event sent, per session (the throttle).
#[derive(Resource, Default)]
pub struct TypingThrottle(pub std::collections::BTreeMap<(crate::ids::ParticipantId, crate::ids::SessionId), u64>);

/// At most one `typing` event per person per session in this many ms.
pub const TYPING_EVERY_MS: u64 = 2_000;

/// `typing`: tells the other people in the session that someone is typing. Nothing is stored or
/// replayed; a second request within [`TYPING_EVERY_MS`] is answered but not passed on. Only
/// those who may send may type (not observers or muted people), in a session they joined.
pub fn typing(
    mut requests: MessageReader<Req<Typing>>,
    clock: Res<Clock>,
    dir: Directory,
    mut throttle: ResMut<TypingThrottle>,
    mut fx: Effects,
) {
    for req in requests.read() {
        let Typing(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        if fx.session_in_scope(&dir.index, req, me, share, &p.session_id).is_none() {
            continue;
        }
        if !me.can_write() || me.muted {
            fx.reply_err(req.conn, &req.id, ErrorCode::Forbidden, "only those who may send may type");
            continue;
        }
        if !me.sessions.contains(&p.session_id) {
            fx.reply_err(req.conn, &req.id, ErrorCode::NotJoined, format!("join {} first", p.session_id));
            continue;
        }
        let key = (me.id.clone(), p.session_id.clone());
        let due = throttle.0.get(&key).is_none_or(|&last| clock.now >= last + TYPING_EVERY_MS);
        if due {
            throttle.0.insert(key, clock.now);
            let body =
                Event::Typing(TypingEvent { participant_id: me.id.clone(), display_name: me.display_name.clone() });
            let frame = fx.staged.framed(&EventFrame { session_id: Some(p.session_id.clone()), seq: None, body });
            let mut others: Vec<crate::ids::ParticipantId> = dir
                .participants
                .iter()
                .filter(|o| o.id != me.id && o.presence.is_present() && o.sessions.contains(&p.session_id))
                .map(|o| o.id.clone())
                .collect();
            others.sort(); // domain order, never entity order
            for participant in others {
                fx.staged.out.push(Outgoing::Participant { participant, frame: frame.clone() });
            }
        }
        fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }
}
