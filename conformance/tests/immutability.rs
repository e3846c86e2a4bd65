//! Immutable tags (`[tags] immutable` globs over `<repository>:<tag>`), in-process only.

use berth_conformance::{Manifest, Resp, Target, assert_error, here, send};

const RULE: &str = "*:v*";

async fn with_rule(test: String) -> Option<Target> {
    Target::in_process(test, |cfg| cfg.tags.immutable = vec![RULE.into()]).await
}

/// Asserts 403 DENIED with the rule named in the message or detail.
fn denied(r: &Resp) {
    assert_error(r, 403, "DENIED");
    assert!(r.error_text().contains(RULE), "the error must name the rule {RULE}\n{r}");
}

async fn points_at(t: &Target, tag: &str, m: &Manifest) {
    let r = t.get_manifest(t.repo(), tag).await;
    r.expect_status(200).expect_body(&m.body).expect_header("Docker-Content-Digest", &m.digest);
}

#[tokio::test]
async fn moving_an_immutable_tag_is_403_denied() {
    let Some(t) = with_rule(here!()).await else { return };
    let first = t.push_image(t.repo(), "v1").await;
    let second = t.image(t.repo(), 1).await;
    denied(&t.put_manifest(t.repo(), "v1", &second).await);
    points_at(&t, "v1", &first).await;
}

#[tokio::test]
async fn moving_an_immutable_tag_with_a_tag_parameter_is_403_denied() {
    let Some(t) = with_rule(here!()).await else { return };
    let first = t.push_image(t.repo(), "v1").await;
    let second = t.image(t.repo(), 1).await;
    denied(&t.put_manifest(t.repo(), &format!("{}?tag=v1", second.digest), &second).await);
    points_at(&t, "v1", &first).await;
}

#[tokio::test]
async fn pushing_the_same_manifest_to_an_immutable_tag_is_201() {
    let Some(t) = with_rule(here!()).await else { return };
    let m = t.push_image(t.repo(), "v1").await;
    let r = t.put_manifest(t.repo(), "v1", &m).await;
    r.expect_status(201).expect_header("Docker-Content-Digest", &m.digest);
    let r = t.put_manifest(t.repo(), &format!("{}?tag=v1", m.digest), &m).await;
    r.expect_status(201);
    points_at(&t, "v1", &m).await;
}

#[tokio::test]
async fn deleting_an_immutable_tag_is_403_denied() {
    let Some(t) = with_rule(here!()).await else { return };
    let m = t.push_image(t.repo(), "v1").await;
    denied(&send(t.delete(&format!("/v2/{}/manifests/v1", t.repo()))).await);
    points_at(&t, "v1", &m).await;
}

#[tokio::test]
async fn deleting_the_manifest_behind_an_immutable_tag_is_403_denied() {
    let Some(t) = with_rule(here!()).await else { return };
    let m = t.push_image(t.repo(), "v1").await;
    denied(&send(t.delete(&format!("/v2/{}/manifests/{}", t.repo(), m.digest))).await);
    t.get_manifest(t.repo(), &m.digest).await.expect_status(200).expect_body(&m.body);
    points_at(&t, "v1", &m).await;
}

#[tokio::test]
async fn tags_outside_the_rule_move_freely() {
    let Some(t) = with_rule(here!()).await else { return };
    t.push_image(t.repo(), "latest").await;
    let second = t.push_image(t.repo(), "latest").await;
    points_at(&t, "latest", &second).await;
    send(t.delete(&format!("/v2/{}/manifests/latest", t.repo()))).await.expect_status(202);
    send(t.delete(&format!("/v2/{}/manifests/{}", t.repo(), second.digest))).await.expect_status(202);
}

#[tokio::test]
async fn without_rules_tags_move_freely() {
    // The default configuration has no immutable tags.
    let Some(t) = Target::in_process(here!(), |_| {}).await else { return };
    let first = t.push_image(t.repo(), "v1").await;
    let second = t.push_image(t.repo(), "v1").await;
    points_at(&t, "v1", &second).await;
    send(t.delete(&format!("/v2/{}/manifests/v1", t.repo()))).await.expect_status(202);
    send(t.delete(&format!("/v2/{}/manifests/{}", t.repo(), first.digest))).await.expect_status(202);
}
