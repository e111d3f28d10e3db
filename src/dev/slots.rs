//! The slot table of QEMU's `virt` machine: where every standard device sits (base, window size, PLIC source)
//! and how the devicetree names it, defined once.
//!
//! The bus ([`VirtDevices`](crate::vm::virt::VirtDevices)), the devicetree generator ([`crate::vm::fdt`]), the
//! hosted runner and the native board all read addresses and interrupt numbers from here, so a guest never
//! finds a device at one address in its devicetree and at another on the bus. The values are QEMU's
//! (`hw/riscv/virt.c`, `virt_memmap` and the `*_IRQ` numbers), because guests built for `qemu-system-riscv64
//! -M virt` hard-code some of them.
//!
//! This module holds data only: it never decides which devices a VM gets (the machine's builder does) and
//! never routes an access.

/// One device window of the machine and how the devicetree describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Guest real address of the window's first byte.
    pub base: u64,
    /// Length of the window in bytes.
    pub size: u64,
    /// The PLIC source the device raises, `None` for a device without one (the CLINT, the PLIC itself).
    pub irq: Option<u32>,
    /// The devicetree node name before the `@unit-address` (`serial`, `virtio_mmio`).
    pub node: &'static str,
    /// The node's `compatible` list, most specific first.
    pub compatible: &'static [&'static str],
}

impl Slot {
    /// Whether `addr` falls in the window; the offset into it when it does. Overflow-free for any `addr`.
    pub const fn offset_of(&self, addr: u64) -> Option<u64> {
        let offset = addr.wrapping_sub(self.base);
        if offset < self.size {
            Some(offset)
        } else {
            None
        }
    }

    /// The PLIC source, 0 (no source: the PLIC's reserved id) for a device without one.
    pub const fn irq_or_zero(&self) -> u32 {
        match self.irq {
            Some(irq) => irq,
            None => 0,
        }
    }
}

/// The CLINT: machine software and timer interrupts of every hart.
pub const CLINT: Slot =
    Slot { base: 0x200_0000, size: 0x1_0000, irq: None, node: "clint", compatible: &["sifive,clint0", "riscv,clint0"] };
/// The PLIC (window sized for QEMU's 512 harts).
pub const PLIC: Slot = Slot {
    base: 0xc00_0000,
    size: 0x60_0000,
    irq: None,
    node: "plic",
    compatible: &["sifive,plic-1.0.0", "riscv,plic0"],
};
/// The NS16550A UART (QEMU's `UART0_IRQ`). Its window is QEMU's 0x100 bytes; only the first eight decode.
pub const UART0: Slot =
    Slot { base: 0x1000_0000, size: 0x100, irq: Some(10), node: "serial", compatible: &["ns16550a"] };
/// The SiFive test finisher (`sifive,test0`), also the `syscon` behind the poweroff and reboot nodes.
pub const TEST: Slot = Slot {
    base: 0x10_0000,
    size: 0x1000,
    irq: None,
    node: "test",
    compatible: &["sifive,test1", "sifive,test0", "syscon"],
};
/// The goldfish RTC (QEMU's `RTC_IRQ`). Only the native board gives it to a VM (a dedicated device without DMA).
pub const RTC: Slot =
    Slot { base: 0x10_1000, size: 0x1000, irq: Some(11), node: "rtc", compatible: &["google,goldfish-rtc"] };
/// The spooled printer (`crate::dev::printer`), ours: not in QEMU's `virt`, so placed where QEMU's map has
/// nothing (between the virtio-mmio slots and `fw_cfg` at 0x1010_0000) with a PLIC source QEMU leaves free.
pub const PRINTER: Slot =
    Slot { base: 0x1001_0000, size: 0x1000, irq: Some(12), node: "printer", compatible: &["trapeze,spool-printer"] };

/// Number of virtio-mmio slots (QEMU's `VIRTIO_COUNT`).
pub const VIRTIO_COUNT: usize = 8;
/// Guest real address of virtio-mmio slot 0; slot `i` is at `VIRTIO_BASE + i * VIRTIO_STRIDE`.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
/// Distance between virtio-mmio slots, and each slot's window size. A power of two, so that finding the slot
/// of an address is a shift.
pub const VIRTIO_STRIDE: u64 = 0x1000;
/// PLIC source of virtio-mmio slot 0 (QEMU's `VIRTIO_IRQ`); slot `i` raises `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: u32 = 1;

/// The eight virtio-mmio slots, in slot order (QEMU's devicetree lists them highest address first; the
/// devicetree generator decides the order it writes them in).
pub const VIRTIO: [Slot; VIRTIO_COUNT] = {
    let mut all =
        [Slot { base: 0, size: 0, irq: None, node: "virtio_mmio", compatible: &["virtio,mmio"] }; VIRTIO_COUNT];
    let mut i = 0;
    while i < VIRTIO_COUNT {
        all[i].base = VIRTIO_BASE + VIRTIO_STRIDE * i as u64;
        all[i].size = VIRTIO_STRIDE;
        all[i].irq = Some(VIRTIO_IRQ_BASE + i as u32);
        i += 1;
    }
    all
};

const _: () = assert!(VIRTIO_STRIDE.is_power_of_two());

/// The virtio-mmio slot `addr` falls in and the offset into it: an index computation, no search, so the bus
/// can call it on every access.
pub const fn virtio_slot(addr: u64) -> Option<(usize, u64)> {
    let offset = addr.wrapping_sub(VIRTIO_BASE);
    if offset < VIRTIO_STRIDE * VIRTIO_COUNT as u64 {
        Some(((offset / VIRTIO_STRIDE) as usize, offset % VIRTIO_STRIDE))
    } else {
        None
    }
}

/// Every fixed slot of the machine, for checks that no two windows overlap.
pub const ALL_FIXED: [Slot; 6] = [CLINT, PLIC, UART0, TEST, RTC, PRINTER];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_qemu_virt_and_no_windows_overlap() {
        let mut all: std::vec::Vec<Slot> = ALL_FIXED.to_vec();
        all.extend_from_slice(&VIRTIO);
        for (i, a) in all.iter().enumerate() {
            assert!(a.size > 0 && a.base.checked_add(a.size).is_some());
            for b in &all[i + 1..] {
                assert!(a.base + a.size <= b.base || b.base + b.size <= a.base, "{a:?} overlaps {b:?}");
                if let (Some(x), Some(y)) = (a.irq, b.irq) {
                    assert_ne!(x, y, "two slots raise one PLIC source");
                }
            }
        }
        // QEMU's numbers, written out: a typo in the table fails here.
        assert_eq!((UART0.base, UART0.irq), (0x1000_0000, Some(10)));
        assert_eq!((RTC.base, RTC.irq), (0x10_1000, Some(11)));
        assert_eq!((VIRTIO[7].base, VIRTIO[7].irq), (0x1000_8000, Some(8)));
    }

    #[test]
    fn virtio_slot_is_an_index_computation_for_any_address() {
        assert_eq!(virtio_slot(0x1000_1000), Some((0, 0)));
        assert_eq!(virtio_slot(0x1000_1fff), Some((0, 0xfff)));
        assert_eq!(virtio_slot(0x1000_8ffc), Some((7, 0xffc)));
        assert_eq!(virtio_slot(0x1000_9000), None);
        assert_eq!(virtio_slot(0x1000_0fff), None);
        for addr in [0, u64::MAX, u64::MAX - 0xfff, VIRTIO_BASE.wrapping_neg()] {
            assert_eq!(virtio_slot(addr), None);
        }
        for (i, slot) in VIRTIO.iter().enumerate() {
            assert_eq!(virtio_slot(slot.base + 0x70), Some((i, 0x70)));
            assert_eq!(slot.offset_of(slot.base + 4), Some(4));
        }
    }
}
