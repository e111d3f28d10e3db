//! The guest image loader on hostile images: ELF files with any header, program headers and symbol table, and
//! raw images at any address. Checks: a rejected image leaves RAM untouched; an accepted one writes only
//! inside RAM and only inside the `[start, end)` range it reports; a raw image lands exactly where asked or
//! is refused whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::mem::{Ram, RAM_BASE};
use trapeze::vm::loader::{load_elf, load_raw};

const RAM_SIZE: usize = 0x4000;
const GUARD: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut backing = vec![0xa5u8; GUARD + RAM_SIZE + GUARD];
    let before = backing.clone();
    let result = load_elf(data, &mut Ram::new(RAM_BASE, &mut backing[GUARD..GUARD + RAM_SIZE]));
    assert_eq!(&backing[..GUARD], &before[..GUARD]);
    assert_eq!(&backing[GUARD + RAM_SIZE..], &before[GUARD + RAM_SIZE..]);
    match result {
        Err(_) => assert!(backing == before, "a rejected image changed RAM"),
        Ok(loaded) => {
            assert!(loaded.start <= loaded.end, "{loaded:?}");
            for (i, (&now, &was)) in backing.iter().zip(&before).enumerate() {
                if now != was {
                    let addr = RAM_BASE + (i - GUARD) as u64;
                    assert!((loaded.start..loaded.end).contains(&addr), "{addr:#x} written outside {loaded:?}");
                }
            }
        }
    }
    // The same bytes as a raw image, at an address taken from the image itself.
    let addr = match data.get(..8) {
        Some(bytes) => RAM_BASE.wrapping_add(u64::from_le_bytes(bytes.try_into().unwrap()) % (RAM_SIZE as u64 * 2)),
        None => RAM_BASE,
    };
    let mut raw = vec![0u8; RAM_SIZE];
    let fits = (addr - RAM_BASE).checked_add(data.len() as u64).is_some_and(|end| end <= RAM_SIZE as u64);
    let result = load_raw(data, addr, &mut Ram::new(RAM_BASE, &mut raw));
    assert_eq!(result.is_ok(), fits, "raw image of {} bytes at {addr:#x}", data.len());
    if fits {
        let at = (addr - RAM_BASE) as usize;
        assert_eq!(&raw[at..at + data.len()], data);
        assert!(raw[..at].iter().chain(&raw[at + data.len()..]).all(|&b| b == 0));
    } else {
        assert!(raw.iter().all(|&b| b == 0), "a refused raw image changed RAM");
    }
});
