//! Manifests through the cache: by tag with revalidation, by digest once.

use berth_meta::{BlobRef, ManifestRecord, ManifestRef, NewManifest};
use berth_oci::{Digest, Reference, Tag, manifest};
use berth_upstream::Manifest;

use super::{Failed, Route, serve_stale};
use crate::{Registry, RegistryError, Result, now_ms};

const KIND: &str = "manifest";

impl Registry {
    /// [`Registry::get_manifest`] for a repository of an upstream's namespace.
    pub(crate) async fn proxied_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        with_content: bool,
    ) -> Result<ManifestRecord> {
        let local = &route.local;
        let upstream = &route.upstream;
        let metrics = berth_metrics::metrics();
        match reference {
            Reference::Digest(d) => {
                if let Some(m) = self.meta().get_manifest(local, &ManifestRef::Digest(d), with_content).await? {
                    metrics.proxy_hit(&upstream.name, KIND);
                    self.record_pull(route);
                    return Ok(m);
                }
                metrics.proxy_miss(&upstream.name, KIND);
                let fetched = self.manifest_flight(route, reference).await;
                let digest = fetched.map_err(|f| f.into_error(upstream, RegistryError::ManifestUnknown))?;
                self.local_manifest(route, &digest, with_content).await
            }
            Reference::Tag(tag) => {
                let cached = self.meta().get_manifest(local, &ManifestRef::Tag(tag), with_content).await?;
                if let Some(m) = &cached {
                    let check = self.meta().tag_check(local, tag).await?;
                    let age = check.as_ref().filter(|c| c.digest == m.digest).map(|c| now_ms() - c.checked_at);
                    let fresh = i64::try_from(upstream.revalidate_after.as_millis()).unwrap_or(i64::MAX);
                    if age.is_some_and(|a| a < fresh) {
                        metrics.proxy_hit(&upstream.name, KIND);
                        self.record_pull(route);
                        return Ok(m.clone());
                    }
                }
                metrics.proxy_miss(&upstream.name, KIND);
                match self.manifest_flight(route, reference).await {
                    Ok(digest) => self.local_manifest(route, &digest, with_content).await,
                    Err(f) => match (f.transient(), cached) {
                        (Some(e), Some(m)) => {
                            serve_stale(route, KIND, tag.as_str(), e);
                            self.record_pull(route);
                            Ok(m)
                        }
                        _ => Err(f.into_error(upstream, RegistryError::ManifestUnknown)),
                    },
                }
            }
        }
    }

    /// The manifest just fetched or confirmed, from the cache.
    async fn local_manifest(&self, route: &Route, digest: &Digest, with_content: bool) -> Result<ManifestRecord> {
        self.record_pull(route);
        self.meta()
            .get_manifest(&route.local, &ManifestRef::Digest(digest), with_content)
            .await?
            .ok_or(RegistryError::ManifestUnknown)
    }

    /// Asks the upstream about `reference` once for all concurrent callers
    /// (see [`super::flight`]); the digest it now has, stored locally.
    async fn manifest_flight(&self, route: &Route, reference: &Reference) -> std::result::Result<Digest, Failed> {
        let Some(proxy) = self.inner.proxy.as_ref() else {
            return Err(Failed::Local(RegistryError::Internal("no upstreams configured".into())));
        };
        let key = (route.local.clone(), reference.to_string());
        let (registry, route2, reference2) = (self.clone(), route.clone(), reference.clone());
        let work = async move { registry.refresh_manifest(&route2, &reference2).await };
        proxy
            .manifests
            .run(key, work)
            .await
            .unwrap_or_else(|| Err(Failed::Local(RegistryError::Internal("manifest fetch panicked".into()))))
    }

    /// The upstream's manifest for `reference`, stored (byte for byte) if
    /// new, and for a tag, the tag pointed at it and its check recorded.
    async fn refresh_manifest(&self, route: &Route, reference: &Reference) -> std::result::Result<Digest, Failed> {
        let (client, remote, local) = (&route.upstream.client, &route.remote, &route.local);
        let upstream_failed = |e: berth_upstream::UpstreamError| {
            route.upstream.count_error(&e);
            Failed::Upstream(e)
        };
        let tag = match reference {
            Reference::Digest(_) => {
                let m = client.get_manifest(remote, reference, &[]).await.map_err(upstream_failed)?;
                self.store_manifest(route, &m, None).await?;
                return Ok(m.digest);
            }
            Reference::Tag(t) => t,
        };
        let cached = self.meta().get_manifest(local, &ManifestRef::Tag(tag), false).await?;
        let digest = match cached {
            // Never cached: one GET says everything a HEAD would.
            None => {
                let m = client.get_manifest(remote, reference, &[]).await.map_err(upstream_failed)?;
                self.store_manifest(route, &m, Some(tag)).await?;
                m.digest
            }
            Some(cached) => {
                let head = client.head_manifest(remote, reference).await.map_err(upstream_failed)?;
                match self.move_tag(route, tag, &cached.digest, &head.digest).await {
                    Err(Failed::Local(RegistryError::ImmutableTag { rule, .. })) => {
                        // The operator pinned it: keep serving what is cached.
                        tracing::warn!(upstream = %route.upstream.name, repository = %local, %tag, %rule,
                            upstream_digest = %head.digest, "cached tag moved upstream but is immutable here; kept");
                        cached.digest
                    }
                    moved => {
                        moved?;
                        head.digest
                    }
                }
            }
        };
        self.meta().record_tag_check(local, &route.upstream.name, tag, &digest, now_ms()).await?;
        Ok(digest)
    }

    /// Points the cached `tag` (at `from`) at `digest`: the manifest is
    /// fetched unless it is already cached (an index's child, say), then
    /// stored with the tag.
    async fn move_tag(
        &self,
        route: &Route,
        tag: &Tag,
        from: &Digest,
        digest: &Digest,
    ) -> std::result::Result<(), Failed> {
        if from == digest {
            return Ok(());
        }
        let known = self.meta().get_manifest(&route.local, &ManifestRef::Digest(digest), true).await?;
        let m = match known {
            Some(r) => Manifest { bytes: r.content.into(), media_type: r.media_type, digest: r.digest },
            None => {
                let by_digest = Reference::Digest(digest.clone());
                route.upstream.client.get_manifest(&route.remote, &by_digest, &[]).await.map_err(|e| {
                    route.upstream.count_error(&e);
                    Failed::Upstream(e)
                })?
            }
        };
        tracing::info!(upstream = %route.upstream.name, repository = %route.local, %tag, %digest, "cached tag moved upstream");
        self.store_manifest(route, &m, Some(tag)).await
    }

    /// Stores an upstream manifest exactly as received, without reference
    /// checks (its blobs and children come when asked for), optionally tagged.
    async fn store_manifest(&self, route: &Route, m: &Manifest, tag: Option<&Tag>) -> std::result::Result<(), Failed> {
        let invalid = |detail: String| {
            let e = RegistryError::UpstreamInvalid {
                upstream: route.upstream.name.clone(),
                detail: format!("upstream {:?}: manifest {}@{}: {detail}", route.upstream.name, route.remote, m.digest),
            };
            tracing::warn!(upstream = %route.upstream.name, repository = %route.remote, digest = %m.digest, %detail,
                "unusable manifest from the upstream; nothing stored");
            berth_metrics::metrics().proxy_upstream_error(&route.upstream.name, "invalid".into());
            Failed::Local(e)
        };
        if m.bytes.len() > self.policy().max_manifest_size {
            return Err(invalid(format!(
                "{} bytes, over the limit of {}",
                m.bytes.len(),
                self.policy().max_manifest_size
            )));
        }
        if Digest::of(m.digest.algorithm(), &m.bytes) != m.digest {
            return Err(invalid("the bytes do not hash to the digest".into()));
        }
        let parsed = manifest::parse(&m.bytes, Some(&m.media_type)).map_err(|e| invalid(e.to_string()))?;
        let new = NewManifest {
            digest: m.digest.clone(),
            media_type: parsed.media_type,
            content: m.bytes.to_vec(),
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.map(|s| s.digest),
            annotations: parsed.annotations.as_ref().and_then(|a| serde_json::to_string(a).ok()),
            blobs: parsed.blobs.into_iter().map(|d| BlobRef { digest: d.digest, size: d.size }).collect(),
            manifests: parsed.manifests.into_iter().map(|d| d.digest).collect(),
            tags: tag.into_iter().cloned().collect(),
            pushed_by: None,
            created_at: now_ms(),
        };
        let policy = self.policy();
        let guard = |repo: &berth_oci::RepositoryName, tag: &str| policy.immutable_tags.rule_for(repo, tag);
        let stored = self.meta().put_manifest(&route.local, &new, false, &guard).await;
        self.explain(&route.local, None, stored).await?;
        Ok(())
    }
}
