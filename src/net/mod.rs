//! Networking between VMs: the [`bridge`] that switches Ethernet frames between the VMs' virtio-net NICs
//! ([`crate::dev::virtio::net`]) and the host's uplinks. Everything here is `no_std` and in fixed memory; the
//! uplinks themselves (sockets, TAP devices, a physical NIC) belong to the host and attach as bridge ports.

pub mod bridge;

pub use bridge::{Bridge, BridgePort, PortId, PortStats};
