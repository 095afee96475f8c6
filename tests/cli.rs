//! The command line against the real service: `handler stream` of a file (SRT), of live
//! raw PCM and of a piped WAV on stdin (JSON lines, replies arrive before the input ends),
//! `handler transcribe` (WebVTT, and the service's error for non-audio), `--help`,
//! `stream --relabel` (final speaker labels at the end); all
//! through the Functions host's front door (Kestrel's limits, `tests/front-door.mjs`).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use util::{librivox, read_wav_i16, resample_linear, wer, FrontDoor, Server};

fn handler() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command.env_remove("PREPIS_URL").env_remove("PREPIS_KEY");
    command
}

/// Starts `handler` with piped stdin, stdout and stderr.
fn spawn_piped(args: &[&str]) -> Child {
    handler()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("running handler")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_names_every_command_and_bad_options_fail_with_usage() {
    let help = run(handler().arg("--help"));
    assert!(help.status.success());
    let text = stdout(&help);
    for needle in [
        "stream",
        "transcribe",
        "convert-model",
        "Examples",
        "arecord",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from --help:\n{text}"
        );
    }
    let stream_help = stdout(&run(handler().args(["stream", "--help"])));
    for needle in [
        "--url",
        "--key",
        "--chunk",
        "--format",
        "text, json, vtt, srt",
        "stdin",
    ] {
        assert!(stream_help.contains(needle), "{needle}:\n{stream_help}");
    }
    let bad = run(handler().args(["stream", "x.wav", "--format", "docx"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("docx"));
    let no_chunk = run(handler().args(["stream", "x.wav", "--chunk", "0"]));
    assert_eq!(no_chunk.status.code(), Some(2));
    let version = run(handler().arg("--version"));
    assert!(stdout(&version).contains(env!("CARGO_PKG_VERSION")));
}

/// `[(start, end, text)]` of an SRT document, checking its numbering and time lines.
fn parse_srt(srt: &str) -> Vec<(String, String, String)> {
    let mut cues = Vec::new();
    for (i, block) in srt.trim().split("\n\n").enumerate() {
        let lines: Vec<&str> = block.lines().collect();
        assert!(lines.len() >= 3, "cue {i}: {block:?}");
        assert_eq!(lines[0], (i + 1).to_string(), "numbering: {srt}");
        let (start, end) = lines[1].split_once(" --> ").expect("time line");
        for t in [start, end] {
            assert_eq!(t.len(), 12, "{t}");
            assert_eq!(&t[8..9], ",", "SRT uses a comma: {t}");
        }
        assert!(start <= end, "{block}");
        cues.push((start.to_string(), end.to_string(), lines[2..].join(" ")));
    }
    cues
}

fn strip_speaker(text: &str) -> &str {
    match text.split_once(": ") {
        Some((who, rest)) if who.starts_with("Speaker ") => rest,
        _ => text,
    }
}

#[test]
fn stream_a_file_as_srt_and_transcribe_one_as_webvtt() {
    let server = Server::start(&[]);
    // Through the Functions host's front door (Kestrel's limits), as users reach it.
    let door = FrontDoor::start(server.port);
    let url = door.url("");
    let utterances = librivox();
    let first = &utterances[0];

    let stream_srt = |url: &str| {
        run(handler()
            .args(["stream", first.path.to_str().unwrap(), "--url", url])
            .args(["--format", "srt", "--language", "en"]))
    };
    let streamed = stream_srt(&url);
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    let srt = stdout(&streamed);
    assert_eq!(door.refusals(), Vec::<String>::new());
    assert_eq!(
        stdout(&stream_srt(&server.url(""))),
        srt,
        "the same transcript without the front door"
    );
    let cues = parse_srt(&srt);
    assert!(!cues.is_empty(), "{srt}");
    assert!(
        cues.windows(2).all(|w| w[0].1 <= w[1].0),
        "cues in order: {srt}"
    );
    let text: Vec<&str> = cues.iter().map(|c| strip_speaker(&c.2)).collect();
    assert!(wer(&first.reference, &text.join(" ")) <= 0.2, "{srt}");
    // `--relabel`: the same cues once, at the end, with final labels (one voice: speaker 1),
    // the replies' voiceprints sent back through the same front door.
    let relabelled = run(handler()
        .args(["stream", first.path.to_str().unwrap(), "--url", &url])
        .args(["--format", "srt", "--language", "en", "--relabel"]));
    assert!(
        relabelled.status.success(),
        "{}",
        String::from_utf8_lossy(&relabelled.stderr)
    );
    let finals = parse_srt(&stdout(&relabelled));
    let final_text: Vec<&str> = finals.iter().map(|c| strip_speaker(&c.2)).collect();
    assert_eq!(final_text, text);
    assert!(
        finals.iter().all(|c| c.2.starts_with("Speaker 1: ")),
        "{finals:?}"
    );
    assert_eq!(door.refusals(), Vec::<String>::new());
    // Not a terminal: no progress bar or escape codes anywhere.
    assert!(!srt.contains('\x1b') && !String::from_utf8_lossy(&streamed.stderr).contains('\x1b'));

    let second = &utterances[1];
    let vtt = run(handler()
        .args(["transcribe", second.path.to_str().unwrap()])
        .args(["--url", &url, "--format", "vtt"]));
    assert!(vtt.status.success());
    let vtt = stdout(&vtt);
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    let mut words = Vec::new();
    for block in vtt.trim().split("\n\n").skip(1) {
        let lines: Vec<&str> = block.lines().collect();
        let (start, end) = lines[1].split_once(" --> ").expect("time line");
        assert!(
            start.len() == 12 && &start[8..9] == "." && start <= end,
            "{block}"
        );
        words.push(lines[2..].join(" "));
    }
    let text = words.join(" ");
    let text = text
        .split("<v Speaker ")
        .map(|part| part.split_once('>').map_or(part, |(_, t)| t))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(wer(&second.reference, &text) <= 0.2, "{vtt}");

    // Not audio: the service's refusal, said plainly, and a failing exit status.
    let dir = std::env::temp_dir().join(format!("prepis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notes = dir.join("notes.txt");
    std::fs::write(
        &notes,
        "these are meeting notes, not a recording\n".repeat(20),
    )
    .unwrap();
    let refused = run(handler().args(["transcribe", notes.to_str().unwrap(), "--url", &url]));
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("415") && message.contains("not_audio"),
        "{message}"
    );
    assert!(refused.stdout.is_empty());
    // `stream` decodes here, and says so before sending anything.
    let local = run(handler().args(["stream", notes.to_str().unwrap(), "--url", &url]));
    assert_eq!(local.status.code(), Some(1));
    let message = String::from_utf8_lossy(&local.stderr);
    assert!(message.contains("notes.txt"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Final segments of JSON lines (one response per line), in order.
fn transcript_of(lines: &[Value]) -> String {
    lines
        .iter()
        .flat_map(|r| r["results"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Live audio on stdin: 8 kHz stereo raw PCM written a piece at a time. The first reply is
/// read before the rest of the audio is written (so chunks go out as audio arrives, not at
/// end of input); the final reply accounts for every sample.
#[test]
fn stream_live_raw_pcm_from_stdin() {
    let server = Server::start(&[]);
    let utterances = librivox();
    let mut samples = Vec::new();
    let mut reference = Vec::new();
    for u in &utterances[..2] {
        let (rate, pcm) = read_wav_i16(&u.path);
        let mono: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
        samples.extend(resample_linear(&mono, rate, 8_000));
        samples.extend(std::iter::repeat_n(0.0, 8_000 / 2));
        reference.push(u.reference.clone());
    }
    let stereo: Vec<u8> = samples
        .iter()
        .flat_map(|s| {
            let v = ((s * 32767.0) as i16).to_le_bytes();
            [v[0], v[1], v[0], v[1]]
        })
        .collect();
    let door = FrontDoor::start(server.port);
    let url = door.url("");
    let mut child = spawn_piped(&[
        "stream",
        "-",
        "--url",
        &url,
        "--format",
        "json",
        "--rate",
        "8000",
        "--channels",
        "2",
        "--chunk",
        "1.5",
        "--language",
        "en",
    ]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // 3 s of audio: two chunks' worth. The first reply comes while stdin is still open.
    let second = 8_000 * 4;
    stdin.write_all(&stereo[..3 * second]).unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let first: Value = serde_json::from_str(&line).expect("a JSON reply line");
    assert_eq!(first["stream"]["seq"], 1, "{first}");
    assert!(first["context"].is_string());
    // The rest, in odd-sized pieces, then end of input.
    for piece in stereo[3 * second..].chunks(10_007) {
        stdin.write_all(piece).unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    let mut replies = vec![first];
    replies.extend(
        rest.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    let total = samples.len() as f64 / 8_000.0;
    let last = replies.last().unwrap();
    assert!(
        (last["stream"]["received_until"].as_f64().unwrap() - total).abs() < 0.01,
        "{last}"
    );
    assert!(
        last["partial"].is_null() || last["partial"]["text"] == "",
        "{last}"
    );
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["stream"]["seq"], i as u64 + 1);
    }
    let text = transcript_of(&replies);
    assert!(wer(&reference.join(" "), &text) <= 0.2, "{text}");
}

/// A WAV piped as `ffmpeg -f wav -` writes it: 44.1 kHz, the data length unknown
/// (0xFFFFFFFF), a LIST chunk before the data.
#[test]
fn stream_a_piped_wav_from_stdin() {
    let server = Server::start(&[]);
    let utterance = &librivox()[2];
    let (rate, pcm) = read_wav_i16(&utterance.path);
    let mono: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
    let resampled = resample_linear(&mono, rate, 44_100);
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF\xff\xff\xff\xffWAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&44_100u32.to_le_bytes());
    wav.extend_from_slice(&(44_100u32 * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"LIST\x1a\x00\x00\x00INFOISFT\x0e\x00\x00\x00Lavf61.7.100\x00\x00");
    wav.extend_from_slice(b"data\xff\xff\xff\xff");
    for s in &resampled {
        wav.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
    }
    let door = FrontDoor::start(server.port);
    let url = door.url("");
    let mut child = spawn_piped(&["stream", "-", "--url", &url, "--format", "text"]);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for piece in wav.chunks(4_099) {
            stdin.write_all(piece).unwrap();
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout(&output);
    let mut words = Vec::new();
    for line in text.lines() {
        // [00:01.230 - 00:03.450] S1: words
        let (times, rest) = line.split_once("] ").expect("a timed line");
        assert!(times.starts_with('[') && times.contains(" - "), "{line}");
        words.push(rest.split_once(": ").map_or(rest, |(_, t)| t));
    }
    assert!(wer(&utterance.reference, &words.join(" ")) <= 0.2, "{text}");
}

/// The test front door answers as the Functions host's Kestrel does: 414 for a request line
/// over 8 KB, 431 for headers over 32 KB in all, with an empty body (not a prepis error).
#[test]
fn the_front_door_refuses_what_kestrel_refuses() {
    let server = Server::start(&[]);
    let door = FrontDoor::start(server.port);
    let client = util::client();
    let long_url = door.url(&format!("/api/status?x={}", "a".repeat(9_000)));
    let response = client.get(long_url).send().unwrap();
    assert_eq!(response.status().as_u16(), 414);
    assert_eq!(response.text().unwrap(), "");
    let mut request = client.get(door.url("/api/status"));
    for i in 0..5 {
        request = request.header(format!("x-big-{i}"), "t".repeat(7_000));
    }
    let response = request.send().unwrap();
    assert_eq!(response.status().as_u16(), 431);
    // Under the limits, the request goes through.
    let response = client
        .get(door.url("/api/status"))
        .header("x-big", "t".repeat(7_000))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(door.refusals().len(), 2, "{:?}", door.refusals());
}

/// A recording that would take longer to transcribe than a response may take (Azure's front
/// end cuts at 230 s; here PREPIS_RESPONSE_SECONDS=4) is refused at once with 422, and
/// `handler transcribe` streams it instead: the whole transcript, in chunks, relabelled at the
/// end as one answer.
#[test]
fn transcribe_streams_a_file_too_slow_for_one_response() {
    let server = Server::start(&[("PREPIS_RESPONSE_SECONDS", "4")]);
    let utterances = librivox();
    let mut samples = Vec::new();
    for u in &utterances {
        let (_, pcm) = read_wav_i16(&u.path);
        samples.extend(pcm.iter().map(|&s| s as f32 / 32768.0));
    }
    let reference: Vec<String> = utterances.iter().map(|u| u.reference.clone()).collect();
    let wav = util::wav_bytes(&samples, 16_000, 1, util::WavFormat::I16, false);
    let refused = util::client()
        .post(server.url("/api/transcribe"))
        .header("Content-Type", "audio/wav")
        .body(wav.clone())
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "response_too_slow", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream"),
        "{body}"
    );

    let dir = std::env::temp_dir().join(format!("prepis-cli-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("long.wav");
    std::fs::write(&file, &wav).unwrap();
    let door = FrontDoor::start(server.port);
    let output = run(handler()
        .args(["transcribe", file.to_str().unwrap(), "--url", &door.url("")])
        .args(["--format", "text", "--language", "en"]));
    // JSON: one answer, as for one request, with the stream's final speaker labels.
    let json = run(handler()
        .args(["transcribe", file.to_str().unwrap(), "--url", &door.url("")])
        .args(["--format", "json", "--language", "en"]));
    let _ = std::fs::remove_dir_all(dir);
    let lines: Vec<String> = stdout(&json).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let answer: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(answer["labels"], "final", "{answer}");
    assert!(answer["results"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("streaming it instead"));
    let text: String = stdout(&output)
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, t)| t))
        .map(|l| l.split_once(": ").map_or(l, |(_, t)| t))
        .collect::<Vec<_>>()
        .join(" ");
    let error = wer(&reference.join(" "), &text);
    assert!(error <= 0.2, "WER {error}: {text}");
}
