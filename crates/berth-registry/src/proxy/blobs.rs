//! Blobs through the cache: served from the store when cached, else from
//! the one shared fetch (see [`super::fetch`]).

use berth_blob::BlobBody;
use berth_oci::Digest;

use super::Route;
use crate::blobs::{BlobContent, BlobStat, RangeSpec};
use crate::{Registry, RegistryError, Result};

const KIND: &str = "blob";

impl Registry {
    /// [`Registry::stat_blob`] for a repository of an upstream's namespace.
    /// An uncached blob's fetch starts (it goes on after the answer), and
    /// the size comes from the upstream's answer.
    pub(crate) async fn proxied_stat(
        &self,
        route: &Route,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobStat> {
        if self.cache_holds(route, digest).await? {
            return self.stat_local(&route.local, digest, range).await;
        }
        let (fetch, _) = self.blob_fetch(route, digest, false).ok_or(RegistryError::BlobUnknown)?;
        let size = fetch.size().await.map_err(|f| f.into_error(&route.upstream, RegistryError::BlobUnknown))?;
        resolve(size, range)
    }

    /// [`Registry::read_blob`] for a repository of an upstream's namespace:
    /// an uncached blob streams from its fetch while it is stored (a range
    /// of one is served once it is stored).
    pub(crate) async fn proxied_read(
        &self,
        route: &Route,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobContent> {
        if self.cache_holds(route, digest).await? {
            return self.read_local(&route.local, digest, range).await;
        }
        let (fetch, reader) = self.blob_fetch(route, digest, range.is_none()).ok_or(RegistryError::BlobUnknown)?;
        let failed = |f: super::Failed| f.into_error(&route.upstream, RegistryError::BlobUnknown);
        let Some(reader) = reader else {
            // A range: served once the blob is stored.
            fetch.outcome().await.map_err(failed)?;
            return self.read_local(&route.local, digest, range).await;
        };
        let size = fetch.size().await.map_err(failed)?;
        berth_metrics::metrics().bytes_pulled.inc_by(size);
        let body = reader.into_stream(self.blob_store().clone(), digest.clone());
        Ok(BlobContent { stat: BlobStat { size, range: None }, body: BlobBody::Stream(body) })
    }

    /// Whether the cached repository holds the blob (linked and whole), or
    /// can link it at once: a manifest cached there references it and some
    /// other repository holds the same bytes. Counts a hit or a miss.
    async fn cache_holds(&self, route: &Route, digest: &Digest) -> Result<bool> {
        let m = berth_metrics::metrics();
        let local = &route.local;
        let held = match self.meta().blob_entry(local, digest).await? {
            // A blob scrub found damaged is fetched again, which repairs it.
            Some(entry) => entry.damage.is_none(),
            None => {
                self.meta().references(local, digest).await? && self.mount_blob(local, digest, None).await?.is_some()
            }
        };
        if held {
            m.proxy_hit(&route.upstream.name, KIND);
            self.record_pull(route);
        } else {
            m.proxy_miss(&route.upstream.name, KIND);
        }
        Ok(held)
    }
}

fn resolve(size: u64, range: Option<RangeSpec>) -> Result<BlobStat> {
    let range = match range {
        None => None,
        Some(r) => Some(r.resolve(size).ok_or(RegistryError::BlobRangeNotSatisfiable { size })?),
    };
    Ok(BlobStat { size, range })
}
