//! The answers for paths and methods no route has (what every request
//! passes is in [`crate::envelope`]).

use axum::response::{IntoResponse, Response};
use http::Uri;

use crate::envelope::Unrouted;
use crate::error::ApiError;
use crate::error::json::JsonError;

/// No route for the path: in the JSON API's shape under `/api/v1/`, else OCI's.
pub async fn no_such_route(uri: Uri) -> Response {
    let mut response = if uri.path().starts_with("/api/v1/") {
        JsonError::NoSuchRoute.into_response()
    } else {
        ApiError::NoSuchRoute.into_response()
    };
    response.extensions_mut().insert(Unrouted);
    response
}

/// The path has a route, the method has none (the JSON API's routes answer
/// for themselves: `handlers::json_api::method_not_allowed`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
