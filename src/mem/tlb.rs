//! The soft TLB of the emulation engines: a direct-mapped cache of guest virtual page -> host page, composing the
//! guest's Sv39 translation with the VM's real map, so that a hit costs a few compares and no walk.
//!
//! It never grows or allocates, never caches an access that a fresh walk would refuse or that would change guest
//! memory (A/D updates), and never serves an M-mode access: those bypass it. Untranslated S- and U-mode accesses
//! (`satp` bare) are cached as identity entries ([`SoftTlb::insert_bare`], [`TlbKey::bare`]) whose permission
//! bits are disjoint from every Sv39 one, so neither kind of entry can ever hit for the other kind of key.
//!
//! # Contract
//! * Fill only after a successful [`translate`](super::sv39::translate) of `va` under the current `satp`, with the
//!   [`RealMapping`] of the translated guest real address, via [`SoftTlb::insert`]. Only RAM-like pages belong here;
//!   device pages are not inserted (no real map extent) and always take the slow path.
//! * Each entry stores the permissions of its leaf PTE (combined with the real map's R/W/X) precomputed for all
//!   eight (privilege U/S, SUM, MXR) combinations and all three access kinds, so **changes of privilege, SUM, MXR or
//!   MPRV need no flush**: a [`TlbKey`] built for the current combination selects the right bit. A store hits only
//!   when D was already set, so D is always set by a walk.
//! * Entries are tagged with the ASID of `satp` at fill time; global entries match every ASID.
//! * Flush as `sfence.vma` orders it: rs1=x0, rs2=x0 -> [`SoftTlb::flush_all`]; rs1=va, rs2=x0 ->
//!   [`SoftTlb::flush_va`]`(va, None)`; rs1=x0, rs2=asid -> [`SoftTlb::flush_asid`]; rs1=va, rs2=asid ->
//!   [`SoftTlb::flush_va`]`(va, Some(asid))` ([`SoftTlb::sfence_vma`] does this dispatch). ASID-specific flushes
//!   keep global entries. A superpage is cached as 4 KiB pieces that a `flush_va` anywhere in it removes together.
//! * A `satp` write needs no flush by the specification (the guest follows it with `sfence.vma`); flushing all on
//!   a `satp` write is allowed and is what a cautious caller does when the ASID is not changed.
//! * Any change to the real map (an extent removed, moved or with fewer permissions) needs `flush_all`, as does
//!   restoring a snapshot of guest memory.
//!
//! # Use by an engine, for a load, store or fetch of `size` bytes at `va`
//! 1. Work out the effective context: for a fetch the current privilege; for a load or store the current privilege,
//!    or `mstatus.MPP` when in M-mode with `mstatus.MPRV` set; plus `mstatus.SUM`/`MXR`. Build the [`TlbKey`]s once
//!    per context change (they are plain values).
//! 2. Fast path (effective privilege U or S; the key is [`TlbKey::new`] under Sv39, [`TlbKey::bare`] when bare):
//!    [`SoftTlb::lookup`]`(va, key)` -> host address; the access must not run past the 4 KiB page (a misaligned
//!    access that crosses it takes the slow path for each part). In the hosted emulator the host address is an
//!    offset into the `Ram` slice: [`Ram::load_at_offset`](super::Ram::load_at_offset) and friends.
//! 3. Slow path: [`Memory::translate`](super::mmu::Memory::translate) — the one slow path there is — walks the
//!    guest tables ([`translate`](super::sv39::translate), which sets A/D), checks PMP, looks the guest real
//!    address up in the [`RealMap`](super::realmap::RealMap), fills the TLB when PMP allows the whole page, and
//!    returns where the access goes: RAM, or a guest real address no extent maps (the engine exits with an MMIO
//!    access, and the dispatcher serves it from a device or injects an access fault). A
//!    [`Fault`](super::sv39::Fault) is injected as is (`scause`/`mcause` = `exception`, `stval`/`mtval` = `tval`).
//!    M-mode accesses never touch the TLB; bare S/U-mode ones fill it with [`SoftTlb::insert_bare`] when PMP
//!    allows the whole page and the real map has it.
//!
//! # Views, for the dynamic binary translator (`dbt` feature)
//! Translated code looks loads, stores and the fetches of its target cache probe up in a *view* of this TLB for
//! the run's keys ([`SoftTlb::view`], taken at the start of each run): a direct-mapped table of tags and RAM page
//! offsets per kind of access, so a hit is a tag compare and an add, with the permission bit, ASID and bound
//! checks done once, when the translator's slow path copies a TLB entry into it ([`SoftTlb::fill_views`], for
//! every kind of access the entry serves). A view entry is only ever a copy of the TLB's entry in the same slot,
//! and every change to an entry drops the copies in its slot (a full flush drops them all), so a view never
//! serves a translation the TLB would not. Four views serve the contexts a kernel switches between (user,
//! supervisor, with SUM or not) without refilling each other's.

#[cfg(feature = "dbt")]
use alloc::boxed::Box;

use super::realmap::{HostAddr, MapPerms, RealMapping};
use super::sv39::{AccessContext, AccessType, Translation, PAGE_SHIFT, PAGE_SIZE};
use crate::hart::Privilege;

const VPN_BITS_PER_LEVEL: u32 = 9;
const INVALID_VPN: u64 = u64::MAX; // `va >> 12` never has its top bits set

/// The (access kind, privilege) indices the permission bits are laid out by: kind 0..3, privilege U 0 or S 1;
/// `None` for M-mode, which the TLB never serves.
const fn kind_and_privilege(access: AccessType, privilege: Privilege) -> Option<(u32, u32)> {
    let privilege = match privilege {
        Privilege::User => 0,
        Privilege::Supervisor => 1,
        Privilege::Machine => return None,
    };
    let kind = match access {
        AccessType::Fetch => 0,
        AccessType::Load => 1,
        AccessType::Store => 2,
    };
    Some((kind, privilege))
}

/// Bit of an entry's permission mask for one (access kind, privilege, SUM, MXR) combination, or 0 for M-mode.
const fn permission_bit(access: AccessType, ctx: AccessContext) -> u32 {
    match kind_and_privilege(access, ctx.privilege) {
        Some((kind, privilege)) => 1 << (kind * 8 + privilege * 4 + (ctx.sum as u32) * 2 + ctx.mxr as u32),
        None => 0,
    }
}

/// First bit of the bare (untranslated S/U-mode) permissions: above every Sv39 [`permission_bit`] (bits 0..24).
const BARE_SHIFT: u32 = 24;

/// Bit of a bare entry's permission mask for one (access kind, privilege), or 0 for M-mode. Disjoint from every
/// [`permission_bit`], so a bare key never hits an Sv39 entry and an Sv39 key never hits a bare entry, whatever
/// their ASIDs: the two kinds of entry may share the TLB with no flush between `satp` modes.
const fn bare_permission_bit(access: AccessType, privilege: Privilege) -> u32 {
    match kind_and_privilege(access, privilege) {
        Some((kind, privilege)) => 1 << (BARE_SHIFT + kind * 2 + privilege),
        None => 0,
    }
}

/// What a lookup needs besides the address, built once per (ASID, access kind, context) by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlbKey {
    asid: u16,
    bit: u32,
}

impl TlbKey {
    /// The key for `access` with the effective `ctx` under ASID `asid`. An M-mode key never hits.
    pub const fn new(asid: u16, access: AccessType, ctx: AccessContext) -> Self {
        Self { asid, bit: permission_bit(access, ctx) }
    }

    /// The key for an untranslated (`satp` bare) `access` in `privilege` under ASID `asid`: it hits only
    /// entries made by [`SoftTlb::insert_bare`]. An M-mode key never hits.
    pub const fn bare(asid: u16, access: AccessType, privilege: Privilege) -> Self {
        Self { asid, bit: bare_permission_bit(access, privilege) }
    }
}

/// The real map permission an access needs.
const fn map_permission(access: AccessType) -> MapPerms {
    match access {
        AccessType::Fetch => MapPerms::X,
        AccessType::Load => MapPerms::R,
        AccessType::Store => MapPerms::W,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// `va >> 12` of the cached 4 KiB piece, or [`INVALID_VPN`].
    vpn: u64,
    /// Host address of the first byte of the 4 KiB piece.
    host_page: u64,
    /// One bit per [`permission_bit`] combination that a fresh walk would allow without changing memory.
    perms: u32,
    asid: u16,
    global: bool,
    /// Level of the guest leaf (0: 4 KiB, 1: 2 MiB, 2: 1 GiB), for `flush_va`.
    level: u8,
}

impl Entry {
    const INVALID: Entry = Entry { vpn: INVALID_VPN, host_page: 0, perms: 0, asid: 0, global: false, level: 0 };

    /// Whether this entry caches a piece of the guest page holding `va`.
    fn covers(&self, va: u64) -> bool {
        self.vpn != INVALID_VPN && (self.vpn ^ (va >> PAGE_SHIFT)) >> (VPN_BITS_PER_LEVEL * self.level as u32) == 0
    }
}

/// One entry of a [`KeyedViews`] view: `tag` is `(va >> 12) | generation << 52` of the page it serves (0:
/// none; a live tag's generation is never 0), `page` the page's offset in RAM.
#[cfg(feature = "dbt")]
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct ViewEntry {
    pub tag: u64,
    pub page: u64,
}

#[cfg(feature = "dbt")]
impl ViewEntry {
    const EMPTY: Self = ViewEntry { tag: 0, page: 0 };
}

/// One view: entries for loads, stores and fetches, each indexed by `vpn & (ENTRIES - 1)`.
#[cfg(feature = "dbt")]
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct View<const ENTRIES: usize> {
    load: [ViewEntry; ENTRIES],
    store: [ViewEntry; ENTRIES],
    fetch: [ViewEntry; ENTRIES],
}

#[cfg(feature = "dbt")]
impl<const ENTRIES: usize> View<ENTRIES> {
    const EMPTY: Self = View {
        load: [ViewEntry::EMPTY; ENTRIES],
        store: [ViewEntry::EMPTY; ENTRIES],
        fetch: [ViewEntry::EMPTY; ENTRIES],
    };

    fn half(&mut self, access: AccessType) -> &mut [ViewEntry; ENTRIES] {
        match access {
            AccessType::Load => &mut self.load,
            AccessType::Store => &mut self.store,
            AccessType::Fetch => &mut self.fetch,
        }
    }
}

/// The keys of one access context: loads, stores, fetches.
#[cfg(feature = "dbt")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keys {
    pub load: TlbKey,
    pub store: TlbKey,
    pub fetch: TlbKey,
}

#[cfg(feature = "dbt")]
impl Keys {
    pub(crate) fn of(&self, access: AccessType) -> TlbKey {
        match access {
            AccessType::Load => self.load,
            AccessType::Store => self.store,
            AccessType::Fetch => self.fetch,
        }
    }
}

/// Views the TLB keeps (an access context each: user, supervisor, with SUM or not).
#[cfg(feature = "dbt")]
const VIEWS: usize = 4;

/// Bits of a view tag below the generation: `va >> 12` takes at most 52.
#[cfg(feature = "dbt")]
const GENERATION_SHIFT: u32 = 52;

/// The soft TLB seen through one context's keys (loads, stores, fetches), for the dynamic binary translator's
/// inlined lookups: an entry hits when its tag equals `(va >> 12) | tag`, with no permission, ASID or bound to
/// check (as QEMU's softmmu: a tag compare and an add). Every view entry is a copy of the TLB's entry in the same
/// slot that serves the view's key for that kind of access, made by the translator's slow path after the TLB
/// served an access to its page; whatever changes or removes a TLB entry drops the copies in its slot, and a full
/// flush makes every view forget all. A view serves its keys until other keys take it over (a privilege or SUM
/// change: each of the four views serves one such context). Taking over or forgetting bumps the generation
/// entries are tagged with, so nothing is cleared but when the 12-bit generation wraps. Costs: 48 KiB a hart,
/// and on a TLB miss the copy (on `bench-mem`, whose every access misses, about 12% of its time).
#[cfg(feature = "dbt")]
#[derive(Debug, Clone)]
struct KeyedViews<const ENTRIES: usize> {
    views: [View<ENTRIES>; VIEWS],
    /// The keys each view serves (load, store, fetch), and the tag of its live entries (`None`: none).
    serving: [Option<(Keys, u64)>; VIEWS],
    /// The last generation handed out.
    generation: u64,
}

#[cfg(feature = "dbt")]
impl<const ENTRIES: usize> KeyedViews<ENTRIES> {
    fn boxed() -> Box<Self> {
        Box::new(Self { views: [View::EMPTY; VIEWS], serving: [None; VIEWS], generation: 0 })
    }

    /// The view a load key goes to: privilege and SUM tell the contexts Linux switches between apart (the key's
    /// bit is one of 8 per access kind, laid out by privilege, SUM, MXR).
    fn index(load: TlbKey) -> usize {
        (load.bit.trailing_zeros() as usize / 2) % VIEWS
    }

    fn view(&mut self, keys: Keys) -> (usize, u64) {
        let index = Self::index(keys.load);
        let tag = match self.serving.get(index).copied().flatten() {
            Some((served, tag)) if served == keys => tag,
            _ => {
                self.generation += 1;
                if self.generation >> (64 - GENERATION_SHIFT) != 0 {
                    // Wrapped: no old tag may come back while entries carry it.
                    self.views = [View::EMPTY; VIEWS];
                    self.serving = [None; VIEWS];
                    self.generation = 1;
                }
                let tag = self.generation << GENERATION_SHIFT;
                if let Some(serving) = self.serving.get_mut(index) {
                    *serving = Some((keys, tag));
                }
                tag
            }
        };
        let address = self.views.get(index).map_or(0, |view| view as *const View<ENTRIES> as usize);
        (address, tag)
    }

    fn forget(&mut self) {
        self.serving = [None; VIEWS];
    }

    /// Drops the live views' copies in `slot` (a view that serves nothing is re-tagged before it serves again,
    /// so its entries are dead already).
    fn drop_slot(&mut self, slot: usize) {
        for (view, _) in self.views.iter_mut().zip(self.serving).filter(|(_, serving)| serving.is_some()) {
            for access in AccessType::ALL {
                if let Some(entry) = view.half(access).get_mut(slot) {
                    entry.tag = 0;
                }
            }
        }
    }

    fn fill(&mut self, vpn: u64, page: u64, serves: impl Fn(TlbKey) -> bool) {
        let slot = (vpn as usize) & (ENTRIES - 1);
        for (view, serving) in self.views.iter_mut().zip(self.serving) {
            let Some((keys, tag)) = serving else { continue };
            for access in AccessType::ALL {
                if serves(keys.of(access)) {
                    if let Some(entry) = view.half(access).get_mut(slot) {
                        *entry = ViewEntry { tag: vpn | tag, page };
                    }
                }
            }
        }
    }
}

/// Where generated code finds a view's entries: `ENTRIES` load entries of `entry_size` bytes, then as many
/// store entries from `store` and fetch entries from `fetch`, each with its tag at `tag` and its RAM page offset
/// at `page`.
#[cfg(feature = "dbt")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawViewLayout {
    pub entry_size: usize,
    pub store: usize,
    pub fetch: usize,
    pub tag: usize,
    pub page: usize,
}

#[cfg(feature = "dbt")]
pub(crate) const RAW_VIEW_LAYOUT: RawViewLayout = RawViewLayout {
    entry_size: core::mem::size_of::<ViewEntry>(),
    store: core::mem::offset_of!(View<{ crate::mem::mmu::TLB_ENTRIES }>, store),
    fetch: core::mem::offset_of!(View<{ crate::mem::mmu::TLB_ENTRIES }>, fetch),
    tag: core::mem::offset_of!(ViewEntry, tag),
    page: core::mem::offset_of!(ViewEntry, page),
};

/// A direct-mapped soft TLB with `ENTRIES` (a power of two) 4 KiB entries.
#[derive(Debug, Clone)]
pub struct SoftTlb<const ENTRIES: usize> {
    entries: [Entry; ENTRIES],
    /// Some valid entry caches a piece of a superpage, so `flush_va` must scan every entry.
    has_superpages: bool,
    /// Copies of these entries, per access context (load, store and fetch keys), for translated code.
    #[cfg(feature = "dbt")]
    views: Box<KeyedViews<ENTRIES>>,
}

impl<const ENTRIES: usize> Default for SoftTlb<ENTRIES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ENTRIES: usize> SoftTlb<ENTRIES> {
    const SIZE_IS_A_POWER_OF_TWO: () = assert!(ENTRIES.is_power_of_two(), "SoftTlb size must be a power of two");

    /// An empty TLB.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::SIZE_IS_A_POWER_OF_TWO;
        Self {
            entries: [Entry::INVALID; ENTRIES],
            has_superpages: false,
            #[cfg(feature = "dbt")]
            views: KeyedViews::boxed(),
        }
    }

    #[inline(always)]
    fn slot(vpn: u64) -> usize {
        (vpn as usize) & (ENTRIES - 1)
    }

    /// The host address of `va` when a cached translation permits the access `key` was built for. The caller
    /// accesses host memory there for at most the rest of the 4 KiB page (`PAGE_SIZE - (va & 0xfff)` bytes).
    #[inline(always)]
    pub fn lookup(&self, va: u64, key: TlbKey) -> Option<HostAddr> {
        let vpn = va >> PAGE_SHIFT;
        let entry = self.entries.get(Self::slot(vpn))?;
        if entry.vpn == vpn && entry.perms & key.bit != 0 && (entry.asid == key.asid || entry.global) {
            Some(HostAddr(entry.host_page | (va & (PAGE_SIZE - 1))))
        } else {
            None
        }
    }

    /// Caches the 4 KiB piece holding `va` of `translation` (a successful walk of `va` under ASID `asid`), whose
    /// guest real address the real map resolved to `mapping`. Returns whether anything was cached: untranslated
    /// accesses and pages no access could hit are not.
    pub fn insert(&mut self, va: u64, asid: u16, translation: &Translation, mapping: RealMapping) -> bool {
        if translation.pte_address.is_none() {
            return false;
        }
        let mut perms = 0;
        for access in AccessType::ALL {
            if !mapping.perms.contains(map_permission(access)) {
                continue;
            }
            for privilege in [Privilege::User, Privilege::Supervisor] {
                for sum in [false, true] {
                    for mxr in [false, true] {
                        let ctx = AccessContext::new(privilege, sum, mxr);
                        if translation.permits(access, ctx) {
                            perms |= permission_bit(access, ctx);
                        }
                    }
                }
            }
        }
        if perms == 0 {
            return false;
        }
        let vpn = va >> PAGE_SHIFT;
        self.drop_from_views(Self::slot(vpn));
        let Some(slot) = self.entries.get_mut(Self::slot(vpn)) else { return false };
        *slot = Entry {
            vpn,
            // Real map extents are page-aligned on both sides, so the host page starts at the aligned address.
            host_page: mapping.host.0 & !(PAGE_SIZE - 1),
            perms,
            asid,
            global: translation.global,
            level: translation.level,
        };
        self.has_superpages |= translation.level > 0;
        true
    }

    /// Caches the identity translation of the 4 KiB page holding `va` for untranslated (`satp` bare) S- and
    /// U-mode accesses under ASID `asid`, landing on host page `host_page`. `allowed(access, privilege)` says
    /// whether PMP allows that access kind in that privilege on the whole page and the real map permits it; only
    /// those combinations are cached. Returns whether anything was cached.
    pub fn insert_bare(
        &mut self,
        va: u64,
        asid: u16,
        host_page: HostAddr,
        mut allowed: impl FnMut(AccessType, Privilege) -> bool,
    ) -> bool {
        let mut perms = 0;
        for access in AccessType::ALL {
            for privilege in [Privilege::User, Privilege::Supervisor] {
                if allowed(access, privilege) {
                    perms |= bare_permission_bit(access, privilege);
                }
            }
        }
        if perms == 0 {
            return false;
        }
        let vpn = va >> PAGE_SHIFT;
        self.drop_from_views(Self::slot(vpn));
        let Some(slot) = self.entries.get_mut(Self::slot(vpn)) else { return false };
        *slot = Entry { vpn, host_page: host_page.0 & !(PAGE_SIZE - 1), perms, asid, global: false, level: 0 };
        true
    }

    /// `sfence.vma x0, x0`: forget everything.
    pub fn flush_all(&mut self) {
        self.entries = [Entry::INVALID; ENTRIES];
        self.has_superpages = false;
        self.forget_views();
    }

    /// `sfence.vma va, x0` (`asid` `None`): forget the page holding `va` in every address space, global or not.
    /// `sfence.vma va, asid` (`Some`): forget it for that ASID only, keeping global entries.
    pub fn flush_va(&mut self, va: u64, asid: Option<u16>) {
        let selected = |e: &Entry| e.covers(va) && asid.is_none_or(|asid| !e.global && e.asid == asid);
        if self.has_superpages {
            self.invalidate_where(selected);
        } else {
            let slot = Self::slot(va >> PAGE_SHIFT);
            if self.entries.get(slot).is_some_and(selected) {
                self.invalidate(slot);
            }
        }
    }

    /// `sfence.vma x0, asid`: forget every non-global entry of `asid`.
    pub fn flush_asid(&mut self, asid: u16) {
        self.invalidate_where(|e| e.vpn != INVALID_VPN && !e.global && e.asid == asid);
    }

    /// Invalidates every entry `selected` picks.
    fn invalidate_where(&mut self, selected: impl Fn(&Entry) -> bool) {
        for slot in 0..ENTRIES {
            if self.entries.get(slot).is_some_and(&selected) {
                self.invalidate(slot);
            }
        }
    }

    /// Invalidates the entry at `slot`, and what the views copied of it.
    fn invalidate(&mut self, slot: usize) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Entry::INVALID;
        }
        self.drop_from_views(slot);
    }

    /// `sfence.vma rs1, rs2` with `va` the value of rs1 (`None` for x0) and `asid` that of rs2 (`None` for x0).
    pub fn sfence_vma(&mut self, va: Option<u64>, asid: Option<u16>) {
        match (va, asid) {
            (None, None) => self.flush_all(),
            (None, Some(asid)) => self.flush_asid(asid),
            (Some(va), asid) => self.flush_va(va, asid),
        }
    }

    /// Every view forgets what it cached.
    #[inline(always)]
    fn forget_views(&mut self) {
        #[cfg(feature = "dbt")]
        self.views.forget();
    }

    /// The views drop what they copied of the entry at `slot`, which is about to change: a view entry only
    /// ever holds a copy of the TLB's entry in the same slot, so views never serve a translation the TLB no
    /// longer holds.
    #[inline(always)]
    fn drop_from_views(&mut self, slot: usize) {
        #[cfg(feature = "dbt")]
        self.views.drop_slot(slot);
        #[cfg(not(feature = "dbt"))]
        let _ = slot;
    }

    /// The view for `keys`, made live for them if it was not: its address (the layout [`RAW_VIEW_LAYOUT`]
    /// describes) and the tag its live entries carry.
    #[cfg(feature = "dbt")]
    pub(crate) fn view(&mut self, keys: Keys) -> (usize, u64) {
        self.views.view(keys)
    }

    /// Copies the TLB's entry for `va` into every live view, for each kind of access it serves with that view's
    /// keys (a page a load walked serves the stores that follow it too, once its D bit is set), if its page lies
    /// below `ram_len` (the views' pages are offsets into RAM that translated code accesses without a bound check).
    #[cfg(feature = "dbt")]
    pub(crate) fn fill_views(&mut self, va: u64, ram_len: u64) {
        let vpn = va >> PAGE_SHIFT;
        let Some(&entry) = self.entries.get(Self::slot(vpn)).filter(|entry| entry.vpn == vpn) else { return };
        if entry.host_page.checked_add(PAGE_SIZE).is_none_or(|end| end > ram_len) {
            return;
        }
        let serves = |key: TlbKey| entry.perms & key.bit != 0 && (entry.asid == key.asid || entry.global);
        self.views.fill(vpn, entry.host_page, serves);
    }

    /// What translated code finds for `access` at `va` in the view for `keys`: the host address, or `None`
    /// (tests: the inlined lookup, in Rust).
    #[cfg(all(test, feature = "dbt"))]
    pub(crate) fn view_lookup(&mut self, va: u64, keys: Keys, access: AccessType) -> Option<u64> {
        let (address, tag) = self.view(keys);
        let view = self.views.views.iter_mut().find(|view| &**view as *const View<ENTRIES> as usize == address)?;
        let entry = view.half(access).get(Self::slot(va >> PAGE_SHIFT))?;
        (entry.tag == (va >> PAGE_SHIFT) | tag).then_some(entry.page | (va & (PAGE_SIZE - 1)))
    }

    /// Number of valid entries (for tests and statistics; not on a hot path).
    pub fn occupancy(&self) -> usize {
        self.entries.iter().filter(|e| e.vpn != INVALID_VPN).count()
    }
}

#[cfg(test)]
#[path = "tlb_tests.rs"]
mod tests;
