//! Rules: a session's agent settings (`set_agent_settings`).
//!
//! The settings (the model; the permission mode) are the session's, kept by the host with the
//! session across restarts and passed to the agent with every turn, so a choice does not vanish
//! with the agent process that heard it. Everyone in the session sees them (`session_updated`,
//! `list_sessions`, `join_session`). Anyone who may prompt (not observers, not the muted) may
//! choose the model; only the host sets the permission mode, and only to a mode in which the
//! agent still asks before acting (`plan`, `default`): the others would let it act without votes.

use super::params::{Directory, Effects};
use super::requests::{Req, SetAgentSettings};
use crate::components::*;
use crate::persist::StoreOp;
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;

/// The permission modes the host may choose for a shared session.
pub const PERMISSION_MODES: [&str; 2] = ["plan", "default"];

/// A model name as the agent's command line will get it: 1–64 letters, digits, `.`, `_`, `:`,
/// `-`, starting with a letter or digit (so it can never be read as a flag).
pub fn valid_model(model: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    let starts_well = model.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if model.len() > 64 || !starts_well || !model.chars().all(ok_char) {
        return Err(format!(
            "model \"{model}\" is not a model name: 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter \
             or digit (e.g. sonnet, claude-opus-4-1); an empty string goes back to the agent's default"
        ));
    }
    Ok(())
}

pub fn set_agent_settings(
    mut requests: MessageReader<Req<SetAgentSettings>>,
    dir: Directory,
    mut sessions: Query<(&mut Session, &TurnLock, &mut EventLog)>,
    mut fx: Effects,
) {
    for req in requests.read() {
        let SetAgentSettings(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some(e) = fx.session_in_scope(&dir.index, req, me, share, &p.session_id) else { continue };
        let Ok((mut session, lock, mut log)) = sessions.get_mut(e) else { continue };
        let host = me.id.is_host();
        if !host && (!me.can_write() || me.muted) {
            let why = "observers and muted participants cannot change the agent's settings";
            fx.reply_err(req.conn, &req.id, ErrorCode::Forbidden, why);
            continue;
        }
        if !host && !me.sessions.contains(&session.id) {
            fx.reply_err(req.conn, &req.id, ErrorCode::NotJoined, format!("join {} first", session.id));
            continue;
        }
        if p.permission_mode.is_some() && !host {
            let why = "only the host sets the agent's permission mode";
            fx.reply_err(req.conn, &req.id, ErrorCode::Forbidden, why);
            continue;
        }
        let model = p.model.as_deref().map(str::trim);
        if let Some(Err(why)) = model.filter(|m| !m.is_empty()).map(valid_model) {
            fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, why);
            continue;
        }
        let mode = p.permission_mode.as_deref().map(str::trim);
        if let Some(mode) = mode.filter(|m| !m.is_empty() && !PERMISSION_MODES.contains(m)) {
            let why = format!(
                "permission mode \"{mode}\" is not allowed: choose plan or default (acceptEdits and bypassPermissions \
                 let the agent act without the room's votes)"
            );
            fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, why);
            continue;
        }
        let mut settings = session.agent_settings.clone();
        if let Some(model) = model {
            settings.model = (!model.is_empty()).then(|| model.to_string());
        }
        if let Some(mode) = mode {
            settings.permission_mode = (!mode.is_empty()).then(|| mode.to_string());
        }
        if settings != session.agent_settings {
            session.agent_settings = settings.clone();
            let body = Event::SessionUpdated(SessionUpdated {
                title: session.title.clone(),
                status: session.status,
                agent_settings: settings.clone(),
            });
            let id = session.id.clone();
            fx.emit(&mut log, &id, body);
            fx.persist(StoreOp::PutSession(session.row(lock, &log)));
        }
        fx.reply_ok(req.conn, &req.id, settings);
    }
}
