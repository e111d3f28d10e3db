//! `arith`: RV64IM arithmetic torture test. Runs [`torture::DEFAULT_OPS`] operations of the torture sequence
//! with the real instructions, prints `arith digest: 0x<16 hex digits>` (the hosted test recomputes it natively
//! and compares), and also checks the digest against the plain-Rust model run on the guest itself.
#![no_std]
#![no_main]

use rt::println;
use torture::{Hardware, Model, DEFAULT_OPS};

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    let hardware = torture::digest_with::<Hardware>(DEFAULT_OPS);
    println!("arith digest: {hardware:#018x}");
    let model = torture::digest_with::<Model>(DEFAULT_OPS);
    if model != hardware {
        println!("FAIL: the model computed on the guest gives {model:#018x}");
        return 1;
    }
    0
}
