//! `trapeze bench`: runs the benchmark guests (`guests/bench-*`) on every engine and, when it is installed, on
//! `qemu-system-riscv64`, and prints wall time, instructions executed and guest MIPS side by side.
//!
//! Method: each workload is an ELF built from `guests/bench-*` and embedded in this binary. An engine run builds a
//! fresh one-hart `virt` machine (128 MiB, as QEMU's default), loads the ELF and times `Vm::run` alone with the
//! host's monotonic clock; the instruction count is `Vm::steps`. A QEMU run writes the same ELF to a temporary
//! file and times the whole `qemu-system-riscv64 -M virt -bios none -nographic -kernel ELF` process, start-up and
//! exit included (nothing is subtracted). With `--iterations N`, every run is repeated N times and the fastest
//! counts. Every run must print the same `checksum` line (the workload's result), or the command fails.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use trapeze::cache::Eviction;
use trapeze::dev::SerialBackend;
use trapeze::exec::interp::Interpreter;
use trapeze::exec::threaded::Threaded;
use trapeze::exec::Engine;
use trapeze::hart::{Hart, HartConfig};
use trapeze::mem::{code_watch_words, Ram, RAM_BASE};
use trapeze::vm::loader::load_elf;
use trapeze::vm::virt::{NoDisk, VirtDevices};
use trapeze::vm::{RunOutcome, Vm};

use crate::console::HostClock;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// An engine to measure (repeat for several); every engine by default. Engines: interp, threaded,
    /// tiny-flush, tiny-fifo, small-flush, small-fifo, dbt (x86-64 hosts).
    #[arg(long = "engine", value_name = "ENGINE")]
    engines: Vec<String>,
    /// A workload to run (repeat for several); all by default. Workloads: int, mem, branch, outside.
    #[arg(long = "workload", value_name = "WORKLOAD")]
    workloads: Vec<String>,
    /// Runs of each workload on each engine and on QEMU; the fastest one counts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// The QEMU to compare with; by default `qemu-system-riscv64` from PATH, skipped if it is not there.
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Do not compare with QEMU.
    #[arg(long, conflicts_with = "qemu")]
    no_qemu: bool,
    /// Run the small variants of the workloads (a quick check of the command: the figures mean little).
    #[arg(long)]
    small: bool,
    /// Also time a real boot (repeat for several): `uboot` (OpenSBI + U-Boot to its autoboot prompt) or `linux`
    /// (OpenSBI + Debian's kernel to its busybox shell), on each engine and on QEMU. With `--boot` and no
    /// `--workload`, only the boots run.
    #[arg(long = "boot", value_name = "BOOT")]
    boots: Vec<String>,
    /// The Linux kernel `Image` for `--boot linux` (`tools/fetch-debian-riscv64.sh` fetches Debian's).
    #[arg(long, value_name = "IMAGE")]
    linux_kernel: Option<PathBuf>,
    /// The static riscv64 busybox of the initramfs `--boot linux` builds.
    #[arg(long, value_name = "BINARY")]
    busybox: Option<PathBuf>,
    /// Also time how a guest of N harts scales with a host thread per hart (`hash-harts`: N harts doing N
    /// times one hart's work, on one thread and on N), on the engines with a code cache.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "2", value_parser = clap::value_parser!(u32).range(2..=8))]
    scaling: Option<u32>,
    /// Harts of the booted machines (`-smp`), the same on every engine and on QEMU.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    boot_smp: u32,
}

/// One benchmark guest, at full and at small scale.
struct Workload {
    name: &'static str,
    full: &'static [u8],
    small: &'static [u8],
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "int",
        full: include_bytes!(env!("TRAPEZE_GUEST_BENCH_INT")),
        small: include_bytes!(env!("TRAPEZE_GUEST_BENCH_INT_SMALL")),
    },
    Workload {
        name: "mem",
        full: include_bytes!(env!("TRAPEZE_GUEST_BENCH_MEM")),
        small: include_bytes!(env!("TRAPEZE_GUEST_BENCH_MEM_SMALL")),
    },
    Workload {
        name: "branch",
        full: include_bytes!(env!("TRAPEZE_GUEST_BENCH_BRANCH")),
        small: include_bytes!(env!("TRAPEZE_GUEST_BENCH_BRANCH_SMALL")),
    },
    // Kernels from crates written outside this project (sha2, blake3, crc32fast, miniz_oxide, lz4_flex, core's
    // sorts): see `guests/bench-outside`.
    Workload {
        name: "outside",
        full: include_bytes!(env!("TRAPEZE_GUEST_BENCH_OUTSIDE")),
        small: include_bytes!(env!("TRAPEZE_GUEST_BENCH_OUTSIDE_SMALL")),
    },
];

/// An engine the benchmark measures: its name and how to run an image on it.
struct EngineEntry {
    name: &'static str,
    run: fn(&[u8]) -> Result<Measurement, String>,
}

/// Every engine, the reference first (speedups are relative to it). Another engine is one more entry.
const ENGINES: &[EngineEntry] = &[
    EngineEntry { name: "interp", run: |image| measure(image, &mut Interpreter) },
    EngineEntry { name: "threaded", run: measure_threaded::<32768, 2048, 4096, 0> },
    // Code caches too small for the working sets, under each eviction policy: what eviction costs, and which
    // policy pays less. `tiny` (16 blocks) is the size the lockstep tests use; `small` (64 blocks) holds a
    // good part of a workload's hot loop.
    EngineEntry { name: "tiny-flush", run: measure_threaded::<256, 16, 32, 1> },
    EngineEntry { name: "tiny-fifo", run: measure_threaded::<256, 16, 32, FIFO_REGIONS> },
    EngineEntry { name: "small-flush", run: measure_threaded::<1024, 64, 128, 1> },
    EngineEntry { name: "small-fifo", run: measure_threaded::<1024, 64, 128, FIFO_REGIONS> },
    #[cfg(target_arch = "x86_64")]
    EngineEntry { name: "dbt", run: measure_dbt },
];

/// Runs `image` on a fresh translator, noting its figures.
#[cfg(target_arch = "x86_64")]
fn measure_dbt(image: &[u8]) -> Result<Measurement, String> {
    // A translation worker of its own, as a `trapeze run` process has: its memo starts empty, so no run reuses
    // another's translations.
    let worker = crate::jit::Translators::start()?;
    let mut engine = worker.dbt()?;
    let mut run = measure(image, &mut *engine)?;
    let served = worker.stats();
    let work = engine.stats();
    let cache = engine.cache().stats();
    let per_block = run.instructions.unwrap_or(0) as f64 / work.blocks_entered.max(1) as f64;
    // Host instructions per guest instruction: static (all emitted, and the blocks' straight-line paths), and
    // dynamic from a second, untimed run whose blocks count their entries (straight-line path x entries: an
    // upper bound, as a block left early by a taken branch counts whole).
    let translated = work.instructions_translated.max(1) as f64;
    let counting_worker = crate::jit::Translators::start()?;
    let mut counting = counting_worker.dbt()?;
    counting.set_counting(true);
    let counted = measure(image, &mut *counting)?;
    let dynamic = counting.stats().body_instructions_run as f64
        / (counted
            .instructions
            .unwrap_or(0)
            .saturating_sub(counting.stats().stepped + counting.stats().cold_instructions))
        .max(1) as f64;
    run.note = Some(format!(
        "code cache {} MiB: {} blocks translated ({} guest instructions, {:.1} host bytes each, {} writes of code \
         memory), {} evictions, {} pages invalidated; {} blocks entered ({per_block:.1} instructions each), {} instructions on the cold tier, {} \
         stepped; host instructions per translated guest instruction: {:.1} emitted, {:.1} straight-line, \
         {dynamic:.1} run (at most); {} runs, {} dispatches, {} cold runs ({} from translated code, {} budget tails), \
         {} unlinked-slot and {} other exits to translated blocks; worker: {} jobs submitted ({} refused), {} translated \
         ({:.1} ms), {} from its memo, {} stale, {} failed; counting run: ring {}/{} hits, target cache {}/{} hits",
        crate::jit::CODE_BYTES >> 20,
        work.blocks_translated,
        work.instructions_translated,
        work.code_bytes as f64 / work.instructions_translated.max(1) as f64,
        work.code_writes,
        cache.evictions,
        work.pages_invalidated,
        work.blocks_entered,
        work.cold_instructions,
        work.stepped,
        work.host_instructions as f64 / translated,
        work.body_instructions as f64 / translated,
        work.runs,
        work.dispatches,
        work.cold_runs,
        work.cold_from_code,
        work.cold_tails,
        work.slot_misses,
        work.other_misses,
        work.jobs_submitted,
        work.jobs_refused,
        served.translated,
        served.busy_ns as f64 / 1e6,
        served.memo_hits,
        work.translations_stale,
        work.translations_failed,
        counting.stats().ring_hits,
        counting.stats().ring_hits + counting.stats().ring_misses,
        counting.stats().probe_hits,
        counting.stats().probes,
    ));
    Ok(run)
}

/// Regions of the FIFO caches measured (4: a quarter of the cache goes at a time).
const FIFO_REGIONS: u32 = 4;

/// Runs `image` on a fresh threaded engine with the given code cache, noting the cache's figures. `REGIONS`
/// picks the eviction policy: 0 the engine's default, 1 flush-all, more FIFO over that many regions.
fn measure_threaded<const OPS: usize, const BLOCKS: usize, const MAP: usize, const REGIONS: u32>(
    image: &[u8],
) -> Result<Measurement, String> {
    let mut engine = Box::new(Threaded::<OPS, BLOCKS, MAP>::new());
    match REGIONS {
        0 => {}
        1 => engine.cache_mut().set_eviction(Eviction::FlushAll),
        regions => engine.cache_mut().set_eviction(Eviction::Fifo { regions }),
    }
    let mut run = measure(image, &mut *engine)?;
    let cache = engine.cache().stats();
    let work = engine.stats();
    let hit_rate = 100.0 * cache.hits as f64 / cache.lookups.max(1) as f64;
    let per_block = run.instructions.unwrap_or(0) as f64 / work.blocks_entered.max(1) as f64;
    let chained = 100.0 * work.blocks_chained as f64 / work.blocks_entered.max(1) as f64;
    run.note = Some(format!(
        "code cache {} KiB, {}: {hit_rate:.2}% hits of {} lookups, {} blocks built, {} flushes, {} evictions, {} \
         pages invalidated; \
         {} blocks entered ({per_block:.1} instructions each), {chained:.1}% through a chained exit",
        core::mem::size_of::<Threaded<OPS, BLOCKS, MAP>>() / 1024,
        match engine.cache().eviction() {
            Eviction::FlushAll => "flush-all".to_string(),
            Eviction::Fifo { regions } => format!("FIFO of {regions} regions"),
        },
        cache.lookups,
        work.blocks_built,
        cache.flushes,
        cache.evictions,
        work.pages_invalidated,
        work.blocks_entered,
    ));
    Ok(run)
}

/// Guest RAM of every run (QEMU's default for `virt`).
const RAM_SIZE: usize = 128 << 20;
/// Bound on a run's instructions, so a wedged guest cannot hang the benchmark.
const INSTRUCTION_LIMIT: u64 = 20_000_000_000;
/// Bound on a QEMU run's wall time.
const QEMU_TIMEOUT: Duration = Duration::from_secs(600);

/// What one run measured.
struct Measurement {
    /// Instructions executed (`None` for QEMU, which does not say).
    instructions: Option<u64>,
    seconds: f64,
    /// The guest's console output.
    output: String,
    /// What else the engine reports (code-cache figures).
    note: Option<String>,
}

/// The guest console of a benchmark run: kept in memory.
#[derive(Default)]
struct Capture(Vec<u8>);

impl SerialBackend for Capture {
    fn write_byte(&mut self, byte: u8) {
        self.0.push(byte);
    }

    fn read_byte(&mut self) -> Option<u8> {
        None
    }
}

/// Boots `image` on a fresh machine and times `Vm::run` with `engine`.
fn measure<E: Engine>(image: &[u8], engine: &mut E) -> Result<Measurement, String> {
    let mut backing = vec![0u8; RAM_SIZE];
    let mut code_pages = vec![0u64; code_watch_words(RAM_SIZE as u64)];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let loaded = load_elf(image, &mut ram).map_err(|e| format!("loading the guest: {e}"))?;
    ram.attach_granular_code_watch(&mut code_pages);
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.reset(loaded.entry);
    let mut clock = HostClock::new();
    let mut vm = Vm::new([hart], ram, VirtDevices::<_, NoDisk>::new(Capture::default()), &mut clock)
        .map_err(|e| format!("building the machine: {e:?}"))?;
    let start = Instant::now();
    let outcome = vm.run(engine, Some(INSTRUCTION_LIMIT));
    let seconds = start.elapsed().as_secs_f64();
    let output = String::from_utf8_lossy(&vm.devices.uart.backend().0).into_owned();
    match outcome {
        RunOutcome::PowerOff { code: 0 } => {
            Ok(Measurement { instructions: Some(vm.steps), seconds, output, note: None })
        }
        outcome => {
            Err(format!("the guest ended with {outcome:?} after {} instructions; it printed:\n{output}", vm.steps))
        }
    }
}

/// Runs `elf` (a file) on QEMU and times the whole process.
fn measure_qemu(qemu: &Path, elf: &Path) -> Result<Measurement, String> {
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-M", "virt", "-bios", "none", "-nographic", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let readers = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    });
    // Polled so that a hung QEMU can be stopped; the polling adds at most a millisecond to the measurement.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > QEMU_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("QEMU did not finish within {QEMU_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(500)),
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let [output, errors] = readers.map(|reader| reader.join().unwrap_or_default());
    if !status.success() {
        return Err(format!("QEMU ended with {status}; it printed:\n{output}{errors}"));
    }
    Ok(Measurement { instructions: None, seconds, output, note: None })
}

/// QEMU's start-up and exit: the best of `iterations` whole-process runs of a raw `virt` program that powers the
/// machine off at its first instructions (0x5555 to the `sifive,test0` finisher at 0x10_0000).
fn measure_qemu_startup(qemu: &Path, directory: &Path, iterations: u32) -> Result<f64, String> {
    use trapeze::isa::{encode, Inst, OpImmKind, StoreWidth};
    let program = [
        Inst::Lui { rd: 5, imm: 0x10_0000 },
        Inst::Lui { rd: 6, imm: 0x5000 },
        Inst::OpImm { op: OpImmKind::Addi, rd: 6, rs1: 6, imm: 0x555 },
        Inst::Store { width: StoreWidth::W, rs1: 5, rs2: 6, offset: 0 },
        Inst::Jal { rd: 0, offset: 0 },
    ];
    let bytes: Vec<u8> = program.iter().flat_map(|inst| encode(inst).to_le_bytes()).collect();
    let path = directory.join(format!("trapeze-bench-{}-power-off.bin", std::process::id()));
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut best = f64::INFINITY;
    for _ in 0..iterations {
        match measure_qemu(qemu, &path) {
            Ok(run) => best = best.min(run.seconds),
            Err(message) => {
                let _ = std::fs::remove_file(&path);
                return Err(format!("QEMU's start-up: {message}"));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(best)
}

/// The `checksum` line of a guest's output.
fn checksum_line(output: &str) -> Option<&str> {
    output.lines().map(str::trim).find(|line| line.contains(": checksum "))
}

/// The best run of one workload on one engine.
struct Row {
    workload: usize,
    engine: usize,
    instructions: u64,
    seconds: f64,
}

/// Checks every run of a workload prints the same checksum line.
struct Checksums {
    lines: Vec<Option<String>>,
    mismatches: usize,
}

impl Checksums {
    fn check(&mut self, workload: usize, name: &str, runner: &str, output: &str) {
        let Some(line) = checksum_line(output) else {
            eprintln!("trapeze bench: {name} on {runner} printed no checksum line; it printed:\n{output}");
            self.mismatches += 1;
            return;
        };
        match &self.lines[workload] {
            None => self.lines[workload] = Some(line.to_string()),
            Some(first) if first == line => {}
            Some(first) => {
                eprintln!("trapeze bench: checksum mismatch for {name}: {runner} printed `{line}`, expected `{first}`");
                self.mismatches += 1;
            }
        }
    }
}

/// Picks the entries of `all` named in `wanted`, each once, in the order of `all` (all of them when `wanted` is
/// empty).
fn select<T>(all: &[T], name: impl Fn(&T) -> &str, wanted: &[String], what: &str) -> Result<Vec<usize>, String> {
    if wanted.is_empty() {
        return Ok((0..all.len()).collect());
    }
    let mut picked = wanted
        .iter()
        .map(|want| {
            all.iter().position(|entry| name(entry) == want).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(&name).collect();
                format!("unknown {what} `{want}` (known: {})", known.join(", "))
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    picked.sort_unstable();
    picked.dedup();
    Ok(picked)
}

fn mips(instructions: u64, seconds: f64) -> f64 {
    instructions as f64 / seconds / 1e6
}

/// Runs the benchmark and prints its tables.
pub fn run(args: &BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("trapeze bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether every checksum agreed.
fn bench(args: &BenchArgs) -> Result<bool, String> {
    let workloads = select(&WORKLOADS, |w| w.name, &args.workloads, "workload")?;
    let engines = select(ENGINES, |e| e.name, &args.engines, "engine")?;
    let image = |w: usize| if args.small { WORKLOADS[w].small } else { WORKLOADS[w].full };
    let qemu = find_qemu(args)?;
    if let Some(harts) = args.scaling {
        let names: Vec<&str> = engines.iter().map(|&e| ENGINES[e].name).collect();
        crate::bench_smp::run(&names, harts, args.iterations)?;
        if args.workloads.is_empty() && args.boots.is_empty() {
            return Ok(true);
        }
    }
    if !args.boots.is_empty() {
        let options = crate::bench_boot::BootOptions {
            targets: &args.boots,
            linux_kernel: args.linux_kernel.as_deref(),
            busybox: args.busybox.as_deref(),
            harts: args.boot_smp,
            iterations: args.iterations,
        };
        let names: Vec<&str> = engines.iter().map(|&e| ENGINES[e].name).collect();
        crate::bench_boot::run(&options, &names, qemu.as_ref())?;
        if args.workloads.is_empty() {
            return Ok(true);
        }
        println!();
    }
    let mut checksums = Checksums { lines: vec![None; WORKLOADS.len()], mismatches: 0 };

    println!(
        "trapeze bench: {} workload(s){}, best of {} run(s); wall time of Vm::run (loading excluded), instructions = \
         Vm::steps",
        workloads.len(),
        if args.small { " (small variants)" } else { "" },
        args.iterations
    );
    println!();
    println!("{:<10} {:<10} {:>14} {:>10} {:>12}", "workload", "engine", "instructions", "seconds", "guest MIPS");
    let mut rows = Vec::new();
    for &w in &workloads {
        let name = WORKLOADS[w].name;
        for &e in &engines {
            let mut best: Option<Measurement> = None;
            for _ in 0..args.iterations {
                let run = (ENGINES[e].run)(image(w)).map_err(|m| format!("{name} on {}: {m}", ENGINES[e].name))?;
                checksums.check(w, name, ENGINES[e].name, &run.output);
                if best.as_ref().is_none_or(|b| run.seconds < b.seconds) {
                    best = Some(run);
                }
            }
            let best = best.expect("at least one iteration");
            let instructions = best.instructions.unwrap_or(0);
            println!(
                "{name:<10} {:<10} {instructions:>14} {:>10.3} {:>12.1}",
                ENGINES[e].name,
                best.seconds,
                mips(instructions, best.seconds)
            );
            if let Some(note) = &best.note {
                println!("{:<10} {:<10} {note}", "", "");
            }
            rows.push(Row { workload: w, engine: e, instructions, seconds: best.seconds });
        }
    }

    if engines.len() > 1 {
        let base = engines[0];
        println!();
        println!("speedup over {} (its seconds / the engine's seconds):", ENGINES[base].name);
        for &w in &workloads {
            let seconds = |e: usize| rows.iter().find(|r| r.workload == w && r.engine == e).map(|r| r.seconds);
            let Some(base_seconds) = seconds(base) else { continue };
            let cells: Vec<String> = engines[1..]
                .iter()
                .filter_map(|&e| {
                    seconds(e).map(|s| format!("{}/{} {:.2}x", ENGINES[e].name, ENGINES[base].name, base_seconds / s))
                })
                .collect();
            println!("  {:<10} {}", WORKLOADS[w].name, cells.join("  "));
        }
    }

    if let Some((qemu, version)) = qemu {
        let directory = std::env::temp_dir();
        let startup = measure_qemu_startup(&qemu, &directory, args.iterations.max(3))?;
        println!();
        println!(
            "{version}: wall time of the whole process (QEMU seconds), and without QEMU's start-up and exit \
             ({startup:.3} s: a guest that powers off at once), as trapeze's seconds are (`Vm::run` alone): \
             `E/QEMU` compares E with the first, `E/run` with the second"
        );
        print!(
            "{:<10} {:>14} {:>12} {:>10} {:>12}",
            "workload", "instructions", "QEMU seconds", "QEMU run", "QEMU MIPS"
        );
        for &e in &engines {
            print!(" {:>14} {:>12}", format!("{}/QEMU", ENGINES[e].name), format!("{}/run", ENGINES[e].name));
        }
        println!();
        for &w in &workloads {
            let name = WORKLOADS[w].name;
            let elf = directory.join(format!("trapeze-bench-{}-{name}.elf", std::process::id()));
            std::fs::write(&elf, image(w)).map_err(|e| format!("cannot write {}: {e}", elf.display()))?;
            let mut best: Option<f64> = None;
            let mut failure = None;
            for _ in 0..args.iterations {
                match measure_qemu(&qemu, &elf) {
                    Ok(run) => {
                        checksums.check(w, name, "QEMU", &run.output);
                        best = Some(best.map_or(run.seconds, |b: f64| b.min(run.seconds)));
                    }
                    Err(message) => {
                        failure = Some(message);
                        break;
                    }
                }
            }
            let _ = std::fs::remove_file(&elf);
            if let Some(message) = failure {
                return Err(format!("{name} on QEMU: {message}"));
            }
            let qemu_seconds = best.expect("at least one iteration");
            // Never below a millisecond: a start-up measured longer than a short workload's run says little.
            let qemu_run = (qemu_seconds - startup).max(0.001);
            let instructions = rows.iter().find(|r| r.workload == w).map_or(0, |r| r.instructions);
            let qemu_mips = mips(instructions, qemu_run);
            print!("{name:<10} {instructions:>14} {qemu_seconds:>12.3} {qemu_run:>10.3} {qemu_mips:>12.1}");
            for &e in &engines {
                let seconds = rows.iter().find(|r| r.workload == w && r.engine == e).map_or(0.0, |r| r.seconds);
                print!(" {:>14.2} {:>12.2}", seconds / qemu_seconds, seconds / qemu_run);
            }
            println!();
        }
    } else if !args.no_qemu {
        println!();
        println!("QEMU: qemu-system-riscv64 not found on PATH; no comparison (give one with --qemu PATH)");
    }

    println!();
    for &w in &workloads {
        if let Some(line) = &checksums.lines[w] {
            println!("{line}");
        }
    }
    if checksums.mismatches > 0 {
        eprintln!("trapeze bench: {} run(s) disagreed on the checksum", checksums.mismatches);
        return Ok(false);
    }
    println!("every run printed the same checksum line");
    Ok(true)
}

/// The QEMU to compare with and its version line, if any.
fn find_qemu(args: &BenchArgs) -> Result<Option<(PathBuf, String)>, String> {
    if args.no_qemu {
        return Ok(None);
    }
    let path = args.qemu.clone().unwrap_or_else(|| PathBuf::from("qemu-system-riscv64"));
    match Command::new(&path).arg("--version").stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => {
            let version = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("QEMU").trim().to_string();
            Ok(Some((path, version)))
        }
        Ok(output) if args.qemu.is_some() => Err(format!("{} --version failed ({})", path.display(), output.status)),
        Err(e) if args.qemu.is_some() => Err(format!("cannot run {}: {e}", path.display())),
        _ => Ok(None),
    }
}
