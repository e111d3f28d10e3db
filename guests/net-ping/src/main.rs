//! `net-ping`: drives the virtio-net NIC the devicetree lists (a `virtio_mmio@ADDR` node whose device ID is 1)
//! to exchange frames with a peer VM on the same bridge.
//!
//! The kernel command line names the peer: `peer=52:54:00:12:34:02`. The guest broadcasts a greeting (ethertype
//! 0x88b5, local experimental) until any frame from the peer arrives, then sends the peer one unicast frame
//! and waits for the peer's unicast frame to its own MAC, then broadcasts a closing frame. With `observe` on the
//! command line it only listens: for broadcasts from two NICs, and for unicast frames meant for others (there
//! must be none once the bridge has learned where the addresses are). Each check prints `ok:` or `FAIL:`; the
//! exit status is 0 when all pass. It runs on QEMU's NIC too (`-global virtio-mmio.force-legacy=false`), and
//! prints where QEMU's differs (mergeable buffers offered, `num_buffers` 0), so host tests can tell the two apart. The driver is polled (no interrupts), with four receive buffers always posted.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use rt::checks::{check, finish};
use rt::println;
use rt::virtio_mmio::*;

/// VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS (low word); VIRTIO_F_VERSION_1 is bit 0 of the high word.
const F_MAC: u32 = 1 << 5;
const F_STATUS: u32 = 1 << 16;
const F_MRG_RXBUF: u32 = 1 << 15;

const QUEUE_SIZE: usize = 4;
const HEADER: usize = 12;
const BUFFER: usize = HEADER + 1514;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

#[repr(C, align(4096))]
struct Queue {
    descriptors: [Descriptor; QUEUE_SIZE],
    available: [u16; 2 + QUEUE_SIZE],
    used: [u32; 1 + 2 * QUEUE_SIZE],
}

const EMPTY: Queue = Queue {
    descriptors: [Descriptor { addr: 0, len: 0, flags: 0, next: 0 }; QUEUE_SIZE],
    available: [0; 2 + QUEUE_SIZE],
    used: [0; 1 + 2 * QUEUE_SIZE],
};
static mut QUEUES: [Queue; 2] = [EMPTY, EMPTY];
static mut RX: [[u8; BUFFER]; QUEUE_SIZE] = [[0; BUFFER]; QUEUE_SIZE];
static mut TX: [u8; BUFFER] = [0; BUFFER];

struct Nic {
    base: usize,
    /// Chains made available and used elements consumed, per queue.
    available: [u16; 2],
    consumed: [u16; 2],
}

impl Nic {
    fn read(&self, offset: usize) -> u32 {
        // SAFETY: a register of the virtio-mmio window the devicetree lists.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn config_byte(&self, offset: usize) -> u8 {
        // SAFETY: the device-specific configuration space of the same window.
        unsafe { read_volatile((self.base + CONFIG + offset) as *const u8) }
    }

    fn mac(&self) -> [u8; 6] {
        core::array::from_fn(|i| self.config_byte(i))
    }

    /// Resets and sets up the NIC at `base`: both queues, every receive buffer posted.
    fn probe(base: usize) -> Option<Self> {
        let nic = Self { base, available: [0; 2], consumed: [0; 2] };
        nic.write(STATUS, 0);
        nic.write(STATUS, ACKNOWLEDGE);
        nic.write(STATUS, ACKNOWLEDGE | DRIVER);
        nic.write(DEVICE_FEATURES_SEL, 0);
        let offered = nic.read(DEVICE_FEATURES);
        check(
            "the NIC offers MAC and STATUS",
            offered & (F_MAC | F_STATUS) == F_MAC | F_STATUS,
            format_args!("features {offered:#x}"),
        );
        // Trapeze's NIC never offers mergeable buffers, QEMU's does; this driver never accepts them either way
        // (one buffer per frame), and says which it met so a host test can tell.
        let mergeable = if offered & F_MRG_RXBUF != 0 { "offered" } else { "not offered" };
        println!("net-ping: mergeable buffers {mergeable}");
        nic.write(DRIVER_FEATURES_SEL, 0);
        nic.write(DRIVER_FEATURES, F_MAC | F_STATUS);
        nic.write(DRIVER_FEATURES_SEL, 1);
        nic.write(DRIVER_FEATURES, 1);
        nic.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if nic.read(STATUS) & FEATURES_OK == 0 {
            println!("FAIL: features refused");
            return None;
        }
        // SAFETY: the queues' addresses, not their values, are taken.
        let queues = unsafe { [addr_of!(QUEUES[0]), addr_of!(QUEUES[1])] };
        for (queue, q) in queues.into_iter().enumerate() {
            nic.write(QUEUE_SEL, queue as u32);
            if (nic.read(QUEUE_NUM_MAX) as usize) < QUEUE_SIZE {
                println!("FAIL: queue {queue} too small");
                return None;
            }
            nic.write(QUEUE_NUM, QUEUE_SIZE as u32);
            // SAFETY: the fields' addresses, not their values, are taken.
            let (descriptors, available, used) = unsafe {
                (addr_of!((*q).descriptors) as u64, addr_of!((*q).available) as u64, addr_of!((*q).used) as u64)
            };
            let registers = [
                (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, descriptors),
                (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, available),
                (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, used),
            ];
            for (low, high, addr) in registers {
                nic.write(low, addr as u32);
                nic.write(high, (addr >> 32) as u32);
            }
            nic.write(QUEUE_READY, 1);
        }
        nic.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let mut nic = nic;
        for buffer in 0..QUEUE_SIZE as u16 {
            // SAFETY: the descriptor table of the receive queue, which the device reads only once posted.
            unsafe {
                QUEUES[0].descriptors[buffer as usize] = Descriptor {
                    addr: addr_of!(RX[buffer as usize]) as u64,
                    len: BUFFER as u32,
                    flags: DESC_WRITE,
                    next: 0,
                };
            }
            nic.post(0, buffer);
        }
        Some(nic)
    }

    /// Makes chain `head` of `queue` available and notifies.
    fn post(&mut self, queue: usize, head: u16) {
        // SAFETY: the available ring of this single-hart driver.
        unsafe {
            let ring = addr_of_mut!(QUEUES[queue].available);
            write_volatile(addr_of_mut!((*ring)[2 + self.available[queue] as usize % QUEUE_SIZE]), head);
            self.available[queue] = self.available[queue].wrapping_add(1);
            fence(Ordering::SeqCst);
            write_volatile(addr_of_mut!((*ring)[1]), self.available[queue]);
        }
        fence(Ordering::SeqCst);
        self.write(QUEUE_NOTIFY, queue as u32);
    }

    /// The next used element `(id, len)` of `queue`.
    fn take_used(&mut self, queue: usize) -> Option<(u16, u32)> {
        // SAFETY: the used ring, written by the device; read volatile.
        unsafe {
            let used = addr_of!(QUEUES[queue].used);
            let index = (read_volatile(addr_of!((*used)[0])) >> 16) as u16;
            if index == self.consumed[queue] {
                return None;
            }
            fence(Ordering::SeqCst);
            let slot = self.consumed[queue] as usize % QUEUE_SIZE;
            self.consumed[queue] = self.consumed[queue].wrapping_add(1);
            Some((
                read_volatile(addr_of!((*used)[1 + 2 * slot])) as u16,
                read_volatile(addr_of!((*used)[2 + 2 * slot])),
            ))
        }
    }

    /// Sends `frame` (behind a zeroed header) and waits for the device to take it.
    fn send(&mut self, frame: &[u8]) -> bool {
        // SAFETY: the transmit buffer and descriptor, not in use by the device (the last send completed).
        unsafe {
            let tx = &mut *addr_of_mut!(TX);
            tx[..HEADER].fill(0);
            tx[HEADER..HEADER + frame.len()].copy_from_slice(frame);
            QUEUES[1].descriptors[0] =
                Descriptor { addr: tx.as_ptr() as u64, len: (HEADER + frame.len()) as u32, flags: 0, next: 0 };
        }
        self.post(1, 0);
        for _ in 0..1_000_000 {
            if self.take_used(1).is_some() {
                return true;
            }
        }
        false
    }

    /// The next received frame as `(buffer, length with the header)`; the caller reposts the buffer.
    fn receive(&mut self) -> Option<(u16, usize)> {
        let (id, len) = self.take_used(0)?;
        Some((id, len as usize))
    }
}

/// The first `virtio_mmio@ADDR` node of the devicetree whose device is a NIC, and `/chosen/bootargs`.
fn walk_devicetree(devicetree: usize) -> (Option<usize>, Option<&'static [u8]>) {
    let word = |at: usize| -> u32 {
        // SAFETY: inside the blob, whose size the header gives and which the machine placed in RAM.
        u32::from_be(unsafe { read_volatile(at as *const u32) })
    };
    let (mut nic, mut bootargs) = (None, None);
    if devicetree == 0 || word(devicetree) != 0xd00d_feed {
        return (nic, bootargs);
    }
    let end = devicetree + word(devicetree + 4) as usize;
    let strings = devicetree + word(devicetree + 12) as usize;
    let mut at = devicetree + word(devicetree + 8) as usize;
    while at + 4 <= end {
        match word(at) {
            1 => {
                at += 4;
                let start = at;
                // SAFETY: inside the blob.
                while at < end && unsafe { read_volatile(at as *const u8) } != 0 {
                    at += 1;
                }
                // SAFETY: the node's name, inside the blob.
                let name = unsafe { core::slice::from_raw_parts(start as *const u8, at - start) };
                if let Some(address) = name.strip_prefix(b"virtio_mmio@") {
                    let base =
                        address.iter().try_fold(0usize, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)? as usize));
                    // SAFETY: a window the devicetree lists as populated.
                    let device = base.map(|base| unsafe { read_volatile((base + DEVICE_ID) as *const u32) });
                    let magic = base.map(|base| unsafe { read_volatile((base + MAGIC) as *const u32) });
                    if nic.is_none() && device == Some(1) && magic == Some(0x7472_6976) {
                        nic = base;
                    }
                }
                at = (at + 4) & !3;
            }
            3 => {
                let (length, name) = (word(at + 4) as usize, strings + word(at + 8) as usize);
                let value = at + 12;
                // SAFETY: inside the blob.
                let name = unsafe { core::slice::from_raw_parts(name as *const u8, 9) };
                if name == b"bootargs\0" && value + length <= end {
                    // SAFETY: inside the blob.
                    let text = unsafe { core::slice::from_raw_parts(value as *const u8, length) };
                    bootargs = Some(text.strip_suffix(b"\0").unwrap_or(text));
                }
                at = (value + length + 3) & !3;
            }
            2 | 4 => at += 4,
            _ => break,
        }
    }
    (nic, bootargs)
}

/// `peer=aa:bb:cc:dd:ee:ff` in the command line.
fn peer(arguments: &[u8]) -> Option<[u8; 6]> {
    let at = arguments.windows(5).position(|w| w == b"peer=")? + 5;
    let text = arguments.get(at..at + 17)?;
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        let pair = core::str::from_utf8(text.get(3 * i..3 * i + 2)?).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(mac)
}

fn frame(destination: [u8; 6], source: [u8; 6], text: &[u8], out: &mut [u8; 64]) -> usize {
    out.fill(0);
    out[..6].copy_from_slice(&destination);
    out[6..12].copy_from_slice(&source);
    out[12..14].copy_from_slice(&ETHERTYPE);
    out[14..14 + text.len()].copy_from_slice(text);
    60
}

/// The observer's part: waits for broadcasts (a greeting or the closing one) from two other NICs, then listens
/// for one more second and checks that no unicast frame for another NIC reached this one (the bridge learned
/// where each address lives).
fn observe(nic: &mut Nic, mac: [u8; 6]) -> u32 {
    let mut greeters: [Option<[u8; 6]>; 2] = [None; 2];
    let (mut stray, mut listen_until) = (0u32, None);
    let start = rt::clint::mtime();
    while rt::clint::mtime() - start < 200_000_000 && listen_until.is_none_or(|until| rt::clint::mtime() < until) {
        while let Some((buffer, len)) = nic.receive() {
            // SAFETY: a used receive buffer, which the device no longer writes until reposted.
            let received = unsafe { &*addr_of!(RX[buffer as usize % QUEUE_SIZE]) };
            let data = &received[..len.min(BUFFER)];
            if let Some(payload) = data.get(HEADER..).filter(|payload| payload.len() >= 14) {
                let (destination, source) = (&payload[..6], &payload[6..12]);
                if destination[0] & 1 == 0 && destination != mac {
                    stray += 1;
                }
                if destination == [0xff; 6] && !greeters.iter().flatten().any(|known| known == source) {
                    if let Some(free) = greeters.iter_mut().find(|slot| slot.is_none()) {
                        *free = source.try_into().ok();
                    }
                }
            }
            nic.post(0, buffer);
        }
        if listen_until.is_none() && greeters.iter().all(Option::is_some) {
            listen_until = Some(rt::clint::mtime() + 10_000_000);
        }
    }
    check("heard two greeters", greeters.iter().all(Option::is_some), format_args!("{greeters:?}"));
    check("no unicast frame for another NIC reached this one", stray == 0, format_args!("{stray} frames"));
    finish("net-ping")
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: u64, devicetree: u64) -> u32 {
    let (base, arguments) = walk_devicetree(devicetree as usize);
    let observer = arguments.is_some_and(|text| text == b"observe");
    let peer = arguments.and_then(peer);
    if peer.is_none() && !observer {
        println!("FAIL: no peer=MAC (or observe) on the command line");
        return 1;
    }
    let Some(base) = base else {
        println!("FAIL: no virtio-net NIC in the devicetree");
        return 1;
    };
    // SAFETY: the window the devicetree lists.
    let version = unsafe { read_volatile((base + VERSION) as *const u32) };
    println!("net-ping: NIC at {base:#x} (version {version})");
    let Some(mut nic) = Nic::probe(base) else { return finish("net-ping") };
    let mac = nic.mac();
    let link = u16::from(nic.config_byte(6)) | u16::from(nic.config_byte(7)) << 8;
    println!("net-ping: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    check("the link is up", link & 1 == 1, format_args!("status {link:#x}"));
    let Some(peer) = peer else { return observe(&mut nic, mac) };

    let mut out = [0u8; 64];
    let (mut heard, mut unicast_sent, mut unicast_got, mut bad_header) = (false, false, false, false);
    // Frames whose header had num_buffers 0 (QEMU's way, see below), counted and printed for host tests.
    let mut zero_buffers = 0u32;
    let start = rt::clint::mtime();
    let mut last_hello = 0;
    // At most 20 s of guest time.
    while !(unicast_sent && unicast_got) && rt::clint::mtime() - start < 200_000_000 {
        if !heard && rt::clint::mtime() - last_hello > 1_000_000 {
            last_hello = rt::clint::mtime();
            let len = frame([0xff; 6], mac, b"hello", &mut out);
            nic.send(&out[..len]);
        }
        if heard && !unicast_sent {
            let len = frame(peer, mac, b"unicast", &mut out);
            unicast_sent = nic.send(&out[..len]);
        }
        while let Some((buffer, len)) = nic.receive() {
            // SAFETY: a used receive buffer, which the device no longer writes until reposted.
            let received = unsafe { &*addr_of!(RX[buffer as usize % QUEUE_SIZE]) };
            let data = &received[..len.min(BUFFER)];
            // num_buffers (bytes 10 and 11) is 1 without mergeable buffers, as virtio 1.x asks and trapeze
            // writes; QEMU (7.2) fills it in only when they were negotiated and leaves 0 otherwise, which
            // Linux's driver ignores: accept 0 too, so this guest runs on both. gso_type (byte 1) must be none.
            if len < HEADER + 14 || !matches!(data[10..12], [0 | 1, 0]) || data[1] != 0 {
                bad_header = true;
            } else {
                zero_buffers += u32::from(data[10] == 0);
                let payload = &data[HEADER..];
                if payload[6..12] == peer && payload[12..14] == ETHERTYPE {
                    heard = true;
                    if payload[..6] == mac && payload[14..21] == *b"unicast" {
                        unicast_got = true;
                    }
                }
            }
            nic.post(0, buffer);
        }
    }
    // A last broadcast, so an observer that came up after the greetings still hears from this NIC.
    let len = frame([0xff; 6], mac, b"bye", &mut out);
    nic.send(&out[..len]);
    println!("net-ping: {zero_buffers} frames with num_buffers 0");
    check("heard the peer", heard, format_args!("nothing from the peer"));
    check("sent the peer a unicast frame", unicast_sent, format_args!("not sent"));
    check("got the peer's unicast frame", unicast_got, format_args!("not received"));
    check("every received header is v1 with num_buffers 1 (or QEMU's 0)", !bad_header, format_args!("a bad header"));
    finish("net-ping")
}
