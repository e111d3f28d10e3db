//! placeholder
#![no_std]
#![no_main]
use rt as _;
#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    0
}
