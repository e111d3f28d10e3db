//! The virtio block device (virtio 1.x §5.2): a disk of 512-byte sectors behind a [`BlockBackend`].
//!
//! Offered: `VIRTIO_BLK_F_SEG_MAX`, `VIRTIO_BLK_F_BLK_SIZE`, `VIRTIO_BLK_F_FLUSH`, and `VIRTIO_BLK_F_RO` for a
//! read-only backend. Requests: `IN` (read), `OUT` (write), `FLUSH` and `GET_ID`; any other type answers
//! `VIRTIO_BLK_S_UNSUPP`. A request is a descriptor chain holding, as one byte stream, a 16-byte header
//! (device-readable), the data (readable for `OUT`, writable for `IN` and `GET_ID`) and a status byte (the last
//! byte of the chain, device-writable). Any framing of that stream into descriptors is accepted
//! (`VIRTIO_F_ANY_LAYOUT` is implied by `VIRTIO_F_VERSION_1`).
//!
//! The sector number, the data length and every buffer come from the guest and are never trusted: a request is
//! checked in full (chain well formed and wholly in guest memory, header exactly 16 bytes, data on the side the
//! request type calls for, length a multiple of 512, every sector below the capacity, writes only to a writable
//! backend) before the backend is asked for anything; a request that fails a check answers
//! `VIRTIO_BLK_S_IOERR`. A chain whose status byte cannot be written cannot be answered at all; the transport
//! then asks the driver for a reset. Data moves between the backend and guest RAM directly, sector-aligned runs
//! straight from or into guest memory, sectors split across descriptors through a 512-byte bounce buffer on the
//! stack; nothing is allocated.

use super::queue::DescChain;
use super::{ChainBroken, GuestMemory, VirtioDevice, DEVICE_ID_BLOCK};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Size of a sector, the unit of `capacity` and of the request's `sector` field.
pub const SECTOR_SIZE: usize = 512;

/// Feature bit: `seg_max` in the configuration is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature bit: the device is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature bit: `blk_size` in the configuration is valid.
pub const F_BLK_SIZE: u64 = 1 << 6;
/// Feature bit: the flush request is supported.
pub const F_FLUSH: u64 = 1 << 9;

/// Request type: read sectors.
pub const T_IN: u32 = 0;
/// Request type: write sectors.
pub const T_OUT: u32 = 1;
/// Request type: flush the write cache.
pub const T_FLUSH: u32 = 4;
/// Request type: get the device ID string.
pub const T_GET_ID: u32 = 8;

/// Request status: success.
pub const S_OK: u8 = 0;
/// Request status: device or driver error.
pub const S_IOERR: u8 = 1;
/// Request status: request type not supported.
pub const S_UNSUPP: u8 = 2;

/// Length of the ID string `GET_ID` returns (NUL-padded).
pub const ID_BYTES: usize = 20;
/// Length of a request header: `type` (le32), `reserved` (le32), `sector` (le64).
pub const HEADER_LEN: u64 = 16;
/// Length of the configuration structure exposed (capacity through the topology fields and `writeback`).
pub const CONFIG_LEN: u64 = 34;

/// Why a backend operation failed. The guest sees `VIRTIO_BLK_S_IOERR` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The backing store reported an error.
    Io,
    /// The backend is read-only.
    ReadOnly,
    /// The sectors asked for are past the end (the device checks first; a backend may check again).
    OutOfRange,
}

/// The storage behind a virtio block device: a disk of [`capacity_sectors`](Self::capacity_sectors) sectors
/// of [`SECTOR_SIZE`] bytes.
///
/// The device calls `read`/`write` only with a buffer whose length is a nonzero multiple of [`SECTOR_SIZE`] and
/// a range `sector .. sector + len / 512` inside the capacity, and `write` never on a read-only backend.
///
/// Durability: `write` must not return `Ok` before the data is handed to the backing store (a file backend
/// calls `write_all` at the right offset, not just into a buffer of its own); the request completes, and the
/// guest may rely on it, as soon as `write` returns. `flush` must make every completed write durable (a file
/// backend calls `sync_data`); a backend that wants every write durable on its own may also sync in `write`.
pub trait BlockBackend {
    /// Size of the disk in sectors. Should not change while a guest uses the device.
    fn capacity_sectors(&self) -> u64;
    /// Reads `buf.len() / 512` sectors starting at `sector` into `buf`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf` to the sectors starting at `sector`; see the durability rule above.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;
    /// Whether writes are refused (the device then offers `VIRTIO_BLK_F_RO`).
    fn read_only(&self) -> bool;
}

impl<T: BlockBackend + ?Sized> BlockBackend for &mut T {
    fn capacity_sectors(&self) -> u64 {
        (**self).capacity_sectors()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        (**self).write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

/// The virtio block device over backend `B`. Put it behind a [`VirtioMmio`](super::VirtioMmio).
pub struct VirtioBlk<B> {
    backend: B,
    serial: [u8; ID_BYTES],
}

impl<B: BlockBackend> VirtioBlk<B> {
    /// A block device over `backend` with an empty serial number.
    pub fn new(backend: B) -> Self {
        Self { backend, serial: [0; ID_BYTES] }
    }

    /// A block device over `backend` whose `GET_ID` answers `serial` (cut to 20 bytes, NUL-padded).
    pub fn with_serial(backend: B, serial: &[u8]) -> Self {
        let mut id = [0; ID_BYTES];
        let len = serial.len().min(ID_BYTES);
        id[..len].copy_from_slice(&serial[..len]);
        Self { backend, serial: id }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The configuration structure: capacity, size_max (0), seg_max, geometry (0), blk_size, topology (0),
    /// writeback (0).
    fn config(&self) -> [u8; CONFIG_LEN as usize] {
        let mut config = [0u8; CONFIG_LEN as usize];
        config[0..8].copy_from_slice(&self.backend.capacity_sectors().to_le_bytes());
        config[12..16].copy_from_slice(&u32::from(super::mmio::QUEUE_SIZE_MAX - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        config
    }

    /// Carries a request out; the answer is the status and the number of data bytes written to the guest.
    fn execute<M: GuestMemory + ?Sized>(&mut self, chain: &DescChain, mem: &mut M) -> (u8, u64) {
        if chain.defect().is_some() || chain.readable_len() < HEADER_LEN {
            return (S_IOERR, 0);
        }
        let mut header = [0u8; HEADER_LEN as usize];
        if !read_stream(chain, mem, &mut header) {
            return (S_IOERR, 0);
        }
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
        let kind = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        // The status byte is the last writable byte; the data sits in front of it.
        let writable_data = chain.writable_len().saturating_sub(1);
        // Data on the wrong side (readable data for a read, writable data for a write) is a driver error, not
        // a zero-length transfer.
        let header_only = chain.readable_len() == HEADER_LEN;
        let status_only = writable_data == 0;
        let framing_ok = match kind {
            T_IN | T_GET_ID => header_only,
            T_OUT => status_only,
            T_FLUSH => header_only && status_only,
            _ => true,
        };
        if !framing_ok {
            return (S_IOERR, 0);
        }
        match kind {
            T_IN => {
                let status = self.check_range(sector, writable_data);
                if status != S_OK {
                    return (status, 0);
                }
                match self.transfer_in(chain, mem, sector, writable_data) {
                    Ok(()) => (S_OK, writable_data),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_OUT => {
                let len = chain.readable_len() - HEADER_LEN;
                if self.backend.read_only() {
                    return (S_IOERR, 0);
                }
                let status = self.check_range(sector, len);
                if status != S_OK {
                    return (status, 0);
                }
                match self.transfer_out(chain, mem, sector, len) {
                    Ok(()) => (S_OK, 0),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_FLUSH => match self.backend.flush() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let len = writable_data.min(ID_BYTES as u64);
                let mut written = 0;
                let mut segments = chain.segments(true, 0, len);
                while let Some((addr, n)) = segments.next(mem) {
                    let Some(src) = self.serial.get(written as usize..(written + n) as usize) else { break };
                    if mem.write_bytes(addr, src).is_none() {
                        return (S_IOERR, 0);
                    }
                    written += n;
                }
                (S_OK, written)
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// `S_OK` when `len` bytes from `sector` are whole sectors inside the disk, else `S_IOERR`.
    fn check_range(&self, sector: u64, len: u64) -> u8 {
        let whole = len.is_multiple_of(SECTOR_SIZE as u64);
        let end = sector.checked_add(len / SECTOR_SIZE as u64);
        if whole && end.is_some_and(|end| end <= self.backend.capacity_sectors()) {
            S_OK
        } else {
            S_IOERR
        }
    }

    /// Reads `len` bytes (whole sectors) from `sector` into the chain's writable stream.
    fn transfer_in<M: GuestMemory + ?Sized>(
        &mut self,
        chain: &DescChain,
        mem: &mut M,
        mut sector: u64,
        len: u64,
    ) -> Result<(), BlockError> {
        let mut bounce = [0u8; SECTOR_SIZE];
        // Bytes of `bounce` already delivered; 0 when no sector is half delivered.
        let mut delivered = 0usize;
        let mut done = 0u64;
        let mut segments = chain.segments(true, 0, len);
        while let Some((mut addr, mut left)) = segments.next(mem) {
            done += left;
            while left > 0 {
                let n = if delivered != 0 || left < SECTOR_SIZE as u64 {
                    if delivered == 0 {
                        self.backend.read(sector, &mut bounce)?;
                        sector += 1;
                    }
                    let n = (SECTOR_SIZE - delivered).min(left as usize);
                    let src = bounce.get(delivered..delivered + n).ok_or(BlockError::Io)?;
                    mem.write_bytes(addr, src).ok_or(BlockError::Io)?;
                    delivered = (delivered + n) % SECTOR_SIZE;
                    n as u64
                } else if let Some(direct) = mem.slice_mut(addr, left - left % SECTOR_SIZE as u64) {
                    let n = direct.len() as u64;
                    self.backend.read(sector, direct)?;
                    sector += n / SECTOR_SIZE as u64;
                    n
                } else {
                    // No direct slice (shared memory): one sector through the bounce buffer.
                    self.backend.read(sector, &mut bounce)?;
                    mem.write_bytes(addr, &bounce).ok_or(BlockError::Io)?;
                    sector += 1;
                    SECTOR_SIZE as u64
                };
                addr += n;
                left -= n;
            }
        }
        if done == len && delivered == 0 {
            Ok(())
        } else {
            Err(BlockError::Io)
        }
    }

    /// Writes `len` bytes (whole sectors) following the header in the chain's readable stream to `sector`.
    fn transfer_out<M: GuestMemory + ?Sized>(
        &mut self,
        chain: &DescChain,
        mem: &mut M,
        mut sector: u64,
        len: u64,
    ) -> Result<(), BlockError> {
        let mut bounce = [0u8; SECTOR_SIZE];
        // Bytes of `bounce` already gathered; 0 when no sector is half gathered.
        let mut gathered = 0usize;
        let mut done = 0u64;
        let mut segments = chain.segments(false, HEADER_LEN, len);
        while let Some((mut addr, mut left)) = segments.next(mem) {
            done += left;
            while left > 0 {
                let n = if gathered != 0 || left < SECTOR_SIZE as u64 {
                    let n = (SECTOR_SIZE - gathered).min(left as usize);
                    let dst = bounce.get_mut(gathered..gathered + n).ok_or(BlockError::Io)?;
                    mem.read_bytes(addr, dst).ok_or(BlockError::Io)?;
                    gathered += n;
                    if gathered == SECTOR_SIZE {
                        self.backend.write(sector, &bounce)?;
                        sector += 1;
                        gathered = 0;
                    }
                    n as u64
                } else if let Some(direct) = mem.slice(addr, left - left % SECTOR_SIZE as u64) {
                    let n = direct.len() as u64;
                    self.backend.write(sector, direct)?;
                    sector += n / SECTOR_SIZE as u64;
                    n
                } else {
                    // No direct slice (shared memory): one sector through the bounce buffer.
                    mem.read_bytes(addr, &mut bounce).ok_or(BlockError::Io)?;
                    self.backend.write(sector, &bounce)?;
                    sector += 1;
                    SECTOR_SIZE as u64
                };
                addr += n;
                left -= n;
            }
        }
        if done == len && gathered == 0 {
            Ok(())
        } else {
            Err(BlockError::Io)
        }
    }
}

/// Fills `buf` from the start of the chain's readable stream; false if the stream is shorter.
fn read_stream<M: GuestMemory + ?Sized>(chain: &DescChain, mem: &M, buf: &mut [u8]) -> bool {
    let mut filled = 0usize;
    let mut segments = chain.segments(false, 0, buf.len() as u64);
    while let Some((addr, n)) = segments.next(mem) {
        let Some(dst) = buf.get_mut(filled..filled + n as usize) else { return false };
        if mem.read_bytes(addr, dst).is_none() {
            return false;
        }
        filled += n as usize;
    }
    filled == buf.len()
}

impl<B: BlockBackend> VirtioDevice for VirtioBlk<B> {
    /// A disk has no state of its own beyond its backend's contents, which are the host's: the capacity and
    /// read-only flag are written so that a restore onto a disk the guest would see differently is refused.
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.u64(self.backend.capacity_sectors());
        out.bool(self.backend.read_only());
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, _mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u64()? != self.backend.capacity_sectors() || input.bool()? != self.backend.read_only() {
            return Err(input.mismatch("the disk's capacity or read-only flag"));
        }
        Ok(())
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.backend.read_only() { F_RO } else { 0 };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
    }

    fn num_queues(&self) -> usize {
        1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.checked_add(i as u64).and_then(|at| usize::try_from(at).ok());
            *byte = at.and_then(|at| config.get(at)).copied().unwrap_or(0);
        }
    }

    fn handle<M: GuestMemory + ?Sized>(
        &mut self,
        _queue: usize,
        chain: &DescChain,
        mem: &mut M,
    ) -> Result<u32, ChainBroken> {
        let status_addr = chain.last_writable_byte().ok_or(ChainBroken)?;
        let (status, written) = self.execute(chain, mem);
        mem.write_bytes(status_addr, &[status]).ok_or(ChainBroken)?;
        // `written` is at most the writable length, itself below 2^16 * 2^32; saturate rather than wrap.
        Ok(u32::try_from(written + 1).unwrap_or(u32::MAX))
    }
}

/// An in-memory disk for tests.
#[cfg(test)]
pub(crate) struct MemBackend<const N: usize> {
    pub data: [u8; N],
    pub read_only: bool,
    pub flushes: u32,
    /// When set, every backend call fails with [`BlockError::Io`].
    pub failing: bool,
}

#[cfg(test)]
impl<const N: usize> MemBackend<N> {
    pub fn new() -> Self {
        Self { data: [0; N], read_only: false, flushes: 0, failing: false }
    }

    fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
        // The device must never ask for anything past the end or for partial sectors.
        assert!(len.is_multiple_of(SECTOR_SIZE) && len > 0, "partial or empty sector transfer of {len} bytes");
        let start = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_SIZE));
        let range = start.and_then(|s| Some(s..s.checked_add(len)?)).filter(|r| r.end <= N);
        assert!(range.is_some(), "device asked for sectors past the end: {sector} + {len} bytes");
        if self.failing {
            return Err(BlockError::Io);
        }
        range.ok_or(BlockError::OutOfRange)
    }
}

#[cfg(test)]
impl<const N: usize> BlockBackend for MemBackend<N> {
    fn capacity_sectors(&self) -> u64 {
        (N / SECTOR_SIZE) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let range = self.range(sector, buf.len())?;
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        assert!(!self.read_only, "device wrote to a read-only backend");
        let range = self.range(sector, buf.len())?;
        self.data[range].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.failing {
            return Err(BlockError::Io);
        }
        self.flushes += 1;
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}
