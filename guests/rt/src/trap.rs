//! M-mode trap handling: an assembly entry that saves all registers into a [`TrapFrame`] on the current stack,
//! calls the installed Rust handler, then restores everything (with the handler's `mepc` and `mstatus`) and
//! `mret`s. Direct `mtvec` mode only.
use core::sync::atomic::{AtomicUsize, Ordering};

/// Exception code of an instruction address misalignment.
pub const INSTRUCTION_MISALIGNED: u64 = 0;
/// Exception code of an instruction access fault.
pub const INSTRUCTION_ACCESS_FAULT: u64 = 1;
/// Exception code of an illegal instruction.
pub const ILLEGAL_INSTRUCTION: u64 = 2;
/// Exception code of a breakpoint (`ebreak`, `c.ebreak`).
pub const BREAKPOINT: u64 = 3;
/// Exception code of a load address misalignment.
pub const LOAD_MISALIGNED: u64 = 4;
/// Exception code of a load access fault.
pub const LOAD_ACCESS_FAULT: u64 = 5;
/// Exception code of a store/AMO address misalignment.
pub const STORE_MISALIGNED: u64 = 6;
/// Exception code of a store/AMO access fault.
pub const STORE_ACCESS_FAULT: u64 = 7;
/// Exception code of an `ecall` from U-mode.
pub const ECALL_FROM_U: u64 = 8;
/// Exception code of an `ecall` from S-mode.
pub const ECALL_FROM_S: u64 = 9;
/// Exception code of an `ecall` from M-mode.
pub const ECALL_FROM_M: u64 = 11;

/// `mstatus.MPP`, the privilege level before the trap.
pub const MSTATUS_MPP_MASK: u64 = 3 << 11;
/// `mstatus.MPP` shift.
pub const MSTATUS_MPP_SHIFT: u32 = 11;

/// The state saved on trap entry. Field offsets are fixed: the assembly entry depends on them.
#[repr(C)]
#[derive(Debug, Clone)]
pub struct TrapFrame {
    /// `x0`..`x31` at the time of the trap (`regs[2]` is the interrupted `sp`; `regs[0]` is always 0).
    /// Changes are written back on return, except `x0` and `sp`.
    pub regs: [u64; 32],
    /// The pc `mret` returns to: on entry, the address of the trapping instruction.
    pub mepc: u64,
    /// `mstatus` as it was on entry (MPP holds the interrupted privilege level); written back on return.
    pub mstatus: u64,
    /// `mcause` on entry (read only: not written back).
    pub mcause: u64,
    /// `mtval` on entry (read only: not written back).
    pub mtval: u64,
}

impl TrapFrame {
    /// Whether the trap is an interrupt (`mcause` bit 63).
    pub fn is_interrupt(&self) -> bool {
        self.mcause >> 63 != 0
    }

    /// The exception or interrupt code (`mcause` without bit 63).
    pub fn code(&self) -> u64 {
        self.mcause & !(1 << 63)
    }

    /// The privilege level the trap came from (`mstatus.MPP`: 0 = U, 1 = S, 3 = M).
    pub fn previous_privilege(&self) -> u64 {
        (self.mstatus & MSTATUS_MPP_MASK) >> MSTATUS_MPP_SHIFT
    }

    /// Sets the privilege level `mret` returns to.
    pub fn set_previous_privilege(&mut self, level: u64) {
        self.mstatus = (self.mstatus & !MSTATUS_MPP_MASK) | ((level & 3) << MSTATUS_MPP_SHIFT);
    }

    /// Sets the pc `mret` returns to.
    pub fn set_return_pc(&mut self, pc: u64) {
        self.mepc = pc;
    }

    /// Length in bytes of the instruction at `mepc`, from its low bits: 2 for a compressed instruction, else 4.
    ///
    /// # Safety
    /// `mepc` must point to readable memory (it does for every exception but an instruction fetch fault).
    pub unsafe fn instruction_length(&self) -> u64 {
        // SAFETY: guaranteed by the caller; instructions are at least 2-byte aligned with C.
        let low = unsafe { core::ptr::read_volatile(self.mepc as *const u16) };
        if low & 3 == 3 {
            4
        } else {
            2
        }
    }

    /// Makes `mret` return past the trapping instruction.
    ///
    /// # Safety
    /// As for [`TrapFrame::instruction_length`].
    pub unsafe fn skip_instruction(&mut self) {
        // SAFETY: forwarded to the caller.
        self.mepc += unsafe { self.instruction_length() };
    }
}

/// A Rust trap handler.
pub type TrapHandler = fn(&mut TrapFrame);

static HANDLER: AtomicUsize = AtomicUsize::new(0);

core::arch::global_asm!(
    r#"
    .section .text.rt_trap, "ax", @progbits
    .balign 4
    .globl rt_trap_entry
    .type rt_trap_entry, @function
rt_trap_entry:
    addi sp, sp, -288
    sd x1, 8(sp)
    sd x3, 24(sp)
    sd x4, 32(sp)
    sd x5, 40(sp)
    sd x6, 48(sp)
    sd x7, 56(sp)
    sd x8, 64(sp)
    sd x9, 72(sp)
    sd x10, 80(sp)
    sd x11, 88(sp)
    sd x12, 96(sp)
    sd x13, 104(sp)
    sd x14, 112(sp)
    sd x15, 120(sp)
    sd x16, 128(sp)
    sd x17, 136(sp)
    sd x18, 144(sp)
    sd x19, 152(sp)
    sd x20, 160(sp)
    sd x21, 168(sp)
    sd x22, 176(sp)
    sd x23, 184(sp)
    sd x24, 192(sp)
    sd x25, 200(sp)
    sd x26, 208(sp)
    sd x27, 216(sp)
    sd x28, 224(sp)
    sd x29, 232(sp)
    sd x30, 240(sp)
    sd x31, 248(sp)
    sd zero, 0(sp)
    addi t0, sp, 288
    sd t0, 16(sp)
    csrr t0, mepc
    sd t0, 256(sp)
    csrr t0, mstatus
    sd t0, 264(sp)
    csrr t0, mcause
    sd t0, 272(sp)
    csrr t0, mtval
    sd t0, 280(sp)
    mv a0, sp
    call rt_trap_dispatch
    ld t0, 256(sp)
    csrw mepc, t0
    ld t0, 264(sp)
    csrw mstatus, t0
    ld x1, 8(sp)
    ld x3, 24(sp)
    ld x4, 32(sp)
    ld x5, 40(sp)
    ld x6, 48(sp)
    ld x7, 56(sp)
    ld x8, 64(sp)
    ld x9, 72(sp)
    ld x10, 80(sp)
    ld x11, 88(sp)
    ld x12, 96(sp)
    ld x13, 104(sp)
    ld x14, 112(sp)
    ld x15, 120(sp)
    ld x16, 128(sp)
    ld x17, 136(sp)
    ld x18, 144(sp)
    ld x19, 152(sp)
    ld x20, 160(sp)
    ld x21, 168(sp)
    ld x22, 176(sp)
    ld x23, 184(sp)
    ld x24, 192(sp)
    ld x25, 200(sp)
    ld x26, 208(sp)
    ld x27, 216(sp)
    ld x28, 224(sp)
    ld x29, 232(sp)
    ld x30, 240(sp)
    ld x31, 248(sp)
    addi sp, sp, 288
    mret
    .size rt_trap_entry, . - rt_trap_entry
"#
);

extern "C" {
    fn rt_trap_entry();
}

#[unsafe(no_mangle)]
extern "C" fn rt_trap_dispatch(frame: &mut TrapFrame) {
    let handler = HANDLER.load(Ordering::Acquire);
    if handler == 0 {
        unexpected_trap(frame);
    } else {
        // SAFETY: HANDLER only ever holds 0 or a `TrapHandler` stored by `install_trap_handler`.
        let handler: TrapHandler = unsafe { core::mem::transmute::<usize, TrapHandler>(handler) };
        handler(frame);
    }
}

/// The handler used when none is installed: reports the trap and exits with status 102.
pub fn unexpected_trap(frame: &mut TrapFrame) {
    crate::println!(
        "FAIL: unexpected trap: mcause={:#x} mepc={:#x} mtval={:#x}",
        frame.mcause,
        frame.mepc,
        frame.mtval
    );
    crate::exit(102)
}

/// Installs `handler` as the M-mode trap handler and points `mtvec` (direct mode) at the assembly entry.
pub fn install_trap_handler(handler: TrapHandler) {
    HANDLER.store(handler as usize, Ordering::Release);
    crate::csr_write!("mtvec", rt_trap_entry as *const () as usize as u64);
}

/// The address of the assembly trap entry (what `mtvec` holds once a handler is installed).
pub fn trap_entry_address() -> u64 {
    rt_trap_entry as *const () as usize as u64
}
