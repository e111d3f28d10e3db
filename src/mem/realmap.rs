//! The VM's real map table: guest real address extents -> host regions with R/W/X permissions, the second level of
//! the page-map tables (guest real -> host).
//!
//! Fixed capacity, no allocation, no pointers: a host address is an opaque [`HostAddr`] (in the hosted emulator an
//! offset into the [`Ram`] slice, on a native board a host physical address). It never accepts an overlapping or
//! misaligned extent, so every 4 KiB guest real page is either wholly mapped by one extent or not at all.

use super::Ram;

/// Granule of the real map: extents start, end and land on 4 KiB boundaries.
pub const PAGE_SIZE: u64 = 4096;

/// A host address: an offset into the [`Ram`] slice in the hosted emulator, a host physical address on a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostAddr(pub u64);

impl HostAddr {
    /// The host address `delta` bytes further on (wrapping; callers bounds-check through the extent).
    #[inline(always)]
    pub const fn add(self, delta: u64) -> Self {
        HostAddr(self.0.wrapping_add(delta))
    }
}

bitflags::bitflags! {
    /// What the VM may do with the host memory of an extent. A denied access is an access fault for the guest.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MapPerms: u8 {
        const R = 1 << 0;
        const W = 1 << 1;
        const X = 1 << 2;
        const RWX = Self::R.bits() | Self::W.bits() | Self::X.bits();
    }
}

/// One extent: guest real `[guest_base, guest_base + size)` is host `[host_base, host_base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    pub guest_base: u64,
    pub size: u64,
    pub host_base: HostAddr,
    pub perms: MapPerms,
}

impl Extent {
    /// One past the last guest real address (never overflows for an extent a [`RealMap`] accepted).
    pub const fn guest_end(&self) -> u64 {
        self.guest_base.wrapping_add(self.size)
    }

    /// Whether guest real address `gpa` lies inside.
    #[inline(always)]
    pub const fn contains(&self, gpa: u64) -> bool {
        gpa.wrapping_sub(self.guest_base) < self.size
    }

    /// Host address of `gpa`, which must lie inside (else the result is meaningless but harmless).
    #[inline(always)]
    pub const fn host_of(&self, gpa: u64) -> HostAddr {
        self.host_base.add(gpa.wrapping_sub(self.guest_base))
    }
}

/// Why [`RealMap::insert`] refused an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Size zero.
    Empty,
    /// A base or the size is not a multiple of [`PAGE_SIZE`].
    Misaligned,
    /// `base + size` overflows the guest or host address space.
    Wraps,
    /// The guest range intersects an extent already in the map.
    Overlap,
    /// The table holds `N` extents already.
    Full,
}

/// The result of looking up a guest real address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealMapping {
    /// Host address of the looked-up byte.
    pub host: HostAddr,
    pub perms: MapPerms,
}

/// The VM's real map table: up to `N` disjoint extents, kept sorted by guest base.
#[derive(Debug, Clone)]
pub struct RealMap<const N: usize> {
    extents: [Extent; N],
    len: usize,
}

impl<const N: usize> Default for RealMap<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RealMap<N> {
    const EMPTY: Extent = Extent { guest_base: 0, size: 0, host_base: HostAddr(0), perms: MapPerms::empty() };

    /// An empty map: every guest real address is unmapped.
    pub const fn new() -> Self {
        Self { extents: [Self::EMPTY; N], len: 0 }
    }

    /// The hosted emulator's map: all of `ram` at its guest base, host addresses being offsets into its slice,
    /// readable, writable and executable. Fails when the RAM is not a whole number of pages.
    pub fn for_ram(ram: &Ram<'_>) -> Result<Self, MapError> {
        let mut map = Self::new();
        map.insert(Extent { guest_base: ram.base(), size: ram.size(), host_base: HostAddr(0), perms: MapPerms::RWX })?;
        Ok(map)
    }

    /// The extents, in increasing guest base order.
    pub fn extents(&self) -> &[Extent] {
        self.extents.get(..self.len).unwrap_or(&[])
    }

    /// Adds an extent. Refused when empty, not page-aligned, wrapping, overlapping another, or the table is full.
    pub fn insert(&mut self, extent: Extent) -> Result<(), MapError> {
        if extent.size == 0 {
            return Err(MapError::Empty);
        }
        if (extent.guest_base | extent.size | extent.host_base.0) & (PAGE_SIZE - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        if extent.guest_base.checked_add(extent.size).is_none() || extent.host_base.0.checked_add(extent.size).is_none()
        {
            return Err(MapError::Wraps);
        }
        // Position of the first extent that starts above the new one.
        let at = self.extents().partition_point(|e| e.guest_base < extent.guest_base);
        let before_overlaps = at > 0 && self.extents().get(at - 1).is_some_and(|e| e.guest_end() > extent.guest_base);
        let after_overlaps = self.extents().get(at).is_some_and(|e| e.guest_base < extent.guest_end());
        if before_overlaps || after_overlaps {
            return Err(MapError::Overlap);
        }
        if self.len >= N {
            return Err(MapError::Full);
        }
        self.extents.copy_within(at..self.len, at + 1);
        self.extents[at] = extent;
        self.len += 1;
        Ok(())
    }

    /// Removes the extent starting at `guest_base` and returns it. Callers must flush every soft TLB afterwards.
    pub fn remove(&mut self, guest_base: u64) -> Option<Extent> {
        let at = self.extents().iter().position(|e| e.guest_base == guest_base)?;
        let extent = self.extents[at];
        self.extents.copy_within(at + 1..self.len, at);
        self.len -= 1;
        self.extents[self.len] = Self::EMPTY;
        Some(extent)
    }

    /// The extent holding guest real address `gpa`.
    #[inline]
    pub fn extent_of(&self, gpa: u64) -> Option<&Extent> {
        let extents = self.extents();
        let at = extents.partition_point(|e| e.guest_base <= gpa);
        extents.get(at.checked_sub(1)?).filter(|e| e.contains(gpa))
    }

    /// Host address and permissions of guest real address `gpa`, or `None` when no extent maps it (an MMIO
    /// region or a hole: the caller decides between a device access and an access fault).
    #[inline]
    pub fn lookup(&self, gpa: u64) -> Option<RealMapping> {
        self.extent_of(gpa).map(|e| RealMapping { host: e.host_of(gpa), perms: e.perms })
    }

    /// Host address of `[gpa, gpa + len)` when one extent maps all of it and grants `need`.
    pub fn translate(&self, gpa: u64, len: u64, need: MapPerms) -> Option<HostAddr> {
        let extent = self.extent_of(gpa)?;
        let offset = gpa - extent.guest_base;
        if len > extent.size - offset || !extent.perms.contains(need) {
            return None;
        }
        Some(extent.host_of(gpa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RAM_BASE;

    fn extent(guest_base: u64, size: u64, host: u64, perms: MapPerms) -> Extent {
        Extent { guest_base, size, host_base: HostAddr(host), perms }
    }

    #[test]
    fn lookups_find_the_right_extent() {
        let mut map = RealMap::<4>::new();
        map.insert(extent(RAM_BASE, 0x10_0000, 0, MapPerms::RWX)).unwrap();
        map.insert(extent(0x1000, 0x1000, 0x50_0000, MapPerms::R | MapPerms::X)).unwrap();
        map.insert(extent(RAM_BASE + 0x20_0000, 0x2000, 0x10_0000, MapPerms::R)).unwrap();
        assert_eq!(map.extents().len(), 3);
        assert!(map.extents().windows(2).all(|w| w[0].guest_base < w[1].guest_base), "kept sorted");
        assert_eq!(map.lookup(RAM_BASE), Some(RealMapping { host: HostAddr(0), perms: MapPerms::RWX }));
        assert_eq!(map.lookup(RAM_BASE + 0xf_ffff).map(|m| m.host), Some(HostAddr(0xf_ffff)));
        assert_eq!(map.lookup(RAM_BASE + 0x10_0000), None, "end is exclusive");
        assert_eq!(map.lookup(0x1abc).map(|m| m.host), Some(HostAddr(0x50_0abc)));
        assert_eq!(map.lookup(0xfff), None);
        assert_eq!(map.lookup(0), None);
        assert_eq!(map.lookup(u64::MAX), None);
        assert_eq!(map.lookup(RAM_BASE + 0x20_1fff).map(|m| m.host), Some(HostAddr(0x10_1fff)));
        assert_eq!(map.translate(RAM_BASE + 0x20_1ff8, 8, MapPerms::R), Some(HostAddr(0x10_1ff8)));
        assert_eq!(map.translate(RAM_BASE + 0x20_1ff8, 9, MapPerms::R), None, "runs past the extent");
        assert_eq!(map.translate(RAM_BASE + 0x20_0000, 8, MapPerms::W), None, "read-only extent");
        assert_eq!(map.translate(0x1000, 4, MapPerms::X), Some(HostAddr(0x50_0000)));
    }

    #[test]
    fn bad_extents_are_refused() {
        let mut map = RealMap::<3>::new();
        map.insert(extent(0x10_000, 0x10_000, 0, MapPerms::RWX)).unwrap();
        assert_eq!(map.insert(extent(0x0, 0x10_000, 0, MapPerms::R)), Ok(()), "touching below is fine");
        assert_eq!(map.insert(extent(0x1f_000, 0x1000, 0, MapPerms::R)), Err(MapError::Overlap));
        assert_eq!(map.insert(extent(0xf_000, 0x2000, 0, MapPerms::R)), Err(MapError::Overlap));
        assert_eq!(map.insert(extent(0x8000, 0x100_000, 0, MapPerms::R)), Err(MapError::Overlap), "covers others");
        assert_eq!(map.insert(extent(0x10_000, 0x10_000, 0, MapPerms::R)), Err(MapError::Overlap), "identical");
        assert_eq!(map.insert(extent(0x40_000, 0, 0, MapPerms::R)), Err(MapError::Empty));
        assert_eq!(map.insert(extent(0x40_800, 0x1000, 0, MapPerms::R)), Err(MapError::Misaligned));
        assert_eq!(map.insert(extent(0x40_000, 0x800, 0, MapPerms::R)), Err(MapError::Misaligned));
        assert_eq!(map.insert(extent(0x40_000, 0x1000, 0x10, MapPerms::R)), Err(MapError::Misaligned));
        assert_eq!(map.insert(extent(u64::MAX - 0xfff, 0x2000, 0, MapPerms::R)), Err(MapError::Wraps));
        assert_eq!(map.insert(extent(0x40_000, 0x1000, u64::MAX - 0xfff, MapPerms::R)), Err(MapError::Wraps));
        assert_eq!(map.insert(extent(0x20_000, 0x1000, 0, MapPerms::R)), Ok(()), "touching above is fine");
        assert_eq!(map.insert(extent(0x40_000, 0x1000, 0, MapPerms::R)), Err(MapError::Full));
        assert_eq!(map.remove(0x10_000).map(|e| e.size), Some(0x10_000));
        assert_eq!(map.remove(0x10_000), None);
        assert_eq!(map.lookup(0x10_000), None);
        assert_eq!(map.insert(extent(0x40_000, 0x1000, 0, MapPerms::R)), Ok(()), "room again");
        assert_eq!(map.extents().iter().map(|e| e.guest_base).collect::<Vec<_>>(), [0, 0x20_000, 0x40_000]);
    }

    #[test]
    fn the_hosted_map_covers_all_of_ram() {
        let mut backing = vec![0u8; 0x4000];
        let ram = Ram::new(RAM_BASE, &mut backing);
        let map = RealMap::<1>::for_ram(&ram).unwrap();
        assert_eq!(map.lookup(RAM_BASE + 0x3fff).map(|m| m.host), Some(HostAddr(0x3fff)));
        assert_eq!(map.lookup(RAM_BASE + 0x4000), None);
        let mut odd = vec![0u8; 100];
        assert_eq!(RealMap::<1>::for_ram(&Ram::new(RAM_BASE, &mut odd)).err(), Some(MapError::Misaligned));
    }
}
