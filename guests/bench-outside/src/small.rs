//! `bench-outside-small`: the `outside` workload of `trapeze bench` (see `workload.rs`) at the small scale the
//! tests run (one round, about 22 million instructions).
#![no_std]
#![no_main]

mod workload;

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    workload::run("bench-outside-small", outside_kernels::SMALL)
}
