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
//! The engine must never map, allow or leave the guest anything outside its partition: `satp` always holds a
//! shadow root of this VM's tables (which map only its real map), PMP is reprogrammed for this VM before it runs,
//! and `mstatus` is rebuilt from scratch (MPP = U, MPRV = 0) for every entry.

use trapeze::exec::native::{self, Action, HostTrap};
use trapeze::exec::{interp, Engine};
use trapeze::hart::Hart;
use trapeze::isa::csr::mstatus;
use trapeze::isa::Inst;
use trapeze::mem::mmu::Memory;
use trapeze::mem::shadow::{FillOutcome, ShadowTables};
use trapeze::mem::sv39::AccessType;
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
            stats: Stats::default(),
        }
    }

    /// Makes the hardware hold this VM's PMP walls, and drops the shadow mappings a guest `sfence.vma` made stale.
    fn prepare(&mut self) {
        // SAFETY: the board runs on one hart and never re-enters the engine; LOADED_VM is only touched here.
        let loaded = unsafe { &mut *core::ptr::addr_of_mut!(LOADED_VM) };
        if *loaded != self.id {
            let pool_start = &*self.shadow as *const ShadowTables<POOL> as u64;
            let pool_end = pool_start + core::mem::size_of::<ShadowTables<POOL>>() as u64;
            hw::set_pmp(self.partition.0, self.partition.1, pool_start & !3, (pool_end + 3) & !3);
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

impl Engine for NativeEngine {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        self.prepare();
        let ram_host_base = memory.ram.as_ptr() as u64;
        let now = hw::mtime();
        hw::timer_no_later_than(now.saturating_add(native::quantum_ticks(budget)), now);
        loop {
            self.load_root(hart);
            let trap = self.enter(hart);
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
                self.shadow.fill(hart, memory.ram, memory.realmap, ram_host_base, va, access)
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
                    self.stats.emulated += 1;
                    if let Err(exit) = interp::step(hart, memory) {
                        return self.finish(hart, exit);
                    }
                }
            }
        }
    }
}
