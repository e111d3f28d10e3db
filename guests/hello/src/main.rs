//! `hello`: the smallest trapeze guest. Prints `Hello from a trapeze guest!` and exits 0 through the finisher.
#![no_std]
#![no_main]

use rt::println;

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    println!("Hello from a trapeze guest!");
    0
}
