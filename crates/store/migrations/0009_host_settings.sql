-- The host's settings changed from its window (`update_settings`): one row, as JSON
-- {"host_name": "...", "default_consensus": true, "default_vote_deadline_ms": 120000}.
CREATE TABLE settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL
);
