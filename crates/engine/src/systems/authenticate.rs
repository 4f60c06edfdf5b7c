//! Rule: pairing. A token authenticates against exactly one usable share (hash compared in
//! constant time); expired, exhausted, revoked and wrong tokens fail identically; 5 failures per
//! source address per minute lead to `rate_limited`; a resume token within grace keeps the
//! participant; 1:1 shares admit one remote at a time; admission shares park newcomers in a lobby.
//!
//! Nothing here walks everyone ever seen: a resume token is found by its hash, names are checked
//! against the index of names present, and a share's caps read its count of open connections
//! (`Index`; the invariant checker compares each with the world every tick in tests).

use super::params::*;
use super::requests::{Authenticate, Req};
use super::resources::*;
use super::util::{addr_key, name_forms, send_direct, valid_display_name};
use crate::components::{AuthState, Connection, EventLog, Participant, Presence};
use crate::ids::{ConnId, ParticipantId};
use crate::persist::{AuditRow, ParticipantRecord, StoreOp};
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

/// One `authenticate` request being decided.
struct Attempt<'a> {
    req: &'a Req<Authenticate>,
    /// The connection's entity.
    conn: Entity,
    /// The display name asked for, validated.
    name: String,
    now: u64,
    config: &'a crate::config::EngineConfig,
}

impl Pairing<'_> {
    /// Whether `addr` failed too often in the last minute (older failures are forgotten here).
    fn rate_limited(&mut self, addr: &str, now: u64, per_minute: usize) -> bool {
        let window = self.failures.0.entry(addr.to_string()).or_default();
        while window.front().is_some_and(|&t| t + FAILURE_WINDOW_MS <= now) {
            window.pop_front();
        }
        window.len() >= per_minute
    }
}

pub fn authenticate(
    mut requests: MessageReader<Req<Authenticate>>,
    env: TickEnv,
    mut pairing: Pairing,
    mut registry: Registry,
    mut people: People,
    mut logs: Query<&mut EventLog>,
    mut fx: Effects,
) {
    let (now, config) = (env.clock.now, &*env.config);
    for req in requests.read() {
        let Authenticate(params) = &req.params;
        let Some(&conn) = registry.index.conns.get(&req.conn) else { continue };
        let Ok(addr) = people.conns.get(conn).map(|c| addr_key(&c.addr)) else { continue };
        if pairing.rate_limited(&addr, now, config.auth_failures_per_minute) {
            let why = "too many failed authentications from your address; wait a minute";
            fx.reply_err(req.conn, &req.id, ErrorCode::RateLimited, why);
            continue;
        }
        let name = match valid_display_name(&params.display_name) {
            Ok(n) => n,
            Err(m) => {
                fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, m);
                continue;
            }
        };
        let attempt = Attempt { req, conn, name, now, config };
        // 1. Resume an existing participant; 2. otherwise, a pairing token.
        if let Some(resume) = &params.resume_token {
            if resume_participant(&attempt, resume, &mut registry.index, &mut people, &mut logs, &mut fx) {
                continue;
            }
        }
        if !pair(&attempt, &params.token, &mut pairing, &mut registry, &mut people, &mut fx) {
            pairing.failures.0.entry(addr.clone()).or_default().push_back(now);
            tracing::info!(%addr, "authentication failed");
        }
    }
}

/// Resumes the participant whose resume token this is, if its share still lives and the
/// connection caps allow; returns whether the request was answered (otherwise the token is tried
/// as a pairing token).
fn resume_participant(
    a: &Attempt,
    resume: &str,
    index: &mut Index,
    people: &mut People,
    logs: &mut Query<&mut EventLog>,
    fx: &mut Effects,
) -> bool {
    let (req, now, config) = (a.req, a.now, a.config);
    // Looked up by its hash (SHA-256 of 256 random bits: the lookup's timing tells nothing
    // about other tokens); the participant's own hash is the authority.
    let hash = token::hash(resume);
    let found = index.resume.get(&hash).and_then(|pid| {
        let pe = *index.participants.get(pid)?;
        let p = people.participants.get(pe).ok()?;
        (p.role != Role::Host && p.resume_hash == Some(hash)).then(|| (pid.clone(), pe))
    });
    let Some((pid, pe)) = found else {
        // A participant who left keeps no resume token: forget the entry.
        index.resume.remove(&hash);
        return false;
    };
    let share_id = people.participants.get(pe).ok().and_then(|p| p.share.clone());
    let share_alive = share_id
        .as_ref()
        .and_then(|s| index.shares.get(s).copied())
        .and_then(|se| people.shares.get(se).ok())
        .is_some_and(|s| !s.dead(now));
    if !share_alive {
        return false;
    }
    // Caps count every connection, resumed or not: a resume token must not open more
    // connections than the share (or one person) may hold.
    let connected = |p: &Participant| match p.presence {
        Presence::Connected(n) => n as usize,
        _ => 0,
    };
    let mine = people.participants.get(pe).map(connected).unwrap_or(0);
    let on_share = share_id.as_ref().and_then(|s| index.share_connections.get(s)).copied().unwrap_or(0);
    if on_share >= config.max_connections_per_share {
        fx.reply_err(req.conn, &req.id, ErrorCode::ShareInUse, "this share has too many connections");
        return true;
    }
    if mine >= config.max_connections_per_participant {
        let message = format!(
            "you already have {mine} connections open (at most {}); close one first",
            config.max_connections_per_participant
        );
        fx.reply_err(req.conn, &req.id, ErrorCode::ShareInUse, message);
        return true;
    }
    let mut p = people.participants.get_mut(pe).expect("indexed participant");
    let was_grace = matches!(p.presence, Presence::Grace { .. });
    let connections = match p.presence {
        Presence::Connected(n) => n + 1,
        _ => 1,
    };
    p.presence = Presence::Connected(connections);
    if let Some(share) = share_id {
        *index.share_connections.entry(share).or_default() += 1;
    }
    if let Ok(mut c) = people.conns.get_mut(a.conn) {
        c.auth = AuthState::Authenticated(pid.clone());
    }
    if was_grace {
        for s in p.sessions.clone() {
            if let Some(mut log) = index.sessions.get(&s).and_then(|&e| logs.get_mut(e).ok()) {
                let body = Event::PresenceChanged(PresenceChanged {
                    participant_id: pid.clone(),
                    presence: PresenceState::Connected,
                    connections,
                });
                fx.emit(&mut log, &s, body);
            }
        }
    }
    let result = AuthenticateResult {
        participant_id: pid,
        display_name: p.display_name.clone(),
        role: p.role,
        resume_token: resume.to_string(),
        admission: p.admission,
        protocol_version: PROTOCOL_VERSION,
        resumed: true,
    };
    fx.reply_ok(req.conn, &req.id, result);
    true
}

/// Pairs a new participant with the usable share whose token this is: a unique display name,
/// a resume token, the lobby when the share asks for admission. Returns false when no usable
/// share has this token (answered `unauthenticated`, like every bad token).
fn pair(
    a: &Attempt,
    token: &str,
    pairing: &mut Pairing,
    registry: &mut Registry,
    people: &mut People,
    fx: &mut Effects,
) -> bool {
    let (req, now, config) = (a.req, a.now, a.config);
    let share_entity = registry
        .index
        .shares
        .values()
        .copied()
        .find(|&se| people.shares.get(se).is_ok_and(|s| token::matches(token, &s.token_hash) && s.usable(now)));
    let Some(se) = share_entity else {
        fx.reply_err(req.conn, &req.id, ErrorCode::Unauthenticated, "invalid, expired or revoked token");
        return false;
    };
    let share = people.shares.get(se).expect("found above").clone();
    // (Everyone paired earlier in this tick is in the index already.)
    if !share.collaborative && share_has_members(&mut registry.index, &people.participants, &share.id) {
        fx.reply_err(req.conn, &req.id, ErrorCode::ShareInUse, "this 1:1 share is in use by another person");
        return true;
    }
    let live_conns = registry.index.share_connections.get(&share.id).copied().unwrap_or(0);
    if live_conns >= config.max_connections_per_share {
        fx.reply_err(req.conn, &req.id, ErrorCode::ShareInUse, "this share has too many connections");
        return true;
    }

    // Display names are unique among everyone present, compared as they read: "Ann",
    // "Ann (2)", ...; a look-alike "Аnn" (Cyrillic А) or "ANN" gets a counter the same way.
    // Remotes' names come from the index (this tick's newcomers included: they are added as
    // they are paired), the host's from the host.
    let Index { participants: ids, names, .. } = &mut *registry.index;
    let participants = &people.participants;
    let host_forms = ids
        .get(&ParticipantId::host())
        .and_then(|&e| participants.get(e).ok())
        .map(|host| name_forms(&host.display_name))
        .unwrap_or_default();
    let display_name = unique_name(&a.name, |form| {
        host_forms.iter().any(|f| f == form)
            || names.taken(form, |pid, form| match ids.get(pid).map(|&e| participants.get(e)) {
                Some(Ok(p)) => {
                    !matches!(p.presence, Presence::Gone) && name_forms(&p.display_name).iter().any(|f| f == form)
                }
                Some(Err(_)) => true, // paired this tick: not spawned yet
                None => false,
            })
    });

    registry.counters.participant += 1;
    let pid = ParticipantId::nth(registry.counters.participant);
    let resume_token = token::generate(&mut pairing.rng.0);
    let admission = if share.admission_required { Admission::Pending } else { Admission::Admitted };
    let participant = Participant {
        record: ParticipantRecord {
            id: pid.clone(),
            display_name: display_name.clone(),
            role: share.role,
            share: Some(share.id.clone()),
            muted: false,
            admission,
            sessions: BTreeSet::new(),
            resume_hash: Some(token::hash(&resume_token)),
            read: Default::default(),
        },
        presence: Presence::Connected(1),
    };
    fx.persist(StoreOp::PutParticipant(participant.row()));
    let pe = registry.commands.spawn(participant).id();
    registry.index.participants.insert(pid.clone(), pe);
    registry.index.resume.insert(token::hash(&resume_token), pid.clone());
    registry.index.names.add(&pid, &display_name);
    registry.index.share_members.entry(share.id.clone()).or_default().insert(pid.clone());
    *registry.index.share_connections.entry(share.id.clone()).or_default() += 1;
    {
        let mut s = people.shares.get_mut(se).expect("found above");
        s.uses += 1;
        fx.persist(StoreOp::PutShare(s.row()));
    }
    if let Ok(mut c) = people.conns.get_mut(a.conn) {
        c.auth = AuthState::Authenticated(pid.clone());
    }
    fx.persist(StoreOp::Audit(AuditRow {
        at: now,
        actor: pid.to_string(),
        action: "authenticated".into(),
        target: share.id.to_string(),
        detail: format!("{display_name} ({})", admission_str(admission)),
    }));
    if admission == Admission::Pending {
        notify_host_lobby(&registry.index, &people.conns, &mut fx.staged, &pid, &display_name, &share.id, admission);
    }
    let result = AuthenticateResult {
        participant_id: pid,
        display_name,
        role: share.role,
        resume_token,
        admission,
        protocol_version: PROTOCOL_VERSION,
        resumed: false,
    };
    fx.reply_ok(req.conn, &req.id, result);
    true
}

/// Whether `share` has a participant who has not left (this tick's newcomers included, not
/// spawned yet); those who left are forgotten on the way.
fn share_has_members(index: &mut Index, participants: &Query<&mut Participant>, share: &crate::ids::ShareId) -> bool {
    let Index { participants: ids, share_members, .. } = index;
    let Some(members) = share_members.get_mut(share) else { return false };
    members.retain(|pid| match ids.get(pid).map(|&e| participants.get(e)) {
        Some(Ok(p)) => !matches!(p.presence, Presence::Gone),
        Some(Err(_)) => true, // paired this tick: not spawned yet
        None => false,
    });
    !members.is_empty()
}

fn admission_str(a: Admission) -> &'static str {
    match a {
        Admission::Admitted => "admitted",
        Admission::Pending => "waiting in lobby",
        Admission::Refused => "refused",
    }
}

/// `name`, or `name (2)`, `name (3)`, ... — the first that shares no form ([`name_forms`]: case,
/// compatibility forms and look-alike letters aside) with a name present; `taken(form)` says
/// whether a name present reads as `form`.
pub fn unique_name(name: &str, mut taken: impl FnMut(&str) -> bool) -> String {
    let mut free = |candidate: &str| name_forms(candidate).iter().all(|f| !taken(f));
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

    fn present(names: &[&str]) -> impl FnMut(&str) -> bool {
        let forms: BTreeSet<String> = names.iter().copied().flat_map(name_forms).collect();
        move |f| forms.contains(f)
    }

    #[test]
    fn second_ann_becomes_ann_2() {
        assert_eq!(unique_name("Ann", present(&[])), "Ann");
        assert_eq!(unique_name("Ann", present(&["Ann"])), "Ann (2)");
        assert_eq!(unique_name("ann", present(&["Ann", "Ann (2)"])), "ann (3)");
    }

    #[test]
    fn a_look_alike_of_a_present_name_gets_a_counter_too() {
        // Cyrillic А, fullwidth, math bold, Greek capitals: each reads as a name present.
        assert_eq!(unique_name("\u{410}nn", present(&["Ann"])), "\u{410}nn (2)");
        assert_eq!(unique_name("Ａｎｎ", present(&["Ann", "Ann (2)"])), "Ａｎｎ (3)");
        assert_eq!(unique_name("𝐁𝐨𝐛", present(&["bob"])), "𝐁𝐨𝐛 (2)");
        assert_eq!(unique_name("\u{39A}\u{391}\u{3A4}\u{395}", present(&["Kate"])), "\u{39A}\u{391}\u{3A4}\u{395} (2)");
        assert_eq!(unique_name("Iris", present(&["iris"])), "Iris (2)");
        assert_eq!(unique_name("Zoe", present(&["Zoë", "Ann"])), "Zoe", "an accent is visible");
    }
}
