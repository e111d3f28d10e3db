//! Integration tests: run each guest program of `guests/` through the `trapeze` binary (`trapeze run IMAGE`) and
//! check its exact console output and exit status; the `arith` digest is compared with the same torture sequence
//! computed natively by the `torture` crate.
//!
//! The expected outputs in `tests/golden/` are what the guests print on `qemu-system-riscv64 -M virt -bios none`
//! (see `guests/README.md`), except `traps.out`, where the four misaligned SC/AMO checks are written as the
//! ISA requires (QEMU 7.2 gets those four wrong).
mod common;

use std::time::Duration;

use common::run_trapeze;

/// Options of `trapeze run` for every guest: a bound on the instructions, so a wedged guest ends the run.
const RUN_OPTIONS: [&str; 2] = ["--max-insns", "500000000"];

/// Wall-clock bound on one run, should the instruction bound not work.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `image` and asserts that it prints exactly `expected` and exits with status 0.
fn assert_guest_output(image: &str, expected: &str) {
    let run = run_trapeze(&[&RUN_OPTIONS[..], &[image]].concat(), TIMEOUT);
    if run.stdout != expected {
        let first_difference = run
            .stdout
            .lines()
            .zip(expected.lines())
            .position(|(got, want)| got != want)
            .unwrap_or_else(|| run.stdout.lines().count().min(expected.lines().count()));
        panic!(
            "unexpected output of {image} (first difference at line {}):\n--- got:\n{}\n--- expected:\n{}\n--- stderr:\n{}",
            first_difference + 1,
            run.stdout,
            expected,
            run.stderr
        );
    }
    assert_eq!(run.status.code(), Some(0), "{image} ended with {}; stderr:\n{}", run.status, run.stderr);
}

/// The guests with a golden output print exactly it on the threaded engine too (the other tests run the default
/// engine, the translator on x86-64 hosts).
#[cfg(target_arch = "x86_64")]
#[test]
fn every_guest_prints_the_same_on_the_threaded_engine() {
    let expected_arith = format!("arith digest: {:#018x}\n", torture::digest(torture::DEFAULT_OPS));
    let guests = [
        (env!("TRAPEZE_GUEST_HELLO"), include_str!("golden/hello.out")),
        (env!("TRAPEZE_GUEST_TRAPS"), include_str!("golden/traps.out")),
        (env!("TRAPEZE_GUEST_AMO"), include_str!("golden/amo.out")),
        (env!("TRAPEZE_GUEST_DEMO"), include_str!("golden/demo.out")),
        (env!("TRAPEZE_GUEST_ARITH"), &expected_arith),
    ];
    for (image, expected) in guests {
        let run = run_trapeze(&[&RUN_OPTIONS[..], &["--engine", "threaded", image]].concat(), TIMEOUT);
        assert_eq!(run.stdout, expected, "{image} on the threaded engine; stderr:\n{}", run.stderr);
        let status = run.status;
        assert_eq!(status.code(), Some(0), "{image} on the threaded engine ended with {status}:\n{}", run.stderr);
    }
}

#[test]
fn hello_guest_greets_and_exits_0() {
    assert_guest_output(env!("TRAPEZE_GUEST_HELLO"), "Hello from a trapeze guest!\n");
    assert_eq!(include_str!("golden/hello.out"), "Hello from a trapeze guest!\n");
}

#[test]
fn traps_guest_passes_every_check() {
    assert_guest_output(env!("TRAPEZE_GUEST_TRAPS"), include_str!("golden/traps.out"));
}

#[test]
fn amo_guest_passes_every_check() {
    assert_guest_output(env!("TRAPEZE_GUEST_AMO"), include_str!("golden/amo.out"));
}

#[test]
fn demo_guest_prints_its_show() {
    assert_guest_output(env!("TRAPEZE_GUEST_DEMO"), include_str!("golden/demo.out"));
}

/// The README's main command, `cargo run --release`, is `trapeze` with no arguments: it must run the bundled
/// demo with every option at its `trapeze run` default and exit 0.
#[test]
fn trapeze_alone_runs_the_bundled_demo() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the trapeze binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout, include_str!("golden/demo.out"), "stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn arith_guest_digest_matches_the_native_model() {
    let expected = format!("arith digest: {:#018x}\n", torture::digest(torture::DEFAULT_OPS));
    assert_guest_output(env!("TRAPEZE_GUEST_ARITH"), &expected);
}

/// The digest the `arith` guest printed on `qemu-system-riscv64` 7.2: pins the native model to real behaviour.
#[test]
fn native_torture_digest_matches_qemu() {
    assert_eq!(torture::digest(torture::DEFAULT_OPS), 0xb47c_8306_d8a3_2538);
}

/// The RISC-V-defined corner cases of the model, spelled out.
#[test]
fn torture_model_follows_the_isa() {
    use torture::{Alu, Model, Op};
    const MIN: u64 = i64::MIN as u64;
    const M1: u64 = u64::MAX; // -1
    let cases: [(Op, u64, u64, u64); 22] = [
        (Op::Div, MIN, M1, MIN),
        (Op::Rem, MIN, M1, 0),
        (Op::Div, 7, 0, M1),
        (Op::Divu, 7, 0, M1),
        (Op::Rem, 7, 0, 7),
        (Op::Remu, 7, 0, 7),
        (Op::Div, -7i64 as u64, 2, -3i64 as u64),
        (Op::Rem, -7i64 as u64, 2, M1),
        (Op::Divw, 0x1234_5678_8000_0000, M1, 0xffff_ffff_8000_0000),
        (Op::Remw, 0x1234_5678_8000_0000, M1, 0),
        (Op::Divuw, 5, 0x1_0000_0000, M1),
        (Op::Remuw, 0xffff_ffff, 0x1_0000_0000, M1),
        (Op::Remw, 0x0000_0001_8000_0000, 0, 0xffff_ffff_8000_0000),
        (Op::Mulh, M1, M1, 0),
        (Op::Mulhu, M1, M1, M1 - 1),
        (Op::Mulhsu, M1, M1, M1),
        (Op::Mulhsu, MIN, M1, MIN),
        (Op::Mulw, 0x7fff_ffff, 2, M1 - 1),
        (Op::Sraw, 0x8000_0000, 63, M1),
        (Op::Srlw, 0x8000_0000, 0, 0xffff_ffff_8000_0000),
        (Op::SltiuN1, 5, 0, 1),
        (Op::Sll, 1, 64 + 3, 8),
    ];
    for (op, a, b, want) in cases {
        assert_eq!(Model::exec(op, a, b), want, "{op:?}({a:#x}, {b:#x})");
    }
}

/// Every guest image exists and is a 64-bit little-endian RISC-V ELF executable.
#[test]
fn guest_images_are_riscv64_elf_files() {
    for image in [
        env!("TRAPEZE_GUEST_HELLO"),
        env!("TRAPEZE_GUEST_TRAPS"),
        env!("TRAPEZE_GUEST_ARITH"),
        env!("TRAPEZE_GUEST_AMO"),
        env!("TRAPEZE_GUEST_DEMO"),
    ] {
        let bytes = std::fs::read(image).unwrap_or_else(|e| panic!("read {image}: {e}"));
        assert_eq!(&bytes[..4], b"\x7fELF", "{image}");
        assert_eq!(bytes[4], 2, "{image}: ELFCLASS64");
        assert_eq!(bytes[5], 1, "{image}: little-endian");
        assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 243, "{image}: EM_RISCV");
        assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 2, "{image}: ET_EXEC");
    }
}

/// A guest reset (`sifive,test0` status 0x7777) boots the machine again from zeroed RAM: a program that finds its
/// mark at RAM + 1 MiB set powers off with failure, else sets it, prints `b` and resets. Three boots in a row
/// print `b`, and none fails.
#[test]
fn a_reset_boots_again_from_zeroed_ram() {
    use trapeze::isa::{encode, BranchCond, Inst, LoadWidth, OpImmKind, StoreWidth};
    let li = |rd, imm| Inst::OpImm { op: OpImmKind::Addi, rd, rs1: 0, imm };
    let (t0, t1, t2, t3) = (5, 6, 7, 28);
    let program = [
        Inst::Auipc { rd: t0, imm: 0x10_0000 },
        Inst::Load { width: LoadWidth::D, rd: t1, rs1: t0, offset: 0 },
        Inst::Branch { cond: BranchCond::Ne, rs1: t1, rs2: 0, offset: 4 * 13 },
        li(t1, 1),
        Inst::Store { width: StoreWidth::D, rs1: t0, rs2: t1, offset: 0 },
        Inst::Lui { rd: t2, imm: 0x1000_0000 },
        li(t3, b'b' as i32),
        Inst::Store { width: StoreWidth::B, rs1: t2, rs2: t3, offset: 0 },
        li(t3, b'\n' as i32),
        Inst::Store { width: StoreWidth::B, rs1: t2, rs2: t3, offset: 0 },
        // Reset: the finisher at 0x10_0000 takes 0x7777.
        Inst::Lui { rd: t2, imm: 0x10_0000 },
        Inst::Lui { rd: t3, imm: 0x7000 },
        Inst::OpImm { op: OpImmKind::Addi, rd: t3, rs1: t3, imm: 0x777 },
        Inst::Store { width: StoreWidth::W, rs1: t2, rs2: t3, offset: 0 },
        Inst::Jal { rd: 0, offset: 0 },
        // The mark was set: power off with code 1 (0x1_3333).
        Inst::Lui { rd: t2, imm: 0x10_0000 },
        Inst::Lui { rd: t3, imm: 0x1_3000 },
        Inst::OpImm { op: OpImmKind::Addi, rd: t3, rs1: t3, imm: 0x333 },
        Inst::Store { width: StoreWidth::W, rs1: t2, rs2: t3, offset: 0 },
        Inst::Jal { rd: 0, offset: 0 },
    ];
    let image = std::env::temp_dir().join(format!("trapeze-reset-{}.bin", std::process::id()));
    std::fs::write(&image, program.iter().flat_map(|inst| encode(inst).to_le_bytes()).collect::<Vec<u8>>())
        .expect("write the program");
    let mut console = common::Console::spawn(&[image.to_str().unwrap()]);
    for _ in 0..3 {
        console.expect("b\n", TIMEOUT);
    }
    drop(console);
    let _ = std::fs::remove_file(&image);
}
