//! Tests of the Sv39 walker against page tables built by hand in a `Ram`.

use super::*;
use crate::mem::RAM_BASE;

const PAGES: usize = 32;
const RAM_PPN: u64 = RAM_BASE >> PAGE_SHIFT;

const U: Privilege = Privilege::User;
const S: Privilege = Privilege::Supervisor;

fn ctx(privilege: Privilege) -> AccessContext {
    AccessContext::new(privilege, false, false)
}

fn backing() -> Vec<u8> {
    vec![0u8; PAGES * PAGE_SIZE as usize]
}

/// Guest real address of RAM page `n`.
fn page(n: u64) -> u64 {
    RAM_BASE + n * PAGE_SIZE
}

fn satp(root: u64, asid: u16) -> u64 {
    Satp::new(SATP_MODE_SV39, asid, root >> PAGE_SHIFT).0
}

fn vpn(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

fn set_pte(ram: &mut Ram, table: u64, index: u64, pte: u64) {
    ram.store(table + index * 8, 8, pte).unwrap();
}

fn pointer(table: u64) -> u64 {
    make_pte(table >> PAGE_SHIFT, PteFlags::V)
}

const RWXAD: PteFlags =
    PteFlags::V.union(PteFlags::R).union(PteFlags::W).union(PteFlags::X).union(PteFlags::A).union(PteFlags::D);

/// Maps the page of `va` to the page of `pa` at `level` (0: 4 KiB through tables `l1` and `l0`; 1: 2 MiB through
/// `l1`; 2: 1 GiB) with `flags`.
#[allow(clippy::too_many_arguments)]
fn map(ram: &mut Ram, root: u64, l1: u64, l0: u64, va: u64, pa: u64, level: u32, flags: PteFlags) {
    let leaf = make_pte(pa >> PAGE_SHIFT, flags);
    if level == 2 {
        return set_pte(ram, root, vpn(va, 2), leaf);
    }
    let l1 = follow_or_set(ram, root, vpn(va, 2), l1);
    if level == 1 {
        return set_pte(ram, l1, vpn(va, 1), leaf);
    }
    let l0 = follow_or_set(ram, l1, vpn(va, 1), l0);
    set_pte(ram, l0, vpn(va, 0), leaf);
}

/// The table an existing pointer PTE at `table[index]` names, else `next` after pointing that PTE at it.
fn follow_or_set(ram: &mut Ram, table: u64, index: u64, next: u64) -> u64 {
    let pte = ram.load(table + index * 8, 8).unwrap();
    if pte & 0xf == PteFlags::V.bits() {
        return (pte >> 10) << 12;
    }
    set_pte(ram, table, index, pointer(next));
    next
}

#[test]
fn satp_modes() {
    for mode in 0..16 {
        assert_eq!(satp_mode_supported(mode), mode == 0 || mode == 8, "mode {mode}");
    }
    let satp = Satp::new(SATP_MODE_SV39, 0xabcd, 0x8_1234);
    assert_eq!((satp.mode(), satp.asid(), satp.ppn(), satp.root()), (8, 0xabcd, 0x8_1234, 0x8123_4000));
}

#[test]
fn bare_and_machine_mode_are_identity() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    for access in AccessType::ALL {
        let t = translate(&mut ram, 0, 0xdead_beef_1234, access, ctx(S)).unwrap();
        assert_eq!((t.guest_real, t.pte_address), (0xdead_beef_1234, None));
        // Machine privilege ignores even an Sv39 satp whose root lies outside RAM.
        let t = translate(&mut ram, satp(0x1000, 0), 0x1234, access, ctx(Privilege::Machine)).unwrap();
        assert_eq!(t.guest_real, 0x1234);
    }
}

#[test]
fn four_kib_mappings_translate_at_arbitrary_addresses() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1, l0) = (page(0), page(1), page(2));
    let cases = [
        (0x1234_5678u64, page(5)),
        (0x0000_0000_0000_0abc, page(6)),
        (0x0000_003f_ffff_fff8, page(7)),       // highest positive canonical address
        (0xffff_ffff_ffff_f123, page(8)),       // highest negative one: vpn2 = 511
        (0xffff_ffc0_0000_0010, page(9)),       // lowest negative one
        (RAM_BASE + 0x3000, RAM_BASE + 0x3000), // identity
    ];
    for (i, &(va, pa)) in cases.iter().enumerate() {
        // Separate level-1 and level-0 tables per case so the mappings do not disturb each other.
        let (l1, l0) = (l1 + 2 * i as u64 * PAGE_SIZE, l0 + 2 * i as u64 * PAGE_SIZE);
        map(&mut ram, root, l1, l0, va, pa, 0, RWXAD);
    }
    for &(va, pa) in &cases {
        for access in AccessType::ALL {
            let t = translate(&mut ram, satp(root, 1), va, access, ctx(S)).unwrap();
            assert_eq!(t.guest_real, pa | (va & 0xfff), "{va:#x} {access:?}");
            assert_eq!((t.level, t.page_size(), t.global), (0, 4096, false));
            assert_eq!(ram.load(t.pte_address.unwrap(), 8), Some(make_pte(pa >> 12, RWXAD)));
        }
    }
    // A neighbouring page of the first mapping is unmapped: V clear.
    let err = translate(&mut ram, satp(root, 1), 0x1234_6678, AccessType::Load, ctx(S)).unwrap_err();
    assert_eq!(err, Fault { exception: Exception::LoadPageFault, tval: 0x1234_6678 });
}

#[test]
fn superpages_translate_and_misaligned_ones_fault() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1) = (page(0), page(1));
    // 1 GiB: va 0x4000_0000.. -> RAM_BASE.. (RAM_BASE is 1 GiB aligned).
    map(&mut ram, root, l1, 0, 0x4000_0000, RAM_BASE, 2, RWXAD);
    // 2 MiB: va 0x20_0000.. -> RAM_BASE + 0x60_0000.
    map(&mut ram, root, l1, 0, 0x20_0000, RAM_BASE + 0x60_0000, 1, RWXAD);
    let t = translate(&mut ram, satp(root, 0), 0x4abc_d123, AccessType::Load, ctx(S)).unwrap();
    assert_eq!((t.guest_real, t.level, t.page_size()), (RAM_BASE + 0xabc_d123, 2, 1 << 30));
    let t = translate(&mut ram, satp(root, 0), 0x3f_fff8, AccessType::Store, ctx(S)).unwrap();
    assert_eq!((t.guest_real, t.level, t.page_size()), (RAM_BASE + 0x7f_fff8, 1, 2 << 20));

    // Misaligned: the low PPN bits of a superpage leaf must be zero.
    for (level, va, low_ppn) in
        [(2u32, 0x4000_0000u64, 1u64), (2, 0x4000_0000, 1 << 9), (1, 0x20_0000, 1), (1, 0x20_0000, 0x100)]
    {
        let pa = RAM_BASE + (low_ppn << 12);
        map(&mut ram, root, l1, 0, va, pa, level, RWXAD);
        for access in AccessType::ALL {
            let err = translate(&mut ram, satp(root, 0), va + 8, access, ctx(S)).unwrap_err();
            assert_eq!(err, Fault { exception: access.page_fault(), tval: va + 8 }, "level {level} ppn+{low_ppn:#x}");
        }
    }
    // A 2 MiB leaf may have PPN[1] bits set (only PPN[0] must be zero).
    map(&mut ram, root, l1, 0, 0x20_0000, RAM_BASE + (1 << 21), 1, RWXAD);
    let t = translate(&mut ram, satp(root, 0), 0x20_0010, AccessType::Fetch, ctx(S)).unwrap();
    assert_eq!(t.guest_real, RAM_BASE + (1 << 21) + 0x10);
}

/// The rules as the specification states them, written independently of `leaf_permits`.
fn expected_to_permit(r: bool, w: bool, x: bool, u: bool, access: AccessType, c: AccessContext) -> bool {
    if !r && !x {
        return false; // a pointer at level 0, or reserved W-only
    }
    if w && !r {
        return false; // reserved
    }
    let page_kind_ok = match access {
        AccessType::Fetch => x,
        AccessType::Load => r || (x && c.mxr),
        AccessType::Store => w,
    };
    let privilege_ok = match (c.privilege, u) {
        (Privilege::User, u) => u,
        (_, false) => true,
        (_, true) => c.sum && access != AccessType::Fetch,
    };
    page_kind_ok && privilege_ok
}

#[test]
fn every_permission_combination_against_every_access() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1, l0) = (page(0), page(1), page(2));
    let va = 0x40_1000;
    let mut permitted = 0;
    for bits in 0..16u64 {
        let (r, w, x, u) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
        let mut flags = PteFlags::V | PteFlags::A | PteFlags::D;
        flags.set(PteFlags::R, r);
        flags.set(PteFlags::W, w);
        flags.set(PteFlags::X, x);
        flags.set(PteFlags::U, u);
        map(&mut ram, root, l1, l0, va, page(9), 0, flags);
        for access in AccessType::ALL {
            for privilege in [U, S] {
                for sum in [false, true] {
                    for mxr in [false, true] {
                        let c = AccessContext::new(privilege, sum, mxr);
                        let want = expected_to_permit(r, w, x, u, access, c);
                        let got = translate(&mut ram, satp(root, 0), va + 4, access, c);
                        match got {
                            Ok(t) => {
                                assert!(want, "{flags:?} {access:?} {c:?} translated");
                                assert_eq!(t.guest_real, page(9) + 4);
                                permitted += 1;
                            }
                            Err(fault) => {
                                assert!(!want, "{flags:?} {access:?} {c:?} faulted");
                                assert_eq!(fault, Fault { exception: access.page_fault(), tval: va + 4 });
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(permitted > 50, "the table is not all faults ({permitted})");
}

#[test]
fn permission_spot_checks() {
    let ux = PteFlags::V | PteFlags::U | PteFlags::X | PteFlags::A;
    let s_sum = AccessContext::new(S, true, false);
    assert!(!leaf_permits(ux, AccessType::Fetch, s_sum), "S never executes U pages, even with SUM");
    assert!(leaf_permits(ux, AccessType::Fetch, ctx(U)));
    assert!(!leaf_permits(ux, AccessType::Load, ctx(U)), "execute-only without MXR");
    assert!(leaf_permits(ux, AccessType::Load, AccessContext::new(U, false, true)), "MXR reads execute-only");
    let ur = PteFlags::V | PteFlags::U | PteFlags::R;
    assert!(!leaf_permits(ur, AccessType::Load, ctx(S)), "S reads U pages only with SUM");
    assert!(leaf_permits(ur, AccessType::Load, s_sum));
    let srw = PteFlags::V | PteFlags::R | PteFlags::W;
    assert!(!leaf_permits(srw, AccessType::Store, AccessContext::new(U, true, true)), "U never touches S pages");
}

#[test]
fn reserved_encodings_fault() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1, l0) = (page(0), page(1), page(2));
    let va = 0x40_2000;
    let check = |ram: &mut Ram, what: &str| {
        for access in AccessType::ALL {
            let err = translate(ram, satp(root, 0), va, access, ctx(S)).unwrap_err();
            assert_eq!(err, Fault { exception: access.page_fault(), tval: va }, "{what}");
        }
    };
    // Leaf encodings.
    for bit in 54..64 {
        set_pte(&mut ram, l0, vpn(va, 0), make_pte(page(9) >> 12, RWXAD) | 1 << bit);
        map(&mut ram, root, l1, l0, va, page(9), 0, RWXAD);
        set_pte(&mut ram, l0, vpn(va, 0), make_pte(page(9) >> 12, RWXAD) | 1 << bit);
        check(&mut ram, "leaf reserved bit");
    }
    for flags in [PteFlags::V | PteFlags::W, PteFlags::V | PteFlags::W | PteFlags::X, RWXAD - PteFlags::V] {
        map(&mut ram, root, l1, l0, va, page(9), 0, flags | PteFlags::A | PteFlags::D);
        check(&mut ram, "W without R, or V clear");
    }
    // The software bits (RSW, 9:8) are ignored.
    map(&mut ram, root, l1, l0, va, page(9), 0, RWXAD);
    set_pte(&mut ram, l0, vpn(va, 0), make_pte(page(9) >> 12, RWXAD) | 3 << 8);
    assert!(translate(&mut ram, satp(root, 0), va, AccessType::Load, ctx(S)).is_ok());
    // Non-leaf encodings: reserved high bits, and D, A or U in a pointer.
    for extra in [1u64 << 54, 1 << 63, PteFlags::A.bits(), PteFlags::D.bits(), PteFlags::U.bits()] {
        set_pte(&mut ram, l1, vpn(va, 1), pointer(l0) | extra);
        check(&mut ram, "pointer with reserved bits");
        set_pte(&mut ram, l1, vpn(va, 1), pointer(l0));
        set_pte(&mut ram, root, vpn(va, 2), pointer(l1) | extra);
        check(&mut ram, "root pointer with reserved bits");
        set_pte(&mut ram, root, vpn(va, 2), pointer(l1));
    }
    // G in a pointer is fine and makes the mapping global.
    set_pte(&mut ram, root, vpn(va, 2), pointer(l1) | PteFlags::G.bits());
    assert!(translate(&mut ram, satp(root, 0), va, AccessType::Load, ctx(S)).unwrap().global);
    set_pte(&mut ram, root, vpn(va, 2), pointer(l1));
    assert!(!translate(&mut ram, satp(root, 0), va, AccessType::Load, ctx(S)).unwrap().global);
    // A pointer at level 0 (R = W = X = 0) has nowhere to go.
    set_pte(&mut ram, l0, vpn(va, 0), pointer(page(3)));
    check(&mut ram, "pointer at level 0");
}

#[test]
fn non_canonical_addresses_fault() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let root = page(0);
    // Map the whole low and high 1 GiB so only canonicity can fault.
    set_pte(&mut ram, root, 0, make_pte(RAM_PPN, RWXAD));
    set_pte(&mut ram, root, 511, make_pte(RAM_PPN, RWXAD));
    for va in [0x0000_0040_0000_0000u64, 0x8000_0000_0000_0000, 0xffff_ffbf_ffff_ffff, 0x0100_0000_0000_0000] {
        assert!(!is_canonical(va));
        for access in AccessType::ALL {
            let err = translate(&mut ram, satp(root, 0), va, access, ctx(S)).unwrap_err();
            assert_eq!(err, Fault { exception: access.page_fault(), tval: va });
        }
    }
    for va in [0u64, 0x3f_ffff_ffff, 0xffff_ffc0_0000_0000, u64::MAX] {
        assert!(is_canonical(va));
    }
    assert_eq!(translate(&mut ram, satp(root, 0), 0x10, AccessType::Load, ctx(S)).unwrap().guest_real, RAM_BASE + 0x10);
    let t = translate(&mut ram, satp(root, 0), 0xffff_ffff_c000_0010, AccessType::Load, ctx(S)).unwrap();
    assert_eq!(t.guest_real, RAM_BASE + 0x10);
}

#[test]
fn accessed_and_dirty_bits_are_set_in_memory() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1, l0) = (page(0), page(1), page(2));
    let rwx = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X;
    let va = 0x7000;
    let pte_address = l0 + vpn(va, 0) * 8;
    let pte = |ram: &Ram| PteFlags::from_bits_truncate(ram.load(pte_address, 8).unwrap());

    map(&mut ram, root, l1, l0, va, page(9), 0, rwx);
    let t = translate(&mut ram, satp(root, 0), va, AccessType::Load, ctx(S)).unwrap();
    assert_eq!(pte(&ram), rwx | PteFlags::A, "load sets A, not D");
    assert_eq!((t.flags, t.pte_address), (rwx | PteFlags::A, Some(pte_address)));
    assert!(!t.permits(AccessType::Store, ctx(S)), "a store still needs a walk to set D");
    assert!(t.permits(AccessType::Load, ctx(S)));

    map(&mut ram, root, l1, l0, va, page(9), 0, rwx);
    translate(&mut ram, satp(root, 0), va, AccessType::Fetch, ctx(S)).unwrap();
    assert_eq!(pte(&ram), rwx | PteFlags::A, "fetch sets A, not D");

    map(&mut ram, root, l1, l0, va, page(9), 0, rwx);
    let t = translate(&mut ram, satp(root, 0), va, AccessType::Store, ctx(S)).unwrap();
    assert_eq!(pte(&ram), rwx | PteFlags::A | PteFlags::D, "store sets A and D");
    assert!(t.permits(AccessType::Store, ctx(S)));

    map(&mut ram, root, l1, l0, va, page(9), 0, rwx | PteFlags::A);
    translate(&mut ram, satp(root, 0), va, AccessType::Store, ctx(S)).unwrap();
    assert_eq!(pte(&ram), rwx | PteFlags::A | PteFlags::D, "store sets D when A was already set");

    // A faulting access changes nothing.
    map(&mut ram, root, l1, l0, va, page(9), 0, PteFlags::V | PteFlags::R);
    translate(&mut ram, satp(root, 0), va, AccessType::Store, ctx(S)).unwrap_err();
    assert_eq!(pte(&ram), PteFlags::V | PteFlags::R);
    // Superpage leaves are updated too, and the pointers above are left alone.
    map(&mut ram, root, l1, l0, 0x40_0000, RAM_BASE, 1, rwx);
    translate(&mut ram, satp(root, 0), 0x40_0000, AccessType::Store, ctx(S)).unwrap();
    assert_eq!(ram.load(l1 + 2 * 8, 8), Some(make_pte(RAM_PPN, rwx | PteFlags::A | PteFlags::D)));
    assert_eq!(ram.load(root, 8), Some(pointer(l1)));
}

#[test]
fn page_tables_outside_ram_are_access_faults() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1) = (page(0), page(1));
    let va = 0x1000;
    let outside = RAM_BASE + PAGES as u64 * PAGE_SIZE;
    for access in AccessType::ALL {
        let want = Fault { exception: access.access_fault(), tval: va };
        assert_eq!(translate(&mut ram, satp(0x1000, 0), va, access, ctx(S)), Err(want), "root below RAM");
        assert_eq!(translate(&mut ram, satp(outside, 0), va, access, ctx(S)), Err(want), "root above RAM");
        set_pte(&mut ram, root, 0, pointer(l1));
        set_pte(&mut ram, l1, 0, pointer(outside));
        assert_eq!(translate(&mut ram, satp(root, 0), va, access, ctx(S)), Err(want), "level-0 table outside RAM");
        // A leaf pointing outside RAM translates: whether that guest real address is memory is the real map's call.
        set_pte(&mut ram, l1, 0, make_pte(0x10_0000 >> 12, RWXAD & !PteFlags::A)); // 2 MiB at 1 MiB: misaligned
        assert_eq!(translate(&mut ram, satp(root, 0), va, access, ctx(S)).unwrap_err().exception, access.page_fault());
        set_pte(&mut ram, l1, 0, make_pte(0, RWXAD));
        assert_eq!(translate(&mut ram, satp(root, 0), va, access, ctx(S)).unwrap().guest_real, va);
    }
}

/// Memory that reports a changed PTE to the first `races` compare-and-sets, or refuses writes altogether.
struct Racy<'a, 'b> {
    ram: &'a mut Ram<'b>,
    races: u32,
    read_only: bool,
    reads: u32,
}

impl PageTableMemory for Racy<'_, '_> {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        self.reads += 1;
        self.ram.read_u64(gpa)
    }
    fn compare_exchange_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        if self.read_only {
            return None;
        }
        if self.races > 0 {
            self.races -= 1;
            return Some(false);
        }
        self.ram.compare_exchange_u64(gpa, old, new)
    }
}

#[test]
fn a_lost_ad_race_rereads_the_pte_and_unwritable_tables_are_access_faults() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (root, l1, l0) = (page(0), page(1), page(2));
    let va = 0x5000;
    let fresh = PteFlags::V | PteFlags::R | PteFlags::W;
    map(&mut ram, root, l1, l0, va, page(9), 0, fresh);
    let mut racy = Racy { ram: &mut ram, races: 2, read_only: false, reads: 0 };
    let t = translate(&mut racy, satp(root, 0), va, AccessType::Store, ctx(S)).unwrap();
    assert_eq!(racy.reads, 3 + 2, "the leaf was read again after each lost race");
    assert!(t.flags.contains(PteFlags::A | PteFlags::D));

    map(&mut ram, root, l1, l0, va, page(9), 0, fresh);
    let mut racy = Racy { ram: &mut ram, races: u32::MAX, read_only: false, reads: 0 };
    let err = translate(&mut racy, satp(root, 0), va, AccessType::Load, ctx(S)).unwrap_err();
    assert_eq!(err.exception, Exception::LoadPageFault, "endless races end in a page fault, not a hang");

    let mut racy = Racy { ram: &mut ram, races: 0, read_only: true, reads: 0 };
    let err = translate(&mut racy, satp(root, 0), va, AccessType::Store, ctx(S)).unwrap_err();
    assert_eq!(err.exception, Exception::StoreAccessFault);
    // No update needed: no write, so no fault.
    map(&mut ram, root, l1, l0, va, page(9), 0, fresh | PteFlags::A | PteFlags::D);
    let mut racy = Racy { ram: &mut ram, races: 0, read_only: true, reads: 0 };
    assert!(translate(&mut racy, satp(root, 0), va, AccessType::Store, ctx(S)).is_ok());
}

#[test]
fn ram_page_table_memory_refuses_misaligned_and_outside_words() {
    let mut backing = backing();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    ram.store(RAM_BASE + 8, 8, 5).unwrap();
    assert_eq!(ram.read_u64(RAM_BASE + 8), Some(5));
    assert_eq!(ram.read_u64(RAM_BASE + 4), None);
    assert_eq!(ram.read_u64(RAM_BASE - 8), None);
    assert_eq!(ram.compare_exchange_u64(RAM_BASE + 8, 4, 6), Some(false));
    assert_eq!(ram.compare_exchange_u64(RAM_BASE + 8, 5, 6), Some(true));
    assert_eq!(ram.read_u64(RAM_BASE + 8), Some(6));
    assert_eq!(ram.compare_exchange_u64(u64::MAX - 7, 0, 1), None);
}
