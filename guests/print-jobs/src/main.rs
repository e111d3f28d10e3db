//! `print-jobs`: level 1 of the two-level spool table, in a tiny multi-process guest OS of ours.
//!
//! [`PROCESSES`] cooperative processes run round-robin, one step each per turn. Each keeps its own level-1
//! spool (a buffer it fills a line per step); when a job is complete the process submits the whole buffer to the
//! spooled printer (`trapeze,spool-printer` at `0x1001_0000`, registers in `trapeze::dev::printer`) in one
//! request. While the VMM's level-2 spool is full the process blocks (it retries at each of its turns, the
//! other processes going on meanwhile); once accepted it starts its next job in the same buffer at once, since
//! the VMM has copied the job. A retry that is accepted must find the device's `INT_STATUS.SPACE` bit set (a job of
//! this VM printed since the refusal), which the process acknowledges.
//!
//! Process `p` prints [`JOBS`] jobs; job `j` is a first line `process p job j: N lines`, then `N = 20 + 15 * p`
//! lines `p.j.k` followed by filler up to 64 bytes, so a job is 1.3 to 3.2 KiB and the three processes' jobs
//! overflow a 16 KiB spool between two host pumps: back-pressure happens. The host's test checks every job whole
//! from this description. The guest also checks that hostile requests (outside RAM, empty) are refused, and
//! ends with `print-jobs: all N checks passed` and exit status 0.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};

use rt::checks::{check, finish};
use rt::println;

const BASE: usize = 0x1001_0000;
const MAGIC: usize = 0x00;
const ADDR_LO: usize = 0x08;
const ADDR_HI: usize = 0x0c;
const LEN: usize = 0x10;
const SUBMIT: usize = 0x14;
const STATUS: usize = 0x18;
const JOB_ID: usize = 0x1c;
const INT_STATUS: usize = 0x20;
const MAX_JOB: usize = 0x28;
const INT_SPACE: u32 = 1;

const MAGIC_VALUE: u32 = 0x6f6f_7073;
const ACCEPTED: u32 = 1;
const FULL: u32 = 2;
const BAD_ADDRESS: u32 = 3;
const BAD_LENGTH: u32 = 4;

/// Processes of the guest OS.
const PROCESSES: usize = 3;
/// Jobs each process prints.
const JOBS: u32 = 4;
/// Bytes of a level-1 spool.
const SPOOL: usize = 4096;
/// Bytes of every body line.
const LINE: usize = 64;

fn read(offset: usize) -> u32 {
    // SAFETY: the printer's registers, an MMIO window of the machine this guest runs on.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

/// One request: the job at `addr`, `len` bytes. Answers the status.
fn submit(addr: u64, len: u32) -> u32 {
    write(ADDR_LO, addr as u32);
    write(ADDR_HI, (addr >> 32) as u32);
    write(LEN, len);
    write(SUBMIT, 1);
    read(STATUS)
}

/// How often an accepted retry found `INT_STATUS.SPACE` set.
static SPACE_SEEN: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// A level-1 spool: the lines of the job being written.
struct Spool {
    bytes: [u8; SPOOL],
    len: usize,
}

impl Write for Spool {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self.len + text.len();
        self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A process: which job and line it is at, and its spool.
struct Process {
    id: usize,
    job: u32,
    /// Lines of the current job written so far (the first line counts).
    line: u32,
    spool: Spool,
    /// Submissions refused because the VMM's spool was full.
    retries: u32,
    /// Whether its last submission was refused as full.
    blocked: bool,
    failed: bool,
}

impl Process {
    fn lines(&self) -> u32 {
        20 + 15 * self.id as u32
    }

    fn done(&self) -> bool {
        self.job == JOBS || self.failed
    }

    /// One step: a line, or (the job complete) one submission attempt.
    fn step(&mut self) {
        let lines = self.lines();
        if self.line == 0 {
            let _ = writeln!(self.spool, "process {} job {}: {} lines", self.id, self.job, lines);
        } else if self.line <= lines {
            let start = self.spool.len;
            let _ = write!(self.spool, "{}.{}.{} ", self.id, self.job, self.line);
            while self.spool.len < start + LINE - 1 {
                let filler = b'a' + ((self.spool.len - start) as u8 + self.line as u8) % 26;
                let _ = self.spool.write_char(filler as char);
            }
            let _ = self.spool.write_char('\n');
        } else {
            match submit(self.spool.bytes.as_ptr() as u64, self.spool.len as u32) {
                ACCEPTED => {
                    if core::mem::take(&mut self.blocked) {
                        // Space came because a job of this VM printed: the device says so (and interrupts, if
                        // asked to). Acknowledged here; a polling OS needs no handler.
                        let space = read(INT_STATUS) & INT_SPACE != 0;
                        write(INT_STATUS, INT_SPACE);
                        SPACE_SEEN.fetch_add(u32::from(space), core::sync::atomic::Ordering::Relaxed);
                    }
                    // The VMM copied the job: the buffer is free for the next one at once.
                    self.spool.len = 0;
                    self.line = 0;
                    self.job += 1;
                }
                FULL => {
                    self.retries += 1;
                    self.blocked = true;
                }
                other => {
                    println!("FAIL: process {} job {}: printer status {other}", self.id, self.job);
                    self.failed = true;
                }
            }
            return;
        }
        self.line += 1;
    }
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    check("the printer is there", read(MAGIC) == MAGIC_VALUE, format_args!("magic {:#x}", read(MAGIC)));
    let max = read(MAX_JOB) as usize;
    check("a level-1 spool fits the printer's largest job", max >= SPOOL, format_args!("MAX_JOB {max}"));
    let status = submit(0x1000_0000, 16);
    check("a job outside RAM is refused", status == BAD_ADDRESS, format_args!("status {status}"));
    let status = submit(0xffff_ffff_ffff_fff0, 0x20);
    check("a job wrapping the address space is refused", status == BAD_ADDRESS, format_args!("status {status}"));
    let status = submit(0x8000_0000, 0);
    check("an empty job is refused", status == BAD_LENGTH, format_args!("status {status}"));

    let mut processes: [Process; PROCESSES] = core::array::from_fn(|id| Process {
        id,
        job: 0,
        line: 0,
        spool: Spool { bytes: [0; SPOOL], len: 0 },
        retries: 0,
        blocked: false,
        failed: false,
    });
    // The scheduler: round-robin over the processes that have work, one step each per turn.
    while processes.iter().any(|process| !process.done()) {
        for process in processes.iter_mut().filter(|process| !process.done()) {
            process.step();
        }
    }
    let retries: u32 = processes.iter().map(|process| process.retries).sum();
    println!("print-jobs: {} jobs submitted, {retries} retries on a full spool", PROCESSES as u32 * JOBS);
    let space = SPACE_SEEN.load(core::sync::atomic::Ordering::Relaxed);
    check(
        "a blocked process found SPACE set when its retry was accepted",
        retries == 0 || space > 0,
        format_args!("{retries} retries, SPACE seen {space} times"),
    );
    let failed = processes.iter().any(|process| process.failed);
    check("every process submitted every job", !failed, format_args!("a process failed"));
    check(
        "the last job id counts every job",
        read(JOB_ID) == PROCESSES as u32 * JOBS,
        format_args!("{}", read(JOB_ID)),
    );
    finish("print-jobs")
}
