//! The physical machine's virtio-mmio slots, probed once at boot: the virtio-blk disks (`disk`) and the virtio-net
//! NIC (`nic`) QEMU gives the board, each driven with `virtio-drivers`.
//!
//! Every slot is opened exactly once, here: `virtio-drivers`' MMIO transport resets its device when it is
//! dropped, so a second pass over the slots (one per device kind) would reset the devices the first pass had
//! set up. A slot whose device the board does not drive (or an empty one) is dropped, which resets it: harmless.
//!
//! QEMU fills the slots from the last one down, in the order of its command line; `run-qemu.sh` gives the disks
//! first and the NIC last, so the disks keep the slots (and the order) they had without a NIC.

use alloc::vec::Vec;
use core::ptr::NonNull;

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::disk::PhysicalDisk;
use crate::nic::PhysicalNic;

/// QEMU `virt`'s virtio-mmio slots: 0x1000_1000 + 0x1000 * i, for i in 0..8.
const SLOT_BASE: usize = 0x1000_1000;
const SLOT_SIZE: usize = 0x1000;
const SLOTS: usize = 8;

/// The devices found: the disks in the order QEMU's command line gave them, and the first NIC.
pub struct Found {
    pub disks: Vec<PhysicalDisk>,
    pub nic: Option<PhysicalNic>,
}

/// Opens every virtio-mmio slot once, from the last one down, and initialises the disks and the first NIC.
pub fn probe() -> Found {
    let mut found = Found { disks: Vec::new(), nic: None };
    for slot in (0..SLOTS).rev() {
        let base = SLOT_BASE + slot * SLOT_SIZE;
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else { continue };
        // SAFETY: `base` is one of QEMU `virt`'s virtio-mmio windows (device memory, 0x1000 bytes, always
        // present: an empty slot reads device ID 0 and the transport refuses it); only the VMM touches it, and
        // nothing else holds a pointer to it (`probe` runs once, at boot, and opens each slot once).
        let Ok(transport) = (unsafe { MmioTransport::new(header, SLOT_SIZE) }) else { continue };
        match transport.device_type() {
            DeviceType::Block => found.disks.extend(PhysicalDisk::new(transport, base)),
            DeviceType::Network if found.nic.is_none() => found.nic = PhysicalNic::new(transport, base),
            _ => {}
        }
    }
    found
}
