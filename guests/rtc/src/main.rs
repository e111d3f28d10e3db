//! `rtc`: a guest for QEMU `virt`'s goldfish RTC (`google,goldfish-rtc` at `0x101000`), a device the native board
//! gives whole to one VM (issue 11, dedicated devices).
//!
//! With an RTC in its devicetree (in a1), it reads the RTC's time (TIME_LOW at +0x00, which latches the high
//! half, then TIME_HIGH at +0x04) twice, some work apart, and checks that it is a plausible time in nanoseconds
//! since 1970 that advances, and that a jump into the RTC's page is an instruction access fault (code never runs
//! from a device). Without one, it checks that a load from and a store to `0x101000` and a jump there each get
//! the access fault the specification names, with the address in `mtval`: another VM's device is not there.
//! One `ok:`/`FAIL:` line per check, then `rtc: all N checks passed` and exit status 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use rt::checks::{self, check};
use rt::println;
use rt::trap::{self, TrapFrame};

core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc
    /* a0 = address; the handler skips a faulting access, or returns to ra from a faulting jump. */
    .balign 4
    .globl probe_lw, probe_sw, probe_jump
probe_lw:
    lw a0, 0(a0)
    ret
probe_sw:
    sw zero, 0(a0)
    ret
probe_jump:
    jr a0
    .option pop
"#
);

extern "C" {
    fn probe_lw(address: u64) -> u64;
    fn probe_sw(address: u64);
    fn probe_jump(address: u64);
}

/// The goldfish RTC's page on QEMU `virt`.
const RTC: u64 = 0x10_1000;
/// The RTC's registers: the low half of the time (reading it latches the high half), then the high half.
const TIME_LOW: u64 = RTC;
const TIME_HIGH: u64 = RTC + 4;
const RAM_BASE: u64 = 0x8000_0000;
const COMPATIBLE: &[u8] = b"google,goldfish-rtc\0";
/// 2020-01-01 and 2100-01-01, in nanoseconds since 1970.
const PLAUSIBLE: core::ops::Range<u64> = 1_577_836_800_000_000_000..4_102_444_800_000_000_000;

static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static TVAL: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut TrapFrame) {
    if frame.is_interrupt() {
        println!("FAIL: unexpected interrupt: mcause={:#x}", frame.mcause);
        rt::exit(104);
    }
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    TVAL.store(frame.mtval, SeqCst);
    if frame.code() == trap::INSTRUCTION_ACCESS_FAULT {
        // A jump to a bad address: back to the caller of the jumping snippet.
        frame.set_return_pc(frame.regs[1]);
    } else {
        // SAFETY: every other trap here is a load or store in this program's code.
        unsafe { frame.skip_instruction() };
    }
}

/// Whether the devicetree at `dtb` names a goldfish RTC (its `compatible` string anywhere in the structure).
fn has_rtc(dtb: u64) -> bool {
    let read_u32 = |address: u64| -> u32 {
        // SAFETY: only called for addresses inside the blob, whose size the header gives; RAM is readable.
        u32::from_be(unsafe { core::ptr::read_volatile(address as *const u32) })
    };
    if !dtb.is_multiple_of(4) || dtb < RAM_BASE || read_u32(dtb) != 0xd00d_feed {
        return false;
    }
    let total = u64::from(read_u32(dtb + 4));
    // SAFETY: the blob lies in RAM, `total` bytes from `dtb` (the header says so), and nothing writes it.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, total as usize) };
    blob.windows(COMPATIBLE.len()).any(|window| window == COMPATIBLE)
}

/// Runs `access` expecting the fault `cause` with `mtval` = `address`.
fn expect_fault(name: &str, address: u64, cause: u64, access: impl FnOnce()) {
    let before = TRAPS.load(SeqCst);
    access();
    let trapped = TRAPS.load(SeqCst) - before;
    let (seen, tval) = (CAUSE.load(SeqCst), TVAL.load(SeqCst));
    check(
        name,
        trapped == 1 && seen == cause && tval == address,
        format_args!("{trapped} traps, mcause {seen}, mtval {tval:#x}; expected mcause {cause}, mtval {address:#x}"),
    );
}

/// The RTC's time: TIME_LOW first (latching the high half), then TIME_HIGH.
fn read_time() -> u64 {
    // SAFETY: the devicetree gives this VM the RTC's page; its registers are 32-bit reads.
    let (low, high) = unsafe {
        let low = core::ptr::read_volatile(TIME_LOW as *const u32);
        let high = core::ptr::read_volatile(TIME_HIGH as *const u32);
        (low, high)
    };
    (u64::from(high) << 32) | u64::from(low)
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: u64, dtb: u64) -> u32 {
    trap::install_trap_handler(handler);
    if has_rtc(dtb) {
        println!("rtc: the devicetree gives this VM a goldfish RTC at {RTC:#x}");
        let first = read_time();
        // Some work between the reads (no device access: nothing the VMM serves).
        let mut spin = 0u64;
        for i in 0..2_000_000u64 {
            spin = core::hint::black_box(spin.wrapping_add(i));
        }
        let second = read_time();
        check(
            "rtc: time is nanoseconds since 1970, between 2020 and 2100",
            PLAUSIBLE.contains(&first),
            format_args!("read {first}"),
        );
        check(
            "rtc: time advances between two reads, by less than a minute",
            second > first && second - first < 60_000_000_000,
            format_args!("read {first} then {second}"),
        );
        check("rtc: no fault reading the RTC", TRAPS.load(SeqCst) == 0, format_args!("{} traps", TRAPS.load(SeqCst)));
        // SAFETY: the snippet jumps to the RTC's page; the fault returns to its caller.
        expect_fault("rtc: a jump into the RTC's page faults", RTC, trap::INSTRUCTION_ACCESS_FAULT, || unsafe {
            probe_jump(RTC)
        });
    } else {
        println!("rtc: no RTC in the devicetree: {RTC:#x} must fault");
        // SAFETY: the snippets access the address; the fault skips the access or returns to their caller.
        expect_fault("rtc: a load from another VM's RTC faults", TIME_LOW, trap::LOAD_ACCESS_FAULT, || unsafe {
            core::hint::black_box(probe_lw(TIME_LOW));
        });
        expect_fault("rtc: a store to another VM's RTC faults", TIME_HIGH, trap::STORE_ACCESS_FAULT, || unsafe {
            probe_sw(TIME_HIGH)
        });
        expect_fault("rtc: a jump into another VM's RTC faults", RTC, trap::INSTRUCTION_ACCESS_FAULT, || unsafe {
            probe_jump(RTC)
        });
    }
    checks::finish("rtc")
}
