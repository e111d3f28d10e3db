//! Tests of the scanner and the patch table: unit tests for each rule, and model tests that run random
//! instruction streams through the scanner and then through the reference interpreter on the patched page.

use super::*;
use crate::exec::interp;
use crate::hart::{Exception, Hart, HartConfig, Privilege};
use crate::isa::csr::mstatus;
use crate::isa::{encode, BranchCond, OpImmKind};
use crate::mem::mmu::{Memory, Tlb, VmRealMap};
use crate::mem::{Ram, RAM_BASE};
use crate::patch::sensitivity::{critical_set, encode_cache_block_operation, CacheBlockOp, EnvcfgExposure, VmmConfig};
use crate::patch::table::PAGE_SIZE;
use crate::trap::Exit;
use proptest::prelude::*;

/// The page the tests scan: the second of three RAM pages.
const CODE: u64 = RAM_BASE + PAGE_SIZE;
const NEXT: u64 = CODE + PAGE_SIZE;
const RAM_SIZE: usize = 3 * PAGE_SIZE as usize;

type Table = PatchTable<256, 8>;

fn csrr(rd: u8, csr: u16) -> u32 {
    encode(&Inst::Csr { op: CsrOp::Rs, rd, src: 0, csr })
}

fn addi(rd: u8, rs1: u8, imm: i32) -> u32 {
    encode(&Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm })
}

fn jal(rd: u8, offset: i32) -> u32 {
    encode(&Inst::Jal { rd, offset })
}

fn beq(rs1: u8, rs2: u8, offset: i32) -> u32 {
    encode(&Inst::Branch { cond: BranchCond::Eq, rs1, rs2, offset })
}

/// `c.j offset`.
fn c_j(offset: i32) -> u16 {
    let o = offset as u32;
    let bits = ((o >> 11) & 1) << 12
        | ((o >> 4) & 1) << 11
        | ((o >> 8) & 3) << 9
        | ((o >> 10) & 1) << 8
        | ((o >> 6) & 1) << 7
        | ((o >> 7) & 1) << 6
        | ((o >> 1) & 7) << 3
        | ((o >> 5) & 1) << 2;
    (0b101 << 13 | bits | 1) as u16
}

const C_NOP: u16 = 0x0001;
const C_RET: u16 = 0x8082;
const RDTIME_A0: u32 = 0xc010_2573;

/// A code image: bytes placed at page offsets.
struct Image(Vec<u8>);

impl Image {
    fn new() -> Self {
        // Filler that decodes as `c.nop` wherever it is reached.
        let mut bytes = vec![0u8; RAM_SIZE];
        for pair in bytes.chunks_mut(2) {
            pair.copy_from_slice(&C_NOP.to_le_bytes());
        }
        Image(bytes)
    }

    fn word(&mut self, pa: u64, word: u32) -> &mut Self {
        let at = (pa - RAM_BASE) as usize;
        self.0[at..at + 4].copy_from_slice(&word.to_le_bytes());
        self
    }

    fn parcel(&mut self, pa: u64, parcel: u16) -> &mut Self {
        let at = (pa - RAM_BASE) as usize;
        self.0[at..at + 2].copy_from_slice(&parcel.to_le_bytes());
        self
    }
}

fn read_word(ram: &Ram, pa: u64) -> u32 {
    ram.load(pa, 4).unwrap() as u32
}

/// Every byte of `[pa, pa + len)` read back through the table.
fn read_unpatched(ram: &Ram, table: &Table, pa: u64, len: u64) -> Vec<u8> {
    let mut bytes = ram.slice(pa, len).unwrap().to_vec();
    table.unpatch(pa, &mut bytes);
    bytes
}

#[test]
fn c_j_encodes_what_the_decoder_reads() {
    for offset in [-2048, -64, -2, 2, 6, 64, 2046] {
        assert_eq!(isa::decode_compressed(c_j(offset)), Inst::Jal { rd: 0, offset }, "{offset}");
    }
}

#[test]
fn a_counter_read_on_the_path_is_patched_in_its_first_parcel_only() {
    let mut image = Image::new();
    image.word(CODE + 0x100, addi(10, 0, 1)).word(CODE + 0x104, RDTIME_A0).parcel(CODE + 0x108, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE + 0x100, None, Coverage::Paths).unwrap();
    assert_eq!(report, ScanReport { instructions: 3, patched: 1, ..ScanReport::default() });
    assert_eq!(read_word(&ram, CODE + 0x104), RDTIME_A0 & 0xffff_0000, "the high parcel is untouched");
    assert_eq!(table.patched_original(CODE + 0x104), Some((RDTIME_A0, 4)));
    assert_eq!(table.patched_original(CODE + 0x106), None);
    assert!(table.is_scanned(CODE) && table.is_scanned(CODE + 0xfff) && !table.is_scanned(NEXT));
    assert_eq!(read_word(&ram, CODE + 0x100), addi(10, 0, 1));
    // Reads through the table see the original, at any alignment and length.
    for (pa, len) in [(CODE + 0x104, 4), (CODE + 0x103, 2), (CODE + 0x105, 1), (CODE + 0xfe, 16)] {
        let original = {
            let at = (pa - RAM_BASE) as usize;
            let mut fresh = Image::new();
            fresh.word(CODE + 0x100, addi(10, 0, 1)).word(CODE + 0x104, RDTIME_A0).parcel(CODE + 0x108, C_RET);
            fresh.0[at..at + len as usize].to_vec()
        };
        assert_eq!(read_unpatched(&ram, &table, pa, len), original, "{pa:#x}+{len}");
    }
    assert_eq!(
        scan(&mut table, &mut ram, &CounterReads, CODE + 0x100, None, Coverage::Paths),
        Err(ScanError::AlreadyScanned)
    );
}

#[test]
fn both_sides_of_a_branch_calls_and_their_returns_are_followed() {
    let mut image = Image::new();
    image
        .word(CODE, beq(10, 11, 12)) // -> CODE + 12
        .word(CODE + 4, csrr(5, csr::CYCLE))
        .word(CODE + 8, jal(0, 0x20)) // -> CODE + 0x28
        .word(CODE + 12, csrr(6, csr::INSTRET))
        .word(CODE + 16, jal(1, 0x2000)) // a call out of the page: it returns to CODE + 20
        .word(CODE + 20, csrr(7, csr::TIME))
        .parcel(CODE + 24, C_RET)
        .word(CODE + 0x28, csrr(8, csr::TIME))
        .parcel(CODE + 0x2c, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE, None, Coverage::Paths).unwrap();
    assert_eq!(report.patched, 4);
    for pa in [CODE + 4, CODE + 12, CODE + 20, CODE + 0x28] {
        assert!(table.site(pa).is_some(), "{pa:#x}");
    }
}

#[test]
fn data_after_a_jump_is_not_decoded_and_only_guarded_on_request() {
    let build = || {
        let mut image = Image::new();
        image
            .parcel(CODE + 0x10, c_j(10)) // -> CODE + 0x1a
            // Data: a word that reads as `rdtime`, and the start of a 32-bit pattern whose second parcel is an
            // `rdtime` low parcel, which a linear sweep from 0x16 would decode as one instruction.
            .word(CODE + 0x12, RDTIME_A0)
            .word(CODE + 0x16, 0x2573_0013)
            .parcel(CODE + 0x1a, C_RET);
        image
    };
    let mut image = build();
    let original = image.0.clone();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE + 0x10, None, Coverage::Paths).unwrap();
    assert_eq!(
        report,
        ScanReport { instructions: 2, patched: 0, guarded: 0, unreached_critical: 1, incomplete: false }
    );
    assert!(!report.covers_every_entry());
    assert_eq!(ram.as_slice().unwrap(), &original[..], "nothing patched");
    assert_eq!(table.sites(), 0);
    assert!(table.is_scanned(CODE), "a page without sites is still scanned");

    let mut image = build();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE + 0x10, None, Coverage::Guard).unwrap();
    assert_eq!(report.guarded, 1);
    assert!(report.covers_every_entry());
    assert!(table.site(CODE + 0x12).is_some());
    assert_eq!(read_unpatched(&ram, &table, RAM_BASE, RAM_SIZE as u64), original);
}

#[test]
fn a_guard_is_never_placed_in_the_second_parcel_of_a_reached_instruction() {
    let mut image = Image::new();
    // `addi` whose high parcel is an `rdtime` low parcel, followed by the rest of that `rdtime`.
    image.word(CODE, 0x2573_0013).parcel(CODE + 4, 0xc010).parcel(CODE + 6, C_RET);
    let original = image.0.clone();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE, None, Coverage::Guard).unwrap();
    assert_eq!((report.guarded, report.unreached_critical), (0, 1));
    assert_eq!(ram.as_slice().unwrap(), &original[..]);
}

#[test]
fn a_critical_instruction_overlapping_a_reached_instruction_is_a_conflict() {
    let mut image = Image::new();
    image
        .word(CODE, 0x2573_0013) // addi covering CODE+2, the low parcel of an rdtime at CODE+2
        .parcel(CODE + 4, 0xc010)
        .word(CODE + 6, beq(1, 2, -6)) // entry: -> CODE
        .word(CODE + 10, jal(0, -8)); // -> CODE + 2
    let original = image.0.clone();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    assert_eq!(
        scan(&mut table, &mut ram, &CounterReads, CODE + 6, None, Coverage::Paths),
        Err(ScanError::Conflict { pa: CODE + 2 })
    );
    assert_eq!(ram.as_slice().unwrap(), &original[..]);
    assert_eq!((table.sites(), table.scanned_pages()), (0, 0));
}

#[test]
fn an_instruction_straddling_the_page_end_is_decoded_with_the_next_pages_parcel() {
    let end = NEXT - 2;
    let mut image = Image::new();
    image.parcel(end - 2, C_NOP).word(end, RDTIME_A0);
    let original = image.0.clone();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let next = original_parcel(&table, &ram, NEXT);
    assert_eq!(next, Some((RDTIME_A0 >> 16) as u16));
    let report = scan(&mut table, &mut ram, &CounterReads, end - 2, next, Coverage::Paths).unwrap();
    assert_eq!(report.patched, 1);
    let site = table.site(end).unwrap();
    assert_eq!(site, PatchSite { pa: end, word: RDTIME_A0, len: 4, straddles: true });
    assert_eq!(ram.load(NEXT, 2), Some((RDTIME_A0 >> 16) as u64), "the next page is never written");
    assert_eq!(ram.load(end, 2), Some(0));
    // The dispatcher takes the high half from the current translation of pc + 2.
    assert_eq!(site.with_upper(0xc020), 0xc020_2573);
    assert_eq!(read_unpatched(&ram, &table, RAM_BASE, RAM_SIZE as u64), original);
}

#[test]
fn a_straddling_instruction_without_its_next_page() {
    let end = NEXT - 2;
    // A possible CSR access is patched conservatively; anything else is left alone.
    for (low, patched) in [(0x2573u16, true), (0x0513, false)] {
        let mut image = Image::new();
        image.parcel(end, low);
        let mut table = Table::new();
        let mut ram = Ram::new(RAM_BASE, &mut image.0);
        let report = scan(&mut table, &mut ram, &CounterReads, end, None, Coverage::Paths).unwrap();
        assert_eq!(report.patched, patched as u16, "{low:#x}");
        assert_eq!(table.site(end).is_some(), patched);
        if patched {
            assert_eq!(table.site(end).unwrap(), PatchSite { pa: end, word: low as u32, len: 4, straddles: true });
        }
        assert!(!report.incomplete);
    }
    // A branch there cannot be followed.
    let mut image = Image::new();
    image.parcel(end, beq(1, 2, -8) as u16);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    assert!(scan(&mut table, &mut ram, &CounterReads, end, None, Coverage::Paths).unwrap().incomplete);
}

#[test]
fn a_straddling_branch_is_followed_back_into_the_page() {
    let end = NEXT - 2;
    let branch = beq(1, 2, -0x100);
    let mut image = Image::new();
    image.word(end, branch).word(end - 0x100, RDTIME_A0).parcel(end - 0xfc, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let next = original_parcel(&table, &ram, NEXT);
    let report = scan(&mut table, &mut ram, &CounterReads, end, next, Coverage::Paths).unwrap();
    assert_eq!((report.patched, report.incomplete), (1, false));
    assert!(table.site(end - 0x100).is_some());
}

#[test]
fn the_guests_own_illegal_words_are_not_sites() {
    let mut image = Image::new();
    image.word(CODE, 0).word(CODE + 4, RDTIME_A0);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE, None, Coverage::Guard).unwrap();
    assert_eq!(report.instructions, 1, "the path stops at the illegal word");
    assert_eq!(table.patched_original(CODE), None);
    assert_eq!(table.patched_original(CODE + 4), Some((RDTIME_A0, 4)), "guarded");
}

#[test]
fn bad_entries_change_nothing() {
    let mut image = Image::new();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    assert_eq!(scan(&mut table, &mut ram, &CounterReads, CODE + 1, None, Coverage::Paths), Err(ScanError::Misaligned));
    assert_eq!(scan(&mut table, &mut ram, &CounterReads, 0x1000, None, Coverage::Paths), Err(ScanError::NotRam));
    assert_eq!(table.scanned_pages(), 0);
}

#[test]
fn a_full_table_leaves_the_page_unscanned_and_unpatched() {
    let mut image = Image::new();
    image.word(CODE, RDTIME_A0).word(CODE + 4, RDTIME_A0).parcel(CODE + 8, C_RET).word(RAM_BASE, RDTIME_A0);
    let original = image.0.clone();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let mut small: PatchTable<1, 1> = PatchTable::new();
    assert_eq!(
        scan(&mut small, &mut ram, &CounterReads, CODE, None, Coverage::Paths),
        Err(ScanError::Full(TableFull::Sites { needed: 2 }))
    );
    assert_eq!(ram.as_slice().unwrap(), &original[..]);
    assert_eq!((small.sites(), small.scanned_pages()), (0, 0));
    // One page fits; the second does not, until the first is evicted (its bytes restored).
    assert!(scan(&mut small, &mut ram, &CounterReads, RAM_BASE, None, Coverage::Paths).is_ok());
    let mut empty_page = Image::new();
    let mut other = Ram::new(RAM_BASE, &mut empty_page.0);
    assert_eq!(
        scan(&mut small, &mut other, &CounterReads, CODE, None, Coverage::Paths),
        Err(ScanError::Full(TableFull::Pages))
    );
    assert_eq!(small.evict_any(&mut ram), Some(RAM_BASE));
    assert_eq!(ram.as_slice().unwrap(), &original[..]);
    assert!(scan(&mut small, &mut other, &CounterReads, CODE, None, Coverage::Paths).is_ok());
}

#[test]
fn a_write_drops_the_pages_patches_as_if_the_code_had_never_been_patched() {
    let mut image = Image::new();
    image.word(CODE, RDTIME_A0).word(CODE + 4, csrr(11, csr::CYCLE)).parcel(CODE + 8, C_RET);
    image.word(NEXT, RDTIME_A0).parcel(NEXT + 4, C_RET);
    let mut expected = image.0.clone();
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    scan(&mut table, &mut ram, &CounterReads, CODE, None, Coverage::Paths).unwrap();
    scan(&mut table, &mut ram, &CounterReads, NEXT, None, Coverage::Paths).unwrap();
    assert_eq!(table.sites(), 3);
    // A one-byte store into the high half of the first patched word, and a two-byte store over the low half
    // of the second: the rest of each original instruction survives.
    assert_eq!(table.prepare_write(CODE + 3, 1, &mut ram), 1);
    ram.store(CODE + 3, 1, 0xaa).unwrap();
    expected[PAGE_SIZE as usize + 3] = 0xaa;
    assert!(!table.is_scanned(CODE) && table.is_scanned(NEXT));
    assert_eq!(table.sites(), 1);
    assert_eq!(ram.slice(CODE, PAGE_SIZE).unwrap(), &expected[PAGE_SIZE as usize..2 * PAGE_SIZE as usize]);
    assert!(!table.drop_page(CODE, &mut ram), "already dropped");
    // A write straddling both pages drops the second too.
    assert_eq!(table.prepare_write(NEXT - 2, 4, &mut ram), 1);
    assert_eq!(ram.as_slice().unwrap(), &expected[..]);
    assert_eq!((table.sites(), table.scanned_pages()), (0, 0));
}

#[test]
fn the_first_parcel_is_never_a_guard_and_a_straddler_reads_the_next_pages_original() {
    // The next page starts with an `rdtime` that a path reaches (a site at offset 0) and, off its paths, holds
    // another; this page ends with an instruction straddling into it (its high half is that `rdtime`'s low).
    let end = NEXT - 2;
    let mut image = Image::new();
    image.word(end, RDTIME_A0).word(NEXT, RDTIME_A0).parcel(NEXT + 4, C_RET).word(NEXT + 6, RDTIME_A0);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    scan(&mut table, &mut ram, &CounterReads, NEXT, None, Coverage::Guard).unwrap();
    assert!(table.site(NEXT).is_some() && table.site(NEXT + 6).is_some());
    assert_eq!(original_parcel(&table, &ram, NEXT), Some(0x2573), "the original, not the trap parcel");
    // A predicate that also wants `csrrs a0, 0x257, a0`: the straddler `0x2573_2573`, read whole with the next
    // page's original parcel (with the trap parcel it would be `csrrs a0, 0x000, a0`).
    let critical = |inst: &Inst| matches!(inst, Inst::Csr { csr: 0x257, .. }) || CounterReads.is_critical(inst);
    let next = original_parcel(&table, &ram, NEXT);
    let report = scan(&mut table, &mut ram, &critical, end, next, Coverage::Guard).unwrap();
    assert_eq!(table.site(end).map(|site| site.word), Some(0x2573_2573));
    assert_eq!(report.patched, 1);

    // Off the paths, a critical-looking first parcel is reported, not guarded.
    let mut image = Image::new();
    image.word(CODE, RDTIME_A0).parcel(CODE + 8, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &CounterReads, CODE + 8, None, Coverage::Guard).unwrap();
    assert_eq!((report.guarded, report.unreached_critical), (0, 1));
    assert!(!report.covers_every_entry());
}

/// The board's configuration with the counters delegated (the critical set the sensitivity table derives).
fn delegated_counters() -> CriticalSet {
    critical_set(&VmmConfig { delegate_counters: true, ..VmmConfig::BOARD })
}

#[test]
fn the_sensitivity_tables_critical_set_plugs_in() {
    let set = delegated_counters();
    for word in [RDTIME_A0, csrr(1, csr::CYCLE), csrr(0, csr::INSTRET), csrr(5, csr::MSTATUS), addi(1, 2, 3)] {
        let inst = isa::decode_word(word);
        assert_eq!(set.is_critical(&inst), CounterReads.is_critical(&inst), "{inst:?}");
    }
    assert!(!critical_set(&VmmConfig::BOARD).may_start_critical(RDTIME_A0 as u16), "trap-everything: nothing");

    // With `cbo.zero` exposed, it is critical (the virtual hart has no Zicboz): patched like any other, and
    // a straddling one whose second half is unknown cannot be, so the scan refuses the page.
    let exposed =
        critical_set(&VmmConfig { envcfg: EnvcfgExposure { cbze: true, ..EnvcfgExposure::NONE }, ..VmmConfig::BOARD });
    let zero = encode_cache_block_operation(CacheBlockOp::Zero, 10);
    assert!(exposed.is_critical(&isa::decode_word(zero)) && exposed.may_start_critical(zero as u16));
    let end = NEXT - 2;
    let mut image = Image::new();
    image.word(CODE, zero).parcel(CODE + 4, C_RET).word(end, zero);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let report = scan(&mut table, &mut ram, &exposed, CODE, None, Coverage::Paths).unwrap();
    assert_eq!(report.patched, 1);
    assert_eq!(table.patched_original(CODE), Some((zero, 4)));
    assert_eq!(scan(&mut table, &mut ram, &exposed, end, None, Coverage::Paths), Err(ScanError::AlreadyScanned));
    table.drop_page(CODE, &mut ram);
    assert_eq!(
        scan(&mut table, &mut ram, &exposed, end, None, Coverage::Paths),
        Err(ScanError::Unresolved { pa: end })
    );
    assert_eq!(table.scanned_pages(), 0);
    let next = original_parcel(&table, &ram, NEXT);
    assert_eq!(scan(&mut table, &mut ram, &exposed, end, next, Coverage::Paths).map(|r| r.patched), Ok(1));
}

#[test]
fn a_compressed_critical_instruction_is_patched_whole() {
    // No configuration makes a compressed instruction critical today; a predicate can.
    let c_li_a0_1 = 0x4505u16;
    let critical = |inst: &Inst| matches!(inst, Inst::OpImm { rd: 10, rs1: 0, imm: 1, .. });
    let mut image = Image::new();
    image.parcel(CODE, c_li_a0_1).parcel(CODE + 2, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    scan(&mut table, &mut ram, &critical, CODE, None, Coverage::Paths).unwrap();
    assert_eq!(table.site(CODE), Some(PatchSite { pa: CODE, word: 0x4505, len: 2, straddles: false }));
    assert_eq!(ram.load(CODE, 4), Some(u64::from(C_RET) << 16));
}

#[test]
fn a_page_whose_sites_cannot_all_be_produced_is_not_recorded() {
    use crate::patch::table::InsertFailure;
    let mut image = Image::new();
    image.word(NEXT, RDTIME_A0).parcel(NEXT + 4, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    scan(&mut table, &mut ram, &CounterReads, NEXT, None, Coverage::Paths).unwrap();
    let site = |pa| PatchSite { pa, word: RDTIME_A0, len: 4, straddles: false };
    // The second site is missing, then outside the page: the sites above (NEXT's) are moved back.
    for bad in [None, Some(site(NEXT + 8))] {
        let result = table.insert_page(CODE, 3, |k| if k == 1 { bad } else { Some(site(CODE + 4 * k as u64)) });
        assert_eq!(result, Err(InsertFailure::Source));
        assert_eq!((table.sites(), table.scanned_pages()), (1, 1));
        assert_eq!(table.page_sites(NEXT), &[site(NEXT)]);
        assert!(table.page_sites(CODE).is_empty() && !table.is_scanned(CODE));
    }
    assert_eq!(table.insert_page(CODE, 2, |k| Some(site(CODE + 4 * k as u64))), Ok(()));
    assert_eq!(table.page_sites(CODE), &[site(CODE), site(CODE + 4)]);
    assert_eq!(table.insert_page(CODE, 0, |_| None), Err(InsertFailure::Full(TableFull::Pages)), "already there");
}

#[test]
fn the_table_footprint_is_what_the_documentation_says() {
    assert_eq!(core::mem::size_of::<PatchSite>(), 16);
    assert_eq!(core::mem::size_of::<PatchTable<4096, 512>>(), 16 * 4096 + 8 * 512 + 16);
}

#[test]
fn native_grants_keep_code_execute_only_until_written_and_unscanned_pages_unexecutable() {
    let mut image = Image::new();
    image.word(CODE, RDTIME_A0).parcel(CODE + 4, C_RET).parcel(NEXT, C_RET);
    let mut table = Table::new();
    let mut ram = Ram::new(RAM_BASE, &mut image.0);
    let all = [true; 3];
    assert_eq!(table.native_grants(CODE, all), [false, true, true], "unscanned: the first fetch faults");
    scan(&mut table, &mut ram, &CounterReads, CODE, None, Coverage::Paths).unwrap();
    scan(&mut table, &mut ram, &CounterReads, NEXT, None, Coverage::Paths).unwrap();
    assert_eq!(table.native_grants(CODE + 8, all), [true, false, false], "sites: execute-only");
    assert_eq!(table.native_grants(NEXT, all), [true, true, false], "no sites: readable, never writable");
    assert_eq!(table.native_grants(NEXT, [false, true, false]), [false, true, false], "only what is granted");
    table.drop_page(CODE, &mut ram);
    assert_eq!(table.native_grants(CODE, all), [false, true, true]);
}

// ---------------------------------------------------------------------------------------------------------------
// Model tests.

/// One piece of a random instruction stream.
#[derive(Debug, Clone)]
enum Piece {
    Compressed(u16),
    Word(u32),
    Branch {
        rs1: u8,
        rs2: u8,
        offset: i32,
    },
    Jal {
        link: bool,
        offset: i32,
    },
    CounterRead {
        op: CsrOp,
        rd: u8,
        csr: u16,
    },
    /// A CSR access that writes a counter or reads another CSR: not critical.
    OtherCsr(u32),
    /// `c.j` over the data words that follow it.
    JumpOverData(Vec<u32>),
}

fn piece() -> impl Strategy<Value = Piece> {
    let counter = prop_oneof![Just(csr::CYCLE), Just(csr::TIME), Just(csr::INSTRET)];
    let read_op = prop_oneof![Just(CsrOp::Rs), Just(CsrOp::Rc), Just(CsrOp::Rsi), Just(CsrOp::Rci)];
    let data_word = prop_oneof![any::<u32>(), Just(RDTIME_A0), (1u8..32).prop_map(|rd| csrr(rd, csr::CYCLE))];
    prop_oneof![
        4 => any::<u16>().prop_filter("compressed", |p| p & 3 != 3).prop_map(Piece::Compressed),
        4 => any::<u32>().prop_map(|w| Piece::Word(w | 3)),
        2 => (0u8..4, 0u8..4, -40i32..40).prop_map(|(rs1, rs2, o)| Piece::Branch { rs1, rs2, offset: o * 2 }),
        1 => (any::<bool>(), -40i32..40).prop_map(|(link, o)| Piece::Jal { link, offset: o * 2 }),
        3 => (read_op, 0u8..32, counter.clone()).prop_map(|(op, rd, csr)| Piece::CounterRead { op, rd, csr }),
        1 => (counter, 1u8..32, 0u8..32).prop_map(|(csr, src, rd)| Piece::OtherCsr(
            encode(&Inst::Csr { op: CsrOp::Rs, rd, src, csr }))),
        1 => (0u8..32).prop_map(|rd| Piece::OtherCsr(csrr(rd, csr::MSTATUS))),
        1 => prop::collection::vec(data_word, 1..4).prop_map(Piece::JumpOverData),
        // ecall, ebreak, wfi, mret; c.jalr a5, c.jr a5, ret.
        2 => prop::sample::select(&[0x0000_0073u32, 0x0010_0073, 0x1050_0073, 0x3020_0073][..]).prop_map(Piece::Word),
        2 => prop::sample::select(&[0x9782u16, 0x8782, C_RET][..]).prop_map(Piece::Compressed),
    ]
}

impl Piece {
    /// Appends the piece's bytes; returns whether an instruction starts at its first byte (data words do not).
    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Piece::Compressed(parcel) => out.extend_from_slice(&parcel.to_le_bytes()),
            Piece::Word(word) | Piece::OtherCsr(word) => out.extend_from_slice(&word.to_le_bytes()),
            Piece::Branch { rs1, rs2, offset } => out.extend_from_slice(&beq(*rs1, *rs2, *offset).to_le_bytes()),
            Piece::Jal { link, offset } => out.extend_from_slice(&jal(*link as u8, *offset).to_le_bytes()),
            &Piece::CounterRead { op, rd, csr } => {
                out.extend_from_slice(&encode(&Inst::Csr { op, rd, src: 0, csr }).to_le_bytes())
            }
            Piece::JumpOverData(words) => {
                out.extend_from_slice(&c_j(2 + 4 * words.len() as i32).to_le_bytes());
                for word in words {
                    out.extend_from_slice(&word.to_le_bytes());
                }
            }
        }
    }
}

/// A random code page: a stream at a random offset (it may run into the next page), random filler bytes
/// around it, an entry point at one of the stream's instructions, and whether the next page is available.
#[derive(Debug, Clone)]
struct Case {
    image: Vec<u8>,
    entry: u64,
    next_available: bool,
    guard: bool,
    sensitivity_table: bool,
    registers: [u64; 8],
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(piece(), 1..120),
        0u64..2048,
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), RAM_SIZE),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        [
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ],
    )
        .prop_map(
            |(pieces, start_parcel, entry_pick, filler, next_available, guard, sensitivity_table, registers)| {
                let start = CODE + 2 * start_parcel;
                let mut stream = Vec::new();
                let mut starts = Vec::new();
                for piece in &pieces {
                    starts.push(start + stream.len() as u64);
                    piece.emit(&mut stream);
                }
                let mut image = filler;
                let at = (start - RAM_BASE) as usize;
                let len = stream.len().min(image.len() - at);
                image[at..at + len].copy_from_slice(&stream[..len]);
                let starts: Vec<u64> = starts.into_iter().filter(|&pc| pc < NEXT).collect();
                let entry = starts[entry_pick.index(starts.len())];
                Case { image, entry, next_available, guard, sensitivity_table, registers }
            },
        )
}

struct Scanned {
    original: Vec<u8>,
    image: Vec<u8>,
    table: Table,
    report: Result<ScanReport, ScanError>,
}

fn scan_case(case: &Case) -> Scanned {
    let mut image = case.image.clone();
    let mut table = Table::new();
    let coverage = if case.guard { Coverage::Guard } else { Coverage::Paths };
    let report = {
        let mut ram = Ram::new(RAM_BASE, &mut image);
        let next = if case.next_available { original_parcel(&table, &ram, NEXT) } else { None };
        // Half of the cases use the sensitivity table's critical set, which must behave the same.
        if case.sensitivity_table {
            scan(&mut table, &mut ram, &delegated_counters(), case.entry, next, coverage)
        } else {
            scan(&mut table, &mut ram, &CounterReads, case.entry, next, coverage)
        }
    };
    Scanned { original: case.image.clone(), image, table, report }
}

/// The original instruction at page offset `pc` (`None` past the end of RAM).
fn original_inst(original: &[u8], pc: u64) -> Option<(Inst, u64)> {
    let at = (pc - RAM_BASE) as usize;
    let low = u16::from_le_bytes([*original.get(at)?, *original.get(at + 1)?]) as u32;
    if low & 3 != 3 {
        return Some((isa::decode_compressed(low as u16), 2));
    }
    let high = u16::from_le_bytes([*original.get(at + 2)?, *original.get(at + 3)?]) as u32;
    Some((isa::decode_word(low | high << 16), 4))
}

/// Runs the reference interpreter on the patched page from the entry, as the guest would run natively: a trap
/// at a patched site is emulated (the dispatcher skips the original instruction), every other exit ends the
/// run, and so do leaving the page, an indirect jump (a new entry point the scan could not know) and a store to
/// the page (which drops its patches); a call out of the page or through a register, and an `ecall`, return to
/// the next instruction. Returns the sites that trapped, or the first failure.
fn run_patched(case: &Case, scanned: &mut Scanned, entry: u64, steps: usize) -> Result<Vec<u64>, String> {
    let mut bitmap = [0u64; 1];
    let mut ram = Ram::new(RAM_BASE, &mut scanned.image);
    ram.attach_code_watch(&mut bitmap);
    ram.watch_code_page(1);
    let realmap = VmRealMap::for_ram(&ram).unwrap();
    let mut tlb = Tlb::new();
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.privilege = Privilege::Machine;
    hart.csrs.mstatus |= mstatus::FS;
    hart.pc = entry;
    for (n, value) in case.registers.iter().enumerate() {
        // Half of the registers point into the first RAM page, so loads and stores often succeed.
        let value = if n % 2 == 0 { RAM_BASE + (value & 0xff8) } else { *value };
        hart.set_x(n as u8 + 1, value);
    }
    let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
    let mut trapped = Vec::new();
    for _ in 0..steps {
        let pc = hart.pc;
        if !(CODE..NEXT).contains(&pc) {
            break;
        }
        let Some((original, len)) = original_inst(&scanned.original, pc) else { break };
        match interp::step(&mut hart, &mut memory) {
            Ok(()) => {
                if memory.ram.has_dirty_code() {
                    break;
                }
                match original {
                    // A call: the callee returns to the next instruction (one out of the page, or indirect).
                    Inst::Jalr { rd, .. } if rd != 0 => hart.pc = pc + len,
                    Inst::Jal { rd, .. } if rd != 0 && !(CODE..NEXT).contains(&hart.pc) => hart.pc = pc + len,
                    // An indirect jump: an entry point the scan could not know.
                    Inst::Jalr { .. } => break,
                    _ => {}
                }
            }
            // The environment call returns to the next instruction.
            Err(Exit::Exception { cause: Exception::EcallFromM, .. }) => hart.pc = pc + len,
            Err(Exit::Exception { cause: Exception::IllegalInstruction, .. }) => match scanned.table.site(pc) {
                Some(site) => {
                    if site.word as u16
                        != u16::from_le_bytes([
                            scanned.original[(pc - RAM_BASE) as usize],
                            scanned.original[(pc - RAM_BASE) as usize + 1],
                        ])
                    {
                        return Err(format!("site {pc:#x} records the wrong original"));
                    }
                    trapped.push(pc);
                    hart.pc = pc + u64::from(site.len);
                }
                // The guest's own illegal instruction (or one illegal in this state): the same bytes trap
                // unpatched. (An illegal word entered in the middle, whose second parcel is a site, traps too.)
                None => {
                    let at = (pc - RAM_BASE) as usize;
                    let end = (at + len as usize).min(scanned.original.len());
                    let unchanged = memory.ram.as_slice().unwrap().get(at..end) == scanned.original.get(at..end);
                    if !unchanged && !matches!(original, Inst::Illegal(_)) {
                        return Err(format!("a trap at {pc:#x}, which holds {original:?} and is no site"));
                    }
                    break;
                }
            },
            Err(Exit::System { inst, .. }) => {
                if CounterReads.is_critical(&inst) {
                    return Err(format!("the critical {inst:?} at {pc:#x} ran unpatched"));
                }
                if !matches!(inst, Inst::Csr { .. }) {
                    break;
                }
                hart.pc = pc + len;
            }
            Err(_) => break,
        }
    }
    Ok(trapped)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// (a) reading back through the table yields the original bytes, and (c) nothing but the first parcels of
    /// the sites changed, each of which decodes (as originally) to a SYSTEM instruction the predicate (or the
    /// unknown-straddle rule) chose; (e) a failed scan changed nothing.
    #[test]
    fn scanning_changes_only_site_parcels_and_reads_back_the_original(case in case()) {
        let scanned = scan_case(&case);
        let mut read_back = scanned.image.clone();
        scanned.table.unpatch(RAM_BASE, &mut read_back);
        prop_assert_eq!(&read_back, &scanned.original);
        let sites = scanned.table.page_sites(CODE);
        prop_assert_eq!(sites.len(), scanned.table.sites());
        for (at, (&now, &was)) in scanned.image.iter().zip(&scanned.original).enumerate() {
            let pa = RAM_BASE + at as u64;
            let site = sites.iter().find(|site| site.pa == pa & !1);
            match site {
                Some(_) => prop_assert_eq!(now, 0, "{:#x}", pa),
                None => prop_assert_eq!(now, was, "{:#x} changed", pa),
            }
        }
        for site in sites {
            prop_assert_eq!(site.word as u16 & 0x7f, SYSTEM_OPCODE);
            prop_assert_eq!(site.straddles, site.pa == NEXT - 2);
            if !site.straddles || case.next_available {
                prop_assert!(CounterReads.is_critical(&isa::decode_word(site.word)), "{:?}", site);
            }
        }
        match scanned.report {
            Ok(report) => {
                prop_assert!(scanned.table.is_scanned(CODE));
                prop_assert_eq!(usize::from(report.patched + report.guarded), sites.len());
                if !case.guard {
                    prop_assert_eq!(report.guarded, 0);
                }
            }
            Err(_) => {
                prop_assert_eq!(&scanned.image, &scanned.original);
                prop_assert!(!scanned.table.is_scanned(CODE));
            }
        }
    }

    /// (b) every critical instruction the interpreter executes in the page from the scanned entry is a patched
    /// site, it traps exactly there, and any other illegal-instruction trap is the guest's own; with guards,
    /// the same holds from any entry point when the report says every entry is covered.
    #[test]
    fn every_critical_instruction_on_an_executed_path_traps(case in case(), other_entry in 0u64..2048) {
        let mut scanned = scan_case(&case);
        let Ok(report) = scanned.report else {
            // Only a conflict can fail here (the table is large enough): the page must not run natively.
            let conflict = matches!(scanned.report, Err(ScanError::Conflict { .. }));
            prop_assert!(conflict);
            return Ok(());
        };
        let trapped = run_patched(&case, &mut scanned, case.entry, 400);
        prop_assert!(trapped.is_ok(), "{}", trapped.unwrap_err());
        if report.covers_every_entry() {
            let trapped = run_patched(&case, &mut scanned, CODE + 2 * other_entry, 400);
            prop_assert!(trapped.is_ok(), "from {:#x}: {}", CODE + 2 * other_entry, trapped.unwrap_err());
        }
    }

    /// (d) a write of random bytes anywhere over a scanned page, after `prepare_write`, leaves exactly what the
    /// same write leaves on the never-patched page; the page is no longer scanned.
    #[test]
    fn a_write_after_prepare_write_is_as_if_never_patched(
        case in case(), at in 0u64..(3 * PAGE_SIZE - 8), bytes in prop::collection::vec(any::<u8>(), 1..9)
    ) {
        let mut scanned = scan_case(&case);
        let len = bytes.len() as u64;
        let mut expected = scanned.original.clone();
        expected[at as usize..(at + len) as usize].copy_from_slice(&bytes);
        let mut ram = Ram::new(RAM_BASE, &mut scanned.image);
        let (first, last) = ((RAM_BASE + at) / PAGE_SIZE, (RAM_BASE + at + len - 1) / PAGE_SIZE);
        let touched = (first..=last).contains(&(CODE / PAGE_SIZE));
        let dropped = scanned.table.prepare_write(RAM_BASE + at, len, &mut ram);
        prop_assert_eq!(dropped, usize::from(touched && scanned.report.is_ok()));
        ram.slice_mut(RAM_BASE + at, len).unwrap().copy_from_slice(&bytes);
        if touched {
            prop_assert_eq!(ram.as_slice().unwrap(), &expected[..]);
            prop_assert_eq!(scanned.table.sites(), 0);
        } else {
            let mut read_back = ram.as_slice().unwrap().to_vec();
            scanned.table.unpatch(RAM_BASE, &mut read_back);
            prop_assert_eq!(&read_back, &expected);
        }
    }

    /// (e) a table too small for the page changes nothing and reports it; the scan then succeeds once room is
    /// made.
    #[test]
    fn a_full_table_is_safe(case in case()) {
        let needed = match scan_case(&case).report {
            Ok(report) => usize::from(report.patched + report.guarded),
            Err(_) => return Ok(()),
        };
        prop_assume!(needed > 0);
        let coverage = if case.guard { Coverage::Guard } else { Coverage::Paths };
        let mut image = case.image.clone();
        let mut ram = Ram::new(RAM_BASE, &mut image);
        let next = if case.next_available { ram.read_parcel(NEXT) } else { None };
        let mut table: PatchTable<4, 2> = PatchTable::new();
        // Fill the table with another page's sites so that fewer than `needed` remain.
        let filler_sites = 5usize.saturating_sub(needed).min(4);
        let mut filler_image = Image::new();
        for n in 0..filler_sites as u64 {
            filler_image.word(RAM_BASE + 4 * n, RDTIME_A0);
        }
        let filler_original = filler_image.0.clone();
        let mut filler_ram = Ram::new(RAM_BASE, &mut filler_image.0);
        if filler_sites > 0 {
            scan(&mut table, &mut filler_ram, &CounterReads, RAM_BASE, None, Coverage::Paths).unwrap();
        }
        prop_assert_eq!(table.sites(), filler_sites);
        let result = scan(&mut table, &mut ram, &CounterReads, case.entry, next, coverage);
        prop_assert_eq!(result, Err(ScanError::Full(TableFull::Sites { needed })));
        prop_assert_eq!(ram.as_slice().unwrap(), &case.image[..]);
        prop_assert!(!table.is_scanned(CODE));
        table.clear(&mut filler_ram);
        prop_assert_eq!(filler_ram.as_slice().unwrap(), &filler_original[..], "eviction restored the filler page");
        // Always full above (at most `needed - 1` sites were left); with room made, the same scan succeeds.
        prop_assert_eq!(table.sites(), 0);
        if needed <= 4 {
            prop_assert!(scan(&mut table, &mut ram, &CounterReads, case.entry, next, coverage).is_ok());
            prop_assert_eq!(table.sites(), needed);
        }
    }

    /// Arbitrary page contents never make the scanner panic, loop or write outside the page's site parcels.
    #[test]
    fn arbitrary_pages_scan_safely(
        bytes in prop::collection::vec(any::<u8>(), RAM_SIZE), entry in 0u64..2048, next in any::<Option<u16>>(),
        guard in any::<bool>(),
    ) {
        let mut image = bytes.clone();
        let mut table = Table::new();
        let mut ram = Ram::new(RAM_BASE, &mut image);
        let coverage = if guard { Coverage::Guard } else { Coverage::Paths };
        let _ = scan(&mut table, &mut ram, &CounterReads, CODE + 2 * entry, next, coverage);
        let mut read_back = ram.as_slice().unwrap().to_vec();
        table.unpatch(RAM_BASE, &mut read_back);
        prop_assert_eq!(read_back, bytes);
    }
}
