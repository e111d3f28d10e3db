//! Tests of the code cache: unit tests of each operation, a tiny cache that must flush often, the hosted size
//! going through `Box::new`, and a model-based property test against a plain `HashMap` of what was inserted.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const BASE: u64 = 0x8000_0000;

fn key(pc: u64) -> BlockKey {
    BlockKey::new(pc, 0)
}

/// Ops numbered from `first`, so every block's ops are recognisable.
fn ops(first: u32, n: usize) -> Vec<u32> {
    (first..first + n as u32).collect()
}

type Small = CodeCache<u32, 64, 8, 16>;

#[test]
fn lookup_after_insert_returns_the_inserted_ops() {
    let mut cache = Small::new(0);
    assert_eq!(cache.lookup(key(BASE)), None);
    let a = cache.insert(key(BASE), 12, [Some(BASE + 0x100), Some(BASE + 12)], &ops(10, 3)).unwrap();
    let b = cache.insert(key(BASE + 12), 8, [None, Some(BASE + 20)], &ops(20, 2)).unwrap();
    assert_eq!(cache.lookup(key(BASE)), Some(a));
    assert_eq!(cache.lookup(key(BASE + 12)), Some(b));
    assert_eq!(cache.lookup(BlockKey::new(BASE, 1)), None, "another context tag is another block");
    assert_eq!(cache.lookup(key(BASE + 4)), None);
    assert_eq!(cache.ops(a), Some(&[10, 11, 12][..]));
    assert_eq!(cache.ops(b), Some(&[20, 21][..]));
    assert_eq!(cache.op(a, 2), Some(12));
    assert_eq!(cache.op(a, 3), None);
    assert_eq!(
        cache.block_info(a),
        Some(BlockInfo {
            key: key(BASE),
            guest_len: 12,
            ops_len: 3,
            exits: [Some(BASE + 0x100), Some(BASE + 12), None, None]
        })
    );
    assert_eq!(cache.live_blocks(), 2);
    assert_eq!(cache.ops_used(), 5);
    let stats = cache.stats();
    assert_eq!((stats.lookups, stats.hits, stats.inserts), (5, 2, 2));
}

#[test]
fn covering_finds_the_live_block_whose_bytes_hold_an_address() {
    let mut cache = Small::new(0);
    let a = cache.insert(key(BASE + 0x10), 12, [None; 2], &ops(10, 3)).unwrap();
    let b = cache.insert(key(BASE + 0xffc), 8, [None; 2], &ops(20, 2)).unwrap();
    assert_eq!(cache.covering(BASE + 0x10, 0), Some(a));
    assert_eq!(cache.covering(BASE + 0x18, 0), Some(a), "inside, not at the start");
    assert_eq!(cache.covering(BASE + 0x1c, 0), None, "just past its end");
    assert_eq!(cache.covering(BASE + 0x18, 1), None, "another context");
    assert_eq!(cache.covering(BASE + 0x1000, 0), Some(b), "in the second page of a block that spans two");
    assert!(cache.invalidate_block(a));
    assert_eq!(cache.covering(BASE + 0x18, 0), None, "dropped");
}

#[test]
fn insert_refuses_blocks_that_can_never_fit() {
    let mut cache = Small::new(0);
    assert_eq!(cache.insert(key(BASE), 0, [None; 2], &ops(0, 1)), Err(InsertError::BadGuestRange));
    assert_eq!(cache.insert(key(BASE), MAX_GUEST_LEN + 1, [None; 2], &ops(0, 1)), Err(InsertError::BadGuestRange));
    assert_eq!(cache.insert(key(u64::MAX - 1), 4, [None; 2], &ops(0, 1)), Err(InsertError::BadGuestRange));
    assert_eq!(cache.insert(key(BASE), 4, [None; 2], &ops(0, 65)), Err(InsertError::TooManyOps));
    assert_eq!(cache.live_blocks(), 0);
    // The limits themselves are fine, including the last bytes of the address space and an empty block.
    assert!(cache.insert(key(u64::MAX - 1), 2, [None; 2], &ops(0, 1)).is_ok());
    assert!(cache.insert(key(BASE), MAX_GUEST_LEN, [None; 2], &ops(0, 64)).is_ok());
    assert!(cache.insert(key(BASE + 0x10), 4, [None; 2], &[]).is_ok());
}

#[test]
fn inserting_a_key_again_replaces_the_block() {
    let mut cache = Small::new(0);
    let old = cache.insert(key(BASE), 4, [None; 2], &ops(1, 1)).unwrap();
    let new = cache.insert(key(BASE), 8, [None; 2], &ops(2, 2)).unwrap();
    assert_ne!(old, new);
    assert!(!cache.is_live(old));
    assert_eq!(cache.ops(old), None);
    assert_eq!(cache.lookup(key(BASE)), Some(new));
    assert_eq!(cache.ops(new), Some(&[2, 3][..]));
    assert_eq!(cache.live_blocks(), 1);
    assert_eq!(cache.stats().invalidations, 1);
}

#[test]
fn exits_are_found_by_pc_and_followed_only_while_linked_and_live() {
    let mut cache = Small::new(0);
    let exits = [Some(BASE + 0x40), Some(BASE + 16), Some(BASE + 0x80), Some(BASE + 0xc0)];
    let a = cache.insert(key(BASE), 16, exits, &ops(0, 4)).unwrap();
    let side = cache.insert(key(BASE + 0xc0), 4, [None; 2], &ops(10, 2)).unwrap();
    assert_eq!(cache.chained(a, BASE + 0xc0), Err(Some(ExitSlot::Side2)), "recorded, not linked");
    assert_eq!(cache.chained(a, BASE + 0x80), Err(Some(ExitSlot::Side1)));
    assert_eq!(cache.chained(a, BASE + 0x44), Err(None), "no exit recorded this pc");
    assert_eq!(cache.hop(a, BASE + 0xc0), None);
    assert!(cache.link(a, ExitSlot::Side2, side));
    assert_eq!(cache.chained(a, BASE + 0xc0), Ok(side));
    assert_eq!(cache.hop(a, BASE + 0xc0), Some((side, &[10, 11][..])));
    assert_eq!(cache.hop(a, BASE + 0x80), None, "another exit is not linked");
    // An exit learnt at run time replaces the slot's pc and its link.
    assert!(cache.set_exit(a, ExitSlot::Side2, BASE + 0x80));
    assert_eq!(cache.hop(a, BASE + 0xc0), None);
    assert_eq!(cache.chained(a, BASE + 0x80), Err(Some(ExitSlot::Side1)), "the first slot with the pc");
    assert!(cache.set_exit(a, ExitSlot::Side2, BASE + 0xc0));
    assert_eq!(cache.chained(a, BASE + 0xc0), Err(Some(ExitSlot::Side2)), "unlinked by set_exit");
    assert!(cache.link(a, ExitSlot::Side2, side));
    // More exits than slots are refused.
    assert_eq!(cache.insert(key(BASE + 0x100), 4, [None; EXITS + 1], &ops(0, 1)), Err(InsertError::TooManyExits));
    // Once the successor goes, the link is never followed.
    assert!(cache.invalidate_block(side));
    assert_eq!(cache.hop(a, BASE + 0xc0), None);
    assert_eq!(cache.chained(a, BASE + 0xc0), Err(Some(ExitSlot::Side2)));
    // Nor from a stale source.
    let side = cache.insert(key(BASE + 0xc0), 4, [None; 2], &ops(12, 1)).unwrap();
    assert!(cache.link(a, ExitSlot::Side2, side));
    assert!(cache.invalidate_block(a));
    assert_eq!(cache.hop(a, BASE + 0xc0), None);
    assert_eq!(cache.chained(a, BASE + 0xc0), Err(None));
}

#[test]
fn links_are_followed_until_either_end_goes() {
    let mut cache = Small::new(0);
    let a = cache.insert(key(BASE), 8, [Some(BASE + 0x40), Some(BASE + 8)], &ops(0, 2)).unwrap();
    let b = cache.insert(key(BASE + 8), 4, [None; 2], &ops(2, 1)).unwrap();
    let c = cache.insert(key(BASE + 0x40), 4, [None; 2], &ops(3, 1)).unwrap();
    assert_eq!(cache.successor(a, ExitSlot::Taken), None, "not linked yet");
    assert!(cache.link(a, ExitSlot::FallThrough, b));
    assert!(cache.link(a, ExitSlot::Taken, c));
    assert_eq!(cache.successor(a, ExitSlot::FallThrough), Some(b));
    assert_eq!(cache.successor(a, ExitSlot::Taken), Some(c));
    cache.unlink(a, ExitSlot::Taken);
    assert_eq!(cache.successor(a, ExitSlot::Taken), None);
    assert!(cache.link(a, ExitSlot::Taken, c));

    // Different context tags are never chained.
    let other = cache.insert(BlockKey::new(BASE + 0x80, 7), 4, [None; 2], &ops(4, 1)).unwrap();
    assert!(!cache.link(a, ExitSlot::Taken, other));
    assert_eq!(cache.successor(a, ExitSlot::Taken), Some(c));

    // The successor is invalidated: the link is dead, even once the key is inserted again.
    assert!(cache.invalidate_block(b));
    assert_eq!(cache.successor(a, ExitSlot::FallThrough), None);
    let b2 = cache.insert(key(BASE + 8), 4, [None; 2], &ops(5, 1)).unwrap();
    assert_eq!(cache.successor(a, ExitSlot::FallThrough), None);
    assert!(cache.link(a, ExitSlot::FallThrough, b2));
    assert_eq!(cache.successor(a, ExitSlot::FallThrough), Some(b2));

    // Replacing the successor kills the link too.
    let c2 = cache.insert(key(BASE + 0x40), 4, [None; 2], &ops(6, 1)).unwrap();
    assert_eq!(cache.successor(a, ExitSlot::Taken), None);
    assert!(!cache.link(a, ExitSlot::Taken, c), "a stale target is refused");
    assert!(cache.link(a, ExitSlot::Taken, c2));

    // A stale source has no successors and takes no links.
    assert!(cache.invalidate_block(a));
    assert_eq!(cache.successor(a, ExitSlot::Taken), None);
    assert!(!cache.link(a, ExitSlot::Taken, c2));
    assert!(!cache.invalidate_block(a));
    assert_eq!(cache.stats().links, 5);
}

#[test]
fn invalidate_page_removes_exactly_the_overlapping_blocks() {
    let mut cache = CodeCache::<u32, 256, 32, 64>::new(0);
    let page = |n: u64| BASE + n * PAGE_SIZE;
    let in_page1 = cache.insert(key(page(1) + 0x10), 0x20, [None; 2], &ops(0, 4)).unwrap();
    let end_of_page1 = cache.insert(key(page(1) + 0xff0), 0x10, [None; 2], &ops(4, 4)).unwrap();
    let straddles = cache.insert(key(page(1) + 0xffe), 4, [None; 2], &ops(8, 1)).unwrap();
    let in_page2 = cache.insert(key(page(2)), 0x10, [None; 2], &ops(9, 2)).unwrap();
    let in_page3 = cache.insert(key(page(3) + 0x800), 0x10, [None; 2], &ops(11, 2)).unwrap();
    let page2_other_ctx = cache.insert(BlockKey::new(page(2) + 0x20, 1), 4, [None; 2], &ops(13, 1)).unwrap();
    for n in 1..4 {
        assert!(cache.page_has_code(page(n) + 0x123));
    }
    assert!(cache.link(in_page1, ExitSlot::FallThrough, in_page2));
    assert!(cache.link(in_page3, ExitSlot::Taken, straddles));

    assert_eq!(cache.invalidate_page(page(2) + 0x8), 3, "any address in the page names it");
    for gone in [straddles, in_page2, page2_other_ctx] {
        assert!(!cache.is_live(gone));
    }
    for kept in [in_page1, end_of_page1, in_page3] {
        assert!(cache.is_live(kept));
    }
    assert_eq!(cache.lookup(key(page(1) + 0xffe)), None);
    assert_eq!(cache.lookup(key(page(2))), None);
    assert_eq!(cache.lookup(key(page(1) + 0x10)), Some(in_page1));
    assert_eq!(cache.successor(in_page1, ExitSlot::FallThrough), None);
    assert_eq!(cache.successor(in_page3, ExitSlot::Taken), None);
    assert_eq!(cache.invalidate_page(page(2)), 0);

    assert_eq!(cache.invalidate_page(page(1)), 2);
    assert_eq!(cache.live_blocks(), 1);
    assert_eq!(cache.lookup(key(page(3) + 0x800)), Some(in_page3));
    assert_eq!(cache.stats().invalidations, 5);
    assert_eq!(cache.stats().page_invalidations, 3);

    // The page index forgets the removed blocks: with everything gone, no page has code.
    cache.invalidate_page(page(3));
    for n in 0..8 {
        assert!(!cache.page_has_code(page(n)));
    }
}

#[test]
fn a_straddling_block_is_dropped_by_either_page() {
    let mut cache = Small::new(0);
    let pc = BASE + PAGE_SIZE - 2;
    for page in [BASE, BASE + PAGE_SIZE] {
        let id = cache.insert(key(pc), 4, [None; 2], &ops(0, 1)).unwrap();
        assert!(cache.page_has_code(BASE) && cache.page_has_code(BASE + PAGE_SIZE));
        assert_eq!(cache.invalidate_page(page), 1);
        assert!(!cache.is_live(id));
        assert!(!cache.page_has_code(BASE) && !cache.page_has_code(BASE + PAGE_SIZE));
    }
}

#[test]
fn many_blocks_on_a_page_and_straddlers() {
    let mut cache = CodeCache::<u32, 512, 60, 64>::new(0);
    let mut blocks = Vec::new();
    for i in 0..60u64 {
        // Pages 0..3; every fifth block straddles into the next page.
        let page = BASE + (i % 4) * PAGE_SIZE;
        let (pc, len) = if i % 5 == 0 { (page + PAGE_SIZE - 2 * (i + 1), 128) } else { (page + i * 16, 4) };
        blocks.push((pc, len, cache.insert(key(pc), len, [None; 2], &ops(i as u32, 1)).unwrap()));
    }
    assert_eq!(cache.live_blocks(), 60);
    let overlaps =
        |pc: u64, len: u32, page: u64| pc >> PAGE_SHIFT <= page && page <= (pc + len as u64 - 1) >> PAGE_SHIFT;
    let target = (BASE >> PAGE_SHIFT) + 2;
    let expected = blocks.iter().filter(|(pc, len, _)| overlaps(*pc, *len, target)).count();
    assert!(expected > 15);
    assert_eq!(cache.invalidate_page(target << PAGE_SHIFT), expected);
    for (pc, len, id) in &blocks {
        assert_eq!(cache.is_live(*id), !overlaps(*pc, *len, target), "block at {pc:#x}");
        assert_eq!(cache.find(key(*pc)).is_some(), !overlaps(*pc, *len, target));
    }
    assert_eq!(cache.live_blocks(), 60 - expected);
}

#[test]
fn invalidate_all_and_flush_drop_everything() {
    let mut cache = Small::new(0);
    let a = cache.insert(key(BASE), 4, [None; 2], &ops(0, 1)).unwrap();
    let b = cache.insert(key(BASE + 4), 4, [None; 2], &ops(1, 1)).unwrap();
    assert!(cache.link(a, ExitSlot::FallThrough, b));
    cache.invalidate_all();
    assert_eq!(cache.live_blocks(), 0);
    assert_eq!((cache.ops_used(), cache.blocks_used()), (0, 0));
    assert_eq!(cache.lookup(key(BASE)), None);
    assert!(!cache.page_has_code(BASE));
    assert_eq!(cache.ops(a), None);
    // The same record is reused by the next insert, with a new generation: the old handle stays stale.
    let a2 = cache.insert(key(BASE), 4, [None; 2], &ops(2, 1)).unwrap();
    assert_eq!(a2.index(), a.index());
    assert!(!cache.is_live(a) && cache.is_live(a2));
    assert_eq!(cache.successor(a2, ExitSlot::FallThrough), None);
    cache.flush();
    assert!(!cache.is_live(a2));
    let stats = cache.stats();
    assert_eq!((stats.invalidate_alls, stats.invalidations, stats.flushes, stats.evictions), (1, 2, 1, 1));
}

#[test]
fn a_tiny_cache_flushes_itself_when_full() {
    // 4 blocks, 6 ops.
    let mut cache = CodeCache::<u32, 6, 4, 8>::new(0);
    let a = cache.insert(key(BASE), 8, [None; 2], &ops(0, 2)).unwrap();
    let b = cache.insert(key(BASE + 8), 8, [None; 2], &ops(2, 2)).unwrap();
    assert!(cache.link(a, ExitSlot::FallThrough, b));
    // Three ops do not fit in the two left: flush, then insert.
    let c = cache.insert(key(BASE + 16), 12, [None; 2], &ops(4, 3)).unwrap();
    assert_eq!(cache.stats().flushes, 1);
    assert_eq!(cache.stats().evictions, 2);
    assert!(!cache.is_live(a) && !cache.is_live(b));
    assert_eq!(cache.successor(a, ExitSlot::FallThrough), None);
    assert_eq!(cache.lookup(key(BASE)), None);
    assert_eq!(cache.ops(c), Some(&[4, 5, 6][..]));
    assert_eq!(cache.ops_used(), 3);
    // The block table fills first with empty blocks.
    for i in 0..3 {
        cache.insert(key(BASE + 0x100 + 4 * i), 4, [None; 2], &[]).unwrap();
    }
    assert_eq!((cache.blocks_used(), cache.stats().flushes), (4, 1));
    let d = cache.insert(key(BASE + 0x200), 4, [None; 2], &ops(9, 1)).unwrap();
    assert_eq!((cache.blocks_used(), cache.live_blocks(), cache.stats().flushes), (1, 1, 2));
    assert_eq!(cache.lookup(key(BASE + 0x200)), Some(d));
    // A block as large as the arena always fits (after a flush).
    let e = cache.insert(key(BASE + 0x300), 24, [None; 2], &ops(10, 6)).unwrap();
    assert_eq!(cache.ops(e), Some(&[10, 11, 12, 13, 14, 15][..]));
    assert!(!cache.is_live(d));
    // Invalidated space is not reused before a flush.
    assert!(cache.invalidate_block(e));
    assert_eq!((cache.ops_used(), cache.live_blocks()), (6, 0));
    cache.insert(key(BASE + 0x400), 4, [None; 2], &ops(20, 1)).unwrap();
    assert_eq!((cache.ops_used(), cache.stats().flushes), (1, 4));
}

#[test]
fn fifo_evicts_the_oldest_region_only() {
    // Two regions of 4 ops and 2 records each.
    let mut cache = CodeCache::<u32, 8, 4, 8>::new(0);
    assert_eq!(cache.eviction(), Eviction::FlushAll);
    cache.set_eviction(Eviction::Fifo { regions: 2 });
    assert_eq!(cache.eviction(), Eviction::Fifo { regions: 2 });
    assert_eq!(cache.insert(key(BASE), 4, [None; 2], &ops(0, 5)), Err(InsertError::TooManyOps));
    let a = cache.insert(key(BASE), 4, [None; 2], &ops(0, 2)).unwrap();
    let b = cache.insert(key(BASE + 4), 4, [None; 2], &ops(2, 2)).unwrap();
    // Region 0 is full: c and d go to region 1.
    let c = cache.insert(key(BASE + 8), 4, [None; 2], &ops(4, 3)).unwrap();
    let d = cache.insert(key(BASE + 12), 4, [None; 2], &ops(7, 1)).unwrap();
    assert!(cache.link(c, ExitSlot::FallThrough, a));
    assert!(cache.link(a, ExitSlot::FallThrough, c));
    assert_eq!((cache.live_blocks(), cache.ops_used(), cache.blocks_used(), cache.stats().flushes), (4, 8, 4, 0));
    // Region 1 is full: e empties region 0 (a and b, the oldest) and goes there.
    let e = cache.insert(key(BASE + 16), 4, [None; 2], &ops(8, 1)).unwrap();
    assert!(!cache.is_live(a) && !cache.is_live(b));
    assert!(cache.is_live(c) && cache.is_live(d) && cache.is_live(e));
    assert_eq!(cache.lookup(key(BASE)), None);
    assert_eq!(cache.lookup(key(BASE + 8)), Some(c));
    assert_eq!(cache.successor(c, ExitSlot::FallThrough), None, "the link to an evicted block is dead");
    assert_eq!(cache.ops(c), Some(&[4, 5, 6][..]));
    assert_eq!(cache.ops(e), Some(&[8][..]));
    let stats = cache.stats();
    assert_eq!((stats.flushes, stats.evictions), (1, 2));
    assert_eq!((cache.live_blocks(), cache.ops_used(), cache.blocks_used()), (3, 5, 3));
    // Invalid region counts are clamped.
    cache.set_eviction(Eviction::Fifo { regions: 100 });
    assert_eq!(cache.eviction(), Eviction::Fifo { regions: 4 });
    cache.set_eviction(Eviction::Fifo { regions: 0 });
    assert_eq!(cache.eviction(), Eviction::Fifo { regions: 2 });
    assert_eq!(cache.live_blocks(), 0);
    cache.set_eviction(Eviction::FlushAll);
    assert_eq!(
        cache.insert(key(BASE), 4, [None; 2], &ops(0, 8)).map(|id| cache.ops(id).map(<[u32]>::len)),
        Ok(Some(8))
    );
    let mut one_block = CodeCache::<u32, 8, 1, 2>::new(0);
    one_block.set_eviction(Eviction::Fifo { regions: 4 });
    assert_eq!(one_block.eviction(), Eviction::FlushAll, "a single record cannot be split");
    let built = CodeCache::<u32, 64, 8, 16>::with_eviction(0, Eviction::Fifo { regions: 100 });
    assert_eq!(built.eviction(), Eviction::Fifo { regions: 8 }, "clamped to the shape from the start");
}

#[test]
fn stale_handles_are_refused_everywhere() {
    let mut cache = Small::new(0);
    let a = cache.insert(key(BASE), 4, [None; 2], &ops(0, 1)).unwrap();
    let forged = BlockId { index: 1000, generation: a.generation };
    let never = BlockId::NONE;
    for id in [forged, never] {
        assert!(!cache.is_live(id));
        assert_eq!(cache.ops(id), None);
        assert_eq!(cache.block_info(id), None);
        assert_eq!(cache.successor(id, ExitSlot::Taken), None);
        assert!(!cache.link(id, ExitSlot::Taken, a));
        assert!(!cache.link(a, ExitSlot::Taken, id));
        cache.unlink(id, ExitSlot::Taken);
        assert!(!cache.invalidate_block(id));
    }
    assert!(cache.is_live(a));
}

/// A realistic op: a handler and its operands, as the threaded engine will define it.
#[derive(Clone, Copy)]
struct EngineOp {
    handler: fn(&mut u64, u64),
    operand: u64,
}

fn add(acc: &mut u64, operand: u64) {
    *acc = acc.wrapping_add(operand);
}

#[test]
fn ops_with_handlers_run_from_the_cache() {
    let mut cache = CodeCache::<EngineOp, 16, 4, 8>::new(EngineOp { handler: add, operand: 0 });
    let block = [EngineOp { handler: add, operand: 2 }, EngineOp { handler: add, operand: 40 }];
    let id = cache.insert(key(BASE), 8, [None; 2], &block).unwrap();
    let mut acc = 0;
    for op in cache.ops(id).unwrap() {
        (op.handler)(&mut acc, op.operand);
    }
    assert_eq!(acc, 42);
}

#[test]
fn the_hosted_size_is_boxed_on_a_small_stack() {
    let footprint = HostedCodeCache::<EngineOp>::FOOTPRINT;
    assert!(footprint < 1 << 20, "{footprint} bytes");
    // Block record 152, map slot 24, page index head 4 (documented in the module).
    assert_eq!(std::mem::size_of::<Block>(), 152);
    assert_eq!(std::mem::size_of::<Slot>(), 24);
    let expected = 32768 * 16 + 2048 * 152 + 4096 * 28;
    assert_eq!(footprint, expected + 232);
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let mut cache = Box::new(HostedCodeCache::new(EngineOp { handler: add, operand: 0 }));
            let id = cache.insert(key(BASE), 4, [None; 2], &[EngineOp { handler: add, operand: 1 }]).unwrap();
            cache.ops(id).map(<[EngineOp]>::len)
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), Some(1));
}

#[test]
fn a_static_cache_needs_no_stack() {
    static CACHE: std::sync::Mutex<CodeCache<u32, 4096, 512, 1024>> = std::sync::Mutex::new(CodeCache::new(0));
    let mut cache = CACHE.lock().unwrap();
    let id = cache.insert(key(BASE), 4, [None; 2], &[7]).unwrap();
    assert_eq!(cache.ops(id), Some(&[7][..]));
}

// ---- model-based test: the cache never disagrees with a map of what was inserted and not invalidated ----

const PAGES: u64 = 4;

#[derive(Debug, Clone)]
enum Action {
    Insert { pc: u64, ctx: u64, guest_len: u32, n_ops: usize },
    Lookup { pc: u64, ctx: u64 },
    Link { from: usize, slot: ExitSlot, to: usize },
    Follow { from: usize, slot: ExitSlot },
    InvalidatePage { page: u64, offset: u64 },
    InvalidateBlock { id: usize },
    InvalidateAll,
    Flush,
}

/// Block starts: even offsets near the start, the middle and the end of four pages (so some straddle), and a
/// few pcs shared by many inserts (so keys repeat).
fn any_pc() -> impl Strategy<Value = u64> {
    let offset = prop_oneof![0..64u64, 2000..2100u64, 4000..4096u64, Just(4094u64)];
    prop_oneof![
        3 => (0..PAGES, offset).prop_map(|(page, offset)| BASE + page * PAGE_SIZE + (offset & !1)),
        1 => (0..4u64).prop_map(|n| BASE + n * 0x7fe),
    ]
}

fn any_action() -> impl Strategy<Value = Action> {
    let slot = prop_oneof![Just(ExitSlot::Taken), Just(ExitSlot::FallThrough)];
    prop_oneof![
        6 => (any_pc(), 0..2u64, prop_oneof![1..64u32, 1..=MAX_GUEST_LEN], prop_oneof![0..6usize, 0..20usize])
            .prop_map(|(pc, ctx, guest_len, n_ops)| Action::Insert { pc, ctx, guest_len, n_ops }),
        4 => (any_pc(), 0..2u64).prop_map(|(pc, ctx)| Action::Lookup { pc, ctx }),
        3 => (any::<usize>(), slot.clone(), any::<usize>()).prop_map(|(from, slot, to)| Action::Link { from, slot, to }),
        4 => (any::<usize>(), slot).prop_map(|(from, slot)| Action::Follow { from, slot }),
        2 => (0..PAGES + 1, 0..PAGE_SIZE).prop_map(|(page, offset)| Action::InvalidatePage { page, offset }),
        1 => any::<usize>().prop_map(|id| Action::InvalidateBlock { id }),
        1 => Just(Action::InvalidateAll),
        1 => Just(Action::Flush),
    ]
}

#[derive(Debug, Clone)]
struct ModelBlock {
    id: BlockId,
    region: usize,
    guest_len: u32,
    ops: Vec<u32>,
    exits: [Option<u64>; 2],
}

fn overlaps(pc: u64, guest_len: u32, page: u64) -> bool {
    pc >> PAGE_SHIFT <= page && page <= (pc + guest_len as u64 - 1) >> PAGE_SHIFT
}

/// Runs `actions` on a cache with `regions` FIFO regions (1: flush-all) and on the model, checking every answer;
/// returns the number of flushes.
fn run_model<const OPS: usize, const BLOCKS: usize, const MAP: usize>(
    regions: usize,
    actions: &[Action],
) -> Result<u64, TestCaseError> {
    let mut cache = CodeCache::<u32, OPS, BLOCKS, MAP>::new(u32::MAX);
    if regions > 1 {
        cache.set_eviction(Eviction::Fifo { regions: regions as u32 });
        prop_assert_eq!(cache.eviction(), Eviction::Fifo { regions: regions as u32 });
    }
    let mut flushes = cache.stats().flushes;
    let (ops_per, blocks_per) = (OPS / regions, BLOCKS / regions);
    // Ops and records taken in each region, and the region being filled.
    let mut taken = vec![(0usize, 0usize); regions];
    let mut region = 0;
    let mut live: HashMap<BlockKey, ModelBlock> = HashMap::new();
    // Every handle ever given out, in order, with its key (to ask about stale ones too).
    let mut handed_out: Vec<(BlockId, BlockKey)> = Vec::new();
    let mut links: HashMap<(BlockId, ExitSlot), BlockId> = HashMap::new();
    let mut next_op = 0u32;
    let is_live = |live: &HashMap<BlockKey, ModelBlock>, id: BlockId| live.values().any(|b| b.id == id);

    for action in actions {
        match *action {
            Action::Insert { pc, ctx, guest_len, n_ops } => {
                let key = BlockKey::new(pc, ctx);
                let new_ops = ops(next_op, n_ops);
                next_op += n_ops as u32;
                let exits = [Some(pc ^ 0x40), (n_ops % 2 == 0).then_some(pc + guest_len as u64)];
                let inserted = cache.insert(key, guest_len, exits, &new_ops);
                if n_ops > ops_per {
                    prop_assert_eq!(inserted, Err(InsertError::TooManyOps));
                    continue;
                }
                let Ok(id) = inserted else {
                    return Err(TestCaseError::fail(format!("insert {key:?} {guest_len} {n_ops} refused")));
                };
                // The documented policy: replace a live block with the same key; when the block does not fit in
                // the current region, empty the next one (all of the cache with one region) and fill that.
                live.remove(&key);
                if taken[region].1 >= blocks_per || taken[region].0 + n_ops > ops_per {
                    region = (region + 1) % regions;
                    live.retain(|_, b| b.region != region);
                    flushes += u64::from(taken[region].1 > 0);
                    taken[region] = (0, 0);
                }
                taken[region].0 += n_ops;
                taken[region].1 += 1;
                prop_assert!(!handed_out.iter().any(|(old, _)| *old == id), "a handle was reused");
                live.insert(key, ModelBlock { id, region, guest_len, ops: new_ops, exits });
                handed_out.push((id, key));
            }
            Action::Lookup { pc, ctx } => {
                let key = BlockKey::new(pc, ctx);
                prop_assert_eq!(cache.lookup(key), live.get(&key).map(|b| b.id), "lookup {:?}", key);
            }
            Action::Link { from, slot, to } => {
                if handed_out.is_empty() {
                    continue;
                }
                let (from, from_key) = handed_out[from % handed_out.len()];
                let (to, to_key) = handed_out[to % handed_out.len()];
                let expected = is_live(&live, from) && is_live(&live, to) && from_key.ctx == to_key.ctx;
                prop_assert_eq!(cache.link(from, slot, to), expected);
                if expected {
                    links.insert((from, slot), to);
                }
            }
            Action::Follow { from, slot } => {
                if handed_out.is_empty() {
                    continue;
                }
                let (from, _) = handed_out[from % handed_out.len()];
                let expected =
                    links.get(&(from, slot)).copied().filter(|&to| is_live(&live, from) && is_live(&live, to));
                let followed = cache.successor(from, slot);
                if let Some(to) = followed {
                    prop_assert!(is_live(&live, to), "a link led to a dead block");
                }
                prop_assert_eq!(followed, expected);
            }
            Action::InvalidatePage { page, offset } => {
                let page_number = (BASE >> PAGE_SHIFT) + page;
                let before = live.len();
                live.retain(|key, b| !overlaps(key.pc, b.guest_len, page_number));
                let removed = cache.invalidate_page((page_number << PAGE_SHIFT) + offset);
                prop_assert_eq!(removed, before - live.len());
            }
            Action::InvalidateBlock { id } => {
                if handed_out.is_empty() {
                    continue;
                }
                let (id, key) = handed_out[id % handed_out.len()];
                let expected = is_live(&live, id);
                if expected {
                    live.remove(&key);
                }
                prop_assert_eq!(cache.invalidate_block(id), expected);
            }
            Action::InvalidateAll => {
                cache.invalidate_all();
                live.clear();
                taken.fill((0, 0));
                region = 0;
            }
            Action::Flush => {
                cache.flush();
                live.clear();
                taken.fill((0, 0));
                region = 0;
                flushes += 1;
            }
        }

        // After every action: sizes, every handle, and the page filter.
        prop_assert_eq!(cache.live_blocks(), live.len());
        let used = taken.iter().fold((0, 0), |(o, b), &(to, tb)| (o + to, b + tb));
        prop_assert_eq!((cache.ops_used(), cache.blocks_used()), used);
        prop_assert!(cache.ops_used() <= OPS && cache.blocks_used() <= BLOCKS);
        for &(id, key) in &handed_out {
            match live.get(&key).filter(|b| b.id == id) {
                Some(b) => {
                    prop_assert_eq!(cache.ops(id), Some(&b.ops[..]));
                    let info = cache.block_info(id);
                    prop_assert_eq!(
                        info,
                        Some(BlockInfo {
                            key,
                            guest_len: b.guest_len,
                            ops_len: b.ops.len(),
                            exits: [b.exits[0], b.exits[1], None, None]
                        })
                    );
                }
                None => {
                    prop_assert_eq!(cache.ops(id), None);
                    prop_assert!(!cache.is_live(id));
                    prop_assert_eq!(cache.successor(id, ExitSlot::Taken), None);
                }
            }
        }
        for page in 0..PAGES + 1 {
            let page_number = (BASE >> PAGE_SHIFT) + page;
            if live.iter().any(|(key, b)| overlaps(key.pc, b.guest_len, page_number)) {
                prop_assert!(cache.page_has_code((page_number << PAGE_SHIFT) + 0x10), "false negative, page {}", page);
            }
        }
    }
    prop_assert_eq!(cache.stats().flushes, flushes);
    Ok(flushes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_tiny_cache_agrees_with_the_model(actions in proptest::collection::vec(any_action(), 1..120)) {
        run_model::<24, 6, 8>(1, &actions)?;
    }

    #[test]
    fn a_roomy_cache_agrees_with_the_model(actions in proptest::collection::vec(any_action(), 1..200)) {
        run_model::<1024, 64, 128>(1, &actions)?;
    }

    #[test]
    fn a_cache_with_a_crowded_map_agrees_with_the_model(actions in proptest::collection::vec(any_action(), 1..200)) {
        // One free map slot and four page buckets: long probe runs, backward shifts, shared buckets.
        run_model::<256, 3, 4>(1, &actions)?;
        run_model::<256, 15, 16>(1, &actions)?;
    }

    #[test]
    fn fifo_caches_agree_with_the_model(actions in proptest::collection::vec(any_action(), 1..200)) {
        run_model::<48, 8, 16>(2, &actions)?;
        run_model::<64, 12, 16>(4, &actions)?;
        run_model::<256, 15, 16>(3, &actions)?;
        run_model::<40, 16, 32>(16, &actions)?;
    }
}
