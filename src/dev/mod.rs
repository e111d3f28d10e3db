//! Device models the guest reaches through memory-mapped I/O, and the trait they share.
//!
//! A device model never trusts a guest-supplied offset, width, length, index or address: a register access it
//! does not decode is an [`MmioError`] (the dispatcher injects an access fault), never a panic.

/// A memory-mapped device: registers read and written by offset within the device's window.
///
/// Call order: the bus calls [`read`](MmioDevice::read) or [`write`](MmioDevice::write) for each guest access
/// that falls in the device's window, with `offset` relative to the window's base and `size` in {1, 2, 4, 8};
/// after each access it calls [`take_request`](MmioDevice::take_request) once.
pub trait MmioDevice {
    /// Reads `size` bytes at `offset`; the value is zero-extended.
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError>;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError>;
    /// A machine-level request (power off, reset) raised by the last access, if any.
    fn take_request(&mut self) -> Option<MachineRequest> {
        None
    }
}

/// Why a device refused an access. The guest sees a load or store access fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The device does not decode this offset/width combination.
    Unsupported,
}

/// A request from the guest to the machine as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineRequest {
    /// Power off. `code` 0 means success (a passing test), anything else failure.
    PowerOff { code: u32 },
    /// Reset the machine.
    Reset,
}

mod map;
pub use map::{DeviceMap, MapError};
