//! `traps`: M-mode trap and CSR test. Installs the runtime's trap handler and checks, one `ok:`/`FAIL:` line
//! each: machine CSRs (`mhartid`, `misa`, `mscratch`, `mtvec`), `ecall` from M and U, `ebreak` and `c.ebreak`,
//! illegal instructions (`c.unimp`, a reserved word, an unknown CSR, a write to a read-only CSR, a machine CSR
//! from U-mode), load/store/fetch access faults, misaligned loads and stores to RAM (which succeed, as on QEMU),
//! and misaligned LR/SC/AMO (address-misaligned exceptions). Ends with `traps: all N checks passed` and exit
//! status 0, or `traps: F of N checks failed` and exit status 1.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use rt::addr;
use rt::checks::{self, check};
use rt::trap::{self, TrapFrame};
use rt::{csr_read, csr_write, println};

// Test snippets. Each is a function following the C calling convention; the instruction under test is at the
// global label `<name>_at`. Snippets that resume after a trap return a0 + 1 to prove execution went on right
// after the trapping instruction.
core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc

    .balign 4
    .globl t_ecall, t_ecall_at
t_ecall:
    li a0, 0
t_ecall_at:
    ecall
    addi a0, a0, 1
    ret

    .balign 4
    .globl t_ebreak, t_ebreak_at
t_ebreak:
    li a0, 0
t_ebreak_at:
    ebreak
    addi a0, a0, 1
    ret

    .balign 4
    .globl t_cunimp, t_cunimp_at
t_cunimp:
    li a0, 0
t_cunimp_at:
    .2byte 0x0000
    addi a0, a0, 1
    ret

    .balign 4
    .globl t_illegal_word, t_illegal_word_at
t_illegal_word:
    li a0, 0
t_illegal_word_at:
    .4byte 0xffffffff
    addi a0, a0, 1
    ret

    .balign 4
    .globl t_unknown_csr, t_unknown_csr_at
t_unknown_csr:
    li a0, 0
t_unknown_csr_at:
    csrrs a1, 0x7c0, zero
    addi a0, a0, 1
    ret

    .balign 4
    .globl t_write_mhartid, t_write_mhartid_at
t_write_mhartid:
    li a0, 0
t_write_mhartid_at:
    csrrw zero, mhartid, a0
    addi a0, a0, 1
    ret

    /* Memory accesses: a0 = address, a1 = value to store; loads return the value in a0. */
    .balign 4
    .globl t_ld, t_ld_at
t_ld:
t_ld_at:
    ld a0, 0(a0)
    ret
    .balign 4
    .globl t_lw
t_lw:
    lw a0, 0(a0)
    ret
    .balign 4
    .globl t_lwu
t_lwu:
    lwu a0, 0(a0)
    ret
    .balign 4
    .globl t_lh
t_lh:
    lh a0, 0(a0)
    ret
    .balign 4
    .globl t_lhu
t_lhu:
    lhu a0, 0(a0)
    ret
    .balign 4
    .globl t_lbu, t_lbu_at
t_lbu:
t_lbu_at:
    lbu a0, 0(a0)
    ret
    .balign 4
    .globl t_sd, t_sd_at
t_sd:
t_sd_at:
    sd a1, 0(a0)
    ret
    .balign 4
    .globl t_sw
t_sw:
    sw a1, 0(a0)
    ret
    .balign 4
    .globl t_sh
t_sh:
    sh a1, 0(a0)
    ret
    .balign 4
    .globl t_sb, t_sb_at
t_sb:
t_sb_at:
    sb a1, 0(a0)
    ret
    .balign 4
    .globl t_jump
t_jump:
    jr a0

    /* Atomics: a0 = address, a1 = operand; return rd (left as the address if the instruction traps). */
    .balign 4
    .globl t_lr_w, t_lr_w_at
t_lr_w:
t_lr_w_at:
    lr.w a0, (a0)
    ret
    .balign 4
    .globl t_lr_d, t_lr_d_at
t_lr_d:
t_lr_d_at:
    lr.d a0, (a0)
    ret
    .balign 4
    .globl t_sc_w, t_sc_w_at
t_sc_w:
t_sc_w_at:
    sc.w a0, a1, (a0)
    ret
    .balign 4
    .globl t_sc_d, t_sc_d_at
t_sc_d:
t_sc_d_at:
    sc.d a0, a1, (a0)
    ret
    .balign 4
    .globl t_amoadd_w, t_amoadd_w_at
t_amoadd_w:
t_amoadd_w_at:
    amoadd.w a0, a1, (a0)
    ret
    .balign 4
    .globl t_amoswap_d, t_amoswap_d_at
t_amoswap_d:
t_amoswap_d_at:
    amoswap.d a0, a1, (a0)
    ret

    /* Try to open all memory to U-mode through PMP entry 0 (traps are ignored: PMP is optional). */
    .balign 4
    .globl t_pmp_open
t_pmp_open:
    li t0, -1
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
    ret

    /* Drop to U-mode at the user code; the handler brings the trap back to M-mode at t_user_return. */
    .balign 4
    .globl t_user_ecall, t_user_ecall_at
t_user_ecall:
    la t0, t_user_ecall_at
    j 1f
    .balign 4
    .globl t_user_csr, t_user_csr_at
t_user_csr:
    la t0, t_user_csr_at
1:
    csrw mepc, t0
    li t0, 0x1800
    csrc mstatus, t0
    mret
    .balign 4
t_user_ecall_at:
    ecall
    j t_user_ecall_at
    .balign 4
t_user_csr_at:
    csrr a0, mstatus
    j t_user_csr_at
    .balign 4
    .globl t_user_return
t_user_return:
    ret

    .option pop
    .option push
    .option rvc
    .balign 4
    .globl t_cebreak, t_cebreak_at
t_cebreak:
    li a0, 0
t_cebreak_at:
    c.ebreak
    addi a0, a0, 1
    ret
    .option pop
"#
);

extern "C" {
    fn t_ecall() -> u64;
    fn t_ecall_at();
    fn t_ebreak() -> u64;
    fn t_ebreak_at();
    fn t_cebreak() -> u64;
    fn t_cebreak_at();
    fn t_cunimp() -> u64;
    fn t_cunimp_at();
    fn t_illegal_word() -> u64;
    fn t_illegal_word_at();
    fn t_unknown_csr() -> u64;
    fn t_unknown_csr_at();
    fn t_write_mhartid() -> u64;
    fn t_write_mhartid_at();
    fn t_ld(addr: usize) -> u64;
    fn t_ld_at();
    fn t_lw(addr: usize) -> u64;
    fn t_lwu(addr: usize) -> u64;
    fn t_lh(addr: usize) -> u64;
    fn t_lhu(addr: usize) -> u64;
    fn t_lbu(addr: usize) -> u64;
    fn t_lbu_at();
    fn t_sd(addr: usize, value: u64);
    fn t_sd_at();
    fn t_sw(addr: usize, value: u64);
    fn t_sh(addr: usize, value: u64);
    fn t_sb(addr: usize, value: u64);
    fn t_sb_at();
    fn t_jump(addr: usize);
    fn t_lr_w(addr: usize) -> u64;
    fn t_lr_w_at();
    fn t_lr_d(addr: usize) -> u64;
    fn t_lr_d_at();
    fn t_sc_w(addr: usize, value: u64) -> u64;
    fn t_sc_w_at();
    fn t_sc_d(addr: usize, value: u64) -> u64;
    fn t_sc_d_at();
    fn t_amoadd_w(addr: usize, value: u64) -> u64;
    fn t_amoadd_w_at();
    fn t_amoswap_d(addr: usize, value: u64) -> u64;
    fn t_amoswap_d_at();
    fn t_pmp_open();
    fn t_user_ecall();
    fn t_user_ecall_at();
    fn t_user_csr();
    fn t_user_csr_at();
    fn t_user_return();
}

/// The 32-bit instruction word at an assembly label (read as two halfwords).
fn insn_at(label: unsafe extern "C" fn()) -> u64 {
    let p = label as *const () as *const u16;
    // SAFETY: the label is in the text section, which is readable RAM; labels are at least 2-byte aligned.
    let (lo, hi) = unsafe { (p.read_volatile(), p.add(1).read_volatile()) };
    u64::from(lo) | (u64::from(hi) << 16)
}

// What the handler saw last.
static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static EPC: AtomicU64 = AtomicU64::new(0);
static TVAL: AtomicU64 = AtomicU64::new(0);
static MPP: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

fn handler(frame: &mut TrapFrame) {
    if IN_HANDLER.swap(true, SeqCst) {
        println!("FAIL: trap inside the trap handler: mcause={:#x} mepc={:#x}", frame.mcause, frame.mepc);
        rt::exit(103);
    }
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    EPC.store(frame.mepc, SeqCst);
    TVAL.store(frame.mtval, SeqCst);
    MPP.store(frame.previous_privilege(), SeqCst);
    if frame.is_interrupt() {
        println!("FAIL: unexpected interrupt: mcause={:#x}", frame.mcause);
        rt::exit(104);
    }
    if frame.previous_privilege() == 0 {
        // From U-mode: back to M-mode, returning from the snippet that entered U-mode.
        frame.set_previous_privilege(3);
        frame.set_return_pc(addr(t_user_return));
        SKIPPED.store(0, SeqCst);
    } else if frame.code() == trap::INSTRUCTION_ACCESS_FAULT || frame.code() == trap::INSTRUCTION_MISALIGNED {
        // A jump to a bad address: return to the caller of the jumping snippet.
        frame.set_return_pc(frame.regs[1]);
        SKIPPED.store(0, SeqCst);
    } else {
        // SAFETY: every other trap of this test comes from an instruction in RAM.
        let len = unsafe { frame.instruction_length() };
        frame.mepc += len;
        SKIPPED.store(len, SeqCst);
    }
    IN_HANDLER.store(false, SeqCst);
}

/// What one trap should look like.
struct Expect {
    cause: u64,
    epc: u64,
    /// `None`: any mtval.
    tval: Option<u64>,
    /// Expected `mstatus.MPP`.
    mpp: u64,
}

/// Runs `f`, which must trap exactly once as `want` says, and checks `result_ok` on what `f` returned.
fn expect_trap<R: core::fmt::Debug>(name: &str, want: Expect, f: impl FnOnce() -> R, result_ok: impl Fn(&R) -> bool) {
    let before = TRAPS.load(SeqCst);
    let result = f();
    let traps = TRAPS.load(SeqCst) - before;
    let (cause, epc, tval, mpp) = (CAUSE.load(SeqCst), EPC.load(SeqCst), TVAL.load(SeqCst), MPP.load(SeqCst));
    let passed = traps == 1
        && cause == want.cause
        && epc == want.epc
        && want.tval.is_none_or(|t| t == tval)
        && mpp == want.mpp
        && result_ok(&result);
    check(
        name,
        passed,
        format_args!(
            "{traps} trap(s), mcause={cause} mepc={epc:#x} mtval={tval:#x} mpp={mpp} result={result:x?} \
             (want mcause={} mepc={:#x} mtval={:x?} mpp={})",
            want.cause, want.epc, want.tval, want.mpp
        ),
    );
}

/// Runs `f`, which must not trap, and checks `result_ok` on what it returned.
fn expect_no_trap<R: core::fmt::Debug>(name: &str, f: impl FnOnce() -> R, result_ok: impl Fn(&R) -> bool) {
    let before = TRAPS.load(SeqCst);
    let result = f();
    let traps = TRAPS.load(SeqCst) - before;
    let passed = traps == 0 && result_ok(&result);
    check(name, passed, format_args!("{traps} trap(s) (last mcause={}), result={result:x?}", CAUSE.load(SeqCst)));
}

const M: u64 = 3;

/// 32 bytes of RAM with a known pattern, 16-byte aligned.
#[repr(C, align(16))]
struct Buffer([u8; 32]);

static mut BUFFER: Buffer = Buffer([0; 32]);

fn buffer() -> *mut u8 {
    // SAFETY: only the address is taken; accesses go through raw pointers and assembly.
    unsafe { core::ptr::addr_of_mut!(BUFFER.0) as *mut u8 }
}

fn fill_buffer() {
    for i in 0..32 {
        // SAFETY: in bounds of BUFFER.
        unsafe { buffer().add(i).write_volatile(0x10 + (i as u8) * 7) };
    }
}

/// The little-endian value of `len` bytes of the buffer at `offset`.
fn buffer_le(offset: usize, len: usize) -> u64 {
    (0..len).fold(0, |v, i| {
        // SAFETY: callers stay in bounds of BUFFER.
        let byte = unsafe { buffer().add(offset + i).read_volatile() };
        v | (u64::from(byte) << (8 * i))
    })
}

fn check_csrs() {
    let hartid = csr_read!("mhartid");
    check("mhartid is 0", hartid == 0, format_args!("mhartid={hartid}"));

    let misa = csr_read!("misa");
    let mxl = misa >> 62;
    let letters = |s: &str| s.bytes().all(|c| misa & (1 << (c - b'A')) != 0);
    check("misa: MXL=2 (RV64) with I, M, A, C", mxl == 2 && letters("IMAC"), format_args!("misa={misa:#x}"));

    csr_write!("mscratch", 0x0123_4567_89ab_cdef);
    let first = csr_read!("mscratch");
    let swapped: u64;
    // SAFETY: csrrw on mscratch only exchanges a value with a scratch register.
    unsafe { core::arch::asm!("csrrw {0}, mscratch, {1}", out(reg) swapped, in(reg) !0u64 << 3) };
    let second = csr_read!("mscratch");
    check(
        "mscratch read/write and csrrw swap",
        first == 0x0123_4567_89ab_cdef && swapped == first && second == !0u64 << 3,
        format_args!("read {first:#x}, swapped out {swapped:#x}, then read {second:#x}"),
    );

    let mtvec = csr_read!("mtvec");
    check(
        "mtvec holds the trap entry (direct mode)",
        mtvec == trap::trap_entry_address(),
        format_args!("mtvec={mtvec:#x}, entry={:#x}", trap::trap_entry_address()),
    );
}

fn check_exceptions() {
    expect_trap(
        "ecall from M: mcause 11, mepc at the ecall, mtval 0",
        Expect { cause: trap::ECALL_FROM_M, epc: addr(t_ecall_at), tval: Some(0), mpp: M },
        // SAFETY: the snippets only touch their argument registers; the handler resumes them.
        || unsafe { t_ecall() },
        |r| *r == 1,
    );
    let ebreak_epc = addr(t_ebreak_at);
    expect_trap(
        "ebreak: mcause 3, mepc at the ebreak, resumes 4 bytes later",
        Expect { cause: trap::BREAKPOINT, epc: ebreak_epc, tval: None, mpp: M },
        // SAFETY: as above.
        || unsafe { t_ebreak() },
        |r| *r == 1 && SKIPPED.load(SeqCst) == 4 && [0, ebreak_epc].contains(&TVAL.load(SeqCst)),
    );
    let cebreak_epc = addr(t_cebreak_at);
    expect_trap(
        "c.ebreak: mcause 3, mepc at the c.ebreak, resumes 2 bytes later",
        Expect { cause: trap::BREAKPOINT, epc: cebreak_epc, tval: None, mpp: M },
        // SAFETY: as above.
        || unsafe { t_cebreak() },
        |r| *r == 1 && SKIPPED.load(SeqCst) == 2 && [0, cebreak_epc].contains(&TVAL.load(SeqCst)),
    );
    expect_trap(
        "illegal c.unimp (0x0000): mcause 2, mtval 0",
        Expect { cause: trap::ILLEGAL_INSTRUCTION, epc: addr(t_cunimp_at), tval: Some(0), mpp: M },
        // SAFETY: as above.
        || unsafe { t_cunimp() },
        |r| *r == 1 && SKIPPED.load(SeqCst) == 2,
    );
    expect_trap(
        "illegal word 0xffffffff: mcause 2, mtval the word",
        Expect { cause: trap::ILLEGAL_INSTRUCTION, epc: addr(t_illegal_word_at), tval: Some(0xffff_ffff), mpp: M },
        // SAFETY: as above.
        || unsafe { t_illegal_word() },
        |r| *r == 1,
    );
    expect_trap(
        "unknown CSR 0x7c0: mcause 2, mtval the csrrs word",
        Expect {
            cause: trap::ILLEGAL_INSTRUCTION,
            epc: addr(t_unknown_csr_at),
            tval: Some(insn_at(t_unknown_csr_at)),
            mpp: M,
        },
        // SAFETY: as above.
        || unsafe { t_unknown_csr() },
        |r| *r == 1,
    );
    expect_trap(
        "write to read-only mhartid: mcause 2, mtval the csrrw word",
        Expect {
            cause: trap::ILLEGAL_INSTRUCTION,
            epc: addr(t_write_mhartid_at),
            tval: Some(insn_at(t_write_mhartid_at)),
            mpp: M,
        },
        // SAFETY: as above.
        || unsafe { t_write_mhartid() },
        |r| *r == 1,
    );
}

/// An address with nothing behind it on the QEMU `virt` machine (between the platform bus and the PLIC).
/// (0x4000_0000 would not do: QEMU maps the PCIe MMIO window there.)
const HOLE: usize = 0x0800_0000;

fn check_access_faults() {
    let cases: [(&str, &str, usize); 2] = [
        ("ld from 0x0: load access fault, mtval the address", "sd to 0x0: store access fault, mtval the address", 0),
        (
            "ld from 0x0800_0000: load access fault, mtval the address",
            "sd to 0x0800_0000: store access fault, mtval the address",
            HOLE,
        ),
    ];
    for (load, store, bad) in cases {
        expect_trap(
            load,
            Expect { cause: trap::LOAD_ACCESS_FAULT, epc: addr(t_ld_at), tval: Some(bad as u64), mpp: M },
            // SAFETY: the access faults and the handler skips it.
            || unsafe { t_ld(bad) },
            |r| *r == bad as u64,
        );
        expect_trap(
            store,
            Expect { cause: trap::STORE_ACCESS_FAULT, epc: addr(t_sd_at), tval: Some(bad as u64), mpp: M },
            // SAFETY: as above.
            || unsafe { t_sd(bad, 0x1234) },
            |_| true,
        );
    }
    expect_trap(
        "lbu from 0x0800_0007: load access fault",
        Expect { cause: trap::LOAD_ACCESS_FAULT, epc: addr(t_lbu_at), tval: Some(HOLE as u64 + 7), mpp: M },
        // SAFETY: as above.
        || unsafe { t_lbu(HOLE + 7) },
        |_| true,
    );
    expect_trap(
        "sb to 0x0800_0007: store access fault",
        Expect { cause: trap::STORE_ACCESS_FAULT, epc: addr(t_sb_at), tval: Some(HOLE as u64 + 7), mpp: M },
        // SAFETY: as above.
        || unsafe { t_sb(HOLE + 7, 0x5a) },
        |_| true,
    );
    expect_trap(
        "jump to 0x0800_0000: instruction access fault, mepc and mtval the target",
        Expect { cause: trap::INSTRUCTION_ACCESS_FAULT, epc: HOLE as u64, tval: Some(HOLE as u64), mpp: M },
        // SAFETY: the fetch faults and the handler returns to this caller.
        || unsafe { t_jump(HOLE) },
        |_| true,
    );
}

fn check_misaligned_ram() {
    let base = buffer() as usize;
    fill_buffer();
    expect_no_trap(
        "misaligned ld (+1) succeeds, little-endian",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_ld(base + 1) },
        |r| *r == buffer_le(1, 8),
    );
    expect_no_trap(
        "misaligned ld (+7, crossing 8 bytes) succeeds",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_ld(base + 7) },
        |r| *r == buffer_le(7, 8),
    );
    expect_no_trap(
        "misaligned lw (+3) succeeds, sign-extended",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_lw(base + 3) },
        |r| *r == buffer_le(3, 4) as u32 as i32 as i64 as u64,
    );
    expect_no_trap(
        "misaligned lwu (+5) succeeds, zero-extended",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_lwu(base + 5) },
        |r| *r == buffer_le(5, 4),
    );
    expect_no_trap(
        "misaligned lh (+9) succeeds, sign-extended",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_lh(base + 9) },
        |r| *r == buffer_le(9, 2) as u16 as i16 as i64 as u64,
    );
    expect_no_trap(
        "misaligned lhu (+15, crossing 16 bytes) succeeds",
        // SAFETY: in bounds of BUFFER.
        || unsafe { t_lhu(base + 15) },
        |r| *r == buffer_le(15, 2),
    );

    let stores: [(&str, usize, usize, unsafe extern "C" fn(usize, u64)); 3] = [
        ("misaligned sd (+3) succeeds, little-endian", 3, 8, t_sd),
        ("misaligned sw (+13) succeeds", 13, 4, t_sw),
        ("misaligned sh (+23) succeeds", 23, 2, t_sh),
    ];
    for (name, offset, len, store) in stores {
        fill_buffer();
        let value = 0xf1e2_d3c4_b5a6_9788u64;
        let before: [u64; 4] = core::array::from_fn(|i| buffer_le(i * 8, 8));
        expect_no_trap(
            name,
            // SAFETY: in bounds of BUFFER.
            || unsafe { store(base + offset, value) },
            |_| {
                (0..32).all(|i| {
                    let byte = buffer_le(i, 1);
                    let old = (before[i / 8] >> (8 * (i % 8))) & 0xff;
                    if (offset..offset + len).contains(&i) {
                        byte == (value >> (8 * (i - offset))) & 0xff
                    } else {
                        byte == old
                    }
                })
            },
        );
    }
}

fn check_misaligned_atomics() {
    let base = buffer() as usize;
    fill_buffer();
    let untouched = || (0..4).all(|i| buffer_le(i * 8, 8) == snapshot(i));
    let misaligned: [(&str, usize, u64, unsafe extern "C" fn(), u64); 6] = [
        ("misaligned lr.w (+2): load address misaligned, mtval the address", 2, trap::LOAD_MISALIGNED, t_lr_w_at, 0),
        ("misaligned lr.d (+4): load address misaligned", 4, trap::LOAD_MISALIGNED, t_lr_d_at, 1),
        ("misaligned sc.w (+2): store/AMO address misaligned", 2, trap::STORE_MISALIGNED, t_sc_w_at, 2),
        ("misaligned sc.d (+4): store/AMO address misaligned", 4, trap::STORE_MISALIGNED, t_sc_d_at, 3),
        ("misaligned amoadd.w (+1): store/AMO address misaligned", 1, trap::STORE_MISALIGNED, t_amoadd_w_at, 4),
        ("misaligned amoswap.d (+12): store/AMO address misaligned", 12, trap::STORE_MISALIGNED, t_amoswap_d_at, 5),
    ];
    for (name, offset, cause, at, which) in misaligned {
        let a = base + offset;
        expect_trap(
            name,
            Expect { cause, epc: addr(at), tval: Some(a as u64), mpp: M },
            // SAFETY: the access is misaligned and traps; the handler skips it.
            || unsafe {
                match which {
                    0 => t_lr_w(a),
                    1 => t_lr_d(a),
                    2 => t_sc_w(a, 0x55),
                    3 => t_sc_d(a, 0x55),
                    4 => t_amoadd_w(a, 0x55),
                    _ => t_amoswap_d(a, 0x55),
                }
            },
            |r| *r == a as u64 && untouched(),
        );
    }
}

/// The 8 bytes at `8 * i` of the freshly filled buffer.
fn snapshot(i: usize) -> u64 {
    (0..8).fold(0, |v, j| v | (u64::from(0x10 + ((8 * i + j) as u8) * 7) << (8 * j)))
}

fn check_user_mode() {
    // SAFETY: opens PMP entry 0 to everything (or traps harmlessly where PMP is absent).
    unsafe { t_pmp_open() };
    expect_trap(
        "mret to U-mode, ecall from U: mcause 8, MPP 0",
        Expect { cause: trap::ECALL_FROM_U, epc: addr(t_user_ecall_at), tval: Some(0), mpp: 0 },
        // SAFETY: the snippet enters U-mode; the handler returns from it in M-mode.
        || unsafe { t_user_ecall() },
        |_| true,
    );
    let back_in_m = csr_read!("mscratch");
    check(
        "back in M-mode after the U-mode trap",
        TRAPS.load(SeqCst) > 0 && back_in_m == !0u64 << 3,
        format_args!("mscratch={back_in_m:#x}"),
    );
    expect_trap(
        "csrr mstatus from U-mode: mcause 2, mtval the csrr word",
        Expect {
            cause: trap::ILLEGAL_INSTRUCTION,
            epc: addr(t_user_csr_at),
            tval: Some(insn_at(t_user_csr_at)),
            mpp: 0,
        },
        // SAFETY: as above.
        || unsafe { t_user_csr() },
        |_| true,
    );
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    trap::install_trap_handler(handler);
    check_csrs();
    check_exceptions();
    check_access_faults();
    check_misaligned_ram();
    check_misaligned_atomics();
    check_user_mode();
    checks::finish("traps")
}
