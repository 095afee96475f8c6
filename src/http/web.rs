//! The live-captions page (`web/`), built into the binary and served at `/` when the handler
//! runs standalone. Under the Functions host only `/api/*` reaches the handler: deploy `web/`
//! as a static site there (see docs/api.md on CORS).

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// (path, media type, contents) of every file of the page.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/capture.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/capture.js"),
    ),
    (
        "/pcm-worklet.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/pcm-worklet.js"),
    ),
    (
        "/stream.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/stream.js"),
    ),
    (
        "/transcript.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/transcript.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

/// The page's file at `path` (`""` is the page itself), if there is one.
pub fn file(path: &str) -> Option<Response> {
    let path = if path.is_empty() { "/index.html" } else { path };
    let (_, media_type, contents) = FILES.iter().find(|(p, _, _)| *p == path)?;
    let mut response = Response::new((*contents).into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; media-src 'self' blob:; object-src 'none'; base-uri 'none'",
        ),
    );
    Some(response)
}

/// Whether a request for `/` comes from a browser (it asks for HTML), not a probe.
pub fn wants_page(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_served_with_their_types() {
        let page = file("").unwrap();
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        // Every module the page imports is served.
        for (_, _, contents) in FILES {
            for line in contents.lines().filter(|l| l.starts_with("import ")) {
                let name = line.rsplit_once("'./").unwrap().1.trim_end_matches("';");
                assert!(file(&format!("/{name}")).is_some(), "{name}");
            }
        }
        assert!(file("/Cargo.toml").is_none());
        assert!(wants_page(Some("text/html,application/xhtml+xml")));
        assert!(!wants_page(None));
    }
}
