-- Berth schema, version 5 (SQLite): retention rules added through the CLI
-- (`berth retention add`) or the API (`/api/v1/admin/retention/rules`).
--
-- migrations/postgres/0005_retention_rules.sql mirrors this file (BIGINT
-- identity for the id, BIGINT times). Rules of the config file
-- ([[retention.rules]]) are not stored here: the effective policy is the
-- config file's rules, in file order, then these, by id; the first whose
-- `repositories` matches a repository governs it. The registry service
-- validates a rule before it is stored.
--
-- AUTOINCREMENT: an id is never given out again, so "rule 3" in a log or an
-- audit line always means the same rule, even after it was removed.
CREATE TABLE retention_rules (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Glob over repository names (`*` crosses `/`).
    repositories      TEXT    NOT NULL,
    keep_last         INTEGER CHECK (keep_last >= 0),
    -- JSON arrays of tag globs, e.g. '["v*","stable"]'; '[]' when none.
    keep_tags         TEXT    NOT NULL DEFAULT '[]',
    remove_tags       TEXT    NOT NULL DEFAULT '[]',
    -- Only tags last pushed longer ago than this (ms) may go; NULL: any age.
    remove_older_than INTEGER CHECK (remove_older_than >= 0),
    created_at        INTEGER NOT NULL,
    -- The user who added it through the API, or "cli".
    created_by        TEXT    NOT NULL
);
