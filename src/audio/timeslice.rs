//! MediaRecorder timeslice streams: `MediaRecorder.start(2000)` gives one recording cut into
//! blobs, and only the first carries the container header. Worse, the cuts fall anywhere:
//! Chromium splits WebM between a SimpleBlock's ID and its size. So a stream keeps, in its
//! context, the recording's header and the bytes of the element the last blob ended inside;
//! each later blob is joined to those, cut at the last complete element (cluster child, Ogg
//! page ending a packet, MP4 fragment), and decoded behind the header as a file of its own.
//!
//! Only element boundaries are found here; demuxing and decoding stay with symphonia/libopus.

use serde::{Deserialize, Serialize};

use super::sniff::Container;

/// What a stream keeps of its recording between blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub container: Container,
    /// The container header (everything before the first cluster, audio page or fragment),
    /// or as much of it as has arrived while `header_done` is false.
    pub header: Vec<u8>,
    /// Whether the header is whole (a media element has been seen after it).
    pub header_done: bool,
    /// The start of an element that the last blob ended inside.
    pub pending: Vec<u8>,
    /// Whether audio of the recording has been decoded (its encoder delay removed).
    pub started: bool,
}

/// Longest element a blob may end inside (it is kept in the context until it completes).
pub const MAX_PENDING: usize = 256 * 1024;
/// Larger elements inside a recording are taken as damage.
const MAX_ELEMENT: u64 = 16 << 20;

/// A blob, joined to what its stream kept, ready to decode.
#[derive(Debug)]
pub struct Assembled {
    /// A decodable file: header + the complete elements. Empty when there is nothing to
    /// decode yet (the blob ended inside the header or inside its first element).
    pub file: Vec<u8>,
    /// Whether `file` continues a recording whose start was already decoded (so encoder
    /// delay must not be removed again).
    pub continuation: bool,
    /// What the stream keeps for its next blob.
    pub recording: Recording,
    /// Damage skipped while cutting.
    pub warnings: Vec<String>,
}

/// Whether a blob that starts a file of `container` may be followed by header-less blobs:
/// WebM and Ogg always, MP4 when it is fragmented (a plain M4A holds all its audio).
pub fn continues(container: Container, blob: &[u8]) -> bool {
    match container {
        Container::Matroska | Container::Ogg => true,
        Container::Mp4 => {
            let mut pos = 0;
            while let Some(b) = blob.get(pos..pos + 8) {
                let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                match &b[4..8] {
                    b"moof" => return true,
                    b"mdat" => return false,
                    b"moov" => {
                        let moov = blob
                            .get(pos..pos.saturating_add(size))
                            .unwrap_or(&blob[pos..]);
                        return moov.windows(4).any(|w| w == b"mvex");
                    }
                    _ => {}
                }
                if size < 8 {
                    return false;
                }
                pos += size;
            }
            false
        }
        _ => false,
    }
}

/// A blob that begins a recording (it carries the header).
pub fn begin(container: Container, blob: &[u8]) -> Result<Assembled, String> {
    assemble(
        Recording {
            container,
            header: Vec::new(),
            header_done: false,
            pending: Vec::new(),
            started: false,
        },
        blob,
    )
}

/// A later blob of the recording `kept`.
pub fn resume(kept: &Recording, blob: &[u8]) -> Result<Assembled, String> {
    assemble(kept.clone(), blob)
}

fn assemble(mut kept: Recording, blob: &[u8]) -> Result<Assembled, String> {
    let container = kept.container;
    let mut warnings = Vec::new();
    let mut data = std::mem::take(&mut kept.pending);
    data.extend_from_slice(blob);

    if !kept.header_done {
        // Still reading the header: the kept part and this blob make the file's start.
        let mut whole = std::mem::take(&mut kept.header);
        whole.extend_from_slice(&data);
        let cut = cut(container, &whole, false, &mut warnings);
        let whole = cut.data;
        let Some(media_start) = cut.media_start else {
            // No audio yet (Chromium's MP4 recorder sends the init segment alone).
            return keep(
                Recording {
                    container,
                    header: whole[..cut.complete].to_vec(),
                    header_done: false,
                    pending: whole[cut.complete..].to_vec(),
                    started: false,
                },
                Vec::new(),
                warnings,
            );
        };
        let recording = Recording {
            container,
            header: whole[..media_start].to_vec(),
            header_done: true,
            pending: whole[cut.complete..].to_vec(),
            started: false,
        };
        // Nothing to decode until an element after the header is complete.
        let file = if cut.complete > media_start {
            whole[..cut.complete].to_vec()
        } else {
            Vec::new()
        };
        return keep(recording, file, warnings);
    }

    let cut = cut(container, &data, true, &mut warnings);
    let data = cut.data;
    let pending = data[cut.complete..].to_vec();
    let body = &data[..cut.complete];
    let file = if body.is_empty() {
        Vec::new()
    } else {
        let mut file = kept.header.clone();
        if container == Container::Matroska && !body.starts_with(&CLUSTER.to_be_bytes()) {
            // The body starts inside a cluster: open one (unknown size, timecode 0).
            file.extend_from_slice(&[0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff]);
            file.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xe7, 0x81, 0x00]);
        }
        file.extend_from_slice(body);
        file
    };
    kept.pending = pending;
    keep(kept, file, warnings)
}

/// Checks what the stream would keep, and marks the recording started once audio is decoded.
fn keep(
    mut recording: Recording,
    file: Vec<u8>,
    warnings: Vec<String>,
) -> Result<Assembled, String> {
    let continuation = recording.started;
    recording.started |= !file.is_empty();
    let kept = recording.header.len() + recording.pending.len();
    if kept > MAX_PENDING {
        return Err(format!(
            "the recording's header and unfinished element reach {kept} bytes, more than the {MAX_PENDING} a stream may keep between chunks"
        ));
    }
    Ok(Assembled {
        file,
        continuation,
        recording,
        warnings,
    })
}

const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1f43_b675;

/// Where a run of bytes can be cut.
struct Cut {
    /// The bytes, with damaged stretches removed.
    data: Vec<u8>,
    /// Offset of the first media element (cluster, audio page, `moof`).
    media_start: Option<usize>,
    /// End of the last complete element: everything after it waits for more bytes.
    complete: usize,
}

/// What a walk over elements found.
enum Walk {
    /// All complete elements walked; the rest (from `complete`) is unfinished.
    Done {
        media_start: Option<usize>,
        complete: usize,
    },
    /// Bytes at this offset are not an element.
    Damaged { at: usize },
}

/// Walks the elements of `data`, skipping damaged stretches up to the next sync point.
fn cut(container: Container, data: &[u8], in_media: bool, warnings: &mut Vec<String>) -> Cut {
    let mut data = data.to_vec();
    loop {
        let walk = match container {
            Container::Matroska => walk_matroska(&data),
            Container::Ogg => walk_ogg(&data),
            _ => walk_mp4(&data),
        };
        match walk {
            Walk::Done {
                media_start,
                complete,
            } => {
                return Cut {
                    data,
                    media_start: media_start.filter(|_| !in_media).or(in_media.then_some(0)),
                    complete,
                }
            }
            Walk::Damaged { at } => {
                let resync = next_sync(container, &data, at + 1);
                let end = resync.unwrap_or(data.len());
                warnings.push(format!(
                    "{} damaged bytes of the {} recording were skipped",
                    end - at,
                    container.name()
                ));
                data.drain(at..end);
            }
        }
    }
}

/// The next offset from `from` where an element can start anew.
fn next_sync(container: Container, data: &[u8], from: usize) -> Option<usize> {
    let find = |pattern: &[u8]| {
        data.get(from..)?
            .windows(pattern.len())
            .position(|w| w == pattern)
            .map(|p| p + from)
    };
    match container {
        Container::Matroska => find(&CLUSTER.to_be_bytes()),
        Container::Ogg => find(b"OggS"),
        _ => find(b"moof")
            .and_then(|p| p.checked_sub(4))
            .filter(|&p| p >= from),
    }
}

/// An EBML variable-length integer: `Ok(None)` when `data` ends inside it.
pub(super) fn vint(data: &[u8], keep_marker: bool) -> Result<Option<(u64, usize)>, ()> {
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    if first == 0 {
        return Err(());
    }
    let len = first.leading_zeros() as usize + 1;
    let Some(bytes) = data.get(..len) else {
        return Ok(None);
    };
    let mut value = if keep_marker {
        first as u64
    } else {
        (first as u64) & (0xff >> len)
    };
    for &b in &bytes[1..] {
        value = (value << 8) | b as u64;
    }
    Ok(Some((value, len)))
}

fn walk_matroska(data: &[u8]) -> Walk {
    let (mut pos, mut complete, mut media_start) = (0, 0, None);
    while pos < data.len() {
        let Ok(id) = vint(&data[pos..], true) else {
            return Walk::Damaged { at: pos };
        };
        let Some((id, id_len)) = id else { break };
        if id_len > 4 {
            return Walk::Damaged { at: pos };
        }
        let Ok(size) = vint(&data[pos + id_len..], false) else {
            return Walk::Damaged { at: pos };
        };
        let Some((size, size_len)) = size else { break };
        let unknown = size == (1u64 << (7 * size_len)) - 1;
        let header = id_len + size_len;
        if id as u32 == SEGMENT || id as u32 == CLUSTER {
            // Masters whose children are walked (live recordings leave their size unknown).
            if id as u32 == CLUSTER && media_start.is_none() {
                media_start = Some(pos);
            }
            pos += header;
            continue;
        }
        if unknown || size > MAX_ELEMENT {
            return Walk::Damaged { at: pos };
        }
        let end = pos + header + size as usize;
        if end > data.len() {
            break;
        }
        pos = end;
        complete = pos;
    }
    Walk::Done {
        media_start,
        complete,
    }
}

fn walk_ogg(data: &[u8]) -> Walk {
    let (mut pos, mut complete, mut media_start) = (0, 0, None);
    while pos < data.len() {
        let page = &data[pos..];
        if page.len() < 27 {
            if !b"OggS".starts_with(&page[..page.len().min(4)]) {
                return Walk::Damaged { at: pos };
            }
            break;
        }
        if &page[..4] != b"OggS" || page[4] != 0 {
            return Walk::Damaged { at: pos };
        }
        let segments = page[26] as usize;
        let Some(table) = page.get(27..27 + segments) else {
            break;
        };
        let end = 27 + segments + table.iter().map(|&l| l as usize).sum::<usize>();
        if end > page.len() {
            break;
        }
        let granule = i64::from_le_bytes(page[6..14].try_into().unwrap_or_default());
        if media_start.is_none() && granule > 0 {
            media_start = Some(pos);
        }
        pos += end;
        // Cut only where a packet ends, so that the next file starts with a whole packet.
        if table.last().is_none_or(|&l| l < 255) {
            complete = pos;
        }
    }
    Walk::Done {
        media_start,
        complete,
    }
}

/// An MP4 box's size and header length from its first bytes (8 or more); size 0 means the
/// box runs to the end of `b`. `None` when a 64-bit size is cut off.
pub(super) fn mp4_box(b: &[u8]) -> Option<(u64, usize)> {
    match u32::from_be_bytes([b[0], b[1], b[2], b[3]]) {
        1 => b
            .get(8..16)
            .map(|large| (u64::from_be_bytes(large.try_into().unwrap_or_default()), 16)),
        0 => Some((b.len() as u64, 8)),
        n => Some((n as u64, 8)),
    }
}

fn walk_mp4(data: &[u8]) -> Walk {
    let (mut pos, mut complete, mut media_start) = (0, 0, None);
    while pos + 8 <= data.len() {
        let b = &data[pos..];
        let kind = &b[4..8];
        if !kind.iter().all(|c| c.is_ascii_alphanumeric() || *c == b' ') {
            return Walk::Damaged { at: pos };
        }
        let Some((size, header)) = mp4_box(b) else {
            break;
        };
        if size < header as u64 || size > MAX_ELEMENT {
            return Walk::Damaged { at: pos };
        }
        if size as usize > b.len() {
            break;
        }
        if kind == b"moof" && media_start.is_none() {
            media_start = Some(pos);
        }
        pos += size as usize;
        // A fragment is its moof and the mdat after it: never cut between them.
        if kind != b"moof" {
            complete = pos;
        }
    }
    Walk::Done {
        media_start,
        complete,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A WebM start: EBML header, unknown-size Segment, Tracks, then an unknown-size cluster.
    pub(in crate::audio) fn webm_head() -> Vec<u8> {
        let mut f = vec![0x1a, 0x45, 0xdf, 0xa3, 0x84, 0x42, 0x86, 0x81, 0x01];
        f.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&[0x16, 0x54, 0xae, 0x6b, 0x82, 0xae, 0x80]);
        f
    }

    pub(in crate::audio) fn simple_block(n: u8) -> Vec<u8> {
        vec![0xa3, 0x85, 0x81, 0x00, n, 0x80, 0xfc]
    }

    #[test]
    fn webm_blobs_cut_inside_a_block_are_joined_and_resumed() {
        let mut first = webm_head();
        let header_len = first.len();
        first.extend_from_slice(&[0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff]);
        first.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xe7, 0x81, 0x00]);
        first.extend_from_slice(&simple_block(1));
        let whole_len = first.len();
        first.push(0xa3); // Chromium cuts between a block's ID and its size.
        let a = begin(Container::Matroska, &first).unwrap();
        assert_eq!(a.file.len(), whole_len);
        assert!(!a.continuation);
        assert_eq!(a.recording.header.len(), header_len);
        assert_eq!(a.recording.pending, vec![0xa3]);

        let mut second = simple_block(2)[1..].to_vec();
        second.extend_from_slice(&simple_block(3)[..3]);
        let b = resume(&a.recording, &second).unwrap();
        assert!(b.continuation && b.warnings.is_empty());
        // header + a synthetic cluster + the completed block.
        assert!(b.file.starts_with(&a.recording.header));
        assert_eq!(&b.file[header_len..header_len + 4], &CLUSTER.to_be_bytes());
        assert!(b.file.ends_with(&simple_block(2)));
        assert_eq!(b.recording.pending, simple_block(3)[..3].to_vec());
    }

    #[test]
    fn a_header_alone_is_kept_until_media_arrives() {
        let init = b"\0\0\0\x10ftypiso6\0\0\0\0\0\0\0\x10moov\0\0\0\x08mvex";
        assert!(continues(Container::Mp4, init));
        assert!(!continues(Container::Mp4, b"\0\0\0\x08moov\0\0\0\x08mdat"));
        let a = begin(Container::Mp4, init).unwrap();
        assert!(a.file.is_empty() && !a.recording.header_done);
        let mut fragment = b"\0\0\0\x08moof".to_vec();
        let b = resume(&a.recording, &fragment).unwrap();
        assert!(b.file.is_empty(), "a moof without its mdat waits");
        fragment = b"\0\0\0\x0cmdat\x01\x02\x03\x04".to_vec();
        let c = resume(&b.recording, &fragment).unwrap();
        assert!(c.recording.header_done);
        assert_eq!(c.recording.header.len(), 32);
        assert_eq!(c.file.len(), 32 + 8 + 12);
        assert!(!c.continuation, "the first audio is the recording's start");
    }

    #[test]
    fn ogg_is_cut_only_where_a_packet_ends() {
        let page = |granule: i64, lacing: &[u8]| {
            let mut p = b"OggS\0\0".to_vec();
            p.extend_from_slice(&granule.to_le_bytes());
            p.extend_from_slice(&[0; 12]);
            p.push(lacing.len() as u8);
            p.extend_from_slice(lacing);
            p.extend(std::iter::repeat_n(
                7u8,
                lacing.iter().map(|&l| l as usize).sum(),
            ));
            p
        };
        let head = page(0, &[19]);
        let mut blob = head.clone();
        blob.extend_from_slice(&page(960, &[10, 255]));
        let a = begin(Container::Ogg, &blob).unwrap();
        assert_eq!(a.recording.header, head);
        assert!(a.file.is_empty(), "the page ending inside a packet waits");
        assert_eq!(a.recording.pending.len(), blob.len() - head.len());
    }

    #[test]
    fn damage_is_skipped_to_the_next_sync_point() {
        let mut first = webm_head();
        first.extend_from_slice(&[0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff]);
        first.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let a = begin(Container::Matroska, &first).unwrap();
        let mut second = vec![0x00, 0x00, 0x00];
        second.extend_from_slice(&[0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff]);
        second.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        second.extend_from_slice(&simple_block(4));
        let b = resume(&a.recording, &second).unwrap();
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert!(b.file.ends_with(&simple_block(4)));
        // Garbage with no sync point after it is dropped, not kept.
        let c = resume(&b.recording, &[0u8; 64]).unwrap();
        assert!(c.file.is_empty() && c.recording.pending.is_empty());
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn an_element_too_large_to_keep_is_refused() {
        let a = begin(Container::Mp4, b"\0\0\0\x10ftypiso6\0\0\0\0").unwrap();
        let mut big = b"\0\x08\0\0moof".to_vec();
        big.resize(MAX_PENDING + 16, 0);
        assert!(resume(&a.recording, &big).is_err());
    }
}
