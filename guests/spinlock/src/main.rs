//! `spinlock`: a lock-heavy multi-hart guest. Every hart the devicetree lists (its `cpu@` nodes, up to
//! [`MAX_HARTS`]) takes one shared spinlock [`ROUNDS`] times in each of two phases, as a kernel does around a
//! short critical section: machine interrupts off (`csrc mstatus`), acquire (`amoswap.w.aq`, then waiting on
//! plain loads), a non-atomic increment of a shared counter with a CSR write (`mscratch`) in between, release,
//! interrupts back on. So a lock holder leaves to the VMM three times per round. In the first phase waiters spin
//! with the Zihintpause `pause` hint in their loop (as Linux's `cpu_relax` does), in the second without it.
//!
//! Hart 0 waits for every hart to finish, checks the counter (2 x harts x [`ROUNDS`]; a lost update means the
//! lock let two harts in) and prints the instructions each hart retired (`minstret`), so a host can see how
//! much went into waiting: `spinlock: N harts, C acquisitions, counter C, instructions I` then
//! `spinlock: pass` (exit 0) or `spinlock: FAIL ...` (exit 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::{csr_clear, csr_read, csr_set, csr_write, println};

/// Acquisitions per hart and phase.
const ROUNDS: u64 = 10_000;
/// Most harts that take part (the QEMU `virt` machine has up to 8).
const MAX_HARTS: usize = 8;
/// `mstatus.MIE`.
const MSTATUS_MIE: u64 = 1 << 3;

/// Hart 0 has zeroed `.bss` and counted the harts: the others may start. A nonzero initial value keeps this
/// in `.data`, which the other harts may read before `.bss` is zeroed.
static GO: AtomicU32 = AtomicU32::new(WAIT);
const WAIT: u32 = 0x5741_4954;
const READY: u32 = 0x5245_4459;

/// How many harts take part (set by hart 0 before [`GO`]).
static HARTS: AtomicU64 = AtomicU64::new(0);
/// The spinlock: 0 free, 1 held.
static LOCK: AtomicU32 = AtomicU32::new(0);
/// Incremented under the lock by a plain load and store (atomic types only to keep Rust's rules).
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Harts that have finished both phases.
static DONE: AtomicU64 = AtomicU64::new(0);
/// `minstret` of each hart when it finished.
static INSTRET: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];

// Harts other than 0 come to `secondary_main` with a stack of their own (hart 0 zeroes `.bss` while they may
// already run).
rt::secondary_harts!(MAX_HARTS);

/// Zihintpause `pause` (`fence w, 0`), spelled as an instruction word so any assembler takes it.
fn pause() {
    // SAFETY: a FENCE hint: no architectural effect.
    unsafe { core::arch::asm!(".insn i 0x0f, 0, x0, x0, 0x010", options(nomem, nostack)) };
}

/// One round: interrupts off, lock, increment, unlock, interrupts on.
fn round(with_pause: bool) {
    csr_clear!("mstatus", MSTATUS_MIE);
    while LOCK.swap(1, Ordering::Acquire) != 0 {
        while LOCK.load(Ordering::Relaxed) != 0 {
            if with_pause {
                pause();
            }
        }
    }
    let value = COUNTER.load(Ordering::Relaxed);
    csr_write!("mscratch", value);
    COUNTER.store(value + 1, Ordering::Relaxed);
    LOCK.store(0, Ordering::Release);
    csr_set!("mstatus", MSTATUS_MIE);
}

/// Both phases, then this hart's `minstret` and its arrival in [`DONE`].
fn work(hart: usize) {
    for with_pause in [true, false] {
        for _ in 0..ROUNDS {
            round(with_pause);
        }
    }
    if let Some(slot) = INSTRET.get(hart) {
        slot.store(csr_read!("minstret"), Ordering::Relaxed);
    }
    DONE.fetch_add(1, Ordering::Release);
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(hart: usize) {
    while GO.load(Ordering::Acquire) != READY {
        pause();
    }
    if (hart as u64) < HARTS.load(Ordering::Relaxed) {
        work(hart);
    }
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: usize, dtb: usize) -> u32 {
    let harts = rt::harts::count_cpus(dtb).clamp(1, MAX_HARTS);
    HARTS.store(harts as u64, Ordering::Relaxed);
    GO.store(READY, Ordering::Release);
    work(0);
    while DONE.load(Ordering::Acquire) != harts as u64 {
        pause();
    }
    let counter = COUNTER.load(Ordering::Relaxed);
    let expected = 2 * ROUNDS * harts as u64;
    let instructions: u64 = INSTRET.iter().take(harts).map(|slot| slot.load(Ordering::Relaxed)).sum();
    println!("spinlock: {harts} harts, {expected} acquisitions, counter {counter}, instructions {instructions}");
    if counter == expected {
        println!("spinlock: pass");
        0
    } else {
        println!("spinlock: FAIL: the counter lost {} updates", expected.saturating_sub(counter));
        1
    }
}
