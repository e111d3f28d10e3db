//! Snapshots of running guests: each guest runs part of the way, is snapshotted (`Vm::save_snapshot`), the
//! snapshot is restored into a freshly built machine (`Vm::restore_snapshot`) with a fresh engine, and both
//! machines run to the guest's end. They must print the same console output from the snapshot on, end the same
//! way, and end in the same state: harts, RAM, and the snapshot each would save. The guests cover the devices
//! and the machine state that matter: the UART and lots of output (`demo`), CLINT timer and software interrupts
//! and `wfi` (`interrupts`), PLIC and UART interrupts with bytes in flight (`uart-irq`), Sv39 paging (`sv39`, a
//! restored soft TLB is empty), three harts taking turns on a lock (`spinlock`). Every run is on both engines,
//! with guest time counted in instructions (`--icount 0`), so runs repeat exactly. The last test does the same
//! through the command line: `--savevm-at N --savevm FILE`, then `--loadvm FILE`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use trapeze::dev::htif::Htif;
use trapeze::dev::SerialBackend;
use trapeze::exec::interp::Interpreter;
use trapeze::exec::threaded::Threaded;
use trapeze::exec::Engine;
use trapeze::hart::{Hart, HartConfig};
use trapeze::mem::{Ram, RAM_BASE};
use trapeze::vm::fdt::{write_dtb, MachineDescription};
use trapeze::vm::loader::load_elf;
use trapeze::vm::virt::VirtDevices;
use trapeze::vm::{boot, Clock, RunOutcome, TimeSource, Vm};

mod common;

/// Guest RAM of every machine here.
const RAM_SIZE: usize = 64 << 20;

/// A console that keeps what the guest printed, shared with the test.
#[derive(Clone, Default)]
struct Output(Rc<RefCell<Vec<u8>>>);

impl SerialBackend for Output {
    fn write_byte(&mut self, byte: u8) {
        self.0.borrow_mut().push(byte);
    }
    fn read_byte(&mut self) -> Option<u8> {
        None
    }
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.borrow()).into_owned()
    }
}

/// Guest time counts instructions: the host clock is never asked.
struct NoClock;

impl Clock for NoClock {
    fn now(&mut self) -> u64 {
        0
    }
}

/// What one machine needs to live: RAM, the code-watch bitmap, a clock and the HTIF console.
struct Backing {
    ram: Vec<u8>,
    code_pages: Vec<u64>,
    clock: NoClock,
    htif_console: Output,
}

impl Backing {
    fn new(output: &Output) -> Self {
        Self {
            ram: vec![0; RAM_SIZE],
            code_pages: vec![0; RAM_SIZE.div_ceil(4096 * 64)],
            clock: NoClock,
            htif_console: output.clone(),
        }
    }
}

type Machine<'a> = Vm<'a, VirtDevices<'a, Output>>;

/// The `virt` machine `trapeze run -smp HARTS --icount 0 GUEST` builds: the ELF loaded, the devicetree at the
/// end of RAM, every hart at the entry with `a0` = its id and `a1` = the devicetree, UART and HTIF output to
/// `output`.
fn machine<'a>(guest: &[u8], harts: u32, backing: &'a mut Backing, output: &Output) -> Machine<'a> {
    let mut ram = Ram::new(RAM_BASE, &mut backing.ram);
    ram.attach_code_watch(&mut backing.code_pages);
    let loaded = load_elf(guest, &mut ram).expect("the guest loads");
    let mut description = MachineDescription::qemu_virt(harts, RAM_SIZE as u64);
    description.isa = "rv64imafdc_zicsr_zifencei";
    let mut blob = vec![0u8; 64 << 10];
    let length = write_dtb(&description, &mut blob).expect("the devicetree");
    let (fdt, _) = boot::place_devicetree(&mut ram, &blob[..length], None, loaded.end).expect("room for it");
    let harts = (0..u64::from(harts)).map(|id| {
        let mut hart = Hart::new(HartConfig::rv64gc(id));
        hart.reset(loaded.entry);
        hart.x[10] = id;
        hart.x[11] = fdt;
        hart
    });
    let mut vm = Vm::new(harts, ram, VirtDevices::new(output.clone()), &mut backing.clock).expect("the machine");
    if let Some(tohost) = loaded.tohost {
        vm.attach_htif(Htif::new(tohost, loaded.fromhost), &mut backing.htif_console);
    }
    vm.set_time_source(TimeSource::Instructions { shift: 0 });
    vm
}

fn snapshot(vm: &Machine<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; vm.snapshot_len().expect("the machine can be saved")];
    let len = vm.save_snapshot(&mut buf).expect("saved");
    assert_eq!(len, buf.len());
    buf
}

/// Runs `guest` on `harts` harts for `at` instructions, snapshots it, restores the snapshot into a fresh machine
/// with a fresh engine, runs both to the end and compares them. Answers the whole output.
fn snapshot_and_finish_both<E: Engine>(guest: &str, harts: u32, at: u64, new_engine: &dyn Fn() -> Box<E>) -> String {
    let image = std::fs::read(guest).expect("the guest was built");
    let original_output = Output::default();
    let mut original_backing = Backing::new(&original_output);
    let mut original = machine(&image, harts, &mut original_backing, &original_output);
    let mut engine = new_engine();
    assert_eq!(original.run(&mut *engine, Some(at)), RunOutcome::InstructionLimit, "{guest} runs past {at}");
    let saved = snapshot(&original);
    let printed_before = original_output.0.borrow().len();

    // A machine built the same way (the same image loaded: restoring replaces all of RAM anyway), its own
    // console, a fresh engine.
    let restored_output = Output::default();
    let mut restored_backing = Backing::new(&restored_output);
    let mut restored = machine(&image, harts, &mut restored_backing, &restored_output);
    restored.restore_snapshot(&saved).expect("the snapshot restores");
    assert!(snapshot(&restored) == saved, "{guest}: the restored machine saves the same snapshot");
    let mut restored_engine = new_engine();

    let limit = Some(at + 2_000_000_000);
    let original_end = original.run(&mut *engine, limit);
    let restored_end = restored.run(&mut *restored_engine, limit);
    assert_eq!(original_end, RunOutcome::PowerOff { code: 0 }, "{guest} passes:\n{}", original_output.text());
    assert_eq!(restored_end, original_end, "{guest}: the restored machine ends the same way");
    let whole = original_output.text();
    let after = String::from_utf8_lossy(&original_output.0.borrow()[printed_before..]).into_owned();
    assert_eq!(restored_output.text(), after, "{guest}: the same output after the snapshot");
    assert_eq!(restored.steps, original.steps, "{guest}");
    assert_eq!(restored.harts, original.harts, "{guest}: the same harts at the end");
    assert!(restored.ram.as_slice() == original.ram.as_slice(), "{guest}: the same RAM at the end");
    assert!(snapshot(&restored) == snapshot(&original), "{guest}: the same devices and machine state at the end");
    whole
}

/// [`both_engines_here`] on a thread with room for two machines and the threaded engine, which is built on the
/// stack.
fn on_both_engines(guest: &'static str, harts: u32, at: u64) -> String {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || both_engines_here(guest, harts, at))
        .expect("a thread")
        .join()
        .expect("the runs")
}

fn both_engines_here(guest: &str, harts: u32, at: u64) -> String {
    let interpreted = snapshot_and_finish_both(guest, harts, at, &|| Box::new(Interpreter));
    let threaded = snapshot_and_finish_both(guest, harts, at, &|| Box::new(Threaded::<32768, 2048, 4096>::new()));
    assert_eq!(interpreted, threaded, "{guest}: both engines print the same");
    interpreted
}

#[test]
fn the_demo_guest_restored_mid_output_prints_the_rest() {
    for at in [1_000_000, 4_000_000] {
        let output = on_both_engines(env!("TRAPEZE_GUEST_DEMO"), 1, at);
        assert!(output.contains("primes below 100000: 9592") && output.contains("demo: done"), "{output}");
    }
}

#[test]
fn timer_and_software_interrupts_survive_a_snapshot() {
    for at in [20_000, 150_000, 2_000_000, 4_000_000] {
        let output = on_both_engines(env!("TRAPEZE_GUEST_INTERRUPTS"), 1, at);
        assert!(output.contains("interrupts: all 19 checks passed"), "{output}");
    }
}

#[test]
fn uart_and_plic_interrupts_survive_a_snapshot() {
    for at in [3_000, 30_000, 300_000, 1_000_000] {
        let output = on_both_engines(env!("TRAPEZE_GUEST_UART_IRQ"), 1, at);
        assert!(output.contains("uart-irq: all 4 checks passed"), "{output}");
    }
}

#[test]
fn paging_survives_a_snapshot() {
    for at in [15_000, 30_000] {
        let output = on_both_engines(env!("TRAPEZE_GUEST_SV39"), 1, at);
        assert!(output.contains("sv39: all 34 checks passed"), "{output}");
    }
}

#[test]
fn three_harts_taking_turns_survive_a_snapshot() {
    for at in [100_003, 500_000] {
        let output = on_both_engines(env!("TRAPEZE_GUEST_SPINLOCK"), 3, at);
        assert!(output.contains("spinlock: pass"), "{output}");
    }
}

/// The command line: a run that saves at N instructions and stops there, then a run from the snapshot, print
/// together exactly what one whole run prints, on both engines.
#[test]
fn savevm_and_loadvm_on_the_command_line() {
    let guest = env!("TRAPEZE_GUEST_DEMO");
    let directory = std::env::temp_dir().join(format!("trapeze-snapshot-test-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("demo.snap");
    let file = file.to_str().unwrap();
    let timeout = Duration::from_secs(120);
    for engine in ["interp", "threaded"] {
        let whole = common::run_trapeze(&["--icount", "0", "--engine", engine, guest], timeout);
        assert!(whole.status.success(), "{}", whole.stderr);
        let first = common::run_trapeze(
            &[
                "--icount",
                "0",
                "--engine",
                engine,
                "--savevm-at",
                "3000000",
                "--savevm",
                file,
                "--max-insns",
                "3000000",
                guest,
            ],
            timeout,
        );
        assert_eq!(first.status.code(), Some(3), "stopped at the limit: {}", first.stderr);
        assert!(first.stderr.contains("saved"), "{}", first.stderr);
        let rest = common::run_trapeze(&["--icount", "0", "--engine", engine, "--loadvm", file, guest], timeout);
        assert!(rest.status.success(), "{}", rest.stderr);
        assert!(!first.stdout.is_empty() && !rest.stdout.is_empty(), "both halves print");
        assert_eq!(format!("{}{}", first.stdout, rest.stdout), whole.stdout, "{engine}");
        // A damaged snapshot is refused with a message naming what is wrong, and nothing runs.
        let mut damaged = std::fs::read(file).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        let bad = directory.join("damaged.snap");
        std::fs::write(&bad, &damaged).unwrap();
        let refused = common::run_trapeze(&["--icount", "0", "--loadvm", bad.to_str().unwrap(), guest], timeout);
        assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
        assert!(refused.stderr.contains("ChecksumMismatch") && refused.stdout.is_empty(), "{}", refused.stderr);
    }
    let _ = std::fs::remove_dir_all(&directory);
}
