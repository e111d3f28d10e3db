//! A test driver that sets a virtio-blk device up through its registers exactly as a guest driver does and
//! lays its virtqueue out in a [`Ram`], then well-formed and malformed requests, resets, and property tests that
//! random register traffic and random rings never panic nor reach outside RAM.

use core::cell::RefCell;

use proptest::prelude::*;

use super::blk::{self, MemBackend, S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT};
use super::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use super::*;
use crate::dev::{DeviceMap, MmioDevice, MmioError};
use crate::mem::{Ram, RAM_BASE};

const RAM_SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;
const DISK: usize = 64 * 512;
const QSIZE: u16 = 8;

const DESC: u64 = RAM_BASE;
const AVAIL: u64 = RAM_BASE + 0x1000;
const USED: u64 = RAM_BASE + 0x2000;
/// Request headers (one per 0x20 bytes).
const HDR: u64 = RAM_BASE + 0x3000;
/// Status bytes.
const STATUS: u64 = RAM_BASE + 0x3800;
/// Data buffers.
const DATA: u64 = RAM_BASE + 0x4000;

type Dev = VirtioMmio<VirtioBlk<MemBackend<DISK>>>;

fn new_dev() -> Dev {
    VirtioMmio::new(VirtioBlk::with_serial(MemBackend::new(), b"trapeze-disk-0"))
}

/// Guest RAM with guard bytes on both sides that must never change.
struct Memory {
    backing: Vec<u8>,
}

impl Memory {
    fn new() -> Self {
        Self { backing: vec![0x5a; GUARD + RAM_SIZE + GUARD] }
    }
    fn ram(&mut self) -> Ram<'_> {
        Ram::new(RAM_BASE, &mut self.backing[GUARD..GUARD + RAM_SIZE])
    }
    fn guards_intact(&self) -> bool {
        self.backing[..GUARD].iter().chain(&self.backing[GUARD + RAM_SIZE..]).all(|&b| b == 0x5a)
    }
}

fn w(dev: &mut Dev, offset: u64, value: u32) {
    dev.write(offset, 4, u64::from(value)).expect("register write");
}

fn r(dev: &mut Dev, offset: u64) -> u32 {
    dev.read(offset, 4).expect("register read") as u32
}

/// The driver side: the avail index it has published and the used index it has consumed.
struct Driver {
    avail_idx: u16,
    used_idx: u16,
}

impl Driver {
    /// Device initialisation (virtio 1.x §3.1.1) with queue 0 of `size` entries; answers whether the device
    /// accepted FEATURES_OK.
    fn init_with(dev: &mut Dev, ram: &mut Ram, features: u64, size: u32) -> bool {
        assert_eq!(r(dev, 0x000), 0x7472_6976);
        assert_eq!(r(dev, 0x004), 2);
        assert_eq!(r(dev, 0x008), DEVICE_ID_BLOCK);
        w(dev, 0x070, 0);
        assert_eq!(r(dev, 0x070), 0);
        w(dev, 0x070, STATUS_ACKNOWLEDGE);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(dev, 0x014, 0);
        let low = r(dev, 0x010);
        w(dev, 0x014, 1);
        let high = r(dev, 0x010);
        let offered = u64::from(low) | (u64::from(high) << 32);
        assert_eq!(offered, dev.offered_features());
        w(dev, 0x024, 0);
        w(dev, 0x020, features as u32);
        w(dev, 0x024, 1);
        w(dev, 0x020, (features >> 32) as u32);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        if r(dev, 0x070) & STATUS_FEATURES_OK == 0 {
            return false;
        }
        // Zeroed rings, then queue 0.
        ram.slice_mut(DESC, 0x3000).unwrap().fill(0);
        w(dev, 0x030, 0);
        assert_eq!(r(dev, 0x044), 0, "queue not ready before setup");
        assert!(r(dev, 0x034) >= size);
        w(dev, 0x038, size);
        for (low, addr) in [(0x080, DESC), (0x090, AVAIL), (0x0a0, USED)] {
            w(dev, low, addr as u32);
            w(dev, low + 4, (addr >> 32) as u32);
        }
        w(dev, 0x044, 1);
        assert_eq!(r(dev, 0x044), 1);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        true
    }

    fn init(dev: &mut Dev, ram: &mut Ram) -> Self {
        assert!(Self::init_with(dev, ram, F_VERSION_1 | blk::F_FLUSH | blk::F_SEG_MAX, u32::from(QSIZE)));
        Self { avail_idx: 0, used_idx: 0 }
    }

    /// Writes descriptors `first..` as one chain of `(addr, len, writable)` buffers; answers the head.
    fn chain(ram: &mut Ram, first: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = first + i as u16;
            let more = i + 1 < bufs.len();
            let flags = if writable { DESC_F_WRITE } else { 0 } | if more { DESC_F_NEXT } else { 0 };
            set_desc(ram, index, addr, len, flags, if more { index + 1 } else { 0 });
        }
        first
    }

    /// Makes `head` available (without notifying).
    fn post(&mut self, ram: &mut Ram, head: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        ram.store(AVAIL + 4 + 2 * slot, 2, u64::from(head)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        ram.store(AVAIL + 2, 2, u64::from(self.avail_idx)).unwrap();
    }

    /// QueueNotify, then the VMM's part of the contract.
    fn kick(dev: &mut Dev, ram: &mut Ram) {
        w(dev, 0x050, 0);
        dev.process(ram);
    }

    /// Next used element `(id, len)`, if the device published one.
    fn take_used(&mut self, ram: &Ram) -> Option<(u32, u32)> {
        let idx = ram.load(USED + 2, 2).unwrap() as u16;
        if idx == self.used_idx {
            return None;
        }
        let slot = u64::from(self.used_idx % QSIZE);
        self.used_idx = self.used_idx.wrapping_add(1);
        let id = ram.load(USED + 4 + 8 * slot, 4).unwrap() as u32;
        let len = ram.load(USED + 8 + 8 * slot, 4).unwrap() as u32;
        Some((id, len))
    }

    /// Submits one request whose data buffers are `data`, waits for it; answers `(status, used len)`.
    fn request(
        &mut self,
        dev: &mut Dev,
        ram: &mut Ram,
        kind: u32,
        sector: u64,
        data: &[(u64, u32, bool)],
    ) -> (u8, u32) {
        header(ram, HDR, kind, sector);
        ram.store(STATUS, 1, 0xff).unwrap();
        let mut bufs = vec![(HDR, 16, false)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS, 1, true));
        let head = Self::chain(ram, 0, &bufs);
        self.post(ram, head);
        Self::kick(dev, ram);
        let (id, len) = self.take_used(ram).expect("request completed");
        assert_eq!(id, u32::from(head));
        assert!(dev.interrupt_pending());
        let pending = r(dev, 0x060);
        w(dev, 0x064, pending);
        assert!(!dev.interrupt_pending());
        (ram.load(STATUS, 1).unwrap() as u8, len)
    }
}

fn set_desc(ram: &mut Ram, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = DESC + 16 * u64::from(index);
    ram.store(at, 8, addr).unwrap();
    ram.store(at + 8, 4, u64::from(len)).unwrap();
    ram.store(at + 12, 2, u64::from(flags)).unwrap();
    ram.store(at + 14, 2, u64::from(next)).unwrap();
}

fn header(ram: &mut Ram, at: u64, kind: u32, sector: u64) {
    ram.store(at, 4, u64::from(kind)).unwrap();
    ram.store(at + 4, 4, 0).unwrap();
    ram.store(at + 8, 8, sector).unwrap();
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn needs_reset(dev: &Dev) -> bool {
    dev.status() & STATUS_DEVICE_NEEDS_RESET != 0
}

#[test]
fn identity_features_and_config_space() {
    let mut dev = new_dev();
    assert_eq!(r(&mut dev, 0x00c), 0x554d_4551, "QEMU's vendor ID, which guests written for QEMU check");
    dev.set_vendor_id(0x1234_5678);
    w(&mut dev, 0x070, 0);
    assert_eq!(r(&mut dev, 0x00c), 0x1234_5678, "the embedder's vendor ID, kept across a reset");
    let offered = dev.offered_features();
    assert_ne!(offered & F_VERSION_1, 0);
    assert_ne!(offered & blk::F_FLUSH, 0);
    assert_eq!(offered & (F_INDIRECT_DESC | F_EVENT_IDX | blk::F_RO), 0);
    w(&mut dev, 0x014, 7);
    assert_eq!(r(&mut dev, 0x010), 0, "feature words past 1 are zero");

    // capacity as two 32-bit halves, bytes and halfwords; blk_size; seg_max; past the structure reads 0.
    assert_eq!(r(&mut dev, 0x100), (DISK / 512) as u32);
    assert_eq!(r(&mut dev, 0x104), 0);
    assert_eq!(dev.read(0x100, 1), Ok(64));
    assert_eq!(dev.read(0x100, 2), Ok(64));
    assert_eq!(r(&mut dev, 0x114), 512);
    assert_eq!(r(&mut dev, 0x10c), u32::from(mmio::QUEUE_SIZE_MAX) - 2);
    assert_eq!(r(&mut dev, 0x1f0), 0);
    assert_eq!(r(&mut dev, 0x0fc), 0, "config generation");

    // Access rules.
    assert_eq!(dev.read(0x000, 8), Err(MmioError::Unsupported));
    assert_eq!(dev.read(0x000, 2), Err(MmioError::Unsupported));
    assert_eq!(dev.read(0x002, 4), Err(MmioError::Unsupported));
    assert_eq!(dev.read(0x101, 2), Err(MmioError::Unsupported));
    assert_eq!(dev.read(0x100, 8), Err(MmioError::Unsupported));
    assert_eq!(dev.read(0x028, 4), Err(MmioError::Unsupported), "legacy GuestPageSize is not decoded");
    assert_eq!(dev.read(0x050, 4), Err(MmioError::Unsupported), "QueueNotify is write-only");
    assert_eq!(dev.write(0x000, 4, 1), Err(MmioError::Unsupported), "MagicValue is read-only");
    assert_eq!(dev.read(0x1000, 4), Err(MmioError::Unsupported));
    assert_eq!(dev.read(u64::MAX - 3, 4), Err(MmioError::Unsupported));
    assert_eq!(dev.write(0x120, 4, 0xdead), Ok(()), "config writes are ignored");
    assert_eq!(r(&mut dev, 0x100), 64);
}

#[test]
fn features_ok_is_refused_for_unoffered_features_only() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    assert!(Driver::init_with(&mut dev, &mut ram, blk::F_FLUSH, 8), "VERSION_1 missing is accepted, as by QEMU");
    assert_eq!(dev.driver_features(), blk::F_FLUSH);
    assert!(!Driver::init_with(&mut dev, &mut ram, blk::F_RO, 8), "RO not offered, without VERSION_1 either");
    assert!(!Driver::init_with(&mut dev, &mut ram, F_VERSION_1 | F_INDIRECT_DESC, 8), "INDIRECT not offered");
    assert!(!Driver::init_with(&mut dev, &mut ram, F_VERSION_1 | blk::F_RO, 8), "RO not offered");
    assert!(Driver::init_with(&mut dev, &mut ram, F_VERSION_1, 8));
    assert_eq!(dev.driver_features(), F_VERSION_1);
    // Feature writes after FEATURES_OK do not change the negotiated set.
    w(&mut dev, 0x024, 0);
    w(&mut dev, 0x020, blk::F_FLUSH as u32);
    assert_eq!(dev.driver_features(), F_VERSION_1);
}

#[test]
fn write_read_round_trip_and_flush() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);

    let data = pattern(7, 1024);
    ram.slice_mut(DATA, 1024).unwrap().copy_from_slice(&data);
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 3, &[(DATA, 1024, false)]), (S_OK, 1));
    assert_eq!(&dev.device().backend().data[3 * 512..5 * 512], &data[..]);

    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 3, &[(DATA + 0x1000, 1024, true)]), (S_OK, 1025));
    assert_eq!(ram.slice(DATA + 0x1000, 1024).unwrap(), &data[..]);

    assert_eq!(drv.request(&mut dev, &mut ram, T_FLUSH, 0, &[]), (S_OK, 1));
    assert_eq!(dev.device().backend().flushes, 1);

    // The last sector is readable and writable.
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 63, &[(DATA, 512, false)]), (S_OK, 1));
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 63, &[(DATA + 0x2000, 512, true)]), (S_OK, 513));
    assert_eq!(ram.slice(DATA + 0x2000, 512).unwrap(), &data[..512]);

    // Many requests: the rings wrap around.
    for i in 0..3 * u64::from(QSIZE) {
        assert_eq!(drv.request(&mut dev, &mut ram, T_IN, i % 64, &[(DATA, 512, true)]), (S_OK, 513));
    }
    assert!(!needs_reset(&dev));
    assert!(mem.guards_intact());
}

/// A driver written against QEMU that never negotiates `VIRTIO_F_VERSION_1` on the modern transport: it
/// writes feature word 0 only (never selecting word 1), sets `FEATURES_OK`, sets queue 0 up through the
/// version-2 registers (`QueueNum`, `QueueDesc/Driver/Device` low and high, `QueueReady`) and then writes and
/// reads sectors. QEMU serves it, so must we.
#[test]
fn a_driver_without_version_1_writes_and_reads() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    assert_eq!(r(&mut dev, 0x000), 0x7472_6976);
    assert_eq!(r(&mut dev, 0x004), 2, "the modern transport");
    assert_eq!(r(&mut dev, 0x00c), 0x554d_4551);
    w(&mut dev, 0x070, 0);
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE);
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(&mut dev, 0x014, 0);
    let offered_low = r(&mut dev, 0x010);
    assert_ne!(offered_low & blk::F_FLUSH as u32, 0);
    // Feature word 0 only: the driver takes FLUSH and nothing else, and never writes word 1.
    w(&mut dev, 0x024, 0);
    w(&mut dev, 0x020, offered_low & blk::F_FLUSH as u32);
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    assert_ne!(r(&mut dev, 0x070) & STATUS_FEATURES_OK, 0, "FEATURES_OK is accepted without VERSION_1");
    assert_eq!(dev.driver_features() & F_VERSION_1, 0);
    ram.slice_mut(DESC, 0x3000).unwrap().fill(0);
    w(&mut dev, 0x030, 0);
    assert!(r(&mut dev, 0x034) >= u32::from(QSIZE));
    w(&mut dev, 0x038, u32::from(QSIZE));
    for (low, addr) in [(0x080, DESC), (0x090, AVAIL), (0x0a0, USED)] {
        w(&mut dev, low, addr as u32);
        w(&mut dev, low + 4, (addr >> 32) as u32);
    }
    w(&mut dev, 0x044, 1);
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    assert_eq!(r(&mut dev, 0x070) & STATUS_DEVICE_NEEDS_RESET, 0);

    let mut drv = Driver { avail_idx: 0, used_idx: 0 };
    let data = pattern(42, 1024);
    ram.slice_mut(DATA, 1024).unwrap().copy_from_slice(&data);
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 5, &[(DATA, 1024, false)]), (S_OK, 1));
    assert_eq!(&dev.device().backend().data[5 * 512..7 * 512], &data[..]);
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 5, &[(DATA + 0x1000, 1024, true)]), (S_OK, 1025));
    assert_eq!(ram.slice(DATA + 0x1000, 1024).unwrap(), &data[..]);
    assert_eq!(drv.request(&mut dev, &mut ram, T_FLUSH, 0, &[]), (S_OK, 1));
    assert!(!needs_reset(&dev));
    assert!(mem.guards_intact());
}

/// The line is raised for each notification (also while `InterruptStatus` is already nonzero), re-evaluated
/// by an acknowledgement and lowered by a reset, as QEMU's `virtio-mmio` drives it.
#[test]
fn the_line_is_raised_per_notification() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    dev.take_irq_update();
    for expected_status in [INT_USED_BUFFER, INT_USED_BUFFER] {
        header(&mut ram, HDR, T_FLUSH, 0);
        let head = Driver::chain(&mut ram, 0, &[(HDR, 16, false), (STATUS, 1, true)]);
        drv.post(&mut ram, head);
        Driver::kick(&mut dev, &mut ram);
        assert_eq!(dev.take_irq_update(), Some(true), "each used buffer is a new request");
        assert_eq!(dev.interrupt_status(), expected_status);
        assert!(drv.take_used(&ram).is_some());
    }
    w(&mut dev, 0x064, 0);
    assert_eq!(dev.take_irq_update(), Some(true), "an acknowledgement leaving bits set raises again");
    w(&mut dev, 0x064, INT_USED_BUFFER);
    assert_eq!(dev.take_irq_update(), Some(false));
    assert_eq!(dev.take_irq_update(), None);
    w(&mut dev, 0x070, 0);
    assert_eq!(dev.take_irq_update(), Some(false), "reset");
}

#[test]
fn any_framing_of_header_data_and_status() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    let data = pattern(99, 1536);

    // OUT: header and the first 300 data bytes in one descriptor, the rest in pieces cutting sectors apart.
    let buf = DATA;
    header(&mut ram, buf, T_OUT, 10);
    ram.slice_mut(buf + 16, 300).unwrap().copy_from_slice(&data[..300]);
    ram.slice_mut(DATA + 0x1000, 700).unwrap().copy_from_slice(&data[300..1000]);
    ram.slice_mut(DATA + 0x2000, 536).unwrap().copy_from_slice(&data[1000..]);
    let head = Driver::chain(
        &mut ram,
        0,
        &[(buf, 316, false), (DATA + 0x1000, 700, false), (DATA + 0x2000, 536, false), (STATUS, 1, true)],
    );
    drv.post(&mut ram, head);
    Driver::kick(&mut dev, &mut ram);
    assert_eq!(drv.take_used(&ram), Some((0, 1)));
    assert_eq!(ram.load(STATUS, 1), Some(u64::from(S_OK)));
    assert_eq!(&dev.device().backend().data[10 * 512..13 * 512], &data[..]);

    // IN: the header split in two, data in odd pieces, the status byte sharing the last descriptor.
    header(&mut ram, HDR, T_IN, 10);
    ram.slice_mut(DATA + 0x3000, 0x1000).unwrap().fill(0);
    let head = Driver::chain(
        &mut ram,
        2,
        &[(HDR, 5, false), (HDR + 5, 11, false), (DATA + 0x3000, 100, true), (DATA + 0x3100, 1437, true)],
    );
    drv.post(&mut ram, head);
    Driver::kick(&mut dev, &mut ram);
    assert_eq!(drv.take_used(&ram), Some((2, 1537)));
    assert_eq!(ram.slice(DATA + 0x3000, 100).unwrap(), &data[..100]);
    assert_eq!(ram.slice(DATA + 0x3100, 1436).unwrap(), &data[100..]);
    assert_eq!(ram.load(DATA + 0x3100 + 1436, 1), Some(u64::from(S_OK)), "status is the last byte");
}

#[test]
fn get_id_and_unsupported_requests() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);

    ram.slice_mut(DATA, 32).unwrap().fill(0xee);
    assert_eq!(drv.request(&mut dev, &mut ram, T_GET_ID, 0, &[(DATA, 20, true)]), (S_OK, 21));
    assert_eq!(ram.slice(DATA, 20).unwrap(), b"trapeze-disk-0\0\0\0\0\0\0");
    assert_eq!(ram.load(DATA + 20, 1), Some(0xee));

    ram.slice_mut(DATA, 32).unwrap().fill(0xee);
    assert_eq!(drv.request(&mut dev, &mut ram, T_GET_ID, 0, &[(DATA, 4, true)]), (S_OK, 5), "short buffer");
    assert_eq!(ram.slice(DATA, 5).unwrap(), b"trap\xee");

    for kind in [2, 3, 5, 11, 13, 0xffff_ffff] {
        assert_eq!(drv.request(&mut dev, &mut ram, kind, 0, &[]), (S_UNSUPP, 1), "type {kind}");
    }
    assert!(!needs_reset(&dev));
}

#[test]
fn bad_ranges_lengths_and_read_only() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    // MemBackend asserts the device never hands it a bad range, so these also check no backend call is made.
    for (sector, len) in [(64, 512), (63, 1024), (u64::MAX, 512), (u64::MAX / 512 + 1, 512), (0, 511), (0, 513)] {
        assert_eq!(drv.request(&mut dev, &mut ram, T_IN, sector, &[(DATA, len, true)]), (S_IOERR, 1));
        assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, sector, &[(DATA, len, false)]), (S_IOERR, 1));
    }
    // Data on the wrong side of the request.
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 0, &[(DATA, 512, false)]), (S_IOERR, 1));
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 0, &[(DATA, 512, true)]), (S_IOERR, 1));
    assert_eq!(drv.request(&mut dev, &mut ram, T_FLUSH, 0, &[(DATA, 512, true)]), (S_IOERR, 1));
    assert!(dev.device().backend().data.iter().all(|&b| b == 0));

    // Backend failure.
    dev.device_mut().backend_mut().failing = true;
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 0, &[(DATA, 512, true)]), (S_IOERR, 1));
    assert_eq!(drv.request(&mut dev, &mut ram, T_FLUSH, 0, &[]), (S_IOERR, 1));
    assert!(!needs_reset(&dev));

    // Read-only: RO offered, writes refused before the backend sees them, reads fine.
    let mut backend = MemBackend::<DISK>::new();
    backend.read_only = true;
    backend.data[..512].fill(0x42);
    let mut dev = VirtioMmio::new(VirtioBlk::new(backend));
    assert_ne!(dev.offered_features() & blk::F_RO, 0);
    assert!(Driver::init_with(&mut dev, &mut ram, F_VERSION_1 | blk::F_RO, u32::from(QSIZE)));
    let mut drv = Driver { avail_idx: 0, used_idx: 0 };
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 0, &[(DATA, 512, false)]), (S_IOERR, 1));
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 0, &[(DATA, 512, true)]), (S_OK, 513));
    assert!(ram.slice(DATA, 512).unwrap().iter().all(|&b| b == 0x42));
}

#[test]
fn defective_chains_with_a_status_byte_fail_with_ioerr() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    let end = RAM_BASE + RAM_SIZE as u64;

    let cases: &[&[(u64, u32, bool)]] = &[
        // Data outside RAM: past the end, straddling the end, below RAM, wrapping the address space.
        &[(end, 512, true)],
        &[(end - 256, 512, true)],
        &[(RAM_BASE - 512, 512, true)],
        &[(u64::MAX - 100, 512, true)],
        &[(0, 512, true)],
    ];
    for data in cases {
        assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 0, data), (S_IOERR, 1), "{data:x?}");
        assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 0, &[(data[0].0, 512, false)]), (S_IOERR, 1));
    }

    // A write whose second half lies outside RAM: refused before the backend sees the first half.
    ram.slice_mut(DATA, 512).unwrap().fill(0x33);
    let split = [(DATA, 512, false), (end - 100, 512, false)];
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 0, &split), (S_IOERR, 1));
    assert!(dev.device().backend().data.iter().all(|&b| b == 0));

    let run = |drv: &mut Driver, ram: &mut Ram, dev: &mut Dev, bufs: &[(u64, u32, bool)], flags: &[(u16, u16)]| {
        ram.store(STATUS, 1, 0xff).unwrap();
        let head = Driver::chain(ram, 0, bufs);
        for &(index, extra) in flags {
            let at = DESC + 16 * u64::from(index) + 12;
            let old = ram.load(at, 2).unwrap();
            ram.store(at, 2, old | u64::from(extra)).unwrap();
        }
        drv.post(ram, head);
        Driver::kick(dev, ram);
        let used = drv.take_used(ram);
        (used, ram.load(STATUS, 1).unwrap() as u8)
    };
    header(&mut ram, HDR, T_IN, 0);
    // Too-short header.
    let short = [(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &short, &[]), (Some((0, 1)), S_IOERR));
    // Header marked device-writable.
    let writable_header = [(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &writable_header, &[]), (Some((0, 1)), S_IOERR));
    // A readable descriptor after a writable one.
    let mixed = [(HDR, 16, false), (DATA, 512, true), (DATA + 512, 16, false), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &mixed, &[]), (Some((0, 1)), S_IOERR));
    // The same with lengths that would otherwise frame a valid read (16 readable, 512 + 1 writable).
    let mixed = [(HDR, 8, false), (DATA, 256, true), (HDR + 8, 8, false), (DATA + 256, 256, true), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &mixed, &[]), (Some((0, 1)), S_IOERR));
    // INDIRECT, not offered.
    let normal = [(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &normal, &[(1, DESC_F_INDIRECT)]), (Some((0, 1)), S_IOERR));
    // A zero-length descriptor anywhere is harmless, even at a nonsense address.
    let empty = [(HDR, 16, false), (u64::MAX, 0, true), (DATA, 512, true), (STATUS, 1, true)];
    assert_eq!(run(&mut drv, &mut ram, &mut dev, &empty, &[]), (Some((0, 513)), S_OK));
    assert!(!needs_reset(&dev));
    assert!(mem.guards_intact());
}

/// Sets up a device and runs `corrupt` on RAM before posting the normal 3-descriptor read at head 0; the
/// device must stop the queue with DEVICE_NEEDS_RESET and publish nothing.
fn expect_needs_reset(corrupt: impl FnOnce(&mut Ram, &mut Driver)) {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    header(&mut ram, HDR, T_IN, 0);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    corrupt(&mut ram, &mut drv);
    Driver::kick(&mut dev, &mut ram);
    assert!(needs_reset(&dev));
    assert_eq!(dev.interrupt_status() & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
    assert_eq!(drv.take_used(&ram), None);
    assert!(!dev.notify_pending());

    // The queue stays stopped: a good request is not processed until the driver resets the device.
    w(&mut dev, 0x064, 3);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    drv.post(&mut ram, 0);
    Driver::kick(&mut dev, &mut ram);
    assert_eq!(drv.take_used(&ram), None);
    assert!(!dev.interrupt_pending());
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    assert!(needs_reset(&dev), "the driver cannot clear DEVICE_NEEDS_RESET");

    let mut drv = Driver::init(&mut dev, &mut ram);
    assert!(!needs_reset(&dev));
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 0, &[(DATA, 512, true)]), (S_OK, 513));
    assert!(mem.guards_intact());
}

#[test]
fn unanswerable_chains_and_rings_set_device_needs_reset() {
    // A loop: 0 -> 1 -> 2 -> 0.
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 2, STATUS, 1, DESC_F_WRITE | DESC_F_NEXT, 0);
        drv.post(ram, 0);
    });
    // A self-loop at the head.
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 0, HDR, 16, DESC_F_NEXT, 0);
        drv.post(ram, 0);
    });
    // `next` outside the table.
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 1, DATA, 512, DESC_F_WRITE | DESC_F_NEXT, QSIZE);
        drv.post(ram, 0);
    });
    // Status descriptor missing (chain ends with the data, which is readable) or readable.
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 1, DATA, 512, 0, 0);
        drv.post(ram, 0);
    });
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 2, STATUS, 1, 0, 0);
        drv.post(ram, 0);
    });
    // Status byte outside RAM, or zero-length.
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 2, RAM_BASE + RAM_SIZE as u64, 1, DESC_F_WRITE, 0);
        drv.post(ram, 0);
    });
    expect_needs_reset(|ram, drv| {
        set_desc(ram, 2, STATUS, 0, DESC_F_WRITE, 0);
        drv.post(ram, 0);
    });
    // Head index outside the table.
    expect_needs_reset(|ram, drv| drv.post(ram, QSIZE));
    // The driver claims more available entries than the queue holds.
    expect_needs_reset(|ram, _| {
        ram.store(AVAIL + 2, 2, u64::from(QSIZE) + 1).unwrap();
    });
}

#[test]
fn rings_outside_ram_or_bad_queue_size_set_device_needs_reset() {
    let end = RAM_BASE + RAM_SIZE as u64;
    for (size, desc, avail, used) in [
        (u32::from(QSIZE), end - 64, AVAIL, USED),
        (u32::from(QSIZE), DESC, end - 2, USED),
        (u32::from(QSIZE), DESC, AVAIL, end - 8),
        (u32::from(QSIZE), DESC, AVAIL, u64::MAX - 1),
        (3, DESC, AVAIL, USED),
        (512, DESC, AVAIL, USED),
        (0, DESC, AVAIL, USED),
    ] {
        let mut mem = Memory::new();
        let mut ram = mem.ram();
        let mut dev = new_dev();
        let mut drv = Driver::init(&mut dev, &mut ram);
        header(&mut ram, HDR, T_IN, 0);
        Driver::chain(&mut ram, 0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        drv.post(&mut ram, 0);
        // Redo the queue setup with the bad parameters.
        w(&mut dev, 0x044, 0);
        w(&mut dev, 0x038, size);
        for (low, addr) in [(0x080, desc), (0x090, avail), (0x0a0, used)] {
            w(&mut dev, low, addr as u32);
            w(&mut dev, low + 4, (addr >> 32) as u32);
        }
        w(&mut dev, 0x044, 1);
        if avail != AVAIL || desc != DESC {
            // The ring contents at the new place are whatever RAM holds; make them claim one entry.
            let _ = ram.store(avail + 2, 2, 1);
        }
        Driver::kick(&mut dev, &mut ram);
        assert!(needs_reset(&dev), "size {size} desc {desc:#x} avail {avail:#x} used {used:#x}");
        assert!(mem.guards_intact());
    }
}

#[test]
fn reset_mid_operation_drops_the_pending_work() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);
    ram.slice_mut(DATA, 512).unwrap().fill(0x77);
    header(&mut ram, HDR, T_OUT, 5);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    drv.post(&mut ram, 0);
    w(&mut dev, 0x050, 0);
    assert!(dev.notify_pending());
    // The driver resets the device before the VMM got to process the notification.
    w(&mut dev, 0x070, 0);
    assert!(!dev.notify_pending());
    dev.process(&mut ram);
    assert_eq!(drv.take_used(&ram), None);
    assert!(dev.device().backend().data.iter().all(|&b| b == 0));
    assert_eq!(dev.queue(0).map(|q| (q.ready, q.size, q.desc)), Some((false, 0, 0)));
    assert_eq!((dev.status(), dev.interrupt_status()), (0, 0));

    // A reset after completion but before the interrupt is acknowledged drops the interrupt.
    let mut drv = Driver::init(&mut dev, &mut ram);
    assert_eq!(drv.request(&mut dev, &mut ram, T_OUT, 5, &[(DATA, 512, false)]), (S_OK, 1));
    drv.post(&mut ram, 0);
    Driver::kick(&mut dev, &mut ram);
    assert!(dev.interrupt_pending());
    w(&mut dev, 0x070, 0);
    assert!(!dev.interrupt_pending());

    // Re-initialised, the rings start over from index 0.
    let mut drv = Driver::init(&mut dev, &mut ram);
    assert_eq!(drv.request(&mut dev, &mut ram, T_IN, 5, &[(DATA + 0x1000, 512, true)]), (S_OK, 513));
    assert!(ram.slice(DATA + 0x1000, 512).unwrap().iter().all(|&b| b == 0x77));
}

#[test]
fn interrupt_suppression_early_notify_and_queue_config_lock() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let mut dev = new_dev();
    let mut drv = Driver::init(&mut dev, &mut ram);

    // VIRTQ_AVAIL_F_NO_INTERRUPT: buffers are used but the line stays low.
    ram.store(AVAIL, 2, 1).unwrap();
    header(&mut ram, HDR, T_FLUSH, 0);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (STATUS, 1, true)]);
    drv.post(&mut ram, 0);
    Driver::kick(&mut dev, &mut ram);
    assert_eq!(drv.take_used(&ram), Some((0, 1)));
    assert!(!dev.interrupt_pending());
    ram.store(AVAIL, 2, 0).unwrap();

    // Queue configuration cannot change while the queue is ready.
    w(&mut dev, 0x038, 2);
    w(&mut dev, 0x080, 0x1234);
    assert_eq!(dev.queue(0).map(|q| (q.size, q.desc)), Some((QSIZE, DESC)));
    // Queue registers of a queue the device does not have.
    w(&mut dev, 0x030, 1);
    assert_eq!(r(&mut dev, 0x034), 0);
    assert_eq!(r(&mut dev, 0x044), 0);
    w(&mut dev, 0x044, 1);
    w(&mut dev, 0x050, 5);
    assert!(!dev.notify_pending());

    // A notification before DRIVER_OK is kept until DRIVER_OK.
    let mut dev = new_dev();
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(&mut dev, 0x024, 1);
    w(&mut dev, 0x020, 1);
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    ram.slice_mut(DESC, 0x3000).unwrap().fill(0);
    w(&mut dev, 0x038, u32::from(QSIZE));
    for (low, addr) in [(0x080, DESC), (0x090, AVAIL), (0x0a0, USED)] {
        w(&mut dev, low, addr as u32);
    }
    w(&mut dev, 0x044, 1);
    let mut drv = Driver { avail_idx: 0, used_idx: 0 };
    header(&mut ram, HDR, T_FLUSH, 0);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (STATUS, 1, true)]);
    drv.post(&mut ram, 0);
    w(&mut dev, 0x050, 0);
    dev.process(&mut ram);
    assert_eq!(drv.take_used(&ram), None, "not before DRIVER_OK");
    w(&mut dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    assert!(dev.notify_pending());
    dev.process(&mut ram);
    assert_eq!(drv.take_used(&ram), Some((0, 1)));
}

#[test]
fn shared_through_a_refcell_and_a_device_map() {
    let mut mem = Memory::new();
    let mut ram = mem.ram();
    let cell = RefCell::new(new_dev());
    let mut handle = &cell;
    let mut map: DeviceMap = DeviceMap::new();
    map.map(mmio::VIRT_BASE, mmio::VIRT_STRIDE, &mut handle).unwrap();
    assert_eq!(map.read(mmio::VIRT_BASE, 4), Ok(u64::from(mmio::MAGIC)));
    let mut drv = Driver::init(&mut cell.borrow_mut(), &mut ram);
    header(&mut ram, HDR, T_GET_ID, 0);
    Driver::chain(&mut ram, 0, &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    drv.post(&mut ram, 0);
    assert_eq!(map.write(mmio::VIRT_BASE + 0x50, 4, 0), Ok(None));
    assert!(cell.borrow().notify_pending());
    cell.borrow_mut().process(&mut ram);
    assert_eq!(drv.take_used(&ram), Some((0, 21)));
    assert!(cell.borrow().interrupt_pending());
}

/// A register access: offset (mostly real registers), width, value.
fn access() -> impl Strategy<Value = (u64, u8, u64)> {
    let offset = prop_oneof![
        4 => (0u64..0x40).prop_map(|i| i * 4),
        1 => 0u64..0x300,
        1 => any::<u64>(),
    ];
    let size = prop_oneof![6 => Just(4u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(8u8), 1 => any::<u8>()];
    let value = prop_oneof![
        2 => 0u64..16,
        1 => Just(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK).prop_map(u64::from),
        1 => (0u64..RAM_SIZE as u64).prop_map(|o| RAM_BASE + o),
        1 => any::<u64>(),
    ];
    (offset, size, value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random register traffic, processing after each access, over RAM full of random bytes.
    fn random_register_traffic_never_panics_property(
        fill in proptest::collection::vec(any::<u8>(), 0x3000),
        accesses in proptest::collection::vec((access(), any::<bool>()), 1..200),
    ) {
        RANDOM_REGISTER_TRAFFIC_NEVER_PANICS.add(1);
        let mut mem = Memory::new();
        let mut ram = mem.ram();
        ram.slice_mut(RAM_BASE, 0x3000).unwrap().copy_from_slice(&fill);
        let mut dev = new_dev();
        for ((offset, size, value), is_write) in accesses {
            if is_write {
                let _ = dev.write(offset, size, value);
                dev.process(&mut ram);
            } else {
                let _ = dev.read(offset, size);
            }
            let _ = dev.interrupt_pending();
        }
        prop_assert!(mem.guards_intact());
    }

    /// A properly set-up device fed random descriptor tables, random available rings and random headers.
    fn random_descriptor_tables_never_panic_property(
        descs in proptest::collection::vec(
            (
                prop_oneof![
                    3 => (0u64..0x6000).prop_map(|o| RAM_BASE + o),
                    1 => (RAM_SIZE as u64 - 600..RAM_SIZE as u64 + 600).prop_map(|o| RAM_BASE + o),
                    1 => any::<u64>(),
                ],
                prop_oneof![3 => 0u32..1100, 1 => any::<u32>()],
                0u16..8,
                prop_oneof![3 => 0u16..QSIZE, 1 => any::<u16>()],
            ),
            QSIZE as usize,
        ),
        heads in proptest::collection::vec(prop_oneof![4 => 0u16..QSIZE, 1 => any::<u16>()], 1..12),
        kinds in proptest::collection::vec((prop_oneof![0u32..2, Just(4), Just(8), any::<u32>()], 0u64..70), 4),
        avail_jump in prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
        no_interrupt in any::<bool>(),
    ) {
        RANDOM_DESCRIPTOR_TABLES_NEVER_PANIC.add(1);
        let mut mem = Memory::new();
        let mut ram = mem.ram();
        let mut dev = new_dev();
        let mut drv = Driver::init(&mut dev, &mut ram);
        for (i, &(kind, sector)) in kinds.iter().enumerate() {
            header(&mut ram, RAM_BASE + 0x10 * i as u64, kind, sector);
        }
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            set_desc(&mut ram, i as u16, addr, len, flags, next);
        }
        ram.store(AVAIL, 2, u64::from(no_interrupt)).unwrap();
        for chunk in heads.chunks(3) {
            for &head in chunk {
                drv.post(&mut ram, head);
            }
            if let Some(idx) = avail_jump {
                ram.store(AVAIL + 2, 2, u64::from(idx)).unwrap();
            }
            Driver::kick(&mut dev, &mut ram);
            while drv.take_used(&ram).is_some() {}
            w(&mut dev, 0x064, 3);
        }
        // Whatever happened, a reset and a fresh setup give a working device.
        let mut drv = Driver::init(&mut dev, &mut ram);
        prop_assert_eq!(drv.request(&mut dev, &mut ram, T_FLUSH, 0, &[]), (S_OK, 1));
        prop_assert!(mem.guards_intact());
    }
}

/// The hostile inputs the property `random_descriptor_tables_never_panic` tried (`target/isolation.txt`).
static RANDOM_DESCRIPTOR_TABLES_NEVER_PANIC: crate::isolation::Tally =
    crate::isolation::Tally::panics("hostile virtio descriptors");

#[test]
fn random_descriptor_tables_never_panic() {
    RANDOM_DESCRIPTOR_TABLES_NEVER_PANIC.run(random_descriptor_tables_never_panic_property);
}

/// The hostile inputs the property `random_register_traffic_never_panics` tried (`target/isolation.txt`).
static RANDOM_REGISTER_TRAFFIC_NEVER_PANICS: crate::isolation::Tally =
    crate::isolation::Tally::panics("hostile virtio descriptors");

#[test]
fn random_register_traffic_never_panics() {
    RANDOM_REGISTER_TRAFFIC_NEVER_PANICS.run(random_register_traffic_never_panics_property);
}
