//! Containment tests: guests that misbehave must be stopped or faulted, never crash or wedge the VMM.
//!
//! * `contain` loads, stores and jumps outside its RAM (below it, just past its end, far above it) and touches a
//!   virtio-mmio slot it was not given, from M-mode, S-mode with paging off and S-mode with Sv39: every attempt
//!   must raise the access fault the specification names, with `mtval` the address, and the guest goes on.
//! * `runaway` loops forever with interrupts masked: `--max-insns` must end the run (exit status 3).
//! * `garbage` executes a page of pseudo-random words with a trap stub that keeps it going: the VMM must neither
//!   panic nor hang, the instruction limit ends the run, and the two engines must not diverge (`--lockstep`).
//!
//! Each runs with every engine (the translator on x86-64 hosts); the native board runs the same images with its
//! shadow page tables. Each test appends its figures to `target/isolation.txt` (hostile accesses, runaway and
//! random-instruction guests: what was tried, what got out, what panicked the VMM) before asserting.
mod common;
#[path = "common/isolation.rs"]
mod isolation;

use std::time::Duration;

use common::{run_trapeze, Run};

#[cfg(target_arch = "x86_64")]
const ENGINES: [&str; 3] = ["interp", "threaded", "dbt"];
#[cfg(not(target_arch = "x86_64"))]
const ENGINES: [&str; 2] = ["interp", "threaded"];
/// The kinds of `target/isolation.txt` these tests report.
const KIND_ACCESSES: &str = "hostile accesses (contain)";
const KIND_RUNAWAY: &str = "runaway guests";
const KIND_GARBAGE: &str = "random-instruction guests";
/// Wall-clock bound on one run: far more than any of them needs.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `trapeze run ARGS...` (killed after [`TIMEOUT`]) and fails if the VMM panicked, counting the panic
/// under `kind` first.
fn run(kind: &str, args: &[&str]) -> Run {
    let run = run_trapeze(args, TIMEOUT);
    if run.stderr.contains("panicked") {
        isolation::report(kind, 1, 0, 1);
    }
    assert!(
        !run.stderr.contains("panicked"),
        "the VMM panicked on `{}`:\n--- stdout:\n{}\n--- stderr:\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

#[test]
fn accesses_outside_the_guests_memory_and_devices_fault() {
    let image = env!("TRAPEZE_GUEST_CONTAIN");
    for engine in ENGINES {
        let run = run(KIND_ACCESSES, &["--engine", engine, "--max-insns", "50000000", image]);
        // Each access outside the guest's memory and devices is one check naming the fault it got; a `FAIL` is
        // one that did not fault as it must.
        let accesses = run.stdout.lines().filter(|line| line.contains("mcause")).count() as u64;
        let failed = run.stdout.lines().filter(|line| line.starts_with("FAIL")).count() as u64;
        isolation::report(KIND_ACCESSES, accesses, failed, 0);
        let summary = "contain: all 35 checks passed";
        assert!(
            run.status.success() && !run.stdout.contains("FAIL") && run.stdout.lines().last() == Some(summary),
            "{engine}: ended with {}, wanted `{summary}` as the last line and no FAIL:\n{}{}",
            run.status,
            run.stdout,
            run.stderr
        );
        // Spot-check the faults themselves, as the guest saw them.
        for line in [
            "ok: M ld below RAM (0x8000000): mcause 5 mtval 0x8000000",
            "ok: M sd far above RAM (0x100000000): mcause 7 mtval 0x100000000",
            "ok: S bare jump just past RAM (0x88000000): mcause 1 mtval 0x88000000",
            "ok: S sv39 sw virtio-mmio slot 7 (0x10008000): mcause 7 mtval 0x10008000",
            "ok: own memory still works",
        ] {
            assert!(run.stdout.lines().any(|l| l == line), "{engine}: no `{line}` in\n{}", run.stdout);
        }
    }
}

#[test]
fn a_guest_that_never_yields_is_stopped_by_the_instruction_limit() {
    let image = env!("TRAPEZE_GUEST_RUNAWAY");
    for engine in ENGINES {
        let run = run(KIND_RUNAWAY, &["--engine", engine, "--max-insns", "20000000", image]);
        isolation::report(KIND_RUNAWAY, 1, u64::from(run.status.code() != Some(3)), 0);
        assert_eq!(run.status.code(), Some(3), "{engine}: the instruction limit ends it:\n{}", run.stderr);
        assert!(run.stdout.contains("runaway: looping with interrupts masked"), "{engine}: {}", run.stdout);
        assert!(run.stderr.contains("instruction limit reached after 20000000 instructions"), "{}", run.stderr);
    }
}

#[test]
fn a_guest_executing_garbage_neither_crashes_nor_wedges_the_vmm() {
    let image = env!("TRAPEZE_GUEST_GARBAGE");
    for engine in ENGINES {
        let run = run(KIND_GARBAGE, &["--engine", engine, "--max-insns", "20000000", image]);
        isolation::report(KIND_GARBAGE, 1, u64::from(run.status.code() != Some(3)), 0);
        assert_eq!(run.status.code(), Some(3), "{engine}: the instruction limit ends it:\n{}", run.stderr);
        assert!(run.stdout.contains("garbage: jumping into random words"), "{engine}: {}", run.stdout);
    }
    // The fast engines execute the junk as the interpreter does, instruction by instruction.
    for engine in &ENGINES[1..] {
        let run = run(KIND_GARBAGE, &["--lockstep", "--engine", engine, "--max-insns", "1000000", image]);
        isolation::report(KIND_GARBAGE, 1, u64::from(!run.stderr.contains("no divergence")), 0);
        assert!(run.stderr.contains("no divergence"), "lockstep on {engine}: {}\n{}", run.status, run.stderr);
    }
}
