//! The virtual machine and its construction; for now, loading guest images into RAM.

pub mod loader;
