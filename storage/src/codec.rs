//! Checksummed values and chunked blobs (docs/storage.md, "Formats").
//!
//! Every value this crate writes is `payload ++ crc32c(key ++ payload)`
//! (little-endian `u32`): the key is covered too, so a value copied under
//! the wrong key is caught as well as a flipped or lost byte. Values larger
//! than a chunk (snapshots, checkpoints) are stored as a header value and
//! numbered chunks, each framed the same way, so RocksDB never holds one
//! value of hundreds of megabytes.

/// Bytes of a chunk of a blob.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Magic of a blob header.
pub const BLOB_MAGIC: [u8; 4] = *b"PBLB";
/// Format version of blob headers.
pub const BLOB_VERSION: u16 = 1;
/// Encoded length of a blob header (before framing).
pub const BLOB_HEADER_BYTES: usize = 4 + 2 + 4 + 8 + 4;

/// The checksum of a value stored under `key`.
pub fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), payload)
}

/// Appends the checksum of `payload` stored under `key`.
pub fn frame(key: &[u8], mut payload: Vec<u8>) -> Vec<u8> {
    let crc = checksum(key, &payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// Checks and strips the checksum of a value read under `key`.
pub fn unframe<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    if value.len() < 4 {
        return Err(format!(
            "value of {} bytes is shorter than its checksum",
            value.len()
        ));
    }
    let (payload, tail) = value.split_at(value.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let actual = checksum(key, payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch: stored {stored:08x}, computed {actual:08x} over {} bytes",
            payload.len()
        ));
    }
    Ok(payload)
}

/// The header of a chunked blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    pub chunks: u32,
    pub total_len: u64,
    /// crc32c of the whole blob, checked after the chunks are joined.
    pub crc: u32,
}

impl BlobHeader {
    /// Describes `data` cut into `CHUNK_BYTES` chunks.
    pub fn of(data: &[u8]) -> Self {
        Self::of_parts(&[data])
    }

    /// Describes the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        BlobHeader {
            chunks: total.div_ceil(CHUNK_BYTES) as u32,
            total_len: total as u64,
            crc: parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOB_HEADER_BYTES);
        v.extend_from_slice(&BLOB_MAGIC);
        v.extend_from_slice(&BLOB_VERSION.to_le_bytes());
        v.extend_from_slice(&self.chunks.to_le_bytes());
        v.extend_from_slice(&self.total_len.to_le_bytes());
        v.extend_from_slice(&self.crc.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != BLOB_HEADER_BYTES {
            return Err(format!(
                "blob header of {} bytes, expected {BLOB_HEADER_BYTES}",
                b.len()
            ));
        }
        if b[..4] != BLOB_MAGIC {
            return Err("bad blob magic".into());
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != BLOB_VERSION {
            return Err(format!(
                "blob format version {version}, this build reads {BLOB_VERSION}"
            ));
        }
        let h = BlobHeader {
            chunks: u32::from_le_bytes(b[6..10].try_into().expect("4")),
            total_len: u64::from_le_bytes(b[10..18].try_into().expect("8")),
            crc: u32::from_le_bytes(b[18..22].try_into().expect("4")),
        };
        if h.total_len.div_ceil(CHUNK_BYTES as u64) != h.chunks as u64 {
            return Err(format!(
                "{} chunks cannot hold {} bytes",
                h.chunks, h.total_len
            ));
        }
        Ok(h)
    }
}

/// The framed `(key, value)` pairs of a blob made of the concatenation of
/// `parts`: the header, then chunks of `CHUNK_BYTES`. Each byte is copied
/// once, straight into its framed chunk value.
pub fn blob_values<'a>(
    part: &'a [u8],
    parts: &'a [&'a [u8]],
) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + 'a {
    let header = BlobHeader::of_parts(parts);
    let k0 = chunk_key(part, 0);
    let head = frame(&k0, header.encode());
    let (mut at_part, mut at_byte, mut n) = (0usize, 0usize, 0u32);
    let chunks = std::iter::from_fn(move || {
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 4);
        while buf.len() < CHUNK_BYTES && at_part < parts.len() {
            let src = &parts[at_part][at_byte..];
            let take = src.len().min(CHUNK_BYTES - buf.len());
            buf.extend_from_slice(&src[..take]);
            at_byte += take;
            if at_byte == parts[at_part].len() {
                at_part += 1;
                at_byte = 0;
            }
        }
        if buf.is_empty() {
            return None;
        }
        n += 1;
        let k = chunk_key(part, n);
        let v = frame(&k, buf);
        Some((k, v))
    });
    std::iter::once((k0, head)).chain(chunks)
}

/// Key of chunk `n` of the blob named `part` (chunk 0 is the header).
pub fn chunk_key(part: &[u8], n: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(part.len() + 4);
    k.extend_from_slice(part);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_detect_flips_truncation_and_moved_values() {
        let v = frame(b"k1", b"hello".to_vec());
        assert_eq!(unframe(b"k1", &v).unwrap(), b"hello");
        let mut flipped = v.clone();
        flipped[1] ^= 0x10;
        assert!(unframe(b"k1", &flipped).unwrap_err().contains("checksum"));
        assert!(unframe(b"k1", &v[..v.len() - 1]).is_err());
        assert!(unframe(b"k1", &v[..2]).is_err());
        assert!(
            unframe(b"k2", &v).is_err(),
            "a value under another key must fail"
        );
    }

    #[test]
    fn blob_headers_round_trip_and_check_their_fields() {
        let data = vec![7u8; CHUNK_BYTES * 2 + 5];
        let h = BlobHeader::of(&data);
        assert_eq!(h.chunks, 3);
        assert_eq!(BlobHeader::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[6] = 9; // nine chunks for the same length
        assert!(BlobHeader::decode(&bad).is_err());
        assert_eq!(BlobHeader::of(&[]).chunks, 0);
        // Chunking a concatenation of parts equals chunking the whole.
        let (a, b) = data.split_at(CHUNK_BYTES - 3);
        let split: Vec<_> = blob_values(b"p", &[a, &[], b]).collect();
        let whole: Vec<_> = blob_values(b"p", &[&data[..]]).collect();
        assert_eq!(split.len(), 4);
        assert!(split == whole);
    }
}
