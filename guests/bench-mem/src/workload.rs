//! The `bench-mem` workload, shared by the full and small binaries.
//!
//! M-mode builds Sv39 page tables in page-aligned statics: gigapage 0 (VA = PA 0..1 GiB, RW: the UART, CLINT and
//! finisher), gigapage 2 (VA = PA 0x8000_0000.., RWX: this program, its statics and stack), and an 8 MiB data
//! window at VA 0x4000_0000 made of 2048 4 KiB pages whose physical pages are a permutation of an 8 MiB static
//! (virtual page `v` -> physical page `(v * 1021 + 77) mod 2048`). PMP entry 0 opens all memory (NAPOT, RWX) so
//! S-mode may use it; then `mret` enters S-mode with Sv39 on. S-mode reads `mtime`, runs
//! [`bench_kernels::mem::run`] on the window (whose accesses span far more pages than any TLB holds), reads
//! `mtime` again, prints the per-kernel digests, the checksum line and the elapsed ticks, and powers off through
//! the finisher. Every trap is unexpected and ends the run with status 102.
use bench_kernels::{mem, ChecksumLine};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use rt::{csr_clear, csr_set, csr_write, println};

/// The CLINT's `mtime` (10 MHz on QEMU `virt`).
const MTIME: usize = 0x0200_bff8;
/// Where S-mode sees the data window.
const WINDOW_VA: usize = 0x4000_0000;
/// 4 KiB pages in the window.
const PAGES: usize = mem::WORDS / mem::PAGE_WORDS;

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(4096))]
struct Data([u64; mem::WORDS]);

/// The root table, one level-1 table and the level-0 tables of the window.
static mut TABLES: [Table; 2 + PAGES / 512] = [const { Table([0; 512]) }; 2 + PAGES / 512];
/// The physical pages behind the window.
static mut DATA: Data = Data([0; mem::WORDS]);

/// The scale and name S-mode runs with (set by M-mode before it enters S-mode).
static SCALE: AtomicU32 = AtomicU32::new(0);
static NAME: AtomicUsize = AtomicUsize::new(0);
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

fn pte(physical: usize, flags: u64) -> u64 {
    ((physical as u64 >> 12) << 10) | flags
}

/// Sets up paging and PMP, then continues in S-mode in [`supervisor_main`]; never returns.
pub fn run(name: &'static str, scale: u32) -> u32 {
    rt::trap::install_trap_handler(rt::trap::unexpected_trap);
    SCALE.store(scale, Ordering::Relaxed);
    NAME.store(name.as_ptr() as usize, Ordering::Relaxed);
    NAME_LEN.store(name.len(), Ordering::Relaxed);

    // SAFETY: only hart 0 runs, in M-mode with translation off; these are the only references to the statics.
    let (tables, data) = unsafe { (&mut *core::ptr::addr_of_mut!(TABLES), core::ptr::addr_of_mut!(DATA) as usize) };
    let (root, rest) = tables.split_first_mut().expect("tables");
    let (level1, level0) = rest.split_first_mut().expect("tables");
    root.0[0] = pte(0, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    root.0[WINDOW_VA >> 30] = pte(level1 as *const Table as usize, PTE_V);
    root.0[2] = pte(0x8000_0000, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D);
    for (index, table) in level0.iter_mut().enumerate() {
        level1.0[index] = pte(table as *const Table as usize, PTE_V);
        for (slot, entry) in table.0.iter_mut().enumerate() {
            let virtual_page = index * 512 + slot;
            let physical_page = (virtual_page * 1021 + 77) % PAGES;
            *entry = pte(data + physical_page * 4096, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
        }
    }

    // PMP entry 0: NAPOT over the whole address space, RWX.
    csr_write!("pmpaddr0", u64::MAX >> 10);
    csr_write!("pmpcfg0", 0x1f);
    csr_write!("satp", (8 << 60) | (root as *const Table as u64 >> 12));
    csr_write!("mepc", supervisor_main as *const () as usize as u64);
    csr_clear!("mstatus", 3 << 11);
    csr_set!("mstatus", 1 << 11);
    // SAFETY: the tables identity-map this code, its statics and stack for S-mode, so execution continues in
    // `supervisor_main`, which never returns.
    unsafe { core::arch::asm!("sfence.vma", "mret", options(noreturn, nostack)) }
}

fn mtime() -> u64 {
    // SAFETY: `mtime` is a device register, identity-mapped (gigapage 0) in S-mode.
    unsafe { core::ptr::read_volatile(MTIME as *const u64) }
}

extern "C" fn supervisor_main() -> ! {
    // SAFETY: M-mode stored a `&'static str`'s pointer and length.
    let name = unsafe {
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(
            NAME.load(Ordering::Relaxed) as *const u8,
            NAME_LEN.load(Ordering::Relaxed),
        ))
    };
    let start = mtime();
    // SAFETY: the window is mapped RW to DATA's pages (a permutation of them), which nothing else references.
    let window = unsafe { core::slice::from_raw_parts_mut(WINDOW_VA as *mut u64, mem::WORDS) };
    let report = mem::run(SCALE.load(Ordering::Relaxed), window);
    let elapsed = mtime().wrapping_sub(start);
    println!("{name}: {report}");
    println!("{}", ChecksumLine(name, report.checksum()));
    println!("{name}: {elapsed} mtime ticks");
    rt::exit(0)
}
