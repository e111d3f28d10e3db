//! `bench-outside`: the measured `outside` workload of `trapeze bench`, at full scale (about 171 million
//! instructions): integer kernels written outside this project, on pseudo-random text and arrays: SHA-256 and
//! SHA-512 (`sha2`), BLAKE3 (`blake3`), CRC-32 (`crc32fast`), deflate and inflate (`miniz_oxide`), LZ4 (`lz4_flex`)
//! and the standard library's sorts (see `workload.rs` and the `outside-kernels` crate).
#![no_std]
#![no_main]

mod workload;

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    workload::run("bench-outside", outside_kernels::FULL)
}
