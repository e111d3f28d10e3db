//! The hypervisor's scheduling: round-robin turns of a quantum, VMs that end alone, idle VMs skipped.

use std::vec::Vec;

use super::*;
use crate::dev::{test_finisher, NullSerial};
use crate::exec::interp::Interpreter;
use crate::isa::{self, CsrOp, Inst, OpImmKind, StoreWidth};
use crate::mem::{Ram, RAM_BASE};
use crate::vm::machine::{Clock, TimeSource};
use crate::vm::virt::VirtDevices;
use crate::vm::VmBuilder;

struct ZeroClock;

impl Clock for ZeroClock {
    fn now(&mut self) -> u64 {
        0
    }
    fn idle(&mut self, _ticks: Option<u64>) {
        panic!("a VM under the hypervisor must never sleep the host");
    }
}

const T0: u8 = 5;
const T1: u8 = 6;

/// `rd` = the 32-bit constant `value` (lui + addi).
fn li(rd: u8, value: i32) -> [Inst; 2] {
    let upper = value.wrapping_add(0x800) & !0xfff;
    [Inst::Lui { rd, imm: upper }, Inst::OpImm { op: OpImmKind::Addi, rd, rs1: rd, imm: value.wrapping_sub(upper) }]
}

/// Counts in t1 forever.
fn counting() -> Vec<Inst> {
    vec![Inst::OpImm { op: OpImmKind::Addi, rd: T1, rs1: T1, imm: 1 }, Inst::Jal { rd: 0, offset: -4 }]
}

/// Counts `rounds` rounds of a two-instruction loop, then powers off through the finisher with `status`.
fn count_then_power_off(rounds: i32, status: i32) -> Vec<Inst> {
    let mut program = li(T1, rounds).to_vec();
    program.push(Inst::OpImm { op: OpImmKind::Addi, rd: T1, rs1: T1, imm: -1 });
    program.push(Inst::Branch { cond: isa::BranchCond::Ne, rs1: T1, rs2: 0, offset: -4 });
    program.extend(li(T0, test_finisher::BASE as i32));
    program.extend(li(T1, status));
    program.push(Inst::Store { width: StoreWidth::W, rs1: T0, rs2: T1, offset: 0 });
    program.push(Inst::Jal { rd: 0, offset: 0 });
    program
}

/// Arms the machine timer at `deadline` (with its interrupt enabled in `mie`, not globally) and waits in `wfi`.
fn wait_for_timer(deadline: i32) -> Vec<Inst> {
    let mut program = li(T0, (crate::dev::clint::BASE + crate::dev::clint::MTIMECMP) as i32).to_vec();
    program.extend(li(T1, deadline));
    program.push(Inst::Store { width: StoreWidth::D, rs1: T0, rs2: T1, offset: 0 });
    program.extend(li(T1, 0x80));
    program.push(Inst::Csr { op: CsrOp::Rs, rd: 0, src: T1, csr: isa::csr::MIE });
    program.push(Inst::Wfi);
    program.push(Inst::Jal { rd: 0, offset: -4 });
    program
}

/// `wfi` forever with no interrupt enabled.
fn wait_forever() -> Vec<Inst> {
    vec![Inst::Wfi, Inst::Jal { rd: 0, offset: -4 }]
}

type TestVm<'a> = Vm<'a, VirtDevices<'static, NullSerial>>;

fn vm<'a>(backing: &'a mut Vec<u8>, clock: &'a mut ZeroClock, program: &[Inst], time: TimeSource) -> TestVm<'a> {
    backing.resize(0x4000, 0);
    for (index, inst) in program.iter().enumerate() {
        backing[4 * index..4 * index + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
    }
    VmBuilder::new(Ram::new(RAM_BASE, backing), VirtDevices::new(NullSerial), clock)
        .time_source(time)
        .build()
        .expect("a valid VM")
}

const ICOUNT: TimeSource = TimeSource::Instructions { shift: 0 };

#[test]
fn two_vms_take_turns_of_one_quantum() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 4>::new(1000);
    hypervisor.add(vm(&mut a, &mut clock_a, &counting(), ICOUNT), Interpreter, None).unwrap();
    hypervisor.add(vm(&mut b, &mut clock_b, &counting(), ICOUNT), Interpreter, None).unwrap();
    let steps = |h: &Hypervisor<'_, _, Interpreter, 4>| (h.vm(0).unwrap().steps, h.vm(1).unwrap().steps);
    assert_eq!(hypervisor.run_slice(0), SliceOutcome::Ran { vm: 0, stopped: None });
    assert_eq!(steps(&hypervisor), (1000, 0), "VM 0 ran one quantum, VM 1 nothing yet");
    assert_eq!(hypervisor.run_slice(0), SliceOutcome::Ran { vm: 1, stopped: None });
    assert_eq!(steps(&hypervisor), (1000, 1000));
    for _ in 0..98 {
        hypervisor.run_slice(0);
    }
    assert_eq!(steps(&hypervisor), (50_000, 50_000), "fair: each had 50 turns");
    assert!(hypervisor.vm(0).unwrap().harts[0].x[T1 as usize] > 20_000, "the guest itself made progress");
}

#[test]
fn a_vm_that_powers_off_stops_alone() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 2>::new(500);
    hypervisor
        .add(vm(&mut a, &mut clock_a, &count_then_power_off(1000, 0x3333 | (7 << 16)), ICOUNT), Interpreter, None)
        .unwrap();
    hypervisor.add(vm(&mut b, &mut clock_b, &counting(), ICOUNT), Interpreter, None).unwrap();
    let mut stopped_at = None;
    for turn in 0..20 {
        if let SliceOutcome::Ran { vm: 0, stopped: Some(outcome) } = hypervisor.run_slice(0) {
            assert_eq!(outcome, RunOutcome::PowerOff { code: 7 });
            stopped_at = Some(turn);
        }
    }
    assert_eq!(stopped_at, Some(8), "VM 0 powered off in its fifth turn (about 2000 instructions)");
    assert_eq!(hypervisor.outcome(0), Some(RunOutcome::PowerOff { code: 7 }));
    assert_eq!(hypervisor.outcome(1), None, "VM 1 goes on");
    let steps_a = hypervisor.vm(0).unwrap().steps;
    let steps_b = hypervisor.vm(1).unwrap().steps;
    for _ in 0..10 {
        assert_eq!(hypervisor.run_slice(0), SliceOutcome::Ran { vm: 1, stopped: None }, "only VM 1 runs now");
    }
    assert_eq!(hypervisor.vm(0).unwrap().steps, steps_a, "a stopped VM never runs again");
    assert_eq!(hypervisor.vm(1).unwrap().steps, steps_b + 5000);
}

#[test]
fn an_instruction_limit_stops_one_vm_and_then_all_are_stopped() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 2>::new(700);
    hypervisor.add(vm(&mut a, &mut clock_a, &counting(), ICOUNT), Interpreter, Some(1000)).unwrap();
    hypervisor.add(vm(&mut b, &mut clock_b, &count_then_power_off(100, 0x5555), ICOUNT), Interpreter, None).unwrap();
    let mut outcomes = Vec::new();
    loop {
        match hypervisor.run_slice(0) {
            SliceOutcome::Ran { vm, stopped: Some(outcome) } => outcomes.push((vm, outcome)),
            SliceOutcome::Ran { .. } => {}
            SliceOutcome::Stopped => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(outcomes, [(1, RunOutcome::PowerOff { code: 0 }), (0, RunOutcome::InstructionLimit)]);
    assert_eq!(hypervisor.vm(0).unwrap().steps, 1000, "stopped exactly at its limit");
    assert_eq!(hypervisor.run_slice(0), SliceOutcome::Stopped);
}

#[test]
fn an_idle_vm_is_not_run_until_its_deadline() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 2>::new(1000);
    // Host time (the clock stands at 0), so a wait is a wait: the VM reports it and never sleeps itself.
    hypervisor.add(vm(&mut a, &mut clock_a, &wait_for_timer(5000), TimeSource::Host), Interpreter, None).unwrap();
    hypervisor.add(vm(&mut b, &mut clock_b, &counting(), ICOUNT), Interpreter, None).unwrap();
    assert_eq!(hypervisor.run_slice(100), SliceOutcome::Ran { vm: 0, stopped: None });
    assert_eq!(hypervisor.state(0), Some(VmState::Idle { until: 100 + 5000 }), "waits for its timer");
    let idle_steps = hypervisor.vm(0).unwrap().steps;
    assert!(idle_steps < 20, "it ran only up to its wfi: {idle_steps}");
    for _ in 0..50 {
        assert_eq!(hypervisor.run_slice(200), SliceOutcome::Ran { vm: 1, stopped: None }, "only VM 1 runs");
    }
    assert_eq!(hypervisor.vm(0).unwrap().steps, idle_steps, "the idle VM cost no instruction");
    assert_eq!(hypervisor.vm(1).unwrap().steps, 50_000);
    // Woken by the host (input for it, say): its turn comes before its deadline.
    hypervisor.wake(0);
    assert_eq!(hypervisor.state(0), Some(VmState::Runnable));
    assert_eq!(hypervisor.run_slice(300), SliceOutcome::Ran { vm: 0, stopped: None });
    assert_eq!(hypervisor.state(0), Some(VmState::Idle { until: 300 + 5000 }), "and it waits again");
    hypervisor.wake(7);
    assert_eq!(hypervisor.run_slice(400), SliceOutcome::Ran { vm: 1, stopped: None });
    // Its deadline has come: its turn again.
    assert_eq!(hypervisor.run_slice(5300), SliceOutcome::Ran { vm: 0, stopped: None });
}

#[test]
fn every_vm_idle_lets_the_host_sleep_until_the_earliest_deadline() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 2>::new(1000);
    hypervisor.add(vm(&mut a, &mut clock_a, &wait_for_timer(3000), TimeSource::Host), Interpreter, None).unwrap();
    hypervisor.add(vm(&mut b, &mut clock_b, &wait_forever(), TimeSource::Host), Interpreter, None).unwrap();
    assert_eq!(hypervisor.run_slice(0), SliceOutcome::Ran { vm: 0, stopped: None });
    assert_eq!(hypervisor.run_slice(0), SliceOutcome::Ran { vm: 1, stopped: None });
    assert_eq!(hypervisor.state(1), Some(VmState::Idle { until: IDLE_RECHECK }), "no timer: looked at again later");
    let steps = (hypervisor.vm(0).unwrap().steps, hypervisor.vm(1).unwrap().steps);
    for _ in 0..1000 {
        assert_eq!(hypervisor.run_slice(10), SliceOutcome::Idle { until: 3000 });
    }
    assert_eq!((hypervisor.vm(0).unwrap().steps, hypervisor.vm(1).unwrap().steps), steps, "nothing spun");
}

#[test]
fn a_full_table_refuses_another_vm() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (ZeroClock, ZeroClock);
    let mut hypervisor = Hypervisor::<_, Interpreter, 1>::new(0);
    assert_eq!(hypervisor.quantum(), 1);
    hypervisor.add(vm(&mut a, &mut clock_a, &counting(), ICOUNT), Interpreter, None).unwrap();
    assert_eq!(
        hypervisor.add(vm(&mut b, &mut clock_b, &counting(), ICOUNT), Interpreter, None),
        Err(HypervisorError::Full)
    );
    assert!(hypervisor.vm(7).is_none() && hypervisor.state(7).is_none() && hypervisor.outcome(7).is_none());
}

/// Host time shared by the timed tests' clocks and engine.
type Time = std::cell::Cell<u64>;

/// A VM's clock: host time as it stands.
struct SharedClock<'c>(&'c Time);

impl Clock for SharedClock<'_> {
    fn now(&mut self) -> u64 {
        self.0.get()
    }
    fn idle(&mut self, _ticks: Option<u64>) {
        panic!("a VM under the hypervisor must never sleep the host");
    }
}

/// The hypervisor's clock: each reading costs the host `work` ticks (the VMM's own time, never the guest's).
struct WorkingClock<'c> {
    time: &'c Time,
    work: u64,
}

impl Clock for WorkingClock<'_> {
    fn now(&mut self) -> u64 {
        let now = self.time.get();
        self.time.set(now + self.work);
        now
    }
}

/// The interpreter as a timed engine: each instruction (or exit) is a tick of host time, all of it the guest's;
/// a run of `ticks` gets `ticks / slowness` instructions, so a turn takes several slices.
struct TimedInterpreter<'c> {
    time: &'c Time,
    ran: u64,
    slowness: u64,
    budgets: Vec<u64>,
    slices: u64,
}

impl<'c> TimedInterpreter<'c> {
    fn new(time: &'c Time, slowness: u64) -> Self {
        Self { time, ran: 0, slowness, budgets: Vec::new(), slices: 0 }
    }
}

impl Engine for TimedInterpreter<'_> {
    fn run(&mut self, hart: &mut crate::hart::Hart, memory: &mut crate::mem::mmu::Memory, budget: u64) -> Exit {
        self.budgets.push(budget);
        let before = hart.instret;
        let exit = Interpreter.run(hart, memory, budget);
        let ticks = hart.instret.wrapping_sub(before) + u64::from(exit != Exit::BudgetExhausted);
        self.time.set(self.time.get() + ticks);
        self.ran += ticks;
        exit
    }
}

impl TimedEngine for TimedInterpreter<'_> {
    fn budget_for(&self, ticks: u64) -> u64 {
        (ticks / self.slowness).max(1)
    }
    fn guest_ticks(&self) -> u64 {
        self.ran
    }
    fn end_slice(&mut self, _now: u64) {
        self.slices += 1;
    }
}

use crate::trap::Exit;

/// Reads `time` into t0 forever.
fn reading_time() -> Vec<Inst> {
    vec![Inst::Csr { op: CsrOp::Rs, rd: T0, src: 0, csr: isa::csr::TIME }, Inst::Jal { rd: 0, offset: -4 }]
}

/// Arms the machine timer at `deadline` (interrupt not enabled), then counts in t1 forever.
fn arm_then_count(deadline: i32) -> Vec<Inst> {
    let mut program = li(T0, (crate::dev::clint::BASE + crate::dev::clint::MTIMECMP) as i32).to_vec();
    program.extend(li(T1, deadline));
    program.push(Inst::Store { width: StoreWidth::D, rs1: T0, rs2: T1, offset: 0 });
    program.extend(counting());
    program
}

fn shared_vm<'a>(backing: &'a mut Vec<u8>, clock: &'a mut SharedClock<'a>, program: &[Inst]) -> TestVm<'a> {
    backing.resize(0x4000, 0);
    for (index, inst) in program.iter().enumerate() {
        backing[4 * index..4 * index + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
    }
    VmBuilder::new(Ram::new(RAM_BASE, backing), VirtDevices::new(NullSerial), clock).build().expect("a valid VM")
}

#[test]
fn timed_turns_last_their_ticks_and_a_vm_sees_only_its_own_time() {
    let time = Time::new(0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (SharedClock(&time), SharedClock(&time));
    let mut hypervisor = Hypervisor::<_, TimedInterpreter<'_>, 2>::new(1);
    hypervisor.add(shared_vm(&mut a, &mut clock_a, &reading_time()), TimedInterpreter::new(&time, 1), None).unwrap();
    hypervisor.add(shared_vm(&mut b, &mut clock_b, &counting()), TimedInterpreter::new(&time, 1), None).unwrap();
    let mut host = WorkingClock { time: &time, work: 2 };
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    let first = time.get();
    assert!((1000..1020).contains(&first), "a turn of 1000 ticks: {first}");
    let read = hypervisor.vm(0).unwrap().harts[0].x[T0 as usize];
    assert!((990..=1010).contains(&read), "VM 0 read its time as it ran: {read}");
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 1, stopped: None });
    assert!(hypervisor.vm(1).unwrap().steps >= 990, "VM 1 had its turn");
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    assert!(time.get() >= 3000);
    let read = hypervisor.vm(0).unwrap().harts[0].x[T0 as usize];
    assert!(
        (1980..=2010).contains(&read),
        "VM 0's time stood still while VM 1 ran and the VMM worked: {read} at host time {}",
        time.get()
    );
    assert!(hypervisor.engine(0).unwrap().slices >= 2, "every slice was ended");
    assert!(hypervisor.engine_mut(2).is_none());
}

#[test]
fn a_timed_run_ends_at_the_next_timer_deadline() {
    let time = Time::new(0);
    let mut a = Vec::new();
    let mut clock = SharedClock(&time);
    let mut hypervisor = Hypervisor::<_, TimedInterpreter<'_>, 1>::new(1);
    hypervisor.add(shared_vm(&mut a, &mut clock, &arm_then_count(600)), TimedInterpreter::new(&time, 2), None).unwrap();
    let mut host = WorkingClock { time: &time, work: 0 };
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    let budgets = &hypervisor.engine(0).unwrap().budgets;
    assert_eq!(budgets[0], 500, "half the turn's ticks, as the engine asked: {budgets:?}");
    // The store arming the timer ended the first run, and the rest of that slice ran on (495). A slice's length
    // comes from the deadline as the devices last saw it: the second slice starts with the timer as armed at
    // tick 5 (595 ticks away: half the turn's remaining 500 ticks it is), and brings the devices to tick 500, so
    // the third is cut at the deadline, 100 ticks from there.
    assert_eq!(budgets[..4], [500, 495, 250, 50], "{budgets:?}");
}

#[test]
fn a_paused_vm_waits_and_its_time_stands_still() {
    let time = Time::new(0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (SharedClock(&time), SharedClock(&time));
    let mut hypervisor = Hypervisor::<_, TimedInterpreter<'_>, 2>::new(1);
    hypervisor.add(shared_vm(&mut a, &mut clock_a, &reading_time()), TimedInterpreter::new(&time, 1), None).unwrap();
    hypervisor.add(shared_vm(&mut b, &mut clock_b, &counting()), TimedInterpreter::new(&time, 1), None).unwrap();
    let mut host = WorkingClock { time: &time, work: 0 };
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    let until = time.get() + 5000;
    hypervisor.pause(0, until);
    hypervisor.wake(0);
    assert_eq!(hypervisor.state(0), Some(VmState::Paused { until }), "waking does not end a pause");
    let mut turns_of_b = 0;
    loop {
        match hypervisor.run_timed_slice(&mut host, 1000) {
            SliceOutcome::Ran { vm: 1, .. } => turns_of_b += 1,
            SliceOutcome::Ran { vm: 0, .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(turns_of_b, 5, "VM 1 ran alone for the pause");
    assert!(time.get() >= until + 1000);
    let read = hypervisor.vm(0).unwrap().harts[0].x[T0 as usize];
    assert!((1990..=2010).contains(&read), "no jump over the pause: {read}");
    // Paused alone: the host may sleep until the pause ends.
    hypervisor.pause(1, time.get() + 300);
    hypervisor.pause(0, time.get() + 700);
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Idle { until: time.get() + 300 });
}

#[test]
fn an_idle_vm_under_timed_turns_sleeps_until_its_deadline() {
    let time = Time::new(0);
    let mut a = Vec::new();
    let mut clock = SharedClock(&time);
    let mut hypervisor = Hypervisor::<_, TimedInterpreter<'_>, 1>::new(1);
    hypervisor
        .add(shared_vm(&mut a, &mut clock, &wait_for_timer(3000)), TimedInterpreter::new(&time, 1), None)
        .unwrap();
    let mut host = WorkingClock { time: &time, work: 0 };
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    let ran = time.get();
    assert!(ran < 20, "it ran up to its wfi: {ran}");
    assert_eq!(hypervisor.state(0), Some(VmState::Idle { until: 3000 }), "asleep until its deadline");
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Idle { until: 3000 });
    // Its time ran on while it slept: at 3000 its timer is due.
    time.set(3000);
    assert_eq!(hypervisor.run_timed_slice(&mut host, 1000), SliceOutcome::Ran { vm: 0, stopped: None });
    assert!(hypervisor.vm(0).unwrap().harts[0].interrupt_lines != 0 || hypervisor.vm(0).unwrap().steps > 20);
}

#[test]
fn a_timed_vm_stops_at_its_instruction_limit_alone() {
    let time = Time::new(0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut clock_a, mut clock_b) = (SharedClock(&time), SharedClock(&time));
    let mut hypervisor = Hypervisor::<_, TimedInterpreter<'_>, 2>::new(1);
    hypervisor.add(shared_vm(&mut a, &mut clock_a, &counting()), TimedInterpreter::new(&time, 1), Some(1500)).unwrap();
    hypervisor.add(shared_vm(&mut b, &mut clock_b, &counting()), TimedInterpreter::new(&time, 1), None).unwrap();
    let mut host = WorkingClock { time: &time, work: 0 };
    let mut stopped = Vec::new();
    for _ in 0..6 {
        if let SliceOutcome::Ran { vm, stopped: Some(outcome) } = hypervisor.run_timed_slice(&mut host, 1000) {
            stopped.push((vm, outcome));
        }
    }
    assert_eq!(stopped, [(0, RunOutcome::InstructionLimit)]);
    assert_eq!(hypervisor.vm(0).unwrap().steps, 1500, "exactly its limit");
    assert!(hypervisor.vm(1).unwrap().steps >= 3000, "the other VM goes on");
}
