//! Rules: moderation by the host. Kick closes the participant's sockets within the tick and kills
//! its resume token (with `revoke_share`, its share's link stops working too); mute removes it
//! from voters; admit/refuse decide the lobby.

use super::authenticate::notify_host_lobby;
use super::departure::depart;
use super::params::*;
use super::requests::{Moderate, Req};
use super::resources::*;
use crate::components::*;
use crate::ids::{ParticipantId, SessionId};
use crate::persist::{AuditRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

/// What moderation reads and writes.
#[derive(SystemParam)]
pub struct Moderation<'w, 's> {
    clock: Res<'w, Clock>,
    index: Res<'w, Index>,
    people: People<'w, 's>,
    logs: Query<'w, 's, &'static mut EventLog>,
    fx: Effects<'w>,
    leaving: Leaving<'w>,
}

/// What a moderation action did, for the steps every action ends with ([`Moderation::finish`]).
struct Outcome {
    /// The action, as the audit log names it.
    action: &'static str,
    /// Close the target's connections, for this reason.
    close: Option<&'static str>,
    /// Session events to emit, in order.
    events: Vec<(SessionId, Event)>,
}

impl Outcome {
    fn new(action: &'static str) -> Outcome {
        Outcome { action, close: None, events: Vec::new() }
    }
}

pub fn moderation(mut requests: MessageReader<Req<Moderate>>, mut m: Moderation) {
    for req in requests.read() {
        let target = req.params.participant_id();
        let Some(pe) = m.target(req, target) else { continue };
        let outcome = match &req.params {
            Moderate::Kick(k) => m.kick(pe, k),
            Moderate::Mute(p) => m.mute(pe, p),
            Moderate::Admit(_) => m.decide(req, pe, true),
            Moderate::Refuse(_) => m.decide(req, pe, false),
        };
        if let Some(outcome) = outcome {
            m.finish(req, target, outcome);
        }
    }
}

impl Moderation<'_, '_> {
    /// The participant a request names, if it may be moderated: present, and not the host.
    /// Answers the request otherwise.
    fn target(&mut self, req: &Req<Moderate>, target: &ParticipantId) -> Option<Entity> {
        let refuse = |fx: &mut Effects, code, message: String| fx.reply_err(req.conn, &req.id, code, message);
        let Some(&pe) = self.index.participants.get(target) else {
            refuse(&mut self.fx, ErrorCode::NotFound, format!("no participant {target}"));
            return None;
        };
        let p = self.people.participants.get(pe).expect("indexed");
        if p.id.is_host() {
            refuse(&mut self.fx, ErrorCode::Forbidden, "the host cannot be moderated".into());
            return None;
        }
        if matches!(p.presence, Presence::Gone) {
            refuse(&mut self.fx, ErrorCode::NotFound, format!("{target} is no longer here"));
            return None;
        }
        Some(pe)
    }

    /// `kick`: the participant departs, its connections close; with `revoke_share` its share's
    /// other connections close within the tick (`close_dead_shares`).
    fn kick(&mut self, pe: Entity, k: &KickParams) -> Option<Outcome> {
        let mut out = Outcome::new(if k.revoke_share { "kicked_and_share_revoked" } else { "kicked" });
        out.close = Some("kicked");
        let mut p = self.people.participants.get_mut(pe).expect("indexed");
        let events = &mut out.events;
        depart(&mut p, "kicked", |s, ev| events.push((s.clone(), ev)), &mut self.fx.batch, &mut self.leaving.departed);
        let share =
            p.share.as_ref().and_then(|s| self.index.shares.get(s)).and_then(|&e| self.people.shares.get_mut(e).ok());
        if let (true, Some(mut share)) = (k.revoke_share, share) {
            share.revoked = true;
            self.fx.persist(StoreOp::PutShare(share.row()));
        }
        Some(out)
    }

    /// `mute`: (un)mutes the participant; a muted participant stops being a voter.
    fn mute(&mut self, pe: Entity, m: &MuteParams) -> Option<Outcome> {
        let mut out = Outcome::new(if m.muted { "muted" } else { "unmuted" });
        let mut p = self.people.participants.get_mut(pe).expect("indexed");
        if p.muted != m.muted {
            p.muted = m.muted;
            for s in p.sessions.iter() {
                let body = ParticipantMuted { participant_id: p.id.clone(), muted: m.muted };
                out.events.push((s.clone(), Event::ParticipantMuted(body)));
            }
            self.fx.persist(StoreOp::PutParticipant(p.row()));
            if m.muted {
                self.leaving.dropped.write(VoterDropped { participant: p.id.clone(), session: None });
            }
        }
        Some(out)
    }

    /// `admit` / `refuse`: decides for a participant waiting in the lobby, tells it and the
    /// host; a refused one departs and its connections close.
    fn decide(&mut self, req: &Req<Moderate>, pe: Entity, admit: bool) -> Option<Outcome> {
        let mut p = self.people.participants.get_mut(pe).expect("indexed");
        if p.admission != Admission::Pending {
            let why = format!("{} is not waiting in the lobby", p.id);
            self.fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, why);
            return None;
        }
        let mut out = Outcome::new(if admit { "admitted" } else { "refused" });
        p.admission = if admit { Admission::Admitted } else { Admission::Refused };
        let staged = &mut self.fx.staged;
        let body = Event::Admission(AdmissionEvent { admission: p.admission, role: Some(p.role) });
        let frame = staged.framed(&EventFrame { session_id: None, seq: None, body });
        staged.out.push(Outgoing::Participant { participant: p.id.clone(), frame });
        if let Some(share) = p.share.clone() {
            notify_host_lobby(&self.index, &self.people.conns, staged, &p.id, &p.display_name, &share, p.admission);
        }
        self.fx.persist(StoreOp::PutParticipant(p.row()));
        if !admit {
            out.close = Some("refused");
            let events = &mut out.events;
            depart(
                &mut p,
                "refused",
                |s, ev| events.push((s.clone(), ev)),
                &mut self.fx.batch,
                &mut self.leaving.departed,
            );
        }
        Some(out)
    }

    /// What every action ends with: the target's connections closed (if it is to leave), the
    /// session events emitted, the audit row, the answer.
    fn finish(&mut self, req: &Req<Moderate>, target: &ParticipantId, out: Outcome) {
        if let Some(reason) = out.close {
            for (_, &ce) in self.index.conns.iter() {
                let Ok(c) = self.people.conns.get(ce) else { continue };
                if c.participant() == Some(target) {
                    self.fx.staged.out.push(Outgoing::Close { conn: c.id, reason: reason.into() });
                }
            }
        }
        for (s, ev) in out.events {
            if let Some(mut log) = self.index.sessions.get(&s).and_then(|&e| self.logs.get_mut(e).ok()) {
                self.fx.emit(&mut log, &s, ev);
            }
        }
        self.fx.persist(StoreOp::Audit(AuditRow {
            at: self.clock.now,
            actor: "host".into(),
            action: out.action.into(),
            target: target.to_string(),
            detail: String::new(),
        }));
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }
}
