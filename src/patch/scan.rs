//! The patching scanner: on the first fetch from a guest page, decode the instructions execution can reach
//! from the faulting pc, replace the first parcel of every **critical** instruction (sensitive yet not trapping
//! under the VMM's configuration, such as a counter read once the counters are delegated) with
//! [`TRAP_PARCEL`], and record the original in the [`PatchTable`].
//!
//! What this module must never do: sweep a page linearly and decode data as code (only the paths execution can
//! reach from an entry point are followed; see [`Coverage::Guard`] for the one exception, which patches but
//! never follows), patch bytes another decoded instruction depends on, change anything when the scan fails, or
//! panic, loop or overrun on any page contents (every buffer is a fixed bitmap of the page's 2048 parcels,
//! every parcel is decoded at most once, and every read goes through [`CodeMemory`]).
//!
//! # Paths
//! A worklist of entry points within the page (a bitmap: no recursion, no allocation, at most 2048 entries)
//! starts with the faulting pc. From each entry the scanner decodes straight on (variable-length RVC, through
//! [`isa::decode_compressed`] and [`isa::decode_word`]) and adds:
//! * both sides of a conditional branch (the target only when it lies in the page);
//! * a `jal` target in the page; the fall-through of a `jal`/`jalr` that links (`rd != 0`, a call: the callee
//!   returns there);
//! * the fall-through of `ecall`, `ebreak`, `wfi` and every other instruction (the VMM or the guest's handler
//!   returns to the next instruction).
//!
//! A path stops at `jal x0`/`jalr x0` (`j`, `jr`, `ret`), `mret`/`sret`, an illegal word and the end of the
//! page; what follows an unconditional jump is never decoded unless a path leads there, so data placed after a
//! jump is not misread.
//!
//! # Instructions straddling the page end
//! A 32-bit instruction in the page's last parcel continues in the next **virtual** page, which may map to any
//! guest-physical page or to none. The caller passes that page's first (original) parcel as `next_parcel` when
//! the guest's translation reaches RAM ([`original_parcel`] reads one through the table), or `None`.
//! * With it, the instruction is decoded whole; if it is critical, only its first parcel (in this page) is
//!   patched and the site is marked [`PatchSite::straddles`]: the dispatcher takes the high half from the
//!   guest's translation at trap time, so a later remap or rewrite of the next page is harmless. A branch or
//!   `jal` target inside the page is followed.
//! * Without it, a parcel with the SYSTEM major opcode *might* be critical: it is patched all the same
//!   (conservatively; the dispatcher emulates any SYSTEM instruction, critical or not, exactly); another
//!   possibly critical one fails the scan (below). A branch or `jal` there has an unknown target:
//!   [`ScanReport::incomplete`] says so.
//!
//! Any critical instruction is patched the same way, compressed or not (its first parcel traps). The critical
//! sets of today's configurations hold counter reads (SYSTEM-opcode CSR accesses: there is no compressed CSR
//! instruction) and, with `envcfg` features exposed, cache-block operations (MISC-MEM), which the virtual hart
//! does not implement; the dispatcher must be able to emulate whatever the critical set holds. A straddling
//! instruction whose high half is unknown is patched only when it is a SYSTEM instruction (the dispatcher
//! emulates every one of them, critical or not); any other that [`CriticalInstructions::may_start_critical`]
//! allows fails the scan with [`ScanError::Unresolved`].
//!
//! # Conflicts
//! A patched parcel must not be the second parcel of another 32-bit instruction some path decodes (that
//! instruction would run with changed bits). Such overlapping decodes only come from deliberately tangled
//! code; the scan then fails with [`ScanError::Conflict`], nothing is patched, and the page must not run
//! natively (emulate it). The same can happen across a page boundary (a parcel at offset 0 patched here that is
//! the second half of an instruction straddling from the previous page); the scanner cannot see it.
//!
//! # Entry points found later
//! Only what the scanned entries reach is patched. A later indirect jump into another part of an executable
//! scanned page (a function pointer, a trap vector) runs unscanned code: with [`Coverage::Paths`],
//! [`ScanReport::unreached_critical`] counts the critical-looking words the scan did not reach, and the page is
//! safe for every entry only when it is 0. [`Coverage::Guard`] (the board's choice) also patches, without
//! decoding onwards, every critical-looking word outside the reached instructions, so that every entry is
//! covered; it reports instead of guarding a word whose first parcel is the second parcel of a reached
//! instruction, or the page's first parcel (which may be the second half of an instruction straddling in from
//! whatever page precedes this one in some mapping, which the scan cannot see). A guard on data is invisible to
//! the guest too, because a patched page is never readable natively (loads are emulated through
//! [`PatchTable::unpatch`]). One case stays uncovered by design: entering a reached 32-bit instruction in its
//! middle, where the second half holds a site's patched parcel (only deliberately tangled code does that); that
//! entry reads the parcel as `0x0000`.
//!
//! # Board integration (call-order contract for the native engine)
//! The table is per VM and keyed by guest-physical address, so guest `satp` writes and fences need nothing.
//! The steps below are written for patches in place (the scanner given guest RAM itself); the native board
//! gives it a [`super::copies::CopyView`] instead, so patches land in copies of the pages and RAM keeps the
//! original bytes: then step 5 and the unpatching of step 4 have nothing to do, and "take X away" means
//! dropping the page's copy too ([`super::copies::drop_page`]).
//! 1. **Shadow permissions.** A shadow leaf gets X only for a scanned page ([`PatchTable::is_scanned`]); a
//!    scanned page never gets W; a page with sites ([`PatchTable::page_sites`] non-empty) never gets R (it is
//!    execute-only: real `mstatus.MXR` is clear while the guest runs, so its loads fault into the VMM).
//! 2. **Instruction page fault** on a page the guest maps executable but that is not scanned: translate the pc
//!    to `pa`, translate the first address of the next virtual page and read [`original_parcel`] there (`None`
//!    when it is not RAM), then `scan(table, ram, critical, pa, next, Coverage::Guard)`:
//!    * `Ok(_)`: fill the leaf with X (step 1) and resume;
//!    * `Err(Full(_))`: [`PatchTable::evict_any`], take X away from the evicted page (simplest: flush the
//!      shadow tables), scan again; or leave the page non-executable and emulate its instructions;
//!    * `Err(Conflict { .. })`, `Err(Unresolved { .. })` or `Err(NotRam)`: leave the page non-executable and
//!      emulate the instruction (`exec::interp::step`); the page holds no patch (remember a conflict, or every
//!      fetch from the page scans again);
//!    * `Err(AlreadyScanned)`: the fault has another cause (the leaf was dropped or lacks permission): fill.
//! 3. **Illegal-instruction trap**: translate the pc to `pa` and ask
//!    [`crate::exec::native::patched_site_exit`] first; `None` means the guest's own illegal (or privileged)
//!    instruction: [`crate::exec::native::classify`] as today.
//! 4. **Store page fault on a scanned page** (the guest's PTE allows the store): [`PatchTable::drop_page`]
//!    (restores the original bytes), take X away from every shadow leaf of the page, give W, retry the store:
//!    the page is scanned again at its next execution. **Writes the VMM makes** to guest RAM (device DMA, SBI,
//!    loaders, a debugger): [`PatchTable::prepare_write`] before the write lands, same shadow treatment.
//! 5. **Load page fault on an execute-only scanned page** (the guest's PTE allows the load): emulate the load
//!    from RAM and [`PatchTable::unpatch`] the bytes. Every other read of guest RAM the VMM makes on the
//!    guest's behalf (emulated instructions, SBI, the debugger, the illegal-instruction `tval` fetch) that may
//!    cover code should unpatch the same way.
//! 6. The emulation engines never need the patcher: they emulate every instruction and read the counters
//!    themselves. An emulated fetch (step 2's fallback) from a patched page meets [`TRAP_PARCEL`]: treat its
//!    illegal-instruction exit as in step 3.

use super::sensitivity::{CriticalSet, CsrAccessKind, InstructionClass};
use super::table::{CodeMemory, InsertFailure, PatchSite, PatchTable, TableFull, PAGE_SIZE, TRAP_PARCEL};
use crate::isa::{self, csr, CsrOp, Inst};

/// 16-bit parcels in a page: every position an instruction can start at.
pub const PARCELS: usize = (PAGE_SIZE / 2) as usize;
const WORDS: usize = PARCELS / 64;
/// The SYSTEM major opcode (bits 6:0) shared by every CSR access and privileged instruction.
const SYSTEM_OPCODE: u16 = 0b111_0011;
const MISC_MEM_OPCODE: u16 = 0b000_1111;
const BRANCH_OPCODE: u16 = 0b110_0011;
const JAL_OPCODE: u16 = 0b110_1111;

/// The critical set: which decoded instructions must be patched into traps.
pub trait CriticalInstructions {
    fn is_critical(&self, inst: &Inst) -> bool;

    /// Whether some critical instruction starts with the 16-bit parcel `first`: false only when none can. The
    /// scanner asks it about an instruction whose second half it cannot read, and to skip parcels quickly. The
    /// default says yes.
    fn may_start_critical(&self, first: u16) -> bool {
        let _ = first;
        true
    }
}

impl<F: Fn(&Inst) -> bool> CriticalInstructions for F {
    fn is_critical(&self, inst: &Inst) -> bool {
        self(inst)
    }
}

/// The critical set of a VMM that delegates the counters: reads (without writes) of `cycle`, `time` and
/// `instret` (`csrrs`/`csrrc` with `rs1 = x0`, `csrrsi`/`csrrci` with immediate 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterReads;

impl CriticalInstructions for CounterReads {
    fn is_critical(&self, inst: &Inst) -> bool {
        matches!(
            inst,
            Inst::Csr {
                op: CsrOp::Rs | CsrOp::Rc | CsrOp::Rsi | CsrOp::Rci,
                src: 0,
                csr: csr::CYCLE | csr::TIME | csr::INSTRET,
                ..
            }
        )
    }

    fn may_start_critical(&self, first: u16) -> bool {
        first & 0x7f == SYSTEM_OPCODE
    }
}

/// The sensitivity table's critical set of a configuration ([`super::sensitivity::critical_set`]).
impl CriticalInstructions for CriticalSet {
    fn is_critical(&self, inst: &Inst) -> bool {
        match *inst {
            Inst::Csr { op, src, csr, .. } => self.contains_csr(csr, CsrAccessKind::of(op, src)),
            _ => self.contains_class(InstructionClass::of(inst)),
        }
    }

    fn may_start_critical(&self, first: u16) -> bool {
        let system = first & 0x7f == SYSTEM_OPCODE;
        let misc_mem = first & 0x7f == MISC_MEM_OPCODE;
        self.classes().any(|class| match class {
            InstructionClass::CboInval
            | InstructionClass::CboClean
            | InstructionClass::CboFlush
            | InstructionClass::CboZero => misc_mem,
            InstructionClass::Ecall
            | InstructionClass::Ebreak
            | InstructionClass::Sret
            | InstructionClass::Mret
            | InstructionClass::Wfi
            | InstructionClass::SfenceVma => system,
            // Any other row may start with any parcel (compressed forms included).
            _ => true,
        }) || (system && self.csr_accesses().next().is_some())
    }
}

/// How much of the page to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Only the critical instructions on the paths reached from the entry.
    Paths,
    /// Those, plus a guard on every other critical-looking word (see the module documentation).
    Guard,
}

/// What a successful scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanReport {
    /// Instructions decoded on the reached paths.
    pub instructions: u16,
    /// Critical instructions patched on the reached paths.
    pub patched: u16,
    /// Critical-looking words off the reached paths patched as guards ([`Coverage::Guard`]).
    pub guarded: u16,
    /// Critical-looking words left unpatched: off the reached paths ([`Coverage::Paths`]), or the second parcel
    /// of a reached instruction (either coverage). An entry point there would run them unpatched.
    pub unreached_critical: u16,
    /// A branch or `jal` straddling the page end could not be followed (its high half was not available).
    pub incomplete: bool,
}

impl ScanReport {
    /// Whether every entry point into the page is covered, not only the scanned ones.
    pub const fn covers_every_entry(&self) -> bool {
        self.unreached_critical == 0
    }
}

/// Why a scan changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// The entry pc is odd (no instruction starts there; the fetch faults anyway).
    Misaligned,
    /// The page is already scanned (drop it first to rescan).
    AlreadyScanned,
    /// The page is not guest RAM.
    NotRam,
    /// A critical instruction at `pa` overlaps another decoded instruction: the page must not run natively.
    Conflict { pa: u64 },
    /// The reached instruction at `pa` straddles the page end, its second half is not available, and it may be
    /// critical without being a SYSTEM instruction (which would be patched conservatively): the page must not
    /// run natively until the next page can be read (emulate the instruction).
    Unresolved { pa: u64 },
    /// The patch table has no room: the page stays unscanned (see the table's documentation for fallbacks).
    Full(TableFull),
}

impl From<TableFull> for ScanError {
    fn from(full: TableFull) -> Self {
        ScanError::Full(full)
    }
}

/// One bit per parcel of the page.
#[derive(Clone, Copy)]
struct ParcelSet([u64; WORDS]);

impl ParcelSet {
    const fn new() -> Self {
        Self([0; WORDS])
    }

    fn contains(&self, index: usize) -> bool {
        self.0.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    fn insert(&mut self, index: usize) {
        if let Some(word) = self.0.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(word) = self.0.get_mut(index / 64) {
            *word &= !(1 << (index % 64));
        }
    }

    fn first(&self) -> Option<usize> {
        self.0.iter().enumerate().find(|(_, word)| **word != 0).map(|(n, word)| n * 64 + word.trailing_zeros() as usize)
    }

    fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..PARCELS).filter(|&index| self.contains(index))
    }
}

/// Reads the page's parcels for the scan.
struct Page<'m, M: CodeMemory + ?Sized> {
    memory: &'m M,
    base: u64,
    next_parcel: Option<u16>,
}

impl<M: CodeMemory + ?Sized> Page<'_, M> {
    fn parcel(&self, index: usize) -> Result<u16, ScanError> {
        self.memory.read_parcel(self.base + 2 * index as u64).ok_or(ScanError::NotRam)
    }

    /// The high parcel of a 32-bit instruction starting at `index`: from this page, or the next page's for the
    /// last parcel (`None` when unavailable).
    fn upper(&self, index: usize) -> Result<Option<u16>, ScanError> {
        if index + 1 < PARCELS {
            self.parcel(index + 1).map(Some)
        } else {
            Ok(self.next_parcel)
        }
    }
}

/// Whether a scan patches this instruction (first parcel `low`): critical, and not already the trap parcel.
fn patchable(critical: &(impl CriticalInstructions + ?Sized), low: u16, inst: &Inst) -> bool {
    low != TRAP_PARCEL && critical.may_start_critical(low) && critical.is_critical(inst)
}

/// The original parcel at guest-physical `pa` (patched bytes restored): what to pass as a scan's `next_parcel`
/// after translating the address that follows the scanned page.
pub fn original_parcel<M: CodeMemory + ?Sized, const S: usize, const P: usize>(
    table: &PatchTable<S, P>,
    memory: &M,
    pa: u64,
) -> Option<u16> {
    let mut bytes = memory.read_parcel(pa)?.to_le_bytes();
    table.unpatch(pa, &mut bytes);
    Some(u16::from_le_bytes(bytes))
}

/// Scans the guest page holding guest-physical `entry` from `entry` (see the module documentation), patches
/// its critical instructions and records the page and its sites in `table`. On `Err` nothing was changed.
///
/// `next_parcel` is the original first parcel of the page that follows in the guest's virtual address space
/// (for an instruction straddling the page end), `None` when it is not mapped to RAM.
pub fn scan<M, C, const SITES: usize, const PAGES: usize>(
    table: &mut PatchTable<SITES, PAGES>,
    memory: &mut M,
    critical: &C,
    entry: u64,
    next_parcel: Option<u16>,
    coverage: Coverage,
) -> Result<ScanReport, ScanError>
where
    M: CodeMemory + ?Sized,
    C: CriticalInstructions + ?Sized,
{
    if entry & 1 != 0 {
        return Err(ScanError::Misaligned);
    }
    let base = entry & !(PAGE_SIZE - 1);
    if table.is_scanned(base) {
        return Err(ScanError::AlreadyScanned);
    }
    let page = Page { memory: &*memory, base, next_parcel };
    let mut report = ScanReport::default();

    // Parcels where a reached instruction starts; second parcels of reached 32-bit instructions that are not
    // themselves patched (patching one would change that instruction); pending entry points; sites.
    let mut starts = ParcelSet::new();
    let mut plain_tails = ParcelSet::new();
    let mut pending = ParcelSet::new();
    let mut sites = ParcelSet::new();
    pending.insert(((entry - base) / 2) as usize);

    while let Some(entry_index) = pending.first() {
        pending.remove(entry_index);
        let mut index = entry_index;
        // Each turn marks a new start or leaves: at most PARCELS turns over the whole scan.
        while index < PARCELS && !starts.contains(index) {
            starts.insert(index);
            report.instructions = report.instructions.saturating_add(1);
            let low = page.parcel(index)?;
            let (inst, len) = if low & 3 != 3 {
                (isa::decode_compressed(low), 1)
            } else {
                match page.upper(index)? {
                    Some(upper) => (isa::decode_word(low as u32 | (upper as u32) << 16), 2),
                    None => {
                        // The last parcel, its high half unknown: patch a possible SYSTEM instruction (the
                        // dispatcher emulates any of them), refuse any other possibly critical one, and note a
                        // control transfer that cannot be followed. Its fall-through is the next page anyway.
                        if critical.may_start_critical(low) {
                            if low & 0x7f == SYSTEM_OPCODE {
                                sites.insert(index);
                            } else {
                                return Err(ScanError::Unresolved { pa: base + 2 * index as u64 });
                            }
                        }
                        if matches!(low & 0x7f, BRANCH_OPCODE | JAL_OPCODE) {
                            report.incomplete = true;
                        }
                        break;
                    }
                }
            };
            if patchable(critical, low, &inst) {
                sites.insert(index);
            } else if len == 2 && index + 1 < PARCELS {
                plain_tails.insert(index + 1);
            }
            let mut follow = |offset: i32| {
                let target = (2 * index) as i64 + offset as i64;
                if (0..PAGE_SIZE as i64).contains(&target) && target % 2 == 0 {
                    let target = (target / 2) as usize;
                    if !starts.contains(target) {
                        pending.insert(target);
                    }
                }
            };
            let falls_through = match inst {
                Inst::Branch { offset, .. } => {
                    follow(offset);
                    true
                }
                Inst::Jal { rd, offset } => {
                    follow(offset);
                    rd != 0
                }
                Inst::Jalr { rd, .. } => rd != 0,
                Inst::Mret | Inst::Sret | Inst::Illegal(_) => false,
                _ => true,
            };
            if !falls_through {
                break;
            }
            index += len;
        }
    }

    if let Some(index) = sites.iter().find(|&index| plain_tails.contains(index)) {
        return Err(ScanError::Conflict { pa: base + 2 * index as u64 });
    }
    report.patched = sites.len() as u16;

    // Critical-looking words that no reached instruction starts at.
    let mut guards = ParcelSet::new();
    for index in 0..PARCELS {
        if starts.contains(index) {
            continue;
        }
        let low = page.parcel(index)?;
        if low == TRAP_PARCEL || !critical.may_start_critical(low) {
            continue;
        }
        // Whether it can be guarded: it is critical, or may be (the second half is unknown) and is a SYSTEM
        // instruction the dispatcher emulates whatever it turns out to be.
        let (looks_critical, guardable) = if low & 3 != 3 {
            let critical = patchable(critical, low, &isa::decode_compressed(low));
            (critical, critical)
        } else {
            match page.upper(index)? {
                Some(upper) => {
                    let critical = patchable(critical, low, &isa::decode_word(low as u32 | (upper as u32) << 16));
                    (critical, critical)
                }
                None => (true, low & 0x7f == SYSTEM_OPCODE),
            }
        };
        if !looks_critical {
            continue;
        }
        // Never a guard in the first parcel: it may be the second half of an instruction straddling in from
        // whatever page precedes this one in some mapping, which the scan cannot see.
        if coverage == Coverage::Guard && guardable && index != 0 && !plain_tails.contains(index) {
            guards.insert(index);
        } else {
            report.unreached_critical = report.unreached_critical.saturating_add(1);
        }
    }
    report.guarded = guards.len() as u16;

    // Commit: the table first (which changes nothing when it is full), then the parcels.
    let mut patched = sites;
    for (word, guard) in patched.0.iter_mut().zip(guards.0) {
        *word |= guard;
    }
    let mut indices = patched.iter();
    let site = |_| {
        let index = indices.next()?;
        let pa = base + 2 * index as u64;
        let low = memory.read_parcel(pa)?;
        if low & 3 != 3 {
            return Some(PatchSite { pa, word: low as u32, len: 2, straddles: false });
        }
        let upper = if index + 1 < PARCELS { Some(memory.read_parcel(pa + 2)?) } else { next_parcel };
        let word = low as u32 | (upper.unwrap_or(0) as u32) << 16;
        Some(PatchSite { pa, word, len: 4, straddles: index + 1 == PARCELS })
    };
    table.insert_page(base, patched.len(), site).map_err(|failure| match failure {
        InsertFailure::Full(full) => ScanError::Full(full),
        InsertFailure::Source => ScanError::NotRam,
    })?;
    for index in patched.iter() {
        if !memory.write_parcel(base + 2 * index as u64, TRAP_PARCEL) {
            table.drop_page(base, memory);
            return Err(ScanError::NotRam);
        }
    }
    Ok(report)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
