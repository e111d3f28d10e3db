//! `disk-crash`: writes records to its virtio-blk disk without end, for the crash-consistency test that kills the
//! VMM in the middle (`hosted-test/tests/crash.rs`).
//!
//! The kernel command line is `round=N` (N from 1): the test runs the guest once per round on the same image and
//! kills it each time. Write `seq` (from 0) covers 1 to 4 sectors from a pseudo-random sector, so later writes
//! overwrite earlier ones, of this round and of earlier ones. Every sector written holds one record: 64
//! little-endian words, `MAGIC`, `round`, `seq`, the sector, then 60 words [`record_word`] of those (the host
//! computes the same), so a sector holds either one whole record or something the host can tell apart. Once the
//! device has completed a write with status OK (the used ring says so) the guest prints `ack SECTOR COUNT ROUND
//! SEQ`; every 16 writes it flushes (`VIRTIO_BLK_T_FLUSH`) and prints `flushed ROUND SEQ`. A status other than
//! OK prints `FAIL:` and stops. After `WRITES` writes (never reached when the test kills it) it exits 0.
#![no_std]
#![no_main]

#[path = "../driver.rs"]
mod driver;

use driver::*;
use rt::println;

/// The first word of every record.
const MAGIC: u64 = 0x6372_6173_6872_6563;

/// Writes before the guest stops by itself.
const WRITES: u64 = 1_000_000;

/// Words of a sector.
const WORDS: usize = SECTOR / 8;

/// Word `k` (4 to 63) of the record of write `seq` of `round` at `sector`.
fn record_word(round: u64, seq: u64, sector: u64, k: u64) -> u64 {
    let x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (seq + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ (sector.wrapping_mul(64) + k).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where write `seq` of `round` starts and how many sectors it covers, on a disk of `capacity` sectors.
fn place(round: u64, seq: u64, capacity: u64) -> (u64, usize) {
    let mut x = (seq + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_mul(0xd1b5_4a32_d192_ed03);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    let sector = x % capacity;
    let count = (1 + (x >> 8) % 4).min(capacity - sector) as usize;
    (sector, count)
}

/// `N` of a `round=N` command line.
fn round(arguments: &[u8]) -> Option<u64> {
    let digits = arguments.strip_prefix(b"round=")?;
    let text = core::str::from_utf8(digits).ok()?;
    text.trim().parse().ok().filter(|&round| round > 0)
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: u64, devicetree: u64) -> u32 {
    let Some(round) = bootargs(devicetree as usize).and_then(round) else {
        println!("FAIL: the kernel command line is not round=N");
        return 1;
    };
    let Some(mut driver) = Driver::probe() else { return 1 };
    let capacity = driver.capacity();
    println!("disk-crash: round {round}, {capacity} sectors");
    if capacity == 0 {
        println!("FAIL: the disk has no sector");
        return 1;
    }
    for seq in 0..WRITES {
        let (sector, count) = place(round, seq, capacity);
        for (index, words) in data().chunks_exact_mut(SECTOR).take(count).enumerate() {
            let at = sector + index as u64;
            for (k, word) in words.chunks_exact_mut(8).enumerate().take(WORDS) {
                let value = match k {
                    0 => MAGIC,
                    1 => round,
                    2 => seq,
                    3 => at,
                    _ => record_word(round, seq, at, k as u64),
                };
                word.copy_from_slice(&value.to_le_bytes());
            }
        }
        let status = driver.request(REQUEST_OUT, sector, count);
        if status != STATUS_OK {
            println!("FAIL: write {seq} at sector {sector}: status {status}");
            return 1;
        }
        println!("ack {sector} {count} {round} {seq}");
        if seq % 16 == 15 {
            let status = driver.request(REQUEST_FLUSH, 0, 0);
            if status != STATUS_OK {
                println!("FAIL: flush after write {seq}: status {status}");
                return 1;
            }
            println!("flushed {round} {seq}");
        }
    }
    println!("disk-crash: {WRITES} writes");
    0
}
