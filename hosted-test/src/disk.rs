//! A virtio-blk backend on a host file: the disk image given with `--disk`, either whole as one VM's disk
//! ([`BlockBackend`]) or as the physical disk that partitions (`trapeze::dev::block`) carve up
//! ([`PhysicalBlock`]). Both paths write with `write_all_at` before the request completes and make writes
//! durable with `sync_data` on a flush.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use trapeze::dev::block::PhysicalBlock;
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

impl FileDisk {
    /// Reads the sectors from `sector` into `buf`, refusing a range past the end of the image.
    fn read_at(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(sector, buf.len())?;
        self.file.read_exact_at(buf, offset(sector)?).map_err(|_| BlockError::Io)
    }

    /// Writes `buf` into the file (the kernel's page cache, which the image's readers see) before returning.
    fn write_at(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.check(sector, buf.len())?;
        self.file.write_all_at(buf, offset(sector)?).map_err(|_| BlockError::Io)
    }

    /// Whole sectors inside the image: a write past the end would grow the file instead of failing.
    fn check(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        let sectors = u64::try_from(len / SECTOR_SIZE).map_err(|_| BlockError::OutOfRange)?;
        let end = sector.checked_add(sectors).ok_or(BlockError::OutOfRange)?;
        if len.is_multiple_of(SECTOR_SIZE) && end <= self.sectors {
            Ok(())
        } else {
            Err(BlockError::OutOfRange)
        }
    }
}

impl BlockBackend for FileDisk {
    fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.read_at(sector, buf)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.write_at(sector, buf)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Io)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

impl PhysicalBlock for FileDisk {
    fn capacity(&self) -> u64 {
        self.sectors
    }

    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.read_at(sector, buf)
    }

    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.write_at(sector, buf)
    }

    fn sync(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Io)
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use trapeze::dev::block::{DiskLayout, Extent, LbaMap};

    use super::*;

    /// Two partitions of one image file: each VM's writes are in the file (read back through another handle)
    /// when the write returns, at its extents' offsets; a write past a partition's end fails and changes nothing;
    /// a flush succeeds; every byte outside the partitions is unchanged.
    #[test]
    fn partitions_of_an_image_file_write_through_at_their_extents() {
        let path = std::env::temp_dir().join(format!("trapeze-partition-file-{}.img", std::process::id()));
        let original: Vec<u8> = (0..32 * SECTOR_SIZE).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &original).expect("write the image");
        let disk = RefCell::new(FileDisk::open(&path).expect("open the image"));
        let mut layout = DiskLayout::<FileDisk, 2, 2>::new(&disk).expect("layout");
        layout.add(LbaMap::new(&[Extent::new(20, 2), Extent::new(4, 2)]).unwrap()).expect("vm 0");
        layout.add(LbaMap::single(8, 4).unwrap()).expect("vm 1");
        assert!(layout.add(LbaMap::single(30, 4).unwrap()).is_err(), "past the image's end");
        let mut partitions = layout.into_partitions();
        let (mut second, mut first) = (partitions.pop().unwrap(), partitions.pop().unwrap());

        let a = vec![0xa5u8; 2 * SECTOR_SIZE];
        first.write(1, &a).expect("straddling vm 0's extents");
        second.write(3, &a[..SECTOR_SIZE]).expect("vm 1's last sector");
        assert_eq!(first.write(3, &a), Err(BlockError::OutOfRange), "past vm 0's end");
        let seen = std::fs::read(&path).expect("read the image back");
        let mut expected = original.clone();
        for sector in [21, 4, 11] {
            expected[sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE].fill(0xa5);
        }
        assert!(seen == expected, "the image holds exactly the two VMs' writes at their offsets");
        assert_eq!(first.flush(), Ok(()));
        let mut back = vec![0u8; 4 * SECTOR_SIZE];
        second.read(0, &mut back).expect("read vm 1's disk");
        assert_eq!(&back[3 * SECTOR_SIZE..], &a[..SECTOR_SIZE]);
        assert_eq!(&back[..3 * SECTOR_SIZE], &original[8 * SECTOR_SIZE..11 * SECTOR_SIZE]);
        let _ = std::fs::remove_file(&path);
    }
}
