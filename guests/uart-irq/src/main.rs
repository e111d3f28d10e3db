//! `uart-irq`: UART interrupts through the PLIC, taken the way guests written for QEMU take them. The M-mode
//! external interrupt handler claims, reads LSR and RBR while LSR says data is ready, and completes; it never
//! reads IIR, so the UART's THR-empty condition, once raised, stands for good. QEMU raises the UART's line for
//! events (THR emptying, data arriving, an IER write, an RBR read) and its PLIC latches each raise once, so such a
//! guest gets one or two interrupts per event there; a PLIC that re-pends a line merely still high at every
//! completion livelocks it in its handler (then the handler gives up after `STORM` interrupts and fails).
//!
//! Checks: enabling ETBEI with THR empty interrupts once, and a long wait after it brings no further interrupt;
//! in loopback, each of `BYTES` bytes written to THR is received through the interrupt handler in order, with
//! between one and two interrupts per byte. Ends with `uart-irq: all N checks passed` (exit 0).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering::SeqCst};
use rt::checks::{self, check};
use rt::trap::{self, TrapFrame};
use rt::{csr_clear, csr_set, println};

const UART: usize = 0x1000_0000;
const RBR_THR: usize = 0;
const IER: usize = 1;
const MCR: usize = 4;
const LSR: usize = 5;
const IER_ERBFI: u8 = 0x01;
const IER_ETBEI: u8 = 0x02;
const MCR_LOOP: u8 = 0x10;
const LSR_DR: u8 = 0x01;

const PLIC: usize = 0x0c00_0000;
/// The UART's PLIC source on QEMU `virt`.
const UART_IRQ: usize = 10;
/// Hart 0's M-mode context: its enable bits and its threshold/claim registers.
const PLIC_ENABLE_M0: usize = PLIC + 0x2000;
const PLIC_THRESHOLD_M0: usize = PLIC + 0x20_0000;
const PLIC_CLAIM_M0: usize = PLIC + 0x20_0004;

/// `mie.MEIE` and `mcause` code of a machine external interrupt.
const MEI: u64 = 1 << 11;
const MEI_CODE: u64 = 11;
const MSTATUS_MIE: u64 = 1 << 3;

/// Interrupts past this many mean the handler is being re-entered without events: give up.
const STORM: u32 = 10_000;
/// Bytes sent through the loopback.
const BYTES: usize = 32;
/// Iterations of a bounded wait; far more than any interrupt needs to arrive.
const WAIT: u32 = 200_000;

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static RECEIVED: [AtomicU8; BYTES] = [const { AtomicU8::new(0) }; BYTES];
static RECEIVED_LEN: AtomicUsize = AtomicUsize::new(0);

fn read8(addr: usize) -> u8 {
    // SAFETY: a register of the UART at its fixed `virt` address; device memory, byte access.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn write8(addr: usize, value: u8) {
    // SAFETY: as in `read8`.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

fn read32(addr: usize) -> u32 {
    // SAFETY: a register of the PLIC at its fixed `virt` address; device memory, aligned word access.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write32(addr: usize, value: u32) {
    // SAFETY: as in `read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Quiets the UART so `println!` (polled) can report, with interrupts off.
fn quiet() {
    csr_clear!("mstatus", MSTATUS_MIE);
    write8(UART + IER, 0);
    write8(UART + MCR, 0);
}

fn handler(frame: &mut TrapFrame) {
    if !frame.is_interrupt() || frame.code() != MEI_CODE {
        quiet();
        trap::unexpected_trap(frame);
    }
    let count = INTERRUPTS.fetch_add(1, SeqCst) + 1;
    if count > STORM {
        quiet();
        println!("FAIL: interrupt storm: {count} interrupts, the handler is re-entered without new events");
        rt::exit(1);
    }
    let source = read32(PLIC_CLAIM_M0);
    if source as usize == UART_IRQ {
        // LSR and RBR only, never IIR: the THR-empty condition is never cleared.
        while read8(UART + LSR) & LSR_DR != 0 {
            let byte = read8(UART + RBR_THR);
            let index = RECEIVED_LEN.fetch_add(1, SeqCst);
            if let Some(slot) = RECEIVED.get(index) {
                slot.store(byte, SeqCst);
            }
        }
    }
    write32(PLIC_CLAIM_M0, source);
}

/// Spins until `done` holds or `WAIT` iterations went by; answers whether it held.
fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..WAIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn byte_sent(index: usize) -> u8 {
    (index as u8).wrapping_mul(37).wrapping_add(b'!')
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    write32(PLIC + 4 * UART_IRQ, 1);
    write32(PLIC_ENABLE_M0, 1 << UART_IRQ);
    write32(PLIC_THRESHOLD_M0, 0);
    csr_set!("mie", MEI);
    csr_set!("mstatus", MSTATUS_MIE);

    // THR is empty: enabling its interrupt is one event.
    write8(UART + IER, IER_ERBFI | IER_ETBEI);
    let arrived = wait_for(|| INTERRUPTS.load(SeqCst) >= 1);
    // The condition stands (IIR is never read), but nothing new happens: no further interrupt.
    wait_for(|| false);
    let after_enable = INTERRUPTS.load(SeqCst);

    // Loopback: each byte written to THR empties THR again and arrives in RBR.
    write8(UART + MCR, MCR_LOOP);
    let mut in_order = true;
    for index in 0..BYTES {
        write8(UART + RBR_THR, byte_sent(index));
        in_order &= wait_for(|| RECEIVED_LEN.load(SeqCst) > index);
    }
    wait_for(|| false);
    let loopback = INTERRUPTS.load(SeqCst) - after_enable;
    quiet();

    let received = RECEIVED_LEN.load(SeqCst);
    in_order &= received == BYTES && (0..BYTES).all(|i| RECEIVED[i].load(SeqCst) == byte_sent(i));
    check("THR-empty interrupt taken", arrived, format_args!("no interrupt after enabling ETBEI"));
    check(
        "a standing THR-empty condition interrupts once",
        after_enable == 1,
        format_args!("{after_enable} interrupts"),
    );
    check(
        "loopback bytes received in order through the handler",
        in_order,
        format_args!("{received} of {BYTES} bytes, or out of order"),
    );
    check(
        "one or two interrupts per loopback byte",
        (BYTES as u32..=2 * BYTES as u32).contains(&loopback),
        format_args!("{loopback} interrupts for {BYTES} bytes"),
    );
    println!("uart-irq: {} interrupts in all", INTERRUPTS.load(SeqCst));
    checks::finish("uart-irq")
}
