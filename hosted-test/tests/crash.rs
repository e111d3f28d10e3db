//! Crash consistency: `trapeze` killed (SIGKILL) while its guest writes and flushes its virtio-blk disk loses
//! no write the guest saw acknowledged.
//!
//! The `disk-crash` guest writes 1- to 4-sector records at pseudo-random sectors of its disk without end, flushing
//! every 16 writes, and prints `ack SECTOR COUNT ROUND SEQ` once the device completed each write (see its module
//! docs for the record). The test runs it once per round on the same image file and kills the VMM at a
//! different moment each round: after its first acknowledged write, after a few, after hundreds, just after a
//! flush completed, and at a wall-clock time regardless of what the guest was doing. After each kill every line
//! the guest got out is read (an acknowledgement printed just before the kill counts too), and every sector
//! whose last acknowledged write is known must hold exactly that write's record, or a whole record of a later
//! write to it (the write in flight at the kill may have reached the file); anything else is an acknowledged
//! write lost. The image is checked after every round, so each kill moment is checked on its own.
mod common;
#[path = "common/isolation.rs"]
mod isolation;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The image's size in sectors: small, so writes overwrite earlier ones often.
const SECTORS: u64 = 512;
const SECTOR: usize = 512;
/// The record's first word (as in the guest).
const MAGIC: u64 = 0x6372_6173_6872_6563;
/// Longest a round may take to reach its kill moment.
const TIMEOUT: Duration = Duration::from_secs(60);

/// When a round kills the VMM: after so many acknowledged writes, completed flushes, or so much time.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once this many writes were acknowledged.
    Acks(u64),
    /// Right after this many flushes completed.
    Flushes(u64),
    /// This long after the guest's first line, whatever it is doing.
    Time(Duration),
}

/// Word `k` of a record (as the guest computes it).
fn record_word(round: u64, seq: u64, sector: u64, k: u64) -> u64 {
    let x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (seq + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ (sector.wrapping_mul(64) + k).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `(round, seq)` of the whole record a sector holds, or `None` for anything else (zeros, a torn record).
fn record(image: &[u8], sector: u64) -> Option<(u64, u64)> {
    let bytes = image.get(sector as usize * SECTOR..(sector as usize + 1) * SECTOR)?;
    let word = |k: usize| u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap());
    let (round, seq) = (word(1), word(2));
    let whole = word(0) == MAGIC
        && word(3) == sector
        && (4..SECTOR / 8).all(|k| word(k) == record_word(round, seq, sector, k as u64));
    whole.then_some((round, seq))
}

/// What one round saw.
struct Round {
    /// Acknowledged writes (`ack` lines).
    acks: u64,
    /// Completed flushes (`flushed` lines).
    flushes: u64,
    /// Whether the VMM panicked (its stderr says so).
    panicked: bool,
}

/// Runs the guest as round `round` on `image` until `kill`, kills the VMM, reads everything it printed, and
/// records each acknowledged sector's newest `(round, seq)` in `acked`.
fn run_round(image: &std::path::Path, round: u64, kill: Kill, acked: &mut BTreeMap<u64, (u64, u64)>) -> Round {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .arg("run")
        .args(["--disk", image.to_str().unwrap(), "--append", &format!("round={round}")])
        .arg(env!("TRAPEZE_GUEST_DISK_CRASH"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the trapeze binary");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let (send, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Round { acks: 0, flushes: 0, panicked: false };
    let mut output = Vec::new();
    let mut take = |line: String, seen: &mut Round| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["ack", sector, count, r, seq] => {
                let parse = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("a bad ack line: {line}"));
                let (sector, count, r, seq) = (parse(sector), parse(count), parse(r), parse(seq));
                assert_eq!(r, round, "an ack of another round: {line}");
                for at in sector..sector + count {
                    acked.insert(at, (round, seq));
                }
                seen.acks += 1;
            }
            ["flushed", ..] => seen.flushes += 1,
            _ => {}
        }
        output.push(line);
    };
    let start = Instant::now();
    let mut first_line = None;
    loop {
        let due = match kill {
            Kill::Acks(acks) => seen.acks >= acks,
            Kill::Flushes(flushes) => seen.flushes >= flushes,
            Kill::Time(after) => first_line.is_some_and(|at: Instant| at.elapsed() >= after),
        };
        if due {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "round {round} never reached {kill:?}; it printed:\n{}", output.join("\n"));
        match lines.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => {
                first_line.get_or_insert_with(Instant::now);
                take(line, &mut seen);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("trapeze ended before {kill:?} in round {round}:\n{}", output.join("\n"))
            }
        }
    }
    child.kill().expect("SIGKILL trapeze");
    let status = child.wait().expect("reap trapeze");
    assert!(status.code().is_none(), "round {round}: trapeze was killed, not ended ({status})");
    // Whatever it printed before it died: the guest saw those writes acknowledged too.
    reader.join().expect("the stdout reader");
    for line in lines.try_iter() {
        take(line, &mut seen);
    }
    let stderr = errors.join().expect("the stderr reader");
    seen.panicked = stderr.contains("panicked");
    if seen.panicked {
        eprintln!("round {round}: the VMM panicked:\n{stderr}");
    }
    assert!(
        !output.iter().any(|line| line.starts_with("FAIL")),
        "round {round}: the guest failed:\n{}",
        output.join("\n")
    );
    seen
}

#[test]
fn a_killed_vmm_loses_no_acknowledged_write() {
    let image = std::env::temp_dir().join(format!("trapeze-crash-{}.img", std::process::id()));
    std::fs::write(&image, vec![0u8; SECTORS as usize * SECTOR]).expect("create the image");
    let kills = [
        Kill::Acks(1),
        Kill::Acks(23),
        Kill::Acks(400),
        Kill::Flushes(7),
        Kill::Time(Duration::from_millis(150)),
        Kill::Acks(1500),
    ];
    let mut acked = BTreeMap::new();
    let (mut acks, mut flushes, mut checked, mut lost, mut panics) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for (index, &kill) in kills.iter().enumerate() {
        let round = index as u64 + 1;
        let seen = run_round(&image, round, kill, &mut acked);
        acks += seen.acks;
        flushes += seen.flushes;
        panics += u64::from(seen.panicked);
        let contents = std::fs::read(&image).expect("read the image back");
        assert_eq!(contents.len(), SECTORS as usize * SECTOR, "the image keeps its size");
        let mut missing = Vec::new();
        for (&sector, &want) in &acked {
            checked += 1;
            // The write acknowledged last, or a later one (in flight at the kill) whole.
            if record(&contents, sector).is_none_or(|have| have < want) {
                missing.push((sector, want, record(&contents, sector)));
            }
        }
        lost += missing.len() as u64;
        println!(
            "round {round} ({kill:?}): {} writes acknowledged, {} flushes, {} sectors checked, {} lost",
            seen.acks,
            seen.flushes,
            acked.len(),
            missing.len()
        );
        if !missing.is_empty() {
            failures.push(format!("round {round}: acknowledged sectors lost (sector, acked, found): {missing:?}"));
        }
    }
    let _ = std::fs::remove_file(&image);
    println!(
        "killed trapeze {} times: {acks} writes and {flushes} flushes acknowledged, {checked} sector checks, {lost} lost",
        kills.len()
    );
    // INPUTS: the acknowledged writes checked; ESCAPES: acknowledged sectors lost.
    isolation::report("killed trapeze", acks, lost, panics);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(panics, 0, "rounds in which the VMM panicked (its stderr is above)");
    assert!(acks >= 1500, "the rounds acknowledged {acks} writes");
}
