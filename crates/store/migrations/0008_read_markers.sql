-- Read markers: per participant, the last seq they have seen in each session (`mark_read`),
-- as a JSON object {"s1": 12, ...}.
ALTER TABLE participants ADD COLUMN read_json TEXT NOT NULL DEFAULT '{}';
