//! `disk-pattern`: fills its whole virtio-blk disk (virtio-mmio slot 0, `0x1000_1000`) with a pattern, reads it
//! back, and checks that requests past the disk's end get the virtio error status.
//!
//! The pattern is seeded by the kernel command line (`/chosen/bootargs` of the devicetree in `a1`), so two VMs
//! running this guest with different command lines write different patterns: the 64-bit word at byte offset
//! `8 * k` of the disk is `seed ^ (k + 1) * 0x9e37_79b9_7f4a_7c15` (little-endian), with `seed` the FNV-1a hash
//! of the command line. The host's test computes the same words. Each check prints `ok:` or `FAIL:`; the exit
//! status is 0 when all pass. The driver (`driver.rs`, shared with `disk-crash`) is the smallest correct one:
//! polled (no interrupts), one request at a time.
#![no_std]
#![no_main]

mod driver;

use driver::*;
use rt::checks::{check, finish};
use rt::println;

/// The pattern's word `k` (at byte offset `8 * k` of the disk).
fn pattern_word(seed: u64, k: u64) -> u64 {
    seed ^ (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Fills `DATA` with the pattern of the `sectors` sectors from `sector`.
fn fill(seed: u64, sector: u64, sectors: usize) {
    let first = sector * (SECTOR as u64 / 8);
    for index in 0..sectors * SECTOR / 8 {
        data()[8 * index..8 * index + 8].copy_from_slice(&pattern_word(seed, first + index as u64).to_le_bytes());
    }
}

/// Whether `DATA` holds the pattern of the `sectors` sectors from `sector`.
fn matches(seed: u64, sector: u64, sectors: usize) -> bool {
    let first = sector * (SECTOR as u64 / 8);
    (0..sectors * SECTOR / 8)
        .all(|index| data()[8 * index..8 * index + 8] == pattern_word(seed, first + index as u64).to_le_bytes())
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: u64, devicetree: u64) -> u32 {
    let Some(arguments) = bootargs(devicetree as usize) else {
        println!("FAIL: no kernel command line to seed the pattern");
        return 1;
    };
    let seed = fnv(arguments);
    println!("disk-pattern: seed {seed:#018x} from {:?}", core::str::from_utf8(arguments).unwrap_or("?"));
    let Some(mut driver) = Driver::probe() else { return finish("disk-pattern") };
    let capacity = driver.capacity();
    println!("disk-pattern: {capacity} sectors");
    check("the disk has sectors", capacity > 0, format_args!("capacity {capacity}"));

    let mut sector = 0;
    let mut written = true;
    while sector < capacity {
        let count = (capacity - sector).min(CHUNK as u64) as usize;
        fill(seed, sector, count);
        let status = driver.request(REQUEST_OUT, sector, count);
        if status != STATUS_OK {
            println!("FAIL: write at sector {sector}: status {status}");
            written = false;
            break;
        }
        sector += count as u64;
    }
    check("the pattern written across the whole disk", written, format_args!("stopped at sector {sector}"));
    let flushed = driver.request(REQUEST_FLUSH, 0, 0);
    check("flush", flushed == STATUS_OK, format_args!("status {flushed}"));

    let mut sector = 0;
    let mut same = true;
    while sector < capacity {
        let count = (capacity - sector).min(CHUNK as u64) as usize;
        data().fill(0);
        let status = driver.request(REQUEST_IN, sector, count);
        if status != STATUS_OK || !matches(seed, sector, count) {
            println!("FAIL: read back at sector {sector}: status {status}");
            same = false;
            break;
        }
        sector += count as u64;
    }
    check("the pattern read back", same, format_args!("differs at sector {sector}"));

    let past = driver.request(REQUEST_IN, capacity, 1);
    check("a read past the end gets IOERR", past == STATUS_IOERR, format_args!("status {past}"));
    let straddling = driver.request(REQUEST_OUT, capacity - 1, 2);
    check("a write straddling the end gets IOERR", straddling == STATUS_IOERR, format_args!("status {straddling}"));
    let far = driver.request(REQUEST_OUT, u64::MAX - 1, 1);
    check("a write at sector 2^64-2 gets IOERR", far == STATUS_IOERR, format_args!("status {far}"));
    finish("disk-pattern")
}
