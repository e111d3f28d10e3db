//! Shared by the integration tests that run the `trapeze` binary: one run to its end with its output collected
//! ([`run_trapeze`]), or a running `trapeze` whose console the test reads and types into ([`Console`]).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one `trapeze run` printed and how it ended.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `trapeze run ARGS...` with stdin closed and collects its output; a run still going after `timeout` is
/// killed and fails the test.
pub fn run_trapeze(args: &[&str], timeout: Duration) -> Run {
    run_trapeze_command("run", args, timeout)
}

/// Runs `trapeze COMMAND ARGS...` as [`run_trapeze`] runs `trapeze run`.
pub fn run_trapeze_command(command: &str, args: &[&str], timeout: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .arg(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the trapeze binary");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).expect("read the child's output");
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for trapeze") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`trapeze {command} {}` did not finish within {timeout:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

/// A running `trapeze` whose console the test reads and types into.
pub struct Console {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
    /// Where the next `expect` starts looking.
    cursor: usize,
}

impl Console {
    /// The running `trapeze`'s process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `trapeze run ARGS...`.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_command("run", args)
    }

    /// `trapeze COMMAND ARGS...` (e.g. `up FILE`).
    pub fn spawn_command(command: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
            .arg(command)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("trapeze starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = stdout.read(&mut buffer) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..count]));
            }
        });
        Self { child, stdin, output, cursor: 0 }
    }

    /// Waits until `text` appears after the cursor, and moves the cursor past it.
    pub fn expect(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let output = self.output.lock().unwrap();
                if let Some(found) = output[self.cursor..].find(text) {
                    self.cursor += found + text.len();
                    return;
                }
            }
            if Instant::now() > deadline {
                let output = self.output.lock().unwrap();
                panic!(
                    "`{text}` did not appear within {timeout:?}; console after the cursor:\n{}",
                    &output[self.cursor..]
                );
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let output = self.output.lock().unwrap();
                panic!("trapeze exited ({status}) before `{text}` appeared; console:\n{output}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves the cursor back to the start of the output: for the lines of another VM, which runs at its own pace
    /// (its lines may come before or after the ones already found).
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Types `bytes` as they are (no newline added).
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for trapeze to exit by itself, and gives its status (`None`: still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn type_line(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Types `command` and waits (up to `timeout` each) for its echo and then for `answer`.
    pub fn command_within(&mut self, timeout: Duration, command: &str, answer: &str) {
        self.type_line(command);
        self.expect(command, timeout);
        self.expect(answer, timeout);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names of the threads of process `pid` that run a guest hart (`hart N`), each once.
pub fn hart_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("hart "))
        .collect();
    names.sort();
    // A thread a hart's thread starts (the stdin reader) shows that hart's name until it names itself.
    names.dedup();
    names
}
