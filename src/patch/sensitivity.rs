//! The sensitivity table: every instruction class our decoder knows and every CSR access, classified for a VMM
//! configuration as the native board runs guests (in real U-mode, whatever privilege the guest believes it has),
//! and the critical set derived from it.
//!
//! Popek and Goldberg's vocabulary, for this machine:
//!
//! - **privileged**: the instruction traps when the guest executes it deprivileged, in real U-mode with the
//!   machine configured as [`VmmConfig`] says, so the dispatcher gets to emulate it;
//! - **control-sensitive**: it changes the machine's configuration or resources (`satp`, `mstatus`, PMP, an
//!   `xRET`, `sfence.vma`, `wfi`, any write to an S- or M-level CSR, ...);
//! - **behaviour-sensitive**: its result depends on the real machine's configuration or state rather than the
//!   virtual machine's (a virtualized counter, `mhartid`, `misa`, any read of an S- or M-level CSR, an
//!   instruction the host implements and the virtual hart does not, ...);
//! - **innocuous**: neither; it runs natively with exactly its virtual meaning.
//!
//! An instruction is **critical** when it is sensitive and not privileged. Trap-and-emulate alone gives an
//! equivalent, resource-controlling VMM exactly when the critical set is empty ([`CriticalSet::virtualizable`]).
//!
//! What the table assumes of the VMM and the host, which `boards/qemu-virt-rv64` does:
//! - guest memory is virtualized by shadow page tables that map only the VM's RAM, so every load, store, AMO and
//!   fetch either reaches the guest's own memory with its virtual meaning or faults to the VMM (devices are
//!   emulated, never mapped);
//! - `mstatus.TW` is set while a guest runs (so `wfi` traps at once) and the real FPU is off exactly when the
//!   guest's virtual `mstatus.FS` is Off (the table describes a guest whose FPU is on; with it off every F/D
//!   instruction and FP CSR traps on the virtual hart and on the real one alike);
//! - delegated counters ([`VmmConfig::delegate_counters`]) are enabled in both the real `mcounteren` and
//!   `scounteren` (real U-mode needs both), intersected with the guest's own enables for its virtual mode, so a
//!   counter the guest's kernel disabled still traps; the hardware performance counters are never delegated:
//!   the virtual hart's read zero, and the host's would reveal its own activity;
//! - the `envcfg` features of [`EnvcfgExposure`] are set in both the real `menvcfg` and `senvcfg`, and nothing
//!   else is;
//! - the host implements no instruction and no unprivileged CSR beyond what the virtual hart decodes (RV64GC,
//!   Zicsr, Zifencei). A host that implements more runs those encodings natively where the virtual hart raises
//!   illegal-instruction: they are critical too. QEMU 7.2's default `rv64` CPU, which the board runs on, executes
//!   Zba, Zbb, Zbc and Zbs instructions (`sh1add`, `andn`, `clmul`, `bset`, ...) even in U-mode; the board must
//!   run on `-cpu rv64,zba=false,zbb=false,zbc=false,zbs=false` (they then trap; `run-qemu.sh` does) or have the
//!   scanner patch them.
//!
//! The classification is per instruction class (every [`Inst`] variant, matched without a wildcard, so a new
//! variant cannot be forgotten) and per CSR number and [`CsrAccessKind`]. It is derived from the privileged
//! specification's rules, not from [`crate::hart`]; the tests check that the two agree for every CSR access.
//! This module never touches hart or memory state and never allocates.

use core::fmt;

use crate::hart::Privilege;
use crate::isa::csr;
use crate::isa::{
    AmoOp, AmoWidth, BranchCond, CsrOp, FmaOp, FpArithOp, FpCmpCond, FpFormat, Inst, IntType, LoadWidth, OpImmKind,
    OpKind, SgnjKind, StoreWidth,
};

/// `seed` (Zkr), the entropy source: an unprivileged CSR number that the virtual hart does not implement.
pub const SEED: u16 = 0x015;

/// How `cbo.inval` may execute below M-mode (`menvcfg.CBIE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CbieMode {
    /// CBIE = 00: `cbo.inval` raises illegal-instruction.
    #[default]
    Illegal,
    /// CBIE = 01: `cbo.inval` executes as a flush.
    Flush,
    /// CBIE = 11: `cbo.inval` invalidates.
    Invalidate,
}

/// Which `menvcfg` features the VMM hands to the guest, that is, sets in the real `menvcfg` and `senvcfg` while the
/// guest runs in real U-mode. The default exposes nothing (the board leaves `menvcfg` at its reset value, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EnvcfgExposure {
    /// FIOM: fences and atomics on I/O also order memory.
    pub fiom: bool,
    /// CBIE: `cbo.inval` (Zicbom).
    pub cbie: CbieMode,
    /// CBCFE: `cbo.clean` and `cbo.flush` (Zicbom).
    pub cbcfe: bool,
    /// CBZE: `cbo.zero` (Zicboz).
    pub cbze: bool,
}

impl EnvcfgExposure {
    /// Nothing exposed.
    pub const NONE: Self = Self { fiom: false, cbie: CbieMode::Illegal, cbcfe: false, cbze: false };

    /// The real `menvcfg` (and `senvcfg`) value that exposes these features.
    pub const fn envcfg_bits(&self) -> u64 {
        let cbie = match self.cbie {
            CbieMode::Illegal => 0b00,
            CbieMode::Flush => 0b01,
            CbieMode::Invalidate => 0b11,
        };
        (self.fiom as u64) | (cbie << 4) | ((self.cbcfe as u64) << 6) | ((self.cbze as u64) << 7)
    }
}

/// How the VMM configures the real machine around a guest that runs natively in real U-mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmmConfig {
    /// The real `mcounteren` (and `scounteren`) let the guest read `cycle`, `time` and `instret` without trapping.
    pub delegate_counters: bool,
    /// Each VM has its own time base: `time` stops while the VM is descheduled or the VMM works for it, and
    /// `cycle` and `instret` count only the VM's own execution. When false, VMs see the machine's own counters.
    pub virtual_time: bool,
    /// The `menvcfg` features handed to the guest.
    pub envcfg: EnvcfgExposure,
    /// The privilege the guest code believes it runs at; it really runs in U-mode.
    pub virtual_privilege: Privilege,
}

impl VmmConfig {
    /// What `boards/qemu-virt-rv64` does today: counters trap (`mcounteren` = 0), each VM has its own clock (time
    /// it was descheduled is hidden from it), `menvcfg` is left at 0, and the guest is a kernel in virtual S-mode.
    pub const BOARD: Self = Self {
        delegate_counters: false,
        virtual_time: true,
        envcfg: EnvcfgExposure::NONE,
        virtual_privilege: Privilege::Supervisor,
    };

    /// The counter-enable bits (CY, TM, IR) the VMM sets in the real `mcounteren` and `scounteren`.
    pub const fn real_counteren(&self) -> u64 {
        if self.delegate_counters {
            0b111
        } else {
            0
        }
    }
}

impl Default for VmmConfig {
    fn default() -> Self {
        Self::BOARD
    }
}

/// What an instruction may do to, or learn from, the machine beyond the guest's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensitivity {
    Innocuous,
    /// Changes the machine's configuration or resources.
    Control,
    /// Its result depends on the real machine's configuration or state.
    Behaviour,
}

impl Sensitivity {
    pub const fn name(self) -> &'static str {
        match self {
            Sensitivity::Innocuous => "innocuous",
            Sensitivity::Control => "control-sensitive",
            Sensitivity::Behaviour => "behaviour-sensitive",
        }
    }
}

/// The four classes of the table: privileged wins over the sensitivity it traps for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Privileged,
    ControlSensitive,
    BehaviourSensitive,
    Innocuous,
}

impl Class {
    pub const fn name(self) -> &'static str {
        match self {
            Class::Privileged => "privileged",
            Class::ControlSensitive => "control-sensitive",
            Class::BehaviourSensitive => "behaviour-sensitive",
            Class::Innocuous => "innocuous",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.name())
    }
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    /// It traps when the guest executes it in real U-mode under the configuration: privileged.
    pub traps: bool,
    pub sensitivity: Sensitivity,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl Classification {
    const fn trapping(sensitivity: Sensitivity, reason: &'static str) -> Self {
        Self { traps: true, sensitivity, reason }
    }

    const fn native(sensitivity: Sensitivity, reason: &'static str) -> Self {
        Self { traps: false, sensitivity, reason }
    }

    /// Privileged if it traps, else its sensitivity.
    pub const fn class(&self) -> Class {
        match (self.traps, self.sensitivity) {
            (true, _) => Class::Privileged,
            (false, Sensitivity::Control) => Class::ControlSensitive,
            (false, Sensitivity::Behaviour) => Class::BehaviourSensitive,
            (false, Sensitivity::Innocuous) => Class::Innocuous,
        }
    }

    /// Sensitive and not privileged.
    pub const fn is_critical(&self) -> bool {
        !self.traps && !matches!(self.sensitivity, Sensitivity::Innocuous)
    }
}

/// How a Zicsr instruction accesses its CSR (the Zicsr rules: `csrrw` always writes, `csrrs`/`csrrc` write only
/// with a source other than `x0` or a nonzero immediate field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsrAccessKind {
    /// `csrrs`/`csrrc`(`i`) with `rs1` = `x0` (or `uimm` = 0): reads only (`csrr`, `rdcycle`, ...).
    Read,
    /// `csrrw`/`csrrwi`: writes (and reads, unless `rd` = `x0`; the CSR must be readable either way).
    Write,
    /// `csrrs`/`csrrc`(`i`) with another source: reads, sets or clears bits, writes.
    SetClear,
}

impl CsrAccessKind {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [CsrAccessKind; 3] = [CsrAccessKind::Read, CsrAccessKind::Write, CsrAccessKind::SetClear];

    /// The access a Zicsr instruction makes (`src` is `rs1` or the immediate field).
    pub const fn of(op: CsrOp, src: u8) -> Self {
        match op {
            CsrOp::Rw | CsrOp::Rwi => CsrAccessKind::Write,
            CsrOp::Rs | CsrOp::Rc | CsrOp::Rsi | CsrOp::Rci if src == 0 => CsrAccessKind::Read,
            CsrOp::Rs | CsrOp::Rc | CsrOp::Rsi | CsrOp::Rci => CsrAccessKind::SetClear,
        }
    }

    /// True when the access writes the CSR.
    pub const fn writes(self) -> bool {
        !matches!(self, CsrAccessKind::Read)
    }

    pub const fn name(self) -> &'static str {
        match self {
            CsrAccessKind::Read => "read",
            CsrAccessKind::Write => "write",
            CsrAccessKind::SetClear => "set/clear",
        }
    }
}

/// Classifies an access of kind `kind` to CSR `number` (only its low 12 bits count) under `config`.
pub fn classify_csr(number: u16, kind: CsrAccessKind, config: &VmmConfig) -> Classification {
    use Sensitivity::{Behaviour, Control, Innocuous};
    let number = number & 0xfff;
    if kind.writes() && csr::is_read_only(number) {
        return Classification::trapping(Innocuous, "write to a read-only CSR: illegal everywhere");
    }
    let level = csr::min_privilege(number);
    if level > 0 {
        // Every S-, hypervisor- or M-level CSR (debug-mode ones included) is out of real U-mode's reach: illegal.
        // A read learns the machine's state, a write changes what the VMM owns.
        let sensitivity = if kind.writes() { Control } else { Behaviour };
        let reason = if config.virtual_privilege as u8 >= level {
            "S/M-level CSR: illegal in real U-mode; the VMM emulates it on the virtual hart"
        } else {
            "S/M-level CSR: illegal in real U-mode, and in the guest's virtual mode: the VMM injects the trap"
        };
        return Classification::trapping(sensitivity, reason);
    }
    match number {
        csr::FFLAGS | csr::FRM | csr::FCSR => {
            Classification::native(Innocuous, "the guest's own floating-point state, switched with its registers")
        }
        csr::CYCLE | csr::TIME | csr::INSTRET => match (config.delegate_counters, config.virtual_time) {
            (true, true) => Classification::native(Behaviour, "delegated counter: reads the host's, not the VM's own"),
            (true, false) => Classification::native(Innocuous, "delegated counter: the VM sees the machine's own"),
            (false, true) => {
                Classification::trapping(Behaviour, "counter: mcounteren bit clear; the VMM returns the VM's")
            }
            (false, false) => {
                Classification::trapping(Innocuous, "counter: mcounteren bit clear; the VMM returns the machine's")
            }
        },
        csr::HPMCOUNTER3..=csr::HPMCOUNTER31 => {
            Classification::trapping(Behaviour, "performance counter: never delegated; the virtual hart's read 0")
        }
        SEED => {
            Classification::trapping(Behaviour, "seed (Zkr): not in the virtual hart; illegal, mseccfg.USEED clear")
        }
        _ => {
            Classification::trapping(Innocuous, "no such unprivileged CSR in RV64GC: illegal on host and virtual hart")
        }
    }
}

/// A Zicbom/Zicboz cache-block operation. The virtual hart implements neither, so the decoder calls these words
/// [`Inst::Illegal`]; whether they trap in real U-mode depends on the `envcfg` the VMM exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheBlockOp {
    Inval,
    Clean,
    Flush,
    Zero,
}

/// The cache-block operation `word` encodes, if any (MISC-MEM, funct3 = 010, rd = 0; the operation in imm).
pub const fn cache_block_operation(word: u32) -> Option<CacheBlockOp> {
    if word & 0x7f != 0x0f || (word >> 12) & 7 != 0b010 || (word >> 7) & 0x1f != 0 {
        return None;
    }
    match word >> 20 {
        0 => Some(CacheBlockOp::Inval),
        1 => Some(CacheBlockOp::Clean),
        2 => Some(CacheBlockOp::Flush),
        4 => Some(CacheBlockOp::Zero),
        _ => None,
    }
}

/// The encoding of cache-block operation `op` on the block `rs1` points at.
pub const fn encode_cache_block_operation(op: CacheBlockOp, rs1: u8) -> u32 {
    let operation = match op {
        CacheBlockOp::Inval => 0,
        CacheBlockOp::Clean => 1,
        CacheBlockOp::Flush => 2,
        CacheBlockOp::Zero => 4,
    };
    (operation << 20) | (((rs1 & 31) as u32) << 15) | (0b010 << 12) | 0x0f
}

fn classify_cache_block(op: CacheBlockOp, config: &VmmConfig) -> Classification {
    use Sensitivity::Behaviour;
    let envcfg = &config.envcfg;
    // Whatever the host does with an exposed one, the virtual hart would have raised illegal-instruction.
    match op {
        CacheBlockOp::Zero if envcfg.cbze => Classification::native(
            Behaviour,
            "CBZE exposed: zeroes a block on the host; the virtual hart has no Zicboz",
        ),
        CacheBlockOp::Clean | CacheBlockOp::Flush if envcfg.cbcfe => {
            Classification::native(Behaviour, "CBCFE exposed: runs on the host; the virtual hart has no Zicbom")
        }
        CacheBlockOp::Inval => match envcfg.cbie {
            CbieMode::Illegal => Classification::trapping(Behaviour, "CBIE = 00: illegal in real U-mode"),
            CbieMode::Flush => {
                Classification::native(Behaviour, "CBIE = 01: flushes on the host; the virtual hart has no Zicbom")
            }
            CbieMode::Invalidate => {
                Classification::native(Behaviour, "CBIE = 11: discards host cache lines, may expose stale memory")
            }
        },
        CacheBlockOp::Zero | CacheBlockOp::Clean | CacheBlockOp::Flush => {
            Classification::trapping(Behaviour, "envcfg feature not exposed: illegal in real U-mode")
        }
    }
}

/// Whether the guest's virtual mode may execute an instruction that needs at least `needed`, for the reason text.
fn emulated_or_injected(config: &VmmConfig, needed: Privilege, sensitivity: Sensitivity) -> Classification {
    if config.virtual_privilege >= needed {
        Classification::trapping(sensitivity, "illegal in real U-mode; the VMM emulates it on the virtual hart")
    } else {
        Classification::trapping(sensitivity, "illegal in real U-mode and in the guest's virtual mode: trap injected")
    }
}

/// Classifies one decoded instruction under `config`. Operands do not matter except a CSR instruction's CSR and
/// access kind and an illegal word that encodes a cache-block operation.
pub fn classify(inst: &Inst, config: &VmmConfig) -> Classification {
    use Sensitivity::{Control, Innocuous};
    const OWN_STATE: &str = "computes on the guest's own registers and pc";
    const FLOATING_POINT: &str = "the guest's own FP state; the real FPU is off exactly when the virtual one is";
    match *inst {
        Inst::Illegal(word) => match cache_block_operation(word) {
            Some(op) => classify_cache_block(op, config),
            None => Classification::trapping(Innocuous, "not RV64GC: illegal on the virtual hart and on the host"),
        },
        Inst::Lui { .. }
        | Inst::Auipc { .. }
        | Inst::Jal { .. }
        | Inst::Jalr { .. }
        | Inst::Branch { .. }
        | Inst::OpImm { .. }
        | Inst::Op { .. } => Classification::native(Innocuous, OWN_STATE),
        Inst::Load { .. } | Inst::Store { .. } => {
            Classification::native(Innocuous, "through the shadow tables: own RAM, or a fault to the VMM")
        }
        Inst::Lr { .. } | Inst::Sc { .. } | Inst::Amo { .. } => Classification::native(
            Innocuous,
            "through the shadow tables; a reservation lost to a world switch is an allowed SC failure",
        ),
        Inst::Fence { .. } => {
            Classification::native(Innocuous, "orders the guest's own accesses; device accesses all trap (FIOM moot)")
        }
        Inst::FenceI => Classification::native(Innocuous, "synchronizes the guest's own instruction fetches"),
        Inst::Ecall => {
            Classification::trapping(Control, "always traps; the VMM delivers the environment call of the virtual mode")
        }
        Inst::Ebreak => Classification::trapping(Control, "always traps; the VMM delivers the breakpoint"),
        Inst::Sret | Inst::Wfi | Inst::SfenceVma { .. } => emulated_or_injected(config, Privilege::Supervisor, Control),
        Inst::Mret => emulated_or_injected(config, Privilege::Machine, Control),
        Inst::Csr { op, src, csr, .. } => classify_csr(csr, CsrAccessKind::of(op, src), config),
        Inst::FpLoad { .. } | Inst::FpStore { .. } => Classification::native(Innocuous, FLOATING_POINT),
        Inst::FpFma { .. }
        | Inst::FpArith { .. }
        | Inst::FpSqrt { .. }
        | Inst::FpSgnj { .. }
        | Inst::FpMinMax { .. }
        | Inst::FpCvtFp { .. }
        | Inst::FpCvtToInt { .. }
        | Inst::FpCvtFromInt { .. }
        | Inst::FpMvToInt { .. }
        | Inst::FpMvFromInt { .. }
        | Inst::FpCmp { .. }
        | Inst::FpClass { .. } => Classification::native(Innocuous, FLOATING_POINT),
    }
}

/// The rows of the instruction table: one per [`Inst`] variant, with the illegal words that encode cache-block
/// operations on rows of their own (their class depends on the exposed `envcfg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstructionClass {
    Illegal,
    CboInval,
    CboClean,
    CboFlush,
    CboZero,
    Lui,
    Auipc,
    Jal,
    Jalr,
    Branch,
    Load,
    Store,
    OpImm,
    Op,
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Sret,
    Mret,
    Wfi,
    SfenceVma,
    Csr,
    Lr,
    Sc,
    Amo,
    FpLoad,
    FpStore,
    FpFma,
    FpArith,
    FpSqrt,
    FpSgnj,
    FpMinMax,
    FpCvtFp,
    FpCvtToInt,
    FpCvtFromInt,
    FpMvToInt,
    FpMvFromInt,
    FpCmp,
    FpClass,
}

impl InstructionClass {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [InstructionClass; 40] = {
        use InstructionClass::*;
        [
            Illegal,
            CboInval,
            CboClean,
            CboFlush,
            CboZero,
            Lui,
            Auipc,
            Jal,
            Jalr,
            Branch,
            Load,
            Store,
            OpImm,
            Op,
            Fence,
            FenceI,
            Ecall,
            Ebreak,
            Sret,
            Mret,
            Wfi,
            SfenceVma,
            Csr,
            Lr,
            Sc,
            Amo,
            FpLoad,
            FpStore,
            FpFma,
            FpArith,
            FpSqrt,
            FpSgnj,
            FpMinMax,
            FpCvtFp,
            FpCvtToInt,
            FpCvtFromInt,
            FpMvToInt,
            FpMvFromInt,
            FpCmp,
            FpClass,
        ]
    };

    /// The row an instruction belongs to.
    pub const fn of(inst: &Inst) -> Self {
        use InstructionClass as C;
        match *inst {
            Inst::Illegal(word) => match cache_block_operation(word) {
                Some(CacheBlockOp::Inval) => C::CboInval,
                Some(CacheBlockOp::Clean) => C::CboClean,
                Some(CacheBlockOp::Flush) => C::CboFlush,
                Some(CacheBlockOp::Zero) => C::CboZero,
                None => C::Illegal,
            },
            Inst::Lui { .. } => C::Lui,
            Inst::Auipc { .. } => C::Auipc,
            Inst::Jal { .. } => C::Jal,
            Inst::Jalr { .. } => C::Jalr,
            Inst::Branch { .. } => C::Branch,
            Inst::Load { .. } => C::Load,
            Inst::Store { .. } => C::Store,
            Inst::OpImm { .. } => C::OpImm,
            Inst::Op { .. } => C::Op,
            Inst::Fence { .. } => C::Fence,
            Inst::FenceI => C::FenceI,
            Inst::Ecall => C::Ecall,
            Inst::Ebreak => C::Ebreak,
            Inst::Sret => C::Sret,
            Inst::Mret => C::Mret,
            Inst::Wfi => C::Wfi,
            Inst::SfenceVma { .. } => C::SfenceVma,
            Inst::Csr { .. } => C::Csr,
            Inst::Lr { .. } => C::Lr,
            Inst::Sc { .. } => C::Sc,
            Inst::Amo { .. } => C::Amo,
            Inst::FpLoad { .. } => C::FpLoad,
            Inst::FpStore { .. } => C::FpStore,
            Inst::FpFma { .. } => C::FpFma,
            Inst::FpArith { .. } => C::FpArith,
            Inst::FpSqrt { .. } => C::FpSqrt,
            Inst::FpSgnj { .. } => C::FpSgnj,
            Inst::FpMinMax { .. } => C::FpMinMax,
            Inst::FpCvtFp { .. } => C::FpCvtFp,
            Inst::FpCvtToInt { .. } => C::FpCvtToInt,
            Inst::FpCvtFromInt { .. } => C::FpCvtFromInt,
            Inst::FpMvToInt { .. } => C::FpMvToInt,
            Inst::FpMvFromInt { .. } => C::FpMvFromInt,
            Inst::FpCmp { .. } => C::FpCmp,
            Inst::FpClass { .. } => C::FpClass,
        }
    }

    /// The instructions of the row, as the table prints them.
    pub const fn name(self) -> &'static str {
        use InstructionClass as C;
        match self {
            C::Illegal => "(any other word: not RV64GC)",
            C::CboInval => "cbo.inval",
            C::CboClean => "cbo.clean",
            C::CboFlush => "cbo.flush",
            C::CboZero => "cbo.zero",
            C::Lui => "lui",
            C::Auipc => "auipc",
            C::Jal => "jal",
            C::Jalr => "jalr",
            C::Branch => "beq bne blt bge bltu bgeu",
            C::Load => "lb lh lw ld lbu lhu lwu",
            C::Store => "sb sh sw sd",
            C::OpImm => "addi slti ... srai, addiw ... sraiw",
            C::Op => "add sub ... and, mul ... remuw",
            C::Fence => "fence, fence.tso, pause",
            C::FenceI => "fence.i",
            C::Ecall => "ecall",
            C::Ebreak => "ebreak",
            C::Sret => "sret",
            C::Mret => "mret",
            C::Wfi => "wfi",
            C::SfenceVma => "sfence.vma",
            C::Csr => "csrrw csrrs csrrc (i)",
            C::Lr => "lr.w lr.d",
            C::Sc => "sc.w sc.d",
            C::Amo => "amoswap ... amomaxu (.w .d)",
            C::FpLoad => "flw fld",
            C::FpStore => "fsw fsd",
            C::FpFma => "fmadd fmsub fnmsub fnmadd",
            C::FpArith => "fadd fsub fmul fdiv",
            C::FpSqrt => "fsqrt",
            C::FpSgnj => "fsgnj fsgnjn fsgnjx",
            C::FpMinMax => "fmin fmax",
            C::FpCvtFp => "fcvt.s.d fcvt.d.s",
            C::FpCvtToInt => "fcvt.{w,wu,l,lu}.{s,d}",
            C::FpCvtFromInt => "fcvt.{s,d}.{w,wu,l,lu}",
            C::FpMvToInt => "fmv.x.w fmv.x.d",
            C::FpMvFromInt => "fmv.w.x fmv.d.x",
            C::FpCmp => "feq flt fle",
            C::FpClass => "fclass",
        }
    }

    /// One instruction of the row (for [`InstructionClass::Csr`], a read of `fcsr`: CSR instructions are
    /// classified by CSR and access, see [`classify_csr`]).
    pub const fn example(self) -> Inst {
        use InstructionClass as C;
        let (rd, rs1, rs2) = (10, 11, 12);
        let (fmt, rm) = (FpFormat::D, crate::isa::rounding::DYN);
        match self {
            C::Illegal => Inst::Illegal(0),
            C::CboInval => Inst::Illegal(encode_cache_block_operation(CacheBlockOp::Inval, rs1)),
            C::CboClean => Inst::Illegal(encode_cache_block_operation(CacheBlockOp::Clean, rs1)),
            C::CboFlush => Inst::Illegal(encode_cache_block_operation(CacheBlockOp::Flush, rs1)),
            C::CboZero => Inst::Illegal(encode_cache_block_operation(CacheBlockOp::Zero, rs1)),
            C::Lui => Inst::Lui { rd, imm: 0x1000 },
            C::Auipc => Inst::Auipc { rd, imm: 0x1000 },
            C::Jal => Inst::Jal { rd: 1, offset: 8 },
            C::Jalr => Inst::Jalr { rd: 0, rs1: 1, offset: 0 },
            C::Branch => Inst::Branch { cond: BranchCond::Ne, rs1, rs2, offset: -8 },
            C::Load => Inst::Load { width: LoadWidth::D, rd, rs1, offset: 8 },
            C::Store => Inst::Store { width: StoreWidth::D, rs1, rs2, offset: 8 },
            C::OpImm => Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm: 1 },
            C::Op => Inst::Op { op: OpKind::Mul, rd, rs1, rs2 },
            C::Fence => Inst::Fence { fm: 0, pred: 0b0011, succ: 0b0011 },
            C::FenceI => Inst::FenceI,
            C::Ecall => Inst::Ecall,
            C::Ebreak => Inst::Ebreak,
            C::Sret => Inst::Sret,
            C::Mret => Inst::Mret,
            C::Wfi => Inst::Wfi,
            C::SfenceVma => Inst::SfenceVma { rs1: 0, rs2: 0 },
            C::Csr => Inst::Csr { op: CsrOp::Rs, rd, src: 0, csr: csr::FCSR },
            C::Lr => Inst::Lr { width: AmoWidth::D, aq: true, rl: false, rd, rs1 },
            C::Sc => Inst::Sc { width: AmoWidth::D, aq: false, rl: true, rd, rs1, rs2 },
            C::Amo => Inst::Amo { op: AmoOp::Add, width: AmoWidth::W, aq: false, rl: false, rd, rs1, rs2 },
            C::FpLoad => Inst::FpLoad { fmt, rd, rs1, offset: 0 },
            C::FpStore => Inst::FpStore { fmt, rs1, rs2, offset: 0 },
            C::FpFma => Inst::FpFma { op: FmaOp::Madd, fmt, rm, rd, rs1, rs2, rs3: 13 },
            C::FpArith => Inst::FpArith { op: FpArithOp::Add, fmt, rm, rd, rs1, rs2 },
            C::FpSqrt => Inst::FpSqrt { fmt, rm, rd, rs1 },
            C::FpSgnj => Inst::FpSgnj { kind: SgnjKind::Sgnjx, fmt, rd, rs1, rs2 },
            C::FpMinMax => Inst::FpMinMax { max: true, fmt, rd, rs1, rs2 },
            C::FpCvtFp => Inst::FpCvtFp { to: FpFormat::S, from: FpFormat::D, rm, rd, rs1 },
            C::FpCvtToInt => Inst::FpCvtToInt { int: IntType::L, fmt, rm, rd, rs1 },
            C::FpCvtFromInt => Inst::FpCvtFromInt { int: IntType::Wu, fmt, rm, rd, rs1 },
            C::FpMvToInt => Inst::FpMvToInt { fmt, rd, rs1 },
            C::FpMvFromInt => Inst::FpMvFromInt { fmt, rd, rs1 },
            C::FpCmp => Inst::FpCmp { cond: FpCmpCond::Lt, fmt, rd, rs1, rs2 },
            C::FpClass => Inst::FpClass { fmt, rd, rs1 },
        }
    }

    /// The row's classification under `config`. For [`InstructionClass::Csr`] it is the classification of the
    /// example (a read of `fcsr`); CSR instructions are classified per CSR access.
    pub fn classify(self, config: &VmmConfig) -> Classification {
        classify(&self.example(), config)
    }
}

/// Named CSRs and CSR ranges of the table, for display: name, first and last number. Every number in a range is
/// classified alike; the CSR numbers not listed are classified all the same and shown as one line.
pub const NAMED_CSRS: &[(&str, u16, u16)] = &[
    ("fflags", csr::FFLAGS, csr::FFLAGS),
    ("frm", csr::FRM, csr::FRM),
    ("fcsr", csr::FCSR, csr::FCSR),
    ("seed", SEED, SEED),
    ("cycle", csr::CYCLE, csr::CYCLE),
    ("time", csr::TIME, csr::TIME),
    ("instret", csr::INSTRET, csr::INSTRET),
    ("hpmcounter3..31", csr::HPMCOUNTER3, csr::HPMCOUNTER31),
    ("sstatus", csr::SSTATUS, csr::SSTATUS),
    ("sie", csr::SIE, csr::SIE),
    ("stvec", csr::STVEC, csr::STVEC),
    ("scounteren", csr::SCOUNTEREN, csr::SCOUNTEREN),
    ("senvcfg", csr::SENVCFG, csr::SENVCFG),
    ("sscratch", csr::SSCRATCH, csr::SSCRATCH),
    ("sepc", csr::SEPC, csr::SEPC),
    ("scause", csr::SCAUSE, csr::SCAUSE),
    ("stval", csr::STVAL, csr::STVAL),
    ("sip", csr::SIP, csr::SIP),
    ("stimecmp", csr::STIMECMP, csr::STIMECMP),
    ("satp", csr::SATP, csr::SATP),
    ("mstatus", csr::MSTATUS, csr::MSTATUS),
    ("misa", csr::MISA, csr::MISA),
    ("medeleg", csr::MEDELEG, csr::MEDELEG),
    ("mideleg", csr::MIDELEG, csr::MIDELEG),
    ("mie", csr::MIE, csr::MIE),
    ("mtvec", csr::MTVEC, csr::MTVEC),
    ("mcounteren", csr::MCOUNTEREN, csr::MCOUNTEREN),
    ("menvcfg", csr::MENVCFG, csr::MENVCFG),
    ("mcountinhibit", csr::MCOUNTINHIBIT, csr::MCOUNTINHIBIT),
    ("mhpmevent3..31", csr::MHPMEVENT3, csr::MHPMEVENT31),
    ("mscratch", csr::MSCRATCH, csr::MSCRATCH),
    ("mepc", csr::MEPC, csr::MEPC),
    ("mcause", csr::MCAUSE, csr::MCAUSE),
    ("mtval", csr::MTVAL, csr::MTVAL),
    ("mip", csr::MIP, csr::MIP),
    ("pmpcfg0..15", csr::PMPCFG0, csr::PMPCFG15),
    ("pmpaddr0..63", csr::PMPADDR0, csr::PMPADDR63),
    ("tselect..tcontrol", csr::TSELECT, csr::TCONTROL),
    ("mcycle", csr::MCYCLE, csr::MCYCLE),
    ("minstret", csr::MINSTRET, csr::MINSTRET),
    ("mhpmcounter3..31", csr::MHPMCOUNTER3, csr::MHPMCOUNTER31),
    ("mvendorid", csr::MVENDORID, csr::MVENDORID),
    ("marchid", csr::MARCHID, csr::MARCHID),
    ("mimpid", csr::MIMPID, csr::MIMPID),
    ("mhartid", csr::MHARTID, csr::MHARTID),
    ("mconfigptr", csr::MCONFIGPTR, csr::MCONFIGPTR),
];

/// The name of CSR `number` in [`NAMED_CSRS`] (a range's name for any number in it).
pub fn csr_name(number: u16) -> Option<&'static str> {
    NAMED_CSRS.iter().find(|&&(_, first, last)| (first..=last).contains(&number)).map(|&(name, _, _)| name)
}

/// CSR numbers (12 bits).
pub const CSR_COUNT: usize = 4096;
const CSR_ACCESS_WORDS: usize = CSR_COUNT * CsrAccessKind::ALL.len() / 64;

/// The critical set of a configuration: the instruction rows and the CSR accesses that are sensitive and do not
/// trap. A fixed-size bit set (about 1.5 KiB), no allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct CriticalSet {
    classes: u64,
    csr_accesses: [u64; CSR_ACCESS_WORDS],
}

const _: () = assert!(InstructionClass::ALL.len() <= 64);

impl CriticalSet {
    const fn csr_bit(number: u16, kind: CsrAccessKind) -> usize {
        (number as usize & (CSR_COUNT - 1)) * CsrAccessKind::ALL.len() + kind as usize
    }

    /// True when instruction row `class` is critical. [`InstructionClass::Csr`] never is: CSR instructions count
    /// by access ([`CriticalSet::contains_csr`]).
    pub const fn contains_class(&self, class: InstructionClass) -> bool {
        self.classes & (1 << class as u32) != 0
    }

    /// True when an access of kind `kind` to CSR `number` is critical.
    pub const fn contains_csr(&self, number: u16, kind: CsrAccessKind) -> bool {
        let bit = Self::csr_bit(number, kind);
        self.csr_accesses[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The critical instruction rows.
    pub fn classes(&self) -> impl Iterator<Item = InstructionClass> + '_ {
        InstructionClass::ALL.into_iter().filter(|&class| self.contains_class(class))
    }

    /// The critical CSR accesses, by number then kind.
    pub fn csr_accesses(&self) -> impl Iterator<Item = (u16, CsrAccessKind)> + '_ {
        (0..CSR_COUNT as u16)
            .flat_map(|number| CsrAccessKind::ALL.into_iter().map(move |kind| (number, kind)))
            .filter(|&(number, kind)| self.contains_csr(number, kind))
    }

    /// Critical rows plus critical CSR accesses.
    pub fn len(&self) -> usize {
        let csr: u32 = self.csr_accesses.iter().map(|word| word.count_ones()).sum();
        (self.classes.count_ones() + csr) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Popek and Goldberg: trap-and-emulate alone virtualizes the configuration when no sensitive instruction
    /// escapes the trap, that is, when the critical set is empty.
    pub fn virtualizable(&self) -> bool {
        self.is_empty()
    }
}

impl fmt::Debug for CriticalSet {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.debug_struct("CriticalSet")
            .field("classes", &format_args!("{:?}", DebugList(|| self.classes())))
            .field("csr_accesses", &format_args!("{:?}", DebugList(|| self.csr_accesses())))
            .finish()
    }
}

/// Formats what an iterator factory yields as a list, without collecting it.
struct DebugList<F>(F);

impl<F, I> fmt::Debug for DebugList<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: fmt::Debug,
{
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.debug_list().entries((self.0)()).finish()
    }
}

/// The critical set of `config`: every instruction row (but the CSR row, which counts by access) and every
/// access to every CSR number that is sensitive and does not trap.
pub fn critical_set(config: &VmmConfig) -> CriticalSet {
    let mut set = CriticalSet { classes: 0, csr_accesses: [0; CSR_ACCESS_WORDS] };
    for class in InstructionClass::ALL {
        if class != InstructionClass::Csr && class.classify(config).is_critical() {
            set.classes |= 1 << class as u32;
        }
    }
    for number in 0..CSR_COUNT as u16 {
        for kind in CsrAccessKind::ALL {
            if classify_csr(number, kind, config).is_critical() {
                let bit = CriticalSet::csr_bit(number, kind);
                set.csr_accesses[bit / 64] |= 1 << (bit % 64);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{MachineRequest, MmioError};
    use crate::hart::{Exception, Hart, HartConfig};
    use crate::isa::csr::mstatus;
    use crate::isa::{decode, decode_compressed, decode_word};
    use crate::trap::{Dispatcher, Exit, Platform};
    use proptest::prelude::*;

    const PRIVILEGES: [Privilege; 3] = [Privilege::User, Privilege::Supervisor, Privilege::Machine];

    /// Every combination of the boolean settings, every virtual privilege and a few `envcfg` exposures.
    fn configurations() -> impl Iterator<Item = VmmConfig> {
        let exposures = [
            EnvcfgExposure::NONE,
            EnvcfgExposure { fiom: true, ..EnvcfgExposure::NONE },
            EnvcfgExposure { fiom: true, cbie: CbieMode::Invalidate, cbcfe: true, cbze: true },
        ];
        PRIVILEGES.into_iter().flat_map(move |virtual_privilege| {
            exposures.into_iter().flat_map(move |envcfg| {
                [(false, false), (false, true), (true, false), (true, true)].into_iter().map(
                    move |(delegate_counters, virtual_time)| VmmConfig {
                        delegate_counters,
                        virtual_time,
                        envcfg,
                        virtual_privilege,
                    },
                )
            })
        })
    }

    #[test]
    fn the_rows_list_every_class_once_and_each_example_is_in_its_row() {
        for (index, class) in InstructionClass::ALL.into_iter().enumerate() {
            assert_eq!(class as usize, index, "{class:?}");
            assert_eq!(InstructionClass::of(&class.example()), class, "{class:?}");
        }
        for op in [CacheBlockOp::Inval, CacheBlockOp::Clean, CacheBlockOp::Flush, CacheBlockOp::Zero] {
            let word = encode_cache_block_operation(op, 10);
            assert_eq!(decode_word(word), Inst::Illegal(word), "the decoder knows no Zicbom/Zicboz");
            assert_eq!(cache_block_operation(word), Some(op));
        }
        assert_eq!(cache_block_operation(encode_cache_block_operation(CacheBlockOp::Zero, 10) | 1 << 7), None);
        assert_eq!(cache_block_operation(0x0000_100f), None, "fence.i");
    }

    fn row_agrees(inst: Inst) -> Result<(), TestCaseError> {
        let class = InstructionClass::of(&inst);
        if class == InstructionClass::Csr {
            return Ok(());
        }
        for config in configurations() {
            prop_assert_eq!(classify(&inst, &config), class.classify(&config), "{:?} under {:?}", inst, config);
        }
        Ok(())
    }

    proptest! {
        /// The table's rows are faithful: any decoded instruction is classified like its row's example.
        #[test]
        fn every_decoded_word_is_classified_like_its_row(word in any::<u32>()) {
            row_agrees(decode(word).inst)?;
        }

        #[test]
        fn every_compressed_parcel_is_classified_like_its_row(parcel in any::<u16>()) {
            row_agrees(decode_compressed(parcel))?;
        }

        #[test]
        fn a_csr_instruction_is_classified_by_its_access(
            op in 0usize..6, rd in 0u8..32, src in 0u8..32, csr in 0u16..4096
        ) {
            let op = [CsrOp::Rw, CsrOp::Rs, CsrOp::Rc, CsrOp::Rwi, CsrOp::Rsi, CsrOp::Rci][op];
            let kind = CsrAccessKind::of(op, src);
            prop_assert_eq!(kind.writes(), matches!(op, CsrOp::Rw | CsrOp::Rwi) || src != 0);
            for config in configurations() {
                prop_assert_eq!(classify(&Inst::Csr { op, rd, src, csr }, &config), classify_csr(csr, kind, &config));
            }
        }
    }

    #[test]
    fn the_board_configuration_is_virtualizable_in_every_virtual_mode() {
        for virtual_privilege in PRIVILEGES {
            for virtual_time in [false, true] {
                let config = VmmConfig { virtual_time, virtual_privilege, ..VmmConfig::BOARD };
                let set = critical_set(&config);
                assert!(set.is_empty() && set.virtualizable(), "{config:?}: {set:?}");
            }
        }
    }

    #[test]
    fn delegated_counters_with_virtual_time_make_exactly_the_counter_reads_critical() {
        for virtual_privilege in PRIVILEGES {
            let config = VmmConfig { delegate_counters: true, virtual_privilege, ..VmmConfig::BOARD };
            let set = critical_set(&config);
            assert!(!set.virtualizable());
            assert_eq!(set.classes().count(), 0);
            let reads = [csr::CYCLE, csr::TIME, csr::INSTRET].map(|number| (number, CsrAccessKind::Read));
            assert!(set.csr_accesses().eq(reads), "{set:?}");
            assert_eq!(set.len(), 3);
            for (number, _) in reads {
                let read = classify_csr(number, CsrAccessKind::Read, &config);
                assert_eq!((read.class(), read.sensitivity), (Class::BehaviourSensitive, Sensitivity::Behaviour));
                assert!(classify_csr(number, CsrAccessKind::Write, &config).traps, "counters are read-only");
            }
            assert!(classify_csr(csr::HPMCOUNTER3 + 4, CsrAccessKind::Read, &config).traps, "never delegated");
        }
        // Seeing the machine's own counters is what the VM is promised without virtual time: nothing critical.
        let real_time = VmmConfig { delegate_counters: true, virtual_time: false, ..VmmConfig::BOARD };
        assert!(critical_set(&real_time).virtualizable());
        assert_eq!(classify_csr(csr::TIME, CsrAccessKind::Read, &real_time).class(), Class::Innocuous);
    }

    #[test]
    fn exposing_a_cache_block_feature_the_virtual_hart_lacks_makes_its_operations_critical() {
        let expose = |envcfg: EnvcfgExposure| critical_set(&VmmConfig { envcfg, ..VmmConfig::BOARD });
        let classes = |set: &CriticalSet| set.classes().collect::<heapless::Vec<_, 8>>();
        use InstructionClass::{CboClean, CboFlush, CboInval, CboZero};
        assert!(expose(EnvcfgExposure { fiom: true, ..EnvcfgExposure::NONE }).virtualizable(), "FIOM is moot");
        assert_eq!(classes(&expose(EnvcfgExposure { cbze: true, ..EnvcfgExposure::NONE })), [CboZero]);
        assert_eq!(classes(&expose(EnvcfgExposure { cbcfe: true, ..EnvcfgExposure::NONE })), [CboClean, CboFlush]);
        for cbie in [CbieMode::Flush, CbieMode::Invalidate] {
            let set = expose(EnvcfgExposure { cbie, ..EnvcfgExposure::NONE });
            assert_eq!(classes(&set), [CboInval]);
            assert_eq!(set.csr_accesses().count(), 0);
        }
        let all = EnvcfgExposure { fiom: true, cbie: CbieMode::Invalidate, cbcfe: true, cbze: true };
        assert_eq!(all.envcfg_bits(), 0xf1);
        assert_eq!(EnvcfgExposure::NONE.envcfg_bits(), 0);
    }

    #[test]
    fn the_privileged_instructions_trap_and_are_control_sensitive() {
        for config in configurations() {
            for class in [
                InstructionClass::Ecall,
                InstructionClass::Ebreak,
                InstructionClass::Sret,
                InstructionClass::Mret,
                InstructionClass::Wfi,
                InstructionClass::SfenceVma,
            ] {
                let entry = class.classify(&config);
                assert_eq!((entry.traps, entry.sensitivity), (true, Sensitivity::Control), "{class:?}");
            }
            for class in
                [InstructionClass::FenceI, InstructionClass::Amo, InstructionClass::Load, InstructionClass::Csr]
            {
                assert_eq!(class.classify(&config).class(), Class::Innocuous, "{class:?}");
            }
            let sret = InstructionClass::Sret.classify(&config).reason;
            assert_eq!(sret.contains("injected"), config.virtual_privilege == Privilege::User, "{sret}");
            let mhartid = classify_csr(csr::MHARTID, CsrAccessKind::Read, &config);
            assert_eq!((mhartid.class(), mhartid.sensitivity), (Class::Privileged, Sensitivity::Behaviour));
            let write_mhartid = classify_csr(csr::MHARTID, CsrAccessKind::Write, &config);
            assert_eq!((write_mhartid.traps, write_mhartid.sensitivity), (true, Sensitivity::Innocuous), "read-only");
            let satp = classify_csr(csr::SATP, CsrAccessKind::Write, &config);
            assert_eq!((satp.class(), satp.sensitivity), (Class::Privileged, Sensitivity::Control));
        }
    }

    #[test]
    fn every_number_of_a_named_range_is_classified_alike_and_every_other_csr_traps() {
        for config in configurations() {
            for kind in CsrAccessKind::ALL {
                for &(name, first, last) in NAMED_CSRS {
                    let expected = classify_csr(first, kind, &config);
                    for number in first..=last {
                        assert_eq!(classify_csr(number, kind, &config), expected, "{name} {number:#x}");
                        assert_eq!(csr_name(number), Some(name));
                    }
                }
                for number in (0..CSR_COUNT as u16).filter(|&number| csr_name(number).is_none()) {
                    assert!(classify_csr(number, kind, &config).traps, "{number:#x} {kind:?}");
                }
            }
        }
    }

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

    /// The table cannot drift from the hart model: for every CSR number and access kind, the access is
    /// privileged exactly when the virtual hart, standing for the real machine with the guest in U-mode and the
    /// counter enables the configuration sets, raises illegal-instruction for it.
    #[test]
    fn every_csr_access_is_privileged_exactly_when_the_hart_in_user_mode_raises_illegal_instruction() {
        let dispatcher = &mut Dispatcher::new();
        for config in configurations() {
            let mut real = Hart::new(HartConfig::rv64gc(0));
            real.csrs.mcounteren = config.real_counteren();
            real.csrs.scounteren = config.real_counteren();
            real.csrs.menvcfg = config.envcfg.envcfg_bits();
            // The guest's FPU is on (Initial), as the table assumes; the real machine's mirrors it.
            real.csrs.mstatus |= 1 << mstatus::FS_SHIFT;
            real.privilege = Privilege::User;
            real.pc = 0x8000_0000;
            for number in 0..CSR_COUNT as u16 {
                for kind in CsrAccessKind::ALL {
                    let (op, src) = match kind {
                        CsrAccessKind::Read => (CsrOp::Rs, 0),
                        CsrAccessKind::Write => (CsrOp::Rw, 6),
                        CsrAccessKind::SetClear => (CsrOp::Rc, 6),
                    };
                    let inst = Inst::Csr { op, rd: 5, src, csr: number };
                    let mut hart = real.clone();
                    dispatcher.dispatch(Exit::System { inst, word: 0, len: 4 }, &mut hart, &mut NoDevices);
                    let raised = hart.privilege == Privilege::Machine
                        && hart.csrs.mcause == Exception::IllegalInstruction as u64;
                    assert!(raised || hart.pc == real.pc + 4, "{number:#x} {kind:?}: trapped or retired");
                    let classification = classify_csr(number, kind, &config);
                    assert_eq!(classification.traps, raised, "{number:#x} {kind:?} under {config:?}");
                    // The hart's own access checks say the same.
                    let refused = real.read_csr(number, 0).is_err()
                        || (kind.writes() && real.clone().write_csr(number, 0).is_err());
                    assert_eq!(classification.traps, refused, "{number:#x} {kind:?} under {config:?}");
                }
            }
        }
    }
}
