//! The built-in `demo` agent: deterministic, tick-driven, no I/O.
//!
//! - any message: streams `You said: TEXT` back in chunks, one chunk per tick, then finishes;
//! - `/plan TEXT`: streams a preamble, proposes a plan and waits for the vote; approved → it
//!   "executes" and finishes, denied → it acknowledges the reason and finishes;
//! - `/ask TEXT`: asks one question with options `yes` / `no` and echoes the merged answer;
//! - `/fail`: streams one chunk, then fails.

use super::{AgentCommand, AgentEvent, AgentOutput, InTickAgent, Resolution};
use crate::ids::SessionId;
use crate::protocol::Question;
use std::collections::{BTreeMap, VecDeque};

/// The backend kind sessions name in their agent spec.
pub const KIND: &str = "demo";

/// Characters per streamed chunk.
pub const CHUNK_CHARS: usize = 12;

#[derive(Debug)]
enum Step {
    Say(String),
    Propose { request_id: String, plan: String },
    Ask { request_id: String, question: String },
    Wait { request_id: String, kind: WaitKind },
    Finish,
    Fail(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitKind {
    Plan,
    Question,
}

#[derive(Debug)]
struct Turn {
    turn_id: u64,
    steps: VecDeque<Step>,
    /// Whether any text was streamed yet (the reply after a vote starts a new paragraph).
    spoke: bool,
}

/// Per-session demo agent state.
#[derive(Default, Debug)]
pub struct DemoAgent {
    turns: BTreeMap<SessionId, Turn>,
}

fn chunks(text: &str) -> Vec<Step> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(CHUNK_CHARS).map(|c| Step::Say(c.iter().collect())).collect()
}

impl DemoAgent {
    /// Handles a command from the engine.
    pub fn handle(&mut self, cmd: AgentCommand) {
        match cmd {
            AgentCommand::StartTurn { session, turn_id, prompt, .. } => {
                let mut steps: VecDeque<Step> = VecDeque::new();
                let prompt = prompt.trim();
                if let Some(rest) = prompt.strip_prefix("/plan") {
                    let goal = rest.trim();
                    let goal = if goal.is_empty() { "the task" } else { goal };
                    steps.extend(chunks("I have a plan."));
                    let request_id = format!("plan-{turn_id}");
                    steps.push_back(Step::Propose {
                        request_id: request_id.clone(),
                        plan: format!("1. Read the code for {goal}\n2. Make the change\n3. Run the tests"),
                    });
                    steps.push_back(Step::Wait { request_id, kind: WaitKind::Plan });
                } else if let Some(rest) = prompt.strip_prefix("/ask") {
                    let topic = rest.trim();
                    let topic = if topic.is_empty() { "this" } else { topic };
                    let request_id = format!("ask-{turn_id}");
                    steps.push_back(Step::Ask {
                        request_id: request_id.clone(),
                        question: format!("Should I go ahead with {topic}?"),
                    });
                    steps.push_back(Step::Wait { request_id, kind: WaitKind::Question });
                } else if prompt.starts_with("/fail") {
                    steps.extend(chunks("Working on it"));
                    steps.push_back(Step::Fail("the demo agent failed as asked (/fail)".into()));
                } else {
                    steps.extend(chunks(&format!("You said: {prompt}")));
                    steps.push_back(Step::Finish);
                }
                self.turns.insert(session, Turn { turn_id, steps, spoke: false });
            }
            AgentCommand::Resolve { session, turn_id, request_id, resolution } => {
                let Some(turn) = self.turns.get_mut(&session) else { return };
                if turn.turn_id != turn_id {
                    return;
                }
                let waiting = matches!(turn.steps.front(), Some(Step::Wait { request_id: r, .. }) if *r == request_id);
                if !waiting {
                    return;
                }
                let Some(Step::Wait { kind, .. }) = turn.steps.pop_front() else { return };
                let reply = match (kind, resolution) {
                    (WaitKind::Plan, Resolution::Approved) => {
                        "Plan approved. Done: all three steps complete.".to_string()
                    }
                    (WaitKind::Plan, Resolution::Denied(reason)) => format!("Plan denied ({reason}). I stopped."),
                    (WaitKind::Question, Resolution::Answered(a)) => format!("Thanks. Answer: {}", a.join(" | ")),
                    (WaitKind::Question, Resolution::Denied(reason)) => format!("No answer ({reason}). I stopped."),
                    (_, other) => format!("Unexpected resolution {other:?}."),
                };
                // A new paragraph after the preamble streamed before the vote.
                let reply = if turn.spoke { format!("\n{reply}") } else { reply };
                turn.steps.extend(chunks(&reply));
                turn.steps.push_back(Step::Finish);
            }
            AgentCommand::Cancel { session, turn_id } => {
                if self.turns.get(&session).is_some_and(|t| t.turn_id == turn_id) {
                    self.turns.remove(&session);
                }
            }
        }
    }

    /// Advances every running turn by one step, in session-id order.
    pub fn step(&mut self) -> Vec<AgentOutput> {
        let mut out = Vec::new();
        let mut finished = Vec::new();
        for (session, turn) in self.turns.iter_mut() {
            let event = match turn.steps.front() {
                None => continue,
                Some(Step::Wait { .. }) => continue,
                Some(_) => match turn.steps.pop_front().expect("front exists") {
                    Step::Say(t) => {
                        turn.spoke = true;
                        AgentEvent::Delta(t)
                    }
                    Step::Propose { request_id, plan } => AgentEvent::Plan { request_id, plan, on_approval: None },
                    Step::Ask { request_id, question } => AgentEvent::Question {
                        request_id,
                        questions: vec![Question {
                            question,
                            options: vec!["yes".into(), "no".into()],
                            multi_select: false,
                        }],
                    },
                    Step::Finish => {
                        finished.push(session.clone());
                        AgentEvent::Done
                    }
                    Step::Fail(reason) => {
                        finished.push(session.clone());
                        AgentEvent::Failed(reason)
                    }
                    Step::Wait { .. } => unreachable!("checked above"),
                },
            };
            out.push(AgentOutput { session: session.clone(), turn_id: turn.turn_id, event });
        }
        for s in finished {
            self.turns.remove(&s);
        }
        out
    }

    /// Whether a turn is running for the session.
    pub fn is_running(&self, session: &SessionId) -> bool {
        self.turns.contains_key(session)
    }
}

impl InTickAgent for DemoAgent {
    fn handle(&mut self, cmd: AgentCommand) {
        DemoAgent::handle(self, cmd);
    }

    fn step(&mut self) -> Vec<AgentOutput> {
        DemoAgent::step(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::AgentSpec;

    fn start(agent: &mut DemoAgent, prompt: &str) {
        agent.handle(AgentCommand::StartTurn {
            session: SessionId::nth(1),
            turn_id: 1,
            workspace_dir: ".".into(),
            spec: AgentSpec::demo(),
            prompt: prompt.into(),
            author_name: "Ann".into(),
            conversation: None,
            settings: Default::default(),
        });
    }

    fn run(agent: &mut DemoAgent) -> Vec<AgentEvent> {
        let mut all = Vec::new();
        for _ in 0..100 {
            all.extend(agent.step().into_iter().map(|o| o.event));
        }
        all
    }

    #[test]
    fn echo_streams_over_several_ticks_then_finishes() {
        let mut a = DemoAgent::default();
        start(&mut a, "hello there, world");
        let first = a.step();
        assert_eq!(first.len(), 1);
        let rest = run(&mut a);
        let text: String = std::iter::once(&first[0].event)
            .chain(rest.iter())
            .filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None })
            .collect();
        assert_eq!(text, "You said: hello there, world");
        assert_eq!(rest.last(), Some(&AgentEvent::Done));
        assert!(rest.len() > 2, "reply should take several ticks");
    }

    #[test]
    fn plan_waits_for_resolution() {
        let mut a = DemoAgent::default();
        start(&mut a, "/plan refactor");
        let events = run(&mut a);
        assert!(matches!(events.last(), Some(AgentEvent::Plan { .. })));
        assert!(a.is_running(&SessionId::nth(1)));
        a.handle(AgentCommand::Resolve {
            session: SessionId::nth(1),
            turn_id: 1,
            request_id: "plan-1".into(),
            resolution: Resolution::Denied("too risky".into()),
        });
        let events = run(&mut a);
        let text: String =
            events.iter().filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None }).collect();
        assert!(text.contains("too risky"));
        assert_eq!(events.last(), Some(&AgentEvent::Done));
    }

    #[test]
    fn fail_fails() {
        let mut a = DemoAgent::default();
        start(&mut a, "/fail");
        assert!(matches!(run(&mut a).last(), Some(AgentEvent::Failed(_))));
    }
}
