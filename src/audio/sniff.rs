//! Container recognition by magic bytes: what a body really is, whatever its declared type.

/// The containers prepis can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Matroska,
    Ogg,
    Mp4,
    Mp3,
    Flac,
}

impl Container {
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

#[cfg(test)]
mod tests {
    use super::*;

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
