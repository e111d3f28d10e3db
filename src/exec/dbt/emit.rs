//! The translator proper: one guest block (decoded with the shared decoder, RVC and all) to x86-64 host code,
//! assembled with `iced-x86`'s code assembler.
//!
//! Register use in translated code: `rbx` the [`Env`], `rbp` the budget left, `r12` the guest registers
//! (`hart.x`), `r13` the block's virtual pc, `r14` the first byte of guest RAM, `r15` the soft TLB; `rax`,
//! `rcx`, `rdx`, `rsi`, `rdi`, `r11` are scratch. The code is position-independent (branches are internal,
//! helpers and link slots are reached through absolute addresses), so it is assembled once and copied to
//! wherever the cache puts it, with the addresses of its link slots put in place of their placeholders.
//!
//! Chaining: a static exit to the block's own page jumps through a link slot, a word of data (never code) that
//! holds either the address of the block's own `unlinked` exit or, once the dispatcher linked it, the chained
//! entry (offset 0) of the block at the target; that entry charges the target's instructions to the budget in
//! `rbp` or, short of budget, returns to the dispatcher. The target's RAM offset is the exit's RAM offset in the
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
//! It must never touch host memory other than the [`Env`], the guest registers, the soft TLB (read-only), the
//! target cache (read-only), the ring, the link slots (read-only) and guest RAM below `Env::ram_len`; every
//! access it cannot prove in bounds takes the slow path.

use alloc::vec::Vec;
use core::mem::offset_of;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::assemble::Assembler;
use super::{pack, status, Env, JUMPS, RING, TLB_INDEX_MASK};
use crate::isa::{self, BranchCond, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::tlb::RAW_TLB_LAYOUT as TLB;
use crate::mem::{Ram, PAGE_SIZE};

/// A translated block, ready to copy into code memory.
/// Its code is in the [`Assembler`] it was assembled with.
pub(crate) struct Translated {
    /// Guest instructions.
    pub insts: u32,
    /// Guest bytes.
    pub guest_len: u32,
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
}

/// Decodes and translates the block at RAM offset `start` (at most `limit` instructions, never past the page),
/// with the data fast path of paged (`paged`) or untranslated accesses. `None`: nothing could be translated.
pub(crate) fn translate(
    asm: &mut CodeAssembler,
    out: &mut Assembler,
    ram: &Ram,
    start: u64,
    paged: bool,
    limit: usize,
    count: bool,
) -> Option<Translated> {
    let page_end = (start | (PAGE_SIZE - 1)) + 1;
    let mut guests = [Guest { inst: Inst::Illegal(0), offset: 0, len: 4 }; super::MAX_BLOCK];
    let mut insts = 0;
    let mut at = start;
    let mut falls_through = true;
    let mut taken = None;
    while insts < limit.min(super::MAX_BLOCK) && at < page_end {
        let low = ram.load_at_offset(at, 2)? as u32;
        let (word, len) = if low & 3 != 3 {
            (low, 2u8)
        } else if at + 4 > page_end {
            // Straddles the page: the interpreter runs it, outside any block.
            break;
        } else {
            (ram.load_at_offset(at, 4)? as u32, 4u8)
        };
        let inst = isa::decode(word).inst;
        *guests.get_mut(insts)? = Guest { inst, offset: (at - start) as u16, len };
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
    let labels = emit_block(asm, guests.get(..insts)?, paged, guest_len, start & (PAGE_SIZE - 1), count).ok()?;
    let host_insts = asm.instructions().len() as u32;
    out.assemble(asm).ok()?;
    let entry = out.label_offset(&labels.entry)?;
    let unlinked = out.label_offset(&labels.unlinked)?;
    Some(Translated {
        insts: insts as u32,
        guest_len,
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
const X: AsmRegister64 = r12;
const PC: AsmRegister64 = r13;
const RAM: AsmRegister64 = r14;
const TLB_BASE: AsmRegister64 = r15;

fn reg(r: u8) -> AsmMemoryOperand {
    qword_ptr(X + 8 * (r as i32 & 31))
}

fn env(field: usize) -> AsmMemoryOperand {
    qword_ptr(ENV + field as i32)
}

fn env32(field: usize) -> AsmMemoryOperand {
    dword_ptr(ENV + field as i32)
}

/// Loads guest register `r` into `dst` (x0 reads as zero).
fn load_reg(a: &mut CodeAssembler, dst: AsmRegister64, dst32: AsmRegister32, r: u8) -> Result<(), IcedError> {
    if r == 0 {
        a.xor(dst32, dst32)
    } else {
        a.mov(dst, reg(r))
    }
}

/// An exit stub emitted out of line after the block's straight-line code.
enum Stub {
    /// A taken branch: the block ends at pc `target` (an offset from the block's pc) with `retired`.
    Taken { label: CodeLabel, target: i64, retired: u16 },
    /// A load's slow path.
    Load { label: CodeLabel, back: CodeLabel, packed: u64 },
    /// A store's slow path.
    Store { label: CodeLabel, back: CodeLabel, packed: u64 },
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
    /// Leaves with `r13` the next pc, nothing more retired: writes `Env::pc`, returns [`status::END`].
    leave: CodeLabel,
    /// Leaves after a helper returned a status (in `eax`): refunds what it did not retire.
    helper_exit: CodeLabel,
}

impl Exits {
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

    /// Ends the block at pc `r13 + delta` with `retired` of its instructions retired: through a link slot
    /// when the target lies in the block's page (and a slot is left), else through the target cache.
    fn end(&mut self, a: &mut CodeAssembler, delta: i64, retired: u16) -> Result<(), IcedError> {
        let refund = self.insts - retired;
        if refund > 0 {
            a.add(rbp, refund as i32)?;
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
            a.add(rbp, refund as i32)?;
        }
        if ret {
            // Pop the top prediction (always, so the ring stays in step with the calls); a match jumps through
            // the link slot of the call's block for its return site (r13 the target, rax the slot, as any
            // chained exit).
            let mut miss = a.create_label();
            a.mov(rsi, env(offset_of!(Env, ring)))?;
            a.mov(ecx, dword_ptr(rsi))?;
            a.mov(edx, ecx)?;
            a.sub(ecx, 1)?;
            a.and(ecx, RING as i32 - 1)?;
            a.mov(dword_ptr(rsi), ecx)?;
            a.and(edx, RING as i32 - 1)?;
            a.shl(edx, 4)?;
            a.cmp(rax, qword_ptr(rsi + rdx + 8))?;
            a.jne(miss)?;
            a.mov(PC, rax)?;
            a.mov(rax, qword_ptr(rsi + rdx + 16))?;
            a.jmp(qword_ptr(rax))?;
            a.set_label(&mut miss)?;
        }
        a.mov(PC, rax)?;
        self.lookup_used = true;
        a.jmp(self.lookup)
    }

    /// At a call (a `jal`/`jalr` linking x1 or x5) whose return site is `r13 + delta`: pushes the return
    /// prediction (the return pc and the address of a link slot of this block for it), or, when the site is
    /// outside the page or no slot is left, an entry no return matches (pc 1), so the ring stays in step.
    /// Clobbers `rcx`, `rdx`, `rsi`.
    fn push_return(&mut self, a: &mut CodeAssembler, delta: i64) -> Result<(), IcedError> {
        a.mov(rsi, env(offset_of!(Env, ring)))?;
        a.mov(ecx, dword_ptr(rsi))?;
        a.add(ecx, 1)?;
        a.and(ecx, RING as i32 - 1)?;
        a.mov(dword_ptr(rsi), ecx)?;
        a.shl(ecx, 4)?;
        match self.take_slot(delta) {
            Some(k) => {
                pc_plus(a, rdx, delta)?;
                a.mov(qword_ptr(rsi + rcx + 8), rdx)?;
                a.mov(rdx, slot_placeholder(k))?;
                a.mov(qword_ptr(rsi + rcx + 16), rdx)
            }
            None => a.mov(qword_ptr(rsi + rcx + 8), 1),
        }
    }

    /// The target cache probe, at `lookup`, with the target pc in `r13` (the budget refunded): the pc's RAM
    /// offset as [`Memory::fast_fetch`](crate::mem::mmu::Memory::fast_fetch) finds it (the executable M-mode
    /// window, else the soft TLB with the fetch key), then the entry of the engine's table for that offset
    /// (tagged with the engine's generation), whose block's chained entry it jumps to. Anything else leaves for
    /// the dispatcher.
    fn emit_lookup(&mut self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        let mut window_hit = a.create_label();
        let mut tlb_hit = a.create_label();
        let mut probe = a.create_label();
        a.set_label(&mut self.lookup)?;
        a.mov(rcx, PC)?;
        a.sub(rcx, env(offset_of!(Env, fetch_base)))?;
        a.cmp(rcx, env(offset_of!(Env, fetch_size)))?;
        a.jb(window_hit)?;
        a.cmp(env32(offset_of!(Env, fetch_paged)), 0)?;
        a.je(self.leave)?;
        a.mov(rcx, PC)?;
        a.shr(rcx, 12)?;
        a.mov(edx, ecx)?;
        a.and(edx, TLB_INDEX_MASK as i32)?;
        a.imul_3(edx, edx, TLB.entry_size as i32)?;
        a.cmp(rcx, qword_ptr(TLB_BASE + rdx + TLB.vpn as i32))?;
        a.jne(self.leave)?;
        a.mov(ecx, env32(offset_of!(Env, fetch_bit)))?;
        a.test(dword_ptr(TLB_BASE + rdx + TLB.perms as i32), ecx)?;
        a.jz(self.leave)?;
        a.movzx(ecx, word_ptr(TLB_BASE + rdx + TLB.asid as i32))?;
        a.cmp(ecx, env32(offset_of!(Env, asid)))?;
        a.je(tlb_hit)?;
        a.cmp(byte_ptr(TLB_BASE + rdx + TLB.global as i32), 0)?;
        a.je(self.leave)?;
        a.set_label(&mut tlb_hit)?;
        a.mov(ecx, r13d)?;
        a.and(ecx, 0xfff)?;
        a.or(rcx, qword_ptr(TLB_BASE + rdx + TLB.host_page as i32))?;
        a.jmp(probe)?;
        a.set_label(&mut window_hit)?;
        a.add(rcx, env(offset_of!(Env, fetch_host)))?;
        a.set_label(&mut probe)?;
        a.mov(rdx, env(offset_of!(Env, jumps)))?;
        a.mov(esi, ecx)?;
        a.shr(esi, 1)?;
        a.and(esi, JUMPS as i32 - 1)?;
        a.shl(esi, 4)?;
        a.xor(rcx, env(offset_of!(Env, jump_tag)))?;
        a.cmp(rcx, qword_ptr(rdx + rsi))?;
        a.jne(self.leave)?;
        a.jmp(qword_ptr(rdx + rsi + 8))
    }
}

/// Emits a block. Layout: offset 0 is the chained entry (budget check and charge, then the body); after the body
/// come the out-of-line stubs, the shared exits, the epilogue, and last the prologue the dispatcher calls
/// (`Labels::entry`), which sets up the registers and jumps to offset 0. `rbp` holds the budget left.
fn emit_block(
    a: &mut CodeAssembler,
    guests: &[Guest],
    paged: bool,
    guest_len: u32,
    page_offset: u64,
    count: bool,
) -> Result<Labels, IcedError> {
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
        leave: a.create_label(),
        helper_exit: a.create_label(),
    };
    let mut stubs: Vec<Stub> = Vec::new();
    // Chained entry: the whole block must fit the budget, or back to the dispatcher with nothing done.
    a.set_label(&mut body)?;
    if count {
        // Counting entries (for the dynamic figure of host instructions per guest instruction).
        a.mov(rax, COUNTER_PLACEHOLDER)?;
        a.add(qword_ptr(rax), 1)?;
    }
    a.cmp(rbp, exits.insts as i32)?;
    a.jb(exits.leave)?;
    a.sub(rbp, exits.insts as i32)?;
    let mut ended = false;
    for (index, guest) in guests.iter().enumerate() {
        let index = index as u16;
        let offset = guest.offset as i64;
        let next = offset + guest.len as i64;
        match guest.inst {
            Inst::Lui { rd, imm } => {
                if rd != 0 {
                    a.mov(reg(rd), imm)?;
                }
            }
            Inst::Auipc { rd, imm } => {
                if rd != 0 {
                    pc_plus(a, rax, offset + imm as i64)?;
                    a.mov(reg(rd), rax)?;
                }
            }
            Inst::Jal { rd, offset: delta } => {
                if rd != 0 {
                    pc_plus(a, rax, next)?;
                    a.mov(reg(rd), rax)?;
                }
                if is_link(rd) {
                    exits.push_return(a, next)?;
                }
                exits.end(a, offset + delta as i64, index + 1)?;
                ended = true;
            }
            Inst::Jalr { rd, rs1, offset: delta } => {
                load_reg(a, rax, eax, rs1)?;
                a.add(rax, delta)?;
                a.and(rax, -2)?;
                if rd != 0 {
                    pc_plus(a, rcx, next)?;
                    a.mov(reg(rd), rcx)?;
                }
                if is_link(rd) {
                    exits.push_return(a, next)?;
                }
                exits.end_dynamic(a, index + 1, rd == 0 && is_link(rs1))?;
                ended = true;
            }
            Inst::Branch { cond, rs1, rs2, offset: delta } => {
                load_reg(a, rax, eax, rs1)?;
                if rs2 == 0 {
                    a.test(rax, rax)?;
                } else {
                    a.cmp(rax, reg(rs2))?;
                }
                let label = a.create_label();
                match cond {
                    BranchCond::Eq => a.je(label)?,
                    BranchCond::Ne => a.jne(label)?,
                    BranchCond::Lt => a.jl(label)?,
                    BranchCond::Ge => a.jge(label)?,
                    BranchCond::Ltu => a.jb(label)?,
                    BranchCond::Geu => a.jae(label)?,
                }
                stubs.push(Stub::Taken { label, target: offset + delta as i64, retired: index + 1 });
            }
            Inst::OpImm { op, rd, rs1, imm } => {
                if rd != 0 {
                    op_imm(a, op, rd, rs1, imm)?;
                }
            }
            Inst::Op { op, rd, rs1, rs2 } => {
                if rd != 0 {
                    op_reg(a, op, rd, rs1, rs2)?;
                }
            }
            Inst::Load { width, rd, rs1, offset: disp } => {
                let packed = pack(rd, width as u8, guest.len, guest.offset, index);
                address(a, rs1, disp)?;
                let slow = a.create_label();
                let mut back = a.create_label();
                let size = width.bytes() as i32;
                if paged {
                    tlb_lookup(a, offset_of!(Env, load_bit), size, slow)?;
                } else {
                    window(a, slow)?;
                }
                let source = match size {
                    1 => byte_ptr(RAM + rcx),
                    2 => word_ptr(RAM + rcx),
                    4 => dword_ptr(RAM + rcx),
                    _ => qword_ptr(RAM + rcx),
                };
                match width {
                    LoadWidth::B | LoadWidth::H => a.movsx(rdx, source)?,
                    LoadWidth::W => a.movsxd(rdx, source)?,
                    LoadWidth::Bu | LoadWidth::Hu => a.movzx(edx, source)?,
                    LoadWidth::Wu => a.mov(edx, source)?,
                    LoadWidth::D => a.mov(rdx, source)?,
                }
                if rd != 0 {
                    a.mov(reg(rd), rdx)?;
                }
                a.set_label(&mut back)?;
                stubs.push(Stub::Load { label: slow, back, packed });
            }
            Inst::Store { width, rs1, rs2, offset: disp } => {
                let packed = pack(rs2, width as u8, guest.len, guest.offset, index);
                address(a, rs1, disp)?;
                let slow = a.create_label();
                let mut back = a.create_label();
                let size = width.bytes() as i32;
                if paged {
                    tlb_lookup(a, offset_of!(Env, store_bit), size, slow)?;
                } else {
                    window(a, slow)?;
                    if size > 1 {
                        // Within one page of RAM, so one watch bit covers it.
                        a.mov(edx, ecx)?;
                        a.and(edx, 0xfff)?;
                        a.cmp(edx, 0x1000 - size)?;
                        a.ja(slow)?;
                    }
                }
                // A watched code page (or no watch at all) takes the slow path, which notes the write.
                a.mov(rdx, rcx)?;
                a.shr(rdx, 12)?;
                a.cmp(rdx, env(offset_of!(Env, watch_pages)))?;
                a.jae(slow)?;
                a.mov(rsi, env(offset_of!(Env, watch)))?;
                a.bt(qword_ptr(rsi), rdx)?;
                a.jb(slow)?;
                load_reg(a, rdx, edx, rs2)?;
                match width {
                    StoreWidth::B => a.mov(byte_ptr(RAM + rcx), dl)?,
                    StoreWidth::H => a.mov(word_ptr(RAM + rcx), dx)?,
                    StoreWidth::W => a.mov(dword_ptr(RAM + rcx), edx)?,
                    StoreWidth::D => a.mov(qword_ptr(RAM + rcx), rdx)?,
                }
                a.set_label(&mut back)?;
                stubs.push(Stub::Store { label: slow, back, packed });
            }
            // No instruction cache to keep coherent, and a store to code already ends its block.
            Inst::Fence { .. } | Inst::FenceI if guest.inst != isa::PAUSE => {}
            // Everything else through the interpreter.
            _ => {
                a.mov(env(offset_of!(Env, entry_pc)), PC)?;
                a.mov(rdi, ENV)?;
                a.mov(rsi, pack(0, 0, guest.len, guest.offset, index))?;
                call(a, super::step as *const () as usize)?;
                a.test(eax, eax)?;
                a.jnz(exits.helper_exit)?;
                if ends_block(&guest.inst) {
                    exits.end(a, next, index + 1)?;
                    ended = true;
                }
            }
        }
    }
    if !ended {
        exits.end(a, guest_len as i64, guests.len() as u16)?;
    }
    labels.body_insts = a.instructions().len() as u32;
    for stub in stubs {
        match stub {
            Stub::Taken { mut label, target, retired } => {
                a.set_label(&mut label)?;
                exits.end(a, target, retired)?;
            }
            Stub::Load { mut label, back, packed } => {
                a.set_label(&mut label)?;
                slow_call(a, super::load_slow as *const () as usize, packed, back, exits.helper_exit)?;
            }
            Stub::Store { mut label, back, packed } => {
                a.set_label(&mut label)?;
                slow_call(a, super::store_slow as *const () as usize, packed, back, exits.helper_exit)?;
            }
        }
    }
    if exits.lookup_used {
        exits.emit_lookup(a)?;
    }
    labels.slot_targets = exits.slot_targets;
    // A helper left (it set `Env::pc` and `Env::retired`): refund what the block did not retire.
    a.set_label(&mut exits.helper_exit)?;
    a.add(rbp, exits.insts as i32)?;
    a.sub(rbp, env(offset_of!(Env, retired)))?;
    a.jmp(epilogue)?;
    // An unlinked slot: the dispatcher links it once it has the block at `r13`.
    a.set_label(&mut labels.unlinked)?;
    a.mov(env(offset_of!(Env, link)), rax)?;
    a.set_label(&mut exits.leave)?;
    a.mov(env(offset_of!(Env, pc)), PC)?;
    a.mov(eax, status::END)?;
    a.set_label(&mut epilogue)?;
    a.mov(env(offset_of!(Env, budget)), rbp)?;
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
    a.mov(X, env(offset_of!(Env, x)))?;
    a.mov(PC, env(offset_of!(Env, entry_pc)))?;
    a.mov(RAM, env(offset_of!(Env, ram)))?;
    a.mov(TLB_BASE, env(offset_of!(Env, tlb)))?;
    a.mov(rbp, env(offset_of!(Env, budget)))?;
    a.jmp(body)?;
    Ok(labels)
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

/// A load's or store's slow path: `helper(env, address in rax, packed)`, then back, or leave.
fn slow_call(
    a: &mut CodeAssembler,
    function: usize,
    packed: u64,
    back: CodeLabel,
    helper_exit: CodeLabel,
) -> Result<(), IcedError> {
    a.mov(env(offset_of!(Env, entry_pc)), PC)?;
    a.mov(rdi, ENV)?;
    a.mov(rsi, rax)?;
    a.mov(rdx, packed)?;
    call(a, function)?;
    a.test(eax, eax)?;
    a.jnz(helper_exit)?;
    a.jmp(back)
}

/// `rax = x[rs1] + disp`, the virtual address of a load or store.
fn address(a: &mut CodeAssembler, rs1: u8, disp: i32) -> Result<(), IcedError> {
    if rs1 == 0 {
        a.mov(rax, disp as i64)
    } else {
        a.mov(rax, reg(rs1))?;
        if disp != 0 {
            a.add(rax, disp)?;
        }
        Ok(())
    }
}

/// The M-mode RAM window: `rcx` = the RAM offset of the address in `rax`, or to `slow`.
fn window(a: &mut CodeAssembler, slow: CodeLabel) -> Result<(), IcedError> {
    a.mov(rcx, rax)?;
    a.sub(rcx, env(offset_of!(Env, window_base)))?;
    a.cmp(rcx, env(offset_of!(Env, window_limit)))?;
    a.jae(slow)?;
    a.add(rcx, env(offset_of!(Env, window_host)))
}

/// The soft TLB lookup ([`SoftTlb::lookup`](crate::mem::tlb::SoftTlb::lookup)) inlined for an access of `size`
/// bytes at the address in `rax` with the permission bit at `bit` of the [`Env`]: `rcx` = its RAM offset, or to
/// `slow` (a miss, a page-crossing access, or one that would leave RAM).
fn tlb_lookup(a: &mut CodeAssembler, bit: usize, size: i32, slow: CodeLabel) -> Result<(), IcedError> {
    let mut hit = a.create_label();
    a.mov(rcx, rax)?;
    a.shr(rcx, 12)?;
    a.mov(edx, ecx)?;
    a.and(edx, TLB_INDEX_MASK as i32)?;
    a.imul_3(edx, edx, TLB.entry_size as i32)?;
    a.cmp(rcx, qword_ptr(TLB_BASE + rdx + TLB.vpn as i32))?;
    a.jne(slow)?;
    a.mov(ecx, env32(bit))?;
    a.test(dword_ptr(TLB_BASE + rdx + TLB.perms as i32), ecx)?;
    a.jz(slow)?;
    a.movzx(ecx, word_ptr(TLB_BASE + rdx + TLB.asid as i32))?;
    a.cmp(ecx, env32(offset_of!(Env, asid)))?;
    a.je(hit)?;
    a.cmp(byte_ptr(TLB_BASE + rdx + TLB.global as i32), 0)?;
    a.je(slow)?;
    a.set_label(&mut hit)?;
    a.mov(ecx, eax)?;
    a.and(ecx, 0xfff)?;
    if size > 1 {
        a.cmp(ecx, 0x1000 - size)?;
        a.ja(slow)?;
    }
    a.or(rcx, qword_ptr(TLB_BASE + rdx + TLB.host_page as i32))?;
    a.lea(rdx, qword_ptr(rcx + size))?;
    a.cmp(rdx, env(offset_of!(Env, ram_len)))?;
    a.ja(slow)
}

fn op_imm(a: &mut CodeAssembler, op: OpImmKind, rd: u8, rs1: u8, imm: i32) -> Result<(), IcedError> {
    let shamt = (imm & 63) as u32;
    match op {
        OpImmKind::Addi | OpImmKind::Ori | OpImmKind::Xori if rs1 == 0 => return a.mov(reg(rd), imm),
        OpImmKind::Addiw | OpImmKind::Slliw | OpImmKind::Srliw | OpImmKind::Sraiw => {
            if rs1 == 0 {
                a.xor(eax, eax)?;
            } else {
                a.mov(eax, dword_ptr(X + 8 * (rs1 as i32 & 31)))?;
            }
            match op {
                OpImmKind::Addiw => a.add(eax, imm)?,
                OpImmKind::Slliw => a.shl(eax, shamt & 31)?,
                OpImmKind::Srliw => a.shr(eax, shamt & 31)?,
                _ => a.sar(eax, shamt & 31)?,
            }
            a.movsxd(rax, eax)?;
            return a.mov(reg(rd), rax);
        }
        _ => {}
    }
    load_reg(a, rax, eax, rs1)?;
    match op {
        OpImmKind::Addi => a.add(rax, imm)?,
        OpImmKind::Xori => a.xor(rax, imm)?,
        OpImmKind::Ori => a.or(rax, imm)?,
        OpImmKind::Andi => a.and(rax, imm)?,
        OpImmKind::Slli => a.shl(rax, shamt)?,
        OpImmKind::Srli => a.shr(rax, shamt)?,
        OpImmKind::Srai => a.sar(rax, shamt)?,
        OpImmKind::Slti | OpImmKind::Sltiu => {
            a.xor(ecx, ecx)?;
            a.cmp(rax, imm)?;
            if op == OpImmKind::Slti {
                a.setl(cl)?;
            } else {
                a.setb(cl)?;
            }
            a.mov(rax, rcx)?;
        }
        // Handled above.
        OpImmKind::Addiw | OpImmKind::Slliw | OpImmKind::Srliw | OpImmKind::Sraiw => {}
    }
    a.mov(reg(rd), rax)
}

fn op_reg(a: &mut CodeAssembler, op: OpKind, rd: u8, rs1: u8, rs2: u8) -> Result<(), IcedError> {
    load_reg(a, rax, eax, rs1)?;
    load_reg(a, rcx, ecx, rs2)?;
    match op {
        OpKind::Add => a.add(rax, rcx)?,
        OpKind::Sub => a.sub(rax, rcx)?,
        OpKind::Xor => a.xor(rax, rcx)?,
        OpKind::Or => a.or(rax, rcx)?,
        OpKind::And => a.and(rax, rcx)?,
        // x86-64 masks a 64-bit shift count to 6 bits and a 32-bit one to 5, as RISC-V does.
        OpKind::Sll => a.shl(rax, cl)?,
        OpKind::Srl => a.shr(rax, cl)?,
        OpKind::Sra => a.sar(rax, cl)?,
        OpKind::Slt | OpKind::Sltu => {
            a.xor(edx, edx)?;
            a.cmp(rax, rcx)?;
            if op == OpKind::Slt {
                a.setl(dl)?;
            } else {
                a.setb(dl)?;
            }
            a.mov(rax, rdx)?;
        }
        OpKind::Mul => a.imul_2(rax, rcx)?,
        OpKind::Mulh => {
            a.imul(rcx)?;
            a.mov(rax, rdx)?;
        }
        OpKind::Mulhu => {
            a.mul(rcx)?;
            a.mov(rax, rdx)?;
        }
        OpKind::Addw | OpKind::Subw | OpKind::Sllw | OpKind::Srlw | OpKind::Sraw | OpKind::Mulw => {
            match op {
                OpKind::Addw => a.add(eax, ecx)?,
                OpKind::Subw => a.sub(eax, ecx)?,
                OpKind::Sllw => a.shl(eax, cl)?,
                OpKind::Srlw => a.shr(eax, cl)?,
                OpKind::Sraw => a.sar(eax, cl)?,
                _ => a.imul_2(eax, ecx)?,
            }
            a.movsxd(rax, eax)?;
        }
        // Division and `mulhsu`: the interpreter's definition (RISC-V's results for zero and overflow).
        OpKind::Mulhsu
        | OpKind::Div
        | OpKind::Divu
        | OpKind::Rem
        | OpKind::Remu
        | OpKind::Divw
        | OpKind::Divuw
        | OpKind::Remw
        | OpKind::Remuw => {
            a.mov(edi, op as u32)?;
            a.mov(rsi, rax)?;
            a.mov(rdx, rcx)?;
            call(a, super::alu as *const () as usize)?;
        }
    }
    a.mov(reg(rd), rax)
}
