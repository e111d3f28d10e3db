//! The hosted uplinks of a bridge, each one port of it whose other end is outside the process:
//!
//! - [`UdpUplink`]: QEMU's `-netdev dgram` (or `socket,udp=`) transport, one Ethernet frame per datagram between
//!   two loopback (or LAN) addresses, so a trapeze network and a QEMU VM, or two trapeze processes, share one LAN.
//! - [`TapUplink`]: a Linux TAP device (`/dev/net/tun`), one Ethernet frame per read or write, so the host's own
//!   network stack is one more station on the LAN.
//!
//! The `trapeze up` loop moves what the uplink delivered into the port's ingress before switching ([`Uplink::receive`])
//! and the port's egress out after ([`Uplink::transmit`]).
//!
//! An uplink never blocks (its socket or device is non-blocking) and never trusts what arrives: a datagram or read
//! that is not a frame's length is dropped by the bridge and counted there; at most a fixed number of frames is
//! taken per call, so a flooding peer cannot hold the loop. It never configures the host (addresses, routes, link
//! state of a TAP device are the administrator's).

use std::net::{SocketAddr, UdpSocket};

use trapeze::dev::virtio::net::FRAME_MAX;
use trapeze::net::{Bridge, PortId};

/// Most frames taken from an uplink per call.
const BURST: usize = 64;

/// A bridge port whose other end is a UDP socket or a TAP device.
pub enum Uplink {
    Udp(UdpUplink),
    Tap(TapUplink),
}

impl Uplink {
    /// Moves waiting frames into the bridge (at most [`BURST`]); answers how many.
    pub fn receive<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) -> usize {
        match self {
            Self::Udp(udp) => udp.receive(bridge),
            Self::Tap(tap) => tap.receive(bridge),
        }
    }

    /// Sends out the frames the bridge switched to the uplink (a send error drops the frame).
    pub fn transmit<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) {
        match self {
            Self::Udp(udp) => udp.transmit(bridge),
            Self::Tap(tap) => tap.transmit(bridge),
        }
    }
}

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

/// Longest TAP device name Linux takes (`IFNAMSIZ` less the terminating NUL).
pub const TAP_NAME_MAX: usize = 15;

/// Whether `name` can name a network interface: 1 to [`TAP_NAME_MAX`] bytes, none of them `/`, `:`, white space or
/// control characters, and not `.` or `..` (Linux's own rule, checked here so a bad name is refused by name before
/// anything is opened).
pub fn valid_tap_name(name: &str) -> bool {
    (1..=TAP_NAME_MAX).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// A bridge port whose other end is a Linux TAP device.
pub struct TapUplink {
    device: std::fs::File,
    port: PortId,
}

impl TapUplink {
    /// Attaches to the TAP device `name` (Linux creates it if it does not exist, and removes it again when this
    /// process closes it, unless it was made persistent with `ip tuntap add`), on port `port` of its bridge.
    #[cfg(target_os = "linux")]
    pub fn open(name: &str, port: PortId) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;

        if !valid_tap_name(name) {
            return Err(format!(
                "tap: {name:?} is not an interface name (1 to {TAP_NAME_MAX} printable characters, no '/' or ':')"
            ));
        }
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| format!("tap {name:?}: cannot open /dev/net/tun: {e}"))?;
        // SAFETY: `ifreq` is plain data (a name and a union of integers and addresses); all zeroes is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // A TAP (Ethernet frames, not IP packets), without the 4-byte packet information header: a read or write
        // is exactly one frame.
        request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `request` is, alive for the call; the descriptor
        // is ours and open.
        let status = unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETIFF, &mut request) };
        if status < 0 {
            let error = std::io::Error::last_os_error();
            let why = match error.raw_os_error() {
                Some(libc::EPERM) => {
                    " (attaching to a TAP device needs CAP_NET_ADMIN, or a device made for this user with \
                     `ip tuntap add dev NAME mode tap user USER`)"
                }
                Some(libc::EBUSY) => " (another process has it open)",
                Some(libc::EINVAL) => " (an interface of that name exists and is not a TAP device)",
                _ => "",
            };
            return Err(format!("tap {name:?}: the kernel refused it: {error}{why}"));
        }
        Ok(Self { device, port })
    }

    /// TAP devices are Linux's: elsewhere, a clear error.
    #[cfg(not(target_os = "linux"))]
    pub fn open(name: &str, _port: PortId) -> Result<Self, String> {
        Err(format!("tap {name:?}: TAP uplinks need Linux's /dev/net/tun"))
    }

    /// Moves frames the host sent into the bridge (at most [`BURST`]); answers how many.
    pub fn receive<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) -> usize {
        use std::io::Read;
        // One byte more than a frame: a longer read (a host MTU above 1500) is seen as too long and dropped.
        let mut buf = [0u8; FRAME_MAX + 1];
        let mut taken = 0;
        while taken < BURST {
            match (&self.device).read(&mut buf) {
                Ok(len) => {
                    bridge.send(self.port, &buf[..len.min(buf.len())]);
                    taken += 1;
                }
                // Nothing waiting (WouldBlock), or the device went away: either way nothing more this time.
                Err(_) => break,
            }
        }
        taken
    }

    /// Writes the frames the bridge switched to the uplink, one write each (an error, such as a full queue
    /// while the interface is down, drops the frame).
    pub fn transmit<const P: usize, const D: usize, const T: usize>(&self, bridge: &mut Bridge<P, D, T>) {
        use std::io::Write;
        let mut buf = [0u8; FRAME_MAX];
        while let Some(len) = bridge.receive(self.port, &mut buf) {
            let _ = (&self.device).write(&buf[..len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_follow_linux_rules() {
        for good in ["tap0", "trapeze-lan0", "a", "x23456789012345"] {
            assert!(valid_tap_name(good), "{good:?}");
        }
        for bad in ["", ".", "..", "x234567890123456", "tap/0", "tap:0", "tap 0", "tap\n", "tä"] {
            assert!(!valid_tap_name(bad), "{bad:?}");
        }
    }
}
