-- 0013: whether the last host stopped cleanly (one row).
--
-- A host sets `stopped_cleanly` to 0 when it opens the database and to 1 after the engine's last
-- commit of a graceful stop; a crash, a kill or a power cut leaves 0. The next host runs the full
-- integrity check before serving only when it finds 0 (or no row: a database written before this
-- migration, which is checked once); otherwise it serves at once and checks in the background.
CREATE TABLE host_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stopped_cleanly INTEGER NOT NULL CHECK (stopped_cleanly IN (0, 1))
);
