//! The route table. Repository names contain slashes, so everything under
//! `/v2/<name>/` is one route whose path is parsed into an [`Endpoint`]
//! (`crate::endpoint`) and dispatched by endpoint and method below:
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
//! | `/metrics`                                 | GET           | `metrics::scrape`             |
//! | `/api/v1/packages/<owner>`                 | GET           | `handlers::gitea::list`       |
//! | `/api/v1/packages/<owner>/container/<name>/<version>` | GET, DELETE | `handlers::gitea::{get,delete}` |
//! | `/api/v1/admin/retention/rules`            | GET, POST     | `handlers::retention::{list,add}` |
//! | `/api/v1/admin/retention/rules/<id>`       | DELETE        | `handlers::retention::remove` |
//! | `/api/v1/admin/retention/preview`          | GET           | `handlers::retention::preview` |
//! | `/api/v1/admin/usage`                      | GET           | `handlers::usage::all`        |
//! | `/api/v1/owners/<owner>/usage`             | GET           | `handlers::usage::owner`      |
//! | `/api/v1/admin/quotas`                     | GET           | `handlers::usage::quotas`     |
//! | `/api/v1/admin/quotas/<owner>`             | PUT, DELETE   | `handlers::usage::{set,remove}` |
//! | `/`, `/<owner>/-/packages...`, `/user/...`, `/-/...` | GET, POST | `berth_web` (its own table), via [`router_with_pages`] |
//!
//! Layers, outermost first: request id and trace span, panic catcher, API
//! version header, [`endpoint::layer`] (parses the path once, onto the
//! request), [`metrics::record`] (labels from it), the deadline
//! ([`middleware::deadline`]: everything but blob data streams within
//! `http.request_timeout`), the client address; on `/v2/<name>/...`
//! [`auth::repository_layer`] checks what the endpoint needs. Other paths
//! answer `UNSUPPORTED` 404, other methods 405 (JSON under `/api/v1`).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, put};
use berth_auth::Principal;
use http::{HeaderValue, Method};
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::endpoint::{Endpoint, Parsed};
use crate::error::ApiError;
use crate::handlers::json_api::method_not_allowed as json_method_not_allowed;
use crate::handlers::{
    base, blobs, catalog, gitea, health, manifests, referrers, retention, tags, token, uploads, usage,
};
use crate::headers::{API_VERSION, X_REQUEST_ID};
use crate::middleware::{deadline, method_not_allowed, no_such_route, request_span};
use crate::{AppState, auth, client, endpoint, metrics};

/// The complete router with its middleware.
pub fn router(state: AppState) -> Router {
    router_with_pages(state, None)
}

/// The router with the web pages' routes (`berth-web`, which sits above
/// this crate) merged in, under the same layers.
pub fn router_with_pages(state: AppState, pages: Option<Router<AppState>>) -> Router {
    let repository = any(dispatch).layer(from_fn_with_state(state.clone(), auth::repository_layer));
    let mut router = Router::new()
        .route("/v2", get(base::version))
        .route("/v2/", get(base::version))
        .route("/v2/_catalog", get(catalog::list))
        .route("/v2/token", get(token::get).post(token::post))
        .route("/v2/{*rest}", repository)
        .route("/api/v1/packages/{owner}", get(gitea::list).fallback(json_method_not_allowed))
        .route(
            "/api/v1/packages/{owner}/container/{*rest}",
            get(gitea::get).delete(gitea::delete).fallback(json_method_not_allowed),
        )
        .route(
            "/api/v1/admin/retention/rules",
            get(retention::list).post(retention::add).fallback(json_method_not_allowed),
        )
        .route("/api/v1/admin/retention/rules/{id}", delete(retention::remove).fallback(json_method_not_allowed))
        .route("/api/v1/admin/retention/preview", get(retention::preview).fallback(json_method_not_allowed))
        .route("/api/v1/admin/usage", get(usage::all).fallback(json_method_not_allowed))
        .route("/api/v1/owners/{owner}/usage", get(usage::owner).fallback(json_method_not_allowed))
        .route("/api/v1/admin/quotas", get(usage::quotas).fallback(json_method_not_allowed))
        .route("/api/v1/admin/quotas/{owner}", put(usage::set).delete(usage::remove).fallback(json_method_not_allowed))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .fallback(no_such_route);
    if state.settings().metrics_on_main {
        router = router.route("/metrics", get(metrics::scrape));
    }
    if let Some(pages) = pages {
        router = router.merge(pages);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), client::resolve_layer))
        .with_state(state.clone())
        .layer(from_fn_with_state(state, deadline))
        .layer(from_fn(metrics::record))
        .layer(from_fn(endpoint::layer))
        .layer(SetResponseHeaderLayer::overriding(API_VERSION, HeaderValue::from_static("registry/2.0")))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
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

/// The separate metrics listener: `/metrics` and the probes, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(from_fn_with_state(state, deadline))
}

/// `/v2/<name>/...`, past [`auth::repository_layer`]: the endpoint and the
/// principal are on the request.
async fn dispatch(State(state): State<AppState>, mut req: Request) -> Response {
    let endpoint = req.extensions_mut().remove::<Parsed>().and_then(|p| p.0).and_then(Result::ok);
    let who = req.extensions_mut().remove::<Principal>();
    let (Some(endpoint), Some(who)) = (endpoint, who) else {
        return ApiError::Internal("repository route reached without its endpoint or principal".into()).into_response();
    };
    route(state, endpoint, who, req).await.unwrap_or_else(IntoResponse::into_response)
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
        _ => Err(ApiError::MethodNotAllowed),
    }
}
