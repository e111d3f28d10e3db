//! The suite's isolation figures: each hostile-input test appends one line to `target/isolation.txt`,
//! `KIND\tINPUTS\tESCAPES\tPANICS` (hostile inputs tried, how many reached outside what the guest owns or made the
//! engines disagree, how many panicked the VMM), and `./run-tests.sh` (which removes the file first) prints their
//! sums per kind at the end. The file is created when missing and only ever appended to, one whole line per
//! write, so tests running at once (and the fuzz targets, in the same format) never lose each other's lines.
//!
//! Shared by hosted-test's integration tests (`#[path]`), the core's unit tests (`src/lib.rs`, under `cfg(test)`)
//! and its integration tests (`tests/`): it only records, never decides whether a test passes.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// `target/isolation.txt` of the repository (the nearest directory above this crate holding `run-tests.sh`).
pub fn path() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().find(|dir| dir.join("run-tests.sh").is_file()).unwrap_or(manifest);
    root.join("target/isolation.txt")
}

/// Appends one line of figures for `kind`.
pub fn report(kind: &str, inputs: u64, escapes: u64, panics: u64) {
    let line = format!("{kind}\t{inputs}\t{escapes}\t{panics}\n");
    let path = path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open target/isolation.txt");
    // One `write` of the whole line: appends of a few bytes from several processes do not interleave.
    file.write_all(line.as_bytes()).expect("append to target/isolation.txt");
}

/// The hostile inputs one property test tried: its cases count them ([`Tally::add`]) and [`Tally::run`] runs
/// the property (a `proptest!` function without `#[test]`) and appends the line, a failing run counting as one
/// escape or one panic (as the property says what it guards against) before the failure goes on.
pub struct Tally {
    kind: &'static str,
    inputs: AtomicU64,
    /// Whether a failure of the property is a VMM panic (a "never panics" property) rather than an escape.
    fails_as_panic: bool,
}

impl Tally {
    /// A property whose failure means an input got out (touched what it does not own, or the engines disagree).
    pub const fn escapes(kind: &'static str) -> Self {
        Self { kind, inputs: AtomicU64::new(0), fails_as_panic: false }
    }

    /// A property whose failure means an input panicked the VMM.
    pub const fn panics(kind: &'static str) -> Self {
        Self { kind, inputs: AtomicU64::new(0), fails_as_panic: true }
    }

    /// Counts `inputs` more hostile inputs (a case, or the calls or accesses inside one).
    pub fn add(&self, inputs: usize) {
        self.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
    }

    /// Runs `property`, then appends this kind's line.
    pub fn run(&self, property: impl FnOnce() + std::panic::UnwindSafe) {
        let outcome = std::panic::catch_unwind(property);
        let failed = u64::from(outcome.is_err());
        let (escapes, panics) = if self.fails_as_panic { (0, failed) } else { (failed, 0) };
        report(self.kind, self.inputs.load(Ordering::Relaxed), escapes, panics);
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure);
        }
    }
}
