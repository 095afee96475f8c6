//! Checks made before symphonia reads a file: sizes and counts in a container's own tables
//! that would make symphonia 0.5.5 allocate far more than the file holds (an abort on the
//! failed allocation, found by cargo fuzz). The element walking is `timeslice`'s.

use super::timeslice::{mp4_box, vint};

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
    use crate::audio::timeslice::tests::{simple_block, webm_head};

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
}
