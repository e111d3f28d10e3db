//! Lockstep differential testing: `trapeze run --lockstep --engine threaded` runs the threaded engine and the
//! reference interpreter side by side on two copies of the machine and compares every hart's architectural state after each 64
//! instructions (and RAM now and then); any difference ends the run with status 4. Every guest program runs so,
//! with the normal code cache and with one far too small for the working set, the lock-heavy `spinlock` guest on
//! three harts, and so does the OpenSBI + U-Boot boot up to U-Boot's prompt. On x86-64 hosts the dynamic binary
//! translator (`--engine dbt`) is run against the interpreter the same way.

use std::process::{Command, Stdio};

/// Runs `trapeze run --lockstep ARGS` and returns its exit code and stderr.
fn lockstep(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(["run", "--lockstep"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("trapeze runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

const GUESTS: [&str; 9] = [
    env!("TRAPEZE_GUEST_HELLO"),
    env!("TRAPEZE_GUEST_TRAPS"),
    env!("TRAPEZE_GUEST_AMO"),
    env!("TRAPEZE_GUEST_DEMO"),
    env!("TRAPEZE_GUEST_ARITH"),
    env!("TRAPEZE_GUEST_SV39"),
    env!("TRAPEZE_GUEST_INTERRUPTS"),
    env!("TRAPEZE_GUEST_FPU"),
    env!("TRAPEZE_GUEST_UART_IRQ"),
];

fn every_guest_agrees(cache: &str) {
    for guest in GUESTS {
        let (code, stderr) = lockstep(&["--engine", "threaded", "--code-cache", cache, guest]);
        assert!(stderr.contains("no divergence"), "{guest} with the {cache} cache:\n{stderr}");
        assert_eq!(code, Some(0), "{guest} with the {cache} cache:\n{stderr}");
    }
}

#[test]
fn every_guest_runs_identically_on_both_engines() {
    every_guest_agrees("hosted");
}

#[test]
fn a_code_cache_too_small_for_the_working_set_changes_nothing() {
    every_guest_agrees("tiny");
}

/// Three harts contending for one lock: both machines must make the same scheduling decisions (turns that go
/// on after exits, turns given up at `pause` and at spin checks), whatever the code cache keeps.
#[test]
fn three_harts_sharing_a_lock_run_identically_on_both_engines() {
    for cache in ["hosted", "tiny"] {
        let (code, stderr) =
            lockstep(&["--engine", "threaded", "-smp", "3", "--code-cache", cache, env!("TRAPEZE_GUEST_SPINLOCK")]);
        assert!(stderr.contains("no divergence"), "{cache} cache: {stderr}");
        assert_eq!(code, Some(0), "{cache} cache: {stderr}");
    }
}

fn opensbi_and_uboot_agree(engine: &[&str]) {
    let bios = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";
    let kernel = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
    for (path, package) in [(bios, "opensbi"), (kernel, "u-boot-qemu")] {
        assert!(std::path::Path::new(path).exists(), "{path} is missing: apt-get install -y {package}");
    }
    // 1 µs of guest time per instruction lets U-Boot's autoboot countdown pass within the run.
    let options = ["--icount", "10", "--max-insns", "30000000", "--bios", bios, "--kernel", kernel];
    let (code, stderr) = lockstep(&[engine, &options[..]].concat());
    assert!(stderr.contains("no divergence"), "{stderr}");
    assert_eq!(code, Some(3), "the run ends at the instruction limit:\n{stderr}");
}

#[test]
fn opensbi_and_uboot_boot_identically_on_both_engines() {
    opensbi_and_uboot_agree(&["--engine", "threaded"]);
}

/// Every guest, and three harts sharing a lock, run on the translator exactly as on the interpreter.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_guest_runs_identically_on_the_translator() {
    for guest in GUESTS {
        let (code, stderr) = lockstep(&["--engine", "dbt", guest]);
        assert!(stderr.contains("no divergence"), "{guest} on the translator:\n{stderr}");
        assert_eq!(code, Some(0), "{guest} on the translator:\n{stderr}");
    }
    let (code, stderr) = lockstep(&["--engine", "dbt", "-smp", "3", env!("TRAPEZE_GUEST_SPINLOCK")]);
    assert!(stderr.contains("no divergence"), "spinlock on the translator: {stderr}");
    assert_eq!(code, Some(0), "spinlock on the translator: {stderr}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn opensbi_and_uboot_boot_identically_on_the_translator() {
    opensbi_and_uboot_agree(&["--engine", "dbt"]);
}
