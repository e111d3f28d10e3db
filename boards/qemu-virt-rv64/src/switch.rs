//! The world switch: the only hand-written assembly of the board (`switch.S`).
//!
//! [`enter_guest`] saves the VMM's callee-saved registers (integer and floating point) and stack pointer in a
//! [`GuestContext`], points `mscratch` at the context, loads the guest's registers (and its floating-point ones
//! when [`GuestContext::fp_switch`] is set), writes the prepared `mstatus` (MPP = U) and `mepc` and `mret`s into
//! the guest. Every trap then lands in `trapeze_trap_entry` (in `mtvec`, direct mode), which swaps `sp` with
//! `mscratch`, saves every guest register, `mepc`, `mstatus`, `mcause` and `mtval` into the context, turns the
//! FPU back on for the VMM, restores the VMM's registers and returns from `enter_guest`. While the VMM itself
//! runs, `mscratch` is 0, so a trap taken by the VMM (a bug) goes on to riscv-rt's handler instead.
//!
//! This module must never let a guest value reach a VMM register: everything the guest leaves behind goes into
//! the context, and the VMM's state comes back from the context alone.

use core::mem::offset_of;

core::arch::global_asm!(include_str!("switch.S"));

/// Everything the world switch saves and restores. The offsets are fixed by `switch.S` (checked below).
#[repr(C)]
#[derive(Debug)]
pub struct GuestContext {
    /// Guest integer registers; `x[0]` is never loaded.
    pub x: [u64; 32],
    /// Guest floating-point registers (switched only when [`fp_switch`](Self::fp_switch) is set).
    pub f: [u64; 32],
    pub fcsr: u64,
    /// The guest pc: `mepc` in, `mepc` at the trap out.
    pub pc: u64,
    /// `mstatus` in (MPP = U, the FS the guest runs with), `mstatus` at the trap out (FS Dirty: FP state changed).
    pub mstatus: u64,
    pub mcause: u64,
    pub mtval: u64,
    host_sp: u64,
    host_ra: u64,
    host_gp: u64,
    host_tp: u64,
    host_s: [u64; 12],
    host_fs: [u64; 12],
    host_fcsr: u64,
    /// Nonzero: switch the floating-point registers and `fcsr` too.
    pub fp_switch: u64,
}

const _: () = {
    assert!(offset_of!(GuestContext, f) == 256);
    assert!(offset_of!(GuestContext, fcsr) == 512);
    assert!(offset_of!(GuestContext, pc) == 520);
    assert!(offset_of!(GuestContext, mstatus) == 528);
    assert!(offset_of!(GuestContext, mcause) == 536);
    assert!(offset_of!(GuestContext, mtval) == 544);
    assert!(offset_of!(GuestContext, host_sp) == 552);
    assert!(offset_of!(GuestContext, host_ra) == 560);
    assert!(offset_of!(GuestContext, host_gp) == 568);
    assert!(offset_of!(GuestContext, host_tp) == 576);
    assert!(offset_of!(GuestContext, host_s) == 584);
    assert!(offset_of!(GuestContext, host_fs) == 680);
    assert!(offset_of!(GuestContext, host_fcsr) == 776);
    assert!(offset_of!(GuestContext, fp_switch) == 784);
};

impl GuestContext {
    pub const fn new() -> Self {
        Self {
            x: [0; 32],
            f: [0; 32],
            fcsr: 0,
            pc: 0,
            mstatus: 0,
            mcause: 0,
            mtval: 0,
            host_sp: 0,
            host_ra: 0,
            host_gp: 0,
            host_tp: 0,
            host_s: [0; 12],
            host_fs: [0; 12],
            host_fcsr: 0,
            fp_switch: 0,
        }
    }
}

extern "C" {
    fn trapeze_enter_guest(context: *mut GuestContext);
    fn trapeze_trap_entry();
}

/// Points `mtvec` at the world switch's trap entry (direct mode) and clears `mscratch` (the VMM runs).
pub fn install_trap_entry() {
    let entry = trapeze_trap_entry as *const () as u64;
    // SAFETY: the entry is 4-byte aligned (`.p2align 2`), so direct mode is encoded by the low bits being 0; with
    // mscratch 0 a trap from the VMM is forwarded to riscv-rt's `_start_trap`, as before this call.
    unsafe {
        core::arch::asm!("csrw mscratch, zero", "csrw mtvec, {0}", in(reg) entry);
    }
}

/// Runs the guest described by `context` until its next trap; the trap's CSRs and the guest's registers are in
/// `context` on return.
///
/// The caller has prepared everything the guest must not escape: `context.mstatus` with MPP = U and MPRV = 0,
/// `satp` at a shadow root whose every mapping lies in the VM's partition, PMP walling U-mode into the partition,
/// and the machine timer armed.
pub fn enter_guest(context: &mut GuestContext) {
    // SAFETY: `switch.S` follows the C calling convention: it saves every callee-saved register (integer and FP),
    // sp, gp and tp of the VMM in `context` and restores them before returning; the guest runs in
    // U-mode (MPP = U, set by the caller), so it can reach neither the VMM's memory (PMP, shadow tables) nor its
    // CSRs, and every trap comes back through `trapeze_trap_entry`.
    unsafe { trapeze_enter_guest(context) }
}
