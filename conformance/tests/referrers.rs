//! The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=<type>]`.

use berth_conformance::content::{self, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use berth_conformance::{Manifest, Resp, Target, assert_error, here, send, sha256};
use serde_json::{Map, Value, json};

const SBOM: &str = "application/vnd.berth.conformance.sbom.v1";
const SIG: &str = "application/vnd.berth.conformance.sig.v2";

/// A subject and the referrers pushed for it, with the descriptors the
/// referrers API must list for them.
struct Graph {
    subject: Manifest,
    /// (manifest, expected descriptor)
    referrers: Vec<(Manifest, Value)>,
}

/// The descriptor the API must list for `m`: media type, digest, size,
/// `artifactType` (the manifest's, else its config's media type for an image,
/// else none) and annotations.
fn expected_descriptor(m: &Manifest) -> Value {
    let v = m.value();
    let mut d = Map::new();
    d.insert("mediaType".into(), Value::from(m.media_type.clone()));
    d.insert("digest".into(), Value::from(m.digest.clone()));
    d.insert("size".into(), Value::from(m.body.len()));
    let artifact_type = match (&v["artifactType"], m.media_type.as_str()) {
        (Value::String(t), _) => Some(t.clone()),
        (_, OCI_MANIFEST) => v["config"]["mediaType"].as_str().map(str::to_owned),
        _ => None,
    };
    if let Some(t) = artifact_type {
        d.insert("artifactType".into(), Value::from(t));
    }
    if v["annotations"].is_object() {
        d.insert("annotations".into(), v["annotations"].clone());
    }
    Value::Object(d)
}

/// Pushes a subject image and five referrers: a plain image, two artifacts
/// (one annotated), an annotated index with an artifact type, and an index
/// without one.
async fn graph(t: &Target) -> Graph {
    let repo = t.repo();
    let subject = t.push_image(repo, "subject").await;
    let about = content::subject(&subject);
    let mut referrers = Vec::new();
    let mut push = async |v: Value, reference: Option<&str>| {
        let m = Manifest::new(v);
        t.push_manifest(repo, reference.unwrap_or(&m.digest), &m).await.expect_header("OCI-Subject", &subject.digest);
        let d = expected_descriptor(&m);
        referrers.push((m, d));
    };

    let mut image = t.image_value(repo, 1).await;
    image["subject"] = about.clone();
    push(image, None).await;

    let mut sbom = t.artifact_value(repo, SBOM).await;
    sbom["subject"] = about.clone();
    sbom["annotations"] =
        content::annotations(&[("org.opencontainers.conformance", "hello"), ("org.example.id", &t.unique())]);
    push(sbom, Some("sbom")).await;

    let mut sig = t.artifact_value(repo, SIG).await;
    sig["layers"][0]["mediaType"] = json!("application/octet-stream");
    sig["subject"] = about.clone();
    push(sig, None).await;

    let child = Manifest::new(t.artifact_value(repo, SBOM).await);
    t.push_manifest(repo, &child.digest, &child).await;
    let mut index = content::index(vec![content::manifest_descriptor(&child)]);
    index["artifactType"] = json!(SBOM);
    index["annotations"] = content::annotations(&[("org.example.kind", "bundle")]);
    index["subject"] = about.clone();
    push(index, None).await;

    let mut bare = content::index(vec![content::manifest_descriptor(&child)]);
    bare["subject"] = about.clone();
    bare["annotations"] = content::annotations(&[("org.example.unique", &t.unique())]);
    push(bare, None).await;

    Graph { subject, referrers }
}

async fn referrers(t: &Target, repo: &str, digest: &str, query: &str) -> Resp {
    send(t.get(&format!("/v2/{repo}/referrers/{digest}{query}"))).await
}

/// Asserts a referrers answer: 200, an OCI index, listing exactly `expected` in any order.
fn lists(r: &Resp, expected: &[&Value]) {
    r.expect_status(200);
    let v = r.json_as(OCI_INDEX);
    assert_eq!(v["schemaVersion"], json!(2), "{r}");
    assert_eq!(v["mediaType"], json!(OCI_INDEX), "{r}");
    let listed = v["manifests"].as_array().unwrap_or_else(|| panic!("no \"manifests\" array\n{r}"));
    assert_eq!(listed.len(), expected.len(), "number of referrers\n{r}");
    for want in expected {
        let got = listed
            .iter()
            .find(|d| d["digest"] == want["digest"])
            .unwrap_or_else(|| panic!("referrer {} missing\n{r}", want["digest"]));
        descriptor_matches(r, got, want);
    }
}

/// `got` has every field of `want` with its value, except that annotations
/// need only include `want`'s; it has no `artifactType` when `want` has none.
/// (Other fields, such as more annotations, are the registry's to add.)
fn descriptor_matches(r: &Resp, got: &Value, want: &Value) {
    let context = format!("descriptor of {}\n{r}", want["digest"]);
    for (key, value) in want.as_object().expect("descriptor") {
        if key == "annotations" {
            for (k, v) in value.as_object().expect("annotations") {
                assert_eq!(&got["annotations"][k], v, "annotation {k} of the {context}");
            }
        } else {
            assert_eq!(&got[key], value, "{key} of the {context}");
        }
    }
    if want.get("artifactType").is_none() {
        assert!(got.get("artifactType").is_none(), "an index without artifactType lists none: {context}");
    }
}

#[tokio::test]
async fn referrers_are_listed_with_their_descriptors() {
    let t = Target::new(here!()).await;
    let g = graph(&t).await;
    let expected: Vec<&Value> = g.referrers.iter().map(|(_, d)| d).collect();
    assert_eq!(expected[0]["artifactType"], json!(OCI_CONFIG));
    assert!(expected[4].get("artifactType").is_none());
    let r = referrers(&t, t.repo(), &g.subject.digest, "").await;
    lists(&r, &expected);
    r.expect_no_header("OCI-Filters-Applied");
}

#[tokio::test]
async fn artifact_type_filter_keeps_matching_referrers_and_says_so() {
    let t = Target::new(here!()).await;
    let g = graph(&t).await;
    let of_type = |ty: &str| -> Vec<&Value> {
        g.referrers.iter().map(|(_, d)| d).filter(|d| d["artifactType"] == json!(ty)).collect()
    };
    // `+` must be percent-encoded in a query (it decodes to a space); `/` need not be.
    for (ty, query) in [
        (SBOM, format!("?artifactType={}", SBOM.replace('/', "%2F"))),
        (SIG, format!("?artifactType={SIG}")),
        (OCI_CONFIG, format!("?artifactType={}", OCI_CONFIG.replace('/', "%2F").replace('+', "%2B"))),
    ] {
        let r = referrers(&t, t.repo(), &g.subject.digest, &query).await;
        lists(&r, &of_type(ty));
        assert!(r.header_values("OCI-Filters-Applied").contains(&"artifactType".to_owned()), "{r}");
    }
}

#[tokio::test]
async fn filter_matching_nothing_is_an_empty_index() {
    let t = Target::new(here!()).await;
    let g = graph(&t).await;
    let r = referrers(&t, t.repo(), &g.subject.digest, "?artifactType=application/vnd.nothing").await;
    lists(&r, &[]);
    assert!(r.header_values("OCI-Filters-Applied").contains(&"artifactType".to_owned()), "{r}");
}

#[tokio::test]
async fn unknown_subject_has_an_empty_index() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    lists(&referrers(&t, t.repo(), &sha256(&t.blob(16)), "").await, &[]);
}

#[tokio::test]
async fn unknown_repository_has_an_empty_index() {
    let t = Target::new(here!()).await;
    lists(&referrers(&t, t.repo(), &sha256(&t.blob(16)), "").await, &[]);
}

#[tokio::test]
async fn referrers_do_not_cross_repositories() {
    let t = Target::new(here!()).await;
    let g = graph(&t).await;
    let other = t.repo_at("other");
    let v = g.subject.value();
    for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().expect("layers")) {
        let digest = d["digest"].as_str().expect("digest");
        let r = send(t.post(&format!("/v2/{other}/blobs/uploads/?mount={digest}&from={}", t.repo()))).await;
        r.expect_status(201);
    }
    t.push_manifest(&other, "subject", &g.subject).await;
    lists(&referrers(&t, &other, &g.subject.digest, "").await, &[]);
}

#[tokio::test]
async fn deleted_referrer_is_no_longer_listed() {
    let t = Target::new(here!()).await;
    let g = graph(&t).await;
    let (gone, _) = &g.referrers[1];
    let r = send(t.delete(&format!("/v2/{}/manifests/{}", t.repo(), gone.digest))).await;
    r.expect_status(202);
    let rest: Vec<&Value> = g.referrers.iter().filter(|(m, _)| m.digest != gone.digest).map(|(_, d)| d).collect();
    lists(&referrers(&t, t.repo(), &g.subject.digest, "").await, &rest);
}

#[tokio::test]
async fn referrer_of_a_subject_never_pushed_is_listed() {
    let t = Target::new(here!()).await;
    let missing = content::absent_descriptor(OCI_MANIFEST, &t.unique(), 123);
    let mut v = t.artifact_value(t.repo(), SBOM).await;
    v["subject"] = missing.clone();
    let m = Manifest::new(v);
    t.push_manifest(t.repo(), "orphan", &m).await;
    let digest = missing["digest"].as_str().expect("digest");
    lists(&referrers(&t, t.repo(), digest, "").await, &[&expected_descriptor(&m)]);
}

#[tokio::test]
async fn malformed_subject_digest_is_400() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    assert_error(&referrers(&t, t.repo(), "sha256:baddigeststring", "").await, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn referrer_pushed_twice_is_listed_once() {
    let t = Target::new(here!()).await;
    let subject = t.push_image(t.repo(), "subject").await;
    let mut v = t.artifact_value(t.repo(), SBOM).await;
    v["subject"] = content::subject(&subject);
    let m = Manifest::new(v);
    t.push_manifest(t.repo(), &m.digest, &m).await;
    t.push_manifest(t.repo(), "tagged", &m).await;
    t.push_manifest(t.repo(), "tagged-again", &m).await;
    lists(&referrers(&t, t.repo(), &subject.digest, "").await, &[&expected_descriptor(&m)]);
}

#[tokio::test]
async fn untagging_a_referrer_keeps_it_listed() {
    let t = Target::new(here!()).await;
    let subject = t.push_image(t.repo(), "subject").await;
    let mut v = t.artifact_value(t.repo(), SBOM).await;
    v["subject"] = content::subject(&subject);
    let m = Manifest::new(v);
    t.push_manifest(t.repo(), "sbom", &m).await;
    send(t.delete(&format!("/v2/{}/manifests/sbom", t.repo()))).await.expect_status(202);
    lists(&referrers(&t, t.repo(), &subject.digest, "").await, &[&expected_descriptor(&m)]);
}
