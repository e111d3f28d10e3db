//! The Sv39 walk and the shadow-table fill against `mem::mmu` (the emulation engines' translation), on guest
//! page tables the input writes: a shadow leaf must only ever grant what the reference translation allows, land
//! on the same RAM byte, and never map anything outside the VM's RAM.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::hart::{Hart, HartConfig, Privilege};
use trapeze::isa::csr::{self, mstatus};
use trapeze::mem::mmu::{access_context, Memory, Target, Tlb, VmRealMap};
use trapeze::mem::realmap::{Extent, HostAddr, MapPerms};
use trapeze::mem::shadow::{FillOutcome, ShadowTables};
use trapeze::mem::sv39::{self, is_canonical, AccessType, PteFlags, Satp, PAGE_SHIFT, PAGE_SIZE, SATP_MODE_SV39};
use trapeze::mem::{Ram, RAM_BASE};
use trapeze_fuzz::Input;

const RAM_PAGES: u64 = 16;
const RAM_BYTES: usize = (RAM_PAGES * PAGE_SIZE) as usize;
const RAM_PPN: u64 = RAM_BASE >> PAGE_SHIFT;
const HOST_BASE: u64 = 0x1234_5000_0000;
const PRIVILEGES: [Privilege; 3] = [Privilege::User, Privilege::Supervisor, Privilege::Machine];

/// What the real MMU does with a U-mode access under `satp` (real MXR and SUM clear): the host address, or
/// `None` for a page fault. Panics on anything the shadow tables must never contain.
fn hardware<const P: usize>(tables: &ShadowTables<P>, satp: u64, va: u64, access: AccessType) -> Option<u64> {
    let satp = Satp(satp);
    assert_eq!(satp.mode(), SATP_MODE_SV39);
    if !is_canonical(va) {
        return None;
    }
    let mut table = satp.root();
    for level in [2u32, 1, 0] {
        let entries = tables.table(table).expect("the MMU only reaches pool pages in use");
        let pte = entries[((va >> (PAGE_SHIFT + 9 * level)) & 511) as usize];
        let flags = PteFlags::from_bits_truncate(pte);
        if !flags.contains(PteFlags::V) {
            return None;
        }
        assert_eq!(pte >> 54, 0, "reserved bits in {pte:#x}");
        if !flags.intersects(PteFlags::R | PteFlags::X) {
            assert!(level > 0, "pointer at level 0: {pte:#x}");
            table = (pte >> 10) << PAGE_SHIFT;
            continue;
        }
        assert_eq!(level, 0, "shadow leaves are 4 KiB");
        assert!(flags.contains(PteFlags::U | PteFlags::A | PteFlags::D), "leaf {pte:#x}");
        assert!(!flags.contains(PteFlags::W) || flags.contains(PteFlags::R), "W without R in {pte:#x}");
        let host = (pte >> 10) << PAGE_SHIFT;
        assert!(host.wrapping_sub(HOST_BASE) < RAM_BYTES as u64, "leaf {pte:#x} maps outside RAM");
        let needed = match access {
            AccessType::Fetch => PteFlags::X,
            AccessType::Load => PteFlags::R,
            AccessType::Store => PteFlags::W,
        };
        return flags.contains(needed).then_some(host | (va & 0xfff));
    }
    None
}

fn va(input: &mut Input) -> u64 {
    match input.u8() % 4 {
        // Low addresses, reached through the tables' first entries.
        0 => input.below(64) << PAGE_SHIFT | input.below(PAGE_SIZE),
        // RAM itself (identity maps, Bare and M-mode).
        1 => RAM_BASE + input.below(RAM_BYTES as u64 + 2 * PAGE_SIZE),
        // Anywhere in Sv39, canonical or not.
        2 => ((input.u64() << 25) as i64 >> 25) as u64,
        _ => input.u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut backing = vec![0u8; RAM_BYTES];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut realmap = VmRealMap::new();
    let ram_extent =
        Extent { guest_base: RAM_BASE, size: RAM_BYTES as u64, host_base: HostAddr(0), perms: MapPerms::RWX };
    realmap.insert(ram_extent).expect("one extent fits");
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.privilege = Privilege::Machine;
    hart.write_csr(csr::PMPADDR0, u64::MAX).expect("PMP exists");
    hart.write_csr(csr::PMPCFG0, 1 << 3 | (input.u8() as u64 & 0x87)).expect("PMP exists");
    let mut tables = ShadowTables::<8>::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        match input.u8() % 8 {
            // A PTE in one of the first pages (the tables live there), pointing mostly into RAM.
            0 | 1 => {
                let slot = RAM_BASE + input.below(4) * PAGE_SIZE + input.below(512) * 8;
                let ppn =
                    if input.bool() { RAM_PPN + input.below(RAM_PAGES + 2) } else { input.u64() & ((1 << 44) - 1) };
                let flags = input.u8() as u64 | if input.bool() { 1 << 54 } else { 0 };
                ram.store(slot, 8, ppn << 10 | flags).expect("slot in RAM");
                // The guest fences after changing its tables, as the specification requires.
                tables.sfence_vma(None, None);
            }
            2 => hart.privilege = PRIVILEGES[input.below(3) as usize],
            3 => {
                let bits = [mstatus::SUM, mstatus::MXR, mstatus::MPRV, 1 << 11, 1 << 12];
                hart.csrs.mstatus ^= bits[input.below(5) as usize];
            }
            4 => {
                hart.csrs.satp = match input.below(3) {
                    0 => 0,
                    n => Satp::new(SATP_MODE_SV39, input.below(4) as u16, RAM_PPN + n - 1).0,
                };
            }
            5 => {
                if input.bool() {
                    tables.flush_all();
                } else {
                    tables.sfence_vma(None, None);
                }
            }
            _ => {
                let va = va(&mut input);
                let access = AccessType::ALL[input.below(3) as usize];
                check(&mut hart, &mut ram, &realmap, &mut tables, va, access);
            }
        }
    }
});

fn check(
    hart: &mut Hart,
    ram: &mut Ram,
    realmap: &VmRealMap,
    tables: &mut ShadowTables<8>,
    va: u64,
    access: AccessType,
) {
    // The reference, on a copy of RAM.
    let mut after = ram.as_slice().expect("the target builds exclusive RAM").to_vec();
    let expected = {
        let mut copy = Ram::new(RAM_BASE, &mut after);
        let mut tlb = Tlb::new();
        Memory { ram: &mut copy, realmap, tlb: &mut tlb }.translate(hart, va, 1, access)
    };
    // The bare walk agrees with the reference about faults and where RAM accesses land.
    {
        let mut walk_copy = ram.as_slice().expect("the target builds exclusive RAM").to_vec();
        let mut walk_ram = Ram::new(RAM_BASE, &mut walk_copy);
        let walk = sv39::translate(&mut walk_ram, hart.csrs.satp, va, access, access_context(hart, access));
        match (&walk, &expected) {
            (Ok(t), Ok(Target::Ram(offset))) => assert_eq!(t.guest_real, RAM_BASE + offset),
            (Ok(t), Ok(Target::Device(gpa))) => assert_eq!(t.guest_real, *gpa),
            (Err(a), Err(b)) if a == b => {}
            // The reference adds PMP and the real map on top of the walk: it may only refuse more.
            (_, Err(b)) if b.exception == access.access_fault() => {}
            _ => panic!("walk {walk:?} vs reference {expected:?} for {va:#x} {access:?}"),
        }
        if walk.is_ok() == expected.is_ok() {
            assert_eq!(walk_ram.as_slice(), Some(&after[..]), "the walk's A/D updates are the reference's");
        }
    }
    let context = format!("va {va:#x} {access:?} expected {expected:?}");
    let satp = tables.root_satp(hart);
    if let Some(host) = hardware(tables, satp, va, access) {
        match expected {
            Ok(Target::Ram(offset)) => assert_eq!(host, HOST_BASE + offset, "{context}"),
            _ => panic!("the shadow allows what the guest may not: {context}"),
        }
        return;
    }
    let outcome = tables.fill(hart, ram, realmap, HOST_BASE, va, access);
    match outcome {
        FillOutcome::Filled => {
            let Ok(Target::Ram(offset)) = expected else { panic!("filled: {context}") };
            assert!(offset < RAM_BYTES as u64, "{context}");
            let satp = tables.root_satp(hart);
            assert_eq!(hardware(tables, satp, va, access), Some(HOST_BASE + offset), "retry: {context}");
            assert_eq!(ram.as_slice(), Some(&after[..]), "the same A/D write-back as emulation: {context}");
        }
        FillOutcome::GuestFault(fault) => match expected {
            Err(want) => assert_eq!(fault, want, "{context}"),
            // A fetch from a device, or RAM past its end: an access fault.
            Ok(_) => assert_eq!(fault.exception, access.access_fault(), "{context}"),
        },
        FillOutcome::NotRam { guest_real } => {
            assert_eq!(expected, Ok(Target::Device(guest_real)), "{context}");
        }
        FillOutcome::Emulate => assert!(expected.is_ok() || hart.privilege == Privilege::Machine, "{context}"),
        FillOutcome::Withheld { .. } => panic!("`fill` filters nothing: {context}"),
    }
}
