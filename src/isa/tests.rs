//! Unit tests of the ISA module: hand-checked encodings, reserved encodings, disassembly text, and property tests
//! that encoding and decoding are inverse for every instruction variant.
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};

use super::*;

use AmoOp as A;
use FpFormat::{D, S};

// ---------------------------------------------------------------------------------------------------------------
// Hand-checked 32-bit encodings (assembled by hand from the field layouts of the unprivileged and privileged
// specifications, and cross-checked against GNU as output where the word is a familiar one).

fn addi(rd: Reg, rs1: Reg, imm: i32) -> Inst {
    Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm }
}

fn op(op: OpKind, rd: Reg, rs1: Reg, rs2: Reg) -> Inst {
    Inst::Op { op, rd, rs1, rs2 }
}

const A0: Reg = 10;
const A1: Reg = 11;
const A2: Reg = 12;
const A3: Reg = 13;
const SP: Reg = 2;
const RA: Reg = 1;
const S0: Reg = 8;

#[rustfmt::skip]
fn word_table() -> Vec<(u32, Inst)> {
    vec![
        // RV64I
        (0x0000_0013, addi(0, 0, 0)),
        (0xff01_0113, addi(SP, SP, -16)),
        (0x0015_0513, addi(A0, A0, 1)),
        (0x00a5_8533, op(OpKind::Add, A0, A1, A0)),
        (0x40b5_0533, op(OpKind::Sub, A0, A0, A1)),
        (0x00b5_7533, op(OpKind::And, A0, A0, A1)),
        (0x4035_5513, Inst::OpImm { op: OpImmKind::Srai, rd: A0, rs1: A0, imm: 3 }),
        (0x03f5_1513, Inst::OpImm { op: OpImmKind::Slli, rd: A0, rs1: A0, imm: 63 }),
        (0x4205_5513, Inst::OpImm { op: OpImmKind::Srai, rd: A0, rs1: A0, imm: 32 }),
        (0x41f5_551b, Inst::OpImm { op: OpImmKind::Sraiw, rd: A0, rs1: A0, imm: 31 }),
        (0x0015_051b, Inst::OpImm { op: OpImmKind::Addiw, rd: A0, rs1: A0, imm: 1 }),
        (0x0005_051b, Inst::OpImm { op: OpImmKind::Addiw, rd: A0, rs1: A0, imm: 0 }),
        (0xfff5_4513, Inst::OpImm { op: OpImmKind::Xori, rd: A0, rs1: A0, imm: -1 }),
        (0x0015_3513, Inst::OpImm { op: OpImmKind::Sltiu, rd: A0, rs1: A0, imm: 1 }),
        (0x40b5_053b, op(OpKind::Subw, A0, A0, A1)),
        (0x1234_5537, Inst::Lui { rd: A0, imm: 0x1234_5000 }),
        (0xffff_f537, Inst::Lui { rd: A0, imm: -4096 }),
        (0x0000_0097, Inst::Auipc { rd: RA, imm: 0 }),
        (0x0000_00ef, Inst::Jal { rd: RA, offset: 0 }),
        (0xffdf_f06f, Inst::Jal { rd: 0, offset: -4 }),
        (0x0000_8067, Inst::Jalr { rd: 0, rs1: RA, offset: 0 }),
        (0x00b5_0463, Inst::Branch { cond: BranchCond::Eq, rs1: A0, rs2: A1, offset: 8 }),
        (0xfe05_1ce3, Inst::Branch { cond: BranchCond::Ne, rs1: A0, rs2: 0, offset: -8 }),
        (0x0011_3423, Inst::Store { width: StoreWidth::D, rs1: SP, rs2: RA, offset: 8 }),
        (0x0081_3083, Inst::Load { width: LoadWidth::D, rd: RA, rs1: SP, offset: 8 }),
        (0x0005_e503, Inst::Load { width: LoadWidth::Wu, rd: A0, rs1: A1, offset: 0 }),
        (0x0ff0_000f, Inst::Fence { fm: 0, pred: 0xf, succ: 0xf }),
        (0x8330_000f, Inst::Fence { fm: 8, pred: 3, succ: 3 }),
        // FENCE ignores its reserved rd and rs1 fields; FENCE.I its imm, rs1 and rd.
        (0x0ff5_850f, Inst::Fence { fm: 0, pred: 0xf, succ: 0xf }),
        (0x0000_100f, Inst::FenceI),
        (0xfff5_950f, Inst::FenceI),
        // M
        (0x02b5_0533, op(OpKind::Mul, A0, A0, A1)),
        (0x02b5_4533, op(OpKind::Div, A0, A0, A1)),
        (0x02b5_753b, op(OpKind::Remuw, A0, A0, A1)),
        // A
        (0x1005_a52f, Inst::Lr { width: AmoWidth::W, aq: false, rl: false, rd: A0, rs1: A1 }),
        (0x1605_b52f, Inst::Lr { width: AmoWidth::D, aq: true, rl: true, rd: A0, rs1: A1 }),
        (0x18c5_a52f, Inst::Sc { width: AmoWidth::W, aq: false, rl: false, rd: A0, rs1: A1, rs2: A2 }),
        (0x0cc5_a52f, Inst::Amo { op: A::Swap, width: AmoWidth::W, aq: true, rl: false, rd: A0, rs1: A1, rs2: A2 }),
        (0x00c5_b52f, Inst::Amo { op: A::Add, width: AmoWidth::D, aq: false, rl: false, rd: A0, rs1: A1, rs2: A2 }),
        (0xe2c5_b52f, Inst::Amo { op: A::Maxu, width: AmoWidth::D, aq: false, rl: true, rd: A0, rs1: A1, rs2: A2 }),
        // Zicsr and system
        (0xf140_2573, Inst::Csr { op: CsrOp::Rs, rd: A0, src: 0, csr: 0xf14 }),
        (0x3052_9073, Inst::Csr { op: CsrOp::Rw, rd: 0, src: 5, csr: 0x305 }),
        (0x3004_5073, Inst::Csr { op: CsrOp::Rwi, rd: 0, src: 8, csr: 0x300 }),
        (0x0000_0073, Inst::Ecall),
        (0x0010_0073, Inst::Ebreak),
        (0x1020_0073, Inst::Sret),
        (0x3020_0073, Inst::Mret),
        (0x1050_0073, Inst::Wfi),
        (0x1200_0073, Inst::SfenceVma { rs1: 0, rs2: 0 }),
        (0x12b5_0073, Inst::SfenceVma { rs1: A0, rs2: A1 }),
        // F and D
        (0x00b5_7553, Inst::FpArith { op: FpArithOp::Add, fmt: S, rm: 7, rd: A0, rs1: A0, rs2: A1 }),
        (0x02b5_0553, Inst::FpArith { op: FpArithOp::Add, fmt: D, rm: 0, rd: A0, rs1: A0, rs2: A1 }),
        (0x1ab5_7553, Inst::FpArith { op: FpArithOp::Div, fmt: D, rm: 7, rd: A0, rs1: A0, rs2: A1 }),
        (0x5a05_7553, Inst::FpSqrt { fmt: D, rm: 7, rd: A0, rs1: A0 }),
        (0x0081_3507, Inst::FpLoad { fmt: D, rd: A0, rs1: SP, offset: 8 }),
        (0x00a1_3427, Inst::FpStore { fmt: D, rs1: SP, rs2: A0, offset: 8 }),
        (0x00a1_2427, Inst::FpStore { fmt: S, rs1: SP, rs2: A0, offset: 8 }),
        (0x6ac5_f543, Inst::FpFma { op: FmaOp::Madd, fmt: D, rm: 7, rd: A0, rs1: A1, rs2: A2, rs3: A3 }),
        (0x68c5_f54f, Inst::FpFma { op: FmaOp::Nmadd, fmt: S, rm: 7, rd: A0, rs1: A1, rs2: A2, rs3: A3 }),
        (0x22b5_0553, Inst::FpSgnj { kind: SgnjKind::Sgnj, fmt: D, rd: A0, rs1: A0, rs2: A1 }),
        (0x28b5_1553, Inst::FpMinMax { max: true, fmt: S, rd: A0, rs1: A0, rs2: A1 }),
        (0xc205_1553, Inst::FpCvtToInt { int: IntType::W, fmt: D, rm: 1, rd: A0, rs1: A0 }),
        (0xc235_7553, Inst::FpCvtToInt { int: IntType::Lu, fmt: D, rm: 7, rd: A0, rs1: A0 }),
        (0xd225_7553, Inst::FpCvtFromInt { int: IntType::L, fmt: D, rm: 7, rd: A0, rs1: A0 }),
        (0x4205_f553, Inst::FpCvtFp { to: D, from: S, rm: 7, rd: A0, rs1: A1 }),
        (0x4015_f553, Inst::FpCvtFp { to: S, from: D, rm: 7, rd: A0, rs1: A1 }),
        (0xe205_0553, Inst::FpMvToInt { fmt: D, rd: A0, rs1: A0 }),
        (0xf205_0553, Inst::FpMvFromInt { fmt: D, rd: A0, rs1: A0 }),
        (0xe005_1553, Inst::FpClass { fmt: S, rd: A0, rs1: A0 }),
        (0xa2b5_2553, Inst::FpCmp { cond: FpCmpCond::Eq, fmt: D, rd: A0, rs1: A0, rs2: A1 }),
        (0xa0b5_0553, Inst::FpCmp { cond: FpCmpCond::Le, fmt: S, rd: A0, rs1: A0, rs2: A1 }),
    ]
}

#[test]
fn known_words_decode() {
    for (word, inst) in word_table() {
        assert_eq!(decode_word(word), inst, "decoding {word:#010x}");
        assert_eq!(decode(word), Decoded { inst, len: 4 }, "decoding {word:#010x}");
    }
}

#[test]
fn known_words_encode_canonically() {
    for (word, inst) in word_table() {
        let canonical = encode(&inst);
        assert_eq!(decode_word(canonical), inst, "{inst:?}");
        // Only FENCE and FENCE.I have ignored fields; every other table entry is already canonical.
        if !matches!(inst, Inst::Fence { .. } | Inst::FenceI) {
            assert_eq!(canonical, word, "{inst:?}");
        }
    }
    assert_eq!(encode(&Inst::FenceI), 0x0000_100f);
    assert_eq!(encode(&Inst::Fence { fm: 0, pred: 0xf, succ: 0xf }), 0x0ff0_000f);
}

#[test]
fn reserved_words_are_illegal() {
    let words = [
        0x0000_0000, // all zeros
        0xffff_ffff, // all ones
        0x0205_151b, // slliw with shamt[5] set
        0x0405_1513, // slli with a reserved bit 26
        0x8005_5513, // srli with a reserved funct6
        0x40b5_153b, // OP-32 funct7 = 0100000 with funct3 = 1
        0x1015_a52f, // lr.w with rs2 != 0
        0x0005_c52f, // amoadd with funct3 = 4 (amo*.q)
        0x3805_a52f, // AMO funct5 = 00111 (not assigned)
        0x00b5_5553, // fadd.s rm = 5
        0x00b5_6553, // fadd.s rm = 6
        0x6ac5_d543, // fmadd.d rm = 5
        0x20b5_3553, // fsgnj.s funct3 = 3
        0x28b5_2553, // fmin.s funct3 = 2
        0xa0b5_3553, // feq.s funct3 = 3
        0x6cc5_f543, // fmadd.h (fmt = 2)
        0x04b5_7553, // fadd.h (fmt = 2)
        0x06b5_7553, // fadd.q (fmt = 3)
        0x4005_0553, // fcvt.s.s
        0x4025_0553, // fcvt.s.h
        0x5815_7553, // fsqrt.s with rs2 != 0
        0xc045_7553, // fcvt with rs2 = 4
        0xe005_2553, // fmv.x.w/fclass.s with funct3 = 2
        0xe015_0553, // fmv.x.w with rs2 != 0
        0xf005_1553, // fmv.w.x with funct3 = 1
        0x0000_4507, // flq
        0x0000_1507, // flh
        0x0005_f503, // ldu (RV128)
        0x0005_c523, // sq (RV128)
        0x0000_9067, // jalr with funct3 = 1
        0x00b5_2463, // branch funct3 = 2
        0x0000_00f3, // ecall with rd != 0
        0x0010_8073, // ebreak with rs1 != 0
        0x0000_4073, // SYSTEM funct3 = 4 (hypervisor loads)
        0x6200_0073, // hfence.gvma
        0x1620_0073, // sinval.vma
        0x7b20_0073, // dret
        0x1200_0173, // sfence.vma with rd != 0
        0x0000_200f, // MISC-MEM funct3 = 2 (cbo.*)
        0x0005_7557, // OP-V
        0x0000_000b, // custom-0
        0x0000_001f, // 48-bit encoding
        0x0000_003f, // 64-bit encoding
        0x0000_0001, // a compressed parcel is not a 32-bit encoding
        0x0ab5_1533, // clmul (Zbc)
        0x20b5_2533, // sh1add (Zba)
        0x0eb5_d533, // czero.eqz (Zicond)
    ];
    for word in words {
        assert_eq!(decode_word(word), Inst::Illegal(word), "{word:#010x}");
        assert_eq!(encode(&decode_word(word)), word);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Compressed parcels.

#[rustfmt::skip]
fn parcel_table() -> Vec<(u16, Inst)> {
    let lw = |rd, rs1, offset| Inst::Load { width: LoadWidth::W, rd, rs1, offset };
    let ld = |rd, rs1, offset| Inst::Load { width: LoadWidth::D, rd, rs1, offset };
    let sw = |rs2, rs1, offset| Inst::Store { width: StoreWidth::W, rs1, rs2, offset };
    let sd = |rs2, rs1, offset| Inst::Store { width: StoreWidth::D, rs1, rs2, offset };
    let shift = |op, rd, imm| Inst::OpImm { op, rd, rs1: rd, imm };
    vec![
        (0x0808, addi(A0, SP, 16)),                                           // c.addi4spn a0, sp, 16
        (0x1ff8, addi(14, SP, 1020)),                                         // c.addi4spn a4, sp, 1020
        (0x2008, Inst::FpLoad { fmt: D, rd: A0, rs1: S0, offset: 0 }),        // c.fld fa0, 0(s0)
        (0x4108, lw(A0, A0, 0)),                                              // c.lw a0, 0(a0)
        (0x5ffc, lw(15, 15, 124)),                                            // c.lw a5, 124(a5)
        (0x6108, ld(A0, A0, 0)),                                              // c.ld a0, 0(a0)
        (0x7ffc, ld(15, 15, 248)),                                            // c.ld a5, 248(a5)
        (0xa008, Inst::FpStore { fmt: D, rs1: S0, rs2: A0, offset: 0 }),      // c.fsd fa0, 0(s0)
        (0xc10c, sw(A1, A0, 0)),                                              // c.sw a1, 0(a0)
        (0xe10c, sd(A1, A0, 0)),                                              // c.sd a1, 0(a0)
        (0x0001, addi(0, 0, 0)),                                              // c.nop
        (0x0505, addi(A0, A0, 1)),                                            // c.addi a0, 1
        (0x1141, addi(SP, SP, -16)),                                          // c.addi sp, -16
        (0x2505, Inst::OpImm { op: OpImmKind::Addiw, rd: A0, rs1: A0, imm: 1 }), // c.addiw a0, 1
        (0x4505, addi(A0, 0, 1)),                                             // c.li a0, 1
        (0x557d, addi(A0, 0, -1)),                                            // c.li a0, -1
        (0x6505, Inst::Lui { rd: A0, imm: 0x1000 }),                          // c.lui a0, 1
        (0x757d, Inst::Lui { rd: A0, imm: -4096 }),                           // c.lui a0, 0xfffff
        (0x7101, addi(SP, SP, -512)),                                         // c.addi16sp sp, -512
        (0x6141, addi(SP, SP, 16)),                                           // c.addi16sp sp, 16
        (0x8105, shift(OpImmKind::Srli, A0, 1)),                              // c.srli a0, 1
        (0x9101, shift(OpImmKind::Srli, A0, 32)),                             // c.srli a0, 32
        (0x9505, shift(OpImmKind::Srai, A0, 33)),                             // c.srai a0, 33
        (0x8505, shift(OpImmKind::Srai, A0, 1)),                              // c.srai a0, 1
        (0x997d, Inst::OpImm { op: OpImmKind::Andi, rd: A0, rs1: A0, imm: -1 }), // c.andi a0, -1
        (0x8d0d, op(OpKind::Sub, A0, A0, A1)),                                // c.sub a0, a1
        (0x8d2d, op(OpKind::Xor, A0, A0, A1)),                                // c.xor a0, a1
        (0x8d4d, op(OpKind::Or, A0, A0, A1)),                                 // c.or a0, a1
        (0x8d6d, op(OpKind::And, A0, A0, A1)),                                // c.and a0, a1
        (0x9d0d, op(OpKind::Subw, A0, A0, A1)),                               // c.subw a0, a1
        (0x9d2d, op(OpKind::Addw, A0, A0, A1)),                               // c.addw a0, a1
        (0xa001, Inst::Jal { rd: 0, offset: 0 }),                             // c.j 0
        (0xbffd, Inst::Jal { rd: 0, offset: -2 }),                            // c.j -2
        (0xc101, Inst::Branch { cond: BranchCond::Eq, rs1: A0, rs2: 0, offset: 0 }),  // c.beqz a0, 0
        (0xfd7d, Inst::Branch { cond: BranchCond::Ne, rs1: A0, rs2: 0, offset: -2 }), // c.bnez a0, -2
        (0x050e, shift(OpImmKind::Slli, A0, 3)),                              // c.slli a0, 3
        (0x2522, Inst::FpLoad { fmt: D, rd: A0, rs1: SP, offset: 8 }),        // c.fldsp fa0, 8(sp)
        (0x4512, lw(A0, SP, 4)),                                              // c.lwsp a0, 4(sp)
        (0x60a2, ld(RA, SP, 8)),                                              // c.ldsp ra, 8(sp)
        (0x8082, Inst::Jalr { rd: 0, rs1: RA, offset: 0 }),                   // c.jr ra (ret)
        (0x8522, op(OpKind::Add, A0, 0, S0)),                                 // c.mv a0, s0
        (0x9002, Inst::Ebreak),                                               // c.ebreak
        (0x9502, Inst::Jalr { rd: RA, rs1: A0, offset: 0 }),                  // c.jalr a0
        (0x952e, op(OpKind::Add, A0, A0, A1)),                                // c.add a0, a1
        (0xa422, Inst::FpStore { fmt: D, rs1: SP, rs2: S0, offset: 8 }),      // c.fsdsp fs0, 8(sp)
        (0xc22a, sw(A0, SP, 4)),                                              // c.swsp a0, 4(sp)
        (0xe406, sd(RA, SP, 8)),                                              // c.sdsp ra, 8(sp)
        // HINTs expand to their base instruction.
        (0x0005, addi(0, 0, 1)),                                              // c.nop 1
        (0x0501, addi(A0, A0, 0)),                                            // c.addi a0, 0
        (0x4001, addi(0, 0, 0)),                                              // c.li zero, 0
        (0x6005, Inst::Lui { rd: 0, imm: 0x1000 }),                           // c.lui zero, 1
        (0x802a, op(OpKind::Add, 0, 0, A0)),                                  // c.mv zero, a0
        (0x902a, op(OpKind::Add, 0, 0, A0)),                                  // c.add zero, a0
        (0x0006, shift(OpImmKind::Slli, 0, 1)),                               // c.slli zero, 1
        (0x0502, shift(OpImmKind::Slli, A0, 0)),                              // c.slli a0, 0
        (0x8101, shift(OpImmKind::Srli, A0, 0)),                              // c.srli a0, 0
    ]
}

#[test]
fn known_parcels_decode() {
    for (parcel, inst) in parcel_table() {
        assert_eq!(decode_compressed(parcel), inst, "decoding {parcel:#06x}");
        assert_eq!(decode(parcel as u32), Decoded { inst, len: 2 }, "decoding {parcel:#06x}");
        // The upper half of the word does not matter for a compressed instruction.
        assert_eq!(decode(0xdead_0000 | parcel as u32), Decoded { inst, len: 2 });
    }
}

#[test]
fn reserved_parcels_are_illegal() {
    let parcels: [u16; 14] = [
        0x0000, // the all-zeros parcel (c.addi4spn with nzuimm = 0)
        0x0004, // c.addi4spn a1, sp, 0
        0x8000, // quadrant 0, funct3 = 100 (Zcb in newer specifications)
        0x2001, // c.addiw with rd = 0
        0x6501, // c.lui a0, 0
        0x6001, // c.lui zero, 0
        0x6101, // c.addi16sp with nzimm = 0
        0x9d4d, // quadrant 1 funct3 = 100 reserved (c.mul with Zcb)
        0x9d6d, // quadrant 1 funct3 = 100 reserved (Zcb unary ops)
        0x4002, // c.lwsp with rd = 0
        0x6002, // c.ldsp with rd = 0
        0x8002, // c.jr with rs1 = 0
        0x0003, // not a compressed encoding
        0xffff, // not a compressed encoding
    ];
    for parcel in parcels {
        assert_eq!(decode_compressed(parcel), Inst::Illegal(parcel as u32), "{parcel:#06x}");
    }
    assert_eq!(decode(0x1234_0000), Decoded { inst: Inst::Illegal(0), len: 2 });
}

// ---------------------------------------------------------------------------------------------------------------
// Disassembly.

#[test]
fn display() {
    let cases: [(u32, &str); 28] = [
        (0xff01_0113, "addi sp, sp, -16"),
        (0x0005_2503, "lw a0, 0(a0)"),
        (0x0081_3083, "ld ra, 8(sp)"),
        (0x0011_3423, "sd ra, 8(sp)"),
        (0x00b5_0463, "beq a0, a1, pc + 8"),
        (0xfe05_1ce3, "bne a0, zero, pc - 8"),
        (0xffdf_f06f, "jal zero, pc - 4"),
        (0x0000_8067, "jalr zero, 0(ra)"),
        (0x1234_5537, "lui a0, 0x12345"),
        (0x3005_9573, "csrrw a0, 0x300, a1"),
        (0x3004_5073, "csrrwi zero, 0x300, 8"),
        (0x02b5_0553, "fadd.d fa0, fa0, fa1, rne"),
        (0x00b5_7553, "fadd.s fa0, fa0, fa1"),
        (0x6ac5_f543, "fmadd.d fa0, fa1, fa2, fa3"),
        (0xc205_1553, "fcvt.w.d a0, fa0, rtz"),
        (0xd225_7553, "fcvt.d.l fa0, a0"),
        (0x4015_f553, "fcvt.s.d fa0, fa1"),
        (0xe205_0553, "fmv.x.d a0, fa0"),
        (0xa2b5_2553, "feq.d a0, fa0, fa1"),
        (0x0081_3507, "fld fa0, 8(sp)"),
        (0x1605_b52f, "lr.d.aqrl a0, (a1)"),
        (0x18c5_a52f, "sc.w a0, a2, (a1)"),
        (0x0cc5_a52f, "amoswap.w.aq a0, a2, (a1)"),
        (0x0ff0_000f, "fence iorw, iorw"),
        (0x8330_000f, "fence.tso"),
        (0x1200_0073, "sfence.vma zero, zero"),
        (0x3020_0073, "mret"),
        (0xffff_ffff, "illegal 0xffffffff"),
    ];
    for (word, text) in cases {
        assert_eq!(decode_word(word).to_string(), text, "{word:#010x}");
    }
    assert_eq!(decode_compressed(0x0000).to_string(), "illegal 0x0000");
    assert_eq!(decode_compressed(0x4505).to_string(), "addi a0, zero, 1");
}

// ---------------------------------------------------------------------------------------------------------------
// Property tests: strategies that generate every valid instruction, variant by variant.

fn reg() -> impl Strategy<Value = Reg> {
    0u8..32
}

/// A rounding mode that an instruction may carry (5 and 6 are reserved).
fn rm() -> impl Strategy<Value = u8> {
    prop_oneof![0u8..5, Just(7u8)]
}

fn imm12() -> impl Strategy<Value = i32> {
    -2048i32..2048
}

fn fmt() -> impl Strategy<Value = FpFormat> {
    select(&[S, D][..])
}

fn amo_width() -> impl Strategy<Value = AmoWidth> {
    select(&[AmoWidth::W, AmoWidth::D][..])
}

fn int_type() -> impl Strategy<Value = IntType> {
    select(&[IntType::W, IntType::Wu, IntType::L, IntType::Lu][..])
}

/// Every valid [`Inst`] except `Illegal`, with every variant equally likely.
fn arb_inst() -> BoxedStrategy<Inst> {
    use OpImmKind::*;
    let ordinary_imm = select(&[Addi, Slti, Sltiu, Xori, Ori, Andi, Addiw][..]);
    let shift64 = select(&[Slli, Srli, Srai][..]);
    let shift32 = select(&[Slliw, Srliw, Sraiw][..]);
    let op_kinds = &OpKind::ALL[..];
    let branch = &BranchCond::ALL[..];
    let loads = &LoadWidth::ALL[..];
    let stores = &[StoreWidth::B, StoreWidth::H, StoreWidth::W, StoreWidth::D][..];
    let csr_ops = &[CsrOp::Rw, CsrOp::Rs, CsrOp::Rc, CsrOp::Rwi, CsrOp::Rsi, CsrOp::Rci][..];
    let amo_ops = &[A::Swap, A::Add, A::Xor, A::And, A::Or, A::Min, A::Max, A::Minu, A::Maxu][..];
    let fma_ops = &[FmaOp::Madd, FmaOp::Msub, FmaOp::Nmsub, FmaOp::Nmadd][..];
    let arith_ops = &[FpArithOp::Add, FpArithOp::Sub, FpArithOp::Mul, FpArithOp::Div][..];
    let sgnj = &[SgnjKind::Sgnj, SgnjKind::Sgnjn, SgnjKind::Sgnjx][..];
    let cmp = &[FpCmpCond::Eq, FpCmpCond::Lt, FpCmpCond::Le][..];
    Union::new(vec![
        (reg(), any::<i32>()).prop_map(|(rd, v)| Inst::Lui { rd, imm: v & !0xfff }).boxed(),
        (reg(), any::<i32>()).prop_map(|(rd, v)| Inst::Auipc { rd, imm: v & !0xfff }).boxed(),
        (reg(), -(1i32 << 19)..(1 << 19)).prop_map(|(rd, h)| Inst::Jal { rd, offset: h * 2 }).boxed(),
        (reg(), reg(), imm12()).prop_map(|(rd, rs1, offset)| Inst::Jalr { rd, rs1, offset }).boxed(),
        (select(branch), reg(), reg(), -2048i32..2048)
            .prop_map(|(cond, rs1, rs2, h)| Inst::Branch { cond, rs1, rs2, offset: h * 2 })
            .boxed(),
        (select(loads), reg(), reg(), imm12())
            .prop_map(|(width, rd, rs1, offset)| Inst::Load { width, rd, rs1, offset })
            .boxed(),
        (select(stores), reg(), reg(), imm12())
            .prop_map(|(width, rs1, rs2, offset)| Inst::Store { width, rs1, rs2, offset })
            .boxed(),
        (ordinary_imm, reg(), reg(), imm12()).prop_map(|(op, rd, rs1, imm)| Inst::OpImm { op, rd, rs1, imm }).boxed(),
        (shift64, reg(), reg(), 0i32..64).prop_map(|(op, rd, rs1, imm)| Inst::OpImm { op, rd, rs1, imm }).boxed(),
        (shift32, reg(), reg(), 0i32..32).prop_map(|(op, rd, rs1, imm)| Inst::OpImm { op, rd, rs1, imm }).boxed(),
        (select(op_kinds), reg(), reg(), reg()).prop_map(|(op, rd, rs1, rs2)| Inst::Op { op, rd, rs1, rs2 }).boxed(),
        (0u8..16, 0u8..16, 0u8..16).prop_map(|(fm, pred, succ)| Inst::Fence { fm, pred, succ }).boxed(),
        Just(Inst::FenceI).boxed(),
        Just(Inst::Ecall).boxed(),
        Just(Inst::Ebreak).boxed(),
        Just(Inst::Sret).boxed(),
        Just(Inst::Mret).boxed(),
        Just(Inst::Wfi).boxed(),
        (reg(), reg()).prop_map(|(rs1, rs2)| Inst::SfenceVma { rs1, rs2 }).boxed(),
        (select(csr_ops), reg(), 0u8..32, 0u16..4096)
            .prop_map(|(op, rd, src, csr)| Inst::Csr { op, rd, src, csr })
            .boxed(),
        (amo_width(), any::<bool>(), any::<bool>(), reg(), reg())
            .prop_map(|(width, aq, rl, rd, rs1)| Inst::Lr { width, aq, rl, rd, rs1 })
            .boxed(),
        (amo_width(), any::<bool>(), any::<bool>(), reg(), reg(), reg())
            .prop_map(|(width, aq, rl, rd, rs1, rs2)| Inst::Sc { width, aq, rl, rd, rs1, rs2 })
            .boxed(),
        (select(amo_ops), amo_width(), any::<bool>(), any::<bool>(), reg(), reg(), reg())
            .prop_map(|(op, width, aq, rl, rd, rs1, rs2)| Inst::Amo { op, width, aq, rl, rd, rs1, rs2 })
            .boxed(),
        (fmt(), reg(), reg(), imm12()).prop_map(|(fmt, rd, rs1, offset)| Inst::FpLoad { fmt, rd, rs1, offset }).boxed(),
        (fmt(), reg(), reg(), imm12())
            .prop_map(|(fmt, rs1, rs2, offset)| Inst::FpStore { fmt, rs1, rs2, offset })
            .boxed(),
        (select(fma_ops), fmt(), rm(), reg(), reg(), reg(), reg())
            .prop_map(|(op, fmt, rm, rd, rs1, rs2, rs3)| Inst::FpFma { op, fmt, rm, rd, rs1, rs2, rs3 })
            .boxed(),
        (select(arith_ops), fmt(), rm(), reg(), reg(), reg())
            .prop_map(|(op, fmt, rm, rd, rs1, rs2)| Inst::FpArith { op, fmt, rm, rd, rs1, rs2 })
            .boxed(),
        (fmt(), rm(), reg(), reg()).prop_map(|(fmt, rm, rd, rs1)| Inst::FpSqrt { fmt, rm, rd, rs1 }).boxed(),
        (select(sgnj), fmt(), reg(), reg(), reg())
            .prop_map(|(kind, fmt, rd, rs1, rs2)| Inst::FpSgnj { kind, fmt, rd, rs1, rs2 })
            .boxed(),
        (any::<bool>(), fmt(), reg(), reg(), reg())
            .prop_map(|(max, fmt, rd, rs1, rs2)| Inst::FpMinMax { max, fmt, rd, rs1, rs2 })
            .boxed(),
        (fmt(), rm(), reg(), reg())
            .prop_map(|(to, rm, rd, rs1)| {
                let from = if to == S { D } else { S };
                Inst::FpCvtFp { to, from, rm, rd, rs1 }
            })
            .boxed(),
        (int_type(), fmt(), rm(), reg(), reg())
            .prop_map(|(int, fmt, rm, rd, rs1)| Inst::FpCvtToInt { int, fmt, rm, rd, rs1 })
            .boxed(),
        (int_type(), fmt(), rm(), reg(), reg())
            .prop_map(|(int, fmt, rm, rd, rs1)| Inst::FpCvtFromInt { int, fmt, rm, rd, rs1 })
            .boxed(),
        (fmt(), reg(), reg()).prop_map(|(fmt, rd, rs1)| Inst::FpMvToInt { fmt, rd, rs1 }).boxed(),
        (fmt(), reg(), reg()).prop_map(|(fmt, rd, rs1)| Inst::FpMvFromInt { fmt, rd, rs1 }).boxed(),
        (select(cmp), fmt(), reg(), reg(), reg())
            .prop_map(|(cond, fmt, rd, rs1, rs2)| Inst::FpCmp { cond, fmt, rd, rs1, rs2 })
            .boxed(),
        (fmt(), reg(), reg()).prop_map(|(fmt, rd, rs1)| Inst::FpClass { fmt, rd, rs1 }).boxed(),
    ])
    .boxed()
}

/// The number of variants of [`Inst`] other than `Illegal`; `arb_inst` must have one arm for each, and
/// `variant_index` numbers them.
const VARIANTS: usize = 35;

/// A distinct index for each variant, so that a test can check that `arb_inst` reaches all of them.
fn variant_index(inst: &Inst) -> usize {
    match inst {
        Inst::Illegal(_) => VARIANTS,
        Inst::Lui { .. } => 0,
        Inst::Auipc { .. } => 1,
        Inst::Jal { .. } => 2,
        Inst::Jalr { .. } => 3,
        Inst::Branch { .. } => 4,
        Inst::Load { .. } => 5,
        Inst::Store { .. } => 6,
        Inst::OpImm { .. } => 7,
        Inst::Op { .. } => 8,
        Inst::Fence { .. } => 9,
        Inst::FenceI => 10,
        Inst::Ecall => 11,
        Inst::Ebreak => 12,
        Inst::Sret => 13,
        Inst::Mret => 14,
        Inst::Wfi => 15,
        Inst::SfenceVma { .. } => 16,
        Inst::Csr { .. } => 17,
        Inst::Lr { .. } => 18,
        Inst::Sc { .. } => 19,
        Inst::Amo { .. } => 20,
        Inst::FpLoad { .. } => 21,
        Inst::FpStore { .. } => 22,
        Inst::FpFma { .. } => 23,
        Inst::FpArith { .. } => 24,
        Inst::FpSqrt { .. } => 25,
        Inst::FpSgnj { .. } => 26,
        Inst::FpMinMax { .. } => 27,
        Inst::FpCvtFp { .. } => 28,
        Inst::FpCvtToInt { .. } => 29,
        Inst::FpCvtFromInt { .. } => 30,
        Inst::FpMvToInt { .. } => 31,
        Inst::FpMvFromInt { .. } => 32,
        Inst::FpCmp { .. } => 33,
        Inst::FpClass { .. } => 34,
    }
}

#[test]
fn arb_inst_covers_every_variant() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut seen = [false; VARIANTS];
    let mut runner = TestRunner::deterministic();
    let strategy = arb_inst();
    for _ in 0..20_000 {
        let inst = strategy.new_tree(&mut runner).expect("strategy never rejects").current();
        let index = variant_index(&inst);
        assert!(index < VARIANTS, "arb_inst generated {inst:?}");
        seen[index] = true;
    }
    assert!(seen.iter().all(|&s| s), "variants never generated: {seen:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Every valid instruction survives encoding and decoding unchanged, and its canonical encoding is a
    /// 32-bit one.
    #[test]
    fn encode_then_decode_is_identity(inst in arb_inst()) {
        let word = encode(&inst);
        prop_assert_eq!(word & 3, 3);
        prop_assert_eq!(decode_word(word), inst);
        prop_assert_eq!(decode(word), Decoded { inst, len: 4 });
        // Disassembly never fails and never shows a reserved rounding mode.
        let text = inst.to_string();
        prop_assert!(!text.is_empty() && !text.contains("reserved"), "{}", text);
    }

    /// Decoding any word and re-encoding the result is a fixed point.
    #[test]
    fn decode_encode_decode_is_stable(word in any::<u32>()) {
        let inst = decode_word(word);
        prop_assert_eq!(decode_word(encode(&inst)), inst);
        if let Inst::Illegal(w) = inst {
            prop_assert_eq!(w, word);
        }
    }

    /// Same, concentrated on 32-bit encodings in the major opcodes RV64GC uses.
    #[test]
    fn decode_encode_decode_is_stable_in_rv64gc_opcodes(
        opcode in select(&[0x03u32, 0x07, 0x0f, 0x13, 0x17, 0x1b, 0x23, 0x27, 0x2f, 0x33, 0x37, 0x3b, 0x43, 0x47,
                           0x4b, 0x4f, 0x53, 0x63, 0x67, 0x6f, 0x73][..]),
        rest in any::<u32>(),
    ) {
        let word = (rest & !0x7f) | opcode;
        let inst = decode_word(word);
        prop_assert_eq!(decode_word(encode(&inst)), inst);
        let _ = format!("{inst}");
    }

    /// `decode` never panics, and splits words into 2- and 4-byte instructions by their low bits.
    #[test]
    fn decode_never_panics(word in any::<u32>()) {
        let decoded = decode(word);
        prop_assert_eq!(decoded.len, if word & 3 == 3 { 4 } else { 2 });
        let _ = format!("{}", decoded.inst);
    }
}

/// Every compressed parcel expands to an instruction whose canonical encoding decodes back to it.
#[test]
fn every_parcel_expands_to_an_encodable_instruction() {
    for parcel in 0..=u16::MAX {
        let inst = decode_compressed(parcel);
        match inst {
            Inst::Illegal(w) => assert_eq!(w, parcel as u32),
            _ => {
                assert_ne!(parcel & 3, 3);
                assert_eq!(decode_word(encode(&inst)), inst, "{parcel:#06x}");
            }
        }
    }
}

#[test]
fn only_fences_that_order_stores_before_loads_need_a_host_fence() {
    use super::fence_orders_stores_before_loads as needs;
    const RW: u8 = 0b0011;
    assert!(needs(0, RW, RW), "fence rw,rw");
    assert!(needs(0, 0b0001, 0b0010), "fence w,r");
    assert!(needs(0, 0b1111, 0b1111), "fence iorw,iorw");
    assert!(!needs(0b1000, RW, RW), "fence.tso leaves store -> load unordered");
    assert!(!needs(0, 0b0010, RW), "fence r,rw");
    assert!(!needs(0, RW, 0b0001), "fence rw,w");
    assert!(!needs(0, 0b0001, 0), "pause");
}
