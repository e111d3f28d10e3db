//! The translator's executable memory on this host ([`MappedCode`]): two views of one memory file, one
//! read+execute and never writable, the other read+write and never executable (no mapping is ever writable and
//! executable, and writing code needs no protection change); where the host refuses the memory file, one mapping
//! made writable and not executable by `mprotect` while a translation is copied in. Also
//! the hosted translator's size, and its translation service: one worker thread ("translator") per process that
//! translates the jobs of every hart's engine off the harts' threads, with a memo of finished translations shared
//! by all of them (a second hart gets the first one's translations of the same kernel without encoding them again).
//!
//! The service decides only when a translation lands, never whether it is right: the engine installs one only if
//! RAM still holds the bytes it was made from. The memo hands a translation out only for a job it
//! [`answers`](Translation::answers) (same offset, data path, counting, limit, and bytes wherever its decoder read).
//! It must never block a hart's thread for longer than a queue operation (translation happens on the worker, with
//! the lock released).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use trapeze::exec::dbt::{
    CodeMemory, CodeMemoryError, Dbt, DbtError, Job, Translation, TranslationService, Translator,
};
use trapeze::exec::threaded::InlineCsr;

/// Bytes of host code the hosted translator keeps (its code cache's arena).
pub const CODE_BYTES: usize = 16 << 20;

/// The hosted translator: 16 MiB of host code in at most 8192 blocks, 16384 map slots (most of Linux's working
/// set; about 1.7 MiB of block records and map besides the code, built on the stack first: larger would need
/// a bigger stack).
pub type HostedDbt = Dbt<MappedCode, CODE_BYTES, 8192, 16384>;

/// A hosted translator with its own code memory, translating on its hart's thread (the lockstep runs' mode).
pub fn hosted_dbt() -> Result<Box<HostedDbt>, String> {
    let code = MappedCode::new(CODE_BYTES)?;
    HostedDbt::new(code).map(Box::new).map_err(|e: DbtError| format!("the translator: {e:?}"))
}

/// A hosted translator whose hot blocks are translated by this process's translation worker (started at the first
/// call), at [`SERVED_THRESHOLD`]. It is the translator of runs on host time (when a block is translated depends
/// on the host's scheduling anyway), so it also serves CSR reads and `sstatus.SIE` toggles without leaving
/// ([`InlineCsr`]): Linux toggles SIE around each critical section, a third of its boot's exits (its boot to the
/// shell went from 1.24 s to 1.18 s with one hart, 1.44 s to 1.38 s with two: five interleaved runs each). And
/// `time` reads, from the host's clock, within [`TIME_WINDOW`] of each run's start (medians of interleaved boots:
/// 1.100 s -> 1.085 s with one hart, six runs; 1.21 s -> 1.18 s with two, eight).
pub fn served_dbt() -> Result<Box<HostedDbt>, String> {
    static WORKER: OnceLock<Result<Translators, String>> = OnceLock::new();
    let mut dbt = WORKER.get_or_init(Translators::start).as_ref().map_err(Clone::clone)?.dbt()?;
    dbt.serve_csr_inline(Some(InlineCsr { clock: host_ticks, offset: 0, until: 0 }));
    dbt.set_time_window(TIME_WINDOW);
    Ok(dbt)
}

/// How long after the start of a run the served translator reads `time` itself ([`Dbt::set_time_window`]):
/// 100 us, so a guest polling `time` for a deadline sees its timer interrupt at most that late.
const TIME_WINDOW: u64 = trapeze::vm::TIMEBASE_HZ / 10_000;

/// The host's monotonic clock in ticks of the guest's timebase, from the first look (each run re-bases it on the
/// VM's time, so its epoch does not matter).
fn host_ticks() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    let tick_ns = 1_000_000_000 / trapeze::vm::TIMEBASE_HZ;
    elapsed.as_secs() * trapeze::vm::TIMEBASE_HZ + u64::from(elapsed.subsec_nanos()) / tick_ns
}

/// Instructions a block runs on the cold tier before its job is submitted, with the translation worker: translation
/// costs the hart's thread only the install, so blocks are translated sooner than without a worker (the core's
/// default). Measured here on an idle machine (2 cores): `bench --workload outside` 0.094-0.096 s at 5000,
/// 0.085-0.089 at 1000; Linux's boot to its shell 1.71-1.79 s at either, U-Boot's the same. Lower thresholds
/// translate more blocks than the hosted cache holds (Linux: 25 000 translations to its shell at 1000, 18 500 at
/// 5000, against 8192 blocks), which cost nothing measurable: a cache of 32768 blocks booted Linux no faster.
pub const SERVED_THRESHOLD: u16 = 1_000;

/// How long the worker keeps looking for jobs (yielding its core between looks) before it sleeps.
const LINGER: std::time::Duration = std::time::Duration::from_micros(200);

/// Jobs waiting for the worker at most (a full queue refuses more: those blocks stay on the cold tier a while).
const QUEUE: usize = 256;

/// Finished translations the memo keeps at most (oldest dropped first), and versions of one block's bytes.
const MEMO: usize = 32_768;
const VERSIONS: usize = 4;

/// A translation worker thread and what it shares with the engines it serves. Dropping it stops the worker.
pub struct Translators {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

/// Counters of a translation worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    /// Jobs translated by the worker.
    pub translated: u64,
    /// Jobs answered from the memo (at submission or when the worker came to them).
    pub memo_hits: u64,
    /// Nanoseconds the worker spent translating.
    pub busy_ns: u64,
}

struct Shared {
    state: Mutex<State>,
    /// The worker waits on it for jobs.
    jobs: Condvar,
    translated: AtomicU64,
    memo_hits: AtomicU64,
    busy_ns: AtomicU64,
}

struct State {
    /// Waiting jobs and the client each one's translation goes back to.
    queue: VecDeque<(usize, Job)>,
    /// Per client (by index): finished translations not yet taken.
    done: Vec<Slot>,
    memo: Memo,
    stop: bool,
    /// Whether the worker sleeps on [`Shared::jobs`]: only then does a submission wake it (a futex call the
    /// submitting hart would otherwise pay for every job of a burst).
    asleep: bool,
}

/// A client's finished translations not yet taken, their number (read without the lock), and whether the client
/// is still there (translations for one that is gone are dropped).
struct Slot {
    done: Vec<Arc<Translation>>,
    ready: Arc<AtomicUsize>,
    alive: bool,
}

impl Slot {
    fn deliver(&mut self, translation: Arc<Translation>) {
        if self.alive {
            self.done.push(translation);
            self.ready.fetch_add(1, Ordering::Release);
        }
    }
}

/// Finished translations by (RAM offset, paged, counting), a few versions each, dropped oldest first.
#[derive(Default)]
struct Memo {
    entries: HashMap<(u64, bool, bool), Vec<Arc<Translation>>>,
    order: VecDeque<(u64, bool, bool)>,
}

fn memo_key(job: &Job) -> (u64, bool, bool) {
    (job.offset(), job.paged(), job.counting())
}

impl Memo {
    /// A translation that answers `job`.
    fn find(&self, job: &Job) -> Option<Arc<Translation>> {
        self.entries.get(&memo_key(job))?.iter().rev().find(|translation| translation.answers(job)).cloned()
    }

    fn insert(&mut self, translation: Arc<Translation>) {
        if !translation.is_translated() {
            return;
        }
        let key = memo_key(translation.job());
        let versions = self.entries.entry(key).or_default();
        if versions.len() >= VERSIONS {
            versions.remove(0);
        }
        versions.push(translation);
        self.order.push_back(key);
        while self.order.len() > MEMO {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(versions) = self.entries.get_mut(&oldest) {
                if !versions.is_empty() {
                    versions.remove(0);
                }
                if versions.is_empty() {
                    self.entries.remove(&oldest);
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked mid-update leaves nothing inconsistent a client could trip on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Translators {
    /// Starts the worker thread.
    pub fn start() -> Result<Self, String> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                done: Vec::new(),
                memo: Memo::default(),
                stop: false,
                asleep: false,
            }),
            jobs: Condvar::new(),
            translated: AtomicU64::new(0),
            memo_hits: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        });
        let mut translator = Translator::new().map_err(|e| format!("the translation worker: {e:?}"))?;
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("translator".into())
                .spawn(move || work(&shared, &mut translator))
                .map_err(|e| format!("starting the translation worker: {e}"))?
        };
        Ok(Self { shared, worker: Some(worker) })
    }

    /// A client of the worker, for one engine.
    pub fn service(&self) -> Box<dyn TranslationService> {
        let ready = Arc::new(AtomicUsize::new(0));
        let mut state = self.shared.lock();
        state.done.push(Slot { done: Vec::new(), ready: ready.clone(), alive: true });
        let client = state.done.len() - 1;
        Box::new(Client { shared: self.shared.clone(), client, ready, taken: Vec::new() })
    }

    /// A hosted translator served by this worker, at [`SERVED_THRESHOLD`].
    pub fn dbt(&self) -> Result<Box<HostedDbt>, String> {
        let mut dbt = hosted_dbt()?;
        dbt.set_translation_threshold(SERVED_THRESHOLD);
        dbt.attach_service(self.service());
        Ok(dbt)
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            translated: self.shared.translated.load(Ordering::Relaxed),
            memo_hits: self.shared.memo_hits.load(Ordering::Relaxed),
            busy_ns: self.shared.busy_ns.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Translators {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.jobs.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker: translates queued jobs (the lock released meanwhile), answering from the memo when it can.
fn work(shared: &Shared, translator: &mut Translator) {
    let mut state = shared.lock();
    loop {
        let Some((client, job)) = state.queue.pop_front() else {
            if state.stop {
                return;
            }
            // Jobs come in bursts (a guest's new code turning hot): look again for a while before sleeping, so
            // that the next job of a burst neither waits for a wake-up nor costs its submitter one.
            drop(state);
            let idle_since = std::time::Instant::now();
            state = loop {
                let state = shared.lock();
                if !state.queue.is_empty() || state.stop || idle_since.elapsed() >= LINGER {
                    break state;
                }
                drop(state);
                std::thread::yield_now();
            };
            if state.queue.is_empty() && !state.stop {
                state.asleep = true;
                state = shared.jobs.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                state.asleep = false;
            }
            continue;
        };
        let translation = match state.memo.find(&job) {
            Some(translation) => {
                shared.memo_hits.fetch_add(1, Ordering::Relaxed);
                translation
            }
            None => {
                drop(state);
                let begin = std::time::Instant::now();
                let translation = Arc::new(translator.translate(&job));
                shared.busy_ns.fetch_add(begin.elapsed().as_nanos() as u64, Ordering::Relaxed);
                shared.translated.fetch_add(1, Ordering::Relaxed);
                state = shared.lock();
                state.memo.insert(translation.clone());
                translation
            }
        };
        if let Some(slot) = state.done.get_mut(client) {
            slot.deliver(translation);
        }
    }
}

/// One engine's handle on the worker.
struct Client {
    shared: Arc<Shared>,
    client: usize,
    ready: Arc<AtomicUsize>,
    /// The translations being handed over (its buffer reused).
    taken: Vec<Arc<Translation>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let client = self.client;
        state.queue.retain(|(owner, _)| *owner != client);
        if let Some(slot) = state.done.get_mut(client) {
            slot.alive = false;
            slot.done = Vec::new();
        }
    }
}

impl TranslationService for Client {
    fn submit(&mut self, job: &Job) -> bool {
        let mut state = self.shared.lock();
        if state.stop {
            return false;
        }
        if let Some(translation) = state.memo.find(job) {
            self.shared.memo_hits.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = state.done.get_mut(self.client) {
                slot.deliver(translation);
            }
            return true;
        }
        if state.queue.len() >= QUEUE {
            return false;
        }
        state.queue.push_back((self.client, job.clone()));
        let asleep = state.asleep;
        drop(state);
        if asleep {
            self.shared.jobs.notify_one();
        }
        true
    }

    fn ready(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    fn take(&mut self, install: &mut dyn FnMut(&Translation)) {
        if self.ready() == 0 {
            return;
        }
        {
            let mut state = self.shared.lock();
            if let Some(slot) = state.done.get_mut(self.client) {
                std::mem::swap(&mut slot.done, &mut self.taken);
                slot.ready.fetch_sub(self.taken.len(), Ordering::AcqRel);
            }
        }
        for translation in self.taken.drain(..) {
            install(&translation);
        }
    }
}

/// Memory for host code: one mapping read+execute, made writable (not executable) by `mprotect` while a
/// translation is copied in; or, where the host allows it, two views of one memory file: `base` read+execute and
/// never writable, `alias` read+write and never executable, so that writing code needs no protection change (a
/// pair of `mprotect` calls costs tens of microseconds in a process with several threads, as each flushes the
/// other CPUs' TLBs). No address is ever writable and executable at once either way.
pub struct MappedCode {
    base: *mut u8,
    /// The writable view (null: none, `mprotect` instead).
    alias: *mut u8,
    len: usize,
}

const PAGE: usize = 4096;

impl MappedCode {
    /// `len` bytes (rounded up to whole pages), read+execute, with a writable view if the host allows it.
    pub fn new(len: usize) -> Result<Self, String> {
        match Self::aliased(len) {
            Some(code) => Ok(code),
            None => Self::protected(len),
        }
    }

    /// `len` bytes (rounded up to whole pages), read+execute, written through `mprotect`.
    pub fn protected(len: usize) -> Result<Self, String> {
        let len = len.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping at an address the kernel chooses; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes for translated code: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { base: base.cast(), alias: std::ptr::null_mut(), len })
    }

    /// Two views of a `len`-byte memory file (read+execute, read+write); `None` if the host refuses any step.
    fn aliased(len: usize) -> Option<Self> {
        let len = len.div_ceil(PAGE) * PAGE;
        // SAFETY: creates a new anonymous memory file; the name is a NUL-terminated string.
        let fd = unsafe { libc::memfd_create(c"trapeze-code".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let map = |protection| {
            // SAFETY: a shared mapping of the whole file at an address the kernel chooses.
            let view = unsafe { libc::mmap(std::ptr::null_mut(), len, protection, libc::MAP_SHARED, fd, 0) };
            (view != libc::MAP_FAILED).then_some(view.cast::<u8>())
        };
        // SAFETY: sizes the file just created (it is ours alone).
        let sized = unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0;
        let base = sized.then(|| map(libc::PROT_READ | libc::PROT_EXEC)).flatten();
        let alias = base.and_then(|_| map(libc::PROT_READ | libc::PROT_WRITE));
        // SAFETY: the mappings keep the file alive; the descriptor is no longer needed.
        unsafe { libc::close(fd) };
        match (base, alias) {
            (Some(base), Some(alias)) => Some(Self { base, alias, len }),
            (Some(base), None) => {
                // SAFETY: the mapping just made, used by nothing.
                unsafe { libc::munmap(base.cast(), len) };
                None
            }
            _ => None,
        }
    }

    fn protect(&self, first: usize, bytes: usize, protection: i32) -> Result<(), CodeMemoryError> {
        // SAFETY: `[first, first + bytes)` is whole pages inside the mapping made in `new` (checked by `write`).
        match unsafe { libc::mprotect(self.base.add(first).cast(), bytes, protection) } {
            0 => Ok(()),
            _ => Err(CodeMemoryError::Protection),
        }
    }
}

impl Drop for MappedCode {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `new`; the translator that ran code from them is gone with this value.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
            if !self.alias.is_null() {
                libc::munmap(self.alias.cast(), self.len);
            }
        }
    }
}

// SAFETY: the mapping at `base` lives as long as the value at the same address and is never writable and
// executable at once: with a writable view, it is read+execute always and the view (another address, never
// executable) is written; without one, it is read+execute except inside `write`, which makes exactly the pages it
// writes read+write (not executable), copies, and makes them read+execute again before returning. Code written
// through the writable view is followed by a serializing instruction, so that nothing this thread fetched from the
// executable view before the write runs after it (see `serialize_instruction_fetch`).
unsafe impl CodeMemory for MappedCode {
    fn base(&self) -> usize {
        self.base as usize
    }

    fn len(&self) -> usize {
        self.len
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= self.len).ok_or(CodeMemoryError::OutOfRange)?;
        if !self.alias.is_null() {
            // SAFETY: the destination lies inside the writable view; the source is another object.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.alias.add(offset), bytes.len()) };
            serialize_instruction_fetch();
            return Ok(());
        }
        let first = offset / PAGE * PAGE;
        let last = end.div_ceil(PAGE) * PAGE;
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: the destination lies inside the mapping and is writable now; the source is another object.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) };
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_EXEC)
    }
}

/// Makes this thread fetch instructions anew: what it prefetched before code memory was written through another
/// address (the writable view) is dropped. x86 notices a store to instructions in flight only when it is made
/// through the address they were fetched at; code written through any other address needs a serializing
/// instruction before it runs (Intel SDM vol. 3A 11.6, AMD APM vol. 2 7.6.1). `iretq` to the next instruction is
/// one that every x86-64 has in user mode and that a hypervisor does not intercept (`cpuid` costs a VM exit).
fn serialize_instruction_fetch() {
    // SAFETY: builds an interrupt frame that returns to the next instruction with this thread's own stack
    // segment, stack pointer, flags and code segment, and pops it with `iretq`: every register and the stack
    // are as they were (`tmp` aside); nothing is read or written but the five words pushed below the stack
    // pointer (no red zone is in use: `nostack` is not given).
    unsafe {
        core::arch::asm!(
            "mov {tmp:e}, ss",
            "push {tmp}",
            "lea {tmp}, [rsp + 8]",
            "push {tmp}",
            "pushfq",
            "mov {tmp:e}, cs",
            "push {tmp}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Submits `job` through `service` and waits for its translation.
    fn translate(service: &mut dyn TranslationService, job: &Job) -> Translation {
        assert!(service.submit(job));
        let begin = std::time::Instant::now();
        while service.ready() == 0 {
            assert!(begin.elapsed().as_secs() < 10, "the worker answers");
            std::thread::yield_now();
        }
        let mut got = Vec::new();
        service.take(&mut |translation| got.push(translation.clone()));
        assert_eq!(got.len(), 1);
        got.pop().unwrap()
    }

    /// The worker serves every client, and its memo answers a job only with a translation of the same bytes: a
    /// second client asking for the same block gets the first one's translation without a second encoding, one
    /// asking for the same offset with other bytes gets a translation of its own bytes.
    #[test]
    fn the_memo_never_hands_out_a_translation_of_other_bytes() {
        let worker = Translators::start().unwrap();
        let (mut first, mut second) = (worker.service(), worker.service());
        // addi x6, x6, 1; addi x7, x7, 2; jal x0, -8
        let code = [0x13, 0x03, 0x13, 0x00, 0x93, 0x83, 0x23, 0x00, 0x6f, 0xf0, 0x9f, 0xff];
        let job = Job::new(0x2000, true, false, 16 * 1024, &code);
        let translated = translate(&mut *first, &job);
        assert!(translated.is_translated() && translated.answers(&job));
        let again = translate(&mut *second, &job);
        assert_eq!(again.job(), &job);
        assert_eq!(worker.stats().translated, 1, "{:?}", worker.stats());
        assert_eq!(worker.stats().memo_hits, 1, "{:?}", worker.stats());
        // The same offset, one instruction changed (addi x6, x6, 3): translated anew, from its own bytes.
        let mut other = code;
        other[2] = 0x33;
        let other_job = Job::new(0x2000, true, false, 16 * 1024, &other);
        let fresh = translate(&mut *second, &other_job);
        assert_eq!(fresh.job().bytes(), &other[..]);
        assert!(fresh.answers(&other_job) && !fresh.answers(&job));
        assert_eq!(worker.stats().translated, 2, "{:?}", worker.stats());
        // The other data path: not the memo's either.
        let unpaged = Job::new(0x2000, false, false, 16 * 1024, &code);
        assert!(!translate(&mut *first, &unpaged).answers(&job));
        assert_eq!(worker.stats().translated, 3, "{:?}", worker.stats());
    }

    /// Written code is executable and never writable: a write to it from outside `write` faults, which is
    /// checked by asking the kernel for the mapping's protection.
    #[test]
    fn code_memory_is_never_writable_and_executable_at_once() {
        for mut code in [MappedCode::new(2 * PAGE).unwrap(), MappedCode::protected(2 * PAGE).unwrap()] {
            check_code_memory(&mut code);
        }
    }

    fn check_code_memory(code: &mut MappedCode) {
        // mov eax, 42; ret
        code.write(PAGE - 3, &[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let permissions = |address: usize| {
            let start = format!("{address:x}-");
            let line = maps.lines().find(|line| line.starts_with(&start)).expect("the mapping is listed");
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        assert!(permissions(code.base()).starts_with("r-x"), "{}", permissions(code.base()));
        if !code.alias.is_null() {
            assert!(permissions(code.alias as usize).starts_with("rw-"), "{}", permissions(code.alias as usize));
        }
        // SAFETY: the six bytes just written at PAGE - 3 are a complete function returning 42.
        let function: extern "sysv64" fn() -> u32 = unsafe { std::mem::transmute(code.base() + PAGE - 3) };
        assert_eq!(function(), 42);
        // Rewritten after it ran: the new code runs.
        code.write(PAGE - 2, &[7]).unwrap();
        assert_eq!(function(), 7);
        assert_eq!(code.write(2 * PAGE - 1, &[0, 0]), Err(CodeMemoryError::OutOfRange));
    }

    /// The serializing `iretq` returns to the next instruction with the stack, the locals and the flags as they
    /// were (a wrong frame would fault or return elsewhere).
    #[test]
    fn serializing_instruction_fetch_changes_nothing_else() {
        let locals = [0x1234_5678_9abc_def0u64, 42, u64::MAX];
        let before = std::hint::black_box(&locals) as *const _ as usize;
        for _ in 0..1000 {
            serialize_instruction_fetch();
        }
        assert_eq!(std::hint::black_box(&locals) as *const _ as usize, before);
        assert_eq!(locals, [0x1234_5678_9abc_def0, 42, u64::MAX]);
        let (mut flags_before, mut flags_after): (u64, u64);
        // SAFETY: reads the flags through the stack (a push and a pop).
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags_before) };
        serialize_instruction_fetch();
        // SAFETY: as above.
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags_after) };
        // Arithmetic flags aside (the compiler may set them between), every flag is as it was.
        assert_eq!(flags_before & !0x8d5, flags_after & !0x8d5);
    }
}
