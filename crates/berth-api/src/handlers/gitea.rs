//! The Gitea-compatible package API, so scripts written against Gitea's
//! `/api/v1/packages/...` work with only the host changed:
//!
//! - `GET /api/v1/packages/{owner}?type=container[&q=&page=&limit=]`
//! - `GET` / `DELETE /api/v1/packages/{owner}/container/{name}/{version}`
//!   (`{name}` may contain `/`, usually URL-encoded as `%2F`).
//!
//! Credentials: `Authorization: token <PAT>`, `Bearer <PAT>` or Basic.
//! Errors use Gitea's `{"message": ...}` shape. The rules are the registry's:
//! listing shows only versions of repositories the caller may pull, deleting
//! needs the delete right and honours immutable tags.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::{Actions, OwnerRecord};
use berth_oci::{Digest, RepositoryName};
use berth_registry::PackageVersionRecord;
use http::header::{CONTENT_TYPE, LINK};
use http::request::Parts;
use http::{HeaderName, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use super::json_api::{auth_error, caller, may, rfc3339};
use super::{query_get, query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, base_url};
use crate::error::json::JsonError;

/// What must be escaped in a path segment of `html_url` (names keep `-`, `.`, `_`).
const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'/').add(b'%').add(b'?').add(b'#').add(b'"').add(b'<').add(b'>');
const DEFAULT_LIMIT: usize = 30;
const MAX_LIMIT: usize = 50;
const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");
const EXPOSE: HeaderName = HeaderName::from_static("access-control-expose-headers");
const NOT_FOUND: JsonError = JsonError::NotFound("package does not exist");
const FORBIDDEN: JsonError = JsonError::Forbidden("token does not have the required package scope");

/// Gitea's user object, as much of it as Berth knows.
fn user_json(id: i64, login: &str, created_ms: i64, public: bool) -> Value {
    json!({
        "id": id,
        "login": login,
        "login_name": "",
        "username": login,
        "full_name": "",
        "email": "",
        "avatar_url": "",
        "visibility": if public { "public" } else { "private" },
        "created": rfc3339(created_ms),
    })
}

/// Gitea's placeholder for an unknown or deleted user.
fn ghost() -> Value {
    user_json(-1, "Ghost", 0, false)
}

/// A stable numeric id per (repository, version), safe as a JSON number.
fn version_id(v: &PackageVersionRecord) -> u64 {
    let d = Digest::sha256_of(format!("{}:{}", v.repository, v.version).as_bytes());
    u64::from_str_radix(&d.hex()[..12], 16).unwrap_or(0)
}

/// Builds entries, looking each owner and creator up once.
struct Entries<'a> {
    state: &'a AppState,
    base: String,
    users: HashMap<String, Value>,
}

impl<'a> Entries<'a> {
    fn new(state: &'a AppState, base: String) -> Self {
        Entries { state, base, users: HashMap::new() }
    }

    /// The owner object; an account that does not exist (auth disabled,
    /// or deleted since) is shown by name. A failing lookup is an error.
    async fn owner(&mut self, name: &str) -> Result<Value, JsonError> {
        if let Some(v) = self.users.get(name) {
            return Ok(v.clone());
        }
        let found: Option<OwnerRecord> = match self.state.auth() {
            Some(auth) => auth.owner(name).await.map_err(auth_error)?,
            None => None,
        };
        let v = match found {
            Some(o) => user_json(o.id, &o.name, o.created_at, o.is_public),
            None => user_json(0, name, 0, false),
        };
        self.users.insert(name.to_owned(), v.clone());
        Ok(v)
    }

    async fn creator(&mut self, pushed_by: Option<&str>) -> Result<Value, JsonError> {
        match pushed_by {
            Some(name) => self.owner(name).await,
            None => Ok(ghost()),
        }
    }

    async fn entry(&mut self, v: &PackageVersionRecord) -> Result<Value, JsonError> {
        let owner_name = v.repository.owner().to_owned();
        let name = &v.repository.as_str()[owner_name.len() + 1..];
        let owner = self.owner(&owner_name).await?;
        let creator = self.creator(v.pushed_by.as_deref()).await?;
        let html_url = format!(
            "{}/{owner_name}/-/packages/container/{}/{}",
            self.base,
            utf8_percent_encode(name, SEGMENT),
            utf8_percent_encode(&v.version, SEGMENT)
        );
        Ok(json!({
            "id": version_id(v),
            "owner": owner,
            "repository": null,
            "creator": creator,
            "type": "container",
            "name": name,
            "version": v.version,
            "html_url": html_url,
            "created_at": rfc3339(v.created_at),
        }))
    }
}

/// `GET /api/v1/packages/{owner}?type=container&q=&page=&limit=`
pub async fn list(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    list_inner(&state, &parts).await.unwrap_or_else(IntoResponse::into_response)
}

async fn list_inner(state: &AppState, req: &Parts) -> Result<Response, JsonError> {
    let owner = req.uri.path().trim_start_matches("/api/v1/packages/").trim_end_matches('/');
    let owner = percent_decode_str(owner).decode_utf8_lossy().into_owned();
    let who = caller(state, &Caller::of_parts(req)).await?;
    let pairs = query_pairs(req.uri.query()).map_err(|_| JsonError::BadRequest("bad query".into()))?;
    let kind = query_get(&pairs, "type").unwrap_or("container");
    let q = query_get(&pairs, "q").unwrap_or("").to_lowercase();
    let number =
        |k: &str, d: usize| query_get(&pairs, k).and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0).unwrap_or(d);
    let (page, limit) = (number("page", 1), number("limit", DEFAULT_LIMIT).min(MAX_LIMIT));

    let mut visible = Vec::new();
    if kind == "container" {
        let mut decided: HashMap<RepositoryName, bool> = HashMap::new();
        for v in state.registry().package_versions(&owner).await? {
            let name = &v.repository.as_str()[owner.len() + 1..];
            if !q.is_empty() && !name.to_lowercase().contains(&q) {
                continue;
            }
            let ok = match decided.get(&v.repository) {
                Some(ok) => *ok,
                None => {
                    let ok = may(state, &who, &v.repository, Actions::PULL).await?;
                    decided.insert(v.repository.clone(), ok);
                    ok
                }
            };
            if ok {
                visible.push(v);
            }
        }
    }
    let total = visible.len();
    let base = base_url(state, &Caller::of_parts(req));
    let mut entries = Entries::new(state, base.clone());
    let mut body = Vec::new();
    for v in visible.iter().skip((page - 1) * limit).take(limit) {
        body.push(entries.entry(v).await?);
    }
    let mut headers = vec![
        (CONTENT_TYPE, "application/json".to_owned()),
        (X_TOTAL_COUNT, total.to_string()),
        (EXPOSE, "X-Total-Count, Link".to_owned()),
    ];
    if let Some(link) = link_header(&base, &owner, kind, &q, page, limit, total) {
        headers.push((LINK, link));
    }
    respond(StatusCode::OK, headers, Body::from(Value::Array(body).to_string()))
        .map_err(|e| JsonError::Internal(format!("{e:?}")))
}

/// Gitea's pagination links: next/last, and first/prev after page 1.
fn link_header(
    base: &str,
    owner: &str,
    kind: &str,
    q: &str,
    page: usize,
    limit: usize,
    total: usize,
) -> Option<String> {
    let last = total.div_ceil(limit).max(1);
    let url = |p: usize| {
        let mut query = vec![("limit", limit.to_string()), ("page", p.to_string()), ("type", kind.to_owned())];
        if !q.is_empty() {
            query.push(("q", q.to_owned()));
        }
        format!("<{base}/api/v1/packages/{owner}?{}>", serde_urlencoded::to_string(query).unwrap_or_default())
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    (!links.is_empty()).then(|| links.join(","))
}

/// `{owner}/container/{name...}/{version}` from the raw path, so a `/` in
/// the name may arrive encoded or not.
fn parse_version_path(path: &str) -> Option<(RepositoryName, String)> {
    let rest = path.strip_prefix("/api/v1/packages/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() < 4 || segs[1] != "container" {
        return None;
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
    let owner = decode(segs[0])?;
    let name = decode(&segs[2..segs.len() - 1].join("/"))?;
    let version = decode(segs[segs.len() - 1])?;
    let repo = RepositoryName::parse(&format!("{owner}/{name}")).ok()?;
    Some((repo, version))
}

/// `GET /api/v1/packages/{owner}/container/{name}/{version}[/files]`
pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    if let Some(version_path) = files_path(req.uri.path()) {
        return files(&state, &req, version_path).await.unwrap_or_else(IntoResponse::into_response);
    }
    async {
        let who = caller(&state, &Caller::of_parts(&req)).await?;
        let (repo, version) = parse_version_path(req.uri.path()).ok_or(NOT_FOUND)?;
        if !may(&state, &who, &repo, Actions::PULL).await? {
            return Err(FORBIDDEN);
        }
        let v = state.registry().package_version(&repo, &version).await?;
        let mut entries = Entries::new(&state, base_url(&state, &Caller::of_parts(&req)));
        let body = entries.entry(&v).await?;
        respond(StatusCode::OK, [(CONTENT_TYPE, "application/json")], Body::from(body.to_string()))
            .map_err(|e| JsonError::Internal(format!("{e:?}")))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// The version's path of `.../{name}/{version}/files` (a version named
/// `files` directly under the name is a version, as in Gitea).
fn files_path(path: &str) -> Option<&str> {
    let version_path = path.strip_suffix("/files")?;
    (version_path.split('/').count() >= 8).then_some(version_path)
}

/// `GET /api/v1/packages/{owner}/container/{name}/{version}/files`: Gitea's
/// `PackageFile` list (Gitea itself lists no sizes for containers).
async fn files(state: &AppState, req: &Parts, version_path: &str) -> Result<Response, JsonError> {
    let who = caller(state, &Caller::of_parts(req)).await?;
    let (repo, version) = parse_version_path(version_path).ok_or(NOT_FOUND)?;
    if !may(state, &who, &repo, Actions::PULL).await? {
        return Err(FORBIDDEN);
    }
    let files = state.registry().version_files(&repo, &version).await?;
    let body: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let hex = |alg: &str| {
                if f.digest.algorithm().as_str() == alg { f.digest.hex().to_owned() } else { String::new() }
            };
            json!({
                "id": i + 1,
                "Size": f.size,
                "name": f.name,
                "md5": "",
                "sha1": "",
                "sha256": hex("sha256"),
                "sha512": hex("sha512"),
            })
        })
        .collect();
    respond(StatusCode::OK, [(CONTENT_TYPE, "application/json")], Body::from(Value::Array(body).to_string()))
        .map_err(|e| JsonError::Internal(format!("{e:?}")))
}

/// `DELETE /api/v1/packages/{owner}/container/{name}/{version}`
pub async fn delete(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        let who = caller(&state, &Caller::of_parts(&req)).await?;
        let (repo, version) = parse_version_path(req.uri.path()).ok_or(NOT_FOUND)?;
        if !may(&state, &who, &repo, Actions::of(&[berth_auth::Action::Delete])).await? {
            return Err(FORBIDDEN);
        }
        state.registry().delete_package_version(&repo, &version, who.user_name()).await?;
        tracing::info!(target: "audit", event = "package_version_delete", user = who.user_name().unwrap_or("-"), repository = %repo, version = %version);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_paths() {
        let (r, v) = parse_version_path("/api/v1/packages/admin/container/honeydue-api/237c6b8").unwrap();
        assert_eq!((r.as_str(), v.as_str()), ("admin/honeydue-api", "237c6b8"));
        let (r, _) = parse_version_path("/api/v1/packages/acme/container/team%2Fapp/v1").unwrap();
        assert_eq!(r.as_str(), "acme/team/app");
        let (r, v) = parse_version_path("/api/v1/packages/acme/container/team/app/sha256:abc").unwrap();
        assert_eq!((r.as_str(), v.as_str()), ("acme/team/app", "sha256:abc"));
        assert!(parse_version_path("/api/v1/packages/acme/npm/x/1").is_none());
        assert!(parse_version_path("/api/v1/packages/acme/container/UPPER/1").is_none());
    }

    #[test]
    fn links() {
        let l = link_header("http://h", "o", "container", "", 1, 30, 61).unwrap();
        assert!(
            l.contains("page=2") && l.contains("rel=\"next\"") && l.contains("page=3&type=container>; rel=\"last\""),
            "{l}"
        );
        assert!(link_header("http://h", "o", "container", "", 1, 30, 10).is_none());
        let l = link_header("http://h", "o", "container", "", 3, 30, 61).unwrap();
        assert!(l.contains("rel=\"prev\"") && !l.contains("rel=\"next\""));
    }
}
