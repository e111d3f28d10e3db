//! The native engine: `trapeze::exec::Engine` on the real processor. The guest runs in real U-mode whatever its
//! virtual privilege, on shadow page tables, walled in by PMP; every real trap comes back here and is classified
//! by the portable `trapeze::exec::native`: shadow misses are filled and the guest resumed without leaving `run`,
//! everything else becomes the `Exit` the emulation engines would return, for the same dispatcher.
//!
//! The instruction budget becomes a time quantum on the real machine timer (`native::quantum_ticks`). Guest
//! registers come from and go back to `hart.x`/`hart.pc`; the FPU follows the virtual `mstatus.FS` (Off: real FS
//! Off, so FP instructions trap illegal and the dispatcher raises illegal-instruction; otherwise the registers and
//! `fcsr` are switched with `hart.fp`, and a real Dirty marks the virtual FS dirty). `instret` advances by the real
//! `minstret` delta, which QEMU fills with host ticks: monotonic, not exact.
//!
//! **Counters delegated** (an option per VM, [`NativeEngine::delegate_counters`]): the real `mcounteren` and
//! `scounteren` let the guest read `cycle`, `time` and `instret` natively, which makes those reads *critical*
//! (sensitive, no longer trapping), so the VM's code runs only once the patching scanner (`trapeze::patch`) has
//! patched them into traps, following the call-order contract of `trapeze::patch::scan`:
//! 1. shadow leaves are filtered through `PatchTable::native_grants` (X only on scanned pages, never W on them,
//!    never R on a page with sites);
//! 2. a fetch the filter withheld scans the page from the faulting pc (`Coverage::Guard`), then the guest
//!    retries; a page the scanner refuses (conflict, unresolved, not RAM) stays non-executable and its
//!    instructions are emulated one at a time; a full table evicts a page (and flushes the shadow tables, which
//!    takes that page's X away) and scans again;
//! 3. an illegal-instruction trap at a patched site becomes the original instruction's exit
//!    (`exec::native::patched_site_exit`), so the dispatcher emulates the counter read with the VM's virtual
//!    values, `mcounteren`/`scounteren` of the virtual hart honoured;
//! 4. a store the filter withheld (to a scanned page) drops the page's patches and scan (`drop_page` restores
//!    the original bytes) and **flushes the whole shadow tables** (the page may be mapped executable at several
//!    virtual addresses; per-page invalidation by guest real address is left for later), then the store retries;
//! 5. a load the filter withheld (from a page with sites), or one the shadow tables cannot express (emulated
//!    anyway) from such a page, is emulated with the page's original bytes restored around the one instruction,
//!    so the guest reads its code as it wrote it (a misaligned load spilling into a *second* patched page would
//!    read that page's patched parcels: not handled yet). Other reads the VMM makes of guest RAM on the guest's
//!    behalf (SBI, device DMA, the debugger) do not unpatch yet, nor do the VMM's own writes drop patches: the
//!    one VM with counters delegated (`counters`, bare metal) uses none of them.
//!
//! The engine must never map, allow or leave the guest anything outside its partition: `satp` always holds a
//! shadow root of this VM's tables (which map only its real map), PMP is reprogrammed for this VM before it runs,
//! and `mstatus` is rebuilt from scratch (MPP = U, MPRV = 0) for every entry.

use trapeze::exec::native::{self, Action, HostTrap};
use trapeze::exec::{interp, Engine};
use trapeze::hart::Exception;
use trapeze::hart::Hart;
use trapeze::isa::csr::mstatus;
use trapeze::isa::Inst;
use trapeze::mem::mmu::{Memory, Target};
use trapeze::mem::shadow::{self, FillOutcome, ShadowTables};
use trapeze::mem::sv39::AccessType;
use trapeze::patch::scan::{self, Coverage, ScanError};
use trapeze::patch::sensitivity::{critical_set, CriticalSet, VmmConfig};
use trapeze::patch::table::{CodeMemory, PatchTable, TRAP_PARCEL};
use trapeze::trap::Exit;

use crate::hw;
use crate::switch::{enter_guest, GuestContext};

/// Shadow table pages per VM.
pub const POOL: usize = 128;
/// `mstatus.FS` values.
const FS_CLEAN: u64 = 2 << 13;
const FS_DIRTY: u64 = 3 << 13;
/// `mstatus.MPIE`.
const MPIE: u64 = 1 << 7;

/// Which VM's PMP walls the hardware holds (0: none yet), so a switch between VMs reprograms them.
static mut LOADED_VM: usize = 0;

/// Patched sites a VM's patch table holds.
pub const PATCH_SITES: usize = 1024;
/// Scanned pages a VM's patch table holds.
pub const PATCH_PAGES: usize = 256;
/// A VM's patch table.
pub type Patches = PatchTable<PATCH_SITES, PATCH_PAGES>;

/// What the patching scanner did for a VM whose counters are delegated.
#[derive(Debug, Default, Clone, Copy)]
pub struct PatchStats {
    /// Pages scanned (each on a fetch from an unscanned page).
    pub scans: u64,
    /// Critical instructions patched (on reached paths, plus guards).
    pub patched: u64,
    /// Traps at patched sites, emulated by the dispatcher.
    pub site_traps: u64,
    /// Pages whose patches a guest store dropped (each a full shadow flush).
    pub dropped: u64,
    /// Loads from patched pages, emulated on the original bytes.
    pub unpatched_loads: u64,
    /// Fetches from a page the scanner refused, emulated.
    pub refused: u64,
}

/// The patching scanner's state for a VM whose counters are delegated.
struct Patcher {
    table: &'static mut Patches,
    critical: CriticalSet,
    /// Pages (guest real) the scanner refused: they run by emulation.
    refused: [Option<u64>; REFUSED_PAGES],
    stats: PatchStats,
}

/// Refused pages a VM remembers.
const REFUSED_PAGES: usize = 16;

/// Counts of what the engine did, for the VMM's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// World switches into the guest.
    pub entries: u64,
    /// Shadow page table fills (the guest resumed without leaving the engine).
    pub fills: u64,
    /// Instructions the shadow tables cannot express, run by the interpreter.
    pub emulated: u64,
    /// Exits handed to the dispatcher.
    pub exits: u64,
    /// Quanta that ran to their end.
    pub quanta: u64,
    /// Real access faults: PMP stopped a guest access.
    pub walled: u64,
    /// Machine timer ticks spent running the guest (between entry and trap).
    pub guest_ticks: u64,
}

/// The native engine of one VM.
pub struct NativeEngine {
    /// A small nonzero number naming the VM (for [`LOADED_VM`]).
    id: usize,
    shadow: &'static mut ShadowTables<POOL>,
    context: GuestContext,
    /// The VM's RAM partition in host physical addresses.
    partition: (u64, u64),
    /// The last exit was the guest's `sfence.vma` with these operands (address, ASID): drop the shadow mappings
    /// it covers before the guest runs again.
    fence_pending: Option<(Option<u64>, Option<u16>)>,
    /// The real `satp` and shadow generation the hardware was last fenced at for this VM (`None`: fence again).
    fenced: Option<(u64, u64)>,
    /// The last fill, to notice a fill that does not let the access through (then the instruction is emulated).
    last_fill: Option<(u64, AccessType)>,
    /// `Some` when the VM's counters are delegated: its pages are scanned and patched before they run.
    patcher: Option<Patcher>,
    pub stats: Stats,
}

impl NativeEngine {
    /// An engine for the VM numbered `id` (nonzero, unique), whose RAM is the host range `partition`.
    pub fn new(id: usize, shadow: &'static mut ShadowTables<POOL>, partition: (u64, u64)) -> Self {
        Self {
            id,
            shadow,
            context: GuestContext::new(),
            partition,
            fence_pending: None,
            fenced: None,
            last_fill: None,
            patcher: None,
            stats: Stats::default(),
        }
    }

    /// Delegates the counters to this VM: the real `mcounteren`/`scounteren` let it read `cycle`, `time` and
    /// `instret` natively while it runs, and every page it executes is scanned first, its counter reads patched
    /// into traps recorded in `table` (see the module documentation). Call before the VM first runs.
    pub fn delegate_counters(&mut self, table: &'static mut Patches) {
        let config = VmmConfig { delegate_counters: true, ..VmmConfig::BOARD };
        self.patcher = Some(Patcher {
            table,
            critical: critical_set(&config),
            refused: [None; REFUSED_PAGES],
            stats: PatchStats::default(),
        });
    }

    /// What the patching scanner did (`None`: the VM's counters trap).
    pub fn patch_stats(&self) -> Option<PatchStats> {
        self.patcher.as_ref().map(|patcher| patcher.stats)
    }

    /// Makes the hardware hold this VM's PMP walls, and drops the shadow mappings a guest `sfence.vma` made stale.
    fn prepare(&mut self) {
        // SAFETY: the board runs on one hart and never re-enters the engine; LOADED_VM is only touched here.
        let loaded = unsafe { &mut *core::ptr::addr_of_mut!(LOADED_VM) };
        if *loaded != self.id {
            let pool_start = &*self.shadow as *const ShadowTables<POOL> as u64;
            let pool_end = pool_start + core::mem::size_of::<ShadowTables<POOL>>() as u64;
            hw::set_pmp(self.partition.0, self.partition.1, pool_start & !3, (pool_end + 3) & !3);
            hw::set_counteren(if self.patcher.is_some() { 0b111 } else { 0 });
            *loaded = self.id;
            self.fenced = None;
        }
        if let Some((address, asid)) = self.fence_pending.take() {
            self.shadow.sfence_vma(address, asid);
        }
    }

    /// Points the real `satp` at the shadow root of the hart's regime, fencing when the root or the tables
    /// changed since the last fence.
    fn load_root(&mut self, hart: &Hart) {
        let satp = self.shadow.root_satp(hart);
        let state = (satp, self.shadow.generation());
        if self.fenced != Some(state) {
            hw::set_satp(satp);
            self.fenced = Some(state);
        }
    }

    /// Runs the guest once, until its next real trap.
    fn enter(&mut self, hart: &mut Hart) -> HostTrap {
        let context = &mut self.context;
        context.x = hart.x;
        context.pc = hart.pc;
        let fp = hart.fp_enabled();
        context.fp_switch = fp as u64;
        if fp {
            context.f = hart.fp.f;
            context.fcsr = hart.fp.fcsr();
        }
        // Real U-mode (MPP = 0), MPRV/SUM/MXR clear, TW set so `wfi` traps, FS Clean or Off.
        context.mstatus = MPIE | mstatus::TW | if fp { FS_CLEAN } else { 0 };
        let instret_before = hw::minstret();
        let time_before = hw::mtime();
        enter_guest(context);
        self.stats.guest_ticks += hw::mtime().saturating_sub(time_before);
        let retired = hw::minstret().wrapping_sub(instret_before);
        self.stats.entries += 1;
        hart.instret = hart.instret.wrapping_add(retired);
        hart.x = context.x;
        hart.x[0] = 0;
        hart.pc = context.pc;
        if fp && context.mstatus & FS_DIRTY == FS_DIRTY {
            hart.fp.f = context.f;
            hart.fp.set_fcsr(context.fcsr);
            hart.mark_fp_dirty();
        }
        HostTrap { mcause: context.mcause, mtval: context.mtval, mepc: context.pc }
    }

    fn finish(&mut self, hart: &Hart, exit: Exit) -> Exit {
        // The timer stays armed: if it fires before the next entry, that quantum just ends at once.
        self.stats.exits += 1;
        if let Exit::System { inst: Inst::SfenceVma { rs1, rs2 }, .. } = exit {
            // The operands as the instruction reads them (the dispatcher changes no register for it).
            let address = (rs1 != 0).then(|| hart.x(rs1));
            let asid = (rs2 != 0).then(|| hart.x(rs2) as u16);
            self.fence_pending = Some((address, asid));
        }
        exit
    }
}

impl NativeEngine {
    /// The exit of an illegal-instruction trap at `hart.pc` when a patched site is there (`None`: the guest's own
    /// illegal or privileged instruction, or counters not delegated).
    fn patched_site(&mut self, hart: &Hart, memory: &mut Memory) -> Option<Exit> {
        let patcher = self.patcher.as_mut()?;
        let pa = shadow::fetch_guest_real(hart, memory.ram, hart.pc).ok()?;
        let table = &*patcher.table;
        let ram = &mut *memory.ram;
        let exit = native::patched_site_exit(table, hart, pa, || {
            // The high half of a site straddling a page end, through the guest's current translation.
            let next = hart.pc.wrapping_add(2);
            let fault = |cause| Exit::Exception { cause, tval: next };
            let pa = shadow::fetch_guest_real(hart, ram, next)
                .map_err(|fault| Exit::Exception { cause: fault.exception, tval: fault.tval })?;
            scan::original_parcel(table, ram, pa).ok_or(fault(Exception::InstructionAccessFault))
        })?;
        patcher.stats.site_traps += 1;
        Some(exit)
    }

    /// Emulates the one instruction at `hart.pc` (the shadow tables cannot run it natively). With patching, a
    /// patched site is the original instruction's exit, and a store first drops the patches of the page it
    /// writes.
    fn emulate(&mut self, hart: &mut Hart, memory: &mut Memory, va: u64, access: AccessType) -> Result<(), Exit> {
        self.stats.emulated += 1;
        if self.patcher.is_some() {
            if let Some(exit) = self.patched_site(hart, memory) {
                return Err(exit);
            }
            match access {
                AccessType::Store => self.drop_patches_at(hart, memory, va),
                AccessType::Load => {
                    if let (Some(patcher), Ok(Target::Ram(offset))) =
                        (self.patcher.as_mut(), memory.translate(hart, va, 1, AccessType::Load))
                    {
                        // The board's real maps are the identity over RAM: guest real = RAM base + offset.
                        let pa = memory.ram.base().wrapping_add(offset);
                        if !patcher.table.page_sites(pa).is_empty() {
                            patcher.stats.unpatched_loads += 1;
                            return step_on_original_bytes(patcher.table, hart, memory, pa);
                        }
                    }
                }
                AccessType::Fetch => {}
            }
        }
        interp::step(hart, memory)
    }

    /// A store the interpreter is about to make at `va`: drops the patches of the page it lands in (and flushes
    /// the shadow tables, which may map that page executable).
    fn drop_patches_at(&mut self, hart: &Hart, memory: &mut Memory, va: u64) {
        let Some(patcher) = self.patcher.as_mut() else { return };
        if let Ok(Target::Ram(offset)) = memory.translate(hart, va, 1, AccessType::Store) {
            // The board's real maps are the identity over RAM: guest real = RAM base + offset.
            let pa = memory.ram.base().wrapping_add(offset);
            if patcher.table.drop_page(pa, memory.ram) {
                patcher.stats.dropped += 1;
                self.shadow.flush_all();
            }
        }
    }

    /// An access the patch table's grants withheld at `va`, on the page at guest real `guest_real`.
    fn withheld(
        &mut self,
        hart: &mut Hart,
        memory: &mut Memory,
        va: u64,
        access: AccessType,
        guest_real: u64,
    ) -> Result<(), Exit> {
        let Some(patcher) = self.patcher.as_mut() else {
            // Only a patcher withholds anything.
            return self.emulate(hart, memory, va, access);
        };
        match access {
            AccessType::Fetch => {
                if patcher.refused.contains(&Some(guest_real)) {
                    self.stats.emulated += 1;
                    return interp::step(hart, memory);
                }
                let entry = guest_real | (va & 0xfff);
                let next_va = (va | 0xfff).wrapping_add(1);
                let next = shadow::fetch_guest_real(hart, memory.ram, next_va)
                    .ok()
                    .and_then(|pa| scan::original_parcel(&*patcher.table, &*memory.ram, pa));
                let mut result = scan::scan(patcher.table, memory.ram, &patcher.critical, entry, next, Coverage::Guard);
                if let Err(ScanError::Full(_)) = result {
                    if patcher.table.evict_any(memory.ram).is_some() {
                        // The evicted page may be mapped executable anywhere.
                        self.shadow.flush_all();
                    }
                    result = scan::scan(patcher.table, memory.ram, &patcher.critical, entry, next, Coverage::Guard);
                }
                match result {
                    Ok(report) if report.covers_every_entry() => {
                        patcher.stats.scans += 1;
                        patcher.stats.patched += u64::from(report.patched) + u64::from(report.guarded);
                        Ok(())
                    }
                    refused => {
                        if refused.is_ok() {
                            // A critical-looking word the scan could neither reach nor guard (the page's first
                            // parcel, or the second parcel of a reached instruction): some entry would run it
                            // unpatched, so the page must not run natively at all.
                            patcher.table.drop_page(guest_real, memory.ram);
                        }
                        // Remembered (while there is room), so that its next fetches do not scan it again. A stale
                        // entry (the guest rewrote the page) only costs emulation.
                        if let Some(slot) = patcher.refused.iter_mut().find(|slot| slot.is_none()) {
                            *slot = Some(guest_real);
                        }
                        // Refused (or already scanned, which the grants rule out): the page stays non-executable
                        // and holds no patch; run this instruction by emulation.
                        patcher.stats.refused += 1;
                        self.stats.emulated += 1;
                        interp::step(hart, memory)
                    }
                }
            }
            AccessType::Store => {
                patcher.table.drop_page(guest_real, memory.ram);
                patcher.stats.dropped += 1;
                // Per-page invalidation would need every virtual alias of the page: flush everything.
                self.shadow.flush_all();
                // Emulate the store rather than retry it natively: a store to the page it runs from would
                // otherwise alternate forever between dropping the page (for the store) and scanning it (for the
                // fetch of the same store).
                self.stats.emulated += 1;
                interp::step(hart, memory)
            }
            AccessType::Load => {
                patcher.stats.unpatched_loads += 1;
                self.stats.emulated += 1;
                step_on_original_bytes(patcher.table, hart, memory, guest_real)
            }
        }
    }
}

/// Runs the one instruction at `hart.pc` (a load) with the original bytes of the page at guest real `page`
/// restored around it, so that a guest reading its own patched code reads what it wrote.
fn step_on_original_bytes(table: &Patches, hart: &mut Hart, memory: &mut Memory, page: u64) -> Result<(), Exit> {
    for site in table.page_sites(page) {
        memory.ram.write_parcel(site.pa, site.original_parcel());
    }
    let result = interp::step(hart, memory);
    for site in table.page_sites(page) {
        memory.ram.write_parcel(site.pa, TRAP_PARCEL);
    }
    result
}

impl Engine for NativeEngine {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        self.prepare();
        let ram_host_base = memory.ram.as_ptr() as u64;
        let now = hw::mtime();
        hw::timer_no_later_than(now.saturating_add(native::quantum_ticks(budget)), now);
        loop {
            self.load_root(hart);
            let trap = self.enter(hart);
            if trap.mcause == Exception::IllegalInstruction as u64 {
                if let Some(exit) = self.patched_site(hart, memory) {
                    self.last_fill = None;
                    return self.finish(hart, exit);
                }
            }
            let (va, access) = match native::classify(trap, hart, memory) {
                Action::QuantumOver => {
                    self.stats.quanta += 1;
                    self.last_fill = None;
                    return Exit::BudgetExhausted;
                }
                Action::Exit(exit) => {
                    if matches!(trap.mcause, 1 | 5 | 7) {
                        self.stats.walled += 1;
                        defmt::warn!("vm {=usize}: PMP stopped an access at {=u64:#x}", self.id, trap.mtval);
                    }
                    self.last_fill = None;
                    return self.finish(hart, exit);
                }
                Action::ShadowMiss { va, access } => (va, access),
            };
            // A fill is followed by the same access succeeding; if it faults again, emulate the instruction.
            let refault = self.last_fill == Some((va, access));
            let outcome = if refault {
                FillOutcome::Emulate
            } else {
                let patcher = self.patcher.as_ref();
                self.shadow.fill_with(hart, memory.ram, memory.realmap, ram_host_base, va, access, |pa, granted| {
                    patcher.map_or(granted, |patcher| patcher.table.native_grants(pa, granted))
                })
            };
            self.last_fill = None;
            match outcome {
                FillOutcome::Filled => {
                    self.stats.fills += 1;
                    self.last_fill = Some((va, access));
                    hw::sfence_page(va);
                }
                FillOutcome::GuestFault(fault) => {
                    return self.finish(hart, Exit::Exception { cause: fault.exception, tval: fault.tval });
                }
                FillOutcome::NotRam { guest_real } => {
                    return self.finish(hart, native::mmio_exit(hart, memory, guest_real, va, access));
                }
                FillOutcome::Emulate => {
                    if let Err(exit) = self.emulate(hart, memory, va, access) {
                        return self.finish(hart, exit);
                    }
                }
                FillOutcome::Withheld { guest_real } => {
                    if let Err(exit) = self.withheld(hart, memory, va, access, guest_real) {
                        return self.finish(hart, exit);
                    }
                }
            }
        }
    }
}
