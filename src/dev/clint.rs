//! The SiFive CLINT (core-local interruptor) QEMU's `virt` machine has at 0x200_0000: per-hart software
//! interrupt bits (`msip`), per-hart timer compare registers (`mtimecmp`) and the machine timer (`mtime`).
//!
//! The guest controls every offset, width and value; the model never trusts one to index its arrays and never
//! panics on one. A hart index from the guest or from the VMM that names no hart is refused (MMIO) or answers
//! "not pending" (queries).
//!
//! # Time
//!
//! The device owns no host clock and has no interior mutability. The VMM tells it the time:
//! [`Clint::set_now`] takes ticks of the 10 MHz timebase ([`TIMEBASE_HZ`](crate::vm::TIMEBASE_HZ),
//! the VMM's [`Clock`](crate::vm::Clock)). **Contract:** call `set_now(clock.now())` before handing
//! the device a guest access and before asking it [`timer_pending`](Clint::timer_pending),
//! [`mtime`](Clint::mtime) or [`next_deadline`](Clint::next_deadline); the answers are as of the last
//! `set_now`. Time never runs backwards: a `set_now` older than the last one is ignored.
//!
//! `mtime` is the clock plus an offset (wrapping). A guest write to `mtime` (or one of its halves) changes the
//! offset so that `mtime` reads the written value at that instant and counts on from there; the VMM should
//! therefore serve the `time` CSR from [`Clint::mtime`] rather than from its clock directly.
//!
//! # Registers
//!
//! As QEMU's `riscv_aclint` models them on `virt` (differences are noted):
//! - `msip[h]` at `0x0 + 4*h`: 32-bit accesses only; bit 0 is the hart's MSIP, other bits read 0 and ignore
//!   writes.
//! - `mtimecmp[h]` at `0x4000 + 8*h`: a 64-bit access at `+0`, or a 32-bit access to either half at `+0`/`+4`.
//!   Resets to `u64::MAX` (QEMU resets it to 0, which makes the timer pending at power-on).
//! - `mtime` at `0xbff8`: same widths as `mtimecmp`; writable.
//!
//! Everything else — other widths, misaligned accesses, registers of harts past `HARTS`, reserved offsets,
//! offsets past [`SIZE`] — is refused with [`MmioError::Unsupported`] (QEMU reads 0 and ignores writes there).

use super::{MmioDevice, MmioError};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Guest real address of the CLINT on the QEMU `virt` machine.
pub const BASE: u64 = super::slots::CLINT.base;
/// Size of the CLINT's MMIO window on the QEMU `virt` machine.
pub const SIZE: u64 = super::slots::CLINT.size;

/// Offset of `msip[0]`; hart `h`'s register is at `MSIP + 4*h`.
pub const MSIP: u64 = 0x0;
/// Offset of `mtimecmp[0]`; hart `h`'s register is at `MTIMECMP + 8*h`.
pub const MTIMECMP: u64 = 0x4000;
/// Offset of `mtime`.
pub const MTIME: u64 = 0xbff8;

/// The most harts the register layout has room for (`mtimecmp` runs from 0x4000 up to `mtime`).
pub const MAX_HARTS: usize = ((MTIME - MTIMECMP) / 8) as usize;

/// The CLINT of a machine with `HARTS` harts (at most [`MAX_HARTS`]).
#[derive(Debug, Clone)]
pub struct Clint<const HARTS: usize> {
    /// The VMM's clock as of the last [`Clint::set_now`], in timebase ticks.
    now: u64,
    /// `mtime - now` (wrapping): what guest writes to `mtime` have moved it by.
    offset: u64,
    mtimecmp: [u64; HARTS],
    msip: [bool; HARTS],
}

impl<const HARTS: usize> Default for Clint<HARTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Which 32-bit half of a 64-bit register an access names, or the whole register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Low,
    High,
}

impl Part {
    /// The part an access of `size` bytes at `within` (the offset inside an 8-byte register) names.
    fn of(within: u64, size: u8) -> Option<Self> {
        match (within, size) {
            (0, 8) => Some(Part::Whole),
            (0, 4) => Some(Part::Low),
            (4, 4) => Some(Part::High),
            _ => None,
        }
    }

    fn read(self, register: u64) -> u64 {
        match self {
            Part::Whole => register,
            Part::Low => register & 0xffff_ffff,
            Part::High => register >> 32,
        }
    }

    /// `register` with this part replaced by the low bits of `value`.
    fn merge(self, register: u64, value: u64) -> u64 {
        match self {
            Part::Whole => value,
            Part::Low => (register & !0xffff_ffff) | (value & 0xffff_ffff),
            Part::High => (register & 0xffff_ffff) | (value << 32),
        }
    }
}

/// A decoded register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Msip(usize),
    Mtimecmp(usize, Part),
    Mtime(Part),
}

impl<const HARTS: usize> Clint<HARTS> {
    /// A CLINT after reset: `mtime` 0 at clock tick 0, every `mtimecmp` `u64::MAX`, every `msip` clear.
    pub fn new() -> Self {
        const { assert!(HARTS <= MAX_HARTS, "the CLINT layout has room for at most 4095 harts") };
        Self { now: 0, offset: 0, mtimecmp: [u64::MAX; HARTS], msip: [false; HARTS] }
    }

    /// Tells the device the VMM's clock, in ticks of the 10 MHz timebase. A value older than the last one is
    /// ignored, so `mtime` never runs backwards.
    pub fn set_now(&mut self, ticks: u64) {
        self.now = self.now.max(ticks);
    }

    /// The value of `mtime` as of the last [`set_now`](Self::set_now).
    pub fn mtime(&self) -> u64 {
        self.now.wrapping_add(self.offset)
    }

    /// Sets `mtime` as a guest write does: from now on it counts on from `value`.
    pub fn set_mtime(&mut self, value: u64) {
        self.offset = value.wrapping_sub(self.now);
    }

    /// Hart `hart`'s `mtimecmp`, or `None` for a hart the machine does not have.
    pub fn mtimecmp(&self, hart: usize) -> Option<u64> {
        self.mtimecmp.get(hart).copied()
    }

    /// Whether hart `hart`'s machine timer interrupt (MTIP) is pending: `mtime >= mtimecmp`. False for a hart
    /// the machine does not have.
    pub fn timer_pending(&self, hart: usize) -> bool {
        let mtime = self.mtime();
        self.mtimecmp.get(hart).is_some_and(|&cmp| mtime >= cmp)
    }

    /// Whether hart `hart`'s machine software interrupt (MSIP) is pending. False for a hart the machine does
    /// not have.
    pub fn software_pending(&self, hart: usize) -> bool {
        self.msip.get(hart).copied().unwrap_or(false)
    }

    /// The earliest `mtimecmp` still in the future (greater than [`mtime`](Self::mtime)) among all harts, in
    /// `mtime` units; `None` when every hart's timer is already pending (or there are no harts). A hart whose
    /// `mtimecmp` is `u64::MAX` (never armed) counts as a deadline at `u64::MAX`.
    pub fn next_deadline(&self) -> Option<u64> {
        let mtime = self.mtime();
        self.mtimecmp.iter().copied().filter(|&cmp| cmp > mtime).min()
    }

    /// How many timebase ticks after the last [`set_now`](Self::set_now) the [`next_deadline`](Self::next_deadline)
    /// falls: how long an idle VMM may sleep before a timer interrupt becomes pending.
    pub fn ticks_until_deadline(&self) -> Option<u64> {
        self.next_deadline().map(|deadline| deadline - self.mtime())
    }

    /// Decodes an access of `size` bytes at `offset`.
    fn decode(offset: u64, size: u8) -> Option<Reg> {
        if offset >= SIZE {
            return None;
        }
        if offset < MTIMECMP {
            let hart = usize::try_from(offset / 4).ok()?;
            return (size == 4 && offset.is_multiple_of(4) && hart < HARTS).then_some(Reg::Msip(hart));
        }
        if (MTIME..MTIME + 8).contains(&offset) {
            return Part::of(offset - MTIME, size).map(Reg::Mtime);
        }
        let hart = usize::try_from((offset - MTIMECMP) / 8).ok()?;
        if hart >= HARTS {
            return None;
        }
        Part::of((offset - MTIMECMP) % 8, size).map(|part| Reg::Mtimecmp(hart, part))
    }
}

impl<const HARTS: usize> MmioDevice for Clint<HARTS> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        match Self::decode(offset, size).ok_or(MmioError::Unsupported)? {
            Reg::Msip(hart) => Ok(self.msip.get(hart).map_or(0, |&bit| bit as u64)),
            Reg::Mtimecmp(hart, part) => {
                self.mtimecmp.get(hart).map(|&cmp| part.read(cmp)).ok_or(MmioError::Unsupported)
            }
            Reg::Mtime(part) => Ok(part.read(self.mtime())),
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        match Self::decode(offset, size).ok_or(MmioError::Unsupported)? {
            Reg::Msip(hart) => {
                let bit = self.msip.get_mut(hart).ok_or(MmioError::Unsupported)?;
                *bit = value & 1 != 0;
            }
            Reg::Mtimecmp(hart, part) => {
                let cmp = self.mtimecmp.get_mut(hart).ok_or(MmioError::Unsupported)?;
                *cmp = part.merge(*cmp, value);
            }
            Reg::Mtime(part) => {
                let mtime = part.merge(self.mtime(), value);
                self.set_mtime(mtime);
            }
        }
        Ok(())
    }

    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        self.save(out);
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        self.load(input, mode)
    }
}

impl<const HARTS: usize> Clint<HARTS> {
    fn save(&self, out: &mut Writer) {
        out.u32(HARTS as u32);
        out.u64(self.now);
        out.u64(self.offset);
        out.u64s(&self.mtimecmp);
        for &bit in &self.msip {
            out.bool(bit);
        }
    }

    fn load(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u32()? != HARTS as u32 {
            return Err(input.mismatch("the CLINT's hart count"));
        }
        let (now, offset) = (input.u64()?, input.u64()?);
        let mut mtimecmp = [0u64; HARTS];
        for cmp in &mut mtimecmp {
            *cmp = input.u64()?;
        }
        let mut msip = [false; HARTS];
        for bit in &mut msip {
            *bit = input.bool()?;
        }
        if mode.apply() {
            *self = Self { now, offset, mtimecmp, msip };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Clint2 = Clint<2>;

    fn mtimecmp_offset(hart: u64) -> u64 {
        MTIMECMP + 8 * hart
    }

    #[test]
    fn reset_state() {
        let clint = Clint2::new();
        assert_eq!(clint.mtime(), 0);
        assert_eq!(clint.mtimecmp(0), Some(u64::MAX));
        assert_eq!(clint.mtimecmp(1), Some(u64::MAX));
        assert_eq!(clint.mtimecmp(2), None);
        assert!(!clint.timer_pending(0));
        assert!(!clint.software_pending(0));
        assert_eq!(clint.next_deadline(), Some(u64::MAX));
    }

    #[test]
    fn msip_keeps_only_bit_zero() {
        let mut clint = Clint2::new();
        clint.write(MSIP + 4, 4, 0xffff_ffff).unwrap();
        assert_eq!(clint.read(MSIP + 4, 4), Ok(1));
        assert!(clint.software_pending(1));
        assert!(!clint.software_pending(0));
        clint.write(MSIP + 4, 4, 0xffff_fffe).unwrap();
        assert_eq!(clint.read(MSIP + 4, 4), Ok(0));
        assert!(!clint.software_pending(1));
    }

    #[test]
    fn msip_refuses_other_widths_and_missing_harts() {
        let mut clint = Clint2::new();
        for (offset, size) in [(0, 1), (0, 2), (0, 8), (1, 4), (2, 4), (8, 4), (0x3ffc, 4)] {
            assert_eq!(clint.read(offset, size), Err(MmioError::Unsupported), "read {offset:#x}/{size}");
            assert_eq!(clint.write(offset, size, 1), Err(MmioError::Unsupported), "write {offset:#x}/{size}");
        }
        assert!(!clint.software_pending(0) && !clint.software_pending(1));
        assert!(!clint.software_pending(2) && !clint.software_pending(usize::MAX));
    }

    #[test]
    fn mtimecmp_whole_and_halves() {
        let mut clint = Clint2::new();
        let at = mtimecmp_offset(1);
        clint.write(at, 8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(clint.read(at, 8), Ok(0x1122_3344_5566_7788));
        assert_eq!(clint.read(at, 4), Ok(0x5566_7788));
        assert_eq!(clint.read(at + 4, 4), Ok(0x1122_3344));
        clint.write(at, 4, 0xdead_beef_0000_00aa).unwrap(); // upper bits of a 32-bit write are not used
        assert_eq!(clint.mtimecmp(1), Some(0x1122_3344_0000_00aa));
        clint.write(at + 4, 4, 0x99).unwrap();
        assert_eq!(clint.mtimecmp(1), Some(0x0000_0099_0000_00aa));
        assert_eq!(clint.mtimecmp(0), Some(u64::MAX), "hart 0 untouched");
        // An 8-byte access must be aligned to the register.
        assert_eq!(clint.read(at + 4, 8), Err(MmioError::Unsupported));
        assert_eq!(clint.write(at + 4, 8, 0), Err(MmioError::Unsupported));
        assert_eq!(clint.read(at + 2, 4), Err(MmioError::Unsupported));
        assert_eq!(clint.read(at, 2), Err(MmioError::Unsupported));
        // Hart 2 does not exist.
        assert_eq!(clint.read(mtimecmp_offset(2), 8), Err(MmioError::Unsupported));
        assert_eq!(clint.write(mtimecmp_offset(2), 8, 0), Err(MmioError::Unsupported));
    }

    #[test]
    fn timer_pending_follows_mtime_and_mtimecmp() {
        let mut clint = Clint2::new();
        clint.write(mtimecmp_offset(0), 8, 100).unwrap();
        clint.set_now(99);
        assert!(!clint.timer_pending(0));
        clint.set_now(100);
        assert!(clint.timer_pending(0), "mtime >= mtimecmp");
        assert!(!clint.timer_pending(1));
        assert!(!clint.timer_pending(2), "missing hart");
        assert!(!clint.timer_pending(usize::MAX));
        clint.write(mtimecmp_offset(0), 4, 200).unwrap();
        assert!(!clint.timer_pending(0), "a new mtimecmp clears it");
    }

    #[test]
    fn mtime_reads_the_clock_and_halves() {
        let mut clint = Clint2::new();
        clint.set_now(0x0000_0001_8000_0000);
        assert_eq!(clint.read(MTIME, 8), Ok(0x0000_0001_8000_0000));
        assert_eq!(clint.read(MTIME, 4), Ok(0x8000_0000));
        assert_eq!(clint.read(MTIME + 4, 4), Ok(1));
        assert_eq!(clint.read(MTIME + 4, 8), Err(MmioError::Unsupported));
        assert_eq!(clint.read(MTIME + 1, 4), Err(MmioError::Unsupported));
        assert_eq!(clint.read(MTIME, 1), Err(MmioError::Unsupported));
    }

    #[test]
    fn clock_never_runs_backwards() {
        let mut clint = Clint2::new();
        clint.set_now(50);
        clint.set_now(10);
        assert_eq!(clint.mtime(), 50);
    }

    #[test]
    fn mtime_write_sets_an_offset_against_the_clock() {
        let mut clint = Clint2::new();
        clint.set_now(1000);
        clint.write(MTIME, 8, 5).unwrap();
        assert_eq!(clint.mtime(), 5);
        clint.set_now(1010);
        assert_eq!(clint.read(MTIME, 8), Ok(15), "counts on from the written value");

        // Halves: the other half keeps its value at the instant of the write.
        clint.write(MTIME + 4, 4, 7).unwrap();
        assert_eq!(clint.mtime(), (7 << 32) | 15);
        clint.write(MTIME, 4, 0xffff_fff0).unwrap();
        assert_eq!(clint.mtime(), (7 << 32) | 0xffff_fff0);
        clint.set_now(1030);
        assert_eq!(clint.mtime(), (8 << 32) | 0x4, "the low half carries into the high half");

        // Setting mtime backwards is allowed (the offset wraps).
        clint.write(MTIME, 8, 0).unwrap();
        assert_eq!(clint.mtime(), 0);
        clint.set_now(1031);
        assert_eq!(clint.mtime(), 1);
    }

    #[test]
    fn mtime_write_can_make_a_timer_pending() {
        let mut clint = Clint2::new();
        clint.write(mtimecmp_offset(1), 8, 1_000_000).unwrap();
        clint.set_now(10);
        assert!(!clint.timer_pending(1));
        clint.write(MTIME, 8, 1_000_000).unwrap();
        assert!(clint.timer_pending(1));
    }

    #[test]
    fn next_deadline_is_the_earliest_future_mtimecmp() {
        let mut clint = Clint2::new();
        clint.set_now(100);
        clint.write(mtimecmp_offset(0), 8, 500).unwrap();
        clint.write(mtimecmp_offset(1), 8, 300).unwrap();
        assert_eq!(clint.next_deadline(), Some(300));
        assert_eq!(clint.ticks_until_deadline(), Some(200));
        clint.set_now(300);
        assert!(clint.timer_pending(1));
        assert_eq!(clint.next_deadline(), Some(500), "a pending timer is not a future deadline");
        assert_eq!(clint.ticks_until_deadline(), Some(200));
        clint.set_now(600);
        assert_eq!(clint.next_deadline(), None);
        assert_eq!(clint.ticks_until_deadline(), None);

        // In mtime units, after a guest moved mtime.
        clint.write(MTIME, 8, 10).unwrap();
        assert_eq!(clint.next_deadline(), Some(300));
        assert_eq!(clint.ticks_until_deadline(), Some(290));
        assert_eq!(Clint::<0>::new().next_deadline(), None);
    }

    #[test]
    fn reserved_and_outside_offsets_are_refused() {
        let mut clint = Clint2::new();
        for offset in [0x4010, 0x8000, MTIME - 8, MTIME - 4, SIZE - 4, SIZE, SIZE + MTIME, u64::MAX - 3, u64::MAX] {
            for size in [1, 2, 4, 8] {
                assert_eq!(clint.read(offset, size), Err(MmioError::Unsupported), "read {offset:#x}/{size}");
                assert_eq!(clint.write(offset, size, 1), Err(MmioError::Unsupported), "write {offset:#x}/{size}");
            }
        }
        assert_eq!(clint.take_request(), None);
    }

    #[test]
    fn max_harts_layout() {
        let mut clint = Clint::<MAX_HARTS>::new();
        let last = (MAX_HARTS - 1) as u64;
        clint.write(MSIP + 4 * last, 4, 1).unwrap();
        assert!(clint.software_pending(MAX_HARTS - 1));
        clint.write(mtimecmp_offset(last), 8, 7).unwrap();
        assert_eq!(clint.mtimecmp(MAX_HARTS - 1), Some(7));
        assert_eq!(mtimecmp_offset(last) + 8, MTIME);
        assert_eq!(clint.read(MSIP + 4 * MAX_HARTS as u64, 4), Err(MmioError::Unsupported));
    }

    proptest! {
        #[test]
        fn random_accesses_never_panic(
            ops in proptest::collection::vec((any::<bool>(), 0u64..0x1_0010, 0u8..10, any::<u64>(), any::<u64>()), 1..64)
        ) {
            let mut clint = Clint::<3>::new();
            for (is_write, offset, size, value, now) in ops {
                clint.set_now(now);
                if is_write {
                    let _ = clint.write(offset, size, value);
                } else if let Ok(read) = clint.read(offset, size) {
                    prop_assert!(size == 8 || read <= u64::from(u32::MAX));
                }
                for hart in 0..5 {
                    let _ = (clint.timer_pending(hart), clint.software_pending(hart));
                }
                if let Some(deadline) = clint.next_deadline() {
                    prop_assert!(deadline > clint.mtime());
                }
                let _ = clint.ticks_until_deadline();
            }
        }

        #[test]
        fn random_wide_offsets_never_panic(offset in any::<u64>(), size in any::<u8>(), value in any::<u64>()) {
            let mut clint = Clint::<1>::new();
            let _ = clint.read(offset, size);
            let _ = clint.write(offset, size, value);
        }
    }
}
