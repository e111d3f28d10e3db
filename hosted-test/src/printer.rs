//! The physical printer of `trapeze up`: where the spool set's scheduler prints every VM's jobs, a file or this
//! process's stdout, as an `embedded-io` sink.
//!
//! The output of each job is framed by the scheduler's banners (`=== job ID of NAME: LEN bytes ===` ... `=== end
//! of job ID of NAME ===`, see [`trapeze::dev::spool::SpoolSet`]), NAME being the VM's name in the
//! configuration. Printing never blocks a VM: the hypervisor loop pumps the spools between slices.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use trapeze::dev::spool::SpoolSet;

/// Jobs one VM's spool holds.
pub const SPOOL_JOBS: usize = 16;
/// Bytes one VM's spool holds: also the largest job.
pub const SPOOL_BYTES: usize = 16 << 10;

/// Every VM's spool of `trapeze up`.
pub type Spools = SpoolSet<{ crate::up::MAX_VMS }, SPOOL_JOBS, SPOOL_BYTES>;

/// The printer: a file, or stdout.
pub enum PrinterSink {
    File(File),
    Stdout,
}

impl PrinterSink {
    /// The printer writing to `path` (created or truncated), or to stdout for `None` or `-`.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        match path {
            None => Ok(PrinterSink::Stdout),
            Some(path) if path.as_os_str() == "-" => Ok(PrinterSink::Stdout),
            Some(path) => {
                File::create(path).map(PrinterSink::File).map_err(|e| format!("printer output {}: {e}", path.display()))
            }
        }
    }
}

impl embedded_io::ErrorType for PrinterSink {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for PrinterSink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let result = match self {
            PrinterSink::File(file) => file.write(buf),
            PrinterSink::Stdout => std::io::stdout().lock().write(buf),
        };
        result.map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => embedded_io::ErrorKind::Interrupted,
            _ => embedded_io::ErrorKind::Other,
        })
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let result = match self {
            PrinterSink::File(file) => file.flush(),
            PrinterSink::Stdout => std::io::stdout().flush(),
        };
        result.map_err(|_| embedded_io::ErrorKind::Other)
    }
}

/// A sink that takes at most `left` more bytes, then nothing (a slow printer: the scheduler goes on at the
/// next turn, mid-job if need be).
pub struct Throttle<'s> {
    pub sink: &'s mut PrinterSink,
    pub left: usize,
}

impl embedded_io::ErrorType for Throttle<'_> {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for Throttle<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let len = buf.len().min(self.left);
        if len == 0 {
            return Ok(0);
        }
        let written = self.sink.write(&buf[..len])?;
        self.left -= written.min(self.left);
        Ok(written)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.sink.flush()
    }
}
