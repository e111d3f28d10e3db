//! Partitioned disks: map and layout checks, request translation across extents, and property tests that
//! drive the virtio-blk device model over partitions of an in-memory disk with random requests and random
//! descriptor chains, against a reference model that translates sector by sector.

use core::cell::RefCell;

use proptest::prelude::*;

use super::fake::MemDisk;
use super::*;
use crate::dev::virtio::blk::{S_IOERR, S_OK, T_FLUSH, T_GET_ID, T_IN, T_OUT};
use crate::dev::virtio::queue::{DescChain, DESC_F_NEXT, DESC_F_WRITE};
use crate::dev::virtio::{VirtioBlk, VirtioDevice};
use crate::mem::{Ram, RAM_BASE};

fn layout_of<'d, const VMS: usize, const EXTENTS: usize>(
    disk: &'d RefCell<MemDisk>,
    maps: &[&[Extent]],
) -> Result<DiskLayout<'d, MemDisk, VMS, EXTENTS>, LayoutError> {
    let mut layout = DiskLayout::new(disk)?;
    for extents in maps {
        layout.add(LbaMap::new(extents)?)?;
    }
    Ok(layout)
}

#[test]
fn a_map_is_refused_for_its_own_shape() {
    type Map = LbaMap<2>;
    assert_eq!(Map::new(&[]), Err(LayoutError::NoExtents));
    assert_eq!(Map::new(&[Extent::new(0, 1); 3]), Err(LayoutError::TooManyExtents));
    assert_eq!(Map::new(&[Extent::new(4, 1), Extent::new(9, 0)]), Err(LayoutError::EmptyExtent { extent: 1 }));
    assert_eq!(Map::single(u64::MAX, 1), Err(LayoutError::ExtentOverflow { extent: 0 }));
    assert_eq!(Map::single(u64::MAX - 1, 1).map(|map| map.capacity_sectors()), Ok(1));
    assert_eq!(
        Map::new(&[Extent::new(0, u64::MAX), Extent::new(u64::MAX, 0)]),
        Err(LayoutError::EmptyExtent { extent: 1 })
    );
    assert_eq!(Map::new(&[Extent::new(0, u64::MAX - 1), Extent::new(0, 2)]), Err(LayoutError::TooLarge));
    assert_eq!(
        LbaMap::<3>::new(&[Extent::new(0, u64::MAX - 1), Extent::new(u64::MAX - 1, 1), Extent::new(u64::MAX - 1, 1)])
            .err(),
        Some(LayoutError::TooLarge)
    );
    assert_eq!(
        Map::new(&[Extent::new(10, 5), Extent::new(14, 2)]),
        Err(LayoutError::Overlap { vm: 0, extent: 0, other_vm: 0, other_extent: 1 }),
        "one VM's extents may not share a sector either"
    );
    let map = Map::new(&[Extent::new(10, 5), Extent::new(2, 3)]).expect("two extents, out of physical order");
    assert_eq!(map.capacity_sectors(), 8);
    assert_eq!(map.extents(), &[Extent::new(10, 5), Extent::new(2, 3)]);
}

#[test]
fn a_layout_refuses_overlap_and_extents_past_the_disk() {
    let disk = RefCell::new(MemDisk::new(100));
    let ok = layout_of::<3, 2>(&disk, &[&[Extent::new(0, 10), Extent::new(50, 10)], &[Extent::new(10, 40)]])
        .expect("adjacent extents do not overlap");
    assert_eq!(ok.maps().len(), 2);
    assert_eq!(ok.capacity_sectors(), 100);

    let mut layout = layout_of::<3, 2>(&disk, &[&[Extent::new(0, 10), Extent::new(50, 10)]]).unwrap();
    let refuse = |layout: &mut DiskLayout<MemDisk, 3, 2>, extents: &[Extent]| layout.add(LbaMap::new(extents).unwrap());
    // Partial overlap at either end, containment both ways, and past the end (also by one sector).
    assert_eq!(
        refuse(&mut layout, &[Extent::new(20, 5), Extent::new(59, 2)]),
        Err(LayoutError::Overlap { vm: 1, extent: 1, other_vm: 0, other_extent: 1 })
    );
    assert_eq!(
        refuse(&mut layout, &[Extent::new(45, 6)]),
        Err(LayoutError::Overlap { vm: 1, extent: 0, other_vm: 0, other_extent: 1 })
    );
    assert!(matches!(refuse(&mut layout, &[Extent::new(2, 3)]), Err(LayoutError::Overlap { .. })));
    assert!(matches!(refuse(&mut layout, &[Extent::new(40, 40)]), Err(LayoutError::Overlap { .. })));
    assert_eq!(refuse(&mut layout, &[Extent::new(61, 40)]), Err(LayoutError::PastEnd { vm: 1, extent: 0 }));
    assert_eq!(
        refuse(&mut layout, &[Extent::new(10, 1), Extent::new(100, 1)]),
        Err(LayoutError::PastEnd { vm: 1, extent: 1 })
    );
    assert_eq!(layout.maps().len(), 1, "refused maps leave the layout as it was");
    assert_eq!(refuse(&mut layout, &[Extent::new(60, 40)]), Ok(1), "up to the last sector");
    assert_eq!(refuse(&mut layout, &[Extent::new(10, 40)]), Ok(2));
    assert_eq!(
        refuse(&mut layout, &[Extent::new(99, 1)]),
        Err(LayoutError::Overlap { vm: 3, extent: 0, other_vm: 1, other_extent: 0 }),
        "the last sector is taken"
    );
    let full = layout_of::<1, 1>(&disk, &[&[Extent::new(0, 1)], &[Extent::new(1, 1)]]);
    assert_eq!(full.err(), Some(LayoutError::TooManyDisks));

    let _held = disk.borrow_mut();
    assert_eq!(DiskLayout::<MemDisk, 1, 1>::new(&disk).err(), Some(LayoutError::DiskBusy));
}

#[test]
fn runs_split_a_range_at_extent_boundaries() {
    let map = LbaMap::<3>::new(&[Extent::new(100, 4), Extent::new(10, 2), Extent::new(50, 3)]).unwrap();
    let runs = |sector, count| map.runs(sector, count).map(|runs| runs.collect::<std::vec::Vec<_>>());
    assert_eq!(runs(0, 9), Some(vec![(100, 4), (10, 2), (50, 3)]));
    assert_eq!(runs(3, 4), Some(vec![(103, 1), (10, 2), (50, 1)]));
    assert_eq!(runs(4, 2), Some(vec![(10, 2)]), "exactly one whole extent");
    assert_eq!(runs(5, 1), Some(vec![(11, 1)]));
    assert_eq!(runs(8, 1), Some(vec![(52, 1)]), "the last sector");
    assert_eq!(runs(9, 0), Some(vec![]), "an empty range at the end");
    assert_eq!(runs(8, 2), None, "one past the end");
    assert_eq!(runs(9, 1), None);
    assert_eq!(runs(u64::MAX, 2), None, "overflowing end");
    assert_eq!(runs(2, u64::MAX), None);
}

#[test]
fn a_partition_reads_and_writes_its_sectors_only_across_extents() {
    let disk = RefCell::new(MemDisk::new(64));
    let original = disk.borrow().data.clone();
    let layout = layout_of::<2, 2>(&disk, &[&[Extent::new(40, 3), Extent::new(8, 2)], &[Extent::new(20, 4)]]).unwrap();
    let mut partitions = layout.into_partitions();
    assert_eq!(partitions.len(), 2);
    let (mut second, mut first) = (partitions.pop().unwrap(), partitions.pop().unwrap());
    assert_eq!(first.capacity_sectors(), 5);
    assert_eq!(second.capacity_sectors(), 4);
    assert!(!first.read_only());

    // Virtual sectors 2..4 of the first VM: physical 42 then 8.
    let data: std::vec::Vec<u8> = (0..2 * SECTOR_SIZE).map(|i| (i % 251) as u8).collect();
    assert_eq!(first.write(2, &data), Ok(()));
    {
        let disk = disk.borrow();
        assert_eq!(&disk.data[42 * SECTOR_SIZE..43 * SECTOR_SIZE], &data[..SECTOR_SIZE]);
        assert_eq!(&disk.data[8 * SECTOR_SIZE..9 * SECTOR_SIZE], &data[SECTOR_SIZE..]);
        assert!(disk.unsynced, "the write reached the disk before it returned");
        for sector in (0..64).filter(|&s| s != 42 && s != 8) {
            let range = sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE;
            assert_eq!(disk.data[range.clone()], original[range], "sector {sector} changed");
        }
    }
    let mut back = vec![0u8; 5 * SECTOR_SIZE];
    assert_eq!(first.read(0, &mut back), Ok(()));
    assert_eq!(&back[..2 * SECTOR_SIZE], &original[40 * SECTOR_SIZE..42 * SECTOR_SIZE]);
    assert_eq!(&back[2 * SECTOR_SIZE..4 * SECTOR_SIZE], &data[..]);
    assert_eq!(&back[4 * SECTOR_SIZE..], &original[9 * SECTOR_SIZE..10 * SECTOR_SIZE]);

    // Out of range, partial sectors, empty: refused before the disk is asked (MemDisk asserts otherwise).
    assert_eq!(first.read(4, &mut back[..2 * SECTOR_SIZE]), Err(BlockError::OutOfRange));
    assert_eq!(first.write(5, &data[..SECTOR_SIZE]), Err(BlockError::OutOfRange));
    assert_eq!(first.write(u64::MAX, &data[..SECTOR_SIZE]), Err(BlockError::OutOfRange));
    assert_eq!(first.read(0, &mut back[..100]), Err(BlockError::OutOfRange));
    assert_eq!(first.read(0, &mut []), Err(BlockError::OutOfRange));
    assert_eq!(second.read(3, &mut back[..SECTOR_SIZE]), Ok(()));
    assert_eq!(&back[..SECTOR_SIZE], &original[23 * SECTOR_SIZE..24 * SECTOR_SIZE]);

    // Flush is the disk's sync.
    assert_eq!(second.flush(), Ok(()));
    assert_eq!((disk.borrow().syncs, disk.borrow().unsynced), (1, false));

    // A disk borrowed elsewhere (re-entry) or failing is an I/O error, never a panic.
    {
        let _held = disk.borrow_mut();
        assert_eq!(first.read(0, &mut back[..SECTOR_SIZE]), Err(BlockError::Io));
        assert_eq!(first.flush(), Err(BlockError::Io));
    }
    disk.borrow_mut().failing = true;
    assert_eq!(first.write(0, &data[..SECTOR_SIZE]), Err(BlockError::Io));
    assert_eq!(first.flush(), Err(BlockError::Io));
}

#[test]
fn a_read_only_disk_gives_read_only_partitions() {
    let disk = RefCell::new(MemDisk::new(8));
    disk.borrow_mut().read_only = true;
    let mut partition = layout_of::<1, 1>(&disk, &[&[Extent::new(2, 2)]]).unwrap().into_partitions().pop().unwrap();
    assert!(partition.read_only());
    assert_eq!(partition.write(0, &[0; SECTOR_SIZE]), Err(BlockError::ReadOnly));
    let blk = VirtioBlk::new(partition);
    assert_ne!(blk.features() & crate::dev::virtio::blk::F_RO, 0, "the guest is told");
}

#[test]
fn a_physical_disk_that_shrank_is_an_error_not_an_access_past_its_end() {
    let disk = RefCell::new(MemDisk::new(16));
    let mut partition = layout_of::<1, 1>(&disk, &[&[Extent::new(8, 8)]]).unwrap().into_partitions().pop().unwrap();
    disk.borrow_mut().data.truncate(12 * SECTOR_SIZE);
    let mut buf = [0u8; 2 * SECTOR_SIZE];
    assert_eq!(partition.read(3, &mut buf), Err(BlockError::OutOfRange), "physical 11..13 of 12");
    assert_eq!(partition.read(2, &mut buf), Ok(()), "physical 10..12");
}

// The device model over partitions, driven with requests laid out in guest RAM as a driver lays them out.

const RAM_SIZE: usize = 32 * 1024;
const QUEUE: u16 = 16;
const DESC: u64 = RAM_BASE;
const HDR: u64 = RAM_BASE + 0x100;
const STATUS: u64 = RAM_BASE + 0x180;
const DATA: u64 = RAM_BASE + 0x200;
const RAM_END: u64 = RAM_BASE + RAM_SIZE as u64;

fn set_desc(ram: &mut Ram, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = DESC + 16 * u64::from(index);
    ram.store(at, 8, addr).unwrap();
    ram.store(at + 8, 4, u64::from(len)).unwrap();
    ram.store(at + 12, 2, u64::from(flags)).unwrap();
    ram.store(at + 14, 2, u64::from(next)).unwrap();
}

/// Writes the chain `bufs` as descriptors 0.. and hands it to the device; answers the status byte (`None` when
/// the chain is broken or the device could not answer) and the used length.
fn submit<B: BlockBackend>(blk: &mut VirtioBlk<B>, ram: &mut Ram, bufs: &[(u64, u32, bool)]) -> Option<(u8, u32)> {
    for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
        let more = i + 1 < bufs.len();
        let flags = if writable { DESC_F_WRITE } else { 0 } | if more { DESC_F_NEXT } else { 0 };
        set_desc(ram, i as u16, addr, len, flags, if more { i as u16 + 1 } else { 0 });
    }
    run_chain(blk, ram)
}

fn run_chain<B: BlockBackend>(blk: &mut VirtioBlk<B>, ram: &mut Ram) -> Option<(u8, u32)> {
    let chain = DescChain::new(ram, DESC, QUEUE, 0).ok()?;
    let status_at = chain.last_writable_byte();
    let used = blk.handle(0, &chain, ram).ok()?;
    let status = ram.load(status_at?, 1)? as u8;
    Some((status, used))
}

fn header(ram: &mut Ram, at: u64, kind: u32, sector: u64) {
    ram.store(at, 4, u64::from(kind)).unwrap();
    ram.store(at + 4, 4, 0).unwrap();
    ram.store(at + 8, 8, sector).unwrap();
}

#[test]
fn the_device_model_over_a_partition_serves_its_size_from_sector_zero_and_refuses_past_its_end() {
    let disk = RefCell::new(MemDisk::new(32));
    let original = disk.borrow().data.clone();
    let partition = layout_of::<1, 2>(&disk, &[&[Extent::new(20, 2), Extent::new(4, 2)]]).unwrap().into_partitions();
    let mut blk = VirtioBlk::new(partition.into_iter().next().unwrap());
    let mut config = [0u8; 8];
    blk.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), 4, "capacity is the partition's");

    let mut backing = vec![0u8; RAM_SIZE];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    // Read all four virtual sectors into one buffer: physical 20, 21, 4, 5.
    header(&mut ram, HDR, T_IN, 0);
    let read = submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 4 * 512, true), (STATUS, 1, true)]);
    assert_eq!(read, Some((S_OK, 4 * 512 + 1)));
    let expected: std::vec::Vec<u8> =
        [20, 21, 4, 5].iter().flat_map(|&s| &original[s * 512..(s + 1) * 512]).copied().collect();
    assert_eq!(ram.slice(DATA, 4 * 512).unwrap(), &expected[..]);
    // Two sectors from virtual 3: one past the end. A write there changes nothing.
    header(&mut ram, HDR, T_IN, 3);
    let past = submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 2 * 512, true), (STATUS, 1, true)]);
    assert_eq!(past, Some((S_IOERR, 1)));
    header(&mut ram, HDR, T_OUT, 3);
    let past = submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 2 * 512, false), (STATUS, 1, true)]);
    assert_eq!(past, Some((S_IOERR, 1)));
    assert_eq!(disk.borrow().data, original);
    // A write straddling the extents, split across descriptors mid-sector.
    ram.slice_mut(DATA, 1024).unwrap().iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8);
    header(&mut ram, HDR, T_OUT, 1);
    let bufs = [(HDR, 16, false), (DATA, 300, false), (DATA + 300, 724, false), (STATUS, 1, true)];
    assert_eq!(submit(&mut blk, &mut ram, &bufs), Some((S_OK, 1)));
    let written = ram.slice(DATA, 1024).unwrap().to_vec();
    assert_eq!(&disk.borrow().data[21 * 512..22 * 512], &written[..512]);
    assert_eq!(&disk.borrow().data[4 * 512..5 * 512], &written[512..]);
    header(&mut ram, HDR, T_FLUSH, 0);
    assert_eq!(submit(&mut blk, &mut ram, &[(HDR, 16, false), (STATUS, 1, true)]), Some((S_OK, 1)));
    assert_eq!(disk.borrow().syncs, 1);
}

/// A disk given whole to one VM is a partition of every sector, from sector 0: the VM reads and writes its
/// first and last sectors where the physical disk has them, and gets `VIRTIO_BLK_S_IOERR` one past its end.
#[test]
fn a_dedicated_disk_is_the_whole_disk_from_sector_zero() {
    let disk = RefCell::new(MemDisk::new(16));
    let original = disk.borrow().data.clone();
    let mut blk = VirtioBlk::new(Partition::<_, 1>::dedicated(&disk).unwrap());
    let mut config = [0u8; 8];
    blk.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), 16, "capacity is the whole disk's");
    let mut backing = vec![0u8; RAM_SIZE];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    header(&mut ram, HDR, T_IN, 15);
    assert_eq!(
        submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]),
        Some((S_OK, 513))
    );
    assert_eq!(ram.slice(DATA, 512).unwrap(), &original[15 * 512..]);
    ram.slice_mut(DATA, 512).unwrap().fill(0xa5);
    header(&mut ram, HDR, T_OUT, 0);
    assert_eq!(submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]), Some((S_OK, 1)));
    assert!(disk.borrow().data[..512].iter().all(|&byte| byte == 0xa5), "virtual sector 0 is physical sector 0");
    header(&mut ram, HDR, T_IN, 16);
    assert_eq!(
        submit(&mut blk, &mut ram, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]),
        Some((S_IOERR, 1))
    );
    assert_eq!(&disk.borrow().data[512..], &original[512..], "only sector 0 was written");
    // An empty disk cannot be given.
    let empty = RefCell::new(MemDisk::new(0));
    assert!(matches!(Partition::<_, 1>::dedicated(&empty), Err(LayoutError::EmptyExtent { extent: 0 })));
}

/// A guest address the device must not reach for a buffer of `len` bytes, by `kind`: below RAM, past its end,
/// straddling its end, near 2^64, the host address of the memory just past the VM's RAM window or just before it.
fn hostile_address(kind: usize, offset: u64, len: u32, host_before: u64, host_after: u64) -> u64 {
    match kind {
        0 => offset % (RAM_BASE - u64::from(len)),
        1 => RAM_END + offset,
        2 => RAM_END - offset % u64::from(len),
        3 => u64::MAX - offset,
        4 => host_after + offset % 2048,
        _ => host_before + offset % 2048,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A dedicated disk's DMA stays inside the VM's RAM: requests whose data descriptors (one to three, each at
    /// least partly outside RAM) and maybe status descriptor name hostile addresses never change a byte of the
    /// host memory around the VM's RAM window, never put a byte on the disk (the data of a write lies outside
    /// RAM), and never bring host bytes into RAM; nothing panics.
    fn a_dedicated_disk_cannot_dma_outside_the_vms_ram_property(
        requests in prop::collection::vec(
            (
                prop_oneof![Just(T_IN), Just(T_OUT), Just(T_GET_ID), Just(T_FLUSH)],
                0u64..20,
                prop::collection::vec((0usize..6, any::<u64>(), 1u32..2048), 1..4),
                prop::option::of((0usize..6, any::<u64>())),
            ),
            1..16,
        ),
    ) {
        A_DEDICATED_DISK_CANNOT_DMA_OUTSIDE_THE_VMS_RAM.add(1);
        const GUARD: usize = 4096;
        let disk = RefCell::new(MemDisk::new(16));
        disk.borrow_mut().data.fill(0x11);
        let mut blk = VirtioBlk::new(Partition::<_, 1>::dedicated(&disk).unwrap());
        let mut host = vec![0xeeu8; GUARD + RAM_SIZE + GUARD];
        let (before, rest) = host.split_at_mut(GUARD);
        let (window, after) = rest.split_at_mut(RAM_SIZE);
        let (host_before, host_after) = (before.as_ptr() as u64, after.as_ptr() as u64);
        let mut ram = Ram::new(RAM_BASE, window);
        ram.slice_mut(DATA, RAM_END - DATA).unwrap().fill(0x33);
        for (kind, sector, data, hostile_status) in requests {
            header(&mut ram, HDR, kind, sector);
            let mut bufs = vec![(HDR, 16, false)];
            for (where_, offset, len) in data {
                bufs.push((hostile_address(where_, offset, len, host_before, host_after), len, kind != T_OUT));
            }
            let status = hostile_status.map_or(STATUS, |(where_, offset)| hostile_address(where_, offset, 1, host_before, host_after));
            bufs.push((status, 1, true));
            let _ = submit(&mut blk, &mut ram, &bufs);
            prop_assert!(disk.borrow().data.iter().all(|&byte| byte == 0x11), "data from outside RAM reached the disk");
            let data_area = ram.slice(DATA, RAM_END - DATA).unwrap();
            prop_assert!(!data_area.contains(&0xee), "host bytes reached the VM's RAM");
        }
        // `ram`'s borrow of the window ends here: the guard bytes around it are readable again.
        prop_assert!(before.iter().all(|&byte| byte == 0xee), "the host memory below the VM's RAM changed");
        prop_assert!(after.iter().all(|&byte| byte == 0xee), "the host memory above the VM's RAM changed");
    }
}

/// The hostile inputs the property `a_dedicated_disk_cannot_dma_outside_the_vms_ram` tried (`target/isolation.txt`).
static A_DEDICATED_DISK_CANNOT_DMA_OUTSIDE_THE_VMS_RAM: crate::isolation::Tally =
    crate::isolation::Tally::escapes("hostile virtio descriptors");

#[test]
fn a_dedicated_disk_cannot_dma_outside_the_vms_ram() {
    A_DEDICATED_DISK_CANNOT_DMA_OUTSIDE_THE_VMS_RAM.run(a_dedicated_disk_cannot_dma_outside_the_vms_ram_property);
}

/// A random disk layout: chunks of the physical disk in order, each VM 0's, VM 1's or nobody's; a VM's extents
/// are its chunks in a shuffled order. Some sectors past the last chunk belong to nobody.
#[derive(Debug, Clone)]
struct Layout {
    disk_sectors: u64,
    extents: [std::vec::Vec<Extent>; 2],
}

const MAX_EXTENTS: usize = 6;

fn layout_strategy() -> impl Strategy<Value = Layout> {
    (prop::collection::vec((1u64..=6, 0u8..3), 1..=12), 0u64..3, any::<prop::sample::Index>()).prop_map(
        |(chunks, tail, rotate)| {
            let mut extents: [std::vec::Vec<Extent>; 2] = Default::default();
            let mut at = 0;
            for (index, &(sectors, owner)) in chunks.iter().enumerate() {
                // VM 0 always has a disk: the first chunk is its when it would have none.
                let owner = if index == 0 && chunks.iter().all(|&(_, o)| o != 0) { 0 } else { owner };
                if let Some(list) = extents.get_mut(usize::from(owner)).filter(|list| list.len() < MAX_EXTENTS) {
                    list.push(Extent::new(at, sectors));
                }
                at += sectors;
            }
            for list in &mut extents {
                if !list.is_empty() {
                    let by = rotate.index(list.len());
                    list.rotate_left(by);
                    list.reverse();
                }
            }
            Layout { disk_sectors: at + tail, extents }
        },
    )
}

/// One request, either laid out as a driver would (any framing of header and data into descriptors) or a
/// crafted descriptor table.
#[derive(Debug, Clone)]
enum Request {
    Framed {
        vm: usize,
        kind: u32,
        /// Sector as an offset around the disk's end (`Near`) or anywhere.
        sector: SectorPick,
        sectors: u64,
        /// Cut points of the data stream into descriptors (byte offsets, any alignment).
        cuts: std::vec::Vec<u16>,
        split_header: bool,
        seed: u8,
    },
    Crafted {
        vm: usize,
        kind: u32,
        sector: SectorPick,
        descriptors: std::vec::Vec<(AddrPick, u32, u16, u16)>,
        seed: u8,
    },
}

#[derive(Debug, Clone, Copy)]
enum SectorPick {
    /// `capacity - 8 + n` (saturating), so requests start inside, at and just past the end.
    Near(u64),
    Any(u64),
}

impl SectorPick {
    fn resolve(self, capacity: u64) -> u64 {
        match self {
            SectorPick::Near(n) => capacity.saturating_sub(8).wrapping_add(n),
            SectorPick::Any(sector) => sector,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum AddrPick {
    Header,
    Status,
    Data(u16),
    /// Near the end of RAM, straddling it for longer lengths.
    RamEnd(u16),
    Anywhere(u64),
}

impl AddrPick {
    fn resolve(self) -> u64 {
        match self {
            AddrPick::Header => HDR,
            AddrPick::Status => STATUS,
            AddrPick::Data(offset) => DATA + u64::from(offset),
            AddrPick::RamEnd(back) => RAM_END.wrapping_sub(u64::from(back)),
            AddrPick::Anywhere(addr) => addr,
        }
    }
}

fn kind_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(T_IN), 4 => Just(T_OUT), 1 => Just(T_FLUSH), 1 => Just(T_GET_ID), 1 => any::<u32>()]
}

fn sector_strategy() -> impl Strategy<Value = SectorPick> {
    prop_oneof![6 => (0u64..12).prop_map(SectorPick::Near), 1 => any::<u64>().prop_map(SectorPick::Any), 1 => (u64::MAX - 8..=u64::MAX).prop_map(SectorPick::Any)]
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let addr = prop_oneof![
        1 => Just(AddrPick::Header),
        1 => Just(AddrPick::Status),
        6 => (0u16..0x6000).prop_map(AddrPick::Data),
        1 => (0u16..0x800).prop_map(AddrPick::RamEnd),
        1 => any::<u64>().prop_map(AddrPick::Anywhere),
    ];
    let len = prop_oneof![3 => 0u32..2048, 1 => Just(512u32), 1 => any::<u32>()];
    let framed = (
        0usize..2,
        kind_strategy(),
        sector_strategy(),
        0u64..8,
        prop::collection::vec(any::<u16>(), 0..4),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(vm, kind, sector, sectors, cuts, split_header, seed)| Request::Framed {
            vm,
            kind,
            sector,
            sectors,
            cuts,
            split_header,
            seed,
        });
    let crafted = (
        0usize..2,
        kind_strategy(),
        sector_strategy(),
        prop::collection::vec((addr, len, 0u16..8, 0u16..20), 1..8),
        any::<u8>(),
    )
        .prop_map(|(vm, kind, sector, descriptors, seed)| Request::Crafted { vm, kind, sector, descriptors, seed });
    prop_oneof![3 => framed, 1 => crafted]
}

/// The reference model: each VM's virtual disk as bytes, and its virtual sectors' physical numbers, expanded
/// sector by sector (an independent translation).
struct Model {
    physical: [std::vec::Vec<u64>; 2],
    disks: [std::vec::Vec<u8>; 2],
}

impl Model {
    fn new(layout: &Layout, data: &[u8]) -> Self {
        let physical = layout.extents.clone().map(|extents| {
            extents.iter().flat_map(|extent| extent.start..extent.start + extent.sectors).collect::<std::vec::Vec<_>>()
        });
        let mut model = Self { physical, disks: Default::default() };
        model.reload(0, data);
        model.reload(1, data);
        model
    }

    fn reload(&mut self, vm: usize, data: &[u8]) {
        self.disks[vm] =
            self.physical[vm].iter().flat_map(|&p| &data[p as usize * 512..(p as usize + 1) * 512]).copied().collect();
    }

    /// The physical disk as the model says it must be: `original` outside every VM's sectors, each VM's model
    /// disk at its sectors.
    fn expected(&self, original: &[u8]) -> std::vec::Vec<u8> {
        let mut expected = original.to_vec();
        for vm in 0..2 {
            for (virtual_sector, &p) in self.physical[vm].iter().enumerate() {
                let at = p as usize * 512;
                expected[at..at + 512]
                    .copy_from_slice(&self.disks[vm][virtual_sector * 512..(virtual_sector + 1) * 512]);
            }
        }
        expected
    }
}

fn fill(ram: &mut Ram, addr: u64, len: u64, seed: u8) {
    if let Some(bytes) = ram.slice_mut(addr, len) {
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(13).wrapping_add(seed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random layouts of two VMs and random request sequences, framed or crafted, through the virtio-blk device
    /// model: nothing panics (the fake disk asserts it is never asked past its end or for partial sectors); after
    /// every request the physical disk equals the model (sectors of nobody unchanged, the other VM's unchanged, a
    /// framed request's effect exactly the model's); a framed request past the end gets `VIRTIO_BLK_S_IOERR`, one
    /// inside it `VIRTIO_BLK_S_OK` with the model's data.
    fn a_guest_never_reaches_outside_its_extents_property(layout in layout_strategy(), requests in prop::collection::vec(request_strategy(), 1..24)) {
        A_GUEST_NEVER_REACHES_OUTSIDE_ITS_EXTENTS.add(requests.len());
        let disk = RefCell::new(MemDisk::new(layout.disk_sectors as usize));
        let original = disk.borrow().data.clone();
        let mut disk_layout = DiskLayout::<MemDisk, 2, MAX_EXTENTS>::new(&disk).unwrap();
        let mut blks: std::vec::Vec<VirtioBlk<Partition<MemDisk, MAX_EXTENTS>>> = std::vec::Vec::new();
        for extents in layout.extents.iter().filter(|e| !e.is_empty()) {
            disk_layout.add(LbaMap::new(extents).unwrap()).unwrap();
        }
        for partition in disk_layout.into_partitions() {
            blks.push(VirtioBlk::new(partition));
        }
        let mut model = Model::new(&layout, &original);
        let mut backing = vec![0u8; RAM_SIZE];
        let mut ram = Ram::new(RAM_BASE, &mut backing);

        for request in requests {
            match request {
                Request::Framed { vm, kind, sector, sectors, cuts, split_header, seed } => {
                    let vm = vm.min(blks.len() - 1);
                    let capacity = model.physical[vm].len() as u64;
                    let sector = sector.resolve(capacity);
                    let len = sectors * 512;
                    let data_len = match kind { T_IN | T_OUT => len, T_GET_ID => 20, _ => 0 };
                    header(&mut ram, HDR, kind, sector);
                    fill(&mut ram, DATA, 0x6000, seed);
                    ram.store(STATUS, 1, 0xff).unwrap();
                    let writable = kind != T_OUT;
                    let mut bufs = if split_header { vec![(HDR, 5, false), (HDR + 5, 11, false)] } else { vec![(HDR, 16, false)] };
                    // The data cut into pieces at random offsets, each piece 8 bytes after the previous one's end.
                    let mut cuts: std::vec::Vec<u64> = cuts.iter().map(|&c| u64::from(c) % (data_len + 1)).collect();
                    cuts.sort_unstable();
                    cuts.dedup();
                    let (mut from, mut addr) = (0, DATA);
                    let mut pieces = std::vec::Vec::new();
                    for end in cuts.into_iter().chain([data_len]) {
                        if end > from {
                            bufs.push((addr, (end - from) as u32, writable));
                            pieces.push((addr, end - from));
                            addr += end - from + 8;
                            from = end;
                        }
                    }
                    bufs.push((STATUS, 1, true));
                    let (status, used) = submit(&mut blks[vm], &mut ram, &bufs).expect("a framed request is answered");
                    let in_range = sector.checked_add(sectors).is_some_and(|end| end <= capacity);
                    match kind {
                        T_IN | T_OUT if !in_range => {
                            prop_assert_eq!(status, S_IOERR, "past the end: sector {} + {} of {}", sector, sectors, capacity);
                            prop_assert_eq!(used, 1);
                        }
                        T_IN => {
                            prop_assert_eq!(status, S_OK);
                            prop_assert_eq!(u64::from(used), len + 1);
                            let mut got = std::vec::Vec::new();
                            for (addr, n) in pieces {
                                got.extend_from_slice(ram.slice(addr, n).unwrap());
                            }
                            let at = sector as usize * 512;
                            prop_assert_eq!(&got[..], &model.disks[vm][at..at + len as usize]);
                        }
                        T_OUT => {
                            prop_assert_eq!(status, S_OK);
                            let at = sector as usize * 512;
                            let mut sent = std::vec::Vec::new();
                            for (addr, n) in pieces {
                                sent.extend_from_slice(ram.slice(addr, n).unwrap());
                            }
                            model.disks[vm][at..at + len as usize].copy_from_slice(&sent);
                        }
                        T_FLUSH => {
                            prop_assert_eq!(status, S_OK);
                            prop_assert!(!disk.borrow().unsynced, "a flush reaches the physical disk");
                        }
                        T_GET_ID => prop_assert_eq!(status, S_OK),
                        _ => prop_assert_eq!(status, crate::dev::virtio::blk::S_UNSUPP),
                    }
                }
                Request::Crafted { vm, kind, sector, descriptors, seed } => {
                    let vm = vm.min(blks.len() - 1);
                    let capacity = model.physical[vm].len() as u64;
                    header(&mut ram, HDR, kind, sector.resolve(capacity));
                    fill(&mut ram, DATA, 0x6000, seed);
                    for (index, &(addr, len, flags, next)) in descriptors.iter().enumerate() {
                        set_desc(&mut ram, index as u16, addr.resolve(), len, flags, next);
                    }
                    // Whatever the chain, the request may change only this VM's sectors.
                    let _ = run_chain(&mut blks[vm], &mut ram);
                    model.reload(vm, &disk.borrow().data);
                }
            }
            let expected = model.expected(&original);
            let data = &disk.borrow().data;
            if let Some(sector) = (0..data.len() / 512).find(|&s| data[s * 512..(s + 1) * 512] != expected[s * 512..(s + 1) * 512]) {
                prop_assert!(false, "physical sector {} differs from the model (layout {:?})", sector, layout);
            }
        }
    }
}

/// The hostile inputs the property `a_guest_never_reaches_outside_its_extents` tried (`target/isolation.txt`).
static A_GUEST_NEVER_REACHES_OUTSIDE_ITS_EXTENTS: crate::isolation::Tally =
    crate::isolation::Tally::escapes("hostile disk requests");

#[test]
fn a_guest_never_reaches_outside_its_extents() {
    A_GUEST_NEVER_REACHES_OUTSIDE_ITS_EXTENTS.run(a_guest_never_reaches_outside_its_extents_property);
}
