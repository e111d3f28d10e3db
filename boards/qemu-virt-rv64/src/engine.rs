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
//! patched them into traps, following the call-order contract of `trapeze::patch::scan`, with one change: the
//! patches land in **copies** of the guest's pages (`trapeze::patch::copies`), never in guest RAM.
//! 1. shadow leaves are filtered through `PatchTable::native_grants` (X only on scanned pages, never W on them,
//!    never R on a page with sites), and a page with sites is mapped execute-only onto its patched copy (the
//!    copies are the only other memory PMP lets the guest fetch from);
//! 2. a fetch the filter withheld scans the page from the faulting pc (`Coverage::Guard`), takes W away from
//!    every shadow leaf of the page (`ShadowTables::revoke_write`: an alias filled writable before the scan must
//!    not store into it unseen), then the guest retries; a page the scanner refuses (conflict, unresolved, not
//!    RAM) stays non-executable and its instructions are emulated one at a time; a full table (or no free copy
//!    frame) drops a page (and flushes the shadow tables, which takes that page's X away) and scans again;
//! 3. an illegal-instruction trap at a patched site becomes the original instruction's exit
//!    (`exec::native::patched_site_exit`), so the dispatcher emulates the counter read with the VM's virtual
//!    values, `mcounteren`/`scounteren` of the virtual hart honoured;
//! 4. every scanned page is watched in the RAM's code watch, so *any* write to it that is not a native guest
//!    store (an emulated store, an excursion, the SBI, a device's DMA, the debugger) is noticed before the guest
//!    runs natively again and drops the page (its scan, sites and copy); a native store to a scanned page faults
//!    (no W), is emulated, and drops the page the same way. Dropping **flushes the whole shadow tables** (the
//!    page may be mapped executable at several virtual addresses; per-page invalidation by guest real address
//!    would need a reverse map);
//! 5. a load from a page with sites faults (execute-only) and is emulated on RAM, which holds the original
//!    bytes: the guest, and everything the VMM reads on its behalf, sees its code as it wrote it.
//!
//! **Exits served in place**: after a real trap on a CSR read, or on an `sstatus.SIE` toggle that makes no
//! interrupt pending, the engine does what the dispatcher would (`InlineCsr::serve`, `time` only until the quantum
//! ends) and resumes the guest at once, in every mode: the world switch remains, the trip through the VM goes.
//!
//! **Code caching of trap sites** (an option per VM, [`NativeEngine::cache_trap_sites`]; see
//! `trapeze::exec::trap_sites`): a site that traps often starts an *excursion*: the runs after it are emulated
//! by the threaded engine from its own code cache, on the guest's state, in the VMM, so that the next traps
//! cost a call to the dispatcher instead of a world switch each; a quiet stretch without an exit (`QUIET_RUN`
//! instructions at first, doubling with each exit served) goes back to the real CPU. The threaded engine consumes the RAM's dirty list while it runs and
//! reports the pages it saw written (`Threaded::take_invalidated`), so the scanned ones among them are dropped;
//! a page it keeps code from is never natively writable (the shadow withholds W on watched pages, and the pages
//! it starts watching, `Threaded::take_watched`, lose W in existing leaves, and in the other harts' shadow tables
//! when the VM's harts run on several real harts: below), so no native store leaves a stale block behind.
//!
//! The engine must never map, allow or leave the guest anything outside its partition and the device page given
//! to it ([`NativeEngine::pass_through`]): `satp` always holds a shadow root of this VM's tables (which map only
//! its real map and its own passthrough page), PMP is reprogrammed for this VM before it runs (its device page
//! read/write in entries 6-7, empty for a VM without one), and `mstatus` is rebuilt from scratch (MPP = U,
//! MPRV = 0) for every entry.
//!
//! **Real harts** (`smp`): an engine runs on one real hart at a time, but not always the same one. A VM whose harts
//! run on several real harts at once has an engine per hart, each with shadow tables of its own, as each real hart
//! has a TLB of its own: a hart's `sfence.vma` drops its own shadow mappings, and the VMM's SBI hands a remote
//! fence to each target's engine (`Engine::flush_translations`) before the caller's call returns (the core's
//! `SbiShared` waits for each target's acknowledgement; a target running natively is kicked back to the VMM
//! first, and its real TLB is fenced by its next `load_root`, before its guest runs again). A kick (the machine
//! software interrupt) ends the run at once. PMP, `satp`, the
//! counter enables and the TLB are the real hart's, so the engine reloads its walls and its shadow root, with a
//! full `sfence.vma`, whenever it runs on a hart that does not hold them: when another VM ran there since
//! (`LOADED_VM`, per hart), *and* when the VM itself ran on another hart in between (`hart`). The second case
//! matters: a VM that ran on hart A, moved to hart B, changed its shadow tables there (fencing only B's TLB) and
//! comes back to A with nothing else having run on A would otherwise meet A's stale translations. The VMM lock
//! is let go of around the world switch alone: the guest's native run holds no lock.
//!
//! **Cross-hart write revocation** ([`Revocations`]). Patching and code caching rely on the guest never storing
//! natively to a page the VMM scanned or keeps code from: a native store bypasses RAM's code watch. With one set
//! of shadow tables per VM, the engine takes W from its own leaves of a page it starts watching; with a set per
//! hart, every *other* hart's leaves and real TLB must lose it too, before the watching engine reads the bytes
//! (a sibling storing through an old writable leaf meanwhile would leave a stale scan or block behind, unseen).
//! New fills already withhold W on watched pages (`ShadowTables::fill_with` asks RAM's code watch, and fills
//! and watches are both made under the VMM lock, so a fill either sees the bit or is older than the watch); the
//! leaves filled before are what the protocol removes. The VM's `SharedRam` calls its `Revocations` (its
//! `RemoteFence`) whenever a watch sets a bit that was clear, with the pages, before the engine reads them: the
//! patcher watches a page *before* scanning it, and the threaded engine watches a block's bytes and reads them
//! again after (`Threaded::take_watched` then names the pages to the engine, which drops its own W). Per hart:
//! - `native`: 1 + the real hart running its guest natively, else 0. The hart sets it (sequentially consistent)
//!   under the VMM lock at the top of each native run, *then* takes its queue, drops W from every page in it
//!   (`ShadowTables::revoke_write`, or flushes everything when the queue overflowed), acknowledges (`applied`
//!   = the requests it took), and enters the guest through `load_root`, which fences its real TLB (the tables'
//!   generation changed); it clears `native` as soon as the guest traps back, before it waits for the VMM lock.
//! - a queue of pages (32, under a spin lock, a leaf) and the count of requests queued (`requested`).
//!
//! The watcher (holding the VMM lock, in its engine's `run`, marked `current`) queues the pages for every other
//! hart and bumps its `requested`, then reads its `native`: 0, and the hart takes the request before its next
//! native run (it sets `native` before taking its queue, both under the VMM lock the watcher holds, so it cannot
//! be in between); nonzero, and the watcher kicks that real hart (`hw::kick`: the native run ends at once) and
//! waits until the hart has acknowledged the request or left the guest (`native` 0: it takes the request before
//! it runs natively again), letting the VMM lock go between two looks (`relax`: the kicked hart needs no lock
//! to leave the guest, but may take it after; see `smp`). A full queue never drops a request: it becomes a
//! flush of that hart's whole shadow tables. The watcher waits only for harts running natively, which need
//! nothing from it, so two watchers never wait for each other.

use trapeze::exec::native::{self, Action, HostTrap};
use trapeze::exec::threaded::{InlineCsr, Threaded};
use trapeze::exec::trap_sites::{RunEnd, SiteStats, TrapSites};
use trapeze::exec::{interp, Engine};
use trapeze::hart::Exception;
use trapeze::hart::Hart;
use trapeze::isa::csr::{self, mstatus};
use trapeze::isa::Inst;
use trapeze::mem::mmu::Memory;
use trapeze::mem::shadow::{self, FillOutcome, LeafGrant, PassthroughError, ShadowTables};
use trapeze::mem::sv39::AccessType;
use trapeze::mem::{DirtyCode, Ram, RemoteFence};
use trapeze::patch::copies::{self, CodeCopies};
use trapeze::patch::scan::{self, Coverage, ScanError, ScanReport};
use trapeze::patch::sensitivity::{critical_set, CriticalSet, VmmConfig};
use trapeze::patch::table::{PatchTable, PAGE_SIZE};
use trapeze::trap::{Exit, FlushScope};

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::hw;
use crate::smp::{self, MAX_HARTS};
use crate::switch::{enter_guest, GuestContext};

/// Shadow table pages per VM (2 MiB). With 128, Linux filled the pool about 300 times per boot, and each full
/// flush cost a refill of its working set: 100k of its 180k shadow fills; with 512 it flushes about 5 times.
pub const POOL: usize = 512;
/// `mstatus.FS` values.
const FS_CLEAN: u64 = 2 << 13;
const FS_DIRTY: u64 = 3 << 13;
/// `mstatus.MPIE`.
const MPIE: u64 = 1 << 7;
/// `mcause` of the machine software interrupt: a kick from another real hart (`hw::kick`).
const KICK: u64 = (1 << 63) | 3;

/// Guest entries (world switches into a guest) of this boot, over every VM and phase: what PMP guarded.
pub static GUEST_ENTRIES: AtomicU64 = AtomicU64::new(0);
/// PMP hits of this boot, over every VM and phase: real access faults (mcause 1, 5 or 7) taken while a guest ran.
/// The shadow tables map a guest nothing outside its partition, its read-only table pool and code copies and a
/// dedicated device's page, which PMP also lets through, so a guest access PMP stops got past the first wall:
/// every one is an isolation bug, reported at the end (`board: isolation: ...`) and asserted absent by the board
/// test.
pub static PMP_HITS: AtomicU64 = AtomicU64::new(0);

/// Which VM's PMP walls and shadow root each real hart holds (0: none yet), so a switch between VMs reprograms
/// them. Each hart only touches its own entry: relaxed atomics, in place of a `static mut`.
static LOADED_VM: [AtomicUsize; MAX_HARTS] = [const { AtomicUsize::new(0) }; MAX_HARTS];

/// A wait for the VMM lock after a real trap longer than this (100 µs) ends the engine's run before the trap is
/// served: the hypervisor then hides the wait from the VM's clock, as it hides all of the VMM's time, before the
/// guest runs again and takes the trap anew (every trap is precise: the instruction behind it has not happened).
/// Never for two traps in a row, so that a guest whose every trap meets a busy lock still progresses.
/// Served at once instead, a `time` read would show the guest the wait (another hart's long VMM work, a host
/// preempting the lock's holder), since the VMM's time within a run is hidden only when the run ends.
const LOCK_WAIT_TICKS: u64 = 1_000;

/// Patched sites a VM's patch table holds.
pub const PATCH_SITES: usize = 4096;
/// Scanned pages a VM's patch table holds (a Linux boot executes a few thousand).
pub const PATCH_PAGES: usize = 4096;
/// A VM's patch table.
pub type Patches = PatchTable<PATCH_SITES, PATCH_PAGES>;
/// Patched copies of pages with sites a VM keeps (4 KiB each).
pub const COPY_FRAMES: usize = 128;
/// A VM's patched copies.
pub type Copies = CodeCopies<COPY_FRAMES>;

/// A VM's code caching of trap sites: the threaded engine that runs excursions, and the policy.
pub struct SiteCache {
    engine: Threaded<8192, 1024, 2048>,
    sites: TrapSites<64>,
}

impl SiteCache {
    pub const fn new() -> Self {
        Self { engine: Threaded::new(), sites: TrapSites::new() }
    }

    /// Forgets every block and site, for a cache lent to one VM after another (the blocks are keyed by RAM
    /// offset: a new VM in the same partition must not meet the last one's).
    pub fn reset(&mut self) {
        self.engine.invalidate_written_pages(DirtyCode::All);
        let _ = (self.engine.take_watched(), self.engine.take_invalidated(), self.engine.take_served_inline());
        self.sites = TrapSites::new();
    }
}

/// Pages one hart's revocation queue holds; past that, a request becomes a flush of its shadow tables.
const REVOCATION_QUEUE: usize = 32;
/// Most harts of a VM whose harts run on several real harts at once (the core's limit).
const VM_HARTS: usize = trapeze::vm::MAX_HARTS;

/// The pages (host addresses) whose write permission a hart must drop before its next native run.
struct RevocationQueue {
    pages: [u64; REVOCATION_QUEUE],
    len: usize,
    /// A request did not fit (or named no pages): drop every shadow mapping instead.
    overflowed: bool,
}

/// One hart's side of [`Revocations`].
struct HartRevocations {
    /// 1 + the real hart running this hart's guest natively, or 0: set under the VMM lock before the hart takes
    /// its pending revocations and enters the guest, cleared as soon as the guest trapped back (before the VMM
    /// lock is taken again).
    native: AtomicUsize,
    /// 1 + the real hart whose engine is inside `run` for this hart now, or 0 (who is watching, in the hook).
    current: AtomicUsize,
    queue: spin::Mutex<RevocationQueue>,
    /// Requests queued, and the last one the hart applied (its acknowledgement).
    requested: AtomicU64,
    applied: AtomicU64,
    /// Times this hart, watching pages, kicked a sibling running natively and waited for it.
    waits: AtomicU64,
}

/// Cross-hart write revocation for a VM whose harts run on several real harts at once, each hart with an engine
/// and shadow tables of its own (see the module documentation): the VM's `SharedRam` calls it (its
/// `RemoteFence`) whenever an engine starts watching pages, before that engine reads their bytes, and it returns
/// only once no other hart of the VM can store natively to them. Atomics and one spin lock per hart (a leaf,
/// held for a few stores); it lets the VMM lock go between two looks while it waits (`relax`).
pub struct Revocations {
    harts: [HartRevocations; VM_HARTS],
    count: usize,
    /// Host address of the VM's RAM (offset 0).
    ram_host: u64,
    /// What the waiting hart does between two looks: lets the VMM lock go for a moment.
    relax: fn(),
}

impl Revocations {
    /// Revocations for a VM of `count` harts whose RAM starts at host address `ram_host`.
    pub fn new(count: usize, ram_host: u64, relax: fn()) -> Self {
        Self {
            harts: [const {
                HartRevocations {
                    native: AtomicUsize::new(0),
                    current: AtomicUsize::new(0),
                    queue: spin::Mutex::new(RevocationQueue {
                        pages: [0; REVOCATION_QUEUE],
                        len: 0,
                        overflowed: false,
                    }),
                    requested: AtomicU64::new(0),
                    applied: AtomicU64::new(0),
                    waits: AtomicU64::new(0),
                }
            }; VM_HARTS],
            count: count.min(VM_HARTS),
            ram_host,
            relax,
        }
    }

    /// Asks every hart but the caller's (the one whose engine is in `run` on this real hart) to drop W on the RAM
    /// pages `[first, end)` (`None`: on everything), and waits for those running natively (kicked back) to have
    /// done so or left the guest. Harts not running natively apply it before their next native run.
    fn revoke(&self, pages: Option<(u64, u64)>) {
        let me = smp::hart_id() + 1;
        let mut wait_for = [None; VM_HARTS];
        let watcher = self.harts.iter().take(self.count).position(|hart| hart.current.load(Ordering::SeqCst) == me);
        for (index, hart) in self.harts.iter().enumerate().take(self.count) {
            if Some(index) == watcher {
                // The watcher's engine takes W from its own tables itself (after its scan or excursion).
                continue;
            }
            let epoch = {
                let mut queue = hart.queue.lock();
                match pages {
                    Some((first, end))
                        if !queue.overflowed
                            && queue.len as u64 + end.saturating_sub(first) <= REVOCATION_QUEUE as u64 =>
                    {
                        for page in first..end {
                            let at = queue.len;
                            if let Some(slot) = queue.pages.get_mut(at) {
                                *slot = self.ram_host + page * PAGE_SIZE;
                                queue.len += 1;
                            }
                        }
                    }
                    // Never skipped: a request that does not fit drops every mapping of the hart.
                    _ => queue.overflowed = true,
                }
                hart.requested.fetch_add(1, Ordering::SeqCst) + 1
            };
            // Read after the request is queued, as the hart sets `native` before it takes its queue: either it
            // takes this request before its next native run, or it runs natively now and is kicked back.
            let real = hart.native.load(Ordering::SeqCst);
            if real != 0 {
                hw::kick(real - 1);
                if let Some(slot) = wait_for.get_mut(index) {
                    *slot = Some(epoch);
                }
            }
        }
        if wait_for.iter().all(Option::is_none) {
            return;
        }
        if let Some(watcher) = watcher.and_then(|index| self.harts.get(index)) {
            watcher.waits.fetch_add(1, Ordering::Relaxed);
        }
        let pending = |index: usize, epoch: u64| {
            self.harts.get(index).is_some_and(|hart| {
                hart.native.load(Ordering::SeqCst) != 0 && hart.applied.load(Ordering::SeqCst) < epoch
            })
        };
        while wait_for.iter().enumerate().any(|(index, epoch)| epoch.is_some_and(|epoch| pending(index, epoch))) {
            (self.relax)();
        }
    }
}

impl RemoteFence for Revocations {
    fn fence_other_threads(&self) {
        self.revoke(None);
    }

    fn pages_watched(&self, first: u64, end: u64) {
        self.revoke(Some((first, end)));
    }
}

/// What the patching scanner did for a VM whose counters are delegated.
#[derive(Debug, Default, Clone, Copy)]
pub struct PatchStats {
    /// Pages scanned (each on a fetch from an unscanned page).
    pub scans: u64,
    /// Critical instructions patched (on reached paths, plus guards).
    pub patched: u64,
    /// Traps at patched sites, emulated by the dispatcher.
    pub site_traps: u64,
    /// Scanned pages dropped because they were written (each a full shadow flush).
    pub dropped: u64,
    /// Pages dropped to make room (table or copy frames full).
    pub evicted: u64,
    /// Loads from pages with sites (execute-only), emulated on RAM.
    pub code_loads: u64,
    /// Fetches from a page the scanner refused, emulated.
    pub refused: u64,
}

/// The patching scanner's state for a VM whose counters are delegated.
struct Patcher {
    table: &'static mut Patches,
    copies: &'static mut Copies,
    critical: CriticalSet,
    /// Pages (guest real) the scanner refused: they run by emulation.
    refused: [Option<u64>; REFUSED_PAGES],
    stats: PatchStats,
}

impl Patcher {
    /// Scans the page of guest real `entry` from there, patching into copies (see `trapeze::patch::scan`).
    fn scan(&mut self, ram: &Ram, entry: u64, next: Option<u16>) -> Result<ScanReport, ScanError> {
        scan::scan(self.table, &mut self.copies.view(ram), &self.critical, entry, next, Coverage::Guard)
    }
}

/// Refused pages a VM remembers.
const REFUSED_PAGES: usize = 16;

/// Counts of what the engine did, for the VMM's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// World switches into the guest.
    pub entries: u64,
    /// Times the VM ran on another real hart than the last time (each reloads its walls and root, fenced).
    pub migrations: u64,
    /// Real traps after which the VMM lock was busy for longer than [`LOCK_WAIT_TICKS`]: each ended the run
    /// before the trap was served, so that the wait is hidden from the VM's clock (the guest retakes the trap).
    pub lock_waits: u64,
    /// Runs another real hart cut short (a kick: a hart of the same VM asked this one for something, through
    /// the VM's `HartWaker`), and world switches into the guest made while another hart of the same VM ran
    /// natively on another real hart (the evidence that one VM's harts run in parallel).
    pub kicks: u64,
    pub parallel_entries: u64,
    /// The real harts this engine ran its guest on (a bit each).
    pub real_harts: u64,
    /// Shadow page table fills (the guest resumed without leaving the engine).
    pub fills: u64,
    /// Instructions the shadow tables cannot express, run by the interpreter.
    pub emulated: u64,
    /// Exits handed to the dispatcher.
    pub exits: u64,
    /// Native exits served in place (`NativeEngine::after_served_in_place`): world switches, but no trip through
    /// the VM.
    pub served_in_place: u64,
    /// Quanta that ran to their end.
    pub quanta: u64,
    /// Real access faults: PMP stopped a guest access.
    pub walled: u64,
    /// Machine timer ticks spent running the guest (natively between entry and trap, or in an excursion).
    pub guest_ticks: u64,
    /// Exits that are reads of `cycle`, `time` or `instret`, trapped, patched or in an excursion.
    pub counter_reads: u64,
    /// Fences the VMM performed for the guest's harts without their `sfence.vma` (SBI remote fences, one per
    /// target and page), and how many of them dropped shadow mappings (each one a translation the guest had
    /// fenced away and would otherwise have gone on using).
    pub remote_fences: u64,
    pub remote_fence_drops: u64,
    /// Cross-hart write revocations this hart applied (`Revocations`: pages another hart of the VM started
    /// watching, one per page, or one per flush of the whole tables when its queue overflowed), and how many of
    /// them took W from a leaf (or flushed).
    pub revocations: u64,
    pub revoked_leaves: u64,
    /// Exits by kind: privileged or critical instructions, device accesses, environment calls, other
    /// exceptions (the guest's own faults).
    pub system_exits: u64,
    pub mmio_exits: u64,
    pub ecall_exits: u64,
    pub exception_exits: u64,
}

/// The native engine of one VM.
pub struct NativeEngine<'s> {
    /// A small nonzero number naming the VM (for [`LOADED_VM`]).
    id: usize,
    /// The real hart the VM last ran on (`None`: never ran).
    hart: Option<usize>,
    /// The last world switch waited longer than [`LOCK_WAIT_TICKS`] for the VMM lock after the guest's trap.
    lock_waited: bool,
    /// The last run ended on such a wait, leaving its trap unserved.
    left_for_lock: bool,
    shadow: &'s mut ShadowTables<POOL>,
    context: GuestContext,
    /// The VM's RAM partition in host physical addresses.
    partition: (u64, u64),
    /// The host device page given whole to the VM, `[start, end)` (empty: none).
    device: (u64, u64),
    /// The last exit was the guest's `sfence.vma` with these operands (address, ASID): drop the shadow mappings
    /// it covers before the guest runs again.
    fence_pending: Option<(Option<u64>, Option<u16>)>,
    /// The address the guest's last `sfence.vma` named: its leaf is filled again before the guest runs
    /// (`ShadowTables::prefill`), saving the fault that would follow.
    refill: Option<u64>,
    /// The real `satp` and shadow generation the hardware was last fenced at for this VM (`None`: fence again).
    fenced: Option<(u64, u64)>,
    /// The last fill, to notice a fill that does not let the access through (then the instruction is emulated).
    last_fill: Option<(u64, AccessType)>,
    /// `Some` when the VM's counters are delegated: its pages are scanned and patched before they run.
    patcher: Option<Patcher>,
    /// `Some` when hot trap sites run from the code cache.
    site_cache: Option<&'s mut SiteCache>,
    /// Machine time since which an excursion has been running in this slice (all of it is the guest's time:
    /// its instructions run, emulated, and the dispatcher serves them; see [`NativeEngine::end_slice`]).
    excursion_since: Option<u64>,
    /// When the slice's time quantum ends (machine time), fixed by the slice's first native run: see
    /// [`NativeEngine::run`].
    quantum_end: Option<u64>,
    /// The guest's time as of the VM's last look at its clock (`Engine::set_guest_time`): excursions answer
    /// `time` reads from the machine timer, going on from it (`None`: every read leaves the threaded engine).
    guest_time: Option<u64>,
    /// The largest `time` an excursion gave the guest since the VM last asked.
    time_served: Option<u64>,
    pub stats: Stats,
    /// For one hart of a VM whose harts run on several real harts at once: how many of them run natively now.
    siblings: Option<&'s AtomicUsize>,
    /// For one hart of such a VM: the VM's cross-hart write revocations, and this hart's index there.
    revocations: Option<(&'s Revocations, usize)>,
}

impl<'s> NativeEngine<'s> {
    /// An engine for the VM numbered `id` (nonzero, unique), whose RAM is the host range `partition`.
    pub fn new(id: usize, shadow: &'s mut ShadowTables<POOL>, partition: (u64, u64)) -> Self {
        Self {
            id,
            hart: None,
            lock_waited: false,
            left_for_lock: false,
            shadow,
            context: GuestContext::new(),
            partition,
            device: (0, 0),
            fence_pending: None,
            refill: None,
            fenced: None,
            last_fill: None,
            patcher: None,
            site_cache: None,
            excursion_since: None,
            quantum_end: None,
            guest_time: None,
            time_served: None,
            siblings: None,
            revocations: None,
            stats: Stats::default(),
        }
    }

    /// Delegates the counters to this VM: the real `mcounteren`/`scounteren` let it read `cycle`, `time` and
    /// `instret` natively while it runs, and every page it executes is scanned first, its counter reads patched
    /// into traps recorded in `table`, in copies of its pages kept in `copies` (see the module documentation).
    /// The VM's RAM must have a code watch attached. Call before the VM first runs.
    pub fn delegate_counters(&mut self, table: &'static mut Patches, copies: &'static mut Copies) {
        let config = VmmConfig { delegate_counters: true, ..VmmConfig::BOARD };
        self.patcher = Some(Patcher {
            table,
            copies,
            critical: critical_set(&config),
            refused: [None; REFUSED_PAGES],
            stats: PatchStats::default(),
        });
    }

    /// Gives the VM the host device page `host` (a device without DMA, no other VM's) at guest real page
    /// `guest_real`: its shadow tables map it straight to the device (read and write, never execute, see
    /// `trapeze::mem::shadow`), and the PMP lets U-mode reach it while this VM runs, and no other. One page per
    /// VM (the PMP has one pair of entries for it). Call before the VM first runs.
    pub fn pass_through(&mut self, guest_real: u64, host: u64) -> Result<(), PassthroughError> {
        if self.device.0 != self.device.1 {
            return Err(PassthroughError::Full);
        }
        self.shadow.add_passthrough(guest_real, host)?;
        self.device = (host, host + 4096);
        Ok(())
    }

    /// Makes this the engine of one hart of a VM whose harts each have an engine of their own and may run on
    /// several real harts at once: `native` counts how many of them run natively now (for
    /// [`Stats::parallel_entries`]).
    pub fn one_of_several(&mut self, native: &'s AtomicUsize) {
        self.siblings = Some(native);
    }

    /// Makes this engine hart `index` of `revocations`: it applies the write revocations its siblings ask for
    /// before each native run, and tells them when it runs natively (see the module documentation). The VM's
    /// `SharedRam` must have `revocations` as its remote fence.
    pub fn revoke_with(&mut self, revocations: &'s Revocations, index: usize) {
        self.revocations = Some((revocations, index));
    }

    /// How often this hart, watching pages, waited for a sibling running natively to drop W on them.
    pub fn revocation_waits(&self) -> u64 {
        self.revocations
            .and_then(|(revocations, index)| revocations.harts.get(index))
            .map_or(0, |hart| hart.waits.load(Ordering::Relaxed))
    }

    /// Before a native run (under the VMM lock): says this hart runs natively from now on, then applies the write
    /// revocations its siblings queued (in that order: a sibling that queues one after this finds it running
    /// natively and kicks it back), and acknowledges them. The next `load_root` fences the real TLB.
    fn take_revocations(&mut self) {
        let Some((revocations, index)) = self.revocations else { return };
        let Some(hart) = revocations.harts.get(index) else { return };
        hart.native.store(smp::hart_id() + 1, Ordering::SeqCst);
        if hart.requested.load(Ordering::SeqCst) == hart.applied.load(Ordering::SeqCst) {
            return;
        }
        let (pages, len, overflowed, epoch) = {
            let mut queue = hart.queue.lock();
            let taken = (queue.pages, queue.len, queue.overflowed, hart.requested.load(Ordering::SeqCst));
            queue.len = 0;
            queue.overflowed = false;
            taken
        };
        if overflowed {
            self.shadow.flush_all();
            self.stats.revocations += 1;
            self.stats.revoked_leaves += 1;
        } else {
            for &page in pages.get(..len).unwrap_or(&[]) {
                self.stats.revocations += 1;
                if self.shadow.revoke_write(page) {
                    self.stats.revoked_leaves += 1;
                }
            }
        }
        hart.applied.store(epoch, Ordering::SeqCst);
    }

    /// Marks (`Some`: this real hart) or clears whose engine is in `run` for this hart.
    fn set_current(&self, real: Option<usize>) {
        if let Some((revocations, index)) = self.revocations {
            if let Some(hart) = revocations.harts.get(index) {
                hart.current.store(real.map_or(0, |real| real + 1), Ordering::SeqCst);
            }
        }
    }

    /// What the patching scanner did (`None`: the VM's counters trap).
    pub fn patch_stats(&self) -> Option<PatchStats> {
        self.patcher.as_ref().map(|patcher| patcher.stats)
    }

    /// Runs the code around this VM's hot trap sites from `cache` (see the module documentation). The VM's RAM
    /// must have a code watch attached. Call before the VM first runs.
    pub fn cache_trap_sites(&mut self, cache: &'s mut SiteCache) {
        self.site_cache = Some(cache);
    }

    /// The VM's slice ended at machine time `now`: the time an excursion ran in it becomes guest time (read
    /// once per slice rather than around every emulated run, which would cost two clock reads per trap served).
    pub fn end_slice(&mut self, now: u64) {
        self.quantum_end = None;
        self.end_excursion_time(now);
    }

    /// The time an excursion ran until `now` becomes guest time.
    fn end_excursion_time(&mut self, now: u64) {
        if let Some(since) = self.excursion_since.take() {
            self.stats.guest_ticks += now.saturating_sub(since);
        }
    }

    /// How many times the VM's shadow tables were dropped whole.
    pub fn full_shadow_flushes(&self) -> u64 {
        self.shadow.full_flushes()
    }

    /// What code caching of trap sites did (`None`: not enabled).
    pub fn site_stats(&self) -> Option<SiteStats> {
        self.site_cache.as_ref().map(|cache| cache.sites.stats)
    }

    /// Makes this real hart hold this VM's PMP walls (and, through `fenced`, its shadow root, fully fenced) unless
    /// it already does and the VM last ran here (see the module documentation), and drops the shadow mappings a
    /// guest `sfence.vma` made stale.
    fn prepare(&mut self) {
        let hart = smp::hart_id();
        // `memory.x` gives no stack to a hart beyond MAX_HARTS (riscv-rt parks it), so the index is in bounds.
        let loaded = &LOADED_VM[hart % MAX_HARTS];
        if loaded.load(Ordering::Relaxed) != self.id || self.hart != Some(hart) {
            if self.hart.is_some_and(|last| last != hart) {
                self.stats.migrations += 1;
            }
            self.hart = Some(hart);
            self.stats.real_harts |= 1 << hart;
            let pool_start = &*self.shadow as *const ShadowTables<POOL> as u64;
            let pool_end = pool_start + core::mem::size_of::<ShadowTables<POOL>>() as u64;
            // The patched copies are the only other memory the guest may fetch from (none: an empty range).
            let copies = self.patcher.as_ref().map_or((0, 0), |patcher| patcher.copies.host_range());
            hw::set_pmp(self.partition, (pool_start & !3, (pool_end + 3) & !3), copies, self.device);
            hw::set_counteren(if self.patcher.is_some() { 0b111 } else { 0 });
            loaded.store(self.id, Ordering::Relaxed);
            // The next `load_root` writes `satp` and fences this hart's whole TLB.
            self.fenced = None;
        }
        if let Some((address, asid)) = self.fence_pending.take() {
            self.shadow.sfence_vma(address, asid);
            self.refill = address;
        }
    }

    /// Points the real `satp` at the shadow root of the hart's regime, fencing everything when the root or the
    /// tables changed since the last fence, else only the pages whose leaves changed (a full fence costs QEMU its
    /// whole TLB and jump cache).
    fn load_root(&mut self, hart: &Hart) {
        let satp = self.shadow.root_satp(hart);
        let pages = self.shadow.take_page_fences();
        let state = (satp, self.shadow.generation());
        if self.fenced != Some(state) {
            hw::set_satp(satp);
            self.fenced = Some(state);
        } else {
            for va in pages.iter() {
                hw::sfence_page(va);
            }
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
        // The guest's native run holds no lock: the other harts do the VMM's work meanwhile. Nothing shared is
        // touched from here to `vmm_lock` (the context, the CSRs and the VM's own partition are this hart's).
        // SAFETY: the engine runs only within a VM's turn, for which the board's run loop took the VMM lock on this
        // hart (`Board::run_on_hart`); it is taken again below before anything shared is touched.
        unsafe { smp::vmm_unlock() };
        if let Some(native) = self.siblings {
            if native.fetch_add(1, Ordering::AcqRel) > 0 {
                self.stats.parallel_entries += 1;
            }
        }
        let instret_before = hw::minstret();
        let time_before = hw::mtime();
        enter_guest(context);
        left_native(self.revocations);
        let time_after = hw::mtime();
        let retired = hw::minstret().wrapping_sub(instret_before);
        if let Some(native) = self.siblings {
            native.fetch_sub(1, Ordering::AcqRel);
        }
        smp::vmm_lock();
        self.lock_waited = hw::mtime().saturating_sub(time_after) > LOCK_WAIT_TICKS;
        self.stats.guest_ticks += time_after.saturating_sub(time_before);
        self.stats.entries += 1;
        GUEST_ENTRIES.fetch_add(1, Ordering::Relaxed);
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

    /// Hands `exit` (of the instruction at `hart.pc`) to the dispatcher; `native` when the real CPU trapped.
    fn finish(&mut self, hart: &Hart, exit: Exit, native: bool) -> Exit {
        // The timer stays armed: if it fires before the next entry, that quantum just ends at once.
        self.stats.exits += 1;
        match exit {
            Exit::System { inst, .. } => {
                self.stats.system_exits += 1;
                if let Inst::Csr { csr: csr::CYCLE..=csr::INSTRET, .. } = inst {
                    self.stats.counter_reads += 1;
                }
            }
            Exit::Mmio(_) => self.stats.mmio_exits += 1,
            Exit::Exception {
                cause: Exception::EcallFromU | Exception::EcallFromS | Exception::EcallFromM, ..
            } => self.stats.ecall_exits += 1,
            Exit::Exception { .. } => self.stats.exception_exits += 1,
            _ => {}
        }
        if native {
            if let Some(cache) = self.site_cache.as_deref_mut() {
                cache.sites.note_native_exit(hart.pc);
            }
        }
        if let Exit::System { inst: Inst::SfenceVma { rs1, rs2 }, .. } = exit {
            // The operands as the instruction reads them (the dispatcher changes no register for it).
            let address = (rs1 != 0).then(|| hart.x(rs1));
            let asid = (rs2 != 0).then(|| hart.x(rs2) as u16);
            self.fence_pending = Some((address, asid));
        }
        exit
    }
}

impl NativeEngine<'_> {
    /// The exit of an illegal-instruction trap at `hart.pc` when a patched site is there (`None`: the guest's own
    /// illegal or privileged instruction, or counters not delegated).
    fn patched_site(&mut self, hart: &Hart, memory: &mut Memory) -> Option<Exit> {
        let patcher = self.patcher.as_mut()?;
        let pa = shadow::fetch_guest_real(hart, memory.ram, hart.pc).ok()?;
        let table = &*patcher.table;
        let ram = &mut *memory.ram;
        let exit = native::patched_site_exit(table, hart, pa, || {
            // The high half of a site straddling a page end, through the guest's current translation (RAM
            // holds the original bytes).
            let next = hart.pc.wrapping_add(2);
            let fault = |cause| Exit::Exception { cause, tval: next };
            let pa = shadow::fetch_guest_real(hart, ram, next)
                .map_err(|fault| Exit::Exception { cause: fault.exception, tval: fault.tval })?;
            scan::original_parcel(table, ram, pa).ok_or(fault(Exception::InstructionAccessFault))
        })?;
        patcher.stats.site_traps += 1;
        Some(exit)
    }

    /// Drops every scanned page that was written other than by a native guest store since the last look (step 4
    /// of the module documentation), and the threaded engine's blocks of every written page.
    #[inline(always)]
    fn drop_written_code(&mut self, memory: &mut Memory) {
        // Checked on every run and emulated instruction: the rare work stays out of line.
        if memory.ram.has_dirty_code() {
            self.drop_dirty_pages(memory);
        }
    }

    #[inline(never)]
    fn drop_dirty_pages(&mut self, memory: &mut Memory) {
        let dirty = memory.ram.take_dirty_code();
        self.drop_written(dirty, memory, true);
    }

    /// Drops the scanned pages among `written` (and, with `from_cache`, the threaded engine's blocks of every
    /// written page), flushing the shadow tables when a scanned page went.
    fn drop_written(&mut self, written: DirtyCode, memory: &mut Memory, from_cache: bool) {
        let base = memory.ram.base();
        let mut flush = false;
        match written {
            DirtyCode::All => {
                if let Some(patcher) = self.patcher.as_mut() {
                    patcher.stats.dropped += patcher.table.scanned_pages() as u64;
                    copies::clear(patcher.table, patcher.copies, memory.ram);
                    flush = true;
                }
                if let Some(cache) = self.site_cache.as_deref_mut().filter(|_| from_cache) {
                    cache.engine.cache_mut().invalidate_all();
                }
            }
            DirtyCode::Pages { .. } => {
                for &page in written.pages().unwrap_or(&[]) {
                    if let Some(patcher) = self.patcher.as_mut() {
                        if copies::drop_page(patcher.table, patcher.copies, memory.ram, base + page * PAGE_SIZE) {
                            patcher.stats.dropped += 1;
                            flush = true;
                        }
                    }
                    if let Some(cache) = self.site_cache.as_deref_mut().filter(|_| from_cache) {
                        // The code cache keys blocks by RAM offset.
                        cache.engine.cache_mut().invalidate_page(page * PAGE_SIZE);
                    }
                }
            }
        }
        if flush {
            // The pages may be mapped executable at any virtual address.
            self.shadow.flush_all();
        }
    }

    /// Emulates the one instruction at `hart.pc` (the shadow tables cannot run it natively, or withheld its
    /// access). RAM holds the original bytes, so a patched site is simply its original instruction here; a store
    /// to a scanned page drops it before the guest runs natively again (through the code watch).
    fn emulate(&mut self, hart: &mut Hart, memory: &mut Memory) -> Result<(), Exit> {
        self.stats.emulated += 1;
        let result = interp::step(hart, memory);
        self.drop_written_code(memory);
        result
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
            return self.emulate(hart, memory);
        };
        match access {
            AccessType::Fetch => {
                if patcher.refused.contains(&Some(guest_real)) {
                    return self.emulate(hart, memory);
                }
                let entry = guest_real | (va & 0xfff);
                let next_va = (va | 0xfff).wrapping_add(1);
                let next = shadow::fetch_guest_real(hart, memory.ram, next_va)
                    .ok()
                    .and_then(|pa| scan::original_parcel(&*patcher.table, &*memory.ram, pa));
                let (mut flush, mut revoke) = (false, None);
                if !patcher.copies.has_free() {
                    // The scan may need a frame: give up the lowest copied page.
                    if let Some(page) = patcher.copies.any_copied_page() {
                        copies::drop_page(patcher.table, patcher.copies, memory.ram, page);
                        patcher.stats.evicted += 1;
                        flush = true;
                    }
                }
                if let Some(offset) = guest_real.checked_sub(memory.ram.base()).filter(|_| memory.ram.is_shared()) {
                    // Other harts of the VM run natively meanwhile, with shadow tables of their own: the watch
                    // comes first, so that none of them can store to the page any more (the VM's `Revocations`
                    // take W from their tables, and wait for those running natively) when the scan reads it.
                    memory.ram.watch_code_page(offset / PAGE_SIZE);
                }
                let mut result = patcher.scan(memory.ram, entry, next);
                if let Err(ScanError::Full(_)) = result {
                    if let Some(page) = patcher.table.evict_any(&mut patcher.copies.view(memory.ram)) {
                        patcher.copies.release(page);
                        patcher.stats.evicted += 1;
                        flush = true;
                    }
                    result = patcher.scan(memory.ram, entry, next);
                }
                let outcome = match result {
                    Ok(report) if report.covers_every_entry() => {
                        patcher.stats.scans += 1;
                        patcher.stats.patched += u64::from(report.patched) + u64::from(report.guarded);
                        // Any later write to the page that is not a faulting native store must drop it, and a
                        // native store must fault, through every alias mapped writable before the scan.
                        let offset = guest_real - memory.ram.base();
                        memory.ram.watch_code_page(offset / PAGE_SIZE);
                        revoke = Some(memory.ram.as_ptr() as u64 + offset);
                        Ok(())
                    }
                    refused => {
                        if refused.is_ok() {
                            // A critical-looking word the scan could neither reach nor guard (the page's first
                            // parcel, or the second parcel of a reached instruction): some entry would run it
                            // unpatched, so the page must not run natively at all.
                            copies::drop_page(patcher.table, patcher.copies, memory.ram, guest_real);
                        }
                        // Remembered (while there is room), so that its next fetches do not scan it again. A stale
                        // entry (the guest rewrote the page) only costs emulation.
                        if let Some(slot) = patcher.refused.iter_mut().find(|slot| slot.is_none()) {
                            *slot = Some(guest_real);
                        }
                        // Refused: the page stays non-executable and holds no patch; run this instruction by
                        // emulation.
                        patcher.stats.refused += 1;
                        Err(())
                    }
                };
                if flush {
                    self.shadow.flush_all();
                } else if let Some(host_page) = revoke {
                    self.shadow.revoke_write(host_page);
                }
                match outcome {
                    Ok(()) => Ok(()),
                    Err(()) => self.emulate(hart, memory),
                }
            }
            AccessType::Store => {
                // Emulate the store rather than retry it natively: a store to the page it runs from would
                // otherwise alternate forever between dropping the page (for the store) and scanning it (for the
                // fetch of the same store). The code watch drops the page.
                self.emulate(hart, memory)
            }
            AccessType::Load => {
                patcher.stats.code_loads += 1;
                self.emulate(hart, memory)
            }
        }
    }

    /// Serves `exit` (of a native trap at `hart.pc`) in place when the dispatcher's answer needs nothing but the
    /// hart: a CSR read, or an `sstatus.SIE` toggle that makes no interrupt pending (`InlineCsr`, as excursions
    /// serve them), the hottest exits of a kernel. The guest then resumes at the next instruction without a trip
    /// through the VM, which costs a world switch as much again. It is still a world switch, and counts for the
    /// trap site: when that starts an excursion, the excursion runs here.
    fn after_served_in_place(
        &mut self,
        hart: &mut Hart,
        memory: &mut Memory,
        exit: &Exit,
        inline: Option<InlineCsr>,
        budget: &mut u64,
    ) -> InPlace {
        let (Some(inline), Exit::System { inst: Inst::Csr { op, rd, src, csr }, len, .. }) = (inline, *exit) else {
            return InPlace::No;
        };
        let Some(value) = inline.serve(hart, op, src, csr) else { return InPlace::No };
        let pc = hart.pc;
        hart.set_x(rd, value);
        hart.pc = pc.wrapping_add(u64::from(len));
        hart.instret = hart.instret.wrapping_add(1);
        self.stats.served_in_place += 1;
        if csr == csr::TIME {
            self.stats.counter_reads += 1;
            self.time_served = Some(self.time_served.map_or(value, |t| t.max(value)));
        }
        let Some(cache) = self.site_cache.as_deref_mut() else { return InPlace::Resume };
        cache.sites.note_native_exit(pc);
        match self.excursion(hart, memory, budget, Some(inline)) {
            Some(exit) => InPlace::Leave(exit),
            None if *budget == 0 => InPlace::Leave(Exit::BudgetExhausted),
            None => InPlace::Resume,
        }
    }

    /// An excursion (see the module documentation): emulated runs until the hart goes back to the real CPU
    /// (`None`, with `budget` reduced by what the excursion ran) or an exit for the dispatcher, or the end of the
    /// budget or the time quantum (`Some`).
    fn excursion(
        &mut self,
        hart: &mut Hart,
        memory: &mut Memory,
        budget: &mut u64,
        inline: Option<InlineCsr>,
    ) -> Option<Exit> {
        let quantum_end = self.quantum_end.unwrap_or(0);
        if !self.site_cache.as_deref().is_some_and(|cache| cache.sites.in_excursion()) {
            return None;
        }
        if self.excursion_since.is_none() {
            // The guest's time runs while its instructions do, emulated or not.
            self.excursion_since = Some(hw::mtime());
        }
        loop {
            let cache = self.site_cache.as_deref_mut()?;
            cache.engine.serve_csr_inline(inline);
            let given = cache.sites.excursion_budget(*budget);
            let retired_before = hart.instret;
            let exit = cache.engine.run(hart, memory, given);
            let retired = hart.instret.wrapping_sub(retired_before);
            *budget = budget.saturating_sub(retired);
            let served = cache.engine.take_served_inline();
            let end = if matches!(exit, Exit::BudgetExhausted) { RunEnd::Budget } else { RunEnd::Exit };
            let back_to_native = cache.sites.after_emulated_run(given, retired, served.accesses, end);
            // The guest wrote code the threaded engine had decoded: the engine took those pages off the RAM's
            // dirty list, so the scanned ones among them are dropped here.
            let watched = cache.engine.take_watched();
            let written = cache.engine.take_invalidated();
            self.stats.counter_reads += served.time_reads;
            if served.time_reads > 0 {
                self.time_served = Some(self.time_served.map_or(served.latest_time, |t| t.max(served.latest_time)));
            }
            if let Some(written) = written {
                self.drop_written(written, memory, false);
            }
            // Pages the threaded engine now keeps code from must not be written natively (a real store bypasses
            // the code watch): new fills withhold W on them (`ShadowTables::fill_with`), existing leaves lose it.
            match watched {
                None => {}
                Some(DirtyCode::All) => self.shadow.flush_all(),
                Some(pages) => {
                    for &page in pages.pages().unwrap_or(&[]) {
                        self.shadow.revoke_write(memory.ram.as_ptr() as u64 + page * PAGE_SIZE);
                    }
                }
            }
            self.drop_written_code(memory);
            if back_to_native {
                self.end_excursion_time(hw::mtime());
                return None;
            }
            if !matches!(exit, Exit::BudgetExhausted) {
                return Some(self.finish(hart, exit, false));
            }
            // A run of the quiet limit that served reads inline: the excursion goes on here, without going back
            // through the VM (nothing but the guest's own instructions happened), while budget and quantum last.
            if *budget == 0 || hw::mtime() >= quantum_end {
                return Some(Exit::BudgetExhausted);
            }
        }
    }
}

/// The guest of hart `index` of `revocations` trapped back: it no longer runs natively.
fn left_native(revocations: Option<(&Revocations, usize)>) {
    if let Some(hart) = revocations.and_then(|(revocations, index)| revocations.harts.get(index)) {
        hart.native.store(0, Ordering::SeqCst);
    }
}

/// What became of a native exit [`NativeEngine::after_served_in_place`] looked at.
enum InPlace {
    /// Not served: it goes to the dispatcher.
    No,
    /// Served: the guest goes on natively.
    Resume,
    /// Served, and its site started an excursion that ended with this (for the VM).
    Leave(Exit),
}

/// What a shadow leaf on the guest real page `pa` may grant of `granted`: on a VM whose counters are delegated,
/// what the patch table allows natively (nothing on an unscanned code page), and the patched copy to execute.
fn leaf_grant(patcher: Option<&Patcher>, pa: u64, granted: [bool; 3]) -> LeafGrant {
    match patcher {
        None => LeafGrant::on_ram(granted),
        Some(patcher) => {
            LeafGrant { allowed: patcher.table.native_grants(pa, granted), code_copy: patcher.copies.host_page(pa) }
        }
    }
}

impl Engine for NativeEngine<'_> {
    fn set_guest_time(&mut self, now: u64) {
        self.guest_time = Some(now);
    }

    fn take_time_served(&mut self) -> Option<u64> {
        self.time_served.take()
    }

    fn spin_check_interval(&self) -> u64 {
        native::SPIN_CHECK_TICKS * native::INSTRUCTIONS_PER_TICK
    }

    fn flush_translations(&mut self, hart: usize, scope: FlushScope) {
        // One set of shadow tables serves every hart of the VM: a fence aimed at any of them drops the shared
        // leaves (more than that hart's, which the specification allows). `load_root` fences the real TLB.
        let _ = hart;
        let (address, asid) = match scope {
            FlushScope::All => (None, None),
            FlushScope::Sfence { address, asid } => (address, asid),
        };
        self.stats.remote_fences += 1;
        if self.shadow.sfence_vma(address, asid) {
            self.stats.remote_fence_drops += 1;
        }
    }

    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        self.set_current(Some(smp::hart_id()));
        let exit = self.run_here(hart, memory, budget);
        self.set_current(None);
        exit
    }
}

impl NativeEngine<'_> {
    /// [`Engine::run`], on this real hart.
    fn run_here(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        self.prepare();
        self.drop_written_code(memory);
        // The quantum is a time slice, fixed by the slice's first run: later runs keep its end. Deriving it again
        // from each run's budget would move it ever earlier (QEMU without `-icount` counts host ticks in
        // `minstret`, so the budget drains far faster than instructions retire), and every `mtimecmp` write costs
        // QEMU a wake-up of its main loop: that made a world switch twice as slow.
        let now = hw::mtime();
        let quantum_end = *self.quantum_end.get_or_insert(now.saturating_add(native::quantum_ticks(budget)));
        if now >= quantum_end {
            self.stats.quanta += 1;
            return Exit::BudgetExhausted;
        }
        if let Some(va) = self.refill.take() {
            let (ram_host_base, patcher) = (memory.ram.as_ptr() as u64, self.patcher.as_ref());
            self.shadow.prefill(hart, memory.ram, memory.realmap, ram_host_base, va, |pa, granted| {
                leaf_grant(patcher, pa, granted)
            });
        }
        // `time` reads are served without the dispatcher (in place after a native trap, or in an excursion's
        // threaded engine) until the quantum ends, no later than the VM's next timer deadline, going on at the
        // machine timer's pace from the guest's time as the VM last saw it.
        let inline = self.guest_time.take().map(|guest_now| InlineCsr {
            clock: hw::mtime,
            offset: now.wrapping_sub(guest_now),
            until: quantum_end,
        });
        let mut budget = budget;
        if let Some(exit) = self.excursion(hart, memory, &mut budget, inline) {
            return exit;
        }
        if budget == 0 {
            return Exit::BudgetExhausted;
        }
        let ram_host_base = memory.ram.as_ptr() as u64;
        hw::timer_no_later_than(quantum_end, now);
        loop {
            self.take_revocations();
            self.load_root(hart);
            let trap = self.enter(hart);
            if trap.mcause == KICK {
                // Another real hart wants this hart back in the VMM (its VM's requests: an IPI, a start, a remote
                // fence it waits for), which the VM looks at between runs: the run ends here.
                hw::clear_kick();
                self.stats.kicks += 1;
                self.last_fill = None;
                return Exit::BudgetExhausted;
            }
            // Never twice in a row: under a sustained wait (other harts busy in the VMM for long), every other
            // trap is served anyway, so the guest always progresses.
            if self.lock_waited && !self.left_for_lock {
                self.left_for_lock = true;
                self.stats.lock_waits += 1;
                self.last_fill = None;
                return Exit::BudgetExhausted;
            }
            self.left_for_lock = false;
            if trap.mcause == Exception::IllegalInstruction as u64 {
                if let Some(exit) = self.patched_site(hart, memory) {
                    self.last_fill = None;
                    match self.after_served_in_place(hart, memory, &exit, inline, &mut budget) {
                        InPlace::No => return self.finish(hart, exit, true),
                        InPlace::Resume => continue,
                        InPlace::Leave(exit) => return exit,
                    }
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
                        PMP_HITS.fetch_add(1, Ordering::Relaxed);
                        defmt::warn!("vm {=usize}: PMP stopped an access at {=u64:#x}", self.id, trap.mtval);
                    }
                    self.last_fill = None;
                    match self.after_served_in_place(hart, memory, &exit, inline, &mut budget) {
                        InPlace::No => return self.finish(hart, exit, true),
                        InPlace::Resume => continue,
                        InPlace::Leave(exit) => return exit,
                    }
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
                    leaf_grant(patcher, pa, granted)
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
                    let exit = Exit::Exception { cause: fault.exception, tval: fault.tval };
                    return self.finish(hart, exit, true);
                }
                FillOutcome::NotRam { guest_real } => {
                    return self.finish(hart, native::mmio_exit(hart, memory, guest_real, va, access), true);
                }
                FillOutcome::Emulate => {
                    if let Err(exit) = self.emulate(hart, memory) {
                        return self.finish(hart, exit, true);
                    }
                }
                FillOutcome::Withheld { guest_real } => {
                    if let Err(exit) = self.withheld(hart, memory, va, access, guest_real) {
                        return self.finish(hart, exit, true);
                    }
                }
            }
        }
    }
}
