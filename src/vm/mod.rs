//! The virtual machine and its construction: harts, RAM, devices, guest loading.

pub mod fdt;
pub mod loader;
mod machine;
pub use machine::{
    Clock, Devices, HartStep, RunOutcome, TimeSource, TrapObserver, TrapTaken, Vm, VmError, MAX_HARTS, SLICE,
    TIMEBASE_HZ,
};
pub mod boot;
pub mod sbi;
pub mod virt;
