#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::isa::{decode, decode_word, encode, Inst};

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(4) {
        let word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let decoded = decode(word);
        assert_eq!(decoded.len, if word & 3 == 3 { 4 } else { 2 });
        let inst = decode_word(word);
        assert_eq!(decode_word(encode(&inst)), inst);
        let _ = format!("{inst}");
        if let Inst::Illegal(w) = inst {
            assert_eq!(w, word);
        }
    }
});
