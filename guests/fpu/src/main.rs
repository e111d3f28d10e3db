//! `fpu`: F and D rounding, exception flags and corner cases, run with the exact instructions through `asm!`.
//! Expected bit patterns were worked out by hand and with exact rational arithmetic (Python `fractions`) on the
//! host, never by running an emulator; each constant says how. Checks, one `ok:`/`FAIL:` line each: 1/3 in all
//! five rounding modes, static and dynamic (`frm`); 2^24+1 to single; 0.1+0.2 in double; division by zero; 0/0
//! and sqrt(-1) (canonical NaN, NV); overflow per mode; underflow with tininess detected after rounding;
//! conversions of NaN and out-of-range values to integers; fmin/fmax on signed zeros and NaNs; fclass of every
//! class; NaN boxing (loads, improperly boxed inputs); fused vs separate multiply-add; quiet vs signalling
//! compares; accrued flags and `fcsr`; reserved rounding modes (static and dynamic) and `mstatus.FS` = Off raising
//! illegal instruction; FS becoming Dirty. Ends with `fpu: all N checks passed` (exit 0) or a failure count
//! (exit 1).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use rt::addr;
use rt::checks::{self, check};
use rt::trap::{self, TrapFrame};
use rt::{csr_clear, csr_read, csr_set, println};

// fflags bits (F extension, "Accrued exception flags").
const NV: u64 = 0x10;
const DZ: u64 = 0x08;
const OF: u64 = 0x04;
const UF: u64 = 0x02;
const NX: u64 = 0x01;

// Single-precision constants (IEEE-754 binary32 encodings, sign | 8-bit exponent | 23-bit fraction).
const S_ONE: u32 = 0x3f80_0000; // 1.0: exponent 127
const S_MONE: u32 = 0xbf80_0000; // -1.0
const S_TWO: u32 = 0x4000_0000; // 2.0: exponent 128
const S_THREE: u32 = 0x4040_0000; // 3.0 = 1.5 * 2
const S_ZERO: u32 = 0x0000_0000;
const S_NZERO: u32 = 0x8000_0000;
const S_INF: u32 = 0x7f80_0000;
const S_NINF: u32 = 0xff80_0000;
const S_QNAN: u32 = 0x7fc0_0000; // the canonical NaN: quiet bit only
const S_SNAN: u32 = 0x7f80_0001; // quiet bit clear, fraction nonzero
const S_MAX: u32 = 0x7f7f_ffff; // FLT_MAX: largest exponent 254, all-ones fraction
const S_NMAX: u32 = 0xff7f_ffff;
const S_MIN_SUB: u32 = 0x0000_0001; // 2^-149
const S_MIN_NORMAL: u32 = 0x0080_0000; // 2^-126
const S_MAX_SUB: u32 = 0x007f_ffff; // 2^-126 - 2^-149
const S_ONE_HALF: u32 = 0x3fc0_0000; // 1.5
const S_MONE_HALF: u32 = 0xbfc0_0000; // -1.5

// Double-precision constants.
const D_MONE: u64 = 0xbff0_0000_0000_0000;
const D_TWO: u64 = 0x4000_0000_0000_0000;
const D_ZERO: u64 = 0;
const D_NINF: u64 = 0xfff0_0000_0000_0000;
const D_QNAN: u64 = 0x7ff8_0000_0000_0000; // the canonical NaN
/// 0.1 rounded to nearest: 0x3fb999999999999a (the decimal literal's double).
const D_TENTH: u64 = 0x3fb9_9999_9999_999a;
/// 0.2 rounded to nearest: same fraction, exponent + 1.
const D_FIFTH: u64 = 0x3fc9_9999_9999_999a;

/// A single in an f register, NaN-boxed (upper 32 bits all ones).
const fn boxed(s: u32) -> u64 {
    0xffff_ffff_0000_0000 | s as u64
}

/// What one FP instruction sequence left: ft2 (raw 64 bits), t0 (integer results), fflags.
#[derive(Debug, Clone, Copy)]
struct Out {
    f: u64,
    x: u64,
    flags: u64,
}

/// Runs `$insn` with ft0, ft1, ft3 = the raw 64-bit values `$a`, `$b`, `$c` (ft2 and t0 start at 0, fflags
/// cleared; t1 is free) and returns ft2, t0 and fflags. With `frm = $m`, `frm` is set first (and reset after).
macro_rules! fp {
    ($insn:literal, $a:expr, $b:expr, $c:expr) => {
        fp!($insn, $a, $b, $c, frm = 0u64)
    };
    ($insn:literal, $a:expr, $b:expr, $c:expr, frm = $m:expr) => {{
        let (f, x, flags): (u64, u64, u64);
        let (a, b, c, m): (u64, u64, u64, u64) = ($a, $b, $c, $m);
        // SAFETY: FP register and fflags/frm work only; t0, t1 and the f registers used are declared clobbered.
        unsafe {
            asm!(
                "fmv.d.x ft0, {a}",
                "fmv.d.x ft1, {b}",
                "fmv.d.x ft3, {c}",
                "fmv.d.x ft2, zero",
                "li t0, 0",
                "csrw frm, {m}",
                "csrwi fflags, 0",
                $insn,
                "csrr {flags}, fflags",
                "csrwi frm, 0",
                "fmv.x.d {f}, ft2",
                "mv {x}, t0",
                a = in(reg) a,
                b = in(reg) b,
                c = in(reg) c,
                m = in(reg) m,
                f = out(reg) f,
                x = out(reg) x,
                flags = out(reg) flags,
                out("t0") _,
                out("t1") _,
                out("ft0") _,
                out("ft1") _,
                out("ft2") _,
                out("ft3") _,
                options(nostack),
            )
        };
        Out { f, x, flags }
    }};
}

/// A single result: ft2 must hold `want`, NaN-boxed, and fflags must be `flags`.
fn want_s(name: impl core::fmt::Display, o: Out, want: u32, flags: u64) {
    check(
        name,
        o.f == boxed(want) && o.flags == flags,
        format_args!("got {:#x} flags {:#x}, want {:#x} flags {flags:#x}", o.f, o.flags, boxed(want)),
    );
}

/// A double result in ft2.
fn want_d(name: impl core::fmt::Display, o: Out, want: u64, flags: u64) {
    check(
        name,
        o.f == want && o.flags == flags,
        format_args!("got {:#x} flags {:#x}, want {want:#x} flags {flags:#x}", o.f, o.flags),
    );
}

/// An integer result in t0.
fn want_x(name: impl core::fmt::Display, o: Out, want: u64, flags: u64) {
    check(
        name,
        o.x == want && o.flags == flags,
        format_args!("got {:#x} flags {:#x}, want {want:#x} flags {flags:#x}", o.x, o.flags),
    );
}

/// Rounding-mode encodings (F extension, Table "Rounding mode encoding").
const RNE: u64 = 0;
const RTZ: u64 = 1;
const RDN: u64 = 2;
const RUP: u64 = 3;
const RMM: u64 = 4;
const MODES: [(&str, u64); 5] = [("RNE", RNE), ("RTZ", RTZ), ("RDN", RDN), ("RUP", RUP), ("RMM", RMM)];

/// 1/3 = 0x3eaaaaaa.aaa... in binary32 units: the 24-bit significand 0xaaaaaa (0.0101...b) is followed by
/// 1010..., i.e. more than half an ulp. So RNE, RUP, RMM round up to 0x3eaaaaab; RTZ, RDN truncate to 0x3eaaaaaa.
/// For -1/3 the directed modes swap: RDN (toward -inf) rounds the magnitude up, RUP truncates.
const THIRD: [(u32, u32); 5] = [
    (0x3eaa_aaab, 0xbeaa_aaab), // RNE
    (0x3eaa_aaaa, 0xbeaa_aaaa), // RTZ
    (0x3eaa_aaaa, 0xbeaa_aaab), // RDN
    (0x3eaa_aaab, 0xbeaa_aaaa), // RUP
    (0x3eaa_aaab, 0xbeaa_aaab), // RMM
];

/// 2^24 + 1 needs 25 significant bits: exactly half-way between 2^24 (0x4b800000) and 2^24 + 2 (0x4b800001).
/// RNE picks the even significand (2^24), RMM rounds away (2^24 + 2), RUP up, RTZ and RDN down.
const TWO24P1: [u32; 5] = [0x4b80_0000, 0x4b80_0000, 0x4b80_0000, 0x4b80_0001, 0x4b80_0001];

/// 0.1 + 0.2 (both the nearest doubles) = 0x3fd3333333333333.4 in ulps of the result's binade, plus the bits shifted
/// out: exactly 0x3fd3333333333333 + 0.75 ulp (by exact rational arithmetic), so RNE, RUP and RMM give ...334 and
/// RTZ, RDN give ...333.
const TENTH_PLUS_FIFTH: [u64; 5] =
    [0x3fd3_3333_3333_3334, 0x3fd3_3333_3333_3333, 0x3fd3_3333_3333_3333, 0x3fd3_3333_3333_3334, 0x3fd3_3333_3333_3334];

fn check_rounding_modes() {
    let (one, mone, three) = (boxed(S_ONE), boxed(S_MONE), boxed(S_THREE));
    let outs = [
        (fp!("fdiv.s ft2, ft0, ft1, rne", one, three, 0), fp!("fdiv.s ft2, ft0, ft1, rne", mone, three, 0)),
        (fp!("fdiv.s ft2, ft0, ft1, rtz", one, three, 0), fp!("fdiv.s ft2, ft0, ft1, rtz", mone, three, 0)),
        (fp!("fdiv.s ft2, ft0, ft1, rdn", one, three, 0), fp!("fdiv.s ft2, ft0, ft1, rdn", mone, three, 0)),
        (fp!("fdiv.s ft2, ft0, ft1, rup", one, three, 0), fp!("fdiv.s ft2, ft0, ft1, rup", mone, three, 0)),
        (fp!("fdiv.s ft2, ft0, ft1, rmm", one, three, 0), fp!("fdiv.s ft2, ft0, ft1, rmm", mone, three, 0)),
    ];
    for (((name, _), (pos, neg)), (want_pos, want_neg)) in MODES.iter().zip(outs).zip(THIRD) {
        check(
            format_args!("fdiv.s +-1/3, static rm {name}"),
            pos.f == boxed(want_pos) && neg.f == boxed(want_neg) && pos.flags == NX && neg.flags == NX,
            format_args!("got {pos:x?} / {neg:x?}, want {want_pos:#x} / {want_neg:#x} with NX"),
        );
    }
    for ((name, mode), (want_pos, want_neg)) in MODES.iter().zip(THIRD) {
        let pos = fp!("fdiv.s ft2, ft0, ft1, dyn", one, three, 0, frm = *mode);
        let neg = fp!("fdiv.s ft2, ft0, ft1, dyn", mone, three, 0, frm = *mode);
        check(
            format_args!("fdiv.s +-1/3, dynamic rm from frm = {name}"),
            pos.f == boxed(want_pos) && neg.f == boxed(want_neg) && pos.flags == NX && neg.flags == NX,
            format_args!("got {pos:x?} / {neg:x?}, want {want_pos:#x} / {want_neg:#x} with NX"),
        );
    }
    for ((name, mode), want) in MODES.iter().zip(TWO24P1) {
        let o = fp!("li t1, 0x1000001\nfcvt.s.w ft2, t1, dyn", 0, 0, 0, frm = *mode);
        want_s(format_args!("fcvt.s.w 2^24+1 (a tie), dynamic rm {name}"), o, want, NX);
    }
    let o = fp!("li t1, 0x1000001\nfcvt.s.l ft2, t1, rmm", 0, 0, 0);
    want_s("fcvt.s.l 2^24+1 static RMM rounds the tie away: 2^24+2", o, TWO24P1[4], NX);
    let o = fp!("li t1, 0x1000002\nfcvt.s.w ft2, t1, rne", 0, 0, 0);
    want_s("fcvt.s.w 2^24+2 is exact: no flags", o, 0x4b80_0001, 0);
    for ((name, mode), want) in MODES.iter().zip(TENTH_PLUS_FIFTH) {
        let o = fp!("fadd.d ft2, ft0, ft1, dyn", D_TENTH, D_FIFTH, 0, frm = *mode);
        want_d(format_args!("fadd.d 0.1+0.2, dynamic rm {name}"), o, want, NX);
    }
    let o = fp!("fadd.d ft2, ft0, ft1, rtz", D_TENTH, D_FIFTH, 0);
    want_d("fadd.d 0.1+0.2 static RTZ", o, TENTH_PLUS_FIFTH[1], NX);
}

fn check_special_results() {
    let o = fp!("fdiv.s ft2, ft0, ft1, rne", boxed(S_ONE), boxed(S_ZERO), 0);
    want_s("fdiv.s 1/0 = +inf with DZ", o, S_INF, DZ);
    let o = fp!("fdiv.d ft2, ft0, ft1, rne", D_MONE, D_ZERO, 0);
    want_d("fdiv.d -1/0 = -inf with DZ", o, D_NINF, DZ);
    let o = fp!("fdiv.d ft2, ft0, ft1, rne", D_ZERO, D_ZERO, 0);
    want_d("fdiv.d 0/0 = canonical NaN 0x7ff8000000000000 with NV", o, D_QNAN, NV);
    let o = fp!("fsqrt.s ft2, ft0, rne", boxed(S_MONE), 0, 0);
    want_s("fsqrt.s -1 = canonical NaN 0x7fc00000 with NV", o, S_QNAN, NV);
    let o = fp!("fsqrt.d ft2, ft0, rne", D_MONE, 0, 0);
    want_d("fsqrt.d -1 = canonical NaN with NV", o, D_QNAN, NV);
    let o = fp!("fsqrt.s ft2, ft0, rne", boxed(S_NZERO), 0, 0);
    want_s("fsqrt.s -0 = -0, no flags", o, S_NZERO, 0);
    let o = fp!("fadd.s ft2, ft0, ft1, rne", boxed(S_INF), boxed(S_NINF), 0);
    want_s("fadd.s inf + -inf = canonical NaN with NV", o, S_QNAN, NV);
    let o = fp!("fadd.s ft2, ft0, ft1, rne", boxed(S_SNAN), boxed(S_ONE), 0);
    want_s("fadd.s sNaN + 1 = canonical NaN with NV (payload not propagated)", o, S_QNAN, NV);

    // Overflow: FLT_MAX * 2 is beyond the largest finite value. IEEE 754 section 7.4: RNE and RMM give inf, RTZ
    // gives FLT_MAX, RDN gives FLT_MAX for a positive result and RUP gives +inf; OF and NX in every case.
    let (max, two) = (boxed(S_MAX), boxed(S_TWO));
    want_s("fmul.s FLT_MAX*2 RNE = +inf, OF|NX", fp!("fmul.s ft2, ft0, ft1, rne", max, two, 0), S_INF, OF | NX);
    want_s("fmul.s FLT_MAX*2 RTZ = FLT_MAX, OF|NX", fp!("fmul.s ft2, ft0, ft1, rtz", max, two, 0), S_MAX, OF | NX);
    want_s("fmul.s FLT_MAX*2 RDN = FLT_MAX, OF|NX", fp!("fmul.s ft2, ft0, ft1, rdn", max, two, 0), S_MAX, OF | NX);
    want_s("fmul.s FLT_MAX*2 RUP = +inf, OF|NX", fp!("fmul.s ft2, ft0, ft1, rup", max, two, 0), S_INF, OF | NX);
    want_s("fmul.s FLT_MAX*2 RMM = +inf, OF|NX", fp!("fmul.s ft2, ft0, ft1, rmm", max, two, 0), S_INF, OF | NX);
    let nmax = boxed(S_NMAX);
    want_s("fmul.s -FLT_MAX*2 RDN = -inf", fp!("fmul.s ft2, ft0, ft1, rdn", nmax, two, 0), S_NINF, OF | NX);
    want_s("fmul.s -FLT_MAX*2 RUP = -FLT_MAX", fp!("fmul.s ft2, ft0, ft1, rup", nmax, two, 0), S_NMAX, OF | NX);

    // Underflow. RISC-V detects tininess after rounding (F extension, "Accrued exception flags").
    // X = 2^-126 * (1 - 2^-25), exact in double: exponent -127 (0x380), fraction 24 ones then zeros:
    // 0x380ffffff0000000. Rounded to 24 bits with an unbounded exponent, X is a tie between 1 - 2^-24 and 1.0
    // (times 2^-126); RNE picks 1.0, so the rounded value is 2^-126, not tiny: NX only, result 0x00800000. RTZ
    // gives (1 - 2^-24) * 2^-126 < 2^-126: tiny and inexact, UF|NX, result the largest subnormal 0x007fffff.
    const X: u64 = 0x380f_ffff_f000_0000;
    let o = fp!("fcvt.s.d ft2, ft0, rne", X, 0, 0);
    want_s("fcvt.s.d just below 2^-126 RNE: rounds to 2^-126, not tiny after rounding (NX only)", o, S_MIN_NORMAL, NX);
    let o = fp!("fcvt.s.d ft2, ft0, rtz", X, 0, 0);
    want_s("fcvt.s.d just below 2^-126 RTZ: largest subnormal, UF|NX", o, S_MAX_SUB, UF | NX);
    // 2^-149 / 2 = 2^-150, half-way between 0 and 2^-149: RNE gives +0 (even), RUP gives 2^-149; UF|NX both.
    let (min_sub, two) = (boxed(S_MIN_SUB), boxed(S_TWO));
    let o = fp!("fdiv.s ft2, ft0, ft1, rne", min_sub, two, 0);
    want_s("fdiv.s 2^-149/2 RNE = +0, UF|NX", o, S_ZERO, UF | NX);
    let o = fp!("fdiv.s ft2, ft0, ft1, rup", min_sub, two, 0);
    want_s("fdiv.s 2^-149/2 RUP = 2^-149, UF|NX", o, S_MIN_SUB, UF | NX);
    let o = fp!("fmul.s ft2, ft0, ft1, rne", min_sub, boxed(S_ONE), 0);
    want_s("fmul.s 2^-149*1 is exact: subnormal but no UF", o, S_MIN_SUB, 0);
}

fn check_conversions() {
    let o = fp!("fcvt.w.s t0, ft0, rtz", boxed(S_QNAN), 0, 0);
    want_x("fcvt.w.s NaN = 0x7fffffff with NV", o, 0x7fff_ffff, NV);
    let o = fp!("fcvt.w.s t0, ft0, rtz", boxed(S_NINF), 0, 0);
    want_x("fcvt.w.s -inf = -2^31 (sign-extended) with NV", o, 0xffff_ffff_8000_0000, NV);
    let o = fp!("fcvt.wu.d t0, ft0, rtz", D_MONE, 0, 0);
    want_x("fcvt.wu.d -1.0 = 0 with NV", o, 0, NV);
    let o = fp!("fcvt.wu.s t0, ft0, rtz", boxed(S_QNAN), 0, 0);
    want_x("fcvt.wu.s NaN = 2^32-1 (sign-extended to all ones) with NV", o, u64::MAX, NV);
    let o = fp!("fcvt.l.d t0, ft0, rtz", D_QNAN, 0, 0);
    want_x("fcvt.l.d NaN = 2^63-1 with NV", o, 0x7fff_ffff_ffff_ffff, NV);
    let o = fp!("fcvt.w.s t0, ft0, rne", boxed(S_ONE_HALF), 0, 0);
    want_x("fcvt.w.s 1.5 RNE = 2 (tie to even), NX", o, 2, NX);
    let o = fp!("fcvt.w.s t0, ft0, rtz", boxed(S_MONE_HALF), 0, 0);
    want_x("fcvt.w.s -1.5 RTZ = -1, NX", o, u64::MAX, NX);
    let o = fp!("fcvt.w.s t0, ft0, rdn", boxed(S_MONE_HALF), 0, 0);
    want_x("fcvt.w.s -1.5 RDN = -2, NX", o, (-2i64) as u64, NX);
    let o = fp!("fcvt.d.s ft2, ft0", boxed(S_SNAN), 0, 0);
    want_d("fcvt.d.s sNaN = canonical double NaN with NV", o, D_QNAN, NV);
}

fn check_min_max() {
    let (nz, z) = (boxed(S_NZERO), boxed(S_ZERO));
    let a = fp!("fmin.s ft2, ft0, ft1", nz, z, 0);
    let b = fp!("fmin.s ft2, ft0, ft1", z, nz, 0);
    check(
        "fmin.s(-0, +0) = fmin.s(+0, -0) = -0",
        a.f == boxed(S_NZERO) && b.f == boxed(S_NZERO) && a.flags == 0 && b.flags == 0,
        format_args!("{a:x?} {b:x?}"),
    );
    let a = fp!("fmax.s ft2, ft0, ft1", nz, z, 0);
    let b = fp!("fmax.s ft2, ft0, ft1", z, nz, 0);
    check(
        "fmax.s(-0, +0) = fmax.s(+0, -0) = +0",
        a.f == boxed(S_ZERO) && b.f == boxed(S_ZERO) && a.flags == 0 && b.flags == 0,
        format_args!("{a:x?} {b:x?}"),
    );
    let o = fp!("fmin.s ft2, ft0, ft1", boxed(S_SNAN), boxed(S_ONE), 0);
    want_s("fmin.s(sNaN, 1) = 1 with NV", o, S_ONE, NV);
    let o = fp!("fmax.s ft2, ft0, ft1", boxed(S_QNAN), boxed(S_QNAN), 0);
    want_s("fmax.s(qNaN, qNaN) = canonical NaN, no flags", o, S_QNAN, 0);
    let o = fp!("fmax.s ft2, ft0, ft1", boxed(S_SNAN), boxed(S_SNAN), 0);
    want_s("fmax.s(sNaN, sNaN) = canonical NaN with NV", o, S_QNAN, NV);
    let o = fp!("fmin.d ft2, ft0, ft1", D_QNAN, D_TWO, 0);
    want_d("fmin.d(qNaN, 2) = 2, no flags", o, D_TWO, 0);
}

fn check_classify() {
    // fclass bit i: 0 -inf, 1 negative normal, 2 negative subnormal, 3 -0, 4 +0, 5 positive subnormal,
    // 6 positive normal, 7 +inf, 8 signalling NaN, 9 quiet NaN.
    let cases: [u32; 10] = [S_NINF, S_MONE, 0x8000_0001, S_NZERO, S_ZERO, S_MIN_SUB, S_ONE, S_INF, S_SNAN, S_QNAN];
    let mut got = [0u64; 10];
    let mut flags = 0;
    for (g, v) in got.iter_mut().zip(cases) {
        let o = fp!("fclass.s t0, ft0", boxed(v), 0, 0);
        *g = o.x;
        flags |= o.flags;
    }
    check(
        "fclass.s of each of the ten classes sets exactly bit 0..9, no flags",
        got.iter().enumerate().all(|(i, g)| *g == 1 << i) && flags == 0,
        format_args!("got {got:x?}, flags {flags:#x}"),
    );
    let cases: [u64; 4] = [D_NINF, 0x0000_0000_0000_0001, D_QNAN, 0x7ff0_0000_0000_0001];
    let want: [u64; 4] = [1 << 0, 1 << 5, 1 << 9, 1 << 8];
    let mut got = [0u64; 4];
    for (g, v) in got.iter_mut().zip(cases) {
        *g = fp!("fclass.d t0, ft0", v, 0, 0).x;
    }
    check("fclass.d of -inf, +subnormal, qNaN, sNaN", got == want, format_args!("got {got:x?}, want {want:x?}"));
}

#[repr(C, align(8))]
struct Mem([u32; 2]);
static MEM: Mem = Mem([S_ONE, 0]);

fn check_nan_boxing() {
    let o = fp!("fmv.x.d t1, ft0\nflw ft2, 0(t1)", &MEM as *const Mem as u64, 0, 0);
    want_d("flw of 1.0 then fmv.x.d: upper 32 bits all ones (NaN-boxed)", o, boxed(S_ONE), 0);
    let o = fp!("li t1, 0x40000000\nfmv.w.x ft2, t1", 0, 0, 0);
    want_d("fmv.w.x NaN-boxes", o, boxed(S_TWO), 0);
    let o = fp!("fadd.s ft2, ft0, ft1, rne", boxed(S_ONE), boxed(S_TWO), 0);
    want_d("fadd.s result is NaN-boxed", o, boxed(S_THREE), 0);
    // 0x000000003f800000 is not a valid boxed single: single-precision operations see the canonical NaN.
    let o = fp!("fadd.s ft2, ft0, ft1, rne", S_ONE as u64, boxed(S_ONE), 0);
    want_s("improperly boxed single in fadd.s reads as canonical NaN (no NV: it is quiet)", o, S_QNAN, 0);
    let o = fp!("fmv.x.w t0, ft0", S_ONE as u64, 0, 0);
    want_x("fmv.x.w moves the low 32 bits of an improperly boxed value unchanged", o, S_ONE as u64, 0);
    let o = fp!("fcvt.d.s ft2, ft0", 0x7ff0_0000_3f80_0000, 0, 0);
    want_d("fcvt.d.s of an improperly boxed single = canonical double NaN", o, D_QNAN, 0);
}

fn check_fused() {
    // a = 1 + 2^-12 (0x3f800800); a*a = 1 + 2^-11 + 2^-24 exactly. fmadd.s a*a - 1 rounds once:
    // 2^-11 + 2^-24 = 2^-11 * (1 + 2^-13) is exact in binary32: exponent 127-11=116 (0x3a0...), fraction bit
    // 23-13=10 -> 0x3a000400, no flags. fmul.s a*a first rounds 1 + 2^-11 + 2^-24: the 2^-24 is half an ulp of 1.0
    // and the significand of 1 + 2^-11 is even, so it gives 1 + 2^-11 (NX); minus 1 = 2^-11 = 0x3a000000.
    let (a, m1) = (boxed(0x3f80_0800), boxed(S_MONE));
    let o = fp!("fmadd.s ft2, ft0, ft1, ft3, rne", a, a, m1);
    want_s("fmadd.s (1+2^-12)^2 - 1: single rounding, exact 0x3a000400", o, 0x3a00_0400, 0);
    let o = fp!("fmul.s ft2, ft0, ft1, rne\nfadd.s ft2, ft2, ft3, rne", a, a, m1);
    want_s("fmul.s then fadd.s: double rounding gives 0x3a000000, NX", o, 0x3a00_0000, NX);
    let o = fp!("fnmsub.s ft2, ft0, ft1, ft3, rne", a, a, boxed(S_ONE));
    want_s("fnmsub.s -(a*a) + 1 = -(2^-11 + 2^-24) exactly", o, 0xba00_0400, 0);
}

fn check_compares() {
    let (q, s, one) = (boxed(S_QNAN), boxed(S_SNAN), boxed(S_ONE));
    want_x("feq.s(qNaN, 1) = 0, no flags (quiet compare)", fp!("feq.s t0, ft0, ft1", q, one, 0), 0, 0);
    want_x("flt.s(qNaN, 1) = 0 with NV (signalling compare)", fp!("flt.s t0, ft0, ft1", q, one, 0), 0, NV);
    want_x("fle.s(1, qNaN) = 0 with NV", fp!("fle.s t0, ft0, ft1", one, q, 0), 0, NV);
    want_x("feq.s(sNaN, 1) = 0 with NV", fp!("feq.s t0, ft0, ft1", s, one, 0), 0, NV);
    let (nz, z) = (boxed(S_NZERO), boxed(S_ZERO));
    want_x("feq.s(-0, +0) = 1", fp!("feq.s t0, ft0, ft1", nz, z, 0), 1, 0);
    want_x("flt.s(-0, +0) = 0", fp!("flt.s t0, ft0, ft1", nz, z, 0), 0, 0);
    want_x("feq.d(qNaN, qNaN) = 0, no flags", fp!("feq.d t0, ft0, ft1", D_QNAN, D_QNAN, 0), 0, 0);
}

fn check_accrued_flags() {
    let (one, three, zero) = (boxed(S_ONE), boxed(S_THREE), boxed(S_ZERO));
    let (f1, f2, f3, old, after): (u64, u64, u64, u64, u64);
    // SAFETY: FP registers and fflags only; the clobbers are declared.
    unsafe {
        asm!(
            "fmv.d.x ft0, {one}",
            "fmv.d.x ft1, {three}",
            "fmv.d.x ft3, {zero}",
            "csrwi fflags, 0",
            "fdiv.s ft2, ft0, ft1, rne", // 1/3: NX
            "csrr {f1}, fflags",
            "fdiv.s ft2, ft0, ft3, rne", // 1/0: DZ
            "csrr {f2}, fflags",
            "fmul.s ft2, ft0, ft0, rne", // 1*1: exact, raises nothing, clears nothing
            "csrr {f3}, fflags",
            "fsflags {old}, zero",
            "csrr {after}, fflags",
            one = in(reg) one,
            three = in(reg) three,
            zero = in(reg) zero,
            f1 = out(reg) f1,
            f2 = out(reg) f2,
            f3 = out(reg) f3,
            old = out(reg) old,
            after = out(reg) after,
            out("ft0") _,
            out("ft1") _,
            out("ft2") _,
            out("ft3") _,
            options(nostack),
        )
    };
    check(
        "flags accrue (NX, then NX|DZ, kept by an exact op) until fsflags clears them",
        f1 == NX && f2 == NX | DZ && f3 == NX | DZ && old == NX | DZ && after == 0,
        format_args!("{f1:#x} {f2:#x} {f3:#x}, fsflags returned {old:#x}, then {after:#x}"),
    );
    let (fcsr, frm, fflags): (u64, u64, u64);
    // SAFETY: fcsr only.
    unsafe {
        asm!(
            "li {t}, 0x7f",
            "fscsr {t}",
            "frcsr {fcsr}",
            "frrm {frm}",
            "frflags {fflags}",
            "fscsr zero",
            t = out(reg) _,
            fcsr = out(reg) fcsr,
            frm = out(reg) frm,
            fflags = out(reg) fflags,
            options(nostack),
        )
    };
    check(
        "fcsr = frm << 5 | fflags (0x7f: frm 3, flags 0x1f)",
        fcsr == 0x7f && frm == 3 && fflags == 0x1f,
        format_args!("fcsr={fcsr:#x} frm={frm} fflags={fflags:#x}"),
    );
}

// Illegal-instruction snippets; the handler skips the 4-byte instruction.
core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc
    .balign 4
    .globl t_rm5, t_rm5_at, t_rm6_at
t_rm5:
t_rm5_at:
    .4byte 0x00105153   /* fadd.s ft2, ft0, ft1 with rm = 5 (reserved) */
t_rm6_at:
    .4byte 0x00106153   /* the same with rm = 6 (reserved) */
    ret

    .balign 4
    .globl t_frm5, t_frm5_at
t_frm5:
    csrwi frm, 5
    csrr a0, frm
t_frm5_at:
    fadd.s ft2, ft0, ft1, dyn
    csrwi frm, 0
    ret

    /* FS = Off: every FP instruction, FP CSR access and FP load traps. */
    .balign 4
    .globl t_fs_off, t_fs_off_1, t_fs_off_2, t_fs_off_3, t_fs_off_4
t_fs_off:
    li t0, 0x6000
    csrc mstatus, t0
t_fs_off_1:
    fadd.s ft2, ft0, ft1
t_fs_off_2:
    csrr a0, fflags
t_fs_off_3:
    flw ft2, 0(sp)
t_fs_off_4:
    fmv.x.d a0, ft0
    li t0, 0x2000
    csrs mstatus, t0
    ret
    .option pop
"#
);

extern "C" {
    fn t_rm5();
    fn t_rm5_at();
    fn t_rm6_at();
    fn t_frm5() -> u64;
    fn t_frm5_at();
    fn t_fs_off();
    fn t_fs_off_1();
    fn t_fs_off_2();
    fn t_fs_off_3();
    fn t_fs_off_4();
}

static TRAPS: AtomicU64 = AtomicU64::new(0);
static EPCS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static TVALS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn handler(frame: &mut TrapFrame) {
    if frame.is_interrupt() || frame.code() != trap::ILLEGAL_INSTRUCTION {
        println!("FAIL: unexpected trap: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
        rt::exit(102);
    }
    let n = TRAPS.fetch_add(1, SeqCst) as usize;
    if n < EPCS.len() {
        EPCS[n].store(frame.mepc, SeqCst);
        TVALS[n].store(frame.mtval, SeqCst);
    }
    // SAFETY: the instruction is in RAM.
    unsafe { frame.skip_instruction() };
}

/// The illegal-instruction traps since `from`: (mepc, mtval) pairs.
fn traps_since(from: u64) -> ([(u64, u64); 4], u64) {
    let n = TRAPS.load(SeqCst) - from;
    let mut out = [(0, 0); 4];
    for (i, o) in out.iter_mut().enumerate().take(n.min(4) as usize) {
        let j = from as usize + i;
        if j < EPCS.len() {
            *o = (EPCS[j].load(SeqCst), TVALS[j].load(SeqCst));
        }
    }
    (out, n)
}

fn check_illegal() {
    TRAPS.store(0, SeqCst);
    // SAFETY: the snippet's two reserved-rm instructions trap and are skipped.
    unsafe { t_rm5() };
    let (t, n) = traps_since(0);
    // mtval is either 0 or the instruction word (privileged spec: mtval on illegal instruction).
    check(
        "reserved static rm 5 and 6: illegal instruction",
        n == 2
            && t[0].0 == addr(t_rm5_at)
            && t[1].0 == addr(t_rm6_at)
            && [0, 0x0010_5153].contains(&t[0].1)
            && [0, 0x0010_6153].contains(&t[1].1),
        format_args!("{n} trap(s): {t:x?}"),
    );
    TRAPS.store(0, SeqCst);
    // SAFETY: the dynamic-rm instruction traps and is skipped; frm is restored.
    let frm = unsafe { t_frm5() };
    let (t, n) = traps_since(0);
    check(
        "frm = 5 holds, and a dynamic-rm instruction then raises illegal instruction",
        frm == 5 && n == 1 && t[0].0 == addr(t_frm5_at),
        format_args!("frm read {frm}, {n} trap(s): {t:x?}"),
    );
    TRAPS.store(0, SeqCst);
    // SAFETY: with FS = Off the four FP instructions trap and are skipped; FS is set back to Initial.
    unsafe { t_fs_off() };
    let (t, n) = traps_since(0);
    let want = [addr(t_fs_off_1), addr(t_fs_off_2), addr(t_fs_off_3), addr(t_fs_off_4)];
    check(
        "mstatus.FS = Off: fadd.s, csrr fflags, flw, fmv.x.d each raise illegal instruction",
        n == 4 && t.iter().zip(want).all(|(t, w)| t.0 == w),
        format_args!("{n} trap(s): {t:x?}, want mepcs {want:x?}"),
    );

    // FS = Initial, then an FP register write: FS becomes Dirty (3) and SD (bit 63) is set.
    csr_clear!("mstatus", 0x6000);
    csr_set!("mstatus", 0x2000);
    let before = csr_read!("mstatus");
    // SAFETY: writes ft0 only.
    unsafe { asm!("fmv.w.x ft0, zero", out("ft0") _, options(nostack, nomem)) };
    let after = csr_read!("mstatus");
    check(
        "FS Initial -> Dirty (and SD set) after an FP register write",
        (before >> 13) & 3 == 1 && (after >> 13) & 3 == 3 && after >> 63 == 1,
        format_args!("mstatus before {before:#x}, after {after:#x}"),
    );
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    // The runtime's _start sets FS = Initial; make sure.
    csr_set!("mstatus", 0x2000);

    check_rounding_modes();
    check_special_results();
    check_conversions();
    check_min_max();
    check_classify();
    check_nan_boxing();
    check_fused();
    check_compares();
    check_accrued_flags();
    check_illegal();

    checks::finish("fpu")
}
