//! Host backends for the guest: the console on this process's stdin/stdout, and the wall clock with an idle
//! wait that wakes for the next timer deadline or for typed input, which stops while a debugger holds the
//! machine ([`ClockPause`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use trapeze::dev::SerialBackend;
use trapeze::vm::{Clock, TIMEBASE_HZ};

/// Bytes typed on stdin and not yet read by the guest, filled by one background thread.
struct Input {
    bytes: Mutex<VecDeque<u8>>,
    arrived: Condvar,
}

fn input() -> &'static Input {
    static INPUT: OnceLock<Input> = OnceLock::new();
    INPUT.get_or_init(|| {
        // Named: a thread started by a hart's thread would otherwise show that hart's name.
        let reader = std::thread::Builder::new().name("stdin".into()).spawn(|| {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut buffer = [0u8; 256];
            while let Ok(count @ 1..) = stdin.read(&mut buffer) {
                let input = input();
                if let Ok(mut bytes) = input.bytes.lock() {
                    bytes.extend(&buffer[..count]);
                }
                input.arrived.notify_all();
            }
        });
        if let Err(e) = reader {
            eprintln!("trapeze: cannot start the stdin reader, the guest gets no input: {e}");
        }
        Input { bytes: Mutex::new(VecDeque::new()), arrived: Condvar::new() }
    })
}

/// Wakes every thread parked in [`park`] (and a [`HostClock`] idling), as host input does.
pub fn wake_idle() {
    let input = input();
    // Taken so that a thread between its check and its wait cannot miss the notification.
    let _bytes = input.bytes.lock();
    input.arrived.notify_all();
}

/// Blocks for at most `wait`, returning early when host input is pending or [`wake_idle`] is called; returns
/// at once when `woken` (checked under the input lock, so a wake just before the wait is never missed) says
/// this thread was woken already.
pub fn park(wait: Duration, woken: impl Fn() -> bool) {
    let input = input();
    let Ok(bytes) = input.bytes.lock() else { return };
    if bytes.is_empty() && !woken() {
        let _ = input.arrived.wait_timeout(bytes, wait);
    }
}

/// A guest console on the host's stdout (flushed at each newline) and stdin (read without blocking).
#[derive(Debug, Default)]
pub struct Stdio {
    line: Vec<u8>,
}

impl Stdio {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SerialBackend for Stdio {
    fn write_byte(&mut self, byte: u8) {
        self.line.push(byte);
        if byte == b'\n' || self.line.len() >= 4096 {
            self.flush();
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        // Output waiting for a newline (a prompt) must be visible before the guest waits for input.
        self.flush();
        input().bytes.lock().ok()?.pop_front()
    }
}

impl Stdio {
    fn flush(&mut self) {
        if !self.line.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&self.line);
            let _ = stdout.flush();
            self.line.clear();
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Flushes whatever the process wrote to stdout.
pub fn flush_stdout() {
    let _ = std::io::stdout().flush();
}

/// Guest time from the host's monotonic clock, in ticks of the 10 MHz timebase, less the time the machine
/// spent stopped in a debugger.
#[derive(Debug)]
pub struct HostClock {
    start: Instant,
    pause: ClockPause,
}

impl HostClock {
    pub fn new() -> Self {
        Self { start: Instant::now(), pause: ClockPause::default() }
    }

    /// A handle that stops and restarts this clock (for the gdb stub, while it holds the machine).
    pub fn pause_handle(&self) -> ClockPause {
        self.pause.clone()
    }
}

/// Stops and restarts a [`HostClock`], as QEMU stops its virtual clock while the machine is stopped: a guest
/// stopped for a minute in the debugger does not find a minute of timer interrupts due when it goes on.
#[derive(Debug, Clone, Default)]
pub struct ClockPause(Rc<Cell<PauseState>>);

#[derive(Debug, Clone, Copy, Default)]
struct PauseState {
    /// Time spent stopped, before the current stop.
    hidden: Duration,
    /// When the current stop began, `None` while the clock runs.
    since: Option<Instant>,
}

impl ClockPause {
    /// Stops guest time (nothing happens if it is stopped already).
    pub fn pause(&self) {
        let mut state = self.0.get();
        if state.since.is_none() {
            state.since = Some(Instant::now());
            self.0.set(state);
        }
    }

    /// Lets guest time run on from where it stopped.
    pub fn resume(&self) {
        let mut state = self.0.get();
        if let Some(since) = state.since.take() {
            state.hidden = state.hidden.saturating_add(since.elapsed());
            self.0.set(state);
        }
    }

    /// Host time since `start` that counts as guest time.
    fn running_since(&self, start: Instant) -> Duration {
        let state = self.0.get();
        let now = state.since.unwrap_or_else(Instant::now);
        now.saturating_duration_since(start).saturating_sub(state.hidden)
    }
}

/// Longest single idle wait, so that the run loop looks at its limits now and then.
const MAX_IDLE: Duration = Duration::from_millis(500);

impl Clock for HostClock {
    fn now(&mut self) -> u64 {
        let elapsed = self.pause.running_since(self.start);
        elapsed.as_secs() * TIMEBASE_HZ
            + u64::from(elapsed.subsec_nanos()) / (1_000_000_000 / TIMEBASE_HZ as u32) as u64
    }

    fn idle(&mut self, ticks: Option<u64>) {
        let wait = ticks.map_or(MAX_IDLE, |t| Duration::from_nanos(t.saturating_mul(1_000_000_000 / TIMEBASE_HZ)));
        let input = input();
        let Ok(bytes) = input.bytes.lock() else { return };
        if bytes.is_empty() {
            let _ = input.arrived.wait_timeout(bytes, wait.min(MAX_IDLE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_clock_stands_still_and_resumes_where_it_stopped() {
        let mut clock = HostClock::new();
        let pause = clock.pause_handle();
        std::thread::sleep(Duration::from_millis(5));
        pause.pause();
        pause.pause();
        let stopped = clock.now();
        assert!(stopped >= 50_000, "5 ms ran before the pause: {stopped}");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.now(), stopped, "no time passes while paused");
        pause.resume();
        pause.resume();
        let resumed = clock.now();
        assert!(resumed >= stopped && resumed < stopped + 400_000, "the 50 ms pause is hidden: {stopped} -> {resumed}");
    }
}
