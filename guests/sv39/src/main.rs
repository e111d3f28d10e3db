//! `sv39`: Sv39 paging test. M-mode builds page tables in page-aligned statics, opens all memory to S/U through
//! PMP entry 0 (NAPOT, RWX), turns on Sv39 and runs small assembly snippets in S-mode and U-mode with `mret`.
//! Nothing is delegated: every page fault comes back to the M-mode handler, which records `mcause`, `mepc`,
//! `mtval` and `mstatus.MPP`, then skips the faulting load/store (or, for a fetch fault, returns to M-mode).
//! Each snippet ends with `ecall`, which brings control back to M-mode with the snippet's `a0`.
//!
//! Checks, one `ok:`/`FAIL:` line each: identity-mapped code in S and (through a U alias) in U; a 4 KiB page at a
//! different virtual address aliases its physical page; 2 MiB and 1 GiB superpages; a misaligned megapage faults;
//! an invalid PTE gives load/store/instruction page faults (13/15/12) with `mtval` the virtual address; W without R
//! faults; SUM; S never executes U pages; U cannot touch S pages; MXR; A/D updates (in hardware, or by the
//! handler after a fault, as the privileged spec allows); `sfence.vma` after a remap; non-canonical addresses;
//! `satp` WARL with an unsupported mode. Ends with `sv39: all N checks passed` (exit 0) or a failure count
//! (exit 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use rt::addr;
use rt::checks::{self, check};
use rt::lower::{enter_lower, lower_return};
use rt::trap::{self, TrapFrame};
use rt::{csr_clear, csr_read, csr_set, csr_write, println};

// Snippets run in S-mode or U-mode, entered with `rt::lower::enter_lower` (which uses t0 in M-mode); the M-mode
// handler resumes at `lower_return` when the snippet's ecall (or a fetch fault) comes back. They use only a0/a1,
// never the stack, and are uncompressed so the handler can skip a faulting instruction by adding 4 without
// reading it (its virtual address may mean nothing to M-mode).
core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc

    .balign 4
    .globl s_ident
s_ident:
    li a0, 42
    ecall

    .balign 4
    .globl s_load, s_load_at
s_load:
s_load_at:
    ld a0, 0(a0)
    ecall

    .balign 4
    .globl s_store, s_store_at
s_store:
s_store_at:
    sd a1, 0(a0)
    ecall

    .balign 4
    .globl s_jump
s_jump:
    jr a0

    /* A page of code of its own, mapped as a U page elsewhere. */
    .section .text.upage, "ax", @progbits
    .balign 4096
    .globl u_page
u_page:
    li a0, 7
    ecall
    .balign 4096

    .option pop
"#
);

extern "C" {
    fn s_ident();
    fn s_load();
    fn s_load_at();
    fn s_store();
    fn s_store_at();
    fn s_jump();
    fn u_page();
}

// PTE bits (privileged spec, Sv39 page table entry).
const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;

// mstatus bits.
const MSTATUS_SUM: u64 = 1 << 18;
const MSTATUS_MXR: u64 = 1 << 19;

const MODE_U: u64 = 0;
const MODE_S: u64 = 1;
const MODE_M: u64 = 3;

// Exception codes.
const FETCH_PF: u64 = 12;
const LOAD_PF: u64 = 13;
const STORE_PF: u64 = 15;

/// Start of RAM (and of the image).
const RAM: u64 = 0x8000_0000;

// The virtual address layout.
/// Root index 0 (VA 0..1 GiB) points to `L1`; `L1[1]` (VA 0x20_0000..0x40_0000) points to `L0` (4 KiB pages).
const VA_4K: u64 = 0x20_0000;
/// `L1[2]`: a 2 MiB megapage onto RAM at 0x8000_0000 (S, read-only).
const VA_MEGA: u64 = 0x40_0000;
/// `L1[3]`: a misaligned megapage (PPN of 0x8000_1000).
const VA_MISALIGNED: u64 = 0x60_0000;
/// Root index 4: a 1 GiB U gigapage onto RAM (RWX): the U-mode alias of the code.
const VA_USER: u64 = 0x1_0000_0000;
/// Root index 5: a 1 GiB S gigapage onto RAM (read-only).
const VA_GIGA: u64 = 0x1_4000_0000;
// 4 KiB pages of `L0`, by index.
const P_DATA: u64 = 0; // DATA, S RW
const P_INVALID: u64 = 1; // V = 0
const P_W_ONLY: u64 = 2; // W without R (reserved)
const P_USER_DATA: u64 = 3; // DATA, U RW
const P_USER_CODE: u64 = 4; // u_page, U X
const P_S_DATA: u64 = 5; // DATA, S RW (for U access)
const P_EXEC_ONLY: u64 = 6; // DATA, S X only
const P_AD: u64 = 7; // DATA2, S RW, A = D = 0
const P_REMAP: u64 = 8; // DATA, then DATA2

fn va4k(index: u64) -> u64 {
    VA_4K + index * 0x1000
}

/// One page-table or data page.
#[repr(C, align(4096))]
struct Page([u64; 512]);

static mut ROOT: Page = Page([0; 512]);
static mut L1: Page = Page([0; 512]);
static mut L0: Page = Page([0; 512]);
static mut DATA: Page = Page([0; 512]);
static mut DATA2: Page = Page([0; 512]);

fn root() -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(ROOT.0) as *mut u64 }
}
fn l1() -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(L1.0) as *mut u64 }
}
fn l0() -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(L0.0) as *mut u64 }
}
fn data() -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(DATA.0) as *mut u64 }
}
fn data2() -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(DATA2.0) as *mut u64 }
}

/// A leaf or pointer PTE for physical address `pa` with `flags`.
fn pte(pa: u64, flags: u64) -> u64 {
    ((pa >> 12) << 10) | flags
}

/// Writes entry `index` of the table at `table`.
fn set_pte(table: *mut u64, index: u64, value: u64) {
    // SAFETY: `table` is one of the 512-entry page statics and index < 512.
    unsafe { table.add(index as usize).write_volatile(value) };
}

fn get_pte(table: *mut u64, index: u64) -> u64 {
    // SAFETY: as for `set_pte`.
    unsafe { table.add(index as usize).read_volatile() }
}

/// Word `i` of a data page.
fn word(page: *mut u64, i: usize) -> u64 {
    // SAFETY: i < 512.
    unsafe { page.add(i).read_volatile() }
}

fn sfence() {
    // SAFETY: flushes address-translation caches only.
    unsafe { core::arch::asm!("sfence.vma", options(nostack)) };
}

/// A load (or store) from a lower mode that faulted, as the handler returns it in a0.
const FAULTED: u64 = 0xdead_beef_0bad_f00d;

// What the handler saw last.
static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static EPC: AtomicU64 = AtomicU64::new(0);
static TVAL: AtomicU64 = AtomicU64::new(0);
static MPP: AtomicU64 = AtomicU64::new(0);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);
/// When set, a page fault at the A/D test page is resolved by setting A (and D for a store) and retrying.
static AD_FIXUP: AtomicBool = AtomicBool::new(false);
static AD_FAULTS: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut TrapFrame) {
    if IN_HANDLER.swap(true, SeqCst) {
        println!("FAIL: trap inside the trap handler: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
        rt::exit(103);
    }
    if frame.is_interrupt() || frame.previous_privilege() == MODE_M {
        println!(
            "FAIL: unexpected trap from M-mode or interrupt: mcause={:#x} mepc={:#x} mtval={:#x}",
            frame.mcause, frame.mepc, frame.mtval
        );
        rt::exit(102);
    }
    let code = frame.code();
    let ad_page = (frame.mtval & !0xfff) == va4k(P_AD);
    if AD_FIXUP.load(SeqCst) && ad_page && (code == LOAD_PF || code == STORE_PF) {
        // The spec's other option: A/D are managed by software after a page fault.
        let bits = if code == STORE_PF { A | D } else { A };
        set_pte(l0(), P_AD, get_pte(l0(), P_AD) | bits);
        sfence();
        AD_FAULTS.fetch_add(1, SeqCst);
        IN_HANDLER.store(false, SeqCst);
        return;
    }
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    EPC.store(frame.mepc, SeqCst);
    TVAL.store(frame.mtval, SeqCst);
    MPP.store(frame.previous_privilege(), SeqCst);
    match code {
        trap::ECALL_FROM_U | trap::ECALL_FROM_S => {
            frame.set_previous_privilege(MODE_M);
            frame.set_return_pc(addr(lower_return));
        }
        LOAD_PF | STORE_PF => {
            frame.regs[10] = FAULTED;
            frame.mepc += 4;
        }
        _ => {
            // A fetch fault (or anything else): back to M-mode.
            frame.regs[10] = FAULTED;
            frame.set_previous_privilege(MODE_M);
            frame.set_return_pc(addr(lower_return));
        }
    }
    IN_HANDLER.store(false, SeqCst);
}

/// What one run of a snippet in a lower mode did.
#[derive(Debug)]
struct Outcome {
    /// a0 when control came back.
    result: u64,
    /// Page faults (and other traps) before the final ecall or fetch fault; the traps recorded last are those.
    faults: u64,
    /// The last trap (the ecall, or the fetch fault).
    cause: u64,
    epc: u64,
    tval: u64,
    mpp: u64,
    /// The trap before the last one (the page fault of a load/store that was skipped).
    fault_cause: u64,
    fault_epc: u64,
    fault_tval: u64,
}

/// Runs the snippet at `pc` in `mode` with a0/a1, returning what happened.
fn run(pc: u64, mode: u64, a0: u64, a1: u64) -> Outcome {
    let before = TRAPS.load(SeqCst);
    // Capture the first trap of the run (a skipped page fault) separately from the final ecall.
    FIRST.store(true, SeqCst);
    // SAFETY: the snippets only use a0/a1 and come back through the handler to `lower_return`.
    let result = unsafe { enter_lower(pc, mode, a0, a1) };
    let traps = TRAPS.load(SeqCst) - before;
    let (fault_cause, fault_epc, fault_tval) =
        (FIRST_CAUSE.load(SeqCst), FIRST_EPC.load(SeqCst), FIRST_TVAL.load(SeqCst));
    Outcome {
        result,
        faults: traps.saturating_sub(1),
        cause: CAUSE.load(SeqCst),
        epc: EPC.load(SeqCst),
        tval: TVAL.load(SeqCst),
        mpp: MPP.load(SeqCst),
        fault_cause,
        fault_epc,
        fault_tval,
    }
}

static FIRST: AtomicBool = AtomicBool::new(false);
static FIRST_CAUSE: AtomicU64 = AtomicU64::new(0);
static FIRST_EPC: AtomicU64 = AtomicU64::new(0);
static FIRST_TVAL: AtomicU64 = AtomicU64::new(0);

/// The handler of this guest: records the first trap of a run, then does the work.
fn recording_handler(frame: &mut TrapFrame) {
    if FIRST.swap(false, SeqCst) {
        FIRST_CAUSE.store(frame.mcause, SeqCst);
        FIRST_EPC.store(frame.mepc, SeqCst);
        FIRST_TVAL.store(frame.mtval, SeqCst);
    }
    handler(frame);
}

/// The U-mode alias of a code address (through the U gigapage at `VA_USER`).
fn user(pc: u64) -> u64 {
    pc - RAM + VA_USER
}

/// Checks a load or store that must succeed: no fault, then the ecall from `mode`.
fn expect_ok(name: &str, o: &Outcome, mode: u64, result: Option<u64>) {
    let ecall = if mode == MODE_S { trap::ECALL_FROM_S } else { trap::ECALL_FROM_U };
    check(
        name,
        o.faults == 0 && o.cause == ecall && o.mpp == mode && result.is_none_or(|r| r == o.result),
        format_args!("{o:x?}, want result {result:x?}"),
    );
}

/// Checks a load or store that must fault once with `cause` at `epc`, mtval `tval`, then come back.
fn expect_fault(name: &str, o: &Outcome, mode: u64, cause: u64, epc: u64, tval: u64) {
    let ecall = if mode == MODE_S { trap::ECALL_FROM_S } else { trap::ECALL_FROM_U };
    check(
        name,
        o.faults == 1
            && o.fault_cause == cause
            && o.fault_epc == epc
            && o.fault_tval == tval
            && o.cause == ecall
            && o.mpp == mode
            && o.result == FAULTED,
        format_args!("{o:x?}, want a fault with mcause {cause} mepc {epc:#x} mtval {tval:#x}"),
    );
}

/// Checks a jump that must end in an instruction page fault at `target`.
fn expect_fetch_fault(name: &str, o: &Outcome, mode: u64, target: u64) {
    check(
        name,
        o.faults == 0 && o.cause == FETCH_PF && o.epc == target && o.tval == target && o.mpp == mode,
        format_args!("{o:x?}, want mcause 12 with mepc = mtval = {target:#x}"),
    );
}

fn build_tables() {
    let data_pa = data() as u64;
    let data2_pa = data2() as u64;
    for i in 0..512 {
        // SAFETY: i < 512.
        unsafe {
            data().add(i).write_volatile(0x1111_0000_0000_0000 | i as u64);
            data2().add(i).write_volatile(0x2222_0000_0000_0000 | i as u64);
        }
    }
    set_pte(root(), 0, pte(l1() as u64, V));
    set_pte(root(), RAM >> 30, pte(RAM, V | R | W | X | A | D));
    set_pte(root(), VA_USER >> 30, pte(RAM, V | R | W | X | U | A | D));
    set_pte(root(), VA_GIGA >> 30, pte(RAM, V | R | A));
    set_pte(l1(), VA_4K >> 21, pte(l0() as u64, V));
    set_pte(l1(), VA_MEGA >> 21, pte(RAM, V | R | A));
    set_pte(l1(), VA_MISALIGNED >> 21, pte(RAM + 0x1000, V | R | W | A | D));
    set_pte(l0(), P_DATA, pte(data_pa, V | R | W | A | D));
    set_pte(l0(), P_INVALID, pte(data_pa, R | W | X | A | D));
    set_pte(l0(), P_W_ONLY, pte(data_pa, V | W | A | D));
    set_pte(l0(), P_USER_DATA, pte(data_pa, V | R | W | U | A | D));
    set_pte(l0(), P_USER_CODE, pte(addr(u_page), V | X | U | A));
    set_pte(l0(), P_S_DATA, pte(data_pa, V | R | W | A | D));
    set_pte(l0(), P_EXEC_ONLY, pte(data_pa, V | X | A));
    set_pte(l0(), P_AD, pte(data2_pa, V | R | W));
    set_pte(l0(), P_REMAP, pte(data_pa, V | R | W | A | D));
}

fn check_basic() {
    let o = run(addr(s_ident), MODE_S, 0, 0);
    check(
        "S-mode runs identity-mapped code (ecall from S, mcause 9)",
        o.faults == 0 && o.cause == trap::ECALL_FROM_S && o.mpp == MODE_S && o.result == 42,
        format_args!("{o:x?}"),
    );
    let o = run(user(addr(s_ident)), MODE_U, 0, 0);
    check(
        "U-mode runs code through a U gigapage alias (ecall from U, mcause 8)",
        o.faults == 0
            && o.cause == trap::ECALL_FROM_U
            && o.mpp == MODE_U
            && o.result == 42
            && o.epc == user(addr(s_ident)) + 4,
        format_args!("{o:x?}"),
    );
    let data_pa = data() as u64;
    let o = run(addr(s_load), MODE_S, data_pa + 8 * 5, 0);
    expect_ok("S load through the identity gigapage", &o, MODE_S, Some(word(data(), 5)));

    let o = run(addr(s_load), MODE_S, va4k(P_DATA) + 8 * 3, 0);
    expect_ok("4 KiB page at another VA reads the same bytes as the physical page", &o, MODE_S, Some(word(data(), 3)));
    let o = run(addr(s_store), MODE_S, va4k(P_DATA) + 8 * 4, 0x0123_4567_89ab_cdef);
    let o2 = run(addr(s_load), MODE_S, data_pa + 8 * 4, 0);
    check(
        "a store through the 4 KiB alias shows at the physical address (and through identity)",
        o.faults == 0 && word(data(), 4) == 0x0123_4567_89ab_cdef && o2.result == 0x0123_4567_89ab_cdef,
        format_args!("{o:x?} then {o2:x?}; DATA[4]={:#x}", word(data(), 4)),
    );

    let offset = data_pa - RAM;
    if offset + 0x1000 > 0x20_0000 {
        check(
            "DATA lies in the first 2 MiB of RAM (for the megapage check)",
            false,
            format_args!("DATA at {data_pa:#x}"),
        );
    } else {
        let o = run(addr(s_load), MODE_S, VA_MEGA + offset + 8 * 7, 0);
        expect_ok("2 MiB megapage maps RAM at VA 0x40_0000", &o, MODE_S, Some(word(data(), 7)));
    }
    let o = run(addr(s_load), MODE_S, VA_GIGA + offset + 8 * 9, 0);
    expect_ok("1 GiB gigapage maps RAM at VA 0x1_4000_0000", &o, MODE_S, Some(word(data(), 9)));
    let va = VA_MISALIGNED + 0x18;
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault("misaligned megapage (PPN[0] != 0): load page fault", &o, MODE_S, LOAD_PF, addr(s_load_at), va);
}

fn check_invalid_and_reserved() {
    let va = va4k(P_INVALID) + 0x28;
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault("V=0: load page fault (13), mtval the VA", &o, MODE_S, LOAD_PF, addr(s_load_at), va);
    let o = run(addr(s_store), MODE_S, va, 1);
    expect_fault("V=0: store page fault (15), mtval the VA", &o, MODE_S, STORE_PF, addr(s_store_at), va);
    let target = va4k(P_INVALID) + 0x40;
    let o = run(addr(s_jump), MODE_S, target, 0);
    expect_fetch_fault("V=0: instruction page fault (12), mepc = mtval = the VA", &o, MODE_S, target);

    let va = va4k(P_W_ONLY) + 0x10;
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault("W without R (reserved): load page fault", &o, MODE_S, LOAD_PF, addr(s_load_at), va);
    let o = run(addr(s_store), MODE_S, va, 1);
    expect_fault("W without R (reserved): store page fault", &o, MODE_S, STORE_PF, addr(s_store_at), va);

    let va = (1 << 39) | (data() as u64);
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault(
        "non-canonical VA (bit 39 set, bit 38 clear): load page fault, mtval the VA",
        &o,
        MODE_S,
        LOAD_PF,
        addr(s_load_at),
        va,
    );
    let va = 0xffff_ff00_0000_0000u64 | (data() as u64);
    let o = run(addr(s_store), MODE_S, va, 1);
    expect_fault(
        "non-canonical VA (bits 63..39 set, bit 38 clear): store page fault",
        &o,
        MODE_S,
        STORE_PF,
        addr(s_store_at),
        va,
    );
}

fn check_permissions() {
    let va = va4k(P_USER_DATA) + 8 * 11;
    csr_clear!("mstatus", MSTATUS_SUM);
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault("S load from a U page without SUM: page fault", &o, MODE_S, LOAD_PF, addr(s_load_at), va);
    csr_set!("mstatus", MSTATUS_SUM);
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_ok("S load from a U page with SUM succeeds", &o, MODE_S, Some(word(data(), 11)));
    let target = va4k(P_USER_CODE);
    let o = run(addr(s_jump), MODE_S, target, 0);
    expect_fetch_fault("S executing a U page faults even with SUM", &o, MODE_S, target);
    csr_clear!("mstatus", MSTATUS_SUM);

    let o = run(user(addr(s_jump)), MODE_U, target, 0);
    check(
        "U executes its U page (X only, at another VA)",
        o.faults == 0 && o.cause == trap::ECALL_FROM_U && o.result == 7 && o.epc == target + 4,
        format_args!("{o:x?}"),
    );
    let o = run(user(addr(s_load)), MODE_U, va, 0);
    expect_ok("U load from a U page succeeds", &o, MODE_U, Some(word(data(), 11)));
    let va = va4k(P_S_DATA) + 8;
    let o = run(user(addr(s_load)), MODE_U, va, 0);
    expect_fault("U load from an S page: page fault", &o, MODE_U, LOAD_PF, user(addr(s_load_at)), va);
    let o = run(user(addr(s_store)), MODE_U, va, 5);
    expect_fault("U store to an S page: page fault", &o, MODE_U, STORE_PF, user(addr(s_store_at)), va);
    let o = run(addr(s_ident), MODE_U, 0, 0);
    check(
        "U fetch from S-only identity code: page fault",
        o.cause == FETCH_PF && o.epc == addr(s_ident) && o.mpp == MODE_U,
        format_args!("{o:x?}"),
    );

    let va = va4k(P_EXEC_ONLY) + 8 * 13;
    csr_clear!("mstatus", MSTATUS_MXR);
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_fault("load from an execute-only page without MXR: page fault", &o, MODE_S, LOAD_PF, addr(s_load_at), va);
    csr_set!("mstatus", MSTATUS_MXR);
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_ok("load from an execute-only page with MXR succeeds", &o, MODE_S, Some(word(data(), 13)));
    csr_clear!("mstatus", MSTATUS_MXR);
}

fn check_accessed_dirty() {
    AD_FIXUP.store(true, SeqCst);
    let before = AD_FAULTS.load(SeqCst);
    let va = va4k(P_AD) + 8 * 2;
    let o = run(addr(s_load), MODE_S, va, 0);
    let pte_after_load = get_pte(l0(), P_AD);
    let load_faults = AD_FAULTS.load(SeqCst) - before;
    let loaded = word(data2(), 2);
    let o2 = run(addr(s_store), MODE_S, va, 0x5a5a);
    let pte_after_store = get_pte(l0(), P_AD);
    let store_faults = AD_FAULTS.load(SeqCst) - before - load_faults;
    AD_FIXUP.store(false, SeqCst);
    expect_ok("load from a page with A=0 (hardware A update or fault + retry)", &o, MODE_S, Some(loaded));
    check(
        "after the load, A is set and D is not",
        pte_after_load & (A | D) == A,
        format_args!("PTE {pte_after_load:#x} ({load_faults} fault(s) resolved in software)"),
    );
    check(
        "after a store, A and D are set and the store landed",
        o2.faults == 0 && pte_after_store & (A | D) == A | D && word(data2(), 2) == 0x5a5a,
        format_args!("{o2:x?}; PTE {pte_after_store:#x} ({store_faults} fault(s) resolved in software)"),
    );
    println!("   (A/D: {load_faults} load and {store_faults} store fault(s) handled in software)");
}

fn check_sfence() {
    let va = va4k(P_REMAP) + 8 * 20;
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_ok("remap page first reads DATA", &o, MODE_S, Some(word(data(), 20)));
    set_pte(l0(), P_REMAP, pte(data2() as u64, V | R | W | A | D));
    sfence();
    let o = run(addr(s_load), MODE_S, va, 0);
    expect_ok("after remapping and sfence.vma, the load sees the new page", &o, MODE_S, Some(word(data2(), 20)));
}

fn check_satp_warl() {
    let old = csr_read!("satp");
    for mode in [10u64, 11] {
        let value = (mode << 60) | (old & ((1 << 44) - 1));
        csr_write!("satp", value);
        let read = csr_read!("satp");
        csr_write!("satp", old);
        sfence();
        check(
            if mode == 10 {
                "satp write with mode 10 (Sv57): reads back as written or unchanged (WARL)"
            } else {
                "satp write with reserved mode 11: reads back as written or unchanged (WARL)"
            },
            read == value || read == old,
            format_args!("wrote {value:#x}, read {read:#x}, old {old:#x}"),
        );
    }
    let restored = csr_read!("satp");
    check("satp restored to Sv39", restored == old, format_args!("satp={restored:#x}, want {old:#x}"));
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(recording_handler);
    // PMP entry 0: NAPOT over all addresses, RWX, so S and U may access memory.
    csr_write!("pmpaddr0", u64::MAX);
    csr_write!("pmpcfg0", 0x1f);
    build_tables();
    let satp = (8 << 60) | ((root() as u64) >> 12);
    csr_write!("satp", satp);
    sfence();
    let read = csr_read!("satp");
    check("satp takes mode 8 (Sv39)", read == satp, format_args!("satp={read:#x}, want {satp:#x}"));

    check_basic();
    check_invalid_and_reserved();
    check_permissions();
    check_accessed_dirty();
    check_sfence();
    check_satp_warl();

    csr_write!("satp", 0);
    sfence();
    checks::finish("sv39")
}
