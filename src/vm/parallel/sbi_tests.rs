//! The VMM's SBI with each hart in a `Vm` of its own on a thread of its own, sharing an [`SbiShared`]: HSM start
//! of a stopped (parked) hart, an IPI that wakes a hart parked in `wfi`, a remote fence that returns only once
//! its target has performed it, and two harts fencing each other at once.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::*;
use crate::exec::interp::Interpreter;
use crate::exec::Engine;
use crate::isa::{self, BranchCond, CsrOp, Inst, OpImmKind};
use crate::mem::mmu::Memory;
use crate::mem::RAM_BASE;
use crate::trap::{Exit, FlushScope};
use crate::vm::sbi::{eid, HartState, SbiShared};
use crate::vm::{Clock, RunOutcome, VmBuilder, SLICE};

/// Where hart 1's program lies, from the start of RAM.
const SECONDARY: usize = 0x800;

/// Console output, each byte with the remote `sfence.vma`s hart 1 had performed when it was written.
type Output = Arc<Mutex<Vec<(u8, u32)>>>;

/// Devices with nothing but a console (the SBI's) and one hart's worth of undriven lines per hart.
struct ConsoleOnly {
    output: Output,
    fences: Arc<AtomicU32>,
}

impl Devices for ConsoleOnly {
    fn read(&mut self, _: u64, _: u8, _: &mut Ram) -> Result<u64, MmioError> {
        Err(MmioError::Unsupported)
    }
    fn write(&mut self, _: u64, _: u8, _: u64, _: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        Err(MmioError::Unsupported)
    }
    fn update(&mut self, _: u64, _: &mut [Hart], _: &mut Ram) {}
    fn update_time(&mut self, _: u64, _: &mut [Hart]) {}
    fn hart_lines(&self, _: usize) -> Option<HartLines> {
        Some(HartLines::default())
    }
    fn mtime(&self) -> u64 {
        0
    }
    fn ticks_until_deadline(&self) -> Option<u64> {
        None
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        let fences = self.fences.load(Ordering::SeqCst);
        self.output.lock().unwrap().extend(bytes.iter().map(|&byte| (byte, fences)));
        bytes.len()
    }
}

/// A flag per hart; a parked hart's thread sleeps until its flag is set.
#[derive(Default)]
struct Flags {
    pending: [AtomicBool; MAX_HARTS],
    /// How often each hart's thread parked.
    parks: [AtomicU32; MAX_HARTS],
}

impl HartWaker for Flags {
    fn wake(&self, index: usize) {
        self.pending[index].store(true, Ordering::SeqCst);
    }
}

struct ParkingClock<'f> {
    flags: &'f Flags,
    index: usize,
}

impl Clock for ParkingClock<'_> {
    fn now(&mut self) -> u64 {
        0
    }
    fn idle(&mut self, _: Option<u64>) {
        self.flags.parks[self.index].fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_millis(50);
        while !self.flags.pending[self.index].swap(false, Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// The interpreter, counting the remote `sfence.vma`s it hears of (not the whole flush of a start).
struct Counting<'c>(&'c AtomicU32);

impl Engine for Counting<'_> {
    fn run(&mut self, hart: &mut Hart, memory: &mut Memory, budget: u64) -> Exit {
        Interpreter.run(hart, memory, budget)
    }
    fn flush_translations(&mut self, _: usize, scope: FlushScope) {
        if let FlushScope::Sfence { .. } = scope {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn li(rd: u8, value: i32) -> [Inst; 2] {
    let upper = value.wrapping_add(0x800) & !0xfff;
    [Inst::Lui { rd, imm: upper }, Inst::OpImm { op: OpImmKind::Addi, rd, rs1: rd, imm: value.wrapping_sub(upper) }]
}

fn sbi_call(code: &mut Vec<Inst>, extension: u64, function: i32) {
    code.extend(li(17, extension as i32));
    code.extend(li(16, function));
    code.push(Inst::Ecall);
}

fn print(code: &mut Vec<Inst>, byte: u8) {
    code.extend(li(10, i32::from(byte)));
    sbi_call(code, eid::DBCN, 2);
}

/// Loops back to `target` (an index in `code`) while `rs1` != `rs2`.
fn branch_back(code: &mut Vec<Inst>, cond: BranchCond, rs1: u8, rs2: u8, target: usize) {
    let offset = 4 * (target as i32 - code.len() as i32);
    code.push(Inst::Branch { cond, rs1, rs2, offset });
}

/// Hart 0 starts hart 1 at its program with `a1` = `opaque`, then waits until hart 1 is STARTED.
fn start_hart_1(code: &mut Vec<Inst>, opaque: u8) {
    code.extend(li(10, 1));
    code.push(Inst::Auipc { rd: 11, imm: 0 });
    let auipc_at = 4 * (code.len() as i32 - 1);
    code.push(Inst::OpImm { op: OpImmKind::Addi, rd: 11, rs1: 11, imm: SECONDARY as i32 - auipc_at });
    code.extend(li(12, i32::from(opaque)));
    sbi_call(code, eid::HSM, 0);
    wait_for_state(code, HartState::Started);
}

/// Hart 0 polls hart 1's HSM state until it is `state`.
fn wait_for_state(code: &mut Vec<Inst>, state: HartState) {
    let wait = code.len();
    code.extend(li(10, 1));
    sbi_call(code, eid::HSM, 2);
    code.extend(li(5, state as i32));
    branch_back(code, BranchCond::Ne, 11, 5, wait);
}

/// `rfence.sfence_vma` of the whole address space on the harts of `mask`.
fn fence(code: &mut Vec<Inst>, mask: i32) {
    code.extend(li(10, mask));
    for register in 11..=13 {
        code.push(Inst::OpImm { op: OpImmKind::Addi, rd: register, rs1: 0, imm: 0 });
    }
    sbi_call(code, eid::RFENCE, 1);
}

/// `count` fences of the harts of `mask` in a row (counting down in `s1`).
fn fences(code: &mut Vec<Inst>, mask: i32, count: i32) {
    code.extend(li(9, count));
    let again = code.len();
    fence(code, mask);
    code.push(Inst::OpImm { op: OpImmKind::Addi, rd: 9, rs1: 9, imm: -1 });
    branch_back(code, BranchCond::Ne, 9, 0, again);
}

fn power_off(code: &mut Vec<Inst>) {
    code.extend(li(10, 0));
    code.extend(li(11, 0));
    sbi_call(code, eid::SRST, 0);
}

/// What a two-hart run did.
struct Run {
    outcome: Option<RunOutcome>,
    output: Vec<(u8, u32)>,
    /// How often each hart's thread parked.
    parks: [u32; 2],
}

/// Runs hart 0's `boot` program and hart 1's `secondary` with the VMM's SBI, each hart in a `Vm` of its own on a
/// thread of its own, until one powers off (or 20 s pass: then the outcome is `None`).
fn run_two_harts(boot: &[Inst], secondary: &[Inst]) -> Run {
    let output = Output::default();
    let fences = Arc::new(AtomicU32::new(0));
    let flags = Flags::default();
    let devices = ConsoleOnly { output: output.clone(), fences: fences.clone() };
    let devices: SharedDevices<'_, _> = SharedDevices::new(devices, 2, &flags).unwrap();
    let sbi = SbiShared::new(2, 0, &flags, std::thread::yield_now);
    let stop = AtomicBool::new(false);
    let outcome = Mutex::new(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|scope| {
        for index in 0..2 {
            let (devices, sbi, flags, stop, outcome, fences) = (&devices, &sbi, &flags, &stop, &outcome, &fences);
            scope.spawn(move || {
                let mut backing = std::vec![0u8; 0x4000];
                for (offset, program) in [(0, boot), (SECONDARY, secondary)] {
                    for (at, inst) in program.iter().enumerate() {
                        let at = offset + 4 * at;
                        backing[at..at + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
                    }
                }
                let mut clock = ParkingClock { flags, index };
                let mut vm = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices.hart(index), &mut clock)
                    .harts(2)
                    .only_hart(index)
                    .builtin_sbi(RAM_BASE)
                    .shared_sbi(sbi)
                    .build()
                    .unwrap();
                let mut counting = Counting(fences);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let ended = if index == 1 {
                        vm.run_slice(&mut counting, SLICE)
                    } else {
                        vm.run_slice(&mut Interpreter, SLICE)
                    };
                    if let Some(ended) = ended {
                        *outcome.lock().unwrap() = Some(ended);
                        break;
                    }
                }
                stop.store(true, Ordering::SeqCst);
                sbi.halt();
            });
        }
        // A watchdog: past the deadline, no SBI wait goes on (two harts stuck waiting for each other fail the
        // test rather than hang it).
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        sbi.halt();
    });
    let output = output.lock().unwrap().clone();
    let parks = [0, 1].map(|index| flags.parks[index].load(Ordering::SeqCst));
    Run { outcome: outcome.into_inner().unwrap(), output, parks }
}

fn text(output: &[(u8, u32)]) -> Vec<u8> {
    output.iter().map(|&(byte, _)| byte).collect()
}

#[test]
fn a_stopped_hart_is_started_and_an_ipi_wakes_it_from_wfi() {
    let mut boot = Vec::new();
    start_hart_1(&mut boot, b'w');
    // Long enough for hart 1 to park in `wfi`.
    boot.extend(li(9, 200_000));
    let delay = boot.len();
    boot.push(Inst::OpImm { op: OpImmKind::Addi, rd: 9, rs1: 9, imm: -1 });
    branch_back(&mut boot, BranchCond::Ne, 9, 0, delay);
    boot.extend(li(10, 0b10));
    boot.extend(li(11, 0));
    sbi_call(&mut boot, eid::IPI, 0);
    wait_for_state(&mut boot, HartState::Stopped);
    print(&mut boot, b'A');
    power_off(&mut boot);

    // Hart 1 prints its opaque value, waits for a software interrupt (enabled in `sie`, `sstatus.SIE` clear:
    // `wfi` returns without a trap), prints 'I' and stops.
    let mut secondary = std::vec![Inst::OpImm { op: OpImmKind::Addi, rd: 10, rs1: 11, imm: 0 }];
    sbi_call(&mut secondary, eid::DBCN, 2);
    secondary.extend(li(5, crate::isa::csr::interrupt::SSI as i32));
    secondary.push(Inst::Csr { op: CsrOp::Rs, rd: 0, src: 5, csr: crate::isa::csr::SIE });
    secondary.push(Inst::Wfi);
    print(&mut secondary, b'I');
    sbi_call(&mut secondary, eid::HSM, 1);

    let run = run_two_harts(&boot, &secondary);
    assert_eq!(run.outcome, Some(RunOutcome::PowerOff { code: 0 }));
    assert_eq!(text(&run.output), b"wIA");
    assert!(run.parks[1] >= 1, "hart 1's thread parked (stopped, or in wfi)");
}

#[test]
fn a_remote_fence_returns_once_its_target_performed_it() {
    let mut boot = Vec::new();
    start_hart_1(&mut boot, 0);
    fence(&mut boot, 0b10);
    print(&mut boot, b'F');
    power_off(&mut boot);
    let secondary = [Inst::Jal { rd: 0, offset: 0 }];

    let run = run_two_harts(&boot, &secondary);
    assert_eq!(run.outcome, Some(RunOutcome::PowerOff { code: 0 }));
    assert_eq!(run.output, [(b'F', 1)], "hart 1 had performed the fence when hart 0's call returned");
}

#[test]
fn two_harts_fencing_each_other_at_once_both_go_on() {
    let mut boot = Vec::new();
    start_hart_1(&mut boot, 0);
    fences(&mut boot, 0b10, 20000);
    wait_for_state(&mut boot, HartState::Stopped);
    print(&mut boot, b'a');
    power_off(&mut boot);
    let mut secondary = Vec::new();
    fences(&mut secondary, 0b01, 20000);
    print(&mut secondary, b'b');
    sbi_call(&mut secondary, eid::HSM, 1);

    let run = run_two_harts(&boot, &secondary);
    assert_eq!(run.outcome, Some(RunOutcome::PowerOff { code: 0 }), "neither waits for the other for good");
    assert_eq!(text(&run.output), b"ba");
    assert!(run.output[0].1 >= 1, "hart 1 performed hart 0's fences while fencing hart 0");
}
