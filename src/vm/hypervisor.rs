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
//! Turns are measured in guest instructions ([`Hypervisor::run_slice`]: deterministic, for the emulation
//! engines) or in host time ([`Hypervisor::run_timed_slice`], for an engine whose budget is a time quantum, a
//! [`TimedEngine`] such as the native board's). Timed turns also keep each VM's clock to its own time: the
//! time a VM was runnable while others ran (or [paused](Hypervisor::pause)), and the time the VMM spent on its
//! exits, are hidden from it ([`Vm::hide_time`]), so its timer deadlines come when it can take them and a guest
//! paused between two reads of `time` sees no jump. An idle VM's time runs on: it sleeps, as on real hardware.
//!
//! What it must never do: block or sleep (the host sleeps when told the VMs are idle), allocate, let a VM's
//! guest stop another VM, or panic on a VM number.

use heapless::Vec;

use crate::exec::Engine;

use super::machine::{Clock, Devices, RunOutcome, SliceActivity, Vm, SLICE, TIMEBASE_HZ};

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
    /// Held back by the host ([`Hypervisor::pause`]) until host time `until`, although it could run.
    Paused { until: u64 },
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

/// An engine whose budget is host time (the native engine: its instruction budget becomes a time quantum on the
/// real timer), as [`Hypervisor::run_timed_slice`] drives it.
pub trait TimedEngine: Engine {
    /// The instruction budget of a run of about `ticks` ticks of the timebase.
    fn budget_for(&self, ticks: u64) -> u64;
    /// Ticks of host time the guest has run on this engine so far (natively, or emulated for it), monotonic: the
    /// rest of a slice is the VMM's own work for it, hidden from the VM's clock.
    fn guest_ticks(&self) -> u64;
    /// The slice ended at host time `now`, for an engine that accounts time once per slice rather than around
    /// every run. Nothing by default.
    fn end_slice(&mut self, now: u64) {
        let _ = now;
    }
}

/// One VM of the table.
struct Guest<'a, D: Devices, E: Engine> {
    vm: Vm<'a, D>,
    engine: E,
    state: VmState,
    /// The VM stops with [`RunOutcome::InstructionLimit`] after this many instructions.
    limit: Option<u64>,
    /// Host time at which its last timed turn ended while it could still run (`None`: it was idle, or has not
    /// run): the time until its next turn is hidden from its clock.
    descheduled_at: Option<u64>,
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
        let guest = Guest { vm, engine, state: VmState::Runnable, limit, descheduled_at: None };
        self.guests.push(guest).map_err(|_| HypervisorError::Full)?;
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

    /// VM `index`'s engine (for its statistics, say).
    pub fn engine(&self, index: usize) -> Option<&E> {
        self.guests.get(index).map(|guest| &guest.engine)
    }

    /// VM `index`'s engine, mutably.
    pub fn engine_mut(&mut self, index: usize) -> Option<&mut E> {
        self.guests.get_mut(index).map(|guest| &mut guest.engine)
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

    /// Holds VM `index` back until host time `until` although it could run (a host testing that the VM's time
    /// does not jump, say); a stopped VM stays stopped. Under timed turns ([`Hypervisor::run_timed_slice`]) its
    /// clock stands still from the end of its last turn (unless it ended idle) to its next one. [`wake`]
    /// (Self::wake) does not end a pause.
    pub fn pause(&mut self, index: usize, until: u64) {
        if let Some(guest) = self.guests.get_mut(index) {
            if !matches!(guest.state, VmState::Stopped(_)) {
                guest.state = VmState::Paused { until };
            }
        }
    }

    /// Gives the next runnable VM (round-robin, from the one after the last to run) one turn of at most the
    /// quantum, at host time `now` (ticks of the timebase, the base of [`SliceOutcome::Idle`]'s `until`).
    pub fn run_slice(&mut self, now: u64) -> SliceOutcome {
        let quantum = self.quantum;
        match self.next_guest(now) {
            Ok((index, guest)) => SliceOutcome::Ran { vm: index, stopped: Self::turn(guest, quantum, now) },
            Err(outcome) => outcome,
        }
    }

    /// Gives the next runnable VM (round-robin) one turn of `turn_ticks` ticks of host time, read from `clock`
    /// (whose time is the base of [`SliceOutcome::Idle`]'s `until`). Each run of the engine lasts until the end
    /// of the turn or the VM's next timer deadline, whichever comes first ([`TimedEngine::budget_for`]), so the
    /// deadline is delivered between runs; the turn ends early when the VM waits for an interrupt or ends. The
    /// VM's clock does not count the time since its last turn ended (unless it ended idle), nor the part of each
    /// run the guest did not run ([`TimedEngine::guest_ticks`]).
    pub fn run_timed_slice(&mut self, clock: &mut dyn Clock, turn_ticks: u64) -> SliceOutcome
    where
        E: TimedEngine,
    {
        let now = clock.now();
        match self.next_guest(now) {
            Ok((index, guest)) => {
                SliceOutcome::Ran { vm: index, stopped: Self::timed_turn(guest, clock, now, turn_ticks) }
            }
            Err(outcome) => outcome,
        }
    }

    /// The next VM to run at host time `now` (round-robin, from the one after the last to run), or why none can.
    fn next_guest(&mut self, now: u64) -> Result<(usize, &mut Guest<'a, D, E>), SliceOutcome> {
        let count = self.guests.len();
        let mut earliest: Option<u64> = None;
        let mut chosen = None;
        for step in 0..count {
            let index = (self.next + step) % count;
            let Some(guest) = self.guests.get(index) else { continue };
            match guest.state {
                VmState::Stopped(_) => continue,
                VmState::Idle { until } | VmState::Paused { until } if until > now => {
                    earliest = Some(earliest.map_or(until, |e| e.min(until)));
                    continue;
                }
                _ => {}
            }
            chosen = Some(index);
            break;
        }
        let Some(index) = chosen else {
            return Err(match earliest {
                Some(until) => SliceOutcome::Idle { until },
                None => SliceOutcome::Stopped,
            });
        };
        self.next = (index + 1) % count;
        self.guests.get_mut(index).map(|guest| (index, guest)).ok_or(SliceOutcome::Stopped)
    }

    /// Runs `guest` for a timed turn of `turn_ticks` from host time `now`; its outcome if it ended.
    fn timed_turn(guest: &mut Guest<'a, D, E>, clock: &mut dyn Clock, now: u64, turn_ticks: u64) -> Option<RunOutcome>
    where
        E: TimedEngine,
    {
        guest.state = VmState::Runnable;
        if let Some(since) = guest.descheduled_at.take() {
            // Runnable (or paused) but not running: not the guest's time.
            guest.vm.hide_time(now.saturating_sub(since));
        }
        let turn_end = now.saturating_add(turn_ticks);
        loop {
            let start = clock.now();
            let ticks = turn_end.saturating_sub(start).min(guest.vm.ticks_until_deadline().unwrap_or(u64::MAX));
            let mut budget = guest.engine.budget_for(ticks.max(1));
            if let Some(limit) = guest.limit {
                if guest.vm.steps >= limit {
                    guest.state = VmState::Stopped(RunOutcome::InstructionLimit);
                    return Some(RunOutcome::InstructionLimit);
                }
                budget = budget.min(limit - guest.vm.steps);
            }
            let guest_ticks = guest.engine.guest_ticks();
            let outcome = guest.vm.run_slice(&mut guest.engine, budget);
            let end = clock.now();
            guest.engine.end_slice(end);
            if let Some(outcome) = outcome {
                guest.state = VmState::Stopped(outcome);
                return Some(outcome);
            }
            if let SliceActivity::Idle { ticks } = guest.vm.last_activity() {
                // Asleep: its time runs on, as on a real machine.
                let wait = ticks.map_or(IDLE_RECHECK, |ticks| ticks.clamp(1, IDLE_RECHECK));
                guest.state = VmState::Idle { until: end.saturating_add(wait) };
                return None;
            }
            // The VMM's own work for the slice (world switches, the dispatcher, devices) is hidden too: the
            // guest's time advances while it runs or sleeps.
            let ran = guest.engine.guest_ticks().wrapping_sub(guest_ticks);
            guest.vm.hide_time(end.saturating_sub(start).saturating_sub(ran));
            if end >= turn_end {
                guest.descheduled_at = Some(end);
                return None;
            }
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
