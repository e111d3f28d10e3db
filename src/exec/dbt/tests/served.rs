//! The translator with a [`TranslationService`] that finishes jobs late (deterministically, after a number of
//! polls, or when the test releases them): blocks move between the tiers through the service, a block rewritten
//! while its job is in flight never runs its old translation, a full service leaves blocks on the cold tier, and a
//! translation answers only the job it was made from.

use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// The in-test service's state, shared with the test.
struct Late {
    translator: Translator,
    /// Jobs in flight and the polls each still waits.
    queue: VecDeque<(Job, u32)>,
    done: Vec<Translation>,
    /// While set, no job finishes.
    hold: bool,
    /// Jobs in flight at most (more are refused).
    capacity: usize,
    delay: u32,
}

impl Late {
    /// Finishes every job in flight at once.
    fn finish_all(&mut self) {
        while let Some((job, _)) = self.queue.pop_front() {
            let translation = self.translator.translate(&job);
            self.done.push(translation);
        }
    }
}

/// A service that finishes a job once `ready` was asked `delay` times since it reached the queue's head.
struct LateService(Rc<RefCell<Late>>);

impl TranslationService for LateService {
    fn submit(&mut self, job: &Job) -> bool {
        let mut late = self.0.borrow_mut();
        if late.queue.len() >= late.capacity {
            return false;
        }
        let delay = late.delay;
        late.queue.push_back((job.clone(), delay));
        true
    }

    fn ready(&self) -> usize {
        let mut late = self.0.borrow_mut();
        let late = &mut *late;
        if !late.hold {
            match late.queue.front_mut() {
                Some((_, 0)) => {
                    let (job, _) = late.queue.pop_front().unwrap();
                    late.done.push(late.translator.translate(&job));
                }
                Some((_, polls)) => *polls -= 1,
                None => {}
            }
        }
        late.done.len()
    }

    fn take(&mut self, install: &mut dyn FnMut(&Translation)) {
        let done = std::mem::take(&mut self.0.borrow_mut().done);
        for translation in &done {
            install(translation);
        }
    }
}

/// A translator served by a late service (`delay` polls a job, `capacity` jobs in flight), at `threshold`.
fn served(threshold: u16, delay: u32, capacity: usize) -> (Box<TestDbt>, Rc<RefCell<Late>>) {
    let late = Rc::new(RefCell::new(Late {
        translator: Translator::new().unwrap(),
        queue: VecDeque::new(),
        done: Vec::new(),
        hold: false,
        capacity,
        delay,
    }));
    let mut dbt = engine();
    dbt.set_translation_threshold(threshold);
    dbt.attach_service(Box::new(LateService(late.clone())));
    (dbt, late)
}

/// [`lockstep_translating_at`] with a late service.
fn lockstep_served(program: &[u8], supervisor: bool, budgets: &[u64], threshold: u16, delay: u32) -> Box<TestDbt> {
    let mut fast = Machine::new(program, supervisor);
    let mut reference = Machine::new(program, supervisor);
    let (mut dbt, _late) = served(threshold, delay, 8);
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
    dbt
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random programs (stores into their own code among them) agree with the interpreter when translations
    /// land late, at any point of a run: blocks run on the cold tier while their jobs are in flight and translated
    /// once installed, and code written meanwhile is never run from a stale translation.
    #[test]
    fn random_programs_agree_with_translations_landing_late(
        program in proptest::collection::vec(instruction(), 1..48),
        supervisor in any::<bool>(),
        budgets in proptest::collection::vec(1u64..200, 1..8),
        threshold in prop_oneof![Just(0u16), 1u16..8],
        delay in 0u32..12,
    ) {
        let mut code: Vec<u8> = program.concat();
        code.extend_from_slice(&encode(&Inst::Ecall).to_le_bytes());
        lockstep_served(&code, supervisor, &budgets, threshold, delay);
    }
}

/// A hot loop through the service: translated off the dispatcher's path, installed, run translated, and the
/// same as the interpreter.
#[test]
fn hot_blocks_are_translated_through_the_service() {
    let program = [
        addi(5, 0, 2000),
        addi(6, 6, 3),
        Inst::Op { op: OpKind::Xor, rd: 7, rs1: 7, rs2: 6 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ];
    for supervisor in [false, true] {
        let dbt = lockstep_served(&bytes(&program), supervisor, &[100_000], 300, 3);
        let stats = dbt.stats();
        assert!(stats.jobs_submitted >= 1 && stats.blocks_translated >= 1, "{stats:?}");
        assert!(stats.blocks_entered >= 1, "the loop ran translated: {stats:?}");
        assert!(stats.cold_instructions < 4 * 1000, "{stats:?}");
        assert_eq!(stats.translations_stale, 0, "{stats:?}");
    }
}

/// A function rewritten while its job is in flight: the translation of its old bytes lands after the write and
/// is dropped (RAM no longer holds the bytes it was made from); the new code runs, and is translated in turn.
#[test]
fn a_block_rewritten_while_its_job_is_in_flight_runs_the_new_code() {
    let code = rewritten_call();
    for supervisor in [false, true] {
        let mut fast = Machine::new(&code, supervisor);
        let mut reference = Machine::new(&code, supervisor);
        // Every block's job is submitted at its first entry and held until turn 40, well after the rewrite
        // (about 900 instructions in, turn 24 of 37 instructions each).
        let (mut dbt, late) = served(0, 0, 64);
        late.borrow_mut().hold = true;
        let release = |_: &mut TestDbt, turn: usize| {
            if turn == 40 {
                late.borrow_mut().hold = false;
            }
        };
        until_ecall(&mut fast, &mut reference, &mut *dbt, 37, |_, _| {}, release);
        assert_eq!(fast.hart.x(6), 18 + 150 + 150 * 100);
        let stats = dbt.stats();
        assert!(stats.translations_stale >= 1, "the old function's translation was dropped: {stats:?}");
        assert!(stats.blocks_translated >= 2 && stats.blocks_entered >= 1, "{stats:?}");
    }
}

/// A service that refuses every job leaves every block on the cold tier, each offered again only after it ran
/// half the threshold more (not at every entry); one that takes a job at a time still gets them all translated.
#[test]
fn a_full_service_leaves_blocks_on_the_cold_tier() {
    let program = jumping_blocks(1000);
    for (capacity, supervisor) in [(0, false), (0, true), (1, false), (1, true)] {
        let mut fast = Machine::new(&bytes(&program), supervisor);
        let mut reference = Machine::new(&bytes(&program), supervisor);
        let (mut dbt, _late) = served(200, 2, capacity);
        until_ecall(&mut fast, &mut reference, &mut *dbt, 997, |_, _| {}, |_, _| {});
        assert_eq!(fast.hart.x(5), 0, "every round ran");
        let stats = dbt.stats();
        if capacity == 0 {
            assert_eq!(stats.blocks_translated, 0, "{stats:?}");
            assert_eq!(stats.cold_instructions, 2 + 6 * 1000, "{stats:?}");
            // Four blocks of two instructions: a refusal per 100 instructions each at most.
            assert!(stats.jobs_refused >= 4 && stats.jobs_refused <= 4 * 6000 / 200 + 4, "{stats:?}");
        } else {
            assert!(stats.blocks_translated >= 3 && stats.blocks_entered >= 1, "{stats:?}");
        }
    }
}

/// More translations landing at once than a batch of staged code holds are every one installed (the staged code is
/// written out when the batch is full): each job submitted once, each installed once.
#[test]
fn more_translations_landing_at_once_than_a_batch_are_all_installed() {
    let blocks = 3 * BATCH;
    let mut program = vec![addi(5, 0, 50)];
    for _ in 0..blocks {
        program.extend([addi(6, 6, 1), Inst::Jal { rd: 0, offset: 4 }]);
    }
    program.extend([
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -8 * blocks as i32 - 4 },
    ]);
    program.push(Inst::Ecall);
    for supervisor in [false, true] {
        let mut fast = Machine::new(&bytes(&program), supervisor);
        let mut reference = Machine::new(&bytes(&program), supervisor);
        // Every job is held until the first rounds ran, then they all land at once.
        let (mut dbt, late) = served(0, 0, 64);
        late.borrow_mut().hold = true;
        let release = |_: &mut TestDbt, turn: usize| {
            if turn == 1 {
                late.borrow_mut().finish_all();
            }
            if turn == 2 {
                late.borrow_mut().hold = false;
            }
        };
        until_ecall(&mut fast, &mut reference, &mut *dbt, 4 * blocks as u64, |_, _| {}, release);
        assert_eq!(fast.hart.x(6), 18 + 50 * blocks as u64);
        let stats = dbt.stats();
        assert!(stats.blocks_translated as usize > blocks, "{stats:?}");
        assert_eq!(stats.jobs_submitted, stats.blocks_translated, "none dropped and offered again: {stats:?}");
    }
}

/// A translation answers only a job of the same offset, data path, counting and size limit whose bytes equal its
/// own wherever its decoder read (what a memo of translations relies on); a failed one answers nothing.
#[test]
fn a_translation_answers_only_its_own_bytes() {
    let block = bytes(&[addi(6, 6, 1), addi(7, 7, 2), Inst::Jal { rd: 0, offset: -8 }, addi(8, 8, 3)]);
    let mut translator = Translator::new().unwrap();
    let job = Job::new(0x100, false, false, MAX_BLOCK_CODE, &block);
    let translation = translator.translate(&job);
    assert!(translation.is_translated() && translation.answers(&job));
    // A byte after the block's end (past the jump) is not read: the same translation.
    let mut after = block.clone();
    after[12] ^= 0xff;
    assert!(translation.answers(&Job::new(0x100, false, false, MAX_BLOCK_CODE, &after)));
    // Any byte of the block itself differs: not this translation.
    for at in 0..12 {
        let mut changed = block.clone();
        changed[at] ^= 0x40;
        assert!(!translation.answers(&Job::new(0x100, false, false, MAX_BLOCK_CODE, &changed)), "byte {at}");
    }
    assert!(!translation.answers(&Job::new(0x104, false, false, MAX_BLOCK_CODE, &block)));
    assert!(!translation.answers(&Job::new(0x100, true, false, MAX_BLOCK_CODE, &block)));
    assert!(!translation.answers(&Job::new(0x100, false, true, MAX_BLOCK_CODE, &block)));
    let window = Window { base: RAM_BASE, limit: 0x1000, host: 0 };
    assert!(!translation.answers(&Job::new(0x100, false, false, MAX_BLOCK_CODE, &block).with_window(window)));
    assert!(!translation.answers(&Job::new(0x100, false, false, 64, &block)));
    // Too few bytes (the job's copy ends inside the block): not this translation either.
    assert!(!translation.answers(&Job::new(0x100, false, false, MAX_BLOCK_CODE, &block[..10])));
    // A block starting with an instruction that straddles the page: that one instruction, run by the interpreter,
    // which fetches it whole at every run (the translation depends on its first parcel only).
    assert_eq!(block[0] & 3, 3, "a 4-byte instruction");
    let straddling = Job::new(0xffe, false, false, MAX_BLOCK_CODE, &block[..2]);
    let one = translator.translate(&straddling);
    assert!(one.is_translated() && one.answers(&straddling));
    // Nothing to decode translates to nothing, which answers nothing.
    let empty = Job::new(0x100, false, false, MAX_BLOCK_CODE, &[]);
    let failed = translator.translate(&empty);
    assert!(!failed.is_translated() && !failed.answers(&empty));
    // The same job, translated again: the same code.
    assert_eq!(translator.translate(&job).code, translation.code);
}

/// A translation made for an M-mode window no longer in force when it lands (a PMP entry was locked while its job
/// was in flight) is dropped: the loads it would serve from the window fault, as the interpreter's do.
#[test]
fn a_translation_for_an_old_m_mode_window_is_dropped() {
    let program = [
        addi(5, 0, 200),
        Inst::Load { width: LoadWidth::D, rd: 6, rs1: 10, offset: 8 },
        Inst::Op { op: OpKind::Add, rd: 7, rs1: 7, rs2: 6 },
        addi(5, 5, -1),
        Inst::Branch { cond: BranchCond::Ne, rs1: 5, rs2: 0, offset: -12 },
        Inst::Ecall,
    ];
    let mut fast = Machine::new(&bytes(&program), false);
    let mut reference = Machine::new(&bytes(&program), false);
    let (mut dbt, late) = served(0, 0, 64);
    late.borrow_mut().hold = true;
    // The jobs are made at turn 0, the data's page locked away from M-mode at turn 2, the jobs land at turn 4.
    let lock = |machine: &mut Machine, turn: usize| {
        if turn == 2 {
            machine.lock_data_page();
        }
    };
    let release = |_: &mut TestDbt, turn: usize| {
        if turn == 4 {
            late.borrow_mut().hold = false;
        }
    };
    until_ecall(&mut fast, &mut reference, &mut *dbt, 20, lock, release);
    let stats = dbt.stats();
    assert!(stats.translations_stale >= 1, "{stats:?}");
    assert!(stats.blocks_translated >= 1 && stats.blocks_entered >= 1, "translated anew for the new window: {stats:?}");
}
