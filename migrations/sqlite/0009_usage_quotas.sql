-- Berth schema, version 9 (SQLite): storage accounting and quotas.
--
-- migrations/postgres/0009_usage_quotas.sql mirrors this file: same tables,
-- columns and views; there the triggers call PL/pgSQL functions.
--
-- Usage is kept by triggers on the tables that hold what is stored, so it
-- changes in the very transaction that changes the content, whichever code
-- path did it (push, mount, delete, garbage collection, retention). The
-- quota checks live in the same triggers: a write that would take an owner
-- past a limit fails with the error 'berth:quota:bytes' or
-- 'berth:quota:repositories', and its transaction writes nothing.

-- The owner of a repository: the first component of its name.
ALTER TABLE repositories ADD COLUMN owner TEXT GENERATED ALWAYS AS
    (CASE WHEN instr(name, '/') > 0 THEN substr(name, 1, instr(name, '/') - 1) ELSE name END) VIRTUAL;

-- The usage tables are WITHOUT ROWID: keyed by text, they are one B-tree
-- each instead of a table and an index, so the triggers below dirty fewer
-- pages per commit.

-- Per owner: bytes stored (each distinct blob once, plus every manifest),
-- and how many repositories, manifests and tags it has.
CREATE TABLE owner_usage (
    owner        TEXT    NOT NULL PRIMARY KEY,
    bytes        INTEGER NOT NULL DEFAULT 0,
    repositories INTEGER NOT NULL DEFAULT 0,
    manifests    INTEGER NOT NULL DEFAULT 0,
    tags         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Which blobs an owner holds, and in how many of its repositories: a
-- blob's bytes count for the owner while `links` > 0.
CREATE TABLE owner_blobs (
    owner  TEXT    NOT NULL,
    digest TEXT    NOT NULL,
    size   INTEGER NOT NULL,
    links  INTEGER NOT NULL,
    PRIMARY KEY (owner, digest)
) WITHOUT ROWID;

-- Limits. The row with owner '' holds the defaults from `[quotas]` (written
-- at start-up); other rows override them per owner. NULL: use the default;
-- 0: unlimited.
CREATE TABLE quotas (
    owner        TEXT    NOT NULL PRIMARY KEY,
    bytes        INTEGER CHECK (bytes >= 0),
    repositories INTEGER CHECK (repositories >= 0)
) WITHOUT ROWID;

-- What usage really is, computed from the content tables: the backfill
-- below and `berth usage --recount` read these.
CREATE VIEW owner_blobs_actual AS
    SELECT r.owner AS owner, rb.digest AS digest, b.size AS size, COUNT(*) AS links
    FROM repository_blobs rb
    JOIN repositories r ON r.id = rb.repository_id
    JOIN blobs b ON b.digest = rb.digest
    GROUP BY r.owner, rb.digest, b.size;

CREATE VIEW owner_usage_actual AS
    WITH per_repository AS (
        SELECT r.owner AS owner,
               (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository_id = r.id) AS manifest_bytes,
               (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id) AS manifests,
               (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) AS tags
        FROM repositories r
    ),
    blob_bytes AS (SELECT owner, SUM(size) AS bytes FROM owner_blobs_actual GROUP BY owner)
    SELECT p.owner AS owner,
           COALESCE(MAX(bb.bytes), 0) + SUM(p.manifest_bytes) AS bytes,
           COUNT(*) AS repositories,
           SUM(p.manifests) AS manifests,
           SUM(p.tags) AS tags
    FROM per_repository p LEFT JOIN blob_bytes bb ON bb.owner = p.owner
    GROUP BY p.owner;

INSERT INTO owner_blobs (owner, digest, size, links) SELECT owner, digest, size, links FROM owner_blobs_actual;
INSERT INTO owner_usage (owner, bytes, repositories, manifests, tags)
    SELECT owner, bytes, repositories, manifests, tags FROM owner_usage_actual;

-- The limit that applies to an owner, 0 meaning none, spelled out in each
-- trigger (SQLite has no functions):
--   COALESCE((SELECT q.bytes FROM quotas q WHERE q.owner = <owner>),
--            (SELECT q.bytes FROM quotas q WHERE q.owner = ''), 0)
-- `x > NULLIF(limit, 0)` is then never true without a limit.

CREATE TRIGGER repositories_usage_insert AFTER INSERT ON repositories BEGIN
    INSERT INTO owner_usage (owner, repositories) VALUES (NEW.owner, 1)
        ON CONFLICT (owner) DO UPDATE SET repositories = repositories + 1;
    SELECT RAISE(ABORT, 'berth:quota:repositories') FROM owner_usage u
        WHERE u.owner = NEW.owner
          AND u.repositories > NULLIF(COALESCE(
                (SELECT q.repositories FROM quotas q WHERE q.owner = NEW.owner),
                (SELECT q.repositories FROM quotas q WHERE q.owner = ''), 0), 0);
END;

CREATE TRIGGER repositories_usage_delete AFTER DELETE ON repositories BEGIN
    UPDATE owner_usage SET repositories = repositories - 1 WHERE owner = OLD.owner;
END;

CREATE TRIGGER repository_blobs_usage_insert AFTER INSERT ON repository_blobs BEGIN
    INSERT INTO owner_blobs (owner, digest, size, links)
        SELECT r.owner, b.digest, b.size, 1 FROM repositories r, blobs b
        WHERE r.id = NEW.repository_id AND b.digest = NEW.digest
        ON CONFLICT (owner, digest) DO UPDATE SET links = links + 1;
    -- Bytes count once per owner: only when this is the owner's first link.
    INSERT INTO owner_usage (owner, bytes)
        SELECT ob.owner, ob.size FROM owner_blobs ob JOIN repositories r ON r.owner = ob.owner
        WHERE r.id = NEW.repository_id AND ob.digest = NEW.digest AND ob.links = 1
        ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
    SELECT RAISE(ABORT, 'berth:quota:bytes')
        FROM owner_usage u JOIN repositories r ON r.owner = u.owner
        JOIN owner_blobs ob ON ob.owner = u.owner AND ob.digest = NEW.digest
        WHERE r.id = NEW.repository_id AND ob.links = 1
          AND u.bytes > NULLIF(COALESCE(
                (SELECT q.bytes FROM quotas q WHERE q.owner = u.owner),
                (SELECT q.bytes FROM quotas q WHERE q.owner = ''), 0), 0);
END;

CREATE TRIGGER repository_blobs_usage_delete AFTER DELETE ON repository_blobs BEGIN
    UPDATE owner_blobs SET links = links - 1
        WHERE owner = (SELECT r.owner FROM repositories r WHERE r.id = OLD.repository_id) AND digest = OLD.digest;
    UPDATE owner_usage SET bytes = bytes - (SELECT ob.size FROM owner_blobs ob
                                            WHERE ob.owner = owner_usage.owner AND ob.digest = OLD.digest)
        WHERE owner = (SELECT r.owner FROM repositories r WHERE r.id = OLD.repository_id)
          AND EXISTS (SELECT 1 FROM owner_blobs ob
                      WHERE ob.owner = owner_usage.owner AND ob.digest = OLD.digest AND ob.links <= 0);
    DELETE FROM owner_blobs
        WHERE owner = (SELECT r.owner FROM repositories r WHERE r.id = OLD.repository_id)
          AND digest = OLD.digest AND links <= 0;
END;

CREATE TRIGGER manifests_usage_insert AFTER INSERT ON manifests BEGIN
    INSERT INTO owner_usage (owner, bytes, manifests)
        SELECT r.owner, NEW.size, 1 FROM repositories r WHERE r.id = NEW.repository_id
        ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes, manifests = manifests + 1;
    SELECT RAISE(ABORT, 'berth:quota:bytes')
        FROM owner_usage u JOIN repositories r ON r.owner = u.owner
        WHERE r.id = NEW.repository_id
          AND u.bytes > NULLIF(COALESCE(
                (SELECT q.bytes FROM quotas q WHERE q.owner = u.owner),
                (SELECT q.bytes FROM quotas q WHERE q.owner = ''), 0), 0);
END;

CREATE TRIGGER manifests_usage_delete AFTER DELETE ON manifests BEGIN
    UPDATE owner_usage SET bytes = bytes - OLD.size, manifests = manifests - 1
        WHERE owner = (SELECT r.owner FROM repositories r WHERE r.id = OLD.repository_id);
END;

CREATE TRIGGER tags_usage_insert AFTER INSERT ON tags BEGIN
    INSERT INTO owner_usage (owner, tags)
        SELECT r.owner, 1 FROM repositories r WHERE r.id = NEW.repository_id
        ON CONFLICT (owner) DO UPDATE SET tags = tags + 1;
END;

CREATE TRIGGER tags_usage_delete AFTER DELETE ON tags BEGIN
    UPDATE owner_usage SET tags = tags - 1
        WHERE owner = (SELECT r.owner FROM repositories r WHERE r.id = OLD.repository_id);
END;
