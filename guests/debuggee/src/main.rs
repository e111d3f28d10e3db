//! `debuggee`: the guest the gdb stub test debugs (`hosted-test/tests/gdb.rs`), built with debug information.
//!
//! `main` adds 1 to 5 to [`COUNTER`] through [`tick`] (a function to break in and step through, a static to read
//! and watch), prints `spinning` and waits while [`SPIN`] is not zero (gdb interrupts it with Ctrl-C and clears
//! it), then prints the counter and exits 0 if it is 15.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut};

use rt::println;

/// The sum of the steps so far.
#[unsafe(no_mangle)]
static mut COUNTER: u64 = 0;

/// Non-zero while the guest must wait; only a debugger clears it.
#[unsafe(no_mangle)]
static mut SPIN: u32 = 1;

/// Adds `step` to [`COUNTER`] and returns the new value.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn tick(step: u64) -> u64 {
    let counter = addr_of_mut!(COUNTER);
    // SAFETY: only hart 0 runs the program, so nothing else touches the counter.
    unsafe {
        let total = counter.read_volatile() + step;
        counter.write_volatile(total);
        total
    }
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    let mut last = 0;
    for step in 1..=5 {
        last = tick(step);
    }
    println!("spinning");
    // SAFETY: a plain aligned static, read with a volatile load so the loop sees the debugger's write.
    while unsafe { addr_of!(SPIN).read_volatile() } != 0 {}
    println!("counter = {last}");
    if last == 15 {
        0
    } else {
        1
    }
}
