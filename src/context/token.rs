//! The sealed context token: a stream's whole state, encrypted and authenticated with
//! XChaCha20-Poly1305 under a key all instances share, so that any instance can continue
//! any stream and nobody without the key can read or alter it (it holds transcript text).
//!
//! Layout, then base64url without padding: `version (1 byte) ‖ nonce (24) ‖ ciphertext`.
//! The plaintext is postcard-encoded `{issued_at, expires_at, state}`; the version byte is
//! authenticated as associated data. The nonce is derived from the plaintext with a keyed
//! hash (a synthetic IV), so sealing is deterministic: the same state gives the same token,
//! which keeps retried requests byte-identical. Distinct states never share a nonce.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::stream::StreamState;

/// The only token version this build writes and reads.
pub const VERSION: u8 = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A 256-bit key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct ContextKey([u8; 32]);

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

impl ContextKey {
    /// Parses a base64 (standard or URL-safe) 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
            })
            .map_err(|_| "not base64".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, 32 needed", b.len()))?;
        Ok(ContextKey(key))
    }

    /// A fresh random key (for a single local process only).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("the OS random source is unavailable");
        ContextKey(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    fn nonce_for(&self, plaintext: &[u8]) -> [u8; NONCE_LEN] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"prepis context nonce v1");
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        nonce
    }
}

/// The current key, and the previous one during a key rotation.
#[derive(Debug, Clone)]
pub struct ContextKeys {
    pub current: ContextKey,
    pub previous: Option<ContextKey>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("the context is not a prepis context token (bad encoding or truncated)")]
    Malformed,
    #[error("the context token has version {0}; this service reads version {VERSION}")]
    Version(u8),
    #[error("the context token was altered or sealed with another key")]
    Forged,
    #[error("the context token expired: the stream is older than its allowed lifetime")]
    Expired,
    #[error("the context token is larger than {0} bytes")]
    TooLarge(usize),
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Unix seconds when the stream began.
    issued_at: u64,
    /// Unix seconds after which the token is refused.
    expires_at: u64,
    state: StreamState,
}

/// An opened token.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub issued_at: u64,
    pub expires_at: u64,
    pub state: StreamState,
}

/// Seals a stream state.
pub fn seal(key: &ContextKey, issued_at: u64, expires_at: u64, state: &StreamState) -> String {
    let plaintext = postcard::to_stdvec(&Sealed {
        issued_at,
        expires_at,
        state: state.clone(),
    })
    .expect("stream state always serialises");
    let nonce = key.nonce_for(&plaintext);
    let aad = [VERSION];
    let ciphertext = key
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .expect("encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// Opens a token with the current or the previous key, checking expiry against `now`.
pub fn open(
    keys: &ContextKeys,
    token: &str,
    now: u64,
    max_len: usize,
) -> Result<Opened, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLarge(max_len));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim().trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    if bytes.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(TokenError::Malformed);
    }
    if bytes[0] != VERSION {
        return Err(TokenError::Version(bytes[0]));
    }
    let (nonce, ciphertext) = bytes[1..].split_at(NONCE_LEN);
    let aad = [VERSION];
    let plaintext = std::iter::once(&keys.current)
        .chain(keys.previous.iter())
        .find_map(|key| {
            key.cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .ok()
        })
        .ok_or(TokenError::Forged)?;
    let sealed: Sealed = postcard::from_bytes(&plaintext).map_err(|_| TokenError::Malformed)?;
    if now > sealed.expires_at {
        return Err(TokenError::Expired);
    }
    Ok(Opened {
        issued_at: sealed.issued_at,
        expires_at: sealed.expires_at,
        state: sealed.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::agreement::TimedWord;
    use crate::stream::TailAudio;

    fn keys() -> ContextKeys {
        ContextKeys {
            current: ContextKey([7; 32]),
            previous: None,
        }
    }

    fn state() -> StreamState {
        StreamState {
            id: 42,
            seq: 3,
            tail_start: 32_000,
            committed_until_ms: 2_000,
            received_until: 64_000,
            tail: TailAudio::MuLaw(vec![1, 2, 3]),
            tail_words: vec![],
            pending: vec![TimedWord {
                text: "secret".into(),
                start_ms: 2000,
                end_ms: 2400,
                probability_milli: 990,
            }],
            prompt: "my bank password is".into(),
            language: Some("en".into()),
            recording: None,
            speakers: Default::default(),
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let token = seal(&keys().current, 100, 200, &state());
        assert_eq!(token, seal(&keys().current, 100, 200, &state()));
        let opened = open(&keys(), &token, 150, 1 << 20).unwrap();
        assert_eq!(opened.state, state());
        assert_eq!((opened.issued_at, opened.expires_at), (100, 200));
    }

    #[test]
    fn content_is_not_readable_without_the_key() {
        let token = seal(&keys().current, 100, 200, &state());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        for needle in [&b"secret"[..], b"password", b"en"] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "{needle:?} visible"
            );
        }
    }

    #[test]
    fn every_tampering_is_refused() {
        let token = seal(&keys().current, 100, 200, &state());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        for i in 1..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bad);
            assert_eq!(
                open(&keys(), &bad, 150, 1 << 20),
                Err(TokenError::Forged),
                "byte {i}"
            );
        }
        let truncated = &token[..token.len() - 10];
        assert!(matches!(
            open(&keys(), truncated, 150, 1 << 20),
            Err(TokenError::Forged | TokenError::Malformed)
        ));
        assert_eq!(
            open(&keys(), "abc", 150, 1 << 20),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            open(&keys(), "!!!", 150, 1 << 20),
            Err(TokenError::Malformed)
        );
        let mut other_version = raw.clone();
        other_version[0] = 9;
        let other_version = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other_version);
        assert_eq!(
            open(&keys(), &other_version, 150, 1 << 20),
            Err(TokenError::Version(9))
        );
        assert_eq!(
            open(&keys(), &token, 150, 10),
            Err(TokenError::TooLarge(10))
        );
    }

    #[test]
    fn foreign_keys_expiry_and_rotation() {
        let token = seal(&keys().current, 100, 200, &state());
        let foreign = ContextKeys {
            current: ContextKey([8; 32]),
            previous: None,
        };
        assert_eq!(
            open(&foreign, &token, 150, 1 << 20),
            Err(TokenError::Forged)
        );
        assert_eq!(
            open(&keys(), &token, 201, 1 << 20),
            Err(TokenError::Expired)
        );
        let rotated = ContextKeys {
            current: ContextKey([8; 32]),
            previous: Some(ContextKey([7; 32])),
        };
        assert!(open(&rotated, &token, 150, 1 << 20).is_ok());
    }

    #[test]
    fn keys_parse_from_base64_and_hide_in_debug() {
        let text = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        let key = ContextKey::from_base64(&text).unwrap();
        assert_eq!(format!("{key:?}"), "ContextKey(..)");
        assert!(ContextKey::from_base64("c2hvcnQ=").is_err());
        assert!(ContextKey::from_base64("not base64!").is_err());
    }
}
