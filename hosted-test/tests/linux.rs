//! Debian's riscv64 Linux kernel boots on the hosted runner with OpenSBI `fw_dynamic` and two harts, to a shell
//! in a busybox initramfs, and runs commands typed on its console: with a host thread per hart (the default) on
//! the default engine (the translator on x86-64 hosts) and on the threaded engine, and with both harts on one
//! thread.
//!
//! `run-tests.sh` fetches the kernel (`linux-image-riscv64`) and `busybox-static` from Debian's riscv64 archive
//! into `target/guest-images` (`tools/fetch-debian-riscv64.sh`); this test builds the initramfs itself.

mod common;
#[path = "common/linux_images.rs"]
mod linux_images;

use std::path::Path;
use std::time::Duration;

use common::Console;
use linux_images::{guest_images, initramfs, require};

const FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn debian_linux_boots_on_two_harts_to_a_busybox_shell() {
    boot_to_a_shell(&[]);
}

/// The same boot with both harts on one host thread, round-robin.
#[test]
fn debian_linux_boots_on_two_harts_on_one_thread() {
    boot_to_a_shell(&["-accel", "tcg,thread=single"]);
}

/// The same boot on the threaded engine (the default engine is the translator on x86-64 hosts).
#[cfg(target_arch = "x86_64")]
#[test]
fn debian_linux_boots_on_the_threaded_engine() {
    boot_to_a_shell(&["--engine", "threaded"]);
}

fn boot_to_a_shell(engine: &[&str]) {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let kernel = require(&guest_images().join("Image"), fetch);
    let busybox = std::fs::read(require(&guest_images().join("busybox"), fetch)).unwrap();
    let bios = require(Path::new(FW_DYNAMIC), "install it with `apt-get install -y opensbi`");
    let name = format!("trapeze-initramfs-{}-{}.cpio", std::process::id(), engine.join("").replace(['-', ','], ""));
    let initrd = std::env::temp_dir().join(name);
    std::fs::write(&initrd, initramfs(&busybox)).unwrap();

    let mut console = Console::spawn(
        &[
            engine,
            &[
                "-smp",
                "2",
                "-m",
                "512M",
                "--bios",
                bios.to_str().unwrap(),
                "--kernel",
                kernel.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "--append",
                "console=ttyS0 earlycon=sbi",
            ],
        ]
        .concat(),
    );
    console.expect("Linux version", BOOT_TIMEOUT);
    console.expect("smp: Brought up 1 node, 2 CPUs", BOOT_TIMEOUT);
    console.expect("Run /init as init process", BOOT_TIMEOUT);
    console.expect("trapeze-initramfs: 2 harts online", BOOT_TIMEOUT);
    console.expect("# ", COMMAND_TIMEOUT);
    console.command_within(COMMAND_TIMEOUT, "echo answer=$((6 * 7))", "answer=42");
    console.command_within(COMMAND_TIMEOUT, "uname -m", "riscv64");
    console.command_within(COMMAND_TIMEOUT, "cat /sys/devices/system/cpu/online", "0-1");
    drop(console);
    let _ = std::fs::remove_file(initrd);
}
