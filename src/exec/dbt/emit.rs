//! The translator proper: one guest block (decoded with the shared decoder, RVC and all) to x86-64 host code,
//! assembled with `iced-x86`'s code assembler.
//!
//! Register use in translated code: `rbx` the [`Env`], `rbp` the budget left (written back to the [`Env`] when
//! the dispatcher's call returns), `r12` the guest registers (`hart.x`), `r13` the block's virtual pc, `r14` the
//! first byte of guest RAM, `r15` the soft TLB's view for the run's keys in blocks with paged data accesses;
//! `r8`-`r10`, `rdi`, `rsi` (and `r15` in the other blocks) hold the guest registers the block uses most
//! ([`super::regs`]: written back to `hart.x` before every exit and call out); `rax`, `rcx`, `rdx`, `r11` are
//! scratch. The code is position-independent (branches are internal, helpers and link slots are reached through
//! absolute addresses), so it is assembled once and copied to wherever the cache puts it, with the addresses of
//! its link slots put in place of their placeholders.
//!
//! Chaining: a static exit to the block's own page jumps through a link slot, a word of data (never code) that
//! holds either the address of the block's own `unlinked` exit or, once the dispatcher linked it, the chained
//! entry (offset 0) of the block at the target; that entry charges the target's instructions to the budget or,
//! short of budget, returns to the dispatcher. The target's RAM offset is the exit's RAM offset in the
//! same page, so within one engine run (one translation context) the link holds. A slot is linked only to the
//! block at the RAM offset recorded for it ([`Translated::slot_targets`]).
//!
//! Other exits (indirect jumps, static exits to another page, exits past the last slot) go to one probe per
//! block ([`Exits::emit_lookup`]): the target pc's RAM offset by the fast fetch path (window or soft TLB, as
//! [`Memory::fast_fetch`](crate::mem::mmu::Memory::fast_fetch)), then the engine's target cache entry for that
//! offset, compared with the offset xor the engine's generation tag, whose chained entry it jumps to. Returns
//! (`jalr x0` through x1/x5) pop the return prediction ring first; calls push onto it (see the module docs of
//! [`super`]). The probe never dereferences the RAM offset it computes: it is only compared with keys.
//!
//! It must never touch host memory other than the [`Env`], the guest registers, the soft TLB's view (read-only),
//! the target cache (read-only), the ring, the link slots (read-only), the code watch and its granule masks
//! (read-only, below their page counts) and guest RAM below `Env::ram_len`; every access it cannot prove in
//! bounds takes the slow path.

use alloc::vec::Vec;
use core::mem::offset_of;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::assemble::Assembler;
use super::regs::{
    self, compare, compare_imm, load_into, load_into32, mem, r16, r32, r64, r8l, Binop, Cache, Src, HOSTS, RAX, RCX,
    RDX,
};
use super::{pack, status, Env, Window, JUMPS, RING, TLB_INDEX_MASK};
use crate::hart::Hart;
use crate::isa::{self, BranchCond, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::tlb::RAW_VIEW_LAYOUT as VIEW;
use crate::mem::PAGE_SIZE;

/// A translated block, ready to copy into code memory.
#[derive(Debug, Clone, Copy)]
/// Its code is in the [`Assembler`] it was assembled with.
pub(crate) struct Translated {
    /// Guest instructions.
    pub insts: u32,
    /// Guest bytes.
    pub guest_len: u32,
    /// Guest bytes the decoder read (from the block's start): its instructions, and the first parcel of an
    /// instruction straddling the page after them.
    pub read_len: u32,
    /// The RAM offsets of its static exits (taken, fall-through), as hints for the cache.
    pub exits: [Option<u64>; 2],
    /// Where the dispatcher calls it (the prologue); a chained jump enters at offset 0.
    pub entry: u32,
    /// Where its unlinked exits go: the default of its link slots.
    pub unlinked: u32,
    /// The RAM offset each link slot may lead to (`None`: the slot is not used).
    pub slot_targets: [Option<u64>; LINKS],
    /// Host instructions emitted, and those of its straight-line path (the chained entry through the body's
    /// last exit: no stub, probe, shared exit, prologue or epilogue).
    pub host_insts: u32,
    pub body_insts: u32,
}

/// Exits of a block that may be chained: each has a link slot (see [`super::LinkSlots`]).
pub(crate) const LINKS: usize = 4;

/// The placeholder of link slot `k`'s address in assembled code, replaced once the block's place is known (the
/// value does not fit 32 bits, so it is always a 10-byte `mov r64, imm64` whose immediate can be replaced).
pub(crate) const fn slot_placeholder(k: usize) -> u64 {
    0x5a5a_5a5a_5a5a_0000 | k as u64
}

/// The placeholder of the block's entry counter address (with counting on), replaced as the slots' are.
pub(crate) const COUNTER_PLACEHOLDER: u64 = slot_placeholder(LINKS);

/// One guest instruction of a block.
#[derive(Clone, Copy)]
struct Guest {
    inst: Inst,
    /// Offset from the block's start.
    offset: u16,
    len: u8,
    /// A 4-byte instruction straddling the page, the block's last: the interpreter fetches and runs it (its word is
    /// never read here), and the block leaves for whatever pc it left behind.
    straddles: bool,
}

/// How a block's loads and stores find RAM on their fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataAccess {
    /// S/U-mode: the soft TLB, with the run's Sv39 or bare keys.
    Paged,
    /// M-mode: this window, compiled in as constants (the engine drops the blocks when the window changes).
    Window(Window),
}

/// Decodes and translates the block whose first instruction lies at RAM offset `start`, from `code`, a copy of
/// the guest bytes from `start` on (at most `limit` instructions, never past the page nor the copy's end), with
/// the data fast path `access`. `None`: nothing could be translated. The result depends on nothing but the
/// arguments and on `code` only up to [`Translated::read_len`].
pub(crate) fn translate(
    asm: &mut CodeAssembler,
    out: &mut Assembler,
    code: &[u8],
    start: u64,
    access: DataAccess,
    limit: usize,
    count: bool,
) -> Option<Translated> {
    let page_end = (start | (PAGE_SIZE - 1)) + 1;
    let parcel = |at: u64, size: usize| -> Option<u32> {
        let from = usize::try_from(at - start).ok()?;
        let bytes = code.get(from..from.checked_add(size)?)?;
        Some(bytes.iter().rev().fold(0u32, |word, &byte| word << 8 | byte as u32))
    };
    let mut guests = [Guest { inst: Inst::Illegal(0), offset: 0, len: 4, straddles: false }; super::MAX_BLOCK];
    let mut insts = 0;
    let mut at = start;
    let mut read_end = start;
    let mut falls_through = true;
    let mut taken = None;
    while insts < limit.min(super::MAX_BLOCK) && at < page_end {
        let Some(low) = parcel(at, 2) else { break };
        read_end = read_end.max(at + 2);
        let (word, len) = if low & 3 != 3 {
            (low, 2u8)
        } else if at + 4 > page_end {
            // Straddles the page: the block's last instruction, run by the interpreter, which fetches its two
            // halves through the MMU at every run (so the translation depends on neither, nor on the next page).
            *guests.get_mut(insts)? =
                Guest { inst: Inst::Illegal(0), offset: (at - start) as u16, len: 4, straddles: true };
            insts += 1;
            at = page_end;
            falls_through = false;
            break;
        } else {
            let Some(word) = parcel(at, 4) else { break };
            read_end = read_end.max(at + 4);
            (word, 4u8)
        };
        let inst = isa::decode(word).inst;
        *guests.get_mut(insts)? = Guest { inst, offset: (at - start) as u16, len, straddles: false };
        insts += 1;
        at += len as u64;
        match inst {
            Inst::Jal { offset, .. } => {
                taken = Some((at - len as u64).wrapping_add(offset as i64 as u64));
                falls_through = false;
                break;
            }
            Inst::Jalr { .. } => {
                falls_through = false;
                break;
            }
            _ if ends_block(&inst) => {
                falls_through = false;
                break;
            }
            _ => {}
        }
    }
    if insts == 0 {
        return None;
    }
    let guest_len = (at - start) as u32;
    asm.reset();
    let labels = emit_block(asm, guests.get(..insts)?, access, guest_len, start & (PAGE_SIZE - 1), count).ok()?;
    let host_insts = asm.instructions().len() as u32;
    out.assemble(asm).ok()?;
    let entry = out.label_offset(&labels.entry)?;
    let unlinked = out.label_offset(&labels.unlinked)?;
    Some(Translated {
        insts: insts as u32,
        guest_len,
        read_len: (read_end - start) as u32,
        exits: [taken, (falls_through && at < page_end).then_some(at)],
        entry,
        unlinked,
        slot_targets: labels.slot_targets.map(|delta| delta.map(|delta| start.wrapping_add(delta as u64))),
        host_insts,
        body_insts: labels.body_insts,
    })
}

/// Instructions run by the interpreter after which the block ends: they leave the engine (almost) always.
fn ends_block(inst: &Inst) -> bool {
    matches!(
        inst,
        Inst::Illegal(_)
            | Inst::Ecall
            | Inst::Ebreak
            | Inst::Csr { .. }
            | Inst::Mret
            | Inst::Sret
            | Inst::Wfi
            | Inst::SfenceVma { .. }
    ) || *inst == isa::PAUSE
}

const ENV: AsmRegister64 = rbx;
/// The budget left, from the [`Env`]'s at entry from the dispatcher to the [`Env`]'s at the return to it (a
/// register, callee-saved so helper calls keep it: block entries charge it in a dependency chain of registers,
/// not of stores and loads of memory).
const BUDGET: AsmRegister64 = rbp;
const X: AsmRegister64 = r12;
const PC: AsmRegister64 = r13;
const RAM: AsmRegister64 = r14;
const TLB_BASE: AsmRegister64 = r15;

fn env(field: usize) -> AsmMemoryOperand {
    qword_ptr(ENV + field as i32)
}

/// An exit stub emitted out of line after the block's straight-line code.
enum Stub {
    /// A taken branch: the block ends at pc `target` (an offset from the block's pc) with `retired`, the guest
    /// registers held as in `cache`.
    Taken { label: CodeLabel, target: i64, retired: u16, cache: Cache },
    /// A store to a watched page (its index in rdx, its granule mask in r11, its RAM offset in rcx, `size` bytes
    /// within the page): to `store` when the granules of its first and last byte hold no code, else to `slow`.
    Granules { label: CodeLabel, store: CodeLabel, slow: CodeLabel, size: i32 },
    /// A store to a page without a granule mask (no granular watch; its index in rdx): to `slow` when the page
    /// is watched (or beyond the watch), else to `store`.
    PageBit { label: CodeLabel, store: CodeLabel, slow: CodeLabel },
    /// A load's or store's slow path (the `helper`): the registers held as in `before` are written back before
    /// the call, those of `after` (the state at `back`) loaded again after it. `rax_from`: the address's register
    /// and displacement when the fast path left the address in rcx only.
    Slow {
        label: CodeLabel,
        back: CodeLabel,
        packed: u64,
        helper: usize,
        before: Cache,
        after: Cache,
        rax_from: Option<(u8, i32)>,
    },
}

/// The labels the dispatcher needs the offsets of.
struct Labels {
    entry: CodeLabel,
    unlinked: CodeLabel,
    /// The target of each link slot given out, as an offset from the block's start.
    slot_targets: [Option<i64>; LINKS],
    /// Host instructions of the straight-line path.
    body_insts: u32,
}

/// The exits of one block as it is emitted: how its instructions leave.
struct Exits {
    /// Guest instructions in the block (charged to the budget at entry, refunded for those an exit skips).
    insts: u16,
    /// The block's page offset: a static exit within the page may be chained.
    page_offset: u64,
    /// Link slots given out, and where each leads (an offset from the block's start).
    links: usize,
    slot_targets: [Option<i64>; LINKS],
    /// The target cache probe (see [`Exits::lookup`]), emitted once if any exit uses it.
    lookup: CodeLabel,
    lookup_used: bool,
    /// The block's chained entry (offset 0).
    start: CodeLabel,
    /// Leaves with `r13` the next pc, nothing more retired: writes `Env::pc`, returns [`status::END`].
    leave: CodeLabel,
    /// Leaves after a helper returned a status (in `eax`): refunds what it did not retire.
    helper_exit: CodeLabel,
    /// Whether the block counts its return predictions and target cache probes (in `Env::counts`).
    count: bool,
}

impl Exits {
    /// With counting on, adds one to `Env::counts[k]` (clobbers the flags).
    fn tally(&self, a: &mut CodeAssembler, k: usize) -> Result<(), IcedError> {
        if self.count {
            a.add(env(offset_of!(Env, counts) + 8 * k), 1)?;
        }
        Ok(())
    }

    /// A link slot for a static exit to pc `r13 + delta`, if the target lies in the block's page and a slot is
    /// left.
    fn take_slot(&mut self, delta: i64) -> Option<usize> {
        let in_page = (self.page_offset as i64).checked_add(delta).is_some_and(|t| (0..PAGE_SIZE as i64).contains(&t));
        let k = self.links;
        let target = self.slot_targets.get_mut(k).filter(|_| in_page)?;
        *target = Some(delta);
        self.links += 1;
        Some(k)
    }

    /// Ends the block at pc `r13 + delta` with `retired` of its instructions retired: straight to its own
    /// chained entry when the target is its own start (a loop: the same pc, so the same RAM offset and block),
    /// else through a link slot when the target lies in the block's page (and a slot is left), else through the
    /// target cache.
    fn end(&mut self, a: &mut CodeAssembler, delta: i64, retired: u16) -> Result<(), IcedError> {
        let refund = self.insts - retired;
        if refund > 0 {
            a.add(BUDGET, refund as i32)?;
        }
        if delta == 0 {
            return a.jmp(self.start);
        }
        pc_plus(a, PC, delta)?;
        match self.take_slot(delta) {
            Some(k) => {
                a.mov(rax, slot_placeholder(k))?;
                a.jmp(qword_ptr(rax))
            }
            None => {
                self.lookup_used = true;
                a.jmp(self.lookup)
            }
        }
    }

    /// Ends the block at the pc in `rax` (an indirect jump), all of it retired: a return (`ret`) first tries the
    /// return prediction, then everything the target cache.
    fn end_dynamic(&mut self, a: &mut CodeAssembler, retired: u16, ret: bool) -> Result<(), IcedError> {
        let refund = self.insts - retired;
        if refund > 0 {
            a.add(BUDGET, refund as i32)?;
        }
        if ret {
            // Pop the top prediction (always, so the ring stays in step with the calls); a match jumps through
            // the link slot of the call's block for its return site (r13 the target, rax the slot, as any
            // chained exit).
            let mut miss = a.create_label();
            a.mov(r11, env(offset_of!(Env, ring)))?;
            a.mov(ecx, dword_ptr(r11))?;
            a.mov(edx, ecx)?;
            a.sub(ecx, 1)?;
            a.and(ecx, RING as i32 - 1)?;
            a.mov(dword_ptr(r11), ecx)?;
            a.and(edx, RING as i32 - 1)?;
            a.shl(edx, 4)?;
            a.cmp(rax, qword_ptr(r11 + rdx + 8))?;
            a.jne(miss)?;
            self.tally(a, super::COUNT_RING_HITS)?;
            a.mov(PC, rax)?;
            a.mov(rax, qword_ptr(r11 + rdx + 16))?;
            a.jmp(qword_ptr(rax))?;
            a.set_label(&mut miss)?;
            self.tally(a, super::COUNT_RING_MISSES)?;
        }
        a.mov(PC, rax)?;
        self.lookup_used = true;
        a.jmp(self.lookup)
    }

    /// At a call (a `jal`/`jalr` linking x1 or x5) whose return site is `r13 + delta`: pushes the return
    /// prediction (the return pc and the address of a link slot of this block for it), or, when the site is
    /// outside the page or no slot is left, an entry no return matches (pc 1), so the ring stays in step.
    /// Clobbers `rcx`, `rdx`, `r11`.
    fn push_return(&mut self, a: &mut CodeAssembler, delta: i64) -> Result<(), IcedError> {
        a.mov(r11, env(offset_of!(Env, ring)))?;
        a.mov(ecx, dword_ptr(r11))?;
        a.add(ecx, 1)?;
        a.and(ecx, RING as i32 - 1)?;
        a.mov(dword_ptr(r11), ecx)?;
        a.shl(ecx, 4)?;
        match self.take_slot(delta) {
            Some(k) => {
                pc_plus(a, rdx, delta)?;
                a.mov(qword_ptr(r11 + rcx + 8), rdx)?;
                a.mov(rdx, slot_placeholder(k))?;
                a.mov(qword_ptr(r11 + rcx + 16), rdx)
            }
            None => a.mov(qword_ptr(r11 + rcx + 8), 1),
        }
    }

    /// The target cache probe, at `lookup`, with the target pc in `r13` (the budget refunded): the pc's RAM
    /// offset as [`Memory::fast_fetch`](crate::mem::mmu::Memory::fast_fetch) finds it (the executable M-mode
    /// window, else the soft TLB with the fetch key), then the entry of the engine's table for that offset
    /// (tagged with the engine's generation), whose block's chained entry it jumps to. Anything else leaves for
    /// the dispatcher.
    fn emit_lookup(&mut self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        let mut window_hit = a.create_label();
        let mut probe = a.create_label();
        a.set_label(&mut self.lookup)?;
        self.tally(a, super::COUNT_PROBES)?;
        a.mov(rcx, PC)?;
        a.sub(rcx, env(offset_of!(Env, fetch_base)))?;
        a.cmp(rcx, env(offset_of!(Env, fetch_size)))?;
        a.jb(window_hit)?;
        a.cmp(env(offset_of!(Env, fetch_paged)), 0)?;
        a.je(self.leave)?;
        // The fetch half of the run's view of the soft TLB (fetches are paged only where data accesses are).
        a.mov(r11, env(offset_of!(Env, view)))?;
        a.mov(rcx, PC)?;
        a.shr(rcx, 12)?;
        a.mov(edx, ecx)?;
        a.and(edx, TLB_INDEX_MASK as i32)?;
        a.shl(edx, VIEW.entry_size.trailing_zeros())?;
        a.or(rcx, env(offset_of!(Env, view_tag)))?;
        a.cmp(rcx, qword_ptr(r11 + rdx + (VIEW.fetch + VIEW.tag) as i32))?;
        a.jne(self.leave)?;
        a.mov(ecx, r13d)?;
        a.and(ecx, 0xfff)?;
        a.add(rcx, qword_ptr(r11 + rdx + (VIEW.fetch + VIEW.page) as i32))?;
        a.jmp(probe)?;
        a.set_label(&mut window_hit)?;
        a.add(rcx, env(offset_of!(Env, fetch_host)))?;
        a.set_label(&mut probe)?;
        a.mov(rdx, env(offset_of!(Env, jumps)))?;
        a.mov(r11d, ecx)?;
        a.shr(r11d, 1)?;
        a.and(r11d, JUMPS as i32 - 1)?;
        a.shl(r11d, 4)?;
        a.xor(rcx, env(offset_of!(Env, jump_tag)))?;
        a.cmp(rcx, qword_ptr(rdx + r11))?;
        a.jne(self.leave)?;
        self.tally(a, super::COUNT_PROBE_HITS)?;
        a.jmp(qword_ptr(rdx + r11 + 8))
    }
}

/// Emits a block. Layout: offset 0 is the chained entry (budget check and charge, then the body); after the body
/// come the out-of-line stubs, the shared exits, the epilogue, and last the prologue the dispatcher calls
/// (`Labels::entry`), which sets up the registers and jumps to offset 0.
fn emit_block(
    a: &mut CodeAssembler,
    guests: &[Guest],
    access: DataAccess,
    guest_len: u32,
    page_offset: u64,
    count: bool,
) -> Result<Labels, IcedError> {
    let (paged, ram_window) = match access {
        DataAccess::Paged => (true, Window::default()),
        DataAccess::Window(window) => (false, window),
    };
    let mut epilogue = a.create_label();
    let mut body = a.create_label();
    let mut labels =
        Labels { entry: a.create_label(), unlinked: a.create_label(), slot_targets: [None; LINKS], body_insts: 0 };
    let mut exits = Exits {
        insts: guests.len() as u16,
        page_offset,
        links: 0,
        slot_targets: [None; LINKS],
        lookup: a.create_label(),
        lookup_used: false,
        start: body,
        leave: a.create_label(),
        helper_exit: a.create_label(),
        count,
    };
    let mut stubs: Vec<Stub> = Vec::new();
    // Chained entry: the whole block must fit the budget, or back to the dispatcher with nothing done.
    a.set_label(&mut body)?;
    if count {
        // Counting entries (for the dynamic figure of host instructions per guest instruction).
        a.mov(rax, COUNTER_PLACEHOLDER)?;
        a.add(qword_ptr(rax), 1)?;
    }
    a.cmp(BUDGET, exits.insts as i32)?;
    a.jb(exits.leave)?;
    a.sub(BUDGET, exits.insts as i32)?;
    // Blocks with paged data accesses keep the soft TLB's address in r15; the others hold a guest register there.
    let mut cache = Cache::choose(guests.iter().map(|guest| guest.inst), if paged { HOSTS - 1 } else { HOSTS });
    let mut ended = false;
    for (index, guest) in guests.iter().enumerate() {
        let index = index as u16;
        let offset = guest.offset as i64;
        let next = offset + guest.len as i64;
        if guest.straddles {
            // Whatever it is (a jump, a branch, anything), the interpreter left the next pc in `hart.pc`.
            step_through_interpreter(a, &mut cache, guest, index, exits.helper_exit)?;
            a.mov(r11, env(offset_of!(Env, hart)))?;
            a.mov(rax, qword_ptr(r11 + offset_of!(Hart, pc)))?;
            exits.end_dynamic(a, index + 1, false)?;
            ended = true;
            break;
        }
        match guest.inst {
            Inst::Lui { rd, imm } => cache.set_imm(a, rd, imm)?,
            Inst::Auipc { rd, imm } => {
                if rd != 0 {
                    let t = cache.target(rd);
                    pc_plus(a, r64(t), offset + imm as i64)?;
                    cache.set(a, rd, t)?;
                }
            }
            Inst::Jal { rd, offset: delta } => {
                if rd != 0 {
                    let t = cache.target(rd);
                    pc_plus(a, r64(t), next)?;
                    cache.set(a, rd, t)?;
                }
                if is_link(rd) {
                    exits.push_return(a, next)?;
                }
                cache.flush(a)?;
                exits.end(a, offset + delta as i64, index + 1)?;
                ended = true;
            }
            Inst::Jalr { rd, rs1, offset: delta } => {
                address(a, &mut cache, RAX, rs1, delta)?;
                a.and(rax, -2)?;
                if rd != 0 {
                    let t = cache.dest(rd).unwrap_or(RCX);
                    pc_plus(a, r64(t), next)?;
                    cache.set(a, rd, t)?;
                }
                if is_link(rd) {
                    exits.push_return(a, next)?;
                }
                cache.flush(a)?;
                exits.end_dynamic(a, index + 1, rd == 0 && is_link(rs1))?;
                ended = true;
            }
            Inst::Branch { cond, rs1, rs2, offset: delta } => {
                let s1 = cache.src(a, rs1)?;
                let s2 = cache.src(a, rs2)?;
                compare(a, s1, s2)?;
                let label = a.create_label();
                match cond {
                    BranchCond::Eq => a.je(label)?,
                    BranchCond::Ne => a.jne(label)?,
                    BranchCond::Lt => a.jl(label)?,
                    BranchCond::Ge => a.jge(label)?,
                    BranchCond::Ltu => a.jb(label)?,
                    BranchCond::Geu => a.jae(label)?,
                }
                stubs.push(Stub::Taken { label, target: offset + delta as i64, retired: index + 1, cache });
            }
            Inst::OpImm { op, rd, rs1, imm } => {
                if rd != 0 {
                    op_imm(a, &mut cache, op, rd, rs1, imm)?;
                }
            }
            Inst::Op { op, rd, rs1, rs2 } => {
                if rd != 0 {
                    op_reg(a, &mut cache, op, rd, rs1, rs2)?;
                }
            }
            Inst::Load { width, rd, rs1, offset: disp } => {
                let packed = pack(rd, width as u8, guest.len, guest.offset, index);
                let rebased = data_address(a, &mut cache, paged, &ram_window, rs1, disp)?;
                let before = cache;
                let slow = a.create_label();
                let mut back = a.create_label();
                let size = width.bytes() as i32;
                if paged {
                    tlb_lookup(a, false, size, slow)?;
                } else {
                    window(a, &ram_window, rebased, slow)?;
                }
                let source = match size {
                    1 => byte_ptr(RAM + rcx),
                    2 => word_ptr(RAM + rcx),
                    4 => dword_ptr(RAM + rcx),
                    _ => qword_ptr(RAM + rcx),
                };
                // Straight into the destination's host register, or through `rdx` to `hart.x`.
                let t = cache.target(rd);
                let t = if t == RAX { RDX } else { t };
                match width {
                    LoadWidth::B | LoadWidth::H => a.movsx(r64(t), source)?,
                    LoadWidth::W => a.movsxd(r64(t), source)?,
                    LoadWidth::Bu | LoadWidth::Hu => a.movzx(r32(t), source)?,
                    LoadWidth::Wu => a.mov(r32(t), source)?,
                    LoadWidth::D => a.mov(r64(t), source)?,
                }
                cache.set(a, rd, t)?;
                a.set_label(&mut back)?;
                let helper = super::load_slow as *const () as usize;
                let rax_from = (!paged).then_some((rs1, disp));
                stubs.push(Stub::Slow { label: slow, back, packed, helper, before, after: cache, rax_from });
            }
            Inst::Store { width, rs1, rs2, offset: disp } => {
                let packed = pack(rs2, width as u8, guest.len, guest.offset, index);
                let rebased = data_address(a, &mut cache, paged, &ram_window, rs1, disp)?;
                // The value's register is loaded here, before any check, so the slow path finds it as the fast
                // path leaves it.
                let value = cache.src(a, rs2)?;
                let slow = a.create_label();
                let mut back = a.create_label();
                let size = width.bytes() as i32;
                if paged {
                    tlb_lookup(a, true, size, slow)?;
                } else {
                    window(a, &ram_window, rebased, slow)?;
                    if size > 1 {
                        // Aligned, so within one page and one granule of RAM (one watch entry covers it); a
                        // misaligned store, rare, takes the slow path.
                        a.test(cl, size - 1)?;
                        a.jnz(slow)?;
                    }
                }
                // A store to the granules of a watched code page that may hold code (or with no watch at all)
                // takes the slow path, which notes the write; data beside code (the other granules of a
                // granular watch, as `Ram` tells them apart) is stored here. The access lies within one page.
                // Inline, the page's granule mask, which a granular watch sets whenever it watches the page (and
                // clears before the page's bit): most stores go to pages whose mask is 0. The granules of a
                // watched page, and the page's bit without granules, are checked out of line.
                let mut store = a.create_label();
                let watched = a.create_label();
                let by_page = a.create_label();
                a.mov(rdx, rcx)?;
                a.shr(rdx, 12)?;
                a.cmp(rdx, env(offset_of!(Env, granule_pages)))?;
                a.jae(by_page)?;
                a.mov(r11, env(offset_of!(Env, granules)))?;
                a.mov(r11, qword_ptr(r11 + rdx * 8))?;
                a.test(r11, r11)?;
                a.jnz(watched)?;
                a.set_label(&mut store)?;
                stubs.push(Stub::Granules { label: watched, store, slow, size });
                stubs.push(Stub::PageBit { label: by_page, store, slow });
                let value = match value {
                    Src::Mem(r) => {
                        a.mov(rdx, mem(r))?;
                        Src::Reg(RDX)
                    }
                    other => other,
                };
                match (width, value) {
                    (StoreWidth::B, Src::Reg(h)) => a.mov(byte_ptr(RAM + rcx), r8l(h))?,
                    (StoreWidth::H, Src::Reg(h)) => a.mov(word_ptr(RAM + rcx), r16(h))?,
                    (StoreWidth::W, Src::Reg(h)) => a.mov(dword_ptr(RAM + rcx), r32(h))?,
                    (StoreWidth::D, Src::Reg(h)) => a.mov(qword_ptr(RAM + rcx), r64(h))?,
                    (StoreWidth::B, _) => a.mov(byte_ptr(RAM + rcx), 0)?,
                    (StoreWidth::H, _) => a.mov(word_ptr(RAM + rcx), 0)?,
                    (StoreWidth::W, _) => a.mov(dword_ptr(RAM + rcx), 0)?,
                    (StoreWidth::D, _) => a.mov(qword_ptr(RAM + rcx), 0)?,
                }
                a.set_label(&mut back)?;
                let helper = super::store_slow as *const () as usize;
                let rax_from = (!paged).then_some((rs1, disp));
                stubs.push(Stub::Slow { label: slow, back, packed, helper, before: cache, after: cache, rax_from });
            }
            // Harts on other host threads: x86-64 keeps every order of plain accesses but store -> load.
            Inst::Fence { fm, pred, succ } if isa::fence_orders_stores_before_loads(fm, pred, succ) => a.mfence()?,
            // No instruction cache to keep coherent, and a store to code already ends its block. (`fence.i` goes
            // through the interpreter, which runs the code watch's deferred fence.)
            Inst::Fence { .. } if guest.inst != isa::PAUSE => {}
            // Everything else through the interpreter, which sees and may change every guest register.
            _ => {
                step_through_interpreter(a, &mut cache, guest, index, exits.helper_exit)?;
                if ends_block(&guest.inst) {
                    exits.end(a, next, index + 1)?;
                    ended = true;
                }
            }
        }
    }
    if !ended {
        cache.flush(a)?;
        exits.end(a, guest_len as i64, guests.len() as u16)?;
    }
    labels.body_insts = a.instructions().len() as u32;
    for stub in stubs {
        match stub {
            Stub::Taken { mut label, target, retired, cache } => {
                a.set_label(&mut label)?;
                cache.write_back(a)?;
                exits.end(a, target, retired)?;
            }
            Stub::Granules { mut label, store, slow, size } => {
                a.set_label(&mut label)?;
                // `bt` on a register takes the bit number modulo 64: the granule within the page.
                a.mov(edx, ecx)?;
                a.shr(edx, 6)?;
                a.bt(r11, rdx)?;
                a.jb(slow)?;
                a.lea(edx, dword_ptr(rcx + (size - 1)))?;
                a.shr(edx, 6)?;
                a.bt(r11, rdx)?;
                a.jb(slow)?;
                a.jmp(store)?;
            }
            Stub::PageBit { mut label, store, slow } => {
                a.set_label(&mut label)?;
                a.cmp(rdx, env(offset_of!(Env, watch_pages)))?;
                a.jae(slow)?;
                // The page's word of the watch, then its bit (`bt` on memory with a register bit offset is
                // microcoded, several times slower than these).
                a.mov(r11, rdx)?;
                a.shr(r11, 6)?;
                a.shl(r11, 3)?;
                a.add(r11, env(offset_of!(Env, watch)))?;
                a.mov(r11, qword_ptr(r11))?;
                a.bt(r11, rdx)?;
                a.jb(slow)?;
                a.jmp(store)?;
            }
            Stub::Slow { mut label, back, packed, helper, before, after, rax_from } => {
                a.set_label(&mut label)?;
                before.write_back(a)?;
                if let Some((rs1, disp)) = rax_from {
                    // rs1 is loaded in `before` if the block holds it (the fast path read it): no code here.
                    let mut cache = before;
                    address(a, &mut cache, RAX, rs1, disp)?;
                }
                slow_call(a, helper, packed, exits.helper_exit)?;
                after.reload(a)?;
                a.jmp(back)?;
            }
        }
    }
    if exits.lookup_used {
        exits.emit_lookup(a)?;
    }
    labels.slot_targets = exits.slot_targets;
    // A helper left (it set `Env::pc` and `Env::retired`): refund what the block did not retire.
    a.set_label(&mut exits.helper_exit)?;
    a.mov(ecx, exits.insts as u32)?;
    a.sub(rcx, env(offset_of!(Env, retired)))?;
    a.add(BUDGET, rcx)?;
    a.jmp(epilogue)?;
    // An unlinked slot: the dispatcher links it once it has the block at `r13`.
    a.set_label(&mut labels.unlinked)?;
    a.mov(env(offset_of!(Env, link)), rax)?;
    a.set_label(&mut exits.leave)?;
    a.mov(env(offset_of!(Env, pc)), PC)?;
    a.mov(eax, status::END)?;
    a.set_label(&mut epilogue)?;
    a.mov(env(offset_of!(Env, budget)), BUDGET)?;
    a.add(rsp, 8)?;
    a.pop(r15)?;
    a.pop(r14)?;
    a.pop(r13)?;
    a.pop(r12)?;
    a.pop(rbp)?;
    a.pop(rbx)?;
    a.ret()?;
    // The dispatcher's entry: six pushes and eight bytes keep the stack 16-byte aligned at helper calls.
    a.set_label(&mut labels.entry)?;
    a.push(rbx)?;
    a.push(rbp)?;
    a.push(r12)?;
    a.push(r13)?;
    a.push(r14)?;
    a.push(r15)?;
    a.sub(rsp, 8)?;
    a.mov(ENV, rdi)?;
    a.mov(BUDGET, env(offset_of!(Env, budget)))?;
    a.mov(X, env(offset_of!(Env, x)))?;
    a.mov(PC, env(offset_of!(Env, entry_pc)))?;
    a.mov(RAM, env(offset_of!(Env, ram)))?;
    if paged {
        a.mov(TLB_BASE, env(offset_of!(Env, view)))?;
    }
    a.jmp(body)?;
    Ok(labels)
}

/// Runs `guest` through the interpreter's [`step`](super::step), which sees and may change every guest
/// register (all written back first, none held after), or leaves with its exit.
fn step_through_interpreter(
    a: &mut CodeAssembler,
    cache: &mut Cache,
    guest: &Guest,
    index: u16,
    helper_exit: CodeLabel,
) -> Result<(), IcedError> {
    cache.flush(a)?;
    cache.forget();
    a.mov(env(offset_of!(Env, entry_pc)), PC)?;
    a.mov(rdi, ENV)?;
    a.mov(rsi, pack(0, 0, guest.len, guest.offset, index))?;
    call(a, super::step as *const () as usize)?;
    a.test(eax, eax)?;
    a.jnz(helper_exit)
}

/// Whether `r` is a link register (x1 or x5): a `jal`/`jalr` writing it is a call, a `jalr x0` through it a
/// return.
fn is_link(r: u8) -> bool {
    r == 1 || r == 5
}

/// `dst = block pc + delta`.
fn pc_plus(a: &mut CodeAssembler, dst: AsmRegister64, delta: i64) -> Result<(), IcedError> {
    match i32::try_from(delta) {
        Ok(delta) => a.lea(dst, qword_ptr(PC + delta)),
        Err(_) => {
            a.mov(dst, delta)?;
            a.add(dst, PC)
        }
    }
}

/// Calls the helper at `function` (the stack is 16-byte aligned in a block's body).
fn call(a: &mut CodeAssembler, function: usize) -> Result<(), IcedError> {
    a.mov(r11, function as u64)?;
    a.call(r11)
}

/// A load's or store's slow path: `helper(env, address in rax, packed)`, then on, or leave.
fn slow_call(a: &mut CodeAssembler, function: usize, packed: u64, helper_exit: CodeLabel) -> Result<(), IcedError> {
    a.mov(env(offset_of!(Env, entry_pc)), PC)?;
    a.mov(rdi, ENV)?;
    a.mov(rsi, rax)?;
    a.mov(rdx, packed)?;
    call(a, function)?;
    a.test(eax, eax)?;
    a.jnz(helper_exit)
}

/// `r64(dst) = x[rs1] + disp`, the virtual address of a load or store (or the target of a `jalr`).
fn address(a: &mut CodeAssembler, cache: &mut Cache, dst: u8, rs1: u8, disp: i32) -> Result<(), IcedError> {
    match cache.src(a, rs1)? {
        Src::Zero => a.mov(r64(dst), disp as i64),
        Src::Reg(h) if disp != 0 => a.lea(r64(dst), qword_ptr(r64(h) + disp)),
        Src::Reg(h) => a.mov(r64(dst), r64(h)),
        Src::Mem(r) => {
            a.mov(r64(dst), mem(r))?;
            if disp != 0 {
                a.add(r64(dst), disp)?;
            }
            Ok(())
        }
    }
}

/// The address of a load or store, `x[rs1] + disp`: into `rax` for the soft TLB (`paged`); else into `rcx`,
/// less the window's base where that folds into the displacement (RAM at 0x8000_0000: any `disp` >= 0), which
/// it returns (the slow path computes the address again, into `rax`).
fn data_address(
    a: &mut CodeAssembler,
    cache: &mut Cache,
    paged: bool,
    window: &Window,
    rs1: u8,
    disp: i32,
) -> Result<bool, IcedError> {
    if paged {
        address(a, cache, RAX, rs1, disp)?;
        return Ok(false);
    }
    match i32::try_from(i64::from(disp).wrapping_sub(window.base as i64)) {
        Ok(rebased) => address(a, cache, RCX, rs1, rebased).map(|()| true),
        Err(_) => address(a, cache, RCX, rs1, disp).map(|()| false),
    }
}

/// The M-mode RAM window, compiled in: `rcx`, the address (less the base if `rebased`), becomes its RAM offset,
/// or to `slow` (`rax` is scratch: the slow path computes the address again).
fn window(a: &mut CodeAssembler, window: &Window, rebased: bool, slow: CodeLabel) -> Result<(), IcedError> {
    // Each constant as a sign-extended 32-bit immediate where it fits (RAM at 0x8000_0000: -base does).
    match i32::try_from(window.base.wrapping_neg() as i64) {
        _ if rebased => {}
        Ok(minus_base) => a.add(rcx, minus_base)?,
        Err(_) => {
            a.mov(rax, window.base)?;
            a.sub(rcx, rax)?;
        }
    }
    match i32::try_from(window.limit) {
        Ok(limit) => a.cmp(rcx, limit)?,
        Err(_) => {
            a.mov(rax, window.limit)?;
            a.cmp(rcx, rax)?;
        }
    }
    a.jae(slow)?;
    match i32::try_from(window.host) {
        Ok(0) => Ok(()),
        Ok(host) => a.add(rcx, host),
        Err(_) => {
            a.mov(rax, window.host)?;
            a.add(rcx, rax)
        }
    }
}

/// The soft TLB lookup inlined for a load (or a `store`) of `size` bytes at the address in `rax`, through the
/// run's view of the TLB for its keys ([`SoftTlb::view`](crate::mem::tlb::SoftTlb::view), at `TLB_BASE`): `rcx` =
/// its RAM offset, or to `slow` (not in the view, or a page-crossing access). Thirteen host instructions (eleven
/// for a byte) where checking the TLB's own entry (tag, permission bit, ASID or global, bound) took twenty-three:
/// a view's pages lie in RAM, and the slow path fills the view.
fn tlb_lookup(a: &mut CodeAssembler, store: bool, size: i32, slow: CodeLabel) -> Result<(), IcedError> {
    let half = if store { VIEW.store as i32 } else { 0 };
    a.mov(rcx, rax)?;
    a.shr(rcx, 12)?;
    a.mov(edx, ecx)?;
    a.and(edx, TLB_INDEX_MASK as i32)?;
    a.shl(edx, VIEW.entry_size.trailing_zeros())?;
    a.or(rcx, env(offset_of!(Env, view_tag)))?;
    a.cmp(rcx, qword_ptr(TLB_BASE + rdx + (half + VIEW.tag as i32)))?;
    a.jne(slow)?;
    a.mov(ecx, eax)?;
    a.and(ecx, 0xfff)?;
    if size > 1 {
        a.cmp(ecx, 0x1000 - size)?;
        a.ja(slow)?;
    }
    a.add(rcx, qword_ptr(TLB_BASE + rdx + (half + VIEW.page as i32)))
}

/// `rd = rs1 op imm` (rd not x0).
fn op_imm(a: &mut CodeAssembler, cache: &mut Cache, op: OpImmKind, rd: u8, rs1: u8, imm: i32) -> Result<(), IcedError> {
    let shamt = (imm & 63) as u32;
    let t = cache.target(rd);
    match op {
        OpImmKind::Addi | OpImmKind::Ori | OpImmKind::Xori if rs1 == 0 => cache.set_imm(a, rd, imm),
        OpImmKind::Addi => {
            match cache.src(a, rs1)? {
                Src::Reg(h) if h != t && imm != 0 => a.lea(r64(t), qword_ptr(r64(h) + imm))?,
                source => {
                    load_into(a, t, source)?;
                    if imm != 0 {
                        a.add(r64(t), imm)?;
                    }
                }
            }
            cache.set(a, rd, t)
        }
        OpImmKind::Addiw | OpImmKind::Slliw | OpImmKind::Srliw | OpImmKind::Sraiw => {
            let source = cache.src(a, rs1)?;
            load_into32(a, t, source)?;
            match op {
                OpImmKind::Addiw => a.add(r32(t), imm)?,
                OpImmKind::Slliw => a.shl(r32(t), shamt & 31)?,
                OpImmKind::Srliw => a.shr(r32(t), shamt & 31)?,
                _ => a.sar(r32(t), shamt & 31)?,
            }
            a.movsxd(r64(t), r32(t))?;
            cache.set(a, rd, t)
        }
        OpImmKind::Slti | OpImmKind::Sltiu => {
            let source = cache.src(a, rs1)?;
            a.xor(edx, edx)?;
            compare_imm(a, source, imm)?;
            if op == OpImmKind::Slti {
                a.setl(dl)?;
            } else {
                a.setb(dl)?;
            }
            cache.set(a, rd, RDX)
        }
        OpImmKind::Xori | OpImmKind::Ori | OpImmKind::Andi | OpImmKind::Slli | OpImmKind::Srli | OpImmKind::Srai => {
            let source = cache.src(a, rs1)?;
            load_into(a, t, source)?;
            match op {
                OpImmKind::Xori => a.xor(r64(t), imm)?,
                OpImmKind::Ori => a.or(r64(t), imm)?,
                OpImmKind::Andi => a.and(r64(t), imm)?,
                OpImmKind::Slli => a.shl(r64(t), shamt)?,
                OpImmKind::Srli => a.shr(r64(t), shamt)?,
                _ => a.sar(r64(t), shamt)?,
            }
            cache.set(a, rd, t)
        }
    }
}

/// `rd = rs1 op rs2` (rd not x0).
fn op_reg(a: &mut CodeAssembler, cache: &mut Cache, op: OpKind, rd: u8, rs1: u8, rs2: u8) -> Result<(), IcedError> {
    let s1 = cache.src(a, rs1)?;
    let s2 = cache.src(a, rs2)?;
    let binop = match op {
        OpKind::Add | OpKind::Addw => Some(Binop::Add),
        OpKind::Sub | OpKind::Subw => Some(Binop::Sub),
        OpKind::Xor => Some(Binop::Xor),
        OpKind::Or => Some(Binop::Or),
        OpKind::And => Some(Binop::And),
        OpKind::Mul | OpKind::Mulw => Some(Binop::Mul),
        _ => None,
    };
    let wide = !matches!(op, OpKind::Addw | OpKind::Subw | OpKind::Mulw);
    if let Some(binop) = binop {
        // In rd's own host register when it has one, unless that is the second operand's (then the operands
        // swap when the operation commutes, else through rax).
        let mut t = cache.target(rd);
        let (mut s1, mut s2) = (s1, s2);
        if s2 == Src::Reg(t) && s1 != Src::Reg(t) {
            if binop.commutes() {
                (s1, s2) = (s2, s1);
            } else {
                t = RAX;
            }
        }
        if wide {
            load_into(a, t, s1)?;
            regs::binop(a, binop, t, s2, true)?;
        } else {
            load_into32(a, t, s1)?;
            regs::binop(a, binop, t, s2, false)?;
            a.movsxd(r64(t), r32(t))?;
        }
        return cache.set(a, rd, t);
    }
    match op {
        // x86-64 masks a 64-bit shift count to 6 bits and a 32-bit one to 5, as RISC-V does.
        OpKind::Sll | OpKind::Srl | OpKind::Sra | OpKind::Sllw | OpKind::Srlw | OpKind::Sraw => {
            load_into(a, RCX, s2)?;
            let t = cache.target(rd);
            match op {
                OpKind::Sll | OpKind::Srl | OpKind::Sra => {
                    load_into(a, t, s1)?;
                    match op {
                        OpKind::Sll => a.shl(r64(t), cl)?,
                        OpKind::Srl => a.shr(r64(t), cl)?,
                        _ => a.sar(r64(t), cl)?,
                    }
                }
                _ => {
                    load_into32(a, t, s1)?;
                    match op {
                        OpKind::Sllw => a.shl(r32(t), cl)?,
                        OpKind::Srlw => a.shr(r32(t), cl)?,
                        _ => a.sar(r32(t), cl)?,
                    }
                    a.movsxd(r64(t), r32(t))?;
                }
            }
            cache.set(a, rd, t)
        }
        OpKind::Slt | OpKind::Sltu => {
            a.xor(edx, edx)?;
            compare(a, s1, s2)?;
            if op == OpKind::Slt {
                a.setl(dl)?;
            } else {
                a.setb(dl)?;
            }
            cache.set(a, rd, RDX)
        }
        OpKind::Mulh | OpKind::Mulhu => {
            load_into(a, RAX, s1)?;
            let s2 = match s2 {
                Src::Zero => {
                    a.xor(ecx, ecx)?;
                    Src::Reg(RCX)
                }
                other => other,
            };
            match (op, s2) {
                (OpKind::Mulh, Src::Reg(h)) => a.imul(r64(h))?,
                (OpKind::Mulh, _) => a.imul(mem(rs2))?,
                (_, Src::Reg(h)) => a.mul(r64(h))?,
                _ => a.mul(mem(rs2))?,
            }
            cache.set(a, rd, RDX)
        }
        OpKind::Div
        | OpKind::Divu
        | OpKind::Rem
        | OpKind::Remu
        | OpKind::Divw
        | OpKind::Divuw
        | OpKind::Remw
        | OpKind::Remuw => {
            divide(a, op, s1, s2)?;
            cache.set(a, rd, RAX)
        }
        // `mulhsu`: the interpreter's definition, by a call, before which the held registers are written back
        // (the call clobbers their host registers).
        _ => {
            load_into(a, RAX, s1)?;
            load_into(a, RCX, s2)?;
            cache.flush(a)?;
            cache.forget();
            a.mov(edi, op as u32)?;
            a.mov(rsi, rax)?;
            a.mov(rdx, rcx)?;
            call(a, super::alu as *const () as usize)?;
            cache.set(a, rd, RAX)
        }
    }
}

/// `rax` = `s1 op s2` for a division or remainder, with RISC-V's results where x86-64's `div`/`idiv` would
/// fault: a zero divisor (the quotient all ones, the remainder the dividend) and the overflow of the most
/// negative dividend by -1 (the quotient the dividend, the remainder 0), both taken before the division, so it
/// never traps. The 32-bit forms divide the low halves and sign-extend the result.
fn divide(a: &mut CodeAssembler, op: OpKind, s1: Src, s2: Src) -> Result<(), IcedError> {
    let wide = matches!(op, OpKind::Div | OpKind::Divu | OpKind::Rem | OpKind::Remu);
    let signed = matches!(op, OpKind::Div | OpKind::Rem | OpKind::Divw | OpKind::Remw);
    let remainder = matches!(op, OpKind::Rem | OpKind::Remu | OpKind::Remw | OpKind::Remuw);
    let mut by_zero = a.create_label();
    let mut by_minus_one = a.create_label();
    let mut done = a.create_label();
    if wide {
        load_into(a, RCX, s2)?;
        load_into(a, RAX, s1)?;
        a.test(rcx, rcx)?;
    } else {
        load_into32(a, RCX, s2)?;
        load_into32(a, RAX, s1)?;
        a.test(ecx, ecx)?;
    }
    // A zero divisor: the remainder is the dividend, already in rax.
    a.jz(if remainder { done } else { by_zero })?;
    match (signed, wide) {
        (true, true) => {
            a.cmp(rcx, -1)?;
            a.je(by_minus_one)?;
            a.cqo()?;
            a.idiv(rcx)?;
        }
        (true, false) => {
            a.cmp(ecx, -1)?;
            a.je(by_minus_one)?;
            a.cdq()?;
            a.idiv(ecx)?;
        }
        (false, true) => {
            a.xor(edx, edx)?;
            a.div(rcx)?;
        }
        (false, false) => {
            a.xor(edx, edx)?;
            a.div(ecx)?;
        }
    }
    if remainder {
        a.mov(rax, rdx)?;
    }
    // (One label per instruction: each path ends where the next label's instruction follows.)
    if !remainder || signed {
        a.jmp(done)?;
    }
    if !remainder {
        a.set_label(&mut by_zero)?;
        a.mov(rax, -1i64)?;
        if signed {
            a.jmp(done)?;
        }
    }
    if signed {
        a.set_label(&mut by_minus_one)?;
        match (remainder, wide) {
            (true, _) => a.xor(eax, eax)?,
            (false, true) => a.neg(rax)?,
            (false, false) => a.neg(eax)?,
        }
    }
    a.set_label(&mut done)?;
    if !wide {
        a.movsxd(rax, eax)?;
    }
    Ok(())
}
