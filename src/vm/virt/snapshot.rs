//! The `virt` machine's devices in a snapshot: one section per device, in a fixed order (CLINT, PLIC, UART,
//! test finisher, the eight virtio-mmio slots, then the extra device map). Each slot's section names the kind
//! of device it holds (or none); restoring into a machine with a different set of devices is refused.

use super::{Backends, VirtDevices};
use crate::dev::{MmioDevice, SerialBackend};
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};

const CLINT: SectionId = SectionId::new(*b"CLNT", 0);
const PLIC: SectionId = SectionId::new(*b"PLIC", 0);
const UART: SectionId = SectionId::new(*b"UART", 0);
const FINISHER: SectionId = SectionId::new(*b"TFIN", 0);
const EXTRA: SectionId = SectionId::new(*b"XMAP", 0);
const PRINTER: SectionId = SectionId::new(*b"PRNT", 0);

impl<S: SerialBackend, K: Backends> VirtDevices<'_, S, K> {
    pub(super) fn save_devices(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.section(CLINT, |out| self.clint.save_state(out))?;
        out.section(PLIC, |out| self.plic.save_state(out))?;
        out.section(UART, |out| self.uart.save_state(out))?;
        out.section(FINISHER, |out| self.finisher.save_state(out))?;
        self.virtio.save_state(out)?;
        out.section(EXTRA, |out| self.extra.save_state(out))?;
        // Only a machine with a printer has its section, so snapshots of machines without one are unchanged.
        match &self.printer {
            Some(printer) => out.section(PRINTER, |out| printer.save_state(out)),
            None => Ok(()),
        }
    }

    pub(super) fn load_devices(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        input.read_section(CLINT, |input| self.clint.load_state(input, mode))?;
        input.read_section(PLIC, |input| self.plic.load_state(input, mode))?;
        input.read_section(UART, |input| self.uart.load_state(input, mode))?;
        input.read_section(FINISHER, |input| self.finisher.load_state(input, mode))?;
        self.virtio.load_state(input, mode)?;
        input.read_section(EXTRA, |input| self.extra.load_state(input, mode))?;
        match self.printer.as_mut() {
            Some(printer) => input.read_section(PRINTER, |input| printer.load_state(input, mode)),
            None if input.next_is(PRINTER) => Err(input.mismatch("a printer the machine does not have")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::virtio::blk::MemBackend;
    use crate::dev::{clint, plic, uart16550, MmioError};
    use crate::mem::{Ram, RAM_BASE};
    use crate::vm::machine::Devices;
    use crate::vm::virt::{SlotDevice, DISK_SLOT_BASE};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    #[derive(Default)]
    struct FakeSerial {
        input: VecDeque<u8>,
    }

    impl SerialBackend for FakeSerial {
        fn write_byte(&mut self, _byte: u8) {}
        fn read_byte(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
    }

    type Machine = VirtDevices<'static, FakeSerial, MemBackend<4096>>;

    /// The second disk's slot.
    const SECOND_DISK: usize = 6;

    /// A machine with disks in slot 0 and [`SECOND_DISK`], or none.
    fn fresh(disks: bool) -> Machine {
        with_disks(if disks { &[0, SECOND_DISK] } else { &[] })
    }

    fn with_disks(slots: &[usize]) -> Machine {
        let mut devices = VirtDevices::new(FakeSerial::default());
        for &slot in slots {
            devices.attach_virtio(slot, SlotDevice::block(MemBackend::new())).unwrap();
        }
        devices
    }

    /// Devices that a guest has set up: timer, IPI, PLIC routing, UART registers and received bytes, a queue
    /// made ready on each disk (each its own way), an interrupt pending on the second.
    fn busy() -> Machine {
        let mut devices = fresh(true);
        let second = crate::dev::slots::VIRTIO[SECOND_DISK].base;
        let mut backing = vec![0u8; 4096];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        devices.uart.backend_mut().input.extend(*b"snap");
        let writes: [(u64, u8, u64); 19] = [
            (clint::BASE + 0x4008, 8, 5_000),
            (clint::BASE + 4, 4, 1),
            (clint::BASE + 0xbff8, 8, 77),
            (plic::BASE + 4 * u64::from(uart16550::IRQ), 4, 3),
            (plic::BASE + plic::ENABLE_BASE + plic::ENABLE_STRIDE, 4, 1 << uart16550::IRQ),
            (plic::BASE + plic::CONTEXT_BASE + plic::CONTEXT_STRIDE, 4, 2),
            (uart16550::BASE + 1, 1, 0x03),
            (uart16550::BASE + 3, 1, 0x03),
            (uart16550::BASE + 7, 1, 0x5a),
            (DISK_SLOT_BASE + 0x070, 4, 1 | 2),
            (DISK_SLOT_BASE + 0x038, 4, 8),
            (DISK_SLOT_BASE + 0x080, 4, 0x8000_1000),
            (DISK_SLOT_BASE + 0x090, 4, 0x8000_2000),
            (DISK_SLOT_BASE + 0x044, 4, 1),
            (second + 0x070, 4, 1),
            (second + 0x038, 4, 4),
            (second + 0x080, 4, 0x8000_0400),
            (second + 0x044, 4, 1),
            (second + 0x030, 4, 3),
        ];
        for (addr, size, value) in writes {
            devices.write(addr, size, value, &mut ram).unwrap();
        }
        devices.write(uart16550::BASE + 2, 1, 0x01, &mut ram).unwrap();
        for _ in 0..4 {
            devices.update(1_000, &mut [], &mut ram);
        }
        assert!(devices.uart.rx_len() > 1, "bytes wait in the receive FIFO");
        devices
    }

    fn save(devices: &Machine) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let mut out = Writer::new(&mut buf);
        devices.save_state(&mut out).unwrap();
        let len = out.finish().unwrap();
        buf.truncate(len);
        buf
    }

    fn load(devices: &mut Machine, data: &[u8], mode: LoadMode) -> Result<(), SnapshotError> {
        let mut input = Reader::new(data);
        devices.load_state(&mut input, mode)?;
        input.finish()
    }

    #[test]
    fn every_device_round_trips_and_a_check_changes_nothing() {
        let busy = busy();
        let data = save(&busy);
        let mut restored = fresh(true);
        let untouched = save(&restored);
        load(&mut restored, &data, LoadMode::Check).unwrap();
        assert_eq!(save(&restored), untouched);
        load(&mut restored, &data, LoadMode::Apply).unwrap();
        assert_eq!(save(&restored), data);
        // The guest sees the same registers.
        let mut backing = vec![0u8; 64];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        assert_eq!(restored.read(clint::BASE + 0xbff8, 8, &mut ram), Ok(1_077), "mtime as the update left it");
        assert_eq!(restored.read(clint::BASE + 0x4008, 8, &mut ram), Ok(5_000));
        assert_eq!(restored.read(uart16550::BASE + 7, 1, &mut ram), Ok(0x5a));
        assert_eq!(restored.read(uart16550::BASE, 1, &mut ram), Ok(u64::from(b's')), "the received bytes");
        assert_eq!(restored.read(DISK_SLOT_BASE + 0x044, 4, &mut ram), Ok(1), "the queue is ready");
        assert_eq!(restored.read(DISK_SLOT_BASE + 0x070, 4, &mut ram), Ok(3));
    }

    /// Both disks come back, each with its own registers; a machine with a disk in another slot, a missing
    /// disk or one more is refused by the check a VM restore starts with, and left as it was.
    #[test]
    fn two_disks_round_trip_in_their_own_slots() {
        let data = save(&busy());
        let mut restored = fresh(true);
        load(&mut restored, &data, LoadMode::Apply).unwrap();
        assert_eq!(save(&restored), data);
        let mut backing = vec![0u8; 64];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let second = crate::dev::slots::VIRTIO[SECOND_DISK].base;
        assert_eq!(restored.read(second + 0x070, 4, &mut ram), Ok(1), "the second disk's status");
        assert_eq!(restored.read(DISK_SLOT_BASE + 0x070, 4, &mut ram), Ok(3), "the first's");
        restored.write(second + 0x030, 4, 0, &mut ram).unwrap();
        assert_eq!(restored.read(second + 0x044, 4, &mut ram), Ok(1), "its queue 0 is ready");
        for other in [&[0, 5][..], &[0], &[0, SECOND_DISK, 7], &[SECOND_DISK]] {
            let mut machine = with_disks(other);
            let untouched = save(&machine);
            assert!(
                matches!(load(&mut machine, &data, LoadMode::Check), Err(SnapshotError::Mismatch { .. })),
                "disks in {other:?}"
            );
            assert_eq!(save(&machine), untouched);
        }
    }

    #[test]
    fn a_machine_with_other_devices_is_refused() {
        let data = save(&busy());
        assert!(matches!(load(&mut fresh(false), &data, LoadMode::Apply), Err(SnapshotError::Mismatch { .. })));
        assert!(matches!(
            load(&mut busy(), &save(&fresh(false)), LoadMode::Apply),
            Err(SnapshotError::Mismatch { .. })
        ));
    }

    /// A device without snapshot support in the extra map makes the machine refuse to save.
    #[test]
    fn a_device_without_snapshots_is_named() {
        struct Opaque;
        impl MmioDevice for Opaque {
            fn read(&mut self, _offset: u64, _size: u8) -> Result<u64, MmioError> {
                Ok(0)
            }
            fn write(&mut self, _offset: u64, _size: u8, _value: u64) -> Result<(), MmioError> {
                Ok(())
            }
        }
        let mut opaque = Opaque;
        let mut devices: VirtDevices<'_, FakeSerial, MemBackend<4096>> = VirtDevices::new(FakeSerial::default());
        devices.extra.map(0x2000_0000, 0x1000, &mut opaque).unwrap();
        let mut buf = [0u8; 8192];
        assert_eq!(
            devices.save_state(&mut Writer::new(&mut buf)),
            Err(SnapshotError::Unsupported { section: SectionId::new(*b"XDEV", 0) })
        );
    }

    proptest! {
        /// One byte changed anywhere, or noise: never a panic, and a refusal changes nothing.
        #[test]
        fn hostile_device_states_never_panic(at in any::<usize>(), value in any::<u8>(),
                                             noise in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut devices = fresh(true);
            let untouched = save(&devices);
            prop_assert!(load(&mut devices, &noise, LoadMode::Apply).is_err());
            prop_assert_eq!(save(&devices), untouched.clone());
            let mut data = save(&busy());
            let at = at % data.len();
            data[at] = value;
            let mut check = fresh(true);
            if load(&mut check, &data, LoadMode::Check).is_err() {
                prop_assert_eq!(save(&check), untouched.clone());
                prop_assert!(load(&mut devices, &data, LoadMode::Apply).is_err());
            } else {
                prop_assert!(load(&mut devices, &data, LoadMode::Apply).is_ok());
            }
        }
    }
}
