//! Macros to read and write control and status registers by name or number.

/// Reads a CSR: `csr_read!("mscratch")` or `csr_read!("0x340")`; the value is a `u64`.
#[macro_export]
macro_rules! csr_read {
    ($csr:literal) => {{
        let value: u64;
        // SAFETY: reading a CSR has no memory effects; an unimplemented one traps to the installed handler.
        unsafe { core::arch::asm!(concat!("csrr {0}, ", $csr), out(reg) value, options(nostack)) };
        value
    }};
}

/// Writes a CSR: `csr_write!("mscratch", value)`.
#[macro_export]
macro_rules! csr_write {
    ($csr:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the caller picks a CSR whose new value keeps the program running.
        unsafe { core::arch::asm!(concat!("csrw ", $csr, ", {0}"), in(reg) value, options(nostack)) };
    }};
}

/// Sets bits of a CSR: `csr_set!("mstatus", mask)`.
#[macro_export]
macro_rules! csr_set {
    ($csr:literal, $mask:expr) => {{
        let mask: u64 = $mask;
        // SAFETY: the caller picks bits whose new value keeps the program running.
        unsafe { core::arch::asm!(concat!("csrs ", $csr, ", {0}"), in(reg) mask, options(nostack)) };
    }};
}

/// Clears bits of a CSR: `csr_clear!("mstatus", mask)`.
#[macro_export]
macro_rules! csr_clear {
    ($csr:literal, $mask:expr) => {{
        let mask: u64 = $mask;
        // SAFETY: the caller picks bits whose new value keeps the program running.
        unsafe { core::arch::asm!(concat!("csrc ", $csr, ", {0}"), in(reg) mask, options(nostack)) };
    }};
}
