//! [`Hypervisor`]: several VMs on one thread, scheduled round-robin.
//!
//! Each VM is a whole [`Vm`] (its harts, real map, devices and clock) with its own engine, held in a
//! fixed-capacity table of `VMS` entries: no heap. One [`Hypervisor::run_slice`] gives the next runnable VM one
//! turn of at most the quantum (in guest instructions), and says what happened: [`SliceOutcome::Ran`],
//! [`SliceOutcome::Idle`] (every live VM waits for an interrupt: the host may sleep until `until`) or
//! [`SliceOutcome::Stopped`] (every VM has ended).
//!
//! Each VM has an engine of its own rather than one shared engine: the threaded engine's code cache is keyed by
//! the RAM offset of the code it translated, and two VMs have different code at the same offsets, so one cache
//! shared between them would need flushing at every switch (losing it) or a VM number in its key. One engine per
//! VM keeps each cache warm across turns at the price of its memory, which the host chooses by the engine type
//! (the interpreter has none).
//!
//! An idle VM costs nothing: when every hart of a VM waits for an interrupt, the VM reports it
//! ([`Vm::last_activity`]) without sleeping (the hypervisor turns [`Vm::set_sleep_when_idle`] off) and is
//! skipped until its earliest timer deadline, looked at again at least every [`IDLE_RECHECK`] ticks (host input
//! and other devices raise their interrupts only when the VM's devices are updated), or sooner when the host
//! wakes it ([`Hypervisor::wake`]). A VM that powers off,
//! resets, reaches its instruction limit or stops for a debugger that is not there ends alone, with its
//! [`RunOutcome`]; the others go on.
//!
//! What it must never do: block or sleep (the host sleeps when told the VMs are idle), allocate, let a VM's
//! guest stop another VM, or panic on a VM number.

use heapless::Vec;

use crate::exec::Engine;

use super::machine::{Devices, RunOutcome, SliceActivity, Vm, SLICE, TIMEBASE_HZ};

/// Longest an idle VM is left alone, in ticks of the timebase (10 ms): its devices are then updated, which
/// delivers host input that arrived meanwhile.
pub const IDLE_RECHECK: u64 = TIMEBASE_HZ / 100;

/// Where a VM stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// It may run.
    Runnable,
    /// Every hart waits for an interrupt; skipped until host time `until`.
    Idle { until: u64 },
    /// It ended.
    Stopped(RunOutcome),
}

/// What one [`Hypervisor::run_slice`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceOutcome {
    /// VM `vm` had a turn; `stopped` is its outcome when it ended in it.
    Ran { vm: usize, stopped: Option<RunOutcome> },
    /// No VM can run before host time `until` (ticks of the timebase): the host may sleep until then, or until
    /// host input arrives.
    Idle { until: u64 },
    /// Every VM has ended (or there is none).
    Stopped,
}

/// Why a VM cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorError {
    /// The table already holds `VMS` VMs.
    Full,
}

/// One VM of the table.
struct Guest<'a, D: Devices, E: Engine> {
    vm: Vm<'a, D>,
    engine: E,
    state: VmState,
    /// The VM stops with [`RunOutcome::InstructionLimit`] after this many instructions.
    limit: Option<u64>,
}

/// Up to `VMS` VMs, each with its own engine `E`, run round-robin a quantum at a time.
pub struct Hypervisor<'a, D: Devices, E: Engine, const VMS: usize> {
    guests: Vec<Guest<'a, D, E>, VMS>,
    /// The VM whose turn is next.
    next: usize,
    /// A turn's length in guest instructions.
    quantum: u64,
}

impl<'a, D: Devices, E: Engine, const VMS: usize> Hypervisor<'a, D, E, VMS> {
    /// An empty hypervisor whose turns last `quantum` guest instructions (at least one).
    pub fn new(quantum: u64) -> Self {
        Self { guests: Vec::new(), next: 0, quantum: quantum.max(1) }
    }

    /// A turn's length in guest instructions.
    pub fn quantum(&self) -> u64 {
        self.quantum
    }

    /// Adds `vm`, run on `engine`, and answers its number (VMs are numbered from 0 in the order added).
    /// `limit`: it stops with [`RunOutcome::InstructionLimit`] after that many instructions.
    pub fn add(&mut self, mut vm: Vm<'a, D>, engine: E, limit: Option<u64>) -> Result<usize, HypervisorError> {
        // Only the hypervisor knows whether another VM could run: an idle VM must not sleep the host.
        vm.set_sleep_when_idle(false);
        let index = self.guests.len();
        self.guests.push(Guest { vm, engine, state: VmState::Runnable, limit }).map_err(|_| HypervisorError::Full)?;
        Ok(index)
    }

    /// How many VMs there are.
    pub fn len(&self) -> usize {
        self.guests.len()
    }

    /// Whether there is no VM.
    pub fn is_empty(&self) -> bool {
        self.guests.is_empty()
    }

    /// VM `index`, if there is one.
    pub fn vm(&self, index: usize) -> Option<&Vm<'a, D>> {
        self.guests.get(index).map(|guest| &guest.vm)
    }

    /// VM `index`, mutably.
    pub fn vm_mut(&mut self, index: usize) -> Option<&mut Vm<'a, D>> {
        self.guests.get_mut(index).map(|guest| &mut guest.vm)
    }

    /// Where VM `index` stands.
    pub fn state(&self, index: usize) -> Option<VmState> {
        self.guests.get(index).map(|guest| guest.state)
    }

    /// How VM `index` ended, `None` while it runs (or when there is no such VM).
    pub fn outcome(&self, index: usize) -> Option<RunOutcome> {
        match self.state(index)? {
            VmState::Stopped(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Makes VM `index` runnable now if it is idle: the host knows of something for it that its devices have not
    /// seen yet (console input for it, say). Nothing happens to a running or stopped VM.
    pub fn wake(&mut self, index: usize) {
        if let Some(guest) = self.guests.get_mut(index) {
            if let VmState::Idle { .. } = guest.state {
                guest.state = VmState::Runnable;
            }
        }
    }

    /// Gives the next runnable VM (round-robin, from the one after the last to run) one turn of at most the
    /// quantum, at host time `now` (ticks of the timebase, the base of [`SliceOutcome::Idle`]'s `until`).
    pub fn run_slice(&mut self, now: u64) -> SliceOutcome {
        let count = self.guests.len();
        let mut earliest: Option<u64> = None;
        for step in 0..count {
            let index = (self.next + step) % count;
            let Some(guest) = self.guests.get_mut(index) else { continue };
            match guest.state {
                VmState::Stopped(_) => continue,
                VmState::Idle { until } if until > now => {
                    earliest = Some(earliest.map_or(until, |e| e.min(until)));
                    continue;
                }
                _ => {}
            }
            self.next = (index + 1) % count;
            let stopped = Self::turn(guest, self.quantum, now);
            return SliceOutcome::Ran { vm: index, stopped };
        }
        match earliest {
            Some(until) => SliceOutcome::Idle { until },
            None => SliceOutcome::Stopped,
        }
    }

    /// Runs `guest` for at most `quantum` instructions; its outcome if it ended.
    fn turn(guest: &mut Guest<'a, D, E>, quantum: u64, now: u64) -> Option<RunOutcome> {
        guest.state = VmState::Runnable;
        let start = guest.vm.steps;
        loop {
            let used = guest.vm.steps.wrapping_sub(start);
            if used >= quantum {
                return None;
            }
            let mut budget = (quantum - used).min(SLICE);
            if let Some(limit) = guest.limit {
                if guest.vm.steps >= limit {
                    guest.state = VmState::Stopped(RunOutcome::InstructionLimit);
                    return Some(RunOutcome::InstructionLimit);
                }
                budget = budget.min(limit - guest.vm.steps);
            }
            let before = guest.vm.steps;
            if let Some(outcome) = guest.vm.run_slice(&mut guest.engine, budget) {
                guest.state = VmState::Stopped(outcome);
                return Some(outcome);
            }
            match guest.vm.last_activity() {
                SliceActivity::Idle { ticks } => {
                    let wait = ticks.map_or(IDLE_RECHECK, |ticks| ticks.clamp(1, IDLE_RECHECK));
                    guest.state = VmState::Idle { until: now.saturating_add(wait) };
                    return None;
                }
                // Nothing ran and nobody waits (input the guest has not taken yet): it is looked at again later, so a VM
                // that never takes its input cannot keep the host busy.
                SliceActivity::Ran if guest.vm.steps == before => {
                    guest.state = VmState::Idle { until: now.saturating_add(IDLE_RECHECK) };
                    return None;
                }
                SliceActivity::Ran => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
