//! The Sv39 page-table walker: guest virtual -> guest real through the guest's own page tables, exactly as the
//! privileged specification's "Virtual Address Translation Process" describes, with hardware A/D updates.
//!
//! It never trusts a guest PTE (every reserved encoding faults, every PTE address goes through
//! [`PageTableMemory`], which may refuse it), never panics on guest data and never allocates: a walk is at most
//! three reads and one compare-and-set per level.

use super::Ram;
use crate::hart::{Exception, Privilege};

/// `satp.MODE` values.
pub const SATP_MODE_BARE: u64 = 0;
pub const SATP_MODE_SV39: u64 = 8;
const SATP_MODE_SHIFT: u32 = 60;
const SATP_ASID_SHIFT: u32 = 44;
const SATP_ASID_MASK: u64 = 0xffff;
const SATP_PPN_MASK: u64 = (1 << 44) - 1;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Levels of an Sv39 table (2 is the root, 0 the 4 KiB leaves).
pub const LEVELS: u8 = 3;
const VPN_BITS: u32 = 9;
const VPN_MASK: u64 = (1 << VPN_BITS) - 1;
const PTE_SIZE: u64 = 8;
const PTE_PPN_SHIFT: u32 = 10;
const PTE_PPN_MASK: u64 = (1 << 44) - 1;
/// Bits 63:54: N, PBMT and reserved. Without Svnapot and Svpbmt any of them set makes the PTE invalid.
const PTE_RESERVED: u64 = 0x3ff << 54;
/// How often a walk re-reads a PTE whose A/D update lost a race before it gives up with a page fault (which the
/// specification also allows instead of an update).
const AD_UPDATE_ATTEMPTS: u32 = 8;

/// Whether `satp.MODE` may hold `mode` (it is WARL: a write of another mode leaves `satp` unchanged).
pub const fn satp_mode_supported(mode: u64) -> bool {
    matches!(mode, SATP_MODE_BARE | SATP_MODE_SV39)
}

/// The fields of a `satp` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Satp(pub u64);

impl Satp {
    pub const fn new(mode: u64, asid: u16, root_ppn: u64) -> Self {
        Satp(mode << SATP_MODE_SHIFT | (asid as u64) << SATP_ASID_SHIFT | (root_ppn & SATP_PPN_MASK))
    }
    pub const fn mode(self) -> u64 {
        self.0 >> SATP_MODE_SHIFT
    }
    pub const fn asid(self) -> u16 {
        ((self.0 >> SATP_ASID_SHIFT) & SATP_ASID_MASK) as u16
    }
    pub const fn ppn(self) -> u64 {
        self.0 & SATP_PPN_MASK
    }
    /// Guest real address of the root table.
    pub const fn root(self) -> u64 {
        self.ppn() << PAGE_SHIFT
    }
}

bitflags::bitflags! {
    /// The flag bits 7:0 of a PTE.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PteFlags: u64 {
        const V = 1 << 0;
        const R = 1 << 1;
        const W = 1 << 2;
        const X = 1 << 3;
        const U = 1 << 4;
        const G = 1 << 5;
        const A = 1 << 6;
        const D = 1 << 7;
    }
}

/// Builds a PTE from a physical page number and flags (for tests and for hosts that build tables).
pub const fn make_pte(ppn: u64, flags: PteFlags) -> u64 {
    (ppn & PTE_PPN_MASK) << PTE_PPN_SHIFT | flags.bits()
}

/// The kind of access being translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessType {
    Fetch,
    Load,
    /// Stores and AMOs (including SC).
    Store,
}

impl AccessType {
    pub const ALL: [AccessType; 3] = [AccessType::Fetch, AccessType::Load, AccessType::Store];

    /// The page fault this access raises.
    pub const fn page_fault(self) -> Exception {
        match self {
            AccessType::Fetch => Exception::InstructionPageFault,
            AccessType::Load => Exception::LoadPageFault,
            AccessType::Store => Exception::StorePageFault,
        }
    }

    /// The access fault this access raises.
    pub const fn access_fault(self) -> Exception {
        match self {
            AccessType::Fetch => Exception::InstructionAccessFault,
            AccessType::Load => Exception::LoadAccessFault,
            AccessType::Store => Exception::StoreAccessFault,
        }
    }
}

/// What the permission check depends on besides the PTE: the effective privilege of the access (U or S; the caller
/// resolves M-mode and `mstatus.MPRV`) and `mstatus.SUM`/`mstatus.MXR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessContext {
    pub privilege: Privilege,
    pub sum: bool,
    pub mxr: bool,
}

impl AccessContext {
    pub const fn new(privilege: Privilege, sum: bool, mxr: bool) -> Self {
        Self { privilege, sum, mxr }
    }
}

/// Whether a valid leaf PTE with `flags` permits `access` in `ctx` (A/D aside). Machine privilege means no
/// translation applies, so everything is permitted.
pub const fn leaf_permits(flags: PteFlags, access: AccessType, ctx: AccessContext) -> bool {
    let user_page = flags.contains(PteFlags::U);
    let privilege_ok = match ctx.privilege {
        Privilege::User => user_page,
        // S-mode never executes a U page; it reads and writes one only with SUM.
        Privilege::Supervisor => !user_page || (ctx.sum && !matches!(access, AccessType::Fetch)),
        Privilege::Machine => true,
    };
    let kind_ok = match access {
        AccessType::Fetch => flags.contains(PteFlags::X),
        AccessType::Load => flags.contains(PteFlags::R) || (ctx.mxr && flags.contains(PteFlags::X)),
        AccessType::Store => flags.contains(PteFlags::W),
    };
    privilege_ok && kind_ok
}

/// A synchronous exception the access raises: the caller injects `exception` with `tval` (the virtual address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    pub exception: Exception,
    pub tval: u64,
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// Guest real address of the translated byte.
    pub guest_real: u64,
    /// 0 for a 4 KiB page, 1 for a 2 MiB and 2 for a 1 GiB superpage (0 for an untranslated access).
    pub level: u8,
    /// The leaf's flags as they are in memory after the A/D update (all of V, R, W, X, A, D for an untranslated
    /// access).
    pub flags: PteFlags,
    /// The mapping is global: G is set in the leaf or a table above it.
    pub global: bool,
    /// Guest real address of the leaf PTE, `None` for an untranslated access.
    pub pte_address: Option<u64>,
}

impl Translation {
    /// Bytes covered by the mapping.
    pub const fn page_size(&self) -> u64 {
        PAGE_SIZE << (VPN_BITS * self.level as u32)
    }

    /// Whether the same mapping permits `access` in `ctx` without another walk (stores also need D set).
    pub const fn permits(&self, access: AccessType, ctx: AccessContext) -> bool {
        leaf_permits(self.flags, access, ctx)
            && (!matches!(access, AccessType::Store) || self.flags.contains(PteFlags::D))
    }
}

/// Guest real memory as the walker sees it. Addresses are guest real; `None` means the address is not memory the
/// walker may use (outside RAM, a device, denied by the real map): the walk ends in an access fault.
pub trait PageTableMemory {
    /// The naturally aligned 64-bit little-endian word at `gpa`.
    fn read_u64(&mut self, gpa: u64) -> Option<u64>;
    /// Atomically: if the word at `gpa` equals `old`, write `new` and return `Some(true)`; else `Some(false)`.
    fn compare_exchange_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool>;
}

impl PageTableMemory for Ram<'_> {
    #[inline(always)]
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        if gpa & 7 != 0 {
            return None;
        }
        self.load(gpa, 8)
    }

    fn compare_exchange_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        // One host compare-exchange on shared RAM (another thread's hart may update the same PTE); exclusive RAM
        // has no other accessor while this runs.
        if gpa & 7 != 0 {
            return None;
        }
        let offset = self.offset_of(gpa, 8)? as u64;
        Some(self.compare_exchange_at_offset(offset, 8, old, new)?.is_ok())
    }
}

/// Whether `va` is a canonical Sv39 address (bits 63:39 all equal to bit 38).
pub const fn is_canonical(va: u64) -> bool {
    ((va << 25) as i64 >> 25) as u64 == va
}

/// Translates `va` for `access` under `satp`, walking the guest tables in `mem` and setting A (and D for a store)
/// in the leaf PTE when they are clear.
///
/// `ctx.privilege` is the effective privilege of the access; `Privilege::Machine` or a Bare `satp` means no
/// translation (the guest real address is `va`). A `satp` with an unsupported mode is treated as Bare, which cannot
/// happen when the CSR write applied [`satp_mode_supported`].
pub fn translate<M: PageTableMemory + ?Sized>(
    mem: &mut M,
    satp: u64,
    va: u64,
    access: AccessType,
    ctx: AccessContext,
) -> Result<Translation, Fault> {
    let satp = Satp(satp);
    if ctx.privilege == Privilege::Machine || satp.mode() != SATP_MODE_SV39 {
        return Ok(Translation { guest_real: va, level: 0, flags: PteFlags::all(), global: false, pte_address: None });
    }
    let page_fault = Fault { exception: access.page_fault(), tval: va };
    let access_fault = Fault { exception: access.access_fault(), tval: va };
    if !is_canonical(va) {
        return Err(page_fault);
    }

    let mut table = satp.root();
    // G in a pointer makes every mapping below it global.
    let mut global_above = false;
    let mut level = LEVELS;
    while level > 0 {
        level -= 1;
        let vpn = (va >> (PAGE_SHIFT + VPN_BITS * level as u32)) & VPN_MASK;
        let pte_address = table + vpn * PTE_SIZE;
        let mut attempts = 0;
        // Step 2 again whenever the A/D compare-and-set finds the PTE changed.
        loop {
            let pte = mem.read_u64(pte_address).ok_or(access_fault)?;
            let flags = PteFlags::from_bits_truncate(pte);
            if !flags.contains(PteFlags::V)
                || (flags.contains(PteFlags::W) && !flags.contains(PteFlags::R))
                || pte & PTE_RESERVED != 0
            {
                return Err(page_fault);
            }
            let ppn = (pte >> PTE_PPN_SHIFT) & PTE_PPN_MASK;
            let global = global_above || flags.contains(PteFlags::G);
            if !flags.intersects(PteFlags::R | PteFlags::X) {
                // A pointer to the next level: D, A and U are reserved here, and there is none below level 0.
                if flags.intersects(PteFlags::D | PteFlags::A | PteFlags::U) || level == 0 {
                    return Err(page_fault);
                }
                table = ppn << PAGE_SHIFT;
                global_above = global;
                break;
            }
            // A leaf.
            if !leaf_permits(flags, access, ctx) {
                return Err(page_fault);
            }
            let low_ppn_bits = VPN_BITS * level as u32;
            let low_ppn_mask = (1u64 << low_ppn_bits) - 1;
            if ppn & low_ppn_mask != 0 {
                return Err(page_fault); // misaligned superpage
            }
            let store = matches!(access, AccessType::Store);
            let mut needed = PteFlags::A;
            if store {
                needed |= PteFlags::D;
            }
            let mut final_pte = pte;
            if !flags.contains(needed) {
                let updated = pte | needed.bits();
                match mem.compare_exchange_u64(pte_address, pte, updated) {
                    None => return Err(access_fault),
                    Some(true) => final_pte = updated,
                    Some(false) => {
                        attempts += 1;
                        if attempts >= AD_UPDATE_ATTEMPTS {
                            return Err(page_fault);
                        }
                        continue;
                    }
                }
            }
            let page_offset_mask = (PAGE_SIZE << low_ppn_bits) - 1;
            let guest_real = (ppn << PAGE_SHIFT) | (va & page_offset_mask);
            return Ok(Translation {
                guest_real,
                level,
                flags: PteFlags::from_bits_truncate(final_pte),
                global,
                pte_address: Some(pte_address),
            });
        }
    }
    // Unreachable: level 0 either returns a leaf or faults. Fault rather than panic.
    Err(page_fault)
}

#[cfg(test)]
#[path = "sv39_tests.rs"]
mod tests;
