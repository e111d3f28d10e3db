//! Trigger WARL rules and matching, and the debugger's stops as both engines deliver them.

use super::*;
use crate::exec::interp::Interpreter;
use crate::exec::threaded::Threaded;
use crate::exec::Engine;
use crate::hart::{Hart, HartConfig};
use crate::isa::csr::{TCONTROL, TDATA1, TDATA2, TDATA3, TINFO, TSELECT};
use crate::isa::{self, BranchCond, Inst, OpImmKind, StoreWidth};
use crate::mem::mmu::{Memory, Tlb, VmRealMap};
use crate::mem::{Ram, RAM_BASE};
use std::vec;

const MCONTROL6: u64 = tdata1::TYPE_MCONTROL6 << tdata1::TYPE_SHIFT;
const MCONTROL: u64 = tdata1::TYPE_MCONTROL << tdata1::TYPE_SHIFT;

fn machine_hart() -> Hart {
    Hart::new(HartConfig::rv64gc(0))
}

/// Programs trigger `index` from M-mode through the CSRs, as a guest does.
fn program(hart: &mut Hart, index: u64, control: u64, address: u64) {
    hart.write_csr(TSELECT, index).unwrap();
    hart.write_csr(TDATA1, control).unwrap();
    hart.write_csr(TDATA2, address).unwrap();
}

#[test]
fn discovery_finds_the_triggers_and_their_types() {
    let mut hart = machine_hart();
    for index in 0..TRIGGERS as u64 {
        hart.write_csr(TSELECT, index).unwrap();
        assert_eq!(hart.read_csr(TSELECT, 0), Ok(index));
        assert_eq!(hart.read_csr(TINFO, 0), Ok(TINFO_VALUE));
        assert_eq!(hart.read_csr(TDATA1, 0), Ok(tdata1::DISABLED), "triggers start disabled");
    }
    assert_eq!(TINFO_VALUE >> 24, 1, "tinfo.version says debug specification 1.0");
    assert_eq!(TINFO_VALUE & 0xffff, (1 << 2) | (1 << 6) | (1 << 15));
    // An index past the last trigger does not stick: that is how software counts them.
    hart.write_csr(TSELECT, TRIGGERS as u64).unwrap();
    assert_eq!(hart.read_csr(TSELECT, 0), Ok(TRIGGERS as u64 - 1));
    hart.write_csr(TSELECT, u64::MAX).unwrap();
    assert_eq!(hart.read_csr(TSELECT, 0), Ok(TRIGGERS as u64 - 1));
    // tinfo ignores writes; the absent context registers trap.
    hart.write_csr(TINFO, 0).unwrap();
    assert_eq!(hart.read_csr(TINFO, 0), Ok(TINFO_VALUE));
    assert!(hart.read_csr(0x7a8, 0).is_err(), "mcontext is absent");
    assert!(hart.write_csr(0x5a8, 1).is_err(), "scontext is absent");
    // Trigger CSRs are M-mode only.
    hart.privilege = Privilege::Supervisor;
    assert!(hart.read_csr(TSELECT, 0).is_err());
    assert!(hart.write_csr(TDATA1, MCONTROL6).is_err());
}

#[test]
fn tdata1_reads_back_legal_values() {
    let mut hart = machine_hart();
    let exact = MCONTROL | tdata1::M | tdata1::EXECUTE;
    hart.write_csr(TDATA1, exact).unwrap();
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(exact), "the value riscv-tests' breakpoint test writes sticks");
    let all_modes = MCONTROL6 | tdata1::M | tdata1::S | tdata1::U | tdata1::LOAD | tdata1::STORE;
    hart.write_csr(TDATA1, all_modes | (tdata1::MATCH_LT << tdata1::MATCH_SHIFT)).unwrap();
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(all_modes | (tdata1::MATCH_LT << tdata1::MATCH_SHIFT)));

    // dmode, action 1, chain, select, timing/size, hit and the vs/vu bits are not writable from M-mode.
    let noise = tdata1::DMODE | (1 << 12) | (1 << 11) | (1 << 21) | (1 << 18) | (3 << 16) | (1 << 22) | (3 << 23);
    hart.write_csr(TDATA1, MCONTROL6 | tdata1::M | tdata1::EXECUTE | noise).unwrap();
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(MCONTROL6 | tdata1::M | tdata1::EXECUTE));
    // An unsupported match type becomes "equal", an unsupported action a breakpoint exception.
    hart.write_csr(TDATA1, MCONTROL6 | tdata1::LOAD | (5 << tdata1::MATCH_SHIFT) | (9 << tdata1::ACTION_SHIFT))
        .unwrap();
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(MCONTROL6 | tdata1::LOAD));
    // Types 0, 1, 3, 4, 5, 7.. are not implemented: the trigger reads back disabled.
    for kind in [0u64, 1, 3, 4, 5, 7, 12, 15] {
        hart.write_csr(TDATA1, (kind << 60) | u64::MAX >> 4).unwrap();
        assert_eq!(hart.read_csr(TDATA1, 0), Ok(tdata1::DISABLED), "type {kind}");
    }
    // tdata2 holds any address; tdata3 (textra) is all zero.
    hart.write_csr(TDATA2, u64::MAX).unwrap();
    assert_eq!(hart.read_csr(TDATA2, 0), Ok(u64::MAX));
    hart.write_csr(TDATA3, u64::MAX).unwrap();
    assert_eq!(hart.read_csr(TDATA3, 0), Ok(0));
    hart.write_csr(TCONTROL, u64::MAX).unwrap();
    assert_eq!(hart.read_csr(TCONTROL, 0), Ok(tcontrol::MTE | tcontrol::MPTE));

    // A hart without S-mode has no S bit.
    let mut small = Hart::new(HartConfig::rv64imac_mu(0));
    small.write_csr(TDATA1, MCONTROL6 | tdata1::S | tdata1::U | tdata1::LOAD).unwrap();
    assert_eq!(small.read_csr(TDATA1, 0), Ok(MCONTROL6 | tdata1::U | tdata1::LOAD));
}

#[test]
fn mode_bits_and_tcontrol_decide_where_a_trigger_fires() {
    let mut hart = machine_hart();
    program(&mut hart, 0, MCONTROL6 | tdata1::U | tdata1::EXECUTE, 0x1000);
    let triggers = &hart.triggers;
    assert!(triggers.armed(Privilege::User));
    assert!(!triggers.armed(Privilege::Supervisor) && !triggers.armed(Privilege::Machine));
    let breakpoint = Some(Exit::Exception { cause: Exception::Breakpoint, tval: 0x1000 });
    assert_eq!(triggers.check_execute(0x1000, Privilege::User), breakpoint);
    assert_eq!(triggers.check_execute(0x1000, Privilege::Machine), None, "a U-mode trigger does not fire in M");
    assert_eq!(triggers.check_execute(0x1002, Privilege::User), None);

    // M-mode triggers fire only while tcontrol.mte is set.
    program(&mut hart, 1, MCONTROL6 | tdata1::M | tdata1::EXECUTE, 0x2000);
    assert!(!hart.triggers.armed(Privilege::Machine));
    assert_eq!(hart.triggers.check_execute(0x2000, Privilege::Machine), None);
    hart.write_csr(TCONTROL, tcontrol::MTE).unwrap();
    assert!(hart.triggers.armed(Privilege::Machine));
    assert!(hart.triggers.check_execute(0x2000, Privilege::Machine).is_some());
    // A trap into M-mode saves and clears mte (the handler does not trip over its own breakpoint); mret restores.
    hart.write_csr(crate::isa::csr::MTVEC, 0x8000_0000).unwrap();
    hart.raise(Exception::Breakpoint, 0x2000);
    assert_eq!(hart.read_csr(TCONTROL, 0), Ok(tcontrol::MPTE));
    assert!(!hart.triggers.armed(Privilege::Machine));
    hart.csrs.mstatus |= crate::isa::csr::mstatus::MPP;
    hart.mret();
    assert_eq!(hart.read_csr(TCONTROL, 0), Ok(tcontrol::MPTE | tcontrol::MTE));
    assert!(hart.triggers.armed(Privilege::Machine));
    // Nothing enabled: nothing armed anywhere.
    hart.reset(0);
    for privilege in [Privilege::User, Privilege::Supervisor, Privilege::Machine] {
        assert!(!hart.triggers.armed(privilege));
    }
}

#[test]
fn address_matches_cover_every_accessed_byte_and_each_match_type() {
    let mut hart = machine_hart();
    let load = MCONTROL6 | tdata1::S | tdata1::LOAD;
    program(&mut hart, 0, load, 0x1003);
    let t = &hart.triggers;
    let s = Privilege::Supervisor;
    let hit = |addr| Some(Exit::Exception { cause: Exception::Breakpoint, tval: addr });
    assert_eq!(t.check_access(0x1000, 4, Access::Load, s), hit(0x1000), "tval is the accessed address");
    assert_eq!(t.check_access(0x1000, 2, Access::Load, s), None);
    assert_eq!(t.check_access(0x1004, 4, Access::Load, s), None);
    assert_eq!(t.check_access(0x1000, 4, Access::Store, s), None, "a load trigger ignores stores");
    assert_eq!(t.check_access(0x1000, 8, Access::LoadStore, s), hit(0x1000), "an AMO loads");
    assert_eq!(t.check_execute(0x1003, s), None, "a load trigger ignores fetches");

    // NAPOT: 0x10ff ignores the low 9 bits (8 ones and the zero above them): 0x1000..=0x11ff.
    program(&mut hart, 0, load | (tdata1::MATCH_NAPOT << tdata1::MATCH_SHIFT), 0x10ff);
    let t = &hart.triggers;
    assert_eq!(t.check_access(0x11f8, 8, Access::Load, s), hit(0x11f8));
    assert_eq!(t.check_access(0x0ffc, 4, Access::Load, s), None);
    assert_eq!(t.check_access(0x0ffc, 8, Access::Load, s), hit(0x0ffc), "the access reaches into the range");
    assert_eq!(t.check_access(0x1200, 1, Access::Load, s), None);
    // tdata2 all ones matches everything.
    program(&mut hart, 0, load | (tdata1::MATCH_NAPOT << tdata1::MATCH_SHIFT), u64::MAX);
    assert!(hart.triggers.check_access(0, 1, Access::Load, s).is_some());

    // Greater or equal, less than.
    program(&mut hart, 0, load | (tdata1::MATCH_GE << tdata1::MATCH_SHIFT), 0x2000);
    assert_eq!(hart.triggers.check_access(0x1ffc, 4, Access::Load, s), None);
    assert!(hart.triggers.check_access(0x1ffc, 8, Access::Load, s).is_some());
    program(&mut hart, 0, load | (tdata1::MATCH_LT << tdata1::MATCH_SHIFT), 0x2000);
    assert!(hart.triggers.check_access(0x1fff, 1, Access::Load, s).is_some());
    assert_eq!(hart.triggers.check_access(0x2000, 8, Access::Load, s), None);
    // An access that wraps around the address space matches its bytes on both sides, without overflow.
    program(&mut hart, 0, load, 1);
    assert!(hart.triggers.check_access(u64::MAX - 1, 4, Access::Load, s).is_some());
}

#[test]
fn debugger_triggers_are_out_of_the_guests_reach() {
    let mut hart = machine_hart();
    let index = hart.triggers.insert_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Write), 0x3000, 8);
    assert_eq!(index, Some(0));
    let (control, data) = hart.triggers.trigger(0).unwrap();
    assert_ne!(control & tdata1::DMODE, 0);
    assert_eq!(data, 0x3003, "an 8-byte NAPOT range");
    // M-mode writes to its tdata are ignored; reads see it.
    hart.write_csr(TSELECT, 0).unwrap();
    hart.write_csr(TDATA1, MCONTROL6 | tdata1::M | tdata1::LOAD).unwrap();
    hart.write_csr(TDATA2, 0).unwrap();
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(control));
    assert_eq!(hart.read_csr(TDATA2, 0), Ok(0x3003));
    // It fires in every mode whatever tcontrol says, and stops for the debugger, not the guest.
    let stop = Exit::Debug(DebugStop::Watchpoint { trigger: 0, addr: 0x3004, kind: WatchKind::Write });
    for privilege in [Privilege::User, Privilege::Supervisor, Privilege::Machine] {
        assert!(hart.triggers.armed(privilege));
        assert_eq!(hart.triggers.check_access(0x3004, 4, Access::Store, privilege), Some(stop));
    }
    // The first byte both accessed and watched is reported.
    assert_eq!(
        hart.triggers.check_access(0x2ffc, 8, Access::Store, Privilege::User),
        Some(Exit::Debug(DebugStop::Watchpoint { trigger: 0, addr: 0x3000, kind: WatchKind::Write }))
    );
    assert_eq!(hart.triggers.check_access(0x3000, 8, Access::Load, Privilege::Machine), None);
    // A guest reset keeps it; removal gives the trigger back.
    hart.reset(0);
    assert!(hart.triggers.armed(Privilege::Machine));
    assert!(!hart.triggers.remove_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Read), 0x3000, 8));
    assert!(hart.triggers.remove_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Write), 0x3000, 8));
    assert!(!hart.triggers.armed(Privilege::Machine));
    assert_eq!(hart.read_csr(TDATA1, 0), Ok(tdata1::DISABLED));
}

#[test]
fn debugger_triggers_take_free_triggers_only_and_valid_ranges() {
    let mut hart = machine_hart();
    // The guest uses trigger 0; trigger 1 is programmed but matches nothing, so it is free.
    program(&mut hart, 0, MCONTROL6 | tdata1::M | tdata1::EXECUTE, 0x100);
    program(&mut hart, 1, MCONTROL6 | tdata1::M, 0x100);
    let execute = DebuggerTrigger::Execute;
    assert_eq!(hart.triggers.insert_debugger_trigger(execute, 0x8000_0000, 4), Some(1));
    assert_eq!(hart.triggers.insert_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Read), 0x7, 3), None);
    assert_eq!(hart.triggers.insert_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Read), 0x2, 4), None);
    assert_eq!(hart.triggers.insert_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Read), 0x2, 0), None);
    assert_eq!(hart.triggers.insert_debugger_trigger(DebuggerTrigger::Watch(WatchKind::Access), 0x10, 1), Some(2));
    assert_eq!(hart.triggers.insert_debugger_trigger(execute, 0x200, 2), Some(3));
    assert_eq!(hart.triggers.insert_debugger_trigger(execute, 0x300, 2), None, "all taken");
    assert_eq!(
        hart.triggers.check_execute(0x8000_0000, Privilege::User),
        Some(Exit::Debug(DebugStop::HardwareBreakpoint { trigger: 1 }))
    );
    // A debugger stop outranks the guest's own breakpoint on the same instruction.
    hart.write_csr(TCONTROL, tcontrol::MTE).unwrap();
    program(&mut hart, 0, MCONTROL6 | tdata1::M | tdata1::EXECUTE, 0x200);
    assert_eq!(
        hart.triggers.check_execute(0x200, Privilege::Machine),
        Some(Exit::Debug(DebugStop::HardwareBreakpoint { trigger: 3 }))
    );
    hart.triggers.clear_debugger_state();
    assert_eq!(
        hart.triggers.check_execute(0x200, Privilege::Machine),
        Some(Exit::Exception { cause: Exception::Breakpoint, tval: 0x200 })
    );
    assert_eq!(hart.triggers.trigger(3), Some((tdata1::DISABLED, 0)));
}

#[test]
fn software_breakpoints_fill_a_fixed_table() {
    let mut triggers = Triggers::new(true, true);
    assert!(!triggers.armed(Privilege::User));
    for index in 0..SOFTWARE_BREAKPOINTS as u64 {
        assert!(triggers.insert_software_breakpoint(0x1000 + 2 * index));
    }
    assert!(triggers.insert_software_breakpoint(0x1000), "already set");
    assert!(!triggers.insert_software_breakpoint(0x9000), "table full");
    assert!(triggers.armed(Privilege::User) && triggers.armed(Privilege::Machine));
    assert_eq!(triggers.check_execute(0x1002, Privilege::User), Some(Exit::Debug(DebugStop::SoftwareBreakpoint)));
    assert_eq!(triggers.check_execute(0x9000, Privilege::User), None);
    for index in 0..SOFTWARE_BREAKPOINTS as u64 {
        assert!(triggers.remove_software_breakpoint(0x1000 + 2 * index));
    }
    assert!(!triggers.remove_software_breakpoint(0x1000));
    assert!(!triggers.armed(Privilege::Machine));
}

// The engines.

const DATA: u64 = RAM_BASE + 0x2000;
/// The loop's instructions: `x5 += 1; [DATA] = x5; x7 = x5; x8 += 3; if x5 < x9 repeat`, then park.
const LOOP: u64 = RAM_BASE + 8;
const STORE_AT: u64 = LOOP + 4;
const ADD_X8_AT: u64 = LOOP + 12;

fn hot_loop() -> [Inst; 8] {
    let addi = |rd, rs1, imm| Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm };
    [
        addi(5, 0, 0),
        Inst::Auipc { rd: 6, imm: 0x2000 },
        addi(5, 5, 1),
        Inst::Store { width: StoreWidth::D, rs1: 6, rs2: 5, offset: -4 },
        addi(7, 5, 0),
        addi(8, 8, 3),
        Inst::Branch { cond: BranchCond::Lt, rs1: 5, rs2: 9, offset: -16 },
        Inst::Jal { rd: 0, offset: 0 },
    ]
}

/// Runs `test` on an M-mode hart at the start of [`hot_loop`] (x9 = a million) over 16 KiB of watched RAM.
fn with_loop(test: impl FnOnce(&mut Hart, &mut Memory)) {
    let mut backing = vec![0u8; 0x4000];
    for (index, inst) in hot_loop().iter().enumerate() {
        backing[4 * index..4 * index + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
    }
    let mut watch = [0u64; 1];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    ram.attach_code_watch(&mut watch);
    let realmap = VmRealMap::for_ram(&ram).unwrap();
    let mut tlb = Tlb::new();
    let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
    let mut hart = machine_hart();
    hart.pc = RAM_BASE;
    hart.set_x(9, 1_000_000);
    test(&mut hart, &mut memory);
}

type SmallThreaded = Threaded<1024, 64, 128>;

/// The loop's state is that of a stop at `pc` in iteration x5 (nothing of the instruction at `pc` done).
fn assert_consistent_stop(hart: &Hart, memory: &Memory, pc: u64) {
    assert_eq!(hart.pc, pc);
    let iteration = hart.x(5);
    assert!(iteration > 100, "the loop ran hot first ({iteration} iterations)");
    let stored = memory.ram.load(DATA, 8).unwrap();
    let x8 = hart.x(8);
    match pc {
        STORE_AT => assert_eq!((stored, x8), (iteration - 1, 3 * (iteration - 1)), "the store did not happen"),
        ADD_X8_AT => assert_eq!((stored, x8, hart.x(7)), (iteration, 3 * (iteration - 1), iteration)),
        _ => unreachable!(),
    }
    // Two setup instructions, five per finished iteration, and those of this one before `pc`.
    let done_here = (pc - LOOP) / 4;
    assert_eq!(hart.instret, 2 + 5 * (iteration - 1) + done_here);
}

#[test]
fn a_software_breakpoint_inside_a_hot_threaded_block_stops_both_engines_at_it() {
    for threaded in [true, false] {
        with_loop(|hart, memory| {
            let mut fast = SmallThreaded::new();
            let mut run = |hart: &mut Hart, memory: &mut Memory, budget| match threaded {
                true => fast.run(hart, memory, budget),
                false => Interpreter.run(hart, memory, budget),
            };
            assert_eq!(run(hart, memory, 1003), Exit::BudgetExhausted);
            assert!(hart.triggers.insert_software_breakpoint(ADD_X8_AT));
            let exit = run(hart, memory, 10_000);
            assert_eq!(exit, Exit::Debug(DebugStop::SoftwareBreakpoint), "threaded: {threaded}");
            assert_consistent_stop(hart, memory, ADD_X8_AT);
            // Still set: running again stops again, with nothing done.
            let instret = hart.instret;
            assert_eq!(run(hart, memory, 10), Exit::Debug(DebugStop::SoftwareBreakpoint));
            assert_eq!(hart.instret, instret);
            // Removed, one step retires exactly that instruction.
            assert!(hart.triggers.remove_software_breakpoint(ADD_X8_AT));
            let x8 = hart.x(8);
            assert_eq!(run(hart, memory, 1), Exit::BudgetExhausted);
            assert_eq!((hart.pc, hart.instret, hart.x(8)), (ADD_X8_AT + 4, instret + 1, x8 + 3));
        });
    }
}

#[test]
fn a_watchpoint_stops_a_store_of_the_threaded_fast_path_before_it_writes() {
    with_loop(|hart, memory| {
        let mut engine = SmallThreaded::new();
        assert_eq!(engine.run(hart, memory, 1000), Exit::BudgetExhausted);
        let entered = engine.stats().blocks_entered;
        assert!(entered > 100, "the loop ran in blocks");
        let watch = DebuggerTrigger::Watch(WatchKind::Write);
        assert_eq!(hart.triggers.insert_debugger_trigger(watch, DATA + 4, 4), Some(0));
        let exit = engine.run(hart, memory, 10_000);
        assert_eq!(exit, Exit::Debug(DebugStop::Watchpoint { trigger: 0, addr: DATA + 4, kind: WatchKind::Write }));
        assert_consistent_stop(hart, memory, STORE_AT);
        assert_eq!(engine.stats().blocks_entered, entered, "armed, the engine ran no block");
        // Disarmed, blocks run again.
        assert!(hart.triggers.remove_debugger_trigger(watch, DATA + 4, 4));
        assert_eq!(engine.run(hart, memory, 1000), Exit::BudgetExhausted);
        assert!(engine.stats().blocks_entered > entered);
    });
}

#[test]
fn a_guest_trigger_armed_in_a_hot_loop_raises_a_breakpoint_at_exactly_its_instruction() {
    with_loop(|hart, memory| {
        let mut engine = SmallThreaded::new();
        assert_eq!(engine.run(hart, memory, 2000), Exit::BudgetExhausted);
        // A U-mode trigger does not slow M-mode down, nor fire there.
        program(hart, 0, MCONTROL6 | tdata1::U | tdata1::EXECUTE, ADD_X8_AT);
        let entered = engine.stats().blocks_entered;
        assert_eq!(engine.run(hart, memory, 2000), Exit::BudgetExhausted);
        assert!(engine.stats().blocks_entered > entered);
        // The same for M, with mte set, fires at the instruction (nothing of it done).
        program(hart, 1, MCONTROL6 | tdata1::M | tdata1::EXECUTE, ADD_X8_AT);
        hart.write_csr(TCONTROL, tcontrol::MTE).unwrap();
        let exit = engine.run(hart, memory, 10_000);
        assert_eq!(exit, Exit::Exception { cause: Exception::Breakpoint, tval: ADD_X8_AT });
        assert_consistent_stop(hart, memory, ADD_X8_AT);
        // A store trigger on the loop's data fires on the store, before it writes.
        program(hart, 1, MCONTROL6 | tdata1::M | tdata1::STORE, DATA);
        let exit = engine.run(hart, memory, 10_000);
        assert_eq!(exit, Exit::Exception { cause: Exception::Breakpoint, tval: DATA });
        assert_eq!(hart.pc, STORE_AT);
        assert_eq!(memory.ram.load(DATA, 8), Some(hart.x(5) - 1));
    });
}

#[test]
fn a_budget_of_one_retires_exactly_one_instruction_on_both_engines() {
    let mut trace = [vec![], vec![]];
    for (engine_index, pcs) in trace.iter_mut().enumerate() {
        with_loop(|hart, memory| {
            let mut fast = SmallThreaded::new();
            // Warm the threaded engine's blocks first, then single-step from the loop's start.
            let mut run = |hart: &mut Hart, memory: &mut Memory, budget| match engine_index {
                0 => fast.run(hart, memory, budget),
                _ => Interpreter.run(hart, memory, budget),
            };
            run(hart, memory, 500);
            for _ in 0..40 {
                let instret = hart.instret;
                assert_eq!(run(hart, memory, 1), Exit::BudgetExhausted);
                assert_eq!(hart.instret, instret + 1);
                pcs.push((hart.pc, hart.x(5), hart.x(8)));
            }
        });
    }
    assert_eq!(trace[0], trace[1]);
    assert_eq!(trace[0].len(), 40);
}

#[test]
fn vm_run_returns_a_debug_stop_and_the_dispatcher_injects_nothing() {
    use crate::dev::NullSerial;
    use crate::vm::virt::VirtDevices;
    use crate::vm::{Clock, RunOutcome, Vm};
    struct Stopped;
    impl Clock for Stopped {
        fn now(&mut self) -> u64 {
            0
        }
    }
    let mut backing = vec![0u8; 0x4000];
    for (index, inst) in hot_loop().iter().enumerate() {
        backing[4 * index..4 * index + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
    }
    let mut clock = Stopped;
    let mut hart = machine_hart();
    hart.pc = RAM_BASE;
    hart.set_x(9, 1_000_000);
    let devices: VirtDevices<'_, NullSerial> = VirtDevices::new(NullSerial);
    let mut vm = Vm::new([hart], Ram::new(RAM_BASE, &mut backing), devices, &mut clock).unwrap();
    vm.harts[0].triggers.insert_debugger_trigger(DebuggerTrigger::Execute, ADD_X8_AT, 4);
    let outcome = vm.run(&mut Interpreter, Some(100_000));
    assert_eq!(outcome, RunOutcome::DebugStop { hart: 0, stop: DebugStop::HardwareBreakpoint { trigger: 0 } });
    let hart = &vm.harts[0];
    assert_eq!((hart.pc, hart.privilege, hart.csrs.mcause, hart.x(8)), (ADD_X8_AT, Privilege::Machine, 0, 0));
    assert_eq!(vm.steps, 5, "two setup instructions and three of the loop; the stop is no step");
}
