//! The eight virtio-mmio slots of QEMU's `virt` machine as the bus holds them: each slot empty or holding one
//! device of a closed set ([`SlotDevice`]), reached by an index computation from the address and dispatched by
//! `match`, not through `dyn`, because every guest access to a virtio device goes through here.
//!
//! The backends are the host's choice, named once by a [`Backends`] type with one associated type per device
//! kind, so the machine has one type parameter however many kinds there are. A new kind (virtio-net on a
//! bridge, a spooled printer) is a new variant, a new associated type and a new arm in each `match`; nothing
//! else changes shape.
//!
//! An empty slot answers no access (the bus reports an access fault, as for any address without a device): a
//! VM sees only the devices it was given, and its devicetree lists only the populated slots. (QEMU answers an
//! empty slot with the magic value, version and device ID 0 and lists all eight; our guests find their
//! devices through the devicetree, and the `contain` guest checks that an empty slot faults.)
//!
//! Never trusts the guest: addresses outside the slots, offsets and widths are checked by the index
//! computation and by each transport; nothing here panics, allocates or blocks.

use super::blk::{BlockBackend, VirtioBlk};
use super::mmio::VirtioMmio;
use super::net::{Mac, NetBackend, NoNet, VirtioNet};
use super::VirtioDevice;
use crate::dev::slots::{self, VIRTIO_COUNT};
use crate::dev::{MmioDevice, MmioError};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};

/// The host backends of a machine's virtio devices, one associated type per device kind.
///
/// Any [`BlockBackend`] is a `Backends` whose disks are of that type, so a machine with disks only names its
/// disk type (`VirtDevices<'_, S, FileDisk>`); a machine with more kinds of devices names a type of its own
/// that implements this trait.
pub trait Backends {
    /// The storage behind each virtio-blk device.
    type Block: BlockBackend;
    /// The port behind each virtio-net NIC (a bridge port).
    type Net: NetBackend;
}

impl<B: BlockBackend> Backends for B {
    type Block = B;
    type Net = NoNet;
}

/// A device in a virtio-mmio slot: one variant per device kind, each a transport in front of its device.
///
/// The NIC carries its one waiting frame inline (about 1.5 KiB), so every slot is that large: eight slots cost
/// some 15 KiB per machine, which the core prefers to a heap it does not have.
#[allow(clippy::large_enum_variant)]
pub enum SlotDevice<K: Backends> {
    /// A virtio-blk disk.
    Block(VirtioMmio<VirtioBlk<K::Block>>),
    /// A virtio-net NIC.
    Net(VirtioMmio<VirtioNet<K::Net>>),
    /// A test device that receives messages from outside the guest (proves the poll path).
    #[cfg(test)]
    Inbox(VirtioMmio<fake::Inbox>),
}

/// Expands `$body` once per variant with `$transport` bound to the variant's transport: one `match`, every arm
/// monomorphic.
macro_rules! each_transport {
    ($device:expr, $transport:ident => $body:expr) => {
        match $device {
            SlotDevice::Block($transport) => $body,
            SlotDevice::Net($transport) => $body,
            #[cfg(test)]
            SlotDevice::Inbox($transport) => $body,
        }
    };
}

impl<K: Backends> SlotDevice<K> {
    /// A virtio-blk disk over `backend`.
    pub fn block(backend: K::Block) -> Self {
        SlotDevice::Block(VirtioMmio::new(VirtioBlk::new(backend)))
    }

    /// A virtio-net NIC with address `mac` over `backend`.
    pub fn net(backend: K::Net, mac: Mac) -> Self {
        SlotDevice::Net(VirtioMmio::new(VirtioNet::new(backend, mac)))
    }

    /// The NIC, when the slot holds one.
    pub fn as_net(&self) -> Option<&VirtioMmio<VirtioNet<K::Net>>> {
        match self {
            SlotDevice::Net(nic) => Some(nic),
            _ => None,
        }
    }

    /// The NIC, mutably, when the slot holds one.
    pub fn as_net_mut(&mut self) -> Option<&mut VirtioMmio<VirtioNet<K::Net>>> {
        match self {
            SlotDevice::Net(nic) => Some(nic),
            _ => None,
        }
    }

    /// The virtio device ID (what `DeviceID` reads), which also tags the slot in a snapshot.
    pub fn device_id(&self) -> u32 {
        each_transport!(self, transport => transport.device().device_id())
    }

    /// The last raise or lower of the slot's interrupt output since the previous call, for the PLIC.
    pub fn take_irq_update(&mut self) -> Option<bool> {
        each_transport!(self, transport => transport.take_irq_update())
    }

    /// Serves pending queue notifications against `ram` (after a guest write to the slot).
    pub fn process(&mut self, ram: &mut Ram) {
        each_transport!(self, transport => if transport.notify_pending() { transport.process(ram) })
    }

    /// The disk, when the slot holds one.
    pub fn as_block(&self) -> Option<&VirtioMmio<VirtioBlk<K::Block>>> {
        match self {
            SlotDevice::Block(disk) => Some(disk),
            _ => None,
        }
    }

    /// The disk, mutably, when the slot holds one.
    pub fn as_block_mut(&mut self) -> Option<&mut VirtioMmio<VirtioBlk<K::Block>>> {
        match self {
            SlotDevice::Block(disk) => Some(disk),
            _ => None,
        }
    }
}

impl<K: Backends> MmioDevice for SlotDevice<K> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        each_transport!(self, transport => transport.read(offset, size))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        each_transport!(self, transport => transport.write(offset, size, value))
    }
    fn poll(&mut self, now: u64, ram: &mut Ram) {
        each_transport!(self, transport => transport.poll(now, ram))
    }
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        each_transport!(self, transport => transport.save_state(out))
    }
    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        each_transport!(self, transport => transport.load_state(input, mode))
    }
}

/// Why a device could not be put in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// There are only [`VIRTIO_COUNT`] slots.
    NoSuchSlot(usize),
    /// The slot already holds a device.
    Occupied(usize),
}

/// The eight virtio-mmio slots.
pub struct VirtioSlots<K: Backends> {
    slots: [Option<SlotDevice<K>>; VIRTIO_COUNT],
}

impl<K: Backends> Default for VirtioSlots<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Backends> VirtioSlots<K> {
    /// Eight empty slots.
    pub fn new() -> Self {
        Self { slots: core::array::from_fn(|_| None) }
    }

    /// Puts `device` in slot `index` (its window and PLIC source are the slot table's
    /// [`VIRTIO`](slots::VIRTIO)`[index]`).
    pub fn attach(&mut self, index: usize, device: SlotDevice<K>) -> Result<(), SlotError> {
        let slot = self.slots.get_mut(index).ok_or(SlotError::NoSuchSlot(index))?;
        if slot.is_some() {
            return Err(SlotError::Occupied(index));
        }
        *slot = Some(device);
        Ok(())
    }

    /// Takes the device out of slot `index`, leaving it empty.
    pub fn detach(&mut self, index: usize) -> Option<SlotDevice<K>> {
        self.slots.get_mut(index)?.take()
    }

    /// The device in slot `index`.
    pub fn get(&self, index: usize) -> Option<&SlotDevice<K>> {
        self.slots.get(index)?.as_ref()
    }

    /// The device in slot `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut SlotDevice<K>> {
        self.slots.get_mut(index)?.as_mut()
    }

    /// The populated slots, in slot order, with their index.
    pub fn populated(&self) -> impl Iterator<Item = (usize, &SlotDevice<K>)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| Some((index, slot.as_ref()?)))
    }

    /// The device answering at guest real `addr`, and the offset into its window.
    pub fn route(&self, addr: u64) -> Option<(usize, u64)> {
        let (index, offset) = slots::virtio_slot(addr)?;
        self.slots.get(index)?.as_ref()?;
        Some((index, offset))
    }

    /// Forwards each slot's last raise or lower to `signal(PLIC source, level)`.
    pub fn forward_lines(&mut self, mut signal: impl FnMut(u32, bool)) {
        for (slot, device) in slots::VIRTIO.iter().zip(&mut self.slots) {
            if let Some(level) = device.as_mut().and_then(SlotDevice::take_irq_update) {
                signal(slot.irq_or_zero(), level);
            }
        }
    }

    /// Polls every populated slot (see [`MmioDevice::poll`]).
    pub fn poll(&mut self, now: u64, ram: &mut Ram) {
        for device in self.slots.iter_mut().flatten() {
            device.poll(now, ram);
        }
    }

    /// Writes one section per slot (`VIRT` 0 to 7): the device ID of the device in it (0: empty), then the
    /// device's state.
    pub fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        for (index, slot) in self.slots.iter().enumerate() {
            let section = section(index);
            out.section(section, |out| {
                out.u32(slot.as_ref().map_or(0, SlotDevice::device_id));
                match slot {
                    Some(device) => device.save_state(out).map_err(in_section(section)),
                    None => Ok(()),
                }
            })?;
        }
        Ok(())
    }

    /// Reads what [`save_state`](Self::save_state) wrote into slots holding the same kinds of devices; a slot
    /// that is empty here but not in the snapshot, or holds another kind, is a mismatch.
    pub fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let section = section(index);
            input.read_section(section, |input| {
                if input.u32()? != slot.as_ref().map_or(0, SlotDevice::device_id) {
                    return Err(input.mismatch("the device in a virtio-mmio slot"));
                }
                match slot {
                    Some(device) => device.load_state(input, mode).map_err(in_section(section)),
                    None => Ok(()),
                }
            })?;
        }
        Ok(())
    }
}

/// The section of virtio-mmio slot `index` in a snapshot.
const fn section(index: usize) -> SectionId {
    SectionId::new(*b"VIRT", index as u32)
}

/// Names the section in a device's `Unsupported` answer.
fn in_section(section: SectionId) -> impl Fn(SnapshotError) -> SnapshotError {
    move |error| match error {
        SnapshotError::Unsupported { .. } => SnapshotError::Unsupported { section },
        other => other,
    }
}

/// Test devices for the slots.
#[cfg(test)]
pub(crate) mod fake {
    use super::super::queue::DescChain;
    use super::super::{ChainBroken, GuestMemory, VirtioDevice};
    use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

    /// Device ID of the inbox: one no real device has.
    pub const DEVICE_ID_INBOX: u32 = 0xff;
    /// The longest message the inbox holds.
    pub const MESSAGE_MAX: usize = 32;

    /// A device with one receive queue and a one-message mailbox the host fills from outside the guest
    /// ([`deliver`](Inbox::deliver)); the message goes into the next buffer the driver made available, at the
    /// next poll, as a frame from a bridge would.
    #[derive(Default)]
    pub struct Inbox {
        message: Option<([u8; MESSAGE_MAX], usize)>,
        arrived: bool,
    }

    impl Inbox {
        /// A message arrives from outside (cut to [`MESSAGE_MAX`] bytes); false when one is still waiting.
        pub fn deliver(&mut self, message: &[u8]) -> bool {
            if self.message.is_some() {
                return false;
            }
            let len = message.len().min(MESSAGE_MAX);
            let mut bytes = [0; MESSAGE_MAX];
            bytes[..len].copy_from_slice(&message[..len]);
            self.message = Some((bytes, len));
            self.arrived = true;
            true
        }
    }

    impl VirtioDevice for Inbox {
        fn device_id(&self) -> u32 {
            DEVICE_ID_INBOX
        }
        fn features(&self) -> u64 {
            0
        }
        fn num_queues(&self) -> usize {
            1
        }
        fn read_config(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn take_outside_work(&mut self) -> u32 {
            u32::from(core::mem::take(&mut self.arrived))
        }
        fn can_use(&self, _queue: usize) -> bool {
            self.message.is_some()
        }
        fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
            out.bool(self.arrived);
            match &self.message {
                Some((bytes, len)) => {
                    out.u8(*len as u8);
                    out.bytes(&bytes[..*len]);
                }
                None => out.u8(0xff),
            }
            Ok(())
        }
        fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
            let arrived = input.bool()?;
            let message = match input.u8()? {
                0xff => None,
                len if usize::from(len) <= MESSAGE_MAX => {
                    let mut bytes = [0; MESSAGE_MAX];
                    bytes[..usize::from(len)].copy_from_slice(input.bytes(usize::from(len))?);
                    Some((bytes, usize::from(len)))
                }
                _ => return Err(input.invalid("an inbox message longer than the inbox")),
            };
            if mode.apply() {
                (self.arrived, self.message) = (arrived, message);
            }
            Ok(())
        }
        fn handle<M: GuestMemory + ?Sized>(
            &mut self,
            _queue: usize,
            chain: &DescChain,
            mem: &mut M,
        ) -> Result<u32, ChainBroken> {
            let Some((bytes, len)) = self.message.take() else { return Ok(0) };
            let mut written = 0usize;
            let mut segments = chain.segments(true, 0, len as u64);
            while let Some((addr, n)) = segments.next(mem) {
                let part = bytes.get(written..written + n as usize).ok_or(ChainBroken)?;
                mem.write_bytes(addr, part).ok_or(ChainBroken)?;
                written += n as usize;
            }
            Ok(written as u32)
        }
    }
}
