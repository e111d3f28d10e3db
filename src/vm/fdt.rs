//! The flattened devicetree (DTB) each VM hands its guest in `a1`: a no-alloc DTB writer and the tree of a
//! QEMU-`virt`-shaped machine.
//!
//! [`FdtWriter`] writes a version-17 flattened devicetree (devicetree specification v0.4, chapter 5) straight
//! into a caller-supplied byte buffer: header, memory reservation block, structure block and a de-duplicated
//! strings block. It needs no allocator, so the hosted runner and the bare-metal board share it. The structure
//! block grows up from the front of the buffer while property names collect at its tail, growing down; when
//! the two meet the buffer is too small and every call returns [`FdtError::BufferTooSmall`] (never a panic).
//! [`FdtWriter::finish`] moves the strings block down behind the structure block, so the blob occupies exactly
//! `buf[..len]`.
//!
//! [`write_dtb`] lays out a [`MachineDescription`] the way QEMU's `virt` machine does (`/chosen`, `/memory`,
//! `/cpus` with per-hart `riscv,cpu-intc` interrupt controllers and a `cpu-map`, and `/soc` holding the CLINT,
//! PLIC, NS16550A UART, SiFive test finisher and virtio-mmio transports), so OpenSBI's generic platform, U-Boot's
//! `qemu-riscv64_smode` and Linux find everything where they look on QEMU.

use core::fmt;

use crate::dev::slots::{self, Slot};
use crate::dev::test_finisher;
use crate::mem::RAM_BASE;

/// `magic` of the DTB header (stored big-endian, like every header field).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The DTB version written.
pub const FDT_VERSION: u32 = 17;
/// The oldest DTB version the written blob is backwards compatible with.
pub const FDT_LAST_COMP_VERSION: u32 = 16;

const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_NOP: u32 = 0x4;
const FDT_END: u32 = 0x9;

/// Size of the DTB header (`struct fdt_header`, ten big-endian 32-bit words).
pub const HEADER_SIZE: usize = 40;

/// Why a devicetree could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The output buffer cannot hold the blob.
    BufferTooSmall,
    /// A node or property name is empty, too long, or holds a character the specification forbids.
    InvalidName,
    /// The calls do not make one well-formed tree: a property outside a node or after a subnode, an
    /// `end_node` without a `begin_node`, a second root, or `finish` with nodes still open.
    Unbalanced,
    /// The machine description cannot be laid out; the text says which field is wrong.
    InvalidDescription(&'static str),
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdtError::BufferTooSmall => f.write_str("devicetree buffer too small"),
            FdtError::InvalidName => f.write_str("invalid devicetree node or property name"),
            FdtError::Unbalanced => f.write_str("devicetree nodes and properties are not well nested"),
            FdtError::InvalidDescription(what) => write!(f, "invalid machine description: {what}"),
        }
    }
}

impl core::error::Error for FdtError {}

/// One reserved physical memory range (an entry of the memory reservation block), or any `base`/`size` window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A memory-mapped device that raises one PLIC interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqDevice {
    /// First byte of its MMIO window.
    pub base: u64,
    /// Length of its MMIO window in bytes.
    pub size: u64,
    /// Its PLIC interrupt source number.
    pub irq: u32,
}

/// The platform-level interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plic {
    /// First byte of its MMIO window.
    pub base: u64,
    /// Length of its MMIO window in bytes.
    pub size: u64,
    /// Number of interrupt sources (`riscv,ndev`).
    pub ndev: u32,
}

// Bytes a name may hold besides ASCII letters and digits (specification tables 2.1 and 2.2; node names also
// take '@' for the unit address, property names '?' and '#').
fn valid_name_byte(b: u8, node: bool) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b',' | b'.' | b'_' | b'+' | b'-')
        || (node && b == b'@')
        || (!node && matches!(b, b'?' | b'#'))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn put_be32(buf: &mut [u8], at: usize, value: u32) -> Result<(), FdtError> {
    let end = at.checked_add(4).ok_or(FdtError::BufferTooSmall)?;
    buf.get_mut(at..end).ok_or(FdtError::BufferTooSmall)?.copy_from_slice(&value.to_be_bytes());
    Ok(())
}

fn to_u32(n: usize) -> Result<u32, FdtError> {
    u32::try_from(n).map_err(|_| FdtError::BufferTooSmall)
}

/// Writes a flattened devicetree into a caller-supplied buffer, without allocating.
///
/// Open the root with `begin_node("")`, add properties (which must precede a node's subnodes, as the
/// specification requires) and subnodes, close every node with [`end_node`](Self::end_node), then call
/// [`finish`](Self::finish) for the blob's length. A call that fails leaves the blob as it was before it.
pub struct FdtWriter<'a> {
    buf: &'a mut [u8],
    struct_start: usize,
    /// End of the structure block written so far.
    pos: usize,
    /// Start of the strings collected at the buffer's tail (they grow down towards `pos`).
    strings_lo: usize,
    depth: u32,
    root_done: bool,
    props_allowed: bool,
    boot_cpuid_phys: u32,
}

impl<'a> FdtWriter<'a> {
    /// Starts a blob in `buf` whose memory reservation block lists `reserved`, less its empty regions: they
    /// reserve nothing, and one at address 0 would read as the block's terminator and hide the entries after it.
    pub fn new(buf: &'a mut [u8], reserved: &[Region]) -> Result<Self, FdtError> {
        let mut reserved = reserved.iter().filter(|region| region.size != 0);
        let entries = reserved.clone().count().checked_add(1).ok_or(FdtError::BufferTooSmall)?;
        let struct_start =
            entries.checked_mul(16).and_then(|n| n.checked_add(HEADER_SIZE)).ok_or(FdtError::BufferTooSmall)?;
        let rsv = buf.get_mut(HEADER_SIZE..struct_start).ok_or(FdtError::BufferTooSmall)?;
        let terminator = Region { base: 0, size: 0 };
        for (entry, region) in rsv.chunks_exact_mut(16).zip(reserved.by_ref().chain(core::iter::once(&terminator))) {
            entry[..8].copy_from_slice(&region.base.to_be_bytes());
            entry[8..].copy_from_slice(&region.size.to_be_bytes());
        }
        let strings_lo = buf.len();
        Ok(FdtWriter {
            buf,
            struct_start,
            pos: struct_start,
            strings_lo,
            depth: 0,
            root_done: false,
            props_allowed: false,
            boot_cpuid_phys: 0,
        })
    }

    /// Sets the header's `boot_cpuid_phys` (the `reg` of the boot hart's cpu node); 0 unless set.
    pub fn set_boot_cpuid_phys(&mut self, hart: u32) {
        self.boot_cpuid_phys = hart;
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FdtError> {
        let end = self.pos.checked_add(bytes.len()).ok_or(FdtError::BufferTooSmall)?;
        if end > self.strings_lo {
            return Err(FdtError::BufferTooSmall);
        }
        self.buf.get_mut(self.pos..end).ok_or(FdtError::BufferTooSmall)?.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn put_u32(&mut self, value: u32) -> Result<(), FdtError> {
        self.put(&value.to_be_bytes())
    }

    /// Zero-fills up to the next 4-byte boundary.
    fn pad(&mut self) -> Result<(), FdtError> {
        let end = align4(self.pos).ok_or(FdtError::BufferTooSmall)?;
        if end > self.strings_lo {
            return Err(FdtError::BufferTooSmall);
        }
        self.buf.get_mut(self.pos..end).ok_or(FdtError::BufferTooSmall)?.fill(0);
        self.pos = end;
        Ok(())
    }

    fn open_node(&mut self) -> Result<(), FdtError> {
        if self.root_done {
            return Err(FdtError::Unbalanced);
        }
        self.put_u32(FDT_BEGIN_NODE)
    }

    fn opened_node(&mut self) -> Result<(), FdtError> {
        self.put(&[0])?;
        self.pad()?;
        self.depth += 1;
        self.props_allowed = true;
        Ok(())
    }

    /// Opens a node named `name` (`""` for the root, which must come first and alone).
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        if self.root_done {
            return Err(FdtError::Unbalanced);
        }
        let valid = if self.depth == 0 {
            name.is_empty()
        } else {
            !name.is_empty() && name.bytes().all(|b| valid_name_byte(b, true))
        };
        if !valid {
            return Err(FdtError::InvalidName);
        }
        self.undo_on_error(|w| {
            w.open_node()?;
            w.put(name.as_bytes())?;
            w.opened_node()
        })
    }

    /// Opens a node whose name is formatted, e.g. `format_args!("serial@{:x}", base)`.
    pub fn begin_node_fmt(&mut self, name: fmt::Arguments<'_>) -> Result<(), FdtError> {
        if self.root_done {
            return Err(FdtError::Unbalanced);
        }
        if self.depth == 0 {
            return Err(FdtError::InvalidName);
        }
        self.undo_on_error(|w| {
            w.open_node()?;
            let start = w.pos;
            w.put_fmt(name)?;
            let written = w.buf.get(start..w.pos).ok_or(FdtError::BufferTooSmall)?;
            if written.is_empty() || !written.iter().all(|&b| valid_name_byte(b, true)) {
                return Err(FdtError::InvalidName);
            }
            w.opened_node()
        })
    }

    /// Runs `op`; if it fails, forgets whatever it wrote, so a rejected call leaves the blob as it was.
    fn undo_on_error(&mut self, op: impl FnOnce(&mut Self) -> Result<(), FdtError>) -> Result<(), FdtError> {
        let (pos, strings_lo, depth, props_allowed) = (self.pos, self.strings_lo, self.depth, self.props_allowed);
        let result = op(self);
        if result.is_err() {
            (self.pos, self.strings_lo, self.depth, self.props_allowed) = (pos, strings_lo, depth, props_allowed);
        }
        result
    }

    fn put_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), FdtError> {
        struct Sink<'w, 'a> {
            writer: &'w mut FdtWriter<'a>,
            error: Option<FdtError>,
        }
        impl fmt::Write for Sink<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.writer.put(s.as_bytes()).map_err(|e| {
                    self.error = Some(e);
                    fmt::Error
                })
            }
        }
        let mut sink = Sink { writer: self, error: None };
        match fmt::write(&mut sink, args) {
            Ok(()) => Ok(()),
            Err(fmt::Error) => Err(sink.error.unwrap_or(FdtError::BufferTooSmall)),
        }
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::Unbalanced);
        }
        self.put_u32(FDT_END_NODE)?; // all or nothing: `put` writes nothing when it fails
        self.depth -= 1;
        self.props_allowed = false;
        if self.depth == 0 {
            self.root_done = true;
        }
        Ok(())
    }

    /// The offset of `name` in the strings block, counted for now from the buffer's end (see `finish`);
    /// an existing string, or the tail of one, is reused.
    fn string_offset(&mut self, name: &str) -> Result<u32, FdtError> {
        let name = name.as_bytes();
        let end = self.buf.len();
        let pool = self.buf.get(self.strings_lo..).ok_or(FdtError::BufferTooSmall)?;
        let found = pool.windows(name.len() + 1).position(|w| w.split_last() == Some((&0, name)));
        let at = match found {
            Some(i) => self.strings_lo + i,
            None => {
                let lo = self.strings_lo.checked_sub(name.len() + 1).ok_or(FdtError::BufferTooSmall)?;
                if lo < self.pos {
                    return Err(FdtError::BufferTooSmall);
                }
                let slot = self.buf.get_mut(lo..self.strings_lo).ok_or(FdtError::BufferTooSmall)?;
                if let Some((nul, text)) = slot.split_last_mut() {
                    text.copy_from_slice(name);
                    *nul = 0;
                }
                self.strings_lo = lo;
                lo
            }
        };
        to_u32(end - at)
    }

    /// Writes a property whose value `value` builds; the length is filled in afterwards.
    pub fn property_with(
        &mut self,
        name: &str,
        value: impl FnOnce(&mut PropValue<'_, 'a>) -> Result<(), FdtError>,
    ) -> Result<(), FdtError> {
        if self.depth == 0 || !self.props_allowed {
            return Err(FdtError::Unbalanced);
        }
        if name.is_empty() || name.len() > 31 || !name.bytes().all(|b| valid_name_byte(b, false)) {
            return Err(FdtError::InvalidName);
        }
        self.undo_on_error(|w| {
            let nameoff = w.string_offset(name)?;
            w.put_u32(FDT_PROP)?;
            let len_at = w.pos;
            w.put_u32(0)?;
            w.put_u32(nameoff)?;
            let data_start = w.pos;
            value(&mut PropValue { writer: w })?;
            let len = to_u32(w.pos - data_start)?;
            put_be32(w.buf, len_at, len)?;
            w.pad()
        })
    }

    /// Writes a property with raw bytes as its value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        self.property_with(name, |v| v.bytes(value))
    }

    /// Writes a property without a value (a boolean such as `interrupt-controller`).
    pub fn property_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.property_with(name, |_| Ok(()))
    }

    /// Writes a one-cell (`<u32>`) property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtError> {
        self.property_with(name, |v| v.u32(value))
    }

    /// Writes a two-cell (`<u64>`) property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), FdtError> {
        self.property_with(name, |v| v.u64(value))
    }

    /// Writes a property of 32-bit cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        self.property_with(name, |v| cells.iter().try_for_each(|&c| v.u32(c)))
    }

    /// Writes a NUL-terminated string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), FdtError> {
        self.property_with(name, |v| v.string(value))
    }

    /// Writes a string-list property (each string NUL-terminated), e.g. a `compatible` list.
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), FdtError> {
        self.property_with(name, |v| values.iter().try_for_each(|s| v.string(s)))
    }

    /// Writes a string property whose text is formatted.
    pub fn property_fmt(&mut self, name: &str, value: fmt::Arguments<'_>) -> Result<(), FdtError> {
        self.property_with(name, |v| v.fmt_string(value))
    }

    /// Ends the structure block, moves the strings block behind it, writes the header and returns the length
    /// of the blob, which is `buf[..len]`.
    pub fn finish(mut self) -> Result<usize, FdtError> {
        if self.depth != 0 || !self.root_done {
            return Err(FdtError::Unbalanced);
        }
        self.put_u32(FDT_END)?;
        let struct_end = self.pos;
        let buf_len = self.buf.len();
        let strings_size = buf_len - self.strings_lo;
        self.buf.copy_within(self.strings_lo..buf_len, struct_end);
        self.fix_name_offsets(strings_size)?;
        let total = struct_end + strings_size;
        let header = [
            FDT_MAGIC,
            to_u32(total)?,
            to_u32(self.struct_start)?,
            to_u32(struct_end)?,
            to_u32(HEADER_SIZE)?,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            self.boot_cpuid_phys,
            to_u32(strings_size)?,
            to_u32(struct_end - self.struct_start)?,
        ];
        for (i, word) in header.into_iter().enumerate() {
            put_be32(self.buf, i * 4, word)?;
        }
        Ok(total)
    }

    /// Rewrites each property's `nameoff`, recorded as a distance from the buffer's end, as an offset into the
    /// strings block now that its size is known.
    fn fix_name_offsets(&mut self, strings_size: usize) -> Result<(), FdtError> {
        let corrupt = FdtError::Unbalanced;
        let mut at = self.struct_start;
        loop {
            let token = be32(self.buf, at).ok_or(corrupt)?;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let rest = self.buf.get(at..self.pos).ok_or(corrupt)?;
                    let nul = rest.iter().position(|&b| b == 0).ok_or(corrupt)?;
                    at = align4(at + nul + 1).ok_or(corrupt)?;
                }
                FDT_PROP => {
                    let len = be32(self.buf, at).ok_or(corrupt)? as usize;
                    let distance = be32(self.buf, at + 4).ok_or(corrupt)? as usize;
                    let offset = strings_size.checked_sub(distance).ok_or(corrupt)?;
                    put_be32(self.buf, at + 4, to_u32(offset)?)?;
                    at = align4(at + 8 + len).ok_or(corrupt)?;
                }
                FDT_END_NODE | FDT_NOP => {}
                FDT_END => return Ok(()),
                _ => return Err(corrupt),
            }
        }
    }
}

/// The value of a property being written by [`FdtWriter::property_with`]; every value is big-endian.
pub struct PropValue<'w, 'a> {
    writer: &'w mut FdtWriter<'a>,
}

impl PropValue<'_, '_> {
    /// Appends raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), FdtError> {
        self.writer.put(bytes)
    }

    /// Appends one 32-bit cell.
    pub fn u32(&mut self, value: u32) -> Result<(), FdtError> {
        self.writer.put_u32(value)
    }

    /// Appends a 64-bit value as two cells.
    pub fn u64(&mut self, value: u64) -> Result<(), FdtError> {
        self.writer.put(&value.to_be_bytes())
    }

    /// Appends a string and its NUL terminator.
    pub fn string(&mut self, value: &str) -> Result<(), FdtError> {
        self.writer.put(value.as_bytes())?;
        self.writer.put(&[0])
    }

    /// Appends formatted text and its NUL terminator.
    pub fn fmt_string(&mut self, value: fmt::Arguments<'_>) -> Result<(), FdtError> {
        self.writer.put_fmt(value)?;
        self.writer.put(&[0])
    }
}

impl Region {
    /// The window of a slot of the machine's [slot table](crate::dev::slots).
    pub const fn of(slot: &Slot) -> Self {
        Region { base: slot.base, size: slot.size }
    }
}

impl IrqDevice {
    /// A slot of the machine's [slot table](crate::dev::slots) (its PLIC source, 0 if it has none).
    pub const fn of(slot: &Slot) -> Self {
        IrqDevice { base: slot.base, size: slot.size, irq: slot.irq_or_zero() }
    }
}

// Every address and interrupt below comes from the slot table, the one definition of the layout.

/// Guest real address and window of the CLINT on QEMU's `virt` machine.
pub const QEMU_VIRT_CLINT: Region = Region::of(&slots::CLINT);
/// The PLIC of QEMU's `virt` machine (96 interrupt sources, window sized for 512 harts).
pub const QEMU_VIRT_PLIC: Plic = Plic { base: slots::PLIC.base, size: slots::PLIC.size, ndev: 0x60 };
/// The NS16550A UART of QEMU's `virt` machine.
pub const QEMU_VIRT_UART: IrqDevice = IrqDevice::of(&slots::UART0);
/// The SiFive test finisher of QEMU's `virt` machine.
pub const QEMU_VIRT_TEST: Region = Region::of(&slots::TEST);
/// The goldfish RTC of QEMU's `virt` machine (`google,goldfish-rtc`, PLIC source 11): no DMA, so the native
/// board can give its page whole to one VM.
pub const QEMU_VIRT_RTC: IrqDevice = IrqDevice::of(&slots::RTC);
/// trapeze's spooled printer (`trapeze,spool-printer`, PLIC source 12), at a place QEMU's `virt` leaves free.
pub const QEMU_VIRT_PRINTER: IrqDevice = IrqDevice::of(&slots::PRINTER);
/// QEMU's input clock of the `virt` UART (`clock-frequency`).
pub const UART_CLOCK_HZ: u32 = 3_686_400;
/// The eight virtio-mmio transports of QEMU's `virt` machine, in slot order: 0x1000_1000 + 0x1000 * i, PLIC
/// source 1 + i.
pub const QEMU_VIRT_VIRTIO: [IrqDevice; slots::VIRTIO_COUNT] = {
    let mut all = [IrqDevice { base: 0, size: 0, irq: 0 }; slots::VIRTIO_COUNT];
    let mut i = 0;
    while i < all.len() {
        all[i] = IrqDevice::of(&slots::VIRTIO[i]);
        i += 1;
    }
    all
};
/// The most harts [`write_dtb`] lays out (the PLIC has at most 15872 contexts, two per hart).
pub const MAX_HARTS: u32 = 4096;

/// What a VM's guest should find in its devicetree. [`MachineDescription::qemu_virt`] gives QEMU's `virt`
/// layout; change the fields that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineDescription<'a> {
    /// Number of harts, numbered (hart id and `reg`) 0 to `harts - 1`; 1 to [`MAX_HARTS`].
    pub harts: u32,
    /// The hart id the guest boots on (the header's `boot_cpuid_phys`).
    pub boot_hart: u32,
    /// The root `model`.
    pub model: &'a str,
    /// Each hart's `riscv,isa`, e.g. `"rv64imafdc_zicsr_zifencei"`; `riscv,isa-base` and
    /// `riscv,isa-extensions` are derived from it (`g` stands for `imafd_zicsr_zifencei`).
    pub isa: &'a str,
    /// Each hart's `mmu-type`, e.g. `"riscv,sv39"`; `None` for a hart without paging.
    pub mmu_type: Option<&'a str>,
    /// Guest RAM: the `/memory@…` node.
    pub ram: Region,
    /// `/cpus/timebase-frequency`: the rate of `mtime` and the `time` CSR, in Hz.
    pub timebase_frequency: u32,
    /// The NS16550A UART, whose `interrupts` name a PLIC source.
    pub uart: Option<IrqDevice>,
    /// The CLINT (machine software and timer interrupts of every hart).
    pub clint: Option<Region>,
    /// The PLIC (machine and supervisor external interrupts of every hart). Without it, devices are listed
    /// without `interrupts`.
    pub plic: Option<Plic>,
    /// The SiFive test finisher, with the `poweroff` and `reboot` syscon nodes that drive it.
    pub test_finisher: Option<Region>,
    /// The goldfish RTC ([`QEMU_VIRT_RTC`] on `virt`), for a VM given one; `None` in
    /// [`qemu_virt`](Self::qemu_virt).
    pub rtc: Option<IrqDevice>,
    /// The spooled printer ([`QEMU_VIRT_PRINTER`], `trapeze,spool-printer`), for a VM given one; `None` in
    /// [`qemu_virt`](Self::qemu_virt).
    pub printer: Option<IrqDevice>,
    /// The virtio-mmio transports, in the order their nodes appear. (QEMU lists its eight highest address
    /// first, and connects its first `-device` to the highest address, so Linux probes it first; pass the
    /// slice reversed to get that order.)
    pub virtio_mmio: &'a [IrqDevice],
    /// `/chosen/bootargs`: the kernel command line.
    pub bootargs: Option<&'a str>,
    /// `/chosen/linux,initrd-start` and `linux,initrd-end`: the initial ramdisk's first and one-past-last byte.
    pub initrd: Option<(u64, u64)>,
    /// `/chosen/stdout-path`; `None` points it at the UART, if there is one.
    pub stdout_path: Option<&'a str>,
    /// Entries of the memory reservation block.
    pub reserved: &'a [Region],
}

impl<'a> MachineDescription<'a> {
    /// QEMU's `virt` machine with `harts` RV64GC harts (Sv39) and `ram_size` bytes of RAM at 0x8000_0000: its
    /// UART, CLINT, PLIC and test finisher, no virtio transports, no command line and no initrd.
    pub const fn qemu_virt(harts: u32, ram_size: u64) -> Self {
        MachineDescription {
            harts,
            boot_hart: 0,
            model: "riscv-virtio,qemu",
            isa: "rv64imafdc_zicsr_zifencei",
            mmu_type: Some("riscv,sv39"),
            ram: Region { base: RAM_BASE, size: ram_size },
            timebase_frequency: 10_000_000,
            uart: Some(QEMU_VIRT_UART),
            clint: Some(QEMU_VIRT_CLINT),
            plic: Some(QEMU_VIRT_PLIC),
            test_finisher: Some(QEMU_VIRT_TEST),
            rtc: None,
            printer: None,
            virtio_mmio: &[],
            bootargs: None,
            initrd: None,
            stdout_path: None,
            reserved: &[],
        }
    }
}

// Phandles: the PLIC, the test finisher, then per hart its cpu node and its interrupt controller.
const PHANDLE_PLIC: u32 = 1;
const PHANDLE_TEST: u32 = 2;
fn phandle_cpu(hart: u32) -> u32 {
    3 + 2 * hart
}
fn phandle_intc(hart: u32) -> u32 {
    4 + 2 * hart
}

// Local interrupt numbers on a hart's `riscv,cpu-intc` (the mip bit numbers).
const IRQ_M_SOFT: u32 = 3;
const IRQ_M_TIMER: u32 = 7;
const IRQ_S_EXT: u32 = 9;
const IRQ_M_EXT: u32 = 11;

/// Splits an ISA string into its base (`rv64i`) and calls `ext` with each extension name in order.
fn isa_extensions(isa: &str, mut ext: impl FnMut(&str) -> Result<(), FdtError>) -> Result<&'static str, FdtError> {
    const BAD: FdtError = FdtError::InvalidDescription("isa must look like rv64imafdc_zicsr_zifencei");
    let (base, rest) = if let Some(rest) = isa.strip_prefix("rv64") {
        ("rv64i", rest)
    } else if let Some(rest) = isa.strip_prefix("rv32") {
        ("rv32i", rest)
    } else {
        return Err(BAD);
    };
    let mut parts = rest.split('_');
    let letters = parts.next().unwrap_or("");
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(BAD);
    }
    let mut has_g = false;
    for letter in (0..letters.len()).filter_map(|i| letters.get(i..i + 1)) {
        if letter == "g" {
            has_g = true;
            ["i", "m", "a", "f", "d"].into_iter().try_for_each(&mut ext)?;
        } else {
            ext(letter)?;
        }
    }
    for part in parts {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(BAD);
        }
        if has_g && (part == "zicsr" || part == "zifencei") {
            continue;
        }
        ext(part)?;
    }
    if has_g {
        ext("zicsr")?;
        ext("zifencei")?;
    }
    Ok(base)
}

/// Writes the devicetree of `desc` into `out` and returns its length: the blob is `out[..len]`, ready to be
/// copied into guest memory and passed in `a1`.
pub fn write_dtb(desc: &MachineDescription<'_>, out: &mut [u8]) -> Result<usize, FdtError> {
    if desc.harts == 0 || desc.harts > MAX_HARTS {
        return Err(FdtError::InvalidDescription("harts must be 1 to MAX_HARTS"));
    }
    if desc.boot_hart >= desc.harts {
        return Err(FdtError::InvalidDescription("boot_hart must be below harts"));
    }
    isa_extensions(desc.isa, |_| Ok(()))?;
    let mut w = FdtWriter::new(out, desc.reserved)?;
    w.set_boot_cpuid_phys(desc.boot_hart);

    w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "riscv-virtio")?;
    w.property_string("model", desc.model)?;

    write_chosen(&mut w, desc)?;
    if let Some(uart) = desc.uart {
        w.begin_node("aliases")?;
        w.property_fmt("serial0", format_args!("/soc/{}@{:x}", slots::UART0.node, uart.base))?;
        w.end_node()?;
    }
    if desc.test_finisher.is_some() {
        for (name, compatible, value) in [
            ("poweroff", "syscon-poweroff", test_finisher::FINISHER_PASS),
            ("reboot", "syscon-reboot", test_finisher::FINISHER_RESET),
        ] {
            w.begin_node(name)?;
            w.property_u32("value", value)?;
            w.property_u32("offset", 0)?;
            w.property_u32("regmap", PHANDLE_TEST)?;
            w.property_string("compatible", compatible)?;
            w.end_node()?;
        }
    }

    w.begin_node_fmt(format_args!("memory@{:x}", desc.ram.base))?;
    w.property_string("device_type", "memory")?;
    w.property_with("reg", |v| {
        v.u64(desc.ram.base)?;
        v.u64(desc.ram.size)
    })?;
    w.end_node()?;

    write_cpus(&mut w, desc)?;
    write_soc(&mut w, desc)?;

    w.end_node()?;
    w.finish()
}

fn write_chosen(w: &mut FdtWriter<'_>, desc: &MachineDescription<'_>) -> Result<(), FdtError> {
    w.begin_node("chosen")?;
    if let Some(bootargs) = desc.bootargs {
        w.property_string("bootargs", bootargs)?;
    }
    match (desc.stdout_path, desc.uart) {
        (Some(path), _) => w.property_string("stdout-path", path)?,
        (None, Some(uart)) => {
            w.property_fmt("stdout-path", format_args!("/soc/{}@{:x}", slots::UART0.node, uart.base))?
        }
        (None, None) => {}
    }
    if let Some((start, end)) = desc.initrd {
        if end < start {
            return Err(FdtError::InvalidDescription("initrd must end after it starts"));
        }
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node()
}

fn write_cpus(w: &mut FdtWriter<'_>, desc: &MachineDescription<'_>) -> Result<(), FdtError> {
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    w.property_u32("timebase-frequency", desc.timebase_frequency)?;
    for hart in 0..desc.harts {
        w.begin_node_fmt(format_args!("cpu@{hart:x}"))?;
        w.property_u32("phandle", phandle_cpu(hart))?;
        w.property_string("device_type", "cpu")?;
        w.property_u32("reg", hart)?;
        w.property_string("status", "okay")?;
        w.property_string("compatible", "riscv")?;
        w.property_string("riscv,isa", desc.isa)?;
        let mut base = "rv64i";
        w.property_with("riscv,isa-extensions", |v| {
            base = isa_extensions(desc.isa, |ext| v.string(ext))?;
            Ok(())
        })?;
        w.property_string("riscv,isa-base", base)?;
        if let Some(mmu) = desc.mmu_type {
            w.property_string("mmu-type", mmu)?;
        }
        w.begin_node("interrupt-controller")?;
        w.property_u32("#address-cells", 0)?;
        w.property_u32("#interrupt-cells", 1)?;
        w.property_empty("interrupt-controller")?;
        w.property_string("compatible", "riscv,cpu-intc")?;
        w.property_u32("phandle", phandle_intc(hart))?;
        w.end_node()?;
        w.end_node()?;
    }
    w.begin_node("cpu-map")?;
    w.begin_node("cluster0")?;
    for hart in 0..desc.harts {
        w.begin_node_fmt(format_args!("core{hart}"))?;
        w.property_u32("cpu", phandle_cpu(hart))?;
        w.end_node()?;
    }
    w.end_node()?;
    w.end_node()?;
    w.end_node()
}

fn write_reg(w: &mut FdtWriter<'_>, base: u64, size: u64) -> Result<(), FdtError> {
    w.property_with("reg", |v| {
        v.u64(base)?;
        v.u64(size)
    })
}

/// `interrupts-extended` naming two local interrupts of every hart's interrupt controller.
fn write_per_hart_irqs(w: &mut FdtWriter<'_>, harts: u32, first: u32, second: u32) -> Result<(), FdtError> {
    w.property_with("interrupts-extended", |v| {
        (0..harts).try_for_each(|hart| {
            v.u32(phandle_intc(hart))?;
            v.u32(first)?;
            v.u32(phandle_intc(hart))?;
            v.u32(second)
        })
    })
}

fn write_irq_device(w: &mut FdtWriter<'_>, desc: &MachineDescription<'_>, irq: u32) -> Result<(), FdtError> {
    if desc.plic.is_some() {
        w.property_u32("interrupts", irq)?;
        w.property_u32("interrupt-parent", PHANDLE_PLIC)?;
    }
    Ok(())
}

fn write_soc(w: &mut FdtWriter<'_>, desc: &MachineDescription<'_>) -> Result<(), FdtError> {
    w.begin_node("soc")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "simple-bus")?;
    w.property_empty("ranges")?;

    if let Some(test) = desc.test_finisher {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::TEST.node, test.base))?;
        w.property_u32("phandle", PHANDLE_TEST)?;
        write_reg(w, test.base, test.size)?;
        w.property_strings("compatible", slots::TEST.compatible)?;
        w.end_node()?;
    }
    if let Some(uart) = desc.uart {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::UART0.node, uart.base))?;
        write_irq_device(w, desc, uart.irq)?;
        w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
        write_reg(w, uart.base, uart.size)?;
        w.property_strings("compatible", slots::UART0.compatible)?;
        w.end_node()?;
    }
    if let Some(rtc) = desc.rtc {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::RTC.node, rtc.base))?;
        write_irq_device(w, desc, rtc.irq)?;
        write_reg(w, rtc.base, rtc.size)?;
        w.property_strings("compatible", slots::RTC.compatible)?;
        w.end_node()?;
    }
    if let Some(printer) = desc.printer {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::PRINTER.node, printer.base))?;
        write_irq_device(w, desc, printer.irq)?;
        write_reg(w, printer.base, printer.size)?;
        w.property_strings("compatible", slots::PRINTER.compatible)?;
        w.end_node()?;
    }
    for dev in desc.virtio_mmio {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::VIRTIO[0].node, dev.base))?;
        write_irq_device(w, desc, dev.irq)?;
        write_reg(w, dev.base, dev.size)?;
        w.property_strings("compatible", slots::VIRTIO[0].compatible)?;
        w.end_node()?;
    }
    if let Some(plic) = desc.plic {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::PLIC.node, plic.base))?;
        w.property_u32("phandle", PHANDLE_PLIC)?;
        w.property_u32("riscv,ndev", plic.ndev)?;
        write_reg(w, plic.base, plic.size)?;
        write_per_hart_irqs(w, desc.harts, IRQ_M_EXT, IRQ_S_EXT)?;
        w.property_empty("interrupt-controller")?;
        w.property_strings("compatible", slots::PLIC.compatible)?;
        w.property_u32("#address-cells", 0)?;
        w.property_u32("#interrupt-cells", 1)?;
        w.end_node()?;
    }
    if let Some(clint) = desc.clint {
        w.begin_node_fmt(format_args!("{}@{:x}", slots::CLINT.node, clint.base))?;
        write_per_hart_irqs(w, desc.harts, IRQ_M_SOFT, IRQ_M_TIMER)?;
        write_reg(w, clint.base, clint.size)?;
        w.property_strings("compatible", slots::CLINT.compatible)?;
        w.end_node()?;
    }
    w.end_node()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// Every node of a parsed blob, depth first: its path and its properties in order.
    type Tree = Vec<(String, Vec<(String, Vec<u8>)>)>;

    fn collect(node: fdt::node::FdtNode<'_, '_>, path: String, out: &mut Tree) {
        let props = node.properties().map(|p| (String::from(p.name), p.value.to_vec())).collect();
        out.push((path.clone(), props));
        for child in node.children() {
            let child_path = if path == "/" { format!("/{}", child.name) } else { format!("{path}/{}", child.name) };
            collect(child, child_path, out);
        }
    }

    fn parse(blob: &[u8]) -> Tree {
        let tree = fdt::Fdt::new(blob).expect("the fdt crate accepts the blob");
        assert_eq!(tree.total_size(), blob.len());
        let root = tree.find_node("/").expect("root node");
        let mut out = Vec::new();
        collect(root, String::from("/"), &mut out);
        out
    }

    fn dtb(desc: &MachineDescription<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        let len = write_dtb(desc, &mut buf).expect("write_dtb");
        buf.truncate(len);
        if let Some(dir) = std::env::var_os("TRAPEZE_DUMP_DTB") {
            // Development aid: `TRAPEZE_DUMP_DTB=/tmp cargo test -p trapeze fdt` leaves each blob there for
            // `dtc -I dtb -O dts`.
            let name = format!("trapeze-{}harts-{}.dtb", desc.harts, desc.virtio_mmio.len());
            std::fs::write(std::path::Path::new(&dir).join(name), &buf).expect("dump dtb");
        }
        buf
    }

    fn cells(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    fn strs(values: &[&str]) -> Vec<u8> {
        values.iter().flat_map(|s| s.bytes().chain([0])).collect()
    }

    fn reg(base: u64, size: u64) -> Vec<u8> {
        [base, size].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    fn hdr(blob: &[u8], word: usize) -> u32 {
        be32(blob, word * 4).unwrap()
    }

    /// The tree `MachineDescription::qemu_virt(1, 128 MiB)` with bootargs, initrd and two virtio transports must
    /// give, node by node and property by property.
    fn expected_one_hart() -> Tree {
        let p = |name: &str, value: Vec<u8>| (String::from(name), value);
        let node = |path: &str, props: Vec<(String, Vec<u8>)>| (String::from(path), props);
        vec![
            node(
                "/",
                vec![
                    p("#address-cells", cells(&[2])),
                    p("#size-cells", cells(&[2])),
                    p("compatible", strs(&["riscv-virtio"])),
                    p("model", strs(&["riscv-virtio,qemu"])),
                ],
            ),
            node(
                "/chosen",
                vec![
                    p("bootargs", strs(&["console=ttyS0 earlycon"])),
                    p("stdout-path", strs(&["/soc/serial@10000000"])),
                    p("linux,initrd-start", 0x8400_0000u64.to_be_bytes().to_vec()),
                    p("linux,initrd-end", 0x8410_0000u64.to_be_bytes().to_vec()),
                ],
            ),
            node("/aliases", vec![p("serial0", strs(&["/soc/serial@10000000"]))]),
            node(
                "/poweroff",
                vec![
                    p("value", cells(&[0x5555])),
                    p("offset", cells(&[0])),
                    p("regmap", cells(&[PHANDLE_TEST])),
                    p("compatible", strs(&["syscon-poweroff"])),
                ],
            ),
            node(
                "/reboot",
                vec![
                    p("value", cells(&[0x7777])),
                    p("offset", cells(&[0])),
                    p("regmap", cells(&[PHANDLE_TEST])),
                    p("compatible", strs(&["syscon-reboot"])),
                ],
            ),
            node("/memory@80000000", vec![p("device_type", strs(&["memory"])), p("reg", reg(0x8000_0000, 128 << 20))]),
            node(
                "/cpus",
                vec![
                    p("#address-cells", cells(&[1])),
                    p("#size-cells", cells(&[0])),
                    p("timebase-frequency", cells(&[10_000_000])),
                ],
            ),
            node(
                "/cpus/cpu@0",
                vec![
                    p("phandle", cells(&[3])),
                    p("device_type", strs(&["cpu"])),
                    p("reg", cells(&[0])),
                    p("status", strs(&["okay"])),
                    p("compatible", strs(&["riscv"])),
                    p("riscv,isa", strs(&["rv64imafdc_zicsr_zifencei"])),
                    p("riscv,isa-extensions", strs(&["i", "m", "a", "f", "d", "c", "zicsr", "zifencei"])),
                    p("riscv,isa-base", strs(&["rv64i"])),
                    p("mmu-type", strs(&["riscv,sv39"])),
                ],
            ),
            node(
                "/cpus/cpu@0/interrupt-controller",
                vec![
                    p("#address-cells", cells(&[0])),
                    p("#interrupt-cells", cells(&[1])),
                    p("interrupt-controller", vec![]),
                    p("compatible", strs(&["riscv,cpu-intc"])),
                    p("phandle", cells(&[4])),
                ],
            ),
            node("/cpus/cpu-map", vec![]),
            node("/cpus/cpu-map/cluster0", vec![]),
            node("/cpus/cpu-map/cluster0/core0", vec![p("cpu", cells(&[3]))]),
            node(
                "/soc",
                vec![
                    p("#address-cells", cells(&[2])),
                    p("#size-cells", cells(&[2])),
                    p("compatible", strs(&["simple-bus"])),
                    p("ranges", vec![]),
                ],
            ),
            node(
                "/soc/test@100000",
                vec![
                    p("phandle", cells(&[PHANDLE_TEST])),
                    p("reg", reg(0x10_0000, 0x1000)),
                    p("compatible", strs(&["sifive,test1", "sifive,test0", "syscon"])),
                ],
            ),
            node(
                "/soc/serial@10000000",
                vec![
                    p("interrupts", cells(&[10])),
                    p("interrupt-parent", cells(&[PHANDLE_PLIC])),
                    p("clock-frequency", cells(&[3_686_400])),
                    p("reg", reg(0x1000_0000, 0x100)),
                    p("compatible", strs(&["ns16550a"])),
                ],
            ),
            node(
                "/soc/virtio_mmio@10001000",
                vec![
                    p("interrupts", cells(&[1])),
                    p("interrupt-parent", cells(&[PHANDLE_PLIC])),
                    p("reg", reg(0x1000_1000, 0x1000)),
                    p("compatible", strs(&["virtio,mmio"])),
                ],
            ),
            node(
                "/soc/virtio_mmio@10002000",
                vec![
                    p("interrupts", cells(&[2])),
                    p("interrupt-parent", cells(&[PHANDLE_PLIC])),
                    p("reg", reg(0x1000_2000, 0x1000)),
                    p("compatible", strs(&["virtio,mmio"])),
                ],
            ),
            node(
                "/soc/plic@c000000",
                vec![
                    p("phandle", cells(&[PHANDLE_PLIC])),
                    p("riscv,ndev", cells(&[0x60])),
                    p("reg", reg(0xc00_0000, 0x60_0000)),
                    p("interrupts-extended", cells(&[4, 11, 4, 9])),
                    p("interrupt-controller", vec![]),
                    p("compatible", strs(&["sifive,plic-1.0.0", "riscv,plic0"])),
                    p("#address-cells", cells(&[0])),
                    p("#interrupt-cells", cells(&[1])),
                ],
            ),
            node(
                "/soc/clint@2000000",
                vec![
                    p("interrupts-extended", cells(&[4, 3, 4, 7])),
                    p("reg", reg(0x200_0000, 0x1_0000)),
                    p("compatible", strs(&["sifive,clint0", "riscv,clint0"])),
                ],
            ),
        ]
    }

    fn one_hart_desc() -> MachineDescription<'static> {
        MachineDescription {
            virtio_mmio: &QEMU_VIRT_VIRTIO[..2],
            bootargs: Some("console=ttyS0 earlycon"),
            initrd: Some((0x8400_0000, 0x8410_0000)),
            ..MachineDescription::qemu_virt(1, 128 << 20)
        }
    }

    #[test]
    fn one_hart_tree_reads_back_node_by_node() {
        let blob = dtb(&one_hart_desc());
        let got = parse(&blob);
        let want = expected_one_hart();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn standard_nodes_read_back_through_the_fdt_crate() {
        let blob = dtb(&one_hart_desc());
        let tree = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(tree.root().model(), "riscv-virtio,qemu");
        assert_eq!(tree.chosen().bootargs(), Some("console=ttyS0 earlycon"));
        assert_eq!(tree.chosen().stdout().map(|n| n.name), Some("serial@10000000"));
        let ram: Vec<_> = tree.memory().regions().map(|r| (r.starting_address as usize, r.size)).collect();
        assert_eq!(ram, [(0x8000_0000, Some(128 << 20))]);
        let cpus: Vec<_> = tree.cpus().collect();
        assert_eq!(cpus.len(), 1);
        assert_eq!(cpus[0].ids().first(), 0);
        assert_eq!(cpus[0].timebase_frequency(), 10_000_000);
        let serial = tree.find_compatible(&["ns16550a"]).unwrap();
        let mut serial_reg = serial.reg().unwrap();
        let r = serial_reg.next().unwrap();
        assert_eq!((r.starting_address as usize, r.size), (0x1000_0000, Some(0x100)));
        assert_eq!(serial.interrupt_parent().map(|n| n.name), Some("plic@c000000"));
        assert_eq!(serial.interrupts().unwrap().collect::<Vec<_>>(), [10]);
        assert_eq!(tree.find_phandle(PHANDLE_TEST).map(|n| n.name), Some("test@100000"));
        assert_eq!(tree.find_phandle(4).map(|n| n.name), Some("interrupt-controller"));
        assert_eq!(tree.aliases().and_then(|a| a.resolve("serial0")), Some("/soc/serial@10000000"));
        assert_eq!(tree.memory_reservations().count(), 0);
    }

    /// Found by the `fdt` fuzz target: an empty reservation at address 0 was written as the block's all-zero
    /// terminator, so a parser stopped there and never saw the reservations after it. Empty ones are left out.
    #[test]
    fn empty_reservations_are_left_out_and_hide_nothing() {
        let reserved =
            [Region { base: 0, size: 0 }, Region { base: 0x8800_0000, size: 0x1000 }, Region { base: 7, size: 0 }];
        let desc = MachineDescription { reserved: &reserved, ..MachineDescription::qemu_virt(1, 64 << 20) };
        let blob = dtb(&desc);
        assert_eq!(hdr(&blob, 2), 40 + 16 * 2, "one reservation and the terminator");
        let tree = fdt::Fdt::new(&blob).unwrap();
        let parsed: Vec<_> = tree.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
        assert_eq!(parsed, [(0x8800_0000, 0x1000)]);
    }

    #[test]
    fn header_and_blocks_are_well_formed() {
        let reserved = [Region { base: 0x8000_0000, size: 0x4_0000 }, Region { base: 0x8800_0000, size: 0x1000 }];
        let desc = MachineDescription { reserved: &reserved, ..MachineDescription::qemu_virt(2, 256 << 20) };
        let blob = dtb(&desc);
        assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
        let (total, off_struct, off_strings, off_rsv) = (hdr(&blob, 1), hdr(&blob, 2), hdr(&blob, 3), hdr(&blob, 4));
        assert_eq!(total as usize, blob.len());
        assert_eq!((hdr(&blob, 5), hdr(&blob, 6), hdr(&blob, 7)), (17, 16, 0));
        let (size_strings, size_struct) = (hdr(&blob, 8), hdr(&blob, 9));
        assert_eq!(off_rsv, 40);
        assert_eq!(off_rsv % 8, 0);
        assert_eq!(off_struct % 4, 0);
        assert_eq!(size_struct % 4, 0);
        assert_eq!(off_struct, off_rsv + 16 * 3, "two reservations and the terminator");
        assert_eq!(off_struct + size_struct, off_strings);
        assert_eq!(off_strings + size_strings, total);
        // The memory reservation block, big-endian, with its all-zero terminator.
        let rsv = &blob[40..off_struct as usize];
        assert_eq!(&rsv[..16], &reg(0x8000_0000, 0x4_0000)[..]);
        assert_eq!(&rsv[16..32], &reg(0x8800_0000, 0x1000)[..]);
        assert_eq!(&rsv[32..], &[0; 16]);
        let tree = fdt::Fdt::new(&blob).unwrap();
        let parsed: Vec<_> = tree.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
        assert_eq!(parsed, [(0x8000_0000, 0x4_0000), (0x8800_0000, 0x1000)]);
        // The structure block starts with the root and ends with FDT_END.
        assert_eq!(be32(&blob, off_struct as usize), Some(FDT_BEGIN_NODE));
        assert_eq!(be32(&blob, (off_strings - 4) as usize), Some(FDT_END));
        // Strings are de-duplicated: each name once, and the block ends with a NUL.
        let strings = &blob[off_strings as usize..];
        assert_eq!(strings.last(), Some(&0));
        let names: Vec<&str> = tree.strings().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
        assert!(names.contains(&"compatible") && names.contains(&"phandle") && names.contains(&"reg"));
        // Every property's nameoff points at the start of a name in the strings block.
        let mut at = off_struct as usize;
        let mut props = 0;
        loop {
            let token = be32(&blob, at).unwrap();
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let nul = blob[at..].iter().position(|&b| b == 0).unwrap();
                    at = align4(at + nul + 1).unwrap();
                }
                FDT_PROP => {
                    let len = be32(&blob, at).unwrap() as usize;
                    let nameoff = be32(&blob, at + 4).unwrap() as usize;
                    assert!(nameoff < size_strings as usize);
                    assert!(nameoff == 0 || strings[nameoff - 1] == 0, "nameoff {nameoff} inside a name");
                    at = align4(at + 8 + len).unwrap();
                    props += 1;
                }
                FDT_END_NODE => {}
                FDT_END => break,
                other => panic!("unexpected token {other:#x} at {at}"),
            }
        }
        assert_eq!(at, off_strings as usize);
        assert!(props > names.len());
    }

    #[test]
    fn four_harts() {
        let desc = MachineDescription { virtio_mmio: &QEMU_VIRT_VIRTIO, ..MachineDescription::qemu_virt(4, 1 << 30) };
        let blob = dtb(&desc);
        let got = parse(&blob);
        let find = |path: &str| got.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("no {path}"));
        let prop = |path: &str, name: &str| {
            find(path).1.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {path}:{name}")).1.clone()
        };
        let tree = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(tree.cpus().map(|c| c.ids().first()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        for hart in 0..4u32 {
            let cpu = format!("/cpus/cpu@{hart}");
            assert_eq!(prop(&cpu, "reg"), cells(&[hart]));
            assert_eq!(prop(&cpu, "phandle"), cells(&[phandle_cpu(hart)]));
            assert_eq!(prop(&format!("{cpu}/interrupt-controller"), "phandle"), cells(&[phandle_intc(hart)]));
            assert_eq!(prop(&format!("/cpus/cpu-map/cluster0/core{hart}"), "cpu"), cells(&[phandle_cpu(hart)]));
        }
        assert_eq!(
            prop("/soc/clint@2000000", "interrupts-extended"),
            cells(&[4, 3, 4, 7, 6, 3, 6, 7, 8, 3, 8, 7, 10, 3, 10, 7])
        );
        assert_eq!(
            prop("/soc/plic@c000000", "interrupts-extended"),
            cells(&[4, 11, 4, 9, 6, 11, 6, 9, 8, 11, 8, 9, 10, 11, 10, 9])
        );
        for (i, dev) in QEMU_VIRT_VIRTIO.iter().enumerate() {
            let path = format!("/soc/virtio_mmio@{:x}", 0x1000_1000 + 0x1000 * i);
            assert_eq!(prop(&path, "reg"), reg(dev.base, dev.size));
            assert_eq!(prop(&path, "interrupts"), cells(&[i as u32 + 1]));
        }
        assert_eq!(prop("/memory@80000000", "reg"), reg(0x8000_0000, 1 << 30));
        assert!(find("/chosen").1.iter().all(|(n, _)| n == "stdout-path"));
        // Phandles are unique across the tree.
        let mut phandles: Vec<Vec<u8>> = got
            .iter()
            .flat_map(|(_, props)| props.iter().filter(|(n, _)| n == "phandle").map(|(_, v)| v.clone()))
            .collect();
        let count = phandles.len();
        phandles.sort();
        phandles.dedup();
        assert_eq!(phandles.len(), count);
        assert_eq!(count, 2 + 2 * 4);
    }

    /// Every device node of the `virt` devicetree sits where the slot table says, raises the table's source
    /// and carries its compatible list, and every slot of the table has its node: the devicetree cannot drift
    /// from the bus.
    #[test]
    fn every_node_is_where_the_slot_table_puts_it() {
        let desc = MachineDescription {
            rtc: Some(QEMU_VIRT_RTC),
            printer: Some(QEMU_VIRT_PRINTER),
            virtio_mmio: &QEMU_VIRT_VIRTIO,
            ..MachineDescription::qemu_virt(2, 1 << 28)
        };
        let got = parse(&dtb(&desc));
        let prop = |path: &str, name: &str| {
            got.iter()
                .find(|(p, _)| p == path)
                .and_then(|(_, props)| props.iter().find(|(n, _)| n == name).map(|(_, value)| value.clone()))
        };
        let mut table: Vec<slots::Slot> = slots::ALL_FIXED.to_vec();
        table.extend_from_slice(&slots::VIRTIO);
        for slot in &table {
            let path = format!("/soc/{}@{:x}", slot.node, slot.base);
            assert_eq!(prop(&path, "reg"), Some(reg(slot.base, slot.size)), "{path}");
            assert_eq!(prop(&path, "compatible"), Some(strs(slot.compatible)), "{path}");
            assert_eq!(prop(&path, "interrupts"), slot.irq.map(|irq| cells(&[irq])), "{path}");
        }
        let soc_devices = got.iter().filter(|(path, _)| path.starts_with("/soc/") && path.contains('@')).count();
        assert_eq!(soc_devices, table.len(), "a node the slot table does not know");
    }

    #[test]
    fn a_goldfish_rtc_is_described_as_qemu_virt_describes_it() {
        let without = parse(&dtb(&MachineDescription::qemu_virt(1, 16 << 20)));
        assert!(without.iter().all(|(path, _)| !path.contains("rtc")), "no RTC unless given one");
        let desc = MachineDescription { rtc: Some(QEMU_VIRT_RTC), ..MachineDescription::qemu_virt(1, 16 << 20) };
        let blob = dtb(&desc);
        let got = parse(&blob);
        let (_, props) = got.iter().find(|(path, _)| path == "/soc/rtc@101000").expect("an rtc node");
        let prop = |name: &str| props.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(prop("compatible"), Some(b"google,goldfish-rtc\0".to_vec()));
        assert_eq!(prop("reg"), Some(reg(0x10_1000, 0x1000)));
        assert_eq!(prop("interrupts"), Some(cells(&[11])));
        assert_eq!(prop("interrupt-parent"), Some(cells(&[PHANDLE_PLIC])));
        let tree = fdt::Fdt::new(&blob).unwrap();
        let node = tree.find_compatible(&["google,goldfish-rtc"]).expect("found by compatible");
        let region = node.reg().unwrap().next().unwrap();
        assert_eq!((region.starting_address as u64, region.size), (0x10_1000, Some(0x1000)));
    }

    #[test]
    fn too_small_buffers_fail_without_panicking() {
        for desc in [one_hart_desc(), MachineDescription::qemu_virt(4, 1 << 30)] {
            let full = dtb(&desc);
            for len in 0..full.len() {
                let mut buf = vec![0xa5u8; len];
                assert_eq!(write_dtb(&desc, &mut buf), Err(FdtError::BufferTooSmall), "buffer of {len} bytes");
            }
            // The exact size suffices, and leftover bytes in a larger buffer do not change the blob.
            let mut exact = vec![0xa5u8; full.len()];
            assert_eq!(write_dtb(&desc, &mut exact), Ok(full.len()));
            assert_eq!(exact, full);
            let mut dirty = vec![0xa5u8; full.len() + 999];
            assert_eq!(write_dtb(&desc, &mut dirty), Ok(full.len()));
            assert_eq!(&dirty[..full.len()], &full[..]);
        }
    }

    #[test]
    fn description_is_validated() {
        let mut buf = [0u8; 8192];
        let base = MachineDescription::qemu_virt(1, 1 << 20);
        for desc in [
            MachineDescription { harts: 0, ..base },
            MachineDescription { harts: MAX_HARTS + 1, ..base },
            MachineDescription { boot_hart: 1, ..base },
            MachineDescription { isa: "rv64", ..base },
            MachineDescription { isa: "x86_64", ..base },
            MachineDescription { isa: "rv64imac__zicsr", ..base },
            MachineDescription { isa: "RV64IMAC", ..base },
            MachineDescription { initrd: Some((0x8100_0000, 0x8000_0000)), ..base },
        ] {
            assert!(matches!(write_dtb(&desc, &mut buf), Err(FdtError::InvalidDescription(_))), "{desc:?}");
        }
    }

    #[test]
    fn isa_strings_expand_to_extension_lists() {
        let list = |isa: &str| {
            let mut exts: Vec<&'static str> = Vec::new();
            let base = isa_extensions(isa, |e| {
                exts.push(String::from(e).leak());
                Ok(())
            })
            .unwrap();
            (base, exts)
        };
        let (base, exts) = list("rv64gc");
        assert_eq!((base, exts), ("rv64i", vec!["i", "m", "a", "f", "d", "c", "zicsr", "zifencei"]));
        let (base, exts) = list("rv64gc_zifencei_zba");
        assert_eq!((base, exts), ("rv64i", vec!["i", "m", "a", "f", "d", "c", "zba", "zicsr", "zifencei"]));
        let (base, exts) = list("rv32imac");
        assert_eq!((base, exts), ("rv32i", vec!["i", "m", "a", "c"]));
        assert_eq!(list("rv64imafdch_zicsr_zifencei_zihintpause_sstc").1.len(), 11);
    }

    #[test]
    fn optional_devices_can_be_left_out() {
        let desc = MachineDescription {
            uart: None,
            clint: None,
            plic: None,
            test_finisher: None,
            mmu_type: None,
            virtio_mmio: &QEMU_VIRT_VIRTIO[..1],
            ..MachineDescription::qemu_virt(1, 1 << 20)
        };
        let got = parse(&dtb(&desc));
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/chosen",
                "/memory@80000000",
                "/cpus",
                "/cpus/cpu@0",
                "/cpus/cpu@0/interrupt-controller",
                "/cpus/cpu-map",
                "/cpus/cpu-map/cluster0",
                "/cpus/cpu-map/cluster0/core0",
                "/soc",
                "/soc/virtio_mmio@10001000",
            ]
        );
        let virtio = &got.last().unwrap().1;
        assert!(virtio.iter().all(|(n, _)| n != "interrupts" && n != "interrupt-parent"));
        assert!(got[4].1.iter().all(|(n, _)| n != "mmu-type"));
        assert!(got[1].1.is_empty(), "no stdout-path without a UART");
    }

    #[test]
    fn writer_rejects_malformed_trees() {
        let mut buf = [0u8; 1024];
        let mut w = FdtWriter::new(&mut buf, &[]).unwrap();
        assert_eq!(w.property_u32("x", 1), Err(FdtError::Unbalanced), "property outside the root");
        assert_eq!(w.end_node(), Err(FdtError::Unbalanced));
        assert_eq!(w.begin_node("named-root"), Err(FdtError::InvalidName));
        w.begin_node("").unwrap();
        assert_eq!(w.begin_node(""), Err(FdtError::InvalidName));
        assert_eq!(w.begin_node("a/b"), Err(FdtError::InvalidName));
        assert_eq!(w.begin_node_fmt(format_args!("bad name")), Err(FdtError::InvalidName));
        assert_eq!(w.property_u32("", 1), Err(FdtError::InvalidName));
        assert_eq!(w.property_u32("has space", 1), Err(FdtError::InvalidName));
        assert_eq!(w.property_u32("a-name-of-thirty-two-characters-", 1), Err(FdtError::InvalidName));
        w.begin_node("child").unwrap();
        w.end_node().unwrap();
        assert_eq!(w.property_u32("late", 1), Err(FdtError::Unbalanced), "property after a subnode");
        w.end_node().unwrap();
        assert_eq!(w.begin_node("second-root"), Err(FdtError::Unbalanced));
        let len = w.finish().unwrap();
        // The rejected calls left nothing behind.
        let got = parse(&buf[..len]);
        assert_eq!(got, [(String::from("/"), vec![]), (String::from("/child"), vec![])]);
        assert_eq!(fdt::Fdt::new(&buf[..len]).unwrap().strings().count(), 0);

        let mut buf = [0u8; 1024];
        let mut w = FdtWriter::new(&mut buf, &[]).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(w.finish(), Err(FdtError::Unbalanced), "root still open");
        let mut buf = [0u8; 1024];
        assert_eq!(FdtWriter::new(&mut buf, &[]).unwrap().finish(), Err(FdtError::Unbalanced), "no root");
        let mut tiny = [0u8; 39];
        assert!(matches!(FdtWriter::new(&mut tiny, &[]), Err(FdtError::BufferTooSmall)));
    }

    #[test]
    fn writer_shares_name_suffixes_and_writes_exact_bytes() {
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf, &[]).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_u32("size-cells", 2).unwrap(); // shares the tail of "#size-cells"
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("s", "ab").unwrap();
        w.end_node().unwrap();
        let len = w.finish().unwrap();
        let blob = &buf[..len];
        let strings = &blob[hdr(blob, 3) as usize..];
        assert_eq!(strings, b"#size-cells\0", "\"size-cells\" and \"s\" are tails of \"#size-cells\"");
        let structure = &blob[hdr(blob, 2) as usize..hdr(blob, 3) as usize];
        let words: Vec<u32> = structure.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
        assert_eq!(words, [1, 0, 3, 4, 0, 2, 3, 4, 1, 2, 3, 4, 0, 2, 3, 3, 10, 0x6162_0000, 2, 9]);
    }

    #[test]
    fn a_property_that_runs_out_of_room_is_undone() {
        let mut buf = [0u8; 160];
        let mut w = FdtWriter::new(&mut buf, &[]).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(w.property("big", &[0x55; 200]), Err(FdtError::BufferTooSmall));
        assert_eq!(w.begin_node_fmt(format_args!("{:0200}", 1)), Err(FdtError::BufferTooSmall));
        w.property_u32("small", 7).unwrap();
        w.end_node().unwrap();
        let len = w.finish().unwrap();
        assert_eq!(parse(&buf[..len]), [(String::from("/"), vec![(String::from("small"), cells(&[7]))])]);
        assert_eq!(fdt::Fdt::new(&buf[..len]).unwrap().strings().collect::<Vec<_>>(), ["small"]);
    }

    proptest::proptest! {
        #[test]
        fn any_machine_and_buffer_size_parses_or_is_too_small(
            harts in 1u32..=64,
            virtio in 0usize..=8,
            ram_mib in 1u64..=(1 << 20),
            bootargs in proptest::option::of("[a-z0-9=. ]{0,40}"),
            len in 0usize..20_000,
        ) {
            let desc = MachineDescription {
                virtio_mmio: &QEMU_VIRT_VIRTIO[..virtio],
                bootargs: bootargs.as_deref(),
                ..MachineDescription::qemu_virt(harts, ram_mib << 20)
            };
            let mut buf = vec![0u8; len];
            match write_dtb(&desc, &mut buf) {
                Ok(used) => {
                    let tree = fdt::Fdt::new(&buf[..used]).unwrap();
                    proptest::prop_assert_eq!(tree.cpus().count(), harts as usize);
                    proptest::prop_assert_eq!(tree.chosen().bootargs(), bootargs.as_deref());
                    let virtio_nodes = tree.all_nodes().filter(|n| n.name.starts_with("virtio_mmio@")).count();
                    proptest::prop_assert_eq!(virtio_nodes, virtio);
                }
                Err(e) => proptest::prop_assert_eq!(e, FdtError::BufferTooSmall),
            }
        }
    }
}
