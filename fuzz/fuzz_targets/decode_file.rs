//! Any body with no declared type: sniffing, then the WAV, WebM, Ogg, MP4, MP3 and FLAC
//! demuxers and their decoders (symphonia, libopus). Must never panic or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prepis::audio::{decode_chunk, DecodeLimits};

/// prepis contains panics inside third-party decoders with `catch_unwind` (the request gets
/// a 422): they must not stop the run. A panic that escapes still aborts and is reported.
static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = decode_chunk(data, None, DecodeLimits { max_seconds: 30.0 });
});
