-- 0001: the initial schema.
--
-- Ids are the engine's domain ids (`w1`, `s3`, `sh2`, ...). Lists that belong to one row and are
-- always read and written whole (a share's workspaces, a participant's sessions, a vote's required
-- voters) are stored as JSON arrays. Foreign keys are DEFERRABLE INITIALLY DEFERRED: they are
-- checked when a tick's transaction commits, so the order of ops inside one tick does not matter,
-- but a batch that leaves a dangling reference is refused as a whole.

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    dir        TEXT NOT NULL,
    agent_json TEXT NOT NULL
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY NOT NULL,
    workspace        TEXT NOT NULL REFERENCES workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    title            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('idle', 'running', 'awaiting_vote')),
    turn_holder      TEXT,
    turn_id          INTEGER NOT NULL CHECK (turn_id >= 0),
    next_seq         INTEGER NOT NULL CHECK (next_seq >= 0),
    agent_json       TEXT NOT NULL,
    vote_deadline_ms INTEGER,
    created_at       INTEGER NOT NULL
);

-- The token itself is never stored: only its SHA-256.
CREATE TABLE shares (
    id                 TEXT PRIMARY KEY NOT NULL,
    label              TEXT NOT NULL,
    token_hash         BLOB NOT NULL CHECK (length(token_hash) = 32),
    workspaces_json    TEXT NOT NULL,
    collaborative      INTEGER NOT NULL CHECK (collaborative IN (0, 1)),
    consensus_required INTEGER NOT NULL CHECK (consensus_required IN (0, 1)),
    admission_required INTEGER NOT NULL CHECK (admission_required IN (0, 1)),
    role               TEXT NOT NULL CHECK (role IN ('host', 'participant', 'observer')),
    expires_at         INTEGER,
    max_uses           INTEGER,
    uses               INTEGER NOT NULL CHECK (uses >= 0),
    revoked            INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    created_at         INTEGER NOT NULL,
    vote_deadline_ms   INTEGER
);

-- Token hashes that a rotation replaced. A retired hash never becomes valid again, even if a
-- writer holding a stale copy of the share (the running host, while the CLI rotates) upserts it.
CREATE TABLE retired_token_hashes (
    token_hash BLOB PRIMARY KEY NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER shares_retire_old_token_hash
AFTER UPDATE OF token_hash ON shares
WHEN old.token_hash IS NOT new.token_hash
BEGIN
    INSERT OR IGNORE INTO retired_token_hashes (token_hash) VALUES (old.token_hash);
END;

CREATE TABLE participants (
    id            TEXT PRIMARY KEY NOT NULL,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('host', 'participant', 'observer')),
    share         TEXT,
    muted         INTEGER NOT NULL CHECK (muted IN (0, 1)),
    admission     TEXT NOT NULL CHECK (admission IN ('admitted', 'pending', 'refused')),
    resume_hash   BLOB CHECK (resume_hash IS NULL OR length(resume_hash) = 32),
    gone          INTEGER NOT NULL CHECK (gone IN (0, 1)),
    sessions_json TEXT NOT NULL
);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY NOT NULL,
    session       TEXT NOT NULL REFERENCES sessions (id) DEFERRABLE INITIALLY DEFERRED,
    seq           INTEGER NOT NULL,
    author_id     TEXT NOT NULL,
    author_name   TEXT NOT NULL,
    text          TEXT NOT NULL,
    client_msg_id TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX messages_by_session_seq ON messages (session, seq);

-- The per-session event log: the exact frames clients received, for `since_seq` replay.
CREATE TABLE events (
    session TEXT NOT NULL REFERENCES sessions (id) DEFERRABLE INITIALLY DEFERRED,
    seq     INTEGER NOT NULL,
    frame   TEXT NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;

CREATE TABLE votes (
    id            TEXT PRIMARY KEY NOT NULL,
    session       TEXT NOT NULL REFERENCES sessions (id) DEFERRABLE INITIALLY DEFERRED,
    turn_id       INTEGER NOT NULL,
    request_id    TEXT NOT NULL,
    subject_json  TEXT NOT NULL,
    decided_by    TEXT NOT NULL,
    required_json TEXT NOT NULL,
    deadline      INTEGER,
    outcome       TEXT,
    reason        TEXT,
    opened_at     INTEGER NOT NULL
);

CREATE TABLE ballots (
    vote   TEXT NOT NULL REFERENCES votes (id) DEFERRABLE INITIALLY DEFERRED,
    voter  TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('approve', 'deny', 'answer')),
    detail TEXT,
    at     INTEGER NOT NULL,
    PRIMARY KEY (vote, voter)
) WITHOUT ROWID;

-- Who did what: joins, kicks, mutes, revocations, ballots, share and workspace changes.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
