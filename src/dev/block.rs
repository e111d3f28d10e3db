//! Partitioned disks: one physical disk carved into virtual disks, one per VM, each described by an LBA map.
//!
//! A VM's [`LbaMap`] is a fixed-capacity table of [`Extent`]s, runs of physical sectors laid end to end: the
//! VM's sector 0 is the first extent's first sector, and its disk is as long as its extents together. A
//! [`DiskLayout`] takes every VM's map for one [`PhysicalBlock`] and refuses, at configuration time, a map that
//! reaches past the disk's end or overlaps any extent already given (its own or another VM's); only then does it
//! hand out the [`Partition`]s, one per map, each a [`BlockBackend`] to put behind a
//! [`VirtioBlk`](super::virtio::VirtioBlk). The VMs share the physical disk through a [`RefCell`]: they run in
//! turns on one thread, so a borrow never waits; a request that finds the disk borrowed (re-entry) fails.
//!
//! What a partition must never do: touch a physical sector outside its own extents. The device model checks a
//! request against the virtual disk's capacity; the partition checks again (overflow-checked) and translates
//! it into one physical run per extent it crosses before the physical disk is asked for anything, so a request
//! with a crafted sector number, length or descriptor chain either lands wholly inside the VM's extents or is
//! an error (`VIRTIO_BLK_S_IOERR` for the guest). It never panics on a request, and it never reports a write
//! done before every run of it has been handed to the physical disk (which, by the [`PhysicalBlock`] contract,
//! means handed to the backing store); a guest flush is the physical disk's flush.
//!
//! **A dedicated disk** ([`Partition::dedicated`]) is a whole physical disk given to one VM: a layout of one map
//! covering every sector. It is the honest form of a dedicated DMA-capable device without an IOMMU: the guest
//! never programs the physical device. Its requests reach the VMM's device model, which reads the descriptors
//! and moves the data through the VM's own RAM ([`Ram`](crate::mem::Ram): every guest address translated to an
//! offset of the VM's RAM and bounds-checked, overflow-checked), and the VMM's driver hands the physical device
//! buffers of its own. A descriptor naming an address outside the VM's RAM (below it, past its end, straddling
//! its end, near 2^64, or a host address) makes the request fail; it can never make the device read or write
//! any other memory (property-tested in `tests.rs`).

use core::cell::RefCell;

use heapless::Vec;

use super::virtio::blk::{BlockBackend, BlockError, SECTOR_SIZE};

/// The shared physical disk behind partitions: sectors of [`SECTOR_SIZE`] bytes addressed by physical LBA.
///
/// Partitions call [`read_sectors`](Self::read_sectors) and [`write_sectors`](Self::write_sectors) only with a
/// buffer whose length is a nonzero multiple of [`SECTOR_SIZE`] and a range inside
/// [`capacity`](Self::capacity). The durability rule is [`BlockBackend`]'s: `write_sectors` returns `Ok` only
/// once the data is handed to the backing store (a file: written at its offset; a device: the request
/// completed), and [`sync`](Self::sync) makes every completed write durable.
///
/// The method names differ from [`BlockBackend`]'s so that a type can be both (a whole disk given to one VM,
/// and the physical disk under partitions) without ambiguous calls.
pub trait PhysicalBlock {
    /// Size of the disk in sectors. Must not change while partitions use it.
    fn capacity(&self) -> u64;
    /// Reads `buf.len() / 512` sectors starting at physical sector `sector` into `buf`.
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf` to the physical sectors starting at `sector`; see the durability rule above.
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn sync(&mut self) -> Result<(), BlockError>;
    /// Whether writes are refused; every partition of the disk is then read-only.
    fn is_read_only(&self) -> bool;
}

impl<T: PhysicalBlock + ?Sized> PhysicalBlock for &mut T {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read_sectors(sector, buf)
    }
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        (**self).write_sectors(sector, buf)
    }
    fn sync(&mut self) -> Result<(), BlockError> {
        (**self).sync()
    }
    fn is_read_only(&self) -> bool {
        (**self).is_read_only()
    }
}

/// A run of physical sectors `start .. start + sectors` given to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First physical sector.
    pub start: u64,
    /// Length in sectors (nonzero in a valid map).
    pub sectors: u64,
}

impl Extent {
    pub const fn new(start: u64, sectors: u64) -> Self {
        Self { start, sectors }
    }

    /// One past the last physical sector, `None` when that overflows.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.sectors)
    }

    /// Whether the two extents share a sector (both must be valid: nonzero, no overflow).
    fn overlaps(&self, other: &Extent) -> bool {
        // Valid extents have ends; a missing one is treated as reaching the top, which overlaps conservatively.
        let (end, other_end) = (self.end().unwrap_or(u64::MAX), other.end().unwrap_or(u64::MAX));
        self.start < other_end && other.start < end
    }
}

/// Why a disk layout was refused. Every variant is a configuration error (the VMM's), never a guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// A map has no extents: a virtual disk of no sectors.
    NoExtents,
    /// A map has more extents than its capacity (`EXTENTS`).
    TooManyExtents,
    /// Extent `extent` of a map has zero sectors.
    EmptyExtent { extent: usize },
    /// Extent `extent` of a map ends past the largest sector number (`start + sectors` overflows).
    ExtentOverflow { extent: usize },
    /// The extents of a map add up to more sectors than a `u64` counts.
    TooLarge,
    /// Extent `extent` of VM `vm`'s map ends past the physical disk's end.
    PastEnd { vm: usize, extent: usize },
    /// Extent `extent` of VM `vm`'s map overlaps extent `other_extent` of VM `other_vm`'s map (possibly the same
    /// VM's).
    Overlap { vm: usize, extent: usize, other_vm: usize, other_extent: usize },
    /// The layout already holds its capacity (`VMS`) of maps.
    TooManyDisks,
    /// The physical disk was borrowed elsewhere while the layout asked for its size.
    DiskBusy,
}

/// A VM's LBA map: its virtual sectors, from 0, laid over the extents in order. At most `EXTENTS` extents.
///
/// A map on its own is checked for its own shape ([`LbaMap::new`]); [`DiskLayout::add`] checks it against the
/// physical disk and every other map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbaMap<const EXTENTS: usize> {
    extents: Vec<Extent, EXTENTS>,
    sectors: u64,
}

impl<const EXTENTS: usize> LbaMap<EXTENTS> {
    /// A map over `extents`, in order. Refused: no extents, more than `EXTENTS`, an empty or overflowing extent,
    /// a total past `u64`, or two extents of the map that overlap (VM numbers in [`LayoutError::Overlap`] are 0).
    pub fn new(extents: &[Extent]) -> Result<Self, LayoutError> {
        if extents.is_empty() {
            return Err(LayoutError::NoExtents);
        }
        let extents = Vec::<Extent, EXTENTS>::from_slice(extents).map_err(|_| LayoutError::TooManyExtents)?;
        let mut sectors = 0u64;
        for (index, extent) in extents.iter().enumerate() {
            if extent.sectors == 0 {
                return Err(LayoutError::EmptyExtent { extent: index });
            }
            if extent.end().is_none() {
                return Err(LayoutError::ExtentOverflow { extent: index });
            }
            sectors = sectors.checked_add(extent.sectors).ok_or(LayoutError::TooLarge)?;
        }
        let map = Self { extents, sectors };
        if let Some((extent, other_extent)) = map.first_overlap_with(&map, true) {
            return Err(LayoutError::Overlap { vm: 0, extent, other_vm: 0, other_extent });
        }
        Ok(map)
    }

    /// A map of one extent: physical sectors `start .. start + sectors` (an MBR partition, say).
    pub fn single(start: u64, sectors: u64) -> Result<Self, LayoutError> {
        Self::new(&[Extent::new(start, sectors)])
    }

    /// Size of the virtual disk in sectors: the extents' lengths added up.
    pub fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    /// The extents, in virtual-sector order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The physical runs holding virtual sectors `sector .. sector + count`, in order; `None` when the range
    /// is not wholly inside the virtual disk (or its end overflows). A range crossing extents yields one run per
    /// extent it touches.
    pub fn runs(&self, sector: u64, count: u64) -> Option<Runs<'_>> {
        let end = sector.checked_add(count)?;
        if end > self.sectors {
            return None;
        }
        // Find the extent holding `sector`, and the offset into it.
        let mut offset = sector;
        let mut index = 0;
        while let Some(extent) = self.extents.get(index) {
            if offset < extent.sectors {
                break;
            }
            offset -= extent.sectors;
            index += 1;
        }
        Some(Runs { extents: &self.extents, index, offset, left: count })
    }

    /// The first pair (index in `self`, index in `other`) of overlapping extents; with `same`, `other` is
    /// `self` and an extent is not compared with itself.
    fn first_overlap_with<const OTHER: usize>(&self, other: &LbaMap<OTHER>, same: bool) -> Option<(usize, usize)> {
        self.extents.iter().enumerate().find_map(|(index, extent)| {
            other
                .extents
                .iter()
                .enumerate()
                .find(|&(other_index, candidate)| !(same && other_index == index) && extent.overlaps(candidate))
                .map(|(other_index, _)| (index, other_index))
        })
    }
}

/// The physical runs of a virtual range, as `(first physical sector, sectors)`; see [`LbaMap::runs`].
#[derive(Debug, Clone)]
pub struct Runs<'m> {
    extents: &'m [Extent],
    index: usize,
    /// Sectors of `extents[index]` before the next run.
    offset: u64,
    /// Sectors still to map.
    left: u64,
}

impl Iterator for Runs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.left == 0 {
            return None;
        }
        let extent = self.extents.get(self.index)?;
        // `offset < sectors` and `start + sectors` does not overflow (the map is valid), so neither does this.
        let sectors = extent.sectors.checked_sub(self.offset)?.min(self.left);
        let start = extent.start.checked_add(self.offset)?;
        self.left -= sectors;
        self.index += 1;
        self.offset = 0;
        Some((start, sectors))
    }
}

/// Every VM's LBA map over one physical disk, checked against the disk's size and against each other as each
/// is added; at most `VMS` maps of at most `EXTENTS` extents each.
pub struct DiskLayout<'d, D, const VMS: usize, const EXTENTS: usize> {
    disk: &'d RefCell<D>,
    capacity: u64,
    maps: Vec<LbaMap<EXTENTS>, VMS>,
}

impl<'d, D: PhysicalBlock, const VMS: usize, const EXTENTS: usize> DiskLayout<'d, D, VMS, EXTENTS> {
    /// An empty layout over `disk`.
    pub fn new(disk: &'d RefCell<D>) -> Result<Self, LayoutError> {
        let capacity = disk.try_borrow().map_err(|_| LayoutError::DiskBusy)?.capacity();
        Ok(Self { disk, capacity, maps: Vec::new() })
    }

    /// Size of the physical disk in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// The maps added so far, by VM number.
    pub fn maps(&self) -> &[LbaMap<EXTENTS>] {
        &self.maps
    }

    /// Adds the next VM's map and answers its VM number (the index of its partition in
    /// [`into_partitions`](Self::into_partitions)). Refused, leaving the layout as it was: an extent past the
    /// disk's end, an extent overlapping one already in the layout, or no room for another map.
    pub fn add(&mut self, map: LbaMap<EXTENTS>) -> Result<usize, LayoutError> {
        let vm = self.maps.len();
        for (extent, candidate) in map.extents.iter().enumerate() {
            if candidate.end().is_none_or(|end| end > self.capacity) {
                return Err(LayoutError::PastEnd { vm, extent });
            }
        }
        for (other_vm, other) in self.maps.iter().enumerate() {
            if let Some((extent, other_extent)) = map.first_overlap_with(other, false) {
                return Err(LayoutError::Overlap { vm, extent, other_vm, other_extent });
            }
        }
        // Self-overlap is refused by `LbaMap::new`, the only way to build a map.
        self.maps.push(map).map_err(|_| LayoutError::TooManyDisks)?;
        Ok(vm)
    }

    /// One partition per map, in VM order. Consuming the layout means no map can be served twice.
    pub fn into_partitions(self) -> Vec<Partition<'d, D, EXTENTS>, VMS> {
        let read_only = self.disk.try_borrow().map_or(true, |disk| disk.is_read_only());
        let disk = self.disk;
        self.maps.into_iter().map(|map| Partition { disk, map, read_only }).collect()
    }
}

/// A VM's virtual disk: its [`LbaMap`] over the shared physical disk. Made only by
/// [`DiskLayout::into_partitions`] (directly, or through [`Partition::dedicated`], a layout of one map covering
/// the whole disk), so its extents were checked against the disk and every other VM's.
pub struct Partition<'d, D, const EXTENTS: usize> {
    disk: &'d RefCell<D>,
    map: LbaMap<EXTENTS>,
    /// The physical disk's read-only flag, taken once (it does not change, and asking needs a borrow).
    read_only: bool,
}

impl<D, const EXTENTS: usize> Partition<'_, D, EXTENTS> {
    /// The partition's LBA map.
    pub fn map(&self) -> &LbaMap<EXTENTS> {
        &self.map
    }
}

impl<'d, D: PhysicalBlock, const EXTENTS: usize> Partition<'d, D, EXTENTS> {
    /// The whole of `disk`, given to one VM: a dedicated disk (see the module's doc), sectors `0..capacity` of
    /// the VM's disk being the physical ones. Refused when the disk has no sectors or is borrowed elsewhere.
    pub fn dedicated(disk: &'d RefCell<D>) -> Result<Self, LayoutError> {
        let mut layout = DiskLayout::<'d, D, 1, EXTENTS>::new(disk)?;
        let capacity = layout.capacity_sectors();
        layout.add(LbaMap::single(0, capacity)?)?;
        layout.into_partitions().into_iter().next().ok_or(LayoutError::NoExtents)
    }
}

impl<D: PhysicalBlock, const EXTENTS: usize> Partition<'_, D, EXTENTS> {
    /// Runs `transfer(disk, physical sector, byte range of the buffer)` for each physical run of the virtual
    /// sectors the `len` bytes from `sector` cover, after checking the whole range (whole sectors, inside the
    /// virtual disk, each run inside the physical disk).
    fn for_each_run(
        &mut self,
        sector: u64,
        len: usize,
        mut transfer: impl FnMut(&mut D, u64, core::ops::Range<usize>) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::OutOfRange);
        }
        let count = u64::try_from(len / SECTOR_SIZE).map_err(|_| BlockError::OutOfRange)?;
        let runs = self.map.runs(sector, count).ok_or(BlockError::OutOfRange)?;
        let mut disk = self.disk.try_borrow_mut().map_err(|_| BlockError::Io)?;
        let capacity = disk.capacity();
        // The layout checked every extent against the disk; check each run again, so that a disk that shrank
        // (or a bug in the translation) is an error and never an access past the end.
        let in_disk =
            runs.clone().all(|(start, sectors)| start.checked_add(sectors).is_some_and(|end| end <= capacity));
        if !in_disk {
            return Err(BlockError::OutOfRange);
        }
        let mut at = 0usize;
        for (start, sectors) in runs {
            let bytes = usize::try_from(sectors).ok().and_then(|n| n.checked_mul(SECTOR_SIZE));
            let end = bytes.and_then(|bytes| at.checked_add(bytes)).filter(|&end| end <= len);
            let end = end.ok_or(BlockError::OutOfRange)?;
            transfer(&mut disk, start, at..end)?;
            at = end;
        }
        if at == len {
            Ok(())
        } else {
            Err(BlockError::OutOfRange)
        }
    }
}

impl<D: PhysicalBlock, const EXTENTS: usize> BlockBackend for Partition<'_, D, EXTENTS> {
    fn capacity_sectors(&self) -> u64 {
        self.map.capacity_sectors()
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.for_each_run(sector, buf.len(), |disk, start, range| {
            disk.read_sectors(start, buf.get_mut(range).ok_or(BlockError::OutOfRange)?)
        })
    }

    /// Returns once every run is written to the physical disk (which returns once the backing store has it).
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.for_each_run(sector, buf.len(), |disk, start, range| {
            disk.write_sectors(start, buf.get(range).ok_or(BlockError::OutOfRange)?)
        })
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.disk.try_borrow_mut().map_err(|_| BlockError::Io)?.sync()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// An in-memory physical disk for tests, which checks the partition's side of the [`PhysicalBlock`] contract.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    pub struct MemDisk {
        pub data: std::vec::Vec<u8>,
        pub read_only: bool,
        /// Calls to `sync`, and whether a write came after the last one.
        pub syncs: u32,
        pub unsynced: bool,
        /// When set, every call fails with [`BlockError::Io`].
        pub failing: bool,
    }

    impl MemDisk {
        pub fn new(sectors: usize) -> Self {
            let data = (0..sectors * SECTOR_SIZE).map(|i| (i as u8) ^ ((i / SECTOR_SIZE) as u8)).collect();
            Self { data, read_only: false, syncs: 0, unsynced: false, failing: false }
        }

        fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
            assert!(len > 0 && len.is_multiple_of(SECTOR_SIZE), "partial or empty transfer of {len} bytes");
            let start = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_SIZE));
            let range = start.and_then(|s| Some(s..s.checked_add(len)?)).filter(|r| r.end <= self.data.len());
            assert!(range.is_some(), "partition asked for physical sectors past the end: {sector} + {len} bytes");
            if self.failing {
                return Err(BlockError::Io);
            }
            range.ok_or(BlockError::OutOfRange)
        }
    }

    impl PhysicalBlock for MemDisk {
        fn capacity(&self) -> u64 {
            (self.data.len() / SECTOR_SIZE) as u64
        }
        fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let range = self.range(sector, buf.len())?;
            buf.copy_from_slice(&self.data[range]);
            Ok(())
        }
        fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
            assert!(!self.read_only, "partition wrote to a read-only disk");
            let range = self.range(sector, buf.len())?;
            self.data[range].copy_from_slice(buf);
            self.unsynced = true;
            Ok(())
        }
        fn sync(&mut self) -> Result<(), BlockError> {
            if self.failing {
                return Err(BlockError::Io);
            }
            self.syncs += 1;
            self.unsynced = false;
            Ok(())
        }
        fn is_read_only(&self) -> bool {
            self.read_only
        }
    }
}

#[cfg(test)]
mod tests;
