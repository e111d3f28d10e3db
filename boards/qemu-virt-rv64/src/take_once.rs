//! [`TakeOnce`]: a table of `N` values in a `static`, each handed out as `&'static mut` at most once. What the
//! board's per-VM memory (RAM partitions, shadow table pools, patch tables, patched copies, code caches) lives in
//! instead of a `static mut`: these are far too large for the heap or the stack (the RAM partitions are zeroed
//! `.bss`), and each belongs to one VM for the board's lifetime. A second [`TakeOnce::take`] of an index answers `None`, so no VM
//! index can be handed out twice (it used to be a comment: "never reuse an index of a live VM").
//!
//! The one `unsafe` block of the type is in [`TakeOnce::take`].

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// `N` values, each taken at most once.
pub struct TakeOnce<T, const N: usize> {
    values: UnsafeCell<[T; N]>,
    taken: [AtomicBool; N],
}

// SAFETY: a value is reached only through the one `&'static mut` that `take` hands out for its index (the
// `taken` flag, set atomically, guarantees there is at most one), so sharing the table between threads shares no
// value; handing that reference to another thread moves the value's use there, hence `T: Send`.
unsafe impl<T: Send, const N: usize> Sync for TakeOnce<T, N> {}

impl<T, const N: usize> TakeOnce<T, N> {
    /// The table of `values`, none taken.
    pub const fn new(values: [T; N]) -> Self {
        Self { values: UnsafeCell::new(values), taken: [const { AtomicBool::new(false) }; N] }
    }

    /// Value `index`, the first time it is asked for; `None` when it was taken before or there is no such index.
    // A `&mut` from a shared `&self` is the point of the type: the taken flag makes it the only one.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self, index: usize) -> Option<&'static mut T> {
        let taken = self.taken.get(index)?;
        if taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `index < N` (its flag exists), so the pointer stays inside the array, and no reference to the
        // whole array is made. The flag was false and is now true, so this is the only reference to value `index`
        // ever made, and it may live as long as the `static` table.
        Some(unsafe { &mut *self.values.get().cast::<T>().add(index) })
    }
}
