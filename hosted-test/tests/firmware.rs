//! Real firmware on the hosted runner: Debian's OpenSBI (generic platform) and U-Boot for `qemu-riscv64_smode`
//! boot unmodified, as on QEMU `virt`, to U-Boot's prompt; commands typed on the console are answered; U-Boot
//! finds and reads (and writes) the virtio disk.
//!
//! The packages `opensbi` and `u-boot-qemu` are installed by `run-tests.sh`; a missing one fails these tests
//! with the command to run.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Console;

const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";
const FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Boots fw_jump and U-Boot with `extra` options.
fn boot(extra: &[&str]) -> Console {
    let bios = require(FW_JUMP, "opensbi");
    let kernel = require(UBOOT, "u-boot-qemu");
    Console::spawn(&[&["--bios", bios.to_str().unwrap(), "--kernel", kernel.to_str().unwrap()], extra].concat())
}

/// Stops U-Boot's autoboot and waits for the prompt.
fn reach_prompt(console: &mut Console) {
    console.expect("Hit any key to stop autoboot", BOOT_TIMEOUT);
    console.type_line("");
    console.expect("=> ", COMMAND_TIMEOUT);
}

fn require(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(path.exists(), "{} is missing: install it with `apt-get install -y {package}`", path.display());
    path
}

#[test]
fn opensbi_fw_jump_boots_uboot_which_answers_commands() {
    let mut console = boot(&[]);
    console.expect("OpenSBI v", BOOT_TIMEOUT);
    console.expect("Platform Name             : riscv-virtio,qemu", COMMAND_TIMEOUT);
    console.expect("Domain0 Next Mode         : S-mode", COMMAND_TIMEOUT);
    console.expect("U-Boot 20", BOOT_TIMEOUT);
    console.expect("CPU:   rv64imafdc", COMMAND_TIMEOUT);
    reach_prompt(&mut console);
    console.command_within(COMMAND_TIMEOUT, "version", "U-Boot 20");
    console.command_within(COMMAND_TIMEOUT, "printenv arch", "arch=riscv");
    console.command_within(COMMAND_TIMEOUT, "printenv board_name", "board_name=qemu-riscv");
}

#[test]
fn opensbi_fw_dynamic_reports_both_harts_with_smp_2() {
    let bios = require(FW_DYNAMIC, "opensbi");
    let kernel = require(UBOOT, "u-boot-qemu");
    let mut console =
        Console::spawn(&["-smp", "2", "--bios", bios.to_str().unwrap(), "--kernel", kernel.to_str().unwrap()]);
    console.expect("Platform HART Count       : 2", BOOT_TIMEOUT);
    console.expect("Domain0 HARTs             : 0*,1*", COMMAND_TIMEOUT);
    reach_prompt(&mut console);
    console.command_within(COMMAND_TIMEOUT, "version", "U-Boot 20");
}

/// A 1 MiB disk image with a known pattern in sector 0 and in sector 5.
fn disk_image(dir: &Path) -> PathBuf {
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(b"trapeze-sector-0");
    image[5 * 512..5 * 512 + 16].copy_from_slice(b"trapeze-sector-5");
    let path = dir.join(format!("disk-{}.img", std::process::id()));
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn uboot_finds_reads_and_writes_the_virtio_disk() {
    let dir = std::env::temp_dir();
    let disk = disk_image(&dir);
    let mut console = boot(&["--disk", disk.to_str().unwrap()]);
    reach_prompt(&mut console);
    console.command_within(COMMAND_TIMEOUT, "virtio scan; virtio info", "Capacity: 1.0 MB = 0.0 GB (2048 x 512)");
    console.command_within(COMMAND_TIMEOUT, "virtio read 0x84000000 5 1", "1 blocks read: OK");
    console.command_within(COMMAND_TIMEOUT, "md.b 0x84000000 0x10", "74 72 61 70 65 7a 65 2d 73 65 63 74 6f 72 2d 35");
    console.command_within(COMMAND_TIMEOUT, "virtio read 0x84000000 0 1", "1 blocks read: OK");
    console.command_within(COMMAND_TIMEOUT, "md.b 0x84000000 0x10", "trapeze-sector-0");
    // A write reaches the image file before U-Boot is told it is done.
    console.command_within(
        COMMAND_TIMEOUT,
        "mw.b 0x84100000 0x5a 0x200; virtio write 0x84100000 3 1",
        "1 blocks written: OK",
    );
    let image = std::fs::read(&disk).unwrap();
    assert!(image[3 * 512..4 * 512].iter().all(|&byte| byte == 0x5a), "sector 3 holds what U-Boot wrote");
    assert_eq!(&image[..16], b"trapeze-sector-0", "other sectors are untouched");
    drop(console);
    let _ = std::fs::remove_file(disk);
}
