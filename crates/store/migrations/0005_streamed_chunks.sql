-- 0005: the text an agent streams in a running turn is appended in chunks, not rewritten.
--
-- Each tick that streamed text adds one row holding only that tick's new text (keyed by its
-- byte offset in the turn's text), so saving a long reply costs what was streamed, not the whole
-- reply again every tick. The rows are deleted when the turn ends (its text is then a message).
-- `sessions.streamed` (0002) is no longer written by the engine; at load it is read before the
-- chunks, for databases written by an older roundtable.
CREATE TABLE streamed_chunks (
    session TEXT NOT NULL REFERENCES sessions (id) DEFERRABLE INITIALLY DEFERRED,
    offset  INTEGER NOT NULL CHECK (offset >= 0),
    text    TEXT NOT NULL,
    PRIMARY KEY (session, offset)
) WITHOUT ROWID;
