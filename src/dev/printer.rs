//! The spooled printer as the guest sees it: a small memory-mapped device (`trapeze,spool-printer`, at
//! [`slots::PRINTER`](crate::dev::slots::PRINTER)) through which a guest hands a whole print job to the VMM in
//! one request. The VMM copies the job out of guest memory at submission, into the VM's level-2 spool
//! ([`crate::dev::spool`]), so the guest may reuse its buffer as soon as the submit write returns.
//!
//! Registers (little-endian, 32-bit accesses; `ADDR` also as one 64-bit access):
//!
//! | offset | name | access | meaning |
//! | --- | --- | --- | --- |
//! | 0x00 | `MAGIC` | RO | `0x6f6f_7073` (the bytes `"spoo"`) |
//! | 0x04 | `VERSION` | RO | 1 |
//! | 0x08 | `ADDR_LO` | RW | the job's guest real address, low half |
//! | 0x0c | `ADDR_HI` | RW | high half |
//! | 0x10 | `LEN` | RW | the job's length in bytes |
//! | 0x14 | `SUBMIT` | WO | write 1: submit the job at `ADDR`, `LEN` bytes; other values are ignored |
//! | 0x18 | `STATUS` | RO | the last submission's outcome: [`STATUS_NONE`] 0, [`STATUS_ACCEPTED`] 1, [`STATUS_FULL`] 2 (the spool has no room now: retry, an interrupt says when a job of this VM has printed), [`STATUS_BAD_ADDRESS`] 3 (the job is not wholly in guest RAM), [`STATUS_BAD_LENGTH`] 4 (empty, or larger than `MAX_JOB`), [`STATUS_UNAVAILABLE`] 5 (no spool behind the device), [`STATUS_PENDING`] 6 (submitted, not yet copied: only on a bus that defers the copy to its poll) |
//! | 0x1c | `JOB_ID` | RO | the id of the last accepted job (per VM, from 1) |
//! | 0x20 | `INT_STATUS` | R/W1C | bit 0 `SPACE`: a job of this VM has printed since a submission was refused as full |
//! | 0x24 | `INT_ENABLE` | RW | bit 0: interrupt on `SPACE` |
//! | 0x28 | `MAX_JOB` | RO | the largest job the spool takes, in bytes |
//! | 0x2c | `QUEUED` | RO | this VM's jobs waiting or printing |
//!
//! The device never trusts `ADDR` or `LEN`: a job that is not wholly inside guest RAM, or of a bad length, is
//! refused with an error status, never a panic and never a copy of anything outside the VM's RAM. It never
//! blocks: a full spool is answered at once ([`STATUS_FULL`]), and the guest decides when to retry.

use crate::dev::spool::{SpoolTable, SubmitError};
use crate::dev::{IrqLine, MmioDevice, MmioError};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

pub const MAGIC: u64 = 0x00;
pub const VERSION: u64 = 0x04;
pub const ADDR_LO: u64 = 0x08;
pub const ADDR_HI: u64 = 0x0c;
pub const LEN: u64 = 0x10;
pub const SUBMIT: u64 = 0x14;
pub const STATUS: u64 = 0x18;
pub const JOB_ID: u64 = 0x1c;
pub const INT_STATUS: u64 = 0x20;
pub const INT_ENABLE: u64 = 0x24;
pub const MAX_JOB: u64 = 0x28;
pub const QUEUED: u64 = 0x2c;

/// The `MAGIC` register's value.
pub const MAGIC_VALUE: u32 = 0x6f6f_7073;
/// The register layout's version.
pub const VERSION_VALUE: u32 = 1;

pub const STATUS_NONE: u32 = 0;
pub const STATUS_ACCEPTED: u32 = 1;
pub const STATUS_FULL: u32 = 2;
pub const STATUS_BAD_ADDRESS: u32 = 3;
pub const STATUS_BAD_LENGTH: u32 = 4;
pub const STATUS_UNAVAILABLE: u32 = 5;
pub const STATUS_PENDING: u32 = 6;
const STATUS_LAST: u32 = STATUS_PENDING;

/// `INT_STATUS`/`INT_ENABLE` bit: space freed after a refusal.
pub const INT_SPACE: u32 = 1;

/// One VM's printer: its registers and its handle on the shared spool set.
pub struct Printer<'a> {
    spools: &'a dyn SpoolTable,
    /// This VM's index in the spool set.
    vm: usize,
    addr: u64,
    len: u32,
    status: u32,
    job_id: u32,
    int_status: u32,
    int_enable: u32,
    /// After a refusal as full: this VM's completed-job count then; cleared when it changes.
    waiting_since: Option<u64>,
    irq: IrqLine,
}

impl<'a> Printer<'a> {
    /// VM `vm`'s printer over the shared `spools`.
    pub fn new(spools: &'a dyn SpoolTable, vm: usize) -> Self {
        Self {
            spools,
            vm,
            addr: 0,
            len: 0,
            status: STATUS_NONE,
            job_id: 0,
            int_status: 0,
            int_enable: 0,
            waiting_since: None,
            irq: IrqLine::default(),
        }
    }

    /// The VM's index in the spool set.
    pub fn vm(&self) -> usize {
        self.vm
    }

    /// The last raise or lower of the interrupt line not yet forwarded to the PLIC.
    pub fn take_irq_update(&mut self) -> Option<bool> {
        self.irq.take_update()
    }

    /// The interrupt line's level.
    pub fn irq_level(&self) -> bool {
        self.irq.level()
    }

    /// Completes a submission written to `SUBMIT`: copies the job from `ram` into the spool (or refuses it),
    /// and raises `SPACE` if a job of this VM has printed since a refusal. The bus calls it after every write
    /// to the device and at every poll.
    pub fn process(&mut self, ram: &Ram) {
        if self.status == STATUS_PENDING {
            let (addr, len) = (self.addr, u64::from(self.len));
            self.status = match ram.contains(addr, len) {
                false => STATUS_BAD_ADDRESS,
                true if len == 0 => STATUS_BAD_LENGTH,
                true => match self
                    .spools
                    .submit_from(self.vm, len as usize, &mut |at, piece| ram.read_bytes(addr + at as u64, piece))
                {
                    Ok(id) => {
                        self.job_id = id;
                        STATUS_ACCEPTED
                    }
                    Err(SubmitError::Full) => {
                        self.waiting_since = Some(self.spools.completed(self.vm));
                        STATUS_FULL
                    }
                    Err(SubmitError::BadLength) => STATUS_BAD_LENGTH,
                    Err(SubmitError::Unavailable) => STATUS_UNAVAILABLE,
                },
            };
        }
        if let Some(mark) = self.waiting_since {
            if self.spools.completed(self.vm) != mark {
                self.waiting_since = None;
                self.int_status |= INT_SPACE;
                self.update_irq();
            }
        }
    }

    fn update_irq(&mut self) {
        let level = self.int_status & self.int_enable != 0;
        if level != self.irq.level() || level {
            self.irq.set(level);
        }
    }
}

impl MmioDevice for Printer<'_> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        if size == 8 && offset == ADDR_LO {
            return Ok(self.addr);
        }
        if size != 4 {
            return Err(MmioError::Unsupported);
        }
        let value = match offset {
            MAGIC => MAGIC_VALUE,
            VERSION => VERSION_VALUE,
            ADDR_LO => self.addr as u32,
            ADDR_HI => (self.addr >> 32) as u32,
            LEN => self.len,
            SUBMIT => 0,
            STATUS => self.status,
            JOB_ID => self.job_id,
            INT_STATUS => self.int_status,
            INT_ENABLE => self.int_enable,
            MAX_JOB => u32::try_from(self.spools.max_job()).unwrap_or(u32::MAX),
            QUEUED => u32::try_from(self.spools.queued(self.vm)).unwrap_or(u32::MAX),
            _ => return Err(MmioError::Unsupported),
        };
        Ok(u64::from(value))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        if size == 8 && offset == ADDR_LO {
            self.addr = value;
            return Ok(());
        }
        if size != 4 {
            return Err(MmioError::Unsupported);
        }
        let value = value as u32;
        match offset {
            ADDR_LO => self.addr = (self.addr & !0xffff_ffff) | u64::from(value),
            ADDR_HI => self.addr = (self.addr & 0xffff_ffff) | (u64::from(value) << 32),
            LEN => self.len = value,
            SUBMIT => {
                if value == 1 {
                    self.status = STATUS_PENDING;
                }
            }
            INT_STATUS => {
                self.int_status &= !value;
                self.update_irq();
            }
            INT_ENABLE => {
                self.int_enable = value & INT_SPACE;
                self.update_irq();
            }
            MAGIC | VERSION | STATUS | JOB_ID | MAX_JOB | QUEUED => {}
            _ => return Err(MmioError::Unsupported),
        }
        Ok(())
    }

    fn poll(&mut self, _now: u64, ram: &mut Ram) {
        self.process(ram);
    }

    /// The registers and the interrupt line; the spool set is the host's, like a backend, and not saved.
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        out.u64(self.addr);
        out.u32(self.len);
        out.u32(self.status);
        out.u32(self.job_id);
        out.u32(self.int_status);
        out.u32(self.int_enable);
        out.option_u64(self.waiting_since);
        self.irq.save_state(out);
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let addr = input.u64()?;
        let len = input.u32()?;
        let status = input.u32()?;
        if status > STATUS_LAST {
            return Err(input.invalid("a printer status that does not exist"));
        }
        let job_id = input.u32()?;
        let int_status = input.u32()?;
        let int_enable = input.u32()?;
        if (int_status | int_enable) & !INT_SPACE != 0 {
            return Err(input.invalid("printer interrupt bits that do not exist"));
        }
        let waiting_since = input.option_u64()?;
        let irq = IrqLine::read_state(input)?;
        if mode.apply() {
            *self = Self {
                spools: self.spools,
                vm: self.vm,
                addr,
                len,
                status,
                job_id,
                int_status,
                int_enable,
                waiting_since,
                irq,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::spool::SpoolSet;
    use crate::mem::RAM_BASE;
    use core::cell::RefCell;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    type Set = RefCell<SpoolSet<2, 2, 64>>;

    fn submit(printer: &mut Printer<'_>, ram: &Ram, addr: u64, len: u32) -> u32 {
        printer.write(ADDR_LO, 8, addr).unwrap();
        printer.write(LEN, 4, u64::from(len)).unwrap();
        printer.write(SUBMIT, 4, 1).unwrap();
        printer.process(ram);
        printer.read(STATUS, 4).unwrap() as u32
    }

    struct Sink(Vec<u8>);
    impl embedded_io::ErrorType for Sink {
        type Error = core::convert::Infallible;
    }
    impl embedded_io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn a_job_is_copied_at_submission_and_space_interrupts_after_a_refusal() {
        let set: Set = RefCell::new(SpoolSet::new());
        let mut backing = vec![0u8; 4096];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.slice_mut(RAM_BASE, 6).unwrap().copy_from_slice(b"first\n");
        let mut printer = Printer::new(&set, 1);
        assert_eq!(printer.read(MAGIC, 4), Ok(u64::from(MAGIC_VALUE)));
        assert_eq!(printer.read(MAX_JOB, 4), Ok(64));
        printer.write(INT_ENABLE, 4, 1).unwrap();
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, 6), STATUS_ACCEPTED);
        assert_eq!(printer.read(JOB_ID, 4), Ok(1));
        // The guest reuses its buffer at once: the spool holds the copy.
        ram.slice_mut(RAM_BASE, 6).unwrap().copy_from_slice(b"again\n");
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, 6), STATUS_ACCEPTED);
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, 6), STATUS_FULL, "two jobs at most");
        assert_eq!(printer.read(QUEUED, 4), Ok(2));
        printer.process(&ram);
        assert_eq!(printer.take_irq_update(), None, "no space yet");
        let mut sink = Sink(Vec::new());
        set.borrow_mut().pump(&mut sink).unwrap();
        printer.process(&ram);
        assert_eq!(printer.read(INT_STATUS, 4), Ok(u64::from(INT_SPACE)));
        assert_eq!(printer.take_irq_update(), Some(true));
        printer.write(INT_STATUS, 4, u64::from(INT_SPACE)).unwrap();
        assert_eq!(printer.take_irq_update(), Some(false));
        let text = std::string::String::from_utf8(sink.0).unwrap();
        assert!(text.contains("\nfirst\n") && text.contains("\nagain\n"), "{text}");
    }

    #[test]
    fn hostile_addresses_and_lengths_are_refused() {
        let set: Set = RefCell::new(SpoolSet::new());
        let mut backing = vec![0u8; 4096];
        let ram = Ram::new(RAM_BASE, &mut backing);
        let mut printer = Printer::new(&set, 0);
        let end = RAM_BASE + 4096;
        assert_eq!(submit(&mut printer, &ram, end - 4, 8), STATUS_BAD_ADDRESS, "runs past RAM's end");
        assert_eq!(submit(&mut printer, &ram, u64::MAX - 2, 8), STATUS_BAD_ADDRESS, "wraps");
        assert_eq!(submit(&mut printer, &ram, 0x1000_0000, 8), STATUS_BAD_ADDRESS, "a device, not RAM");
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, 0), STATUS_BAD_LENGTH);
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, 65), STATUS_BAD_LENGTH, "larger than MAX_JOB");
        assert_eq!(submit(&mut printer, &ram, RAM_BASE, u32::MAX), STATUS_BAD_ADDRESS);
        assert_eq!(set.borrow().spool(0).unwrap().queued(), 0);
        assert_eq!(printer.read(0x30, 4), Err(MmioError::Unsupported));
        assert_eq!(printer.read(STATUS, 2), Err(MmioError::Unsupported));
        let printer_on_a_missing_vm = &mut Printer::new(&set, 7);
        assert_eq!(submit(printer_on_a_missing_vm, &ram, RAM_BASE, 4), STATUS_UNAVAILABLE);
    }

    #[test]
    fn registers_survive_a_snapshot_and_bad_values_are_refused() {
        let set: Set = RefCell::new(SpoolSet::new());
        let mut backing = vec![0u8; 4096];
        let ram = Ram::new(RAM_BASE, &mut backing);
        let mut printer = Printer::new(&set, 0);
        submit(&mut printer, &ram, RAM_BASE + 8, 5);
        printer.write(INT_ENABLE, 4, 1).unwrap();
        let mut buf = [0u8; 128];
        let mut out = Writer::new(&mut buf);
        printer.save_state(&mut out).unwrap();
        let len = out.len();
        let mut copy = Printer::new(&set, 0);
        copy.load_state(&mut Reader::new(&buf[..len]), LoadMode::Apply).unwrap();
        for offset in [ADDR_LO, ADDR_HI, LEN, STATUS, JOB_ID, INT_STATUS, INT_ENABLE] {
            assert_eq!(copy.read(offset, 4), printer.read(offset, 4));
        }
        buf[12] = 99; // the status, after ADDR and LEN
        assert!(copy.load_state(&mut Reader::new(&buf[..len]), LoadMode::Apply).is_err());
    }

    proptest! {
        /// Random register writes and submissions: no panic, nothing copied from outside RAM, the spool's
        /// capacity never exceeded.
        #[test]
        fn random_register_traffic_is_harmless(ops in proptest::collection::vec((0u64..0x40, any::<u64>(), prop_oneof![Just(1u8), Just(2), Just(4), Just(8)]), 0..200)) {
            let set: Set = RefCell::new(SpoolSet::new());
            let mut backing = vec![0xaau8; 4096];
            let mut ram = Ram::new(RAM_BASE, &mut backing);
            let mut printer = Printer::new(&set, 0);
            for (offset, value, size) in ops {
                let value = if offset == ADDR_LO && value & 1 == 0 { RAM_BASE + (value >> 1) % 5000 } else { value };
                let _ = printer.write(offset, size, value);
                let _ = printer.read(offset, size);
                printer.poll(0, &mut ram);
                let spool_ok = set.borrow().spool(0).map(|s| s.queued() <= 2 && s.free_bytes() <= 64);
                prop_assert_eq!(spool_ok, Some(true));
                let status = printer.read(STATUS, 4).unwrap() as u32;
                prop_assert!(status <= STATUS_LAST && status != STATUS_PENDING);
            }
        }
    }
}

#[cfg(test)]
mod bus_tests {
    use super::*;
    use crate::dev::spool::SpoolSet;
    use crate::dev::{plic, slots, NullSerial};
    use crate::mem::RAM_BASE;
    use crate::vm::virt::VirtDevices;
    use crate::vm::Devices;
    use core::cell::RefCell;
    use std::vec;

    #[test]
    fn the_bus_routes_the_printer_copies_at_submission_and_forwards_its_interrupt() {
        let set: RefCell<SpoolSet<1, 1, 64>> = RefCell::new(SpoolSet::new());
        let mut backing = vec![0u8; 4096];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.slice_mut(RAM_BASE, 3).unwrap().copy_from_slice(b"hi\n");
        let mut devices: VirtDevices<'_, NullSerial> = VirtDevices::new(NullSerial);
        let base = slots::PRINTER.base;
        assert!(devices.read(base, 4, &mut ram).is_err(), "no printer, no device");
        devices.printer = Some(Printer::new(&set, 0));
        let irq = slots::PRINTER.irq_or_zero();
        let priority = plic::BASE + plic::PRIORITY_BASE + 4 * u64::from(irq);
        let enable = plic::BASE + plic::ENABLE_BASE + plic::ENABLE_STRIDE * plic::s_context(0) as u64;
        devices.write(priority, 4, 1, &mut ram).unwrap();
        devices.write(enable, 4, 1 << irq, &mut ram).unwrap();
        assert_eq!(devices.read(base + MAGIC, 4, &mut ram), Ok(u64::from(MAGIC_VALUE)));
        devices.write(base + INT_ENABLE, 4, 1, &mut ram).unwrap();
        devices.write(base + ADDR_LO, 8, RAM_BASE, &mut ram).unwrap();
        devices.write(base + LEN, 4, 3, &mut ram).unwrap();
        devices.write(base + SUBMIT, 4, 1, &mut ram).unwrap();
        assert_eq!(devices.read(base + STATUS, 4, &mut ram), Ok(u64::from(STATUS_ACCEPTED)));
        devices.write(base + SUBMIT, 4, 1, &mut ram).unwrap();
        assert_eq!(devices.read(base + STATUS, 4, &mut ram), Ok(u64::from(STATUS_FULL)));
        let mut out = std::vec::Vec::new();
        struct Sink<'v>(&'v mut std::vec::Vec<u8>);
        impl embedded_io::ErrorType for Sink<'_> {
            type Error = core::convert::Infallible;
        }
        impl embedded_io::Write for Sink<'_> {
            fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
        set.borrow_mut().pump(&mut Sink(&mut out)).unwrap();
        let mut harts = [crate::hart::Hart::new(crate::hart::HartConfig::rv64gc(0))];
        devices.update(0, &mut harts, &mut ram);
        assert_ne!(harts[0].interrupt_lines & crate::isa::csr::interrupt::SEI, 0, "SPACE reached the PLIC");
        assert!(out.windows(4).any(|w| w == b"\nhi\n"));
    }

    #[test]
    fn a_machine_snapshot_carries_the_printer_only_when_it_has_one() {
        let set: RefCell<SpoolSet<1, 1, 64>> = RefCell::new(SpoolSet::new());
        let mut backing = vec![0u8; 4096];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let mut with: VirtDevices<'_, NullSerial> = VirtDevices::new(NullSerial);
        with.printer = Some(Printer::new(&set, 0));
        with.write(slots::PRINTER.base + LEN, 4, 42, &mut ram).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut out = crate::snapshot::Writer::new(&mut buf);
        with.save_state(&mut out).unwrap();
        let len = out.len();
        let mut copy: VirtDevices<'_, NullSerial> = VirtDevices::new(NullSerial);
        copy.printer = Some(Printer::new(&set, 0));
        copy.load_state(&mut Reader::new(&buf[..len]), LoadMode::Apply).unwrap();
        assert_eq!(copy.read(slots::PRINTER.base + LEN, 4, &mut ram), Ok(42));
        let mut without: VirtDevices<'_, NullSerial> = VirtDevices::new(NullSerial);
        assert!(without.load_state(&mut Reader::new(&buf[..len]), LoadMode::Check).is_err(), "no printer here");
        let mut plain = vec![0u8; 1 << 16];
        let mut out = crate::snapshot::Writer::new(&mut plain);
        without.save_state(&mut out).unwrap();
        let plain_len = out.len();
        assert!(copy.load_state(&mut Reader::new(&plain[..plain_len]), LoadMode::Check).is_err(), "printer missing");
    }
}
