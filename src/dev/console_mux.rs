//! Console multiplexing: the one physical console shared by every VM.
//!
//! Each VM's console (its UART's [`SerialBackend`]) is a port of a [`ConsoleMux`], reached through a
//! [`MuxPort`]. Output is tagged: a port's bytes are collected into whole lines (so lines of different VMs never
//! mix), and each line goes to the physical console after the port's tag, `[vmN] ` unless set otherwise
//! ([`ConsoleMux::set_tag`]). A line longer than the line buffer, or a partial line the host flushes
//! ([`ConsoleMux::flush`], e.g. a prompt), goes out as it is, and the port's next bytes continue it without a new
//! tag unless another port wrote in between (then that line is closed with a newline and the continuation is
//! tagged again).
//!
//! Input from the physical console goes to the *focused* port only, into that port's bounded input buffer (4 KiB
//! by default, so a pasted block of text arrives whole while the guest reads its UART a byte at a time); when
//! the buffer is full the byte is dropped and counted ([`ConsoleMux::dropped_input`]). The focus is switched
//! with an escape sequence, as QEMU's character-device multiplexer does with its monitor escape:
//!
//! | keys                | effect                                                   |
//! | ------------------- | -------------------------------------------------------- |
//! | `Ctrl-A c`          | focus the next attached port (cycling)                   |
//! | `Ctrl-A 0` … `9`    | focus port 0 … 9, when attached                          |
//! | `Ctrl-A Ctrl-A`     | send one literal `Ctrl-A` (0x01) to the focused port     |
//! | `Ctrl-A h`, `?`     | print this help on the console                           |
//! | `Ctrl-A` other      | nothing (both bytes are swallowed, as in QEMU)           |
//!
//! Each focus change made with these keys prints a line `console: input to [vmN]`; the host's own changes
//! ([`ConsoleMux::set_focus`], [`ConsoleMux::detach`]) are silent. Focus starts on port 0.
//!
//! What it must never do: block (a port's reads answer at once, a full input buffer drops, a poll of the
//! physical console takes a bounded number of bytes), allocate (every buffer has a fixed capacity), panic on a
//! port number or a byte, or route an input byte to a port that is not focused. The host may also type into a
//! port directly ([`ConsoleMux::push_input`]), e.g. from a script; that bypasses the focus by design.

use core::cell::RefCell;

use heapless::{Deque, Vec};

use super::SerialBackend;

/// The escape byte: `Ctrl-A`.
pub const ESCAPE: u8 = 0x01;
/// The longest tag a port can have, in bytes.
pub const TAG_MAX: usize = 24;
/// The most bytes one [`ConsoleMux::poll_input`] takes from the physical console, so that a console that always
/// has input cannot keep the VMM in the poll.
pub const POLL_MAX: usize = 64;

/// One port: a VM's side of the physical console.
struct Port<const INPUT: usize, const LINE: usize> {
    tag: Vec<u8, TAG_MAX>,
    attached: bool,
    /// Output not yet on the physical console (no newline yet).
    line: Vec<u8, LINE>,
    input: Deque<u8, INPUT>,
    dropped: u64,
}

impl<const INPUT: usize, const LINE: usize> Port<INPUT, LINE> {
    fn new(index: usize) -> Self {
        let mut tag = Vec::new();
        let _ = tag.extend_from_slice(b"[vm");
        push_decimal(&mut tag, index);
        let _ = tag.extend_from_slice(b"] ");
        Self { tag, attached: true, line: Vec::new(), input: Deque::new(), dropped: 0 }
    }
}

/// Appends `value` in decimal, as far as it fits.
fn push_decimal<const N: usize>(out: &mut Vec<u8, N>, value: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 || at == 0 {
            break;
        }
    }
    for &digit in digits.get(at..).unwrap_or_default() {
        let _ = out.push(digit);
    }
}

/// The physical console `S` shared by `PORTS` ports, each with an input buffer of `INPUT` bytes and a line
/// buffer of `LINE` bytes. See the [module documentation](self) for the behaviour and the escape keys.
pub struct ConsoleMux<S, const PORTS: usize, const INPUT: usize = 4096, const LINE: usize = 256> {
    console: S,
    ports: [Port<INPUT, LINE>; PORTS],
    focus: usize,
    /// A `Ctrl-A` was typed and the next byte is a command.
    escape: bool,
    /// The port whose line is open (partly written, no newline yet) on the physical console.
    open: Option<usize>,
    /// Input bytes dropped because no attached port could take them.
    unrouted: u64,
}

impl<S: SerialBackend, const PORTS: usize, const INPUT: usize, const LINE: usize> ConsoleMux<S, PORTS, INPUT, LINE> {
    /// A multiplexer over `console` with every port attached, port N tagged `[vmN] `, and the focus on port 0.
    pub fn new(console: S) -> Self {
        Self { console, ports: core::array::from_fn(Port::new), focus: 0, escape: false, open: None, unrouted: 0 }
    }

    /// A [`SerialBackend`] for port `port` of the multiplexer in `mux`.
    pub fn port(mux: &RefCell<Self>, port: usize) -> MuxPort<'_, S, PORTS, INPUT, LINE> {
        MuxPort { mux, port }
    }

    /// The physical console.
    pub fn console(&self) -> &S {
        &self.console
    }

    /// The physical console, mutably (to flush it, say). Writing to it directly bypasses the tagging.
    pub fn console_mut(&mut self) -> &mut S {
        &mut self.console
    }

    /// Sets `port`'s tag, written before each of its lines; false (nothing changed) when there is no such port
    /// or the tag is longer than [`TAG_MAX`].
    pub fn set_tag(&mut self, port: usize, tag: &str) -> bool {
        let Some(slot) = self.ports.get_mut(port) else { return false };
        match Vec::from_slice(tag.as_bytes()) {
            Ok(tag) => {
                slot.tag = tag;
                true
            }
            Err(_) => false,
        }
    }

    /// Makes `port` one the focus can move to (ports start attached).
    pub fn attach(&mut self, port: usize) {
        if let Some(slot) = self.ports.get_mut(port) {
            slot.attached = true;
        }
    }

    /// Takes `port` out of the focus cycle (its VM stopped, say): its partial line is flushed, its pending input
    /// dropped, and the focus moves on to the next attached port if it was there. Its output is still shown.
    pub fn detach(&mut self, port: usize) {
        self.flush(port);
        let Some(slot) = self.ports.get_mut(port) else { return };
        slot.attached = false;
        slot.input.clear();
        if self.focus == port {
            self.focus = self.next_attached().unwrap_or(self.focus);
        }
    }

    /// The focused port.
    pub fn focus(&self) -> usize {
        self.focus
    }

    /// Focuses `port`; false when it is not an attached port.
    pub fn set_focus(&mut self, port: usize) -> bool {
        if !self.ports.get(port).is_some_and(|slot| slot.attached) {
            return false;
        }
        self.focus = port;
        true
    }

    /// Input bytes dropped for `port` because its buffer was full.
    pub fn dropped_input(&self, port: usize) -> u64 {
        self.ports.get(port).map_or(0, |slot| slot.dropped)
    }

    /// Input bytes dropped because the focused port was not attached (every port detached).
    pub fn unrouted_input(&self) -> u64 {
        self.unrouted
    }

    /// Whether `port` has input waiting (without polling the physical console).
    pub fn has_input(&self, port: usize) -> bool {
        self.ports.get(port).is_some_and(|slot| !slot.input.is_empty())
    }

    /// Port `port` writes `byte`: collected into its line, which goes out at its newline or when full.
    pub fn write(&mut self, port: usize, byte: u8) {
        let Some(slot) = self.ports.get_mut(port) else { return };
        if slot.line.is_full() {
            emit(&mut self.console, &mut self.open, port, &slot.tag, &slot.line);
            slot.line.clear();
        }
        let _ = slot.line.push(byte);
        if byte == b'\n' {
            emit(&mut self.console, &mut self.open, port, &slot.tag, &slot.line);
            slot.line.clear();
        }
    }

    /// Port `port` writes `bytes`.
    pub fn write_bytes(&mut self, port: usize, bytes: &[u8]) {
        for &byte in bytes {
            self.write(port, byte);
        }
    }

    /// Sends `port`'s partial line (a prompt, say) to the physical console now.
    pub fn flush(&mut self, port: usize) {
        let Some(slot) = self.ports.get_mut(port) else { return };
        emit(&mut self.console, &mut self.open, port, &slot.tag, &slot.line);
        slot.line.clear();
    }

    /// Sends every port's partial line now.
    pub fn flush_all(&mut self) {
        for port in 0..PORTS {
            self.flush(port);
        }
    }

    /// A line of the host's own (not a VM's), untagged; an open line of a port is closed first.
    pub fn notice(&mut self, text: &str) {
        self.close_line();
        self.console.write_bytes(text.as_bytes());
        self.console.write_byte(b'\n');
    }

    /// Takes what the physical console has ready (at most [`POLL_MAX`] bytes) and routes it: escape sequences
    /// are acted on, everything else goes to the focused port.
    pub fn poll_input(&mut self) {
        for _ in 0..POLL_MAX {
            let Some(byte) = self.console.read_byte() else { break };
            self.accept(byte);
        }
    }

    /// The next input byte for `port`, after polling the physical console; `None` when there is none.
    pub fn read(&mut self, port: usize) -> Option<u8> {
        self.poll_input();
        self.ports.get_mut(port)?.input.pop_front()
    }

    /// The host types `byte` into `port`, whatever the focus; false (dropped and counted) when its buffer is
    /// full or there is no such port.
    pub fn push_input(&mut self, port: usize, byte: u8) -> bool {
        let Some(slot) = self.ports.get_mut(port) else { return false };
        if slot.input.push_back(byte).is_ok() {
            true
        } else {
            slot.dropped = slot.dropped.saturating_add(1);
            false
        }
    }

    /// One byte typed at the physical console.
    fn accept(&mut self, byte: u8) {
        if self.escape {
            self.escape = false;
            match byte {
                ESCAPE => self.deliver(ESCAPE),
                b'c' => self.cycle_focus(),
                b'0'..=b'9' if self.set_focus(usize::from(byte - b'0')) => self.announce_focus(),
                b'h' | b'?' => self.help(),
                _ => {}
            }
        } else if byte == ESCAPE {
            self.escape = true;
        } else {
            self.deliver(byte);
        }
    }

    /// Gives `byte` to the focused port.
    fn deliver(&mut self, byte: u8) {
        let focus = self.focus;
        if self.ports.get(focus).is_some_and(|slot| slot.attached) {
            self.push_input(focus, byte);
        } else {
            self.unrouted = self.unrouted.saturating_add(1);
        }
    }

    /// The next attached port after the focused one (wrapping, so the focused one itself comes last).
    fn next_attached(&self) -> Option<usize> {
        (1..=PORTS)
            .map(|step| (self.focus + step) % PORTS)
            .find(|&port| self.ports.get(port).is_some_and(|slot| slot.attached))
    }

    /// `Ctrl-A c`: focuses the next attached port and says so; stays when none is attached.
    fn cycle_focus(&mut self) {
        if let Some(port) = self.next_attached() {
            self.focus = port;
            self.announce_focus();
        }
    }

    fn announce_focus(&mut self) {
        self.close_line();
        self.console.write_bytes(b"console: input to ");
        if let Some(slot) = self.ports.get(self.focus) {
            let tag = slot.tag.as_slice();
            // The tag without its trailing space.
            let end = tag.iter().rposition(|&byte| byte != b' ').map_or(0, |last| last + 1);
            self.console.write_bytes(tag.get(..end).unwrap_or_default());
        }
        self.console.write_byte(b'\n');
    }

    fn help(&mut self) {
        self.notice("console: C-a c  next VM | C-a 0..9  VM n | C-a C-a  send C-a | C-a h  this help");
    }

    /// Ends an open port line with a newline, so the next output starts a line of its own.
    fn close_line(&mut self) {
        if self.open.take().is_some() {
            self.console.write_byte(b'\n');
        }
    }
}

/// Writes `bytes` of `port` to the console: continuing `port`'s open line, or closing another port's open line
/// and starting a new one with `tag`. Leaves `open` at `port` unless `bytes` ends the line.
fn emit<S: SerialBackend>(console: &mut S, open: &mut Option<usize>, port: usize, tag: &[u8], bytes: &[u8]) {
    let Some(&last) = bytes.last() else { return };
    if *open != Some(port) {
        if open.is_some() {
            console.write_byte(b'\n');
        }
        console.write_bytes(tag);
    }
    console.write_bytes(bytes);
    *open = (last != b'\n').then_some(port);
}

/// Port `port` of a [`ConsoleMux`] shared through a [`RefCell`]: the serial backend of one VM's UART.
///
/// A call that finds the multiplexer already borrowed (re-entry; VMs run in turns, so it does not happen in
/// normal use) drops its output byte or answers no input, rather than panic.
pub struct MuxPort<'m, S, const PORTS: usize, const INPUT: usize = 4096, const LINE: usize = 256> {
    mux: &'m RefCell<ConsoleMux<S, PORTS, INPUT, LINE>>,
    port: usize,
}

impl<'m, S, const PORTS: usize, const INPUT: usize, const LINE: usize> MuxPort<'m, S, PORTS, INPUT, LINE> {
    /// Port `port` of `mux`.
    pub fn new(mux: &'m RefCell<ConsoleMux<S, PORTS, INPUT, LINE>>, port: usize) -> Self {
        Self { mux, port }
    }

    /// The port's number.
    pub fn index(&self) -> usize {
        self.port
    }

    /// The multiplexer.
    pub fn mux(&self) -> &'m RefCell<ConsoleMux<S, PORTS, INPUT, LINE>> {
        self.mux
    }
}

impl<S: SerialBackend, const PORTS: usize, const INPUT: usize, const LINE: usize> SerialBackend
    for MuxPort<'_, S, PORTS, INPUT, LINE>
{
    fn write_byte(&mut self, byte: u8) {
        if let Ok(mut mux) = self.mux.try_borrow_mut() {
            mux.write(self.port, byte);
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        self.mux.try_borrow_mut().ok()?.read(self.port)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> usize {
        match self.mux.try_borrow_mut() {
            Ok(mut mux) => {
                mux.write_bytes(self.port, bytes);
                bytes.len()
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests;
