//! The dynamic binary translator: guest blocks translated to x86-64 host code, kept in the fixed-size code cache
//! and run natively (hosted x86-64 only, behind the `dbt` feature).
//!
//! # Shape
//! An emulation manager ([`Dbt::run`]) finds the RAM offset of the pc (as the threaded engine does: the fast
//! fetch path, else a full translation), looks the block up in the SPC->TPC map of a [`CodeCache`] whose arena
//! is zero-sized and parallels the embedder's executable memory (a block's host code lies at
//! [`CodeCache::ops_start`] of it), translates on a miss ([`emit`]) and calls the host code. Cold code runs on
//! a cold tier, the threaded engine, predecoded, from block to block along its own chains until the next block is
//! translated or hot ([`Threaded::run_cold`], no round trip through this dispatcher per block): a block is
//! translated once it has run `HOT` instructions there (code that runs a few times, most of a kernel's boot, costs less predecoded than
//! translated). Hot blocks are queued and translated a few at a time (`BATCH`, or once the first has waited a
//! quarter of the threshold more on the cold tier), their code written into code memory with one protection
//! change (a pair of `mprotect` calls costs about as much as assembling a block).
//!
//! With a [`TranslationService`] attached (the hosted runner's translation worker thread), translation leaves the
//! hart's thread ([`offload`]): a block that turns hot is submitted at once as a [`Job`] (its bytes and what its
//! translation depends on; a bounded number in flight, none twice) and runs on the cold tier until its finished
//! [`Translation`] is installed, at a dispatcher turn or when the cold tier finds one waiting; several go into code
//! memory with one write. Installing watches the block's bytes FIRST, then compares RAM's bytes with the job's, so
//! a block the guest rewrote while its job was in flight is dropped, never run. Both tiers are exact, so when a
//! translation lands changes nothing the guest can see (runs with instruction-counted time stay repeatable).
//!
//! The two caches
//! watch the same RAM; this engine takes the list of written code pages and drops them in both. Blocks are keyed by
//! RAM offset and whether data accesses are paged, i.e. in S/U-mode, Sv39 or bare, and go through the soft TLB
//! with the run's keys (the inlined fast path differs from M-mode's window), never by virtual address:
//! the host code takes the block's virtual pc at entry and works out every pc from it, so a block is shared by
//! every mapping of its bytes. A block never crosses a page; it runs on past branches, each taken one an exit. A
//! 4-byte instruction straddling the page ends its block: the interpreter runs it (fetching both halves through
//! the MMU each time), so the block depends on neither half, nor on the next page, and hot loops across a page
//! boundary stay in translated code.
//!
//! # What translated code does
//! Guest integer registers live in `hart.x`; within a block the ones it uses most are held in host registers
//! ([`regs`]), written back before anything else may look at them (every exit and call out). RV64I and M arithmetic,
//! `lui`/`auipc`, branches, `jal`/`jalr` and loads and stores are translated, with the soft TLB lookup inlined
//! through the TLB's view for the run's keys ([`SoftTlb::view`](crate::mem::tlb::SoftTlb::view): a tag compare and
//! an add, QEMU's softmmu cost) or the M-mode RAM window (whose bounds a block compiles in as constants: a new
//! window, which a locked PMP entry or another real map makes, drops every block), and the slow path a call to
//! [`Memory::load`]/[`Memory::store`], which then copies the TLB's entry into the view. Everything else
//! (CSR and privileged instructions, AMOs, floating point, ...) is a call to the interpreter's
//! [`step`](super::interp::step) from translated code, so its semantics stay in one place; privileged
//! instructions, exceptions and device accesses leave the engine with the interpreter's [`Exit`], `hart.pc` at
//! the instruction and `instret` counting exactly the instructions before it. The one exception is the host's
//! opt-in, as for the threaded engine: CSR reads and `sstatus.SIE` toggles the dispatcher would give exactly
//! ([`InlineCsr`], [`Dbt::serve_csr_inline`]), served by the `step` helper without leaving. A store that may
//! write code (to a watched page; with a granular watch, to one of its 64-byte granules that may hold code, as
//! [`Ram`](crate::mem::Ram) tells them apart) takes the slow path; when it writes code it ends the block after
//! the store, and the page's blocks are dropped before anything else runs, so self-modifying code runs
//! correctly, and data beside code is stored inline, costing neither a call nor a translation.
//!
//! # Staying in translated code
//! A block's exits leave for the dispatcher only when nothing cheaper is known to be right:
//! - A static exit to the block's own page jumps through a link slot ([`emit`]), linked by the dispatcher to the
//!   block it then finds at the target, and only if that block lies at the RAM offset the exit leads to.
//! - Any other exit (`jalr`, and static exits to another page) probes the target cache: translated code finds
//!   the target pc's RAM offset exactly as [`Memory::fast_fetch`] does (the executable M-mode window, else the
//!   soft TLB with the run's fetch key; a miss leaves), then one entry of a fixed table owned by the engine
//!   ([`JumpTable`], one per data-access context tag) keyed by that RAM offset, tagged with a generation. The
//!   dispatcher fills the entry of every block it finds. So an entry answers the same question the dispatcher's
//!   own lookup does (RAM offset and context tag), from the translation in force now: a `satp`, privilege,
//!   `mstatus` or TLB change needs no hook, since the probe translates the pc itself.
//! - A return (`jalr x0` through x1 or x5) first checks the return prediction: calls (`jal`/`jalr` writing x1
//!   or x5) push the return pc and the address of a link slot of the calling block for its return site onto a
//!   ring ([`Ring`]); a return whose target equals the popped pc jumps through that slot (linked, or leaving to
//!   the dispatcher, which links it as any other). Anything else goes to the target cache. A prediction is only
//!   made and used within one engine run, in which the translation context is fixed (every `satp`, `mstatus`,
//!   privilege or `sfence.vma` change leaves the engine), so the ring is emptied at the start of each run.
//!
//! Every way in is a block's chained entry, which charges the whole block to the budget or leaves. Any removal
//! of a block (page invalidation, eviction, replacement, full invalidation) is seen by the dispatcher before the
//! next block call: every link slot is unlinked, the target cache's generation is bumped (every older entry
//! misses; the tables are cleared when it wraps) and the ring is emptied, so nothing leads to host code that is
//! gone.
//!
//! Patched direct jumps (a `jmp rel32` written over a linked exit) are not used: a linked exit costs one
//! `mov rax, imm64` and a memory-indirect `jmp` more than one would, and blocks are entered 0.08 to 0.14 times
//! per guest instruction in `trapeze bench`, so at most about 0.14 of 6 to 12 host instructions per guest
//! instruction could be saved, against two protection changes of code memory per link and a rewrite of every
//! linked site on every removal.
//!
//! # Measuring
//! [`DbtStats`] counts the host instructions emitted, in all and on the blocks' straight-line paths; with
//! [`Dbt::set_counting`] blocks translated from then on also count their entries (an `add` to memory each),
//! which gives a dynamic figure of host instructions per guest instruction.
//!
//! # Never
//! Executable memory is never writable and executable at once: the embedder's [`CodeMemory`] maps it. The
//! engine never runs a block whose bytes may have changed (nor installs a translation made from bytes RAM no
//! longer holds), never runs more than the budget (a block is entered
//! only when the budget covers all of it; the tail of a budget runs on the cold tier), and nothing a
//! guest supplies (instruction word, address, page table) can make it panic or touch host memory outside guest
//! RAM: the inlined fast paths bound every access by the RAM size and take the slow path otherwise. No target
//! cache entry, link slot or prediction ever leads to a block that was removed, nor to a block other than the
//! one the dispatcher would find at that pc: entries, slots and predictions are only ever filled by the
//! dispatcher with live blocks it found itself, checked against the RAM offset they stand for.

mod assemble;
mod emit;
mod offload;
mod regs;
#[cfg(test)]
mod tests;

pub use offload::{Job, Translation, TranslationService, Translator, JOB_BYTES};

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::interp::{self, exception, mmio};
use super::threaded::{ColdHook, InlineCsr, ServedInline, Threaded};
use super::Engine;
use crate::cache::{BlockKey, CodeCache, Eviction};
use crate::hart::Hart;
use crate::isa::{Inst, LoadWidth, OpKind, StoreWidth};
use crate::mem::mmu::{DataPath, Loaded, Memory, Target, TLB_ENTRIES};
use crate::mem::sv39::AccessType;
use crate::mem::{DirtyCode, PAGE_SIZE};
use crate::trap::{extend, Exit, MmioKind};

/// Longest block, in guest instructions: bounds translation work, host code size and the tail of a budget that
/// the cold tier runs.
pub const MAX_BLOCK: usize = 64;

/// Most host code bytes one block may take (a block that would take more is translated shorter).
pub const MAX_BLOCK_CODE: usize = 16 * 1024;

/// How the engine's code cache makes room: FIFO over four regions, as the threaded engine's.
pub const EVICTION: Eviction = Eviction::Fifo { regions: 4 };

/// Executable memory lent by the embedder: `len()` bytes at address `base()`.
///
/// # Safety
/// Implementers guarantee that `[base(), base() + len())` stays mapped at the same address as long as the value
/// lives and is never writable and executable at once (it is readable and executable except inside `write`), and
/// that once `write(offset, bytes)` returned `Ok`, executing at `base() + offset` on the calling thread runs
/// exactly `bytes` until the next `write` over them: nothing fetched before the write may run after it (x86 sees a
/// store to instructions in flight only through the address they were fetched at, so a write through another
/// mapping must end with a serializing instruction). Only `write` changes the contents.
// An unsafe trait: its implementations vouch for the code the engine jumps into.
#[allow(unsafe_code)]
pub unsafe trait CodeMemory {
    /// Address of the first byte.
    fn base(&self) -> usize;
    /// Size in bytes.
    fn len(&self) -> usize;
    /// Whether there is no byte at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `bytes` to `[offset, offset + bytes.len())`: made writable (not executable), written, then made
    /// executable (not writable) again. Refused when the range is outside the memory or the mapping fails.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError>;
}

/// Why [`CodeMemory::write`] failed: a host error, never the guest's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMemoryError {
    /// The range is outside the memory.
    OutOfRange,
    /// The host refused to change the protection.
    Protection,
}

/// Counters of the engine's work, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbtStats {
    /// Blocks translated and installed (translated here, or by the service).
    pub blocks_translated: u64,
    /// Guest instructions in the blocks translated.
    pub instructions_translated: u64,
    /// Host code bytes emitted.
    pub code_bytes: u64,
    /// Block entries (calls of translated code).
    pub blocks_entered: u64,
    /// Instructions the interpreter ran from the dispatcher (code that cannot be kept, armed triggers).
    pub stepped: u64,
    /// Instructions of cold code, run by the threaded engine (the cold tier) until their block is hot.
    pub cold_instructions: u64,
    /// Pages whose blocks were dropped because they were written.
    pub pages_invalidated: u64,
    /// Times every block was dropped (too many written pages to list).
    pub full_invalidations: u64,
    /// Exits chained to their target block.
    pub links: u64,
    /// Times every link was undone (a block was removed).
    pub unlink_alls: u64,
    /// Host instructions emitted (in the blocks translated, stubs, prologue and epilogue included), and those on
    /// the blocks' straight-line paths (chained entry to the last exit of the body).
    pub host_instructions: u64,
    pub body_instructions: u64,
    /// With [`Dbt::set_counting`] on: the sum over block entries of the entered block's straight-line host
    /// instructions (divided by guest instructions run, a dynamic figure of host instructions per guest one).
    pub body_instructions_run: u64,
    /// Target cache entries written by the dispatcher.
    pub jump_fills: u64,
    /// Writes of code memory (each a protection change): hot blocks queued together share one.
    pub code_writes: u64,
    /// Engine runs ([`Engine::run`] calls).
    pub runs: u64,
    /// Turns of the dispatcher's loop (a block call, a cold tier block or a step each).
    pub dispatches: u64,
    /// Blocks the cold tier ran: in all, those reached straight from translated code (an exit to code not
    /// translated), and those run for the tail of a budget (a translated block the budget does not cover).
    pub cold_runs: u64,
    pub cold_from_code: u64,
    pub cold_tails: u64,
    /// Translated code that left for the dispatcher only to have it call a translated block: through an
    /// unlinked link slot, and otherwise (a target cache or return prediction miss, a budget stop).
    pub slot_misses: u64,
    pub other_misses: u64,
    /// With [`Dbt::set_counting`] on: return predictions that hit and missed, target cache probes and hits.
    pub ring_hits: u64,
    pub ring_misses: u64,
    pub probes: u64,
    pub probe_hits: u64,
    /// With a [`TranslationService`]: jobs submitted, refused (full), and finished translations dropped because
    /// the guest rewrote the block's bytes while its job was in flight, because nothing could be translated, or
    /// because the block was translated already.
    pub jobs_submitted: u64,
    pub jobs_refused: u64,
    pub translations_stale: u64,
    pub translations_failed: u64,
    pub translations_redundant: u64,
}

/// Where translated code counts (with counting on) in [`Env::counts`].
pub(crate) const COUNT_RING_HITS: usize = 0;
pub(crate) const COUNT_RING_MISSES: usize = 1;
pub(crate) const COUNT_PROBES: usize = 2;
pub(crate) const COUNT_PROBE_HITS: usize = 3;

/// What a translated block returns (and a helper, to the block).
pub(crate) mod status {
    /// A helper: go on with the next instruction.
    pub const CONTINUE: u32 = 0;
    /// The block ended: `Env::pc` is the next pc, `Env::retired` the instructions it retired.
    pub const END: u32 = 1;
    /// Leave the engine with `Env::exit`; `Env::pc` is the instruction's pc.
    pub const EXIT: u32 = 2;
    /// An instruction wrote a watched code page: the block ended after it (as [`END`]); drop written code.
    pub const DIRTY: u32 = 3;
}

/// What translated code and its helpers share during one block (`repr(C)`: generated code reads it at the
/// offsets [`emit`] takes from this layout). Pointers are derived afresh before every block call.
#[repr(C)]
pub(crate) struct Env {
    /// The current block's virtual pc: in, that of the block the dispatcher calls; translated code updates it
    /// before each helper call (a chained block's pc is its own), for the helpers.
    pub entry_pc: u64,
    /// Out: the next pc (or the leaving instruction's).
    pub pc: u64,
    /// Out, from a helper: instructions the current block retired.
    pub retired: u64,
    /// In: the budget left; out: what is left of it (blocks charge it as they are entered).
    pub budget: u64,
    /// Out: the address of the link slot of an unlinked exit the block left through (0: none).
    pub link: u64,
    /// `hart.x`.
    pub x: *mut u64,
    /// The first byte of guest RAM.
    pub ram: *mut u8,
    /// RAM size in bytes.
    pub ram_len: u64,
    /// The soft TLB's view for this run's keys (see [`SoftTlb::view`](crate::mem::tlb::SoftTlb::view)), for
    /// loads, stores and the target cache probe's fetches, and the tag of its live entries.
    pub view: usize,
    pub view_tag: u64,
    /// The code watch bitmap and the number of pages it covers (0: stores always take the slow path).
    pub watch: usize,
    pub watch_pages: u64,
    /// The granule masks of a granular watch and the number of pages they cover (0: none, every store to a
    /// watched page takes the slow path).
    pub granules: usize,
    pub granule_pages: u64,
    /// The fetch half of the run's path (see [`DataPath::raw_fetch`]), for the target cache probe: the
    /// executable M-mode window (size 0: none) and whether fetches go through the soft TLB, with its bit.
    pub fetch_base: u64,
    pub fetch_size: u64,
    pub fetch_host: u64,
    pub fetch_paged: u64,
    /// The target cache of this run's context tag ([`JumpTable`]) and the tag its live entries carry.
    pub jumps: usize,
    pub jump_tag: u64,
    /// The return prediction ring ([`Ring`]).
    pub ring: usize,
    /// For the helpers.
    pub hart: *mut Hart,
    pub memory: *mut Memory<'static, 'static>,
    /// Counters translated code adds to with counting on (`COUNT_*`).
    pub counts: [u64; 4],
    /// The CSR accesses the `step` helper serves itself ([`Dbt::serve_csr_inline`]; null: none), and its count.
    pub inline_csr: *const InlineCsr,
    pub served_inline: *mut ServedInline,
    /// The exit of an [`status::EXIT`].
    pub exit: Exit,
}

/// The host code of a block: called with the [`Env`], returns a [`status`].
type BlockFn = unsafe extern "sysv64" fn(*mut Env) -> u32;

/// What the engine keeps per block besides the cache's record.
#[derive(Debug, Clone, Copy, Default)]
struct BlockMeta {
    /// Guest instructions.
    insts: u32,
    /// Where its host code starts in code memory, and its dispatcher entry and unlinked exit from there.
    code: usize,
    entry: u32,
    unlinked: u32,
    /// Host instructions of its straight-line path.
    body: u32,
    /// The RAM offset each link slot may be linked to (`NO_TARGET`: none).
    targets: [u64; emit::LINKS],
}

/// No link target.
const NO_TARGET: u64 = u64::MAX;

/// Entries of each target cache table (a power of two).
pub(crate) const JUMPS: usize = 4096;

/// A target cache table: entry `(offset >> 1) % JUMPS` is `[offset ^ tag, chained entry address]` for the
/// live block at RAM `offset` (with this table's context tag), or holds a key no lookup can match
/// ([`EMPTY_KEY`], or a stale tag). Offsets are below 2^48, tags are the generation in bits 48 and up.
type JumpTable = [[u64; 2]; JUMPS];

/// The key of an empty target cache entry: no RAM offset below 2^48 matches it under any tag.
const EMPTY_KEY: u64 = (1 << 48) - 1;

/// Where tags start in a target cache key.
const TAG_SHIFT: u32 = 48;

/// Entries of the return prediction ring (a power of two).
pub(crate) const RING: usize = 32;

/// The return prediction ring: `top` indexes the last pushed entry; each entry is `[return pc, link slot
/// address]` (pc 1, never a jump target, for none).
#[repr(C)]
struct Ring {
    top: u64,
    entries: [[u64; 2]; RING],
}

impl Ring {
    const EMPTY: Ring = Ring { top: 0, entries: [[1, 0]; RING] };
}

/// The link slots of every block (by block index): data words translated code jumps through (see [`emit`]).
type LinkSlots<const BLOCKS: usize> = [[u64; emit::LINKS]; BLOCKS];

/// Instructions a block runs on the cold tier before it is translated: code that runs a few thousand times (most
/// of a kernel's boot) costs less on the cold tier than translated (about 10 us a block in batches). Counting
/// instructions rather than entries translates long blocks (a hash's unrolled rounds) sooner: what translation
/// saves grows with the block's length, its cost hardly. Debian's Linux to its shell, one hart, CPU seconds,
/// when counting entries: 4.7 at 200 entries, 3.3 at 1000, 3.0 at 4000 (8.3 at 50; 5.5 on the threaded engine
/// alone). With translation at a third of its former cost, counting instructions: about 3.2 s from 10000 to
/// 20000 (flat within the noise of a shared machine), 3.8 at 2000, 4.2 at 1000 (22000 blocks translated by
/// a billion instructions, against 4000 at 20000: Linux's boot runs much code a few thousand times and no more,
/// so a lower threshold translates more than it saves); U-Boot to its prompt gains a little from lower ones.
const HOT: u16 = 20_000;

/// What an entry of a cold block from translated code adds to its heat besides the instructions it runs: the
/// round trip through the dispatcher and the cold tier costs about as much as running this many translated
/// instructions, so a short block (the rest of a loop body longer than [`MAX_BLOCK`], a two-instruction
/// trampoline, a return site) that translated code leads to often is translated after a few hundred entries
/// rather than `HOT` divided by its length.
const EXIT_COST: u64 = 64;

/// Hot blocks translated together at most: their code goes into code memory with one protection change (a pair of
/// `mprotect` calls here costs about 9 us, a third of a block's translation).
const BATCH: usize = 8;

/// Jobs one engine has in flight with its service at most.
const MAX_IN_FLIGHT: usize = 64;

/// A queued hot block waits at most `threshold / WAIT` instructions on the cold tier (counting round trips from
/// translated code as [`EXIT_COST`] each) for others to join it.
const WAIT: u16 = 4;

/// The cold tier's engine: the threaded engine with the hosted code cache's size (about 1 MiB).
type ColdTier = Threaded<32768, 2048, 4096>;

/// Counters of [`Dbt::heat`] (block starts share them by hash: a collision only translates sooner).
const HEAT_SLOTS: usize = 1 << 14;

/// The heat counter of the block at RAM offset `start`.
fn heat_slot(start: u64) -> usize {
    (start.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as usize & (HEAT_SLOTS - 1)
}

/// Harts whose budget stop the engine remembers (more share slots, and only lose the shortcut).
const STOP_SLOTS: usize = 8;

/// The translator over `CODE` bytes of host code in `BLOCKS` blocks with a `MAP`-slot map table, emitting into
/// the embedder's executable memory `M` (at least `CODE` bytes).
pub struct Dbt<M: CodeMemory, const CODE: usize, const BLOCKS: usize, const MAP: usize> {
    code: M,
    /// The cold tier: runs blocks not hot enough to translate yet, predecoded (about four times the interpreter's
    /// speed, for a microsecond of decoding per block rather than tens for a translation).
    cold: Box<ColdTier>,
    cache: Box<CodeCache<(), CODE, BLOCKS, MAP>>,
    meta: Box<[BlockMeta; BLOCKS]>,
    /// Instructions each block start (hashed) ran on the cold tier: translation waits for the threshold.
    heat: Box<[u16; HEAT_SLOTS]>,
    /// Instructions on the cold tier before a block is translated ([`HOT`] by default).
    threshold: u16,
    /// Link slots: each holds the address of its own block's unlinked exit, or of a live block's chained entry.
    links: Box<LinkSlots<BLOCKS>>,
    /// The cache's count of removed blocks when the links were last known good: any removal (invalidation,
    /// eviction, replacement) unlinks every slot, so no slot ever leads to a block that is gone.
    removals: u64,
    /// The M-mode window that blocks whose data accesses are not paged compile in: that of the last such run.
    window: Window,
    /// The target cache, a table per context tag (unpaged, paged data accesses), and the generation tag of its
    /// live entries (bumped on any removal, so every older entry misses).
    jumps: Box<[JumpTable; 2]>,
    jump_tag: u64,
    /// The return prediction ring, emptied at the start of every run and on any removal.
    ring: Box<Ring>,
    /// Whether blocks translated from now on count their entries, in `entries` (by block index); the entries of
    /// blocks whose record was reused, times their straight-line host instructions, are summed in `counted`.
    counting: bool,
    entries: Box<[u64; BLOCKS]>,
    counted: u64,
    /// Translates on the hart's thread (without a service), into `scratch`, reused by every block.
    translator: Translator,
    scratch: Translation,
    /// Translation off the hart's thread, if the embedder attached one; the blocks whose jobs are in flight (a
    /// bit per heat slot: at most one job per slot, so none is submitted twice) and how many there are.
    service: Option<Box<dyn TranslationService>>,
    in_flight: Box<[u64; HEAT_SLOTS / 64]>,
    in_flight_count: usize,
    /// Hot blocks waiting to be translated together (RAM offset, data accesses paged), and the instructions run on
    /// the cold tier since the first was queued.
    queue: [(u64, bool); BATCH],
    queued: usize,
    waited: u64,
    /// The code of blocks translated but not yet in code memory (`staged` blocks, `staged_ids`), which goes at
    /// `staging_offset` of it.
    staging: Vec<u8>,
    staging_offset: usize,
    staged_ids: [Option<crate::cache::BlockId>; BATCH],
    staged: usize,
    stats: DbtStats,
    /// The pc at which each hart's last run spent its budget (slot `hart_id % STOP_SLOTS`): its next run steps
    /// to the next known block start rather than translating a block that starts inside one.
    stopped: [Option<u64>; STOP_SLOTS],
    /// Whether a translated block the budget does not cover runs whole, past the budget, rather than its first
    /// instructions on the cold tier ([`Dbt::set_budget_overrun`]).
    overrun: bool,
    /// The CSR accesses translated code serves without leaving ([`Dbt::serve_csr_inline`]), and those it served
    /// since the last look.
    inline_csr: Option<InlineCsr>,
    served_inline: ServedInline,
    /// Ticks after a run's start that `time` reads are served inline ([`Dbt::set_time_window`]; 0: as given).
    time_window: u64,
}

/// Why [`Dbt::new`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbtError {
    /// The code memory is smaller than the cache's arena.
    CodeMemoryTooSmall,
    /// The assembler could not be set up.
    Assembler,
}

impl<M: CodeMemory, const CODE: usize, const BLOCKS: usize, const MAP: usize> Dbt<M, CODE, BLOCKS, MAP> {
    /// An engine with an empty cache emitting into `code`.
    pub fn new(code: M) -> Result<Self, DbtError> {
        if code.len() < CODE {
            return Err(DbtError::CodeMemoryTooSmall);
        }
        let translator = Translator::new()?;
        Ok(Self {
            code,
            cold: boxed(ColdTier::new),
            cache: boxed(|| CodeCache::with_eviction((), EVICTION)),
            meta: boxed(|| [BlockMeta::default(); BLOCKS]),
            links: boxed(|| [[0; emit::LINKS]; BLOCKS]),
            heat: boxed(|| [0; HEAT_SLOTS]),
            threshold: HOT,
            removals: 0,
            window: Window::default(),
            jumps: boxed(|| [[[EMPTY_KEY, 0]; JUMPS]; 2]),
            jump_tag: 0,
            ring: Box::new(Ring::EMPTY),
            counting: false,
            entries: boxed(|| [0; BLOCKS]),
            counted: 0,
            translator,
            scratch: Translation::default(),
            service: None,
            in_flight: boxed(|| [0; HEAT_SLOTS / 64]),
            in_flight_count: 0,
            queue: [(0, false); BATCH],
            queued: 0,
            waited: 0,
            staging: Vec::new(),
            staging_offset: 0,
            staged_ids: [None; BATCH],
            staged: 0,
            stats: DbtStats::default(),
            stopped: [None; STOP_SLOTS],
            overrun: false,
            inline_csr: None,
            served_inline: ServedInline::default(),
            time_window: 0,
        })
    }

    /// Translates a block once it has run `instructions` instructions on the cold tier (0: at its first entry, as
    /// tests want); until then the cold tier runs it.
    pub fn set_translation_threshold(&mut self, instructions: u16) {
        self.threshold = instructions;
    }

    /// Lets a run end after the translated block the budget ends in, at most one block's instructions past it,
    /// rather than run that block's first instructions on the cold tier (and its rest there at the next run). For
    /// an embedder whose budgets are only turns of a hart (a thread per hart, on host time), not a count the
    /// guest may observe: instruction-counted time, lockstep comparison and the debugger need exact budgets.
    pub fn set_budget_overrun(&mut self, allowed: bool) {
        self.overrun = allowed;
    }

    /// Serves CSR accesses in the engine from now on, in translated code and on the cold tier ([`InlineCsr`]: reads
    /// and `sstatus.SIE` toggles the dispatcher would give exactly), or (`None`) leaves for every CSR access. A
    /// host's opt-in, as for the threaded engine: the machine's run loop brings time and devices up to date at
    /// each exit, so a timer that came due since the last one is taken at the next exit instead, which only runs
    /// on host time may allow.
    pub fn serve_csr_inline(&mut self, reads: Option<InlineCsr>) {
        self.inline_csr = reads;
        self.cold.serve_csr_inline(reads);
    }

    /// With CSR accesses served inline and a live clock in their [`InlineCsr`], serves `time` reads too, for
    /// `ticks` of that clock after the start of each run: [`Engine::set_guest_time`] sets the clock's offset so
    /// that `time` goes on from the VM's value, and the read's end (`until`) that far ahead. Past it, reads
    /// leave, and the run loop brings the devices up to date (a timer that came due is taken then): a guest
    /// polling `time` sees its timer at most `ticks` late. 0 (the default): the [`InlineCsr`]'s own offset and
    /// end stand.
    pub fn set_time_window(&mut self, ticks: u64) {
        self.time_window = ticks;
    }

    /// Translates hot blocks through `service` from now on, off the hart's thread: a block that turns hot is
    /// submitted at once and runs on the cold tier until its translation is installed, at a dispatcher turn.
    pub fn attach_service(&mut self, service: Box<dyn TranslationService>) {
        self.service = Some(service);
    }

    /// Makes the blocks translated from now on count their entries, for [`DbtStats::body_instructions_run`]
    /// (an `add` to memory per block entry: for measurements, not for speed).
    pub fn set_counting(&mut self, on: bool) {
        self.counting = on;
    }

    /// Counters since construction.
    pub fn stats(&self) -> DbtStats {
        let live = self.entries.iter().zip(self.meta.iter()).map(|(entries, meta)| entries * meta.body as u64);
        DbtStats { body_instructions_run: self.counted + live.sum::<u64>(), ..self.stats }
    }

    /// The code cache (for its statistics).
    pub fn cache(&self) -> &CodeCache<(), CODE, BLOCKS, MAP> {
        &self.cache
    }

    /// Drops the blocks of every code page written since the last look, here and in the cold tier.
    fn invalidate_written_code(&mut self, memory: &mut Memory) {
        let written = memory.ram.take_dirty_code();
        self.cold.invalidate_written_pages(written);
        match written {
            DirtyCode::All => {
                self.cache.invalidate_all();
                self.stats.full_invalidations += 1;
            }
            dirty @ DirtyCode::Pages { .. } => {
                for &page in dirty.pages().unwrap_or(&[]) {
                    self.cache.invalidate_page(page * PAGE_SIZE);
                    self.stats.pages_invalidated += 1;
                }
            }
        }
    }

    /// The most host code bytes a block may take here.
    fn code_limit(&self) -> usize {
        MAX_BLOCK_CODE.min(self.cache.max_block_ops())
    }

    /// Translates the block whose first instruction lies at RAM offset `start` on this thread and caches it.
    fn translate(&mut self, memory: &mut Memory, start: u64, paged: bool) -> Option<(crate::cache::BlockId, u32)> {
        let job = Job::snapshot(memory.ram, start, paged, self.window, self.counting, self.code_limit())?;
        let mut scratch = core::mem::take(&mut self.scratch);
        self.translator.translate_into(&job, &mut scratch);
        let installed = self.install(memory, &scratch);
        self.scratch = scratch;
        installed
    }

    /// Caches `translation` and stages its code, if it still holds: its bytes are watched FIRST, then compared with
    /// RAM's bytes now (with shared RAM, a write by another thread after the watch is reported, one before it is
    /// seen here). `None` when it does not hold (the guest rewrote the bytes since its job was made), nothing was
    /// translated, or the block is cached already.
    fn install(&mut self, memory: &mut Memory, translation: &Translation) -> Option<(crate::cache::BlockId, u32)> {
        let Some(block) = translation.block else {
            self.stats.translations_failed += 1;
            return None;
        };
        let job = translation.job();
        let (start, paged) = (job.offset(), job.paged());
        if !paged && job.window() != self.window {
            // Made for a window no longer in force.
            self.stats.translations_stale += 1;
            return None;
        }
        let key = BlockKey::new(start, paged as u64);
        if self.cache.find(key).is_some() {
            self.stats.translations_redundant += 1;
            return None;
        }
        let code_len = translation.code.len();
        if code_len > self.code_limit() || !memory.ram.watch_code(start, block.guest_len as u64) {
            return None;
        }
        let read = translation.read_bytes()?;
        let mut now = [0u8; JOB_BYTES];
        let now = now.get_mut(..read.len())?;
        memory.ram.read_bytes(memory.ram.base().checked_add(start)?, now)?;
        if now != read {
            self.stats.translations_stale += 1;
            return None;
        }
        let units = [(); MAX_BLOCK_CODE];
        let id = self.cache.insert(key, block.guest_len, block.exits, units.get(..code_len)?).ok()?;
        let offset = self.cache.ops_start(id)?;
        let slots = self.links.get_mut(id.index())?;
        let unlinked = (self.code.base() + offset + block.unlinked as usize) as u64;
        slots.fill(unlinked);
        let targets = block.slot_targets.map(|target| target.unwrap_or(NO_TARGET));
        let (old, entries) = (self.meta.get(id.index())?, self.entries.get_mut(id.index())?);
        self.counted += *entries * old.body as u64;
        *entries = 0;
        let counter = entries as *mut u64 as u64;
        let slots = slots.as_ptr() as u64;
        let meta = BlockMeta {
            insts: block.insts,
            code: offset,
            entry: block.entry,
            unlinked: block.unlinked,
            body: block.body_insts,
            targets,
        };
        *self.meta.get_mut(id.index())? = meta;
        // Staged with the blocks installed just before it when it follows them in code memory (one write of code
        // memory for all), else after writing those.
        if self.staged == 0
            || self.staged == self.staged_ids.len()
            || self.staging_offset + self.staging.len() != offset
        {
            self.write_staged();
            self.staging_offset = offset;
        }
        let Some(slot) = self.staged_ids.get_mut(self.staged) else {
            self.cache.invalidate_block(id);
            return None;
        };
        *slot = Some(id);
        self.staged += 1;
        let at = self.staging.len();
        self.staging.extend_from_slice(&translation.code);
        // The addresses of the link slots and the entry counter in place of their placeholders.
        let code = self.staging.get_mut(at..)?;
        for &(at, value) in &translation.imm64 {
            let address = match value {
                emit::COUNTER_PLACEHOLDER => counter,
                _ => match (0..emit::LINKS).find(|&k| emit::slot_placeholder(k) == value) {
                    Some(k) => slots + 8 * k as u64,
                    None => continue,
                },
            };
            let at = at as usize;
            if let Some(word) = code.get_mut(at..at + 8) {
                word.copy_from_slice(&address.to_le_bytes());
            }
        }
        self.stats.blocks_translated += 1;
        self.stats.code_bytes += code_len as u64;
        self.stats.instructions_translated += block.insts as u64;
        self.stats.host_instructions += block.host_insts as u64;
        self.stats.body_instructions += block.body_insts as u64;
        Some((id, block.insts))
    }

    /// Submits the job of the hot block at RAM offset `start` (data accesses `paged`) to the service, unless one
    /// of its heat slot is in flight. Refused (the service or the in-flight list full), the block cools down to
    /// half the threshold, so that it is not offered again at every entry.
    fn submit(&mut self, memory: &Memory, start: u64, paged: bool) {
        let slot = heat_slot(start);
        if self.in_flight.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0) {
            return;
        }
        let job = match self.in_flight_count < MAX_IN_FLIGHT {
            true => Job::snapshot(memory.ram, start, paged, self.window, self.counting, self.code_limit()),
            false => None,
        };
        let accepted = match (job, self.service.as_mut()) {
            (Some(job), Some(service)) => service.submit(&job),
            _ => false,
        };
        if accepted {
            if let Some(word) = self.in_flight.get_mut(slot / 64) {
                *word |= 1 << (slot % 64);
            }
            self.in_flight_count += 1;
            self.stats.jobs_submitted += 1;
        } else {
            self.stats.jobs_refused += 1;
            if let Some(heat) = self.heat.get_mut(slot) {
                *heat = self.threshold / 2;
            }
        }
    }

    /// Whether finished translations are due for installing: as soon as one is. Translations that land together
    /// are installed together (one write of code memory), but none waits for others: waiting for a batch of 16 (or
    /// for every job in flight) kept the `outside` workload's blocks on the cold tier longer.
    fn install_due(&self) -> bool {
        self.in_flight_count > 0 && self.service.as_ref().is_some_and(|service| service.ready() > 0)
    }

    /// Installs every finished translation the service holds, their code written into code memory together.
    fn install_finished(&mut self, memory: &mut Memory) {
        let Some(mut service) = self.service.take() else { return };
        service.take(&mut |translation| {
            let job = translation.job();
            let slot = heat_slot(job.offset());
            if let Some(word) = self.in_flight.get_mut(slot / 64).filter(|word| **word & (1 << (slot % 64)) != 0) {
                *word &= !(1 << (slot % 64));
                self.in_flight_count = self.in_flight_count.saturating_sub(1);
            }
            let (stale, failed) = (self.stats.translations_stale, self.stats.translations_failed);
            if self.install(memory, translation).is_none()
                && (self.stats.translations_stale != stale || self.stats.translations_failed != failed)
            {
                // Rewritten while in flight, or not translatable: back on the cold tier for a while before the
                // block is offered again.
                if let Some(heat) = self.heat.get_mut(slot) {
                    *heat = self.threshold / 2;
                }
            }
        });
        self.service = Some(service);
        self.write_staged();
    }

    /// Copies the staged blocks' code into code memory (one protection change for all); drops them if it fails.
    fn write_staged(&mut self) {
        if self.staged > 0 {
            self.stats.code_writes += 1;
            if self.code.write(self.staging_offset, &self.staging).is_err() {
                for &id in self.staged_ids.get(..self.staged).unwrap_or(&[]).iter().flatten() {
                    self.cache.invalidate_block(id);
                }
            }
        }
        self.staging.clear();
        self.staged = 0;
    }

    /// Notes that the block at RAM offset `start` (data accesses `paged`) is hot; whether the queue of hot blocks
    /// is due for translation: full, or its first block has waited long enough on the cold tier.
    fn enqueue(&mut self, start: u64, paged: bool) -> bool {
        let queued = self.queue.get(..self.queued).unwrap_or(&[]);
        if !queued.contains(&(start, paged)) {
            if let Some(slot) = self.queue.get_mut(self.queued) {
                *slot = (start, paged);
                self.queued += 1;
            }
        }
        self.queued == BATCH || self.waited >= (self.threshold / WAIT) as u64
    }

    /// Translates every queued hot block, writing their code into code memory together.
    fn translate_queued(&mut self, memory: &mut Memory) {
        for k in 0..self.queued {
            let Some(&(start, paged)) = self.queue.get(k) else { break };
            if self.cache.find(BlockKey::new(start, paged as u64)).is_none() {
                self.translate(memory, start, paged);
            }
        }
        self.write_staged();
        self.queued = 0;
        self.waited = 0;
    }

    /// Unlinks every slot if any block was removed since the links were last known good.
    fn unlink_if_removed(&mut self) {
        let stats = self.cache.stats();
        let removals = stats.invalidations + stats.evictions;
        if removals == self.removals {
            return;
        }
        self.removals = removals;
        let base = self.code.base();
        for (slots, meta) in self.links.iter_mut().zip(self.meta.iter()) {
            *slots = [(base + meta.code + meta.unlinked as usize) as u64; emit::LINKS];
        }
        // Every target cache entry made so far misses from now on (a full clear when the tag wraps around).
        self.jump_tag = self.jump_tag.wrapping_add(1 << TAG_SHIFT);
        if self.jump_tag == 0 {
            *self.jumps = [[[EMPTY_KEY, 0]; JUMPS]; 2];
        }
        // Predictions lead through link slots, which may now belong to other blocks.
        *self.ring = Ring::EMPTY;
        self.stats.unlink_alls += 1;
    }

    /// Notes in the target cache that the live block `block` lies at RAM offset `start` (data accesses `paged`
    /// or not): translated code that finds an indirect jump's target at `start` enters it at its chained entry.
    fn fill(&mut self, start: u64, paged: bool, block: crate::cache::BlockId) {
        if start >= EMPTY_KEY || self.removals != self.cache.stats().invalidations + self.cache.stats().evictions {
            return;
        }
        let Some(meta) = self.meta.get(block.index()) else { return };
        let host = (self.code.base() + meta.code) as u64;
        if let Some(entry) = self.jumps[paged as usize].get_mut((start >> 1) as usize & (JUMPS - 1)) {
            *entry = [start ^ self.jump_tag, host];
            self.stats.jump_fills += 1;
        }
    }

    /// Links the slot at address `slot` (an unlinked exit some block just left through, or a return prediction
    /// that led through it) to `block`, the block found at RAM offset `start` next, if that is the RAM offset the
    /// slot's exit leads to. Nothing was removed since the exit (else every slot was unlinked and `slot` may
    /// belong to a block that is gone: it is left alone).
    fn link(&mut self, slot: u64, block: crate::cache::BlockId, start: u64) {
        if self.cache.stats().invalidations + self.cache.stats().evictions != self.removals {
            return;
        }
        let Some(meta) = self.meta.get(block.index()) else { return };
        let target = (self.code.base() + meta.code) as u64;
        let first = self.links.as_ptr() as u64;
        let Some(index) = slot.checked_sub(first).map(|offset| offset / 8) else { return };
        let (owner, k) = (index as usize / emit::LINKS, index as usize % emit::LINKS);
        if self.meta.get(owner).and_then(|meta| meta.targets.get(k)) != Some(&start) {
            return;
        }
        if let Some(word) = self.links.as_flattened_mut().get_mut(index as usize) {
            *word = target;
            self.stats.links += 1;
        }
    }

    /// Whether `hart`'s last run spent its budget at `pc` (the note is used up).
    fn stopped_here(&mut self, hart: &Hart) -> bool {
        let slot = &mut self.stopped[hart.config.hart_id as usize % STOP_SLOTS];
        let here = *slot == Some(hart.pc);
        *slot = None;
        here
    }

    fn run_blocks(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        let path = memory.data_path(hart);
        let paged = path.paged;
        // Unpaged blocks compile the window in: another one (a locked PMP entry, another real map: a few times in
        // a machine's life, if ever) drops every block.
        if !paged {
            let window = Window::of(&path, memory.ram.size());
            if window != self.window {
                self.window = window;
                self.cache.invalidate_all();
                self.stats.full_invalidations += 1;
            }
        }
        let mut remaining = budget;
        let mut retired_in_blocks = 0u64;
        // Whether the last run stopped inside a block: its rest runs on the cold tier, not taken for a block start.
        let mut finishing = self.stopped_here(hart);
        // The link slot of the unlinked exit the last block left through, to link to the block found next.
        let mut pending_link = None;
        // The RAM offset of the pc when the cold tier runs the next block, and whether that block heats up
        // towards translation (not when it starts inside a translated block: the rest of a block a budget ended
        // in, or the tail of one the budget does not cover).
        let mut cold = None;
        // The translation context may differ from the last run's: no prediction made then holds.
        *self.ring = Ring::EMPTY;
        let (fetch_paged, fetch_base, fetch_size, fetch_host) = path.raw_fetch();
        // The view of the soft TLB paged blocks look loads and stores up in, and the target cache probe paged
        // fetches (translated code never changes the keys or flushes the TLB: that leaves the engine, and the
        // next run takes the view again).
        let (view, view_tag) = if paged || fetch_paged { memory.tlb.view(path.keys()) } else { (0, 0) };
        // Whether the last thing run was a translated block (its exit led here, to the dispatcher).
        let mut left_code = false;
        let exit = loop {
            if remaining == 0 {
                break Exit::BudgetExhausted;
            }
            self.stats.dispatches += 1;
            // Finished translations first, so that a write noted after one's watch drops it before it runs.
            if self.install_due() {
                self.install_finished(memory);
            }
            if memory.ram.has_dirty_code() {
                self.invalidate_written_code(memory);
            }
            let pc = hart.pc;
            let start = match memory.fast_fetch(&path, pc) {
                Some(start) => Some(start),
                None => match memory.translate_page(hart, pc, 2, AccessType::Fetch) {
                    // The walk may have set A/D bits in a page holding code: look again.
                    Ok(_) if memory.ram.has_dirty_code() => continue,
                    Ok((Target::Ram(start), true)) => Some(start),
                    // PMP finer than the page, a device, a fault: the interpreter finds out exactly.
                    _ => None,
                },
            };
            let block = match start {
                Some(start) => match self.cache.lookup(BlockKey::new(start, paged as u64)) {
                    Some(block) => {
                        finishing = false;
                        self.meta.get(block.index()).map(|meta| (block, meta.insts))
                    }
                    None if finishing => {
                        cold = Some((start, false));
                        None
                    }
                    None => match self.heat.get(heat_slot(start)).copied() {
                        // Cold code runs on the cold tier until it has run `HOT` instructions.
                        Some(heat) if heat < self.threshold => {
                            cold = Some((start, true));
                            None
                        }
                        // Hot, with a service: its job goes off this thread at once, and it runs on the cold tier
                        // until its translation is installed.
                        _ if self.service.is_some() => {
                            self.submit(memory, start, paged);
                            cold = Some((start, true));
                            None
                        }
                        // Hot: queued, and translated with the blocks queued with it once the queue is due;
                        // until then it runs on the cold tier.
                        _ if !self.enqueue(start, paged) => {
                            cold = Some((start, true));
                            None
                        }
                        _ => {
                            self.translate_queued(memory);
                            let block = self.cache.lookup(BlockKey::new(start, paged as u64));
                            block.and_then(|block| Some((block, self.meta.get(block.index())?.insts)))
                        }
                    },
                },
                None => None,
            };
            let from_slot = pending_link.is_some();
            if let (Some(start), Some((block, _))) = (start, block) {
                if let Some(slot) = pending_link.take() {
                    self.link(slot, block, start);
                }
                self.fill(start, paged, block);
                // Translated code that left for this block (a target cache probe that missed, say) finds its
                // page in the view's fetch half next time.
                if left_code && fetch_paged {
                    memory.tlb.fill_views(pc, memory.ram.size());
                }
            }
            pending_link = None;
            let entry = block.and_then(|(block, insts)| {
                let meta = self.meta.get(block.index())?;
                (insts as u64 <= remaining || self.overrun).then_some(meta.code + meta.entry as usize)
            });
            // With overrun allowed, a block longer than the budget left runs whole, and nothing after it.
            let given = match block {
                Some((_, insts)) if insts as u64 > remaining => insts as u64,
                _ => remaining,
            };
            if let (Some(start), Some(_), None) = (start, block, entry) {
                // The tail of a budget: the cold tier runs the first instructions of the block, predecoded once
                // and kept (the interpreter would decode each every time), and the next run resumes inside the
                // cold tier's block where this one stops.
                cold = Some((start, false));
            }
            let Some(offset) = entry else {
                // Cold code: one block on the threaded engine (it counts it in `instret`), so the next look-up is
                // at a block start. It runs nothing while written code is pending: the loop drops that first.
                if let Some((start, heats)) = cold.take() {
                    // The cold tier runs on through blocks it has built until it reaches a translated or hot one.
                    let mut hook = Heating {
                        heat: &mut self.heat,
                        cache: &self.cache,
                        meta: &self.meta,
                        paged,
                        threshold: self.threshold,
                        queued: self.queued > 0,
                        waited: &mut self.waited,
                        in_flight: &self.in_flight,
                        service: self.service.as_deref().filter(|_| self.in_flight_count > 0),
                        first: Some((start, heats, if left_code { EXIT_COST } else { 0 })),
                    };
                    let (retired, left) = self.cold.run_cold(hart, memory, remaining, &mut hook);
                    self.stats.cold_instructions += retired;
                    self.stats.cold_runs += 1;
                    self.stats.cold_from_code += left_code as u64;
                    self.stats.cold_tails += block.is_some() as u64;
                    if !heats {
                        // The rest of a block: the cold tier's block ends at a branch or jump, where blocks start.
                        finishing = false;
                    }
                    remaining -= retired;
                    left_code = false;
                    match left {
                        Some(exit) => break exit,
                        None => continue,
                    }
                }
                // One instruction through the interpreter (it counts it in `instret`).
                self.stats.stepped += 1;
                left_code = false;
                match interp::step(hart, memory) {
                    Ok(()) => remaining -= 1,
                    Err(exit) => break exit,
                }
                continue;
            };
            let mut env = Env {
                entry_pc: pc,
                pc,
                retired: 0,
                budget: given,
                link: 0,
                x: hart.x.as_mut_ptr(),
                ram: memory.ram.raw_bytes(),
                ram_len: memory.ram.size(),
                view,
                view_tag,
                watch: 0,
                watch_pages: 0,
                granules: 0,
                granule_pages: 0,
                fetch_base,
                fetch_size,
                fetch_host,
                fetch_paged: fetch_paged as u64,
                jumps: 0,
                jump_tag: 0,
                ring: 0,
                hart: core::ptr::null_mut(),
                memory: core::ptr::null_mut(),
                counts: [0; 4],
                inline_csr: self.inline_csr.as_ref().map_or(core::ptr::null(), |reads| reads as *const InlineCsr),
                served_inline: &mut self.served_inline,
                exit: Exit::BudgetExhausted,
            };
            (env.watch, env.watch_pages) = memory.ram.raw_code_watch();
            (env.granules, env.granule_pages) = memory.ram.raw_code_granules();
            env.hart = hart;
            env.memory = (memory as *mut Memory).cast();
            // No link, target cache entry or prediction may lead to a block removed since the last call.
            self.unlink_if_removed();
            env.jumps = self.jumps[paged as usize].as_ptr() as usize;
            env.jump_tag = self.jump_tag;
            env.ring = &mut *self.ring as *mut Ring as usize;
            let address = self.code.base().wrapping_add(offset);
            if left_code {
                match from_slot {
                    true => self.stats.slot_misses += 1,
                    false => self.stats.other_misses += 1,
                }
            }
            // The one call into generated code.
            #[allow(unsafe_code)]
            // SAFETY: `address` is the entry of the host code `translate` wrote for this live block (the cache
            // refuses stale blocks and `CODE <= code.len()`); the `CodeMemory` contract makes it executable and
            // exactly those bytes. Its link slots lead only to live blocks of this context tag in the same RAM
            // page (slots are unlinked on any removal, just checked, and linked only to the block looked up at
            // the exit's target); the target cache entries carrying `env.jump_tag` and the ring's predictions
            // (emptied on any removal and at the run's start) lead only to live blocks and slots of live blocks;
            // each block checks the budget left before it runs. The code follows the System V ABI (callee-saved registers restored, stack
            // aligned at calls) and only touches `env`, guest registers through `env.x`, guest RAM through
            // `env.ram` below `env.ram_len`, the soft TLB read-only, and otherwise calls the helpers below,
            // which reach the hart and memory through the pointers just derived from the live `&mut` borrows,
            // not used otherwise until the call returns.
            let status = unsafe {
                let function: BlockFn = core::mem::transmute::<usize, BlockFn>(address);
                function(&mut env)
            };
            self.stats.blocks_entered += 1;
            self.stats.ring_hits += env.counts[COUNT_RING_HITS];
            self.stats.ring_misses += env.counts[COUNT_RING_MISSES];
            self.stats.probes += env.counts[COUNT_PROBES];
            self.stats.probe_hits += env.counts[COUNT_PROBE_HITS];
            hart.pc = env.pc;
            let retired = given.saturating_sub(env.budget);
            retired_in_blocks += retired;
            remaining = remaining.saturating_sub(retired);
            pending_link = (env.link != 0).then_some(env.link);
            left_code = true;
            if status == status::EXIT {
                break env.exit;
            }
        };
        // (A budget spent by a translated block ends at a block boundary: only the cold tier stops inside one.)
        if exit == Exit::BudgetExhausted && !left_code {
            self.stopped[hart.config.hart_id as usize % STOP_SLOTS] = Some(hart.pc);
        }
        // Written code is dropped before leaving, so that nothing depends on the embedder keeping the RAM's
        // note of written pages for the next run.
        if memory.ram.has_dirty_code() {
            self.invalidate_written_code(memory);
        }
        hart.instret = hart.instret.wrapping_add(retired_in_blocks);
        exit
    }
}

/// The translator's side of a cold tier run ([`Threaded::run_cold`]): blocks heat up by what they cost there,
/// and the cold tier stops before a translated block, a hot one (to be translated) or when the queue of hot
/// blocks is due.
struct Heating<'a, const CODE: usize, const BLOCKS: usize, const MAP: usize> {
    heat: &'a mut [u16; HEAT_SLOTS],
    cache: &'a CodeCache<(), CODE, BLOCKS, MAP>,
    meta: &'a [BlockMeta; BLOCKS],
    paged: bool,
    threshold: u16,
    queued: bool,
    waited: &'a mut u64,
    /// The heat slots of blocks whose jobs are in flight, and the service, while any is.
    in_flight: &'a [u64; HEAT_SLOTS / 64],
    service: Option<&'a dyn TranslationService>,
    /// The first block: the RAM offset of the pc it was entered at, whether it heats (not the rest of a block
    /// or the tail of a budget) and what the round trip to it cost besides its instructions.
    first: Option<(u64, bool, u64)>,
}

impl<const CODE: usize, const BLOCKS: usize, const MAP: usize> ColdHook for Heating<'_, CODE, BLOCKS, MAP> {
    fn ran(&mut self, start: u64, retired: u64) {
        let (start, heats, extra) = self.first.take().unwrap_or((start, true, 0));
        // What the cold tier cost, in instructions: at least one (an entry that retired nothing, an exit at once,
        // still warms the block), and the round trip when translated code left for it.
        let cost = retired.max(1) + extra;
        if self.queued {
            *self.waited += cost;
        }
        if let Some(heat) = self.heat.get_mut(heat_slot(start)).filter(|_| heats) {
            *heat = heat.saturating_add(cost.min(u16::MAX as u64) as u16);
        }
    }

    fn enter(&mut self, next: u64, budget: u64) -> bool {
        // A finished translation waits: the dispatcher installs it.
        if self.service.is_some_and(|service| service.ready() > 0) {
            return false;
        }
        // Only a hot block can have been translated (heat drops only for blocks not translated; a threshold
        // raised since only leaves a translated block to the cold tier), so cold code is told apart without the
        // map table.
        let slot = heat_slot(next);
        if self.heat.get(slot).is_some_and(|&heat| heat < self.threshold) {
            return !(self.queued && *self.waited >= (self.threshold / WAIT) as u64);
        }
        // A translated block the budget covers runs translated; the tail of a budget stays here.
        match self.cache.find(BlockKey::new(next, self.paged as u64)) {
            Some(block) => self.meta.get(block.index()).is_some_and(|meta| meta.insts as u64 > budget),
            // Hot and not translated: on here while its job is in flight, else the dispatcher translates it or
            // submits its job.
            None => self.in_flight.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0),
        }
    }
}

/// `make()`'s value on the heap. Never inlined, so that only one table at a time is on the stack while
/// [`Dbt::new`] builds them (their sum is more than a test thread's stack).
#[inline(never)]
fn boxed<T>(make: impl FnOnce() -> T) -> Box<T> {
    Box::new(make())
}

/// The M-mode RAM window (see [`DataPath`]) that blocks whose data accesses are not paged compile in as constants:
/// guest real `[base, base + limit)` is RAM offset `host + (address - base)`. A limit of 0: no window, every
/// access takes the slow path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub limit: u64,
    pub host: u64,
}

impl Window {
    /// The window of `path`, clamped so that an access of up to 8 bytes below the limit stays in RAM.
    fn of(path: &DataPath, ram_len: u64) -> Window {
        let room = ram_len.saturating_sub(path.window_host).saturating_sub(7);
        Window { base: path.window_base, limit: path.window_limit.min(room), host: path.window_host }
    }
}

impl<M: CodeMemory, const CODE: usize, const BLOCKS: usize, const MAP: usize> Engine for Dbt<M, CODE, BLOCKS, MAP> {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        // A trigger or software breakpoint that may fire in this mode: every instruction through the
        // interpreter, which checks them (no translated code skips a match).
        if hart.triggers.armed(hart.privilege) {
            self.stats.stepped += budget;
            return interp::run_steps(hart, memory, budget);
        }
        self.stats.runs += 1;
        self.run_blocks(hart, memory, budget)
    }

    fn set_guest_time(&mut self, now: u64) {
        if let (Some(reads), 1..) = (self.inline_csr.as_mut(), self.time_window) {
            let clock = (reads.clock)();
            reads.offset = clock.wrapping_sub(now);
            reads.until = clock.saturating_add(self.time_window);
            self.cold.serve_csr_inline(Some(*reads));
        }
    }

    fn take_time_served(&mut self) -> Option<u64> {
        let mut served = core::mem::take(&mut self.served_inline);
        served.add(&self.cold.take_served_inline());
        (served.time_reads > 0).then_some(served.latest_time)
    }
}

// ---- helpers called from translated code ----

/// The packed operands of a helper call: `low` (a register or an operation), `width`, the instruction's length
/// and its offset from the block's start, and `index`, the instructions before it in the block.
pub(crate) const fn pack(low: u8, width: u8, len: u8, offset: u16, index: u16) -> u64 {
    low as u64 | (width as u64) << 8 | (len as u64) << 16 | (offset as u64) << 24 | (index as u64) << 40
}

struct Unpacked {
    low: u8,
    width: usize,
    len: u64,
    offset: u64,
    index: u64,
}

fn unpack(packed: u64) -> Unpacked {
    Unpacked {
        low: packed as u8,
        width: (packed >> 8) as u8 as usize,
        len: (packed >> 16) as u8 as u64,
        offset: (packed >> 24) as u16 as u64,
        index: (packed >> 40) as u16 as u64,
    }
}

/// Leaves the engine from instruction `at` of a block with `exit`.
fn leave(env: &mut Env, at: &Unpacked, exit: Exit) -> u32 {
    env.pc = env.entry_pc.wrapping_add(at.offset);
    env.retired = at.index;
    env.exit = exit;
    status::EXIT
}

/// Ends the block after instruction `at`, which wrote a watched code page.
fn dirty(env: &mut Env, at: &Unpacked) -> u32 {
    env.pc = env.entry_pc.wrapping_add(at.offset + at.len);
    env.retired = at.index + 1;
    status::DIRTY
}

/// A load the inlined fast path did not serve (a TLB miss, a page-crossing access, a device, a fault): the
/// interpreter's [`Memory::load`], the value written to `rd`.
pub(crate) extern "sysv64" fn load_slow(env: *mut Env, addr: u64, packed: u64) -> u32 {
    // Translated code's raw `Env` back to the borrows it was made from.
    #[allow(unsafe_code)]
    // SAFETY: translated code passes the `Env` it was called with, whose `hart` and `memory` were derived from
    // the engine's live borrows just before the call and are not used by anything else during it.
    let (env, hart, memory) = unsafe { (&mut *env, &mut *(*env).hart, &mut *(*env).memory) };
    let at = unpack(packed);
    let width = LoadWidth::ALL.get(at.width).copied().unwrap_or(LoadWidth::D);
    let size = width.bytes();
    let signed = matches!(width, LoadWidth::B | LoadWidth::H | LoadWidth::W | LoadWidth::D);
    match memory.load(hart, addr, size, AccessType::Load) {
        Ok(Loaded::Value(value)) => {
            hart.set_x(at.low, extend(value, size as u8, signed));
            if env.view != 0 {
                memory.tlb.fill_views(addr, env.ram_len);
            }
        }
        Ok(Loaded::Device(gpa)) => {
            return leave(env, &at, mmio(gpa, size, MmioKind::Load { rd: at.low, signed }, at.len));
        }
        Err(fault) => return leave(env, &at, exception(fault)),
    }
    // The walk may have set A/D bits in a page that holds code.
    if memory.ram.has_dirty_code() {
        return dirty(env, &at);
    }
    status::CONTINUE
}

/// A store the inlined fast path did not serve (a TLB miss, a page-crossing access, a watched code page, a
/// device, a fault): the interpreter's [`Memory::store`] of register `low`.
pub(crate) extern "sysv64" fn store_slow(env: *mut Env, addr: u64, packed: u64) -> u32 {
    // Translated code's raw `Env` back to the borrows it was made from.
    #[allow(unsafe_code)]
    // SAFETY: as in `load_slow`.
    let (env, hart, memory) = unsafe { (&mut *env, &mut *(*env).hart, &mut *(*env).memory) };
    let at = unpack(packed);
    let width = StoreWidth::ALL.get(at.width).copied().unwrap_or(StoreWidth::D);
    let size = width.bytes();
    let value = hart.x(at.low);
    match memory.store(hart, addr, size, value) {
        Ok(None) => {
            if env.view != 0 {
                memory.tlb.fill_views(addr, env.ram_len);
            }
        }
        Ok(Some(gpa)) => {
            let value = value & interp::mask(width);
            return leave(env, &at, mmio(gpa, size, MmioKind::Store { value }, at.len));
        }
        Err(fault) => return leave(env, &at, exception(fault)),
    }
    if memory.ram.has_dirty_code() {
        return dirty(env, &at);
    }
    status::CONTINUE
}

/// An instruction without a translation, through the interpreter's [`step`](interp::step): it retires (counted
/// by the block, not by `step`), or the block leaves with its exit.
pub(crate) extern "sysv64" fn step(env: *mut Env, packed: u64) -> u32 {
    // Translated code's raw `Env` back to the borrows it was made from.
    #[allow(unsafe_code)]
    // SAFETY: as in `load_slow`.
    let (env, hart, memory) = unsafe { (&mut *env, &mut *(*env).hart, &mut *(*env).memory) };
    let at = unpack(packed);
    hart.pc = env.entry_pc.wrapping_add(at.offset);
    match interp::step(hart, memory) {
        Ok(()) => {
            hart.instret = hart.instret.wrapping_sub(1);
            if memory.ram.has_dirty_code() {
                return dirty(env, &at);
            }
            status::CONTINUE
        }
        Err(exit) => {
            if let (Exit::System { inst: Inst::Csr { op, rd, src, csr }, .. }, false) = (exit, env.inline_csr.is_null())
            {
                #[allow(unsafe_code)]
                // SAFETY: `run_blocks` points both at its engine's fields, which nothing else touches until the
                // block returns.
                let (reads, served) = unsafe { (&*env.inline_csr, &mut *env.served_inline) };
                if let Some(value) = reads.serve(hart, op, src, csr) {
                    // Served: it retires as the block's (charged at its entry), without leaving, and the pc moves
                    // past it as after any step (a block ending in an instruction that straddles a page takes
                    // its next pc from `hart.pc`).
                    served.note(csr, value);
                    hart.set_x(rd, value);
                    hart.pc = hart.pc.wrapping_add(at.len);
                    return status::CONTINUE;
                }
            }
            leave(env, &at, exit)
        }
    }
}

/// The M-extension operations x86-64 has no exact instruction for (division with RISC-V's results for zero and
/// overflow, `mulhsu`): the interpreter's [`alu`](interp::alu).
pub(crate) extern "sysv64" fn alu(op: u64, a: u64, b: u64) -> u64 {
    match OpKind::ALL.get(op as usize) {
        Some(&kind) => interp::alu(kind, a, b),
        None => 0,
    }
}

/// Entries of the soft TLB the inlined lookup indexes.
pub(crate) const TLB_INDEX_MASK: u64 = TLB_ENTRIES as u64 - 1;
