//! `bench-mem`: the measured mem workload of `trapeze bench` (see `workload.rs`), at full scale.
#![no_std]
#![no_main]

mod workload;

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    workload::run("bench-mem", bench_kernels::mem::FULL)
}
