//! The reference interpreter and the dispatcher on small programs assembled with the encoder: MMIO through
//! the device map, faults injected for bad accesses, Zicsr semantics, privilege changes and run limits.

#[path = "../hosted-test/tests/common/isolation.rs"]
mod isolation;

use trapeze::dev::{MachineRequest, MmioDevice, MmioError, NullSerial};
use trapeze::exec::interp::Interpreter;
use trapeze::exec::threaded::Threaded;
use trapeze::exec::Engine;
use trapeze::hart::{Exception, Hart, HartConfig, Privilege};
use trapeze::isa::{self, csr, BranchCond, CsrOp, Inst, LoadWidth, OpImmKind, StoreWidth};
use trapeze::mem::{Ram, RAM_BASE};
use trapeze::vm::virt::VirtDevices;
use trapeze::vm::{Clock, RunOutcome, Vm};

const DEVICE_BASE: u64 = 0x4000_0000;
const MTVEC: u64 = RAM_BASE + 0x1000;

/// A device with one 64-bit register at offset 0 that powers the machine off when written with 0x5555 at
/// offset 8.
#[derive(Default)]
struct Scratch {
    register: u64,
    request: Option<MachineRequest>,
}

impl MmioDevice for Scratch {
    fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        match offset {
            0 => Ok(self.register & (u64::MAX >> (64 - 8 * size as u32))),
            _ => Err(MmioError::Unsupported),
        }
    }
    fn write(&mut self, offset: u64, _size: u8, value: u64) -> Result<(), MmioError> {
        match offset {
            0 => self.register = value,
            8 if value == 0x5555 => self.request = Some(MachineRequest::PowerOff { code: 0 }),
            _ => return Err(MmioError::Unsupported),
        }
        Ok(())
    }
    fn take_request(&mut self) -> Option<MachineRequest> {
        self.request.take()
    }
}

struct FixedClock(u64);

impl Clock for FixedClock {
    fn now(&mut self) -> u64 {
        self.0
    }
}

fn li(rd: u8, imm: i32) -> Inst {
    Inst::OpImm { op: OpImmKind::Addi, rd, rs1: 0, imm }
}

fn lui(rd: u8, value: u32) -> Inst {
    Inst::Lui { rd, imm: value as i32 }
}

fn csr(op: CsrOp, rd: u8, src: u8, number: u16) -> Inst {
    Inst::Csr { op, rd, src, csr: number }
}

/// An endless loop: where a test program parks when it is done.
const PARK: Inst = Inst::Jal { rd: 0, offset: 0 };

struct Machine {
    backing: Vec<u8>,
    scratch: Scratch,
}

impl Machine {
    /// RAM holding `program` at `RAM_BASE` and `handler` at `MTVEC`.
    fn new(program: &[Inst], handler: &[Inst]) -> Self {
        let mut backing = vec![0u8; 0x4000];
        for (offset, code) in [(0usize, program), (0x1000, handler)] {
            for (index, inst) in code.iter().enumerate() {
                let at = offset + 4 * index;
                backing[at..at + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
            }
        }
        Self { backing, scratch: Scratch::default() }
    }

    /// Runs at most `limit` instructions from `RAM_BASE` in M-mode with `mtvec` = `MTVEC`.
    fn run(&mut self, limit: u64) -> (Hart, RunOutcome) {
        self.run_on(&mut Interpreter, limit)
    }

    /// Like [`Machine::run`] on `engine`, with RAM watching code pages for engines that cache translations.
    fn run_on(&mut self, engine: &mut impl Engine, limit: u64) -> (Hart, RunOutcome) {
        let mut code_pages = [0u64; 1];
        let mut devices: VirtDevices<NullSerial> = VirtDevices::new(NullSerial);
        devices.extra.map(DEVICE_BASE, 0x100, &mut self.scratch).unwrap();
        let mut hart = Hart::new(HartConfig::rv64imac_mu(0));
        hart.reset(RAM_BASE);
        hart.csrs.mtvec = MTVEC;
        let mut clock = FixedClock(1234);
        let mut ram = Ram::new(RAM_BASE, &mut self.backing);
        ram.attach_code_watch(&mut code_pages);
        let mut vm = Vm::new([hart], ram, devices, &mut clock).unwrap();
        let outcome = vm.run(engine, Some(limit));
        (vm.harts[0].clone(), outcome)
    }
}

#[test]
fn device_loads_and_stores_go_through_the_dispatcher() {
    let program = [
        lui(5, DEVICE_BASE as u32),
        li(6, -128),
        Inst::Store { width: StoreWidth::D, rs1: 5, rs2: 6, offset: 0 },
        Inst::Load { width: LoadWidth::B, rd: 7, rs1: 5, offset: 0 },
        Inst::Load { width: LoadWidth::Bu, rd: 8, rs1: 5, offset: 0 },
        Inst::Load { width: LoadWidth::Wu, rd: 9, rs1: 5, offset: 0 },
        lui(10, 0x5000),
        Inst::OpImm { op: OpImmKind::Addi, rd: 10, rs1: 10, imm: 0x555 },
        Inst::Store { width: StoreWidth::W, rs1: 5, rs2: 10, offset: 8 },
        PARK,
    ];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, outcome) = machine.run(1000);
    assert_eq!(outcome, RunOutcome::PowerOff { code: 0 });
    assert_eq!(machine.scratch.register, -128i64 as u64);
    assert_eq!(hart.x[7], -128i64 as u64, "lb sign-extends the device's byte");
    assert_eq!(hart.x[8], 0x80);
    assert_eq!(hart.x[9], 0xffff_ff80);
    assert_eq!(hart.instret, 9, "every instruction up to the powering store retired");
}

#[test]
fn accesses_nothing_answers_raise_access_faults() {
    let program = [lui(5, 0x3000_0000), Inst::Load { width: LoadWidth::W, rd: 6, rs1: 5, offset: 12 }, PARK];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(100);
    assert_eq!(hart.csrs.mcause, Exception::LoadAccessFault as u64);
    assert_eq!(hart.csrs.mtval, 0x3000_000c);
    assert_eq!(hart.csrs.mepc, RAM_BASE + 4);
    assert_eq!(hart.pc, MTVEC);
    assert_eq!(hart.x[6], 0, "the faulting load wrote nothing");

    // A store to a register the device does not decode is a store access fault.
    let program = [lui(5, DEVICE_BASE as u32), Inst::Store { width: StoreWidth::B, rs1: 5, rs2: 0, offset: 16 }, PARK];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(100);
    assert_eq!(hart.csrs.mcause, Exception::StoreAccessFault as u64);
    assert_eq!(hart.csrs.mtval, DEVICE_BASE + 16);
}

#[test]
fn fetching_outside_ram_is_an_instruction_access_fault() {
    let program = [lui(5, 0x2000_0000), Inst::Jalr { rd: 1, rs1: 5, offset: 0 }];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(100);
    assert_eq!(hart.csrs.mcause, Exception::InstructionAccessFault as u64);
    assert_eq!(hart.csrs.mtval, 0x2000_0000);
    assert_eq!(hart.csrs.mepc, 0x2000_0000);
    assert_eq!(hart.x[1], RAM_BASE + 8, "the jump itself retired");
}

#[test]
fn zicsr_reads_and_writes_follow_the_source_operand() {
    let program = [
        // Reading a read-only CSR is fine as long as nothing is written.
        csr(CsrOp::Rs, 5, 0, csr::MHARTID),
        csr(CsrOp::Rsi, 6, 0, csr::MISA),
        li(7, 0x55),
        csr(CsrOp::Rw, 0, 7, csr::MSCRATCH),
        csr(CsrOp::Rci, 8, 0x5, csr::MSCRATCH),
        csr(CsrOp::Rs, 9, 0, csr::MSCRATCH),
        csr(CsrOp::Rs, 10, 0, csr::TIME),
        // Writing minstret: the next instruction reads the written value.
        li(11, 100),
        csr(CsrOp::Rw, 0, 11, csr::MINSTRET),
        csr(CsrOp::Rs, 12, 0, csr::MINSTRET),
        // A write to a read-only CSR is illegal even when the value would not change it.
        csr(CsrOp::Rs, 13, 7, csr::MHARTID),
        PARK,
    ];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(12);
    assert_eq!(hart.x[5], 0);
    let misa = hart.x[6];
    assert_eq!(misa >> 62, 2, "MXL = 64");
    for letter in [b'I', b'M', b'A', b'C', b'U'] {
        assert_ne!(misa & csr::misa::ext(letter), 0, "misa has {}", letter as char);
    }
    assert_eq!(hart.x[8], 0x55);
    assert_eq!(hart.x[9], 0x50);
    assert_eq!(hart.x[10], 1234, "time comes from the machine's clock");
    assert_eq!(hart.x[12], 100);
    assert_eq!(hart.csrs.mcause, Exception::IllegalInstruction as u64);
    assert_eq!(hart.csrs.mtval, isa::encode(&program[10]) as u64, "mtval holds the instruction word");
    assert_eq!(hart.x[13], 0);
}

#[test]
fn mret_enters_user_mode_where_privileged_state_is_out_of_reach() {
    let user_code = RAM_BASE + 0x100;
    let program = [
        // PMP entry 0 opens all memory to U-mode (with no entry, U-mode may touch nothing).
        li(6, -1),
        csr(CsrOp::Rw, 0, 6, csr::PMPADDR0),
        li(7, 0x1f),
        csr(CsrOp::Rw, 0, 7, csr::PMPCFG0),
        Inst::Auipc { rd: 5, imm: 0 },
        Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: 0xf0 },
        csr(CsrOp::Rw, 0, 5, csr::MEPC),
        // MPP = U (mstatus is zero after reset), so mret drops to U-mode.
        Inst::Mret,
    ];
    let handler = [csr(CsrOp::Rs, 20, 0, csr::MCAUSE), csr(CsrOp::Rs, 21, 0, csr::MEPC), PARK];
    for (user, cause) in [
        (Inst::Ecall, Exception::EcallFromU),
        (csr(CsrOp::Rs, 6, 0, csr::MSTATUS), Exception::IllegalInstruction),
        (Inst::Mret, Exception::IllegalInstruction),
        (Inst::Wfi, Exception::IllegalInstruction),
        (csr(CsrOp::Rs, 6, 0, csr::CYCLE), Exception::IllegalInstruction),
    ] {
        let mut machine = Machine::new(&program, &handler);
        let at = (user_code - RAM_BASE) as usize;
        machine.backing[at..at + 4].copy_from_slice(&isa::encode(&user).to_le_bytes());
        let (hart, _) = machine.run(12);
        assert_eq!(hart.privilege, Privilege::Machine, "{user:?}");
        assert_eq!(hart.x[20], cause as u64, "{user:?}");
        assert_eq!(hart.x[21], user_code, "{user:?}");
        assert_eq!(hart.csrs.mstatus & csr::mstatus::MPP, 0, "MPP records U for {user:?}");
    }
}

#[test]
fn self_modifying_code_runs_the_new_instruction_on_every_engine() {
    let new_body = isa::encode(&li(7, 2));
    let program = [
        Inst::Auipc { rd: 5, imm: 0 },
        lui(6, new_body & !0xfff),
        Inst::OpImm { op: OpImmKind::Addi, rd: 6, rs1: 6, imm: (new_body & 0xfff) as i32 },
        Inst::Jal { rd: 1, offset: 16 },
        Inst::Op { op: trapeze::isa::OpKind::Add, rd: 9, rs1: 7, rs2: 0 },
        // Overwrite the subroutine's body, which both engines have already run (and one has cached).
        Inst::Store { width: StoreWidth::W, rs1: 5, rs2: 6, offset: 28 },
        Inst::Jal { rd: 1, offset: 4 },
        li(7, 1),
        Inst::Jalr { rd: 0, rs1: 1, offset: 0 },
    ];
    assert!(new_body & 0x800 == 0, "the low part of the word must not sign-extend");
    let mut interpreted = Machine::new(&program, &[PARK]);
    let (reference, _) = interpreted.run(40);
    let mut threaded = Machine::new(&program, &[PARK]);
    let (fast, _) = threaded.run_on(&mut Threaded::<256, 16, 32>::new(), 40);
    for hart in [&reference, &fast] {
        assert_eq!(hart.x[9], 1, "the first call ran the original instruction");
        assert_eq!(hart.x[7], 2, "the second call ran the stored one");
    }
    assert_eq!(reference, fast);
}

#[test]
fn user_mode_without_a_pmp_entry_cannot_fetch() {
    let program = [Inst::Auipc { rd: 5, imm: 0 }, csr(CsrOp::Rw, 0, 5, csr::MEPC), Inst::Mret];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(5);
    assert_eq!(hart.csrs.mcause, Exception::InstructionAccessFault as u64);
    assert_eq!(hart.csrs.mepc, RAM_BASE);
    assert_eq!(hart.csrs.mstatus & csr::mstatus::MPP, 0, "the fault came from U-mode");
}

#[test]
fn a_handler_that_traps_forever_still_ends_at_the_limit() {
    // mtvec points at an illegal instruction: every step is a trap and nothing retires.
    let mut machine = Machine::new(&[Inst::Illegal(0)], &[Inst::Illegal(0)]);
    let (hart, outcome) = machine.run(10_000);
    assert_eq!(outcome, RunOutcome::InstructionLimit);
    assert_eq!(hart.instret, 0);
}

#[test]
fn x0_stays_zero_and_branches_compare_signed_and_unsigned() {
    let program = [
        li(0, 5),
        li(5, -1),
        li(6, 1),
        Inst::Branch { cond: BranchCond::Lt, rs1: 5, rs2: 6, offset: 8 },
        li(7, 1), // skipped: -1 < 1 signed
        Inst::Branch { cond: BranchCond::Ltu, rs1: 5, rs2: 6, offset: 8 },
        li(8, 1), // executed: 0xfff.. is not below 1 unsigned
        PARK,
    ];
    let mut machine = Machine::new(&program, &[PARK]);
    let (hart, _) = machine.run(20);
    assert_eq!(hart.x[0], 0);
    assert_eq!(hart.x[7], 0);
    assert_eq!(hart.x[8], 1);
}

mod hostile {
    //! Random instruction streams, in every privilege mode and with paging on over random page tables, must
    //! never panic or hang the VMM: whatever they do ends in traps the guest sees.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        fn random_guests_never_panic_the_vmm_property(
            words in proptest::collection::vec(any::<u32>(), 1024),
            mode in 0u8..3,
            paging in any::<bool>(),
            status in any::<u64>(),
        ) {
            RANDOM_GUESTS_NEVER_PANIC_THE_VMM.add(1);
            let reference = run_random_guest(&words, mode, paging, status, &mut Interpreter);
            let fast = run_random_guest(&words, mode, paging, status, &mut Threaded::<1024, 64, 128>::new());
            prop_assert_eq!(reference, fast, "the engines agree on hostile code");
        }
    }

    /// The hostile inputs the property `random_guests_never_panic_the_vmm` tried (`target/isolation.txt`).
    static RANDOM_GUESTS_NEVER_PANIC_THE_VMM: crate::isolation::Tally =
        crate::isolation::Tally::panics("random-instruction guests");

    #[test]
    fn random_guests_never_panic_the_vmm() {
        RANDOM_GUESTS_NEVER_PANIC_THE_VMM.run(random_guests_never_panic_the_vmm_property);
    }

    /// Runs 20,000 steps of RAM filled with `words` on `engine`; returns the hart and how the run ended.
    fn run_random_guest(
        words: &[u32],
        mode: u8,
        paging: bool,
        status: u64,
        engine: &mut impl Engine,
    ) -> (Hart, RunOutcome, u64) {
        let mut backing = vec![0u8; 0x10000];
        for (index, word) in words.iter().enumerate() {
            // Fill RAM with the random words, repeated.
            for copy in 0..(backing.len() / 4096) {
                let at = copy * 4096 + 4 * index;
                backing[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
        let mut scratch = Scratch::default();
        let mut devices: VirtDevices<NullSerial> = VirtDevices::new(NullSerial);
        devices.extra.map(DEVICE_BASE, 0x100, &mut scratch).unwrap();
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        // Open all memory to S and U, let traps land in the random code, and maybe turn paging on with the
        // root table somewhere in the random RAM.
        hart.write_csr(csr::PMPADDR0, u64::MAX).unwrap();
        hart.write_csr(csr::PMPCFG0, 0x1f).unwrap();
        hart.write_csr(csr::MTVEC, RAM_BASE + 0x100).unwrap();
        hart.write_csr(csr::STVEC, RAM_BASE + 0x200).unwrap();
        hart.write_csr(csr::MSTATUS, status).unwrap();
        hart.write_csr(csr::MEDELEG, status >> 16).unwrap();
        if paging {
            hart.write_csr(csr::SATP, (8 << 60) | ((RAM_BASE >> 12) + (status & 0xf))).unwrap();
        }
        hart.privilege = [Privilege::User, Privilege::Supervisor, Privilege::Machine][mode as usize];
        let mut clock = FixedClock(0);
        let mut code_pages = [0u64; 1];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        ram.attach_code_watch(&mut code_pages);
        let mut vm = Vm::new([hart], ram, devices, &mut clock).unwrap();
        let outcome = vm.run(engine, Some(20_000));
        (vm.harts[0].clone(), outcome, vm.steps)
    }
}
