//! `trapeze`: run a RISC-V guest inside a trapeze virtual machine on this host.
fn main() {}
