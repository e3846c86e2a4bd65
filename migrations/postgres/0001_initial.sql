-- Berth metadata schema, version 1 (Postgres).
--
-- Mirrors migrations/sqlite/0001_initial.sql: same version, same table,
-- column, constraint and index names. Only the types differ: BIGINT identity
-- for repositories.id, BIGINT for sizes and times, BYTEA for binary columns.
--
-- Every identifier-like text column (repository and tag names, digests,
-- upload ids) uses COLLATE "C": names and tags are listed in byte order and
-- referrers in digest order, which SQLite's BINARY collation gives for free
-- but a database created with e.g. en_US.UTF-8 would not (it ignores
-- punctuation at the first level). "C" also makes these comparisons memcmp.
--
-- Times are milliseconds since the Unix epoch. Digests are stored in their
-- canonical `algorithm:hex` form.

CREATE TABLE repositories (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT repositories_name_key UNIQUE (name)
);

-- Blobs the blob store holds: global and deduplicated by digest. A row here
-- does not make a blob visible anywhere; repository_blobs does.
CREATE TABLE blobs (
    digest     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    size       BIGINT NOT NULL CHECK (size >= 0),
    created_at BIGINT NOT NULL
);

-- Which repository may see which blob. No cascade from blobs: garbage
-- collection must unlink a blob everywhere before it may forget it.
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);

-- "Is this blob linked anywhere?" (anonymous mounts, garbage collection).
CREATE INDEX repository_blobs_digest_idx ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT NOT NULL,
    -- Effective artifact type, for the referrers API.
    artifact_type TEXT,
    -- Digest of the manifest this one refers to (OCI 1.1 `subject`).
    subject       TEXT COLLATE "C",
    -- Annotations as a JSON object, returned verbatim by the referrers API.
    annotations   TEXT,
    size          BIGINT NOT NULL CHECK (size >= 0),
    -- The exact bytes pushed.
    content       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);

-- Referrers lookups: by subject within a repository, already in digest order.
CREATE INDEX manifests_subject_idx ON manifests (repository_id, subject, digest);

-- What each manifest references: its config and layers ('blob') or, for an
-- index, its child manifests ('manifest'). Garbage collection and retention
-- read it in the target direction ("anything an index references is kept").
-- There is deliberately no foreign key on the target: a manifest pushed
-- without reference checks may name content the repository lacks.
CREATE TABLE manifest_references (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT COLLATE "C" NOT NULL,
    target_digest   TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, target_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);

CREATE INDEX manifest_references_target_idx ON manifest_references (target_digest, repository_id);

-- Deleting a manifest deletes the tags pointing at it (the store checks
-- immutability rules first).
CREATE TABLE tags (
    repository_id BIGINT NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    digest        TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    -- Last time a push set this tag (to a new or the same digest).
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);

-- "Which tags point at this manifest?" (manifest deletion, retention).
CREATE INDEX tags_digest_idx ON tags (repository_id, digest);

-- Upload sessions in progress. `repository` is a name rather than an id: the
-- repository row is only created when the first blob or manifest lands.
CREATE TABLE uploads (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    repository     TEXT COLLATE "C" NOT NULL,
    algorithm      TEXT NOT NULL,
    -- Bytes received so far (`offset` is a reserved word in SQL).
    committed_size BIGINT NOT NULL CHECK (committed_size >= 0),
    -- Saved hasher state after committed_size bytes.
    hash_state     BYTEA NOT NULL,
    -- Blob-store specific state (e.g. S3 multipart id and parts), opaque here.
    backend_state  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- Expiry of abandoned sessions.
CREATE INDEX uploads_updated_at_idx ON uploads (updated_at);
