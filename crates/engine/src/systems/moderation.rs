//! Rules: moderation by the host. Kick closes the participant's sockets within the tick and kills
//! its resume token (with `revoke_share`, its share's link stops working too); mute removes it
//! from voters; admit/refuse decide the lobby.

use super::authenticate::notify_host_lobby;
use super::departure::depart;
use super::params::*;
use super::requests::{Moderate, Req};
use super::resources::*;
use super::util::{emit, reply_err, reply_ok};
use crate::components::*;
use crate::persist::{AuditRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

pub fn moderation(
    mut requests: MessageReader<Req<Moderate>>,
    clock: Res<Clock>,
    index: Res<Index>,
    people: People,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
    leaving: Leaving,
) {
    let People { conns, mut participants, mut shares } = people;
    let Effects { mut staged, mut batch } = fx;
    let Leaving { mut departed, mut dropped } = leaving;
    for req in requests.read() {
        let target = match &req.params {
            Moderate::Kick(KickParams { participant_id, .. }) => participant_id,
            Moderate::Admit(p) | Moderate::Refuse(p) => &p.participant_id,
            Moderate::Mute(p) => &p.participant_id,
        };
        let Some(&pe) = index.participants.get(target) else {
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("no participant {target}"));
            continue;
        };
        let mut p = participants.get_mut(pe).expect("indexed");
        if p.id.is_host() {
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::Forbidden, "the host cannot be moderated");
            continue;
        }
        if matches!(p.presence, Presence::Gone) {
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("{target} is no longer here"));
            continue;
        }
        let mut close_reason: Option<&'static str> = None;
        let action;
        let mut events: Vec<(crate::ids::SessionId, Event)> = Vec::new();
        match &req.params {
            Moderate::Kick(k) => {
                action = if k.revoke_share { "kicked_and_share_revoked" } else { "kicked" };
                close_reason = Some("kicked");
                depart(&mut p, "kicked", |s, ev| events.push((s.clone(), ev)), &mut batch, &mut departed);
                // The share's other connections close within a tick (`close_dead_shares`).
                let share = p.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get_mut(e).ok());
                if let (true, Some(mut share)) = (k.revoke_share, share) {
                    share.revoked = true;
                    batch.push(StoreOp::PutShare(share.row()));
                }
            }
            Moderate::Mute(m) => {
                action = if m.muted { "muted" } else { "unmuted" };
                if p.muted != m.muted {
                    p.muted = m.muted;
                    for s in p.sessions.iter() {
                        events.push((
                            s.clone(),
                            Event::ParticipantMuted(ParticipantMuted { participant_id: p.id.clone(), muted: m.muted }),
                        ));
                    }
                    batch.push(StoreOp::PutParticipant(p.row()));
                    if m.muted {
                        dropped.write(VoterDropped { participant: p.id.clone(), session: None });
                    }
                }
            }
            Moderate::Admit(_) | Moderate::Refuse(_) => {
                let admit = matches!(req.params, Moderate::Admit(_));
                if p.admission != Admission::Pending {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::InvalidParams,
                        format!("{target} is not waiting in the lobby"),
                    );
                    continue;
                }
                action = if admit { "admitted" } else { "refused" };
                p.admission = if admit { Admission::Admitted } else { Admission::Refused };
                let body = Event::Admission(AdmissionEvent { admission: p.admission, role: Some(p.role) });
                let frame = staged.framed(&EventFrame { session_id: None, seq: None, body });
                staged.out.push(Outgoing::Participant { participant: p.id.clone(), frame });
                if let Some(share) = p.share.clone() {
                    notify_host_lobby(&index, &conns, &mut staged, &p.id, &p.display_name, &share, p.admission);
                }
                batch.push(StoreOp::PutParticipant(p.row()));
                if !admit {
                    close_reason = Some("refused");
                    depart(&mut p, "refused", |s, ev| events.push((s.clone(), ev)), &mut batch, &mut departed);
                }
            }
        }
        if let Some(reason) = close_reason {
            for (_, &ce) in index.conns.iter() {
                let Ok(c) = conns.get(ce) else { continue };
                if c.participant() == Some(target) {
                    staged.out.push(Outgoing::Close { conn: c.id, reason: reason.into() });
                }
            }
        }
        for (s, ev) in events {
            if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                emit(&mut log, &s, ev, &mut batch, &mut staged);
            }
        }
        batch.push(StoreOp::Audit(AuditRow {
            at: clock.now,
            actor: "host".into(),
            action: action.into(),
            target: target.to_string(),
            detail: String::new(),
        }));
        reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
    }
}
