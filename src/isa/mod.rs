//! RV64GC instruction set: decoding (compressed instructions expanded to their 32-bit meaning), encoding,
//! disassembly and CSR numbers.
//!
//! This module is pure: it never touches hart or memory state. Decoding any word never panics; a word that is
//! not a valid RV64GC instruction decodes to [`Inst::Illegal`] carrying the word.

pub mod csr;
mod decode;
mod disasm;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_compressed, decode_word};
pub use encode::encode;

/// Register number (0..=31) of an integer (`x`) or floating-point (`f`) register, as the encoding holds it.
pub type Reg = u8;

/// A decoded instruction and the number of bytes it occupies in the instruction stream (2 or 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub inst: Inst,
    /// 2 for a compressed instruction, 4 otherwise.
    pub len: u8,
}

/// Zihintpause `pause`: `fence w, 0`, a hint that the hart is waiting in a spin loop (a no-op to the
/// architecture; the VM lets other harts run).
pub const PAUSE: Inst = Inst::Fence { fm: 0, pred: 0b0001, succ: 0 };

/// Whether a FENCE with these fields orders earlier stores before later loads (its predecessor set has W and its
/// successor set R, and it is not FENCE.TSO, which leaves exactly that pair unordered): the one ordering an
/// x86-64 host does not give plain accesses by itself, so engines running harts on host threads of their own
/// issue a host fence for it (`fence rw,rw`, `fence w,r`); every other FENCE is free there.
pub const fn fence_orders_stores_before_loads(fm: u8, pred: u8, succ: u8) -> bool {
    const R: u8 = 0b0010;
    const W: u8 = 0b0001;
    fm != 0b1000 && pred & W != 0 && succ & R != 0
}

/// One RV64GC instruction (RV64IMAFDC + Zicsr + Zifencei) in typed form.
///
/// Immediates are stored fully decoded and sign-extended: a branch or jump `offset` is the byte offset from the
/// instruction's own pc, `Lui`/`Auipc` hold the 32-bit value `imm[31:12] << 12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inst {
    /// Not a valid instruction: carries the raw word (the 16-bit parcel for compressed encodings) so that the
    /// illegal-instruction trap can report it in `mtval`.
    Illegal(u32),
    Lui {
        rd: Reg,
        imm: i32,
    },
    Auipc {
        rd: Reg,
        imm: i32,
    },
    Jal {
        rd: Reg,
        offset: i32,
    },
    Jalr {
        rd: Reg,
        rs1: Reg,
        offset: i32,
    },
    Branch {
        cond: BranchCond,
        rs1: Reg,
        rs2: Reg,
        offset: i32,
    },
    Load {
        width: LoadWidth,
        rd: Reg,
        rs1: Reg,
        offset: i32,
    },
    Store {
        width: StoreWidth,
        rs1: Reg,
        rs2: Reg,
        offset: i32,
    },
    /// Register-immediate ALU operation; for shifts `imm` is the shift amount.
    OpImm {
        op: OpImmKind,
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    /// Register-register ALU operation, including M-extension multiply and divide.
    Op {
        op: OpKind,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    /// FENCE (`fm` = 0b1000 with pred=succ=RW is FENCE.TSO). The reserved `rd`/`rs1` fields are ignored, as the
    /// specification requires for forward compatibility.
    Fence {
        fm: u8,
        pred: u8,
        succ: u8,
    },
    FenceI,
    Ecall,
    Ebreak,
    Sret,
    Mret,
    Wfi,
    SfenceVma {
        rs1: Reg,
        rs2: Reg,
    },
    /// Zicsr. `src` is `rs1` for the register forms and the 5-bit zero-extended immediate for the `i` forms.
    Csr {
        op: CsrOp,
        rd: Reg,
        src: u8,
        csr: u16,
    },
    Lr {
        width: AmoWidth,
        aq: bool,
        rl: bool,
        rd: Reg,
        rs1: Reg,
    },
    Sc {
        width: AmoWidth,
        aq: bool,
        rl: bool,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    Amo {
        op: AmoOp,
        width: AmoWidth,
        aq: bool,
        rl: bool,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    /// FLW / FLD.
    FpLoad {
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
        offset: i32,
    },
    /// FSW / FSD.
    FpStore {
        fmt: FpFormat,
        rs1: Reg,
        rs2: Reg,
        offset: i32,
    },
    /// FMADD / FMSUB / FNMSUB / FNMADD.
    FpFma {
        op: FmaOp,
        fmt: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
        rs3: Reg,
    },
    /// FADD / FSUB / FMUL / FDIV.
    FpArith {
        op: FpArithOp,
        fmt: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    FpSqrt {
        fmt: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
    },
    FpSgnj {
        kind: SgnjKind,
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    FpMinMax {
        max: bool,
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    /// FCVT.S.D (`to` = S, `from` = D) and FCVT.D.S.
    FpCvtFp {
        to: FpFormat,
        from: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
    },
    /// FCVT.{W,WU,L,LU}.{S,D}: float register `rs1` to integer register `rd`.
    FpCvtToInt {
        int: IntType,
        fmt: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
    },
    /// FCVT.{S,D}.{W,WU,L,LU}: integer register `rs1` to float register `rd`.
    FpCvtFromInt {
        int: IntType,
        fmt: FpFormat,
        rm: u8,
        rd: Reg,
        rs1: Reg,
    },
    /// FMV.X.W / FMV.X.D.
    FpMvToInt {
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
    },
    /// FMV.W.X / FMV.D.X.
    FpMvFromInt {
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
    },
    FpCmp {
        cond: FpCmpCond,
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    FpClass {
        fmt: FpFormat,
        rd: Reg,
        rs1: Reg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchCond {
    Eq,
    Ne,
    Lt,
    Ge,
    Ltu,
    Geu,
}

impl BranchCond {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [BranchCond; 6] =
        [BranchCond::Eq, BranchCond::Ne, BranchCond::Lt, BranchCond::Ge, BranchCond::Ltu, BranchCond::Geu];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadWidth {
    B,
    H,
    W,
    D,
    Bu,
    Hu,
    Wu,
}

impl LoadWidth {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [LoadWidth; 7] =
        [LoadWidth::B, LoadWidth::H, LoadWidth::W, LoadWidth::D, LoadWidth::Bu, LoadWidth::Hu, LoadWidth::Wu];
}

impl LoadWidth {
    /// Access size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            LoadWidth::B | LoadWidth::Bu => 1,
            LoadWidth::H | LoadWidth::Hu => 2,
            LoadWidth::W | LoadWidth::Wu => 4,
            LoadWidth::D => 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreWidth {
    B,
    H,
    W,
    D,
}

impl StoreWidth {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [StoreWidth; 4] = [StoreWidth::B, StoreWidth::H, StoreWidth::W, StoreWidth::D];
}

impl StoreWidth {
    /// Access size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            StoreWidth::B => 1,
            StoreWidth::H => 2,
            StoreWidth::W => 4,
            StoreWidth::D => 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpImmKind {
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
}

impl OpImmKind {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [OpImmKind; 13] = [
        OpImmKind::Addi,
        OpImmKind::Slti,
        OpImmKind::Sltiu,
        OpImmKind::Xori,
        OpImmKind::Ori,
        OpImmKind::Andi,
        OpImmKind::Slli,
        OpImmKind::Srli,
        OpImmKind::Srai,
        OpImmKind::Addiw,
        OpImmKind::Slliw,
        OpImmKind::Srliw,
        OpImmKind::Sraiw,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
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
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
}

impl OpKind {
    /// Every variant, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [OpKind; 28] = [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Sll,
        OpKind::Slt,
        OpKind::Sltu,
        OpKind::Xor,
        OpKind::Srl,
        OpKind::Sra,
        OpKind::Or,
        OpKind::And,
        OpKind::Mul,
        OpKind::Mulh,
        OpKind::Mulhsu,
        OpKind::Mulhu,
        OpKind::Div,
        OpKind::Divu,
        OpKind::Rem,
        OpKind::Remu,
        OpKind::Addw,
        OpKind::Subw,
        OpKind::Sllw,
        OpKind::Srlw,
        OpKind::Sraw,
        OpKind::Mulw,
        OpKind::Divw,
        OpKind::Divuw,
        OpKind::Remw,
        OpKind::Remuw,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsrOp {
    Rw,
    Rs,
    Rc,
    Rwi,
    Rsi,
    Rci,
}

impl CsrOp {
    /// True for the immediate forms (`csrrwi`, `csrrsi`, `csrrci`).
    pub const fn is_immediate(self) -> bool {
        matches!(self, CsrOp::Rwi | CsrOp::Rsi | CsrOp::Rci)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmoWidth {
    W,
    D,
}

impl AmoWidth {
    /// Access size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            AmoWidth::W => 4,
            AmoWidth::D => 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmoOp {
    Swap,
    Add,
    Xor,
    And,
    Or,
    Min,
    Max,
    Minu,
    Maxu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FpFormat {
    /// Single precision (`.s`).
    S,
    /// Double precision (`.d`).
    D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FmaOp {
    Madd,
    Msub,
    Nmsub,
    Nmadd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FpArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SgnjKind {
    Sgnj,
    Sgnjn,
    Sgnjx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntType {
    W,
    Wu,
    L,
    Lu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FpCmpCond {
    Eq,
    Lt,
    Le,
}

/// Rounding-mode field values (`rm` of an instruction, `frm` of `fcsr`). Values 5 and 6 are reserved and never
/// appear in a decoded instruction.
pub mod rounding {
    /// Round to nearest, ties to even.
    pub const RNE: u8 = 0;
    /// Round towards zero.
    pub const RTZ: u8 = 1;
    /// Round down (towards negative infinity).
    pub const RDN: u8 = 2;
    /// Round up (towards positive infinity).
    pub const RUP: u8 = 3;
    /// Round to nearest, ties to max magnitude.
    pub const RMM: u8 = 4;
    /// Dynamic: use `frm`.
    pub const DYN: u8 = 7;
}
