//! Decoding of 32-bit and compressed (16-bit) RV64GC encodings into [`Inst`].
use super::{Decoded, Inst};

/// Decodes the instruction at the start of `word` (a compressed one if its low two bits are not `0b11`).
pub fn decode(word: u32) -> Decoded {
    if word & 3 == 3 {
        Decoded { inst: decode_word(word), len: 4 }
    } else {
        Decoded { inst: decode_compressed(word as u16), len: 2 }
    }
}

/// Decodes a 32-bit encoding.
pub fn decode_word(word: u32) -> Inst {
    Inst::Illegal(word)
}

/// Expands a 16-bit compressed encoding to the instruction it stands for.
pub fn decode_compressed(parcel: u16) -> Inst {
    Inst::Illegal(parcel as u32)
}
