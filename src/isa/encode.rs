//! Encoding of [`Inst`] into its canonical 32-bit form.
use super::Inst;

/// The canonical 32-bit encoding of `inst`; an [`Inst::Illegal`] encodes to the word it carries.
pub fn encode(inst: &Inst) -> u32 {
    match inst {
        Inst::Illegal(word) => *word,
        _ => 0,
    }
}
