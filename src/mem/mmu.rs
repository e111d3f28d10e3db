//! The access path every emulation engine uses: a guest virtual address, an access kind and the hart's state in,
//! a host offset into RAM (or a device's guest real address) or the exception to inject out.
//!
//! It composes the three levels: the guest's Sv39 tables (guest virtual -> guest real), PMP, and the VM's real
//! map (guest real -> host), and caches the composition in the hart's soft TLB. A TLB entry is only made for a
//! page that PMP allows as a whole, so a hit never needs a PMP check. Nothing here allocates.
//!
//! [`debug_translate`] is the debugger's view of the same translation: it must never change guest-visible state
//! (no A/D update, no TLB fill), so that looking at a guest cannot change what it does.

use super::pmp::AccessKind;
use super::realmap::{MapPerms, RealMap};
use super::sv39::{self, AccessContext, AccessType, Fault, PageTableMemory, Satp, SATP_MODE_SV39};
use super::tlb::{SoftTlb, TlbKey};
use super::Ram;
use crate::hart::{Exception, Hart, Privilege};
use crate::isa::csr::mstatus;

/// Soft TLB entries per hart.
pub const TLB_ENTRIES: usize = 256;
/// Extents in a VM's real map.
pub const REALMAP_EXTENTS: usize = 4;

/// The soft TLB of one hart.
pub type Tlb = SoftTlb<TLB_ENTRIES>;
/// The real map of one VM.
pub type VmRealMap = RealMap<REALMAP_EXTENTS>;

/// Where an access lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// RAM, at this offset into the VM's RAM slice.
    Ram(u64),
    /// Outside RAM: a device register, or nothing, at this guest real address.
    Device(u64),
}

/// Guest memory as one hart's engine sees it.
pub struct Memory<'m, 'a> {
    pub ram: &'m mut Ram<'a>,
    pub realmap: &'m VmRealMap,
    pub tlb: &'m mut Tlb,
}

/// The translation context of an access by `hart`: loads and stores in M-mode with `mstatus.MPRV` set use the
/// privilege in MPP.
#[inline(always)]
pub fn access_context(hart: &Hart, access: AccessType) -> AccessContext {
    let status = hart.csrs.mstatus;
    let privilege =
        if access != AccessType::Fetch && hart.privilege == Privilege::Machine && status & mstatus::MPRV != 0 {
            Privilege::from_bits(status >> mstatus::MPP_SHIFT).unwrap_or(Privilege::User)
        } else {
            hart.privilege
        };
    AccessContext::new(privilege, status & mstatus::SUM != 0, status & mstatus::MXR != 0)
}

/// The guest's page tables as a debugger walks them: PTEs are read, never written. An A/D update the walk asks
/// for is reported as done without writing anything, so the walk goes on to the address.
struct InspectTables<'r, 'a>(&'r Ram<'a>);

impl PageTableMemory for InspectTables<'_, '_> {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        if gpa & 7 != 0 {
            return None;
        }
        self.0.load(gpa, 8)
    }

    fn compare_exchange_u64(&mut self, gpa: u64, old: u64, _new: u64) -> Option<bool> {
        Some(self.read_u64(gpa)? == old)
    }
}

/// The guest real address that virtual address `va` names for `hart` as it is now, for a debugger (as QEMU's
/// `get_phys_page_debug`): the hart's own privilege and `satp` (`mstatus.MPRV` does not apply), and any valid
/// leaf will do, readable or only executable, user page or not. Nothing changes: no A/D bit is set, no TLB entry
/// is made, and PMP is not consulted. `None` when the walk finds no valid mapping.
pub fn debug_translate(ram: &Ram, hart: &Hart, va: u64) -> Option<u64> {
    if hart.privilege == Privilege::Machine {
        return Some(va);
    }
    // S-mode with SUM and MXR may load from every valid leaf: R or X, U or not.
    let context = AccessContext::new(Privilege::Supervisor, true, true);
    sv39::translate(&mut InspectTables(ram), hart.csrs.satp, va, AccessType::Load, context)
        .ok()
        .map(|translation| translation.guest_real)
}

/// The PMP check an access of this kind makes.
pub(super) fn pmp_kind(access: AccessType) -> AccessKind {
    match access {
        AccessType::Fetch => AccessKind::Fetch,
        AccessType::Load => AccessKind::Load,
        AccessType::Store => AccessKind::Store,
    }
}

/// The real-map permission an access of this kind needs.
pub(super) fn map_permission(access: AccessType) -> MapPerms {
    match access {
        AccessType::Fetch => MapPerms::X,
        AccessType::Load => MapPerms::R,
        AccessType::Store => MapPerms::W,
    }
}

/// The soft TLB key of an S- or U-mode access in `ctx` under `satp`: an Sv39 key when paging is on, else a bare
/// one (which no Sv39 entry answers).
#[inline(always)]
fn tlb_key(satp: Satp, access: AccessType, ctx: AccessContext) -> TlbKey {
    if satp.mode() == SATP_MODE_SV39 {
        TlbKey::new(satp.asid(), access, ctx)
    } else {
        TlbKey::bare(satp.asid(), access, ctx.privilege)
    }
}

impl Memory<'_, '_> {
    /// Translates an access of `size` bytes (within one page) at virtual address `va`.
    #[inline(always)]
    pub fn translate(&mut self, hart: &Hart, va: u64, size: u64, access: AccessType) -> Result<Target, Fault> {
        self.translate_page(hart, va, size, access).map(|(target, _)| target)
    }

    /// Like [`translate`](Self::translate), and says whether PMP allows this access kind on every byte of the
    /// page in the current context (so that a block of code anywhere in the page may be fetched).
    #[inline(always)]
    pub fn translate_page(
        &mut self,
        hart: &Hart,
        va: u64,
        size: u64,
        access: AccessType,
    ) -> Result<(Target, bool), Fault> {
        let ctx = access_context(hart, access);
        let satp = Satp(hart.csrs.satp);
        let paged = ctx.privilege != Privilege::Machine && satp.mode() == SATP_MODE_SV39;
        if ctx.privilege != Privilege::Machine {
            // Only pages PMP allows as a whole are ever cached.
            if let Some(host) = self.tlb.lookup(va, tlb_key(satp, access, ctx)) {
                return Ok((Target::Ram(host.0), true));
            }
        } else if ctx.privilege == Privilege::Machine && hart.pmp.machine_unrestricted() {
            // M-mode with no locked PMP entry: guest real = virtual, and only the real map has a say.
            return match self.realmap.lookup(va) {
                Some(mapping) if mapping.perms.contains(map_permission(access)) => {
                    Ok((Target::Ram(mapping.host.0), true))
                }
                Some(_) => Err(Fault { exception: access.access_fault(), tval: va }),
                None => Ok((Target::Device(va), true)),
            };
        }
        self.translate_slow(hart, va, size, access, ctx, paged)
    }

    #[inline(never)]
    fn translate_slow(
        &mut self,
        hart: &Hart,
        va: u64,
        size: u64,
        access: AccessType,
        ctx: AccessContext,
        paged: bool,
    ) -> Result<(Target, bool), Fault> {
        let satp = hart.csrs.satp;
        let translation = sv39::translate(&mut *self.ram, satp, va, access, ctx)?;
        let gpa = translation.guest_real;
        let access_fault = Fault { exception: access.access_fault(), tval: va };
        let kind = pmp_kind(access);
        let pmp_applies = ctx.privilege != Privilege::Machine || !hart.pmp.machine_unrestricted();
        if pmp_applies && !hart.pmp.allows(gpa, size, kind, ctx.privilege) {
            return Err(access_fault);
        }
        let whole_page = !pmp_applies || hart.pmp.allows(gpa & !0xfff, 0x1000, kind, ctx.privilege);
        let Some(mapping) = self.realmap.lookup(gpa) else { return Ok((Target::Device(gpa), whole_page)) };
        if !mapping.perms.contains(map_permission(access)) {
            return Err(access_fault);
        }
        if paged && whole_page {
            self.tlb.insert(va, Satp(satp).asid(), &translation, mapping);
        } else if ctx.privilege != Privilege::Machine && whole_page {
            // Bare S/U: cache the identity page for every (access kind, privilege) that PMP allows on the whole
            // page and the real map permits, under keys no Sv39 entry answers.
            let page = gpa & !0xfff;
            let pmp = &hart.pmp;
            self.tlb.insert_bare(va, Satp(satp).asid(), mapping.host, |kind, privilege| {
                mapping.perms.contains(map_permission(kind)) && pmp.allows(page, 0x1000, pmp_kind(kind), privilege)
            });
        }
        Ok((Target::Ram(mapping.host.0), whole_page))
    }

    /// Loads `size` bytes at `va`: the zero-extended value, or the device address it falls on. An access that
    /// crosses a page boundary is split into bytes, each translated on its own.
    #[inline(always)]
    pub fn load(&mut self, hart: &Hart, va: u64, size: u64, access: AccessType) -> Result<Loaded, Fault> {
        if (va & 0xfff) + size > 0x1000 {
            return self.load_split(hart, va, size, access);
        }
        match self.translate(hart, va, size, access)? {
            Target::Ram(offset) => self
                .ram
                .load_at_offset(offset, size)
                .map(Loaded::Value)
                .ok_or(Fault { exception: access.access_fault(), tval: va }),
            Target::Device(gpa) => Ok(Loaded::Device(gpa)),
        }
    }

    #[inline(never)]
    fn load_split(&mut self, hart: &Hart, va: u64, size: u64, access: AccessType) -> Result<Loaded, Fault> {
        let mut value = 0u64;
        for index in 0..size.min(8) {
            let address = va.wrapping_add(index);
            let byte = match self.translate(hart, address, 1, access)? {
                Target::Ram(offset) => self.ram.load_at_offset(offset, 1),
                // A device access straddling a page is not decoded by any device.
                Target::Device(_) => None,
            };
            let byte = byte.ok_or(Fault { exception: access.access_fault(), tval: address })?;
            value |= byte << (8 * index);
        }
        Ok(Loaded::Value(value))
    }

    /// Stores the low `size` bytes of `value` at `va`; `Ok(Some(gpa))` when the store falls on a device (nothing
    /// is written then). A page-crossing store is checked for every byte before any byte is written.
    #[inline(always)]
    pub fn store(&mut self, hart: &Hart, va: u64, size: u64, value: u64) -> Result<Option<u64>, Fault> {
        let fault = |tval| Fault { exception: Exception::StoreAccessFault, tval };
        if (va & 0xfff) + size > 0x1000 {
            let mut offsets = [0u64; 8];
            for (index, slot) in offsets.iter_mut().enumerate().take(size.min(8) as usize) {
                let address = va.wrapping_add(index as u64);
                match self.translate(hart, address, 1, AccessType::Store)? {
                    Target::Ram(offset) => *slot = offset,
                    Target::Device(_) => return Err(fault(address)),
                }
            }
            for (index, offset) in offsets.iter().enumerate().take(size.min(8) as usize) {
                self.ram.store_at_offset(*offset, 1, value >> (8 * index)).ok_or(fault(va))?;
            }
            return Ok(None);
        }
        match self.translate(hart, va, size, AccessType::Store)? {
            Target::Ram(offset) => self.ram.store_at_offset(offset, size, value).map(|()| None).ok_or(fault(va)),
            Target::Device(gpa) => Ok(Some(gpa)),
        }
    }
}

/// The result of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Value(u64),
    /// The address falls outside RAM, on this guest real address.
    Device(u64),
}

/// The data-access context of one engine run, worked out once by [`Memory::data_path`] while nothing that it
/// depends on can change (privilege, `mstatus`, `satp`, PMP and the real map only change outside an engine's
/// `run`): an engine's load and store handlers try [`Memory::fast_load`] / [`Memory::fast_store`] with it and fall
/// back to [`Memory::load`] / [`Memory::store`] when they return `None`.
#[derive(Debug, Clone, Copy)]
pub struct DataPath {
    /// Loads and stores are in S- or U-mode (translated by Sv39, or bare): a soft TLB hit with these keys is the
    /// fast path (Sv39 keys or bare keys, which never answer each other's entries).
    pub(crate) paged: bool,
    pub(crate) load_key: TlbKey,
    pub(crate) store_key: TlbKey,
    /// Untranslated M-mode accesses with no PMP check: guest real `[window_base, window_base + window_limit)`
    /// lands on host `window_host + (gpa - window_base)` (a real map extent readable and writable; `window_limit`
    /// stops 7 bytes short of its end, so an access of up to 8 bytes starting below it stays inside). A limit of
    /// 0 means no window: every access takes the full path.
    pub(crate) window_base: u64,
    pub(crate) window_limit: u64,
    pub(crate) window_host: u64,
    /// Fetches are in S- or U-mode (Sv39 or bare): a soft TLB hit with this key gives a fetch's RAM offset.
    fetch_paged: bool,
    fetch_key: TlbKey,
    /// Untranslated M-mode fetches with no PMP check: guest real `[fetch_base, fetch_base + fetch_size)` lands on
    /// host `fetch_host + (gpa - fetch_base)` (an executable real map extent; size 0: none).
    fetch_base: u64,
    fetch_size: u64,
    fetch_host: u64,
}

impl DataPath {
    /// The fetch half of the path, for generated code that does [`Memory::fast_fetch`] itself: whether fetches
    /// are paged (through the soft TLB's view for [`DataPath::keys`]), and the executable window (base, size,
    /// host; size 0: none).
    #[cfg(feature = "dbt")]
    pub(crate) fn raw_fetch(&self) -> (bool, u64, u64, u64) {
        (self.fetch_paged, self.fetch_base, self.fetch_size, self.fetch_host)
    }

    /// The soft TLB keys of this path's loads, stores and fetches (for the translator's view of the TLB).
    #[cfg(feature = "dbt")]
    pub(crate) fn keys(&self) -> super::tlb::Keys {
        super::tlb::Keys { load: self.load_key, store: self.store_key, fetch: self.fetch_key }
    }
}

impl Memory<'_, '_> {
    /// The fast data-access context for `hart` as it is now (see [`DataPath`]); it stays valid while the hart's
    /// privilege, `mstatus`, `satp` and PMP and the real map are unchanged.
    pub fn data_path(&self, hart: &Hart) -> DataPath {
        let ctx = access_context(hart, AccessType::Load);
        let satp = Satp(hart.csrs.satp);
        // Every S/U-mode access goes through the soft TLB, translated (Sv39 keys) or not (bare keys).
        let paged = ctx.privilege != Privilege::Machine;
        let fetch_ctx = access_context(hart, AccessType::Fetch);
        let fetch_privilege = fetch_ctx.privilege;
        let mut path = DataPath {
            paged,
            load_key: tlb_key(satp, AccessType::Load, ctx),
            store_key: tlb_key(satp, AccessType::Store, ctx),
            window_base: 0,
            window_limit: 0,
            window_host: 0,
            fetch_paged: fetch_privilege != Privilege::Machine,
            fetch_key: tlb_key(satp, AccessType::Fetch, fetch_ctx),
            fetch_base: 0,
            fetch_size: 0,
            fetch_host: 0,
        };
        let fetch_window = fetch_privilege == Privilege::Machine;
        let data_window = !paged;
        if (fetch_window || data_window) && hart.pmp.machine_unrestricted() {
            let ram_base = self.ram.base();
            if let Some(extent) = self.realmap.extents().iter().find(|e| e.contains(ram_base)) {
                if fetch_window && extent.perms.contains(MapPerms::X) {
                    path.fetch_base = extent.guest_base;
                    path.fetch_size = extent.size;
                    path.fetch_host = extent.host_base.0;
                }
                if data_window && extent.perms.contains(MapPerms::R | MapPerms::W) {
                    path.window_base = extent.guest_base;
                    path.window_limit = extent.size.saturating_sub(7);
                    path.window_host = extent.host_base.0;
                }
            }
        }
        path
    }

    /// The RAM offset of an access of `size` (1..=8) bytes at `va` when `path` serves it without a walk, a PMP
    /// check or a real map lookup: a soft TLB hit within one page, or an M-mode access inside the window.
    #[inline(always)]
    fn fast_offset(&self, path: &DataPath, va: u64, size: u64, key: TlbKey) -> Option<u64> {
        if path.paged {
            if (va & 0xfff) + size > 0x1000 {
                return None;
            }
            self.tlb.lookup(va, key).map(|host| host.0)
        } else {
            let offset = va.wrapping_sub(path.window_base);
            (offset < path.window_limit).then_some(path.window_host.wrapping_add(offset))
        }
    }

    /// The RAM offset of an instruction fetch at `pc` when `path` serves it without a walk, a PMP check or a real
    /// map lookup (a soft TLB hit, or an M-mode fetch inside the executable window): then PMP allows fetching the
    /// whole page, as [`Memory::translate_page`] would say. `None`: the caller takes `translate_page`.
    #[inline(always)]
    pub fn fast_fetch(&self, path: &DataPath, pc: u64) -> Option<u64> {
        if path.fetch_paged {
            self.tlb.lookup(pc, path.fetch_key).map(|host| host.0)
        } else {
            let offset = pc.wrapping_sub(path.fetch_base);
            (offset < path.fetch_size).then_some(path.fetch_host.wrapping_add(offset))
        }
    }

    /// A load of `size` (1, 2, 4 or 8) bytes at `va` when the fast path serves it (zero-extended), `None`
    /// when the caller must take [`Memory::load`] (the same result, or the fault or device access).
    #[inline(always)]
    pub fn fast_load(&self, path: &DataPath, va: u64, size: u64) -> Option<u64> {
        let offset = self.fast_offset(path, va, size, path.load_key)? as usize;
        self.ram.load_at_host_offset(offset, (size as usize).min(8))
    }

    /// A store of the low `size` (1, 2, 4 or 8) bytes of `value` at `va` when the fast path serves it, `None`
    /// when the caller must take [`Memory::store`] (nothing was written then). `Some(true)` says the store hit a
    /// watched code page: [`Ram`] noted it as for any other write, and the engine must drop that page's
    /// translations before it runs another block.
    #[inline(always)]
    pub fn fast_store(&mut self, path: &DataPath, va: u64, size: u64, value: u64) -> Option<bool> {
        let offset = self.fast_offset(path, va, size, path.store_key)?;
        // Within one page, so one watch bit covers it (the window does not check that by itself).
        if (offset & 0xfff) + size > 0x1000 {
            return None;
        }
        self.ram.store_at_host_offset(offset as usize, (size as usize).min(8), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::HartConfig;
    use crate::mem::sv39::{make_pte, PteFlags, SATP_MODE_SV39};
    use crate::mem::RAM_BASE;

    const ROOT: u64 = RAM_BASE;
    const L1: u64 = RAM_BASE + 0x1000;
    const L0: u64 = RAM_BASE + 0x2000;
    const DATA: u64 = RAM_BASE + 0x5000;
    const CODE: u64 = RAM_BASE + 0x6000;
    /// Virtual pages: 0x4000_0000 -> DATA (R/W, A and D clear, user), 0x4000_1000 -> CODE (execute only).
    const VA_DATA: u64 = 0x4000_0000;
    const VA_CODE: u64 = 0x4000_1000;

    fn tables(ram: &mut Ram) {
        let pointer = |table: u64| make_pte(table >> 12, PteFlags::V);
        ram.store(ROOT + 8 * ((VA_DATA >> 30) & 0x1ff), 8, pointer(L1)).unwrap();
        ram.store(L1 + 8 * ((VA_DATA >> 21) & 0x1ff), 8, pointer(L0)).unwrap();
        let data = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::U;
        ram.store(L0 + 8 * ((VA_DATA >> 12) & 0x1ff), 8, make_pte(DATA >> 12, data)).unwrap();
        let code = PteFlags::V | PteFlags::X | PteFlags::A;
        ram.store(L0 + 8 * ((VA_CODE >> 12) & 0x1ff), 8, make_pte(CODE >> 12, code)).unwrap();
    }

    fn supervisor_hart() -> Hart {
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.privilege = Privilege::Supervisor;
        hart.csrs.satp = Satp::new(SATP_MODE_SV39, 0, ROOT >> 12).0;
        hart
    }

    #[test]
    fn debug_translate_walks_without_side_effects() {
        let mut backing = vec![0u8; 0x8000];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        tables(&mut ram);
        let snapshot = ram.as_slice().unwrap().to_vec();
        let hart = supervisor_hart();

        assert_eq!(debug_translate(&ram, &hart, VA_DATA + 0x123), Some(DATA + 0x123), "a user page from S-mode");
        assert_eq!(debug_translate(&ram, &hart, VA_CODE + 8), Some(CODE + 8), "an execute-only page");
        assert_eq!(debug_translate(&ram, &hart, VA_CODE + 0x1000), None, "no mapping");
        assert_eq!(debug_translate(&ram, &hart, 1 << 38), None, "not canonical");
        assert_eq!(ram.as_slice().unwrap(), &snapshot[..], "the walk set no A or D bit");

        // The walk an access makes sets A on the same PTE: the debugger's does not.
        let context = AccessContext::new(Privilege::Supervisor, true, false);
        let walked = sv39::translate(&mut ram, hart.csrs.satp, VA_DATA + 0x123, AccessType::Load, context).unwrap();
        assert_eq!(walked.guest_real, DATA + 0x123);
        assert_ne!(ram.as_slice().unwrap(), &snapshot[..], "an access's walk does set A");

        let mut machine = hart.clone();
        machine.privilege = Privilege::Machine;
        assert_eq!(debug_translate(&ram, &machine, VA_DATA), Some(VA_DATA), "M-mode is untranslated");
        let mut bare = hart;
        bare.csrs.satp = 0;
        assert_eq!(debug_translate(&ram, &bare, DATA), Some(DATA), "paging off");
    }
}
