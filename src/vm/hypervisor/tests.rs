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
