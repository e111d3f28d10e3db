//! Checks trapeze's soft-float (`trapeze::fpu::soft`) against expectations derived independently of it:
//!
//! - round to nearest-even results against the host's `f32`/`f64` arithmetic (`+ - * /`, `sqrt`, `mul_add`), with
//!   NaN results mapped to the canonical NaN;
//! - exception flags derived from the host: NV and DZ from the operand classes, OF from an infinite result of
//!   finite operands, NX from exactness checks (binary32 operations are exact in `f64`; for binary64, error-free
//!   transformations: TwoSum and `mul_add` residuals), UF where tininess after rounding can be decided;
//! - for the directed modes, the bracketing property: RDN <= exact <= RUP, adjacent (or equal when exact), RTZ the
//!   one towards zero, RNE and RMM one of the two, ties decided against the exact midpoint where it is
//!   representable (binary32).

use core::cmp::Ordering;
use proptest::prelude::*;
use trapeze::fpu::soft::{self, flags, Format, Round, F32, F64};

const MODES: [Round; 5] = [Round::Rne, Round::Rtz, Round::Rdn, Round::Rup, Round::Rmm];

/// Operand bits biased towards the interesting parts of binary32: zeros, subnormals, the extremes of the
/// exponent range, around 1, infinities and NaNs (quiet and signaling).
fn f32_bits() -> impl Strategy<Value = u32> {
    let exp = prop_oneof![0u32..=255, Just(0u32), Just(255u32), 1u32..4, 120u32..135, 250u32..255, 60u32..70];
    let frac = prop_oneof![
        0u32..(1 << 23),
        Just(0u32),
        0u32..4,
        ((1u32 << 23) - 4)..(1 << 23),
        Just(1u32 << 22),
        (0u32..24).prop_map(|k| 1 << k),
    ];
    (any::<bool>(), exp, frac).prop_map(|(s, e, f)| (s as u32) << 31 | e << 23 | f)
}

fn f64_bits() -> impl Strategy<Value = u64> {
    let exp = prop_oneof![
        0u64..=2047,
        Just(0u64),
        Just(2047u64),
        1u64..4,
        1015u64..1035,
        2040u64..2047,
        0u64..60,
        960u64..1100
    ];
    let frac = prop_oneof![
        0u64..(1 << 52),
        Just(0u64),
        0u64..4,
        ((1u64 << 52) - 4)..(1 << 52),
        Just(1u64 << 51),
        (0u64..53).prop_map(|k| 1 << k),
    ];
    (any::<bool>(), exp, frac).prop_map(|(s, e, f)| (s as u64) << 63 | e << 52 | f)
}

fn is_snan32(b: u32) -> bool {
    f32::from_bits(b).is_nan() && b & (1 << 22) == 0
}

fn is_snan64(b: u64) -> bool {
    f64::from_bits(b).is_nan() && b & (1 << 51) == 0
}

/// Whether a host result is a NaN, told from its bits: in the `hardened` build (release optimisation with overflow
/// checks and debug assertions), `is_nan` on the result of `sqrt(0x7ff0_0000_0000_0001)` (a signaling NaN, whose
/// square root is the quiet NaN `0x7ff8_0000_0000_0001`) answered `false`, so the oracle expected those bits
/// instead of the canonical NaN. The bits cannot be folded away.
fn is_nan32(x: f32) -> bool {
    x.to_bits() & 0x7fff_ffff > 0x7f80_0000
}

fn is_nan64(x: f64) -> bool {
    x.to_bits() & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000
}

/// The RISC-V result for a host result: NaNs become the canonical NaN.
fn canon32(x: f32) -> u64 {
    if is_nan32(x) {
        0x7fc0_0000
    } else {
        x.to_bits() as u64
    }
}

fn canon64(x: f64) -> u64 {
    if is_nan64(x) {
        0x7ff8_0000_0000_0000
    } else {
        x.to_bits()
    }
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let t = (a - (s - bb)) + (b - bb);
    (s, t)
}

/// Compares the exact value `s + t` (with `t` the rounding error of `s`, zero when exact) to a double.
fn cmp_pair(s: f64, t: f64, cand: f64) -> Ordering {
    if s != cand {
        s.partial_cmp(&cand).unwrap_or(Ordering::Equal)
    } else {
        t.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
    }
}

fn sign_of(x: f64) -> Ordering {
    x.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
}

fn next_up_bits(fmt: Format, bits: u64) -> u64 {
    let sign = if fmt == F32 { 1u64 << 31 } else { 1u64 << 63 };
    if bits & !sign == 0 {
        1
    } else if bits & sign == 0 {
        bits + 1
    } else {
        bits - 1
    }
}

fn to_f64(fmt: Format, bits: u64) -> f64 {
    if fmt == F32 {
        f32::from_bits(bits as u32) as f64
    } else {
        f64::from_bits(bits)
    }
}

fn is_nan(fmt: Format, bits: u64) -> bool {
    to_f64(fmt, bits).is_nan()
}

/// Runs `op` in every mode and checks the bracketing property against `exact`, which compares the exact result
/// to a (finite or infinite) double. `midpoints` says whether a midpoint of two adjacent results is a double
/// (binary32), so that ties can be decided.
fn check_modes(
    fmt: Format,
    op: impl Fn(Round, &mut u8) -> u64,
    exact: Option<&dyn Fn(f64) -> Ordering>,
    midpoints: bool,
) -> Result<(), TestCaseError> {
    let mut results = [0u64; 5];
    let mut fl = [0u8; 5];
    for (i, &rm) in MODES.iter().enumerate() {
        results[i] = op(rm, &mut fl[i]);
    }
    let [rne, rtz, rdn, rup, rmm] = results;
    // Invalid, divide-by-zero and inexact do not depend on the rounding direction.
    for f in fl {
        prop_assert_eq!(f & (flags::NV | flags::DZ | flags::NX), fl[0] & (flags::NV | flags::DZ | flags::NX));
        prop_assert!(f & flags::UF == 0 || f & flags::NX != 0, "UF without NX");
        prop_assert!(f & flags::OF == 0 || f & flags::NX != 0, "OF without NX");
    }
    if is_nan(fmt, rne) {
        prop_assert!(results.iter().all(|&r| r == fmt.canonical_nan()));
        return Ok(());
    }
    if fl[0] & flags::NX == 0 {
        // An exact zero sum of opposite-signed operands is -0 when rounding down, +0 otherwise.
        let same = |r: u64| r == rne || (to_f64(fmt, r) == 0.0 && to_f64(fmt, rne) == 0.0);
        prop_assert!(results.iter().all(|&r| same(r)), "exact result differs between modes: {:x?}", results);
        if let Some(exact) = exact {
            prop_assert_eq!(exact(to_f64(fmt, rne)), Ordering::Equal);
        }
        return Ok(());
    }
    prop_assert_eq!(next_up_bits(fmt, rdn), rup, "RDN {:x} and RUP {:x} not adjacent", rdn, rup);
    let (down, up) = (to_f64(fmt, rdn), to_f64(fmt, rup));
    prop_assert!(down < up || (down == 0.0 && up == 0.0));
    let negative = down < 0.0 || (down == 0.0 && up == 0.0);
    prop_assert_eq!(rtz, if negative { rup } else { rdn });
    prop_assert!(rne == rdn || rne == rup);
    prop_assert!(rmm == rdn || rmm == rup);
    if let Some(exact) = exact {
        prop_assert_eq!(exact(down), Ordering::Greater);
        prop_assert_eq!(exact(up), Ordering::Less);
        if midpoints && down.is_finite() && up.is_finite() {
            let mid = (down + up) / 2.0;
            let far = if negative { rdn } else { rup };
            match exact(mid) {
                Ordering::Equal => {
                    prop_assert_eq!(rmm, far, "RMM tie");
                    prop_assert_eq!(rne & 1, 0, "RNE tie not even");
                }
                Ordering::Less => prop_assert!(rne == rdn && rmm == rdn, "nearest is RDN"),
                Ordering::Greater => prop_assert!(rne == rup && rmm == rup, "nearest is RUP"),
            }
        }
    } else if rmm != rne {
        // Without an exact midpoint: RMM may only differ from RNE on a tie, which RNE broke to even.
        prop_assert_eq!(rne & 1, 0);
        prop_assert!(to_f64(fmt, rmm).abs() > to_f64(fmt, rne).abs());
    }
    Ok(())
}

/// Flags derivable from the host for an RNE binary32/binary64 operation: NV from the operand classes, DZ, OF, and
/// the sound part of UF (a subnormal or zero inexact result is tiny; a result above the smallest normal is not).
fn check_common_flags(
    fmt: Format,
    inputs: &[u64],
    result: u64,
    host_nan: bool,
    dz: bool,
    fl: u8,
) -> Result<(), TestCaseError> {
    let any_nan = inputs.iter().any(|&b| is_nan(fmt, b));
    let any_snan = inputs.iter().any(|&b| if fmt == F32 { is_snan32(b as u32) } else { is_snan64(b) });
    let invalid = any_snan || (host_nan && !any_nan);
    prop_assert_eq!(fl & flags::NV != 0, invalid, "NV");
    prop_assert_eq!(fl & flags::DZ != 0, dz, "DZ");
    let r = to_f64(fmt, result);
    let finite_inputs = inputs.iter().all(|&b| to_f64(fmt, b).is_finite());
    prop_assert_eq!(fl & flags::OF != 0, r.is_infinite() && finite_inputs && !dz, "OF");
    let min_normal = if fmt == F32 { f32::MIN_POSITIVE as f64 } else { f64::MIN_POSITIVE };
    if r.abs() < min_normal && fl & flags::NX != 0 {
        prop_assert!(fl & flags::UF != 0, "UF missing on an inexact subnormal result");
    }
    if r.abs() > min_normal || r.is_nan() {
        prop_assert!(fl & flags::UF == 0, "UF on a normal result");
    }
    Ok(())
}

/// Tininess after rounding of an exact binary32 result held in `f64`: rounded to 24 bits with an unbounded
/// exponent (done by scaling into the normal range), is it below 2^-126?
fn tiny32(exact: f64) -> bool {
    let scale = 2f64.powi(200);
    exact != 0.0 && exact.abs() < 1e-30 && (((exact * scale) as f32) as f64).abs() < f32::MIN_POSITIVE as f64 * scale
}

#[derive(Debug, Clone, Copy)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

fn soft_bin(op: Bin, fmt: Format, a: u64, b: u64, rm: Round, fl: &mut u8) -> u64 {
    match op {
        Bin::Add => soft::add(fmt, a, b, rm, fl),
        Bin::Sub => soft::sub(fmt, a, b, rm, fl),
        Bin::Mul => soft::mul(fmt, a, b, rm, fl),
        Bin::Div => soft::div(fmt, a, b, rm, fl),
    }
}

fn bin_op() -> impl Strategy<Value = Bin> {
    prop_oneof![Just(Bin::Add), Just(Bin::Sub), Just(Bin::Mul), Just(Bin::Div)]
}

fn check_bin32(op: Bin, a: u32, b: u32) -> Result<(), TestCaseError> {
    let (x, y) = (f32::from_bits(a), f32::from_bits(b));
    let host = match op {
        Bin::Add => x + y,
        Bin::Sub => x - y,
        Bin::Mul => x * y,
        Bin::Div => x / y,
    };
    let mut fl = 0;
    let r = soft_bin(op, F32, a as u64, b as u64, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon32(host), "{:?} {:#x} {:#x}", op, a, b);
    let dz = matches!(op, Bin::Div) && y == 0.0 && x.is_finite() && x != 0.0;
    check_common_flags(F32, &[a as u64, b as u64], r, host.is_nan(), dz, fl)?;
    let (xd, yd) = (x as f64, y as f64);
    // Exact value oracle, in f64 where binary32 operations are exact (or their sign is).
    let exact: Box<dyn Fn(f64) -> Ordering> = match op {
        // A sum is exact in f64 only when the exponents are close: use TwoSum.
        Bin::Add => Box::new(move |c| {
            let (s, t) = two_sum(xd, yd);
            cmp_pair(s, t, c)
        }),
        Bin::Sub => Box::new(move |c| {
            let (s, t) = two_sum(xd, -yd);
            cmp_pair(s, t, c)
        }),
        Bin::Mul => Box::new(move |c| cmp_pair(xd * yd, 0.0, c)),
        Bin::Div => Box::new(move |c| {
            let s = sign_of(xd - c * yd);
            if yd < 0.0 {
                s.reverse()
            } else {
                s
            }
        }),
    };
    if host.is_finite() && x.is_finite() && y.is_finite() && !(matches!(op, Bin::Div) && y == 0.0) {
        let inexact = exact(host as f64) != Ordering::Equal;
        prop_assert_eq!(fl & flags::NX != 0, inexact, "NX");
        if !matches!(op, Bin::Div) {
            // When the f64 sum is inexact the operands' exponents are far apart and the result is not tiny.
            let value = match op {
                Bin::Add => two_sum(xd, yd).0,
                Bin::Sub => two_sum(xd, -yd).0,
                _ => xd * yd,
            };
            prop_assert_eq!(fl & flags::UF != 0, inexact && tiny32(value), "UF");
        }
    }
    let finite = x.is_finite() && y.is_finite() && !(matches!(op, Bin::Div) && y == 0.0);
    check_modes(F32, |rm, fl| soft_bin(op, F32, a as u64, b as u64, rm, fl), finite.then_some(&*exact), true)
}

fn check_bin64(op: Bin, a: u64, b: u64) -> Result<(), TestCaseError> {
    let (x, y) = (f64::from_bits(a), f64::from_bits(b));
    let host = match op {
        Bin::Add => x + y,
        Bin::Sub => x - y,
        Bin::Mul => x * y,
        Bin::Div => x / y,
    };
    let mut fl = 0;
    let r = soft_bin(op, F64, a, b, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon64(host), "{:?} {:#x} {:#x}", op, a, b);
    let dz = matches!(op, Bin::Div) && y == 0.0 && x.is_finite() && x != 0.0;
    check_common_flags(F64, &[a, b], r, host.is_nan(), dz, fl)?;
    // Exact oracles from error-free transformations, where they are exact (no overflow, no underflow of the
    // error term).
    let safe = |v: f64| v == 0.0 || (v.abs() > 2f64.powi(-900) && v.abs() < 2f64.powi(900));
    let exact: Option<Box<dyn Fn(f64) -> Ordering>> = match op {
        // TwoSum is exact unless an intermediate overflows (then `t` is not finite).
        Bin::Add | Bin::Sub
            if host.is_finite() && two_sum(x, if matches!(op, Bin::Sub) { -y } else { y }).1.is_finite() =>
        {
            let y = if matches!(op, Bin::Sub) { -y } else { y };
            let (s, t) = two_sum(x, y);
            Some(Box::new(move |c| cmp_pair(s, t, c)))
        }
        Bin::Mul if host.is_finite() && host != 0.0 && safe(host) => {
            let e = x.mul_add(y, -host);
            Some(Box::new(move |c| cmp_pair(host, e, c)))
        }
        Bin::Div if host.is_finite() && host != 0.0 && safe(host) && safe(x) && safe(y) => Some(Box::new(move |c| {
            let s = sign_of(-c.mul_add(y, -x));
            if y < 0.0 {
                s.reverse()
            } else {
                s
            }
        })),
        _ => None,
    };
    if let Some(exact) = &exact {
        if x.is_finite() && y.is_finite() {
            prop_assert_eq!(fl & flags::NX != 0, exact(host) != Ordering::Equal, "NX");
        }
    }
    check_modes(F64, |rm, fl| soft_bin(op, F64, a, b, rm, fl), exact.as_deref(), false)
}

fn check_sqrt32(a: u32) -> Result<(), TestCaseError> {
    let x = f32::from_bits(a);
    let host = x.sqrt();
    let mut fl = 0;
    let r = soft::sqrt(F32, a as u64, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon32(host), "sqrt {:#x}", a);
    check_common_flags(F32, &[a as u64], r, host.is_nan(), false, fl)?;
    let xd = x as f64;
    let exact = move |c: f64| sign_of(xd - c * c);
    let finite = x.is_finite() && x >= 0.0;
    if finite {
        prop_assert_eq!(fl & flags::NX != 0, exact(host as f64) != Ordering::Equal, "NX");
    }
    check_modes(F32, |rm, fl| soft::sqrt(F32, a as u64, rm, fl), finite.then_some(&exact), true)
}

fn check_sqrt64(a: u64) -> Result<(), TestCaseError> {
    let x = f64::from_bits(a);
    let host = x.sqrt();
    let mut fl = 0;
    let r = soft::sqrt(F64, a, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon64(host), "sqrt {:#x}", a);
    check_common_flags(F64, &[a], r, host.is_nan(), false, fl)?;
    let exact = move |c: f64| sign_of(-c.mul_add(c, -x));
    let usable = x.is_finite() && x > 2f64.powi(-900);
    if usable {
        prop_assert_eq!(fl & flags::NX != 0, exact(host) != Ordering::Equal, "NX");
    }
    check_modes(F64, |rm, fl| soft::sqrt(F64, a, rm, fl), usable.then_some(&exact), false)
}

fn check_fma32(a: u32, b: u32, c: u32, neg_p: bool, neg_c: bool) -> Result<(), TestCaseError> {
    let (x, y, z) = (f32::from_bits(a), f32::from_bits(b), f32::from_bits(c));
    let xs = if neg_p { -x } else { x };
    let zs = if neg_c { -z } else { z };
    let host = xs.mul_add(y, zs);
    let mut fl = 0;
    let r = soft::fma(F32, a as u64, b as u64, c as u64, neg_p, neg_c, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon32(host), "fma {:#x} {:#x} {:#x} {} {}", a, b, c, neg_p, neg_c);
    let inf_zero = (x.is_infinite() && y == 0.0) || (x == 0.0 && y.is_infinite());
    // RISC-V: inf * 0 is invalid even with a quiet NaN addend (the host leaves this case unspecified).
    let inputs = [a as u64, b as u64, c as u64];
    if inf_zero && z.is_nan() {
        prop_assert!(fl & flags::NV != 0);
    } else {
        check_common_flags(F32, &inputs, r, host.is_nan(), false, fl)?;
    }
    let finite = x.is_finite() && y.is_finite() && z.is_finite();
    let (s, t) = two_sum(xs as f64 * y as f64, zs as f64);
    let exact = move |cand: f64| cmp_pair(s, t, cand);
    if finite && host.is_finite() {
        let inexact = exact(host as f64) != Ordering::Equal;
        prop_assert_eq!(fl & flags::NX != 0, inexact, "NX");
        // With t != 0 the sum spans more than 53 bits, so s is far from the underflow range.
        prop_assert_eq!(fl & flags::UF != 0, inexact && tiny32(s), "UF");
    }
    check_modes(
        F32,
        |rm, fl| soft::fma(F32, a as u64, b as u64, c as u64, neg_p, neg_c, rm, fl),
        finite.then_some(&exact),
        true,
    )
}

fn check_fma64(a: u64, b: u64, c: u64, neg_p: bool, neg_c: bool) -> Result<(), TestCaseError> {
    let (x, y, z) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
    let xs = if neg_p { -x } else { x };
    let zs = if neg_c { -z } else { z };
    let host = xs.mul_add(y, zs);
    let mut fl = 0;
    let r = soft::fma(F64, a, b, c, neg_p, neg_c, Round::Rne, &mut fl);
    prop_assert_eq!(r, canon64(host), "fma {:#x} {:#x} {:#x} {} {}", a, b, c, neg_p, neg_c);
    let inf_zero = (x.is_infinite() && y == 0.0) || (x == 0.0 && y.is_infinite());
    if inf_zero && z.is_nan() {
        prop_assert!(fl & flags::NV != 0);
    } else {
        check_common_flags(F64, &[a, b, c], r, host.is_nan(), false, fl)?;
    }
    check_modes(F64, |rm, fl| soft::fma(F64, a, b, c, neg_p, neg_c, rm, fl), None, false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn binary32_arithmetic(op in bin_op(), a in f32_bits(), b in f32_bits()) {
        check_bin32(op, a, b)?;
    }

    #[test]
    fn binary32_arithmetic_close_operands(op in bin_op(), a in f32_bits(), d in -3i32..3) {
        // Cancellation and ties: b is a's neighbour (possibly with the other sign).
        let b = (a as i32).wrapping_add(d) as u32;
        check_bin32(op, a, b)?;
        check_bin32(op, a, b ^ 0x8000_0000)?;
    }

    #[test]
    fn binary64_arithmetic(op in bin_op(), a in f64_bits(), b in f64_bits()) {
        check_bin64(op, a, b)?;
    }

    #[test]
    fn binary64_arithmetic_close_operands(op in bin_op(), a in f64_bits(), d in -3i64..3) {
        let b = (a as i64).wrapping_add(d) as u64;
        check_bin64(op, a, b)?;
        check_bin64(op, a, b ^ (1 << 63))?;
    }

    #[test]
    fn square_roots(a in f32_bits(), b in f64_bits()) {
        check_sqrt32(a)?;
        check_sqrt64(b)?;
    }

    #[test]
    fn fused_multiply_add32(a in f32_bits(), b in f32_bits(), c in f32_bits(), np in any::<bool>(), nc in any::<bool>()) {
        check_fma32(a, b, c, np, nc)?;
    }

    #[test]
    fn fused_multiply_add32_cancelling(a in f32_bits(), b in f32_bits(), np in any::<bool>(), nc in any::<bool>()) {
        // The addend is minus the rounded product: the result is the product's rounding error.
        let c = (f32::from_bits(a) * f32::from_bits(b)).to_bits();
        check_fma32(a, b, c, np, !np ^ nc)?;
        check_fma32(a, b, c ^ 1, np, !np ^ nc)?;
    }

    #[test]
    fn fused_multiply_add64(a in f64_bits(), b in f64_bits(), c in f64_bits(), np in any::<bool>(), nc in any::<bool>()) {
        check_fma64(a, b, c, np, nc)?;
    }

    #[test]
    fn fused_multiply_add64_cancelling(a in f64_bits(), b in f64_bits(), np in any::<bool>()) {
        let c = (f64::from_bits(a) * f64::from_bits(b)).to_bits();
        check_fma64(a, b, c, np, !np)?;
        check_fma64(a, b, c ^ 1, np, !np)?;
    }

    #[test]
    fn narrowing_conversion_matches_host(a in f64_bits()) {
        let x = f64::from_bits(a);
        let mut fl = 0;
        let r = soft::convert(F64, F32, a, Round::Rne, &mut fl);
        prop_assert_eq!(r, canon32(x as f32));
        let exact = move |c: f64| cmp_pair(x, 0.0, c);
        if x.is_finite() && (x as f32).is_finite() {
            prop_assert_eq!(fl & flags::NX != 0, (x as f32) as f64 != x);
            prop_assert_eq!(fl & flags::UF != 0, (x as f32) as f64 != x && tiny32(x));
        }
        check_modes(F32, |rm, fl| soft::convert(F64, F32, a, rm, fl), x.is_finite().then_some(&exact), true)?;
    }

    #[test]
    fn widening_conversion_is_exact(a in f32_bits()) {
        let x = f32::from_bits(a);
        let mut fl = 0;
        let r = soft::convert(F32, F64, a as u64, Round::Rup, &mut fl);
        prop_assert_eq!(r, canon64(x as f64));
        prop_assert_eq!(fl, if is_snan32(a) { flags::NV } else { 0 });
    }

    #[test]
    fn integer_to_float(v in prop_oneof![any::<u64>(), (0u32..64).prop_map(|k| 1u64 << k), any::<u32>().prop_map(|v| v as u64)]) {
        let signed = soft::IntKind { signed: true, bits64: true };
        let unsigned = soft::IntKind { signed: false, bits64: true };
        let mut fl = 0;
        prop_assert_eq!(soft::from_int(F64, v, signed, Round::Rne, &mut fl), (v as i64 as f64).to_bits());
        prop_assert_eq!(soft::from_int(F64, v, unsigned, Round::Rne, &mut fl), (v as f64).to_bits());
        prop_assert_eq!(soft::from_int(F32, v, signed, Round::Rne, &mut fl), (v as i64 as f32).to_bits() as u64);
        prop_assert_eq!(soft::from_int(F32, v, unsigned, Round::Rne, &mut fl), (v as f32).to_bits() as u64);
        let w = soft::IntKind { signed: true, bits64: false };
        let mut fl = 0;
        prop_assert_eq!(soft::from_int(F64, v, w, Round::Rdn, &mut fl), (v as i32 as f64).to_bits());
        prop_assert_eq!(fl, 0);
        let exact = move |c: f64| (v as i128 as f64).partial_cmp(&c).unwrap();
        let _ = exact;
        // Exactness in i128 arithmetic for the directed modes.
        let cmp = move |c: f64| (v as i64 as i128).cmp(&(c as i128)).then(if c.fract() == 0.0 { Ordering::Equal } else { Ordering::Less });
        check_modes(F32, |rm, fl| soft::from_int(F32, v, signed, rm, fl), Some(&cmp), false)?;
        check_modes(F64, |rm, fl| soft::from_int(F64, v, unsigned, rm, fl), None, false)?;
    }

    #[test]
    fn float_to_integer_rtz_matches_host_saturation(a in f64_bits()) {
        // Rust's `as` saturates and rounds towards zero; it maps NaN to 0 where RISC-V gives the maximum.
        let x = f64::from_bits(a);
        let mut fl = 0;
        let kinds = [(true, true), (false, true), (true, false), (false, false)];
        for (signed, bits64) in kinds {
            let kind = soft::IntKind { signed, bits64 };
            let r = soft::to_int(F64, a, kind, Round::Rtz, &mut fl);
            let expected = match (signed, bits64) {
                _ if x.is_nan() => match (signed, bits64) {
                    (true, true) => i64::MAX as u64,
                    (false, true) => u64::MAX,
                    (true, false) => i32::MAX as u64,
                    (false, false) => u64::MAX,
                },
                (true, true) => x as i64 as u64,
                (false, true) => x as u64,
                (true, false) => x as i32 as i64 as u64,
                (false, false) => x as u32 as i32 as i64 as u64,
            };
            prop_assert_eq!(r, expected, "{:#x} signed {} 64 {}", a, signed, bits64);
            let mut fl = 0;
            soft::to_int(F64, a, kind, Round::Rtz, &mut fl);
            let t = x.trunc();
            let (lo, hi) = match (signed, bits64) {
                (true, true) => (-(2f64.powi(63)), 2f64.powi(63)),
                (false, true) => (0.0, 2f64.powi(64)),
                (true, false) => (-(2f64.powi(31)), 2f64.powi(31)),
                (false, false) => (0.0, 2f64.powi(32)),
            };
            // `hi` is the first value out of range.
            let invalid = x.is_nan() || t < lo || t >= hi;
            let expected_flags = if invalid { flags::NV } else if t != x { flags::NX } else { 0 };
            prop_assert_eq!(fl, expected_flags, "flags {:#x} signed {} 64 {}", a, signed, bits64);
        }
    }
}

#[test]
fn fma_rounds_once() {
    // (1 + 2^-52)^2 - (1 + 2^-51) = 2^-104 exactly; a separately rounded product would give 0.
    let x = 1.0f64 + f64::EPSILON;
    let c = -(1.0 + 2.0 * f64::EPSILON);
    let mut fl = 0;
    let r = soft::fma(F64, x.to_bits(), x.to_bits(), c.to_bits(), false, false, Round::Rne, &mut fl);
    assert_eq!(f64::from_bits(r), 2f64.powi(-104));
    assert_eq!(fl, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Any decoded word, any register contents, any `frm`: `execute` never panics, keeps x0 zero, fails only
    /// for reserved rounding modes and non-arithmetic instructions, and then changes nothing.
    #[test]
    fn execute_never_panics(
        word in prop_oneof![any::<u32>(), any::<u32>().prop_map(|w| w & !0x7f | 0x53), any::<u32>().prop_map(|w| w & !0x73 | 0x43)],
        seed in any::<u64>(),
        frm in 0u8..8,
    ) {
        use trapeze::fpu::{execute, nan_box, FpError, FpState};
        let inst = trapeze::isa::decode_word(word);
        // Register contents from a xorshift generator: raw doubles, boxed singles, specials.
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [0, 1 << 63, 1, 0x7ff0_0000_0000_0000, 0x7ff0_0000_0000_0001, nan_box(0x7f80_0001), nan_box(1)];
        let f: [u64; 32] = core::array::from_fn(|_| {
            let r = next();
            match r % 4 {
                0 => specials[(r >> 8) as usize % specials.len()],
                1 => nan_box((r >> 16) as u32),
                _ => next(),
            }
        });
        let x: [u64; 32] = core::array::from_fn(|_| next());
        let mut fp = FpState { f, fflags: 0, frm };
        let mut xs = x;
        xs[0] = 0;
        let before = (fp, xs);
        match execute(&inst, &mut fp, &mut xs) {
            Ok(_) => prop_assert_eq!(xs[0], 0),
            Err(FpError::IllegalInstruction) | Err(FpError::NotHandled) => prop_assert_eq!((fp, xs), before),
        }
    }
}
