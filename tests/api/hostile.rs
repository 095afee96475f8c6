//! Hostile input: a corpus of well over 200 malformed requests, sent byte for byte over raw
//! TCP to the real handler (so that broken framing reaches it as sent): broken multipart,
//! wrong or lying content types, giant headers, huge declared lengths, truncated bodies,
//! audio headers declaring hours of samples, NaN/inf floats, 0 Hz and absurd sample rates,
//! deeply nested JSON, invalid base64, invalid UTF-8, forged and damaged context tokens.
//! Each must get its expected status with a JSON error (`{"error": {"code", "message"}}`),
//! never a 5xx, never a silent empty 200; and afterwards the same process serves as before.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::util::{client, librivox, read_wav_i16, Server};
use serde_json::Value;

/// What a case may get back.
#[derive(Clone, Copy)]
enum Expect {
    /// One of these statuses (a 200 must carry words or a warning).
    Status(&'static [u16]),
    /// One of these, or the connection closed without an answer (framing the server cannot
    /// read, where HTTP has no way to answer).
    StatusOrClosed(&'static [u16]),
}

struct Case {
    name: String,
    request: Vec<u8>,
    /// Stop sending after this many bytes of `request` and half-close (a truncated body).
    cut: Option<usize>,
    expect: Expect,
}

const CLIENT_ERROR: &[u16] = &[400, 413, 415, 422];
const UNDECODABLE: &[u16] = &[415, 422];
const DECODES_OR_REFUSED: &[u16] = &[200, 415, 422];
const BAD_REQUEST: &[u16] = &[400];

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: prepis\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn post(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    post_to("/api/transcribe", content_type, body)
}

fn post_to(target: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("Content-Type", t))
        .into_iter()
        .collect();
    request("POST", target, &headers, body)
}

/// Raw bytes, sent as given (no Content-Length added).
fn raw(text: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

fn case(name: impl Into<String>, request: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        request,
        cut: None,
        expect,
    }
}

/// Deterministic pseudo-random bytes (xorshift), so the corpus is the same every run.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn speech() -> Vec<i16> {
    let (rate, pcm) = read_wav_i16(&librivox()[0].path);
    assert_eq!(rate, 16_000);
    pcm
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/formats")
            .join(name),
    )
    .unwrap()
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// A WAV header with every field chosen by the caller, then `data`.
fn wav_header(channels: u16, rate: u32, bits: u16, data_len: u32, data: &[u8]) -> Vec<u8> {
    let mut w = b"RIFF".to_vec();
    w.extend(le32(data_len.saturating_add(36)));
    w.extend(b"WAVEfmt ");
    w.extend(le32(16));
    w.extend(1u16.to_le_bytes());
    w.extend(channels.to_le_bytes());
    w.extend(le32(rate));
    w.extend(le32(rate.wrapping_mul(channels as u32 * bits as u32 / 8)));
    w.extend((channels.wrapping_mul(bits / 8)).to_le_bytes());
    w.extend(bits.to_le_bytes());
    w.extend(b"data");
    w.extend(le32(data_len));
    w.extend_from_slice(data);
    w
}

/// A plain 16 kHz mono 16-bit WAV.
fn wav16(pcm: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav_header(1, 16_000, 16, data.len() as u32, &data)
}

fn multipart(boundary: &str, parts: &str) -> Vec<u8> {
    parts
        .replace("{b}", boundary)
        .replace('\n', "\r\n")
        .into_bytes()
}

fn corpus(token: &str) -> Vec<Case> {
    let speech = speech();
    let wav = wav16(&speech[..32_000]);
    let pcm: Vec<u8> = speech[..32_000]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("wav", wav.clone()),
        ("flac", fixture("speech.flac")),
        ("mp3", fixture("speech.mp3")),
        ("ogg", fixture("speech.ogg")),
        ("webm", fixture("speech-live.webm")),
        ("m4a", fixture("speech-frag.m4a")),
    ];
    let mut cases = Vec::new();

    // Random bytes under every content type a client might claim.
    let types = [
        None,
        Some("audio/wav"),
        Some("audio/webm;codecs=opus"),
        Some("audio/ogg"),
        Some("audio/mpeg"),
        Some("audio/mp4"),
        Some("audio/flac"),
        Some("application/octet-stream"),
    ];
    for (t, ty) in types.iter().enumerate() {
        for (s, len) in [1usize, 17, 512, 4096, 65_536, 300_000]
            .into_iter()
            .enumerate()
        {
            let body = noise((t * 10 + s) as u64, len);
            cases.push(case(
                format!("noise {len} B as {ty:?}"),
                post(*ty, &body),
                Expect::Status(UNDECODABLE),
            ));
        }
    }

    // Real audio under lying or wrong content types: sniffed and transcribed, or refused;
    // never a 5xx.
    let liars: [(&str, Expect); 8] = [
        ("audio/wav", Expect::Status(DECODES_OR_REFUSED)),
        ("audio/mpeg", Expect::Status(DECODES_OR_REFUSED)),
        ("audio/ogg;codecs=opus", Expect::Status(DECODES_OR_REFUSED)),
        ("video/webm", Expect::Status(DECODES_OR_REFUSED)),
        ("image/png", Expect::Status(DECODES_OR_REFUSED)),
        (
            "text/plain;charset=utf-8",
            Expect::Status(DECODES_OR_REFUSED),
        ),
        ("application/json", Expect::Status(BAD_REQUEST)),
        ("multipart/form-data", Expect::Status(BAD_REQUEST)),
    ];
    for (name, body) in &files {
        for (ty, expect) in liars {
            cases.push(case(
                format!("{name} sent as {ty}"),
                post(Some(ty), body),
                expect,
            ));
        }
    }

    // Truncated files (the client stopped mid-file): what is there is transcribed, or the
    // file is refused.
    for (name, body) in &files {
        for cut in [4, 12, 44, 200, body.len() * 2 / 5, body.len() * 4 / 5] {
            let cut = cut.min(body.len() - 1);
            cases.push(case(
                format!("{name} cut at {cut} of {} bytes", body.len()),
                post(None, &body[..cut]),
                Expect::Status(DECODES_OR_REFUSED),
            ));
        }
    }

    // Truncated bodies (Content-Length promises more than arrives, then the client stops).
    for (name, body) in files.iter().take(3) {
        let full = post(Some("audio/wav"), body);
        for keep in [10, body.len() / 2] {
            let mut c = case(
                format!("{name} body cut at {keep} of {} declared", body.len()),
                full.clone(),
                Expect::StatusOrClosed(BAD_REQUEST),
            );
            c.cut = Some(full.len() - body.len() + keep);
            cases.push(c);
        }
    }

    // Broken multipart.
    let b = "XyZ123";
    let good_part = |data: &str| {
        format!("--{{b}}\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"a.wav\"\nContent-Type: audio/wav\n\n{data}\n--{{b}}--\n")
    };
    let mut parts: Vec<(String, String, Vec<u8>)> = vec![
        ("no boundary".into(), "multipart/form-data".into(), multipart(b, &good_part("x"))),
        ("wrong boundary".into(), "multipart/form-data; boundary=Other".into(), multipart(b, &good_part("x"))),
        ("no closing delimiter".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, "--{b}\nContent-Disposition: form-data; name=\"audio_file\"\n\nabc")),
        ("no audio_file field".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, "--{b}\nContent-Disposition: form-data; name=\"other\"\n\nabc\n--{b}--\n")),
        ("empty audio_file".into(), format!("multipart/form-data; boundary={b}"), multipart(b, &good_part(""))),
        ("noise in audio_file".into(), format!("multipart/form-data; boundary={b}"), multipart(b, &good_part("RIFF\u{1}\u{2}garbage"))),
        ("no content-disposition".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, "--{b}\nContent-Type: audio/wav\n\nabc\n--{b}--\n")),
        ("unterminated name quote".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, "--{b}\nContent-Disposition: form-data; name=\"audio_file\n\nabc\n--{b}--\n")),
        ("only the closing delimiter".into(), format!("multipart/form-data; boundary={b}"), multipart(b, "--{b}--\n")),
        ("empty body".into(), format!("multipart/form-data; boundary={b}"), Vec::new()),
        ("garbage instead of parts".into(), format!("multipart/form-data; boundary={b}"), noise(99, 3000)),
        ("LF-only line ends".into(), format!("multipart/form-data; boundary={b}"),
            good_part("abc").replace("{b}", b).into_bytes()),
        ("71-char boundary".into(), format!("multipart/form-data; boundary={}", "b".repeat(71)), multipart(&"b".repeat(71), &good_part("x"))),
        ("bad language field".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, "--{b}\nContent-Disposition: form-data; name=\"language\"\n\nklingon-xx\n--{b}\nContent-Disposition: form-data; name=\"audio_file\"\nContent-Type: audio/wav\n\nRIFF\n--{b}--\n")),
        ("invalid UTF-8 text field".into(), format!("multipart/form-data; boundary={b}"), {
            let mut v = multipart(b, "--{b}\nContent-Disposition: form-data; name=\"final\"\n\n");
            v.extend([0xff, 0xfe, 0xfd]);
            v.extend(multipart(b, &format!("\n{}", good_part("x"))));
            v
        }),
        ("huge part header".into(), format!("multipart/form-data; boundary={b}"),
            multipart(b, &format!("--{{b}}\nContent-Disposition: form-data; name=\"audio_file\"\nX-Junk: {}\n\nabc\n--{{b}}--\n", "j".repeat(200_000)))),
    ];
    // Real audio in a multipart part whose declared type lies.
    parts.push(("wav part typed text/plain".into(), format!("multipart/form-data; boundary={b}"), {
        let mut v = multipart(b, "--{b}\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"a\"\nContent-Type: text/plain\n\n");
        v.extend_from_slice(&wav);
        v.extend(multipart(b, "\n--{b}--\n"));
        v
    }));
    for (name, ty, body) in parts {
        let expect = if name.contains("typed text/plain") {
            DECODES_OR_REFUSED
        } else {
            CLIENT_ERROR
        };
        cases.push(case(
            format!("multipart: {name}"),
            post(Some(&ty), &body),
            Expect::Status(expect),
        ));
    }

    // Headers: giant, many, invalid bytes, broken lines.
    for size in [70_000usize, 200_000, 1_100_000, 4_000_000] {
        let big = "a".repeat(size);
        // Context tokens are tens of KB and may reach 400 KB: such headers are accepted.
        let expect = if size <= 200_000 {
            Expect::Status(&[200])
        } else {
            Expect::StatusOrClosed(&[400, 413, 431])
        };
        cases.push(case(
            format!("{size} B header"),
            request(
                "POST",
                "/api/transcribe",
                &[("X-Junk", &big), ("Content-Type", "audio/wav")],
                &wav,
            ),
            expect,
        ));
    }
    for count in [120usize, 2_000] {
        let mut text =
            "POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
        for i in 0..count {
            text.push_str(&format!("X-H{i}: v\r\n"));
        }
        text.push_str(&format!(
            "Content-Type: audio/wav\r\nContent-Length: {}\r\n\r\n",
            wav.len()
        ));
        cases.push(case(
            format!("{count} headers"),
            raw(&text, &wav),
            Expect::StatusOrClosed(&[200, 400, 431]),
        ));
    }
    cases.push(case("context header with invalid UTF-8", raw(
        "POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: audio/wav\r\nX-Prepis-Context: \u{ff}abc\r\nContent-Length: 4\r\n\r\n", b"RIFF"),
        Expect::StatusOrClosed(BAD_REQUEST)));
    let mut latin1 =
        b"POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Prepis-Context: "
            .to_vec();
    latin1.extend([0xff, 0xfe, 0x80]);
    latin1.extend(
        format!(
            "\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\n\r\n",
            wav.len()
        )
        .as_bytes(),
    );
    latin1.extend_from_slice(&wav);
    cases.push(case(
        "context header with raw 0xff bytes",
        latin1,
        Expect::StatusOrClosed(BAD_REQUEST),
    ));
    cases.push(case("header line without a colon", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nBroken header line\r\nContent-Length: 0\r\n\r\n", b""), Expect::StatusOrClosed(BAD_REQUEST)));
    cases.push(case("obsolete line folding", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n  folded\r\nContent-Length: 0\r\n\r\n", b""), Expect::StatusOrClosed(BAD_REQUEST)));
    cases.push(case(
        "content type with garbage parameters",
        post(Some("audio/pcm;;;rate=;=;channels"), &pcm),
        Expect::Status(&[200, 415, 422]),
    ));
    cases.push(case("NUL in content type", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/w\0av\r\nContent-Length: 0\r\n\r\n", b""), Expect::StatusOrClosed(BAD_REQUEST)));

    // Slow clients: headers that never finish (closed after PREPIS_READ_TIMEOUT_SECONDS).
    for (name, text) in [
        ("half a request line", "POST /api/trans"),
        (
            "headers that never end",
            "POST /api/transcribe HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
        ),
    ] {
        cases.push(case(
            format!("stalled: {name}"),
            raw(text, b""),
            Expect::StatusOrClosed(&[408]),
        ));
    }

    // Declared lengths and framing.
    for cl in [
        "1000000000000",
        "18446744073709551616",
        "-1",
        "abc",
        "1e9",
        " 44",
    ] {
        let expect = if cl == "1000000000000" {
            Expect::StatusOrClosed(&[413])
        } else {
            Expect::StatusOrClosed(&[400, 408, 413])
        };
        cases.push(case(format!("Content-Length: {cl}"), raw(&format!("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: audio/wav\r\nContent-Length: {cl}\r\n\r\n"), b"RIFF"), expect));
    }
    cases.push(case("two different Content-Lengths", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 9\r\n\r\n", b"RIFF"), Expect::StatusOrClosed(BAD_REQUEST)));
    cases.push(case("Content-Length and chunked", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", b"4\r\nRIFF\r\n0\r\n\r\n"), Expect::StatusOrClosed(&[400, 415, 422])));
    cases.push(case("bad chunk size", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\nRIFF\r\n0\r\n\r\n"), Expect::StatusOrClosed(BAD_REQUEST)));
    cases.push(case("huge chunk size", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n", b"fffffffffffffff\r\nRIFF"), Expect::StatusOrClosed(&[400, 408, 413])));
    cases.push(case("unknown transfer coding", raw("POST /api/transcribe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: gzip\r\n\r\n", b"RIFF"), Expect::StatusOrClosed(&[400, 501])));
    cases.push(case(
        "HTTP/0.9-style request line",
        raw("POST /api/transcribe\r\n\r\n", b""),
        Expect::StatusOrClosed(BAD_REQUEST),
    ));
    cases.push(case(
        "binary request line",
        noise(7, 300),
        Expect::StatusOrClosed(BAD_REQUEST),
    ));

    // Audio headers that declare far more than they carry, or absurd layouts.
    let second: Vec<u8> = speech[..16_000]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let bombs: Vec<(&str, Vec<u8>, &'static [u16])> = vec![
        (
            "WAV declaring 4 GB of data",
            wav_header(1, 16_000, 16, u32::MAX, &second),
            &[200, 422],
        ),
        (
            "WAV declaring 65535 channels",
            wav_header(65_535, 16_000, 16, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV at 0 Hz",
            wav_header(1, 0, 16, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV at 1 Hz (hours of samples)",
            wav_header(1, 1, 16, 32_000, &second),
            &[413, 415, 422],
        ),
        (
            "WAV at 4 GHz",
            wav_header(1, u32::MAX, 16, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV with 0 bits per sample",
            wav_header(1, 16_000, 0, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV with 7 bits per sample",
            wav_header(1, 16_000, 7, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV with 0 channels",
            wav_header(0, 16_000, 16, 32_000, &second),
            UNDECODABLE,
        ),
        (
            "WAV header only, 4 GB declared",
            wav_header(1, 16_000, 16, u32::MAX, &[]),
            UNDECODABLE,
        ),
        (
            "RIFF without fmt",
            b"RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff".to_vec(),
            UNDECODABLE,
        ),
        (
            "FLAC with a forged STREAMINFO",
            {
                let mut f = fixture("speech.flac");
                // total samples: the low 36 bits of bytes 18..26 of the stream; all ones.
                for b in &mut f[22..26] {
                    *b = 0xff;
                }
                f[21] |= 0x0f;
                f
            },
            DECODES_OR_REFUSED,
        ),
    ];
    for (name, body, expect) in bombs {
        cases.push(case(
            name,
            post(Some("audio/wav"), &body),
            Expect::Status(expect),
        ));
    }
    // Raw PCM: rates, layouts, lengths.
    for (ty, expect) in [
        ("audio/pcm;rate=0", UNDECODABLE),
        ("audio/pcm;rate=1", &[413, 422][..]),
        ("audio/pcm;rate=99999999", UNDECODABLE),
        ("audio/pcm;rate=-16000", UNDECODABLE),
        ("audio/pcm;rate=16000.5", UNDECODABLE),
        ("audio/pcm;rate=18446744073709551617", UNDECODABLE),
        ("audio/pcm;channels=0", UNDECODABLE),
        ("audio/pcm;channels=1000", UNDECODABLE),
        ("audio/pcm;encoding=s64le", UNDECODABLE),
        ("audio/pcm;encoding=", UNDECODABLE),
        ("audio/l16;rate=16000", &[200][..]),
    ] {
        cases.push(case(
            format!("PCM as {ty}"),
            post(Some(ty), &pcm),
            Expect::Status(expect),
        ));
    }
    let long = vec![0u8; 8_000 * 2 * 301];
    cases.push(case(
        "301 s of PCM in one request",
        post(Some("audio/pcm;rate=8000"), &long),
        Expect::Status(&[413]),
    ));
    cases.push(case(
        "one odd byte of PCM",
        post(Some("audio/pcm"), &[1]),
        Expect::Status(&[400, 422]),
    ));

    // Floats: NaN, infinities, huge values.
    let floats = |f: &dyn Fn(usize) -> f32| -> Vec<u8> {
        (0..32_000).flat_map(|i| f(i).to_le_bytes()).collect()
    };
    let speech_f = |i: usize| speech[i] as f32 / 32768.0;
    for (name, body, expect) in [
        ("all NaN", floats(&|_| f32::NAN), UNDECODABLE),
        ("all +inf", floats(&|_| f32::INFINITY), UNDECODABLE),
        (
            "alternating -inf and NaN",
            floats(&|i| {
                if i % 2 == 0 {
                    f32::NEG_INFINITY
                } else {
                    f32::NAN
                }
            }),
            UNDECODABLE,
        ),
        (
            "half NaN",
            floats(&|i| if i % 2 == 0 { f32::NAN } else { speech_f(i) }),
            UNDECODABLE,
        ),
        (
            "speech with 0.5 % NaN",
            floats(&|i| if i % 200 == 0 { f32::NAN } else { speech_f(i) }),
            &[200][..],
        ),
        (
            "speech at 1e30",
            floats(&|i| speech_f(i) * 1e30),
            &[200][..],
        ),
        (
            "subnormals",
            floats(&|_| f32::MIN_POSITIVE / 2.0),
            &[200, 422][..],
        ),
    ] {
        cases.push(case(
            format!("f32 PCM: {name}"),
            post(Some("audio/pcm;encoding=f32le"), &body),
            Expect::Status(expect),
        ));
    }

    // JSON bodies.
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let deep_objects = "{\"a\":".repeat(100_000) + &"}".repeat(100_000);
    let deep_arrays = "[".repeat(100_000) + &"]".repeat(100_000);
    let json_cases: Vec<(&str, Vec<u8>, &'static [u16])> = vec![
        ("empty", b"".to_vec(), BAD_REQUEST),
        ("not JSON", b"hello".to_vec(), BAD_REQUEST),
        (
            "truncated",
            format!("{{\"audio\": \"{}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "trailing garbage",
            format!("{{\"audio\": \"{}\"}} xyz", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "100 000 nested objects",
            deep_objects.into_bytes(),
            BAD_REQUEST,
        ),
        (
            "100 000 nested arrays",
            deep_arrays.into_bytes(),
            BAD_REQUEST,
        ),
        ("top-level array", b"[1,2,3]".to_vec(), BAD_REQUEST),
        ("empty object", b"{}".to_vec(), BAD_REQUEST),
        (
            "audio is a number",
            b"{\"audio\": 12}".to_vec(),
            BAD_REQUEST,
        ),
        ("audio is null", b"{\"audio\": null}".to_vec(), BAD_REQUEST),
        (
            "audio is an array",
            b"{\"audio\": [1,2]}".to_vec(),
            BAD_REQUEST,
        ),
        (
            "audio is not base64",
            b"{\"audio\": \"!!!not base64!!!\"}".to_vec(),
            BAD_REQUEST,
        ),
        (
            "audio base64 with a bad tail",
            format!("{{\"audio\": \"{}=\"}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        ("audio is empty", b"{\"audio\": \"\"}".to_vec(), BAD_REQUEST),
        (
            "audio is noise",
            format!("{{\"audio\": \"{}\"}}", b64(&noise(5, 5000))).into_bytes(),
            UNDECODABLE,
        ),
        (
            "unknown field",
            format!("{{\"audio\": \"{}\", \"evil\": 1}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "duplicate audio field",
            format!("{{\"audio\": \"{0}\", \"audio\": \"{0}\"}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "seq is negative",
            format!("{{\"audio\": \"{}\", \"seq\": -1}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "seq is 1e400",
            format!("{{\"audio\": \"{}\", \"seq\": 1e400}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "final is a string",
            format!("{{\"audio\": \"{}\", \"final\": \"yes\"}}", b64(&wav)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "max_speakers is huge",
            format!(
                "{{\"audio\": \"{}\", \"max_speakers\": 99999999999}}",
                b64(&wav)
            )
            .into_bytes(),
            BAD_REQUEST,
        ),
        (
            "language is nonsense",
            format!(
                "{{\"audio\": \"{}\", \"language\": \"klingon\"}}",
                b64(&wav)
            )
            .into_bytes(),
            BAD_REQUEST,
        ),
        (
            "format is nonsense",
            format!(
                "{{\"audio\": \"{}\", \"format\": \"x/y\"}}",
                b64(&noise(3, 3000))
            )
            .into_bytes(),
            UNDECODABLE,
        ),
        (
            "invalid UTF-8 in a string",
            {
                let mut v = b"{\"audio\": \"".to_vec();
                v.extend([0xff, 0xfe]);
                v.extend(b"\"}");
                v
            },
            BAD_REQUEST,
        ),
        (
            "UTF-16 with BOM",
            {
                let text = format!("{{\"audio\": \"{}\"}}", b64(&wav[..100]));
                let mut v = vec![0xff, 0xfe];
                v.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
                v
            },
            BAD_REQUEST,
        ),
        (
            "lone surrogate escape",
            b"{\"audio\": \"\\ud800\"}".to_vec(),
            BAD_REQUEST,
        ),
        ("NUL bytes", b"{\"audio\"\0: \"\"}".to_vec(), BAD_REQUEST),
    ];
    for (name, body, expect) in json_cases {
        cases.push(case(
            format!("JSON: {name}"),
            post(Some("application/json"), &body),
            Expect::Status(expect),
        ));
    }

    // Query strings.
    for (query, expect) in [
        ("language=klingon", BAD_REQUEST),
        ("language=", &[200, 400][..]),
        ("language=%ff%fe", BAD_REQUEST),
        ("language=%00", BAD_REQUEST),
        ("language=e%00n", BAD_REQUEST),
        ("prompt=a%00b", &[200][..]),
        ("final=maybe", BAD_REQUEST),
        ("final=%00", BAD_REQUEST),
        ("seq=0", BAD_REQUEST),
        ("seq=-1", BAD_REQUEST),
        ("seq=abc", BAD_REQUEST),
        ("seq=99999999999999999999999", BAD_REQUEST),
        ("max_speakers=0", BAD_REQUEST),
        ("max_speakers=-3", BAD_REQUEST),
        ("max_speakers=100000", BAD_REQUEST),
        ("min_speakers=x", BAD_REQUEST),
        ("diarize=2", BAD_REQUEST),
        ("session_id=x", BAD_REQUEST),
        ("session_id=%2e%2e%2f%2e%2e", BAD_REQUEST),
        ("context=!!!", BAD_REQUEST),
        ("format=audio/x-nonsense", &[200, 415, 422][..]),
        ("%zz=1", &[200, 400][..]),
        ("language=en&language=de&language=%ff", BAD_REQUEST),
    ] {
        cases.push(case(
            format!("query {query}"),
            post_to(&format!("/api/transcribe?{query}"), Some("audio/wav"), &wav),
            Expect::Status(expect),
        ));
    }

    // Context tokens: forged, damaged, replayed under another key, oversized.
    let bytes = token.as_bytes();
    let mut flipped_cases = Vec::new();
    for (i, pos) in [0usize, 5, bytes.len() / 3, bytes.len() / 2, bytes.len() - 3]
        .into_iter()
        .enumerate()
    {
        let mut t = bytes.to_vec();
        t[pos] = if t[pos] == b'A' { b'B' } else { b'A' };
        flipped_cases.push((
            format!("token with byte {pos} changed ({i})"),
            String::from_utf8(t).unwrap(),
        ));
    }
    flipped_cases.push((
        "token cut in half".into(),
        token[..token.len() / 2].to_string(),
    ));
    flipped_cases.push((
        "token minus its last byte".into(),
        token[..token.len() - 1].to_string(),
    ));
    flipped_cases.push(("token twice".into(), format!("{token}{token}")));
    flipped_cases.push(("token of noise".into(), {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(noise(11, 4000))
    }));
    flipped_cases.push(("token not base64".into(), "%%%%not-a-token%%%%".into()));
    flipped_cases.push(("600 KB token".into(), "A".repeat(600_000)));
    for (name, t) in flipped_cases {
        let expect: &'static [u16] = if name.starts_with("600") {
            &[400, 413, 431]
        } else {
            &[400, 401, 403]
        };
        cases.push(case(
            name,
            request(
                "POST",
                "/api/transcribe",
                &[("Content-Type", "audio/wav"), ("X-Prepis-Context", &t)],
                &wav,
            ),
            Expect::StatusOrClosed(expect),
        ));
    }

    // Methods and paths.
    for (method, target, expect) in [
        ("PUT", "/api/transcribe", &[405][..]),
        ("PATCH", "/api/transcribe", &[405]),
        ("TRACE", "/api/transcribe", &[405]),
        ("GET", "/api/transcribe", &[400]),
        ("DELETE", "/api/transcribe?session_id=a", &[400]),
        ("GET", "/api/../../etc/passwd", &[400, 404]),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd", &[404]),
        ("BREW", "/api/transcribe", &[400, 405]),
    ] {
        cases.push(case(
            format!("{method} {target}"),
            request(method, target, &[], b""),
            Expect::StatusOrClosed(expect),
        ));
    }
    let long_path = format!("/api/{}", "a".repeat(100_000));
    cases.push(case(
        "100 KB path",
        request("GET", &long_path, &[], b""),
        Expect::StatusOrClosed(&[404, 414, 431]),
    ));

    // Payload-mode envelopes (the Functions host's other mode) that lie.
    for (name, envelope) in [
        ("body not base64", r#"{"Data":{"req":{"Url":"http://x/api/transcribe","Method":"POST","Headers":{"Content-Type":["application/octet-stream"]},"Body":"!!!"}},"Metadata":{}}"#.to_string()),
        ("binary body as text", r#"{"Data":{"req":{"Url":"http://x/api/transcribe","Method":"POST","Headers":{"Content-Type":["audio/wav"]},"Body":"RIFF\u0000\u0001WAVE"}},"Metadata":{}}"#.to_string()),
        ("no request", r#"{"Data":{},"Metadata":{}}"#.to_string()),
        ("noise body", format!(r#"{{"Data":{{"req":{{"Url":"http://x/api/transcribe","Method":"POST","Headers":{{"Content-Type":["application/octet-stream"]}},"Body":"{}"}}}},"Metadata":{{}}}}"#, b64(&noise(4, 2000)))),
    ] {
        cases.push(case(format!("payload mode: {name}"), post_to("/transcribe", Some("application/json"), envelope.as_bytes()), Expect::Status(&[200])));
    }
    cases
}

/// Sends one case; returns the status and body, or `None` if the server closed the
/// connection without an answer.
fn send(port: u16, case: &Case) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let bytes = &case.request[..case.cut.unwrap_or(case.request.len())];
    // The server may answer and close before reading everything (a refused body).
    let _ = stream.write_all(bytes);
    if case.cut.is_some() {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let head = text[..body_at.min(text.len())].to_ascii_lowercase();
    let mut body = answer[body_at..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 || data.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
    out
}

/// Why an answer is wrong for its case, if it is.
fn judge(case: &Case, answer: &Option<(u16, Vec<u8>)>) -> Option<String> {
    let (allowed, may_close) = match case.expect {
        Expect::Status(s) => (s, false),
        Expect::StatusOrClosed(s) => (s, true),
    };
    let Some((status, body)) = answer else {
        return (!may_close).then(|| "connection closed without an answer".into());
    };
    if !allowed.contains(status) {
        return Some(format!(
            "got {status}, expected one of {allowed:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let json: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if *status >= 400 && body.is_empty() && may_close => return None,
        Err(e) => {
            return Some(format!(
                "{status} body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    };
    let (status, json) = if case.name.starts_with("payload mode") {
        let inner = &json["Outputs"]["res"];
        let code = inner["statusCode"].as_u64().unwrap_or(0) as u16;
        let body: Value =
            serde_json::from_str(inner["body"].as_str().unwrap_or("null")).unwrap_or_default();
        if !(400..500).contains(&code) {
            return Some(format!(
                "payload mode answered {code} inside the envelope: {json}"
            ));
        }
        (code, body)
    } else {
        (*status, json)
    };
    if status >= 400 {
        let code = json["error"]["code"].as_str().unwrap_or("");
        let message = json["error"]["message"].as_str().unwrap_or("");
        if code.is_empty() || message.is_empty() {
            return Some(format!(
                "{status} without an error code and message: {json}"
            ));
        }
    } else if status == 200 && case.request.starts_with(b"POST") {
        let words = json["results"].as_array().is_some_and(|r| !r.is_empty())
            || json["partial"].is_object();
        let warned = json["warnings"].as_array().is_some_and(|w| !w.is_empty());
        if !words && !warned {
            return Some(format!("200 with no words and no warning: {json}"));
        }
    }
    None
}

#[test]
fn hostile_requests_get_clear_4xx_errors_and_the_service_lives_on() {
    let mut server = Server::start(&[
        ("PREPIS_MODEL", "tiny.en"),
        ("PREPIS_MAX_AUDIO_SECONDS", "300"),
        ("PREPIS_READ_TIMEOUT_SECONDS", "2"),
    ]);
    // A real token to damage: the first chunk of a stream.
    let speech = speech();
    let first = client()
        .post(server.url("/api/transcribe?final=false"))
        .header("Content-Type", "audio/wav")
        .body(wav16(&speech[..48_000]))
        .send()
        .unwrap();
    let token = first.json::<Value>().unwrap()["context"]
        .as_str()
        .unwrap()
        .to_string();

    let cases = corpus(&token);
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        let sent = std::time::Instant::now();
        let answer = send(server.port, case);
        if sent.elapsed() > Duration::from_secs(5) {
            eprintln!("slow: {} took {:?}", case.name, sent.elapsed());
        }
        *tally
            .entry(
                answer
                    .as_ref()
                    .map_or("closed".into(), |(s, _)| s.to_string()),
            )
            .or_default() += 1;
        if let Some(why) = judge(case, &answer) {
            failures.push(format!("{}: {why}", case.name));
        }
        // Still alive, after every case.
        let status = client().get(server.url("/api/status")).send();
        if status.is_err() {
            failures.push(format!("{}: the handler died", case.name));
            break;
        }
    }
    eprintln!("{} hostile requests: {tally:?}", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The same process still transcribes, and never panicked.
    let after = client()
        .post(server.url("/api/transcribe"))
        .header("Content-Type", "audio/wav")
        .body(wav16(&speech))
        .send()
        .unwrap();
    assert_eq!(after.status(), 200);
    let text = after.json::<Value>().unwrap()["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!text.trim().is_empty());
    let stderr = server.stderr.lock().unwrap().join("\n");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(server.terminate().success());
}
