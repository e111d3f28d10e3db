//! Two VMs' printer devices over one spool set: random register writes (any offset, width, address and
//! length), submissions, interrupt acknowledgements and pumps into a sink that takes partial writes. Checks: a
//! submission is accepted exactly when the job lies wholly in the VM's RAM and fits, the job printed is the
//! bytes the guest had at submission (never anything outside its RAM), the status register only ever holds a
//! defined value, and the interrupt line is `INT_STATUS & INT_ENABLE`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::VecDeque;
use trapeze::dev::printer::*;
use trapeze::dev::spool::SpoolSet;
use trapeze::dev::MmioDevice;
use trapeze::mem::{Ram, RAM_BASE};
use trapeze_fuzz::{split_jobs, Input, Sink};

const RAM_SIZE: usize = 0x1000;
const JOBS: usize = 3;
const BYTES: usize = 512;

fn address(input: &mut Input) -> u64 {
    match input.u8() % 4 {
        0 | 1 => RAM_BASE + input.below(RAM_SIZE as u64),
        2 => RAM_BASE + RAM_SIZE as u64 - input.below(32),
        _ => input.u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let spools = RefCell::new(SpoolSet::<2, JOBS, BYTES>::new());
    let mut backings: [Vec<u8>; 2] = [(0..RAM_SIZE).map(|i| i as u8).collect(), vec![0x77; RAM_SIZE]];
    let mut printers = [Printer::new(&spools, 0), Printer::new(&spools, 1)];
    // Per VM, the jobs the model expects to print, in order.
    let mut expected: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut sink = Sink { out: Vec::new(), plan: VecDeque::new() };
    let mut steps = 0;
    while !input.is_empty() && steps < 300 {
        steps += 1;
        let vm = input.below(2) as usize;
        let printer = &mut printers[vm];
        let backing = &mut backings[vm];
        match input.u8() % 8 {
            // A submission as a driver makes it.
            0 | 1 => {
                let addr = address(&mut input);
                let len = if input.one_in(4) { input.u32() } else { input.below(300) as u32 };
                let _ = printer.write(ADDR_LO, 8, addr);
                let _ = printer.write(LEN, 4, u64::from(len));
                let queued = spools.borrow().spool(vm).unwrap().queued();
                let free = spools.borrow().spool(vm).unwrap().free_bytes();
                let _ = printer.write(SUBMIT, 4, 1);
                let job = Ram::new(RAM_BASE, backing).slice(addr, u64::from(len)).map(<[u8]>::to_vec);
                printer.process(&Ram::new(RAM_BASE, backing));
                let status = printer.read(STATUS, 4).unwrap() as u32;
                let want = match &job {
                    None => STATUS_BAD_ADDRESS,
                    Some(job) if job.is_empty() || job.len() > BYTES => STATUS_BAD_LENGTH,
                    Some(job) if queued == JOBS || job.len() > free => STATUS_FULL,
                    Some(_) => STATUS_ACCEPTED,
                };
                assert_eq!(status, want, "submit {addr:#x}+{len}");
                if status == STATUS_ACCEPTED {
                    expected[vm].push(job.unwrap_or_default());
                    assert_eq!(printer.read(JOB_ID, 4).unwrap() as usize, expected[vm].len());
                }
            }
            // Any register write, any width.
            2 | 3 => {
                let offset = if input.bool() { input.below(12) * 4 } else { input.below(0x100) };
                let size = [4u8, 8, 1, 2][input.below(4) as usize];
                let value = if input.bool() { input.below(4) } else { input.u64() };
                let _ = printer.write(offset, size, value);
                printer.process(&Ram::new(RAM_BASE, backing));
                let before: Vec<usize> = expected.iter().map(Vec::len).collect();
                if let Ok(job_id) = printer.read(JOB_ID, 4) {
                    // A raw SUBMIT may have queued a job the model did not see: learn it from the spool.
                    let queued_ids = job_id as usize;
                    if queued_ids > before[vm] {
                        let (addr, len) = (printer.read(ADDR_LO, 8).unwrap(), printer.read(LEN, 4).unwrap());
                        let ram = Ram::new(RAM_BASE, backing);
                        let job = ram.slice(addr, len).expect("accepted job in RAM");
                        expected[vm].push(job.to_vec());
                    }
                }
            }
            // The guest changes its buffer after submitting: the spool must hold a copy.
            4 => {
                let at = input.below(RAM_SIZE as u64) as usize;
                let value = input.u8();
                backing[at] = value;
            }
            5 => {
                let pending = printer.read(INT_STATUS, 4).unwrap();
                let _ = printer.write(INT_STATUS, 4, pending);
            }
            6 => {
                let _ = printer.write(INT_ENABLE, 4, input.u64());
            }
            _ => {
                sink.plan = (0..input.below(4)).map(|_| Some(input.below(64) as usize)).collect();
                let _ = spools.borrow_mut().pump(&mut sink);
                for (vm, printer) in printers.iter_mut().enumerate() {
                    printer.process(&Ram::new(RAM_BASE, &mut backings[vm]));
                }
            }
        }
        for printer in printers.iter_mut() {
            let status = printer.read(STATUS, 4).unwrap() as u32;
            assert!(status <= STATUS_PENDING, "status {status}");
            let int = printer.read(INT_STATUS, 4).unwrap() & printer.read(INT_ENABLE, 4).unwrap();
            assert_eq!(printer.irq_level(), int != 0, "the line follows INT_STATUS & INT_ENABLE");
            let queued = printer.read(QUEUED, 4).unwrap() as usize;
            assert_eq!(queued, spools.borrow().spool(printer.vm()).unwrap().queued());
        }
    }
    sink.plan.clear();
    let _ = spools.borrow_mut().pump(&mut sink);
    let mut seen = [0usize; 2];
    for (name, id, body) in split_jobs(&sink.out) {
        let vm = if name == b"vm 0" { 0 } else { 1 };
        assert_eq!(id as usize, seen[vm] + 1);
        assert_eq!(body, expected[vm][seen[vm]], "VM {vm} job {id}: the bytes at submission");
        seen[vm] += 1;
    }
    assert_eq!(seen.map(|n| n), [expected[0].len(), expected[1].len()], "every accepted job printed");
});
