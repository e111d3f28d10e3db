//! Execution engines: they run guest instructions on a hart and return an [`Exit`] for anything the virtual
//! machine must decide. An engine never emulates a privileged instruction itself.

pub mod interp;
pub mod native;
pub mod threaded;
pub mod trap_sites;

use crate::hart::Hart;
use crate::mem::mmu::Memory;
use crate::trap::Exit;

/// An execution engine.
///
/// Contract: `run` executes instructions from `hart.pc` until it has retired `budget` instructions (then it
/// returns [`Exit::BudgetExhausted`]) or meets an instruction it must not or cannot complete (then it returns
/// the matching [`Exit`] with `hart.pc` still pointing at that instruction and nothing of it performed). Every
/// retired instruction adds one to `hart.instret`. Interrupts are the caller's business: it checks for them
/// between calls, so an engine never runs longer than `budget` instructions.
pub trait Engine {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit;
}
