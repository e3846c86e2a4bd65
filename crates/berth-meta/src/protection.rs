//! Deciding whether content may be deleted, from the manifests above it.
//!
//! Backends find, in the transaction that deletes, every manifest of the
//! repository that reaches the content (directly, or through indexes, with
//! a recursive query over `manifest_references`) together with its tags.
//! The immutability rules are the registry's, applied here through the
//! [`TagGuard`], so both backends refuse alike and name the same tag.

use berth_oci::{Digest, RepositoryName};

use crate::{MetaError, Result, TagGuard};

/// A manifest reaching the content being deleted, with one of its tags
/// (`None`: a row for an untagged manifest). A manifest with several tags
/// comes as several holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub manifest: String,
    pub tag: Option<String>,
    /// It references the content itself (not only through an index).
    pub direct: bool,
}

/// Why deleting manifest `digest` must be refused, if it must: one of its
/// own tags is protected ([`MetaError::ImmutableTag`]), or a protected tag
/// reaches it through an index ([`MetaError::Protected`]). `holders`
/// include the manifest itself. Tags are tried in byte order, so the
/// answer does not depend on row order.
pub fn manifest_refusal(
    repo: &RepositoryName,
    digest: &Digest,
    holders: &[Holder],
    guard: TagGuard<'_>,
) -> Option<MetaError> {
    let mut own: Vec<&str> =
        holders.iter().filter(|h| h.manifest == digest.as_str()).filter_map(|h| h.tag.as_deref()).collect();
    own.sort_unstable();
    for tag in own {
        if let Some(rule) = guard(repo, tag) {
            return Some(MetaError::ImmutableTag { tag: tag.to_owned(), rule });
        }
    }
    let above: Vec<&Holder> = holders.iter().filter(|h| h.manifest != digest.as_str()).collect();
    protected(repo, digest, &above, guard)
}

/// Why unlinking blob `digest` must be refused, if it must: a protected tag
/// reaches it ([`MetaError::Protected`]), or else any manifest references
/// it at all ([`MetaError::Referenced`], naming the first direct referrer
/// in byte order).
pub fn blob_refusal(
    repo: &RepositoryName,
    digest: &Digest,
    holders: &[Holder],
    guard: TagGuard<'_>,
) -> Result<Option<MetaError>> {
    let all: Vec<&Holder> = holders.iter().collect();
    if let Some(refusal) = protected(repo, digest, &all, guard) {
        return Ok(Some(refusal));
    }
    let Some(by) = holders.iter().filter(|h| h.direct).map(|h| h.manifest.as_str()).min() else {
        return Ok(None);
    };
    let by = Digest::parse(by).map_err(|e| MetaError::Backend(format!("stored manifest digest {by:?}: {e}")))?;
    Ok(Some(MetaError::Referenced { digest: digest.clone(), by }))
}

/// The first protected tag among `holders`, by tag name, as a refusal.
fn protected(repo: &RepositoryName, digest: &Digest, holders: &[&Holder], guard: TagGuard<'_>) -> Option<MetaError> {
    let mut tags: Vec<&str> = holders.iter().filter_map(|h| h.tag.as_deref()).collect();
    tags.sort_unstable();
    tags.dedup();
    tags.into_iter().find_map(|tag| {
        guard(repo, tag).map(|rule| MetaError::Protected {
            digest: digest.clone(),
            repository: repo.to_string(),
            tag: tag.to_owned(),
            rule,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::no_guard;

    fn holder(seed: &str, tag: Option<&str>, direct: bool) -> Holder {
        Holder { manifest: Digest::sha256_of(seed.as_bytes()).to_string(), tag: tag.map(str::to_owned), direct }
    }

    fn releases(_: &RepositoryName, tag: &str) -> Option<String> {
        tag.starts_with('v').then(|| "v*".to_owned())
    }

    #[test]
    fn blobs_name_the_first_protected_tag_else_the_first_direct_referrer() {
        let repo = RepositoryName::parse("acme/app").unwrap();
        let layer = Digest::sha256_of(b"layer");
        let holders = [
            holder("b", None, true),
            holder("a", Some("latest"), true),
            holder("idx", Some("v2"), false),
            holder("idx", Some("v1"), false),
        ];
        let refusal = blob_refusal(&repo, &layer, &holders, &releases).unwrap();
        assert!(matches!(refusal, Some(MetaError::Protected { ref tag, ref rule, .. }) if tag == "v1" && rule == "v*"));
        let refusal = blob_refusal(&repo, &layer, &holders, &no_guard).unwrap();
        let first =
            [Digest::sha256_of(b"a"), Digest::sha256_of(b"b")].into_iter().min_by(|x, y| x.as_str().cmp(y.as_str()));
        assert!(matches!(refusal, Some(MetaError::Referenced { ref by, .. }) if Some(by) == first.as_ref()));
        assert!(blob_refusal(&repo, &layer, &[], &releases).unwrap().is_none());
    }

    #[test]
    fn a_manifest_is_refused_for_its_own_tag_before_an_ancestor_tag() {
        let repo = RepositoryName::parse("acme/app").unwrap();
        let child = Digest::sha256_of(b"child");
        let mut holders = vec![holder("child", None, false), holder("idx", Some("v1"), false)];
        assert!(matches!(manifest_refusal(&repo, &child, &holders, &releases), Some(MetaError::Protected { .. })));
        assert!(manifest_refusal(&repo, &child, &holders, &no_guard).is_none());
        holders.push(holder("child", Some("v9"), false));
        assert!(matches!(
            manifest_refusal(&repo, &child, &holders, &releases),
            Some(MetaError::ImmutableTag { ref tag, .. }) if tag == "v9"
        ));
    }
}
