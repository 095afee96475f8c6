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
fn vint(data: &[u8], keep_marker: bool) -> Result<Option<(u64, usize)>, ()> {
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
fn mp4_box(b: &[u8]) -> Option<(u64, usize)> {
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

/// Checks that every MP4 sample table holds the entries its count announces. symphonia
/// 0.5.5 allocates `count` entries up front: a 1 KB file announcing 4 billion would abort
/// the process on the failed allocation (found by cargo fuzz). Returns the offending box.
pub fn mp4_tables_fit(data: &[u8]) -> Result<(), String> {
    // Like symphonia, a box's children are read from the file up to the box's declared end,
    // and a child may run past its parent: offsets are into the whole file.
    fn walk(file: &[u8], from: usize, to: usize, depth: usize) -> Result<(), String> {
        let mut pos = from;
        while pos < to && pos + 8 <= file.len() {
            let b = &file[pos..];
            let kind = &b[4..8];
            let Some((size, header)) = mp4_box(b) else {
                return Ok(());
            };
            if size < header as u64 {
                return Ok(()); // Broken: symphonia stops there too.
            }
            let end = pos.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
            let body = &b[header.min(b.len())..(end - pos).min(b.len())];
            let entry = match kind {
                b"stts" | b"co64" | b"ctts" => Some(8),
                b"stsc" => Some(12),
                b"stco" | b"stss" => Some(4),
                _ => None,
            };
            let count = |at: usize| {
                body.get(at..at + 4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
            };
            let needed = match kind {
                _ if entry.is_some() => Some(8 + count(4) * entry.unwrap_or(0)),
                // stsz: a fixed size for all samples, or one size per sample.
                b"stsz" if count(4) == 0 => Some(12 + count(8) * 4),
                _ => None,
            };
            if needed.is_some_and(|n| n > body.len() as u64) {
                return Err(format!(
                    "its {} box announces more entries than it holds",
                    String::from_utf8_lossy(kind)
                ));
            }
            let container = matches!(
                kind,
                b"moov"
                    | b"trak"
                    | b"mdia"
                    | b"minf"
                    | b"stbl"
                    | b"edts"
                    | b"moof"
                    | b"traf"
                    | b"mvex"
            );
            if container && depth < 16 {
                walk(file, pos + header, end, depth + 1)?;
            }
            pos = end;
        }
        Ok(())
    }
    walk(data, 0, data.len(), 0)
}

/// Checks that no Matroska element (and no laced frame) claims more bytes than the file
/// holds, and any damage at all. symphonia 0.5.5 allocates an element's or frame's declared
/// size before reading it, and skips damage to read on: a few bytes announcing 2^50 would
/// abort the process (found by cargo fuzz). Masters may run past the end of a cut-off file.
pub fn matroska_sizes_fit(data: &[u8]) -> Result<(), String> {
    const MASTERS: &[u32] = &[
        0x1A45_DFA3,
        0x1853_8067,
        0x114D_9B74,
        0x4DBB,
        0x1549_A966,
        0x1F43_B675,
        0xA0,
        0x75A1,
        0xA6,
        0x1654_AE6B,
        0xAE,
        0xE0,
        0xE1,
        0x6D80,
        0x6240,
        0x5035,
        0x47E7,
        0x55B0,
        0x55D0,
        0x1C53_BB6B,
        0xBB,
        0xB7,
        0x1043_A770,
        0x45B9,
        0xB6,
        0x80,
        0x1254_C367,
        0x7373,
        0x63C0,
        0x67C8,
    ];
    fn walk(data: &[u8], depth: usize) -> Result<(), String> {
        let damaged = |what: &str, pos: usize| Err(format!("{what} at byte {pos} of an element"));
        let mut pos = 0;
        while pos < data.len() {
            // Strict: symphonia resyncs over damage and then trusts what it finds, so any
            // damage at all is refused here.
            let (id, id_len) = match vint(&data[pos..], true) {
                Ok(Some((id, len))) if len <= 4 => (id as u32, len),
                Ok(None) => return damaged("an element ID cut short", pos),
                _ => return damaged("bytes that are not an element", pos),
            };
            let (size, size_len) = match vint(&data[pos + id_len..], false) {
                Ok(Some(size)) => size,
                Ok(None) => return damaged("an element size cut short", pos),
                Err(()) => return damaged("an invalid element size", pos),
            };
            let start = pos + id_len + size_len;
            let unknown = size == (1u64 << (7 * size_len)) - 1;
            let available = (data.len() - start.min(data.len())) as u64;
            if MASTERS.contains(&id) {
                let live = id == 0x1853_8067 || id == 0x1F43_B675;
                if unknown && !live {
                    return Err(format!("a master element (ID {id:X}) with no usable size"));
                }
                // A master may run past the end of a cut-off file: then nothing follows it.
                let end = if unknown {
                    data.len()
                } else {
                    start + size.min(available) as usize
                };
                if depth < 32 {
                    walk(&data[start.min(data.len())..end], depth + 1)?;
                }
                pos = end;
                continue;
            }
            if unknown {
                return Err(format!("an element (ID {id:X}) has no size"));
            }
            if size > available {
                return Err(format!(
                    "an element (ID {id:X}) claims {size} bytes where {available} remain"
                ));
            }
            let body = &data[start..start + size as usize];
            if id == 0xA1 || id == 0xA3 {
                block_lacing_fits(body)?;
            }
            pos = start + size as usize;
        }
        Ok(())
    }
    walk(data, 0)
}

/// Checks the frame sizes a (Simple)Block's lacing announces against the block's bytes,
/// reading sizes as symphonia does (0xFF is "unknown": the largest size).
fn block_lacing_fits(block: &[u8]) -> Result<(), String> {
    let damaged = || Err("a laced block announces frames larger than itself".to_string());
    // symphonia's vint: 0xFF means u64::MAX; a zero first byte is not a number.
    let read = |at: usize| -> Option<(u64, usize)> {
        let first = *block.get(at)?;
        if first == 0xFF {
            return Some((u64::MAX, 1));
        }
        match vint(&block[at..], false) {
            Ok(Some(v)) => Some(v),
            _ => None,
        }
    };
    let Some((_, track_len)) = read(0) else {
        return damaged();
    };
    let Some(&flags) = block.get(track_len + 2) else {
        return damaged();
    };
    let lacing = (flags >> 1) & 3;
    let mut pos = track_len + 3;
    if lacing == 0 || lacing == 2 {
        return Ok(()); // Unlaced, or fixed-size (sizes come from the block length).
    }
    let Some(&count) = block.get(pos) else {
        return damaged();
    };
    pos += 1;
    let mut total: u64 = 0;
    if lacing == 1 {
        for _ in 0..count {
            let mut size = 0u64;
            loop {
                let Some(&b) = block.get(pos) else {
                    return damaged();
                };
                pos += 1;
                size += b as u64;
                if b != 255 {
                    break;
                }
            }
            total += size;
        }
    } else {
        let mut size: i64 = 0;
        for k in 0..count {
            let Some((raw, len)) = read(pos) else {
                return damaged();
            };
            pos += len;
            if k == 0 {
                if raw > i64::MAX as u64 {
                    return damaged();
                }
                size = raw as i64;
            } else {
                let half = (1i64 << (7 * len - 1)) - 1;
                size = size.saturating_add((raw as i64).wrapping_sub(half));
            }
            if size < 0 {
                return damaged();
            }
            total = total.saturating_add(size as u64);
        }
    }
    if total > block.len().saturating_sub(pos) as u64 {
        return damaged();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebM start: EBML header, unknown-size Segment, Tracks, then an unknown-size cluster.
    fn webm_head() -> Vec<u8> {
        let mut f = vec![0x1a, 0x45, 0xdf, 0xa3, 0x84, 0x42, 0x86, 0x81, 0x01];
        f.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&[0x16, 0x54, 0xae, 0x6b, 0x82, 0xae, 0x80]);
        f
    }

    fn simple_block(n: u8) -> Vec<u8> {
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
    fn mp4_tables_that_announce_more_than_they_hold_are_caught() {
        let stts = |count: u32| {
            let mut b = 24u32.to_be_bytes().to_vec();
            b.extend_from_slice(b"stts\0\0\0\0");
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 4, 0]);
            let mut stbl = ((b.len() + 8) as u32).to_be_bytes().to_vec();
            stbl.extend_from_slice(b"stbl");
            stbl.extend_from_slice(&b);
            let mut moov = ((stbl.len() + 8) as u32).to_be_bytes().to_vec();
            moov.extend_from_slice(b"moov");
            moov.extend_from_slice(&stbl);
            moov
        };
        assert_eq!(mp4_tables_fit(&stts(1)), Ok(()));
        assert!(mp4_tables_fit(&stts(u32::MAX)).is_err());
    }

    #[test]
    fn matroska_elements_that_claim_more_than_the_file_are_caught() {
        let mut f = webm_head();
        f.extend_from_slice(&[0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        f.extend_from_slice(&simple_block(1));
        assert_eq!(matroska_sizes_fit(&f), Ok(()));
        // A Title string of 2^40 bytes.
        let mut bad = f.clone();
        bad.extend_from_slice(&[0x7b, 0xa9, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0]);
        assert!(matroska_sizes_fit(&bad).is_err());
        // EBML lacing announcing a 2^32-byte first frame.
        let mut laced = f;
        laced.extend_from_slice(&[0xa3, 0x8e, 0x81, 0x00, 0x00, 0x86, 0x01]);
        laced.extend_from_slice(&[0x01, 0, 0, 0x01, 0, 0, 0, 0, 0]);
        assert!(matroska_sizes_fit(&laced).is_err());
    }

    #[test]
    fn an_element_too_large_to_keep_is_refused() {
        let a = begin(Container::Mp4, b"\0\0\0\x10ftypiso6\0\0\0\0").unwrap();
        let mut big = b"\0\x08\0\0moof".to_vec();
        big.resize(MAX_PENDING + 16, 0);
        assert!(resume(&a.recording, &big).is_err());
    }
}
