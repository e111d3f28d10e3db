//! The devices of QEMU's `virt` machine as one bus: CLINT, PLIC, UART 16550, the `sifive,test0` finisher, the
//! eight virtio-mmio slots (each empty or holding a device of [`SlotDevice`]'s closed set), and a device map for
//! anything else. It routes guest accesses by address and drives the harts' interrupt lines.
//!
//! Every address and PLIC source comes from the [slot table](crate::dev::slots); the devicetree of a machine
//! built here lists the populated virtio slots ([`VirtDevices::virtio_description`]). The standard devices are
//! fields and slots dispatched by `match` (a virtio slot is an index computation from the address); only the
//! board-specific extras go through the [`DeviceMap`]'s `dyn`, on the cold path.
//!
//! The VMM owns the devices through this struct, so it can reach the CLINT's timer and the PLIC's lines between
//! guest accesses; nothing here trusts a guest address or size beyond what each device checks.
//!
//! Interrupt lines reach the PLIC as QEMU wires them: after every guest access to a device, and after every
//! poll (host input, outside work), each device's last raise or lower of its line is forwarded to
//! [`Plic::signal`], which latches a raise as a request. Forwarding at once, before the guest's next access,
//! keeps the order of device events and PLIC claims exactly as the guest made them.

use crate::dev::clint::Clint;
use crate::dev::plic::{self, Plic};
use crate::dev::printer::Printer;
use crate::dev::slots;
use crate::dev::test_finisher::TestFinisher;
use crate::dev::uart16550::{self, Uart16550};
use crate::dev::virtio::blk::{BlockBackend, BlockError};
pub use crate::dev::virtio::slots::{Backends, SlotDevice, SlotError, VirtioSlots};
use crate::dev::{DeviceMap, MachineRequest, MmioDevice, MmioError, SerialBackend};
use crate::hart::Hart;
use crate::isa::csr::interrupt;
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};
use crate::vm::fdt::IrqDevice;

use super::machine::{Devices, HartLines};

#[cfg(test)]
mod slot_tests;
mod snapshot;

/// Most harts a `virt` machine here can have.
pub const MAX_HARTS: usize = 8;
/// PLIC contexts: an M-mode and an S-mode context per hart.
pub const PLIC_CONTEXTS: usize = 2 * MAX_HARTS;

/// The virtio-mmio slot where [`VirtDevices::attach_disk`] puts the disk: slot 0, QEMU's `virtio-mmio-bus.0`.
pub const DISK_SLOT: usize = 0;
/// The guest real address and PLIC source of the disk's slot.
pub const DISK_SLOT_BASE: u64 = slots::VIRTIO[DISK_SLOT].base;
pub const DISK_SLOT_IRQ: u32 = slots::VIRTIO[DISK_SLOT].irq_or_zero();

/// The backend of a machine without a disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDisk;

impl BlockBackend for NoDisk {
    fn capacity_sectors(&self) -> u64 {
        0
    }
    fn read(&mut self, _sector: u64, _buf: &mut [u8]) -> Result<(), BlockError> {
        Err(BlockError::OutOfRange)
    }
    fn write(&mut self, _sector: u64, _buf: &[u8]) -> Result<(), BlockError> {
        Err(BlockError::OutOfRange)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// The `virt` machine's devices. `K` names the virtio devices' backends ([`Backends`]; a disk type alone will do).
pub struct VirtDevices<'a, S: SerialBackend, K: Backends = NoDisk> {
    pub clint: Clint<MAX_HARTS>,
    pub plic: Plic<{ plic::VIRT_SOURCES }, PLIC_CONTEXTS>,
    pub uart: Uart16550<S>,
    pub finisher: TestFinisher,
    /// The eight virtio-mmio slots.
    pub virtio: VirtioSlots<K>,
    /// Further devices (board-specific ones).
    pub extra: DeviceMap<'a>,
    /// The spooled printer at [`slots::PRINTER`], for a VM given one (it shares the host's spool set).
    pub printer: Option<Printer<'a>>,
}

/// A standard device of the bus, found by address.
enum Routed {
    Uart(u64),
    Clint(u64),
    Plic(u64),
    Finisher(u64),
    Virtio(usize, u64),
    Printer(u64),
}

impl<'a, S: SerialBackend, K: Backends> VirtDevices<'a, S, K> {
    pub fn new(console: S) -> Self {
        Self {
            clint: Clint::new(),
            plic: Plic::new(),
            uart: Uart16550::new(console),
            finisher: TestFinisher::new(),
            virtio: VirtioSlots::new(),
            extra: DeviceMap::new(),
            printer: None,
        }
    }

    /// Attaches a virtio-blk disk over `backend` in virtio-mmio slot [`DISK_SLOT`], replacing any device there
    /// (the disk of `--disk`, where guests and QEMU users expect it).
    pub fn attach_disk(&mut self, backend: K::Block) {
        self.virtio.detach(DISK_SLOT);
        // Cannot fail: the slot exists and was just emptied.
        let _ = self.virtio.attach(DISK_SLOT, SlotDevice::block(backend));
    }

    /// Attaches a virtio-net NIC with address `mac` over `backend` in the first empty virtio-mmio slot after the
    /// disk's ([`DISK_SLOT`] stays the disk's even when empty); answers the slot, which the devicetree lists.
    pub fn attach_net(&mut self, backend: K::Net, mac: crate::dev::virtio::net::Mac) -> Result<usize, SlotError> {
        let free = (DISK_SLOT + 1..slots::VIRTIO_COUNT).find(|&index| self.virtio.get(index).is_none());
        let index = free.ok_or(SlotError::Occupied(slots::VIRTIO_COUNT - 1))?;
        self.virtio.attach(index, SlotDevice::net(backend, mac))?;
        Ok(index)
    }

    /// Puts `device` in virtio-mmio slot `index`.
    pub fn attach_virtio(&mut self, index: usize, device: SlotDevice<K>) -> Result<(), SlotError> {
        self.virtio.attach(index, device)
    }

    /// The populated virtio-mmio slots as the devicetree lists them (window and PLIC source from the slot
    /// table), in slot order, written into `out`; answers the filled part.
    pub fn virtio_description<'d>(&self, out: &'d mut [IrqDevice; slots::VIRTIO_COUNT]) -> &'d [IrqDevice] {
        let mut count = 0;
        for (index, _) in self.virtio.populated() {
            if let (Some(entry), Some(slot)) = (out.get_mut(count), slots::VIRTIO.get(index)) {
                *entry = IrqDevice::of(slot);
                count += 1;
            }
        }
        out.get(..count).unwrap_or_default()
    }

    /// The lines of hart `index`: software and timer interrupts from the CLINT, external ones from its two PLIC
    /// contexts.
    fn lines_of(&self, index: usize) -> HartLines {
        let mut raised = 0;
        if self.clint.software_pending(index) {
            raised |= interrupt::MSI;
        }
        if self.clint.timer_pending(index) {
            raised |= interrupt::MTI;
        }
        if self.plic.context_pending(plic::m_context(index)) {
            raised |= interrupt::MEI;
        }
        if self.plic.context_pending(plic::s_context(index)) {
            raised |= interrupt::SEI;
        }
        HartLines { driven: interrupt::MSI | interrupt::MTI | interrupt::MEI | interrupt::SEI, raised }
    }

    /// Forwards what each device did to its interrupt line since the last call to the PLIC.
    fn forward_lines(&mut self) {
        if let Some(level) = self.uart.take_irq_update() {
            self.plic.signal(uart16550::IRQ, level);
        }
        let plic = &mut self.plic;
        self.virtio.forward_lines(|source, level| plic.signal(source, level));
        if let Some(level) = self.printer.as_mut().and_then(Printer::take_irq_update) {
            self.plic.signal(slots::PRINTER.irq_or_zero(), level);
        }
    }

    /// The standard device answering at `addr`, and the offset into it.
    fn route(&self, addr: u64) -> Option<Routed> {
        if let Some(offset) = slots::UART0.offset_of(addr) {
            Some(Routed::Uart(offset))
        } else if let Some((index, offset)) = self.virtio.route(addr) {
            Some(Routed::Virtio(index, offset))
        } else if let Some(offset) = slots::CLINT.offset_of(addr) {
            Some(Routed::Clint(offset))
        } else if let Some(offset) = slots::PLIC.offset_of(addr) {
            Some(Routed::Plic(offset))
        } else if let Some(offset) = slots::TEST.offset_of(addr) {
            Some(Routed::Finisher(offset))
        } else {
            slots::PRINTER.offset_of(addr).filter(|_| self.printer.is_some()).map(Routed::Printer)
        }
    }
}

impl<S: SerialBackend, K: Backends> Devices for VirtDevices<'_, S, K> {
    fn read(&mut self, addr: u64, size: u8, _ram: &mut Ram) -> Result<u64, MmioError> {
        let value = match self.route(addr) {
            Some(Routed::Uart(offset)) => self.uart.read(offset, size),
            Some(Routed::Virtio(index, offset)) => match self.virtio.get_mut(index) {
                Some(device) => device.read(offset, size),
                None => Err(MmioError::Unsupported),
            },
            Some(Routed::Clint(offset)) => self.clint.read(offset, size),
            Some(Routed::Plic(offset)) => self.plic.read(offset, size),
            Some(Routed::Finisher(offset)) => self.finisher.read(offset, size),
            Some(Routed::Printer(offset)) => {
                self.printer.as_mut().map_or(Err(MmioError::Unsupported), |p| p.read(offset, size))
            }
            None => self.extra.read(addr, size),
        };
        // Reads change interrupt conditions too (an RBR or IIR read).
        self.forward_lines();
        value
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        let request = match self.route(addr) {
            Some(Routed::Uart(offset)) => self.uart.write(offset, size, value).map(|()| None),
            Some(Routed::Virtio(index, offset)) => match self.virtio.get_mut(index) {
                Some(device) => {
                    let written = device.write(offset, size, value);
                    // A queue notification is served at once, with the RAM the descriptors point into.
                    device.process(ram);
                    written.map(|()| None)
                }
                None => Err(MmioError::Unsupported),
            },
            Some(Routed::Clint(offset)) => self.clint.write(offset, size, value).map(|()| None),
            Some(Routed::Plic(offset)) => self.plic.write(offset, size, value).map(|()| None),
            Some(Routed::Finisher(offset)) => {
                self.finisher.write(offset, size, value).map(|()| self.finisher.take_request())
            }
            Some(Routed::Printer(offset)) => match self.printer.as_mut() {
                Some(printer) => {
                    let written = printer.write(offset, size, value);
                    // A submission copies the job out of guest RAM before the guest's next instruction.
                    printer.process(ram);
                    written.map(|()| None)
                }
                None => Err(MmioError::Unsupported),
            },
            None => return self.extra.write(addr, size, value),
        };
        self.forward_lines();
        request
    }

    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram) {
        self.clint.set_now(now);
        // Work from outside the guest: host input for the UART, completions for the virtio devices, whatever
        // the extra devices have; each may write guest memory and raise its line.
        self.uart.poll(now, ram);
        self.virtio.poll(now, ram);
        self.extra.poll(now, ram);
        if let Some(printer) = self.printer.as_mut() {
            printer.poll(now, ram);
        }
        self.forward_lines();
        for (index, hart) in harts.iter_mut().enumerate() {
            hart.interrupt_lines = self.lines_of(index).apply(hart.interrupt_lines);
        }
    }

    fn update_time(&mut self, now: u64, harts: &mut [Hart]) {
        self.clint.set_now(now);
        for (index, hart) in harts.iter_mut().enumerate() {
            let timer = if self.clint.timer_pending(index) { interrupt::MTI } else { 0 };
            hart.interrupt_lines = (hart.interrupt_lines & !interrupt::MTI) | timer;
        }
    }

    fn hart_lines(&self, index: usize) -> Option<HartLines> {
        Some(self.lines_of(index))
    }

    fn mtime(&self) -> u64 {
        self.clint.mtime()
    }

    fn ticks_until_deadline(&self) -> Option<u64> {
        self.clint.ticks_until_deadline()
    }

    fn input_pending(&self) -> bool {
        self.uart.rx_len() > 0
    }

    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.uart.backend_mut().write_bytes(bytes)
    }

    fn console_read(&mut self) -> Option<u8> {
        let byte = self.uart.take_received();
        self.forward_lines();
        byte
    }

    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        self.save_devices(out)
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        self.load_devices(input, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::HartConfig;
    use crate::mem::RAM_BASE;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    #[derive(Default)]
    struct FakeSerial {
        input: VecDeque<u8>,
        output: Vec<u8>,
    }

    impl SerialBackend for FakeSerial {
        fn write_byte(&mut self, byte: u8) {
            self.output.push(byte);
        }
        fn read_byte(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
    }

    const UART: u64 = uart16550::BASE;
    const LSR_DR: u64 = 1;
    const CLAIM: u64 = plic::BASE + plic::CONTEXT_BASE + plic::CONTEXT_STRIDE * plic::s_context(0) as u64 + 4;

    /// Hart 0's S-mode context takes the UART's interrupts; the UART interrupts on received data and on THR
    /// empty, as a console driver sets it up.
    fn machine() -> (VirtDevices<'static, FakeSerial>, Vec<u8>, [Hart; 1]) {
        let mut devices = VirtDevices::new(FakeSerial::default());
        let mut backing = vec![0u8; 4096];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let priority = plic::BASE + plic::PRIORITY_BASE + 4 * u64::from(uart16550::IRQ);
        let enable = plic::BASE + plic::ENABLE_BASE + plic::ENABLE_STRIDE * plic::s_context(0) as u64;
        devices.write(priority, 4, 1, &mut ram).unwrap();
        devices.write(enable, 4, 1 << uart16550::IRQ, &mut ram).unwrap();
        (devices, backing, [Hart::new(HartConfig::rv64gc(0))])
    }

    /// Takes external interrupts on hart 0 the way a guest's trap handler does, until none is pending (at most
    /// 1000): claim, then `handler`'s UART accesses, then complete. Answers how many it took.
    fn take_interrupts(
        devices: &mut VirtDevices<'static, FakeSerial>,
        harts: &mut [Hart; 1],
        ram: &mut Ram,
        handler: impl Fn(&mut VirtDevices<'static, FakeSerial>, &mut Ram),
    ) -> u32 {
        let mut taken = 0;
        while taken < 1000 {
            devices.update(0, harts, ram);
            if harts[0].interrupt_lines & interrupt::SEI == 0 {
                break;
            }
            let source = devices.read(CLAIM, 4, ram).unwrap();
            if source == u64::from(uart16550::IRQ) {
                handler(devices, ram);
            }
            devices.write(CLAIM, 4, source, ram).unwrap();
            taken += 1;
        }
        taken
    }

    /// The handler of a guest written for QEMU: LSR, and RBR while LSR says data is ready; never IIR, so the
    /// THR-empty condition is never cleared.
    fn lsr_rbr_handler(devices: &mut VirtDevices<'static, FakeSerial>, ram: &mut Ram) {
        while devices.read(UART + 5, 1, ram).unwrap() & LSR_DR != 0 {
            devices.read(UART, 1, ram).unwrap();
        }
    }

    /// Linux's 8250 handler in short: IIR first (which clears THR-empty when it is the identified source), then
    /// the received data.
    fn iir_handler(devices: &mut VirtDevices<'static, FakeSerial>, ram: &mut Ram) {
        devices.read(UART + 2, 1, ram).unwrap();
        lsr_rbr_handler(devices, ram);
    }

    #[test]
    fn a_uart_handler_that_never_reads_iir_gets_one_interrupt_per_event() {
        let (mut devices, mut backing, mut harts) = machine();
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        // ERBFI | ETBEI with THR empty: one THR-empty event.
        devices.write(UART + 1, 1, 0x03, &mut ram).unwrap();
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, lsr_rbr_handler), 1);
        // The condition still stands (IIR was never read), but no new event: no interrupt.
        assert!(devices.uart.interrupt_pending());
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, lsr_rbr_handler), 0);
        // A byte arrives. The handler's RBR read raises the line again for the standing THR-empty condition
        // while the source is in service (QEMU does the same), so one more interrupt follows, then quiet.
        devices.uart.backend_mut().input.push_back(b'x');
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, lsr_rbr_handler), 2);
        assert_eq!(devices.uart.rx_len(), 0);
        // Each transmitted byte empties THR again: one event, one interrupt.
        for byte in *b"abc" {
            devices.write(UART, 1, u64::from(byte), &mut ram).unwrap();
            assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, lsr_rbr_handler), 1);
        }
        assert_eq!(devices.uart.backend().output, b"abc");
    }

    #[test]
    fn a_uart_handler_that_reads_iir_gets_exactly_one_interrupt_per_event() {
        let (mut devices, mut backing, mut harts) = machine();
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        devices.write(UART + 1, 1, 0x03, &mut ram).unwrap();
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, iir_handler), 1);
        assert!(!devices.uart.interrupt_pending(), "the IIR read cleared THR-empty");
        devices.uart.backend_mut().input.extend(*b"hi");
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, iir_handler), 1);
        assert_eq!(devices.uart.rx_len(), 0);
        devices.write(UART, 1, u64::from(b'a'), &mut ram).unwrap();
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, iir_handler), 1);
        // Turning ETBEI off and on again is an event (Linux starts transmission so).
        devices.write(UART + 1, 1, 0x01, &mut ram).unwrap();
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, iir_handler), 0);
        devices.write(UART + 1, 1, 0x03, &mut ram).unwrap();
        assert_eq!(take_interrupts(&mut devices, &mut harts, &mut ram, iir_handler), 1);
    }
}
