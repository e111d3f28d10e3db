//! The split-virtqueue code on its own, over guest memory the input fills: descriptor chains of any shape
//! (loops, indices past the table, buffers straddling RAM's end, INDIRECT flags) from any head, the available
//! ring's index jumping anywhere, and used-ring writes. Checks against a walk written here: a chain is
//! accepted exactly when it ends within the queue size inside RAM, its readable and writable lengths and its
//! defect are the walk's, every segment it hands out lies in RAM and the segments cover the asked range, and
//! `pop` never yields more heads than the driver published nor a head outside the table.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::dev::virtio::queue::{ChainDefect, DescChain, Queue, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use trapeze::mem::{Ram, RAM_BASE};
use trapeze_fuzz::Input;

const RAM_SIZE: usize = 0x1000;

/// The reference walk: `Some((readable, writable, defect))`, or `None` for a broken chain.
fn reference(ram: &Ram, table: u64, size: u16, head: u16) -> Option<(u64, u64, Option<ChainDefect>)> {
    let (mut readable, mut writable, mut defect, mut seen_writable) = (0u64, 0u64, None, false);
    let mut index = head;
    for _ in 0..size {
        if index >= size {
            return None;
        }
        let at = table.checked_add(u64::from(index) * 16)?;
        let bytes = ram.slice(at, 16)?;
        let addr = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
        let len = u64::from(u32::from_le_bytes(bytes[8..12].try_into().unwrap()));
        let flags = u16::from_le_bytes(bytes[12..14].try_into().unwrap());
        let next = u16::from_le_bytes(bytes[14..16].try_into().unwrap());
        let write = flags & DESC_F_WRITE != 0;
        let this = if flags & DESC_F_INDIRECT != 0 {
            Some(ChainDefect::Indirect)
        } else if len != 0 && ram.slice(addr, len).is_none() {
            Some(ChainDefect::BufferOutsideMemory)
        } else if !write && seen_writable {
            Some(ChainDefect::ReadableAfterWritable)
        } else {
            None
        };
        defect = defect.or(this);
        if write {
            seen_writable = true;
            writable += len;
        } else {
            readable += len;
        }
        if flags & DESC_F_NEXT == 0 {
            return Some((readable, writable, defect));
        }
        index = next;
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let size = match input.u8() % 4 {
        0 => input.u16(),
        _ => 1 << input.below(6),
    };
    let table = match input.u8() % 4 {
        0 => input.u64(),
        1 => RAM_BASE + RAM_SIZE as u64 - input.below(256),
        _ => RAM_BASE + input.below(64) * 16,
    };
    let mut backing = vec![0u8; RAM_SIZE];
    // The descriptors: mostly plausible, in RAM.
    for i in 0..64u64 {
        let at = (i * 16) as usize;
        let addr = match input.u8() % 4 {
            0 => input.u64(),
            1 => RAM_BASE + RAM_SIZE as u64 - input.below(64),
            _ => RAM_BASE + input.below(RAM_SIZE as u64),
        };
        let len = if input.one_in(4) { input.u32() } else { input.below(512) as u32 };
        let flags = if input.one_in(8) { input.u16() } else { input.u16() & 3 };
        let next = if input.one_in(8) { input.u16() } else { input.below(u64::from(size.max(1))) as u16 };
        backing[at..at + 8].copy_from_slice(&addr.to_le_bytes());
        backing[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
        backing[at + 12..at + 14].copy_from_slice(&flags.to_le_bytes());
        backing[at + 14..at + 16].copy_from_slice(&next.to_le_bytes());
    }
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    for _ in 0..4 {
        let head = if input.one_in(8) { input.u16() } else { input.below(u64::from(size.max(1))) as u16 };
        let want = reference(&ram, table, size, head);
        let chain = DescChain::new(&ram, table, size, head);
        let Ok(chain) = chain else {
            assert_eq!(want, None, "a chain the walk finishes was refused");
            continue;
        };
        assert_eq!(Some((chain.readable_len(), chain.writable_len(), chain.defect())), want);
        assert_eq!(chain.head(), head);
        let mut cursor = chain.cursor();
        let mut count = 0;
        while cursor.next(&ram).is_some() {
            count += 1;
            assert!(count <= size as usize, "the cursor yields at most the queue size");
        }
        assert!(!cursor.broken());
        if let Some(byte) = chain.last_writable_byte() {
            assert!(ram.slice(byte, 1).is_some());
        }
        if chain.defect().is_none() {
            for writable in [false, true] {
                let total = if writable { chain.writable_len() } else { chain.readable_len() };
                let start = input.below(total + 2);
                let len = input.below(total + 2);
                let mut segments = chain.segments(writable, start, len);
                let mut covered = 0;
                while let Some((addr, piece)) = segments.next(&ram) {
                    assert!(piece > 0 && ram.slice(addr, piece).is_some(), "segment {addr:#x}+{piece} outside RAM");
                    covered += piece;
                }
                assert_eq!(covered, len.min(total.saturating_sub(start)), "segments cover the range");
            }
        }
    }
    // The rings: a queue of `size` over random rings.
    let mut queue = Queue::default();
    (queue.size, queue.desc, queue.driver, queue.device) = (size, table, RAM_BASE + 0x400, RAM_BASE + 0x800);
    queue.set_ready(true);
    let published = input.u16();
    let _ = ram.store(RAM_BASE + 0x402, 2, u64::from(published));
    let mut popped = 0u32;
    while let Ok(Some(head)) = queue.pop(&ram) {
        assert!(head < size, "head {head} outside a table of {size}");
        popped += 1;
        assert!(popped <= u32::from(published), "popped {popped} of {published} published");
        if queue.push_used(&mut ram, head, input.u32()).is_err() {
            break;
        }
        let used = ram.load(RAM_BASE + 0x802, 2).unwrap() as u32;
        assert_eq!(used, popped & 0xffff, "the used index counts the entries pushed");
        if popped > 70_000 {
            break;
        }
    }
    if !queue.size_valid(u16::MAX) {
        return;
    }
    let _ = queue.interrupt_suppressed(&ram);
});
