//! One virtual hart: integer and floating-point registers, pc, privilege mode, the CSR file with its WARL rules,
//! the counters, and trap delivery (exceptions and interrupts, `mret`).
//!
//! The hart knows nothing of engines or devices: engines execute instructions against it, the dispatcher
//! (`trap`) calls [`Hart::read_csr`], [`Hart::write_csr`], [`Hart::take_trap`] and [`Hart::mret`]. Every method
//! here accepts any value a guest can produce without panicking.

use crate::debug::Triggers;
use crate::fpu::FpState;
use crate::isa::csr::{self, interrupt, mstatus, tvec};
use crate::mem::pmp::Pmp;

/// Privilege mode of the virtual hart, with its encoding in `mstatus.MPP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Privilege {
    User = 0,
    Supervisor = 1,
    Machine = 3,
}

impl Privilege {
    /// The mode an `xPP` field encodes, or `None` for the reserved encoding 2.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits & 3 {
            0 => Some(Privilege::User),
            1 => Some(Privilege::Supervisor),
            3 => Some(Privilege::Machine),
            _ => None,
        }
    }
}

/// Synchronous exception causes (`mcause` with the interrupt bit clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Exception {
    InstructionMisaligned = 0,
    InstructionAccessFault = 1,
    IllegalInstruction = 2,
    Breakpoint = 3,
    LoadMisaligned = 4,
    LoadAccessFault = 5,
    StoreMisaligned = 6,
    StoreAccessFault = 7,
    EcallFromU = 8,
    EcallFromS = 9,
    EcallFromM = 11,
    InstructionPageFault = 12,
    LoadPageFault = 13,
    StorePageFault = 15,
}

impl Exception {
    /// The exception an `mcause` code names, or `None` for a reserved or interrupt code.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Exception::InstructionMisaligned,
            1 => Exception::InstructionAccessFault,
            2 => Exception::IllegalInstruction,
            3 => Exception::Breakpoint,
            4 => Exception::LoadMisaligned,
            5 => Exception::LoadAccessFault,
            6 => Exception::StoreMisaligned,
            7 => Exception::StoreAccessFault,
            8 => Exception::EcallFromU,
            9 => Exception::EcallFromS,
            11 => Exception::EcallFromM,
            12 => Exception::InstructionPageFault,
            13 => Exception::LoadPageFault,
            15 => Exception::StorePageFault,
            _ => return None,
        })
    }

    /// The environment call exception raised by `ecall` in `mode`.
    pub const fn ecall_from(mode: Privilege) -> Self {
        match mode {
            Privilege::User => Exception::EcallFromU,
            Privilege::Supervisor => Exception::EcallFromS,
            Privilege::Machine => Exception::EcallFromM,
        }
    }
}

/// Interrupt bit of `mcause`/`scause`.
pub const CAUSE_INTERRUPT: u64 = 1 << 63;

/// Static description of the hart: what `misa` and the information CSRs report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HartConfig {
    pub hart_id: u64,
    /// Extensions as `misa` bits (see [`csr::misa::ext`]).
    pub extensions: u64,
}

impl HartConfig {
    /// RV64IMAC with user mode only: the profile of the foundation's M-mode test programs.
    pub const fn rv64imac_mu(hart_id: u64) -> Self {
        use csr::misa::ext;
        Self { hart_id, extensions: ext(b'I') | ext(b'M') | ext(b'A') | ext(b'C') | ext(b'U') }
    }

    /// RV64IMAC with supervisor and user modes.
    pub const fn rv64imac_msu(hart_id: u64) -> Self {
        use csr::misa::ext;
        Self { hart_id, extensions: Self::rv64imac_mu(hart_id).extensions | ext(b'S') }
    }

    /// RV64GC (IMAFDC, Zicsr, Zifencei) with supervisor and user modes: QEMU `virt`'s harts.
    pub const fn rv64gc(hart_id: u64) -> Self {
        use csr::misa::ext;
        Self { hart_id, extensions: Self::rv64imac_msu(hart_id).extensions | ext(b'F') | ext(b'D') }
    }

    fn has(&self, letter: u8) -> bool {
        self.extensions & csr::misa::ext(letter) != 0
    }
}

/// The CSR state of the hart. Fields hold the architectural value; WARL rules are applied on write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Csrs {
    pub mstatus: u64,
    pub mtvec: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// The software-writable pending bits (SSIP, STIP, SEIP). `mip` reads them ORed with
    /// [`Hart::interrupt_lines`].
    pub mip: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub mcounteren: u64,
    pub menvcfg: u64,
    pub stvec: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub satp: u64,
    pub scounteren: u64,
    pub senvcfg: u64,
}

/// `satp` fields.
pub mod satp {
    pub const MODE_SHIFT: u32 = 60;
    pub const MODE_BARE: u64 = 0;
    pub const MODE_SV39: u64 = 8;
    pub const ASID_SHIFT: u32 = 44;
    /// 16 ASID bits are implemented.
    pub const ASID_MASK: u64 = 0xffff << ASID_SHIFT;
    pub const PPN_MASK: u64 = (1 << 44) - 1;
}

/// Exceptions that `medeleg` may delegate: all but the environment call from M-mode.
const DELEGABLE_EXCEPTIONS: u64 = 0xb3ff;
/// Interrupts that `mideleg` may delegate: the supervisor-level ones.
const DELEGABLE_INTERRUPTS: u64 = interrupt::SSI | interrupt::STI | interrupt::SEI;
/// `sstatus` is this view of `mstatus`.
const SSTATUS_MASK: u64 = mstatus::SIE
    | mstatus::SPIE
    | mstatus::UBE
    | mstatus::SPP
    | mstatus::VS
    | mstatus::FS
    | mstatus::XS
    | mstatus::SUM
    | mstatus::MXR
    | mstatus::UXL
    | mstatus::SD;

/// What a CSR write may have changed beyond the CSR itself, for the caller's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CsrWriteEffect {
    /// `satp` or a field that changes how addresses translate (MPRV, MPP, SUM, MXR) was written: cached
    /// translations must be dropped.
    pub translation_changed: bool,
}

/// One virtual hart.
#[derive(Debug, Clone, PartialEq)]
pub struct Hart {
    /// Integer registers; `x[0]` is always zero (engines write through [`Hart::set_x`]).
    pub x: [u64; 32],
    /// Floating-point registers (raw bits, NaN-boxed singles) and `fcsr`.
    pub fp: FpState,
    pub pc: u64,
    pub privilege: Privilege,
    pub csrs: Csrs,
    /// Physical memory protection entries.
    pub pmp: Pmp,
    /// Interrupt request lines driven by the machine's devices (MSIP, MTIP, MEIP, SEIP bits of `mip`).
    pub interrupt_lines: u64,
    /// Instructions retired (`minstret`). Engines add to it as they retire instructions.
    pub instret: u64,
    /// `mcycle` minus `instret`: the model retires one instruction per cycle, so only the offset a guest write
    /// introduced is stored.
    pub cycle_offset: u64,
    /// The LR reservation, if one is held.
    pub reservation: Option<Reservation>,
    /// Traps taken (interrupts and exceptions), counted by [`Hart::take_trap`]: not architectural, it tells the
    /// VM that the dispatcher injected one, for a host that logs every trap (QEMU's `-d int`).
    pub traps_taken: u64,
    /// Debug triggers (`tselect`, `tdata1..3`, `tinfo`, `tcontrol`) and the host debugger's breakpoints.
    pub triggers: Triggers,
    pub config: HartConfig,
}

/// A load reservation: the address LR read and the value it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub addr: u64,
    pub value: u64,
}

/// Why a CSR access is refused. The dispatcher turns it into an illegal-instruction exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrAccessError;

impl Hart {
    pub fn new(config: HartConfig) -> Self {
        let mut hart = Self {
            x: [0; 32],
            fp: FpState::new(),
            pc: 0,
            privilege: Privilege::Machine,
            csrs: Csrs::default(),
            pmp: Pmp::default(),
            interrupt_lines: 0,
            instret: 0,
            cycle_offset: 0,
            reservation: None,
            traps_taken: 0,
            triggers: Triggers::new(config.has(b'S'), config.has(b'U')),
            config,
        };
        hart.reset(0);
        hart
    }

    /// Resets the architectural state and puts the pc at `reset_pc`, in M-mode.
    pub fn reset(&mut self, reset_pc: u64) {
        self.x = [0; 32];
        self.fp = FpState::new();
        self.pc = reset_pc;
        self.privilege = Privilege::Machine;
        self.csrs = Csrs::default();
        self.pmp = Pmp::default();
        if self.config.has(b'U') {
            self.csrs.mstatus |= 2 << mstatus::UXL_SHIFT;
        }
        if self.config.has(b'S') {
            self.csrs.mstatus |= 2 << mstatus::SXL_SHIFT;
        }
        self.interrupt_lines = 0;
        self.instret = 0;
        self.cycle_offset = 0;
        self.reservation = None;
        self.triggers.reset();
    }

    /// Integer register `r` (only the low five bits are used, so any value is safe).
    #[inline(always)]
    pub fn x(&self, r: u8) -> u64 {
        self.x[(r & 31) as usize]
    }

    /// Writes integer register `r`; writes to `x0` are discarded.
    #[inline(always)]
    pub fn set_x(&mut self, r: u8, value: u64) {
        if r != 0 {
            self.x[(r & 31) as usize] = value;
        }
    }

    /// `misa` as the guest reads it.
    pub fn misa(&self) -> u64 {
        csr::misa::MXL_64 | self.config.extensions
    }

    /// `mcycle`.
    pub fn cycle(&self) -> u64 {
        self.instret.wrapping_add(self.cycle_offset)
    }

    /// `mip` as the guest reads it: software-written bits ORed with the devices' lines.
    pub fn mip(&self) -> u64 {
        self.csrs.mip | self.interrupt_lines
    }

    fn has_supervisor(&self) -> bool {
        self.config.has(b'S')
    }

    /// Reads CSR `number` as an instruction in the current mode would. `time` is the current value of the
    /// machine timer (`mtime`), which the hart does not own.
    pub fn read_csr(&self, number: u16, time: u64) -> Result<u64, CsrAccessError> {
        self.check_access(number)?;
        let supervisor = self.has_supervisor();
        use csr::*;
        let value = match number {
            CYCLE | TIME | INSTRET | HPMCOUNTER3..=HPMCOUNTER31 => {
                self.check_counter_enabled(number)?;
                match number {
                    CYCLE => self.cycle(),
                    TIME => time,
                    INSTRET => self.instret,
                    _ => 0,
                }
            }
            FFLAGS | FRM | FCSR => {
                self.check_fp_enabled()?;
                match number {
                    FFLAGS => self.fp.fflags(),
                    FRM => self.fp.frm(),
                    _ => self.fp.fcsr(),
                }
            }
            SSTATUS if supervisor => self.mstatus() & SSTATUS_MASK,
            SIE if supervisor => self.csrs.mie & self.csrs.mideleg,
            SIP if supervisor => self.mip() & self.csrs.mideleg,
            STVEC if supervisor => self.csrs.stvec,
            SCOUNTEREN if supervisor => self.csrs.scounteren,
            SENVCFG if supervisor => self.csrs.senvcfg,
            SSCRATCH if supervisor => self.csrs.sscratch,
            SEPC if supervisor => self.csrs.sepc,
            SCAUSE if supervisor => self.csrs.scause,
            STVAL if supervisor => self.csrs.stval,
            SATP if supervisor => {
                self.check_satp_access()?;
                self.csrs.satp
            }
            MVENDORID | MARCHID | MIMPID | MCONFIGPTR => 0,
            MHARTID => self.config.hart_id,
            MSTATUS => self.mstatus(),
            MISA => self.misa(),
            MEDELEG if supervisor => self.csrs.medeleg,
            MIDELEG if supervisor => self.csrs.mideleg,
            MIE => self.csrs.mie,
            MIP => self.mip(),
            MTVEC => self.csrs.mtvec,
            MSCRATCH => self.csrs.mscratch,
            MEPC => self.csrs.mepc,
            MCAUSE => self.csrs.mcause,
            MTVAL => self.csrs.mtval,
            MCOUNTEREN if self.config.has(b'U') => self.csrs.mcounteren,
            MENVCFG if self.config.has(b'U') => self.csrs.menvcfg,
            PMPCFG0..=PMPCFG15 => self.pmp.read_cfg((number - PMPCFG0) as usize).ok_or(CsrAccessError)?,
            PMPADDR0..=PMPADDR63 => self.pmp.read_addr((number - PMPADDR0) as usize).ok_or(CsrAccessError)?,
            MCOUNTINHIBIT => 0,
            MCYCLE => self.cycle(),
            MINSTRET => self.instret,
            MHPMCOUNTER3..=MHPMCOUNTER31 | MHPMEVENT3..=MHPMEVENT31 => 0,
            TSELECT..=TCONTROL => self.triggers.read_csr(number).ok_or(CsrAccessError)?,
            _ => return Err(CsrAccessError),
        };
        Ok(value)
    }

    /// The value a CSRRS/CSRRC of `number` sets or clears bits in, when it differs from what the CSR reads:
    /// for `mip` only the software-writable bits take part, not the device lines ORed into reads (the
    /// privileged specification says so for SEIP), so a read-modify-write never latches a device's line.
    pub fn read_modify_write_base(&self, number: u16) -> Option<u64> {
        (number == csr::MIP).then_some(self.csrs.mip)
    }

    /// Writes CSR `number` as an instruction in the current mode would, applying its WARL rules.
    pub fn write_csr(&mut self, number: u16, value: u64) -> Result<CsrWriteEffect, CsrAccessError> {
        self.check_access(number)?;
        if csr::is_read_only(number) {
            return Err(CsrAccessError);
        }
        let supervisor = self.has_supervisor();
        let mut effect = CsrWriteEffect::default();
        use csr::*;
        match number {
            FFLAGS | FRM | FCSR => {
                self.check_fp_enabled()?;
                match number {
                    FFLAGS => self.fp.set_fflags(value),
                    FRM => self.fp.set_frm(value),
                    _ => self.fp.set_fcsr(value),
                }
                self.mark_fp_dirty();
            }
            SSTATUS if supervisor => {
                let status = (self.csrs.mstatus & !SSTATUS_MASK) | (value & SSTATUS_MASK);
                effect.translation_changed = self.write_mstatus(status);
            }
            SIE if supervisor => {
                let writable = self.csrs.mideleg & DELEGABLE_INTERRUPTS;
                self.csrs.mie = (self.csrs.mie & !writable) | (value & writable);
            }
            // Only SSIP is writable through sip; STIP and SEIP belong to M-mode and the devices.
            SIP if supervisor => {
                let writable = self.csrs.mideleg & interrupt::SSI;
                self.csrs.mip = (self.csrs.mip & !writable) | (value & writable);
            }
            STVEC if supervisor => self.csrs.stvec = legal_tvec(value, self.csrs.stvec),
            SCOUNTEREN if supervisor => self.csrs.scounteren = value & 0xffff_ffff,
            SENVCFG if supervisor => self.csrs.senvcfg = value & 1,
            SSCRATCH if supervisor => self.csrs.sscratch = value,
            SEPC if supervisor => self.csrs.sepc = value & !1,
            SCAUSE if supervisor => self.csrs.scause = value,
            STVAL if supervisor => self.csrs.stval = value,
            SATP if supervisor => {
                self.check_satp_access()?;
                // A write selecting an unsupported mode has no effect at all.
                let mode = value >> satp::MODE_SHIFT;
                if mode == satp::MODE_BARE || mode == satp::MODE_SV39 {
                    self.csrs.satp = value & ((0xf << satp::MODE_SHIFT) | satp::ASID_MASK | satp::PPN_MASK);
                    effect.translation_changed = true;
                }
            }
            MSTATUS => effect.translation_changed = self.write_mstatus(value),
            MISA => {} // WARL: the extension set is fixed.
            MEDELEG if supervisor => self.csrs.medeleg = value & DELEGABLE_EXCEPTIONS,
            MIDELEG if supervisor => self.csrs.mideleg = value & DELEGABLE_INTERRUPTS,
            MIE => self.csrs.mie = value & self.implemented_interrupts(),
            // M-mode may raise the supervisor-level interrupts by software; the M-level bits are device lines.
            MIP if supervisor => self.csrs.mip = value & DELEGABLE_INTERRUPTS,
            MIP => {}
            MTVEC => self.csrs.mtvec = legal_tvec(value, self.csrs.mtvec),
            MSCRATCH => self.csrs.mscratch = value,
            // IALIGN is 16 (C is always implemented), so only bit 0 is hardwired to zero.
            MEPC => self.csrs.mepc = value & !1,
            MCAUSE => self.csrs.mcause = value,
            MTVAL => self.csrs.mtval = value,
            MCOUNTEREN if self.config.has(b'U') => self.csrs.mcounteren = value & 0xffff_ffff,
            // Only FIOM is implemented (no cache-block or page-attribute extensions).
            MENVCFG if self.config.has(b'U') => self.csrs.menvcfg = value & 1,
            PMPCFG0..=PMPCFG15 => {
                self.pmp.write_cfg((number - PMPCFG0) as usize, value).ok_or(CsrAccessError)?;
                effect.translation_changed = true;
            }
            PMPADDR0..=PMPADDR63 => {
                self.pmp.write_addr((number - PMPADDR0) as usize, value).ok_or(CsrAccessError)?;
                effect.translation_changed = true;
            }
            MCOUNTINHIBIT | MHPMCOUNTER3..=MHPMCOUNTER31 | MHPMEVENT3..=MHPMEVENT31 => {}
            MCYCLE => self.cycle_offset = value.wrapping_sub(self.instret),
            MINSTRET => {
                self.cycle_offset = self.cycle().wrapping_sub(value);
                self.instret = value;
            }
            TSELECT..=TCONTROL => self.triggers.write_csr(number, value).ok_or(CsrAccessError)?,
            _ => return Err(CsrAccessError),
        }
        Ok(effect)
    }

    /// Reads CSR `number` for a debugger: as an instruction in M-mode would, whatever mode the hart is in, and
    /// the FP CSRs even while `mstatus.FS` is Off. Changes nothing. `None`: no such CSR.
    pub fn debug_read_csr(&self, number: u16, time: u64) -> Option<u64> {
        match number {
            csr::FFLAGS => Some(self.fp.fflags()),
            csr::FRM => Some(self.fp.frm()),
            csr::FCSR => Some(self.fp.fcsr()),
            _ if self.privilege == Privilege::Machine => self.read_csr(number, time).ok(),
            _ => {
                let mut machine = self.clone();
                machine.privilege = Privilege::Machine;
                machine.read_csr(number, time).ok()
            }
        }
    }

    /// Writes CSR `number` for a debugger: as an instruction in M-mode would (WARL rules apply, read-only CSRs
    /// refuse), whatever mode the hart is in; the FP CSRs are written even while `mstatus.FS` is Off, and leave
    /// `mstatus.FS` as it was.
    pub fn debug_write_csr(&mut self, number: u16, value: u64) -> Result<CsrWriteEffect, CsrAccessError> {
        match number {
            csr::FFLAGS => self.fp.set_fflags(value),
            csr::FRM => self.fp.set_frm(value),
            csr::FCSR => self.fp.set_fcsr(value),
            _ => {
                let privilege = core::mem::replace(&mut self.privilege, Privilege::Machine);
                let result = self.write_csr(number, value);
                self.privilege = privilege;
                return result;
            }
        }
        Ok(CsrWriteEffect::default())
    }

    /// `mstatus` with its derived SD bit.
    pub fn mstatus(&self) -> u64 {
        let status = self.csrs.mstatus;
        let dirty = status & mstatus::FS == mstatus::FS || status & mstatus::XS == mstatus::XS;
        if dirty {
            status | mstatus::SD
        } else {
            status
        }
    }

    /// Applies a write to `mstatus`; true when a field that affects translation changed.
    fn write_mstatus(&mut self, value: u64) -> bool {
        let mut writable = mstatus::MIE | mstatus::MPIE | mstatus::MPP;
        if self.config.has(b'U') {
            writable |= mstatus::MPRV | mstatus::TW;
        }
        if self.has_supervisor() {
            writable |= mstatus::SIE | mstatus::SPIE | mstatus::SPP | mstatus::SUM | mstatus::MXR;
            writable |= mstatus::TVM | mstatus::TSR;
        }
        if self.config.has(b'F') || self.config.has(b'D') {
            writable |= mstatus::FS;
        }
        let old = self.csrs.mstatus;
        let mut new = (old & !writable) | (value & writable);
        // MPP is WARL over the implemented modes: an unimplemented one leaves the field as it was.
        if !self.mode_implemented(Privilege::from_bits(new >> mstatus::MPP_SHIFT)) {
            new = (new & !mstatus::MPP) | (old & mstatus::MPP);
        }
        self.csrs.mstatus = new & !mstatus::SD;
        let translation = mstatus::MPRV | mstatus::MPP | mstatus::SUM | mstatus::MXR;
        (old ^ new) & translation != 0
    }

    fn mode_implemented(&self, mode: Option<Privilege>) -> bool {
        match mode {
            Some(Privilege::Machine) => true,
            Some(Privilege::Supervisor) => self.has_supervisor(),
            Some(Privilege::User) => self.config.has(b'U'),
            None => false,
        }
    }

    fn implemented_interrupts(&self) -> u64 {
        let machine = interrupt::MSI | interrupt::MTI | interrupt::MEI;
        if self.has_supervisor() {
            machine | DELEGABLE_INTERRUPTS
        } else {
            machine
        }
    }

    /// Privilege check by CSR number: the mode must be at least the CSR's level.
    fn check_access(&self, number: u16) -> Result<(), CsrAccessError> {
        if (self.privilege as u8) < csr::min_privilege(number) {
            Err(CsrAccessError)
        } else {
            Ok(())
        }
    }

    /// Whether floating-point instructions and CSRs may be used: F is implemented and `mstatus.FS` is not Off.
    pub fn fp_enabled(&self) -> bool {
        self.config.has(b'F') && self.csrs.mstatus & mstatus::FS != 0
    }

    fn check_fp_enabled(&self) -> Result<(), CsrAccessError> {
        if self.fp_enabled() {
            Ok(())
        } else {
            Err(CsrAccessError)
        }
    }

    /// Records that floating-point state changed (`mstatus.FS` = Dirty).
    #[inline(always)]
    pub fn mark_fp_dirty(&mut self) {
        self.csrs.mstatus |= mstatus::FS;
    }

    /// `satp` is out of S-mode's reach while `mstatus.TVM` is set.
    fn check_satp_access(&self) -> Result<(), CsrAccessError> {
        if self.privilege == Privilege::Supervisor && self.csrs.mstatus & mstatus::TVM != 0 {
            Err(CsrAccessError)
        } else {
            Ok(())
        }
    }

    /// The unprivileged counters are readable below M-mode only when `mcounteren` (and, from U-mode with
    /// S-mode present, `scounteren`) allows it.
    fn check_counter_enabled(&self, number: u16) -> Result<(), CsrAccessError> {
        let bit = 1u64 << ((number - csr::CYCLE) & 31);
        let allowed = match self.privilege {
            Privilege::Machine => true,
            Privilege::Supervisor => self.csrs.mcounteren & bit != 0,
            Privilege::User => {
                self.csrs.mcounteren & bit != 0 && (!self.has_supervisor() || self.csrs.scounteren & bit != 0)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(CsrAccessError)
        }
    }

    /// Takes a trap: an exception (`interrupt` false) with `code` and `tval`, or an interrupt with `code`, to
    /// S-mode when the hart is below M-mode and `medeleg`/`mideleg` delegates it, to M-mode otherwise. The pc
    /// of the interrupted or trapping instruction must already be in `self.pc`.
    pub fn take_trap(&mut self, interrupt: bool, code: u64, tval: u64) {
        let cause = if interrupt { CAUSE_INTERRUPT | code } else { code };
        let delegation = if interrupt { self.csrs.mideleg } else { self.csrs.medeleg };
        let delegated = self.privilege != Privilege::Machine && code < 64 && delegation & (1 << code) != 0;
        let status = self.csrs.mstatus;
        let tvec = if delegated {
            self.csrs.sepc = self.pc & !1;
            self.csrs.scause = cause;
            self.csrs.stval = tval;
            let mut new = status & !(mstatus::SPIE | mstatus::SIE | mstatus::SPP);
            if status & mstatus::SIE != 0 {
                new |= mstatus::SPIE;
            }
            if self.privilege == Privilege::Supervisor {
                new |= mstatus::SPP;
            }
            self.csrs.mstatus = new;
            self.privilege = Privilege::Supervisor;
            self.csrs.stvec
        } else {
            self.csrs.mepc = self.pc & !1;
            self.csrs.mcause = cause;
            self.csrs.mtval = tval;
            let mut new = status & !(mstatus::MPIE | mstatus::MIE | mstatus::MPP);
            if status & mstatus::MIE != 0 {
                new |= mstatus::MPIE;
            }
            new |= (self.privilege as u64) << mstatus::MPP_SHIFT;
            self.csrs.mstatus = new;
            self.privilege = Privilege::Machine;
            self.triggers.trap_to_machine();
            self.csrs.mtvec
        };
        self.reservation = None;
        self.traps_taken = self.traps_taken.wrapping_add(1);
        let base = tvec & !tvec::MODE_MASK;
        self.pc =
            if interrupt && tvec & tvec::MODE_MASK == tvec::VECTORED { base.wrapping_add(4 * code) } else { base };
    }

    /// Injects a synchronous exception at the current pc.
    pub fn raise(&mut self, exception: Exception, tval: u64) {
        self.take_trap(false, exception as u64, tval);
    }

    /// `mret`: return to the mode in `mstatus.MPP`, restoring MIE from MPIE.
    pub fn mret(&mut self) {
        let status = self.csrs.mstatus;
        let previous = Privilege::from_bits(status >> mstatus::MPP_SHIFT).unwrap_or(Privilege::User);
        let mut new = status & !(mstatus::MIE | mstatus::MPP);
        if status & mstatus::MPIE != 0 {
            new |= mstatus::MIE;
        }
        new |= mstatus::MPIE;
        // MPP is set to the least-privileged supported mode.
        if !self.config.has(b'U') {
            new |= mstatus::MPP;
        }
        if previous != Privilege::Machine {
            new &= !mstatus::MPRV;
        }
        self.csrs.mstatus = new;
        self.privilege = previous;
        self.triggers.mret();
        self.pc = self.csrs.mepc;
    }

    /// `sret`: return to the mode in `mstatus.SPP`, restoring SIE from SPIE.
    pub fn sret(&mut self) {
        let status = self.csrs.mstatus;
        let previous = if status & mstatus::SPP != 0 { Privilege::Supervisor } else { Privilege::User };
        let mut new = status & !(mstatus::SIE | mstatus::SPP | mstatus::MPRV);
        if status & mstatus::SPIE != 0 {
            new |= mstatus::SIE;
        }
        new |= mstatus::SPIE;
        self.csrs.mstatus = new;
        self.privilege = previous;
        self.pc = self.csrs.sepc;
    }

    /// The interrupts that are pending and enabled in `mie`, whether or not the current mode masks them: what
    /// wakes a hart from `wfi`.
    pub fn wake_up_pending(&self) -> bool {
        self.mip() & self.csrs.mie != 0
    }

    /// The highest-priority interrupt that is pending, enabled and not masked in the current mode, as a cause
    /// code. M-level interrupts (not delegated) preempt any lower mode and M-mode with MIE set; delegated ones
    /// preempt U-mode and S-mode with SIE set, never M-mode.
    pub fn pending_interrupt(&self) -> Option<u64> {
        let pending = self.mip() & self.csrs.mie;
        if pending == 0 {
            return None;
        }
        let status = self.csrs.mstatus;
        let machine_enabled = self.privilege != Privilege::Machine || status & mstatus::MIE != 0;
        let supervisor_enabled = match self.privilege {
            Privilege::User => true,
            Privilege::Supervisor => status & mstatus::SIE != 0,
            Privilege::Machine => false,
        };
        let machine = if machine_enabled { pending & !self.csrs.mideleg } else { 0 };
        let supervisor = if supervisor_enabled { pending & self.csrs.mideleg } else { 0 };
        // Priority order of the privileged specification: MEI, MSI, MTI, SEI, SSI, STI; M-level first.
        const ORDER: [u64; 6] = [11, 3, 7, 9, 1, 5];
        let first = |set: u64| ORDER.into_iter().find(|&code| set & (1 << code) != 0);
        first(machine).or_else(|| first(supervisor))
    }
}

/// `mtvec`/`stvec` WARL: modes 2 and 3 are reserved, and a write selecting one keeps the old mode.
fn legal_tvec(value: u64, old: u64) -> u64 {
    let mode = match value & tvec::MODE_MASK {
        mode @ (tvec::DIRECT | tvec::VECTORED) => mode,
        _ => old & tvec::MODE_MASK,
    };
    (value & !tvec::MODE_MASK) | mode
}

mod snapshot;

#[cfg(test)]
mod tests {
    use super::*;

    fn hart() -> Hart {
        Hart::new(HartConfig::rv64imac_mu(0))
    }

    #[test]
    fn mstatus_mpp_rejects_unimplemented_modes() {
        let mut hart = hart();
        hart.write_csr(csr::MSTATUS, 3 << mstatus::MPP_SHIFT).unwrap();
        hart.write_csr(csr::MSTATUS, 1 << mstatus::MPP_SHIFT).unwrap();
        assert_eq!(hart.csrs.mstatus & mstatus::MPP, mstatus::MPP, "S is not implemented: MPP keeps M");
        hart.write_csr(csr::MSTATUS, 0).unwrap();
        assert_eq!(hart.csrs.mstatus & mstatus::MPP, 0);
        assert_eq!(hart.read_csr(csr::MSTATUS, 0).unwrap() >> mstatus::UXL_SHIFT & 3, 2, "UXL reads 64-bit");
    }

    #[test]
    fn trap_and_mret_round_trip_privilege_and_interrupt_enable() {
        let mut hart = hart();
        hart.write_csr(csr::MTVEC, 0x8000_0100).unwrap();
        hart.csrs.mstatus |= mstatus::MPIE; // as if M-mode had MIE set before entering U
        hart.csrs.mepc = 0x8000_0400;
        hart.mret();
        assert_eq!(hart.privilege, Privilege::User);
        assert_eq!(hart.pc, 0x8000_0400);
        assert_ne!(hart.csrs.mstatus & mstatus::MIE, 0);
        hart.raise(Exception::EcallFromU, 0);
        assert_eq!(hart.privilege, Privilege::Machine);
        assert_eq!(hart.pc, 0x8000_0100);
        assert_eq!(hart.csrs.mepc, 0x8000_0400);
        assert_eq!(hart.csrs.mcause, 8);
        assert_eq!(hart.csrs.mstatus & mstatus::MIE, 0);
        assert_ne!(hart.csrs.mstatus & mstatus::MPIE, 0);
        assert_eq!(hart.csrs.mstatus & mstatus::MPP, 0, "MPP records U");
    }

    #[test]
    fn user_mode_cannot_touch_machine_csrs_or_disabled_counters() {
        let mut hart = hart();
        hart.privilege = Privilege::User;
        assert!(hart.read_csr(csr::MSTATUS, 0).is_err());
        assert!(hart.write_csr(csr::MSCRATCH, 1).is_err());
        assert!(hart.read_csr(csr::CYCLE, 0).is_err());
        hart.privilege = Privilege::Machine;
        hart.write_csr(csr::MCOUNTEREN, 0b111).unwrap();
        hart.privilege = Privilege::User;
        assert_eq!(hart.read_csr(csr::TIME, 42), Ok(42));
    }

    #[test]
    fn read_only_and_unimplemented_csrs_refuse_writes() {
        let mut hart = hart();
        assert!(hart.write_csr(csr::MHARTID, 1).is_err());
        assert!(hart.write_csr(csr::CYCLE, 1).is_err());
        assert!(hart.read_csr(csr::SATP, 0).is_err(), "no S-mode yet");
        assert!(hart.read_csr(0x7ff, 0).is_err());
    }

    #[test]
    fn counter_writes_take_effect() {
        let mut hart = hart();
        hart.instret = 100;
        hart.write_csr(csr::MCYCLE, 1000).unwrap();
        hart.write_csr(csr::MINSTRET, 5).unwrap();
        assert_eq!(hart.read_csr(csr::MINSTRET, 0), Ok(5));
        assert_eq!(hart.read_csr(csr::MCYCLE, 0), Ok(1000));
        hart.instret += 1;
        assert_eq!(hart.read_csr(csr::MCYCLE, 0), Ok(1001));
    }

    #[test]
    fn vectored_mtvec_offsets_interrupts_only() {
        let mut hart = hart();
        hart.write_csr(csr::MTVEC, 0x8000_0001).unwrap();
        hart.take_trap(true, 7, 0);
        assert_eq!(hart.pc, 0x8000_0000 + 28);
        hart.raise(Exception::IllegalInstruction, 0);
        assert_eq!(hart.pc, 0x8000_0000);
        hart.write_csr(csr::MTVEC, 0x8000_0102).unwrap();
        assert_eq!(hart.csrs.mtvec, 0x8000_0101, "reserved mode 2 keeps the old mode");
    }

    fn supervisor_hart() -> Hart {
        Hart::new(HartConfig::rv64imac_msu(0))
    }

    #[test]
    fn delegated_exceptions_from_user_mode_go_to_supervisor_mode() {
        let mut hart = supervisor_hart();
        hart.write_csr(csr::MEDELEG, u64::MAX).unwrap();
        assert_eq!(hart.csrs.medeleg & (1 << 11), 0, "ecall from M cannot be delegated");
        hart.write_csr(csr::STVEC, 0x8000_2000).unwrap();
        hart.write_csr(csr::MTVEC, 0x8000_1000).unwrap();
        hart.privilege = Privilege::User;
        hart.pc = 0x1234;
        hart.raise(Exception::LoadPageFault, 0xdead);
        assert_eq!(hart.privilege, Privilege::Supervisor);
        assert_eq!((hart.pc, hart.csrs.sepc, hart.csrs.scause, hart.csrs.stval), (0x8000_2000, 0x1234, 13, 0xdead));
        assert_eq!(hart.csrs.mstatus & mstatus::SPP, 0, "SPP records U");
        // The same exception in M-mode is never delegated.
        hart.privilege = Privilege::Machine;
        hart.raise(Exception::LoadPageFault, 0xbeef);
        assert_eq!((hart.pc, hart.csrs.mtval), (0x8000_1000, 0xbeef));
        assert_eq!(hart.csrs.mstatus & mstatus::MPP, mstatus::MPP);
    }

    #[test]
    fn sret_restores_the_previous_mode_and_interrupt_enable() {
        let mut hart = supervisor_hart();
        hart.privilege = Privilege::Supervisor;
        hart.csrs.mstatus |= mstatus::SPP | mstatus::SPIE | mstatus::MPRV;
        hart.csrs.sepc = 0x8000_0040;
        hart.sret();
        assert_eq!((hart.privilege, hart.pc), (Privilege::Supervisor, 0x8000_0040));
        let status = hart.csrs.mstatus;
        assert_ne!(status & mstatus::SIE, 0);
        assert_ne!(status & mstatus::SPIE, 0);
        assert_eq!(status & (mstatus::SPP | mstatus::MPRV), 0);
        hart.sret();
        assert_eq!(hart.privilege, Privilege::User, "SPP was cleared by the first sret");
    }

    #[test]
    fn sstatus_sie_and_sip_are_restricted_views() {
        let mut hart = supervisor_hart();
        hart.write_csr(csr::SSTATUS, u64::MAX).unwrap();
        assert_eq!(hart.csrs.mstatus & (mstatus::MIE | mstatus::MPP | mstatus::TVM), 0, "M fields untouched");
        assert_ne!(hart.csrs.mstatus & (mstatus::SIE | mstatus::SUM | mstatus::MXR), 0);
        hart.write_csr(csr::SIE, u64::MAX).unwrap();
        assert_eq!(hart.csrs.mie, 0, "nothing is delegated yet");
        hart.write_csr(csr::MIDELEG, u64::MAX).unwrap();
        assert_eq!(hart.csrs.mideleg, interrupt::SSI | interrupt::STI | interrupt::SEI);
        hart.write_csr(csr::SIE, u64::MAX).unwrap();
        assert_eq!(hart.csrs.mie, interrupt::SSI | interrupt::STI | interrupt::SEI);
        hart.write_csr(csr::SIP, u64::MAX).unwrap();
        assert_eq!(hart.mip(), interrupt::SSI, "only SSIP is writable through sip");
        hart.interrupt_lines = interrupt::MTI;
        assert_eq!(hart.read_csr(csr::SIP, 0), Ok(interrupt::SSI), "M-level bits are invisible in sip");
    }

    #[test]
    fn satp_accepts_only_bare_and_sv39_and_tvm_guards_it() {
        let mut hart = supervisor_hart();
        let sv39 = (8 << 60) | (5 << 44) | 0x80123;
        assert!(hart.write_csr(csr::SATP, sv39).unwrap().translation_changed);
        assert_eq!(hart.csrs.satp, sv39);
        hart.write_csr(csr::SATP, 9 << 60).unwrap();
        assert_eq!(hart.csrs.satp, sv39, "Sv48 is not implemented: the write has no effect");
        hart.write_csr(csr::MSTATUS, mstatus::TVM).unwrap();
        hart.privilege = Privilege::Supervisor;
        assert!(hart.read_csr(csr::SATP, 0).is_err());
        assert!(hart.write_csr(csr::SATP, 0).is_err());
    }

    #[test]
    fn a_read_modify_write_of_mip_never_latches_a_device_line() {
        let mut hart = supervisor_hart();
        hart.interrupt_lines = interrupt::SEI | interrupt::MTI;
        assert_eq!(hart.read_csr(csr::MIP, 0), Ok(interrupt::SEI | interrupt::MTI));
        let base = hart.read_modify_write_base(csr::MIP).unwrap();
        hart.write_csr(csr::MIP, base | interrupt::SSI).unwrap();
        hart.interrupt_lines = 0;
        assert_eq!(hart.mip(), interrupt::SSI, "SEIP went with the PLIC's line");
    }

    #[test]
    fn interrupt_priority_masking_and_delegation() {
        let mut hart = supervisor_hart();
        hart.write_csr(csr::MIE, u64::MAX).unwrap();
        hart.write_csr(csr::MIDELEG, interrupt::STI | interrupt::SSI | interrupt::SEI).unwrap();
        hart.interrupt_lines = interrupt::MTI;
        hart.write_csr(csr::MIP, interrupt::STI | interrupt::SSI).unwrap();
        // M-mode with MIE clear: nothing is taken, but wfi would wake.
        assert_eq!(hart.pending_interrupt(), None);
        assert!(hart.wake_up_pending());
        hart.csrs.mstatus |= mstatus::MIE;
        assert_eq!(hart.pending_interrupt(), Some(7), "delegated interrupts never preempt M-mode");
        hart.interrupt_lines = 0;
        assert_eq!(hart.pending_interrupt(), None);
        hart.privilege = Privilege::Supervisor;
        assert_eq!(hart.pending_interrupt(), None, "S-mode with SIE clear masks its own interrupts");
        hart.privilege = Privilege::User;
        assert_eq!(hart.pending_interrupt(), Some(1), "SSI outranks STI");
        hart.interrupt_lines = interrupt::MEI;
        assert_eq!(hart.pending_interrupt(), Some(11), "M-level interrupts come first");
        hart.take_trap(true, 1, 0);
        assert_eq!(hart.privilege, Privilege::Supervisor, "a delegated interrupt traps to S-mode");
        assert_eq!(hart.csrs.scause, CAUSE_INTERRUPT | 1);
    }

    #[test]
    fn a_debugger_reaches_every_csr_from_any_mode_and_keeps_the_mode() {
        let mut hart = Hart::new(HartConfig::rv64gc(3));
        hart.write_csr(csr::MTVEC, 0x8000_0100).unwrap();
        hart.privilege = Privilege::User;
        assert!(hart.read_csr(csr::MTVEC, 0).is_err(), "an instruction in U-mode may not");
        assert_eq!(hart.debug_read_csr(csr::MTVEC, 0), Some(0x8000_0100));
        assert_eq!(hart.debug_read_csr(csr::MHARTID, 0), Some(3));
        assert_eq!(hart.debug_read_csr(csr::TIME, 77), Some(77), "counters whatever mcounteren says");
        assert_eq!(hart.debug_read_csr(0x7ff, 0), None, "no such CSR");
        assert_eq!(hart.debug_write_csr(csr::MEPC, 0x8000_0203), Ok(CsrWriteEffect::default()));
        assert_eq!(hart.csrs.mepc, 0x8000_0202, "WARL rules apply");
        assert!(hart.debug_write_csr(csr::MHARTID, 9).is_err(), "read-only");
        let effect = hart.debug_write_csr(csr::SATP, 8 << 60 | 0x80010).unwrap();
        assert!(effect.translation_changed);
        assert_eq!(hart.privilege, Privilege::User, "the hart stays in its mode");

        // FP CSRs with the FPU off (FS = Off): readable and writable, and FS stays Off.
        assert!(!hart.fp_enabled());
        hart.debug_write_csr(csr::FCSR, 0b010_00001).unwrap();
        assert_eq!(hart.debug_read_csr(csr::FRM, 0), Some(0b010));
        assert_eq!(hart.debug_read_csr(csr::FFLAGS, 0), Some(1));
        assert_eq!(hart.csrs.mstatus & mstatus::FS, 0);
    }
}
