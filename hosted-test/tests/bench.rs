//! The benchmark guests are known to be correct: the small variant of each (`bench-*-small`, the same code as the
//! measured workload at a smaller scale) runs under `trapeze run` and must print the report and checksum that the
//! `bench-kernels` crate computes natively; the full-scale native checksums are pinned to what the full guests
//! printed on QEMU 7.2 and trapeze; and `trapeze bench --small` runs to the end with agreeing checksums. Nothing
//! here is timed.
//!
//! `bench-outside` (kernels from crates this project did not write) is checked the same way against
//! `outside-kernels` run natively with the same crates, on every engine and on `qemu-system-riscv64`, which
//! `./run-tests.sh` installs: a missing QEMU fails the test.
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    assert_run_prints(&trapeze(&["run", "--max-insns", MAX_INSNS, image]), name, report, checksum);
}

/// Asserts `run` of a bench guest exited 0 after printing `name: <report>`, the checksum line and its ticks.
fn assert_run_prints(run: &Output, name: &str, report: &str, checksum: u64) {
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

/// The engines of `trapeze run --engine`.
fn run_engines() -> Vec<&'static str> {
    let engines = vec!["interp", "threaded"];
    #[cfg(target_arch = "x86_64")]
    let engines = [engines, vec!["dbt"]].concat();
    engines
}

/// Bound on a QEMU run of a bench guest (the full `bench-outside` takes well under a second).
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `image` on `qemu-system-riscv64 -M virt -bios none` as `trapeze bench` does; a missing QEMU fails.
fn qemu(image: &str) -> Output {
    let mut child = Command::new("qemu-system-riscv64")
        .args(["-M", "virt", "-bios", "none", "-nographic", "-kernel", image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run qemu-system-riscv64 ({e}): install QEMU with `apt-get install -y qemu-system-misc` \
                 (./run-tests.sh installs it)"
            )
        });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for QEMU") {
            break status;
        }
        if start.elapsed() > QEMU_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("QEMU did not finish {image} within {QEMU_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().expect("piped stdout").read_to_end(&mut stdout).expect("read QEMU's stdout");
    child.stderr.take().expect("piped stderr").read_to_end(&mut stderr).expect("read QEMU's stderr");
    Output { status, stdout, stderr }
}

/// `bench-outside-small` prints, on every engine and on QEMU, the report and checksum that the same crates compute
/// natively.
#[test]
fn outside_guest_matches_the_native_kernels_on_every_engine_and_qemu() {
    let report = outside_kernels::run(outside_kernels::SMALL);
    let (name, image) = ("bench-outside-small", env!("TRAPEZE_GUEST_BENCH_OUTSIDE_SMALL"));
    for engine in run_engines() {
        let run = trapeze(&["run", "--engine", engine, "--max-insns", MAX_INSNS, image]);
        assert_run_prints(&run, name, &report.to_string(), report.checksum());
    }
    assert_run_prints(&qemu(image), name, &report.to_string(), report.checksum());
}

/// The full `bench-outside`, what `trapeze bench` measures, is right too: on the fast engines and on QEMU it prints
/// the checksum computed natively.
#[test]
fn outside_full_guest_matches_the_native_kernels() {
    let report = outside_kernels::run(outside_kernels::FULL);
    let (name, image) = ("bench-outside", env!("TRAPEZE_GUEST_BENCH_OUTSIDE"));
    for engine in run_engines().into_iter().filter(|&engine| engine != "interp") {
        let run = trapeze(&["run", "--engine", engine, "--max-insns", MAX_INSNS, image]);
        assert_run_prints(&run, name, &report.to_string(), report.checksum());
    }
    assert_run_prints(&qemu(image), name, &report.to_string(), report.checksum());
}

/// The outside crates compute what they claim on the host (standard test vectors), so the native report the
/// guest is compared with is itself right; and the workload's kernels differ from round to round.
#[test]
fn outside_crates_compute_known_results() {
    use outside_kernels::{blake3, crc32fast, lz4_flex, miniz_oxide, sha2, sha2::Digest};
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(&sha2::Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    assert_eq!(blake3::hash(b"").to_hex().as_str(), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    let text = b"an example an example an example of text that repeats itself, an example".repeat(50);
    let deflated = miniz_oxide::deflate::compress_to_vec(&text, 6);
    assert!(deflated.len() < text.len() / 10, "deflate compresses repeated text");
    assert_eq!(miniz_oxide::inflate::decompress_to_vec(&deflated).expect("inflate"), text);
    let mut packed = vec![0; lz4_flex::block::get_maximum_output_size(text.len())];
    let packed_len = lz4_flex::block::compress_into(&text, &mut packed).expect("LZ4 compress");
    assert!(packed_len < text.len() / 5, "LZ4 compresses repeated text");
    let mut unpacked = vec![0; text.len()];
    let unpacked_len = lz4_flex::block::decompress_into(&packed[..packed_len], &mut unpacked).expect("LZ4 decompress");
    assert_eq!(unpacked[..unpacked_len], text[..]);
    let one = outside_kernels::run(1);
    let two = outside_kernels::run(2);
    for (index, name) in outside_kernels::NAMES.iter().enumerate() {
        assert_ne!(one.parts[index], two.parts[index], "{name}: a second round changes the digest");
    }
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
    for name in ["int", "mem", "branch", "outside"] {
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
