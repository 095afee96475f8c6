//! Rendering the replies as they come: text (live partials on a terminal), JSON lines,
//! WebVTT or SRT; and the progress line of a whole file.

use std::io::{IsTerminal, Write};

use prepis::client::ChunkReply;

use super::args::Format;

pub(super) fn draw_progress(done: f64, total: f64) {
    let width = 30;
    let fraction = if total > 0.0 {
        (done / total).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (fraction * width as f64).round() as usize;
    eprint!(
        "\r[{}{}] {:3.0}% {} / {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        clock(done),
        clock(total)
    );
    let _ = std::io::stderr().flush();
}

pub(super) fn clear_progress() {
    eprint!("\r\x1b[K");
}

/// Writes replies in the chosen format as they come.
pub(super) struct Output {
    format: Format,
    cues: usize,
    /// stdout is a terminal: show the partial text, replaced by the next reply.
    pub(super) live: bool,
    partial_shown: bool,
    out: std::io::Stdout,
}

impl Output {
    pub(super) fn new(format: Format) -> Output {
        let out = std::io::stdout();
        Output {
            format,
            cues: 0,
            live: format == Format::Text && out.is_terminal(),
            partial_shown: false,
            out,
        }
    }

    pub(super) fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    pub(super) fn begin(&mut self) {
        if self.format == Format::Vtt {
            let _ = writeln!(self.out, "WEBVTT\n");
        }
    }

    pub(super) fn reply(&mut self, reply: &ChunkReply) {
        let mut out = self.out.lock();
        if self.partial_shown {
            let _ = write!(out, "\r\x1b[K");
            self.partial_shown = false;
        }
        if self.format == Format::Json {
            let _ = writeln!(out, "{}", reply.body);
            let _ = out.flush();
            return;
        }
        for segment in reply.body["results"].as_array().into_iter().flatten() {
            let start = segment["start"].as_f64().unwrap_or(0.0);
            let end = segment["end"].as_f64().unwrap_or(start);
            let text = segment["text"].as_str().unwrap_or("").trim();
            let speaker = segment["speaker"].as_u64();
            self.cues += 1;
            let _ = match self.format {
                Format::Text => {
                    let who = speaker.map(|s| format!("S{s}: ")).unwrap_or_default();
                    writeln!(out, "[{} - {}] {who}{text}", clock(start), clock(end))
                }
                Format::Vtt => {
                    let voice = speaker
                        .map(|s| format!("<v Speaker {s}>"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\n{} --> {}\n{voice}{}\n",
                        self.cues,
                        cue_time(start, '.'),
                        cue_time(end, '.'),
                        escape_vtt(text)
                    )
                }
                Format::Srt => {
                    let who = speaker
                        .map(|s| format!("Speaker {s}: "))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\n{} --> {}\n{who}{text}\n",
                        self.cues,
                        cue_time(start, ','),
                        cue_time(end, ',')
                    )
                }
                Format::Json => unreachable!(),
            };
        }
        if self.live {
            if let Some(partial) = reply.body["partial"]["text"]
                .as_str()
                .filter(|t| !t.is_empty())
            {
                // One terminal line, grey; the next reply replaces it.
                let chars: Vec<char> = partial.trim().chars().collect();
                let keep = chars
                    .len()
                    .saturating_sub(terminal_columns().saturating_sub(2));
                let shown: String = chars[keep..].iter().collect();
                let _ = write!(out, "\x1b[2m{shown}\x1b[0m");
                self.partial_shown = true;
            }
        }
        let _ = out.flush();
    }

    pub(super) fn finish(&mut self) {
        if self.partial_shown {
            let _ = write!(self.out, "\r\x1b[K");
        }
        let _ = self.out.flush();
    }
}

pub(super) fn terminal_columns() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}

/// `mm:ss.mmm` (`h:mm:ss.mmm` from an hour on).
pub(super) fn clock(seconds: f64) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        total_ms / 3_600_000,
        total_ms / 60_000 % 60,
        total_ms / 1000 % 60,
        total_ms % 1000,
    );
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{ms:03}")
    } else {
        format!("{m:02}:{s:02}.{ms:03}")
    }
}

/// `hh:mm:ss.mmm` (WebVTT) or `hh:mm:ss,mmm` (SRT).
pub(super) fn cue_time(seconds: f64, separator: char) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        total_ms / 3_600_000,
        total_ms / 60_000 % 60,
        total_ms / 1000 % 60,
        total_ms % 1000
    )
}

pub(super) fn escape_vtt(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
