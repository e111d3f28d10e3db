//! The SiFive test finisher (`sifive,test0`) QEMU's `virt` machine has at 0x10_0000: a guest write powers the
//! machine off with an exit code, or resets it.
//!
//! Semantics follow QEMU's `hw/misc/sifive_test.c`: only 32-bit, 4-byte-aligned accesses are valid (QEMU's
//! `min_access_size = max_access_size = 4`; anything else is refused with [`MmioError::Unsupported`]); a write
//! to offset 0 is decoded as `status = value & 0xffff`, `code = (value >> 16) & 0xffff`:
//! - status 0x5555 (PASS): power off with code 0;
//! - status 0x3333 (FAIL): power off with `code`;
//! - status 0x7777 (RESET): reset.
//!
//! Any other value, or a write to another offset of the window, is ignored; reads return 0.
//!
//! One deliberate difference: FAIL with code 0 powers off with code **1**. QEMU reports it as a shutdown with
//! exit code 0 (before QEMU 8.1 it called `exit(0)`; since then `qemu_system_shutdown_request_with_code`
//! makes the process exit 0 unless `-action panic=exit-failure` is given), so a guest that says "fail" would
//! look like a pass. Here a FAIL is never reported as success.
//!
//! The guest controls every value written; the model never panics on one.

use super::{MachineRequest, MmioDevice, MmioError};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Guest real address of the test finisher on the QEMU `virt` machine.
pub const BASE: u64 = super::slots::TEST.base;
/// Size of the test finisher's MMIO window on the QEMU `virt` machine.
pub const SIZE: u64 = super::slots::TEST.size;

/// Low half of a finisher write: the test failed, the high half is the exit code.
pub const FINISHER_FAIL: u32 = 0x3333;
/// Low half of a finisher write: the test passed.
pub const FINISHER_PASS: u32 = 0x5555;
/// Low half of a finisher write: reset the machine.
pub const FINISHER_RESET: u32 = 0x7777;

/// The `sifive,test0` device.
#[derive(Debug, Default)]
pub struct TestFinisher {
    pending: Option<MachineRequest>,
}

impl TestFinisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The request a 32-bit `value` written to offset 0 makes, if any.
    pub fn decode(value: u32) -> Option<MachineRequest> {
        let status = value & 0xffff;
        let code = value >> 16;
        match status {
            FINISHER_PASS => Some(MachineRequest::PowerOff { code: 0 }),
            // A failure is never reported as success (see the module documentation).
            FINISHER_FAIL => Some(MachineRequest::PowerOff { code: code.max(1) }),
            FINISHER_RESET => Some(MachineRequest::Reset),
            _ => None,
        }
    }
}

fn decodes(offset: u64, size: u8) -> bool {
    size == 4 && offset < SIZE && offset.is_multiple_of(4)
}

impl MmioDevice for TestFinisher {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        if decodes(offset, size) {
            Ok(0)
        } else {
            Err(MmioError::Unsupported)
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        if !decodes(offset, size) {
            return Err(MmioError::Unsupported);
        }
        if offset == 0 {
            if let Some(request) = Self::decode(value as u32) {
                self.pending = Some(request);
            }
        }
        Ok(())
    }

    fn take_request(&mut self) -> Option<MachineRequest> {
        self.pending.take()
    }

    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        self.save(out);
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        self.load(input, mode)
    }
}

impl TestFinisher {
    /// Writes the request not yet taken, if any.
    fn save(&self, out: &mut Writer) {
        match self.pending {
            None => out.u8(0),
            Some(MachineRequest::PowerOff { code }) => {
                out.u8(1);
                out.u32(code);
            }
            Some(MachineRequest::Reset) => out.u8(2),
        }
    }
}

impl TestFinisher {
    fn load(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let pending = match input.u8()? {
            0 => None,
            1 => Some(MachineRequest::PowerOff { code: input.u32()? }),
            2 => Some(MachineRequest::Reset),
            _ => return Err(input.invalid("a finisher request that does not exist")),
        };
        if mode.apply() {
            self.pending = pending;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_and_take(value: u64) -> Option<MachineRequest> {
        let mut f = TestFinisher::new();
        f.write(0, 4, value).expect("32-bit write at 0 decodes");
        f.take_request()
    }

    #[test]
    fn pass_fail_and_reset_codes() {
        assert_eq!(write_and_take(0x5555), Some(MachineRequest::PowerOff { code: 0 }));
        assert_eq!(write_and_take((3 << 16) | 0x3333), Some(MachineRequest::PowerOff { code: 3 }));
        assert_eq!(write_and_take(0xffff_3333), Some(MachineRequest::PowerOff { code: 0xffff }));
        assert_eq!(write_and_take(0x7777), Some(MachineRequest::Reset));
        // Like QEMU, only the low half selects the action: PASS ignores the high half.
        assert_eq!(write_and_take(0x0001_5555), Some(MachineRequest::PowerOff { code: 0 }));
    }

    #[test]
    fn fail_with_code_zero_is_still_a_failure() {
        assert_eq!(write_and_take(0x3333), Some(MachineRequest::PowerOff { code: 1 }));
    }

    #[test]
    fn other_values_and_offsets_are_ignored() {
        assert_eq!(write_and_take(0), None);
        assert_eq!(write_and_take(0x1234), None);
        assert_eq!(write_and_take(0x5556), None);
        let mut f = TestFinisher::new();
        f.write(4, 4, 0x5555).expect("inside the window");
        f.write(SIZE - 4, 4, 0x5555).expect("inside the window");
        assert_eq!(f.take_request(), None);
    }

    #[test]
    fn request_is_taken_once() {
        let mut f = TestFinisher::new();
        f.write(0, 4, 0x5555).expect("decodes");
        assert_eq!(f.take_request(), Some(MachineRequest::PowerOff { code: 0 }));
        assert_eq!(f.take_request(), None);
    }

    #[test]
    fn reads_return_zero_and_bad_accesses_are_refused() {
        let mut f = TestFinisher::new();
        assert_eq!(f.read(0, 4), Ok(0));
        assert_eq!(f.read(0x10, 4), Ok(0));
        for (offset, size) in [(0, 1), (0, 2), (0, 8), (2, 4), (SIZE, 4), (u64::MAX, 4), (0, 0)] {
            assert_eq!(f.read(offset, size), Err(MmioError::Unsupported), "read {offset:#x}/{size}");
            assert_eq!(f.write(offset, size, 0x5555), Err(MmioError::Unsupported), "write {offset:#x}/{size}");
        }
        assert_eq!(f.take_request(), None, "a refused write makes no request");
    }
}
