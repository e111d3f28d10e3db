//! The virtual machine and its construction: harts, RAM, devices, guest loading.

pub mod fdt;
pub mod loader;
mod machine;
pub use machine::{Clock, RunOutcome, Vm, SLICE, TIMEBASE_HZ};
