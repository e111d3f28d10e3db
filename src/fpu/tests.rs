//! Hand-written cases from the RISC-V F/D chapters, run through [`execute`]: the conversion saturation table,
//! FMIN/FMAX with signed zeros and NaNs, comparisons, FCLASS of every class, NaN boxing, canonical NaNs,
//! tininess after rounding, signed zero results, reserved rounding modes and the `fcsr` views.

use super::*;
use crate::isa::rounding::{DYN, RDN, RMM, RNE, RTZ, RUP};

const NV: u8 = flags::NV;
const DZ: u8 = flags::DZ;
const OF: u8 = flags::OF;
const UF: u8 = flags::UF;
const NX: u8 = flags::NX;

const S: FpFormat = FpFormat::S;
const D: FpFormat = FpFormat::D;

const QNAN_S: u32 = 0x7fc1_2345;
const SNAN_S: u32 = 0x7f80_0001;
const QNAN_D: u64 = 0x7ff8_0000_0000_1234;
const SNAN_D: u64 = 0x7ff0_0000_0000_0001;

fn s(v: f32) -> u64 {
    nan_box(v.to_bits())
}

fn d(v: f64) -> u64 {
    v.to_bits()
}

/// A machine with f1..f3 loaded; runs one instruction and returns (f[10] or x[10], fflags).
struct Machine {
    fp: FpState,
    x: [u64; 32],
}

impl Machine {
    fn new(f1: u64, f2: u64, f3: u64) -> Self {
        let mut fp = FpState::new();
        fp.f[1] = f1;
        fp.f[2] = f2;
        fp.f[3] = f3;
        Machine { fp, x: [0; 32] }
    }

    fn run(&mut self, inst: Inst) -> Result<bool, FpError> {
        execute(&inst, &mut self.fp, &mut self.x)
    }
}

/// Runs a two-operand instruction `make(rd = 10, rs1 = 1, rs2 = 2)` and returns (f10, fflags).
fn f_op(f1: u64, f2: u64, inst: Inst) -> (u64, u8) {
    let mut m = Machine::new(f1, f2, 0);
    assert_eq!(m.run(inst), Ok(true));
    (m.fp.f[10], m.fp.fflags)
}

fn arith(op: FpArithOp, fmt: FpFormat, rm: u8, a: u64, b: u64) -> (u64, u8) {
    f_op(a, b, Inst::FpArith { op, fmt, rm, rd: 10, rs1: 1, rs2: 2 })
}

fn min_max(max: bool, fmt: FpFormat, a: u64, b: u64) -> (u64, u8) {
    f_op(a, b, Inst::FpMinMax { max, fmt, rd: 10, rs1: 1, rs2: 2 })
}

fn cmp(cond: FpCmpCond, fmt: FpFormat, a: u64, b: u64) -> (u64, u8) {
    let mut m = Machine::new(a, b, 0);
    m.run(Inst::FpCmp { cond, fmt, rd: 10, rs1: 1, rs2: 2 }).unwrap();
    (m.x[10], m.fp.fflags)
}

fn to_int(int: IntType, fmt: FpFormat, rm: u8, a: u64) -> (u64, u8) {
    let mut m = Machine::new(a, 0, 0);
    assert_eq!(m.run(Inst::FpCvtToInt { int, fmt, rm, rd: 10, rs1: 1 }), Ok(m.fp.fflags != 0 || a == u64::MAX));
    (m.x[10], m.fp.fflags)
}

fn from_int(int: IntType, fmt: FpFormat, rm: u8, v: u64) -> (u64, u8) {
    let mut m = Machine::new(0, 0, 0);
    m.x[5] = v;
    assert_eq!(m.run(Inst::FpCvtFromInt { int, fmt, rm, rd: 10, rs1: 5 }), Ok(true));
    (m.fp.f[10], m.fp.fflags)
}

fn class(fmt: FpFormat, a: u64) -> u64 {
    let mut m = Machine::new(a, 0, 0);
    assert_eq!(m.run(Inst::FpClass { fmt, rd: 10, rs1: 1 }), Ok(false));
    m.x[10]
}

#[test]
fn fcsr_views() {
    let mut fp = FpState::new();
    fp.set_fcsr(0xffff_ffff);
    assert_eq!((fp.fcsr(), fp.fflags(), fp.frm()), (0xff, 0x1f, 7));
    fp.set_fflags(0x3);
    assert_eq!(fp.fcsr(), 0xe3);
    fp.set_frm(0x9);
    assert_eq!(fp.fcsr(), 0x23);
    assert_eq!(fp.frm(), 1);
}

#[test]
fn reserved_rounding_modes_are_illegal_and_change_nothing() {
    for (rm, frm) in [(5, 0), (6, 0), (DYN, 5), (DYN, 6), (DYN, 7)] {
        let mut m = Machine::new(s(1.0), s(3.0), 0);
        m.fp.frm = frm;
        let before = m.fp;
        let inst = Inst::FpArith { op: FpArithOp::Div, fmt: S, rm, rd: 10, rs1: 1, rs2: 2 };
        assert_eq!(m.run(inst), Err(FpError::IllegalInstruction));
        // Also for instructions whose result cannot depend on the mode.
        assert_eq!(m.run(Inst::FpCvtFp { to: D, from: S, rm, rd: 10, rs1: 1 }), Err(FpError::IllegalInstruction));
        assert_eq!(
            m.run(Inst::FpCvtFromInt { int: IntType::W, fmt: D, rm, rd: 10, rs1: 0 }),
            Err(FpError::IllegalInstruction)
        );
        assert_eq!(m.fp, before);
    }
    // Instructions without a rounding mode ignore a reserved frm.
    let mut m = Machine::new(s(1.0), s(3.0), 0);
    m.fp.frm = 7;
    assert_eq!(m.run(Inst::FpMinMax { max: true, fmt: S, rd: 10, rs1: 1, rs2: 2 }), Ok(true));
    assert_eq!(m.run(Inst::FpLoad { fmt: S, rd: 1, rs1: 2, offset: 0 }), Err(FpError::NotHandled));
}

#[test]
fn dynamic_rounding_uses_frm() {
    let nearest = (1.0f32 / 3.0).to_bits(); // 0x3eaaaaab: 1/3 = 0x1.555555...p-2 rounds up
    assert_eq!(nearest, 0x3eaa_aaab);
    for (frm, expected) in [(RNE, nearest), (RUP, nearest), (RTZ, nearest - 1), (RDN, nearest - 1)] {
        let mut m = Machine::new(s(1.0), s(3.0), 0);
        m.fp.frm = frm;
        m.run(Inst::FpArith { op: FpArithOp::Div, fmt: S, rm: DYN, rd: 10, rs1: 1, rs2: 2 }).unwrap();
        assert_eq!(m.fp.f[10], nan_box(expected));
        assert_eq!(m.fp.fflags, NX);
    }
}

#[test]
fn canonical_nan_results_without_payload_propagation() {
    assert_eq!(arith(FpArithOp::Add, S, RNE, nan_box(QNAN_S), s(1.0)), (nan_box(CANONICAL_NAN_S), 0));
    assert_eq!(arith(FpArithOp::Add, S, RNE, s(1.0), nan_box(SNAN_S)), (nan_box(CANONICAL_NAN_S), NV));
    assert_eq!(arith(FpArithOp::Mul, D, RNE, QNAN_D | 1 << 63, d(2.0)), (CANONICAL_NAN_D, 0));
    assert_eq!(arith(FpArithOp::Sub, D, RNE, SNAN_D, d(2.0)), (CANONICAL_NAN_D, NV));
    assert_eq!(arith(FpArithOp::Sub, D, RNE, d(f64::INFINITY), d(f64::INFINITY)), (CANONICAL_NAN_D, NV));
    assert_eq!(arith(FpArithOp::Mul, S, RNE, s(0.0), s(f32::NEG_INFINITY)), (nan_box(CANONICAL_NAN_S), NV));
    assert_eq!(arith(FpArithOp::Div, S, RNE, s(0.0), s(-0.0)), (nan_box(CANONICAL_NAN_S), NV));
    assert_eq!(arith(FpArithOp::Div, D, RNE, d(f64::INFINITY), d(-f64::INFINITY)), (CANONICAL_NAN_D, NV));
    let mut m = Machine::new(s(-1.0), d(-0.0), nan_box(SNAN_S));
    m.run(Inst::FpSqrt { fmt: S, rm: RNE, rd: 10, rs1: 1 }).unwrap();
    assert_eq!((m.fp.f[10], m.fp.fflags), (nan_box(CANONICAL_NAN_S), NV));
    let mut m = Machine::new(s(-1.0), d(-0.0), nan_box(SNAN_S));
    m.run(Inst::FpSqrt { fmt: D, rm: RNE, rd: 10, rs1: 2 }).unwrap();
    assert_eq!((m.fp.f[10], m.fp.fflags), (d(-0.0), 0), "sqrt(-0) = -0");
    // FCVT between formats: NaNs become the destination's canonical NaN.
    let mut m = Machine::new(nan_box(SNAN_S), QNAN_D, 0);
    m.run(Inst::FpCvtFp { to: D, from: S, rm: RNE, rd: 10, rs1: 1 }).unwrap();
    assert_eq!((m.fp.f[10], m.fp.fflags), (CANONICAL_NAN_D, NV));
    let mut m = Machine::new(nan_box(SNAN_S), QNAN_D, 0);
    m.run(Inst::FpCvtFp { to: S, from: D, rm: RNE, rd: 10, rs1: 2 }).unwrap();
    assert_eq!((m.fp.f[10], m.fp.fflags), (nan_box(CANONICAL_NAN_S), 0));
}

#[test]
fn nan_boxing() {
    let unboxed = 0x0000_0000_3f80_0000; // 1.0f32 without the box: reads as the canonical NaN
    assert_eq!(unbox(unboxed), CANONICAL_NAN_S);
    assert_eq!(unbox(0xffff_fffe_3f80_0000), CANONICAL_NAN_S);
    assert_eq!(unbox(s(1.0)), 1.0f32.to_bits());
    assert_eq!(arith(FpArithOp::Add, S, RNE, unboxed, s(1.0)), (nan_box(CANONICAL_NAN_S), 0));
    // Sign injection works on the unboxed value: the canonical NaN with rs2's sign.
    let sgnj = |kind, a, b| f_op(a, b, Inst::FpSgnj { kind, fmt: S, rd: 10, rs1: 1, rs2: 2 });
    assert_eq!(sgnj(SgnjKind::Sgnj, unboxed, s(-2.0)), (nan_box(0xffc0_0000), 0));
    assert_eq!(sgnj(SgnjKind::Sgnj, s(2.0), unboxed), (s(2.0), 0));
    assert_eq!(sgnj(SgnjKind::Sgnjn, s(2.0), s(3.0)), (s(-2.0), 0));
    assert_eq!(sgnj(SgnjKind::Sgnjx, s(-2.0), s(-3.0)), (s(2.0), 0));
    // Sign injection keeps NaN payloads and signaling bits (no canonicalization, no flags).
    assert_eq!(sgnj(SgnjKind::Sgnjn, nan_box(SNAN_S), s(1.0)), (nan_box(SNAN_S | 1 << 31), 0));
    let sgnj_d = |kind, a, b| f_op(a, b, Inst::FpSgnj { kind, fmt: D, rd: 10, rs1: 1, rs2: 2 });
    assert_eq!(sgnj_d(SgnjKind::Sgnjx, SNAN_D, d(-1.0)), (SNAN_D | 1 << 63, 0));
    assert_eq!(sgnj_d(SgnjKind::Sgnj, s(1.0), d(1.0)), (s(1.0) & !(1 << 63), 0), "D reads raw 64 bits");

    // FMV.X.W transfers the raw low 32 bits, sign-extended, without checking the box.
    let mut m = Machine::new(0x1234_5678_8000_0001, s(1.0), 0);
    m.run(Inst::FpMvToInt { fmt: S, rd: 10, rs1: 1 }).unwrap();
    assert_eq!(m.x[10], 0xffff_ffff_8000_0001);
    m.run(Inst::FpMvToInt { fmt: D, rd: 11, rs1: 1 }).unwrap();
    assert_eq!(m.x[11], 0x1234_5678_8000_0001);
    // FMV.W.X NaN-boxes the low 32 bits; FMV.D.X moves all 64.
    m.x[5] = 0xdead_beef_7f80_0001;
    assert_eq!(m.run(Inst::FpMvFromInt { fmt: S, rd: 12, rs1: 5 }), Ok(true));
    assert_eq!(m.fp.f[12], 0xffff_ffff_7f80_0001);
    m.run(Inst::FpMvFromInt { fmt: D, rd: 13, rs1: 5 }).unwrap();
    assert_eq!(m.fp.f[13], 0xdead_beef_7f80_0001);
    assert_eq!(m.fp.fflags, 0);
    // Single-precision results are boxed.
    assert_eq!(arith(FpArithOp::Add, S, RNE, s(1.0), s(2.0)).0, 0xffff_ffff_4040_0000);
}

#[test]
fn min_max_follow_minimum_number_and_maximum_number() {
    for fmt in [S, D] {
        let v = |x: f64| if fmt == S { s(x as f32) } else { d(x) };
        let (qnan, snan, canon) = match fmt {
            FpFormat::S => (nan_box(QNAN_S), nan_box(SNAN_S), nan_box(CANONICAL_NAN_S)),
            FpFormat::D => (QNAN_D, SNAN_D, CANONICAL_NAN_D),
        };
        // -0 is below +0, in either operand order.
        assert_eq!(min_max(false, fmt, v(-0.0), v(0.0)), (v(-0.0), 0));
        assert_eq!(min_max(false, fmt, v(0.0), v(-0.0)), (v(-0.0), 0));
        assert_eq!(min_max(true, fmt, v(-0.0), v(0.0)), (v(0.0), 0));
        assert_eq!(min_max(true, fmt, v(0.0), v(-0.0)), (v(0.0), 0));
        assert_eq!(min_max(false, fmt, v(-3.0), v(2.0)), (v(-3.0), 0));
        assert_eq!(min_max(true, fmt, v(-3.0), v(f64::INFINITY)), (v(f64::INFINITY), 0));
        // One NaN: the other operand; a signaling NaN still raises NV.
        assert_eq!(min_max(false, fmt, qnan, v(1.5)), (v(1.5), 0));
        assert_eq!(min_max(true, fmt, v(1.5), qnan), (v(1.5), 0));
        assert_eq!(min_max(false, fmt, v(-1.5), snan), (v(-1.5), NV));
        assert_eq!(min_max(true, fmt, snan, v(-1.5)), (v(-1.5), NV));
        // Two NaNs: the canonical NaN.
        assert_eq!(min_max(false, fmt, qnan, qnan), (canon, 0));
        assert_eq!(min_max(true, fmt, qnan, snan), (canon, NV));
    }
}

#[test]
fn comparisons_quiet_and_signaling() {
    use FpCmpCond::{Eq, Le, Lt};
    for fmt in [S, D] {
        let v = |x: f64| if fmt == S { s(x as f32) } else { d(x) };
        let (qnan, snan) = if fmt == S { (nan_box(QNAN_S), nan_box(SNAN_S)) } else { (QNAN_D, SNAN_D) };
        assert_eq!(cmp(Eq, fmt, v(-0.0), v(0.0)), (1, 0));
        assert_eq!(cmp(Lt, fmt, v(-0.0), v(0.0)), (0, 0));
        assert_eq!(cmp(Le, fmt, v(-0.0), v(0.0)), (1, 0));
        assert_eq!(cmp(Lt, fmt, v(-2.0), v(-1.0)), (1, 0));
        assert_eq!(cmp(Le, fmt, v(f64::INFINITY), v(1.0)), (0, 0));
        // FEQ is quiet: NV only for signaling NaNs. FLT and FLE signal on any NaN.
        assert_eq!(cmp(Eq, fmt, qnan, qnan), (0, 0));
        assert_eq!(cmp(Eq, fmt, v(1.0), snan), (0, NV));
        assert_eq!(cmp(Lt, fmt, qnan, v(1.0)), (0, NV));
        assert_eq!(cmp(Le, fmt, v(1.0), qnan), (0, NV));
        assert_eq!(cmp(Le, fmt, snan, snan), (0, NV));
    }
    // An improperly boxed single operand is the canonical (quiet) NaN.
    assert_eq!(cmp(Eq, S, 0x3f80_0000, s(1.0)), (0, 0));
}

#[test]
fn fclass_of_every_class() {
    let cases_s: [(u32, u64); 12] = [
        (0xff80_0000, 1 << 0),
        (0xbf80_0000, 1 << 1),
        (0x8000_0001, 1 << 2),
        (0x807f_ffff, 1 << 2),
        (0x8000_0000, 1 << 3),
        (0x0000_0000, 1 << 4),
        (0x0000_0001, 1 << 5),
        (0x0080_0000, 1 << 6),
        (0x7f7f_ffff, 1 << 6),
        (0x7f80_0000, 1 << 7),
        (SNAN_S | 1 << 31, 1 << 8),
        (QNAN_S, 1 << 9),
    ];
    for (bits, mask) in cases_s {
        assert_eq!(class(S, nan_box(bits)), mask, "fclass.s {bits:#x}");
    }
    assert_eq!(class(S, 0x0000_0000_0000_0000), 1 << 9, "unboxed reads as the canonical qNaN");
    let cases_d: [(u64, u64); 10] = [
        (f64::NEG_INFINITY.to_bits(), 1 << 0),
        (d(-1.0), 1 << 1),
        (0x800f_ffff_ffff_ffff, 1 << 2),
        (d(-0.0), 1 << 3),
        (0, 1 << 4),
        (1, 1 << 5),
        (d(f64::MIN_POSITIVE), 1 << 6),
        (f64::INFINITY.to_bits(), 1 << 7),
        (SNAN_D, 1 << 8),
        (CANONICAL_NAN_D, 1 << 9),
    ];
    for (bits, mask) in cases_d {
        assert_eq!(class(D, bits), mask, "fclass.d {bits:#x}");
    }
}

#[test]
fn conversion_to_integer_saturation_table() {
    use IntType::{Lu, Wu, L, W};
    let sx = |v: i64| v as u64;
    let cases: [(IntType, FpFormat, u64, u64, u8); 22] = [
        // FCVT.W.S: 2^31 is out of range; -2^31 is exact.
        (W, S, s(2147483648.0), sx(i32::MAX as i64), NV),
        (W, S, s(-2147483648.0), sx(i32::MIN as i64), 0),
        (W, S, nan_box(QNAN_S), sx(i32::MAX as i64), NV),
        (W, S, nan_box(SNAN_S | 1 << 31), sx(i32::MAX as i64), NV),
        (W, S, s(f32::INFINITY), sx(i32::MAX as i64), NV),
        (W, S, s(f32::NEG_INFINITY), sx(i32::MIN as i64), NV),
        (W, S, s(-3e9), sx(i32::MIN as i64), NV),
        // FCVT.WU: results are sign-extended from bit 31.
        (Wu, S, s(-1.0), 0, NV),
        (Wu, S, s(f32::NEG_INFINITY), 0, NV),
        (Wu, S, nan_box(QNAN_S), u64::MAX, NV),
        (Wu, S, s(f32::INFINITY), u64::MAX, NV),
        (Wu, D, d(4294967295.0), u64::MAX, 0),
        (Wu, D, d(4294967296.0), u64::MAX, NV),
        (Wu, D, d(2147483648.0), 0xffff_ffff_8000_0000, 0),
        (L, D, d(2f64.powi(63)), sx(i64::MAX), NV),
        (L, D, d(-(2f64.powi(63))), sx(i64::MIN), 0),
        (L, D, d(f64::NAN), sx(i64::MAX), NV),
        (L, S, s(f32::NEG_INFINITY), sx(i64::MIN), NV),
        (Lu, D, d(-0.0), 0, 0),
        (Lu, D, d(f64::NAN), u64::MAX, NV),
        (Lu, D, d(1.8446744073709552e19), u64::MAX, NV),
        (Lu, D, d(-f64::INFINITY), 0, NV),
    ];
    for (int, fmt, input, expected, fl) in cases {
        assert_eq!(to_int(int, fmt, RTZ, input), (expected, fl), "{int:?} {fmt:?} {input:#x}");
    }
    // Rounding is decided before the range check: -0.5 is in range for WU unless it rounds to -1.
    assert_eq!(to_int(Wu, S, RNE, s(-0.5)), (0, NX));
    assert_eq!(to_int(Wu, S, RDN, s(-0.5)), (0, NV));
    assert_eq!(to_int(W, D, RNE, d(2147483647.5)), (sx(i32::MAX as i64), NV));
    assert_eq!(to_int(W, D, RTZ, d(2147483647.5)), (sx(i32::MAX as i64), NX));
    assert_eq!(to_int(W, D, RUP, d(-2147483648.5)), (sx(i32::MIN as i64), NX));
    assert_eq!(to_int(W, D, RMM, d(-2147483648.5)), (sx(i32::MIN as i64), NV));
    // Every mode on the halfway cases ±2.5 and on ±2.3.
    let modes = [RNE, RTZ, RDN, RUP, RMM];
    for (x, expected) in [
        (2.5, [2, 2, 2, 3, 3]),
        (-2.5, [-2, -2, -3, -2, -3]),
        (2.3, [2, 2, 2, 3, 2]),
        (-2.3, [-2, -2, -3, -2, -2]),
        (3.5, [4, 3, 3, 4, 4]),
    ] {
        for (rm, e) in modes.into_iter().zip(expected) {
            assert_eq!(to_int(W, S, rm, s(x as f32)), (sx(e), NX), "{x} rm {rm}");
            assert_eq!(to_int(L, D, rm, d(x)), (sx(e), NX), "{x} rm {rm}");
        }
    }
    // rd = x0 is never written.
    let mut m = Machine::new(s(5.0), 0, 0);
    m.run(Inst::FpCvtToInt { int: W, fmt: S, rm: RNE, rd: 0, rs1: 1 }).unwrap();
    assert_eq!(m.x[0], 0);
}

#[test]
fn conversion_from_integer() {
    use IntType::{Lu, Wu, L, W};
    assert_eq!(from_int(W, S, RNE, (1 << 24) + 1), (s(16777216.0), NX));
    assert_eq!(from_int(W, S, RUP, (1 << 24) + 1), (s(16777218.0), NX));
    assert_eq!(from_int(W, S, RNE, (1 << 24) + 3), (s(16777220.0), NX), "tie to even");
    assert_eq!(from_int(W, S, RMM, (1 << 24) + 1), (s(16777218.0), NX), "tie away");
    // W/WU read only the low 32 bits.
    assert_eq!(from_int(W, D, RNE, 0x1234_5678_ffff_ffff), (d(-1.0), 0));
    assert_eq!(from_int(Wu, D, RNE, 0x1234_5678_ffff_ffff), (d(4294967295.0), 0));
    assert_eq!(from_int(L, D, RNE, i64::MIN as u64), (d(-(2f64.powi(63))), 0));
    assert_eq!(from_int(Lu, S, RNE, u64::MAX), (s(1.8446744e19), NX));
    assert_eq!(from_int(Lu, S, RTZ, u64::MAX), (s(f32::from_bits(0x5f7f_ffff)), NX));
    assert_eq!(from_int(L, D, RDN, 0), (d(0.0), 0), "integer zero is +0 in every mode");
}

#[test]
fn conversion_between_formats() {
    let cvt = |to, from, rm, a| {
        let mut m = Machine::new(a, 0, 0);
        m.run(Inst::FpCvtFp { to, from, rm, rd: 10, rs1: 1 }).unwrap();
        (m.fp.f[10], m.fp.fflags)
    };
    let third = 1.0f64 / 3.0;
    assert_eq!(cvt(S, D, RNE, d(third)), (s(third as f32), NX));
    assert_eq!(cvt(S, D, RUP, d(third)), (s(third as f32), NX));
    assert_eq!(cvt(S, D, RTZ, d(third)), (nan_box((third as f32).to_bits() - 1), NX));
    assert_eq!(cvt(S, D, RDN, d(-third)), (s(-third as f32), NX));
    assert_eq!(cvt(S, D, RMM, d(-third)), (s(-third as f32), NX));
    assert_eq!(cvt(S, D, RNE, d(1e300)), (s(f32::INFINITY), OF | NX));
    assert_eq!(cvt(S, D, RTZ, d(1e300)), (s(f32::MAX), OF | NX));
    assert_eq!(cvt(S, D, RDN, d(-1e300)), (s(f32::NEG_INFINITY), OF | NX));
    assert_eq!(cvt(S, D, RNE, d(1e-300)), (s(0.0), UF | NX));
    assert_eq!(cvt(S, D, RUP, d(1e-300)), (nan_box(1), UF | NX));
    assert_eq!(cvt(S, D, RNE, d(-0.0)), (s(-0.0), 0));
    // Widening is exact, subnormals included, in any mode.
    assert_eq!(cvt(D, S, RDN, nan_box(1)), (d(f32::from_bits(1) as f64), 0));
    assert_eq!(cvt(D, S, RNE, s(f32::NEG_INFINITY)), (d(f64::NEG_INFINITY), 0));
}

#[test]
fn tininess_is_detected_after_rounding() {
    let min_normal = f32::MIN_POSITIVE as f64;
    let cvt = |rm, a: f64| {
        let mut m = Machine::new(d(a), 0, 0);
        m.run(Inst::FpCvtFp { to: S, from: D, rm, rd: 10, rs1: 1 }).unwrap();
        (m.fp.f[10], m.fp.fflags)
    };
    // 2^-126 (1 - 2^-26) rounds (unbounded exponent, 24 bits) to 2^-126: not tiny, so no underflow.
    let x = min_normal * (1.0 - 2f64.powi(-26));
    assert_eq!(cvt(RNE, x), (s(f32::MIN_POSITIVE), NX));
    // Towards zero it stays below 2^-126: tiny and inexact.
    assert_eq!(cvt(RTZ, x), (nan_box(0x007f_ffff), UF | NX));
    // 2^-126 (1 - 2^-24) is representable with 24 bits, so it is tiny; it rounds (a tie) to 2^-126.
    let y = f32::from_bits(0x3f7f_ffff) as f64 * min_normal;
    assert_eq!(cvt(RNE, y), (s(f32::MIN_POSITIVE), UF | NX));
    // The same with a multiplication in binary64: (1 - 2^-53) * 2^-1022.
    let (r, fl) = arith(FpArithOp::Mul, D, RNE, 0x3fef_ffff_ffff_ffff, d(f64::MIN_POSITIVE));
    assert_eq!((r, fl), (d(f64::MIN_POSITIVE), UF | NX));
    // (1 - 2^-53) * (2^-1022 + 2^-1074)... and one whose unbounded rounding reaches 2^-1022: no UF.
    let (r, fl) = arith(FpArithOp::Mul, D, RNE, 0x3fef_ffff_ffff_ffff, 0x0010_0000_0000_0001);
    assert_eq!((r, fl), (0x0010_0000_0000_0000, NX));
    // An exact subnormal result raises nothing.
    assert_eq!(arith(FpArithOp::Mul, D, RNE, d(0.5), d(f64::MIN_POSITIVE)), (0x0008_0000_0000_0000, 0));
}

#[test]
fn overflow_and_division_by_zero() {
    let max = d(f64::MAX);
    assert_eq!(arith(FpArithOp::Mul, D, RNE, max, d(2.0)), (d(f64::INFINITY), OF | NX));
    assert_eq!(arith(FpArithOp::Mul, D, RTZ, max, d(2.0)), (max, OF | NX));
    assert_eq!(arith(FpArithOp::Mul, D, RDN, max, d(2.0)), (max, OF | NX));
    assert_eq!(arith(FpArithOp::Mul, D, RUP, max, d(-2.0)), (d(-f64::MAX), OF | NX));
    assert_eq!(arith(FpArithOp::Mul, D, RDN, max, d(-2.0)), (d(f64::NEG_INFINITY), OF | NX));
    assert_eq!(arith(FpArithOp::Mul, D, RMM, max, d(-2.0)), (d(f64::NEG_INFINITY), OF | NX));
    assert_eq!(arith(FpArithOp::Div, S, RNE, s(-1.0), s(0.0)), (s(f32::NEG_INFINITY), DZ));
    assert_eq!(arith(FpArithOp::Div, S, RNE, s(f32::INFINITY), s(0.0)), (s(f32::INFINITY), 0));
    assert_eq!(arith(FpArithOp::Div, D, RNE, d(1.0), d(f64::INFINITY)), (d(0.0), 0));
}

#[test]
fn signed_zero_results() {
    for fmt in [S, D] {
        let v = |x: f64| if fmt == S { s(x as f32) } else { d(x) };
        assert_eq!(arith(FpArithOp::Sub, fmt, RNE, v(1.5), v(1.5)), (v(0.0), 0));
        assert_eq!(arith(FpArithOp::Sub, fmt, RDN, v(1.5), v(1.5)), (v(-0.0), 0));
        assert_eq!(arith(FpArithOp::Add, fmt, RUP, v(-0.0), v(0.0)), (v(0.0), 0));
        assert_eq!(arith(FpArithOp::Add, fmt, RDN, v(-0.0), v(0.0)), (v(-0.0), 0));
        assert_eq!(arith(FpArithOp::Add, fmt, RNE, v(-0.0), v(-0.0)), (v(-0.0), 0));
        assert_eq!(arith(FpArithOp::Mul, fmt, RNE, v(-0.0), v(3.0)), (v(-0.0), 0));
        assert_eq!(arith(FpArithOp::Div, fmt, RNE, v(-0.0), v(-3.0)), (v(0.0), 0));
    }
}

#[test]
fn fused_multiply_add_variants() {
    let fma = |op, fmt, rm, a, b, c| {
        let mut m = Machine::new(a, b, c);
        m.run(Inst::FpFma { op, fmt, rm, rd: 10, rs1: 1, rs2: 2, rs3: 3 }).unwrap();
        (m.fp.f[10], m.fp.fflags)
    };
    use FmaOp::{Madd, Msub, Nmadd, Nmsub};
    assert_eq!(fma(Madd, D, RNE, d(2.0), d(3.0), d(1.0)), (d(7.0), 0));
    assert_eq!(fma(Msub, D, RNE, d(2.0), d(3.0), d(1.0)), (d(5.0), 0));
    assert_eq!(fma(Nmsub, D, RNE, d(2.0), d(3.0), d(1.0)), (d(-5.0), 0));
    assert_eq!(fma(Nmadd, D, RNE, d(2.0), d(3.0), d(1.0)), (d(-7.0), 0));
    assert_eq!(fma(Nmadd, S, RNE, s(0.0), s(1.0), s(0.0)), (s(-0.0), 0), "-(+0) - (+0) = -0");
    assert_eq!(fma(Madd, S, RNE, s(1.0), s(0.0), s(-0.0)), (s(0.0), 0));
    assert_eq!(fma(Madd, S, RDN, s(1.0), s(0.0), s(-0.0)), (s(-0.0), 0));
    // inf * 0 is invalid even with a quiet NaN addend.
    assert_eq!(fma(Madd, S, RNE, s(f32::INFINITY), s(0.0), nan_box(QNAN_S)), (nan_box(CANONICAL_NAN_S), NV));
    assert_eq!(fma(Madd, D, RNE, d(1.0), d(2.0), QNAN_D), (CANONICAL_NAN_D, 0));
    assert_eq!(fma(Madd, D, RNE, d(f64::INFINITY), d(2.0), d(f64::NEG_INFINITY)), (CANONICAL_NAN_D, NV));
    // Single rounding: (1 + 2^-23)^2 - (1 + 2^-22) = 2^-46 exactly.
    let x = s(1.0 + f32::EPSILON);
    assert_eq!(fma(Msub, S, RNE, x, x, s(1.0 + 2.0 * f32::EPSILON)), (s(2f32.powi(-46)), 0));
    // A product far below the addend only shows in the directed modes.
    let tiny = s(1e-30);
    assert_eq!(fma(Madd, S, RNE, tiny, tiny, s(1.0)), (s(1.0), NX));
    assert_eq!(fma(Madd, S, RUP, tiny, tiny, s(1.0)), (nan_box(0x3f80_0001), NX));
    assert_eq!(fma(Nmsub, S, RDN, tiny, tiny, s(1.0)), (nan_box(0x3f7f_ffff), NX));
}

#[test]
fn writes_only_what_it_should() {
    // Integer results never touch f registers and report no f write without flags.
    let mut m = Machine::new(s(1.0), s(2.0), 0);
    let before = m.fp.f;
    assert_eq!(m.run(Inst::FpCmp { cond: FpCmpCond::Lt, fmt: S, rd: 7, rs1: 1, rs2: 2 }), Ok(false));
    assert_eq!(m.x[7], 1);
    assert_eq!(m.fp.f, before);
    // Flags accrue (OR) and the result says the state changed.
    m.fp.fflags = NX;
    assert_eq!(m.run(Inst::FpCmp { cond: FpCmpCond::Lt, fmt: D, rd: 7, rs1: 1, rs2: 2 }), Ok(true));
    assert_eq!(m.fp.fflags, NX | NV);
    // Register numbers are masked, never out of bounds.
    assert_eq!(m.run(Inst::FpMvFromInt { fmt: D, rd: 0xff, rs1: 0xe0 }), Ok(true));
    assert_eq!(m.fp.f[31], 0);
}
