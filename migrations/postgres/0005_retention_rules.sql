-- Berth schema, version 5 (Postgres): retention rules added through the CLI
-- (`berth retention add`) or the API (`/api/v1/admin/retention/rules`).
--
-- Mirrors migrations/sqlite/0005_retention_rules.sql (BIGINT identity for
-- the id, BIGINT times). Rules of the config file ([[retention.rules]]) are
-- not stored here: the effective policy is the config file's rules, in file
-- order, then these, by id; the first whose `repositories` matches a
-- repository governs it. The registry service validates a rule before it is
-- stored.
--
-- An identity never gives an id out again, so "rule 3" in a log or an audit
-- line always means the same rule, even after it was removed.
CREATE TABLE retention_rules (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Glob over repository names (`*` crosses `/`).
    repositories      TEXT   NOT NULL,
    keep_last         BIGINT CHECK (keep_last >= 0),
    -- JSON arrays of tag globs, e.g. '["v*","stable"]'; '[]' when none.
    keep_tags         TEXT   NOT NULL DEFAULT '[]',
    remove_tags       TEXT   NOT NULL DEFAULT '[]',
    -- Only tags last pushed longer ago than this (ms) may go; NULL: any age.
    remove_older_than BIGINT CHECK (remove_older_than >= 0),
    created_at        BIGINT NOT NULL,
    -- The user who added it through the API, or "cli".
    created_by        TEXT   NOT NULL
);
