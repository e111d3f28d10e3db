//! Build script of the hosted harness: builds the guest programs of `../guests` for `riscv64gc-unknown-none-elf`
//! and hands their paths to this crate.
//!
//! The `guests` workspace is built in release mode by the same `cargo` that runs this script (`$CARGO`), in its
//! own target directory under `OUT_DIR` (so it never waits on the outer build's lock), with the variables that the
//! outer build exports and that would leak into a nested build removed. Each binary's absolute path becomes a
//! compile-time environment variable of every target of this package (the `trapeze` binary, tests, benches):
//! `TRAPEZE_GUEST_HELLO`, `TRAPEZE_GUEST_TRAPS`, `TRAPEZE_GUEST_ARITH`, `TRAPEZE_GUEST_AMO`,
//! `TRAPEZE_GUEST_DEMO`, `TRAPEZE_GUEST_SV39`, `TRAPEZE_GUEST_INTERRUPTS`, `TRAPEZE_GUEST_FPU` and
//! `TRAPEZE_GUEST_IDLE`, and the benchmark guests `TRAPEZE_GUEST_BENCH_INT`, `TRAPEZE_GUEST_BENCH_MEM`,
//! `TRAPEZE_GUEST_BENCH_BRANCH`, `TRAPEZE_GUEST_BENCH_OUTSIDE` with their `_SMALL` variants, the containment guests `TRAPEZE_GUEST_CONTAIN`,
//! `TRAPEZE_GUEST_RUNAWAY` and `TRAPEZE_GUEST_GARBAGE`, `TRAPEZE_GUEST_UART_IRQ`, the debug trigger guest
//! `TRAPEZE_GUEST_TRIGGERS`, `TRAPEZE_GUEST_DEBUGGEE` for the gdb test and the multi-hart `TRAPEZE_GUEST_SPINLOCK`
//! and `TRAPEZE_GUEST_COUNTERS` (counter reads, its own code read back and rewritten), and
//! `TRAPEZE_GUEST_DISK_PATTERN` (a pattern across its whole virtio-blk disk, for the multi-VM test),
//! `TRAPEZE_GUEST_DISK_CRASH` (records written without end, for the test that kills the VMM mid-write) and
//! `TRAPEZE_GUEST_RTC` (the goldfish RTC the native board gives one VM, or its fault in another) and
//! `TRAPEZE_GUEST_PRINT_JOBS` (processes printing whole jobs through the spooled printer)
//! `TRAPEZE_GUEST_NET_PING` (two VMs exchanging frames over a bridge) and `TRAPEZE_GUEST_LITMUS` (memory-model
//! litmus tests on every hart)
//! (a `-` in a binary's name becomes `_`), read with `env!`. If the Rust target is missing, it is installed with
//! rustup.
use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target the guests are built for.
const TARGET: &str = "riscv64gc-unknown-none-elf";

/// The guest binaries, each exposed as `TRAPEZE_GUEST_<NAME>`.
const GUESTS: [&str; 32] = [
    "hello",
    "traps",
    "arith",
    "amo",
    "demo",
    "sv39",
    "interrupts",
    "fpu",
    "idle",
    "bench-int",
    "bench-int-small",
    "bench-mem",
    "bench-mem-small",
    "bench-branch",
    "bench-branch-small",
    "bench-outside",
    "bench-outside-small",
    "contain",
    "runaway",
    "garbage",
    "uart-irq",
    "triggers",
    "debuggee",
    "spinlock",
    "litmus",
    "hash-harts",
    "counters",
    "disk-pattern",
    "disk-crash",
    "rtc",
    "print-jobs",
    "net-ping",
];

/// The crates of the guests workspace (their directories are watched for changes).
const CRATES: [&str; 31] = [
    "rt",
    "torture",
    "hello",
    "traps",
    "arith",
    "amo",
    "demo",
    "sv39",
    "interrupts",
    "fpu",
    "idle",
    "bench-kernels",
    "bench-int",
    "bench-mem",
    "bench-branch",
    "outside-kernels",
    "bench-outside",
    "contain",
    "runaway",
    "garbage",
    "uart-irq",
    "triggers",
    "debuggee",
    "spinlock",
    "litmus",
    "hash-harts",
    "counters",
    "disk-pattern",
    "rtc",
    "print-jobs",
    "net-ping",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests_dir = manifest_dir.parent().expect("hosted-test lives inside the repository").join("guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("guests-target");

    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", guests_dir.join(file).display());
    }
    for krate in CRATES {
        println!("cargo:rerun-if-changed={}", guests_dir.join(krate).display());
    }

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(&guests_dir)
        .arg("build")
        .arg("--release")
        .arg("--workspace")
        .arg("--manifest-path")
        .arg(guests_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_environment(&mut command);
    let output = command.output().unwrap_or_else(|e| panic!("could not run cargo to build the guests: {e}"));
    if !output.status.success() {
        // Cargo's diagnostics are on stderr; stdout is reserved for this script's `cargo:` lines.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        panic!(
            "building the guest programs failed ({}); reproduce with: cargo build --release --manifest-path {} --target {TARGET}",
            output.status,
            guests_dir.join("Cargo.toml").display()
        );
    }

    let bin_dir = target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        let path = bin_dir.join(guest);
        assert!(path.is_file(), "the guest build did not produce {}", path.display());
        println!("cargo:rustc-env=TRAPEZE_GUEST_{}={}", guest.to_uppercase().replace('-', "_"), path.display());
    }
    println!("cargo:rustc-env=TRAPEZE_GUESTS_DIR={}", bin_dir.display());
}

/// Whether `name`, a variable the outer cargo (or the user) set, must not reach the nested build.
fn leaks_into_nested_build(name: &str) -> bool {
    const EXACT: [&str; 9] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_TARGET_DIR",
    ];
    // Kept: where cargo lives and how it reaches registries or prints.
    const KEEP_PREFIXES: [&str; 5] = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_TERM_"];
    EXACT.contains(&name)
        || name.starts_with("__CARGO")
        || (name.starts_with("CARGO_") && !KEEP_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// Removes from `command` the variables of the outer build: rustflags (`CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`,
/// `CARGO_TARGET_<triple>_*`), target and target-dir overrides (`CARGO_BUILD_*`, `CARGO_TARGET_DIR`), profile
/// settings (`CARGO_PROFILE_*`), clippy's wrapper, the jobserver (`CARGO_MAKEFLAGS`), `__CARGO_FIX_*`, and the
/// per-package variables cargo gives build scripts (`CARGO_PKG_*`, `CARGO_CFG_*`, `CARGO_FEATURE_*`...).
fn scrub_environment(command: &mut Command) {
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(leaks_into_nested_build) {
            command.env_remove(&name);
        }
    }
}

/// Makes sure the standard library for [`TARGET`] is installed, installing it with rustup if it is not.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Path| sysroot.join("lib/rustlib").join(TARGET).is_dir();
    match sysroot {
        Some(sysroot) if installed(&sysroot) => return,
        Some(_) => {}
        None => println!("cargo:warning=could not ask rustc for its sysroot; trying to install {TARGET} anyway"),
    }
    let mut rustup = Command::new("rustup");
    // Its stdout must not reach ours, which cargo reads for `cargo:` lines.
    rustup.args(["target", "add", TARGET]).stdout(Stdio::from(std::io::stderr()));
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "the Rust target {TARGET} is not installed and `rustup target add {TARGET}` failed ({status}); \
             install it with: rustup target add {TARGET}"
        ),
        Err(e) => panic!(
            "the Rust target {TARGET} is not installed and rustup could not be run ({e}); \
             install it with: rustup target add {TARGET}"
        ),
    }
}
