//! `trapeze`: run a RISC-V guest inside a trapeze virtual machine on this host.
//!
//! `trapeze run IMAGE` boots IMAGE in M-mode the way `qemu-system-riscv64 -M virt -bios none -kernel IMAGE`
//! does, runs it until it powers off (through the `sifive,test0` finisher or HTIF `tohost`) and exits with the
//! guest's status; `--bios FW --kernel KERNEL` boots firmware and the next stage as QEMU does (`--bios builtin`:
//! the VMM itself provides SBI and the kernel starts in S-mode, as after OpenSBI's fw_jump). With no image it
//! runs the demo guest built from this repository. `trapeze bench` measures the engines (and QEMU) on the
//! benchmark guests; `trapeze analyze` prints the sensitivity table and critical set of a native configuration.

mod analyze;
mod bench;
mod bench_boot;
mod bench_smp;
mod console;
mod disk;
mod gdb;
mod host_serial;
mod initramfs;
#[cfg(target_arch = "x86_64")]
mod jit;
mod log;
mod parallel;
mod printer;
mod up;
mod uplink;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trapeze::dev::htif::Htif;
use trapeze::dev::slots;
use trapeze::dev::virtio::blk::BlockBackend;
use trapeze::dev::{NullSerial, SerialBackend};
use trapeze::exec::interp::Interpreter;
use trapeze::exec::threaded::Threaded;
use trapeze::exec::Engine;
use trapeze::hart::{Exception, Hart, HartConfig};
use trapeze::isa;
use trapeze::mem::{code_watch_words, mmu, Ram, RAM_BASE};
use trapeze::trap::Exit;
use trapeze::vm::boot;
use trapeze::vm::fdt::{write_dtb, IrqDevice, MachineDescription};
use trapeze::vm::loader::{load_elf, load_raw};
use trapeze::vm::virt::{Backends, VirtDevices};
use trapeze::vm::{Clock, Devices, RunOutcome, TimeSource, Vm, VmBuilder, MAX_HARTS};

use console::{HostClock, Stdio};
use disk::FileDisk;

/// The demo guest, built from `guests/demo` by the build script.
const DEMO_GUEST: &[u8] = include_bytes!(env!("TRAPEZE_GUEST_DEMO"));

#[derive(Parser)]
#[command(name = "trapeze", version, about = "A RISC-V virtual machine monitor")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Boot IMAGE (an ELF executable or a raw binary loaded at 0x8000_0000) in M-mode and run it to the end.
    Run(RunArgs),
    /// Start every VM a TOML configuration file describes, together on this thread, consoles multiplexed
    /// (`Ctrl-A c` switches the input), disks as partitions of shared images; run them all to the end.
    Up(up::UpArgs),
    /// Run the benchmark guests on every engine (and QEMU if installed): instructions, seconds, guest MIPS.
    Bench(bench::BenchArgs),
    /// Print the sensitivity table of a native VMM configuration, its critical set and whether trap-and-emulate
    /// alone virtualizes it (Popek and Goldberg).
    Analyze(analyze::AnalyzeArgs),
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The guest image, run in M-mode; without one (and without --bios/--kernel), the bundled demo guest runs.
    image: Option<PathBuf>,
    /// Firmware loaded at 0x8000_0000 and started in M-mode (e.g. OpenSBI's fw_jump or fw_dynamic), or
    /// `builtin`: no firmware image; the VMM provides SBI and the kernel starts in S-mode.
    #[arg(long)]
    bios: Option<PathBuf>,
    /// With --bios: the next stage, loaded at 0x8020_0000 (or at its ELF addresses). Alone: like IMAGE.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// An initramfs, loaded high in RAM and named in the devicetree's /chosen.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line (/chosen/bootargs).
    #[arg(long)]
    append: Option<String>,
    /// A raw disk image, attached as virtio-blk in the first virtio-mmio slot (0x1000_1000, IRQ 1).
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Also write the generated devicetree blob to this file.
    #[arg(long)]
    dtb_out: Option<PathBuf>,
    /// The devicetree lists the spooled printer (`trapeze up` attaches the device, `printer = true`).
    #[arg(skip)]
    printer: bool,
    /// Guest RAM size, e.g. 128M or 1G (a bare number is MiB).
    #[arg(short = 'm', long = "memory", default_value = "128M", value_parser = parse_memory_size)]
    memory: u64,
    /// Stop after this many instructions (exit status 3).
    #[arg(long)]
    max_insns: Option<u64>,
    /// QEMU's `-accel tcg,thread=multi` (a host thread per hart, the default when the run allows it) or
    /// `tcg,thread=single` (every hart on one thread; what --icount, the debugger, snapshots, -d and
    /// `--bios builtin` need).
    #[arg(long, value_name = "tcg,thread=single|multi", default_value = "tcg", value_parser = parallel::ThreadMode::parse_accel)]
    accel: parallel::ThreadMode,
    /// Number of harts (also spelled `-smp N`, as for QEMU).
    #[arg(long = "smp", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=MAX_HARTS as i64))]
    smp: u8,
    /// Guest time advances 2^SHIFT ns per instruction instead of following the host clock (QEMU's
    /// `-icount shift=SHIFT`): runs become repeatable.
    #[arg(long, value_name = "SHIFT", value_parser = clap::value_parser!(u32).range(0..=10))]
    icount: Option<u32>,
    /// Run the default engine (or the one `--engine` names) and the reference interpreter side by side on two
    /// copies of the machine and stop at the first difference in architectural state (exit status 4). Implies
    /// `--icount 0` unless given.
    #[arg(long)]
    lockstep: bool,
    /// The size of the threaded engine's code cache (`tiny` needs `--engine threaded`).
    #[arg(long, value_enum, default_value_t = CodeCacheSize::Hosted)]
    code_cache: CodeCacheSize,
    /// The execution engine: by default the translator (`dbt`) on x86-64 hosts, `threaded` elsewhere.
    #[arg(long, value_enum, default_value_t = EngineChoice::DEFAULT)]
    engine: EngineChoice,
    /// Print one line per executed instruction to stderr: pc, word, disassembly, changed register, trap;
    /// `--trace=N` starts after the first N instructions.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    trace: Option<u64>,
    /// QEMU's log items, comma-separated: `in_asm` (every instruction, as --trace), `int` (every interrupt and
    /// exception taken); `-d help` lists them.
    #[arg(short = 'd', value_name = "ITEMS", value_parser = log::LogItems::parse)]
    log: Option<log::LogItems>,
    /// Write the log (-d, --trace) to FILE instead of stderr, as QEMU's `-D`.
    #[arg(short = 'D', value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Serve gdb on tcp::1234 (QEMU's `-s`): `target remote :1234` in gdb-multiarch.
    #[arg(short = 's', conflicts_with_all = ["gdb", "lockstep", "trace"])]
    gdb_default: bool,
    /// Serve gdb at this endpoint, `tcp::PORT` (loopback) or `tcp:HOST:PORT` (QEMU's `-gdb`).
    #[arg(long, value_name = "tcp::PORT", conflicts_with_all = ["lockstep", "trace"])]
    gdb: Option<String>,
    /// With -s or --gdb: do not start the guest until gdb continues it (QEMU's `-S`).
    #[arg(short = 'S')]
    wait_for_gdb: bool,
    /// Save a snapshot of the whole machine to FILE once --savevm-at instructions have run, then run on
    /// (QEMU's monitor command `savevm`).
    #[arg(long, value_name = "FILE", requires = "savevm_at", conflicts_with_all = ["lockstep", "gdb", "gdb_default"])]
    savevm: Option<PathBuf>,
    /// When --savevm saves: after this many instructions.
    #[arg(long, value_name = "N", requires = "savevm")]
    savevm_at: Option<u64>,
    /// Start from the snapshot in FILE instead of the images' entry (QEMU's `-loadvm`). The machine is built
    /// from the same images and options as the run that saved it, then the snapshot replaces its whole state.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["lockstep", "gdb", "gdb_default"])]
    loadvm: Option<PathBuf>,
}

impl RunArgs {
    /// Where the gdb stub listens, if it is asked for.
    fn gdb_endpoint(&self) -> Result<Option<std::net::SocketAddr>, String> {
        match (&self.gdb, self.gdb_default) {
            (Some(spec), _) => gdb::parse_endpoint(spec).map(Some),
            (None, true) => gdb::parse_endpoint(&format!("tcp::{}", gdb::DEFAULT_PORT)).map(Some),
            (None, false) if self.wait_for_gdb => Err("-S waits for gdb: give -s or --gdb tcp::PORT too".into()),
            (None, false) => Ok(None),
        }
    }
}

/// The threaded engine with the hosted code cache: 32768 ops in 2048 blocks (about 1 MiB).
type HostedThreaded = Threaded<32768, 2048, 4096>;

/// A code cache far too small for any real working set (256 ops in 16 blocks), to exercise eviction.
type TinyThreaded = Threaded<256, 16, 32>;

/// The size of the threaded engine's code cache.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CodeCacheSize {
    /// 32768 ops in 2048 blocks (about 1 MiB).
    #[default]
    Hosted,
    /// 256 ops in 16 blocks: it must evict all the time.
    Tiny,
}

/// Which engine runs the guest.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineChoice {
    /// The decode-and-dispatch reference interpreter.
    Interp,
    /// Predecoded direct-threaded blocks in a fixed-size code cache (the default on hosts other than x86-64).
    Threaded,
    /// Dynamic binary translation to x86-64 host code (x86-64 hosts only, and their default).
    #[cfg(target_arch = "x86_64")]
    Dbt,
}

impl EngineChoice {
    /// The engine when none is named: the translator on x86-64 hosts, the portable threaded engine elsewhere.
    #[cfg(target_arch = "x86_64")]
    const DEFAULT: EngineChoice = EngineChoice::Dbt;
    #[cfg(not(target_arch = "x86_64"))]
    const DEFAULT: EngineChoice = EngineChoice::Threaded;
}

impl Default for EngineChoice {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Exit status when the instruction limit ends the run.
const EXIT_INSTRUCTION_LIMIT: u8 = 3;

/// Exit status when gdb killed the guest.
const EXIT_KILLED_BY_DEBUGGER: u8 = 5;

fn parse_memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => text.split_at(index),
        None => (text, "M"),
    };
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is not a memory size such as 128M or 1G"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use K, M or G)")),
    };
    let bytes = number.checked_shl(shift).filter(|b| b >> shift == number).unwrap_or(u64::MAX);
    // RAM must fit below the top of the 64-bit guest real address space and in host memory.
    if bytes == 0 || bytes > 64 << 30 {
        return Err(format!("`{text}`: guest RAM must be between 1 byte and 64G"));
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    // QEMU spells them `-smp N` and `-accel ...`; clap's single-dash options are one letter, so accept QEMU's spelling here.
    let cli = Cli::parse_from(std::env::args_os().map(|arg| match arg.to_str() {
        Some("-smp") => "--smp".into(),
        Some("-accel") => "--accel".into(),
        _ => arg,
    }));
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        Some(Command::Up(args)) => return up::run(&args),
        Some(Command::Bench(args)) => return bench::run(&args),
        Some(Command::Analyze(args)) => return analyze::run(&args),
        None => default_run_args(),
    };
    if args.log.is_some_and(|items| items.help) {
        print!("{}", log::help());
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("trapeze: {message}");
            ExitCode::from(2)
        }
    }
}

/// `trapeze` alone is `trapeze run` with every option at its default (the bundled demo guest). The defaults
/// come from the parser itself, so they cannot drift from what `trapeze run` gets.
fn default_run_args() -> RunArgs {
    match Cli::parse_from(["trapeze", "run"]).command {
        Some(Command::Run(args)) => args,
        _ => unreachable!("`trapeze run` parses as the run command"),
    }
}

/// An image read from the host, with the name errors use for it.
struct Image {
    name: String,
    bytes: Vec<u8>,
}

impl Image {
    fn read(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Self { name: path.display().to_string(), bytes })
    }

    /// Loads an ELF at its physical addresses or a raw binary at `raw_addr`; returns (entry, end, HTIF).
    fn load(&self, ram: &mut Ram, raw_addr: u64) -> Result<(u64, u64, Option<Htif>), String> {
        if self.bytes.starts_with(b"\x7fELF") {
            let loaded = load_elf(&self.bytes, ram).map_err(|e| format!("{}: {e}", self.name))?;
            Ok((loaded.entry, loaded.end, loaded.tohost.map(|tohost| Htif::new(tohost, loaded.fromhost))))
        } else {
            load_raw(&self.bytes, raw_addr, ram).map_err(|e| format!("{}: {e}", self.name))?;
            Ok((raw_addr, raw_addr + self.bytes.len() as u64, None))
        }
    }
}

/// The ISA string the devicetree advertises for harts of `config`.
fn isa_string(config: &HartConfig) -> String {
    let mut isa = String::from("rv64");
    for letter in "imafdc".bytes() {
        if config.extensions & trapeze::isa::csr::misa::ext(letter.to_ascii_uppercase()) != 0 {
            isa.push(letter as char);
        }
    }
    isa + "_zicsr_zifencei"
}

/// How the options that choose a run's images are spelled in messages: `trapeze run`'s flags, or the keys of a
/// `trapeze up` configuration.
struct BootSpelling {
    image: &'static str,
    bios: &'static str,
    kernel: &'static str,
    initrd: &'static str,
}

/// `trapeze run`'s flags.
const RUN_SPELLING: BootSpelling =
    BootSpelling { image: "IMAGE", bios: "--bios", kernel: "--kernel", initrd: "--initrd" };

/// Where an image named by `IMAGE` (or `image =`) comes from: a file, read only once the options are known to
/// fit together, or bytes already in hand (the bundled guests).
enum ImageSource<'a> {
    File(&'a std::path::Path),
    Loaded(Image),
}

impl ImageSource<'_> {
    fn name(&self) -> String {
        match self {
            ImageSource::File(path) => path.display().to_string(),
            ImageSource::Loaded(image) => image.name.clone(),
        }
    }

    fn read(self) -> Result<Image, String> {
        match self {
            ImageSource::File(path) => Image::read(path),
            ImageSource::Loaded(image) => Ok(image),
        }
    }
}

/// The images a run boots, from `--bios` (a path or `builtin`), `--kernel`, `IMAGE` and `--initrd` (or the keys of
/// the same names in `trapeze up`), shared by both so they boot alike: `IMAGE` alone, or the kernel without
/// firmware, is the M-mode program (QEMU's `-bios none -kernel`); firmware with or without a next stage;
/// `builtin` with the kernel it starts in S-mode. `default` runs when no image at all is named (`None`: that is an
/// error). Nothing is read before the combination is known to make sense.
fn boot_plan(
    bios: Option<&std::path::Path>,
    kernel: Option<&std::path::Path>,
    image: Option<ImageSource<'_>>,
    initrd: Option<&std::path::Path>,
    default: Option<Image>,
    names: &BootSpelling,
) -> Result<BootPlan, String> {
    let BootSpelling { image: image_name, bios: bios_name, kernel: kernel_name, initrd: initrd_name } = names;
    let (firmware, kernel) = match (bios, kernel, image) {
        (Some(_), _, Some(image)) => {
            return Err(format!("{}: give the kernel with {kernel_name} when {bios_name} is used", image.name()))
        }
        (Some(bios), None, None) if bios.as_os_str() == BUILTIN_FIRMWARE => {
            return Err(format!("{bios_name} builtin needs {kernel_name}"))
        }
        (Some(bios), Some(kernel), None) if bios.as_os_str() == BUILTIN_FIRMWARE => (None, Some(Image::read(kernel)?)),
        (Some(bios), kernel, None) => (Some(Image::read(bios)?), kernel.map(Image::read).transpose()?),
        (None, Some(_), Some(image)) => {
            return Err(format!("{}: give either {image_name} or {kernel_name}, not both", image.name()))
        }
        (None, Some(path), None) => (Some(Image::read(path)?), None),
        (None, None, Some(image)) => (Some(image.read()?), None),
        (None, None, None) => match default {
            Some(image) => (Some(image), None),
            None => return Err(format!("no image: give {image_name}, or {kernel_name} (with {bios_name})")),
        },
    };
    let initrd_image = initrd.map(Image::read).transpose()?;
    if initrd_image.is_some() && kernel.is_none() && bios.is_some() {
        return Err(format!("{initrd_name} needs {kernel_name}"));
    }
    Ok(BootPlan { firmware, kernel, initrd: initrd_image })
}

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    if args.code_cache == CodeCacheSize::Tiny && args.engine != EngineChoice::Threaded {
        return Err("--code-cache sizes the threaded engine's code cache: add --engine threaded".into());
    }
    let image = args.image.as_deref().map(ImageSource::File);
    let demo = Image { name: "the demo guest".into(), bytes: DEMO_GUEST.to_vec() };
    let plan = boot_plan(
        args.bios.as_deref(),
        args.kernel.as_deref(),
        image,
        args.initrd.as_deref(),
        Some(demo),
        &RUN_SPELLING,
    )?;
    let threads_per_hart = parallel::wanted(args, &plan)?;
    let ram_size = usize::try_from(args.memory).map_err(|_| "guest RAM does not fit this host".to_string())?;
    let mut backing = vec![0u8; ram_size];
    // The pages (and 64-byte granules of them) the engine has translated code from.
    let mut code_pages = vec![0u64; code_watch_words(args.memory)];
    let mut threaded = Box::new(HostedThreaded::new());
    let mut tiny = TinyThreaded::new();
    #[cfg(target_arch = "x86_64")]
    let mut dbt = match args.engine {
        // Translation on the hart's thread for lockstep (every block at its first entry) and for instruction-counted
        // time, which must repeat exactly: when a worker's translation lands depends on the host's scheduling, and
        // though both tiers are exact, they may fill the soft TLB in another order. Otherwise the process's
        // translation worker translates hot blocks.
        EngineChoice::Dbt if args.lockstep || args.icount.is_some() => Some(jit::hosted_dbt()?),
        EngineChoice::Dbt => Some(jit::served_dbt()?),
        _ => None,
    };
    if args.lockstep {
        if args.log.is_some() || args.trace.is_some() {
            return Err("-d and --trace cannot be combined with --lockstep".into());
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(dbt) = dbt.as_deref_mut() {
            // Every block translated at its first entry, so that translated code is what gets compared.
            dbt.set_translation_threshold(0);
            return lockstep(args, &plan, dbt);
        }
        return match args.code_cache {
            CodeCacheSize::Hosted => lockstep(args, &plan, &mut *threaded),
            CodeCacheSize::Tiny => lockstep(args, &plan, &mut tiny),
        };
    }
    if threads_per_hart {
        loop {
            match parallel::run(args, &plan)? {
                RunOutcome::Reset => eprintln!("trapeze: the guest reset the machine; booting again"),
                outcome => return Ok(exit_status(outcome)),
            }
        }
    }
    let mut gdb = match args.gdb_endpoint()? {
        Some(_) if args.log.is_some_and(|items| items.in_asm) => {
            return Err("-d in_asm cannot be combined with -s or --gdb (gdb steps the guest itself)".into())
        }
        Some(address) => Some(gdb::GdbServer::bind(address, args.wait_for_gdb)?),
        None => None,
    };

    let log = log::Log::open(args.log.unwrap_or_default(), args.log_file.as_deref())?;
    // A snapshot is restored or saved in the first boot only, not after a guest reset.
    let mut first_boot = true;
    loop {
        if !first_boot {
            // A reset: the machine starts from zeroed RAM. (The first boot's RAM is a fresh allocation, zero already
            // and not yet touched: writing it would fault in every page of it, a tenth of a second per 512 MiB.)
            backing.fill(0);
        }
        let mut clock = HostClock::new();
        if let Some(server) = gdb.as_mut() {
            server.stop_time_when_stopped(clock.pause_handle());
        }
        let mut htif_console = Stdio::new();
        let mut trap_logger = log::TrapLogger(log.clone());
        let disk = args.disk.as_deref().map(FileDisk::open).transpose()?;
        let mut vm = build_machine(
            args,
            &plan,
            &mut backing,
            &mut code_pages,
            Stdio::new(),
            disk,
            &mut clock,
            &mut htif_console,
        )?;
        vm.set_trap_observer(&mut trap_logger);
        let snapshots = std::mem::take(&mut first_boot);
        let ending = match args.engine {
            EngineChoice::Interp => run_session(&mut vm, &mut Interpreter, args, &log, gdb.as_mut(), snapshots),
            EngineChoice::Threaded if args.code_cache == CodeCacheSize::Tiny => {
                run_session(&mut vm, &mut tiny, args, &log, gdb.as_mut(), snapshots)
            }
            EngineChoice::Threaded => run_session(&mut vm, &mut *threaded, args, &log, gdb.as_mut(), snapshots),
            #[cfg(target_arch = "x86_64")]
            EngineChoice::Dbt => match dbt.as_deref_mut() {
                Some(dbt) => run_session(&mut vm, dbt, args, &log, gdb.as_mut(), snapshots),
                None => return Err("the translator was not set up".into()),
            },
        };
        log.borrow_mut().flush();
        console::flush_stdout();
        let outcome = match ending? {
            gdb::Ending::Outcome(outcome) => outcome,
            gdb::Ending::Killed => {
                eprintln!("trapeze: the debugger killed the guest");
                return Ok(ExitCode::from(EXIT_KILLED_BY_DEBUGGER));
            }
        };
        match outcome {
            RunOutcome::InstructionLimit => {
                eprintln!("trapeze: instruction limit reached after {} instructions", vm.steps);
                for hart in &vm.harts {
                    eprintln!(
                        "trapeze: hart {} at pc {:#x} in {:?} mode (mstatus {:#x}, mip {:#x}, mie {:#x})",
                        hart.config.hart_id,
                        hart.pc,
                        hart.privilege,
                        hart.mstatus(),
                        hart.mip(),
                        hart.csrs.mie
                    );
                }
                return Ok(ExitCode::from(EXIT_INSTRUCTION_LIMIT));
            }
            RunOutcome::Reset => {
                eprintln!("trapeze: the guest reset the machine; booting again");
            }
            outcome => return Ok(exit_status(outcome)),
        }
    }
}

/// The process's exit status for how the guest's run ended.
fn exit_status(outcome: RunOutcome) -> ExitCode {
    match outcome {
        RunOutcome::PowerOff { code: 0 } | RunOutcome::Reset => ExitCode::SUCCESS,
        RunOutcome::PowerOff { code } => {
            eprintln!("trapeze: the guest reported failure (code {code})");
            // Keep a non-zero status even when the code's low byte is zero.
            ExitCode::from(u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1))
        }
        RunOutcome::InstructionLimit => ExitCode::from(EXIT_INSTRUCTION_LIMIT),
        // Only a debugger sets what stops a hart for it, and none is attached here.
        RunOutcome::DebugStop { hart, stop } => {
            eprintln!("trapeze: hart {hart} stopped for a debugger ({stop:?}) but none is attached");
            ExitCode::from(2)
        }
    }
}

/// `--bios builtin`: the VMM is the firmware.
const BUILTIN_FIRMWARE: &str = "builtin";

/// The images a run boots.
struct BootPlan {
    /// `None`: no firmware image; the VMM provides SBI and the kernel starts in S-mode (`--bios builtin`).
    firmware: Option<Image>,
    kernel: Option<Image>,
    initrd: Option<Image>,
}

/// Loads the images into fresh RAM (`backing` must be all zero), writes the devicetree and builds the `virt`
/// machine with `console` on its UART and `disk` (if any) in the first virtio-mmio slot, following QEMU's boot
/// protocol.
#[allow(clippy::too_many_arguments)]
fn build_machine<'a, S: SerialBackend, B: BlockBackend>(
    args: &RunArgs,
    plan: &BootPlan,
    backing: &'a mut [u8],
    code_pages: &'a mut [u64],
    console: S,
    disk: Option<B>,
    clock: &'a mut HostClock,
    htif_console: &'a mut dyn SerialBackend,
) -> Result<Vm<'a, VirtDevices<'a, S, B>>, String> {
    let mut devices = VirtDevices::new(console);
    if let Some(disk) = disk {
        devices.attach_disk(disk);
    }
    build_machine_on(args, plan, backing, code_pages, devices, clock, htif_console)
}

/// [`build_machine`] for devices the caller chose (a disk, a NIC on a bridge): places the images and a devicetree
/// listing the populated virtio slots in `backing` and builds the VM around `devices`.
#[allow(clippy::too_many_arguments)]
fn build_machine_on<'a, S: SerialBackend, K: Backends>(
    args: &RunArgs,
    plan: &BootPlan,
    backing: &'a mut [u8],
    code_pages: &'a mut [u64],
    devices: VirtDevices<'a, S, K>,
    clock: &'a mut HostClock,
    htif_console: &'a mut dyn SerialBackend,
) -> Result<Vm<'a, VirtDevices<'a, S, K>>, String> {
    let mut ram = Ram::new(RAM_BASE, backing);
    ram.attach_granular_code_watch(code_pages);
    let placed = place_images(args, plan, &mut ram, &devices)?;
    let mut vm =
        placed.builder(args, ram, devices, clock).build().map_err(|e| format!("building the machine: {e:?}"))?;
    if let Some(htif) = placed.htif {
        vm.attach_htif(htif, htif_console);
    }
    Ok(vm)
}

/// Where the images and the devicetree of a machine went, and how its harts start.
struct Placed {
    entry: u64,
    devicetree: u64,
    dynamic_info: u64,
    /// The kernel the VMM's own SBI starts (`--bios builtin`).
    builtin_sbi: Option<u64>,
    /// The firmware's HTIF, if its ELF has `tohost`.
    htif: Option<Htif>,
}

impl Placed {
    /// A builder of the machine, every hart as QEMU's boot protocol leaves it.
    fn builder<'a, D: Devices>(
        &self,
        args: &RunArgs,
        ram: Ram<'a>,
        devices: D,
        clock: &'a mut dyn Clock,
    ) -> VmBuilder<'a, D> {
        let mut builder = VmBuilder::new(ram, devices, clock)
            .harts(usize::from(args.smp))
            .hart_config(HartConfig::rv64gc(0))
            .entry(self.entry)
            .boot_registers(self.devicetree, self.dynamic_info);
        if let Some(kernel) = self.builtin_sbi {
            // As OpenSBI's fw_jump leaves it: hart 0 in S-mode at the kernel, the others HSM-stopped.
            builder = builder.builtin_sbi(kernel);
        }
        if let Some(shift) = args.icount {
            builder = builder.time_source(TimeSource::Instructions { shift });
        }
        builder
    }
}

/// Loads the images into fresh RAM (all zero) and writes the devicetree of the `virt` machine around `devices`
/// (listing their populated virtio slots), following QEMU's boot protocol.
fn place_images<S: SerialBackend, K: Backends>(
    args: &RunArgs,
    plan: &BootPlan,
    ram: &mut Ram,
    devices: &VirtDevices<'_, S, K>,
) -> Result<Placed, String> {
    let config = HartConfig::rv64gc(0);
    let (entry, mut end, htif) = match &plan.firmware {
        Some(firmware) => firmware.load(ram, RAM_BASE)?,
        None => (RAM_BASE + boot::KERNEL_OFFSET, RAM_BASE, None),
    };
    let mut next_stage = None;
    if let Some(kernel) = &plan.kernel {
        let (kernel_entry, kernel_end, _) = kernel.load(ram, RAM_BASE + boot::KERNEL_OFFSET)?;
        next_stage = Some(kernel_entry);
        end = end.max(kernel_end);
    }
    let mut initrd_range = None;
    if let Some(initrd) = &plan.initrd {
        let size = initrd.bytes.len() as u64;
        let start = boot::initrd_address(ram, next_stage.unwrap_or(entry), size).map_err(|e| e.to_string())?;
        load_raw(&initrd.bytes, start, ram).map_err(|e| format!("{}: {e}", initrd.name))?;
        initrd_range = Some((start, start + size));
        end = end.max(start + size);
    }

    let isa = isa_string(&config);
    let mut description = MachineDescription::qemu_virt(u32::from(args.smp), args.memory);
    description.isa = &isa;
    description.bootargs = args.append.as_deref();
    description.initrd = initrd_range;
    if args.printer {
        description.printer = Some(trapeze::vm::fdt::QEMU_VIRT_PRINTER);
    }
    // The devicetree lists the slots the devices fill, with the slot table's addresses and interrupts.
    let mut virtio_slots = [IrqDevice { base: 0, size: 0, irq: 0 }; slots::VIRTIO_COUNT];
    description.virtio_mmio = devices.virtio_description(&mut virtio_slots);
    let mut blob = vec![0u8; 64 << 10];
    let length = write_dtb(&description, &mut blob).map_err(|e| format!("building the devicetree: {e:?}"))?;
    blob.truncate(length);
    if let Some(path) = &args.dtb_out {
        std::fs::write(path, &blob).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    // Without firmware there is no fw_dynamic info block to write.
    let dynamic_next = next_stage.filter(|_| plan.firmware.is_some());
    let (devicetree, dynamic_info) =
        boot::place_devicetree(ram, &blob, dynamic_next, end).map_err(|e| e.to_string())?;
    let builtin_sbi = plan.firmware.is_none().then(|| next_stage.unwrap_or(entry));
    Ok(Placed { entry, devicetree, dynamic_info, builtin_sbi, htif })
}

/// Exit status when the engines disagree in `--lockstep`.
const EXIT_DIVERGENCE: u8 = 4;

/// Slice length of `--lockstep`: the architectural state is compared after every one.
const LOCKSTEP_SLICE: u64 = 64;

/// Runs a fast engine and the reference interpreter side by side on two copies of the machine, with
/// instruction-counted time, comparing every hart's architectural state after each slice and RAM now and then.
/// The copy on the interpreter gets no console input.
fn lockstep(args: &RunArgs, plan: &BootPlan, engine: &mut impl Engine) -> Result<ExitCode, String> {
    let mut args = args.clone();
    args.icount.get_or_insert(0);
    let ram_size = args.memory as usize;
    let (mut backing_a, mut backing_b) = (vec![0u8; ram_size], vec![0u8; ram_size]);
    let pages = ram_size.div_ceil(4096 * 64);
    let (mut pages_a, mut pages_b) = (vec![0u64; pages], vec![0u64; pages]);
    let (mut clock_a, mut clock_b) = (HostClock::new(), HostClock::new());
    let (mut htif_a, mut htif_b) = (Stdio::new(), NullSerial);
    let (disk_a, disk_b) = match args.disk.as_deref() {
        Some(path) => (Some(FileDisk::open(path)?), Some(FileDisk::open(path)?)),
        None => (None, None),
    };
    let mut fast =
        build_machine(&args, plan, &mut backing_a, &mut pages_a, Stdio::new(), disk_a, &mut clock_a, &mut htif_a)?;
    let mut reference =
        build_machine(&args, plan, &mut backing_b, &mut pages_b, NullSerial, disk_b, &mut clock_b, &mut htif_b)?;
    let mut slices = 0u64;
    loop {
        if args.max_insns.is_some_and(|limit| fast.steps >= limit) {
            console::flush_stdout();
            eprintln!("trapeze: lockstep: instruction limit reached after {} instructions, no divergence", fast.steps);
            return Ok(ExitCode::from(EXIT_INSTRUCTION_LIMIT));
        }
        let outcome_fast = fast.run_slice(engine, LOCKSTEP_SLICE);
        let outcome_reference = reference.run_slice(&mut Interpreter, LOCKSTEP_SLICE);
        slices += 1;
        let mut divergence = None;
        if fast.steps != reference.steps || outcome_fast != outcome_reference {
            divergence = Some(format!(
                "steps {} vs {}, outcome {outcome_fast:?} vs {outcome_reference:?}",
                fast.steps, reference.steps
            ));
        }
        for (a, b) in fast.harts.iter().zip(reference.harts.iter()) {
            if divergence.is_none() && a != b {
                divergence = Some(format!("hart {}:\nfast   {a:?}\ninterp {b:?}", a.config.hart_id));
            }
        }
        let finished = outcome_fast.is_some();
        if divergence.is_none() && (finished || slices.is_multiple_of(1 << 14)) {
            // Lockstep runs both machines on exclusive RAM, the only kind with a slice to compare.
            match (fast.ram.as_slice(), reference.ram.as_slice()) {
                (Some(ours), Some(theirs)) => {
                    if let Some(offset) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                        divergence = Some(format!("RAM differs at guest address {:#x}", RAM_BASE + offset as u64));
                    }
                }
                _ => divergence = Some("RAM is shared, so it cannot be compared".to_string()),
            }
        }
        if let Some(what) = divergence {
            console::flush_stdout();
            eprintln!("trapeze: lockstep: the engines diverged after {} instructions: {what}", fast.steps);
            return Ok(ExitCode::from(EXIT_DIVERGENCE));
        }
        if let Some(outcome) = outcome_fast {
            console::flush_stdout();
            eprintln!("trapeze: lockstep: {} instructions, no divergence", fast.steps);
            return Ok(match outcome {
                RunOutcome::PowerOff { code: 0 } => ExitCode::SUCCESS,
                RunOutcome::PowerOff { .. } => ExitCode::from(1),
                RunOutcome::InstructionLimit => ExitCode::from(EXIT_INSTRUCTION_LIMIT),
                RunOutcome::Reset => ExitCode::SUCCESS,
                RunOutcome::DebugStop { .. } => ExitCode::from(2),
            });
        }
    }
}

/// Runs the VM on `engine` as [`run_with`] does, first restoring `--loadvm`'s snapshot and saving `--savevm`'s
/// at `--savevm-at` instructions when `snapshots` is set.
fn run_session<D: Devices, E: Engine>(
    vm: &mut Vm<'_, D>,
    engine: &mut E,
    args: &RunArgs,
    log: &log::SharedLog,
    gdb: Option<&mut gdb::GdbServer>,
    snapshots: bool,
) -> Result<gdb::Ending, String> {
    if snapshots {
        if let Some(path) = &args.loadvm {
            let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            vm.restore_snapshot(&data).map_err(|e| format!("cannot restore {}: {e:?}", path.display()))?;
        }
        if let (Some(path), Some(at)) = (&args.savevm, args.savevm_at) {
            match vm.run(engine, Some(at)) {
                RunOutcome::InstructionLimit => {}
                outcome => {
                    eprintln!("trapeze: the guest ended before {at} instructions: no snapshot saved");
                    return Ok(gdb::Ending::Outcome(outcome));
                }
            }
            let length = vm.snapshot_len().map_err(|e| format!("cannot save a snapshot: {e:?}"))?;
            let mut buf = vec![0u8; length];
            let length = vm.save_snapshot(&mut buf).map_err(|e| format!("cannot save a snapshot: {e:?}"))?;
            std::fs::write(path, &buf[..length]).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("trapeze: saved a snapshot at {} instructions to {} ({length} bytes)", vm.steps, path.display());
        }
    }
    run_with(vm, engine, args, log, gdb)
}

/// Runs the VM on `engine` as the options say: to the end, under gdb, or traced from an instruction count on
/// (`--trace=N`; `-d in_asm` traces from the start).
fn run_with<D: Devices, E: Engine>(
    vm: &mut Vm<'_, D>,
    engine: &mut E,
    args: &RunArgs,
    log: &log::SharedLog,
    gdb: Option<&mut gdb::GdbServer>,
) -> Result<gdb::Ending, String> {
    if let Some(server) = gdb {
        return server.run(vm, engine, args.max_insns);
    }
    let outcome = match args.trace.or(args.log.filter(|items| items.in_asm).map(|_| 0)) {
        Some(start) => match vm.run(engine, Some(start)) {
            RunOutcome::InstructionLimit if args.max_insns.is_none_or(|limit| limit > start) => {
                run_traced(vm, &mut Interpreter, args.max_insns, log)
            }
            outcome => outcome,
        },
        None => vm.run(engine, args.max_insns),
    };
    Ok(gdb::Ending::Outcome(outcome))
}

/// The instruction word at `hart.pc`, read through the hart's own translation as it stood before the instruction
/// ran (`None` when it cannot be read), with the debugger's side-effect-free walk: tracing never sets an A bit.
fn fetched_word(ram: &Ram, hart: &Hart) -> Option<u32> {
    // Parcel by parcel: the two halves of a 32-bit instruction may lie on different pages.
    let parcel = |va: u64| ram.load(mmu::debug_translate(ram, hart, va)?, 2).map(|half| half as u32);
    let low = parcel(hart.pc)?;
    if low & 0b11 != 0b11 {
        return Some(low);
    }
    Some(low | parcel(hart.pc.wrapping_add(2))? << 16)
}

/// Runs one instruction at a time on the reference interpreter, logging what each did, with the traps taken
/// around it (`-d int`) in the order they happened.
fn run_traced<D: Devices>(
    vm: &mut Vm<'_, D>,
    engine: &mut Interpreter,
    limit: Option<u64>,
    log: &log::SharedLog,
) -> RunOutcome {
    log.borrow_mut().hold_traps(true);
    let outcome = loop {
        if limit.is_some_and(|limit| vm.steps >= limit) {
            break RunOutcome::InstructionLimit;
        }
        let before: Vec<Hart> = vm.harts.to_vec();
        let steps_before = vm.steps;
        let outcome = vm.run_slice(engine, 1);
        let mut log = log.borrow_mut();
        let traps = log.take_held();
        // An interrupt is taken before the slice's instruction runs, an exception after it.
        let (interrupts, exceptions): (Vec<_>, Vec<_>) = traps.iter().partition(|trap| trap.interrupt);
        let log_traps = log.items.int;
        for trap in interrupts.iter().filter(|_| log_traps) {
            log.line(&log::trap_line(trap));
        }
        if vm.steps == steps_before {
            // Every hart waited for an interrupt: nothing executed.
            if let Some(outcome) = outcome {
                break outcome;
            }
            continue;
        }
        let (index, exit) = vm.last_exit;
        let Some(mut start) = before.get(index).cloned() else { continue };
        if let Some(interrupt) = interrupts.first() {
            // The instruction that ran is the handler's first: trace it from where the interrupt left the hart.
            start.take_trap(true, interrupt.code, 0);
        }
        let pc = start.pc;
        let registers = start.x;
        let hart_prefix = if before.len() > 1 { format!("hart {index} ") } else { String::new() };
        let mut line = match fetched_word(&vm.ram, &start).map(|word| (word, isa::decode(word))) {
            Some((word, decoded)) if decoded.len == 2 => {
                format!("{hart_prefix}{pc:016x}: {:04x}      {}", word & 0xffff, decoded.inst)
            }
            Some((word, decoded)) => format!("{hart_prefix}{pc:016x}: {word:08x}  {}", decoded.inst),
            None => format!("{hart_prefix}{pc:016x}: --------  (fetch faulted)"),
        };
        let hart = &vm.harts[index];
        if let Some((register, value)) = hart.x.iter().enumerate().find(|(i, v)| registers[*i] != **v) {
            line.push_str(&format!("    x{register}={value:#x}"));
        }
        if let Exit::Exception { cause, tval } = exit {
            line.push_str(&format!("    trap {cause:?} tval={tval:#x}"));
        } else if let Some(trap) = exceptions.first() {
            // Raised by the dispatcher while emulating the instruction (an illegal CSR access, a device refusing).
            let cause = Exception::from_code(trap.code).map_or(format!("{}", trap.code), |cause| format!("{cause:?}"));
            line.push_str(&format!("    trap {cause} tval={:#x}", trap.tval));
        }
        log.line(&line);
        for trap in exceptions.iter().filter(|_| log_traps) {
            log.line(&log::trap_line(trap));
        }
        if let Some(outcome) = outcome {
            break outcome;
        }
    };
    let mut log = log.borrow_mut();
    log.hold_traps(false);
    log.flush();
    outcome
}
