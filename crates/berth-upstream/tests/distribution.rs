//! The client against a real registry: Debian's `docker-registry` (CNCF
//! Distribution 2.8) on loopback, anonymous and with htpasswd Basic auth.
//! Content is pushed with plain reqwest, then read back through the client.
//! Without `docker-registry` installed each test prints `NOT RUN: ...`.

mod common;

use berth_oci::media_type as mt;
use berth_oci::{Digest, Reference};
use berth_upstream::{UpstreamClient, UpstreamError, UpstreamSettings};
use common::distribution::{Distribution, PASSWORD, USER};
use common::{blob, drain, image_manifest, index, name, reference};

struct Pushed {
    image: Digest,
    image_bytes: Vec<u8>,
    docker: Digest,
    index: Digest,
    layer: Vec<u8>,
}

/// An OCI image (a small layer and a 6 MiB one) tagged `v1`, a Docker
/// schema 2 image tagged `docker`, and an index over both tagged `multi`.
async fn push_images(reg: &Distribution, repo: &str) -> Pushed {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let small = blob(1000, 1);
    let layer = blob(6 * 1024 * 1024 + 123, 2);
    for b in [&config, &small, &layer] {
        reg.push_blob(repo, b).await;
    }
    let image_bytes = image_manifest(mt::OCI_MANIFEST, &config, &[&small, &layer]);
    let image = reg.push_manifest(repo, "v1", mt::OCI_MANIFEST, &image_bytes).await;
    let docker_bytes = image_manifest(mt::DOCKER_MANIFEST, &config, &[&small]);
    let docker = reg.push_manifest(repo, "docker", mt::DOCKER_MANIFEST, &docker_bytes).await;
    let index_bytes = index(&[&image_bytes, &docker_bytes]);
    let index = reg.push_manifest(repo, "multi", mt::OCI_INDEX, &index_bytes).await;
    Pushed { image, image_bytes, docker, index, layer }
}

fn client(reg: &Distribution, change: impl FnOnce(UpstreamSettings) -> UpstreamSettings) -> UpstreamClient {
    UpstreamClient::new(change(UpstreamSettings::new("distribution", &reg.url))).unwrap()
}

#[tokio::test]
async fn distribution_anonymous_manifests_blobs_tags_catalog() {
    let Some(reg) = Distribution::start("distribution_anonymous_manifests_blobs_tags_catalog", false).await else {
        return;
    };
    let p = push_images(&reg, "team/app").await;
    let c = client(&reg, |s| s);
    let repo = name("team/app");

    // HEAD and GET by tag and by digest.
    let head = c.head_manifest(&repo, &reference("v1")).await.unwrap();
    assert_eq!(
        (&head.digest, head.media_type.as_str(), head.size),
        (&p.image, mt::OCI_MANIFEST, p.image_bytes.len() as u64)
    );
    let by_tag = c.get_manifest(&repo, &reference("v1"), &[]).await.unwrap();
    assert_eq!((by_tag.bytes.as_ref(), &by_tag.digest), (&p.image_bytes[..], &p.image));
    let by_digest = c.get_manifest(&repo, &Reference::Digest(p.image.clone()), &[]).await.unwrap();
    assert_eq!(by_digest, by_tag);
    let head = c.head_manifest(&repo, &Reference::Digest(p.image.clone())).await.unwrap();
    assert_eq!(head.digest, p.image);

    // Docker schema 2 and the index keep their media types and digests.
    let docker = c.get_manifest(&repo, &reference("docker"), &[]).await.unwrap();
    assert_eq!((docker.media_type.as_str(), &docker.digest), (mt::DOCKER_MANIFEST, &p.docker));
    let multi = c.head_manifest(&repo, &reference("multi")).await.unwrap();
    assert_eq!((multi.media_type.as_str(), &multi.digest), (mt::OCI_INDEX, &p.index));
    let multi = c.get_manifest(&repo, &reference("multi"), &[]).await.unwrap();
    assert_eq!(multi.digest, p.index);

    // A multi-MiB blob, streamed and hashed.
    let stream = c.get_blob(&repo, &Digest::sha256_of(&p.layer)).await.unwrap();
    assert_eq!(stream.length(), Some(p.layer.len() as u64));
    let stream = stream.expect_size(p.layer.len() as u64).unwrap();
    let (digest, chunks, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(digest, Digest::sha256_of(&p.layer));
    assert!(chunks > 10, "{chunks} chunks: streamed, not buffered");

    // Tags. Distribution 2.8 ignores `n` on tag lists (it paginates the
    // catalog only); the fake upstream's test covers tag pagination.
    let c2 = client(&reg, |mut s| {
        s.page_size = Some(2);
        s
    });
    let mut tags: Vec<String> = c2.list_tags(&repo).await.unwrap().iter().map(|t| t.to_string()).collect();
    tags.sort();
    assert_eq!(tags, ["docker", "multi", "v1"]);

    // Catalog, two per page across three pages.
    for r in ["cat/a", "cat/b", "cat/c", "cat/d"] {
        reg.push_blob(r, b"x").await;
    }
    let repos: Vec<String> = c2.catalog().await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(repos, ["cat/a", "cat/b", "cat/c", "cat/d", "team/app"]);
    let repos: Vec<String> = c.catalog().await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(repos.len(), 5);

    // Distribution 2.8 has no referrers API: that is `None`, not an error.
    assert_eq!(c.referrers(&repo, &p.image).await.unwrap(), None);

    // Unknown repository, tag, digest and blob.
    let unknown_digest = Digest::sha256_of(b"nothing");
    let errors = [
        c.head_manifest(&name("no/such"), &reference("v1")).await.unwrap_err(),
        c.get_manifest(&repo, &reference("nope"), &[]).await.unwrap_err(),
        c.get_manifest(&repo, &Reference::Digest(unknown_digest.clone()), &[]).await.unwrap_err(),
        c.get_blob(&repo, &unknown_digest).await.unwrap_err(),
        c.list_tags(&name("no/such")).await.unwrap_err(),
    ];
    for e in errors {
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains(&reg.url), "{e}");
    }
    let e = c.list_tags(&name("no/such")).await.unwrap_err();
    assert!(e.to_string().contains("NAME_UNKNOWN"), "the upstream's own message: {e}");
    let e = c.get_manifest(&name("no/such"), &reference("v1"), &[]).await.unwrap_err();
    assert!(e.to_string().contains("MANIFEST_UNKNOWN"), "the upstream's own message: {e}");
}

#[tokio::test]
async fn distribution_basic_auth() {
    let Some(reg) = Distribution::start("distribution_basic_auth", true).await else { return };
    let p = push_images(&reg, "private/app").await;
    let repo = name("private/app");

    let good = client(&reg, |s| s.with_credentials(USER, PASSWORD));
    let head = good.head_manifest(&repo, &reference("v1")).await.unwrap();
    assert_eq!(head.digest, p.image);
    let m = good.get_manifest(&repo, &reference("multi"), &[]).await.unwrap();
    assert_eq!(m.digest, p.index);
    let (digest, _, err) = drain(good.get_blob(&repo, &Digest::sha256_of(&p.layer)).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(digest, Digest::sha256_of(&p.layer));
    assert_eq!(good.list_tags(&repo).await.unwrap().len(), 3);
    assert_eq!(good.catalog().await.unwrap().len(), 1);

    let wrong = client(&reg, |s| s.with_credentials(USER, "not-the-password"));
    let e = wrong.get_manifest(&repo, &reference("v1"), &[]).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("not-the-password") && !text.contains(PASSWORD), "{text}");
    assert!(text.contains("\"distribution\"") && text.contains(&reg.url), "{text}");

    let anonymous = client(&reg, |s| s);
    let e = anonymous.head_manifest(&repo, &reference("v1")).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
    let e = anonymous.catalog().await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
    assert!(!reg.log().is_empty());
}
