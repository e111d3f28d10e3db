//! The benchmark guests are known to be correct: the small variant of each (`bench-*-small`, the same code as the
//! measured workload at a smaller scale) runs under `trapeze run` and must print the report and checksum that the
//! `bench-kernels` crate computes natively; the full-scale native checksums are pinned to what the full guests
//! printed on QEMU 7.2 and trapeze; and `trapeze bench --small` runs to the end with agreeing checksums. Nothing
//! here is timed.
use std::process::{Command, Output, Stdio};

use bench_kernels::{branch, int, mem, ChecksumLine};

#[path = "common/linux_images.rs"]
mod linux_images;

/// A bound on a run's instructions far above what any small variant needs, so a wedged guest fails the test.
const MAX_INSNS: &str = "2000000000";

fn trapeze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the trapeze binary")
}

/// Runs `image` and asserts it exits 0 after printing `name: <report>` and the checksum line.
fn assert_guest_prints(image: &str, name: &str, report: &str, checksum: u64) {
    let run = trapeze(&["run", "--max-insns", MAX_INSNS, image]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{name} ended with {}; stdout:\n{stdout}\nstderr:\n{stderr}", run.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{name} printed:\n{stdout}");
    assert_eq!(lines[0], format!("{name}: {report}"));
    assert_eq!(lines[1], ChecksumLine(name, checksum).to_string());
    assert!(lines[2].starts_with(&format!("{name}: ")) && lines[2].ends_with(" mtime ticks"), "{}", lines[2]);
}

#[test]
fn int_guest_matches_the_native_kernels() {
    let report = int::run(int::SMALL, &mut Box::default());
    assert_guest_prints(
        env!("TRAPEZE_GUEST_BENCH_INT_SMALL"),
        "bench-int-small",
        &report.to_string(),
        report.checksum(),
    );
}

#[test]
fn mem_guest_matches_the_native_kernels() {
    let report = mem::run(mem::SMALL, &mut vec![0; mem::WORDS]);
    assert_guest_prints(
        env!("TRAPEZE_GUEST_BENCH_MEM_SMALL"),
        "bench-mem-small",
        &report.to_string(),
        report.checksum(),
    );
}

#[test]
fn branch_guest_matches_the_native_kernels() {
    let report = branch::run(branch::SMALL, &mut Box::default());
    assert_guest_prints(
        env!("TRAPEZE_GUEST_BENCH_BRANCH_SMALL"),
        "bench-branch-small",
        &report.to_string(),
        report.checksum(),
    );
}

/// What the full-scale guests printed on `qemu-system-riscv64` 7.2 (and on trapeze): pins the native kernels, and
/// so the small-variant tests above, to the workloads `trapeze bench` measures.
#[test]
fn native_full_checksums_match_qemu() {
    assert_eq!(int::run(int::FULL, &mut Box::default()).checksum(), 0x92c9_1b48_827c_e4f5);
    assert_eq!(mem::run(mem::FULL, &mut vec![0; mem::WORDS]).checksum(), 0x5857_4df9_8157_6698);
    assert_eq!(branch::run(branch::FULL, &mut Box::default()).checksum(), 0x8fbd_1486_bfaf_6401);
}

/// The kernels compute what they claim: sorts sort, CRC-32 is the standard one, the bytecode program is Euclid.
#[test]
fn kernels_compute_known_results() {
    let mut rng = bench_kernels::Rng::new(7);
    for length in [0, 1, 2, 17, 100, 1000, 5000] {
        let data: Vec<u32> = (0..length).map(|_| rng.below(50)).collect();
        let mut expected = data.clone();
        expected.sort_unstable();
        let mut quick = data.clone();
        int::quicksort(&mut quick);
        assert_eq!(quick, expected, "quicksort of {length} elements");
        let mut heap = data;
        int::heapsort(&mut heap);
        assert_eq!(heap, expected, "heapsort of {length} elements");
    }
    let mut table = [0; 256];
    int::crc32_table(&mut table);
    assert_eq!(int::crc32(&table, b"123456789"), 0xcbf4_3926);
    let mut program = [0; 128];
    let length = int::gcd_program(&mut program);
    for (a, m) in [(0, 5), (1, 1), (12, 18), (30, 35)] {
        let mut locals = [0u64; 8];
        locals[1] = a;
        locals[6] = m;
        int::execute(&program[..length], &mut locals);
        assert_eq!(locals[0], int::gcd_program_native(a, m), "gcd program for {a} x {m}");
    }
    assert_eq!(int::gcd_program_native(2, 2), (31 * 2 + 1) * 31 * 31 + 31 + 1);
    assert_eq!(branch::fib(20), 6765);
}

#[test]
fn bench_command_runs_the_small_workloads() {
    let run = trapeze(&["bench", "--small", "--iterations", "1"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "trapeze bench failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("guest MIPS"), "{stdout}");
    for name in ["int", "mem", "branch"] {
        let engines = ["interp", "threaded", "tiny-flush", "tiny-fifo", "small-flush", "small-fifo"];
        #[cfg(target_arch = "x86_64")]
        let engines = [&engines[..], &["dbt"]].concat();
        for engine in engines {
            let row = |line: &&str| line.starts_with(name) && line.contains(engine);
            assert!(stdout.lines().any(|line| row(&line)), "{name} on {engine}: {stdout}");
        }
        assert!(stdout.contains(&format!("bench-{name}-small: checksum 0x")), "{name}: {stdout}");
    }
    assert!(stdout.contains("every run printed the same checksum line"), "{stdout}");
}

#[test]
fn bench_command_rejects_an_unknown_engine() {
    let run = trapeze(&["bench", "--engine", "warp-drive", "--no-qemu"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains(
        "unknown engine `warp-drive` (known: interp, threaded, tiny-flush, tiny-fifo, small-flush, small-fifo"
    ));
}

/// `trapeze bench --boot`: OpenSBI + U-Boot and OpenSBI + Linux come up on each engine and on QEMU (which the suite
/// installs), and the table gives every one a time and a ratio.
#[test]
fn bench_command_times_real_boots_on_the_engines_and_on_qemu() {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let images = linux_images::guest_images();
    let kernel = linux_images::require(&images.join("Image"), fetch);
    let busybox = linux_images::require(&images.join("busybox"), fetch);
    let mut args = vec!["bench", "--boot", "uboot", "--boot", "linux", "--engine", "threaded"];
    #[cfg(target_arch = "x86_64")]
    args.extend(["--engine", "dbt"]);
    let (kernel, busybox) = (kernel.to_str().unwrap(), busybox.to_str().unwrap());
    args.extend(["--linux-kernel", kernel, "--busybox", busybox]);
    let run = trapeze(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "trapeze bench --boot failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(!stdout.contains("guest MIPS"), "--boot without --workload runs only the boots:\n{stdout}");
    let header = stdout.lines().find(|line| line.starts_with("boot ")).unwrap_or_else(|| panic!("{stdout}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert!(columns.contains(&"QEMU") && columns.contains(&"threaded/QEMU"), "QEMU is compared: {header}");
    for boot in ["uboot", "linux"] {
        let row = stdout.lines().find(|line| line.starts_with(boot)).unwrap_or_else(|| panic!("{boot}: {stdout}"));
        let cells: Vec<f64> = row.split_whitespace().skip(1).map(|cell| cell.parse().unwrap()).collect();
        assert_eq!(cells.len(), columns.len() - 1, "a figure in every column: {row}");
        assert!(cells.iter().all(|&seconds| seconds > 0.0), "{row}");
    }
}

#[test]
fn bench_command_names_what_a_boot_is_missing() {
    let run = trapeze(&["bench", "--boot", "linux", "--no-qemu", "--engine", "threaded"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--boot linux needs --linux-kernel IMAGE"));
    let run = trapeze(&["bench", "--boot", "windows", "--no-qemu", "--engine", "threaded"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown boot \"windows\": the boots are uboot, linux"));
}
