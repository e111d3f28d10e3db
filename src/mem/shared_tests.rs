//! Tests of guest RAM shared by host threads ([`SharedRam`] and [`Ram::shared`]): atomicity of AMOs and SC across
//! threads, little-endian mixed-size accesses, bounds, and the shared code watch's log.
// The four atomic views of one allocation are what an embedder makes with `unsafe`: so does the helper here.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8};

use super::shared::{DEFERRED_WATCHES, DIRTY_LOG};
use super::*;

/// The four views of `words`' bytes that an embedder lends to [`SharedRam::new`].
fn views(words: &[AtomicU64]) -> (&[AtomicU8], &[AtomicU16], &[AtomicU32], &[AtomicU64]) {
    let len = words.len() * 8;
    let start = words.as_ptr();
    // SAFETY: `AtomicU8`, `AtomicU16` and `AtomicU32` have the sizes of `u8`, `u16` and `u32` and alignments no
    // stricter than `AtomicU64`'s; each view covers exactly the `len` bytes of `words`, borrowed for as long as
    // `words` is, and every access through any view is atomic (interior mutability: no `&mut` aliases them).
    unsafe {
        (
            core::slice::from_raw_parts(start.cast::<AtomicU8>(), len),
            core::slice::from_raw_parts(start.cast::<AtomicU16>(), len / 2),
            core::slice::from_raw_parts(start.cast::<AtomicU32>(), len / 4),
            words,
        )
    }
}

fn shared<'a>(words: &'a [AtomicU64], watch: &'a [AtomicU64]) -> SharedRam<'a> {
    let (b8, b16, b32, b64) = views(words);
    SharedRam::new(RAM_BASE, b8, b16, b32, b64, watch).expect("four views of one allocation")
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

#[test]
fn amos_and_sc_from_several_threads_reach_the_exact_total() {
    const THREADS: u64 = 4;
    const EACH: u64 = 20_000;
    let words = atomics(512);
    let shared = shared(&words, &[]);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let mut ram = Ram::shared(&shared);
                for _ in 0..EACH {
                    // amoadd.d, amoadd.w, and an LR/SC loop on a word of its own.
                    ram.amo_at_offset(0, 8, |old| old.wrapping_add(1)).unwrap();
                    ram.amo_at_offset(12, 4, |old| old.wrapping_add(3)).unwrap();
                    loop {
                        let seen = ram.load_at_offset(16, 4).unwrap();
                        if ram.compare_exchange_at_offset(16, 4, seen, seen + 1).unwrap().is_ok() {
                            break;
                        }
                    }
                }
            });
        }
    });
    let ram = Ram::shared(&shared);
    assert_eq!(ram.load_at_offset(0, 8), Some(THREADS * EACH));
    assert_eq!(ram.load_at_offset(12, 4), Some(3 * THREADS * EACH));
    assert_eq!(ram.load_at_offset(16, 4), Some(THREADS * EACH));
    assert_eq!(ram.load_at_offset(8, 4), Some(0), "neighbours untouched");
}

#[test]
fn a_stale_compare_exchange_fails_and_leaves_memory_alone() {
    let words = atomics(8);
    let shared = shared(&words, &[]);
    let (mut a, mut b) = (Ram::shared(&shared), Ram::shared(&shared));
    a.store_at_offset(8, 4, 5).unwrap();
    let seen = a.load_at_offset(8, 4).unwrap();
    b.store_at_offset(8, 4, 6).unwrap();
    assert_eq!(a.compare_exchange_at_offset(8, 4, seen, 7), Some(Err(6)), "another hart's store broke it");
    assert_eq!(b.load_at_offset(8, 4), Some(6));
    // Only the low `size` bytes are compared and stored.
    assert_eq!(a.compare_exchange_at_offset(8, 4, 0xffff_ffff_0000_0006, 0x1_0000_0009), Some(Ok(6)));
    assert_eq!(a.load_at_offset(8, 8), Some(9));
    assert_eq!(a.amo_at_offset(8, 4, |old| old | 0xffff_ffff_0000_0000), Some(9), "amoor.w sees 32 bits");
    assert_eq!(a.load_at_offset(8, 8), Some(9));
}

/// A small deterministic generator (no seed needed to reproduce a failure).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn shared_ram_reads_and_writes_as_exclusive_ram_does_at_every_size_and_alignment() {
    let words = atomics(64);
    let shared = shared(&words, &[]);
    let mut ram = Ram::shared(&shared);
    let mut backing = vec![0u8; 512];
    let mut reference = Ram::new(RAM_BASE, &mut backing);
    let mut state = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20_000 {
        let r = next(&mut state);
        let size = [1, 2, 4, 8][(r % 4) as usize];
        let addr = RAM_BASE + (r >> 8) % 520;
        let value = next(&mut state);
        match (r >> 4) % 4 {
            0 => assert_eq!(ram.store(addr, size, value), reference.store(addr, size, value)),
            1 => {
                let len = (r >> 32) % 40;
                let bytes: Vec<u8> = (0..len).map(|i| (value >> (i % 8 * 8)) as u8 ^ i as u8).collect();
                assert_eq!(ram.write_bytes(addr, &bytes), reference.write_bytes(addr, &bytes));
            }
            2 => {
                let len = (r >> 32) % 40;
                assert_eq!(ram.fill(addr, len, value as u8), reference.fill(addr, len, value as u8));
            }
            _ => {
                let mut got = [0u8; 24];
                let mut want = [0u8; 24];
                let len = ((r >> 32) % 25) as usize;
                assert_eq!(ram.read_bytes(addr, &mut got[..len]), reference.read_bytes(addr, &mut want[..len]));
                assert_eq!(got, want);
            }
        }
        assert_eq!(ram.load(addr, size), reference.load(addr, size), "{size} bytes at {addr:#x}");
    }
    let mut all = vec![0u8; 512];
    ram.read_bytes(RAM_BASE, &mut all).unwrap();
    assert_eq!(&all[..], reference.as_slice().unwrap());
    // Little-endian across sizes, misaligned included.
    ram.store(RAM_BASE + 3, 8, 0x8877_6655_4433_2211).unwrap();
    assert_eq!(ram.load(RAM_BASE + 3, 1), Some(0x11));
    assert_eq!(ram.load(RAM_BASE + 4, 2), Some(0x3322));
    assert_eq!(ram.load(RAM_BASE + 7, 4), Some(0x8877_6655));
    assert_eq!(ram.load(RAM_BASE + 8, 2), Some(0x7766));
    let low = u64::from(all[0]) | u64::from(all[1]) << 8 | u64::from(all[2]) << 16;
    assert_eq!(ram.load(RAM_BASE, 8), Some(0x5544_3322_1100_0000 | low));
}

#[test]
fn shared_ram_refuses_what_exclusive_ram_refuses() {
    let words = atomics(8);
    let shared = shared(&words, &[]);
    let mut ram = Ram::shared(&shared);
    assert!(ram.is_shared());
    assert_eq!(ram.size(), 64);
    assert_eq!(ram.store(RAM_BASE + 60, 4, 0x1122_3344), Some(()));
    assert_eq!(ram.load(RAM_BASE + 61, 4), None);
    assert_eq!(ram.load(RAM_BASE - 1, 1), None);
    assert_eq!(ram.load(u64::MAX, 8), None);
    assert_eq!(ram.store(RAM_BASE + 62, 4, u64::MAX), None);
    assert_eq!(ram.load(RAM_BASE + 60, 4), Some(0x1122_3344), "a refused store wrote nothing");
    assert_eq!(ram.write_bytes(RAM_BASE + 60, &[9; 5]), None);
    assert_eq!(ram.fill(RAM_BASE + 63, 2, 9), None);
    assert_eq!(ram.read_bytes(RAM_BASE + 60, &mut [0; 5]), None);
    assert_eq!(ram.load(RAM_BASE + 60, 4), Some(0x1122_3344));
    assert_eq!(ram.amo_at_offset(64, 4, |v| v), None);
    assert_eq!(ram.amo_at_offset(2, 4, |v| v), None, "misaligned AMO");
    assert_eq!(ram.compare_exchange_at_offset(60, 8, 0, 0), None);
    assert_eq!(ram.compare_exchange_at_offset(1, 2, 0, 0), None);
    assert!(ram.slice(RAM_BASE, 4).is_none() && ram.slice_mut(RAM_BASE, 4).is_none(), "shared RAM lends no slice");
    assert!(ram.as_slice().is_none() && ram.as_mut_slice().is_none());
}

#[test]
fn mismatched_views_are_refused() {
    let words = atomics(8);
    let other = atomics(8);
    let (b8, b16, b32, b64) = views(&words);
    let (o8, o16, _, _) = views(&other);
    assert!(SharedRam::new(RAM_BASE, b8, b16, b32, b64, &[]).is_some());
    assert!(SharedRam::new(RAM_BASE, o8, b16, b32, b64, &[]).is_none(), "another allocation's bytes");
    assert!(SharedRam::new(RAM_BASE, b8, o16, b32, b64, &[]).is_none());
    assert!(SharedRam::new(RAM_BASE, &b8[..63], b16, b32, b64, &[]).is_none(), "shorter bytes");
    assert!(SharedRam::new(RAM_BASE, b8, b16, &b32[..15], b64, &[]).is_none());
    assert!(SharedRam::new(RAM_BASE, b8, b16, b32, &b64[..7], &[]).is_none());
    assert!(SharedRam::new(RAM_BASE, &b8[8..], &b16[4..], &b32[2..], &b64[1..], &[]).is_some(), "a common tail");
    assert!(SharedRam::new(RAM_BASE, &b8[1..57], &b16[..28], &b32[..14], &b64[..7], &[]).is_none(), "one byte off");
}

#[test]
fn a_code_write_on_one_handle_is_reported_once_to_every_handle() {
    const PAGES: u64 = 4;
    let words = atomics((PAGES * PAGE_SIZE / 8) as usize);
    let watch = atomics(code_watch_words(PAGES * PAGE_SIZE));
    let shared = shared(&words, &watch);
    let mut handles = [Ram::shared(&shared), Ram::shared(&shared), Ram::shared(&shared)];
    // Code in bytes [0x100, 0x148) of page 1, translated by handle 0; page 3 whole, by handle 2.
    assert!(handles[0].watch_code(PAGE_SIZE + 0x100, 0x48));
    assert!(handles[2].watch_code_page(3));
    assert!(handles[1].is_code_page(1) && handles[1].is_code_page(3), "the watch is shared");
    handles[1].store(RAM_BASE + PAGE_SIZE + 0x180, 8, 1).unwrap();
    assert!(handles.iter().all(|ram| !ram.has_dirty_code()), "data beside the code");
    handles[1].store(RAM_BASE + PAGE_SIZE + 0x104, 4, 1).unwrap();
    handles[0].write_bytes(RAM_BASE + 4 * PAGE_SIZE - 2, &[1, 2]).unwrap();
    handles[1].store(RAM_BASE + PAGE_SIZE + 0x108, 4, 1).unwrap();
    for (i, ram) in handles.iter_mut().enumerate() {
        assert!(ram.has_dirty_code(), "handle {i}");
        assert_eq!(ram.take_dirty_code().pages(), Some(&[1, 3][..]), "handle {i}: each page once");
        assert!(!ram.has_dirty_code(), "handle {i}");
        assert_eq!(ram.take_dirty_code().pages(), Some(&[][..]));
    }
    assert!(!handles[0].is_code_page(1) && !handles[0].is_code_page(3), "written code pages are unwatched");
    // A handle made now reports only later writes.
    let mut late = Ram::shared(&shared);
    assert!(!late.has_dirty_code());
    // More writes than the log holds: a handle that did not read them sees `All`, one that kept up sees pages.
    for round in 0..=DIRTY_LOG as u64 {
        assert!(handles[0].watch_code(2 * PAGE_SIZE, 4));
        handles[1].store(RAM_BASE + 2 * PAGE_SIZE, 4, round).unwrap();
        assert_eq!(handles[2].take_dirty_code().pages(), Some(&[2][..]), "round {round}");
    }
    assert_eq!(handles[0].take_dirty_code(), DirtyCode::All);
    assert_eq!(late.take_dirty_code(), DirtyCode::All);
    assert!(!late.has_dirty_code());
}

#[test]
fn a_code_write_by_another_thread_reaches_every_thread_once() {
    let words = atomics((4 * PAGE_SIZE / 8) as usize);
    let watch = atomics(code_watch_words(4 * PAGE_SIZE));
    let shared = shared(&words, &watch);
    let ready = std::sync::Barrier::new(4);
    let written = std::sync::Barrier::new(4);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut ram = Ram::shared(&shared);
                    assert!(ram.watch_code(PAGE_SIZE, 16));
                    ready.wait();
                    written.wait();
                    let first = ram.take_dirty_code();
                    (first, ram.take_dirty_code())
                })
            })
            .collect();
        let mut writer = Ram::shared(&shared);
        ready.wait();
        // An amoswap and a store into the code, one data store beside it.
        writer.amo_at_offset(PAGE_SIZE + 8, 4, |_| 0x13).unwrap();
        writer.store(RAM_BASE + PAGE_SIZE + 12, 4, 0x13).unwrap();
        writer.store(RAM_BASE + PAGE_SIZE + 0x800, 4, 0x13).unwrap();
        written.wait();
        for reader in readers {
            let (first, second) = reader.join().unwrap();
            assert_eq!(first.pages(), Some(&[1][..]));
            assert_eq!(second.pages(), Some(&[][..]));
        }
    });
}

#[test]
fn the_engines_fast_path_serves_aligned_accesses_and_leaves_the_rest_to_the_slow_path() {
    let words = atomics((2 * PAGE_SIZE / 8) as usize);
    let watch = atomics(code_watch_words(2 * PAGE_SIZE));
    let shared = shared(&words, &watch);
    let (mut ram, mut other) = (Ram::shared(&shared), Ram::shared(&shared));
    assert_eq!(ram.store_at_host_offset(8, 8, 0x1122_3344_5566_7788), Some(false));
    assert_eq!(ram.load_at_host_offset(12, 4), Some(0x1122_3344));
    assert_eq!(ram.load_at_host_offset(9, 1), Some(0x77));
    assert_eq!(ram.load_at_host_offset(10, 4), None, "misaligned: the slow path's");
    assert_eq!(ram.store_at_host_offset(3, 2, 0), None);
    assert_eq!(ram.load(RAM_BASE + 10, 4), Some(0x3344_5566), "which serves it");
    assert_eq!(ram.load_at_host_offset(2 * PAGE_SIZE as usize, 1), None, "outside");
    assert!(other.watch_code(PAGE_SIZE + 0x40, 4));
    assert_eq!(ram.store_at_host_offset(PAGE_SIZE as usize + 0x40, 4, 0x13), Some(true), "a code write");
    assert_eq!(other.take_dirty_code().pages(), Some(&[1][..]));
}

#[test]
fn the_remote_fence_runs_when_a_watch_sets_a_clear_bit_and_only_then() {
    struct Count(AtomicU64);
    impl RemoteFence for Count {
        fn fence_other_threads(&self) {
            self.0.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        }
    }
    let fences = Count(AtomicU64::new(0));
    let count = || fences.0.load(core::sync::atomic::Ordering::SeqCst);
    let words = atomics(4 * PAGE_SIZE as usize / 8);
    let watch = atomics(code_watch_words(4 * PAGE_SIZE));
    let shared = shared(&words, &watch).with_remote_fence(&fences);
    let mut ram = Ram::shared(&shared);
    assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x40));
    assert_eq!(count(), 1, "a page newly watched");
    assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x40));
    assert_eq!(count(), 1, "the same granule again: nothing new, no fence");
    assert!(ram.watch_code(PAGE_SIZE + 0x800, 0x10));
    assert_eq!(count(), 2, "a new granule of a watched page");
    // A code write clears the page: watching it again needs the fence again.
    ram.store(RAM_BASE + PAGE_SIZE + 0x100, 4, 0).unwrap();
    assert!(ram.has_dirty_code());
    assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x40));
    assert_eq!(count(), 3);
    assert!(!ram.watch_code(8 * PAGE_SIZE, 4), "outside RAM: nothing watched");
    assert_eq!(count(), 3);
}

#[test]
fn a_newly_watched_range_reaches_the_hook_with_its_pages_and_only_then() {
    // A native VMM revokes its other harts' write permission on exactly these pages: a range that left one out
    // would let a hart store natively, unseen, into code another hart just translated.
    struct Pages(std::sync::Mutex<Vec<(u64, u64)>>, AtomicU64);
    impl RemoteFence for Pages {
        fn fence_other_threads(&self) {
            self.1.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        }
        fn pages_watched(&self, first: u64, end: u64) {
            self.0.lock().unwrap().push((first, end));
        }
    }
    let hook = Pages(std::sync::Mutex::new(Vec::new()), AtomicU64::new(0));
    let words = atomics(4 * PAGE_SIZE as usize / 8);
    let watch = atomics(code_watch_words(4 * PAGE_SIZE));
    let shared = shared(&words, &watch).with_remote_fence(&hook);
    let mut ram = Ram::shared(&shared);
    assert!(ram.watch_code(PAGE_SIZE - 2, 4), "a block straddling pages 0 and 1");
    assert!(ram.watch_code_page(3));
    assert!(ram.watch_code_page(3), "again: nothing new");
    assert!(ram.watch_code(2 * PAGE_SIZE, PAGE_SIZE));
    assert_eq!(*hook.0.lock().unwrap(), [(0, 2), (3, 4), (2, 3)]);
    assert_eq!(hook.1.load(core::sync::atomic::Ordering::SeqCst), 0, "the page hook replaces the plain fence");
    assert!((0..4).all(|page| ram.is_code_page(page)));
}

/// A fence that may wait for `fence.i` and counts its runs (the hosted runner's `membarrier`, as a test sees it).
struct Deferring(AtomicU64);

impl RemoteFence for Deferring {
    fn fence_other_threads(&self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }
    fn may_defer(&self) -> bool {
        true
    }
}

impl Deferring {
    fn count(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::SeqCst)
    }
}

/// Stores `value` at RAM offset `offset` (8-aligned) behind the watch's back: what a store that raced a watch
/// looks like to it (the writer read the page's bit as clear, the watcher read the old bytes).
fn store_unseen(words: &[AtomicU64], offset: u64, value: u64) {
    words[(offset / 8) as usize].store(value, core::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_deferred_fence_waits_for_fence_i_which_logs_code_a_racing_store_changed() {
    let fence = Deferring(AtomicU64::new(0));
    let words = atomics(4 * PAGE_SIZE as usize / 8);
    let watch = atomics(code_watch_words(4 * PAGE_SIZE));
    let shared = shared(&words, &watch).with_remote_fence(&fence);
    let (mut ram, mut other) = (Ram::shared(&shared), Ram::shared(&shared));
    assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x40));
    assert!(ram.watch_code(2 * PAGE_SIZE + 0x100, 0x40));
    assert!(other.watch_code_page(3));
    assert_eq!(fence.count(), 0, "every fence deferred");
    // A racing store into page 1's code; page 2's bytes stay; page 3 gets a store the watch sees.
    store_unseen(&words, PAGE_SIZE + 0x108, 0x13);
    other.store(RAM_BASE + 3 * PAGE_SIZE + 8, 4, 0x13).unwrap();
    assert_eq!(ram.take_dirty_code().pages(), Some(&[3][..]), "the racing store went unseen so far");
    other.sync_instruction_fetch();
    assert_eq!(fence.count(), 1, "one fence for all three watches, run by whichever hart fences");
    assert_eq!(ram.take_dirty_code().pages(), Some(&[1][..]), "page 1's code changed since its watch");
    assert!(!ram.is_code_page(1) && ram.is_code_page(2));
    ram.sync_instruction_fetch();
    assert_eq!(fence.count(), 1, "nothing waits: no fence");
    // Page 1 watched again: a racing store is found again, at the next `fence.i`.
    assert!(ram.watch_code(PAGE_SIZE + 0x100, 0x40));
    store_unseen(&words, PAGE_SIZE + 0x138, 0x13);
    ram.sync_instruction_fetch();
    assert_eq!((fence.count(), ram.take_dirty_code().pages()), (2, Some(&[1][..])));
}

#[test]
fn a_full_record_of_deferred_watches_forces_one_fence_which_checks_them() {
    let fence = Deferring(AtomicU64::new(0));
    let pages = (DEFERRED_WATCHES as u64).div_ceil(64) + 1;
    let words = atomics((pages * PAGE_SIZE / 8) as usize);
    let watch = atomics(code_watch_words(pages * PAGE_SIZE));
    let shared = shared(&words, &watch).with_remote_fence(&fence);
    let mut ram = Ram::shared(&shared);
    let granule = |n: u64| n * CODE_GRANULE;
    for n in 0..DEFERRED_WATCHES as u64 {
        assert!(ram.watch_code(granule(n), 4));
        assert!(ram.watch_code(granule(n), 4), "again: nothing newly watched");
    }
    assert_eq!(fence.count(), 0);
    store_unseen(&words, granule(5), 0x13);
    assert!(ram.watch_code(granule(DEFERRED_WATCHES as u64), 4));
    assert_eq!(fence.count(), 1, "the record was full");
    assert_eq!(ram.take_dirty_code().pages(), Some(&[0][..]), "the racing store found by that fence");
    ram.sync_instruction_fetch();
    assert_eq!(fence.count(), 2, "the watch that found the record full waits for the next");
}

/// Runs, on `engine`, a program on shared RAM whose watch defers its fence: it calls a routine, and while it is
/// stopped before its `fence.i`, a racing store (unseen) rewrites the routine; after the `fence.i` it calls it
/// again, which must run the new routine, not a translation of the old one. For every engine; one that keeps
/// translations (`translates`) watched the code, so the `fence.i` ran the deferred fence.
pub(crate) fn fence_i_drops_code_a_racing_store_changed(engine: &mut impl crate::exec::Engine, translates: bool) {
    use crate::hart::{Exception, Hart, HartConfig};
    use crate::isa::{encode, Inst, OpImmKind};
    use crate::mem::mmu::{Memory, Tlb, VmRealMap};
    use crate::trap::Exit;
    let fence = Deferring(AtomicU64::new(0));
    let words = atomics(2 * PAGE_SIZE as usize / 8);
    let watch = atomics(code_watch_words(2 * PAGE_SIZE));
    let shared = shared(&words, &watch).with_remote_fence(&fence);
    let word = |inst: Inst| u64::from(encode(&inst));
    let pair = |low: Inst, high: Inst| word(low) | word(high) << 32;
    let routine = |value: i32| {
        pair(Inst::OpImm { op: OpImmKind::Addi, rd: 5, rs1: 5, imm: value }, Inst::Jalr { rd: 0, rs1: 1, offset: 0 })
    };
    // Page 0: call, fence.i, call, ecall. Page 1: x5 += 1, return.
    store_unseen(&words, 0, pair(Inst::Jal { rd: 1, offset: PAGE_SIZE as i32 }, Inst::FenceI));
    store_unseen(&words, 8, pair(Inst::Jal { rd: 1, offset: PAGE_SIZE as i32 - 8 }, Inst::Ecall));
    store_unseen(&words, PAGE_SIZE, routine(1));
    let mut ram = Ram::shared(&shared);
    let realmap = VmRealMap::for_ram(&ram).unwrap();
    let mut tlb = Tlb::new();
    let mut hart = Hart::new(HartConfig::rv64gc(0));
    hart.reset(RAM_BASE);
    let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
    // The call and the routine: stopped at the `fence.i`.
    assert_eq!(engine.run(&mut hart, &mut memory, 3), Exit::BudgetExhausted);
    assert_eq!((hart.pc, hart.x(5)), (RAM_BASE + 4, 1));
    store_unseen(&words, PAGE_SIZE, routine(16));
    let exit = engine.run(&mut hart, &mut memory, 100);
    assert_eq!(exit, Exit::Exception { cause: Exception::EcallFromM, tval: 0 });
    assert_eq!(hart.x(5), 17, "the second call ran the routine as RAM holds it after the fence.i");
    assert_eq!(fence.count() >= 1, translates);
}

#[test]
fn fence_i_drops_code_a_racing_store_changed_on_the_interpreter_and_threaded_engine() {
    fence_i_drops_code_a_racing_store_changed(&mut crate::exec::interp::Interpreter, false);
    fence_i_drops_code_a_racing_store_changed(&mut crate::exec::threaded::Threaded::<4096, 64, 128>::new(), true);
}
