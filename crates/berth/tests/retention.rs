//! Retention rules stored at run time: added, listed, applied and removed
//! with the CLI beside a running server, and applied by the server's
//! schedule without a restart. On SQLite and on Postgres (`sqlite::<case>`,
//! `postgres::<case>`).

mod common;

use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_testkit::backends::{Database, Storage};
use berth_testkit::fixtures::{blob, image_manifest};
use berth_testkit::{TestServer, on_both_databases};
use common::berth_on;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

on_both_databases!(
    retention_rules_added_with_the_cli_apply_and_can_be_removed,
    the_schedule_applies_rules_stored_while_the_server_runs,
);

/// Pushes one small image per tag, in order, a few ms apart (retention
/// ranks tags by the time a push last set them).
async fn push_tags(server: &TestServer, repo: &str, tags: &[&str]) {
    let r = RepositoryName::parse(repo).unwrap();
    for (i, name) in tags.iter().enumerate() {
        let config = blob(200 + i as u64, 10);
        let body: berth_blob::ByteStream =
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(&config))]));
        server.registry.put_blob(&r, &Digest::sha256_of(&config), body, None).await.unwrap();
        let tag = Reference::Tag(Tag::parse(name).unwrap());
        server
            .registry
            .put_manifest(&r, &tag, image_manifest(&config, &[]), Some(OCI_MANIFEST), vec![], None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn tags_of(server: &TestServer, repo: &str) -> Vec<String> {
    server.registry.list_tags(&RepositoryName::parse(repo).unwrap(), None, None).await.unwrap()
}

async fn retention_rules_added_with_the_cli_apply_and_can_be_removed(db: Database) {
    let server = TestServer::start_on(db, Storage::Filesystem, |_| {}).await;
    push_tags(&server, "acme/web", &["v1", "v2", "v3", "v4", "v5", "latest"]).await;

    // A rule that limits nothing is refused, and nothing is stored.
    let (code, _, err) = berth_on(&server, &["retention", "add", "--repositories", "acme/*"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("must limit what it removes"), "{err}");

    let (code, out, err) =
        berth_on(&server, &["retention", "add", "--repositories", "acme/*", "--keep-last", "2"], &[]);
    assert_eq!(code, 0, "{err}");
    let id: i64 = out.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("no id in {out}"));
    assert!(out.contains(&format!("added stored rule {id}")), "{out}");

    // Listed after the config file's rules, with its id.
    let config_rules = [("BERTH_RETENTION_RULES", r#"[{"repositories":"other/*","keep_last":9}]"#)];
    let (code, out, err) = berth_on(&server, &["retention", "list"], &config_rules);
    assert_eq!(code, 0, "{err}");
    let (config_at, stored_at) =
        (out.find("config rule 1 (config file").unwrap(), out.find(&format!("stored rule {id} (")));
    assert!(stored_at.is_some_and(|s| s > config_at), "{out}");
    assert!(out.contains("keep_last = 2") && out.contains(&format!("berth retention remove {id}")), "{out}");

    let (code, out, err) = berth_on(&server, &["retention", "apply", "--dry-run"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("acme/web (stored rule {id}): would remove 3, kept 3")), "{out}");
    assert_eq!(tags_of(&server, "acme/web").await.len(), 6, "a dry run removes nothing");

    let (code, out, err) = berth_on(&server, &["retention", "apply"], &[]);
    assert_eq!(code, 0, "{err}");
    for gone in ["v1", "v2", "v3"] {
        assert!(out.contains(&format!("removed acme/web:{gone} ")), "{out}");
    }
    assert!(out.contains("removed 3 tags in 1 repositories"), "{out}");
    assert_eq!(tags_of(&server, "acme/web").await, ["latest", "v4", "v5"]);

    // Removed: no longer listed or applied; a second removal fails.
    let (code, out, err) = berth_on(&server, &["retention", "remove", &id.to_string()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("removed stored rule {id}")), "{out}");
    let (code, _, err) = berth_on(&server, &["retention", "remove", &id.to_string()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no stored retention rule {id}")), "{err}");
    let (code, out, _) = berth_on(&server, &["retention", "list"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("no retention rules"), "{out}");
    assert!(server.maintenance.retention_rules().await.unwrap().is_empty());
    server.stop().await;
}

async fn the_schedule_applies_rules_stored_while_the_server_runs(db: Database) {
    // No rule in the config file: retention is scheduled all the same.
    let server = TestServer::start_on(db, Storage::Filesystem, |c| {
        c.retention.interval = Duration::from_secs(1);
    })
    .await;
    assert!(server.config.retention.rules.is_empty());
    push_tags(&server, "acme/app", &["a", "b", "c", "latest"]).await;
    let rule = berth_registry::retention::RetentionRule {
        repositories: "acme/*".into(),
        keep_last: Some(1),
        ..Default::default()
    };
    server.maintenance.add_retention_rule(rule, "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags_of(&server, "acme/app").await != ["c", "latest"] {
        assert!(Instant::now() < deadline, "the schedule never applied the stored rule");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
