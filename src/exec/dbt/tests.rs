//! The translator against the reference interpreter: hand-written programs (self-modifying code, faults, device
//! accesses, budgets) and random ones, in M-mode (the RAM window) and in S-mode under Sv39 (the inlined soft TLB).

use super::*;
use crate::exec::interp::Interpreter;
use crate::hart::{Exception, HartConfig, Privilege};
use crate::isa::{csr, encode, BranchCond, Inst, LoadWidth, OpImmKind, OpKind, StoreWidth};
use crate::mem::mmu::{Tlb, VmRealMap};
use crate::mem::sv39::{make_pte, PteFlags, Satp, SATP_MODE_SV39};
use crate::mem::{code_watch_words, Ram, RAM_BASE};
use proptest::prelude::*;
use std::vec::Vec;

/// Anonymous memory mapped read+execute, made writable only inside `write` (the test's `CodeMemory`).
struct TestCode {
    base: *mut u8,
    len: usize,
}

// mmap/mprotect of the test's code memory.
#[allow(unsafe_code)]
impl TestCode {
    fn new(len: usize) -> Self {
        // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel chooses; nothing else
        // refers to it.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Self { base: base.cast(), len }
    }

    fn protect(&self, first: usize, bytes: usize, protection: i32) -> Result<(), CodeMemoryError> {
        // SAFETY: `[first, first + bytes)` is whole pages inside the mapping made in `new`.
        let result = unsafe { libc::mprotect(self.base.add(first).cast(), bytes, protection) };
        if result == 0 {
            Ok(())
        } else {
            Err(CodeMemoryError::Protection)
        }
    }
}

// munmap.
#[allow(unsafe_code)]
impl Drop for TestCode {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

// The test's code memory vouches for the `CodeMemory` contract.
#[allow(unsafe_code)]
// SAFETY: the mapping lives as long as the value; it is RX except inside `write`, which makes the pages it
// writes RW, copies and makes them RX again (x86-64 keeps the instruction stream coherent with stores).
unsafe impl CodeMemory for TestCode {
    fn base(&self) -> usize {
        self.base as usize
    }

    fn len(&self) -> usize {
        self.len
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= self.len).ok_or(CodeMemoryError::OutOfRange)?;
        let first = offset & !4095;
        let last = (end + 4095) & !4095;
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: the destination lies inside the mapping, writable now; the source is a distinct slice.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) };
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_EXEC)
    }
}

type TestDbt = Dbt<TestCode, { 1 << 20 }, 256, 512>;

/// A translator that translates every block at once (no interpreted warm-up), so the tests run translated code.
fn engine() -> Box<TestDbt> {
    let mut engine = Box::new(TestDbt::new(TestCode::new(1 << 20)).unwrap());
    engine.set_translation_threshold(0);
    engine
}

const RAM_SIZE: usize = 0x20000;
/// Where the data pointer x10 points.
const DATA: u64 = RAM_BASE + 0x8000;
/// Sv39 root table (S-mode runs): one gigapage identity-maps RAM.
const ROOT: u64 = RAM_BASE + 0x10000;

/// One machine: RAM with a code watch, a hart, its TLB.
struct Machine {
    backing: Vec<u8>,
    watch: Vec<u64>,
    hart: Hart,
    tlb: Tlb,
}

impl Machine {
    fn new(program: &[u8], supervisor: bool) -> Self {
        let mut backing = vec![0u8; RAM_SIZE];
        backing[..program.len()].copy_from_slice(program);
        for (index, byte) in backing[0x8000..0x9000].iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37) ^ 0x5a;
        }
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        hart.reset(RAM_BASE);
        // Mixed signs, magnitudes and small values (shift amounts, divisors of -1 and 0 come from the program).
        for r in 1..32 {
            let value = match r % 4 {
                0 => (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                1 => (r as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(r),
                2 => r as u64 * 3,
                _ => (r as i64 - 16) as u64,
            };
            hart.set_x(r as u8, value);
        }
        hart.set_x(9, 0x1000_0000);
        hart.set_x(10, DATA);
        hart.set_x(11, RAM_BASE);
        if supervisor {
            let flags = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X;
            let pte = make_pte(RAM_BASE >> 12, flags);
            let slot = (ROOT - RAM_BASE) as usize + 8 * ((RAM_BASE >> 30) as usize & 0x1ff);
            backing[slot..slot + 8].copy_from_slice(&pte.to_le_bytes());
            hart.write_csr(csr::PMPADDR0, u64::MAX >> 10).unwrap();
            hart.write_csr(csr::PMPCFG0, 0x1f).unwrap();
            hart.csrs.satp = Satp::new(SATP_MODE_SV39, 3, ROOT >> 12).0;
            hart.privilege = Privilege::Supervisor;
        }
        Self { backing, watch: vec![0u64; code_watch_words(RAM_SIZE as u64)], hart, tlb: Tlb::new() }
    }

    fn run(&mut self, engine: &mut impl Engine, budget: u64) -> Exit {
        let watched = self.watch.clone();
        let mut ram = Ram::new(RAM_BASE, &mut self.backing);
        ram.attach_granular_code_watch(&mut self.watch);
        // The watch lives on between runs, as a VM's RAM stays attached (attaching clears it): watch the same
        // granules again.
        let pages = RAM_SIZE as u64 / 4096;
        let (page_bits, granules) = watched.split_at(pages.div_ceil(64) as usize);
        for page in (0..pages).filter(|page| page_bits[(page / 64) as usize] & (1 << (page % 64)) != 0) {
            for granule in (0..64).filter(|granule| granules[page as usize] & (1 << granule) != 0) {
                ram.watch_code(page * 4096 + granule * 64, 64);
            }
        }
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut self.tlb };
        engine.run(&mut self.hart, &mut memory, budget)
    }
}

fn bytes(program: &[Inst]) -> Vec<u8> {
    program.iter().flat_map(|inst| encode(inst).to_le_bytes()).collect()
}

/// Runs `program` on both engines in turns of `budgets` (cycled, 40 turns at most), comparing exits, harts and
/// RAM after each. A tiny dispatcher, the same for both, serves exits: a device load reads 0x42, a device
/// store is dropped, a CSR access or an exception is skipped; `ecall`, or a pc outside RAM, ends the run.
/// Returns the translator's machine.
fn lockstep(program: &[u8], supervisor: bool, budgets: &[u64]) -> (Machine, Box<TestDbt>) {
    lockstep_translating_at(program, supervisor, budgets, 0)
}

/// [`lockstep`] with blocks translated at their `threshold`th entry, on the cold tier until then.
fn lockstep_translating_at(
    program: &[u8],
    supervisor: bool,
    budgets: &[u64],
    threshold: u16,
) -> (Machine, Box<TestDbt>) {
    let mut fast = Machine::new(program, supervisor);
    let mut reference = Machine::new(program, supervisor);
    let mut dbt = engine();
    dbt.set_translation_threshold(threshold);
    for (turn, &budget) in budgets.iter().cycle().take(40).enumerate() {
        let exit = fast.run(&mut *dbt, budget);
        let expected = reference.run(&mut Interpreter, budget);
        assert_eq!(exit, expected, "exit of turn {turn}");
        assert_eq!(fast.hart, reference.hart, "hart after turn {turn}");
        assert!(fast.backing == reference.backing, "RAM after turn {turn}");
        let go_on = [&mut fast, &mut reference].map(|machine| machine.serve(exit));
        if !go_on[0] {
            break;
        }
    }
    (fast, dbt)
}

impl Machine {
    /// A locked PMP entry over the data's page with no permission: M-mode loads from it fault, and M-mode has no
    /// RAM window any more.
    fn lock_data_page(&mut self) {
        self.hart.write_csr(csr::PMPADDR0, DATA >> 2 | 0x1ff).unwrap();
        self.hart.write_csr(csr::PMPCFG0, 0x98).unwrap();
    }

    /// The test's dispatcher: whether the run goes on after `exit`.
    fn serve(&mut self, exit: Exit) -> bool {
        let hart = &mut self.hart;
        let Some(offset) = hart.pc.checked_sub(RAM_BASE).filter(|&offset| offset + 4 <= RAM_SIZE as u64) else {
            return false;
        };
        let len = if self.backing[offset as usize] & 3 == 3 { 4 } else { 2 };
        match exit {
            Exit::BudgetExhausted => return true,
            Exit::Mmio(access) => {
                if let crate::trap::MmioKind::Load { rd, .. } = access.kind {
                    hart.set_x(rd, 0x42);
                }
            }
            Exit::Exception { cause: Exception::EcallFromM | Exception::EcallFromS, .. } => return false,
            Exit::Exception { .. } | Exit::System { .. } => {}
            Exit::Debug(_) => return false,
        }
        hart.pc += len;
        hart.instret += 1;
        true
    }
}

fn addi(rd: u8, rs1: u8, imm: i32) -> Inst {
    Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm }
}

/// A loop of arithmetic, loads and stores runs on translated code and agrees with the interpreter, whole and
/// in turns that end inside blocks.
#[test]
fn a_loop_agrees_with_the_interpreter() {
    let program = [
        addi(5, 0, 100),
        Inst::Load { width: LoadWidth::D, rd: 6, rs1: 10, offset: 8 },
        Inst::Op { op: OpKind::Mul, rd: 6, rs1: 6, rs2: 5 },
        Inst::Op { op: OpKind::Div, rd: 7, rs1: 6, rs2: 5 },
        Inst::Op { op: OpKind::Remu, rd: 8, rs1: 6, rs2: 0 },
        Inst::Store { width: StoreWidth::W, rs1: 10, rs2: 6, offset: 16 },
        Inst::Load { width: LoadWidth::Hu, rd: 9, rs1: 10, offset: 17 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -28 },
        Inst::Ecall,
    ];
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[10_000]);
        assert_eq!(machine.hart.x(5), 0);
        // The loop's blocks are chained: the dispatcher enters translated code a few times, not once a round.
        let stats = dbt.stats();
        assert!(stats.links >= 1 && stats.blocks_entered < 10, "{stats:?}");
        lockstep(&bytes(&program), supervisor, &[7, 3, 64, 1, 5, 100, 13, 1000, 10_000]);
    }
}

/// A store into code the block itself runs drops the translation: the new instruction runs next time.
#[test]
fn self_modifying_code_runs_the_new_instructions() {
    let patched = encode(&addi(6, 6, 100));
    let program = [
        // x7 = the new instruction's word (lui + addi), x5 = 3 rounds.
        Inst::Lui { rd: 7, imm: ((patched as i32).wrapping_add(0x800) as u32 & 0xffff_f000) as i32 },
        addi(7, 7, ((patched << 20) as i32) >> 20),
        addi(5, 0, 3),
        // Loop: x6 += 1 (patched to x6 += 100 in the first round), then store over it.
        addi(6, 6, 1),
        Inst::Store { width: StoreWidth::W, rs1: 11, rs2: 7, offset: 12 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ];
    // Translated at once, or written while the loop is still on the cold tier.
    for (supervisor, threshold) in [(false, 0), (true, 0), (false, 2), (true, 2)] {
        let (machine, dbt) = lockstep_translating_at(&bytes(&program), supervisor, &[1000], threshold);
        assert_eq!(machine.hart.x(6), 18 + 201, "from 18: one old round, two new ones");
        assert!(dbt.stats().pages_invalidated >= 1);
    }
}

/// A loop that stores its counter on its own page stays translated: with a granular code watch the store is data
/// (QEMU drops the page's translations at every such store), while stores into code still count (above).
#[test]
fn data_beside_code_keeps_its_translation() {
    let program = [
        addi(5, 0, 1000),
        addi(6, 6, 1),
        Inst::Store { width: StoreWidth::D, rs1: 11, rs2: 6, offset: 0x400 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ];
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[5000]);
        assert_eq!(machine.hart.x(6), 18 + 1000, "from 18, a thousand rounds");
        let stats = dbt.stats();
        assert_eq!(stats.pages_invalidated, 0, "{stats:?}");
        assert!(stats.blocks_translated <= 3, "{stats:?}");
    }
}

/// Faults and device accesses leave with the interpreter's exit, at the instruction, with `instret` exact.
#[test]
fn faults_and_device_accesses_leave_precisely() {
    let cases: [&[Inst]; 4] = [
        &[
            addi(5, 0, 1),
            Inst::Lui { rd: 6, imm: 0x1000_0000 },
            Inst::Load { width: LoadWidth::B, rd: 7, rs1: 6, offset: 5 },
        ],
        &[
            addi(5, 0, 1),
            Inst::Lui { rd: 6, imm: 0x1000_0000 },
            Inst::Store { width: StoreWidth::B, rs1: 6, rs2: 5, offset: 0 },
        ],
        &[addi(5, 0, 1), Inst::Load { width: LoadWidth::D, rd: 7, rs1: 0, offset: 64 }],
        &[addi(5, 0, 1), Inst::Illegal(0), addi(5, 0, 2)],
    ];
    for program in cases {
        for supervisor in [false, true] {
            let (machine, _) = lockstep(&bytes(program), supervisor, &[100]);
            assert!(machine.hart.instret >= 1);
        }
    }
}

/// An instruction word for the random programs: real encodings of the translated subset (memory accesses
/// based on x10, the data pointer, x11, the code, and now and then x9, a device, or x12, anywhere), and raw
/// 16-bit parcels (RVC, or whatever they decode to).
fn instruction() -> impl Strategy<Value = Vec<u8>> {
    let reg = 0u8..16;
    let dest = prop_oneof![0u8..9, 13u8..16];
    let base = prop_oneof![8 => 10u8..12, 1 => 9u8..10, 1 => 12u8..13];
    let op_imm = (0..OpImmKind::ALL.len(), dest.clone(), reg.clone(), -2048i32..2048).prop_map(|(k, rd, rs1, imm)| {
        let op = OpImmKind::ALL[k];
        let imm = match op {
            OpImmKind::Slli | OpImmKind::Srli | OpImmKind::Srai => imm & 63,
            OpImmKind::Slliw | OpImmKind::Srliw | OpImmKind::Sraiw => imm & 31,
            _ => imm,
        };
        Inst::OpImm { op, rd, rs1, imm }
    });
    let op = (0..OpKind::ALL.len(), dest.clone(), reg.clone(), reg.clone()).prop_map(|(k, rd, rs1, rs2)| Inst::Op {
        op: OpKind::ALL[k],
        rd,
        rs1,
        rs2,
    });
    let upper = (any::<bool>(), dest.clone(), any::<i32>()).prop_map(|(lui, rd, imm)| {
        if lui {
            Inst::Lui { rd, imm: imm & !0xfff }
        } else {
            Inst::Auipc { rd, imm: imm & !0xfff }
        }
    });
    let load = (0..LoadWidth::ALL.len(), dest.clone(), base.clone(), -64i32..64)
        .prop_map(|(w, rd, rs1, offset)| Inst::Load { width: LoadWidth::ALL[w], rd, rs1, offset });
    let store = (0..StoreWidth::ALL.len(), base, reg.clone(), -64i32..256)
        .prop_map(|(w, rs1, rs2, offset)| Inst::Store { width: StoreWidth::ALL[w], rs1, rs2, offset });
    let branch = (0..BranchCond::ALL.len(), reg.clone(), reg.clone(), -32i32..32)
        .prop_map(|(c, rs1, rs2, offset)| Inst::Branch { cond: BranchCond::ALL[c], rs1, rs2, offset: offset * 4 });
    let jump = (dest.clone(), -16i32..16).prop_map(|(rd, offset)| Inst::Jal { rd, offset: offset * 4 });
    // Calls into the program (through x11, the code: x1 and x5 then hold return addresses), returns through x1
    // or x5 (to where a call went from, or anywhere else they hold), other indirect jumps.
    let link = prop_oneof![Just(0u8), Just(1u8), Just(5u8)];
    let call = (link.clone(), 0i32..48).prop_map(|(rd, at)| Inst::Jalr { rd, rs1: 11, offset: at * 4 });
    let ret = (prop_oneof![Just(1u8), Just(5u8)], prop_oneof![4 => Just(0i32), 1 => -8i32..8])
        .prop_map(|(rs1, offset)| Inst::Jalr { rd: 0, rs1, offset });
    let indirect = (link, reg.clone(), -8i32..8).prop_map(|(rd, rs1, offset)| Inst::Jalr { rd, rs1, offset });
    let word = prop_oneof![
        4 => op_imm, 4 => op, 1 => upper, 2 => load, 2 => store, 2 => branch, 1 => jump, 1 => call, 1 => ret,
        1 => indirect,
    ]
    .prop_map(|inst| encode(&inst).to_le_bytes().to_vec());
    let parcel = any::<u16>().prop_filter("compressed", |p| p & 3 != 3).prop_map(|p| p.to_le_bytes().to_vec());
    prop_oneof![8 => word, 1 => parcel]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random programs (straight-line code, loops, stores into data and into the code itself, RVC parcels,
    /// faults) run identically on the translator and the interpreter, in M-mode and in S-mode under Sv39, in
    /// turns of random budgets, translated at once or after a few entries on the cold tier (so blocks move
    /// between the tiers, and code written while cold or hot is dropped from both).
    #[test]
    fn random_programs_agree_with_the_interpreter(
        program in proptest::collection::vec(instruction(), 1..48),
        supervisor in any::<bool>(),
        budgets in proptest::collection::vec(1u64..200, 1..8),
        threshold in prop_oneof![Just(0u16), 1u16..4],
    ) {
        let mut code: Vec<u8> = program.concat();
        code.extend_from_slice(&encode(&Inst::Ecall).to_le_bytes());
        lockstep_translating_at(&code, supervisor, &budgets, threshold);
    }
}

/// By default a block runs on the cold tier for its first entries and is translated once it is hot.
#[test]
fn cold_blocks_run_on_the_cold_tier_until_hot() {
    let rounds = HOT as i32 + 500;
    let program = [
        Inst::Lui { rd: 5, imm: (rounds + 0x800) & !0xfff },
        addi(5, 5, (rounds << 20) >> 20),
        addi(6, 6, 3),
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -8 },
        Inst::Ecall,
    ];
    let budget = 4 * rounds as u64;
    let mut fast = Machine::new(&bytes(&program), false);
    let mut reference = Machine::new(&bytes(&program), false);
    let mut dbt = Box::new(TestDbt::new(TestCode::new(1 << 20)).unwrap());
    assert_eq!(fast.run(&mut *dbt, budget), reference.run(&mut Interpreter, budget));
    assert_eq!(fast.hart, reference.hart);
    assert_eq!(fast.hart.x(6), 18 + 3 * rounds as u64, "every round ran");
    let stats = dbt.stats();
    assert_eq!(stats.blocks_translated, 1, "only the loop: {stats:?}");
    assert!(stats.cold_instructions >= HOT as u64 && stats.blocks_entered >= 1, "{stats:?}");
}

/// 300 rounds of a 7-instruction loop with a load and a store, after one instruction of set-up, then `ecall`.
fn load_store_loop() -> [Inst; 9] {
    [
        addi(5, 0, 300),
        addi(6, 6, 3),
        Inst::Op { op: OpKind::Xor, rd: 7, rs1: 7, rs2: 6 },
        Inst::Load { width: LoadWidth::D, rd: 8, rs1: 10, offset: 8 },
        Inst::Op { op: OpKind::Add, rd: 7, rs1: 7, rs2: 8 },
        Inst::Store { width: StoreWidth::D, rs1: 10, rs2: 7, offset: 24 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -24 },
        Inst::Ecall,
    ]
}

/// Budgets that end inside translated blocks: the tail runs on the cold tier and the next run finishes the block
/// there, nothing is stepped by the interpreter and no block is translated from inside another.
#[test]
fn budgets_ending_inside_blocks_run_on_the_cold_tier() {
    let program = load_store_loop();
    for supervisor in [false, true] {
        // 40 turns of 57 instructions in five: 65 rounds.
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[7, 13, 29, 5, 3]);
        assert!(machine.hart.x(5) < 300 - 60, "rounds ran: {}", machine.hart.x(5));
        let stats = dbt.stats();
        assert_eq!(stats.stepped, 0, "{stats:?}");
        assert_eq!(stats.blocks_translated, 2, "the entry and the loop: {stats:?}");
        assert!(stats.cold_instructions > 0 && stats.blocks_entered > 0, "{stats:?}");
    }
}

/// With budget overrun allowed, a budget ending inside a translated block runs that block whole and stops after
/// it: nothing on the cold tier, at most one block's instructions past the budget, and the same hart as the
/// interpreter's after as many instructions.
#[test]
fn with_overrun_a_budget_ending_inside_a_block_runs_the_block_whole() {
    let program = load_store_loop();
    for supervisor in [false, true] {
        let mut fast = Machine::new(&bytes(&program), supervisor);
        let mut reference = Machine::new(&bytes(&program), supervisor);
        let mut dbt = engine();
        dbt.set_budget_overrun(true);
        // The loop's block is 7 instructions: budgets of 3 end inside it every time.
        for turn in 0..60 {
            let before = fast.hart.instret;
            assert_eq!(fast.run(&mut *dbt, 3), Exit::BudgetExhausted, "turn {turn}");
            let ran = fast.hart.instret - before;
            assert!((3..3 + 7).contains(&ran), "turn {turn} ran {ran} instructions");
            assert_eq!(reference.run(&mut Interpreter, ran), Exit::BudgetExhausted);
            assert_eq!(fast.hart, reference.hart, "turn {turn}");
        }
        assert!(fast.backing == reference.backing);
        let stats = dbt.stats();
        assert_eq!((stats.cold_instructions, stats.cold_tails, stats.stepped), (0, 0, 0), "{stats:?}");
    }
}

/// The test's dispatcher for CSR accesses: the real one, on a machine without devices.
struct NoDevices;

impl crate::trap::Platform for NoDevices {
    fn mmio_read(&mut self, _addr: u64, _size: u8) -> Result<u64, crate::dev::MmioError> {
        Err(crate::dev::MmioError::Unsupported)
    }
    fn mmio_write(
        &mut self,
        _addr: u64,
        _size: u8,
        _value: u64,
    ) -> Result<Option<crate::dev::MachineRequest>, crate::dev::MmioError> {
        Err(crate::dev::MmioError::Unsupported)
    }
    fn time(&mut self) -> u64 {
        0
    }
}

/// Runs `machine` on `engine` to its `ecall`, the dispatcher serving every other exit: the exits it took.
fn exits_to_ecall(machine: &mut Machine, engine: &mut impl Engine) -> u64 {
    for exits in 0..1000 {
        match machine.run(engine, 1 << 16) {
            Exit::Exception { cause: Exception::EcallFromS, .. } => return exits,
            exit => {
                let resume = crate::trap::Dispatcher::new().dispatch(exit, &mut machine.hart, &mut NoDevices);
                assert_eq!(resume, crate::trap::Resume::Continue, "{exit:?}");
            }
        }
    }
    panic!("no ecall");
}

/// Linux's `local_irq_save`/`local_irq_restore` in a loop, in S-mode: with CSR accesses served inline
/// ([`InlineCsr`]) the translated code never leaves for them, yet ends where the interpreter, leaving for each,
/// does; a `csrw` of `sscratch` still leaves; and with an interrupt pending and enabled in `sie`, the restore
/// that would make it takeable leaves too.
#[test]
fn interrupt_toggles_are_served_without_leaving() {
    use crate::isa::csr::{interrupt, mstatus};
    use crate::isa::CsrOp;
    let sie = mstatus::SIE as u8;
    let program = [
        addi(5, 0, 200),
        Inst::Csr { op: CsrOp::Rci, rd: 6, src: sie, csr: csr::SSTATUS },
        Inst::OpImm { op: OpImmKind::Andi, rd: 6, rs1: 6, imm: sie as i32 },
        addi(7, 7, 1),
        Inst::Csr { op: CsrOp::Rs, rd: 0, src: 6, csr: csr::SSTATUS },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -20 },
        Inst::Csr { op: CsrOp::Rw, rd: 0, src: 7, csr: csr::SSCRATCH },
        Inst::Ecall,
    ];
    for pending in [false, true] {
        let mut fast = Machine::new(&bytes(&program), true);
        fast.hart.csrs.mstatus |= mstatus::SIE;
        fast.hart.csrs.mideleg = interrupt::STI;
        if pending {
            // (No interrupt is taken here: only the engine runs.)
            fast.hart.csrs.mie = interrupt::STI;
            fast.hart.csrs.mip = interrupt::STI;
        }
        let mut reference = Machine::new(&bytes(&program), true);
        reference.hart = fast.hart.clone();
        let counter = fast.hart.x(7);
        let mut dbt = engine();
        dbt.serve_csr_inline(Some(InlineCsr::WITHOUT_TIME));
        let exits = exits_to_ecall(&mut fast, &mut *dbt);
        let reference_exits = exits_to_ecall(&mut reference, &mut Interpreter);
        assert_eq!(fast.hart, reference.hart);
        assert_eq!(fast.hart.x(7), counter.wrapping_add(200), "every round ran");
        assert_eq!(reference_exits, 2 * 200 + 1, "the interpreter leaves for each CSR access");
        match pending {
            false => assert_eq!(exits, 1, "only the sscratch write leaves"),
            true => assert_eq!(exits, 200 + 1, "each restore of SIE would make the interrupt takeable"),
        }
    }
}

/// The fake host clock of [`time_reads_are_served_inline_within_the_window`]: one tick per look.
static FAKE_TICKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1_000_000);

fn fake_clock() -> u64 {
    FAKE_TICKS.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// With a time window, `time` reads are served inline from the live clock, going on from the VM's time at the
/// run's start and never back, until the window's end; past it they leave. Without a window, `WITHOUT_TIME`
/// lets every one leave.
#[test]
fn time_reads_are_served_inline_within_the_window() {
    use crate::isa::CsrOp;
    let program = [
        addi(5, 0, 100),
        Inst::Csr { op: CsrOp::Rs, rd: 6, src: 0, csr: csr::TIME },
        Inst::Op { op: OpKind::Sub, rd: 8, rs1: 6, rs2: 7 },
        Inst::Op { op: OpKind::Or, rd: 9, rs1: 9, rs2: 8 },
        addi(7, 6, 0),
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -20 },
        Inst::Ecall,
    ];
    let live = InlineCsr { clock: fake_clock, offset: 0, until: 0 };
    for (reads, window, leaves) in [(live, 1_000_000, false), (live, 10, true), (InlineCsr::WITHOUT_TIME, 0, true)] {
        let mut machine = Machine::new(&bytes(&program), true);
        (machine.hart.x[7], machine.hart.x[9]) = (5000, 0);
        // S-mode may read `time`.
        machine.hart.csrs.mcounteren = 0b10;
        let mut dbt = engine();
        dbt.serve_csr_inline(Some(reads));
        dbt.set_time_window(window);
        dbt.set_guest_time(5000);
        let exits = exits_to_ecall(&mut machine, &mut *dbt);
        assert_eq!(exits > 0, leaves, "window {window}: {exits} exits");
        if !leaves {
            // Every read at or after the VM's 5000 and after the one before: no difference was negative.
            assert_eq!(machine.hart.x(9) >> 63, 0, "time never went back");
            let served = dbt.take_time_served().expect("time was served");
            assert_eq!(served, machine.hart.x(6));
            assert!((5000..5000 + 200).contains(&served), "{served}: goes on from the VM's time");
        }
    }
}

/// A toggle served inline that straddles a page ends its block, which takes its next pc from the hart: the
/// toggle must leave it past itself (it once left it on itself, and the hart ran the toggle forever).
#[test]
fn a_toggle_served_inline_straddling_a_page_moves_on() {
    use crate::isa::csr::mstatus;
    use crate::isa::CsrOp;
    let back = Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: 0xff0 - 0x1002 };
    let toggle = Inst::Csr { op: CsrOp::Rci, rd: 8, src: mstatus::SIE as u8, csr: csr::SSTATUS };
    let program = straddling_loop(toggle, &[back, Inst::Ecall]);
    let mut fast = Machine::new(&program, true);
    let mut reference = Machine::new(&program, true);
    let mut dbt = engine();
    dbt.serve_csr_inline(Some(InlineCsr::WITHOUT_TIME));
    assert_eq!(exits_to_ecall(&mut fast, &mut *dbt), 0, "every toggle served inline");
    exits_to_ecall(&mut reference, &mut Interpreter);
    assert_eq!(fast.hart, reference.hart);
    assert_eq!(fast.hart.x(5), 0, "every round ran");
}

/// The rest of a loop body longer than a block, entered from translated code each round, is translated after a
/// few hundred rounds (its round trips through the dispatcher count), not `HOT` divided by its length.
#[test]
fn a_short_block_translated_code_leaves_for_grows_hot_soon() {
    let body = MAX_BLOCK + 4;
    let mut program = vec![addi(5, 0, 1200)];
    program.extend((0..body).map(|_| addi(6, 6, 1)));
    program.push(addi(5, 5, -1));
    program.push(Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -4 * (body as i32 + 1) });
    program.push(Inst::Ecall);
    let budget = 1_000_000;
    let mut fast = Machine::new(&bytes(&program), false);
    let mut reference = Machine::new(&bytes(&program), false);
    let mut dbt = Box::new(TestDbt::new(TestCode::new(1 << 20)).unwrap());
    assert_eq!(fast.run(&mut *dbt, budget), reference.run(&mut Interpreter, budget));
    assert_eq!(fast.hart, reference.hart);
    assert_eq!(fast.hart.x(5), 0);
    let stats = dbt.stats();
    assert!(stats.blocks_translated >= 2, "the body's two blocks: {stats:?}");
    assert!(stats.cold_instructions < HOT as u64 + 1200 * 8, "{stats:?}");
}

/// A loop of `rounds` rounds through four blocks of one or two instructions each (x6 += 1 and x7 += 2 a round),
/// each block ending in a jump to the next: blocks that grow hot in the same round.
fn jumping_blocks(rounds: i32) -> [Inst; 9] {
    let jump = |rd| Inst::Jal { rd, offset: 4 };
    [
        addi(5, 0, rounds),
        jump(0),
        addi(6, 6, 1),
        jump(0),
        addi(7, 7, 2),
        jump(0),
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -20 },
        Inst::Ecall,
    ]
}

/// Blocks that grow hot together are translated together, their code written into code memory at once, and run
/// as the interpreter does.
#[test]
fn blocks_hot_together_are_written_together() {
    // Three blocks of two instructions a round each: they reach the threshold in the same round.
    let program = jumping_blocks(2000);
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep_translating_at(&bytes(&program), supervisor, &[100_000], 600);
        assert_eq!(machine.hart.x(6), 18 + 2000, "every round ran");
        let stats = dbt.stats();
        assert!(stats.blocks_translated >= 3, "{stats:?}");
        assert!(stats.code_writes < stats.blocks_translated, "{stats:?}");
        assert!(stats.cold_instructions < 6 * 400, "translated soon after the threshold: {stats:?}");
    }
}

/// Cold code runs on the cold tier from block to block without a round trip through the dispatcher per block,
/// and stops before a block once it is translated, which then runs translated.
#[test]
fn the_cold_tier_runs_on_through_cold_blocks() {
    // Four blocks a round, none hot by the end at the default threshold (6 instructions a round).
    let program = jumping_blocks(1000);
    let budget = 1_000_000;
    let mut fast = Machine::new(&bytes(&program), false);
    let mut reference = Machine::new(&bytes(&program), false);
    let mut dbt = Box::new(TestDbt::new(TestCode::new(1 << 20)).unwrap());
    assert_eq!(fast.run(&mut *dbt, budget), reference.run(&mut Interpreter, budget));
    assert_eq!(fast.hart, reference.hart);
    assert_eq!(fast.hart.x(6), 18 + 1000, "every round ran");
    let stats = dbt.stats();
    assert_eq!(stats.blocks_translated, 0, "{stats:?}");
    assert_eq!(stats.cold_instructions, 2 + 6 * 1000, "{stats:?}");
    // One cold run: blocks built and chained on the cold tier, none a round trip through the dispatcher.
    assert!(stats.cold_runs <= 2, "blocks chained on the cold tier: {stats:?}");
    // With a threshold the loop reaches, the cold tier hands the hot blocks over: they run translated, in
    // lockstep with the interpreter, over budgets that end anywhere.
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep_translating_at(&bytes(&program), supervisor, &[997, 13, 4096], 300);
        assert_eq!(machine.hart.x(5), 0, "every round ran");
        let stats = dbt.stats();
        assert!(stats.blocks_translated >= 3 && stats.blocks_entered > 0, "{stats:?}");
        assert!(stats.cold_instructions < 6 * 200, "translated soon after the threshold: {stats:?}");
    }
}

/// Places `program` at RAM offset `at` of `code`, growing it as needed.
fn place(code: &mut Vec<u8>, at: usize, program: &[Inst]) {
    let bytes = bytes(program);
    if code.len() < at + bytes.len() {
        code.resize(at + bytes.len(), 0);
    }
    code[at..at + bytes.len()].copy_from_slice(&bytes);
}

fn jalr(rd: u8, rs1: u8, offset: i32) -> Inst {
    Inst::Jalr { rd, rs1, offset }
}

/// `jalr x0, 0(ra)`.
const RET: Inst = Inst::Jalr { rd: 0, rs1: 1, offset: 0 };

/// Runs a translator machine and an interpreter one in turns of `budget` until `ecall`, comparing exits, harts
/// and RAM after each turn; `between` runs on both machines before every turn with the turn's number, `hook`
/// on the translator.
fn until_ecall<E: Engine>(
    fast: &mut Machine,
    reference: &mut Machine,
    dbt: &mut E,
    budget: u64,
    mut between: impl FnMut(&mut Machine, usize),
    mut hook: impl FnMut(&mut E, usize),
) {
    for turn in 0..100_000 {
        hook(dbt, turn);
        between(fast, turn);
        between(reference, turn);
        let exit = fast.run(dbt, budget);
        let expected = reference.run(&mut Interpreter, budget);
        assert_eq!(exit, expected, "exit of turn {turn}");
        assert_eq!(fast.hart, reference.hart, "hart after turn {turn}");
        assert!(fast.backing == reference.backing, "RAM after turn {turn}");
        if matches!(exit, Exit::Exception { cause: Exception::EcallFromM | Exception::EcallFromS, .. }) {
            return;
        }
        assert!(fast.serve(exit) && reference.serve(exit), "turn {turn} left with {exit:?}");
    }
    panic!("no ecall");
}

/// A loop calling a function in the next page through a register 300 times, which rewrites the function's first
/// instruction (`addi x6, x6, 1` into `addi x6, x6, 100`) after the 150th call: x6 ends 150 + 150 * 100 above
/// where it started.
fn rewritten_call() -> Vec<u8> {
    let patched = encode(&addi(6, 6, 100));
    let mut code = Vec::new();
    place(
        &mut code,
        0,
        &[
            Inst::Lui { rd: 7, imm: ((patched as i32).wrapping_add(0x800) as u32 & 0xffff_f000) as i32 },
            addi(7, 7, ((patched << 20) as i32) >> 20),
            // x5 = the function, in the next page.
            Inst::Lui { rd: 5, imm: 0x1000 },
            Inst::Op { op: OpKind::Add, rd: 5, rs1: 5, rs2: 11 },
            addi(8, 0, 300),
            addi(13, 0, 150),
            // Loop: call, count down; after the 150th call rewrite the function's first instruction.
            jalr(1, 5, 0),
            addi(8, 8, -1),
            Inst::Branch { cond: BranchCond::Ne, rs1: 8, rs2: 13, offset: 8 },
            Inst::Store { width: StoreWidth::W, rs1: 5, rs2: 7, offset: 0 },
            Inst::Branch { cond: BranchCond::Ne, rs1: 8, rs2: 0, offset: -16 },
            Inst::Ecall,
        ],
    );
    place(&mut code, 0x1000, &[addi(6, 6, 1), RET]);
    code
}

/// A function called through a register (`jalr`) whose code is rewritten runs its new code: the write drops
/// its block, and with it every target cache entry and prediction, so no jump reaches the old host code.
#[test]
fn an_indirect_call_target_rewritten_runs_the_new_code() {
    let code = rewritten_call();
    for supervisor in [false, true] {
        for budget in [100_000, 37] {
            let mut fast = Machine::new(&code, supervisor);
            let mut reference = Machine::new(&code, supervisor);
            let mut dbt = engine();
            until_ecall(&mut fast, &mut reference, &mut *dbt, budget, |_, _| {}, |_, _| {});
            assert_eq!(fast.hart.x(6), 18 + 150 + 150 * 100);
            let stats = dbt.stats();
            assert!(stats.pages_invalidated >= 1 && stats.unlink_alls >= 1, "{stats:?}");
            if budget > 1000 {
                // 600 calls and returns, nearly all of them without the dispatcher.
                assert!(stats.blocks_entered < 40 && stats.jump_fills >= 2, "{stats:?}");
            }
        }
    }
}

/// The Sv39 tables of two address spaces, each mapping RAM at its own address (a gigapage, as `Machine::new`
/// does) and virtual page `SWITCHED` to its own RAM page: root `ROOT` maps it to `PAGE_A`, root `ROOT_B` to
/// `PAGE_B` (a page whose soft TLB slot is not RAM's first page's, or the two would evict each other).
const ROOT_B: u64 = RAM_BASE + 0x11000;
const PAGE_A: usize = 0x16000;
const PAGE_B: usize = 0x17000;
const SWITCHED: u64 = 0x4000_5000;

fn map_two_spaces(backing: &mut [u8]) {
    let mut entry = |table: u64, index: u64, pte: u64| {
        let at = (table - RAM_BASE + 8 * index) as usize;
        backing[at..at + 8].copy_from_slice(&pte.to_le_bytes());
    };
    let all = PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X;
    entry(ROOT_B, RAM_BASE >> 30, make_pte(RAM_BASE >> 12, all));
    for (root, l1, l0, page) in [
        (ROOT, RAM_BASE + 0x12000, RAM_BASE + 0x13000, PAGE_A),
        (ROOT_B, RAM_BASE + 0x14000, RAM_BASE + 0x15000, PAGE_B),
    ] {
        entry(root, SWITCHED >> 30, make_pte(l1 >> 12, PteFlags::V));
        entry(l1, 0, make_pte(l0 >> 12, PteFlags::V));
        let leaf = make_pte((RAM_BASE + page as u64) >> 12, PteFlags::V | PteFlags::R | PteFlags::X);
        entry(l0, (SWITCHED >> 12) & 0x1ff, leaf);
    }
}

/// The same virtual pc mapped to other code after a `satp` change (with the TLB flushed as `sfence.vma` does,
/// or under another ASID) runs the new code, through the target cache (a call to it) and through a return
/// prediction (a return into it), and the first space's code again when it comes back.
#[test]
fn the_same_pc_in_two_address_spaces_runs_each_spaces_code() {
    let mut code = Vec::new();
    // Main: 200 calls of the switched page, then ecall.
    place(
        &mut code,
        0,
        &[
            Inst::Lui { rd: 5, imm: SWITCHED as i32 },
            Inst::Op { op: OpKind::Add, rd: 14, rs1: 5, rs2: 0 },
            addi(8, 0, 200),
            jalr(1, 14, 0),
            addi(8, 8, -1),
            Inst::Branch { cond: BranchCond::Ne, rs1: 8, rs2: 0, offset: -8 },
            Inst::Ecall,
        ],
    );
    // A shared function, called through x5 from the switched page, returning into it.
    place(&mut code, 0x700, &[addi(7, 7, 3), jalr(0, 5, 0)]);
    let switched = |add| [jalr(5, 11, 0x700), addi(6, 6, add), RET];
    place(&mut code, PAGE_A, &switched(1));
    place(&mut code, PAGE_B, &switched(100));
    for (asid_b, flush) in [(3, true), (4, false)] {
        let mut fast = Machine::new(&code, true);
        let mut reference = Machine::new(&code, true);
        for machine in [&mut fast, &mut reference] {
            map_two_spaces(&mut machine.backing);
        }
        let mut dbt = engine();
        let mut x6 = fast.hart.x(6);
        for (phase, (root, asid, add)) in [(ROOT, 3, 1), (ROOT_B, asid_b, 100), (ROOT, 3, 1)].into_iter().enumerate() {
            let switch = |machine: &mut Machine, turn| {
                if turn == 0 {
                    machine.hart.csrs.satp = Satp::new(SATP_MODE_SV39, asid, root >> 12).0;
                    if flush {
                        machine.tlb.flush_all();
                    }
                    machine.hart.pc = RAM_BASE;
                }
            };
            until_ecall(&mut fast, &mut reference, &mut *dbt, 1_000_000, switch, |_, _| {});
            x6 += 200 * add;
            assert_eq!(fast.hart.x(6), x6, "phase {phase}");
        }
        let stats = dbt.stats();
        assert!(stats.blocks_entered < 60, "calls and returns stay in translated code: {stats:?}");
    }
}

/// Blocks evicted (a code cache far too small for the working set) and every block dropped at once, with
/// target cache entries and predictions live: no jump reaches a block that is gone.
#[test]
fn eviction_and_full_flush_with_live_entries() {
    let mut code = Vec::new();
    place(
        &mut code,
        0,
        &[
            addi(8, 0, 40),
            // Outer: x5 = the first of 12 functions 0x100 apart from 0x1000 on; call each in turn.
            Inst::Lui { rd: 5, imm: 0x1000 },
            Inst::Op { op: OpKind::Add, rd: 5, rs1: 5, rs2: 11 },
            addi(13, 0, 12),
            jalr(1, 5, 0),
            addi(5, 5, 0x100),
            addi(13, 13, -1),
            Inst::Branch { cond: BranchCond::Ne, rs1: 13, rs2: 0, offset: -12 },
            addi(8, 8, -1),
            Inst::Branch { cond: BranchCond::Ne, rs1: 8, rs2: 0, offset: -32 },
            Inst::Ecall,
        ],
    );
    for function in 0..12 {
        place(&mut code, 0x1000 + 0x100 * function, &[addi(6, 6, function as i32 + 1), RET]);
    }
    for supervisor in [false, true] {
        // Eight blocks of room: the loop's blocks and the functions evict each other all the time.
        let mut fast = Machine::new(&code, supervisor);
        let mut reference = Machine::new(&code, supervisor);
        let mut small = Box::new(Dbt::<TestCode, 8192, 8, 16>::new(TestCode::new(1 << 20)).unwrap());
        small.set_translation_threshold(0);
        until_ecall(&mut fast, &mut reference, &mut *small, 1_000_000, |_, _| {}, |_, _| {});
        assert_eq!(fast.hart.x(6), 18 + 40 * 78);
        assert!(small.cache().stats().evictions > 10, "{:?}", small.cache().stats());
        // Every block dropped now and then between turns, as a full invalidation does.
        for budget in [500, 100] {
            let mut fast = Machine::new(&code, supervisor);
            let mut reference = Machine::new(&code, supervisor);
            let mut dbt = engine();
            let flush = |dbt: &mut TestDbt, turn| {
                if turn % 3 == 2 {
                    dbt.cache.invalidate_all();
                }
            };
            until_ecall(&mut fast, &mut reference, &mut *dbt, budget, |_, _| {}, flush);
            assert_eq!(fast.hart.x(6), 18 + 40 * 78);
            let stats = dbt.stats();
            assert!(stats.unlink_alls >= 2 && stats.jump_fills > stats.unlink_alls, "{stats:?}");
        }
    }
}

/// Returns to another pc than the call's return site (a function that moves its return address on odd rounds,
/// one that returns through the other link register) agree with the interpreter and stay in translated code.
#[test]
fn returns_elsewhere_than_predicted() {
    let mut code = Vec::new();
    place(
        &mut code,
        0,
        &[
            addi(8, 0, 100),
            // Loop: call F; F skips the next instruction on odd rounds.
            Inst::Jal { rd: 1, offset: 0x200 - 4 },
            addi(6, 6, 1),
            addi(7, 7, 1),
            // Call G through x5: G copies x5 to x1 and returns through x1.
            Inst::Jal { rd: 5, offset: 0x300 - 16 },
            addi(8, 8, -1),
            Inst::Branch { cond: BranchCond::Ne, rs1: 8, rs2: 0, offset: -20 },
            Inst::Ecall,
        ],
    );
    place(
        &mut code,
        0x200,
        &[
            Inst::OpImm { op: OpImmKind::Andi, rd: 13, rs1: 8, imm: 1 },
            Inst::Branch { cond: BranchCond::Eq, rs1: 13, rs2: 0, offset: 8 },
            addi(1, 1, 4),
            RET,
        ],
    );
    place(&mut code, 0x300, &[addi(15, 15, 2), addi(1, 5, 0), RET]);
    for supervisor in [false, true] {
        for budget in [1_000_000, 29] {
            let mut fast = Machine::new(&code, supervisor);
            let mut reference = Machine::new(&code, supervisor);
            let mut dbt = engine();
            let (x6, x7) = (fast.hart.x(6), fast.hart.x(7));
            until_ecall(&mut fast, &mut reference, &mut *dbt, budget, |_, _| {}, |_, _| {});
            assert_eq!((fast.hart.x(6), fast.hart.x(7)), (x6.wrapping_add(50), x7.wrapping_add(100)));
            if budget > 1000 {
                assert!(dbt.stats().blocks_entered < 40, "{:?}", dbt.stats());
            }
        }
    }
}

/// The translator counts the host instructions it emits and, with counting on, the straight-line host
/// instructions of every block entry (chained ones included); without it, none.
#[test]
fn host_instructions_are_counted() {
    let program = [
        addi(5, 0, 100),
        addi(6, 6, 3),
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -8 },
        Inst::Ecall,
    ];
    for counting in [false, true] {
        let mut machine = Machine::new(&bytes(&program), false);
        let mut dbt = engine();
        dbt.set_counting(counting);
        machine.run(&mut *dbt, 10_000);
        assert_eq!(machine.hart.x(5), 0);
        let stats = dbt.stats();
        assert!(stats.body_instructions >= 3 * stats.instructions_translated, "{stats:?}");
        assert!(stats.host_instructions > stats.body_instructions, "{stats:?}");
        if counting {
            // Two blocks: the first entered once, the loop's 99 times (all but the first through a link slot).
            assert!(stats.blocks_entered <= 3, "{stats:?}");
            assert!(stats.body_instructions_run >= 99 * 3 * 3, "{stats:?}");
            assert!(stats.body_instructions_run <= 100 * stats.body_instructions, "{stats:?}");
        } else {
            assert_eq!(stats.body_instructions_run, 0);
        }
    }
}

/// `lockstep` over a program, in M-mode and in S-mode, whole and in turns that stop at every instruction.
fn lockstep_both(program: &[Inst]) {
    for supervisor in [false, true] {
        lockstep(&bytes(program), supervisor, &[1000]);
        lockstep(&bytes(program), supervisor, &[1, 2, 3, 1, 5, 4, 7, 1000]);
    }
}

/// The block's held registers (x6 and x7, each named several times) are dirty when an instruction in the middle
/// of the block leaves or calls out: each way out must find them written back to `hart.x`, and the block must go
/// on with what the call left there.
#[test]
fn held_registers_are_written_back_wherever_the_block_leaves() {
    use crate::isa::{AmoOp, AmoWidth, CsrOp};
    let dirty = [
        addi(6, 6, 1),
        addi(7, 6, 2),
        Inst::Op { op: OpKind::Add, rd: 6, rs1: 6, rs2: 7 },
        addi(7, 7, -3),
        // x13 = the data page + 2040, so that 2045(x13) crosses into the next page.
        addi(13, 10, 2040),
    ];
    let after = [addi(6, 6, 5), Inst::Op { op: OpKind::Xor, rd: 7, rs1: 7, rs2: 6 }, addi(13, 13, 1), Inst::Ecall];
    let middles: [&[Inst]; 10] = [
        // A device load into a held register (M-mode: a device exit; S-mode: x9 is not mapped, a page fault).
        &[Inst::Load { width: LoadWidth::D, rd: 6, rs1: 9, offset: 0 }],
        // A device store of a held register.
        &[Inst::Store { width: StoreWidth::W, rs1: 9, rs2: 7, offset: 4 }],
        // A load and a store outside RAM (below it): an access fault.
        &[Inst::Load { width: LoadWidth::D, rd: 7, rs1: 11, offset: -8 }],
        &[Inst::Store { width: StoreWidth::D, rs1: 11, rs2: 6, offset: -16 }],
        // Misaligned accesses across a page boundary: the slow path serves them and the block goes on.
        &[
            Inst::Load { width: LoadWidth::D, rd: 6, rs1: 13, offset: 2045 },
            Inst::Store { width: StoreWidth::W, rs1: 13, rs2: 7, offset: 2046 },
            Inst::Load { width: LoadWidth::Hu, rd: 7, rs1: 13, offset: 2047 },
        ],
        // Misaligned in the page: the fast path.
        &[
            Inst::Store { width: StoreWidth::D, rs1: 10, rs2: 6, offset: 3 },
            Inst::Load { width: LoadWidth::W, rd: 7, rs1: 10, offset: 5 },
        ],
        // A CSR write of a held register and a read into one, through the interpreter.
        &[
            Inst::Csr { op: CsrOp::Rw, rd: 7, src: 6, csr: csr::SSCRATCH },
            Inst::Csr { op: CsrOp::Rs, rd: 6, src: 0, csr: csr::SSCRATCH },
        ],
        // An AMO through the interpreter in the middle of a block: it reads and writes held registers.
        &[Inst::Amo { op: AmoOp::Add, width: AmoWidth::D, aq: false, rl: false, rd: 6, rs1: 10, rs2: 7 }],
        // Division and `mulhsu` (calls), into and from held registers.
        &[
            Inst::Op { op: OpKind::Div, rd: 6, rs1: 6, rs2: 7 },
            Inst::Op { op: OpKind::Mulhsu, rd: 7, rs1: 7, rs2: 6 },
            Inst::Op { op: OpKind::Remu, rd: 7, rs1: 7, rs2: 0 },
        ],
        // An illegal instruction.
        &[Inst::Illegal(0)],
    ];
    for middle in middles {
        let program: Vec<Inst> = dirty.iter().chain(middle).chain(&after).copied().collect();
        lockstep_both(&program);
    }
}

/// A loop whose blocks hold different registers: the first (x6, x7) jumps to the second (x5, x8, x13), which
/// reads x6 and x7 from `hart.x`, so each chained jump must leave them written back; budgets that end at every
/// point stop the loop at the blocks' chained entries too.
#[test]
fn a_chained_jump_leaves_held_registers_for_a_block_holding_others() {
    let program = [
        addi(5, 0, 50),
        // Block A.
        addi(6, 6, 1),
        Inst::Op { op: OpKind::Add, rd: 6, rs1: 6, rs2: 5 },
        addi(7, 6, 3),
        addi(7, 7, 1),
        Inst::Jal { rd: 0, offset: 8 },
        Inst::Ecall,
        // Block B.
        Inst::Op { op: OpKind::Add, rd: 8, rs1: 8, rs2: 6 },
        Inst::Op { op: OpKind::Xor, rd: 13, rs1: 13, rs2: 8 },
        Inst::Op { op: OpKind::Add, rd: 13, rs1: 13, rs2: 7 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -40 },
        Inst::Ecall,
    ];
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[10_000]);
        assert_eq!(machine.hart.x(5), 0);
        let stats = dbt.stats();
        assert!(stats.links >= 2 && stats.blocks_entered < 10, "{stats:?}");
        lockstep(&bytes(&program), supervisor, &[1, 2, 3, 4, 5, 6, 7, 9, 11, 13]);
    }
}

/// Registers held in host registers make a block shorter: a block that names few registers many times is
/// translated with fewer host instructions than one instruction in three memory operands would take.
#[test]
fn held_registers_shorten_the_translation() {
    let body: Vec<Inst> = (0..30).map(|k| Inst::Op { op: OpKind::Add, rd: 6 + (k % 2), rs1: 6, rs2: 7 }).collect();
    let program: Vec<Inst> = body.iter().copied().chain([Inst::Ecall]).collect();
    let (machine, dbt) = lockstep(&bytes(&program), false, &[1000]);
    assert_ne!(machine.hart.x(6), 18);
    let stats = dbt.stats();
    // Each `add` of two held registers into one of them is a single host instruction.
    assert!(stats.body_instructions < 30 + 20, "{stats:?}");
}

/// Straight-line code longer than a block: each block is cut at [`MAX_BLOCK`] instructions and falls through to
/// the next with its held registers dirty, which the next block (holding the same ones) reads from `hart.x`.
#[test]
fn a_block_cut_at_its_length_limit_writes_back_what_it_holds() {
    let body = (0..2 * MAX_BLOCK as i32 + 7).map(|k| match k % 3 {
        0 => addi(6, 6, k),
        1 => Inst::Op { op: OpKind::Xor, rd: 7, rs1: 7, rs2: 6 },
        _ => Inst::Op { op: OpKind::Add, rd: 6, rs1: 6, rs2: 7 },
    });
    let program: Vec<Inst> = body.chain([Inst::Ecall]).collect();
    lockstep_both(&program);
}

/// Division and remainder, translated inline: RISC-V's results for a zero divisor and for the most negative
/// dividend by -1 (where x86-64's `div`/`idiv` would trap), at 64 and 32 bits, from held registers and from
/// `hart.x`, agree with the interpreter, and the block is translated (not left to the interpreter).
#[test]
fn division_edge_cases_agree_with_the_interpreter() {
    use OpKind::*;
    let ops = [Div, Divu, Rem, Remu, Divw, Divuw, Remw, Remuw];
    let mut program = vec![
        // x13 = i64::MIN, x14 = -1, x15 = i32::MIN (sign-extended), x8 = 7.
        addi(13, 0, 1),
        Inst::OpImm { op: OpImmKind::Slli, rd: 13, rs1: 13, imm: 63 },
        addi(14, 0, -1),
        Inst::Lui { rd: 15, imm: i32::MIN },
        addi(8, 0, 7),
    ];
    for op in ops {
        for (rs1, rs2) in [(13, 14), (15, 14), (13, 0), (8, 0), (15, 8), (13, 8), (8, 14), (14, 15)] {
            program.push(Inst::Op { op, rd: 6, rs1, rs2 });
            // Fold each result into x7 (so a wrong one shows).
            program.push(Inst::Op { op: Add, rd: 7, rs1: 7, rs2: 6 });
            program.push(Inst::OpImm { op: OpImmKind::Slli, rd: 7, rs1: 7, imm: 1 });
        }
    }
    program.push(Inst::Ecall);
    for supervisor in [false, true] {
        let (_, dbt) = lockstep(&bytes(&program), supervisor, &[10_000]);
        let stats = dbt.stats();
        assert_eq!(stats.stepped, 0, "{stats:?}");
        assert!(stats.blocks_translated >= 1, "{stats:?}");
    }
}

/// A loop that is one block jumps straight back to its own chained entry (no link slot, no dispatcher), which
/// still charges the budget each round: turns that end inside the loop agree with the interpreter.
#[test]
fn a_loop_within_one_block_jumps_to_its_own_entry() {
    let program = [
        addi(5, 0, 1000),
        addi(6, 6, 1),
        Inst::Op { op: OpKind::Add, rd: 7, rs1: 7, rs2: 6 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ];
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[10_000]);
        assert_eq!(machine.hart.x(6), 18 + 1000);
        let stats = dbt.stats();
        // The first block (from pc 0) links to the loop's; the loop's own exit needs no link.
        assert!(stats.links <= 1 && stats.blocks_entered <= 3, "{stats:?}");
        lockstep(&bytes(&program), supervisor, &[7, 3, 1, 64, 5, 1000]);
    }
}

/// A store that starts in a granule of data beside code and ends in a granule of code is a code write: the
/// inlined watch check looks at the granules of both its first and its last byte.
#[test]
fn a_store_straddling_into_a_code_granule_drops_the_code() {
    let patched = encode(&addi(6, 6, 100)) as i64;
    let nop = addi(0, 0, 0);
    let mut program = vec![
        // x7 = the new instruction's word in the upper half (the lower half lands on a word never run).
        Inst::Lui { rd: 7, imm: ((patched as i32).wrapping_add(0x800) as u32 & 0xffff_f000) as i32 },
        addi(7, 7, ((patched << 52) >> 52) as i32),
        Inst::OpImm { op: OpImmKind::Slli, rd: 7, rs1: 7, imm: 32 },
        addi(5, 0, 3),
        // Over granule 1 (bytes 64..128: no code) to the loop at byte 128.
        Inst::Jal { rd: 0, offset: 112 },
    ];
    program.resize(32, nop);
    program.extend([
        addi(6, 6, 1),
        // Bytes 124..132: the end of granule 1 and the loop's first instruction.
        Inst::Store { width: StoreWidth::D, rs1: 11, rs2: 7, offset: 124 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ]);
    for supervisor in [false, true] {
        let (machine, dbt) = lockstep(&bytes(&program), supervisor, &[1000]);
        assert_eq!(machine.hart.x(6), 18 + 201, "from 18: one old round, two new ones");
        assert!(dbt.stats().pages_invalidated >= 1);
    }
}

/// A loop whose instructions run from the end of the first page into the second, one of them a 4-byte
/// instruction straddling the two (at 0xffe, after a compressed `c.nop`): `straddler` at 0xffe, then `after`
/// (the loop's end, back to 0xff0 while x5 is not 0).
fn straddling_loop(straddler: Inst, after: &[Inst]) -> Vec<u8> {
    let mut code = Vec::new();
    place(&mut code, 0, &[addi(5, 0, 300), Inst::Jal { rd: 0, offset: 0xff0 - 4 }]);
    place(&mut code, 0xff0, &[addi(6, 6, 3), addi(7, 7, 1), addi(5, 5, -1)]);
    const C_NOP: [u8; 2] = [0x01, 0x00];
    code.resize(0xffc, 0);
    code.extend_from_slice(&C_NOP);
    place(&mut code, 0xffe, &[straddler]);
    place(&mut code, 0x1002, after);
    code
}

/// A 4-byte instruction straddling a page runs in translated code (the interpreter fetches its two halves through
/// the MMU as the block's last instruction), not on the cold tier at every round: an arithmetic one, and a branch
/// that closes the loop itself.
#[test]
fn an_instruction_straddling_the_page_runs_in_translated_code() {
    let back = |from: i32| Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: 0xff0 - from };
    let add = Inst::Op { op: OpKind::Add, rd: 9, rs1: 9, rs2: 6 };
    let programs = [straddling_loop(add, &[back(0x1002), Inst::Ecall]), straddling_loop(back(0xffe), &[Inst::Ecall])];
    for (program, supervisor) in programs.iter().flat_map(|p| [(p, false), (p, true)]) {
        let (machine, dbt) = lockstep(program, supervisor, &[100_000]);
        assert_eq!(machine.hart.x(5), 0, "every round ran");
        let stats = dbt.stats();
        assert!(stats.cold_instructions < 300 && stats.stepped == 0, "not once a round: {stats:?}");
        lockstep(program, supervisor, &[7, 3, 1, 64, 5, 1000]);
    }
}

/// The second half of a straddling instruction lies on the next page, outside its block: rewritten between runs
/// (here behind the engine's back, as a device's DMA would, onto bytes no block was made from), the new
/// instruction runs at once.
#[test]
fn a_straddling_instructions_second_half_rewritten_runs_the_new_instruction() {
    let adds = |rs2| Inst::Op { op: OpKind::Add, rd: 9, rs1: 9, rs2 };
    let program =
        straddling_loop(adds(6), &[Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -18 }, Inst::Ecall]);
    let upper = encode(&adds(7)).to_le_bytes();
    let old = encode(&adds(6)).to_le_bytes();
    assert!(old[..2] == upper[..2] && old[2..] != upper[2..], "rs2 lies in the upper half");
    for supervisor in [false, true] {
        let mut fast = Machine::new(&program, supervisor);
        let mut reference = Machine::new(&program, supervisor);
        let mut dbt = engine();
        let x9 = fast.hart.x(9);
        let rewrite = |machine: &mut Machine, turn: usize| {
            if turn == 5 {
                machine.backing[0x1000..0x1002].copy_from_slice(&upper[2..]);
            }
        };
        until_ecall(&mut fast, &mut reference, &mut *dbt, 397, rewrite, |_, _| {});
        assert_ne!(fast.hart.x(9), x9);
        assert_eq!(dbt.stats().stepped, 0);
    }
}

/// Translation latency over real code: consecutive blocks of the Linux kernel `Image` (when
/// `target/guest-images/Image` is there) through the whole translation path (decode, emit, assemble, cache insert,
/// copy into code memory). A measurement, run by hand:
/// `cargo test -p trapeze --release --features dbt --lib translation_latency -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement of translation latency, run by hand"]
fn translation_latency() {
    // The hosted sizes' tables are built on the stack first.
    std::thread::Builder::new().stack_size(64 << 20).spawn(measure_translation).unwrap().join().unwrap();
}

fn measure_translation() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/guest-images/Image");
    let Ok(image) = std::fs::read(path) else { return };
    let size = (image.len() as u64).div_ceil(4096) * 4096;
    let mut backing = vec![0u8; size as usize];
    backing[..image.len()].copy_from_slice(&image);
    let mut watch = vec![0u64; code_watch_words(size)];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    ram.attach_granular_code_watch(&mut watch);
    let realmap = VmRealMap::for_ram(&ram).unwrap();
    let mut tlb = Tlb::new();
    let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
    // The kernel's text starts after its first pages of head code and data; 20000 consecutive blocks from there,
    // written into code memory one at a time or in batches as the engine queues them.
    let blocks = 20_000u64;
    for batch in [1, BATCH as u64, 1, BATCH as u64] {
        let mut dbt = Box::new(Dbt::<TestCode, { 16 << 20 }, 8192, 16384>::new(TestCode::new(16 << 20)).unwrap());
        let (mut start, mut done) = (0x2000u64, 0);
        let begin = std::time::Instant::now();
        while done < blocks && start + 64 < size {
            match dbt.translate(&mut memory, start, done % 2 == 1) {
                Some((id, _)) => {
                    start += dbt.cache.block_info(id).unwrap().guest_len as u64;
                    done += 1;
                    if done % batch == 0 {
                        dbt.write_staged();
                    }
                }
                None => start += 2,
            }
        }
        dbt.write_staged();
        let seconds = begin.elapsed().as_secs_f64();
        let stats = dbt.stats();
        std::println!(
            "batches of {batch}: {done} blocks, {} guest instructions, {:.1} host bytes each: {:.2} us per block, \
             {:.3} us per guest instruction",
            stats.instructions_translated,
            stats.code_bytes as f64 / stats.instructions_translated as f64,
            seconds * 1e6 / done as f64,
            seconds * 1e6 / stats.instructions_translated as f64
        );
    }
    // The same blocks again, lowered and assembled only (no cache, no code memory).
    let mut asm = iced_x86::code_asm::CodeAssembler::new(64).unwrap();
    let mut out = assemble::Assembler::new().unwrap();
    let (mut at, mut assembled) = (0x2000u64, 0u64);
    let begin = std::time::Instant::now();
    while assembled < blocks {
        let Some(job) = Job::snapshot(memory.ram, at, false, Window::default(), false, MAX_BLOCK_CODE) else { break };
        let access =
            if assembled % 2 == 1 { emit::DataAccess::Paged } else { emit::DataAccess::Window(Window::default()) };
        match emit::translate(&mut asm, &mut out, job.bytes(), at, access, MAX_BLOCK, false) {
            Some(block) => {
                at += block.guest_len as u64;
                assembled += 1;
            }
            None => at += 2,
        }
    }
    std::println!("emit::translate alone: {:.2} us per block", begin.elapsed().as_secs_f64() * 1e6 / blocks as f64);
}

/// A function with short and near branches, forward and backward (a loop whose body is too long for a short
/// branch, a short skip, a long jump over padding): `eax = 3 * rounds + 1000`.
fn branchy_function(a: &mut iced_x86::code_asm::CodeAssembler, rounds: i32, padding: usize) {
    use iced_x86::code_asm::*;
    let mut top = a.create_label();
    let mut skip = a.create_label();
    let mut end = a.create_label();
    a.xor(eax, eax).unwrap();
    a.mov(ecx, rounds).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(eax, 3).unwrap();
    for _ in 0..padding {
        a.nop().unwrap();
    }
    a.sub(ecx, 1).unwrap();
    a.jnz(top).unwrap();
    a.test(eax, eax).unwrap();
    a.jz(skip).unwrap();
    a.add(eax, 1000).unwrap();
    a.set_label(&mut skip).unwrap();
    a.jmp(end).unwrap();
    for _ in 0..padding * 2 {
        a.nop().unwrap();
    }
    a.set_label(&mut end).unwrap();
    a.ret().unwrap();
}

/// The assembling step's branches land where they should, near or shortened, and its reused buffers give the
/// same code for the same instructions whatever was assembled in between.
#[test]
// Runs the functions it assembled.
#[allow(unsafe_code)]
fn assembled_branches_land_right_near_and_short() {
    let mut asm = iced_x86::code_asm::CodeAssembler::new(64).unwrap();
    let mut out = assemble::Assembler::new().unwrap();
    let mut code = TestCode::new(1 << 16);
    let mut lengths = Vec::new();
    for (k, (rounds, padding)) in [(10, 200), (7, 3), (10, 200), (1, 0), (5, 1000)].into_iter().enumerate() {
        asm.reset();
        branchy_function(&mut asm, rounds, padding);
        out.assemble(&asm).unwrap();
        let bytes = out.code().to_vec();
        lengths.push(bytes.len());
        let offset = 4096 * k;
        code.write(offset, &bytes).unwrap();
        // SAFETY: the bytes just written are a complete System V function (it clobbers only eax and ecx).
        let function: extern "sysv64" fn() -> u32 = unsafe { core::mem::transmute(code.base.wrapping_add(offset)) };
        assert_eq!(function(), 3 * rounds as u32 + 1000, "rounds {rounds}, padding {padding}");
        // The same instructions again give the same bytes.
        out.assemble(&asm).unwrap();
        assert_eq!(out.code(), &bytes[..]);
    }
    assert_eq!(lengths[0], lengths[2], "the same function, assembled after another");
    // Short forms where they fit: with padding 0 and 3 every branch is short (two bytes: the lengths differ by the
    // nine nops); with padding 200 the loop's `jnz` (6 bytes) and the `jmp` over 400 nops (5) are near, the skip
    // short.
    assert_eq!(lengths[1] - lengths[3], 9);
    assert_eq!(lengths[0] - lengths[3], 600 + (6 - 2) + (5 - 2));
}

/// A branch to a label that was never placed fails the block (no panic, no code).
#[test]
fn a_branch_to_an_unplaced_label_is_refused() {
    use iced_x86::code_asm::*;
    let mut asm = CodeAssembler::new(64).unwrap();
    let mut out = assemble::Assembler::new().unwrap();
    let nowhere = asm.create_label();
    asm.jmp(nowhere).unwrap();
    asm.ret().unwrap();
    assert!(out.assemble(&asm).is_err());
}

mod served;

/// The code watch's deferred fence runs at the guest's `fence.i` (through the interpreter), and a block whose
/// bytes a racing store changed is dropped before the code after it runs.
#[test]
fn fence_i_drops_code_a_racing_store_changed() {
    crate::mem::shared_tests::fence_i_drops_code_a_racing_store_changed(&mut *engine(), true);
}

/// Blocks whose data accesses are not paged compile the M-mode window in: a locked PMP entry (then M-mode
/// accesses are checked, there is no window) drops them, and a load they served from the window faults as the
/// interpreter's does.
#[test]
fn a_new_m_mode_window_drops_the_blocks_that_compiled_the_old_one() {
    let program =
        [Inst::Load { width: LoadWidth::D, rd: 6, rs1: 10, offset: 8 }, addi(5, 5, 1), Inst::Jal { rd: 0, offset: -8 }];
    let mut fast = Machine::new(&bytes(&program), false);
    let mut reference = Machine::new(&bytes(&program), false);
    let mut dbt = engine();
    assert_eq!(fast.run(&mut *dbt, 100), Exit::BudgetExhausted);
    assert_eq!(reference.run(&mut Interpreter, 100), Exit::BudgetExhausted);
    assert_eq!(fast.hart, reference.hart);
    assert!(dbt.stats().blocks_translated >= 1);
    fast.lock_data_page();
    reference.lock_data_page();
    let exit = fast.run(&mut *dbt, 100);
    assert_eq!(exit, reference.run(&mut Interpreter, 100));
    assert_eq!(exit, Exit::Exception { cause: Exception::LoadAccessFault, tval: DATA + 8 });
    assert_eq!(fast.hart, reference.hart);
}
