//! `berth usage` and `berth quota` beside a running server: usage tables for
//! every owner and for one, JSON, quotas set, listed and removed, and a
//! recount that finds no drift. On SQLite and on Postgres (`sqlite::<case>`,
//! `postgres::<case>`).

mod common;

use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_testkit::backends::{Database, Storage};
use berth_testkit::fixtures::{blob, image_manifest};
use berth_testkit::{TestServer, on_both_databases};
use common::{berth, berth_on};
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

on_both_databases!(usage_and_quotas_from_the_cli,);

/// Pushes an image (config and one layer) as `repo:tag` through the service.
async fn push(server: &TestServer, repo: &str, tag: &str, seed: u64) {
    let r = RepositoryName::parse(repo).unwrap();
    let config = blob(seed, 100);
    let layer = blob(seed + 1000, 3000);
    for data in [&config, &layer] {
        let body: berth_blob::ByteStream =
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(data))]));
        server.registry.put_blob(&r, &Digest::sha256_of(data), body, None).await.unwrap();
    }
    let tag = Reference::Tag(Tag::parse(tag).unwrap());
    let manifest = image_manifest(&config, &[&layer]);
    server.registry.put_manifest(&r, &tag, manifest, Some(OCI_MANIFEST), vec![], None).await.unwrap();
}

#[track_caller]
fn ok(result: (i32, String, String)) -> String {
    let (code, out, err) = result;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

/// The table row that starts with `first`.
fn row<'a>(out: &'a str, first: &str) -> &'a str {
    out.lines().find(|l| l.split_whitespace().next() == Some(first)).unwrap_or_else(|| panic!("no {first} in {out}"))
}

async fn usage_and_quotas_from_the_cli(db: Database) {
    let server = TestServer::start_on(db, Storage::Filesystem, |_| {}).await;
    push(&server, "acme/app", "v1", 1).await;
    push(&server, "acme/app", "v2", 2).await;
    push(&server, "acme/web", "v1", 3).await;
    push(&server, "bob/tool", "latest", 4).await;
    let acme = server.registry.usage("acme").await.unwrap().usage;
    assert_eq!((acme.repositories, acme.manifests, acme.tags), (2, 3, 3));

    // Every owner: stored, quota, share used, repositories, manifests, tags.
    let out = ok(berth_on(&server, &["usage"], &[]));
    let head = out.lines().next().unwrap_or_default();
    for column in ["owner", "stored", "quota", "used", "repositories", "manifests", "tags"] {
        assert!(head.contains(column), "{out}");
    }
    let line = row(&out, "acme");
    assert!(line.contains(&berth_config::human_size(acme.bytes)) && line.contains("unlimited"), "{out}");
    assert_eq!(line.split_whitespace().rev().take(3).collect::<Vec<_>>(), ["3", "3", "2"], "{line}");
    row(&out, "bob");

    // One owner: its line, its limits, and each repository.
    let out = ok(berth_on(&server, &["usage", "acme"], &[]));
    assert!(out.starts_with("acme: ") && out.contains("2 repositories, 3 manifests, 3 tags"), "{out}");
    assert!(out.contains("limits: bytes unlimited (default from [quotas])"), "{out}");
    assert!(row(&out, "acme/app").ends_with(" 2"), "{out}");
    row(&out, "acme/web");

    // JSON in the API's shape.
    let json: Value = serde_json::from_str(&ok(berth_on(&server, &["usage", "--json"], &[]))).expect("JSON");
    let listed = json.as_array().expect("an array").iter().find(|o| o["owner"] == "acme").expect("acme");
    assert_eq!(listed["bytes"], acme.bytes);
    assert_eq!(listed["limits"]["bytes"], 0);
    let json: Value = serde_json::from_str(&ok(berth_on(&server, &["usage", "acme", "--json"], &[]))).expect("JSON");
    let repos = json["repositories_usage"].as_array().expect("repositories_usage");
    // The two repositories share no blob: their bytes add up to the owner's.
    assert_eq!(repos.iter().map(|r| r["bytes"].as_u64().unwrap()).sum::<u64>(), acme.bytes);
    assert_eq!(repos[0]["repository"], "acme/app");

    // Quotas: set (human sizes), listed, shown in usage, removed.
    let out = ok(berth_on(&server, &["quota", "set", "acme", "--bytes", "50GiB", "--repositories", "10"], &[]));
    assert!(out.contains("limits: bytes 50 GiB (own), repositories 10 (own)"), "{out}");
    let out = ok(berth_on(&server, &["quota", "set", "bob", "--repositories", "1"], &[]));
    assert!(out.contains("bytes unlimited (default from [quotas]), repositories 1 (own)"), "{out}");
    let (code, _, err) = berth_on(&server, &["quota", "set", "acme"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("give --bytes and/or --repositories"), "{err}");
    let (code, _, err) = berth_on(&server, &["quota", "set", "acme", "--bytes", "lots"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a size"), "{err}");
    let (code, _, err) = berth_on(&server, &["quota", "set", "acme/app", "--bytes", "1GiB"], &[]);
    assert_eq!(code, 1, "an owner is one name component: {err}");

    let out = ok(berth_on(&server, &["quota", "list"], &[]));
    assert!(out.starts_with("defaults ([quotas]): bytes unlimited, repositories unlimited"), "{out}");
    assert!(row(&out, "acme").contains("50 GiB") && row(&out, "bob").contains("default"), "{out}");
    let json: Value = serde_json::from_str(&ok(berth_on(&server, &["quota", "list", "--json"], &[]))).expect("JSON");
    assert_eq!(json[0]["own_limits"]["bytes"], 50u64 << 30);
    assert_eq!(json[1]["own_limits"]["bytes"], Value::Null);
    let line = ok(berth_on(&server, &["usage"], &[]));
    let acme_row = row(&line, "acme");
    assert!(acme_row.contains("50 GiB (own)") && acme_row.contains("2 of 10"), "{line}");
    assert!(acme_row.contains(" %"), "the share used: {line}");

    ok(berth_on(&server, &["quota", "remove", "acme"], &[]));
    let (code, _, err) = berth_on(&server, &["quota", "remove", "acme"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("acme has no limits of its own"), "{err}");
    let json: Value = serde_json::from_str(&ok(berth_on(&server, &["quota", "list", "--json"], &[]))).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");

    // A recount agrees with the figures kept as writes happened.
    let out = ok(berth_on(&server, &["usage", "--recount"], &[]));
    assert!(out.starts_with("recount: no drift\n"), "{out}");
    let json: Value =
        serde_json::from_str(&ok(berth_on(&server, &["usage", "bob", "--recount", "--json"], &[]))).expect("JSON");
    assert_eq!(json["drift"], serde_json::json!([]));
    assert_eq!(json["usage"]["owner"], "bob");
    server.stop().await;
}

#[test]
fn help_explains_usage_and_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(berth(dir.path(), &["--help"], &[]));
    assert!(out.contains("usage") && out.contains("against its quota"), "{out}");
    assert!(out.contains("quota") && out.contains("Per-owner quotas"), "{out}");
    let out = ok(berth(dir.path(), &["quota", "set", "--help"], &[]));
    for needle in ["--bytes <SIZE>", "50GiB", "0 = unlimited", "[quotas]", "--repositories <N>"] {
        assert!(out.contains(needle), "{needle} missing: {out}");
    }
    let out = ok(berth(dir.path(), &["usage", "--help"], &[]));
    for needle in ["--recount", "--json", "drift"] {
        assert!(out.contains(needle), "{needle} missing: {out}");
    }
}
