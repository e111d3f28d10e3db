//! The board's physical disks: the virtio-blk devices QEMU gives the machine (`DISK_FILE` and
//! `DEDICATED_DISK_FILE` in `run-qemu.sh`, found by `slots::probe`); the VMM drives each with `virtio-drivers` as the core's [`PhysicalBlock`],
//! and reads the first one's MBR partition table. A VM's virtual disk is the core's [`block::Partition`] over a
//! disk (an LBA map of one extent: an MBR partition, or the whole disk for a [`dedicated`] one), which translates
//! and bounds-checks every request before the disk is asked; the partitions of the VMs sharing a disk are checked
//! together (inside the disk, none overlapping another) by the core's `DiskLayout` ([`layout`]).
//!
//! What it must never do: panic on anything a guest or the disk image holds, or report a write done before the
//! physical device has completed it (`write_blocks` is blocking: it returns once the device has put the request
//! in its used ring, and only then does the guest's request complete).

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::cell::RefCell;
use core::ptr::NonNull;

use alloc::vec::Vec;
use trapeze::dev::block::{self, DiskLayout, LayoutError, LbaMap, PhysicalBlock};
use trapeze::dev::virtio::blk::{BlockError, SECTOR_SIZE};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// The largest run of sectors asked of the physical device at once (one descriptor each).
const CHUNK_SECTORS: usize = 128;

/// The DMA glue for `virtio-drivers` (the disks' and the NIC's): the VMM runs in M-mode without translation, so a physical address is the
/// virtual one, DMA buffers come from the heap, and a buffer is shared with the device where it lies.
pub struct BoardHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory owned by the caller until `dma_dealloc`;
// physical addresses equal virtual ones (M-mode, `satp` bare for the VMM), and QEMU's DMA is cache-coherent, so
// sharing a buffer needs neither a copy nor a mapping.
unsafe impl Hal for BoardHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE)
            .unwrap_or_else(|_| panic!("virtio: DMA allocation of {pages} pages is too large"));
        // SAFETY: the layout has a nonzero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        let pointer = NonNull::new(pointer).unwrap_or_else(|| panic!("virtio: out of heap for {pages} DMA pages"));
        (pointer.as_ptr() as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Ok(layout) = Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE) else { return -1 };
        // SAFETY: the caller passes back what `dma_alloc` returned for `pages`, allocated with this layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Only the PCI transport asks; the MMIO transport's registers are at their physical addresses.
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The physical virtio-blk device, driven by `virtio-drivers`.
pub struct PhysicalDisk {
    blk: VirtIOBlk<BoardHal, MmioTransport<'static>>,
    /// The virtio-mmio slot it sits in.
    pub base: usize,
}

impl PhysicalDisk {
    /// The block device behind `transport` (the virtio-mmio slot at `base`, see `slots::probe`), initialised;
    /// `None` when the driver refuses it.
    pub fn new(transport: MmioTransport<'static>, base: usize) -> Option<Self> {
        let blk = VirtIOBlk::<BoardHal, _>::new(transport).ok()?;
        Some(Self { blk, base })
    }

    /// Size in sectors.
    pub fn capacity(&self) -> u64 {
        self.blk.capacity()
    }

    /// The usable primary MBR partitions (type nonzero, nonzero size, lying wholly on the disk and not over
    /// sector 0), in table order, as `(first, count)`; none when sector 0 is no MBR. Whether they overlap is
    /// the core's layout to decide ([`layout`]).
    pub fn mbr_partitions(&mut self) -> Vec<(u64, u64)> {
        let mut mbr = [0u8; SECTOR_SIZE];
        if self.blk.read_blocks(0, &mut mbr).is_err() || mbr[510..512] != [0x55, 0xaa] {
            return Vec::new();
        }
        let capacity = self.capacity();
        mbr[446..510]
            .chunks_exact(16)
            .filter_map(|entry| {
                let word =
                    |at: usize| u64::from(u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]));
                let (kind, first, count) = (entry[4], word(8), word(12));
                let fits = first.checked_add(count).is_some_and(|end| end <= capacity);
                (kind != 0 && first > 0 && count > 0 && fits).then_some((first, count))
            })
            .collect()
    }
}

impl PhysicalBlock for PhysicalDisk {
    fn capacity(&self) -> u64 {
        self.blk.capacity()
    }

    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let first = usize::try_from(sector).map_err(|_| BlockError::OutOfRange)?;
        for (index, chunk) in buf.chunks_mut(CHUNK_SECTORS * SECTOR_SIZE).enumerate() {
            self.blk.read_blocks(first + index * CHUNK_SECTORS, chunk).map_err(|_| BlockError::Io)?;
        }
        Ok(())
    }

    /// Returns once the physical device has completed every sector (`write_blocks` waits for it).
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.blk.readonly() {
            return Err(BlockError::ReadOnly);
        }
        let first = usize::try_from(sector).map_err(|_| BlockError::OutOfRange)?;
        for (index, chunk) in buf.chunks(CHUNK_SECTORS * SECTOR_SIZE).enumerate() {
            self.blk.write_blocks(first + index * CHUNK_SECTORS, chunk).map_err(|_| BlockError::Io)?;
        }
        Ok(())
    }

    /// The physical device's flush, when it offers one (`virtio-drivers` skips it otherwise).
    fn sync(&mut self) -> Result<(), BlockError> {
        self.blk.flush().map_err(|_| BlockError::Io)
    }

    fn is_read_only(&self) -> bool {
        self.blk.readonly()
    }
}

/// A VM's virtual disk: the core's partition over the physical disk, one extent (an MBR partition).
pub type Partition = block::Partition<'static, PhysicalDisk, 1>;

/// The whole of `disk` as one VM's: a dedicated disk (`block::Partition::dedicated`), whose every request the
/// VMM still serves, its guest addresses translated and bounds-checked in the VM's RAM (the honest form of a
/// dedicated DMA-capable device without an IOMMU); `None` when the disk has no sectors.
pub fn dedicated(disk: &'static RefCell<PhysicalDisk>) -> Option<Partition> {
    block::Partition::dedicated(disk).ok()
}

/// Most VMs with a partition of the physical disk: U-Boot and the two `disk-pattern` VMs.
pub const DISK_VMS: usize = 3;

/// One VM's disk per `(first, count)` run of physical sectors, in order, checked together by the core's layout
/// (each inside the disk, none overlapping another): the layout's error when it refuses one.
pub fn layout(disk: &'static RefCell<PhysicalDisk>, runs: &[(u64, u64)]) -> Result<Vec<Partition>, LayoutError> {
    let mut layout = DiskLayout::<'static, PhysicalDisk, DISK_VMS, 1>::new(disk)?;
    for &(first, count) in runs {
        layout.add(LbaMap::single(first, count)?)?;
    }
    Ok(layout.into_partitions().into_iter().collect())
}
