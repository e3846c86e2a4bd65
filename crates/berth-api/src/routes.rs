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
//! Every request first passes the envelope ([`crate::envelope`]: request
//! id, span, client address, the parsed endpoint, panic catcher, deadline,
//! metrics, API version header), then this table; on `/v2/<name>/...` the
//! dispatcher has [`auth::authorize_repository`] check what the endpoint
//! needs before calling the handler. Other paths answer `UNSUPPORTED` 404,
//! other methods 405 (JSON under `/api/v1`).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, put};
use berth_auth::Principal;
use http::Method;

use crate::body::refuse;
use crate::endpoint::{Endpoint, Parsed};
use crate::envelope::App;
use crate::error::ApiError;
use crate::handlers::json_api::method_not_allowed as json_method_not_allowed;
use crate::handlers::{
    base, blobs, catalog, gitea, health, manifests, referrers, retention, tags, token, uploads, usage,
};
use crate::middleware::{method_not_allowed, no_such_route};
use crate::{AppState, auth, metrics};

/// The complete application: the route table in its envelope.
pub fn router(state: AppState) -> App {
    router_with_pages(state, None)
}

/// The application with the web pages' routes (`berth-web`, which sits
/// above this crate) merged into the table, in the same envelope.
pub fn router_with_pages(state: AppState, pages: Option<Router<AppState>>) -> App {
    let mut router = Router::new()
        .route("/v2", get(base::version))
        .route("/v2/", get(base::version))
        .route("/v2/_catalog", get(catalog::list))
        .route("/v2/token", get(token::get).post(token::post))
        .route("/v2/{*rest}", any(dispatch))
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
    let router = router.method_not_allowed_fallback(method_not_allowed).with_state(state.clone());
    App::new(router, state)
}

/// The separate metrics listener: `/metrics` and the probes, nothing else.
pub fn metrics_router(state: AppState) -> App {
    let router = Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    App::new(router, state)
}

/// `/v2/<name>/...`: authorized, then routed by endpoint and method. A
/// refused request's body is drained first, so the client sees the answer.
async fn dispatch(State(state): State<AppState>, mut req: Request) -> Response {
    let parsed = req.extensions_mut().remove::<Parsed>();
    let method = req.method().clone();
    match auth::authorize_repository(&state, &auth::Caller::of(&req), &method, parsed).await {
        Ok((endpoint, who)) => route(state, endpoint, who, req).await.unwrap_or_else(IntoResponse::into_response),
        Err(e) => refuse(req, e).await,
    }
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
