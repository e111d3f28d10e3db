//! The board's network: one learning bridge of the core (`trapeze::net::Bridge`) between the VMs' virtio-net NICs
//! and an uplink to the physical NIC QEMU gives the machine (`-netdev user`, `run-qemu.sh`), which the VMM drives
//! with `virtio-drivers` ([`PhysicalNic`]), so the VMs reach QEMU's user-mode network (its DHCP server, 10.0.2.2).
//!
//! The design is the hosted `trapeze up`'s (`hosted-test/src/up.rs`): the bridge is owned by the board, each VM's
//! NIC (`trapeze::dev::virtio::net`, in its first virtio-mmio slot after the disk's) holds a [`VmNic`], a port of
//! the bridge, as its backend, and the board's loop calls [`BoardNet::pump`] between the VMs' turns: frames the
//! physical NIC received go into the uplink's port, the bridge switches what every port sent (round-robin, one
//! frame per port per round), and the frames switched to the uplink go out through the physical NIC. A VM whose
//! port got frames is woken (`BoardNet::arrived`); its NIC takes them when its devices are next updated and
//! raises its interrupt through the VM's PLIC.
//!
//! Bounded everywhere, no allocation after setup: the bridge's queues hold [`DEPTH`] frames per port each way
//! (a frame that finds one full is dropped and counted by the bridge), the physical NIC has [`RX_BUFFERS`]
//! receive and [`TX_BUFFERS`] transmit buffers of its own (heap pages allocated once, at boot, which never move
//! while the device may use them), at most [`RX_BUFFERS`] frames are taken from it per pump, and a transmission
//! never waits for the device: while its transmit buffers are all in flight, frames wait in the bridge's queue for
//! the uplink (and the ones past its depth are dropped there, counted). Nothing a guest or the network sends can
//! panic the VMM: every length and token from the device is checked, and the bridge treats frames as hostile
//! bytes.

use alloc::boxed::Box;
use core::cell::RefCell;

use trapeze::dev::virtio::net::{FRAME_MAX, HEADER_LEN};
use trapeze::net::{Bridge, BridgePort, PortId, PortStats};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::MmioTransport;

use crate::disk::BoardHal;

/// Ports of the board's bridge: U-Boot's NIC, the two `net-ping` VMs' and the uplink.
pub const PORTS: usize = 4;
/// Frames each port queues each way.
pub const DEPTH: usize = 16;
/// Addresses the bridge learns.
pub const TABLE: usize = 16;
/// How long a learned address lasts without being seen: 300 s of the 10 MHz machine timer, as Linux bridges.
const AGEING: u64 = 300 * 10_000_000;

/// The board's bridge.
pub type BoardBridge = Bridge<PORTS, DEPTH, TABLE>;
/// A VM's NIC backend: its port of the board's bridge.
pub type VmNic = BridgePort<'static, PORTS, DEPTH, TABLE>;

/// Descriptors of each of the physical NIC's queues.
const QUEUE_SIZE: usize = 16;
/// Receive buffers kept posted to the physical NIC.
pub const RX_BUFFERS: usize = 8;
/// Transmit buffers of the physical NIC (frames in flight at once).
pub const TX_BUFFERS: usize = 4;
/// One buffer: the largest `virtio_net_hdr` (12 bytes) and the largest frame.
const BUFFER: usize = HEADER_LEN + FRAME_MAX;

/// What the physical NIC counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NicStats {
    /// Frames received from the network and handed to the bridge.
    pub received: u64,
    /// Received buffers that held no frame (an error from the driver or a length out of range).
    pub rx_errors: u64,
    /// Frames handed to the device.
    pub transmitted: u64,
    /// Frames the driver refused to queue (dropped).
    pub tx_errors: u64,
}

/// The physical virtio-net NIC, driven with `virtio-drivers`' raw driver and buffers of the board's own.
pub struct PhysicalNic {
    net: VirtIONetRaw<BoardHal, MmioTransport<'static>, QUEUE_SIZE>,
    /// The virtio-mmio slot it sits in.
    pub base: usize,
    rx: &'static mut [[u8; BUFFER]; RX_BUFFERS],
    /// The device's token of each posted receive buffer (`None`: not posted).
    rx_tokens: [Option<u16>; RX_BUFFERS],
    tx: &'static mut [[u8; BUFFER]; TX_BUFFERS],
    /// The token and length of each transmit buffer in flight.
    tx_in_flight: [Option<(u16, usize)>; TX_BUFFERS],
    pub stats: NicStats,
}

impl PhysicalNic {
    /// The NIC behind `transport` (the virtio-mmio slot at `base`), initialised, with every receive buffer posted;
    /// `None` when the driver refuses it.
    pub fn new(transport: MmioTransport<'static>, base: usize) -> Option<Self> {
        let net = VirtIONetRaw::new(transport).ok()?;
        // On the heap once, for the board's lifetime: the device writes and reads them while they are posted,
        // so they must never move (the `PhysicalNic` itself does).
        let rx = Box::leak(Box::new([[0u8; BUFFER]; RX_BUFFERS]));
        let tx = Box::leak(Box::new([[0u8; BUFFER]; TX_BUFFERS]));
        let mut nic = Self {
            net,
            base,
            rx,
            rx_tokens: [None; RX_BUFFERS],
            tx,
            tx_in_flight: [None; TX_BUFFERS],
            stats: NicStats::default(),
        };
        for index in 0..RX_BUFFERS {
            nic.post(index);
        }
        Some(nic)
    }

    /// The MAC address QEMU gave the device.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// Posts receive buffer `index` to the device.
    fn post(&mut self, index: usize) {
        let (Some(buffer), Some(token)) = (self.rx.get_mut(index), self.rx_tokens.get_mut(index)) else { return };
        // SAFETY: the buffer is the board's for its lifetime (leaked, never moved) and is not touched again until
        // the device has given it back (`receive`, which completes it before reading it).
        *token = unsafe { self.net.receive_begin(buffer) }.ok();
    }

    /// Moves the frames the device received (at most [`RX_BUFFERS`]) into `port` of `bridge`, reposting each
    /// buffer; answers how many it moved.
    pub fn receive(&mut self, bridge: &mut BoardBridge, port: PortId) -> usize {
        let mut moved = 0;
        for _ in 0..RX_BUFFERS {
            let Some(token) = self.net.poll_receive() else { break };
            let Some(index) = self.rx_tokens.iter().position(|&posted| posted == Some(token)) else {
                // A token the board never posted: the device is broken; stop taking from it.
                self.stats.rx_errors += 1;
                break;
            };
            self.rx_tokens[index] = None;
            let buffer = &mut self.rx[index];
            // SAFETY: the buffer `receive_begin` was given for this token, completed before it is read.
            let completed = unsafe { self.net.receive_complete(token, buffer) };
            let frame = completed.ok().and_then(|(header, len)| buffer.get(header..header.checked_add(len)?));
            match frame {
                Some(frame) => {
                    bridge.send(port, frame);
                    self.stats.received += 1;
                    moved += 1;
                }
                None => self.stats.rx_errors += 1,
            }
            self.post(index);
        }
        moved
    }

    /// Takes back the transmit buffers the device is done with.
    fn reap(&mut self) {
        while let Some(token) = self.net.poll_transmit() {
            let Some(index) = self.tx_in_flight.iter().position(|f| f.is_some_and(|(t, _)| t == token)) else {
                break;
            };
            let Some((_, len)) = self.tx_in_flight[index].take() else { break };
            let buffer = self.tx[index].get(..len).unwrap_or_default();
            // SAFETY: the same buffer (and length) `transmit_begin` was given for this token.
            if unsafe { self.net.transmit_complete(token, buffer) }.is_err() {
                self.stats.tx_errors += 1;
            }
        }
    }

    /// Sends the frames `bridge` switched to `port` while a transmit buffer is free (the rest wait in the port's
    /// queue); answers how many went to the device.
    pub fn transmit(&mut self, bridge: &mut BoardBridge, port: PortId) -> usize {
        self.reap();
        let mut sent = 0;
        while bridge.pending(port) > 0 {
            let Some(index) = self.tx_in_flight.iter().position(Option::is_none) else { break };
            let mut frame = [0u8; FRAME_MAX];
            let Some(len) = bridge.receive(port, &mut frame) else { break };
            let buffer = &mut self.tx[index];
            // Cannot fail (the buffer holds the largest header and frame); a frame that did is dropped, counted.
            let header = self.net.fill_buffer_header(buffer).unwrap_or(BUFFER);
            let total = header.saturating_add(len);
            let (Some(payload), Some(data)) = (buffer.get_mut(header..total), frame.get(..len)) else {
                self.stats.tx_errors += 1;
                continue;
            };
            payload.copy_from_slice(data);
            let buffer = &self.tx[index][..total];
            // SAFETY: the buffer is the board's for its lifetime (leaked, never moved), and is not written again
            // until the device has given it back (`reap`).
            match unsafe { self.net.transmit_begin(buffer) } {
                Ok(token) => {
                    self.tx_in_flight[index] = Some((token, total));
                    self.stats.transmitted += 1;
                    sent += 1;
                }
                Err(_) => self.stats.tx_errors += 1,
            }
        }
        sent
    }
}

/// The board's bridge, its uplink to the physical NIC (when QEMU gave the machine one), and the VMs' ports.
pub struct BoardNet {
    bridge: &'static RefCell<BoardBridge>,
    uplink: Option<(PhysicalNic, PortId)>,
    /// Each port's count of frames queued for it when [`arrived`](Self::arrived) last looked.
    seen: [u64; PORTS],
}

impl BoardNet {
    /// A bridge with the physical NIC `nic` (if any) as its uplink port.
    pub fn new(nic: Option<PhysicalNic>) -> Self {
        let bridge: &'static RefCell<BoardBridge> = Box::leak(Box::new(RefCell::new(Bridge::new(AGEING))));
        let uplink = nic.and_then(|nic| Some((nic, bridge.borrow_mut().attach()?)));
        Self { bridge, uplink, seen: [0; PORTS] }
    }

    /// The physical NIC, when the bridge has an uplink.
    pub fn uplink(&self) -> Option<&PhysicalNic> {
        self.uplink.as_ref().map(|(nic, _)| nic)
    }

    /// A new port of the bridge for a VM's NIC; `None` when every port is taken.
    pub fn attach_vm(&self) -> Option<VmNic> {
        BridgePort::attach(self.bridge)
    }

    /// Moves the physical NIC's received frames into the bridge, switches every port's frames, and sends the
    /// uplink's out through the physical NIC. `now` is machine time, for learning and ageing.
    pub fn pump(&mut self, now: u64) {
        let Ok(mut bridge) = self.bridge.try_borrow_mut() else { return };
        if let Some((nic, port)) = self.uplink.as_mut() {
            nic.receive(&mut bridge, *port);
        }
        bridge.pump(now, PORTS * DEPTH);
        if let Some((nic, port)) = self.uplink.as_mut() {
            nic.transmit(&mut bridge, *port);
        }
    }

    /// Whether frames were queued for `port`'s NIC since the last call: its VM should be woken to take them. (Not
    /// whether frames wait: a NIC its driver has stopped leaves them waiting, and its VM must not be woken for
    /// them again and again.)
    pub fn arrived(&mut self, port: PortId) -> bool {
        let queued = self.stats(port).queued;
        let Some(seen) = self.seen.get_mut(port.index()) else { return false };
        let arrived = queued != *seen;
        *seen = queued;
        arrived
    }

    /// The counters of `port`.
    pub fn stats(&self, port: PortId) -> PortStats {
        self.bridge.try_borrow().map_or_else(|_| PortStats::default(), |bridge| bridge.stats(port))
    }

    /// The counters of the uplink's port, and the physical NIC's.
    pub fn uplink_stats(&self) -> Option<(PortStats, NicStats)> {
        self.uplink.as_ref().map(|(nic, port)| (self.stats(*port), nic.stats))
    }
}
