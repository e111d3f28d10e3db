//! Split virtqueues (virtio 1.x §2.7): the descriptor table, the available ring the driver fills and the used
//! ring the device fills, all in guest memory.
//!
//! Every ring index, descriptor index, address and length comes from the guest and is checked before use: ring
//! slots are taken modulo the queue size, descriptor indices are checked against it, a chain is cut off after
//! as many descriptors as the queue has (so a loop is an error, not a hang), and memory is reached only through
//! [`GuestMemory`], which refuses anything outside guest RAM. Indirect descriptors and event suppression
//! (`VIRTIO_F_INDIRECT_DESC`, `VIRTIO_F_EVENT_IDX`) are not offered, so a descriptor with the INDIRECT flag is
//! a defect of its chain.

use super::{ChainBroken, GuestMemory};
use crate::snapshot::{Reader, SnapshotError, Writer};

/// Descriptor flag: the chain continues with the descriptor in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors (not supported).
pub const DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver asks not to be interrupted when buffers are used.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of one descriptor in the table.
pub const DESC_SIZE: u64 = 16;

/// One descriptor, as read from the guest's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    /// Whether the buffer is device-writable.
    pub fn is_write(&self) -> bool {
        self.flags & DESC_F_WRITE != 0
    }
}

/// Reads descriptor `index` of the table at `table`, or `None` when it lies outside guest memory.
fn read_desc<M: GuestMemory + ?Sized>(mem: &M, table: u64, index: u16) -> Option<Desc> {
    let addr = table.checked_add(u64::from(index) * DESC_SIZE)?;
    let mut b = [0u8; DESC_SIZE as usize];
    mem.read_bytes(addr, &mut b)?;
    let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = b;
    Some(Desc {
        addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        flags: u16::from_le_bytes([f0, f1]),
        next: u16::from_le_bytes([n0, n1]),
    })
}

/// Walks a chain one descriptor at a time without borrowing guest memory between steps, so the caller may
/// write to guest memory in between. Yields at most `queue_size` descriptors.
#[derive(Debug, Clone)]
pub struct ChainCursor {
    table: u64,
    queue_size: u16,
    next: Option<u16>,
    budget: u16,
    broken: bool,
}

impl ChainCursor {
    /// The next descriptor; `None` at the end of the chain or when it breaks (see [`ChainCursor::broken`]).
    pub fn next<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Option<Desc> {
        let index = self.next.take()?;
        if self.budget == 0 || index >= self.queue_size {
            self.broken = true;
            return None;
        }
        self.budget -= 1;
        let Some(desc) = read_desc(mem, self.table, index) else {
            self.broken = true;
            return None;
        };
        if desc.flags & DESC_F_NEXT != 0 {
            self.next = Some(desc.next);
        }
        Some(desc)
    }

    /// Whether the walk stopped because the chain was longer than the queue (a loop), named a descriptor
    /// outside the table, or the table lies outside guest memory.
    pub fn broken(&self) -> bool {
        self.broken
    }
}

/// Why a chain that could be walked to its end is still unfit for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainDefect {
    /// A non-empty buffer lies (partly) outside guest memory.
    BufferOutsideMemory,
    /// A device-readable descriptor follows a device-writable one.
    ReadableAfterWritable,
    /// A descriptor has the INDIRECT flag, which was not offered.
    Indirect,
}

/// A descriptor chain walked once from its head: the lengths of its device-readable and device-writable parts
/// and its defects. The descriptors are re-read from guest memory by [`DescChain::cursor`] and
/// [`DescChain::segments`]: the guest does not run while the device works, so only the request's own data,
/// written over its own descriptor table, could change them. Such a change is harmless to the host: the walk
/// stays bounded and every access stays bounds-checked; the request just gets a short transfer (an error) or
/// what its rewritten descriptors ask for.
#[derive(Debug, Clone)]
pub struct DescChain {
    table: u64,
    queue_size: u16,
    head: u16,
    readable_len: u64,
    writable_len: u64,
    last_writable_byte: Option<u64>,
    defect: Option<ChainDefect>,
}

impl DescChain {
    /// Walks the chain starting at descriptor `head` of the `queue_size`-entry table at `table`.
    ///
    /// [`ChainBroken`] when the chain has no end: longer than the queue (a loop), a `next` index outside the
    /// table, or a descriptor outside guest memory. Other problems are recorded in [`DescChain::defect`].
    pub fn new<M: GuestMemory + ?Sized>(mem: &M, table: u64, queue_size: u16, head: u16) -> Result<Self, ChainBroken> {
        let mut cursor = ChainCursor { table, queue_size, next: Some(head), budget: queue_size, broken: false };
        let mut chain =
            Self { table, queue_size, head, readable_len: 0, writable_len: 0, last_writable_byte: None, defect: None };
        let mut seen_writable = false;
        let mut last = None;
        while let Some(desc) = cursor.next(mem) {
            last = Some(desc);
            let len = u64::from(desc.len);
            let defect = if desc.flags & DESC_F_INDIRECT != 0 {
                Some(ChainDefect::Indirect)
            } else if len != 0 && !mem.contains(desc.addr, len) {
                Some(ChainDefect::BufferOutsideMemory)
            } else if !desc.is_write() && seen_writable {
                Some(ChainDefect::ReadableAfterWritable)
            } else {
                None
            };
            chain.defect = chain.defect.or(defect);
            // At most 2^16 descriptors of less than 2^32 bytes each: the sums cannot overflow.
            if desc.is_write() {
                seen_writable = true;
                chain.writable_len += len;
            } else {
                chain.readable_len += len;
            }
        }
        if cursor.broken() {
            return Err(ChainBroken);
        }
        chain.last_writable_byte = last
            .filter(|d| d.is_write() && d.len > 0 && d.flags & DESC_F_INDIRECT == 0)
            .and_then(|d| d.addr.checked_add(u64::from(d.len) - 1))
            .filter(|&addr| mem.contains(addr, 1));
        Ok(chain)
    }

    /// Index of the head descriptor (the id that goes into the used ring).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Total length of the device-readable descriptors.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total length of the device-writable descriptors.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Guest address of the chain's final byte, when the last descriptor is device-writable, non-empty and its
    /// last byte is in guest memory (where a block request's status byte goes), even if the chain has defects.
    pub fn last_writable_byte(&self) -> Option<u64> {
        self.last_writable_byte
    }

    /// The first problem found with the chain, if any. A chain with a defect must not be used for data.
    pub fn defect(&self) -> Option<ChainDefect> {
        self.defect
    }

    /// A fresh walk over the chain's descriptors.
    pub fn cursor(&self) -> ChainCursor {
        ChainCursor {
            table: self.table,
            queue_size: self.queue_size,
            next: Some(self.head),
            budget: self.queue_size,
            broken: false,
        }
    }

    /// The guest memory pieces holding bytes `[start, start + len)` of the chain's readable (or, with
    /// `writable`, writable) part, taken as one byte stream in chain order.
    pub fn segments(&self, writable: bool, start: u64, len: u64) -> Segments {
        Segments { cursor: self.cursor(), writable, pos: 0, start, end: start.saturating_add(len) }
    }
}

/// Iterator-like walk over a byte range of a chain's readable or writable stream; see [`DescChain::segments`].
#[derive(Debug, Clone)]
pub struct Segments {
    cursor: ChainCursor,
    writable: bool,
    /// Stream offset of the next descriptor of the wanted kind.
    pos: u64,
    start: u64,
    end: u64,
}

impl Segments {
    /// The next piece as `(guest address, length)`, with a nonzero length; `None` when the range is done.
    pub fn next<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Option<(u64, u64)> {
        while self.pos < self.end {
            let desc = self.cursor.next(mem)?;
            if desc.is_write() != self.writable {
                continue;
            }
            let len = u64::from(desc.len);
            let (lo, hi) = (self.pos.max(self.start), (self.pos + len).min(self.end));
            let skip = lo - self.pos; // lo >= pos
            self.pos += len;
            if lo < hi {
                return Some((desc.addr.checked_add(skip)?, hi - lo));
            }
        }
        None
    }
}

/// The driver-visible state of one virtqueue plus the device's private ring indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    /// `QueueNum`: the number of entries the driver chose.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc: u64,
    /// Guest address of the available ("driver") ring.
    pub driver: u64,
    /// Guest address of the used ("device") ring.
    pub device: u64,
    /// The queue hit an unrecoverable error and is not processed until the device is reset.
    pub broken: bool,
    next_avail: u16,
    next_used: u16,
}

impl Queue {
    /// Makes the queue ready (or not) and, on becoming ready, starts the ring indices from 0.
    pub fn set_ready(&mut self, ready: bool) {
        if ready && !self.ready {
            self.next_avail = 0;
            self.next_used = 0;
        }
        self.ready = ready;
    }

    /// Whether the size the driver chose is usable: a power of two no bigger than `max`.
    pub fn size_valid(&self, max: u16) -> bool {
        self.size != 0 && self.size <= max && self.size.is_power_of_two()
    }

    /// The head of the next available chain: `Ok(None)` when the driver has made none available, an error when
    /// the available ring is unreadable or names a descriptor outside the table.
    pub fn pop<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<Option<u16>, ChainBroken> {
        let idx = mem.read_u16(self.driver.checked_add(2).ok_or(ChainBroken)?).ok_or(ChainBroken)?;
        let outstanding = idx.wrapping_sub(self.next_avail);
        if outstanding == 0 {
            return Ok(None);
        }
        if outstanding > self.size {
            return Err(ChainBroken);
        }
        let slot = u64::from(self.next_avail % self.size.max(1));
        let head = mem.read_u16(self.driver.checked_add(4 + 2 * slot).ok_or(ChainBroken)?).ok_or(ChainBroken)?;
        if head >= self.size {
            return Err(ChainBroken);
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(head))
    }

    /// Puts `(head, len)` in the used ring and publishes it by advancing the used ring's `idx`.
    pub fn push_used<M: GuestMemory + ?Sized>(&mut self, mem: &mut M, head: u16, len: u32) -> Result<(), ChainBroken> {
        let slot = u64::from(self.next_used % self.size.max(1));
        let elem = self.device.checked_add(4 + 8 * slot).ok_or(ChainBroken)?;
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        bytes[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_bytes(elem, &bytes).ok_or(ChainBroken)?;
        self.next_used = self.next_used.wrapping_add(1);
        let idx_addr = self.device.checked_add(2).ok_or(ChainBroken)?;
        mem.write_u16(idx_addr, self.next_used).ok_or(ChainBroken)
    }

    /// Whether the driver asks not to be interrupted for used buffers (`VIRTQ_AVAIL_F_NO_INTERRUPT`). An
    /// unreadable flags field counts as "interrupt".
    pub fn interrupt_suppressed<M: GuestMemory + ?Sized>(&self, mem: &M) -> bool {
        mem.read_u16(self.driver).is_some_and(|flags| flags & AVAIL_F_NO_INTERRUPT != 0)
    }
}
impl Queue {
    /// Writes the queue's registers and ring positions for a snapshot.
    pub fn save_state(&self, out: &mut Writer) {
        out.u16(self.size);
        out.bool(self.ready);
        out.u64s(&[self.desc, self.driver, self.device]);
        out.bool(self.broken);
        out.u16(self.next_avail);
        out.u16(self.next_used);
    }

    /// Reads what [`save_state`](Self::save_state) wrote; a ready queue must have a size the transport accepts
    /// (`max`).
    pub fn read_state(input: &mut Reader, max: u16) -> Result<Self, SnapshotError> {
        let (size, ready) = (input.u16()?, input.bool()?);
        let [desc, driver, device] = input.u64s::<3>()?;
        let broken = input.bool()?;
        let (next_avail, next_used) = (input.u16()?, input.u16()?);
        let queue = Self { size, ready, desc, driver, device, broken, next_avail, next_used };
        if ready && !queue.size_valid(max) {
            return Err(input.invalid("a ready virtqueue of a size the transport refuses"));
        }
        Ok(queue)
    }
}
