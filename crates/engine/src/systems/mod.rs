//! Systems: one plain function per rule, grouped by installer. `engine/mod.rs` lists the installers;
//! each installer says which [`TickSet`] its systems run in and chains them there.
//! Parameter bundles shared by many systems are in [`params`]. Requests reach the systems routed
//! by method ([`requests`]): each system reads only the requests it handles.

pub mod agent_io;
pub mod agent_settings;
pub mod auth_timeout;
pub mod authenticate;
pub mod broadcast;
pub mod departure;
pub mod digest;
pub mod history;
pub mod host_views;
pub mod ingest;
pub mod invariants;
pub mod join_leave;
pub mod moderation;
pub mod params;
pub mod persist_tick;
pub mod presence;
pub mod queries;
pub mod requests;
pub mod residency;
pub mod resources;
pub mod restore;
pub mod room_chat;
pub mod session_admin;
pub mod settings;
pub mod share_admin;
pub mod share_lifecycle;
pub mod turn_lock;
pub mod util;
pub mod vote_cast;
pub mod vote_logic;
pub mod vote_open;
pub mod vote_prune;
pub mod vote_resolve;

use crate::schedule::{Installer, TickSet};
use bevy_ecs::prelude::*;
use resources::*;

/// Shared resources and messages; ingest and restart recovery.
pub struct CoreInstaller;
impl Installer for CoreInstaller {
    fn install(&self, world: &mut World, schedule: &mut Schedule) {
        world.init_resource::<Index>();
        world.init_resource::<Counters>();
        world.init_resource::<Staged>();
        world.init_resource::<Violations>();
        world.init_resource::<ClockGap>();
        world.init_resource::<ingest::ReloadShares>();
        world.init_resource::<ingest::Deferred>();
        world.init_resource::<restore::Recovery>();
        add_messages(world);
        schedule.add_systems(
            (ingest::ingest, restore::recover, share_lifecycle::reload_shares).chain().in_set(TickSet::Ingest),
        );
    }
}

/// Pairing, share lifecycle and read-only queries.
pub struct AccessInstaller;
impl Installer for AccessInstaller {
    fn install(&self, world: &mut World, schedule: &mut Schedule) {
        world.init_resource::<AuthFailures>();
        schedule.add_systems(
            (
                auth_timeout::auth_timeout,
                authenticate::authenticate,
                share_admin::share_admin,
                share_lifecycle::close_dead_shares,
                queries::queries,
                history::fetch_history,
                history::mark_read,
            )
                .chain()
                .in_set(TickSet::Access),
        );
    }
}

/// Connections, grace, joining and leaving.
pub struct PresenceInstaller;
impl Installer for PresenceInstaller {
    fn install(&self, _world: &mut World, schedule: &mut Schedule) {
        schedule.add_systems(
            (
                presence::connection_closed,
                presence::fresh_grace_after_gap,
                presence::grace_expiry,
                join_leave::join_leave,
            )
                .chain()
                .in_set(TickSet::Presence),
        );
    }
}

/// Kick, mute, lobby, and session administration.
pub struct ModerationInstaller;
impl Installer for ModerationInstaller {
    fn install(&self, _world: &mut World, schedule: &mut Schedule) {
        schedule.add_systems(
            (
                moderation::moderation,
                // Again after moderation: a kick with `revoke_share` closes the share's other
                // connections in the same tick, as `revoke_share` does.
                share_lifecycle::close_dead_shares,
                session_admin::session_admin,
                session_admin::fork_session,
                settings::settings,
                host_views::host_views,
            )
                .chain()
                .in_set(TickSet::Moderation),
        );
    }
}

/// The turn lock.
pub struct TurnInstaller;
impl Installer for TurnInstaller {
    fn install(&self, world: &mut World, schedule: &mut Schedule) {
        world.init_resource::<room_chat::TypingThrottle>();
        schedule.add_systems(
            (
                room_chat::send_chat,
                room_chat::typing,
                agent_settings::set_agent_settings,
                turn_lock::send_message,
                turn_lock::cancel_turn,
                turn_lock::release_on_departure,
            )
                .chain()
                .in_set(TickSet::Turn),
        );
    }
}

/// Agent I/O.
pub struct AgentInstaller;
impl Installer for AgentInstaller {
    fn install(&self, _world: &mut World, schedule: &mut Schedule) {
        schedule.add_systems(
            (agent_io::dispatch_agent_commands, agent_io::apply_agent_output).chain().in_set(TickSet::Agent),
        );
    }
}

/// Votes: open, cast, prune, resolve (deadline included).
pub struct VotesInstaller;
impl Installer for VotesInstaller {
    fn install(&self, _world: &mut World, schedule: &mut Schedule) {
        schedule.add_systems(
            (vote_open::open_vote, vote_cast::cast_ballot, vote_prune::prune_voters, vote_resolve::resolve_votes)
                .chain()
                .in_set(TickSet::Votes),
        );
    }
}

/// Persist, broadcast and the invariant checker.
pub struct DeliveryInstaller;
impl Installer for DeliveryInstaller {
    fn install(&self, world: &mut World, schedule: &mut Schedule) {
        world.init_resource::<persist_tick::StorageHealth>();
        let patterns = world.resource::<crate::config::EngineConfig>().mask_patterns.clone();
        let masker = crate::mask::Masker::shared(&patterns).unwrap_or_else(|e| {
            tracing::error!("ignoring the configured mask patterns: {e}");
            crate::mask::Masker::default()
        });
        world.resource_mut::<Staged>().masker = masker.clone();
        world.insert_resource(broadcast::SecretMask { masker, streams: Default::default(), spare: Vec::new() });
        world.init_resource::<broadcast::CrashAfterCommit>();
        schedule.add_systems((persist_tick::persist, residency::unload_idle).chain().in_set(TickSet::Persist));
        schedule.add_systems(broadcast::broadcast.in_set(TickSet::Broadcast));
        // Off in production (the host sets `check_invariants: false`): then the checker does not
        // run at all, so it costs nothing per tick; tests, scenarios and simulation turn it on.
        schedule.add_systems(
            invariants::check_invariants
                // (Not in a tick that "dies" after its commit: nothing of it happened for anyone.)
                .run_if(|config: Res<crate::config::EngineConfig>, crash: Res<broadcast::CrashAfterCommit>| {
                    config.check_invariants && !crash.0
                })
                .in_set(TickSet::Check),
        );
    }
}
