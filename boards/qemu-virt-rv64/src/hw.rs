//! The physical machine the VMM owns, QEMU `virt`: its UART 16550 (the console), the CLINT's machine timer, the
//! `sifive,test0` finisher, PMP and `satp`. Each is a few registers written by hand. (The physical disk, driven with
//! `virtio-drivers`, is in `disk`.)
//!
//! Only the VMM touches these: no guest access ever reaches them (guests run in U-mode behind PMP and shadow
//! tables, and see virtual devices).

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::smp::{self, MAX_HARTS};

/// The UART 16550 of QEMU `virt`.
const UART_BASE: usize = 0x1000_0000;
/// Line status register, and its "transmit holding register empty" bit.
const UART_LSR: usize = 5;
const UART_LSR_THRE: u8 = 1 << 5;
/// Line status: "data ready", a received byte waits in RBR.
const UART_LSR_DR: u8 = 1;

/// The CLINT: hart 0's `mtimecmp` (hart N's is 8 N bytes above).
const CLINT_MTIMECMP0: usize = 0x0200_4000;

/// The `sifive,test0` finisher.
const FINISHER: usize = 0x10_0000;
const FINISHER_PASS: u32 = 0x5555;
const FINISHER_FAIL: u32 = 0x3333;

/// Writes one byte to the physical console, waiting while the transmitter is full.
pub fn console_write_byte(byte: u8) {
    // SAFETY: the UART's registers are device memory at a fixed address of the `virt` map, accessed by bytes; only
    // the VMM (M-mode, bare) runs this.
    unsafe {
        while read_volatile((UART_BASE + UART_LSR) as *const u8) & UART_LSR_THRE == 0 {}
        write_volatile(UART_BASE as *mut u8, byte);
    }
}

/// The next byte typed at the physical console, if one is waiting; never waits.
pub fn console_read_byte() -> Option<u8> {
    // SAFETY: as for `console_write_byte`: the UART's registers at their fixed address, read by bytes, by the VMM
    // only. Reading RBR takes the byte; it is read only when LSR says one is there.
    unsafe {
        let ready = read_volatile((UART_BASE + UART_LSR) as *const u8) & UART_LSR_DR != 0;
        ready.then(|| read_volatile(UART_BASE as *const u8))
    }
}

/// Writes `text` to the physical console.
pub fn console_write(text: &str) {
    text.bytes().for_each(console_write_byte);
}

/// The physical console as a `fmt::Write` sink.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        console_write(text);
        Ok(())
    }
}

/// Prints to the physical console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::hw::Console, format_args!($($arg)*));
        $crate::hw::console_write("\n");
    }};
}

/// The machine timer (`mtime`), 10 MHz on QEMU `virt`, read through the `time` CSR: the same counter, without
/// a device access (which costs QEMU far more than a CSR read).
pub fn mtime() -> u64 {
    riscv::register::time::read64()
}

/// The deadline each hart's `mtimecmp` holds (`u64::MAX`: none), so it is written only when it must change.
/// Per hart (each hart only touches its own entry): relaxed atomics, in place of a `static mut`.
static ARMED: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(u64::MAX) }; MAX_HARTS];

/// This hart's entry of [`ARMED`] and its `mtimecmp`.
fn this_harts_timer() -> (&'static AtomicU64, *mut u64) {
    let hart = smp::hart_id();
    // `memory.x` gives no stack to a hart beyond MAX_HARTS (riscv-rt parks it), so the index is in bounds.
    let armed = &ARMED[hart % MAX_HARTS];
    (armed, (CLINT_MTIMECMP0 + 8 * hart) as *mut u64)
}

/// Arms this hart's machine timer interrupt at absolute time `deadline` (`u64::MAX`: never).
pub fn set_timer(deadline: u64) {
    let (armed, mtimecmp) = this_harts_timer();
    armed.store(deadline, Ordering::Relaxed);
    // SAFETY: this hart's `mtimecmp`, a 64-bit CLINT register at a fixed, aligned address of the `virt` map.
    unsafe { write_volatile(mtimecmp, deadline) }
}

/// Makes the machine timer fire no later than `deadline`, writing `mtimecmp` only when the armed deadline has
/// passed or is later: an earlier one left armed just ends a quantum early, which is always allowed.
pub fn timer_no_later_than(deadline: u64, now: u64) {
    let armed = this_harts_timer().0.load(Ordering::Relaxed);
    if armed <= now || armed > deadline {
        set_timer(deadline);
    }
}

/// Powers QEMU off through the finisher: status 0 passes, anything else fails with that code.
pub fn exit(code: u32) -> ! {
    let value = if code == 0 { FINISHER_PASS } else { (code << 16) | FINISHER_FAIL };
    // SAFETY: the finisher's only register, at a fixed address of the `virt` map; writing it ends the machine.
    unsafe { write_volatile(FINISHER as *mut u32, value) };
    loop {
        riscv::asm::wfi();
    }
}

/// Sets the real `satp` (Sv39 shadow root, ASID 0) and drops every cached translation. The VMM runs in M-mode
/// with MPRV = 0, so `satp` only affects the guest.
pub fn set_satp(satp: u64) {
    // SAFETY: M-mode with MPRV clear never translates, so changing satp cannot affect the VMM; the fence makes the
    // new tables (all of whose pages were written before this call) visible to the next guest access.
    unsafe { core::arch::asm!("csrw satp, {0}", "sfence.vma", in(reg) satp) }
}

/// Drops the cached translations of one virtual address (after a shadow fill).
pub fn sfence_page(va: u64) {
    // SAFETY: a fence has no effect on memory; it only makes a new shadow PTE visible to the guest's next access.
    unsafe { core::arch::asm!("sfence.vma {0}, zero", in(reg) va) }
}

/// Walls U-mode into the `partition` (read, write, execute), the shadow table `pool` (read only: hardware page
/// walks of the shadow tables are checked as S-mode reads), the patched `code` copies (execute only) and the
/// `device` page given whole to the VM (read and write, never execute; an empty range for a VM without one), each
/// a `[start, end)` range, and nothing else. Every bound must be a multiple of 4. M-mode is not restricted (no
/// entry is locked).
pub fn set_pmp(partition: (u64, u64), pool: (u64, u64), code: (u64, u64), device: (u64, u64)) {
    const TOR: u64 = 1 << 3;
    const R: u64 = 1;
    const W: u64 = 2;
    const X: u64 = 4;
    const RWX: u64 = 7;
    // Entry 0 (OFF) holds the partition's start for entry 1 (TOR, RWX); entry 2 (OFF) the pool's start for
    // entry 3 (TOR, R); entry 4 (OFF) the patched code copies' start for entry 5 (TOR, X; an empty range when
    // the VM has none); entry 6 (OFF) the device page's start for entry 7 (TOR, RW; empty for a VM without one).
    // Entries 8 and up stay OFF, so any other address fails for U-mode. An empty range leaves its entry OFF too:
    // QEMU 7.2 computes the end of a TOR entry whose address is 0 as `(0 << 2) - 1`, so a TOR entry over (0, 0)
    // would match every address.
    let tor = |range: (u64, u64), perms: u64| if range.0 < range.1 { TOR | perms } else { 0 };
    let cfg = (tor(partition, RWX) << 8) | (tor(pool, R) << 24) | (tor(code, X) << 40) | (tor(device, R | W) << 56);
    // SAFETY: M-mode writes to unlocked PMP entries only restrict S/U-mode accesses; the fence makes the change
    // visible to cached translations.
    unsafe {
        core::arch::asm!(
            "csrw pmpcfg0, zero",
            "csrw pmpaddr0, {a0}",
            "csrw pmpaddr1, {a1}",
            "csrw pmpaddr2, {a2}",
            "csrw pmpaddr3, {a3}",
            "csrw pmpaddr4, {a4}",
            "csrw pmpaddr5, {a5}",
            "csrw pmpaddr6, {a6}",
            "csrw pmpaddr7, {a7}",
            "csrw pmpcfg2, zero",
            "csrw pmpcfg0, {cfg}",
            "sfence.vma",
            a0 = in(reg) partition.0 >> 2,
            a1 = in(reg) partition.1 >> 2,
            a2 = in(reg) pool.0 >> 2,
            a3 = in(reg) pool.1 >> 2,
            a4 = in(reg) code.0 >> 2,
            a5 = in(reg) code.1 >> 2,
            a6 = in(reg) device.0 >> 2,
            a7 = in(reg) device.1 >> 2,
            cfg = in(reg) cfg,
        );
    }
}

/// Turns every PMP entry off: U-mode reaches nothing until a VM's walls are set ([`set_pmp`]).
pub fn clear_pmp() {
    set_pmp((0, 0), (0, 0), (0, 0), (0, 0));
}

/// `mie` while the board runs: the machine timer (it ends a guest's quantum) and the software interrupt (another
/// real hart's kick, [`kick`]: a hart of the same VM wants this one back in the VMM); each is taken only from
/// U-mode, through the world switch.
const RUNNING_MIE: u64 = (1 << 7) | MSIP_BIT;
/// `mip.MSIP` / `mie.MSIE`.
const MSIP_BIT: u64 = 1 << 3;
/// The CLINT's `msip` registers, one 32-bit word per hart.
const CLINT_MSIP0: usize = 0x0200_0000;

/// Sets up this hart for running guests: counters trap in U-mode (`mcounteren` = 0, so the VMM emulates
/// `cycle`, `time` and `instret` with virtual values), nothing is delegated to S-mode, and only the machine
/// timer and software interrupts are enabled (they end a guest's native run; `mstatus.MIE` stays clear, so the
/// VMM itself is never interrupted).
pub fn init_machine() {
    set_timer(u64::MAX);
    // SAFETY: M-mode CSR writes that only affect how lower modes trap and which interrupts are taken from them.
    unsafe {
        core::arch::asm!(
            "csrw mcounteren, zero",
            "csrw medeleg, zero",
            "csrw mideleg, zero",
            "csrw mie, {mie}",
            mie = in(reg) RUNNING_MIE,
        );
    }
}

/// `hart`'s CLINT `msip`.
fn msip(hart: usize) -> *mut u32 {
    (CLINT_MSIP0 + 4 * (hart % MAX_HARTS)) as *mut u32
}

/// Raises real hart `hart`'s software interrupt: a guest it runs natively traps back to its VMM at once (which
/// then looks at what other harts asked of it), and it wakes from a park or a nap. A kick that finds the hart
/// in the VMM stays pending and ends its next native run at once: never lost, at worst one run cut short.
pub fn kick(hart: usize) {
    // SAFETY: an aligned 32-bit CLINT register of the `virt` map; only the VMM (M-mode) writes these.
    unsafe { write_volatile(msip(hart), 1) }
}

/// Clears this hart's software interrupt (after a kick ended a guest's run, or woke a nap).
pub fn clear_kick() {
    // SAFETY: this hart's CLINT `msip`, an aligned 32-bit register of the `virt` map.
    unsafe { write_volatile(msip(smp::hart_id()), 0) }
}

/// Sets the real `mcounteren` and `scounteren` to `bits` (CY, TM, IR): a set bit lets the guest, in real U-mode,
/// read that counter without trapping (the VM's code is then scanned and its reads patched, see `engine.rs`);
/// 0 makes every counter read trap.
pub fn set_counteren(bits: u64) {
    // SAFETY: M-mode CSR writes that only decide which counter reads trap from lower modes.
    unsafe { core::arch::asm!("csrw mcounteren, {0}", "csrw scounteren, {0}", in(reg) bits) }
}

/// The real `minstret` (QEMU without `-icount` counts host ticks there: monotonic, not instructions).
pub fn minstret() -> u64 {
    riscv::register::minstret::read64()
}

/// Waits, parked, for this hart's software interrupt (its CLINT `msip`, at `msip`), then clears it: with only
/// the software interrupt enabled in `mie` (not globally), so `wfi` wakes for it alone; `mie` is back to the
/// timer's when it returns.
pub fn wait_for_ipi(msip: *mut u32) {
    // SAFETY: M-mode CSR writes that only choose which interrupt wakes `wfi` (none is taken: `mstatus.MIE` is
    // clear); `msip` is this hart's CLINT register, an aligned 32-bit word of the `virt` map.
    unsafe {
        core::arch::asm!("csrw mie, {0}", in(reg) MSIP_BIT);
        while riscv::register::mip::read().bits() as u64 & MSIP_BIT == 0 {
            riscv::asm::wfi();
        }
        write_volatile(msip, 0);
        core::arch::asm!("csrw mie, {0}", in(reg) RUNNING_MIE);
    }
}

/// Waits for this hart's machine timer to reach `deadline`, or for a kick ([`kick`], which it clears), with
/// interrupts globally masked: `wfi` still wakes on a pending enabled interrupt. Whether a kick ended it.
pub fn wait_for_timer(deadline: u64) -> bool {
    set_timer(deadline);
    let mut kicked = false;
    while mtime() < deadline {
        if riscv::register::mip::read().bits() as u64 & MSIP_BIT != 0 {
            clear_kick();
            kicked = true;
            break;
        }
        riscv::asm::wfi();
    }
    set_timer(u64::MAX);
    kicked
}
