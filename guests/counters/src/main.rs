//! `counters`: the guest of the patching scanner (issue 10). On a VMM that delegates the counters (lets U-mode
//! read `cycle`, `time` and `instret` natively), counter reads are *critical* instructions the VMM must find and
//! patch before they run; this guest checks that nothing it can observe, except timing, shows it:
//! * `time`, `cycle` and `instret` read in M-mode are monotonic, `time` never jumps (the VM's time stops while
//!   it is descheduled), and `instret` counts plausibly across a loop of known length;
//! * in S- and U-mode, the reads obey the virtual `mcounteren` and `scounteren` (illegal instruction when their
//!   bit is clear, the VM's values when set);
//! * it reads back its own code holding an `rdtime` and sees the original word, not a patch;
//! * an `rdtime` straddling a page end in compressed code reads `time` and reads back as written;
//! * it rewrites an instruction on a page it has run (self-modifying code, then `fence.i`) and runs the new one,
//!   then runs the page's `rdtime` again (the page is scanned anew).
//!
//! It prints one `ok:`/`FAIL:` line per check and `counters: all N checks passed`, and exits 0 when all passed.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use rt::checks::{check, finish};
use rt::lower::{enter_lower, lower_return};
use rt::trap::{self, TrapFrame};
use rt::{addr, csr_write, println};

// A page of its own (main's code may follow it in the same page): functions holding critical instructions, and
// one the guest rewrites. Uncompressed, so the words are known: `rdtime a0` is `csrrs a0, time, x0` = 0xc0102573,
// `li a0, 1` is `addi a0, x0, 1` = 0x00100513. The S/U snippets read one counter into a0 and `ecall` back to M-mode (the handler returns to `lower_return`).
core::arch::global_asm!(
    r#"
    .section .text.counters_page, "ax", @progbits
    .option push
    .option norvc
    .balign 4096
    /* Not a critical instruction at the page's first parcel: a scan entering elsewhere cannot guard one there
       (it might be the second half of an instruction straddling in from the page before). */
    ret
    .globl counters_read_time, counters_value, counters_lower_time, counters_lower_cycle, counters_lower_instret
counters_read_time:
    rdtime a0
    ret
counters_value:
    addi a0, x0, 1
    ret
counters_lower_time:
    rdtime a0
    ecall
counters_lower_cycle:
    rdcycle a0
    ecall
counters_lower_instret:
    rdinstret a0
    ecall
    .option pop
"#
);

// Compressed code with an `rdtime` straddling a page end: `c.nop`, `c.nop` at 0xffa and 0xffc of a page, the
// 32-bit `rdtime a0` at 0xffe (its high half, 0xc010, in the next page), then a compressed `ret` at 0x002 of the
// next page. The scanner must decode it whole (with the next page's first parcel) and patch its low half.
core::arch::global_asm!(
    r#"
    .section .text.counters_straddle, "ax", @progbits
    .option push
    .option rvc
    .balign 4096
    .skip 4090
    .globl counters_straddle_time
counters_straddle_time:
    c.nop
    c.nop
    rdtime a0
    c.jr ra
    .option pop
"#
);

extern "C" {
    fn counters_straddle_time() -> u64;
    fn counters_read_time() -> u64;
    fn counters_value() -> u64;
    fn counters_lower_time();
    fn counters_lower_cycle();
    fn counters_lower_instret();
}

const RDTIME_A0: u32 = 0xc010_2573;
const LI_A0_1: u32 = 0x0010_0513;
const LI_A0_2: u32 = 0x0020_0513;
/// What a snippet returns when its read trapped (illegal instruction).
const TRAPPED: u64 = 0xdead_0002;
/// The longest step `time` may take between two reads a few microseconds apart: 100 ms at 10 MHz, more than the
/// host may stall QEMU on a loaded machine (a 27 ms stall was seen on two busy cores). The native board pauses
/// this VM for 200 ms in the middle of its reads (after 5000 of them) and deschedules it for other VMs' 1 ms
/// turns: a `time` that were not virtual would jump further.
const MAX_TIME_STEP: u64 = 1_000_000;

static EXPECT_LOWER: AtomicBool = AtomicBool::new(false);

fn handler(frame: &mut TrapFrame) {
    if !EXPECT_LOWER.load(SeqCst) || frame.is_interrupt() || frame.previous_privilege() == 3 {
        println!("FAIL: unexpected trap: mcause={:#x} mepc={:#x} mtval={:#x}", frame.mcause, frame.mepc, frame.mtval);
        rt::exit(102);
    }
    match frame.code() {
        trap::ECALL_FROM_U | trap::ECALL_FROM_S => {}
        trap::ILLEGAL_INSTRUCTION => frame.regs[10] = TRAPPED,
        _ => {
            println!("FAIL: trap in a lower mode: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
            rt::exit(103);
        }
    }
    frame.set_previous_privilege(3);
    frame.set_return_pc(addr(lower_return));
}

/// Runs a snippet in `mode` (1 = S, 0 = U) and returns its a0.
fn lower(snippet: unsafe extern "C" fn(), mode: u64) -> u64 {
    EXPECT_LOWER.store(true, SeqCst);
    // SAFETY: the snippets use only a0 and come back through the handler to `lower_return`.
    let value = unsafe { enter_lower(addr(snippet), mode, 0, 0) };
    EXPECT_LOWER.store(false, SeqCst);
    value
}

fn time() -> u64 {
    let value: u64;
    // SAFETY: reading a counter has no effect.
    unsafe { core::arch::asm!("rdtime {0}", out(reg) value, options(nostack)) };
    value
}

fn cycle() -> u64 {
    let value: u64;
    // SAFETY: reading a counter has no effect.
    unsafe { core::arch::asm!("rdcycle {0}", out(reg) value, options(nostack)) };
    value
}

fn instret() -> u64 {
    let value: u64;
    // SAFETY: reading a counter has no effect.
    unsafe { core::arch::asm!("rdinstret {0}", out(reg) value, options(nostack)) };
    value
}

/// The instruction word at `f`'s address, read as data.
fn code_word(f: u64) -> u32 {
    // SAFETY: `f` is the address of one of this program's functions, 4-byte aligned, in its own RAM.
    unsafe { core::ptr::read_volatile(f as *const u32) }
}

fn monotonic_reads() {
    let reads = 20_000;
    let (mut backwards, mut max_step) = (0u32, 0u64);
    let mut last = time();
    let first = last;
    for _ in 0..reads {
        let now = time();
        if now < last {
            backwards += 1;
        }
        max_step = max_step.max(now.wrapping_sub(last));
        last = now;
    }
    println!("time: largest step {max_step} ticks over {reads} reads");
    check("time never goes backwards", backwards == 0, format_args!("{backwards} of {reads} reads"));
    check("time advances", last > first, format_args!("{first} then {last}"));
    check(
        "time never jumps",
        max_step <= MAX_TIME_STEP,
        format_args!("a step of {max_step} ticks between two reads (limit {MAX_TIME_STEP})"),
    );
    for (name, read) in [("cycle", cycle as fn() -> u64), ("instret", instret)] {
        let mut backwards = 0u32;
        let mut last = read();
        for _ in 0..5_000 {
            let now = read();
            if now < last {
                backwards += 1;
            }
            last = now;
        }
        check(format_args!("{name} never goes backwards"), backwards == 0, format_args!("{backwards} times"));
    }
    // A loop of 2 * ITERATIONS instructions: instret counts about that many (the native board counts host
    // ticks, which is monotonic but not exact: between an eighth and a thousand times).
    const ITERATIONS: u64 = 100_000;
    let before = instret();
    // SAFETY: a register-only countdown loop.
    unsafe {
        core::arch::asm!("1: addi {n}, {n}, -1", "bnez {n}, 1b", n = inout(reg) ITERATIONS => _, options(nostack))
    };
    let retired = instret().wrapping_sub(before);
    check(
        "instret counts a loop plausibly",
        (2 * ITERATIONS / 8..=2 * ITERATIONS * 1000).contains(&retired),
        format_args!("{retired} for {} instructions", 2 * ITERATIONS),
    );
}

fn lower_modes() {
    csr_write!("pmpaddr0", u64::MAX);
    csr_write!("pmpcfg0", 0x1f);
    csr_write!("mcounteren", 0);
    csr_write!("scounteren", 0);
    let snippets = [
        ("time", counters_lower_time as unsafe extern "C" fn()),
        ("cycle", counters_lower_cycle),
        ("instret", counters_lower_instret),
    ];
    for (name, snippet) in snippets {
        let value = lower(snippet, 1);
        check(format_args!("S-mode {name} traps with mcounteren clear"), value == TRAPPED, format_args!("{value:#x}"));
    }
    csr_write!("mcounteren", 7);
    let before = time();
    let value = lower(counters_lower_time, 1);
    let after = time();
    check(
        "S-mode time with mcounteren set",
        value >= before && value <= after,
        format_args!("{value} outside {before}..{after}"),
    );
    let value = lower(counters_lower_time, 0);
    check("U-mode time traps with scounteren clear", value == TRAPPED, format_args!("{value:#x}"));
    csr_write!("scounteren", 7);
    let before = time();
    let value = lower(counters_lower_time, 0);
    let after = time();
    check(
        "U-mode time with scounteren set",
        value >= before && value <= after,
        format_args!("{value} outside {before}..{after}"),
    );
    for (name, snippet, read) in [
        ("cycle", counters_lower_cycle as unsafe extern "C" fn(), cycle as fn() -> u64),
        ("instret", counters_lower_instret, instret),
    ] {
        let before = read();
        let value = lower(snippet, 0);
        let after = read();
        check(
            format_args!("U-mode {name} between two M-mode reads"),
            value >= before && value <= after,
            format_args!("{value} outside {before}..{after}"),
        );
    }
}

fn own_code() {
    let read_time = counters_read_time as *const () as u64;
    let value = counters_value as *const () as u64;
    // Run the page first: it is scanned and its rdtime patched on a VMM that delegates the counters.
    // SAFETY: plain functions of this program.
    let (t0, v0) = unsafe { (counters_read_time(), counters_value()) };
    check("the code page runs", t0 <= time() && v0 == 1, format_args!("time {t0}, value {v0}"));
    let word = code_word(read_time);
    check("reading own code sees the original rdtime", word == RDTIME_A0, format_args!("{word:#010x}"));
    check(
        "reading own code sees the original li",
        code_word(value) == LI_A0_1,
        format_args!("{:#010x}", code_word(value)),
    );
    // Self-modifying code: `li a0, 1` becomes `li a0, 2` on the page that ran.
    // SAFETY: the word is this program's own instruction, 4-byte aligned; fence.i orders the store before fetch.
    unsafe {
        core::ptr::write_volatile(value as *mut u32, LI_A0_2);
        core::arch::asm!("fence.i", options(nostack));
    }
    // SAFETY: the function now returns 2.
    let v1 = unsafe { counters_value() };
    check("a rewritten instruction runs", v1 == 2, format_args!("returned {v1}"));
    let before = time();
    // SAFETY: a plain function of this program.
    let t1 = unsafe { counters_read_time() };
    check("the rewritten page's rdtime still reads time", t1 >= before && t1 <= time(), format_args!("{t1}"));
    let word = code_word(read_time);
    check(
        "the rewritten page reads back as written",
        word == RDTIME_A0 && code_word(value) == LI_A0_2,
        format_args!("{word:#010x}"),
    );
    // SAFETY: as above; the original instruction back.
    unsafe {
        core::ptr::write_volatile(value as *mut u32, LI_A0_1);
        core::arch::asm!("fence.i", options(nostack));
    }
    // SAFETY: the function returns 1 again.
    let v2 = unsafe { counters_value() };
    check("the original instruction runs again", v2 == 1, format_args!("returned {v2}"));
}

fn straddling_code() {
    let function = counters_straddle_time as *const () as u64;
    let before = time();
    // SAFETY: a plain function of this program.
    let value = unsafe { counters_straddle_time() };
    let after = time();
    check(
        "an rdtime straddling a page end reads time",
        function & 0xfff == 0xffa && value >= before && value <= after,
        format_args!("at {function:#x}: {value} outside {before}..{after}"),
    );
    // SAFETY: the two halves of that instruction, this program's own code, 2-byte aligned.
    let halves = unsafe {
        [core::ptr::read_volatile((function + 4) as *const u16), core::ptr::read_volatile((function + 6) as *const u16)]
    };
    check(
        "the straddling rdtime reads back as written",
        halves == [RDTIME_A0 as u16, (RDTIME_A0 >> 16) as u16],
        format_args!("{:#06x} {:#06x}", halves[0], halves[1]),
    );
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    monotonic_reads();
    own_code();
    straddling_code();
    lower_modes();
    finish("counters")
}
