//! Persist: one transaction per tick, committed before the broadcast releases the tick's frames,
//! so no client ever sees what a crash could lose.

use super::resources::{Staged, StoreRes, Violations};
use crate::persist::PersistBatch;
use bevy_ecs::prelude::*;

/// Set when this tick's commit failed: the broadcast then withholds the tick's session events.
#[derive(Resource, Default)]
pub struct CommitFailed(pub bool);

pub fn persist(
    mut batch: ResMut<PersistBatch>,
    mut store: ResMut<StoreRes>,
    mut failed: ResMut<CommitFailed>,
    mut staged: ResMut<Staged>,
    mut violations: ResMut<Violations>,
) {
    failed.0 = false;
    if batch.ops.is_empty() {
        return;
    }
    let ops = std::mem::take(&mut batch.ops);
    if let Err(e) = store.get().commit(&ops) {
        tracing::error!("commit of {} writes failed: {e}; this tick's events are withheld", ops.len());
        failed.0 = true;
        // Frames describing uncommitted state must not leave; replies and closes still go.
        staged.0.retain(|o| !matches!(o, super::resources::Outgoing::Session { .. }));
        violations.0.push(format!("store commit failed: {e}"));
    }
}
