//! One VM's harts on several host threads, as QEMU's multi-threaded TCG runs them: each hart gets a thread, a
//! `Vm` of its own ([`super::VmBuilder::only_hart`]) over its own handle of guest RAM shared by all
//! ([`crate::mem::SharedRam`]), its own engine and soft TLB, and reaches the machine's devices through a
//! [`OneHart`] view of [`SharedDevices`].
//!
//! What crosses threads, and how:
//! - Guest memory: host atomics of the access's width, so plain accesses get the host's order (x86-64's is
//!   stronger than RVWMO); AMOs and SC are host read-modify-writes ([`crate::mem`]).
//! - Translated code: a write to a watched code page by any thread lands in the shared code watch's dirty log,
//!   which every thread's engine reads at its next check, before it runs another block ([`crate::mem`]).
//! - Devices: one spin lock for all of them, taken for every device access and update and never held while a
//!   guest instruction runs. Time never goes back under the lock, whichever thread's clock read came first.
//! - Interrupts: each thread drives its own hart's lines from the devices at each update (a slice's start, every
//!   exit). When a device access or a full update by any thread raises a line of another hart, or brings the
//!   next timer deadline nearer, the embedder's [`HartWaker`] wakes the harts concerned, so a hart parked in
//!   `wfi` (in its thread's [`Clock::idle`](super::Clock::idle)) takes its IPI or interrupt at once. Time
//!   passing wakes nobody: a parked hart sleeps no longer than the machine's next timer deadline.
//!
//! - The VMM's own SBI (`--bios builtin`): HSM states and cross-hart requests (IPIs, starts, remote fences) go
//!   through one [`SbiShared`](super::sbi::SbiShared), whose requests each hart's `Vm` applies to its own hart
//!   ([`super::VmBuilder::shared_sbi`]).
//!
//! What it never does: let one hart's `Vm` touch another hart's state. Cross-hart effects go only through guest
//! memory, devices, as on hardware (an IPI is a CLINT write), and requests the target applies itself.

use spin::mutex::SpinMutex;
pub use spin::relax::{RelaxStrategy, Spin};

use crate::dev::{MachineRequest, MmioError};
use crate::hart::Hart;
use crate::mem::Ram;

use super::machine::{Devices, HartLines, MAX_HARTS};

/// Wakes hart threads parked in [`Clock::idle`](super::Clock::idle), for [`SharedDevices`].
pub trait HartWaker: Sync {
    /// Hart `index` may have an interrupt to take or a nearer timer deadline. If its thread is parked it must
    /// return soon; if it is not, the wake must not be lost: its next park returns at once.
    fn wake(&self, index: usize);
}

/// Why [`SharedDevices::new`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelError {
    /// No harts, or more than [`MAX_HARTS`].
    HartCount(usize),
    /// The devices cannot tell one hart's interrupt lines ([`Devices::hart_lines`] answers `None`).
    LinesNotPerHart,
}

/// The devices and the latest time any thread brought them to, under the lock.
struct Locked<D> {
    devices: D,
    now: u64,
}

/// What the lines and the timer looked like, to tell what an access changed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    raised: [u64; MAX_HARTS],
    /// The next timer deadline in absolute ticks (`u64::MAX`: none).
    deadline: u64,
}

/// The machine's devices, shared by the threads of one VM's harts behind a spin lock (`R` says how a waiting
/// thread spins; a hosted embedder yields its time slice).
pub struct SharedDevices<'w, D, R = Spin> {
    locked: SpinMutex<Locked<D>, R>,
    harts: usize,
    waker: &'w dyn HartWaker,
}

impl<'w, D: Devices, R: RelaxStrategy> SharedDevices<'w, D, R> {
    /// Shares `devices` between `harts` harts, whose threads `waker` wakes.
    pub fn new(devices: D, harts: usize, waker: &'w dyn HartWaker) -> Result<Self, ParallelError> {
        if harts == 0 || harts > MAX_HARTS {
            return Err(ParallelError::HartCount(harts));
        }
        if (0..harts).any(|index| devices.hart_lines(index).is_none()) {
            return Err(ParallelError::LinesNotPerHart);
        }
        Ok(Self { locked: SpinMutex::new(Locked { devices, now: 0 }), harts, waker })
    }

    /// The devices as hart `index`'s `Vm` sees them.
    pub fn hart(&self, index: usize) -> OneHart<'_, 'w, D, R> {
        OneHart { shared: self, index }
    }

    /// Runs `action` on the devices under their lock (an embedder's own look at them between turns: a console's
    /// state, its backend), then wakes the harts whose lines it raised, as any access does.
    pub fn with_devices<T>(&self, action: impl FnOnce(&mut D) -> T) -> T {
        self.with(|locked| action(&mut locked.devices))
    }

    /// The devices back, once every hart's thread is done.
    pub fn into_inner(self) -> D {
        self.locked.into_inner().devices
    }

    /// Runs `action` on the devices under the lock, then wakes every hart whose lines it raised, or all of them
    /// when it brought the next timer deadline nearer.
    fn with<T>(&self, action: impl FnOnce(&mut Locked<D>) -> T) -> T {
        let mut locked = self.locked.lock();
        let before = self.seen(&locked.devices);
        let result = action(&mut locked);
        let after = self.seen(&locked.devices);
        drop(locked);
        if before != after {
            for index in 0..self.harts {
                let raised = after.raised[index] & !before.raised[index];
                if raised != 0 || after.deadline < before.deadline {
                    self.waker.wake(index);
                }
            }
        }
        result
    }

    fn seen(&self, devices: &D) -> Seen {
        let mut raised = [0; MAX_HARTS];
        for (index, lines) in raised.iter_mut().enumerate().take(self.harts) {
            *lines = devices.hart_lines(index).unwrap_or_default().raised;
        }
        let deadline = devices.ticks_until_deadline().map_or(u64::MAX, |ticks| devices.mtime().saturating_add(ticks));
        Seen { raised, deadline }
    }
}

/// One hart's view of [`SharedDevices`]: the [`Devices`] of a `Vm` that holds hart `index` alone. It drives
/// only that hart's lines; every other call goes to the shared devices under their lock.
pub struct OneHart<'s, 'w, D, R = Spin> {
    shared: &'s SharedDevices<'w, D, R>,
    index: usize,
}

impl<D: Devices, R: RelaxStrategy> OneHart<'_, '_, D, R> {
    fn drive(&self, lines: Option<HartLines>, harts: &mut [Hart]) {
        for hart in harts {
            hart.interrupt_lines = lines.unwrap_or_default().apply(hart.interrupt_lines);
        }
    }
}

impl<D: Devices, R: RelaxStrategy> Devices for OneHart<'_, '_, D, R> {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError> {
        self.shared.with(|locked| locked.devices.read(addr, size, ram))
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        self.shared.with(|locked| locked.devices.write(addr, size, value, ram))
    }

    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram) {
        let index = self.index;
        let lines = self.shared.with(|locked| {
            locked.now = locked.now.max(now);
            locked.devices.update(locked.now, &mut [], ram);
            locked.devices.hart_lines(index)
        });
        self.drive(lines, harts);
    }

    fn update_time(&mut self, now: u64, harts: &mut [Hart]) {
        // On every exit, so it wakes nobody: time alone raises only timer lines, and a parked hart sleeps no
        // longer than the machine's next deadline anyway.
        let mut locked = self.shared.locked.lock();
        locked.now = locked.now.max(now);
        let now = locked.now;
        locked.devices.update_time(now, &mut []);
        let lines = locked.devices.hart_lines(self.index);
        drop(locked);
        self.drive(lines, harts);
    }

    fn hart_lines(&self, index: usize) -> Option<HartLines> {
        // This view's harts are numbered from 0: its one hart is `self.index` of the machine.
        (index == 0).then(|| self.shared.locked.lock().devices.hart_lines(self.index)).flatten()
    }

    fn mtime(&self) -> u64 {
        self.shared.locked.lock().devices.mtime()
    }

    fn ticks_until_deadline(&self) -> Option<u64> {
        self.shared.locked.lock().devices.ticks_until_deadline()
    }

    fn input_pending(&self) -> bool {
        self.shared.locked.lock().devices.input_pending()
    }

    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.shared.locked.lock().devices.console_write(bytes)
    }

    fn console_read(&mut self) -> Option<u8> {
        self.shared.with(|locked| locked.devices.console_read())
    }
}

#[cfg(test)]
mod sbi_tests;
#[cfg(test)]
mod tests;
