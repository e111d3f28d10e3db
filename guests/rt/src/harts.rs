//! Guests that run code on every hart: how many harts the machine has (its devicetree's `cpu@` nodes), and
//! [`secondary_harts!`], which gives harts other than 0 a stack each and sends them to the guest's
//! `extern "C" fn secondary_main(hart: usize)`.
//!
//! Harts other than 0 may start before hart 0 has zeroed `.bss`: a guest keeps what they read first (its start
//! flag) in `.data` (a nonzero initial value does it), as the stacks are.

/// Defines `rt_secondary_start` (see `rt`'s `_start`): a hart below `$max_harts` gets its own 8 KiB stack, FP
/// enabled, and calls the guest's `secondary_main(hart)`; any other hart, or one returning, waits forever.
#[macro_export]
macro_rules! secondary_harts {
    ($max_harts:expr) => {
        core::arch::global_asm!(
            r#"
    .section .text.secondary, "ax", @progbits
    .globl rt_secondary_start
rt_secondary_start:
    li t0, {max_harts}
    bgeu a0, t0, 2f
    la sp, rt_secondary_stacks
    slli t0, a0, 13
    add sp, sp, t0
    /* mstatus.FS = Initial, in case the compiler uses FP registers. */
    li t0, 0x2000
    csrs mstatus, t0
    call secondary_main
2:
    wfi
    j 2b

    .section .data.rt_secondary_stacks, "aw", @progbits
    .balign 16
rt_secondary_stacks:
    .space {max_harts} * 8192
"#,
            max_harts = const $max_harts,
        );
    };
}

/// How many `cpu@` nodes the flattened devicetree at `dtb` has (0 when it is not a devicetree).
pub fn count_cpus(dtb: usize) -> usize {
    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const NOP: u32 = 4;
    // SAFETY: the machine passed a devicetree at `dtb`; every read below stays inside its `totalsize`.
    let word = |offset: usize| unsafe { u32::from_be(core::ptr::read_volatile((dtb + offset) as *const u32)) };
    if dtb == 0 || !dtb.is_multiple_of(4) || word(0) != 0xd00d_feed {
        return 0;
    }
    let total = word(4) as usize;
    let mut at = word(8) as usize;
    let mut cpus = 0;
    while at + 8 <= total {
        match word(at) {
            BEGIN_NODE => {
                at += 4;
                let name = (dtb + at) as *const u8;
                let mut length = 0;
                // SAFETY: bounded by `total`, inside the blob.
                while at + length < total && unsafe { name.add(length).read_volatile() } != 0 {
                    length += 1;
                }
                // SAFETY: `length` bytes were just read.
                let name = unsafe { core::slice::from_raw_parts(name, length) };
                cpus += name.starts_with(b"cpu@") as usize;
                at += (length + 4) & !3;
            }
            PROP => at += 12 + ((word(at + 4) as usize + 3) & !3),
            END_NODE | NOP => at += 4,
            _ => break,
        }
    }
    cpus
}

/// Holds harts other than 0 until hart 0 has zeroed `.bss` and counted the harts that take part. Its initial
/// value is not all zero, so a `static` gate lives in `.data`, which the other harts may read first.
pub struct StartGate {
    state: core::sync::atomic::AtomicU32,
    harts: core::sync::atomic::AtomicU64,
}

impl StartGate {
    const WAIT: u32 = 0x5741_4954;
    const OPEN: u32 = 0x5245_4459;

    pub const fn new() -> Self {
        Self { state: core::sync::atomic::AtomicU32::new(Self::WAIT), harts: core::sync::atomic::AtomicU64::new(0) }
    }

    /// Hart 0: lets the first `harts` harts start.
    pub fn open(&self, harts: u64) {
        use core::sync::atomic::Ordering;
        self.harts.store(harts, Ordering::Relaxed);
        self.state.store(Self::OPEN, Ordering::Release);
    }

    /// Another hart: waits until the gate opens, then says whether `hart` takes part.
    pub fn wait(&self, hart: usize) -> bool {
        use core::sync::atomic::Ordering;
        while self.state.load(Ordering::Acquire) != Self::OPEN {
            core::hint::spin_loop();
        }
        (hart as u64) < self.harts()
    }

    /// How many harts take part (0 until the gate opens).
    pub fn harts(&self) -> u64 {
        self.harts.load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for StartGate {
    fn default() -> Self {
        Self::new()
    }
}
