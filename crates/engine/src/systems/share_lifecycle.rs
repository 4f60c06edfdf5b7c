//! Rule: revoking a share or its expiry closes the affected sockets within one tick, and share
//! edits made by the CLI in the database take effect on the running host within one tick
//! (the store polls SQLite's `data_version`; workspaces added by the CLI are picked up too).

use super::departure::depart;
use super::ingest::ReloadShares;
use super::params::*;
use super::resources::*;
use super::util::emit;
use crate::components::{EventLog, Presence, Share, Workspace};
use crate::persist::{AuditRow, StoreOp};
use bevy_ecs::prelude::*;

/// Picks up share rows written by another process (the `share` CLI).
pub fn reload_shares(
    mut reload: ResMut<ReloadShares>,
    mut store: ResMut<StoreRes>,
    mut index: ResMut<Index>,
    mut shares: Query<&mut Share>,
    mut workspaces: Query<&mut Workspace>,
    mut counters: ResMut<Counters>,
    mut commands: Commands,
) {
    let rows = match store.get().shares_changed_externally() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("cannot poll the store for share changes: {e}");
            None
        }
    };
    reload.0 = false;
    let Some(rows) = rows else { return };
    match store.get().workspaces() {
        Ok(list) => {
            for w in list {
                counters.workspace = counters.workspace.max(w.id.number().unwrap_or(0));
                match index.workspaces.get(&w.id).copied() {
                    Some(e) => {
                        if let Ok(mut existing) = workspaces.get_mut(e) {
                            *existing = Workspace(w);
                        }
                    }
                    None => {
                        tracing::info!(workspace = %w.id, "workspace added by the CLI");
                        let id = w.id.clone();
                        let e = commands.spawn(Workspace(w)).id();
                        index.workspaces.insert(id, e);
                    }
                }
            }
        }
        Err(e) => tracing::warn!("cannot reload workspaces: {e}"),
    }
    for row in rows {
        counters.share = counters.share.max(row.id.number().unwrap_or(0));
        match index.shares.get(&row.id).copied() {
            Some(e) => {
                if let Ok(mut s) = shares.get_mut(e) {
                    let uses = s.uses.max(row.uses);
                    *s = Share(row);
                    s.uses = uses;
                }
            }
            None => {
                let id = row.id.clone();
                tracing::info!(share = %id, "share added by the CLI");
                let e = commands.spawn(Share(row)).id();
                index.shares.insert(id, e);
            }
        }
    }
}

/// Closes connections of participants whose share is revoked or expired; they are gone for good.
pub fn close_dead_shares(
    clock: Res<Clock>,
    mut index: ResMut<Index>,
    people: People,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
    mut departed: MessageWriter<Departed>,
) {
    let People { conns, mut participants, shares } = people;
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    // Only a dead share's members who have not left yet (they leave now, so a dead share is
    // walked once, not every tick).
    let dead: Vec<_> = index
        .shares
        .iter()
        .filter(|(id, &se)| index.share_members.contains_key(*id) && shares.get(se).is_ok_and(|s| s.dead(now)))
        .map(|(id, _)| id.clone())
        .collect();
    for share_id in dead {
        let Some(share) = index.shares.get(&share_id).and_then(|&se| shares.get(se).ok()) else { continue };
        let members = index.share_members.remove(&share_id).unwrap_or_default();
        let reason: &'static str = if share.revoked { "revoked" } else { "expired" };
        for pid in &members {
            let Some(&pe) = index.participants.get(pid) else { continue };
            let Ok(mut p) = participants.get_mut(pe) else { continue };
            if p.share.as_ref() != Some(&share.id) || matches!(p.presence, Presence::Gone) {
                continue;
            }
            for (_, &ce) in index.conns.iter() {
                let Ok(c) = conns.get(ce) else { continue };
                if c.participant() == Some(pid) {
                    staged.out.push(Outgoing::Close { conn: c.id, reason: reason.to_string() });
                }
            }
            let mut staged_events = Vec::new();
            depart(&mut p, reason, |s, ev| staged_events.push((s.clone(), ev)), &mut batch, &mut departed);
            for (s, ev) in staged_events {
                if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                    emit(&mut log, &s, ev, &mut batch, &mut staged);
                }
            }
            batch.push(StoreOp::Audit(AuditRow {
                at: now,
                actor: "system".into(),
                action: "disconnected".into(),
                target: pid.to_string(),
                detail: format!("share {} {reason}", share.id),
            }));
        }
    }
}
