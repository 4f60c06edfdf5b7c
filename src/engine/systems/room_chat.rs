//! Rules: room chat.
//!
//! A message to the people in a session, never to the agent: it neither needs nor takes the
//! turn and is accepted while someone holds it. Otherwise it is a message like a prompt — the
//! same checks (observers and muted participants cannot send it, members only, bounded text,
//! idempotent by `client_msg_id`), a host-assigned id, a seq, persisted, replayed and paged.

use super::params::{Archive, Directory, Effects};
use super::resources::*;
use super::turn_lock::{admit_message, Admit};
use super::util::in_scope;
use crate::engine::components::*;
use crate::ids::MessageId;
use crate::persist::{MessageRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

pub fn send_chat(
    mut requests: MessageReader<Incoming>,
    clock: Res<Clock>,
    dir: Directory,
    mut counters: ResMut<Counters>,
    mut sessions: Query<(&Session, &mut EventLog, &mut History)>,
    mut fx: Effects,
    mut archive: Archive,
) {
    for req in requests.read() {
        let Method::SendChat(p) = &req.method else { continue };
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some((session, mut log, mut history)) = dir
            .index
            .sessions
            .get(&p.session_id)
            .and_then(|&e| sessions.get_mut(e).ok())
            .filter(|(s, ..)| in_scope(me, share, &s.workspace))
        else {
            fx.reply_err(req.conn, &req.id, ErrorCode::NotFound, format!("no session {}", p.session_id));
            continue;
        };
        if admit_message(req, p, me, &session.id, &history, &mut archive, &mut fx) == Admit::Answered {
            continue;
        }
        counters.message += 1;
        let row = MessageRow {
            id: MessageId::nth(counters.message),
            session: session.id.clone(),
            seq: 0,
            author_id: me.id.to_string(),
            author_name: me.display_name.clone(),
            text: p.text.clone(),
            client_msg_id: Some(p.client_msg_id.clone()),
            created_at: clock.now,
            room: true,
        };
        let event = MessageEvent {
            message_id: row.id.clone(),
            author_id: row.author_id.clone(),
            author_name: row.author_name.clone(),
            text: row.text.clone(),
            client_msg_id: row.client_msg_id.clone(),
            room: true,
        };
        let seq = fx.emit(&mut log, &session.id, Event::Chat(event));
        let row = MessageRow { seq, ..row };
        fx.persist(StoreOp::PutMessage(row.clone()));
        history.push(row.clone());
        fx.reply_ok(req.conn, &req.id, SendMessageResult { message_id: row.id, seq, duplicate: false });
    }
}
