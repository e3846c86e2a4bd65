-- Berth schema, version 8 (SQLite): web sign-in sessions, and the index
-- the pages' "latest pushes" and version listings read.
--
-- migrations/postgres/0008_web_pages.sql mirrors this file (BIGINT for ids
-- and times, BYTEA for id_hash).

-- Only a SHA-256 of the cookie's secret is stored. A session ends when it
-- expires, when its user signs out, is disabled, or changes password
-- (password_stamp no longer matches the user's).
CREATE TABLE web_sessions (
    id_hash        BLOB    NOT NULL PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    csrf_token     TEXT    NOT NULL,
    password_stamp TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);

CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

-- Versions newest first within a repository, and latest pushes overall.
CREATE INDEX tags_updated_idx ON tags (repository_id, updated_at);
CREATE INDEX tags_recent_idx ON tags (updated_at);
