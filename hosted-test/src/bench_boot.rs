//! `trapeze bench --boot uboot|linux`: how long real firmware and a real kernel take to boot, on each engine and on
//! `qemu-system-riscv64`, side by side.
//!
//! Method: every run is a whole process started the way a user starts it (`trapeze run --engine E ...`, or QEMU
//! with the same images and options) and timed from its start to a line the guest prints when it is up: U-Boot's
//! `Hit any key to stop autoboot` (OpenSBI `fw_jump` and U-Boot from Debian's `opensbi` and `u-boot-qemu`), or
//! the `trapeze-initramfs:` line the busybox initramfs's `/init` prints before it starts the shell (Debian's kernel
//! `Image` and `busybox`, which `tools/fetch-debian-riscv64.sh` fetches; OpenSBI `fw_dynamic`). Then the process is
//! killed. Start-up is included on both sides, as in the workload table. A boot that does not come up within
//! [`BOOT_TIMEOUT`] is an error naming it.
//!
//! What it must never do: compare runs that booted different images or options; every engine and QEMU get the same
//! command line (harts, memory, kernel command line).
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a boot may take (the interpreter boots Linux in about a minute here).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";
const FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";

/// The engines a boot runs on: those `trapeze run --engine` takes.
pub const BOOT_ENGINES: [&str; 3] = ["interp", "threaded", "dbt"];

/// What to boot, as the bench's options give it.
pub struct BootOptions<'a> {
    pub targets: &'a [String],
    pub linux_kernel: Option<&'a Path>,
    pub busybox: Option<&'a Path>,
    pub harts: u32,
    pub iterations: u32,
}

/// One boot: its name, the options shared by trapeze and QEMU, and the line that says it is up.
struct Boot {
    name: &'static str,
    /// `(trapeze option, QEMU option, value)` triples.
    images: Vec<(&'static str, &'static str, String)>,
    marker: &'static str,
    /// A file to remove afterwards (the initramfs).
    scratch: Option<PathBuf>,
}

impl Drop for Boot {
    fn drop(&mut self) {
        if let Some(path) = &self.scratch {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn require(path: &str, package: &str) -> Result<String, String> {
    if Path::new(path).exists() {
        Ok(path.to_string())
    } else {
        Err(format!("{path} is missing: install it with `apt-get install -y {package}`"))
    }
}

fn boot(target: &str, options: &BootOptions) -> Result<Boot, String> {
    match target {
        "uboot" => Ok(Boot {
            name: "uboot",
            images: vec![
                ("--bios", "-bios", require(FW_JUMP, "opensbi")?),
                ("--kernel", "-kernel", require(UBOOT, "u-boot-qemu")?),
            ],
            marker: "Hit any key to stop autoboot",
            scratch: None,
        }),
        "linux" => {
            let fetch = "tools/fetch-debian-riscv64.sh fetches Debian's into target/guest-images";
            let kernel = options.linux_kernel.ok_or(format!("--boot linux needs --linux-kernel IMAGE ({fetch})"))?;
            let busybox = options.busybox.ok_or(format!("--boot linux needs --busybox BINARY ({fetch})"))?;
            let busybox =
                std::fs::read(busybox).map_err(|e| format!("cannot read the busybox {}: {e}", busybox.display()))?;
            let initrd = std::env::temp_dir().join(format!("trapeze-bench-initramfs-{}.cpio", std::process::id()));
            std::fs::write(&initrd, crate::initramfs::initramfs(&busybox))
                .map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
            if !kernel.exists() {
                return Err(format!("the Linux kernel {} is missing ({fetch})", kernel.display()));
            }
            Ok(Boot {
                name: "linux",
                images: vec![
                    ("--bios", "-bios", require(FW_DYNAMIC, "opensbi")?),
                    ("--kernel", "-kernel", kernel.display().to_string()),
                    ("--initrd", "-initrd", initrd.display().to_string()),
                    ("--append", "-append", "console=ttyS0 earlycon=sbi".to_string()),
                ],
                marker: "trapeze-initramfs: ",
                scratch: Some(initrd),
            })
        }
        other => Err(format!("unknown boot {other:?}: the boots are uboot, linux")),
    }
}

/// Starts `command` and returns the seconds until `marker` appears on its standard output; kills it then.
fn time_to_marker(mut command: Command, marker: &str, what: &str) -> Result<f64, String> {
    let start = Instant::now();
    let mut child: Child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let output = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    for pipe in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let sink = Arc::clone(&output);
        readers.push(std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = pipe.read(&mut buffer) {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&String::from_utf8_lossy(&buffer[..count]));
                }
            }
        }));
    }
    // Only the text that arrived since the last look is searched (with room for a marker split across reads), so
    // polling costs little beside the boot it measures.
    let mut searched = 0usize;
    let mut seen = |output: &Arc<Mutex<String>>| {
        output.lock().is_ok_and(|text| {
            let mut from = searched.saturating_sub(marker.len());
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            searched = text.len();
            text[from..].contains(marker)
        })
    };
    // Polled every half millisecond: the polling adds at most that to a boot of a second or more.
    let result = loop {
        if seen(&output) {
            break Ok(start.elapsed().as_secs_f64());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Its last output may still be in the pipe.
            for reader in readers.drain(..) {
                let _ = reader.join();
            }
            if seen(&output) {
                break Ok(start.elapsed().as_secs_f64());
            }
            let text = output.lock().map(|text| text.clone()).unwrap_or_default();
            break Err(format!("{what} ended ({status}) before printing {marker:?}; it printed:\n{text}"));
        }
        if start.elapsed() > BOOT_TIMEOUT {
            break Err(format!("{what} did not print {marker:?} within {BOOT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Boots each target on each engine (those of `engines` that `trapeze run` takes) and on QEMU, and prints the table.
pub fn run(options: &BootOptions, engines: &[&str], qemu: Option<&(PathBuf, String)>) -> Result<(), String> {
    let trapeze = std::env::current_exe().map_err(|e| format!("cannot find the trapeze binary: {e}"))?;
    let engines: Vec<&str> = engines.iter().copied().filter(|e| BOOT_ENGINES.contains(e)).collect();
    let harts = options.harts.to_string();
    println!();
    println!(
        "boot: seconds from process start to the guest's up line (best of {}), -smp {harts} -m 512M; compared with {}",
        options.iterations,
        qemu.map_or("no QEMU", |(_, version)| version.as_str())
    );
    print!("{:<10}", "boot");
    for engine in &engines {
        print!(" {engine:>10}");
    }
    if qemu.is_some() {
        print!(" {:>10}", "QEMU");
        for engine in &engines {
            print!(" {:>14}", format!("{engine}/QEMU"));
        }
    }
    println!();
    for target in options.targets {
        let boot = boot(target, options)?;
        let best = |make: &dyn Fn() -> Command, what: &str| -> Result<f64, String> {
            let mut best = f64::INFINITY;
            for _ in 0..options.iterations {
                best = best.min(time_to_marker(make(), boot.marker, what)?);
            }
            Ok(best)
        };
        let mut seconds = Vec::new();
        for engine in &engines {
            let make = || {
                let mut command = Command::new(&trapeze);
                command.args(["run", "--engine", engine, "-smp", &harts, "-m", "512M"]);
                for (option, _, value) in &boot.images {
                    command.arg(option).arg(value);
                }
                command
            };
            seconds.push(best(&make, &format!("{} on {engine}", boot.name))?);
        }
        print!("{:<10}", boot.name);
        for s in &seconds {
            print!(" {s:>10.2}");
        }
        if let Some((qemu, _)) = qemu {
            let make = || {
                let mut command = Command::new(qemu);
                command.args(["-M", "virt", "-smp", &harts, "-m", "512M", "-nographic", "-no-reboot"]);
                for (_, option, value) in &boot.images {
                    command.arg(option).arg(value);
                }
                command
            };
            let qemu_seconds = best(&make, &format!("{} on QEMU", boot.name))?;
            print!(" {qemu_seconds:>10.2}");
            for s in &seconds {
                print!(" {:>14.2}", s / qemu_seconds);
            }
        }
        println!();
    }
    Ok(())
}
