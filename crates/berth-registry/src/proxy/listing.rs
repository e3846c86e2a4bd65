//! Tags and referrers of a cached repository: the upstream's, or the
//! cache's own when the upstream cannot answer.

use berth_meta::Referrer;
use berth_oci::Digest;

use super::{Route, serve_stale};
use crate::{Registry, RegistryError, Result};

impl Registry {
    /// [`Registry::list_tags`] for a repository of an upstream's namespace.
    pub(crate) async fn proxied_tags(&self, route: &Route, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>> {
        let upstream = &route.upstream;
        match upstream.client.list_tags(&route.remote).await {
            Ok(tags) => {
                berth_metrics::metrics().proxy_miss(&upstream.name, "tags");
                let mut tags: Vec<String> = tags.into_iter().map(|t| t.to_string()).collect();
                tags.sort();
                tags.dedup();
                let after = tags.iter().take_while(|t| last.is_some_and(|l| t.as_str() <= l)).count();
                let page = tags.into_iter().skip(after);
                Ok(match n {
                    Some(n) => page.take(n as usize).collect(),
                    None => page.collect(),
                })
            }
            Err(e) => {
                upstream.count_error(&e);
                if e.is_transient()
                    && let Some(tags) = self.meta().list_tags(&route.local, last, n).await?
                {
                    serve_stale(route, "tags", "tags", &e);
                    return Ok(tags);
                }
                Err(upstream.failure(&e, RegistryError::NameUnknown))
            }
        }
    }

    /// [`Registry::referrers`] for a repository of an upstream's namespace:
    /// the upstream's referrers API where it has one, else what is cached.
    pub(crate) async fn proxied_referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let upstream = &route.upstream;
        let local = || self.meta().referrers(&route.local, subject, artifact_type);
        match upstream.client.referrers(&route.remote, subject).await {
            Ok(Some(list)) => {
                berth_metrics::metrics().proxy_miss(&upstream.name, "referrers");
                let mut out: Vec<Referrer> = list
                    .into_iter()
                    .filter(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)))
                    .map(|r| Referrer {
                        digest: r.digest,
                        media_type: r.media_type,
                        size: r.size,
                        artifact_type: r.artifact_type,
                        annotations: r.annotations.and_then(|a| serde_json::to_string(&a).ok()),
                    })
                    .collect();
                out.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
                Ok(out)
            }
            // No referrers API upstream: what the cache holds.
            Ok(None) => {
                berth_metrics::metrics().proxy_hit(&upstream.name, "referrers");
                Ok(local().await?)
            }
            Err(e) => {
                upstream.count_error(&e);
                if e.is_transient() {
                    serve_stale(route, "referrers", subject.as_str(), &e);
                    return Ok(local().await?);
                }
                Err(upstream.failure(&e, RegistryError::ManifestUnknown))
            }
        }
    }
}
