//! The route table. Repository names contain slashes, so everything under
//! `/v2/` is parsed here into an [`Endpoint`] and dispatched by method:
//!
//! | URL                                        | method        | handler                       |
//! |--------------------------------------------|---------------|-------------------------------|
//! | `/v2/`                                     | GET           | `handlers::base::version`     |
//! | `/v2/token`                                | GET, POST     | `handlers::token::{get,post}` |
//! | `/v2/_catalog`                             | GET           | `handlers::catalog::list`     |
//! | `/v2/<name>/blobs/<digest>`                | GET, HEAD     | `handlers::blobs::get`        |
//! | `/v2/<name>/blobs/<digest>`                | DELETE        | `handlers::blobs::delete`     |
//! | `/v2/<name>/blobs/uploads/`                | POST          | `handlers::uploads::start`    |
//! | `/v2/<name>/blobs/uploads/<id>`            | GET           | `handlers::uploads::status`   |
//! | `/v2/<name>/blobs/uploads/<id>`            | PATCH         | `handlers::uploads::append`   |
//! | `/v2/<name>/blobs/uploads/<id>`            | PUT           | `handlers::uploads::finish`   |
//! | `/v2/<name>/blobs/uploads/<id>`            | DELETE        | `handlers::uploads::cancel`   |
//! | `/v2/<name>/manifests/<reference>`         | GET, HEAD     | `handlers::manifests::get`    |
//! | `/v2/<name>/manifests/<reference>`         | PUT           | `handlers::manifests::put`    |
//! | `/v2/<name>/manifests/<reference>`         | DELETE        | `handlers::manifests::delete` |
//! | `/v2/<name>/tags/list`                     | GET           | `handlers::tags::list`        |
//! | `/v2/<name>/referrers/<digest>`            | GET           | `handlers::referrers::list`   |
//! | `/livez`, `/readyz`                        | GET           | `handlers::health`            |
//! | `/metrics`                                 | GET           | `metrics::serve`              |
//! | `/api/v1/packages/<owner>`                 | GET           | `handlers::gitea::list`       |
//! | `/api/v1/packages/<owner>/container/<name>/<version>` | GET, DELETE | `handlers::gitea::{get,delete}` |
//! | `/api/v1/admin/retention/rules`            | GET, POST     | `handlers::retention::{list,add}` |
//! | `/api/v1/admin/retention/rules/<id>`       | DELETE        | `handlers::retention::remove` |
//! | `/api/v1/admin/retention/preview`          | GET           | `handlers::retention::preview` |
//!
//! Before a `/v2/<name>/...` handler runs, [`Endpoint::need`] says what the
//! request does to which repository and `auth::require` checks it.
//!
//! Every request is answered within `http.request_timeout`, authentication
//! included, except those that stream blob data ([`streams_blob_data`]),
//! which have only the body idle timeout: one [`deadline`] layer over the
//! whole router decides.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use berth_auth::{Action, Actions, Principal};
use berth_oci::{Digest, DigestError, Reference, ReferenceError, RepositoryName};
use http::{HeaderValue, Method};
use percent_encoding::percent_decode_str;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::AppState;
use crate::auth::{Caller, Need, require};
use crate::body::refuse;
use crate::error::ApiError;
use crate::handlers::{base, blobs, catalog, gitea, health, manifests, referrers, retention, tags, token, uploads};
use crate::headers::{API_VERSION, X_REQUEST_ID};

/// A parsed `/v2/<name>/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Blob { name: RepositoryName, digest: Digest },
    UploadStart { name: RepositoryName },
    Upload { name: RepositoryName, id: String },
    Manifest { name: RepositoryName, reference: ManifestReference },
    Tags { name: RepositoryName },
    Referrers { name: RepositoryName, digest: Digest },
}

/// A manifest reference as it appeared in the URL: parsed, or the reason it is invalid
/// (what to answer for an invalid one depends on the method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestReference {
    Valid(Reference),
    Invalid(ReferenceError),
}

impl Endpoint {
    pub fn name(&self) -> &RepositoryName {
        match self {
            Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Manifest { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => name,
        }
    }

    /// What the request does to its repository: reads pull, uploads and
    /// manifest pushes push, deletes delete. `None` for a method the
    /// endpoint does not serve.
    pub fn need(&self, method: &Method) -> Option<Actions> {
        let pull = Actions::PULL;
        let push = Actions::of(&[Action::Pull, Action::Push]);
        let delete = Actions::of(&[Action::Delete]);
        let (read, write) = (method == Method::GET || method == Method::HEAD, method == Method::DELETE);
        Some(match self {
            Endpoint::Blob { .. } | Endpoint::Manifest { .. } if read => pull,
            Endpoint::Blob { .. } | Endpoint::Manifest { .. } if write => delete,
            Endpoint::Manifest { .. } if method == Method::PUT => push,
            Endpoint::UploadStart { .. } if method == Method::POST => push,
            Endpoint::Upload { .. } => push,
            Endpoint::Tags { .. } | Endpoint::Referrers { .. } if method == Method::GET => pull,
            _ => return None,
        })
    }

    /// Whether `method` on this endpoint streams blob data: blob GET/HEAD,
    /// upload POST/PATCH/PUT. Those may take as long as the data does.
    pub fn streams_blob_data(&self, method: &Method) -> bool {
        match self {
            Endpoint::Blob { .. } => method == Method::GET || method == Method::HEAD,
            Endpoint::UploadStart { .. } => method == Method::POST,
            Endpoint::Upload { .. } => method == Method::PATCH || method == Method::PUT,
            _ => false,
        }
    }
}

/// Whether a request streams blob data (see [`Endpoint::streams_blob_data`]).
pub fn streams_blob_data(method: &Method, path: &str) -> bool {
    path.strip_prefix("/v2/").and_then(|rest| parse_endpoint(rest).ok()).is_some_and(|e| e.streams_blob_data(method))
}

/// Parses the part of the path after `/v2/`. The resource is decided from the
/// right, so repository names may contain words like `blobs` or `manifests`.
pub fn parse_endpoint(rest: &str) -> Result<Endpoint, ApiError> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize| -> Result<RepositoryName, ApiError> {
        if k == 0 {
            return Err(ApiError::not_found_route());
        }
        RepositoryName::parse(&segs[..k].join("/")).map_err(|e| ApiError::name_invalid(e.to_string()))
    };
    let decoded = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let digest = |s: &str| Digest::parse(&decoded(s)).map_err(digest_error);
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Endpoint::Tags { name: name_of(n - 2)? });
    }
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = name_of(n - 3)?;
        return Ok(if segs[n - 1].is_empty() {
            Endpoint::UploadStart { name }
        } else {
            Endpoint::Upload { name, id: segs[n - 1].to_owned() }
        });
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Endpoint::UploadStart { name: name_of(n - 2)? });
    }
    if n >= 2 {
        let last = segs[n - 1];
        match segs[n - 2] {
            "blobs" => return Ok(Endpoint::Blob { name: name_of(n - 2)?, digest: digest(last)? }),
            "referrers" => return Ok(Endpoint::Referrers { name: name_of(n - 2)?, digest: digest(last)? }),
            "manifests" => {
                let reference = match Reference::parse(&decoded(last)) {
                    Ok(r) => ManifestReference::Valid(r),
                    Err(e) => ManifestReference::Invalid(e),
                };
                return Ok(Endpoint::Manifest { name: name_of(n - 2)?, reference });
            }
            _ => {}
        }
    }
    Err(ApiError::not_found_route())
}

pub fn digest_error(e: DigestError) -> ApiError {
    match e {
        DigestError::Invalid => ApiError::digest_invalid("malformed digest"),
        DigestError::Unsupported(alg) => ApiError::unsupported(format!("digest algorithm {alg:?} is not supported")),
    }
}

/// The complete router with its middleware.
pub fn router(state: AppState) -> Router {
    let metrics_on_main = state.settings().metrics_on_main;
    let mut router = Router::new()
        .route("/v2", get(base::version))
        .route("/v2/", get(base::version))
        .route("/v2/_catalog", get(catalog::list))
        .route("/v2/token", get(token::get).post(token::post))
        .route("/api/v1/packages/{owner}", get(gitea::list))
        .route("/api/v1/packages/{owner}/container/{*rest}", get(gitea::get).delete(gitea::delete))
        .route("/api/v1/admin/retention/rules", get(retention::list).post(retention::add))
        .route("/api/v1/admin/retention/rules/{id}", delete(retention::remove))
        .route("/api/v1/admin/retention/preview", get(retention::preview))
        .route("/v2/{*rest}", any(dispatch))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { ApiError::not_found_route() });
    if metrics_on_main {
        router = router.route("/metrics", get(crate::metrics::serve));
    }
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::client::resolve_layer))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, deadline))
        .layer(axum::middleware::from_fn(crate::metrics::record))
        .layer(SetResponseHeaderLayer::overriding(API_VERSION, HeaderValue::from_static("registry/2.0")))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked", "panic").into_response()))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Millis)),
        )
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([http::header::AUTHORIZATION, http::header::COOKIE]))
}

/// One span per request: method, path (the query may carry nothing secret,
/// but paths are what operators search by) and the request id.
fn request_span(req: &http::Request<Body>) -> Span {
    let id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id = %id)
}

/// The separate metrics listener: `/metrics` and the probes, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::serve))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, deadline))
}

/// Middleware: the overall deadline. Every request but those that stream
/// blob data must be answered within `http.request_timeout`, or gets 503
/// UNAVAILABLE; authentication (which may wait for an argon2 slot) runs
/// inside the handlers, so inside the deadline too. A slow client cannot
/// hold a connection and a task longer than that by trickling a body.
async fn deadline(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let endpoint = req.uri().path().strip_prefix("/v2/").and_then(|rest| parse_endpoint(rest).ok());
    let streams = endpoint.as_ref().is_some_and(|e| e.streams_blob_data(req.method()));
    if let Some(e) = endpoint {
        // Parsed once: `dispatch` takes it from here.
        req.extensions_mut().insert(e);
    }
    if streams {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.settings().request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// Routes a `/v2/<name>/...` request to its handler by endpoint and method,
/// after checking that the caller may do what the request does. A refused
/// request's body is drained first, so the client sees the answer.
async fn dispatch(State(state): State<AppState>, mut req: Request) -> Response {
    let parsed = req
        .extensions_mut()
        .remove::<Endpoint>()
        .map_or_else(|| parse_endpoint(req.uri().path().strip_prefix("/v2/").unwrap_or("")), Ok);
    let endpoint = match parsed {
        Ok(e) => e,
        Err(e) => return refuse(req, e).await,
    };
    let Some(actions) = endpoint.need(req.method()) else { return refuse(req, ApiError::method_not_allowed()).await };
    let principal = match require(&state, &Caller::of(&req), Need { repo: endpoint.name(), actions }).await {
        Ok(p) => p,
        Err(e) => return refuse(req, e).await,
    };
    route(state, endpoint, principal, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn route(state: AppState, endpoint: Endpoint, who: Principal, req: Request<Body>) -> Result<Response, ApiError> {
    let method = req.method().clone();
    match (endpoint, method) {
        (Endpoint::Blob { name, digest }, m) if m == Method::GET || m == Method::HEAD => {
            blobs::get(&state, &name, &digest, m == Method::HEAD, req.headers()).await
        }
        (Endpoint::Blob { name, digest }, Method::DELETE) => blobs::delete(&state, &who, &name, &digest).await,
        (Endpoint::UploadStart { name }, Method::POST) => uploads::start(&state, &who, &name, req).await,
        (Endpoint::Upload { name, id }, Method::GET) => uploads::status(&state, &name, &id).await,
        (Endpoint::Upload { name, id }, Method::PATCH) => uploads::append(&state, &name, &id, req).await,
        (Endpoint::Upload { name, id }, Method::PUT) => uploads::finish(&state, &who, &name, &id, req).await,
        (Endpoint::Upload { name, id }, Method::DELETE) => uploads::cancel(&state, &name, &id).await,
        (Endpoint::Manifest { name, reference }, m) if m == Method::GET || m == Method::HEAD => {
            manifests::get(&state, &name, reference, m == Method::HEAD, req.headers()).await
        }
        (Endpoint::Manifest { name, reference }, Method::PUT) => {
            manifests::put(&state, &who, &name, reference, req).await
        }
        (Endpoint::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(&state, &who, &name, reference).await
        }
        (Endpoint::Tags { name }, Method::GET) => tags::list(&state, &name, req.uri().query()).await,
        (Endpoint::Referrers { name, digest }, Method::GET) => {
            referrers::list(&state, &name, &digest, req.uri().query()).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_every_endpoint() {
        assert!(matches!(parse_endpoint(&format!("a/b/blobs/{D}")), Ok(Endpoint::Blob { .. })));
        assert!(matches!(parse_endpoint("a/b/blobs/uploads/"), Ok(Endpoint::UploadStart { .. })));
        assert!(matches!(parse_endpoint("a/b/blobs/uploads"), Ok(Endpoint::UploadStart { .. })));
        assert!(matches!(parse_endpoint("a/blobs/uploads/1234"), Ok(Endpoint::Upload { ref id, .. }) if id == "1234"));
        assert!(matches!(parse_endpoint("a/manifests/latest"), Ok(Endpoint::Manifest { .. })));
        assert!(matches!(parse_endpoint("a/b/c/tags/list"), Ok(Endpoint::Tags { .. })));
        assert!(matches!(parse_endpoint(&format!("a/referrers/{D}")), Ok(Endpoint::Referrers { .. })));
    }

    #[test]
    fn only_blob_data_streams_escape_the_deadline() {
        let (get, head, post, put, patch, del) =
            (Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
        let upload = "/v2/a/blobs/uploads/5f0c7a3e-0000-4000-8000-000000000000";
        for (m, path) in [(&get, format!("/v2/a/blobs/{D}")), (&head, format!("/v2/a/blobs/{D}"))] {
            assert!(streams_blob_data(m, &path), "{m} {path}");
        }
        for (m, path) in [(&post, "/v2/a/blobs/uploads/"), (&patch, upload), (&put, upload)] {
            assert!(streams_blob_data(m, path), "{m} {path}");
        }
        let bounded = [
            (&post, "/v2/token".to_owned()),
            (&get, "/v2/token".to_owned()),
            (&get, "/v2/".to_owned()),
            (&get, "/v2/_catalog".to_owned()),
            (&get, "/api/v1/packages/acme".to_owned()),
            (&post, "/api/v1/admin/retention/rules".to_owned()),
            (&get, "/livez".to_owned()),
            (&put, "/v2/a/manifests/v1".to_owned()),
            (&get, "/v2/a/tags/list".to_owned()),
            (&del, format!("/v2/a/blobs/{D}")),
            (&get, upload.to_owned()),
            (&del, upload.to_owned()),
            (&get, "/v2/a/blobs/sha256:bad".to_owned()),
        ];
        for (m, path) in bounded {
            assert!(!streams_blob_data(m, &path), "{m} {path}");
        }
    }

    #[test]
    fn names_may_contain_resource_words() {
        let e = parse_endpoint("x/blobs/manifests/v1").unwrap();
        assert_eq!(e.name().as_str(), "x/blobs");
        let e = parse_endpoint("tags/list/tags/list").unwrap();
        assert_eq!(e, Endpoint::Tags { name: RepositoryName::parse("tags/list").unwrap() });
    }

    #[test]
    fn rejects_bad_names_and_digests() {
        assert_eq!(parse_endpoint("Bad/manifests/x").unwrap_err().code(), berth_oci::ErrorCode::NameInvalid);
        assert_eq!(parse_endpoint("a/blobs/sha256:xyz").unwrap_err().code(), berth_oci::ErrorCode::DigestInvalid);
        assert_eq!(parse_endpoint("a/nothing").unwrap_err().status(), http::StatusCode::NOT_FOUND);
        assert_eq!(parse_endpoint("manifests/x").unwrap_err().status(), http::StatusCode::NOT_FOUND);
        assert!(matches!(
            parse_endpoint("a/manifests/sha256:xyz"),
            Ok(Endpoint::Manifest { reference: ManifestReference::Invalid(_), .. })
        ));
    }
}
