//! Manifests, tags and referrers.

use berth_meta::{BlobRef, ManifestRecord, ManifestRef, NewManifest, Referrer};
use berth_oci::manifest;
use berth_oci::{Digest, Reference, RepositoryName, Tag};

use crate::webhooks::{Event, EventKind};
use crate::{Registry, RegistryError, Result, now_ms};

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The subject the manifest refers to (reported as `OCI-Subject`).
    pub subject: Option<Digest>,
    /// Every tag now pointing at the manifest (reported as `OCI-Tag`).
    pub tags: Vec<Tag>,
}

impl Registry {
    /// A manifest by tag or digest; `with_content` loads its bytes (GET vs
    /// HEAD). In an upstream's namespace, through the cache ([`crate::proxy`]).
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        with_content: bool,
    ) -> Result<ManifestRecord> {
        if let Some(route) = self.route(repo).await? {
            return self.proxied_manifest(&route, reference, with_content).await;
        }
        let r = match reference {
            Reference::Tag(t) => ManifestRef::Tag(t),
            Reference::Digest(d) => ManifestRef::Digest(d),
        };
        self.inner.meta.get_manifest(repo, &r, with_content).await?.ok_or(RegistryError::ManifestUnknown)
    }

    /// Stores a manifest pushed to `reference`, also tagging it with `extra_tags`
    /// (the `?tag=` parameters of a push by digest). `actor` is recorded as its pusher.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content: Vec<u8>,
        content_type: Option<&str>,
        extra_tags: Vec<Tag>,
        actor: Option<&str>,
    ) -> Result<PushedManifest> {
        self.refuse_upstream_writes(repo).await?;
        let policy = &self.inner.policy;
        if content.len() > policy.max_manifest_size {
            return Err(RegistryError::ManifestTooLarge {
                size: content.len() as u64,
                limit: policy.max_manifest_size,
            });
        }
        let parsed =
            manifest::parse(&content, content_type).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let (digest, mut tags) = match reference {
            Reference::Digest(d) => {
                let computed = Digest::of(d.algorithm(), &content);
                if &computed != d {
                    return Err(RegistryError::DigestMismatch { computed });
                }
                (d.clone(), Vec::new())
            }
            Reference::Tag(t) => (Digest::sha256_of(&content), vec![t.clone()]),
        };
        for t in extra_tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let annotations = parsed.annotations.as_ref().and_then(|a| serde_json::to_string(a).ok());
        let new = NewManifest {
            digest: digest.clone(),
            media_type: parsed.media_type,
            content,
            artifact_type: parsed.artifact_type,
            subject: subject.clone(),
            annotations,
            blobs: parsed.blobs.into_iter().map(|d| BlobRef { digest: d.digest, size: d.size }).collect(),
            manifests: parsed.manifests.into_iter().map(|d| d.digest).collect(),
            tags: tags.clone(),
            pushed_by: actor.map(str::to_owned),
            created_at: now_ms(),
        };
        let guard = |repo: &RepositoryName, tag: &str| policy.immutable_tags.rule_for(repo, tag);
        let stored = self.inner.meta.put_manifest(repo, &new, !policy.allow_sparse, &guard).await;
        self.explain(repo, actor, stored).await?;
        let event = |kind, tag: Option<&Tag>| Event {
            kind,
            repository: repo.to_string(),
            tag: tag.map(|t| t.to_string()),
            digest: Some(digest.to_string()),
            media_type: Some(new.media_type.clone()),
            size: Some(new.content.len() as u64),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            actor: actor.map(str::to_owned),
            message: None,
        };
        let mut events = vec![event(EventKind::Push, None)];
        events.extend(tags.iter().map(|t| event(EventKind::Tag, Some(t))));
        self.emit(events).await;
        Ok(PushedManifest { digest, subject, tags })
    }

    /// DELETE by digest removes the manifest (and its tags); by tag, only the tag.
    pub async fn delete_manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<()> {
        self.delete_manifest_as(repo, reference, None).await
    }

    /// [`Registry::delete_manifest`] on behalf of `actor` (reported to webhooks).
    pub async fn delete_manifest_as(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        actor: Option<&str>,
    ) -> Result<()> {
        let repo = &self.stored_name(repo).await?;
        let policy = &self.inner.policy;
        let guard = |repo: &RepositoryName, tag: &str| policy.immutable_tags.rule_for(repo, tag);
        let deleted = match reference {
            Reference::Digest(d) => self.inner.meta.delete_manifest(repo, d, &guard).await?,
            Reference::Tag(t) => self.inner.meta.delete_tag(repo, t, &guard).await?,
        };
        if !deleted {
            return Err(RegistryError::ManifestUnknown);
        }
        let (tag, digest) = match reference {
            Reference::Tag(t) => (Some(t.to_string()), None),
            Reference::Digest(d) => (None, Some(d.to_string())),
        };
        let event = Event {
            kind: EventKind::Delete,
            repository: repo.to_string(),
            tag,
            digest,
            media_type: None,
            size: None,
            tags: Vec::new(),
            actor: actor.map(str::to_owned),
            message: None,
        };
        self.emit(vec![event]).await;
        Ok(())
    }

    /// Tags in lexical order strictly after `last`, at most `n`.
    pub async fn list_tags(&self, repo: &RepositoryName, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>> {
        if let Some(route) = self.route(repo).await? {
            return self.proxied_tags(&route, last, n).await;
        }
        self.inner.meta.list_tags(repo, last, n).await?.ok_or(RegistryError::NameUnknown)
    }

    /// Manifests whose subject is `subject`, optionally of one artifact type.
    /// An unknown subject or repository has no referrers (not an error).
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        if let Some(route) = self.route(repo).await? {
            return self.proxied_referrers(&route, subject, artifact_type).await;
        }
        Ok(self.inner.meta.referrers(repo, subject, artifact_type).await?)
    }
}
