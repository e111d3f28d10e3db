//! The patch table: for every guest instruction the scanner patched into a trap, the original bytes, keyed by
//! the **guest-physical** (guest real) address of the instruction; and the set of guest pages that have been
//! scanned.
//!
//! # Why guest-physical addresses
//! A patch lives in a guest RAM page, not in an address space: every virtual mapping of the page (kernel and
//! user aliases, the same library page in several processes, a different `satp`) sees the same patched bytes,
//! and a write to the page through any of them must drop its patches. The native board's real traps report a
//! guest virtual pc; the board translates it (as it already does for a shadow fill) before asking this table.
//!
//! # What is patched
//! Only the **first 16-bit parcel** of an instruction is replaced, by [`TRAP_PARCEL`] (`0x0000`): the
//! all-zeros parcel is defined to be an illegal instruction on every RISC-V implementation, with or without the
//! C extension (unprivileged specification, "Expanded Instruction-Length Encoding"), so the hardware traps with
//! an illegal-instruction exception exactly at the site, and the dispatcher resumes at `pc + len` of the
//! original. Patching only the first parcel keeps every other byte intact: a 32-bit instruction that straddles
//! a page boundary is patched within its own page, and a second decoding path that starts at the site's upper
//! parcel still reads the original bytes. The guest's own `0x0000` parcels are not sites: a trap at an address
//! this table does not hold is the guest's own illegal instruction.
//!
//! # Shape and cost
//! `PatchTable<SITES, PAGES>` holds up to `SITES` patched sites in an array sorted by address (lookup is a
//! binary search: about 12 comparisons for 4096 sites, on every illegal-instruction trap from a guest) and up
//! to `PAGES` scanned pages in a second sorted array. A page's sites are contiguous, so recording a scanned page
//! or dropping one moves the sites above it once. Footprint: `16 * SITES + 8 * PAGES` bytes plus two counts.
//! Nothing is allocated; [`PatchTable::new`] is a `const fn` (a board puts the table in a `static`). A scan of a
//! whole page (2048 parcels, worst case) takes about 20-30 µs on a 2020s x86-64 host in release mode.
//!
//! # Full table
//! The scanner checks capacity before it changes anything: when the page's sites or the page record do not
//! fit, it returns [`super::scan::ScanError::Full`] and the page stays unscanned and unpatched. Two fallbacks
//! stay correct: keep the page non-executable and run its instructions by emulation, or evict another page
//! ([`PatchTable::evict_any`], which restores its bytes; that page must lose execute permission again, for
//! example by flushing the shadow tables) and scan again.
//!
//! This module must never leave a patched parcel without its record (a trap there would be misreported to the
//! guest as its own illegal instruction), nor keep a record for bytes it no longer controls.

use crate::mem::Ram;

/// Size of a guest page, the unit of scanning.
pub const PAGE_SIZE: u64 = 4096;
const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// What a patched site's first parcel is replaced with: the all-zeros parcel, illegal on every implementation.
pub const TRAP_PARCEL: u16 = 0x0000;

/// Guest RAM as the scanner and the table see it: 16-bit parcels by guest-physical address.
///
/// Implementations read and write guest RAM only (never a device) and report any address outside it as `None`
/// or `false`; they must not treat a write as a guest write (the patcher's own writes must not drop patches).
pub trait CodeMemory {
    /// The little-endian parcel at guest-physical `pa`, or `None` when it is not RAM.
    fn read_parcel(&self, pa: u64) -> Option<u16>;
    /// Writes `parcel` at `pa`; false (and nothing written) when it is not RAM.
    fn write_parcel(&mut self, pa: u64, parcel: u16) -> bool;
}

impl CodeMemory for Ram<'_> {
    fn read_parcel(&self, pa: u64) -> Option<u16> {
        self.load(pa, 2).map(|value| value as u16)
    }

    fn write_parcel(&mut self, pa: u64, parcel: u16) -> bool {
        self.store(pa, 2, parcel as u64).is_some()
    }
}

/// One patched instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchSite {
    /// Guest-physical address of the instruction (even).
    pub pa: u64,
    /// The original instruction as the scanner decoded it: the 16-bit parcel in the low half for a compressed
    /// one. For a straddling site the high half is the next page's parcel as the scan read it (0 when it was
    /// not available): see [`PatchSite::straddles`].
    pub word: u32,
    /// Length of the original instruction: 2 or 4.
    pub len: u8,
    /// The instruction is 4 bytes long and starts at the last parcel of its page: its high half lives in the
    /// next *virtual* page, whose mapping and bytes this table does not own. The dispatcher must take the high
    /// half from the guest's current translation of `pc + 2` ([`PatchSite::with_upper`]).
    pub straddles: bool,
}

impl PatchSite {
    /// The original bytes of the patched parcel.
    pub const fn original_parcel(&self) -> u16 {
        self.word as u16
    }

    /// The original instruction with `upper` as its high parcel (for a straddling site: the parcel now at
    /// `pc + 2`; for any other site the recorded word is returned unchanged).
    pub const fn with_upper(&self, upper: u16) -> u32 {
        if self.straddles {
            (self.word & 0xffff) | (upper as u32) << 16
        } else {
            self.word
        }
    }
}

/// A scanned page: its frame number (guest-physical address / [`PAGE_SIZE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageRecord {
    frame: u64,
}

/// Why sites could not be added (nothing was changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFull {
    /// No room for the page record.
    Pages,
    /// No room for this many more sites.
    Sites { needed: usize },
}

/// Why [`PatchTable::insert_page`] changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertFailure {
    Full(TableFull),
    /// The caller could not produce a site.
    Source,
}

/// The patch table: patched sites by guest-physical address and the scanned pages (see the module docs).
pub struct PatchTable<const SITES: usize, const PAGES: usize> {
    /// Sorted by `pa`; the first `site_count` are live.
    sites: [PatchSite; SITES],
    site_count: usize,
    /// Sorted by `frame`; the first `page_count` are live.
    pages: [PageRecord; PAGES],
    page_count: usize,
}

impl<const SITES: usize, const PAGES: usize> Default for PatchTable<SITES, PAGES> {
    fn default() -> Self {
        Self::new()
    }
}

const EMPTY_SITE: PatchSite = PatchSite { pa: 0, word: 0, len: 0, straddles: false };
const EMPTY_PAGE: PageRecord = PageRecord { frame: 0 };

impl<const SITES: usize, const PAGES: usize> PatchTable<SITES, PAGES> {
    /// An empty table.
    pub const fn new() -> Self {
        Self { sites: [EMPTY_SITE; SITES], site_count: 0, pages: [EMPTY_PAGE; PAGES], page_count: 0 }
    }

    fn live_sites(&self) -> &[PatchSite] {
        self.sites.get(..self.site_count).unwrap_or(&[])
    }

    fn live_pages(&self) -> &[PageRecord] {
        self.pages.get(..self.page_count).unwrap_or(&[])
    }

    fn page_index(&self, pa: u64) -> Result<usize, usize> {
        let frame = pa / PAGE_SIZE;
        self.live_pages().binary_search_by(|page| page.frame.cmp(&frame))
    }

    /// Index of the first site at or above `pa`.
    fn first_site_at_or_above(&self, pa: u64) -> usize {
        self.live_sites().partition_point(|site| site.pa < pa)
    }

    /// Patched sites held.
    pub fn sites(&self) -> usize {
        self.site_count
    }

    /// Scanned pages held.
    pub fn scanned_pages(&self) -> usize {
        self.page_count
    }

    /// Whether the page holding guest-physical `pa` is scanned.
    pub fn is_scanned(&self, pa: u64) -> bool {
        self.page_index(pa).is_ok()
    }

    /// The site patched at guest-physical `pa` (the address of its first byte), if any.
    pub fn site(&self, pa: u64) -> Option<PatchSite> {
        let sites = self.live_sites();
        sites.binary_search_by(|site| site.pa.cmp(&pa)).ok().and_then(|index| sites.get(index).copied())
    }

    /// **The dispatcher hook**: on a real illegal-instruction trap at guest-physical `pa`, the original
    /// instruction word and length when the trap is a patched site, `None` when it is the guest's own illegal
    /// instruction (deliver it). For a straddling site ([`PatchSite::straddles`]) the high half is the one the
    /// scan saw; use [`PatchTable::site`] and [`PatchSite::with_upper`] to take the current one.
    pub fn patched_original(&self, pa: u64) -> Option<(u32, u8)> {
        self.site(pa).map(|site| (site.word, site.len))
    }

    /// The sites of the page holding `pa`, in address order.
    pub fn page_sites(&self, pa: u64) -> &[PatchSite] {
        let base = pa & !PAGE_MASK;
        let start = self.first_site_at_or_above(base);
        let end = self.first_site_at_or_above(base.saturating_add(PAGE_SIZE));
        self.live_sites().get(start..end).unwrap_or(&[])
    }

    /// What a shadow leaf may grant the guest natively on the page of `pa`, `[fetch, load, store]`, given what
    /// the guest's tables, the real map and PMP grant (step 1 of the board contract in [`super::scan`]):
    /// execute only once the page is scanned (a fetch from an unscanned page must fault, to scan it); never
    /// store to a scanned page (a store must fault, to drop its patches first); never load from a page with
    /// sites (a load must fault, to read the original bytes through [`PatchTable::unpatch`]).
    pub fn native_grants(&self, pa: u64, [fetch, load, store]: [bool; 3]) -> [bool; 3] {
        if self.is_scanned(pa) {
            [fetch, load && self.page_sites(pa).is_empty(), false]
        } else {
            [false, load, store]
        }
    }

    /// Restores the original bytes in `buf`, which holds guest memory read from guest-physical `pa` onwards
    /// (any length, any alignment), wherever it overlaps a patched parcel: a guest (or the VMM on its behalf)
    /// reading patched code sees what it wrote.
    pub fn unpatch(&self, pa: u64, buf: &mut [u8]) {
        let end = pa.saturating_add(buf.len() as u64);
        // A parcel starting one byte below `pa` still overlaps it.
        let start = self.first_site_at_or_above(pa.saturating_sub(1));
        for site in self.live_sites().get(start..).unwrap_or(&[]) {
            if site.pa >= end {
                break;
            }
            for (byte, value) in site.original_parcel().to_le_bytes().into_iter().enumerate() {
                let address = site.pa + byte as u64;
                if address >= pa && address < end {
                    if let Some(slot) = buf.get_mut((address - pa) as usize) {
                        *slot = value;
                    }
                }
            }
        }
    }

    /// Drops the page holding `pa` from the table: restores the original bytes of its sites in `memory` and
    /// forgets its sites and its scan. Returns whether the page was scanned.
    ///
    /// Call it **before** any write to a scanned page lands (a guest store, a device's DMA, a loader), so that
    /// the write applies to the original bytes, exactly as if the code had never been patched (a write covering
    /// part of a patched instruction keeps the rest of the original). A parcel that no longer holds
    /// [`TRAP_PARCEL`] was overwritten behind the table's back and is left as it is.
    pub fn drop_page<M: CodeMemory + ?Sized>(&mut self, pa: u64, memory: &mut M) -> bool {
        let Ok(page) = self.page_index(pa) else { return false };
        let base = pa & !PAGE_MASK;
        let start = self.first_site_at_or_above(base);
        let end = self.first_site_at_or_above(base.saturating_add(PAGE_SIZE));
        for site in self.live_sites().get(start..end).unwrap_or(&[]) {
            if memory.read_parcel(site.pa) == Some(TRAP_PARCEL) {
                memory.write_parcel(site.pa, site.original_parcel());
            }
        }
        let removed = end - start;
        self.sites.copy_within(end..self.site_count, start);
        self.site_count -= removed;
        self.pages.copy_within(page + 1..self.page_count, page);
        self.page_count -= 1;
        true
    }

    /// [`PatchTable::drop_page`] for every scanned page that `[pa, pa + len)` touches: call before a write of
    /// `len` bytes at `pa` lands. Returns how many pages were dropped (each must lose execute permission).
    pub fn prepare_write<M: CodeMemory + ?Sized>(&mut self, pa: u64, len: u64, memory: &mut M) -> usize {
        if len == 0 {
            return 0;
        }
        let first = pa / PAGE_SIZE;
        let last = pa.saturating_add(len - 1) / PAGE_SIZE;
        let mut dropped = 0;
        // Walk the scanned pages in range rather than every frame of a large write.
        while let Some(frame) = self.live_pages().iter().map(|page| page.frame).find(|&f| f >= first && f <= last) {
            if self.drop_page(frame * PAGE_SIZE, memory) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Drops some scanned page (the lowest) to make room, restoring its bytes; returns its guest-physical
    /// address. The caller must take execute permission away from that page again (it is no longer scanned).
    pub fn evict_any<M: CodeMemory + ?Sized>(&mut self, memory: &mut M) -> Option<u64> {
        let frame = self.live_pages().first()?.frame;
        self.drop_page(frame * PAGE_SIZE, memory);
        Some(frame * PAGE_SIZE)
    }

    /// Drops every page, restoring all original bytes.
    pub fn clear<M: CodeMemory + ?Sized>(&mut self, memory: &mut M) {
        while self.evict_any(memory).is_some() {}
    }

    /// Records the page of `pa` as scanned with `count` sites, which `site(k)` gives in ascending address order
    /// (all inside the page); the caller patches their parcels afterwards. The sites go in as one block (one move
    /// of the sites above them, whatever `count`). On `Err` nothing changed: [`InsertFailure::Full`] when the page
    /// is already recorded or the page or its sites do not fit, [`InsertFailure::Source`] when `site` failed.
    pub(crate) fn insert_page(
        &mut self,
        pa: u64,
        count: usize,
        mut site: impl FnMut(usize) -> Option<PatchSite>,
    ) -> Result<(), InsertFailure> {
        let page = match self.page_index(pa) {
            Ok(_) => return Err(InsertFailure::Full(TableFull::Pages)),
            Err(page) if self.page_count < PAGES => page,
            Err(_) => return Err(InsertFailure::Full(TableFull::Pages)),
        };
        if count > SITES - self.site_count {
            return Err(InsertFailure::Full(TableFull::Sites { needed: count }));
        }
        let base = pa & !PAGE_MASK;
        let at = self.first_site_at_or_above(base);
        self.sites.copy_within(at..self.site_count, at + count);
        for k in 0..count {
            let next = site(k).filter(|next| next.pa & !PAGE_MASK == base);
            match (next, self.sites.get_mut(at + k)) {
                (Some(next), Some(slot)) => *slot = next,
                _ => {
                    self.sites.copy_within(at + count..self.site_count + count, at);
                    return Err(InsertFailure::Source);
                }
            }
        }
        self.site_count += count;
        self.pages.copy_within(page..self.page_count, page + 1);
        if let Some(slot) = self.pages.get_mut(page) {
            *slot = PageRecord { frame: pa / PAGE_SIZE };
        }
        self.page_count += 1;
        Ok(())
    }
}
