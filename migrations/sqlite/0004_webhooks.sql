-- Berth schema, version 4 (SQLite): the webhook delivery queue.
--
-- migrations/postgres/0004_webhooks.sql mirrors this file (BIGINT times).
-- Each row is one event for one configured hook. Rows are written when the
-- event happens and deleted a while after delivery, so a restart loses no
-- delivery; `claimed_until` keeps two workers (replicas) from sending the
-- same delivery at once.
CREATE TABLE webhook_deliveries (
    id              TEXT    NOT NULL PRIMARY KEY,
    hook            TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    dead_at         INTEGER
);

-- The worker's question: what is due now?
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
