//! Any body with no declared type: sniffing, then the WAV, WebM, Ogg, MP4, MP3 and FLAC
//! demuxers and their decoders (symphonia, libopus). Must never panic or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prepis::audio::{decode_chunk, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let _ = decode_chunk(data, None, DecodeLimits { max_seconds: 30.0 });
});
