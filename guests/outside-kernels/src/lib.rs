//! `outside-kernels`: the workload of the `bench-outside` guest, integer kernels whose code this project did not
//! write.
//!
//! Each round makes a buffer of deterministic pseudo-random text (words of a random vocabulary drawn with a skewed
//! distribution, so that it compresses about as well as prose) and a random array, then runs on them:
//!
//! - `sha256`, `sha512`: SHA-256 and SHA-512 from the RustCrypto `sha2` crate (its portable software rounds);
//! - `blake3`: BLAKE3 from the reference team's `blake3` crate, its portable Rust implementation (`pure`);
//! - `crc32`: CRC-32 (IEEE) from `crc32fast` (its table-driven slice-by-16 code);
//! - `deflate`: a zlib-level-6 deflate of the buffer and the inflate back with `miniz_oxide` (the Rust port of
//!   miniz that `flate2` uses), checked to round-trip;
//! - `lz4`: LZ4 block compression and decompression with `lz4_flex` (its safe code), checked to round-trip;
//! - `sort`: `sort_unstable` (ipnsort) of random `u32`s and the stable `sort_by_key` (driftsort) of records by a
//!   key with many duplicates, both from the Rust project's `core`/`alloc`.
//!
//! What each kernel produced (digests, compressed bytes, sorted arrays) is folded into a [`Report`] as in
//! `bench-kernels`; the guest prints it and its checksum, the hosted test computes the same natively with the same
//! crates and compares. The workload allocates (`miniz_oxide` and the stable sort need `alloc`): the guest gives
//! it a heap, the host its own.
#![no_std]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use bench_kernels::{fold, Report, Rng};
use sha2::Digest;

// The crates themselves, for the hosted test's known-answer checks (the same versions and features).
pub use {blake3, crc32fast, lz4_flex, miniz_oxide, sha2};

/// Rounds of the measured workload.
pub const FULL: u32 = 8;
/// Rounds of the quick variant the tests run.
pub const SMALL: u32 = 1;

/// Most bytes of the text buffer a round works on (each round takes up to 1 KiB less, so tails vary).
pub const TEXT_LEN: usize = 32 * 1024;
/// Elements of the arrays the sorts work on.
pub const SORT_LEN: usize = 8192;

/// The kernels, in the order they run and appear in the report.
pub const NAMES: [&str; 7] = ["sha256", "sha512", "blake3", "crc32", "deflate", "lz4", "sort"];

/// Runs `scale` rounds of every kernel. Panics if a compressor's output does not decompress to its input.
pub fn run(scale: u32) -> Report<7> {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let vocabulary = Vocabulary::new(&mut rng);
    let mut parts = [0u64; 7];
    let mut text = vec![0u8; TEXT_LEN];
    let mut lz4_out = vec![0u8; lz4_flex::block::get_maximum_output_size(TEXT_LEN)];
    let mut lz4_back = vec![0u8; TEXT_LEN];
    let mut numbers = vec![0u32; SORT_LEN];
    let mut records = vec![(0u16, 0u32); SORT_LEN];
    for _ in 0..scale {
        let length = TEXT_LEN - rng.below(1024) as usize;
        let text = &mut text[..length];
        vocabulary.fill(&mut rng, text);

        parts[0] = fold_bytes(parts[0], &sha2::Sha256::digest(&*text));
        parts[1] = fold_bytes(parts[1], &sha2::Sha512::digest(&*text));
        parts[2] = fold_bytes(parts[2], blake3::hash(text).as_bytes());
        parts[3] = fold(parts[3], u64::from(crc32fast::hash(text)));

        let deflated = miniz_oxide::deflate::compress_to_vec(text, 6);
        let inflated = miniz_oxide::inflate::decompress_to_vec(&deflated).expect("inflate what deflate made");
        assert!(inflated == *text, "deflate did not round-trip");
        parts[4] = fold_bytes(fold(parts[4], deflated.len() as u64), &deflated);

        let packed = lz4_flex::block::compress_into(text, &mut lz4_out).expect("the LZ4 bound holds the output");
        let unpacked =
            lz4_flex::block::decompress_into(&lz4_out[..packed], &mut lz4_back).expect("unpack what LZ4 made");
        assert!(lz4_back[..unpacked] == *text, "LZ4 did not round-trip");
        parts[5] = fold_bytes(fold(parts[5], packed as u64), &lz4_out[..packed]);

        for number in numbers.iter_mut() {
            *number = rng.next_u32();
        }
        numbers.sort_unstable();
        for (index, record) in records.iter_mut().enumerate() {
            *record = (rng.below(512) as u16, index as u32);
        }
        records.sort_by_key(|record| record.0);
        let sorted = numbers.iter().zip(&records).fold(parts[6], |digest, (&number, &(key, index))| {
            fold(digest, u64::from(number) << 32 ^ u64::from(key) << 16 ^ u64::from(index))
        });
        parts[6] = sorted;
    }
    Report { names: NAMES, parts }
}

/// Folds `bytes` into `digest`, eight little-endian bytes at a time (the last word zero-padded).
pub fn fold_bytes(digest: u64, bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(digest, |digest, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        fold(digest, u64::from_le_bytes(word))
    })
}

/// Words of the generated text: 256 random lower-case words of 1 to 10 letters.
struct Vocabulary {
    /// The words' letters, one after another.
    letters: Vec<u8>,
    /// Where each word starts in `letters`; the last entry is its end.
    starts: Vec<usize>,
}

impl Vocabulary {
    const WORDS: u32 = 256;

    fn new(rng: &mut Rng) -> Self {
        let mut letters = Vec::new();
        let mut starts = vec![0];
        for _ in 0..Self::WORDS {
            for _ in 0..=rng.below(10) {
                letters.push(b'a' + rng.below(26) as u8);
            }
            starts.push(letters.len());
        }
        Self { letters, starts }
    }

    /// Fills `text` with words separated by spaces (and now and then a full stop and a line break), the word
    /// drawn with a skewed distribution (the smaller of two uniform draws: low-numbered words are common).
    fn fill(&self, rng: &mut Rng, text: &mut [u8]) {
        let mut at = 0;
        while at < text.len() {
            let word = rng.below(Self::WORDS).min(rng.below(Self::WORDS)) as usize;
            let separator: &[u8] = if rng.below(16) == 0 { b".\n" } else { b" " };
            let pieces = [&self.letters[self.starts[word]..self.starts[word + 1]], separator];
            for byte in pieces.into_iter().flatten() {
                if at == text.len() {
                    break;
                }
                text[at] = *byte;
                at += 1;
            }
        }
    }
}
