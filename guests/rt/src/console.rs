//! Polled console on the 16550 UART of the QEMU `virt` machine (base 0x1000_0000, byte registers).
use core::fmt;

/// Base address of the UART; the transmit holding register is at offset 0.
pub const UART_BASE: usize = 0x1000_0000;
/// Offset of the line status register.
const LSR: usize = 5;
/// LSR bit: the transmit holding register is empty.
const LSR_THRE: u8 = 1 << 5;

/// Writes one byte to the UART, waiting until the transmitter can take it.
pub fn putb(byte: u8) {
    // SAFETY: the UART registers are device memory at fixed addresses of the `virt` memory map; byte accesses.
    unsafe {
        while core::ptr::read_volatile((UART_BASE + LSR) as *const u8) & LSR_THRE == 0 {}
        core::ptr::write_volatile(UART_BASE as *mut u8, byte);
    }
}

/// Writes the bytes of `s` to the UART as they are (no newline translation).
pub fn puts(s: &str) {
    s.bytes().for_each(putb);
}

/// The UART as a [`fmt::Write`] sink.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        puts(s);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Console never fails.
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// Prints to the UART console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(format_args!($($arg)*))
    };
}

/// Prints to the UART console with a trailing `\n`, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::putb(b'\n')
    };
    ($($arg:tt)*) => {{
        $crate::console::_print(format_args!($($arg)*));
        $crate::console::putb(b'\n');
    }};
}
