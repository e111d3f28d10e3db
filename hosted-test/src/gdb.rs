//! The gdb remote stub of `trapeze run -s` / `--gdb tcp::PORT` (and `-S`, which keeps the guest stopped until
//! the debugger continues it), QEMU's flags: gdb (`gdb-multiarch`) connects with `target remote :PORT`.
//!
//! The protocol is the `gdbstub` crate's; this module is the target it drives: one gdb thread per hart (thread id
//! = hart + 1), registers (x, f, pc, the main CSRs and `priv`, described by `gdb-target.xml`), memory through
//! the current hart's translation without side effects ([`Vm::debug_read`]/[`Vm::debug_write`]), single step
//! ([`Vm::step_hart`]: the stepped hart alone runs one instruction, interrupts stay pending), continue, Ctrl-C,
//! and the guest's end reported as gdb's exit (`W`) packet.
//!
//! Everything runs on the calling thread: while the guest runs, the event loop runs it in slices of
//! [`Vm::run_slice`] and, every [`POLL_INTERVAL`] (or after a slice in which every hart waited), peeks at the
//! socket without blocking; a byte from gdb (Ctrl-C) stops every hart at once, as they only run inside that loop
//! (when every hart waits for an interrupt, the host sleeps at most half a second between looks). A step of a
//! hart that waits for an interrupt which has not come runs nothing and reports the same pc; `continue` lets it
//! wake.
//! When gdb detaches, the guest runs on and the stub listens for the next debugger. Guest time (the host clock)
//! stands still while the machine is stopped, as QEMU's virtual clock does.
//!
//! It must never panic on anything gdb sends: unknown threads, registers and unreadable memory are errors gdb
//! sees (`E..` or unavailable registers); a broken connection ends the session and the guest runs on.

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use gdbstub::arch::Arch;
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::single_register_access::{SingleRegisterAccess, SingleRegisterAccessOps};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::riscv::reg::id::RiscvRegId;
use gdbstub_arch::riscv::reg::RiscvCoreRegs;
use trapeze::debug::{DebugStop, DebuggerTrigger, WatchKind};
use trapeze::exec::Engine;
use trapeze::hart::{Hart, Privilege};
use trapeze::vm::{Devices, HartStep, RunOutcome, Vm, SLICE};

use crate::console::ClockPause;

/// The port `-s` listens on, as QEMU's.
pub const DEFAULT_PORT: u16 = 1234;

/// How often a running guest looks for a Ctrl-C from gdb (at most; a slice in which every hart waited looks at
/// once). Far longer than a slice, so the look costs nothing measurable.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Exit status the guest's end is reported with when `--max-insns` stopped it (as without gdb).
const EXIT_INSTRUCTION_LIMIT: u8 = 3;

/// Where the stub listens, from QEMU's `tcp::PORT` or `tcp:HOST:PORT`. An empty host is the loopback address
/// (QEMU takes every interface; a debugger port open to the network is not a default we want).
pub fn parse_endpoint(spec: &str) -> Result<SocketAddr, String> {
    let bad = || format!("`{spec}`: give the gdb endpoint as tcp::PORT or tcp:HOST:PORT");
    let rest = spec.strip_prefix("tcp:").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    (host, port).to_socket_addrs().map_err(|e| format!("`{spec}`: {e}"))?.next().ok_or_else(bad)
}

/// The debugger's end of the machine: the listening socket, and whether the guest waits for gdb (`-S`).
pub struct GdbServer {
    listener: TcpListener,
    wait: bool,
    /// Stops guest time while the debugger holds the machine (host-clock time only).
    clock: Option<ClockPause>,
}

/// How a run under the stub ended.
pub enum Ending {
    /// The guest ended the run (or the instruction limit did), debugged or not.
    Outcome(RunOutcome),
    /// gdb killed the guest (`kill`).
    Killed,
}

impl GdbServer {
    /// Listens on `address`; with `wait` the guest does not start until gdb connects and continues it.
    pub fn bind(address: SocketAddr, wait: bool) -> Result<Self, String> {
        let listener = TcpListener::bind(address).map_err(|e| format!("cannot listen for gdb on {address}: {e}"))?;
        let local = listener.local_addr().map_err(|e| format!("gdb socket: {e}"))?;
        eprintln!("trapeze: gdb stub listening on {local}{}", if wait { " (the guest waits for gdb)" } else { "" });
        Ok(Self { listener, wait, clock: None })
    }

    /// Guest time stands still while the machine is stopped in the debugger, as QEMU's virtual clock does.
    pub fn stop_time_when_stopped(&mut self, clock: ClockPause) {
        self.clock = Some(clock);
    }

    /// Runs `vm` on `engine` to its end, serving gdb sessions as debuggers connect: with `-S` the first
    /// session starts before the first instruction, otherwise the guest runs until a debugger connects.
    pub fn run<D: Devices, E: Engine>(
        &mut self,
        vm: &mut Vm<'_, D>,
        engine: &mut E,
        limit: Option<u64>,
    ) -> Result<Ending, String> {
        let mut wait = self.wait;
        loop {
            let stream = if wait {
                // QEMU's -S: guest time starts with the guest.
                if let Some(clock) = &self.clock {
                    clock.pause();
                }
                self.listener.accept().map_err(|e| format!("waiting for gdb: {e}"))?.0
            } else {
                match self.run_until_connection(vm, engine, limit)? {
                    Ok(stream) => stream,
                    Err(outcome) => return Ok(Ending::Outcome(outcome)),
                }
            };
            // A later debugger attaches to a running guest.
            wait = false;
            if let Ok(peer) = stream.peer_addr() {
                eprintln!("trapeze: gdb connected from {peer}");
            }
            let mut target = Debuggee::new(vm, engine, limit, self.clock.clone());
            let mut connection = Buffered::new(stream);
            let result = GdbStub::new(&mut connection as &mut dyn ConnectionExt<Error = std::io::Error>)
                .run_blocking::<EventLoop<'_, '_, '_, D, E>>(&mut target);
            let ended = target.ended;
            target.clock_runs(true);
            // Whatever gdb left set goes with it: a guest running on must not stop for a debugger no longer there.
            for hart in vm.harts.iter_mut() {
                hart.triggers.clear_debugger_state();
            }
            match result {
                Ok(DisconnectReason::Kill) => {
                    // gdbstub leaves `vKill` unanswered outside extended mode; gdb waits for its OK.
                    let _ = connection.write_all(b"$OK#9a").and_then(|()| connection.flush());
                    return Ok(Ending::Killed);
                }
                Ok(_) | Err(_) if ended.is_some() => return Ok(Ending::Outcome(ended.unwrap_or(RunOutcome::Reset))),
                Ok(_) => eprintln!("trapeze: gdb detached; the guest runs on"),
                Err(error) => eprintln!("trapeze: gdb session ended: {error}; the guest runs on"),
            }
        }
    }

    /// Runs the guest until a debugger connects (`Ok`) or the guest ends the run (`Err` with its outcome).
    fn run_until_connection<D: Devices, E: Engine>(
        &mut self,
        vm: &mut Vm<'_, D>,
        engine: &mut E,
        limit: Option<u64>,
    ) -> Result<Result<TcpStream, RunOutcome>, String> {
        self.listener.set_nonblocking(true).map_err(|e| format!("gdb socket: {e}"))?;
        let mut last_poll = Instant::now();
        let result = loop {
            let before = vm.steps;
            if let Some(outcome) = run_one_slice(vm, engine, limit) {
                break Ok(Err(outcome));
            }
            if vm.steps != before && last_poll.elapsed() < POLL_INTERVAL {
                continue;
            }
            last_poll = Instant::now();
            match self.listener.accept() {
                Ok((stream, _)) => break Ok(Ok(stream)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(format!("waiting for gdb: {e}")),
            }
        };
        self.listener.set_nonblocking(false).map_err(|e| format!("gdb socket: {e}"))?;
        let stream = match result {
            Ok(Ok(stream)) => stream,
            other => return other,
        };
        stream.set_nonblocking(false).map_err(|e| format!("gdb socket: {e}"))?;
        Ok(Ok(stream))
    }
}

/// One slice of at most [`SLICE`] instructions (fewer when the instruction limit is near); an outcome when the
/// run is over.
fn run_one_slice<D: Devices, E: Engine>(vm: &mut Vm<'_, D>, engine: &mut E, limit: Option<u64>) -> Option<RunOutcome> {
    let budget = match limit {
        Some(limit) if vm.steps >= limit => return Some(RunOutcome::InstructionLimit),
        Some(limit) => SLICE.min(limit - vm.steps),
        None => SLICE,
    };
    vm.run_slice(engine, budget)
}

/// The register layout and target description gdb gets: `gdbstub_arch`'s RV64 registers and register numbers,
/// with our own description that adds the FP registers, the CSRs and the privilege mode.
pub enum TrapezeRiscv64 {}

impl Arch for TrapezeRiscv64 {
    type Usize = u64;
    type Registers = RiscvCoreRegs<u64>;
    type BreakpointKind = usize;
    type RegId = RiscvRegId<u64>;

    fn target_description_xml() -> Option<&'static str> {
        Some(include_str!("gdb-target.xml"))
    }
}

/// The machine as gdb sees it, for one session.
struct Debuggee<'v, 'a, D: Devices, E: Engine> {
    vm: &'v mut Vm<'a, D>,
    engine: &'v mut E,
    limit: Option<u64>,
    /// The hart gdb asked to single-step (the others stay stopped while it steps); `None`: continue them all.
    step: Option<usize>,
    /// The hart that ran last, which a Ctrl-C stop names.
    current: usize,
    /// How the run ended, once it has.
    ended: Option<RunOutcome>,
    /// Guest time, stopped while gdb holds the machine.
    clock: Option<ClockPause>,
}

impl<'v, 'a, D: Devices, E: Engine> Debuggee<'v, 'a, D, E> {
    /// The machine, stopped (and its time with it) for a debugger that just connected.
    fn new(vm: &'v mut Vm<'a, D>, engine: &'v mut E, limit: Option<u64>, clock: Option<ClockPause>) -> Self {
        let current = vm.last_exit.0;
        let target = Self { vm, engine, limit, step: None, current, ended: None, clock };
        target.clock_runs(false);
        target
    }

    /// Lets guest time run (`true`) or stops it.
    fn clock_runs(&self, running: bool) {
        match &self.clock {
            Some(clock) if running => clock.resume(),
            Some(clock) => clock.pause(),
            None => {}
        }
    }

    /// The hart behind gdb thread `tid`.
    fn hart_index(&self, tid: Tid) -> Result<usize, TargetError<&'static str>> {
        let index = tid.get() - 1;
        if index < self.vm.harts.len() {
            Ok(index)
        } else {
            Err(TargetError::NonFatal)
        }
    }

    fn hart(&mut self, tid: Tid) -> Result<&mut Hart, TargetError<&'static str>> {
        let index = self.hart_index(tid)?;
        self.vm.harts.get_mut(index).ok_or(TargetError::NonFatal)
    }

    /// Sets a software breakpoint at `pc` on every hart; false (and set on none) when a hart's table is full.
    fn insert_software_breakpoint(&mut self, pc: u64) -> bool {
        let harts = &mut self.vm.harts;
        let already: Vec<bool> = harts.iter().map(|hart| hart.triggers.software_breakpoints().contains(&pc)).collect();
        if harts.iter_mut().all(|hart| hart.triggers.insert_software_breakpoint(pc)) {
            return true;
        }
        for (hart, already) in harts.iter_mut().zip(already) {
            if !already {
                hart.triggers.remove_software_breakpoint(pc);
            }
        }
        false
    }

    /// Programs a debugger trigger on every hart; false (and programmed on none) when a hart has no trigger
    /// free or the range cannot be matched.
    fn insert_trigger(&mut self, kind: DebuggerTrigger, addr: u64, len: u64) -> bool {
        let harts = &mut self.vm.harts;
        let Some(failed) =
            harts.iter_mut().position(|hart| hart.triggers.insert_debugger_trigger(kind, addr, len).is_none())
        else {
            return true;
        };
        for hart in harts.iter_mut().take(failed) {
            hart.triggers.remove_debugger_trigger(kind, addr, len);
        }
        false
    }

    /// Removes a debugger trigger from every hart; false when no hart had it.
    fn remove_trigger(&mut self, kind: DebuggerTrigger, addr: u64, len: u64) -> bool {
        let mut removed = false;
        for hart in self.vm.harts.iter_mut() {
            removed |= hart.triggers.remove_debugger_trigger(kind, addr, len);
        }
        removed
    }

    /// Single-steps hart `index` and says why it stopped.
    fn single_step(&mut self, index: usize) -> MultiThreadStopReason<u64> {
        self.current = index;
        match self.vm.step_hart(self.engine, index) {
            HartStep::Done | HartStep::Idle => {
                MultiThreadStopReason::SignalWithThread { tid: thread_of(index), signal: Signal::SIGTRAP }
            }
            HartStep::Stopped(outcome) => self.stop_reason(outcome),
        }
    }

    /// What gdb is told when the machine stopped: a breakpoint or watchpoint, or the guest's end as a process's
    /// exit.
    fn stop_reason(&mut self, outcome: RunOutcome) -> MultiThreadStopReason<u64> {
        let ended = match outcome {
            RunOutcome::PowerOff { code } => MultiThreadStopReason::Exited(exit_status(code)),
            RunOutcome::InstructionLimit => MultiThreadStopReason::Exited(EXIT_INSTRUCTION_LIMIT),
            // The machine boots again with a new session; this one ends as if the program was hung up on.
            RunOutcome::Reset => MultiThreadStopReason::Terminated(Signal::SIGHUP),
            RunOutcome::DebugStop { hart, stop } => {
                self.current = hart;
                let tid = thread_of(hart);
                return match stop {
                    DebugStop::SoftwareBreakpoint => MultiThreadStopReason::SwBreak(tid),
                    DebugStop::HardwareBreakpoint { .. } => MultiThreadStopReason::HwBreak(tid),
                    DebugStop::Watchpoint { addr, kind, .. } => {
                        let kind = match kind {
                            WatchKind::Write => GdbWatchKind::Write,
                            WatchKind::Read => GdbWatchKind::Read,
                            WatchKind::Access => GdbWatchKind::ReadWrite,
                        };
                        MultiThreadStopReason::Watch { tid, kind, addr }
                    }
                };
            }
        };
        self.ended = Some(outcome);
        ended
    }
}

/// gdb's thread id of hart `index`.
fn thread_of(index: usize) -> Tid {
    NonZeroUsize::MIN.saturating_add(index)
}

/// The exit status gdb reports for a guest's power-off code: 0 for success, else the low byte, never 0.
fn exit_status(code: u32) -> u8 {
    match code {
        0 => 0,
        code => u8::try_from(code & 0xff).ok().filter(|&c| c != 0).unwrap_or(1),
    }
}

/// A register value from gdb's little-endian bytes (at most 8 used, missing ones zero).
fn value_of(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    for (target, byte) in buf.iter_mut().zip(bytes) {
        *target = *byte;
    }
    u64::from_le_bytes(buf)
}

/// Puts `value`'s low `buf.len()` (at most 8) bytes into `buf`, little-endian; how many.
fn put(buf: &mut [u8], value: u64) -> usize {
    let bytes = value.to_le_bytes();
    let count = buf.len().min(8);
    buf[..count].copy_from_slice(&bytes[..count]);
    count
}

impl<D: Devices, E: Engine> Target for Debuggee<'_, '_, D, E> {
    type Arch = TrapezeRiscv64;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

/// Breakpoints and watchpoints apply to every hart, as gdb's do to every thread. Software breakpoints are the
/// harts' own tables (memory is never modified, so neither the guest nor the code cache sees them); hardware
/// ones and watchpoints take Sdtrig triggers from the guest's pool while they are set.
impl<D: Devices, E: Engine> Breakpoints for Debuggee<'_, '_, D, E> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<D: Devices, E: Engine> SwBreakpoint for Debuggee<'_, '_, D, E> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.insert_software_breakpoint(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let mut removed = false;
        for hart in self.vm.harts.iter_mut() {
            removed |= hart.triggers.remove_software_breakpoint(addr);
        }
        Ok(removed)
    }
}

impl<D: Devices, E: Engine> HwBreakpoint for Debuggee<'_, '_, D, E> {
    fn add_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        Ok(self.insert_trigger(DebuggerTrigger::Execute, addr, kind as u64))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_trigger(DebuggerTrigger::Execute, addr, kind as u64))
    }
}

/// gdb's watchpoint kinds as triggers.
fn watch_trigger(kind: GdbWatchKind) -> DebuggerTrigger {
    DebuggerTrigger::Watch(match kind {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    })
}

impl<D: Devices, E: Engine> HwWatchpoint for Debuggee<'_, '_, D, E> {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, kind: GdbWatchKind) -> TargetResult<bool, Self> {
        Ok(self.insert_trigger(watch_trigger(kind), addr, len))
    }

    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, kind: GdbWatchKind) -> TargetResult<bool, Self> {
        Ok(self.remove_trigger(watch_trigger(kind), addr, len))
    }
}

impl<D: Devices, E: Engine> MultiThreadBase for Debuggee<'_, '_, D, E> {
    fn read_registers(&mut self, regs: &mut RiscvCoreRegs<u64>, tid: Tid) -> TargetResult<(), Self> {
        let hart = self.hart(tid)?;
        regs.x = hart.x;
        regs.pc = hart.pc;
        Ok(())
    }

    fn write_registers(&mut self, regs: &RiscvCoreRegs<u64>, tid: Tid) -> TargetResult<(), Self> {
        let hart = self.hart(tid)?;
        for (index, value) in regs.x.iter().enumerate() {
            hart.set_x(index as u8, *value);
        }
        hart.pc = regs.pc;
        Ok(())
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let index = self.hart_index(tid)?;
        match self.vm.debug_read(index, start_addr, data) {
            0 if !data.is_empty() => Err(TargetError::Errno(14)),
            read => Ok(read),
        }
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let index = self.hart_index(tid)?;
        if self.vm.debug_write(index, start_addr, data) == data.len() {
            Ok(())
        } else {
            Err(TargetError::Errno(14))
        }
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        for index in 0..self.vm.harts.len() {
            thread_is_active(thread_of(index));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<D: Devices, E: Engine> SingleRegisterAccess<Tid> for Debuggee<'_, '_, D, E> {
    fn read_register(&mut self, tid: Tid, reg_id: RiscvRegId<u64>, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let time = self.vm.time();
        let hart = self.hart(tid)?;
        let value = match reg_id {
            RiscvRegId::Gpr(register) => hart.x(register),
            RiscvRegId::Fpr(register) => *hart.fp.f.get(usize::from(register)).ok_or(TargetError::NonFatal)?,
            RiscvRegId::Pc => hart.pc,
            // A CSR this hart does not have is unavailable (0 bytes), not an error.
            RiscvRegId::Csr(number) => match hart.debug_read_csr(number, time) {
                Some(value) => value,
                None => return Ok(0),
            },
            RiscvRegId::Priv => hart.privilege as u64,
            _ => return Ok(0),
        };
        Ok(put(buf, value))
    }

    fn write_register(&mut self, tid: Tid, reg_id: RiscvRegId<u64>, val: &[u8]) -> TargetResult<(), Self> {
        let index = self.hart_index(tid)?;
        let value = value_of(val);
        if let RiscvRegId::Csr(number) = reg_id {
            return if self.vm.debug_write_csr(index, number, value) { Ok(()) } else { Err(TargetError::NonFatal) };
        }
        let hart = self.hart(tid)?;
        match reg_id {
            RiscvRegId::Gpr(register) => hart.set_x(register, value),
            RiscvRegId::Fpr(register) => {
                *hart.fp.f.get_mut(usize::from(register)).ok_or(TargetError::NonFatal)? = value;
            }
            RiscvRegId::Pc => hart.pc = value,
            RiscvRegId::Priv => hart.privilege = Privilege::from_bits(value).ok_or(TargetError::NonFatal)?,
            _ => return Err(TargetError::NonFatal),
        }
        Ok(())
    }
}

impl<D: Devices, E: Engine> ThreadExtraInfo for Debuggee<'_, '_, D, E> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let index = tid.get() - 1;
        let text = match self.vm.harts.get(index) {
            Some(hart) => format!("hart {index}, {:?} mode", hart.privilege),
            None => format!("no hart {index}"),
        };
        let count = text.len().min(buf.len());
        buf[..count].copy_from_slice(&text.as_bytes()[..count]);
        Ok(count)
    }
}

impl<D: Devices, E: Engine> MultiThreadResume for Debuggee<'_, '_, D, E> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step = None;
        Ok(())
    }

    /// Every hart continues (the harts run together or not at all); a signal to deliver means nothing to a
    /// machine and is ignored.
    fn set_resume_action_continue(&mut self, _tid: Tid, _signal: Option<Signal>) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

/// gdb names only the threads to resume (a step of one thread, or `set scheduler-locking on`): a step runs its
/// hart alone anyway, and a continue runs every hart (they run together or not at all).
impl<D: Devices, E: Engine> MultiThreadSchedulerLocking for Debuggee<'_, '_, D, E> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<D: Devices, E: Engine> MultiThreadSingleStep for Debuggee<'_, '_, D, E> {
    /// A step of a thread that is no hart is ignored (an error here would end the session).
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), Self::Error> {
        if let Ok(index) = self.hart_index(tid) {
            self.step = Some(index);
        }
        Ok(())
    }
}

/// gdbstub's blocking event loop over one [`Debuggee`].
struct EventLoop<'c, 'v, 'a, D: Devices, E: Engine>(PhantomData<(&'c mut Buffered, Debuggee<'v, 'a, D, E>)>);

impl<'c, 'v, 'a, D: Devices, E: Engine> BlockingEventLoop for EventLoop<'c, 'v, 'a, D, E> {
    type Target = Debuggee<'v, 'a, D, E>;
    type Connection = &'c mut dyn ConnectionExt<Error = std::io::Error>;
    type StopReason = MultiThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Self::Target,
        conn: &mut Self::Connection,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<&'static str, std::io::Error>> {
        target.clock_runs(true);
        let event = Self::run_until_stop(target, conn);
        target.clock_runs(false);
        event
    }

    /// Ctrl-C: the harts only run inside [`wait_for_stop_reason`](Self::wait_for_stop_reason), so they have
    /// all stopped already; the stop names the hart that ran last.
    fn on_interrupt(target: &mut Self::Target) -> Result<Option<Self::StopReason>, &'static str> {
        Ok(Some(MultiThreadStopReason::SignalWithThread { tid: thread_of(target.current), signal: Signal::SIGINT }))
    }
}

impl<D: Devices, E: Engine> EventLoop<'_, '_, '_, D, E> {
    /// Steps the hart gdb asked to, or runs every hart until a stop or a byte from gdb.
    #[allow(clippy::type_complexity)]
    fn run_until_stop(
        target: &mut Debuggee<'_, '_, D, E>,
        conn: &mut &mut dyn ConnectionExt<Error = std::io::Error>,
    ) -> Result<Event<MultiThreadStopReason<u64>>, WaitForStopReasonError<&'static str, std::io::Error>> {
        if let Some(index) = target.step {
            return Ok(Event::TargetStopped(target.single_step(index)));
        }
        // Looked at first: gdbstub comes back here after each byte gdb sent while the guest ran.
        let mut poll = true;
        let mut last_poll = Instant::now();
        loop {
            if poll {
                last_poll = Instant::now();
                if conn.peek().map_err(WaitForStopReasonError::Connection)?.is_some() {
                    let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                    return Ok(Event::IncomingData(byte));
                }
            }
            let before = target.vm.steps;
            if let Some(outcome) = run_one_slice(target.vm, target.engine, target.limit) {
                return Ok(Event::TargetStopped(target.stop_reason(outcome)));
            }
            target.current = target.vm.last_exit.0;
            poll = target.vm.steps == before || last_poll.elapsed() >= POLL_INTERVAL;
        }
    }
}

/// The connection to gdb: a reply is gathered and sent in one write when gdbstub flushes it (gdbstub writes
/// byte by byte, and the socket has Nagle's algorithm off).
pub struct Buffered {
    stream: TcpStream,
    out: Vec<u8>,
}

impl Buffered {
    fn new(stream: TcpStream) -> Self {
        Self { stream, out: Vec::with_capacity(4096) }
    }
}

impl Connection for Buffered {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.out.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Write::write_all(&mut self.stream, &self.out)?;
        self.out.clear();
        Write::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        self.stream.set_nodelay(true)
    }
}

impl ConnectionExt for Buffered {
    fn read(&mut self) -> Result<u8, Self::Error> {
        let mut byte = [0u8];
        self.stream.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    /// The next byte gdb sent without taking it, `None` when none has come (never blocks). A closed connection
    /// peeks as a byte, so that the read after it reports the end.
    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        self.stream.set_nonblocking(true)?;
        let mut byte = [0u8];
        let result = self.stream.peek(&mut byte);
        self.stream.set_nonblocking(false)?;
        match result {
            Ok(_) => Ok(Some(byte[0])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_qemu() {
        assert_eq!(parse_endpoint("tcp::1234"), Ok("127.0.0.1:1234".parse().unwrap()));
        assert_eq!(parse_endpoint("tcp:0.0.0.0:99"), Ok("0.0.0.0:99".parse().unwrap()));
        for bad in ["1234", "tcp:1234", "tcp::", "tcp::99999", "udp::1234", "tcp::-1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_statuses_are_never_zero_for_a_failure() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(0x100), 1);
        assert_eq!(exit_status(0x1ff), 0xff);
    }

    #[test]
    fn register_bytes_convert_without_panicking() {
        assert_eq!(value_of(&[1, 2]), 0x0201);
        assert_eq!(value_of(&[0xff; 12]), u64::MAX);
        let mut one = [0u8; 1];
        assert_eq!(put(&mut one, 0x1234), 1);
        assert_eq!(one, [0x34]);
        let mut wide = [0u8; 16];
        assert_eq!(put(&mut wide, u64::MAX), 8);
        assert_eq!(thread_of(0).get(), 1);
    }
}
