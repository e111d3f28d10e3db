//! The `bench-outside` workload, shared by the full and small binaries: integer kernels whose code comes from
//! outside this project, run on deterministic pseudo-random input (see `outside-kernels` for the details):
//!
//! - SHA-256 and SHA-512: the `sha2` crate (RustCrypto), portable software rounds;
//! - BLAKE3: the `blake3` crate (the BLAKE3 authors'), its portable Rust code;
//! - CRC-32: the `crc32fast` crate, table-driven;
//! - deflate and inflate round trip: the `miniz_oxide` crate (the Rust port of miniz, behind `flate2`);
//! - LZ4 block compression and decompression round trip: the `lz4_flex` crate, safe code;
//! - `sort_unstable` and the stable `sort_by_key`: the Rust project's `core` and `alloc`.
//!
//! It gives the workload a heap (`linked_list_allocator` over a static array) and a stack of its own (the
//! runtime's 64 KiB are too few: the workload reaches about 92 KiB deep, `miniz_oxide` building parts of its
//! compressor's state on the stack before it boxes them), reads `mtime`, runs [`outside_kernels::run`] in M-mode,
//! reads `mtime` again, and prints the per-kernel digests, the checksum line and the elapsed ticks, as the other
//! `bench-*` guests do.
use core::ffi::c_void;

use bench_kernels::{ChecksumLine, Report};
use linked_list_allocator::LockedHeap;
use rt::println;

/// The CLINT's `mtime` (10 MHz on QEMU `virt`).
const MTIME: usize = 0x0200_bff8;

/// Bytes of the heap: the deflate compressor's state and the round's buffers need between 256 and 512 KiB.
const HEAP_SIZE: usize = 2 << 20;

/// Memory for the heap or the stack (16-byte aligned, as the stack pointer must be).
#[repr(align(16))]
struct Memory<const N: usize>([u8; N]);

static mut HEAP_MEMORY: Memory<HEAP_SIZE> = Memory([0; HEAP_SIZE]);

/// Bytes of the stack the workload runs on (about 92 KiB used).
const STACK_SIZE: usize = 256 << 10;

static mut STACK: Memory<STACK_SIZE> = Memory([0; STACK_SIZE]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

fn mtime() -> u64 {
    // SAFETY: `mtime` is a device register at a fixed address of the `virt` memory map.
    unsafe { core::ptr::read_volatile(MTIME as *const u64) }
}

/// Runs the workload at `scale`, printing lines that start with `name`; returns the exit status.
pub fn run(name: &str, scale: u32) -> u32 {
    // SAFETY: only hart 0 runs the program, this is the one reference ever made to HEAP_MEMORY, and the heap is
    // initialised once, before anything allocates.
    unsafe {
        let memory = &mut *core::ptr::addr_of_mut!(HEAP_MEMORY);
        HEAP.lock().init(memory.0.as_mut_ptr(), HEAP_SIZE);
    }
    let mut job = Job { scale, report: None };
    // SAFETY: STACK is used by nothing else, and `run_job` returns on the stack it was called on.
    unsafe {
        let top = core::ptr::addr_of_mut!(STACK).cast::<u8>().add(STACK_SIZE);
        run_on_stack((&raw mut job).cast(), run_job, top);
    }
    let (report, elapsed) = job.report.expect("the job ran");
    println!("{name}: {report}");
    println!("{}", ChecksumLine(name, report.checksum()));
    println!("{name}: {elapsed} mtime ticks");
    0
}

/// The workload's scale, and what it computed with the ticks it took.
struct Job {
    scale: u32,
    report: Option<(Report<7>, u64)>,
}

/// Runs the timed workload of `job` (called on the workload's stack by [`run_on_stack`]).
extern "C" fn run_job(job: *mut c_void) {
    // SAFETY: `run` passes its `Job`, which lives until `run_on_stack` returns.
    let job = unsafe { &mut *job.cast::<Job>() };
    let start = mtime();
    let report = outside_kernels::run(job.scale);
    let elapsed = mtime().wrapping_sub(start);
    job.report = Some((report, elapsed));
}

unsafe extern "C" {
    /// Calls `function(job)` with the stack pointer at `top`, then returns on the caller's stack.
    fn run_on_stack(job: *mut c_void, function: extern "C" fn(*mut c_void), top: *mut u8);
}

core::arch::global_asm!(
    r#"
    .section .text.run_on_stack, "ax", @progbits
    .globl run_on_stack
    .type run_on_stack, @function
run_on_stack:
    addi sp, sp, -16
    sd ra, 8(sp)
    sd s0, 0(sp)
    mv s0, sp
    mv sp, a2
    jalr a1
    mv sp, s0
    ld s0, 0(sp)
    ld ra, 8(sp)
    addi sp, sp, 16
    ret
    .size run_on_stack, . - run_on_stack
"#
);
