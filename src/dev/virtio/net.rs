//! The virtio network device (virtio 1.x §5.1): one Ethernet NIC with its own MAC address in front of a
//! [`NetBackend`], the port the NIC talks to (a bridge port, an uplink, a test fake).
//!
//! Offered: `VIRTIO_NET_F_MAC` (the MAC in the configuration space) and `VIRTIO_NET_F_STATUS` (the link state,
//! up while the backend says so). Not offered: mergeable receive buffers, checksum offload, segmentation
//! offload, several queue pairs, control queue. So there is one receive queue (0) and one transmit queue (1),
//! every frame travels in one descriptor chain behind the 12-byte `virtio_net_hdr` of virtio 1.x (whose
//! `num_buffers` the device sets to 1), and a frame is at most [`FRAME_MAX`] bytes (an untagged Ethernet frame
//! without its FCS).
//!
//! Transmit: the driver's chain (device-readable only) holds the header and the frame; the frame goes to the
//! backend without the header. Receive: the backend's frames are taken one at a time into a fixed buffer
//! ([`VirtioDevice::take_outside_work`]); while one waits, the receive queue is usable
//! ([`VirtioDevice::can_use`]) and the frame goes, behind a fresh header, into the next buffer the driver made
//! available, with the used-buffer interrupt raised by the transport. A frame with no buffer to go into waits
//! in the device (and the ones behind it in the backend, which bounds and counts its own queue).
//!
//! Never trusts the guest and never allocates per frame: a chain with a defect, on the wrong side, too short
//! for its frame, too long for [`FRAME_MAX`], or asking for segmentation offload that was not offered, is given
//! back used and its frame dropped and counted ([`NetStats`]); nothing here panics on guest input.

use super::queue::DescChain;
use super::{ChainBroken, GuestMemory, VirtioDevice};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Virtio device ID of a network card.
pub const DEVICE_ID_NET: u32 = 1;

/// Feature bit: the configuration space holds the MAC address.
pub const F_MAC: u64 = 1 << 5;
/// Feature bit: mergeable receive buffers (never offered).
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// Feature bit: the configuration space holds the link status.
pub const F_STATUS: u64 = 1 << 16;

/// Configuration `status` bit: the link is up.
pub const S_LINK_UP: u16 = 1;

/// The receive queue.
pub const RECEIVE_QUEUE: usize = 0;
/// The transmit queue.
pub const TRANSMIT_QUEUE: usize = 1;

/// Length of `virtio_net_hdr` under virtio 1.x: `flags`, `gso_type`, `hdr_len`, `gso_size`, `csum_start`,
/// `csum_offset`, `num_buffers`.
pub const HEADER_LEN: usize = 12;
/// The largest frame carried: 1500 bytes of payload behind a 14-byte Ethernet header, no FCS.
pub const FRAME_MAX: usize = 1514;
/// The smallest frame carried: an Ethernet header.
pub const FRAME_MIN: usize = 14;
/// `gso_type` of a frame that asks for no segmentation offload.
pub const GSO_NONE: u8 = 0;
/// Length of the configuration structure exposed: `mac`, `status`, `max_virtqueue_pairs`.
pub const CONFIG_LEN: usize = 10;

/// A MAC address.
pub type Mac = [u8; 6];

/// The port a virtio NIC talks to.
///
/// Call order: the device calls [`send`](Self::send) once per frame the guest transmits, while it serves the
/// transmit queue, and [`receive`](Self::receive) when it has no received frame waiting (at each poll, and
/// after each frame it delivers), so the backend holds the frames that have not reached the NIC yet and must
/// bound that queue itself. Neither may block.
pub trait NetBackend {
    /// A frame the guest transmitted (between [`FRAME_MIN`] and [`FRAME_MAX`] bytes, without the virtio header).
    /// The backend may drop it (a full queue); the guest is not told, as on a wire.
    fn send(&mut self, frame: &[u8]);
    /// The next frame for the guest, copied into `buf`; answers its length (at most [`FRAME_MAX`]).
    fn receive(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize>;
    /// Whether the link is up (the configuration's `status`). The default: always.
    fn link_up(&self) -> bool {
        true
    }
}

impl<T: NetBackend + ?Sized> NetBackend for &mut T {
    fn send(&mut self, frame: &[u8]) {
        (**self).send(frame)
    }
    fn receive(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        (**self).receive(buf)
    }
    fn link_up(&self) -> bool {
        (**self).link_up()
    }
}

/// The backend of a machine without a NIC: nothing arrives, everything sent is lost, the link is down.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNet;

impl NetBackend for NoNet {
    fn send(&mut self, _frame: &[u8]) {}
    fn receive(&mut self, _buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        None
    }
    fn link_up(&self) -> bool {
        false
    }
}

/// What the device counted since it was made (not reset by a driver reset, not in snapshots).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the backend.
    pub tx_frames: u64,
    /// Transmit chains given back without sending (malformed, too short or too long).
    pub tx_dropped: u64,
    /// Frames delivered into a guest buffer.
    pub rx_frames: u64,
    /// Received frames dropped: the guest's buffer was malformed or too small, or the driver reset the device.
    pub rx_dropped: u64,
}

/// The virtio network device over backend `B`. Put it behind a [`VirtioMmio`](super::VirtioMmio).
pub struct VirtioNet<B> {
    backend: B,
    mac: Mac,
    /// The received frame waiting for a guest buffer: `rx[..len]`.
    rx: [u8; FRAME_MAX],
    rx_len: Option<usize>,
    stats: NetStats,
}

impl<B: NetBackend> VirtioNet<B> {
    /// A NIC with address `mac` over `backend`.
    pub fn new(backend: B, mac: Mac) -> Self {
        Self { backend, mac, rx: [0; FRAME_MAX], rx_len: None, stats: NetStats::default() }
    }

    /// The MAC address the guest reads.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Whether a received frame waits for a guest buffer.
    pub fn rx_waiting(&self) -> bool {
        self.rx_len.is_some()
    }

    /// Takes the backend's next frame when none is waiting.
    fn refill(&mut self) {
        if self.rx_len.is_none() {
            self.rx_len = self.backend.receive(&mut self.rx).filter(|&len| len <= FRAME_MAX);
        }
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&self.mac);
        let status = if self.backend.link_up() { S_LINK_UP } else { 0 };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config
    }

    /// Sends the frame in a transmit chain; false when the chain is unfit and the frame was dropped.
    fn transmit<M: GuestMemory + ?Sized>(&mut self, chain: &DescChain, mem: &M) -> bool {
        let total = chain.readable_len();
        let fits = (HEADER_LEN + FRAME_MIN) as u64 <= total && total <= (HEADER_LEN + FRAME_MAX) as u64;
        if chain.defect().is_some() || chain.writable_len() != 0 || !fits {
            return false;
        }
        let mut packet = [0u8; HEADER_LEN + FRAME_MAX];
        let Some(packet) = packet.get_mut(..total as usize) else { return false };
        if !read_stream(chain, mem, packet) {
            return false;
        }
        // Offloads that were not offered cannot be asked for; the flags (checksum) are ignored likewise.
        if packet.get(1) != Some(&GSO_NONE) {
            return false;
        }
        match packet.get(HEADER_LEN..) {
            Some(frame) => {
                self.backend.send(frame);
                true
            }
            None => false,
        }
    }

    /// Delivers the waiting frame into a receive chain; answers the bytes written (0: dropped or none waiting).
    fn deliver<M: GuestMemory + ?Sized>(&mut self, chain: &DescChain, mem: &mut M) -> u32 {
        let Some(len) = self.rx_len.take() else { return 0 };
        let total = HEADER_LEN + len;
        let fits = chain.readable_len() == 0 && chain.writable_len() >= total as u64;
        let mut header = [0u8; HEADER_LEN];
        // num_buffers: always one buffer per frame without mergeable buffers.
        header[10..12].copy_from_slice(&1u16.to_le_bytes());
        let frame = self.rx.get(..len).unwrap_or_default();
        let written = chain.defect().is_none()
            && fits
            && write_stream(chain, mem, 0, &header)
            && write_stream(chain, mem, HEADER_LEN as u64, frame);
        self.refill();
        if written {
            self.stats.rx_frames += 1;
            total as u32
        } else {
            self.stats.rx_dropped += 1;
            0
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

/// Writes `bytes` into the chain's writable stream from offset `start`; false if the stream is shorter.
fn write_stream<M: GuestMemory + ?Sized>(chain: &DescChain, mem: &mut M, start: u64, bytes: &[u8]) -> bool {
    let mut done = 0usize;
    let mut segments = chain.segments(true, start, bytes.len() as u64);
    while let Some((addr, n)) = segments.next(mem) {
        let Some(src) = bytes.get(done..done + n as usize) else { return false };
        if mem.write_bytes(addr, src).is_none() {
            return false;
        }
        done += n as usize;
    }
    done == bytes.len()
}

impl<B: NetBackend> VirtioDevice for VirtioNet<B> {
    fn device_id(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn features(&self) -> u64 {
        F_MAC | F_STATUS
    }

    fn num_queues(&self) -> usize {
        2
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.checked_add(i as u64).and_then(|at| usize::try_from(at).ok());
            *byte = at.and_then(|at| config.get(at)).copied().unwrap_or(0);
        }
    }

    fn reset(&mut self) {
        if self.rx_len.take().is_some() {
            self.stats.rx_dropped += 1;
        }
    }

    fn take_outside_work(&mut self) -> u32 {
        self.refill();
        if self.rx_len.is_some() {
            1 << RECEIVE_QUEUE
        } else {
            0
        }
    }

    fn can_use(&self, queue: usize) -> bool {
        queue != RECEIVE_QUEUE || self.rx_len.is_some()
    }

    /// The MAC and the frame waiting for a buffer; the backend's own queue is the host's.
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.bytes(&self.mac);
        match self.rx_len.and_then(|len| Some((len, self.rx.get(..len)?))) {
            Some((len, frame)) => {
                out.u16(len as u16);
                out.bytes(frame);
            }
            None => out.u16(u16::MAX),
        }
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.bytes(6)? != self.mac {
            return Err(input.mismatch("the NIC's MAC address"));
        }
        let mut rx = [0u8; FRAME_MAX];
        let rx_len = match usize::from(input.u16()?) {
            0xffff => None,
            len if len <= FRAME_MAX => {
                rx[..len].copy_from_slice(input.bytes(len)?);
                Some(len)
            }
            _ => return Err(input.invalid("a received frame longer than the NIC takes")),
        };
        if mode.apply() {
            (self.rx, self.rx_len) = (rx, rx_len);
        }
        Ok(())
    }

    fn handle<M: GuestMemory + ?Sized>(
        &mut self,
        queue: usize,
        chain: &DescChain,
        mem: &mut M,
    ) -> Result<u32, ChainBroken> {
        match queue {
            RECEIVE_QUEUE => Ok(self.deliver(chain, mem)),
            TRANSMIT_QUEUE => {
                if self.transmit(chain, mem) {
                    self.stats.tx_frames += 1;
                } else {
                    self.stats.tx_dropped += 1;
                }
                Ok(0)
            }
            _ => Err(ChainBroken),
        }
    }
}

/// A backend for tests: frames sent are kept, frames to receive are queued by the test.
#[cfg(test)]
pub(crate) mod fake {
    use super::{NetBackend, FRAME_MAX};
    use std::collections::VecDeque;
    use std::vec::Vec;

    #[derive(Default)]
    pub struct FakeNet {
        pub sent: Vec<Vec<u8>>,
        pub incoming: VecDeque<Vec<u8>>,
        pub link_down: bool,
    }

    impl NetBackend for FakeNet {
        fn send(&mut self, frame: &[u8]) {
            self.sent.push(frame.to_vec());
        }
        fn receive(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
            let frame = self.incoming.pop_front()?;
            let len = frame.len().min(FRAME_MAX);
            buf[..len].copy_from_slice(&frame[..len]);
            Some(len)
        }
        fn link_up(&self) -> bool {
            !self.link_down
        }
    }
}
