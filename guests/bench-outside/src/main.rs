//! `bench-outside`: the measured `outside` workload of `trapeze bench` (see `workload.rs`), at full scale.
#![no_std]
#![no_main]

mod workload;

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    workload::run("bench-outside", outside_kernels::FULL)
}
