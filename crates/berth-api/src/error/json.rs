//! The error table of the `/api/v1` JSON API (the Gitea-compatible package
//! API and the admin API): every situation is a [`JsonError`], and
//! [`JsonError::describe`] is the one `match` giving its status and message.
//! The body is Gitea's `{"message": ..., "url": ""}`, so Gitea clients read
//! it; 5xx are logged once, here, and answered with a plain message.
//!
//! | situation                                        | status |
//! |--------------------------------------------------|--------|
//! | no credentials (auth on)                         | 401    |
//! | invalid credentials                              | 401    |
//! | too many logins                                  | 429    |
//! | credentials lack the right (scope, site admin, owner admin) | 403 |
//! | immutable tag, protected or referenced content   | 403    |
//! | no such package version, rule or route           | 404    |
//! | method not allowed                               | 405    |
//! | name already taken                               | 409    |
//! | bad query, unreadable or invalid JSON body       | 400    |
//! | body over its limit                              | 413    |
//! | rule refused (the message says why)              | 422    |
//! | database or authorization unavailable            | 503    |
//! | anything else                                    | 500    |

use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::json;

/// Every situation an `/api/v1` request can fail in.
#[derive(Debug)]
pub enum JsonError {
    /// Authentication is on and the request has no credentials.
    CredentialsRequired,
    InvalidCredentials,
    TooManyLogins,
    /// The credentials lack what the request needs (the message says what).
    Forbidden(&'static str),
    /// No such thing (the message names what).
    NotFound(&'static str),
    NoSuchRoute,
    MethodNotAllowed,
    BadRequest(String),
    TooLarge(&'static str),
    /// The request is well-formed but refused (the message says why).
    Unprocessable(String),
    /// Deciding who may do what failed.
    AuthorizationFailed(String),
    /// A registry operation failed; its error says how.
    Registry(RegistryError),
    Internal(String),
}

impl JsonError {
    /// The error table: status, message, and what to log for a 5xx.
    pub fn describe(self) -> (StatusCode, String, Option<String>) {
        use StatusCode as S;
        let plain = |status: S, m: &str| (status, m.to_owned(), None);
        match self {
            JsonError::CredentialsRequired => plain(S::UNAUTHORIZED, "token is required"),
            JsonError::InvalidCredentials => plain(S::UNAUTHORIZED, "invalid credentials"),
            JsonError::TooManyLogins => plain(S::TOO_MANY_REQUESTS, "too many failed logins"),
            JsonError::Forbidden(m) => plain(S::FORBIDDEN, m),
            JsonError::NotFound(m) => plain(S::NOT_FOUND, m),
            JsonError::NoSuchRoute => plain(S::NOT_FOUND, "not found"),
            JsonError::MethodNotAllowed => plain(S::METHOD_NOT_ALLOWED, "method not allowed"),
            JsonError::BadRequest(m) => (S::BAD_REQUEST, m, None),
            JsonError::TooLarge(m) => plain(S::PAYLOAD_TOO_LARGE, m),
            JsonError::Unprocessable(m) => (S::UNPROCESSABLE_ENTITY, m, None),
            JsonError::AuthorizationFailed(cause) => {
                (S::SERVICE_UNAVAILABLE, "service unavailable".into(), Some(cause))
            }
            JsonError::Internal(cause) => (S::INTERNAL_SERVER_ERROR, "internal error".into(), Some(cause)),
            JsonError::Registry(e) => match e {
                RegistryError::ManifestUnknown | RegistryError::NameUnknown => {
                    plain(S::NOT_FOUND, "package does not exist")
                }
                RegistryError::NotFound(_) => (S::NOT_FOUND, e.to_string(), None),
                RegistryError::Conflict(_) => (S::CONFLICT, e.to_string(), None),
                RegistryError::ImmutableTag { .. }
                | RegistryError::Protected { .. }
                | RegistryError::Referenced { .. } => (S::FORBIDDEN, e.to_string(), None),
                RegistryError::Unavailable(m) => (S::SERVICE_UNAVAILABLE, "service unavailable".into(), Some(m)),
                e => (S::INTERNAL_SERVER_ERROR, "internal error".into(), Some(e.to_string())),
            },
        }
    }
}

impl From<RegistryError> for JsonError {
    fn from(e: RegistryError) -> Self {
        JsonError::Registry(e)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let (status, message, cause) = self.describe();
        if let Some(cause) = cause.filter(|_| status.is_server_error()) {
            tracing::error!(status = status.as_u16(), cause, "JSON API request failed");
        }
        let body = json!({ "message": message, "url": "" });
        (status, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}
