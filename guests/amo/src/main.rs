//! `amo`: self-checking test of the A extension. Every AMO (`amoswap`, `amoadd`, `amoxor`, `amoand`, `amoor`,
//! `amomin`, `amomax`, `amominu`, `amomaxu`) in `.w` and `.d` form, each with no ordering bits, `.aq`, `.rl` and
//! `.aqrl`, on edge-case operand pairs, is checked against results computed in plain Rust (`rd` gets the old
//! value, sign-extended for `.w`; only the addressed bytes change). Then LR/SC: success, sign extension, SC
//! failure without a reservation and after an intervening SC, retry-loop counters, and the atomics Rust emits.
//! Prints one line per group and `amo: all N checks passed` (exit 0), or `amo: F of N checks failed` (exit 1).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use rt::println;

/// One AMO instruction `$insn rd, src, (addr)`; evaluates to `rd`.
macro_rules! amo {
    ($insn:expr, $addr:expr, $src:expr) => {{
        let rd: u64;
        // SAFETY: `addr` points to an aligned word of a live buffer of this test.
        unsafe {
            asm!(concat!($insn, " {rd}, {src}, ({addr})"), rd = lateout(reg) rd, src = in(reg) $src,
                addr = in(reg) $addr, options(nostack))
        };
        rd
    }};
}

/// A function running `$insn` with the ordering variant `ord` (0: none, 1: aq, 2: rl, 3: aqrl).
macro_rules! amo_fn {
    ($name:ident, $insn:literal) => {
        fn $name(ord: usize, addr: *mut u64, src: u64) -> u64 {
            match ord {
                0 => amo!($insn, addr, src),
                1 => amo!(concat!($insn, ".aq"), addr, src),
                2 => amo!(concat!($insn, ".rl"), addr, src),
                _ => amo!(concat!($insn, ".aqrl"), addr, src),
            }
        }
    };
}

amo_fn!(amoswap_w, "amoswap.w");
amo_fn!(amoadd_w, "amoadd.w");
amo_fn!(amoxor_w, "amoxor.w");
amo_fn!(amoand_w, "amoand.w");
amo_fn!(amoor_w, "amoor.w");
amo_fn!(amomin_w, "amomin.w");
amo_fn!(amomax_w, "amomax.w");
amo_fn!(amominu_w, "amominu.w");
amo_fn!(amomaxu_w, "amomaxu.w");
amo_fn!(amoswap_d, "amoswap.d");
amo_fn!(amoadd_d, "amoadd.d");
amo_fn!(amoxor_d, "amoxor.d");
amo_fn!(amoand_d, "amoand.d");
amo_fn!(amoor_d, "amoor.d");
amo_fn!(amomin_d, "amomin.d");
amo_fn!(amomax_d, "amomax.d");
amo_fn!(amominu_d, "amominu.d");
amo_fn!(amomaxu_d, "amomaxu.d");

type AmoFn = fn(usize, *mut u64, u64) -> u64;
/// The new memory value from the old one and `src` (for `.w`, only the low 32 bits of the result matter).
type ModelFn = fn(u64, u64) -> u64;

/// (mnemonic, is word-sized, instruction, model)
const AMOS: [(&str, bool, AmoFn, ModelFn); 18] = [
    ("amoswap.w", true, amoswap_w, |_, b| b),
    ("amoadd.w", true, amoadd_w, |a, b| a.wrapping_add(b)),
    ("amoxor.w", true, amoxor_w, |a, b| a ^ b),
    ("amoand.w", true, amoand_w, |a, b| a & b),
    ("amoor.w", true, amoor_w, |a, b| a | b),
    ("amomin.w", true, amomin_w, |a, b| (a as i32).min(b as i32) as u32 as u64),
    ("amomax.w", true, amomax_w, |a, b| (a as i32).max(b as i32) as u32 as u64),
    ("amominu.w", true, amominu_w, |a, b| (a as u32).min(b as u32) as u64),
    ("amomaxu.w", true, amomaxu_w, |a, b| (a as u32).max(b as u32) as u64),
    ("amoswap.d", false, amoswap_d, |_, b| b),
    ("amoadd.d", false, amoadd_d, |a, b| a.wrapping_add(b)),
    ("amoxor.d", false, amoxor_d, |a, b| a ^ b),
    ("amoand.d", false, amoand_d, |a, b| a & b),
    ("amoor.d", false, amoor_d, |a, b| a | b),
    ("amomin.d", false, amomin_d, |a, b| (a as i64).min(b as i64) as u64),
    ("amomax.d", false, amomax_d, |a, b| (a as i64).max(b as i64) as u64),
    ("amominu.d", false, amominu_d, |a, b| a.min(b)),
    ("amomaxu.d", false, amomaxu_d, |a, b| a.max(b)),
];

/// (old memory value, rs2) pairs: signed/unsigned order flips, 32-bit overflow, junk in the upper half.
const PAIRS: [(u64, u64); 8] = [
    (0, 0),
    (1, u64::MAX),
    (0x0000_0000_7fff_ffff, 1),
    (0x0000_0000_8000_0000, 0x0000_0000_7fff_ffff),
    (0x8000_0000_0000_0000, 0x7fff_ffff_ffff_ffff),
    (0xdead_beef_0000_0001, 0xffff_ffff_ffff_fffe),
    (0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321),
    (0xffff_ffff_0000_0000, 0x0000_0001_ffff_ffff),
];

const ORDERINGS: [&str; 4] = ["", ".aq", ".rl", ".aqrl"];

/// Guard pattern around the word under test.
const GUARD: u64 = 0xa5a5_5a5a_c3c3_3c3c;

#[repr(C, align(64))]
struct Cells([u64; 8]);

static mut CELLS: Cells = Cells([0; 8]);

/// Pointer to cell `i` of the test buffer.
fn cell(i: usize) -> *mut u64 {
    assert!(i < 8);
    // SAFETY: in bounds; the buffer is only accessed through raw pointers and assembly.
    unsafe { (core::ptr::addr_of_mut!(CELLS.0) as *mut u64).add(i) }
}

fn read(i: usize) -> u64 {
    // SAFETY: `cell` is in bounds and aligned.
    unsafe { cell(i).read_volatile() }
}

fn write(i: usize, value: u64) {
    // SAFETY: `cell` is in bounds and aligned.
    unsafe { cell(i).write_volatile(value) }
}

fn sext32(x: u64) -> u64 {
    x as u32 as i32 as i64 as u64
}

struct Tally {
    checks: u32,
    failed: u32,
}

impl Tally {
    /// Records one check; prints the details of a failure.
    fn check(&mut self, passed: bool, what: core::fmt::Arguments<'_>) -> bool {
        self.checks += 1;
        if !passed {
            self.failed += 1;
            println!("FAIL: {what}");
        }
        passed
    }

    /// Prints the `ok:` line of a group whose checks all passed.
    fn group(&self, failed_before: u32, name: &str) {
        if self.failed == failed_before {
            println!("ok: {name}");
        }
    }
}

fn check_amos(t: &mut Tally) {
    for (name, word, insn, model) in AMOS {
        let failed_before = t.failed;
        for (ord, suffix) in ORDERINGS.iter().enumerate() {
            for (old, src) in PAIRS {
                // Word AMOs run on both halves of cell 1; doubleword ones on cell 1. Cells 0 and 2 are guards.
                let offsets: &[usize] = if word { &[0, 4] } else { &[0] };
                for &offset in offsets {
                    write(0, GUARD);
                    write(2, !GUARD);
                    let (initial, expect_mem, expect_rd) = if word {
                        let shift = 8 * offset as u32;
                        let initial = GUARD.rotate_left(13) & !(0xffff_ffff << shift) | ((old & 0xffff_ffff) << shift);
                        let new = model(old, src) & 0xffff_ffff;
                        (initial, initial & !(0xffff_ffff << shift) | (new << shift), sext32(old))
                    } else {
                        (old, model(old, src), old)
                    };
                    write(1, initial);
                    let addr = (cell(1) as usize + offset) as *mut u64;
                    let rd = insn(ord, addr, src);
                    let mem = read(1);
                    t.check(
                        rd == expect_rd && mem == expect_mem && read(0) == GUARD && read(2) == !GUARD,
                        format_args!(
                            "{name}{suffix} at +{offset}: old {old:#x} src {src:#x}: rd {rd:#x} mem {mem:#x} \
                             (want rd {expect_rd:#x} mem {expect_mem:#x})"
                        ),
                    );
                }
            }
        }
        t.group(failed_before, name);
    }

    let failed_before = t.failed;
    write(1, 40);
    // SAFETY: cell 1 is an aligned doubleword of the test buffer.
    unsafe { asm!("amoadd.d zero, {src}, ({addr})", src = in(reg) 2u64, addr = in(reg) cell(1), options(nostack)) };
    let mem = read(1);
    t.check(mem == 42, format_args!("amoadd.d with rd = zero: mem {mem} (want 42)"));
    t.group(failed_before, "amoadd.d with rd = zero updates memory");
}

/// `lr{width}{lr_ord}` then `sc{width}{sc_ord}` of `new` at `addr`: (value loaded, sc result).
macro_rules! lr_sc {
    ($lr:literal, $sc:literal, $addr:expr, $new:expr) => {{
        let (loaded, result): (u64, u64);
        // SAFETY: `addr` points to an aligned cell of the test buffer.
        unsafe {
            asm!(concat!($lr, " {loaded}, ({addr})\n", $sc, " {result}, {new}, ({addr})"),
                loaded = out(reg) loaded, result = out(reg) result, new = in(reg) $new, addr = in(reg) $addr,
                options(nostack))
        };
        (loaded, result)
    }};
}

/// An LR then SC of a value at an address: (value loaded, sc result).
type LrScFn = fn(*mut u64, u64) -> (u64, u64);

fn check_lr_sc(t: &mut Tally) {
    // Successful pairs in every ordering combination.
    let failed_before = t.failed;
    let pairs: [(&str, bool, LrScFn); 8] = [
        ("lr.w/sc.w", true, |a, v| lr_sc!("lr.w", "sc.w", a, v)),
        ("lr.w.aq/sc.w.rl", true, |a, v| lr_sc!("lr.w.aq", "sc.w.rl", a, v)),
        ("lr.w.rl/sc.w.aq", true, |a, v| lr_sc!("lr.w.rl", "sc.w.aq", a, v)),
        ("lr.w.aqrl/sc.w.aqrl", true, |a, v| lr_sc!("lr.w.aqrl", "sc.w.aqrl", a, v)),
        ("lr.d/sc.d", false, |a, v| lr_sc!("lr.d", "sc.d", a, v)),
        ("lr.d.aq/sc.d.rl", false, |a, v| lr_sc!("lr.d.aq", "sc.d.rl", a, v)),
        ("lr.d.rl/sc.d.aq", false, |a, v| lr_sc!("lr.d.rl", "sc.d.aq", a, v)),
        ("lr.d.aqrl/sc.d.aqrl", false, |a, v| lr_sc!("lr.d.aqrl", "sc.d.aqrl", a, v)),
    ];
    for (name, word, pair) in pairs {
        let initial = 0x1357_9bdf_8000_0001u64;
        let new = 0x2468_ace0_fdb9_7531u64;
        write(1, initial);
        let (loaded, result) = pair(cell(1), new);
        let mem = read(1);
        let (want_loaded, want_mem) =
            if word { (sext32(initial), (initial & !0xffff_ffff) | (new & 0xffff_ffff)) } else { (initial, new) };
        t.check(
            loaded == want_loaded && result == 0 && mem == want_mem,
            format_args!(
                "{name}: loaded {loaded:#x} sc {result} mem {mem:#x} (want {want_loaded:#x}, 0, {want_mem:#x})"
            ),
        );
    }
    t.group(failed_before, "lr/sc succeed (sc returns 0, memory updated, lr.w sign-extends, sc.w writes 32 bits)");

    // An SC with no reservation: any SC clears the reservation, so one to a scratch cell first.
    let failed_before = t.failed;
    for (name, double) in [("sc.w", false), ("sc.d", true)] {
        write(1, 0x1111_2222_3333_4444);
        write(3, 0);
        let result: u64;
        // SAFETY: cells 1 and 3 are aligned cells of the test buffer.
        unsafe {
            if double {
                asm!("sc.d {r}, zero, ({scratch})", "sc.d {r}, {v}, ({a})", r = out(reg) result,
                    v = in(reg) 0x5555u64, a = in(reg) cell(1), scratch = in(reg) cell(3), options(nostack));
            } else {
                asm!("sc.w {r}, zero, ({scratch})", "sc.w {r}, {v}, ({a})", r = out(reg) result,
                    v = in(reg) 0x5555u64, a = in(reg) cell(1), scratch = in(reg) cell(3), options(nostack));
            }
        }
        let mem = read(1);
        t.check(
            result != 0 && mem == 0x1111_2222_3333_4444,
            format_args!("{name} without a reservation: sc {result} mem {mem:#x} (want nonzero, unchanged)"),
        );
    }
    t.group(failed_before, "sc without a reservation fails, memory unchanged");

    // LR, a successful SC, then a second SC to the same address: the reservation is gone.
    let failed_before = t.failed;
    for (name, double) in [("sc.w", false), ("sc.d", true)] {
        write(1, 7);
        let (first, second): (u64, u64);
        // SAFETY: cell 1 is an aligned cell of the test buffer.
        unsafe {
            if double {
                asm!("lr.d {t}, ({a})", "sc.d {r1}, {v1}, ({a})", "sc.d {r2}, {v2}, ({a})", t = out(reg) _,
                    r1 = out(reg) first, r2 = out(reg) second, v1 = in(reg) 8u64, v2 = in(reg) 9u64,
                    a = in(reg) cell(1), options(nostack));
            } else {
                asm!("lr.w {t}, ({a})", "sc.w {r1}, {v1}, ({a})", "sc.w {r2}, {v2}, ({a})", t = out(reg) _,
                    r1 = out(reg) first, r2 = out(reg) second, v1 = in(reg) 8u64, v2 = in(reg) 9u64,
                    a = in(reg) cell(1), options(nostack));
            }
        }
        let mem = read(1);
        t.check(
            first == 0 && second != 0 && mem == 8,
            format_args!(
                "{name} after an intervening sc: first {first} second {second} mem {mem} (want 0, nonzero, 8)"
            ),
        );
    }
    t.group(failed_before, "sc after an intervening sc to the same address fails");

    // Atomic counters: LR/SC retry loops and amoadd.
    let failed_before = t.failed;
    const N: u64 = 1000;
    write(1, 0);
    write(2, 0xffff_ffff_0000_0000);
    for _ in 0..N {
        // SAFETY: cells 1 and 2 are aligned cells of the test buffer.
        unsafe {
            asm!("1:", "lr.d {t}, ({a})", "addi {t}, {t}, 1", "sc.d {r}, {t}, ({a})", "bnez {r}, 1b",
                t = out(reg) _, r = out(reg) _, a = in(reg) cell(1), options(nostack));
            asm!("1:", "lr.w.aq {t}, ({a})", "addiw {t}, {t}, 3", "sc.w.rl {r}, {t}, ({a})", "bnez {r}, 1b",
                t = out(reg) _, r = out(reg) _, a = in(reg) cell(2), options(nostack));
        }
    }
    let (count, count_w) = (read(1), read(2));
    t.check(count == N, format_args!("lr.d/sc.d counter: {count} (want {N})"));
    t.check(
        count_w == 0xffff_ffff_0000_0000 | (3 * N),
        format_args!("lr.w/sc.w counter: {count_w:#x} (want {:#x})", 0xffff_ffff_0000_0000 | (3 * N)),
    );
    write(3, 0);
    for i in 0..N {
        amoadd_d(3, cell(3), i);
    }
    let sum = read(3);
    t.check(sum == N * (N - 1) / 2, format_args!("amoadd.d.aqrl counter: {sum} (want {})", N * (N - 1) / 2));
    t.group(failed_before, "atomic counters with lr/sc retry loops and amoadd");
}

fn check_rust_atomics(t: &mut Tally) {
    let failed_before = t.failed;
    static A32: AtomicU32 = AtomicU32::new(5);
    static A64: AtomicU64 = AtomicU64::new(u64::MAX);
    static BYTES: [AtomicU8; 4] = [AtomicU8::new(1), AtomicU8::new(2), AtomicU8::new(3), AtomicU8::new(4)];

    let old = A32.fetch_add(10, Ordering::SeqCst);
    t.check(old == 5 && A32.load(Ordering::SeqCst) == 15, format_args!("AtomicU32::fetch_add"));
    let failed = A32.compare_exchange(14, 0, Ordering::AcqRel, Ordering::Acquire);
    let swapped = A32.compare_exchange(15, 99, Ordering::AcqRel, Ordering::Acquire);
    t.check(
        failed == Err(15) && swapped == Ok(15) && A32.load(Ordering::Relaxed) == 99,
        format_args!("AtomicU32::compare_exchange: {failed:?} {swapped:?}"),
    );
    let old = A64.fetch_max(3, Ordering::SeqCst);
    let old2 = A64.fetch_sub(1, Ordering::SeqCst);
    t.check(
        old == u64::MAX && old2 == u64::MAX && A64.load(Ordering::SeqCst) == u64::MAX - 1,
        format_args!("AtomicU64::fetch_max / fetch_sub"),
    );
    // Sub-word atomics are LR/SC loops on the containing word; neighbours must not change.
    let old = BYTES[1].fetch_add(0xff, Ordering::SeqCst);
    let old3 = BYTES[2].swap(0x80, Ordering::SeqCst);
    let values: [u8; 4] = core::array::from_fn(|i| BYTES[i].load(Ordering::SeqCst));
    t.check(old == 2 && old3 == 3 && values == [1, 1, 0x80, 4], format_args!("AtomicU8 fetch_add/swap: {values:?}"));
    t.group(failed_before, "Rust core::sync::atomic operations");
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    let mut t = Tally { checks: 0, failed: 0 };
    check_amos(&mut t);
    check_lr_sc(&mut t);
    check_rust_atomics(&mut t);
    rt::checks::summary("amo", t.checks, t.failed)
}
