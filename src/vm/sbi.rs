//! The VMM's own SBI: the firmware interface a guest kernel in virtual S-mode calls with `ecall`, served by
//! the VMM itself when the VM has no firmware of its own (`--bios builtin`), so the VMM plays the M-mode
//! firmware OpenSBI would otherwise be.
//!
//! Offered: SBI specification **v2.0** with the Base (0x10), Timer (`TIME`), IPI (`sPI`), RFENCE (`RFNC`),
//! Hart State Management (`HSM`), System Reset (`SRST`) and Debug Console (`DBCN`) extensions, and the legacy
//! calls 0x00-0x08 (set_timer, console_putchar, console_getchar, clear_ipi, send_ipi, the three remote fences,
//! shutdown). Deliberately left out: PMU, System Suspend, CPPC, Nested Acceleration, Steal-time, SSE, FWFT,
//! MPXY and Debug Triggers (none has a device behind it here), and the RFENCE hypervisor fences (the harts have
//! no H extension): all answer `SBI_ERR_NOT_SUPPORTED`, as does every unknown EID or FID, and
//! `probe_extension` says 0 for them. HSM suspend offers the two default types only; there are no
//! platform-specific suspend or reset types.
//!
//! Design: [`Sbi`] holds what the firmware keeps per hart (the HSM state and the SBI timer deadline) and
//! [`Sbi::call`] serves one `ecall` from a hart in S-mode, reading EID/FID/arguments from `a7`/`a6`/`a0`-`a5`,
//! writing `a0` (error) and `a1` (value) and stepping past the `ecall`. What the firmware needs from the machine
//! (time, console, guest physical memory, translation flushes) comes through [`SbiEnvironment`], so the hosted
//! `Vm` and a native board share this code. Timer deadlines are multiplexed by the caller: it calls
//! [`Sbi::update_timers`] with the current time before running a hart, which raises `mip.STIP` as OpenSBI does
//! when its machine timer fires, and sleeps at most until [`Sbi::ticks_until_deadline`].
//!
//! Every argument is guest-controlled and hostile: hart masks are bounds-checked against the hart count, DBCN
//! buffers against guest RAM (never a device), legacy hart-mask pointers are read through the caller's own
//! translation (a fault is injected back into S-mode at the `ecall`, as the legacy extension requires), and no
//! call allocates, blocks on the guest, or panics.

use crate::dev::MachineRequest;
use crate::hart::{Exception, Hart, Privilege};
use crate::isa::csr::{interrupt, mstatus};
use crate::mem::sv39::Fault;
use crate::trap::{FlushScope, Resume};

use super::machine::MAX_HARTS;
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

mod shared;
pub use shared::{SbiShared, StartError, Taken};

/// The other harts of a `Vm` that holds one hart of the machine: their shared state, and the caller's index in
/// the machine (`None`: every hart is in the caller's `Vm`).
type Peers<'s, 'w> = Option<(&'s SbiShared<'w>, usize)>;

/// SBI specification version implemented: 2.0 (major in bits 30:24, minor in 23:0).
pub const SPEC_VERSION: u64 = 2 << 24;
/// The implementation ID reported by `sbi_get_impl_id`: "TRAP" in ASCII. The registered IDs are small
/// sequential numbers (0 BBL, 1 OpenSBI, ... 11 bhyve), so this one stays clear of them.
pub const IMPL_ID: u64 = 0x5452_4150;
/// The implementation version: this crate's version, major in bits 31:16 and minor in 15:0.
pub const IMPL_VERSION: u64 =
    (parse_decimal(env!("CARGO_PKG_VERSION_MAJOR")) << 16) | (parse_decimal(env!("CARGO_PKG_VERSION_MINOR")) & 0xffff);

const fn parse_decimal(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut value = 0u64;
    let mut index = 0;
    while index < bytes.len() {
        value = value * 10 + (bytes[index] - b'0') as u64;
        index += 1;
    }
    value
}

/// Extension IDs (`a7`).
pub mod eid {
    pub const LEGACY_SET_TIMER: u64 = 0x00;
    pub const LEGACY_CONSOLE_PUTCHAR: u64 = 0x01;
    pub const LEGACY_CONSOLE_GETCHAR: u64 = 0x02;
    pub const LEGACY_CLEAR_IPI: u64 = 0x03;
    pub const LEGACY_SEND_IPI: u64 = 0x04;
    pub const LEGACY_REMOTE_FENCE_I: u64 = 0x05;
    pub const LEGACY_REMOTE_SFENCE_VMA: u64 = 0x06;
    pub const LEGACY_REMOTE_SFENCE_VMA_ASID: u64 = 0x07;
    pub const LEGACY_SHUTDOWN: u64 = 0x08;
    pub const BASE: u64 = 0x10;
    pub const TIME: u64 = 0x5449_4d45;
    pub const IPI: u64 = 0x0073_5049;
    pub const RFENCE: u64 = 0x5246_4e43;
    pub const HSM: u64 = 0x0048_534d;
    pub const SRST: u64 = 0x5352_5354;
    pub const DBCN: u64 = 0x4442_434e;
}

/// The standard SBI error codes (`a0`).
pub mod error {
    pub const SUCCESS: i64 = 0;
    pub const FAILED: i64 = -1;
    pub const NOT_SUPPORTED: i64 = -2;
    pub const INVALID_PARAM: i64 = -3;
    pub const DENIED: i64 = -4;
    pub const INVALID_ADDRESS: i64 = -5;
    pub const ALREADY_AVAILABLE: i64 = -6;
    pub const ALREADY_STARTED: i64 = -7;
    pub const ALREADY_STOPPED: i64 = -8;
}

/// Every extension [`Sbi`] answers `probe_extension` with 1 for.
pub const EXTENSIONS: [u64; 16] = [
    eid::LEGACY_SET_TIMER,
    eid::LEGACY_CONSOLE_PUTCHAR,
    eid::LEGACY_CONSOLE_GETCHAR,
    eid::LEGACY_CLEAR_IPI,
    eid::LEGACY_SEND_IPI,
    eid::LEGACY_REMOTE_FENCE_I,
    eid::LEGACY_REMOTE_SFENCE_VMA,
    eid::LEGACY_REMOTE_SFENCE_VMA_ASID,
    eid::LEGACY_SHUTDOWN,
    eid::BASE,
    eid::TIME,
    eid::IPI,
    eid::RFENCE,
    eid::HSM,
    eid::SRST,
    eid::DBCN,
];

/// HSM suspend types.
pub const SUSPEND_DEFAULT_RETENTIVE: u32 = 0x0000_0000;
pub const SUSPEND_DEFAULT_NON_RETENTIVE: u32 = 0x8000_0000;

/// The exceptions delegated to S-mode: everything delegable except `ecall` from S-mode, which the SBI serves.
/// OpenSBI delegates fewer (misaligned fetch, breakpoint, user `ecall`, page faults) and redirects the rest to
/// S-mode after trying to emulate them; the harts here need no emulation (misaligned loads and stores are done
/// in hardware, `time` is a CSR), so delegating them directly gives the guest the same traps.
pub const DELEGATED_EXCEPTIONS: u64 = (1 << Exception::InstructionMisaligned as u64)
    | (1 << Exception::InstructionAccessFault as u64)
    | (1 << Exception::IllegalInstruction as u64)
    | (1 << Exception::Breakpoint as u64)
    | (1 << Exception::LoadMisaligned as u64)
    | (1 << Exception::LoadAccessFault as u64)
    | (1 << Exception::StoreMisaligned as u64)
    | (1 << Exception::StoreAccessFault as u64)
    | (1 << Exception::EcallFromU as u64)
    | (1 << Exception::InstructionPageFault as u64)
    | (1 << Exception::LoadPageFault as u64)
    | (1 << Exception::StorePageFault as u64);
/// The interrupts delegated to S-mode, as OpenSBI does: supervisor software, timer and external.
pub const DELEGATED_INTERRUPTS: u64 = interrupt::SSI | interrupt::STI | interrupt::SEI;
/// `mcounteren`/`scounteren`: `cycle`, `time` and `instret` readable from S-mode and U-mode.
pub const COUNTERS_ENABLED: u64 = 0b111;

/// `pmp0cfg` = R | W | X with A = NAPOT: entry 0 opens all memory to S-mode and U-mode.
const PMP_OPEN: u64 = 0b1_1111;

/// Largest range a remote `sfence.vma` flushes page by page; a larger one flushes the whole address space (or
/// ASID), which the specification allows.
const MAX_FENCE_PAGES: u64 = 64;
/// Most bytes one DBCN read or write moves (both may be partial); bounds the time one call takes.
const DBCN_LIMIT: u64 = 4096;
/// The stack buffer DBCN moves bytes through.
const DBCN_CHUNK: usize = 256;

/// A hart's state in the Hart State Management extension (the numbers are the HSM state IDs). The VMM makes
/// every transition at once, so the `*_PENDING` states are never observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum HartState {
    Started = 0,
    Stopped = 1,
    StartPending = 2,
    StopPending = 3,
    Suspended = 4,
    SuspendPending = 5,
    ResumePending = 6,
}

/// What the SBI needs from the machine around the harts. The hosted `Vm` implements it over its RAM, devices
/// and soft TLBs; a native board over its memory partition, console and shadow page tables.
pub trait SbiEnvironment {
    /// The machine timer (`time`), in ticks of the timebase.
    fn time(&mut self) -> u64;
    /// Writes `bytes` to the console the UART uses; returns how many it took.
    fn console_write(&mut self, bytes: &[u8]) -> usize;
    /// The next byte of console input, if one is ready; never blocks.
    fn console_read(&mut self) -> Option<u8>;
    /// Copies guest physical memory `[addr, addr + buf.len())` into `buf`; false (nothing copied) unless every
    /// byte is RAM the guest may read.
    fn read_physical(&mut self, addr: u64, buf: &mut [u8]) -> bool;
    /// Copies `bytes` to guest physical memory at `addr`; false (nothing written) unless every byte is RAM the
    /// guest may write.
    fn write_physical(&mut self, addr: u64, bytes: &[u8]) -> bool;
    /// Whether `[addr, addr + len)` is all RAM the guest may access (DBCN buffers, checked whole up front).
    fn physical_accessible(&self, addr: u64, len: u64) -> bool;
    /// Whether S-mode may execute at guest physical `addr` (an HSM start or resume address).
    fn executable(&self, addr: u64) -> bool;
    /// Loads the doubleword at virtual address `va` as `hart` (index `index`, in S-mode) would, through its
    /// own translation: the legacy calls' hart-mask pointers.
    fn load_virtual(&mut self, index: usize, hart: &Hart, va: u64) -> Result<u64, Fault>;
    /// Drops hart `index`'s cached translations covered by `scope`.
    fn flush_translations(&mut self, index: usize, scope: FlushScope);
    /// Hart `index` must see the instruction stream as memory holds it now (a remote `fence.i`): the engines'
    /// code watch may have deferred its fence until then ([`Ram::sync_instruction_fetch`](crate::mem::Ram)).
    fn fence_i(&mut self, index: usize) {
        let _ = index;
    }
}

/// What the firmware keeps for one hart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HartSlot {
    state: HartState,
    /// The SBI timer deadline; `u64::MAX` when none is armed (a deadline that far is never reached).
    deadline: u64,
    /// A non-retentive suspend resumes here, with `a1` = the opaque value.
    resume: Option<(u64, u64)>,
}

/// The result of one SBI function: `a0` and `a1`, or only `a0` for a legacy call.
enum Answer {
    Pair(i64, u64),
    Legacy(u64),
}

fn ok(value: u64) -> Answer {
    Answer::Pair(error::SUCCESS, value)
}

fn err(code: i64) -> Answer {
    Answer::Pair(code, 0)
}

/// How a call ends besides its answer.
enum Flow {
    /// Return to the caller with the answer, past the `ecall`.
    Return(Answer),
    /// Return the answer, then let the caller sleep until an interrupt is pending (a retentive suspend).
    ReturnAndSuspend(Answer),
    /// The caller does not come back (it stopped, or suspended non-retentively).
    NoReturn,
    /// The calling instruction raised an exception, already injected (a legacy hart-mask pointer faulted).
    Faulted,
    /// The whole machine stops.
    Machine(MachineRequest),
}

/// The VMM's SBI implementation for one VM: per-hart HSM state and timer deadlines.
///
/// Call order, for the VM's scheduler: before running harts, [`update_timers`](Self::update_timers) with the
/// current time; run only harts that [`may_run`](Self::may_run); when a hart that waited for an interrupt is
/// picked to run again, [`wake`](Self::wake) it first; when a hart in S-mode executes `ecall`,
/// [`call`](Self::call) instead of injecting the exception, and act on the [`Resume`] it returns; when every
/// hart waits, sleep no longer than [`ticks_until_deadline`](Self::ticks_until_deadline).
#[derive(Debug, Clone)]
pub struct Sbi {
    slots: [HartSlot; MAX_HARTS],
    harts: usize,
}

impl Sbi {
    /// The firmware of a VM with `harts` harts (at most [`MAX_HARTS`]): `boot_hart` is STARTED, every other
    /// hart STOPPED until a guest `hart_start`.
    pub fn new(harts: usize, boot_hart: usize) -> Self {
        let stopped = HartSlot { state: HartState::Stopped, deadline: u64::MAX, resume: None };
        let mut slots = [stopped; MAX_HARTS];
        if let Some(slot) = slots.get_mut(boot_hart) {
            slot.state = HartState::Started;
        }
        Self { slots, harts: harts.min(MAX_HARTS) }
    }

    /// Hart `index`'s HSM state, `None` for a hart the VM does not have.
    pub fn state(&self, index: usize) -> Option<HartState> {
        self.slot(index).map(|slot| slot.state)
    }

    /// Whether hart `index` may run (or wait for an interrupt): it is started or suspended, not stopped.
    pub fn may_run(&self, index: usize) -> bool {
        matches!(self.state(index), Some(HartState::Started | HartState::Suspended))
    }

    /// Hart `index`'s SBI timer deadline, `None` when none is armed.
    pub fn deadline(&self, index: usize) -> Option<u64> {
        self.slot(index).map(|slot| slot.deadline).filter(|&deadline| deadline != u64::MAX)
    }

    fn slot(&self, index: usize) -> Option<&HartSlot> {
        self.slots.get(index).filter(|_| index < self.harts)
    }

    /// Raises `mip.STIP` on every hart whose deadline has come (and disarms it), as OpenSBI does when the
    /// machine timer it programmed for the hart fires. Call before running harts, with the current time.
    pub fn update_timers(&mut self, now: u64, harts: &mut [Hart]) {
        for (slot, hart) in self.slots.iter_mut().zip(harts.iter_mut()).take(self.harts) {
            if slot.deadline != u64::MAX && now >= slot.deadline {
                slot.deadline = u64::MAX;
                hart.csrs.mip |= interrupt::STI;
            }
        }
    }

    /// Ticks from `now` until the earliest armed deadline of a hart that can run, `None` when none is armed.
    pub fn ticks_until_deadline(&self, now: u64) -> Option<u64> {
        self.slots
            .iter()
            .take(self.harts)
            .filter(|slot| matches!(slot.state, HartState::Started | HartState::Suspended))
            .map(|slot| slot.deadline)
            .filter(|&deadline| deadline != u64::MAX)
            .min()
            .map(|deadline| deadline.saturating_sub(now))
    }

    /// Hart `index` was started by another hart through [`SbiShared`] (its `Vm` entered it): STARTED, with no
    /// timer armed and no resume point.
    pub fn started(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = HartSlot { state: HartState::Started, deadline: u64::MAX, resume: None };
        }
    }

    /// Hart `index` is about to run after waiting for an interrupt: completes a pending resume from suspend.
    /// Returns true when the hart was re-entered (non-retentive resume: its translations must be flushed).
    pub fn wake(&mut self, index: usize, hart: &mut Hart) -> bool {
        let harts = self.harts;
        let Some(slot) = self.slots.get_mut(index).filter(|_| index < harts) else { return false };
        if slot.state != HartState::Suspended {
            return false;
        }
        slot.state = HartState::Started;
        match slot.resume.take() {
            Some((address, opaque)) => {
                enter_supervisor(hart, address, hart.config.hart_id, opaque);
                true
            }
            None => false,
        }
    }

    /// Serves the `ecall` hart `caller` (in S-mode, pc at the `ecall`) just executed. The hart's registers hold
    /// the call; on return `a0`/`a1` hold the answer and the pc is past the `ecall`, unless the call does not
    /// return (the hart stopped or suspended, or the machine is to power off or reset) or raised an exception
    /// (already injected). [`Resume::WaitForInterrupt`] means: park the caller until an interrupt is pending
    /// for it (a suspend), or for good while it is stopped (see [`may_run`](Self::may_run)).
    pub fn call(&mut self, caller: usize, harts: &mut [Hart], env: &mut impl SbiEnvironment) -> Resume {
        self.call_in(caller, harts, env, None)
    }

    /// [`call`](Self::call) for a `Vm` that holds hart `index` of the machine alone (its only hart, at index 0
    /// of `harts` and of this `Sbi`): every other hart is reached through `shared`, whose requests for this
    /// hart the `Vm` applies ([`SbiShared::take`]). A remote fence returns once its targets performed it.
    pub fn call_shared(
        &mut self,
        harts: &mut [Hart],
        env: &mut impl SbiEnvironment,
        shared: &SbiShared<'_>,
        index: usize,
    ) -> Resume {
        self.call_in(0, harts, env, Some((shared, index)))
    }

    fn call_in(&mut self, caller: usize, harts: &mut [Hart], env: &mut impl SbiEnvironment, peers: Peers) -> Resume {
        if caller >= self.harts.min(harts.len()) {
            return Resume::Continue;
        }
        let flow = self.serve(caller, harts, env, peers);
        let hart = &mut harts[caller];
        let answer = match flow {
            Flow::Return(answer) => answer,
            Flow::ReturnAndSuspend(answer) => {
                finish(hart, answer);
                return Resume::WaitForInterrupt;
            }
            Flow::NoReturn => return Resume::WaitForInterrupt,
            Flow::Faulted => return Resume::Continue,
            Flow::Machine(request) => return Resume::Machine(request),
        };
        finish(hart, answer);
        Resume::Continue
    }

    fn serve(&mut self, caller: usize, harts: &mut [Hart], env: &mut impl SbiEnvironment, peers: Peers) -> Flow {
        let hart = &harts[caller];
        let [a0, a1, a2, a3, a4, _a5, fid, eid] = core::array::from_fn(|i| hart.x(10 + i as u8));
        match eid {
            eid::BASE => Flow::Return(self.base(fid, a0, &harts[caller])),
            eid::TIME if fid == 0 => {
                self.set_timer(caller, &mut harts[caller], a0, env.time());
                Flow::Return(ok(0))
            }
            eid::IPI if fid == 0 => Flow::Return(match self.targets(a0, a1, peers) {
                Ok(targets) => {
                    self.send_ipi(caller, targets, harts, peers);
                    ok(0)
                }
                Err(code) => err(code),
            }),
            eid::RFENCE => Flow::Return(self.rfence(caller, fid, [a0, a1, a2, a3, a4], env, peers)),
            eid::HSM => self.hsm(caller, harts, fid, [a0, a1, a2], env, peers),
            eid::SRST if fid == 0 => match system_reset(a0 as u32, a1 as u32) {
                Ok(request) => Flow::Machine(request),
                Err(code) => Flow::Return(err(code)),
            },
            eid::DBCN => Flow::Return(debug_console(fid, a0, a1, a2, env)),
            eid::LEGACY_SET_TIMER => {
                self.set_timer(caller, &mut harts[caller], a0, env.time());
                Flow::Return(Answer::Legacy(0))
            }
            eid::LEGACY_CONSOLE_PUTCHAR => {
                env.console_write(&[a0 as u8]);
                Flow::Return(Answer::Legacy(0))
            }
            eid::LEGACY_CONSOLE_GETCHAR => Flow::Return(Answer::Legacy(env.console_read().map_or(u64::MAX, u64::from))),
            eid::LEGACY_CLEAR_IPI => {
                let hart = &mut harts[caller];
                let pending = hart.csrs.mip & interrupt::SSI != 0;
                hart.csrs.mip &= !interrupt::SSI;
                Flow::Return(Answer::Legacy(pending as u64))
            }
            eid::LEGACY_SEND_IPI..=eid::LEGACY_REMOTE_SFENCE_VMA_ASID => {
                let targets = match self.legacy_targets(caller, harts, a0, env, peers) {
                    Ok(Ok(targets)) => targets,
                    Ok(Err(code)) => return Flow::Return(Answer::Legacy(code as u64)),
                    Err(fault) => {
                        harts[caller].raise(fault.exception, fault.tval);
                        return Flow::Faulted;
                    }
                };
                let code = match eid {
                    eid::LEGACY_SEND_IPI => {
                        self.send_ipi(caller, targets, harts, peers);
                        error::SUCCESS
                    }
                    eid::LEGACY_REMOTE_FENCE_I => {
                        remote_fence(caller, targets, FenceKind::Instruction, 0, 0, env, peers)
                    }
                    eid::LEGACY_REMOTE_SFENCE_VMA => {
                        remote_fence(caller, targets, FenceKind::Vma(None), a1, a2, env, peers)
                    }
                    _ => remote_fence(caller, targets, FenceKind::Vma(Some(a3 as u16)), a1, a2, env, peers),
                };
                Flow::Return(Answer::Legacy(code as u64))
            }
            eid::LEGACY_SHUTDOWN => Flow::Machine(MachineRequest::PowerOff { code: 0 }),
            _ => Flow::Return(err(error::NOT_SUPPORTED)),
        }
    }

    fn base(&self, fid: u64, a0: u64, hart: &Hart) -> Answer {
        match fid {
            0 => ok(SPEC_VERSION),
            1 => ok(IMPL_ID),
            2 => ok(IMPL_VERSION),
            3 => ok(EXTENSIONS.contains(&a0) as u64),
            4 => ok(machine_csr(hart, crate::isa::csr::MVENDORID)),
            5 => ok(machine_csr(hart, crate::isa::csr::MARCHID)),
            6 => ok(machine_csr(hart, crate::isa::csr::MIMPID)),
            _ => err(error::NOT_SUPPORTED),
        }
    }

    /// Arms hart `index`'s timer at `deadline` and clears its pending timer interrupt; a deadline already past
    /// raises it again at once.
    fn set_timer(&mut self, index: usize, hart: &mut Hart, deadline: u64, now: u64) {
        hart.csrs.mip &= !interrupt::STI;
        if let Some(slot) = self.slots.get_mut(index) {
            slot.deadline = deadline;
            if deadline != u64::MAX && now >= deadline {
                slot.deadline = u64::MAX;
                hart.csrs.mip |= interrupt::STI;
            }
        }
    }

    /// The harts a `hart_mask`/`hart_mask_base` pair names, as a bit set of hart indices.
    fn targets(&self, mask: u64, base: u64, peers: Peers) -> Result<u64, i64> {
        let harts = self.machine_harts(peers);
        let all = if harts >= 64 { u64::MAX } else { (1u64 << harts) - 1 };
        if base == u64::MAX {
            return Ok(all);
        }
        if base >= harts as u64 {
            return Err(error::INVALID_PARAM);
        }
        // Every set bit must name a hart: `base + bit < harts`, so no bit at or above `harts - base` is set.
        let room = harts as u64 - base;
        if room < 64 && mask >> room != 0 {
            return Err(error::INVALID_PARAM);
        }
        Ok(mask << base)
    }

    /// The legacy calls' hart set: a pointer to a hart-mask bit vector in the caller's virtual memory, or
    /// every hart when the pointer is 0. `Err` is a fault to inject into the caller.
    fn legacy_targets(
        &self,
        caller: usize,
        harts: &[Hart],
        pointer: u64,
        env: &mut impl SbiEnvironment,
        peers: Peers,
    ) -> Result<Result<u64, i64>, Fault> {
        if pointer == 0 {
            return Ok(self.targets(0, u64::MAX, peers));
        }
        let mask = env.load_virtual(caller, &harts[caller], pointer)?;
        Ok(self.targets(mask, 0, peers))
    }

    /// The machine's hart count: this `Sbi`'s, or the shared one's when the caller's `Vm` holds one hart.
    fn machine_harts(&self, peers: Peers) -> usize {
        peers.map_or(self.harts, |(shared, _)| shared.harts())
    }

    fn send_ipi(&self, caller: usize, targets: u64, harts: &mut [Hart], peers: Peers) {
        if let Some((shared, me)) = peers {
            if targets & (1 << me) != 0 {
                harts[caller].csrs.mip |= interrupt::SSI;
            }
            shared.send_ipi(targets & !(1 << me));
            return;
        }
        for (index, hart) in harts.iter_mut().enumerate().take(self.harts) {
            if targets & (1 << index) != 0 {
                hart.csrs.mip |= interrupt::SSI;
            }
        }
    }

    fn rfence(
        &self,
        caller: usize,
        fid: u64,
        [mask, base, start, size, asid]: [u64; 5],
        env: &mut impl SbiEnvironment,
        peers: Peers,
    ) -> Answer {
        let kind = match fid {
            0 => FenceKind::Instruction,
            1 => FenceKind::Vma(None),
            2 => FenceKind::Vma(Some(asid as u16)),
            // The hypervisor fences: the harts have no H extension.
            _ => return err(error::NOT_SUPPORTED),
        };
        match self.targets(mask, base, peers) {
            Ok(targets) => err(remote_fence(caller, targets, kind, start, size, env, peers)),
            Err(code) => err(code),
        }
    }

    fn hsm(
        &mut self,
        caller: usize,
        harts: &mut [Hart],
        fid: u64,
        [a0, a1, a2]: [u64; 3],
        env: &mut impl SbiEnvironment,
        peers: Peers,
    ) -> Flow {
        if let Some((shared, me)) = peers {
            // Another hart's start and status go through the shared state; the caller's own stop and suspend
            // are served below (its `Vm` publishes the new state).
            match fid {
                0 | 2 if a0 >= shared.harts() as u64 => return Flow::Return(err(error::INVALID_PARAM)),
                0 if a0 as usize == me => return Flow::Return(err(error::ALREADY_AVAILABLE)),
                0 => {
                    if shared.state(a0 as usize) != Some(HartState::Stopped) {
                        return Flow::Return(err(error::ALREADY_AVAILABLE));
                    }
                    if !env.executable(a1) {
                        return Flow::Return(err(error::INVALID_ADDRESS));
                    }
                    return Flow::Return(match shared.start(a0 as usize, a1, a2) {
                        Ok(()) => ok(0),
                        Err(StartError::NotStopped) => err(error::ALREADY_AVAILABLE),
                        Err(StartError::NoHart) => err(error::INVALID_PARAM),
                    });
                }
                2 if a0 as usize != me => {
                    return Flow::Return(
                        shared.state(a0 as usize).map_or(err(error::INVALID_PARAM), |state| ok(state as u64)),
                    )
                }
                2 => return Flow::Return(ok(self.slots[caller].state as u64)),
                _ => {}
            }
        }
        match fid {
            // hart_start(hartid, start_addr, opaque)
            0 => {
                let Some(index) = self.index_of(harts, a0) else { return Flow::Return(err(error::INVALID_PARAM)) };
                if self.slots[index].state != HartState::Stopped {
                    return Flow::Return(err(error::ALREADY_AVAILABLE));
                }
                if !env.executable(a1) {
                    return Flow::Return(err(error::INVALID_ADDRESS));
                }
                let target = &mut harts[index];
                enter_supervisor(target, a1, target.config.hart_id, a2);
                env.flush_translations(index, FlushScope::All);
                self.slots[index] = HartSlot { state: HartState::Started, deadline: u64::MAX, resume: None };
                Flow::Return(ok(0))
            }
            // hart_stop()
            1 => {
                self.slots[caller] = HartSlot { state: HartState::Stopped, deadline: u64::MAX, resume: None };
                harts[caller].csrs.mip &= !(interrupt::SSI | interrupt::STI);
                Flow::NoReturn
            }
            // hart_get_status(hartid)
            2 => match self.index_of(harts, a0) {
                Some(index) => Flow::Return(ok(self.slots[index].state as u64)),
                None => Flow::Return(err(error::INVALID_PARAM)),
            },
            // hart_suspend(suspend_type, resume_addr, opaque)
            3 => match a0 as u32 {
                SUSPEND_DEFAULT_RETENTIVE => {
                    self.slots[caller].state = HartState::Suspended;
                    Flow::ReturnAndSuspend(ok(0))
                }
                SUSPEND_DEFAULT_NON_RETENTIVE => {
                    if !env.executable(a1) {
                        return Flow::Return(err(error::INVALID_ADDRESS));
                    }
                    let slot = &mut self.slots[caller];
                    slot.state = HartState::Suspended;
                    slot.resume = Some((a1, a2));
                    Flow::NoReturn
                }
                // Reserved, or platform-specific and not implemented.
                _ => Flow::Return(err(error::INVALID_PARAM)),
            },
            _ => Flow::Return(err(error::NOT_SUPPORTED)),
        }
    }

    /// The index of the hart whose `mhartid` is `hartid`.
    fn index_of(&self, harts: &[Hart], hartid: u64) -> Option<usize> {
        harts.iter().take(self.harts).position(|hart| hart.config.hart_id == hartid)
    }
}

/// Writes the answer into `a0`/`a1` and steps past the `ecall`.
fn finish(hart: &mut Hart, answer: Answer) {
    match answer {
        Answer::Pair(code, value) => {
            hart.set_x(10, code as u64);
            hart.set_x(11, value);
        }
        Answer::Legacy(value) => hart.set_x(10, value),
    }
    hart.pc = hart.pc.wrapping_add(4);
}

/// Reads a machine-level information CSR of `hart` as M-mode would.
fn machine_csr(hart: &Hart, csr: u16) -> u64 {
    let machine = Hart { privilege: Privilege::Machine, ..hart.clone() };
    machine.read_csr(csr, 0).unwrap_or(0)
}

#[derive(Clone, Copy)]
enum FenceKind {
    Instruction,
    /// `sfence.vma`, for one ASID or all.
    Vma(Option<u16>),
}

/// One remote fence, as a target performs it ([`perform_fence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// `fence.i`.
    Instruction,
    /// `sfence.vma` of `pages` pages from `first` (more than [`MAX_FENCE_PAGES`]: the whole address space),
    /// for one ASID or all.
    Vma { first: u64, pages: u64, asid: Option<u16> },
}

impl Fence {
    /// Every translation and the instruction stream: what a target does when too many fences queued up.
    pub const EVERYTHING: [Fence; 2] = [Fence::Instruction, Fence::Vma { first: 0, pages: u64::MAX, asid: None }];
}

/// Performs `fence` on hart `index` of `env`.
pub fn perform_fence(index: usize, fence: Fence, env: &mut impl SbiEnvironment) {
    match fence {
        Fence::Instruction => env.fence_i(index),
        Fence::Vma { pages, asid, .. } if pages > MAX_FENCE_PAGES => {
            env.flush_translations(index, FlushScope::Sfence { address: None, asid })
        }
        Fence::Vma { first, pages, asid } => {
            for page in 0..pages {
                env.flush_translations(index, FlushScope::Sfence { address: Some(first + (page << 12)), asid });
            }
        }
    }
}

/// Performs a remote fence on every hart in `targets`; returns the SBI error code. With `peers`, the caller
/// (index `caller` of `env`) performs its own and waits for the others' (see [`SbiShared::fence`]).
fn remote_fence(
    caller: usize,
    targets: u64,
    kind: FenceKind,
    start: u64,
    size: u64,
    env: &mut impl SbiEnvironment,
    peers: Peers,
) -> i64 {
    let fence = match kind {
        FenceKind::Instruction => Fence::Instruction,
        FenceKind::Vma(asid) => {
            let whole = (start == 0 && size == 0) || size == u64::MAX;
            let pages = if whole {
                u64::MAX
            } else if size == 0 {
                0
            } else {
                // Counted from the range's last byte, not its end: a range may end at 2^64 exactly, and rounding
                // an end in the top page up would overflow (it once saturated and flushed nothing).
                let Some(last) = start.checked_add(size - 1) else { return error::INVALID_ADDRESS };
                (last >> 12) - (start >> 12) + 1
            };
            Fence::Vma { first: start & !0xfff, pages, asid }
        }
    };
    match peers {
        None => {
            for index in (0..MAX_HARTS).filter(|&index| targets & (1 << index) != 0) {
                perform_fence(index, fence, env);
            }
        }
        Some((shared, me)) => {
            if targets & (1 << me) != 0 {
                perform_fence(caller, fence, env);
            }
            shared.fence(me, targets, fence, |shared| serve_fences(shared, me, caller, env));
        }
    }
    error::SUCCESS
}

/// Performs the fences other harts asked of hart `me` (index `local` of `env`) and acknowledges them.
pub fn serve_fences(shared: &SbiShared<'_>, me: usize, local: usize, env: &mut impl SbiEnvironment) {
    if !shared.pending(me) {
        return;
    }
    let taken = shared.take(me, true);
    let everything = if taken.everything { &Fence::EVERYTHING[..] } else { &[] };
    for &fence in taken.fences.iter().chain(everything) {
        perform_fence(local, fence, env);
    }
    shared.served(me, taken.ticket);
}

/// SRST `system_reset`: the request, or the error for a reserved or unimplemented type or reason.
fn system_reset(reset_type: u32, reason: u32) -> Result<MachineRequest, i64> {
    const NO_REASON: u32 = 0;
    const SYSTEM_FAILURE: u32 = 1;
    if reason != NO_REASON && reason != SYSTEM_FAILURE {
        return Err(error::INVALID_PARAM);
    }
    match reset_type {
        0 => Ok(MachineRequest::PowerOff { code: (reason == SYSTEM_FAILURE) as u32 }),
        1 | 2 => Ok(MachineRequest::Reset),
        _ => Err(error::INVALID_PARAM),
    }
}

/// The DBCN functions: buffers are guest physical addresses (`base_addr_hi` must be 0 on RV64), checked whole
/// against guest RAM before anything moves.
fn debug_console(fid: u64, num_bytes: u64, base_lo: u64, base_hi: u64, env: &mut impl SbiEnvironment) -> Answer {
    if fid == 2 {
        env.console_write(&[num_bytes as u8]);
        return ok(0);
    }
    if fid > 1 {
        return err(error::NOT_SUPPORTED);
    }
    if base_hi != 0 || !env.physical_accessible(base_lo, num_bytes) {
        return err(error::INVALID_PARAM);
    }
    let limit = num_bytes.min(DBCN_LIMIT);
    let mut buffer = [0u8; DBCN_CHUNK];
    let mut done = 0u64;
    while done < limit {
        let length = (limit - done).min(DBCN_CHUNK as u64) as usize;
        let chunk = &mut buffer[..length];
        let address = base_lo.wrapping_add(done);
        let moved = if fid == 0 {
            if !env.read_physical(address, chunk) {
                return err(error::INVALID_PARAM);
            }
            env.console_write(chunk).min(length)
        } else {
            let mut read = 0;
            while let Some(byte) = (read < length).then(|| env.console_read()).flatten() {
                chunk[read] = byte;
                read += 1;
            }
            if !env.write_physical(address, &chunk[..read]) {
                return err(error::INVALID_PARAM);
            }
            read
        };
        done += moved as u64;
        if moved < length {
            break;
        }
    }
    ok(done)
}

/// Puts `hart` in S-mode at `start` with `a0`/`a1`, in the state an M-mode firmware like OpenSBI leaves when it
/// enters the next stage or starts a hart: exceptions and supervisor interrupts delegated (see
/// [`DELEGATED_EXCEPTIONS`]), counters readable, one PMP entry opening all memory to S and U, `satp` = 0,
/// `sstatus.SIE` = 0, no interrupt pending or enabled, floating point usable (`mstatus.FS` = Initial).
pub fn enter_supervisor(hart: &mut Hart, start: u64, a0: u64, a1: u64) {
    let csrs = &mut hart.csrs;
    csrs.medeleg = DELEGATED_EXCEPTIONS;
    csrs.mideleg = DELEGATED_INTERRUPTS;
    csrs.mie = 0;
    csrs.mip = 0;
    csrs.mcounteren = COUNTERS_ENABLED;
    csrs.scounteren = COUNTERS_ENABLED;
    csrs.menvcfg = 0;
    csrs.satp = 0;
    let keep = mstatus::UXL | mstatus::SXL;
    let floating =
        if hart.config.extensions & crate::isa::csr::misa::ext(b'F') != 0 { 1 << mstatus::FS_SHIFT } else { 0 };
    csrs.mstatus = (csrs.mstatus & keep) | floating | ((Privilege::Supervisor as u64) << mstatus::MPP_SHIFT);
    // pmpaddr0 all ones with NAPOT covers the whole address space; the other entries are off.
    let _ = hart.pmp.write_addr(0, u64::MAX);
    let _ = hart.pmp.write_cfg(0, PMP_OPEN);
    hart.reservation = None;
    hart.privilege = Privilege::Supervisor;
    hart.pc = start;
    hart.set_x(10, a0);
    hart.set_x(11, a1);
}

/// A fake machine for the SBI's tests: RAM as a plain buffer mapped 1:1 at [`fake::RAM_BASE`], a console that
/// records output and replays queued input, and a log of the translation flushes and instruction fences.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    pub const RAM_BASE: u64 = 0x8000_0000;

    #[derive(Debug, Default)]
    pub struct FakeEnvironment {
        pub now: u64,
        pub ram: Vec<u8>,
        pub output: Vec<u8>,
        pub input: VecDeque<u8>,
        /// Most bytes the console takes per write (`None`: all).
        pub output_room: Option<usize>,
        pub flushes: Vec<(usize, FlushScope)>,
        pub fences_i: Vec<usize>,
    }

    impl FakeEnvironment {
        pub fn new(ram_size: usize) -> Self {
            Self { ram: std::vec![0; ram_size], ..Self::default() }
        }

        fn range(&self, addr: u64, len: u64) -> Option<core::ops::Range<usize>> {
            let start = addr.checked_sub(RAM_BASE)?;
            let end = start.checked_add(len)?;
            (end <= self.ram.len() as u64).then_some(start as usize..end as usize)
        }
    }

    impl SbiEnvironment for FakeEnvironment {
        fn time(&mut self) -> u64 {
            self.now
        }
        fn console_write(&mut self, bytes: &[u8]) -> usize {
            let taken = self.output_room.map_or(bytes.len(), |room| room.min(bytes.len()));
            self.output.extend_from_slice(&bytes[..taken]);
            taken
        }
        fn console_read(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
        fn read_physical(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            match self.range(addr, buf.len() as u64) {
                Some(range) => {
                    buf.copy_from_slice(&self.ram[range]);
                    true
                }
                None => false,
            }
        }
        fn write_physical(&mut self, addr: u64, bytes: &[u8]) -> bool {
            match self.range(addr, bytes.len() as u64) {
                Some(range) => {
                    self.ram[range].copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
        fn physical_accessible(&self, addr: u64, len: u64) -> bool {
            self.range(addr, len).is_some()
        }
        fn executable(&self, addr: u64) -> bool {
            addr.is_multiple_of(2) && self.range(addr, 2).is_some()
        }
        /// Paging is off in these tests: a virtual address is physical, and a miss is a load page fault.
        fn load_virtual(&mut self, _index: usize, _hart: &Hart, va: u64) -> Result<u64, Fault> {
            let mut bytes = [0u8; 8];
            if self.read_physical(va, &mut bytes) {
                Ok(u64::from_le_bytes(bytes))
            } else {
                Err(Fault { exception: Exception::LoadPageFault, tval: va })
            }
        }
        fn flush_translations(&mut self, index: usize, scope: FlushScope) {
            self.flushes.push((index, scope));
        }
        fn fence_i(&mut self, index: usize) {
            self.fences_i.push(index);
        }
    }
}

impl Sbi {
    /// Writes the firmware's per-hart state (HSM state, timer deadline, resume point) for a snapshot.
    pub fn save_state(&self, out: &mut Writer) {
        out.u32(self.harts as u32);
        for slot in self.slots.iter().take(self.harts) {
            out.u64(slot.state as u64);
            out.u64(slot.deadline);
            out.bool(slot.resume.is_some());
            let (address, opaque) = slot.resume.unwrap_or((0, 0));
            out.u64(address);
            out.u64(opaque);
        }
    }

    /// Reads what [`save_state`](Self::save_state) wrote for a VM with as many harts; under
    /// [`LoadMode::Apply`] replaces the state, all of it or (on any error) nothing.
    pub fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u32()? != self.harts as u32 {
            return Err(input.mismatch("the firmware's hart count"));
        }
        let mut slots = self.slots;
        for slot in slots.iter_mut().take(self.harts) {
            // Only the states the VMM ever leaves a hart in (it makes every transition at once).
            slot.state = match input.u64()? {
                0 => HartState::Started,
                1 => HartState::Stopped,
                4 => HartState::Suspended,
                _ => return Err(input.invalid("an HSM state the firmware never leaves a hart in")),
            };
            slot.deadline = input.u64()?;
            let resumes = input.bool()?;
            let resume = (input.u64()?, input.u64()?);
            slot.resume = resumes.then_some(resume);
        }
        if mode.apply() {
            self.slots = slots;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeEnvironment, RAM_BASE};
    use super::*;
    use crate::hart::HartConfig;
    use crate::isa::csr;
    use std::vec::Vec;

    const ECALL_PC: u64 = RAM_BASE + 0x1000;

    /// A machine of `count` harts booted the builtin way: hart 0 in S-mode at an `ecall`, the others stopped.
    fn machine(count: usize) -> (Sbi, Vec<Hart>, FakeEnvironment) {
        let mut harts: Vec<Hart> = (0..count as u64).map(|id| Hart::new(HartConfig::rv64gc(id))).collect();
        enter_supervisor(&mut harts[0], ECALL_PC, 0, 0);
        (Sbi::new(count, 0), harts, FakeEnvironment::new(1 << 20))
    }

    /// Hart `index` calls EID `eid`, FID `fid` with `args`; returns the resume and `(a0, a1)`.
    fn call(
        sbi: &mut Sbi,
        harts: &mut [Hart],
        env: &mut FakeEnvironment,
        index: usize,
        eid: u64,
        fid: u64,
        args: &[u64],
    ) -> (Resume, i64, u64) {
        let hart = &mut harts[index];
        hart.pc = ECALL_PC;
        for register in 10..=15 {
            hart.set_x(register, 0);
        }
        for (register, value) in (10u8..).zip(args) {
            hart.set_x(register, *value);
        }
        hart.set_x(16, fid);
        hart.set_x(17, eid);
        let resume = sbi.call(index, harts, env);
        (resume, harts[index].x(10) as i64, harts[index].x(11))
    }

    #[test]
    fn base_reports_version_implementation_and_extensions() {
        let (mut sbi, mut harts, mut env) = machine(1);
        harts[0].set_x(12, 0x1234);
        let mut ask = |fid, args: &[u64]| call(&mut sbi, &mut harts, &mut env, 0, eid::BASE, fid, args);
        assert_eq!(ask(0, &[]), (Resume::Continue, 0, 2 << 24), "spec version 2.0");
        assert_eq!(ask(1, &[]), (Resume::Continue, 0, IMPL_ID));
        assert_eq!(ask(2, &[]).2, IMPL_VERSION);
        for extension in EXTENSIONS {
            assert_eq!(ask(3, &[extension]), (Resume::Continue, 0, 1), "{extension:#x} is available");
        }
        for absent in [0x09, 0x0f, 0x504d55 /* PMU */, 0x53555350 /* SUSP */, u64::MAX, 0x1_0000_0010] {
            assert_eq!(ask(3, &[absent]), (Resume::Continue, 0, 0), "{absent:#x} is not available");
        }
        assert_eq!(ask(4, &[]), (Resume::Continue, 0, 0), "mvendorid of the hart");
        assert_eq!(ask(5, &[]), (Resume::Continue, 0, 0));
        assert_eq!(ask(6, &[]), (Resume::Continue, 0, 0));
        assert_eq!(ask(7, &[]).1, error::NOT_SUPPORTED);
        assert_eq!(harts[0].pc, ECALL_PC + 4, "the pc steps past the ecall");
        assert_eq!(harts[0].x(12), 0, "a2 was zeroed by the helper and left alone by the call");
    }

    #[test]
    fn unknown_extensions_and_functions_are_not_supported() {
        let (mut sbi, mut harts, mut env) = machine(2);
        for (eid, fid) in [
            (0x09, 0),
            (0x0f, 0),
            (0x504d55, 0),
            (0x0A00_0000, 0),
            (u64::MAX, 0),
            (eid::TIME, 1),
            (eid::IPI, 1),
            (eid::RFENCE, 3),
            (eid::RFENCE, 6),
            (eid::RFENCE, 7),
            (eid::HSM, 4),
            (eid::SRST, 1),
            (eid::DBCN, 3),
        ] {
            let (resume, error, value) = call(&mut sbi, &mut harts, &mut env, 0, eid, fid, &[0, 0]);
            assert_eq!((resume, error, value), (Resume::Continue, error::NOT_SUPPORTED, 0), "{eid:#x}/{fid}");
            assert_eq!(harts[0].pc, ECALL_PC + 4);
        }
        assert!(env.flushes.is_empty() && env.output.is_empty());
    }

    #[test]
    fn set_timer_arms_a_deadline_that_raises_stip_and_clears_it_when_rearmed() {
        let (mut sbi, mut harts, mut env) = machine(1);
        env.now = 100;
        harts[0].csrs.mip |= interrupt::STI;
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::TIME, 0, &[500]), (Resume::Continue, 0, 0));
        assert_eq!(harts[0].csrs.mip & interrupt::STI, 0, "set_timer clears the pending timer interrupt");
        assert_eq!(sbi.deadline(0), Some(500));
        assert_eq!(sbi.ticks_until_deadline(100), Some(400));
        sbi.update_timers(499, &mut harts);
        assert_eq!(harts[0].csrs.mip & interrupt::STI, 0);
        sbi.update_timers(500, &mut harts);
        assert_ne!(harts[0].csrs.mip & interrupt::STI, 0, "STIP is raised at the deadline");
        assert_eq!(sbi.deadline(0), None, "and the deadline is used up");
        assert_eq!(sbi.ticks_until_deadline(600), None);
        // A deadline already past fires at once; an infinite one never.
        call(&mut sbi, &mut harts, &mut env, 0, eid::TIME, 0, &[50]);
        assert_ne!(harts[0].csrs.mip & interrupt::STI, 0);
        call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_SET_TIMER, 0, &[u64::MAX]);
        assert_eq!(harts[0].csrs.mip & interrupt::STI, 0);
        assert_eq!(harts[0].x(10), 0, "legacy set_timer returns 0 in a0");
        sbi.update_timers(u64::MAX, &mut harts);
        assert_eq!(harts[0].csrs.mip & interrupt::STI, 0);
        // The S-mode guest cannot clear STIP itself, only through the SBI.
        assert!(harts[0].write_csr(csr::SIP, 0).is_ok());
    }

    #[test]
    fn send_ipi_checks_the_hart_mask_and_raises_ssip_on_the_targets() {
        let (mut sbi, mut harts, mut env) = machine(4);
        let ssip = |harts: &[Hart]| harts.iter().map(|h| h.csrs.mip & interrupt::SSI != 0).collect::<Vec<_>>();
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::IPI, 0, &[0b101, 0]).1, error::SUCCESS);
        assert_eq!(ssip(&harts), [true, false, true, false]);
        harts.iter_mut().for_each(|h| h.csrs.mip = 0);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::IPI, 0, &[0b11, 2]).1, error::SUCCESS);
        assert_eq!(ssip(&harts), [false, false, true, true], "bits count from hart_mask_base");
        harts.iter_mut().for_each(|h| h.csrs.mip = 0);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::IPI, 0, &[0, u64::MAX]).1, error::SUCCESS);
        assert_eq!(ssip(&harts), [true; 4], "base -1 means every hart, whatever the mask");
        harts.iter_mut().for_each(|h| h.csrs.mip = 0);
        for (mask, base) in [(0b10000, 0), (0b111, 2), (1, 4), (1, 1 << 40), (1 << 63, 0), (u64::MAX, 0), (1, 3 + 64)] {
            let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::IPI, 0, &[mask, base]);
            assert_eq!(error, error::INVALID_PARAM, "mask {mask:#x} base {base}");
            assert_eq!(ssip(&harts), [false; 4], "an invalid mask sends nothing");
        }
    }

    #[test]
    fn remote_fences_flush_the_targets_translations() {
        let (mut sbi, mut harts, mut env) = machine(3);
        let all = FlushScope::Sfence { address: None, asid: None };
        // The whole address space: start and size 0, or size 2^XLEN - 1.
        call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[0b110, 0, 0, 0]);
        assert_eq!(env.flushes, [(1, all), (2, all)]);
        env.flushes.clear();
        call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[1, 0, 0x1234_5000, u64::MAX]);
        assert_eq!(env.flushes, [(0, all)]);
        env.flushes.clear();
        // A range page by page, with the ASID.
        let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 2, &[1, 1, 0x4000_0ff0, 0x20, 7]);
        assert_eq!(error, error::SUCCESS);
        let page = |address| (1, FlushScope::Sfence { address: Some(address), asid: Some(7) });
        assert_eq!(env.flushes, [page(0x4000_0000), page(0x4000_1000)]);
        env.flushes.clear();
        // A huge range flushes the whole ASID instead.
        call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 2, &[1, 0, 0, 1 << 30, 9]);
        assert_eq!(env.flushes, [(0, FlushScope::Sfence { address: None, asid: Some(9) })]);
        env.flushes.clear();
        // Ranges in the top pages of the address space, one of them ending at 2^64 exactly.
        let (_, error, _) =
            call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[0b100, 0, 0xffff_ffff_ffff_e800, 0x1000]);
        assert_eq!(error, error::SUCCESS);
        let top = |address| (2, FlushScope::Sfence { address: Some(address), asid: None });
        assert_eq!(env.flushes, [top(0xffff_ffff_ffff_e000), top(0xffff_ffff_ffff_f000)]);
        env.flushes.clear();
        let (_, error, _) =
            call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[0b100, 0, 0xffff_ffff_ffff_f000, 0x1000]);
        assert_eq!(error, error::SUCCESS, "the last page is a valid range");
        assert_eq!(env.flushes, [top(0xffff_ffff_ffff_f000)]);
        env.flushes.clear();
        // An empty range (not the whole-space encoding) flushes nothing.
        call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[0b100, 0, 0x4000_0ff0, 0]);
        assert!(env.flushes.is_empty());
        // Hostile ranges and masks.
        let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[1, 0, u64::MAX - 10, 100]);
        assert_eq!(error, error::INVALID_ADDRESS, "a range that wraps around");
        let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 1, &[0b1000, 0, 0, 0]);
        assert_eq!(error, error::INVALID_PARAM);
        assert!(env.flushes.is_empty());
        // Remote fence.i reaches every target.
        call(&mut sbi, &mut harts, &mut env, 0, eid::RFENCE, 0, &[0, u64::MAX]);
        assert_eq!(env.fences_i, [0, 1, 2]);
    }

    #[test]
    fn hart_start_enters_s_mode_with_the_specified_registers() {
        let (mut sbi, mut harts, mut env) = machine(2);
        assert_eq!(sbi.state(1), Some(HartState::Stopped));
        assert!(!sbi.may_run(1));
        harts[1].csrs.mip = interrupt::SSI;
        harts[1].csrs.satp = 8 << 60;
        let (resume, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 0, &[1, RAM_BASE + 0x2000, 0xfeed]);
        assert_eq!((resume, error), (Resume::Continue, error::SUCCESS));
        assert_eq!(sbi.state(1), Some(HartState::Started));
        assert!(sbi.may_run(1));
        let hart = &harts[1];
        assert_eq!(
            (hart.privilege, hart.pc, hart.x(10), hart.x(11)),
            (Privilege::Supervisor, RAM_BASE + 0x2000, 1, 0xfeed)
        );
        assert_eq!(hart.csrs.satp, 0);
        assert_eq!(hart.csrs.mstatus & mstatus::SIE, 0);
        assert_eq!(hart.csrs.mip, 0, "nothing pending from before the start");
        assert_eq!(env.flushes, [(1, FlushScope::All)]);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 2, &[1]).2, HartState::Started as u64);
        // Starting it again, or the caller itself, is refused.
        for hartid in [1, 0] {
            let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 0, &[hartid, RAM_BASE, 0]);
            assert_eq!(error, error::ALREADY_AVAILABLE);
        }
    }

    #[test]
    fn hart_start_rejects_hostile_arguments() {
        let (mut sbi, mut harts, mut env) = machine(2);
        for (hartid, address, expected) in [
            (2, RAM_BASE, error::INVALID_PARAM),
            (u64::MAX, RAM_BASE, error::INVALID_PARAM),
            (1, 0x1000_0000, error::INVALID_ADDRESS),
            (1, RAM_BASE + (1 << 20), error::INVALID_ADDRESS),
            (1, RAM_BASE + 1, error::INVALID_ADDRESS),
            (1, u64::MAX, error::INVALID_ADDRESS),
        ] {
            let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 0, &[hartid, address, 0]);
            assert_eq!(error, expected, "hart {hartid:#x} at {address:#x}");
            assert_eq!(sbi.state(1), Some(HartState::Stopped));
        }
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 2, &[2]).1, error::INVALID_PARAM);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 2, &[1]).2, HartState::Stopped as u64);
    }

    #[test]
    fn hart_stop_parks_the_caller_until_started_again() {
        let (mut sbi, mut harts, mut env) = machine(2);
        call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 0, &[1, RAM_BASE, 0]);
        call(&mut sbi, &mut harts, &mut env, 1, eid::TIME, 0, &[1000]);
        let (resume, _, _) = call(&mut sbi, &mut harts, &mut env, 1, eid::HSM, 1, &[]);
        assert_eq!(resume, Resume::WaitForInterrupt, "hart_stop does not return");
        assert_eq!(harts[1].pc, ECALL_PC, "nor step past the ecall");
        assert_eq!(sbi.state(1), Some(HartState::Stopped));
        assert!(!sbi.may_run(1));
        assert_eq!(sbi.ticks_until_deadline(0), None, "a stopped hart's timer is disarmed");
        let (_, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 0, &[1, RAM_BASE + 0x40, 5]);
        assert_eq!(error, error::SUCCESS, "a stopped hart can be started again");
        assert_eq!(harts[1].pc, RAM_BASE + 0x40);
    }

    #[test]
    fn retentive_suspend_returns_success_once_woken() {
        let (mut sbi, mut harts, mut env) = machine(1);
        let (resume, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 3, &[0, 0xdead, 0]);
        assert_eq!((resume, error), (Resume::WaitForInterrupt, error::SUCCESS));
        assert_eq!(sbi.state(0), Some(HartState::Suspended));
        assert!(sbi.may_run(0), "a suspended hart waits like one in wfi");
        assert!(!sbi.wake(0, &mut harts[0]), "a retentive resume keeps the hart's state");
        assert_eq!(sbi.state(0), Some(HartState::Started));
        assert_eq!(harts[0].pc, ECALL_PC + 4);
    }

    #[test]
    fn non_retentive_suspend_resumes_at_the_resume_address() {
        let (mut sbi, mut harts, mut env) = machine(2);
        harts[0].csrs.satp = 8 << 60;
        harts[0].csrs.mstatus |= mstatus::SIE;
        let (resume, _, _) =
            call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 3, &[0x8000_0000, RAM_BASE + 0x300, 0xabc]);
        assert_eq!(resume, Resume::WaitForInterrupt);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 2, &[0]).2, HartState::Suspended as u64);
        harts[0].pc = 0;
        assert!(sbi.wake(0, &mut harts[0]), "re-entered: translations must be flushed");
        let hart = &harts[0];
        assert_eq!((hart.pc, hart.x(10), hart.x(11), hart.csrs.satp), (RAM_BASE + 0x300, 0, 0xabc, 0));
        assert_eq!(hart.csrs.mstatus & mstatus::SIE, 0);
        assert_eq!(sbi.state(0), Some(HartState::Started));
        // Reserved and platform-specific types, and a bad resume address.
        for (kind, address, expected) in [
            (1, RAM_BASE, error::INVALID_PARAM),
            (0x1000_0000, RAM_BASE, error::INVALID_PARAM),
            (0x8000_0001, RAM_BASE, error::INVALID_PARAM),
            (0x9000_0000, RAM_BASE, error::INVALID_PARAM),
            (0x8000_0000, 0x1000, error::INVALID_ADDRESS),
        ] {
            let (resume, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 3, &[kind, address, 0]);
            assert_eq!((resume, error), (Resume::Continue, expected), "type {kind:#x}");
            assert_eq!(sbi.state(0), Some(HartState::Started));
        }
        // Only the low 32 bits of suspend_type count.
        let (resume, _, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::HSM, 3, &[0xffff_ffff_0000_0000, 0, 0]);
        assert_eq!(resume, Resume::WaitForInterrupt);
    }

    #[test]
    fn system_reset_powers_off_or_resets_and_rejects_reserved_values() {
        let (mut sbi, mut harts, mut env) = machine(1);
        let mut reset = |kind, reason| call(&mut sbi, &mut harts, &mut env, 0, eid::SRST, 0, &[kind, reason]).0;
        assert_eq!(reset(0, 0), Resume::Machine(MachineRequest::PowerOff { code: 0 }));
        assert_eq!(reset(0, 1), Resume::Machine(MachineRequest::PowerOff { code: 1 }), "system failure");
        assert_eq!(reset(1, 0), Resume::Machine(MachineRequest::Reset));
        assert_eq!(reset(2, 1), Resume::Machine(MachineRequest::Reset));
        for (kind, reason) in [(3, 0), (0xF000_0000, 0), (0, 2), (0, 0xE000_0000), (1, 0xFFFF_FFFF)] {
            let (resume, error, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::SRST, 0, &[kind, reason]);
            assert_eq!((resume, error), (Resume::Continue, error::INVALID_PARAM), "type {kind:#x} reason {reason:#x}");
        }
        let (resume, _, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_SHUTDOWN, 0, &[]);
        assert_eq!(resume, Resume::Machine(MachineRequest::PowerOff { code: 0 }));
    }

    #[test]
    fn debug_console_moves_bytes_between_guest_ram_and_the_console() {
        let (mut sbi, mut harts, mut env) = machine(1);
        env.ram[0x100..0x105].copy_from_slice(b"hello");
        let (_, error, written) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 0, &[5, RAM_BASE + 0x100, 0]);
        assert_eq!((error, written), (error::SUCCESS, 5));
        call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 2, &[0x121]);
        assert_eq!(env.output, b"hello!", "write_byte takes the low byte");
        // A console that takes less: a partial write says how much.
        env.output_room = Some(2);
        let (_, _, written) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 0, &[5, RAM_BASE + 0x100, 0]);
        assert_eq!(written, 2);
        env.output_room = None;
        // Reads take what input there is.
        env.input.extend(b"abc");
        let (_, error, read) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 1, &[2, RAM_BASE + 0x200, 0]);
        assert_eq!((error, read), (error::SUCCESS, 2));
        assert_eq!(&env.ram[0x200..0x203], b"ab\0");
        let (_, _, read) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 1, &[16, RAM_BASE + 0x200, 0]);
        assert_eq!(read, 1);
        let (_, _, read) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 1, &[16, RAM_BASE + 0x200, 0]);
        assert_eq!(read, 0, "no input: nothing read, no error");
        // A large write is partial but correct.
        env.output.clear();
        let (_, error, written) = call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, 0, &[1 << 16, RAM_BASE, 0]);
        assert_eq!((error, written), (error::SUCCESS, 4096));
        assert_eq!(env.output.len(), 4096);
    }

    #[test]
    fn debug_console_rejects_buffers_outside_ram() {
        let (mut sbi, mut harts, mut env) = machine(1);
        env.input.extend(b"input");
        let end = RAM_BASE + (1 << 20);
        for fid in [0, 1] {
            for (length, low, high) in [
                (1, 0x1000_0000, 0),  // a device
                (1, RAM_BASE - 1, 0), // just below RAM
                (2, end - 1, 0),      // straddling its end
                (1, end, 0),
                (u64::MAX, RAM_BASE, 0),
                (16, u64::MAX - 7, 0), // wraps around
                (1, RAM_BASE, 1),      // above 2^64
            ] {
                let (resume, error, value) =
                    call(&mut sbi, &mut harts, &mut env, 0, eid::DBCN, fid, &[length, low, high]);
                assert_eq!(
                    (resume, error, value),
                    (Resume::Continue, error::INVALID_PARAM, 0),
                    "{fid}: {low:#x}+{length:#x}"
                );
            }
        }
        assert!(env.output.is_empty());
        assert_eq!(env.input.len(), 5, "no input consumed by a refused read");
        assert!(env.ram.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn legacy_console_and_ipi_calls() {
        let (mut sbi, mut harts, mut env) = machine(3);
        call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_CONSOLE_PUTCHAR, 0, &[b'x' as u64]);
        assert_eq!(env.output, b"x");
        let (_, a0, a1) = call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_CONSOLE_GETCHAR, 0, &[0, 0x55]);
        assert_eq!((a0, a1), (-1, 0x55), "no input: -1, and a1 is preserved");
        env.input.push_back(b'q');
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_CONSOLE_GETCHAR, 0, &[]).1, b'q' as i64);
        // send_ipi takes a pointer to the mask in the caller's memory.
        env.ram[0x800..0x808].copy_from_slice(&0b110u64.to_le_bytes());
        call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_SEND_IPI, 0, &[RAM_BASE + 0x800]);
        let pending: Vec<bool> = harts.iter().map(|h| h.csrs.mip & interrupt::SSI != 0).collect();
        assert_eq!(pending, [false, true, true]);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 1, eid::LEGACY_CLEAR_IPI, 0, &[]).1, 1);
        assert_eq!(call(&mut sbi, &mut harts, &mut env, 1, eid::LEGACY_CLEAR_IPI, 0, &[]).1, 0);
        // A null pointer means every hart; a mask naming harts that do not exist is refused.
        call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_REMOTE_FENCE_I, 0, &[0]);
        assert_eq!(env.fences_i, [0, 1, 2]);
        env.ram[0x800..0x808].copy_from_slice(&0b1001u64.to_le_bytes());
        let (_, a0, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_REMOTE_SFENCE_VMA, 0, &[RAM_BASE + 0x800]);
        assert_eq!(a0, error::INVALID_PARAM);
        assert!(env.flushes.is_empty());
        env.ram[0x800..0x808].copy_from_slice(&0b1u64.to_le_bytes());
        call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_REMOTE_SFENCE_VMA_ASID, 0, &[RAM_BASE + 0x800, 0, 0, 3]);
        assert_eq!(env.flushes, [(0, FlushScope::Sfence { address: None, asid: Some(3) })]);
    }

    #[test]
    fn a_legacy_mask_pointer_that_faults_is_redirected_to_the_caller() {
        let (mut sbi, mut harts, mut env) = machine(2);
        harts[0].csrs.stvec = RAM_BASE + 0x4000;
        let (resume, _, _) = call(&mut sbi, &mut harts, &mut env, 0, eid::LEGACY_SEND_IPI, 0, &[0x1234_5678]);
        assert_eq!(resume, Resume::Continue);
        let hart = &harts[0];
        assert_eq!((hart.privilege, hart.pc), (Privilege::Supervisor, RAM_BASE + 0x4000), "taken by S-mode");
        assert_eq!(hart.csrs.sepc, ECALL_PC, "sepc points at the ecall");
        assert_eq!((hart.csrs.scause, hart.csrs.stval), (Exception::LoadPageFault as u64, 0x1234_5678));
        assert!(harts.iter().all(|h| h.csrs.mip & interrupt::SSI == 0));
    }

    #[test]
    fn enter_supervisor_leaves_the_machine_state_opensbi_would() {
        let mut hart = Hart::new(HartConfig::rv64gc(3));
        hart.csrs.mstatus |= mstatus::MIE | mstatus::TVM | mstatus::MPRV;
        enter_supervisor(&mut hart, RAM_BASE + 0x20_0000, 3, 0x8700_0000);
        assert_eq!(hart.privilege, Privilege::Supervisor);
        assert_eq!((hart.pc, hart.x(10), hart.x(11)), (RAM_BASE + 0x20_0000, 3, 0x8700_0000));
        let status = hart.csrs.mstatus;
        assert_eq!(status & (mstatus::TVM | mstatus::TSR | mstatus::TW | mstatus::MPRV | mstatus::SIE), 0);
        assert_eq!(status & mstatus::FS, 1 << mstatus::FS_SHIFT, "FS Initial: F and D work");
        assert_eq!(status & mstatus::SXL, 2 << mstatus::SXL_SHIFT, "SXL still reads 64-bit");
        // S-mode may read the counters, use F/D, and reach all memory through PMP.
        for counter in [csr::CYCLE, csr::TIME, csr::INSTRET] {
            assert!(hart.read_csr(counter, 0).is_ok(), "counter {counter:#x}");
        }
        assert!(hart.read_csr(csr::FCSR, 0).is_ok());
        for address in [0, RAM_BASE, 0x1000_0000, (1 << 56) - 8] {
            assert!(hart.pmp.allows(address, 8, crate::mem::pmp::AccessKind::Fetch, Privilege::Supervisor));
            assert!(hart.pmp.allows(address, 8, crate::mem::pmp::AccessKind::Store, Privilege::User));
        }
        // Ecalls from S-mode stay with the SBI; the rest goes to S-mode.
        assert_eq!(hart.csrs.medeleg & (1 << Exception::EcallFromS as u64), 0);
        assert_ne!(hart.csrs.medeleg & (1 << Exception::EcallFromU as u64), 0);
        assert_ne!(hart.csrs.medeleg & (1 << Exception::IllegalInstruction as u64), 0);
        assert_eq!(hart.csrs.mideleg, interrupt::SSI | interrupt::STI | interrupt::SEI);
        assert!(hart.read_csr(csr::SATP, 0).is_ok_and(|satp| satp == 0));
    }

    /// An argument near something the SBI checks, or anything.
    fn interesting_argument() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            0u64..6,
            Just(u64::MAX),
            Just(0x8000_0000u64),
            RAM_BASE..RAM_BASE + (1 << 20) + 8,
            (0u64..64).prop_map(|shift| 1u64 << shift),
            any::<u64>(),
        ]
    }

    proptest::proptest! {
        /// Random calls from whichever harts are running never panic, always answer with a standard error code
        /// (legacy calls aside), and keep the HSM states those of a simple reference model.
        fn random_calls_follow_the_hsm_model_and_never_panic_property(
            calls in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::sample::select(EXTENSIONS.to_vec()),
                        proptest::strategy::Just(eid::HSM),
                        proptest::prelude::any::<u64>(),
                    ],
                    0u64..8,
                    proptest::array::uniform6(interesting_argument()),
                    0usize..4,
                ),
                1..64,
            )
        ) {
            RANDOM_CALLS_FOLLOW_THE_HSM_MODEL_AND_NEVER_PANIC.add(calls.len());
            const COUNT: usize = 3;
            let (mut sbi, mut harts, mut env) = machine(COUNT);
            env.input.extend(b"some input");
            let mut model = [HartState::Started, HartState::Stopped, HartState::Stopped];
            for (extension, function, args, pick) in calls {
                // Only a started hart executes an ecall; a suspended one is woken first.
                let running: Vec<usize> = (0..COUNT).filter(|&i| model[i] != HartState::Stopped).collect();
                let Some(&caller) = running.get(pick % running.len().max(1)) else { break };
                if model[caller] == HartState::Suspended {
                    sbi.wake(caller, &mut harts[caller]);
                    model[caller] = HartState::Started;
                }
                let executable =
                    |address: u64| address.is_multiple_of(2) && (RAM_BASE..RAM_BASE + (1 << 20) - 1).contains(&address);
                let expected_error = match (extension, function) {
                    (eid::HSM, 0) => Some(match args[0] {
                        id if id >= COUNT as u64 => error::INVALID_PARAM,
                        id if model[id as usize] != HartState::Stopped => error::ALREADY_AVAILABLE,
                        _ if !executable(args[1]) => error::INVALID_ADDRESS,
                        id => {
                            model[id as usize] = HartState::Started;
                            error::SUCCESS
                        }
                    }),
                    (eid::HSM, 1) => {
                        model[caller] = HartState::Stopped;
                        None
                    }
                    (eid::HSM, 2) => Some(if args[0] < COUNT as u64 { error::SUCCESS } else { error::INVALID_PARAM }),
                    (eid::HSM, 3) => match args[0] as u32 {
                        SUSPEND_DEFAULT_RETENTIVE => {
                            model[caller] = HartState::Suspended;
                            Some(error::SUCCESS)
                        }
                        SUSPEND_DEFAULT_NON_RETENTIVE if executable(args[1]) => {
                            model[caller] = HartState::Suspended;
                            None
                        }
                        SUSPEND_DEFAULT_NON_RETENTIVE => Some(error::INVALID_ADDRESS),
                        _ => Some(error::INVALID_PARAM),
                    },
                    _ => None,
                };
                let before = ECALL_PC;
                let (resume, error, value) = call(&mut sbi, &mut harts, &mut env, caller, extension, function, &args);
                if let Some(expected) = expected_error {
                    proptest::prop_assert_eq!(error, expected, "{:#x}/{} {:x?}", extension, function, args);
                    proptest::prop_assert_eq!(harts[caller].pc, before + 4);
                }
                if (extension, function) == (eid::HSM, 2) && error == error::SUCCESS {
                    proptest::prop_assert_eq!(value, model[args[0] as usize] as u64);
                }
                let legacy = extension <= eid::LEGACY_SHUTDOWN;
                if !legacy && resume == Resume::Continue && harts[caller].pc == before + 4 {
                    let standard = (-8..=0).contains(&error);
                    proptest::prop_assert!(standard, "{:#x}/{} answered {}", extension, function, error);
                }
                for (index, state) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(sbi.state(index), Some(*state));
                }
                if matches!(resume, Resume::Machine(_)) {
                    break;
                }
                let software = interrupt::SSI | interrupt::STI;
                proptest::prop_assert!(harts.iter().all(|hart| hart.csrs.mip & !software == 0));
            }
        }
    }

    /// The hostile calls the property above tried (`target/isolation.txt`).
    static RANDOM_CALLS_FOLLOW_THE_HSM_MODEL_AND_NEVER_PANIC: crate::isolation::Tally =
        crate::isolation::Tally::panics("hostile SBI calls");

    #[test]
    fn random_calls_follow_the_hsm_model_and_never_panic() {
        RANDOM_CALLS_FOLLOW_THE_HSM_MODEL_AND_NEVER_PANIC
            .run(random_calls_follow_the_hsm_model_and_never_panic_property);
    }
}
