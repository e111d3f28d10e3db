//! The suite's isolation figures: each hostile-input test appends one line to `target/isolation.txt`,
//! `KIND\tINPUTS\tESCAPES\tPANICS` (hostile inputs tried, how many reached outside what the guest owns, how many
//! panicked the VMM), and `./run-tests.sh` (which removes the file first) prints their sums per kind at the end.
//! The file is created when missing and only ever appended to, one whole line per write, so tests running at
//! once (and the fuzz targets, in the same format) never lose each other's lines.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// `target/isolation.txt` of the repository.
pub fn path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("hosted-test lives in the repository").join("target/isolation.txt")
}

/// Appends one line of figures for `kind`; a test's assertions decide pass or fail, this only records.
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
