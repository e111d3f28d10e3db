//! The guests' polled virtio-blk driver (slot 0, `0x1000_1000`), shared by `disk-pattern` and `disk-crash`: the
//! smallest correct one, one request at a time, the device completing it before the notify write returns or soon
//! after (the guest polls the used ring); and the kernel command line read from the devicetree.
#![allow(dead_code)]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use rt::checks::check;
use rt::println;
use rt::virtio_mmio::*;

pub const BASE: usize = 0x1000_1000;

pub const QUEUE_SIZE: usize = 4;

pub const REQUEST_IN: u32 = 0;
pub const REQUEST_OUT: u32 = 1;
pub const REQUEST_FLUSH: u32 = 4;
pub const STATUS_OK: u8 = 0;
pub const STATUS_IOERR: u8 = 1;

pub const SECTOR: usize = 512;
/// Sectors moved per request.
pub const CHUNK: usize = 8;

#[repr(C, align(4096))]
struct Queue {
    descriptors: [Descriptor; QUEUE_SIZE],
    /// The driver (available) ring: flags, idx, ring.
    available: [u16; 2 + QUEUE_SIZE],
    /// The device (used) ring: flags and idx (one u32), then `(id, len)` pairs.
    used: [u32; 1 + 2 * QUEUE_SIZE],
}

#[repr(C)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

static mut QUEUE: Queue = Queue {
    descriptors: [Descriptor { addr: 0, len: 0, flags: 0, next: 0 }; QUEUE_SIZE],
    available: [0; 2 + QUEUE_SIZE],
    used: [0; 1 + 2 * QUEUE_SIZE],
};
static mut HEADER: Header = Header { kind: 0, reserved: 0, sector: 0 };
pub static mut DATA: [u8; CHUNK * SECTOR] = [0; CHUNK * SECTOR];
static mut STATUS_BYTE: u8 = 0xff;

fn read(offset: usize) -> u32 {
    // SAFETY: a register of the virtio-mmio window, which the machine maps at BASE.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

/// The driver's state: requests submitted so far, and the used index last seen.
pub struct Driver {
    submitted: u16,
}

impl Driver {
    /// Resets and sets up the device with queue 0; `None` (with a failed check) when it is not a virtio-blk
    /// device of the modern transport.
    pub fn probe() -> Option<Self> {
        let (magic, version, device) = (read(MAGIC), read(VERSION), read(DEVICE_ID));
        check(
            "a virtio-blk device in slot 0",
            magic == 0x7472_6976 && version == 2 && device == 2,
            format_args!("magic {magic:#x} version {version} device {device}"),
        );
        if device != 2 {
            return None;
        }
        write(STATUS, 0);
        write(STATUS, ACKNOWLEDGE);
        write(STATUS, ACKNOWLEDGE | DRIVER);
        write(DEVICE_FEATURES_SEL, 0);
        write(DRIVER_FEATURES_SEL, 0);
        write(DRIVER_FEATURES, 0);
        // VIRTIO_F_VERSION_1 (bit 32) only.
        write(DRIVER_FEATURES_SEL, 1);
        write(DRIVER_FEATURES, 1);
        write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        let accepted = read(STATUS) & FEATURES_OK != 0;
        check("features accepted", accepted, format_args!("status {:#x}", read(STATUS)));
        write(QUEUE_SEL, 0);
        let max = read(QUEUE_NUM_MAX);
        if !accepted || (max as usize) < QUEUE_SIZE {
            println!("FAIL: queue 0 holds {max} entries");
            return None;
        }
        write(QUEUE_NUM, QUEUE_SIZE as u32);
        // SAFETY: the fields' addresses, not their values, are taken.
        let (descriptors, available, used) = unsafe {
            (addr_of!(QUEUE.descriptors) as u64, addr_of!(QUEUE.available) as u64, addr_of!(QUEUE.used) as u64)
        };
        write(QUEUE_DESC_LOW, descriptors as u32);
        write(QUEUE_DESC_HIGH, (descriptors >> 32) as u32);
        write(QUEUE_DRIVER_LOW, available as u32);
        write(QUEUE_DRIVER_HIGH, (available >> 32) as u32);
        write(QUEUE_DEVICE_LOW, used as u32);
        write(QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        write(QUEUE_READY, 1);
        write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        Some(Self { submitted: 0 })
    }

    /// The disk's size in sectors, from the configuration space.
    pub fn capacity(&self) -> u64 {
        u64::from(read(CONFIG)) | u64::from(read(CONFIG + 4)) << 32
    }

    /// One request of `kind` at `sector` moving `sectors` sectors of `DATA` (none for a flush): the status byte
    /// the device wrote, or 0xff when it never answered.
    pub fn request(&mut self, kind: u32, sector: u64, sectors: usize) -> u8 {
        // SAFETY: the device reads and writes these only while the request is in flight, and the guest waits for
        // it to complete; every access is to a static of this single-hart program.
        unsafe {
            HEADER = Header { kind, reserved: 0, sector };
            STATUS_BYTE = 0xff;
            let data_flags = if kind == REQUEST_IN { DESC_WRITE } else { 0 };
            let queue = &mut *addr_of_mut!(QUEUE);
            queue.descriptors[0] = Descriptor { addr: addr_of!(HEADER) as u64, len: 16, flags: DESC_NEXT, next: 1 };
            let status = Descriptor { addr: addr_of!(STATUS_BYTE) as u64, len: 1, flags: DESC_WRITE, next: 0 };
            if sectors == 0 {
                queue.descriptors[0].next = 2;
            } else {
                queue.descriptors[1] = Descriptor {
                    addr: addr_of!(DATA) as u64,
                    len: (sectors * SECTOR) as u32,
                    flags: data_flags | DESC_NEXT,
                    next: 2,
                };
            }
            queue.descriptors[2] = status;
            let slot = 2 + self.submitted as usize % QUEUE_SIZE;
            write_volatile(addr_of_mut!(queue.available[slot]), 0);
            self.submitted = self.submitted.wrapping_add(1);
            fence(Ordering::SeqCst);
            write_volatile(addr_of_mut!(queue.available[1]), self.submitted);
            fence(Ordering::SeqCst);
            write(QUEUE_NOTIFY, 0);
            for _ in 0..1_000_000 {
                let used_index = (read_volatile(addr_of!(queue.used[0])) >> 16) as u16;
                if used_index == self.submitted {
                    fence(Ordering::SeqCst);
                    return read_volatile(addr_of!(STATUS_BYTE));
                }
            }
            0xff
        }
    }
}

/// The devicetree's `/chosen/bootargs`, when it has one.
pub fn bootargs(devicetree: usize) -> Option<&'static [u8]> {
    let word = |at: usize| -> u32 {
        // SAFETY: inside the blob, whose size the header gives and which the machine placed in RAM.
        u32::from_be(unsafe { read_volatile(at as *const u32) })
    };
    if devicetree == 0 || word(devicetree) != 0xd00d_feed {
        return None;
    }
    let size = word(devicetree + 4) as usize;
    let structure = devicetree + word(devicetree + 8) as usize;
    let strings = devicetree + word(devicetree + 12) as usize;
    let end = devicetree + size;
    let mut at = structure;
    while at + 4 <= end {
        match word(at) {
            // FDT_BEGIN_NODE: a name, NUL-terminated and padded to 4 bytes.
            1 => {
                at += 4;
                // SAFETY: inside the blob.
                while at < end && unsafe { read_volatile(at as *const u8) } != 0 {
                    at += 1;
                }
                at = (at + 4) & !3;
            }
            // FDT_PROP: length, name offset, value padded to 4 bytes.
            3 => {
                let (length, name) = (word(at + 4) as usize, strings + word(at + 8) as usize);
                let value = at + 12;
                // SAFETY: inside the blob (the property's name is in the strings block).
                let name = unsafe { core::slice::from_raw_parts(name as *const u8, 9) };
                if name == b"bootargs\0" && value + length <= end {
                    // SAFETY: inside the blob; the value is a NUL-terminated string.
                    let value = unsafe { core::slice::from_raw_parts(value as *const u8, length) };
                    return Some(value.strip_suffix(b"\0").unwrap_or(value));
                }
                at = (value + length + 3) & !3;
            }
            2 | 4 => at += 4,
            _ => return None,
        }
    }
    None
}

/// FNV-1a of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

/// The data buffer, between requests.
pub fn data() -> &'static mut [u8; CHUNK * SECTOR] {
    // SAFETY: called only while no request is in flight (the device does not touch it then), by the one hart,
    // and no reference it returned outlives the statement that uses it.
    unsafe { &mut *addr_of_mut!(DATA) }
}
