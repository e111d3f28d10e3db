//! What the `disk-pattern` guest writes, for the tests that check a disk image after it ran (`multi_vm`, under
//! `trapeze up`, and `board`, on the native board): its pattern, and the image expected once VMs of it have
//! filled their partitions of an image and nothing else changed.
#![allow(dead_code)]

/// Bytes per sector.
pub const SECTOR: usize = 512;

/// FNV-1a, as the guest hashes its command line.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

/// The guest's pattern for a disk of `sectors` sectors, seeded by its command line `append`: the word at byte
/// `8 * k` is `seed ^ (k + 1) * 0x9e37_79b9_7f4a_7c15`, little-endian.
pub fn pattern(append: &str, sectors: usize) -> Vec<u8> {
    let seed = fnv(append.as_bytes());
    (0..sectors * SECTOR / 8)
        .flat_map(|k| (seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes())
        .collect()
}

/// `original` with each VM's pattern (its command line, its extents `(start sector, sectors)` in the order it
/// sees them) laid over its extents.
pub fn with_patterns(original: &[u8], vms: &[(&str, &[(usize, usize)])]) -> Vec<u8> {
    let mut expected = original.to_vec();
    for &(append, extents) in vms {
        let sectors = extents.iter().map(|(_, length)| length).sum();
        let pattern = pattern(append, sectors);
        let mut virtual_sector = 0;
        for &(start, length) in extents {
            let bytes = &pattern[virtual_sector * SECTOR..(virtual_sector + length) * SECTOR];
            expected[start * SECTOR..(start + length) * SECTOR].copy_from_slice(bytes);
            virtual_sector += length;
        }
    }
    expected
}

/// Panics naming the first sector where `after` differs from `expected`.
pub fn assert_image(after: &[u8], expected: &[u8], what: &str) {
    assert_eq!(after.len(), expected.len(), "the image kept its size");
    if let Some(offset) = after.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("the image differs from {what} at byte {offset} (sector {})", offset / SECTOR);
    }
}
