//! Build script of a guest binary: links it with the runtime's linker script (found on the search path `rt` adds).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}
