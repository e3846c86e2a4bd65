//! The web pages: server-rendered HTML that works without JavaScript.
//!
//! | URL                                                   | method    | handler                        |
//! |-------------------------------------------------------|-----------|--------------------------------|
//! | `/`                                                   | GET       | `pages::home::show`            |
//! | `/<owner>/-/packages`                                 | GET       | `pages::packages::owner`       |
//! | `/<owner>/-/packages/container/<name>`                | GET       | `pages::package` (newest version) |
//! | `/<owner>/-/packages/container/<name>/versions`       | GET       | `pages::package` (versions)    |
//! | `/<owner>/-/packages/container/<name>/<version>`      | GET       | `pages::package` (one version) |
//! | `/<owner>/-/packages/container/<name>/<version>/delete` | GET, POST | `pages::package` (confirm, delete) |
//! | `/user/login`                                         | GET, POST | `pages::login::{form,submit}`  |
//! | `/user/logout`                                        | POST      | `pages::login::logout`         |
//! | `/user/settings/applications`                         | GET, POST | `pages::tokens::{show,change}` |
//! | `/-/admin`                                            | GET, POST | `pages::admin::{show,change}`  |
//! | `/-/static/<file>`                                    | GET       | `assets::serve`                |
//!
//! Names containing `/` work plain and percent-encoded (`group%2Fimage`, as
//! Gitea writes them). Every page is rendered by askama (auto-escaping,
//! checked at compile time) and sent with the headers of [`render`]; state
//! changes only by POST with the session's CSRF token ([`session`]).

mod assets;
mod format;
mod pages;
mod render;
mod session;

use axum::Router;
use axum::routing::get;
use berth_api::AppState;

/// The page routes, to merge into the API router (which adds its layers).
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home::show))
        .route("/{owner}/-/packages", get(pages::packages::owner))
        .route("/{owner}/-/packages/container/{*rest}", get(pages::package::show).post(pages::package::delete))
        .route("/user/login", get(pages::login::form).post(pages::login::submit))
        .route("/user/logout", axum::routing::post(pages::login::logout))
        .route("/user/settings/applications", get(pages::tokens::show).post(pages::tokens::change))
        .route("/-/admin", get(pages::admin::show).post(pages::admin::change))
        .route("/-/static/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn_with_state(state, render::with_viewer))
}
