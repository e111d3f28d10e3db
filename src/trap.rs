//! Exits and the trap-and-emulate dispatcher.
//!
//! An engine stops and returns an [`Exit`] whenever it meets something the virtual machine must decide: an
//! exception, a privileged or system instruction, an access outside guest RAM, or the end of its budget. The
//! [`Dispatcher`] turns each exit into an effect on the virtual hart (a CSR access, an `xRET`, an injected
//! exception, a device access) and says how to resume. It never knows which engine ran, and nothing a guest
//! can cause makes it panic.

use crate::debug::DebugStop;
use crate::dev::{MachineRequest, MmioError};
use crate::hart::{Exception, Hart, Privilege};
use crate::isa::csr::mstatus;
use crate::isa::{CsrOp, Inst, Reg};

/// Why an engine stopped.
///
/// `repr(u64)`: the tag is a whole word, so the variants' fields start at an aligned offset and moving an exit
/// (every engine returns one per exit) copies aligned words; with Rust's own layout the fields began one byte
/// after the tag, and targets without fast misaligned accesses (RISC-V without Zicclsm) copied them through a
/// byte-wise `memcpy`: a sixth of the instructions a trap site in the code cache costs the native board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u64)]
pub enum Exit {
    /// The instruction budget is used up; the hart's state is consistent at an instruction boundary.
    BudgetExhausted,
    /// The instruction at `hart.pc` raised a synchronous exception.
    Exception { cause: Exception, tval: u64 },
    /// The instruction at `hart.pc` is one the dispatcher emulates (CSR access, `xRET`, `WFI`, `SFENCE.VMA`, and
    /// the `pause` hint, which only the scheduler cares about).
    /// `word` is its encoding as fetched (the 16-bit parcel for a compressed one) and `len` its length.
    System { inst: Inst, word: u32, len: u8 },
    /// The instruction at `hart.pc` accesses a guest real address outside RAM.
    Mmio(MmioAccess),
    /// A software breakpoint or a debugger trigger (`dmode` = 1, action 1) matched the instruction at `hart.pc`,
    /// nothing of which was performed: the host debugger takes over. The dispatcher does nothing for it (the
    /// guest must not notice); [`crate::vm::Vm`] returns it as `RunOutcome::DebugStop`.
    Debug(DebugStop),
}

/// A load or store outside RAM, to be served by a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Guest real address.
    pub addr: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub kind: MmioKind,
    /// Length of the accessing instruction (2 or 4), to step past it once the access is done.
    pub len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioKind {
    /// A load into integer register `rd`, sign-extended from `size` bytes when `signed`.
    Load {
        rd: Reg,
        signed: bool,
    },
    Store {
        value: u64,
    },
}

/// What the dispatcher needs from the machine around the hart: device accesses and the time.
pub trait Platform {
    /// Reads a device register at guest real address `addr`.
    fn mmio_read(&mut self, addr: u64, size: u8) -> Result<u64, MmioError>;
    /// Writes a device register; a device may answer with a request to the whole machine.
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) -> Result<Option<MachineRequest>, MmioError>;
    /// The machine timer (`mtime`), in ticks of the timebase.
    fn time(&mut self) -> u64;
    /// Cached address translations covered by `scope` must be dropped (after `sfence.vma`, a `satp` write,
    /// or a change of the mode or `mstatus` fields translation depends on).
    fn flush_translations(&mut self, scope: FlushScope) {
        let _ = scope;
    }
}

/// Which cached translations a flush drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// Every translation.
    All,
    /// `sfence.vma`: one virtual address and/or one ASID, or everything when both are `None`. Global mappings
    /// survive an ASID-specific fence.
    Sfence { address: Option<u64>, asid: Option<u16> },
}

/// How to go on after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Run the hart again.
    Continue,
    /// The hart executed `wfi`: it may sleep until an interrupt is pending.
    WaitForInterrupt,
    /// The hart executed `pause`: it is spinning, waiting for another hart, which should run now.
    Yield,
    /// The guest asked the machine to power off or reset.
    Machine(MachineRequest),
}

/// The trap-and-emulate dispatcher: one routine per exit kind and privileged instruction class.
#[derive(Debug, Default)]
pub struct Dispatcher {
    _private: (),
}

impl Dispatcher {
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// Emulates `exit` on `hart` and says how to resume.
    pub fn dispatch(&mut self, exit: Exit, hart: &mut Hart, platform: &mut impl Platform) -> Resume {
        match exit {
            Exit::BudgetExhausted => Resume::Continue,
            Exit::Exception { cause, tval } => {
                hart.raise(cause, tval);
                Resume::Continue
            }
            Exit::System { inst, word, len } => self.system(inst, word, len, hart, platform),
            Exit::Mmio(access) => self.mmio(access, hart, platform),
            // The host debugger's business: nothing is injected, the hart stays at the instruction.
            Exit::Debug(_) => Resume::Continue,
        }
    }

    fn system(&mut self, inst: Inst, word: u32, len: u8, hart: &mut Hart, platform: &mut impl Platform) -> Resume {
        let illegal = |hart: &mut Hart| {
            hart.raise(Exception::IllegalInstruction, word as u64);
            Resume::Continue
        };
        match inst {
            Inst::Csr { op, rd, src, csr } => {
                if csr_instruction(hart, platform, op, rd, src, csr).is_err() {
                    return illegal(hart);
                }
                hart.pc = hart.pc.wrapping_add(len as u64);
                Resume::Continue
            }
            Inst::Mret if hart.privilege == Privilege::Machine => {
                retire_in_place(hart);
                hart.mret();
                Resume::Continue
            }
            Inst::Sret if sret_allowed(hart) => {
                retire_in_place(hart);
                hart.sret();
                Resume::Continue
            }
            crate::isa::PAUSE => {
                retire(hart, len);
                Resume::Yield
            }
            // A hart with a locally enabled interrupt pending (`mip & mie`, whatever `mstatus.MIE`/`SIE` and
            // `mideleg` say) does not stall, as the privileged specification asks and riscv-tests' rv64si-p-wfi
            // checks. One whose pending interrupts `mie` all disables waits, as on QEMU: OpenSBI parks its
            // secondary harts in a `wfi` loop with only MSIE and MEIE enabled while the timer line may be up,
            // and resuming there made a waiting hart spin through its whole boot.
            Inst::Wfi if wfi_allowed(hart) => {
                retire(hart, len);
                if hart.wake_up_pending() {
                    Resume::Continue
                } else {
                    Resume::WaitForInterrupt
                }
            }
            Inst::SfenceVma { rs1, rs2 } if sfence_allowed(hart) => {
                let address = (rs1 != 0).then(|| hart.x(rs1));
                let asid = (rs2 != 0).then(|| hart.x(rs2) as u16);
                platform.flush_translations(FlushScope::Sfence { address, asid });
                retire(hart, len);
                Resume::Continue
            }
            _ => illegal(hart),
        }
    }

    fn mmio(&mut self, access: MmioAccess, hart: &mut Hart, platform: &mut impl Platform) -> Resume {
        match access.kind {
            MmioKind::Load { rd, signed } => match platform.mmio_read(access.addr, access.size) {
                Ok(value) => {
                    hart.set_x(rd, extend(value, access.size, signed));
                    retire(hart, access.len);
                    Resume::Continue
                }
                Err(MmioError::Unsupported) => {
                    hart.raise(Exception::LoadAccessFault, access.addr);
                    Resume::Continue
                }
            },
            MmioKind::Store { value } => match platform.mmio_write(access.addr, access.size, value) {
                Ok(request) => {
                    retire(hart, access.len);
                    request.map_or(Resume::Continue, Resume::Machine)
                }
                Err(MmioError::Unsupported) => {
                    hart.raise(Exception::StoreAccessFault, access.addr);
                    Resume::Continue
                }
            },
        }
    }
}

/// SRET is legal in M-mode, and in S-mode unless `mstatus.TSR` traps it.
fn sret_allowed(hart: &Hart) -> bool {
    hart.config.extensions & crate::isa::csr::misa::ext(b'S') != 0
        && match hart.privilege {
            Privilege::Machine => true,
            Privilege::Supervisor => hart.csrs.mstatus & mstatus::TSR == 0,
            Privilege::User => false,
        }
}

/// WFI is legal in M-mode, and in S-mode unless `mstatus.TW` traps it. In U-mode it traps (the spec allows
/// this whenever a more privileged mode exists).
fn wfi_allowed(hart: &Hart) -> bool {
    match hart.privilege {
        Privilege::Machine => true,
        Privilege::Supervisor => hart.csrs.mstatus & mstatus::TW == 0,
        Privilege::User => false,
    }
}

/// SFENCE.VMA is legal in M-mode, and in S-mode unless `mstatus.TVM` traps it.
fn sfence_allowed(hart: &Hart) -> bool {
    hart.config.extensions & crate::isa::csr::misa::ext(b'S') != 0
        && match hart.privilege {
            Privilege::Machine => true,
            Privilege::Supervisor => hart.csrs.mstatus & mstatus::TVM == 0,
            Privilege::User => false,
        }
}

/// Counts an instruction that sets the pc itself (an xRET) as retired.
fn retire_in_place(hart: &mut Hart) {
    hart.instret = hart.instret.wrapping_add(1);
}

fn retire(hart: &mut Hart, len: u8) {
    hart.pc = hart.pc.wrapping_add(len as u64);
    hart.instret = hart.instret.wrapping_add(1);
}

/// Zicsr semantics: which of the read and the write happen, in which order against retirement.
fn csr_instruction(
    hart: &mut Hart,
    platform: &mut impl Platform,
    op: CsrOp,
    rd: Reg,
    src: u8,
    csr: u16,
) -> Result<(), crate::hart::CsrAccessError> {
    let operand = if op.is_immediate() { src as u64 } else { hart.x(src) };
    // CSRRW with rd = x0 does not read; CSRRS/CSRRC with a zero source register or immediate do not write.
    let reads = !matches!(op, CsrOp::Rw | CsrOp::Rwi) || rd != 0;
    let writes = matches!(op, CsrOp::Rw | CsrOp::Rwi) || src != 0;
    let time = platform.time();
    if writes && crate::isa::csr::is_read_only(csr) {
        return Err(crate::hart::CsrAccessError);
    }
    // Even a CSRRW that discards the old value must name an accessible CSR, so the read always happens.
    let old = hart.read_csr(csr, time)?;
    // CSRRS/CSRRC modify only the software-writable bits (mip.SEIP is also driven by the PLIC).
    let base = hart.read_modify_write_base(csr).unwrap_or(old);
    // The instruction retires before its write lands, so a write to minstret is what the next one reads.
    hart.instret = hart.instret.wrapping_add(1);
    if writes {
        let new = match op {
            CsrOp::Rw | CsrOp::Rwi => operand,
            CsrOp::Rs | CsrOp::Rsi => base | operand,
            CsrOp::Rc | CsrOp::Rci => base & !operand,
        };
        match hart.write_csr(csr, new) {
            Ok(effect) if effect.translation_changed => platform.flush_translations(FlushScope::All),
            Ok(_) => {}
            Err(error) => {
                hart.instret = hart.instret.wrapping_sub(1);
                return Err(error);
            }
        }
    }
    if reads {
        hart.set_x(rd, old);
    }
    Ok(())
}

/// Zero- or sign-extends the low `size` bytes of `value`.
pub fn extend(value: u64, size: u8, signed: bool) -> u64 {
    let bits = (size as u32).clamp(1, 8) * 8;
    if bits == 64 {
        value
    } else if signed {
        let shift = 64 - bits;
        (((value << shift) as i64) >> shift) as u64
    } else {
        value & ((1u64 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::HartConfig;
    use crate::isa::csr::{interrupt, mstatus};

    struct NoDevices;

    impl Platform for NoDevices {
        fn mmio_read(&mut self, _addr: u64, _size: u8) -> Result<u64, MmioError> {
            Err(MmioError::Unsupported)
        }
        fn mmio_write(&mut self, _addr: u64, _size: u8, _value: u64) -> Result<Option<MachineRequest>, MmioError> {
            Err(MmioError::Unsupported)
        }
        fn time(&mut self) -> u64 {
            0
        }
    }

    fn wfi(hart: &mut Hart) -> Resume {
        let exit = Exit::System { inst: Inst::Wfi, word: 0x1050_0073, len: 4 };
        Dispatcher::new().dispatch(exit, hart, &mut NoDevices)
    }

    /// riscv-tests' rv64si-p-wfi: `wfi` with SSIP pending and enabled in `sie` but SIE clear must not stall; a
    /// pending interrupt that `mie` disables does not end the wait (QEMU's rule; OpenSBI's parked harts need it).
    #[test]
    fn wfi_waits_unless_a_locally_enabled_interrupt_is_pending() {
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.pc = 0x8000_0000;
        assert_eq!(wfi(&mut hart), Resume::WaitForInterrupt);
        assert_eq!((hart.pc, hart.instret), (0x8000_0004, 1), "wfi retires");
        hart.csrs.mip = interrupt::SSI;
        assert_eq!(wfi(&mut hart), Resume::WaitForInterrupt, "a pending interrupt that mie disables is no wake-up");
        hart.csrs.mie = interrupt::SSI;
        assert_eq!(hart.csrs.mstatus & (mstatus::MIE | mstatus::SIE), 0);
        assert_eq!(wfi(&mut hart), Resume::Continue, "an enabled one ends the wait, globally masked or not");
        assert_eq!((hart.pc, hart.instret), (0x8000_000c, 3));
        hart.csrs.mip = 0;
        hart.interrupt_lines = interrupt::MTI;
        assert_eq!(wfi(&mut hart), Resume::WaitForInterrupt, "the timer line with MTIE clear");
        hart.csrs.mie = interrupt::MTI;
        assert_eq!(wfi(&mut hart), Resume::Continue, "a device line counts too");
    }

    /// A debugger stop is the debugger's business: the dispatcher leaves the hart exactly as it was.
    #[test]
    fn a_debug_exit_changes_nothing() {
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.pc = 0x8000_0000;
        let before = hart.clone();
        let exit = Exit::Debug(crate::debug::DebugStop::SoftwareBreakpoint);
        assert_eq!(Dispatcher::new().dispatch(exit, &mut hart, &mut NoDevices), Resume::Continue);
        assert_eq!(hart, before);
    }
}
