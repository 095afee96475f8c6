//! The context-token opener, against what an attacker can do with a real token: flip bits,
//! cut it, splice it, replay it under another key, or send anything at all. It must never
//! panic, and nothing but the untouched token (modulo padding and surrounding whitespace,
//! which do not change its bytes) may open: AEAD with the version byte as associated data.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use prepis::context::token::{open, seal};
use prepis::context::{ContextKey, ContextKeys, TokenError};
use prepis::stream::StreamState;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
const NOW: u64 = 1_700_000_000;

fn keys(current: &str, previous: Option<&str>) -> ContextKeys {
    ContextKeys {
        current: ContextKey::from_base64(current).unwrap(),
        previous: previous.map(|p| ContextKey::from_base64(p).unwrap()),
    }
}

fn decoded(token: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim().trim_end_matches('='))
        .ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let state = StreamState {
        id: u64::from_le_bytes(rest.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([1; 8])),
        seq: rest.len() as u64,
        ..StreamState::default()
    };
    let ours = keys(KEY, None);
    let token = seal(&ours.current, NOW, NOW + 3600, &state);
    let mut bytes = decoded(&token).unwrap();
    let candidate = match op % 6 {
        // Anything at all.
        0 => String::from_utf8_lossy(rest).into_owned(),
        // Flip the bits the input names.
        1 => {
            for pair in rest.chunks_exact(2) {
                let at = (pair[0] as usize * 7 + pair[1] as usize) % bytes.len();
                bytes[at] ^= pair[1] | 1;
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)
        }
        // Cut it.
        2 => {
            let keep = rest.first().map_or(0, |b| *b as usize * bytes.len() / 256);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..keep])
        }
        // Splice input bytes into it.
        3 => {
            let at = rest.first().map_or(0, |b| *b as usize % bytes.len());
            bytes.splice(at..at, rest.iter().copied());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)
        }
        // Edit the text itself.
        4 => {
            let mut text = token.clone().into_bytes();
            for pair in rest.chunks_exact(2) {
                let at = pair[0] as usize * 31 % text.len();
                text[at] = pair[1];
            }
            String::from_utf8_lossy(&text).into_owned()
        }
        // Replay under another key: refused, whatever the input.
        _ => {
            let theirs = keys(OTHER, None);
            assert_eq!(open(&theirs, &token, NOW, 1 << 20), Err(TokenError::Forged));
            // And accepted again during a rotation that still lists our key.
            let rotated = keys(OTHER, Some(KEY));
            assert_eq!(open(&rotated, &token, NOW, 1 << 20).unwrap().state, state);
            return;
        }
    };
    if let Ok(opened) = open(&ours, &candidate, NOW, 1 << 20) {
        assert_eq!(
            decoded(&candidate).as_deref(),
            decoded(&token).as_deref(),
            "a changed token opened"
        );
        assert_eq!(opened.state, state);
    }
});
