//! The devices of QEMU's `virt` machine as one bus: CLINT, PLIC, UART 16550, the `sifive,test0` finisher, a
//! virtio-blk disk in the first virtio-mmio slot, and a device map for anything else. It routes guest accesses by address and drives the harts' interrupt lines.
//!
//! The VMM owns the devices through this struct, so it can reach the CLINT's timer and the PLIC's lines between
//! guest accesses; nothing here trusts a guest address or size beyond what each device checks.

use crate::dev::clint::{self, Clint};
use crate::dev::plic::{self, Plic};
use crate::dev::test_finisher::{self, TestFinisher};
use crate::dev::uart16550::{self, Uart16550};
use crate::dev::virtio::blk::{BlockBackend, BlockError, VirtioBlk};
use crate::dev::virtio::mmio::{self as virtio_mmio, VirtioMmio};
use crate::dev::{DeviceMap, MachineRequest, MmioDevice, MmioError, SerialBackend};
use crate::hart::Hart;
use crate::isa::csr::interrupt;
use crate::mem::Ram;

use super::machine::Devices;

/// Most harts a `virt` machine here can have.
pub const MAX_HARTS: usize = 8;
/// PLIC contexts: an M-mode and an S-mode context per hart.
pub const PLIC_CONTEXTS: usize = 2 * MAX_HARTS;

/// The guest real address and PLIC source of virtio-mmio slot 0, where the disk sits (QEMU's
/// `virtio-mmio-bus.0`).
pub const DISK_SLOT_BASE: u64 = virtio_mmio::VIRT_BASE;
pub const DISK_SLOT_IRQ: u32 = virtio_mmio::VIRT_IRQ_BASE;

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

/// The `virt` machine's devices.
pub struct VirtDevices<'a, S: SerialBackend, B: BlockBackend = NoDisk> {
    pub clint: Clint<MAX_HARTS>,
    pub plic: Plic<{ plic::VIRT_SOURCES }, PLIC_CONTEXTS>,
    pub uart: Uart16550<S>,
    pub finisher: TestFinisher,
    /// A virtio-blk disk in virtio-mmio slot 0.
    pub disk: Option<VirtioMmio<VirtioBlk<B>>>,
    /// Further devices (board-specific ones).
    pub extra: DeviceMap<'a>,
}

impl<'a, S: SerialBackend, B: BlockBackend> VirtDevices<'a, S, B> {
    pub fn new(console: S) -> Self {
        Self {
            clint: Clint::new(),
            plic: Plic::new(),
            uart: Uart16550::new(console),
            finisher: TestFinisher::new(),
            disk: None,
            extra: DeviceMap::new(),
        }
    }

    /// Attaches a virtio-blk disk over `backend` in virtio-mmio slot 0.
    pub fn attach_disk(&mut self, backend: B) {
        self.disk = Some(VirtioMmio::new(VirtioBlk::new(backend)));
    }

    /// The device answering at `addr`, and the offset into it.
    fn route(&mut self, addr: u64) -> Option<(&mut dyn MmioDevice, u64)> {
        let within = |base: u64, size: u64| addr.wrapping_sub(base) < size;
        if within(uart16550::BASE, uart16550::SIZE) {
            Some((&mut self.uart, addr - uart16550::BASE))
        } else if within(clint::BASE, clint::SIZE) {
            Some((&mut self.clint, addr - clint::BASE))
        } else if within(plic::BASE, plic::SIZE) {
            Some((&mut self.plic, addr - plic::BASE))
        } else if within(test_finisher::BASE, test_finisher::SIZE) {
            Some((&mut self.finisher, addr - test_finisher::BASE))
        } else if within(DISK_SLOT_BASE, virtio_mmio::VIRT_STRIDE) {
            self.disk.as_mut().map(|disk| (disk as &mut dyn MmioDevice, addr - DISK_SLOT_BASE))
        } else {
            None
        }
    }
}

impl<S: SerialBackend, B: BlockBackend> Devices for VirtDevices<'_, S, B> {
    fn read(&mut self, addr: u64, size: u8, _ram: &mut Ram) -> Result<u64, MmioError> {
        match self.route(addr) {
            Some((device, offset)) => device.read(offset, size),
            None => self.extra.read(addr, size),
        }
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        let request = match self.route(addr) {
            Some((device, offset)) => {
                device.write(offset, size, value)?;
                device.take_request()
            }
            None => return self.extra.write(addr, size, value),
        };
        // A queue notification is served at once, with the RAM the descriptors point into.
        if let Some(disk) = self.disk.as_mut().filter(|disk| disk.notify_pending()) {
            disk.process(ram);
        }
        Ok(request)
    }

    fn update(&mut self, now: u64, harts: &mut [Hart]) {
        self.clint.set_now(now);
        self.uart.poll_input();
        self.plic.set_level(uart16550::IRQ, self.uart.interrupt_pending());
        if let Some(disk) = &self.disk {
            self.plic.set_level(DISK_SLOT_IRQ, disk.interrupt_pending());
        }
        let lines = interrupt::MSI | interrupt::MTI | interrupt::MEI | interrupt::SEI;
        for (index, hart) in harts.iter_mut().enumerate() {
            let mut pending = 0;
            if self.clint.software_pending(index) {
                pending |= interrupt::MSI;
            }
            if self.clint.timer_pending(index) {
                pending |= interrupt::MTI;
            }
            if self.plic.context_pending(plic::m_context(index)) {
                pending |= interrupt::MEI;
            }
            if self.plic.context_pending(plic::s_context(index)) {
                pending |= interrupt::SEI;
            }
            hart.interrupt_lines = (hart.interrupt_lines & !lines) | pending;
        }
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
        self.uart.take_received()
    }
}
