//! The native VMM board under QEMU: builds `boards/qemu-virt-rv64` for `riscv64gc-unknown-none-elf`, boots it on
//! `qemu-system-riscv64 -M virt -bios none` with a timeout, and checks that every VM printed its expected output,
//! that the board's summary says they all passed, that QEMU's exit status (the board's, through the
//! `sifive,test0` finisher) is 0, and that the board's defmt log decodes on the host.
//!
//! QEMU (`qemu-system-misc`) and `defmt-print` are installed by `./run-tests.sh`; when either is missing this test
//! fails and says how to install it.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// The board boots three small guests; QEMU needs a few seconds. Generous for a loaded CI machine.
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("hosted-test lives in the repository").to_path_buf()
}

/// Whether `name`, a variable of the outer `cargo test`, must not reach the board's own build.
fn leaks_into_nested_build(name: &str) -> bool {
    let keep = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_TERM_"];
    name == "RUSTFLAGS"
        || name == "RUSTDOCFLAGS"
        || name == "RUSTC_WORKSPACE_WRAPPER"
        || name.ends_with("MAKEFLAGS")
        || name.starts_with("__CARGO")
        || (name.starts_with("CARGO_") && !keep.iter().any(|prefix| name.starts_with(prefix)))
}

/// Builds the board and returns the path of its ELF.
fn build_board(board: &Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command.current_dir(board).args(["build", "--release"]);
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(leaks_into_nested_build) {
            command.env_remove(&name);
        }
    }
    let output = command.output().unwrap_or_else(|e| panic!("could not run cargo to build the board: {e}"));
    assert!(
        output.status.success(),
        "building the board failed ({}); reproduce with: (cd {} && cargo build --release)\n{}",
        output.status,
        board.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let elf = board.join("target").join(TARGET).join("release").join("trapeze-board");
    assert!(elf.is_file(), "the board build did not produce {}", elf.display());
    elf
}

/// `program` if it runs (`--version`), else a panic saying how to install it.
fn require_tool(program: &Path, install: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !found.is_ok_and(|status| status.success()) {
        panic!("{} is missing: {install} (./run-tests.sh installs it)", program.display());
    }
}

/// `defmt-print`: `$DEFMT_PRINT`, else the copy `./run-tests.sh` installs under `target/tools`, else `PATH`'s.
fn defmt_print() -> PathBuf {
    if let Some(path) = env::var_os("DEFMT_PRINT") {
        return PathBuf::from(path);
    }
    let installed = repository().join("target/tools/bin/defmt-print");
    if installed.is_file() {
        installed
    } else {
        PathBuf::from("defmt-print")
    }
}

struct Boot {
    console: String,
    status: Option<i32>,
    defmt: PathBuf,
}

/// Boots `elf` with the board's runner script, killing QEMU after [`QEMU_TIMEOUT`].
fn boot(board: &Path, elf: &Path) -> Boot {
    let defmt = elf.with_extension("test.defmt");
    let console_path = elf.with_extension("test.console");
    let console_file = std::fs::File::create(&console_path).expect("create the console capture file");
    let mut child = Command::new(board.join("run-qemu.sh"))
        .arg(elf)
        .env("DEFMT_OUT", &defmt)
        .stdin(Stdio::null())
        .stdout(console_file)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start QEMU through run-qemu.sh: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for QEMU") {
            break status;
        }
        if start.elapsed() > QEMU_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let console = std::fs::read_to_string(&console_path).unwrap_or_default();
            panic!("the board did not finish within {QEMU_TIMEOUT:?}; its console so far:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = std::fs::read_to_string(&console_path).expect("read the console capture");
    Boot { console, status: status.code(), defmt }
}

#[test]
fn two_hello_vms_and_the_sv39_vm_run_natively_under_qemu() {
    require_tool(Path::new("qemu-system-riscv64"), "install QEMU with `apt-get install -y qemu-system-misc`");
    let defmt_print = defmt_print();
    require_tool(
        &defmt_print,
        "install it with `cargo install --locked defmt-print --root target/tools` at the repository root",
    );
    let board = repository().join("boards/qemu-virt-rv64");
    let elf = build_board(&board);
    let boot = boot(&board, &elf);
    let console = &boot.console;
    for expected in [
        "trapeze native VMM on qemu-virt-rv64",
        "[vm0] Hello from a trapeze guest!\n",
        "[vm1] Hello from a trapeze guest!\n",
        "[vm2] sv39: all 34 checks passed\n",
        "board: 3 of 3 VMs passed\n",
    ] {
        assert!(console.contains(expected), "the console lacks {expected:?}; it was:\n{console}");
    }
    assert!(!console.contains("FAIL"), "a guest check failed:\n{console}");
    assert_eq!(boot.status, Some(0), "QEMU's exit status is the board's; the console was:\n{console}");

    let decoded = Command::new(&defmt_print)
        .arg("-e")
        .arg(&elf)
        .stdin(std::fs::File::open(&boot.defmt).expect("open the defmt capture"))
        .output()
        .expect("run defmt-print");
    let log = String::from_utf8_lossy(&decoded.stdout);
    assert!(log.contains("board up"), "the defmt log did not decode to the board's messages: {log:?}");
    println!("{console}");
}
