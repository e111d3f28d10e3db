//! `garbage`: a guest that executes junk. Prints `garbage: jumping into random words`, fills a 4 KiB page with
//! words from a fixed-seed SplitMix64 generator, scrambles the registers from the same generator and jumps into
//! the page. Its trap vector is a stub that steps `mepc` 4 bytes on (wrapping inside the page) and `mret`s, so
//! the junk keeps running after each trap instead of looping on one bad word. Whatever the words do — illegal
//! instructions, wild loads and stores, CSR writes (`mtvec` and `mscratch` included), `mret`s into other modes — a
//! VMM must neither panic nor hang: it bounds the run (an instruction limit) and reports it. The run is
//! deterministic.
#![no_std]
#![no_main]

use rt::println;

/// One page of junk.
#[repr(C, align(4096))]
struct Page([u64; 512]);

#[unsafe(no_mangle)]
static mut JUNK: Page = Page([0; 512]);

/// Where the trap stub saves t0 and t1 (found through `mscratch`).
static mut SAVE: [u64; 2] = [0; 2];

core::arch::global_asm!(
    r#"
    .section .text.garbage_trap, "ax", @progbits
    .option push
    .option norvc
    .balign 4
    .globl garbage_trap
garbage_trap:
    csrrw sp, mscratch, sp
    sd t0, 0(sp)
    sd t1, 8(sp)
    /* mepc = JUNK + ((mepc + 4) & 0xffc) */
    csrr t0, mepc
    addi t0, t0, 4
    slli t0, t0, 52
    srli t0, t0, 52
    andi t0, t0, -4
1:  auipc t1, %pcrel_hi(JUNK)
    addi t1, t1, %pcrel_lo(1b)
    add t0, t0, t1
    csrw mepc, t0
    ld t0, 0(sp)
    ld t1, 8(sp)
    csrrw sp, mscratch, sp
    mret
    .option pop
"#
);

extern "C" {
    fn garbage_trap();
}

/// SplitMix64 step.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    println!("garbage: jumping into random words");
    let mut state = 0x6761_7262_6167_6521; // "garbage!"
    let page = core::ptr::addr_of_mut!(JUNK) as *mut u64;
    for index in 0..512 {
        // SAFETY: `index` < 512 stays inside `JUNK`, which nothing else references.
        unsafe { page.add(index).write_volatile(next(&mut state)) };
    }
    let start = page as u64 + (next(&mut state) % 1024) * 4;
    rt::csr_write!("mscratch", core::ptr::addr_of_mut!(SAVE) as u64);
    rt::csr_write!("mtvec", rt::addr(garbage_trap));
    let seeds = [next(&mut state), next(&mut state), next(&mut state), next(&mut state)];
    // SAFETY: deliberately none: this hands the hart to junk and never returns. `fence.i` makes the stores above
    // visible to instruction fetch.
    unsafe {
        core::arch::asm!(
            "fence.i",
            "mv ra, a2",
            "mv sp, a3",
            "mv gp, a4",
            "mv tp, a5",
            "jr t1",
            in("t1") start,
            in("a2") seeds[0],
            in("a3") seeds[1],
            in("a4") seeds[2],
            in("a5") seeds[3],
            options(noreturn)
        )
    }
}
