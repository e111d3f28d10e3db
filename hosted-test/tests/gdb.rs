//! The gdb stub driven by a real `gdb-multiarch` in batch mode, on the `debuggee` guest (built with debug
//! information): break at a symbol, step lines and instructions, read registers and a static, watch a store,
//! interrupt a spinning guest with Ctrl-C, write memory and registers, and see the guest's exit reported.
//!
//! `trapeze run -S --gdb tcp::0` listens on a free loopback port it chooses and names on stderr; every child is
//! killed when the test ends or its time is up. Without `gdb-multiarch` the test fails and says how to install
//! it (`./run-tests.sh` installs it).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a whole session may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A child process that is killed when dropped, and what it printed on stdout.
struct Process {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with stdout collected in the background (stderr is taken by the caller if piped).
    fn spawn(command: &mut Command) -> Self {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {:?}: {e}", command.get_program());
        });
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stdout);
        let mut pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = pipe.read(&mut buffer) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..count]));
            }
        });
        Self { child, stdout }
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for a child")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `gdb-multiarch` on PATH; the test fails (never skips) without it.
fn gdb_multiarch() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("gdb-multiarch")).find(|candidate| candidate.is_file()).expect(
        "gdb-multiarch is not installed, and the gdb stub test needs it: apt-get install gdb-multiarch \
         (./run-tests.sh installs it)",
    )
}

/// Starts `trapeze run --gdb tcp::0 ARGS... DEBUGGEE` and returns it with the port it listens on.
fn start_trapeze(args: &[&str]) -> (Process, u16) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trapeze"));
    command.arg("run").args(["--gdb", "tcp::0"]).args(args).arg(env!("TRAPEZE_GUEST_DEBUGGEE"));
    let mut trapeze = Process::spawn(command.stderr(Stdio::piped()));
    let stderr = trapeze.child.stderr.take().expect("piped stderr");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("trapeze: {line}");
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = received.recv_timeout(wait).expect("trapeze names the port it listens on within 30 s");
        if let Some(address) = line.strip_prefix("trapeze: gdb stub listening on 127.0.0.1:") {
            let port = address.split_whitespace().next().and_then(|port| port.parse().ok());
            return (trapeze, port.expect("a port number"));
        }
    }
}

/// Runs gdb's batch `script` against `trapeze` until both have exited; with `interrupt`, gdb gets a SIGINT
/// (the user's Ctrl-C) once the guest prints `spinning`. Returns gdb's output and trapeze's exit status.
fn debug_session(trapeze: &mut Process, port: u16, script: &str, interrupt: bool) -> (String, ExitStatus) {
    let directory = std::env::temp_dir().join(format!("trapeze-gdb-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a scratch directory");
    let script_path = directory.join("session.gdb");
    let script = format!("set pagination off\nset confirm off\ntarget remote 127.0.0.1:{port}\n{script}");
    std::fs::write(&script_path, script).expect("write the gdb script");
    let mut gdb = Process::spawn(
        Command::new(gdb_multiarch())
            .arg("-nx")
            .arg("-batch")
            .arg("-x")
            .arg(&script_path)
            .arg(env!("TRAPEZE_GUEST_DEBUGGEE"))
            .stderr(Stdio::piped()),
    );
    let gdb_errors = Arc::clone(&gdb.stdout);
    let mut stderr = gdb.child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        gdb_errors.lock().unwrap().push_str(&text);
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut interrupted = !interrupt;
    let status = loop {
        if !interrupted && trapeze.output().contains("spinning") {
            interrupted = true;
            let pid = i32::try_from(gdb.child.id()).expect("a pid");
            // SAFETY: kill(2) on our own child's pid has no memory-safety requirement.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "Ctrl-C to gdb");
        }
        if let Some(status) = trapeze.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not end within {TIMEOUT:?}; gdb so far:\n{}\nguest so far:\n{}",
            gdb.output(),
            trapeze.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // gdb reports the exit and ends its script.
    let gdb_deadline = Instant::now() + Duration::from_secs(20);
    while gdb.exited().is_none() && Instant::now() < gdb_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&directory);
    let output = gdb.output();
    eprintln!("gdb:\n{output}");
    (output, status)
}

/// Asserts that `output` holds each of `expected` in this order.
fn assert_in_order(output: &str, expected: &[&str]) {
    let mut rest = output;
    for text in expected {
        match rest.find(text) {
            Some(at) => rest = &rest[at + text.len()..],
            None => panic!("gdb's output lacks `{text}` (after what came before it):\n{output}"),
        }
    }
}

/// The session of the issue: break at a symbol, step, read a variable, watch a store, continue to the end.
#[test]
fn gdb_breaks_steps_reads_watches_interrupts_and_sees_the_exit() {
    let (mut trapeze, port) = start_trapeze(&["-S"]);
    let script = "\
echo STOPPED-AT-ENTRY\\n
p/x $pc
p $priv
p/x $misa
p/x $mstatus
break tick
continue
p step
next
next
next
p debuggee::COUNTER
stepi
p/x $pc
delete
watch debuggee::COUNTER
continue
p debuggee::COUNTER
delete
echo CONTINUE-TO-SPIN\\n
continue
p debuggee::SPIN
set var debuggee::SPIN = 0
continue
";
    let (output, status) = debug_session(&mut trapeze, port, script, true);
    assert_in_order(
        &output,
        &[
            "STOPPED-AT-ENTRY",
            // Stopped before the first instruction (-S), at the ELF's entry, in M-mode, on an RV64IMAFDC+SU hart.
            "= 0x80000000",
            "= 3",
            "= 0x800000000014112d",
            "Breakpoint 1 at",
            "Breakpoint 1, debuggee::tick (step=1) at debuggee/src/main.rs:25",
            "$5 = 1",
            // `next` three times: through the body and its volatile store.
            "28\t",
            "29\t",
            "32\t",
            // The store has happened.
            "$6 = 1",
            "Hardware watchpoint 2: debuggee::COUNTER",
            // The next store: tick(2) adds 2.
            "Old value = 1",
            "New value = 3",
            "= 3",
            "CONTINUE-TO-SPIN",
            "received signal SIGINT",
            "= 1",
            "exited normally",
        ],
    );
    assert!(status.success(), "the guest passed: {status}");
    assert!(trapeze.output().contains("counter = 15"), "the guest's output: {}", trapeze.output());
}

/// Two harts are two threads; at a hardware breakpoint a CSR and a static (memory) are written, which changes
/// what the guest computes, and its failure reaches gdb as the exit code; guest time stands still while gdb
/// holds the machine.
#[test]
fn gdb_sees_every_hart_and_its_writes_change_the_guest() {
    let (mut trapeze, port) = start_trapeze(&["-S", "-smp", "2"]);
    let script = "\
info threads
hbreak tick
continue
p step
set var debuggee::COUNTER = 100
p/x $mscratch
set var $mscratch = 0x1234
p/x $mscratch
p $time
shell sleep 1
continue
p $time
delete
echo CONTINUE-TO-SPIN\\n
continue
set var debuggee::SPIN = 0
continue
";
    let (output, status) = debug_session(&mut trapeze, port, script, true);
    assert_in_order(
        &output,
        &[
            "Thread 1.1 (hart 0, Machine mode)",
            "Thread 1.2 (hart 1, Machine mode)",
            "Hardware assisted breakpoint 1 at",
            "Breakpoint 1, debuggee::tick (step=1)",
            "$1 = 1",
            "$2 = 0x0",
            "$3 = 0x1234",
            "Breakpoint 1, debuggee::tick (step=2)",
            "CONTINUE-TO-SPIN",
            "received signal SIGINT",
            // 100 + 1 + 2 + 3 + 4 + 5 = 115, not 15: the guest fails with status 1.
            "exited with code 01",
        ],
    );
    // Guest time stood still while gdb held the machine for a second between the two breakpoints.
    let time = |name: &str| -> u64 {
        let line = output.lines().find_map(|line| line.strip_prefix(name)).expect("gdb printed the time");
        line.trim().parse().expect("a number of ticks")
    };
    let (before, after) = (time("$4 = "), time("$5 = "));
    assert!(after >= before && after - before < 5_000_000, "guest time ran while stopped: {before} -> {after}");
    assert_eq!(status.code(), Some(1), "the guest's failure is trapeze's status");
    assert!(trapeze.output().contains("counter = 115"), "the guest's output: {}", trapeze.output());
}

/// Without `-S` the guest runs at once; a debugger attaching later stops it where it is, and when it dies the
/// guest runs on, the breakpoint it had inserted gone with it (one left set would stop the guest for nobody).
#[test]
fn gdb_attaches_to_a_running_guest_which_outlives_it() {
    let (mut trapeze, port) = start_trapeze(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trapeze.output().contains("spinning") {
        assert!(Instant::now() < deadline, "the guest did not start before gdb attached");
        assert!(trapeze.exited().is_none(), "the guest ended before gdb attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = "\
bt
p debuggee::SPIN
p debuggee::COUNTER
set var debuggee::SPIN = 0
set breakpoint always-inserted on
break rt_exit_from_main
echo GDB-DIES\\n
shell kill -9 $PPID
";
    let (output, status) = debug_session(&mut trapeze, port, script, false);
    // Stopped in the spin loop (main, or the volatile read it calls), with every tick done.
    assert_in_order(&output, &["debuggee::main", "= 1", "= 15", "Breakpoint 1 at", "GDB-DIES"]);
    assert!(status.success(), "the guest passed: {status}");
    assert!(trapeze.output().contains("counter = 15"), "the guest's output: {}", trapeze.output());
}

/// gdb's `kill` ends the run with trapeze's status 5.
#[test]
fn gdb_kills_the_guest() {
    let (mut trapeze, port) = start_trapeze(&["-S"]);
    let script = "\
break tick
continue
kill
";
    let (output, status) = debug_session(&mut trapeze, port, script, false);
    assert_in_order(&output, &["Breakpoint 1, debuggee::tick", "killed"]);
    assert_eq!(status.code(), Some(5), "killed by the debugger");
    assert!(!trapeze.output().contains("counter"), "the guest never got to the end");
}

/// A remote-protocol packet: `$data#checksum`.
fn packet(data: &str) -> Vec<u8> {
    let checksum = data.bytes().fold(0u8, |sum, byte| sum.wrapping_add(byte));
    format!("${data}#{checksum:02x}").into_bytes()
}

/// Malformed, out-of-range and hostile packets from a "debugger" never panic the VMM: each is refused or ignored,
/// a session the stub gives up on leaves the guest running and the stub listening, and `k` still ends the run.
#[test]
fn a_hostile_debugger_cannot_panic_the_vmm() {
    use std::io::Write;
    use std::net::TcpStream;
    let (mut trapeze, port) = start_trapeze(&["-S", "-smp", "2"]);
    let connect = || {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stub");
        stream.set_read_timeout(Some(Duration::from_millis(50))).expect("a read timeout");
        stream
    };
    let mut stream = connect();
    let mut sessions = 1;
    let huge = "f".repeat(3000);
    let packets: Vec<Vec<u8>> = [
        "qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386",
        "?",
        "Hg0",
        "Hg9",
        "Hgp1.ffffffffffffffff",
        "g",
        "G00",
        "p0",
        "p20",
        "p1041",
        "pffff",
        "p1000",
        "P20=zz",
        "P1041=02",
        "P1041=0000000000000000ff",
        "P45=0100000000000000",
        "Pf55=0100000000000000",
        "m0,8",
        "mffffffffffffffff,10",
        "m80000000,ffffffff",
        "m7ffffffe,4",
        "M0,4:00000000",
        "Mffffffffffffffff,2:0000",
        "X80000000,0:",
        "Z0,ffffffffffffffff,2",
        "Z0,80000000,4",
        "z0,12345,2",
        "Z1,80000000,2",
        "Z1,80000002,2",
        "Z1,80000004,2",
        "Z1,80000006,2",
        "Z1,80000008,2",
        "Z2,80000001,3",
        "Z2,80000000,0",
        "Z4,ffffffffffffffff,8",
        "z3,80000000,8",
        "vCont;s:9",
        "vCont;s:1",
        "vCont;s:2;c",
        "s",
        "qXfer:features:read:target.xml:0,ffff",
        "qXfer:features:read:target.xml:ffffffff,10",
        "qThreadExtraInfo,9",
        "qfThreadInfo",
        "T9",
        "vCont;c",
        huge.as_str(),
        "qXfer:features:read:other.xml:0,10",
    ]
    .iter()
    .map(|data| packet(data))
    .chain([b"garbage \x00\xff$#".to_vec(), b"\x03".to_vec(), b"$g#00".to_vec(), b"}}}}$".to_vec()])
    .collect();
    for bytes in packets {
        if stream.write_all(&bytes).is_err() {
            // The stub ended that session: the guest runs on and the stub listens again.
            stream = connect();
            sessions += 1;
            let _ = stream.write_all(&bytes);
        }
        let mut reply = [0u8; 65536];
        while matches!(stream.read(&mut reply), Ok(1..)) {}
        assert!(trapeze.exited().is_none(), "the VMM is still there after {:?}", String::from_utf8_lossy(&bytes));
    }
    // Whatever state that left, a debugger connecting afresh can still stop the guest and kill it.
    drop(stream);
    for _ in 0..3 {
        let mut stream = connect();
        sessions += 1;
        let _ = stream.write_all(b"\x03");
        let _ = stream.write_all(&packet("k"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while trapeze.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if trapeze.exited().is_some() {
            break;
        }
    }
    let status = trapeze.exited().expect("trapeze ended after k");
    assert_eq!(status.code(), Some(5), "killed by the debugger after {sessions} sessions");
}
