//! Gitea's own API, for what the registry protocol cannot say: which
//! container repositories an owner has when `/v2/_catalog` is refused, and
//! which owners (the user and its organizations) the credentials reach.
//!
//! - `GET /api/v1/user`: the signed-in user (`login`).
//! - `GET /api/v1/user/orgs?page=&limit=`: its organizations (`username`,
//!   or `name` on older versions).
//! - `GET /api/v1/packages/{owner}?type=container&page=&limit=`: one entry
//!   per version (tag or digest) with the image `name` (without the owner).
//!
//! Unlike the registry protocol, this API does not challenge an anonymous
//! caller: it answers as for a visitor (public packages only, or 404). So
//! the configured credentials go up front, as Basic, to the registry's own
//! origin only (redirects elsewhere go without them). Pages are walked by
//! number until a short or empty page, or `X-Total-Count`.

use std::collections::BTreeSet;

use berth_oci::RepositoryName;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde::Deserialize;

use crate::client::{Auth, Call, UpstreamClient};
use crate::error::UpstreamError;
use crate::listing::{MAX_ENTRIES, MAX_PAGES};

/// Entries asked for per page (Gitea's default maximum).
pub const GITEA_PAGE_LIMIT: usize = 50;
const MAX_API_BODY: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Org {
    username: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
}

impl UpstreamClient {
    /// `<base>/api/v1/<segments...>`, each segment escaped.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url().clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) base URLs have paths");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    /// One GET of Gitea's API, with the credentials up front: the body.
    async fn api_get(&self, url: Url, what: &str) -> Result<(HeaderMap, bytes::Bytes), UpstreamError> {
        let call = Call {
            method: Method::GET,
            url,
            accept: Some("application/json".into()),
            scope: String::new(),
            what: what.to_owned(),
        };
        let auth = self.inner.basic.is_some().then_some(Auth::Basic);
        let resp = self.execute(&call, auth.as_ref()).await?;
        let resp = self.check(resp, what).await?;
        let headers = resp.headers().clone();
        let body = self.read_limited(resp, MAX_API_BODY, what).await?;
        Ok((headers, body))
    }

    /// Every page of a paginated Gitea list, parsed as `T`.
    async fn api_pages<T: for<'de> Deserialize<'de>>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<T>, UpstreamError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.api_url(segments);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in query {
                    q.append_pair(k, v);
                }
                q.append_pair("page", &page.to_string()).append_pair("limit", &GITEA_PAGE_LIMIT.to_string());
            }
            let (headers, body) = self.api_get(url, what).await?;
            let items: Vec<T> = serde_json::from_slice(&body)
                .map_err(|e| self.invalid(what, format!("page {page} is not the expected JSON list: {e}")))?;
            let n = items.len();
            all.extend(items);
            let total =
                headers.get("x-total-count").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
            if all.len() > MAX_ENTRIES {
                return Err(self.invalid(what, format!("more than {MAX_ENTRIES} entries")));
            }
            if n == 0 || n < GITEA_PAGE_LIMIT || total.is_some_and(|t| all.len() >= t) {
                return Ok(all);
            }
        }
        Err(self.invalid(what, format!("more than {MAX_PAGES} pages")))
    }

    /// The login of the user the credentials belong to (`GET /api/v1/user`).
    pub async fn gitea_user(&self) -> Result<String, UpstreamError> {
        let what = "signed-in user (Gitea API)";
        let (_, body) = self.api_get(self.api_url(&["user"]), what).await?;
        let user: User =
            serde_json::from_slice(&body).map_err(|e| self.invalid(what, format!("not a Gitea user: {e}")))?;
        Ok(user.login)
    }

    /// The organizations of the signed-in user (`GET /api/v1/user/orgs`).
    pub async fn gitea_orgs(&self) -> Result<Vec<String>, UpstreamError> {
        let orgs: Vec<Org> = self.api_pages(&["user", "orgs"], &[], "organizations (Gitea API)").await?;
        Ok(orgs.into_iter().filter_map(|o| o.username.filter(|n| !n.is_empty()).or(o.name)).collect())
    }

    /// The container repositories of `owner`, from its package versions
    /// (`GET /api/v1/packages/{owner}?type=container`), sorted, each once.
    /// Names that are not valid repository names are skipped with a warning.
    pub async fn gitea_container_repositories(&self, owner: &str) -> Result<Vec<RepositoryName>, UpstreamError> {
        let what = format!("container packages of {owner} (Gitea API)");
        let packages: Vec<Package> = self.api_pages(&["packages", owner], &[("type", "container")], &what).await?;
        let names: BTreeSet<String> = packages.into_iter().map(|p| format!("{owner}/{}", p.name)).collect();
        Ok(names
            .into_iter()
            .filter_map(|n| {
                let parsed = RepositoryName::parse(&n).ok();
                if parsed.is_none() {
                    let n = crate::error::clean_text(&n, 200);
                    tracing::warn!(upstream = %self.origin(), entry = %n, "skipping an invalid package name");
                }
                parsed
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::{UpstreamClient, UpstreamSettings};

    #[test]
    fn api_urls_keep_the_base_path_and_escape_segments() {
        let c = UpstreamClient::new(UpstreamSettings::new("g", "https://git.example.com/gitea/")).unwrap();
        assert_eq!(c.api_url(&["packages", "acme"]).as_str(), "https://git.example.com/gitea/api/v1/packages/acme");
        assert_eq!(c.api_url(&["packages", "a/b"]).as_str(), "https://git.example.com/gitea/api/v1/packages/a%2Fb");
        let c = UpstreamClient::new(UpstreamSettings::new("g", "http://127.0.0.1:3000")).unwrap();
        assert_eq!(c.api_url(&["user", "orgs"]).as_str(), "http://127.0.0.1:3000/api/v1/user/orgs");
    }
}
