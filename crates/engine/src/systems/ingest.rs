//! Ingest: drains the inbound channel at the start of the tick.
//!
//! Opens connection entities, rate-limits and parses frames, and applies the gate checks every
//! method shares (authenticated? admitted? host-only?) so that the per-rule systems only see
//! requests they should handle. Every refused frame gets a typed error; nothing is dropped
//! silently and a bad frame never affects other connections. A request that passes is routed,
//! once, to the system that handles its method ([`super::requests::route`]).

use super::persist_tick::{allowed_while_failing, storage_gate, StorageHealth};
use super::resources::*;
use super::util::reply_err;
use crate::components::{AuthState, Connection, Outbox, Participant, Presence, RateBucket};
use crate::config::EngineConfig;
use crate::ids::ParticipantId;
use crate::io::{Inbound, Journal, Journaled};
use crate::protocol::{Admission, ErrorCode, Method, Request};
use bevy_ecs::message::Messages;
use bevy_ecs::prelude::*;

/// Set when the CLI changed shares in the database (or the store reports it).
#[derive(Resource, Default)]
pub struct ReloadShares(pub bool);

/// Frames held for the next tick: a connection's frames that arrived after its `authenticate`
/// in the same tick wait until the authentication has been decided, so pipelined requests
/// (authenticate, then join_session) are answered in order and as the client meant them.
#[derive(Resource, Default)]
pub struct Deferred(pub Vec<(crate::ids::ConnId, String)>);

pub fn ingest(world: &mut World) {
    let deferred = std::mem::take(&mut world.resource_mut::<Deferred>().0);
    let mut inbound: Vec<Inbound> = deferred.into_iter().map(|(conn, text)| Inbound::Frame { conn, text }).collect();
    inbound.extend(world.resource::<Inbox>().0.try_iter());
    let now = world.resource::<Clock>().now;
    let mut authenticating: std::collections::BTreeSet<crate::ids::ConnId> = Default::default();
    for item in inbound {
        match item {
            Inbound::Opened { conn, addr, sink } => {
                world.resource_mut::<Journal>().record(|| Journaled::Opened { conn, addr: addr.clone() });
                let deadline = now + world.resource::<EngineConfig>().auth_timeout_ms;
                tracing::debug!(%conn, %addr, "connection opened");
                let e = world
                    .spawn(Connection {
                        id: conn,
                        addr,
                        auth: AuthState::Pending { deadline },
                        bucket: RateBucket::new(now),
                        outbox: Outbox::default(),
                        sink,
                        is_host: false,
                        joined: Default::default(),
                    })
                    .id();
                world.resource_mut::<Index>().conns.insert(conn, e);
            }
            Inbound::OpenedHost { conn, sink } => {
                world.resource_mut::<Journal>().record(|| Journaled::OpenedHost { conn });
                let e = world
                    .spawn(Connection {
                        id: conn,
                        addr: "host".into(),
                        auth: AuthState::Authenticated(ParticipantId::host()),
                        bucket: RateBucket::new(now),
                        outbox: Outbox::default(),
                        sink,
                        is_host: true,
                        joined: Default::default(),
                    })
                    .id();
                world.resource_mut::<Index>().conns.insert(conn, e);
                if let Some(&pe) = world.resource::<Index>().participants.get(&ParticipantId::host()) {
                    if let Some(mut p) = world.get_mut::<Participant>(pe) {
                        p.presence = match p.presence {
                            Presence::Connected(n) => Presence::Connected(n + 1),
                            _ => Presence::Connected(1),
                        };
                    }
                }
            }
            Inbound::Frame { conn, text } => {
                if authenticating.contains(&conn) {
                    world.resource_mut::<Deferred>().0.push((conn, text));
                } else if handle_frame(world, conn, text, now) {
                    authenticating.insert(conn);
                }
            }
            Inbound::Closed { conn } => {
                world.resource_mut::<Journal>().record(|| Journaled::Closed { conn });
                world.resource_mut::<Messages<ConnClosed>>().write(ConnClosed { conn });
            }
            Inbound::Agent(out) => {
                world.resource_mut::<Messages<AgentMsg>>().write(AgentMsg(out));
            }
            Inbound::SharesChanged => world.resource_mut::<ReloadShares>().0 = true,
        }
    }
}

/// Handles one frame; returns true when it was an `authenticate` passed on for decision.
fn handle_frame(world: &mut World, conn: crate::ids::ConnId, text: String, now: u64) -> bool {
    world.resource_mut::<Journal>().record(|| Journaled::Frame { conn, text: text.clone() });
    let Some(&e) = world.resource::<Index>().conns.get(&conn) else {
        tracing::debug!(%conn, "frame for unknown connection ignored");
        return false;
    };
    let (auth, is_host, allowed) = {
        let Some(mut c) = world.get_mut::<Connection>(e) else { return false };
        // The rate bucket is not membership: a request must not look like a membership change
        // to broadcast's cached session → connections map.
        let allowed = c.is_host || c.bypass_change_detection().bucket.take(now);
        (c.auth.clone(), c.is_host, allowed)
    };
    if auth.is_closing() {
        return false;
    }
    let null = serde_json::Value::Null;
    if !allowed {
        // Answer without parsing: a flood must cost us as little as possible.
        let id =
            serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v.get("id").cloned()).unwrap_or(null);
        reply_err(
            &mut world.resource_mut::<Staged>(),
            conn,
            &id,
            ErrorCode::RateLimited,
            "too many requests on this connection; slow down",
        );
        return false;
    }
    let req = match Request::parse(&text) {
        Ok(r) => r,
        Err(f) => {
            reply_err(&mut world.resource_mut::<Staged>(), conn, &f.id, f.error.code, f.error.message);
            return false;
        }
    };
    let gate = match (&auth, &req.method) {
        (_, Method::Ping(_)) => None,
        (AuthState::Pending { .. }, Method::Authenticate(_)) => None,
        (AuthState::Pending { .. }, _) => Some((ErrorCode::Unauthenticated, "authenticate first".to_string())),
        (AuthState::Authenticated(_), Method::Authenticate(_)) => {
            Some((ErrorCode::AlreadyAuthenticated, "this connection is already authenticated".to_string()))
        }
        (AuthState::Authenticated(_), m) if m.host_only() && !is_host => {
            Some((ErrorCode::Forbidden, format!("{} is a host-only method", m.name())))
        }
        (AuthState::Authenticated(p), _) => {
            let admission = world
                .resource::<Index>()
                .participants
                .get(p)
                .and_then(|&pe| world.get::<Participant>(pe))
                .map(|p| p.admission);
            match admission {
                Some(Admission::Admitted) => None,
                Some(_) => Some((ErrorCode::NotAdmitted, "waiting for the host to admit you".to_string())),
                None => Some((ErrorCode::Unauthenticated, "your participant no longer exists".to_string())),
            }
        }
        (AuthState::Closing(_), _) => Some((ErrorCode::Unauthenticated, "connection is closing".to_string())),
    };
    if let Some((code, message)) = gate {
        reply_err(&mut world.resource_mut::<Staged>(), conn, &req.id, code, message);
        return false;
    }
    // Nothing that changes state (or shows unstored state) runs while the store fails.
    if world.resource::<StorageHealth>().is_failing() && !allowed_while_failing(&req.method) {
        world.resource_scope(|world, mut staged: Mut<Staged>| {
            storage_gate(&mut staged, world.resource::<StorageHealth>(), conn, &req.id);
        });
        return false;
    }
    // Before anything of this tick touches the session: its tails, if this request needs them.
    if let Some(session) = super::residency::tails_needed(&req.method).cloned() {
        let since = match &req.method {
            Method::JoinSession(p) => p.since_seq,
            _ => None,
        };
        if let Err(e) = super::residency::load_for_request(world, conn, &session, since) {
            tracing::error!(%session, "cannot read the session's history: {e}");
            let message = format!("cannot read the history of {session} from the store ({e}); retry in a moment");
            reply_err(&mut world.resource_mut::<Staged>(), conn, &req.id, ErrorCode::StorageUnavailable, message);
            return false;
        }
    }
    let is_auth = matches!(req.method, Method::Authenticate(_));
    super::requests::route(world, conn, req.id, req.method);
    is_auth
}
