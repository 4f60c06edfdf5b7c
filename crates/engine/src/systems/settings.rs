//! The host's settings: `get_settings` and `update_settings` (host only).
//!
//! Changes apply from the next request on (a vote opened after the change uses the new default
//! consensus and deadline; votes already open keep theirs), are saved with the tick's batch, and
//! come back after a restart (`restore_world`). Renaming the host tells every session it is in
//! (`participant_renamed`); its later messages carry the new name.

use super::params::*;
use super::requests::{Req, SettingsCommand};
use super::resources::*;
use super::util::{emit, valid_display_name};
use crate::components::*;
use crate::config::EngineConfig;
use crate::ids::ParticipantId;
use crate::persist::{AuditRow, SettingsRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

/// The settings as the protocol shows them.
pub fn host_settings(config: &EngineConfig) -> HostSettings {
    HostSettings {
        host_name: config.host_name.clone(),
        default_consensus: config.default_consensus,
        default_vote_deadline_ms: config.default_vote_deadline_ms,
    }
}

/// What the settings requests read and write: the settings themselves, and the host's
/// participant and sessions (a new host name is announced in each).
#[derive(SystemParam)]
pub struct SettingsDesk<'w, 's> {
    clock: Res<'w, Clock>,
    config: ResMut<'w, EngineConfig>,
    index: Res<'w, Index>,
    participants: Query<'w, 's, &'static mut Participant>,
    logs: Query<'w, 's, &'static mut EventLog>,
    fx: Effects<'w>,
}

pub fn settings(mut requests: MessageReader<Req<SettingsCommand>>, mut desk: SettingsDesk) {
    for req in requests.read() {
        match &req.params {
            SettingsCommand::GetSettings => desk.fx.reply_ok(req.conn, &req.id, host_settings(&desk.config)),
            SettingsCommand::UpdateSettings(p) => desk.update(req, p),
        }
    }
}

impl SettingsDesk<'_, '_> {
    /// `update_settings`: applies what changed, saves and audits it, and answers the settings.
    fn update(&mut self, req: &Req<SettingsCommand>, p: &UpdateSettingsParams) {
        let name = match p.host_name.as_deref().map(host_name) {
            Some(Err(why)) => return self.fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, why),
            Some(Ok(name)) => Some(name),
            None => None,
        };
        let config = &mut *self.config;
        let mut changed = Vec::new();
        if let Some(name) = name.filter(|n| *n != config.host_name) {
            changed.push(format!("host name \"{name}\""));
            config.host_name = name.clone();
            let Effects { staged, batch } = &mut self.fx;
            rename_host(&self.index, &mut self.participants, &mut self.logs, &name, batch, staged);
        }
        if let Some(on) = p.default_consensus.filter(|on| *on != config.default_consensus) {
            changed.push(format!("default consensus {}", if on { "on" } else { "off" }));
            config.default_consensus = on;
        }
        if let Some(ms) = p.default_vote_deadline_ms {
            let deadline = (ms > 0).then_some(ms);
            if deadline != config.default_vote_deadline_ms {
                changed.push(match deadline {
                    Some(ms) => format!("default vote deadline {} s", ms / 1000),
                    None => "no default vote deadline".into(),
                });
                config.default_vote_deadline_ms = deadline;
            }
        }
        if !changed.is_empty() {
            self.fx.persist(StoreOp::PutSettings(SettingsRow {
                host_name: config.host_name.clone(),
                default_consensus: config.default_consensus,
                default_vote_deadline_ms: config.default_vote_deadline_ms,
            }));
            self.fx.persist(StoreOp::Audit(AuditRow {
                at: self.clock.now,
                actor: "host".into(),
                action: "settings_changed".into(),
                target: String::new(),
                detail: changed.join(", "),
            }));
        }
        self.fx.reply_ok(req.conn, &req.id, host_settings(config));
    }
}

/// The host's name follows the rules of display names, except that "Host" is the host's to take.
fn host_name(name: &str) -> Result<String, String> {
    if name.trim().eq_ignore_ascii_case("host") {
        return Ok(name.trim().to_string());
    }
    valid_display_name(name).map_err(|e| e.replace("display_name", "host_name"))
}

/// Renames the host participant and tells each of its sessions.
fn rename_host(
    index: &Index,
    participants: &mut Query<&mut Participant>,
    logs: &mut Query<&mut EventLog>,
    name: &str,
    batch: &mut super::resources::PersistBatch,
    staged: &mut Staged,
) {
    let host = ParticipantId::from("host");
    let Some(mut p) = index.participants.get(&host).and_then(|&e| participants.get_mut(e).ok()) else { return };
    p.display_name = name.to_string();
    batch.push(StoreOp::PutParticipant(p.row()));
    for session in p.sessions.clone() {
        let Some(mut log) = index.sessions.get(&session).and_then(|&e| logs.get_mut(e).ok()) else { continue };
        let body = Event::ParticipantRenamed(ParticipantRenamed {
            participant_id: host.clone(),
            display_name: name.to_string(),
        });
        emit(&mut log, &session, body, batch, staged);
    }
}
