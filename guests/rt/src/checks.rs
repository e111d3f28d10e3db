//! The check tally of the self-checking guests: [`check`] prints one `ok: NAME` or `FAIL: NAME: DETAIL` line and
//! counts it; [`finish`] prints the closing `GUEST: all N checks passed` or `GUEST: F of N checks failed` line
//! and gives the exit status (0 or 1).
use crate::println;
use core::fmt::{Arguments, Display};
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

static CHECKS: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Records and prints one check: `ok: NAME`, or `FAIL: NAME: DETAIL` when it did not pass.
pub fn check(name: impl Display, passed: bool, detail: Arguments<'_>) {
    CHECKS.fetch_add(1, SeqCst);
    if passed {
        println!("ok: {name}");
    } else {
        FAILED.fetch_add(1, SeqCst);
        println!("FAIL: {name}: {detail}");
    }
}

/// Prints the summary line of the checks recorded by [`check`] and returns the exit status for `main`.
pub fn finish(guest: &str) -> u32 {
    summary(guest, CHECKS.load(SeqCst), FAILED.load(SeqCst))
}

/// Prints `GUEST: all N checks passed` and returns 0 when `failed` is 0, else prints
/// `GUEST: F of N checks failed` and returns 1.
pub fn summary(guest: &str, checks: u32, failed: u32) -> u32 {
    if failed == 0 {
        println!("{guest}: all {checks} checks passed");
        0
    } else {
        println!("{guest}: {failed} of {checks} checks failed");
        1
    }
}
