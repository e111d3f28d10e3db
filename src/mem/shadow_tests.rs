//! Tests of the shadow page tables: hand-built cases for each rule, and a model-based test that drives `fill` as
//! the hardware would and walks the shadow tables as the real MMU does in U-mode, comparing every access with the
//! emulation engines' translation (`mmu::Memory::translate`, the reference).

use super::*;
use crate::hart::HartConfig;
use crate::isa::csr;
use crate::mem::mmu::{Memory, Target, Tlb};
use crate::mem::realmap::{Extent, HostAddr, MapPerms};
use crate::mem::RAM_BASE;
use proptest::prelude::*;

const RAM_PAGES: u64 = 64;
const RAM_BYTES: usize = (RAM_PAGES * PAGE_SIZE) as usize;
const RAM_PPN: u64 = RAM_BASE >> PAGE_SHIFT;
/// The fake host physical address of the VM's RAM.
const HOST_BASE: u64 = 0x1234_5000_0000;

const V: PteFlags = PteFlags::V;
const R: PteFlags = PteFlags::R;
const W: PteFlags = PteFlags::W;
const X: PteFlags = PteFlags::X;
const U: PteFlags = PteFlags::U;
const A: PteFlags = PteFlags::A;
const D: PteFlags = PteFlags::D;

use AccessType::{Fetch, Load, Store};

/// What the real MMU does with a U-mode access under `satp` with real MXR and SUM clear: the host physical
/// address, or `None` for a page fault. Panics on anything the shadow tables must never contain.
fn hardware<const P: usize>(tables: &ShadowTables<P>, satp: u64, va: u64, access: AccessType) -> Option<u64> {
    let satp = Satp(satp);
    assert_eq!((satp.mode(), satp.asid()), (SATP_MODE_SV39, 0));
    if !is_canonical(va) {
        return None;
    }
    let mut table = satp.root();
    for level in [2u32, 1, 0] {
        let entries = tables.table(table).expect("the MMU only reaches pool pages in use");
        let pte = entries[vpn(va, level)];
        let flags = PteFlags::from_bits_truncate(pte);
        if !flags.contains(V) {
            return None;
        }
        assert_eq!(pte >> 54, 0, "reserved bits in {pte:#x}");
        if !flags.intersects(R | X) {
            assert!(!flags.intersects(A | D | U | PteFlags::G | W) && level > 0, "bad pointer {pte:#x}");
            table = (pte >> 10) << PAGE_SHIFT;
            continue;
        }
        assert_eq!(level, 0, "shadow leaves are 4 KiB");
        assert!(flags.contains(U | A | D) && !flags.contains(PteFlags::G), "leaf {pte:#x}");
        assert!(!flags.contains(W) || flags.contains(R), "W without R in {pte:#x}");
        let needed = match access {
            Fetch => X,
            Load => R,
            Store => W,
        };
        return flags.contains(needed).then_some(((pte >> 10) << PAGE_SHIFT) | (va & 0xfff));
    }
    None
}

/// Every leaf of every root (untranslated, then each address-space slot's): (root index, va, pte).
fn leaves<const P: usize>(tables: &ShadowTables<P>) -> Vec<(usize, u64, u64)> {
    let mut found = Vec::new();
    let slot_roots = tables.slots.iter().flat_map(|slot| slot.roots.iter());
    for (regime, &root) in tables.untranslated.iter().chain(slot_roots).enumerate() {
        if root == NO_ROOT {
            continue;
        }
        assert!((root as usize) < tables.used);
        let mut stack = vec![(tables.page_address(root as usize), 2u32, 0u64)];
        while let Some((table, level, va_prefix)) = stack.pop() {
            let entries = tables.table(table).expect("pointers name pool pages in use");
            for (index, &pte) in entries.iter().enumerate() {
                if pte & V.bits() == 0 {
                    continue;
                }
                let va = va_prefix | (index as u64) << (PAGE_SHIFT + 9 * level);
                if pte & (R | X).bits() == 0 {
                    assert!(level > 0);
                    stack.push(((pte >> 10) << PAGE_SHIFT, level - 1, va));
                } else {
                    assert_eq!(level, 0);
                    found.push((regime, va, pte));
                }
            }
        }
    }
    found
}

/// Nothing outside the real map's extents and the RAM slice is mapped.
fn assert_contained<const P: usize>(tables: &ShadowTables<P>, realmap: &VmRealMap) {
    assert!(tables.used <= P);
    for (regime, va, pte) in leaves(tables) {
        let host = ((pte >> 10) << PAGE_SHIFT).wrapping_sub(HOST_BASE);
        assert!(host < RAM_BYTES as u64, "regime {regime} va {va:#x} maps host {host:#x} outside RAM");
        assert!(
            realmap.extents().iter().any(|e| host.wrapping_sub(e.host_base.0) < e.size),
            "regime {regime} va {va:#x} maps host {host:#x} outside every extent"
        );
    }
}

fn hart() -> Hart {
    Hart::new(HartConfig::rv64gc(0))
}

/// A PMP entry 0 of TOR up to the top with `perms` (bits of pmpcfg).
fn pmp_all(hart: &mut Hart, perms: u64) {
    hart.privilege = Privilege::Machine;
    hart.write_csr(csr::PMPADDR0, u64::MAX).unwrap();
    hart.write_csr(csr::PMPCFG0, 1 << 3 | perms).unwrap();
}

fn set_mode(hart: &mut Hart, privilege: Privilege, satp: u64, status: u64) {
    hart.privilege = privilege;
    hart.csrs.satp = satp;
    hart.csrs.mstatus = status;
}

fn sv39(root: u64) -> u64 {
    Satp::new(SATP_MODE_SV39, 0, root >> PAGE_SHIFT).0
}

fn page(n: u64) -> u64 {
    RAM_BASE + n * PAGE_SIZE
}

/// Builds guest tables in RAM: the root at page 0, further tables from page 1 on.
struct Builder {
    next_table: u64,
}

impl Builder {
    fn new() -> Self {
        Self { next_table: 1 }
    }

    /// Maps the page of `va` at `level` to `pa` with `flags`.
    fn map(&mut self, ram: &mut Ram, va: u64, pa: u64, level: u32, flags: PteFlags) {
        let mut table = page(0);
        for at in (level + 1..3).rev() {
            let slot = table + vpn(va, at) as u64 * 8;
            let pte = ram.load(slot, 8).unwrap();
            table = if pte & V.bits() != 0 {
                (pte >> 10) << PAGE_SHIFT
            } else {
                let next = page(self.next_table);
                self.next_table += 1;
                ram.store(slot, 8, make_pte(next >> PAGE_SHIFT, V)).unwrap();
                next
            };
        }
        ram.store(table + vpn(va, level) as u64 * 8, 8, make_pte(pa >> PAGE_SHIFT, flags)).unwrap();
    }
}

fn identity_map() -> VmRealMap {
    let mut map = VmRealMap::new();
    map.insert(Extent { guest_base: RAM_BASE, size: RAM_BYTES as u64, host_base: HostAddr(0), perms: MapPerms::RWX })
        .unwrap();
    map
}

fn pte_at(ram: &Ram, va: u64, level: u32) -> u64 {
    let mut table = page(0);
    for at in (level..3).rev() {
        let pte = ram.load(table + vpn(va, at) as u64 * 8, 8).unwrap();
        if at == level {
            return pte;
        }
        table = (pte >> 10) << PAGE_SHIFT;
    }
    unreachable!()
}

fn page_fault(access: AccessType, va: u64) -> FillOutcome {
    FillOutcome::GuestFault(Fault { exception: access.page_fault(), tval: va })
}

fn access_fault(access: AccessType, va: u64) -> FillOutcome {
    FillOutcome::GuestFault(Fault { exception: access.access_fault(), tval: va })
}

/// A guest with one kernel page (U=0, RWX) at 0x1000 -> page 20, one user page (U=1, RWX) at 0x2000 -> page 21,
/// all A and D set, PMP allowing everything.
fn kernel_and_user() -> (Vec<u8>, Hart) {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    builder.map(&mut ram, 0x1000, page(20), 0, V | R | W | X | A | D);
    builder.map(&mut ram, 0x2000, page(21), 0, V | R | W | X | U | A | D);
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    (backing, hart)
}

#[test]
fn guest_user_code_never_reaches_guest_kernel_pages() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<16>::new();
    let host = |n: u64| HOST_BASE + n * PAGE_SIZE;

    set_mode(&mut hart, Privilege::User, sv39(page(0)), 0);
    let user_satp = tables.root_satp(&hart);
    for access in AccessType::ALL {
        let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1008, access);
        assert_eq!(outcome, page_fault(access, 0x1008), "{access:?}");
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x2008, access), FillOutcome::Filled);
        assert_eq!(hardware(&tables, user_satp, 0x2008, access), Some(host(21) + 8));
        assert_eq!(hardware(&tables, user_satp, 0x1008, access), None);
    }

    // Virtual S-mode, SUM clear: its own page, never the user's.
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let kernel_satp = tables.root_satp(&hart);
    assert_ne!(kernel_satp, user_satp, "separate roots");
    for access in AccessType::ALL {
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1010, access), FillOutcome::Filled);
        assert_eq!(hardware(&tables, kernel_satp, 0x1010, access), Some(host(20) + 0x10));
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x2010, access), page_fault(access, 0x2010));
    }
    // The user root still refuses the kernel page.
    assert_eq!(hardware(&tables, user_satp, 0x1010, Load), None);

    // SUM: loads and stores reach the user page, fetches never do.
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), mstatus::SUM);
    let sum_satp = tables.root_satp(&hart);
    assert_ne!(sum_satp, kernel_satp, "SUM is keyed, not flushed");
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x2010, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, sum_satp, 0x2010, Load), Some(host(21) + 0x10));
    assert_eq!(hardware(&tables, sum_satp, 0x2010, Store), Some(host(21) + 0x10));
    assert_eq!(hardware(&tables, sum_satp, 0x2010, Fetch), None);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x2010, Fetch), page_fault(Fetch, 0x2010));
    // Back to SUM clear: the earlier root, unchanged.
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    assert_eq!(tables.root_satp(&hart), kernel_satp);
    assert_eq!(hardware(&tables, kernel_satp, 0x2010, Load), None);
    assert_eq!(hardware(&tables, kernel_satp, 0x1010, Load), Some(host(20) + 0x10));
    assert_contained(&tables, &realmap);
}

#[test]
fn mxr_makes_execute_only_pages_readable() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    builder.map(&mut ram, 0x5000, page(30), 0, V | X | U | A | D);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    let mut tables = ShadowTables::<16>::new();
    for privilege in [Privilege::User, Privilege::Supervisor] {
        let status = if privilege == Privilege::Supervisor { mstatus::SUM } else { 0 };
        set_mode(&mut hart, privilege, sv39(page(0)), status);
        let plain = tables.root_satp(&hart);
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x5000, Load), page_fault(Load, 0x5000));
        set_mode(&mut hart, privilege, sv39(page(0)), status | mstatus::MXR);
        let mxr = tables.root_satp(&hart);
        assert_ne!(plain, mxr);
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x5000, Load), FillOutcome::Filled);
        assert_eq!(hardware(&tables, mxr, 0x5abc, Load), Some(HOST_BASE + 30 * PAGE_SIZE + 0xabc));
        assert_eq!(hardware(&tables, mxr, 0x5abc, Store), None);
        assert_eq!(hardware(&tables, plain, 0x5abc, Load), None, "the MXR-clear root never got R");
    }
    // The real map's R still decides: an execute-only extent stays unreadable under MXR.
    let mut realmap = VmRealMap::new();
    realmap
        .insert(Extent { guest_base: RAM_BASE, size: RAM_BYTES as u64, host_base: HostAddr(0), perms: MapPerms::X })
        .unwrap();
    tables.flush_all();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x5000, Load), access_fault(Load, 0x5000));
}

#[test]
fn superpages_become_4k_shadow_leaves() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    // 1 GiB at 0x4000_0000 -> RAM_BASE, 2 MiB at 0x20_0000 -> RAM_BASE (both cover all of RAM).
    builder.map(&mut ram, 0x4000_0000, RAM_BASE, 2, V | R | W | X | A | D);
    builder.map(&mut ram, 0x20_0000, RAM_BASE, 1, V | R | X | A);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    for (va, offset) in [(0x4000_7123, 0x7123), (0x20_5008, 0x5008)] {
        assert_eq!(hardware(&tables, satp, va, Load), None);
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, va, Load), FillOutcome::Filled);
        assert_eq!(hardware(&tables, satp, va, Load), Some(HOST_BASE + offset));
        // 4 KiB leaves: the fill's page and its prefetch group, nothing beyond.
        let next_group = (va | (PREFETCH_PAGES * PAGE_SIZE - 1)) + 1;
        assert_eq!(hardware(&tables, satp, next_group, Load), None, "only the prefetch group's 4 KiB pages");
    }
    assert_eq!(hardware(&tables, satp, 0x4000_7123, Store), Some(HOST_BASE + 0x7123));
    assert_eq!(hardware(&tables, satp, 0x20_5008, Store), None);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x20_5008, Store), page_fault(Store, 0x20_5008));
    // Beyond the end of RAM inside the superpage: not RAM.
    let beyond = 0x4000_0000 + RAM_BYTES as u64 + 0x18;
    let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, beyond, Load);
    assert_eq!(outcome, FillOutcome::NotRam { guest_real: RAM_BASE + RAM_BYTES as u64 + 0x18 });
    assert_eq!(leaves(&tables).len(), 2 * PREFETCH_PAGES as usize);
    assert_contained(&tables, &realmap);
}

/// A fill prefetches the leaves of its aligned group of pages, but only from guest PTEs that already allow the
/// access as it would be made (A set; D set for W), never writing a guest PTE; a page the guest never accessed
/// stays unmapped, a clean one read-only, and nothing outside the group is touched.
#[test]
fn a_fill_prefetches_what_the_guest_already_accessed_and_writes_no_guest_pte() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    let va = |k: u64| 0x10_0000 + k * PAGE_SIZE;
    for k in 0..PREFETCH_PAGES + 1 {
        let flags = match k {
            3 => V | R | W,     // never accessed
            5 => V | R | W | A, // read, never written
            _ => V | R | W | A | D,
        };
        builder.map(&mut ram, va(k), page(32 + k), 0, flags);
    }
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    let before: Vec<u64> = (0..PREFETCH_PAGES + 1).map(|k| pte_at(&ram, va(k), 0)).collect();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, va(1), Load), FillOutcome::Filled);
    let host = |k: u64| HOST_BASE + (page(32 + k) - RAM_BASE);
    for k in [0, 2, 4, 6, 7] {
        assert_eq!(hardware(&tables, satp, va(k), Load), Some(host(k)), "page {k} prefetched");
        assert_eq!(hardware(&tables, satp, va(k), Store), Some(host(k)), "page {k} is dirty: writable");
    }
    assert_eq!(hardware(&tables, satp, va(3), Load), None, "never accessed: not prefetched");
    assert_eq!(hardware(&tables, satp, va(5), Load), Some(host(5)));
    assert_eq!(hardware(&tables, satp, va(5), Store), None, "clean: a store must fault to set D");
    assert_eq!(hardware(&tables, satp, va(PREFETCH_PAGES), Load), None, "outside the group");
    let after: Vec<u64> = (0..PREFETCH_PAGES + 1).map(|k| pte_at(&ram, va(k), 0)).collect();
    // Only the page actually filled may have had A set (it already had it).
    assert_eq!(before, after, "prefetching writes no guest PTE");
    assert_contained(&tables, &realmap);
}

#[test]
fn a_fence_refills_its_page_for_the_regime_that_may_use_it_and_writes_no_guest_pte() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    // A third page, user, never accessed: a fence must not refill it.
    Builder { next_table: 3 }.map(&mut ram, 0x3000, page(22), 0, V | R | W | U);
    let realmap = identity_map();
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let before: Vec<u64> = [0x1000, 0x2000, 0x3000].map(|va| pte_at(&ram, va, 0)).to_vec();
    for va in [0x1000, 0x2000, 0x3000] {
        tables.sfence_vma(Some(va), None);
        tables.prefill(&hart, &mut ram, &realmap, HOST_BASE, va, |_, granted| LeafGrant::on_ram(granted));
    }
    let kernel_satp = tables.root_satp(&hart);
    let mut user = hart.clone();
    user.privilege = Privilege::User;
    let user_satp = tables.root_satp(&user);
    let host = |n: u64| HOST_BASE + (page(n) - RAM_BASE);
    assert_eq!(hardware(&tables, kernel_satp, 0x1000, Store), Some(host(20)), "the kernel page, for S");
    assert_eq!(hardware(&tables, user_satp, 0x1000, Load), None, "never for U");
    assert_eq!(hardware(&tables, user_satp, 0x2000, Store), Some(host(21)), "the user page, for U");
    assert_eq!(hardware(&tables, kernel_satp, 0x2000, Load), None, "not for S without SUM");
    assert_eq!(hardware(&tables, user_satp, 0x3000, Load), None, "never accessed: left to a fault");
    assert_eq!(before, [0x1000, 0x2000, 0x3000].map(|va| pte_at(&ram, va, 0)).to_vec(), "no guest PTE written");
    // Each new leaf is a page the real MMU may have cached as missing: the board fences those two pages.
    assert_eq!(tables.take_page_fences().iter().collect::<Vec<_>>(), [0x1000, 0x2000]);
    assert_contained(&tables, &realmap);
}

#[test]
fn accessed_and_dirty_bits_are_written_back_and_the_first_store_faults() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    builder.map(&mut ram, 0x9000, page(40), 0, V | R | W);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x9000, Load), FillOutcome::Filled);
    assert_eq!(pte_at(&ram, 0x9000, 0) & (A | D).bits(), A.bits(), "a load sets A only");
    assert_eq!(hardware(&tables, satp, 0x9010, Load), Some(HOST_BASE + 40 * PAGE_SIZE + 0x10));
    assert_eq!(hardware(&tables, satp, 0x9010, Store), None, "no W before the guest's D is set");
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x9010, Store), FillOutcome::Filled);
    assert_eq!(pte_at(&ram, 0x9000, 0) & (A | D).bits(), (A | D).bits(), "the store set D");
    assert_eq!(hardware(&tables, satp, 0x9010, Store), Some(HOST_BASE + 40 * PAGE_SIZE + 0x10));
    // A page whose D is already set is writable from its first fill.
    builder.map(&mut ram, 0xa000, page(41), 0, V | R | W | A | D);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0xa000, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0xa000, Store), Some(HOST_BASE + 41 * PAGE_SIZE));
}

#[test]
fn paging_off_maps_guest_real_one_to_one_through_the_real_map() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut realmap = VmRealMap::new();
    // Guest real RAM_BASE.. is host offset 0x8000.., read-only; a second extent is host 0.. RWX.
    let read_only =
        Extent { guest_base: RAM_BASE, size: 4 * PAGE_SIZE, host_base: HostAddr(0x8000), perms: MapPerms::R };
    realmap.insert(read_only).unwrap();
    let rwx =
        Extent { guest_base: RAM_BASE + 0x10_0000, size: PAGE_SIZE, host_base: HostAddr(0), perms: MapPerms::RWX };
    realmap.insert(rwx).unwrap();
    let mut hart = hart();
    let mut tables = ShadowTables::<16>::new();
    let machine = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x1004, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, machine, RAM_BASE + 0x1004, Load), Some(HOST_BASE + 0x9004));
    assert_eq!(hardware(&tables, machine, RAM_BASE + 0x1004, Fetch), None);
    assert_eq!(
        tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x1004, Store),
        access_fault(Store, RAM_BASE + 0x1004)
    );
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x10_0ff8, Store), FillOutcome::Filled);
    assert_eq!(hardware(&tables, machine, RAM_BASE + 0x10_0ff8, Fetch), Some(HOST_BASE + 0xff8));
    for address in [0x1000_0000, RAM_BASE - 8, RAM_BASE + 0x4000, 0xffff_ffff_ffff_f000, 0x40_0000_0000] {
        for access in [Load, Store] {
            let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, address, access);
            assert_eq!(outcome, FillOutcome::NotRam { guest_real: address });
        }
        let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, address, Fetch);
        assert_eq!(outcome, access_fault(Fetch, address), "code never runs from a device");
    }
    // Virtual S-mode with satp Bare: the same mapping, but its own root and the guest's PMP apply.
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    let bare = tables.root_satp(&hart);
    assert_ne!(bare, machine);
    assert_eq!(
        tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 8, Load),
        access_fault(Load, RAM_BASE + 8),
        "no PMP entry: S-mode is denied"
    );
    pmp_all(&mut hart, 1); // R only
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x10_0000, Fetch), {
        access_fault(Fetch, RAM_BASE + 0x10_0000)
    });
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x10_0000, Load), FillOutcome::Filled);
    let bare = tables.root_satp(&hart);
    assert_eq!(hardware(&tables, bare, RAM_BASE + 0x10_0000, Load), Some(HOST_BASE));
    assert_eq!(hardware(&tables, bare, RAM_BASE + 0x10_0000, Store), None, "PMP takes W away");
    assert_contained(&tables, &realmap);
}

#[test]
fn hosts_outside_ram_are_never_mapped() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut realmap = VmRealMap::new();
    // The extent runs one page past the end of the RAM slice.
    let extent = Extent {
        guest_base: RAM_BASE,
        size: 2 * PAGE_SIZE,
        host_base: HostAddr(RAM_BYTES as u64 - PAGE_SIZE),
        perms: MapPerms::RWX,
    };
    realmap.insert(extent).unwrap();
    let hart = hart();
    let mut tables = ShadowTables::<16>::new();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 8, Load), FillOutcome::Filled);
    let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + PAGE_SIZE + 8, Load);
    assert_eq!(outcome, access_fault(Load, RAM_BASE + PAGE_SIZE + 8));
    assert_eq!(leaves(&tables).len(), 1);
    assert_contained(&tables, &realmap);
}

#[test]
fn data_accesses_under_mprv_are_emulated_and_fetches_are_not() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut hart = hart();
    let mpp_supervisor = 1 << mstatus::MPP_SHIFT;
    set_mode(&mut hart, Privilege::Machine, 0, mstatus::MPRV | mpp_supervisor);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    for access in [Load, Store] {
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE, access), FillOutcome::Emulate);
    }
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE, Fetch), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, RAM_BASE, Fetch), Some(HOST_BASE));
    assert_eq!(hardware(&tables, satp, RAM_BASE, Load), None);
    // MPRV with MPP = M changes nothing: the plain machine root.
    set_mode(&mut hart, Privilege::Machine, 0, mstatus::MPRV | mstatus::MPP);
    assert_ne!(tables.root_satp(&hart), satp);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE, Store), FillOutcome::Filled);
}

#[test]
fn a_pmp_region_smaller_than_a_page_is_emulated() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut hart = hart();
    // Entry 0: NA4 at RAM_BASE + 0x100, RW; S-mode sees nothing else.
    hart.write_csr(csr::PMPADDR0, (RAM_BASE + 0x100) >> 2).unwrap();
    hart.write_csr(csr::PMPCFG0, 2 << 3 | 3).unwrap();
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    let mut tables = ShadowTables::<16>::new();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x100, Load), FillOutcome::Emulate);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE + 0x104, Load), {
        access_fault(Load, RAM_BASE + 0x104)
    });
    assert_eq!(tables.pages_in_use(), 0, "nothing was built");
}

#[test]
fn address_spaces_keep_their_mappings_until_a_fence() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<32>::new();
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let first = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    let generation = tables.generation();

    // Another address space (page 9: an empty guest root) and back: the first one's leaf is still there, no refill.
    hart.csrs.satp = sv39(page(9));
    let other = tables.root_satp(&hart);
    assert_ne!(other, first);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), page_fault(Load, 0x1000));
    hart.csrs.satp = sv39(page(0));
    assert_eq!(tables.root_satp(&hart), first);
    assert_eq!(hardware(&tables, first, 0x1010, Load), Some(HOST_BASE + 20 * PAGE_SIZE + 0x10), "kept while inactive");
    assert_eq!(tables.generation(), generation, "nothing was dropped");
    // The same root with another ASID is another address space.
    hart.csrs.satp = Satp::new(SATP_MODE_SV39, 5, 0).0 | sv39(page(0));
    let with_asid = tables.root_satp(&hart);
    assert_ne!(with_asid, first);
    assert_eq!(hardware(&tables, with_asid, 0x1010, Load), None);

    // A fence with an address drops the page in every slot, the inactive ones included.
    hart.csrs.satp = sv39(page(9));
    tables.root_satp(&hart);
    tables.take_page_fences();
    tables.sfence_vma(Some(0x1000), None);
    assert_eq!(tables.generation(), generation, "a leaf alone: no full fence");
    assert_eq!(tables.take_page_fences().iter().collect::<Vec<_>>(), [0x1000], "that page is fenced");
    hart.csrs.satp = sv39(page(0));
    assert_eq!(tables.root_satp(&hart), first);
    assert_eq!(hardware(&tables, first, 0x1010, Load), None, "dropped while inactive");
    // And a fence of everything, too.
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    hart.csrs.satp = sv39(page(9));
    tables.root_satp(&hart);
    assert!(tables.sfence_vma(None, Some(1)), "roots were dropped");
    assert!(!tables.sfence_vma(None, None), "none was left");
    hart.csrs.satp = sv39(page(0));
    let satp = tables.root_satp(&hart);
    assert_eq!(hardware(&tables, satp, 0x1010, Load), None, "dropped by the global fence");
}

#[test]
fn the_least_recently_used_address_space_is_replaced() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<64>::new();
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    let asid = |asid: u16| Satp::new(SATP_MODE_SV39, asid, 0).0 | sv39(page(0));
    let mut roots = Vec::new();
    for n in 0..ADDRESS_SPACE_SLOTS as u16 {
        hart.csrs.satp = asid(n);
        roots.push(tables.root_satp(&hart));
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    }
    // Use ASID 0 again, so ASID 1 is the least recently used.
    hart.csrs.satp = asid(0);
    assert_eq!(tables.root_satp(&hart), roots[0]);
    let generation = tables.generation();
    hart.csrs.satp = asid(100);
    tables.root_satp(&hart);
    assert_ne!(tables.generation(), generation, "a slot with mappings was dropped: the board must fence");
    // ASID 1 last: choosing it again replaces another slot.
    for n in (0..ADDRESS_SPACE_SLOTS as u16).filter(|&n| n != 1).chain([1]) {
        hart.csrs.satp = asid(n);
        let satp = tables.root_satp(&hart);
        let kept = hardware(&tables, satp, 0x1010, Load).is_some();
        assert_eq!(kept, n != 1, "ASID {n}");
    }
}

#[test]
fn satp_and_pmp_changes_and_sfence_flush() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<16>::new();
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let satp = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    let generation = tables.generation();
    assert_eq!(tables.root_satp(&hart), satp);
    assert_eq!(tables.generation(), generation, "nothing changed");

    // Another guest root (page 9: empty, so nothing is mapped): a new root in another slot, nothing dropped.
    hart.csrs.satp = sv39(page(9));
    let other = tables.root_satp(&hart);
    assert_eq!(tables.generation(), generation);
    assert_eq!(tables.pages_in_use(), 4);
    assert_eq!(hardware(&tables, other, 0x1000, Load), None);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), page_fault(Load, 0x1000));

    // Back, fill, then a PMP change noticed by fill itself.
    hart.csrs.satp = sv39(page(0));
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    let generation = tables.generation();
    pmp_all(&mut hart, 3);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Fetch), access_fault(Fetch, 0x1000));
    assert_ne!(tables.generation(), generation);
    let satp = tables.root_satp(&hart);
    assert_eq!(hardware(&tables, satp, 0x1000, Load), None, "the old leaf is gone");

    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x1000, Load), FillOutcome::Filled);
    let generation = tables.generation();
    tables.take_page_fences();
    tables.sfence_vma(Some(0x1abc), None);
    assert_eq!((tables.generation(), tables.take_page_fences().iter().collect::<Vec<_>>()), (generation, vec![0x1000]));
    let satp = tables.root_satp(&hart);
    assert_eq!(hardware(&tables, satp, 0x1000, Load), None);
}

#[test]
fn sfence_with_an_address_drops_that_page_or_its_guest_superpage() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    let rwxad = V | R | W | X | A | D;
    builder.map(&mut ram, 0x1000, page(20), 0, rwxad);
    builder.map(&mut ram, 0x2000, page(21), 0, rwxad);
    builder.map(&mut ram, 0x20_0000, RAM_BASE, 1, rwxad); // 2 MiB
    builder.map(&mut ram, 0x4000_0000, RAM_BASE, 2, rwxad); // 1 GiB
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    let mut tables = ShadowTables::<32>::new();
    // A mapping in virtual M-mode (an untranslated root) first: no fence touches it.
    set_mode(&mut hart, Privilege::Machine, sv39(page(0)), 0);
    let machine = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE, Load), FillOutcome::Filled);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let satp = tables.root_satp(&hart);
    let pages = [0x1000, 0x2000, 0x20_3000, 0x20_4000, 0x4000_3000, 0x4001_0000];
    let fill_all = |tables: &mut ShadowTables<32>, ram: &mut Ram| {
        for va in pages {
            assert_eq!(tables.fill(&hart, ram, &realmap, HOST_BASE, va, Load), FillOutcome::Filled);
        }
    };
    let mapped = |tables: &ShadowTables<32>| pages.map(|va| hardware(tables, satp, va, Load).is_some());
    fill_all(&mut tables, &mut ram);
    assert_eq!(mapped(&tables), [true; 6]);

    let generation = tables.generation();
    tables.take_page_fences();
    let owed = |tables: &mut ShadowTables<32>| tables.take_page_fences().iter().collect::<Vec<_>>();
    assert!(tables.sfence_vma(Some(0x1abc), None), "it says it dropped a mapping");
    assert_eq!(tables.generation(), generation, "a 4 KiB leaf: no full fence");
    assert_eq!(owed(&mut tables), [0x1000], "but a fence of its page");
    assert_eq!(mapped(&tables), [false, true, true, true, true, true], "a 4 KiB page alone");
    // Any address in the 2 MiB superpage, even one never filled, drops all of its pieces: a pointer changed, the
    // board fences everything.
    tables.sfence_vma(Some(0x2f_f000), Some(3));
    assert_eq!(mapped(&tables), [false, true, false, false, true, true]);
    assert_ne!(tables.generation(), generation, "a pointer: a full fence");
    assert_eq!(owed(&mut tables), Vec::<u64>::new());
    let generation = tables.generation();
    tables.sfence_vma(Some(0x7fff_fff8), None);
    assert_eq!(mapped(&tables), [false, true, false, false, false, false], "the 1 GiB superpage");
    assert_ne!(tables.generation(), generation);
    // An address nothing maps drops nothing, and owes no fence: the real TLB cannot hold what was never mapped.
    let generation = tables.generation();
    assert!(!tables.sfence_vma(Some(0x3000), None), "it says it dropped nothing");
    assert!(!tables.sfence_vma(Some(0x1000), None));
    assert_eq!(mapped(&tables), [false, true, false, false, false, false]);
    assert_eq!((tables.generation(), owed(&mut tables)), (generation, vec![]));
    // Beyond what the tables can list, a full fence.
    for va in [0x1000u64, 0x2000].repeat(PAGE_FENCES) {
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, va, Load), FillOutcome::Filled);
        tables.sfence_vma(Some(va), None);
    }
    assert_ne!(tables.generation(), generation, "too many pages owed: everything is fenced");
    assert!(owed(&mut tables).len() < PAGE_FENCES);
    fill_all(&mut tables, &mut ram);
    assert_eq!(mapped(&tables), [true; 6]);
    tables.sfence_vma(None, None);
    let satp = tables.root_satp(&hart);
    assert!(pages.iter().all(|&va| hardware(&tables, satp, va, Load).is_none()));
    set_mode(&mut hart, Privilege::Machine, sv39(page(0)), 0);
    assert_eq!(tables.root_satp(&hart), machine, "the untranslated root survives fences");
    assert_eq!(hardware(&tables, machine, RAM_BASE, Load), Some(HOST_BASE));
    assert_contained(&tables, &realmap);
}

#[test]
fn an_exhausted_pool_is_flushed_and_the_fill_retried() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let hart = hart();
    let mut tables = ShadowTables::<4>::new();
    let mut generation = tables.generation();
    // Pages 0 and 1 share their tables; page 2 MiB further needs a new level-0 table, and so on.
    let addresses = [RAM_BASE, RAM_BASE + PAGE_SIZE, RAM_BASE + 2 * PAGE_SIZE];
    for address in addresses {
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, address, Store), FillOutcome::Filled);
    }
    assert_eq!((tables.pages_in_use(), tables.generation()), (3, generation));
    let far = RAM_BASE + 0x20_0000;
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, far, Load), FillOutcome::NotRam { guest_real: far });
    let mut realmap = identity_map();
    realmap.insert(Extent { guest_base: far, size: PAGE_SIZE, host_base: HostAddr(0), perms: MapPerms::R }).unwrap();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, far, Load), FillOutcome::Filled);
    assert_eq!(tables.pages_in_use(), 4);
    let very_far = RAM_BASE + 0x4000_0000;
    realmap
        .insert(Extent { guest_base: very_far, size: PAGE_SIZE, host_base: HostAddr(0), perms: MapPerms::R })
        .unwrap();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, very_far, Load), FillOutcome::Filled);
    assert_ne!(tables.generation(), generation, "flushed");
    generation = tables.generation();
    assert_eq!(tables.pages_in_use(), 3);
    let satp = tables.root_satp(&hart);
    assert_eq!(hardware(&tables, satp, very_far, Load), Some(HOST_BASE));
    assert_eq!(hardware(&tables, satp, RAM_BASE, Load), None, "dropped by the flush");
    assert_eq!(tables.generation(), generation);
}

#[test]
fn a_moved_pool_is_flushed_before_use() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let hart = hart();
    let mut tables = ShadowTables::<4>::new();
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RAM_BASE, Load), FillOutcome::Filled);
    let generation = tables.generation();
    let mut moved = Box::new(tables);
    let satp = moved.root_satp(&hart);
    assert_ne!(moved.generation(), generation);
    assert_eq!(Satp(satp).root(), moved.pages.as_ptr() as u64, "the root is a page of the pool where it is now");
    assert_eq!(hardware(&moved, satp, RAM_BASE, Load), None);
}

#[test]
fn regimes_have_distinct_roots() {
    let mut hart = hart();
    let mut seen = std::collections::HashSet::new();
    let satp = sv39(page(0));
    let mpp_user = 0;
    let states = [
        (Privilege::Machine, 0, 0),
        (Privilege::Machine, satp, mstatus::MPRV | mpp_user),
        (Privilege::Supervisor, 0, mstatus::SUM),
        (Privilege::Supervisor, satp, 0),
        (Privilege::Supervisor, satp, mstatus::MXR),
        (Privilege::Supervisor, satp, mstatus::SUM),
        (Privilege::Supervisor, satp, mstatus::SUM | mstatus::MXR),
        (Privilege::User, satp, mstatus::SUM),
        (Privilege::User, satp, mstatus::MXR),
    ];
    for (privilege, satp, status) in states {
        set_mode(&mut hart, privilege, satp, status);
        seen.insert(Regime::of(&hart).index());
    }
    assert_eq!(seen.len(), Regime::COUNT);
    assert!(seen.iter().all(|&index| index < Regime::COUNT));
    for (privilege, satp, status) in states {
        set_mode(&mut hart, privilege, satp, status);
        let regime = Regime::of(&hart);
        let translated = matches!(regime, Regime::Supervisor { .. } | Regime::User { .. });
        assert_eq!(regime.index() >= FIRST_TRANSLATED_ROOT, translated, "{regime:?}");
    }
}

// ---- The model-based test ----

/// Indices of the random addresses at each level: level 2 (the last is the top of the address space), level 1,
/// level 0 (the first four are RAM pages when paging is off, the last is past the end of RAM).
const LEVEL2: [u64; 3] = [0, 2, 511];
const LEVEL1: [u64; 2] = [0, 1];
const LEVEL0: [u64; 4] = [0, 1, 40, 64];
/// Guest table pages: roots at pages 0 and 1, other tables at 2..TABLE_PAGES.
const TABLE_PAGES: u64 = 32;

type VaChoice = (usize, usize, usize, u64);

fn va_of((i2, i1, i0, offset): VaChoice) -> u64 {
    let raw = LEVEL2[i2] << 30 | LEVEL1[i1] << 21 | LEVEL0[i0] << 12 | offset;
    ((raw << 25) as i64 >> 25) as u64
}

fn va_strategy() -> impl Strategy<Value = VaChoice> {
    (0..LEVEL2.len(), 0..LEVEL1.len(), 0..LEVEL0.len(), 0..PAGE_SIZE)
}

#[derive(Debug, Clone)]
struct Mapping {
    root: u64,
    va: VaChoice,
    level: u32,
    ppn: u64,
    flags: PteFlags,
}

#[derive(Debug, Clone)]
struct GuestSetup {
    mappings: Vec<Mapping>,
    /// Raw PTEs written over the tables afterwards: (table page, index, PTE).
    noise: Vec<(u64, u64, u64)>,
    /// (guest page from RAM_BASE, pages, host page, perms bits)
    extents: Vec<(u64, u64, u64, u8)>,
    identity: bool,
    /// 0: no PMP entry; 1: TOR over everything, RWX; 2: TOR over everything with `pmp_bits`; 3: NAPOT over the
    /// first 32 RAM pages with `pmp_bits`.
    pmp: u8,
    pmp_bits: u8,
    /// Initial privilege (0 U, 1 S, 2 M), `mstatus` and `satp` choice.
    privilege: u8,
    status: u64,
    satp: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Access {
        va: VaChoice,
        access: u8,
    },
    /// Another access to the page of the last one.
    Again {
        offset: u64,
        access: u8,
    },
    Privilege(u8),
    /// Toggle this `mstatus` bit (SUM, MXR, MPRV or one bit of MPP).
    Toggle(u64),
    Satp(u8, u16),
    Sfence,
    /// `sfence.vma` with an address in the page of the last access.
    SfenceLast,
    /// The guest rewrites a leaf PTE whose path exists, then fences an address the old and new leaf cover (a
    /// fence of everything instead when the slot held a pointer). With `true`, the slot is the one of the last
    /// access under the current `satp`, at the mapping's level.
    Remap(Mapping, u64, bool),
    FlushAll,
}

fn mapping_strategy() -> impl Strategy<Value = Mapping> {
    let ppn = prop_oneof![
        6 => (0..80u64).prop_map(|n| RAM_PPN + n),
        1 => Just(RAM_PPN),
        1 => Just(0x1000_0000 >> PAGE_SHIFT),
        1 => any::<u64>().prop_map(|n| n & ((1 << 44) - 1)),
    ];
    let level = prop_oneof![10 => Just(0u32), 1 => Just(1), 1 => Just(2)];
    let bit = |flag: PteFlags, probability: f64| {
        prop::bool::weighted(probability).prop_map(move |on| if on { flag } else { PteFlags::empty() })
    };
    let flags = (bit(R, 0.8), bit(W, 0.5), bit(X, 0.5), bit(U, 0.5), bit(PteFlags::G, 0.2), bit(A, 0.9), bit(D, 0.5))
        .prop_map(|(r, w, x, u, g, a, d)| V | r | w | x | u | g | a | d);
    (0..2u64, va_strategy(), level, ppn, flags).prop_map(|(root, va, level, ppn, flags)| Mapping {
        root,
        va,
        level,
        ppn,
        flags,
    })
}

fn setup_strategy() -> impl Strategy<Value = GuestSetup> {
    let status = (any::<bool>(), any::<bool>(), any::<bool>(), 0..4u64).prop_map(|(sum, mxr, mprv, mpp)| {
        (sum as u64 * mstatus::SUM) | (mxr as u64 * mstatus::MXR) | (mprv as u64 * mstatus::MPRV) | mpp << 11
    });
    let noise = (0..TABLE_PAGES, prop::sample::select(LEVEL0.to_vec()), any::<u64>());
    (
        prop::collection::vec(mapping_strategy(), 0..60),
        prop::collection::vec(noise, 0..3),
        // Extents that are writable but not readable are weighted up: only they make a paged access emulated.
        prop::collection::vec((0..80u64, 1..40u64, 0..70u64, prop_oneof![3 => 0..8u8, 1 => Just(2u8)]), 0..4),
        prop::bool::weighted(0.4),
        prop_oneof![1 => Just(0u8), 4 => Just(1), 1 => Just(2), 1 => Just(3)],
        any::<u8>(),
        (0..3u8, status, 0..3u8),
    )
        .prop_map(|(mappings, noise, extents, identity, pmp, pmp_bits, (privilege, status, satp))| GuestSetup {
            mappings,
            noise,
            extents,
            identity,
            pmp,
            pmp_bits,
            privilege,
            status,
            satp,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (va_strategy(), 0..3u8).prop_map(|(va, access)| Op::Access { va, access }),
        20 => (0..PAGE_SIZE, 0..3u8).prop_map(|(offset, access)| Op::Again { offset, access }),
        3 => (0..3u8).prop_map(Op::Privilege),
        3 => prop::sample::select(vec![mstatus::SUM, mstatus::MXR, mstatus::MPRV, 1 << 11, 1 << 12]).prop_map(Op::Toggle),
        // Two guest roots with four ASIDs: more address spaces than slots, so slots are replaced.
        4 => (0..3u8, 0..4u16).prop_map(|(satp, asid)| Op::Satp(satp, asid)),
        1 => Just(Op::Sfence),
        2 => Just(Op::SfenceLast),
        4 => (mapping_strategy(), any::<u64>(), any::<bool>())
            .prop_map(|(mapping, offset, last)| Op::Remap(mapping, offset, last)),
        1 => Just(Op::FlushAll),
    ]
}

/// Builds the guest's tables: roots at pages 0 and 1, further tables from page 2 until `TABLE_PAGES`.
fn build_tables(ram: &mut Ram, setup: &GuestSetup) {
    let mut next_table = 2;
    for mapping in &setup.mappings {
        let va = va_of(mapping.va);
        let mut table = page(mapping.root);
        let mut complete = true;
        for at in (mapping.level + 1..3).rev() {
            let slot = table + vpn(va, at) as u64 * 8;
            let pte = ram.load(slot, 8).unwrap();
            table = if pte & (V | R | W | X).bits() == V.bits()
                && (RAM_PPN..RAM_PPN + TABLE_PAGES).contains(&(pte >> 10))
            {
                (pte >> 10) << PAGE_SHIFT
            } else if next_table < TABLE_PAGES {
                let next = page(next_table);
                next_table += 1;
                ram.store(slot, 8, make_pte(next >> PAGE_SHIFT, V)).unwrap();
                next
            } else {
                complete = false;
                break;
            };
        }
        if complete {
            ram.store(table + vpn(va, mapping.level) as u64 * 8, 8, make_pte(mapping.ppn, mapping.flags)).unwrap();
        }
    }
    for &(table, index, pte) in &setup.noise {
        ram.store(page(table) + index * 8, 8, pte).unwrap();
    }
}

/// Rewrites the guest leaf PTE of `mapping` when the path to its slot exists, and fences as the specification
/// asks: an address covered by the slot for a leaf (or invalid) slot, everything when it held a pointer.
fn remap<const P: usize>(
    ram: &mut Ram,
    tables: &mut ShadowTables<P>,
    root: u64,
    va: u64,
    mapping: &Mapping,
    offset: u64,
) {
    if !(page(0)..page(2)).contains(&root) {
        return;
    }
    let mut table = root;
    for at in (mapping.level + 1..3).rev() {
        let pte = ram.load(table + vpn(va, at) as u64 * 8, 8).unwrap();
        if pte & (V | R | W | X).bits() != V.bits() || !(RAM_PPN..RAM_PPN + TABLE_PAGES).contains(&(pte >> 10)) {
            return;
        }
        table = (pte >> 10) << PAGE_SHIFT;
    }
    let slot = table + vpn(va, mapping.level) as u64 * 8;
    let old = ram.load(slot, 8).unwrap();
    ram.store(slot, 8, make_pte(mapping.ppn, mapping.flags)).unwrap();
    if old & (V | R | W | X).bits() == V.bits() {
        tables.sfence_vma(None, None);
    } else {
        let region = PAGE_SIZE << (9 * mapping.level);
        tables.sfence_vma(Some((va & !(region - 1)) | (offset & (region - 1))), None);
    }
}

fn build_realmap(setup: &GuestSetup) -> VmRealMap {
    if setup.identity {
        return identity_map();
    }
    let mut map = VmRealMap::new();
    for &(guest_page, pages, host_page, perms) in &setup.extents {
        let extent = Extent {
            guest_base: RAM_BASE + guest_page * PAGE_SIZE,
            size: pages * PAGE_SIZE,
            host_base: HostAddr(host_page * PAGE_SIZE),
            perms: MapPerms::from_bits_truncate(perms),
        };
        let _ = map.insert(extent); // overlapping or surplus extents are simply left out
    }
    map
}

fn build_hart(setup: &GuestSetup) -> Hart {
    let mut hart = hart();
    let bits = setup.pmp_bits as u64 & 0x87;
    match setup.pmp {
        1 => pmp_all(&mut hart, 7),
        2 => pmp_all(&mut hart, bits),
        3 => {
            hart.write_csr(csr::PMPADDR0, (RAM_BASE + 32 * PAGE_SIZE / 2 - 1) >> 2).unwrap();
            hart.write_csr(csr::PMPCFG0, 3 << 3 | bits).unwrap();
        }
        _ => {}
    }
    hart.privilege = PRIVILEGES[setup.privilege as usize];
    hart.csrs.mstatus = setup.status;
    hart.csrs.satp = satp_choice(setup.satp, 0);
    hart
}

const PRIVILEGES: [Privilege; 3] = [Privilege::User, Privilege::Supervisor, Privilege::Machine];

fn satp_choice(choice: u8, asid: u16) -> u64 {
    match choice {
        0 => 0,
        n => Satp::new(SATP_MODE_SV39, asid, RAM_PPN + n as u64 - 1).0,
    }
}

/// The guest real address of an access, by a walk on a copy of RAM (for deciding whether `Emulate` is due).
fn guest_real(hart: &Hart, bytes: &[u8], va: u64, access: AccessType) -> Option<u64> {
    let mut copy = bytes.to_vec();
    let mut ram = Ram::new(RAM_BASE, &mut copy);
    let ctx = access_context(hart, access);
    sv39::translate(&mut ram, hart.csrs.satp, va, access, ctx).ok().map(|t| t.guest_real)
}

/// How often each outcome was seen, to check that the generator reaches them all: per (paging off, paging on),
/// hardware hit, filled, guest fault, not RAM, emulate.
#[derive(Debug, Default)]
struct Coverage([[usize; 5]; 2]);

fn run_model<const P: usize>(setup: &GuestSetup, ops: &[Op], coverage: &mut Coverage) {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    build_tables(&mut ram, setup);
    let realmap = build_realmap(setup);
    let mut hart = build_hart(setup);
    let mut tables = ShadowTables::<P>::new();
    let mut last = 0;
    for op in ops {
        let (va, access) = match *op {
            Op::Access { va, access } => (va_of(va), AccessType::ALL[access as usize]),
            Op::Again { offset, access } => ((last & !(PAGE_SIZE - 1)) | offset, AccessType::ALL[access as usize]),
            Op::Privilege(privilege) => {
                hart.privilege = PRIVILEGES[privilege as usize];
                continue;
            }
            Op::Toggle(bit) => {
                hart.csrs.mstatus ^= bit;
                continue;
            }
            Op::Satp(choice, asid) => {
                hart.csrs.satp = satp_choice(choice, asid);
                continue;
            }
            Op::Sfence => {
                tables.sfence_vma(None, None);
                continue;
            }
            Op::SfenceLast => {
                tables.sfence_vma(Some(last), None);
                continue;
            }
            Op::Remap(ref mapping, offset, at_last) => {
                let (root, va) =
                    if at_last { (Satp(hart.csrs.satp).root(), last) } else { (page(mapping.root), va_of(mapping.va)) };
                remap(&mut ram, &mut tables, root, va, mapping, offset);
                continue;
            }
            Op::FlushAll => {
                tables.flush_all();
                continue;
            }
        };
        last = va;
        let regime = Regime::of(&hart);
        let paged = matches!(regime, Regime::Supervisor { .. } | Regime::User { .. });

        // The reference: the emulation engines' translation, on a copy of RAM.
        let mut after = ram.as_slice().unwrap().to_vec();
        let expected = {
            let mut copy = Ram::new(RAM_BASE, &mut after);
            let mut tlb = Tlb::new();
            Memory { ram: &mut copy, realmap: &realmap, tlb: &mut tlb }.translate(&hart, va, 1, access)
        };
        let context = format!("{regime:?} va {va:#x} {access:?} expected {expected:?}");

        let satp = tables.root_satp(&hart);
        if let Some(host) = hardware(&tables, satp, va, access) {
            match expected {
                Ok(Target::Ram(offset)) => assert_eq!(host, HOST_BASE + offset, "{context}"),
                _ => panic!("the shadow allows what the guest may not: {context}"),
            }
            assert_eq!(ram.as_slice().unwrap(), &after[..], "a shadowed access never needs an A/D update: {context}");
            coverage.0[paged as usize][0] += 1;
            continue;
        }

        let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, va, access);
        let want = match expected {
            _ if regime == Regime::MachineMprv && access != Fetch => FillOutcome::Emulate,
            Err(fault) => FillOutcome::GuestFault(fault),
            Ok(Target::Device(_)) if access == Fetch => access_fault(Fetch, va),
            Ok(Target::Device(guest_real)) => FillOutcome::NotRam { guest_real },
            Ok(Target::Ram(offset)) if offset >= RAM_BYTES as u64 => access_fault(access, va),
            Ok(Target::Ram(_)) => {
                let gpa = if paged {
                    guest_real(&hart, &after, va, access).expect("the reference translated it")
                } else {
                    va
                };
                let extent = realmap.extent_of(gpa).expect("the reference found RAM");
                if access == Store && !extent.perms.contains(MapPerms::R) {
                    FillOutcome::Emulate
                } else {
                    FillOutcome::Filled
                }
            }
        };
        assert_eq!(outcome, want, "{context}");
        let kind = match outcome {
            FillOutcome::Filled => 1,
            FillOutcome::GuestFault(_) => 2,
            FillOutcome::NotRam { .. } => 3,
            FillOutcome::Emulate => 4,
            FillOutcome::Withheld { .. } => unreachable!("`fill` filters nothing"),
        };
        coverage.0[paged as usize][kind] += 1;
        if outcome != FillOutcome::Emulate {
            assert_eq!(ram.as_slice().unwrap(), &after[..], "the same A/D write-back as emulation: {context}");
        }
        if outcome == FillOutcome::Filled {
            let satp = tables.root_satp(&hart);
            let Ok(Target::Ram(offset)) = expected else { unreachable!() };
            assert_eq!(hardware(&tables, satp, va, access), Some(HOST_BASE + offset), "retry: {context}");
        }
        assert_contained(&tables, &realmap);
    }
}

/// Runs the model over many random cases and checks that every outcome was reached, with and without paging.
fn run_model_cases<const P: usize>(cases: u32, tally: &crate::isolation::Tally) {
    // A fixed seed: the coverage assertion below must not depend on luck.
    let rng = proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
    let coverage = std::cell::RefCell::new(Coverage::default());
    let strategy = (setup_strategy(), prop::collection::vec(op_strategy(), 1..80));
    runner
        .run(&strategy, |(setup, ops)| {
            tally.add(1);
            run_model::<P>(&setup, &ops, &mut coverage.borrow_mut());
            Ok(())
        })
        .unwrap();
    let coverage = coverage.into_inner();
    for paged in [false, true] {
        for (kind, &count) in coverage.0[paged as usize].iter().enumerate() {
            // Emulation with paging on needs a real map extent that is writable but not readable: rarer.
            let needed = if paged && kind == 4 { 1 } else { 10 };
            assert!(count >= needed, "outcome {kind} (paged {paged}) reached only {count} times: {coverage:?}");
        }
    }
}

/// The hostile page tables the two model tests tried, for the suite's isolation figures.
static SHADOW_MODEL: crate::isolation::Tally = crate::isolation::Tally::escapes("hostile page tables");
static TINY_POOL_MODEL: crate::isolation::Tally = crate::isolation::Tally::escapes("hostile page tables");

#[test]
fn shadow_tables_agree_with_the_emulated_translation() {
    SHADOW_MODEL.run(|| run_model_cases::<64>(2000, &SHADOW_MODEL));
}

#[test]
fn a_tiny_pool_still_agrees() {
    TINY_POOL_MODEL.run(|| run_model_cases::<3>(1000, &TINY_POOL_MODEL));
}

/// The patching scanner's hook: a grant filter takes permissions away page by page; an access it withholds is
/// `Withheld` with the page's guest real address and installs nothing, and the leaf of any other access carries
/// only what the filter left. What the guest itself refuses stays the guest's fault.
#[test]
fn a_grant_filter_withholds_access_kinds_per_guest_real_page() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<16>::new();
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let satp = tables.root_satp(&hart);
    // Unscanned code page (page 20 behind va 0x1000): no execute; the other page: untouched.
    let unscanned = |pa: u64, [_, load, store]: [bool; 3]| {
        assert_eq!(pa & 0xfff, 0, "the filter is asked about a page");
        if pa == page(20) {
            [false, load, store]
        } else {
            [true; 3]
        }
    };
    let fill =
        |tables: &mut ShadowTables<16>, ram: &mut Ram, va, access, filter: &dyn Fn(u64, [bool; 3]) -> [bool; 3]| {
            tables.fill_with(&hart, ram, &realmap, HOST_BASE, va, access, |pa, granted| {
                LeafGrant::on_ram(filter(pa, granted))
            })
        };
    assert_eq!(fill(&mut tables, &mut ram, 0x1010, Fetch, &unscanned), FillOutcome::Withheld { guest_real: page(20) });
    assert_eq!(hardware(&tables, satp, 0x1010, Fetch), None, "nothing installed");
    assert_eq!(fill(&mut tables, &mut ram, 0x1010, Load, &unscanned), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x1010, Load), Some(HOST_BASE + (page(20) - RAM_BASE) + 0x10));
    assert_eq!(hardware(&tables, satp, 0x1010, Fetch), None, "the load's leaf has no X");
    assert_eq!(hardware(&tables, satp, 0x1010, Store), Some(HOST_BASE + (page(20) - RAM_BASE) + 0x10));
    // Scanned with sites: execute-only; the fetch now fills, loads and stores are withheld.
    let scanned = |pa: u64, [fetch, _, _]: [bool; 3]| if pa == page(20) { [fetch, false, false] } else { [true; 3] };
    assert_eq!(fill(&mut tables, &mut ram, 0x1010, Fetch, &scanned), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x1010, Fetch), Some(HOST_BASE + (page(20) - RAM_BASE) + 0x10));
    assert_eq!(hardware(&tables, satp, 0x1010, Load), None, "execute-only: loads fault");
    assert_eq!(hardware(&tables, satp, 0x1010, Store), None);
    for access in [Load, Store] {
        assert_eq!(
            fill(&mut tables, &mut ram, 0x1ff8, access, &scanned),
            FillOutcome::Withheld { guest_real: page(20) }
        );
    }
    // A filter cannot add what the guest refuses: the user page from S-mode without SUM is the guest's fault.
    assert_eq!(fill(&mut tables, &mut ram, 0x2000, Load, &|_, _| [true; 3]), page_fault(Load, 0x2000));
    assert_contained(&tables, &realmap);
    // The guest real address a fetch reaches, for the patch table.
    assert_eq!(fetch_guest_real(&hart, &mut ram, 0x1234), Ok(page(20) + 0x234));
    set_mode(&mut hart, Privilege::Machine, 0, 0);
    assert_eq!(fetch_guest_real(&hart, &mut ram, RAM_BASE + 6), Ok(RAM_BASE + 6));
}

/// The board's call order with the patch table's grants (`patch::scan`'s contract, steps 1, 2 and 4) on a guest
/// in virtual M-mode: a fetch from an unscanned page is withheld until the page is scanned, then only the fetch
/// is filled (execute-only: the page has a site); loads and stores are withheld; dropping the page gives the
/// store back and takes execute away; the next fetch is withheld again and a new scan patches the same site.
#[test]
fn the_patch_tables_grants_drive_scan_fill_and_drop() {
    use crate::isa::{encode, CsrOp, Inst};
    use crate::patch::scan::{scan, CounterReads, Coverage};
    use crate::patch::table::{PatchTable, TRAP_PARCEL};
    let mut backing = vec![0u8; RAM_BYTES];
    let code = page(3);
    let rdtime = encode(&Inst::Csr { op: CsrOp::Rs, rd: 10, src: 0, csr: csr::TIME });
    backing[(code - RAM_BASE) as usize..][..4].copy_from_slice(&rdtime.to_le_bytes());
    backing[(code - RAM_BASE) as usize + 4..][..4].copy_from_slice(&encode(&Inst::Mret).to_le_bytes());
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let hart = hart();
    let mut tables = ShadowTables::<16>::new();
    let mut table: PatchTable<8, 4> = PatchTable::new();
    let satp = tables.root_satp(&hart);
    let fill = |tables: &mut ShadowTables<16>, ram: &mut Ram, table: &PatchTable<8, 4>, va, access| {
        tables.fill_with(&hart, ram, &realmap, HOST_BASE, va, access, |pa, granted| {
            LeafGrant::on_ram(table.native_grants(pa, granted))
        })
    };
    let host = HOST_BASE + (code - RAM_BASE);
    assert_eq!(fill(&mut tables, &mut ram, &table, code, Fetch), FillOutcome::Withheld { guest_real: code });
    // Data on an unscanned page is read and written natively.
    assert_eq!(fill(&mut tables, &mut ram, &table, code + 8, Store), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, code + 8, Store), Some(host + 8));
    assert_eq!(hardware(&tables, satp, code, Fetch), None);
    // The scan patches the rdtime; the page becomes execute-only.
    scan(&mut table, &mut ram, &CounterReads, code, None, Coverage::Guard).unwrap();
    assert_eq!(ram.load(code, 2), Some(TRAP_PARCEL as u64));
    assert_eq!(fill(&mut tables, &mut ram, &table, code, Fetch), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, code, Fetch), Some(host));
    assert_eq!(hardware(&tables, satp, code, Load), None, "the filled leaf replaced the RW one");
    for access in [Load, Store] {
        assert_eq!(fill(&mut tables, &mut ram, &table, code + 8, access), FillOutcome::Withheld { guest_real: code });
    }
    // A store drops the page (original bytes back) and, once the board flushed, the page is data again.
    assert!(table.drop_page(code, &mut ram));
    assert_eq!(ram.load(code, 4), Some(rdtime as u64));
    tables.flush_all();
    let satp = tables.root_satp(&hart);
    assert_eq!(fill(&mut tables, &mut ram, &table, code + 8, Store), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, code, Fetch), None, "no execute before the next scan");
    assert_eq!(fill(&mut tables, &mut ram, &table, code, Fetch), FillOutcome::Withheld { guest_real: code });
    scan(&mut table, &mut ram, &CounterReads, code, None, Coverage::Guard).unwrap();
    assert_eq!(table.site(code).map(|site| site.word), Some(rdtime));
    assert_contained(&tables, &realmap);
}

/// A filter that names a code copy gets an execute-only leaf on that frame, whatever else it allows: the guest
/// fetches the patched copy, and its loads and stores of the page are withheld (they reach RAM through the VMM).
/// A frame that is not page aligned cannot be a leaf: the access is emulated.
#[test]
fn a_code_copy_leaf_is_execute_only_on_the_frame() {
    let (mut backing, mut hart) = kernel_and_user();
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let mut tables = ShadowTables::<16>::new();
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let satp = tables.root_satp(&hart);
    const FRAME: u64 = 0x9_0000_0000;
    let copy = |pa: u64, granted: [bool; 3]| {
        if pa == page(20) {
            LeafGrant { allowed: granted, code_copy: Some(FRAME) }
        } else {
            LeafGrant::on_ram(granted)
        }
    };
    assert_eq!(tables.fill_with(&hart, &mut ram, &realmap, HOST_BASE, 0x1010, Fetch, copy), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x1010, Fetch), Some(FRAME + 0x10));
    assert_eq!(hardware(&tables, satp, 0x1010, Load), None, "execute-only");
    assert_eq!(hardware(&tables, satp, 0x1010, Store), None);
    for access in [Load, Store] {
        assert_eq!(
            tables.fill_with(&hart, &mut ram, &realmap, HOST_BASE, 0x1ff8, access, copy),
            FillOutcome::Withheld { guest_real: page(20) }
        );
    }
    let misaligned = |_, granted| LeafGrant { allowed: granted, code_copy: Some(FRAME + 8) };
    tables.flush_all();
    assert_eq!(tables.fill_with(&hart, &mut ram, &realmap, HOST_BASE, 0x1010, Fetch, misaligned), FillOutcome::Emulate);
}

/// Once a page is scanned, no alias may keep writing it natively: `revoke_write` takes W from every leaf mapping
/// its host page (here two virtual aliases under one root), leaves other pages alone, and changes the
/// generation so the board fences.
#[test]
fn revoking_writes_reaches_every_alias_of_a_page() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    builder.map(&mut ram, 0x10_0000, page(40), 0, V | R | W | X | A | D);
    builder.map(&mut ram, 0x40_0000, page(40), 0, V | R | W | A | D);
    builder.map(&mut ram, 0x10_8000, page(41), 0, V | R | W | A | D);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    for va in [0x10_0000, 0x40_0000, 0x10_8000] {
        assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, va, Store), FillOutcome::Filled);
    }
    let host = |n| HOST_BASE + (page(n) - RAM_BASE);
    let generation = tables.generation();
    assert!(tables.revoke_write(host(40)));
    assert_ne!(tables.generation(), generation, "the board must fence");
    for va in [0x10_0000, 0x40_0000] {
        assert_eq!(hardware(&tables, satp, va, Store), None, "no alias writes the page");
        assert_eq!(hardware(&tables, satp, va, Load), Some(host(40)), "reads stay");
    }
    assert_eq!(hardware(&tables, satp, 0x10_8000, Store), Some(host(41)), "another page keeps W");
    assert!(!tables.revoke_write(host(40)), "nothing left to take");
}

/// A page RAM's code watch watches (an engine keeps code translated from it) is never natively writable: a store
/// fill is withheld (the board emulates the store, which the watch sees), a load fill leaves out W.
#[test]
fn a_watched_code_page_is_never_natively_writable() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut bitmap = [0u64; RAM_BYTES / 4096 / 64 + 1];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    ram.attach_code_watch(&mut bitmap);
    let mut builder = Builder::new();
    builder.map(&mut ram, 0x10_0000, page(40), 0, V | R | W | X | A | D);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    set_mode(&mut hart, Privilege::Supervisor, sv39(page(0)), 0);
    let mut tables = ShadowTables::<16>::new();
    let satp = tables.root_satp(&hart);
    assert!(ram.watch_code_page(40));
    assert_eq!(
        tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x10_0000, Store),
        FillOutcome::Withheld { guest_real: page(40) }
    );
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x10_0000, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x10_0000, Store), None);
    assert_eq!(hardware(&tables, satp, 0x10_0000, Fetch), Some(HOST_BASE + (page(40) - RAM_BASE)));
}

/// The goldfish RTC's page on QEMU `virt`, as guest real and as (fake) host physical address.
const RTC_PAGE: u64 = 0x10_1000;
const RTC_HOST: u64 = 0x10_1000;

/// The flags of the leaf mapping `va` under the root of `satp`, if any.
fn leaf_flags<const P: usize>(tables: &ShadowTables<P>, satp: u64, va: u64) -> Option<(u64, PteFlags)> {
    let mut table = Satp(satp).root();
    for level in [2u32, 1, 0] {
        let pte = tables.table(table)?[vpn(va, level)];
        if pte & V.bits() == 0 {
            return None;
        }
        if pte & (R | X).bits() != 0 {
            return Some(((pte >> 10) << PAGE_SHIFT, PteFlags::from_bits_truncate(pte)));
        }
        table = (pte >> 10) << PAGE_SHIFT;
    }
    None
}

#[test]
fn a_passthrough_page_is_a_read_write_never_executable_leaf_on_the_device() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let hart = hart();
    let mut owner = ShadowTables::<16>::new();
    owner.add_passthrough(RTC_PAGE, RTC_HOST).unwrap();
    assert_eq!(
        owner.passthrough_pages().collect::<Vec<_>>(),
        [PassthroughPage { guest_real: RTC_PAGE, host: RTC_HOST }]
    );
    let mut other = ShadowTables::<16>::new();

    // Virtual M-mode: guest real = va.
    let satp = owner.root_satp(&hart);
    assert_eq!(owner.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE + 4, Load), FillOutcome::Filled);
    assert_eq!(hardware(&owner, satp, RTC_PAGE + 4, Load), Some(RTC_HOST + 4));
    assert_eq!(hardware(&owner, satp, RTC_PAGE, Store), Some(RTC_HOST), "read and write");
    assert_eq!(hardware(&owner, satp, RTC_PAGE, Fetch), None, "never execute");
    let (host, flags) = leaf_flags(&owner, satp, RTC_PAGE).unwrap();
    assert_eq!(host, RTC_HOST, "the leaf holds the host device address");
    assert!(flags.contains(R | W) && !flags.contains(X), "{flags:?}");
    // A fetch is the instruction access fault the emulation engines give, and installs nothing new.
    assert_eq!(
        owner.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE + 8, Fetch),
        access_fault(Fetch, RTC_PAGE + 8)
    );
    assert_eq!(hardware(&owner, satp, RTC_PAGE + 8, Fetch), None);
    // Only that page: its neighbours are still MMIO.
    for address in [RTC_PAGE - 8, RTC_PAGE + PAGE_SIZE] {
        let outcome = owner.fill(&hart, &mut ram, &realmap, HOST_BASE, address, Load);
        assert_eq!(outcome, FillOutcome::NotRam { guest_real: address });
    }
    // RAM is as before.
    assert_eq!(owner.fill(&hart, &mut ram, &realmap, HOST_BASE, page(3), Store), FillOutcome::Filled);
    assert_eq!(hardware(&owner, satp, page(3), Store), Some(HOST_BASE + 3 * PAGE_SIZE));

    // Another VM's tables know nothing of it: the access is MMIO there (the VMM refuses it), a fetch faults.
    let other_satp = other.root_satp(&hart);
    for access in [Load, Store] {
        let outcome = other.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE + 4, access);
        assert_eq!(outcome, FillOutcome::NotRam { guest_real: RTC_PAGE + 4 });
        assert_eq!(hardware(&other, other_satp, RTC_PAGE + 4, access), None);
    }
    assert_eq!(other.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE, Fetch), access_fault(Fetch, RTC_PAGE));
    assert!(leaves(&other).is_empty());
    assert_contained(&other, &realmap);

    // A flush drops the leaf; the list stays.
    owner.flush_all();
    let satp = owner.root_satp(&hart);
    assert_eq!(hardware(&owner, satp, RTC_PAGE, Load), None);
    assert_eq!(owner.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE, Store), FillOutcome::Filled);
    assert_eq!(hardware(&owner, satp, RTC_PAGE, Store), Some(RTC_HOST));
}

#[test]
fn a_passthrough_page_obeys_the_guest_translation_and_pmp() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut builder = Builder::new();
    // User read-only at 0x4000, user read-write at 0x5000, kernel read-write at 0x6000, user RWX at 0x7000: all
    // onto the device page.
    builder.map(&mut ram, 0x4000, RTC_PAGE, 0, V | R | U | A | D);
    builder.map(&mut ram, 0x5000, RTC_PAGE, 0, V | R | W | U | A | D);
    builder.map(&mut ram, 0x6000, RTC_PAGE, 0, V | R | W | A | D);
    builder.map(&mut ram, 0x7000, RTC_PAGE, 0, V | R | W | X | U | A | D);
    let realmap = identity_map();
    let mut hart = hart();
    pmp_all(&mut hart, 7);
    let mut tables = ShadowTables::<16>::new();
    tables.add_passthrough(RTC_PAGE, RTC_HOST).unwrap();

    set_mode(&mut hart, Privilege::User, sv39(page(0)), 0);
    let satp = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x4010, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x4010, Load), Some(RTC_HOST + 0x10));
    assert_eq!(hardware(&tables, satp, 0x4010, Store), None, "the guest PTE is read-only");
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x4010, Store), page_fault(Store, 0x4010));
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x5010, Store), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x5010, Store), Some(RTC_HOST + 0x10));
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x6010, Load), page_fault(Load, 0x6010));
    // Executable in the guest's PTE, never on the device.
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x7000, Fetch), access_fault(Fetch, 0x7000));
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, 0x7000, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, 0x7000, Fetch), None);
    assert!(leaves(&tables).iter().all(|&(_, _, pte)| pte & X.bits() == 0 || (pte >> 10) << PAGE_SHIFT != RTC_HOST));

    // The guest's PMP: read only takes W away; no entry at all refuses S-mode.
    pmp_all(&mut hart, 1);
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    let bare = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE, Store), access_fault(Store, RTC_PAGE));
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE, Load), FillOutcome::Filled);
    assert_eq!(hardware(&tables, bare, RTC_PAGE, Load), Some(RTC_HOST));
    assert_eq!(hardware(&tables, bare, RTC_PAGE, Store), None);
    pmp_all(&mut hart, 0);
    set_mode(&mut hart, Privilege::Supervisor, 0, 0);
    let _ = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE, Load), access_fault(Load, RTC_PAGE));
}

#[test]
fn a_passthrough_page_never_aliases_ram() {
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let realmap = identity_map();
    let hart = hart();
    let mut tables = ShadowTables::<16>::new();
    // A guest real page the real map covers stays RAM.
    tables.add_passthrough(page(5), RTC_HOST).unwrap();
    // A host page inside the VM's RAM slice is never mapped as a device.
    tables.add_passthrough(RTC_PAGE, HOST_BASE + 2 * PAGE_SIZE).unwrap();
    let satp = tables.root_satp(&hart);
    assert_eq!(tables.fill(&hart, &mut ram, &realmap, HOST_BASE, page(5) + 8, Store), FillOutcome::Filled);
    assert_eq!(hardware(&tables, satp, page(5) + 8, Store), Some(HOST_BASE + 5 * PAGE_SIZE + 8));
    assert_eq!(hardware(&tables, satp, page(5) + 8, Fetch), Some(HOST_BASE + 5 * PAGE_SIZE + 8));
    let outcome = tables.fill(&hart, &mut ram, &realmap, HOST_BASE, RTC_PAGE + 8, Load);
    assert_eq!(outcome, FillOutcome::NotRam { guest_real: RTC_PAGE + 8 });
    assert_eq!(hardware(&tables, satp, RTC_PAGE + 8, Load), None);
    assert_contained(&tables, &realmap);

    // What `add_passthrough` refuses.
    let mut tables = ShadowTables::<16>::new();
    assert_eq!(tables.add_passthrough(RTC_PAGE + 4, RTC_HOST), Err(PassthroughError::Misaligned));
    assert_eq!(tables.add_passthrough(RTC_PAGE, RTC_HOST + 8), Err(PassthroughError::Misaligned));
    assert_eq!(tables.add_passthrough(RTC_PAGE, 1 << 56), Err(PassthroughError::OutOfRange));
    tables.add_passthrough(RTC_PAGE, RTC_HOST).unwrap();
    assert_eq!(tables.add_passthrough(RTC_PAGE, RTC_HOST + PAGE_SIZE), Err(PassthroughError::Duplicate));
    for n in 1..PASSTHROUGH_PAGES as u64 {
        tables.add_passthrough(RTC_PAGE + n * PAGE_SIZE, RTC_HOST).unwrap();
    }
    assert_eq!(tables.add_passthrough(0x20_0000, RTC_HOST), Err(PassthroughError::Full));
}
