//! Container recognition by magic bytes: what a body really is, whatever its declared type.

/// The containers prepis can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Container {
    Wav,
    Matroska,
    Ogg,
    Mp4,
    Mp3,
    Flac,
}

impl Container {
    /// A short lowercase identifier (the `format` a response reports).
    pub fn id(self) -> &'static str {
        match self {
            Container::Wav => "wav",
            Container::Matroska => "webm",
            Container::Ogg => "ogg",
            Container::Mp4 => "mp4",
            Container::Mp3 => "mp3",
            Container::Flac => "flac",
        }
    }

    /// A human name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Container::Wav => "WAV",
            Container::Matroska => "WebM/Matroska",
            Container::Ogg => "Ogg",
            Container::Mp4 => "MP4/M4A",
            Container::Mp3 => "MP3",
            Container::Flac => "FLAC",
        }
    }
}

/// Recognises a container from the first bytes of a body.
pub fn sniff(bytes: &[u8]) -> Option<Container> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if (starts(b"RIFF") || starts(b"RIFX") || starts(b"RF64")) && bytes.get(8..12) == Some(b"WAVE")
    {
        return Some(Container::Wav);
    }
    if starts(&[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(Container::Matroska);
    }
    if starts(b"OggS") {
        return Some(Container::Ogg);
    }
    if starts(b"fLaC") {
        return Some(Container::Flac);
    }
    if matches!(bytes.get(4..8), Some(b"ftyp" | b"styp" | b"moof" | b"moov")) {
        return Some(Container::Mp4);
    }
    if starts(b"ID3")
        || (bytes.len() >= 2 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0 && bytes[1] & 0x06 != 0)
    {
        return Some(Container::Mp3);
    }
    None
}

/// Recognises a MediaRecorder timeslice blob that lacks its container header: a bare
/// WebM cluster, an Ogg page that does not begin the stream, an MP4 fragment without its
/// initialisation segment. Returns what it is, for the error message.
pub fn headerless(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x1f, 0x43, 0xb6, 0x75]) {
        return Some("a WebM cluster");
    }
    // Ogg page header: "OggS", version 0, then the header-type flags (0x02: first page).
    if bytes.starts_with(b"OggS") && bytes.get(5).is_some_and(|flags| flags & 0x02 == 0) {
        return Some("an Ogg page from the middle of a stream");
    }
    if matches!(bytes.get(4..8), Some(b"moof" | b"styp")) {
        return Some("an MP4 fragment");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blobs_without_their_header() {
        assert_eq!(
            sniff_and_headerless(&[0x1f, 0x43, 0xb6, 0x75, 0x01]),
            "a WebM cluster"
        );
        assert_eq!(
            sniff_and_headerless(b"OggS\0\0\x80\xbb"),
            "an Ogg page from the middle of a stream"
        );
        assert_eq!(sniff_and_headerless(b"\0\0\0\x18moof"), "an MP4 fragment");
        assert_eq!(headerless(b"OggS\0\x02"), None);
        assert_eq!(headerless(b"\0\0\0\x18ftypM4A "), None);
    }

    fn sniff_and_headerless(bytes: &[u8]) -> &'static str {
        headerless(bytes).unwrap()
    }

    #[test]
    fn recognises_each_container_by_magic() {
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt "), Some(Container::Wav));
        assert_eq!(sniff(b"RIFF\x24\0\0\0AVI LIST"), None);
        assert_eq!(
            sniff(&[0x1a, 0x45, 0xdf, 0xa3, 0x9f]),
            Some(Container::Matroska)
        );
        assert_eq!(sniff(b"OggS\0\x02"), Some(Container::Ogg));
        assert_eq!(sniff(b"fLaC\0\0\0\x22"), Some(Container::Flac));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some(Container::Mp4));
        assert_eq!(sniff(b"ID3\x04\0"), Some(Container::Mp3));
        assert_eq!(sniff(&[0xff, 0xfb, 0x90, 0x64]), Some(Container::Mp3));
    }

    #[test]
    fn raw_pcm_and_text_are_not_containers() {
        assert_eq!(sniff(&[0x00, 0x01, 0xff, 0x7f]), None);
        assert_eq!(sniff(b"{\"audio\": \"\"}"), None);
        assert_eq!(sniff(b""), None);
    }
}
