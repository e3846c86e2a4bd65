//! Turning a template into a response with the headers every page sends,
//! and the error pages.

use askama::Template;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// No inline script or style, nothing from elsewhere, no framing, forms
/// post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the shared frame of every page needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    /// The signed-in user's name.
    pub user: Option<String>,
    pub is_admin: bool,
    /// The session's CSRF token (for the sign-out form).
    pub csrf: String,
    /// Whether there is such a thing as signing in (authentication on).
    pub auth_on: bool,
}

/// Adds the security headers every page carries.
pub fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show what one viewer may see: never from a shared cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A rendered page with status 200.
pub fn page<T: Template>(template: &T) -> Response {
    page_with_status(StatusCode::OK, template)
}

pub fn page_with_status<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            secure(response)
        }
        Err(e) => PageError::Internal(format!("template: {e}")).into_response(),
    }
}

/// A 303 to a path on this site (after a POST).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    secure(response)
}

/// Why a page cannot be shown.
#[derive(Debug)]
pub enum PageError {
    /// Unknown, or not visible to this viewer (the same answer, so private
    /// names do not leak).
    NotFound,
    /// A form without the session's CSRF token, or an action refused.
    Forbidden(String),
    BadRequest(String),
    /// Too many sign-in attempts.
    TooMany(String),
    Unavailable(String),
    Internal(String),
}

/// What an error page says, kept on the response so that
/// [`with_viewer`] can draw it again with the viewer's header.
#[derive(Debug, Clone)]
pub struct ErrorView {
    status: StatusCode,
    heading: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    heading: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match self {
            PageError::NotFound => {
                (StatusCode::NOT_FOUND, "Not found", "There is nothing here you may see.".to_owned())
            }
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            PageError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, "Too many attempts", m),
            PageError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m),
            PageError::Internal(m) => {
                tracing::error!(error = %m, "page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The error was logged.".to_owned())
            }
        };
        let view = ErrorView { status, heading, message };
        let mut response = error_page(&view, Layout { title: heading.to_owned(), ..Layout::default() });
        response.extensions_mut().insert(view);
        response
    }
}

fn error_page(view: &ErrorView, layout: Layout) -> Response {
    let template =
        ErrorPage { layout, status: view.status.as_u16(), heading: view.heading, message: view.message.clone() };
    match template.render() {
        Ok(html) => {
            let mut response = (view.status, html).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            secure(response)
        }
        Err(_) => view.status.into_response(),
    }
}

/// Middleware over the page routes: an error page (which its handler drew
/// without knowing the viewer) is drawn again with the viewer's header, so
/// a signed-in viewer keeps their menu and a signed-out one gets "Sign in".
/// Only error responses pay for the session lookup this needs.
pub async fn with_viewer(
    axum::extract::State(state): axum::extract::State<berth_api::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let kept = http::Request::from_parts(parts.clone(), ());
    let response = next.run(axum::extract::Request::from_parts(parts, body)).await;
    let Some(view) = response.extensions().get::<ErrorView>().cloned() else { return response };
    let (mut parts, ()) = kept.into_parts();
    let layout =
        match <crate::session::Ctx as axum::extract::FromRequestParts<_>>::from_request_parts(&mut parts, &state).await
        {
            Ok(ctx) => ctx.layout(view.heading),
            Err(_) => Layout { title: view.heading.to_owned(), auth_on: state.auth().is_some(), ..Layout::default() },
        };
    let mut again = error_page(&view, layout);
    for (name, value) in response.headers() {
        if name == header::SET_COOKIE {
            again.headers_mut().append(name, value.clone());
        }
    }
    again
}

impl From<berth_registry::RegistryError> for PageError {
    fn from(e: berth_registry::RegistryError) -> Self {
        use berth_registry::RegistryError as E;
        match e {
            E::ManifestUnknown | E::BlobUnknown | E::NameUnknown => PageError::NotFound,
            E::ImmutableTag { tag, rule } => {
                PageError::Forbidden(format!("The tag {tag} is immutable (rule {rule}); it cannot be deleted."))
            }
            E::Protected { repository, tag, rule, .. } => PageError::Forbidden(format!(
                "This is part of {repository}:{tag}, which is immutable (rule {rule}); it cannot be deleted."
            )),
            E::Unavailable(m) => PageError::Unavailable(m),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<berth_auth::AuthError> for PageError {
    fn from(e: berth_auth::AuthError) -> Self {
        use berth_auth::AuthError as E;
        match e {
            E::InvalidCredentials | E::InvalidToken(_) => PageError::Forbidden("Wrong user name or password.".into()),
            E::TooManyAttempts(wait) => {
                PageError::TooMany(format!("Too many failed sign-ins; try again in {} s.", wait.as_secs().max(1)))
            }
            E::Busy => PageError::TooMany("Too many sign-ins are being checked; try again in a moment.".into()),
            other => PageError::Internal(other.to_string()),
        }
    }
}
