//! Fair harts on one host thread: the `spinlock` guest, whose harts take one spinlock thousands of times with
//! CSR accesses (exits to the VMM) in and around every critical section, runs on one hart and on three with
//! instruction-counted time, so every figure repeats exactly. A lock holder whose turn ended at each exit would
//! wait behind the other harts spinning through whole turns; the test bounds what the three-hart run spends
//! beyond three times the one-hart run's work, in guest instructions, and prints the figures (instructions,
//! exits, wall time) with `--nocapture`.

use std::time::Instant;

use trapeze::dev::SerialBackend;
use trapeze::exec::threaded::Threaded;
use trapeze::hart::{Hart, HartConfig};
use trapeze::mem::{Ram, RAM_BASE};
use trapeze::vm::fdt::{write_dtb, MachineDescription};
use trapeze::vm::loader::load_elf;
use trapeze::vm::virt::{NoDisk, VirtDevices};
use trapeze::vm::{boot, Clock, RunOutcome, TimeSource, Vm};

const SPINLOCK: &[u8] = include_bytes!(env!("TRAPEZE_GUEST_SPINLOCK"));
const RAM_SIZE: usize = 32 << 20;

/// The guest's console, kept in memory.
#[derive(Default)]
struct Capture(Vec<u8>);

impl SerialBackend for Capture {
    fn write_byte(&mut self, byte: u8) {
        self.0.push(byte);
    }
    fn read_byte(&mut self) -> Option<u8> {
        None
    }
}

/// Never consulted: time counts instructions.
struct NoClock;

impl Clock for NoClock {
    fn now(&mut self) -> u64 {
        0
    }
}

/// What one run of the guest did.
#[derive(Debug)]
struct Figures {
    outcome: RunOutcome,
    output: String,
    /// Guest instructions (`Vm::steps`) and exits to the VMM, both exact under `--icount`.
    steps: u64,
    exits: u64,
    /// Turns given up early by a spinning hart.
    yields: u64,
    seconds: f64,
}

/// Runs the `spinlock` guest on `harts` harts as `trapeze run -smp N --icount 0` would, on the threaded engine,
/// for at most `limit` instructions (on a thread with room for the engine, which is built on the stack).
fn run_spinlock(harts: u32, limit: u64) -> Figures {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run_spinlock_here(harts, limit))
        .expect("a thread")
        .join()
        .expect("the run")
}

fn run_spinlock_here(harts: u32, limit: u64) -> Figures {
    let mut backing = vec![0u8; RAM_SIZE];
    let mut code_pages = vec![0u64; RAM_SIZE.div_ceil(4096 * 64)];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let loaded = load_elf(SPINLOCK, &mut ram).expect("the guest loads");
    ram.attach_code_watch(&mut code_pages);
    let mut blob = vec![0u8; 64 << 10];
    let length = write_dtb(&MachineDescription::qemu_virt(harts, RAM_SIZE as u64), &mut blob).expect("devicetree");
    let (fdt, _) = boot::place_devicetree(&mut ram, &blob[..length], None, RAM_BASE + (1 << 20)).expect("placed");
    let machine_harts = (0..u64::from(harts)).map(|id| {
        let mut hart = Hart::new(HartConfig::rv64gc(id));
        hart.reset(loaded.entry);
        hart.x[10] = id;
        hart.x[11] = fdt;
        hart
    });
    let mut clock = NoClock;
    let devices = VirtDevices::<_, NoDisk>::new(Capture::default());
    let mut vm = Vm::new(machine_harts, ram, devices, &mut clock).expect("machine");
    vm.set_time_source(TimeSource::Instructions { shift: 0 });
    let mut engine = Box::new(Threaded::<32768, 2048, 4096>::new());
    let start = Instant::now();
    let outcome = vm.run(&mut *engine, Some(limit));
    let seconds = start.elapsed().as_secs_f64();
    let output = String::from_utf8_lossy(&vm.devices.uart.backend().0).into_owned();
    Figures { outcome, output, steps: vm.steps, exits: vm.exits, yields: vm.yields, seconds }
}

/// Three harts contending for the lock spend at most a third more instructions than their work (three one-hart
/// runs). With a hart's turn ending at every exit, the lock holder ran a few instructions per round while the
/// other two spun through whole turns: that took 1000 times the one-hart run. With fair turns but no spin
/// detection it takes 4.5 times, with both 3.35 times.
#[test]
fn three_harts_sharing_a_lock_waste_at_most_a_third_of_their_work() {
    let one = run_spinlock(1, 100_000_000);
    assert_eq!(one.outcome, RunOutcome::PowerOff { code: 0 }, "one hart:\n{}", one.output);
    assert!(one.output.contains("spinlock: 1 harts, 20000 acquisitions, counter 20000"), "{}", one.output);
    let bound = 4 * one.steps;
    let three = run_spinlock(3, bound);
    for (harts, run) in [(1, &one), (3, &three)] {
        println!(
            "spinlock -smp {harts}: {} guest instructions, {} exits, {} yields, {:.3} s ({:.1} M instructions/s)",
            run.steps,
            run.exits,
            run.yields,
            run.seconds,
            run.steps as f64 / run.seconds / 1e6
        );
    }
    assert_eq!(
        three.outcome,
        RunOutcome::PowerOff { code: 0 },
        "three harts did not finish within {bound} instructions (4 x the {} of one hart): waiting harts starve \
         the lock holder\n{}",
        one.steps,
        three.output
    );
    assert!(three.output.contains("spinlock: 3 harts, 60000 acquisitions, counter 60000"), "{}", three.output);
    assert!(three.output.ends_with("spinlock: pass\n"), "{}", three.output);
}
