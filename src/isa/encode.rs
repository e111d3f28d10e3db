//! Encoding of [`Inst`] into its canonical 32-bit form.
//!
//! The canonical form has every field that the decoder ignores (the reserved `rd`/`rs1` fields of FENCE and
//! FENCE.I, the immediate of FENCE.I) set to zero, and is never a compressed encoding. Operands are masked to
//! their field widths, so an out-of-range operand never corrupts a neighbouring field; `encode` is only
//! meaningful for instructions that [`super::decode_word`] can produce.
use super::{
    AmoOp, AmoWidth, BranchCond, CsrOp, FmaOp, FpArithOp, FpCmpCond, FpFormat, Inst, IntType, LoadWidth, OpImmKind,
    OpKind, Reg, SgnjKind, StoreWidth,
};

const OP_LOAD: u32 = 0b000_0011;
const OP_LOAD_FP: u32 = 0b000_0111;
const OP_MISC_MEM: u32 = 0b000_1111;
const OP_OP_IMM: u32 = 0b001_0011;
const OP_AUIPC: u32 = 0b001_0111;
const OP_OP_IMM_32: u32 = 0b001_1011;
const OP_STORE: u32 = 0b010_0011;
const OP_STORE_FP: u32 = 0b010_0111;
const OP_AMO: u32 = 0b010_1111;
const OP_OP: u32 = 0b011_0011;
const OP_LUI: u32 = 0b011_0111;
const OP_OP_32: u32 = 0b011_1011;
const OP_MADD: u32 = 0b100_0011;
const OP_OP_FP: u32 = 0b101_0011;
const OP_BRANCH: u32 = 0b110_0011;
const OP_JALR: u32 = 0b110_0111;
const OP_JAL: u32 = 0b110_1111;
const OP_SYSTEM: u32 = 0b111_0011;

#[inline(always)]
const fn reg(r: Reg) -> u32 {
    (r & 31) as u32
}

/// R-type: funct7 | rs2 | rs1 | funct3 | rd | opcode.
#[inline(always)]
const fn r_type(opcode: u32, f3: u32, f7: u32, rd: Reg, rs1: Reg, rs2: Reg) -> u32 {
    (f7 & 0x7f) << 25 | reg(rs2) << 20 | reg(rs1) << 15 | (f3 & 7) << 12 | reg(rd) << 7 | opcode
}

/// I-type: imm[11:0] | rs1 | funct3 | rd | opcode.
#[inline(always)]
const fn i_type(opcode: u32, f3: u32, rd: Reg, rs1: Reg, imm: i32) -> u32 {
    ((imm as u32) & 0xfff) << 20 | reg(rs1) << 15 | (f3 & 7) << 12 | reg(rd) << 7 | opcode
}

/// S-type: imm[11:5] | rs2 | rs1 | funct3 | imm[4:0] | opcode.
#[inline(always)]
const fn s_type(opcode: u32, f3: u32, rs1: Reg, rs2: Reg, imm: i32) -> u32 {
    let imm = imm as u32;
    ((imm >> 5) & 0x7f) << 25 | reg(rs2) << 20 | reg(rs1) << 15 | (f3 & 7) << 12 | (imm & 0x1f) << 7 | opcode
}

/// B-type: imm[12|10:5] | rs2 | rs1 | funct3 | imm[4:1|11] | opcode.
#[inline(always)]
const fn b_type(f3: u32, rs1: Reg, rs2: Reg, imm: i32) -> u32 {
    let imm = imm as u32;
    ((imm >> 12) & 1) << 31
        | ((imm >> 5) & 0x3f) << 25
        | reg(rs2) << 20
        | reg(rs1) << 15
        | (f3 & 7) << 12
        | ((imm >> 1) & 0xf) << 8
        | ((imm >> 11) & 1) << 7
        | OP_BRANCH
}

/// U-type: imm[31:12] | rd | opcode.
#[inline(always)]
const fn u_type(opcode: u32, rd: Reg, imm: i32) -> u32 {
    (imm as u32) & 0xffff_f000 | reg(rd) << 7 | opcode
}

/// J-type: imm[20|10:1|11|19:12] | rd | opcode.
#[inline(always)]
const fn j_type(rd: Reg, imm: i32) -> u32 {
    let imm = imm as u32;
    ((imm >> 20) & 1) << 31
        | ((imm >> 1) & 0x3ff) << 21
        | ((imm >> 11) & 1) << 20
        | imm & 0x000f_f000
        | reg(rd) << 7
        | OP_JAL
}

#[inline(always)]
const fn fmt_bits(fmt: FpFormat) -> u32 {
    match fmt {
        FpFormat::S => 0,
        FpFormat::D => 1,
    }
}

#[inline(always)]
const fn int_bits(int: IntType) -> u8 {
    match int {
        IntType::W => 0,
        IntType::Wu => 1,
        IntType::L => 2,
        IntType::Lu => 3,
    }
}

/// The canonical 32-bit encoding of `inst`; an [`Inst::Illegal`] encodes to the word it carries.
pub fn encode(inst: &Inst) -> u32 {
    match *inst {
        Inst::Illegal(word) => word,
        Inst::Lui { rd, imm } => u_type(OP_LUI, rd, imm),
        Inst::Auipc { rd, imm } => u_type(OP_AUIPC, rd, imm),
        Inst::Jal { rd, offset } => j_type(rd, offset),
        Inst::Jalr { rd, rs1, offset } => i_type(OP_JALR, 0, rd, rs1, offset),
        Inst::Branch { cond, rs1, rs2, offset } => {
            let f3 = match cond {
                BranchCond::Eq => 0,
                BranchCond::Ne => 1,
                BranchCond::Lt => 4,
                BranchCond::Ge => 5,
                BranchCond::Ltu => 6,
                BranchCond::Geu => 7,
            };
            b_type(f3, rs1, rs2, offset)
        }
        Inst::Load { width, rd, rs1, offset } => {
            let f3 = match width {
                LoadWidth::B => 0,
                LoadWidth::H => 1,
                LoadWidth::W => 2,
                LoadWidth::D => 3,
                LoadWidth::Bu => 4,
                LoadWidth::Hu => 5,
                LoadWidth::Wu => 6,
            };
            i_type(OP_LOAD, f3, rd, rs1, offset)
        }
        Inst::Store { width, rs1, rs2, offset } => {
            let f3 = match width {
                StoreWidth::B => 0,
                StoreWidth::H => 1,
                StoreWidth::W => 2,
                StoreWidth::D => 3,
            };
            s_type(OP_STORE, f3, rs1, rs2, offset)
        }
        Inst::OpImm { op, rd, rs1, imm } => {
            let shamt6 = imm & 0x3f;
            let shamt5 = imm & 0x1f;
            match op {
                OpImmKind::Addi => i_type(OP_OP_IMM, 0, rd, rs1, imm),
                OpImmKind::Slti => i_type(OP_OP_IMM, 2, rd, rs1, imm),
                OpImmKind::Sltiu => i_type(OP_OP_IMM, 3, rd, rs1, imm),
                OpImmKind::Xori => i_type(OP_OP_IMM, 4, rd, rs1, imm),
                OpImmKind::Ori => i_type(OP_OP_IMM, 6, rd, rs1, imm),
                OpImmKind::Andi => i_type(OP_OP_IMM, 7, rd, rs1, imm),
                OpImmKind::Slli => i_type(OP_OP_IMM, 1, rd, rs1, shamt6),
                OpImmKind::Srli => i_type(OP_OP_IMM, 5, rd, rs1, shamt6),
                OpImmKind::Srai => i_type(OP_OP_IMM, 5, rd, rs1, 0x400 | shamt6),
                OpImmKind::Addiw => i_type(OP_OP_IMM_32, 0, rd, rs1, imm),
                OpImmKind::Slliw => i_type(OP_OP_IMM_32, 1, rd, rs1, shamt5),
                OpImmKind::Srliw => i_type(OP_OP_IMM_32, 5, rd, rs1, shamt5),
                OpImmKind::Sraiw => i_type(OP_OP_IMM_32, 5, rd, rs1, 0x400 | shamt5),
            }
        }
        Inst::Op { op, rd, rs1, rs2 } => {
            let (opcode, f7, f3) = match op {
                OpKind::Add => (OP_OP, 0b000_0000, 0),
                OpKind::Sub => (OP_OP, 0b010_0000, 0),
                OpKind::Sll => (OP_OP, 0b000_0000, 1),
                OpKind::Slt => (OP_OP, 0b000_0000, 2),
                OpKind::Sltu => (OP_OP, 0b000_0000, 3),
                OpKind::Xor => (OP_OP, 0b000_0000, 4),
                OpKind::Srl => (OP_OP, 0b000_0000, 5),
                OpKind::Sra => (OP_OP, 0b010_0000, 5),
                OpKind::Or => (OP_OP, 0b000_0000, 6),
                OpKind::And => (OP_OP, 0b000_0000, 7),
                OpKind::Mul => (OP_OP, 0b000_0001, 0),
                OpKind::Mulh => (OP_OP, 0b000_0001, 1),
                OpKind::Mulhsu => (OP_OP, 0b000_0001, 2),
                OpKind::Mulhu => (OP_OP, 0b000_0001, 3),
                OpKind::Div => (OP_OP, 0b000_0001, 4),
                OpKind::Divu => (OP_OP, 0b000_0001, 5),
                OpKind::Rem => (OP_OP, 0b000_0001, 6),
                OpKind::Remu => (OP_OP, 0b000_0001, 7),
                OpKind::Addw => (OP_OP_32, 0b000_0000, 0),
                OpKind::Subw => (OP_OP_32, 0b010_0000, 0),
                OpKind::Sllw => (OP_OP_32, 0b000_0000, 1),
                OpKind::Srlw => (OP_OP_32, 0b000_0000, 5),
                OpKind::Sraw => (OP_OP_32, 0b010_0000, 5),
                OpKind::Mulw => (OP_OP_32, 0b000_0001, 0),
                OpKind::Divw => (OP_OP_32, 0b000_0001, 4),
                OpKind::Divuw => (OP_OP_32, 0b000_0001, 5),
                OpKind::Remw => (OP_OP_32, 0b000_0001, 6),
                OpKind::Remuw => (OP_OP_32, 0b000_0001, 7),
            };
            r_type(opcode, f3, f7, rd, rs1, rs2)
        }
        Inst::Fence { fm, pred, succ } => {
            ((fm & 0xf) as u32) << 28 | ((pred & 0xf) as u32) << 24 | ((succ & 0xf) as u32) << 20 | OP_MISC_MEM
        }
        Inst::FenceI => 1 << 12 | OP_MISC_MEM,
        Inst::Ecall => 0x0000_0073,
        Inst::Ebreak => 0x0010_0073,
        Inst::Sret => 0x1020_0073,
        Inst::Mret => 0x3020_0073,
        Inst::Wfi => 0x1050_0073,
        Inst::SfenceVma { rs1, rs2 } => r_type(OP_SYSTEM, 0, 0b000_1001, 0, rs1, rs2),
        Inst::Csr { op, rd, src, csr } => {
            let f3 = match op {
                CsrOp::Rw => 1,
                CsrOp::Rs => 2,
                CsrOp::Rc => 3,
                CsrOp::Rwi => 5,
                CsrOp::Rsi => 6,
                CsrOp::Rci => 7,
            };
            ((csr & 0xfff) as u32) << 20 | reg(src) << 15 | f3 << 12 | reg(rd) << 7 | OP_SYSTEM
        }
        Inst::Lr { width, aq, rl, rd, rs1 } => amo_type(0b00010, width, aq, rl, rd, rs1, 0),
        Inst::Sc { width, aq, rl, rd, rs1, rs2 } => amo_type(0b00011, width, aq, rl, rd, rs1, rs2),
        Inst::Amo { op, width, aq, rl, rd, rs1, rs2 } => {
            let f5 = match op {
                AmoOp::Add => 0b00000,
                AmoOp::Swap => 0b00001,
                AmoOp::Xor => 0b00100,
                AmoOp::Or => 0b01000,
                AmoOp::And => 0b01100,
                AmoOp::Min => 0b10000,
                AmoOp::Max => 0b10100,
                AmoOp::Minu => 0b11000,
                AmoOp::Maxu => 0b11100,
            };
            amo_type(f5, width, aq, rl, rd, rs1, rs2)
        }
        Inst::FpLoad { fmt, rd, rs1, offset } => i_type(OP_LOAD_FP, 2 + fmt_bits(fmt), rd, rs1, offset),
        Inst::FpStore { fmt, rs1, rs2, offset } => s_type(OP_STORE_FP, 2 + fmt_bits(fmt), rs1, rs2, offset),
        Inst::FpFma { op, fmt, rm, rd, rs1, rs2, rs3 } => {
            let op = match op {
                FmaOp::Madd => 0,
                FmaOp::Msub => 1,
                FmaOp::Nmsub => 2,
                FmaOp::Nmadd => 3,
            };
            r_type(OP_MADD | op << 2, rm as u32, reg(rs3) << 2 | fmt_bits(fmt), rd, rs1, rs2)
        }
        Inst::FpArith { op, fmt, rm, rd, rs1, rs2 } => {
            let op = match op {
                FpArithOp::Add => 0b00000,
                FpArithOp::Sub => 0b00001,
                FpArithOp::Mul => 0b00010,
                FpArithOp::Div => 0b00011,
            };
            op_fp(op, fmt, rm as u32, rd, rs1, rs2)
        }
        Inst::FpSqrt { fmt, rm, rd, rs1 } => op_fp(0b01011, fmt, rm as u32, rd, rs1, 0),
        Inst::FpSgnj { kind, fmt, rd, rs1, rs2 } => {
            let f3 = match kind {
                SgnjKind::Sgnj => 0,
                SgnjKind::Sgnjn => 1,
                SgnjKind::Sgnjx => 2,
            };
            op_fp(0b00100, fmt, f3, rd, rs1, rs2)
        }
        Inst::FpMinMax { max, fmt, rd, rs1, rs2 } => op_fp(0b00101, fmt, max as u32, rd, rs1, rs2),
        Inst::FpCvtFp { to, from, rm, rd, rs1 } => op_fp(0b01000, to, rm as u32, rd, rs1, fmt_bits(from) as Reg),
        Inst::FpCvtToInt { int, fmt, rm, rd, rs1 } => op_fp(0b11000, fmt, rm as u32, rd, rs1, int_bits(int)),
        Inst::FpCvtFromInt { int, fmt, rm, rd, rs1 } => op_fp(0b11010, fmt, rm as u32, rd, rs1, int_bits(int)),
        Inst::FpMvToInt { fmt, rd, rs1 } => op_fp(0b11100, fmt, 0, rd, rs1, 0),
        Inst::FpClass { fmt, rd, rs1 } => op_fp(0b11100, fmt, 1, rd, rs1, 0),
        Inst::FpMvFromInt { fmt, rd, rs1 } => op_fp(0b11110, fmt, 0, rd, rs1, 0),
        Inst::FpCmp { cond, fmt, rd, rs1, rs2 } => {
            let f3 = match cond {
                FpCmpCond::Le => 0,
                FpCmpCond::Lt => 1,
                FpCmpCond::Eq => 2,
            };
            op_fp(0b10100, fmt, f3, rd, rs1, rs2)
        }
    }
}

/// An AMO-opcode instruction: funct5 | aq | rl | rs2 | rs1 | width | rd | opcode.
#[inline(always)]
fn amo_type(f5: u32, width: AmoWidth, aq: bool, rl: bool, rd: Reg, rs1: Reg, rs2: Reg) -> u32 {
    let f3 = match width {
        AmoWidth::W => 2,
        AmoWidth::D => 3,
    };
    r_type(OP_AMO, f3, f5 << 2 | (aq as u32) << 1 | rl as u32, rd, rs1, rs2)
}

/// An OP-FP instruction: funct7 = operation (5 bits) and format (2 bits).
#[inline(always)]
fn op_fp(op: u32, fmt: FpFormat, f3: u32, rd: Reg, rs1: Reg, rs2: Reg) -> u32 {
    r_type(OP_OP_FP, f3, op << 2 | fmt_bits(fmt), rd, rs1, rs2)
}
