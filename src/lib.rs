//! trapeze: the `no_std` kernel of a RISC-V virtual machine monitor.
//!
//! One portable core knows the RISC-V machine (the virtual hart, its privileged state, guest memory, the
//! devices). Engines execute guest instructions and return an [`trap::Exit`] for anything the core must decide;
//! the [`trap::Dispatcher`] turns each exit into an effect on the virtual machine. See `docs/ARCHITECTURE.md`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod cache;
pub mod debug;
pub mod dev;
pub mod exec;
pub mod fpu;
pub mod hart;
pub mod isa;
pub mod mem;
pub mod net;
pub mod patch;
pub mod snapshot;
pub mod trap;
pub mod vm;
