//! The level-2 spool set: random submissions from several VMs (any length, any bytes, any VM index) and
//! pumps into a sink that takes partial writes or fails. Checks against a model: a job is refused exactly when
//! it is empty, too long or does not fit, every accepted job prints exactly once, whole, in its VM's order,
//! framed so the output splits back into jobs, and the spools' byte and job counts add up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use trapeze::dev::spool::{SpoolSet, SubmitError};
use trapeze_fuzz::{split_jobs, Input, Sink};

const VMS: usize = 3;
const JOBS: usize = 4;
const BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut set = SpoolSet::<VMS, JOBS, BYTES>::new();
    // Every name each VM has had: a new name is never one any VM had, so a banner says whose job it is.
    let mut names: Vec<Vec<Vec<u8>>> = (0..VMS).map(|vm| vec![format!("vm {vm}").into_bytes()]).collect();
    // Per VM: accepted jobs not yet printed, and every job accepted.
    let mut waiting: Vec<VecDeque<usize>> = vec![VecDeque::new(); VMS];
    let mut accepted: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); VMS];
    let mut sink = Sink { out: Vec::new(), plan: VecDeque::new() };
    while !input.is_empty() {
        match input.u8() % 4 {
            0 | 1 => {
                let vm = input.below(VMS as u64 + 1) as usize;
                let len = match input.u8() % 4 {
                    0 => input.below(BYTES as u64 + 8) as usize,
                    _ => input.below(40) as usize,
                };
                let fill = input.u8();
                let job: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let result = set.submit(vm, &job);
                if vm >= VMS {
                    assert_eq!(result, Err(SubmitError::Unavailable));
                    continue;
                }
                let spool = set.spool(vm).expect("a spool per VM");
                let held: usize = waiting[vm].iter().map(|&i| accepted[vm][i].1.len()).sum();
                match result {
                    Ok(id) => {
                        assert!(!job.is_empty() && job.len() <= BYTES);
                        assert!(held + job.len() <= BYTES && waiting[vm].len() < JOBS, "over capacity");
                        assert_eq!(id as usize, accepted[vm].len() + 1, "ids count from 1");
                        waiting[vm].push_back(accepted[vm].len());
                        accepted[vm].push((id, job.clone()));
                    }
                    Err(SubmitError::BadLength) => assert!(job.is_empty() || job.len() > BYTES),
                    Err(SubmitError::Full) => {
                        assert!(!job.is_empty() && job.len() <= BYTES);
                        assert!(held + job.len() > BYTES || waiting[vm].len() == JOBS, "refused as full");
                    }
                    Err(SubmitError::Unavailable) => panic!("VM {vm} has a spool"),
                }
                let spool_held = BYTES - spool.free_bytes();
                assert_eq!(spool.queued(), waiting[vm].len());
                assert_eq!(spool_held, held + if result.is_ok() { job.len() } else { 0 });
            }
            2 => {
                sink.plan = (0..input.below(6)).map(|_| (!input.one_in(8)).then(|| input.below(20) as usize)).collect();
                let before = sink.out.len();
                if let Ok(written) = set.pump(&mut sink) {
                    assert_eq!(written, sink.out.len() - before, "pump counts what the sink took");
                }
                // Jobs the sink has seen in full are retired.
                let printed: u64 = (0..VMS).map(|vm| set.spool(vm).unwrap().completed()).sum();
                let trailers = split_complete(&sink.out) as u64;
                // Retired jobs are those whose trailer has started (one may be part-way through its trailer).
                assert!(printed <= trailers && trailers <= printed + 1, "{printed} retired, {trailers} trailers");
                for (vm, queue) in waiting.iter_mut().enumerate() {
                    let done = set.spool(vm).expect("a spool per VM").completed() as usize;
                    while accepted[vm].len() - queue.len() < done {
                        queue.pop_front();
                    }
                    assert_eq!(set.spool(vm).unwrap().queued(), queue.len());
                }
            }
            _ => {
                let vm = input.below(VMS as u64) as usize;
                let name = String::from_utf8_lossy(input.bytes(40)).replace(['\n', '='], " ");
                // Renaming changes only banners not yet started; keep the test simple: rename while idle.
                let cut_name = cut_to_name(&name);
                if set.is_idle() && !names.iter().flatten().any(|n| *n == cut_name) {
                    set.set_name(vm, &name);
                    names[vm].push(cut_name);
                }
            }
        }
    }
    // Drain: an unlimited sink prints everything.
    sink.plan.clear();
    let _ = set.pump(&mut sink);
    assert!(set.is_idle(), "an unlimited sink drains the spools");
    let jobs = split_jobs(&sink.out);
    let mut seen = [0usize; VMS];
    for (name, id, body) in jobs {
        // Names are kept distinct, so the banner says whose job this is; it must be that VM's next one.
        let vm = names
            .iter()
            .position(|had| had.contains(&name))
            .unwrap_or_else(|| panic!("{:?} names no VM of {names:?}", String::from_utf8_lossy(&name)));
        let (want_id, want_body) = accepted[vm].get(seen[vm]).expect("no job printed twice");
        assert_eq!((id, &body), (*want_id, want_body), "VM {vm}'s jobs print whole and in order");
        seen[vm] += 1;
    }
    for vm in 0..VMS {
        assert_eq!(seen[vm], accepted[vm].len(), "VM {vm}: every accepted job printed once");
        let spool = set.spool(vm).unwrap();
        assert_eq!((spool.queued(), spool.free_bytes()), (0, BYTES));
        assert_eq!(spool.completed() as usize, accepted[vm].len());
    }
});

/// How many whole jobs (up to their trailer) the output holds so far.
fn split_complete(out: &[u8]) -> usize {
    out.windows(15).filter(|w| *w == b"=== end of job ").count()
}

/// A VM name as the spool keeps it: cut at `NAME_MAX` bytes on a character boundary.
fn cut_to_name(name: &str) -> Vec<u8> {
    let mut cut = String::new();
    for ch in name.chars() {
        if cut.len() + ch.len_utf8() > trapeze::dev::spool::NAME_MAX {
            break;
        }
        cut.push(ch);
    }
    cut.into_bytes()
}
