//! The `virt` machine's devices in a snapshot: one section per device, in a fixed order (CLINT, PLIC, UART,
//! test finisher, the disk's virtio-mmio slot, then the extra device map). A slot's section says whether a
//! device was attached; restoring into a machine with a different set of devices is refused.

use super::VirtDevices;
use crate::dev::virtio::blk::BlockBackend;
use crate::dev::{MmioDevice, SerialBackend};
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};

const CLINT: SectionId = SectionId::new(*b"CLNT", 0);
const PLIC: SectionId = SectionId::new(*b"PLIC", 0);
const UART: SectionId = SectionId::new(*b"UART", 0);
const FINISHER: SectionId = SectionId::new(*b"TFIN", 0);
/// Virtio-mmio slot 0, where the disk sits.
const DISK_SLOT: SectionId = SectionId::new(*b"VIRT", 0);
const EXTRA: SectionId = SectionId::new(*b"XMAP", 0);

/// Names the section in a device's `Unsupported` answer.
fn in_section(section: SectionId) -> impl Fn(SnapshotError) -> SnapshotError {
    move |error| match error {
        SnapshotError::Unsupported { .. } => SnapshotError::Unsupported { section },
        other => other,
    }
}

impl<S: SerialBackend, B: BlockBackend> VirtDevices<'_, S, B> {
    pub(super) fn save_devices(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.section(CLINT, |out| self.clint.save_state(out))?;
        out.section(PLIC, |out| self.plic.save_state(out))?;
        out.section(UART, |out| self.uart.save_state(out))?;
        out.section(FINISHER, |out| self.finisher.save_state(out))?;
        out.section(DISK_SLOT, |out| {
            out.bool(self.disk.is_some());
            match &self.disk {
                Some(disk) => disk.save_state(out).map_err(in_section(DISK_SLOT)),
                None => Ok(()),
            }
        })?;
        out.section(EXTRA, |out| self.extra.save_state(out))
    }

    pub(super) fn load_devices(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        input.read_section(CLINT, |input| self.clint.load_state(input, mode))?;
        input.read_section(PLIC, |input| self.plic.load_state(input, mode))?;
        input.read_section(UART, |input| self.uart.load_state(input, mode))?;
        input.read_section(FINISHER, |input| self.finisher.load_state(input, mode))?;
        input.read_section(DISK_SLOT, |input| {
            if input.bool()? != self.disk.is_some() {
                return Err(input.mismatch("whether a disk is attached"));
            }
            match &mut self.disk {
                Some(disk) => disk.load_state(input, mode).map_err(in_section(DISK_SLOT)),
                None => Ok(()),
            }
        })?;
        input.read_section(EXTRA, |input| self.extra.load_state(input, mode))
    }
}
