//! A host file or character device given whole to one VM's UART (`serial = "PATH"` in `trapeze up`), instead of
//! a port of the console multiplexer: the VM's output is written to it a line at a time, and its input is read
//! from it when it is readable (a character device: a terminal, a pty), by a background thread, so the guest's
//! UART never waits for it. A regular file is created (or truncated) and takes output only: reading it back
//! would only return what the VM wrote. Anything else (a FIFO, whose reader would read the VM's own output
//! back, a directory, a socket) is refused.
//!
//! What it must never do: block the VM's thread on input, or panic on anything the host or the guest does (a
//! failed write drops the bytes).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use trapeze::dev::SerialBackend;

/// One VM's UART on a host file or device.
pub struct HostSerial {
    file: File,
    /// The path as opened, made absolute, so two VMs naming one file are found out.
    pub path: PathBuf,
    /// Output waiting for its newline.
    line: Vec<u8>,
    /// Bytes the reader thread got and the guest has not read; `None` for a regular file (output only).
    input: Option<Arc<Mutex<VecDeque<u8>>>>,
}

impl HostSerial {
    /// Opens `path` for the VM: a regular file is created or truncated; a character device is opened for
    /// reading and writing, and read by a thread of its own. The error says why it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, String> {
        let existing = std::fs::metadata(path).ok();
        let regular = existing.as_ref().is_none_or(|meta| meta.is_file());
        let device = existing.as_ref().is_some_and(|meta| meta.file_type().is_char_device());
        if !regular && !device {
            return Err(format!("serial {}: neither a regular file nor a character device", path.display()));
        }
        let mut options = OpenOptions::new();
        options.write(true);
        if regular {
            options.create(true).truncate(true);
        } else {
            options.read(true);
        }
        let file = options.open(path).map_err(|e| format!("serial {}: cannot open it: {e}", path.display()))?;
        let path = path.canonicalize().map_err(|e| format!("serial {}: {e}", path.display()))?;
        let input = if regular {
            None
        } else {
            let mut reader = file.try_clone().map_err(|e| format!("serial {}: {e}", path.display()))?;
            let input = Arc::new(Mutex::new(VecDeque::new()));
            let filled = Arc::clone(&input);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 256];
                while let Ok(count @ 1..) = reader.read(&mut buffer) {
                    if let Ok(mut bytes) = filled.lock() {
                        bytes.extend(&buffer[..count]);
                    }
                }
            });
            Some(input)
        };
        Ok(Self { file, path, line: Vec::new(), input })
    }

    /// Writes out the partial line.
    pub fn flush(&mut self) {
        if !self.line.is_empty() {
            let _ = self.file.write_all(&self.line);
            let _ = self.file.flush();
            self.line.clear();
        }
    }
}

impl SerialBackend for HostSerial {
    fn write_byte(&mut self, byte: u8) {
        self.line.push(byte);
        if byte == b'\n' || self.line.len() >= 4096 {
            self.flush();
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        // A prompt waiting for its newline must be out before the guest waits for an answer.
        self.flush();
        self.input.as_ref()?.lock().ok()?.pop_front()
    }
}

impl Drop for HostSerial {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A VM's UART: its port of the console multiplexer, or a host file or device of its own.
pub enum VmSerial<P> {
    Console(P),
    Host(HostSerial),
}

impl<P: SerialBackend> SerialBackend for VmSerial<P> {
    fn write_byte(&mut self, byte: u8) {
        match self {
            VmSerial::Console(port) => port.write_byte(byte),
            VmSerial::Host(host) => host.write_byte(byte),
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        match self {
            VmSerial::Console(port) => port.read_byte(),
            VmSerial::Host(host) => host.read_byte(),
        }
    }
}
