//! The F and D extensions: floating-point register state (`f0..f31`, `fcsr`) and the execution of every
//! floating-point instruction except the loads and stores, with exact IEEE 754-2019 semantics as RISC-V defines
//! them (canonical NaNs, NaN boxing, tininess after rounding, saturating conversions).
//!
//! # Implementation choice
//!
//! The arithmetic is our own soft-float on integers ([`soft`]): operands are unpacked into significand and
//! exponent, the exact result (or a truncated one with a sticky bit, for division and square root) is formed in
//! a `u128`, and one routine rounds it in any of the five directions and raises the flags. This was preferred to
//!
//! - the host FPU, which only rounds to nearest-even, hides the flags from safe Rust, and does not exist on
//!   `thumbv7m-none-eabi` (where `f64` arithmetic is itself a soft-float library without rounding modes);
//! - a soft-float crate such as `rustc_apfloat`: an extra dependency in the kernel, and its NaN propagation and
//!   conversion conventions are LLVM's, so every operation would still need RISC-V fix-ups (canonical NaN, FMA
//!   invalid rule, saturating conversions), each a place to get wrong.
//!
//! Integer soft-float is exact by construction in every mode, has no dependency, runs identically on every
//! target and never panics. Speed: a few dozen integer operations per instruction (division and square root
//! use a `u128` divide / integer square root); on an x86-64 host in release, binary64 add, mul, div and FMA take
//! about 12-22 ns and sqrt about 50 ns.
//!
//! # How an engine uses it
//!
//! - Before calling [`execute`] (and for the FP loads/stores, and CSR accesses to `fflags`/`frm`/`fcsr`), check
//!   that `mstatus.FS` is not Off; otherwise raise an illegal-instruction exception.
//! - [`execute`] handles every FP instruction but FLW/FLD/FSW/FSD. On `Err(FpError::IllegalInstruction)`
//!   (reserved rounding mode) nothing has changed and the instruction traps. On `Ok(dirty)`, `dirty` is true
//!   when an `f` register was written or an exception flag was raised: the engine then sets `mstatus.FS` to
//!   Dirty (always doing so for every FP instruction is also allowed by the specification).
//! - FLW writes `nan_box(loaded as u32)`, FLD writes the 64 loaded bits, FSW stores the low 32 bits of the
//!   register as they are (no unboxing check), FSD stores all 64; FLW/FLD set `mstatus.FS` Dirty.

pub mod soft;
#[cfg(test)]
mod tests;

use crate::isa::{FmaOp, FpArithOp, FpCmpCond, FpFormat, Inst, IntType, SgnjKind};
use soft::{Format, IntKind, Round, F32, F64};

pub use soft::flags;

/// The single-precision canonical NaN.
pub const CANONICAL_NAN_S: u32 = 0x7fc0_0000;
/// The double-precision canonical NaN.
pub const CANONICAL_NAN_D: u64 = 0x7ff8_0000_0000_0000;

/// Floating-point architectural state: the 64-bit `f` registers and the two fields of `fcsr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FpState {
    /// `f0..f31`; a single-precision value is held NaN-boxed (upper 32 bits all ones).
    pub f: [u64; 32],
    /// Accrued exception flags NV DZ OF UF NX (bits 4..0).
    pub fflags: u8,
    /// Dynamic rounding mode (3 bits; 5..7 are storable but make a DYN instruction illegal).
    pub frm: u8,
}

impl FpState {
    /// All registers +0 and `fcsr` 0 (round to nearest-even, no flags).
    pub const fn new() -> Self {
        FpState { f: [0; 32], fflags: 0, frm: 0 }
    }

    /// The `fcsr` CSR: `frm << 5 | fflags`.
    pub const fn fcsr(&self) -> u64 {
        ((self.frm & 7) as u64) << 5 | (self.fflags & 0x1f) as u64
    }

    /// Writes `fcsr` (bits above 7 are ignored).
    pub fn set_fcsr(&mut self, value: u64) {
        self.fflags = (value & 0x1f) as u8;
        self.frm = ((value >> 5) & 7) as u8;
    }

    /// The `fflags` CSR.
    pub const fn fflags(&self) -> u64 {
        (self.fflags & 0x1f) as u64
    }

    /// Writes the `fflags` CSR (low 5 bits).
    pub fn set_fflags(&mut self, value: u64) {
        self.fflags = (value & 0x1f) as u8;
    }

    /// The `frm` CSR.
    pub const fn frm(&self) -> u64 {
        (self.frm & 7) as u64
    }

    /// Writes the `frm` CSR (low 3 bits; reserved values are kept and trap on use).
    pub fn set_frm(&mut self, value: u64) {
        self.frm = (value & 7) as u8;
    }
}

/// Why [`execute`] did not execute an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FpError {
    /// Reserved rounding mode (static 5 or 6, or DYN with `frm` 5..7): raise an illegal-instruction exception.
    IllegalInstruction,
    /// Not an instruction [`execute`] handles (an FP load/store or a non-FP instruction); nothing was done.
    NotHandled,
}

/// NaN-boxes a single-precision value for an `f` register.
#[inline]
pub const fn nan_box(bits: u32) -> u64 {
    0xffff_ffff_0000_0000 | bits as u64
}

/// The single-precision value an operation reads from an `f` register: the low 32 bits if the register is
/// properly NaN-boxed, otherwise the canonical NaN.
#[inline]
pub const fn unbox(reg: u64) -> u32 {
    if reg >> 32 == 0xffff_ffff {
        reg as u32
    } else {
        CANONICAL_NAN_S
    }
}

/// The rounding direction of an instruction's `rm` field, resolving DYN through `frm`.
pub fn rounding(rm: u8, frm: u8) -> Result<Round, FpError> {
    let rm = if rm == crate::isa::rounding::DYN { frm } else { rm };
    Round::from_bits(rm).ok_or(FpError::IllegalInstruction)
}

fn format(fmt: FpFormat) -> Format {
    match fmt {
        FpFormat::S => F32,
        FpFormat::D => F64,
    }
}

fn int_kind(int: IntType) -> IntKind {
    match int {
        IntType::W => IntKind { signed: true, bits64: false },
        IntType::Wu => IntKind { signed: false, bits64: false },
        IntType::L => IntKind { signed: true, bits64: true },
        IntType::Lu => IntKind { signed: false, bits64: true },
    }
}

/// Reads `f[r]` as an operand of format `fmt` (unboxed for single precision).
#[inline]
fn read(f: &[u64; 32], fmt: FpFormat, r: u8) -> u64 {
    let reg = f[(r & 31) as usize];
    match fmt {
        FpFormat::S => unbox(reg) as u64,
        FpFormat::D => reg,
    }
}

/// Writes a result of format `fmt` to `f[r]` (NaN-boxed for single precision).
#[inline]
fn write(f: &mut [u64; 32], fmt: FpFormat, r: u8, value: u64) {
    f[(r & 31) as usize] = match fmt {
        FpFormat::S => nan_box(value as u32),
        FpFormat::D => value,
    };
}

#[inline]
fn write_x(x: &mut [u64; 32], r: u8, value: u64) {
    let r = (r & 31) as usize;
    if r != 0 {
        x[r] = value;
    }
}

/// Executes one floating-point instruction other than FLW/FLD/FSW/FSD on `fp` and the integer registers `x`.
///
/// Returns `Ok(true)` when an `f` register was written or an exception flag raised (set `mstatus.FS` to Dirty),
/// `Ok(false)` otherwise. On `Err` no state has changed. See the module documentation for the caller's duties.
pub fn execute(inst: &Inst, fp: &mut FpState, x: &mut [u64; 32]) -> Result<bool, FpError> {
    let mut raised = 0;
    let frm = fp.frm;
    let wrote_f = execute_on(inst, &mut fp.f, frm, &mut raised, x)?;
    fp.fflags |= raised;
    Ok(wrote_f || raised != 0)
}

/// [`execute`] on separately held state: `f` registers, the current `frm`, and `raised`, into which the
/// exception flags of this instruction are ORed (the caller accrues them into `fflags`). Returns whether an `f`
/// register was written.
pub fn execute_on(
    inst: &Inst,
    f: &mut [u64; 32],
    frm: u8,
    raised: &mut u8,
    x: &mut [u64; 32],
) -> Result<bool, FpError> {
    match *inst {
        Inst::FpArith { op, fmt, rm, rd, rs1, rs2 } => {
            let rm = rounding(rm, frm)?;
            let (a, b, ff) = (read(f, fmt, rs1), read(f, fmt, rs2), format(fmt));
            let value = match op {
                FpArithOp::Add => soft::add(ff, a, b, rm, raised),
                FpArithOp::Sub => soft::sub(ff, a, b, rm, raised),
                FpArithOp::Mul => soft::mul(ff, a, b, rm, raised),
                FpArithOp::Div => soft::div(ff, a, b, rm, raised),
            };
            write(f, fmt, rd, value);
        }
        Inst::FpFma { op, fmt, rm, rd, rs1, rs2, rs3 } => {
            let rm = rounding(rm, frm)?;
            let (a, b, c) = (read(f, fmt, rs1), read(f, fmt, rs2), read(f, fmt, rs3));
            let (negate_product, negate_addend) = match op {
                FmaOp::Madd => (false, false),
                FmaOp::Msub => (false, true),
                FmaOp::Nmsub => (true, false),
                FmaOp::Nmadd => (true, true),
            };
            let value = soft::fma(format(fmt), a, b, c, negate_product, negate_addend, rm, raised);
            write(f, fmt, rd, value);
        }
        Inst::FpSqrt { fmt, rm, rd, rs1 } => {
            let rm = rounding(rm, frm)?;
            let value = soft::sqrt(format(fmt), read(f, fmt, rs1), rm, raised);
            write(f, fmt, rd, value);
        }
        Inst::FpSgnj { kind, fmt, rd, rs1, rs2 } => {
            let (a, b) = (read(f, fmt, rs1), read(f, fmt, rs2));
            let sign = match fmt {
                FpFormat::S => 1 << 31,
                FpFormat::D => 1 << 63,
            };
            let sign_from = match kind {
                SgnjKind::Sgnj => b,
                SgnjKind::Sgnjn => !b,
                SgnjKind::Sgnjx => a ^ b,
            };
            write(f, fmt, rd, (a & !sign) | (sign_from & sign));
        }
        Inst::FpMinMax { max, fmt, rd, rs1, rs2 } => {
            let value = soft::min_max(format(fmt), read(f, fmt, rs1), read(f, fmt, rs2), max, raised);
            write(f, fmt, rd, value);
        }
        Inst::FpCvtFp { to, from, rm, rd, rs1 } => {
            let rm = rounding(rm, frm)?;
            let value = soft::convert(format(from), format(to), read(f, from, rs1), rm, raised);
            write(f, to, rd, value);
        }
        Inst::FpCvtToInt { int, fmt, rm, rd, rs1 } => {
            let rm = rounding(rm, frm)?;
            let value = soft::to_int(format(fmt), read(f, fmt, rs1), int_kind(int), rm, raised);
            write_x(x, rd, value);
            return Ok(false);
        }
        Inst::FpCvtFromInt { int, fmt, rm, rd, rs1 } => {
            let rm = rounding(rm, frm)?;
            let value = soft::from_int(format(fmt), x[(rs1 & 31) as usize], int_kind(int), rm, raised);
            write(f, fmt, rd, value);
        }
        Inst::FpMvToInt { fmt, rd, rs1 } => {
            // A transfer: the raw low bits, without NaN-box checking; FMV.X.W sign-extends bit 31.
            let reg = f[(rs1 & 31) as usize];
            let value = match fmt {
                FpFormat::S => reg as u32 as i32 as i64 as u64,
                FpFormat::D => reg,
            };
            write_x(x, rd, value);
            return Ok(false);
        }
        Inst::FpMvFromInt { fmt, rd, rs1 } => {
            let value = x[(rs1 & 31) as usize];
            write(f, fmt, rd, value);
        }
        Inst::FpCmp { cond, fmt, rd, rs1, rs2 } => {
            let (a, b, ff) = (read(f, fmt, rs1), read(f, fmt, rs2), format(fmt));
            let value = match cond {
                FpCmpCond::Eq => soft::eq(ff, a, b, raised),
                FpCmpCond::Lt => soft::lt(ff, a, b, false, raised),
                FpCmpCond::Le => soft::lt(ff, a, b, true, raised),
            };
            write_x(x, rd, value as u64);
            return Ok(false);
        }
        Inst::FpClass { fmt, rd, rs1 } => {
            write_x(x, rd, soft::classify(format(fmt), read(f, fmt, rs1)));
            return Ok(false);
        }
        _ => return Err(FpError::NotHandled),
    }
    Ok(true)
}
