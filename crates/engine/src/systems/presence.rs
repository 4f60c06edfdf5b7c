//! Rules: presence. A participant may have several connections; losing the last one starts the
//! grace period (default 30 s) during which a resume keeps id, roster entry, votes and turn.
//! Past grace the participant is gone (implicit abstain, turn released).

use super::departure::depart;
use super::params::*;
use super::resources::*;
use super::util::emit;
use crate::components::{EventLog, Participant, Presence};
use crate::config::EngineConfig;
use crate::persist::StoreOp;
use crate::protocol::{Event, PresenceChanged, PresenceState};
use bevy_ecs::prelude::*;

/// The transport closed a connection: drop it; the participant's last connection starts grace.
pub fn connection_closed(
    mut closed: MessageReader<ConnClosed>,
    env: TickEnv,
    registry: Registry,
    people: People,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
) {
    let TickEnv { clock, config } = env;
    let Registry { mut index, mut commands, .. } = registry;
    let People { conns, mut participants, .. } = people;
    let Effects { mut staged, mut batch } = fx;
    for ev in closed.read() {
        let Some(ce) = index.conns.remove(&ev.conn) else { continue };
        // A connection the engine closed itself (too slow, say) still names its participant.
        let pid = conns.get(ce).ok().and_then(|c| c.auth.owner().cloned());
        commands.entity(ce).despawn();
        let Some(pid) = pid else { continue };
        let Some(mut p) = index.participants.get(&pid).and_then(|&e| participants.get_mut(e).ok()) else { continue };
        if let Some(open) = p.share.as_ref().and_then(|s| index.share_connections.get_mut(s)) {
            *open = open.saturating_sub(1);
        }
        match p.presence {
            Presence::Connected(n) if n > 1 => {
                p.presence = Presence::Connected(n - 1);
            }
            Presence::Connected(_) => {
                if p.id.is_host() {
                    // The host never leaves its own sessions.
                    p.presence = Presence::Connected(0);
                    continue;
                }
                p.presence = Presence::Grace { until: clock.now + config.grace_ms };
                index.in_grace.insert((clock.now + config.grace_ms, pid.clone()));
                for s in p.sessions.clone() {
                    if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                        emit(
                            &mut log,
                            &s,
                            Event::PresenceChanged(PresenceChanged {
                                participant_id: pid.clone(),
                                presence: PresenceState::Reconnecting,
                                connections: 0,
                            }),
                            &mut batch,
                            &mut staged,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// After a gap in the ticks longer than `EngineConfig::suspend_gap_ms` (the host was
/// suspended, or stopped with SIGSTOP), everyone within their grace period gets a fresh one, as
/// after a restart: the remotes could not reconnect to a host that was not running, and their
/// reconnections are only now arriving.
pub fn fresh_grace_after_gap(
    mut gap: ResMut<ClockGap>,
    clock: Res<Clock>,
    config: Res<EngineConfig>,
    mut index: ResMut<Index>,
    mut participants: Query<&mut Participant>,
) {
    let Some(ms) = gap.0.take() else { return };
    tracing::info!("no tick for {ms} ms (host suspended?): everyone reconnecting gets a fresh grace period");
    fresh_grace(&mut index, &mut participants, clock.now + config.grace_ms);
}

/// Everyone within their grace period gets a new one ending at `until` (after a restart, or a
/// suspended host: they could not reconnect to a host that was not running).
pub fn fresh_grace(index: &mut Index, participants: &mut Query<&mut Participant>, until: u64) {
    let Index { in_grace, participants: ids, .. } = index;
    for (_, pid) in std::mem::take(in_grace) {
        if let Some(mut p) = ids.get(&pid).and_then(|&pe| participants.get_mut(pe).ok()) {
            if matches!(p.presence, Presence::Grace { .. }) {
                p.presence = Presence::Grace { until };
                in_grace.insert((until, pid));
            }
        }
    }
}

/// Past the grace period a participant is gone.
pub fn grace_expiry(
    clock: Res<Clock>,
    mut index: ResMut<Index>,
    mut participants: Query<&mut Participant>,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
    mut departed: MessageWriter<Departed>,
) {
    let Effects { mut staged, mut batch } = fx;
    // The grace periods that ended, in participant order.
    let mut ended = std::collections::BTreeSet::new();
    while index.in_grace.first().is_some_and(|(until, _)| *until <= clock.now) {
        let (until, pid) = index.in_grace.pop_first().expect("checked");
        ended.insert((pid, until));
    }
    for (pid, ended_at) in ended {
        let Some(mut p) = index.participants.get(&pid).and_then(|&pe| participants.get_mut(pe).ok()) else { continue };
        // Still in that grace period (not back, not gone, not renewed).
        if p.presence != (Presence::Grace { until: ended_at }) {
            continue;
        }
        let mut events = Vec::new();
        depart(&mut p, "gone", |s, ev| events.push((s.clone(), ev)), &mut batch, &mut departed);
        for (s, ev) in events {
            if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                emit(&mut log, &s, ev, &mut batch, &mut staged);
            }
        }
        batch.push(StoreOp::Audit(crate::persist::AuditRow {
            at: clock.now,
            actor: "system".into(),
            action: "gone".into(),
            target: p.id.to_string(),
            detail: "grace period over".into(),
        }));
    }
}
