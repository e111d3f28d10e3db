//! Cross-checks trapeze's RV64GC decoder against an independent one, the `disc-v` disassembler (configured as
//! exactly RV64GC): every compressed parcel, a structured sweep of the 32-bit opcode space, and random words.
//!
//! disc-v exposes no operand fields, only text, so the comparison is made in its terms: for an instruction we
//! decode as legal, disc-v's text for the original encoding must equal disc-v's text for our canonical re-encoding
//! of what we decoded (for a compressed parcel: of its 32-bit expansion). disc-v prints every operand, so this
//! checks the mnemonic, registers, immediates, rounding mode and ordering bits of our decoding, and our encoder,
//! against its decoder. Legality must agree in both directions, apart from the differences documented in
//! [`known_difference`] and [`expected_parcel_text`].

use disc_v::{Decoder, Instruction};
use proptest::prelude::*;
use trapeze::isa::{decode, decode_compressed, decode_word, encode, Inst, OpImmKind, OpKind};

/// Any pc works (targets are printed as absolute addresses, computed the same way for both encodings).
const PC: u64 = 0x8000_0000;

fn oracle(word: u32) -> Instruction {
    Decoder::RV64GC.decode(PC, word as u64)
}

const X: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "s2",
    "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
];

fn x(r: u8) -> &'static str {
    X[r as usize & 31]
}

/// Encodings that disc-v accepts and we reject on purpose.
///
/// - Rounding mode 5 or 6 in an instruction that has a rounding-mode field. The F extension (unprivileged
///   specification, "Floating-Point Control and Status Register", table of rounding modes) says values 101 and
///   110 are reserved, and "if the instruction's rm field is set to an invalid value ... the instruction raises an
///   illegal-instruction exception" (it is an encoding property, so we decode these as `Illegal`). disc-v decodes
///   them and prints the mode as `unknown`.
fn known_difference(word: u32) -> bool {
    let opcode = word & 0x7f;
    let rm = (word >> 12) & 7;
    let fp = matches!(opcode, 0x43 | 0x47 | 0x4b | 0x4f | 0x53);
    // The same instruction with rm = dyn is one we accept: so the field is a rounding mode and the word is
    // illegal only because of its value.
    fp && (rm == 5 || rm == 6) && !matches!(decode_word(word | 0x7000), Inst::Illegal(_))
}

/// Checks one 32-bit word against disc-v. Returns whether the word was a documented difference.
fn check_word(word: u32) -> Result<bool, String> {
    let ours = decode_word(word);
    let theirs = oracle(word);
    match (ours, theirs.is_illegal()) {
        (Inst::Illegal(w), true) if w == word => Ok(false),
        (Inst::Illegal(w), _) if w != word => Err(format!("{word:#010x}: Illegal carries {w:#010x}")),
        (Inst::Illegal(_), false) if known_difference(word) => Ok(true),
        (Inst::Illegal(_), _) => Err(format!("{word:#010x}: we decode it as illegal, disc-v as `{theirs}`")),
        (_, true) => Err(format!("{word:#010x}: we decode `{ours}` ({ours:?}), disc-v says it is illegal")),
        (_, false) => {
            let canonical = encode(&ours);
            let again = decode_word(canonical);
            if again != ours {
                return Err(format!(
                    "{word:#010x}: {ours:?} re-encodes to {canonical:#010x}, which decodes to {again:?}"
                ));
            }
            let (expected, actual) = (theirs.to_string(), oracle(canonical).to_string());
            if expected != actual {
                return Err(format!(
                    "{word:#010x}: disc-v shows `{expected}`, but our decoding {ours:?} (`{ours}`) re-encodes to \
                     {canonical:#010x}, which disc-v shows as `{actual}`"
                ));
            }
            let (ours_text, theirs_text) = (ours_in_disc_v_style(&ours), theirs_normalised(&theirs));
            if ours_text != theirs_text {
                return Err(format!(
                    "{word:#010x}: we show `{ours}` (normalised `{ours_text}`), disc-v shows `{}` (normalised \
                     `{theirs_text}`)",
                    theirs.without_aliases()
                ));
            }
            Ok(false)
        }
    }
}

const ROUNDING_MODES: [&str; 6] = ["rne", "rtz", "rdn", "rup", "rmm", "dyn"];

/// Our disassembly of `inst`, rewritten in disc-v's no-aliases syntax: operands separated by `,` alone, absolute
/// branch targets, hexadecimal shift amounts, `unknown` for an empty fence set, and neither the FENCE `fm` field
/// nor the rounding mode (disc-v hides a different default for the widening conversions; the re-encoding check
/// covers the rounding mode) nor the CSR (disc-v shows names).
///
/// This compares our mnemonics and operand order with an independent decoder, which the re-encoding check
/// cannot: a mistake made identically in our decoder and our encoder would survive the round trip.
fn ours_in_disc_v_style(inst: &Inst) -> String {
    let text = inst.to_string();
    let (mnemonic, operands) = text.split_once(' ').unwrap_or((&text, ""));
    let mut tokens: Vec<String> = operands.split(", ").filter(|t| !t.is_empty()).map(String::from).collect();
    if let Some(last) = tokens.last_mut() {
        if let Some(n) = last.strip_prefix("pc + ") {
            *last = format!("{:#x}", PC + n.parse::<u64>().expect("offset"));
        } else if let Some(n) = last.strip_prefix("pc - ") {
            *last = format!("{:#x}", PC - n.parse::<u64>().expect("offset"));
        } else if matches!(mnemonic, "slli" | "srli" | "srai" | "slliw" | "srliw" | "sraiw") {
            *last = format!("{:#x}", last.parse::<u32>().expect("shift amount"));
        }
    }
    if mnemonic == "fence" {
        tokens.retain(|t| !t.starts_with("fm="));
        for t in &mut tokens {
            if t == "0" {
                *t = "unknown".into();
            }
        }
    }
    finish(mnemonic, tokens)
}

/// disc-v's text for `theirs` without aliases, with the rounding mode and CSR removed as in
/// [`ours_in_disc_v_style`].
fn theirs_normalised(theirs: &Instruction) -> String {
    let text = theirs.without_aliases().to_string();
    let (mnemonic, operands) = text.split_once(' ').unwrap_or((&text, ""));
    finish(mnemonic, operands.split(',').filter(|t| !t.is_empty()).map(String::from).collect())
}

fn finish(mnemonic: &str, mut tokens: Vec<String>) -> String {
    if tokens.last().is_some_and(|t| ROUNDING_MODES.contains(&t.as_str())) {
        tokens.pop();
    }
    if mnemonic.starts_with("csrr") && tokens.len() == 3 {
        tokens[1] = "<csr>".into();
    }
    format!("{mnemonic} {}", tokens.join(","))
}

/// What disc-v should print for a parcel that we expand to `ours`.
///
/// Normally that is disc-v's text for the 32-bit encoding of our expansion. Two cases differ:
///
/// - HINTs, which disc-v (like objdump) shows as encoded, e.g. `c.nop 5` or `c.li zero,3`, instead of expanding.
///   We check that our expansion is the spec's expansion of that compressed form with the same operands.
/// - C.MV. The RVC expansion table (unprivileged specification, "C" chapter, "Integer Register-Register
///   Operations") expands `c.mv rd, rs2` to `add rd, x0, rs2`, which is what we produce; disc-v expands it to
///   `addi rd, rs2, 0` (the same value, printed as `mv rd,rs2`). We check that we produce `add rd, x0, rs2` and
///   that disc-v's text is that of `addi rd, rs2, 0` with the same registers.
fn expected_parcel_text(parcel: u16, ours: &Inst, theirs: &Instruction) -> String {
    let mnemonic = theirs.mnemonic();
    if let Some(name) = mnemonic.strip_prefix("c.") {
        return match (name, *ours) {
            ("nop", Inst::OpImm { op: OpImmKind::Addi, rd: 0, rs1: 0, imm }) => format!("c.nop {imm}"),
            ("li", Inst::OpImm { op: OpImmKind::Addi, rd: 0, rs1: 0, imm }) => format!("c.li zero,{imm}"),
            ("lui", Inst::Lui { rd: 0, imm }) => format!("c.lui zero,{:#x}", (imm as u32) >> 12),
            ("slli", Inst::OpImm { op: OpImmKind::Slli, rd, rs1, imm })
            | ("srli", Inst::OpImm { op: OpImmKind::Srli, rd, rs1, imm })
            | ("srai", Inst::OpImm { op: OpImmKind::Srai, rd, rs1, imm })
                if rd == rs1 =>
            {
                format!("c.{name} {},{imm:#x}", x(rd))
            }
            ("mv", Inst::Op { op: OpKind::Add, rd: 0, rs1: 0, rs2 }) => format!("c.mv zero,{}", x(rs2)),
            ("add", Inst::Op { op: OpKind::Add, rd: 0, rs1: 0, rs2 }) => format!("c.add zero,{}", x(rs2)),
            _ => format!("<{ours:?} is not the expansion of a {mnemonic} HINT>"),
        };
    }
    let is_c_mv = parcel & 0xf003 == 0x8002 && (parcel >> 2) & 31 != 0 && (parcel >> 7) & 31 != 0;
    if is_c_mv {
        return match *ours {
            Inst::Op { op: OpKind::Add, rd, rs1: 0, rs2 } => {
                oracle(encode(&Inst::OpImm { op: OpImmKind::Addi, rd, rs1: rs2, imm: 0 })).to_string()
            }
            _ => format!("<{ours:?} is not the spec's expansion of c.mv>"),
        };
    }
    oracle(encode(ours)).to_string()
}

#[test]
fn every_compressed_parcel_matches_disc_v() {
    let (mut legal, mut illegal) = (0, 0);
    let mut failures = Vec::new();
    for parcel in 0..=u16::MAX {
        if parcel & 3 == 3 {
            assert_eq!(decode_compressed(parcel), Inst::Illegal(parcel as u32));
            continue;
        }
        let ours = decode_compressed(parcel);
        let theirs = oracle(parcel as u32);
        assert_eq!(decode(parcel as u32).len, 2);
        match (ours, theirs.is_illegal()) {
            (Inst::Illegal(w), true) => {
                assert_eq!(w, parcel as u32);
                illegal += 1;
            }
            (Inst::Illegal(_), false) => {
                failures.push(format!("{parcel:#06x}: we decode it as illegal, disc-v as `{theirs}`"))
            }
            (_, true) => failures.push(format!("{parcel:#06x}: we expand it to {ours:?}, disc-v says illegal")),
            (_, false) => {
                legal += 1;
                let expected = expected_parcel_text(parcel, &ours, &theirs);
                if expected != theirs.to_string() {
                    failures.push(format!(
                        "{parcel:#06x}: disc-v shows `{theirs}`, we expand it to {ours:?}, expected `{expected}`"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, the first:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
    // 3 quadrants of 16384 parcels each.
    assert_eq!(legal + illegal, 49_152);
    assert!(legal > 40_000 && illegal > 1_000, "legal {legal}, illegal {illegal}");
}

/// A small deterministic generator (xorshift64) for the register fields of the sweep.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every major opcode, every value of bits 31:20 (funct7/rs2, funct12, CSR number, immediate, fm/pred/succ,
/// rs3/fmt) and every funct3, each with rd = rs1 = 0 and with random rd and rs1: 2^21 words.
#[test]
fn sweep_of_the_32_bit_opcode_space_matches_disc_v() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    let (mut legal, mut differences) = (0u32, 0u32);
    for major in 0..32u32 {
        let opcode = major << 2 | 3;
        for high in 0..4096u32 {
            for f3 in 0..8u32 {
                let random_regs = (rng.next() as u32) & (31 << 15 | 31 << 7);
                for regs in [0, random_regs] {
                    let word = high << 20 | f3 << 12 | regs | opcode;
                    match check_word(word) {
                        Ok(true) => differences += 1,
                        Ok(false) => legal += u32::from(!matches!(decode_word(word), Inst::Illegal(_))),
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, the first:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
    assert!(legal > 500_000, "only {legal} legal words in the sweep");
    eprintln!("sweep: {legal} legal words agree with disc-v; {differences} documented differences (reserved rm)");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200_000))]

    /// Random 32-bit encodings (low bits 11): legality agrees with disc-v, the decoded fields agree, and neither
    /// decoder panics.
    #[test]
    fn random_32_bit_words_match_disc_v(word in any::<u32>().prop_map(|w| w | 3)) {
        if let Err(e) = check_word(word) {
            prop_assert!(false, "{}", e);
        }
    }

    /// Random words of any kind: `decode` never panics, and for compressed parcels agrees with disc-v on
    /// legality.
    #[test]
    fn random_words_never_panic(word in any::<u32>()) {
        let decoded = decode(word);
        let theirs = oracle(word);
        if word & 3 != 3 {
            prop_assert_eq!(matches!(decoded.inst, Inst::Illegal(_)), theirs.is_illegal(), "{:#06x}", word & 0xffff);
        }
        let _ = format!("{} {}", decoded.inst, theirs);
    }
}
