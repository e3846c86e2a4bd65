-- Berth schema, version 2 (Postgres): accounts, visibility, and who pushed what.
--
-- Mirrors migrations/sqlite/0002_auth.sql: same tables, columns, constraint
-- and index names; BOOLEAN for the flag columns, BIGINT identity for ids,
-- BIGINT for times, BYTEA for secret_hash, COLLATE "C" on owners.name (it is
-- compared with the first component of repositories.name, also "C").

-- Users and organizations share one namespace: the first component of a
-- repository name is an owner of either kind.
CREATE TABLE owners (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('user', 'org')),
    -- Public owners' repositories may be pulled anonymously.
    is_public  BOOLEAN NOT NULL DEFAULT false,
    created_at BIGINT NOT NULL,
    CONSTRAINT owners_name_key UNIQUE (name)
);

CREATE TABLE users (
    owner_id      BIGINT NOT NULL PRIMARY KEY REFERENCES owners (id) ON DELETE CASCADE,
    -- argon2id PHC string; NULL for accounts that only use tokens.
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    disabled      BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE org_members (
    org_id  BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    role    TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (org_id, user_id)
);

CREATE INDEX org_members_user_idx ON org_members (user_id);

-- Personal access tokens. Only a hash of the secret is stored; requests
-- look tokens up by that hash.
CREATE TABLE access_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    -- Comma-separated: read:package, write:package.
    scopes       TEXT NOT NULL,
    -- Newline-separated repository globs; empty means every repository.
    repositories TEXT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL,
    CONSTRAINT access_tokens_secret_hash_key UNIQUE (secret_hash)
);

CREATE INDEX access_tokens_user_idx ON access_tokens (user_id);

-- A repository's own visibility; NULL inherits its owner's.
ALTER TABLE repositories ADD COLUMN is_public BOOLEAN;

-- Who pushed a manifest, and who last pointed a tag (the package API's
-- `creator`). NULL when unknown (pushed with authentication disabled).
ALTER TABLE manifests ADD COLUMN pushed_by TEXT;
ALTER TABLE tags ADD COLUMN pushed_by TEXT;
