//! The SiFive PLIC (platform-level interrupt controller) QEMU's `virt` machine has at 0xc00_0000: it gathers
//! the interrupt lines of the platform's devices and offers them, by priority, to each hart context (hart `h`
//! M-mode is context `2*h`, S-mode `2*h + 1`) through claim/complete.
//!
//! The guest controls every offset, width and value, and the VMM passes source and context numbers; the model
//! never trusts one to index its arrays and never panics on one: a source or context the machine does not have
//! is ignored (reads 0, writes dropped, queries answer "nothing pending").
//!
//! # Model
//!
//! Per the RISC-V PLIC specification, with QEMU's `sifive_plic` as the reference where the spec leaves room:
//! - **Gateway**: a source's request is *latched* when its device raises the line for an event, and cleared by
//!   the claim that takes the source into service; a completion ends service and requests nothing by itself.
//!   A line that merely stays high does not request again after completion: only a new event does. This is
//!   what QEMU does (its devices call `qemu_irq_raise` on every event and the PLIC sets the pending bit each
//!   time), and guests written for QEMU depend on it: an interrupt handler that leaves a condition standing
//!   (a UART handler that never reads IIR leaves THR-empty asserted) gets one interrupt per event there, while
//!   re-pending a high line at every completion, as a level-triggered gateway would, livelocks it in its trap
//!   handler. A request raised while the source is in service stays pending and is offered after the
//!   completion. As in QEMU, a line lowered before the claim withdraws the request, so a guest never claims an
//!   interrupt its device no longer asserts. Devices report events through [`Plic::signal`] (each raise is a
//!   request, fed from a device's [`IrqLine`](super::IrqLine)); a device that can only report its line's level
//!   uses [`Plic::set_level`], where a rising edge is the request.
//! - **Claim** (read of a context's claim/complete register): the pending source enabled for the context with
//!   the highest priority above the context's threshold, ties going to the lowest id; 0 when there is none.
//! - **Complete** (write of an id to that register): ends the source's service, unless the id is not enabled
//!   for the context, in which case the spec says the completion is silently ignored (QEMU completes it
//!   anyway). Ids 0 and past the last source are ignored too.
//! - Priorities and thresholds are WARL with 3 bits (as QEMU's `virt`: 7 levels), so a write keeps `value & 7`;
//!   priority 0 means "never interrupt", and source 0 does not exist (its priority and enable bit read 0).
//!
//! # Registers
//!
//! Only naturally aligned 32-bit accesses decode (QEMU: `min_access_size = max_access_size = 4`); other
//! widths, misaligned accesses and offsets past the spec's layout (0x400_0000) are refused with
//! [`MmioError::Unsupported`]. Inside the layout, registers of sources or contexts the machine does not have,
//! and reserved offsets, read 0 and ignore writes, as in QEMU. The pending array is read-only.
//!
//! | offset | register |
//! |---|---|
//! | `0x0 + 4*id` | priority of source `id` |
//! | `0x1000 + 4*w` | pending bits of sources `32*w ..= 32*w + 31` |
//! | `0x2000 + 0x80*ctx + 4*w` | enable bits of sources `32*w ..= 32*w + 31` for context `ctx` |
//! | `0x20_0000 + 0x1000*ctx` | priority threshold of context `ctx` |
//! | `0x20_0004 + 0x1000*ctx` | claim (read) / complete (write) of context `ctx` |
//!
//! # VMM contract
//!
//! After each guest access to a device and each event outside the guest (input arriving, a slice ending),
//! forward what the device did to its line: `if let Some(level) = uart.take_irq_update() { plic.signal(
//! uart16550::IRQ, level) }` (or [`Plic::set_level`] with its level, for a device that only has one). Then,
//! and after every guest access to the PLIC, set each hart's external interrupt bits from
//! [`Plic::context_pending`]: `mip.MEIP` (bit 11) of hart `h` from context [`m_context(h)`](m_context),
//! `mip.SEIP` (bit 9) from context [`s_context(h)`](s_context).

use super::{MmioDevice, MmioError};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// Guest real address of the PLIC on the QEMU `virt` machine.
pub const BASE: u64 = super::slots::PLIC.base;
/// Size of the PLIC's MMIO window on the QEMU `virt` machine.
pub const SIZE: u64 = super::slots::PLIC.size;
/// Interrupt sources of the QEMU `virt` PLIC, counting the reserved source 0 (ids 1..=95 exist).
pub const VIRT_SOURCES: usize = 96;

/// The most sources the register layout has room for, counting source 0.
pub const MAX_SOURCES: usize = 1024;
/// The most contexts the register layout has room for.
pub const MAX_CONTEXTS: usize = 15872;
/// The bits of a priority or threshold that exist (WARL): QEMU's `virt` has 7 priority levels.
pub const PRIORITY_MASK: u32 = 7;

/// Offset of the priority array (source 0's slot is reserved).
pub const PRIORITY_BASE: u64 = 0x0;
/// Offset of the pending bit array.
pub const PENDING_BASE: u64 = 0x1000;
/// Offset of context 0's enable bit array.
pub const ENABLE_BASE: u64 = 0x2000;
/// Distance between two contexts' enable bit arrays.
pub const ENABLE_STRIDE: u64 = 0x80;
/// Offset of context 0's threshold register; its claim/complete register follows at `+ 4`.
pub const CONTEXT_BASE: u64 = 0x20_0000;
/// Distance between two contexts' threshold registers.
pub const CONTEXT_STRIDE: u64 = 0x1000;
/// End of the register layout.
const LAYOUT_END: u64 = CONTEXT_BASE + CONTEXT_STRIDE * MAX_CONTEXTS as u64;

/// 32-bit words of a bit array over [`MAX_SOURCES`] sources.
const WORDS: usize = MAX_SOURCES / 32;

/// The context through which hart `hart`'s M-mode takes external interrupts (drives `mip.MEIP`).
pub const fn m_context(hart: usize) -> usize {
    2 * hart
}

/// The context through which hart `hart`'s S-mode takes external interrupts (drives `mip.SEIP`).
pub const fn s_context(hart: usize) -> usize {
    2 * hart + 1
}

/// A PLIC with `SOURCES` sources counting the reserved source 0 (at most [`MAX_SOURCES`]) and `CONTEXTS`
/// contexts (at most [`MAX_CONTEXTS`]). QEMU's `virt` with `n` harts is `Plic<VIRT_SOURCES, { 2 * n }>`.
#[derive(Debug, Clone)]
pub struct Plic<const SOURCES: usize, const CONTEXTS: usize> {
    priority: [u8; SOURCES],
    /// The interrupt lines, as [`Plic::set_level`] or [`Plic::signal`] last set them.
    level: [u32; WORDS],
    /// Latched requests: set by a device's event, cleared by a claim or by the line going low.
    pending: [u32; WORDS],
    /// Sources claimed and not yet completed.
    in_service: [u32; WORDS],
    enable: [[u32; WORDS]; CONTEXTS],
    threshold: [u8; CONTEXTS],
}

impl<const SOURCES: usize, const CONTEXTS: usize> Default for Plic<SOURCES, CONTEXTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits a source id into its bit array word and bit mask, if the source exists (id 0 does not).
fn bit<const SOURCES: usize>(source: u32) -> Option<(usize, u32)> {
    let id = usize::try_from(source).ok()?;
    (id != 0 && id < SOURCES).then_some((id / 32, 1 << (id % 32)))
}

impl<const SOURCES: usize, const CONTEXTS: usize> Plic<SOURCES, CONTEXTS> {
    /// Words of the bit arrays that hold existing sources.
    const USED_WORDS: usize = SOURCES.div_ceil(32);

    /// A PLIC after reset: every line low, priority, enable and threshold 0, nothing in service.
    pub fn new() -> Self {
        const {
            assert!(SOURCES <= MAX_SOURCES, "the PLIC layout has room for at most 1024 sources");
            assert!(CONTEXTS <= MAX_CONTEXTS, "the PLIC layout has room for at most 15872 contexts");
        };
        Self {
            priority: [0; SOURCES],
            level: [0; WORDS],
            pending: [0; WORDS],
            in_service: [0; WORDS],
            enable: [[0; WORDS]; CONTEXTS],
            threshold: [0; CONTEXTS],
        }
    }

    /// The bits of word `word` that stand for existing sources (not source 0, not past `SOURCES`).
    fn valid_mask(word: usize) -> u32 {
        let first = word.saturating_mul(32);
        let mut mask = match SOURCES.saturating_sub(first) {
            0 => 0,
            n if n >= 32 => u32::MAX,
            n => (1u32 << n) - 1,
        };
        if word == 0 {
            mask &= !1;
        }
        mask
    }

    /// The device behind `source` raised its line for an event (`level` true: a request, latched even if the
    /// line was already high) or lowered it (the request is withdrawn), as QEMU's devices call `qemu_set_irq`.
    /// A source the machine does not have (including 0) is ignored.
    pub fn signal(&mut self, source: u32, level: bool) {
        if let Some((word, mask)) = bit::<SOURCES>(source) {
            if level {
                self.level[word] |= mask;
                self.pending[word] |= mask;
            } else {
                self.level[word] &= !mask;
                self.pending[word] &= !mask;
            }
        }
    }

    /// Sets the interrupt line of `source` to `level`, for a device that only reports its line's level: the
    /// line going high is a request, a line that stays high requests nothing more, a low line withdraws the
    /// request. A source the machine does not have (including 0) is ignored.
    pub fn set_level(&mut self, source: u32, level: bool) {
        let rising = bit::<SOURCES>(source).is_some_and(|(word, mask)| self.level[word] & mask == 0);
        if rising || !level {
            self.signal(source, level);
        }
    }

    /// Pending bits of sources `32*word ..= 32*word + 31`, as the guest reads them: latched requests (a source
    /// in service may have a new one).
    fn pending_word(&self, word: usize) -> u32 {
        self.pending.get(word).map_or(0, |&pending| pending & Self::valid_mask(word))
    }

    /// Requests a claim may take: pending and not in service.
    fn claimable_word(&self, word: usize) -> u32 {
        self.pending_word(word) & !self.in_service.get(word).copied().unwrap_or(0)
    }

    /// Whether `source` has a latched request (its pending bit as the guest reads it).
    pub fn is_pending(&self, source: u32) -> bool {
        bit::<SOURCES>(source).is_some_and(|(word, mask)| self.pending_word(word) & mask != 0)
    }

    /// Whether `source` has been claimed and not yet completed.
    pub fn in_service(&self, source: u32) -> bool {
        bit::<SOURCES>(source).is_some_and(|(word, mask)| self.in_service[word] & mask != 0)
    }

    /// The priority of `source` (0 for a source the machine does not have).
    pub fn priority(&self, source: u32) -> u32 {
        bit::<SOURCES>(source).and_then(|_| self.priority.get(source as usize)).map_or(0, |&p| u32::from(p))
    }

    /// The priority threshold of context `ctx` (0 for a context the machine does not have).
    pub fn threshold(&self, ctx: usize) -> u32 {
        self.threshold.get(ctx).map_or(0, |&t| u32::from(t))
    }

    /// Whether `source` is enabled for context `ctx`.
    pub fn enabled(&self, ctx: usize, source: u32) -> bool {
        match (self.enable.get(ctx), bit::<SOURCES>(source)) {
            (Some(enable), Some((word, mask))) => enable[word] & mask != 0,
            _ => false,
        }
    }

    /// The source a claim by context `ctx` would return now: the pending, enabled source with the highest
    /// priority above the context's threshold, ties to the lowest id. `None` if there is none.
    pub fn claimable(&self, ctx: usize) -> Option<u32> {
        // Asked for every hart's contexts at every device update: nothing latched is the common answer.
        if self.pending.iter().all(|&word| word == 0) {
            return None;
        }
        let enable = self.enable.get(ctx)?;
        let mut best = None;
        let mut best_priority = self.threshold.get(ctx).copied()?;
        for (word, &enabled) in enable.iter().enumerate().take(Self::USED_WORDS) {
            let mut candidates = self.claimable_word(word) & enabled;
            while candidates != 0 {
                let id = word * 32 + candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                if let Some(&priority) = self.priority.get(id) {
                    // Strictly greater: above the threshold, and an equal priority at a higher id loses.
                    if priority > best_priority {
                        best_priority = priority;
                        best = Some(id as u32);
                    }
                }
            }
        }
        best
    }

    /// Whether context `ctx` has an interrupt to take: the external interrupt pending bit (MEIP or SEIP) the
    /// context drives. False for a context the machine does not have.
    pub fn context_pending(&self, ctx: usize) -> bool {
        self.claimable(ctx).is_some()
    }

    /// Claims for context `ctx` as a guest read of its claim/complete register does: returns the
    /// [`claimable`](Self::claimable) source, clears its request and takes it into service, or 0 when there is
    /// none.
    pub fn claim(&mut self, ctx: usize) -> u32 {
        let Some(source) = self.claimable(ctx) else { return 0 };
        if let Some((word, mask)) = bit::<SOURCES>(source) {
            self.pending[word] &= !mask;
            self.in_service[word] |= mask;
        }
        source
    }

    /// Completes `source` for context `ctx` as a guest write of its claim/complete register does: ends the
    /// source's service if it is enabled for the context; otherwise (or for a source or context the machine
    /// does not have) does nothing. A completion never requests anything itself: the source interrupts again
    /// only if its device raised its line for an event since the claim.
    pub fn complete(&mut self, ctx: usize, source: u32) {
        if self.enabled(ctx, source) {
            if let Some((word, mask)) = bit::<SOURCES>(source) {
                self.in_service[word] &= !mask;
            }
        }
    }
}

/// A decoded register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Priority(u32),
    Pending(usize),
    Enable(usize, usize),
    Threshold(usize),
    ClaimComplete(usize),
    /// Inside the layout but no register of this machine: reads 0, ignores writes.
    Reserved,
}

/// Decodes an access of `size` bytes at `offset`; `None` for one the PLIC refuses.
fn decode(offset: u64, size: u8) -> Option<Reg> {
    if size != 4 || !offset.is_multiple_of(4) || offset >= LAYOUT_END {
        return None;
    }
    // Every quotient below is bounded by the layout (< 0x400_0000), so the conversions cannot fail.
    let index = |value: u64| usize::try_from(value).ok();
    let reg = if offset < PENDING_BASE {
        Reg::Priority(u32::try_from((offset - PRIORITY_BASE) / 4).ok()?)
    } else if offset < PENDING_BASE + (MAX_SOURCES / 8) as u64 {
        Reg::Pending(index((offset - PENDING_BASE) / 4)?)
    } else if (ENABLE_BASE..ENABLE_BASE + ENABLE_STRIDE * MAX_CONTEXTS as u64).contains(&offset) {
        let relative = offset - ENABLE_BASE;
        Reg::Enable(index(relative / ENABLE_STRIDE)?, index(relative % ENABLE_STRIDE / 4)?)
    } else if offset >= CONTEXT_BASE {
        let relative = offset - CONTEXT_BASE;
        let ctx = index(relative / CONTEXT_STRIDE)?;
        match relative % CONTEXT_STRIDE {
            0 => Reg::Threshold(ctx),
            4 => Reg::ClaimComplete(ctx),
            _ => Reg::Reserved,
        }
    } else {
        Reg::Reserved
    };
    Some(reg)
}

impl<const SOURCES: usize, const CONTEXTS: usize> MmioDevice for Plic<SOURCES, CONTEXTS> {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let value = match decode(offset, size).ok_or(MmioError::Unsupported)? {
            Reg::Priority(source) => self.priority(source),
            Reg::Pending(word) => self.pending_word(word),
            Reg::Enable(ctx, word) => self.enable.get(ctx).and_then(|e| e.get(word)).copied().unwrap_or(0),
            Reg::Threshold(ctx) => self.threshold(ctx),
            Reg::ClaimComplete(ctx) => self.claim(ctx),
            Reg::Reserved => 0,
        };
        Ok(u64::from(value))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        let value = value as u32;
        match decode(offset, size).ok_or(MmioError::Unsupported)? {
            Reg::Priority(source) => {
                if bit::<SOURCES>(source).is_some() {
                    if let Some(priority) = self.priority.get_mut(source as usize) {
                        *priority = (value & PRIORITY_MASK) as u8;
                    }
                }
            }
            Reg::Pending(_) | Reg::Reserved => {}
            Reg::Enable(ctx, word) => {
                if let Some(enable) = self.enable.get_mut(ctx).and_then(|e| e.get_mut(word)) {
                    *enable = value & Self::valid_mask(word);
                }
            }
            Reg::Threshold(ctx) => {
                if let Some(threshold) = self.threshold.get_mut(ctx) {
                    *threshold = (value & PRIORITY_MASK) as u8;
                }
            }
            Reg::ClaimComplete(ctx) => self.complete(ctx, value),
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

impl<const SOURCES: usize, const CONTEXTS: usize> Plic<SOURCES, CONTEXTS> {
    /// Writes the words of sources the machine has: the rest are always zero.
    fn save_words(out: &mut Writer, words: &[u32; WORDS]) {
        out.u32s(words.get(..Self::USED_WORDS).unwrap_or(words));
    }

    /// Reads words written by [`save_words`](Self::save_words), refusing bits of sources the machine lacks.
    fn load_words(input: &mut Reader) -> Result<[u32; WORDS], SnapshotError> {
        let mut words = [0u32; WORDS];
        for (index, word) in words.iter_mut().enumerate().take(Self::USED_WORDS) {
            *word = input.u32()?;
            if *word & !Self::valid_mask(index) != 0 {
                return Err(input.invalid("a PLIC bit of a source the machine does not have"));
            }
        }
        Ok(words)
    }

    fn save(&self, out: &mut Writer) {
        out.u32(SOURCES as u32);
        out.u32(CONTEXTS as u32);
        out.bytes(&self.priority);
        Self::save_words(out, &self.level);
        Self::save_words(out, &self.pending);
        Self::save_words(out, &self.in_service);
        for enable in &self.enable {
            Self::save_words(out, enable);
        }
        out.bytes(&self.threshold);
    }

    fn load(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u32()? != SOURCES as u32 || input.u32()? != CONTEXTS as u32 {
            return Err(input.mismatch("the PLIC's source or context count"));
        }
        let mut priority = [0u8; SOURCES];
        priority.copy_from_slice(input.bytes(SOURCES)?);
        let (level, pending, in_service) =
            (Self::load_words(input)?, Self::load_words(input)?, Self::load_words(input)?);
        let mut enable = [[0u32; WORDS]; CONTEXTS];
        for context in &mut enable {
            *context = Self::load_words(input)?;
        }
        let mut threshold = [0u8; CONTEXTS];
        threshold.copy_from_slice(input.bytes(CONTEXTS)?);
        let too_high = |value: &u8| u32::from(*value) > PRIORITY_MASK;
        if priority.first().is_some_and(|&p| p != 0) || priority.iter().any(too_high) || threshold.iter().any(too_high)
        {
            return Err(input.invalid("a PLIC priority or threshold no write produces"));
        }
        if mode.apply() {
            *self = Self { priority, level, pending, in_service, enable, threshold };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// QEMU `virt` with two harts.
    type VirtPlic = Plic<VIRT_SOURCES, 4>;

    fn priority_at(id: u32) -> u64 {
        PRIORITY_BASE + 4 * u64::from(id)
    }
    fn enable_at(ctx: usize, word: usize) -> u64 {
        ENABLE_BASE + ENABLE_STRIDE * ctx as u64 + 4 * word as u64
    }
    fn threshold_at(ctx: usize) -> u64 {
        CONTEXT_BASE + CONTEXT_STRIDE * ctx as u64
    }
    fn claim_at(ctx: usize) -> u64 {
        threshold_at(ctx) + 4
    }

    fn set_priority<const S: usize, const C: usize>(plic: &mut Plic<S, C>, id: u32, priority: u64) {
        plic.write(priority_at(id), 4, priority).unwrap();
    }
    fn enable<const S: usize, const C: usize>(plic: &mut Plic<S, C>, ctx: usize, id: u32) {
        let at = enable_at(ctx, id as usize / 32);
        let old = plic.read(at, 4).unwrap();
        plic.write(at, 4, old | 1 << (id % 32)).unwrap();
    }
    fn claim<const S: usize, const C: usize>(plic: &mut Plic<S, C>, ctx: usize) -> u32 {
        plic.read(claim_at(ctx), 4).unwrap() as u32
    }
    fn complete<const S: usize, const C: usize>(plic: &mut Plic<S, C>, ctx: usize, id: u32) {
        plic.write(claim_at(ctx), 4, u64::from(id)).unwrap();
    }

    #[test]
    fn context_numbering() {
        assert_eq!((m_context(0), s_context(0)), (0, 1));
        assert_eq!((m_context(3), s_context(3)), (6, 7));
    }

    #[test]
    fn reset_state() {
        let mut plic = VirtPlic::new();
        for ctx in 0..4 {
            assert!(!plic.context_pending(ctx));
            assert_eq!(claim(&mut plic, ctx), 0);
            assert_eq!(plic.read(threshold_at(ctx), 4), Ok(0));
        }
        for id in 0..VIRT_SOURCES as u32 {
            assert_eq!(plic.read(priority_at(id), 4), Ok(0));
        }
    }

    #[test]
    fn priorities_are_warl_three_bits() {
        let mut plic = VirtPlic::new();
        set_priority(&mut plic, 10, 0xffff_ffff);
        assert_eq!(plic.read(priority_at(10), 4), Ok(7));
        set_priority(&mut plic, 10, 0x1_0000_0005); // bits past 32 are not part of a 32-bit write
        assert_eq!(plic.read(priority_at(10), 4), Ok(5));
        set_priority(&mut plic, 10, 8);
        assert_eq!(plic.priority(10), 0);
        // Source 0 and sources past the last do not exist.
        set_priority(&mut plic, 0, 7);
        assert_eq!(plic.read(priority_at(0), 4), Ok(0));
        set_priority(&mut plic, 96, 7);
        assert_eq!(plic.read(priority_at(96), 4), Ok(0));
        set_priority(&mut plic, 1023, 7);
        assert_eq!(plic.read(priority_at(1023), 4), Ok(0));
        assert_eq!(plic.priority(u32::MAX), 0);
    }

    #[test]
    fn thresholds_are_warl_three_bits() {
        let mut plic = VirtPlic::new();
        plic.write(threshold_at(3), 4, 0xff).unwrap();
        assert_eq!(plic.read(threshold_at(3), 4), Ok(7));
        assert_eq!(plic.threshold(3), 7);
        assert_eq!(plic.threshold(2), 0);
        // Context 4 does not exist.
        plic.write(threshold_at(4), 4, 3).unwrap();
        assert_eq!(plic.read(threshold_at(4), 4), Ok(0));
        assert_eq!(plic.threshold(usize::MAX), 0);
    }

    #[test]
    fn enable_bits_exist_only_for_real_sources() {
        let mut plic = Plic::<40, 2>::new();
        plic.write(enable_at(1, 0), 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(enable_at(1, 0), 4), Ok(0xffff_fffe), "source 0 has no enable bit");
        plic.write(enable_at(1, 1), 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(enable_at(1, 1), 4), Ok(0xff), "sources 32..=39 only");
        plic.write(enable_at(1, 2), 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(enable_at(1, 2), 4), Ok(0));
        plic.write(enable_at(1, 31), 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(enable_at(1, 31), 4), Ok(0));
        assert_eq!(plic.read(enable_at(0, 0), 4), Ok(0), "other contexts untouched");
        assert!(plic.enabled(1, 39) && !plic.enabled(1, 40) && !plic.enabled(1, 0) && !plic.enabled(2, 1));
        // Context 2 does not exist.
        plic.write(enable_at(2, 0), 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(enable_at(2, 0), 4), Ok(0));
    }

    #[test]
    fn pending_bits_follow_lines_and_are_read_only() {
        let mut plic = VirtPlic::new();
        plic.set_level(10, true);
        plic.set_level(33, true);
        plic.set_level(95, true);
        assert_eq!(plic.read(PENDING_BASE, 4), Ok(1 << 10));
        assert_eq!(plic.read(PENDING_BASE + 4, 4), Ok(1 << 1));
        assert_eq!(plic.read(PENDING_BASE + 8, 4), Ok(1 << 31));
        assert_eq!(plic.read(PENDING_BASE + 12, 4), Ok(0));
        plic.write(PENDING_BASE, 4, 0).unwrap();
        plic.write(PENDING_BASE + 4, 4, 0xffff_ffff).unwrap();
        assert_eq!(plic.read(PENDING_BASE, 4), Ok(1 << 10), "writes to pending are ignored");
        assert_eq!(plic.read(PENDING_BASE + 4, 4), Ok(1 << 1));
        assert!(plic.is_pending(10));
        plic.set_level(10, false);
        assert!(!plic.is_pending(10), "a line that drops before the claim withdraws the request");
        assert_eq!(plic.read(PENDING_BASE, 4), Ok(0));
    }

    #[test]
    fn source_zero_and_missing_sources_never_pend() {
        let mut plic = VirtPlic::new();
        plic.write(enable_at(0, 0), 4, 0xffff_ffff).unwrap();
        set_priority(&mut plic, 0, 7);
        for source in [0, 96, 1023, 1024, u32::MAX] {
            plic.set_level(source, true);
            assert!(!plic.is_pending(source));
        }
        assert_eq!(plic.read(PENDING_BASE, 4), Ok(0));
        assert!(!plic.context_pending(0));
        assert_eq!(claim(&mut plic, 0), 0);
    }

    #[test]
    fn claim_orders_by_priority_then_lowest_id() {
        let mut plic = VirtPlic::new();
        for (id, priority) in [(3, 2), (5, 6), (7, 6), (40, 7), (41, 1)] {
            set_priority(&mut plic, id, priority);
            enable(&mut plic, 1, id);
            plic.set_level(id, true);
        }
        assert!(plic.context_pending(1));
        assert!(!plic.context_pending(0), "nothing enabled for context 0");
        assert_eq!(claim(&mut plic, 0), 0);
        let mut order = [0; 6];
        for slot in &mut order {
            *slot = claim(&mut plic, 1);
        }
        assert_eq!(order, [40, 5, 7, 3, 41, 0]);
        assert!(!plic.context_pending(1), "everything is in service");
        assert!((1..96).all(|id| !plic.is_pending(id)));
        assert!(plic.in_service(40) && plic.in_service(41) && !plic.in_service(1));
    }

    #[test]
    fn priority_zero_never_interrupts() {
        let mut plic = VirtPlic::new();
        enable(&mut plic, 0, 1);
        plic.set_level(1, true);
        assert!(plic.is_pending(1));
        assert!(!plic.context_pending(0));
        assert_eq!(claim(&mut plic, 0), 0);
        assert!(plic.is_pending(1), "a claim returning 0 takes nothing");
    }

    #[test]
    fn threshold_masks_priorities_at_or_below_it() {
        let mut plic = VirtPlic::new();
        for (id, priority) in [(1, 3), (2, 4)] {
            set_priority(&mut plic, id, priority);
            enable(&mut plic, 0, id);
            plic.set_level(id, true);
        }
        plic.write(threshold_at(0), 4, 4).unwrap();
        assert!(!plic.context_pending(0), "priority equal to the threshold does not interrupt");
        assert_eq!(claim(&mut plic, 0), 0);
        plic.write(threshold_at(0), 4, 3).unwrap();
        assert_eq!(plic.claimable(0), Some(2));
        assert_eq!(claim(&mut plic, 0), 2);
        assert!(!plic.context_pending(0), "source 1 is at the threshold");
        plic.write(threshold_at(0), 4, 0).unwrap();
        assert_eq!(claim(&mut plic, 0), 1);
        // A threshold of 7 masks everything.
        set_priority(&mut plic, 9, 7);
        enable(&mut plic, 0, 9);
        plic.set_level(9, true);
        plic.write(threshold_at(0), 4, 7).unwrap();
        assert!(!plic.context_pending(0));
    }

    /// The sequence that livelocked a guest whose handler leaves its device's condition standing: the line
    /// stays high through claim and completion, and only a new event interrupts again (QEMU's `sifive_plic`).
    #[test]
    fn a_request_is_latched_per_event_and_cleared_by_the_claim() {
        let mut plic = VirtPlic::new();
        set_priority(&mut plic, 10, 1);
        enable(&mut plic, 1, 10);
        plic.signal(10, true);
        assert!(plic.is_pending(10) && plic.context_pending(1));
        assert_eq!(claim(&mut plic, 1), 10);
        assert!(!plic.is_pending(10) && !plic.context_pending(1), "the claim clears the request");
        plic.set_level(10, true); // the line is still high, and reported so: no event
        complete(&mut plic, 1, 10);
        assert!(!plic.is_pending(10) && !plic.in_service(10));
        assert!(!plic.context_pending(1), "a line that merely stays high does not request again");
        assert_eq!(claim(&mut plic, 1), 0);

        // A new event while the source is idle interrupts once more.
        plic.signal(10, true);
        assert_eq!(claim(&mut plic, 1), 10);
        // One while it is in service is latched and offered after the completion.
        plic.signal(10, true);
        assert!(plic.is_pending(10), "visible in the pending array");
        assert!(!plic.context_pending(1) && claim(&mut plic, 1) == 0, "not while in service");
        complete(&mut plic, 1, 10);
        assert!(plic.context_pending(1));
        assert_eq!(claim(&mut plic, 1), 10);
        complete(&mut plic, 1, 10);
        assert!(!plic.context_pending(1));

        // A line lowered before the claim withdraws the request.
        plic.signal(10, true);
        plic.signal(10, false);
        assert!(!plic.is_pending(10) && claim(&mut plic, 1) == 0);

        // A device that only reports levels: the rising edge is the request.
        plic.set_level(10, true);
        assert_eq!(claim(&mut plic, 1), 10);
        complete(&mut plic, 1, 10);
        plic.set_level(10, true);
        assert!(!plic.context_pending(1), "no edge, no request");
        plic.set_level(10, false);
        plic.set_level(10, true);
        assert_eq!(claim(&mut plic, 1), 10);
    }

    #[test]
    fn completion_of_a_source_not_enabled_for_the_context_is_ignored() {
        let mut plic = VirtPlic::new();
        set_priority(&mut plic, 10, 1);
        enable(&mut plic, 1, 10);
        plic.set_level(10, true);
        assert_eq!(claim(&mut plic, 1), 10);
        complete(&mut plic, 0, 10); // context 0 does not have source 10 enabled
        assert!(plic.in_service(10));
        complete(&mut plic, 1, 11); // the wrong id
        complete(&mut plic, 1, 0);
        complete(&mut plic, 1, 96);
        complete(&mut plic, 7, 10); // no such context
        plic.write(claim_at(1), 4, 0xffff_ffff_0000_0000 | 11).unwrap();
        assert!(plic.in_service(10), "only completing 10 for a context that enables it ends service");
        assert!(!plic.context_pending(1));

        // Disabling the source after the claim makes its completion ignored too (as the spec says).
        plic.write(enable_at(1, 0), 4, 0).unwrap();
        complete(&mut plic, 1, 10);
        assert!(plic.in_service(10));
        // Any context that enables it may complete it.
        enable(&mut plic, 2, 10);
        complete(&mut plic, 2, 10);
        assert!(!plic.in_service(10));
        assert!(!plic.is_pending(10), "no new event since the claim");
    }

    #[test]
    fn contexts_share_sources_but_not_enables_or_thresholds() {
        let mut plic = VirtPlic::new();
        set_priority(&mut plic, 10, 2);
        enable(&mut plic, m_context(0), 10);
        enable(&mut plic, s_context(1), 10);
        plic.write(threshold_at(s_context(1)), 4, 2).unwrap();
        plic.set_level(10, true);
        assert!(plic.context_pending(m_context(0)));
        assert!(!plic.context_pending(s_context(1)), "masked by its threshold");
        assert!(!plic.context_pending(s_context(0)) && !plic.context_pending(m_context(1)));
        plic.write(threshold_at(s_context(1)), 4, 1).unwrap();
        assert!(plic.context_pending(s_context(1)));
        assert_eq!(claim(&mut plic, s_context(1)), 10);
        assert!(!plic.context_pending(m_context(0)), "claimed by the other context");
        assert_eq!(claim(&mut plic, m_context(0)), 0);
        complete(&mut plic, s_context(1), 10);
        assert_eq!(claim(&mut plic, m_context(0)), 0, "the request was the other context's");
        plic.signal(10, true);
        assert_eq!(claim(&mut plic, m_context(0)), 10, "a new event goes to whichever context claims first");
        assert!(!plic.context_pending(99) && plic.claimable(usize::MAX).is_none());
        assert_eq!(plic.claim(usize::MAX), 0);
    }

    #[test]
    fn widths_alignment_and_layout() {
        let mut plic = VirtPlic::new();
        for offset in [0, 4, PENDING_BASE, enable_at(0, 0), threshold_at(0), claim_at(0)] {
            for size in [0, 1, 2, 8, 16] {
                assert_eq!(plic.read(offset, size), Err(MmioError::Unsupported), "read {offset:#x}/{size}");
                assert_eq!(plic.write(offset, size, 1), Err(MmioError::Unsupported), "write {offset:#x}/{size}");
            }
            assert_eq!(plic.read(offset + 2, 4), Err(MmioError::Unsupported));
            assert_eq!(plic.write(offset + 1, 4, 1), Err(MmioError::Unsupported));
        }
        for offset in [LAYOUT_END, LAYOUT_END + 4, u64::MAX - 3] {
            assert_eq!(plic.read(offset, 4), Err(MmioError::Unsupported));
            assert_eq!(plic.write(offset, 4, 1), Err(MmioError::Unsupported));
        }
        // Reserved offsets inside the layout read 0 and ignore writes.
        for offset in [PENDING_BASE + 0x80, 0x1ffc, ENABLE_BASE + ENABLE_STRIDE * MAX_CONTEXTS as u64, 0x1f_fffc]
            .into_iter()
            .chain([threshold_at(0) + 8, threshold_at(1) - 4, SIZE - 4, LAYOUT_END - 4])
        {
            assert_eq!(plic.write(offset, 4, 0xffff_ffff), Ok(()), "write {offset:#x}");
            assert_eq!(plic.read(offset, 4), Ok(0), "read {offset:#x}");
        }
        assert_eq!(plic.take_request(), None);
    }

    #[test]
    fn layout_limits() {
        let mut plic = Plic::<MAX_SOURCES, 3>::new();
        set_priority(&mut plic, 1023, 7);
        enable(&mut plic, 2, 1023);
        plic.set_level(1023, true);
        assert_eq!(plic.read(PENDING_BASE + 124, 4), Ok(1 << 31));
        assert_eq!(claim(&mut plic, 2), 1023);
        let mut empty = Plic::<0, 0>::new();
        empty.set_level(1, true);
        assert_eq!(empty.read(claim_at(0), 4), Ok(0));
        assert_eq!(empty.read(PENDING_BASE, 4), Ok(0));
        let mut one = Plic::<1, 1>::new();
        one.write(enable_at(0, 0), 4, u64::MAX).unwrap();
        assert_eq!(one.read(enable_at(0, 0), 4), Ok(0));
    }

    /// An offset near a register the PLIC decodes, or anywhere.
    fn interesting_offset() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..0x200,
            PENDING_BASE..PENDING_BASE + 0x100,
            ENABLE_BASE..ENABLE_BASE + 0x300,
            CONTEXT_BASE..CONTEXT_BASE + 0x4010,
            any::<u64>(),
        ]
    }

    proptest! {
        #[test]
        fn random_accesses_never_panic_and_claims_are_consistent(
            ops in proptest::collection::vec(
                (0u8..4, interesting_offset(), prop_oneof![Just(4u8), any::<u8>()], any::<u64>(), 0u32..100),
                1..128,
            )
        ) {
            let mut plic = Plic::<VIRT_SOURCES, 4>::new();
            for (kind, offset, size, value, source) in ops {
                match kind {
                    0 => { let _ = plic.read(offset, size); }
                    1 => { let _ = plic.write(offset, size, value); }
                    2 if value & 2 != 0 => plic.signal(source, value & 1 != 0),
                    2 => plic.set_level(source, value & 1 != 0),
                    _ => {
                        let ctx = (value % 6) as usize;
                        let expected = plic.claimable(ctx);
                        let got = plic.claim(ctx);
                        prop_assert_eq!(got, expected.unwrap_or(0));
                        if let Some(id) = expected {
                            prop_assert!(plic.priority(id) > plic.threshold(ctx));
                            prop_assert!(plic.enabled(ctx, id) && plic.in_service(id) && !plic.is_pending(id));
                        }
                        plic.complete(ctx, source);
                    }
                }
                prop_assert!(!plic.is_pending(0));
                for source in 1..VIRT_SOURCES as u32 {
                    // A claimable source always has a request; a request only exists with the line high.
                    prop_assert!(!plic.is_pending(source) || plic.level[source as usize / 32] & (1 << (source % 32)) != 0);
                }
                for ctx in 0..6 {
                    prop_assert_eq!(plic.context_pending(ctx), plic.claimable(ctx).is_some());
                }
            }
        }
    }
}
