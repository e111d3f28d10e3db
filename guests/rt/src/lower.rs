//! Running code in S- or U-mode from M-mode: [`enter_lower`] `mret`s to a snippet in a lower privilege level;
//! the guest's M-mode trap handler ends the excursion by returning to [`lower_return`] in M-mode (MPP = M), which
//! makes `enter_lower` return with the snippet's a0.
//!
//! `enter_lower` uses only t0 besides its arguments; the caller's other registers (ra, sp, the callee-saved ones)
//! must still hold the values they had at the call when control reaches `lower_return`, so snippets must leave
//! them alone (or the handler must restore them).

core::arch::global_asm!(
    r#"
    .section .text.rt_lower, "ax", @progbits
    .option push
    .option norvc

    /* enter_lower(pc, mode, a0, a1): mret to `pc` in `mode` (0 = U, 1 = S) with a0/a1. */
    .balign 4
    .globl enter_lower, lower_return
enter_lower:
    csrw mepc, a0
    li t0, 0x1800
    csrc mstatus, t0
    slli t0, a1, 11
    csrs mstatus, t0
    mv a0, a2
    mv a1, a3
    mret
lower_return:
    ret

    .option pop
"#
);

extern "C" {
    /// Sets `mepc` to `pc` and `mstatus.MPP` to `mode`, moves `a0`/`a1` into a0/a1 and `mret`s. Returns a0 when
    /// the M-mode trap handler sends the hart to [`lower_return`] in M-mode.
    ///
    /// # Safety
    ///
    /// `pc` must be code that, run in `mode`, only touches a0, a1 and registers the handler tolerates, and
    /// whose end (an `ecall`, `ebreak` or fault) the installed trap handler turns into a return to
    /// [`lower_return`] with MPP = M.
    pub fn enter_lower(pc: u64, mode: u64, a0: u64, a1: u64) -> u64;
    /// The M-mode return point of [`enter_lower`]: a `ret` to its caller. Only its address is of use
    /// (see [`crate::addr`]).
    pub fn lower_return();
}
