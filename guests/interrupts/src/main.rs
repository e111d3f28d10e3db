//! `interrupts`: CLINT interrupts and delegation. Checks, one `ok:`/`FAIL:` line each: an M-mode timer interrupt
//! preempting a counting loop (mcause 0x8000000000000007, `mepc` inside the loop); a masked timer interrupt that is
//! pending in `mip.MTIP` but only taken once `mstatus.MIE` is set; `wfi` woken by the timer; a machine software
//! interrupt through `msip` (cause 3); delegation of STI/SSI with `mideleg` (a timer interrupt taken in M-mode
//! while S-mode runs makes M-mode set `mip.STIP`, as OpenSBI does, and S-mode takes scause 0x8000000000000005;
//! `csrs sip` from S-mode raises SSI, scause 0x8000000000000001; a delegated interrupt is never taken in M-mode);
//! priority of MSI over MTI; exception delegation with `medeleg` (illegal instruction from U and S, `ecall` from U,
//! with `scause`, `sepc` and `sstatus.SPP`). Ends with `interrupts: all N checks passed` (exit 0) or a failure
//! count (exit 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use rt::addr;
use rt::checks::{self, check};
use rt::clint::{mtime, set_msip, set_mtimecmp};
use rt::lower::{enter_lower, lower_return};
use rt::trap::{self, TrapFrame};
use rt::{csr_clear, csr_read, csr_set, csr_write, println};

// Interrupt bits of mip/mie (and codes: bit n is interrupt code n).
const SSI: u64 = 1 << 1;
const MSI: u64 = 1 << 3;
const STI: u64 = 1 << 5;
const MTI: u64 = 1 << 7;

const INTERRUPT: u64 = 1 << 63;

// mstatus bits.
const MSTATUS_SIE: u64 = 1 << 1;
const MSTATUS_MIE: u64 = 1 << 3;
/// `sstatus.SPP`.
const SSTATUS_SPP: u64 = 1 << 8;

const MODE_U: u64 = 0;
const MODE_S: u64 = 1;
const MODE_M: u64 = 3;

// Snippets, run in S- or U-mode with `rt::lower::enter_lower` (except `m_spin`, called in M-mode): they use only
// a0, a1, t0, t1 and end with `ecall` or `ebreak`, which the M-mode handler turns into a return from `enter_lower`. `s_trap` is the S-mode
// trap vector: it records scause/sepc/sstatus/stval and a count in `S_REC`, using only t3 and t4.
core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc

    /* M-mode: enable MIE, then count in a0 until FLAG is set or a0 reaches a1. MIE is set here, not by
       the caller, so an interrupt that is already pending (a VMM may deschedule the VM for longer than
       the timer's delay) is still taken inside the loop, never before it. */
    .balign 4
    .globl m_spin, m_spin_loop, m_spin_end
m_spin:
    li a0, 0
    la t1, FLAG
    csrsi mstatus, 8
m_spin_loop:
    addi a0, a0, 1
    lw t0, 0(t1)
    bnez t0, m_spin_end
    bltu a0, a1, m_spin_loop
m_spin_end:
    ret

    /* S-mode: enable SIE, then spin until S_REC's count is nonzero or a0 iterations went by. */
    .balign 4
    .globl s_spin, s_spin_loop, s_spin_end
s_spin:
    csrsi sstatus, 2
    la t1, S_REC
s_spin_loop:
    ld t0, 32(t1)
    bnez t0, s_spin_end
    addi a0, a0, -1
    bnez a0, s_spin_loop
s_spin_end:
    ecall

    /* S-mode: enable SIE, raise SSIP through sip. */
    .balign 4
    .globl s_ssip, s_ssip_after, s_ssip_end
s_ssip:
    csrsi sstatus, 2
    li t0, 2
    csrs sip, t0
s_ssip_after:
    nop
    nop
    nop
s_ssip_end:
    ecall

    /* S-mode: enable SIE, do nothing. */
    .balign 4
    .globl s_sie_nop
s_sie_nop:
    csrsi sstatus, 2
    nop
    ecall

    /* U- or S-mode: an illegal instruction, then ebreak back to M-mode; a0 = 1 if execution went on after it. */
    .balign 4
    .globl l_illegal, l_illegal_at
l_illegal:
    li a0, 0
l_illegal_at:
    .4byte 0xffffffff
    addi a0, a0, 1
    ebreak

    /* U-mode: ecall (delegated to S), then ebreak back to M-mode. */
    .balign 4
    .globl l_ecall, l_ecall_at
l_ecall:
    li a0, 0
l_ecall_at:
    ecall
    addi a0, a0, 1
    ebreak

    /* The S-mode trap vector. */
    .balign 4
    .globl s_trap
s_trap:
    la t4, S_REC
    csrr t3, scause
    sd t3, 0(t4)
    csrr t3, sepc
    sd t3, 8(t4)
    csrr t3, sstatus
    sd t3, 16(t4)
    csrr t3, stval
    sd t3, 24(t4)
    ld t3, 32(t4)
    addi t3, t3, 1
    sd t3, 32(t4)
    csrr t3, scause
    bltz t3, 1f
    /* An exception: skip the instruction. */
    csrr t3, sepc
    addi t3, t3, 4
    csrw sepc, t3
    sret
1:
    /* An interrupt: mask everything and clear SSIP (STIP is M-mode's to clear). */
    csrw sie, zero
    csrci sip, 2
    sret

    .option pop
"#
);

extern "C" {
    fn m_spin(unused: u64, limit: u64) -> u64;
    fn m_spin_loop();
    fn m_spin_end();
    fn s_spin();
    fn s_spin_loop();
    fn s_spin_end();
    fn s_ssip();
    fn s_ssip_after();
    fn s_ssip_end();
    fn s_sie_nop();
    fn l_illegal();
    fn l_illegal_at();
    fn l_ecall();
    fn l_ecall_at();
    fn s_trap();
}

/// Set by the M-mode handler when an interrupt arrived (read by `m_spin`).
#[unsafe(no_mangle)]
static FLAG: AtomicU32 = AtomicU32::new(0);

/// What the S-mode trap vector saw: scause, sepc, sstatus, stval, count.
#[unsafe(no_mangle)]
static S_REC: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

fn s_rec() -> (u64, u64, u64, u64, u64) {
    let r = |i: usize| S_REC[i].load(SeqCst);
    (r(0), r(1), r(2), r(3), r(4))
}

fn clear_s_rec() {
    S_REC.iter().for_each(|a| a.store(0, SeqCst));
}

// What the M-mode handler saw.
static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static EPC: AtomicU64 = AtomicU64::new(0);
static MPP: AtomicU64 = AtomicU64::new(0);
/// The causes of the interrupts taken, in order (up to 8).
static ORDER: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static ORDER_LEN: AtomicUsize = AtomicUsize::new(0);
/// When set, a machine timer interrupt makes the handler set `mip.STIP` (the OpenSBI way to give S a timer).
static FORWARD_TIMER: AtomicBool = AtomicBool::new(false);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

fn handler(frame: &mut TrapFrame) {
    if IN_HANDLER.swap(true, SeqCst) {
        println!("FAIL: trap inside the trap handler: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
        rt::exit(103);
    }
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    EPC.store(frame.mepc, SeqCst);
    MPP.store(frame.previous_privilege(), SeqCst);
    if frame.is_interrupt() {
        let n = ORDER_LEN.fetch_add(1, SeqCst);
        if n < ORDER.len() {
            ORDER[n].store(frame.mcause, SeqCst);
        }
        match frame.code() {
            7 => {
                set_mtimecmp(u64::MAX);
                if FORWARD_TIMER.load(SeqCst) {
                    csr_set!("mip", STI);
                }
            }
            3 => set_msip(0),
            _ => {
                println!("FAIL: unexpected interrupt: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
                rt::exit(102);
            }
        }
        FLAG.store(1, SeqCst);
    } else if frame.previous_privilege() != MODE_M
        && [trap::ECALL_FROM_U, trap::ECALL_FROM_S, trap::BREAKPOINT].contains(&frame.code())
    {
        // The end of a snippet: back to M-mode after `enter_lower`; M-mode owns STIP, so clear it.
        csr_clear!("mip", STI);
        frame.set_previous_privilege(MODE_M);
        frame.set_return_pc(addr(lower_return));
    } else {
        println!(
            "FAIL: unexpected exception: mcause={:#x} mepc={:#x} mtval={:#x} mpp={}",
            frame.mcause,
            frame.mepc,
            frame.mtval,
            frame.previous_privilege()
        );
        rt::exit(102);
    }
    IN_HANDLER.store(false, SeqCst);
}

fn reset() {
    csr_clear!("mstatus", MSTATUS_MIE | MSTATUS_SIE);
    csr_write!("mie", 0);
    csr_clear!("mip", STI | SSI);
    set_mtimecmp(u64::MAX);
    set_msip(0);
    FLAG.store(0, SeqCst);
    ORDER_LEN.store(0, SeqCst);
    clear_s_rec();
}

/// Waits (without interrupts) until `mip & bits == bits` or about 100 ms of `mtime` went by.
fn wait_pending(bits: u64) -> bool {
    let deadline = mtime() + 1_000_000;
    while csr_read!("mip") & bits != bits {
        if mtime() > deadline {
            return false;
        }
    }
    true
}

/// Iterations bound for the spin loops (far more than the few milliseconds a timer needs).
const SPIN_LIMIT: u64 = 200_000_000;

fn check_machine_timer() {
    reset();
    let traps = TRAPS.load(SeqCst);
    set_mtimecmp(mtime() + 20_000); // 2 ms
    csr_set!("mie", MTI);
    // SAFETY: m_spin sets mstatus.MIE, reads FLAG and counts.
    let count = unsafe { m_spin(0, SPIN_LIMIT) };
    csr_clear!("mstatus", MSTATUS_MIE);
    let (cause, epc) = (CAUSE.load(SeqCst), EPC.load(SeqCst));
    check(
        "M timer interrupt preempts a loop: mcause 0x8000000000000007, mepc in the loop",
        TRAPS.load(SeqCst) - traps == 1
            && cause == INTERRUPT | 7
            && (addr(m_spin_loop)..=addr(m_spin_end)).contains(&epc)
            && count > 0
            && count < SPIN_LIMIT,
        format_args!("{} trap(s), mcause={cause:#x} mepc={epc:#x}, loop count {count}", TRAPS.load(SeqCst) - traps),
    );
    let mip = csr_read!("mip");
    check("mip.MTIP clears when mtimecmp is moved past mtime", mip & MTI == 0, format_args!("mip={mip:#x}"));
}

fn check_masked_timer() {
    reset();
    let traps = TRAPS.load(SeqCst);
    set_mtimecmp(mtime() + 1000);
    csr_set!("mie", MTI);
    let pending = wait_pending(MTI);
    let taken_while_masked = TRAPS.load(SeqCst) - traps;
    check(
        "with MIE=0 the timer interrupt is pending in mip.MTIP but not taken",
        pending && taken_while_masked == 0,
        format_args!("pending={pending}, {taken_while_masked} trap(s)"),
    );
    csr_set!("mstatus", MSTATUS_MIE);
    // SAFETY: a no-op that gives the interrupt an instruction boundary.
    unsafe { core::arch::asm!("nop", options(nomem, nostack)) };
    csr_clear!("mstatus", MSTATUS_MIE);
    check(
        "setting mstatus.MIE takes the pending timer interrupt",
        TRAPS.load(SeqCst) - traps == 1 && CAUSE.load(SeqCst) == INTERRUPT | 7,
        format_args!("{} trap(s), mcause={:#x}", TRAPS.load(SeqCst) - traps, CAUSE.load(SeqCst)),
    );
}

fn check_wfi() {
    reset();
    let traps = TRAPS.load(SeqCst);
    let target = mtime() + 50_000; // 5 ms
    set_mtimecmp(target);
    csr_set!("mie", MTI);
    csr_set!("mstatus", MSTATUS_MIE);
    let mut wfis = 0u64;
    while FLAG.load(SeqCst) == 0 && wfis < 1_000_000 {
        // SAFETY: `wfi` waits for an interrupt, which the handler takes.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
        wfis += 1;
    }
    csr_clear!("mstatus", MSTATUS_MIE);
    let now = mtime();
    check(
        "wfi with the timer armed wakes up and takes the interrupt",
        FLAG.load(SeqCst) == 1 && TRAPS.load(SeqCst) - traps == 1 && now >= target,
        format_args!("flag={} after {wfis} wfi(s), mtime {now} vs {target}", FLAG.load(SeqCst)),
    );
}

fn check_software() {
    reset();
    let traps = TRAPS.load(SeqCst);
    csr_set!("mie", MSI);
    csr_set!("mstatus", MSTATUS_MIE);
    set_msip(1);
    // The store reaches the CLINT, whose line then reaches the hart: allow it a bounded number of instructions
    // (QEMU takes the interrupt only at the end of its translation block).
    // SAFETY: m_spin only reads FLAG and counts.
    let spins = unsafe { m_spin(0, 100_000) };
    csr_clear!("mstatus", MSTATUS_MIE);
    let mip = csr_read!("mip");
    check(
        "msip=1 raises a machine software interrupt (mcause 0x8000000000000003)",
        TRAPS.load(SeqCst) - traps == 1 && CAUSE.load(SeqCst) == INTERRUPT | 3,
        format_args!(
            "{} trap(s), mcause={:#x}, after {spins} loop iteration(s)",
            TRAPS.load(SeqCst) - traps,
            CAUSE.load(SeqCst)
        ),
    );
    check("clearing msip clears mip.MSIP", mip & MSI == 0, format_args!("mip={mip:#x}"));
}

fn check_priority() {
    reset();
    set_msip(1);
    set_mtimecmp(0);
    csr_set!("mie", MSI | MTI);
    let pending = wait_pending(MSI | MTI);
    csr_set!("mstatus", MSTATUS_MIE);
    // SAFETY: gives the interrupts instruction boundaries.
    unsafe { core::arch::asm!("nop", "nop", "nop", options(nomem, nostack)) };
    csr_clear!("mstatus", MSTATUS_MIE);
    let n = ORDER_LEN.load(SeqCst);
    let (first, second) = (ORDER[0].load(SeqCst), ORDER[1].load(SeqCst));
    check(
        "MSI and MTI both pending: MSI is taken first, then MTI",
        pending && n == 2 && first == INTERRUPT | 3 && second == INTERRUPT | 7,
        format_args!("pending={pending}, {n} interrupt(s): {first:#x}, {second:#x}"),
    );
}

fn check_interrupt_delegation() {
    reset();
    csr_write!("stvec", addr(s_trap));
    csr_write!("mideleg", STI | SSI);
    let mideleg = csr_read!("mideleg");
    check("mideleg takes STI and SSI", mideleg & (STI | SSI) == STI | SSI, format_args!("mideleg={mideleg:#x}"));

    // A delegated interrupt pending and enabled while in M-mode with MIE=1 is not taken there.
    let traps = TRAPS.load(SeqCst);
    csr_set!("mie", STI | SSI);
    csr_set!("mip", STI | SSI);
    csr_set!("mstatus", MSTATUS_MIE | MSTATUS_SIE);
    // SAFETY: m_spin only reads FLAG and counts.
    unsafe { m_spin(0, 10_000) };
    csr_clear!("mstatus", MSTATUS_MIE | MSTATUS_SIE);
    let mip = csr_read!("mip");
    check(
        "delegated STI and SSI pending in M-mode with MIE=1: not taken",
        TRAPS.load(SeqCst) == traps && mip & (STI | SSI) == STI | SSI,
        format_args!("{} trap(s), mip={mip:#x}", TRAPS.load(SeqCst) - traps),
    );
    csr_clear!("mip", SSI);

    // Still pending (STIP) when dropping to S-mode with SIE=1: taken at once by the S handler.
    clear_s_rec();
    // SAFETY: the snippet ends with ecall, which comes back to lower_return.
    unsafe { enter_lower(addr(s_sie_nop), MODE_S, 0, 0) };
    let (scause, sepc, _, _, count) = s_rec();
    check(
        "STIP set by M-mode is taken in S-mode once SIE=1 (scause 0x8000000000000005)",
        count == 1 && scause == INTERRUPT | 5 && (addr(s_sie_nop)..addr(s_sie_nop) + 12).contains(&sepc),
        format_args!("count={count} scause={scause:#x} sepc={sepc:#x} (snippet at {:#x})", addr(s_sie_nop)),
    );

    // The OpenSBI way: M timer interrupt while S runs; M sets STIP; S takes STI.
    reset();
    let traps = TRAPS.load(SeqCst);
    FORWARD_TIMER.store(true, SeqCst);
    csr_set!("mie", MTI | STI);
    set_mtimecmp(mtime() + 20_000);
    // SAFETY: the snippet ends with ecall, which comes back to lower_return.
    unsafe { enter_lower(addr(s_spin), MODE_S, SPIN_LIMIT, 0) };
    FORWARD_TIMER.store(false, SeqCst);
    let (scause, sepc, _, _, count) = s_rec();
    let m_order = ORDER[0].load(SeqCst);
    check(
        "M timer interrupt during S-mode (MIE=0 does not mask it in S), forwarded as STIP",
        ORDER_LEN.load(SeqCst) == 1 && m_order == INTERRUPT | 7 && TRAPS.load(SeqCst) - traps == 2,
        format_args!("{} M interrupt(s), first {m_order:#x}", ORDER_LEN.load(SeqCst)),
    );
    check(
        "S-mode handler gets the forwarded timer: scause 0x8000000000000005, sepc in the S loop",
        count == 1 && scause == INTERRUPT | 5 && (addr(s_spin_loop)..=addr(s_spin_end)).contains(&sepc),
        format_args!("count={count} scause={scause:#x} sepc={sepc:#x}"),
    );

    // SSIP raised by S-mode itself through sip.
    reset();
    csr_set!("mie", SSI);
    // SAFETY: the snippet ends with ecall, which comes back to lower_return.
    unsafe { enter_lower(addr(s_ssip), MODE_S, 0, 0) };
    let (scause, sepc, _, _, count) = s_rec();
    let mip = csr_read!("mip");
    check(
        "csrs sip (SSIP) from S-mode: S software interrupt, scause 0x8000000000000001",
        count == 1 && scause == INTERRUPT | 1 && (addr(s_ssip_after)..=addr(s_ssip_end)).contains(&sepc),
        format_args!("count={count} scause={scause:#x} sepc={sepc:#x} (after csrs at {:#x})", addr(s_ssip_after)),
    );
    check("the S handler cleared SSIP", mip & SSI == 0, format_args!("mip={mip:#x}"));
    reset();
    csr_write!("mideleg", 0);
}

fn check_exception_delegation() {
    reset();
    csr_write!("stvec", addr(s_trap));
    csr_write!("medeleg", (1 << trap::ILLEGAL_INSTRUCTION) | (1 << trap::ECALL_FROM_U));
    let medeleg = csr_read!("medeleg");
    check(
        "medeleg takes illegal instruction and ecall from U",
        medeleg & 0x104 == 0x104,
        format_args!("medeleg={medeleg:#x}"),
    );
    for (mode, name) in [
        (MODE_U, "illegal instruction in U-mode goes to S: scause 2, sepc at it, SPP=0"),
        (MODE_S, "illegal instruction in S-mode stays in S: scause 2, sepc at it, SPP=1"),
    ] {
        clear_s_rec();
        let traps = TRAPS.load(SeqCst);
        // SAFETY: the snippet ends with ebreak (not delegated), which comes back to lower_return.
        let r = unsafe { enter_lower(addr(l_illegal), mode, 0, 0) };
        let (scause, sepc, sstatus, _, count) = s_rec();
        let spp = (sstatus & SSTATUS_SPP) >> 8;
        let m_traps = TRAPS.load(SeqCst) - traps;
        check(
            name,
            count == 1
                && scause == trap::ILLEGAL_INSTRUCTION
                && sepc == addr(l_illegal_at)
                && spp == mode
                && r == 1
                && m_traps == 1
                && CAUSE.load(SeqCst) == trap::BREAKPOINT
                && MPP.load(SeqCst) == mode,
            format_args!(
                "count={count} scause={scause} sepc={sepc:#x} SPP={spp} a0={r}, M saw {m_traps} trap(s) (last \
                 mcause {})",
                CAUSE.load(SeqCst)
            ),
        );
    }
    clear_s_rec();
    // SAFETY: as above.
    let r = unsafe { enter_lower(addr(l_ecall), MODE_U, 0, 0) };
    let (scause, sepc, sstatus, _, count) = s_rec();
    check(
        "ecall from U delegated to S: scause 8, sepc at the ecall, SPP=0",
        count == 1 && scause == trap::ECALL_FROM_U && sepc == addr(l_ecall_at) && sstatus & SSTATUS_SPP == 0 && r == 1,
        format_args!("count={count} scause={scause} sepc={sepc:#x} sstatus={sstatus:#x} a0={r}"),
    );
    csr_write!("medeleg", 0);
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    // PMP entry 0: NAPOT over all addresses, RWX, so S and U may access memory.
    csr_write!("pmpaddr0", u64::MAX);
    csr_write!("pmpcfg0", 0x1f);
    csr_write!("satp", 0);

    check_machine_timer();
    check_masked_timer();
    check_wfi();
    check_software();
    check_priority();
    check_interrupt_delegation();
    check_exception_delegation();
    reset();

    checks::finish("interrupts")
}
