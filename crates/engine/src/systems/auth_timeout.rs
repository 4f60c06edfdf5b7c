//! Rule: connections must authenticate within `auth_timeout_ms` (10 s), or they are closed.

use super::resources::{Clock, Outgoing, Staged};
use crate::components::{AuthState, Connection};
use bevy_ecs::prelude::*;

pub fn auth_timeout(clock: Res<Clock>, mut conns: Query<&mut Connection>, mut staged: ResMut<Staged>) {
    let mut expired: Vec<_> = conns
        .iter()
        .filter(|c| matches!(c.auth, AuthState::Pending { deadline } if deadline <= clock.now))
        .map(|c| c.id)
        .collect();
    expired.sort();
    for conn in expired {
        for mut c in conns.iter_mut().filter(|c| c.id == conn) {
            c.auth = c.auth.closing();
        }
        staged.out.push(Outgoing::Close { conn, reason: "auth_timeout".into() });
    }
}
