//! trapeze: the `no_std` kernel of a RISC-V virtual machine monitor.
//!
//! One portable core knows the RISC-V machine (the virtual hart, its privileged state, guest memory, the
//! devices). Engines execute guest instructions and return an [`trap::Exit`] for anything the core must decide;
//! the [`trap::Dispatcher`] turns each exit into an effect on the virtual machine. See `docs/ARCHITECTURE.md`.
//!
//! # No `unsafe` in the core
//!
//! Everything a guest can reach (decoder, MMU, devices, SBI, engines) is safe Rust: built without the `dbt`
//! feature the crate is `#![forbid(unsafe_code)]`, so no module can opt out. The x86-64 translator
//! (`exec::dbt`, feature `dbt`) must jump into the host code it generated, which no safe Rust can express: with
//! that feature the crate is `#![deny(unsafe_code)]` instead, and only the few items of `exec::dbt` that need
//! it carry `#[allow(unsafe_code)]` (the `CodeMemory` trait the embedder implements, the call of a translated
//! block, the helpers translated code calls back with its environment), each `unsafe` with its `// SAFETY:`.
//! Unit tests build with `deny` too, so that a test can make what an embedder makes with `unsafe` (the atomic
//! views of shared RAM in `mem::shared_tests`), with `#[allow(unsafe_code)]` on that test module alone.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(all(not(feature = "dbt"), not(test)), forbid(unsafe_code))]
#![cfg_attr(any(feature = "dbt", test), deny(unsafe_code))]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

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

/// The suite's isolation figures (`target/isolation.txt`): the hostile-input tests count what they tried. One
/// file for the whole suite, shared with the hosted tests.
#[cfg(test)]
#[path = "../hosted-test/tests/common/isolation.rs"]
mod isolation;
