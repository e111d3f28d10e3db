//! Exact IEEE 754-2019 binary32 and binary64 arithmetic on integers, with the RISC-V choices: every NaN result
//! is the canonical NaN, tininess is detected after rounding, and FMA signals invalid for `inf * 0` even when
//! the addend is a quiet NaN.
//!
//! Operands and results are raw encodings in the low bits of a `u64` (binary32 in the low 32 bits, without NaN
//! boxing). Every function accrues its exception flags into `flags` (the `fflags` bit layout of [`flags`]).
//!
//! Method: an operand is unpacked into sign, significand and exponent (`value = sig * 2^exp`); the exact result
//! (or, for division and square root, the truncated result with a sticky bit for the discarded non-zero rest) is
//! formed in a `u128` and [`round_pack`] rounds it once to the destination format. `u128` is wide enough for an
//! exact 53x53-bit product and for aligning an FMA addend against it, so FMA rounds once. No operation panics.

use core::cmp::Ordering;

/// Exception flag bits, laid out as in `fflags`.
pub mod flags {
    /// Invalid operation.
    pub const NV: u8 = 1 << 4;
    /// Divide by zero.
    pub const DZ: u8 = 1 << 3;
    /// Overflow.
    pub const OF: u8 = 1 << 2;
    /// Underflow (tiny after rounding and inexact).
    pub const UF: u8 = 1 << 1;
    /// Inexact.
    pub const NX: u8 = 1 << 0;
}

/// A binary interchange format: exponent and stored-fraction widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    ebits: u32,
    mbits: u32,
}

/// binary32 (single precision).
pub const F32: Format = Format { ebits: 8, mbits: 23 };
/// binary64 (double precision).
pub const F64: Format = Format { ebits: 11, mbits: 52 };

impl Format {
    const fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }

    /// The all-ones biased exponent (infinities and NaNs).
    const fn exp_max(self) -> u64 {
        (1 << self.ebits) - 1
    }

    const fn sign_bit(self) -> u64 {
        1 << (self.ebits + self.mbits)
    }

    const fn frac_mask(self) -> u64 {
        (1 << self.mbits) - 1
    }

    /// The RISC-V canonical NaN: positive, quiet, zero payload.
    pub const fn canonical_nan(self) -> u64 {
        self.exp_max() << self.mbits | 1 << (self.mbits - 1)
    }

    const fn signed(self, sign: bool, magnitude: u64) -> u64 {
        if sign {
            magnitude | self.sign_bit()
        } else {
            magnitude
        }
    }

    const fn zero(self, sign: bool) -> u64 {
        self.signed(sign, 0)
    }

    const fn inf(self, sign: bool) -> u64 {
        self.signed(sign, self.exp_max() << self.mbits)
    }

    const fn max_finite(self, sign: bool) -> u64 {
        self.signed(sign, (self.exp_max() - 1) << self.mbits | self.frac_mask())
    }

    /// Keeps only the bits of the format (a binary32 value in the low 32 bits).
    const fn mask(self, bits: u64) -> u64 {
        bits & (self.sign_bit() << 1).wrapping_sub(1)
    }
}

/// A rounding direction (a valid `rm`/`frm` value other than DYN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Round {
    /// To nearest, ties to even.
    Rne,
    /// Towards zero.
    Rtz,
    /// Down, towards negative infinity.
    Rdn,
    /// Up, towards positive infinity.
    Rup,
    /// To nearest, ties to maximum magnitude.
    Rmm,
}

impl Round {
    /// The rounding direction for a 3-bit `rm`/`frm` encoding, or `None` for 5, 6 and 7 (7 is DYN, which the
    /// caller resolves through `frm`).
    pub const fn from_bits(bits: u8) -> Option<Round> {
        match bits {
            0 => Some(Round::Rne),
            1 => Some(Round::Rtz),
            2 => Some(Round::Rdn),
            3 => Some(Round::Rup),
            4 => Some(Round::Rmm),
            _ => None,
        }
    }
}

/// What an encoding denotes, the sign aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Zero,
    /// `sig * 2^exp`, `sig` non-zero.
    Finite {
        exp: i32,
        sig: u64,
    },
    Inf,
    QNan,
    SNan,
}

impl Class {
    fn is_nan(self) -> bool {
        matches!(self, Class::QNan | Class::SNan)
    }
}

fn unpack(fmt: Format, bits: u64) -> (bool, Class) {
    let bits = fmt.mask(bits);
    let sign = bits & fmt.sign_bit() != 0;
    let biased = (bits >> fmt.mbits) & fmt.exp_max();
    let frac = bits & fmt.frac_mask();
    let class = if biased == fmt.exp_max() {
        if frac == 0 {
            Class::Inf
        } else if frac >> (fmt.mbits - 1) != 0 {
            Class::QNan
        } else {
            Class::SNan
        }
    } else if biased == 0 {
        if frac == 0 {
            Class::Zero
        } else {
            Class::Finite { exp: 1 - fmt.bias() - fmt.mbits as i32, sig: frac }
        }
    } else {
        Class::Finite { exp: biased as i32 - fmt.bias() - fmt.mbits as i32, sig: frac | 1 << fmt.mbits }
    };
    (sign, class)
}

/// True for a signaling NaN encoding.
pub fn is_signaling(fmt: Format, bits: u64) -> bool {
    unpack(fmt, bits).1 == Class::SNan
}

/// True for any NaN encoding.
pub fn is_nan(fmt: Format, bits: u64) -> bool {
    unpack(fmt, bits).1.is_nan()
}

/// Drops the low `shift` bits (1..=129 meaningful; larger counts act as 129) of `sig` and rounds what is kept
/// in direction `rm` for a value of sign `sign`. Returns the rounded kept part and whether bits were lost.
fn round_shift(sig: u128, shift: u32, rm: Round, sign: bool) -> (u128, bool) {
    let (kept, half, sticky) = match shift {
        0 => return (sig, false),
        1..=127 => (sig >> shift, (sig >> (shift - 1)) & 1 != 0, sig & ((1u128 << (shift - 1)) - 1) != 0),
        128 => (0, sig >> 127 != 0, sig << 1 != 0),
        _ => (0, false, sig != 0),
    };
    let inexact = half || sticky;
    let up = match rm {
        Round::Rne => half && (sticky || kept & 1 != 0),
        Round::Rtz => false,
        Round::Rdn => sign && inexact,
        Round::Rup => !sign && inexact,
        Round::Rmm => half,
    };
    (kept + up as u128, inexact)
}

/// Rounds `(-1)^sign * sig * 2^exp` to `fmt` in direction `rm` and encodes it, accruing OF/UF/NX.
///
/// `sig` is the exact significand, or a truncated one whose least significant bit is ORed with a sticky bit for
/// a discarded non-zero remainder; in the latter case `sig` must have at least `mbits + 3` significant bits so
/// that the sticky bit lies below the rounding position.
fn round_pack(fmt: Format, sign: bool, exp: i32, sig: u128, rm: Round, flags: &mut u8) -> u64 {
    if sig == 0 {
        return fmt.zero(sign);
    }
    let lz = sig.leading_zeros();
    let sig = sig << lz;
    // Now value = sig * 2^(exp - lz) with sig in [2^127, 2^128): its binary exponent is exp - lz + 127.
    let precision = fmt.mbits + 1;
    let biased = exp - lz as i32 + 127 + fmt.bias();
    if biased >= 1 {
        let (mut m, inexact) = round_shift(sig, 128 - precision, rm, sign);
        let mut biased = biased;
        if m >> precision != 0 {
            m >>= 1;
            biased += 1;
        }
        if biased >= fmt.exp_max() as i32 {
            *flags |= flags::OF | flags::NX;
            let to_inf = match rm {
                Round::Rne | Round::Rmm => true,
                Round::Rtz => false,
                Round::Rdn => sign,
                Round::Rup => !sign,
            };
            return if to_inf { fmt.inf(sign) } else { fmt.max_finite(sign) };
        }
        if inexact {
            *flags |= flags::NX;
        }
        return fmt.signed(sign, (biased as u64) << fmt.mbits | (m as u64 & fmt.frac_mask()));
    }
    // Below the normal range before rounding. Tininess is judged after rounding: the value is tiny unless rounding
    // it to `precision` bits with an unbounded exponent reaches the smallest normal number.
    let tiny = biased < 0 || round_shift(sig, 128 - precision, rm, sign).0 >> precision == 0;
    let shift = (128 - precision as i32 + 1 - biased).min(129) as u32;
    // A carry into bit `mbits` turns the subnormal into the smallest normal, which encodes the same way.
    let (m, inexact) = round_shift(sig, shift, rm, sign);
    if inexact {
        *flags |= flags::NX;
        if tiny {
            *flags |= flags::UF;
        }
    }
    fmt.signed(sign, m as u64)
}

/// Exact signed sum of two non-zero finite values, rounded once.
#[allow(clippy::too_many_arguments)]
fn add_finite(
    fmt: Format,
    sign_a: bool,
    exp_a: i32,
    sig_a: u128,
    sign_b: bool,
    exp_b: i32,
    sig_b: u128,
    rm: Round,
    flags: &mut u8,
) -> u64 {
    // Normalize both significands to bit 125, leaving two bits of headroom for the carry of an addition.
    let norm = |exp: i32, sig: u128| {
        let shift = sig.leading_zeros() as i32 - 2;
        (exp - shift, sig << shift)
    };
    let (mut ea, mut ma) = norm(exp_a, sig_a);
    let (mut eb, mut mb) = norm(exp_b, sig_b);
    let (mut sa, mut sb) = (sign_a, sign_b);
    if (eb, mb) > (ea, ma) {
        core::mem::swap(&mut ea, &mut eb);
        core::mem::swap(&mut ma, &mut mb);
        core::mem::swap(&mut sa, &mut sb);
    }
    let distance = (ea - eb) as u32;
    // Alignment jams the shifted-out bits into a sticky bit: with the larger operand at bit 125 the rounding
    // position is far above bit 0 even after a one-bit cancellation, and a shift of at most one loses nothing.
    let mb = match distance {
        0 => mb,
        1..=126 => mb >> distance | (mb & ((1u128 << distance) - 1) != 0) as u128,
        _ => 1,
    };
    if sa == sb {
        round_pack(fmt, sa, ea, ma + mb, rm, flags)
    } else if ma == mb {
        // An exact zero sum of opposite-signed operands is +0, except -0 when rounding down.
        fmt.zero(rm == Round::Rdn)
    } else {
        round_pack(fmt, sa, ea, ma - mb, rm, flags)
    }
}

/// Common NaN rule: NV for any signaling operand, the canonical NaN if any operand is a NaN.
fn nan_result(fmt: Format, classes: &[Class], flags: &mut u8) -> Option<u64> {
    if classes.contains(&Class::SNan) {
        *flags |= flags::NV;
    }
    classes.iter().any(|c| c.is_nan()).then_some(fmt.canonical_nan())
}

fn invalid(fmt: Format, flags: &mut u8) -> u64 {
    *flags |= flags::NV;
    fmt.canonical_nan()
}

/// `a + b`.
pub fn add(fmt: Format, a: u64, b: u64, rm: Round, flags: &mut u8) -> u64 {
    let (sa, ca) = unpack(fmt, a);
    let (sb, cb) = unpack(fmt, b);
    if let Some(nan) = nan_result(fmt, &[ca, cb], flags) {
        return nan;
    }
    match (ca, cb) {
        (Class::Inf, Class::Inf) if sa != sb => invalid(fmt, flags),
        (Class::Inf, _) => fmt.inf(sa),
        (_, Class::Inf) => fmt.inf(sb),
        (Class::Zero, Class::Zero) => fmt.zero(if sa == sb { sa } else { rm == Round::Rdn }),
        (Class::Zero, _) => fmt.mask(b),
        (_, Class::Zero) => fmt.mask(a),
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            add_finite(fmt, sa, ea, ma as u128, sb, eb, mb as u128, rm, flags)
        }
        _ => fmt.canonical_nan(),
    }
}

/// `a - b`.
pub fn sub(fmt: Format, a: u64, b: u64, rm: Round, flags: &mut u8) -> u64 {
    add(fmt, a, b ^ fmt.sign_bit(), rm, flags)
}

/// `a * b`.
pub fn mul(fmt: Format, a: u64, b: u64, rm: Round, flags: &mut u8) -> u64 {
    let (sa, ca) = unpack(fmt, a);
    let (sb, cb) = unpack(fmt, b);
    if let Some(nan) = nan_result(fmt, &[ca, cb], flags) {
        return nan;
    }
    let sign = sa != sb;
    match (ca, cb) {
        (Class::Inf, Class::Zero) | (Class::Zero, Class::Inf) => invalid(fmt, flags),
        (Class::Inf, _) | (_, Class::Inf) => fmt.inf(sign),
        (Class::Zero, _) | (_, Class::Zero) => fmt.zero(sign),
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            round_pack(fmt, sign, ea + eb, ma as u128 * mb as u128, rm, flags)
        }
        _ => fmt.canonical_nan(),
    }
}

/// `a / b`.
pub fn div(fmt: Format, a: u64, b: u64, rm: Round, flags: &mut u8) -> u64 {
    let (sa, ca) = unpack(fmt, a);
    let (sb, cb) = unpack(fmt, b);
    if let Some(nan) = nan_result(fmt, &[ca, cb], flags) {
        return nan;
    }
    let sign = sa != sb;
    match (ca, cb) {
        (Class::Inf, Class::Inf) | (Class::Zero, Class::Zero) => invalid(fmt, flags),
        (Class::Inf, _) => fmt.inf(sign),
        (_, Class::Inf) | (Class::Zero, _) => fmt.zero(sign),
        (_, Class::Zero) => {
            *flags |= flags::DZ;
            fmt.inf(sign)
        }
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            // Dividend at bit 127, divisor at bit 63: the quotient has 64 or 65 bits, plenty for rounding.
            let na = (ma as u128).leading_zeros();
            let nb = mb.leading_zeros();
            let dividend = (ma as u128) << na;
            let divisor = (mb << nb) as u128;
            let quotient = dividend / divisor;
            let sticky = !dividend.is_multiple_of(divisor) as u128;
            let exp = ea - na as i32 - (eb - nb as i32) - 1;
            round_pack(fmt, sign, exp, quotient << 1 | sticky, rm, flags)
        }
        _ => fmt.canonical_nan(),
    }
}

/// The square root of `a`.
pub fn sqrt(fmt: Format, a: u64, rm: Round, flags: &mut u8) -> u64 {
    let (sign, class) = unpack(fmt, a);
    if let Some(nan) = nan_result(fmt, &[class], flags) {
        return nan;
    }
    match class {
        Class::Zero => fmt.zero(sign),
        _ if sign => invalid(fmt, flags),
        Class::Inf => fmt.inf(false),
        Class::Finite { exp, sig } => {
            // Scale to bit 126 or 127 with an even exponent; the integer root then has 64 bits.
            let mut shift = (sig as u128).leading_zeros() as i32;
            if (exp - shift) & 1 != 0 {
                shift -= 1;
            }
            let scaled = (sig as u128) << shift;
            let root = scaled.isqrt();
            let sticky = (root * root != scaled) as u128;
            round_pack(fmt, false, (exp - shift) / 2 - 1, root << 1 | sticky, rm, flags)
        }
        _ => fmt.canonical_nan(),
    }
}

/// Fused multiply-add `(±(a * b)) ± c` with a single rounding: `negate_product` and `negate_addend` select
/// FMADD (false, false), FMSUB (false, true), FNMSUB (true, false) and FNMADD (true, true).
#[allow(clippy::too_many_arguments)]
pub fn fma(
    fmt: Format,
    a: u64,
    b: u64,
    c: u64,
    negate_product: bool,
    negate_addend: bool,
    rm: Round,
    flags: &mut u8,
) -> u64 {
    let (sa, ca) = unpack(fmt, a);
    let (sb, cb) = unpack(fmt, b);
    let (sc, cc) = unpack(fmt, c);
    let sc = sc != negate_addend;
    let sp = (sa != sb) != negate_product;
    if matches!((ca, cb), (Class::Inf, Class::Zero) | (Class::Zero, Class::Inf)) {
        // RISC-V: invalid even when the addend is a quiet NaN.
        return invalid(fmt, flags);
    }
    if let Some(nan) = nan_result(fmt, &[ca, cb, cc], flags) {
        return nan;
    }
    let product_inf = ca == Class::Inf || cb == Class::Inf;
    let product_zero = ca == Class::Zero || cb == Class::Zero;
    match cc {
        _ if product_inf => {
            if cc == Class::Inf && sc != sp {
                invalid(fmt, flags)
            } else {
                fmt.inf(sp)
            }
        }
        Class::Inf => fmt.inf(sc),
        Class::Zero if product_zero => fmt.zero(if sp == sc { sp } else { rm == Round::Rdn }),
        _ if product_zero => fmt.signed(sc, fmt.mask(c) & !fmt.sign_bit()),
        _ => {
            let (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) = (ca, cb) else {
                return fmt.canonical_nan();
            };
            let (pe, pm) = (ea + eb, ma as u128 * mb as u128);
            match cc {
                Class::Finite { exp: ec, sig: mc } => add_finite(fmt, sp, pe, pm, sc, ec, mc as u128, rm, flags),
                _ => round_pack(fmt, sp, pe, pm, rm, flags),
            }
        }
    }
}

/// Compares two non-NaN values (`+0 == -0`).
fn compare(fmt: Format, a: u64, b: u64) -> Ordering {
    let key = |bits: u64| {
        let magnitude = (fmt.mask(bits) & !fmt.sign_bit()) as i64;
        if bits & fmt.sign_bit() != 0 {
            -magnitude
        } else {
            magnitude
        }
    };
    key(a).cmp(&key(b))
}

/// FEQ: quiet comparison, NV only for a signaling NaN operand.
pub fn eq(fmt: Format, a: u64, b: u64, flags: &mut u8) -> bool {
    let (ca, cb) = (unpack(fmt, a).1, unpack(fmt, b).1);
    if nan_result(fmt, &[ca, cb], flags).is_some() {
        return false;
    }
    compare(fmt, a, b) == Ordering::Equal
}

/// FLT (`or_equal` false) and FLE (`or_equal` true): signaling comparisons, NV for any NaN operand.
pub fn lt(fmt: Format, a: u64, b: u64, or_equal: bool, flags: &mut u8) -> bool {
    if is_nan(fmt, a) || is_nan(fmt, b) {
        *flags |= flags::NV;
        return false;
    }
    match compare(fmt, a, b) {
        Ordering::Less => true,
        Ordering::Equal => or_equal,
        Ordering::Greater => false,
    }
}

/// FMIN / FMAX: IEEE 754-2019 minimumNumber / maximumNumber, with -0 < +0, a single NaN operand ignored, the
/// canonical NaN for two NaNs, and NV for any signaling NaN operand.
pub fn min_max(fmt: Format, a: u64, b: u64, max: bool, flags: &mut u8) -> u64 {
    let (a, b) = (fmt.mask(a), fmt.mask(b));
    let (ca, cb) = (unpack(fmt, a).1, unpack(fmt, b).1);
    if ca == Class::SNan || cb == Class::SNan {
        *flags |= flags::NV;
    }
    match (ca.is_nan(), cb.is_nan()) {
        (true, true) => return fmt.canonical_nan(),
        (true, false) => return b,
        (false, true) => return a,
        (false, false) => {}
    }
    // Total order on non-NaN encodings that puts -0 below +0.
    let key = |bits: u64| {
        let magnitude = (bits & !fmt.sign_bit()) as i64;
        if bits & fmt.sign_bit() != 0 {
            -magnitude - 1
        } else {
            magnitude
        }
    };
    if (key(a) < key(b)) != max {
        a
    } else {
        b
    }
}

/// FCLASS: the 10-bit mask with exactly one bit set (bit 0 = -inf ... bit 7 = +inf, bit 8 = sNaN, bit 9 = qNaN).
pub fn classify(fmt: Format, a: u64) -> u64 {
    let (sign, class) = unpack(fmt, a);
    let subnormal = (fmt.mask(a) >> fmt.mbits) & fmt.exp_max() == 0;
    let bit = match (class, sign) {
        (Class::Inf, true) => 0,
        (Class::Finite { .. }, true) if !subnormal => 1,
        (Class::Finite { .. }, true) => 2,
        (Class::Zero, true) => 3,
        (Class::Zero, false) => 4,
        (Class::Finite { .. }, false) if subnormal => 5,
        (Class::Finite { .. }, false) => 6,
        (Class::Inf, false) => 7,
        (Class::SNan, _) => 8,
        (Class::QNan, _) => 9,
    };
    1 << bit
}

/// The integer type of a conversion: 32 or 64 bits, signed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntKind {
    pub signed: bool,
    pub bits64: bool,
}

impl IntKind {
    fn range(self) -> (i128, i128) {
        match (self.signed, self.bits64) {
            (true, false) => (i32::MIN as i128, i32::MAX as i128),
            (false, false) => (0, u32::MAX as i128),
            (true, true) => (i64::MIN as i128, i64::MAX as i128),
            (false, true) => (0, u64::MAX as i128),
        }
    }

    /// The integer register value: 32-bit results (signed or not) are sign-extended from bit 31.
    fn register(self, value: i128) -> u64 {
        if self.bits64 {
            value as u64
        } else {
            value as u32 as i32 as i64 as u64
        }
    }
}

/// FCVT.{W,WU,L,LU}.fmt: rounds `a` to an integer; NaN gives the largest value, out-of-range values and infinities
/// saturate, both with NV only (no NX); an in-range inexact result sets NX. Returns the integer register value.
pub fn to_int(fmt: Format, a: u64, int: IntKind, rm: Round, flags: &mut u8) -> u64 {
    let (min, max) = int.range();
    let (sign, class) = unpack(fmt, a);
    let saturated = |flags: &mut u8, negative: bool| {
        *flags |= flags::NV;
        int.register(if negative { min } else { max })
    };
    match class {
        Class::QNan | Class::SNan => saturated(flags, false),
        Class::Inf => saturated(flags, sign),
        Class::Zero => 0,
        Class::Finite { exp, sig } => {
            let (magnitude, inexact) = if exp >= 0 {
                if exp > 64 {
                    return saturated(flags, sign);
                }
                ((sig as u128) << exp, false)
            } else {
                round_shift(sig as u128, exp.unsigned_abs().min(129), rm, sign)
            };
            let value = if sign { -(magnitude as i128) } else { magnitude as i128 };
            if value < min || value > max {
                return saturated(flags, value < min);
            }
            if inexact {
                *flags |= flags::NX;
            }
            int.register(value)
        }
    }
}

/// FCVT.fmt.{W,WU,L,LU}: converts the integer register value `x` (its low 32 bits for W/WU) to `fmt`.
pub fn from_int(fmt: Format, x: u64, int: IntKind, rm: Round, flags: &mut u8) -> u64 {
    let value: i128 = match (int.signed, int.bits64) {
        (true, false) => x as i32 as i128,
        (false, false) => x as u32 as i128,
        (true, true) => x as i64 as i128,
        (false, true) => x as i128,
    };
    round_pack(fmt, value < 0, 0, value.unsigned_abs(), rm, flags)
}

/// FCVT.S.D / FCVT.D.S: converts between formats (narrowing rounds, widening is exact).
pub fn convert(from: Format, to: Format, a: u64, rm: Round, flags: &mut u8) -> u64 {
    let (sign, class) = unpack(from, a);
    if let Some(nan) = nan_result(to, &[class], flags) {
        return nan;
    }
    match class {
        Class::Zero => to.zero(sign),
        Class::Inf => to.inf(sign),
        Class::Finite { exp, sig } => round_pack(to, sign, exp, sig as u128, rm, flags),
        _ => to.canonical_nan(),
    }
}
