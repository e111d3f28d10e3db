//! The threaded engine: guest basic blocks predecoded once into ops that carry their operands and a direct
//! pointer to their handler, kept in the fixed-size code cache and run without decoding or a central switch.
//!
//! Blocks are keyed by where their bytes lie in RAM (the host offset of their first instruction), never by a
//! virtual address, so a change of address space or privilege can never run a stale block: every block entry
//! translates the pc afresh (a TLB hit in the steady state), and ops use the hart's live pc. A block never
//! crosses a page; every page a block was decoded from is watched by [`Ram`](crate::mem::Ram), so any write to
//! it — a store by any hart or engine, a device's DMA — invalidates the page's blocks before the next block runs,
//! and a store that hits watched code ends the current block at once. This engine never emulates a privileged
//! instruction: those, and every instruction without a fast handler (AMOs, floating point, ...), run through
//! the reference interpreter's [`step`](super::interp::step), so both engines share one definition of them.

use super::interp::{self, alu, alu_imm, branch_taken, exception, mmio};
use super::Engine;
use crate::cache::{BlockId, BlockKey, CodeCache, ExitSlot};
use crate::hart::{Exception, Hart};
use crate::isa::{self, BranchCond, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::mmu::{Loaded, Memory, Target};
use crate::mem::sv39::AccessType;
use crate::mem::{DirtyCode, PAGE_SIZE};

const PAGE_SHIFT: u32 = 12;
use crate::trap::{extend, Exit, MmioKind};

/// Longest block, in instructions: bounds decode work and the latency of a budget check.
pub const MAX_BLOCK: usize = 64;

/// What a handler tells the block loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The instruction retired; go on with the next op.
    Next,
    /// The instruction retired and the block ends here (a control transfer, or a store that hit code).
    End,
}

/// A handler: executes one predecoded instruction on the hart, or returns the exit it needs (with the hart's
/// pc still at the instruction).
pub type Handler = fn(&mut Hart, &mut Memory, &Op) -> Result<Flow, Exit>;

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

const FALLBACK_4: Op = Op { handler: fallback, rd: 0, rs1: 0, rs2: 0, len: 4, imm: 0 };

/// Counters of the engine's work, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub blocks_built: u64,
    pub blocks_entered: u64,
    pub pages_invalidated: u64,
    pub full_invalidations: u64,
}

/// The threaded engine over a code cache of `OPS` ops in `BLOCKS` blocks with a `MAP`-slot map table.
pub struct Threaded<const OPS: usize, const BLOCKS: usize, const MAP: usize> {
    cache: CodeCache<Op, OPS, BLOCKS, MAP>,
    stats: EngineStats,
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// An engine with an empty cache (`const`, so a board can keep it in a `static`).
    pub const fn new() -> Self {
        Self {
            cache: CodeCache::new(FALLBACK_4),
            stats: EngineStats { blocks_built: 0, blocks_entered: 0, pages_invalidated: 0, full_invalidations: 0 },
        }
    }

    /// The code cache (for its statistics).
    pub fn cache(&self) -> &CodeCache<Op, OPS, BLOCKS, MAP> {
        &self.cache
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Drops the blocks of every code page written since the last look.
    fn invalidate_written_code(&mut self, memory: &mut Memory) {
        match memory.ram.take_dirty_code() {
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

    /// Decodes the block whose first instruction lies at RAM offset `start` and caches it.
    fn build(&mut self, memory: &mut Memory, start: u64) -> Option<BlockId> {
        let page_end = (start | (PAGE_SIZE - 1)) + 1;
        let mut ops = [FALLBACK_4; MAX_BLOCK];
        let mut count = 0;
        let mut at = start;
        let mut taken = None;
        let mut falls_through = true;
        while count < MAX_BLOCK && at < page_end {
            let low = memory.ram.load_at_offset(at, 2)? as u32;
            let (word, len) = if low & 3 != 3 {
                (low, 2)
            } else if at + 4 > page_end {
                // A 4-byte instruction straddling the page: the interpreter fetches it through the MMU.
                if count == 0 {
                    ops[0] = FALLBACK_4;
                    count = 1;
                    at += 4;
                }
                break;
            } else {
                (memory.ram.load_at_offset(at, 4)? as u32, 4)
            };
            let inst = isa::decode(word).inst;
            let (op, ends_block) = predecode(inst, len);
            ops[count] = op;
            count += 1;
            // Where a direct jump or branch goes, as a RAM offset, when that is in this page (chaining never
            // leaves the page, whose translation the block entry checked).
            let target = match inst {
                Inst::Jal { offset, .. } | Inst::Branch { offset, .. } => Some(at.wrapping_add(offset as i64 as u64)),
                _ => None,
            };
            taken = target.filter(|&target| target >> PAGE_SHIFT == start >> PAGE_SHIFT);
            falls_through = !matches!(inst, Inst::Jal { .. } | Inst::Jalr { .. });
            at += len as u64;
            if ends_block {
                break;
            }
        }
        let fall_through = (at < page_end && falls_through).then_some(at);
        if !memory.ram.watch_code_page(start / PAGE_SIZE) {
            return None;
        }
        self.stats.blocks_built += 1;
        let guest_len = (at - start).min(PAGE_SIZE) as u32;
        self.cache.insert(BlockKey::new(start, 0), guest_len, [taken, fall_through], &ops[..count]).ok()
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

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Engine for Threaded<OPS, BLOCKS, MAP> {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        let mut remaining = budget;
        let mut last: Option<LastBlock> = None;
        while remaining > 0 {
            if memory.ram.has_dirty_code() {
                self.invalidate_written_code(memory);
                last = None;
            }
            let pc = hart.pc;
            let (start, whole_page) = match last {
                Some(previous) if (pc ^ previous.pc) < PAGE_SIZE => {
                    ((previous.start & !(PAGE_SIZE - 1)) | (pc & (PAGE_SIZE - 1)), previous.whole_page)
                }
                _ => match memory.translate_page(hart, pc, 2, AccessType::Fetch) {
                    Ok((Target::Ram(offset), whole_page)) => (offset, whole_page),
                    Ok((Target::Device(_), _)) => {
                        return Exit::Exception { cause: Exception::InstructionAccessFault, tval: pc };
                    }
                    Err(fault) => return exception(fault),
                },
            };
            let Some(block) = self.enter(last, start, memory) else {
                // Nothing cacheable here (no code watch): interpret one instruction.
                if let Err(exit) = interp::step(hart, memory) {
                    return exit;
                }
                remaining -= 1;
                last = None;
                continue;
            };
            // Under PMP finer than a page, the block must be fetchable as a whole; else the interpreter finds the
            // exact instruction that may not be fetched.
            if !whole_page {
                let guest_len = self.cache.block_info(block).map_or(0, |info| info.guest_len as u64);
                let guest_len = guest_len.min(PAGE_SIZE - (pc & (PAGE_SIZE - 1)));
                if guest_len > 2 && memory.translate(hart, pc, guest_len, AccessType::Fetch).is_err() {
                    if let Err(exit) = interp::step(hart, memory) {
                        return exit;
                    }
                    remaining -= 1;
                    last = None;
                    continue;
                }
            }
            self.stats.blocks_entered += 1;
            last = Some(LastBlock { block, pc, start, whole_page });
            let Some(ops) = self.cache.ops(block) else { continue };
            for op in ops {
                if remaining == 0 {
                    return Exit::BudgetExhausted;
                }
                match (op.handler)(hart, memory, op) {
                    Ok(Flow::Next) => remaining -= 1,
                    Ok(Flow::End) => {
                        remaining -= 1;
                        break;
                    }
                    Err(exit) => return exit,
                }
            }
        }
        Exit::BudgetExhausted
    }
}

impl<const OPS: usize, const BLOCKS: usize, const MAP: usize> Threaded<OPS, BLOCKS, MAP> {
    /// The block starting at RAM offset `start`: through the previous block's chained exit when there is one,
    /// else from the map table (linking it to the previous block for next time), else freshly built.
    #[inline(always)]
    fn enter(&mut self, last: Option<LastBlock>, start: u64, memory: &mut Memory) -> Option<BlockId> {
        let mut slot = None;
        if let Some(previous) = last {
            let exits = self.cache.block_info(previous.block).map(|info| info.exits);
            for candidate in [ExitSlot::Taken, ExitSlot::FallThrough] {
                if exits.and_then(|exits| exits[candidate as usize]) == Some(start) {
                    if let Some(next) = self.cache.successor(previous.block, candidate) {
                        return Some(next);
                    }
                    slot = Some(candidate);
                    break;
                }
            }
        }
        let block = match self.cache.lookup(BlockKey::new(start, 0)) {
            Some(block) => block,
            None => self.build(memory, start)?,
        };
        if let (Some(previous), Some(slot)) = (last, slot) {
            self.cache.link(previous.block, slot, block);
        }
        Some(block)
    }
}

/// The op for `inst` and whether the block ends after it.
fn predecode(inst: Inst, len: u8) -> (Op, bool) {
    let op = |handler: Handler, rd: u8, rs1: u8, rs2: u8, imm: i32| Op { handler, rd, rs1, rs2, len, imm };
    match inst {
        Inst::Lui { rd, imm } => (op(lui, rd, 0, 0, imm), false),
        Inst::Auipc { rd, imm } => (op(auipc, rd, 0, 0, imm), false),
        Inst::Jal { rd, offset } => (op(jal, rd, 0, 0, offset), true),
        Inst::Jalr { rd, rs1, offset } => (op(jalr, rd, rs1, 0, offset), true),
        Inst::Branch { cond, rs1, rs2, offset } => (op(BRANCH[cond as usize], 0, rs1, rs2, offset), true),
        Inst::Load { width, rd, rs1, offset } => (op(LOAD[width as usize], rd, rs1, 0, offset), false),
        Inst::Store { width, rs1, rs2, offset } => (op(STORE[width as usize], 0, rs1, rs2, offset), false),
        Inst::OpImm { op: kind, rd, rs1, imm } => (op(OP_IMM[kind as usize], rd, rs1, 0, imm), false),
        Inst::Op { op: kind, rd, rs1, rs2 } => (op(OP[kind as usize], rd, rs1, rs2, 0), false),
        Inst::Fence { .. } | Inst::FenceI => (op(nop, 0, 0, 0, 0), false),
        // Everything the dispatcher sees ends a block: it leaves the engine anyway.
        Inst::Illegal(_)
        | Inst::Ecall
        | Inst::Ebreak
        | Inst::Sret
        | Inst::Mret
        | Inst::Wfi
        | Inst::SfenceVma { .. }
        | Inst::Csr { .. } => (op(fallback, 0, 0, 0, 0), true),
        _ => (op(fallback, 0, 0, 0, 0), false),
    }
}

/// Retires the op: the pc moves past it.
#[inline(always)]
fn next(hart: &mut Hart, op: &Op) -> Result<Flow, Exit> {
    hart.pc = hart.pc.wrapping_add(op.len as u64);
    hart.instret = hart.instret.wrapping_add(1);
    Ok(Flow::Next)
}

/// Retires a control transfer to `target`.
#[inline(always)]
fn jump(hart: &mut Hart, target: u64) -> Result<Flow, Exit> {
    hart.pc = target;
    hart.instret = hart.instret.wrapping_add(1);
    Ok(Flow::End)
}

fn fallback(hart: &mut Hart, memory: &mut Memory, _op: &Op) -> Result<Flow, Exit> {
    interp::step(hart, memory)?;
    Ok(if memory.ram.has_dirty_code() { Flow::End } else { Flow::Next })
}

fn nop(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    next(hart, op)
}

fn lui(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    hart.set_x(op.rd, op.imm as i64 as u64);
    next(hart, op)
}

fn auipc(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    hart.set_x(op.rd, hart.pc.wrapping_add(op.imm as i64 as u64));
    next(hart, op)
}

fn jal(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    let pc = hart.pc;
    hart.set_x(op.rd, pc.wrapping_add(op.len as u64));
    jump(hart, pc.wrapping_add(op.imm as i64 as u64))
}

fn jalr(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    let target = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64) & !1;
    hart.set_x(op.rd, hart.pc.wrapping_add(op.len as u64));
    jump(hart, target)
}

fn branch<const COND: usize>(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    let pc = hart.pc;
    if branch_taken(BRANCH_CONDS[COND], hart.x(op.rs1), hart.x(op.rs2)) {
        jump(hart, pc.wrapping_add(op.imm as i64 as u64))
    } else {
        jump(hart, pc.wrapping_add(op.len as u64))
    }
}

fn op_imm<const KIND: usize>(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    hart.set_x(op.rd, alu_imm(OP_IMM_KINDS[KIND], hart.x(op.rs1), op.imm));
    next(hart, op)
}

fn op_reg<const KIND: usize>(hart: &mut Hart, _memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    hart.set_x(op.rd, alu(OP_KINDS[KIND], hart.x(op.rs1), hart.x(op.rs2)));
    next(hart, op)
}

fn load<const WIDTH: usize>(hart: &mut Hart, memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    let width = LOAD_WIDTHS[WIDTH];
    let addr = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64);
    let size = width.bytes();
    let signed = matches!(width, LoadWidth::B | LoadWidth::H | LoadWidth::W | LoadWidth::D);
    match memory.load(hart, addr, size, AccessType::Load).map_err(exception)? {
        Loaded::Value(value) => hart.set_x(op.rd, extend(value, size as u8, signed)),
        Loaded::Device(gpa) => return Err(mmio(gpa, size, MmioKind::Load { rd: op.rd, signed }, op.len as u64)),
    }
    next(hart, op)
}

fn store<const WIDTH: usize>(hart: &mut Hart, memory: &mut Memory, op: &Op) -> Result<Flow, Exit> {
    let width = STORE_WIDTHS[WIDTH];
    let addr = hart.x(op.rs1).wrapping_add(op.imm as i64 as u64);
    let size = width.bytes();
    let value = hart.x(op.rs2);
    if let Some(gpa) = memory.store(hart, addr, size, value).map_err(exception)? {
        let value = value & interp::mask(width);
        return Err(mmio(gpa, size, MmioKind::Store { value }, op.len as u64));
    }
    next(hart, op)?;
    // A store into watched code: the blocks of that page (maybe this one) must go before anything else runs.
    Ok(if memory.ram.has_dirty_code() { Flow::End } else { Flow::Next })
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
