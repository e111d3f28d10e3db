//! The patching subsystem: what the native engine must not let a guest execute as it is, and how guest code is
//! scanned and patched so that it traps where it must.
//!
//! The native board runs guest code in real U-mode and relies on every *sensitive* instruction (one that reads or
//! changes what the VMM owns) trapping, so that the dispatcher can emulate it on the virtual hart. Popek and
//! Goldberg's theorem says that is enough when every sensitive instruction is privileged; an instruction that is
//! sensitive and does not trap is *critical*, and must be found and patched into a trap before it runs.
//!
//! - [`sensitivity`]: the sensitivity table, every RV64GC instruction class and every CSR access classified as
//!   privileged, control-sensitive, behaviour-sensitive or innocuous for a VMM configuration, and the critical
//!   set derived from it.
//! - [`scan`]: the scanner, which decodes a guest page along the paths execution reaches when it first runs
//!   there and patches each critical instruction into a trap.
//! - [`table`]: the patch table, the original bytes of every patched site by guest-physical address, the
//!   scanned pages, and the helpers that keep patches invisible to guest reads and writes.
//! - [`copies`]: patched copies of guest code pages, so that the native engine patches without ever changing
//!   guest RAM (what the guest, the VMM and an emulating engine read is always what the guest wrote).
//!
//! The sensitivity table is pure: it never touches hart or memory state. Nothing here allocates, and nothing
//! scans code statically ahead of execution (the scanner analyses code as execution reaches it).

pub mod copies;
pub mod scan;
pub mod sensitivity;
pub mod table;
