//! Debian's riscv64 Linux kernel boots on the hosted runner with OpenSBI `fw_dynamic` and two harts, to a shell
//! in a busybox initramfs, and runs commands typed on its console.
//!
//! `run-tests.sh` fetches the kernel (`linux-image-riscv64`) and `busybox-static` from Debian's riscv64 archive
//! into `target/guest-images` (`tools/fetch-debian-riscv64.sh`); this test builds the initramfs itself.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Console;

const FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn guest_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-images")
}

fn require(path: &Path, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path.to_path_buf()
}

/// Appends one `newc` cpio entry.
fn cpio_entry(archive: &mut Vec<u8>, inode: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [inode, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    archive.extend_from_slice(b"070701");
    for field in fields {
        archive.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    archive.extend_from_slice(name.as_bytes());
    archive.push(0);
    archive.resize(archive.len().next_multiple_of(4), 0);
    archive.extend_from_slice(data);
    archive.resize(archive.len().next_multiple_of(4), 0);
}

/// An initramfs with busybox, a console device and an `/init` that announces itself and starts a shell.
fn initramfs(busybox: &[u8]) -> Vec<u8> {
    const DIRECTORY: u32 = 0o040755;
    const EXECUTABLE: u32 = 0o100755;
    const CHARACTER_DEVICE: u32 = 0o020600;
    let init = b"#!/bin/busybox sh\n\
        /bin/busybox --install -s\n\
        mount -t proc proc /proc\n\
        mount -t sysfs sysfs /sys\n\
        echo \"trapeze-initramfs: $(grep -c ^processor /proc/cpuinfo) harts online\"\n\
        exec /bin/sh\n";
    let mut archive = Vec::new();
    let directories = [".", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev"];
    for (inode, name) in directories.into_iter().enumerate() {
        cpio_entry(&mut archive, inode as u32 + 1, name, DIRECTORY, (0, 0), b"");
    }
    cpio_entry(&mut archive, 19, "dev/console", CHARACTER_DEVICE, (5, 1), b"");
    cpio_entry(&mut archive, 20, "bin/busybox", EXECUTABLE, (0, 0), busybox);
    cpio_entry(&mut archive, 21, "init", EXECUTABLE, (0, 0), init);
    cpio_entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), b"");
    archive
}

#[test]
fn debian_linux_boots_on_two_harts_to_a_busybox_shell() {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let kernel = require(&guest_images().join("Image"), fetch);
    let busybox = std::fs::read(require(&guest_images().join("busybox"), fetch)).unwrap();
    let bios = require(Path::new(FW_DYNAMIC), "install it with `apt-get install -y opensbi`");
    let initrd = std::env::temp_dir().join(format!("trapeze-initramfs-{}.cpio", std::process::id()));
    std::fs::write(&initrd, initramfs(&busybox)).unwrap();

    let mut console = Console::spawn(&[
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
    ]);
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
