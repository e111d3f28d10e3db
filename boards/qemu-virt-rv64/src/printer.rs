//! The board's physical printer (issue 12, the spooled printer): the serial console, as the `embedded-io` sink the
//! core's spool scheduler (`trapeze::dev::spool::SpoolSet::pump`) prints whole jobs to.
//!
//! Each VM given the printer has the core's printer device (`trapeze::dev::printer`, `trapeze,spool-printer` at
//! `0x1001_0000`), which copies a submitted job out of guest memory into the VM's level-2 spool at once. The board
//! pumps the spools between the VMs' turns ([`Printing::pump`]): the console takes every byte (it waits on the
//! UART, never refuses), so a pump prints every waiting job to its end, and a job is never cut by a VM's line,
//! since the VMs write the console only during their turns (a whole line at a time, through the multiplexer).
//! Before printing, the board writes a line of its own through the multiplexer, which closes any VM line left
//! open (a partial line flushed when its VM stopped), so each job's banner starts a line.
//!
//! Bounded: every spool holds [`SPOOL_JOBS`] jobs and [`SPOOL_BYTES`] bytes (a full one refuses the job: the guest
//! retries once one of its jobs has printed); nothing here allocates after setup, and nothing a guest submits can
//! panic the VMM (the device and the spool check every address and length).

use alloc::boxed::Box;
use core::cell::RefCell;
use core::convert::Infallible;

use trapeze::dev::spool::SpoolSet;

use crate::hw;

/// VMs given the printer.
pub const PRINTER_VMS: usize = 2;
/// Jobs one VM's spool holds.
pub const SPOOL_JOBS: usize = 16;
/// Bytes one VM's spool holds: also the largest job. As small as the `print-jobs` guest allows (its level-1
/// spools are 4 KiB), so its processes meet a full spool and block, as the issue asks to see.
pub const SPOOL_BYTES: usize = 4 << 10;

/// Every printing VM's level-2 spool, and the scheduler.
pub type BoardSpools = SpoolSet<PRINTER_VMS, SPOOL_JOBS, SPOOL_BYTES>;

/// The serial console as the printer: every byte goes to the physical UART.
pub struct ConsolePrinter;

impl embedded_io::ErrorType for ConsolePrinter {
    type Error = Infallible;
}

impl embedded_io::Write for ConsolePrinter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        buf.iter().for_each(|&byte| hw::console_write_byte(byte));
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The spools the printing VMs' devices share, and what was printed.
pub struct Printing {
    spools: &'static RefCell<BoardSpools>,
    /// Bytes printed so far (banners included).
    pub printed: u64,
}

impl Printing {
    /// Empty spools, for the board's lifetime (the VMs' printer devices hold them).
    pub fn new() -> Self {
        Self { spools: Box::leak(Box::new(RefCell::new(BoardSpools::new()))), printed: 0 }
    }

    /// The spools, for the printer devices (`trapeze::dev::printer::Printer::new`).
    pub fn spools(&self) -> &'static RefCell<BoardSpools> {
        self.spools
    }

    /// Names spool `spool` in the banners.
    pub fn set_name(&self, spool: usize, name: &str) {
        if let Ok(mut spools) = self.spools.try_borrow_mut() {
            spools.set_name(spool, name);
        }
    }

    /// Prints every job waiting, whole, in the scheduler's fair order, after `before` (which writes a line of
    /// the board's own, closing any open VM line). Answers whether anything was printed.
    pub fn pump(&mut self, before: impl FnOnce(usize)) -> bool {
        let Ok(mut spools) = self.spools.try_borrow_mut() else { return false };
        if spools.is_idle() {
            return false;
        }
        let waiting = (0..PRINTER_VMS).filter_map(|spool| spools.spool(spool)).map(|spool| spool.queued()).sum();
        before(waiting);
        let Ok(written) = spools.pump(&mut ConsolePrinter);
        self.printed += written as u64;
        written > 0
    }
}
