//! Memory-model litmus tests (the `litmus` guest: message passing, store buffering with fences, LR/SC and AMO
//! counters on every hart) on both emulation engines, with two and four harts, with host time (whose turns end
//! wherever the host's clock says, so the interleavings differ from run to run) and with instruction-counted
//! time. No run may show an outcome RVWMO forbids or lose a counter update. Today every hart of a VM runs on one
//! host thread, so these runs check the sequentially consistent interleavings a turn-based scheduler produces;
//! the same guest is the check for harts on host threads of their own.

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

#[test]
fn no_run_shows_an_outcome_rvwmo_forbids() {
    for engine in ["threaded", "interp"] {
        for harts in [2u32, 4] {
            for time in [&[][..], &["--icount", "0"][..]] {
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
