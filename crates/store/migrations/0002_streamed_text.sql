-- Text the agent has streamed in a running turn, kept with the session so a host killed
-- mid-turn can post it as the agent's (partial) reply when it restarts: nothing the room saw
-- is lost.
ALTER TABLE sessions ADD COLUMN streamed TEXT NOT NULL DEFAULT '';
