-- A session's agent settings (protocol::AgentSettings as JSON: model, permission mode), set with
-- set_agent_settings and passed to the agent on every turn. '{}' = the agent's defaults.
ALTER TABLE sessions ADD COLUMN agent_settings_json TEXT NOT NULL DEFAULT '{}';
