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
    /// Hart `index` must see the instruction stream as memory holds it now (a remote `fence.i`). Engines that
    /// watch stores to translated code need nothing here.
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
    /// return (the hart stopped, or the machine is to power off or reset) or raised an exception.
    pub fn call(&mut self, caller: usize, harts: &mut [Hart], env: &mut impl SbiEnvironment) -> Resume {
        if caller >= self.harts.min(harts.len()) {
            return Resume::Continue;
        }
        let flow = self.serve(caller, harts, env);
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

    fn serve(&mut self, caller: usize, harts: &mut [Hart], env: &mut impl SbiEnvironment) -> Flow {
        let hart = &harts[caller];
        let [a0, a1, a2, a3, a4, a5, fid, eid] = core::array::from_fn(|i| hart.x(10 + i as u8));
        let _ = a5;
        match eid {
            eid::BASE => Flow::Return(self.base(fid, a0, &harts[caller])),
            eid::TIME if fid == 0 => {
                self.set_timer(caller, &mut harts[caller], a0, env.time());
                Flow::Return(ok(0))
            }
            eid::IPI if fid == 0 => Flow::Return(match self.targets(a0, a1) {
                Ok(targets) => {
                    self.send_ipi(targets, harts);
                    ok(0)
                }
                Err(code) => err(code),
            }),
            eid::RFENCE => Flow::Return(self.rfence(fid, a0, a1, a2, a3, a4, env)),
            eid::HSM => self.hsm(caller, harts, fid, a0, a1, a2, env),
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
                let targets = match self.legacy_targets(caller, harts, a0, env) {
                    Ok(Ok(targets)) => targets,
                    Ok(Err(code)) => return Flow::Return(Answer::Legacy(code as u64)),
                    Err(fault) => {
                        harts[caller].raise(fault.exception, fault.tval);
                        return Flow::Faulted;
                    }
                };
                let code = match eid {
                    eid::LEGACY_SEND_IPI => {
                        self.send_ipi(targets, harts);
                        error::SUCCESS
                    }
                    eid::LEGACY_REMOTE_FENCE_I => remote_fence(targets, FenceKind::Instruction, 0, 0, env),
                    eid::LEGACY_REMOTE_SFENCE_VMA => remote_fence(targets, FenceKind::Vma(None), a1, a2, env),
                    _ => remote_fence(targets, FenceKind::Vma(Some(a3 as u16)), a1, a2, env),
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
    fn targets(&self, mask: u64, base: u64) -> Result<u64, i64> {
        let all = if self.harts >= 64 { u64::MAX } else { (1u64 << self.harts) - 1 };
        if base == u64::MAX {
            return Ok(all);
        }
        if base >= self.harts as u64 {
            return Err(error::INVALID_PARAM);
        }
        // Every set bit must name a hart: `base + bit < harts`, so no bit at or above `harts - base` is set.
        let room = self.harts as u64 - base;
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
    ) -> Result<Result<u64, i64>, Fault> {
        if pointer == 0 {
            return Ok(self.targets(0, u64::MAX));
        }
        let mask = env.load_virtual(caller, &harts[caller], pointer)?;
        Ok(self.targets(mask, 0))
    }

    fn send_ipi(&self, targets: u64, harts: &mut [Hart]) {
        for (index, hart) in harts.iter_mut().enumerate().take(self.harts) {
            if targets & (1 << index) != 0 {
                hart.csrs.mip |= interrupt::SSI;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rfence(
        &self,
        fid: u64,
        mask: u64,
        base: u64,
        start: u64,
        size: u64,
        asid: u64,
        env: &mut impl SbiEnvironment,
    ) -> Answer {
        let kind = match fid {
            0 => FenceKind::Instruction,
            1 => FenceKind::Vma(None),
            2 => FenceKind::Vma(Some(asid as u16)),
            // The hypervisor fences: the harts have no H extension.
            _ => return err(error::NOT_SUPPORTED),
        };
        match self.targets(mask, base) {
            Ok(targets) => err(remote_fence(targets, kind, start, size, env)),
            Err(code) => err(code),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hsm(
        &mut self,
        caller: usize,
        harts: &mut [Hart],
        fid: u64,
        a0: u64,
        a1: u64,
        a2: u64,
        env: &mut impl SbiEnvironment,
    ) -> Flow {
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

/// Performs a remote fence on every hart in `targets`; returns the SBI error code.
fn remote_fence(targets: u64, kind: FenceKind, start: u64, size: u64, env: &mut impl SbiEnvironment) -> i64 {
    let asid = match kind {
        FenceKind::Instruction => {
            for index in (0..MAX_HARTS).filter(|&index| targets & (1 << index) != 0) {
                env.fence_i(index);
            }
            return error::SUCCESS;
        }
        FenceKind::Vma(asid) => asid,
    };
    let whole = (start == 0 && size == 0) || size == u64::MAX;
    let Some(end) = start.checked_add(size) else { return error::INVALID_ADDRESS };
    let first = start & !0xfff;
    let pages = if whole { u64::MAX } else { (end.saturating_add(0xfff) & !0xfff).wrapping_sub(first) >> 12 };
    for index in (0..MAX_HARTS).filter(|&index| targets & (1 << index) != 0) {
        if pages > MAX_FENCE_PAGES {
            env.flush_translations(index, FlushScope::Sfence { address: None, asid });
        } else {
            for page in 0..pages {
                env.flush_translations(index, FlushScope::Sfence { address: Some(first + (page << 12)), asid });
            }
        }
    }
    error::SUCCESS
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
