//! `trapeze run -smp N` with a host thread per guest hart (QEMU's `-accel tcg,thread=multi`, its default):
//! guest RAM shared between the threads ([`SharedRam`]), the `virt` devices behind one lock
//! ([`SharedDevices`]), each hart in a `Vm` of its own on its own engine. See [`trapeze::vm::parallel`] for
//! what crosses threads and how.
//!
//! The single-thread mode (`-accel tcg,thread=single`) stays for what needs the whole machine in one place:
//! instruction-counted time (repeatable runs), the debugger, snapshots, tracing and lockstep. The VMM's own
//! SBI (`--bios builtin`) runs with a thread per hart too: its harts share one [`SbiShared`].

use std::alloc::{self, Layout};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use trapeze::dev::htif::Htif;
use trapeze::dev::{MachineRequest, MmioError};
use trapeze::exec::interp::Interpreter;
use trapeze::exec::Engine;
use trapeze::hart::Hart;
use trapeze::mem::{code_watch_words, Ram, RemoteFence, SharedRam, RAM_BASE};
use trapeze::vm::parallel::{HartWaker, RelaxStrategy, SharedDevices};
use trapeze::vm::sbi::SbiShared;
use trapeze::vm::virt::VirtDevices;
use trapeze::vm::{Clock, Devices, HartLines, RunOutcome, Vm, MAX_HARTS, SLICE, TIMEBASE_HZ};

use crate::console::{self, Stdio};
use crate::disk::FileDisk;
use crate::{place_images, BootPlan, CodeCacheSize, EngineChoice, HostedThreaded, RunArgs, TinyThreaded};

/// How the harts of `-smp N` map onto host threads (QEMU's `-accel tcg,thread=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadMode {
    /// A thread per hart when the run allows it (QEMU's default), else one.
    #[default]
    Auto,
    /// Every hart on one thread, round-robin: with `--icount`, runs repeat exactly.
    Single,
    /// A thread per hart; refused when the run needs the whole machine on one thread.
    Multi,
}

impl ThreadMode {
    /// Parses QEMU's `-accel` value: `tcg`, `tcg,thread=single` or `tcg,thread=multi`.
    pub fn parse_accel(text: &str) -> Result<ThreadMode, String> {
        let mut parts = text.split(',');
        if parts.next() != Some("tcg") {
            return Err(format!("`{text}`: the only accelerator is `tcg` (as `tcg,thread=single|multi`)"));
        }
        let mut mode = ThreadMode::Auto;
        for part in parts {
            mode = match part {
                "thread=single" => ThreadMode::Single,
                "thread=multi" => ThreadMode::Multi,
                _ => return Err(format!("`{part}`: unknown tcg option (thread=single or thread=multi)")),
            };
        }
        Ok(mode)
    }
}

/// Whether `args` runs every hart on a thread of its own; an error when `-accel tcg,thread=multi` was asked
/// for a run that needs one thread.
pub fn wanted(args: &RunArgs, _plan: &BootPlan) -> Result<bool, String> {
    let obstacle = if args.icount.is_some() {
        Some("--icount (instruction-counted time is repeatable only on one thread)")
    } else if args.gdb.is_some() || args.gdb_default {
        Some("the debugger")
    } else if args.log.is_some() || args.trace.is_some() {
        Some("-d and --trace")
    } else if args.savevm.is_some() || args.loadvm.is_some() {
        Some("snapshots")
    } else if args.lockstep {
        Some("--lockstep")
    } else {
        None
    };
    match (args.accel, obstacle) {
        (ThreadMode::Single, _) => Ok(false),
        (ThreadMode::Multi, Some(obstacle)) => {
            Err(format!("-accel tcg,thread=multi cannot be combined with {obstacle}"))
        }
        (ThreadMode::Multi, None) => Ok(true),
        (ThreadMode::Auto, obstacle) => Ok(args.smp > 1 && obstacle.is_none()),
    }
}

/// Zeroed host memory for guest RAM, seen through atomics of every access width.
struct SharedMemory {
    words: *mut u64,
    layout: Layout,
}

// SAFETY: the memory is only ever reached through atomics (the views below), which are `Sync`.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    fn zeroed(bytes: u64) -> Result<Self, String> {
        let words = usize::try_from(bytes / 8).map_err(|_| "guest RAM does not fit this host".to_string())?;
        if !bytes.is_multiple_of(8) || words == 0 {
            return Err(format!("{bytes} bytes of guest RAM: with a thread per hart it must be a multiple of 8"));
        }
        let layout = Layout::array::<u64>(words).map_err(|_| "guest RAM does not fit this host".to_string())?;
        // SAFETY: the layout's size is not zero (checked above). Zeroed pages are mapped lazily by the host, so
        // a large RAM costs nothing until the guest touches it.
        let words = unsafe { alloc::alloc_zeroed(layout) }.cast::<u64>();
        if words.is_null() {
            return Err(format!("cannot allocate {bytes} bytes of guest RAM"));
        }
        Ok(Self { words, layout })
    }

    /// The four views [`SharedRam::new`] takes.
    #[allow(clippy::type_complexity)]
    fn views(&self) -> (&[AtomicU8], &[AtomicU16], &[AtomicU32], &[AtomicU64]) {
        let bytes = self.layout.size();
        // SAFETY: `words` points to `bytes` bytes, allocated with u64 alignment (enough for every view) and
        // zeroed, valid until `self` is dropped, which the borrow of `self` outlives. Each atomic type has the
        // size and bit validity of its integer. All access goes through these atomics, never plain references;
        // accesses of different widths to the same bytes are what guest programs do and what the host's
        // memory order defines (as in QEMU).
        unsafe {
            (
                std::slice::from_raw_parts(self.words.cast::<AtomicU8>(), bytes),
                std::slice::from_raw_parts(self.words.cast::<AtomicU16>(), bytes / 2),
                std::slice::from_raw_parts(self.words.cast::<AtomicU32>(), bytes / 4),
                std::slice::from_raw_parts(self.words.cast::<AtomicU64>(), bytes / 8),
            )
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { alloc::dealloc(self.words.cast::<u8>(), self.layout) }
    }
}

/// The `virt` devices of a run with a thread per hart: a console on stdio and at most a disk file, nothing else.
struct ThreadDevices(VirtDevices<'static, Stdio, FileDisk>);

// SAFETY: `VirtDevices` is not `Send` only because its map of extra devices and its printer may hold borrowed
// `dyn` devices that need not be; `ThreadDevices::new` builds it with neither (`trapeze run` attaches no extra
// device and no printer), and its console and disk backends are `Send`.
unsafe impl Send for ThreadDevices {}

impl ThreadDevices {
    fn new(console: Stdio, disk: Option<FileDisk>) -> Self {
        let mut devices = VirtDevices::new(console);
        if let Some(disk) = disk {
            devices.attach_disk(disk);
        }
        Self(devices)
    }
}

impl Devices for ThreadDevices {
    fn read(&mut self, addr: u64, size: u8, ram: &mut Ram) -> Result<u64, MmioError> {
        self.0.read(addr, size, ram)
    }
    fn write(&mut self, addr: u64, size: u8, value: u64, ram: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
        self.0.write(addr, size, value, ram)
    }
    fn update(&mut self, now: u64, harts: &mut [Hart], ram: &mut Ram) {
        self.0.update(now, harts, ram)
    }
    fn update_time(&mut self, now: u64, harts: &mut [Hart]) {
        self.0.update_time(now, harts)
    }
    fn hart_lines(&self, index: usize) -> Option<HartLines> {
        self.0.hart_lines(index)
    }
    fn mtime(&self) -> u64 {
        self.0.mtime()
    }
    fn ticks_until_deadline(&self) -> Option<u64> {
        self.0.ticks_until_deadline()
    }
    fn input_pending(&self) -> bool {
        self.0.input_pending()
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.0.console_write(bytes)
    }
    fn console_read(&mut self) -> Option<u8> {
        self.0.console_read()
    }
}

/// The asymmetric fence that closes the shared code watch's store-buffer window (`trapeze::mem::shared`): Linux's
/// `membarrier`, registered once per process, deferred to the guest's `fence.i`. Where it is missing, the window
/// stays open (a code write racing the first translation of its granule within nanoseconds may be missed), as
/// the module documentation says.
struct Membarrier;

#[cfg(target_os = "linux")]
impl Membarrier {
    /// The fence, if the kernel has private expedited `membarrier` and lets this process use it.
    fn register() -> Option<&'static Membarrier> {
        // SAFETY: `membarrier` takes two integer arguments and touches no memory of ours.
        let registered =
            unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) };
        (registered == 0).then_some(&Membarrier)
    }
}

#[cfg(not(target_os = "linux"))]
impl Membarrier {
    fn register() -> Option<&'static Membarrier> {
        None
    }
}

impl RemoteFence for Membarrier {
    fn fence_other_threads(&self) {
        // SAFETY: as in `register`; the process registered for this command there.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
        }
    }

    /// Hart and device threads write guest RAM only through `SharedRam`, so the fence may wait for a `fence.i`:
    /// one per newly watched granule cost a two-hart Linux boot 15% of its time.
    fn may_defer(&self) -> bool {
        true
    }
}

/// Lets a spinning thread give up its time slice: with more hart threads than host cores, a lock holder may be
/// waiting for a core.
struct YieldToHolder;

impl RelaxStrategy for YieldToHolder {
    fn relax() {
        std::thread::yield_now();
    }
}

/// Wakes a hart's thread parked in [`HartClock::idle`]: a flag per hart, so that a wake before the park is
/// not lost, and the console's input condition, so that host input wakes every hart too.
struct Wakeups {
    pending: [AtomicBool; MAX_HARTS],
}

impl HartWaker for Wakeups {
    fn wake(&self, index: usize) {
        if let Some(flag) = self.pending.get(index) {
            flag.store(true, Ordering::SeqCst);
        }
        console::wake_idle();
    }
}

impl Wakeups {
    fn wake_all(&self) {
        self.pending.iter().for_each(|flag| flag.store(true, Ordering::SeqCst));
        console::wake_idle();
    }
}

/// One hart's clock: host time since the machine started, shared by every hart, and parking in `wfi`.
struct HartClock<'w> {
    start: Instant,
    index: usize,
    wakeups: &'w Wakeups,
}

/// Longest single park, so that a hart thread looks at the machine's end now and then.
const MAX_PARK: Duration = Duration::from_millis(100);

impl Clock for HartClock<'_> {
    fn now(&mut self) -> u64 {
        let elapsed = self.start.elapsed();
        elapsed.as_secs() * TIMEBASE_HZ
            + u64::from(elapsed.subsec_nanos()) / (1_000_000_000 / TIMEBASE_HZ as u32) as u64
    }

    fn idle(&mut self, ticks: Option<u64>) {
        let wait = ticks.map_or(MAX_PARK, |t| Duration::from_nanos(t.saturating_mul(1_000_000_000 / TIMEBASE_HZ)));
        let flag = &self.wakeups.pending[self.index];
        console::park(wait.min(MAX_PARK), || flag.swap(false, Ordering::SeqCst));
    }
}

/// What the hart threads share besides RAM and devices: the end of the run.
struct Ending {
    stop: AtomicBool,
    outcome: Mutex<Option<RunOutcome>>,
    steps: AtomicU64,
}

impl Ending {
    /// Records the run's outcome (the first one wins) and stops every hart.
    fn end(&self, outcome: RunOutcome, wakeups: &Wakeups) {
        if let Ok(mut first) = self.outcome.lock() {
            first.get_or_insert(outcome);
        }
        self.stop.store(true, Ordering::SeqCst);
        wakeups.wake_all();
    }
}

/// Stack of a hart's thread.
const HART_STACK: usize = 8 << 20;

/// Instructions each hart runs between two looks at the run's end.
const TURN: u64 = 4 * SLICE;

/// Runs hart `vm` on `engine` until the machine ends or another hart ends it.
fn run_hart<D: Devices>(
    vm: &mut Vm<'_, D>,
    engine: &mut impl Engine,
    ending: &Ending,
    args: &RunArgs,
    wakeups: &Wakeups,
) {
    while !ending.stop.load(Ordering::Relaxed) {
        let (before, yields) = (vm.steps, vm.yields);
        let outcome = vm.run_slice(engine, TURN);
        if vm.yields != yields {
            // The hart is spinning (a `pause`, or no progress): with more hart threads than free host cores, the
            // hart it waits for may be waiting for this core.
            std::thread::yield_now();
        }
        let total = ending.steps.fetch_add(vm.steps - before, Ordering::Relaxed) + (vm.steps - before);
        if let Some(outcome) = outcome {
            return ending.end(outcome, wakeups);
        }
        if args.max_insns.is_some_and(|limit| total >= limit) {
            return ending.end(RunOutcome::InstructionLimit, wakeups);
        }
    }
}

/// Runs hart `index` of the machine on the engine `args` names, on this thread.
#[allow(clippy::too_many_arguments)]
fn hart_thread<D: Devices>(
    args: &RunArgs,
    placed: &crate::Placed,
    ram: &SharedRam<'_>,
    devices: &SharedDevices<'_, D, YieldToHolder>,
    htif: &Mutex<Option<Htif>>,
    sbi: &SbiShared<'_>,
    index: usize,
    clock: &mut HartClock<'_>,
    ending: &Ending,
) -> Result<(), String> {
    let wakeups = clock.wakeups;
    let mut htif_console = Stdio::new();
    // The VMM's SBI, if the run has it, reaches the other harts through `sbi` (unused otherwise).
    let builder = placed.builder(args, Ram::shared(ram), devices.hart(index), clock).only_hart(index).shared_sbi(sbi);
    let mut vm = builder.build().map_err(|e| format!("building hart {index}: {e:?}"))?;
    // HTIF is polled by the one hart that takes it, so that each command is served once.
    if let Some(htif) = htif.lock().ok().and_then(|mut htif| htif.take()) {
        vm.attach_htif(htif, &mut htif_console);
    }
    match args.engine {
        EngineChoice::Interp => run_hart(&mut vm, &mut Interpreter, ending, args, wakeups),
        EngineChoice::Threaded if args.code_cache == CodeCacheSize::Tiny => {
            run_hart(&mut vm, &mut TinyThreaded::new(), ending, args, wakeups)
        }
        EngineChoice::Threaded => run_hart(&mut vm, &mut *Box::new(HostedThreaded::new()), ending, args, wakeups),
        #[cfg(target_arch = "x86_64")]
        EngineChoice::Dbt => {
            let mut dbt = crate::jit::served_dbt()?;
            // A turn's end here is only where the thread looks at the run's end and at spinning, not a count the
            // guest sees: the block it falls in runs whole rather than its head and tail on the cold tier (a
            // two-hart Linux boot cut 125 000 blocks so).
            dbt.set_budget_overrun(true);
            run_hart(&mut vm, &mut *dbt, ending, args, wakeups)
        }
    }
    Ok(())
}

/// Boots the machine `plan` describes with a thread per hart and runs it to its end (after a reset the caller
/// boots it again).
pub fn run(args: &RunArgs, plan: &BootPlan) -> Result<RunOutcome, String> {
    let harts = usize::from(args.smp);
    let memory = SharedMemory::zeroed(args.memory)?;
    let watch: Vec<AtomicU64> = (0..code_watch_words(args.memory)).map(|_| AtomicU64::new(0)).collect();
    let (b8, b16, b32, b64) = memory.views();
    let mut ram = SharedRam::new(RAM_BASE, b8, b16, b32, b64, &watch).ok_or("guest RAM views disagree")?;
    if let Some(fence) = Membarrier::register() {
        ram = ram.with_remote_fence(fence);
    }
    let disk = args.disk.as_deref().map(FileDisk::open).transpose()?;
    let devices = ThreadDevices::new(Stdio::new(), disk);
    let mut placed = place_images(args, plan, &mut Ram::shared(&ram), &devices.0)?;
    let htif = Mutex::new(placed.htif.take());
    let wakeups = Wakeups { pending: std::array::from_fn(|_| AtomicBool::new(false)) };
    let devices = SharedDevices::<_, YieldToHolder>::new(devices, harts, &wakeups)
        .map_err(|e| format!("sharing the devices between hart threads: {e:?}"))?;
    let ending = Ending { stop: AtomicBool::new(false), outcome: Mutex::new(None), steps: AtomicU64::new(0) };
    let sbi = SbiShared::new(harts, 0, &wakeups, std::thread::yield_now);
    let start = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..harts)
            .map(|index| {
                let (placed, ram, devices, htif, sbi) = (&placed, &ram, &devices, &htif, &sbi);
                let (ending, wakeups) = (&ending, &wakeups);
                std::thread::Builder::new()
                    .name(format!("hart {index}"))
                    // As much stack as the main thread has: a `Vm` and its soft TLBs live on it.
                    .stack_size(HART_STACK)
                    .spawn_scoped(scope, move || {
                        let mut clock = HartClock { start, index, wakeups };
                        let result = hart_thread(args, placed, ram, devices, htif, sbi, index, &mut clock, ending);
                        if result.is_err() {
                            ending.end(RunOutcome::PowerOff { code: 1 }, wakeups);
                        }
                        // No other hart's SBI call waits for this one any more.
                        sbi.halt();
                        result
                    })
                    .map_err(|e| {
                        // The harts already started must not wait for this one forever.
                        ending.end(RunOutcome::PowerOff { code: 1 }, wakeups);
                        format!("cannot start the thread of hart {index}: {e}")
                    })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|thread| match thread {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err("a hart thread panicked".into())).err(),
                Err(e) => Some(e),
            })
            .collect()
    });
    if let Some(failure) = failures.into_iter().next() {
        return Err(failure);
    }
    report_limit(ending.steps.load(Ordering::Relaxed), args);
    let outcome = ending.outcome.lock().ok().and_then(|outcome| *outcome);
    outcome.ok_or_else(|| "the hart threads stopped without an outcome".into())
}

/// The instruction count, for a run that ended at its limit.
fn report_limit(steps: u64, args: &RunArgs) {
    if args.max_insns.is_some_and(|limit| steps >= limit) {
        eprintln!("trapeze: instruction limit reached after {steps} instructions (every hart)");
    }
}
