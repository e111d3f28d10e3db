//! The virtio-mmio slots through the bus, as a guest reaches them: two disks in two slots each serving its own
//! backend and raising its own PLIC source, a device completing outside work from `poll` with no guest access,
//! hostile accesses to every slot, the devicetree built from the populated slots, and a frame crossing a bridge
//! from one machine's NIC to another's, raising the receiver's source.

use super::*;
use crate::dev::virtio::blk::{MemBackend, S_OK, T_IN, T_OUT};
use crate::dev::virtio::queue::{DESC_F_NEXT, DESC_F_WRITE};
use crate::dev::virtio::slots::fake::{Inbox, DEVICE_ID_INBOX};
use crate::dev::virtio::{VirtioMmio, DEVICE_ID_BLOCK, INT_USED_BUFFER};
use crate::dev::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use crate::dev::NullSerial;
use crate::hart::HartConfig;
use crate::mem::RAM_BASE;
use crate::vm::fdt::{write_dtb, MachineDescription};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const DISK: usize = 16 * 512;
type Machine = VirtDevices<'static, NullSerial, MemBackend<DISK>>;

/// Each slot's driver keeps its rings and buffers in its own 16 KiB of RAM.
const AREA: u64 = 0x4000;
const RAM_SIZE: usize = slots::VIRTIO_COUNT * AREA as usize;
const QUEUE_SIZE: u32 = 8;

fn area(slot: usize) -> u64 {
    RAM_BASE + AREA * slot as u64
}
fn desc(slot: usize) -> u64 {
    area(slot)
}
fn avail(slot: usize) -> u64 {
    area(slot) + 0x1000
}
fn used(slot: usize) -> u64 {
    area(slot) + 0x2000
}
fn header(slot: usize) -> u64 {
    area(slot) + 0x3000
}
fn status_byte(slot: usize) -> u64 {
    area(slot) + 0x3010
}
fn data(slot: usize) -> u64 {
    area(slot) + 0x3200
}

fn w(devices: &mut Machine, ram: &mut Ram, slot: usize, offset: u64, value: u32) {
    devices.write(slots::VIRTIO[slot].base + offset, 4, u64::from(value), ram).expect("register write");
}

fn r(devices: &mut Machine, ram: &mut Ram, slot: usize, offset: u64) -> u32 {
    devices.read(slots::VIRTIO[slot].base + offset, 4, ram).expect("register read") as u32
}

/// Device initialisation through the bus (virtio 1.x §3.1.1): VERSION_1 only, queue 0 in the slot's area.
fn init(devices: &mut Machine, ram: &mut Ram, slot: usize, device_id: u32) {
    assert_eq!(r(devices, ram, slot, 0x000), 0x7472_6976, "magic");
    assert_eq!(r(devices, ram, slot, 0x008), device_id);
    w(devices, ram, slot, 0x070, 0);
    w(devices, ram, slot, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(devices, ram, slot, 0x024, 1);
    w(devices, ram, slot, 0x020, 1);
    w(devices, ram, slot, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    w(devices, ram, slot, 0x030, 0);
    w(devices, ram, slot, 0x038, QUEUE_SIZE);
    for (low, addr) in [(0x080, desc(slot)), (0x090, avail(slot)), (0x0a0, used(slot))] {
        w(devices, ram, slot, low, addr as u32);
        w(devices, ram, slot, low + 4, (addr >> 32) as u32);
    }
    w(devices, ram, slot, 0x044, 1);
    w(devices, ram, slot, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

fn set_desc(ram: &mut Ram, slot: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = desc(slot) + 16 * u64::from(index);
    ram.store(at, 8, addr).unwrap();
    ram.store(at + 8, 4, u64::from(len)).unwrap();
    ram.store(at + 12, 2, u64::from(flags)).unwrap();
    ram.store(at + 14, 2, u64::from(next)).unwrap();
}

/// Makes descriptor 0 the `nth` available entry (0-based).
fn post(ram: &mut Ram, slot: usize, nth: u16) {
    ram.store(avail(slot) + 4 + 2 * u64::from(nth % QUEUE_SIZE as u16), 2, 0).unwrap();
    ram.store(avail(slot) + 2, 2, u64::from(nth + 1)).unwrap();
}

fn used_idx(ram: &Ram, slot: usize) -> u16 {
    ram.load(used(slot) + 2, 2).unwrap() as u16
}

/// One block request of one sector through descriptors 0-2 (header, data, status), posted and notified.
fn block_request(devices: &mut Machine, ram: &mut Ram, slot: usize, nth: u16, kind: u32, sector: u64) {
    ram.store(header(slot), 4, u64::from(kind)).unwrap();
    ram.store(header(slot) + 8, 8, sector).unwrap();
    ram.store(status_byte(slot), 1, 0xff).unwrap();
    let data_flags = if kind == T_IN { DESC_F_WRITE } else { 0 };
    set_desc(ram, slot, 0, header(slot), 16, DESC_F_NEXT, 1);
    set_desc(ram, slot, 1, data(slot), 512, data_flags | DESC_F_NEXT, 2);
    set_desc(ram, slot, 2, status_byte(slot), 1, DESC_F_WRITE, 0);
    post(ram, slot, nth);
    w(devices, ram, slot, 0x050, 0);
}

fn disk(fill: u8) -> MemBackend<DISK> {
    let mut backend = MemBackend::new();
    backend.data.fill(fill);
    backend
}

#[test]
fn two_disks_in_two_slots_each_serve_their_own_backend_and_raise_their_own_source() {
    let mut devices: Machine = VirtDevices::new(NullSerial);
    devices.attach_disk(disk(0xa0));
    devices.attach_virtio(5, SlotDevice::block(disk(0xb5))).unwrap();
    assert_eq!(devices.attach_virtio(5, SlotDevice::block(disk(0))).err(), Some(SlotError::Occupied(5)));
    assert_eq!(devices.attach_virtio(8, SlotDevice::block(disk(0))).err(), Some(SlotError::NoSuchSlot(8)));
    let mut backing = vec![0u8; RAM_SIZE];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    for slot in [0, 5] {
        init(&mut devices, &mut ram, slot, DEVICE_ID_BLOCK);
    }

    // Slot 5 reads its disk; only its source (1 + 5) is requested.
    block_request(&mut devices, &mut ram, 5, 0, T_IN, 3);
    assert_eq!(used_idx(&ram, 5), 1);
    assert_eq!(ram.load(status_byte(5), 1), Some(u64::from(S_OK)));
    assert!(ram.slice(data(5), 512).unwrap().iter().all(|&b| b == 0xb5), "slot 5's own disk");
    assert!(devices.plic.is_pending(6) && !devices.plic.is_pending(1));
    assert_eq!(r(&mut devices, &mut ram, 5, 0x060), INT_USED_BUFFER);
    assert_eq!(r(&mut devices, &mut ram, 0, 0x060), 0);

    // Slot 0 writes sector 2 of its disk from a buffer of 0x11s; slot 5's disk is untouched.
    ram.slice_mut(data(0), 512).unwrap().fill(0x11);
    block_request(&mut devices, &mut ram, 0, 0, T_OUT, 2);
    assert_eq!(ram.load(status_byte(0), 1), Some(u64::from(S_OK)));
    assert!(devices.plic.is_pending(1));
    let disk0 = devices.virtio.get(0).and_then(SlotDevice::as_block).unwrap().device().backend();
    assert!(disk0.data[2 * 512..3 * 512].iter().all(|&b| b == 0x11));
    assert!(disk0.data[..2 * 512].iter().all(|&b| b == 0xa0));
    let disk5 = devices.virtio.get(5).and_then(SlotDevice::as_block).unwrap().device().backend();
    assert!(disk5.data.iter().all(|&b| b == 0xb5));

    // Slot 0 reads back what it wrote.
    ram.slice_mut(data(0), 512).unwrap().fill(0);
    block_request(&mut devices, &mut ram, 0, 1, T_IN, 2);
    assert_eq!(used_idx(&ram, 0), 2);
    assert!(ram.slice(data(0), 512).unwrap().iter().all(|&b| b == 0x11));

    // The devicetree of this machine lists exactly slots 0 and 5, at the table's addresses and sources.
    let mut entries = [IrqDevice { base: 0, size: 0, irq: 0 }; slots::VIRTIO_COUNT];
    let listed = devices.virtio_description(&mut entries);
    assert_eq!(listed, [IrqDevice::of(&slots::VIRTIO[0]), IrqDevice::of(&slots::VIRTIO[5])]);
    let description = MachineDescription { virtio_mmio: listed, ..MachineDescription::qemu_virt(1, 1 << 20) };
    let mut blob = vec![0u8; 16 << 10];
    let len = write_dtb(&description, &mut blob).unwrap();
    let tree = ::fdt::Fdt::new(&blob[..len]).unwrap();
    let nodes: Vec<(u64, usize)> = tree
        .all_nodes()
        .filter(|node| node.name.starts_with("virtio_mmio@"))
        .map(|node| {
            let reg = node.reg().unwrap().next().unwrap();
            let irq = node.property("interrupts").unwrap().as_usize().unwrap();
            (reg.starting_address as u64, irq)
        })
        .collect();
    assert_eq!(nodes, [(0x1000_1000, 1), (0x1000_6000, 6)]);
}

/// Work arriving from outside the guest (a message for a receive queue, as a frame from a bridge) is completed
/// by `update`'s poll: written into the guest's buffer, the used ring advanced and the slot's interrupt raised
/// on the hart, with no guest access in between.
#[test]
fn poll_completes_outside_work_in_guest_memory_and_raises_the_slot_interrupt() {
    const SLOT: usize = 2;
    let mut devices: Machine = VirtDevices::new(NullSerial);
    devices.attach_virtio(SLOT, SlotDevice::Inbox(VirtioMmio::new(Inbox::default()))).unwrap();
    let mut backing = vec![0u8; RAM_SIZE];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let mut harts = [Hart::new(HartConfig::rv64gc(0))];
    // Hart 0's S context takes the slot's source.
    let source = slots::VIRTIO[SLOT].irq.unwrap();
    let priority = plic::BASE + plic::PRIORITY_BASE + 4 * u64::from(source);
    let enable = plic::BASE + plic::ENABLE_BASE + plic::ENABLE_STRIDE * plic::s_context(0) as u64;
    devices.write(priority, 4, 1, &mut ram).unwrap();
    devices.write(enable, 4, 1 << source, &mut ram).unwrap();

    init(&mut devices, &mut ram, SLOT, DEVICE_ID_INBOX);
    // The driver offers a receive buffer and notifies: nothing to deliver, so the buffer stays available.
    set_desc(&mut ram, SLOT, 0, data(SLOT), 64, DESC_F_WRITE, 0);
    post(&mut ram, SLOT, 0);
    w(&mut devices, &mut ram, SLOT, 0x050, 0);
    devices.update(10, &mut harts, &mut ram);
    assert_eq!(used_idx(&ram, SLOT), 0);
    assert_eq!(harts[0].interrupt_lines & interrupt::SEI, 0);

    // A message arrives from outside; only the next update (no guest access) delivers it.
    let Some(SlotDevice::Inbox(inbox)) = devices.virtio.get_mut(SLOT) else { panic!("the inbox") };
    assert!(inbox.device_mut().deliver(b"frame from the bridge"));
    assert_eq!(used_idx(&ram, SLOT), 0);
    devices.update(20, &mut harts, &mut ram);
    assert_eq!(used_idx(&ram, SLOT), 1);
    assert_eq!(ram.load(used(SLOT) + 8, 4), Some(21), "the used length");
    assert_eq!(ram.slice(data(SLOT), 21).unwrap(), b"frame from the bridge");
    assert!(devices.plic.is_pending(source));
    assert_ne!(harts[0].interrupt_lines & interrupt::SEI, 0, "the hart sees the slot's interrupt");
    // The guest's handler claims it and acknowledges.
    let claim = plic::BASE + plic::CONTEXT_BASE + plic::CONTEXT_STRIDE * plic::s_context(0) as u64 + 4;
    assert_eq!(devices.read(claim, 4, &mut ram), Ok(u64::from(source)));
    assert_eq!(r(&mut devices, &mut ram, SLOT, 0x060), INT_USED_BUFFER);
    w(&mut devices, &mut ram, SLOT, 0x064, INT_USED_BUFFER);
    devices.write(claim, 4, u64::from(source), &mut ram).unwrap();
    devices.update(30, &mut harts, &mut ram);
    assert_eq!(harts[0].interrupt_lines & interrupt::SEI, 0);
    // Nothing more arrived: another update changes nothing.
    devices.update(40, &mut harts, &mut ram);
    assert_eq!(used_idx(&ram, SLOT), 1);
    assert!(!devices.plic.is_pending(source));
}

proptest! {
    /// Any access to any slot (empty or holding a disk) or just outside them, any width and value: never a
    /// panic; an empty slot refuses every access, as any address without a device; RAM outside the disk's
    /// rings never changes.
    fn hostile_accesses_to_the_slots_never_panic_and_empty_slots_fault_property(
        accesses in proptest::collection::vec(
            (0u64..(slots::VIRTIO_COUNT as u64 + 1) * slots::VIRTIO_STRIDE, any::<u8>(), any::<u64>(), any::<bool>()),
            1..200)
    ) {
        HOSTILE_ACCESSES_TO_THE_SLOTS_NEVER_PANIC_AND_EMPTY_SLOTS_FAULT.add(accesses.len());
        let mut devices: Machine = VirtDevices::new(NullSerial);
        devices.attach_virtio(3, SlotDevice::block(disk(0))).unwrap();
        let mut backing = vec![0u8; RAM_SIZE];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let mut harts = [Hart::new(HartConfig::rv64gc(0))];
        for (offset, size, value, write) in accesses {
            let addr = slots::VIRTIO_BASE + offset;
            let result = if write {
                devices.write(addr, size, value, &mut ram).map(|_| 0)
            } else {
                devices.read(addr, size, &mut ram)
            };
            match slots::virtio_slot(addr) {
                Some((3, _)) => {}
                _ => prop_assert_eq!(result, Err(MmioError::Unsupported), "{:#x}", addr),
            }
            devices.update(0, &mut harts, &mut ram);
        }
    }
}

/// The hostile accesses the property above tried (`target/isolation.txt`).
static HOSTILE_ACCESSES_TO_THE_SLOTS_NEVER_PANIC_AND_EMPTY_SLOTS_FAULT: crate::isolation::Tally =
    crate::isolation::Tally::panics("hostile MMIO accesses (virtio slots)");

#[test]
fn hostile_accesses_to_the_slots_never_panic_and_empty_slots_fault() {
    HOSTILE_ACCESSES_TO_THE_SLOTS_NEVER_PANIC_AND_EMPTY_SLOTS_FAULT
        .run(hostile_accesses_to_the_slots_never_panic_and_empty_slots_fault_property);
}

#[test]
fn an_empty_slot_faults_at_every_register_for_every_width() {
    let mut devices: Machine = VirtDevices::new(NullSerial);
    let mut backing = vec![0u8; 4096];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    for slot in &slots::VIRTIO {
        for offset in (0..0x200).chain([0xffc, 0xfff]) {
            for size in [0, 1, 2, 4, 8, 16, 255] {
                assert_eq!(devices.read(slot.base + offset, size, &mut ram), Err(MmioError::Unsupported));
                assert_eq!(devices.write(slot.base + offset, size, u64::MAX, &mut ram), Err(MmioError::Unsupported));
            }
        }
    }
}

/// Outside work that has arrived but not been delivered is part of a slot's state: a machine restored from a
/// snapshot taken in between delivers it at its first poll, as the original does.
#[test]
fn outside_work_pending_at_a_snapshot_is_delivered_after_restore() {
    const SLOT: usize = 4;
    let build = || {
        let mut devices: Machine = VirtDevices::new(NullSerial);
        devices.attach_disk(disk(0));
        devices.attach_virtio(SLOT, SlotDevice::Inbox(VirtioMmio::new(Inbox::default()))).unwrap();
        devices
    };
    let mut original = build();
    let mut backing = vec![0u8; RAM_SIZE];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    init(&mut original, &mut ram, SLOT, DEVICE_ID_INBOX);
    set_desc(&mut ram, SLOT, 0, data(SLOT), 64, DESC_F_WRITE, 0);
    post(&mut ram, SLOT, 0);
    w(&mut original, &mut ram, SLOT, 0x050, 0);
    let Some(SlotDevice::Inbox(inbox)) = original.virtio.get_mut(SLOT) else { panic!("the inbox") };
    assert!(inbox.device_mut().deliver(b"in flight"));

    let mut buf = vec![0u8; 8192];
    let mut out = Writer::new(&mut buf);
    original.save_state(&mut out).unwrap();
    let len = out.finish().unwrap();
    let mut restored = build();
    let mut input = Reader::new(&buf[..len]);
    restored.load_state(&mut input, LoadMode::Apply).unwrap();
    input.finish().unwrap();

    let mut restored_backing = ram.as_slice().unwrap().to_vec();
    let mut restored_ram = Ram::new(RAM_BASE, &mut restored_backing);
    let mut harts = [Hart::new(HartConfig::rv64gc(0))];
    original.update(5, &mut harts, &mut ram);
    restored.update(5, &mut harts, &mut restored_ram);
    assert_eq!(restored_ram.slice(data(SLOT), 9).unwrap(), b"in flight");
    assert_eq!(used_idx(&restored_ram, SLOT), 1);
    assert_eq!(ram.as_slice().unwrap(), restored_ram.as_slice().unwrap(), "both machines did the same");
    assert!(restored.plic.is_pending(slots::VIRTIO[SLOT].irq.unwrap()));
}

/// The virtio backends of a machine with a NIC on a bridge.
struct OnBridge<'b>(core::marker::PhantomData<&'b ()>);

impl<'b> Backends for OnBridge<'b> {
    type Block = MemBackend<DISK>;
    type Net = crate::net::BridgePort<'b, 2, 4, 4>;
}

#[test]
fn a_frame_sent_by_one_machine_reaches_the_other_through_the_bridge_and_raises_its_interrupt() {
    use crate::dev::virtio::net::{DEVICE_ID_NET, HEADER_LEN};
    use crate::net::{Bridge, BridgePort};
    let bridge = core::cell::RefCell::new(Bridge::<2, 4, 4>::new(1000));
    let macs = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]];
    let mut machines: Vec<VirtDevices<'static, NullSerial, OnBridge<'_>>> = Vec::new();
    let mut backings = vec![vec![0u8; RAM_SIZE], vec![0u8; RAM_SIZE]];
    let mut harts = [Hart::new(HartConfig::rv64gc(0))];
    let mut slot = 0;
    for mac in macs {
        let mut devices = VirtDevices::new(NullSerial);
        slot = devices.attach_net(BridgePort::attach(&bridge).unwrap(), mac).unwrap();
        machines.push(devices);
    }
    assert_eq!(slot, 1, "the first slot after the disk's");
    let base = slots::VIRTIO[slot].base;
    let source = slots::VIRTIO[slot].irq.unwrap();
    // Both drivers set up receive queue 0 and transmit queue 1 in their own RAM, with one receive buffer.
    for (devices, backing) in machines.iter_mut().zip(&mut backings) {
        let mut ram = Ram::new(RAM_BASE, backing);
        let priority = plic::BASE + plic::PRIORITY_BASE + 4 * u64::from(source);
        let enable = plic::BASE + plic::ENABLE_BASE + plic::ENABLE_STRIDE * plic::s_context(0) as u64;
        devices.write(priority, 4, 1, &mut ram).unwrap();
        devices.write(enable, 4, 1 << source, &mut ram).unwrap();
        assert_eq!(devices.read(base + 8, 4, &mut ram), Ok(u64::from(DEVICE_ID_NET)));
        set_desc(&mut ram, 0, 0, data(0), 1526, DESC_F_WRITE, 0);
        post(&mut ram, 0, 0);
        let mut w = |offset: u64, value: u64| devices.write(base + offset, 4, value, &mut ram).unwrap();
        w(0x070, 0);
        w(0x070, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
        w(0x024, 1);
        w(0x020, 1);
        w(0x070, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK));
        for queue in 0..2u64 {
            w(0x030, queue);
            w(0x038, u64::from(QUEUE_SIZE));
            for (low, addr) in [
                (0x080, desc(2 * queue as usize)),
                (0x090, avail(2 * queue as usize)),
                (0x0a0, used(2 * queue as usize)),
            ] {
                w(low, addr);
                w(low + 4, 0);
            }
            w(0x044, 1);
        }
        w(0x070, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK));
        w(0x050, 0);
    }
    // Machine 0 transmits a broadcast frame: header and frame in one buffer of its transmit queue.
    let mut frame = vec![0xffu8; 6];
    frame.extend_from_slice(&macs[0]);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.resize(60, 0xab);
    {
        let mut ram = Ram::new(RAM_BASE, &mut backings[0]);
        ram.slice_mut(data(2), HEADER_LEN as u64).unwrap().fill(0);
        ram.slice_mut(data(2) + HEADER_LEN as u64, 60).unwrap().copy_from_slice(&frame);
        set_desc(&mut ram, 2, 0, data(2), (HEADER_LEN + 60) as u32, 0, 0);
        post(&mut ram, 2, 0);
        machines[0].write(base + 0x050, 4, 1, &mut ram).unwrap();
        assert_eq!(used_idx(&ram, 2), 1, "the transmit buffer is used at once");
    }
    // The bridge switches it; machine 1's next update delivers it and raises its slot's source.
    assert_eq!(bridge.borrow_mut().pump(0, 10), 1);
    let mut ram = Ram::new(RAM_BASE, &mut backings[1]);
    assert_eq!(used_idx(&ram, 0), 0);
    machines[1].update(10, &mut harts, &mut ram);
    assert_eq!(used_idx(&ram, 0), 1);
    assert_eq!(ram.load(used(0) + 8, 4), Some((HEADER_LEN + 60) as u64), "the used length");
    assert_eq!(ram.slice(data(0) + HEADER_LEN as u64, 60).unwrap(), &frame[..]);
    assert!(machines[1].plic.is_pending(source));
    assert_ne!(harts[0].interrupt_lines & interrupt::SEI, 0, "the receiver's hart sees the interrupt");
    // Never back to the sender.
    let mut ram = Ram::new(RAM_BASE, &mut backings[0]);
    machines[0].update(10, &mut harts, &mut ram);
    assert_eq!(used_idx(&ram, 0), 0);
}
