//! HTIF, the Berkeley host-target interface of Spike and the official riscv-tests: the guest writes a command
//! word to the `tohost` doubleword in RAM and reads answers from `fromhost`.
//!
//! Stores to `tohost` are not trapped: the emulator calls [`Htif::poll`] now and then (e.g. after each time
//! slice), which picks a nonzero `tohost` up, clears it and carries the command out, as Spike's front-end server
//! does. Command word: device in bits 63:56, command in 55:48, payload in 47:0.
//!
//! - Device 0 (syscall proxy), command 0, payload bit 0 set: exit with code `payload >> 1`
//!   (riscv-tests' `tohost = (code << 1) | 1`; 1 is a pass).
//! - Device 0, command 0, payload bit 0 clear: the payload is the address of a "magic memory" block of eight
//!   little-endian u64s `[syscall number, a0, a1, ...]`, as riscv-tests' `benchmarks/common/syscalls.c` builds
//!   it. Supported: SYS_write (64) to fd 1 or 2 (to the console; a longer write than [`MAX_WRITE_LEN`] is cut
//!   short and the short count returned) and SYS_exit / SYS_exit_group (93 / 94, exit with code a0). Any other
//!   syscall answers `-ENOSYS`. The return value goes to `magic_mem[0]`, then `fromhost` gets 1
//!   (Spike's `cmd.respond(1)`).
//! - Device 1 (console), command 1: put the payload's low byte; `fromhost` gets
//!   `(1 << 56) | (1 << 48) | 0x100 | byte`, the answer QEMU's HTIF gives (upstream Spike writes no answer
//!   to a putchar; guests such as riscv-pk and OpenSBI ignore it either way).
//! - Device 1, command 0: getchar. As in Spike and QEMU the request stays pending until the console has a
//!   byte, which is then answered as `(1 << 56) | 0x100 | byte`; there is no "no input" answer. Only one
//!   getchar is pending at a time (a second request replaces the first).
//! - Anything else is ignored, as Spike's null device does.
//!
//! Answers are written to `fromhost` only while it reads 0 (the guest has consumed the previous one), as
//! Spike does; up to [`RESPONSE_QUEUE`] answers wait in the meantime, further ones are dropped.
//!
//! Everything in `tohost` and in the magic block is guest-controlled: every address and length is checked
//! against [`Ram`] before use, lengths are bounded, and nothing here panics or touches memory outside RAM. A
//! command whose magic block lies outside RAM is not carried out (but still answered on `fromhost`, so that the
//! guest does not spin forever) and counted in [`Htif::rejected`].

use heapless::Deque;

use super::{MachineRequest, SerialBackend};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// HTIF device number of the syscall proxy.
pub const DEV_SYSCALL: u8 = 0;
/// HTIF device number of the console.
pub const DEV_CONSOLE: u8 = 1;
/// Console command: read a byte.
pub const CONSOLE_GETC: u8 = 0;
/// Console command: write a byte.
pub const CONSOLE_PUTC: u8 = 1;

/// Proxied syscall: `write(fd, buf, len)`.
pub const SYS_WRITE: u64 = 64;
/// Proxied syscall: `exit(code)`.
pub const SYS_EXIT: u64 = 93;
/// Proxied syscall: `exit_group(code)`.
pub const SYS_EXIT_GROUP: u64 = 94;

/// Largest number of bytes one proxied `write` copies; a longer write returns this short count.
pub const MAX_WRITE_LEN: u64 = 1 << 20;
/// Number of answers that can wait for the guest to consume `fromhost`.
pub const RESPONSE_QUEUE: usize = 8;

const EBADF: i64 = 9;
const EFAULT: i64 = 14;
const ENOSYS: i64 = 38;

const PAYLOAD_MASK: u64 = (1 << 48) - 1;
const MAGIC_WORDS: usize = 8;

/// The HTIF endpoint: where `tohost` and `fromhost` are, and the answers not yet delivered.
#[derive(Debug)]
pub struct Htif {
    tohost: u64,
    fromhost: Option<u64>,
    responses: Deque<u64, RESPONSE_QUEUE>,
    /// The command word of a getchar waiting for input.
    pending_read: Option<u64>,
    rejected: u32,
}

impl Htif {
    /// An HTIF endpoint polling the doubleword at guest address `tohost`, answering at `fromhost` (without
    /// one, answers are dropped and getchar is never served).
    pub fn new(tohost: u64, fromhost: Option<u64>) -> Self {
        Self { tohost, fromhost, responses: Deque::new(), pending_read: None, rejected: 0 }
    }

    /// Guest address of `tohost`.
    pub fn tohost(&self) -> u64 {
        self.tohost
    }

    /// Guest address of `fromhost`, if any.
    pub fn fromhost(&self) -> Option<u64> {
        self.fromhost
    }

    /// Number of commands refused so far because they pointed outside RAM, plus answers dropped because the
    /// queue was full.
    pub fn rejected(&self) -> u32 {
        self.rejected
    }

    /// Whether a getchar is waiting for console input.
    pub fn read_pending(&self) -> bool {
        self.pending_read.is_some()
    }

    /// Delivers waiting answers, carries out the command in `tohost` if there is one, and serves a pending
    /// getchar from `console`. Returns the machine request an exit command makes. A `tohost` outside RAM is
    /// never read.
    pub fn poll(&mut self, ram: &mut Ram, console: &mut impl SerialBackend) -> Option<MachineRequest> {
        self.deliver(ram);
        let request = match ram.load(self.tohost, 8) {
            Some(command) if command != 0 => {
                let _ = ram.store(self.tohost, 8, 0);
                self.handle(command, ram, console)
            }
            _ => None,
        };
        self.serve_pending_read(ram, console);
        self.deliver(ram);
        request
    }

    fn handle(&mut self, command: u64, ram: &mut Ram, console: &mut impl SerialBackend) -> Option<MachineRequest> {
        let device = (command >> 56) as u8;
        let cmd = (command >> 48) as u8;
        let payload = command & PAYLOAD_MASK;
        match (device, cmd) {
            (DEV_SYSCALL, 0) if payload & 1 != 0 => Some(power_off(payload >> 1)),
            (DEV_SYSCALL, 0) => {
                let request = self.syscall(payload, ram, console);
                self.respond(command, 1);
                request
            }
            (DEV_CONSOLE, CONSOLE_PUTC) => {
                let byte = payload as u8;
                console.write_byte(byte);
                self.respond(command, 0x100 | u64::from(byte));
                None
            }
            (DEV_CONSOLE, CONSOLE_GETC) => {
                self.pending_read = Some(command);
                None
            }
            _ => None,
        }
    }

    /// Runs the proxied syscall whose magic block is at `addr`; writes its return value to `magic_mem[0]`.
    fn syscall(&mut self, addr: u64, ram: &mut Ram, console: &mut impl SerialBackend) -> Option<MachineRequest> {
        let mut magic = [0u64; MAGIC_WORDS];
        let mut block = [0u8; 8 * MAGIC_WORDS];
        if ram.read_bytes(addr, &mut block).is_none() {
            self.rejected = self.rejected.saturating_add(1);
            return None;
        }
        for (word, bytes) in magic.iter_mut().zip(block.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(bytes);
            *word = u64::from_le_bytes(le);
        }
        let [number, a0, a1, a2, ..] = magic;
        let mut request = None;
        let ret: i64 = match number {
            SYS_WRITE => {
                if a0 != 1 && a0 != 2 {
                    -EBADF
                } else {
                    let len = a2.min(MAX_WRITE_LEN);
                    // Copied out in bounded pieces (the RAM may be shared with other threads).
                    let mut chunk = [0u8; 256];
                    if !ram.contains(a1, len) {
                        -EFAULT
                    } else {
                        let mut written = 0u64;
                        while written < len {
                            let n = (len - written).min(chunk.len() as u64) as usize;
                            let piece = &mut chunk[..n];
                            if ram.read_bytes(a1 + written, piece).is_none() {
                                break;
                            }
                            let put = console.write_bytes(piece) as u64;
                            written += put;
                            if put < n as u64 {
                                break;
                            }
                        }
                        written as i64
                    }
                }
            }
            SYS_EXIT | SYS_EXIT_GROUP => {
                request = Some(power_off(a0));
                0
            }
            _ => -ENOSYS,
        };
        let _ = ram.store(addr, 8, ret as u64);
        request
    }

    /// Queues the answer `value` to `command` (the device and command bytes are kept, as Spike's `respond`).
    fn respond(&mut self, command: u64, value: u64) {
        if self.fromhost.is_none() {
            return;
        }
        let word = (command & !PAYLOAD_MASK) | (value & PAYLOAD_MASK);
        if self.responses.push_back(word).is_err() {
            self.rejected = self.rejected.saturating_add(1);
        }
    }

    /// Whether the guest has consumed the last answer (`fromhost` reads 0).
    fn fromhost_free(&self, ram: &Ram) -> bool {
        match self.fromhost {
            Some(addr) => ram.load(addr, 8) == Some(0),
            None => false,
        }
    }

    /// Writes the oldest waiting answer to `fromhost` if the guest has consumed the previous one.
    fn deliver(&mut self, ram: &mut Ram) {
        let Some(addr) = self.fromhost else { return };
        if !self.fromhost_free(ram) {
            return;
        }
        if let Some(word) = self.responses.pop_front() {
            let _ = ram.store(addr, 8, word);
        }
    }

    /// Answers a pending getchar once input is there and nothing else waits to be delivered; input is only
    /// taken from the console when the answer can be delivered.
    fn serve_pending_read(&mut self, ram: &Ram, console: &mut impl SerialBackend) {
        let Some(command) = self.pending_read else {
            return;
        };
        if !self.responses.is_empty() || !self.fromhost_free(ram) {
            return;
        }
        if let Some(byte) = console.read_byte() {
            self.pending_read = None;
            self.respond(command, 0x100 | u64::from(byte));
        }
    }
}

/// The power-off request for a guest exit code; a code that does not fit `u32` saturates (never to 0).
fn power_off(code: u64) -> MachineRequest {
    MachineRequest::PowerOff { code: u32::try_from(code).unwrap_or(u32::MAX) }
}

impl Htif {
    /// Writes the endpoint's state for a snapshot: where `tohost` and `fromhost` are (the restored machine's
    /// must be the same), the undelivered answers, a waiting getchar and the rejection count.
    pub fn save_state(&self, out: &mut Writer) {
        out.u64(self.tohost);
        out.option_u64(self.fromhost);
        out.u32(self.responses.len() as u32);
        for &response in &self.responses {
            out.u64(response);
        }
        out.option_u64(self.pending_read);
        out.u32(self.rejected);
    }

    /// Reads what [`save_state`](Self::save_state) wrote; under [`LoadMode::Apply`] replaces the state, all of
    /// it or (on any error) nothing.
    pub fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u64()? != self.tohost || input.option_u64()? != self.fromhost {
            return Err(input.mismatch("the tohost/fromhost addresses"));
        }
        let count = input.count(RESPONSE_QUEUE, "more HTIF answers than the queue holds")?;
        let mut responses = Deque::new();
        for _ in 0..count {
            // Cannot fail: `count` is at most the capacity.
            let _ = responses.push_back(input.u64()?);
        }
        let pending_read = input.option_u64()?;
        let rejected = input.u32()?;
        if mode.apply() {
            self.responses = responses;
            self.pending_read = pending_read;
            self.rejected = rejected;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RAM_BASE;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    const TOHOST: u64 = RAM_BASE + 0x1000;
    const FROMHOST: u64 = RAM_BASE + 0x1040;
    const MAGIC: u64 = RAM_BASE + 0x2000;
    const BUF: u64 = RAM_BASE + 0x3000;
    const RAM_SIZE: usize = 0x10000;

    #[derive(Default)]
    struct FakeConsole {
        out: Vec<u8>,
        input: VecDeque<u8>,
    }

    impl SerialBackend for FakeConsole {
        fn write_byte(&mut self, byte: u8) {
            self.out.push(byte);
        }
        fn read_byte(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
    }

    struct Rig {
        backing: Vec<u8>,
        htif: Htif,
        console: FakeConsole,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                backing: vec![0; RAM_SIZE],
                htif: Htif::new(TOHOST, Some(FROMHOST)),
                console: FakeConsole::default(),
            }
        }

        fn with_ram<T>(&mut self, f: impl FnOnce(&mut Ram) -> T) -> T {
            let mut ram = Ram::new(RAM_BASE, &mut self.backing);
            f(&mut ram)
        }

        fn store(&mut self, addr: u64, value: u64) {
            self.with_ram(|ram| ram.store(addr, 8, value)).expect("inside RAM");
        }

        fn load(&mut self, addr: u64) -> u64 {
            self.with_ram(|ram| ram.load(addr, 8)).expect("inside RAM")
        }

        fn poll(&mut self) -> Option<MachineRequest> {
            let mut ram = Ram::new(RAM_BASE, &mut self.backing);
            self.htif.poll(&mut ram, &mut self.console)
        }

        fn syscall(&mut self, words: [u64; 4]) -> Option<MachineRequest> {
            for (i, w) in words.iter().enumerate() {
                self.store(MAGIC + 8 * i as u64, *w);
            }
            self.store(TOHOST, MAGIC);
            self.poll()
        }
    }

    #[test]
    fn nothing_to_do_when_tohost_is_zero() {
        let mut rig = Rig::new();
        assert_eq!(rig.poll(), None);
        assert_eq!(rig.load(FROMHOST), 0);
    }

    #[test]
    fn exit_codes() {
        let mut rig = Rig::new();
        rig.store(TOHOST, 1);
        assert_eq!(rig.poll(), Some(MachineRequest::PowerOff { code: 0 }));
        assert_eq!(rig.load(TOHOST), 0, "tohost is cleared once read");
        rig.store(TOHOST, (5 << 1) | 1);
        assert_eq!(rig.poll(), Some(MachineRequest::PowerOff { code: 5 }));
        rig.store(TOHOST, PAYLOAD_MASK);
        assert_eq!(rig.poll(), Some(MachineRequest::PowerOff { code: u32::MAX }), "saturates, never 0");
        assert_eq!(rig.poll(), None);
    }

    #[test]
    fn console_putchar_and_answer() {
        let mut rig = Rig::new();
        rig.store(TOHOST, (1 << 56) | (1 << 48) | u64::from(b'A'));
        assert_eq!(rig.poll(), None);
        assert_eq!(rig.console.out, b"A");
        assert_eq!(rig.load(TOHOST), 0);
        assert_eq!(rig.load(FROMHOST), (1 << 56) | (1 << 48) | 0x100 | u64::from(b'A'));

        // The guest has not consumed the answer: the next one waits.
        rig.store(TOHOST, (1 << 56) | (1 << 48) | u64::from(b'B'));
        rig.poll();
        assert_eq!(rig.console.out, b"AB");
        assert_eq!(rig.load(FROMHOST) & 0xff, u64::from(b'A'));
        rig.store(FROMHOST, 0);
        rig.poll();
        assert_eq!(rig.load(FROMHOST) & 0xff, u64::from(b'B'));
    }

    #[test]
    fn console_getchar_waits_for_input() {
        let mut rig = Rig::new();
        rig.store(TOHOST, 1 << 56);
        assert_eq!(rig.poll(), None);
        assert!(rig.htif.read_pending());
        assert_eq!(rig.load(FROMHOST), 0, "no answer without input");
        rig.poll();
        assert_eq!(rig.load(FROMHOST), 0);
        rig.console.input.push_back(b'x');
        rig.poll();
        assert_eq!(rig.load(FROMHOST), (1 << 56) | 0x100 | u64::from(b'x'));
        assert!(!rig.htif.read_pending());
    }

    #[test]
    fn syscall_write_to_stdout() {
        let mut rig = Rig::new();
        rig.with_ram(|ram| ram.slice_mut(BUF, 6).expect("inside RAM").copy_from_slice(b"hello\n"));
        assert_eq!(rig.syscall([SYS_WRITE, 1, BUF, 6]), None);
        assert_eq!(rig.console.out, b"hello\n");
        assert_eq!(rig.load(MAGIC), 6, "return value in magic_mem[0]");
        assert_eq!(rig.load(FROMHOST), 1);
        assert_eq!(rig.load(TOHOST), 0);

        rig.store(FROMHOST, 0);
        rig.syscall([SYS_WRITE, 2, BUF, 2]);
        assert_eq!(rig.console.out, b"hello\nhe", "fd 2 goes to the console too");
    }

    #[test]
    fn syscall_errors() {
        let mut rig = Rig::new();
        rig.syscall([SYS_WRITE, 3, BUF, 4]);
        assert_eq!(rig.load(MAGIC) as i64, -EBADF);
        rig.syscall([SYS_WRITE, 1, RAM_BASE + RAM_SIZE as u64 - 2, 4]);
        assert_eq!(rig.load(MAGIC) as i64, -EFAULT, "buffer runs past RAM");
        rig.syscall([SYS_WRITE, 1, 0x1000, 4]);
        assert_eq!(rig.load(MAGIC) as i64, -EFAULT, "buffer below RAM");
        rig.syscall([SYS_WRITE, 1, BUF, u64::MAX]);
        assert_eq!(rig.load(MAGIC) as i64, -EFAULT, "huge length is bounded, then refused");
        rig.syscall([SYS_WRITE, 1, u64::MAX - 1, u64::MAX]);
        assert_eq!(rig.load(MAGIC) as i64, -EFAULT);
        rig.syscall([1234, 0, 0, 0]);
        assert_eq!(rig.load(MAGIC) as i64, -ENOSYS);
        assert!(rig.console.out.is_empty());
    }

    #[test]
    fn long_write_is_cut_short() {
        let mut backing = vec![b'.'; 2 * MAX_WRITE_LEN as usize];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.store(RAM_BASE, 8, SYS_WRITE).expect("inside RAM");
        ram.store(RAM_BASE + 8, 8, 1).expect("inside RAM");
        ram.store(RAM_BASE + 16, 8, RAM_BASE + 64).expect("inside RAM");
        ram.store(RAM_BASE + 24, 8, MAX_WRITE_LEN + 10).expect("inside RAM");
        ram.store(RAM_BASE + 0x100, 8, RAM_BASE).expect("inside RAM");
        let mut htif = Htif::new(RAM_BASE + 0x100, None);
        let mut console = FakeConsole::default();
        assert_eq!(htif.poll(&mut ram, &mut console), None);
        assert_eq!(console.out.len() as u64, MAX_WRITE_LEN);
        assert_eq!(ram.load(RAM_BASE, 8), Some(MAX_WRITE_LEN));
    }

    #[test]
    fn syscall_exit() {
        let mut rig = Rig::new();
        assert_eq!(rig.syscall([SYS_EXIT, 7, 0, 0]), Some(MachineRequest::PowerOff { code: 7 }));
        assert_eq!(rig.load(MAGIC), 0);
        assert_eq!(rig.syscall([SYS_EXIT_GROUP, u64::MAX, 0, 0]), Some(MachineRequest::PowerOff { code: u32::MAX }));
    }

    #[test]
    fn garbage_magic_pointers_are_refused() {
        let mut rig = Rig::new();
        for bad in [
            8u64 << 40,                      // far outside RAM
            RAM_BASE - 8,                    // straddles the start
            RAM_BASE + RAM_SIZE as u64 - 32, // straddles the end
            PAYLOAD_MASK & !1,               // top of the payload range
        ] {
            rig.store(FROMHOST, 0);
            rig.store(TOHOST, bad);
            assert_eq!(rig.poll(), None);
            assert_eq!(rig.load(TOHOST), 0);
            assert_eq!(rig.load(FROMHOST), 1, "answered so the guest does not spin");
        }
        assert_eq!(rig.htif.rejected(), 4);
        assert!(rig.console.out.is_empty());
    }

    #[test]
    fn tohost_outside_ram_is_never_read() {
        let mut backing = vec![0u8; 64];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let mut console = FakeConsole::default();
        for addr in [0, RAM_BASE - 4, RAM_BASE + 60, u64::MAX] {
            let mut htif = Htif::new(addr, Some(u64::MAX - 3));
            assert_eq!(htif.poll(&mut ram, &mut console), None);
        }
    }

    #[test]
    fn unknown_devices_and_commands_are_ignored() {
        let mut rig = Rig::new();
        for cmd in [(2u64 << 56) | 5, (1 << 56) | (7 << 48) | 1, (0xff << 56) | (0xff << 48), 3 << 48] {
            rig.store(TOHOST, cmd);
            assert_eq!(rig.poll(), None);
            assert_eq!(rig.load(TOHOST), 0);
        }
        assert_eq!(rig.load(FROMHOST), 0);
    }

    #[test]
    fn random_commands_never_panic() {
        let mut rig = Rig::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Point magic blocks and buffers into, around and far outside RAM.
            let near = RAM_BASE.wrapping_add(x % (2 * RAM_SIZE as u64)).wrapping_sub(RAM_SIZE as u64 / 2);
            rig.store(MAGIC, x % 100);
            rig.store(MAGIC + 8, x >> 62);
            rig.store(MAGIC + 16, if x & 4 != 0 { near } else { x });
            rig.store(MAGIC + 24, x.rotate_left(17) % 0x20000);
            let command = match x % 4 {
                0 => MAGIC,
                1 => near & PAYLOAD_MASK & !1,
                _ => x,
            };
            rig.store(TOHOST, command);
            rig.poll();
            if x & 8 != 0 {
                rig.store(FROMHOST, 0);
            }
        }
    }
}
