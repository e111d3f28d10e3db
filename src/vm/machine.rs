//! The virtual machine: one hart, guest RAM and the device map, run by an engine under the dispatcher.
//!
//! Policy (which devices, where, how long to run) is decided by whoever builds the `Vm`; nothing here is global.

use crate::dev::htif::Htif;
use crate::dev::{DeviceMap, MachineRequest, MmioError, SerialBackend};
use crate::exec::Engine;
use crate::hart::Hart;
use crate::mem::Ram;
use crate::trap::{Dispatcher, Exit, Platform, Resume};

/// The machine timer's time base: `mtime` counts at 10 MHz, as on QEMU `virt`.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Longest run of instructions between two checks for interrupts and host requests.
pub const SLICE: u64 = 4096;

/// The source of guest time.
pub trait Clock {
    /// Ticks of [`TIMEBASE_HZ`] since the machine started.
    fn now(&mut self) -> u64;
}

/// Why [`Vm::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest powered the machine off; `code` 0 is success.
    PowerOff { code: u32 },
    /// The guest asked for a reset.
    Reset,
    /// The instruction limit was reached first.
    InstructionLimit,
}

impl From<MachineRequest> for RunOutcome {
    fn from(request: MachineRequest) -> Self {
        match request {
            MachineRequest::PowerOff { code } => RunOutcome::PowerOff { code },
            MachineRequest::Reset => RunOutcome::Reset,
        }
    }
}

/// A virtual machine with one hart.
pub struct Vm<'a> {
    pub hart: Hart,
    pub ram: Ram<'a>,
    pub devices: DeviceMap<'a>,
    clock: &'a mut dyn Clock,
    dispatcher: Dispatcher,
    /// Instructions executed or attempted (an instruction that traps counts too, so a trap loop still ends).
    pub steps: u64,
    /// The exit the engine returned last (for tracing and diagnostics).
    pub last_exit: Exit,
    /// HTIF `tohost`/`fromhost`, polled between slices as Spike does, and the console its output goes to.
    htif: Option<(Htif, &'a mut dyn SerialBackend)>,
}

/// The machine around the hart, as the dispatcher sees it.
struct MachinePlatform<'v, 'a> {
    devices: &'v mut DeviceMap<'a>,
    clock: &'v mut dyn Clock,
}

impl Platform for MachinePlatform<'_, '_> {
    fn mmio_read(&mut self, addr: u64, size: u8) -> Result<u64, MmioError> {
        self.devices.read(addr, size)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) -> Result<Option<MachineRequest>, MmioError> {
        self.devices.write(addr, size, value)
    }
    fn time(&mut self) -> u64 {
        self.clock.now()
    }
}

impl<'a> Vm<'a> {
    pub fn new(hart: Hart, ram: Ram<'a>, devices: DeviceMap<'a>, clock: &'a mut dyn Clock) -> Self {
        Self {
            hart,
            ram,
            devices,
            clock,
            dispatcher: Dispatcher::new(),
            steps: 0,
            last_exit: Exit::BudgetExhausted,
            htif: None,
        }
    }

    /// Serves the HTIF protocol at the `tohost`/`fromhost` words `htif` names, with output to `console`.
    pub fn attach_htif(&mut self, htif: Htif, console: &'a mut dyn SerialBackend) {
        self.htif = Some((htif, console));
    }

    /// Runs until the guest powers off or resets, or `limit` instructions have been executed.
    pub fn run(&mut self, engine: &mut impl Engine, limit: Option<u64>) -> RunOutcome {
        loop {
            let budget = match limit {
                Some(limit) if self.steps >= limit => return RunOutcome::InstructionLimit,
                Some(limit) => SLICE.min(limit - self.steps),
                None => SLICE,
            };
            if let Some(outcome) = self.run_slice(engine, budget) {
                return outcome;
            }
        }
    }

    /// Takes a pending interrupt, runs at most `budget` instructions, and dispatches the exit. Returns an
    /// outcome when the guest asked the machine to stop.
    pub fn run_slice(&mut self, engine: &mut impl Engine, budget: u64) -> Option<RunOutcome> {
        if let Some(code) = self.hart.pending_interrupt() {
            self.hart.take_trap(true, code, 0);
        }
        let retired_before = self.hart.instret;
        let exit = engine.run(&mut self.hart, &mut self.ram, budget);
        // Counted from the engine alone: the dispatcher may emulate a guest write to `minstret`. The
        // instruction behind an exit is a step whether it then retires or traps.
        let retired = self.hart.instret.wrapping_sub(retired_before);
        self.steps = self.steps.wrapping_add(retired + (exit != Exit::BudgetExhausted) as u64);
        self.last_exit = exit;
        let mut platform = MachinePlatform { devices: &mut self.devices, clock: &mut *self.clock };
        let resume = self.dispatcher.dispatch(exit, &mut self.hart, &mut platform);
        match resume {
            // No interrupt source exists yet, so a WFI completes at once (the spec allows WFI to be a no-op).
            Resume::Continue | Resume::WaitForInterrupt => {}
            Resume::Machine(request) => return Some(request.into()),
        }
        let (htif, console) = self.htif.as_mut()?;
        htif.poll(&mut self.ram, console).map(RunOutcome::from)
    }

    /// The time as the guest sees it.
    pub fn time(&mut self) -> u64 {
        self.clock.now()
    }
}

impl core::fmt::Debug for Vm<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("hart", &self.hart).field("steps", &self.steps).finish_non_exhaustive()
    }
}
