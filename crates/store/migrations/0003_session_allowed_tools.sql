-- Tools the host allowed "always" in a session: later requests for them are approved without a
-- vote (still shown to everyone as resolved by the allow-list). JSON array of tool names.
ALTER TABLE sessions ADD COLUMN allowed_tools_json TEXT NOT NULL DEFAULT '[]';
