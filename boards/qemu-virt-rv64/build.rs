//! Build script of the board: puts `memory.x` where the linker finds it, and builds the guest programs the board
//! runs (from `../../guests`, for `riscv64gc-unknown-none-elf`, in release mode, in a target directory of their
//! own under `OUT_DIR`), exposing each binary's path as `BOARD_GUEST_<NAME>` for `include_bytes!`, and names
//! Debian's U-Boot (`BOARD_UBOOT`; `TRAPEZE_UBOOT` overrides the path).
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// Debian's U-Boot for QEMU `virt` in S-mode (package `u-boot-qemu`).
const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
/// The guests the board embeds.
const GUESTS: [&str; 15] = [
    "hello",
    "sv39",
    "interrupts",
    "idle",
    "fpu",
    "arith",
    "amo",
    "contain",
    "bench-int",
    "counters",
    "rtc",
    "disk-pattern",
    "net-ping",
    "print-jobs",
    "hash-harts",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy(manifest_dir.join("memory.x"), out_dir.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rerun-if-changed=memory.x");

    let guests_dir = manifest_dir.join("../../guests");
    let guests_dir = guests_dir.canonicalize().unwrap_or(guests_dir);
    for entry in ["Cargo.toml", "Cargo.lock", "rt"].iter().chain(GUESTS.iter()) {
        println!("cargo:rerun-if-changed={}", guests_dir.join(entry).display());
    }
    let target_dir = out_dir.join("guests-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command.current_dir(&guests_dir).args(["build", "--release", "--target", TARGET]);
    for guest in GUESTS {
        command.args(["-p", guest]);
    }
    command.arg("--manifest-path").arg(guests_dir.join("Cargo.toml")).arg("--target-dir").arg(&target_dir);
    // The outer build's flags (the board's linker scripts, code model, target directory...) must not leak in.
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let keep = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_TERM_"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        let leaks = name == "RUSTFLAGS"
            || name == "RUSTC_WORKSPACE_WRAPPER"
            || name == "DEFMT_LOG"
            || name.ends_with("MAKEFLAGS")
            || name.starts_with("__CARGO")
            || (name.starts_with("CARGO_") && !keep);
        if leaks {
            command.env_remove(name);
        }
    }
    let output = command.output().unwrap_or_else(|e| panic!("could not run cargo to build the guests: {e}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building the guests failed ({})", output.status);
    }
    // U-Boot for QEMU virt in S-mode (Debian's `u-boot-qemu`), a guest of the VMM's own SBI.
    let uboot = env::var_os("TRAPEZE_UBOOT").map_or_else(|| PathBuf::from(UBOOT), PathBuf::from);
    println!("cargo:rerun-if-env-changed=TRAPEZE_UBOOT");
    println!("cargo:rerun-if-changed={}", uboot.display());
    assert!(
        uboot.is_file(),
        "{} is missing: install it with `apt-get install -y u-boot-qemu` (./run-tests.sh does), or name another \
         qemu-riscv64_smode u-boot.bin in TRAPEZE_UBOOT",
        uboot.display()
    );
    println!("cargo:rustc-env=BOARD_UBOOT={}", uboot.display());

    let bin_dir = target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        let path = bin_dir.join(guest);
        assert!(path.is_file(), "the guest build did not produce {}", path.display());
        println!("cargo:rustc-env=BOARD_GUEST_{}={}", guest.to_uppercase().replace('-', "_"), path.display());
    }
}
