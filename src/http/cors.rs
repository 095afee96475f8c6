//! CORS for a page served from another origin when the handler answers browsers directly
//! (container mode). Under the Functions host the platform's CORS setting applies instead.

use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

/// The request's `Origin` when `PREPIS_CORS_ORIGINS` allows it (`*` allows any).
pub fn allowed_origin(allowed: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// The answer to a preflight `OPTIONS`: what a cross-origin page may send.
pub fn preflight(origin: Option<HeaderValue>) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if origin.is_some() {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, X-Prepis-Context, X-Api-Key, Authorization"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    allow(&mut response, origin);
    response
}

/// Lets an allowed origin read the response (and its `Retry-After`).
pub fn allow(response: &mut Response, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let list = vec!["https://captions.example".to_string()];
        assert!(allowed_origin(&list, &with_origin("https://captions.example")).is_some());
        assert!(allowed_origin(&list, &with_origin("https://evil.example")).is_none());
        assert!(allowed_origin(&[], &with_origin("https://captions.example")).is_none());
        assert!(allowed_origin(&["*".into()], &with_origin("https://any.example")).is_some());
        assert!(allowed_origin(&list, &HeaderMap::new()).is_none());

        let origin = allowed_origin(&list, &with_origin("https://captions.example"));
        let response = preflight(origin);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://captions.example"
        );
        assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("X-Prepis-Context"));
        let refused = preflight(None);
        assert!(refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
    }
}
