//! The debug trigger guest (`guests/triggers`) on both engines: `trapeze run --engine E IMAGE` must print one
//! `ok:` line per check, no `FAIL`, `triggers: all N checks passed` last, and exit 0. The threaded engine must
//! agree with the reference interpreter even where the guest arms a trigger inside a loop it runs hot.
mod common;

use std::time::Duration;

use common::run_trapeze;

/// The checks the guest makes.
const CHECKS: usize = 33;

fn assert_all_checks_pass(engine: &str) {
    let image = env!("TRAPEZE_GUEST_TRIGGERS");
    let run = run_trapeze(&["--engine", engine, "--max-insns", "100000000", image], Duration::from_secs(300));
    let summary = format!("triggers: all {CHECKS} checks passed");
    assert!(
        !run.stdout.contains("FAIL") && run.stdout.lines().last() == Some(summary.as_str()) && run.status.success(),
        "--engine {engine}: ended with {}, wanted `{summary}` last and no FAIL:\n--- stdout:\n{}\n--- stderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let oks = run.stdout.lines().filter(|line| line.starts_with("ok: ")).count();
    assert_eq!(oks, CHECKS, "one `ok:` line per check:\n{}", run.stdout);
}

#[test]
fn triggers_guest_passes_on_the_interpreter() {
    assert_all_checks_pass("interp");
}

#[test]
fn triggers_guest_passes_on_the_threaded_engine() {
    assert_all_checks_pass("threaded");
}
