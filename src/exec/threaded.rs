//! The threaded engine: guest blocks predecoded once into ops that carry their operands and a direct pointer to
//! their handler, kept in the fixed-size code cache and run without decoding or a central switch.
//!
//! Blocks are keyed by where their bytes lie in RAM (the host offset of their first instruction), never by a
//! virtual address, so a change of address space or privilege can never run a stale block: a block is entered
//! only at the pc's actual RAM offset in the current context — translated afresh, or known without a walk
//! because the pc stays in the page the previous block was entered through, or because the fast fetch path (a
//! soft TLB hit, or the M-mode RAM window) vouches for it — and a chained exit is followed only when its
//! recorded RAM offset equals that. Ops get the pc of their instruction from the block loop. A block never
//! crosses a page and runs on past up to two branches not taken; the bytes a block was decoded from are watched
//! by [`Ram`](crate::mem::Ram), so any write to them — a store by any hart or engine, a device's DMA — invalidates
//! the page's blocks before the next block runs, and a store that hits watched code ends the current block at
//! once. With a granular watch, writes to the rest of the page (data beside code) invalidate nothing. Within one [`Engine::run`] the translation context cannot change (whatever changes it leaves the
//! engine), so loads and stores take the fast path of [`DataPath`] worked out at its start. A run whose budget
//! ends inside a block notes the pc, and that hart's next run there goes on with the rest of the block (the VM
//! ends turns at any instruction; a block built at each such pc would crowd the cache). This engine never
//! emulates a privileged instruction: those, and every instruction without a fast handler (AMOs, floating
//! point, ...), run through the reference interpreter's [`step`](super::interp::step), so both engines share
//! one definition of them; it must never run a block whose bytes may have changed, nor let a guest make it panic.
//! While a debug trigger or a software breakpoint is armed for the current mode ([`Triggers::armed`]), blocks
//! are entered one at a time and one holding an armed execute address is stepped through the interpreter, and
//! while a load/store trigger is armed every instruction is: no block runs past an armed address and no fast
//! load/store path skips a match.
//!
//! [`Triggers::armed`]: crate::debug::Triggers::armed

use super::interp::{self, alu, alu_imm, branch_taken, exception, mmio};
use super::Engine;
use crate::cache::{BlockId, BlockKey, CodeCache, Eviction, ExitSlot, EXITS};
use crate::hart::{Exception, Hart};
use crate::isa::{self, BranchCond, CsrOp, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::mmu::{DataPath, Loaded, Memory, Target};
use crate::mem::sv39::AccessType;
use crate::mem::{DirtyCode, DIRTY_CAPACITY, PAGE_SIZE};
use crate::trap::{extend, Exit, MmioKind};

/// Longest block, in instructions: bounds decode work and the latency of a budget check.
pub const MAX_BLOCK: usize = 64;

/// How the engine's code cache makes room: FIFO over four regions. Measured by `trapeze bench` with caches too
/// small for the working set, it rebuilds up to 35% fewer blocks than flush-all and runs up to 5% fewer host
/// instructions; with a cache that holds the working set the two are the same (README, "Benchmarks").
pub const EVICTION: Eviction = Eviction::Fifo { regions: 4 };

/// What a handler tells the block loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flow {
    /// The instruction retired and did not change the pc's course; go on with the next op (the loop moves its
    /// pc past this op).
    Next,
    /// The instruction retired and set `hart.pc` (a control transfer): the block ends here.
    End,
    /// The instruction retired, set `hart.pc` past itself and wrote a watched code page: the block ends here and
    /// the engine drops the written pages' blocks before anything else runs.
    Dirty,
    /// The instruction needs the dispatcher: nothing of it happened, `hart.pc` points at it and the exit is in
    /// [`Ctx`].
    Exit,
}

/// What handlers share besides the hart during one [`Engine::run`].
pub struct Ctx<'m, 'a> {
    memory: Memory<'m, 'a>,
    /// The fast load/store path of this run (the translation context cannot change inside a run).
    path: DataPath,
    /// The exit a handler returned [`Flow::Exit`] for.
    exit: Exit,
    /// Whether CSR accesses are served in the engine, and the clock for `time` (see [`InlineCsr`]).
    inline_csr: Option<InlineCsr>,
    /// CSR accesses served in the engine during this run.
    served_inline: ServedInline,
}

impl<'m, 'a> Ctx<'m, 'a> {
    /// The context of one run over `memory` (reborrowed) for `hart`, serving CSR accesses as `inline_csr` says.
    fn new(hart: &Hart, memory: &'m mut Memory<'_, 'a>, inline_csr: Option<InlineCsr>) -> Self {
        let path = memory.data_path(hart);
        let memory = Memory { ram: &mut *memory.ram, realmap: memory.realmap, tlb: &mut *memory.tlb };
        Self { memory, path, exit: Exit::BudgetExhausted, inline_csr, served_inline: ServedInline::default() }
    }
}

/// CSR accesses the engine served itself ([`InlineCsr`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServedInline {
    /// Every CSR access served.
    pub accesses: u64,
    /// The reads of `time` among them.
    pub time_reads: u64,
    /// The largest `time` value served (0 when none was).
    pub latest_time: u64,
}

impl ServedInline {
    /// Counts one access to `csr` served with `value`.
    pub(crate) fn note(&mut self, csr: u16, value: u64) {
        self.accesses += 1;
        if csr == crate::isa::csr::TIME {
            self.time_reads += 1;
            self.latest_time = value;
        }
    }

    /// Adds a run's accesses to these.
    pub(crate) fn add(&mut self, run: &ServedInline) {
        self.accesses += run.accesses;
        self.time_reads += run.time_reads;
        self.latest_time = self.latest_time.max(run.latest_time);
    }
}

/// Lets the engine serve two kinds of CSR access itself instead of leaving for the dispatcher, where the result
/// is exactly the dispatcher's, so only timing changes: an access that only reads (`csrr`: `csrrs`/`csrrc` from
/// `x0`, or with a zero immediate), and a set or clear of `sstatus.SIE` alone that makes no interrupt pending
/// (`inline_sie_toggle`). A read that would fault, and a read of `cycle`, `instret` or their machine
/// and performance-counter siblings (the engine brings `instret` up to date only at the end of a run), still
/// leaves. `time` is read from a live clock while its value is before `until`, the host's next event (the end of
/// the time quantum, which comes no later than the guest's next timer deadline): past it, the read leaves, so the
/// dispatcher's path brings the devices up to date and a timer that has fired is taken at once.
///
/// A host enables it where leaving is dear and the clock is cheap to read (the native board's excursions);
/// without it, every CSR access leaves, as the interpreter's does.
#[derive(Debug, Clone, Copy)]
pub struct InlineCsr {
    /// The host clock, in ticks of the guest's timebase.
    pub clock: fn() -> u64,
    /// The guest's `time` is `clock() - offset`.
    pub offset: u64,
    /// Host clock value from which `time` reads leave the engine.
    pub until: u64,
}

impl InlineCsr {
    /// Serves reads and `sstatus.SIE` toggles, never `time` (every read of it leaves): for a host that keeps
    /// the guest's time in its run loop, which brings it up to date at each exit.
    pub const WITHOUT_TIME: InlineCsr = InlineCsr { clock: || 0, offset: 0, until: 0 };

    /// Serves the CSR access `op` (source register or immediate `src`) of `csr` on `hart` if it is one of the two
    /// kinds above: the value for `rd`, with any write done; `None` (nothing changed) when it must leave.
    #[inline(always)]
    pub fn serve(&self, hart: &mut Hart, op: CsrOp, src: u8, csr: u16) -> Option<u64> {
        inline_read(hart, self, op, src, csr).or_else(|| inline_sie_toggle(hart, op, src, csr))
    }
}

/// A handler: executes one predecoded instruction at guest pc `pc` (the block loop tracks the pc; `hart.pc`
/// is only brought up to date when the handler ends the block or leaves the engine).
pub type Handler = fn(&mut Hart, &mut Ctx<'_, '_>, &Op, u64) -> Flow;

/// One predecoded instruction.
#[derive(Clone, Copy)]
pub struct Op {
    pub handler: Handler,
    pub rd: u8,
    pub rs1: u8,
    pub rs2: u8,
    /// Instruction length in bytes (2 or 4).
    pub len: u8,
    pub imm: i32,
}

impl core::fmt::Debug for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Op").field("rd", &self.rd).field("rs1", &self.rs1).field("len", &self.len).finish()
    }
}

/// A 4-byte instruction the interpreter runs as a block of its own (one straddling a page, say).
const FALLBACK_4: Op = Op { handler: fallback_end, rd: 0, rs1: 0, rs2: 0, len: 4, imm: 0 };

/// Counters of the engine's work, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub blocks_built: u64,
    pub blocks_entered: u64,
    /// Block entries through a chained exit (no translation, no map lookup).
    pub blocks_chained: u64,
    pub pages_invalidated: u64,
    pub full_invalidations: u64,
}

/// The threaded engine over a code cache of `OPS` ops in `BLOCKS` blocks with a `MAP`-slot map table.
pub struct Threaded<const OPS: usize, const BLOCKS: usize, const MAP: usize> {
    cache: CodeCache<Op, OPS, BLOCKS, MAP>,
    stats: EngineStats,
    /// The pc at which each hart's last run spent its budget (slot `hart_id % STOP_SLOTS`), maybe inside a
    /// block: the hart's next run there goes on with the rest of that block instead of building one that starts
    /// in its middle (the VM ends turns wherever the budget runs out; a fragment per turn would crowd the cache).
    stopped: [Option<u64>; STOP_SLOTS],
    /// The pages whose blocks were dropped because they were written, since [`Threaded::take_invalidated`] last
    /// asked: the engine consumes the RAM's dirty list, and a host that also watches pages through it (the
    /// native board's patch table) learns here of the writes the engine saw first.
    invalidated: DirtyCode,
    /// The pages the engine started watching (it decoded code there) since [`Threaded::take_watched`] last asked:
    /// a host that also lets a real CPU write guest RAM (the native board) must take native write access away
    /// from them, since a native store bypasses the watch.
    watched: DirtyCode,
    /// CSR accesses served in the engine, when the host allows them ([`Threaded::serve_csr_inline`]).
    inline_csr: Option<InlineCsr>,
    /// CSR accesses served in the engine since [`Threaded::take_served_inline`] last asked.
    served_inline: ServedInline,
}

const NO_PAGES: DirtyCode = DirtyCode::Pages { pages: [0; DIRTY_CAPACITY], len: 0 };

/// Adds `page` to a page log (`None`, or a full log: every page).
fn note_page(log: &mut DirtyCode, page: Option<u64>) {
    match (&mut *log, page) {
        (DirtyCode::Pages { pages, len }, Some(page)) if *len < pages.len() => {
            if !pages[..*len].contains(&page) {
                pages[*len] = page;
                *len += 1;
            }
        }
        (log, _) => *log = DirtyCode::All,
    }
}

/// Harts whose budget stop [`Threaded`] remembers (more share slots, and only lose the shortcut).
const STOP_SLOTS: usize = 8;

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// An engine with an empty cache (`const`, so a board can keep it in a `static`).
    pub const fn new() -> Self {
        Self {
            cache: CodeCache::with_eviction(FALLBACK_4, EVICTION),
            stats: EngineStats {
                blocks_built: 0,
                blocks_entered: 0,
                blocks_chained: 0,
                pages_invalidated: 0,
                full_invalidations: 0,
            },
            stopped: [None; STOP_SLOTS],
            invalidated: NO_PAGES,
            watched: NO_PAGES,
            inline_csr: None,
            served_inline: ServedInline { accesses: 0, time_reads: 0, latest_time: 0 },
        }
    }

    /// Serves CSR accesses in the engine from now on ([`InlineCsr`]), or (`None`) leaves for every CSR access.
    pub fn serve_csr_inline(&mut self, reads: Option<InlineCsr>) {
        self.inline_csr = reads;
    }

    /// The CSR accesses served in the engine since the last call.
    pub fn take_served_inline(&mut self) -> ServedInline {
        core::mem::take(&mut self.served_inline)
    }

    /// The pages (RAM offset / 4096) the engine started watching since the last call ([`DirtyCode::All`] when it
    /// lost count); `None` when there are none.
    #[inline]
    pub fn take_watched(&mut self) -> Option<DirtyCode> {
        if let DirtyCode::Pages { len: 0, .. } = self.watched {
            return None;
        }
        Some(core::mem::replace(&mut self.watched, NO_PAGES))
    }

    fn note_watched(&mut self, page: u64) {
        note_page(&mut self.watched, Some(page));
    }

    /// The pages (RAM offset / 4096) whose blocks the engine dropped because they were written, since the last
    /// call ([`DirtyCode::All`] when it dropped everything or lost count); `None` when there are none, which is
    /// what a caller asking after every run sees almost always (answered without copying the list).
    #[inline]
    pub fn take_invalidated(&mut self) -> Option<DirtyCode> {
        if let DirtyCode::Pages { len: 0, .. } = self.invalidated {
            return None;
        }
        Some(core::mem::replace(&mut self.invalidated, NO_PAGES))
    }

    fn note_invalidated(&mut self, page: Option<u64>) {
        note_page(&mut self.invalidated, page);
    }

    /// The code cache (for its statistics).
    pub fn cache(&self) -> &CodeCache<Op, OPS, BLOCKS, MAP> {
        &self.cache
    }

    /// The code cache, to choose its eviction policy.
    pub fn cache_mut(&mut self) -> &mut CodeCache<Op, OPS, BLOCKS, MAP> {
        &mut self.cache
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Drops the blocks of every code page written since the last look.
    fn invalidate_written_code(&mut self, memory: &mut Memory) {
        self.invalidate_written_pages(memory.ram.take_dirty_code());
    }

    /// Drops the blocks of the code pages `written` (what [`Ram::take_dirty_code`](crate::mem::Ram) gave): for an
    /// embedder that takes the RAM's dirty list itself and shares it between engines (see
    /// [`run_one_block`](Self::run_one_block)).
    pub fn invalidate_written_pages(&mut self, written: DirtyCode) {
        match written {
            DirtyCode::All => {
                self.cache.invalidate_all();
                self.stats.full_invalidations += 1;
                self.note_invalidated(None);
            }
            dirty @ DirtyCode::Pages { .. } => {
                for &page in dirty.pages().unwrap_or(&[]) {
                    self.cache.invalidate_page(page * PAGE_SIZE);
                    self.stats.pages_invalidated += 1;
                    self.note_invalidated(Some(page));
                }
            }
        }
    }

    /// Decodes the block whose first instruction lies at RAM offset `start` and caches it.
    fn build(&mut self, memory: &mut Memory, start: u64) -> Option<BlockId> {
        let page_end = (start | (PAGE_SIZE - 1)) + 1;
        let mut ops = [FALLBACK_4; MAX_BLOCK];
        let mut count = 0;
        let max_ops = MAX_BLOCK.min(self.cache.max_block_ops()).max(1);
        let mut at = start;
        // Exits in `ExitSlot` order: taken, fall-through, then the branches the block runs on past.
        let mut exits = [None; EXITS];
        let mut sides = 0;
        let mut falls_through = true;
        // The words decoded, to check them again once watched (RAM shared with other threads).
        let mut words = [0u32; MAX_BLOCK];
        let mut decoded = 0;
        while count < max_ops && at < page_end {
            let low = memory.ram.load_at_offset(at, 2)? as u32;
            let (word, len) = if low & 3 != 3 {
                (low, 2)
            } else if at + 4 > page_end {
                // A 4-byte instruction straddling the page: the interpreter fetches it through the MMU, as a
                // block of its own.
                if count == 0 {
                    ops[0] = FALLBACK_4;
                    count = 1;
                    at += 4;
                    falls_through = false;
                }
                break;
            } else {
                (memory.ram.load_at_offset(at, 4)? as u32, 4)
            };
            let inst = isa::decode(word).inst;
            let (op, mut ends_block) = predecode(inst, word, len);
            if let Some(slot) = words.get_mut(decoded) {
                *slot = word;
                decoded += 1;
            }
            ops[count] = op;
            count += 1;
            // Where a direct jump or branch goes, as a RAM offset if the guest's mapping is linear there (always
            // within this page). Only a hint: a chained exit is followed only when the pc's actual RAM offset, as
            // the block entry works it out, equals it.
            let target = match inst {
                Inst::Jal { offset, .. } | Inst::Branch { offset, .. } => Some(at.wrapping_add(offset as i64 as u64)),
                _ => None,
            };
            at += len as u64;
            match inst {
                // A branch: the block runs on past it (its handler ends the block only when it is taken) while
                // a side exit slot is free for its target; else it is the block's last instruction.
                Inst::Branch { .. } => match exits.get_mut(ExitSlot::Side1 as usize + sides) {
                    Some(slot) if count < max_ops && at < page_end => {
                        if target.is_some() {
                            *slot = target;
                            sides += 1;
                        }
                    }
                    _ => {
                        exits[ExitSlot::Taken as usize] = target;
                        ends_block = true;
                    }
                },
                Inst::Jal { .. } => {
                    exits[ExitSlot::Taken as usize] = target;
                    falls_through = false;
                }
                Inst::Jalr { .. } => falls_through = false,
                _ => {}
            }
            if ends_block {
                break;
            }
        }
        exits[ExitSlot::FallThrough as usize] = (at < page_end && falls_through).then_some(at);
        let page = start / PAGE_SIZE;
        let newly_watched = !memory.ram.is_code_page(page);
        // Only the block's own bytes: with a granular watch, data beside them in the page stays data.
        if !memory.ram.watch_code(start, at - start) {
            return None;
        }
        // With shared RAM another thread may have written these bytes after they were read and before the watch
        // was set (its write then went unreported): read them again now that it is set, and keep nothing if they
        // changed (the watch is only ever set before the reads that count).
        if memory.ram.is_shared() && !Self::unchanged(memory, start, at, words.get(..decoded).unwrap_or(&[])) {
            return None;
        }
        if newly_watched {
            self.note_watched(page);
        }
        self.stats.blocks_built += 1;
        let guest_len = (at - start).min(PAGE_SIZE) as u32;
        self.cache.insert(BlockKey::new(start, 0), guest_len, exits, &ops[..count]).ok()
    }
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// Whether RAM `[start, end)` still holds the instruction `words` that [`build`](Self::build) decoded there
    /// (a trailing page-straddling instruction, whose word was never read, is not compared).
    fn unchanged(memory: &Memory, start: u64, end: u64, words: &[u32]) -> bool {
        let mut at = start;
        for &word in words {
            let Some(low) = memory.ram.load_at_offset(at, 2) else { return false };
            let (now, len) =
                if low & 3 != 3 { (low as u32, 2) } else { (memory.ram.load_at_offset(at, 4).unwrap_or(0) as u32, 4) };
            if now != word || at >= end {
                return false;
            }
            at += len;
        }
        true
    }
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Default for Threaded<OPS, BLOCKS, MAP> {
    fn default() -> Self {
        Self::new()
    }
}

/// The block that ran last in one [`Engine::run`] call: while the pc stays in its page, the page's translation
/// (and fetch permission) still holds, since anything that could change them leaves the engine.
#[derive(Clone, Copy)]
struct LastBlock {
    block: BlockId,
    /// The virtual pc and the RAM offset it started at.
    pc: u64,
    start: u64,
    /// Whether PMP lets the whole page be fetched in the current context.
    whole_page: bool,
}

/// How the slow block entry went.
enum Entry {
    /// Run this block.
    Block(LastBlock),
    /// Run this block from this op on (where a run stopped inside it).
    Resume(LastBlock, usize),
    /// The interpreter ran one instruction (it counted it in `instret`).
    Stepped,
    /// Something changed under the entry (the walk wrote a code page): look again.
    Retry,
    /// Leave the engine.
    Exit(Exit),
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Engine for Threaded<OPS, BLOCKS, MAP> {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        // A trigger or software breakpoint that may fire in this run's mode (which no instruction can change
        // inside a run) takes a slower path: with only execute matches armed, blocks run one at a time and a
        // block holding an armed address is stepped through the interpreter; with a load/store trigger armed,
        // every instruction is (the fast load/store paths check nothing). Unarmed, this test is the engine's
        // only cost of debugging.
        if hart.triggers.armed(hart.privilege) {
            if hart.triggers.only_execute_armed(hart.privilege) {
                return self.run_execute_armed(hart, memory, budget);
            }
            return interp::run_steps(hart, memory, budget);
        }
        self.run_blocks(hart, memory, budget)
    }
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// [`Engine::run`] with nothing armed: blocks hop along chained exits. Kept out of line so that its code is
    /// the same whatever the debugging paths beside it look like.
    #[inline(never)]
    fn run_blocks(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        let mut ctx = Ctx::new(hart, memory, self.inline_csr);
        let mut remaining = budget;
        let mut last: Option<LastBlock> = None;
        // Instructions retired by blocks (the interpreter counts its own in `instret`), block entries, chain hops.
        let (mut retired_in_blocks, mut entered, mut chained) = (0u64, 0u64, 0u64);
        let exit = 'run: loop {
            if remaining == 0 {
                break Exit::BudgetExhausted;
            }
            let mut current = match self.enter_slow(hart, &mut ctx.memory, last) {
                Entry::Block(current) => current,
                Entry::Resume(current, op) => {
                    // The rest of a block, then on the slow way (once a turn at most).
                    let (flow, retired) = self.run_rest(hart, &mut ctx, current.block, op, remaining);
                    retired_in_blocks += retired;
                    remaining -= retired;
                    entered += 1;
                    match flow {
                        Flow::Exit => break ctx.exit,
                        Flow::Dirty => last = None,
                        Flow::Next | Flow::End => last = Some(current),
                    }
                    continue;
                }
                Entry::Stepped => {
                    remaining -= 1;
                    last = None;
                    continue;
                }
                Entry::Retry => {
                    last = None;
                    continue;
                }
                Entry::Exit(exit) => break exit,
            };
            let Some(mut ops) = self.cache.ops(current.block) else {
                last = None;
                continue;
            };
            let mut page = current.start & !(PAGE_SIZE - 1);
            // Run blocks, hopping along chained exits: no code was written since the slow entry (a handler that
            // writes a watched page ends the block with `Flow::Dirty`), and the next pc's RAM offset is exact —
            // in the same page its translation and fetch permission hold, in another the fast fetch path (a TLB
            // hit or the M-mode window) vouches for both.
            loop {
                entered += 1;
                let ops_now = ops.get(..ops.len().min(remaining as usize)).unwrap_or(ops);
                let (flow, retired) = run_ops(hart, &mut ctx, ops_now);
                retired_in_blocks += retired;
                remaining -= retired;
                match flow {
                    Flow::Next | Flow::End => {}
                    Flow::Dirty => {
                        last = None;
                        continue 'run;
                    }
                    Flow::Exit => break 'run ctx.exit,
                }
                if remaining == 0 {
                    break 'run Exit::BudgetExhausted;
                }
                let pc = hart.pc;
                let start = if (pc ^ current.pc) < PAGE_SIZE {
                    current.whole_page.then_some(page | (pc & (PAGE_SIZE - 1)))
                } else {
                    ctx.memory.fast_fetch(&ctx.path, pc)
                };
                let Some(start) = start else {
                    last = Some(current);
                    continue 'run;
                };
                let (block, next_ops) = match self.cache.hop(current.block, start) {
                    Some(next) => {
                        chained += 1;
                        next
                    }
                    // Not chained (an indirect jump to a new target, say): the map table, and the exit is linked
                    // for next time. A block still to be built takes the slow way.
                    None => {
                        let Some(block) = self.cache.lookup(BlockKey::new(start, 0)) else {
                            last = Some(current);
                            continue 'run;
                        };
                        self.remember_exit(current.block, start, block);
                        match self.cache.ops(block) {
                            Some(ops) => (block, ops),
                            None => {
                                last = None;
                                continue 'run;
                            }
                        }
                    }
                };
                page = start & !(PAGE_SIZE - 1);
                current = LastBlock { block, pc, start, whole_page: true };
                ops = next_ops;
            }
        };
        if exit == Exit::BudgetExhausted {
            self.stopped[hart.config.hart_id as usize % STOP_SLOTS] = Some(hart.pc);
        }
        hart.instret = hart.instret.wrapping_add(retired_in_blocks);
        self.stats.blocks_entered += entered;
        self.stats.blocks_chained += chained;
        self.served_inline.add(&ctx.served_inline);
        exit
    }
}

/// Runs `ops` from `hart.pc`: the flow that ended them and how many instructions retired. When every op
/// returns [`Flow::Next`] the pc moves past the last one.
#[inline(always)]
fn run_ops(hart: &mut Hart, ctx: &mut Ctx, ops: &[Op]) -> (Flow, u64) {
    let mut pc = hart.pc;
    for (index, op) in ops.iter().enumerate() {
        let flow = (op.handler)(hart, ctx, op, pc);
        if flow != Flow::Next {
            return (flow, index as u64 + (flow != Flow::Exit) as u64);
        }
        pc = pc.wrapping_add(op.len as u64);
    }
    hart.pc = pc;
    (Flow::Next, ops.len() as u64)
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// [`Engine::run`] while only execute matches (software breakpoints, execute triggers) are armed: every
    /// block is entered the slow way (no chaining), and one whose guest bytes hold an address that may match
    /// runs through the interpreter, one checked instruction at a time; the others run as usual.
    #[inline(never)]
    fn run_execute_armed(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        // Debugging runs leave for every CSR access, as the interpreter does.
        let mut ctx = Ctx::new(hart, memory, None);
        let mut remaining = budget;
        let mut last: Option<LastBlock> = None;
        let (mut retired_in_blocks, mut entered) = (0u64, 0u64);
        let exit = loop {
            if remaining == 0 {
                break Exit::BudgetExhausted;
            }
            let current = match self.enter_slow(hart, &mut ctx.memory, last) {
                Entry::Block(current) => current,
                // The middle of a block: one checked instruction, then the slow way on.
                Entry::Resume(..) => {
                    match interp::step(hart, &mut ctx.memory) {
                        Ok(()) => remaining -= 1,
                        Err(exit) => break exit,
                    }
                    last = None;
                    continue;
                }
                Entry::Stepped => {
                    remaining -= 1;
                    last = None;
                    continue;
                }
                Entry::Retry => {
                    last = None;
                    continue;
                }
                Entry::Exit(exit) => break exit,
            };
            let guest_len = self.cache.block_info(current.block).map_or(PAGE_SIZE, |info| info.guest_len as u64);
            let ops = match self.cache.ops(current.block) {
                Some(ops) if !hart.triggers.execute_armed_in(hart.pc, guest_len, hart.privilege) => ops,
                // An armed address in the block (or no block after all): one checked instruction.
                _ => {
                    match interp::step(hart, &mut ctx.memory) {
                        Ok(()) => remaining -= 1,
                        Err(exit) => break exit,
                    }
                    last = None;
                    continue;
                }
            };
            entered += 1;
            let (flow, retired) = run_ops(hart, &mut ctx, ops.get(..ops.len().min(remaining as usize)).unwrap_or(ops));
            retired_in_blocks += retired;
            remaining -= retired;
            match flow {
                Flow::Next | Flow::End => last = Some(current),
                Flow::Dirty => last = None,
                Flow::Exit => break ctx.exit,
            }
        };
        hart.instret = hart.instret.wrapping_add(retired_in_blocks);
        self.stats.blocks_entered += entered;
        exit
    }

    /// The block at `hart.pc` the slow way: written code dropped first, the pc translated (unless it stays in
    /// the previous block's page), then the previous block's chained exit, the map table (linking the previous
    /// block's exit to it for next time), or a fresh build.
    #[inline(never)]
    fn enter_slow(&mut self, hart: &mut Hart, memory: &mut Memory, mut last: Option<LastBlock>) -> Entry {
        if memory.ram.has_dirty_code() {
            self.invalidate_written_code(memory);
            last = None;
        }
        let pc = hart.pc;
        let (start, whole_page) = match last.filter(|previous| (pc ^ previous.pc) < PAGE_SIZE) {
            Some(previous) => ((previous.start & !(PAGE_SIZE - 1)) | (pc & (PAGE_SIZE - 1)), previous.whole_page),
            None => match memory.translate_page(hart, pc, 2, AccessType::Fetch) {
                Ok((Target::Ram(offset), whole_page)) => (offset, whole_page),
                Ok((Target::Device(_), _)) => {
                    return Entry::Exit(Exit::Exception { cause: Exception::InstructionAccessFault, tval: pc });
                }
                Err(fault) => return Entry::Exit(exception(fault)),
            },
        };
        if memory.ram.has_dirty_code() {
            // The walk set A/D bits in a page that holds code.
            return Entry::Retry;
        }
        // The previous block's exit, in any page: `start` is the pc's actual RAM offset now.
        let chained = last.and_then(|previous| self.cache.chained(previous.block, start).ok());
        let block = match chained {
            Some(block) => block,
            None => {
                let block = match self.cache.lookup(BlockKey::new(start, 0)) {
                    Some(block) => block,
                    None if whole_page && self.stopped_here(hart, pc) => {
                        // The rest of the block the hart's last run stopped inside, if one holds this pc.
                        let resume =
                            self.cache.covering(start, 0).and_then(|block| Some((block, self.op_at(block, start)?)));
                        match resume {
                            Some((block, op)) => return Entry::Resume(LastBlock { block, pc, start, whole_page }, op),
                            None => match self.build(memory, start) {
                                Some(block) => block,
                                None => return step(hart, memory),
                            },
                        }
                    }
                    None => match self.build(memory, start) {
                        Some(block) => block,
                        // Nothing cacheable here (no code watch): interpret one instruction.
                        None => return step(hart, memory),
                    },
                };
                if let Some(previous) = last {
                    self.remember_exit(previous.block, start, block);
                }
                block
            }
        };
        // Under PMP finer than a page, the block must be fetchable as a whole; else the interpreter finds the
        // exact instruction that may not be fetched.
        if !whole_page {
            let guest_len = self.cache.block_info(block).map_or(0, |info| info.guest_len as u64);
            let guest_len = guest_len.min(PAGE_SIZE - (pc & (PAGE_SIZE - 1)));
            if guest_len > 2 && memory.translate(hart, pc, guest_len, AccessType::Fetch).is_err() {
                return step(hart, memory);
            }
        }
        Entry::Block(LastBlock { block, pc, start, whole_page })
    }
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// Runs the one block at `hart.pc` (at most `budget` instructions, no chaining on), for an engine that uses
    /// this one as its cold tier: the instructions it retired (counted in `instret`), and the exit if one ended
    /// the block. It returns at once, having run nothing, while the RAM holds written code: the caller takes the
    /// dirty list (this engine would consume it otherwise) and passes it to
    /// [`invalidate_written_pages`](Self::invalidate_written_pages) and to its own cache.
    pub fn run_one_block(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> (u64, Option<Exit>) {
        if budget == 0 || memory.ram.has_dirty_code() {
            return (0, None);
        }
        let mut ctx = Ctx::new(hart, memory, self.inline_csr);
        let (flow, retired) = match self.enter_slow(hart, &mut ctx.memory, None) {
            Entry::Block(current) => self.run_rest(hart, &mut ctx, current.block, 0, budget),
            Entry::Resume(current, op) => self.run_rest(hart, &mut ctx, current.block, op, budget),
            Entry::Stepped => return (1, None),
            Entry::Retry => return (0, None),
            Entry::Exit(exit) => return (0, Some(exit)),
        };
        self.stats.blocks_entered += 1;
        if retired == budget && flow != Flow::Exit {
            // The budget ended (maybe inside the block): the next run may resume the block where it stopped.
            self.stopped[hart.config.hart_id as usize % STOP_SLOTS] = Some(hart.pc);
        }
        hart.instret = hart.instret.wrapping_add(retired);
        self.served_inline.add(&ctx.served_inline);
        (retired, (flow == Flow::Exit).then_some(ctx.exit))
    }

    /// [`run_one_block`](Self::run_one_block), then on along chained exits (or the map table) to blocks already
    /// built, for as long as `hook` agrees: the cold tier of an engine that keeps its own hot blocks, run without
    /// a round trip through that engine per block. After every block `hook.ran(start, retired)` (its RAM offset
    /// and the instructions it retired), and before entering the next `hook.enter(next, budget)` (its RAM offset, and the budget left): false
    /// returns to the caller with the pc there. A block not built yet is built (or its instruction stepped, which
    /// returns). It also returns at an exit, at the end of the budget, after a write to watched code and where
    /// the fetch path does not vouch for the next pc, leaving that to the caller. The instructions retired (counted in `instret`) and the exit.
    pub fn run_cold(
        &mut self,
        hart: &mut Hart,
        memory: &mut Memory,
        budget: u64,
        hook: &mut impl ColdHook,
    ) -> (u64, Option<Exit>) {
        if budget == 0 || memory.ram.has_dirty_code() {
            return (0, None);
        }
        let mut ctx = Ctx::new(hart, memory, self.inline_csr);
        let (mut current, mut op) = match self.enter_slow(hart, &mut ctx.memory, None) {
            Entry::Block(current) => (current, 0),
            Entry::Resume(current, op) => (current, op),
            Entry::Stepped => return (1, None),
            Entry::Retry => return (0, None),
            Entry::Exit(exit) => return (0, Some(exit)),
        };
        let (mut remaining, mut entered, mut chained, mut stepped) = (budget, 0u64, 0u64, 0u64);
        let exit = loop {
            entered += 1;
            let (flow, retired) = self.run_rest(hart, &mut ctx, current.block, op, remaining);
            remaining -= retired;
            hook.ran(current.start, retired);
            match flow {
                Flow::Exit => break Some(ctx.exit),
                Flow::Dirty => break None,
                Flow::Next | Flow::End => {}
            }
            if remaining == 0 {
                // The budget ended (maybe inside the block): the next run may resume the block where it stopped.
                self.stopped[hart.config.hart_id as usize % STOP_SLOTS] = Some(hart.pc);
                break None;
            }
            // The next pc's RAM offset, exact as in `run_blocks`.
            let pc = hart.pc;
            let start = if (pc ^ current.pc) < PAGE_SIZE {
                current.whole_page.then_some((current.start & !(PAGE_SIZE - 1)) | (pc & (PAGE_SIZE - 1)))
            } else {
                ctx.memory.fast_fetch(&ctx.path, pc)
            };
            let Some(start) = start.filter(|&start| hook.enter(start, remaining)) else { break None };
            let block = match self.cache.hop(current.block, start) {
                Some((block, _)) => {
                    chained += 1;
                    block
                }
                None => match self.cache.lookup(BlockKey::new(start, 0)) {
                    Some(block) => {
                        self.remember_exit(current.block, start, block);
                        block
                    }
                    // Not built yet: the slow entry builds it, unless written code is pending (the caller drops
                    // it in both caches first).
                    None if ctx.memory.ram.has_dirty_code() => break None,
                    None => match self.enter_slow(hart, &mut ctx.memory, Some(current)) {
                        Entry::Block(next) => {
                            (current, op) = (next, 0);
                            continue;
                        }
                        Entry::Resume(next, at) => {
                            (current, op) = (next, at);
                            continue;
                        }
                        // Counted in `instret` by the interpreter.
                        Entry::Stepped => {
                            remaining -= 1;
                            stepped += 1;
                            break None;
                        }
                        Entry::Retry => break None,
                        Entry::Exit(exit) => break Some(exit),
                    },
                },
            };
            current = LastBlock { block, pc, start, whole_page: true };
            op = 0;
        };
        let retired = budget - remaining;
        hart.instret = hart.instret.wrapping_add(retired - stepped);
        self.stats.blocks_entered += entered;
        self.stats.blocks_chained += chained;
        self.served_inline.add(&ctx.served_inline);
        (retired, exit)
    }

    /// Runs `block`'s ops from `op` on, at most `budget` of them: the flow that ended them and how many retired.
    #[inline(never)]
    fn run_rest(&self, hart: &mut Hart, ctx: &mut Ctx, block: BlockId, op: usize, budget: u64) -> (Flow, u64) {
        let ops = self.cache.ops(block).and_then(|ops| ops.get(op..)).unwrap_or(&[]);
        run_ops(hart, ctx, ops.get(..ops.len().min(budget as usize)).unwrap_or(ops))
    }

    /// Whether `hart`'s last run spent its budget at `pc` (the note is used up).
    fn stopped_here(&mut self, hart: &Hart, pc: u64) -> bool {
        let slot = &mut self.stopped[hart.config.hart_id as usize % STOP_SLOTS];
        let here = *slot == Some(pc);
        if here {
            *slot = None;
        }
        here
    }

    /// The index of `block`'s op for the instruction at RAM offset `start`, if the block is live and one starts
    /// there (its ops are the instructions from its start on, as long as it is live).
    fn op_at(&self, block: BlockId, start: u64) -> Option<usize> {
        let first = self.cache.block_info(block)?.key.pc;
        let mut at = first;
        for (index, op) in self.cache.ops(block)?.iter().enumerate() {
            if at == start {
                return Some(index);
            }
            at += op.len as u64;
        }
        None
    }

    /// Links `from`'s exit to `start` (a RAM offset the guest just went to from `from`) with `to`, the block
    /// there: through the exit that recorded `start`, or, when none did and the block has no static taken exit
    /// (an indirect jump), through its taken slot, which then remembers `start` as the last target.
    fn remember_exit(&mut self, from: BlockId, start: u64, to: BlockId) {
        let slot = match self.cache.chained(from, start) {
            Err(Some(slot)) => slot,
            Err(None) if self.cache.block_info(from).is_some_and(|info| info.exits[0].is_none()) => {
                self.cache.set_exit(from, ExitSlot::Taken, start);
                ExitSlot::Taken
            }
            _ => return,
        };
        self.cache.link(from, slot, to);
    }
}

/// What an engine that uses the threaded engine as its cold tier decides in [`Threaded::run_cold`].
pub trait ColdHook {
    /// The block at RAM offset `start` (entered at its start or, for the first, maybe inside it) retired
    /// `retired` instructions.
    fn ran(&mut self, start: u64, retired: u64);
    /// Whether the cold tier goes on with the block at RAM offset `next`, with `budget` instructions left (false:
    /// the caller takes over there).
    fn enter(&mut self, next: u64, budget: u64) -> bool;
}

/// One instruction through the interpreter.
fn step(hart: &mut Hart, memory: &mut Memory) -> Entry {
    match interp::step(hart, memory) {
        Ok(()) => Entry::Stepped,
        Err(exit) => Entry::Exit(exit),
    }
}

/// The op for `inst` and whether the block ends after it.
fn predecode(inst: Inst, word: u32, len: u8) -> (Op, bool) {
    let op = |handler: Handler, rd: u8, rs1: u8, rs2: u8, imm: i32| Op { handler, rd, rs1, rs2, len, imm };
    // An instruction whose only effect is writing x0 is a no-op; register writers below rely on `rd != 0`.
    let nop_op = op(nop, 0, 0, 0, 0);
    match inst {
        Inst::Lui { rd: 0, .. } | Inst::Auipc { rd: 0, .. } | Inst::OpImm { rd: 0, .. } | Inst::Op { rd: 0, .. } => {
            (nop_op, false)
        }
        Inst::Lui { rd, imm } => (op(lui, rd, 0, 0, imm), false),
        Inst::Auipc { rd, imm } => (op(auipc, rd, 0, 0, imm), false),
        Inst::Jal { rd, offset } => (op(jal, rd, 0, 0, offset), true),
        Inst::Jalr { rd, rs1, offset } => (op(jalr, rd, rs1, 0, offset), true),
        // Whether a branch ends its block is up to `build`.
        Inst::Branch { cond, rs1, rs2, offset } => (op(BRANCH[cond as usize], 0, rs1, rs2, offset), false),
        Inst::Load { width, rd, rs1, offset } => (op(LOAD[width as usize], rd, rs1, 0, offset), false),
        Inst::Store { width, rs1, rs2, offset } => (op(STORE[width as usize], 0, rs1, rs2, offset), false),
        Inst::OpImm { op: kind, rd, rs1, imm } => (op(OP_IMM[kind as usize], rd, rs1, 0, imm), false),
        Inst::Op { op: kind, rd, rs1, rs2 } => (op(OP[kind as usize], rd, rs1, rs2, 0), false),
        // `pause` leaves the engine (through the interpreter) so the VM can let other harts run.
        isa::PAUSE => (op(fallback_end, 0, 0, 0, 0), true),
        // A `fence` orders memory for other threads.
        Inst::Fence { fm, pred, succ } if isa::fence_orders_stores_before_loads(fm, pred, succ) => {
            (op(host_fence, 0, 0, 0, 0), false)
        }
        Inst::Fence { .. } => (nop_op, false),
        // Through the interpreter, which runs the code watch's deferred fence (a stale block then ends this one).
        Inst::FenceI => (op(fallback, 0, 0, 0, 0), false),
        // A CSR access leaves the engine for the dispatcher, as the interpreter's does, but without decoding the
        // word again (hot in loops that read a counter or toggle interrupts): the op keeps the operands and word.
        Inst::Csr { op: csr_op, rd, src, csr } if csr == (word >> 20) as u16 => {
            (op(csr_exit, rd, src, csr_op as u8, word as i32), true)
        }
        // Everything the dispatcher sees ends a block: it leaves the engine anyway.
        Inst::Illegal(_)
        | Inst::Ecall
        | Inst::Ebreak
        | Inst::Sret
        | Inst::Mret
        | Inst::Wfi
        | Inst::SfenceVma { .. }
        | Inst::Csr { .. } => (op(fallback_end, 0, 0, 0, 0), true),
        _ => (op(fallback, 0, 0, 0, 0), false),
    }
}

/// Writes the destination register of an op that predecode only makes with `rd != 0`.
#[inline(always)]
fn write_rd(hart: &mut Hart, op: &Op, value: u64) {
    debug_assert!(op.rd != 0);
    hart.x[(op.rd & 31) as usize] = value;
}

/// Leaves the engine at the instruction at `pc`.
#[inline(always)]
fn leave(hart: &mut Hart, ctx: &mut Ctx, pc: u64, exit: Exit) -> Flow {
    hart.pc = pc;
    ctx.exit = exit;
    Flow::Exit
}

/// Ends the block at a control transfer to `target`.
#[inline(always)]
fn jump(hart: &mut Hart, target: u64) -> Flow {
    hart.pc = target;
    Flow::End
}

/// The instruction at `pc` through the interpreter, which also counts it: the block loop counts it again, so it
/// is taken back here.
#[inline(always)]
fn interpret(hart: &mut Hart, ctx: &mut Ctx, pc: u64) -> Result<(), Flow> {
    hart.pc = pc;
    match interp::step(hart, &mut ctx.memory) {
        Ok(()) => {
            hart.instret = hart.instret.wrapping_sub(1);
            if ctx.memory.ram.has_dirty_code() {
                Err(Flow::Dirty)
            } else {
                Ok(())
            }
        }
        Err(exit) => {
            ctx.exit = exit;
            Err(Flow::Exit)
        }
    }
}

/// An instruction without a fast handler that never changes the pc's course (AMO, floating point, ...).
fn fallback(hart: &mut Hart, ctx: &mut Ctx, _op: &Op, pc: u64) -> Flow {
    interpret(hart, ctx, pc).map_or_else(|flow| flow, |()| Flow::Next)
}

/// An instruction without a fast handler after which the block ends (the interpreter set the pc).
fn fallback_end(hart: &mut Hart, ctx: &mut Ctx, _op: &Op, pc: u64) -> Flow {
    interpret(hart, ctx, pc).map_or_else(|flow| flow, |()| Flow::End)
}

/// Every CSR operation, in declaration order (`CSR_OPS[k as usize] == k`).
const CSR_OPS: [CsrOp; 6] = [CsrOp::Rw, CsrOp::Rs, CsrOp::Rc, CsrOp::Rwi, CsrOp::Rsi, CsrOp::Rci];

/// A CSR access: the exit the interpreter gives it ([`Exit::System`]), rebuilt from the op (`rd`, `rs1` the
/// source, `rs2` the [`CsrOp`], `imm` the instruction word, whose top 12 bits are the CSR number).
fn csr_exit(hart: &mut Hart, ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    let word = op.imm as u32;
    let csr_op = CSR_OPS[(op.rs2 as usize).min(CSR_OPS.len() - 1)];
    if let Some(reads) = ctx.inline_csr {
        if let Some(value) = reads.serve(hart, csr_op, op.rs1, (word >> 20) as u16) {
            ctx.served_inline.note((word >> 20) as u16, value);
            hart.set_x(op.rd, value);
            return Flow::Next;
        }
    }
    let inst = Inst::Csr { op: csr_op, rd: op.rd, src: op.rs1, csr: (word >> 20) as u16 };
    leave(hart, ctx, pc, Exit::System { inst, word, len: op.len })
}

/// The value of a CSR access served in the engine ([`InlineCsr`]), `None` when it must leave: it writes, it
/// faults, or it reads a counter the engine cannot give exactly.
#[inline(always)]
fn inline_read(hart: &Hart, reads: &InlineCsr, op: CsrOp, src: u8, csr: u16) -> Option<u64> {
    use crate::isa::csr::{CYCLE, HPMCOUNTER31, MCYCLE, MHPMCOUNTER31, TIME};
    let read_only = matches!(op, CsrOp::Rs | CsrOp::Rc | CsrOp::Rsi | CsrOp::Rci) && src == 0;
    if !read_only || (CYCLE..=HPMCOUNTER31).contains(&csr) && csr != TIME || (MCYCLE..=MHPMCOUNTER31).contains(&csr) {
        return None;
    }
    let time = if csr == TIME {
        let now = (reads.clock)();
        if now >= reads.until {
            return None;
        }
        now.wrapping_sub(reads.offset)
    } else {
        0
    };
    hart.read_csr(csr, time).ok()
}

/// A set or clear of `sstatus.SIE` alone (an S-mode kernel masking interrupts around a critical section, the
/// hottest CSR write there is), served in the engine: the old value, with the write done. It leaves (`None`,
/// nothing written) when it touches any other bit, faults, or would make an interrupt pending, which the VM
/// takes between engine runs.
#[inline(always)]
fn inline_sie_toggle(hart: &mut Hart, op: CsrOp, src: u8, csr: u16) -> Option<u64> {
    use crate::isa::csr::{mstatus, SSTATUS};
    if csr != SSTATUS {
        return None;
    }
    let operand = match op {
        CsrOp::Rs | CsrOp::Rc => hart.x(src),
        CsrOp::Rsi | CsrOp::Rci => u64::from(src),
        CsrOp::Rw | CsrOp::Rwi => return None,
    };
    if operand & !mstatus::SIE != 0 {
        return None;
    }
    let old = hart.read_csr(SSTATUS, 0).ok()?;
    let new = if matches!(op, CsrOp::Rs | CsrOp::Rsi) { old | operand } else { old & !operand };
    let effect = hart.write_csr(SSTATUS, new).ok()?;
    if effect.translation_changed || hart.pending_interrupt().is_some() {
        // Never reached for SIE alone but for the interrupt: undone, for the dispatcher to do in full.
        let _ = hart.write_csr(SSTATUS, old);
        return None;
    }
    Some(old)
}

fn nop(_hart: &mut Hart, _ctx: &mut Ctx, _op: &Op, _pc: u64) -> Flow {
    Flow::Next
}

/// A FENCE that orders stores before loads: with RAM shared by other threads' harts, a host full fence (x86-64
/// lets a later load pass an earlier store); with exclusive RAM one hart sees its own accesses in order.
fn host_fence(_hart: &mut Hart, ctx: &mut Ctx, _op: &Op, _pc: u64) -> Flow {
    if ctx.memory.ram.is_shared() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
    Flow::Next
}

fn lui(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, _pc: u64) -> Flow {
    write_rd(hart, op, op.imm as i64 as u64);
    Flow::Next
}

fn auipc(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    write_rd(hart, op, pc.wrapping_add(op.imm as i64 as u64));
    Flow::Next
}

fn jal(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    hart.set_x(op.rd, pc.wrapping_add(op.len as u64));
    jump(hart, pc.wrapping_add(op.imm as i64 as u64))
}

fn jalr(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    let target = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64) & !1;
    hart.set_x(op.rd, pc.wrapping_add(op.len as u64));
    jump(hart, target)
}

/// A conditional branch: taken, it ends the block; not taken, the block runs on (or falls off its end).
fn branch<const COND: usize>(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    if branch_taken(BRANCH_CONDS[COND], hart.x(op.rs1), hart.x(op.rs2)) {
        jump(hart, pc.wrapping_add(op.imm as i64 as u64))
    } else {
        Flow::Next
    }
}

fn op_imm<const KIND: usize>(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, _pc: u64) -> Flow {
    write_rd(hart, op, alu_imm(OP_IMM_KINDS[KIND], hart.x(op.rs1), op.imm));
    Flow::Next
}

fn op_reg<const KIND: usize>(hart: &mut Hart, _ctx: &mut Ctx, op: &Op, _pc: u64) -> Flow {
    write_rd(hart, op, alu(OP_KINDS[KIND], hart.x(op.rs1), hart.x(op.rs2)));
    Flow::Next
}

fn load<const WIDTH: usize>(hart: &mut Hart, ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    let width = LOAD_WIDTHS[WIDTH];
    let addr = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64);
    let size = width.bytes();
    let signed = matches!(width, LoadWidth::B | LoadWidth::H | LoadWidth::W | LoadWidth::D);
    match ctx.memory.fast_load(&ctx.path, addr, size) {
        Some(value) => {
            hart.set_x(op.rd, extend(value, size as u8, signed));
            Flow::Next
        }
        None => load_slow(hart, ctx, op, pc, addr, size, signed),
    }
}

/// A load the fast path did not serve: a TLB miss, a fault, a device, a page-crossing access.
#[inline(never)]
fn load_slow(hart: &mut Hart, ctx: &mut Ctx, op: &Op, pc: u64, addr: u64, size: u64, signed: bool) -> Flow {
    match ctx.memory.load(hart, addr, size, AccessType::Load) {
        Ok(Loaded::Value(value)) => hart.set_x(op.rd, extend(value, size as u8, signed)),
        Ok(Loaded::Device(gpa)) => {
            let exit = mmio(gpa, size, MmioKind::Load { rd: op.rd, signed }, op.len as u64);
            return leave(hart, ctx, pc, exit);
        }
        Err(fault) => return leave(hart, ctx, pc, exception(fault)),
    }
    // The walk may have set A/D bits in a page that holds code.
    if ctx.memory.ram.has_dirty_code() {
        hart.pc = pc.wrapping_add(op.len as u64);
        return Flow::Dirty;
    }
    Flow::Next
}

fn store<const WIDTH: usize>(hart: &mut Hart, ctx: &mut Ctx, op: &Op, pc: u64) -> Flow {
    let width = STORE_WIDTHS[WIDTH];
    let addr = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64);
    let size = width.bytes();
    let value = hart.x(op.rs2);
    let wrote_code = match ctx.memory.fast_store(&ctx.path, addr, size, value) {
        Some(wrote_code) => wrote_code,
        None => match store_slow(hart, ctx, op, pc, addr, width) {
            Ok(()) => ctx.memory.ram.has_dirty_code(),
            Err(flow) => return flow,
        },
    };
    // A store into watched code: the blocks of that page (maybe this one) must go before anything else runs.
    if wrote_code {
        hart.pc = pc.wrapping_add(op.len as u64);
        return Flow::Dirty;
    }
    Flow::Next
}

/// A store the fast path did not serve: a TLB miss, a fault, a device, a page-crossing access.
#[inline(never)]
fn store_slow(hart: &mut Hart, ctx: &mut Ctx, op: &Op, pc: u64, addr: u64, width: StoreWidth) -> Result<(), Flow> {
    let size = width.bytes();
    let value = hart.x(op.rs2);
    match ctx.memory.store(hart, addr, size, value) {
        Ok(None) => Ok(()),
        Ok(Some(gpa)) => {
            let value = value & interp::mask(width);
            Err(leave(hart, ctx, pc, mmio(gpa, size, MmioKind::Store { value }, op.len as u64)))
        }
        Err(fault) => Err(leave(hart, ctx, pc, exception(fault))),
    }
}

const BRANCH_CONDS: [BranchCond; BranchCond::ALL.len()] = BranchCond::ALL;
const BRANCH: [Handler; 6] = [branch::<0>, branch::<1>, branch::<2>, branch::<3>, branch::<4>, branch::<5>];

const LOAD_WIDTHS: [LoadWidth; LoadWidth::ALL.len()] = LoadWidth::ALL;
const LOAD: [Handler; 7] = [load::<0>, load::<1>, load::<2>, load::<3>, load::<4>, load::<5>, load::<6>];

const STORE_WIDTHS: [StoreWidth; StoreWidth::ALL.len()] = StoreWidth::ALL;
const STORE: [Handler; 4] = [store::<0>, store::<1>, store::<2>, store::<3>];

const OP_IMM_KINDS: [OpImmKind; OpImmKind::ALL.len()] = OpImmKind::ALL;
const OP_IMM: [Handler; 13] = [
    op_imm::<0>,
    op_imm::<1>,
    op_imm::<2>,
    op_imm::<3>,
    op_imm::<4>,
    op_imm::<5>,
    op_imm::<6>,
    op_imm::<7>,
    op_imm::<8>,
    op_imm::<9>,
    op_imm::<10>,
    op_imm::<11>,
    op_imm::<12>,
];

const OP_KINDS: [OpKind; OpKind::ALL.len()] = OpKind::ALL;
const OP: [Handler; 28] = [
    op_reg::<0>,
    op_reg::<1>,
    op_reg::<2>,
    op_reg::<3>,
    op_reg::<4>,
    op_reg::<5>,
    op_reg::<6>,
    op_reg::<7>,
    op_reg::<8>,
    op_reg::<9>,
    op_reg::<10>,
    op_reg::<11>,
    op_reg::<12>,
    op_reg::<13>,
    op_reg::<14>,
    op_reg::<15>,
    op_reg::<16>,
    op_reg::<17>,
    op_reg::<18>,
    op_reg::<19>,
    op_reg::<20>,
    op_reg::<21>,
    op_reg::<22>,
    op_reg::<23>,
    op_reg::<24>,
    op_reg::<25>,
    op_reg::<26>,
    op_reg::<27>,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::HartConfig;
    use crate::mem::mmu::{Tlb, VmRealMap};
    use crate::mem::{Ram, RAM_BASE};

    /// Runs that spend their budget inside a block go on with the rest of it at the hart's next run: two harts
    /// taking turns of 7 and 3 instructions through a 10-instruction loop build one block between them, and
    /// end where the loop says.
    #[test]
    fn a_run_that_stops_inside_a_block_goes_on_with_the_rest_of_it() {
        let mut backing = std::vec![0u8; 0x10000];
        let addi = isa::encode(&Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 1 });
        for index in 0..9 {
            backing[4 * index..4 * index + 4].copy_from_slice(&addi.to_le_bytes());
        }
        backing[36..40].copy_from_slice(&isa::encode(&Inst::Jal { rd: 0, offset: -36 }).to_le_bytes());
        let mut code_pages = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut code_pages);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut harts = [0, 1].map(|id| {
            let mut hart = Hart::new(HartConfig::rv64gc(id));
            hart.reset(RAM_BASE);
            hart
        });
        let mut tlbs = [Tlb::new(), Tlb::new()];
        let mut engine = Threaded::<256, 16, 32>::new();
        for _ in 0..5 {
            for ((hart, tlb), budget) in harts.iter_mut().zip(&mut tlbs).zip([7, 3]) {
                let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb };
                assert_eq!(engine.run(hart, &mut memory, budget), Exit::BudgetExhausted);
            }
        }
        assert_eq!(engine.stats().blocks_built, 1, "no block starting inside the loop");
        // 35 instructions: three rounds of ten (27 addi), then 5 addi; 15: one round, then 5 addi.
        assert_eq!((harts[0].x(5), harts[0].pc, harts[0].instret), (32, RAM_BASE + 20, 35));
        assert_eq!((harts[1].x(5), harts[1].pc, harts[1].instret), (14, RAM_BASE + 20, 15));
    }

    /// A CSR access ends its block with the exit the interpreter gives it (rebuilt from the op, not decoded
    /// again), and the engine reports the code pages it dropped because the guest wrote them, once.
    #[test]
    fn csr_exits_match_the_interpreter_and_written_code_is_reported() {
        use crate::isa::{encode, CsrOp};
        let mut backing = vec![0u8; 0x3000];
        let words = [
            // Page 0: run the routine on page 1, then store over it and run it again.
            encode(&Inst::Jal { rd: 1, offset: 0x1000 }),
            encode(&Inst::Store { width: StoreWidth::W, rs1: 6, rs2: 0, offset: 8 }),
            encode(&Inst::Jal { rd: 1, offset: 0x1000 - 8 }),
        ];
        for (index, word) in words.iter().enumerate() {
            backing[4 * index..4 * index + 4].copy_from_slice(&word.to_le_bytes());
        }
        let csr = Inst::Csr { op: CsrOp::Rsi, rd: 10, src: 3, csr: 0x340 };
        let routine = [encode(&csr), encode(&Inst::Jalr { rd: 0, rs1: 1, offset: 0 })];
        for (index, word) in routine.iter().enumerate() {
            backing[0x1000 + 4 * index..0x1000 + 4 * index + 4].copy_from_slice(&word.to_le_bytes());
        }
        let mut code_pages = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut code_pages);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        hart.set_x(6, RAM_BASE + 0x1000);
        let mut tlb = Tlb::new();
        let mut engine = Threaded::<256, 16, 32>::new();
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
        let exit = engine.run(&mut hart, &mut memory, 100);
        let mut reference = Hart::new(HartConfig::rv64gc(0));
        reference.pc = hart.pc;
        assert_eq!(exit, interp::step(&mut reference, &mut memory).unwrap_err(), "the interpreter's exit");
        assert_eq!(exit, Exit::System { inst: csr, word: encode(&csr), len: 4 });
        assert_eq!(engine.take_invalidated(), None, "nothing written yet");
        let watched = engine.take_watched().expect("the engine decoded code on two pages");
        assert_eq!(watched.pages(), Some(&[0u64, 1][..]));
        assert_eq!(engine.take_watched(), None, "reported once");
        // Past the CSR access (as the dispatcher would), back to page 0, whose store writes page 1 (just past the
        // routine): the page's blocks go, and the engine says so once.
        hart.pc += 4;
        let exit = engine.run(&mut hart, &mut memory, 3);
        assert_eq!(exit, Exit::BudgetExhausted);
        let written = engine.take_invalidated().expect("page 1 was written");
        assert_eq!(written.pages(), Some(&[1u64][..]));
        assert_eq!(engine.take_invalidated(), None, "reported once");
    }

    /// With a granular code watch, a loop that stores its counter on its own page keeps its blocks (a store beside
    /// code is data), and a write into the loop's code is still seen before the code runs again.
    #[test]
    fn data_beside_code_keeps_its_blocks_and_code_writes_still_count() {
        let mut backing = vec![0u8; 0x2000];
        let program = [
            Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 1 },
            Inst::Store { width: StoreWidth::D, rs1: 6, rs2: 5, offset: 0x400 },
            Inst::Jal { rd: 0, offset: -8 },
        ];
        for (index, inst) in program.iter().enumerate() {
            backing[4 * index..4 * index + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
        }
        let mut words = vec![0u64; crate::mem::code_watch_words(0x2000)];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_granular_code_watch(&mut words);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        hart.set_x(6, RAM_BASE);
        let mut tlb = Tlb::new();
        let mut engine = Threaded::<256, 16, 32>::new();
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
        assert_eq!(engine.run(&mut hart, &mut memory, 3000), Exit::BudgetExhausted);
        assert_eq!((hart.x(5), memory.ram.load(RAM_BASE + 0x400, 8)), (1000, Some(1000)));
        assert_eq!(engine.stats().pages_invalidated, 0, "the counter is data");
        let built = engine.stats().blocks_built;
        assert!(built <= 2, "{built} blocks for one loop");
        // DMA over the loop's first instruction: `addi x5, x5, 2`.
        let by_two = isa::encode(&Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 2 });
        memory.ram.store(RAM_BASE, 4, by_two as u64).unwrap();
        assert_eq!(engine.run(&mut hart, &mut memory, 3000), Exit::BudgetExhausted);
        assert_eq!(hart.x(5), 3000, "the rewritten loop ran");
        assert_eq!(engine.stats().pages_invalidated, 1);
    }

    /// With [`InlineCsr`], a CSR access that only reads is served in the engine with the dispatcher's value;
    /// `instret`, writes, and `time` from the host's deadline on still leave.
    #[test]
    fn csr_reads_are_served_inline_only_when_they_cannot_differ() {
        use crate::isa::{csr, encode, CsrOp};
        fn host_clock() -> u64 {
            1_000
        }
        let read = |rd, csr| Inst::Csr { op: CsrOp::Rs, rd, src: 0, csr };
        let write = Inst::Csr { op: CsrOp::Rs, rd: 13, src: 5, csr: csr::MSCRATCH };
        let program = [read(10, csr::MSCRATCH), read(11, csr::TIME), read(12, csr::INSTRET), write];
        let mut backing = vec![0u8; 0x1000];
        for (index, inst) in program.iter().enumerate() {
            backing[4 * index..4 * index + 4].copy_from_slice(&encode(inst).to_le_bytes());
        }
        let mut code_pages = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut code_pages);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut tlb = Tlb::new();
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        hart.write_csr(csr::MSCRATCH, 0x5eed).unwrap();
        let mut engine = Threaded::<256, 16, 32>::new();
        engine.serve_csr_inline(Some(InlineCsr { clock: host_clock, offset: 400, until: 2_000 }));
        let exit = engine.run(&mut hart, &mut memory, 100);
        assert_eq!((hart.x(10), hart.x(11)), (0x5eed, 600), "mscratch, and time = clock - offset");
        assert_eq!(exit, Exit::System { inst: program[2], word: encode(&program[2]), len: 4 }, "instret leaves");
        assert_eq!((hart.pc, hart.instret), (RAM_BASE + 8, 2));
        assert_eq!(engine.take_served_inline(), ServedInline { accesses: 2, time_reads: 1, latest_time: 600 });
        hart.pc += 4;
        let exit = engine.run(&mut hart, &mut memory, 100);
        assert_eq!(exit, Exit::System { inst: write, word: encode(&write), len: 4 }, "a write leaves");
        // From the host's deadline on, `time` leaves too: the dispatcher's path brings the timers up to date.
        engine.serve_csr_inline(Some(InlineCsr { clock: host_clock, offset: 400, until: 1_000 }));
        hart.pc = RAM_BASE + 4;
        let exit = engine.run(&mut hart, &mut memory, 100);
        assert_eq!(exit, Exit::System { inst: program[1], word: encode(&program[1]), len: 4 });
        assert_eq!(engine.take_served_inline(), ServedInline::default());
    }

    /// With [`InlineCsr`], an S-mode kernel's `sstatus.SIE` toggles are served in the engine, unless one would
    /// make an interrupt pending: that one leaves with nothing written, for the VM to take the interrupt.
    #[test]
    fn sie_toggles_are_served_inline_unless_an_interrupt_becomes_pending() {
        use crate::hart::Privilege;
        use crate::isa::{csr, encode, CsrOp};
        fn host_clock() -> u64 {
            0
        }
        let toggle = |op, rd, src| Inst::Csr { op, rd, src, csr: csr::SSTATUS };
        let program = [toggle(CsrOp::Rci, 10, 2), toggle(CsrOp::Rsi, 11, 2), toggle(CsrOp::Rci, 0, 3)];
        let mut backing = vec![0u8; 0x1000];
        for (index, inst) in program.iter().enumerate() {
            backing[4 * index..4 * index + 4].copy_from_slice(&encode(inst).to_le_bytes());
        }
        let mut code_pages = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut code_pages);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut tlb = Tlb::new();
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        // S-mode may fetch anywhere (one NAPOT PMP entry over everything).
        hart.write_csr(csr::PMPADDR0, u64::MAX >> 10).unwrap();
        hart.write_csr(csr::PMPCFG0, 0x1f).unwrap();
        hart.write_csr(csr::MIDELEG, csr::interrupt::SSI).unwrap();
        hart.write_csr(csr::MIE, csr::interrupt::SSI).unwrap();
        hart.write_csr(csr::SSTATUS, csr::mstatus::SIE).unwrap();
        hart.privilege = Privilege::Supervisor;
        let mut engine = Threaded::<256, 16, 32>::new();
        engine.serve_csr_inline(Some(InlineCsr { clock: host_clock, offset: 0, until: u64::MAX }));
        // Nothing pending: the clear and the set are served in the engine; the third touches SPP too and leaves.
        let exit = engine.run(&mut hart, &mut memory, 100);
        assert_eq!(exit, Exit::System { inst: program[2], word: encode(&program[2]), len: 4 });
        assert_eq!((hart.x(10) & csr::mstatus::SIE, hart.x(11) & csr::mstatus::SIE), (csr::mstatus::SIE, 0));
        assert_eq!(hart.read_csr(csr::SSTATUS, 0).unwrap() & csr::mstatus::SIE, csr::mstatus::SIE);
        assert_eq!(engine.take_served_inline().accesses, 2);
        // With a software interrupt pending, the set leaves with nothing written.
        let sstatus = |hart: &Hart| hart.read_csr(csr::SSTATUS, 0).unwrap() & csr::mstatus::SIE;
        hart.write_csr(csr::SSTATUS, 0).unwrap();
        hart.write_csr(csr::SIP, csr::interrupt::SSI).unwrap();
        hart.pc = RAM_BASE + 4;
        let exit = engine.run(&mut hart, &mut memory, 100);
        assert_eq!(exit, Exit::System { inst: program[1], word: encode(&program[1]), len: 4 });
        assert_eq!(sstatus(&hart), 0, "the set that would make the interrupt pending wrote nothing");
        assert_eq!(engine.take_served_inline().accesses, 0);
    }

    /// The handler tables are indexed by the enums' discriminants: each entry must be the one for its kind.
    #[test]
    fn handler_tables_follow_the_enum_order() {
        for (index, kind) in OP_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, kind) in OP_IMM_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, width) in LOAD_WIDTHS.iter().enumerate() {
            assert_eq!(*width as usize, index);
        }
        for (index, width) in STORE_WIDTHS.iter().enumerate() {
            assert_eq!(*width as usize, index);
        }
        for (index, cond) in BRANCH_CONDS.iter().enumerate() {
            assert_eq!(*cond as usize, index);
        }
    }
}
