-- Berth schema, version 4 (Postgres): the webhook delivery queue.
--
-- Mirrors migrations/sqlite/0004_webhooks.sql (BIGINT times).
-- Each row is one event for one configured hook. Rows are written when the
-- event happens and deleted a while after delivery, so a restart loses no
-- delivery; `claimed_until` keeps two workers (replicas) from sending the
-- same delivery at once.
CREATE TABLE webhook_deliveries (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    hook            TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    claimed_until   BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT,
    dead_at         BIGINT
);

-- The worker's question: what is due now?
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
