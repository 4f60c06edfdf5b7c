//! Rule: pairing. A token authenticates against exactly one usable share (hash compared in
//! constant time); expired, exhausted, revoked and wrong tokens fail identically; 5 failures per
//! source address per minute lead to `rate_limited`; a resume token within grace keeps the
//! participant; 1:1 shares admit one remote at a time; admission shares park newcomers in a lobby.

use super::params::*;
use super::resources::*;
use super::util::{addr_key, emit, name_forms, reply_err, reply_ok, send_direct, valid_display_name};
use crate::components::{AuthState, Connection, EventLog, Participant, Presence};
use crate::ids::{ConnId, ParticipantId};
use crate::persist::{AuditRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use crate::token;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use std::collections::BTreeSet;

/// What pairing keeps besides the domain: the RNG for resume tokens and the failed attempts
/// per source address (rate limit).
#[derive(SystemParam)]
pub struct Pairing<'w> {
    pub rng: ResMut<'w, EngineRng>,
    pub failures: ResMut<'w, AuthFailures>,
}

/// How long a failed attempt counts against its address.
pub const FAILURE_WINDOW_MS: u64 = 60_000;

pub fn authenticate(
    mut requests: MessageReader<Incoming>,
    env: TickEnv,
    mut pairing: Pairing,
    registry: Registry,
    people: People,
    mut logs: Query<&mut EventLog>,
    fx: Effects,
) {
    let TickEnv { clock, config } = env;
    let Registry { mut index, mut counters, mut commands } = registry;
    let People { mut conns, mut participants, mut shares } = people;
    let (rng, failures) = (&mut pairing.rng, &mut pairing.failures);
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    // Participants created earlier in this same tick (their entities appear after the system).
    let mut fresh: Vec<(String, crate::ids::ShareId)> = Vec::new();
    for req in requests.read() {
        let Method::Authenticate(params) = &req.method else { continue };
        let Some(&ce) = index.conns.get(&req.conn) else { continue };
        let Ok(addr) = conns.get(ce).map(|c| addr_key(&c.addr)) else { continue };

        let window = failures.0.entry(addr.clone()).or_default();
        while window.front().is_some_and(|&t| t + FAILURE_WINDOW_MS <= now) {
            window.pop_front();
        }
        if window.len() >= config.auth_failures_per_minute {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::RateLimited,
                "too many failed authentications from your address; wait a minute",
            );
            continue;
        }
        let name = match valid_display_name(&params.display_name) {
            Ok(n) => n,
            Err(m) => {
                reply_err(&mut staged, req.conn, &req.id, ErrorCode::InvalidParams, m);
                continue;
            }
        };

        // 1. Resume an existing participant.
        if let Some(resume) = &params.resume_token {
            let found = index.participants.iter().find_map(|(id, &pe)| {
                let p = participants.get(pe).ok()?;
                let ok = p.role != Role::Host && p.resume_hash.is_some_and(|h| token::matches(resume, &h));
                ok.then(|| (id.clone(), pe))
            });
            if let Some((pid, pe)) = found {
                let share_alive = participants
                    .get(pe)
                    .ok()
                    .and_then(|p| p.share.clone())
                    .and_then(|s| index.shares.get(&s).copied())
                    .and_then(|se| shares.get(se).ok())
                    .is_some_and(|s| !s.dead(now));
                // Caps count every connection, resumed or not: a resume token must not open more
                // connections than the share (or one person) may hold.
                let connected = |p: &Participant| match p.presence {
                    Presence::Connected(n) => n as usize,
                    _ => 0,
                };
                let share_id = participants.get(pe).ok().and_then(|p| p.share.clone());
                let mine = participants.get(pe).map(connected).unwrap_or(0);
                let on_share: usize = participants.iter().filter(|p| p.share == share_id).map(connected).sum::<usize>()
                    + fresh.iter().filter(|(_, s)| Some(s) == share_id.as_ref()).count();
                if share_alive && on_share >= config.max_connections_per_share {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::ShareInUse,
                        "this share has too many connections",
                    );
                    continue;
                }
                if share_alive && mine >= config.max_connections_per_participant {
                    let message = format!(
                        "you already have {mine} connections open (at most {}); close one first",
                        config.max_connections_per_participant
                    );
                    reply_err(&mut staged, req.conn, &req.id, ErrorCode::ShareInUse, message);
                    continue;
                }
                if share_alive {
                    let mut p = participants.get_mut(pe).expect("indexed participant");
                    let was_grace = matches!(p.presence, Presence::Grace { .. });
                    p.presence = match p.presence {
                        Presence::Connected(n) => Presence::Connected(n + 1),
                        _ => Presence::Connected(1),
                    };
                    if let Ok(mut c) = conns.get_mut(ce) {
                        c.auth = AuthState::Authenticated(pid.clone());
                    }
                    let connections = match p.presence {
                        Presence::Connected(n) => n,
                        _ => 0,
                    };
                    if was_grace {
                        for s in p.sessions.clone() {
                            if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                                emit(
                                    &mut log,
                                    &s,
                                    Event::PresenceChanged(PresenceChanged {
                                        participant_id: pid.clone(),
                                        presence: PresenceState::Connected,
                                        connections,
                                    }),
                                    &mut batch,
                                    &mut staged,
                                );
                            }
                        }
                    }
                    reply_ok(
                        &mut staged,
                        req.conn,
                        &req.id,
                        AuthenticateResult {
                            participant_id: pid.clone(),
                            display_name: p.display_name.clone(),
                            role: p.role,
                            resume_token: resume.clone(),
                            admission: p.admission,
                            protocol_version: PROTOCOL_VERSION,
                            resumed: true,
                        },
                    );
                    continue;
                }
            }
        }

        // 2. A pairing token.
        let share_entity =
            index.shares.values().copied().find(|&se| {
                shares.get(se).is_ok_and(|s| token::matches(&params.token, &s.token_hash) && s.usable(now))
            });
        let Some(se) = share_entity else {
            failures.0.entry(addr.clone()).or_default().push_back(now);
            tracing::info!(%addr, "authentication failed");
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::Unauthenticated, "invalid, expired or revoked token");
            continue;
        };
        let share = shares.get(se).expect("found above").clone();
        let live: Vec<&Participant> = participants
            .iter()
            .filter(|p| p.share.as_ref() == Some(&share.id) && !matches!(p.presence, Presence::Gone))
            .collect();
        let fresh_on_share = fresh.iter().filter(|(_, s)| *s == share.id).count();
        if !share.collaborative && (!live.is_empty() || fresh_on_share > 0) {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::ShareInUse,
                "this 1:1 share is in use by another person",
            );
            continue;
        }
        let live_conns: u32 = live
            .iter()
            .map(|p| match p.presence {
                Presence::Connected(n) => n,
                _ => 0,
            })
            .sum();
        if live_conns as usize + fresh_on_share >= config.max_connections_per_share {
            reply_err(&mut staged, req.conn, &req.id, ErrorCode::ShareInUse, "this share has too many connections");
            continue;
        }

        // Display names are unique among everyone present, compared as they read: "Ann",
        // "Ann (2)", ...; a look-alike "Аnn" (Cyrillic А) or "ANN" gets a counter the same way.
        let taken: BTreeSet<String> = participants
            .iter()
            .filter(|p| !matches!(p.presence, Presence::Gone))
            .map(|p| p.display_name.as_str())
            .chain(fresh.iter().map(|(n, _)| n.as_str()))
            .flat_map(name_forms)
            .collect();
        let display_name = unique_name(&name, &taken);
        fresh.push((display_name.clone(), share.id.clone()));

        counters.participant += 1;
        let pid = ParticipantId::nth(counters.participant);
        let resume_token = token::generate(&mut rng.0);
        let admission = if share.admission_required { Admission::Pending } else { Admission::Admitted };
        let participant = Participant {
            id: pid.clone(),
            display_name: display_name.clone(),
            role: share.role,
            share: Some(share.id.clone()),
            muted: false,
            admission,
            sessions: BTreeSet::new(),
            presence: Presence::Connected(1),
            resume_hash: Some(token::hash(&resume_token)),
            read: Default::default(),
        };
        batch.push(StoreOp::PutParticipant(participant.row()));
        let pe = commands.spawn(participant).id();
        index.participants.insert(pid.clone(), pe);
        {
            let mut s = shares.get_mut(se).expect("found above");
            s.uses += 1;
            batch.push(StoreOp::PutShare(s.row()));
        }
        if let Ok(mut c) = conns.get_mut(ce) {
            c.auth = AuthState::Authenticated(pid.clone());
        }
        batch.push(StoreOp::Audit(AuditRow {
            at: now,
            actor: pid.to_string(),
            action: "authenticated".into(),
            target: share.id.to_string(),
            detail: format!("{display_name} ({})", admission_str(admission)),
        }));
        if admission == Admission::Pending {
            notify_host_lobby(&index, &conns, &mut staged, &pid, &display_name, &share.id, Admission::Pending);
        }
        reply_ok(
            &mut staged,
            req.conn,
            &req.id,
            AuthenticateResult {
                participant_id: pid,
                display_name,
                role: share.role,
                resume_token,
                admission,
                protocol_version: PROTOCOL_VERSION,
                resumed: false,
            },
        );
    }
}

fn admission_str(a: Admission) -> &'static str {
    match a {
        Admission::Admitted => "admitted",
        Admission::Pending => "waiting in lobby",
        Admission::Refused => "refused",
    }
}

/// `name`, or `name (2)`, `name (3)`, ... — the first that shares no form ([`name_forms`]: case,
/// compatibility forms and look-alike letters aside) with a name present; `taken` holds the
/// forms of the names present.
pub fn unique_name(name: &str, taken: &BTreeSet<String>) -> String {
    let free = |candidate: &str| name_forms(candidate).iter().all(|f| !taken.contains(f));
    if free(name) {
        return name.to_string();
    }
    (2..).map(|n| format!("{name} ({n})")).find(|c| free(c)).expect("unbounded")
}

/// Tells every host connection about a lobby change.
pub fn notify_host_lobby(
    index: &Index,
    conns: &Query<&mut Connection>,
    staged: &mut Staged,
    pid: &ParticipantId,
    name: &str,
    share: &crate::ids::ShareId,
    admission: Admission,
) {
    let host_conns: Vec<ConnId> =
        index.conns.values().filter_map(|&e| conns.get(e).ok()).filter(|c| c.is_host).map(|c| c.id).collect();
    for conn in host_conns {
        send_direct(
            staged,
            conn,
            None,
            Event::Lobby(LobbyEvent {
                participant_id: pid.clone(),
                display_name: name.to_string(),
                share_id: share.clone(),
                admission,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(names: &[&str]) -> BTreeSet<String> {
        names.iter().copied().flat_map(name_forms).collect()
    }

    #[test]
    fn second_ann_becomes_ann_2() {
        assert_eq!(unique_name("Ann", &present(&[])), "Ann");
        assert_eq!(unique_name("Ann", &present(&["Ann"])), "Ann (2)");
        assert_eq!(unique_name("ann", &present(&["Ann", "Ann (2)"])), "ann (3)");
    }

    #[test]
    fn a_look_alike_of_a_present_name_gets_a_counter_too() {
        // Cyrillic А, fullwidth, math bold, Greek capitals: each reads as a name present.
        assert_eq!(unique_name("\u{410}nn", &present(&["Ann"])), "\u{410}nn (2)");
        assert_eq!(unique_name("Ａｎｎ", &present(&["Ann", "Ann (2)"])), "Ａｎｎ (3)");
        assert_eq!(unique_name("𝐁𝐨𝐛", &present(&["bob"])), "𝐁𝐨𝐛 (2)");
        assert_eq!(
            unique_name("\u{39A}\u{391}\u{3A4}\u{395}", &present(&["Kate"])),
            "\u{39A}\u{391}\u{3A4}\u{395} (2)"
        );
        assert_eq!(unique_name("Iris", &present(&["iris"])), "Iris (2)");
        assert_eq!(unique_name("Zoe", &present(&["Zoë", "Ann"])), "Zoe", "an accent is visible");
    }
}
