//! Memory kernels of `bench-mem`: strided, random, data-dependent and page-copy accesses over a buffer of many
//! pages. On the guest the buffer is a window of 4 KiB Sv39 pages scattered over physical memory, so these
//! accesses keep missing the TLB; on the host it is ordinary memory and the results are the same.
use crate::{fold, Report, Rng};

/// Rounds of the measured workload.
pub const FULL: u32 = 16;
/// Rounds of the quick variant the tests run.
pub const SMALL: u32 = 1;

/// 64-bit words of the buffer: 8 MiB, 2048 pages of 4 KiB.
pub const WORDS: usize = 1 << 20;
/// Words per 4 KiB page.
pub const PAGE_WORDS: usize = 512;
/// The stride of the strided pass: one page and one cache line, so every access lands on another page.
const STRIDE: usize = PAGE_WORDS + 8;
/// Accesses per round of each pass.
const ACCESSES: u32 = 200_000;
/// Pages copied per round.
const PAGE_COPIES: u32 = 128;

/// Fills `buffer` (of [`WORDS`] words) once, then runs `scale` rounds of the memory kernels over it.
///
/// # Panics
/// If `buffer` does not hold exactly [`WORDS`] words.
pub fn run(scale: u32, buffer: &mut [u64]) -> Report<4> {
    assert_eq!(buffer.len(), WORDS, "the memory workload needs a buffer of WORDS words");
    const MASK: usize = WORDS - 1;
    let mut rng = Rng::new(0x3c6e_f372_fe94_f82b);
    let mut fill = Rng::new(0xa54f_f53a_5f1d_36f1);
    for word in buffer.iter_mut() {
        *word = fill.next_u64();
    }
    let mut parts = [0u64; 4];
    let mut index = 0usize;
    for round in 0..scale {
        // Strided read-modify-write.
        let mut sum = 0u64;
        for k in 0..ACCESSES {
            index = (index + STRIDE) & MASK;
            let value = buffer[index];
            buffer[index] = value.rotate_left(1) ^ u64::from(k);
            sum = sum.wrapping_add(value);
        }
        parts[0] = fold(parts[0], sum);

        // Random read-modify-write.
        let mut acc = u64::from(round);
        for _ in 0..ACCESSES {
            let at = rng.next_u64() as usize & MASK;
            acc ^= buffer[at];
            buffer[at] = buffer[at].wrapping_add(acc | 1);
        }
        parts[1] = fold(parts[1], acc);

        // Data-dependent chase: the next address is a hash of the word just read.
        let mut at = (acc as usize) & MASK;
        let mut chain = 0u64;
        for _ in 0..ACCESSES {
            let value = buffer[at];
            buffer[at] = value.wrapping_add(1);
            chain = chain.wrapping_add(value);
            at = ((value ^ (value >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 44) as usize & MASK;
        }
        parts[2] = fold(parts[2], chain);

        // Whole-page copies between random pages, xoring in a round key.
        let key = rng.next_u64();
        let mut copied = 0u64;
        for _ in 0..PAGE_COPIES {
            let from = rng.below((WORDS / PAGE_WORDS) as u32) as usize * PAGE_WORDS;
            let to = rng.below((WORDS / PAGE_WORDS) as u32) as usize * PAGE_WORDS;
            if from == to {
                continue;
            }
            for offset in 0..PAGE_WORDS {
                buffer[to + offset] = buffer[from + offset] ^ key;
            }
            copied = fold(copied, buffer[to + PAGE_WORDS - 1]);
        }
        parts[3] = fold(parts[3], copied);
    }
    // Everything the passes left behind, sampled one word per cache line.
    let final_digest = buffer.iter().step_by(8).fold(0u64, |digest, &word| digest.wrapping_add(word));
    parts[3] = fold(parts[3], final_digest);
    Report { names: ["strided", "random", "chase", "pagecopy"], parts }
}
