-- Retiring a hash that is already retired is not an error. (The trigger's `INSERT OR IGNORE`
-- is overridden by the conflict policy of the upsert that fires it, so a share whose current
-- hash had been retired before made every later commit fail.)
DROP TRIGGER shares_retire_old_token_hash;

CREATE TRIGGER shares_retire_old_token_hash
AFTER UPDATE OF token_hash ON shares
WHEN old.token_hash IS NOT new.token_hash
BEGIN
    INSERT INTO retired_token_hashes (token_hash)
    SELECT old.token_hash
    WHERE NOT EXISTS (SELECT 1 FROM retired_token_hashes WHERE token_hash = old.token_hash);
END;
