//! The fixed-size code cache of the threaded engine: predecoded guest basic blocks (arrays of engine ops) kept in
//! one contiguous arena, found by guest real pc through a fixed hash table (the SPC->TPC map), chained to their
//! successors, and dropped when the guest bytes they were decoded from may have changed.
//!
//! It must never grow or allocate after construction, never hand out a block (by lookup, by a chained link or by
//! a stale [`BlockId`]) that was invalidated, replaced or evicted — a stale block must never run — and never panic
//! on any input.
//!
//! # Shape
//! `CodeCache<T, OPS, BLOCKS, MAP>` holds up to `OPS` ops of type `T` (the engine's `Copy` op: handler plus
//! operands), up to `BLOCKS` block records and a map table of `MAP` slots (a power of two, more than `BLOCKS`;
//! twice `BLOCKS` keeps probe sequences short). `MAP` also sizes the page index that finds a page's blocks.
//!
//! # Keys
//! A block is found by a [`BlockKey`]: the guest **real** (physical) address of its first instruction plus a
//! `u64` context tag the engine chooses. **A key must capture everything the translation of the block depends
//! on** besides the guest bytes themselves (which invalidation by page covers): for example the privilege mode
//! if ops bake in privilege checks, the FP enable state (`mstatus.FS`) if FP ops are decoded as legal only when it
//! is on, or the address-translation regime if ops bake in virtual addresses (such as the pc of an `auipc` or a
//! link register value). Two blocks with the same key are the same block: inserting a key again replaces it.
//! The guest real bytes `[pc, pc + guest_len)` must be exactly the bytes the block was decoded from: a block whose
//! last instruction straddles a virtual page boundary onto a real page that is not the next one must not be
//! inserted (end the block before that instruction), or invalidation by page would miss it.
//!
//! # Eviction: done by the cache itself, flush-all by default
//! Space is taken bump-style: a block's ops go at the end of the arena and its record at the end of the block
//! table. When a new block does not fit in what remains of either, [`CodeCache::insert`] makes room itself and
//! then inserts, so the engine never flushes and retries; `insert` only fails for a block that can never fit
//! ([`InsertError`]). Blocks dropped by invalidation do not give their space back before it is evicted.
//! * [`Eviction::FlushAll`] (the default): **flush the whole cache**, as early QEMU did. It needs no per-block
//!   bookkeeping, leaves no fragmentation, makes every outstanding [`BlockId`] and chained link stale at once
//!   (generations), and a guest's working set is rebuilt quickly because decoding a block is cheap.
//! * [`Eviction::Fifo`]`{ regions }`: the arena and the block table are split into `regions` equal parts filled
//!   in turn; when the current part is full, the next one (holding the oldest blocks) is emptied and filling
//!   continues there. Hot blocks of the recent past survive a full cache, at the cost of removing the evicted
//!   blocks one by one (map and page index) and of blocks limited to `OPS / regions` ops.
//!
//! The threaded engine builds its cache with [`CodeCache::with_eviction`] and FIFO over four regions, which
//! `trapeze bench` measured rebuilding up to 35% fewer blocks than flush-all when the cache is too small.
//!
//! # Chaining
//! Each block has [`EXITS`] exit slots ([`ExitSlot::Taken`], [`ExitSlot::FallThrough`], and two side exits for
//! the earlier branches of a block that runs on past a branch not taken) holding the guest pc the
//! engine recorded for that exit at insertion and, once [`CodeCache::link`]ed, the successor's [`BlockId`]. A
//! [`BlockId`] carries a generation that is never reused (a 64-bit counter over all insertions), and every
//! accessor and [`CodeCache::successor`] checks it: a link to a block that was invalidated, replaced or flushed
//! is never followed, with no back-links to maintain. The engine links `from -> to` only when `to` is what
//! [`CodeCache::lookup`] returns for that exit's pc under `from`'s context (the tags must be equal); if it links
//! across guest pages or through a virtual pc, it must invalidate whatever a change of that mapping affects
//! (`satp`, `sfence.vma`: simplest is [`CodeCache::invalidate_all`]).
//!
//! # Invalidation contract
//! * A store the engine (or a device's DMA) makes to guest real memory: call [`CodeCache::page_has_code`] for
//!   each page the store touches (an O(1) load and compare; false positives possible, never a false negative)
//!   and, when true, [`CodeCache::invalidate_page`] before the next block runs. It removes exactly the blocks
//!   whose guest bytes `[pc, pc + guest_len)` overlap the page. A block that stores into its own page must end
//!   after that store (the engine checks the cache after each store op and leaves the block when it dropped it).
//! * `fence.i`, and whatever else the engine decides (a `satp` write or `sfence.vma` if blocks or links depend
//!   on virtual addresses): [`CodeCache::invalidate_all`].
//! * After any `&mut` call the engine must not reuse a `&[T]` from before (the borrow checker enforces it) and
//!   must re-check its current [`BlockId`] (any accessor returns `None` once it is stale).
//! * Cost: `invalidate_page` walks the page index bucket of that page, so it is proportional to the number of
//!   blocks on the page (plus those of pages sharing the bucket), not to the size of the cache; removing a block
//!   from the map is one probe sequence. `invalidate_all` and `flush` clear the map and the page index (O(MAP)).
//!
//! # Memory footprint
//! `size_of::<CodeCache<T, OPS, BLOCKS, MAP>>()` is about
//! `OPS * size_of::<T>() + BLOCKS * 152 + MAP * 28 + 232` bytes on a 64-bit host (block record 152, map slot 24,
//! page index head 4): [`CodeCache::FOOTPRINT`] gives the exact figure. Nothing else is ever allocated.
//!
//! # Construction
//! [`CodeCache::new`] is a `const fn`, so a board puts the cache in a `static` (no stack involved; the arena
//! filled with a non-zero op lands in `.data`, so the image grows by the footprint). A host puts it
//! in a `Box`: [`HostedCodeCache`] (about 0.93 MiB with 16-byte ops) is tested to go through `Box::new` on a
//! 2 MiB thread stack; larger instances should be built in a `static` or on a thread with a larger stack.

#[cfg(test)]
mod tests;

/// Guest page size (the granule of invalidation and of [`CodeCache::page_has_code`]).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Largest guest length of one block: a block covers at most two guest pages (its last instruction may
/// straddle a page boundary).
pub const MAX_GUEST_LEN: u32 = PAGE_SIZE as u32;

const NIL: u32 = u32::MAX;
/// An exit with no recorded guest pc.
const NO_EXIT: u64 = u64::MAX;

/// The hosted default: 32 Ki ops, 2 Ki blocks, 4 Ki map slots (about 0.93 MiB with 16-byte ops).
pub type HostedCodeCache<T> = CodeCache<T, 32768, 2048, 4096>;

/// What identifies a block: the guest real address of its first instruction and the engine's context tag (see
/// the module documentation: the key must capture everything the translation depends on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Guest real (physical) address of the first instruction.
    pub pc: u64,
    /// Engine-defined context (privilege, translation regime, FP state, ...).
    pub ctx: u64,
}

impl BlockKey {
    /// The key of the block at guest real address `pc` under context `ctx`.
    pub const fn new(pc: u64, ctx: u64) -> Self {
        Self { pc, ctx }
    }
}

/// A handle to a block, valid until the block is invalidated, replaced or flushed; after that every accessor
/// refuses it (its generation no longer matches), even once the record is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId {
    index: u32,
    generation: u64,
}

impl BlockId {
    /// A handle no block ever has (generation 0 is never given out).
    const NONE: BlockId = BlockId { index: 0, generation: 0 };

    /// The index of the block record (stable while the block lives; for engines keeping side tables).
    pub const fn index(self) -> usize {
        self.index as usize
    }
}

/// Exit slots of a block.
pub const EXITS: usize = 4;

/// One of the [`EXITS`] exits of a block (the discriminant is the index into `insert`'s `exits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitSlot {
    /// The successor when the block's final branch is taken (or its only jump target).
    Taken = 0,
    /// The successor when execution falls through the end of the block.
    FallThrough = 1,
    /// The successor when an earlier branch of the block is taken (a block may run on past a branch).
    Side1 = 2,
    /// The same for a second earlier branch.
    Side2 = 3,
}

impl ExitSlot {
    /// Every slot, in index order.
    pub const ALL: [ExitSlot; EXITS] = [ExitSlot::Taken, ExitSlot::FallThrough, ExitSlot::Side1, ExitSlot::Side2];
}

/// What the cache knows of a live block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its key; `key.pc` is also the guest real address of its first byte.
    pub key: BlockKey,
    /// Guest bytes it was decoded from, `1..=MAX_GUEST_LEN`.
    pub guest_len: u32,
    /// Number of ops.
    pub ops_len: usize,
    /// The guest pc the engine recorded for each exit ([`ExitSlot`] as index), if the exit is known statically.
    pub exits: [Option<u64>; EXITS],
}

/// How [`CodeCache::insert`] makes room when the cache is full (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eviction {
    /// Drop every block.
    FlushAll,
    /// Drop the oldest of `regions` equal parts of the arena and the block table (2 to [`MAX_REGIONS`], and at
    /// most `BLOCKS` and `OPS`; other values are clamped).
    Fifo {
        /// Number of parts.
        regions: u32,
    },
}

/// Most parts [`Eviction::Fifo`] divides the cache into.
pub const MAX_REGIONS: usize = 16;

/// Why a block cannot be inserted. Capacity is never the reason: the cache evicts blocks to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsertError {
    /// More ops than the arena holds (`OPS`, or `OPS / regions` with [`Eviction::Fifo`]).
    TooManyOps,
    /// `guest_len` is 0 or above [`MAX_GUEST_LEN`], or `pc + guest_len` passes the end of the address space.
    BadGuestRange,
    /// More than [`EXITS`] exits.
    TooManyExits,
}

/// Counters since construction (never reset by a flush).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls of [`CodeCache::lookup`].
    pub lookups: u64,
    /// Lookups that found a block.
    pub hits: u64,
    /// Blocks inserted.
    pub inserts: u64,
    /// Flushes for lack of space: of the whole cache (by `insert` or [`CodeCache::flush`]) or of one FIFO region
    /// that held blocks.
    pub flushes: u64,
    /// Live blocks dropped by those flushes.
    pub evictions: u64,
    /// Live blocks dropped by invalidation (by page, by block, all, or replaced by an insert of the same key).
    pub invalidations: u64,
    /// Calls of [`CodeCache::invalidate_page`].
    pub page_invalidations: u64,
    /// Calls of [`CodeCache::invalidate_all`].
    pub invalidate_alls: u64,
    /// Links made by [`CodeCache::link`].
    pub links: u64,
}

/// A block record. `generation == 0`: dead (never inserted, or dropped and waiting for the next flush).
#[derive(Debug, Clone, Copy)]
struct Block {
    key: BlockKey,
    generation: u64,
    /// The recorded guest pc of each exit, [`NO_EXIT`] when unknown (an exit recorded as `u64::MAX` is taken as
    /// unknown too: it is never followed, which only costs the engine a lookup).
    exits: [u64; EXITS],
    links: [BlockId; EXITS],
    ops_start: u32,
    ops_len: u32,
    guest_len: u32,
    /// Page index list links of the block's first page (node `2 * index`) and, when it has one, its second page
    /// (node `2 * index + 1`).
    page_next: [u32; 2],
    page_prev: [u32; 2],
}

impl Block {
    const DEAD: Block = Block {
        key: BlockKey { pc: 0, ctx: 0 },
        generation: 0,
        exits: [NO_EXIT; EXITS],
        links: [BlockId::NONE; EXITS],
        ops_start: 0,
        ops_len: 0,
        guest_len: 0,
        page_next: [NIL; 2],
        page_prev: [NIL; 2],
    };

    fn first_page(&self) -> u64 {
        self.key.pc >> PAGE_SHIFT
    }

    fn last_page(&self) -> u64 {
        self.key.pc.wrapping_add(self.guest_len.saturating_sub(1) as u64) >> PAGE_SHIFT
    }

    /// The page of list node `which` (0: first page, 1: last page).
    fn page(&self, which: usize) -> u64 {
        if which == 0 {
            self.first_page()
        } else {
            self.last_page()
        }
    }
}

/// A map table slot: a key and the index of its live block, or `block == NIL` when empty.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: BlockKey,
    block: u32,
}

impl Slot {
    const EMPTY: Slot = Slot { key: BlockKey { pc: 0, ctx: 0 }, block: NIL };
}

/// Fibonacci hashing: bits 32.. of the product depend on every lower bit of `x`.
#[inline(always)]
fn mix(x: u64) -> usize {
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

#[inline(always)]
fn key_hash(key: BlockKey) -> usize {
    mix(key.pc ^ key.ctx.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(29))
}

/// The fixed-size code cache (see the module documentation for the contract).
#[derive(Debug, Clone)]
pub struct CodeCache<T: Copy, const OPS: usize, const BLOCKS: usize, const MAP: usize> {
    ops: [T; OPS],
    blocks: [Block; BLOCKS],
    map: [Slot; MAP],
    /// Page index: head node of the list of blocks whose page hashes to each bucket, or `NIL`.
    page_heads: [u32; MAP],
    /// Arena ops in use (live, or dropped and not yet evicted).
    ops_used: u32,
    /// Block records in use (live, or dropped and not yet evicted).
    blocks_used: u32,
    /// Number of equal parts the arena and the block table are split into (1: flush-all).
    regions: u32,
    /// The part being filled.
    region: u32,
    /// Ops and records taken in each part since it was last emptied.
    region_ops: [u32; MAX_REGIONS],
    region_blocks: [u32; MAX_REGIONS],
    /// Live blocks.
    live: u32,
    /// Generation of the next inserted block (starts at 1, never wraps in practice: 2^64 insertions).
    next_generation: u64,
    stats: CacheStats,
}

impl<T: Copy, const OPS: usize, const BLOCKS: usize, const MAP: usize> CodeCache<T, OPS, BLOCKS, MAP> {
    const SHAPE_IS_VALID: () = {
        assert!(OPS >= 1 && OPS <= u32::MAX as usize, "CodeCache: OPS must be in 1..=u32::MAX");
        assert!(BLOCKS >= 1 && BLOCKS < (1 << 31), "CodeCache: BLOCKS must be in 1..2^31");
        assert!(MAP.is_power_of_two() && MAP > BLOCKS, "CodeCache: MAP must be a power of two above BLOCKS");
    };

    /// Bytes the cache occupies, all of it fixed at compile time.
    pub const FOOTPRINT: usize = core::mem::size_of::<Self>();

    /// An empty cache whose arena is filled with `fill` (any op; it is never executed).
    pub const fn new(fill: T) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_IS_VALID;
        Self {
            ops: [fill; OPS],
            blocks: [Block::DEAD; BLOCKS],
            map: [Slot::EMPTY; MAP],
            page_heads: [NIL; MAP],
            ops_used: 0,
            blocks_used: 0,
            regions: 1,
            region: 0,
            region_ops: [0; MAX_REGIONS],
            region_blocks: [0; MAX_REGIONS],
            live: 0,
            next_generation: 1,
            stats: CacheStats {
                lookups: 0,
                hits: 0,
                inserts: 0,
                flushes: 0,
                evictions: 0,
                invalidations: 0,
                page_invalidations: 0,
                invalidate_alls: 0,
                links: 0,
            },
        }
    }

    // ---- queries ----

    /// The live block with `key`, if any.
    #[inline]
    pub fn lookup(&mut self, key: BlockKey) -> Option<BlockId> {
        self.stats.lookups += 1;
        let found = self.find(key);
        if found.is_some() {
            self.stats.hits += 1;
        }
        found
    }

    /// [`lookup`](Self::lookup) without counting.
    #[inline]
    pub fn find(&self, key: BlockKey) -> Option<BlockId> {
        let slot = self.map_slot_of(key)?;
        let index = self.map.get(slot)?.block;
        let block = self.blocks.get(index as usize)?;
        Some(BlockId { index, generation: block.generation })
    }

    /// The record of `id` if it is still live.
    #[inline(always)]
    fn live_block(&self, id: BlockId) -> Option<&Block> {
        self.blocks.get(id.index as usize).filter(|b| b.generation == id.generation && id.generation != 0)
    }

    /// Whether `id` still names a live block.
    #[inline]
    pub fn is_live(&self, id: BlockId) -> bool {
        self.live_block(id).is_some()
    }

    /// The ops of a live block.
    #[inline]
    pub fn ops(&self, id: BlockId) -> Option<&[T]> {
        let block = self.live_block(id)?;
        let start = block.ops_start as usize;
        self.ops.get(start..start + block.ops_len as usize)
    }

    /// Where a live block's ops start in the arena: for an engine that keeps a parallel arena of its own (the
    /// dynamic binary translator's host code lies at this offset of its code memory, with a zero-sized `T`).
    #[inline]
    pub fn ops_start(&self, id: BlockId) -> Option<usize> {
        Some(self.live_block(id)?.ops_start as usize)
    }

    /// Op `n` of a live block (for an engine that steps through a block by index across `&mut` calls).
    #[inline]
    pub fn op(&self, id: BlockId, n: usize) -> Option<T> {
        self.ops(id)?.get(n).copied()
    }

    /// What the cache knows of a live block.
    pub fn block_info(&self, id: BlockId) -> Option<BlockInfo> {
        let block = self.live_block(id)?;
        Some(BlockInfo {
            key: block.key,
            guest_len: block.guest_len,
            ops_len: block.ops_len as usize,
            exits: block.exits.map(|exit| (exit != NO_EXIT).then_some(exit)),
        })
    }

    /// The chained successor of a live block through `slot`, if it was linked and the successor is still live.
    #[inline(always)]
    pub fn successor(&self, from: BlockId, slot: ExitSlot) -> Option<BlockId> {
        let to = *self.live_block(from)?.links.get(slot as usize)?;
        self.live_block(to).map(|_| to)
    }

    /// Where live block `from` goes when it exits to guest pc `pc`, read from its record alone (no map lookup):
    /// `Ok(successor)` when an exit recorded `pc` and is linked to a live block, `Err(Some(slot))` when an exit
    /// recorded `pc` but has no live link, `Err(None)` when no exit recorded `pc` (or `from` is stale).
    #[inline(always)]
    pub fn chained(&self, from: BlockId, pc: u64) -> Result<BlockId, Option<ExitSlot>> {
        let Some(block) = self.live_block(from) else { return Err(None) };
        let Some(slot) = ExitSlot::ALL.into_iter().find(|&slot| block.exits[slot as usize] == pc) else {
            return Err(None);
        };
        let to = block.links[slot as usize];
        match self.live_block(to) {
            Some(_) => Ok(to),
            None => Err(Some(slot)),
        }
    }

    /// The hot path of [`chained`](Self::chained): the live successor of live block `from` through the exit that
    /// recorded guest pc `pc`, with its ops, or `None` (no such exit, not linked, or either block stale).
    #[inline(always)]
    pub fn hop(&self, from: BlockId, pc: u64) -> Option<(BlockId, &[T])> {
        let block = self.live_block(from)?;
        let slot = block.exits.iter().position(|&exit| exit == pc)?;
        let to = *block.links.get(slot)?;
        let successor = self.live_block(to)?;
        let start = successor.ops_start as usize;
        Some((to, self.ops.get(start..start + successor.ops_len as usize)?))
    }

    /// Whether some live block may cover the page holding guest real address `gpa`: O(1), never a false negative
    /// (a false positive only when another page with code shares its page index bucket).
    #[inline(always)]
    pub fn page_has_code(&self, gpa: u64) -> bool {
        self.page_heads.get(Self::page_bucket(gpa >> PAGE_SHIFT)).is_some_and(|&head| head != NIL)
    }

    /// Counters since construction.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Live blocks.
    pub fn live_blocks(&self) -> usize {
        self.live as usize
    }

    /// The eviction policy in force (with the effective number of regions).
    pub fn eviction(&self) -> Eviction {
        if self.regions <= 1 {
            Eviction::FlushAll
        } else {
            Eviction::Fifo { regions: self.regions }
        }
    }

    /// The most ops one block may have under the eviction policy in force (`OPS`, or `OPS / regions` with
    /// [`Eviction::Fifo`]).
    pub fn max_block_ops(&self) -> usize {
        self.region_size().0 as usize
    }

    /// Block records in use (live, or dropped and not yet evicted), at most `BLOCKS`.
    pub fn blocks_used(&self) -> usize {
        self.blocks_used as usize
    }

    /// Arena ops in use (live, or dropped and not yet evicted), at most `OPS`.
    pub fn ops_used(&self) -> usize {
        self.ops_used as usize
    }

    // ---- changes ----

    /// Inserts the block at `key.pc` covering `guest_len` guest bytes, decoded into `ops`, with the guest pc of
    /// each exit if known (`[taken, fall-through]`). A live block with the same key is replaced (invalidated). If
    /// the arena or the block table has no room left, blocks are evicted first as the [`Eviction`] policy says
    /// (flush-all makes every earlier [`BlockId`] stale). Fails only for a block that can never fit. `exits`
    /// holds up to [`EXITS`] exits in [`ExitSlot`] order; the slots not given are unknown.
    pub fn insert<const E: usize>(
        &mut self,
        key: BlockKey,
        guest_len: u32,
        exits: [Option<u64>; E],
        ops: &[T],
    ) -> Result<BlockId, InsertError> {
        if E > EXITS {
            return Err(InsertError::TooManyExits);
        }
        if guest_len == 0 || guest_len > MAX_GUEST_LEN || key.pc.checked_add(guest_len as u64 - 1).is_none() {
            return Err(InsertError::BadGuestRange);
        }
        let (ops_per, blocks_per) = self.region_size();
        if ops.len() > ops_per as usize {
            return Err(InsertError::TooManyOps);
        }
        if let Some(old) = self.find(key) {
            self.remove(old.index);
            self.stats.invalidations += 1;
        }
        let n = ops.len() as u32; // ops.len() <= OPS <= u32::MAX
        let mut r = self.region as usize;
        let (taken_ops, taken_blocks) = self.region_taken(r);
        if taken_blocks >= blocks_per || taken_ops + n > ops_per {
            if self.regions <= 1 {
                self.flush();
            } else {
                r = (r + 1) % self.regions as usize;
                self.evict_region(r);
                self.region = r as u32;
            }
        }
        let (taken_ops, taken_blocks) = self.region_taken(r);
        let index = r as u32 * blocks_per + taken_blocks;
        let start = r as u32 * ops_per + taken_ops;
        let Some(arena) = self.ops.get_mut(start as usize..start as usize + ops.len()) else {
            return Err(InsertError::TooManyOps); // unreachable: the flush made room
        };
        arena.copy_from_slice(ops);
        let generation = self.next_generation;
        let Some(block) = self.blocks.get_mut(index as usize) else {
            return Err(InsertError::TooManyOps); // unreachable: the flush made room
        };
        *block = Block {
            key,
            generation,
            exits: core::array::from_fn(|slot| exits.get(slot).copied().flatten().unwrap_or(NO_EXIT)),
            links: [BlockId::NONE; EXITS],
            ops_start: start,
            ops_len: n,
            guest_len,
            page_next: [NIL; 2],
            page_prev: [NIL; 2],
        };
        self.next_generation += 1;
        if let (Some(ops), Some(blocks)) = (self.region_ops.get_mut(r), self.region_blocks.get_mut(r)) {
            *ops += n;
            *blocks += 1;
        }
        self.blocks_used += 1;
        self.ops_used += n;
        self.live += 1;
        self.stats.inserts += 1;
        self.map_insert(key, index);
        let two_pages = block_pages_differ(key.pc, guest_len);
        self.page_list_push(index * 2);
        if two_pages {
            self.page_list_push(index * 2 + 1);
        }
        Ok(BlockId { index, generation })
    }

    /// Chains `from`'s exit `slot` to `to`, so that [`successor`](Self::successor) returns `to` without a lookup
    /// while both live. Refused (false) when either is stale or their context tags differ.
    pub fn link(&mut self, from: BlockId, slot: ExitSlot, to: BlockId) -> bool {
        let Some(ctx) = self.live_block(to).map(|b| b.key.ctx) else { return false };
        if self.live_block(from).is_none_or(|b| b.key.ctx != ctx) {
            return false;
        }
        let Some(link) = self.blocks.get_mut(from.index as usize).and_then(|b| b.links.get_mut(slot as usize)) else {
            return false;
        };
        *link = to;
        self.stats.links += 1;
        true
    }

    /// Records `pc` as the guest pc of live block `from`'s exit `slot`, dropping the slot's link: for an exit
    /// only known at run time, such as the last target of an indirect jump. False when `from` is stale.
    pub fn set_exit(&mut self, from: BlockId, slot: ExitSlot, pc: u64) -> bool {
        if self.live_block(from).is_none() {
            return false;
        }
        let Some(block) = self.blocks.get_mut(from.index as usize) else { return false };
        if let (Some(exit), Some(link)) = (block.exits.get_mut(slot as usize), block.links.get_mut(slot as usize)) {
            *exit = pc;
            *link = BlockId::NONE;
        }
        true
    }

    /// Removes `from`'s link through `slot` (a no-op when `from` is stale or unlinked).
    pub fn unlink(&mut self, from: BlockId, slot: ExitSlot) {
        if self.live_block(from).is_some() {
            if let Some(link) = self.blocks.get_mut(from.index as usize).and_then(|b| b.links.get_mut(slot as usize)) {
                *link = BlockId::NONE;
            }
        }
    }

    /// Drops one live block (a no-op returning false when `id` is stale).
    pub fn invalidate_block(&mut self, id: BlockId) -> bool {
        if self.live_block(id).is_none() {
            return false;
        }
        self.remove(id.index);
        self.stats.invalidations += 1;
        true
    }

    /// Drops exactly the live blocks whose guest bytes overlap the page holding guest real address `gpa`, and
    /// returns how many. Cost: the blocks in that page's index bucket.
    pub fn invalidate_page(&mut self, gpa: u64) -> usize {
        self.stats.page_invalidations += 1;
        let page = gpa >> PAGE_SHIFT;
        let mut node = self.page_heads.get(Self::page_bucket(page)).copied().unwrap_or(NIL);
        let mut removed = 0;
        // Each step removes a node or moves past one; a list holds at most 2 * BLOCKS nodes.
        for _ in 0..2 * BLOCKS {
            if node == NIL {
                break;
            }
            let index = node / 2;
            let which = (node % 2) as usize;
            let Some(block) = self.blocks.get(index as usize) else { break };
            let mut next = block.page_next.get(which).copied().unwrap_or(NIL);
            if block.page(which) == page {
                // The block's other node goes too; if it is the next one, step over it.
                let other = node ^ 1;
                if next == other {
                    next = block.page_next.get(which ^ 1).copied().unwrap_or(NIL);
                }
                self.remove(index);
                self.stats.invalidations += 1;
                removed += 1;
            }
            node = next;
        }
        removed
    }

    /// A live block of context `ctx` whose guest bytes hold guest real address `gpa` anywhere (not only at their
    /// start), for an engine that stopped inside a block and goes on with the rest of it. Cost: the blocks in
    /// that page's index bucket.
    pub fn covering(&self, gpa: u64, ctx: u64) -> Option<BlockId> {
        let mut node = self.page_heads.get(Self::page_bucket(gpa >> PAGE_SHIFT)).copied().unwrap_or(NIL);
        // A list holds at most 2 * BLOCKS nodes.
        for _ in 0..2 * BLOCKS {
            if node == NIL {
                break;
            }
            let block = self.blocks.get((node / 2) as usize)?;
            let inside = gpa.checked_sub(block.key.pc).is_some_and(|offset| offset < block.guest_len as u64);
            if block.generation != 0 && block.key.ctx == ctx && inside {
                return Some(BlockId { index: node / 2, generation: block.generation });
            }
            node = block.page_next.get((node % 2) as usize).copied().unwrap_or(NIL);
        }
        None
    }

    /// Drops every block (`fence.i`, or a change of translation the engine's blocks or links depend on).
    pub fn invalidate_all(&mut self) {
        self.stats.invalidate_alls += 1;
        self.stats.invalidations += self.live as u64;
        self.clear();
    }

    /// Drops every block for lack of space (what `insert` does itself when full under [`Eviction::FlushAll`]).
    pub fn flush(&mut self) {
        self.stats.flushes += 1;
        self.stats.evictions += self.live as u64;
        self.clear();
    }

    /// Drops every block (counted as invalidations) and switches to `eviction`.
    pub fn set_eviction(&mut self, eviction: Eviction) {
        self.stats.invalidations += self.live as u64;
        self.clear();
        self.regions = Self::regions_of(eviction);
    }

    /// An empty cache (as [`new`](Self::new)) evicting as `eviction` says.
    pub const fn with_eviction(fill: T, eviction: Eviction) -> Self {
        let mut cache = Self::new(fill);
        cache.regions = Self::regions_of(eviction);
        cache
    }

    /// The number of regions `eviction` asks for, clamped to what this shape allows (1: flush-all).
    const fn regions_of(eviction: Eviction) -> u32 {
        match eviction {
            Eviction::FlushAll => 1,
            Eviction::Fifo { regions } => {
                let mut most = MAX_REGIONS;
                if BLOCKS < most {
                    most = BLOCKS;
                }
                if OPS < most {
                    most = OPS;
                }
                let most = most as u32;
                let regions = if regions < 2 { 2 } else { regions };
                if regions > most {
                    most
                } else {
                    regions
                }
            }
        }
    }

    // ---- internals ----

    /// Ops and records of one region.
    #[inline(always)]
    fn region_size(&self) -> (u32, u32) {
        let regions = self.regions.max(1) as usize;
        ((OPS / regions) as u32, (BLOCKS / regions) as u32)
    }

    /// Ops and records taken in region `r`.
    #[inline(always)]
    fn region_taken(&self, r: usize) -> (u32, u32) {
        (self.region_ops.get(r).copied().unwrap_or(0), self.region_blocks.get(r).copied().unwrap_or(0))
    }

    /// Evicts every block of FIFO region `r` and makes its space free.
    fn evict_region(&mut self, r: usize) {
        let (_, blocks_per) = self.region_size();
        let (taken_ops, taken_blocks) = self.region_taken(r);
        if taken_blocks == 0 {
            return; // never filled since the last flush: nothing to evict
        }
        self.stats.flushes += 1;
        let first = r as u32 * blocks_per;
        for index in first..first + taken_blocks {
            if self.blocks.get(index as usize).is_some_and(|b| b.generation != 0) {
                self.remove(index);
                self.stats.evictions += 1;
            }
        }
        self.ops_used = self.ops_used.saturating_sub(taken_ops);
        self.blocks_used = self.blocks_used.saturating_sub(taken_blocks);
        if let (Some(ops), Some(blocks)) = (self.region_ops.get_mut(r), self.region_blocks.get_mut(r)) {
            *ops = 0;
            *blocks = 0;
        }
    }

    fn clear(&mut self) {
        // Records beyond those taken in each region are dead already (each eviction marks its records dead); mark
        // the taken ones dead so that their old handles are refused right away.
        let (_, blocks_per) = self.region_size();
        for r in 0..self.regions as usize {
            let (_, taken) = self.region_taken(r);
            let first = r * blocks_per as usize;
            for block in self.blocks.iter_mut().skip(first).take(taken as usize) {
                block.generation = 0;
            }
        }
        self.map = [Slot::EMPTY; MAP];
        self.page_heads = [NIL; MAP];
        self.ops_used = 0;
        self.blocks_used = 0;
        self.region = 0;
        self.region_ops = [0; MAX_REGIONS];
        self.region_blocks = [0; MAX_REGIONS];
        self.live = 0;
    }

    #[inline(always)]
    fn page_bucket(page: u64) -> usize {
        mix(page ^ 0x5851_F42D_4C95_7F2D) & (MAP - 1)
    }

    /// The map slot holding `key`, if present.
    #[inline(always)]
    fn map_slot_of(&self, key: BlockKey) -> Option<usize> {
        let mut i = key_hash(key) & (MAP - 1);
        for _ in 0..MAP {
            let slot = self.map.get(i)?;
            if slot.block == NIL {
                return None;
            }
            if slot.key == key {
                return Some(i);
            }
            i = (i + 1) & (MAP - 1);
        }
        None
    }

    /// Adds `key -> index` (the key is not present; the table always has an empty slot since `MAP > BLOCKS`).
    fn map_insert(&mut self, key: BlockKey, index: u32) {
        let mut i = key_hash(key) & (MAP - 1);
        for _ in 0..MAP {
            let Some(slot) = self.map.get_mut(i) else { return };
            if slot.block == NIL {
                *slot = Slot { key, block: index };
                return;
            }
            i = (i + 1) & (MAP - 1);
        }
    }

    /// Empties map slot `hole`, shifting later members of its probe run back so no lookup stops short.
    fn map_remove_at(&mut self, mut hole: usize) {
        if let Some(slot) = self.map.get_mut(hole) {
            *slot = Slot::EMPTY;
        }
        let mut j = hole;
        for _ in 0..MAP {
            j = (j + 1) & (MAP - 1);
            let Some(&candidate) = self.map.get(j) else { return };
            if candidate.block == NIL {
                return;
            }
            let home = key_hash(candidate.key) & (MAP - 1);
            // The candidate may move into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                if let Some(slot) = self.map.get_mut(hole) {
                    *slot = candidate;
                }
                if let Some(slot) = self.map.get_mut(j) {
                    *slot = Slot::EMPTY;
                }
                hole = j;
            }
        }
    }

    /// Drops live block `index` from the map and the page index and marks it dead (its space waits for a flush).
    fn remove(&mut self, index: u32) {
        let Some(&block) = self.blocks.get(index as usize) else { return };
        if block.generation == 0 {
            return;
        }
        if let Some(slot) = self.map_slot_of(block.key) {
            self.map_remove_at(slot);
        }
        self.page_list_remove(index * 2);
        if block_pages_differ(block.key.pc, block.guest_len) {
            self.page_list_remove(index * 2 + 1);
        }
        if let Some(block) = self.blocks.get_mut(index as usize) {
            block.generation = 0;
            block.links = [BlockId::NONE; EXITS];
        }
        self.live = self.live.saturating_sub(1);
    }

    fn node_bucket(&self, node: u32) -> usize {
        let page = self.blocks.get((node / 2) as usize).map_or(0, |b| b.page((node % 2) as usize));
        Self::page_bucket(page)
    }

    fn set_next(&mut self, node: u32, next: u32) {
        if let Some(link) =
            self.blocks.get_mut((node / 2) as usize).and_then(|b| b.page_next.get_mut((node % 2) as usize))
        {
            *link = next;
        }
    }

    fn set_prev(&mut self, node: u32, prev: u32) {
        if let Some(link) =
            self.blocks.get_mut((node / 2) as usize).and_then(|b| b.page_prev.get_mut((node % 2) as usize))
        {
            *link = prev;
        }
    }

    /// Puts `node` at the head of its page's bucket list.
    fn page_list_push(&mut self, node: u32) {
        let bucket = self.node_bucket(node);
        let Some(head) = self.page_heads.get_mut(bucket) else { return };
        let old = *head;
        *head = node;
        self.set_next(node, old);
        self.set_prev(node, NIL);
        if old != NIL {
            self.set_prev(old, node);
        }
    }

    /// Takes `node` out of its bucket list.
    fn page_list_remove(&mut self, node: u32) {
        let bucket = self.node_bucket(node);
        let Some(block) = self.blocks.get((node / 2) as usize) else { return };
        let which = (node % 2) as usize;
        let next = block.page_next.get(which).copied().unwrap_or(NIL);
        let prev = block.page_prev.get(which).copied().unwrap_or(NIL);
        if prev == NIL {
            if let Some(head) = self.page_heads.get_mut(bucket) {
                if *head == node {
                    *head = next;
                }
            }
        } else {
            self.set_next(prev, next);
        }
        if next != NIL {
            self.set_prev(next, prev);
        }
        self.set_next(node, NIL);
        self.set_prev(node, NIL);
    }
}

/// Whether a block at `pc` of `guest_len` bytes (>= 1) ends on another page than it starts.
fn block_pages_differ(pc: u64, guest_len: u32) -> bool {
    (pc >> PAGE_SHIFT) != (pc.wrapping_add(guest_len.saturating_sub(1) as u64) >> PAGE_SHIFT)
}
