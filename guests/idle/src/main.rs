//! `idle`: arms the CLINT timer about 1.5 s ahead (`mtime` counts at 10 MHz) and waits for it in a `wfi` loop
//! with `mie.MTIE` set and `mstatus.MIE` clear, so `wfi` wakes on the pending interrupt without trapping. Prints
//! `idle: woke after timer` and exits 0 (or `FAIL: ...` and exits 1). The host test checks that the VMM slept
//! rather than spun while the guest waited.
#![no_std]
#![no_main]

use rt::clint::{mtime, set_mtimecmp};
use rt::{csr_clear, csr_read, csr_set, println};

/// `mip.MTIP` / `mie.MTIE`.
const MTI: u64 = 1 << 7;
/// `mstatus.MIE`.
const MSTATUS_MIE: u64 = 1 << 3;
/// 1.5 s of `mtime` ticks at 10 MHz.
const WAIT_TICKS: u64 = 15_000_000;

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
