//! The hosted UDP uplink of a bridge: QEMU's `-netdev dgram` (or `socket,udp=`) transport, one Ethernet frame
//! per datagram between two loopback (or LAN) addresses, so a trapeze network and a QEMU VM, or two trapeze
//! processes, share one LAN. The uplink is one port of the bridge; the `trapeze up` loop moves datagrams into
//! the port's ingress before switching and the port's egress out as datagrams after.
//!
//! Never blocks (the socket is non-blocking) and never trusts a datagram: one that is not a frame's length is
//! dropped by the bridge and counted there; at most a fixed number of datagrams is taken per call, so a
//! flooding peer cannot hold the loop.

use std::net::{SocketAddr, UdpSocket};

use trapeze::dev::virtio::net::FRAME_MAX;
use trapeze::net::{Bridge, PortId};

/// Most datagrams taken from the socket per call.
const BURST: usize = 64;

/// A bridge port whose other end is a UDP socket.
pub struct UdpUplink {
    socket: UdpSocket,
    remote: SocketAddr,
    port: PortId,
}

impl UdpUplink {
    /// Binds `local`, sends to `remote` (`host:port` each), on port `port` of its bridge.
    pub fn open(local: &str, remote: &str, port: PortId) -> Result<Self, String> {
        let socket = UdpSocket::bind(local).map_err(|e| format!("udp: cannot bind {local}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| format!("udp: {local}: {e}"))?;
        let remote = std::net::ToSocketAddrs::to_socket_addrs(remote)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("udp: remote {remote:?} is not host:port"))?;
        Ok(Self { socket, remote, port })
    }

    /// Moves waiting datagrams into the bridge (at most [`BURST`]); answers how many.
    pub fn receive<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) -> usize {
        let mut buf = [0u8; FRAME_MAX + 1];
        let mut taken = 0;
        while taken < BURST {
            match self.socket.recv_from(&mut buf) {
                Ok((len, _)) => {
                    bridge.send(self.port, &buf[..len.min(buf.len())]);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        taken
    }

    /// Sends the frames the bridge switched to the uplink, one datagram each (a send error drops the frame).
    pub fn transmit<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) {
        let mut buf = [0u8; FRAME_MAX];
        while let Some(len) = bridge.receive(self.port, &mut buf) {
            let _ = self.socket.send_to(&buf[..len], self.remote);
        }
    }
}
