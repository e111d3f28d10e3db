//! `torture`: an RV64IM integer arithmetic torture sequence folded into a 64-bit digest.
//!
//! A deterministic PRNG picks operations and operands (a mix of chained results, edge values such as 0, -1,
//! `i64::MIN` and 32-bit boundaries, small and random numbers) and every result is folded into a digest.
//! The operations run through an [`Alu`]:
//! - [`Model`] computes the results RISC-V defines (division by zero, `i64::MIN / -1`, the high halves of
//!   products, W forms sign-extending their 32-bit results...) in plain Rust, on any target;
//! - `Hardware` (riscv64 only) executes each operation as the one real instruction, through `asm!`.
//!
//! The `arith` guest computes [`digest`] with real instructions (and checks it against [`Model`] run on the
//! guest); the hosted tests compute it natively and compare. The crate is `no_std` and builds for the host too.
#![no_std]

/// The number of operations the `arith` guest and the hosted test run.
pub const DEFAULT_OPS: u32 = 200_000;

/// The operations of the torture sequence: every RV64IM register-register arithmetic instruction, plus
/// immediate forms with fixed edge-case immediates (named after the immediate: `N` for a negative one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Op {
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    AddiN2048,
    Addi2047,
    SltiN1,
    Slti0,
    SltiuN1,
    Sltiu1,
    XoriN1,
    Ori0x555,
    AndiN16,
    Slli1,
    Slli63,
    Srli1,
    Srli63,
    Srai1,
    Srai63,
    Addiw0,
    AddiwN1,
    Addiw2047,
    Slliw31,
    Srliw0,
    Srliw31,
    Sraiw0,
    Sraiw31,
}

impl Op {
    /// Every operation, in discriminant order.
    pub const ALL: [Op; 51] = [
        Op::Add,
        Op::Sub,
        Op::Sll,
        Op::Slt,
        Op::Sltu,
        Op::Xor,
        Op::Srl,
        Op::Sra,
        Op::Or,
        Op::And,
        Op::Addw,
        Op::Subw,
        Op::Sllw,
        Op::Srlw,
        Op::Sraw,
        Op::Mul,
        Op::Mulh,
        Op::Mulhsu,
        Op::Mulhu,
        Op::Div,
        Op::Divu,
        Op::Rem,
        Op::Remu,
        Op::Mulw,
        Op::Divw,
        Op::Divuw,
        Op::Remw,
        Op::Remuw,
        Op::AddiN2048,
        Op::Addi2047,
        Op::SltiN1,
        Op::Slti0,
        Op::SltiuN1,
        Op::Sltiu1,
        Op::XoriN1,
        Op::Ori0x555,
        Op::AndiN16,
        Op::Slli1,
        Op::Slli63,
        Op::Srli1,
        Op::Srli63,
        Op::Srai1,
        Op::Srai63,
        Op::Addiw0,
        Op::AddiwN1,
        Op::Addiw2047,
        Op::Slliw31,
        Op::Srliw0,
        Op::Srliw31,
        Op::Sraiw0,
        Op::Sraiw31,
    ];
}

/// Something that executes the torture operations on 64-bit register values.
pub trait Alu {
    /// The value `rd` gets from `op` with `rs1 = a` and `rs2 = b` (`b` is ignored by immediate forms).
    fn exec(op: Op, a: u64, b: u64) -> u64;
}

/// Sign-extends the low 32 bits of `x` to 64, as every RV64 W-form instruction does with its result.
#[inline]
pub const fn sext32(x: u64) -> u64 {
    x as u32 as i32 as i64 as u64
}

/// The RISC-V-defined results, in plain Rust (no panics: division by zero and overflow are handled).
pub struct Model;

impl Model {
    /// `div`: signed; x / 0 = -1; `i64::MIN / -1 = i64::MIN`.
    pub const fn div(a: u64, b: u64) -> u64 {
        let (a, b) = (a as i64, b as i64);
        if b == 0 {
            u64::MAX
        } else {
            a.wrapping_div(b) as u64
        }
    }

    /// `divu`: x / 0 = all ones.
    pub const fn divu(a: u64, b: u64) -> u64 {
        match a.checked_div(b) {
            Some(q) => q,
            None => u64::MAX,
        }
    }

    /// `rem`: signed, sign of the dividend; x % 0 = x; `i64::MIN % -1 = 0`.
    pub const fn rem(a: u64, b: u64) -> u64 {
        let (a, b) = (a as i64, b as i64);
        if b == 0 {
            a as u64
        } else {
            a.wrapping_rem(b) as u64
        }
    }

    /// `remu`: x % 0 = x.
    pub const fn remu(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            a % b
        }
    }

    /// `divw`: on the low 32 bits, result sign-extended.
    pub const fn divw(a: u64, b: u64) -> u64 {
        let (a, b) = (a as i32, b as i32);
        if b == 0 {
            u64::MAX
        } else {
            a.wrapping_div(b) as i64 as u64
        }
    }

    /// `divuw`: on the low 32 bits (unsigned), result sign-extended.
    pub const fn divuw(a: u64, b: u64) -> u64 {
        match (a as u32).checked_div(b as u32) {
            Some(q) => sext32(q as u64),
            None => u64::MAX,
        }
    }

    /// `remw`: on the low 32 bits, result sign-extended.
    pub const fn remw(a: u64, b: u64) -> u64 {
        let (a, b) = (a as i32, b as i32);
        if b == 0 {
            a as i64 as u64
        } else {
            a.wrapping_rem(b) as i64 as u64
        }
    }

    /// `remuw`: on the low 32 bits (unsigned), result sign-extended.
    pub const fn remuw(a: u64, b: u64) -> u64 {
        let (a, b) = (a as u32, b as u32);
        if b == 0 {
            sext32(a as u64)
        } else {
            sext32((a % b) as u64)
        }
    }

    /// `mulh`: high 64 bits of the signed × signed product.
    pub const fn mulh(a: u64, b: u64) -> u64 {
        ((a as i64 as i128 * b as i64 as i128) >> 64) as u64
    }

    /// `mulhsu`: high 64 bits of the signed `a` × unsigned `b` product.
    pub const fn mulhsu(a: u64, b: u64) -> u64 {
        ((a as i64 as i128 * b as i128) >> 64) as u64
    }

    /// `mulhu`: high 64 bits of the unsigned × unsigned product.
    pub const fn mulhu(a: u64, b: u64) -> u64 {
        ((a as u128 * b as u128) >> 64) as u64
    }
}

impl Alu for Model {
    fn exec(op: Op, a: u64, b: u64) -> u64 {
        let sh = (b & 63) as u32;
        let shw = (b & 31) as u32;
        match op {
            Op::Add => a.wrapping_add(b),
            Op::Sub => a.wrapping_sub(b),
            Op::Sll => a << sh,
            Op::Slt => ((a as i64) < (b as i64)) as u64,
            Op::Sltu => (a < b) as u64,
            Op::Xor => a ^ b,
            Op::Srl => a >> sh,
            Op::Sra => ((a as i64) >> sh) as u64,
            Op::Or => a | b,
            Op::And => a & b,
            Op::Addw => sext32(a.wrapping_add(b)),
            Op::Subw => sext32(a.wrapping_sub(b)),
            Op::Sllw => sext32(((a as u32) << shw) as u64),
            Op::Srlw => sext32(((a as u32) >> shw) as u64),
            Op::Sraw => ((a as i32) >> shw) as i64 as u64,
            Op::Mul => a.wrapping_mul(b),
            Op::Mulh => Model::mulh(a, b),
            Op::Mulhsu => Model::mulhsu(a, b),
            Op::Mulhu => Model::mulhu(a, b),
            Op::Div => Model::div(a, b),
            Op::Divu => Model::divu(a, b),
            Op::Rem => Model::rem(a, b),
            Op::Remu => Model::remu(a, b),
            Op::Mulw => sext32(a.wrapping_mul(b)),
            Op::Divw => Model::divw(a, b),
            Op::Divuw => Model::divuw(a, b),
            Op::Remw => Model::remw(a, b),
            Op::Remuw => Model::remuw(a, b),
            Op::AddiN2048 => a.wrapping_sub(2048),
            Op::Addi2047 => a.wrapping_add(2047),
            Op::SltiN1 => ((a as i64) < -1) as u64,
            Op::Slti0 => ((a as i64) < 0) as u64,
            Op::SltiuN1 => (a < u64::MAX) as u64,
            Op::Sltiu1 => (a < 1) as u64,
            Op::XoriN1 => !a,
            Op::Ori0x555 => a | 0x555,
            Op::AndiN16 => a & !15,
            Op::Slli1 => a << 1,
            Op::Slli63 => a << 63,
            Op::Srli1 => a >> 1,
            Op::Srli63 => a >> 63,
            Op::Srai1 => ((a as i64) >> 1) as u64,
            Op::Srai63 => ((a as i64) >> 63) as u64,
            Op::Addiw0 => sext32(a),
            Op::AddiwN1 => sext32(a.wrapping_sub(1)),
            Op::Addiw2047 => sext32(a.wrapping_add(2047)),
            Op::Slliw31 => sext32(((a as u32) << 31) as u64),
            Op::Srliw0 => sext32(a),
            Op::Srliw31 => sext32(((a as u32) >> 31) as u64),
            Op::Sraiw0 => sext32(a),
            Op::Sraiw31 => ((a as i32) >> 31) as i64 as u64,
        }
    }
}

#[cfg(target_arch = "riscv64")]
mod hardware {
    use super::{Alu, Op};
    use core::arch::asm;

    /// One register-register instruction.
    macro_rules! rr {
        ($insn:literal, $a:expr, $b:expr) => {{
            let rd: u64;
            // SAFETY: a single arithmetic instruction on registers: no memory access, cannot trap.
            unsafe {
                asm!(concat!($insn, " {rd}, {a}, {b}"), rd = lateout(reg) rd, a = in(reg) $a, b = in(reg) $b,
                    options(pure, nomem, nostack))
            };
            rd
        }};
    }

    /// One register-immediate instruction.
    macro_rules! ri {
        ($insn:literal, $imm:literal, $a:expr) => {{
            let rd: u64;
            // SAFETY: a single arithmetic instruction on registers: no memory access, cannot trap.
            unsafe {
                asm!(concat!($insn, " {rd}, {a}, ", $imm), rd = lateout(reg) rd, a = in(reg) $a,
                    options(pure, nomem, nostack))
            };
            rd
        }};
    }

    /// Each operation as the one real RV64IM instruction.
    pub struct Hardware;

    impl Alu for Hardware {
        #[inline(never)]
        fn exec(op: Op, a: u64, b: u64) -> u64 {
            match op {
                Op::Add => rr!("add", a, b),
                Op::Sub => rr!("sub", a, b),
                Op::Sll => rr!("sll", a, b),
                Op::Slt => rr!("slt", a, b),
                Op::Sltu => rr!("sltu", a, b),
                Op::Xor => rr!("xor", a, b),
                Op::Srl => rr!("srl", a, b),
                Op::Sra => rr!("sra", a, b),
                Op::Or => rr!("or", a, b),
                Op::And => rr!("and", a, b),
                Op::Addw => rr!("addw", a, b),
                Op::Subw => rr!("subw", a, b),
                Op::Sllw => rr!("sllw", a, b),
                Op::Srlw => rr!("srlw", a, b),
                Op::Sraw => rr!("sraw", a, b),
                Op::Mul => rr!("mul", a, b),
                Op::Mulh => rr!("mulh", a, b),
                Op::Mulhsu => rr!("mulhsu", a, b),
                Op::Mulhu => rr!("mulhu", a, b),
                Op::Div => rr!("div", a, b),
                Op::Divu => rr!("divu", a, b),
                Op::Rem => rr!("rem", a, b),
                Op::Remu => rr!("remu", a, b),
                Op::Mulw => rr!("mulw", a, b),
                Op::Divw => rr!("divw", a, b),
                Op::Divuw => rr!("divuw", a, b),
                Op::Remw => rr!("remw", a, b),
                Op::Remuw => rr!("remuw", a, b),
                Op::AddiN2048 => ri!("addi", "-2048", a),
                Op::Addi2047 => ri!("addi", "2047", a),
                Op::SltiN1 => ri!("slti", "-1", a),
                Op::Slti0 => ri!("slti", "0", a),
                Op::SltiuN1 => ri!("sltiu", "-1", a),
                Op::Sltiu1 => ri!("sltiu", "1", a),
                Op::XoriN1 => ri!("xori", "-1", a),
                Op::Ori0x555 => ri!("ori", "0x555", a),
                Op::AndiN16 => ri!("andi", "-16", a),
                Op::Slli1 => ri!("slli", "1", a),
                Op::Slli63 => ri!("slli", "63", a),
                Op::Srli1 => ri!("srli", "1", a),
                Op::Srli63 => ri!("srli", "63", a),
                Op::Srai1 => ri!("srai", "1", a),
                Op::Srai63 => ri!("srai", "63", a),
                Op::Addiw0 => ri!("addiw", "0", a),
                Op::AddiwN1 => ri!("addiw", "-1", a),
                Op::Addiw2047 => ri!("addiw", "2047", a),
                Op::Slliw31 => ri!("slliw", "31", a),
                Op::Srliw0 => ri!("srliw", "0", a),
                Op::Srliw31 => ri!("srliw", "31", a),
                Op::Sraiw0 => ri!("sraiw", "0", a),
                Op::Sraiw31 => ri!("sraiw", "31", a),
            }
        }
    }
}

#[cfg(target_arch = "riscv64")]
pub use hardware::Hardware;

/// The [`Alu`] [`digest`] uses: the real instructions on riscv64, [`Model`] everywhere else.
#[cfg(target_arch = "riscv64")]
pub type Native = Hardware;
/// The [`Alu`] [`digest`] uses: the real instructions on riscv64, [`Model`] everywhere else.
#[cfg(not(target_arch = "riscv64"))]
pub type Native = Model;

/// SplitMix64: a small, fast, deterministic generator with a full 2^64 period.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Operand values that exercise the corner cases of RV64IM.
pub const EDGE_VALUES: [u64; 24] = [
    0,
    1,
    2,
    3,
    u64::MAX,              // -1
    u64::MAX - 1,          // -2
    i64::MIN as u64,       // 0x8000_0000_0000_0000
    i64::MAX as u64,       // 0x7fff_ffff_ffff_ffff
    0x8000_0000_0000_0001, // i64::MIN + 1
    0x0000_0000_8000_0000, // 2^31
    0x0000_0000_7fff_ffff, // i32::MAX
    0x0000_0000_ffff_ffff, // u32::MAX, also -1 in the low word
    0xffff_ffff_8000_0000, // i32::MIN sign-extended
    0x0000_0001_0000_0000, // 2^32
    0x0000_0001_0000_0001, // 2^32 + 1
    0x1234_5678_8000_0000, // i32::MIN in the low word, junk above
    0xdead_beef_ffff_ffff, // -1 in the low word, junk above
    0xffff_ffff_0000_0000, // zero low word, nonzero high word
    31,
    32,
    63,
    64,
    0x5555_5555_5555_5555,
    0xaaaa_aaaa_aaaa_aaaa,
];

/// The seed of the torture sequence.
pub const SEED: u64 = 0x7472_6170_657a_6531; // "trapeze1"

/// Digest of `ops` torture operations executed by `A`.
pub fn digest_with<A: Alu>(ops: u32) -> u64 {
    let mut rng = SplitMix64::new(SEED);
    let mut regs = [0u64; 8];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = EDGE_VALUES[i * 3];
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..ops {
        let pick = rng.next_u64();
        let op = Op::ALL[(pick % Op::ALL.len() as u64) as usize];
        let a = operand(&mut rng, &regs);
        let b = operand(&mut rng, &regs);
        let rd = A::exec(op, a, b);
        regs[((pick >> 32) & 7) as usize] = rd;
        hash = fold(hash, rd ^ ((op as u64) << 58));
    }
    hash
}

/// Digest of `ops` torture operations on this target's [`Native`] ALU.
pub fn digest(ops: u32) -> u64 {
    digest_with::<Native>(ops)
}

/// One operand: a chained result half of the time, else an edge value, a small or a random number.
fn operand(rng: &mut SplitMix64, regs: &[u64; 8]) -> u64 {
    let r = rng.next_u64();
    let sel = r >> 8;
    match r & 7 {
        0..=3 => regs[(sel & 7) as usize],
        4 => EDGE_VALUES[(sel % EDGE_VALUES.len() as u64) as usize],
        5 => ((sel % 9) as i64 - 4) as u64,
        6 => rng.next_u64(),
        _ => sext32(rng.next_u64()),
    }
}

/// Folds `x` into the running digest `hash`.
fn fold(hash: u64, x: u64) -> u64 {
    let h = (hash ^ x).wrapping_mul(0x0000_0100_0000_01b3);
    h ^ (h >> 29)
}
