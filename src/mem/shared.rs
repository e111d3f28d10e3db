//! Guest RAM shared by host threads: the storage behind [`Ram::shared`](super::Ram::shared) when every hart of a
//! VM runs on its own host thread, each with its own [`Ram`](super::Ram) handle onto the same bytes.
//!
//! The embedder lends four views of ONE host allocation (bytes, halfwords, words, doublewords, as atomics);
//! [`SharedRam::new`] checks that they start at the same address and cover the same length. An aligned access of
//! `n` bytes is one `n`-byte atomic access, an acquire load or a release store: still a plain move on x86-64,
//! whose order (TSO) is stronger than what RVWMO requires of plain loads and stores, and the orderings keep the
//! compiler from moving one guest access across another (relaxed ones would let it); a misaligned one goes byte by byte (RISC-V
//! does not require misaligned accesses to be atomic). AMOs and SC are host read-modify-writes on the view of their
//! width ([`SharedRam::amo`], [`SharedRam::compare_exchange`]), sequentially consistent, so they are atomic with
//! respect to every other hart's accesses and a failed SC means another hart's store succeeded (no livelock).
//! The guest's `fence` instructions must be host fences in the engine that runs them; this module only
//! provides the accesses.
//!
//! # Code written while other threads translate it
//!
//! The code watch is shared too: its page bits and granule masks are the atomics the embedder passes (laid out as
//! [`code_watch_words`](super::code_watch_words) says), and a write that hits watched code clears the page's bit
//! (one `fetch_and`, so exactly one writer logs it) and appends the page to ONE dirty log, a ring of
//! [`DIRTY_LOG`] pages under a `spin` mutex with a sequence number. Each handle keeps its own cursor into the
//! log: [`Ram::has_dirty_code`](super::Ram::has_dirty_code) is one load compared with the cursor, and
//! [`Ram::take_dirty_code`](super::Ram::take_dirty_code) returns the pages logged since, or `DirtyCode::All` when
//! the ring overwrote entries the handle had not read. So a code write by any thread reaches every thread's engine
//! at its next check.
//!
//! Ordering: an engine sets the watch bits (locked read-modify-writes, full barriers on x86-64) BEFORE the reads of
//! the bytes it translates that count (the threaded engine reads a block's words again after watching them; the
//! translator watches to the end of the page first), and a writer stores before it checks the bit. What we
//! guarantee: a code write is reported to every handle unless the writer's store is still in its store buffer
//! when it reads the bit as clear while another thread sets the bit and reads the granule's old bytes, all within
//! those few nanoseconds: then that thread's translation of the old bytes is not reported and stays until the next
//! code write to its page. RISC-V lets a hart see another hart's code write late until it synchronises with the
//! writer and runs `fence.i`; without the fence below, in that race "late" could mean "never".
//! An embedder closes the window with an asymmetric fence ([`RemoteFence`], Linux's `membarrier`): whenever a
//! watch sets a bit that was clear, the watching thread makes every other thread execute a full barrier before
//! it reads the bytes. A writer's store then either is visible to that read, or comes after the writer's
//! barrier and so after the bit was set, and the writer's check sees the bit. Bits are set once per page and
//! granule until a code write clears them, so this costs a few microseconds per newly watched granule, never per
//! store. The hook is told which pages ([`RemoteFence::pages_watched`]): an embedder whose harts
//! also store natively, through mappings the watch never sees (the native board's shadow tables, one set per
//! hart), takes write permission on those pages away from its other harts there, before the bytes are read.
//!
//! An embedder whose threads write RAM only through this module may let the fence wait
//! ([`RemoteFence::may_defer`]): a two-hart Linux boot newly watches about 20 000 granules, and as many
//! `membarrier` calls (each an interrupt of every other core running the VM) cost it 15% of its time. A
//! deferred watch instead records a hash of the newly watched granules' bytes, read after their bits were set;
//! the next guest `fence.i` on any hart (or the SBI's remote one), or a full record ([`DEFERRED_WATCHES`]), runs
//! one fence and hashes them again. A granule whose bytes changed was written by a store that raced its watch
//! unseen: its page is logged as written, so every engine drops what it translated from it. The bytes an
//! engine translates are read after the hash (both after the bits), so a racing store the engine saw is one the
//! hash saw, or one the second hash finds. RISC-V lets a hart run stale code until its own `fence.i` (after it
//! synchronised with the writer), so a stale translation that lives until then is what the ISA allows.
//!
//! This module never allocates, never blocks except on the dirty log's lock (held for a few stores) and the
//! deferred watches' (held for one fence and their hashes), and never lets an offset index outside the views
//! (every access is `get`-checked).

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::{granule_bits, DirtyCode, CODE_GRANULE, DIRTY_CAPACITY, PAGE_SIZE};

/// Code-page writes the shared dirty log remembers; a handle that falls further behind sees `DirtyCode::All`.
pub const DIRTY_LOG: usize = 256;

/// An asymmetric fence the embedder provides (see the module documentation): when it returns, every other thread
/// of the VM has executed a full memory barrier since it was called (Linux: `membarrier` with
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`).
pub trait RemoteFence: Sync {
    fn fence_other_threads(&self);

    /// Called instead of [`fence_other_threads`](Self::fence_other_threads) by a watch that set a bit that was
    /// clear, with the RAM pages (offset / 4096) `[first, end)` it covered, before the watching engine reads their
    /// bytes. An embedder whose threads can write RAM without going through [`SharedRam`] (a native VMM's harts,
    /// storing natively through mappings of their own) must, before it returns, have taken that way of writing
    /// those pages away from every other thread: a native VMM drops the write permission of its other harts'
    /// mappings of them, and waits for the harts running natively. By default: the fence alone.
    fn pages_watched(&self, first: u64, end: u64) {
        let _ = (first, end);
        self.fence_other_threads();
    }

    /// Whether the fence may wait for the next `fence.i` (see the module documentation): only for an embedder
    /// whose threads write RAM through [`SharedRam`] alone (never one whose
    /// [`pages_watched`](Self::pages_watched) must revoke native write access before the bytes are read).
    /// By default: no, every newly watched range fences at once.
    fn may_defer(&self) -> bool {
        false
    }
}

/// Newly watched ranges a deferring [`RemoteFence`] lets pile up before a fence is forced.
pub const DEFERRED_WATCHES: usize = 64;

/// Granules of a page newly watched without a fence, and the hash of their bytes then.
#[derive(Clone, Copy, Default)]
struct DeferredWatch {
    page: u64,
    granules: u64,
    hash: u64,
}

/// The watches waiting for a fence.
struct Deferred {
    watches: [DeferredWatch; DEFERRED_WATCHES],
    len: usize,
}

/// Guest RAM shared by every thread of a VM (see the module documentation). Lend it to each thread as
/// `&SharedRam` and make one [`Ram`](super::Ram) handle per thread with [`Ram::shared`](super::Ram::shared).
pub struct SharedRam<'a> {
    base: u64,
    b8: &'a [AtomicU8],
    b16: &'a [AtomicU16],
    b32: &'a [AtomicU32],
    b64: &'a [AtomicU64],
    /// One bit per RAM page (possibly fewer pages than RAM has: the rest cannot be watched).
    watched: &'a [AtomicU64],
    /// One granule mask per RAM page, or empty (then any write to a watched page is a code write).
    granules: &'a [AtomicU64],
    /// The last [`DIRTY_LOG`] code pages written, entry `n` at `n % DIRTY_LOG`.
    log: spin::Mutex<[u64; DIRTY_LOG]>,
    /// Entries ever appended to `log`.
    logged: AtomicU64,
    /// Run after a watch sets a bit that was clear, before the engine reads the bytes (or later, if it may defer).
    remote_fence: Option<&'a dyn RemoteFence>,
    /// Watches whose fence was deferred (only with a deferring `remote_fence`).
    deferred: spin::Mutex<Deferred>,
}

impl<'a> SharedRam<'a> {
    /// Shared RAM seen by the guest at `[base, base + b8.len())`, from four views of the same bytes, and a code
    /// watch in `code_watch_words` (zeroed here; sized by [`code_watch_words`](super::code_watch_words) for
    /// granules, shorter for whole pages, empty for no watch: then engines must not keep translations). `None`
    /// when the views do not start at the same address or do not cover the same number of bytes.
    pub fn new(
        base: u64,
        b8: &'a [AtomicU8],
        b16: &'a [AtomicU16],
        b32: &'a [AtomicU32],
        b64: &'a [AtomicU64],
        code_watch_words: &'a [AtomicU64],
    ) -> Option<Self> {
        let start = b8.as_ptr() as usize;
        let same_start =
            b16.as_ptr() as usize == start && b32.as_ptr() as usize == start && b64.as_ptr() as usize == start;
        let len = b8.len();
        let same_len = b16.len().checked_mul(2) == Some(len)
            && b32.len().checked_mul(4) == Some(len)
            && b64.len().checked_mul(8) == Some(len);
        if !same_start || !same_len {
            return None;
        }
        code_watch_words.iter().for_each(|word| word.store(0, Ordering::Relaxed));
        let pages = (len as u64).div_ceil(PAGE_SIZE) as usize;
        let page_words = pages.div_ceil(64);
        let (watched, granules) = if code_watch_words.len() >= page_words + pages {
            let (watched, rest) = code_watch_words.split_at(page_words);
            (watched, rest.get(..pages).unwrap_or(&[]))
        } else {
            (code_watch_words, &[][..])
        };
        Some(Self {
            base,
            b8,
            b16,
            b32,
            b64,
            watched,
            granules,
            log: spin::Mutex::new([0; DIRTY_LOG]),
            logged: AtomicU64::new(0),
            remote_fence: None,
            deferred: spin::Mutex::new(Deferred { watches: [DeferredWatch::default(); DEFERRED_WATCHES], len: 0 }),
        })
    }

    /// Closes the code watch's store-buffer window with `fence` (see the module documentation).
    pub fn with_remote_fence(mut self, fence: &'a dyn RemoteFence) -> Self {
        self.remote_fence = Some(fence);
        self
    }

    /// Guest real address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.b8.len() as u64
    }

    /// Host address of the first byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.b8.as_ptr() as *mut u8
    }

    /// Little-endian load of `size` (1 to 8) bytes at `offset`: one atomic access when aligned. Out of line, so
    /// that the exclusive kind's inlined fast path stays as small as it was.
    #[inline(never)]
    pub(crate) fn load(&self, offset: usize, size: u64) -> Option<u64> {
        let order = Ordering::Acquire;
        match size {
            8 if offset.is_multiple_of(8) => self.b64.get(offset / 8).map(|a| u64::from_le(a.load(order))),
            4 if offset.is_multiple_of(4) => self.b32.get(offset / 4).map(|a| u64::from(u32::from_le(a.load(order)))),
            2 if offset.is_multiple_of(2) => self.b16.get(offset / 2).map(|a| u64::from(u16::from_le(a.load(order)))),
            _ => {
                let mut value = 0u64;
                for i in 0..(size as usize).min(8) {
                    value |= u64::from(self.b8.get(offset + i)?.load(order)) << (8 * i);
                }
                Some(value)
            }
        }
    }

    /// Little-endian store of the low `size` (1 to 8) bytes of `value` at `offset` (the caller notes the write).
    /// Out of line, as [`load`](Self::load).
    #[inline(never)]
    pub(crate) fn store(&self, offset: usize, size: u64, value: u64) -> Option<()> {
        let order = Ordering::Release;
        match size {
            8 if offset.is_multiple_of(8) => self.b64.get(offset / 8)?.store(value.to_le(), order),
            4 if offset.is_multiple_of(4) => self.b32.get(offset / 4)?.store((value as u32).to_le(), order),
            2 if offset.is_multiple_of(2) => self.b16.get(offset / 2)?.store((value as u16).to_le(), order),
            _ => {
                // Check the whole range first: a refused store writes nothing.
                self.b8.get(offset..offset + (size as usize).min(8))?;
                for i in 0..(size as usize).min(8) {
                    self.b8.get(offset + i)?.store((value >> (8 * i)) as u8, order);
                }
            }
        }
        Some(())
    }

    /// The engines' fast path: an aligned load of `size` (1, 2, 4 or 8) bytes at `offset`, one atomic access with no
    /// call; `None` when misaligned (the caller takes its slow path) or outside.
    #[inline(always)]
    pub(crate) fn load_aligned(&self, offset: usize, size: usize) -> Option<u64> {
        let relaxed = Ordering::Relaxed;
        match size {
            8 if offset.is_multiple_of(8) => self.b64.get(offset / 8).map(|a| u64::from_le(a.load(relaxed))),
            4 if offset.is_multiple_of(4) => self.b32.get(offset / 4).map(|a| u64::from(u32::from_le(a.load(relaxed)))),
            2 if offset.is_multiple_of(2) => self.b16.get(offset / 2).map(|a| u64::from(u16::from_le(a.load(relaxed)))),
            1 => self.b8.get(offset).map(|a| u64::from(a.load(relaxed))),
            _ => None,
        }
    }

    /// The engines' fast path: an aligned store of the low `size` (1, 2, 4 or 8) bytes of `value` at `offset`;
    /// `None` (nothing written) when misaligned or outside.
    #[inline(always)]
    pub(crate) fn store_aligned(&self, offset: usize, size: usize, value: u64) -> Option<()> {
        let relaxed = Ordering::Relaxed;
        match size {
            8 if offset.is_multiple_of(8) => self.b64.get(offset / 8)?.store(value.to_le(), relaxed),
            4 if offset.is_multiple_of(4) => self.b32.get(offset / 4)?.store((value as u32).to_le(), relaxed),
            2 if offset.is_multiple_of(2) => self.b16.get(offset / 2)?.store((value as u16).to_le(), relaxed),
            1 => self.b8.get(offset)?.store(value as u8, relaxed),
            _ => return None,
        }
        Some(())
    }

    /// Copies the bytes at `offset` into `buf` (doublewords where aligned).
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) -> Option<()> {
        self.b8.get(offset..offset.checked_add(buf.len())?)?;
        let mut at = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = if at.is_multiple_of(8) && rest.len() >= 8 { 8 } else { 1 };
            let (head, tail) = rest.split_at_mut(n);
            head.copy_from_slice(&self.load(at, n as u64)?.to_le_bytes()[..n]);
            rest = tail;
            at += n;
        }
        Some(())
    }

    /// Copies `buf` to `offset` (doublewords where aligned; the caller notes the write).
    pub(crate) fn write(&self, offset: usize, buf: &[u8]) -> Option<()> {
        self.b8.get(offset..offset.checked_add(buf.len())?)?;
        let mut at = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = if at.is_multiple_of(8) && rest.len() >= 8 { 8 } else { 1 };
            let (head, tail) = rest.split_at(n);
            let mut word = [0u8; 8];
            word[..n].copy_from_slice(head);
            self.store(at, n as u64, u64::from_le_bytes(word))?;
            rest = tail;
            at += n;
        }
        Some(())
    }

    /// Stores `byte` in `len` bytes from `offset` (the caller notes the write).
    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) -> Option<()> {
        self.b8.get(offset..offset.checked_add(len)?)?;
        let word = u64::from_ne_bytes([byte; 8]);
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = if at.is_multiple_of(8) && end - at >= 8 { 8 } else { 1 };
            self.store(at, n as u64, word)?;
            at += n;
        }
        Some(())
    }

    /// Atomically replaces the `size`-byte value (1, 2, 4 or 8, aligned) at `offset` with `op(old)` and returns
    /// `old` (zero-extended); `None` when misaligned or outside.
    pub(crate) fn amo(&self, offset: usize, size: u64, op: impl Fn(u64) -> u64) -> Option<u64> {
        macro_rules! rmw {
            ($view:expr, $ty:ty) => {{
                let cell = $view.get(offset / size as usize)?;
                let mut old = cell.load(Ordering::Relaxed);
                loop {
                    let new = (op(u64::from(<$ty>::from_le(old))) as $ty).to_le();
                    match cell.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Relaxed) {
                        Ok(_) => return Some(u64::from(<$ty>::from_le(old))),
                        Err(now) => old = now,
                    }
                }
            }};
        }
        if !offset.is_multiple_of(size as usize) {
            return None;
        }
        match size {
            1 => rmw!(self.b8, u8),
            2 => rmw!(self.b16, u16),
            4 => rmw!(self.b32, u32),
            8 => rmw!(self.b64, u64),
            _ => None,
        }
    }

    /// Atomically stores `new` in the `size`-byte value (1, 2, 4 or 8, aligned) at `offset` if it equals
    /// `expected` (both truncated to `size` bytes): `Ok(old)` when stored, `Err(current)` when not.
    pub(crate) fn compare_exchange(
        &self,
        offset: usize,
        size: u64,
        expected: u64,
        new: u64,
    ) -> Option<Result<u64, u64>> {
        macro_rules! cas {
            ($view:expr, $ty:ty) => {{
                let cell = $view.get(offset / size as usize)?;
                let result = cell.compare_exchange(
                    (expected as $ty).to_le(),
                    (new as $ty).to_le(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                Some(result.map(|v| u64::from(<$ty>::from_le(v))).map_err(|v| u64::from(<$ty>::from_le(v))))
            }};
        }
        if !offset.is_multiple_of(size as usize) {
            return None;
        }
        match size {
            1 => cas!(self.b8, u8),
            2 => cas!(self.b16, u16),
            4 => cas!(self.b32, u32),
            8 => cas!(self.b64, u64),
            _ => None,
        }
    }

    /// Whether any page can be watched (else engines must not keep translations).
    pub(crate) fn has_watch(&self) -> bool {
        !self.watched.is_empty()
    }

    /// Watches `[offset, end)` (checked by the caller to lie in RAM): granule bits first, then the page bit, so a
    /// writer that sees the bit also sees the granules. False when a page lies outside the watch.
    pub(crate) fn watch(&self, offset: u64, end: u64) -> bool {
        let defer = self.remote_fence.is_some_and(|fence| fence.may_defer());
        let mut page = offset / PAGE_SIZE;
        let mut newly_watched = false;
        let mut watched = true;
        while page * PAGE_SIZE < end {
            let Some(word) = self.watched.get((page / 64) as usize) else {
                watched = false;
                break;
            };
            let page_start = page * PAGE_SIZE;
            let bits = granule_bits(offset.max(page_start) - page_start, end.min(page_start + PAGE_SIZE) - page_start);
            // The granules this watch is the first to cover: all of the range's when the page was not watched.
            let mut fresh = 0;
            if let Some(mask) = self.granules.get(page as usize) {
                fresh = bits & !mask.fetch_or(bits, Ordering::SeqCst);
            }
            let bit = 1 << (page % 64);
            if word.fetch_or(bit, Ordering::SeqCst) & bit == 0 {
                fresh = bits;
            }
            if fresh != 0 {
                newly_watched = true;
                if defer {
                    self.defer_fence(page, fresh);
                }
            }
            page += 1;
        }
        if newly_watched && !defer {
            if let Some(fence) = self.remote_fence {
                fence.pages_watched(offset / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
            }
        }
        watched
    }

    /// Records granules `granules` of page `page`, just watched, for the next fence (forcing one first when the
    /// record is full).
    fn defer_fence(&self, page: u64, granules: u64) {
        let hash = self.granules_hash(page, granules);
        let mut deferred = self.deferred.lock();
        if deferred.len == DEFERRED_WATCHES {
            self.fence_and_check(&mut deferred);
        }
        let len = deferred.len;
        if let Some(slot) = deferred.watches.get_mut(len) {
            *slot = DeferredWatch { page, granules, hash };
            deferred.len += 1;
        }
    }

    /// Makes instruction fetch see every store made so far by any thread (a guest `fence.i`, or the SBI's remote
    /// one): runs the deferred fence, if any watch waits for it, and logs the pages whose newly watched bytes a
    /// racing store changed unseen.
    pub(crate) fn sync_code_fetch(&self) {
        let mut deferred = self.deferred.lock();
        if deferred.len > 0 {
            self.fence_and_check(&mut deferred);
        }
    }

    /// The fence, then every deferred watch's bytes hashed again: a page whose hash changed is logged as written.
    fn fence_and_check(&self, deferred: &mut Deferred) {
        if let Some(fence) = self.remote_fence {
            fence.fence_other_threads();
        }
        let len = deferred.len;
        for watch in deferred.watches.iter().take(len) {
            if self.granules_hash(watch.page, watch.granules) != watch.hash {
                self.forget_code_page(watch.page);
            }
        }
        deferred.len = 0;
    }

    /// A hash of the bytes of granules `granules` of page `page` (as bits of a granule mask).
    fn granules_hash(&self, page: u64, granules: u64) -> u64 {
        const WORDS: u64 = CODE_GRANULE / 8;
        let mut hash = 0u64;
        let mut rest = granules;
        while rest != 0 {
            let first = (page * PAGE_SIZE + rest.trailing_zeros() as u64 * CODE_GRANULE) / 8;
            rest &= rest - 1;
            for word in self.b64.iter().skip(first as usize).take(WORDS as usize) {
                hash = (hash.rotate_left(5) ^ word.load(Ordering::Acquire)).wrapping_mul(0x517c_c1b7_2722_0a95);
            }
        }
        hash
    }

    /// Whether page `page` is watched.
    #[inline]
    pub(crate) fn is_watched(&self, page: u64) -> bool {
        self.watched
            .get((page / 64) as usize)
            .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << (page % 64)) != 0)
    }

    /// Records a write (already stored) to `[start, end)` if it touches watched code: clears the page's bit and logs
    /// the page once.
    #[inline(always)]
    pub(crate) fn note_write(&self, start: u64, end: u64) {
        if self.watched.is_empty() {
            return;
        }
        for page in start / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            let Some(word) = self.watched.get((page / 64) as usize) else { continue };
            let bit = 1u64 << (page % 64);
            if word.load(Ordering::Relaxed) & bit == 0 {
                continue;
            }
            self.note_code_write(word, bit, page, start, end);
        }
    }

    /// The rare part of [`note_write`](Self::note_write): a write to a watched page.
    #[inline(never)]
    fn note_code_write(&self, word: &AtomicU64, bit: u64, page: u64, start: u64, end: u64) {
        if let Some(mask) = self.granules.get(page as usize) {
            let page_start = page * PAGE_SIZE;
            let written =
                granule_bits(start.max(page_start) - page_start, end.min(page_start + PAGE_SIZE) - page_start);
            if mask.load(Ordering::SeqCst) & written == 0 {
                // Data beside the page's code.
                return;
            }
        }
        self.forget_code_page_at(word, bit, page);
    }

    /// Unwatches page `page` and logs it as written.
    fn forget_code_page(&self, page: u64) {
        if let Some(word) = self.watched.get((page / 64) as usize) {
            self.forget_code_page_at(word, 1 << (page % 64), page);
        }
    }

    /// [`forget_code_page`](Self::forget_code_page) with the page's watch word and bit.
    fn forget_code_page_at(&self, word: &AtomicU64, bit: u64, page: u64) {
        if let Some(mask) = self.granules.get(page as usize) {
            // Forget the granules before the bit: a translation that sets them again in between keeps its bit
            // (then its granules are watched) or loses it with this write (then it is dropped as dirty).
            mask.store(0, Ordering::SeqCst);
        }
        if word.fetch_and(!bit, Ordering::SeqCst) & bit == 0 {
            // Another writer cleared it and logs it.
            return;
        }
        let mut log = self.log.lock();
        let n = self.logged.load(Ordering::Relaxed);
        if let Some(slot) = log.get_mut((n % DIRTY_LOG as u64) as usize) {
            *slot = page;
        }
        self.logged.store(n + 1, Ordering::Release);
    }

    /// Entries ever appended to the dirty log (a new handle's cursor).
    #[inline(always)]
    pub(crate) fn logged(&self) -> u64 {
        self.logged.load(Ordering::Acquire)
    }

    /// The pages logged since `*cursor`, which moves to the end of the log; `All` when the ring overwrote some of
    /// them or they are more than a [`DirtyCode`] lists.
    pub(crate) fn take_dirty(&self, cursor: &mut u64) -> DirtyCode {
        let log = self.log.lock();
        let n = self.logged.load(Ordering::Relaxed);
        let behind = n.wrapping_sub(*cursor);
        *cursor = n;
        if behind > DIRTY_LOG as u64 || behind > DIRTY_CAPACITY as u64 {
            return DirtyCode::All;
        }
        let mut pages = [0u64; DIRTY_CAPACITY];
        for (i, slot) in pages.iter_mut().enumerate().take(behind as usize) {
            let entry = (n - behind + i as u64) % DIRTY_LOG as u64;
            *slot = log.get(entry as usize).copied().unwrap_or(0);
        }
        DirtyCode::Pages { pages, len: behind as usize }
    }

    /// The page bits (address of the first word, pages covered), for generated code that stores directly to
    /// unwatched pages.
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_watch(&self) -> (usize, u64) {
        (self.watched.as_ptr() as usize, self.watched.len() as u64 * 64)
    }

    /// The granule masks (address of the first word, pages covered).
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_granules(&self) -> (usize, u64) {
        (self.granules.as_ptr() as usize, self.granules.len() as u64)
    }
}

const _: () = assert!(PAGE_SIZE / CODE_GRANULE == 64, "one granule mask bit per 64 bytes");
