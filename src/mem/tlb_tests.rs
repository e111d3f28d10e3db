//! Tests of the soft TLB: unit tests of tagging and flushing, and a model-based property test against fresh walks.

use super::*;
use crate::mem::realmap::{Extent, RealMap};
use crate::mem::sv39::{make_pte, translate, Fault, PageTableMemory, PteFlags, Satp, SATP_MODE_SV39};
use crate::mem::{Ram, RAM_BASE};
use proptest::prelude::*;

const S: AccessContext = AccessContext::new(Privilege::Supervisor, false, false);
const S_SUM: AccessContext = AccessContext::new(Privilege::Supervisor, true, false);
const U: AccessContext = AccessContext::new(Privilege::User, false, false);
const RW: MapPerms = MapPerms::R.union(MapPerms::W);

/// A translation as a 4 KiB walk of `va` to `guest_real` with `flags` would return it.
fn walked(guest_real: u64, level: u8, flags: PteFlags, global: bool) -> Translation {
    Translation { guest_real, level, flags, global, pte_address: Some(RAM_BASE) }
}

fn rwxad() -> PteFlags {
    PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D
}

fn mapping(host: u64, perms: MapPerms) -> RealMapping {
    RealMapping { host: HostAddr(host), perms }
}

fn key(asid: u16, access: AccessType, ctx: AccessContext) -> TlbKey {
    TlbKey::new(asid, access, ctx)
}

#[test]
fn hits_after_insert_yield_the_host_address() {
    let mut tlb = SoftTlb::<16>::new();
    let va = 0x1234_5678;
    assert_eq!(tlb.lookup(va, key(0, AccessType::Load, S)), None);
    assert!(tlb.insert(va, 0, &walked(RAM_BASE + 0x9678, 0, rwxad(), false), mapping(0x9678, MapPerms::RWX)));
    for access in AccessType::ALL {
        assert_eq!(tlb.lookup(va, key(0, access, S)), Some(HostAddr(0x9678)));
        assert_eq!(tlb.lookup(0x1234_5000, key(0, access, S)), Some(HostAddr(0x9000)));
        assert_eq!(tlb.lookup(0x1234_5fff, key(0, access, S)), Some(HostAddr(0x9fff)));
        assert_eq!(tlb.lookup(0x1234_6000, key(0, access, S)), None, "next page");
        assert_eq!(tlb.lookup(0x1234_5678 + (16 << 12), key(0, access, S)), None, "same slot, other page");
        assert_eq!(tlb.lookup(va | 1 << 63, key(0, access, S)), None, "non-canonical alias");
        assert_eq!(tlb.lookup(va, key(0, access, U)), None, "S page, U access");
        let machine = AccessContext::new(Privilege::Machine, false, false);
        assert_eq!(tlb.lookup(va, key(0, access, machine)), None, "M-mode never uses the TLB");
    }
    assert_eq!(tlb.occupancy(), 1);
    // A conflicting page replaces the entry.
    tlb.insert(va + (16 << 12), 0, &walked(RAM_BASE + 0x678, 0, rwxad(), false), mapping(0x678, MapPerms::RWX));
    assert_eq!(tlb.lookup(va, key(0, AccessType::Load, S)), None);
    assert_eq!(tlb.lookup(va + (16 << 12), key(0, AccessType::Load, S)), Some(HostAddr(0x678)));
}

/// The keys of the translator's view for `ctx` under `asid`.
#[cfg(feature = "dbt")]
fn keys(asid: u16, ctx: AccessContext) -> Keys {
    Keys {
        load: key(asid, AccessType::Load, ctx),
        store: key(asid, AccessType::Store, ctx),
        fetch: key(asid, AccessType::Fetch, ctx),
    }
}

/// The translator's views hold copies of the TLB's entries for their keys, filled by the slow path for every
/// kind of access the entry serves, and lose them with the TLB's: a conflicting insert, `sfence.vma` of the
/// page or the ASID, a full flush.
#[cfg(feature = "dbt")]
#[test]
fn views_serve_what_the_tlb_serves_and_drop_it_with_the_tlb() {
    use AccessType::{Fetch, Load, Store};
    let mut tlb = SoftTlb::<16>::new();
    let (supervisor, user, other_asid) = (keys(1, S), keys(1, U), keys(2, S));
    let va = 0x1234_5678;
    let insert = |tlb: &mut SoftTlb<16>| {
        assert!(tlb.insert(va, 1, &walked(RAM_BASE + 0x9678, 0, rwxad(), false), mapping(0x9678, MapPerms::RWX)));
    };
    let filled = |tlb: &mut SoftTlb<16>| {
        tlb.fill_views(va, u64::MAX);
        AccessType::ALL.map(|access| tlb.view_lookup(va, supervisor, access))
    };
    insert(&mut tlb);
    // Views are taken (made live) at the start of a run; the fills of its slow paths reach the live ones.
    for keys in [user, other_asid, supervisor] {
        assert_eq!(tlb.view_lookup(va, keys, Load), None, "not filled yet");
    }
    assert_eq!(filled(&mut tlb), [Some(0x9678); 3], "one fill for every kind of access the entry serves");
    assert_eq!(tlb.view_lookup(va + 8, supervisor, Store), Some(0x9680));
    assert_eq!(tlb.view_lookup(va + (16 << 12), supervisor, Load), None, "same slot, other page");
    assert_eq!(tlb.view_lookup(va, user, Load), None, "a supervisor page: the user view gets no copy");
    assert_eq!(tlb.view_lookup(va, other_asid, Load), None, "not global: another ASID's view gets no copy");
    // Pages that would reach past RAM are never copied.
    let mut small = SoftTlb::<16>::new();
    insert(&mut small);
    assert_eq!(small.view_lookup(va, supervisor, Load), None);
    small.fill_views(va, 0x9fff);
    assert_eq!(small.view_lookup(va, supervisor, Load), None);
    small.fill_views(va, 0xa000);
    assert_eq!(small.view_lookup(va, supervisor, Load), Some(0x9678));
    // What removes the TLB's entry removes the copies.
    tlb.insert(va + (16 << 12), 1, &walked(RAM_BASE, 0, rwxad(), false), mapping(0, MapPerms::RWX));
    for access in AccessType::ALL {
        assert_eq!(tlb.view_lookup(va, supervisor, access), None, "a conflicting insert");
    }
    insert(&mut tlb);
    filled(&mut tlb);
    tlb.flush_va(va + 0x100, None);
    assert_eq!(tlb.view_lookup(va, supervisor, Load), None, "sfence.vma of the page");
    insert(&mut tlb);
    filled(&mut tlb);
    tlb.flush_va(va + 0x1000, None);
    assert_eq!(tlb.view_lookup(va, supervisor, Load), Some(0x9678), "sfence.vma of another page");
    tlb.flush_asid(1);
    assert_eq!(tlb.view_lookup(va, supervisor, Store), None, "sfence.vma of the ASID");
    insert(&mut tlb);
    filled(&mut tlb);
    tlb.flush_all();
    assert_eq!(tlb.view_lookup(va, supervisor, Fetch), None, "a full flush");
    // The same page cached anew with D clear: loads and fetches are copied, stores take the slow path (a walk).
    let clean = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A;
    tlb.insert(va, 1, &walked(RAM_BASE + 0x9678, 0, clean, false), mapping(0x9678, MapPerms::RWX));
    assert_eq!(filled(&mut tlb), [Some(0x9678), Some(0x9678), None]);
}

/// A superpage is copied into views as 4 KiB pieces; `sfence.vma` anywhere in it drops every piece.
#[cfg(feature = "dbt")]
#[test]
fn views_drop_every_piece_of_a_fenced_superpage() {
    let mut tlb = SoftTlb::<16>::new();
    let supervisor = keys(0, S);
    let megapage = walked(RAM_BASE, 1, rwxad(), true);
    // The translator takes the view at the start of a run, before its slow paths fill it.
    assert_eq!(tlb.view_lookup(0x4020_0000, supervisor, AccessType::Load), None);
    for piece in 0..4u64 {
        let va = 0x4020_0000 + piece * 0x1000;
        assert!(tlb.insert(va, 0, &megapage, mapping(piece * 0x1000, MapPerms::RWX)));
        tlb.fill_views(va, u64::MAX);
        assert_eq!(tlb.view_lookup(va, supervisor, AccessType::Load), Some(piece * 0x1000));
    }
    tlb.flush_va(0x4030_0000, Some(3));
    assert_eq!(
        tlb.view_lookup(0x4020_1000, supervisor, AccessType::Load),
        Some(0x1000),
        "global: kept by an ASID fence"
    );
    tlb.flush_va(0x4030_0000, None);
    for piece in 0..4u64 {
        assert_eq!(tlb.view_lookup(0x4020_0000 + piece * 0x1000, supervisor, AccessType::Load), None);
    }
}

#[test]
fn permissions_are_cached_per_access_kind_and_context() {
    let mut tlb = SoftTlb::<16>::new();
    // A user read-write page walked by a load: A set, D clear.
    let user_rw = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::U | PteFlags::A;
    tlb.insert(0x1000, 0, &walked(RAM_BASE, 0, user_rw, false), mapping(0, MapPerms::RWX));
    assert!(tlb.lookup(0x1000, key(0, AccessType::Load, U)).is_some());
    assert!(tlb.lookup(0x1000, key(0, AccessType::Store, U)).is_none(), "D clear: the store must walk");
    assert!(tlb.lookup(0x1000, key(0, AccessType::Fetch, U)).is_none(), "not executable");
    assert!(tlb.lookup(0x1000, key(0, AccessType::Load, S)).is_none(), "S without SUM");
    assert!(tlb.lookup(0x1000, key(0, AccessType::Load, S_SUM)).is_some(), "S with SUM");
    // An execute-only user page: loads only with MXR, S never executes it.
    let user_x = PteFlags::V | PteFlags::X | PteFlags::U | PteFlags::A;
    tlb.insert(0x2000, 0, &walked(RAM_BASE, 0, user_x, false), mapping(0, MapPerms::RWX));
    assert!(tlb.lookup(0x2000, key(0, AccessType::Fetch, U)).is_some());
    assert!(tlb.lookup(0x2000, key(0, AccessType::Load, U)).is_none());
    assert!(tlb.lookup(0x2000, key(0, AccessType::Load, AccessContext::new(Privilege::User, false, true))).is_some());
    assert!(tlb.lookup(0x2000, key(0, AccessType::Fetch, S_SUM)).is_none());
    // The real map's permissions are combined in: a read-only extent never hits a store, a non-executable one
    // never hits a fetch.
    tlb.insert(0x3000, 0, &walked(RAM_BASE, 0, rwxad(), false), mapping(0, MapPerms::R));
    assert!(tlb.lookup(0x3000, key(0, AccessType::Load, S)).is_some());
    assert!(tlb.lookup(0x3000, key(0, AccessType::Store, S)).is_none());
    assert!(tlb.lookup(0x3000, key(0, AccessType::Fetch, S)).is_none());
    tlb.insert(0x4000, 0, &walked(RAM_BASE, 0, rwxad(), false), mapping(0, RW));
    assert!(tlb.lookup(0x4000, key(0, AccessType::Fetch, S)).is_none());
    // Nothing is cached for an untranslated access or a page that permits nothing.
    let untranslated = Translation { pte_address: None, ..walked(0x5000, 0, PteFlags::all(), false) };
    assert!(!tlb.insert(0x5000, 0, &untranslated, mapping(0, MapPerms::RWX)));
    assert!(!tlb.insert(0x6000, 0, &walked(RAM_BASE, 0, rwxad(), false), mapping(0, MapPerms::empty())));
    assert_eq!(tlb.occupancy(), 4);
}

#[test]
fn asids_tag_entries_and_global_entries_match_every_asid() {
    let mut tlb = SoftTlb::<64>::new();
    tlb.insert(0x1000, 1, &walked(RAM_BASE, 0, rwxad(), false), mapping(0x1000, MapPerms::RWX));
    tlb.insert(0x2000, 1, &walked(RAM_BASE, 0, rwxad(), true), mapping(0x2000, MapPerms::RWX));
    tlb.insert(0x3000, 2, &walked(RAM_BASE, 0, rwxad(), false), mapping(0x3000, MapPerms::RWX));
    let load = |tlb: &SoftTlb<64>, va, asid| tlb.lookup(va, key(asid, AccessType::Load, S)).map(|h| h.0);
    assert_eq!(load(&tlb, 0x1000, 1), Some(0x1000));
    assert_eq!(load(&tlb, 0x1000, 2), None);
    assert_eq!(load(&tlb, 0x2000, 1), Some(0x2000));
    assert_eq!(load(&tlb, 0x2000, 7), Some(0x2000), "global");
    assert_eq!(load(&tlb, 0x3000, 2), Some(0x3000));
    assert_eq!(load(&tlb, 0x3000, 1), None);
}

/// Global pages (placed in TLB slots of their own).
const G1: u64 = 0x10_4000;
const G2: u64 = 0x20_8000;

/// A TLB with, for each ASID 1 and 2, a non-global page at 0x1000 * asid, and the global pages G1 and G2 filled
/// under ASID 1 and 2.
fn populated() -> SoftTlb<64> {
    let mut tlb = SoftTlb::<64>::new();
    for (asid, global) in [(1u16, G1), (2, G2)] {
        let a = asid as u64;
        tlb.insert(0x1000 * a, asid, &walked(RAM_BASE, 0, rwxad(), false), mapping(0x1000 * a, MapPerms::RWX));
        tlb.insert(global, asid, &walked(RAM_BASE, 0, rwxad(), true), mapping(global, MapPerms::RWX));
    }
    assert_eq!(tlb.occupancy(), 4);
    tlb
}

/// The (page, ASID) pairs that hit.
fn cached(tlb: &SoftTlb<64>) -> Vec<(u64, u16)> {
    let mut present = Vec::new();
    for asid in [1u16, 2, 3] {
        for va in [0x1000, 0x2000, G1, G2] {
            if tlb.lookup(va + 0x10, key(asid, AccessType::Load, S)).is_some() {
                present.push((va, asid));
            }
        }
    }
    present
}

#[test]
fn each_flush_kind_forgets_what_sfence_vma_says() {
    let globals = [(G1, 1), (G2, 1), (G1, 2), (G2, 2), (G1, 3), (G2, 3)];
    let mut tlb = populated();
    assert_eq!(cached(&tlb), [(0x1000, 1), (G1, 1), (G2, 1), (0x2000, 2), (G1, 2), (G2, 2), (G1, 3), (G2, 3)]);

    tlb.sfence_vma(None, None);
    assert_eq!(cached(&tlb), [], "sfence.vma x0, x0");
    assert_eq!(tlb.occupancy(), 0);

    let mut tlb = populated();
    tlb.sfence_vma(None, Some(1));
    assert_eq!(cached(&tlb), [(G1, 1), (G2, 1), (0x2000, 2), (G1, 2), (G2, 2), (G1, 3), (G2, 3)], "x0, asid");
    tlb.sfence_vma(None, Some(2));
    assert_eq!(cached(&tlb), globals, "ASID fences keep global entries");

    let mut tlb = populated();
    tlb.sfence_vma(Some(0x1abc), None);
    assert_eq!(cached(&tlb), [(G1, 1), (G2, 1), (0x2000, 2), (G1, 2), (G2, 2), (G1, 3), (G2, 3)], "va, x0");
    tlb.sfence_vma(Some(G2 + 0xfff), None);
    assert_eq!(cached(&tlb), [(G1, 1), (0x2000, 2), (G1, 2), (G1, 3)], "va, x0 flushes global entries too");

    let mut tlb = populated();
    tlb.sfence_vma(Some(0x1000), Some(2));
    assert_eq!(tlb.occupancy(), 4, "va, asid: other ASIDs are kept");
    tlb.sfence_vma(Some(0x2000), Some(2));
    tlb.sfence_vma(Some(G1), Some(1));
    tlb.sfence_vma(Some(G2), Some(2));
    assert_eq!(cached(&tlb), [(0x1000, 1), (G1, 1), (G2, 1), (G1, 2), (G2, 2), (G1, 3), (G2, 3)], "va, asid");
    tlb.flush_asid(1);
    assert_eq!(cached(&tlb), globals);
    tlb.flush_all();
    assert_eq!(tlb.occupancy(), 0);
}

#[test]
fn superpage_pieces_are_flushed_together() {
    let mut tlb = SoftTlb::<64>::new();
    let mega = walked(RAM_BASE, 1, rwxad(), false);
    // Pieces of the 2 MiB page at 0x20_0000 and of another at 0x40_0000, plus a 4 KiB page.
    for va in [0x20_0000u64, 0x20_5000, 0x3f_f000] {
        tlb.insert(va, 0, &mega, mapping(va - 0x20_0000, MapPerms::RWX));
    }
    tlb.insert(0x40_1000, 0, &mega, mapping(0x1000, MapPerms::RWX));
    tlb.insert(0x60_2000, 0, &walked(RAM_BASE, 0, rwxad(), false), mapping(0x1000, MapPerms::RWX));
    assert_eq!(tlb.lookup(0x20_5008, key(0, AccessType::Store, S)), Some(HostAddr(0x5008)));
    assert_eq!(tlb.occupancy(), 5);
    tlb.flush_va(0x2a_b000, None);
    assert_eq!(tlb.occupancy(), 2, "a flush anywhere in the superpage removes all its pieces");
    assert!(tlb.lookup(0x40_1000, key(0, AccessType::Load, S)).is_some());
    assert!(tlb.lookup(0x60_2000, key(0, AccessType::Load, S)).is_some());
    // A 1 GiB leaf likewise.
    let giga = walked(RAM_BASE, 2, rwxad(), false);
    tlb.insert(0x4000_0000, 0, &giga, mapping(0, MapPerms::RWX));
    tlb.insert(0x7fff_f000, 0, &giga, mapping(0x3fff_f000, MapPerms::RWX));
    tlb.flush_va(0x5555_5555, Some(0));
    assert_eq!(tlb.occupancy(), 2);
    tlb.flush_all();
    // With no superpage cached, a 4 KiB flush only looks at one slot and still works.
    tlb.insert(0x60_2000, 0, &walked(RAM_BASE, 0, rwxad(), false), mapping(0x1000, MapPerms::RWX));
    tlb.flush_va(0x60_2fff, Some(0));
    assert_eq!(tlb.occupancy(), 0);
}

/// The whole access path of the engines, [`Memory::translate`](crate::mem::mmu::Memory::translate), on top of
/// this TLB: walk, PMP, real map, fill, and hits that a PTE change without a fence does not disturb.
#[test]
fn memory_composes_walk_real_map_and_tlb() {
    use crate::hart::{Exception, Hart, HartConfig};
    use crate::mem::mmu::{Memory, Target, Tlb, VmRealMap};

    let mut backing = vec![0u8; 16 * 4096];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    let mut map = VmRealMap::new();
    map.insert(Extent { guest_base: RAM_BASE, size: 12 * 4096, host_base: HostAddr(0x4000), perms: MapPerms::RWX })
        .unwrap();
    let rom = Extent { guest_base: page(12), size: 4 * 4096, host_base: HostAddr(0), perms: MapPerms::R | MapPerms::X };
    map.insert(rom).unwrap();
    // root (page 0)[0] -> level 1 (page 1)[0] -> level 0 (page 2): 0x1000 -> page 5, 0x2000 -> page 13 (ROM),
    // 0x3000 -> the UART at 0x1000_0000, 0x4000 unmapped.
    ram.store(page(0), 8, make_pte(page(1) >> 12, PteFlags::V)).unwrap();
    ram.store(page(1), 8, make_pte(page(2) >> 12, PteFlags::V)).unwrap();
    let leaf = |pa: u64| make_pte(pa >> 12, PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X);
    ram.store(page(2) + 8, 8, leaf(page(5))).unwrap();
    ram.store(page(2) + 16, 8, leaf(page(13))).unwrap();
    ram.store(page(2) + 24, 8, leaf(0x1000_0000)).unwrap();
    let satp = Satp::new(SATP_MODE_SV39, 3, page(0) >> 12).0;
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    // PMP lets S and U mode reach everything (with no entry they reach nothing).
    hart.pmp.write_addr(0, u64::MAX).unwrap();
    hart.pmp.write_cfg(0, 0x1f).unwrap(); // A = NAPOT, R, W, X
    hart.privilege = Privilege::Supervisor;
    hart.csrs.satp = satp;
    let mut tlb = Tlb::new();
    let go = |tlb: &mut Tlb, ram: &mut Ram, hart: &Hart, va, access| {
        Memory { ram, realmap: &map, tlb }.translate(hart, va, 1, access)
    };

    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1008, AccessType::Load), Ok(Target::Ram(0x4000 + 0x5008)));
    assert_eq!(tlb.occupancy(), 1);
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1010, AccessType::Store), Ok(Target::Ram(0x9010)));
    // Now cached: a PTE change without a fence is not seen, one with a fence is.
    ram.store(page(2) + 8, 8, leaf(page(6))).unwrap();
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1010, AccessType::Store), Ok(Target::Ram(0x9010)));
    tlb.sfence_vma(Some(0x1000), None);
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1010, AccessType::Store), Ok(Target::Ram(0xa010)));

    // ROM: loads and fetches reach it, a store is an access fault at the virtual address.
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x2004, AccessType::Fetch), Ok(Target::Ram(0x1004)));
    let fault = Fault { exception: Exception::StoreAccessFault, tval: 0x2004 };
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x2004, AccessType::Store), Err(fault));
    // A device page: the guest real address comes back for the MMIO path, and nothing is cached.
    let before = tlb.occupancy();
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x3005, AccessType::Store), Ok(Target::Device(0x1000_0005)));
    assert_eq!(tlb.occupancy(), before);
    // Page faults pass through.
    let fault = Fault { exception: Exception::LoadPageFault, tval: 0x4000 };
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x4000, AccessType::Load), Err(fault));
    hart.privilege = Privilege::User;
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1000, AccessType::Load).unwrap_err().tval, 0x1000);

    // M-mode accesses go straight to the real map and are never cached; bare S/U-mode RAM pages are cached
    // (identity, under bare keys), device pages are not.
    tlb.flush_all();
    hart.privilege = Privilege::Machine;
    assert_eq!(go(&mut tlb, &mut ram, &hart, page(1) + 3, AccessType::Load), Ok(Target::Ram(0x5003)));
    assert_eq!(tlb.occupancy(), 0);
    hart.privilege = Privilege::Supervisor;
    hart.csrs.satp = 0;
    assert_eq!(go(&mut tlb, &mut ram, &hart, page(1) + 3, AccessType::Store), Ok(Target::Ram(0x5003)));
    assert_eq!(tlb.occupancy(), 1);
    hart.privilege = Privilege::User;
    assert_eq!(go(&mut tlb, &mut ram, &hart, 0x1000_0000, AccessType::Load), Ok(Target::Device(0x1000_0000)));
    assert_eq!(tlb.occupancy(), 1);
    tlb.flush_all();
    // Without a PMP entry, S and U mode reach nothing, translated or not.
    hart.pmp.write_cfg(0, 0).unwrap();
    let fault = Fault { exception: Exception::LoadAccessFault, tval: page(1) };
    assert_eq!(go(&mut tlb, &mut ram, &hart, page(1), AccessType::Load), Err(fault));
}

/// The engines' fast data path serves exactly the accesses the full path would serve from RAM without a walk, and
/// reports a store to a watched code page.
#[test]
fn the_fast_data_path_agrees_with_memory() {
    use crate::hart::{Hart, HartConfig};
    use crate::mem::mmu::{Loaded, Memory, Tlb, VmRealMap};

    let mut backing = vec![0u8; 16 * 4096];
    let mut watch = [0u64; 1];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    ram.store(page(0), 8, make_pte(page(1) >> 12, PteFlags::V)).unwrap();
    ram.store(page(1), 8, make_pte(page(2) >> 12, PteFlags::V)).unwrap();
    let leaf = |pa: u64| make_pte(pa >> 12, PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D);
    ram.store(page(2) + 8, 8, leaf(page(5))).unwrap(); // 0x1000 -> page 5
    ram.store(page(2) + 16, 8, leaf(page(6))).unwrap(); // 0x2000 -> page 6
    ram.store(page(5) + 0x10, 8, 0x1122_3344_5566_7788).unwrap();
    ram.attach_code_watch(&mut watch);
    let map = VmRealMap::for_ram(&ram).unwrap();
    let mut tlb = Tlb::new();
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.pmp.write_addr(0, u64::MAX).unwrap();
    hart.pmp.write_cfg(0, 0x1f).unwrap(); // A = NAPOT, R, W, X
    hart.privilege = Privilege::Supervisor;
    hart.csrs.satp = Satp::new(SATP_MODE_SV39, 1, page(0) >> 12).0;
    let mut memory = Memory { ram: &mut ram, realmap: &map, tlb: &mut tlb };

    // Translated: only a TLB hit is served, and it reads what the full path reads.
    let path = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&path, 0x1010, 8), None, "a TLB miss takes the full path");
    assert_eq!(memory.load(&hart, 0x1010, 8, AccessType::Load), Ok(Loaded::Value(0x1122_3344_5566_7788)));
    assert_eq!(memory.fast_load(&path, 0x1010, 8), Some(0x1122_3344_5566_7788));
    assert_eq!(memory.fast_load(&path, 0x1012, 2), Some(0x5566));
    assert_eq!(memory.fast_load(&path, 0x1ffc, 8), None, "crosses the page");
    assert_eq!(memory.fast_store(&path, 0x1020, 4, 0xdead_beef), Some(false));
    assert_eq!(memory.load(&hart, 0x1020, 4, AccessType::Load), Ok(Loaded::Value(0xdead_beef)));
    assert!(memory.ram.watch_code_page(5));
    assert_eq!(memory.fast_store(&path, 0x1028, 1, 0xff), Some(true), "a store to watched code is reported");
    assert!(memory.ram.has_dirty_code());
    assert_eq!(memory.ram.take_dirty_code().pages(), Some(&[5][..]));
    // A key built for another privilege does not hit: a U-mode path misses the S page.
    hart.privilege = Privilege::User;
    let user = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&user, 0x1010, 8), None);

    // M-mode: the RAM window, and nothing outside RAM or within 7 bytes of its end.
    hart.privilege = Privilege::Machine;
    let machine = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&machine, page(5) + 0x10, 4), Some(0x5566_7788));
    assert_eq!(memory.fast_load(&machine, 0x1000_0000, 1), None, "a device");
    assert_eq!(memory.fast_load(&machine, RAM_BASE - 8, 8), None);
    assert_eq!(memory.fast_load(&machine, page(16) - 4, 4), None, "the last bytes take the full path");
    assert_eq!(memory.fast_store(&machine, page(7) + 4092, 8, 0), None, "crosses a page");
    assert_eq!(memory.fast_store(&machine, page(7), 8, 7), Some(false));
    assert_eq!(memory.ram.load(page(7), 8), Some(7));
    // A locked PMP entry binds M-mode too: no window then.
    hart.pmp.write_cfg(0, 0x9f).unwrap(); // L, A = NAPOT, R, W, X
    let locked = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&locked, page(5) + 0x10, 4), None);
}

/// A hart in S-mode with `satp` bare, PMP allowing everything, and 16 pages of RAM whose page n holds n at offset
/// 0x10; root (page 0)[2] -> level 1 (page 1)[0] -> level 0 (page 2)[5] maps va `page(5)` to page 6.
fn bare_fixture(backing: &mut [u8]) -> (Ram<'_>, crate::mem::mmu::VmRealMap, crate::hart::Hart) {
    use crate::hart::{Hart, HartConfig};
    let mut ram = Ram::new(RAM_BASE, backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    for n in 0..16 {
        ram.store(page(n) + 0x10, 8, n).unwrap();
    }
    ram.store(page(0) + 16, 8, make_pte(page(1) >> 12, PteFlags::V)).unwrap();
    ram.store(page(1), 8, make_pte(page(2) >> 12, PteFlags::V)).unwrap();
    let leaf = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D;
    ram.store(page(2) + 8 * 5, 8, make_pte(page(6) >> 12, leaf)).unwrap();
    let map = crate::mem::mmu::VmRealMap::for_ram(&ram).unwrap();
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.pmp.write_addr(0, u64::MAX).unwrap();
    hart.pmp.write_cfg(0, 0x1f).unwrap(); // A = NAPOT, R, W, X
    hart.privilege = Privilege::Supervisor;
    hart.csrs.satp = 0;
    (ram, map, hart)
}

/// With `satp` bare, an S-mode access fills the TLB with the identity page, and every later access to the page
/// (any kind PMP and the real map allow) takes the fast path; M-mode never fills it.
#[test]
fn bare_supervisor_accesses_hit_after_the_first() {
    use crate::mem::mmu::{Loaded, Memory, Target, Tlb};
    let mut backing = vec![0u8; 16 * 4096];
    let (mut ram, map, mut hart) = bare_fixture(&mut backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    let mut tlb = Tlb::new();
    let mut memory = Memory { ram: &mut ram, realmap: &map, tlb: &mut tlb };

    let path = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&path, page(7) + 0x10, 8), None, "the first access misses");
    assert_eq!(memory.fast_fetch(&path, page(7)), None);
    assert_eq!(memory.load(&hart, page(7) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(7)));
    assert_eq!(memory.tlb.occupancy(), 1);
    assert_eq!(memory.fast_load(&path, page(7) + 0x10, 8), Some(7), "then it hits");
    assert_eq!(memory.fast_store(&path, page(7) + 0x20, 8, 0x77), Some(false), "a store to the page hits too");
    assert_eq!(memory.ram.load(page(7) + 0x20, 8), Some(0x77));
    assert_eq!(memory.fast_fetch(&path, page(7) + 4), Some(7 * 4096 + 4), "and a fetch");
    assert_eq!(memory.translate_page(&hart, page(7) + 8, 8, AccessType::Store), Ok((Target::Ram(7 * 4096 + 8), true)));
    assert_eq!(memory.fast_load(&path, page(8) + 0x10, 8), None, "another page is not cached");
    assert_eq!(memory.fast_load(&path, page(7) + 0xffc, 8), None, "crosses the page");

    // A PMP entry that covers only part of a page: the access is allowed, the page is never cached.
    memory.tlb.flush_all();
    hart.pmp.write_cfg(0, 0).unwrap();
    hart.pmp.write_addr(0, (page(9) + 0x800) >> 2).unwrap();
    hart.pmp.write_cfg(0, 0x0f).unwrap(); // A = TOR [0, page(9) + 0x800), R, W, X
    let path = memory.data_path(&hart);
    assert_eq!(memory.load(&hart, page(9) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(9)));
    assert_eq!(memory.tlb.occupancy(), 0);
    assert_eq!(memory.fast_load(&path, page(9) + 0x10, 8), None);
    assert_eq!(memory.load(&hart, page(8) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(8)));
    assert_eq!(memory.fast_load(&path, page(8) + 0x10, 8), Some(8), "a page PMP covers whole is cached");

    // M-mode (no PMP lock): the window, never the TLB.
    memory.tlb.flush_all();
    hart.privilege = Privilege::Machine;
    assert_eq!(memory.load(&hart, page(7) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(7)));
    assert_eq!(memory.tlb.occupancy(), 0);
}

/// A PMP write that takes a page away from S-mode is seen by the very next access: the write reports a
/// translation change, the dispatcher flushes, and the fast path misses and the full path faults.
#[test]
fn a_pmp_change_denying_a_bare_page_is_seen_at_once() {
    use crate::hart::Exception;
    use crate::isa::csr::PMPCFG0;
    use crate::mem::mmu::{Loaded, Memory, Tlb};
    let mut backing = vec![0u8; 16 * 4096];
    let (mut ram, map, mut hart) = bare_fixture(&mut backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    let mut tlb = Tlb::new();
    let mut memory = Memory { ram: &mut ram, realmap: &map, tlb: &mut tlb };
    assert_eq!(memory.load(&hart, page(7) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(7)));
    assert_eq!(memory.fast_load(&memory.data_path(&hart), page(7) + 0x10, 8), Some(7));

    // Read-only now (as an M-mode handler would write it).
    hart.privilege = Privilege::Machine;
    let effect = hart.write_csr(PMPCFG0, 0x19).unwrap(); // A = NAPOT, R
    assert!(effect.translation_changed, "a PMP write must flush the TLB");
    memory.tlb.flush_all(); // what `trap.rs` does on `translation_changed`
    hart.privilege = Privilege::Supervisor;
    let path = memory.data_path(&hart);
    assert_eq!(memory.fast_store(&path, page(7) + 0x10, 8, 1), None);
    let fault = Fault { exception: Exception::StoreAccessFault, tval: page(7) + 0x10 };
    assert_eq!(memory.store(&hart, page(7) + 0x10, 8, 1), Err(fault));
    assert_eq!(memory.load(&hart, page(7) + 0x10, 8, AccessType::Load), Ok(Loaded::Value(7)));
    assert_eq!(memory.fast_load(&path, page(7) + 0x10, 8), Some(7), "loads still hit");
    assert_eq!(memory.fast_store(&path, page(7) + 0x10, 8, 1), None, "stores never do");

    // Nothing at all.
    hart.privilege = Privilege::Machine;
    assert!(hart.write_csr(PMPCFG0, 0x18).unwrap().translation_changed);
    memory.tlb.flush_all();
    hart.privilege = Privilege::Supervisor;
    let path = memory.data_path(&hart);
    assert_eq!(memory.fast_load(&path, page(7) + 0x10, 8), None);
    let fault = Fault { exception: Exception::LoadAccessFault, tval: page(7) + 0x10 };
    assert_eq!(memory.load(&hart, page(7) + 0x10, 8, AccessType::Load), Err(fault));
    assert_eq!(memory.tlb.occupancy(), 0);
}

/// Bare and Sv39 entries never answer each other's keys, even with no flush between `satp` writes: a va that the
/// page tables map elsewhere reads its own page when bare and the mapped page under Sv39, every time.
#[test]
fn satp_bare_sv39_bare_never_uses_the_other_modes_entry() {
    use crate::mem::mmu::{Loaded, Memory, Tlb};
    let mut backing = vec![0u8; 16 * 4096];
    let (mut ram, map, mut hart) = bare_fixture(&mut backing);
    let page = |n: u64| RAM_BASE + n * 4096;
    let va = page(5) + 0x10;
    let sv39 = Satp::new(SATP_MODE_SV39, 0, page(0) >> 12).0;
    let mut tlb = Tlb::new();
    let mut memory = Memory { ram: &mut ram, realmap: &map, tlb: &mut tlb };
    for round in 0..3 {
        hart.csrs.satp = 0;
        let bare = memory.data_path(&hart);
        let fast = memory.fast_load(&bare, va, 8);
        assert!(fast.is_none() || fast == Some(5), "round {round}: bare fast path read {fast:?}");
        assert_eq!(memory.load(&hart, va, 8, AccessType::Load), Ok(Loaded::Value(5)), "round {round}: bare");
        assert_eq!(memory.fast_load(&bare, va, 8), Some(5));
        assert_eq!(memory.fast_fetch(&bare, va), Some(5 * 4096 + 0x10));

        hart.csrs.satp = sv39;
        let paged = memory.data_path(&hart);
        assert_eq!(memory.fast_load(&paged, va, 8), None, "round {round}: the bare entry must not answer Sv39");
        assert_eq!(memory.fast_fetch(&paged, va), None);
        assert_eq!(memory.load(&hart, va, 8, AccessType::Load), Ok(Loaded::Value(6)), "round {round}: Sv39");
        assert_eq!(memory.fast_load(&paged, va, 8), Some(6));
        hart.csrs.satp = 0;
        assert_eq!(memory.fast_load(&memory.data_path(&hart), va, 8), None, "the Sv39 entry must not answer bare");
        assert_eq!(memory.load(&hart, va, 8, AccessType::Load), Ok(Loaded::Value(5)));
    }
}

/// Bare keys for U and S differ from each other and from every Sv39 key, and an entry cached for one privilege
/// does not answer the other.
#[test]
fn bare_keys_differ_by_privilege_and_from_sv39_keys() {
    let mut sv39_bits = 0u32;
    for access in AccessType::ALL {
        for privilege in [Privilege::User, Privilege::Supervisor] {
            for sum in [false, true] {
                for mxr in [false, true] {
                    let key = TlbKey::new(0, access, AccessContext::new(privilege, sum, mxr));
                    sv39_bits |= key.bit;
                }
            }
        }
    }
    let mut bare_bits = 0u32;
    for access in AccessType::ALL {
        let user = TlbKey::bare(0, access, Privilege::User);
        let supervisor = TlbKey::bare(0, access, Privilege::Supervisor);
        assert_ne!(user, supervisor);
        assert_eq!(user.bit.count_ones(), 1);
        assert_eq!(bare_bits & (user.bit | supervisor.bit), 0, "one bit per (kind, privilege)");
        bare_bits |= user.bit | supervisor.bit;
        assert_eq!(TlbKey::bare(0, access, Privilege::Machine).bit, 0, "an M-mode key never hits");
    }
    assert_eq!(sv39_bits & bare_bits, 0, "bare and Sv39 permission bits are disjoint");

    let mut tlb = SoftTlb::<64>::new();
    let supervisor_only = |_, privilege| privilege == Privilege::Supervisor;
    assert!(tlb.insert_bare(0x8000_5123, 0, HostAddr(0x5000), supervisor_only));
    let s_load = TlbKey::bare(0, AccessType::Load, Privilege::Supervisor);
    assert_eq!(tlb.lookup(0x8000_5008, s_load), Some(HostAddr(0x5008)));
    assert_eq!(tlb.lookup(0x8000_5008, TlbKey::bare(0, AccessType::Load, Privilege::User)), None);
    assert_eq!(tlb.lookup(0x8000_5008, TlbKey::bare(1, AccessType::Load, Privilege::Supervisor)), None);
    let sv39_all = TlbKey { asid: 0, bit: sv39_bits };
    assert_eq!(tlb.lookup(0x8000_5008, sv39_all), None, "no Sv39 key hits a bare entry");
    assert!(!tlb.insert_bare(0x8000_6000, 0, HostAddr(0x6000), |_, _| false), "nothing allowed, nothing cached");

    // And an Sv39 entry with every permission answers no bare key.
    tlb.flush_all();
    tlb.insert(0x8000_5000, 0, &walked(0x8000_5000, 0, rwxad() | PteFlags::U, true), mapping(0x5000, MapPerms::RWX));
    assert_eq!(tlb.lookup(0x8000_5008, TlbKey { asid: 0, bit: bare_bits }), None);
}

// ---- model-based test: the TLB never disagrees with a fresh walk ----

const RAM_PAGES: u64 = 16;
/// The 20 PTE slots the generated tables use: root indices 0, 1, 2, 511; indices 0..4 of the level-1 tables in
/// pages 1 and 2; indices 0..4 of the level-0 tables in pages 3 and 4. Data pages are 5..16.
fn slot_address(slot: usize) -> u64 {
    let page = |n: u64| RAM_BASE + n * 4096;
    match slot {
        0..4 => page(0) + [0u64, 1, 2, 511][slot] * 8,
        4..12 => page(1 + (slot as u64 - 4) / 4) + (slot as u64 % 4) * 8,
        _ => page(3 + (slot as u64 - 12) / 4) + (slot as u64 % 4) * 8,
    }
}

/// The 64 page addresses the accesses use, from every root slot through every table slot.
fn test_va(i: usize) -> u64 {
    let vpn2 = [0u64, 1, 2, 511][i / 16 % 4];
    let va = vpn2 << 30 | ((i / 4 % 4) as u64) << 21 | ((i % 4) as u64) << 12;
    // Sign-extend bit 38.
    ((va << 25) as i64 >> 25) as u64
}

/// Any PTE at all: pointers, leaves, invalid, reserved bits, targets inside and outside RAM.
fn any_pte() -> impl Strategy<Value = u64> {
    let ram_ppn = RAM_BASE >> 12;
    let ppn = prop_oneof![
        (0..RAM_PAGES).prop_map(move |n| ram_ppn + n), // tables, data, 2 MiB/1 GiB aligned at n = 0
        Just(0x10u64),                                 // below RAM
        Just(ram_ppn + 0x1000),                        // above RAM
    ];
    let reserved = prop_oneof![8 => Just(0u64), 1 => (54..64u32).prop_map(|b| 1u64 << b), 1 => Just(3 << 8)];
    (ppn, any::<u8>(), reserved)
        .prop_map(|(ppn, flags, reserved)| make_pte(ppn, PteFlags::from_bits_retain(flags as u64)) | reserved)
}

/// A valid leaf to a RAM page in `pages` with random flags, half the time with all of R, W, X, A and D.
fn leaf_to(pages: std::ops::Range<u64>) -> impl Strategy<Value = u64> {
    let ram_ppn = RAM_BASE >> 12;
    (pages, any::<u8>(), any::<bool>()).prop_map(move |(n, flags, permissive)| {
        let mut flags = PteFlags::from_bits_retain(flags as u64) | PteFlags::V;
        if permissive {
            flags |= PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D;
        }
        make_pte(ram_ppn + n, flags)
    })
}

/// A plausible PTE for generated table slot `slot` (see [`slot_address`]): mostly a pointer to a table of the next
/// level or a leaf, sometimes anything.
fn slot_pte(slot: usize) -> BoxedStrategy<u64> {
    let ram_ppn = RAM_BASE >> 12;
    let pointer_to = move |pages: std::ops::Range<u64>| pages.prop_map(move |n| make_pte(ram_ppn + n, PteFlags::V));
    match slot {
        // Root: to a level-1 table, or a 1 GiB leaf (only page 0 is aligned).
        0..4 => prop_oneof![6 => pointer_to(1..3), 2 => leaf_to(0..1), 2 => any_pte()].boxed(),
        // Level 1: to a level-0 table, or a 2 MiB leaf.
        4..12 => prop_oneof![6 => pointer_to(3..5), 2 => leaf_to(0..2), 2 => any_pte()].boxed(),
        // Level 0: a 4 KiB leaf, often to data pages, sometimes to the tables themselves.
        _ => prop_oneof![6 => leaf_to(5..RAM_PAGES), 1 => leaf_to(0..5), 2 => any_pte()].boxed(),
    }
}

fn initial_tables() -> impl Strategy<Value = Vec<u64>> {
    (0..20).map(slot_pte).collect::<Vec<_>>()
}

#[derive(Debug, Clone)]
enum Op {
    Access {
        va: usize,
        offset: u64,
        access: AccessType,
        user: bool,
        sum: bool,
        mxr: bool,
    },
    /// Rewrite a PTE, then issue the `sfence.vma` the specification requires for it.
    WritePte {
        slot: usize,
        pte: u64,
    },
    SetAsid(u16),
    FlushAsid(u16),
    FlushVa {
        va: usize,
        asid: Option<u16>,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let access = prop_oneof![Just(AccessType::Fetch), Just(AccessType::Load), Just(AccessType::Store)];
    prop_oneof![
        12 => (prop_oneof![3 => 0..8usize, 1 => 0..64usize], 0..4096u64, access, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(va, offset, access, user, sum, mxr)| Op::Access { va, offset, access, user, sum, mxr }),
        2 => (0..20usize).prop_flat_map(|slot| slot_pte(slot).prop_map(move |pte| Op::WritePte { slot, pte })),
        1 => (0..3u16).prop_map(Op::SetAsid),
        1 => (0..3u16).prop_map(Op::FlushAsid),
        1 => (0..64usize, proptest::option::of(0..3u16)).prop_map(|(va, asid)| Op::FlushVa { va, asid }),
    ]
}

/// Counts the compare-and-sets that changed memory.
struct Counting<'a, 'b> {
    ram: &'a mut Ram<'b>,
    writes: u32,
}

impl PageTableMemory for Counting<'_, '_> {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        self.ram.read_u64(gpa)
    }
    fn compare_exchange_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        let done = self.ram.compare_exchange_u64(gpa, old, new)?;
        self.writes += done as u32;
        Some(done)
    }
}

/// The PTE addresses a walk of `va` reads, each with whether it was read as a leaf (or where the walk stopped).
fn walk_path(ram: &Ram, root: u64, va: u64) -> Vec<(u64, bool)> {
    let mut path = Vec::new();
    let mut table = root;
    for level in (0..3).rev() {
        let address = table + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
        let Some(pte) = ram.load(address, 8) else { break };
        let pointer = pte & 0xf == 1; // V set, R = W = X = 0
        path.push((address, !pointer));
        if !pointer {
            break;
        }
        table = ((pte >> 10) & ((1 << 44) - 1)) << 12;
    }
    path
}

/// Runs `ops` against tables holding `initial` in the 20 slots; returns the number of TLB hits.
///
/// With `distinct_roots`, ASID 2 has its own root (page 1, a level-1 table of the others read as a root), so a TLB
/// that confused ASIDs would return another address space's translation; G is then cleared in every PTE, since
/// the specification requires global mappings to be identical in all address spaces.
fn run_model(initial: &[u64], ops: &[Op], distinct_roots: bool) -> Result<u32, TestCaseError> {
    let mut backing = vec![0u8; (RAM_PAGES * 4096) as usize];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let g_mask = if distinct_roots { !PteFlags::G.bits() } else { u64::MAX };
    for (slot, &pte) in initial.iter().enumerate() {
        ram.store(slot_address(slot), 8, pte & g_mask).unwrap();
    }
    // Pages 0..12 are ordinary RAM, 12..16 a read-only extent (like a ROM), host addresses shuffled.
    let mut map = RealMap::<2>::new();
    map.insert(Extent { guest_base: RAM_BASE, size: 12 * 4096, host_base: HostAddr(0x4000), perms: MapPerms::RWX })
        .unwrap();
    let rom = Extent { guest_base: RAM_BASE + 12 * 4096, size: 4 * 4096, host_base: HostAddr(0), perms: MapPerms::R };
    map.insert(rom).unwrap();
    let root_of = |asid: u16| if distinct_roots && asid == 2 { RAM_BASE + 4096 } else { RAM_BASE };
    let roots: &[u64] = if distinct_roots { &[RAM_BASE, RAM_BASE + 4096] } else { &[RAM_BASE] };
    let mut asid = 0u16;
    let mut tlb = SoftTlb::<8>::new();
    let mut hits = 0;
    for op in ops {
        match *op {
            Op::Access { va, offset, access, user, sum, mxr } => {
                let va = test_va(va) + offset;
                let privilege = if user { Privilege::User } else { Privilege::Supervisor };
                let ctx = AccessContext::new(privilege, sum, mxr);
                let satp = Satp::new(SATP_MODE_SV39, asid, root_of(asid) >> 12).0;
                let hit = tlb.lookup(va, TlbKey::new(asid, access, ctx));
                // The translator's view for this context never serves what the TLB would not.
                #[cfg(feature = "dbt")]
                let keys = keys(asid, ctx);
                #[cfg(feature = "dbt")]
                if let Some(host) = tlb.view_lookup(va, keys, access) {
                    prop_assert_eq!(Some(HostAddr(host)), hit, "the view and the TLB disagree at {:#x}", va);
                }
                let mut mem = Counting { ram: &mut ram, writes: 0 };
                let walk = translate(&mut mem, satp, va, access, ctx);
                let writes = mem.writes;
                let need = match access {
                    AccessType::Fetch => MapPerms::X,
                    AccessType::Load => MapPerms::R,
                    AccessType::Store => MapPerms::W,
                };
                let resolved = walk.ok().and_then(|t| map.lookup(t.guest_real)).filter(|m| m.perms.contains(need));
                if let Some(host) = hit {
                    hits += 1;
                    prop_assert!(walk.is_ok(), "TLB hit at {va:#x} but the walk faults: {walk:?}");
                    prop_assert_eq!(writes, 0, "TLB hit at {:#x} skipped an A/D update", va);
                    prop_assert_eq!(Some(host), resolved.map(|m| m.host), "TLB and walk disagree at {:#x}", va);
                } else if let (Ok(t), Some(m)) = (walk, resolved) {
                    prop_assert!(tlb.insert(va, asid, &t, m));
                    prop_assert_eq!(tlb.lookup(va, TlbKey::new(asid, access, ctx)), Some(m.host), "hit after insert");
                }
                // As the translator's slow path (or its dispatcher, for a fetch) does after the TLB served it.
                #[cfg(feature = "dbt")]
                {
                    let key = TlbKey::new(asid, access, ctx);
                    tlb.fill_views(va, u64::MAX);
                    if tlb.lookup(va, key).is_some() {
                        let view = tlb.view_lookup(va, keys, access);
                        prop_assert_eq!(view.map(HostAddr), tlb.lookup(va, key), "view filled at {:#x}", va);
                    }
                }
            }
            Op::WritePte { slot, pte } => {
                let address = slot_address(slot);
                // Which translations read this PTE, as a leaf (one address per page it maps) or as a pointer?
                let mut as_leaf: Vec<(u64, (usize, u64))> = Vec::new();
                let mut as_pointer = false;
                for &root in roots {
                    for i in 0..64 {
                        let va = test_va(i);
                        for (depth, (a, leaf)) in walk_path(&ram, root, va).into_iter().enumerate() {
                            // The page this leaf maps: its level and the address bits above its offset.
                            let page = (depth, va >> (12 + 9 * (2 - depth)));
                            if a != address {
                                continue;
                            }
                            if !leaf {
                                as_pointer = true;
                            } else if !as_leaf.iter().any(|&(_, p)| p == page) {
                                as_leaf.push((va, page));
                            }
                        }
                    }
                }
                ram.store(address, 8, pte & g_mask).unwrap();
                if as_pointer {
                    tlb.sfence_vma(None, None); // a non-leaf PTE changed: only a full fence covers it
                } else {
                    // The one fence per page the specification asks for, at any address in it (a superpage is
                    // fenced once, at its first test address).
                    for (va, _) in as_leaf {
                        tlb.sfence_vma(Some(va), None);
                    }
                }
            }
            Op::SetAsid(new) => asid = new,
            Op::FlushAsid(a) => tlb.flush_asid(a),
            Op::FlushVa { va, asid } => tlb.flush_va(test_va(va), asid),
        }
    }
    Ok(hits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    fn the_tlb_always_agrees_with_a_fresh_walk_property(
        initial in initial_tables(),
        ops in proptest::collection::vec(op_strategy(), 1..200),
        distinct_roots in any::<bool>(),
    ) {
        THE_TLB_ALWAYS_AGREES_WITH_A_FRESH_WALK.add(1);
        run_model(&initial, &ops, distinct_roots)?;
    }
}

/// The hostile inputs the property `the_tlb_always_agrees_with_a_fresh_walk` tried (`target/isolation.txt`).
static THE_TLB_ALWAYS_AGREES_WITH_A_FRESH_WALK: crate::isolation::Tally =
    crate::isolation::Tally::escapes("hostile page tables");

#[test]
fn the_tlb_always_agrees_with_a_fresh_walk() {
    THE_TLB_ALWAYS_AGREES_WITH_A_FRESH_WALK.run(the_tlb_always_agrees_with_a_fresh_walk_property);
}

#[test]
fn the_model_reaches_hits() {
    // A hand-made identity-ish table so the model's hit path is known to run.
    let mut initial = vec![0u64; 20];
    initial[0] = make_pte((RAM_BASE >> 12) + 1, PteFlags::V); // root[0] -> level-1 table in page 1
    initial[4] = make_pte((RAM_BASE >> 12) + 3, PteFlags::V); // l1[0] -> level-0 table in page 3
    initial[12] = make_pte((RAM_BASE >> 12) + 5, rwxad()); // l0[0] -> page 5
    let access = |access| Op::Access { va: 0, offset: 8, access, user: false, sum: false, mxr: false };
    let ops =
        [access(AccessType::Load), access(AccessType::Load), access(AccessType::Store), access(AccessType::Store)];
    assert_eq!(run_model(&initial, &ops, false).unwrap(), 3, "all but the first access hit (D is already set)");
}
