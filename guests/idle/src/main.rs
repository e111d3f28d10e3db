//! `idle`: arms the CLINT timer about 1.5 s ahead (`mtime` counts at 10 MHz) and waits for it in a `wfi` loop
//! with `mie.MTIE` set and `mstatus.MIE` clear, so `wfi` wakes on the pending interrupt without trapping. Prints
//! `idle: woke after timer` and exits 0 (or `FAIL: ...` and exits 1). The host test checks that the VMM slept
//! rather than spun while the guest waited.
#![no_std]
#![no_main]

use rt::{csr_clear, csr_read, csr_set, println};

/// CLINT `mtimecmp` of hart 0.
const MTIMECMP: usize = 0x0200_4000;
/// CLINT `mtime`.
const MTIME: usize = 0x0200_bff8;
/// `mip.MTIP` / `mie.MTIE`.
const MTI: u64 = 1 << 7;
/// `mstatus.MIE`.
const MSTATUS_MIE: u64 = 1 << 3;
/// 1.5 s of `mtime` ticks at 10 MHz.
const WAIT_TICKS: u64 = 15_000_000;

fn mtime() -> u64 {
    // SAFETY: the CLINT `mtime` register of the `virt` memory map.
    unsafe { core::ptr::read_volatile(MTIME as *const u64) }
}

fn set_mtimecmp(value: u64) {
    // SAFETY: the CLINT `mtimecmp` register of hart 0.
    unsafe { core::ptr::write_volatile(MTIMECMP as *mut u64, value) };
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    csr_clear!("mstatus", MSTATUS_MIE);
    set_mtimecmp(u64::MAX);
    let start = mtime();
    let deadline = start + WAIT_TICKS;
    set_mtimecmp(deadline);
    csr_set!("mie", MTI);
    let mut wakeups = 0u64;
    while csr_read!("mip") & MTI == 0 {
        // SAFETY: `wfi` only waits; with MIE clear a pending interrupt resumes execution here.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
        wakeups += 1;
    }
    let now = mtime();
    set_mtimecmp(u64::MAX);
    csr_clear!("mie", MTI);
    if now < deadline {
        println!("FAIL: mip.MTIP set at mtime {now} before mtimecmp {deadline}");
        return 1;
    }
    if wakeups == 0 {
        println!("FAIL: the loop never executed wfi");
        return 1;
    }
    println!("idle: woke after timer");
    0
}
