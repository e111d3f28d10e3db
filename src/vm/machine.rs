//! The virtual machine: its harts, guest RAM and devices, run by an engine under the dispatcher.
//!
//! Harts run round-robin on the calling thread, one slice of at most [`SLICE`] instructions at a time, so the
//! guest's memory model is sequential consistency (stronger than RVWMO, which any RISC-V program must accept).
//! LR/SC is correct across harts because an SC checks its reservation's value in memory, as QEMU does. Policy
//! (which devices, where, how long to run) is decided by whoever builds the `Vm`; nothing here is global.

use crate::dev::htif::Htif;
use crate::dev::{MachineRequest, MmioError, SerialBackend};
use crate::exec::Engine;
use crate::hart::Hart;
use crate::mem::mmu::{Memory, Tlb, VmRealMap};
use crate::mem::realmap::MapError;
use crate::mem::Ram;
use crate::trap::{Dispatcher, Exit, FlushScope, Platform, Resume};

/// The machine timer's time base: `mtime` counts at 10 MHz, as on QEMU `virt`.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Longest run of instructions on one hart between two checks for interrupts and host requests.
pub const SLICE: u64 = 4096;

/// Most harts one `Vm` runs.
pub const MAX_HARTS: usize = super::virt::MAX_HARTS;

/// The host's time and sleep.
pub trait Clock {
    /// Ticks of [`TIMEBASE_HZ`] since the machine started.
    fn now(&mut self) -> u64;
    /// Called when every hart waits for an interrupt: block the host until `ticks` ticks have passed (`None`:
    /// no timer is armed) or host input arrives, whichever comes first. Returning early is always allowed.
    fn idle(&mut self, ticks: Option<u64>) {
        let _ = ticks;
    }
}

/// The machine's devices as the VM sees them: guest accesses outside RAM, and the interrupt lines.
///
/// Call order: before each slice the VM calls [`update`](Devices::update) with the current time, which sets
/// every hart's `interrupt_lines`; [`read`](Devices::read) and [`write`](Devices::write) serve the guest's
/// device accesses in between. RAM is lent to accesses for devices that use DMA.
pub trait Devices {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError>;
    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError>;
    /// Advances the devices to `now` (ticks of the timebase) and drives each hart's interrupt lines.
    fn update(&mut self, now: u64, harts: &mut [Hart]);
    /// The machine timer as the guest sees it (`mtime`, the `time` CSR).
    fn mtime(&self) -> u64;
    /// Ticks until the earliest armed timer fires, `None` when none is armed.
    fn ticks_until_deadline(&self) -> Option<u64>;
    /// Whether a device holds host input the guest has not read.
    fn input_pending(&self) -> bool {
        false
    }
}

/// How guest time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The host's clock: guest time is wall-clock time, and an idle guest lets the host sleep.
    Host,
    /// Instruction counting, as QEMU's `-icount shift=N`: every executed instruction is 2^`shift` ns, and
    /// when every hart waits, time jumps to the next timer deadline. Runs are repeatable.
    Instructions { shift: u32 },
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

/// Why a VM could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmError {
    /// No harts, or more than [`MAX_HARTS`].
    HartCount(usize),
    /// RAM cannot be described by the real map.
    RealMap(MapError),
}

/// A virtual machine.
pub struct Vm<'a, D: Devices> {
    pub harts: heapless::Vec<Hart, MAX_HARTS>,
    /// Harts parked in `wfi` until an interrupt is pending for them.
    waiting: [bool; MAX_HARTS],
    /// The hart that runs the next slice.
    next_hart: usize,
    pub ram: Ram<'a>,
    /// Guest real -> host: where the VM's RAM lies.
    realmap: VmRealMap,
    /// Each hart's soft TLB.
    tlbs: [Tlb; MAX_HARTS],
    pub devices: D,
    clock: &'a mut dyn Clock,
    time_source: TimeSource,
    /// Ticks skipped over idle periods under [`TimeSource::Instructions`].
    skipped_ticks: u64,
    dispatcher: Dispatcher,
    /// Instructions executed or attempted (an instruction that traps counts too, so a trap loop still ends).
    pub steps: u64,
    /// The hart that ran last and the exit its engine returned (for tracing and diagnostics).
    pub last_exit: (usize, Exit),
    /// HTIF `tohost`/`fromhost`, polled between slices as Spike does, and the console its output goes to.
    htif: Option<(Htif, &'a mut dyn SerialBackend)>,
}

/// The machine around one hart, as the dispatcher sees it.
struct MachinePlatform<'v, 'a, D> {
    devices: &'v mut D,
    ram: &'v mut Ram<'a>,
    tlb: &'v mut Tlb,
}

impl<D: Devices> Platform for MachinePlatform<'_, '_, D> {
    fn mmio_read(&mut self, addr: u64, size: u8) -> Result<u64, MmioError> {
        self.devices.read(addr, size, self.ram)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) -> Result<Option<MachineRequest>, MmioError> {
        self.devices.write(addr, size, value, self.ram)
    }
    fn time(&mut self) -> u64 {
        self.devices.mtime()
    }
    fn flush_translations(&mut self, scope: FlushScope) {
        match scope {
            FlushScope::All => self.tlb.flush_all(),
            FlushScope::Sfence { address, asid } => self.tlb.sfence_vma(address, asid),
        }
    }
}

impl<'a, D: Devices> Vm<'a, D> {
    /// A VM with `harts` (hart `i` must have `mhartid` = `i`), RAM, devices and a clock.
    pub fn new(
        harts: impl IntoIterator<Item = Hart>,
        ram: Ram<'a>,
        devices: D,
        clock: &'a mut dyn Clock,
    ) -> Result<Self, VmError> {
        let mut list = heapless::Vec::new();
        let mut count = 0;
        for hart in harts {
            count += 1;
            if list.push(hart).is_err() {
                return Err(VmError::HartCount(count));
            }
        }
        if list.is_empty() {
            return Err(VmError::HartCount(0));
        }
        let realmap = VmRealMap::for_ram(&ram).map_err(VmError::RealMap)?;
        Ok(Self {
            harts: list,
            waiting: [false; MAX_HARTS],
            next_hart: 0,
            ram,
            realmap,
            tlbs: core::array::from_fn(|_| Tlb::new()),
            devices,
            clock,
            time_source: TimeSource::Host,
            skipped_ticks: 0,
            dispatcher: Dispatcher::new(),
            steps: 0,
            last_exit: (0, Exit::BudgetExhausted),
            htif: None,
        })
    }

    /// Serves the HTIF protocol at the `tohost`/`fromhost` words `htif` names, with output to `console`.
    pub fn attach_htif(&mut self, htif: Htif, console: &'a mut dyn SerialBackend) {
        self.htif = Some((htif, console));
    }

    /// Chooses how guest time advances (the host's clock by default).
    pub fn set_time_source(&mut self, source: TimeSource) {
        self.time_source = source;
    }

    /// The current time in ticks of the timebase, from the time source.
    fn now(&mut self) -> u64 {
        match self.time_source {
            TimeSource::Host => self.clock.now(),
            TimeSource::Instructions { shift } => {
                let nanoseconds = (self.steps as u128) << shift.min(32);
                let ticks = nanoseconds / (1_000_000_000 / TIMEBASE_HZ) as u128;
                (ticks as u64).wrapping_add(self.skipped_ticks)
            }
        }
    }

    /// Every hart waits for an interrupt: let time pass until the next deadline or host input.
    fn idle(&mut self) {
        if self.devices.input_pending() {
            return;
        }
        let deadline = self.devices.ticks_until_deadline();
        match (self.time_source, deadline) {
            (TimeSource::Instructions { .. }, Some(ticks)) => {
                self.skipped_ticks = self.skipped_ticks.wrapping_add(ticks.max(1))
            }
            _ => self.clock.idle(deadline),
        }
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

    /// Runs one slice of at most `budget` instructions on the next hart that can run, or sleeps when every
    /// hart waits for an interrupt. Returns an outcome when the guest asked the machine to stop.
    pub fn run_slice(&mut self, engine: &mut impl Engine, budget: u64) -> Option<RunOutcome> {
        let now = self.now();
        self.devices.update(now, &mut self.harts);
        let Some(index) = self.next_runnable_hart() else {
            self.idle();
            return None;
        };
        let hart = &mut self.harts[index];
        if let Some(code) = hart.pending_interrupt() {
            hart.take_trap(true, code, 0);
        }
        let retired_before = hart.instret;
        let tlb = &mut self.tlbs[index];
        let mut memory = Memory { ram: &mut self.ram, realmap: &self.realmap, tlb: &mut *tlb };
        let exit = engine.run(hart, &mut memory, budget);
        // Counted from the engine alone: the dispatcher may emulate a guest write to `minstret`. The
        // instruction behind an exit is a step whether it then retires or traps.
        let retired = hart.instret.wrapping_sub(retired_before);
        self.steps = self.steps.wrapping_add(retired + (exit != Exit::BudgetExhausted) as u64);
        self.last_exit = (index, exit);
        let mut platform = MachinePlatform { devices: &mut self.devices, ram: &mut self.ram, tlb };
        match self.dispatcher.dispatch(exit, hart, &mut platform) {
            Resume::Continue => {}
            Resume::WaitForInterrupt => self.waiting[index] = true,
            Resume::Machine(request) => return Some(request.into()),
        }
        let (htif, console) = self.htif.as_mut()?;
        htif.poll(&mut self.ram, console).map(RunOutcome::from)
    }

    /// The next hart, round-robin, that is not parked in `wfi` (a pending interrupt unparks it).
    fn next_runnable_hart(&mut self) -> Option<usize> {
        let count = self.harts.len();
        for step in 0..count {
            let index = (self.next_hart + step) % count;
            let runnable = !self.waiting[index] || self.harts[index].wake_up_pending();
            if runnable {
                self.waiting[index] = false;
                self.next_hart = (index + 1) % count;
                return Some(index);
            }
        }
        None
    }

    /// The machine timer as the guest sees it.
    pub fn time(&self) -> u64 {
        self.devices.mtime()
    }
}

impl<D: Devices> core::fmt::Debug for Vm<'_, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("harts", &self.harts).field("steps", &self.steps).finish_non_exhaustive()
    }
}
