//! One virtual hart: integer and floating-point registers, pc, privilege mode, the CSR file with its WARL rules,
//! the counters, and trap delivery (exceptions and interrupts, `mret`).
//!
//! The hart knows nothing of engines or devices: engines execute instructions against it, the dispatcher
//! (`trap`) calls [`Hart::read_csr`], [`Hart::write_csr`], [`Hart::take_trap`] and [`Hart::mret`]. Every method
//! here accepts any value a guest can produce without panicking.

use crate::isa::csr::{self, interrupt, mstatus, tvec};

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
    /// RV64IMAC with user mode: what the reference interpreter implements today.
    pub const fn rv64imac_mu(hart_id: u64) -> Self {
        use csr::misa::ext;
        Self { hart_id, extensions: ext(b'I') | ext(b'M') | ext(b'A') | ext(b'C') | ext(b'U') }
    }

    fn has(&self, letter: u8) -> bool {
        self.extensions & csr::misa::ext(letter) != 0
    }
}

/// The machine-level CSR state. Fields hold the architectural value; the WARL rules are applied on write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineCsrs {
    pub mstatus: u64,
    pub mtvec: u64,
    pub mie: u64,
    /// Pending interrupts. Software-writable bits are set by CSR writes, the others by devices.
    pub mip: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub mcounteren: u64,
    pub menvcfg: u64,
}

/// One virtual hart.
#[derive(Debug, Clone)]
pub struct Hart {
    /// Integer registers; `x[0]` is always zero (engines write through [`Hart::set_x`]).
    pub x: [u64; 32],
    /// Floating-point registers as raw bits (NaN-boxed singles).
    pub f: [u64; 32],
    pub pc: u64,
    pub privilege: Privilege,
    pub csrs: MachineCsrs,
    /// Instructions retired (`minstret`). Engines add to it as they retire instructions.
    pub instret: u64,
    /// `mcycle` minus `instret`: the model retires one instruction per cycle, so only the offset a guest write
    /// introduced is stored.
    pub cycle_offset: u64,
    /// Address of the LR reservation, if one is held.
    pub reservation: Option<u64>,
    pub config: HartConfig,
}

/// Why a CSR access is refused. The dispatcher turns it into an illegal-instruction exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrAccessError;

impl Hart {
    pub fn new(config: HartConfig) -> Self {
        let mut hart = Self {
            x: [0; 32],
            f: [0; 32],
            pc: 0,
            privilege: Privilege::Machine,
            csrs: MachineCsrs::default(),
            instret: 0,
            cycle_offset: 0,
            reservation: None,
            config,
        };
        hart.reset(0);
        hart
    }

    /// Resets the architectural state and puts the pc at `reset_pc`, in M-mode.
    pub fn reset(&mut self, reset_pc: u64) {
        self.x = [0; 32];
        self.f = [0; 32];
        self.pc = reset_pc;
        self.privilege = Privilege::Machine;
        self.csrs = MachineCsrs::default();
        if self.config.has(b'U') {
            self.csrs.mstatus |= 2 << mstatus::UXL_SHIFT;
        }
        if self.config.has(b'S') {
            self.csrs.mstatus |= 2 << mstatus::SXL_SHIFT;
        }
        self.instret = 0;
        self.cycle_offset = 0;
        self.reservation = None;
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

    /// Reads CSR `number` as an instruction in the current mode would. `time` is the current value of the
    /// machine timer (`mtime`), which the hart does not own.
    pub fn read_csr(&self, number: u16, time: u64) -> Result<u64, CsrAccessError> {
        self.check_access(number)?;
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
            MVENDORID | MARCHID | MIMPID | MCONFIGPTR => 0,
            MHARTID => self.config.hart_id,
            MSTATUS => self.mstatus(),
            MISA => self.misa(),
            MIE => self.csrs.mie,
            MIP => self.csrs.mip,
            MTVEC => self.csrs.mtvec,
            MSCRATCH => self.csrs.mscratch,
            MEPC => self.csrs.mepc,
            MCAUSE => self.csrs.mcause,
            MTVAL => self.csrs.mtval,
            MCOUNTEREN if self.config.has(b'U') => self.csrs.mcounteren,
            MENVCFG if self.config.has(b'U') => self.csrs.menvcfg,
            MCOUNTINHIBIT => 0,
            MCYCLE => self.cycle(),
            MINSTRET => self.instret,
            MHPMCOUNTER3..=MHPMCOUNTER31 | MHPMEVENT3..=MHPMEVENT31 => 0,
            _ => return Err(CsrAccessError),
        };
        Ok(value)
    }

    /// Writes CSR `number` as an instruction in the current mode would, applying its WARL rules.
    pub fn write_csr(&mut self, number: u16, value: u64) -> Result<(), CsrAccessError> {
        self.check_access(number)?;
        if csr::is_read_only(number) {
            return Err(CsrAccessError);
        }
        use csr::*;
        match number {
            MSTATUS => self.write_mstatus(value),
            MISA => {} // WARL: the extension set is fixed.
            MIE => self.csrs.mie = value & self.implemented_interrupts(),
            // The M-level pending bits are driven by devices; no software-writable bit exists without S-mode.
            MIP => {}
            MTVEC => {
                // Modes 2 and 3 are reserved: a write selecting one leaves the mode as it was.
                let mode = match value & tvec::MODE_MASK {
                    mode @ (tvec::DIRECT | tvec::VECTORED) => mode,
                    _ => self.csrs.mtvec & tvec::MODE_MASK,
                };
                self.csrs.mtvec = (value & !tvec::MODE_MASK) | mode;
            }
            MSCRATCH => self.csrs.mscratch = value,
            // IALIGN is 16 (C is always implemented), so only bit 0 is hardwired to zero.
            MEPC => self.csrs.mepc = value & !1,
            MCAUSE => self.csrs.mcause = value,
            MTVAL => self.csrs.mtval = value,
            MCOUNTEREN if self.config.has(b'U') => self.csrs.mcounteren = value & 0xffff_ffff,
            // Only FIOM is implemented (no cache-block or page-attribute extensions).
            MENVCFG if self.config.has(b'U') => self.csrs.menvcfg = value & 1,
            MCOUNTINHIBIT | MHPMCOUNTER3..=MHPMCOUNTER31 | MHPMEVENT3..=MHPMEVENT31 => {}
            MCYCLE => self.cycle_offset = value.wrapping_sub(self.instret),
            MINSTRET => {
                self.cycle_offset = self.cycle().wrapping_sub(value);
                self.instret = value;
            }
            _ => return Err(CsrAccessError),
        }
        Ok(())
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

    fn write_mstatus(&mut self, value: u64) {
        let mut writable = mstatus::MIE | mstatus::MPIE | mstatus::MPP;
        if self.config.has(b'U') {
            writable |= mstatus::MPRV | mstatus::TW;
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
    }

    fn mode_implemented(&self, mode: Option<Privilege>) -> bool {
        match mode {
            Some(Privilege::Machine) => true,
            Some(Privilege::Supervisor) => self.config.has(b'S'),
            Some(Privilege::User) => self.config.has(b'U'),
            None => false,
        }
    }

    fn implemented_interrupts(&self) -> u64 {
        let machine = interrupt::MSI | interrupt::MTI | interrupt::MEI;
        if self.config.has(b'S') {
            machine | interrupt::SSI | interrupt::STI | interrupt::SEI
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

    /// The unprivileged counters are readable below M-mode only when `mcounteren` allows it.
    fn check_counter_enabled(&self, number: u16) -> Result<(), CsrAccessError> {
        let bit = 1u64 << (number - csr::CYCLE);
        if self.privilege != Privilege::Machine && self.csrs.mcounteren & bit == 0 {
            Err(CsrAccessError)
        } else {
            Ok(())
        }
    }

    /// Takes a trap: an exception (`interrupt` false) with `code` and `tval`, or an interrupt with `code`.
    /// The trap always goes to M-mode (delegation arrives with S-mode). The pc of the trapping instruction
    /// must already be in `self.pc`.
    pub fn take_trap(&mut self, interrupt: bool, code: u64, tval: u64) {
        let cause = if interrupt { CAUSE_INTERRUPT | code } else { code };
        self.csrs.mepc = self.pc & !1;
        self.csrs.mcause = cause;
        self.csrs.mtval = tval;
        let status = self.csrs.mstatus;
        let mie = status & mstatus::MIE != 0;
        let mut new = status & !(mstatus::MPIE | mstatus::MIE | mstatus::MPP);
        if mie {
            new |= mstatus::MPIE;
        }
        new |= (self.privilege as u64) << mstatus::MPP_SHIFT;
        self.csrs.mstatus = new;
        self.privilege = Privilege::Machine;
        self.reservation = None;
        let base = self.csrs.mtvec & !tvec::MODE_MASK;
        self.pc = if interrupt && self.csrs.mtvec & tvec::MODE_MASK == tvec::VECTORED {
            base.wrapping_add(4 * code)
        } else {
            base
        };
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
        self.pc = self.csrs.mepc;
    }

    /// The highest-priority interrupt that is pending, enabled and not masked, as a cause code.
    pub fn pending_interrupt(&self) -> Option<u64> {
        let pending = self.csrs.mip & self.csrs.mie;
        if pending == 0 {
            return None;
        }
        let globally_enabled = self.privilege != Privilege::Machine || self.csrs.mstatus & mstatus::MIE != 0;
        if !globally_enabled {
            return None;
        }
        // Priority order of the privileged specification: MEI, MSI, MTI, SEI, SSI, STI.
        [11u64, 3, 7, 9, 1, 5].into_iter().find(|&code| pending & (1 << code) != 0)
    }
}

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
}
