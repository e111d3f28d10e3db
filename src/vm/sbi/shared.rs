//! [`SbiShared`]: the VMM's SBI across hart threads, when each hart of one VM runs in a `Vm` of its own
//! ([`crate::vm::VmBuilder::only_hart`], [`crate::vm::parallel`]) and no hart may touch another's state.
//!
//! What it holds, per hart: the HSM state every hart may read (`hart_get_status`), and the requests other harts
//! aim at it: a supervisor software interrupt to raise, an entry point to start at (a `hart_start` of a
//! stopped hart), and remote fences to perform. Only the target applies them, to its own hart, soft TLB and
//! engine ([`SbiShared::take`]), at the start of every run of its `Vm` and before every engine run; the
//! sender wakes it through the embedder's [`HartWaker`] in case its thread is parked.
//!
//! Remote fences are acknowledged: each one takes a ticket from its target's request counter, and the caller's
//! SBI call returns only once every target has served up to its ticket, or is not running (stopped, start
//! pending or suspended: it serves every pending request before it runs again), or the machine has halted.
//! While it waits the caller serves the fences aimed at itself, so two harts fencing each other at once both
//! end. Every state change a waiter looks at is made under the target's lock, and the target applies its
//! requests after any such change and before it runs: a waiter that saw a hart not running cannot miss it.
//!
//! What it never does: block without end (every wait ends when its targets serve, stop or the machine halts),
//! allocate, or run guest code; it is `no_std`, spin locks held for a few loads and stores only.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use spin::mutex::SpinMutex;

use super::{Fence, HartState};
use crate::vm::machine::MAX_HARTS;
use crate::vm::parallel::HartWaker;

/// Fences a hart's queue holds before they are merged into one flush of everything.
const QUEUED_FENCES: usize = 8;

/// `pending` bits: what a hart has to look at.
const IPI: u32 = 1;
const START: u32 = 2;
const FENCE: u32 = 4;

/// Why [`SbiShared::start`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The hart is not stopped (`SBI_ERR_ALREADY_AVAILABLE`).
    NotStopped,
    /// No such hart (`SBI_ERR_INVALID_PARAM`).
    NoHart,
}

/// What one hart has been asked to do, under its lock.
struct Requests {
    state: HartState,
    /// Where a `hart_start` asked the hart to enter S-mode, and `a1` (`opaque`).
    entry: (u64, u64),
    fences: heapless::Vec<Fence, QUEUED_FENCES>,
    /// Too many fences were queued: flush every translation and the instruction stream instead.
    everything: bool,
    /// Fence tickets handed out and served (wrapping counters).
    requested: u32,
    served: u32,
}

struct Slot {
    /// Bits of `IPI`, `START`, `FENCE`: a cheap look before taking the lock.
    pending: AtomicU32,
    requests: SpinMutex<Requests>,
}

/// What [`SbiShared::take`] hands a hart to apply, then acknowledge with [`SbiShared::served`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Raise `mip.SSIP`.
    pub ipi: bool,
    /// Enter S-mode here (`start`, `opaque`), with every translation dropped, and become STARTED.
    pub start: Option<(u64, u64)>,
    /// Fences to perform, in order.
    pub fences: heapless::Vec<Fence, QUEUED_FENCES>,
    /// Flush every translation and the instruction stream (queued fences overflowed).
    pub everything: bool,
    /// The ticket to acknowledge once the fences are done.
    pub ticket: u32,
}

/// The HSM states and cross-hart requests of one VM's harts, shared by their threads (see the module doc).
pub struct SbiShared<'w> {
    harts: usize,
    slots: [Slot; MAX_HARTS],
    waker: &'w dyn HartWaker,
    /// What a waiting thread does between two looks (a hosted embedder yields its time slice).
    relax: fn(),
    halted: AtomicBool,
}

impl<'w> SbiShared<'w> {
    /// The SBI state of a VM of `harts` harts (clamped to 1 to [`MAX_HARTS`]): `boot_hart` STARTED, the others
    /// STOPPED; `waker` wakes their threads, `relax` is called between two looks of a wait.
    pub fn new(harts: usize, boot_hart: usize, waker: &'w dyn HartWaker, relax: fn()) -> Self {
        let slots = core::array::from_fn(|index| Slot {
            pending: AtomicU32::new(0),
            requests: SpinMutex::new(Requests {
                state: if index == boot_hart { HartState::Started } else { HartState::Stopped },
                entry: (0, 0),
                fences: heapless::Vec::new(),
                everything: false,
                requested: 0,
                served: 0,
            }),
        });
        Self { harts: harts.clamp(1, MAX_HARTS), slots, waker, relax, halted: AtomicBool::new(false) }
    }

    /// The number of harts.
    pub fn harts(&self) -> usize {
        self.harts
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index).filter(|_| index < self.harts)
    }

    /// Hart `index`'s HSM state.
    pub fn state(&self, index: usize) -> Option<HartState> {
        self.slot(index).map(|slot| slot.requests.lock().state)
    }

    /// Hart `index` itself changed its state (stopped, suspended, resumed, started).
    pub fn publish(&self, index: usize, state: HartState) {
        if let Some(slot) = self.slot(index) {
            slot.requests.lock().state = state;
        }
    }

    /// The machine is ending: no wait goes on, and every hart's thread is woken.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        (0..self.harts).for_each(|index| self.waker.wake(index));
    }

    /// Whether [`halt`](Self::halt) was called.
    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Raises a supervisor software interrupt on every hart of `targets` (a bit per hart index).
    pub fn send_ipi(&self, targets: u64) {
        for index in self.indices(targets) {
            self.slots[index].pending.fetch_or(IPI, Ordering::SeqCst);
            self.waker.wake(index);
        }
    }

    /// Starts stopped hart `index` at `start` with `a1` = `opaque`: it is START_PENDING until its thread enters.
    pub fn start(&self, index: usize, start: u64, opaque: u64) -> Result<(), StartError> {
        let slot = self.slot(index).ok_or(StartError::NoHart)?;
        {
            let mut requests = slot.requests.lock();
            if requests.state != HartState::Stopped {
                return Err(StartError::NotStopped);
            }
            requests.state = HartState::StartPending;
            requests.entry = (start, opaque);
            slot.pending.fetch_or(START, Ordering::SeqCst);
        }
        self.waker.wake(index);
        Ok(())
    }

    /// Whether hart `index` has requests to apply (one atomic load).
    pub fn pending(&self, index: usize) -> bool {
        self.slot(index).is_some_and(|slot| slot.pending.load(Ordering::SeqCst) != 0)
    }

    /// Takes hart `index`'s requests (only fences when `fences_only`: a hart in the middle of an SBI call).
    /// A start makes it STARTED. The caller applies them, then acknowledges the fences with
    /// [`served`](Self::served).
    pub fn take(&self, index: usize, fences_only: bool) -> Taken {
        let mut taken = Taken::default();
        let Some(slot) = self.slot(index) else { return taken };
        let mut requests = slot.requests.lock();
        let bits = if fences_only { FENCE } else { IPI | START | FENCE };
        let pending = slot.pending.fetch_and(!bits, Ordering::SeqCst) & bits;
        taken.ipi = pending & IPI != 0;
        if pending & START != 0 && requests.state == HartState::StartPending {
            requests.state = HartState::Started;
            taken.start = Some(requests.entry);
        }
        taken.fences = core::mem::take(&mut requests.fences);
        taken.everything = core::mem::take(&mut requests.everything);
        taken.ticket = requests.requested;
        taken
    }

    /// Hart `index` has performed the fences of tickets up to `ticket`.
    pub fn served(&self, index: usize, ticket: u32) {
        if let Some(slot) = self.slot(index) {
            let mut requests = slot.requests.lock();
            if ticket.wrapping_sub(requests.served) as i32 > 0 {
                requests.served = ticket;
            }
        }
    }

    /// Asks every hart of `targets` but `caller` for `fence`, and waits until each has performed it or is not
    /// running (see the module doc); `serve_own` performs the fences aimed at `caller` meanwhile, and is called
    /// at least once.
    pub fn fence(&self, caller: usize, targets: u64, fence: Fence, mut serve_own: impl FnMut(&Self)) {
        let mut tickets = [0u32; MAX_HARTS];
        let mut waiting = 0u64;
        for index in self.indices(targets).filter(|&index| index != caller) {
            let slot = &self.slots[index];
            {
                let mut requests = slot.requests.lock();
                if requests.fences.push(fence).is_err() {
                    requests.everything = true;
                }
                requests.requested = requests.requested.wrapping_add(1);
                tickets[index] = requests.requested;
                slot.pending.fetch_or(FENCE, Ordering::SeqCst);
            }
            waiting |= 1 << index;
            self.waker.wake(index);
        }
        loop {
            serve_own(self);
            for index in self.indices(waiting) {
                let requests = self.slots[index].requests.lock();
                let done = requests.served.wrapping_sub(tickets[index]) as i32 >= 0;
                if done || requests.state != HartState::Started {
                    waiting &= !(1 << index);
                }
            }
            if waiting == 0 || self.halted() {
                return;
            }
            (self.relax)();
        }
    }

    fn indices(&self, targets: u64) -> impl Iterator<Item = usize> {
        (0..self.harts).filter(move |&index| targets & (1 << index) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::vec::Vec;

    #[derive(Default)]
    struct Wakes(Mutex<Vec<usize>>);

    impl HartWaker for Wakes {
        fn wake(&self, index: usize) {
            self.0.lock().unwrap().push(index);
        }
    }

    const PAGE: Fence = Fence::Vma { first: 0x1000, pages: 1, asid: None };

    #[test]
    fn a_start_takes_a_stopped_hart_only_and_wakes_it() {
        let wakes = Wakes::default();
        let shared = SbiShared::new(3, 0, &wakes, || {});
        assert_eq!(shared.start(0, 0x8000_0000, 1), Err(StartError::NotStopped));
        assert_eq!(shared.start(3, 0x8000_0000, 1), Err(StartError::NoHart));
        assert_eq!(shared.start(2, 0x8000_2000, 7), Ok(()));
        assert_eq!(shared.state(2), Some(HartState::StartPending));
        assert_eq!(shared.start(2, 0x8000_3000, 8), Err(StartError::NotStopped), "one start wins");
        assert_eq!(*wakes.0.lock().unwrap(), [2]);
        assert!(shared.pending(2) && !shared.pending(1));
        let taken = shared.take(2, false);
        assert_eq!(taken.start, Some((0x8000_2000, 7)));
        assert_eq!(shared.state(2), Some(HartState::Started));
        assert!(!shared.pending(2));
    }

    #[test]
    fn a_fence_wait_ends_when_the_target_is_not_running_or_the_machine_halts() {
        let wakes = Wakes::default();
        let shared = SbiShared::new(2, 0, &wakes, || {});
        // Hart 1 is stopped: nothing to wait for, and the request stays for when it runs.
        let mut served = 0;
        shared.fence(0, 0b11, PAGE, |_| served += 1);
        assert_eq!(served, 1, "the caller served its own requests once");
        assert_eq!(shared.take(1, true).fences.as_slice(), [PAGE]);
        // Started, and never serving: only the machine's end ends the wait.
        shared.publish(1, HartState::Started);
        let mut looks = 0;
        shared.fence(0, 0b10, PAGE, |shared| {
            looks += 1;
            if looks == 3 {
                shared.halt();
            }
        });
        assert_eq!(looks, 3);
    }

    #[test]
    fn too_many_queued_fences_become_one_flush_of_everything() {
        let wakes = Wakes::default();
        let shared = SbiShared::new(2, 0, &wakes, || {});
        for _ in 0..QUEUED_FENCES + 1 {
            shared.fence(0, 0b10, PAGE, |_| {});
        }
        let taken = shared.take(1, true);
        assert_eq!(taken.fences.len(), QUEUED_FENCES);
        assert!(taken.everything);
        assert_eq!(taken.ticket, QUEUED_FENCES as u32 + 1);
        shared.served(1, taken.ticket);
        assert_eq!(shared.take(1, true), Taken { ticket: QUEUED_FENCES as u32 + 1, ..Taken::default() });
    }
}
