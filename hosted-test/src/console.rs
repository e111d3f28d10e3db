//! Host backends for the guest: the console on this process's stdin/stdout, and the wall clock.

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::Instant;

use trapeze::dev::SerialBackend;
use trapeze::vm::{Clock, TIMEBASE_HZ};

/// Bytes typed on stdin, read by one background thread for every console of the process.
fn stdin_bytes() -> &'static std::sync::Mutex<Receiver<u8>> {
    static INPUT: OnceLock<std::sync::Mutex<Receiver<u8>>> = OnceLock::new();
    INPUT.get_or_init(|| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut byte = [0u8; 1];
            while let Ok(1) = stdin.read(&mut byte) {
                if sender.send(byte[0]).is_err() {
                    break;
                }
            }
        });
        std::sync::Mutex::new(receiver)
    })
}

/// A guest console on the host's stdout (flushed at each newline) and stdin (read without blocking).
#[derive(Debug, Default)]
pub struct Stdio {
    line: Vec<u8>,
}

impl Stdio {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SerialBackend for Stdio {
    fn write_byte(&mut self, byte: u8) {
        self.line.push(byte);
        if byte == b'\n' || self.line.len() >= 4096 {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&self.line);
            let _ = stdout.flush();
            self.line.clear();
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        stdin_bytes().lock().ok()?.try_recv().ok()
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&self.line);
        let _ = stdout.flush();
    }
}

/// Flushes whatever the process wrote to stdout.
pub fn flush_stdout() {
    let _ = std::io::stdout().flush();
}

/// Guest time from the host's monotonic clock, in ticks of the 10 MHz timebase.
#[derive(Debug)]
pub struct HostClock {
    start: Instant,
}

impl HostClock {
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl Clock for HostClock {
    fn now(&mut self) -> u64 {
        let elapsed = self.start.elapsed();
        elapsed.as_secs() * TIMEBASE_HZ
            + u64::from(elapsed.subsec_nanos()) / (1_000_000_000 / TIMEBASE_HZ as u32) as u64
    }
}
