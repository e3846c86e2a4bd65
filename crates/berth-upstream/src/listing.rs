//! Listings: tags, the catalog and referrers, following `Link` pagination
//! (same registry only, no loops, bounded).

use std::collections::{BTreeMap, HashSet};

use berth_oci::media_type as mt;
use berth_oci::{Digest, RepositoryName, Tag};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::client::{Call, UpstreamClient, url_for_humans};
use crate::error::UpstreamError;
use crate::manifest::pull_scope;

/// Pages followed for one listing before it is refused.
pub const MAX_PAGES: usize = 10_000;
/// Entries gathered for one listing before it is refused.
pub const MAX_ENTRIES: usize = 1_000_000;
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// One manifest that refers to another (a signature, an SBOM, an attestation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referrer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct TagPage {
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CatalogPage {
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ReferrersPage {
    manifests: Option<Vec<serde_json::Value>>,
}

impl UpstreamClient {
    /// Every tag of `repo`, across pages. Entries that are not valid tags
    /// are skipped with a warning.
    pub async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>, UpstreamError> {
        let what = format!("tags of {repo}");
        let url = self.with_page_size(self.endpoint(&format!("{repo}/tags/list")));
        let call = Call { method: Method::GET, url, accept: None, scope: pull_scope(repo), what };
        let mut tags = Vec::new();
        self.pages(call, false, |page| {
            let page: TagPage = serde_json::from_slice(page).map_err(|e| format!("tag list is not JSON: {e}"))?;
            tags.extend(page.tags.unwrap_or_default().into_iter().filter_map(|t| self.valid(Tag::parse(&t).ok(), &t)));
            Ok(tags.len())
        })
        .await?;
        Ok(tags)
    }

    /// Every repository the upstream lists in `/v2/_catalog`, across pages.
    pub async fn catalog(&self) -> Result<Vec<RepositoryName>, UpstreamError> {
        let url = self.with_page_size(self.endpoint("_catalog"));
        let call =
            Call { method: Method::GET, url, accept: None, scope: "registry:catalog:*".into(), what: "catalog".into() };
        let mut names = Vec::new();
        self.pages(call, false, |page| {
            let page: CatalogPage = serde_json::from_slice(page).map_err(|e| format!("catalog is not JSON: {e}"))?;
            let valid = page.repositories.unwrap_or_default().into_iter();
            names.extend(valid.filter_map(|n| self.valid(RepositoryName::parse(&n).ok(), &n)));
            Ok(names.len())
        })
        .await?;
        Ok(names)
    }

    /// The manifests that name `digest` as their subject, from the
    /// referrers API; `None` when the upstream does not have that API (404).
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<Referrer>>, UpstreamError> {
        let call = Call {
            method: Method::GET,
            url: self.endpoint(&format!("{repo}/referrers/{digest}")),
            accept: Some(mt::OCI_INDEX.to_owned()),
            scope: pull_scope(repo),
            what: format!("referrers of {repo}@{digest}"),
        };
        let mut referrers = Vec::new();
        let found = self
            .pages(call, true, |page| {
                let page: ReferrersPage =
                    serde_json::from_slice(page).map_err(|e| format!("referrers answer is not an index: {e}"))?;
                for m in page.manifests.unwrap_or_default() {
                    let text = m.to_string();
                    let r = serde_json::from_value::<Referrer>(m).ok();
                    referrers.extend(self.valid(r, &text));
                }
                Ok(referrers.len())
            })
            .await?;
        Ok(found.then_some(referrers))
    }

    fn with_page_size(&self, mut url: Url) -> Url {
        if let Some(n) = self.inner.page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        url
    }

    fn valid<T>(&self, parsed: Option<T>, raw: &str) -> Option<T> {
        if parsed.is_none() {
            let raw = crate::error::clean_text(raw, 200);
            tracing::warn!(upstream = %self.origin(), entry = %raw, "skipping an invalid listing entry");
        }
        parsed
    }

    /// Fetches `call` and each `rel="next"` page after it, handing each body
    /// to `on_page` (which returns the entries gathered so far). With
    /// `missing_ok`, a 404 on the first page returns `false`.
    async fn pages(
        &self,
        mut call: Call,
        missing_ok: bool,
        mut on_page: impl FnMut(&[u8]) -> Result<usize, String>,
    ) -> Result<bool, UpstreamError> {
        let mut seen = HashSet::new();
        for page in 0.. {
            let resp = self.send(&call).await?;
            if missing_ok && page == 0 && resp.status() == StatusCode::NOT_FOUND {
                return Ok(false);
            }
            let resp = self.check(resp, &call.what).await?;
            let next = next_link(resp.headers(), resp.url());
            let body = self.read_limited(resp, MAX_PAGE_BYTES, &call.what).await?;
            let entries = on_page(&body).map_err(|e| self.invalid(&call.what, e))?;
            if entries > MAX_ENTRIES {
                return Err(self.invalid(&call.what, format!("more than {MAX_ENTRIES} entries")));
            }
            let Some(next) = next else { return Ok(true) };
            if !self.is_registry(&next) {
                let to = url_for_humans(&next);
                return Err(self.invalid(&call.what, format!("pagination Link leads off the registry, to {to}")));
            }
            if !seen.insert(next.clone()) || page + 1 >= MAX_PAGES {
                return Err(self.invalid(&call.what, "pagination Links loop or never end"));
            }
            call.url = next;
        }
        unreachable!("the page loop only ends by returning")
    }
}

/// The `rel="next"` target among the `Link` header values, resolved against
/// the page's URL (Distribution sends a path, others a full URL).
pub(crate) fn next_link(headers: &HeaderMap, current: &Url) -> Option<Url> {
    for value in headers.get_all(header::LINK) {
        let Ok(mut rest) = value.to_str() else { continue };
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if !rest.starts_with('<') {
                break;
            }
            let Some(end) = rest.find('>') else { break };
            let target = &rest[1..end];
            rest = &rest[end + 1..];
            let mut in_quotes = false;
            let params_end = rest
                .char_indices()
                .find(|&(_, c)| {
                    if c == '"' {
                        in_quotes = !in_quotes;
                    }
                    c == ',' && !in_quotes
                })
                .map_or(rest.len(), |(i, _)| i);
            let params = &rest[..params_end];
            rest = &rest[params_end..];
            let is_next = params.split(';').any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return current.join(target).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn link(values: &[&'static str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::LINK, HeaderValue::from_static(v));
        }
        let current = Url::parse("http://r:5000/v2/_catalog?n=2").unwrap();
        next_link(&h, &current).map(|u| u.to_string())
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            link(&[r#"</v2/_catalog?last=b&n=2>; rel="next""#]).as_deref(),
            Some("http://r:5000/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            link(&[r#"<https://x/a?p=1,2>; rel="prev", <https://r/v2/t?last=z>; rel=next"#]).as_deref(),
            Some("https://r/v2/t?last=z")
        );
        assert_eq!(
            link(&[r#"<a>; rel="prev""#, r#"<b>; title="x, y"; rel="first next""#]).as_deref(),
            Some("http://r:5000/v2/b")
        );
        assert_eq!(link(&[r#"<a>; rel="prev""#]), None);
        assert_eq!(link(&["garbage", "<unterminated; rel=next"]), None);
    }

    #[test]
    fn referrer_entries() {
        let d = Digest::sha256_of(b"x");
        let json = format!(
            r#"{{"mediaType":"{}","digest":"{d}","size":3,"artifactType":"application/spdx+json"}}"#,
            mt::OCI_MANIFEST
        );
        let r: Referrer = serde_json::from_str(&json).unwrap();
        assert_eq!(r.artifact_type.as_deref(), Some("application/spdx+json"));
        assert!(serde_json::from_str::<Referrer>(r#"{"mediaType":"x","digest":"bad","size":1}"#).is_err());
    }
}
