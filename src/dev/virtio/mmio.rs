//! The virtio-mmio transport, version 2 ("modern", virtio 1.x §4.2): the register file a driver uses to
//! discover a device, negotiate features, set up virtqueues and notify them, plus the device's configuration
//! space at offset 0x100.
//!
//! Modern only: `Version` reads 2 and the legacy registers (`GuestPageSize`, `QueueAlign`, `QueuePFN`) are not
//! decoded. Linux and U-Boot both drive version 2. (QEMU's `virt` machine shows version 1 unless started with
//! `-global virtio-mmio.force-legacy=false`; a guest that only speaks legacy will not work here.)
//!
//! Registers take naturally aligned 32-bit accesses only; the configuration space takes naturally aligned 8-,
//! 16- and 32-bit accesses (64-bit fields are read as two 32-bit halves, as the spec asks). Any other access,
//! an offset that names no register, a read of a write-only register or a write of a read-only one is
//! [`MmioError::Unsupported`]. Every value written is guest-controlled and only stored or compared; queue
//! parameters are checked when the queue is used, never trusted.
//!
//! Guest memory is not reachable from an MMIO access, so `QueueNotify` only records the notification: the VMM
//! must then call [`VirtioMmio::process`] (see the contract in the [module docs](super)).
//!
//! # As QEMU presents it
//!
//! Guests written for QEMU's `virt` machine are the ones this transport meets, so where virtio 1.x leaves the
//! device a choice, it chooses what QEMU does:
//! - `VendorID` reads QEMU's value, [`VENDOR_ID`] = `0x554d4551` ("QEMU"), because some drivers check it and
//!   refuse any other device. An embedder that wants its own changes it with [`VirtioMmio::set_vendor_id`].
//! - A driver that never accepts `VIRTIO_F_VERSION_1` still gets `FEATURES_OK` and a working device. Virtio 1.x
//!   (§6.1) lets a device refuse such a driver, and QEMU does not: on the modern transport it checks features
//!   only when VERSION_1 was negotiated, and drivers written against QEMU (minimal bootloader and RTOS drivers
//!   that fill in feature word 0 only) rely on that. Nothing this device does depends on VERSION_1: the guest is
//!   little-endian as virtio 1.x is, the queues are set up through the version-2 registers (so the legacy ring
//!   alignment never arises) and the block device accepts any framing of a request. Features the device did not
//!   offer are still refused, as the specification asks.
//! - The interrupt line is raised for each notification of the driver (used buffers, a configuration change)
//!   and re-evaluated when the driver acknowledges (raised again if bits remain, lowered otherwise) or resets
//!   the device, as QEMU's `virtio-mmio` does; the PLIC latches each raise as a request
//!   ([`take_irq_update`](VirtioMmio::take_irq_update)).

use core::cell::RefCell;

use super::queue::{DescChain, Queue};
use super::{
    GuestMemory, VirtioDevice, F_VERSION_1, INT_CONFIG_CHANGE, INT_USED_BUFFER, STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
};
use crate::dev::{IrqLine, IrqTrigger, MmioDevice, MmioError};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Guest real address of the first virtio-mmio window on the QEMU `virt` machine.
pub const VIRT_BASE: u64 = crate::dev::slots::VIRTIO_BASE;
/// Distance between consecutive virtio-mmio windows on the QEMU `virt` machine (also each window's size).
pub const VIRT_STRIDE: u64 = crate::dev::slots::VIRTIO_STRIDE;
/// Number of virtio-mmio windows on the QEMU `virt` machine.
pub const VIRT_COUNT: u64 = crate::dev::slots::VIRTIO_COUNT as u64;
/// PLIC interrupt source of the first window; window `i` uses `VIRT_IRQ_BASE + i`.
pub const VIRT_IRQ_BASE: u32 = crate::dev::slots::VIRTIO_IRQ_BASE;

/// The value of `MagicValue`: "virt" in little-endian ASCII.
pub const MAGIC: u32 = 0x7472_6976;
/// The transport version implemented (modern).
pub const VERSION: u32 = 2;
/// QEMU's `VendorID`: "QEMU" in little-endian ASCII.
pub const QEMU_VENDOR_ID: u32 = 0x554d_4551;
/// The value of `VendorID` unless the embedder sets another ([`VirtioMmio::set_vendor_id`]): QEMU's, because
/// guests written for QEMU's `virt` check it.
pub const VENDOR_ID: u32 = QEMU_VENDOR_ID;
/// Most virtqueues any device may have.
pub const MAX_QUEUES: usize = 8;
/// `QueueNumMax`: the largest queue size offered.
pub const QUEUE_SIZE_MAX: u16 = 256;
/// Offset of the device configuration space.
pub const CONFIG_OFFSET: u64 = 0x100;
/// Size of the configuration space window decoded (up to the end of a QEMU `virt` window).
pub const CONFIG_SIZE: u64 = 0x1000 - CONFIG_OFFSET;

// Register offsets.
const MAGIC_VALUE: u64 = 0x000;
const VERSION_REG: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID_REG: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;

/// A virtio device `D` on the MMIO transport, raising its interrupt through `I`.
pub struct VirtioMmio<D, I = IrqLine> {
    device: D,
    /// What `VendorID` reads; survives a device reset.
    vendor_id: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: [Queue; MAX_QUEUES],
    interrupt_status: u32,
    /// The interrupt output, raised for each notification of the driver.
    line: I,
    /// Bit `i`: queue `i` was notified (or made ready work visible) and has not been processed yet.
    notify_pending: u32,
}

impl<D: VirtioDevice> VirtioMmio<D> {
    /// The transport in its reset state, in front of `device`, its interrupt output an [`IrqLine`] for the bus.
    pub fn new(device: D) -> Self {
        Self::with_trigger(device, IrqLine::default())
    }

    /// The last raise (`Some(true)`) or lower (`Some(false)`) of the interrupt line since the previous call, to
    /// forward to the PLIC's [`signal`](crate::dev::plic::Plic::signal) after each access and each
    /// [`process`](Self::process) or [`poll`](MmioDevice::poll).
    pub fn take_irq_update(&mut self) -> Option<bool> {
        self.line.take_update()
    }
}

impl<D: VirtioDevice, I: IrqTrigger> VirtioMmio<D, I> {
    /// The transport in its reset state, in front of `device`, raising its interrupt through `line`.
    pub fn with_trigger(device: D, line: I) -> Self {
        Self {
            device,
            vendor_id: VENDOR_ID,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: [Queue::default(); MAX_QUEUES],
            interrupt_status: 0,
            line,
            notify_pending: 0,
        }
    }

    /// Makes `VendorID` read `vendor_id` instead of QEMU's [`VENDOR_ID`].
    pub fn set_vendor_id(&mut self, vendor_id: u32) {
        self.vendor_id = vendor_id;
    }

    /// What `VendorID` reads.
    pub fn vendor_id(&self) -> u32 {
        self.vendor_id
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device behind the transport, for the host (e.g. to reach its backend).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The `Status` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Whether the interrupt line (the PLIC source of this window) is asserted: level-triggered, high while
    /// `InterruptStatus` is nonzero.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// The interrupt output.
    pub fn trigger(&self) -> &I {
        &self.line
    }

    /// Takes the work the device says arrived from outside the guest (see [`VirtioDevice::take_outside_work`])
    /// and carries out everything pending against `mem`: what a guest notification would do, with no guest
    /// access. Costs a call and a branch when there is nothing to do.
    pub fn poll_outside<M: GuestMemory + ?Sized>(&mut self, mem: &mut M) {
        let queues = (1u32 << self.num_queues()) - 1;
        self.notify_pending |= self.device.take_outside_work() & queues;
        if self.notify_pending() {
            self.process(mem);
        }
    }

    /// Sets `bits` in `InterruptStatus` and raises the line: one notification of the driver.
    fn notify_driver(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        self.line.set(true);
    }

    /// Whether [`process`](Self::process) has work to do now.
    pub fn notify_pending(&self) -> bool {
        self.notify_pending != 0 && self.running()
    }

    /// The features offered: the device's plus `VIRTIO_F_VERSION_1`.
    pub fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1
    }

    /// The features the driver accepted (meaningful once `FEATURES_OK` is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Queue `index`, if the device has it.
    pub fn queue(&self, index: usize) -> Option<&Queue> {
        self.queues.get(index).filter(|_| index < self.num_queues())
    }

    fn num_queues(&self) -> usize {
        self.device.num_queues().min(MAX_QUEUES)
    }

    fn running(&self) -> bool {
        let want = STATUS_DRIVER_OK | STATUS_FEATURES_OK;
        self.status & want == want && self.status & (STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED) == 0
    }

    /// Carries out the requests of every notified queue, against guest memory `mem`. Call after each guest
    /// write to the window (see the [module docs](super)); does nothing when nothing is pending.
    ///
    /// Notifications that arrive before `DRIVER_OK` are kept until the driver sets it. A queue whose rings are
    /// unusable, or a request that cannot be answered, stops that queue and sets `DEVICE_NEEDS_RESET` (with a
    /// configuration-change interrupt).
    pub fn process<M: GuestMemory + ?Sized>(&mut self, mem: &mut M) {
        if !self.running() {
            return;
        }
        let pending = core::mem::take(&mut self.notify_pending);
        for index in 0..self.num_queues() {
            if pending & (1 << index) != 0 {
                self.process_queue(index, mem);
            }
        }
    }

    fn process_queue<M: GuestMemory + ?Sized>(&mut self, index: usize, mem: &mut M) {
        let Some(queue) = self.queues.get_mut(index) else { return };
        if !queue.ready || queue.broken {
            return;
        }
        if !queue.size_valid(QUEUE_SIZE_MAX) {
            self.fail_queue(index);
            return;
        }
        let mut used_any = false;
        let mut failed = false;
        // Each pop consumes one available entry and the guest cannot add more meanwhile: at most `size` rounds.
        loop {
            // A queue that waits for outside work (a receive queue without a frame) keeps its buffers.
            if !self.device.can_use(index) {
                break;
            }
            let Some(queue) = self.queues.get_mut(index) else { return };
            let head = match queue.pop(mem) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            };
            let answered = DescChain::new(mem, queue.desc, queue.size, head)
                .and_then(|chain| self.device.handle(index, &chain, mem))
                .and_then(|written| queue.push_used(mem, head, written));
            if answered.is_err() {
                failed = true;
                break;
            }
            used_any = true;
        }
        if used_any && !self.queues.get(index).is_some_and(|q| q.interrupt_suppressed(mem)) {
            self.notify_driver(INT_USED_BUFFER);
        }
        if failed {
            self.fail_queue(index);
        }
    }

    fn fail_queue(&mut self, index: usize) {
        if let Some(queue) = self.queues.get_mut(index) {
            queue.broken = true;
        }
        self.status |= STATUS_DEVICE_NEEDS_RESET;
        if self.status & STATUS_DRIVER_OK != 0 {
            self.notify_driver(INT_CONFIG_CHANGE);
        }
    }

    /// Device reset (a driver writing 0 to `Status`): every register back to its initial value, pending
    /// notifications and interrupts dropped, queues forgotten.
    pub fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = [Queue::default(); MAX_QUEUES];
        self.interrupt_status = 0;
        self.line.set(false);
        self.notify_pending = 0;
        self.device.reset();
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !STATUS_DEVICE_NEEDS_RESET & 0xff;
        // A driver without VIRTIO_F_VERSION_1 is accepted, as QEMU accepts it (see the module docs).
        if value & STATUS_FEATURES_OK != 0
            && self.status & STATUS_FEATURES_OK == 0
            && self.driver_features & !self.offered_features() != 0
        {
            value &= !STATUS_FEATURES_OK;
        }
        let was_running = self.running();
        self.status = value | (self.status & STATUS_DEVICE_NEEDS_RESET);
        if self.running() && !was_running {
            // Buffers the driver made available before DRIVER_OK are looked at now.
            self.notify_pending |= self.ready_queue_mask();
        }
    }

    fn ready_queue_mask(&self) -> u32 {
        let mut mask = 0;
        for (i, queue) in self.queues.iter().enumerate().take(self.num_queues()) {
            if queue.ready {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The queue `QueueSel` names, if the device has it.
    fn selected_queue(&mut self) -> Option<&mut Queue> {
        let index = self.queue_sel as usize;
        let count = self.num_queues();
        self.queues.get_mut(index).filter(|_| index < count)
    }

    /// Applies `set` to the selected queue's configuration, which the driver may change only while the queue
    /// is not ready (writes at other times are ignored).
    fn configure_queue(&mut self, set: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue().filter(|q| !q.ready) {
            set(queue);
        }
    }

    fn read_register(&mut self, offset: u64) -> Result<u32, MmioError> {
        Ok(match offset {
            MAGIC_VALUE => MAGIC,
            VERSION_REG => VERSION,
            DEVICE_ID => self.device.device_id(),
            VENDOR_ID_REG => self.vendor_id,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self.selected_queue().map_or(0, |_| u32::from(QUEUE_SIZE_MAX)),
            QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            INTERRUPT_STATUS => self.interrupt_status,
            STATUS => self.status,
            CONFIG_GENERATION => 0,
            _ => return Err(MmioError::Unsupported),
        })
    }

    fn write_register(&mut self, offset: u64, value: u32) -> Result<(), MmioError> {
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = value,
            DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            DRIVER_FEATURES => {
                // Features are fixed once FEATURES_OK is accepted; bits past 63 do not exist.
                if self.status & STATUS_FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => self.driver_features = low(self.driver_features),
                        1 => self.driver_features = high(self.driver_features),
                        _ => {}
                    }
                }
            }
            QUEUE_SEL => self.queue_sel = value,
            QUEUE_NUM => self.configure_queue(|q| q.size = value.min(u32::from(u16::MAX)) as u16),
            QUEUE_READY => {
                if let Some(queue) = self.selected_queue() {
                    queue.set_ready(value & 1 != 0);
                }
            }
            QUEUE_NOTIFY => {
                // Without VIRTIO_F_NOTIFICATION_DATA the value is just the queue index.
                if (value as usize) < self.num_queues() {
                    self.notify_pending |= 1 << value;
                }
            }
            INTERRUPT_ACK => {
                self.interrupt_status &= !value;
                self.line.set(self.interrupt_status != 0);
            }
            STATUS => self.write_status(value),
            QUEUE_DESC_LOW => self.configure_queue(|q| q.desc = low(q.desc)),
            QUEUE_DESC_HIGH => self.configure_queue(|q| q.desc = high(q.desc)),
            QUEUE_DRIVER_LOW => self.configure_queue(|q| q.driver = low(q.driver)),
            QUEUE_DRIVER_HIGH => self.configure_queue(|q| q.driver = high(q.driver)),
            QUEUE_DEVICE_LOW => self.configure_queue(|q| q.device = low(q.device)),
            QUEUE_DEVICE_HIGH => self.configure_queue(|q| q.device = high(q.device)),
            _ => return Err(MmioError::Unsupported),
        }
        Ok(())
    }
}

/// Whether an access of `size` bytes at `offset` is naturally aligned and 1, 2 or 4 bytes wide.
fn config_access_ok(offset: u64, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && offset.is_multiple_of(u64::from(size))
}

impl<D: VirtioDevice, I: IrqTrigger> MmioDevice for VirtioMmio<D, I> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        if offset < CONFIG_OFFSET {
            if size != 4 || !offset.is_multiple_of(4) {
                return Err(MmioError::Unsupported);
            }
            return self.read_register(offset).map(u64::from);
        }
        let config = offset - CONFIG_OFFSET;
        if !config_access_ok(offset, size) || config >= CONFIG_SIZE {
            return Err(MmioError::Unsupported);
        }
        let mut bytes = [0u8; 4];
        let len = usize::from(size).min(bytes.len());
        self.device.read_config(config, bytes.get_mut(..len).unwrap_or_default());
        Ok(u64::from(u32::from_le_bytes(bytes)))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        if offset < CONFIG_OFFSET {
            if size != 4 || !offset.is_multiple_of(4) {
                return Err(MmioError::Unsupported);
            }
            return self.write_register(offset, value as u32);
        }
        let config = offset - CONFIG_OFFSET;
        if !config_access_ok(offset, size) || config >= CONFIG_SIZE {
            return Err(MmioError::Unsupported);
        }
        let bytes = (value as u32).to_le_bytes();
        let len = usize::from(size).min(bytes.len());
        self.device.write_config(config, bytes.get(..len).unwrap_or_default());
        Ok(())
    }

    /// Completions that do not wait for a guest access: work the device got from outside, and notifications
    /// not yet served.
    fn poll(&mut self, _now: u64, ram: &mut Ram) {
        self.poll_outside(ram);
    }

    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        self.save(out)
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        self.load(input, mode)
    }
}

/// The transport shared between a [`DeviceMap`](crate::dev::DeviceMap) (which takes the guest's accesses) and
/// the VMM (which calls [`VirtioMmio::process`] through the same `RefCell`). An access that finds the cell
/// already borrowed (impossible in a single-threaded VMM that does not hold a borrow across guest execution)
/// is refused rather than panicking.
impl<D: VirtioDevice> MmioDevice for &RefCell<VirtioMmio<D>> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        self.try_borrow_mut().map_err(|_| MmioError::Unsupported)?.read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        self.try_borrow_mut().map_err(|_| MmioError::Unsupported)?.write(offset, size, value)
    }
}
impl<D: VirtioDevice, I: IrqTrigger> VirtioMmio<D, I> {
    fn save(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.u32(self.device.device_id());
        out.u32(self.vendor_id);
        out.u32s(&[self.status, self.device_features_sel, self.driver_features_sel]);
        out.u64(self.driver_features);
        out.u32(self.queue_sel);
        out.u32(MAX_QUEUES as u32);
        for queue in &self.queues {
            queue.save_state(out);
        }
        out.u32(self.interrupt_status);
        self.line.save_state(out);
        out.u32(self.notify_pending);
        self.device.save_state(out)
    }

    fn load(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u32()? != self.device.device_id() {
            return Err(input.mismatch("the virtio device type"));
        }
        let vendor_id = input.u32()?;
        let [status, device_features_sel, driver_features_sel] = input.u32s::<3>()?;
        let driver_features = input.u64()?;
        let queue_sel = input.u32()?;
        if input.u32()? != MAX_QUEUES as u32 {
            return Err(input.mismatch("the transport's queue count"));
        }
        let mut queues = [Queue::default(); MAX_QUEUES];
        for queue in &mut queues {
            *queue = Queue::read_state(input, QUEUE_SIZE_MAX)?;
        }
        let interrupt_status = input.u32()?;
        let line = self.line.read_state(input)?;
        let notify_pending = input.u32()?;
        if status & !0xff != 0 || notify_pending >> MAX_QUEUES != 0 {
            return Err(input.invalid("virtio-mmio status or notification bits no driver produces"));
        }
        let mut device_input = input.clone();
        self.device.load_state(input, LoadMode::Check)?;
        if mode.apply() {
            self.device.load_state(&mut device_input, LoadMode::Apply)?;
            self.vendor_id = vendor_id;
            (self.status, self.device_features_sel, self.driver_features_sel) =
                (status, device_features_sel, driver_features_sel);
            (self.driver_features, self.queue_sel, self.queues) = (driver_features, queue_sel, queues);
            (self.interrupt_status, self.line, self.notify_pending) = (interrupt_status, line, notify_pending);
        }
        Ok(())
    }
}
