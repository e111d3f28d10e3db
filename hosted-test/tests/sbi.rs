//! The VMM as the firmware (`--bios builtin`): no firmware image is loaded, the kernel starts in S-mode and every
//! SBI call is served by `trapeze::vm::sbi`. Debian's U-Boot for `qemu-riscv64_smode` boots to its prompt and
//! answers commands (on one hart and on two), and Debian's Linux kernel boots on two harts to a busybox shell,
//! which exercises HSM hart start, IPIs, remote fences and the SBI timer.
//!
//! `u-boot-qemu` is installed and the Debian kernel and busybox are fetched by `run-tests.sh`; a missing one
//! fails these tests with the command to run.

mod common;
#[path = "common/linux_images.rs"]
mod linux_images;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Console;
use linux_images::{guest_images, initramfs, require};

const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const LINUX_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn uboot() -> PathBuf {
    require(Path::new(UBOOT), "install it with `apt-get install -y u-boot-qemu`")
}

/// Boots U-Boot with the builtin SBI and `extra` options, and stops its autoboot at the prompt.
fn uboot_at_prompt(extra: &[&str]) -> Console {
    let kernel = uboot();
    let mut console = Console::spawn(&[&["--bios", "builtin", "--kernel", kernel.to_str().unwrap()], extra].concat());
    console.expect("U-Boot 20", BOOT_TIMEOUT);
    console.expect("CPU:   rv64imafdc", COMMAND_TIMEOUT);
    console.expect("Hit any key to stop autoboot", BOOT_TIMEOUT);
    console.type_line("");
    console.expect("=> ", COMMAND_TIMEOUT);
    console
}

#[test]
fn uboot_boots_on_the_builtin_sbi_and_answers_commands() {
    let mut console = uboot_at_prompt(&[]);
    console.command_within(COMMAND_TIMEOUT, "version", "U-Boot 20");
    // U-Boot's `sbi` command asks the base extension for the version and probes every extension it knows.
    console.command_within(COMMAND_TIMEOUT, "sbi", "SBI 2.0");
    for extension in [
        "Set Timer",
        "Console Putchar",
        "Send IPI",
        "Remote SFENCE.VMA with ASID",
        "System Shutdown",
        "SBI Base Functionality",
        "Timer Extension",
        "IPI Extension",
        "RFENCE Extension",
        "Hart State Management Extension",
        "System Reset Extension",
    ] {
        console.expect(extension, COMMAND_TIMEOUT);
    }
    // The timer: `sleep` waits on the `time` CSR, which S-mode may read.
    console.command_within(COMMAND_TIMEOUT, "sleep 1; echo slept", "slept");
    // A reset boots the machine again, without firmware again.
    console.command_within(COMMAND_TIMEOUT, "reset", "resetting");
    console.expect("U-Boot 20", BOOT_TIMEOUT);
    console.expect("Hit any key to stop autoboot", BOOT_TIMEOUT);
}

#[test]
fn uboot_boots_on_the_builtin_sbi_with_two_harts() {
    let mut console = uboot_at_prompt(&["-smp", "2"]);
    console.command_within(COMMAND_TIMEOUT, "version", "U-Boot 20");
    console.command_within(COMMAND_TIMEOUT, "printenv board_name", "board_name=qemu-riscv");
}

#[test]
fn the_builtin_sbi_runs_a_thread_per_hart_unless_one_thread_is_asked_for() {
    // The default: a thread per hart, the VMM's SBI shared between them (HSM start, IPIs, remote fences).
    let mut console = uboot_at_prompt(&["-smp", "2"]);
    assert_eq!(common::hart_threads(console.pid()), ["hart 0", "hart 1"]);
    console.command_within(COMMAND_TIMEOUT, "sbi", "SBI 2.0");
    // One thread, every hart in one `Vm`, as before.
    let mut console = uboot_at_prompt(&["-smp", "2", "-accel", "tcg,thread=single"]);
    assert_eq!(common::hart_threads(console.pid()), Vec::<String>::new());
    console.command_within(COMMAND_TIMEOUT, "version", "U-Boot 20");
}

#[test]
fn debian_linux_boots_on_the_builtin_sbi_on_two_harts() {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let kernel = require(&guest_images().join("Image"), fetch);
    let busybox = std::fs::read(require(&guest_images().join("busybox"), fetch)).unwrap();
    let initrd = std::env::temp_dir().join(format!("trapeze-sbi-initramfs-{}.cpio", std::process::id()));
    std::fs::write(&initrd, initramfs(&busybox)).unwrap();

    let mut console = Console::spawn(&[
        "-smp",
        "2",
        "-m",
        "512M",
        "--bios",
        "builtin",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--append",
        "console=ttyS0 earlycon=sbi",
    ]);
    console.expect("Linux version", LINUX_BOOT_TIMEOUT);
    console.expect("SBI specification v2.0 detected", LINUX_BOOT_TIMEOUT);
    console.expect("SBI implementation ID=0x54524150", COMMAND_TIMEOUT);
    console.expect("smp: Brought up 1 node, 2 CPUs", LINUX_BOOT_TIMEOUT);
    console.expect("Run /init as init process", LINUX_BOOT_TIMEOUT);
    console.expect("trapeze-initramfs: 2 harts online", LINUX_BOOT_TIMEOUT);
    console.expect("# ", COMMAND_TIMEOUT);
    console.command_within(COMMAND_TIMEOUT, "echo answer=$((6 * 7))", "answer=42");
    console.command_within(COMMAND_TIMEOUT, "cat /sys/devices/system/cpu/online", "0-1");
    // Work on both harts at once: the scheduler's IPIs and TLB shootdowns go through the SBI.
    console.type_line("seq 3000|md5sum& seq 3000|md5sum; wait");
    console.expect("ee9762749fc5338b6c9b0948d14219c7", COMMAND_TIMEOUT);
    console.expect("ee9762749fc5338b6c9b0948d14219c7", COMMAND_TIMEOUT);
    drop(console);
    let _ = std::fs::remove_file(initrd);
}
