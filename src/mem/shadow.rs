//! Shadow page tables for the native engine: the guest's Sv39 tables (guest virtual -> guest real) composed with
//! the VM's real map (guest real -> host physical) into real Sv39 tables that the host MMU walks while the guest
//! runs natively in real U-mode.
//!
//! The tables live in a fixed pool of 4 KiB pages ([`ShadowTables`], no allocation) and are built lazily: every
//! shadow PTE starts invalid, the guest's first access to a page takes a real page fault into the VMM, and
//! [`ShadowTables::fill`] walks the guest's tables with [`sv39::translate`] (which sets A, and D on a store, in the
//! guest's own PTEs, exactly as the emulation engines do), looks the guest real page up in the real map and
//! installs one 4 KiB shadow leaf. A guest superpage becomes 4 KiB shadow leaves.
//!
//! What this module must never do: map a host page that is not inside both a real map extent and the VM's RAM
//! slice (so a guest can never reach the VMM's memory, the shadow tables themselves or another VM), give the
//! guest's user code a page its kernel did not give it, or let the hardware write a shadow PTE (A and D are preset).
//!
//! # Roots: one per translation regime
//! A shadow root serves one [`Regime`], the part of the virtual hart's state that decides how its accesses
//! translate and are checked: paging off in virtual M-mode, virtual M-mode with `mstatus.MPRV` (fetches
//! untranslated, data through `MPP`), paging off in virtual S/U-mode (`satp` Bare), virtual S-mode with Sv39 for
//! each value of SUM and MXR, and virtual U-mode with Sv39 for each value of MXR. The roots are **keyed**, not
//! flushed, on privilege, SUM, MXR, MPRV and MPP changes: switching regime is choosing another root.
//! * In the U roots only guest pages with U=1 appear; in the S roots guest U pages appear only with SUM=1, and
//!   never executable; MXR makes execute-only guest pages readable. (All of this is [`sv39::leaf_permits`].)
//! * The bare roots map guest real 1:1 through the real map (guest virtual = guest real).
//! * Every shadow leaf has U=1 (the guest runs in real U-mode), A=1 and D=1, and R/W/X = what the guest's PTE
//!   grants in that regime, intersected with the real map extent's permissions and the guest's own (virtual)
//!   PMP. **W only once the guest PTE's D is set**, so the guest's first store to a clean page faults and sets D.
//!
//! The tables are built for one guest PMP state: [`ShadowTables::root_satp`] and [`ShadowTables::fill`] compare
//! it with the hart's and flush everything when it changed. What they cannot see (the guest editing its page
//! tables, the VMM editing the real map) needs an explicit flush.
//!
//! # Address-space slots
//! The translated roots (S per SUM and MXR, U per MXR) belong to one of [`ADDRESS_SPACE_SLOTS`] slots, each
//! built for one guest `satp` (compared whole: mode, ASID and root). The hart's `satp` picks the slot whose key
//! equals it; when none does, the least recently used slot is dropped (its roots forgotten, its pages reclaimed
//! by the next exhaustion flush, like any dropped root; the generation changes) and rekeyed. The untranslated
//! roots do not depend on `satp` and are shared. So several guest processes (for example one per virtual hart
//! of a VM multiplexed on one real hart) keep their shadow mappings while another runs.
//!
//! Why an entry of an inactive slot is still right when its `satp` comes back: a shadow leaf copies a guest PTE
//! (and the guest PMP and real map, whose changes flush everything). The privileged specification lets the hart
//! keep using a translation it cached, whatever the guest then writes to its tables, until the guest executes an
//! `sfence.vma` covering it; a guest that changes a PTE must fence before it relies on the change. Every guest
//! fence drops the covered shadow leaves in *every* slot (an address fence: that page or guest superpage region
//! in each slot; no address: every slot's roots), so an inactive slot holds only leaves the guest could still
//! see through a cached translation, which the specification allows. A and D were set in the guest PTE when the
//! leaf was filled (W only with D set), exactly as before: a slot switch changes nothing there.
//!
//! # Call-order contract (the board's native engine)
//! 1. While the guest runs natively: real `mstatus.MXR`, `SUM` and `MPRV` are clear (MXR and SUM are encoded in
//!    the shadow leaves), the hart is in real U-mode, real `satp` = the last [`ShadowTables::root_satp`].
//! 2. Before entering the guest, `satp = root_satp(&hart)`. Execute a real `sfence.vma x0, x0` when this differs
//!    from the real `satp` the hart last ran the guest with, or when [`ShadowTables::generation`] changed since
//!    the last real fence (every root uses ASID 0, and a flush rewrites pages the MMU may have cached).
//!    Otherwise execute `sfence.vma va, x0` for each address [`ShadowTables::take_page_fences`] gives (leaves
//!    a guest fence of one address dropped, or [`ShadowTables::prefill`] installed): a full fence costs an
//!    emulator like QEMU its whole TLB and jump cache, and Linux fences single pages tens of thousands of times
//!    per boot. Take them before every entry, even when fencing everything.
//! 3. On a real page fault (cause 12, 13, 15) taken from the guest, call `fill(.., va = mtval, access)` with the
//!    access kind of the cause, and act on the [`FillOutcome`]:
//!    * `Filled`: execute `sfence.vma mtval, x0` (the hart may have cached the invalid or weaker PTE; Svvptc is
//!      not assumed) and the generation check of step 2, then resume the guest at the same pc. The retried
//!      access is permitted by the new leaf, so it does not fault again.
//!    * `GuestFault(fault)`: inject `fault` into the virtual hart (the same exception and tval the emulation
//!      engines produce for this access).
//!    * `NotRam { guest_real }`: a load or store (never a fetch: that is an instruction access fault) that no
//!      real map extent and no passthrough page (below) covers: decode the instruction and serve it as an MMIO access at `guest_real` (or inject
//!      an access fault when no device is there, or the instruction is an LR/SC/AMO), as `Exit::Mmio` is served.
//!    * `Emulate`: the access is legal but a shadow leaf cannot express it (a data access in virtual M-mode with
//!      MPRV, a real map extent that is writable but not readable, a guest PMP region smaller than the page, RAM
//!      above the Sv39 range in a bare regime): execute this one instruction with the emulation engine
//!      (`exec::interp::step` over [`super::mmu::Memory`]).
//! 4. On guest `sfence.vma` call [`ShadowTables::sfence_vma`], and on every fence the VMM performs for the guest
//!    without one (an SBI remote fence, which executes no `sfence.vma` on its targets, the caller included: the
//!    tables serve every hart of the VM). A `satp`, `mstatus` or PMP write
//!    (`FlushScope::All` from the dispatcher) needs nothing: steps 2 and 3 compare `satp` and PMP and the roots
//!    are keyed on the rest. After any change to the VM's real map, call [`ShadowTables::flush_all`].
//!
//! # Passthrough pages (dedicated devices)
//! A VM may be given whole device pages without DMA ([`ShadowTables::add_passthrough`]: guest real page ->
//! host physical page, at most [`PASSTHROUGH_PAGES`]). A load or store the guest's translation, its PMP and the
//! real map send to such a page (a guest real address in no real map extent) is not `NotRam`: the fill installs
//! a leaf on the host device page, read (and write, when the guest's PTE and PMP allow it for the whole page),
//! **never execute**, so the guest's accesses reach the device without the VMM. A fetch from it is the
//! instruction access fault the emulation engines give. RAM always wins: a guest real page the real map covers
//! is never a passthrough, and a host page inside the VM's RAM slice is never mapped as one (the access is
//! `NotRam`). The board's PMP must let U-mode reach the host page for that VM alone. The list lives in the VM's
//! own tables, so every other VM's fills answer `NotRam` there and the VMM refuses the access. The emulation
//! engines do not know the list: an instruction the board emulates that touches the page is the caller's to
//! serve (as MMIO).
//!
//! # Pool exhaustion
//! A fill needs at most three pages (a root and two lower tables). When the pool runs out, everything is flushed
//! (the generation changes: the board fences) and the fill retried in the empty pool, which always succeeds since
//! `POOL >= 3` is checked at compile time. The cost is refaults, never a failure.
//!
//! # Flushing granularity
//! `sfence.vma` never touches the roots of untranslated regimes (they do not depend on the guest's tables). With
//! rs1 = x0 it drops every translated root of every slot (their pages are reclaimed by the next exhaustion flush). With an
//! address it drops that page's shadow leaf from every translated root of every slot, and, where the leaf came from a guest
//! superpage, everything shadowed under the same 2 MiB or 1 GiB region: a pointer PTE carries the software bit
//! [`SUPERPAGE_BELOW`] when some leaf beneath it came from a guest superpage of that size, and the fence clears
//! the pointer instead of the leaf. This covers the specification's rule that a fence with an address orders the
//! leaf PTE translating it, which for a superpage spans the whole region. The ASID operand is ignored (every
//! address space is fenced, which is allowed: a fence may do more than asked); shadow roots carry ASID 0.

use super::mmu::{access_context, map_permission, pmp_kind, VmRealMap};
use super::pmp::Pmp;
use super::sv39::{
    self, is_canonical, make_pte, AccessContext, AccessType, Fault, PageTableMemory, PteFlags, Satp, PAGE_SHIFT,
    SATP_MODE_SV39,
};
use super::Ram;
use crate::hart::{Hart, Privilege};
use crate::isa::csr::mstatus;

/// PTEs in one table page.
pub const TABLE_ENTRIES: usize = 512;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Highest physical address bit + 1 an Sv39 PTE can name (PPN is 44 bits).
const PHYSICAL_ADDRESS_BITS: u32 = 56;
const NO_ROOT: u16 = u16::MAX;
/// Roots `FIRST_TRANSLATED_ROOT..Regime::COUNT` are those of the translated regimes (see [`Regime::index`]).
const FIRST_TRANSLATED_ROOT: usize = 3;
/// Translated roots per address-space slot.
const SLOT_ROOTS: usize = Regime::COUNT - FIRST_TRANSLATED_ROOT;
/// Guest address spaces (guest `satp` values) whose translated roots are kept at once.
pub const ADDRESS_SPACE_SLOTS: usize = 4;
/// A software bit (RSW, ignored by the MMU) of a shadow pointer PTE: some leaf beneath it came from a guest
/// superpage as large as the region the pointer covers (1 GiB in a root, 2 MiB in a level-1 table).
pub const SUPERPAGE_BELOW: u64 = 1 << 8;

/// Page fences the tables owe the real TLB at most before they ask for a full one instead.
pub const PAGE_FENCES: usize = 8;

/// What a fence cleared under one root, the larger the more the real MMU must forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cleared {
    Leaf,
    Pointer,
}

/// The pages a board must fence one by one ([`ShadowTables::take_page_fences`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFences {
    pages: [u64; PAGE_FENCES],
    len: usize,
}

impl PageFences {
    /// The page addresses, in the order they were owed.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.iter().take(self.len).copied()
    }
}
/// Pages in the aligned group a fill prefetches the leaves of (see [`ShadowTables::fill_with`]).
pub const PREFETCH_PAGES: u64 = 8;

/// Most passthrough pages one VM's shadow tables map (see the module documentation).
pub const PASSTHROUGH_PAGES: usize = 4;

/// A device page given whole to the VM: its guest real page and the host physical page it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassthroughPage {
    pub guest_real: u64,
    pub host: u64,
}

/// Why [`ShadowTables::add_passthrough`] refused a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassthroughError {
    /// An address is not page aligned.
    Misaligned,
    /// The host page is beyond what an Sv39 PTE can name, or the guest real page above the Sv39 range.
    OutOfRange,
    /// The guest real page is already a passthrough page.
    Duplicate,
    /// [`PASSTHROUGH_PAGES`] are given already.
    Full,
}

/// A fixed-capacity list of passthrough pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Passthrough {
    pages: [Option<PassthroughPage>; PASSTHROUGH_PAGES],
}

impl Passthrough {
    const fn new() -> Self {
        Self { pages: [None; PASSTHROUGH_PAGES] }
    }

    /// The host page of the passthrough page holding guest real `guest_real`.
    fn host_of(&self, guest_real: u64) -> Option<u64> {
        let page = guest_real & !(PAGE_SIZE - 1);
        self.pages.iter().flatten().find(|given| given.guest_real == page).map(|given| given.host)
    }
}

/// One shadow table page, 4 KiB aligned.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct ShadowPage(pub [u64; TABLE_ENTRIES]);

/// How the virtual hart's accesses translate: one shadow root each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// Virtual M-mode, no MPRV in effect: untranslated, PMP as M-mode sees it.
    Machine,
    /// Virtual M-mode with `mstatus.MPRV` set and `MPP` not M: fetches are untranslated, loads and stores use the
    /// translation and PMP of `MPP`. Only fetches are shadowed; data accesses are emulated.
    MachineMprv,
    /// Virtual S- or U-mode with `satp` Bare: untranslated, PMP as S/U-mode sees it.
    Bare,
    /// Virtual S-mode with Sv39.
    Supervisor { sum: bool, mxr: bool },
    /// Virtual U-mode with Sv39.
    User { mxr: bool },
}

impl Regime {
    /// Number of regimes (and so of shadow roots).
    pub const COUNT: usize = 9;

    /// The regime `hart` is in now.
    pub fn of(hart: &Hart) -> Self {
        let status = hart.csrs.mstatus;
        let mxr = status & mstatus::MXR != 0;
        let paged = Satp(hart.csrs.satp).mode() == SATP_MODE_SV39;
        match hart.privilege {
            Privilege::Machine => {
                let mpp = Privilege::from_bits(status >> mstatus::MPP_SHIFT);
                if status & mstatus::MPRV != 0 && mpp != Some(Privilege::Machine) {
                    Regime::MachineMprv
                } else {
                    Regime::Machine
                }
            }
            _ if !paged => Regime::Bare,
            Privilege::Supervisor => Regime::Supervisor { sum: status & mstatus::SUM != 0, mxr },
            Privilege::User => Regime::User { mxr },
        }
    }

    /// Index of this regime's root, `0..COUNT`.
    pub const fn index(self) -> usize {
        match self {
            Regime::Machine => 0,
            Regime::MachineMprv => 1,
            Regime::Bare => 2,
            Regime::Supervisor { sum, mxr } => 3 + 2 * sum as usize + mxr as usize,
            Regime::User { mxr } => 7 + mxr as usize,
        }
    }
}

/// What [`ShadowTables::fill`] did about a real page fault. See the module's call-order contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// A shadow leaf now permits the access: fence the address and resume the guest.
    Filled,
    /// The guest's own translation (or its PMP, or the real map's permissions) refuses the access: inject this.
    GuestFault(Fault),
    /// A load or store whose guest real address is in no real map extent: serve it as MMIO (or inject an access
    /// fault).
    NotRam { guest_real: u64 },
    /// Legal, but not expressible by a shadow leaf: emulate this one instruction.
    Emulate,
    /// The guest's translation, PMP and the real map allow the access, but the caller's grant filter
    /// ([`ShadowTables::fill_with`]) withheld it for the page at guest real `guest_real` (the patching scanner:
    /// a fetch from an unscanned page, a store to a scanned one, a load from a page holding patched sites), or a
    /// store to a page RAM's code watch watches ([`Ram::is_code_page`]: an engine keeps code translated from it).
    /// Nothing was installed: the caller deals with the page and fills again (or emulates the instruction).
    Withheld { guest_real: u64 },
}

/// What a fill's grant filter ([`ShadowTables::fill_with`]) lets a leaf be: the kinds of access it may grant,
/// `[fetch, load, store]`, and optionally a frame to execute instead of the guest's RAM page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafGrant {
    pub allowed: [bool; 3],
    /// The host physical address of a page-aligned frame holding a patched copy of the page
    /// ([`crate::patch::copies`]): the leaf maps the guest's virtual page **execute-only** onto it (loads and
    /// stores are withheld whatever `allowed` says, so they fault and read or write RAM through the VMM). The
    /// caller vouches that the frame is its own and the guest may fetch from it (the board's PMP).
    pub code_copy: Option<u64>,
}

impl LeafGrant {
    /// The leaf may grant `allowed`, on the guest's own RAM page.
    pub const fn on_ram(allowed: [bool; 3]) -> Self {
        Self { allowed, code_copy: None }
    }
}

/// The translated roots built for one guest `satp`.
#[derive(Clone, Copy)]
struct Slot {
    /// The guest `satp` the roots were built for (`None`: never used).
    satp: Option<u64>,
    /// Pool page of each translated regime's root (index `Regime::index() - FIRST_TRANSLATED_ROOT`), or `NO_ROOT`.
    roots: [u16; SLOT_ROOTS],
    /// Value of the use clock when the slot was last chosen.
    last_used: u64,
}

const EMPTY_SLOT: Slot = Slot { satp: None, roots: [NO_ROOT; SLOT_ROOTS], last_used: 0 };

/// A fixed pool of `POOL` shadow table pages and the roots built in it.
///
/// On the board it lives in a static; M-mode runs with paging bare, so the address of a page (`ptr as u64`) is
/// its host physical address, which is what shadow PTEs hold. If the value is moved after tables were built, the
/// next call notices the new address and flushes.
pub struct ShadowTables<const POOL: usize> {
    pages: [ShadowPage; POOL],
    /// Pages `0..used` are in use; the rest are free (zeroed when handed out).
    used: usize,
    /// Pool page of each untranslated regime's root, or `NO_ROOT`.
    untranslated: [u16; FIRST_TRANSLATED_ROOT],
    /// The translated roots, per guest address space.
    slots: [Slot; ADDRESS_SPACE_SLOTS],
    /// The slot of the hart's `satp` (set by `sync` before any translated root is used).
    active: usize,
    /// Counts slot choices, for least-recently-used replacement.
    clock: u64,
    /// The guest PMP the current tables were built for.
    built_for_pmp: Option<Pmp>,
    /// Address of `pages` when the current tables were built.
    built_at: u64,
    /// Bumped by every flush.
    generation: u64,
    /// Pages whose leaves changed since the board last took them (see [`ShadowTables::take_page_fences`]).
    page_fences: [u64; PAGE_FENCES],
    page_fences_owed: usize,
    /// Times every shadow mapping was dropped ([`flush_all`](Self::flush_all)): a full pool, a moved pool, a
    /// PMP change, or the host's choice.
    full_flushes: u64,
    /// The device pages given whole to the VM.
    passthrough: Passthrough,
}

impl<const POOL: usize> Default for ShadowTables<POOL> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const POOL: usize> ShadowTables<POOL> {
    const POOL_FITS: () = assert!(POOL >= 3 && POOL < NO_ROOT as usize, "a fill needs 3 pages; indices are u16");

    /// An empty pool: no roots, every page free.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::POOL_FITS;
        Self {
            pages: [const { ShadowPage([0; TABLE_ENTRIES]) }; POOL],
            used: 0,
            untranslated: [NO_ROOT; FIRST_TRANSLATED_ROOT],
            slots: [EMPTY_SLOT; ADDRESS_SPACE_SLOTS],
            active: 0,
            clock: 0,
            built_for_pmp: None,
            built_at: 0,
            generation: 0,
            page_fences: [0; PAGE_FENCES],
            page_fences_owed: 0,
            full_flushes: 0,
            passthrough: Passthrough::new(),
        }
    }

    /// Gives the VM the host device page `host` at guest real page `guest_real` (both page aligned): from now on
    /// a load or store that reaches `guest_real` through the guest's translation and PMP, outside every real map
    /// extent, is filled with a read/write, never executable leaf on `host` (see the module documentation). The
    /// caller vouches that the page is a device without DMA that belongs to this VM alone, and lets U-mode reach
    /// it through the real PMP while this VM runs. Flushes (the generation changes).
    pub fn add_passthrough(&mut self, guest_real: u64, host: u64) -> Result<(), PassthroughError> {
        if guest_real & (PAGE_SIZE - 1) != 0 || host & (PAGE_SIZE - 1) != 0 {
            return Err(PassthroughError::Misaligned);
        }
        if host >> PHYSICAL_ADDRESS_BITS != 0 || guest_real >> PHYSICAL_ADDRESS_BITS != 0 {
            return Err(PassthroughError::OutOfRange);
        }
        if self.passthrough.host_of(guest_real).is_some() {
            return Err(PassthroughError::Duplicate);
        }
        let free = self.passthrough.pages.iter_mut().find(|slot| slot.is_none()).ok_or(PassthroughError::Full)?;
        *free = Some(PassthroughPage { guest_real, host });
        self.flush_all();
        Ok(())
    }

    /// The device pages given to the VM ([`add_passthrough`](Self::add_passthrough)).
    pub fn passthrough_pages(&self) -> impl Iterator<Item = PassthroughPage> + '_ {
        self.passthrough.pages.iter().flatten().copied()
    }

    /// Drops every shadow mapping and root. The board must execute a real `sfence.vma x0, x0` before the guest
    /// runs again (the [`generation`](Self::generation) tells it).
    pub fn flush_all(&mut self) {
        self.full_flushes += 1;
        self.used = 0;
        self.untranslated = [NO_ROOT; FIRST_TRANSLATED_ROOT];
        // The slots keep their keys: an empty slot is right for any `satp`.
        for slot in &mut self.slots {
            slot.roots = [NO_ROOT; SLOT_ROOTS];
        }
        self.generation = self.generation.wrapping_add(1);
    }

    /// The guest executed `sfence.vma` with these operands (`None` for x0), or the VMM fenced for it (an SBI
    /// remote fence): drops the shadow mappings that may derive from the guest PTEs the fence covers (see the
    /// module documentation). Bumps the generation. Whether a mapping was dropped (for the board's figures).
    pub fn sfence_vma(&mut self, address: Option<u64>, asid: Option<u16>) -> bool {
        let _ = asid; // every address space is fenced
        let Some(va) = address else {
            self.generation = self.generation.wrapping_add(1);
            let mut dropped = false;
            for slot in &mut self.slots {
                dropped |= slot.roots.iter().any(|&root| root != NO_ROOT);
                slot.roots = [NO_ROOT; SLOT_ROOTS];
            }
            return dropped;
        };
        let mut cleared = None;
        for slot in 0..ADDRESS_SPACE_SLOTS {
            for index in 0..SLOT_ROOTS {
                let root = self.slots.get(slot).and_then(|slot| slot.roots.get(index)).copied().unwrap_or(NO_ROOT);
                if root != NO_ROOT {
                    cleared = cleared.max(self.invalidate(root as usize, va));
                }
            }
        }
        match cleared {
            // Nothing mapped `va`: the real TLB holds no translation of it (every drop is fenced before the guest
            // runs), so there is nothing to fence.
            None => {}
            // Only leaves of `va`: the real MMU may have cached just those.
            Some(Cleared::Leaf) => self.owe_page_fence(va),
            // A pointer: translations of the whole region, and the pointer itself, may be cached.
            Some(Cleared::Pointer) => self.generation = self.generation.wrapping_add(1),
        }
        cleared.is_some()
    }

    /// Clears the shadow leaf of `va` under `root`, or the pointer above it that carries [`SUPERPAGE_BELOW`]: what
    /// it cleared (`None`: nothing was mapped there).
    fn invalidate(&mut self, root: usize, va: u64) -> Option<Cleared> {
        let mut table = root;
        for level in [2u32, 1] {
            let index = vpn(va, level);
            let pte = *self.pages.get(table)?.0.get(index)?;
            if pte & PteFlags::V.bits() == 0 {
                return None;
            }
            if pte & SUPERPAGE_BELOW != 0 {
                *self.pages.get_mut(table)?.0.get_mut(index)? = 0;
                return Some(Cleared::Pointer);
            }
            table = self.index_of((pte >> 10) << PAGE_SHIFT)?;
        }
        let leaf = self.pages.get_mut(table)?.0.get_mut(vpn(va, 0))?;
        let was_valid = *leaf & PteFlags::V.bits() != 0;
        *leaf = 0;
        was_valid.then_some(Cleared::Leaf)
    }

    /// The real TLB may hold a translation of `va` that is gone or a missing one that now exists: the board
    /// fences that page before the guest runs again. Beyond [`PAGE_FENCES`] owed, everything is fenced.
    fn owe_page_fence(&mut self, va: u64) {
        let page = va & !(PAGE_SIZE - 1);
        match self.page_fences.get_mut(self.page_fences_owed) {
            Some(slot) => {
                *slot = page;
                self.page_fences_owed += 1;
            }
            None => {
                self.generation = self.generation.wrapping_add(1);
                self.page_fences_owed = 0;
            }
        }
    }

    /// The pages the board must fence one by one before the guest runs again, unless it fences everything (see
    /// the call-order contract); forgotten once taken.
    pub fn take_page_fences(&mut self) -> PageFences {
        let owed = PageFences { pages: self.page_fences, len: self.page_fences_owed };
        self.page_fences_owed = 0;
        owed
    }

    /// How many times every shadow mapping was dropped at once (see [`flush_all`](Self::flush_all)); fences are
    /// not counted.
    pub fn full_flushes(&self) -> u64 {
        self.full_flushes
    }

    /// Changes whenever shadow PTEs were dropped: the board fences the real TLB when it differs from the value it
    /// last fenced at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Pool pages in use.
    pub fn pages_in_use(&self) -> usize {
        self.used
    }

    /// The table at host physical address `address`, when it is a page of this pool in use (for tests, debugging
    /// dumps and anyone who walks the shadow tables as the MMU does).
    pub fn table(&self, address: u64) -> Option<&[u64; TABLE_ENTRIES]> {
        let index = self.index_of(address).filter(|&index| index < self.used)?;
        self.pages.get(index).map(|page| &page.0)
    }

    /// Real `satp` (MODE = Sv39, ASID 0) for the hart's current regime ([`Regime::of`]), building an empty root if
    /// there is none. Flushes first when the guest PMP differs from what the tables were built for, and picks (or
    /// replaces) the address-space slot of the guest `satp`.
    pub fn root_satp(&mut self, hart: &Hart) -> u64 {
        self.sync(hart);
        let regime = Regime::of(hart);
        let root = match self.root(regime) {
            Some(root) => root,
            None => {
                self.flush_all();
                // An empty pool always has a page for a root (POOL >= 3).
                self.root(regime).unwrap_or(0)
            }
        };
        Satp::new(SATP_MODE_SV39, 0, self.page_address(root) >> PAGE_SHIFT).0
    }

    /// Handles a real page fault taken while the guest ran at `va` (= `mtval`) for `access`: installs the shadow
    /// leaf for the page when the guest and the real map allow it, or says what else to do.
    ///
    /// `ram` is the VM's RAM (the guest's page tables are read, and their A/D bits set, in it); `ram_host_base` is
    /// the host physical address of its first byte (`Ram::as_ptr() as u64` on the board), to which the real map's
    /// host addresses (offsets into `ram`) are added. Nothing outside `ram` is ever mapped.
    pub fn fill(
        &mut self,
        hart: &Hart,
        ram: &mut Ram,
        realmap: &VmRealMap,
        ram_host_base: u64,
        va: u64,
        access: AccessType,
    ) -> FillOutcome {
        self.fill_with(hart, ram, realmap, ram_host_base, va, access, |_, granted| LeafGrant::on_ram(granted))
    }

    /// [`fill`](Self::fill), with the kinds of access the leaf grants (`[fetch, load, store]`, after the guest,
    /// PMP and the real map had their say) passed through `grants` with the page's guest real address: the
    /// patching scanner's [`crate::patch::table::PatchTable::native_grants`] on the board. A filter can only
    /// take permissions away (what it adds is ignored). When it takes away the one `access` needs, the outcome
    /// is [`FillOutcome::Withheld`] and nothing is installed; otherwise the leaf carries what it left (so a load
    /// from an unscanned code page installs a leaf without X, and the first fetch from it faults). A filter that
    /// names a [`LeafGrant::code_copy`] gets an execute-only leaf on that frame.
    #[allow(clippy::too_many_arguments)]
    pub fn fill_with(
        &mut self,
        hart: &Hart,
        ram: &mut Ram,
        realmap: &VmRealMap,
        ram_host_base: u64,
        va: u64,
        access: AccessType,
        grants: impl FnMut(u64, [bool; 3]) -> LeafGrant,
    ) -> FillOutcome {
        self.sync(hart);
        let regime = Regime::of(hart);
        let mut grants = grants;
        let walk = Walk::SetAccessedDirty;
        let context = FillContext { realmap, ram_host_base, passthrough: &self.passthrough };
        let (leaf, guest_level) = match resolve(hart, regime, ram, &context, va, access, walk, &mut grants) {
            Ok(resolved) => resolved,
            Err(outcome) => return outcome,
        };
        if self.install(regime, va, leaf, guest_level).is_none() {
            self.flush_all();
            if self.install(regime, va, leaf, guest_level).is_none() {
                // Cannot happen: an empty pool of at least three pages holds one walk.
                return FillOutcome::Emulate;
            }
        }
        self.prefetch(hart, regime, ram, realmap, ram_host_base, va, access, &mut grants);
        FillOutcome::Filled
    }

    /// The guest fenced `va` (`sfence.vma` with an address, after [`sfence_vma`](Self::sfence_vma) dropped its
    /// leaves): installs its leaf again from the guest's PTE as it stands now, ahead of the access that usually
    /// follows (a kernel fences each PTE it sets and returns to the access that faulted), under the hart's
    /// regime and, from virtual S-mode, under virtual U-mode's too (the process the kernel returns to). As
    /// [`prefetch`](Self::prefetch) does: only what a fill would install, only from a PTE already accessed (and
    /// dirty, for a store grant), never changing guest memory, never flushing to make room. A hart may cache any
    /// valid, accessed PTE at any time, so the guest cannot tell.
    #[allow(clippy::too_many_arguments)]
    pub fn prefill(
        &mut self,
        hart: &Hart,
        ram: &mut Ram,
        realmap: &VmRealMap,
        ram_host_base: u64,
        va: u64,
        grants: impl FnMut(u64, [bool; 3]) -> LeafGrant,
    ) {
        self.sync(hart);
        let mut grants = grants;
        let regime = Regime::of(hart);
        let user = match regime {
            Regime::Supervisor { mxr, .. } => Some(Regime::User { mxr }),
            _ => None,
        };
        for regime in core::iter::once(regime).chain(user) {
            if regime.index() < FIRST_TRANSLATED_ROOT || self.leaf(regime, va).is_some_and(|pte| pte != 0) {
                continue;
            }
            let context = FillContext { realmap, ram_host_base, passthrough: &self.passthrough };
            // A load grant covers most pages; an execute-only one (code the guest cannot read) needs a fetch.
            let resolved = [AccessType::Load, AccessType::Fetch]
                .into_iter()
                .find_map(|access| resolve(hart, regime, ram, &context, va, access, Walk::ReadOnly, &mut grants).ok());
            if let Some((leaf, level)) = resolved {
                if self.install(regime, va, leaf, level).is_none() {
                    return;
                }
                // Svvptc is not assumed: the real MMU may have cached the missing leaf.
                self.owe_page_fence(va);
            }
        }
    }

    /// Fills the leaves of the pages around `va` (its aligned group of [`PREFETCH_PAGES`]) that the guest has
    /// already accessed the same way, as real VMMs' shadow MMUs prefetch: a guest touching one page of code or
    /// data usually goes on to its neighbours, and each leaf filled now is a world switch saved. Only what a
    /// fill of that page would install is installed (the same checks, the same grant filter), and only from a
    /// guest PTE whose A bit (and D bit, for a store) is already set: prefetching never changes guest memory.
    /// Nothing is flushed to make room.
    #[allow(clippy::too_many_arguments)]
    fn prefetch(
        &mut self,
        hart: &Hart,
        regime: Regime,
        ram: &mut Ram,
        realmap: &VmRealMap,
        ram_host_base: u64,
        va: u64,
        access: AccessType,
        grants: &mut impl FnMut(u64, [bool; 3]) -> LeafGrant,
    ) {
        let group = va & !(PREFETCH_PAGES * PAGE_SIZE - 1);
        for neighbour in (0..PREFETCH_PAGES).map(|page| group + page * PAGE_SIZE) {
            if neighbour == va & !(PAGE_SIZE - 1) || self.leaf(regime, neighbour).is_some_and(|pte| pte != 0) {
                continue;
            }
            let walk = Walk::ReadOnly;
            let context = FillContext { realmap, ram_host_base, passthrough: &self.passthrough };
            let Ok((leaf, level)) = resolve(hart, regime, ram, &context, neighbour, access, walk, &mut *grants) else {
                continue;
            };
            if self.install(regime, neighbour, leaf, level).is_none() {
                return;
            }
        }
    }

    /// Takes write permission away from every leaf that maps the host page `host_page`, under every root and
    /// virtual address (the patching scanner has just scanned the guest page there: from now on a native store to
    /// it must fault, through whatever alias). Returns whether a leaf changed; the generation then changes too,
    /// so the board fences before the guest runs again.
    pub fn revoke_write(&mut self, host_page: u64) -> bool {
        let leaf_kinds = PteFlags::R.bits() | PteFlags::W.bits() | PteFlags::X.bits();
        let mut changed = false;
        for page in self.pages.iter_mut().take(self.used) {
            for pte in page.0.iter_mut() {
                let is_writable_leaf = *pte & PteFlags::V.bits() != 0 && *pte & leaf_kinds != 0;
                if is_writable_leaf && *pte & PteFlags::W.bits() != 0 && (*pte >> 10) << PAGE_SHIFT == host_page {
                    *pte &= !PteFlags::W.bits();
                    changed = true;
                }
            }
        }
        if changed {
            self.generation = self.generation.wrapping_add(1);
        }
        changed
    }

    /// The level-0 PTE the shadow tables hold for `va` in `regime` (`None`: no table on the way).
    fn leaf(&mut self, regime: Regime, va: u64) -> Option<u64> {
        let root = *self.root_entry(regime)?;
        if root == NO_ROOT {
            return None;
        }
        let mut table = root as usize;
        for level in [2u32, 1] {
            let pte = *self.pages.get(table)?.0.get(vpn(va, level))?;
            if pte & PteFlags::V.bits() == 0 {
                return None;
            }
            table = self.index_of((pte >> 10) << PAGE_SHIFT)?;
        }
        self.pages.get(table)?.0.get(vpn(va, 0)).copied()
    }

    /// Flushes when the guest PMP or the pool's address changed since the tables were built, then makes the slot
    /// of the hart's `satp` the active one when the hart translates.
    fn sync(&mut self, hart: &Hart) {
        let here = self.pages.as_ptr() as u64;
        let same_pmp = self.built_for_pmp.as_ref() == Some(&hart.pmp);
        if !same_pmp || self.built_at != here {
            if self.used != 0 {
                self.flush_all();
            }
            if !same_pmp {
                self.built_for_pmp = Some(hart.pmp.clone());
            }
            self.built_at = here;
        }
        if Regime::of(hart).index() >= FIRST_TRANSLATED_ROOT {
            self.select(hart.csrs.satp);
        }
    }

    /// Makes the slot built for `satp` active, replacing the least recently used one when there is none.
    fn select(&mut self, satp: u64) {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        let keyed = |slot: &Slot| slot.satp == Some(satp);
        if !self.slots.get(self.active).is_some_and(keyed) {
            let found = self.slots.iter().position(keyed);
            let (lru, _) =
                self.slots.iter().enumerate().min_by_key(|(_, slot)| slot.last_used).unwrap_or((0, &EMPTY_SLOT));
            self.active = found.unwrap_or(lru);
            if found.is_none() {
                let Some(slot) = self.slots.get_mut(lru) else { return };
                if slot.roots.iter().any(|&root| root != NO_ROOT) {
                    // Its mappings are dropped (a real TLB may hold some if it ran last).
                    self.generation = self.generation.wrapping_add(1);
                }
                *slot = Slot { satp: Some(satp), roots: [NO_ROOT; SLOT_ROOTS], last_used: 0 };
            }
        }
        if let Some(slot) = self.slots.get_mut(self.active) {
            slot.last_used = clock;
        }
    }

    fn page_address(&self, index: usize) -> u64 {
        self.built_at + (index as u64) * PAGE_SIZE
    }

    fn index_of(&self, address: u64) -> Option<usize> {
        let offset = address.checked_sub(self.built_at)?;
        if offset % PAGE_SIZE != 0 {
            return None;
        }
        usize::try_from(offset / PAGE_SIZE).ok().filter(|&index| index < POOL)
    }

    /// A zeroed page from the pool, or `None` when it is exhausted.
    fn allocate(&mut self) -> Option<usize> {
        let index = self.used;
        self.pages.get_mut(index)?.0 = [0; TABLE_ENTRIES];
        self.used += 1;
        Some(index)
    }

    /// Where the root of `regime` is recorded: shared for the untranslated regimes, in the active slot otherwise.
    fn root_entry(&mut self, regime: Regime) -> Option<&mut u16> {
        let index = regime.index();
        match index.checked_sub(FIRST_TRANSLATED_ROOT) {
            None => self.untranslated.get_mut(index),
            Some(index) => self.slots.get_mut(self.active)?.roots.get_mut(index),
        }
    }

    fn root(&mut self, regime: Regime) -> Option<usize> {
        let slot = self.root_entry(regime).map_or(NO_ROOT, |entry| *entry);
        if slot != NO_ROOT {
            return Some(slot as usize);
        }
        let root = self.allocate()?;
        *self.root_entry(regime)? = root as u16;
        Some(root)
    }

    /// Writes `leaf` as the level-0 PTE of `va` under the regime's root, making tables on the way and marking the
    /// pointers above a piece of a guest superpage of level `guest_level`; `None` when the pool ran out.
    fn install(&mut self, regime: Regime, va: u64, leaf: u64, guest_level: u8) -> Option<()> {
        let mut table = self.root(regime)?;
        for level in [2u32, 1] {
            let index = vpn(va, level);
            let pte = *self.pages.get(table)?.0.get(index)?;
            let (next, pointer) = if pte & PteFlags::V.bits() != 0 {
                (self.index_of((pte >> 10) << PAGE_SHIFT)?, pte)
            } else {
                let next = self.allocate()?;
                (next, make_pte(self.page_address(next) >> PAGE_SHIFT, PteFlags::V))
            };
            let mark = if u32::from(guest_level) >= level { SUPERPAGE_BELOW } else { 0 };
            *self.pages.get_mut(table)?.0.get_mut(index)? = pointer | mark;
            table = next;
        }
        *self.pages.get_mut(table)?.0.get_mut(vpn(va, 0))? = leaf;
        Some(())
    }
}

/// The guest real address a fetch from `va` reaches in the hart's current regime (through the guest's own
/// tables when it translates, setting A as a fetch would), or the guest's fault. What a board asks before it
/// looks a trapping pc up in the patch table, which is keyed by guest real address.
pub fn fetch_guest_real(hart: &Hart, ram: &mut Ram, va: u64) -> Result<u64, Fault> {
    match Regime::of(hart) {
        Regime::Machine | Regime::MachineMprv | Regime::Bare => Ok(va),
        Regime::Supervisor { .. } | Regime::User { .. } => {
            let ctx = access_context(hart, AccessType::Fetch);
            sv39::translate(&mut *ram, hart.csrs.satp, va, AccessType::Fetch, ctx).map(|t| t.guest_real)
        }
    }
}

/// The 9-bit index of `va` at `level` of an Sv39 walk.
fn vpn(va: u64, level: u32) -> usize {
    ((va >> (PAGE_SHIFT + 9 * level)) & 0x1ff) as usize
}

/// Where a fill's guest real addresses go: the real map (its host addresses offsets into RAM at host physical
/// `ram_host_base`) and the VM's passthrough pages.
struct FillContext<'a> {
    realmap: &'a VmRealMap,
    ram_host_base: u64,
    passthrough: &'a Passthrough,
}

/// The shadow leaf PTE for the page of `va` in `regime` and the level of the guest leaf it came from (0 when
/// untranslated), or what to do instead. Follows the order of the
/// emulation path (`mmu::Memory::translate`): guest walk (with A/D updates), PMP, real map, then the caller's
/// grant filter.
#[allow(clippy::too_many_arguments)]
fn resolve(
    hart: &Hart,
    regime: Regime,
    ram: &mut Ram,
    context: &FillContext,
    va: u64,
    access: AccessType,
    walk: Walk,
    grants: &mut impl FnMut(u64, [bool; 3]) -> LeafGrant,
) -> Result<(u64, u8), FillOutcome> {
    let FillContext { realmap, ram_host_base, passthrough } = *context;
    let access_fault = FillOutcome::GuestFault(Fault { exception: access.access_fault(), tval: va });
    if regime == Regime::MachineMprv && access != AccessType::Fetch {
        return Err(FillOutcome::Emulate);
    }
    // The guest's own translation: the guest real address, and which kinds of access its PTE grants. A leaf
    // for virtual U-mode is filled for U-mode's accesses, even while the hart is in S-mode (`prefill`).
    let ctx = match regime {
        Regime::User { mxr } => AccessContext::new(Privilege::User, false, mxr),
        _ => access_context(hart, access),
    };
    let (guest_real, guest_grants, guest_level) = match regime {
        Regime::Machine | Regime::Bare => (va, [true; 3], 0),
        Regime::MachineMprv => (va, [true, false, false], 0),
        Regime::Supervisor { .. } | Regime::User { .. } => {
            let translation = match walk {
                Walk::SetAccessedDirty => sv39::translate(&mut *ram, hart.csrs.satp, va, access, ctx),
                Walk::ReadOnly => sv39::translate(&mut ReadOnlyTables(ram), hart.csrs.satp, va, access, ctx),
            }
            .map_err(FillOutcome::GuestFault)?;
            let grants = AccessType::ALL.map(|kind| translation.permits(kind, ctx));
            (translation.guest_real, grants, translation.level)
        }
    };
    // The guest's PMP, for this byte and then for the whole page.
    let privilege = ctx.privilege;
    let pmp = &hart.pmp;
    let pmp_applies = privilege != Privilege::Machine || !pmp.machine_unrestricted();
    if pmp_applies && !pmp.allows(guest_real, 1, pmp_kind(access), privilege) {
        return Err(access_fault);
    }
    // The real map.
    let Some(extent) = realmap.extent_of(guest_real) else {
        // Code never runs from a device: the emulation engines raise this same fault.
        if access == AccessType::Fetch {
            return Err(access_fault);
        }
        let not_ram = FillOutcome::NotRam { guest_real };
        let Some(host_page) = passthrough.host_of(guest_real) else {
            return Err(not_ram);
        };
        let ram_end = ram_host_base.saturating_add(ram.size());
        if !is_canonical(va) || (host_page < ram_end && host_page.saturating_add(PAGE_SIZE) > ram_host_base) {
            // Never an alias of the VM's RAM; a non-canonical va cannot be a leaf's.
            return Err(not_ram);
        }
        // A device page given whole: read and write as the guest's PTE and PMP (for the whole page) allow, never
        // execute. The grant filter and code watch are about RAM pages: not consulted.
        let page = guest_real & !(PAGE_SIZE - 1);
        let page_allows = |kind| !pmp_applies || pmp.allows(page, PAGE_SIZE, pmp_kind(kind), privilege);
        let load = guest_grants[1] && page_allows(AccessType::Load);
        let store = load && guest_grants[2] && page_allows(AccessType::Store);
        let mut flags = PteFlags::V | PteFlags::U | PteFlags::A | PteFlags::D;
        flags.set(PteFlags::R, load);
        flags.set(PteFlags::W, store);
        let needed = if access == AccessType::Store { PteFlags::W } else { PteFlags::R };
        if !flags.contains(needed) {
            return Err(FillOutcome::Emulate);
        }
        return Ok((make_pte(host_page >> PAGE_SHIFT, flags), guest_level));
    };
    if !extent.perms.contains(map_permission(access)) {
        return Err(access_fault);
    }
    // Where the page is in the VM's RAM slice: never anywhere else.
    let page = guest_real & !(PAGE_SIZE - 1);
    let host_offset = extent.host_of(page).0;
    if extent.host_of(guest_real).0 >= ram.size() {
        return Err(access_fault); // as the emulation engines' RAM access would
    }
    let host_page = ram_host_base.wrapping_add(host_offset);
    let shadowable = is_canonical(va)
        && host_offset.checked_add(PAGE_SIZE).is_some_and(|end| end <= ram.size())
        && host_page & (PAGE_SIZE - 1) == 0
        && ram_host_base.checked_add(host_offset).is_some_and(|end| end >> PHYSICAL_ADDRESS_BITS == 0);
    if !shadowable {
        return Err(FillOutcome::Emulate);
    }
    // What the leaf grants: each kind the guest, the real map and PMP (for the whole page) all allow.
    let mut granted = [false; 3];
    for ((slot, kind), guest_grants_kind) in granted.iter_mut().zip(AccessType::ALL).zip(guest_grants) {
        *slot = guest_grants_kind
            && extent.perms.contains(map_permission(kind))
            && (!pmp_applies || pmp.allows(page, PAGE_SIZE, pmp_kind(kind), privilege));
    }
    let needed_index = match access {
        AccessType::Fetch => 0,
        AccessType::Load => 1,
        AccessType::Store => 2,
    };
    let before = granted;
    let filtered = grants(page, granted);
    for (slot, allowed) in granted.iter_mut().zip(filtered.allowed) {
        *slot &= allowed;
    }
    // A page an engine keeps translated code from (or the patcher scanned) is watched for writes through RAM,
    // which a native store would bypass: never writable natively.
    if ram.is_code_page(host_offset / PAGE_SIZE) {
        granted[2] = false;
    }
    let mut host_page = host_page;
    if let Some(frame) = filtered.code_copy {
        // Execute-only on the copy: a load or store must reach RAM through the VMM.
        granted[1] = false;
        granted[2] = false;
        if frame & (PAGE_SIZE - 1) != 0 || frame >> PHYSICAL_ADDRESS_BITS != 0 {
            return Err(FillOutcome::Emulate);
        }
        host_page = frame;
    }
    if before.get(needed_index) == Some(&true) && granted.get(needed_index) == Some(&false) {
        return Err(FillOutcome::Withheld { guest_real: page });
    }
    let [fetch, load, store] = granted;
    let mut flags = PteFlags::V | PteFlags::U | PteFlags::A | PteFlags::D;
    flags.set(PteFlags::X, fetch);
    flags.set(PteFlags::R, load);
    // W without R is a reserved encoding: such a page is emulated.
    flags.set(PteFlags::W, store && load);
    let needed = match access {
        AccessType::Fetch => PteFlags::X,
        AccessType::Load => PteFlags::R,
        AccessType::Store => PteFlags::W,
    };
    if !flags.contains(needed) {
        return Err(FillOutcome::Emulate);
    }
    Ok((make_pte(host_page >> PAGE_SHIFT, flags), guest_level))
}

/// How [`resolve`] walks the guest's tables.
#[derive(Clone, Copy)]
enum Walk {
    /// As the hardware would for the access: setting A (and D for a store) in the guest's PTE.
    SetAccessedDirty,
    /// Without writing anything: a PTE whose A (or D) bit the access would need set fails the walk.
    ReadOnly,
}

/// The guest's page tables for a prefetching walk: read, never written.
struct ReadOnlyTables<'r, 'a>(&'r Ram<'a>);

impl PageTableMemory for ReadOnlyTables<'_, '_> {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        if gpa & 7 != 0 {
            return None;
        }
        self.0.load(gpa, 8)
    }

    fn compare_exchange_u64(&mut self, _gpa: u64, _old: u64, _new: u64) -> Option<bool> {
        None
    }
}

#[cfg(test)]
#[path = "shadow_tests.rs"]
mod tests;
