-- Berth schema, version 6 (Postgres): personal access tokens are stored as
-- argon2id hashes.
--
-- Mirrors migrations/sqlite/0006_token_argon2.sql (BYTEA for lookup_key,
-- BIGINT times); SQLite rebuilds the table, Postgres alters it in place.
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
UPDATE access_tokens SET revoked_at = (extract(epoch FROM now()) * 1000)::BIGINT WHERE revoked_at IS NULL;

-- Drops access_tokens_secret_hash_key (UNIQUE) with the column.
ALTER TABLE access_tokens DROP COLUMN secret_hash;

-- First 8 bytes of SHA-256('berth personal access token lookup v2\0' || secret).
ALTER TABLE access_tokens ADD COLUMN lookup_key BYTEA NOT NULL DEFAULT ''::BYTEA;
-- argon2id PHC string of the secret.
ALTER TABLE access_tokens ADD COLUMN secret_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE access_tokens ALTER COLUMN lookup_key DROP DEFAULT, ALTER COLUMN secret_hash DROP DEFAULT;

CREATE INDEX access_tokens_lookup_idx ON access_tokens (lookup_key);
