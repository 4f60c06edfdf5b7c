-- What a session's agent keeps between turns (persist::AgentMemory as JSON): the conversation
-- the next turn resumes (the claude CLI's session id), so a host restart does not make the agent
-- forget. '{}' = none (a new conversation).
ALTER TABLE sessions ADD COLUMN agent_memory_json TEXT NOT NULL DEFAULT '{}';
