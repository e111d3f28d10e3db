//! Build script of the guest runtime: puts the linker script `link.x` where the linker finds it.
//!
//! A `cargo:rustc-link-arg` of a library does not reach the binaries that depend on it, so each guest binary has
//! its own build script that passes `-Tlink.x`; this one only adds the directory holding `link.x` to the
//! library search path, which does propagate to every binary linking `rt`.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    fs::write(out.join("link.x"), include_bytes!("link.x")).expect("write link.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=link.x");
    println!("cargo:rerun-if-changed=build.rs");
}
