//! Disassembly of [`super::Inst`] in the assembler syntax of the RISC-V specification.
//!
//! Registers are shown by their ABI names, branch and jump targets relative to the instruction (`pc + 12`), CSRs
//! by number, and rounding modes only when they are not `dyn`. Formatting writes straight to the formatter and
//! never allocates, so it can be used by tracing in `no_std` builds.
use core::fmt::{self, Display, Formatter};

use super::{
    AmoOp, AmoWidth, BranchCond, CsrOp, FmaOp, FpArithOp, FpCmpCond, FpFormat, Inst, IntType, LoadWidth, OpImmKind,
    OpKind, Reg, SgnjKind, StoreWidth,
};

/// ABI names of the integer registers `x0`-`x31`.
const X_NAMES: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "s2",
    "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
];

/// ABI names of the floating-point registers `f0`-`f31`.
const F_NAMES: [&str; 32] = [
    "ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0", "fa1", "fa2", "fa3", "fa4", "fa5",
    "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11", "ft8", "ft9", "ft10", "ft11",
];

/// The ABI name of integer register `r`.
fn x(r: Reg) -> &'static str {
    X_NAMES[(r & 31) as usize]
}

/// The ABI name of floating-point register `r`.
fn f(r: Reg) -> &'static str {
    F_NAMES[(r & 31) as usize]
}

/// A pc-relative target, shown as `pc + 12` or `pc - 8`.
struct PcRel(i32);

impl Display for PcRel {
    fn fmt(&self, out: &mut Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            write!(out, "pc - {}", self.0.unsigned_abs())
        } else {
            write!(out, "pc + {}", self.0)
        }
    }
}

/// `, rm` for a static rounding mode; nothing for `dyn`.
struct Rm(u8);

impl Display for Rm {
    fn fmt(&self, out: &mut Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "rne",
            1 => "rtz",
            2 => "rdn",
            3 => "rup",
            4 => "rmm",
            7 => return Ok(()),
            _ => "reserved",
        };
        write!(out, ", {name}")
    }
}

/// A FENCE predecessor or successor set (`iorw` letters, `0` for the empty set).
struct FenceSet(u8);

impl Display for FenceSet {
    fn fmt(&self, out: &mut Formatter<'_>) -> fmt::Result {
        if self.0 & 0xf == 0 {
            return out.write_str("0");
        }
        for (bit, name) in [(8, "i"), (4, "o"), (2, "r"), (1, "w")] {
            if self.0 & bit != 0 {
                out.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// The `.aq`/`.rl`/`.aqrl` ordering suffix of an atomic instruction.
fn ordering(aq: bool, rl: bool) -> &'static str {
    match (aq, rl) {
        (false, false) => "",
        (true, false) => ".aq",
        (false, true) => ".rl",
        (true, true) => ".aqrl",
    }
}

fn fmt_suffix(fmt: FpFormat) -> &'static str {
    match fmt {
        FpFormat::S => "s",
        FpFormat::D => "d",
    }
}

fn amo_width(width: AmoWidth) -> &'static str {
    match width {
        AmoWidth::W => "w",
        AmoWidth::D => "d",
    }
}

fn int_suffix(int: IntType) -> &'static str {
    match int {
        IntType::W => "w",
        IntType::Wu => "wu",
        IntType::L => "l",
        IntType::Lu => "lu",
    }
}

impl Display for Inst {
    fn fmt(&self, out: &mut Formatter<'_>) -> fmt::Result {
        match *self {
            Inst::Illegal(word) if word & 3 != 3 && word <= 0xffff => {
                write!(out, "illegal {word:#06x}")
            }
            Inst::Illegal(word) => write!(out, "illegal {word:#010x}"),
            Inst::Lui { rd, imm } => write!(out, "lui {}, {:#x}", x(rd), (imm as u32) >> 12),
            Inst::Auipc { rd, imm } => write!(out, "auipc {}, {:#x}", x(rd), (imm as u32) >> 12),
            Inst::Jal { rd, offset } => write!(out, "jal {}, {}", x(rd), PcRel(offset)),
            Inst::Jalr { rd, rs1, offset } => write!(out, "jalr {}, {}({})", x(rd), offset, x(rs1)),
            Inst::Branch { cond, rs1, rs2, offset } => {
                let name = match cond {
                    BranchCond::Eq => "beq",
                    BranchCond::Ne => "bne",
                    BranchCond::Lt => "blt",
                    BranchCond::Ge => "bge",
                    BranchCond::Ltu => "bltu",
                    BranchCond::Geu => "bgeu",
                };
                write!(out, "{name} {}, {}, {}", x(rs1), x(rs2), PcRel(offset))
            }
            Inst::Load { width, rd, rs1, offset } => {
                let name = match width {
                    LoadWidth::B => "lb",
                    LoadWidth::H => "lh",
                    LoadWidth::W => "lw",
                    LoadWidth::D => "ld",
                    LoadWidth::Bu => "lbu",
                    LoadWidth::Hu => "lhu",
                    LoadWidth::Wu => "lwu",
                };
                write!(out, "{name} {}, {}({})", x(rd), offset, x(rs1))
            }
            Inst::Store { width, rs1, rs2, offset } => {
                let name = match width {
                    StoreWidth::B => "sb",
                    StoreWidth::H => "sh",
                    StoreWidth::W => "sw",
                    StoreWidth::D => "sd",
                };
                write!(out, "{name} {}, {}({})", x(rs2), offset, x(rs1))
            }
            Inst::OpImm { op, rd, rs1, imm } => {
                let name = match op {
                    OpImmKind::Addi => "addi",
                    OpImmKind::Slti => "slti",
                    OpImmKind::Sltiu => "sltiu",
                    OpImmKind::Xori => "xori",
                    OpImmKind::Ori => "ori",
                    OpImmKind::Andi => "andi",
                    OpImmKind::Slli => "slli",
                    OpImmKind::Srli => "srli",
                    OpImmKind::Srai => "srai",
                    OpImmKind::Addiw => "addiw",
                    OpImmKind::Slliw => "slliw",
                    OpImmKind::Srliw => "srliw",
                    OpImmKind::Sraiw => "sraiw",
                };
                write!(out, "{name} {}, {}, {}", x(rd), x(rs1), imm)
            }
            Inst::Op { op, rd, rs1, rs2 } => {
                let name = match op {
                    OpKind::Add => "add",
                    OpKind::Sub => "sub",
                    OpKind::Sll => "sll",
                    OpKind::Slt => "slt",
                    OpKind::Sltu => "sltu",
                    OpKind::Xor => "xor",
                    OpKind::Srl => "srl",
                    OpKind::Sra => "sra",
                    OpKind::Or => "or",
                    OpKind::And => "and",
                    OpKind::Mul => "mul",
                    OpKind::Mulh => "mulh",
                    OpKind::Mulhsu => "mulhsu",
                    OpKind::Mulhu => "mulhu",
                    OpKind::Div => "div",
                    OpKind::Divu => "divu",
                    OpKind::Rem => "rem",
                    OpKind::Remu => "remu",
                    OpKind::Addw => "addw",
                    OpKind::Subw => "subw",
                    OpKind::Sllw => "sllw",
                    OpKind::Srlw => "srlw",
                    OpKind::Sraw => "sraw",
                    OpKind::Mulw => "mulw",
                    OpKind::Divw => "divw",
                    OpKind::Divuw => "divuw",
                    OpKind::Remw => "remw",
                    OpKind::Remuw => "remuw",
                };
                write!(out, "{name} {}, {}, {}", x(rd), x(rs1), x(rs2))
            }
            Inst::Fence { fm: 0b1000, pred: 0b0011, succ: 0b0011 } => out.write_str("fence.tso"),
            Inst::Fence { fm: 0, pred, succ } => {
                write!(out, "fence {}, {}", FenceSet(pred), FenceSet(succ))
            }
            Inst::Fence { fm, pred, succ } => {
                write!(out, "fence {}, {}, fm={:#x}", FenceSet(pred), FenceSet(succ), fm)
            }
            Inst::FenceI => out.write_str("fence.i"),
            Inst::Ecall => out.write_str("ecall"),
            Inst::Ebreak => out.write_str("ebreak"),
            Inst::Sret => out.write_str("sret"),
            Inst::Mret => out.write_str("mret"),
            Inst::Wfi => out.write_str("wfi"),
            Inst::SfenceVma { rs1, rs2 } => write!(out, "sfence.vma {}, {}", x(rs1), x(rs2)),
            Inst::Csr { op, rd, src, csr } => {
                let name = match op {
                    CsrOp::Rw => "csrrw",
                    CsrOp::Rs => "csrrs",
                    CsrOp::Rc => "csrrc",
                    CsrOp::Rwi => "csrrwi",
                    CsrOp::Rsi => "csrrsi",
                    CsrOp::Rci => "csrrci",
                };
                if op.is_immediate() {
                    write!(out, "{name} {}, {:#x}, {}", x(rd), csr, src)
                } else {
                    write!(out, "{name} {}, {:#x}, {}", x(rd), csr, x(src))
                }
            }
            Inst::Lr { width, aq, rl, rd, rs1 } => {
                write!(out, "lr.{}{} {}, ({})", amo_width(width), ordering(aq, rl), x(rd), x(rs1))
            }
            Inst::Sc { width, aq, rl, rd, rs1, rs2 } => {
                write!(out, "sc.{}{} {}, {}, ({})", amo_width(width), ordering(aq, rl), x(rd), x(rs2), x(rs1))
            }
            Inst::Amo { op, width, aq, rl, rd, rs1, rs2 } => {
                let name = match op {
                    AmoOp::Swap => "amoswap",
                    AmoOp::Add => "amoadd",
                    AmoOp::Xor => "amoxor",
                    AmoOp::And => "amoand",
                    AmoOp::Or => "amoor",
                    AmoOp::Min => "amomin",
                    AmoOp::Max => "amomax",
                    AmoOp::Minu => "amominu",
                    AmoOp::Maxu => "amomaxu",
                };
                write!(out, "{name}.{}{} {}, {}, ({})", amo_width(width), ordering(aq, rl), x(rd), x(rs2), x(rs1))
            }
            Inst::FpLoad { fmt, rd, rs1, offset } => {
                let name = match fmt {
                    FpFormat::S => "flw",
                    FpFormat::D => "fld",
                };
                write!(out, "{name} {}, {}({})", f(rd), offset, x(rs1))
            }
            Inst::FpStore { fmt, rs1, rs2, offset } => {
                let name = match fmt {
                    FpFormat::S => "fsw",
                    FpFormat::D => "fsd",
                };
                write!(out, "{name} {}, {}({})", f(rs2), offset, x(rs1))
            }
            Inst::FpFma { op, fmt, rm, rd, rs1, rs2, rs3 } => {
                let name = match op {
                    FmaOp::Madd => "fmadd",
                    FmaOp::Msub => "fmsub",
                    FmaOp::Nmsub => "fnmsub",
                    FmaOp::Nmadd => "fnmadd",
                };
                let s = fmt_suffix(fmt);
                write!(out, "{name}.{s} {}, {}, {}, {}{}", f(rd), f(rs1), f(rs2), f(rs3), Rm(rm))
            }
            Inst::FpArith { op, fmt, rm, rd, rs1, rs2 } => {
                let name = match op {
                    FpArithOp::Add => "fadd",
                    FpArithOp::Sub => "fsub",
                    FpArithOp::Mul => "fmul",
                    FpArithOp::Div => "fdiv",
                };
                write!(out, "{name}.{} {}, {}, {}{}", fmt_suffix(fmt), f(rd), f(rs1), f(rs2), Rm(rm))
            }
            Inst::FpSqrt { fmt, rm, rd, rs1 } => {
                write!(out, "fsqrt.{} {}, {}{}", fmt_suffix(fmt), f(rd), f(rs1), Rm(rm))
            }
            Inst::FpSgnj { kind, fmt, rd, rs1, rs2 } => {
                let name = match kind {
                    SgnjKind::Sgnj => "fsgnj",
                    SgnjKind::Sgnjn => "fsgnjn",
                    SgnjKind::Sgnjx => "fsgnjx",
                };
                write!(out, "{name}.{} {}, {}, {}", fmt_suffix(fmt), f(rd), f(rs1), f(rs2))
            }
            Inst::FpMinMax { max, fmt, rd, rs1, rs2 } => {
                let name = if max { "fmax" } else { "fmin" };
                write!(out, "{name}.{} {}, {}, {}", fmt_suffix(fmt), f(rd), f(rs1), f(rs2))
            }
            Inst::FpCvtFp { to, from, rm, rd, rs1 } => {
                write!(out, "fcvt.{}.{} {}, {}{}", fmt_suffix(to), fmt_suffix(from), f(rd), f(rs1), Rm(rm))
            }
            Inst::FpCvtToInt { int, fmt, rm, rd, rs1 } => {
                write!(out, "fcvt.{}.{} {}, {}{}", int_suffix(int), fmt_suffix(fmt), x(rd), f(rs1), Rm(rm))
            }
            Inst::FpCvtFromInt { int, fmt, rm, rd, rs1 } => {
                write!(out, "fcvt.{}.{} {}, {}{}", fmt_suffix(fmt), int_suffix(int), f(rd), x(rs1), Rm(rm))
            }
            Inst::FpMvToInt { fmt, rd, rs1 } => {
                let name = match fmt {
                    FpFormat::S => "fmv.x.w",
                    FpFormat::D => "fmv.x.d",
                };
                write!(out, "{name} {}, {}", x(rd), f(rs1))
            }
            Inst::FpMvFromInt { fmt, rd, rs1 } => {
                let name = match fmt {
                    FpFormat::S => "fmv.w.x",
                    FpFormat::D => "fmv.d.x",
                };
                write!(out, "{name} {}, {}", f(rd), x(rs1))
            }
            Inst::FpCmp { cond, fmt, rd, rs1, rs2 } => {
                let name = match cond {
                    FpCmpCond::Eq => "feq",
                    FpCmpCond::Lt => "flt",
                    FpCmpCond::Le => "fle",
                };
                write!(out, "{name}.{} {}, {}, {}", fmt_suffix(fmt), x(rd), f(rs1), f(rs2))
            }
            Inst::FpClass { fmt, rd, rs1 } => {
                write!(out, "fclass.{} {}, {}", fmt_suffix(fmt), x(rd), f(rs1))
            }
        }
    }
}
