//! The CLINT of the QEMU `virt` machine, hart 0's registers only.

/// `msip` of hart 0.
pub const MSIP: usize = 0x0200_0000;
/// `mtimecmp` of hart 0.
pub const MTIMECMP: usize = 0x0200_4000;
/// `mtime`.
pub const MTIME: usize = 0x0200_bff8;

/// Reads `mtime`.
pub fn mtime() -> u64 {
    // SAFETY: the CLINT `mtime` register of the `virt` memory map.
    unsafe { core::ptr::read_volatile(MTIME as *const u64) }
}

/// Writes `mtimecmp` of hart 0.
pub fn set_mtimecmp(value: u64) {
    // SAFETY: the CLINT `mtimecmp` register of hart 0.
    unsafe { core::ptr::write_volatile(MTIMECMP as *mut u64, value) };
}

/// Writes `msip` of hart 0 (1 raises its machine software interrupt, 0 clears it).
pub fn set_msip(value: u32) {
    // SAFETY: the CLINT `msip` register of hart 0.
    unsafe { core::ptr::write_volatile(MSIP as *mut u32, value) };
}
