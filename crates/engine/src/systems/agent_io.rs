//! Agent I/O: hands this tick's commands to the agents, steps the demo agent, and applies agent
//! output: streamed text goes to everyone as `agent_delta`, requests open votes, the end of a
//! turn posts the reply and releases the lock. Output for a turn that is no longer running
//! (cancelled, holder gone) is ignored.

use super::resources::*;
use super::turn_lock::TurnEnds;
use crate::agent::{AgentCommand, AgentEvent, AgentOutput};
use crate::components::*;
use crate::io::{Journal, Journaled};
use crate::mask_json::json_text_spans;
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use std::sync::Arc;

/// What an agent's requests turn into: votes to open, and votes to close when it withdraws one.
#[derive(SystemParam)]
pub struct AgentRequests<'w> {
    pub votes: MessageWriter<'w, VoteRequested>,
    pub withdrawn: MessageWriter<'w, VoteWithdrawn>,
}

/// Dispatches queued commands: sessions whose backend runs in the tick to that agent, every
/// other backend to the external runtime.
pub fn dispatch_agent_commands(mut agents: ResMut<Agents>, index: Res<Index>, sessions: Query<&Session>) {
    let queued = std::mem::take(&mut agents.queued);
    for cmd in queued {
        let session = match &cmd {
            AgentCommand::StartTurn { session, .. }
            | AgentCommand::Resolve { session, .. }
            | AgentCommand::Cancel { session, .. } => session,
        };
        let Some(kind) = index.sessions.get(session).and_then(|&e| sessions.get(e).ok()).map(|s| s.agent.kind.clone())
        else {
            tracing::debug!(%session, "agent command for an unknown session dropped");
            continue;
        };
        match agents.in_tick.get_mut(&kind) {
            Some(agent) => agent.handle(cmd),
            None => agents.external.get_mut().unwrap_or_else(|e| e.into_inner()).send(cmd),
        }
    }
}

pub fn apply_agent_output(
    mut external: MessageReader<AgentMsg>,
    index: Res<Index>,
    mut agents: ResMut<Agents>,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut requests: AgentRequests,
    mut turns: TurnEnds,
    mut journal: ResMut<Journal>,
) {
    let mut outputs: Vec<AgentOutput> = external.read().map(|m| m.0.clone()).collect();
    // Clips stay out of the secrets remotes' copies will have masked (issue 24).
    let masker = turns.fx.staged.masker.clone();
    let spans = |t: &str| masker.spans(t);
    for agent in agents.in_tick.values_mut() {
        outputs.extend(agent.step());
    }
    for out in &outputs {
        journal.record(|| Journaled::Agent(out.clone()));
    }
    // Text each session streamed this tick, with its offset in the turn's text: appended to
    // the store once at the end of the tick, so a host killed mid-turn can still post what
    // everyone already saw — at the cost of the new text only.
    let mut streamed: std::collections::BTreeMap<crate::ids::SessionId, (u64, String)> = Default::default();
    // Deltas are merged per session within the tick and staged once (serialised and masked once
    // for everyone), before anything else the session's agent output stages, so order holds.
    let mut deltas: std::collections::BTreeMap<crate::ids::SessionId, (u64, String)> = Default::default();
    for out in outputs {
        if !matches!(out.event, AgentEvent::Delta(_)) {
            if let Some((turn_id, text)) = deltas.remove(&out.session) {
                stage_delta(&mut turns.fx.staged, &out.session, turn_id, &text);
            }
        }
        let Some(&se) = index.sessions.get(&out.session) else { continue };
        let Ok((mut session, mut lock, mut log, mut history)) = sessions.get_mut(se) else { continue };
        if lock.holder.is_none() || lock.turn_id != out.turn_id {
            tracing::debug!(session = %out.session, turn = out.turn_id, "stale agent output ignored");
            continue;
        }
        match out.event {
            AgentEvent::Delta(text) => {
                if text.is_empty() {
                    continue;
                }
                let offset = lock.streamed.len() as u64;
                lock.streamed.push_str(&text);
                streamed.entry(out.session.clone()).or_insert_with(|| (offset, String::new())).1.push_str(&text);
                let pending = deltas.entry(out.session.clone()).or_insert_with(|| (out.turn_id, String::new()));
                if pending.0 != out.turn_id {
                    // (Cannot happen within one tick: a new turn starts in a later tick.)
                    let (turn_id, text) = std::mem::replace(pending, (out.turn_id, String::new()));
                    stage_delta(&mut turns.fx.staged, &out.session, turn_id, &text);
                }
                deltas.get_mut(&out.session).expect("just inserted").1.push_str(&text);
            }
            AgentEvent::Plan { request_id, plan, on_approval } => {
                requests.votes.write(VoteRequested {
                    session: out.session,
                    turn_id: out.turn_id,
                    request_id,
                    subject: VoteSubject::Plan {
                        plan: clip_json(&plan, MAX_SUBJECT_JSON_BYTES, spans),
                        on_approval: on_approval.map(|n| clip_json(&n, 1024, spans)),
                    },
                });
            }
            AgentEvent::Question { request_id, questions } => {
                requests.votes.write(VoteRequested {
                    session: out.session,
                    turn_id: out.turn_id,
                    request_id,
                    subject: VoteSubject::Question {
                        questions: questions
                            .into_iter()
                            .take(MAX_QUESTIONS)
                            .map(|q| bounded_question(q, &masker))
                            .collect(),
                    },
                });
            }
            AgentEvent::ToolRequest { request_id, tool, input } => {
                requests.votes.write(VoteRequested {
                    session: out.session,
                    turn_id: out.turn_id,
                    request_id,
                    subject: VoteSubject::Tool {
                        tool: clip_json(&tool, 1024, spans),
                        // The input is JSON text, masked for remotes string by string (mask_json).
                        input: clip_json(&input, MAX_SUBJECT_JSON_BYTES, |t| json_text_spans(t, &masker)),
                    },
                });
            }
            AgentEvent::Withdrawn { request_id } => {
                requests.withdrawn.write(VoteWithdrawn { session: out.session, turn_id: out.turn_id, request_id });
            }
            AgentEvent::Conversation(conversation) => {
                if session.agent_memory.conversation != conversation {
                    session.agent_memory.conversation = conversation;
                    turns.fx.persist(crate::persist::StoreOp::PutSession(session.row(&lock, &log)));
                }
            }
            AgentEvent::Done => {
                turns.end_turn(&mut session, &mut lock, &mut log, &mut history, TurnEndReason::Completed, None);
            }
            AgentEvent::Failed(reason) => {
                turns.end_turn(&mut session, &mut lock, &mut log, &mut history, TurnEndReason::Failed, Some(reason));
            }
        }
    }
    for (sid, (turn_id, text)) in deltas {
        stage_delta(&mut turns.fx.staged, &sid, turn_id, &text);
    }
    for (sid, (offset, text)) in streamed {
        let running = index.sessions.get(&sid).and_then(|&e| sessions.get(e).ok()).is_some_and(|(_, lock, ..)| {
            // Same turn still running, and this text is where the turn's text says it is.
            lock.holder.is_some() && lock.streamed.len() as u64 == offset + text.len() as u64
        });
        if running {
            turns.fx.persist(crate::persist::StoreOp::AppendStreamed { session: sid, offset, text });
        }
    }
}

/// A question as it may go on the wire: its text and options clipped (outside `masker`'s
/// secrets), at most 32 options. (With at most [`MAX_QUESTIONS`] questions, a question vote stays
/// far below the frame bound.)
fn bounded_question(q: Question, masker: &crate::mask::Masker) -> Question {
    let spans = |t: &str| masker.spans(t);
    Question {
        question: clip_json(&q.question, 4 * 1024, spans),
        options: q.options.iter().take(32).map(|o| clip_json(o, 1024, spans)).collect(),
        multi_select: q.multi_select,
    }
}

/// Most questions one question vote carries; more are left out (the agent gets no answer for
/// them, as if nobody had answered).
pub const MAX_QUESTIONS: usize = 16;

/// Stages a session's merged delta text, in pieces within the wire bound (PROTOCOL §1.3). Cutting
/// here may split a secret: remotes' copies go through one stream masker per turn (broadcast),
/// which masks the pieces as a unit with everything streamed before them.
fn stage_delta(staged: &mut Staged, session: &crate::ids::SessionId, turn_id: u64, text: &str) {
    for piece in crate::protocol::split_json(text, crate::protocol::MAX_DELTA_JSON_BYTES, crate::protocol::no_spans) {
        let body = Event::AgentDelta(AgentDelta { turn_id, text: piece.to_string() });
        let frame = Arc::from(EventFrame { session_id: Some(session.clone()), seq: None, body }.to_json());
        staged.out.push(Outgoing::Delta { session: session.clone(), turn_id, text: piece.to_string(), frame });
    }
}
