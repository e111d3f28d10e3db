//! The virtual machine and its construction: harts, RAM, devices, guest loading.

pub mod fdt;
pub mod loader;
mod machine;
pub use machine::{
    Clock, Devices, HartLines, HartStep, RunOutcome, SliceActivity, TimeSource, TrapObserver, TrapTaken, Vm, VmError,
    MAX_HARTS, SLICE, SPIN_CHECK, TIMEBASE_HZ,
};
pub mod boot;
mod builder;
pub use builder::VmBuilder;
mod hypervisor;
pub use hypervisor::{Hypervisor, HypervisorError, SliceOutcome, TimedEngine, VmState, IDLE_RECHECK};
pub mod parallel;
pub mod sbi;
pub mod virt;
