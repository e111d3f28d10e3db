//! Virtio 1.x devices on the MMIO transport, as QEMU's `virt` machine places them: the transport register file
//! ([`mmio`]), split virtqueues ([`queue`]), the block device ([`blk`]), the network device ([`net`]) and the
//! eight slots the bus holds them in ([`slots`]).
//!
//! Everything a guest driver supplies (register values, queue sizes, ring and buffer addresses, descriptor
//! lengths, flags and `next` indices, request headers) is untrusted. This code never indexes, slices or
//! allocates with such a value unchecked, never panics on it, and reaches guest memory only through the
//! bounds-checked [`GuestMemory`] accessors. A driver that breaks the protocol gets an error status on its
//! request or, when no status can be written, `DEVICE_NEEDS_RESET`; it never gets the host to hang.
//!
//! # Notify/process contract
//!
//! A guest write to `QueueNotify` is an MMIO access, and [`MmioDevice::write`](super::MmioDevice::write) has no
//! access to guest RAM. So the transport only *records* the notification; the VMM then calls
//! [`VirtioMmio::process`](mmio::VirtioMmio::process) with the guest RAM, which does the work: it walks the
//! available rings of the notified queues, carries requests out against the backend, fills the used rings and
//! raises the interrupt. The VMM should call `process` after every guest write to the device's window, before
//! the guest runs on (it costs one branch when nothing is pending; [`VirtioMmio::notify_pending`] says whether
//! there is work). Processing later, e.g. at the end of a time slice, is also correct, because a driver learns
//! of completions only through the used ring and the interrupt; it only adds latency.
//!
//! Work that arrives from outside the guest (a frame from a bridge, a finished job) is reported by the device
//! ([`VirtioDevice::take_outside_work`]) and served by [`VirtioMmio::poll_outside`], which the bus calls from
//! [`MmioDevice::poll`](super::MmioDevice::poll) at every full update: the same processing, with no guest
//! access.
//!
//! When the device must stay reachable from a [`DeviceMap`](super::DeviceMap) (which holds a `&mut dyn
//! MmioDevice` for the machine's lifetime) while the VMM also calls `process`, put the transport in a
//! [`core::cell::RefCell`]: `&RefCell<VirtioMmio<D>>` implements [`MmioDevice`](super::MmioDevice) too.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod slots;

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;

pub use blk::{BlockBackend, BlockError, VirtioBlk};
pub use mmio::VirtioMmio;
pub use net::{NetBackend, VirtioNet};

use crate::mem::Ram;

/// Device status bit: the guest has noticed the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Device status bit: the guest knows how to drive the device.
pub const STATUS_DRIVER: u32 = 2;
/// Device status bit: the driver is set up and ready to drive the device.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Device status bit: the driver has acknowledged the features it understands; feature negotiation is over.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Device status bit: the device hit an error it cannot recover from; the driver must reset it.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
/// Device status bit: the driver gave up on the device.
pub const STATUS_FAILED: u32 = 128;

/// Feature bit: the descriptor flag `VIRTQ_DESC_F_INDIRECT` is supported (never offered here).
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: the `used_event`/`avail_event` fields are in use (never offered here).
pub const F_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: the device complies with virtio 1.x (always offered; a driver that does not accept it is served
/// anyway, as QEMU serves it: see [`mmio`]).
pub const F_VERSION_1: u64 = 1 << 32;

/// `InterruptStatus` bit: the device used a buffer in some virtqueue.
pub const INT_USED_BUFFER: u32 = 1;
/// `InterruptStatus` bit: the configuration (or `DEVICE_NEEDS_RESET`) changed.
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Virtio device ID of a block device.
pub const DEVICE_ID_BLOCK: u32 = 2;

/// Guest memory as seen by a virtio device: bounds-checked byte ranges by guest real address.
///
/// The copies answer `None` (copying nothing) when any byte of `[addr, addr + len)` is not guest memory
/// (including when `addr + len` overflows). Memory shared with other threads has no slices to lend: devices copy
/// through bounded bounce buffers on the stack, and take the direct slices only where they are offered.
/// Implemented for [`Ram`]; a board whose RAM is laid out differently implements it for its own type.
pub trait GuestMemory {
    /// Whether every byte of `[addr, addr + len)` is guest memory.
    fn contains(&self, addr: u64, len: u64) -> bool;

    /// Copies `buf.len()` bytes from guest address `addr` into `buf`.
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Option<()>;

    /// Copies `buf` to guest address `addr`.
    fn write_bytes(&mut self, addr: u64, buf: &[u8]) -> Option<()>;

    /// The bytes `[addr, addr + len)` when the memory can lend them directly (memory owned by this thread),
    /// `None` when outside or not lent: then copy.
    fn slice(&self, _addr: u64, _len: u64) -> Option<&[u8]> {
        None
    }

    /// The bytes `[addr, addr + len)` for writing, when the memory can lend them directly (see
    /// [`slice`](Self::slice)).
    fn slice_mut(&mut self, _addr: u64, _len: u64) -> Option<&mut [u8]> {
        None
    }

    /// Little-endian u16 at `addr`.
    fn read_u16(&self, addr: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read_bytes(addr, &mut b)?;
        Some(u16::from_le_bytes(b))
    }

    /// Stores `value` little-endian at `addr`.
    fn write_u16(&mut self, addr: u64, value: u16) -> Option<()> {
        self.write_bytes(addr, &value.to_le_bytes())
    }

    /// Stores `value` little-endian at `addr`.
    fn write_u32(&mut self, addr: u64, value: u32) -> Option<()> {
        self.write_bytes(addr, &value.to_le_bytes())
    }
}

impl GuestMemory for Ram<'_> {
    fn contains(&self, addr: u64, len: u64) -> bool {
        Ram::contains(self, addr, len)
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        Ram::read_bytes(self, addr, buf)
    }
    fn write_bytes(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        Ram::write_bytes(self, addr, buf)
    }
    fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        Ram::slice(self, addr, len)
    }
    fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        Ram::slice_mut(self, addr, len)
    }
}

impl<T: GuestMemory + ?Sized> GuestMemory for &mut T {
    fn contains(&self, addr: u64, len: u64) -> bool {
        (**self).contains(addr, len)
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        (**self).read_bytes(addr, buf)
    }
    fn write_bytes(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        (**self).write_bytes(addr, buf)
    }
    fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        (**self).slice(addr, len)
    }
    fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        (**self).slice_mut(addr, len)
    }
}

/// A virtio device behind a transport: its identity, features, configuration space and request handling.
///
/// The transport ([`VirtioMmio`]) owns the registers, the feature negotiation, the queues' addresses and
/// indices; the device sees one validated-as-far-as-possible descriptor chain at a time.
pub trait VirtioDevice {
    /// The virtio device ID (e.g. [`DEVICE_ID_BLOCK`]).
    fn device_id(&self) -> u32;

    /// Device-specific features offered (the transport adds [`F_VERSION_1`]). Must not include
    /// [`F_INDIRECT_DESC`] or [`F_EVENT_IDX`]: the queue code implements neither.
    fn features(&self) -> u64;

    /// Number of virtqueues, at most [`mmio::MAX_QUEUES`].
    fn num_queues(&self) -> usize;

    /// Fills `data` with the configuration space bytes starting at `offset`; bytes past the end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to the configuration space. The default ignores it (no writable fields).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// The transport was reset (status written 0): drop any per-driver state.
    fn reset(&mut self) {}

    /// The queues (bit `i`: queue `i`) on which work arrived from outside the guest since the last call (a
    /// frame from a bridge for the receive queue, a finished job): the transport serves them at its next poll
    /// as if the driver had notified them. The default: none, for a device that only answers requests.
    fn take_outside_work(&mut self) -> u32 {
        0
    }

    /// Whether the device can use another buffer of queue `queue` now. A request queue always can; a receive
    /// queue only while it holds something to deliver, so that the driver's buffers stay available until
    /// then. The default: always.
    fn can_use(&self, queue: usize) -> bool {
        let _ = queue;
        true
    }

    /// Writes the device's own state for a snapshot (the transport writes the queues). The default refuses: a
    /// device with state must say what it is.
    fn save_state(&self, out: &mut crate::snapshot::Writer) -> Result<(), crate::snapshot::SnapshotError> {
        let _ = out;
        Err(crate::snapshot::SnapshotError::Unsupported { section: crate::snapshot::SectionId::TOP })
    }

    /// Reads what [`save_state`](VirtioDevice::save_state) wrote, validating it; under `Apply` replaces the
    /// device's state, all of it or (on any error) nothing.
    fn load_state(
        &mut self,
        input: &mut crate::snapshot::Reader,
        mode: crate::snapshot::LoadMode,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        let _ = mode;
        Err(crate::snapshot::SnapshotError::Unsupported { section: input.section_id() })
    }

    /// Carries out the request in `chain` (taken from queue `queue`) and answers the number of bytes written
    /// into its device-writable part, for the used ring. [`ChainBroken`] means the request could not even be
    /// answered (e.g. no status byte to write): the transport then stops the queue and asks for a reset.
    fn handle<M: GuestMemory + ?Sized>(
        &mut self,
        queue: usize,
        chain: &queue::DescChain,
        mem: &mut M,
    ) -> Result<u32, ChainBroken>;
}

/// A descriptor chain or ring that cannot be used at all: the device must stop the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBroken;
