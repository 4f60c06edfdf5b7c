//! Requests as the systems receive them: routed once, by method, to the one system that
//! handles it.
//!
//! `ingest` parses a frame into a [`Method`] and checks the gates every method shares; then
//! [`route`] writes it as a [`Req<T>`], where `T` names what is asked and so which system reads
//! it. Each system reads only its own requests, with typed params — no system scans requests
//! meant for others — and a new method does not compile until it is routed ([`route`] matches
//! every method). This is mini-redis's `Command` dispatch (`src/cmd/mod.rs`) done with bevy
//! messages: a `Req<T>` buffer per handling system instead of one `apply` per command.
//!
//! Why one message type per *system*, not per method: the order in which a tick handles
//! requests is observable (replies on one connection, `get_settings` after `update_settings`,
//! `rename_session` after `create_session`). A system that handles several methods handles them
//! in the order they arrived, so they travel together as one enum (a *family*, e.g.
//! [`SessionCommand`]) and the system's `match` hands each to its handler — one small function
//! per method. A system that handles one method gets a newtype named after it (e.g.
//! [`SendChat`]): several methods share a params type (`send_chat` and `send_message` both take
//! `SendMessageParams`), so the params alone could not say where a request goes.
//!
//! Every `Req<T>` is registered in bevy's `MessageRegistry` ([`register`]), so its buffers are
//! swapped each tick like every other message's.

use crate::ids::ConnId;
use crate::protocol::*;
use bevy_ecs::message::{MessageRegistry, Messages};
use bevy_ecs::prelude::*;
use serde_json::Value;

/// A request that passed ingest's gates: the connection that sent it, the `id` to answer it
/// with, and what it asks (`params`: a method's params, or a family enum of them).
#[derive(Message, Debug, Clone)]
pub struct Req<T> {
    pub conn: ConnId,
    pub id: Value,
    pub params: T,
}

// ---- one method, one system ----

/// `authenticate` → `authenticate::authenticate`.
#[derive(Debug, Clone)]
pub struct Authenticate(pub AuthenticateParams);
/// `fetch_history` → `history::fetch_history`.
#[derive(Debug, Clone)]
pub struct FetchHistory(pub FetchHistoryParams);
/// `mark_read` → `history::mark_read`.
#[derive(Debug, Clone)]
pub struct MarkRead(pub MarkReadParams);
/// `fork_session` → `session_admin::fork_session`.
#[derive(Debug, Clone)]
pub struct ForkSession(pub ForkSessionParams);
/// `send_chat` → `room_chat::send_chat`.
#[derive(Debug, Clone)]
pub struct SendChat(pub SendMessageParams);
/// `typing` → `room_chat::typing`.
#[derive(Debug, Clone)]
pub struct Typing(pub SessionRef);
/// `set_agent_settings` → `agent_settings::set_agent_settings`.
#[derive(Debug, Clone)]
pub struct SetAgentSettings(pub SetAgentSettingsParams);
/// `send_message` → `turn_lock::send_message`.
#[derive(Debug, Clone)]
pub struct SendMessage(pub SendMessageParams);
/// `cancel_turn` → `turn_lock::cancel_turn`.
#[derive(Debug, Clone)]
pub struct CancelTurn(pub SessionRef);

// ---- families: several methods, one system, handled in arrival order ----

/// Read-only requests → `queries::queries`.
#[derive(Debug, Clone)]
pub enum Lookup {
    Ping(PingParams),
    ListWorkspaces,
    ListSessions(ListSessionsParams),
    ReadWorkspaceFile(ReadFileParams),
}

/// Share management (host-only) → `share_admin::share_admin`.
#[derive(Debug, Clone)]
pub enum ShareCommand {
    MintShare(MintShareParams),
    ListShares,
    RevokeShare(ShareRef),
    RotateShare(ShareRef),
}

/// Joining and leaving sessions → `join_leave::join_leave`.
#[derive(Debug, Clone)]
pub enum Membership {
    JoinSession(JoinSessionParams),
    LeaveSession(SessionRef),
}

impl Membership {
    /// The session joined or left.
    pub fn session_id(&self) -> &crate::ids::SessionId {
        match self {
            Membership::JoinSession(p) => &p.session_id,
            Membership::LeaveSession(p) => &p.session_id,
        }
    }
}

/// Moderation (host-only) → `moderation::moderation`.
#[derive(Debug, Clone)]
pub enum Moderate {
    Kick(KickParams),
    Mute(MuteParams),
    Admit(ParticipantRef),
    Refuse(ParticipantRef),
}

impl Moderate {
    /// The participant moderated.
    pub fn participant_id(&self) -> &crate::ids::ParticipantId {
        match self {
            Moderate::Kick(p) => &p.participant_id,
            Moderate::Mute(p) => &p.participant_id,
            Moderate::Admit(p) | Moderate::Refuse(p) => &p.participant_id,
        }
    }
}

/// Workspace and session administration (host-only) → `session_admin::session_admin`.
#[derive(Debug, Clone)]
pub enum SessionCommand {
    AddWorkspace(AddWorkspaceParams),
    CreateSession(CreateSessionParams),
    RenameSession(RenameSessionParams),
    ClearSession(SessionRef),
}

/// The host's settings (host-only) → `settings::settings`.
#[derive(Debug, Clone)]
pub enum SettingsCommand {
    GetSettings,
    UpdateSettings(UpdateSettingsParams),
}

/// The host window's views (host-only) → `host_views::host_views`.
#[derive(Debug, Clone)]
pub enum HostView {
    ListLobby,
    FetchAudit(FetchAuditParams),
}

/// Ballots → `vote_cast::cast_ballot`.
#[derive(Debug, Clone)]
pub enum Cast {
    VotePlan(VotePlanParams),
    AnswerQuestion(AnswerQuestionParams),
}

/// Writes `method` as the request its system reads. Grouped by the tick set that handles it.
pub fn route(world: &mut World, conn: ConnId, id: Value, method: Method) {
    let to = Router { world, conn, id };
    match method {
        // Access
        Method::Authenticate(p) => to.write(Authenticate(p)),
        Method::MintShare(p) => to.write(ShareCommand::MintShare(p)),
        Method::ListShares(_) => to.write(ShareCommand::ListShares),
        Method::RevokeShare(p) => to.write(ShareCommand::RevokeShare(p)),
        Method::RotateShare(p) => to.write(ShareCommand::RotateShare(p)),
        Method::Ping(p) => to.write(Lookup::Ping(p)),
        Method::ListWorkspaces(_) => to.write(Lookup::ListWorkspaces),
        Method::ListSessions(p) => to.write(Lookup::ListSessions(p)),
        Method::ReadWorkspaceFile(p) => to.write(Lookup::ReadWorkspaceFile(p)),
        Method::FetchHistory(p) => to.write(FetchHistory(p)),
        Method::MarkRead(p) => to.write(MarkRead(p)),
        // Presence
        Method::JoinSession(p) => to.write(Membership::JoinSession(p)),
        Method::LeaveSession(p) => to.write(Membership::LeaveSession(p)),
        // Moderation
        Method::Kick(p) => to.write(Moderate::Kick(p)),
        Method::Mute(p) => to.write(Moderate::Mute(p)),
        Method::Admit(p) => to.write(Moderate::Admit(p)),
        Method::Refuse(p) => to.write(Moderate::Refuse(p)),
        Method::AddWorkspace(p) => to.write(SessionCommand::AddWorkspace(p)),
        Method::CreateSession(p) => to.write(SessionCommand::CreateSession(p)),
        Method::RenameSession(p) => to.write(SessionCommand::RenameSession(p)),
        Method::ClearSession(p) => to.write(SessionCommand::ClearSession(p)),
        Method::ForkSession(p) => to.write(ForkSession(p)),
        Method::GetSettings(_) => to.write(SettingsCommand::GetSettings),
        Method::UpdateSettings(p) => to.write(SettingsCommand::UpdateSettings(p)),
        Method::ListLobby(_) => to.write(HostView::ListLobby),
        Method::FetchAudit(p) => to.write(HostView::FetchAudit(p)),
        // Turn
        Method::SendChat(p) => to.write(SendChat(p)),
        Method::Typing(p) => to.write(Typing(p)),
        Method::SetAgentSettings(p) => to.write(SetAgentSettings(p)),
        Method::SendMessage(p) => to.write(SendMessage(p)),
        Method::CancelTurn(p) => to.write(CancelTurn(p)),
        // Votes
        Method::VotePlan(p) => to.write(Cast::VotePlan(p)),
        Method::AnswerQuestion(p) => to.write(Cast::AnswerQuestion(p)),
    }
}

/// Where [`route`] writes: one request's sender and id, into the world's message buffers.
struct Router<'a> {
    world: &'a mut World,
    conn: ConnId,
    id: Value,
}

impl Router<'_> {
    fn write<T: Send + Sync + 'static>(self, params: T) {
        self.world.resource_mut::<Messages<Req<T>>>().write(Req { conn: self.conn, id: self.id, params });
    }
}

/// Registers every request type [`route`] writes, once each (twice would swap its buffers twice
/// a tick and lose requests). A type missing here would panic on its first request:
/// `every_method_is_routed_to_a_registered_request_type` routes an example of every method.
pub fn register(world: &mut World) {
    MessageRegistry::register_message::<Req<Authenticate>>(world);
    MessageRegistry::register_message::<Req<ShareCommand>>(world);
    MessageRegistry::register_message::<Req<Lookup>>(world);
    MessageRegistry::register_message::<Req<FetchHistory>>(world);
    MessageRegistry::register_message::<Req<MarkRead>>(world);
    MessageRegistry::register_message::<Req<Membership>>(world);
    MessageRegistry::register_message::<Req<Moderate>>(world);
    MessageRegistry::register_message::<Req<SessionCommand>>(world);
    MessageRegistry::register_message::<Req<ForkSession>>(world);
    MessageRegistry::register_message::<Req<SettingsCommand>>(world);
    MessageRegistry::register_message::<Req<HostView>>(world);
    MessageRegistry::register_message::<Req<SendChat>>(world);
    MessageRegistry::register_message::<Req<Typing>>(world);
    MessageRegistry::register_message::<Req<SetAgentSettings>>(world);
    MessageRegistry::register_message::<Req<SendMessage>>(world);
    MessageRegistry::register_message::<Req<CancelTurn>>(world);
    MessageRegistry::register_message::<Req<Cast>>(world);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// docs/PROTOCOL.md shows an example of every method (`tests/protocol_doc.rs` checks it), so
    /// routing each of them proves that every method reaches a registered message type.
    #[test]
    fn every_method_is_routed_to_a_registered_request_type() {
        let mut world = World::new();
        register(&mut world);
        let mut routed = BTreeSet::new();
        for block in include_str!("../../../../docs/PROTOCOL.md").split("```json").skip(1) {
            let text = block.split("```").next().expect("split yields one piece");
            let Ok(req) = Request::parse(text.trim()) else { continue };
            routed.insert(req.method.name());
            route(&mut world, ConnId(1), req.id, req.method);
        }
        assert_eq!(routed, Method::NAMES.into_iter().collect::<BTreeSet<_>>());
    }
}
