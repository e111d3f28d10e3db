//! `litmus`: memory-model litmus tests on several harts, each repeated many times, counting every outcome and
//! failing on one that RVWMO (the RISC-V weak memory model) forbids:
//!
//! - **MP** (message passing), harts 0 and 1: hart 0 writes `DATA = 1`, `fence rw,w`, `FLAG = 1`; hart 1 reads
//!   `FLAG`, `fence r,rw`, reads `DATA`. Forbidden: `FLAG` 1 and `DATA` 0.
//! - **SB** (store buffering with full fences), harts 0 and 1: each writes its own variable, `fence rw,rw`,
//!   reads the other's. Forbidden: both read 0.
//! - **Counters**, every hart: [`INCREMENTS`] increments of one shared counter with an `lr.d`/`sc.d` loop and of
//!   another with `amoadd.d`. Forbidden: a total other than harts x [`INCREMENTS`] (a lost update).
//!
//! The harts meet at a barrier around every round, so the two sides of a test start close together. Prints
//! each test's outcome counts, then `litmus: pass` (exit 0) or `litmus: FAIL ...` (exit 1). Needs at least two
//! harts for MP and SB (with one it says so and fails).
#![no_std]
#![no_main]

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use rt::println;

/// Rounds of MP and of SB.
const ROUNDS: u64 = 2_000;
/// Increments per hart of each shared counter.
const INCREMENTS: u64 = 5_000;
/// Most harts that take part.
const MAX_HARTS: usize = 8;

rt::secondary_harts!(MAX_HARTS);

/// Holds the other harts until hart 0 has zeroed `.bss` and counted the harts.
static GATE: rt::harts::StartGate = rt::harts::StartGate::new();

/// The sense-reversing barrier: harts arrived in this episode, and the episode's sense.
static ARRIVED: AtomicU64 = AtomicU64::new(0);
static SENSE: AtomicU32 = AtomicU32::new(0);

static DATA: AtomicU64 = AtomicU64::new(0);
static FLAG: AtomicU64 = AtomicU64::new(0);
static X: AtomicU64 = AtomicU64::new(0);
static Y: AtomicU64 = AtomicU64::new(0);
/// What hart 0 read in the current SB round (hart 1 records the pair).
static SB_HART0: AtomicU64 = AtomicU64::new(0);
static LRSC_COUNTER: AtomicU64 = AtomicU64::new(0);
static AMO_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Outcome counts, indexed by the two values read (`2 * first + second`): MP's (FLAG, DATA), SB's (hart 0's
/// read of Y, hart 1's read of X). Written by hart 1 only.
static MP_SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static SB_SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Waits until every taking-part hart has arrived; `sense` is this hart's, flipped each time.
fn barrier(sense: &mut u32) {
    *sense ^= 1;
    let harts = GATE.harts();
    if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == harts {
        ARRIVED.store(0, Ordering::Relaxed);
        SENSE.store(*sense, Ordering::Release);
    } else {
        while SENSE.load(Ordering::Acquire) != *sense {
            core::hint::spin_loop();
        }
    }
}

/// A few hundred cycles of nothing, different per round, so the two sides of a test start at varied offsets.
fn stagger(round: u64, hart: usize) {
    for _ in 0..(round.wrapping_mul(7).wrapping_add(hart as u64 * 3) % 23) {
        core::hint::spin_loop();
    }
}

/// Adds 1 to `counter` with a load-reserved/store-conditional loop.
fn lrsc_increment(counter: &AtomicU64) {
    // SAFETY: `counter` is a live, aligned 8-byte atomic; the loop only reads and conditionally writes it.
    unsafe {
        core::arch::asm!(
            "1:",
            "lr.d {value}, ({address})",
            "addi {value}, {value}, 1",
            "sc.d {failed}, {value}, ({address})",
            "bnez {failed}, 1b",
            address = in(reg) counter.as_ptr(),
            value = out(reg) _,
            failed = out(reg) _,
            options(nostack),
        );
    }
}

fn run(hart: usize) {
    let mut sense = 0;
    let pair = GATE.harts() >= 2;
    if pair {
        for round in 0..ROUNDS {
            if hart == 0 {
                DATA.store(0, Ordering::Relaxed);
                FLAG.store(0, Ordering::Relaxed);
                X.store(0, Ordering::Relaxed);
                Y.store(0, Ordering::Relaxed);
            }
            barrier(&mut sense);
            stagger(round, hart);
            match hart {
                0 => {
                    DATA.store(1, Ordering::Relaxed);
                    fence(Ordering::Release);
                    FLAG.store(1, Ordering::Relaxed);
                }
                1 => {
                    let flag = FLAG.load(Ordering::Relaxed);
                    fence(Ordering::Acquire);
                    let data = DATA.load(Ordering::Relaxed);
                    MP_SEEN[(2 * flag + data) as usize & 3].fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            barrier(&mut sense);
            stagger(round, 1 - hart.min(1));
            match hart {
                0 => {
                    X.store(1, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                    SB_HART0.store(Y.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                1 => {
                    Y.store(1, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                    let seen_x = X.load(Ordering::Relaxed);
                    // Hart 0's read is known after the next barrier: recorded there.
                    barrier(&mut sense);
                    let seen_y = SB_HART0.load(Ordering::Relaxed);
                    SB_SEEN[(2 * seen_y + seen_x) as usize & 3].fetch_add(1, Ordering::Relaxed);
                    barrier(&mut sense);
                    continue;
                }
                _ => {}
            }
            barrier(&mut sense);
            barrier(&mut sense);
        }
    }
    for _ in 0..INCREMENTS {
        lrsc_increment(&LRSC_COUNTER);
        AMO_COUNTER.fetch_add(1, Ordering::Relaxed);
    }
    barrier(&mut sense);
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(hart: usize) {
    if GATE.wait(hart) {
        run(hart);
    }
}

fn counts(seen: &[AtomicU64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|index| seen[index].load(Ordering::Relaxed))
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: usize, dtb: usize) -> u32 {
    let harts = rt::harts::count_cpus(dtb).clamp(1, MAX_HARTS) as u64;
    GATE.open(harts);
    run(0);
    let mut failures = 0;
    if harts < 2 {
        println!("litmus: FAIL: MP and SB need two harts, the machine has one");
        failures += 1;
    } else {
        let [mp00, mp01, mp10, mp11] = counts(&MP_SEEN);
        println!(
            "litmus: MP {ROUNDS} rounds: flag,data 0,0: {mp00}  0,1: {mp01}  1,1: {mp11}  1,0 (forbidden): {mp10}"
        );
        let [sb00, sb01, sb10, sb11] = counts(&SB_SEEN);
        println!("litmus: SB {ROUNDS} rounds: y,x 0,1: {sb01}  1,0: {sb10}  1,1: {sb11}  0,0 (forbidden): {sb00}");
        if mp10 != 0 || mp00 + mp01 + mp11 != ROUNDS {
            println!("litmus: FAIL: MP");
            failures += 1;
        }
        if sb00 != 0 || sb01 + sb10 + sb11 != ROUNDS {
            println!("litmus: FAIL: SB");
            failures += 1;
        }
    }
    let expected = harts * INCREMENTS;
    let (lrsc, amo) = (LRSC_COUNTER.load(Ordering::Relaxed), AMO_COUNTER.load(Ordering::Relaxed));
    println!("litmus: counters on {harts} harts: lr/sc {lrsc}, amoadd {amo}, expected {expected} each");
    if lrsc != expected || amo != expected {
        println!("litmus: FAIL: a lost update");
        failures += 1;
    }
    if failures == 0 {
        println!("litmus: pass");
    }
    u32::from(failures != 0)
}
