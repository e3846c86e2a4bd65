-- Berth schema, version 11 (SQLite): the pull-through cache.
--
-- Cached content itself lives in the ordinary tables (repositories named
-- `<upstream>/<upstream repository>`, their manifests, tags and blob links);
-- these tables only say what the cache needs beyond that.
--
-- When a cached repository was last pulled (retention's "not pulled for
-- that long" on an upstream namespace), and from which upstream. Times are
-- milliseconds since the Unix epoch.
CREATE TABLE upstream_repositories (
    repository     TEXT    NOT NULL PRIMARY KEY,
    upstream       TEXT    NOT NULL,
    last_pulled_at INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

-- When a cached tag was last checked against the upstream, and the digest
-- it pointed at then: within `revalidate_after` of checked_at the tag is
-- served without asking the upstream.
CREATE TABLE upstream_tags (
    repository TEXT    NOT NULL,
    tag        TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    checked_at INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
);
