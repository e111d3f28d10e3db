//! Integration tests of the privileged-architecture guests: run `sv39`, `interrupts`, `uart-irq`, `fpu` and
//! `counters` through the `trapeze` binary (`trapeze run --max-insns N IMAGE`) and check that each passes all its
//! self-checks (its final `<name>: all N checks passed` line, no `FAIL`, exit status 0); and run `idle`, which waits about 1.5 s for the
//! CLINT timer in `wfi`, checking that the VMM sleeps meanwhile (the child's CPU time is under half the wall time).
//!
//! The guests compute their expectations from the ISA, not from an emulator; the same images pass on
//! `qemu-system-riscv64 -M virt -bios none` (see `guests/README.md`).
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bound on the instructions of one run, so a wedged guest ends the run.
const MAX_INSNS: &str = "500000000";

/// Starts `trapeze run --max-insns MAX_INSNS IMAGE` with stdout and stderr read by threads.
fn spawn(image: &str) -> (Child, JoinHandle<String>, JoinHandle<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(["run", "--max-insns", MAX_INSNS, image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the trapeze binary");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).expect("read the child's output");
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    (child, out, err)
}

/// Runs a self-checking guest and asserts it printed `<name>: all <checks> checks passed`, no `FAIL`, and exited 0;
/// answers its output.
fn assert_all_checks_pass(image: &str, name: &str, checks: u32) -> String {
    let (mut child, out, err) = spawn(image);
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for trapeze") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`trapeze run {image}` did not finish within 300 s");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let summary = format!("{name}: all {checks} checks passed");
    assert!(
        !stdout.contains("FAIL") && stdout.lines().last() == Some(summary.as_str()) && status.success(),
        "{image} ended with {status}, wanted `{summary}` as the last line and no FAIL:\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
    );
    let oks = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(oks, checks as usize, "one `ok:` line per check:\n{stdout}");
    stdout
}

#[test]
fn sv39_guest_passes_every_check() {
    assert_all_checks_pass(env!("TRAPEZE_GUEST_SV39"), "sv39", 34);
}

/// The patching scanner's guest (the native board runs it with counters delegated): emulated, counters are
/// virtual, its code reads back as written and a rewritten instruction runs.
#[test]
fn counters_guest_passes_every_check() {
    assert_all_checks_pass(env!("TRAPEZE_GUEST_COUNTERS"), "counters", 23);
}

#[test]
fn interrupts_guest_passes_every_check() {
    assert_all_checks_pass(env!("TRAPEZE_GUEST_INTERRUPTS"), "interrupts", 19);
}

/// A UART interrupt handler that reads LSR and RBR but never IIR (written for QEMU) gets one or two interrupts
/// per event, exactly as many as on QEMU (65, QEMU 7.2's count), instead of livelocking in its trap handler.
#[test]
fn uart_irq_guest_gets_qemus_interrupts_per_event() {
    let stdout = assert_all_checks_pass(env!("TRAPEZE_GUEST_UART_IRQ"), "uart-irq", 4);
    assert!(stdout.contains("uart-irq: 65 interrupts in all"), "{stdout}");
}

#[test]
fn fpu_guest_passes_every_check() {
    assert_all_checks_pass(env!("TRAPEZE_GUEST_FPU"), "fpu", 82);
}

/// The `idle` guest waits ~1.5 s in `wfi` for the timer: the run takes at least 1.4 s of wall time, but the
/// VMM must sleep rather than spin, so its CPU time (user + system, from `wait4` on that one child, which unlike
/// `getrusage(RUSAGE_CHILDREN)` is not mixed with the other tests' children) stays under half the wall time.
#[test]
fn idle_guest_sleeps_in_wfi() {
    let start = Instant::now();
    let (child, out, err) = spawn(env!("TRAPEZE_GUEST_IDLE"));
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child); // already reaped: dropping a `Child` neither waits nor kills
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    let wall = wall.as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 && stdout == "idle: woke after timer\n",
        "idle guest: wait status {status:#x}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
    );
    assert!(wall >= 1.4, "the guest waited only {wall:.3} s for a 1.5 s timer");
    assert!(cpu < 0.5 * wall, "the VMM used {cpu:.3} s of CPU in {wall:.3} s of wall time: it spins in wfi");
}

/// `--trace` shows the instruction at each pc as the hart fetched it, through the guest's page tables: the sv39
/// guest runs user code at virtual addresses above 4 GiB, where no guest real memory exists, so a trace that read
/// the pc as a real address would show nothing there.
#[test]
fn trace_disassembles_through_the_guest_page_tables() {
    let output = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(["run", "--trace", "--max-insns", "3000000", env!("TRAPEZE_GUEST_SV39")])
        .stdin(Stdio::null())
        .output()
        .expect("run the trapeze binary");
    let trace = String::from_utf8_lossy(&output.stderr);
    let virtual_lines: Vec<&str> = trace
        .lines()
        .filter(|line| u64::from_str_radix(line.split(':').next().unwrap_or(""), 16).is_ok_and(|pc| pc >> 32 != 0))
        .filter(|line| !line.contains("fetch faulted"))
        .collect();
    assert!(
        virtual_lines.len() >= 3,
        "expected traced user code above 4 GiB, trace starts:\n{}",
        trace.chars().take(2000).collect::<String>()
    );
    for line in &virtual_lines {
        assert!(!line.contains("illegal"), "user code traced as an illegal instruction: {line}");
    }
    assert!(virtual_lines.iter().any(|line| line.contains("ecall")), "no ecall in the user code: {virtual_lines:?}");
}
