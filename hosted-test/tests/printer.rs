//! The spooled printer under `trapeze up`: two VMs each run the `print-jobs` guest (three cooperative processes,
//! each with its own level-1 spool, submitting whole jobs and retrying when the VMM's spool is full) and share
//! one printer, a file. The file must hold every job of every process whole, framed by the scheduler's
//! banners, none interleaved, none lost, in submission order per process; the VMs' jobs must alternate
//! (round-robin) while both have jobs waiting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod common;
#[path = "common/print_jobs.rs"]
mod print_jobs;
use print_jobs::{expected_job, JOBS, PROCESSES};

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trapeze-printer-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// One printed job: the VM's name, the job id, the body.
struct Printed {
    vm: String,
    id: u32,
    body: String,
}

/// Splits the printer's output into jobs by the banners, checking each job's trailer.
fn parse(mut out: &str) -> Vec<Printed> {
    let mut jobs = Vec::new();
    while !out.is_empty() {
        let (header, rest) = out.split_once('\n').expect("a header line");
        let fields = header.strip_prefix("=== job ").and_then(|h| h.strip_suffix(" bytes ===")).expect(header);
        let (id, rest_of_header) = fields.split_once(" of ").expect(header);
        let (vm, len) = rest_of_header.rsplit_once(": ").expect(header);
        let len: usize = len.parse().expect(header);
        let body = &rest[..len];
        let mut rest = &rest[len..];
        if !body.ends_with('\n') {
            rest = rest.strip_prefix('\n').expect("a newline closes a job without one");
        }
        let trailer = format!("=== end of job {id} of {vm} ===\n");
        out = rest.strip_prefix(trailer.as_str()).unwrap_or_else(|| panic!("job {id} of {vm}: no trailer next"));
        jobs.push(Printed { vm: vm.into(), id: id.parse().unwrap(), body: body.into() });
    }
    jobs
}

#[test]
fn two_vms_print_every_job_whole_uninterleaved_and_in_order() {
    let dir = scratch("two");
    let config = dir.join("vms.toml");
    std::fs::write(
        &config,
        r#"
quantum = 1000000

[printer]
output = "print.out"
throttle = 4096

[[vm]]
name = "alpha"
image = "bundled:print-jobs"
memory = "16M"
printer = true

[[vm]]
name = "beta"
image = "bundled:print-jobs"
memory = "16M"
engine = "interp"
printer = true
"#,
    )
    .unwrap();
    let run = common::run_trapeze_command("up", &[&config.display().to_string()], Duration::from_secs(120));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    assert!(run.status.success(), "both VMs pass:\n{output}");
    for vm in ["alpha", "beta"] {
        assert!(run.stdout.contains(&format!("[{vm}] print-jobs: all 8 checks passed\n")), "{output}");
    }
    let printed = std::fs::read_to_string(dir.join("print.out")).expect("the printer's output");
    let jobs = parse(&printed);
    assert_eq!(jobs.len(), 2 * PROCESSES * JOBS, "every job printed once:\n{output}");
    for vm in ["alpha", "beta"] {
        let mine: Vec<&Printed> = jobs.iter().filter(|job| job.vm == vm).collect();
        assert_eq!(mine.len(), PROCESSES * JOBS, "{vm}'s jobs");
        // Ids in order: the VM's spool is first-in first-out.
        let ids: Vec<u32> = mine.iter().map(|job| job.id).collect();
        assert_eq!(ids, (1..=(PROCESSES * JOBS) as u32).collect::<Vec<_>>(), "{vm}: FIFO");
        // Each process's jobs whole, in its submission order.
        let mut next: BTreeMap<usize, usize> = BTreeMap::new();
        for job in &mine {
            let first = job.body.lines().next().unwrap();
            let process: usize = first.strip_prefix("process ").unwrap().split(' ').next().unwrap().parse().unwrap();
            let number = next.entry(process).or_insert(0);
            assert_eq!(job.body, expected_job(process, *number), "{vm}: process {process} job {number} whole");
            *number += 1;
        }
        assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![JOBS; PROCESSES], "{vm}: none lost");
    }
    // Fairness: the printer (4 KiB a turn, slower than the guests) prints round-robin: from the first job of the
    // VM that started second, the VMs alternate job by job as long as both have jobs left.
    let order: Vec<&str> = jobs.iter().map(|job| job.vm.as_str()).collect();
    let second = order.iter().position(|vm| *vm != order[0]).expect("both VMs printed");
    for i in second.saturating_sub(1)..order.len() - 1 {
        let both_left = ["alpha", "beta"].iter().all(|vm| order[i + 1..].contains(vm));
        if both_left {
            assert_ne!(order[i], order[i + 1], "round-robin at job {i}: {order:?}");
        }
    }
    // Back-pressure happened: the spools filled, and the submitters blocked and retried rather than lose jobs.
    let retries: u64 = run
        .stdout
        .lines()
        .filter_map(|line| line.split_once("12 jobs submitted, ")?.1.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(retries > 0, "a spool was full at least once:\n{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_printer_key_is_refused() {
    let dir = scratch("bad");
    let config = dir.join("vms.toml");
    std::fs::write(&config, "[printer]\npaper = \"a4\"\n[[vm]]\nname = \"a\"\nimage = \"bundled:hello\"\n").unwrap();
    let run = common::run_trapeze_command("up", &[&config.display().to_string()], Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("paper"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
