//! The `bench-branch` workload, shared by the full and small binaries: reads `mtime`, runs
//! [`bench_kernels::branch::run`] in M-mode, reads `mtime` again, and prints the per-kernel digests, the checksum
//! line and the elapsed ticks.
use bench_kernels::{branch, ChecksumLine};
use rt::println;

/// The CLINT's `mtime` (10 MHz on QEMU `virt`).
const MTIME: usize = 0x0200_bff8;

static mut SCRATCH: branch::Scratch = branch::Scratch::new();

fn mtime() -> u64 {
    // SAFETY: `mtime` is a device register at a fixed address of the `virt` memory map.
    unsafe { core::ptr::read_volatile(MTIME as *const u64) }
}

/// Runs the workload at `scale`, printing lines that start with `name`; returns the exit status.
pub fn run(name: &str, scale: u32) -> u32 {
    let start = mtime();
    // SAFETY: only hart 0 runs the program and this is the one reference ever made to SCRATCH.
    let scratch = unsafe { &mut *core::ptr::addr_of_mut!(SCRATCH) };
    let report = branch::run(scale, scratch);
    let elapsed = mtime().wrapping_sub(start);
    println!("{name}: {report}");
    println!("{}", ChecksumLine(name, report.checksum()));
    println!("{name}: {elapsed} mtime ticks");
    0
}
