//! Thin handlers: parse the request, call the registry service, set headers.

pub mod base;
pub mod blobs;
pub mod catalog;
pub mod gitea;
pub mod health;
pub mod json_api;
pub mod manifests;
pub mod referrers;
pub mod retention;
pub mod tags;
pub mod token;
pub mod uploads;
pub mod usage;

use std::borrow::Cow;

use axum::body::Body;
use axum::response::Response;
use http::header::InvalidHeaderValue;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::error::ApiError;

/// Builds a response with `status`, `headers` and `body`. The header map is
/// sized once, with room for the two headers the envelope adds (growing it
/// reallocates), and owned values become header values without a copy.
pub(crate) fn respond<V: HeaderText>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (HeaderName, V)>,
    body: Body,
) -> Result<Response, ApiError> {
    let headers = headers.into_iter();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.reserve(headers.size_hint().0 + 2);
    for (name, value) in headers {
        let v = value.into_value().map_err(|e| ApiError::Internal(format!("building header {name}: {e}")))?;
        map.append(name, v);
    }
    Ok(response)
}

/// A header value as handlers have it: text of their own, or a constant.
pub(crate) trait HeaderText {
    fn into_value(self) -> Result<HeaderValue, InvalidHeaderValue>;
}

impl HeaderText for String {
    fn into_value(self) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::try_from(self)
    }
}

impl HeaderText for &'static str {
    fn into_value(self) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::from_str(self)
    }
}

impl HeaderText for Cow<'static, str> {
    fn into_value(self) -> Result<HeaderValue, InvalidHeaderValue> {
        match self {
            Cow::Borrowed(s) => s.into_value(),
            Cow::Owned(s) => s.into_value(),
        }
    }
}

/// Query parameters as ordered pairs (keys may repeat, e.g. `tag=a&tag=b`).
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    match query {
        None | Some("") => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| ApiError::QueryInvalid(format!("bad query string: {e}"))),
    }
}

/// The first value of query parameter `key`.
pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The most entries one tag or catalog page holds, whatever `n` asks for:
/// a huge `n` must not buy a huge answer (CVE-2023-2253 in Distribution).
/// A longer list is paged with `Link` headers.
pub(crate) const MAX_PAGE: u32 = 10_000;

/// Pagination parameters `n` and `last` shared by tag and catalog lists.
pub(crate) struct Page {
    /// Entries to return: `n`, at most [`MAX_PAGE`] (also without `n`).
    pub limit: u32,
    pub last: Option<String>,
}

impl Page {
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let n = match query_get(pairs, "n") {
            None | Some("") => None,
            Some(v) => {
                Some(v.parse::<u32>().map_err(|_| ApiError::QueryInvalid("n must be a non-negative integer".into()))?)
            }
        };
        let last = query_get(pairs, "last").filter(|l| !l.is_empty()).map(str::to_owned);
        Ok(Page { limit: n.map_or(MAX_PAGE, |n| n.min(MAX_PAGE)), last })
    }

    /// `Link: <path?n=N&last=LAST>; rel="next"` when a full page was returned.
    pub fn next_link(&self, path: &str, items: &[String]) -> Option<String> {
        if self.limit == 0 || items.len() < self.limit as usize {
            return None;
        }
        let last = items.last()?;
        let q = serde_urlencoded::to_string([("n", self.limit.to_string()), ("last", last.clone())]).ok()?;
        Some(format!("<{path}?{q}>; rel=\"next\""))
    }
}
