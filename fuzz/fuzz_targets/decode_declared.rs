//! A body with a declared type, chosen by the first byte: raw PCM in every encoding the
//! service accepts (the only decoder prepis writes itself), and containers declared so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prepis::audio::{decode_chunk, DecodeLimits};

const TYPES: &[&str] = &[
    "audio/L16;rate=16000",
    "audio/L16;rate=8000;channels=2",
    "audio/pcm;rate=48000;encoding=f32le;channels=2",
    "audio/pcm;rate=22050;encoding=s16le",
    "audio/pcm;rate=1000;encoding=u8",
    "audio/wav",
    "audio/webm;codecs=opus",
    "audio/ogg",
    "audio/mp4",
    "application/octet-stream",
];

/// prepis contains panics inside third-party decoders with `catch_unwind` (the request gets
/// a 422): they must not stop the run. A panic that escapes still aborts and is reported.
static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let declared = TYPES[choice as usize % TYPES.len()];
    let _ = decode_chunk(body, Some(declared), DecodeLimits { max_seconds: 30.0 });
});
