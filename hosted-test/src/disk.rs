//! A virtio-blk backend on a host file: the disk image given with `--disk`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use trapeze::dev::virtio::blk::{BlockBackend, BlockError, SECTOR_SIZE};

/// A disk image file. Writes go to the file (the kernel's page cache) before the request completes, and a
/// guest flush makes them durable with `sync_data`.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    sectors: u64,
    read_only: bool,
}

impl FileDisk {
    /// Opens `path` for reading and writing, or read-only when writing is not permitted.
    pub fn open(path: &Path) -> Result<Self, String> {
        let (file, read_only) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => (file, false),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                let file = File::open(path).map_err(|e| format!("cannot open disk image {}: {e}", path.display()))?;
                (file, true)
            }
            Err(error) => return Err(format!("cannot open disk image {}: {error}", path.display())),
        };
        let length = file.metadata().map_err(|e| format!("disk image {}: {e}", path.display()))?.len();
        // A trailing partial sector is not addressable, as with QEMU's raw format.
        Ok(Self { file, sectors: length / SECTOR_SIZE as u64, read_only })
    }
}

fn offset(sector: u64) -> Result<u64, BlockError> {
    sector.checked_mul(SECTOR_SIZE as u64).ok_or(BlockError::OutOfRange)
}

impl BlockBackend for FileDisk {
    fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.file.read_exact_at(buf, offset(sector)?).map_err(|_| BlockError::Io)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.file.write_all_at(buf, offset(sector)?).map_err(|_| BlockError::Io)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Io)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
