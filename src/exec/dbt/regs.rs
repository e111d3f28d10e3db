//! Guest registers held in host registers within one translated block: which guest registers a block keeps in
//! host registers, where each one is at every point of the block's straight-line code, and the host code that
//! moves them between the host registers and `hart.x`.
//!
//! A block chooses up to [`HOSTS`] guest registers by how often its translated instructions name them (x0 never,
//! a register named once gains nothing). Each is loaded from `hart.x` at its first read (a first write needs no
//! load) and is then clean or dirty. Everything is decided while emitting, since a block's body is straight-line
//! code whose only side exits are out of line: [`Cache`] is the state at the point being emitted, copied into each
//! stub that leaves from there.
//!
//! It must never let `hart.x` be stale where anything else may look at it: before every exit (chained jump, target
//! cache probe, return prediction, taken branch) and every helper call (slow loads and stores, the interpreter's
//! `step`, division) the dirty registers are written back ([`Cache::flush`], [`Cache::write_back`]). The host
//! registers are caller-saved, so after a call they are loaded again ([`Cache::reload`], or lazily after
//! [`Cache::forget`]); a block entered (chained or from the dispatcher) assumes nothing about them.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use crate::isa::Inst;

/// Guest registers a block keeps in host registers at most.
pub(super) const HOSTS: usize = 6;

/// Host registers by index: the first [`HOSTS`] may hold guest registers (the last, r15, only in blocks whose
/// data accesses are not paged: the others keep the soft TLB's address there), the next are the emitter's
/// scratch registers ([`RCX`], [`RAX`], [`RDX`]), so that an operand is one index (always masked to the
/// tables' size; the padding is never used).
const R64: [AsmRegister64; 16] = [r8, r9, r10, rdi, rsi, r15, rax, rcx, rax, rdx, rax, rax, rax, rax, rax, rax];
const R32: [AsmRegister32; 16] = [r8d, r9d, r10d, edi, esi, r15d, eax, ecx, eax, edx, eax, eax, eax, eax, eax, eax];
const R16: [AsmRegister16; 16] = [r8w, r9w, r10w, di, si, r15w, ax, cx, ax, dx, ax, ax, ax, ax, ax, ax];
const R8: [AsmRegister8; 16] = [r8b, r9b, r10b, dil, sil, r15b, al, cl, al, dl, al, al, al, al, al, al];

pub(super) const RCX: u8 = 7;
pub(super) const RAX: u8 = 8;
pub(super) const RDX: u8 = 9;

pub(super) fn r64(h: u8) -> AsmRegister64 {
    R64[h as usize & 15]
}

pub(super) fn r32(h: u8) -> AsmRegister32 {
    R32[h as usize & 15]
}

pub(super) fn r16(h: u8) -> AsmRegister16 {
    R16[h as usize & 15]
}

pub(super) fn r8l(h: u8) -> AsmRegister8 {
    R8[h as usize & 15]
}

/// The guest registers' array (`hart.x`), pinned by the block.
const X: AsmRegister64 = r12;

/// Guest register `r` in `hart.x`.
pub(super) fn mem(r: u8) -> AsmMemoryOperand {
    qword_ptr(X + 8 * (r as i32 & 31))
}

/// The low 32 bits of guest register `r` in `hart.x`.
fn mem32(r: u8) -> AsmMemoryOperand {
    dword_ptr(X + 8 * (r as i32 & 31))
}

/// Where an operand's value is now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Src {
    /// x0.
    Zero,
    /// A host register (an index of the tables above).
    Reg(u8),
    /// `hart.x[r]`.
    Mem(u8),
}

/// What a host register of the cache holds at a point of the block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Held {
    /// Not loaded yet (or lost to a call): the guest register is in `hart.x` only.
    Unloaded,
    /// The guest register's value, the same as in `hart.x`.
    Clean,
    /// The guest register's value, newer than `hart.x`'s.
    Dirty,
}

/// The guest registers a block holds in host registers, and their state at the point being emitted.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cache {
    /// The host register of each guest register (`NONE`: it stays in `hart.x`).
    host: [u8; 32],
    /// The guest register of each host register (0: unused).
    guest: [u8; HOSTS],
    held: [Held; HOSTS],
}

const NONE: u8 = u8::MAX;

/// The guest registers instruction `inst` names when translated (not through the interpreter): up to three.
fn operands(inst: &Inst) -> [u8; 3] {
    match *inst {
        Inst::Lui { rd, .. } | Inst::Auipc { rd, .. } | Inst::Jal { rd, .. } => [rd, 0, 0],
        Inst::Jalr { rd, rs1, .. } | Inst::OpImm { rd, rs1, .. } | Inst::Load { rd, rs1, .. } => [rd, rs1, 0],
        Inst::Op { rd, rs1, rs2, .. } => [rd, rs1, rs2],
        Inst::Branch { rs1, rs2, .. } | Inst::Store { rs1, rs2, .. } => [rs1, rs2, 0],
        _ => [0; 3],
    }
}

impl Cache {
    /// The registers worth holding for a block of `insts` in the first `hosts` host registers: the most named
    /// ones (at least twice), none loaded.
    pub(super) fn choose(insts: impl Iterator<Item = Inst>, hosts: usize) -> Self {
        let mut uses = [0u32; 32];
        for inst in insts {
            for r in operands(&inst) {
                if let Some(count) = uses.get_mut(r as usize) {
                    *count += 1;
                }
            }
        }
        uses[0] = 0;
        let mut cache = Self { host: [NONE; 32], guest: [0; HOSTS], held: [Held::Unloaded; HOSTS] };
        for h in 0..hosts.min(HOSTS) {
            // The most used one left (the lowest number on a tie, so the choice is deterministic).
            let (best, &count) = uses.iter().enumerate().rev().max_by_key(|&(_, &count)| count).unwrap_or((0, &0));
            if count < 2 {
                break;
            }
            uses[best] = 0;
            cache.host[best] = h as u8;
            cache.guest[h] = best as u8;
        }
        cache
    }

    /// The host register holding guest register `r`, if the block holds it.
    fn slot(&self, r: u8) -> Option<usize> {
        let h = *self.host.get(r as usize & 31)?;
        (h != NONE && r != 0).then_some(h as usize)
    }

    /// Guest register `r` as an operand, loaded into its host register first if it is held and not loaded yet.
    pub(super) fn src(&mut self, a: &mut CodeAssembler, r: u8) -> Result<Src, IcedError> {
        if r == 0 {
            return Ok(Src::Zero);
        }
        let Some(h) = self.slot(r) else { return Ok(Src::Mem(r)) };
        if let Some(held) = self.held.get_mut(h) {
            if *held == Held::Unloaded {
                a.mov(r64(h as u8), mem(r))?;
                *held = Held::Clean;
            }
        }
        Ok(Src::Reg(h as u8))
    }

    /// The host register that will hold guest register `rd` once written (x0 and registers not held: none).
    pub(super) fn dest(&self, rd: u8) -> Option<u8> {
        self.slot(rd).map(|h| h as u8)
    }

    /// The host register to compute `rd`'s new value in: its own when held, else `RAX`.
    pub(super) fn target(&self, rd: u8) -> u8 {
        self.dest(rd).unwrap_or(RAX)
    }

    /// Writes `rd` from host register `from` (dropped for x0): a move to its host register (none if it is
    /// `from`), marked dirty, or a store to `hart.x`.
    pub(super) fn set(&mut self, a: &mut CodeAssembler, rd: u8, from: u8) -> Result<(), IcedError> {
        if rd == 0 {
            return Ok(());
        }
        match self.slot(rd) {
            Some(h) => {
                if h as u8 != from {
                    a.mov(r64(h as u8), r64(from))?;
                }
                if let Some(held) = self.held.get_mut(h) {
                    *held = Held::Dirty;
                }
                Ok(())
            }
            None => a.mov(mem(rd), r64(from)),
        }
    }

    /// Writes `rd` with a sign-extended 32-bit immediate.
    pub(super) fn set_imm(&mut self, a: &mut CodeAssembler, rd: u8, imm: i32) -> Result<(), IcedError> {
        if rd == 0 {
            return Ok(());
        }
        match self.dest(rd) {
            Some(h) => {
                if imm >= 0 {
                    a.mov(r32(h), imm as u32)?;
                } else {
                    a.mov(r64(h), imm as i64)?;
                }
                self.mark_dirty(rd);
                Ok(())
            }
            None => a.mov(mem(rd), imm),
        }
    }

    /// Notes that `rd`'s host register was written directly.
    pub(super) fn mark_dirty(&mut self, rd: u8) {
        if let Some(held) = self.slot(rd).and_then(|h| self.held.get_mut(h)) {
            *held = Held::Dirty;
        }
    }

    /// Writes the dirty registers back to `hart.x` (the state stays as it is: for a side exit).
    pub(super) fn write_back(&self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        for (h, (&held, &r)) in self.held.iter().zip(&self.guest).enumerate() {
            if held == Held::Dirty {
                a.mov(mem(r), r64(h as u8))?;
            }
        }
        Ok(())
    }

    /// Writes the dirty registers back; they are clean from here on.
    pub(super) fn flush(&mut self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        self.write_back(a)?;
        for held in &mut self.held {
            if *held == Held::Dirty {
                *held = Held::Clean;
            }
        }
        Ok(())
    }

    /// After a call (written back before it): nothing is loaded any more.
    pub(super) fn forget(&mut self) {
        self.held = [Held::Unloaded; HOSTS];
    }

    /// Loads every register this state has loaded from `hart.x` again (after a call, which may have written
    /// `hart.x` and clobbered the host registers).
    pub(super) fn reload(&self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        for (h, (&held, &r)) in self.held.iter().zip(&self.guest).enumerate() {
            if held != Held::Unloaded {
                a.mov(r64(h as u8), mem(r))?;
            }
        }
        Ok(())
    }
}

/// `r64(dst) = s`.
pub(super) fn load_into(a: &mut CodeAssembler, dst: u8, s: Src) -> Result<(), IcedError> {
    match s {
        Src::Zero => a.xor(r32(dst), r32(dst)),
        Src::Reg(h) if h == dst => Ok(()),
        Src::Reg(h) => a.mov(r64(dst), r64(h)),
        Src::Mem(r) => a.mov(r64(dst), mem(r)),
    }
}

/// `r32(dst) = low 32 bits of s` (the upper half cleared).
pub(super) fn load_into32(a: &mut CodeAssembler, dst: u8, s: Src) -> Result<(), IcedError> {
    match s {
        Src::Zero => a.xor(r32(dst), r32(dst)),
        Src::Reg(h) => a.mov(r32(dst), r32(h)),
        Src::Mem(r) => a.mov(r32(dst), mem32(r)),
    }
}

/// A two-operand operation of the ALU, at 64 or 32 bits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Binop {
    Add,
    Sub,
    Xor,
    Or,
    And,
    Mul,
}

impl Binop {
    pub(super) fn commutes(self) -> bool {
        self != Binop::Sub
    }
}

/// `r64(dst) op= s` (with `wide` false: `r32(dst) op= low 32 bits of s`, the upper half cleared).
pub(super) fn binop(a: &mut CodeAssembler, op: Binop, dst: u8, s: Src, wide: bool) -> Result<(), IcedError> {
    macro_rules! apply {
        ($method:ident) => {
            match (s, wide) {
                (Src::Reg(h), true) => a.$method(r64(dst), r64(h)),
                (Src::Mem(r), true) => a.$method(r64(dst), mem(r)),
                (Src::Reg(h), false) => a.$method(r32(dst), r32(h)),
                (Src::Mem(r), false) => a.$method(r32(dst), mem32(r)),
                (Src::Zero, _) => Ok(()),
            }
        };
    }
    match (op, s) {
        // x op 0: x for these, 0 for the others.
        // (At 32 bits the upper half was cleared when the first operand was loaded.)
        (Binop::Add | Binop::Sub | Binop::Xor | Binop::Or, Src::Zero) => Ok(()),
        (Binop::And | Binop::Mul, Src::Zero) => a.xor(r32(dst), r32(dst)),
        (Binop::Add, _) => apply!(add),
        (Binop::Sub, _) => apply!(sub),
        (Binop::Xor, _) => apply!(xor),
        (Binop::Or, _) => apply!(or),
        (Binop::And, _) => apply!(and),
        (Binop::Mul, _) => apply!(imul_2),
    }
}

/// Sets the flags as `cmp s1, s2` would (x0 as zero), clobbering at most `rax`.
pub(super) fn compare(a: &mut CodeAssembler, s1: Src, s2: Src) -> Result<(), IcedError> {
    match (s1, s2) {
        (Src::Reg(h), Src::Zero) => a.test(r64(h), r64(h)),
        (Src::Reg(h), Src::Reg(g)) => a.cmp(r64(h), r64(g)),
        (Src::Reg(h), Src::Mem(r)) => a.cmp(r64(h), mem(r)),
        (Src::Mem(r), Src::Zero) => a.cmp(mem(r), 0),
        (Src::Mem(r), Src::Reg(g)) => a.cmp(mem(r), r64(g)),
        (Src::Mem(r), Src::Mem(q)) => {
            a.mov(rax, mem(r))?;
            a.cmp(rax, mem(q))
        }
        (Src::Zero, _) => {
            a.xor(eax, eax)?;
            compare(a, Src::Reg(RAX), s2)
        }
    }
}

/// Sets the flags as `cmp s, imm` would.
pub(super) fn compare_imm(a: &mut CodeAssembler, s: Src, imm: i32) -> Result<(), IcedError> {
    match s {
        Src::Reg(h) => a.cmp(r64(h), imm),
        Src::Mem(r) => a.cmp(mem(r), imm),
        Src::Zero => {
            a.xor(eax, eax)?;
            a.cmp(rax, imm)
        }
    }
}
