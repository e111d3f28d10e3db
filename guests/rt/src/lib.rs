//! `rt`: the tiny M-mode runtime shared by every trapeze guest program.
//!
//! It provides the start-up code (`_start`: stack, `.bss`, then `main`; other harts park unless the guest
//! defines `rt_secondary_start`), a polled 16550 UART console with [`print!`]/[`println!`], [`exit`] through
//! the `sifive,test0` finisher (and [`exit_htif`] through HTIF `tohost`), a panic handler that reports and exits
//! with a failure status, CSR access macros and an M-mode trap handler that saves every register into a
//! [`trap::TrapFrame`]. For the self-checking guests it also has the `ok:`/`FAIL:` check tally ([`checks`]),
//! hart 0's CLINT registers ([`clint`]), [`lower::enter_lower`] to run a snippet in S- or U-mode, and [`addr`] of
//! an assembly label.
//!
//! A guest binary is `#![no_std] #![no_main]`, links this crate (`use rt as _;` at least), passes `-Tlink.x`
//! from its build script and defines `#[unsafe(no_mangle)] extern "C" fn main() -> u32`; the value `main`
//! returns is the exit status handed to [`exit`].
#![no_std]

pub mod checks;
pub mod clint;
pub mod console;
pub mod csr;
pub mod harts;
pub mod lower;
pub mod trap;
pub mod virtio_mmio;

use core::panic::PanicInfo;

core::arch::global_asm!(
    r#"
    .section .text.init, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    /* Only hart 0 runs the program; the others go to `rt_secondary_start`. */
    csrr t0, mhartid
    bnez t0, rt_secondary_start
    la sp, __stack_top
    /* Enable the FPU (mstatus.FS = Initial) in case the compiler uses FP registers. */
    li t0, 0x2000
    csrs mstatus, t0
    /* Zero .bss (16-byte aligned at both ends by the linker script). */
    la t0, __bss_start
    la t1, __bss_end
1:
    bgeu t0, t1, 2f
    sd zero, 0(t0)
    sd zero, 8(t0)
    addi t0, t0, 16
    j 1b
2:
    /* a0 = hart id and a1 = devicetree address are still those the machine passed. */
    call main
    call rt_exit_from_main
    .size _start, . - _start

    /* Where harts other than 0 go with a0 = their hart id, the devicetree in a1 and no stack: by default they
     * wait forever. A guest that runs code on them defines a strong `rt_secondary_start` of its own (it must set
     * its own stack, and leave `.bss` alone until hart 0 has zeroed it). In a section of its own, so the jump
     * above is always relocated and reaches the guest's definition. */
    .section .text.rt_secondary, "ax", @progbits
    .weak rt_secondary_start
    .type rt_secondary_start, @function
rt_secondary_start:
    wfi
    j rt_secondary_start
    .size rt_secondary_start, . - rt_secondary_start

    /* HTIF mailboxes, found by name in the symbol table by Spike-like harnesses. */
    .section .tohost, "aw", @progbits
    .balign 64
    .globl tohost
    .type tohost, @object
    .size tohost, 8
tohost:
    .dword 0
    .balign 64
    .globl fromhost
    .type fromhost, @object
    .size fromhost, 8
fromhost:
    .dword 0
"#
);

/// Base address of the `sifive,test0` finisher.
pub const FINISHER_BASE: usize = 0x10_0000;
/// Finisher command: power off with success.
pub const FINISHER_PASS: u32 = 0x5555;
/// Finisher command: power off with failure; the exit code goes in bits 31:16.
pub const FINISHER_FAIL: u32 = 0x3333;
/// Finisher command: reset the machine.
pub const FINISHER_RESET: u32 = 0x7777;

extern "C" {
    static mut tohost: u64;
}

/// Called by `_start` with the value `main` returned.
#[unsafe(no_mangle)]
extern "C" fn rt_exit_from_main(code: u32) -> ! {
    exit(code)
}

/// Ends the run with exit status `code` through the `sifive,test0` finisher (0 is a pass, anything else a failure
/// with that code; only the low 16 bits fit, and a nonzero code whose low 16 bits are zero becomes 1).
///
/// Should the finisher not stop the machine, this falls back to [`exit_htif`].
pub fn exit(code: u32) -> ! {
    let word = if code == 0 {
        FINISHER_PASS
    } else {
        let code = match code & 0xffff {
            0 => 1,
            c => c,
        };
        (code << 16) | FINISHER_FAIL
    };
    // SAFETY: the finisher is a device register at a fixed address of the QEMU `virt` memory map.
    unsafe { core::ptr::write_volatile(FINISHER_BASE as *mut u32, word) };
    exit_htif(code)
}

/// Ends the run with exit status `code` through HTIF only: writes `(code << 1) | 1` to `tohost`, then parks.
pub fn exit_htif(code: u32) -> ! {
    // SAFETY: `tohost` is a properly aligned u64 defined in this crate's start-up assembly; the host polls it.
    unsafe { core::ptr::addr_of_mut!(tohost).write_volatile((u64::from(code) << 1) | 1) };
    park()
}

/// The address of an assembly label declared as `fn()` in an `extern "C"` block.
#[inline]
pub fn addr(label: unsafe extern "C" fn()) -> u64 {
    label as *const () as usize as u64
}

/// Waits forever (`wfi` in a loop).
pub fn park() -> ! {
    loop {
        // SAFETY: `wfi` only waits for an interrupt; it has no other effect.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    match info.location() {
        Some(loc) => println!("FAIL: panic at {}:{}: {}", loc.file(), loc.line(), info.message()),
        None => println!("FAIL: panic: {}", info.message()),
    }
    exit(101)
}
