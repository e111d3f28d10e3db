//! `trapeze-board`: the native VMM on QEMU `virt` (rv64). It boots in M-mode (riscv-rt), brings up its console
//! (the physical UART), heap (`linked_list_allocator`) and logging (`defmt` over semihosting, decoded on the
//! host), then runs guest programs from this repository as VMs, each in its own RAM partition with its own
//! port of the shared console (`trapeze::dev::console_mux`: lines tagged `[vmN] `, `Ctrl-A c` to type to the next
//! VM), natively in U-mode with the native engine, on every real hart QEMU starts (`smp`: `-smp 4`): each real
//! hart takes the next VM that may run from one shared run queue ([`Board`]), runs one turn of it on the machine
//! timer under the core's `trapeze::vm::Hypervisor` (a one-VM hypervisor per VM: its timed turns, its clock kept
//! to its own time), and puts it back; a VM runs on one real hart at a time, all its harts there, except a
//! multi-hart VM run by [`run_parallel`] (two-hart Linux, in each of its four modes and in its loop, and the
//! scaling figures' `hash-harts`), whose harts are entries of their own, each with its own `Vm`, engine and
//! shadow tables, and run on several real harts at once, in any mode: a page one hart's engine starts watching
//! (code caching keeps code from it, patching scans it) loses W in every other hart's shadow tables and real TLB
//! before that engine reads it (`engine::Revocations`, the protocol in `engine.rs`). The board itself holds the wiring
//! (which guests, their images, devices and expectations), the run queue, and the hardware (the engine, the world
//! switch, the harts, sleeping on the timer when no VM may run). When every VM has powered off it prints one summary line and exits QEMU through the
//! `sifive,test0` finisher: status 0 when every guest exited 0.
//!
//! The demo's guests run their own code in *virtual M-mode* (no SBI; the VMM's SBI is for S-mode guests): `hello`
//! twice, `sv39` (which drives the shadow page tables through virtual S- and U-mode), `interrupts` (CLINT timer and
//! software interrupts, delegation), `idle` (`wfi` until a timer deadline), `amo`, `fpu` (the FPU switched with the
//! virtual `mstatus.FS`) and `arith`. `traps` is left out: its misaligned SC checks need the host to trap a
//! misaligned SC that has no reservation, and QEMU 7.2 just fails it.
//!
//! `rtc` runs twice: vm19 is given QEMU `virt`'s goldfish RTC whole (a dedicated device without DMA, mapped
//! straight into its shadow tables and let through by its PMP alone) and reads the time from it; vm20 is not, and
//! its accesses to the RTC's page get the access fault.
//!
//! U-Boot (virtual S-mode, the VMM's SBI) runs beside them; when the runner gives the machine a virtio-blk disk
//! (`DISK_FILE`), U-Boot gets the disk's first MBR partition as its own virtio disk (`disk`), and two VMs of the
//! `disk-pattern` guest (vm21, vm22) get the second and third, each filling its whole partition with a pattern of
//! its own and reading it back, concurrently with the others. A second disk (`DEDICATED_DISK_FILE`) is given whole
//! to a third (vm23): a dedicated DMA-capable device, whose requests the VMM still translates and bounds-checks.
//!
//! Networking (issue 12, `nic`): the board owns one learning bridge of the core (`trapeze::net::Bridge`). Two VMs
//! of the `net-ping` guest (vm24, vm25), each with a virtio-net NIC of the core's device model on a port of the
//! bridge, greet each other by broadcast and exchange unicast frames, concurrently with the other demo VMs; the
//! board pumps the bridge between turns and wakes a VM whose port got frames (its NIC delivers them and raises its
//! interrupt through its PLIC). When the runner gives the machine a virtio-net NIC (`run-qemu.sh`: QEMU's
//! user-mode network), the VMM drives it with `virtio-drivers` as the bridge's uplink, U-Boot gets a NIC on the
//! bridge too (slot 1, in its devicetree), and the board types `dhcp` at it: QEMU's DHCP server leases it
//! 10.0.2.15 through the physical NIC.
//!
//! The spooled printer (issue 12, `printer`): two VMs of the `print-jobs` guest (vm26, vm27), each a small OS
//! whose processes keep level-1 spools and submit whole jobs to the core's printer device, share the board's
//! printer, the serial console: the board pumps the core's spool scheduler between turns, which prints whole
//! jobs, fairly, framed by banners, through `embedded-io`.
//!
//! Memory: the board's 512 MiB are full (the VMs' RAM partitions, shadow table pools and code caches are
//! statics). The network and printer VMs run with the demo rather than in a phase of their own, since U-Boot's
//! lease needs the bridge and its pump in the demo anyway. The `net-ping` VMs' 16 MiB partitions come from the
//! four `time-loop` benchmark runs, which now share one partition (they run one after the other, like the Linux
//! boots, each on it zeroed), and the `print-jobs` VMs' RAM from the Linux VMs' window above the board's image
//! (`LINUX_RAM`), which only the Linux boots use, and they never run with the demo; so the board's image shrinks
//! by one partition while it gains four VMs' shadow pools and code caches.
#![no_std]
#![no_main]
// The board is where the VMM's `unsafe` lives (device registers, CSRs, the world switch, the statics handed to
// VMs): every unsafe operation is in an `unsafe` block, even inside an `unsafe fn`; every block and `unsafe impl`
// says why it holds in a safety comment, every `unsafe fn` what its caller must guarantee in `# Safety`;
// and a safety comment on code that needs none is refused too, so the comments stay where the `unsafe` is.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![deny(clippy::unnecessary_safety_comment, clippy::unnecessary_safety_doc)]

extern crate alloc;

mod disk;
mod engine;
mod hw;
mod nic;
mod printer;
mod slots;
mod smp;
mod switch;
mod take_once;

core::arch::global_asm!(include_str!("guests.S"));

extern "C" {
    static hostile_guest_start: u8;
    static hostile_guest_end: u8;
    static csr_loop_guest_start: u8;
    static csr_loop_guest_end: u8;
    static time_loop_guest_start: u8;
    static time_loop_guest_end: u8;
}

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use defmt_semihosting as _;
use engine::{Copies, NativeEngine, Patches, Revocations, SiteCache, POOL};
use trapeze::dev::console_mux::{ConsoleMux, MuxPort};
use trapeze::dev::printer::Printer;
use trapeze::dev::SerialBackend;
use trapeze::dev::{MachineRequest, MmioError};
use trapeze::exec::native;
use trapeze::hart::Hart;
use trapeze::mem::shadow::ShadowTables;
use trapeze::mem::{Ram, SharedRam, RAM_BASE};
use trapeze::net::PortId;
use trapeze::vm::boot::{place_images, Images};
use trapeze::vm::fdt::{MachineDescription, QEMU_VIRT_PRINTER, QEMU_VIRT_RTC, QEMU_VIRT_VIRTIO};
use trapeze::vm::parallel::{HartWaker, OneHart, SharedDevices};
use trapeze::vm::sbi::SbiShared;
use trapeze::vm::virt::{Backends, VirtDevices};
use trapeze::vm::{Clock, Devices, Hypervisor, RunOutcome, SliceOutcome, TimedEngine, Vm, VmBuilder, VmState};

use smp::MAX_HARTS;

use take_once::TakeOnce;

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// RAM of each VM, in MiB (the guests are linked for 16 MiB at 0x8000_0000).
const VM_RAM_SIZE: usize = 16 << 20;
/// How many VMs the board runs: the twenty-two of the demo (U-Boot, the three `disk-pattern` VMs, the two
/// `net-ping` VMs and the two `print-jobs` VMs among them) and the six benchmark guests.
const MAX_VMS: usize = 28;
/// How many VMs run together: the demo's twenty-two (the benchmarks and the Linux boots run alone).
const DEMO_VMS: usize = 22;
/// Partitions of [`VM_RAM_SIZE`]: every VM but U-Boot has one, except that the four `time-loop` benchmark runs,
/// one after the other, share one ([`TIME_LOOP_PARTITION`]), and that the two `print-jobs` VMs' RAM is in the
/// Linux VMs' window ([`LINUX_RAM`]), which nothing else uses when the board does not boot Linux.
const SMALL_PARTITIONS: usize = MAX_VMS - 1 - 3 - 2;
/// The partition the `time-loop` benchmark runs share, each zeroed before it starts.
const TIME_LOOP_PARTITION: usize = 13;
/// The board stops waiting for the VMs of one run after 100 s (then the ones not done fail).
const GIVE_UP_TICKS: u64 = 1_000_000_000;
/// A VM's turn on a real hart: 1 ms of the 10 MHz machine timer, then the VM goes back to the run queue.
const TURN_TICKS: u64 = 10_000;

/// A VM's RAM partition: page-aligned host memory, in .bss (zeroed at boot).
#[repr(C, align(4096))]
struct Partition<const SIZE: usize>([u8; SIZE]);

// The VMs' memory, in .bss: each entry handed out once, to one VM, for the board's lifetime (`TakeOnce`).
static PARTITIONS: TakeOnce<Partition<VM_RAM_SIZE>, SMALL_PARTITIONS> =
    TakeOnce::new([const { Partition([0; VM_RAM_SIZE]) }; SMALL_PARTITIONS]);
/// RAM of the U-Boot VM: U-Boot relocates itself to the top of RAM and keeps its heap there.
const UBOOT_RAM_SIZE: usize = 64 << 20;
static UBOOT_PARTITION: TakeOnce<Partition<UBOOT_RAM_SIZE>, 1> =
    TakeOnce::new([const { Partition([0; UBOOT_RAM_SIZE]) }; 1]);
/// Each VM's shadow page table pool, by VM index.
static SHADOWS: TakeOnce<ShadowTables<POOL>, MAX_VMS> = TakeOnce::new([const { ShadowTables::new() }; MAX_VMS]);
/// Each VM's patch table, patched copies and code cache of trap sites (taken when its mode needs them).
static PATCHES: TakeOnce<Patches, MAX_VMS> = TakeOnce::new([const { Patches::new() }; MAX_VMS]);
static COPIES: TakeOnce<Copies, MAX_VMS> = TakeOnce::new([const { Copies::new() }; MAX_VMS]);
static SITE_CACHES: TakeOnce<SiteCache, MAX_VMS> = TakeOnce::new([const { SiteCache::new() }; MAX_VMS]);

/// Entry `index` of one of the tables above, or the VMM's panic when the wiring gives it to a second VM.
fn take<T, const N: usize>(table: &'static TakeOnce<T, N>, index: usize, what: &str) -> &'static mut T {
    table.take(index).unwrap_or_else(|| panic!("{what} {index} given to a second VM"))
}

/// How the VMM virtualizes a VM's counters and the traps that remain (issue 10's three modes and a fourth,
/// compared side by side by the benchmarks).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `mcounteren` = 0: every counter read traps (trap-and-emulate alone).
    Trapping,
    /// Counters delegated; the patching scanner patches their reads into traps.
    Patching,
    /// Patching, and the code around hot trap sites runs from the VMM's code cache.
    PatchingCached,
    /// Counters trap, and the code around hot trap sites runs from the VMM's code cache (nothing scanned).
    TrappingCached,
}

/// The mode every VM runs in unless it pins another: the best in the benchmarks (see the README): caching hot
/// trap sites makes trap-dense code several times faster and switches worlds a fifth less often for Linux at
/// the same wall time, while scanning costs Linux more than the counter traps patching saves.
const DEFAULT_MODE: Mode = Mode::TrappingCached;

static HELLO: &[u8] = include_bytes!(env!("BOARD_GUEST_HELLO"));
static SV39: &[u8] = include_bytes!(env!("BOARD_GUEST_SV39"));
static INTERRUPTS: &[u8] = include_bytes!(env!("BOARD_GUEST_INTERRUPTS"));
static IDLE: &[u8] = include_bytes!(env!("BOARD_GUEST_IDLE"));
static AMO: &[u8] = include_bytes!(env!("BOARD_GUEST_AMO"));
static FPU: &[u8] = include_bytes!(env!("BOARD_GUEST_FPU"));
static ARITH: &[u8] = include_bytes!(env!("BOARD_GUEST_ARITH"));
static BENCH_INT: &[u8] = include_bytes!(env!("BOARD_GUEST_BENCH_INT"));
static CONTAIN: &[u8] = include_bytes!(env!("BOARD_GUEST_CONTAIN"));
static COUNTERS: &[u8] = include_bytes!(env!("BOARD_GUEST_COUNTERS"));
static RTC: &[u8] = include_bytes!(env!("BOARD_GUEST_RTC"));
static DISK_PATTERN: &[u8] = include_bytes!(env!("BOARD_GUEST_DISK_PATTERN"));
static NET_PING: &[u8] = include_bytes!(env!("BOARD_GUEST_NET_PING"));
static PRINT_JOBS: &[u8] = include_bytes!(env!("BOARD_GUEST_PRINT_JOBS"));
static HASH_HARTS: &[u8] = include_bytes!(env!("BOARD_GUEST_HASH_HARTS"));
/// The two `print-jobs` VMs sharing the board's printer (vm26, vm27): VM index, and their spools' in the spool set.
const PRINT_VMS: [(usize, usize); printer::PRINTER_VMS] = [(26, 0), (27, 1)];
/// The two `net-ping` VMs on the board's bridge (vm24, vm25): VM index, RAM partition, NIC address and kernel
/// command line (the peer's address).
const NET_PING_VMS: [(usize, usize, [u8; 6], &str); 2] = [
    (24, 14, [0x52, 0x54, 0x00, 0x12, 0x34, 0x01], "peer=52:54:00:12:34:02"),
    (25, 15, [0x52, 0x54, 0x00, 0x12, 0x34, 0x02], "peer=52:54:00:12:34:01"),
];
/// U-Boot's NIC address on the board's bridge.
const UBOOT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x09];
/// The kernel command lines of the two `disk-pattern` VMs (vm21, vm22), which seed their patterns.
const PATTERN_SEEDS: [&str; 2] = ["board pattern vm21", "board pattern vm22"];
/// The kernel command line of the `disk-pattern` VM given the second physical disk whole (vm23).
const DEDICATED_SEED: &str = "board dedicated vm23";
static UBOOT: &[u8] = include_bytes!(env!("BOARD_UBOOT"));
/// What the board types at U-Boot, each once the text before it has appeared: stop autoboot, ask `version`, ask
/// for the SBI implementation, sleep a second (timer), and wait for the answer.
const UBOOT_SCRIPT: &[(&str, &str)] = &[
    ("Hit any key to stop autoboot", "\n"),
    ("=> ", "version\n"),
    ("=> ", "sbi\n"),
    ("=> ", "sleep 1; echo slept\n"),
    ("\nslept", ""),
];
/// The same, then, with a disk: find it, show it (its capacity is the partition's), read the partition's first
/// sector and show its first bytes, write sector 1 full of 0x5a (the buffers lie in the VM's 64 MiB of RAM), then
/// read and write two sectors straddling the partition's end (4096 sectors in the board test): both must fail
/// (an I/O error status) and the write must change neither sector.
const UBOOT_DISK_SCRIPT: &[(&str, &str)] = &[
    ("Hit any key to stop autoboot", "\n"),
    ("=> ", "version\n"),
    ("=> ", "sbi\n"),
    ("=> ", "sleep 1; echo slept\n"),
    ("\nslept", ""),
    ("=> ", "virtio scan; virtio info\n"),
    ("=> ", "virtio read 0x82000000 0 1; md.b 0x82000000 0x10\n"),
    ("=> ", "mw.b 0x82100000 0x5a 0x200; virtio write 0x82100000 1 1\n"),
    ("blocks written: ", ""),
    ("=> ", "virtio read 0x82000000 0xfff 2\n"),
    ("=> ", "virtio write 0x82100000 0xfff 2\n"),
    ("=> ", "echo disk done\n"),
    ("\ndisk done", ""),
];
/// With a NIC on the bridge and its uplink to QEMU's user-mode network, after the rest: ask QEMU's DHCP server
/// for a lease (without loading a boot file after it: `autoload no`), and show the address.
const UBOOT_NET_SCRIPT: &[(&str, &str)] = &[
    ("=> ", "setenv autoload no; dhcp\n"),
    ("DHCP client bound to address ", ""),
    ("=> ", "echo ip=$ipaddr net done\n"),
    ("\nip=", ""),
    ("net done", ""),
];
/// CSR reads the `csr-loop` guest makes (`guests.S`).
const CSR_LOOP_TRAPS: u64 = 100_000;
/// `time` reads the `time-loop` guest makes (`guests.S`).
const TIME_LOOP_READS: u64 = 1_000_000;

/// Longest console line a VM may write before it is flushed without its newline.
const LINE_MAX: usize = 256;

/// The physical console shared by every VM through the core's multiplexer: each VM's output a whole line at a
/// time (so the VMs' lines do not interleave) tagged `[vmN] `, input typed at the physical console to the
/// focused VM (`Ctrl-A c` cycles; see `trapeze::dev::console_mux`).
/// Each VM's console input buffer, in bytes.
const CONSOLE_INPUT: usize = 1024;
type BoardMux = ConsoleMux<PhysicalConsole, MAX_VMS, CONSOLE_INPUT, LINE_MAX>;
type BoardConsole = RefCell<BoardMux>;

/// The physical UART as the multiplexer's backend. Input is looked for at most once a millisecond while none
/// comes: the UART's registers cost far more under QEMU than a guest's polling of its own virtual UART should.
struct PhysicalConsole {
    next_poll: u64,
}

impl SerialBackend for PhysicalConsole {
    fn write_byte(&mut self, byte: u8) {
        hw::console_write_byte(byte);
    }
    fn read_byte(&mut self) -> Option<u8> {
        let now = hw::mtime();
        if now < self.next_poll {
            return None;
        }
        let byte = hw::console_read_byte();
        if byte.is_none() {
            self.next_poll = now.saturating_add(10_000);
        }
        byte
    }
}

/// The multiplexer, for the board's lifetime; every port detached until its VM is built.
fn board_console() -> &'static BoardConsole {
    let mut mux = BoardMux::new(PhysicalConsole { next_poll: 0 });
    (0..MAX_VMS).for_each(|port| mux.detach(port));
    Box::leak(Box::new(RefCell::new(mux)))
}

/// A VM's console: its port of the multiplexer, with input typed from a script, each line once the text before
/// it has appeared in the VM's output.
struct VmConsole {
    port: MuxPort<'static, PhysicalConsole, MAX_VMS, CONSOLE_INPUT, LINE_MAX>,
    script: &'static [(&'static str, &'static str)],
    /// The next step of `script`, and how many bytes of its expected text have been seen in a row.
    step: usize,
    matched: usize,
}

impl VmConsole {
    fn new(
        port: MuxPort<'static, PhysicalConsole, MAX_VMS, CONSOLE_INPUT, LINE_MAX>,
        script: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self { port, script, step: 0, matched: 0 }
    }

    /// The VM's partial line, now.
    fn flush(&mut self) {
        if let Ok(mut mux) = self.port.mux().try_borrow_mut() {
            mux.flush(self.port.index());
        }
    }

    /// The VM stopped: its partial line goes out and the focus no longer stops at it.
    fn detach(&mut self) {
        if let Ok(mut mux) = self.port.mux().try_borrow_mut() {
            mux.detach(self.port.index());
        }
    }

    /// How many steps of the script have been played.
    fn steps_played(&self) -> usize {
        self.step
    }

    /// Whether every step of the script has been played.
    fn script_done(&self) -> bool {
        self.step >= self.script.len()
    }

    /// Follows the output through the script's expected texts.
    fn watch(&mut self, byte: u8) {
        let Some(&(expect, send)) = self.script.get(self.step) else { return };
        let expect = expect.as_bytes();
        if expect.get(self.matched) == Some(&byte) {
            self.matched += 1;
        } else {
            self.matched = usize::from(expect.first() == Some(&byte));
        }
        if self.matched == expect.len() {
            self.matched = 0;
            self.step += 1;
            // The typed line shows in the console as the guest echoes it.
            if let Ok(mut mux) = self.port.mux().try_borrow_mut() {
                for &typed in send.as_bytes() {
                    mux.push_input(self.port.index(), typed);
                }
            }
        }
    }
}

impl SerialBackend for VmConsole {
    fn write_byte(&mut self, byte: u8) {
        self.watch(byte);
        self.port.write_byte(byte);
    }
    fn read_byte(&mut self) -> Option<u8> {
        self.port.read_byte()
    }
}

/// Machine time at boot, so every VM's clock starts near 0.
static BOOT_TIME: AtomicU64 = AtomicU64::new(0);

/// A VM's view of the machine timer: real time since boot. The hypervisor hides from it the time the VM was
/// runnable but descheduled and the time the VMM worked on its exits (`Vm::hide_time`), so a guest sees its time
/// advance while it runs natively or sleeps, not while other VMs run or its privileged instructions and device
/// accesses are emulated (its timer deadlines then come when it can take them, and a short deadline is not used
/// up by emulation). It never sleeps: the hypervisor reports idle VMs and the board sleeps when all are.
struct BoardClock;

impl Clock for BoardClock {
    fn now(&mut self) -> u64 {
        hw::mtime().wrapping_sub(BOOT_TIME.load(Ordering::Relaxed))
    }
}

/// The machine timer as the hypervisor's clock: its turns and idle deadlines are in absolute machine time.
struct MachineTime;

impl Clock for MachineTime {
    fn now(&mut self) -> u64 {
        hw::mtime()
    }
}

/// The native engine's budget is a time quantum on the real timer (`native::quantum_ticks`), and it measures
/// the time its guest ran: what the hypervisor's timed turns need.
impl TimedEngine for NativeEngine<'_> {
    fn budget_for(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(native::INSTRUCTIONS_PER_TICK)
    }
    fn guest_ticks(&self) -> u64 {
        self.stats.guest_ticks
    }
    fn end_slice(&mut self, now: u64) {
        NativeEngine::end_slice(self, now)
    }
}

/// The host backends of a VM's virtio devices: a partition of a physical disk, a port of the board's bridge.
struct BoardBackends;

impl Backends for BoardBackends {
    type Block = disk::Partition;
    type Net = nic::VmNic;
}

/// A VM's devices (QEMU `virt`'s set), reporting every access no device serves: the dispatcher injects an
/// access fault into the guest, and the VMM says so on the console and in its log.
struct ReportingDevices {
    vm: usize,
    inner: VirtDevices<'static, VmConsole, BoardBackends>,
    /// The device page given whole to this VM (guest real page, host page): its native accesses never reach
    /// here, but an instruction the engine emulates (or runs in an excursion) does, and is served on the device.
    passthrough: Option<(u64, u64)>,
    /// How many of the VM's accesses to its passthrough page the VMM served (emulated instructions).
    passthrough_served: u64,
}

impl ReportingDevices {
    /// The host address of a 32-bit access at guest real `addr` in the VM's passthrough page.
    fn passthrough_host(&self, addr: u64, size: u8) -> Option<u64> {
        let (guest, host) = self.passthrough?;
        let offset = addr.checked_sub(guest).filter(|&offset| offset < 4096 && size == 4 && addr.is_multiple_of(4))?;
        Some(host + offset)
    }

    fn report<T>(&self, result: Result<T, MmioError>, addr: u64, what: &str) -> Result<T, MmioError> {
        if result.is_err() {
            println!("board: vm{}: {what} of {addr:#x} refused (no device there): access fault injected", self.vm);
            defmt::warn!("vm {=usize}: access to {=u64:#x} refused, fault injected", self.vm, addr);
        }
        result
    }
}

impl Devices for ReportingDevices {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError> {
        if let Some(host) = self.passthrough_host(addr, size) {
            self.passthrough_served += 1;
            // SAFETY: an aligned 32-bit register of the device page given to this VM alone (no DMA, so reading it
            // touches nothing else); the board runs bare, physical = virtual.
            return Ok(u64::from(unsafe { core::ptr::read_volatile(host as *const u32) }));
        }
        let result = self.inner.read(addr, size, ram);
        self.report(result, addr, "load")
    }
    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        if let Some(host) = self.passthrough_host(addr, size) {
            self.passthrough_served += 1;
            // SAFETY: as for `read`: the VM may write its own device's registers natively too.
            unsafe { core::ptr::write_volatile(host as *mut u32, value as u32) };
            return Ok(None);
        }
        let result = self.inner.write(addr, size, value, ram);
        self.report(result, addr, "store")
    }
    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram) {
        self.inner.update(now, harts, ram)
    }
    fn update_time(&mut self, now: u64, harts: &mut [Hart]) {
        self.inner.update_time(now, harts)
    }
    fn hart_lines(&self, index: usize) -> Option<trapeze::vm::HartLines> {
        self.inner.hart_lines(index)
    }
    fn mtime(&self) -> u64 {
        self.inner.mtime()
    }
    fn ticks_until_deadline(&self) -> Option<u64> {
        self.inner.ticks_until_deadline()
    }
    fn input_pending(&self) -> bool {
        self.inner.input_pending()
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.inner.console_write(bytes)
    }
    fn console_read(&mut self) -> Option<u8> {
        self.inner.console_read()
    }
}

/// A VM's devices as one `Vm` sees them: the whole machine's (a VM whose harts all run in one `Vm`), or one
/// hart's view of devices shared by the per-hart `Vm`s of a VM whose harts run on several real harts at once
/// (the core's `SharedDevices`, under their own spin lock).
// The whole machine's variant is large, and the rarer one small: both live inside a VM that is in a `Box` of its
// own already (`Slot`), and boxing the large one would add an indirection to every device access.
#[allow(clippy::large_enum_variant)]
enum BoardDevices<'r> {
    Whole(ReportingDevices),
    Hart { view: OneHart<'r, 'r, ReportingDevices>, shared: &'r SharedDevices<'r, ReportingDevices> },
}

impl BoardDevices<'_> {
    /// The devices while the VM is wired, before any is shared.
    fn whole(&mut self) -> &mut ReportingDevices {
        match self {
            Self::Whole(devices) => devices,
            Self::Hart { .. } => panic!("a VM's devices wired after they were shared between its harts"),
        }
    }

    /// `look` at the devices (under their lock when shared).
    fn look<T>(&self, look: impl FnOnce(&ReportingDevices) -> T) -> T {
        match self {
            Self::Whole(devices) => look(devices),
            Self::Hart { shared, .. } => shared.with_devices(|devices| look(devices)),
        }
    }

    /// `change` the devices (under their lock when shared).
    fn change<T>(&mut self, change: impl FnOnce(&mut ReportingDevices) -> T) -> T {
        match self {
            Self::Whole(devices) => change(devices),
            Self::Hart { shared, .. } => shared.with_devices(change),
        }
    }
}

impl Devices for BoardDevices<'_> {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError> {
        match self {
            Self::Whole(devices) => devices.read(addr, size, ram),
            Self::Hart { view, .. } => view.read(addr, size, ram),
        }
    }
    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        match self {
            Self::Whole(devices) => devices.write(addr, size, value, ram),
            Self::Hart { view, .. } => view.write(addr, size, value, ram),
        }
    }
    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram) {
        match self {
            Self::Whole(devices) => devices.update(now, harts, ram),
            Self::Hart { view, .. } => view.update(now, harts, ram),
        }
    }
    fn update_time(&mut self, now: u64, harts: &mut [Hart]) {
        match self {
            Self::Whole(devices) => devices.update_time(now, harts),
            Self::Hart { view, .. } => view.update_time(now, harts),
        }
    }
    fn hart_lines(&self, index: usize) -> Option<trapeze::vm::HartLines> {
        match self {
            Self::Whole(devices) => devices.hart_lines(index),
            Self::Hart { view, .. } => view.hart_lines(index),
        }
    }
    fn mtime(&self) -> u64 {
        match self {
            Self::Whole(devices) => devices.mtime(),
            Self::Hart { view, .. } => view.mtime(),
        }
    }
    fn ticks_until_deadline(&self) -> Option<u64> {
        match self {
            Self::Whole(devices) => devices.ticks_until_deadline(),
            Self::Hart { view, .. } => view.ticks_until_deadline(),
        }
    }
    fn input_pending(&self) -> bool {
        match self {
            Self::Whole(devices) => devices.input_pending(),
            Self::Hart { view, .. } => view.input_pending(),
        }
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        match self {
            Self::Whole(devices) => devices.console_write(bytes),
            Self::Hart { view, .. } => view.console_write(bytes),
        }
    }
    fn console_read(&mut self) -> Option<u8> {
        match self {
            Self::Whole(devices) => devices.console_read(),
            Self::Hart { view, .. } => view.console_read(),
        }
    }
}

type BoardVm<'r> = Vm<'r, BoardDevices<'r>>;

/// What a guest is expected to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Power off with status 0.
    PowerOff,
    /// Never end (a hostile guest spinning with interrupts masked): it must be preempted while the others run,
    /// and is stopped when they are done.
    RunForever,
    /// Play its console script to the end (an interactive guest, U-Boot); it is stopped then.
    Script,
}

/// A VM's wiring: its number (its partition's, shadow pool's and console port's) and name, what it boots and
/// the machine its devicetree describes, its console script and what it is expected to do.
struct Wiring<'i> {
    index: usize,
    name: &'static str,
    harts: usize,
    images: Images<'i>,
    description: MachineDescription<'i>,
    script: &'static [(&'static str, &'static str)],
    expect: Expect,
}

/// One guest as wired, before it runs: its machine, its engine and what the board expects of it.
struct Guest<'r> {
    vm: BoardVm<'r>,
    engine: NativeEngine<'r>,
    watch: Watch,
    /// `Some` for one hart of a VM whose harts run on several real harts at once (a run-queue entry each).
    hart: Option<HartOf<'r>>,
}

/// What the board knows of a VM beyond its machine: its wiring's name and number, what it is expected to do, and
/// the board's tests around it.
struct Watch {
    /// The VM's number: its partition, shadow pool and console port.
    index: usize,
    name: &'static str,
    expect: Expect,
    /// How the VMM virtualizes its counters and trap sites; set up when it is handed to the hypervisor.
    mode: Mode,
    /// Pause the VM once, for [`PAUSE_TICKS`], after this many counter reads served by the dispatcher (the
    /// `counters` VM, in the middle of its `time` reads: its virtual time must not jump over the pause).
    pause_after_counter_reads: Option<u64>,
    /// Machine time and world switches when the VM's console first reached its script's second step (a Linux
    /// VM's first shell prompt).
    shell_at: Option<(u64, u64)>,
    /// The VM's port of the board's bridge, when it has a NIC.
    nic: Option<PortId>,
}

/// How long the board pauses a `counters` VM once: 200 ms, twice the step its `time` reads tolerate.
const PAUSE_TICKS: u64 = 2_000_000;

/// Builds VM `index` running `images` in virtual M-mode, in small partition `partition`.
fn make_guest(
    index: usize,
    partition: usize,
    name: &'static str,
    console: &'static BoardConsole,
    images: Images,
    expect: Expect,
) -> Guest<'static> {
    make_described_guest(
        index,
        partition,
        name,
        console,
        images,
        expect,
        MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64),
    )
}

/// [`make_guest`], with the devicetree of `description`.
fn make_described_guest(
    index: usize,
    partition: usize,
    name: &'static str,
    console: &'static BoardConsole,
    images: Images,
    expect: Expect,
    description: MachineDescription,
) -> Guest<'static> {
    let bytes = &mut take(&PARTITIONS, partition, "RAM partition").0[..];
    let wiring = Wiring { index, name, harts: 1, images, description, script: &[], expect };
    build_guest(wiring, bytes, console)
}

/// Builds the VM `wiring` describes over `bytes` (its RAM) with its shadow pool, console port and clock: its
/// images and devicetree placed as on QEMU `virt` (`a0` = hart id, `a1` = the devicetree at the end of RAM).
fn build_guest<'r>(wiring: Wiring, bytes: &'r mut [u8], console: &'static BoardConsole) -> Guest<'r> {
    let Wiring { index, name, harts, images, mut description, script, expect } = wiring;
    let shadow = take(&SHADOWS, index, "shadow pool");
    let start = bytes.as_ptr() as u64;
    let partition = (start, start + bytes.len() as u64);
    let pages = bytes.len().div_ceil(4096);
    let mut ram = Ram::new(RAM_BASE, bytes);
    // Every write to a page the engine patched or caches code from is noticed (one bit per page).
    ram.attach_code_watch(Box::leak(vec![0u64; pages.div_ceil(64)].into_boxed_slice()));
    let mut blob = vec![0u8; 16 << 10];
    let boot = place_images(&mut ram, images, &mut description, &mut blob)
        .unwrap_or_else(|e| panic!("{name}: cannot place its images: {e:?}"));
    if let Ok(mut mux) = console.try_borrow_mut() {
        mux.attach(index);
    }
    let port = BoardMux::port(console, index);
    let devices = BoardDevices::Whole(ReportingDevices {
        vm: index,
        inner: VirtDevices::new(VmConsole::new(port, script)),
        passthrough: None,
        passthrough_served: 0,
    });
    let clock: &'static mut BoardClock = Box::leak(Box::new(BoardClock));
    let vm = VmBuilder::new(ram, devices, clock)
        .harts(harts)
        .boot(&boot)
        .build()
        .unwrap_or_else(|e| panic!("{name}: cannot build the VM: {e:?}"));
    defmt::info!("vm {=usize}: partition {=u64:#x}..{=u64:#x}", index, partition.0, partition.1);
    Guest {
        vm,
        engine: NativeEngine::new(index + 1, shadow, partition),
        watch: Watch {
            index,
            name,
            expect,
            mode: DEFAULT_MODE,
            pause_after_counter_reads: None,
            shell_at: None,
            nic: None,
        },
        hart: None,
    }
}

impl Guest<'_> {
    /// Sets up the engine for the guest's mode, before it first runs: its patch table, copies and code cache,
    /// each taken once for its VM index.
    fn set_up_mode(&mut self) {
        if self.hart.is_some() {
            // One hart of a VM whose harts run on several real harts at once: `run_parallel` gave it its own.
            return;
        }
        let (index, mode) = (self.watch.index, self.watch.mode);
        if matches!(mode, Mode::Patching | Mode::PatchingCached) {
            self.engine.delegate_counters(take(&PATCHES, index, "patch table"), take(&COPIES, index, "copies"));
        }
        if matches!(mode, Mode::PatchingCached | Mode::TrappingCached) {
            self.engine.cache_trap_sites(take(&SITE_CACHES, index, "code cache"));
        }
    }
}

/// A `counters` VM (issue 10): its counters are delegated whatever the default mode, so its code is scanned and
/// its counter reads patched before they run; with `cached`, its hot trap sites also run from the code cache.
/// The board pauses it once in the middle of its `time` reads (tens of thousands, each served by the
/// dispatcher), which its virtual time must not show.
fn counters_guest(index: usize, partition: usize, console: &'static BoardConsole, cached: bool) -> Guest<'static> {
    let mut guest = make_guest(index, partition, "counters", console, Images::Elf(COUNTERS), Expect::PowerOff);
    guest.watch.mode = if cached { Mode::PatchingCached } else { Mode::Patching };
    guest.watch.pause_after_counter_reads = Some(5_000);
    guest
}

/// An `rtc` VM (issue 11, dedicated devices). With `owner`, QEMU `virt`'s goldfish RTC (a device without DMA) is
/// given whole to it: in its devicetree, mapped straight into its shadow tables (its accesses never leave the
/// guest) and let through by its PMP alone. Without, it finds no RTC in its devicetree and checks that touching
/// the owner's gets the access fault.
fn rtc_guest(index: usize, partition: usize, console: &'static BoardConsole, owner: bool) -> Guest<'static> {
    let mut description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
    if owner {
        description.rtc = Some(QEMU_VIRT_RTC);
    }
    let mut guest =
        make_described_guest(index, partition, "rtc", console, Images::Elf(RTC), Expect::PowerOff, description);
    if owner {
        // The board runs bare in M-mode: the device's host physical address is its guest real one on `virt`.
        let page = QEMU_VIRT_RTC.base;
        guest.engine.pass_through(page, page).unwrap_or_else(|e| panic!("rtc: cannot pass the RTC through: {e:?}"));
        guest.vm.devices.whole().passthrough = Some((page, page));
        // Counters trapping and no code caching: no excursion emulates its RTC reads, so every one is native (the
        // board reports how many the VMM served: none).
        guest.watch.mode = Mode::Trapping;
    }
    guest
}

/// A `disk-pattern` VM (issue 11, partitioned disks): the guest fills its whole virtio-blk disk, `disk` (its
/// partition of the physical disk, in virtio-mmio slot 0 and its devicetree), with a pattern seeded by its kernel
/// command line `seed`, reads it back and checks that requests past its end get the virtio error status.
fn pattern_guest(
    index: usize,
    partition: usize,
    disk: disk::Partition,
    seed: &'static str,
    console: &'static BoardConsole,
) -> Guest<'static> {
    let mut description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
    description.virtio_mmio = &QEMU_VIRT_VIRTIO[..1];
    description.bootargs = Some(seed);
    let images = Images::Elf(DISK_PATTERN);
    let mut guest =
        make_described_guest(index, partition, "disk-pattern", console, images, Expect::PowerOff, description);
    guest.vm.devices.whole().inner.attach_disk(disk);
    guest
}

/// A `net-ping` VM on the board's bridge (issue 12): its virtio-net NIC, with address `mac`, in virtio-mmio slot 1
/// (the first after the disk's, which stays empty) and in its devicetree, on a port of the bridge; its kernel
/// command line names its peer's address. It greets the peer by broadcast, then exchanges unicast frames with it.
fn net_ping_guest(
    (index, partition, mac, bootargs): (usize, usize, [u8; 6], &'static str),
    net: &nic::BoardNet,
    console: &'static BoardConsole,
) -> Guest<'static> {
    let mut description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
    description.virtio_mmio = &QEMU_VIRT_VIRTIO[NET_SLOT..NET_SLOT + 1];
    description.bootargs = Some(bootargs);
    let images = Images::Elf(NET_PING);
    let mut guest = make_described_guest(index, partition, "net-ping", console, images, Expect::PowerOff, description);
    let port = net.attach_vm().unwrap_or_else(|| panic!("net-ping: no free port on the board's bridge"));
    guest.watch.nic = Some(port.port());
    attach_nic(&mut guest, port, mac);
    guest
}

/// A `print-jobs` VM (issue 12, the spooled printer) in `ram`: a small OS of three processes, each keeping a
/// level-1 spool and submitting whole jobs to the printer device (in its devicetree), which copies them into
/// spool `spool` of the board's spool set; a process whose VM's spool is full retries until a job has printed.
fn print_guest(
    index: usize,
    spool: usize,
    ram: &'static mut [u8],
    printing: &printer::Printing,
    console: &'static BoardConsole,
) -> Guest<'static> {
    ram.fill(0);
    let mut description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
    description.printer = Some(QEMU_VIRT_PRINTER);
    let images = Images::Elf(PRINT_JOBS);
    let (name, harts, script, expect) = ("print-jobs", 1, &[][..], Expect::PowerOff);
    let mut guest = build_guest(Wiring { index, name, harts, images, description, script, expect }, ram, console);
    printing.set_name(spool, &alloc::format!("vm{index}"));
    guest.vm.devices.whole().inner.printer = Some(Printer::new(printing.spools(), spool));
    guest
}

/// The virtio-mmio slot of a VM's NIC: the first after the disk's, where `VirtDevices::attach_net` puts it.
const NET_SLOT: usize = 1;

/// Attaches a NIC with address `mac` on `port` of the board's bridge to `guest`, in [`NET_SLOT`] (which its
/// devicetree lists).
fn attach_nic(guest: &mut Guest<'_>, port: nic::VmNic, mac: [u8; 6]) {
    let name = guest.watch.name;
    let slot = guest
        .vm
        .devices
        .whole()
        .inner
        .attach_net(port, mac)
        .unwrap_or_else(|e| panic!("{name}: no slot for a NIC: {e:?}"));
    assert_eq!(slot, NET_SLOT, "{name}: its NIC is not where its devicetree says");
}

/// The U-Boot VM: Debian's U-Boot for QEMU `virt` in S-mode at 0x8020_0000, on the VMM's own SBI, with a
/// devicetree for its machine, as `trapeze run --bios builtin --kernel u-boot.bin` boots it. With `disk`, the
/// VM has it in its first virtio-mmio slot (and in its devicetree), as `trapeze run --disk` gives it. With `nic`
/// (a port of the board's bridge, which has an uplink to QEMU's user-mode network), the VM has a virtio-net NIC in
/// slot 1 (and its devicetree), and the board's script asks U-Boot for a DHCP lease through it.
fn uboot_guest(
    index: usize,
    disk: Option<disk::Partition>,
    nic: Option<nic::VmNic>,
    console: &'static BoardConsole,
) -> Guest<'static> {
    let bytes = &mut take(&UBOOT_PARTITION, 0, "U-Boot partition").0[..];
    let mut script: Vec<(&'static str, &'static str)> = Vec::new();
    script.extend_from_slice(if disk.is_some() { UBOOT_DISK_SCRIPT } else { UBOOT_SCRIPT });
    if nic.is_some() {
        script.extend_from_slice(UBOOT_NET_SCRIPT);
    }
    let script: &'static [(&'static str, &'static str)] = Box::leak(script.into_boxed_slice());
    let mut description = MachineDescription::qemu_virt(1, UBOOT_RAM_SIZE as u64);
    // The disk goes in virtio-mmio slot 0 (`attach_disk`), as the slot table places it, and the NIC in slot 1.
    description.virtio_mmio = match (disk.is_some(), nic.is_some()) {
        (true, true) => &QEMU_VIRT_VIRTIO[..NET_SLOT + 1],
        (true, false) => &QEMU_VIRT_VIRTIO[..1],
        (false, true) => &QEMU_VIRT_VIRTIO[NET_SLOT..NET_SLOT + 1],
        (false, false) => &[],
    };
    let images = Images::BuiltinSbi { kernel: UBOOT, initrd: None };
    let wiring = Wiring { index, name: "u-boot", harts: 1, images, description, script, expect: Expect::Script };
    let mut guest = build_guest(wiring, bytes, console);
    if let Some(disk) = disk {
        guest.vm.devices.whole().inner.attach_disk(disk);
    }
    if let Some(port) = nic {
        guest.watch.nic = Some(port.port());
        attach_nic(&mut guest, port, UBOOT_MAC);
    }
    guest
}

/// The bytes between two symbols of `guests.S`.
///
/// # Safety
/// `start` and `end` must bound one assembled guest in `guests.S` (in .rodata, which nothing writes).
unsafe fn raw_image(start: *const u8, end: *const u8) -> &'static [u8] {
    // SAFETY: the caller guarantees the range is one immutable object.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// The hostile guest's code (`guests.S`).
fn hostile_image() -> &'static [u8] {
    // SAFETY: the two symbols bound the hostile guest in `guests.S`.
    unsafe { raw_image(core::ptr::addr_of!(hostile_guest_start), core::ptr::addr_of!(hostile_guest_end)) }
}

/// The CSR-loop benchmark guest's code (`guests.S`).
fn csr_loop_image() -> &'static [u8] {
    // SAFETY: the two symbols bound the csr-loop guest in `guests.S`.
    unsafe { raw_image(core::ptr::addr_of!(csr_loop_guest_start), core::ptr::addr_of!(csr_loop_guest_end)) }
}

/// The time-loop benchmark guest's code (`guests.S`).
fn time_loop_image() -> &'static [u8] {
    // SAFETY: the two symbols bound the time-loop guest in `guests.S`.
    unsafe { raw_image(core::ptr::addr_of!(time_loop_guest_start), core::ptr::addr_of!(time_loop_guest_end)) }
}

/// One VM of a board: its machine and engine, under a one-VM core hypervisor (its timed turns, its clock kept to
/// its own time, its idle and paused states), and what the board watches for in it. It travels whole between the
/// run queue and the real hart running it (a `Box`: a pointer moves, nothing is allocated).
struct Slot<'r> {
    hypervisor: Hypervisor<'r, BoardDevices<'r>, NativeEngine<'r>, 1>,
    watch: Watch,
}

impl<'r> Slot<'r> {
    fn vm(&self) -> &BoardVm<'r> {
        self.hypervisor.vm(0).expect("a VM of the board")
    }

    fn vm_mut(&mut self) -> &mut BoardVm<'r> {
        self.hypervisor.vm_mut(0).expect("a VM of the board")
    }

    fn engine(&self) -> &NativeEngine<'r> {
        self.hypervisor.engine(0).expect("a VM of the board")
    }

    fn outcome(&self) -> Option<RunOutcome> {
        self.hypervisor.outcome(0)
    }

    /// `look` at the VM's console.
    fn console<T>(&self, look: impl FnOnce(&VmConsole) -> T) -> T {
        self.vm().devices.look(|devices| look(devices.inner.uart.backend()))
    }

    /// `change` the VM's console.
    fn console_mut<T>(&mut self, change: impl FnOnce(&mut VmConsole) -> T) -> T {
        self.vm_mut().devices.change(|devices| change(devices.inner.uart.backend_mut()))
    }

    /// Whether the VM has done what the board waits for: ended (power off, reset...), or played its script; a VM
    /// expected to run forever never holds the board up.
    fn finished(&self) -> bool {
        match self.watch.expect {
            Expect::PowerOff => self.outcome().is_some(),
            Expect::Script => self.outcome().is_some() || self.console(VmConsole::script_done),
            Expect::RunForever => true,
        }
    }
}

/// A VM's place in the run queue.
struct Entry<'r> {
    /// The VM, `None` while a real hart runs it.
    slot: Option<Box<Slot<'r>>>,
    /// Its number (`Watch::index`: its console port's).
    index: usize,
    /// The host woke it while a real hart ran it: it is woken when it comes back.
    woken: bool,
    /// It has done what the board waits for ([`Slot::finished`]).
    finished: bool,
    /// `Some` when it is one hart of a VM whose harts run on several real harts at once.
    hart: Option<HartOf<'r>>,
}

/// The run queue: every VM of the board, round-robin. A real hart takes a VM that may run now out of it
/// ([`Queue::take`]), runs its turn holding no queue lock, and puts it back ([`Queue::put_back`]).
struct Queue<'r> {
    entries: Vec<Entry<'r>>,
    /// Where the next search for a VM to run starts.
    next: usize,
    /// VMs not [finished](Entry::finished) yet.
    unfinished: usize,
}

/// What a real hart found in the run queue.
enum Pick<'r> {
    /// Entry `entry`'s VM, taken out to run its turn.
    Run(usize, Box<Slot<'r>>),
    /// No VM may run before machine time `until` (`None`: none is idle, and `running`, some run on other harts).
    Wait { until: Option<u64>, running: bool },
    /// Every VM has ended.
    Stopped,
}

impl<'r> Queue<'r> {
    /// The next VM (round-robin) that may run at machine time `now`, taken out of the queue.
    fn take(&mut self, now: u64) -> Pick<'r> {
        let count = self.entries.len();
        let (mut earliest, mut out) = (None::<u64>, false);
        for step in 0..count {
            let at = (self.next + step) % count;
            let Some(entry) = self.entries.get_mut(at) else { continue };
            if entry.hart.is_some_and(|hart| hart.waker.halted.load(Ordering::Acquire)) {
                // Another hart of its VM ended the machine: this one is over too (one running ends its turn).
                if entry.slot.is_none() {
                    out = true;
                }
                continue;
            }
            let Some(slot) = entry.slot.as_mut() else {
                out = true;
                continue;
            };
            if let Some(hart) = entry.hart {
                // Woken by its VM's other harts (an IPI, a start, a fence it must serve, a line raised).
                if hart.waker.pending[hart.index].swap(false, Ordering::SeqCst) {
                    slot.hypervisor.wake(0);
                }
            }
            match slot.hypervisor.state(0) {
                Some(VmState::Stopped(_)) | None => continue,
                Some(VmState::Idle { until } | VmState::Paused { until }) if until > now => {
                    earliest = Some(earliest.map_or(until, |e: u64| e.min(until)));
                    continue;
                }
                Some(_) => {}
            }
            let Some(slot) = entry.slot.take() else { continue };
            if let Some(hart) = entry.hart {
                // From now until it is put back, a wake of this hart kicks the real hart running it.
                hart.waker.running_on[hart.index].store(smp::hart_id(), Ordering::SeqCst);
            }
            self.next = (at + 1) % count;
            return Pick::Run(at, slot);
        }
        if earliest.is_none() && !out {
            return Pick::Stopped;
        }
        Pick::Wait { until: earliest, running: out }
    }

    /// Puts entry `at`'s VM back after its turn.
    fn put_back(&mut self, at: usize, mut slot: Box<Slot<'r>>) {
        let Some(entry) = self.entries.get_mut(at) else { return };
        if core::mem::take(&mut entry.woken) {
            slot.hypervisor.wake(0);
        }
        if !entry.finished && slot.finished() {
            entry.finished = true;
            self.unfinished -= 1;
        }
        let hart = entry.hart;
        if let Some(hart) = hart {
            hart.waker.running_on[hart.index].store(NOT_RUNNING, Ordering::SeqCst);
        }
        let ended = slot.outcome().is_some();
        entry.slot = Some(slot);
        if let (Some(hart), true) = (hart, ended) {
            // One hart ended the machine (power off, reset): so do its others, and no SBI wait goes on.
            hart.waker.halted.store(true, Ordering::Release);
            if let Some(sbi) = hart.sbi {
                sbi.halt();
            }
            for entry in self.entries.iter_mut() {
                let same = entry.hart.is_some_and(|other| core::ptr::eq(other.waker, hart.waker));
                if same && !entry.finished {
                    entry.finished = true;
                    self.unfinished -= 1;
                }
            }
        }
    }

    /// The run is over: every VM whose harts run on several real harts is halted, so that none of its harts
    /// waits in the SBI for another that no real hart will run again (`SbiShared::halt` ends every wait).
    fn halt_parallel_vms(&self) {
        for hart in self.entries.iter().filter_map(|entry| entry.hart) {
            hart.waker.halted.store(true, Ordering::Release);
            if let Some(sbi) = hart.sbi {
                sbi.halt();
            }
        }
    }

    /// Makes entry `at`'s VM runnable now if it is idle (at once, or when it comes back from its hart).
    fn wake(&mut self, at: usize) {
        let Some(entry) = self.entries.get_mut(at) else { return };
        match entry.slot.as_mut() {
            Some(slot) => slot.hypervisor.wake(0),
            None => entry.woken = true,
        }
    }
}

/// What one real hart did in a board's run.
#[derive(Default)]
struct HartStats {
    /// Turns of VMs it ran.
    slices: AtomicU64,
    /// Which VMs it ran (bit `index`, `Watch::index` < 64).
    vms: AtomicU64,
}

/// VMs run together on every real hart, and what the board watches for in each (by their order in the run queue,
/// the order they were added in).
///
/// Scheduling: a shared run queue ([`Queue`], under a spin lock) from which each real hart takes the next VM that
/// may run, runs one timed turn of it ([`TURN_TICKS`], the core's `Hypervisor::run_timed_slice` on that VM's
/// one-VM hypervisor), and puts it back: every VM progresses whichever harts are free, and a VM runs on one real
/// hart at a time (all its virtual harts there, one after the other). A hart that finds no VM to run sleeps on
/// its timer (the VMM lock let go) until the earliest idle VM's deadline, at most [`IDLE_NAP_TICKS`].
struct Board<'r> {
    queue: spin::Mutex<Queue<'r>>,
    /// Each VM with a NIC: its entry in the queue and its port of the bridge.
    nics: Vec<(usize, PortId)>,
    /// The physical console the VMs share.
    console: &'static BoardConsole,
    /// The bridge the VMs' NICs are on, pumped between turns (the demo's; none for a VM run alone).
    net: spin::Mutex<Option<nic::BoardNet>>,
    /// The printing VMs' spools and the printer, pumped between turns (the demo's; none for a VM run alone).
    printing: spin::Mutex<Option<printer::Printing>>,
    /// What each real hart did.
    harts: [HartStats; MAX_HARTS],
    /// Machine time the run started at, and whether it is over (every VM finished, or the board gave up).
    started: u64,
    /// How long the last run took, machine timer ticks.
    ran_ticks: u64,
    over: AtomicBool,
    gave_up: AtomicBool,
    /// The real harts that take part in the run (a bit each; the others leave it at once): all of them but for
    /// the scaling figures' run on one.
    real_harts: usize,
}

/// The real harts napping in [`Board::nap`] (a bit each), which a [`VmWaker`] kicks awake.
static NAPPING: AtomicUsize = AtomicUsize::new(0);

/// While the bridge has an uplink, the board looks at the physical NIC at least this often (1 ms) even when every
/// VM waits: a frame from the network cannot wake a hart (the board takes no external interrupt).
const NET_POLL_TICKS: u64 = 10_000;
/// Longest a real hart without a VM to run sleeps before looking at the run queue again (1 ms, a turn): a VM
/// that another hart woke or put back runnable waits no longer for a free hart.
const IDLE_NAP_TICKS: u64 = TURN_TICKS;

impl<'r> Board<'r> {
    fn new(console: &'static BoardConsole) -> Self {
        Self {
            queue: spin::Mutex::new(Queue { entries: Vec::new(), next: 0, unfinished: 0 }),
            nics: Vec::new(),
            console,
            net: spin::Mutex::new(None),
            printing: spin::Mutex::new(None),
            harts: Default::default(),
            started: 0,
            ran_ticks: 0,
            over: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
            real_harts: usize::MAX,
        }
    }

    /// Prints the jobs waiting in the printing VMs' spools, whole, on the console (after a line of the board's,
    /// through the multiplexer, which closes any open VM line).
    fn pump_printer(&self) {
        let mut printing = self.printing.lock();
        let Some(printing) = printing.as_mut() else { return };
        let console = self.console;
        printing.pump(|jobs| {
            // A fixed buffer: no heap on this path (it always fits).
            let mut line: heapless::String<48> = heapless::String::new();
            let _ = core::fmt::Write::write_fmt(&mut line, format_args!("board: printer: {jobs} jobs waiting"));
            if let Ok(mut mux) = console.try_borrow_mut() {
                mux.notice(&line);
            }
        });
    }

    /// Switches the frames on the board's bridge (and to and from its uplink), and wakes each VM whose NIC got
    /// frames: its NIC takes them when its devices are updated, and raises its interrupt.
    fn pump_net(&self) {
        let mut arrived: heapless::Vec<usize, MAX_VMS> = heapless::Vec::new();
        {
            let mut net = self.net.lock();
            let Some(net) = net.as_mut() else { return };
            net.pump(hw::mtime());
            for &(at, port) in &self.nics {
                if net.arrived(port) {
                    let _ = arrived.push(at);
                }
            }
        }
        if !arrived.is_empty() {
            let mut queue = self.queue.lock();
            arrived.iter().for_each(|&at| queue.wake(at));
        }
    }

    /// Hands `guest` to the run queue, its engine set up for its mode.
    fn add(&mut self, mut guest: Guest<'r>) {
        guest.set_up_mode();
        let name = guest.watch.name;
        let mut hypervisor = Hypervisor::new(1);
        hypervisor.add(guest.vm, guest.engine, None).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let queue = self.queue.get_mut();
        let at = queue.entries.len();
        if let Some(port) = guest.watch.nic {
            self.nics.push((at, port));
        }
        let index = guest.watch.index;
        let slot = Box::new(Slot { hypervisor, watch: guest.watch });
        let finished = slot.finished();
        queue.unfinished += usize::from(!finished);
        queue.entries.push(Entry { slot: Some(slot), index, woken: false, finished, hart: guest.hart });
    }

    /// The VM at `at` in the queue, between runs (every VM is back then).
    fn slot(&mut self, at: usize) -> &mut Slot<'r> {
        self.queue.get_mut().entries.get_mut(at).and_then(|entry| entry.slot.as_deref_mut()).expect("a VM, back")
    }

    /// How many VMs the board has.
    fn len(&mut self) -> usize {
        self.queue.get_mut().entries.len()
    }

    /// Runs the VMs on every real hart, turns of [`TURN_TICKS`] of the machine timer, until every one expected
    /// to end has (or the board gives up after [`GIVE_UP_TICKS`]). The caller holds the VMM lock (the run lets it
    /// go, and has it again when it returns).
    fn run(&mut self) {
        self.started = hw::mtime();
        self.over.store(false, Ordering::Release);
        let board: &Self = self;
        let body = |hart: usize| board.run_on_hart(hart);
        // SAFETY: `run_on_hart` touches the board's state either through its spin locks and atomics, or (the VMs'
        // devices, the console multiplexer, the disk, bridge and spools, which use `RefCell`s) with the VMM lock
        // held (taken around each turn and the pumps, let go of by the engine only around its guest's native
        // run); a VM out of the queue is reached only by the hart that took it, and the queue's own work on a VM
        // (its state, its script's progress) touches nothing of it that another VM shares.
        unsafe { smp::on_every_hart(&body) };
        self.ran_ticks = hw::mtime().saturating_sub(self.started);
        if self.gave_up.load(Ordering::Acquire) {
            self.report_stuck();
        }
    }

    /// One real hart's part of the run: take a VM, run its turn, put it back, until the run is over. The hart
    /// takes the VMM lock for the turn (and the pumps before it), not to look at the run queue: a hart without a
    /// VM to run never holds up the others' VMM work.
    fn run_on_hart(&self, hart: usize) {
        if self.real_harts & (1 << hart) == 0 {
            return;
        }
        while !self.over.load(Ordering::Acquire) {
            let now = hw::mtime();
            if now.saturating_sub(self.started) > GIVE_UP_TICKS {
                if !self.gave_up.swap(true, Ordering::AcqRel) {
                    smp::vmm_lock();
                    println!("board: giving up after {} s", GIVE_UP_TICKS / 10_000_000);
                    // SAFETY: taken just above, on this hart.
                    unsafe { smp::vmm_unlock() };
                }
                self.queue.lock().halt_parallel_vms();
                self.over.store(true, Ordering::Release);
                break;
            }
            let pick = self.queue.lock().take(now);
            match pick {
                Pick::Run(at, mut slot) => {
                    smp::vmm_lock_for_turn();
                    self.pump_net();
                    self.pump_printer();
                    if let SliceOutcome::Ran { stopped, .. } =
                        slot.hypervisor.run_timed_slice(&mut MachineTime, TURN_TICKS)
                    {
                        after_turn(&mut slot, stopped);
                    }
                    // SAFETY: taken before the pumps, on this hart (the engine gave it back after each native run).
                    unsafe { smp::vmm_unlock() };
                    let stats = &self.harts[hart % MAX_HARTS];
                    stats.slices.fetch_add(1, Ordering::Relaxed);
                    stats.vms.fetch_or(1u64.checked_shl(slot.watch.index as u32).unwrap_or(0), Ordering::Relaxed);
                    let mut queue = self.queue.lock();
                    queue.put_back(at, slot);
                    if queue.unfinished == 0 {
                        queue.halt_parallel_vms();
                        self.over.store(true, Ordering::Release);
                    }
                }
                Pick::Wait { until, running } => {
                    // Only the boot hart looks for input and frames from the network, and only while no VM runs
                    // (the hart taking a VM pumps before its turn): one hart is enough, and the VMM lock is left
                    // alone while others need it.
                    let woke = hart == smp::BOOT_HART && !running && {
                        smp::vmm_lock();
                        self.pump_net();
                        self.pump_printer();
                        let woke = self.input_woke();
                        // SAFETY: taken just above, on this hart.
                        unsafe { smp::vmm_unlock() };
                        woke
                    };
                    if !woke {
                        self.nap(hart, until.unwrap_or(u64::MAX));
                    }
                }
                Pick::Stopped => self.over.store(true, Ordering::Release),
            }
        }
    }

    /// Sleeps on this hart's timer until `until`, at most [`IDLE_NAP_TICKS`] (and, on the boot hart, which polls
    /// the physical NIC, [`NET_POLL_TICKS`] while the bridge has an uplink).
    fn nap(&self, hart: usize, until: u64) {
        let now = hw::mtime();
        let mut until = until.min(now.saturating_add(IDLE_NAP_TICKS));
        if hart == smp::BOOT_HART && self.net.lock().as_ref().is_some_and(|net| net.uplink().is_some()) {
            until = until.min(now.saturating_add(NET_POLL_TICKS));
        }
        // A hart of a VM whose harts run on several real harts, woken while no real hart runs it, kicks a napping
        // hart awake (`VmWaker`): it then looks at the queue at once.
        let bit = 1 << (hart % MAX_HARTS);
        NAPPING.fetch_or(bit, Ordering::SeqCst);
        hw::wait_for_timer(until);
        NAPPING.fetch_and(!bit, Ordering::SeqCst);
    }

    /// Where every hart of every VM still running stands, when the board gives up on them: what a hang needs
    /// to be understood (a hart spinning, waiting, or never given its interrupt).
    fn report_stuck(&mut self) {
        for entry in &self.queue.get_mut().entries {
            let Some(slot) = entry.slot.as_deref() else { continue };
            let (vm, watch) = (slot.vm(), &slot.watch);
            if slot.outcome().is_some() {
                continue;
            }
            println!(
                "board: vm{} ({}) stuck: {:?}, time {}, {} steps, {} exits, {} yields, last exit {:?}",
                watch.index,
                watch.name,
                slot.hypervisor.state(0),
                vm.time(),
                vm.steps,
                vm.exits,
                vm.yields,
                vm.last_exit
            );
            for (index, hart) in vm.harts.iter().enumerate() {
                println!(
                    "board:   hart {index}: {:?} pc {:#x} ra {:#x} sp {:#x}, mip {:#x} mie {:#x} mstatus {:#x}, sepc \
                     {:#x} scause {:#x}, sbi {:?} timer {:?}",
                    hart.privilege,
                    hart.pc,
                    hart.x(1),
                    hart.x(2),
                    hart.mip(),
                    hart.csrs.mie,
                    hart.csrs.mstatus,
                    hart.csrs.sepc,
                    hart.csrs.scause,
                    vm.sbi().and_then(|sbi| sbi.state(index)),
                    vm.sbi().and_then(|sbi| sbi.deadline(index)),
                );
            }
        }
    }

    /// Nothing to run: input typed at the physical console goes to its port now, and the focused VM, if it has
    /// just got some, gets its turn at once rather than at its next deadline. Whether it did.
    fn input_woke(&self) -> bool {
        let Ok(mut mux) = self.console.try_borrow_mut() else { return false };
        let focus = mux.focus();
        let had_input = mux.has_input(focus);
        mux.poll_input();
        let typed = !had_input && mux.has_input(focus);
        drop(mux);
        if !typed {
            return false;
        }
        let mut queue = self.queue.lock();
        let Some(at) = queue.entries.iter().position(|entry| entry.index == focus) else { return false };
        queue.wake(at);
        true
    }

    /// One line per real hart: how many turns of which VMs it ran in this board's run; and how often VMs moved
    /// between real harts.
    fn report_harts(&mut self, what: &str) {
        let (mut migrations, mut waits) = (0, 0);
        for slot in self.queue.get_mut().entries.iter().filter_map(|entry| entry.slot.as_deref()) {
            migrations += slot.engine().stats.migrations;
            waits += slot.engine().stats.lock_waits;
        }
        for (hart, stats) in self.harts.iter().enumerate().filter(|&(hart, _)| smp::online() & (1 << hart) != 0) {
            let vms = stats.vms.load(Ordering::Relaxed);
            let mut line = alloc::format!(
                "board: real hart {hart} ran {} VM slices of {} VMs ({what}):",
                stats.slices.load(Ordering::Relaxed),
                vms.count_ones()
            );
            for index in (0..64).filter(|index| vms & (1 << index) != 0) {
                line += &alloc::format!(" vm{index}");
            }
            println!("{line}");
        }
        println!(
            "board: {migrations} moves of a VM to another real hart, {waits} guest traps that waited over 100 us for \
             the VMM lock ({what})"
        );
        println!(
            "board: the run took {} ms on {} real harts ({what})",
            self.ran_ticks / 10_000,
            smp::online().count_ones()
        );
    }
}

/// `VmWaker::running_on` of a hart no real hart runs now.
const NOT_RUNNING: usize = usize::MAX;
/// Most harts of a VM whose harts run on several real harts at once (the core's limit).
const VM_MAX_HARTS: usize = trapeze::vm::MAX_HARTS;

/// The core's `HartWaker` for a VM whose harts run on several real harts at once, each hart a run-queue entry of
/// its own (a `Vm` of its own, `VmBuilder::only_hart`): what its devices (`SharedDevices`) and its SBI
/// (`SbiShared`: IPIs, HSM starts, remote fences) call when they have something for hart `index`.
/// - If a real hart runs it now (`running_on`, set while its entry is out of the run queue), that real hart is
///   kicked (`hw::kick`, its CLINT `msip`): a native run ends at once, and the VM looks at its requests and lines
///   before it runs the guest again (a fence's caller waits for that: `SbiShared::fence`). A kick that finds it
///   in the VMM ends its next native run at once: never lost.
/// - Either way `pending` is set, which the run queue looks at when it next considers the entry (an idle hart
///   then becomes runnable, `Queue::take`), and a napping real hart is kicked awake to take it at once.
///
/// It takes no lock (atomics only), so it may be called under any of them.
struct VmWaker {
    pending: [AtomicBool; VM_MAX_HARTS],
    running_on: [AtomicUsize; VM_MAX_HARTS],
    /// How many of the VM's harts run natively now (for the engines' `parallel_entries`).
    native: AtomicUsize,
    /// One of its harts ended the machine (power off, reset): the others are over too.
    halted: AtomicBool,
}

impl VmWaker {
    fn new() -> Self {
        Self {
            pending: [const { AtomicBool::new(false) }; VM_MAX_HARTS],
            running_on: [const { AtomicUsize::new(NOT_RUNNING) }; VM_MAX_HARTS],
            native: AtomicUsize::new(0),
            halted: AtomicBool::new(false),
        }
    }
}

impl HartWaker for VmWaker {
    fn wake(&self, index: usize) {
        let (Some(pending), Some(running_on)) = (self.pending.get(index), self.running_on.get(index)) else {
            return;
        };
        // Set before `running_on` is read, as `Queue::take` sets `running_on` before it runs the entry: either
        // the queue sees the wake, or this sees the real hart (sequentially consistent, both sides).
        pending.store(true, Ordering::SeqCst);
        match running_on.load(Ordering::SeqCst) {
            NOT_RUNNING => {
                let napping = NAPPING.load(Ordering::SeqCst);
                if napping != 0 {
                    hw::kick(napping.trailing_zeros() as usize);
                }
            }
            // This very real hart runs it: its VM looks at its requests before it runs the guest again.
            hart if hart == smp::hart_id() => {}
            hart => hw::kick(hart),
        }
    }
}

/// One hart of a VM whose harts run on several real harts at once: its VM's waker and SBI, and its index.
#[derive(Clone, Copy)]
struct HartOf<'r> {
    waker: &'r VmWaker,
    sbi: Option<&'r SbiShared<'r>>,
    index: usize,
}

/// What a hart waiting for its VM's other harts does between two looks: in the VMM's SBI (a remote fence's
/// acknowledgement, `SbiShared::fence`), or in a watch (`engine::Revocations`: a sibling running natively
/// dropping W on a page this hart's engine starts watching). It lets the VMM lock go for a moment, since the
/// harts it waits for may need it (see `smp`: why that is safe in the middle of an engine's run).
fn relax_vmm_lock() {
    // SAFETY: both waits happen only within a VM's turn (a guest's SBI call served by the dispatcher, or a watch
    // made by its engine's run), for which this hart holds the VMM lock (`Board::run_on_hart`); it takes it again
    // before going on. Nothing the lock protects is borrowed across the wait: the waiting `Vm` and its engine are
    // this real hart's alone, and the VM's shared state (SBI, devices, RAM's dirty log, revocation queues) has
    // its own spin locks, none held here.
    unsafe { smp::vmm_unlock() };
    for _ in 0..64 {
        core::hint::spin_loop();
    }
    smp::vmm_lock();
}

/// The four views of `bytes` (a VM's RAM partition) `SharedRam` takes, as atomics: how the VMM reaches a VM's
/// RAM while its harts run natively on other real harts (`None` when `bytes` is not 8-byte aligned and sized).
#[allow(clippy::type_complexity)]
fn atomic_views(bytes: &mut [u8]) -> Option<(&[AtomicU8], &[AtomicU16], &[AtomicU32], &[AtomicU64])> {
    let (start, len) = (bytes.as_mut_ptr(), bytes.len());
    if !(start as usize).is_multiple_of(8) || !len.is_multiple_of(8) {
        return None;
    }
    // SAFETY: `bytes` is borrowed exclusively for as long as the views live, so nothing else in the VMM reaches
    // these bytes meanwhile; each atomic type has the size and bit validity of its integer, and the alignment
    // (8, enough for every view) and length were checked above. The guest's own native accesses from U-mode on
    // other real harts are another agent's, as a device's DMA would be: the VMM's are all atomic.
    unsafe {
        Some((
            core::slice::from_raw_parts(start.cast::<AtomicU8>(), len),
            core::slice::from_raw_parts(start.cast::<AtomicU16>(), len / 2),
            core::slice::from_raw_parts(start.cast::<AtomicU32>(), len / 4),
            core::slice::from_raw_parts(start.cast::<AtomicU64>(), len / 8),
        ))
    }
}

/// The shadow pools and code caches of a VM whose harts run on several real harts at once, one per hart: taken
/// once (the indices of the demo's last two VMs, which do not run with Linux) and lent to one run after another,
/// each [`run_parallel`] flushing and resetting them first.
struct HartTables {
    pools: [&'static mut ShadowTables<POOL>; LINUX_HARTS],
    caches: [&'static mut SiteCache; LINUX_HARTS],
}

impl HartTables {
    fn take() -> Self {
        let [first, second] = [MAX_VMS - 2, MAX_VMS - 1];
        Self {
            pools: [take(&SHADOWS, first, "shadow pool"), take(&SHADOWS, second, "shadow pool")],
            caches: [take(&SITE_CACHES, first, "code cache"), take(&SITE_CACHES, second, "code cache")],
        }
    }
}

/// In the patching modes each hart of a VM run by [`run_parallel`] has its own patch table and copies: hart `h`
/// takes those of VM `index + PATCH_TABLE_STRIDE * h`. The Linux boots are VMs 0 to 3 (one per mode), so their
/// second harts take those of VMs 4 to 7, which do not run with Linux.
const PATCH_TABLE_STRIDE: usize = 4;

/// Runs the VM `wiring` describes over `bytes` (zeroed) with its harts on several real harts at once, as the
/// hosted runner runs a hart per thread (`trapeze::vm::parallel`): each hart a run-queue entry of its own, with a
/// `Vm` of its own (`only_hart`), its own native engine in `mode` with its own shadow tables and code cache (of
/// `lent`, flushed first) and patch table, its RAM a handle of one `SharedRam` over `bytes` whose code watch
/// revokes the other harts' write permission on every page an engine starts watching (`engine::Revocations`),
/// its devices one hart's view of `SharedDevices`, its SBI's HSM, IPIs and remote fences through one
/// `SbiShared`, and a [`VmWaker`] kicking the real hart that runs a hart another asks something of. The VM's clock is the machine's (`BoardClock`: the `Vm` of one hart of several
/// hides no time), one for all its harts. Only the real harts of `real_harts` take part: at least as many as the
/// VM has harts when it runs on the VMM's SBI, since a hart whose remote fence waits for another's acknowledgement
/// keeps its real hart meanwhile (a VM without the SBI, whose harts only meet in its memory and devices, runs on
/// any number). `report` sees the board after the run, and the machine timer ticks it took.
#[allow(clippy::too_many_arguments)]
fn run_parallel<T>(
    wiring: Wiring,
    mode: Mode,
    bytes: &mut [u8],
    lent: &mut HartTables,
    console: &'static BoardConsole,
    real_harts: usize,
    report: impl FnOnce(&mut Board<'_>, u64) -> T,
) -> T {
    let HartTables { pools, caches } = lent;
    let Wiring { index, name, harts, images, mut description, script, expect } = wiring;
    assert!(harts <= pools.len(), "{name}: {harts} harts, {} shadow pools", pools.len());
    let on_sbi = matches!(images, Images::BuiltinSbi { .. });
    let real = (real_harts & smp::online()).count_ones() as usize;
    assert!(!on_sbi || real >= harts, "{name}: {harts} harts on the VMM's SBI need as many real harts, not {real}");
    let start = bytes.as_ptr() as u64;
    let partition = (start, start + bytes.len() as u64);
    let pages = bytes.len().div_ceil(4096);
    let waker = VmWaker::new();
    // Before the views: they borrow `bytes` for the run.
    let revocations = Revocations::new(harts, start, relax_vmm_lock);
    let (b8, b16, b32, b64) = atomic_views(bytes).unwrap_or_else(|| panic!("{name}: RAM not 8-byte aligned"));
    // A page-granular code watch, one for all the harts (what the patchers scanned and the code caches keep code
    // from): a page newly watched loses W in every other hart's shadow tables before its bytes are read.
    let watch: Vec<AtomicU64> = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
    let ram = SharedRam::new(RAM_BASE, b8, b16, b32, b64, &watch)
        .unwrap_or_else(|| panic!("{name}: RAM views"))
        .with_remote_fence(&revocations);
    let mut blob = vec![0u8; 16 << 10];
    let boot = place_images(&mut Ram::shared(&ram), images, &mut description, &mut blob)
        .unwrap_or_else(|e| panic!("{name}: cannot place its images: {e:?}"));
    if let Ok(mut mux) = console.try_borrow_mut() {
        mux.attach(index);
    }
    let port = BoardMux::port(console, index);
    let devices = ReportingDevices {
        vm: index,
        inner: VirtDevices::new(VmConsole::new(port, script)),
        passthrough: None,
        passthrough_served: 0,
    };
    let devices = SharedDevices::new(devices, harts, &waker)
        .unwrap_or_else(|e| panic!("{name}: cannot share its devices between its harts: {e:?}"));
    let sbi = SbiShared::new(harts, 0, &waker, relax_vmm_lock);
    let mut board = Board::new(console);
    board.real_harts = real_harts;
    let cached = matches!(mode, Mode::PatchingCached | Mode::TrappingCached);
    assert!(!cached || harts <= caches.len(), "{name}: {harts} harts, {} code caches", caches.len());
    let mut caches = caches.iter_mut();
    for (hart, pool) in pools.iter_mut().enumerate().take(harts) {
        pool.flush_all();
        let clock: &'static mut BoardClock = Box::leak(Box::new(BoardClock));
        let view = BoardDevices::Hart { view: devices.hart(hart), shared: &devices };
        let vm = VmBuilder::new(Ram::shared(&ram), view, clock)
            .harts(harts)
            .boot(&boot)
            .only_hart(hart)
            .shared_sbi(&sbi)
            .build()
            .unwrap_or_else(|e| panic!("{name}: cannot build hart {hart}: {e:?}"));
        let mut engine = NativeEngine::new(index + 1 + hart * MAX_VMS, pool, partition);
        engine.one_of_several(&waker.native);
        engine.revoke_with(&revocations, hart);
        if matches!(mode, Mode::Patching | Mode::PatchingCached) {
            // A patch table and copies per hart (each engine scans what it runs): the first hart's are its VM's,
            // the others' those of VM `index + PATCH_TABLE_STRIDE * hart`, which must not run meanwhile.
            let tables = index + PATCH_TABLE_STRIDE * hart;
            engine.delegate_counters(take(&PATCHES, tables, "patch table"), take(&COPIES, tables, "copies"));
        }
        if cached {
            if let Some(cache) = caches.next() {
                cache.reset();
                engine.cache_trap_sites(cache);
            }
        }
        let watch = Watch { index, name, expect, mode, pause_after_counter_reads: None, shell_at: None, nic: None };
        board.add(Guest { vm, engine, watch, hart: Some(HartOf { waker: &waker, sbi: Some(&sbi), index: hart }) });
    }
    defmt::info!(
        "vm {=usize}: {=usize} harts on several real harts, partition {=u64:#x}..{=u64:#x}",
        index,
        harts,
        partition.0,
        partition.1
    );
    let started = hw::mtime();
    board.run();
    let ticks = hw::mtime().saturating_sub(started);
    report(&mut board, ticks)
}

/// The board's part after a VM's turn: its console detached when it ended, its pause, its shell.
fn after_turn(slot: &mut Slot<'_>, stopped: Option<RunOutcome>) {
    if stopped.is_some() {
        slot.console_mut(VmConsole::detach);
    }
    let played = slot.console(VmConsole::steps_played);
    let stats = slot.engine().stats;
    let watch = &mut slot.watch;
    if watch.shell_at.is_none() && played >= 2 {
        watch.shell_at = Some((hw::mtime(), stats.entries));
    }
    let reads = stats.counter_reads;
    let pause = watch.pause_after_counter_reads.filter(|&after| reads >= after && stopped.is_none());
    if let Some(after) = pause {
        watch.pause_after_counter_reads = None;
        let index = watch.index;
        slot.hypervisor.pause(0, hw::mtime().saturating_add(PAUSE_TICKS));
        println!("board: vm{index} paused for {} ms after {after} counter reads", PAUSE_TICKS / 10_000);
    }
}

/// Runs `guest` alone (on whichever real hart is free for each turn) and returns it, with the machine timer ticks
/// it took, wall clock.
fn run_alone<'r>(guest: Guest<'r>, console: &'static BoardConsole) -> (Board<'r>, u64) {
    let mut board = Board::new(console);
    board.add(guest);
    let start = hw::mtime();
    board.run();
    (board, hw::mtime().saturating_sub(start))
}

/// One line of figures for a guest run in `mode`: wall time, world switches and what the VMM did.
fn mode_figures(engine: &NativeEngine, mode: Mode, ticks: u64) -> String {
    let stats = engine.stats;
    let mut line = alloc::format!(
        "{:?}: {} us wall, {} world switches, {} exits served ({} system, {} mmio, {} ecall, {} other exceptions) \
         and {} in place, {} shadow fills, {} full shadow flushes",
        mode,
        ticks / 10,
        stats.entries,
        stats.exits,
        stats.system_exits,
        stats.mmio_exits,
        stats.ecall_exits,
        stats.exception_exits,
        stats.served_in_place,
        stats.fills,
        engine.full_shadow_flushes(),
    );
    if let Some(patch) = engine.patch_stats() {
        line += &alloc::format!(
            ", {} pages scanned, {} sites patched, {} pages dropped, {} evicted",
            patch.scans,
            patch.patched,
            patch.dropped,
            patch.evicted
        );
    }
    if let Some(sites) = engine.site_stats() {
        line += &alloc::format!(
            ", {} excursions serving {} exits over {} emulated instructions ({} wasted)",
            sites.excursions,
            sites.exits_in_excursions,
            sites.emulated,
            sites.wasted
        );
    }
    line
}

/// Whether the lone VM of `board` powered off with status 0.
fn passed_alone(board: &mut Board<'_>) -> bool {
    board.slot(0).outcome() == Some(RunOutcome::PowerOff { code: 0 })
}

/// The benchmarks, each VM alone on the board (one real hart at a time): the cost of a trap round trip (a CSR read emulated by the VMM),
/// a loop reading `time` in each of the four modes, and a CPU-bound guest's run time. Returns how many failed.
fn benchmarks(console: &'static BoardConsole) -> usize {
    let mut failures = 0;
    let mut csr = make_guest(12, 11, "csr-loop", console, Images::Raw(csr_loop_image()), Expect::PowerOff);
    // A world switch per read: what a trap costs.
    csr.watch.mode = Mode::Trapping;
    let (mut csr, ticks) = run_alone(csr, console);
    // 10 MHz: a tick is 100 ns.
    let nanoseconds = ticks.saturating_mul(100) / CSR_LOOP_TRAPS;
    println!(
        "bench: trap round trip (CSR read emulated by the VMM): {nanoseconds} ns ({CSR_LOOP_TRAPS} in {} us, {} world switches)",
        ticks / 10,
        csr.slot(0).engine().stats.entries
    );
    failures += usize::from(!passed_alone(&mut csr));
    drop(csr);
    let mut loop_ticks = [0u64; 4];
    let modes = [Mode::Trapping, Mode::Patching, Mode::PatchingCached, Mode::TrappingCached];
    // One partition for the four runs, one after the other (each borrows it, zeroed, and is gone before the next).
    let shared = &mut take(&PARTITIONS, TIME_LOOP_PARTITION, "RAM partition").0[..];
    for (slot, mode) in modes.into_iter().enumerate() {
        // VMs 14 to 16 and 18 (17 is the second `counters` VM's).
        let index = [14, 15, 16, 18][slot];
        shared.fill(0);
        let description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
        let images = Images::Raw(time_loop_image());
        let (name, harts, script, expect) = ("time-loop", 1, &[][..], Expect::PowerOff);
        let mut guest =
            build_guest(Wiring { index, name, harts, images, description, script, expect }, &mut shared[..], console);
        guest.watch.mode = mode;
        let (mut board, ticks) = run_alone(guest, console);
        let figures = mode_figures(board.slot(0).engine(), mode, ticks);
        println!("bench: time loop ({TIME_LOOP_READS} reads of time), {figures}");
        failures += usize::from(!passed_alone(&mut board));
        loop_ticks[slot] = ticks.max(1);
    }
    println!(
        "bench: time loop speed-up over trapping: patching {:.2}x, patching with code caching {:.2}x, trapping with \
         code caching {:.2}x",
        loop_ticks[0] as f64 / loop_ticks[1] as f64,
        loop_ticks[0] as f64 / loop_ticks[2] as f64,
        loop_ticks[0] as f64 / loop_ticks[3] as f64
    );
    let bench = make_guest(13, 12, "bench-int", console, Images::Elf(BENCH_INT), Expect::PowerOff);
    let (mut bench, ticks) = run_alone(bench, console);
    let stats = bench.slot(0).engine().stats;
    println!(
        "bench: bench-int under the native VMM: {ticks} mtime ticks wall clock, {} running natively, {} world switches",
        stats.guest_ticks, stats.entries
    );
    failures += usize::from(!passed_alone(&mut bench));
    failures
}

/// Where a runner may place a Linux boot block (with `-m 1G` and QEMU's generic loader): a header (magic, kernel
/// size, initrd size, command line) at this address, the kernel (a RISC-V `Image`) at +4 KiB and the initramfs
/// right after it (4 KiB aligned). At +2 KiB the header may ask for a loop ([`LINUX_LOOP_MAGIC`], then a count).
const LINUX_BLOCK: u64 = 0xa000_0000;
const LINUX_MAGIC: u64 = u64::from_le_bytes(*b"TRPZLNX1");
/// A loop request in the boot block's header: boot Linux this many times in the default mode (the regression loop
/// of the two-hart lockup, `linux_loop` in the board test) instead of once in each mode.
const LINUX_LOOP_MAGIC: u64 = u64::from_le_bytes(*b"TRPZLOOP");
/// Most boots a loop request may ask for: each boot is a VM of its own index (its harts' shadow pools and code
/// caches are lent to one boot after another, [`HartTables`]; its index names its console port).
const LINUX_LOOP_MAX: u64 = MAX_VMS as u64;
/// The Linux VM's RAM: 256 MiB of host memory above the block, outside the board's image.
const LINUX_RAM: (u64, u64) = (0xa800_0000, 0xb800_0000);
/// Harts of the Linux VM: on several real harts at once ([`run_parallel`]) whenever the board has as many.
const LINUX_HARTS: usize = 2;
/// The VM number (console port) of the scaling figures' `hash-harts` runs (the demo's, unused with Linux).
const HASH_HARTS_VM: usize = 24;
/// Runs of `hash-harts` each way for the scaling figures (the best counts).
const SCALING_RUNS: usize = 5;

/// The scaling figures (issue 14): `hash-harts`, two harts each hashing a buffer of its own, in `ram`, run with
/// both harts in one `Vm` (on one real hart at a time, as every VM ran before), then with a `Vm` per hart on one
/// real hart alone and on two ([`run_parallel`], shadow tables from `pools`): its wall time each way and the
/// speed-up (the best of [`SCALING_RUNS`] runs each way). How many runs failed.
fn scaling_figures(ram: &mut [u8], console: &'static BoardConsole, lent: &mut HartTables) -> u32 {
    let wiring = || Wiring {
        index: HASH_HARTS_VM,
        name: "hash-harts",
        harts: 2,
        images: Images::Elf(HASH_HARTS),
        description: MachineDescription::qemu_virt(2, VM_RAM_SIZE as u64),
        script: &[],
        expect: Expect::PowerOff,
    };
    ram.fill(0);
    // The reference: both harts in one `Vm`, in the same mode as the parallel runs.
    let mut whole = build_guest(wiring(), &mut ram[..], console);
    whole.watch.mode = SCALING_MODE;
    let (mut board, whole_ticks) = run_alone(whole, console);
    let mut failures = u32::from(!passed_alone(&mut board));
    drop(board);
    // The best of a few runs each way, taken in turns: the host's other work (QEMU's harts are host threads)
    // slows single runs unevenly.
    let mut runs = [(u64::MAX, 0u64); 2];
    for _ in 0..SCALING_RUNS {
        for (run, real_harts) in [1usize << smp::BOOT_HART, smp::online() & 0b11].into_iter().enumerate() {
            ram.fill(0);
            let (passed, ticks, parallel) =
                run_parallel(wiring(), SCALING_MODE, &mut ram[..], lent, console, real_harts, |board, ticks| {
                    let parallel: u64 = (0..board.len()).map(|at| board.slot(at).engine().stats.parallel_entries).sum();
                    (passed_alone(board), ticks, parallel)
                });
            failures += u32::from(!passed);
            if ticks.max(1) < runs[run].0 {
                runs[run] = (ticks.max(1), parallel);
            }
        }
    }
    let [(one, one_parallel), (two, two_parallel)] = runs;
    println!(
        "bench: hash-harts (2 harts each hashing its own buffer): both harts in one Vm {} us; a Vm per hart on 1 \
         real hart {} us ({one_parallel} world switches while the other hart ran natively), on 2 real harts {} us \
         ({two_parallel}): speed-up {:.2}x on 2 real harts over 1",
        whole_ticks / 10,
        one / 10,
        two / 10,
        one as f64 / two as f64
    );
    failures
}
/// What the board types at the Linux VM's shell.
const LINUX_SCRIPT: &[(&str, &str)] = &[
    ("trapeze-initramfs:", ""),
    ("# ", "echo answer=$((6 * 7))\n"),
    ("\nanswer=42", ""),
    ("# ", "uname -m\n"),
    ("\nriscv64", ""),
    // Two processes at once, one per hart: the shadow tables keep both address spaces.
    ("# ", "seq 3000|md5sum& seq 3000|md5sum; wait; echo both done\n"),
    ("\nboth done", ""),
    ("# ", ""),
];

/// The Linux boot block's kernel, initrd and command line, when a runner placed one.
fn linux_block() -> Option<(&'static [u8], &'static [u8], &'static str)> {
    let header = LINUX_BLOCK as *const u64;
    // SAFETY: the runner always gives QEMU 1 GiB, so the block's header lies in RAM; reading it has no effect.
    let (magic, kernel_size, initrd_size, bootargs_len) = unsafe {
        (
            header.read_volatile(),
            header.add(1).read_volatile(),
            header.add(2).read_volatile(),
            header.add(3).read_volatile(),
        )
    };
    if magic != LINUX_MAGIC || bootargs_len > 256 || kernel_size.saturating_add(initrd_size) > 0x0700_0000 {
        return None;
    }
    let kernel_start = LINUX_BLOCK + 0x1000;
    let initrd_start = (kernel_start + kernel_size + 0xfff) & !0xfff;
    // SAFETY: the runner placed these bytes, checked above to stay below the Linux VM's RAM; nothing writes them.
    unsafe {
        let kernel = core::slice::from_raw_parts(kernel_start as *const u8, kernel_size as usize);
        let initrd = core::slice::from_raw_parts(initrd_start as *const u8, initrd_size as usize);
        let bootargs = core::slice::from_raw_parts((LINUX_BLOCK + 32) as *const u8, bootargs_len as usize);
        Some((kernel, initrd, core::str::from_utf8(bootargs).unwrap_or("console=ttyS0")))
    }
}

/// How many boots the boot block's header asks for in a loop (`None`: no loop, one boot per mode).
fn linux_loop() -> Option<u64> {
    let request = (LINUX_BLOCK + 0x800) as *const u64;
    // SAFETY: inside the block's 4 KiB header page, in RAM (see `linux_block`); reading it has no effect.
    let (magic, boots) = unsafe { (request.read_volatile(), request.add(1).read_volatile()) };
    (magic == LINUX_LOOP_MAGIC).then_some(boots.clamp(1, LINUX_LOOP_MAX))
}

/// The Linux VMs' RAM ([`LINUX_RAM`]), the first time it is asked for (`None` after).
fn linux_ram() -> Option<&'static mut [u8]> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: LINUX_RAM lies in QEMU's RAM (1 GiB), above the board's image and the boot block, outside anything
    // the linker placed; the flag just checked makes this the only reference to it ever made.
    Some(unsafe { core::slice::from_raw_parts_mut(LINUX_RAM.0 as *mut u8, (LINUX_RAM.1 - LINUX_RAM.0) as usize) })
}

/// Boots Linux alone in `mode` in `ram` (zeroed first), plays the script at its shell and prints the figures:
/// whether the script was played to its end. Its harts run on several real harts at once ([`run_parallel`],
/// each with a shadow pool and code cache of `lent`) when the board has a real hart per hart (they wait for each
/// other in the SBI); else on one real hart at a time.
fn boot_linux(
    index: usize,
    mode: Mode,
    prefix: &'static str,
    ram: &mut [u8],
    block: (&'static [u8], &'static [u8], &'static str),
    console: &'static BoardConsole,
    lent: &mut HartTables,
) -> bool {
    ram.fill(0);
    let wiring = linux_wiring(index, prefix, ram.len(), block, console);
    let started_at = hw::mtime();
    // Its harts wait for each other in the SBI (remote fences): each needs a real hart of its own.
    if smp::online().count_ones() as usize >= LINUX_HARTS {
        return run_parallel(wiring, mode, ram, lent, console, usize::MAX, |board, ticks| {
            linux_figures(board, mode, started_at, ticks)
        });
    }
    let mut guest = build_guest(wiring, ram, console);
    guest.watch.mode = mode;
    let (mut board, ticks) = run_alone(guest, console);
    linux_figures(&mut board, mode, started_at, ticks)
}

/// Prints what a Linux boot did (its board's VM: one entry, or one per hart when its harts ran on several real
/// harts at once): whether its script was played to its end.
fn linux_figures(board: &mut Board<'_>, mode: Mode, started_at: u64, ticks: u64) -> bool {
    let harts = board.len();
    board.slot(0).console_mut(VmConsole::flush);
    hw::console_write("\n");
    let played = board.slot(0).console(VmConsole::script_done);
    let mut total = engine::Stats::default();
    let mut shell_at: Option<(u64, u64)> = None;
    let mut waits = 0;
    for at in 0..harts {
        let slot = board.slot(at);
        let stats = slot.engine().stats;
        total.entries += stats.entries;
        total.fills += stats.fills;
        total.emulated += stats.emulated;
        total.exits += stats.exits;
        total.quanta += stats.quanta;
        total.remote_fences += stats.remote_fences;
        total.remote_fence_drops += stats.remote_fence_drops;
        total.kicks += stats.kicks;
        total.parallel_entries += stats.parallel_entries;
        total.revocations += stats.revocations;
        total.revoked_leaves += stats.revoked_leaves;
        waits += slot.engine().revocation_waits();
        if let Some((at, _)) = slot.watch.shell_at {
            shell_at = Some(shell_at.map_or((at, 0), |(first, _)| (first.min(at), 0)));
        }
    }
    println!(
        "linux ({mode:?}): script played: {played}; {} guest entries, {} shadow fills, {} emulated, {} exits, {} \
         quanta, {} remote fences ({} dropped shadow mappings)",
        total.entries,
        total.fills,
        total.emulated,
        total.exits,
        total.quanta,
        total.remote_fences,
        total.remote_fence_drops
    );
    if harts > 1 {
        let mut line = alloc::format!("linux ({mode:?}): harts on several real harts:");
        for at in 0..harts {
            let stats = board.slot(at).engine().stats;
            line += &alloc::format!(
                " hart {at} ran on real harts {:#x} ({} world switches);",
                stats.real_harts,
                stats.entries
            );
        }
        println!(
            "{line} {} world switches entered while the VM's other hart ran natively, {} runs cut short by a kick; {} \
             cross-hart write revocations served ({} took W from a shadow leaf), {waits} waits for a hart running \
             natively",
            total.parallel_entries, total.kicks, total.revocations, total.revoked_leaves
        );
    }
    if let Some((at, _)) = shell_at {
        let wall = at.saturating_sub(started_at) / 10;
        println!(
            "bench: linux boot to its shell, {mode:?}: {wall} us wall, {} world switches",
            board.slot(0).watch.shell_at.map_or(0, |(_, e)| e)
                + (1..harts).map(|at| board.slot(at).watch.shell_at.map_or(0, |(_, e)| e)).sum::<u64>()
        );
    }
    for at in 0..harts {
        let which = if harts > 1 { alloc::format!(" (hart {at})") } else { String::new() };
        println!("bench: linux boot and script, {}{which}", mode_figures(board.slot(at).engine(), mode, ticks));
    }
    board.report_harts("linux");
    played
}

/// The Linux VM's wiring, its RAM `bytes` long: the kernel in virtual S-mode on the VMM's own SBI, with its
/// initramfs and command line, its console tagged `tag`.
fn linux_wiring(
    index: usize,
    tag: &'static str,
    bytes: usize,
    (kernel, initrd, bootargs): (&'static [u8], &'static [u8], &'static str),
    console: &'static BoardConsole,
) -> Wiring<'static> {
    if let Ok(mut mux) = console.try_borrow_mut() {
        mux.set_tag(index, tag);
    }
    let mut description = MachineDescription::qemu_virt(LINUX_HARTS as u32, bytes as u64);
    description.bootargs = Some(bootargs);
    let images = Images::BuiltinSbi { kernel, initrd: Some(initrd) };
    let (harts, script, expect) = (LINUX_HARTS, LINUX_SCRIPT, Expect::Script);
    Wiring { index, name: "linux", harts, images, description, script, expect }
}

/// The mode of the scaling figures' `hash-harts` runs: counters trapping, no code caching (a guest that hashes
/// without trapping: the figures measure the real harts, not the VMM's modes).
const SCALING_MODE: Mode = Mode::Trapping;

/// The VMs' partitions of the physical virtio-blk disk, when the runner gave the machine one (`DISK_FILE`): its
/// first usable MBR partition for U-Boot, the next two for the two `disk-pattern` VMs (none for them unless the
/// disk has all three). The core's layout checks them together: each inside the disk, none overlapping another;
/// a layout it refuses gives no VM a disk.
fn board_disks(physical: Option<disk::PhysicalDisk>) -> (Option<disk::Partition>, Vec<disk::Partition>) {
    let Some(mut physical) = physical else {
        println!("board: no physical disk: U-Boot runs without one, the disk-pattern VMs do not run");
        return (None, Vec::new());
    };
    let (base, capacity) = (physical.base, physical.capacity());
    let mut runs = physical.mbr_partitions();
    runs.truncate(disk::DISK_VMS);
    let Some(&(first, count)) = runs.first() else {
        println!(
            "board: the disk at {base:#x} ({capacity} sectors) has no usable MBR partition: U-Boot runs without one"
        );
        return (None, Vec::new());
    };
    println!(
        "board: disk at {base:#x}: {capacity} sectors; u-boot gets partition 1, sectors {first}..{}",
        first + count
    );
    defmt::info!("disk: {=u64} sectors, partition {=u64}+{=u64}", capacity, first, count);
    if runs.len() < disk::DISK_VMS {
        println!("board: the disk has no partitions 2 and 3: the disk-pattern VMs do not run");
        runs.truncate(1);
    }
    for (slot, &(first, count)) in runs.iter().enumerate().skip(1) {
        println!(
            "board: vm{} (disk-pattern) gets partition {}, sectors {first}..{}",
            20 + slot,
            slot + 1,
            first + count
        );
    }
    let physical: &'static RefCell<disk::PhysicalDisk> = Box::leak(Box::new(RefCell::new(physical)));
    match disk::layout(physical, &runs) {
        Ok(mut partitions) => {
            let uboot = (!partitions.is_empty()).then(|| partitions.remove(0));
            (uboot, partitions)
        }
        Err(error) => {
            println!("board: the disk's partitions are refused ({error:?}): no VM gets a disk");
            (None, Vec::new())
        }
    }
}

/// The board's bridge, with the physical NIC as its uplink when the runner gave the machine one.
fn board_net(physical: Option<nic::PhysicalNic>) -> nic::BoardNet {
    match &physical {
        Some(nic) => {
            let mac = nic.mac();
            println!(
                "board: NIC at {:#x} ({:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}): the bridge's uplink to QEMU's network",
                nic.base, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
            );
        }
        None => println!("board: no physical NIC: the bridge has no uplink, U-Boot runs without a NIC"),
    }
    nic::BoardNet::new(physical)
}

/// The second physical virtio-blk disk, when the runner gave the machine one (`DEDICATED_DISK_FILE`), given whole
/// to one VM (vm23): a dedicated DMA-capable device, still served by the VMM, which translates and bounds-checks
/// every guest address of its descriptors in the VM's RAM (the guest never programs the physical device).
fn dedicated_disk(physical: Option<disk::PhysicalDisk>) -> Option<disk::Partition> {
    let physical = physical?;
    let (base, capacity) = (physical.base, physical.capacity());
    println!("board: disk at {base:#x}: {capacity} sectors, given whole to vm23 (disk-pattern)");
    disk::dedicated(Box::leak(Box::new(RefCell::new(physical))))
}

/// Every hart's entry (riscv-rt's): the secondaries go to `smp::secondary` at once (woken by `smp::bring_up`
/// once the boot hart has set up the shared state), on their small stacks: the boot hart's `boot` has a frame of
/// megabytes (the demo's VMs are built on its stack), which must not be allocated on theirs.
#[riscv_rt::entry]
fn main() -> ! {
    let hart = smp::hart_id();
    if hart != smp::BOOT_HART {
        smp::secondary(hart)
    }
    boot()
}

/// The boot hart: sets up the shared state, brings up the other harts, and runs the VMs.
#[inline(never)]
fn boot() -> ! {
    // Outside runs the boot hart holds the VMM lock (see `smp`).
    smp::vmm_lock();
    BOOT_TIME.store(hw::mtime(), Ordering::Relaxed);
    // SAFETY: the heap region is reserved by the linker script (`_heap_size`) after .bss and used by nothing else.
    unsafe {
        extern "C" {
            static _heap_size: u8;
        }
        let size = core::ptr::addr_of!(_heap_size) as usize;
        HEAP.lock().init(riscv_rt::heap_start() as *mut u8, size);
    }
    hw::init_machine();
    switch::install_trap_entry();
    println!("trapeze native VMM on qemu-virt-rv64: guests run in U-mode");
    defmt::info!("board up");
    let console = board_console();
    let harts = smp::bring_up();
    println!("board: {} real harts up (mask {harts:#x}); VMs run on all of them", harts.count_ones());

    if let Some(block) = linux_block() {
        let ram = linux_ram().unwrap_or_else(|| panic!("the Linux RAM given twice"));
        // The shadow pools of the Linux VM's two harts when they run on several real harts at once, lent to each
        // boot in turn (the demo's VMs, which use these two indices, do not run with Linux).
        let mut lent = HartTables::take();
        if let Some(boots) = linux_loop() {
            println!(
                "board: a Linux boot block asks for a loop: booting {LINUX_HARTS}-hart Linux {boots} times ({})",
                block.2
            );
            let mut passed = 0;
            for boot in 1..=boots {
                let index = (boot - 1) as usize;
                let played = boot_linux(index, DEFAULT_MODE, "[linux:loop] ", &mut ram[..], block, console, &mut lent);
                println!("linux loop: boot {boot} of {boots}: script played: {played}");
                passed += u64::from(played);
            }
            println!("linux loop: {passed} of {boots} boots reached the shell and ran the script");
            report_isolation();
            report_stacks();
            hw::exit((boots - passed) as u32)
        }
        println!("board: a Linux boot block is present: booting Linux alone, once in each mode ({})", block.2);
        let modes = [
            (Mode::Trapping, "[linux:trapping] "),
            (Mode::Patching, "[linux:patching] "),
            (Mode::PatchingCached, "[linux:cached] "),
            (Mode::TrappingCached, "[linux:trapping-cached] "),
        ];
        let mut failures = scaling_figures(&mut ram[..VM_RAM_SIZE], console, &mut lent);
        for (index, (mode, prefix)) in modes.into_iter().enumerate() {
            // One at a time: each boot borrows the Linux RAM, so the previous guest is gone before the next.
            failures += u32::from(!boot_linux(index, mode, prefix, &mut ram[..], block, console, &mut lent));
        }
        report_isolation();
        report_stacks();
        hw::exit(failures)
    }
    use Expect::{PowerOff, RunForever};
    let mut board = Board::new(console);
    let found = slots::probe();
    let mut physical_disks = found.disks.into_iter();
    let (uboot_disk, pattern_disks) = board_disks(physical_disks.next());
    let dedicated = dedicated_disk(physical_disks.next());
    let net = board_net(found.nic);
    // U-Boot gets a NIC when the bridge reaches QEMU's network: it asks for a DHCP lease.
    let uboot_nic = net.uplink().and_then(|_| net.attach_vm());
    // One at a time, each built and handed over before the next: an array of them all lived on this frame at once
    // (megabytes: each `Vm` carries its harts' soft TLBs).
    board.add(make_guest(0, 0, "hello", console, Images::Elf(HELLO), PowerOff));
    board.add(make_guest(1, 1, "hello", console, Images::Elf(HELLO), PowerOff));
    board.add(make_guest(2, 2, "sv39", console, Images::Elf(SV39), PowerOff));
    board.add(make_guest(3, 3, "interrupts", console, Images::Elf(INTERRUPTS), PowerOff));
    board.add(make_guest(4, 4, "idle", console, Images::Elf(IDLE), PowerOff));
    board.add(make_guest(5, 5, "amo", console, Images::Elf(AMO), PowerOff));
    board.add(make_guest(6, 6, "fpu", console, Images::Elf(FPU), PowerOff));
    board.add(make_guest(7, 7, "arith", console, Images::Elf(ARITH), PowerOff));
    board.add(make_guest(8, 8, "hostile", console, Images::Raw(hostile_image()), RunForever));
    board.add(uboot_guest(9, uboot_disk, uboot_nic, console));
    board.add(make_guest(10, 9, "contain", console, Images::Elf(CONTAIN), PowerOff));
    board.add(counters_guest(11, 10, console, false));
    board.add(counters_guest(17, 16, console, true));
    // QEMU `virt`'s goldfish RTC, given whole to vm19; vm20 must not reach it.
    board.add(rtc_guest(19, 17, console, true));
    board.add(rtc_guest(20, 18, console, false));
    // Two VMs filling their own partitions of the physical disk, concurrently with the others (and U-Boot's).
    for (slot, disk) in pattern_disks.into_iter().enumerate() {
        board.add(pattern_guest(21 + slot, 19 + slot, disk, PATTERN_SEEDS[slot], console));
    }
    // And one on a whole disk of its own.
    if let Some(disk) = dedicated {
        board.add(pattern_guest(23, 21, disk, DEDICATED_SEED, console));
    }
    // Two VMs exchanging frames over the board's bridge.
    for wiring in NET_PING_VMS {
        board.add(net_ping_guest(wiring, &net, console));
    }
    *board.net.get_mut() = Some(net);
    // Two VMs printing through the spooled printer, their RAM in the Linux VMs' window (unused without Linux).
    let printing = printer::Printing::new();
    let spare = linux_ram().unwrap_or_else(|| panic!("the Linux RAM given twice"));
    for ((index, spool), ram) in PRINT_VMS.into_iter().zip(spare.chunks_exact_mut(VM_RAM_SIZE)) {
        board.add(print_guest(index, spool, ram, &printing, console));
    }
    *board.printing.get_mut() = Some(printing);

    assert!(board.len() <= DEMO_VMS, "the demo has {DEMO_VMS} VMs at most");
    board.run();
    // The VMs are done; the jobs still waiting print, whole.
    board.pump_printer();
    let failures = report(&mut board);
    let count = board.len();
    println!("board: {} of {count} VMs passed", count - failures);
    drop(board);
    let bench_failures = benchmarks(console);
    if bench_failures > 0 {
        println!("board: {bench_failures} benchmark guest(s) failed");
    }
    let failures = failures + bench_failures;
    report_isolation();
    report_stacks();
    hw::exit(failures as u32)
}

/// Prints how each VM of `board` ended and what the VMM did for it; answers how many did not do what they were
/// expected to.
fn report(board: &mut Board<'_>) -> usize {
    board.report_harts("demo");
    let Board { queue, net, printing, .. } = board;
    let (queue, net, printing) = (queue.get_mut(), net.get_mut(), printing.get_mut());
    // A scripted VM is stopped as soon as its script has played, maybe in the middle of a line.
    for entry in queue.entries.iter_mut() {
        if let Some(slot) = entry.slot.as_deref_mut().filter(|slot| slot.watch.expect == Expect::Script) {
            slot.console_mut(VmConsole::flush);
            hw::console_write("\n");
        }
    }
    let mut failures = 0;
    for slot in queue.entries.iter().filter_map(|entry| entry.slot.as_deref()) {
        let watch = &slot.watch;
        let (index, name) = (watch.index, watch.name);
        let (vm, engine, outcome) = (slot.vm(), slot.engine(), slot.outcome());
        let stats = engine.stats;
        let code = match outcome {
            Some(RunOutcome::PowerOff { code }) => code,
            _ => u32::MAX,
        };
        let passed = match watch.expect {
            Expect::PowerOff => code == 0,
            // Contained: still running, and the real timer took the hart away from it again and again.
            Expect::RunForever => outcome.is_none() && stats.quanta > 0,
            Expect::Script => slot.console(VmConsole::script_done),
        };
        if !passed {
            failures += 1;
        }
        defmt::info!(
            "vm {=usize}: exit {=u32}, {=u64} entries, {=u64} fills, {=u64} exits, {=u64} quanta, {=u64} walled",
            index,
            code,
            stats.entries,
            stats.fills,
            stats.exits,
            stats.quanta,
            stats.walled
        );
        match (outcome, watch.expect) {
            (Some(outcome), _) => println!("vm{index} ({name}): {outcome:?}"),
            (None, Expect::Script) => println!("vm{index} ({name}): script played: {passed}"),
            (None, _) => println!("vm{index} ({name}): contained: still running, preempted {} times", stats.quanta),
        }
        println!(
            "    {} guest entries, {} shadow fills, {} emulated, {} exits, {} quanta, {} moves between real harts, {} \
             walled",
            stats.entries, stats.fills, stats.emulated, stats.exits, stats.quanta, stats.migrations, stats.walled
        );
        if let Some((page, served)) =
            vm.devices.look(|devices| devices.passthrough.map(|(page, _)| (page, devices.passthrough_served)))
        {
            println!("    passthrough page {page:#x}: {served} accesses served by the VMM");
        }
        if let Some(patch) = engine.patch_stats() {
            println!(
                "    counters delegated: {} pages scanned, {} sites patched, {} site traps, {} pages dropped when \
                 written, {} evicted, {} loads of patched code, {} fetches refused",
                patch.scans,
                patch.patched,
                patch.site_traps,
                patch.dropped,
                patch.evicted,
                patch.code_loads,
                patch.refused
            );
        }
        if let Some(sites) = engine.site_stats() {
            println!(
                "    trap sites cached: {} excursions served {} exits over {} emulated instructions ({} wasted)",
                sites.excursions, sites.exits_in_excursions, sites.emulated, sites.wasted
            );
        }
        if let (Some(port), Some(net)) = (watch.nic, net.as_ref()) {
            // The NIC's counters, and its interrupt status (a driver that never acknowledges, as `net-ping`'s, leaves
            // the used-buffer bit its deliveries raised).
            let (nic, interrupt) = vm.devices.look(|devices| {
                let device = devices.inner.virtio.get(NET_SLOT).and_then(|slot| slot.as_net());
                device.map_or_else(Default::default, |nic| (nic.device().stats(), nic.interrupt_status()))
            });
            let port = net.stats(port);
            println!(
                "    nic: {} frames sent, {} received, {} dropped by the NIC, interrupt status {interrupt:#x}; bridge \
                 port: {} switched, {} queued, {} dropped (queue full)",
                nic.tx_frames,
                nic.rx_frames,
                nic.tx_dropped + nic.rx_dropped,
                port.switched,
                port.queued,
                port.send_dropped + port.queue_dropped
            );
        }
    }
    if let Some(printing) = printing.as_ref() {
        println!("board: printer: {} bytes printed", printing.printed);
    }
    if let Some((port, physical)) = net.as_ref().and_then(nic::BoardNet::uplink_stats) {
        println!(
            "board: uplink: {} frames from the network, {} to it ({} errors); bridge port: {} switched, {} queued, {} \
             dropped (queue full)",
            physical.received,
            physical.transmitted,
            physical.rx_errors + physical.tx_errors,
            port.switched,
            port.queued,
            port.send_dropped + port.queue_dropped
        );
    }
    failures
}

/// The isolation figures of the whole boot (every VM, every phase): guest entries and PMP hits (see
/// [`engine::PMP_HITS`]); a VMM panic or trap ends the board with its own line (`board: VMM panic`, `VMM trap`).
fn report_isolation() {
    let entries = engine::GUEST_ENTRIES.load(Ordering::Relaxed);
    let hits = engine::PMP_HITS.load(Ordering::Relaxed);
    println!("board: isolation: {entries} guest entries, {hits} PMP hits");
}

/// How much of its M-mode stack each real hart has used, at the end.
fn report_stacks() {
    let mut line = String::from("board: M-mode stack used per real hart:");
    for hart in (0..MAX_HARTS).filter(|&hart| smp::online() & (1 << hart) != 0) {
        let (size, used) = smp::stack_used(hart);
        line += &alloc::format!(" {} of {} KiB", used.div_ceil(1024), size / 1024);
    }
    println!("{line}");
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("board: VMM panic: {info}");
    hw::exit(101)
}

/// A trap taken by the VMM itself (never by a guest: those go through the world switch) is a VMM bug.
#[export_name = "ExceptionHandler"]
fn vmm_exception(_frame: &riscv_rt::TrapFrame) -> ! {
    let (cause, epc, tval): (u64, u64, u64);
    // SAFETY: reading trap CSRs has no side effect.
    unsafe {
        core::arch::asm!("csrr {0}, mcause", "csrr {1}, mepc", "csrr {2}, mtval", out(reg) cause, out(reg) epc, out(reg) tval)
    };
    println!("board: VMM trap: mcause {cause:#x} mepc {epc:#x} mtval {tval:#x}");
    hw::exit(102)
}
