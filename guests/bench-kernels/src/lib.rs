//! `bench-kernels`: the deterministic workloads of the `bench-int`, `bench-mem` and `bench-branch` guests.
//!
//! Every workload is plain `no_std` Rust with no allocation: it works in a scratch structure or a slice the caller
//! provides (page-aligned statics on the guest, boxed or `Vec` memory on the host), runs `scale` rounds driven by
//! a SplitMix64 generator, and folds what each kernel computed into a [`Report`]. The guests print the report and
//! its [`Report::checksum`]; the hosted tests compute the same report natively and compare, so a guest run is
//! known to be correct, and `trapeze bench` compares the line across engines and QEMU.
//!
//! Each workload has a `FULL` scale (what `trapeze bench` measures: 100 to 300 million guest instructions) and a
//! `SMALL` one (a few million, for the tests).
#![no_std]

pub mod branch;
pub mod int;
pub mod mem;

use core::fmt;

/// SplitMix64: a small, fast, well-distributed 64-bit generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift.
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }
}

/// Folds `value` into the running digest `digest` (order-sensitive).
#[inline]
pub fn fold(digest: u64, value: u64) -> u64 {
    (digest.rotate_left(5) ^ value).wrapping_mul(0x0000_0100_0000_01b3)
}

/// What a workload computed: one digest per kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<const K: usize> {
    /// The kernels' names, in the order they run.
    pub names: [&'static str; K],
    /// Each kernel's digest over every round.
    pub parts: [u64; K],
}

impl<const K: usize> Report<K> {
    /// The digests of all kernels folded into one number: what the guests print as `checksum`.
    pub fn checksum(&self) -> u64 {
        self.parts.iter().fold(0x6a09_e667_f3bc_c908, |digest, &part| fold(digest, part))
    }
}

/// `name 0x<digest>` for every kernel, separated by spaces.
impl<const K: usize> fmt::Display for Report<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, part)) in self.names.iter().zip(&self.parts).enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name} {part:#018x}")?;
        }
        Ok(())
    }
}

/// The line a guest prints for its checksum, e.g. `bench-int: checksum 0x0123456789abcdef` (no newline).
pub struct ChecksumLine<'a>(pub &'a str, pub u64);

impl fmt::Display for ChecksumLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: checksum {:#018x}", self.0, self.1)
    }
}
