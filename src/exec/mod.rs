//! Execution engines: they run guest instructions on a hart and return an [`Exit`] for anything the virtual
//! machine must decide. An engine never emulates a privileged instruction itself, with one exception a host
//! opts into: the threaded engine and the translator may serve CSR accesses whose outcome the hart alone decides
//! and the dispatcher would give exactly (`threaded::InlineCsr`).

#[cfg(all(feature = "dbt", target_arch = "x86_64"))]
pub mod dbt;
pub mod interp;
pub mod native;
pub mod threaded;
pub mod trap_sites;

use crate::hart::Hart;
use crate::mem::mmu::Memory;
use crate::trap::{Exit, FlushScope};

/// An execution engine.
///
/// Contract: `run` executes instructions from `hart.pc` until it has retired `budget` instructions (then it
/// returns [`Exit::BudgetExhausted`]) or meets an instruction it must not or cannot complete (then it returns
/// the matching [`Exit`] with `hart.pc` still pointing at that instruction and nothing of it performed). Every
/// retired instruction adds one to `hart.instret`. Interrupts are the caller's business: it checks for them
/// between calls, so an engine never runs longer than `budget` instructions.
pub trait Engine {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit;

    /// The guest's time (`time`, in ticks of the timebase) as of the VM's last look at its clock, before a
    /// run: for an engine that serves `time` reads itself from a host clock (the native board's excursions),
    /// which then goes on from this value. The default ignores it.
    fn set_guest_time(&mut self, now: u64) {
        let _ = now;
    }

    /// The largest `time` value the engine gave the guest itself since the last call (`None`: none), so that
    /// the VM's clock never goes back below it.
    fn take_time_served(&mut self) -> Option<u64> {
        None
    }

    /// The VMM fenced hart `hart`'s address translations for the guest without the hart executing `sfence.vma`
    /// (an SBI remote fence, a hart started by HSM): an engine that caches translations outside the VM's soft
    /// TLBs (the native board's shadow page tables, shared by the VM's harts) must drop those `scope` covers
    /// before the hart runs again. The VM's soft TLBs are its own business; the default does nothing.
    fn flush_translations(&mut self, hart: usize, scope: FlushScope) {
        let _ = (hart, scope);
    }

    /// With several harts, the longest run (in budget units) between two spin checks of a hart: by default
    /// [`SPIN_CHECK`](crate::vm::SPIN_CHECK) instructions, for engines that count them. An engine whose budget
    /// stands for host time (the native board's) answers a run long enough to be worth its world switch, since a
    /// run of that many would be spent on the VMM's own work for the hart, its exits and its interrupts.
    fn spin_check_interval(&self) -> u64 {
        crate::vm::SPIN_CHECK
    }
}
