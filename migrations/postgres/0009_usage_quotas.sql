-- Berth schema, version 9 (Postgres): storage accounting and quotas.
--
-- Mirrors migrations/sqlite/0009_usage_quotas.sql (same tables, columns and
-- views; BIGINT sizes, COLLATE "C" owners). The triggers call the PL/pgSQL
-- functions below instead of repeating their statements.
--
-- Usage is kept by triggers on the tables that hold what is stored, so it
-- changes in the very transaction that changes the content, whichever code
-- path did it. The quota checks live in the same triggers: a write that
-- would take an owner past a limit raises 'berth:quota:bytes' or
-- 'berth:quota:repositories', and its transaction writes nothing. Racing
-- writers of one owner queue on its owner_usage row, so together they
-- cannot pass a limit either.

-- The owner of a repository: the first component of its name.
ALTER TABLE repositories ADD COLUMN owner TEXT COLLATE "C" GENERATED ALWAYS AS (split_part(name, '/', 1)) STORED;

CREATE TABLE owner_usage (
    owner        TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    bytes        BIGINT NOT NULL DEFAULT 0,
    repositories BIGINT NOT NULL DEFAULT 0,
    manifests    BIGINT NOT NULL DEFAULT 0,
    tags         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE owner_blobs (
    owner  TEXT   COLLATE "C" NOT NULL,
    digest TEXT   NOT NULL,
    size   BIGINT NOT NULL,
    links  BIGINT NOT NULL,
    PRIMARY KEY (owner, digest)
);

-- Owner '' holds the defaults from `[quotas]`; NULL: use the default; 0: unlimited.
CREATE TABLE quotas (
    owner        TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    bytes        BIGINT CHECK (bytes >= 0),
    repositories BIGINT CHECK (repositories >= 0)
);

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
           CAST(COALESCE(MAX(bb.bytes), 0) + SUM(p.manifest_bytes) AS BIGINT) AS bytes,
           COUNT(*) AS repositories,
           CAST(SUM(p.manifests) AS BIGINT) AS manifests,
           CAST(SUM(p.tags) AS BIGINT) AS tags
    FROM per_repository p LEFT JOIN blob_bytes bb ON bb.owner = p.owner
    GROUP BY p.owner;

INSERT INTO owner_blobs (owner, digest, size, links) SELECT owner, digest, size, links FROM owner_blobs_actual;
INSERT INTO owner_usage (owner, bytes, repositories, manifests, tags)
    SELECT owner, bytes, repositories, manifests, tags FROM owner_usage_actual;

-- The limit that applies to an owner; 0: none.
CREATE FUNCTION berth_quota_limit(who TEXT, what TEXT) RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT CASE WHEN what = 'bytes' THEN q.bytes ELSE q.repositories END FROM quotas q WHERE q.owner = who),
        (SELECT CASE WHEN what = 'bytes' THEN q.bytes ELSE q.repositories END FROM quotas q WHERE q.owner = ''),
        0)
$$;

-- Adds to an owner's usage; refuses growth past a limit.
CREATE FUNCTION berth_usage_add(who TEXT, d_bytes BIGINT, d_repositories BIGINT, d_manifests BIGINT, d_tags BIGINT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_bytes BIGINT;
    new_repositories BIGINT;
    lim BIGINT;
BEGIN
    INSERT INTO owner_usage AS u (owner, bytes, repositories, manifests, tags)
        VALUES (who, d_bytes, d_repositories, d_manifests, d_tags)
        ON CONFLICT (owner) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes,
            repositories = u.repositories + EXCLUDED.repositories,
            manifests = u.manifests + EXCLUDED.manifests,
            tags = u.tags + EXCLUDED.tags
        RETURNING u.bytes, u.repositories INTO new_bytes, new_repositories;
    IF d_bytes > 0 THEN
        lim := berth_quota_limit(who, 'bytes');
        IF lim > 0 AND new_bytes > lim THEN
            RAISE EXCEPTION 'berth:quota:bytes';
        END IF;
    END IF;
    IF d_repositories > 0 THEN
        lim := berth_quota_limit(who, 'repositories');
        IF lim > 0 AND new_repositories > lim THEN
            RAISE EXCEPTION 'berth:quota:repositories';
        END IF;
    END IF;
END $$;

CREATE FUNCTION berth_usage_repositories() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM berth_usage_add(NEW.owner, 0, 1, 0, 0);
    ELSE
        PERFORM berth_usage_add(OLD.owner, 0, -1, 0, 0);
    END IF;
    RETURN NULL;
END $$;

-- A blob's bytes count once per owner: on its first link there, and off
-- again with its last.
CREATE FUNCTION berth_usage_repository_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who TEXT;
    blob_size BIGINT;
    remaining BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT r.owner INTO who FROM repositories r WHERE r.id = NEW.repository_id;
        SELECT b.size INTO blob_size FROM blobs b WHERE b.digest = NEW.digest;
        INSERT INTO owner_blobs AS ob (owner, digest, size, links) VALUES (who, NEW.digest, blob_size, 1)
            ON CONFLICT (owner, digest) DO UPDATE SET links = ob.links + 1
            RETURNING ob.links INTO remaining;
        IF remaining = 1 THEN
            PERFORM berth_usage_add(who, blob_size, 0, 0, 0);
        END IF;
    ELSE
        SELECT r.owner INTO who FROM repositories r WHERE r.id = OLD.repository_id;
        IF who IS NULL THEN
            RETURN NULL; -- the repository itself is being deleted
        END IF;
        UPDATE owner_blobs SET links = links - 1 WHERE owner = who AND digest = OLD.digest
            RETURNING links, size INTO remaining, blob_size;
        IF remaining IS NOT NULL AND remaining <= 0 THEN
            DELETE FROM owner_blobs WHERE owner = who AND digest = OLD.digest;
            PERFORM berth_usage_add(who, -blob_size, 0, 0, 0);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION berth_usage_manifests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT r.owner INTO who FROM repositories r WHERE r.id = NEW.repository_id;
        PERFORM berth_usage_add(who, NEW.size, 0, 1, 0);
    ELSE
        SELECT r.owner INTO who FROM repositories r WHERE r.id = OLD.repository_id;
        IF who IS NOT NULL THEN
            PERFORM berth_usage_add(who, -OLD.size, 0, -1, 0);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION berth_usage_tags() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT r.owner INTO who FROM repositories r WHERE r.id = NEW.repository_id;
        PERFORM berth_usage_add(who, 0, 0, 0, 1);
    ELSE
        SELECT r.owner INTO who FROM repositories r WHERE r.id = OLD.repository_id;
        IF who IS NOT NULL THEN
            PERFORM berth_usage_add(who, 0, 0, 0, -1);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER repositories_usage AFTER INSERT OR DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION berth_usage_repositories();
CREATE TRIGGER repository_blobs_usage AFTER INSERT OR DELETE ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION berth_usage_repository_blobs();
CREATE TRIGGER manifests_usage AFTER INSERT OR DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION berth_usage_manifests();
CREATE TRIGGER tags_usage AFTER INSERT OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION berth_usage_tags();
