//! `trapeze-board`: the native VMM on QEMU `virt` (rv64). It boots in M-mode (riscv-rt), brings up its console
//! (the physical UART), heap (`linked_list_allocator`) and logging (`defmt` over semihosting, decoded on the
//! host), then runs guest programs from this repository as VMs, each in its own RAM partition with its own
//! port of the shared console (`trapeze::dev::console_mux`: lines tagged `[vmN] `, `Ctrl-A c` to type to the next
//! VM), round-robin on the machine timer, natively in U-mode under `trapeze::vm::Vm` with the native
//! engine. When every VM has powered off it prints one summary line and exits QEMU through the `sifive,test0`
//! finisher: status 0 when every guest exited 0.
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
//! (`DISK_FILE`), U-Boot gets the disk's first MBR partition as its own virtio disk (`disk`).
#![no_std]
#![no_main]

extern crate alloc;

mod disk;
mod engine;
mod hw;
mod switch;

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
use core::sync::atomic::{AtomicU64, Ordering};

use defmt_semihosting as _;
use engine::{Copies, NativeEngine, Patches, SiteCache, POOL};
use trapeze::dev::console_mux::{ConsoleMux, MuxPort};
use trapeze::dev::SerialBackend;
use trapeze::dev::{MachineRequest, MmioError};
use trapeze::exec::native;
use trapeze::hart::{Hart, HartConfig};
use trapeze::mem::shadow::ShadowTables;
use trapeze::mem::{Ram, RAM_BASE};
use trapeze::vm::boot::{place_devicetree, KERNEL_OFFSET};
use trapeze::vm::fdt::{write_dtb, MachineDescription, QEMU_VIRT_RTC, QEMU_VIRT_VIRTIO};
use trapeze::vm::loader::{load_elf, load_raw};
use trapeze::vm::virt::VirtDevices;
use trapeze::vm::{Clock, Devices, RunOutcome, Vm};

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// RAM of each VM, in MiB (the guests are linked for 16 MiB at 0x8000_0000).
const VM_RAM_SIZE: usize = 16 << 20;
/// How many VMs the board runs: the fifteen of the demo (U-Boot among them) and the six benchmark guests.
const MAX_VMS: usize = 21;
/// Partitions of [`VM_RAM_SIZE`]: every VM but U-Boot has one.
const SMALL_PARTITIONS: usize = MAX_VMS - 1;
/// The board stops waiting for the VMs of one schedule after 100 s (then the ones not done fail).
const GIVE_UP_TICKS: u64 = 1_000_000_000;
/// A VM's turn on the hart: 1 ms of the 10 MHz machine timer, then the next VM runs.
const TURN_TICKS: u64 = 10_000;

/// A VM's RAM partition: page-aligned host memory, in .bss (zeroed at boot).
#[repr(C, align(4096))]
struct Partition<const SIZE: usize>([u8; SIZE]);

static mut PARTITIONS: [Partition<VM_RAM_SIZE>; SMALL_PARTITIONS] =
    [const { Partition([0; VM_RAM_SIZE]) }; SMALL_PARTITIONS];
/// RAM of the U-Boot VM: U-Boot relocates itself to the top of RAM and keeps its heap there.
const UBOOT_RAM_SIZE: usize = 64 << 20;
static mut UBOOT_PARTITION: Partition<UBOOT_RAM_SIZE> = Partition([0; UBOOT_RAM_SIZE]);
static mut SHADOWS: [ShadowTables<POOL>; MAX_VMS] = [const { ShadowTables::new() }; MAX_VMS];
/// Each VM's patch table, patched copies and code cache of trap sites (used when its mode needs them).
static mut PATCHES: [Patches; MAX_VMS] = [const { Patches::new() }; MAX_VMS];
static mut COPIES: [Copies; MAX_VMS] = [const { Copies::new() }; MAX_VMS];
static mut SITE_CACHES: [SiteCache; MAX_VMS] = [const { SiteCache::new() }; MAX_VMS];

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
/// CSR reads the `csr-loop` guest makes (`guests.S`).
const CSR_LOOP_TRAPS: u64 = 100_000;
/// `time` reads the `time-loop` guest makes (`guests.S`).
const TIME_LOOP_READS: u64 = 1_000_000;

/// Longest console line a VM may write before it is flushed without its newline.
const LINE_MAX: usize = 256;

/// The physical console shared by every VM through the core's multiplexer: each VM's output a whole line at a
/// time (so the VMs' lines do not interleave) tagged `[vmN] `, input typed at the physical console to the
/// focused VM (`Ctrl-A c` cycles; see `trapeze::dev::console_mux`).
type BoardMux = ConsoleMux<PhysicalConsole, MAX_VMS, 64, LINE_MAX>;
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
    port: MuxPort<'static, PhysicalConsole, MAX_VMS, 64, LINE_MAX>,
    script: &'static [(&'static str, &'static str)],
    /// The next step of `script`, and how many bytes of its expected text have been seen in a row.
    step: usize,
    matched: usize,
}

impl VmConsole {
    fn new(
        port: MuxPort<'static, PhysicalConsole, MAX_VMS, 64, LINE_MAX>,
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
/// The earliest absolute deadline an idle VM asked to sleep until in this round (`u64::MAX`: none).
static IDLE_DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
/// How many times a VM found every hart waiting for an interrupt.
static IDLE_CALLS: AtomicU64 = AtomicU64::new(0);
/// For each VM, the ticks it spent runnable while other VMs ran, or while the VMM worked for it: hidden from its
/// clock.
static STOLEN: [AtomicU64; MAX_VMS] = [const { AtomicU64::new(0) }; MAX_VMS];

/// A VM's view of the machine timer: real time minus the time it was runnable but descheduled or the VMM worked
/// on its exits, so a guest sees its time advance while it runs natively or sleeps, not while other VMs run or
/// its privileged instructions and device accesses are emulated (its timer deadlines then come when it can take
/// them, and a short deadline is not used up by emulation). `idle` never blocks (other VMs may be runnable): it records the deadline, and the scheduler
/// sleeps when every VM is idle.
struct BoardClock {
    index: usize,
}

impl Clock for BoardClock {
    fn now(&mut self) -> u64 {
        let stolen = STOLEN.get(self.index).map_or(0, |stolen| stolen.load(Ordering::Relaxed));
        hw::mtime().wrapping_sub(BOOT_TIME.load(Ordering::Relaxed)).wrapping_sub(stolen)
    }
    fn idle(&mut self, ticks: Option<u64>) {
        // No deadline: look again after 10 ms.
        let deadline = hw::mtime().saturating_add(ticks.unwrap_or(100_000).min(100_000));
        IDLE_DEADLINE.fetch_min(deadline, Ordering::Relaxed);
        IDLE_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A VM's devices (QEMU `virt`'s set), reporting every access no device serves: the dispatcher injects an
/// access fault into the guest, and the VMM says so on the console and in its log.
struct ReportingDevices {
    vm: usize,
    inner: VirtDevices<'static, VmConsole, disk::Partition>,
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

type BoardVm = Vm<'static, ReportingDevices>;

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

/// The image a guest boots.
enum Image<'a> {
    Elf(&'a [u8]),
    /// A raw binary loaded and started at the start of RAM.
    Raw(&'a [u8]),
}

/// One guest: its machine, its engine and how it ended.
struct Guest {
    /// The VM's number: its partition, shadow pool and clock.
    index: usize,
    name: &'static str,
    vm: Box<BoardVm>,
    engine: NativeEngine,
    expect: Expect,
    outcome: Option<RunOutcome>,
    /// When the VM was last descheduled while runnable (`None`: it is idle or has not run yet).
    descheduled_at: Option<u64>,
    /// How the VMM virtualizes its counters and trap sites; set up when it first runs.
    mode: Mode,
    mode_set: bool,
    /// Pause the VM once, for [`PAUSE_TICKS`], after this many counter reads served by the dispatcher (the
    /// `counters` VM, in the middle of its `time` reads: its virtual time must not jump over the pause).
    pause_after_counter_reads: Option<u64>,
    /// Machine time when the VM first ran.
    started_at: Option<u64>,
    /// Machine time and world switches when the VM's console first reached its script's second step (a Linux
    /// VM's first shell prompt).
    shell_at: Option<(u64, u64)>,
    /// The VM is paused (not run although runnable) until this machine time.
    paused_until: Option<u64>,
}

/// How long the board pauses a `counters` VM once: 200 ms, twice the step its `time` reads tolerate.
const PAUSE_TICKS: u64 = 2_000_000;

/// Builds VM `index` running `image` in virtual M-mode, in small partition `partition`.
fn make_guest(
    index: usize,
    partition: usize,
    name: &'static str,
    console: &'static BoardConsole,
    image: Image,
    expect: Expect,
) -> Guest {
    make_described_guest(
        index,
        partition,
        name,
        console,
        image,
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
    image: Image,
    expect: Expect,
    description: MachineDescription,
) -> Guest {
    // SAFETY: each partition is given to one VM, so this is the only reference to it.
    let bytes = unsafe { &mut (&mut *core::ptr::addr_of_mut!(PARTITIONS))[partition].0[..] };
    let mut guest = build_guest(index, name, console, bytes, 1, &[], expect);
    let ram = &mut guest.vm.ram;
    let loaded = match image {
        Image::Elf(elf) => load_elf(elf, ram).map(|loaded| (loaded.entry, loaded.end)),
        Image::Raw(raw) => load_raw(raw, RAM_BASE, ram).map(|()| (RAM_BASE, RAM_BASE + raw.len() as u64)),
    };
    let (entry, end) = loaded.unwrap_or_else(|e| panic!("{name}: cannot load the guest: {e:?}"));
    // As on QEMU `virt` (and `trapeze run`): a0 = hart id, a1 = the machine's devicetree at the end of RAM.
    let mut blob = vec![0u8; 16 << 10];
    let length = write_dtb(&description, &mut blob).unwrap_or_else(|e| panic!("{name}: devicetree: {e:?}"));
    let (devicetree, _) = place_devicetree(ram, &blob[..length], None, end)
        .unwrap_or_else(|e| panic!("{name}: cannot place the devicetree: {e:?}"));
    let hart = &mut guest.vm.harts[0];
    hart.reset(entry);
    hart.set_x(11, devicetree);
    guest
}

/// Builds VM `index` (its shadow pool and clock) with `harts` harts over `bytes`, its harts in reset.
fn build_guest(
    index: usize,
    name: &'static str,
    console: &'static BoardConsole,
    bytes: &'static mut [u8],
    harts: u64,
    script: &'static [(&'static str, &'static str)],
    expect: Expect,
) -> Guest {
    // SAFETY: each index is used once, so this is the only reference to shadow pool `index`.
    let shadow = unsafe { &mut (&mut *core::ptr::addr_of_mut!(SHADOWS))[index] };
    let start = bytes.as_ptr() as u64;
    let partition = (start, start + bytes.len() as u64);
    let pages = bytes.len().div_ceil(4096);
    let mut ram = Ram::new(RAM_BASE, bytes);
    // Every write to a page the engine patched or caches code from is noticed (one bit per page).
    ram.attach_code_watch(Box::leak(vec![0u64; pages.div_ceil(64)].into_boxed_slice()));
    let harts = (0..harts).map(|id| Hart::new(HartConfig::rv64gc(id)));
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
    let clock: &'static mut BoardClock = Box::leak(Box::new(BoardClock { index }));
    let vm = Vm::new(harts, ram, devices, clock).unwrap_or_else(|e| panic!("{name}: cannot build the VM: {e:?}"));
    defmt::info!("vm {=usize}: partition {=u64:#x}..{=u64:#x}", index, partition.0, partition.1);
    Guest {
        index,
        name,
        vm: Box::new(vm),
        engine: NativeEngine::new(index + 1, shadow, partition),
        expect,
        outcome: None,
        descheduled_at: None,
        mode: DEFAULT_MODE,
        mode_set: false,
        pause_after_counter_reads: None,
        started_at: None,
        shell_at: None,
        paused_until: None,
    }
}

impl Guest {
    /// Sets up the engine for the guest's mode, before it first runs.
    fn set_up_mode(&mut self) {
        if self.mode_set {
            return;
        }
        self.mode_set = true;
        let (index, mode) = (self.index, self.mode);
        if matches!(mode, Mode::Patching | Mode::PatchingCached) {
            // SAFETY: each VM index is used by one live VM at a time, and this runs once per VM, so these are the
            // only references to its patch table and copies.
            let (table, copies) = unsafe {
                (&mut (*core::ptr::addr_of_mut!(PATCHES))[index], &mut (*core::ptr::addr_of_mut!(COPIES))[index])
            };
            self.engine.delegate_counters(table, copies);
        }
        if matches!(mode, Mode::PatchingCached | Mode::TrappingCached) {
            // SAFETY: as above, for its code cache.
            let cache = unsafe { &mut (*core::ptr::addr_of_mut!(SITE_CACHES))[index] };
            self.engine.cache_trap_sites(cache);
        }
    }
}

/// A `counters` VM (issue 10): its counters are delegated whatever the default mode, so its code is scanned and
/// its counter reads patched before they run; with `cached`, its hot trap sites also run from the code cache.
/// The board pauses it once in the middle of its `time` reads (tens of thousands, each served by the
/// dispatcher), which its virtual time must not show.
fn counters_guest(index: usize, partition: usize, console: &'static BoardConsole, cached: bool) -> Guest {
    let mut guest = make_guest(index, partition, "counters", console, Image::Elf(COUNTERS), Expect::PowerOff);
    guest.mode = if cached { Mode::PatchingCached } else { Mode::Patching };
    guest.pause_after_counter_reads = Some(5_000);
    guest
}

/// An `rtc` VM (issue 11, dedicated devices). With `owner`, QEMU `virt`'s goldfish RTC (a device without DMA) is
/// given whole to it: in its devicetree, mapped straight into its shadow tables (its accesses never leave the
/// guest) and let through by its PMP alone. Without, it finds no RTC in its devicetree and checks that touching
/// the owner's gets the access fault.
fn rtc_guest(index: usize, partition: usize, console: &'static BoardConsole, owner: bool) -> Guest {
    let mut description = MachineDescription::qemu_virt(1, VM_RAM_SIZE as u64);
    if owner {
        description.rtc = Some(QEMU_VIRT_RTC);
    }
    let mut guest =
        make_described_guest(index, partition, "rtc", console, Image::Elf(RTC), Expect::PowerOff, description);
    if owner {
        // The board runs bare in M-mode: the device's host physical address is its guest real one on `virt`.
        let page = QEMU_VIRT_RTC.base;
        guest.engine.pass_through(page, page).unwrap_or_else(|e| panic!("rtc: cannot pass the RTC through: {e:?}"));
        guest.vm.devices.passthrough = Some((page, page));
        // Counters trapping and no code caching: no excursion emulates its RTC reads, so every one is native (the
        // board reports how many the VMM served: none).
        guest.mode = Mode::Trapping;
    }
    guest
}

/// The U-Boot VM: Debian's U-Boot for QEMU `virt` in S-mode at 0x8020_0000, on the VMM's own SBI, with a
/// devicetree for its machine, as `trapeze run --bios builtin --kernel u-boot.bin` boots it. With `disk`, the
/// VM has it in its first virtio-mmio slot (and in its devicetree), as `trapeze run --disk` gives it.
fn uboot_guest(index: usize, disk: Option<disk::Partition>, console: &'static BoardConsole) -> Guest {
    // SAFETY: the U-Boot partition is used by this one VM.
    let bytes = unsafe { &mut (&mut *core::ptr::addr_of_mut!(UBOOT_PARTITION)).0[..] };
    let script = if disk.is_some() { UBOOT_DISK_SCRIPT } else { UBOOT_SCRIPT };
    let mut guest = build_guest(index, "u-boot", console, bytes, 1, script, Expect::Script);
    let mut description = MachineDescription::qemu_virt(1, UBOOT_RAM_SIZE as u64);
    let mut virtio_slots = QEMU_VIRT_VIRTIO;
    if let Some(disk) = disk {
        guest.vm.devices.inner.attach_disk(disk);
    }
    description.virtio_mmio = guest.vm.devices.inner.virtio_description(&mut virtio_slots);
    let ram = &mut guest.vm.ram;
    let entry = RAM_BASE + KERNEL_OFFSET;
    load_raw(UBOOT, entry, ram).unwrap_or_else(|e| panic!("u-boot: cannot load it: {e:?}"));
    let mut blob = vec![0u8; 16 << 10];
    let length = write_dtb(&description, &mut blob).unwrap_or_else(|e| panic!("u-boot: devicetree: {e:?}"));
    let end = entry + UBOOT.len() as u64;
    let (devicetree, _) = place_devicetree(ram, &blob[..length], None, end)
        .unwrap_or_else(|e| panic!("u-boot: cannot place the devicetree: {e:?}"));
    guest.vm.boot_with_builtin_sbi(0, entry, devicetree);
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

/// Runs `guest` alone and returns the machine timer ticks it took, wall clock.
fn time_alone(guest: Guest) -> (Guest, u64) {
    let mut guests = [guest];
    let start = hw::mtime();
    schedule(&mut guests);
    let ticks = hw::mtime().saturating_sub(start);
    let [guest] = guests;
    (guest, ticks)
}

/// The time-loop benchmark guest's code (`guests.S`).
fn time_loop_image() -> &'static [u8] {
    // SAFETY: the two symbols bound the time-loop guest in `guests.S`.
    unsafe { raw_image(core::ptr::addr_of!(time_loop_guest_start), core::ptr::addr_of!(time_loop_guest_end)) }
}

/// One line of figures for a guest run in some mode: wall time, world switches and what the VMM did.
fn mode_figures(guest: &Guest, ticks: u64) -> String {
    let stats = guest.engine.stats;
    let mut line = alloc::format!(
        "{:?}: {} us wall, {} world switches, {} exits served ({} system, {} mmio, {} ecall, {} other exceptions), \
         {} shadow fills",
        guest.mode,
        ticks / 10,
        stats.entries,
        stats.exits,
        stats.system_exits,
        stats.mmio_exits,
        stats.ecall_exits,
        stats.exception_exits,
        stats.fills
    );
    if let Some(patch) = guest.engine.patch_stats() {
        line += &alloc::format!(
            ", {} pages scanned, {} sites patched, {} pages dropped, {} evicted",
            patch.scans,
            patch.patched,
            patch.dropped,
            patch.evicted
        );
    }
    if let Some(sites) = guest.engine.site_stats() {
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

/// The benchmarks, each VM alone on the hart: the cost of a trap round trip (a CSR read emulated by the VMM),
/// a loop reading `time` in each of the four modes, and a CPU-bound guest's run time. Returns how many failed.
fn benchmarks(console: &'static BoardConsole) -> usize {
    let mut failures = 0;
    let mut csr = make_guest(12, 11, "csr-loop", console, Image::Raw(csr_loop_image()), Expect::PowerOff);
    // A world switch per read: what a trap costs.
    csr.mode = Mode::Trapping;
    let (csr, ticks) = time_alone(csr);
    // 10 MHz: a tick is 100 ns.
    let nanoseconds = ticks.saturating_mul(100) / CSR_LOOP_TRAPS;
    println!(
        "bench: trap round trip (CSR read emulated by the VMM): {nanoseconds} ns ({CSR_LOOP_TRAPS} in {} us, {} world switches)",
        ticks / 10,
        csr.engine.stats.entries
    );
    failures += (csr.outcome != Some(RunOutcome::PowerOff { code: 0 })) as usize;
    let mut loop_ticks = [0u64; 4];
    let modes = [Mode::Trapping, Mode::Patching, Mode::PatchingCached, Mode::TrappingCached];
    for (slot, mode) in modes.into_iter().enumerate() {
        // VMs 14 to 16 and 18 (17 is the second `counters` VM, still around).
        let index = [14, 15, 16, 18][slot];
        let partition = index - 1;
        let mut guest =
            make_guest(index, partition, "time-loop", console, Image::Raw(time_loop_image()), Expect::PowerOff);
        guest.mode = mode;
        let (guest, ticks) = time_alone(guest);
        println!("bench: time loop ({TIME_LOOP_READS} reads of time), {}", mode_figures(&guest, ticks));
        failures += (guest.outcome != Some(RunOutcome::PowerOff { code: 0 })) as usize;
        loop_ticks[slot] = ticks.max(1);
    }
    println!(
        "bench: time loop speed-up over trapping: patching {:.2}x, patching with code caching {:.2}x, trapping with \
         code caching {:.2}x",
        loop_ticks[0] as f64 / loop_ticks[1] as f64,
        loop_ticks[0] as f64 / loop_ticks[2] as f64,
        loop_ticks[0] as f64 / loop_ticks[3] as f64
    );
    let bench = make_guest(13, 12, "bench-int", console, Image::Elf(BENCH_INT), Expect::PowerOff);
    let (bench, ticks) = time_alone(bench);
    println!(
        "bench: bench-int under the native VMM: {ticks} mtime ticks wall clock, {} running natively, {} world switches",
        bench.engine.stats.guest_ticks, bench.engine.stats.entries
    );
    failures += (bench.outcome != Some(RunOutcome::PowerOff { code: 0 })) as usize;
    failures
}

/// Ticks until the VM's next virtual timer deadline: its CLINT's, or the one its guest set through the VMM's
/// SBI.
fn ticks_until_deadline(vm: &BoardVm) -> Option<u64> {
    let devices = vm.devices.ticks_until_deadline();
    let firmware = vm.sbi().and_then(|sbi| sbi.ticks_until_deadline(vm.devices.mtime()));
    match (devices, firmware) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `guests` round-robin, a turn of [`TURN_TICKS`] each, until every one expected to power off has done so;
/// sleeps on the real timer when every VM waits for an interrupt.
fn schedule(guests: &mut [Guest]) {
    let started = hw::mtime();
    loop {
        let mut ran = false;
        let mut all_idle = true;
        IDLE_DEADLINE.store(u64::MAX, Ordering::Relaxed);
        for guest in guests.iter_mut().filter(|guest| guest.outcome.is_none()) {
            let index = guest.index;
            ran = true;
            guest.set_up_mode();
            guest.started_at.get_or_insert_with(hw::mtime);
            if let Some(until) = guest.paused_until {
                if hw::mtime() < until {
                    // Runnable but paused: the board sleeps no longer than the pause when every VM waits.
                    IDLE_DEADLINE.fetch_min(until, Ordering::Relaxed);
                    continue;
                }
                guest.paused_until = None;
            }
            if let (Some(since), Some(stolen)) = (guest.descheduled_at.take(), STOLEN.get(index)) {
                stolen.fetch_add(hw::mtime().saturating_sub(since), Ordering::Relaxed);
            }
            // The VM's turn: slices (each ends at an exit the dispatcher serves) until its time quantum is used
            // up, it waits for an interrupt or it ends. A slice runs no longer than until the VM's next timer
            // deadline, which is delivered between slices.
            let turn_end = hw::mtime().saturating_add(TURN_TICKS);
            let mut went_idle;
            loop {
                let left = turn_end.saturating_sub(hw::mtime());
                let until_deadline = ticks_until_deadline(&guest.vm).unwrap_or(u64::MAX);
                let ticks = left.min(until_deadline).max(1);
                let budget = ticks.saturating_mul(native::INSTRUCTIONS_PER_TICK);
                let idle_calls = IDLE_CALLS.load(Ordering::Relaxed);
                let (start, guest_ticks) = (hw::mtime(), guest.engine.stats.guest_ticks);
                guest.outcome = guest.vm.run_slice(&mut guest.engine, budget);
                let end = hw::mtime();
                guest.engine.end_slice(end);
                went_idle = IDLE_CALLS.load(Ordering::Relaxed) != idle_calls;
                if !went_idle {
                    // The VMM's own work for the slice (world switches, the dispatcher, devices, the console) is
                    // hidden from the guest's clock too: its time advances while it runs or sleeps.
                    let spent = end.saturating_sub(start);
                    let overhead = spent.saturating_sub(guest.engine.stats.guest_ticks - guest_ticks);
                    if let Some(stolen) = STOLEN.get(index) {
                        stolen.fetch_add(overhead, Ordering::Relaxed);
                    }
                }
                if guest.outcome.is_some() || went_idle || hw::mtime() >= turn_end {
                    break;
                }
            }
            all_idle &= went_idle;
            if guest.outcome.is_some() {
                guest.vm.devices.inner.uart.backend_mut().detach();
            }
            if !went_idle {
                guest.descheduled_at = Some(hw::mtime());
            }
            let reads = guest.engine.stats.counter_reads;
            let pause = guest.pause_after_counter_reads.filter(|&after| reads >= after && guest.outcome.is_none());
            if let Some(after) = pause {
                guest.pause_after_counter_reads = None;
                guest.paused_until = Some(hw::mtime().saturating_add(PAUSE_TICKS));
                println!("board: vm{index} paused for {} ms after {after} counter reads", PAUSE_TICKS / 10_000);
            }
            if guest.shell_at.is_none() && guest.vm.devices.inner.uart.backend().steps_played() >= 2 {
                guest.shell_at = Some((hw::mtime(), guest.engine.stats.entries));
            }
        }
        let waiting = guests.iter().any(|guest| match guest.expect {
            Expect::PowerOff => guest.outcome.is_none(),
            Expect::Script => guest.outcome.is_none() && !guest.vm.devices.inner.uart.backend().script_done(),
            Expect::RunForever => false,
        });
        if hw::mtime().saturating_sub(started) > GIVE_UP_TICKS {
            println!("board: giving up after {} s", GIVE_UP_TICKS / 10_000_000);
            break;
        }
        if !ran || !waiting {
            break;
        }
        if all_idle {
            hw::wait_for_timer(IDLE_DEADLINE.load(Ordering::Relaxed));
        }
    }
}

/// Where a runner may place a Linux boot block (with `-m 1G` and QEMU's generic loader): a header (magic, kernel
/// size, initrd size, command line) at this address, the kernel (a RISC-V `Image`) at +4 KiB and the initramfs
/// right after it (4 KiB aligned).
const LINUX_BLOCK: u64 = 0xa000_0000;
const LINUX_MAGIC: u64 = u64::from_le_bytes(*b"TRPZLNX1");
/// The Linux VM's RAM: 256 MiB of host memory above the block, outside the board's image.
const LINUX_RAM: (u64, u64) = (0xa800_0000, 0xb800_0000);
/// Harts of the Linux VM. One: with two (both on the board's one real hart) Linux boots and answers in most runs,
/// but one run in five hit a soft lockup in `stop_machine` (hart 0 waiting for hart 1), not yet understood.
const LINUX_HARTS: u64 = 1;
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

/// A Linux VM: the kernel in virtual S-mode on the VMM's own SBI, with its initramfs and command line.
fn linux_guest(
    index: usize,
    tag: &'static str,
    kernel: &[u8],
    initrd: &[u8],
    bootargs: &'static str,
    console: &'static BoardConsole,
) -> Guest {
    // SAFETY: LINUX_RAM lies in QEMU's RAM (1 GiB), above the board's image and the boot block, and only this VM
    // uses it.
    let bytes =
        unsafe { core::slice::from_raw_parts_mut(LINUX_RAM.0 as *mut u8, (LINUX_RAM.1 - LINUX_RAM.0) as usize) };
    bytes.fill(0);
    let size = bytes.len() as u64;
    if let Ok(mut mux) = console.try_borrow_mut() {
        mux.set_tag(index, tag);
    }
    let mut guest = build_guest(index, "linux", console, bytes, LINUX_HARTS, LINUX_SCRIPT, Expect::Script);
    let ram = &mut guest.vm.ram;
    let entry = RAM_BASE + KERNEL_OFFSET;
    load_raw(kernel, entry, ram).unwrap_or_else(|e| panic!("linux: cannot load the kernel: {e:?}"));
    let initrd_at = trapeze::vm::boot::initrd_address(ram, entry, initrd.len() as u64)
        .unwrap_or_else(|e| panic!("linux: initrd: {e:?}"));
    load_raw(initrd, initrd_at, ram).unwrap_or_else(|e| panic!("linux: cannot load the initrd: {e:?}"));
    let mut description = MachineDescription::qemu_virt(LINUX_HARTS as u32, size);
    description.bootargs = Some(bootargs);
    description.initrd = Some((initrd_at, initrd_at + initrd.len() as u64));
    let mut blob = vec![0u8; 16 << 10];
    let length = write_dtb(&description, &mut blob).unwrap_or_else(|e| panic!("linux: devicetree: {e:?}"));
    let end = initrd_at + initrd.len() as u64;
    let (devicetree, _) = place_devicetree(ram, &blob[..length], None, end)
        .unwrap_or_else(|e| panic!("linux: cannot place the devicetree: {e:?}"));
    guest.vm.boot_with_builtin_sbi(0, entry, devicetree);
    guest
}

/// U-Boot's virtual disk: the first MBR partition of the physical virtio-blk disk, when the runner gave the
/// machine one (`DISK_FILE`).
fn uboot_disk() -> Option<disk::Partition> {
    let Some(mut physical) = disk::PhysicalDisk::probe() else {
        println!("board: no physical disk: U-Boot runs without one");
        return None;
    };
    let (base, capacity) = (physical.base, physical.capacity());
    let Some((first, count)) = physical.first_partition() else {
        println!(
            "board: the disk at {base:#x} ({capacity} sectors) has no usable MBR partition: U-Boot runs without one"
        );
        return None;
    };
    println!(
        "board: disk at {base:#x}: {capacity} sectors; u-boot gets partition 1, sectors {first}..{}",
        first + count
    );
    defmt::info!("disk: {=u64} sectors, partition {=u64}+{=u64}", capacity, first, count);
    let physical: &'static RefCell<disk::PhysicalDisk> = Box::leak(Box::new(RefCell::new(physical)));
    disk::mbr_partition(physical, first, count)
}

#[riscv_rt::entry]
fn main() -> ! {
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

    if let Some((kernel, initrd, bootargs)) = linux_block() {
        println!("board: a Linux boot block is present: booting Linux alone, once in each mode ({bootargs})");
        let modes = [
            (Mode::Trapping, "[linux:trapping] "),
            (Mode::Patching, "[linux:patching] "),
            (Mode::PatchingCached, "[linux:cached] "),
            (Mode::TrappingCached, "[linux:trapping-cached] "),
        ];
        let mut failures = 0;
        for (index, (mode, prefix)) in modes.into_iter().enumerate() {
            // One at a time: each boot reuses the Linux RAM, so the previous guest is gone before the next.
            let mut guest = linux_guest(index, prefix, kernel, initrd, bootargs, console);
            guest.mode = mode;
            let (mut guest, ticks) = time_alone(guest);
            guest.vm.devices.inner.uart.backend_mut().flush();
            hw::console_write("\n");
            let played = guest.vm.devices.inner.uart.backend().script_done();
            let stats = guest.engine.stats;
            println!(
                "linux ({mode:?}): script played: {played}; {} guest entries, {} shadow fills, {} emulated, {} exits, \
                 {} quanta",
                stats.entries, stats.fills, stats.emulated, stats.exits, stats.quanta
            );
            if let Some((at, entries)) = guest.shell_at {
                let wall = at.saturating_sub(guest.started_at.unwrap_or(at)) / 10;
                println!("bench: linux boot to its shell, {mode:?}: {wall} us wall, {entries} world switches");
            }
            println!("bench: linux boot and script, {}", mode_figures(&guest, ticks));
            failures += u32::from(!played);
        }
        hw::exit(failures)
    }
    use Expect::{PowerOff, RunForever};
    let mut guests: Vec<Guest> = vec![
        make_guest(0, 0, "hello", console, Image::Elf(HELLO), PowerOff),
        make_guest(1, 1, "hello", console, Image::Elf(HELLO), PowerOff),
        make_guest(2, 2, "sv39", console, Image::Elf(SV39), PowerOff),
        make_guest(3, 3, "interrupts", console, Image::Elf(INTERRUPTS), PowerOff),
        make_guest(4, 4, "idle", console, Image::Elf(IDLE), PowerOff),
        make_guest(5, 5, "amo", console, Image::Elf(AMO), PowerOff),
        make_guest(6, 6, "fpu", console, Image::Elf(FPU), PowerOff),
        make_guest(7, 7, "arith", console, Image::Elf(ARITH), PowerOff),
        make_guest(8, 8, "hostile", console, Image::Raw(hostile_image()), RunForever),
        uboot_guest(9, uboot_disk(), console),
        make_guest(10, 9, "contain", console, Image::Elf(CONTAIN), PowerOff),
        counters_guest(11, 10, console, false),
        counters_guest(17, 16, console, true),
        // QEMU `virt`'s goldfish RTC, given whole to vm19; vm20 must not reach it.
        rtc_guest(19, 18, console, true),
        rtc_guest(20, 19, console, false),
    ];

    schedule(&mut guests);
    // A scripted VM is stopped as soon as its script has played, maybe in the middle of a line.
    for guest in guests.iter_mut().filter(|guest| guest.expect == Expect::Script) {
        guest.vm.devices.inner.uart.backend_mut().flush();
        hw::console_write("\n");
    }

    let mut failures = 0;
    for guest in guests.iter() {
        let index = guest.index;
        let stats = guest.engine.stats;
        let code = match guest.outcome {
            Some(RunOutcome::PowerOff { code }) => code,
            _ => u32::MAX,
        };
        let passed = match guest.expect {
            Expect::PowerOff => code == 0,
            // Contained: still running, and the real timer took the hart away from it again and again.
            Expect::RunForever => guest.outcome.is_none() && stats.quanta > 0,
            Expect::Script => guest.vm.devices.inner.uart.backend().script_done(),
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
        match (guest.outcome, guest.expect) {
            (Some(outcome), _) => println!("vm{index} ({}): {outcome:?}", guest.name),
            (None, Expect::Script) => println!("vm{index} ({}): script played: {passed}", guest.name),
            (None, _) => {
                println!("vm{index} ({}): contained: still running, preempted {} times", guest.name, stats.quanta)
            }
        }
        println!(
            "    {} guest entries, {} shadow fills, {} emulated, {} exits, {} quanta, {} walled",
            stats.entries, stats.fills, stats.emulated, stats.exits, stats.quanta, stats.walled
        );
        if let Some((page, _)) = guest.vm.devices.passthrough {
            let served = guest.vm.devices.passthrough_served;
            println!("    passthrough page {page:#x}: {served} accesses served by the VMM");
        }
        if let Some(patch) = guest.engine.patch_stats() {
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
        if let Some(sites) = guest.engine.site_stats() {
            println!(
                "    trap sites cached: {} excursions served {} exits over {} emulated instructions ({} wasted)",
                sites.excursions, sites.exits_in_excursions, sites.emulated, sites.wasted
            );
        }
    }
    println!("board: {} of {} VMs passed", guests.len() - failures, guests.len());
    let bench_failures = benchmarks(console);
    if bench_failures > 0 {
        println!("board: {bench_failures} benchmark guest(s) failed");
    }
    let failures = failures + bench_failures;
    hw::exit(failures as u32)
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
