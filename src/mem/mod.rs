//! Guest memory: guest real RAM as a host byte slice owned by one thread, or as a handle onto RAM shared by several
//! host threads (one per guest hart: [`shared`]), with every access bounds-checked.
//!
//! Run-time users (devices' DMA, loaders, firmware calls) copy with [`Ram::read_bytes`], [`Ram::write_bytes`] and
//! [`Ram::fill`], which work on both kinds; the slices ([`Ram::slice`], [`Ram::as_slice`], ...) exist only for
//! exclusive RAM and answer `None` for shared RAM, so no caller silently reads nothing. AMOs and SC go through
//! [`Ram::amo_at_offset`] and [`Ram::compare_exchange_at_offset`], host atomics on shared RAM.
//!
//! The three levels of page-map tables live in the submodules: [`sv39`] walks the guest's tables (guest virtual ->
//! guest real), [`realmap`] is the VM's real map (guest real -> host), [`tlb`] caches their composition for the
//! emulation engines, [`shadow`] composes them into real page tables for the native engine. This module never allocates on the access path and never lets a guest-supplied address index
//! outside the slice.

pub mod realmap;
pub mod shadow;
pub mod sv39;
pub mod tlb;

pub mod mmu;
pub mod pmp;
#[cfg(target_has_atomic = "64")]
pub mod shared;
#[cfg(all(test, target_has_atomic = "64"))]
pub(crate) mod shared_tests;

#[cfg(target_has_atomic = "64")]
pub use shared::{RemoteFence, SharedRam};

/// Guest real address of the first byte of RAM on the QEMU `virt` machine.
pub const RAM_BASE: u64 = 0x8000_0000;

/// Guest real RAM: `size` bytes lent by the host, seen by the guest at `[base, base + size)`. Either exclusive (one
/// thread owns the bytes: [`Ram::new`]) or a handle onto RAM shared by several threads ([`Ram::shared`], one
/// handle per thread).
pub struct Ram<'a> {
    base: u64,
    size: u64,
    storage: Storage<'a>,
    /// Pages an engine has translated code from, so that any write to them is noticed (exclusive RAM; shared RAM
    /// keeps its watch in the [`SharedRam`]).
    code_watch: Option<CodeWatch<'a>>,
}

/// Where a [`Ram`]'s bytes are.
enum Storage<'a> {
    /// Owned by this handle alone.
    Exclusive(&'a mut [u8]),
    /// Shared with other threads' handles; `cursor` is this handle's position in the shared dirty-code log.
    #[cfg(target_has_atomic = "64")]
    Shared { ram: &'a SharedRam<'a>, cursor: u64 },
}

/// Size of a page, the unit of code-write watching.
pub const PAGE_SIZE: u64 = 4096;
/// Dirty code pages remembered before an overflow makes every translation stale.
pub(crate) const DIRTY_CAPACITY: usize = 32;
/// Bytes of a page that one bit of a code watch's granule mask covers.
pub const CODE_GRANULE: u64 = PAGE_SIZE / 64;

/// Words a granular code watch ([`Ram::attach_granular_code_watch`]) takes for `ram_size` bytes of RAM: one bit per
/// page, then one granule mask per page.
pub const fn code_watch_words(ram_size: u64) -> usize {
    let pages = ram_size.div_ceil(PAGE_SIZE);
    (pages.div_ceil(64) + pages) as usize
}

/// The granule bits of bytes `[start, end)` of one page (offsets within the page, `start < end <= PAGE_SIZE`).
fn granule_bits(start: u64, end: u64) -> u64 {
    let first = start / CODE_GRANULE;
    let last = (end - 1) / CODE_GRANULE;
    let upto = if last >= 63 { u64::MAX } else { (1u64 << (last + 1)) - 1 };
    upto & !((1u64 << first) - 1)
}

/// Which RAM pages hold translated code, and which of those were written since the engine last asked. Every
/// write to RAM — a guest store by any engine or hart, a device's DMA, a loader — goes through [`Ram`], so none
/// can change translated code unseen.
///
/// With granules ([`Ram::attach_granular_code_watch`]) a watched page also records which of its 64-byte granules
/// hold code, and a write to the page's other granules (data that shares a page with code: a loop's counter, a
/// literal pool, a kernel's `.data` next to its `.text`) is not a code write: the page stays watched and no
/// translation is dropped. Granule bits only ever over-approximate the code: they are set for every range an
/// engine translates and cleared with the page's bit when the page is written.
struct CodeWatch<'a> {
    /// One bit per RAM page (page index = offset / 4096).
    watched: &'a mut [u64],
    /// One word per RAM page: bit `g` set when bytes `[64 g, 64 g + 64)` of the page may hold translated code.
    /// Empty without granules: then any write to a watched page is a code write.
    granules: &'a mut [u64],
    dirty: [u64; DIRTY_CAPACITY],
    dirty_len: usize,
    overflowed: bool,
}

impl CodeWatch<'_> {
    /// Whether page `page` is watched.
    #[inline(always)]
    fn is_watched(&self, page: u64) -> bool {
        self.watched.get((page / 64) as usize).is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// Records a write to `[start, end)` if it touches code in a watched page.
    #[inline(always)]
    fn note_write(&mut self, start: u64, end: u64) {
        for page in start / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            let Some(word) = self.watched.get_mut((page / 64) as usize) else { continue };
            let bit = 1u64 << (page % 64);
            if *word & bit == 0 {
                continue;
            }
            if let Some(mask) = self.granules.get_mut(page as usize) {
                let page_start = page * PAGE_SIZE;
                let written =
                    granule_bits(start.max(page_start) - page_start, end.min(page_start + PAGE_SIZE) - page_start);
                if *mask & written == 0 {
                    // Data beside the page's code.
                    continue;
                }
                *mask = 0;
            }
            *word &= !bit;
            match self.dirty.get_mut(self.dirty_len) {
                Some(slot) => {
                    *slot = page;
                    self.dirty_len += 1;
                }
                None => self.overflowed = true,
            }
        }
    }
}

/// Code pages written since the last [`Ram::take_dirty_code`].
// Returned by value, rarely, and never stored: no reason to box the list (there is no heap).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyCode {
    /// These pages (offset / 4096) were written.
    Pages { pages: [u64; DIRTY_CAPACITY], len: usize },
    /// Too many to list: treat every page as written.
    All,
}

impl DirtyCode {
    /// The written pages, or `None` when every page must be treated as written.
    pub fn pages(&self) -> Option<&[u64]> {
        match self {
            DirtyCode::Pages { pages, len } => pages.get(..*len),
            DirtyCode::All => None,
        }
    }
}

impl<'a> Ram<'a> {
    /// Exclusive RAM: this handle alone reads and writes `bytes`.
    pub fn new(base: u64, bytes: &'a mut [u8]) -> Self {
        Self { base, size: bytes.len() as u64, storage: Storage::Exclusive(bytes), code_watch: None }
    }

    /// A handle onto RAM shared by several threads (one handle per thread; handles are not shared). Its code watch
    /// is the [`SharedRam`]'s, seen by every handle; this handle reports the code writes logged from now on.
    #[cfg(target_has_atomic = "64")]
    pub fn shared(shared: &'a SharedRam<'a>) -> Self {
        Self {
            base: shared.base(),
            size: shared.size(),
            storage: Storage::Shared { ram: shared, cursor: shared.logged() },
            code_watch: None,
        }
    }

    /// Whether this is a handle onto shared RAM.
    #[inline(always)]
    pub fn is_shared(&self) -> bool {
        !matches!(self.storage, Storage::Exclusive(_))
    }

    /// Watches writes to code pages, with one bit of `bitmap` per page of RAM (at least `size / 4096` bits).
    /// Engines that keep translated code need this; without it they must not cache translations. Shared RAM
    /// ignores it: its watch is the [`SharedRam`]'s.
    pub fn attach_code_watch(&mut self, bitmap: &'a mut [u64]) {
        if self.is_shared() {
            return;
        }
        bitmap.fill(0);
        self.code_watch = Some(CodeWatch {
            watched: bitmap,
            granules: &mut [],
            dirty: [0; DIRTY_CAPACITY],
            dirty_len: 0,
            overflowed: false,
        });
    }

    /// [`attach_code_watch`](Self::attach_code_watch) at the grain of 64-byte granules within a page (see
    /// [`CodeWatch`]): `words`, sized by [`code_watch_words`] for this RAM, holds the page bits and then the granule
    /// masks. Shorter, the watch is by page only.
    pub fn attach_granular_code_watch(&mut self, words: &'a mut [u64]) {
        if self.is_shared() {
            return;
        }
        let pages = self.size().div_ceil(PAGE_SIZE);
        if words.len() < code_watch_words(self.size()) {
            return self.attach_code_watch(words);
        }
        words.fill(0);
        let (watched, granules) = words.split_at_mut(pages.div_ceil(64) as usize);
        self.code_watch =
            Some(CodeWatch { watched, granules, dirty: [0; DIRTY_CAPACITY], dirty_len: 0, overflowed: false });
    }

    /// Starts watching the whole of page `page` (offset / 4096) for writes; false when there is no watch or the page
    /// is outside it.
    pub fn watch_code_page(&mut self, page: u64) -> bool {
        self.watch_code(page * PAGE_SIZE, PAGE_SIZE)
    }

    /// Starts watching RAM bytes `[offset, offset + len)` (an engine translated code from them) for writes: with a
    /// granular watch, writes to the rest of their pages stay data writes. False when there is no watch or a byte
    /// lies outside it (nothing may then be kept translated from them). An engine calls this BEFORE it reads the
    /// bytes it translates: with shared RAM, a write by another thread after the watch is set is then reported.
    pub fn watch_code(&mut self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len.max(1));
        if end > self.size() {
            return false;
        }
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            return ram.has_watch() && ram.watch(offset, end);
        }
        let Some(watch) = self.code_watch.as_mut() else { return false };
        let mut page = offset / PAGE_SIZE;
        while page * PAGE_SIZE < end {
            let Some(word) = watch.watched.get_mut((page / 64) as usize) else { return false };
            *word |= 1 << (page % 64);
            if let Some(mask) = watch.granules.get_mut(page as usize) {
                let page_start = page * PAGE_SIZE;
                *mask |=
                    granule_bits(offset.max(page_start) - page_start, end.min(page_start + PAGE_SIZE) - page_start);
            }
            page += 1;
        }
        true
    }

    /// Makes this hart's instruction fetch see every store to RAM so far (its `fence.i`, or the SBI's remote one):
    /// with shared RAM whose watches defer their fence ([`RemoteFence::may_defer`]), runs it and logs any page
    /// whose newly watched code a racing store changed unseen, so [`has_dirty_code`](Self::has_dirty_code) tells
    /// the engine to drop it before it runs anything else. Exclusive RAM has nothing to do.
    pub fn sync_instruction_fetch(&self) {
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            ram.sync_code_fetch();
        }
    }

    /// Whether page `page` (offset / 4096) is watched: an engine keeps code translated from it (or a native
    /// VMM's patcher scanned it), so it must never be written unseen (natively, by a real CPU's store).
    #[inline]
    pub fn is_code_page(&self, page: u64) -> bool {
        // Exclusive RAM's watch first (the fast path's common case); only shared RAM has none.
        if let Some(watch) = &self.code_watch {
            return watch.is_watched(page);
        }
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            return ram.is_watched(page);
        }
        false
    }

    /// Whether a watched code page was written since the last [`take_dirty_code`](Self::take_dirty_code) (with
    /// shared RAM: by any thread).
    #[inline(always)]
    pub fn has_dirty_code(&self) -> bool {
        if let Some(watch) = &self.code_watch {
            return watch.dirty_len > 0 || watch.overflowed;
        }
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, cursor } = &self.storage {
            return ram.logged() != *cursor;
        }
        false
    }

    /// The watched code pages written since the last call (they are no longer watched).
    pub fn take_dirty_code(&mut self) -> DirtyCode {
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, cursor } = &mut self.storage {
            return ram.take_dirty(cursor);
        }
        let Some(watch) = self.code_watch.as_mut() else {
            return DirtyCode::Pages { pages: [0; DIRTY_CAPACITY], len: 0 };
        };
        let taken = if watch.overflowed {
            DirtyCode::All
        } else {
            DirtyCode::Pages { pages: watch.dirty, len: watch.dirty_len }
        };
        watch.dirty_len = 0;
        watch.overflowed = false;
        taken
    }

    /// Records a write to `[offset, offset + len)` (already stored) if it touches code in a watched page.
    #[inline(always)]
    fn note_write(&mut self, offset: usize, len: usize) {
        let (start, end) = (offset as u64, offset as u64 + len.max(1) as u64);
        if let Some(watch) = self.code_watch.as_mut() {
            return watch.note_write(start, end);
        }
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            ram.note_write(start, end);
        }
    }

    /// The host address of the first byte, for generated code that loads and stores RAM itself (the dynamic
    /// binary translator): it must note every store to a watched page through [`Ram::store`] or the like,
    /// never write one directly ([`Ram::raw_code_watch`] says which pages are watched).
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_bytes(&mut self) -> *mut u8 {
        match &mut self.storage {
            Storage::Exclusive(bytes) => bytes.as_mut_ptr(),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.as_ptr(),
        }
    }

    /// The watch bitmap (address of the first word, number of pages it covers), for generated code that
    /// stores directly only to unwatched pages; `(0, 0)` without a watch (then no page may be stored to
    /// directly... and no translation may be kept).
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_code_watch(&self) -> (usize, u64) {
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            return if ram.has_watch() { ram.raw_watch() } else { (0, 0) };
        }
        match &self.code_watch {
            Some(watch) => (watch.watched.as_ptr() as usize, watch.watched.len() as u64 * 64),
            None => (0, 0),
        }
    }

    /// The granule masks of a granular watch (address of the first word, one word per RAM page, number of
    /// pages), for generated code that stores directly to the granules of a watched page that hold no code;
    /// `(0, 0)` without a watch or granules (then every store to a watched page must go through [`Ram::store`]).
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_code_granules(&self) -> (usize, u64) {
        #[cfg(target_has_atomic = "64")]
        if let Storage::Shared { ram, .. } = &self.storage {
            return ram.raw_granules();
        }
        match &self.code_watch {
            Some(watch) => (watch.granules.as_ptr() as usize, watch.granules.len() as u64),
            None => (0, 0),
        }
    }

    /// Guest real address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    #[inline(always)]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset into the host slice of `[addr, addr + len)`, or `None` when any byte lies outside RAM.
    #[inline(always)]
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<usize> {
        let offset = addr.wrapping_sub(self.base);
        // `offset <= size - len` also rejects addresses below `base` (they wrap to huge offsets).
        if len <= self.size && offset <= self.size - len {
            Some(offset as usize)
        } else {
            None
        }
    }

    /// Whether every byte of `[addr, addr + len)` is RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        self.offset_of(addr, len).is_some()
    }

    /// The bytes `[addr, addr + len)` of EXCLUSIVE RAM, or `None` when any lies outside RAM or the RAM is shared
    /// (run-time code copies with [`read_bytes`](Self::read_bytes) instead).
    pub fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let offset = self.offset_of(addr, len)?;
        match &self.storage {
            Storage::Exclusive(bytes) => bytes.get(offset..offset + len as usize),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { .. } => None,
        }
    }

    /// The bytes `[addr, addr + len)` of EXCLUSIVE RAM for writing, or `None` when any lies outside RAM or the
    /// RAM is shared (run-time code copies with [`write_bytes`](Self::write_bytes) instead).
    pub fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        let offset = self.offset_of(addr, len)?;
        if self.is_shared() {
            return None;
        }
        self.note_write(offset, len as usize);
        match &mut self.storage {
            Storage::Exclusive(bytes) => bytes.get_mut(offset..offset + len as usize),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { .. } => None,
        }
    }

    /// Copies the bytes at guest real address `addr` into `buf`; `None` (nothing copied) when any lies outside RAM.
    pub fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        let offset = self.offset_of(addr, buf.len() as u64)?;
        match &self.storage {
            Storage::Exclusive(bytes) => buf.copy_from_slice(bytes.get(offset..offset + buf.len())?),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.read(offset, buf)?,
        }
        Some(())
    }

    /// Copies `buf` to guest real address `addr`, noting code writes; `None` (nothing written) when any byte lies
    /// outside RAM.
    pub fn write_bytes(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        let offset = self.offset_of(addr, buf.len() as u64)?;
        match &mut self.storage {
            Storage::Exclusive(bytes) => bytes.get_mut(offset..offset + buf.len())?.copy_from_slice(buf),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.write(offset, buf)?,
        }
        if !buf.is_empty() {
            self.note_write(offset, buf.len());
        }
        Some(())
    }

    /// Stores `byte` in the `len` bytes at guest real address `addr`, noting code writes; `None` (nothing written)
    /// when any lies outside RAM.
    pub fn fill(&mut self, addr: u64, len: u64, byte: u8) -> Option<()> {
        let offset = self.offset_of(addr, len)?;
        match &mut self.storage {
            Storage::Exclusive(bytes) => bytes.get_mut(offset..offset + len as usize)?.fill(byte),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.fill(offset, len as usize, byte)?,
        }
        if len != 0 {
            self.note_write(offset, len as usize);
        }
        Some(())
    }

    /// Little-endian load of `size` (1, 2, 4 or 8) bytes, zero-extended; any alignment.
    #[inline(always)]
    pub fn load(&self, addr: u64, size: u64) -> Option<u64> {
        let offset = self.offset_of(addr, size)?;
        match &self.storage {
            Storage::Exclusive(bytes) => {
                let mut buf = [0u8; 8];
                let len = (size as usize).min(8);
                buf[..len].copy_from_slice(bytes.get(offset..offset + len)?);
                Some(u64::from_le_bytes(buf))
            }
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.load(offset, size),
        }
    }

    /// Little-endian store of the low `size` (1, 2, 4 or 8) bytes of `value`; any alignment.
    #[inline(always)]
    pub fn store(&mut self, addr: u64, size: u64, value: u64) -> Option<()> {
        let offset = self.offset_of(addr, size)?;
        let len = (size as usize).min(8);
        match &mut self.storage {
            Storage::Exclusive(bytes) => {
                bytes.get_mut(offset..offset + len)?.copy_from_slice(&value.to_le_bytes()[..len]);
            }
            // Stored before the watch is checked (see `shared`'s ordering rules).
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.store(offset, size, value)?,
        }
        self.note_write(offset, len);
        Some(())
    }

    /// Little-endian load of `size` (1, 2, 4 or 8) bytes at `offset` into the slice: the host address a
    /// [`realmap::RealMap::for_ram`] extent or a [`tlb::SoftTlb`] hit yields. `None` when any byte lies outside.
    #[inline(always)]
    pub fn load_at_offset(&self, offset: u64, size: u64) -> Option<u64> {
        self.load(self.base.wrapping_add(offset), size)
    }

    /// Little-endian store of the low `size` (1, 2, 4 or 8) bytes of `value` at `offset` into the slice (see
    /// [`Ram::load_at_offset`]). `None` when any byte lies outside.
    #[inline(always)]
    pub fn store_at_offset(&mut self, offset: u64, size: u64, value: u64) -> Option<()> {
        self.store(self.base.wrapping_add(offset), size, value)
    }

    /// The engines' fast-path load of `size` (at most 8) bytes at host offset `offset`, zero-extended; `None`
    /// when outside (or, for shared RAM, misaligned: then the caller's slow path serves it).
    #[inline(always)]
    pub(crate) fn load_at_host_offset(&self, offset: usize, size: usize) -> Option<u64> {
        match &self.storage {
            Storage::Exclusive(bytes) => {
                let bytes = bytes.get(offset..offset.checked_add(size)?)?;
                let mut buf = [0u8; 8];
                buf.get_mut(..size)?.copy_from_slice(bytes);
                Some(u64::from_le_bytes(buf))
            }
            #[cfg(target_has_atomic = "64")]
            // Misaligned: `None`, the caller's slow path takes it byte by byte.
            Storage::Shared { ram, .. } => ram.load_aligned(offset, size),
        }
    }

    /// The engines' fast-path store of the low `size` (at most 8) bytes of `value` at host offset `offset`,
    /// within one page: `Some(true)` when the page is watched code (the write was noted), `None` (nothing
    /// written) when outside (or, for shared RAM, misaligned: then the caller's slow path serves it).
    #[inline(always)]
    pub(crate) fn store_at_host_offset(&mut self, offset: usize, size: usize, value: u64) -> Option<bool> {
        let end = offset.checked_add(size)?;
        if end as u64 > self.size {
            return None;
        }
        let page = offset as u64 / PAGE_SIZE;
        match &mut self.storage {
            Storage::Exclusive(bytes) => {
                let code = self.code_watch.as_ref().is_some_and(|watch| watch.is_watched(page));
                if let Some(watch) = self.code_watch.as_mut().filter(|_| code) {
                    watch.note_write(offset as u64, end as u64);
                }
                bytes.get_mut(offset..end)?.copy_from_slice(value.to_le_bytes().get(..size)?);
                Some(code)
            }
            // Stored before the watch is checked (see `shared`'s ordering rules).
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => {
                ram.store_aligned(offset, size, value)?;
                let code = ram.is_watched(page);
                if code {
                    ram.note_write(offset as u64, end as u64);
                }
                Some(code)
            }
        }
    }

    /// Atomically replaces the `size`-byte (1, 2, 4 or 8) value at `offset` (size-aligned) with `op(old)`, noting
    /// code writes: an AMO. Returns `old`, zero-extended; `None` (nothing written) when misaligned or outside RAM.
    /// Shared RAM makes it one host read-modify-write; `op` may then run more than once.
    #[inline]
    pub fn amo_at_offset(&mut self, offset: u64, size: u64, op: impl Fn(u64) -> u64) -> Option<u64> {
        let at = self.offset_of(self.base.wrapping_add(offset), size)?;
        if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(size) {
            return None;
        }
        let len = size as usize;
        let old = match &mut self.storage {
            Storage::Exclusive(bytes) => {
                let cell = bytes.get_mut(at..at + len)?;
                let mut buf = [0u8; 8];
                buf.get_mut(..len)?.copy_from_slice(cell);
                let old = u64::from_le_bytes(buf);
                cell.copy_from_slice(op(old).to_le_bytes().get(..len)?);
                old
            }
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.amo(at, size, op)?,
        };
        self.note_write(at, len);
        Some(old)
    }

    /// Atomically stores the low `size` (1, 2, 4 or 8) bytes of `new` at `offset` (size-aligned) if the value
    /// there equals the low `size` bytes of `expected`, noting code writes: an SC. `Ok(old)` when stored,
    /// `Err(current)` (zero-extended) when not; `None` when misaligned or outside RAM.
    #[inline]
    pub fn compare_exchange_at_offset(
        &mut self,
        offset: u64,
        size: u64,
        expected: u64,
        new: u64,
    ) -> Option<Result<u64, u64>> {
        let at = self.offset_of(self.base.wrapping_add(offset), size)?;
        if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(size) {
            return None;
        }
        let len = size as usize;
        let result = match &mut self.storage {
            Storage::Exclusive(bytes) => {
                let cell = bytes.get_mut(at..at + len)?;
                let mut buf = [0u8; 8];
                buf.get_mut(..len)?.copy_from_slice(cell);
                let current = u64::from_le_bytes(buf);
                let mask = if size == 8 { u64::MAX } else { (1u64 << (8 * size)) - 1 };
                if current == expected & mask {
                    cell.copy_from_slice(new.to_le_bytes().get(..len)?);
                    Ok(current)
                } else {
                    Err(current)
                }
            }
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.compare_exchange(at, size, expected, new)?,
        };
        if result.is_ok() {
            self.note_write(at, len);
        }
        Some(result)
    }

    /// Address of the first byte of the host memory: on a board whose VMM runs with paging bare, the host physical
    /// address that the real map's host offsets are added to (for shadow page tables).
    pub fn as_ptr(&self) -> *const u8 {
        match &self.storage {
            Storage::Exclusive(bytes) => bytes.as_ptr(),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { ram, .. } => ram.as_ptr(),
        }
    }

    /// The whole of EXCLUSIVE RAM as a slice (for snapshots and comparisons); `None` for shared RAM.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Exclusive(bytes) => Some(bytes),
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { .. } => None,
        }
    }

    /// The whole of EXCLUSIVE RAM as a mutable slice (for snapshots): every watched code page counts as written.
    /// `None` for shared RAM.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match &mut self.storage {
            Storage::Exclusive(bytes) => {
                if let Some(watch) = self.code_watch.as_mut() {
                    watch.overflowed = true;
                }
                Some(bytes)
            }
            #[cfg(target_has_atomic = "64")]
            Storage::Shared { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_watched_code_pages_are_reported_once() {
        let mut backing = vec![0u8; 4 * PAGE_SIZE as usize];
        let mut bitmap = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.store(RAM_BASE, 8, 1).unwrap();
        assert!(!ram.has_dirty_code(), "nothing is watched before a watch is attached");
        ram.attach_code_watch(&mut bitmap);
        assert!(ram.watch_code_page(1) && ram.watch_code_page(2));
        assert!(!ram.watch_code_page(64), "outside the bitmap");
        ram.store(RAM_BASE + 8, 8, 1).unwrap();
        assert!(!ram.has_dirty_code(), "page 0 holds no code");
        ram.store(RAM_BASE + PAGE_SIZE + 12, 4, 7).unwrap();
        ram.store(RAM_BASE + PAGE_SIZE + 16, 4, 7).unwrap();
        // A DMA write straddling into page 2.
        ram.slice_mut(RAM_BASE + 3 * PAGE_SIZE - 2, 4).unwrap().fill(9);
        assert!(ram.has_dirty_code());
        assert_eq!(ram.take_dirty_code().pages(), Some(&[1, 2][..]), "each page once, then unwatched");
        assert!(!ram.has_dirty_code());
        ram.watch_code_page(3);
        ram.as_mut_slice().unwrap()[0] = 1;
        assert_eq!(ram.take_dirty_code(), DirtyCode::All);
    }

    #[test]
    fn a_granular_watch_tells_data_beside_code_from_code() {
        let mut backing = vec![0u8; 4 * PAGE_SIZE as usize];
        let mut words = vec![0u64; code_watch_words(backing.len() as u64)];
        assert_eq!(words.len(), 1 + 4);
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_granular_code_watch(&mut words);
        let page = RAM_BASE + PAGE_SIZE;
        // Code in bytes [0x100, 0x148) of page 1: granules 4 and 5.
        assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x48));
        assert!(ram.is_code_page(1));
        for (addr, size) in [(page + 0xc0, 8), (page + 0xf8, 8), (page + 0x180, 8), (page + 0xfff, 1)] {
            ram.store(addr, size, 1).unwrap();
            assert!(!ram.has_dirty_code(), "{addr:#x}: data beside the code");
        }
        assert!(ram.is_code_page(1), "still watched");
        // A store straddling into the code's first granule, then one inside it.
        ram.store(page + 0xfe, 4, 1).unwrap();
        assert_eq!(ram.take_dirty_code().pages(), Some(&[1][..]));
        assert!(!ram.is_code_page(1), "a written code page is no longer watched");
        ram.store(page + 0x100, 4, 1).unwrap();
        assert!(!ram.has_dirty_code(), "and its granules were forgotten with it");
        // Code across a page boundary watches both pages; a whole-page watch takes every granule.
        assert!(ram.watch_code(2 * PAGE_SIZE - 2, 4));
        assert!(ram.watch_code_page(3));
        ram.store(page + 0x800, 8, 1).unwrap();
        ram.store(RAM_BASE + 2 * PAGE_SIZE + 0x800, 8, 1).unwrap();
        assert!(!ram.has_dirty_code(), "far from the straddling code");
        ram.store(RAM_BASE + 2 * PAGE_SIZE, 1, 1).unwrap();
        ram.store(RAM_BASE + 3 * PAGE_SIZE + 0x800, 8, 1).unwrap();
        assert_eq!(ram.take_dirty_code().pages(), Some(&[2, 3][..]));
        assert!(!ram.watch_code(4 * PAGE_SIZE, 1) && !ram.watch_code(u64::MAX - 1, 8), "outside the watch");
    }

    #[test]
    fn a_watch_too_short_for_granules_watches_whole_pages() {
        let mut backing = vec![0u8; 4 * PAGE_SIZE as usize];
        let mut words = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_granular_code_watch(&mut words);
        assert!(ram.watch_code(PAGE_SIZE + 0x100, 4));
        ram.store(RAM_BASE + PAGE_SIZE + 0x800, 8, 1).unwrap();
        assert_eq!(ram.take_dirty_code().pages(), Some(&[1][..]), "any write to a watched page");
    }

    #[test]
    fn accesses_outside_ram_are_refused() {
        let mut backing = [0u8; 64];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        assert_eq!(ram.store(RAM_BASE + 60, 4, 0x1122_3344), Some(()));
        assert_eq!(ram.load(RAM_BASE + 60, 4), Some(0x1122_3344));
        assert_eq!(ram.load(RAM_BASE + 61, 4), None);
        assert_eq!(ram.load(RAM_BASE - 1, 1), None);
        assert_eq!(ram.load(u64::MAX, 8), None);
        assert_eq!(ram.store(RAM_BASE + 64, 1, 0), None);
        assert_eq!(ram.load(RAM_BASE + 61, 2), Some(0x2233), "misaligned loads read little-endian bytes");
    }
}
