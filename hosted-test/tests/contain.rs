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
//! shadow page tables.
mod common;

use std::time::Duration;

use common::{run_trapeze, Run};

#[cfg(target_arch = "x86_64")]
const ENGINES: [&str; 3] = ["interp", "threaded", "dbt"];
#[cfg(not(target_arch = "x86_64"))]
const ENGINES: [&str; 2] = ["interp", "threaded"];
/// Wall-clock bound on one run: far more than any of them needs.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `trapeze run ARGS...` (killed after [`TIMEOUT`]) and fails if the VMM panicked.
fn run(args: &[&str]) -> Run {
    let run = run_trapeze(args, TIMEOUT);
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
        let run = run(&["--engine", engine, "--max-insns", "50000000", image]);
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
        let run = run(&["--engine", engine, "--max-insns", "20000000", image]);
        assert_eq!(run.status.code(), Some(3), "{engine}: the instruction limit ends it:\n{}", run.stderr);
        assert!(run.stdout.contains("runaway: looping with interrupts masked"), "{engine}: {}", run.stdout);
        assert!(run.stderr.contains("instruction limit reached after 20000000 instructions"), "{}", run.stderr);
    }
}

#[test]
fn a_guest_executing_garbage_neither_crashes_nor_wedges_the_vmm() {
    let image = env!("TRAPEZE_GUEST_GARBAGE");
    for engine in ENGINES {
        let run = run(&["--engine", engine, "--max-insns", "20000000", image]);
        assert_eq!(run.status.code(), Some(3), "{engine}: the instruction limit ends it:\n{}", run.stderr);
        assert!(run.stdout.contains("garbage: jumping into random words"), "{engine}: {}", run.stdout);
    }
    // The fast engines execute the junk as the interpreter does, instruction by instruction.
    for engine in &ENGINES[1..] {
        let run = run(&["--lockstep", "--engine", engine, "--max-insns", "1000000", image]);
        assert!(run.stderr.contains("no divergence"), "lockstep on {engine}: {}\n{}", run.status, run.stderr);
    }
}
