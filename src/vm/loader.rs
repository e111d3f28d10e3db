//! Guest image loading: an ELF64 RISC-V executable, or raw bytes, copied into guest [`Ram`].
//!
//! The image is untrusted input: every offset, size and address in it is checked (with overflow-checked
//! arithmetic) against the image and against RAM before a byte is copied, a bad image is a [`LoadError`] that
//! names the problem, never a panic, and nothing is allocated. An ELF image is checked whole before any byte
//! of RAM is written, so a rejected image leaves RAM untouched.
//!
//! Load addresses: each `PT_LOAD` segment goes to its **physical** address `p_paddr`, as QEMU's `-kernel`
//! loader and Spike do for bare-metal ELF files (`p_vaddr` only matters once paging is on, and the two are
//! equal in the usual bare-metal link). The entry point `e_entry` and symbol values are returned as they are in
//! the file. A shared object (`ET_DYN`) is loaded at the addresses in the file, without relocation.

use core::fmt;

use elf::abi::{EM_RISCV, ET_DYN, ET_EXEC, PT_LOAD};
use elf::endian::AnyEndian;
use elf::parse::ParseError;
use elf::ElfBytes;

use crate::mem::Ram;

/// Size of an ELF64 file header.
const EHDR64_SIZE: usize = 64;
const ELFMAG: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;

/// What [`load_elf`] found in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedElf {
    /// The entry point, `e_entry`.
    pub entry: u64,
    /// The address of the symbol `tohost`, if the symbol table defines it (how Spike finds HTIF).
    pub tohost: Option<u64>,
    /// The address of the symbol `fromhost`, if the symbol table defines it.
    pub fromhost: Option<u64>,
    /// Lowest guest address a segment was loaded to.
    pub start: u64,
    /// One past the highest guest address a segment was loaded to (file bytes or zero fill).
    pub end: u64,
}

/// Why an image could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The image does not start with the ELF magic number.
    NotElf,
    /// The image is shorter than an ELF64 file header.
    TruncatedHeader { len: usize },
    /// `EI_CLASS` is not ELFCLASS64.
    NotElf64 { class: u8 },
    /// `EI_DATA` is not ELFDATA2LSB.
    NotLittleEndian { data: u8 },
    /// `e_machine` is not EM_RISCV.
    NotRiscV { machine: u16 },
    /// `e_type` is neither ET_EXEC nor ET_DYN.
    NotExecutable { e_type: u16 },
    /// The header tables are inconsistent or run past the end of the image.
    Malformed(ParseError),
    /// No `PT_LOAD` segment has bytes to load.
    NoLoadableSegment,
    /// Program header `index` (counting all program headers from 0) names file bytes outside the image.
    SegmentFileRange { index: usize, offset: u64, size: u64, image_len: usize },
    /// Program header `index` has `p_filesz > p_memsz`.
    SegmentFileSizeExceedsMemSize { index: usize, filesz: u64, memsz: u64 },
    /// Program header `index` would place `[start, start + size)` outside guest RAM.
    SegmentOutsideRam { index: usize, start: u64, size: u64, ram_start: u64, ram_size: u64 },
    /// A raw image `[addr, addr + size)` does not fit in guest RAM.
    RawOutsideRam { addr: u64, size: u64, ram_start: u64, ram_size: u64 },
}

/// `[start, start + size)` written without overflowing.
struct Range(u64, u64);

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.0, u128::from(self.0) + u128::from(self.1))
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotElf => write!(f, "not an ELF file (bad magic number)"),
            LoadError::TruncatedHeader { len } => {
                write!(f, "truncated ELF image: {len} bytes, shorter than the {EHDR64_SIZE}-byte ELF64 header")
            }
            LoadError::NotElf64 { class } => {
                let what = match *class {
                    ELFCLASS32 => " (ELF32)",
                    _ => " (invalid)",
                };
                write!(f, "not a 64-bit ELF file: EI_CLASS is {class}{what}, expected 2 (ELF64)")
            }
            LoadError::NotLittleEndian { data } => {
                let what = match *data {
                    ELFDATA2MSB => " (big-endian)",
                    _ => " (invalid)",
                };
                write!(f, "not a little-endian ELF file: EI_DATA is {data}{what}")
            }
            LoadError::NotRiscV { machine } => {
                write!(f, "not a RISC-V ELF file (found machine {machine}, expected {EM_RISCV})")
            }
            LoadError::NotExecutable { e_type } => {
                write!(f, "not an executable ELF file: e_type is {e_type}, expected {ET_EXEC} (EXEC) or {ET_DYN} (DYN)")
            }
            LoadError::Malformed(err) => write!(f, "malformed or truncated ELF image: {err}"),
            LoadError::NoLoadableSegment => write!(f, "ELF file has no PT_LOAD segment to load"),
            LoadError::SegmentFileRange { index, offset, size, image_len } => write!(
                f,
                "segment {index}: file bytes {} lie outside the {image_len}-byte image (truncated file?)",
                Range(*offset, *size)
            ),
            LoadError::SegmentFileSizeExceedsMemSize { index, filesz, memsz } => {
                write!(f, "segment {index}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}")
            }
            LoadError::SegmentOutsideRam { index, start, size, ram_start, ram_size } => write!(
                f,
                "segment {index} at {} lies outside guest RAM {}",
                Range(*start, *size),
                Range(*ram_start, *ram_size)
            ),
            LoadError::RawOutsideRam { addr, size, ram_start, ram_size } => write!(
                f,
                "raw image at {} lies outside guest RAM {}",
                Range(*addr, *size),
                Range(*ram_start, *ram_size)
            ),
        }
    }
}

impl core::error::Error for LoadError {}

impl From<ParseError> for LoadError {
    fn from(err: ParseError) -> Self {
        LoadError::Malformed(err)
    }
}

/// A `PT_LOAD` segment, checked against the image and RAM.
struct Segment {
    index: usize,
    paddr: u64,
    memsz: u64,
    /// The file bytes, `[p_offset, p_offset + p_filesz)` of the image.
    file: core::ops::Range<usize>,
}

/// Loads an ELF64 little-endian RISC-V executable (or shared object) into `ram`: every `PT_LOAD` segment's
/// file bytes to its `p_paddr`, zero-filled up to `p_memsz`. Returns the entry point and the addresses of the
/// `tohost` / `fromhost` symbols when the symbol table has them (an unreadable symbol table counts as absent).
pub fn load_elf(image: &[u8], ram: &mut Ram) -> Result<LoadedElf, LoadError> {
    check_header(image)?;
    let file = ElfBytes::<AnyEndian>::minimal_parse(image)?;
    let segments = file.segments().ok_or(LoadError::NoLoadableSegment)?;

    // First pass: check everything, so that a bad image leaves RAM untouched.
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut loadable = 0usize;
    for (index, phdr) in segments.iter().enumerate() {
        if let Some(segment) = check_segment(index, &phdr, image, ram)? {
            loadable += 1;
            start = start.min(segment.paddr);
            // Cannot overflow: the segment lies inside RAM.
            end = end.max(segment.paddr.saturating_add(segment.memsz));
        }
    }
    if loadable == 0 {
        return Err(LoadError::NoLoadableSegment);
    }

    // Second pass: copy. The checks are repeated (they cannot fail now) rather than trusted.
    for (index, phdr) in segments.iter().enumerate() {
        if let Some(segment) = check_segment(index, &phdr, image, ram)? {
            copy_segment(&segment, image, ram)?;
        }
    }

    let (tohost, fromhost) = find_htif_symbols(&file);
    Ok(LoadedElf { entry: file.ehdr.e_entry, tohost, fromhost, start, end })
}

/// Copies `image` to guest address `addr`.
pub fn load_raw(image: &[u8], addr: u64, ram: &mut Ram) -> Result<(), LoadError> {
    let size = image.len() as u64;
    let outside = LoadError::RawOutsideRam { addr, size, ram_start: ram.base(), ram_size: ram.size() };
    ram.write_bytes(addr, image).ok_or(outside)
}

/// Checks the identification and the fields that say what kind of file this is, before the full parse, so
/// that a file of the wrong kind is reported as such even when the rest of it would not parse.
fn check_header(image: &[u8]) -> Result<(), LoadError> {
    if image.get(..ELFMAG.len()) != Some(&ELFMAG[..]) {
        return Err(LoadError::NotElf);
    }
    if let Some(&class) = image.get(EI_CLASS) {
        if class != ELFCLASS64 {
            return Err(LoadError::NotElf64 { class });
        }
    }
    if let Some(&data) = image.get(EI_DATA) {
        if data != ELFDATA2LSB {
            return Err(LoadError::NotLittleEndian { data });
        }
    }
    let header = image.get(..EHDR64_SIZE).ok_or(LoadError::TruncatedHeader { len: image.len() })?;
    let field = |at: usize| match header.get(at..at + 2) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    };
    let e_type = field(16);
    let machine = field(18);
    if machine != EM_RISCV {
        return Err(LoadError::NotRiscV { machine });
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(LoadError::NotExecutable { e_type });
    }
    Ok(())
}

/// Checks program header `index`; `Some` for a `PT_LOAD` segment with bytes to place.
fn check_segment(
    index: usize,
    phdr: &elf::segment::ProgramHeader,
    image: &[u8],
    ram: &Ram,
) -> Result<Option<Segment>, LoadError> {
    if phdr.p_type != PT_LOAD {
        return Ok(None);
    }
    if phdr.p_filesz > phdr.p_memsz {
        return Err(LoadError::SegmentFileSizeExceedsMemSize { index, filesz: phdr.p_filesz, memsz: phdr.p_memsz });
    }
    let file_range =
        LoadError::SegmentFileRange { index, offset: phdr.p_offset, size: phdr.p_filesz, image_len: image.len() };
    let file = match (usize::try_from(phdr.p_offset), usize::try_from(phdr.p_filesz)) {
        (Ok(offset), Ok(size)) => match offset.checked_add(size) {
            Some(end) if end <= image.len() => offset..end,
            _ => return Err(file_range),
        },
        _ => return Err(file_range),
    };
    if phdr.p_memsz == 0 {
        return Ok(None);
    }
    if ram.offset_of(phdr.p_paddr, phdr.p_memsz).is_none() {
        return Err(LoadError::SegmentOutsideRam {
            index,
            start: phdr.p_paddr,
            size: phdr.p_memsz,
            ram_start: ram.base(),
            ram_size: ram.size(),
        });
    }
    Ok(Some(Segment { index, paddr: phdr.p_paddr, memsz: phdr.p_memsz, file }))
}

fn copy_segment(segment: &Segment, image: &[u8], ram: &mut Ram) -> Result<(), LoadError> {
    let outside = LoadError::SegmentOutsideRam {
        index: segment.index,
        start: segment.paddr,
        size: segment.memsz,
        ram_start: ram.base(),
        ram_size: ram.size(),
    };
    let src = image.get(segment.file.clone()).ok_or(LoadError::SegmentFileRange {
        index: segment.index,
        offset: segment.file.start as u64,
        size: segment.file.len() as u64,
        image_len: image.len(),
    })?;
    if !ram.contains(segment.paddr, segment.memsz) {
        return Err(outside);
    }
    if src.len() as u64 > segment.memsz {
        return Err(LoadError::SegmentFileSizeExceedsMemSize {
            index: segment.index,
            filesz: src.len() as u64,
            memsz: segment.memsz,
        });
    }
    let zeros = segment.memsz - src.len() as u64;
    // Both inside: `contains` said so.
    match (ram.write_bytes(segment.paddr, src), ram.fill(segment.paddr + src.len() as u64, zeros, 0)) {
        (Some(()), Some(())) => Ok(()),
        _ => Err(outside),
    }
}

/// The values of the defined symbols `tohost` and `fromhost`; a missing or unreadable symbol table gives none.
fn find_htif_symbols(file: &ElfBytes<AnyEndian>) -> (Option<u64>, Option<u64>) {
    let mut tohost = None;
    let mut fromhost = None;
    if let Ok(Some((symbols, names))) = file.symbol_table() {
        for symbol in symbols.iter() {
            if symbol.is_undefined() {
                continue;
            }
            match names.get(symbol.st_name as usize) {
                Ok("tohost") if tohost.is_none() => tohost = Some(symbol.st_value),
                Ok("fromhost") if fromhost.is_none() => fromhost = Some(symbol.st_value),
                _ => {}
            }
        }
    }
    (tohost, fromhost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RAM_BASE;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    const RAM_SIZE: usize = 0x4000;
    const PHDR_SIZE: usize = 56;
    const SHDR_SIZE: usize = 64;
    const SYM_SIZE: usize = 24;

    struct Seg {
        paddr: u64,
        vaddr: u64,
        bytes: Vec<u8>,
        memsz: u64,
        p_type: u32,
    }

    fn load_seg(paddr: u64, bytes: &[u8], memsz: u64) -> Seg {
        Seg { paddr, vaddr: paddr, bytes: bytes.to_vec(), memsz, p_type: PT_LOAD }
    }

    /// Builds an ELF64 little-endian image: header, program headers, segment bytes, then (when there are
    /// symbols) `.strtab`, `.symtab` and a section header table [null, .symtab, .strtab].
    struct ElfBuilder {
        machine: u16,
        e_type: u16,
        entry: u64,
        segs: Vec<Seg>,
        symbols: Vec<(&'static str, u64, u16)>,
    }

    impl ElfBuilder {
        fn new() -> Self {
            Self { machine: EM_RISCV, e_type: ET_EXEC, entry: RAM_BASE, segs: Vec::new(), symbols: Vec::new() }
        }

        fn seg(mut self, seg: Seg) -> Self {
            self.segs.push(seg);
            self
        }

        fn symbol(mut self, name: &'static str, value: u64) -> Self {
            self.symbols.push((name, value, 1));
            self
        }

        fn undefined_symbol(mut self, name: &'static str) -> Self {
            self.symbols.push((name, 0, 0));
            self
        }

        fn build(&self) -> Vec<u8> {
            let phoff = EHDR64_SIZE;
            let mut out = vec![0u8; phoff + PHDR_SIZE * self.segs.len()];
            let mut seg_offsets = Vec::new();
            for seg in &self.segs {
                seg_offsets.push(out.len() as u64);
                out.extend_from_slice(&seg.bytes);
            }
            let (mut shoff, mut shnum) = (0u64, 0u16);
            if !self.symbols.is_empty() {
                let strtab_off = out.len();
                out.push(0);
                let mut name_offsets = Vec::new();
                for (name, _, _) in &self.symbols {
                    name_offsets.push((out.len() - strtab_off) as u32);
                    out.extend_from_slice(name.as_bytes());
                    out.push(0);
                }
                let strtab_size = out.len() - strtab_off;
                while !out.len().is_multiple_of(8) {
                    out.push(0);
                }
                let symtab_off = out.len();
                out.extend_from_slice(&[0u8; SYM_SIZE]); // the null symbol
                for ((_, value, shndx), name) in self.symbols.iter().zip(&name_offsets) {
                    out.extend_from_slice(&name.to_le_bytes());
                    out.push(0x11); // GLOBAL OBJECT
                    out.push(0);
                    out.extend_from_slice(&shndx.to_le_bytes());
                    out.extend_from_slice(&value.to_le_bytes());
                    out.extend_from_slice(&8u64.to_le_bytes());
                }
                let symtab_size = out.len() - symtab_off;
                shoff = out.len() as u64;
                shnum = 3;
                out.extend_from_slice(&[0u8; SHDR_SIZE]);
                out.extend_from_slice(&shdr(2, symtab_off, symtab_size, 2, SYM_SIZE as u64)); // SHT_SYMTAB
                out.extend_from_slice(&shdr(3, strtab_off, strtab_size, 0, 0)); // SHT_STRTAB
            }
            let mut h = Vec::new();
            h.extend_from_slice(&ELFMAG);
            h.extend_from_slice(&[ELFCLASS64, ELFDATA2LSB, 1, 0]);
            h.extend_from_slice(&[0u8; 8]);
            h.extend_from_slice(&self.e_type.to_le_bytes());
            h.extend_from_slice(&self.machine.to_le_bytes());
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&self.entry.to_le_bytes());
            h.extend_from_slice(&(phoff as u64).to_le_bytes());
            h.extend_from_slice(&shoff.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&(EHDR64_SIZE as u16).to_le_bytes());
            h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
            h.extend_from_slice(&(self.segs.len() as u16).to_le_bytes());
            h.extend_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
            h.extend_from_slice(&shnum.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            assert_eq!(h.len(), EHDR64_SIZE);
            out[..EHDR64_SIZE].copy_from_slice(&h);
            for (i, (seg, offset)) in self.segs.iter().zip(&seg_offsets).enumerate() {
                let mut p = Vec::new();
                p.extend_from_slice(&seg.p_type.to_le_bytes());
                p.extend_from_slice(&5u32.to_le_bytes()); // R X
                p.extend_from_slice(&offset.to_le_bytes());
                p.extend_from_slice(&seg.vaddr.to_le_bytes());
                p.extend_from_slice(&seg.paddr.to_le_bytes());
                p.extend_from_slice(&(seg.bytes.len() as u64).to_le_bytes());
                p.extend_from_slice(&seg.memsz.to_le_bytes());
                p.extend_from_slice(&8u64.to_le_bytes());
                let at = phoff + i * PHDR_SIZE;
                out[at..at + PHDR_SIZE].copy_from_slice(&p);
            }
            out
        }
    }

    fn shdr(sh_type: u32, offset: usize, size: usize, link: u32, entsize: u64) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&0u32.to_le_bytes());
        s.extend_from_slice(&sh_type.to_le_bytes());
        s.extend_from_slice(&0u64.to_le_bytes());
        s.extend_from_slice(&0u64.to_le_bytes());
        s.extend_from_slice(&(offset as u64).to_le_bytes());
        s.extend_from_slice(&(size as u64).to_le_bytes());
        s.extend_from_slice(&link.to_le_bytes());
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(&8u64.to_le_bytes());
        s.extend_from_slice(&entsize.to_le_bytes());
        s
    }

    /// Overwrites the u64 field at `field` (byte offset within the program header) of program header `i`.
    fn patch_phdr(image: &mut [u8], i: usize, field: usize, value: u64) {
        let at = EHDR64_SIZE + i * PHDR_SIZE + field;
        image[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    const P_OFFSET: usize = 8;
    const P_FILESZ: usize = 32;

    fn load(image: &[u8]) -> (Result<LoadedElf, LoadError>, Vec<u8>) {
        let mut backing = vec![0xaau8; RAM_SIZE];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let result = load_elf(image, &mut ram);
        (result, backing)
    }

    #[test]
    fn loads_segments_zero_fills_and_finds_htif_symbols() {
        let image = ElfBuilder::new()
            .seg(load_seg(RAM_BASE, &[0x13, 0, 0, 0, 0x6f, 0, 0, 0], 8))
            .seg(Seg {
                p_type: 4, // PT_NOTE: not loaded
                ..load_seg(RAM_BASE + 0x800, b"note", 4)
            })
            .seg(Seg {
                vaddr: 0xffff_ffff_8000_1000, // a different virtual address: p_paddr wins
                ..load_seg(RAM_BASE + 0x1000, b"data", 0x20)
            })
            .symbol("_start", RAM_BASE)
            .undefined_symbol("fromhost")
            .symbol("tohost", RAM_BASE + 0x2000)
            .symbol("fromhost", RAM_BASE + 0x2040)
            .build();
        let (result, ram) = load(&image);
        let loaded = result.expect("a valid image loads");
        assert_eq!(
            loaded,
            LoadedElf {
                entry: RAM_BASE,
                tohost: Some(RAM_BASE + 0x2000),
                fromhost: Some(RAM_BASE + 0x2040),
                start: RAM_BASE,
                end: RAM_BASE + 0x1020,
            }
        );
        assert_eq!(&ram[..8], &[0x13, 0, 0, 0, 0x6f, 0, 0, 0]);
        assert_eq!(&ram[0x800..0x804], &[0xaa; 4], "PT_NOTE is not loaded");
        assert_eq!(&ram[0x1000..0x1004], b"data");
        assert!(ram[0x1004..0x1020].iter().all(|&b| b == 0), "zero-filled to p_memsz");
        assert_eq!(ram[0x1020], 0xaa, "nothing past p_memsz");
    }

    #[test]
    fn no_symbol_table_means_no_htif_addresses() {
        let image = ElfBuilder::new().seg(load_seg(RAM_BASE + 4, b"abcd", 4)).build();
        let (result, ram) = load(&image);
        let loaded = result.expect("loads");
        assert_eq!((loaded.tohost, loaded.fromhost), (None, None));
        assert_eq!(&ram[4..8], b"abcd");
    }

    #[test]
    fn shared_objects_load_too() {
        let mut b = ElfBuilder::new().seg(load_seg(RAM_BASE, b"x", 1));
        b.e_type = ET_DYN;
        assert!(load(&b.build()).0.is_ok());
        b.e_type = 1; // ET_REL
        let err = load(&b.build()).0.expect_err("relocatable");
        assert!(matches!(err, LoadError::NotExecutable { e_type: 1 }), "{err}");
    }

    #[test]
    fn wrong_kind_of_file() {
        let good = ElfBuilder::new().seg(load_seg(RAM_BASE, b"x", 1)).build();

        let err = load(b"\x7fELG").0.expect_err("bad magic");
        assert!(matches!(err, LoadError::NotElf));
        assert!(matches!(load(b"").0, Err(LoadError::NotElf)));

        let mut elf32 = good.clone();
        elf32[EI_CLASS] = ELFCLASS32;
        let err = load(&elf32).0.expect_err("ELF32");
        assert!(matches!(err, LoadError::NotElf64 { class: 1 }));
        assert!(err.to_string().contains("not a 64-bit ELF file"), "{err}");

        let mut bad_class = good.clone();
        bad_class[EI_CLASS] = 9;
        assert!(matches!(load(&bad_class).0, Err(LoadError::NotElf64 { class: 9 })));

        let mut big = good.clone();
        big[EI_DATA] = ELFDATA2MSB;
        let err = load(&big).0.expect_err("big-endian");
        assert!(matches!(err, LoadError::NotLittleEndian { data: 2 }));

        let mut b = ElfBuilder::new().seg(load_seg(RAM_BASE, b"x", 1));
        b.machine = 62; // x86-64
        let err = load(&b.build()).0.expect_err("x86-64");
        assert!(matches!(err, LoadError::NotRiscV { machine: 62 }));
        assert_eq!(err.to_string(), "not a RISC-V ELF file (found machine 62, expected 243)");
    }

    #[test]
    fn truncated_images_are_refused() {
        let image = ElfBuilder::new().seg(load_seg(RAM_BASE, &[1; 64], 64)).symbol("tohost", RAM_BASE + 0x100).build();
        for len in [4, 5, 6, 20, 63] {
            let err = load(&image[..len]).0.expect_err("truncated header");
            assert!(matches!(err, LoadError::TruncatedHeader { .. }), "{len}: {err}");
        }
        // Program headers, segment bytes and section headers cut off: all refused, RAM untouched.
        for len in 64..image.len() {
            let (result, ram) = load(&image[..len]);
            let err = result.expect_err("truncated image");
            assert!(matches!(err, LoadError::Malformed(_) | LoadError::SegmentFileRange { .. }), "{len}: {err}");
            assert!(ram.iter().all(|&b| b == 0xaa), "{len}: RAM written by a rejected image");
        }
        assert!(load(&image).0.is_ok());
    }

    #[test]
    fn segment_outside_ram_is_named() {
        for (paddr, memsz) in [
            (RAM_BASE - 4, 8),
            (RAM_BASE + RAM_SIZE as u64 - 4, 8),
            (0x1000, 2),
            (u64::MAX - 2, 8),
            (RAM_BASE, u64::MAX),
        ] {
            let image = ElfBuilder::new()
                .seg(load_seg(RAM_BASE, b"ok", 2))
                .seg(Seg { memsz, ..load_seg(paddr, b"zz", 2) })
                .build();
            let (result, ram) = load(&image);
            let err = result.expect_err("outside RAM");
            assert!(
                matches!(err, LoadError::SegmentOutsideRam { index: 1, start, size, .. } if start == paddr && size == memsz),
                "{err}"
            );
            assert!(err.to_string().starts_with("segment 1 at [0x"), "{err}");
            assert!(err.to_string().contains("outside guest RAM [0x80000000, 0x80004000)"), "{err}");
            assert_eq!(&ram[..2], &[0xaa, 0xaa], "the valid segment before it was not loaded either");
        }
    }

    #[test]
    fn filesz_larger_than_memsz_is_refused() {
        let image = ElfBuilder::new().seg(load_seg(RAM_BASE, b"abcdef", 4)).build();
        let err = load(&image).0.expect_err("filesz > memsz");
        assert!(matches!(err, LoadError::SegmentFileSizeExceedsMemSize { index: 0, filesz: 6, memsz: 4 }), "{err}");
        assert_eq!(err.to_string(), "segment 0: p_filesz 0x6 exceeds p_memsz 0x4");
    }

    #[test]
    fn huge_offsets_and_sizes_are_refused() {
        let good = ElfBuilder::new().seg(load_seg(RAM_BASE, b"abcd", 0x100)).build();
        for (field, value) in [
            (P_OFFSET, u64::MAX),
            (P_OFFSET, u64::MAX - 1),
            (P_OFFSET, good.len() as u64),
            (P_FILESZ, 0x100),
            (P_OFFSET, 1 << 40),
        ] {
            let mut image = good.clone();
            patch_phdr(&mut image, 0, field, value);
            let (result, ram) = load(&image);
            let err = result.expect_err("file range outside the image");
            assert!(matches!(err, LoadError::SegmentFileRange { index: 0, .. }), "{err}");
            assert!(err.to_string().contains("outside the"), "{err}");
            assert!(ram.iter().all(|&b| b == 0xaa));
        }
        // A huge e_phoff, an e_phnum whose table runs past the image, a huge e_shoff: a malformed file.
        for (at, bytes) in [(32usize, u64::MAX.to_le_bytes().to_vec()), (56, vec![0xff, 0x00]), (40, vec![0xff; 8])] {
            let mut image = good.clone();
            image[at..at + bytes.len()].copy_from_slice(&bytes);
            let err = load(&image).0.expect_err("bad header table");
            assert!(matches!(err, LoadError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn no_loadable_segment() {
        let image = ElfBuilder::new().build();
        assert!(matches!(load(&image).0, Err(LoadError::NoLoadableSegment)));
        let image = ElfBuilder::new().seg(load_seg(RAM_BASE, b"", 0)).build();
        assert!(matches!(load(&image).0, Err(LoadError::NoLoadableSegment)));
    }

    #[test]
    fn random_corruption_never_panics() {
        let image = ElfBuilder::new()
            .seg(load_seg(RAM_BASE, &[7; 40], 64))
            .seg(load_seg(RAM_BASE + 0x100, &[9; 16], 16))
            .symbol("tohost", RAM_BASE + 0x1000)
            .symbol("fromhost", RAM_BASE + 0x1040)
            .build();
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        for _ in 0..20_000 {
            let mut corrupt = image.clone();
            for _ in 0..1 + x % 4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x >> 16) as usize % corrupt.len();
                corrupt[at] = (x >> 8) as u8;
            }
            let cut = if x & 1 != 0 { (x >> 40) as usize % corrupt.len() } else { corrupt.len() };
            let _ = load(&corrupt[..cut]);
        }
    }

    #[test]
    fn raw_images() {
        let mut backing = vec![0u8; 16];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        load_raw(b"abcd", RAM_BASE + 12, &mut ram).expect("fits");
        let err = load_raw(b"abcd", RAM_BASE + 13, &mut ram).expect_err("runs past RAM");
        assert_eq!(
            err.to_string(),
            "raw image at [0x8000000d, 0x80000011) lies outside guest RAM [0x80000000, 0x80000010)"
        );
        assert!(load_raw(b"a", u64::MAX, &mut ram).is_err());
        assert!(load_raw(b"a", RAM_BASE - 1, &mut ram).is_err());
        load_raw(b"", RAM_BASE + 16, &mut ram).expect("an empty image fits at the end");
        assert_eq!(&backing[12..], b"abcd");
    }
}
