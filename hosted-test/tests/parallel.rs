//! Harts on host threads of their own (`-accel tcg,thread=multi`, the default for `-smp N` when the run allows
//! it): every hart gets the work of its own done right (`hash-harts`), the harts really are threads of their own
//! (named `hart N` in the process), and options that need the whole machine on one thread are refused with
//! `thread=multi` and fall back to one thread without it. The memory model across threads is the `litmus`
//! test's (tests/litmus.rs runs it in both modes).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const HASH_HARTS: &str = env!("TRAPEZE_GUEST_HASH_HARTS");

fn digest(output: &str) -> &str {
    let line = output.lines().find(|line| line.starts_with("hash-harts: ")).unwrap_or_else(|| panic!("{output}"));
    assert!(line.ends_with(": pass"), "{output}");
    line.split("digest ").nth(1).and_then(|rest| rest.split(':').next()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn every_hart_on_a_thread_of_its_own_does_its_work_right() {
    let one = common::run_trapeze(&[HASH_HARTS, "--engine", "threaded"], Duration::from_secs(120));
    assert!(one.status.success(), "{}{}", one.stdout, one.stderr);
    let expected = digest(&one.stdout).to_string();
    assert!(one.stdout.contains("hash-harts: 1 harts"), "{}", one.stdout);
    for engine in ["threaded", "dbt"] {
        for harts in ["2", "4"] {
            let args = [HASH_HARTS, "--engine", engine, "-smp", harts, "-accel", "tcg,thread=multi"];
            let run = common::run_trapeze(&args, Duration::from_secs(120));
            assert!(run.status.success(), "{args:?}: {}{}", run.stdout, run.stderr);
            assert!(run.stdout.contains(&format!("hash-harts: {harts} harts")), "{args:?}: {}", run.stdout);
            assert_eq!(digest(&run.stdout), expected, "{args:?}");
        }
    }
}

/// The most hart threads seen in a run of `hash-harts` with `args`, looked at every few milliseconds.
fn most_hart_threads(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .arg("run")
        .arg(HASH_HARTS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the trapeze binary");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = Vec::new();
    while child.try_wait().expect("wait for trapeze").is_none() {
        let seen = common::hart_threads(child.id());
        if seen.len() > most.len() {
            most = seen;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().expect("wait for trapeze").success(), "{args:?}");
    most
}

#[test]
fn each_hart_is_a_host_thread_unless_one_thread_is_asked_for() {
    assert_eq!(most_hart_threads(&["-smp", "3"]), ["hart 0", "hart 1", "hart 2"], "the default: a thread per hart");
    assert_eq!(most_hart_threads(&["-smp", "2", "-accel", "tcg,thread=single"]), Vec::<String>::new());
    // Instruction-counted time needs one thread, and gets it without being asked.
    assert_eq!(most_hart_threads(&["-smp", "2", "--icount", "0"]), Vec::<String>::new());
}

#[test]
fn what_needs_one_thread_is_refused_a_thread_per_hart() {
    for (extra, what) in [
        (&["--icount", "0"][..], "--icount"),
        (&["-d", "int"][..], "-d"),
        (&["--trace"][..], "-d and --trace"),
        (&["--lockstep"][..], "--lockstep"),
    ] {
        let mut args = vec![HASH_HARTS, "-smp", "2", "-accel", "tcg,thread=multi"];
        args.extend_from_slice(extra);
        let run = common::run_trapeze(&args, Duration::from_secs(60));
        assert!(!run.status.success(), "{args:?}");
        assert!(run.stderr.contains("-accel tcg,thread=multi cannot be combined with"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(what), "{args:?}: {}", run.stderr);
    }
    let run = common::run_trapeze(&[HASH_HARTS, "-accel", "kvm"], Duration::from_secs(60));
    assert!(!run.status.success() && run.stderr.contains("the only accelerator is `tcg`"), "{}", run.stderr);
}
