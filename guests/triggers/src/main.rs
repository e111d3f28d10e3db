//! `triggers`: debug trigger (Sdtrig) test in M-mode, one `ok:`/`FAIL:` line per check: trigger discovery
//! (`tselect` read back, `tinfo`), execute, load and store address matches of `mcontrol6` triggers (a breakpoint
//! exception before the instruction, with `mtval` = the matching address and nothing of the access done), the
//! M/S/U mode bits (a trigger for U only does not fire in M or S, ...), `tcontrol.mte`/`mpte` across a trap,
//! `tdata` WARL behaviour (unsupported types, match types, actions and fields read back legal values; absent
//! `mcontext`/`scontext` trap), and a trigger armed in the middle of a hot loop, which must fire at exactly its
//! instruction in exactly the iteration that armed it. Ends with `triggers: all N checks passed` and exit status
//! 0, or `triggers: F of N checks failed` and exit status 1.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use rt::checks::{self, check};
use rt::lower::{enter_lower, lower_return};
use rt::trap::{self, TrapFrame};
use rt::{addr, csr_read, csr_write};

// Trigger CSRs go by number (0x7a0 tselect, 0x7a1..0x7a3 tdata1..3, 0x7a4 tinfo, 0x7a5 tcontrol): the
// assemblers do not all know their names.

const TYPE_MCONTROL6: u64 = 6 << 60;
const TYPE_DISABLED: u64 = 15 << 60;
const DMODE: u64 = 1 << 59;
const LOAD: u64 = 1 << 0;
const STORE: u64 = 1 << 1;
const EXECUTE: u64 = 1 << 2;
const U: u64 = 1 << 3;
const S: u64 = 1 << 4;
const M: u64 = 1 << 6;
const CHAIN: u64 = 1 << 11;
const SELECT: u64 = 1 << 21;
const HIT0: u64 = 1 << 22;
const MTE: u64 = 1 << 3;
const MPTE: u64 = 1 << 7;

core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc

    /* Returns 3, or 2 when the handler skips the instruction at t_exec_at. */
    .balign 4
    .globl t_exec, t_exec_at
t_exec:
    li a0, 0
t_exec_at:
    addi a0, a0, 1
    addi a0, a0, 2
    ret

    /* Run in U- or S-mode by enter_lower: a breakpoint at t_lower_at or the ecall ends it. */
    .balign 4
    .globl t_lower, t_lower_at
t_lower:
t_lower_at:
    addi a0, a0, 1
    ecall

    /* a0 = address; returns the loaded value (the address, if the load was skipped). */
    .balign 4
    .globl t_load_w, t_load_w_at
t_load_w:
t_load_w_at:
    lw a0, 0(a0)
    ret
    .balign 4
    .globl t_load_d, t_load_d_at
t_load_d:
t_load_d_at:
    ld a0, 0(a0)
    ret
    /* a0 = address, a1 = value. */
    .balign 4
    .globl t_store_w, t_store_w_at
t_store_w:
t_store_w_at:
    sw a1, 0(a0)
    ret

    /* t_hot(a0 = iterations, a1 = iteration that arms, a2 = tdata1 value, a3 = address stored to): a loop
       that writes tdata1 once, in iteration a1, and returns the iterations it ran. */
    .balign 4
    .globl t_hot, t_hot_store, t_hot_exec
t_hot:
    li t1, 0
1:
    addi t1, t1, 1
    bne t1, a1, 2f
    csrw 0x7a1, a2
2:
    addi t2, t1, 3
t_hot_store:
    sd t1, 0(a3)
t_hot_exec:
    addi t3, t2, 1
    blt t1, a0, 1b
    mv a0, t1
    ret

    /* Accesses to the absent mcontext and scontext; each returns 1 when the handler skipped it. */
    .balign 4
    .globl t_mcontext, t_scontext
t_mcontext:
    li a0, 0
    csrr a1, 0x7a8
    addi a0, a0, 1
    ret
t_scontext:
    li a0, 0
    csrr a1, 0x5a8
    addi a0, a0, 1
    ret

    .option pop
"#
);

extern "C" {
    fn t_exec() -> u64;
    fn t_exec_at();
    fn t_lower();
    fn t_lower_at();
    fn t_load_w(addr: u64) -> u64;
    fn t_load_w_at();
    fn t_load_d(addr: u64) -> u64;
    fn t_load_d_at();
    fn t_store_w(addr: u64, value: u64);
    fn t_store_w_at();
    fn t_hot(iterations: u64, arm_at: u64, tdata1: u64, store_to: u64) -> u64;
    fn t_hot_store();
    fn t_hot_exec();
    fn t_mcontext() -> u64;
    fn t_scontext() -> u64;
}

// What the handler saw last.
static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static EPC: AtomicU64 = AtomicU64::new(0);
static TVAL: AtomicU64 = AtomicU64::new(0);
static TCONTROL: AtomicU64 = AtomicU64::new(0);
/// `t1` (the hot loop's iteration) and the hot loop's stored word at the last trap.
static T1: AtomicU64 = AtomicU64::new(0);
static STORED: AtomicU64 = AtomicU64::new(0);
/// Disable the selected trigger on a breakpoint (so a hot loop traps once).
static DISARM: AtomicBool = AtomicBool::new(false);

#[repr(C, align(16))]
struct Data([u64; 4]);

static mut DATA: Data = Data([0; 4]);

fn data(index: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(DATA.0) as u64 + 8 * index.min(3) as u64 }
}

fn read(address: u64) -> u64 {
    // SAFETY: callers pass addresses of DATA.
    unsafe { (address as *const u64).read_volatile() }
}

fn write(address: u64, value: u64) {
    // SAFETY: callers pass addresses of DATA.
    unsafe { (address as *mut u64).write_volatile(value) }
}

fn handler(frame: &mut TrapFrame) {
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    EPC.store(frame.mepc, SeqCst);
    TVAL.store(frame.mtval, SeqCst);
    TCONTROL.store(csr_read!("0x7a5"), SeqCst);
    T1.store(frame.regs[6], SeqCst);
    STORED.store(read(data(2)), SeqCst);
    if frame.is_interrupt() {
        rt::println!("FAIL: unexpected interrupt: mcause={:#x}", frame.mcause);
        rt::exit(104);
    }
    if frame.code() == trap::BREAKPOINT && DISARM.load(SeqCst) {
        csr_write!("0x7a1", 0);
    }
    if frame.previous_privilege() != 3 {
        // From U- or S-mode: back to M-mode, `enter_lower` returning the cause.
        frame.regs[10] = frame.mcause;
        frame.set_previous_privilege(3);
        frame.set_return_pc(addr(lower_return));
    } else {
        // SAFETY: every M-mode trap of this test comes from an instruction in RAM.
        unsafe { frame.skip_instruction() };
    }
}

/// Programs trigger `index`.
fn program(index: u64, tdata1: u64, tdata2: u64) {
    csr_write!("0x7a0", index);
    csr_write!("0x7a1", 0);
    csr_write!("0x7a2", tdata2);
    csr_write!("0x7a1", tdata1);
}

/// Disables every trigger found.
fn disable_all(count: u64) {
    for index in 0..count {
        csr_write!("0x7a0", index);
        csr_write!("0x7a1", 0);
    }
}

/// Runs `f` and returns what it returned and how many traps it took.
fn traps_of<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = TRAPS.load(SeqCst);
    let result = f();
    (result, TRAPS.load(SeqCst) - before)
}

/// Checks that exactly one breakpoint exception was taken at `epc` with `mtval` = `tval`.
fn check_breakpoint(name: &str, traps: u64, epc: u64, tval: u64, result_ok: bool) {
    let (cause, seen_epc, seen_tval) = (CAUSE.load(SeqCst), EPC.load(SeqCst), TVAL.load(SeqCst));
    check(
        name,
        traps == 1 && cause == trap::BREAKPOINT && seen_epc == epc && seen_tval == tval && result_ok,
        format_args!(
            "{traps} trap(s), mcause={cause} mepc={seen_epc:#x} mtval={seen_tval:#x} (want mepc={epc:#x} \
             mtval={tval:#x}), result ok: {result_ok}"
        ),
    );
}

/// Finds the triggers by writing `tselect` and reading it back; checks `tinfo` of each. Returns the count.
fn check_discovery() -> u64 {
    let mut count = 0;
    while count < 64 {
        csr_write!("0x7a0", count);
        if csr_read!("0x7a0") != count {
            break;
        }
        count += 1;
    }
    check("at least two triggers", count >= 2, format_args!("{count} triggers"));
    let mut all_mcontrol6 = true;
    for index in 0..count {
        csr_write!("0x7a0", index);
        let tinfo = csr_read!("0x7a4");
        all_mcontrol6 &= tinfo & (1 << 6) != 0 && tinfo >> 24 == 1;
    }
    check("tinfo: every trigger supports mcontrol6, version 1", all_mcontrol6, format_args!(""));
    csr_write!("0x7a0", 0);
    let before = csr_read!("0x7a0");
    csr_write!("0x7a0", 1000);
    let after = csr_read!("0x7a0");
    check("tselect keeps its value when written past the last trigger", after == before, format_args!("{after}"));
    count
}

fn check_execute_and_tcontrol() {
    csr_write!("0x7a5", 0);
    program(0, TYPE_MCONTROL6 | M | EXECUTE, addr(t_exec_at));
    let (result, traps) = traps_of(|| unsafe { t_exec() });
    check("M-mode trigger does not fire while tcontrol.mte is clear", traps == 0 && result == 3, format_args!(""));
    csr_write!("0x7a5", MTE);
    let (result, traps) = traps_of(|| unsafe { t_exec() });
    let at = addr(t_exec_at);
    check_breakpoint("execute trigger: breakpoint before the instruction", traps, at, at, result == 2);
    let inside = TCONTROL.load(SeqCst);
    let after = csr_read!("0x7a5");
    check(
        "a trap clears mte into mpte, mret restores mte",
        inside & (MTE | MPTE) == MPTE && after & MTE != 0,
        format_args!("tcontrol in the handler {inside:#x}, after mret {after:#x}"),
    );
    program(0, TYPE_MCONTROL6 | M | EXECUTE, addr(t_exec_at) + 4);
    let (result, traps) = traps_of(|| unsafe { t_exec() });
    check_breakpoint("execute trigger on the next instruction", traps, at + 4, at + 4, result == 1);
}

fn check_loads_and_stores() {
    let word = data(0);
    write(word, 0x1234_5678);
    program(1, TYPE_MCONTROL6 | M | LOAD, word);
    let (result, traps) = traps_of(|| unsafe { t_load_w(word) });
    check_breakpoint("load trigger: breakpoint before the load", traps, addr(t_load_w_at), word, result == word);
    let (_, traps) = traps_of(|| unsafe { t_store_w(word, 0x55) });
    // Reading the word back is a load: it would trip the trigger.
    program(1, 0, 0);
    let stored = read(word);
    check("a load trigger ignores stores", traps == 0 && stored == 0x55, format_args!("{traps} trap(s), {stored:#x}"));
    // An 8-byte load that covers the watched word from below.
    program(1, TYPE_MCONTROL6 | M | LOAD, word + 4);
    let (result, traps) = traps_of(|| unsafe { t_load_d(word) });
    check_breakpoint("a wider access matching a later byte", traps, addr(t_load_d_at), word, result == word);

    program(1, TYPE_MCONTROL6 | M | STORE, word);
    let (_, traps) = traps_of(|| unsafe { t_store_w(word, 0x66) });
    check_breakpoint("store trigger: breakpoint before the store", traps, addr(t_store_w_at), word, read(word) == 0x55);
    let (result, traps) = traps_of(|| unsafe { t_load_w(word) });
    check("a store trigger ignores loads", traps == 0 && result == 0x55, format_args!("{traps} trap(s)"));
    program(1, TYPE_MCONTROL6 | M | STORE, word + 8);
    let (_, traps) = traps_of(|| unsafe { t_store_w(word, 0x77) });
    check("no match elsewhere", traps == 0 && read(word) == 0x77, format_args!("{traps} trap(s)"));
    program(1, 0, 0);
}

/// Opens all memory to U- and S-mode through PMP entry 0.
fn open_pmp() {
    csr_write!("pmpaddr0", u64::MAX);
    csr_write!("pmpcfg0", 0x1f);
}

fn check_mode_bits() {
    open_pmp();
    let at = addr(t_lower_at);
    let lower = |mode| unsafe { enter_lower(addr(t_lower), mode, 0, 0) };
    program(0, TYPE_MCONTROL6 | U | EXECUTE, addr(t_exec_at));
    let (result, traps) = traps_of(|| unsafe { t_exec() });
    check("a U-mode trigger does not fire in M-mode", traps == 0 && result == 3, format_args!("{traps} trap(s)"));
    program(0, TYPE_MCONTROL6 | U | EXECUTE, at);
    let cause = lower(0);
    check(
        "a U-mode trigger fires in U-mode",
        cause == trap::BREAKPOINT && EPC.load(SeqCst) == at,
        format_args!("{cause}"),
    );
    let cause = lower(1);
    check("a U-mode trigger does not fire in S-mode", cause == trap::ECALL_FROM_S, format_args!("mcause {cause}"));
    program(0, TYPE_MCONTROL6 | S | EXECUTE, at);
    let cause = lower(1);
    check("an S-mode trigger fires in S-mode", cause == trap::BREAKPOINT, format_args!("mcause {cause}"));
    let cause = lower(0);
    check("an S-mode trigger does not fire in U-mode", cause == trap::ECALL_FROM_U, format_args!("mcause {cause}"));
    program(0, TYPE_MCONTROL6 | M | EXECUTE, at);
    let cause = lower(0);
    check("an M-mode trigger does not fire in U-mode", cause == trap::ECALL_FROM_U, format_args!("mcause {cause}"));
    program(0, TYPE_MCONTROL6 | EXECUTE, addr(t_exec_at));
    let (result, traps) = traps_of(|| unsafe { t_exec() });
    check("a trigger with no mode bit never fires", traps == 0 && result == 3, format_args!("{traps} trap(s)"));
    program(0, 0, 0);
}

fn check_warl() {
    csr_write!("0x7a0", 0);
    let legal_type = |value: u64| csr_read!("0x7a4") >> (value >> 60) & 1 == 1;
    let mut all_legal = true;
    for kind in [0u64, 1, 3, 4, 5, 7, 8, 12] {
        csr_write!("0x7a1", (kind << 60) | M | EXECUTE);
        let value = csr_read!("0x7a1");
        all_legal &= legal_type(value) && value == TYPE_DISABLED;
    }
    check("unsupported trigger types read back disabled (type 15)", all_legal, format_args!(""));
    let exact = TYPE_MCONTROL6 | M | S | U | LOAD | STORE | (3 << 7);
    csr_write!("0x7a1", exact);
    let value = csr_read!("0x7a1");
    check("a supported mcontrol6 value reads back as written", value == exact, format_args!("{value:#x}"));
    let matching = TYPE_MCONTROL6 | M | LOAD;
    csr_write!("0x7a1", matching | (5 << 7));
    let value = csr_read!("0x7a1");
    check("an unsupported match type reads back 0 (equal)", value == matching, format_args!("{value:#x}"));
    csr_write!("0x7a1", matching | (1 << 12) | DMODE);
    let value = csr_read!("0x7a1");
    check("M-mode cannot set dmode or action 1 (enter Debug Mode)", value == matching, format_args!("{value:#x}"));
    csr_write!("0x7a1", matching | (2 << 12) | CHAIN | SELECT | HIT0 | (1 << 16));
    let value = csr_read!("0x7a1");
    check(
        "unimplemented fields (action 2, chain, select, hit, size) read 0",
        value == matching,
        format_args!("{value:#x}"),
    );
    csr_write!("0x7a3", u64::MAX);
    let tdata3 = csr_read!("0x7a3");
    check("tdata3 (textra) reads 0", tdata3 == 0, format_args!("{tdata3:#x}"));
    csr_write!("0x7a2", 0xdead_beef_0000_0001);
    let tdata2 = csr_read!("0x7a2");
    check("tdata2 holds a full address", tdata2 == 0xdead_beef_0000_0001, format_args!("{tdata2:#x}"));
    csr_write!("0x7a1", 0);
    let (result, traps) = traps_of(|| unsafe { t_mcontext() });
    let cause = CAUSE.load(SeqCst);
    check("mcontext is absent", traps == 1 && cause == trap::ILLEGAL_INSTRUCTION && result == 1, format_args!(""));
    let (result, traps) = traps_of(|| unsafe { t_scontext() });
    let cause = CAUSE.load(SeqCst);
    check("scontext is absent", traps == 1 && cause == trap::ILLEGAL_INSTRUCTION && result == 1, format_args!(""));
}

/// A trigger armed by the loop itself, in iteration `ARM_AT` of a long loop (hot, on a translating engine).
fn check_hot_loop() {
    const ITERATIONS: u64 = 200_000;
    const ARM_AT: u64 = 150_000;
    let stored = data(2);
    DISARM.store(true, SeqCst);
    csr_write!("0x7a0", 1);
    csr_write!("0x7a1", 0);
    csr_write!("0x7a2", addr(t_hot_exec));
    let (result, traps) = traps_of(|| unsafe { t_hot(ITERATIONS, ARM_AT, TYPE_MCONTROL6 | M | EXECUTE, stored) });
    let at = addr(t_hot_exec);
    check_breakpoint("hot loop: execute trigger armed inside the loop", traps, at, at, result == ITERATIONS);
    let iteration = T1.load(SeqCst);
    check("hot loop: it fired in the iteration that armed it", iteration == ARM_AT, format_args!("{iteration}"));

    csr_write!("0x7a2", stored);
    let (result, traps) = traps_of(|| unsafe { t_hot(ITERATIONS, ARM_AT, TYPE_MCONTROL6 | M | STORE, stored) });
    check_breakpoint(
        "hot loop: store trigger armed inside the loop",
        traps,
        addr(t_hot_store),
        stored,
        result == ITERATIONS,
    );
    let (iteration, before) = (T1.load(SeqCst), STORED.load(SeqCst));
    check(
        "hot loop: the store did not happen, in the iteration that armed it",
        iteration == ARM_AT && before == ARM_AT - 1 && read(stored) == ITERATIONS,
        format_args!("iteration {iteration}, memory {before} at the trap"),
    );
    DISARM.store(false, SeqCst);
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    let count = check_discovery();
    disable_all(count);
    check_execute_and_tcontrol();
    check_loads_and_stores();
    check_mode_bits();
    check_warl();
    disable_all(count);
    check_hot_loop();
    checks::finish("triggers")
}
