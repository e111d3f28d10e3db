//! Device models the guest reaches through memory-mapped I/O, and what they share: the register trait
//! ([`MmioDevice`], with a [`poll`](MmioDevice::poll) hook for work that arrives from outside the guest), the
//! interrupt output every device raises through ([`IrqTrigger`], the bus's being [`IrqLine`]), and the slot
//! table of QEMU's `virt` machine ([`slots`]).
//!
//! A device model never trusts a guest-supplied offset, width, length, index or address: a register access it
//! does not decode is an [`MmioError`] (the dispatcher injects an access fault), never a panic. Each device's
//! state (not its host backend) can be saved and restored for snapshots
//! ([`MmioDevice::save_state`], [`MmioDevice::load_state`]).

use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};

/// A memory-mapped device: registers read and written by offset within the device's window.
///
/// Call order: the bus calls [`read`](MmioDevice::read) or [`write`](MmioDevice::write) for each guest access
/// that falls in the device's window, with `offset` relative to the window's base and `size` in {1, 2, 4, 8};
/// after each access it calls [`take_request`](MmioDevice::take_request) once. Between guest accesses, at every
/// full update of the machine (never on the time-only path), it calls [`poll`](MmioDevice::poll).
pub trait MmioDevice {
    /// Reads `size` bytes at `offset`; the value is zero-extended.
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError>;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError>;
    /// Completes work that arrived from outside the guest since the last call (host input, a frame from a
    /// bridge, a finished print job): the device may read and write guest memory `ram` (bounds-checked, as for
    /// any guest-supplied address) and raise its interrupt. `now` is the machine time in timebase ticks.
    ///
    /// Called often (at every device access and turn), so it must cost a branch when there is nothing to do,
    /// must not block and must not allocate. The default does nothing: a device that only acts inside guest
    /// accesses needs no poll.
    fn poll(&mut self, now: u64, ram: &mut Ram) {
        let _ = (now, ram);
    }
    /// A machine-level request (power off, reset) raised by the last access, if any.
    fn take_request(&mut self) -> Option<MachineRequest> {
        None
    }
    /// Writes the device's state for a snapshot (its registers and queues, never its host backend). A device
    /// that does not implement snapshots answers [`SnapshotError::Unsupported`].
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        let _ = out;
        Err(SnapshotError::Unsupported { section: SectionId::TOP })
    }
    /// Reads what [`save_state`](MmioDevice::save_state) wrote, validating every value; under
    /// [`LoadMode::Apply`] replaces the device's state with it, all of it or (on any error) nothing. The backend
    /// stays the device's own.
    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let _ = mode;
        Err(SnapshotError::Unsupported { section: input.section_id() })
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

/// A device's interrupt output: the one way every device model raises its interrupt, in the shape of rust-vmm's
/// `Trigger` (`vm-superio`): the device is generic over it and gets it at construction, so the host decides
/// where an interrupt goes (the bus's [`IrqLine`] latch for the PLIC, a counter in a test, a doorbell to another
/// thread) without the device knowing.
///
/// Level-based rather than rust-vmm's edge `trigger()`, because the PLIC gateway QEMU's `virt` guests expect
/// takes each raise as a new request and a lower as withdrawing it ([`IrqLine`] says when that matters). The
/// methods take `&mut self` since the device owns its output; a trigger shared with another owner keeps its
/// state behind a cell of its own.
///
/// An implementation never blocks and never fails: a device raises its interrupt from inside a guest access.
pub trait IrqTrigger {
    /// The device (re-)evaluated its interrupt condition and found it standing: a new request, even when the
    /// output is already high.
    fn raise(&mut self);
    /// The device's interrupt condition is gone.
    fn lower(&mut self);
    /// Raises the output when `level`, lowers it otherwise.
    fn set(&mut self, level: bool) {
        if level {
            self.raise()
        } else {
            self.lower()
        }
    }
    /// Writes the trigger's state for a snapshot (a stateless trigger writes nothing).
    fn save_state(&self, out: &mut Writer);
    /// Reads what [`save_state`](Self::save_state) wrote into a trigger like `self` (which may keep its host
    /// end), validating every value; the caller replaces its trigger with the result only once everything else
    /// it restores is valid too.
    fn read_state(&self, input: &mut Reader) -> Result<Self, SnapshotError>
    where
        Self: Sized;
}

impl IrqTrigger for IrqLine {
    fn raise(&mut self) {
        IrqLine::set(self, true)
    }
    fn lower(&mut self) {
        IrqLine::set(self, false)
    }
    fn set(&mut self, level: bool) {
        IrqLine::set(self, level)
    }
    fn save_state(&self, out: &mut Writer) {
        IrqLine::save_state(self, out)
    }
    fn read_state(&self, input: &mut Reader) -> Result<Self, SnapshotError> {
        IrqLine::read_state(input)
    }
}

/// The [`IrqTrigger`] the bus gives every device: a device's interrupt output, driven the way QEMU's device
/// models drive theirs: whenever the device
/// re-evaluates its interrupt condition (an event such as data arriving or the transmitter emptying, or a
/// register access that changes the condition) it raises or lowers the line, and the interrupt controller takes
/// every raise as a new request, even when the line was already high ([`Plic::signal`](plic::Plic::signal)).
///
/// The line keeps its level and the last raise or lower the VMM has not forwarded yet. Forwarding only the last
/// one loses nothing: each of them sets the controller's pending bit to its level, so the last one decides, as
/// long as the VMM forwards it before the guest next reaches the controller (after each access to the device).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IrqLine {
    level: bool,
    update: Option<bool>,
}

impl IrqLine {
    /// Writes the line's level and unforwarded update for a snapshot.
    pub fn save_state(&self, out: &mut Writer) {
        out.bool(self.level);
        out.u8(match self.update {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }

    /// Reads what [`save_state`](Self::save_state) wrote.
    pub fn read_state(input: &mut Reader) -> Result<Self, SnapshotError> {
        let level = input.bool()?;
        let update = match input.u8()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => return Err(input.invalid("an interrupt line update that is neither none, low nor high")),
        };
        Ok(Self { level, update })
    }

    /// The device re-evaluated its interrupt condition: raise the line (a request) or lower it.
    pub fn set(&mut self, level: bool) {
        self.level = level;
        self.update = Some(level);
    }

    /// Whether the line is high.
    pub fn level(&self) -> bool {
        self.level
    }

    /// The last raise (`Some(true)`) or lower (`Some(false)`) since the previous call, for the interrupt
    /// controller; `None` when the device has not touched the line since.
    pub fn take_update(&mut self) -> Option<bool> {
        self.update.take()
    }
}

mod map;
pub use map::{DeviceMap, MapError};
pub mod block;
pub mod clint;
pub mod console_mux;
pub mod htif;
pub mod plic;
pub mod printer;
pub mod slots;
pub mod spool;
pub mod test_finisher;
pub mod uart16550;
pub mod virtio;

/// The host end of a serial console: where a guest's output bytes go and its input bytes come from.
///
/// Both calls must return promptly: [`read_byte`](SerialBackend::read_byte) never blocks (it answers `None`
/// when no byte is ready), and a backend that cannot take output drops it. A console has nowhere to report
/// an I/O error to, so backends swallow them.
pub trait SerialBackend {
    /// Sends one byte to the host.
    fn write_byte(&mut self, byte: u8);

    /// The next byte from the host if one is ready now; never blocks.
    fn read_byte(&mut self) -> Option<u8>;

    /// Sends `bytes` to the host and returns how many were taken (all of them unless the backend failed).
    fn write_bytes(&mut self, bytes: &[u8]) -> usize {
        for &byte in bytes {
            self.write_byte(byte);
        }
        bytes.len()
    }
}

impl<T: SerialBackend + ?Sized> SerialBackend for &mut T {
    fn write_byte(&mut self, byte: u8) {
        (**self).write_byte(byte)
    }
    fn read_byte(&mut self) -> Option<u8> {
        (**self).read_byte()
    }
    fn write_bytes(&mut self, bytes: &[u8]) -> usize {
        (**self).write_bytes(bytes)
    }
}

/// A console that discards output and never has input.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSerial;

impl SerialBackend for NullSerial {
    fn write_byte(&mut self, _byte: u8) {}
    fn read_byte(&mut self) -> Option<u8> {
        None
    }
}

/// Adapts `embedded-io` streams to a [`SerialBackend`]: output to an [`embedded_io::Write`], input from an
/// [`embedded_io::Read`] + [`embedded_io::ReadReady`] that is read only when it says it is ready.
///
/// The adapter never flushes `output`; the host flushes it (through the public field) when it sees fit.
/// Use [`NoInput`] as `input` for an output-only console.
#[derive(Debug, Default, Clone)]
pub struct IoBackend<R, W> {
    pub input: R,
    pub output: W,
}

impl<R, W> IoBackend<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Self { input, output }
    }
}

impl<R, W> SerialBackend for IoBackend<R, W>
where
    R: embedded_io::Read + embedded_io::ReadReady,
    W: embedded_io::Write,
{
    fn write_byte(&mut self, byte: u8) {
        // `write_all` panics on a writer that answers Ok(0); one `write` call drops the byte instead.
        let _ = self.output.write(&[byte]);
    }

    fn read_byte(&mut self) -> Option<u8> {
        if !matches!(self.input.read_ready(), Ok(true)) {
            return None;
        }
        let mut buf = [0u8; 1];
        match self.input.read(&mut buf) {
            Ok(1) => Some(buf[0]),
            _ => None,
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> usize {
        let mut done = 0;
        while let Some(rest) = bytes.get(done..) {
            if rest.is_empty() {
                break;
            }
            match self.output.write(rest) {
                Ok(n) if n > 0 => done += n.min(rest.len()),
                _ => break,
            }
        }
        done
    }
}

/// An `embedded-io` input that is never ready: the input half of an output-only [`IoBackend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInput;

impl embedded_io::ErrorType for NoInput {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for NoInput {
    fn read(&mut self, _buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(0)
    }
}

impl embedded_io::ReadReady for NoInput {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_backend_reads_only_when_ready_and_writes_through() {
        let input: &[u8] = b"ok";
        let mut out = [0u8; 4];
        let mut backend = IoBackend::new(input, &mut out[..]);
        assert_eq!(backend.read_byte(), Some(b'o'));
        assert_eq!(backend.read_byte(), Some(b'k'));
        assert_eq!(backend.read_byte(), None, "an empty slice is not ready");
        backend.write_byte(b'a');
        assert_eq!(backend.write_bytes(b"bcdef"), 3, "a full writer takes what fits");
        backend.write_byte(b'z'); // dropped, no panic
        assert_eq!(out, *b"abcd");

        let mut sink = [0u8; 2];
        let mut quiet = IoBackend::new(NoInput, &mut sink[..]);
        assert_eq!(quiet.read_byte(), None);
        quiet.write_byte(1);
        assert_eq!(sink, [1, 0]);
    }
}
