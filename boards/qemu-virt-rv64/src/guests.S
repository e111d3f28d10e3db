/* Guests written in assembly, raw binaries the board loads at the start of a VM's RAM.
 *
 * The `hostile` guest: a raw binary (position-independent, uncompressed) that the board loads at the start of a
 * VM's RAM and runs in virtual M-mode. It tries to escape in every way a guest can, and prints the cause of each
 * fault it gets back, one per line, from its own trap handler:
 *   1. load from guest real 0x8100_0000, just past its 16 MiB of RAM (where, in host memory, the next VM's
 *      partition lies): load access fault, 5;
 *   2. store to guest real 0, where nothing is: store access fault, 7;
 *   3. load from virtio-mmio slot 0 (0x1000_1000), a device this VM was not given: load access fault, 5;
 *   4. execute a word of garbage (all zeros, the defined illegal instruction): illegal instruction, 2;
 *   5. jump to guest real 0x9000_0000, outside its RAM: instruction access fault, 1;
 * then prints `spinning with interrupts masked` and loops forever with mstatus.MIE clear. The VMM must keep
 * running the other VMs (the real timer preempts it) and report it contained. */
    .section .rodata.hostile_guest, "a", @progbits
    .option push
    .option norvc
    .p2align 2
    .globl hostile_guest_start, hostile_guest_end
hostile_guest_start:
    lla t0, 90f
    csrw mtvec, t0
    li t1, 0x81000000
    ld t2, 0(t1)
    sd t2, 0(zero)
    li t1, 0x10001000
    lw t2, 0(t1)
    lla t1, 95f
    jalr ra, 0(t1)
    li t1, 0x90000000
    jalr ra, 0(t1)
    csrci mstatus, 8
    lla a0, 97f
    jal ra, 80f
1:  j 1b

    /* puts(a0): the UART at 0x1000_0000, one byte per store. */
80: li t4, 0x10000000
81: lbu t5, 0(a0)
    beqz t5, 82f
    sb t5, 0(t4)
    addi a0, a0, 1
    j 81b
82: ret

    /* The trap handler: prints the cause as a digit and a newline, then resumes after the faulting
     * instruction (a fetch fault resumes at ra, set by the jalr that got there). */
90: csrr t3, mcause
    addi t3, t3, 48
    li t4, 0x10000000
    sb t3, 0(t4)
    li t3, 10
    sb t3, 0(t4)
    csrr t3, mcause
    li t4, 2
    bgtu t3, t4, 91f
    csrw mepc, ra
    mret
91: csrr t3, mepc
    addi t3, t3, 4
    csrw mepc, t3
    mret

    .p2align 2
95: .word 0
97: .asciz "spinning with interrupts masked\n"
    .p2align 2
hostile_guest_end:
    .option pop

/* The `csr-loop` guest (benchmark): reads `mscratch` 100 000 times in virtual M-mode, each read a real illegal-
 * instruction trap emulated by the VMM, then powers off through the finisher with status 0. */
    .section .rodata.csr_loop_guest, "a", @progbits
    .option push
    .option norvc
    .p2align 2
    .globl csr_loop_guest_start, csr_loop_guest_end
csr_loop_guest_start:
    li t0, 100000
1:  csrr t1, mscratch
    addi t0, t0, -1
    bnez t0, 1b
    li t1, 0x100000
    li t2, 0x5555
    sw t2, 0(t1)
2:  j 2b
    .p2align 2
csr_loop_guest_end:
    .option pop

    /* The time-loop benchmark guest (virtual M-mode): reads `time` one million times, then powers off through the
       test finisher. Each read traps when the counters trap, hits a patched site when they are delegated, and
       runs in the VMM's code cache once the site is hot. */
    .section .rodata.time_loop_guest, "a", @progbits
    .option push
    .option norvc
    .p2align 2
    .globl time_loop_guest_start, time_loop_guest_end
time_loop_guest_start:
    li t0, 1000000
1:  rdtime t1
    addi t0, t0, -1
    bnez t0, 1b
    li t1, 0x100000
    li t2, 0x5555
    sw t2, 0(t1)
2:  j 2b
    .p2align 2
time_loop_guest_end:
    .option pop
