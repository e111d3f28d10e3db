//! The virtual machine: its harts, guest RAM and devices, run by an engine under the dispatcher.
//!
//! Harts run round-robin on the calling thread, one turn of at most [`SLICE`] instructions at a time, so the
//! guest's memory model is sequential consistency (stronger than RVWMO, which any RISC-V program must accept).
//! LR/SC is correct across harts because an SC checks its reservation's value in memory, as QEMU does. Policy
//! (which devices, where, how long to run) is decided by whoever builds the `Vm`; nothing here is global.
//!
//! A turn is fair: exits to the dispatcher (CSR accesses, device accesses, `xRET`) do not end it, only its
//! budget, `wfi`, an SBI stop or suspend, the end of the machine, or the hart provably spinning (a `pause`
//! hint, or the same pc and integer registers at two checks: see [`SpinCheck`]), so a lock holder that exits
//! often is not starved by harts spinning through whole turns. Interrupts are checked before every engine run,
//! so one a CSR write enables is taken before the next instruction; devices see the time and drive the
//! interrupt lines at every [`Vm::run_slice`] call and every exit (once more after a device access), and HTIF
//! is polled at the end of every call. [`Vm::run`] makes a lone hart's calls on host time last until the next
//! timer deadline (at most 1 ms) whatever the engine's speed, so that a timer interrupt is taken about when due.
//!
//! A VM runs its guest's own firmware in virtual M-mode, or, after [`Vm::boot_with_builtin_sbi`], has the VMM
//! as its firmware: an `ecall` from S-mode is then served by [`super::sbi`], harts the guest has not started
//! (HSM) never run, and the SBI timer deadlines raise `mip.STIP` before each turn. A `Vm` of one hart of
//! several ([`Vm::boot_with_shared_sbi`]) reaches the other harts through an [`sbi::SbiShared`], and applies
//! what they ask of its hart (an IPI, a start, remote fences) at every [`Vm::run_slice`] call and before every
//! engine run.

use crate::debug::DebugStop;
use crate::dev::htif::Htif;
use crate::dev::{MachineRequest, MmioError, SerialBackend};
use crate::exec::Engine;
use crate::hart::{Exception, Hart, Privilege};
use crate::mem::mmu::{debug_translate, Loaded, Memory, Tlb, VmRealMap};
use crate::mem::realmap::{MapError, MapPerms};
use crate::mem::sv39::{AccessType, Fault};
use crate::mem::{Ram, PAGE_SIZE};
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};
use crate::trap::{Dispatcher, Exit, FlushScope, Platform, Resume};

use super::sbi::{self, HartState, Sbi, SbiEnvironment, SbiShared};
use crate::isa::csr::interrupt;

/// The machine timer's time base: `mtime` counts at 10 MHz, as on QEMU `virt`.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// The length of a lone hart's next [`Vm::run`] call after one of `ran` instructions took `ticks` of the clock:
/// what the engine runs, at that speed, until the next timer deadline (`deadline` ticks away; `None`: none armed),
/// but for no longer than [`LONE_HART_TICKS`], within [`LONE_HART_SLICES`].
fn next_lone_slice(ran: u64, ticks: u64, deadline: Option<u64>) -> u64 {
    let (shortest, longest) = LONE_HART_SLICES;
    let aim = deadline.map_or(LONE_HART_TICKS, |deadline| deadline.min(LONE_HART_TICKS));
    let slice = u128::from(ran) * u128::from(aim) / u128::from(ticks.max(1));
    u64::try_from(slice).unwrap_or(longest).clamp(shortest, longest)
}

/// A hart's turn: the instructions (an exit counts as one) it runs before the next hart's turn, unless it
/// waits or spins first.
pub const SLICE: u64 = 4096;

/// [`Vm::run`]'s calls for a lone hart on host time last until the next timer deadline, and at most this many
/// ticks of the clock (1 ms): devices (a timer that fires, host input) are brought up to date at each call and
/// each exit, so a timer interrupt is taken about when it is due and host input at most this late, and an engine
/// seldom stops inside a block for a call's end (the translator finishes a cut block on its cold tier). The
/// calls' length in instructions follows the engine's speed, within [`LONE_HART_SLICES`].
const LONE_HART_TICKS: u64 = TIMEBASE_HZ / 1000;

/// The shortest and longest of [`Vm::run`]'s calls for a lone hart on host time, in instructions.
const LONE_HART_SLICES: (u64, u64) = (SLICE, 256 * SLICE);

/// With several harts, the longest engine run between two spin checks of a hart that meets no exit: a
/// multiple of every loop length up to 8 (and of 10, 12, 14, 15, 20, 21, 24, 28, ...), so a hart waiting in a
/// short loop is back at the same pc at the next check and yields. An engine may ask for another interval
/// ([`Engine::spin_check_interval`]: the native board's runs are time quanta).
pub const SPIN_CHECK: u64 = 840;

/// The most checks [`SpinCheck`] compares against one snapshot: loops of up to this many checks are caught.
const SPIN_PERIOD_MAX: u32 = 64;

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
/// Call order: at the start of each [`Vm::run_slice`], at every exit and after every device access the VM
/// calls [`update`](Devices::update) with the current time, which sets every hart's `interrupt_lines`;
/// [`read`](Devices::read) and [`write`](Devices::write) serve the guest's device accesses in between. RAM is lent to accesses for devices that use DMA.
pub trait Devices {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError>;
    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError>;
    /// Advances the devices to `now` (ticks of the timebase), lets them complete work that arrived from
    /// outside the guest (host input, a frame from a bridge) in guest memory `ram`, and drives each hart's
    /// interrupt lines.
    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram);
    /// Advances only what time alone drives (the machine timer and its interrupt lines) to `now`: what an exit
    /// that touches no device needs before the next instruction (a counter read must see time move, an expired
    /// timer must be pending). Everything else (host input, other devices' lines) waits for the next full
    /// [`update`](Devices::update), at the next device access or turn.
    fn update_time(&mut self, now: u64, harts: &mut [Hart]);
    /// The interrupt lines [`update`](Devices::update) drives for hart `index` and which of them are raised
    /// now: for a runner that gives each hart a `Vm` of its own ([`super::parallel`]). `None` (the default):
    /// these devices drive lines only through `update` and cannot be shared between harts that way.
    fn hart_lines(&self, index: usize) -> Option<HartLines> {
        let _ = index;
        None
    }
    /// The machine timer as the guest sees it (`mtime`, the `time` CSR).
    fn mtime(&self) -> u64;
    /// Ticks until the earliest armed timer fires, `None` when none is armed.
    fn ticks_until_deadline(&self) -> Option<u64>;
    /// Whether a device holds host input the guest has not read.
    fn input_pending(&self) -> bool {
        false
    }
    /// Writes `bytes` to the machine's console (the one its UART uses), for the VMM's own SBI console; returns
    /// how many it took. A machine without a console discards them.
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        bytes.len()
    }
    /// The next byte of console input for the VMM's own SBI console, `None` when none is ready (never blocks).
    fn console_read(&mut self) -> Option<u8> {
        None
    }
    /// Writes every device's state for a snapshot, in sections of the devices' own choosing (never a
    /// backend's data). The default refuses: a machine whose devices cannot be saved cannot be snapshotted.
    fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        let _ = out;
        Err(SnapshotError::Unsupported { section: SectionId::TOP })
    }
    /// Reads what [`save_state`](Devices::save_state) wrote, validating everything; under [`LoadMode::Apply`]
    /// replaces the devices' state. Called with [`LoadMode::Check`] first on the same bytes, so an `Apply`
    /// never meets an error a `Check` did not.
    fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let _ = mode;
        Err(SnapshotError::Unsupported { section: input.section_id() })
    }
}

/// The interrupt lines devices drive for one hart ([`Devices::hart_lines`]), as `mip` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HartLines {
    /// The lines the devices own (the rest of `interrupt_lines` is left alone).
    pub driven: u64,
    /// Those of them raised now.
    pub raised: u64,
}

impl HartLines {
    /// `lines` with the driven ones set as these say.
    pub fn apply(self, lines: u64) -> u64 {
        (lines & !self.driven) | (self.raised & self.driven)
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

/// A trap a hart took, reported to a [`TrapObserver`] as it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapTaken {
    /// Index of the hart in the VM.
    pub hart: usize,
    /// An interrupt (taken before the hart's slice) rather than a synchronous exception.
    pub interrupt: bool,
    /// The interrupt or exception code (`xcause` without the interrupt bit).
    pub code: u64,
    /// The pc of the interrupted or trapping instruction (`xepc`).
    pub epc: u64,
    /// `xtval` as the trap set it.
    pub tval: u64,
    /// The privilege mode the hart was in, and the one that took the trap (M, or S when delegated).
    pub from: Privilege,
    pub to: Privilege,
    /// Where the hart went: the trap handler's address.
    pub handler: u64,
}

impl TrapTaken {
    /// The trap hart `hart` (index `index`) has just taken from mode `from`, read back from the CSRs of the
    /// mode that took it.
    fn after(index: usize, hart: &Hart, from: Privilege) -> Self {
        let (cause, epc, tval) = match hart.privilege {
            Privilege::Machine => (hart.csrs.mcause, hart.csrs.mepc, hart.csrs.mtval),
            _ => (hart.csrs.scause, hart.csrs.sepc, hart.csrs.stval),
        };
        Self {
            hart: index,
            interrupt: cause >> 63 != 0,
            code: cause & !(1 << 63),
            epc,
            tval,
            from,
            to: hart.privilege,
            handler: hart.pc,
        }
    }
}

/// Receives every trap the VM's harts take (interrupts and exceptions), at the moment each is taken: the
/// hook of a host that logs them (QEMU's `-d int`). It costs nothing when no observer is set.
pub trait TrapObserver {
    fn trap_taken(&mut self, trap: &TrapTaken);
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
    /// Hart `hart` stopped for the host debugger (a software breakpoint or a debugger trigger): its pc is at the
    /// instruction, nothing of which was performed. Running again resumes there (and stops again while the
    /// breakpoint is still set: the debugger removes it to step over it).
    DebugStop { hart: usize, stop: DebugStop },
}

impl From<MachineRequest> for RunOutcome {
    fn from(request: MachineRequest) -> Self {
        match request {
            MachineRequest::PowerOff { code } => RunOutcome::PowerOff { code },
            MachineRequest::Reset => RunOutcome::Reset,
        }
    }
}

/// What the last [`Vm::run_slice`] found: whether the guest ran, or every hart waited for an interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceActivity {
    /// A hart ran (or time jumped to the next deadline under [`TimeSource::Instructions`]).
    Ran,
    /// Every hart waited for an interrupt: nothing can happen for `ticks` ticks of the timebase (`None`: until
    /// a device or host input raises one).
    Idle { ticks: Option<u64> },
}

/// Why a VM could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmError {
    /// No harts, or more than [`MAX_HARTS`].
    HartCount(usize),
    /// RAM cannot be described by the real map.
    RealMap(MapError),
    /// The VMM's own SBI was asked for in a `Vm` of one hart of several ([`super::VmBuilder::only_hart`])
    /// without the harts' shared SBI state ([`super::VmBuilder::shared_sbi`]).
    SbiNeedsEveryHart,
}

/// A virtual machine.
pub struct Vm<'a, D: Devices> {
    pub harts: heapless::Vec<Hart, MAX_HARTS>,
    /// Harts parked in `wfi` until an interrupt is pending for them.
    waiting: [bool; MAX_HARTS],
    /// The hart whose turn goes on in the next [`Vm::run_slice`] (`None`: the next runnable hart's turn).
    turn: Option<Turn>,
    /// The hart whose turn is next, round-robin.
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
    /// Added to the host clock under [`TimeSource::Host`]: zero, until a restored snapshot makes guest time go
    /// on from where it was saved.
    time_offset: u64,
    /// One hart of several, in a `Vm` of its own ([`super::VmBuilder::only_hart`]): its clock is the machine's,
    /// shared with its sibling harts' `Vm`s, so [`Vm::hide_time`] hides nothing.
    shares_clock: bool,
    /// The time the devices were last brought to (for a snapshot).
    last_now: u64,
    dispatcher: Dispatcher,
    /// Instructions executed or attempted (an instruction that traps counts too, so a trap loop still ends).
    pub steps: u64,
    /// Exits engines returned other than for a spent budget (each one the dispatcher or the SBI served).
    pub exits: u64,
    /// Turns given up early because the hart was spinning (a `pause` hint or [`SpinCheck`]).
    pub yields: u64,
    /// The hart that ran last and the exit its engine returned (for tracing and diagnostics).
    pub last_exit: (usize, Exit),
    /// HTIF `tohost`/`fromhost`, polled after each [`Vm::run_slice`] call as Spike does, and the console its output goes to.
    htif: Option<(Htif, &'a mut dyn SerialBackend)>,
    /// The VMM's own SBI when the VM has no firmware of its own (`None`: the guest's firmware runs in M-mode).
    sbi: Option<Sbi>,
    /// With the VMM's SBI in a `Vm` of one hart of several: the harts' shared SBI state and this hart's index.
    shared_sbi: Option<(&'a SbiShared<'a>, usize)>,
    /// Told of every trap a hart takes, when set.
    trap_observer: Option<&'a mut dyn TrapObserver>,
    /// What the last [`Vm::run_slice`] found.
    last_activity: SliceActivity,
    /// Whether an idle VM blocks in [`Clock::idle`]; a scheduler of several VMs turns it off and sleeps itself
    /// when every VM is idle.
    sleep_when_idle: bool,
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

/// The machine as the VMM's own SBI sees it.
struct FirmwareEnvironment<'v, 'a, D, E> {
    devices: &'v mut D,
    ram: &'v mut Ram<'a>,
    realmap: &'v VmRealMap,
    tlbs: &'v mut [Tlb; MAX_HARTS],
    /// The VM's engine, told of every fence the SBI performs: it may cache translations outside `tlbs`.
    engine: &'v mut E,
}

impl<D: Devices, E: Engine> FirmwareEnvironment<'_, '_, D, E> {
    /// Whether `[addr, addr + len)` is RAM the real map grants `perms` on (a guest real address is physical).
    fn granted(&self, addr: u64, len: u64, perms: MapPerms) -> bool {
        self.ram.offset_of(addr, len).is_some() && (len == 0 || self.realmap.translate(addr, len, perms).is_some())
    }
}

impl<D: Devices, E: Engine> SbiEnvironment for FirmwareEnvironment<'_, '_, D, E> {
    fn time(&mut self) -> u64 {
        self.devices.mtime()
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.devices.console_write(bytes)
    }
    fn console_read(&mut self) -> Option<u8> {
        self.devices.console_read()
    }
    fn read_physical(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        if !self.granted(addr, buf.len() as u64, MapPerms::R) {
            return false;
        }
        // Byte copies work on shared RAM too (a `Vm` of one hart of several), where no slice can be lent.
        self.ram.read_bytes(addr, buf).is_some()
    }
    fn write_physical(&mut self, addr: u64, bytes: &[u8]) -> bool {
        if !self.granted(addr, bytes.len() as u64, MapPerms::W) {
            return false;
        }
        self.ram.write_bytes(addr, bytes).is_some()
    }
    fn physical_accessible(&self, addr: u64, len: u64) -> bool {
        self.granted(addr, len, MapPerms::R)
    }
    fn executable(&self, addr: u64) -> bool {
        addr.is_multiple_of(2) && self.granted(addr, 2, MapPerms::X)
    }
    fn load_virtual(&mut self, index: usize, hart: &Hart, va: u64) -> Result<u64, Fault> {
        let tlb = self.tlbs.get_mut(index).ok_or(Fault { exception: Exception::LoadAccessFault, tval: va })?;
        let mut memory = Memory { ram: &mut *self.ram, realmap: self.realmap, tlb };
        match memory.load(hart, va, 8, AccessType::Load)? {
            Loaded::Value(value) => Ok(value),
            Loaded::Device(_) => Err(Fault { exception: Exception::LoadAccessFault, tval: va }),
        }
    }
    fn fence_i(&mut self, _index: usize) {
        // Checks every hart's deferred code watches (any thread may): a stale translation is logged as written.
        self.ram.sync_instruction_fetch();
    }
    fn flush_translations(&mut self, index: usize, scope: FlushScope) {
        let Some(tlb) = self.tlbs.get_mut(index) else { return };
        match scope {
            FlushScope::All => tlb.flush_all(),
            FlushScope::Sfence { address, asid } => tlb.sfence_vma(address, asid),
        }
        // A remote fence executes no `sfence.vma` on its targets: an engine with translations of its own (the
        // native board's shadow tables) hears of it only here. Without this, a two-hart Linux, which fences
        // kernel ranges and shared address spaces through the SBI on every hart at once (its own included),
        // kept running on stale shadow leaves.
        self.engine.flush_translations(index, scope);
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
            turn: None,
            next_hart: 0,
            ram,
            realmap,
            tlbs: core::array::from_fn(|_| Tlb::new()),
            devices,
            clock,
            time_source: TimeSource::Host,
            skipped_ticks: 0,
            time_offset: 0,
            shares_clock: false,
            last_now: 0,
            dispatcher: Dispatcher::new(),
            steps: 0,
            exits: 0,
            yields: 0,
            last_exit: (0, Exit::BudgetExhausted),
            htif: None,
            sbi: None,
            shared_sbi: None,
            trap_observer: None,
            last_activity: SliceActivity::Ran,
            sleep_when_idle: true,
        })
    }

    /// Boots with the VMM as the firmware (`--bios builtin`): hart `boot_hart` enters S-mode at `entry` with
    /// `a0` = its hart id and `a1` = `devicetree`, as OpenSBI's `fw_jump` would leave it; every other hart is
    /// HSM-STOPPED until the guest starts it. From then on an `ecall` from S-mode is served by [`sbi::Sbi`].
    pub fn boot_with_builtin_sbi(&mut self, boot_hart: usize, entry: u64, devicetree: u64) {
        let boot_hart = boot_hart.min(self.harts.len() - 1);
        let hart = &mut self.harts[boot_hart];
        let hart_id = hart.config.hart_id;
        sbi::enter_supervisor(hart, entry, hart_id, devicetree);
        self.restart_under_firmware(Sbi::new(self.harts.len(), boot_hart));
    }

    /// Hands the harts to the VMM's SBI `sbi` after a boot hart entered S-mode: no translation, wait or turn
    /// from before survives.
    fn restart_under_firmware(&mut self, sbi: Sbi) {
        for tlb in &mut self.tlbs {
            tlb.flush_all();
        }
        self.waiting = [false; MAX_HARTS];
        self.turn = None;
        self.sbi = Some(sbi);
    }

    /// Boots a `Vm` that holds hart `index` of a machine alone (its one hart) with the VMM as the firmware, the
    /// other harts in `Vm`s of their own on other threads, all sharing `shared`: as
    /// [`boot_with_builtin_sbi`](Self::boot_with_builtin_sbi), the hart enters S-mode at `entry` if `shared`
    /// says it is started (the boot hart), else it stays stopped until another hart starts it.
    pub fn boot_with_shared_sbi(&mut self, shared: &'a SbiShared<'a>, index: usize, entry: u64, devicetree: u64) {
        let started = shared.state(index) == Some(HartState::Started);
        let hart = &mut self.harts[0];
        if started {
            let hart_id = hart.config.hart_id;
            sbi::enter_supervisor(hart, entry, hart_id, devicetree);
        }
        self.restart_under_firmware(Sbi::new(1, if started { 0 } else { 1 }));
        self.shared_sbi = Some((shared, index));
    }

    /// Applies what other harts asked of this `Vm`'s hart through the shared SBI state: a start (entry state,
    /// every translation dropped), an IPI (`mip.SSIP`), remote fences, acknowledged once performed.
    fn apply_sbi_requests(&mut self, engine: &mut impl Engine) {
        let Some((shared, me)) = self.shared_sbi else { return };
        if !shared.pending(me) {
            return;
        }
        let taken = shared.take(me, false);
        let hart = &mut self.harts[0];
        if let Some((start, opaque)) = taken.start {
            let hart_id = hart.config.hart_id;
            sbi::enter_supervisor(hart, start, hart_id, opaque);
            self.tlbs[0].flush_all();
            engine.flush_translations(0, FlushScope::All);
            if let Some(sbi) = &mut self.sbi {
                sbi.started(0);
            }
            self.waiting[0] = false;
            self.turn = None;
        }
        if taken.ipi {
            self.harts[0].csrs.mip |= interrupt::SSI;
        }
        let mut environment = FirmwareEnvironment {
            devices: &mut self.devices,
            ram: &mut self.ram,
            realmap: &self.realmap,
            tlbs: &mut self.tlbs,
            engine,
        };
        let everything = if taken.everything { &sbi::Fence::EVERYTHING[..] } else { &[] };
        for &fence in taken.fences.iter().chain(everything) {
            sbi::perform_fence(0, fence, &mut environment);
        }
        shared.served(me, taken.ticket);
    }

    /// Tells the other harts of a state change of this `Vm`'s hart by its own SBI calls or wake.
    fn publish_sbi_state(&self, before: Option<HartState>) {
        if let (Some((shared, me)), Some(sbi)) = (self.shared_sbi, &self.sbi) {
            let now = sbi.state(0);
            if now != before {
                if let Some(state) = now {
                    shared.publish(me, state);
                }
            }
        }
    }

    /// The VMM's own SBI, when the VM boots without firmware.
    pub fn sbi(&self) -> Option<&Sbi> {
        self.sbi.as_ref()
    }

    /// Serves the HTIF protocol at the `tohost`/`fromhost` words `htif` names, with output to `console`.
    pub fn attach_htif(&mut self, htif: Htif, console: &'a mut dyn SerialBackend) {
        self.htif = Some((htif, console));
    }

    /// Tells `observer` of every trap a hart takes from now on.
    pub fn set_trap_observer(&mut self, observer: &'a mut dyn TrapObserver) {
        self.trap_observer = Some(observer);
    }

    /// Chooses how guest time advances (the host's clock by default).
    pub fn set_time_source(&mut self, source: TimeSource) {
        self.time_source = source;
    }

    /// Whether an idle VM blocks the host in [`Clock::idle`] (the default) or returns at once, leaving the host
    /// to decide when to sleep from [`Vm::last_activity`] (what [`super::Hypervisor`] does, since another VM may
    /// be runnable).
    pub fn set_sleep_when_idle(&mut self, sleep: bool) {
        self.sleep_when_idle = sleep;
    }

    /// What the last [`Vm::run_slice`] found: the guest ran, or every hart waited (and for how long).
    pub fn last_activity(&self) -> SliceActivity {
        self.last_activity
    }

    /// The current time in ticks of the timebase, from the time source.
    fn now(&mut self) -> u64 {
        match self.time_source {
            // Never below a value the guest was given: time hidden from it (`hide_time`) is known only after it
            // may have read some of it, and must then hold its time still rather than take it back.
            TimeSource::Host => self.clock.now().wrapping_add(self.time_offset).max(self.last_now),
            TimeSource::Instructions { shift } => {
                let nanoseconds = (self.steps as u128) << shift.min(32);
                let ticks = nanoseconds / (1_000_000_000 / TIMEBASE_HZ) as u128;
                (ticks as u64).wrapping_add(self.skipped_ticks)
            }
        }
    }

    /// Ticks until the VM's next timer deadline: its devices' (the CLINT's) or one its guest set through the
    /// VMM's own SBI, whichever comes first (`None`: no timer is armed).
    pub fn ticks_until_deadline(&self) -> Option<u64> {
        let devices = self.devices.ticks_until_deadline();
        let firmware = self.sbi.as_ref().and_then(|sbi| sbi.ticks_until_deadline(self.devices.mtime()));
        match (devices, firmware) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hides `ticks` of host time from the guest: under [`TimeSource::Host`] its time (and its timers) stand
    /// still for them, as if they had not passed. What a scheduler does for time the VM was runnable but another
    /// ran, or the VMM worked for it ([`super::Hypervisor::run_timed_slice`]). Under
    /// [`TimeSource::Instructions`] time only follows the guest's instructions anyway: nothing changes. Nor in a
    /// `Vm` of one hart of several ([`super::VmBuilder::only_hart`]): a machine has one clock, and each hart's
    /// `Vm` hiding its own waits would let its harts' `time` drift apart (a guest kernel compares the times its
    /// harts read); its time is the host's, as on a real machine.
    pub fn hide_time(&mut self, ticks: u64) {
        if !self.shares_clock {
            self.time_offset = self.time_offset.wrapping_sub(ticks);
        }
    }

    /// Makes this `Vm` one hart of several sharing the machine's clock (see [`Vm::hide_time`]).
    pub(super) fn share_clock(&mut self) {
        self.shares_clock = true;
    }

    /// Every hart waits for an interrupt: let time pass until the next deadline or host input.
    fn idle(&mut self) {
        if self.devices.input_pending() {
            // The input interrupt is raised at the next update: not idle.
            return;
        }
        let deadline = self.ticks_until_deadline();
        match (self.time_source, deadline) {
            (TimeSource::Instructions { .. }, Some(ticks)) => {
                self.skipped_ticks = self.skipped_ticks.wrapping_add(ticks.max(1))
            }
            _ => {
                self.last_activity = SliceActivity::Idle { ticks: deadline };
                if self.sleep_when_idle {
                    self.clock.idle(deadline);
                }
            }
        }
    }

    /// Runs until the guest powers off or resets, a hart stops for the debugger, or `limit` instructions have
    /// been executed.
    pub fn run(&mut self, engine: &mut impl Engine, limit: Option<u64>) -> RunOutcome {
        // A lone hart on host time has no other hart to take turns with: its calls last until the next timer
        // deadline (at most `LONE_HART_TICKS`) whatever the engine's speed, and devices still see every exit.
        // Instruction-counted time keeps its turns, so runs repeat as before.
        let lone = self.harts.len() == 1 && self.time_source == TimeSource::Host;
        let mut slice = if lone { 4 * SLICE } else { SLICE };
        loop {
            let budget = match limit {
                Some(limit) if self.steps >= limit => return RunOutcome::InstructionLimit,
                Some(limit) => slice.min(limit - self.steps),
                None => slice,
            };
            // (The clock is read here, not taken from the devices' last update: exits update them too.)
            let (steps, started) = (self.steps, if lone { self.now() } else { 0 });
            if let Some(outcome) = self.run_slice(engine, budget) {
                return outcome;
            }
            // Only a call that ran its whole budget tells the engine's speed (not one that waited or stopped).
            if lone && self.steps - steps >= budget {
                let ticks = self.now().wrapping_sub(started);
                slice = next_lone_slice(budget, ticks, self.ticks_until_deadline());
            }
        }
    }

    /// Runs the current turn on for at most `budget` instructions, or starts the next runnable hart's turn, or
    /// sleeps when every hart waits for an interrupt. Returns an outcome when the guest asked the machine to
    /// stop. A turn lasts [`SLICE`] instructions, or the budget of the call that starts it when that is more
    /// (the native board passes a time quantum). A turn that is not over when `budget` is spent goes on at the
    /// next call, so cutting a run into short calls (the lockstep runner, the tracer) does not move where turns
    /// end; only devices are updated more often.
    pub fn run_slice(&mut self, engine: &mut impl Engine, budget: u64) -> Option<RunOutcome> {
        self.last_activity = SliceActivity::Ran;
        self.update_devices();
        self.apply_sbi_requests(engine);
        // (An embedder may have taken harts away since: a turn of a hart that is gone is over.)
        let turn = match self.turn.take().filter(|turn| turn.hart < self.harts.len()) {
            Some(turn) => turn,
            None => match self.next_turn(engine, budget.max(SLICE)) {
                Some(turn) => turn,
                None => {
                    self.idle();
                    return None;
                }
            },
        };
        if let Some(outcome) = self.run_turn(engine, turn, budget) {
            return Some(outcome);
        }
        self.poll_htif()
    }

    /// Serves HTIF `tohost`, as Spike does between instructions: the machine's end if the guest asked for it.
    fn poll_htif(&mut self) -> Option<RunOutcome> {
        let (htif, console) = self.htif.as_mut()?;
        htif.poll(&mut self.ram, console).map(RunOutcome::from)
    }

    /// A new turn of `length` instructions for the next hart that can run, `None` when every hart waits.
    fn next_turn(&mut self, engine: &mut impl Engine, length: u64) -> Option<Turn> {
        let index = self.next_runnable_hart()?;
        if let Some(sbi) = &mut self.sbi {
            let before = sbi.state(index);
            if sbi.wake(index, &mut self.harts[index]) {
                // Re-entered from a non-retentive suspend: no translation survives.
                self.tlbs[index].flush_all();
                engine.flush_translations(index, FlushScope::All);
            }
            self.publish_sbi_state(before);
        }
        Some(Turn { hart: index, remaining: length, spin: SpinCheck::new(&self.harts[index]) })
    }

    /// Runs `turn` for at most `budget` instructions: engine runs, each exit served at once, with interrupts
    /// checked before every run (a CSR write may have just enabled a pending one). Keeps the turn for the next
    /// call unless it is over.
    fn run_turn(&mut self, engine: &mut impl Engine, mut turn: Turn, budget: u64) -> Option<RunOutcome> {
        let index = turn.hart;
        let mut budget = budget.min(turn.remaining);
        // A lone hart has nobody to wait for but devices and interrupts: its engine runs as long as the budget
        // lets it (on the native board, one long time quantum). One that shares the VMM's SBI with harts on other
        // threads looks at their requests (IPIs, fences a caller waits for) every slice: often enough for a
        // caller, rarely enough that a translator seldom has to stop inside a block.
        let interval = if self.harts.len() > 1 {
            engine.spin_check_interval().max(1)
        } else if self.shared_sbi.is_some() {
            engine.spin_check_interval().max(SLICE)
        } else {
            u64::MAX
        };
        while budget > 0 {
            let chunk = budget.min(interval);
            self.apply_sbi_requests(engine);
            self.take_pending_interrupt(index);
            let (exit, retired) = self.run_engine(engine, index, chunk);
            let steps = retired + (exit != Exit::BudgetExhausted) as u64;
            budget = budget.saturating_sub(steps);
            turn.remaining = turn.remaining.saturating_sub(steps);
            match self.serve(engine, index, exit) {
                Ok(true) => {}
                // Waiting or stopped: the turn is over.
                Ok(false) => return None,
                Err(outcome) => return Some(outcome),
            }
            if turn.spin.spinning(&self.harts[index]) {
                self.yields += 1;
                return None;
            }
            if exit == Exit::BudgetExhausted && retired < chunk {
                // The engine's budget is a time quantum (the native engine): it is over.
                break;
            }
        }
        if turn.remaining > 0 {
            self.turn = Some(turn);
        }
        None
    }

    /// Hart `index` takes the interrupt pending for it, if any.
    fn take_pending_interrupt(&mut self, index: usize) {
        let hart = &mut self.harts[index];
        if let Some(code) = hart.pending_interrupt() {
            let from = hart.privilege;
            hart.take_trap(true, code, 0);
            if let Some(observer) = self.trap_observer.as_deref_mut() {
                observer.trap_taken(&TrapTaken::after(index, hart, from));
            }
        }
    }

    /// One engine run of at most `budget` instructions on hart `index`: the exit and the instructions the engine
    /// retired.
    fn run_engine(&mut self, engine: &mut impl Engine, index: usize, budget: u64) -> (Exit, u64) {
        let hart = &mut self.harts[index];
        let retired_before = hart.instret;
        let mut memory = Memory { ram: &mut self.ram, realmap: &self.realmap, tlb: &mut self.tlbs[index] };
        if self.time_source == TimeSource::Host {
            engine.set_guest_time(self.last_now);
        }
        let exit = engine.run(hart, &mut memory, budget);
        if let Some(served) = engine.take_time_served() {
            self.last_now = self.last_now.max(served);
        }
        // Counted from the engine alone: the dispatcher may emulate a guest write to `minstret`. The
        // instruction behind an exit is a step whether it then retires or traps.
        let retired = hart.instret.wrapping_sub(retired_before);
        // A debug stop is no step: nothing of the instruction happened.
        let exited = !matches!(exit, Exit::BudgetExhausted | Exit::Debug(_));
        self.steps = self.steps.wrapping_add(retired + exited as u64);
        self.exits += exited as u64;
        self.last_exit = (index, exit);
        (exit, retired)
    }

    /// Serves hart `index`'s `exit`: whether its turn goes on, or the machine's end. Devices are brought up to
    /// the current time first, as they were when every exit ended a slice: a `time` or `mtime` read sees time
    /// move, and a timer that has expired is pending before the next instruction (deferring it to the next turn
    /// measurably slowed Linux, which then waited for it, while the update costs little). A device access is
    /// followed by one more update, since it may change what the devices signal.
    fn serve(&mut self, engine: &mut impl Engine, index: usize, exit: Exit) -> Result<bool, RunOutcome> {
        match exit {
            Exit::BudgetExhausted => return Ok(true),
            // The dispatcher has nothing to do: the debugger decides.
            Exit::Debug(stop) => return Err(RunOutcome::DebugStop { hart: index, stop }),
            _ => {}
        }
        if let Exit::System { .. } = exit {
            // A privileged or critical instruction touches no device (the hottest exits: counter reads and
            // interrupt toggles): time and the timer lines are enough.
            self.update_time();
        } else {
            self.update_devices();
        }
        if let (Some(_), Exit::Exception { cause: Exception::EcallFromS, .. }) = (&self.sbi, exit) {
            if let Some(outcome) = self.firmware_call(engine, index) {
                return Err(outcome);
            }
            // A caller that stopped or suspended itself waits; harts it started or signalled run in their own
            // turns.
            return Ok(!self.waiting[index] && self.sbi.as_ref().is_some_and(|sbi| sbi.may_run(index)));
        }
        let hart = &mut self.harts[index];
        let mut platform =
            MachinePlatform { devices: &mut self.devices, ram: &mut self.ram, tlb: &mut self.tlbs[index] };
        let (traps_before, from) = (hart.traps_taken, hart.privilege);
        let resume = self.dispatcher.dispatch(exit, hart, &mut platform);
        if hart.traps_taken != traps_before {
            if let Some(observer) = self.trap_observer.as_deref_mut() {
                observer.trap_taken(&TrapTaken::after(index, hart, from));
            }
        }
        match resume {
            Resume::Continue => {}
            Resume::WaitForInterrupt => {
                self.waiting[index] = true;
                return Ok(false);
            }
            Resume::Yield => {
                self.yields += 1;
                return Ok(false);
            }
            Resume::Machine(request) => return Err(request.into()),
        }
        if let Exit::Mmio(_) = exit {
            // The access may have re-armed a timer, claimed an interrupt or sent an IPI: the lines must be right
            // before the next instruction.
            self.update_devices();
        }
        Ok(true)
    }

    /// The timer (and the VMM's SBI timers) advance to the current time: [`Devices::update_time`].
    fn update_time(&mut self) {
        let now = self.now();
        self.last_now = now;
        self.devices.update_time(now, &mut self.harts);
        if let Some(sbi) = &mut self.sbi {
            sbi.update_timers(now, &mut self.harts);
        }
    }

    /// Devices (and the VMM's SBI timers) advance to the current time and drive the harts' interrupts.
    fn update_devices(&mut self) {
        let now = self.now();
        self.last_now = now;
        self.devices.update(now, &mut self.harts, &mut self.ram);
        if let Some(sbi) = &mut self.sbi {
            sbi.update_timers(now, &mut self.harts);
        }
    }

    /// Serves an `ecall` from S-mode on hart `index` with the VMM's own SBI; `engine` hears of its fences.
    fn firmware_call(&mut self, engine: &mut impl Engine, index: usize) -> Option<RunOutcome> {
        let sbi = self.sbi.as_mut()?;
        let before = sbi.state(index);
        let mut environment = FirmwareEnvironment {
            devices: &mut self.devices,
            ram: &mut self.ram,
            realmap: &self.realmap,
            tlbs: &mut self.tlbs,
            engine,
        };
        let resume = match self.shared_sbi {
            Some((shared, me)) => sbi.call_shared(&mut self.harts, &mut environment, shared, me),
            None => sbi.call(index, &mut self.harts, &mut environment),
        };
        self.publish_sbi_state(before);
        let sbi = self.sbi.as_mut()?;
        for (other, waiting) in self.waiting.iter_mut().enumerate() {
            // A stopped hart waits for nothing; started again, it runs at once.
            if !sbi.may_run(other) {
                *waiting = false;
            }
        }
        match resume {
            Resume::Continue | Resume::Yield => None,
            Resume::WaitForInterrupt => {
                self.waiting[index] = sbi.may_run(index);
                None
            }
            Resume::Machine(request) => Some(request.into()),
        }
    }

    /// The next hart, round-robin, that is not parked in `wfi` (a pending interrupt unparks it) nor stopped
    /// by the VMM's own SBI.
    fn next_runnable_hart(&mut self) -> Option<usize> {
        let count = self.harts.len();
        for step in 0..count {
            let index = (self.next_hart + step) % count;
            if self.sbi.as_ref().is_some_and(|sbi| !sbi.may_run(index)) {
                continue;
            }
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

    /// Runs hart `index` alone for one instruction, for a debugger's single step: an instruction that leaves the
    /// engine (a CSR access, a trap, a device access, `ecall`) is one step too, completed by the dispatcher.
    /// Pending interrupts are not taken (as QEMU steps by default) but stay pending; a hart that waits for an
    /// interrupt that has not come, or that the VMM's SBI keeps stopped, does not run.
    pub fn step_hart(&mut self, engine: &mut impl Engine, index: usize) -> HartStep {
        if index >= self.harts.len() {
            return HartStep::Idle;
        }
        self.update_devices();
        self.apply_sbi_requests(engine);
        if self.sbi.as_ref().is_some_and(|sbi| !sbi.may_run(index))
            || (self.waiting[index] && !self.harts[index].wake_up_pending())
        {
            return HartStep::Idle;
        }
        self.waiting[index] = false;
        if let Some(sbi) = &mut self.sbi {
            let before = sbi.state(index);
            if sbi.wake(index, &mut self.harts[index]) {
                self.tlbs[index].flush_all();
                engine.flush_translations(index, FlushScope::All);
            }
            self.publish_sbi_state(before);
        }
        self.apply_sbi_requests(engine);
        // No interrupt is taken (QEMU's default for a debugger's step): interrupts stay pending.
        let (exit, _) = self.run_engine(engine, index, 1);
        if let Err(outcome) = self.serve(engine, index, exit) {
            return HartStep::Stopped(outcome);
        }
        match self.poll_htif() {
            Some(outcome) => HartStep::Stopped(outcome),
            None => HartStep::Done,
        }
    }

    /// Reads guest memory at virtual address `va` as hart `index` sees it now, for a debugger: translated by
    /// [`mmu::debug_translate`](crate::mem::mmu::debug_translate) (no A/D update, no TLB fill, no PMP check),
    /// RAM only (device registers are never read, as reading them has effects). Returns how many bytes were read
    /// before the first one that could not be.
    pub fn debug_read(&self, index: usize, va: u64, buf: &mut [u8]) -> usize {
        let Some(hart) = self.harts.get(index) else { return 0 };
        let mut done = 0;
        while done < buf.len() {
            let address = va.wrapping_add(done as u64);
            let chunk = (buf.len() - done).min((PAGE_SIZE - (address & (PAGE_SIZE - 1))) as usize);
            let Some(target) = buf.get_mut(done..done + chunk) else { break };
            let read = debug_translate(&self.ram, hart, address).and_then(|gpa| self.ram.read_bytes(gpa, target));
            if read.is_none() {
                break;
            }
            done += chunk;
        }
        done
    }

    /// Writes guest memory at virtual address `va` as hart `index` sees it now, for a debugger: translated as
    /// [`Vm::debug_read`] does, RAM only, whatever the page's permissions. Code translated from the bytes is
    /// dropped before it runs again, as for any write to RAM. Returns how many bytes were written before the
    /// first one that could not be.
    pub fn debug_write(&mut self, index: usize, va: u64, bytes: &[u8]) -> usize {
        let Some(hart) = self.harts.get(index) else { return 0 };
        let mut done = 0;
        while done < bytes.len() {
            let address = va.wrapping_add(done as u64);
            let chunk = (bytes.len() - done).min((PAGE_SIZE - (address & (PAGE_SIZE - 1))) as usize);
            let Some(gpa) = debug_translate(&self.ram, hart, address) else { break };
            let Some(source) = bytes.get(done..done + chunk) else { break };
            if self.ram.write_bytes(gpa, source).is_none() {
                break;
            }
            done += chunk;
        }
        done
    }

    /// Writes CSR `number` of hart `index` for a debugger ([`Hart::debug_write_csr`]), dropping the hart's
    /// cached translations when the write changed how addresses translate. False: no such hart or CSR, or the
    /// CSR is read-only.
    pub fn debug_write_csr(&mut self, index: usize, number: u16, value: u64) -> bool {
        let (Some(hart), Some(tlb)) = (self.harts.get_mut(index), self.tlbs.get_mut(index)) else { return false };
        match hart.debug_write_csr(number, value) {
            Ok(effect) => {
                if effect.translation_changed {
                    tlb.flush_all();
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// What [`Vm::step_hart`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HartStep {
    /// The hart executed one instruction, or trapped on it.
    Done,
    /// The hart waits for an interrupt or is stopped by the VMM's SBI: nothing ran.
    Idle,
    /// The instruction asked the machine to stop, or stopped for the debugger before it ran
    /// ([`RunOutcome::DebugStop`]).
    Stopped(RunOutcome),
}

/// The hart whose turn it is, what is left of the turn, and its spin check.
struct Turn {
    hart: usize,
    remaining: u64,
    spin: SpinCheck,
}

/// Whether a hart provably waits for another: its pc and integer registers at a check are those of an earlier
/// check in the same turn, with instructions run in between. Then it went round a loop that read the same
/// values from memory and changed nothing it will read again (its registers are all it carries from one round to
/// the next), so it goes on doing so until another hart, a device or an interrupt changes something: giving up
/// the rest of its turn loses it nothing but time it would have spent spinning. A loop whose progress is kept in
/// memory alone (a counter it increments there, reloading the same registers) also matches; it is only slowed,
/// never changed. Checks are made after every exit and every engine run; the snapshot moves as in Brent's cycle
/// detection (after 1, 2, 4, ... up to [`SPIN_PERIOD_MAX`] checks), so a loop of up to that many checks is
/// caught wherever the turn started, and a check at another pc costs one comparison.
#[derive(Clone, Copy)]
struct SpinCheck {
    pc: u64,
    x: [u64; 32],
    /// Checks since the snapshot, and how many it is kept for.
    since: u32,
    period: u32,
}

impl SpinCheck {
    fn new(hart: &Hart) -> Self {
        Self { pc: hart.pc, x: hart.x, since: 0, period: 1 }
    }

    /// Whether `hart` is where the snapshot was; if not, counts the check and moves the snapshot when due.
    fn spinning(&mut self, hart: &Hart) -> bool {
        // Register by register (a loop polling a counter keeps its pc and changes one register): a slice
        // comparison would be a byte-wise `memcmp` on targets without a fast one.
        if hart.pc == self.pc && hart.x.iter().zip(&self.x).all(|(now, then)| now == then) {
            return true;
        }
        self.since += 1;
        if self.since >= self.period {
            *self = Self { pc: hart.pc, x: hart.x, since: 0, period: (self.period * 2).min(SPIN_PERIOD_MAX) };
        }
        false
    }
}

mod snapshot;

impl<D: Devices> core::fmt::Debug for Vm<'_, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("harts", &self.harts).field("steps", &self.steps).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::SerialBackend;
    use crate::exec::interp::Interpreter;
    use crate::hart::{HartConfig, Privilege};
    use crate::isa::{self, BranchCond, Inst, OpImmKind};
    use crate::mem::RAM_BASE;
    use crate::vm::sbi::{eid, HartState};
    use crate::vm::virt::VirtDevices;
    use std::vec::Vec;

    #[derive(Default)]
    struct Recorder(Vec<u8>);

    impl SerialBackend for Recorder {
        fn write_byte(&mut self, byte: u8) {
            self.0.push(byte);
        }
        fn read_byte(&mut self) -> Option<u8> {
            None
        }
    }

    struct FixedClock;

    impl Clock for FixedClock {
        fn now(&mut self) -> u64 {
            0
        }
    }

    /// `rd` = the 32-bit constant `value` (lui + addi).
    fn li(rd: u8, value: i32) -> [Inst; 2] {
        let upper = value.wrapping_add(0x800) & !0xfff;
        [Inst::Lui { rd, imm: upper }, Inst::OpImm { op: OpImmKind::Addi, rd, rs1: rd, imm: value.wrapping_sub(upper) }]
    }

    /// An SBI call: a7 = `extension`, a6 = `function`, then `ecall`.
    fn sbi_call(extension: u64, function: i32) -> Vec<Inst> {
        let mut code = li(17, extension as i32).to_vec();
        code.extend(li(16, function));
        code.push(Inst::Ecall);
        code
    }

    fn assemble(backing: &mut [u8], offset: usize, code: &[Inst]) {
        for (index, inst) in code.iter().enumerate() {
            let at = offset + 4 * index;
            backing[at..at + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
        }
    }

    /// A machine of `programs.len()` harts in M-mode, hart `i` starting at its program, each program at
    /// `i * 0x1000` in RAM (a zero word for a flag follows each at +0x400); time counts instructions.
    fn machine<'a>(
        backing: &'a mut Vec<u8>,
        clock: &'a mut FixedClock,
        programs: &[&[Inst]],
    ) -> Vm<'a, VirtDevices<'static, Recorder>> {
        backing.resize(0x10000, 0);
        for (index, program) in programs.iter().enumerate() {
            assemble(backing, index * 0x1000, program);
        }
        let harts = (0..programs.len()).map(|index| {
            let mut hart = Hart::new(HartConfig::rv64gc(index as u64));
            hart.reset(RAM_BASE + index as u64 * 0x1000);
            hart
        });
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm = Vm::new(harts, Ram::new(RAM_BASE, backing), devices, clock).unwrap();
        vm.set_time_source(TimeSource::Instructions { shift: 0 });
        vm
    }

    const T0: u8 = 5;
    const T1: u8 = 6;

    /// Counts in t1 forever, with no exit.
    fn counting() -> Vec<Inst> {
        vec![Inst::OpImm { op: OpImmKind::Addi, rd: T1, rs1: T1, imm: 1 }, Inst::Jal { rd: 0, offset: -4 }]
    }

    /// Counts in t0 and writes it to `mscratch` each round: an exit every third instruction.
    fn counting_with_exits() -> Vec<Inst> {
        vec![
            Inst::OpImm { op: OpImmKind::Addi, rd: T0, rs1: T0, imm: 1 },
            Inst::Csr { op: isa::CsrOp::Rw, rd: 0, src: T0, csr: isa::csr::MSCRATCH },
            Inst::Jal { rd: 0, offset: -8 },
        ]
    }

    /// Waits for the flag word at +0x400 to become nonzero, with plain loads (no exit), then counts.
    fn waiting_for_flag() -> Vec<Inst> {
        let mut program = vec![
            Inst::Auipc { rd: T1, imm: 0 },
            Inst::Load { width: isa::LoadWidth::W, rd: T0, rs1: T1, offset: 0x400 },
            Inst::Branch { cond: BranchCond::Eq, rs1: T0, rs2: 0, offset: -8 },
        ];
        program.extend(counting());
        program
    }

    /// A lone hart's calls on host time last until the next timer deadline at the engine's speed, at most 1 ms,
    /// within their bounds.
    #[test]
    fn a_lone_harts_calls_last_until_the_next_deadline() {
        let (shortest, longest) = LONE_HART_SLICES;
        // 100 000 instructions in 1000 ticks: 100 a tick.
        assert_eq!(next_lone_slice(100_000, 1000, None), 100 * LONE_HART_TICKS, "no timer: the longest aim");
        assert_eq!(next_lone_slice(100_000, 1000, Some(2 * LONE_HART_TICKS)), 100 * LONE_HART_TICKS);
        assert_eq!(next_lone_slice(100_000, 1000, Some(500)), 50_000, "a timer due in 500 ticks");
        assert_eq!(next_lone_slice(100_000, 1000, Some(1)), shortest);
        assert_eq!(next_lone_slice(u64::MAX, 1, None), longest);
        assert_eq!(next_lone_slice(shortest, u64::MAX, None), shortest);
    }

    fn both_engines(
        test: impl Fn(&mut dyn FnMut(&mut Vm<'_, VirtDevices<'static, Recorder>>, u64) -> Option<RunOutcome>),
    ) {
        test(&mut |vm, budget| vm.run_slice(&mut Interpreter, budget));
        let mut threaded = std::boxed::Box::new(crate::exec::threaded::Threaded::<1024, 64, 128>::new());
        test(&mut |vm, budget| vm.run_slice(&mut *threaded, budget));
    }

    /// An exit the dispatcher serves (here a CSR write every third instruction) does not end a hart's turn: it
    /// runs its whole [`SLICE`], then the other hart gets its turn.
    #[test]
    fn an_exit_does_not_end_the_turn() {
        both_engines(|run_slice| {
            let (mut backing, mut clock) = (Vec::new(), FixedClock);
            let mut vm = machine(&mut backing, &mut clock, &[&counting_with_exits(), &counting()]);
            run_slice(&mut vm, SLICE);
            assert_eq!(vm.steps, SLICE);
            assert_eq!(vm.exits, 1365, "an exit every third instruction");
            assert_eq!((vm.harts[0].instret, vm.harts[1].instret), (SLICE, 0), "hart 0 ran its whole turn");
            run_slice(&mut vm, SLICE);
            assert_eq!((vm.harts[0].instret, vm.harts[1].instret), (SLICE, SLICE), "then hart 1 ran its turn");
            assert_eq!(vm.yields, 0, "neither hart spins");
        });
    }

    /// A turn cut into many short calls goes on where it was: the harts run exactly as in whole-turn calls.
    #[test]
    fn short_calls_continue_the_turn() {
        let (mut backing, mut clock) = (Vec::new(), FixedClock);
        let programs: [&[Inst]; 2] = [&counting_with_exits(), &counting()];
        let mut whole = machine(&mut backing, &mut clock, &programs);
        let (mut backing_b, mut clock_b) = (Vec::new(), FixedClock);
        let mut cut = machine(&mut backing_b, &mut clock_b, &programs);
        for _ in 0..5 {
            whole.run_slice(&mut Interpreter, SLICE);
        }
        while cut.steps < whole.steps {
            cut.run_slice(&mut Interpreter, 7);
        }
        assert_eq!(cut.steps, whole.steps);
        assert_eq!(cut.harts, whole.harts);
    }

    /// The `pause` hint ends the turn at once (the hart waits for another), on both engines.
    #[test]
    fn a_pause_hint_yields_the_turn() {
        both_engines(|run_slice| {
            let mut spinner = vec![Inst::OpImm { op: OpImmKind::Addi, rd: T0, rs1: T0, imm: 1 }, isa::PAUSE];
            spinner.push(Inst::Jal { rd: 0, offset: -8 });
            let (mut backing, mut clock) = (Vec::new(), FixedClock);
            let mut vm = machine(&mut backing, &mut clock, &[&spinner, &counting()]);
            run_slice(&mut vm, SLICE);
            assert_eq!((vm.harts[0].instret, vm.harts[0].x(T0), vm.yields), (2, 1, 1), "addi and pause retired");
            assert_eq!(vm.harts[0].pc, RAM_BASE + 8, "past the pause");
            run_slice(&mut vm, SLICE);
            assert_eq!(vm.harts[1].instret, SLICE, "hart 1 had its turn");
        });
    }

    /// A hart going round a loop without exits and without changing a register (it waits for a flag in memory)
    /// gives up its turn at a spin check, on both engines; a hart whose registers change never does, and once
    /// the flag is set the waiting hart goes on.
    #[test]
    fn a_spinning_hart_yields_at_a_spin_check() {
        both_engines(|run_slice| {
            let (mut backing, mut clock) = (Vec::new(), FixedClock);
            let mut vm = machine(&mut backing, &mut clock, &[&waiting_for_flag(), &counting()]);
            run_slice(&mut vm, SLICE);
            // The turn started before the loop's first round set t1: the second check finds the first one's state.
            assert_eq!((vm.harts[0].instret, vm.yields), (2 * SPIN_CHECK, 1), "hart 0 yielded at the second check");
            run_slice(&mut vm, SLICE);
            assert_eq!((vm.harts[1].instret, vm.yields), (SLICE, 1), "the counting hart ran its whole turn");
            run_slice(&mut vm, SLICE);
            assert_eq!((vm.harts[0].instret, vm.yields), (3 * SPIN_CHECK, 2), "in the loop: the first check yields");
            vm.ram.store(RAM_BASE + 0x400, 4, 1).unwrap();
            run_slice(&mut vm, SLICE);
            run_slice(&mut vm, SLICE);
            assert_eq!(vm.harts[0].instret, 3 * SPIN_CHECK + SLICE, "once the flag is set, hart 0 runs a whole turn");
            assert_ne!(vm.harts[0].x(T1), 0, "and counts");
            assert_eq!(vm.yields, 2);
        });
    }

    /// A CSR write that enables a pending interrupt has it taken before the next instruction, although the
    /// turn goes on after the exit.
    #[test]
    fn an_interrupt_a_csr_write_enables_is_taken_before_the_next_instruction() {
        both_engines(|run_slice| {
            let program = [
                Inst::Csr { op: isa::CsrOp::Rsi, rd: 0, src: 8, csr: isa::csr::MSTATUS },
                Inst::OpImm { op: OpImmKind::Addi, rd: T0, rs1: 0, imm: 1 },
                Inst::Jal { rd: 0, offset: 0 },
            ];
            let handler = [Inst::Jal { rd: 0, offset: 0 }];
            let (mut backing, mut clock) = (Vec::new(), FixedClock);
            let mut vm = machine(&mut backing, &mut clock, &[&program, &handler]);
            let hart = &mut vm.harts[0];
            hart.csrs.mtvec = RAM_BASE + 0x1000;
            hart.csrs.mie = crate::isa::csr::interrupt::SSI;
            hart.csrs.mip = crate::isa::csr::interrupt::SSI;
            run_slice(&mut vm, SLICE);
            let hart = &vm.harts[0];
            assert_eq!(hart.csrs.mcause, (1 << 63) | 1, "the supervisor software interrupt was taken");
            assert_eq!(hart.csrs.mepc, RAM_BASE + 4, "right after the csrsi");
            assert_eq!(hart.x(T0), 0, "before the addi ran");
        });
    }

    /// A device access updates the interrupt lines before the next instruction although the turn goes on: a
    /// hart that pushes its pending timer's deadline away and then enables interrupts takes none.
    #[test]
    fn a_device_access_updates_the_interrupt_lines_at_once() {
        both_engines(|run_slice| {
            let program = [
                Inst::OpImm { op: OpImmKind::Addi, rd: T0, rs1: 0, imm: -1 },
                Inst::Lui { rd: T1, imm: 0x0200_4000 },
                Inst::Store { width: isa::StoreWidth::D, rs1: T1, rs2: T0, offset: 0 },
                Inst::Csr { op: isa::CsrOp::Rsi, rd: 0, src: 8, csr: isa::csr::MSTATUS },
                Inst::OpImm { op: OpImmKind::Addi, rd: 7, rs1: 0, imm: 1 },
                Inst::Jal { rd: 0, offset: 0 },
            ];
            let handler = [Inst::Jal { rd: 0, offset: 0 }];
            let (mut backing, mut clock) = (Vec::new(), FixedClock);
            let mut vm = machine(&mut backing, &mut clock, &[&program, &handler]);
            vm.devices.write(0x0200_4000, 8, 0, &mut vm.ram).unwrap();
            vm.harts[0].csrs.mtvec = RAM_BASE + 0x1000;
            vm.harts[0].csrs.mie = crate::isa::csr::interrupt::MTI;
            run_slice(&mut vm, SLICE);
            let hart = &vm.harts[0];
            assert_eq!((hart.csrs.mcause, hart.x(7)), (0, 1), "no timer interrupt: mtimecmp was pushed away first");
            assert_eq!(hart.mip() & crate::isa::csr::interrupt::MTI, 0);
        });
    }

    /// Time moves within a turn: two reads of `time` in one turn, a hundred instructions apart, differ (guest
    /// time counts instructions here, one tick per hundred).
    #[test]
    fn time_moves_within_a_turn() {
        let mut program = vec![Inst::Csr { op: isa::CsrOp::Rs, rd: T0, src: 0, csr: isa::csr::TIME }];
        program.extend([Inst::OpImm { op: OpImmKind::Addi, rd: 7, rs1: 7, imm: 1 }; 200]);
        program.push(Inst::Csr { op: isa::CsrOp::Rs, rd: T1, src: 0, csr: isa::csr::TIME });
        program.push(Inst::Jal { rd: 0, offset: 0 });
        let (mut backing, mut clock) = (Vec::new(), FixedClock);
        let mut vm = machine(&mut backing, &mut clock, &[&program, &counting()]);
        vm.run_slice(&mut Interpreter, SLICE);
        let hart = &vm.harts[0];
        assert_eq!(hart.x(7), 200, "one turn ran both reads");
        assert_eq!(hart.x(T1) - hart.x(T0), 2, "202 instructions at 1 ns each are 2 ticks of 100 ns");
    }

    const SECONDARY: usize = 0x400;

    /// Hart 0 starts hart 1 at [`SECONDARY`] with opaque 'w', waits until it has stopped again, prints 'A'
    /// through DBCN and shuts the machine down; hart 1 prints its opaque value and stops itself.
    #[test]
    fn builtin_sbi_starts_and_stops_harts_and_powers_off() {
        let mut boot = Vec::new();
        boot.extend(li(10, 1));
        boot.push(Inst::Auipc { rd: 11, imm: 0 });
        let auipc_at = 4 * (boot.len() as i32 - 1);
        boot.push(Inst::OpImm { op: OpImmKind::Addi, rd: 11, rs1: 11, imm: SECONDARY as i32 - auipc_at });
        boot.extend(li(12, b'w' as i32));
        boot.extend(sbi_call(eid::HSM, 0));
        let wait_loop = boot.len();
        boot.extend(li(10, 1));
        boot.extend(sbi_call(eid::HSM, 2));
        boot.extend(li(5, HartState::Stopped as i32));
        let back = 4 * (wait_loop as i32 - boot.len() as i32);
        boot.push(Inst::Branch { cond: BranchCond::Ne, rs1: 11, rs2: 5, offset: back });
        boot.extend(li(10, b'A' as i32));
        boot.extend(sbi_call(eid::DBCN, 2));
        boot.extend(li(10, 0));
        boot.extend(li(11, 0));
        boot.extend(sbi_call(eid::SRST, 0));
        boot.push(Inst::Jal { rd: 0, offset: 0 });
        let mut secondary = vec![Inst::OpImm { op: OpImmKind::Addi, rd: 10, rs1: 11, imm: 0 }];
        secondary.extend(sbi_call(eid::DBCN, 2));
        secondary.extend(sbi_call(eid::HSM, 1));
        secondary.push(Inst::Jal { rd: 0, offset: 0 });

        let mut backing = vec![0u8; 0x10000];
        assemble(&mut backing, 0, &boot);
        assemble(&mut backing, SECONDARY, &secondary);
        let mut clock = FixedClock;
        let harts = (0..2).map(|id| Hart::new(HartConfig::rv64gc(id)));
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm = Vm::new(harts, Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        vm.boot_with_builtin_sbi(0, RAM_BASE, 0x1234);
        assert_eq!((vm.harts[0].privilege, vm.harts[0].x(11)), (Privilege::Supervisor, 0x1234));
        assert_eq!(vm.sbi().and_then(|sbi| sbi.state(1)), Some(HartState::Stopped));

        let outcome = vm.run(&mut Interpreter, Some(100_000));
        assert_eq!(outcome, RunOutcome::PowerOff { code: 0 });
        assert_eq!(vm.devices.uart.backend().0, b"wA");
        assert_eq!(vm.sbi().and_then(|sbi| sbi.state(1)), Some(HartState::Stopped));
        assert_eq!(vm.harts[1].pc, RAM_BASE + SECONDARY as u64 + 4 * 10, "hart 1 stopped at its hart_stop ecall");
    }

    /// The interpreter, recording what the VM tells its engine besides runs.
    struct Recording {
        fences: Vec<(usize, FlushScope)>,
        budgets: Vec<u64>,
        interval: u64,
    }

    impl Engine for Recording {
        fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
            self.budgets.push(budget);
            Interpreter.run(hart, memory, budget)
        }
        fn flush_translations(&mut self, hart: usize, scope: FlushScope) {
            self.fences.push((hart, scope));
        }
        fn spin_check_interval(&self) -> u64 {
            self.interval
        }
    }

    /// An SBI remote fence executes no `sfence.vma` on its targets: the engine hears of it for each target (the
    /// native board's shadow tables, shared by the VM's harts, kept stale kernel mappings without it, and a
    /// two-hart Linux locked up in `stop_machine`).
    #[test]
    fn remote_fences_reach_the_engine_for_every_target() {
        let mut program = Vec::new();
        // remote_sfence_vma(hart_mask 0b11, base 0, start 0x4000_0000, size one page), then shutdown.
        program.extend(li(10, 0b11));
        program.extend(li(11, 0));
        program.extend(li(12, 0x4000_0000));
        program.extend(li(13, 0x1000));
        program.extend(sbi_call(eid::RFENCE, 1));
        // remote_fence_i to hart 1 only: no translation changes.
        program.extend(li(10, 0b10));
        program.extend(li(11, 0));
        program.extend(sbi_call(eid::RFENCE, 0));
        program.extend(li(10, 0));
        program.extend(li(11, 0));
        program.extend(sbi_call(eid::SRST, 0));
        let mut backing = vec![0u8; 0x10000];
        assemble(&mut backing, 0, &program);
        let mut clock = FixedClock;
        let harts = (0..2).map(|id| Hart::new(HartConfig::rv64gc(id)));
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm = Vm::new(harts, Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        vm.boot_with_builtin_sbi(0, RAM_BASE, 0);
        let mut engine = Recording { fences: Vec::new(), budgets: Vec::new(), interval: SPIN_CHECK };
        assert_eq!(vm.run(&mut engine, Some(100_000)), RunOutcome::PowerOff { code: 0 });
        let page = FlushScope::Sfence { address: Some(0x4000_0000), asid: None };
        assert_eq!(engine.fences, [(0, page), (1, page)]);
    }

    /// With several harts, no engine run is longer than the engine's spin-check interval (the native board asks
    /// for 100 µs rather than the 10 µs that `SPIN_CHECK` instructions make); a lone hart's runs take the whole
    /// budget.
    #[test]
    fn runs_between_spin_checks_follow_the_engine() {
        let (mut backing, mut clock) = (Vec::new(), FixedClock);
        let mut vm = machine(&mut backing, &mut clock, &[&counting(), &counting()]);
        let mut engine = Recording { fences: Vec::new(), budgets: Vec::new(), interval: 2_000 };
        for _ in 0..8 {
            vm.run_slice(&mut engine, 10_000);
        }
        assert!(engine.budgets.iter().all(|&budget| budget <= 2_000), "{:?}", engine.budgets);
        assert!(engine.budgets.contains(&2_000), "{:?}", engine.budgets);
        assert!(vm.harts[0].x(T1) > 0 && vm.harts[1].x(T1) > 0, "both harts ran");

        let (mut backing, mut clock) = (Vec::new(), FixedClock);
        let mut vm = machine(&mut backing, &mut clock, &[&counting()]);
        let mut engine = Recording { fences: Vec::new(), budgets: Vec::new(), interval: 2_000 };
        vm.run_slice(&mut engine, 10_000);
        assert_eq!(engine.budgets, [10_000]);
    }

    /// A hart that arms the SBI timer and waits in `wfi` is woken by STIP once time reaches the deadline.
    #[test]
    fn builtin_sbi_timer_wakes_a_waiting_hart() {
        let mut program = Vec::new();
        // sie.STIE, then set_timer(now + 1000) and wfi.
        program.extend(li(5, 1 << 5));
        program.push(Inst::Csr { op: isa::CsrOp::Rs, rd: 0, src: 5, csr: isa::csr::SIE });
        program.extend(li(10, 1000));
        program.extend(sbi_call(eid::TIME, 0));
        program.push(Inst::Wfi);
        program.extend(li(10, 0));
        program.extend(li(11, 0));
        program.extend(sbi_call(eid::SRST, 0));
        let mut backing = vec![0u8; 0x10000];
        assemble(&mut backing, 0, &program);
        let mut clock = FixedClock;
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm =
            Vm::new([Hart::new(HartConfig::rv64gc(0))], Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        vm.set_time_source(TimeSource::Instructions { shift: 0 });
        vm.boot_with_builtin_sbi(0, RAM_BASE, 0);
        assert_eq!(vm.run(&mut Interpreter, Some(100_000)), RunOutcome::PowerOff { code: 0 });
        assert!(vm.time() >= 1000, "time jumped to the SBI deadline while the hart waited");
        assert_ne!(vm.harts[0].mip() & crate::isa::csr::interrupt::STI, 0, "STIP is pending");
    }

    struct TrapLog(Vec<TrapTaken>);

    impl TrapObserver for TrapLog {
        fn trap_taken(&mut self, trap: &TrapTaken) {
            self.0.push(*trap);
        }
    }

    /// The observer hears of every trap as it is taken, whoever raises it: an exception the engine returns
    /// (`ecall`), one the dispatcher injects while emulating (an illegal CSR), and an interrupt taken before a
    /// slice (a machine software interrupt through the CLINT's `msip`).
    #[test]
    fn the_trap_observer_sees_every_trap_as_it_is_taken() {
        use crate::isa::{csr, CsrOp, StoreWidth};
        const HANDLER: i32 = 0x100;
        let csrrs = |rd, src, csr| Inst::Csr { op: CsrOp::Rs, rd, src, csr };
        let csrrw = |rd, src, csr| Inst::Csr { op: CsrOp::Rw, rd, src, csr };
        let mut program = vec![Inst::Auipc { rd: 5, imm: 0 }];
        program.push(Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: HANDLER });
        program.push(csrrw(0, 5, csr::MTVEC));
        let ecall_at = program.len() as u64 * 4;
        program.push(Inst::Ecall);
        let illegal_at = program.len() as u64 * 4;
        program.push(csrrs(10, 0, 0x7c0));
        // mie.MSIE, mstatus.MIE, then msip = 1: the interrupt comes before the next slice.
        program.extend(li(6, 1 << 3));
        program.push(csrrs(0, 6, csr::MIE));
        program.push(csrrs(0, 6, csr::MSTATUS));
        program.extend(li(7, 0x0200_0000));
        program.extend(li(28, 1));
        let msip_at = program.len() as u64 * 4;
        program.push(Inst::Store { width: StoreWidth::W, rs1: 7, rs2: 28, offset: 0 });
        let interrupted_at = program.len() as u64 * 4;
        program.extend(li(7, 0x10_0000));
        program.extend(li(28, 0x5555));
        program.push(Inst::Store { width: StoreWidth::W, rs1: 7, rs2: 28, offset: 0 });
        // The handler: an interrupt clears msip and returns to the interrupted instruction, an exception
        // returns past the trapping one.
        let mut handler = vec![csrrs(29, 0, csr::MCAUSE)];
        handler.push(Inst::Branch { cond: BranchCond::Lt, rs1: 29, rs2: 0, offset: 5 * 4 });
        handler.push(csrrs(30, 0, csr::MEPC));
        handler.push(Inst::OpImm { op: OpImmKind::Addi, rd: 30, rs1: 30, imm: 4 });
        handler.push(csrrw(0, 30, csr::MEPC));
        handler.push(Inst::Mret);
        handler.extend(li(30, 0x0200_0000));
        handler.push(Inst::Store { width: StoreWidth::W, rs1: 30, rs2: 0, offset: 0 });
        handler.push(Inst::Mret);

        let mut backing = vec![0u8; 0x10000];
        assemble(&mut backing, 0, &program);
        assemble(&mut backing, HANDLER as usize, &handler);
        let mut clock = FixedClock;
        let mut log = TrapLog(Vec::new());
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        let mut vm = Vm::new([hart], Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        vm.set_trap_observer(&mut log);
        assert_eq!(vm.run(&mut Interpreter, Some(10_000)), RunOutcome::PowerOff { code: 0 });
        drop(vm);
        let handler_at = RAM_BASE + HANDLER as u64;
        let machine = Privilege::Machine;
        let trap = |interrupt, code, epc, tval| TrapTaken {
            hart: 0,
            interrupt,
            code,
            epc: RAM_BASE + epc,
            tval,
            from: machine,
            to: machine,
            handler: handler_at,
        };
        let csr_word = u64::from(isa::encode(&csrrs(10, 0, 0x7c0)));
        assert_eq!(
            log.0,
            [trap(false, 11, ecall_at, 0), trap(false, 2, illegal_at, csr_word), trap(true, 3, interrupted_at, 0)]
        );
        assert!(msip_at < interrupted_at);
    }

    /// `step_hart` runs exactly the hart it is given for exactly one instruction on the threaded engine (an
    /// exit counts as the step), leaves pending interrupts pending and runs nothing on a waiting hart; a
    /// debugger's write to code is what the next step executes.
    #[test]
    fn step_hart_runs_one_instruction_of_one_hart() {
        use crate::exec::threaded::Threaded;
        let mut program = vec![
            Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 1 },
            Inst::Csr { op: isa::CsrOp::Rs, rd: 6, src: 0, csr: isa::csr::MSCRATCH },
            Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 1 },
            Inst::Wfi,
        ];
        program.push(Inst::Jal { rd: 0, offset: 0 });
        let mut backing = vec![0u8; 0x10000];
        assemble(&mut backing, 0, &program);
        let mut watch = vec![0u64; 1];
        let mut clock = FixedClock;
        let harts = (0..2).map(|id| {
            let mut hart = Hart::new(HartConfig::rv64gc(id));
            hart.reset(RAM_BASE);
            hart
        });
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut watch);
        let mut vm = Vm::new(harts, ram, devices, &mut clock).unwrap();
        let mut engine: Threaded<256, 16, 32> = Threaded::new();
        vm.harts[1].csrs.mscratch = 0x55;
        // A machine software interrupt, enabled and pending on hart 1: a step does not take it.
        vm.harts[1].csrs.mie = isa::csr::interrupt::MSI;
        vm.harts[1].csrs.mstatus |= isa::csr::mstatus::MIE;
        vm.harts[1].interrupt_lines = isa::csr::interrupt::MSI;

        assert_eq!(vm.step_hart(&mut engine, 1), HartStep::Done);
        assert_eq!((vm.harts[1].pc, vm.harts[1].x(5)), (RAM_BASE + 4, 1));
        assert_eq!((vm.harts[0].pc, vm.harts[0].x(5)), (RAM_BASE, 0), "hart 0 did not run");
        assert_eq!(vm.step_hart(&mut engine, 1), HartStep::Done, "the CSR read leaves the engine");
        assert_eq!((vm.harts[1].pc, vm.harts[1].x(6)), (RAM_BASE + 8, 0x55));
        assert_eq!(vm.harts[1].csrs.mcause, 0, "the pending interrupt was not taken");

        // The debugger rewrites the third instruction: the next step runs the new one, not the cached block.
        let new = isa::encode(&Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 40 }).to_le_bytes();
        assert_eq!(vm.debug_write(1, RAM_BASE + 8, &new), 4);
        assert_eq!(vm.step_hart(&mut engine, 1), HartStep::Done);
        assert_eq!(vm.harts[1].x(5), 41);

        // Hart 0 reaches wfi with nothing pending and then waits: a step runs nothing.
        vm.harts[0].pc = RAM_BASE + 12;
        assert_eq!(vm.step_hart(&mut engine, 0), HartStep::Done);
        assert_eq!(vm.step_hart(&mut engine, 0), HartStep::Idle);
        assert_eq!(vm.harts[0].pc, RAM_BASE + 16);
        assert_eq!(vm.step_hart(&mut engine, 7), HartStep::Idle, "no such hart");

        // A debugger's software breakpoint stops the step before the instruction, which does not run.
        assert!(vm.harts[1].triggers.insert_software_breakpoint(RAM_BASE + 12));
        let stop = RunOutcome::DebugStop { hart: 1, stop: crate::debug::DebugStop::SoftwareBreakpoint };
        assert_eq!(vm.step_hart(&mut engine, 1), HartStep::Stopped(stop));
        assert_eq!(vm.harts[1].pc, RAM_BASE + 12);
    }

    /// The debugger's memory access goes through the hart's translation, across pages, RAM only.
    #[test]
    fn debug_read_and_write_translate_and_stop_at_the_end_of_ram() {
        use crate::mem::sv39::{make_pte, PteFlags, Satp, SATP_MODE_SV39};
        let mut backing = vec![0u8; 0x10000];
        let mut clock = FixedClock;
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm =
            Vm::new([Hart::new(HartConfig::rv64gc(0))], Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        // A 1 GiB superpage: virtual 0x4000_0000 -> RAM_BASE, read/write, A and D clear.
        let leaf = make_pte(RAM_BASE >> 12, PteFlags::V | PteFlags::R | PteFlags::W);
        vm.ram.store(RAM_BASE + 0x8000 + 8, 8, leaf).unwrap();
        vm.harts[0].privilege = Privilege::Supervisor;
        vm.harts[0].csrs.satp = Satp::new(SATP_MODE_SV39, 0, (RAM_BASE + 0x8000) >> 12).0;

        assert_eq!(vm.debug_write(0, 0x4000_0ffe, b"abcd"), 4, "across a page boundary");
        assert_eq!(vm.ram.slice(RAM_BASE + 0xffe, 4), Some(&b"abcd"[..]));
        let mut buf = [0u8; 4];
        assert_eq!(vm.debug_read(0, 0x4000_0ffe, &mut buf), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(vm.ram.load(RAM_BASE + 0x8008, 8), Some(leaf), "no A or D bit was set");
        assert_eq!(vm.debug_read(0, 0x4000_fffe, &mut buf), 2, "RAM ends after two bytes");
        assert_eq!(vm.debug_read(0, 0x8000_0000, &mut buf), 0, "not mapped");
        vm.harts[0].privilege = Privilege::Machine;
        assert_eq!(vm.debug_read(0, 0x1000_0000, &mut buf), 0, "a device is never read");
        assert_eq!(vm.debug_read(0, RAM_BASE + 0xffe, &mut buf), 4, "M-mode reads guest real addresses");
        assert_eq!(vm.debug_read(1, RAM_BASE, &mut buf), 0, "no such hart");
    }

    #[test]
    fn debug_csr_writes_flush_translations_when_they_change_them() {
        let mut backing = vec![0u8; 0x1000];
        let mut clock = FixedClock;
        let devices: VirtDevices<'_, Recorder> = VirtDevices::new(Recorder::default());
        let mut vm =
            Vm::new([Hart::new(HartConfig::rv64gc(0))], Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
        vm.harts[0].privilege = Privilege::User;
        assert!(vm.debug_write_csr(0, isa::csr::MSCRATCH, 5));
        assert_eq!(vm.harts[0].csrs.mscratch, 5);
        assert!(!vm.debug_write_csr(0, isa::csr::MHARTID, 5), "read-only");
        assert!(!vm.debug_write_csr(3, isa::csr::MSCRATCH, 5), "no such hart");
        assert_eq!(vm.harts[0].privilege, Privilege::User);
    }
}
