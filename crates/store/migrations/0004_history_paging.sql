-- 0004: history is paged from the database instead of held in memory.
--
-- Idempotent retries of messages older than the in-memory tail look the original up by
-- (session, author, client_msg_id); only messages sent by people carry a client_msg_id.
CREATE INDEX messages_by_client_id ON messages (session, author_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
