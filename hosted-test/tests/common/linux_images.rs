//! Linux test images shared by the tests that boot Debian's kernel: where `run-tests.sh` fetched them, and the
//! busybox initramfs `trapeze bench` builds too (`src/initramfs.rs`).

use std::path::{Path, PathBuf};

#[path = "../../src/initramfs.rs"]
#[allow(dead_code)] // each test uses the builders it needs
mod initramfs;
#[allow(unused_imports)] // each test uses the builders it needs
pub use initramfs::{initramfs, initramfs_with_modules, initramfs_with_modules_and_script};

/// `path`, which must exist; else a panic that says how to get it.
pub fn require(path: &Path, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path.to_path_buf()
}

/// Where `tools/fetch-debian-riscv64.sh` (run by `run-tests.sh`) puts Debian's kernel `Image` and `busybox`.
pub fn guest_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-images")
}

/// The kernel modules `tools/fetch-debian-riscv64.sh` extracted next to the kernel (`modules/`, decompressed), in
/// the order `modules/modules.order` gives (each after the modules it needs): their file names and contents. None
/// if they were not fetched.
#[allow(dead_code)] // not every test that boots Linux loads modules
pub fn modules() -> Vec<(String, Vec<u8>)> {
    let directory = guest_images().join("modules");
    let Ok(order) = std::fs::read_to_string(directory.join("modules.order")) else {
        return Vec::new();
    };
    order
        .lines()
        .filter(|name| !name.trim().is_empty())
        .map(|name| {
            let name = name.trim().to_string();
            let data = std::fs::read(directory.join(&name)).unwrap_or_else(|e| panic!("read module {name}: {e}"));
            (name, data)
        })
        .collect()
}
