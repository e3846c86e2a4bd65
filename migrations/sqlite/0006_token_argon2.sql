-- Berth schema, version 6 (SQLite): personal access tokens are stored as
-- argon2id hashes.
--
-- migrations/postgres/0006_token_argon2.sql mirrors this file (BYTEA for
-- lookup_key, BIGINT times).
--
-- Until now a token was stored as a keyed SHA-256 of its secret and looked
-- up by it. From now on:
--
-- - `secret_hash` is an argon2id PHC string of the secret (random salt), the
--   only thing that verifies a presented secret, like users.password_hash;
-- - `lookup_key` is the first 8 bytes of a keyed SHA-256 of the secret: it
--   finds the row in one indexed query but cannot verify a secret (64 of
--   its 256 random bits). It is not unique: should two tokens share a key,
--   the query returns both and the secret is verified against each.
--
-- Berth is unreleased, so existing tokens are not converted (their secrets
-- are not known): every token that is not revoked yet is marked revoked
-- now, keeps its id and stays listed by `berth token list`, and gets an
-- empty lookup key and verifier that match no secret. Their owners create
-- new tokens.
--
-- SQLite cannot drop the old UNIQUE (secret_hash) constraint in place, so
-- the table is rebuilt (nothing references access_tokens). AUTOINCREMENT,
-- like Postgres's identity column: a token id is never given out again, so
-- the id in a bearer JWT (`pat`) or an audit line always means one token.
CREATE TABLE access_tokens_v6 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    -- First 8 bytes of SHA-256("berth personal access token lookup v2\0" || secret).
    lookup_key   BLOB    NOT NULL,
    -- argon2id PHC string of the secret.
    secret_hash  TEXT    NOT NULL,
    -- Comma-separated: read:package, write:package.
    scopes       TEXT    NOT NULL,
    -- Newline-separated repository globs; empty means every repository.
    repositories TEXT    NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    created_at   INTEGER NOT NULL
);

INSERT INTO access_tokens_v6 (id, user_id, name, lookup_key, secret_hash, scopes, repositories,
                              expires_at, last_used_at, revoked_at, created_at)
SELECT id, user_id, name, X'', '', scopes, repositories, expires_at, last_used_at,
       COALESCE(revoked_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)), created_at
FROM access_tokens;

DROP TABLE access_tokens;
ALTER TABLE access_tokens_v6 RENAME TO access_tokens;

CREATE INDEX access_tokens_user_idx ON access_tokens (user_id);
CREATE INDEX access_tokens_lookup_idx ON access_tokens (lookup_key);
