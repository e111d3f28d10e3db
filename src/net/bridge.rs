//! The virtual bridge: a learning Ethernet switch between the VMs' NICs and the host's uplinks, all in fixed
//! memory.
//!
//! Each port has an ingress queue (frames its NIC or uplink sent, waiting to be switched) and an egress queue
//! (frames switched to it, waiting to be taken), both of `DEPTH` frames; a frame that finds its queue full is
//! dropped and counted. [`Bridge::pump`] switches frames from the ingress queues round-robin, one frame per port
//! per round, so a port that sends without pause gets its share of the switching and no more: it cannot starve
//! another. Switching learns the source MAC into a table of `TABLE` entries (an entry ages out after the
//! bridge's ageing time; a full table forgets its oldest entry), sends a unicast frame to a learned address
//! only to that address's port, and floods broadcast, multicast and unknown unicast frames to every other
//! attached port.
//!
//! What it must never do: send a frame back out of the port it came in by (a frame for an address learned on
//! its own port is filtered), grow a queue past its capacity, allocate, block, or panic on any frame or port
//! number; every frame is treated as hostile bytes of a length between [`FRAME_MIN`] and [`FRAME_MAX`].
//!
//! Sharing: the bridge is owned outside the VMs; each VM's NIC reaches its port through a [`BridgePort`], a
//! handle holding a shared reference to the bridge in a [`RefCell`] and the port number, so the single-thread
//! hypervisor loop can pump the bridge between the VMs' turns.

use core::cell::RefCell;

use crate::dev::virtio::net::{Mac, NetBackend, FRAME_MAX, FRAME_MIN};

/// A port of a bridge, as [`Bridge::attach`] gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortId(usize);

impl PortId {
    /// The port's index.
    pub fn index(self) -> usize {
        self.0
    }
}

/// What a port counted since it was attached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStats {
    /// Frames the port sent that the bridge accepted into its ingress queue.
    pub sent: u64,
    /// Frames the port sent that were dropped: the ingress queue was full or the length was not a frame's.
    pub send_dropped: u64,
    /// Frames switched out of the port's ingress queue.
    pub switched: u64,
    /// Frames switched out of the port's ingress queue that went nowhere: for an address on the same port.
    pub filtered: u64,
    /// Frames put into the port's egress queue.
    pub queued: u64,
    /// Frames for the port dropped because its egress queue was full.
    pub queue_dropped: u64,
    /// Frames the port took from its egress queue.
    pub received: u64,
}

/// A fixed ring of frames.
struct FrameQueue<const DEPTH: usize> {
    frames: [[u8; FRAME_MAX]; DEPTH],
    lens: [u16; DEPTH],
    head: usize,
    len: usize,
}

impl<const DEPTH: usize> FrameQueue<DEPTH> {
    fn new() -> Self {
        Self { frames: [[0; FRAME_MAX]; DEPTH], lens: [0; DEPTH], head: 0, len: 0 }
    }

    fn push(&mut self, frame: &[u8]) -> bool {
        if self.len >= DEPTH || frame.len() > FRAME_MAX {
            return false;
        }
        let slot = (self.head + self.len) % DEPTH;
        match (self.frames.get_mut(slot), self.lens.get_mut(slot)) {
            (Some(dst), Some(len)) => {
                dst[..frame.len()].copy_from_slice(frame);
                *len = frame.len() as u16;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    fn pop(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let slot = self.head;
        let len = usize::from(*self.lens.get(slot)?).min(FRAME_MAX);
        buf[..len].copy_from_slice(&self.frames.get(slot)?[..len]);
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        Some(len)
    }

    fn clear(&mut self) {
        (self.head, self.len) = (0, 0);
    }
}

struct Port<const DEPTH: usize> {
    attached: bool,
    ingress: FrameQueue<DEPTH>,
    egress: FrameQueue<DEPTH>,
    stats: PortStats,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    mac: Mac,
    port: usize,
    seen: u64,
}

/// A learning switch of `PORTS` ports, each with queues of `DEPTH` frames, and a MAC table of `TABLE` entries.
///
/// Call order: ports are [`attach`](Self::attach)ed; their owners [`send`](Self::send) and
/// [`receive`](Self::receive) at any time; the host calls [`pump`](Self::pump) regularly (the hosted loop does
/// between VM turns), then wakes the owners of ports with [`pending`](Self::pending) frames.
pub struct Bridge<const PORTS: usize, const DEPTH: usize, const TABLE: usize> {
    ports: [Port<DEPTH>; PORTS],
    table: [Option<Learned>; TABLE],
    /// The port the next round of switching starts at.
    next: usize,
    ageing: u64,
    now: u64,
}

/// Whether `mac` is a group (broadcast or multicast) address.
fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

impl<const PORTS: usize, const DEPTH: usize, const TABLE: usize> Bridge<PORTS, DEPTH, TABLE> {
    /// A bridge with no port attached whose learned addresses age out `ageing` time units (of the `now` given
    /// to [`pump`](Self::pump)) after they were last seen.
    pub fn new(ageing: u64) -> Self {
        Self {
            ports: core::array::from_fn(|_| Port {
                attached: false,
                ingress: FrameQueue::new(),
                egress: FrameQueue::new(),
                stats: PortStats::default(),
            }),
            table: [None; TABLE],
            next: 0,
            ageing,
            now: 0,
        }
    }

    /// A free port, now attached; `None` when all `PORTS` are taken.
    pub fn attach(&mut self) -> Option<PortId> {
        let index = self.ports.iter().position(|port| !port.attached)?;
        let port = self.ports.get_mut(index)?;
        port.attached = true;
        port.stats = PortStats::default();
        Some(PortId(index))
    }

    /// Detaches `port`: its queued frames and learned addresses are forgotten.
    pub fn detach(&mut self, port: PortId) {
        if let Some(state) = self.ports.get_mut(port.0) {
            state.attached = false;
            state.ingress.clear();
            state.egress.clear();
        }
        for entry in &mut self.table {
            if entry.is_some_and(|learned| learned.port == port.0) {
                *entry = None;
            }
        }
    }

    /// `port` sends `frame` into the bridge; false when it was dropped (ingress full, not a frame's length, or
    /// the port is not attached).
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(state) = self.ports.get_mut(port.0).filter(|state| state.attached) else { return false };
        let accepted = (FRAME_MIN..=FRAME_MAX).contains(&frame.len()) && state.ingress.push(frame);
        if accepted {
            state.stats.sent += 1;
        } else {
            state.stats.send_dropped += 1;
        }
        accepted
    }

    /// The next frame switched to `port`, copied into `buf`; answers its length.
    pub fn receive(&mut self, port: PortId, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        let state = self.ports.get_mut(port.0)?;
        let len = state.egress.pop(buf)?;
        state.stats.received += 1;
        Some(len)
    }

    /// How many frames wait in `port`'s egress queue.
    pub fn pending(&self, port: PortId) -> usize {
        self.ports.get(port.0).map_or(0, |state| state.egress.len)
    }

    /// How many frames wait in `port`'s ingress queue.
    pub fn unswitched(&self, port: PortId) -> usize {
        self.ports.get(port.0).map_or(0, |state| state.ingress.len)
    }

    /// The counters of `port`.
    pub fn stats(&self, port: PortId) -> PortStats {
        self.ports.get(port.0).map_or_else(PortStats::default, |state| state.stats)
    }

    /// The port `mac` was learned on, if it has not aged out.
    pub fn lookup(&self, mac: &Mac) -> Option<PortId> {
        self.table
            .iter()
            .flatten()
            .find(|learned| learned.mac == *mac && self.now.saturating_sub(learned.seen) <= self.ageing)
            .map(|learned| PortId(learned.port))
    }

    /// Switches at most `budget` frames out of the ingress queues, one per port per round, starting each call
    /// where the previous one stopped; answers how many it switched. `now` is the time for learning and ageing.
    pub fn pump(&mut self, now: u64, budget: usize) -> usize {
        self.now = self.now.max(now);
        let mut frame = [0u8; FRAME_MAX];
        let mut switched = 0;
        let mut idle = 0;
        // Stops when the budget is spent or a whole round found every ingress queue empty.
        while switched < budget && idle < PORTS {
            let source = self.next % PORTS.max(1);
            self.next = (source + 1) % PORTS.max(1);
            let Some(len) = self.ports.get_mut(source).and_then(|port| port.ingress.pop(&mut frame)) else {
                idle += 1;
                continue;
            };
            idle = 0;
            switched += 1;
            self.switch(source, frame.get(..len).unwrap_or_default());
        }
        switched
    }

    /// Switches one frame that came in by port `source`.
    fn switch(&mut self, source: usize, frame: &[u8]) {
        if let Some(state) = self.ports.get_mut(source) {
            state.stats.switched += 1;
        }
        let (Some(destination), Some(origin)) = (mac_at(frame, 0), mac_at(frame, 6)) else { return };
        if !is_group(&origin) {
            self.learn(origin, source);
        }
        let target = if is_group(&destination) { None } else { self.lookup(&destination) };
        match target {
            Some(PortId(port)) if port == source => {
                if let Some(state) = self.ports.get_mut(source) {
                    state.stats.filtered += 1;
                }
            }
            Some(PortId(port)) => self.enqueue(port, frame),
            None => {
                for port in 0..PORTS {
                    if port != source && self.ports.get(port).is_some_and(|state| state.attached) {
                        self.enqueue(port, frame);
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, port: usize, frame: &[u8]) {
        let Some(state) = self.ports.get_mut(port) else { return };
        if state.egress.push(frame) {
            state.stats.queued += 1;
        } else {
            state.stats.queue_dropped += 1;
        }
    }

    /// Records that `mac` was seen on `port`: its entry, else a free or aged one, else the oldest.
    fn learn(&mut self, mac: Mac, port: usize) {
        let now = self.now;
        let ageing = self.ageing;
        let entry = match self.table.iter().position(|entry| entry.is_some_and(|learned| learned.mac == mac)) {
            Some(index) => self.table.get_mut(index),
            None => {
                let reusable =
                    |entry: &Option<Learned>| entry.is_none_or(|learned| now.saturating_sub(learned.seen) > ageing);
                let index = self.table.iter().position(reusable).or_else(|| {
                    (0..TABLE).min_by_key(|&index| self.table.get(index).copied().flatten().map_or(0, |l| l.seen))
                });
                index.and_then(|index| self.table.get_mut(index))
            }
        };
        if let Some(entry) = entry {
            *entry = Some(Learned { mac, port, seen: now });
        }
    }
}

/// The MAC address at byte `at` of `frame`.
fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

/// A NIC's handle on one port of a bridge shared through a [`RefCell`]: the [`NetBackend`] of a VM on the bridge.
///
/// Never panics: if the bridge is borrowed elsewhere at the moment (which the single-thread loop never does),
/// a send is dropped and a receive finds nothing.
pub struct BridgePort<'b, const PORTS: usize, const DEPTH: usize, const TABLE: usize> {
    bridge: &'b RefCell<Bridge<PORTS, DEPTH, TABLE>>,
    port: PortId,
}

impl<'b, const PORTS: usize, const DEPTH: usize, const TABLE: usize> BridgePort<'b, PORTS, DEPTH, TABLE> {
    /// Attaches a new port of `bridge`; `None` when every port is taken.
    pub fn attach(bridge: &'b RefCell<Bridge<PORTS, DEPTH, TABLE>>) -> Option<Self> {
        let port = bridge.try_borrow_mut().ok()?.attach()?;
        Some(Self { bridge, port })
    }

    /// The port this handle uses.
    pub fn port(&self) -> PortId {
        self.port
    }
}

impl<const PORTS: usize, const DEPTH: usize, const TABLE: usize> NetBackend for BridgePort<'_, PORTS, DEPTH, TABLE> {
    fn send(&mut self, frame: &[u8]) {
        if let Ok(mut bridge) = self.bridge.try_borrow_mut() {
            bridge.send(self.port, frame);
        }
    }

    fn receive(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        self.bridge.try_borrow_mut().ok()?.receive(self.port, buf)
    }
}

#[cfg(test)]
mod tests;
