//! Departure: a participant leaves every session for good (gone past grace, kicked, share
//! revoked or expired, refused). Used by the presence, moderation and share systems so the
//! roster, the turn lock and votes all see one consistent path.

use super::resources::Departed;
use crate::components::{Participant, Presence};
use crate::ids::SessionId;
use crate::persist::StoreOp;
use crate::protocol::{Event, ParticipantLeft};
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;

/// Marks `p` gone, emits `participant_left` in each of its sessions (through `emit`), kills its
/// resume token and announces the departure (turn release and vote pruning read [`Departed`]).
pub fn depart(
    p: &mut Participant,
    reason: &'static str,
    mut emit: impl FnMut(&SessionId, Event),
    batch: &mut PersistBatch,
    departed: &mut MessageWriter<Departed>,
) {
    if matches!(p.presence, Presence::Gone) {
        return;
    }
    p.presence = Presence::Gone;
    p.resume_hash = None;
    let sessions = std::mem::take(&mut p.sessions);
    for s in &sessions {
        emit(s, Event::ParticipantLeft(ParticipantLeft { participant_id: p.id.clone(), reason: reason.to_string() }));
    }
    batch.push(StoreOp::PutParticipant(p.row()));
    departed.write(Departed { participant: p.id.clone(), reason });
}
