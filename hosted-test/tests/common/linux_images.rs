//! Linux test images shared by the tests that boot Debian's kernel: where `run-tests.sh` fetched them, and a
//! busybox initramfs built on the fly (a `newc` cpio archive), so no binary image is committed.

use std::path::{Path, PathBuf};

/// `path`, which must exist; else a panic that says how to get it.
pub fn require(path: &Path, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path.to_path_buf()
}

/// Where `tools/fetch-debian-riscv64.sh` (run by `run-tests.sh`) puts Debian's kernel `Image` and `busybox`.
pub fn guest_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-images")
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

/// An initramfs with busybox, `/dev/console` and `/dev/null` (a background job's input), and an `/init` that
/// announces itself and starts a shell.
pub fn initramfs(busybox: &[u8]) -> Vec<u8> {
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
    cpio_entry(&mut archive, 18, "dev/null", CHARACTER_DEVICE | 0o066, (1, 3), b"");
    cpio_entry(&mut archive, 19, "dev/console", CHARACTER_DEVICE, (5, 1), b"");
    cpio_entry(&mut archive, 20, "bin/busybox", EXECUTABLE, (0, 0), busybox);
    cpio_entry(&mut archive, 21, "init", EXECUTABLE, (0, 0), init);
    cpio_entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), b"");
    archive
}
