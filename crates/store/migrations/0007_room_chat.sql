-- Room chat: messages to the people in a session, never to the agent (`send_chat`). They live in
-- the same table as prompts and replies, so history pages interleave them in seq order.
ALTER TABLE messages ADD COLUMN room INTEGER NOT NULL DEFAULT 0 CHECK (room IN (0, 1));
