//! A hostile virtio driver for the device targets: it sets a device up as a driver would, then plays the
//! input's register writes, descriptor tables and available-ring entries against it, over a small guest RAM
//! with guard bytes on both sides, and checks what any device must keep to (see [`Driver::check`]).

use crate::Input;
use trapeze::dev::virtio::queue::DESC_SIZE;
use trapeze::dev::virtio::{
    VirtioDevice, VirtioMmio, F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use trapeze::dev::MmioDevice;
use trapeze::mem::{Ram, RAM_BASE};

pub const RAM_SIZE: usize = 0x8000;
const GUARD: usize = 256;
const GUARD_BYTE: u8 = 0x5a;
/// Queue `q`'s rings: descriptor table, available ring, used ring, one page per queue.
const QSIZE: u16 = 16;
const fn desc(q: usize) -> u64 {
    RAM_BASE + q as u64 * 0x1000
}
const fn avail(q: usize) -> u64 {
    desc(q) + 0x400
}
const fn used(q: usize) -> u64 {
    desc(q) + 0x800
}
/// Buffers live from here to the end of RAM.
const DATA: u64 = RAM_BASE + 0x2000;
const QUEUES: usize = 2;

/// Guest RAM between two guard areas that no device access may change.
pub struct Memory {
    backing: Vec<u8>,
}

impl Default for Memory {
    fn default() -> Self {
        Self { backing: vec![GUARD_BYTE; GUARD + RAM_SIZE + GUARD] }
    }
}

impl Memory {
    pub fn ram(&mut self) -> Ram<'_> {
        Ram::new(RAM_BASE, &mut self.backing[GUARD..GUARD + RAM_SIZE])
    }

    pub fn assert_guards_intact(&self) {
        let (head, tail) = (&self.backing[..GUARD], &self.backing[GUARD + RAM_SIZE..]);
        assert!(head.iter().chain(tail).all(|&b| b == GUARD_BYTE), "a device wrote outside guest RAM");
    }
}

fn w<D: VirtioDevice>(dev: &mut VirtioMmio<D>, offset: u64, value: u32) {
    let _ = dev.write(offset, 4, u64::from(value));
}

fn r<D: VirtioDevice>(dev: &mut VirtioMmio<D>, offset: u64) -> u32 {
    dev.read(offset, 4).unwrap_or(0) as u32
}

/// The driver side of the fuzzed conversation.
pub struct Driver {
    queues: usize,
    /// Available entries published per queue since the last set-up.
    posted: [u16; QUEUES],
    /// Whether only this driver's own set-up touched the queue registers since then (the used-ring bound holds).
    clean: bool,
    pub features: u64,
}

impl Driver {
    /// Resets `dev` and sets up its first `queues` queues (at most 2) with `features` (plus VERSION_1).
    pub fn init<D: VirtioDevice>(dev: &mut VirtioMmio<D>, ram: &mut Ram, queues: usize, features: u64) -> Self {
        let mut driver = Self { queues: queues.min(QUEUES), posted: [0; QUEUES], clean: true, features };
        driver.setup(dev, ram);
        driver
    }

    fn setup<D: VirtioDevice>(&mut self, dev: &mut VirtioMmio<D>, ram: &mut Ram) {
        w(dev, 0x070, 0);
        w(dev, 0x070, STATUS_ACKNOWLEDGE);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let features = self.features | F_VERSION_1;
        w(dev, 0x024, 0);
        w(dev, 0x020, features as u32);
        w(dev, 0x024, 1);
        w(dev, 0x020, (features >> 32) as u32);
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        if let Some(rings) = ram.slice_mut(RAM_BASE, DATA - RAM_BASE) {
            rings.fill(0);
        }
        for q in 0..self.queues {
            w(dev, 0x030, q as u32);
            w(dev, 0x038, u32::from(QSIZE));
            for (low, addr) in [(0x080, desc(q)), (0x090, avail(q)), (0x0a0, used(q))] {
                w(dev, low, addr as u32);
                w(dev, low + 4, (addr >> 32) as u32);
            }
            w(dev, 0x044, 1);
        }
        w(dev, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        self.posted = [0; QUEUES];
        self.clean = true;
    }

    /// A buffer address. One that may reach the rings lets the device legally overwrite them (the driver's own
    /// fault), so the used-ring bound is no longer checked after one.
    fn address(&mut self, input: &mut Input) -> u64 {
        match input.u8() % 8 {
            0..=4 => DATA + input.below(RAM_SIZE as u64 - (DATA - RAM_BASE)),
            // Straddling the end of RAM.
            5 => RAM_BASE + RAM_SIZE as u64 - input.below(64),
            // The rings themselves.
            6 => {
                self.clean = false;
                RAM_BASE + input.below(DATA - RAM_BASE)
            }
            _ => {
                let addr = input.u64();
                let reach = addr.checked_add(u64::from(u32::MAX));
                self.clean &= (addr >= DATA && reach.is_some()) || reach.is_some_and(|end| end < RAM_BASE);
                addr
            }
        }
    }

    fn length(input: &mut Input) -> u32 {
        match input.u8() % 4 {
            0 | 1 => input.below(64) as u32,
            2 => input.below(0x2000) as u32,
            _ => input.u32(),
        }
    }

    /// Plays one step of the input against `dev`; answers false when the input is used up.
    pub fn step<D: VirtioDevice>(&mut self, dev: &mut VirtioMmio<D>, ram: &mut Ram, input: &mut Input) -> bool {
        if input.is_empty() {
            return false;
        }
        let q = input.below(self.queues.max(1) as u64) as usize;
        match input.u8() % 16 {
            // A descriptor of queue q.
            0..=4 => {
                let at = desc(q) + u64::from(input.below(u64::from(QSIZE)) as u16) * DESC_SIZE;
                let addr = self.address(input);
                let len = Self::length(input);
                let flags = if input.u8() < 16 { input.u16() } else { input.u16() & 3 };
                let next = if input.u8() < 16 { input.u16() } else { input.below(u64::from(QSIZE)) as u16 };
                let _ = ram.store(at, 8, addr);
                let _ = ram.store(at + 8, 4, u64::from(len));
                let _ = ram.store(at + 12, 2, u64::from(flags));
                let _ = ram.store(at + 14, 2, u64::from(next));
            }
            // Make a head available on queue q and notify.
            5..=8 => {
                let head = if input.u8() < 8 { input.u16() } else { input.below(u64::from(QSIZE)) as u16 };
                let slot = u64::from(self.posted[q] % QSIZE);
                let _ = ram.store(avail(q) + 4 + 2 * slot, 2, u64::from(head));
                self.posted[q] = self.posted[q].wrapping_add(1);
                let _ = ram.store(avail(q) + 2, 2, u64::from(self.posted[q]));
                if input.bool() {
                    let _ = ram.store(avail(q), 2, 1);
                }
                w(dev, 0x050, q as u32);
                dev.process(ram);
            }
            // Data or a request header in the buffer area.
            9 | 10 => {
                let at = DATA + input.below(RAM_SIZE as u64 - (DATA - RAM_BASE));
                let bytes = input.bytes(64);
                for (i, &b) in bytes.iter().enumerate() {
                    let _ = ram.store(at + i as u64, 1, u64::from(b));
                }
            }
            // Any register access, at any width.
            11 => {
                let offset = if input.bool() { input.below(0x40) * 4 } else { input.below(0x300) };
                let size = [1u8, 2, 4, 8, 3][input.below(5) as usize];
                let value = if input.bool() { input.below(32) } else { input.u64() };
                if input.bool() {
                    let _ = dev.write(offset, size, value);
                    self.clean &= !(0x30..0x100).contains(&offset) && offset != 0x070;
                    dev.process(ram);
                } else {
                    let _ = dev.read(offset, size);
                }
            }
            12 => {
                let pending = r(dev, 0x060);
                w(dev, 0x064, pending);
            }
            13 => dev.poll_outside(ram),
            14 => {
                let offset = input.below(64);
                let value = input.u8();
                let _ = dev.write(0x100 + offset, 1, u64::from(value));
                let _ = dev.read(0x100 + offset, 1 << input.below(4));
            }
            _ => self.setup(dev, ram),
        }
        true
    }

    /// What holds after every step, whatever the input: the used rings name descriptors of the queue and never
    /// publish more entries than the driver made available, and a notified device has done its work.
    pub fn check<D: VirtioDevice>(&self, dev: &VirtioMmio<D>, ram: &Ram) {
        if !self.clean {
            return;
        }
        for q in 0..self.queues {
            let Some(idx) = ram.load(used(q) + 2, 2) else { continue };
            let idx = idx as u16;
            assert!(
                // At most 200 steps a run: the counts never wrap.
                idx <= self.posted[q],
                "queue {q}: {idx} used entries for {} made available",
                self.posted[q]
            );
            for slot in 0..u64::from(idx.min(QSIZE)) {
                let id = ram.load(used(q) + 4 + 8 * slot, 4).unwrap_or(0);
                assert!(id < u64::from(QSIZE), "queue {q}: used id {id} outside the table");
            }
        }
        let _ = dev.interrupt_pending();
    }
}
