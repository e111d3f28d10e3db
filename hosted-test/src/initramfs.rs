//! A busybox initramfs for Debian's riscv64 kernel, built on the fly (a `newc` cpio archive) so no binary image is
//! committed: `trapeze bench --boot linux` boots it, and the tests that boot Linux include this file.
//!
//! What it must never do: depend on anything but its arguments (the tests compile it on its own, by `#[path]`).

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
    initramfs_with_modules(busybox, &[])
}

/// [`initramfs`], also carrying kernel `modules` (file names and contents, in load order: each after the modules it
/// needs) in `/lib/modules`: its `/init` then mounts devtmpfs on `/dev` (so `/dev/vda` appears once `virtio_blk`
/// finds a disk), loads them in order with `insmod`, and prints `trapeze-initramfs: modules loaded:` and the names
/// of those that loaded, before announcing itself. Without modules it is exactly [`initramfs`].
pub fn initramfs_with_modules(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    initramfs_with_modules_and_script(busybox, modules, "")
}

/// [`initramfs_with_modules`] whose `/init` also runs `script` (shell commands, with busybox's applets installed)
/// after announcing itself and before it starts the shell. With an empty script it is exactly
/// [`initramfs_with_modules`].
pub fn initramfs_with_modules_and_script(busybox: &[u8], modules: &[(String, Vec<u8>)], script: &str) -> Vec<u8> {
    const DIRECTORY: u32 = 0o040755;
    const EXECUTABLE: u32 = 0o100755;
    const FILE: u32 = 0o100644;
    const CHARACTER_DEVICE: u32 = 0o020600;
    let mut init = String::from(
        "#!/bin/busybox sh\n\
        /bin/busybox --install -s\n\
        mount -t proc proc /proc\n\
        mount -t sysfs sysfs /sys\n",
    );
    if !modules.is_empty() {
        let names: Vec<&str> = modules.iter().map(|(name, _)| name.as_str()).collect();
        init.push_str(&format!(
            "mount -t devtmpfs devtmpfs /dev\n\
            loaded=\n\
            for module in {}; do\n\
            \x20   insmod /lib/modules/$module && loaded=\"$loaded ${{module%.ko}}\"\n\
            done\n\
            echo \"trapeze-initramfs: modules loaded:$loaded\"\n",
            names.join(" ")
        ));
    }
    init.push_str("echo \"trapeze-initramfs: $(grep -c ^processor /proc/cpuinfo) harts online\"\n");
    init.push_str(script);
    if !script.is_empty() && !script.ends_with('\n') {
        init.push('\n');
    }
    init.push_str("exec /bin/sh\n");
    let mut archive = Vec::new();
    let mut directories = vec![".", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev"];
    if !modules.is_empty() {
        directories.extend(["lib", "lib/modules"]);
    }
    for (inode, name) in directories.into_iter().enumerate() {
        cpio_entry(&mut archive, inode as u32 + 1, name, DIRECTORY, (0, 0), b"");
    }
    cpio_entry(&mut archive, 18, "dev/null", CHARACTER_DEVICE | 0o066, (1, 3), b"");
    cpio_entry(&mut archive, 19, "dev/console", CHARACTER_DEVICE, (5, 1), b"");
    cpio_entry(&mut archive, 20, "bin/busybox", EXECUTABLE, (0, 0), busybox);
    cpio_entry(&mut archive, 21, "init", EXECUTABLE, (0, 0), init.as_bytes());
    for (index, (name, data)) in modules.iter().enumerate() {
        cpio_entry(&mut archive, 22 + index as u32, &format!("lib/modules/{name}"), FILE, (0, 0), data);
    }
    cpio_entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), b"");
    archive
}
