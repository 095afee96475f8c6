//! The API key of standalone and container deployments (`PREPIS_API_KEY`). Under the
//! Functions host, function keys guard the routes and the host does not forward a client's
//! headers in payload mode, so the key is not checked there.

use warp::http::StatusCode;

use super::ApiError;

/// The refusal of a request without the key.
pub fn refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this service needs its API key: send it as `X-Api-Key: KEY` or `Authorization: Bearer KEY`",
    )
}
