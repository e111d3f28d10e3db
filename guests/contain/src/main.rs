//! `contain`: a guest that reaches for memory and devices that are not its own, and checks that every attempt
//! faults as the privileged specification says (load access fault 5, store/AMO access fault 7, instruction access
//! fault 1, `mtval` the address). Under a VMM these are the addresses where the VMM's own memory, another VM's
//! memory or another VM's device would be if the VMM leaked them:
//! * `0x0800_0000`: guest real space below RAM where the `virt` machine has no device;
//! * the first byte past the end of its RAM (from the devicetree in a1), and `0x1_0000_0000`, far above it;
//! * virtio-mmio slot 7 (`0x1000_8000`), a device this VM was not given.
//!
//! Each access is tried from M-mode, from S-mode with paging off, and from S-mode with Sv39 (identity gigapages
//! over devices, RAM and the far address, so that the guest's own tables allow the access and only the machine
//! refuses it). Nothing is delegated: every fault comes back to the M-mode handler, which records `mcause` and
//! `mtval` and skips the access. One `ok:`/`FAIL:` line per check (with the cause and tval seen), then
//! `contain: all N checks passed` and exit status 0.
//!
//! On `qemu-system-riscv64 -M virt` itself the virtio-mmio checks fail: QEMU answers every virtio-mmio slot.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use rt::checks::{self, check};
use rt::lower::{enter_lower, lower_return};
use rt::trap::{self, TrapFrame};
use rt::{addr, csr_write, println};

core::arch::global_asm!(
    r#"
    .section .text.snippets, "ax", @progbits
    .option push
    .option norvc

    /* M-mode snippets: a0 = address, a1 = value; the handler skips a faulting access. */
    .balign 4
    .globl m_ld, m_sd, m_lw, m_sw, m_jump
m_ld:
    ld a0, 0(a0)
    ret
m_sd:
    sd a1, 0(a0)
    ret
m_lw:
    lw a0, 0(a0)
    ret
m_sw:
    sw a1, 0(a0)
    ret
m_jump:
    jr a0

    /* S-mode snippets: the access, then `ecall` in case it did not fault. Either trap ends the excursion. */
    .balign 4
    .globl s_ld, s_sd, s_lw, s_sw, s_jump
s_ld:
    ld a0, 0(a0)
    ecall
s_sd:
    sd a1, 0(a0)
    ecall
s_lw:
    lw a0, 0(a0)
    ecall
s_sw:
    sw a1, 0(a0)
    ecall
s_jump:
    jr a0

    .option pop
"#
);

extern "C" {
    fn m_ld(address: u64, value: u64) -> u64;
    fn m_sd(address: u64, value: u64) -> u64;
    fn m_lw(address: u64, value: u64) -> u64;
    fn m_sw(address: u64, value: u64) -> u64;
    fn m_jump(address: u64, value: u64) -> u64;
    fn s_ld();
    fn s_sd();
    fn s_lw();
    fn s_sw();
    fn s_jump();
}

/// Guest real address below RAM where the `virt` machine has nothing.
const HOLE: u64 = 0x0800_0000;
/// Far above RAM: where another partition would be.
const FAR: u64 = 0x1_0000_0000;
/// virtio-mmio slot 7 (the last one).
const VIRTIO_SLOT_7: u64 = 0x1000_8000;
const RAM_BASE: u64 = 0x8000_0000;

static TRAPS: AtomicU64 = AtomicU64::new(0);
static CAUSE: AtomicU64 = AtomicU64::new(0);
static TVAL: AtomicU64 = AtomicU64::new(0);
static FROM: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut TrapFrame) {
    if frame.is_interrupt() {
        println!("FAIL: unexpected interrupt: mcause={:#x}", frame.mcause);
        rt::exit(104);
    }
    TRAPS.fetch_add(1, SeqCst);
    CAUSE.store(frame.mcause, SeqCst);
    TVAL.store(frame.mtval, SeqCst);
    FROM.store(frame.previous_privilege(), SeqCst);
    if frame.previous_privilege() != 3 {
        // From S-mode: the excursion is over, back to `enter_lower`'s caller in M-mode.
        frame.set_previous_privilege(3);
        frame.set_return_pc(addr(lower_return));
    } else if frame.code() == trap::INSTRUCTION_ACCESS_FAULT {
        // A jump to a bad address: back to the caller of the jumping snippet.
        frame.set_return_pc(frame.regs[1]);
    } else {
        // SAFETY: every other trap from M-mode here is a load or store in this program's code.
        unsafe { frame.skip_instruction() };
    }
}

/// The end of RAM from the devicetree at `dtb`: the `reg` of the first `memory` node (two address and two size
/// cells, as on `virt`). `None` when there is no devicetree or no such node.
fn ram_end(dtb: u64) -> Option<u64> {
    let read_u32 = |address: u64| -> u32 {
        // SAFETY: only called for addresses inside the blob, whose size the header gives; RAM is readable.
        u32::from_be(unsafe { core::ptr::read_volatile(address as *const u32) })
    };
    if !dtb.is_multiple_of(4) || dtb < RAM_BASE || read_u32(dtb) != 0xd00d_feed {
        return None;
    }
    let total = u64::from(read_u32(dtb + 4));
    let structure = dtb + u64::from(read_u32(dtb + 8));
    let strings = dtb + u64::from(read_u32(dtb + 12));
    let end = dtb + total;
    let name_is = |address: u64, wanted: &[u8]| {
        // SAFETY: as above; names are NUL-terminated inside the blob, and the loop stops at its end.
        (0..=wanted.len() as u64).all(|i| {
            address + i < end && unsafe { *((address + i) as *const u8) } == *wanted.get(i as usize).unwrap_or(&0)
        })
    };
    let starts_with = |address: u64, prefix: &[u8]| {
        (0..prefix.len() as u64)
            // SAFETY: as above.
            .all(|i| address + i < end && unsafe { *((address + i) as *const u8) } == prefix[i as usize])
    };
    let mut at = structure;
    let mut depth = 0u32;
    let mut in_memory = false;
    while at + 4 <= end {
        let token = read_u32(at);
        at += 4;
        match token {
            1 => {
                // FDT_BEGIN_NODE: a NUL-terminated name, padded to 4 bytes.
                depth += 1;
                in_memory = depth == 2 && starts_with(at, b"memory");
                // SAFETY: as above.
                while at < end && unsafe { *(at as *const u8) } != 0 {
                    at += 1;
                }
                at = (at + 4) & !3;
            }
            2 => {
                depth = depth.saturating_sub(1);
                in_memory = false;
            }
            3 => {
                // FDT_PROP: length, name offset, value padded to 4 bytes.
                let length = u64::from(read_u32(at));
                let name = strings + u64::from(read_u32(at + 4));
                let value = at + 8;
                if in_memory && length >= 16 && name_is(name, b"reg") {
                    let cell = |i: u64| u64::from(read_u32(value + 4 * i));
                    let base = cell(0) << 32 | cell(1);
                    let size = cell(2) << 32 | cell(3);
                    return Some(base + size);
                }
                at = (value + length + 3) & !3;
            }
            4 => {}
            _ => return None,
        }
    }
    None
}

/// An Sv39 root table: identity gigapages, RWX, for the devices (0..1 GiB), RAM (2..4 GiB) and the far address.
#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut ROOT: Table = Table([0; 512]);

const PTE_V: u64 = 1;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;

fn build_tables() -> u64 {
    let root = core::ptr::addr_of_mut!(ROOT) as *mut u64;
    let gigapage = |address: u64| (address >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D;
    for index in [0u64, 2, 3, 4] {
        // SAFETY: `index` < 512, inside `ROOT`, which nothing else references.
        unsafe { root.add(index as usize).write_volatile(gigapage(index << 30)) };
    }
    8 << 60 | (root as u64 >> 12)
}

/// The privilege an attempt runs in.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Machine,
    SupervisorBare,
    SupervisorSv39,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Machine => "M",
            Mode::SupervisorBare => "S bare",
            Mode::SupervisorSv39 => "S sv39",
        }
    }
}

#[derive(Clone, Copy)]
enum Access {
    Load64,
    Store64,
    Load32,
    Store32,
    Fetch,
}

/// Tries `access` at `address` in `mode`; returns (traps taken, mcause, mtval, privilege trapped from).
fn attempt(mode: Mode, access: Access, address: u64, satp: u64) -> (u64, u64, u64, u64) {
    let before = TRAPS.load(SeqCst);
    CAUSE.store(u64::MAX, SeqCst);
    TVAL.store(u64::MAX, SeqCst);
    let value = 0x5a5a_5a5a_5a5a_5a5a;
    if mode == Mode::Machine {
        let snippet = match access {
            Access::Load64 => m_ld,
            Access::Store64 => m_sd,
            Access::Load32 => m_lw,
            Access::Store32 => m_sw,
            Access::Fetch => m_jump,
        };
        // SAFETY: the snippet touches a0/a1 only; a fault comes back through the handler.
        unsafe { snippet(address, value) };
    } else {
        let snippet = match access {
            Access::Load64 => s_ld,
            Access::Store64 => s_sd,
            Access::Load32 => s_lw,
            Access::Store32 => s_sw,
            Access::Fetch => s_jump,
        };
        csr_write!("satp", if mode == Mode::SupervisorSv39 { satp } else { 0 });
        // SAFETY: `sfence.vma` only orders translations.
        unsafe { core::arch::asm!("sfence.vma", options(nostack)) };
        // SAFETY: the snippet touches a0/a1 only and ends in a trap, which the handler turns into a return here.
        unsafe { enter_lower(addr(snippet), 1, address, value) };
        csr_write!("satp", 0);
        // SAFETY: as above.
        unsafe { core::arch::asm!("sfence.vma", options(nostack)) };
    }
    (TRAPS.load(SeqCst) - before, CAUSE.load(SeqCst), TVAL.load(SeqCst), FROM.load(SeqCst))
}

#[unsafe(no_mangle)]
extern "C" fn main(_hart: u64, dtb: u64) -> u32 {
    trap::install_trap_handler(handler);
    // PMP entry 0 opens all memory to S-mode (NAPOT over everything, RWX), so only the machine refuses.
    csr_write!("pmpaddr0", u64::MAX >> 10);
    csr_write!("pmpcfg0", 0x1f);
    let satp = build_tables();

    let end = ram_end(dtb);
    check(
        "the devicetree gives the end of RAM",
        end.is_some_and(|end| end > RAM_BASE && end < FAR),
        format_args!("{end:?} from a1 = {dtb:#x}"),
    );
    let past_ram = end.unwrap_or(FAR);

    let places = [
        ("below RAM", HOLE),
        ("just past RAM", past_ram),
        ("far above RAM", FAR),
        ("virtio-mmio slot 7", VIRTIO_SLOT_7),
    ];
    for mode in [Mode::Machine, Mode::SupervisorBare, Mode::SupervisorSv39] {
        for (place, address) in places {
            let accesses: &[(Access, &str, u64)] = if address == VIRTIO_SLOT_7 {
                &[(Access::Load32, "lw", trap::LOAD_ACCESS_FAULT), (Access::Store32, "sw", trap::STORE_ACCESS_FAULT)]
            } else {
                &[
                    (Access::Load64, "ld", trap::LOAD_ACCESS_FAULT),
                    (Access::Store64, "sd", trap::STORE_ACCESS_FAULT),
                    (Access::Fetch, "jump", trap::INSTRUCTION_ACCESS_FAULT),
                ]
            };
            for &(access, verb, cause) in accesses {
                let (traps, mcause, mtval, from) = attempt(mode, access, address, satp);
                let from_wanted = if mode == Mode::Machine { 3 } else { 1 };
                check(
                    format_args!("{} {verb} {place} ({address:#x}): mcause {mcause} mtval {mtval:#x}", mode.name()),
                    traps == 1 && mcause == cause && mtval == address && from == from_wanted,
                    format_args!("wanted one trap from privilege {from_wanted} with mcause {cause} mtval {address:#x}, got {traps} from {from}"),
                );
            }
        }
    }
    // Still alive, with its own memory intact.
    let mut own = [0u64; 4];
    for (index, slot) in own.iter_mut().enumerate() {
        // SAFETY: a local array.
        unsafe { core::ptr::write_volatile(slot, index as u64 * 3) };
    }
    check("own memory still works", own == [0, 3, 6, 9], format_args!("{own:?}"));
    checks::finish("contain")
}
