//! A test driver for virtio-net: sets the NIC up through its registers as a guest driver does, with both
//! queues in a [`Ram`], against a fake backend; then transmit, receive, waiting frames, hostile chains, and a
//! property test that random chains never panic, never write outside RAM and keep the counters adding up.

use proptest::prelude::*;

use super::net::fake::FakeNet;
use super::net::{self, FRAME_MAX, HEADER_LEN};
use super::queue::{DESC_F_NEXT, DESC_F_WRITE};
use super::*;
use crate::dev::MmioDevice;
use crate::mem::{Ram, RAM_BASE};

const RAM_SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;
const QSIZE: u16 = 8;
const MAC: net::Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Descriptor table, available ring and used ring of queue `q`.
fn rings(q: usize) -> (u64, u64, u64) {
    let base = RAM_BASE + 0x3000 * q as u64;
    (base, base + 0x1000, base + 0x2000)
}
/// Buffers.
const DATA: u64 = RAM_BASE + 0x8000;

type Dev = VirtioMmio<VirtioNet<FakeNet>>;

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

/// The driver side of both queues.
struct Driver {
    avail_idx: [u16; 2],
    used_idx: [u16; 2],
}

impl Driver {
    fn init(dev: &mut Dev, ram: &mut Ram) -> Self {
        assert_eq!(r(dev, 0x008), net::DEVICE_ID_NET);
        w(dev, 0x070, 0);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let features = F_VERSION_1 | net::F_MAC | net::F_STATUS;
        assert_eq!(dev.offered_features() & net::F_MRG_RXBUF, 0, "mergeable buffers are not offered");
        w(dev, 0x024, 0);
        w(dev, 0x020, features as u32);
        w(dev, 0x024, 1);
        w(dev, 0x020, (features >> 32) as u32);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        assert_ne!(r(dev, 0x070) & STATUS_FEATURES_OK, 0);
        ram.slice_mut(RAM_BASE, 0x6000).unwrap().fill(0);
        for q in 0..2 {
            let (desc, avail, used) = rings(q);
            w(dev, 0x030, q as u32);
            w(dev, 0x038, u32::from(QSIZE));
            for (low, addr) in [(0x080, desc), (0x090, avail), (0x0a0, used)] {
                w(dev, low, addr as u32);
                w(dev, low + 4, (addr >> 32) as u32);
            }
            w(dev, 0x044, 1);
        }
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        Self { avail_idx: [0; 2], used_idx: [0; 2] }
    }

    /// Writes descriptors `first..` of queue `q` as one chain of `(addr, len, writable)`; answers the head.
    fn chain(ram: &mut Ram, q: usize, first: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        let (table, _, _) = rings(q);
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = first + i as u16;
            let more = i + 1 < bufs.len();
            let flags = if writable { DESC_F_WRITE } else { 0 } | if more { DESC_F_NEXT } else { 0 };
            let at = table + 16 * u64::from(index);
            ram.store(at, 8, addr).unwrap();
            ram.store(at + 8, 4, u64::from(len)).unwrap();
            ram.store(at + 12, 2, u64::from(flags)).unwrap();
            ram.store(at + 14, 2, u64::from(if more { index + 1 } else { 0 })).unwrap();
        }
        first
    }

    /// Makes `head` available in queue `q` and notifies.
    fn post(&mut self, dev: &mut Dev, ram: &mut Ram, q: usize, head: u16) {
        let (_, avail, _) = rings(q);
        let slot = u64::from(self.avail_idx[q] % QSIZE);
        ram.store(avail + 4 + 2 * slot, 2, u64::from(head)).unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        ram.store(avail + 2, 2, u64::from(self.avail_idx[q])).unwrap();
        w(dev, 0x050, q as u32);
        dev.process(ram);
    }

    fn take_used(&mut self, ram: &Ram, q: usize) -> Option<(u32, u32)> {
        let (_, _, used) = rings(q);
        let idx = ram.load(used + 2, 2).unwrap() as u16;
        if idx == self.used_idx[q] {
            return None;
        }
        let slot = u64::from(self.used_idx[q] % QSIZE);
        self.used_idx[q] = self.used_idx[q].wrapping_add(1);
        let id = ram.load(used + 4 + 8 * slot, 4).unwrap() as u32;
        let len = ram.load(used + 8 + 8 * slot, 4).unwrap() as u32;
        Some((id, len))
    }
}

fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn setup() -> (Dev, Memory) {
    (VirtioMmio::new(VirtioNet::new(FakeNet::default(), MAC)), Memory::new())
}

#[test]
fn config_space_holds_the_mac_and_link_status() {
    let (mut dev, _) = setup();
    for (i, byte) in MAC.iter().enumerate() {
        assert_eq!(dev.read(0x100 + i as u64, 1).unwrap(), u64::from(*byte));
    }
    assert_eq!(dev.read(0x106, 2).unwrap(), u64::from(net::S_LINK_UP));
    dev.device_mut().backend_mut().link_down = true;
    assert_eq!(dev.read(0x106, 2).unwrap(), 0);
    assert_eq!(dev.offered_features() & (net::F_MAC | net::F_STATUS), net::F_MAC | net::F_STATUS);
}

#[test]
fn transmit_strips_the_header_in_any_framing() {
    let (mut dev, mut memory) = setup();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram);
    let payload = frame(1, 60);
    // Header and frame in one buffer.
    ram.slice_mut(DATA, HEADER_LEN as u64).unwrap().fill(0);
    ram.slice_mut(DATA + HEADER_LEN as u64, 60).unwrap().copy_from_slice(&payload);
    let head = Driver::chain(&mut ram, 1, 0, &[(DATA, (HEADER_LEN + 60) as u32, false)]);
    driver.post(&mut dev, &mut ram, 1, head);
    // Header split across two buffers, the frame in a third.
    let head = Driver::chain(&mut ram, 1, 1, &[(DATA, 5, false), (DATA + 5, 7, false), (DATA + 12, 60, false)]);
    driver.post(&mut dev, &mut ram, 1, head);
    assert_eq!(driver.take_used(&ram, 1), Some((0, 0)));
    assert_eq!(driver.take_used(&ram, 1), Some((1, 0)));
    assert_eq!(dev.device().backend().sent, vec![payload.clone(), payload]);
    assert_eq!(dev.device().stats().tx_frames, 2);
    assert!(dev.interrupt_pending());
}

#[test]
fn receive_fills_a_posted_buffer_with_a_header() {
    let (mut dev, mut memory) = setup();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram);
    let head = Driver::chain(&mut ram, 0, 0, &[(DATA, (HEADER_LEN + FRAME_MAX) as u32, true)]);
    driver.post(&mut dev, &mut ram, 0, head);
    assert_eq!(driver.take_used(&ram, 0), None, "no frame: the buffer stays available");
    let payload = frame(7, 98);
    dev.device_mut().backend_mut().incoming.push_back(payload.clone());
    dev.poll_outside(&mut ram);
    assert_eq!(driver.take_used(&ram, 0), Some((0, (HEADER_LEN + 98) as u32)));
    let mut header = [0u8; HEADER_LEN];
    ram.read_bytes(DATA, &mut header).unwrap();
    assert_eq!(header, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "no offloads, num_buffers 1");
    assert_eq!(ram.slice(DATA + HEADER_LEN as u64, 98).unwrap(), &payload[..]);
    assert!(dev.interrupt_pending());
    assert_eq!(dev.device().stats().rx_frames, 1);
}

#[test]
fn a_frame_waits_for_a_buffer() {
    let (mut dev, mut memory) = setup();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram);
    dev.device_mut().backend_mut().incoming.extend([frame(1, 64), frame(2, 70)]);
    dev.poll_outside(&mut ram);
    dev.poll_outside(&mut ram);
    assert!(dev.device().rx_waiting());
    assert_eq!(dev.device().backend().incoming.len(), 1, "only one frame is taken from the backend");
    // Split buffer: header in one descriptor, the frame in another (any layout).
    let head = Driver::chain(&mut ram, 0, 0, &[(DATA, HEADER_LEN as u32, true), (DATA + 0x100, 1514, true)]);
    driver.post(&mut dev, &mut ram, 0, head);
    assert_eq!(driver.take_used(&ram, 0), Some((0, (HEADER_LEN + 64) as u32)));
    assert_eq!(ram.slice(DATA + 0x100, 64).unwrap(), &frame(1, 64)[..]);
    // The second frame was taken at once and waits for the next buffer.
    assert!(dev.device().rx_waiting());
    let head = Driver::chain(&mut ram, 0, 2, &[(DATA + 0x1000, 1526, true)]);
    driver.post(&mut dev, &mut ram, 0, head);
    assert_eq!(driver.take_used(&ram, 0), Some((2, (HEADER_LEN + 70) as u32)));
    assert!(!dev.device().rx_waiting());
}

#[test]
fn hostile_and_oversize_chains_are_dropped_and_counted() {
    let (mut dev, mut memory) = setup();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram);
    let end = RAM_BASE + RAM_SIZE as u64;
    ram.slice_mut(DATA, 0x1000).unwrap().fill(0);
    // Transmit: too long, too short, writable, outside RAM, asking for GSO.
    let cases: [&[(u64, u32, bool)]; 5] = [
        &[(DATA, (HEADER_LEN + FRAME_MAX + 1) as u32, false)],
        &[(DATA, (HEADER_LEN + 13) as u32, false)],
        &[(DATA, HEADER_LEN as u32, false), (DATA + 0x100, 60, true)],
        &[(end - 8, 80, false)],
        &[(DATA + 0x800, (HEADER_LEN + 60) as u32, false)],
    ];
    ram.store(DATA + 0x801, 1, 1).unwrap(); // gso_type TCPV4
    for (i, case) in cases.iter().enumerate() {
        let head = Driver::chain(&mut ram, 1, 0, case);
        driver.post(&mut dev, &mut ram, 1, head);
        assert_eq!(driver.take_used(&ram, 1), Some((head.into(), 0)), "case {i} is given back");
    }
    assert!(dev.device().backend().sent.is_empty());
    assert_eq!(dev.device().stats().tx_dropped, 5);
    // Receive: a buffer too small, a readable one, one outside RAM: each drops its frame.
    let cases: [&[(u64, u32, bool)]; 3] =
        [&[(DATA, 40, true)], &[(DATA, 4, false), (DATA + 0x100, 1526, true)], &[(end - 100, 1526, true)]];
    for (i, case) in cases.iter().enumerate() {
        dev.device_mut().backend_mut().incoming.push_back(frame(i as u8, 100));
        let head = Driver::chain(&mut ram, 0, 0, case);
        driver.post(&mut dev, &mut ram, 0, head);
        assert_eq!(driver.take_used(&ram, 0), None, "no frame was taken yet");
        dev.poll_outside(&mut ram);
        assert_eq!(driver.take_used(&ram, 0), Some((head.into(), 0)), "case {i} is given back empty");
    }
    assert_eq!(dev.device().stats().rx_dropped, 3);
    assert_eq!(dev.status() & STATUS_DEVICE_NEEDS_RESET, 0, "dropping is not a device failure");
    assert!(memory.guards_intact());
}

#[test]
fn reset_drops_the_waiting_frame_and_snapshots_keep_it() {
    let (mut dev, mut memory) = setup();
    let mut ram = memory.ram();
    let _driver = Driver::init(&mut dev, &mut ram);
    dev.device_mut().backend_mut().incoming.push_back(frame(3, 200));
    dev.poll_outside(&mut ram);
    let mut buf = vec![0u8; 8192];
    let mut out = crate::snapshot::Writer::new(&mut buf);
    dev.device().save_state(&mut out).unwrap();
    let len = out.len();
    let (mut other, _) = setup();
    let mut input = crate::snapshot::Reader::new(&buf[..len]);
    other.device_mut().load_state(&mut input, crate::snapshot::LoadMode::Apply).unwrap();
    assert!(other.device().rx_waiting());
    w(&mut dev, 0x070, 0);
    assert!(!dev.device().rx_waiting());
    assert_eq!(dev.device().stats().rx_dropped, 1);
}

/// A descriptor as a random driver might write it.
fn any_desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        (0u64..0x10000).prop_map(|off| RAM_BASE + off),
        any::<u64>(),
        Just(RAM_BASE + RAM_SIZE as u64 - 4),
    ];
    let len = prop_oneof![0u32..2000, any::<u32>(), Just((HEADER_LEN + FRAME_MAX) as u32)];
    (addr, len, 0u16..8, 0u16..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    fn random_chains_never_panic_and_the_counters_add_up_property(
        tables in proptest::collection::vec(any_desc(), 16),
        heads in proptest::collection::vec((0usize..2, 0u16..10), 1..20),
        frames in proptest::collection::vec(14usize..1600, 0..10),
    ) {
        RANDOM_CHAINS_NEVER_PANIC_AND_THE_COUNTERS_ADD_UP.add(1);
        let (mut dev, mut memory) = setup();
        let mut ram = memory.ram();
        let mut driver = Driver::init(&mut dev, &mut ram);
        for (i, &(addr, len, flags, next)) in tables.iter().enumerate() {
            let (table, _, _) = rings(i / 8);
            let at = table + 16 * (i as u64 % 8);
            ram.store(at, 8, addr).unwrap();
            ram.store(at + 8, 4, u64::from(len)).unwrap();
            ram.store(at + 12, 2, u64::from(flags)).unwrap();
            ram.store(at + 14, 2, u64::from(next)).unwrap();
        }
        let offered = frames.len() as u64;
        dev.device_mut().backend_mut().incoming.extend(frames.iter().map(|&len| frame(len as u8, len)));
        for &(q, head) in &heads {
            driver.post(&mut dev, &mut ram, q, head);
            dev.poll_outside(&mut ram);
        }
        let nic = dev.device();
        let stats = nic.stats();
        let left = nic.backend().incoming.len() as u64 + u64::from(nic.rx_waiting());
        prop_assert_eq!(stats.rx_frames + stats.rx_dropped + left, offered);
        prop_assert_eq!(stats.tx_frames, nic.backend().sent.len() as u64);
        for sent in &nic.backend().sent {
            prop_assert!(sent.len() >= net::FRAME_MIN && sent.len() <= FRAME_MAX);
        }
        prop_assert!(memory.guards_intact());
    }
}

/// The hostile inputs the property `random_chains_never_panic_and_the_counters_add_up` tried (`target/isolation.txt`).
static RANDOM_CHAINS_NEVER_PANIC_AND_THE_COUNTERS_ADD_UP: crate::isolation::Tally =
    crate::isolation::Tally::panics("hostile virtio descriptors");

#[test]
fn random_chains_never_panic_and_the_counters_add_up() {
    RANDOM_CHAINS_NEVER_PANIC_AND_THE_COUNTERS_ADD_UP.run(random_chains_never_panic_and_the_counters_add_up_property);
}
