//! The real harts: bringing them up, the VMM lock they share, and the runs every hart takes part in.
//!
//! **Bring-up.** With `-bios none` QEMU starts every hart at the ELF entry. riscv-rt calls `_mp_hook` (below):
//! the boot hart (0) goes on to initialise RAM (`.data`, `.bss`) on riscv-rt's whole `.stack`, while the others
//! wait in `wfi` for a software interrupt (their CLINT `msip`), touching no memory. Once the boot hart has set up
//! the shared state (heap, console) it calls [`bring_up`], which wakes them; each moves to its own M-mode stack
//! ([`SECONDARY_STACK`], in `.bss`), goes through `main` (which sends it to [`secondary`] before anything else)
//! and sets up its own machine state in [`secondary`] (trap vector, `mscratch` 0, `mie`, counters,
//! PMP all off, its own `mtimecmp` disarmed) and answers the roll call. A hart that answers after the roll call
//! closed (one second) is left parked for good, so the set of harts in every run is fixed.
//!
//! **Runs.** The board runs each set of VMs (the demo, each benchmark, each Linux boot) on every hart:
//! [`on_every_hart`] publishes the run's body, wakes the parked secondaries, runs the body on the boot hart too,
//! and returns only once every secondary has left it and gone back to its park: the run's state (the board's
//! run queue, the VMs) may live on the boot hart's stack and borrow from it.
//!
//! **The VMM lock.** One spin lock ([`vmm_lock`], [`vmm_unlock`]) serialises the VMM's own work across harts: a
//! hart takes it for a VM's turn (and the pumps of the bridge and the printer before it), and the engine lets it
//! go only while the guest runs natively in U-mode (around the world switch, `engine.rs`), so every guest exit,
//! emulated instruction, excursion and device access is served under it, while guests run natively in parallel.
//! A hart that only looks at the run queue, or sleeps for lack of a runnable VM, or is parked, does not hold it.
//! Outside runs the boot hart holds it (building VMs, reporting), from `main` on: it lets it go only for the
//! length of a run ([`on_every_hart`]).
//! What it protects is every piece of VMM state reachable from more than one VM: the console multiplexer and the
//! physical UART, the physical disks and their partition tables, the bridge and the physical NIC, the printer's
//! spools, and the `defmt` logger (its `critical-section` implementation is riscv's single-hart one, which only
//! masks interrupts: the VMM lock is what keeps two harts from logging at once; every `defmt` call is made under
//! it, or before the other harts are up). These use `RefCell`s, not locks, and are only ever touched with the
//! VMM lock held. It is a big lock on purpose, for this first step: per-device locks would let two harts serve
//! different devices at once, and are what is left. A test-and-set lock is unfair, so a hart about to start a
//! VM's turn lets the harts already waiting for it go first ([`vmm_lock_for_turn`], 100 µs at most): a VM
//! whose turns hold it almost all the time (excursions) would otherwise starve a hart waiting to run another VM
//! or another hart of the same VM.
//!
//! **One VM's harts on several real harts** (`run_parallel` in `main.rs`): such a VM is one run-queue entry per
//! virtual hart, each with a `Vm` of its own, so two real harts may run two harts of it at once, natively and in
//! the VMM (each under the VMM lock, one after the other). What its harts share has locks of its own, in the
//! core: its devices (`SharedDevices`: one spin lock), its SBI's HSM states and requests (`SbiShared`: a spin
//! lock per hart), its RAM's dirty-code log (`SharedRam`). A hart asks another for something (an IPI, an HSM
//! start, a remote fence) through the VM's waker, which takes no lock: it kicks the real hart running the target
//! (`hw::kick`, its CLINT `msip`, which ends a native run at once: the software interrupt is enabled in `mie` on
//! every hart, and taken only from U-mode), or a napping one. A hart whose remote fence waits for another's
//! acknowledgement lets the VMM lock go between two looks (`relax_vmm_lock`), holding no other lock, since the
//! target needs it to serve the fence. So does a hart whose engine starts watching a page while another hart of
//! the VM runs natively (`engine::Revocations`: it kicks that hart and waits until it has dropped W on the page
//! or left the guest). That wait is in the middle of the watcher's engine run (a scan about to start, a block
//! being translated), and letting the lock go there is safe for the same reasons: what the waiting hart has
//! borrowed is its own (its `Vm`, engine, shadow tables, code cache and patch table are this entry's alone,
//! taken out of the run queue), the VM's shared state it reaches is atomics or has locks of its own, none held
//! across the wait (`SharedRam`'s dirty log is not held during a watch; the revocation queues' locks are taken
//! and released before the wait), and no `RefCell` the VMM lock protects is borrowed by a turn across an engine
//! run. What another hart changes meanwhile is what it could change while this one ran natively: it may write
//! the page being watched through the VMM (the write then clears the watch bit and logs the page, and this
//! hart's engine drops what it read at its next look at the log), and it fills its own leaves, which withhold W
//! on the page since its bit is set before the wait.
//!
//! The lock order (a hart takes them in this order, never the reverse):
//! 1. the VMM lock;
//! 2. the board's spin locks, none held while taking another: the run queue (taken with or without the VMM lock),
//!    the bridge, the printer's spools, the published run (`RUN`, below);
//! 3. a VM's own locks (`SharedDevices`', `SbiShared`'s, `SharedRam`'s), none held while taking another: taken
//!    under the VMM lock while its harts run, or under the run queue's to look at its console (`Slot::finished`);
//! 4. the heap's own lock (`linked_list_allocator`'s spin lock), a leaf.
//!
//! No lock is held across a guest's native run or an SBI wait's pause, and none in an interrupt handler: M-mode runs with
//! `mstatus.MIE` clear on every hart (riscv-rt leaves it clear and nothing sets it), so the VMM is never
//! interrupted and spin locks cannot deadlock against an interrupt handler; an interrupt is only taken from
//! U-mode, through the world switch, which holds no lock. The other tables the harts share are lock-free:
//! `TakeOnce` (an atomic flag per entry), each hart's statistics (atomics).
//!
//! **Per hart**: its stack, trap vector and `mscratch` (the world switch's context pointer), `mie`,
//! `mcounteren`/`scounteren`, PMP, `satp` and TLB (which VM's walls and shadow root it holds, `engine.rs`), and its
//! `mtimecmp` (`hw.rs`).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{hw, switch};

/// The real harts the board brings up (`run-qemu.sh`: `-smp 4`; `memory.x` gives each a stack of its own).
pub const MAX_HARTS: usize = 4;
/// The hart that initialises RAM and sets up the shared state.
pub const BOOT_HART: usize = 0;

/// Each secondary hart's M-mode stack, in bytes: 512 KiB (the run loop, a VM's turn and the dispatcher, devices
/// and excursions under it; [`stack_used`] reports the deepest use, about a tenth of this).
pub const SECONDARY_STACK: usize = 512 << 10;

// Every hart but the boot hart waits here, before RAM is initialised (riscv-rt's `_mp_hook`, called with the hart
// id in a0, returning nonzero only on the hart that initialises RAM; s0-s2 must be kept): `wfi` with the software
// interrupt enabled in `mie` (not globally: `mstatus.MIE` is clear, so it is never taken, only wakes `wfi`) until
// its `msip` is set, which the boot hart does once RAM and the shared state are ready; then it clears its `msip`,
// moves to its own stack and goes on to `_start_rust` and `main`, skipping RAM initialisation.
//
// The stacks: riscv-rt would give every hart an equal share of `.stack` (`_hart_stack_size`), but the boot hart
// needs far more than the others (`main` builds the demo's VMs on its stack: megabytes), so it keeps the whole of
// `.stack` and the secondaries get theirs here, in `.bss` (hart N the N-th slot, its top at base + N * size).
// `memory.x` sets `_hart_stack_size` to 16 bytes: the provisional stack riscv-rt gives a secondary lies in the
// boot hart's, but no secondary touches memory before it moves to its own, here (riscv-rt's code before
// `_mp_hook` writes nothing to the stack, and `_mp_hook` itself writes only its `msip`).
core::arch::global_asm!(
    r#"
    .section .bss.trapeze_secondary_stacks, "aw", @nobits
    .p2align 4
    .global trapeze_secondary_stacks
trapeze_secondary_stacks:
    .skip {total}

    .section .text.mp_hook, "ax"
    .global _mp_hook
    .p2align 2
_mp_hook:
    beqz a0, 3f
    li t0, 8
    csrw mie, t0
1:  wfi
    csrr t0, mip
    andi t0, t0, 8
    beqz t0, 1b
    li t0, 0x2000000
    slli t1, a0, 2
    add t0, t0, t1
    sw zero, 0(t0)
    csrw mie, zero
    la t0, trapeze_secondary_stacks
    li t1, {size}
    mul t1, t1, a0
    add sp, t0, t1
    li a0, 0
    ret
3:  li a0, 1
    ret
"#,
    total = const SECONDARY_STACK * (MAX_HARTS - 1),
    size = const SECONDARY_STACK,
);

/// This hart's id.
pub fn hart_id() -> usize {
    riscv::register::mhartid::read()
}

/// The VMM lock (see the module documentation). A test-and-set lock rather than a ticket lock: the real harts are
/// QEMU threads that the host preempts (two host cores for four harts here, shared with other work), and a ticket
/// lock stalls every waiter while the hart whose turn is next is preempted; with test-and-set, whichever hart
/// runs takes it.
static VMM: spin::mutex::SpinMutex<()> = spin::mutex::SpinMutex::new(());

/// Harts spinning for the VMM lock now (see [`vmm_lock_for_turn`]).
static VMM_WAITERS: AtomicUsize = AtomicUsize::new(0);

/// How long a hart about to start a turn lets harts already waiting for the VMM lock go first: 100 µs.
const TURN_HANDOFF_TICKS: u64 = 1_000;

/// Takes the VMM lock, waiting for it.
pub fn vmm_lock() {
    // The guard is let go of by `vmm_unlock`, on this hart, which the lock does not know of: it is forgotten here.
    if let Some(guard) = VMM.try_lock() {
        core::mem::forget(guard);
        return;
    }
    VMM_WAITERS.fetch_add(1, Ordering::SeqCst);
    core::mem::forget(VMM.lock());
    VMM_WAITERS.fetch_sub(1, Ordering::SeqCst);
}

/// Takes the VMM lock for a VM's turn, first letting harts that already wait for it go (for at most
/// [`TURN_HANDOFF_TICKS`]). Test-and-set is unfair: a hart whose turns hold the lock nearly all the time (a VM
/// in excursions, served in the VMM, never running natively) let it go between two turns for a few
/// microseconds only, and a hart waiting for it whose QEMU thread the host had preempted then could miss every
/// such window for tens of seconds: a two-hart Linux in code caching, one hart spinning in excursions for the
/// other, starved the other (idle, its timer due, its real hart waiting for the lock to run it) for 44 s and
/// stalled RCU. Waiting here for the waiters, bounded so that a preempted waiter costs a turn 100 µs at most,
/// lets each of them in at the next turn boundary while its thread runs.
pub fn vmm_lock_for_turn() {
    let start = hw::mtime();
    while VMM_WAITERS.load(Ordering::SeqCst) > 0 && hw::mtime().saturating_sub(start) < TURN_HANDOFF_TICKS {
        core::hint::spin_loop();
    }
    vmm_lock();
}

/// Lets the VMM lock go.
///
/// # Safety
/// This hart holds it (took it with [`vmm_lock`]). Letting go of a lock another hart holds would let two harts
/// into the `RefCell`s it protects at once.
pub unsafe fn vmm_unlock() {
    // SAFETY: the caller holds the lock; its guard was forgotten by `vmm_lock`, so nothing else lets it go.
    unsafe { VMM.force_unlock() }
}

/// `hart`'s M-mode stack, `[bottom, top)`: the boot hart's is riscv-rt's `.stack`, the others' their slots of
/// `trapeze_secondary_stacks`.
fn stack(hart: usize) -> (usize, usize) {
    extern "C" {
        static __estack: u8;
        static __sstack: u8;
        static trapeze_secondary_stacks: u8;
    }
    if hart == BOOT_HART {
        return (core::ptr::addr_of!(__estack) as usize, core::ptr::addr_of!(__sstack) as usize);
    }
    let top = core::ptr::addr_of!(trapeze_secondary_stacks) as usize + hart * SECONDARY_STACK;
    (top - SECONDARY_STACK, top)
}

/// `hart`'s stack size and how many bytes of it have ever been used: from its top down to the lowest word that
/// is not zero (QEMU zeroes RAM, and the boot hart zeroes `.bss`). A check that the stacks are big enough, since
/// nothing guards their ends.
pub fn stack_used(hart: usize) -> (usize, usize) {
    let (bottom, top) = stack(hart);
    let lowest = (bottom..top).step_by(8).find(|&address| {
        // SAFETY: an aligned word of `hart`'s stack, in RAM: reading it has no effect. Its hart may be writing its
        // own frames meanwhile (this one, or a parked hart in its loop), only near its top, which this reads as
        // a whole word: at worst a stale value.
        unsafe { core::ptr::read_volatile(address as *const u64) != 0 }
    });
    (top - bottom, lowest.map_or(0, |lowest| top - lowest))
}

/// Harts that answered the roll call (a bit each), and [`CLOSED`] once the roll call is over.
static ONLINE: AtomicUsize = AtomicUsize::new(0);
const CLOSED: usize = 1 << (usize::BITS - 1);
/// How long the boot hart waits for the others to answer: 1 s (they answer within microseconds unless the host
/// is very busy).
const ROLL_CALL_TICKS: u64 = 10_000_000;

/// The CLINT's `msip` of `hart`.
fn msip(hart: usize) -> *mut u32 {
    (0x0200_0000 + 4 * hart) as *mut u32
}

/// Raises `hart`'s software interrupt (it wakes it from its park).
fn send_ipi(hart: usize) {
    // SAFETY: an aligned 32-bit CLINT register of the `virt` map; only the VMM (M-mode) writes these.
    unsafe { core::ptr::write_volatile(msip(hart), 1) }
}

/// The boot hart, with RAM and the shared state set up: wakes every other hart and waits (at most
/// [`ROLL_CALL_TICKS`]) for each to set itself up and answer. Answers the bitmask of the harts up, its own
/// included.
pub fn bring_up() -> usize {
    for hart in (0..MAX_HARTS).filter(|&hart| hart != BOOT_HART) {
        send_ipi(hart);
    }
    let all = ((1 << MAX_HARTS) - 1) & !(1 << BOOT_HART);
    let start = hw::mtime();
    while ONLINE.load(Ordering::Acquire) & all != all && hw::mtime().saturating_sub(start) < ROLL_CALL_TICKS {
        core::hint::spin_loop();
    }
    let online = ONLINE.fetch_or(CLOSED, Ordering::AcqRel) & all;
    online | (1 << BOOT_HART)
}

/// The harts up (a bit each, the boot hart's included), once [`bring_up`] has returned.
pub fn online() -> usize {
    (ONLINE.load(Ordering::Acquire) & !CLOSED) | (1 << BOOT_HART)
}

/// The run the secondaries join: its body, type-erased (see [`on_every_hart`]).
#[derive(Clone, Copy)]
struct Run {
    data: *const (),
    body: unsafe fn(*const (), usize),
}

// SAFETY: a `Run` only carries a pointer from the boot hart to the secondaries; what may be done with it across
// harts is the contract of `on_every_hart`.
unsafe impl Send for Run {}

/// The run being published, its number (incremented at each), and how many secondaries have left it.
static RUN: spin::Mutex<Option<Run>> = spin::Mutex::new(None);
static GENERATION: AtomicUsize = AtomicUsize::new(0);
static LEFT: AtomicUsize = AtomicUsize::new(0);

/// Calls `body` on the secondary `hart`.
///
/// # Safety
/// `data` points at a live `F`.
unsafe fn call<F: Fn(usize)>(data: *const (), hart: usize) {
    // SAFETY: the caller's guarantee; `on_every_hart` keeps `body` alive until every secondary has left it.
    unsafe { (*data.cast::<F>())(hart) }
}

/// Runs `body(hart)` on every hart up, the boot hart (the caller) included, none holding the VMM lock when it
/// starts (the caller's is let go of for the run, and taken again before this returns); returns once every
/// secondary has returned from it and is parked again.
///
/// # Safety
/// `body` runs on several harts at once, through a shared reference, although `F` need not be `Sync`: everything
/// it touches that is not `Sync` must be touched only while holding the VMM lock (letting it go only where no such
/// state is touched: around a guest's native run, or a sleep). The caller holds the VMM lock.
pub unsafe fn on_every_hart<F: Fn(usize)>(body: &F) {
    let secondaries = online() & !(1 << BOOT_HART);
    *RUN.lock() = Some(Run { data: (body as *const F).cast(), body: call::<F> });
    LEFT.store(0, Ordering::Release);
    GENERATION.fetch_add(1, Ordering::AcqRel);
    for hart in (0..MAX_HARTS).filter(|&hart| secondaries & (1 << hart) != 0) {
        send_ipi(hart);
    }
    // SAFETY: the caller holds the lock (this function's contract).
    unsafe { vmm_unlock() };
    body(BOOT_HART);
    while LEFT.load(Ordering::Acquire) < secondaries.count_ones() as usize {
        core::hint::spin_loop();
    }
    vmm_lock();
    *RUN.lock() = None;
}

/// A secondary hart, from `main`: sets up its own machine state, answers the roll call, then takes part in every
/// run the boot hart publishes, parked in `wfi` between them. Never returns.
pub fn secondary(hart: usize) -> ! {
    hw::init_machine();
    switch::install_trap_entry();
    hw::clear_pmp();
    if ONLINE.fetch_or(1 << hart, Ordering::AcqRel) & CLOSED != 0 {
        // Too late: the runs are planned without this hart.
        loop {
            riscv::asm::wfi();
        }
    }
    let mut seen = 0;
    loop {
        hw::wait_for_ipi(msip(hart));
        let generation = GENERATION.load(Ordering::Acquire);
        if generation == seen {
            continue;
        }
        seen = generation;
        let run = *RUN.lock();
        if let Some(run) = run {
            // SAFETY: the boot hart published this run and waits in `on_every_hart`, with `body` alive, until
            // this hart has counted itself in `LEFT` below.
            unsafe { (run.body)(run.data, hart) };
        }
        LEFT.fetch_add(1, Ordering::AcqRel);
    }
}
