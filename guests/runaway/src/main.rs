//! `runaway`: a guest that never gives the hart back. Prints `runaway: looping with interrupts masked`, clears
//! `mstatus.MIE` and `mie`, and spins forever without `wfi`. A VMM must bound it (an instruction limit, or its
//! own timer on a native board) and keep its other VMs running; the guest never exits by itself.
#![no_std]
#![no_main]

use rt::{csr_clear, csr_write, println};

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    println!("runaway: looping with interrupts masked");
    csr_clear!("mstatus", 1 << 3); // MIE
    csr_write!("mie", 0);
    loop {
        core::hint::spin_loop();
    }
}
