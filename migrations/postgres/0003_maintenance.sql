-- Berth schema, version 3 (Postgres): garbage collection, retention and
-- upload expiry.
--
-- Mirrors migrations/sqlite/0003_maintenance.sql (BIGINT times, COLLATE "C"
-- on leases.name). The safety argument these columns serve is written down
-- in crates/berth-registry/src/gc.rs.

-- A blob row is 'live' or 'deleting'. Garbage collection marks a blob
-- 'deleting' (in a transaction that re-checks it is linked nowhere and was
-- not linked or reserved within the grace period), only then deletes its
-- bytes, then the row. Reservations and links refuse a 'deleting' blob.
ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'live'
    CONSTRAINT blobs_state_check CHECK (state IN ('live', 'deleting'));

-- Last time an upload reserved this digest (before committing its bytes) or
-- a repository linked it: the grace period of garbage collection runs from here.
ALTER TABLE blobs ADD COLUMN last_linked BIGINT NOT NULL DEFAULT 0;

UPDATE blobs SET last_linked = GREATEST(created_at,
    COALESCE((SELECT max(rb.created_at) FROM repository_blobs rb WHERE rb.digest = blobs.digest), 0));

-- Which incarnation of the row this is: random, set when the row is
-- inserted (a reservation of an absent digest) and kept while it exists. An
-- upload links only the row it reserved: if the collector deleted that row
-- and someone reserved the digest afresh, the tokens differ and the late
-- upload fails instead of linking bytes it cannot vouch for.
ALTER TABLE blobs ADD COLUMN token TEXT NOT NULL DEFAULT '';

-- When the collector marked the row 'deleting' (NULL while live). A run
-- resumes another run's half-done deletions only once they are old enough
-- that the run which marked them has certainly stopped.
ALTER TABLE blobs ADD COLUMN marked_at BIGINT;

-- "What may be collected, oldest first?" and "what did a crashed run leave half-deleted?"
CREATE INDEX blobs_state_idx ON blobs (state, last_linked);

-- Last time the link was made or made again (an upload or mount into a
-- repository that already links the blob refreshes it): a link's grace
-- period runs from here, so a re-upload followed by a manifest push is
-- never undercut by the collector.
ALTER TABLE repository_blobs ADD COLUMN linked_at BIGINT NOT NULL DEFAULT 0;

UPDATE repository_blobs SET linked_at = created_at;

-- Cluster-wide leases for maintenance jobs ('gc', 'retention',
-- 'upload-expiry'): at most one holder at a time, taken with a conditional
-- upsert, renewed while the job runs and released (expires_at = 0) at its
-- end. last_run_at is when the job last finished, so that several replicas
-- run a scheduled job once per interval between them.
CREATE TABLE leases (
    name        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    holder      TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    last_run_at BIGINT
);
