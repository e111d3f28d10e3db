//! `hash-harts`: every hart does the same work on a buffer of its own — fill it from a xorshift generator,
//! hash it with FNV-1a, [`ROUNDS`] times — and hart 0 checks that every hart got the digest it got. Nothing is
//! shared but the start flag and the results, so harts on host threads of their own should finish in the time
//! one takes: the program behind the scaling figures. Prints `hash-harts: N harts, digest D: pass` (exit 0)
//! or `hash-harts: FAIL ...` (exit 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use rt::println;

/// Most harts that take part.
const MAX_HARTS: usize = 8;
/// 64-bit words in each hart's buffer (32 KiB: its own cache lines, far from the others').
const WORDS: usize = 4096;
/// Times each hart fills and hashes its buffer.
const ROUNDS: u64 = 3000;

rt::secondary_harts!(MAX_HARTS);

/// Holds the other harts until hart 0 has zeroed `.bss` and counted the harts.
static GATE: rt::harts::StartGate = rt::harts::StartGate::new();

static DONE: AtomicU64 = AtomicU64::new(0);
static DIGESTS: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];

/// Each hart's buffer, on its own pages.
#[repr(align(4096))]
struct Buffers([[u64; WORDS]; MAX_HARTS]);
static mut BUFFERS: Buffers = Buffers([[0; WORDS]; MAX_HARTS]);

fn work(buffer: &mut [u64; WORDS]) -> u64 {
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for round in 0..ROUNDS {
        let mut state = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for word in buffer.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *word = state;
        }
        for word in buffer.iter() {
            digest = (digest ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    digest
}

fn run(hart: usize) {
    // SAFETY: each hart takes only its own row of BUFFERS, once.
    let buffer = unsafe { &mut (*core::ptr::addr_of_mut!(BUFFERS)).0[hart] };
    DIGESTS[hart].store(work(buffer), Ordering::Relaxed);
    DONE.fetch_add(1, Ordering::Release);
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(hart: usize) {
    if GATE.wait(hart) {
        run(hart);
    }
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: usize, dtb: usize) -> u32 {
    let harts = rt::harts::count_cpus(dtb).clamp(1, MAX_HARTS) as u64;
    GATE.open(harts);
    run(0);
    while DONE.load(Ordering::Acquire) != harts {
        core::hint::spin_loop();
    }
    let digest = DIGESTS[0].load(Ordering::Relaxed);
    let differ = (1..harts as usize).filter(|&hart| DIGESTS[hart].load(Ordering::Relaxed) != digest).count();
    if differ != 0 {
        println!("hash-harts: FAIL: {differ} of {harts} harts got another digest than hart 0's {digest:#018x}");
        return 1;
    }
    println!("hash-harts: {harts} harts, digest {digest:#018x}: pass");
    0
}
