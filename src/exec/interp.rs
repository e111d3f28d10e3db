//! The reference engine: fetch, decode and execute one instruction at a time, exactly as the unprivileged
//! specification says (RV64GC: IMAFDC + Zicsr + Zifencei; Zicsr and the privileged instructions are handed to
//! the dispatcher, floating-point arithmetic to `fpu`). Faster engines are checked against this one, so clarity wins over speed here.

use super::Engine;
use crate::debug::Access;
use crate::fpu;
use crate::hart::{Exception, Hart, Reservation};
use crate::isa::{self, AmoOp, AmoWidth, BranchCond, FpFormat, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::mmu::{Loaded, Memory, Target};
use crate::mem::sv39::{AccessType, Fault};
use crate::trap::{extend, Exit, MmioAccess, MmioKind};

/// The decode-and-dispatch interpreter.
#[derive(Debug, Default)]
pub struct Interpreter;

impl Engine for Interpreter {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        run_steps(hart, memory, budget)
    }
}

/// Runs up to `budget` instructions one [`step`] at a time (the interpreter's [`Engine::run`], and the threaded
/// engine's while a trigger is armed).
pub fn run_steps(hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
    for _ in 0..budget {
        if let Err(exit) = step(hart, memory) {
            return exit;
        }
    }
    Exit::BudgetExhausted
}

/// Fetches the instruction at `pc`: its raw bits (16 significant bits for a compressed one) or the exception.
#[inline(always)]
fn fetch(hart: &Hart, memory: &mut Memory, pc: u64) -> Result<u32, Exit> {
    let parcel = |memory: &mut Memory, addr: u64| match memory.load(hart, addr, 2, AccessType::Fetch) {
        Ok(Loaded::Value(value)) => Ok(value as u32),
        Ok(Loaded::Device(_)) => Err(Exit::Exception { cause: Exception::InstructionAccessFault, tval: addr }),
        Err(fault) => Err(exception(fault)),
    };
    let low = parcel(memory, pc)?;
    if low & 3 != 3 {
        return Ok(low);
    }
    Ok(low | parcel(memory, pc.wrapping_add(2))? << 16)
}

pub(crate) fn exception(fault: Fault) -> Exit {
    Exit::Exception { cause: fault.exception, tval: fault.tval }
}

/// Stops a data access of `size` bytes at `addr` that an armed trigger matches, before any of it happens (a
/// load/store breakpoint outranks misalignment and page or access faults).
#[inline(always)]
fn watch(hart: &Hart, addr: u64, size: u64, access: Access) -> Result<(), Exit> {
    if hart.triggers.armed(hart.privilege) {
        if let Some(exit) = hart.triggers.check_access(addr, size, access, hart.privilege) {
            return Err(exit);
        }
    }
    Ok(())
}

/// Executes one instruction. On `Err` nothing of the instruction has happened and `hart.pc` is unchanged.
/// Software breakpoints and triggers are checked here (execute matches before the fetch, as the highest-priority
/// exception, load/store matches before the access), so an engine that steps through this function honours
/// them.
#[inline(always)]
pub fn step(hart: &mut Hart, memory: &mut Memory) -> Result<(), Exit> {
    let pc = hart.pc;
    if hart.triggers.armed(hart.privilege) {
        if let Some(exit) = hart.triggers.check_execute(pc, hart.privilege) {
            return Err(exit);
        }
    }
    let word = fetch(hart, memory, pc)?;
    let decoded = isa::decode(word);
    let len = decoded.len as u64;
    let mut next_pc = pc.wrapping_add(len);
    let illegal = Exit::Exception { cause: Exception::IllegalInstruction, tval: word as u64 };

    match decoded.inst {
        Inst::Illegal(_) => return Err(illegal),
        Inst::Lui { rd, imm } => hart.set_x(rd, imm as i64 as u64),
        Inst::Auipc { rd, imm } => hart.set_x(rd, pc.wrapping_add(imm as i64 as u64)),
        Inst::Jal { rd, offset } => {
            hart.set_x(rd, next_pc);
            next_pc = pc.wrapping_add(offset as i64 as u64);
        }
        Inst::Jalr { rd, rs1, offset } => {
            let target = hart.x(rs1).wrapping_add(offset as i64 as u64) & !1;
            hart.set_x(rd, next_pc);
            next_pc = target;
        }
        Inst::Branch { cond, rs1, rs2, offset } => {
            if branch_taken(cond, hart.x(rs1), hart.x(rs2)) {
                next_pc = pc.wrapping_add(offset as i64 as u64);
            }
        }
        Inst::Load { width, rd, rs1, offset } => {
            let addr = hart.x(rs1).wrapping_add(offset as i64 as u64);
            let size = width.bytes();
            let signed = matches!(width, LoadWidth::B | LoadWidth::H | LoadWidth::W | LoadWidth::D);
            watch(hart, addr, size, Access::Load)?;
            match memory.load(hart, addr, size, AccessType::Load).map_err(exception)? {
                Loaded::Value(value) => hart.set_x(rd, extend(value, size as u8, signed)),
                Loaded::Device(gpa) => return Err(mmio(gpa, size, MmioKind::Load { rd, signed }, len)),
            }
        }
        Inst::Store { width, rs1, rs2, offset } => {
            let addr = hart.x(rs1).wrapping_add(offset as i64 as u64);
            let size = width.bytes();
            let value = hart.x(rs2);
            watch(hart, addr, size, Access::Store)?;
            if let Some(gpa) = memory.store(hart, addr, size, value).map_err(exception)? {
                let value = value & mask(width);
                return Err(mmio(gpa, size, MmioKind::Store { value }, len));
            }
        }
        Inst::OpImm { op, rd, rs1, imm } => {
            let value = alu_imm(op, hart.x(rs1), imm);
            hart.set_x(rd, value);
        }
        Inst::Op { op, rd, rs1, rs2 } => {
            let value = alu(op, hart.x(rs1), hart.x(rs2));
            hart.set_x(rd, value);
        }
        // Architecturally a no-op, but the VM wants to know that the hart is spinning.
        crate::isa::PAUSE => return Err(Exit::System { inst: decoded.inst, word, len: decoded.len }),
        // With RAM shared by other threads' harts, the host keeps every order of their accesses but store -> load
        // (shared RAM is acquire-loaded and release-stored): a FENCE that orders that pair is a host fence.
        Inst::Fence { fm, pred, succ } if crate::isa::fence_orders_stores_before_loads(fm, pred, succ) => {
            if memory.ram.is_shared() {
                core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            }
        }
        // The interpreter has no instruction cache and one hart sees its own stores in order.
        Inst::Fence { .. } => {}
        // Code other threads wrote is seen by the engines' code watch, whose fence may wait for this.
        Inst::FenceI => memory.ram.sync_instruction_fetch(),
        Inst::Ecall => {
            return Err(Exit::Exception { cause: Exception::ecall_from(hart.privilege), tval: 0 });
        }
        Inst::Ebreak => return Err(Exit::Exception { cause: Exception::Breakpoint, tval: pc }),
        Inst::Csr { .. } | Inst::Mret | Inst::Sret | Inst::Wfi | Inst::SfenceVma { .. } => {
            return Err(Exit::System { inst: decoded.inst, word, len: decoded.len });
        }
        Inst::Lr { width, rd, rs1, .. } => {
            let addr = hart.x(rs1);
            let size = width.bytes();
            watch(hart, addr, size, Access::Load)?;
            if !addr.is_multiple_of(size) {
                return Err(Exit::Exception { cause: Exception::LoadMisaligned, tval: addr });
            }
            let offset = match memory.translate(hart, addr, size, AccessType::Load).map_err(exception)? {
                Target::Ram(offset) => offset,
                Target::Device(_) => return Err(Exit::Exception { cause: Exception::LoadAccessFault, tval: addr }),
            };
            let value = memory
                .ram
                .load_at_offset(offset, size)
                .ok_or(Exit::Exception { cause: Exception::LoadAccessFault, tval: addr })?;
            hart.set_x(rd, extend(value, size as u8, true));
            hart.reservation = Some(Reservation { addr: offset, value });
        }
        Inst::Sc { width, rd, rs1, rs2, .. } => {
            let addr = hart.x(rs1);
            let size = width.bytes();
            watch(hart, addr, size, Access::Store)?;
            let offset = amo_offset(hart, memory, addr, size)?;
            // The reservation holds while memory still has the value LR read: a store by this or another hart
            // that changed it breaks the reservation (QEMU's rule; an ABA store that restores the value does not).
            // One host compare-exchange against the value LR read, so atomic with other threads' stores to shared
            // RAM: a failed SC means another hart's store succeeded (no livelock).
            let reserved = hart.reservation.take();
            let success = match reserved.filter(|r| r.addr == offset) {
                Some(r) => memory
                    .ram
                    .compare_exchange_at_offset(offset, size, r.value, hart.x(rs2))
                    .ok_or(Exit::Exception { cause: Exception::StoreAccessFault, tval: addr })?
                    .is_ok(),
                None => false,
            };
            hart.set_x(rd, !success as u64);
        }
        Inst::Amo { op, width, rd, rs1, rs2, .. } => {
            let addr = hart.x(rs1);
            let size = width.bytes();
            watch(hart, addr, size, Access::LoadStore)?;
            let offset = amo_offset(hart, memory, addr, size)?;
            let fault = Exit::Exception { cause: Exception::StoreAccessFault, tval: addr };
            let operand = hart.x(rs2);
            // One host read-modify-write (atomic with other threads' accesses to shared RAM).
            let old = memory
                .ram
                .amo_at_offset(offset, size, |old| amo(op, width, extend(old, size as u8, true), operand))
                .ok_or(fault)?;
            hart.set_x(rd, extend(old, size as u8, true));
        }
        Inst::FpLoad { fmt, rd, rs1, offset } => {
            if !hart.fp_enabled() {
                return Err(illegal);
            }
            let addr = hart.x(rs1).wrapping_add(offset as i64 as u64);
            let size = fp_size(fmt);
            watch(hart, addr, size, Access::Load)?;
            let value = match memory.load(hart, addr, size, AccessType::Load).map_err(exception)? {
                Loaded::Value(value) => value,
                // Device registers are integer-only here: an FP access to one is an access fault.
                Loaded::Device(_) => return Err(Exit::Exception { cause: Exception::LoadAccessFault, tval: addr }),
            };
            hart.fp.f[(rd & 31) as usize] = match fmt {
                FpFormat::S => fpu::nan_box(value as u32),
                FpFormat::D => value,
            };
            hart.mark_fp_dirty();
        }
        Inst::FpStore { fmt, rs1, rs2, offset } => {
            if !hart.fp_enabled() {
                return Err(illegal);
            }
            let addr = hart.x(rs1).wrapping_add(offset as i64 as u64);
            let value = hart.fp.f[(rs2 & 31) as usize];
            watch(hart, addr, fp_size(fmt), Access::Store)?;
            if memory.store(hart, addr, fp_size(fmt), value).map_err(exception)?.is_some() {
                return Err(Exit::Exception { cause: Exception::StoreAccessFault, tval: addr });
            }
        }
        Inst::FpFma { .. }
        | Inst::FpArith { .. }
        | Inst::FpSqrt { .. }
        | Inst::FpSgnj { .. }
        | Inst::FpMinMax { .. }
        | Inst::FpCvtFp { .. }
        | Inst::FpCvtToInt { .. }
        | Inst::FpCvtFromInt { .. }
        | Inst::FpMvToInt { .. }
        | Inst::FpMvFromInt { .. }
        | Inst::FpCmp { .. }
        | Inst::FpClass { .. } => {
            if !hart.fp_enabled() {
                return Err(illegal);
            }
            match fpu::execute(&decoded.inst, &mut hart.fp, &mut hart.x) {
                Ok(true) => hart.mark_fp_dirty(),
                Ok(false) => {}
                Err(_) => return Err(illegal),
            }
        }
    }
    hart.pc = next_pc;
    hart.instret = hart.instret.wrapping_add(1);
    Ok(())
}

fn fp_size(fmt: FpFormat) -> u64 {
    match fmt {
        FpFormat::S => 4,
        FpFormat::D => 8,
    }
}

pub(crate) fn mmio(addr: u64, size: u64, kind: MmioKind, len: u64) -> Exit {
    Exit::Mmio(MmioAccess { addr, size: size as u8, kind, len: len as u8 })
}

pub(crate) fn mask(width: StoreWidth) -> u64 {
    match width {
        StoreWidth::D => u64::MAX,
        _ => (1u64 << (width.bytes() * 8)) - 1,
    }
}

/// SC and AMOs need a naturally aligned address in RAM (they are never performed on devices): the RAM offset.
fn amo_offset(hart: &Hart, memory: &mut Memory, addr: u64, size: u64) -> Result<u64, Exit> {
    if !addr.is_multiple_of(size) {
        return Err(Exit::Exception { cause: Exception::StoreMisaligned, tval: addr });
    }
    match memory.translate(hart, addr, size, AccessType::Store).map_err(exception)? {
        Target::Ram(offset) => Ok(offset),
        Target::Device(_) => Err(Exit::Exception { cause: Exception::StoreAccessFault, tval: addr }),
    }
}

#[inline(always)]
fn sext32(value: u32) -> u64 {
    value as i32 as i64 as u64
}

/// Whether a branch with `cond` is taken for operands `a` and `b`.
#[inline(always)]
pub fn branch_taken(cond: BranchCond, a: u64, b: u64) -> bool {
    match cond {
        BranchCond::Eq => a == b,
        BranchCond::Ne => a != b,
        BranchCond::Lt => (a as i64) < (b as i64),
        BranchCond::Ge => (a as i64) >= (b as i64),
        BranchCond::Ltu => a < b,
        BranchCond::Geu => a >= b,
    }
}

/// Register-immediate ALU operations; for shifts `imm` is the shift amount.
#[inline(always)]
pub fn alu_imm(op: OpImmKind, a: u64, imm: i32) -> u64 {
    let imm = imm as i64 as u64;
    let shamt = (imm & 63) as u32;
    match op {
        OpImmKind::Addi => a.wrapping_add(imm),
        OpImmKind::Slti => ((a as i64) < (imm as i64)) as u64,
        OpImmKind::Sltiu => (a < imm) as u64,
        OpImmKind::Xori => a ^ imm,
        OpImmKind::Ori => a | imm,
        OpImmKind::Andi => a & imm,
        OpImmKind::Slli => a << shamt,
        OpImmKind::Srli => a >> shamt,
        OpImmKind::Srai => ((a as i64) >> shamt) as u64,
        OpImmKind::Addiw => sext32(a.wrapping_add(imm) as u32),
        OpImmKind::Slliw => sext32((a as u32) << (shamt & 31)),
        OpImmKind::Srliw => sext32((a as u32) >> (shamt & 31)),
        OpImmKind::Sraiw => ((a as i32) >> (shamt & 31)) as i64 as u64,
    }
}

/// Register-register ALU operations, with the RISC-V results for division by zero and overflow.
#[inline(always)]
pub fn alu(op: OpKind, a: u64, b: u64) -> u64 {
    let shamt = (b & 63) as u32;
    let shamt_w = (b & 31) as u32;
    match op {
        OpKind::Add => a.wrapping_add(b),
        OpKind::Sub => a.wrapping_sub(b),
        OpKind::Sll => a << shamt,
        OpKind::Slt => ((a as i64) < (b as i64)) as u64,
        OpKind::Sltu => (a < b) as u64,
        OpKind::Xor => a ^ b,
        OpKind::Srl => a >> shamt,
        OpKind::Sra => ((a as i64) >> shamt) as u64,
        OpKind::Or => a | b,
        OpKind::And => a & b,
        OpKind::Mul => a.wrapping_mul(b),
        OpKind::Mulh => (((a as i64 as i128) * (b as i64 as i128)) >> 64) as u64,
        OpKind::Mulhsu => (((a as i64 as i128) * (b as u128 as i128)) >> 64) as u64,
        OpKind::Mulhu => (((a as u128) * (b as u128)) >> 64) as u64,
        OpKind::Div => {
            if b == 0 {
                u64::MAX
            } else {
                (a as i64).wrapping_div(b as i64) as u64
            }
        }
        OpKind::Divu => a.checked_div(b).unwrap_or(u64::MAX),
        OpKind::Rem => {
            if b == 0 {
                a
            } else {
                (a as i64).wrapping_rem(b as i64) as u64
            }
        }
        OpKind::Remu => {
            if b == 0 {
                a
            } else {
                a % b
            }
        }
        OpKind::Addw => sext32(a.wrapping_add(b) as u32),
        OpKind::Subw => sext32(a.wrapping_sub(b) as u32),
        OpKind::Sllw => sext32((a as u32) << shamt_w),
        OpKind::Srlw => sext32((a as u32) >> shamt_w),
        OpKind::Sraw => ((a as i32) >> shamt_w) as i64 as u64,
        OpKind::Mulw => sext32((a as u32).wrapping_mul(b as u32)),
        OpKind::Divw => {
            let (a, b) = (a as i32, b as i32);
            if b == 0 {
                u64::MAX
            } else {
                a.wrapping_div(b) as i64 as u64
            }
        }
        OpKind::Divuw => {
            let (a, b) = (a as u32, b as u32);
            sext32(a.checked_div(b).unwrap_or(u32::MAX))
        }
        OpKind::Remw => {
            let (a, b) = (a as i32, b as i32);
            if b == 0 {
                a as i64 as u64
            } else {
                a.wrapping_rem(b) as i64 as u64
            }
        }
        OpKind::Remuw => {
            let (a, b) = (a as u32, b as u32);
            if b == 0 {
                sext32(a)
            } else {
                sext32(a % b)
            }
        }
    }
}

/// The value an AMO stores, from the (sign-extended) old memory value and `rs2`.
fn amo(op: AmoOp, width: AmoWidth, old: u64, operand: u64) -> u64 {
    let (signed_old, signed_operand, unsigned_old, unsigned_operand) = match width {
        AmoWidth::W => (old as i32 as i64, operand as i32 as i64, old as u32 as u64, operand as u32 as u64),
        AmoWidth::D => (old as i64, operand as i64, old, operand),
    };
    match op {
        AmoOp::Swap => operand,
        AmoOp::Add => old.wrapping_add(operand),
        AmoOp::Xor => old ^ operand,
        AmoOp::And => old & operand,
        AmoOp::Or => old | operand,
        AmoOp::Min => signed_old.min(signed_operand) as u64,
        AmoOp::Max => signed_old.max(signed_operand) as u64,
        AmoOp::Minu => unsigned_old.min(unsigned_operand),
        AmoOp::Maxu => unsigned_old.max(unsigned_operand),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_edge_cases_follow_the_spec() {
        assert_eq!(alu(OpKind::Div, 7, 0), u64::MAX);
        assert_eq!(alu(OpKind::Divu, 7, 0), u64::MAX);
        assert_eq!(alu(OpKind::Rem, 7, 0), 7);
        assert_eq!(alu(OpKind::Remu, 7, 0), 7);
        assert_eq!(alu(OpKind::Div, i64::MIN as u64, -1i64 as u64), i64::MIN as u64);
        assert_eq!(alu(OpKind::Rem, i64::MIN as u64, -1i64 as u64), 0);
        assert_eq!(alu(OpKind::Divw, 0x8000_0000, -1i64 as u64), 0xffff_ffff_8000_0000);
        assert_eq!(alu(OpKind::Remw, 0x8000_0000, -1i64 as u64), 0);
        assert_eq!(alu(OpKind::Divuw, 5, 0), u64::MAX);
        assert_eq!(alu(OpKind::Remuw, 0x8000_0005, 0), 0xffff_ffff_8000_0005);
        assert_eq!(alu(OpKind::Divw, 5, 0), u64::MAX);
        assert_eq!(alu(OpKind::Remw, 0xffff_fffe, 0), u64::MAX - 1);
    }

    #[test]
    fn multiply_high_variants() {
        assert_eq!(alu(OpKind::Mulh, -1i64 as u64, -1i64 as u64), 0);
        assert_eq!(alu(OpKind::Mulhu, u64::MAX, u64::MAX), u64::MAX - 1);
        assert_eq!(alu(OpKind::Mulhsu, -1i64 as u64, u64::MAX), u64::MAX);
        assert_eq!(alu(OpKind::Mulw, 0x7fff_ffff, 2), 0xffff_ffff_ffff_fffe);
    }

    #[test]
    fn word_shifts_use_five_bits_and_sign_extend() {
        assert_eq!(alu(OpKind::Sllw, 1, 31), 0xffff_ffff_8000_0000);
        assert_eq!(alu(OpKind::Sllw, 1, 32), 1);
        assert_eq!(alu(OpKind::Srlw, 0xffff_ffff_8000_0000, 31), 1);
        assert_eq!(alu(OpKind::Sraw, 0x8000_0000, 4), 0xffff_ffff_f800_0000);
        assert_eq!(alu(OpKind::Sra, 1 << 63, 64 + 63), u64::MAX);
    }

    #[test]
    fn amo_word_operations_compare_32_bit_values() {
        let old = extend(0x8000_0000, 4, true);
        assert_eq!(amo(AmoOp::Min, AmoWidth::W, old, 1) as u32, 0x8000_0000);
        assert_eq!(amo(AmoOp::Minu, AmoWidth::W, old, 1), 1);
        assert_eq!(amo(AmoOp::Maxu, AmoWidth::W, old, 0xffff_ffff_0000_0001) as u32, 0x8000_0000);
        assert_eq!(amo(AmoOp::Max, AmoWidth::D, -5i64 as u64, 3), 3);
    }
}
