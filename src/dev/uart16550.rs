//! An NS16550A UART as QEMU's `virt` machine has it at 0x1000_0000: byte-spaced registers (reg-shift 0), a
//! 16-byte receive FIFO, the divisor latch, interrupt identification, loopback.
//!
//! The guest controls every register value and access; the model never panics on one, never blocks, and never
//! buffers more than its fixed FIFO. Transmission is instantaneous: a byte written to THR goes straight to the
//! [`SerialBackend`], so THR and the transmitter are always empty (LSR.THRE and LSR.TEMT always read 1).
//!
//! Access widths: a 1-byte access is the norm. As QEMU does, a 2- or 4-byte access is accepted and acts on the
//! single register at its offset (writes use the low byte, reads are zero-extended), provided it is naturally
//! aligned. 8-byte accesses, other widths, misaligned multi-byte accesses and offsets past the eight registers
//! are refused with [`MmioError::Unsupported`] (QEMU would alias the eight registers across its 0x100 window).
//!
//! Input: bytes come from the backend only when the FIFO has room, when the guest reads RBR, IIR or LSR, or when
//! the host calls [`Uart16550::poll_input`] (do that periodically so [`Uart16550::interrupt_pending`] can rise
//! for a guest that waits for the interrupt). Polling never overruns the FIFO: the backend keeps what does not
//! fit. [`Uart16550::receive_byte`] pushes a byte as a wire would, with the 16550's overrun behaviour.
//!
//! Receive timeout: a real 16550 in FIFO mode raises the character-timeout interrupt when data sits below the
//! trigger level for four character times. There is no line timing here, so that timeout counts as already
//! elapsed: any data below the trigger level reports the timeout interrupt (IIR 0xCC) at once.
//!
//! # Interrupt line
//!
//! The line is driven as QEMU's `serial` drives it, because guests written for QEMU depend on when it is
//! raised: the interrupt condition (the IIR identification) is re-evaluated, and the line raised or lowered
//! ([`IrqLine`]), at exactly the events where QEMU re-evaluates it: bytes arriving, a THR write (the condition
//! is dropped, then raised again when the byte has gone), an RBR read, an IIR read that identifies THR-empty
//! (which clears it), an LSR read that clears an error, an MSR read that clears a delta, an IER write that
//! changes IER (enabling THR-empty while THR is empty raises it at once, even if an IIR read had cleared it),
//! every FCR write (clearing the transmit FIFO makes THR empty again), and reset. The PLIC latches each raise as
//! a request ([`Plic::signal`](super::plic::Plic::signal)); a condition that merely stands (THR-empty that no
//! IIR read cleared) asserts no new request, so a handler that never reads IIR gets one interrupt per event, or
//! two when its RBR read raises the standing condition once more (exactly as on QEMU), not an endless stream. Delta bits the loopback MCR sets re-evaluate the line too when the modem status
//! interrupt is enabled, as they would on the chip (QEMU sets none).

use heapless::Deque;

use super::{IrqLine, IrqTrigger, MmioDevice, MmioError, SerialBackend};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Guest real address of the UART on the QEMU `virt` machine.
pub const BASE: u64 = super::slots::UART0.base;
/// Size of the UART's MMIO window on the QEMU `virt` machine (only the first eight bytes decode).
pub const SIZE: u64 = super::slots::UART0.size;
/// PLIC interrupt source of the UART on the QEMU `virt` machine.
pub const IRQ: u32 = super::slots::UART0.irq_or_zero();
/// Depth of the receive FIFO.
pub const FIFO_DEPTH: usize = 16;

// Register offsets (DLAB = 0 unless noted).
const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

// IER bits.
const IER_ERBFI: u8 = 0x01; // received data available
const IER_ETBEI: u8 = 0x02; // THR empty
const IER_ELSI: u8 = 0x04; // receiver line status
const IER_EDSSI: u8 = 0x08; // modem status
const IER_MASK: u8 = 0x0f;

// IIR values.
const IIR_NO_INT: u8 = 0x01;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_CTI: u8 = 0x0c;
const IIR_FIFO_ENABLED: u8 = 0xc0;

// FCR bits.
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
const FCR_CLEAR_TX: u8 = 0x04;
const FCR_DMA_MODE: u8 = 0x08;
const FCR_TRIGGER: u8 = 0xc0;

// LCR bits.
const LCR_DLAB: u8 = 0x80;

// MCR bits.
const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1f;

// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_ERRORS: u8 = 0x1e; // OE | PE | FE | BI
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const LSR_RX_FIFO_ERROR: u8 = 0x80;

// MSR bits.
const MSR_TERI: u8 = 0x04;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
const MSR_DELTAS: u8 = 0x0f;

/// The NS16550A model. `B` is the host end of the serial line, `I` its interrupt output.
pub struct Uart16550<B, I = IrqLine> {
    backend: B,
    rx: Deque<u8, FIFO_DEPTH>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    fcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    /// LSR error bits (OE, PE, FE, BI) latched until the guest reads LSR.
    lsr_errors: u8,
    /// MSR delta bits latched until the guest reads MSR.
    msr_deltas: u8,
    /// THR-empty interrupt condition: set when THR empties, when ETBEI is enabled (THR is always empty) or the
    /// transmit FIFO is cleared; cleared by reading IIR while it is the identified interrupt, by a THR write
    /// (until the byte has gone) or by disabling ETBEI.
    thr_ipending: bool,
    /// The interrupt output, raised or lowered at each re-evaluation of the condition.
    line: I,
}

impl<B: SerialBackend> Uart16550<B> {
    /// A UART in its reset state, attached to `backend`, its interrupt output an [`IrqLine`] for the bus.
    pub fn new(backend: B) -> Self {
        Self::with_trigger(backend, IrqLine::default())
    }

    /// The last raise (`Some(true)`) or lower (`Some(false)`) of the interrupt output since the previous call,
    /// to forward to the PLIC's [`signal`](super::plic::Plic::signal) after each access and input event.
    pub fn take_irq_update(&mut self) -> Option<bool> {
        self.line.take_update()
    }
}

impl<B: SerialBackend, I: IrqTrigger> Uart16550<B, I> {
    /// A UART in its reset state, attached to `backend`, raising its interrupt through `line`.
    pub fn with_trigger(backend: B, line: I) -> Self {
        Self {
            backend,
            rx: Deque::new(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            fcr: 0,
            scr: 0,
            dll: 0,
            dlm: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            thr_ipending: false,
            line,
        }
    }

    /// Returns every register to its reset value and empties the FIFO; the backend is kept.
    pub fn reset(&mut self) {
        self.rx.clear();
        self.ier = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.fcr = 0;
        self.scr = 0;
        self.dll = 0;
        self.dlm = 0;
        self.lsr_errors = 0;
        self.msr_deltas = 0;
        self.thr_ipending = false;
        self.update_irq();
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, e.g. to flush its output.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The divisor latch value (DLM:DLL) the guest programmed; informational only, no line timing is modelled.
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }

    /// Whether the UART's interrupt condition stands (the level of its output). Does not poll the backend: call
    /// [`poll_input`](Self::poll_input) first to see host input that arrived since the last guest access.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_id() != IIR_NO_INT
    }

    /// The interrupt output.
    pub fn trigger(&self) -> &I {
        &self.line
    }

    /// Re-evaluates the interrupt condition and raises or lowers the line, as QEMU's `serial_update_irq`.
    fn update_irq(&mut self) {
        let level = self.interrupt_pending();
        self.line.set(level);
    }

    /// Moves bytes from the backend into the receive FIFO while it has room. In loopback mode the receiver is
    /// disconnected from the line and nothing is read.
    pub fn poll_input(&mut self) {
        if self.mcr & MCR_LOOP != 0 {
            return;
        }
        let mut arrived = false;
        while self.rx.len() < self.rx_capacity() {
            match self.backend.read_byte() {
                Some(byte) => {
                    // Cannot fail: there is room.
                    let _ = self.rx.push_back(byte);
                    arrived = true;
                }
                None => break,
            }
        }
        if arrived {
            self.update_irq();
        }
    }

    /// A byte arrives on the line, as from a host that pushes input. Returns `false` on an overrun: LSR.OE is
    /// set and, in FIFO mode, the new byte is lost (the FIFO keeps its contents); in 16450 (non-FIFO) mode the
    /// unread byte in RBR is overwritten by the new one, as on the chip.
    pub fn receive_byte(&mut self, byte: u8) -> bool {
        let stored = if self.rx.len() < self.rx_capacity() {
            let _ = self.rx.push_back(byte);
            true
        } else {
            self.lsr_errors |= LSR_OE;
            if !self.fifo_enabled() {
                self.rx.clear();
                let _ = self.rx.push_back(byte);
            }
            false
        };
        self.update_irq();
        stored
    }

    /// Takes the next received byte without a register access (for a console that bypasses the UART, such as
    /// the VMM's own SBI console): from the FIFO, else straight from the backend.
    pub fn take_received(&mut self) -> Option<u8> {
        if self.rx.is_empty() {
            self.poll_input();
        }
        let byte = self.rx.pop_front();
        if byte.is_some() {
            self.update_irq();
        }
        self.poll_input();
        byte
    }

    /// Number of bytes waiting in the receive FIFO.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_DEPTH
        } else {
            1
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn rx_trigger_level(&self) -> usize {
        match (self.fcr & FCR_TRIGGER) >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    fn lsr(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT | self.lsr_errors;
        if !self.rx.is_empty() {
            lsr |= LSR_DR;
        }
        // Bit 7 reports a parity/framing/break error in the FIFO; no such errors are generated, so it stays 0
        // (an overrun is not a FIFO error).
        lsr & !LSR_RX_FIFO_ERROR
    }

    /// Modem status lines: in loopback they follow MCR (CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2); otherwise
    /// carrier, data-set-ready and clear-to-send are up, as QEMU reports them.
    fn msr_lines(&self, mcr: u8) -> u8 {
        if mcr & MCR_LOOP != 0 {
            let mut lines = 0;
            if mcr & MCR_RTS != 0 {
                lines |= MSR_CTS;
            }
            if mcr & MCR_DTR != 0 {
                lines |= MSR_DSR;
            }
            if mcr & MCR_OUT1 != 0 {
                lines |= MSR_RI;
            }
            if mcr & MCR_OUT2 != 0 {
                lines |= MSR_DCD;
            }
            lines
        } else {
            MSR_DCD | MSR_DSR | MSR_CTS
        }
    }

    /// The identification of the highest-priority pending interrupt (IIR bits 3:0).
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_ELSI != 0 && self.lsr_errors & LSR_ERRORS != 0 {
            return IIR_RLSI;
        }
        if self.ier & IER_ERBFI != 0 && !self.rx.is_empty() {
            return if !self.fifo_enabled() || self.rx.len() >= self.rx_trigger_level() { IIR_RDI } else { IIR_CTI };
        }
        if self.ier & IER_ETBEI != 0 && self.thr_ipending {
            return IIR_THRI;
        }
        if self.ier & IER_EDSSI != 0 && self.msr_deltas != 0 {
            return IIR_MSI;
        }
        IIR_NO_INT
    }

    fn read_iir(&mut self) -> u8 {
        self.poll_input();
        let id = self.interrupt_id();
        if id == IIR_THRI {
            // Reading IIR while THRE is the source clears it.
            self.thr_ipending = false;
            self.update_irq();
        }
        let fifo = if self.fifo_enabled() { IIR_FIFO_ENABLED } else { 0 };
        id | fifo
    }

    fn transmit(&mut self, byte: u8) {
        // THR is full until the byte has gone: the THR-empty condition drops, then rises again at once.
        self.thr_ipending = false;
        self.update_irq();
        self.thr_ipending = true;
        self.update_irq();
        if self.mcr & MCR_LOOP != 0 {
            self.receive_byte(byte);
        } else {
            self.backend.write_byte(byte);
        }
    }

    fn write_ier(&mut self, value: u8) {
        let new = value & IER_MASK;
        let changed = self.ier ^ new;
        self.ier = new;
        if changed & IER_ETBEI != 0 {
            // Enabling the THRE interrupt while THR is empty raises it at once (drivers rely on this to kick
            // transmission); disabling it drops the pending condition.
            self.thr_ipending = new & IER_ETBEI != 0;
        }
        if changed != 0 {
            self.update_irq();
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let mut value = value;
        if (self.fcr ^ value) & FCR_ENABLE != 0 {
            // Entering or leaving FIFO mode empties both FIFOs.
            value |= FCR_CLEAR_RX | FCR_CLEAR_TX;
        }
        // The FIFO resets act whatever FCR0 is, as in QEMU.
        if value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
        }
        if value & FCR_CLEAR_TX != 0 {
            // The transmit FIFO (which never holds anything here) is emptied: THR is empty, as an event.
            self.thr_ipending = true;
        }
        // The other FCR bits are only programmed while FCR0 is written as 1.
        self.fcr = if value & FCR_ENABLE != 0 { value & (FCR_ENABLE | FCR_DMA_MODE | FCR_TRIGGER) } else { 0 };
        self.update_irq();
    }

    fn write_mcr(&mut self, value: u8) {
        let new = value & MCR_MASK;
        let before = self.msr_lines(self.mcr);
        let after = self.msr_lines(new);
        self.mcr = new;
        let changed = before ^ after;
        // Delta bits: DCTS, DDSR, DDCD on any change; TERI on RI's trailing edge (1 -> 0).
        let mut deltas = (changed >> 4) & !MSR_TERI;
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            deltas |= MSR_TERI;
        }
        let deltas = deltas & MSR_DELTAS;
        self.msr_deltas |= deltas;
        // QEMU re-evaluates nothing on an MCR write (it has no loopback deltas). New deltas with the modem status
        // interrupt enabled are an event, as on the chip; otherwise the line is left alone, as in QEMU, so that
        // entering loopback does not raise a standing THR-empty condition once more.
        if deltas != 0 && self.ier & IER_EDSSI != 0 {
            self.update_irq();
        }
    }

    fn read_register(&mut self, reg: u64) -> u8 {
        match reg {
            RBR_THR_DLL if self.dlab() => self.dll,
            RBR_THR_DLL => {
                if self.rx.is_empty() {
                    self.poll_input();
                }
                let byte = self.rx.pop_front().unwrap_or(0);
                // Every RBR read re-evaluates the line, as QEMU's does: a condition still standing (THR-empty
                // that no IIR read cleared) is raised again.
                self.update_irq();
                self.poll_input();
                byte
            }
            IER_DLM if self.dlab() => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => self.read_iir(),
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                self.poll_input();
                let lsr = self.lsr();
                // Reading LSR clears the latched error bits.
                if self.lsr_errors != 0 {
                    self.lsr_errors = 0;
                    self.update_irq();
                }
                lsr
            }
            MSR => {
                let msr = self.msr_lines(self.mcr) | self.msr_deltas;
                if self.msr_deltas != 0 {
                    self.msr_deltas = 0;
                    self.update_irq();
                }
                msr
            }
            _ => self.scr,
        }
    }

    fn write_register(&mut self, reg: u64, value: u8) {
        match reg {
            RBR_THR_DLL if self.dlab() => self.dll = value,
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if self.dlab() => self.dlm = value,
            IER_DLM => self.write_ier(value),
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => self.write_mcr(value),
            // LSR and MSR are read-only (LSR writes are a factory-test feature); ignored as QEMU does.
            LSR | MSR => {}
            _ => self.scr = value,
        }
    }
}

/// Checks an access against the eight byte-spaced registers; `Some(register offset)` when it decodes.
fn decode(offset: u64, size: u8) -> Option<u64> {
    let size = match size {
        1 | 2 | 4 => u64::from(size),
        _ => return None,
    };
    if offset > SCR || !offset.is_multiple_of(size) {
        return None;
    }
    Some(offset)
}

impl<B: SerialBackend, I: IrqTrigger> MmioDevice for Uart16550<B, I> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let reg = decode(offset, size).ok_or(MmioError::Unsupported)?;
        Ok(u64::from(self.read_register(reg)))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        let reg = decode(offset, size).ok_or(MmioError::Unsupported)?;
        self.write_register(reg, value as u8);
        Ok(())
    }

    /// Host input is work from outside the guest: bytes the backend holds move into the FIFO, and arriving
    /// data raises the interrupt, without the guest touching the UART.
    fn poll(&mut self, _now: u64, _ram: &mut Ram) {
        self.poll_input();
    }

    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        self.save(out);
        Ok(())
    }

    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        self.load(input, mode)
    }
}

impl<B: SerialBackend, I: IrqTrigger> Uart16550<B, I> {
    /// Writes the registers, the receive FIFO and the interrupt state (the backend is the host's).
    fn save(&self, out: &mut Writer) {
        out.u32(self.rx.len() as u32);
        for &byte in &self.rx {
            out.u8(byte);
        }
        out.bytes(&[self.ier, self.lcr, self.mcr, self.fcr, self.scr, self.dll, self.dlm]);
        out.bytes(&[self.lsr_errors, self.msr_deltas]);
        out.bool(self.thr_ipending);
        self.line.save_state(out);
    }

    fn load(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let count = input.count(FIFO_DEPTH, "more received bytes than the FIFO holds")?;
        let mut rx = Deque::new();
        for &byte in input.bytes(count)? {
            // Cannot fail: `count` is at most the capacity.
            let _ = rx.push_back(byte);
        }
        let [ier, lcr, mcr, fcr, scr, dll, dlm] = input.array::<7>()?;
        let [lsr_errors, msr_deltas] = input.array::<2>()?;
        let thr_ipending = input.bool()?;
        let line = self.line.read_state(input)?;
        if ier & !IER_MASK != 0
            || mcr & !MCR_MASK != 0
            || lsr_errors & !LSR_ERRORS != 0
            || msr_deltas & !MSR_DELTAS != 0
        {
            return Err(input.invalid("UART register bits no write produces"));
        }
        if mode.apply() {
            self.rx = rx;
            (self.ier, self.lcr, self.mcr, self.fcr, self.scr, self.dll, self.dlm) =
                (ier, lcr, mcr, fcr, scr, dll, dlm);
            (self.lsr_errors, self.msr_deltas, self.thr_ipending, self.line) =
                (lsr_errors, msr_deltas, thr_ipending, line);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    #[derive(Default)]
    struct FakeSerial {
        out: Vec<u8>,
        input: VecDeque<u8>,
    }

    impl SerialBackend for FakeSerial {
        fn write_byte(&mut self, byte: u8) {
            self.out.push(byte);
        }
        fn read_byte(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
    }

    fn uart() -> Uart16550<FakeSerial> {
        Uart16550::new(FakeSerial::default())
    }

    /// An interrupt output of the host's own: counts raises and lowers, keeps nothing in a snapshot.
    #[derive(Default, Debug, PartialEq)]
    struct Counting {
        raises: u32,
        lowers: u32,
    }

    impl IrqTrigger for Counting {
        fn raise(&mut self) {
            self.raises += 1;
        }
        fn lower(&mut self) {
            self.lowers += 1;
        }
        fn save_state(&self, _out: &mut Writer) {}
        fn read_state(&self, _input: &mut Reader) -> Result<Self, SnapshotError> {
            Ok(Counting { raises: self.raises, lowers: self.lowers })
        }
    }

    /// The UART raises its interrupt only through the trigger it was built with, and host input reaches the
    /// guest through `poll`, no access needed.
    #[test]
    fn events_raise_through_the_trigger_given_and_poll_takes_host_input() {
        let mut u = Uart16550::with_trigger(FakeSerial::default(), Counting::default());
        u.write(IIR_FCR, 1, u64::from(FCR_ENABLE)).unwrap();
        u.write(IER_DLM, 1, u64::from(IER_ERBFI)).unwrap();
        assert_eq!(*u.trigger(), Counting { raises: 0, lowers: 2 }, "FCR and IER re-evaluate: nothing pending");
        u.backend_mut().input.extend(*b"in");
        let mut backing = [0u8; 8];
        u.poll(0, &mut Ram::new(0x8000_0000, &mut backing));
        assert_eq!(u.rx_len(), 2);
        assert_eq!(*u.trigger(), Counting { raises: 1, lowers: 2 }, "data arrived: one request");
        u.poll(1, &mut Ram::new(0x8000_0000, &mut backing));
        assert_eq!(u.trigger().raises, 1, "nothing new arrived: no request");
        assert_eq!(u.read(RBR_THR_DLL, 1), Ok(u64::from(b'i')));
        assert_eq!(u.read(RBR_THR_DLL, 1), Ok(u64::from(b'n')));
        assert_eq!(*u.trigger(), Counting { raises: 2, lowers: 3 }, "each RBR read re-evaluates the line");
        // A snapshot round trip keeps the host's trigger as it is.
        let mut buf = [0u8; 256];
        let mut out = Writer::new(&mut buf);
        u.save_state(&mut out).unwrap();
        let len = out.finish().unwrap();
        let mut other = Uart16550::with_trigger(FakeSerial::default(), Counting { raises: 9, lowers: 9 });
        other.load_state(&mut Reader::new(&buf[..len]), LoadMode::Apply).unwrap();
        assert_eq!(other.trigger().raises, 9);
        assert_eq!(other.read(IER_DLM, 1), Ok(u64::from(IER_ERBFI)));
    }

    fn rd(u: &mut Uart16550<FakeSerial>, reg: u64) -> u8 {
        u.read(reg, 1).expect("register decodes") as u8
    }

    fn wr(u: &mut Uart16550<FakeSerial>, reg: u64, value: u8) {
        u.write(reg, 1, u64::from(value)).expect("register decodes");
    }

    #[test]
    fn thr_writes_reach_the_backend() {
        let mut u = uart();
        for &b in b"hi\n" {
            wr(&mut u, 0, b);
        }
        assert_eq!(u.backend().out, b"hi\n");
        assert_eq!(rd(&mut u, 5) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn divisor_latch_shadows_rbr_thr_and_ier() {
        let mut u = uart();
        wr(&mut u, 1, 0x05); // IER
        wr(&mut u, 3, 0x83); // DLAB + 8N1
        wr(&mut u, 0, 0x01); // DLL
        wr(&mut u, 1, 0x02); // DLM
        assert!(u.backend().out.is_empty(), "a DLL write is not a transmission");
        assert_eq!(rd(&mut u, 0), 0x01);
        assert_eq!(rd(&mut u, 1), 0x02);
        assert_eq!(u.divisor(), 0x0201);
        wr(&mut u, 3, 0x03);
        assert_eq!(rd(&mut u, 1), 0x05, "IER is back once DLAB clears");
        assert_eq!(rd(&mut u, 3), 0x03);
        wr(&mut u, 0, b'x');
        assert_eq!(u.backend().out, b"x");
    }

    #[test]
    fn lsr_reports_data_ready_from_backend() {
        let mut u = uart();
        assert_eq!(rd(&mut u, 5), LSR_THRE | LSR_TEMT);
        u.backend_mut().input.extend(b"ab");
        assert_eq!(rd(&mut u, 5), LSR_THRE | LSR_TEMT | LSR_DR);
        assert_eq!(rd(&mut u, 0), b'a');
        assert_eq!(rd(&mut u, 5) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut u, 0), b'b');
        assert_eq!(rd(&mut u, 5) & LSR_DR, 0);
        assert_eq!(rd(&mut u, 0), 0, "an empty RBR reads 0");
    }

    #[test]
    fn fifo_keeps_order_and_polling_never_overruns() {
        let mut u = uart();
        wr(&mut u, 2, FCR_ENABLE);
        u.backend_mut().input.extend(0..40u8);
        u.poll_input();
        assert_eq!(u.rx_len(), FIFO_DEPTH);
        assert_eq!(u.backend().input.len(), 40 - FIFO_DEPTH, "the backend keeps what does not fit");
        let got: Vec<u8> = (0..40).map(|_| rd(&mut u, 0)).collect();
        assert_eq!(got, (0..40u8).collect::<Vec<_>>());
        assert_eq!(rd(&mut u, 5) & (LSR_DR | LSR_OE), 0);
    }

    #[test]
    fn fifo_overrun_drops_the_new_byte_and_latches_oe() {
        let mut u = uart();
        wr(&mut u, 2, FCR_ENABLE);
        for b in 0..FIFO_DEPTH as u8 {
            assert!(u.receive_byte(b));
        }
        assert!(!u.receive_byte(0xee));
        let lsr = rd(&mut u, 5);
        assert_eq!(lsr & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(rd(&mut u, 5) & LSR_OE, 0, "reading LSR clears OE");
        let got: Vec<u8> = (0..FIFO_DEPTH).map(|_| rd(&mut u, 0)).collect();
        assert_eq!(got, (0..FIFO_DEPTH as u8).collect::<Vec<_>>());
        assert_eq!(rd(&mut u, 5) & LSR_DR, 0);
    }

    #[test]
    fn non_fifo_mode_holds_one_byte_and_overwrites_on_overrun() {
        let mut u = uart();
        assert!(u.receive_byte(1));
        assert!(!u.receive_byte(2));
        assert_eq!(rd(&mut u, 5) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(rd(&mut u, 0), 2);
        u.backend_mut().input.extend([7, 8]);
        u.poll_input();
        assert_eq!(u.rx_len(), 1);
        assert_eq!(rd(&mut u, 0), 7);
        assert_eq!(rd(&mut u, 0), 8);
    }

    #[test]
    fn fcr_resets_and_mode_changes_empty_the_fifo() {
        let mut u = uart();
        wr(&mut u, 2, FCR_ENABLE);
        u.receive_byte(1);
        u.receive_byte(2);
        wr(&mut u, 2, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.rx_len(), 0);
        assert_eq!(rd(&mut u, 5) & LSR_DR, 0);
        u.receive_byte(3);
        wr(&mut u, 2, 0);
        assert_eq!(u.rx_len(), 0, "leaving FIFO mode empties the FIFO");
        assert_eq!(rd(&mut u, 2) & IIR_FIFO_ENABLED, 0);
    }

    #[test]
    fn iir_identifies_receive_and_thr_empty_interrupts() {
        let mut u = uart();
        assert_eq!(rd(&mut u, 2), IIR_NO_INT);
        assert!(!u.interrupt_pending());

        // Enabling ETBEI with THR empty raises THRE at once; reading IIR clears it.
        wr(&mut u, 1, IER_ETBEI);
        assert!(u.interrupt_pending());
        assert_eq!(rd(&mut u, 2), IIR_THRI);
        assert_eq!(rd(&mut u, 2), IIR_NO_INT);
        assert!(!u.interrupt_pending());
        // Each transmitted byte empties THR again.
        wr(&mut u, 0, b'a');
        assert_eq!(rd(&mut u, 2), IIR_THRI);

        // Received data outranks THRE.
        wr(&mut u, 1, IER_ERBFI | IER_ETBEI);
        wr(&mut u, 0, b'b');
        u.backend_mut().input.push_back(b'z');
        u.poll_input();
        assert!(u.interrupt_pending());
        assert_eq!(rd(&mut u, 2), IIR_RDI);
        assert_eq!(rd(&mut u, 0), b'z');
        assert_eq!(rd(&mut u, 2), IIR_THRI);

        // Disabling ETBEI drops the THRE condition.
        wr(&mut u, 0, b'c');
        wr(&mut u, 1, IER_ERBFI);
        assert_eq!(rd(&mut u, 2), IIR_NO_INT);
    }

    #[test]
    fn iir_in_fifo_mode_reports_trigger_level_and_timeout() {
        let mut u = uart();
        wr(&mut u, 2, FCR_ENABLE | 0x80); // trigger level 8
        wr(&mut u, 1, IER_ERBFI);
        assert_eq!(rd(&mut u, 2), IIR_FIFO_ENABLED | IIR_NO_INT);
        u.receive_byte(1);
        assert_eq!(rd(&mut u, 2), IIR_FIFO_ENABLED | IIR_CTI, "below the trigger level: timeout");
        for b in 2..=8 {
            u.receive_byte(b);
        }
        assert_eq!(rd(&mut u, 2), IIR_FIFO_ENABLED | IIR_RDI);
    }

    /// The line is raised or lowered exactly where QEMU's `serial` re-evaluates it, and nowhere else.
    #[test]
    fn the_line_is_reevaluated_at_qemus_events_only() {
        let mut u = uart();
        assert_eq!(u.take_irq_update(), None);
        wr(&mut u, 1, IER_ERBFI | IER_ETBEI);
        assert_eq!(u.take_irq_update(), Some(true), "enabling ETBEI with THR empty");
        wr(&mut u, 1, IER_ERBFI | IER_ETBEI);
        assert_eq!(u.take_irq_update(), None, "an IER write that changes nothing");
        for reg in [1, 3, 4, 5, 6, 7] {
            rd(&mut u, reg);
        }
        wr(&mut u, 3, 0x03);
        wr(&mut u, 7, 0x55);
        assert_eq!(u.take_irq_update(), None, "IER/LCR/MCR/LSR/MSR/SCR reads and LCR/SCR writes change nothing");
        assert!(u.interrupt_pending(), "THR-empty still stands");
        rd(&mut u, 0);
        assert_eq!(u.take_irq_update(), Some(true), "an RBR read raises a standing condition again");
        assert_eq!(rd(&mut u, 2), IIR_THRI);
        assert_eq!(u.take_irq_update(), Some(false), "the IIR read cleared THR-empty");
        assert_eq!(rd(&mut u, 2), IIR_NO_INT);
        assert_eq!(u.take_irq_update(), None);
        wr(&mut u, 0, b'a');
        assert_eq!(u.take_irq_update(), Some(true), "THR emptied again");
        rd(&mut u, 2);
        u.backend_mut().input.push_back(b'z');
        u.poll_input();
        assert_eq!(u.take_irq_update(), Some(true), "data arrived");
        u.poll_input();
        assert_eq!(u.take_irq_update(), None, "nothing arrived");
        rd(&mut u, 0);
        assert_eq!(u.take_irq_update(), Some(false), "the RBR read emptied the FIFO");
        wr(&mut u, 2, FCR_ENABLE);
        assert_eq!(u.take_irq_update(), Some(true), "entering FIFO mode clears the transmit FIFO: THR empty");
        rd(&mut u, 2);
        wr(&mut u, 2, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.take_irq_update(), Some(false), "every FCR write re-evaluates");
        // Overrun: raised (RLSI, with ELSI), and the LSR read that clears it re-evaluates.
        wr(&mut u, 1, IER_ELSI);
        u.take_irq_update();
        for byte in 0..=FIFO_DEPTH as u8 {
            u.receive_byte(byte);
        }
        assert_eq!(u.take_irq_update(), Some(true));
        rd(&mut u, 5);
        assert_eq!(u.take_irq_update(), Some(false), "the LSR read cleared the overrun");
        rd(&mut u, 5);
        assert_eq!(u.take_irq_update(), None);
        u.reset();
        assert_eq!(u.take_irq_update(), Some(false));
    }

    #[test]
    fn line_status_interrupt_has_top_priority() {
        let mut u = uart();
        wr(&mut u, 1, IER_ERBFI | IER_ETBEI | IER_ELSI);
        u.receive_byte(1);
        u.receive_byte(2); // overrun in non-FIFO mode
        assert_eq!(rd(&mut u, 2), IIR_RLSI);
        rd(&mut u, 5);
        assert_eq!(rd(&mut u, 2), IIR_RDI);
    }

    #[test]
    fn loopback_routes_thr_to_rbr_and_mcr_to_msr() {
        let mut u = uart();
        assert_eq!(rd(&mut u, 6), MSR_DCD | MSR_DSR | MSR_CTS);
        u.backend_mut().input.push_back(b'q');
        wr(&mut u, 4, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        let msr = rd(&mut u, 6);
        assert_eq!(msr & 0xf0, MSR_DCD | MSR_CTS);
        assert_eq!(msr & MSR_DELTAS, 0x02, "DSR dropped: DDSR is latched");
        assert_eq!(rd(&mut u, 6) & MSR_DELTAS, 0, "reading MSR clears the deltas");
        wr(&mut u, 0, 0x5a);
        assert!(u.backend().out.is_empty(), "loopback keeps the byte off the line");
        assert_eq!(rd(&mut u, 0), 0x5a);
        assert_eq!(rd(&mut u, 5) & LSR_DR, 0, "the line input is not read in loopback");
        wr(&mut u, 4, 0);
        assert_eq!(rd(&mut u, 0), b'q');
    }

    #[test]
    fn scratch_register_and_read_only_registers() {
        let mut u = uart();
        wr(&mut u, 7, 0xa5);
        assert_eq!(rd(&mut u, 7), 0xa5);
        wr(&mut u, 5, 0xff);
        wr(&mut u, 6, 0xff);
        assert_eq!(rd(&mut u, 5), LSR_THRE | LSR_TEMT);
        wr(&mut u, 4, 0xff);
        assert_eq!(rd(&mut u, 4), MCR_MASK);
    }

    #[test]
    fn undecoded_accesses_are_refused() {
        let mut u = uart();
        assert_eq!(u.read(0, 8), Err(MmioError::Unsupported));
        assert_eq!(u.write(0, 8, 0), Err(MmioError::Unsupported));
        assert_eq!(u.read(8, 1), Err(MmioError::Unsupported));
        assert_eq!(u.read(0xff, 1), Err(MmioError::Unsupported));
        assert_eq!(u.read(u64::MAX, 1), Err(MmioError::Unsupported));
        assert_eq!(u.read(1, 2), Err(MmioError::Unsupported));
        assert_eq!(u.read(2, 4), Err(MmioError::Unsupported));
        assert_eq!(u.read(0, 3), Err(MmioError::Unsupported));
        assert_eq!(u.read(0, 0), Err(MmioError::Unsupported));
        // Aligned 2- and 4-byte accesses act on the register at that offset.
        u.write(4, 4, 0xffff_ff07).expect("aligned word access decodes");
        assert_eq!(u.read(4, 4), Ok(0x07));
        u.write(0, 2, 0x1234).expect("aligned halfword access decodes");
        assert_eq!(u.backend().out, [0x34]);
        assert!(u.backend().out.len() == 1);
    }

    #[test]
    fn arbitrary_accesses_never_panic() {
        let mut u = uart();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = x % 12;
            let size = [1u8, 2, 4, 8, 3][(x >> 8) as usize % 5];
            if x & (1 << 20) != 0 {
                let _ = u.write(offset, size, x >> 24);
            } else {
                let _ = u.read(offset, size);
            }
            if x & (1 << 21) != 0 {
                u.receive_byte(x as u8);
            }
            assert!(u.rx_len() <= FIFO_DEPTH);
        }
    }
}
