//! A stable, human-readable digest of the domain state, in id order (transcripts and tests).

use super::resources::Index;
use crate::components::*;
use bevy_ecs::prelude::*;
use std::fmt::Write;

pub fn state_digest(world: &mut World) -> String {
    let mut out = String::new();
    let index = world.resource::<Index>();
    let ws: Vec<_> = index.workspaces.values().copied().collect();
    let ss: Vec<_> = index.sessions.values().copied().collect();
    let sh: Vec<_> = index.shares.values().copied().collect();
    let ps: Vec<_> = index.participants.values().copied().collect();
    let vs: Vec<_> = index.votes.values().copied().collect();
    for e in ws {
        if let Some(w) = world.get::<Workspace>(e) {
            let _ = writeln!(out, "workspace {} name={:?} agent={}", w.id, w.name, w.agent.kind);
        }
    }
    for e in ss {
        // A session whose tails are not resident is shown as stored (reading it loads nothing),
        // so the digest does not depend on what happens to be in memory.
        let stored = match world.get::<EventLog>(e) {
            Some(log) if log.resident.is_none() => world.get::<Session>(e).map(|s| s.id.clone()).map(|id| {
                let tails = world.resource_mut::<super::resources::StoreRes>().get().load_tails(&id);
                History { messages: tails.map(|t| t.messages).unwrap_or_default().into(), ..History::default() }
            }),
            _ => None,
        };
        let (Some(s), Some(l), Some(g), Some(h)) =
            (world.get::<Session>(e), world.get::<TurnLock>(e), world.get::<EventLog>(e), world.get::<History>(e))
        else {
            continue;
        };
        let h = stored.as_ref().unwrap_or(h);
        let _ = writeln!(
            out,
            "session {} workspace={} title={:?} status={} holder={} turn={} last_seq={} messages={}",
            s.id,
            s.workspace,
            s.title,
            s.status.as_str(),
            l.holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
            l.turn_id,
            g.last_seq(),
            h.messages.len()
        );
        for m in &h.messages {
            let _ = writeln!(
                out,
                "  message {} seq={} author={}({:?}) text={:?}",
                m.id, m.seq, m.author_id, m.author_name, m.text
            );
        }
    }
    for e in sh {
        if let Some(s) = world.get::<Share>(e) {
            let _ = writeln!(
                out,
                "share {} role={} collaborative={} consensus={} admission={} uses={} revoked={}",
                s.id,
                s.role.as_str(),
                s.collaborative,
                s.consensus_required,
                s.admission_required,
                s.uses,
                s.revoked
            );
        }
    }
    for e in ps {
        if let Some(p) = world.get::<Participant>(e) {
            let presence = match p.presence {
                Presence::Connected(n) => format!("connected({n})"),
                Presence::Grace { .. } => "reconnecting".into(),
                Presence::Gone => "gone".into(),
            };
            let sessions: Vec<String> = p.sessions.iter().map(|s| s.to_string()).collect();
            let _ = writeln!(
                out,
                "participant {} name={:?} role={} muted={} admission={:?} presence={} sessions=[{}]",
                p.id,
                p.display_name,
                p.role.as_str(),
                p.muted,
                p.admission,
                presence,
                sessions.join(",")
            );
        }
    }
    for e in vs {
        if let Some(v) = world.get::<PendingVote>(e) {
            let outcome = v
                .outcome
                .as_ref()
                .map(|o| format!("{:?} by {} reason={:?} answers={:?}", o.outcome, o.resolved_by, o.reason, o.answers))
                .unwrap_or_else(|| "open".into());
            let req: Vec<String> = v.required.iter().map(|r| r.to_string()).collect();
            let _ =
                writeln!(out, "vote {} session={} required=[{}] outcome={}", v.id, v.session, req.join(","), outcome);
        }
    }
    out
}
