//! The chunk index of a blob: the SHA-256 of each [`CHUNK`]-sized piece, stored beside the blob
//! once its whole digest has been checked, so that a range read can verify only the chunks it
//! touches. [`ChunkHasher`] computes the whole digest and the index in one pass.

use ballast_core::Sha256Digest;
use sha2::{Digest, Sha256};

pub use crate::local::CHUNK;

/// Number of chunks in a blob of `size` bytes.
#[must_use]
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK)
}

/// Parses a stored index (32 bytes per chunk); `None` when it does not fit a blob of `size`.
#[must_use]
pub fn parse_index(raw: &[u8], size: u64) -> Option<Vec<[u8; 32]>> {
    let want = usize::try_from(chunk_count(size)).ok()?;
    if raw.len() != want.checked_mul(32)? {
        return None;
    }
    raw.chunks_exact(32)
        .map(|c| <[u8; 32]>::try_from(c).ok())
        .collect()
}

/// Hashes bytes as they pass: the digest of the whole, and one digest per chunk.
#[derive(Clone, Default)]
pub struct ChunkHasher {
    whole: Sha256,
    chunk: Sha256,
    in_chunk: u64,
    index: Vec<[u8; 32]>,
    size: u64,
}

impl ChunkHasher {
    /// A hasher that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = usize::try_from(CHUNK - self.in_chunk).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u64;
            if self.in_chunk == CHUNK {
                self.index.push(self.chunk.finalize_reset().into());
                self.in_chunk = 0;
            }
            data = &data[take..];
        }
    }

    /// The digest of everything seen, its size, and the chunk index.
    #[must_use]
    pub fn finish(mut self) -> (Sha256Digest, u64, Vec<[u8; 32]>) {
        if self.in_chunk > 0 {
            self.index.push(self.chunk.finalize().into());
        }
        (
            Sha256Digest::from_bytes(self.whole.finalize().into()),
            self.size,
            self.index,
        )
    }
}

/// The stored form of an index.
#[must_use]
pub fn encode_index(index: &[[u8; 32]]) -> Vec<u8> {
    index.iter().flatten().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_chunk_digests_whatever_the_pieces() {
        let len = usize::try_from(CHUNK * 2 + 77).unwrap_or(0);
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        for piece in [1usize, 1000, 4 << 20, len] {
            let mut h = ChunkHasher::new();
            for p in data.chunks(piece) {
                h.update(p);
            }
            let (d, size, index) = h.finish();
            assert_eq!(d, Sha256Digest::of(&data));
            assert_eq!(size, len as u64);
            let want: Vec<[u8; 32]> = data
                .chunks(usize::try_from(CHUNK).unwrap_or(1))
                .map(|c| Sha256::digest(c).into())
                .collect();
            assert_eq!(index, want);
            assert_eq!(parse_index(&encode_index(&index), size), Some(want));
        }
        let (d, size, index) = ChunkHasher::new().finish();
        assert_eq!((d, size, index.len()), (Sha256Digest::of(b""), 0, 0));
        assert_eq!(parse_index(&[0; 31], 10), None);
        assert_eq!(parse_index(&[], 0), Some(vec![]));
    }
}
