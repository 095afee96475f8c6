//! The API key of standalone and container deployments (`PREPIS_API_KEY`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::http::{header, HeaderMap};

/// The configured key, kept as its SHA-256 so that comparing takes the same time whatever
/// the presented key's length or content.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl ApiKey {
    pub fn new(key: &str) -> ApiKey {
        ApiKey(Sha256::digest(key.as_bytes()).into())
    }

    /// Whether the request presents the key, as `X-Api-Key: KEY` or
    /// `Authorization: Bearer KEY`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn admits_the_key_in_either_header_and_nothing_else() {
        let key = ApiKey::new("s3cret-key");
        assert!(key.admits(&headers("x-api-key", "s3cret-key")));
        assert!(key.admits(&headers("authorization", "Bearer s3cret-key")));
        assert!(!key.admits(&headers("x-api-key", "s3cret-kez")));
        assert!(!key.admits(&headers("x-api-key", "s3cret-key-and-more")));
        assert!(!key.admits(&headers("x-api-key", "")));
        assert!(!key.admits(&headers("authorization", "Basic s3cret-key")));
        assert!(!key.admits(&HeaderMap::new()));
        assert_eq!(format!("{key:?}"), "ApiKey(hidden)");
    }
}
