//! Decoding of 32-bit and compressed (16-bit) RV64GC encodings into [`Inst`].
//!
//! Both decoders are straight-line matches on the opcode and function fields (no tables, loops or allocation)
//! because they sit on the interpreter's hot path. Neither can panic: every input maps to an [`Inst`], and
//! anything that is not a valid RV64GC encoding maps to [`Inst::Illegal`].
use super::{
    AmoOp, AmoWidth, BranchCond, CsrOp, Decoded, FmaOp, FpArithOp, FpCmpCond, FpFormat, Inst, IntType, LoadWidth,
    OpImmKind, OpKind, Reg, SgnjKind, StoreWidth,
};

/// Decodes the instruction at the start of `word` (a compressed one if its low two bits are not `0b11`).
pub fn decode(word: u32) -> Decoded {
    if word & 3 == 3 {
        Decoded { inst: decode_word(word), len: 4 }
    } else {
        Decoded { inst: decode_compressed(word as u16), len: 2 }
    }
}

// Field extraction for 32-bit encodings.

#[inline(always)]
const fn rd(w: u32) -> Reg {
    ((w >> 7) & 31) as Reg
}

#[inline(always)]
const fn rs1(w: u32) -> Reg {
    ((w >> 15) & 31) as Reg
}

#[inline(always)]
const fn rs2(w: u32) -> Reg {
    ((w >> 20) & 31) as Reg
}

#[inline(always)]
const fn rs3(w: u32) -> Reg {
    (w >> 27) as Reg
}

#[inline(always)]
const fn funct3(w: u32) -> u32 {
    (w >> 12) & 7
}

#[inline(always)]
const fn funct7(w: u32) -> u32 {
    w >> 25
}

/// I-type immediate, bits 31:20, sign-extended.
#[inline(always)]
const fn imm_i(w: u32) -> i32 {
    (w as i32) >> 20
}

/// S-type immediate, bits 31:25 and 11:7, sign-extended.
#[inline(always)]
const fn imm_s(w: u32) -> i32 {
    (((w as i32) >> 25) << 5) | ((w >> 7) & 0x1f) as i32
}

/// B-type immediate: imm[12|10:5] in bits 31:25, imm[4:1|11] in bits 11:7.
#[inline(always)]
const fn imm_b(w: u32) -> i32 {
    (((w as i32) >> 31) << 12)
        | (((w >> 7) & 1) << 11) as i32
        | (((w >> 25) & 0x3f) << 5) as i32
        | (((w >> 8) & 0xf) << 1) as i32
}

/// U-type immediate: bits 31:12 in place.
#[inline(always)]
const fn imm_u(w: u32) -> i32 {
    (w & 0xffff_f000) as i32
}

/// J-type immediate: imm[20|10:1|11|19:12] in bits 31:12.
#[inline(always)]
const fn imm_j(w: u32) -> i32 {
    (((w as i32) >> 31) << 20)
        | (w & 0x000f_f000) as i32
        | (((w >> 20) & 1) << 11) as i32
        | (((w >> 21) & 0x3ff) << 1) as i32
}

/// Whether `rm` is a rounding mode an instruction may carry (5 and 6 are reserved).
#[inline(always)]
const fn rm_valid(rm: u8) -> bool {
    rm != 5 && rm != 6
}

/// Decodes a 32-bit encoding.
pub fn decode_word(word: u32) -> Inst {
    let w = word;
    let illegal = Inst::Illegal(w);
    if w & 3 != 3 {
        return illegal;
    }
    let (rd, rs1, rs2, f3) = (rd(w), rs1(w), rs2(w), funct3(w));
    match (w >> 2) & 0x1f {
        // LOAD
        0b00000 => {
            let width = match f3 {
                0 => LoadWidth::B,
                1 => LoadWidth::H,
                2 => LoadWidth::W,
                3 => LoadWidth::D,
                4 => LoadWidth::Bu,
                5 => LoadWidth::Hu,
                6 => LoadWidth::Wu,
                _ => return illegal,
            };
            Inst::Load { width, rd, rs1, offset: imm_i(w) }
        }
        // LOAD-FP
        0b00001 => match f3 {
            2 => Inst::FpLoad { fmt: FpFormat::S, rd, rs1, offset: imm_i(w) },
            3 => Inst::FpLoad { fmt: FpFormat::D, rd, rs1, offset: imm_i(w) },
            _ => illegal,
        },
        // MISC-MEM. The rd and rs1 fields of FENCE, and the imm, rs1 and rd fields of FENCE.I, are reserved for
        // future use; base implementations must ignore them.
        0b00011 => match f3 {
            0 => Inst::Fence { fm: (w >> 28) as u8, pred: ((w >> 24) & 0xf) as u8, succ: ((w >> 20) & 0xf) as u8 },
            1 => Inst::FenceI,
            _ => illegal,
        },
        // OP-IMM
        0b00100 => {
            let imm = imm_i(w);
            let shamt = ((w >> 20) & 0x3f) as i32;
            let op = match f3 {
                0 => OpImmKind::Addi,
                2 => OpImmKind::Slti,
                3 => OpImmKind::Sltiu,
                4 => OpImmKind::Xori,
                6 => OpImmKind::Ori,
                7 => OpImmKind::Andi,
                1 if w >> 26 == 0 => return Inst::OpImm { op: OpImmKind::Slli, rd, rs1, imm: shamt },
                5 if w >> 26 == 0 => return Inst::OpImm { op: OpImmKind::Srli, rd, rs1, imm: shamt },
                5 if w >> 26 == 0b01_0000 => return Inst::OpImm { op: OpImmKind::Srai, rd, rs1, imm: shamt },
                _ => return illegal,
            };
            Inst::OpImm { op, rd, rs1, imm }
        }
        // AUIPC
        0b00101 => Inst::Auipc { rd, imm: imm_u(w) },
        // OP-IMM-32
        0b00110 => {
            let shamt = rs2 as i32;
            match (f3, funct7(w)) {
                (0, _) => Inst::OpImm { op: OpImmKind::Addiw, rd, rs1, imm: imm_i(w) },
                (1, 0) => Inst::OpImm { op: OpImmKind::Slliw, rd, rs1, imm: shamt },
                (5, 0) => Inst::OpImm { op: OpImmKind::Srliw, rd, rs1, imm: shamt },
                (5, 0b010_0000) => Inst::OpImm { op: OpImmKind::Sraiw, rd, rs1, imm: shamt },
                _ => illegal,
            }
        }
        // STORE
        0b01000 => {
            let width = match f3 {
                0 => StoreWidth::B,
                1 => StoreWidth::H,
                2 => StoreWidth::W,
                3 => StoreWidth::D,
                _ => return illegal,
            };
            Inst::Store { width, rs1, rs2, offset: imm_s(w) }
        }
        // STORE-FP
        0b01001 => match f3 {
            2 => Inst::FpStore { fmt: FpFormat::S, rs1, rs2, offset: imm_s(w) },
            3 => Inst::FpStore { fmt: FpFormat::D, rs1, rs2, offset: imm_s(w) },
            _ => illegal,
        },
        // AMO
        0b01011 => decode_amo(w, rd, rs1, rs2, f3),
        // OP
        0b01100 => {
            let op = match (funct7(w), f3) {
                (0b000_0000, 0) => OpKind::Add,
                (0b010_0000, 0) => OpKind::Sub,
                (0b000_0000, 1) => OpKind::Sll,
                (0b000_0000, 2) => OpKind::Slt,
                (0b000_0000, 3) => OpKind::Sltu,
                (0b000_0000, 4) => OpKind::Xor,
                (0b000_0000, 5) => OpKind::Srl,
                (0b010_0000, 5) => OpKind::Sra,
                (0b000_0000, 6) => OpKind::Or,
                (0b000_0000, 7) => OpKind::And,
                (0b000_0001, 0) => OpKind::Mul,
                (0b000_0001, 1) => OpKind::Mulh,
                (0b000_0001, 2) => OpKind::Mulhsu,
                (0b000_0001, 3) => OpKind::Mulhu,
                (0b000_0001, 4) => OpKind::Div,
                (0b000_0001, 5) => OpKind::Divu,
                (0b000_0001, 6) => OpKind::Rem,
                (0b000_0001, 7) => OpKind::Remu,
                _ => return illegal,
            };
            Inst::Op { op, rd, rs1, rs2 }
        }
        // LUI
        0b01101 => Inst::Lui { rd, imm: imm_u(w) },
        // OP-32
        0b01110 => {
            let op = match (funct7(w), f3) {
                (0b000_0000, 0) => OpKind::Addw,
                (0b010_0000, 0) => OpKind::Subw,
                (0b000_0000, 1) => OpKind::Sllw,
                (0b000_0000, 5) => OpKind::Srlw,
                (0b010_0000, 5) => OpKind::Sraw,
                (0b000_0001, 0) => OpKind::Mulw,
                (0b000_0001, 4) => OpKind::Divw,
                (0b000_0001, 5) => OpKind::Divuw,
                (0b000_0001, 6) => OpKind::Remw,
                (0b000_0001, 7) => OpKind::Remuw,
                _ => return illegal,
            };
            Inst::Op { op, rd, rs1, rs2 }
        }
        // MADD, MSUB, NMSUB, NMADD
        0b10000..=0b10011 => {
            let op = match (w >> 2) & 3 {
                0 => FmaOp::Madd,
                1 => FmaOp::Msub,
                2 => FmaOp::Nmsub,
                _ => FmaOp::Nmadd,
            };
            let fmt = match (w >> 25) & 3 {
                0 => FpFormat::S,
                1 => FpFormat::D,
                _ => return illegal,
            };
            let rm = f3 as u8;
            if !rm_valid(rm) {
                return illegal;
            }
            Inst::FpFma { op, fmt, rm, rd, rs1, rs2, rs3: rs3(w) }
        }
        // OP-FP
        0b10100 => decode_op_fp(w, rd, rs1, rs2, f3),
        // BRANCH
        0b11000 => {
            let cond = match f3 {
                0 => BranchCond::Eq,
                1 => BranchCond::Ne,
                4 => BranchCond::Lt,
                5 => BranchCond::Ge,
                6 => BranchCond::Ltu,
                7 => BranchCond::Geu,
                _ => return illegal,
            };
            Inst::Branch { cond, rs1, rs2, offset: imm_b(w) }
        }
        // JALR
        0b11001 if f3 == 0 => Inst::Jalr { rd, rs1, offset: imm_i(w) },
        // JAL
        0b11011 => Inst::Jal { rd, offset: imm_j(w) },
        // SYSTEM
        0b11100 => {
            let csr = (w >> 20) as u16;
            let op = match f3 {
                0 => {
                    return match w {
                        0x0000_0073 => Inst::Ecall,
                        0x0010_0073 => Inst::Ebreak,
                        0x1020_0073 => Inst::Sret,
                        0x3020_0073 => Inst::Mret,
                        0x1050_0073 => Inst::Wfi,
                        _ if funct7(w) == 0b000_1001 && rd == 0 => Inst::SfenceVma { rs1, rs2 },
                        _ => illegal,
                    }
                }
                1 => CsrOp::Rw,
                2 => CsrOp::Rs,
                3 => CsrOp::Rc,
                5 => CsrOp::Rwi,
                6 => CsrOp::Rsi,
                7 => CsrOp::Rci,
                _ => return illegal,
            };
            Inst::Csr { op, rd, src: rs1, csr }
        }
        _ => illegal,
    }
}

/// The AMO major opcode: LR, SC and the read-modify-write operations.
#[inline(always)]
fn decode_amo(w: u32, rd: Reg, rs1: Reg, rs2: Reg, f3: u32) -> Inst {
    let width = match f3 {
        2 => AmoWidth::W,
        3 => AmoWidth::D,
        _ => return Inst::Illegal(w),
    };
    let aq = (w >> 26) & 1 != 0;
    let rl = (w >> 25) & 1 != 0;
    let op = match w >> 27 {
        0b00010 if rs2 == 0 => return Inst::Lr { width, aq, rl, rd, rs1 },
        0b00011 => return Inst::Sc { width, aq, rl, rd, rs1, rs2 },
        0b00001 => AmoOp::Swap,
        0b00000 => AmoOp::Add,
        0b00100 => AmoOp::Xor,
        0b01100 => AmoOp::And,
        0b01000 => AmoOp::Or,
        0b10000 => AmoOp::Min,
        0b10100 => AmoOp::Max,
        0b11000 => AmoOp::Minu,
        0b11100 => AmoOp::Maxu,
        _ => return Inst::Illegal(w),
    };
    Inst::Amo { op, width, aq, rl, rd, rs1, rs2 }
}

/// The OP-FP major opcode. `funct7` holds the operation in bits 6:2 and the format in bits 1:0.
#[inline(always)]
fn decode_op_fp(w: u32, rd: Reg, rs1: Reg, rs2: Reg, f3: u32) -> Inst {
    let illegal = Inst::Illegal(w);
    let f7 = funct7(w);
    let fmt = match f7 & 3 {
        0 => FpFormat::S,
        1 => FpFormat::D,
        _ => return illegal,
    };
    let rm = f3 as u8;
    let int_type = |field: Reg| match field {
        0 => Some(IntType::W),
        1 => Some(IntType::Wu),
        2 => Some(IntType::L),
        3 => Some(IntType::Lu),
        _ => None,
    };
    match f7 >> 2 {
        0b00000..=0b00011 if rm_valid(rm) => {
            let op = match f7 >> 2 {
                0b00000 => FpArithOp::Add,
                0b00001 => FpArithOp::Sub,
                0b00010 => FpArithOp::Mul,
                _ => FpArithOp::Div,
            };
            Inst::FpArith { op, fmt, rm, rd, rs1, rs2 }
        }
        0b01011 if rs2 == 0 && rm_valid(rm) => Inst::FpSqrt { fmt, rm, rd, rs1 },
        0b00100 => {
            let kind = match f3 {
                0 => SgnjKind::Sgnj,
                1 => SgnjKind::Sgnjn,
                2 => SgnjKind::Sgnjx,
                _ => return illegal,
            };
            Inst::FpSgnj { kind, fmt, rd, rs1, rs2 }
        }
        0b00101 if f3 <= 1 => Inst::FpMinMax { max: f3 == 1, fmt, rd, rs1, rs2 },
        0b01000 if rm_valid(rm) => {
            let from = match rs2 {
                0 => FpFormat::S,
                1 => FpFormat::D,
                _ => return illegal,
            };
            if from == fmt {
                return illegal;
            }
            Inst::FpCvtFp { to: fmt, from, rm, rd, rs1 }
        }
        0b10100 => {
            let cond = match f3 {
                0 => FpCmpCond::Le,
                1 => FpCmpCond::Lt,
                2 => FpCmpCond::Eq,
                _ => return illegal,
            };
            Inst::FpCmp { cond, fmt, rd, rs1, rs2 }
        }
        0b11000 if rm_valid(rm) => match int_type(rs2) {
            Some(int) => Inst::FpCvtToInt { int, fmt, rm, rd, rs1 },
            None => illegal,
        },
        0b11010 if rm_valid(rm) => match int_type(rs2) {
            Some(int) => Inst::FpCvtFromInt { int, fmt, rm, rd, rs1 },
            None => illegal,
        },
        0b11100 if rs2 == 0 => match f3 {
            0 => Inst::FpMvToInt { fmt, rd, rs1 },
            1 => Inst::FpClass { fmt, rd, rs1 },
            _ => illegal,
        },
        0b11110 if rs2 == 0 && f3 == 0 => Inst::FpMvFromInt { fmt, rd, rs1 },
        _ => illegal,
    }
}

/// Sign-extends the low `bits` bits of `value`.
#[inline(always)]
const fn sext(value: u32, bits: u32) -> i32 {
    ((value << (32 - bits)) as i32) >> (32 - bits)
}

/// Expands a 16-bit compressed encoding to the instruction it stands for.
///
/// The expansion follows the RVC instruction listings of the unprivileged specification for RV64C, including the
/// double-precision loads and stores. HINT encodings expand to their base instruction; reserved encodings (and
/// any parcel whose low two bits are `0b11`, which is not a compressed instruction) are [`Inst::Illegal`] carrying
/// the parcel.
pub fn decode_compressed(parcel: u16) -> Inst {
    let w = parcel as u32;
    let illegal = Inst::Illegal(w);
    // Full-width register fields (CR, CI, CSS formats).
    let rd = ((w >> 7) & 31) as Reg;
    let rs2 = ((w >> 2) & 31) as Reg;
    // Three-bit register fields naming x8..x15 (CIW, CL, CS, CA, CB formats).
    let rd_p = (((w >> 2) & 7) + 8) as Reg;
    let rs1_p = (((w >> 7) & 7) + 8) as Reg;
    // The CI-format six-bit immediate: imm[5] in bit 12, imm[4:0] in bits 6:2.
    let imm6 = ((w >> 7) & 0x20) | ((w >> 2) & 0x1f);
    match (w & 3, (w >> 13) & 7) {
        // C.ADDI4SPN: nzuimm[5:4|9:6|2|3] in bits 12:5. nzuimm = 0 is reserved (this includes the all-zeros
        // parcel, which is defined to be illegal).
        (0, 0) => {
            let imm = ((w >> 7) & 0xf) << 6 | ((w >> 11) & 3) << 4 | ((w >> 5) & 1) << 3 | ((w >> 6) & 1) << 2;
            if imm == 0 {
                return illegal;
            }
            Inst::OpImm { op: OpImmKind::Addi, rd: rd_p, rs1: 2, imm: imm as i32 }
        }
        // C.FLD
        (0, 1) => Inst::FpLoad { fmt: FpFormat::D, rd: rd_p, rs1: rs1_p, offset: cl_d_offset(w) },
        // C.LW
        (0, 2) => Inst::Load { width: LoadWidth::W, rd: rd_p, rs1: rs1_p, offset: cl_w_offset(w) },
        // C.LD
        (0, 3) => Inst::Load { width: LoadWidth::D, rd: rd_p, rs1: rs1_p, offset: cl_d_offset(w) },
        // C.FSD
        (0, 5) => Inst::FpStore { fmt: FpFormat::D, rs1: rs1_p, rs2: rd_p, offset: cl_d_offset(w) },
        // C.SW
        (0, 6) => Inst::Store { width: StoreWidth::W, rs1: rs1_p, rs2: rd_p, offset: cl_w_offset(w) },
        // C.SD
        (0, 7) => Inst::Store { width: StoreWidth::D, rs1: rs1_p, rs2: rd_p, offset: cl_d_offset(w) },
        // C.NOP (rd = 0) and C.ADDI; both with their HINT forms (nonzero imm with rd = 0, zero imm with rd != 0).
        (1, 0) => Inst::OpImm { op: OpImmKind::Addi, rd, rs1: rd, imm: sext(imm6, 6) },
        // C.ADDIW; rd = 0 is reserved.
        (1, 1) if rd != 0 => Inst::OpImm { op: OpImmKind::Addiw, rd, rs1: rd, imm: sext(imm6, 6) },
        // C.LI; rd = 0 is a HINT.
        (1, 2) => Inst::OpImm { op: OpImmKind::Addi, rd, rs1: 0, imm: sext(imm6, 6) },
        // C.ADDI16SP: nzimm[9] in bit 12, nzimm[4|6|8:7|5] in bits 6:2; nzimm = 0 is reserved.
        (1, 3) if rd == 2 => {
            let imm = ((w >> 12) & 1) << 9
                | ((w >> 6) & 1) << 4
                | ((w >> 5) & 1) << 6
                | ((w >> 3) & 3) << 7
                | ((w >> 2) & 1) << 5;
            if imm == 0 {
                return illegal;
            }
            Inst::OpImm { op: OpImmKind::Addi, rd: 2, rs1: 2, imm: sext(imm, 10) }
        }
        // C.LUI: nzimm[17] in bit 12, nzimm[16:12] in bits 6:2; nzimm = 0 is reserved, rd = 0 is a HINT.
        (1, 3) => {
            if imm6 == 0 {
                return illegal;
            }
            Inst::Lui { rd, imm: sext(imm6 << 12, 18) }
        }
        (1, 4) => {
            let rd = rs1_p;
            match (w >> 10) & 3 {
                // C.SRLI, C.SRAI: shamt = 0 is a HINT in RV64C.
                0 => Inst::OpImm { op: OpImmKind::Srli, rd, rs1: rd, imm: imm6 as i32 },
                1 => Inst::OpImm { op: OpImmKind::Srai, rd, rs1: rd, imm: imm6 as i32 },
                // C.ANDI
                2 => Inst::OpImm { op: OpImmKind::Andi, rd, rs1: rd, imm: sext(imm6, 6) },
                // C.SUB, C.XOR, C.OR, C.AND, C.SUBW, C.ADDW; the two remaining code points are reserved.
                _ => {
                    let op = match ((w >> 12) & 1, (w >> 5) & 3) {
                        (0, 0) => OpKind::Sub,
                        (0, 1) => OpKind::Xor,
                        (0, 2) => OpKind::Or,
                        (0, 3) => OpKind::And,
                        (1, 0) => OpKind::Subw,
                        (1, 1) => OpKind::Addw,
                        _ => return illegal,
                    };
                    Inst::Op { op, rd, rs1: rd, rs2: rd_p }
                }
            }
        }
        // C.J: offset[11|4|9:8|10|6|7|3:1|5] in bits 12:2.
        (1, 5) => {
            let offset = ((w >> 12) & 1) << 11
                | ((w >> 11) & 1) << 4
                | ((w >> 9) & 3) << 8
                | ((w >> 8) & 1) << 10
                | ((w >> 7) & 1) << 6
                | ((w >> 6) & 1) << 7
                | ((w >> 3) & 7) << 1
                | ((w >> 2) & 1) << 5;
            Inst::Jal { rd: 0, offset: sext(offset, 12) }
        }
        // C.BEQZ, C.BNEZ: offset[8|4:3] in bits 12:10, offset[7:6|2:1|5] in bits 6:2.
        (1, 6 | 7) => {
            let offset = ((w >> 12) & 1) << 8
                | ((w >> 10) & 3) << 3
                | ((w >> 5) & 3) << 6
                | ((w >> 3) & 3) << 1
                | ((w >> 2) & 1) << 5;
            let cond = if (w >> 13) & 1 == 0 { BranchCond::Eq } else { BranchCond::Ne };
            Inst::Branch { cond, rs1: rs1_p, rs2: 0, offset: sext(offset, 9) }
        }
        // C.SLLI: rd = 0 and shamt = 0 are HINTs in RV64C.
        (2, 0) => Inst::OpImm { op: OpImmKind::Slli, rd, rs1: rd, imm: imm6 as i32 },
        // C.FLDSP (any rd: f0 is an ordinary register).
        (2, 1) => Inst::FpLoad { fmt: FpFormat::D, rd, rs1: 2, offset: ci_d_offset(w) },
        // C.LWSP; rd = 0 is reserved.
        (2, 2) if rd != 0 => {
            let offset = ((w >> 12) & 1) << 5 | ((w >> 4) & 7) << 2 | ((w >> 2) & 3) << 6;
            Inst::Load { width: LoadWidth::W, rd, rs1: 2, offset: offset as i32 }
        }
        // C.LDSP; rd = 0 is reserved.
        (2, 3) if rd != 0 => Inst::Load { width: LoadWidth::D, rd, rs1: 2, offset: ci_d_offset(w) },
        (2, 4) => match ((w >> 12) & 1, rd, rs2) {
            // C.JR; rs1 = 0 is reserved.
            (0, 0, 0) => illegal,
            (0, _, 0) => Inst::Jalr { rd: 0, rs1: rd, offset: 0 },
            // C.MV; rd = 0 is a HINT.
            (0, _, _) => Inst::Op { op: OpKind::Add, rd, rs1: 0, rs2 },
            (_, 0, 0) => Inst::Ebreak,
            // C.JALR
            (_, _, 0) => Inst::Jalr { rd: 1, rs1: rd, offset: 0 },
            // C.ADD; rd = 0 is a HINT.
            (_, _, _) => Inst::Op { op: OpKind::Add, rd, rs1: rd, rs2 },
        },
        // C.FSDSP
        (2, 5) => Inst::FpStore { fmt: FpFormat::D, rs1: 2, rs2, offset: css_d_offset(w) },
        // C.SWSP: uimm[5:2|7:6] in bits 12:7.
        (2, 6) => {
            let offset = ((w >> 9) & 0xf) << 2 | ((w >> 7) & 3) << 6;
            Inst::Store { width: StoreWidth::W, rs1: 2, rs2, offset: offset as i32 }
        }
        // C.SDSP
        (2, 7) => Inst::Store { width: StoreWidth::D, rs1: 2, rs2, offset: css_d_offset(w) },
        // Quadrant 0 funct3 = 100 is reserved; everything else that reaches here is a reserved form handled by a
        // guard above, or not a compressed encoding at all.
        _ => illegal,
    }
}

/// CL/CS doubleword offset: uimm[5:3] in bits 12:10, uimm[7:6] in bits 6:5.
#[inline(always)]
const fn cl_d_offset(w: u32) -> i32 {
    (((w >> 10) & 7) << 3 | ((w >> 5) & 3) << 6) as i32
}

/// CL/CS word offset: uimm[5:3] in bits 12:10, uimm[2] in bit 6, uimm[6] in bit 5.
#[inline(always)]
const fn cl_w_offset(w: u32) -> i32 {
    (((w >> 10) & 7) << 3 | ((w >> 6) & 1) << 2 | ((w >> 5) & 1) << 6) as i32
}

/// CI stack-relative doubleword offset: uimm[5] in bit 12, uimm[4:3|8:6] in bits 6:2.
#[inline(always)]
const fn ci_d_offset(w: u32) -> i32 {
    (((w >> 12) & 1) << 5 | ((w >> 5) & 3) << 3 | ((w >> 2) & 7) << 6) as i32
}

/// CSS stack-relative doubleword offset: uimm[5:3|8:6] in bits 12:7.
#[inline(always)]
const fn css_d_offset(w: u32) -> i32 {
    (((w >> 10) & 7) << 3 | ((w >> 7) & 7) << 6) as i32
}
