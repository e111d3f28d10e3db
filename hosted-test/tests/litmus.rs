//! Memory-model litmus tests (the `litmus` guest: message passing, store buffering with fences, LR/SC and AMO
//! counters on every hart) on every engine, with two and four harts: with a host thread per hart (the harts
//! really run at once, and the host's memory order, its atomics and the shared code watch are what is checked),
//! and on one thread with host time (turns end wherever the host's clock says, so the interleavings differ from
//! run to run) and with instruction-counted time. No run may show an outcome RVWMO forbids or lose a counter
//! update; the threaded runs are repeated, since what they show depends on the host's timing.

use std::time::Duration;

mod common;

const LITMUS: &str = env!("TRAPEZE_GUEST_LITMUS");

/// The three outcome lines and the verdict, from a passing run's output.
fn check(output: &str, harts: u32, what: &str) {
    assert!(output.contains("litmus: pass\n"), "{what}:\n{output}");
    for line in output.lines().filter(|line| line.starts_with("litmus: MP") || line.starts_with("litmus: SB")) {
        assert!(line.ends_with("(forbidden): 0"), "{what}: {line}");
    }
    let expected = 5_000 * harts;
    assert!(
        output.contains(&format!("lr/sc {expected}, amoadd {expected}, expected {expected} each")),
        "{what}:\n{output}"
    );
}

/// Engines, and the runs of each hart count on each with a thread per hart (fewer on the slow interpreter).
const THREADED_RUNS: [(&str, usize); 3] = [("threaded", 8), ("dbt", 8), ("interp", 2)];

#[test]
fn no_run_on_threads_of_their_own_shows_an_outcome_rvwmo_forbids() {
    for (engine, runs) in THREADED_RUNS {
        for harts in [2u32, 4] {
            let smp = harts.to_string();
            let args = [LITMUS, "-smp", &smp, "--engine", engine, "-accel", "tcg,thread=multi"];
            for run in 0..runs {
                let result = common::run_trapeze(&args, Duration::from_secs(120));
                let output = format!("{}{}", result.stdout, result.stderr);
                let what = format!("{engine}, {harts} harts on threads, run {run}");
                assert!(result.status.success(), "{what}:\n{output}");
                check(&result.stdout, harts, &what);
            }
        }
    }
}

#[test]
fn no_run_on_one_thread_shows_an_outcome_rvwmo_forbids() {
    for engine in ["threaded", "interp"] {
        for harts in [2u32, 4] {
            for time in [&["-accel", "tcg,thread=single"][..], &["--icount", "0"][..]] {
                let smp = harts.to_string();
                let mut args = vec![LITMUS, "-smp", &smp, "--engine", engine];
                args.extend_from_slice(time);
                let run = common::run_trapeze(&args, Duration::from_secs(120));
                let output = format!("{}{}", run.stdout, run.stderr);
                let what = format!("{engine}, {harts} harts, {time:?}");
                assert!(run.status.success(), "{what}:\n{output}");
                check(&run.stdout, harts, &what);
            }
        }
    }
}

#[test]
fn one_hart_is_refused_rather_than_passed() {
    let run = common::run_trapeze(&[LITMUS], Duration::from_secs(60));
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(run.stdout.contains("litmus: FAIL: MP and SB need two harts"), "{}", run.stdout);
}
