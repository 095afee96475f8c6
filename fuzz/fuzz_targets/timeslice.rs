//! A recording cut into three timeslice blobs at fuzzed offsets: the first begins the
//! recording (its header is kept), the others resume it, as on three instances.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prepis::audio::{decode_stream_chunk, DecodeLimits};

/// prepis contains panics inside third-party decoders with `catch_unwind` (the request gets
/// a 422): they must not stop the run. A panic that escapes still aborts and is reported.
static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((cuts, body)) = data.split_at_checked(4) else {
        return;
    };
    let limits = DecodeLimits { max_seconds: 30.0 };
    let len = body.len().max(1);
    let a = u16::from_le_bytes([cuts[0], cuts[1]]) as usize % len;
    let b = (a + u16::from_le_bytes([cuts[2], cuts[3]]) as usize % len).min(body.len());
    let blobs = [&body[..a], &body[a..b], &body[b..]];
    let mut kept = None;
    for (i, blob) in blobs.iter().enumerate() {
        match decode_stream_chunk(blob, Some("audio/webm"), limits, kept.as_ref(), i == 2) {
            Ok((_, recording)) => kept = recording,
            Err(_) => return,
        }
    }
});
