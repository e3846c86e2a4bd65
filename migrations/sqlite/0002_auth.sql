-- Berth schema, version 2 (SQLite): accounts, visibility, and who pushed what.
--
-- migrations/postgres/0002_auth.sql mirrors this file (BOOLEAN for the flag
-- columns, BIGINT for ids and times, BYTEA for secret_hash, COLLATE "C" on
-- owners.name).

-- Users and organizations share one namespace: the first component of a
-- repository name is an owner of either kind.
CREATE TABLE owners (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('user', 'org')),
    -- Public owners' repositories may be pulled anonymously.
    is_public  INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    CONSTRAINT owners_name_key UNIQUE (name)
);

CREATE TABLE users (
    owner_id      INTEGER NOT NULL PRIMARY KEY REFERENCES owners (id) ON DELETE CASCADE,
    -- argon2id PHC string; NULL for accounts that only use tokens.
    password_hash TEXT,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE org_members (
    org_id  INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    role    TEXT    NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (org_id, user_id)
);

CREATE INDEX org_members_user_idx ON org_members (user_id);

-- Personal access tokens. Only a hash of the secret is stored; requests
-- look tokens up by that hash.
CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL,
    -- Comma-separated: read:package, write:package.
    scopes       TEXT    NOT NULL,
    -- Newline-separated repository globs; empty means every repository.
    repositories TEXT    NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    created_at   INTEGER NOT NULL,
    CONSTRAINT access_tokens_secret_hash_key UNIQUE (secret_hash)
);

CREATE INDEX access_tokens_user_idx ON access_tokens (user_id);

-- A repository's own visibility; NULL inherits its owner's.
ALTER TABLE repositories ADD COLUMN is_public INTEGER;

-- Who pushed a manifest, and who last pointed a tag (the package API's
-- `creator`). NULL when unknown (pushed with authentication disabled).
ALTER TABLE manifests ADD COLUMN pushed_by TEXT;
ALTER TABLE tags ADD COLUMN pushed_by TEXT;
