//! Several VMs from one configuration (`trapeze up FILE`): two VMs, each running the `disk-pattern` guest on its
//! own partition of one shared image file, run together; afterwards the image holds each VM's pattern at its
//! extents' offsets and every byte outside the partitions is as it was. Each guest also checks that requests
//! past its disk's end get the virtio error status. Bad configurations are refused, before anything runs, with
//! a message naming the problem and exit status 2.
//!
//! Firmware and kernels: Debian's U-Boot (`u-boot-qemu`, on the builtin SBI) in one VM and Debian's Linux (the
//! kernel and busybox `run-tests.sh` fetches into `target/guest-images`, on the builtin SBI, with an initramfs
//! built here) in another, each with its partition of one image; U-Boot is driven through the multiplexed console.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
#[path = "common/disk_pattern.rs"]
mod disk_pattern;
#[path = "common/linux_images.rs"]
mod linux_images;

use disk_pattern::{assert_image, pattern, with_patterns, SECTOR};

/// The shared image: 1024 sectors.
const IMAGE_SECTORS: usize = 1024;

/// The `disk-pattern` guest, as bundled in the binary (`image = "bundled:disk-pattern"`).
const GUEST: &str = "bundled:disk-pattern";

/// A directory of its own for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trapeze-multi-vm-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// What the image holds before the VMs run: no byte the guests write by chance.
fn background() -> Vec<u8> {
    (0..IMAGE_SECTORS * SECTOR).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("vms.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path.display().to_string()
}

#[test]
fn two_vms_fill_their_partitions_of_one_image_and_nothing_else() {
    let dir = scratch("fill");
    let image = dir.join("shared.img");
    let original = background();
    std::fs::write(&image, &original).expect("write the image");
    // VM "a" on the threaded engine, one extent; VM "b" on the interpreter, two extents out of order. A small
    // quantum, so their turns interleave many times while they write.
    let a_extents = [(100usize, 40usize)];
    let b_extents = [(300usize, 20usize), (10, 30)];
    let config = write_config(
        &dir,
        &format!(
            r#"
quantum = 5000

[[vm]]
name = "a"
image = "{GUEST}"
memory = "16M"
append = "seed of a"
disk = {{ image = "shared.img", extents = [[100, 40]] }}

[[vm]]
name = "b"
image = "{GUEST}"
memory = "16M"
engine = "interp"
append = "seed of b"
console = "<b> "
disk = {{ image = "shared.img", extents = [[300, 20], [10, 30]] }}
"#
        ),
    );
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(60));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    assert!(run.status.success(), "both VMs pass:\n{output}");
    for tag in ["[a] ", "<b> "] {
        for line in [
            "ok: the pattern written across the whole disk",
            "ok: the pattern read back",
            "ok: a read past the end gets IOERR",
            "ok: a write straddling the end gets IOERR",
            "disk-pattern: all 9 checks passed",
        ] {
            assert!(run.stdout.contains(&format!("{tag}{line}\n")), "{tag}{line}:\n{output}");
        }
    }
    assert!(run.stdout.contains("[a] disk-pattern: 40 sectors\n"), "{output}");
    assert!(run.stdout.contains("<b> disk-pattern: 50 sectors\n"), "{output}");
    assert!(run.stderr.is_empty() && run.stdout.contains("trapeze: vm \"b\" powered off"), "{output}");
    // Concurrently: b started before a was done.
    let b_started = run.stdout.find("<b> disk-pattern: seed").expect("b's first line");
    let a_done = run.stdout.find("[a] disk-pattern: all").expect("a's last line");
    assert!(b_started < a_done, "the VMs took turns:\n{output}");

    let after = std::fs::read(&image).expect("read the image back");
    let expected = with_patterns(&original, &[("seed of a", &a_extents[..]), ("seed of b", &b_extents[..])]);
    assert_image(&after, &expected, "both patterns over the untouched background");
    // The patterns are distinct: neither VM wrote the other's.
    assert_ne!(pattern("seed of a", 1), pattern("seed of b", 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM whose UART is given a host file (`serial = "PATH"`): its output lands in the file, none of it on the
/// console, and the other VM's console output is as it would be alone.
#[test]
fn a_vm_given_a_host_file_as_its_serial_port_writes_there_not_to_the_console() {
    let dir = scratch("serial");
    let image = dir.join("shared.img");
    std::fs::write(&image, background()).expect("write the image");
    let config = write_config(
        &dir,
        &format!(
            r#"
quantum = 5000

[[vm]]
name = "filed"
image = "{GUEST}"
memory = "16M"
append = "seed of filed"
serial = "filed-serial.txt"
disk = {{ image = "shared.img", extents = [[0, 16]] }}

[[vm]]
name = "shown"
image = "{GUEST}"
memory = "16M"
append = "seed of shown"
disk = {{ image = "shared.img", extents = [[16, 16]] }}
"#
        ),
    );
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(60));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    assert!(run.status.success(), "both VMs pass:\n{output}");
    let serial = std::fs::read_to_string(dir.join("filed-serial.txt")).expect("the serial file was created");
    assert!(serial.starts_with("disk-pattern: seed "), "the file holds the VM's output from its start:\n{serial}");
    for line in ["disk-pattern: 16 sectors", "ok: the pattern read back", "disk-pattern: all 9 checks passed"] {
        assert!(serial.contains(&format!("{line}\n")), "{line} in the serial file:\n{serial}");
    }
    assert!(!serial.contains("[filed]") && !serial.contains("shown"), "untagged, and only its own:\n{serial}");
    assert!(!run.stdout.contains("[filed] ") && !run.stdout.contains("seed of filed"), "{output}");
    assert!(run.stdout.contains("trapeze: vm \"filed\" powered off"), "{output}");
    let shown: Vec<&str> = run.stdout.lines().filter_map(|line| line.strip_prefix("[shown] ")).collect();
    assert!(shown.first().is_some_and(|line| line.starts_with("disk-pattern: seed ")), "{output}");
    assert_eq!(shown.last().copied(), Some("disk-pattern: all 9 checks passed"), "{output}");
    assert_eq!(shown.iter().filter(|line| line.starts_with("ok: ")).count(), 9, "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pseudo-terminal for a VM's serial port: the master (the test's end, read by a thread into a shared string)
/// and the slave's path (the VM's end).
struct Pty {
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    slave: String,
}

impl Pty {
    fn open() -> Pty {
        use std::os::fd::FromRawFd;
        // SAFETY: plain libc calls on a descriptor this function owns; `ptsname_r` writes at most `name.len()`
        // bytes into `name`.
        let (fd, name) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0, "ptsname_r");
            (fd, std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned())
        };
        // SAFETY: `fd` is the open master just made, owned by nothing else.
        let master = unsafe { std::fs::File::from_raw_fd(fd) };
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut reader, filled) = (master.try_clone().expect("clone the master"), output.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok(count @ 1..) = std::io::Read::read(&mut reader, &mut buffer) {
                filled.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..count]));
            }
        });
        Pty { master, output, slave: name }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn type_line(&mut self, line: &str) {
        std::io::Write::write_all(&mut self.master, format!("{line}\n").as_bytes()).expect("type at the pty");
    }

    /// Waits until the output from byte `from` on holds `text`.
    fn expect(&self, from: usize, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().get(from..).is_some_and(|output| output.contains(text)) {
            assert!(Instant::now() < deadline, "the pty never showed {text:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A VM whose serial port is a character device reads its input there: Debian's U-Boot on a pty answers the
/// commands the test types at the pty's other end, while the other VM's output goes to the console as usual and
/// none of U-Boot's does.
#[test]
fn a_vm_given_a_pty_as_its_serial_port_reads_its_input_there() {
    let uboot = linux_images::require(Path::new(UBOOT), "install it with `apt-get install -y u-boot-qemu`");
    let dir = scratch("pty");
    let mut pty = Pty::open();
    let config = write_config(
        &dir,
        &format!(
            "[[vm]]\nname = \"uboot\"\nbios = \"builtin\"\nkernel = {:?}\nmemory = \"64M\"\nserial = {:?}\n\
             [[vm]]\nname = \"hello\"\nimage = \"bundled:hello\"\nmemory = \"16M\"\n",
            uboot.display().to_string(),
            pty.slave
        ),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(["up", &config])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start trapeze");
    pty.expect(0, "Hit any key to stop autoboot", FIRMWARE_TIMEOUT);
    // Input typed while the boot scripts run may be eaten by their Ctrl-C checks: knock until the prompt answers.
    let deadline = Instant::now() + FIRMWARE_TIMEOUT;
    while !pty.output().contains("ready-riscv") {
        assert!(Instant::now() < deadline, "U-Boot's prompt never answered on the pty:\n{}", pty.output());
        pty.type_line("echo ready-${arch}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The answer to `version`, not the banner printed at boot.
    let before = pty.output().len();
    pty.type_line("version");
    pty.expect(before, "U-Boot 20", FIRMWARE_TIMEOUT);
    pty.type_line("poweroff");
    let output = child.wait_with_output().expect("wait for trapeze");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "both VMs power off:\n{stdout}\n{}", pty.output());
    assert!(stdout.contains("[hello] Hello") && stdout.contains("trapeze: vm \"uboot\" powered off"), "{stdout}");
    assert!(!stdout.contains("[uboot] "), "none of U-Boot's output on the console:\n{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each bad configuration: a piece of its text, and what the message must say.
#[test]
fn bad_configurations_are_refused_with_status_2_before_anything_runs() {
    let dir = scratch("bad");
    let image = dir.join("shared.img");
    let original = background();
    std::fs::write(&image, &original).expect("write the image");
    let vm = |name: &str, extra: &str| {
        format!("[[vm]]\nname = \"{name}\"\nimage = \"{GUEST}\"\nmemory = \"16M\"\n{extra}\n")
    };
    let no_image = |name: &str, extra: &str| vm(name, extra).replace(&format!("image = \"{GUEST}\"\n"), "");
    let cases: Vec<(String, &[&str])> = vec![
        (vm("a", "colour = \"red\""), &["unknown field", "colour"]),
        (format!("speed = 3\n{}", vm("a", "")), &["unknown field", "speed"]),
        (vm("a", "harts = 99"), &["vm \"a\"", "harts = 99"]),
        (vm("a", "engine = \"jit\""), &["vm \"a\"", "engine = \"jit\""]),
        (vm("a", "memory2 = 1"), &["unknown field", "memory2"]),
        (vm("a", "harts = \"two\""), &["invalid type"]),
        (format!("{}{}", vm("a", ""), vm("a", "")), &["vm \"a\"", "name of its own"]),
        (vm("a", "image2 = 1").replace(GUEST, "missing.elf"), &["unknown field"]),
        (vm("a", "").replace(GUEST, "missing.elf"), &["vm \"a\"", "cannot read", "missing.elf"]),
        (vm("a", "").replace(GUEST, "bundled:nothing"), &["no bundled guest \"nothing\""]),
        (
            vm("a", "disk = { image = \"shared.img\", extents = [[1000, 30]] }"),
            &["vm \"a\"", "extent 0 runs past the end of the image"],
        ),
        (vm("a", "disk = { image = \"shared.img\", extents = [[5, 0]] }"), &["vm \"a\"", "extent 0 has no sectors"]),
        (vm("a", "disk = { image = \"none.img\", extents = [[0, 1]] }"), &["vm \"a\"", "none.img"]),
        (
            format!(
                "{}{}",
                vm("a", "disk = { image = \"shared.img\", extents = [[0, 8], [100, 40]] }"),
                vm("b", "disk = { image = \"shared.img\", extents = [[300, 20], [139, 2]] }")
            ),
            &["vm \"b\"", "extent 1 overlaps extent 1 of vm \"a\""],
        ),
        // Firmware and kernels, checked as `trapeze run` checks --bios, --kernel, IMAGE and --initrd.
        (no_image("a", "bios = \"builtin\""), &["vm \"a\"", "bios builtin needs kernel"]),
        (
            vm("a", "bios = \"builtin\"\nkernel = \"shared.img\""),
            &["vm \"a\"", "give the kernel with kernel when bios"],
        ),
        (vm("a", "kernel = \"shared.img\""), &["vm \"a\"", "give either image or kernel, not both"]),
        (no_image("a", ""), &["vm \"a\"", "no image: give image, or kernel (with bios)"]),
        (no_image("a", "bios = \"builtin\"\nkernel = \"no-kernel\""), &["vm \"a\"", "cannot read", "no-kernel"]),
        (no_image("a", "bios = \"no-fw.bin\"\nkernel = \"shared.img\""), &["vm \"a\"", "cannot read", "no-fw.bin"]),
        (
            no_image("a", "bios = \"builtin\"\nkernel = \"shared.img\"\ninitrd = \"no-initrd\""),
            &["vm \"a\"", "cannot read", "no-initrd"],
        ),
        (no_image("a", "bios = \"shared.img\"\ninitrd = \"shared.img\""), &["vm \"a\"", "initrd needs kernel"]),
        (no_image("a", "bios = 1"), &["invalid type"]),
        // A serial port is one VM's, and must open.
        (vm("a", "serial = \"no-dir/serial.txt\""), &["vm \"a\"", "serial", "no-dir/serial.txt", "cannot open"]),
        (
            format!("{}{}", vm("a", "serial = \"same.txt\""), vm("b", "serial = \"./same.txt\"")),
            &["vm \"b\"", "serial \"./same.txt\": already given to vm \"a\""],
        ),
        // Networks and NICs.
        (vm("a", "nic = { network = \"lan9\" }"), &["vm \"a\"", "no [[network]] named \"lan9\""]),
        (
            format!(
                "[[network]]\nname = \"lan0\"\n{}",
                vm("a", "nic = { network = \"lan0\", mac = \"01:00:5e:00:00:01\" }")
            ),
            &["vm \"a\"", "mac = \"01:00:5e:00:00:01\""],
        ),
        (
            format!(
                "[[network]]\nname = \"lan0\"\n{}{}",
                vm("a", "nic = { network = \"lan0\", mac = \"52:54:00:00:00:09\" }"),
                vm("b", "nic = { network = \"lan0\", mac = \"52:54:00:00:00:09\" }")
            ),
            &["vm \"b\"", "52:54:00:00:00:09 is another VM's"],
        ),
        (format!("[[network]]\nname = \"x\"\n[[network]]\nname = \"x\"\n{}", vm("a", "")), &["network needs a name"]),
        // One uplink per network, a TAP name Linux would take, and a TAP device one network's.
        (
            format!(
                "[[network]]\nname = \"x\"\ntap = \"tap0\"\nudp = {{ local = \"127.0.0.1:0\", remote = \"127.0.0.1:9\" }}\n{}",
                vm("a", "")
            ),
            &["network \"x\"", "one uplink per network"],
        ),
        (
            format!("[[network]]\nname = \"x\"\ntap = \"../tap0\"\n{}", vm("a", "")),
            &["network \"x\"", "tap \"../tap0\" is not an interface name"],
        ),
        (
            format!("[[network]]\nname = \"x\"\ntap = \"tap-name-too-long\"\n{}", vm("a", "")),
            &["network \"x\"", "is not an interface name", "1 to 15"],
        ),
        (
            format!("[[network]]\nname = \"x\"\ntap = \"tz0\"\n[[network]]\nname = \"y\"\ntap = \"tz0\"\n{}", vm("a", "")),
            &["network \"y\"", "tap \"tz0\" is already another network's uplink"],
        ),
        (String::new(), &["no VM described"]),
        ("[[vm]\nname = 1".into(), &["vms.toml", "line 1"]),
    ];
    for (text, expected) in cases {
        let config = write_config(&dir, &text);
        let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(30));
        assert_eq!(run.status.code(), Some(2), "refused:\n{text}\n{}{}", run.stdout, run.stderr);
        for phrase in expected {
            assert!(run.stderr.contains(phrase), "the message names {phrase:?} for\n{text}\nbut says: {}", run.stderr);
        }
        assert!(!run.stdout.contains("disk-pattern"), "nothing ran for\n{text}\n{}", run.stdout);
    }
    let missing = dir.join("no-such.toml");
    let run = common::run_trapeze_command("up", &[missing.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("cannot read") && run.stderr.contains("no-such.toml"), "{}", run.stderr);
    assert!(std::fs::read(&image).expect("read the image") == original, "no refused configuration touched the image");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped example starts, and both of its VMs pass on their partitions of one image.
#[test]
fn the_shipped_example_runs_two_vms_on_one_image() {
    let dir = scratch("example");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-vms.toml");
    let text = std::fs::read_to_string(&example).expect("read the shipped example");
    // A copy next to a fresh image, so the test never leaves one in the source tree.
    let config = write_config(&dir, &text);
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(60));
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
    for tag in ["[alpha] ", "[beta] "] {
        assert!(run.stdout.contains(&format!("{tag}disk-pattern: all 9 checks passed")), "{}", run.stdout);
    }
    let created = std::fs::metadata(dir.join("two-vms.img")).expect("the example's image was created");
    assert_eq!(created.len(), 1 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An idle VM costs nothing: the `idle` guest waits ~1.5 s in `wfi` for its timer next to a VM that ends at
/// once. The run takes the wait in wall time, but `trapeze up` must sleep, not spin, so its CPU time (from
/// `wait4` on that one child) stays under half the wall time.
#[test]
// The child is reaped by `wait4`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn an_idle_vm_lets_the_host_sleep() {
    let dir = scratch("idle");
    let config = write_config(
        &dir,
        &format!(
            "[[vm]]\nname = \"idle\"\nimage = \"{}\"\nmemory = \"16M\"\n[[vm]]\nname = \"hello\"\nimage = \"bundled:hello\"\nmemory = \"16M\"\n",
            env!("TRAPEZE_GUEST_IDLE")
        ),
    );
    let start = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_trapeze"))
        .args(["up", &config])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start trapeze");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes. Its output is a few lines,
    // well within the pipe's buffer, so it never blocks on a full pipe.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.expect("piped stdout"), &mut stdout).expect("read stdout");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "both VMs pass:\n{stdout}");
    assert!(stdout.contains("[idle] idle: woke after timer\n") && stdout.contains("[hello] Hello"), "{stdout}");
    assert!(wall >= 1.4, "the idle guest waited for its timer: {wall:.2} s");
    assert!(cpu < wall / 2.0, "the host slept while the VM was idle: {cpu:.2} s of CPU in {wall:.2} s");
    let _ = std::fs::remove_dir_all(&dir);
}

const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
/// Linux's partition in `examples/uboot-and-linux.toml`: 1024 sectors from sector 2112 of the image.
const LINUX_START: usize = 2112;
const LINUX_SECTORS: usize = 1024;
const FIRMWARE_TIMEOUT: Duration = Duration::from_secs(120);

/// Issue 11's acceptance with real guests: Debian's U-Boot in one VM and Debian's Linux in another, each with its
/// partition of one image, run together by `trapeze up`. U-Boot (focused, VM 0) autoboots, scans its virtio disk
/// and finds its partition's size, then at its prompt reads its last sector, is refused one past it, writes one
/// sector and powers off; Linux boots from its kernel and initramfs to the initramfs shell, gets the keyboard
/// (`Ctrl-A 1`) and powers off. Afterwards the image holds U-Boot's sector at its partition's offset and every
/// other byte is as it was. The configuration is the shipped `examples/uboot-and-linux.toml`.
#[test]
fn uboot_and_linux_run_side_by_side_on_partitions_of_one_image() {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let uboot = linux_images::require(Path::new(UBOOT), "install it with `apt-get install -y u-boot-qemu`");
    let kernel = linux_images::require(&linux_images::guest_images().join("Image"), fetch);
    let busybox = std::fs::read(linux_images::require(&linux_images::guest_images().join("busybox"), fetch)).unwrap();
    // Debian's virtio_mmio and virtio_blk (and what they need): modules, which the initramfs loads.
    let modules = linux_images::modules();
    for needed in ["virtio_mmio.ko", "virtio_blk.ko"] {
        assert!(modules.iter().any(|(name, _)| name == needed), "no {needed} in target/guest-images/modules: {fetch}");
    }
    let dir = scratch("firmware");
    let initramfs = linux_images::initramfs_with_modules(&busybox, &modules);
    std::fs::write(dir.join("initramfs.cpio"), initramfs).expect("write the initramfs");
    // 4096 sectors: U-Boot's 2048 from sector 64, Linux's 1024 from sector 2112, the rest background. Each of
    // Linux's sectors starts with its number (the background repeats every 251 sectors), so a read at a wrong
    // offset shows.
    let image = dir.join("uboot-and-linux.img");
    let mut original: Vec<u8> = (0..4096 * SECTOR).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    for sector in 0..LINUX_SECTORS {
        let stamp = format!("linux sector {sector:04}\n");
        let at = (LINUX_START + sector) * SECTOR;
        original[at..at + stamp.len()].copy_from_slice(stamp.as_bytes());
    }
    std::fs::write(&image, &original).expect("write the image");
    // The shipped example, with the kernel where this checkout keeps it and the initramfs built above.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/uboot-and-linux.toml");
    let text = std::fs::read_to_string(&example).expect("read the shipped example");
    let text = text.replace("\"../target/guest-images/Image\"", &format!("{:?}", kernel.display().to_string()));
    let text = text.replace(&format!("{UBOOT:?}"), &format!("{:?}", uboot.display().to_string()));
    assert!(text.contains(&kernel.display().to_string()), "the example names ../target/guest-images/Image");
    let config = write_config(&dir, &text);
    let started = Instant::now();
    let mut console = common::Console::spawn_command("up", &[&config]);
    console.expect("[uboot] U-Boot 20", FIRMWARE_TIMEOUT);
    // Autoboot scans the virtio disk: its partition, 2048 sectors from its sector 0.
    console.expect("[uboot] Hit any key to stop autoboot", FIRMWARE_TIMEOUT);
    console.expect("[uboot]             Capacity: 1.0 MB = 0.0 GB (2048 x 512)", FIRMWARE_TIMEOUT);
    // Input typed while the boot scripts run may be eaten by their Ctrl-C checks: knock until the prompt answers
    // (the answer, `ready-riscv`, is not in the echoed command).
    let deadline = Instant::now() + FIRMWARE_TIMEOUT;
    while !console.output().contains("[uboot] ready-riscv") {
        assert!(Instant::now() < deadline, "U-Boot's prompt never answered:\n{}", console.output());
        console.type_line("echo ready-${arch}");
        std::thread::sleep(Duration::from_secs(2));
    }
    console.command_within(FIRMWARE_TIMEOUT, "virtio info", "Capacity: 1.0 MB = 0.0 GB (2048 x 512)");
    console.command_within(FIRMWARE_TIMEOUT, "virtio read 0x84000000 0x7ff 1", "1 blocks read: OK");
    // (U-Boot takes numbers in hex.) Sector 2047 of its disk is sector 2111 of the image: the background there.
    let last = &original[2111 * SECTOR..2111 * SECTOR + 4];
    let dump = format!("{:02x} {:02x} {:02x} {:02x}", last[0], last[1], last[2], last[3]);
    console.command_within(FIRMWARE_TIMEOUT, "md.b 0x84000000 4", &dump);
    // One past its end is Linux's first sector: refused.
    console.command_within(FIRMWARE_TIMEOUT, "virtio read 0x84000000 0x800 1", "blocks read: ERROR");
    console.command_within(
        FIRMWARE_TIMEOUT,
        "mw.b 0x84100000 0xa5 0x200; virtio write 0x84100000 3 1",
        "1 blocks written: OK",
    );
    console.type_line("poweroff");
    console.expect("trapeze: vm \"uboot\" powered off", FIRMWARE_TIMEOUT);

    // Linux boots meanwhile, at its own pace: its lines may come before U-Boot's last ones (on a loaded machine,
    // U-Boot's session takes longer).
    console.rewind();
    console.expect("[linux] [    0.000000] Linux version", FIRMWARE_TIMEOUT);
    console.expect("[linux] [    0.000000] Machine model: riscv-virtio,qemu", FIRMWARE_TIMEOUT);
    console.expect("Run /init as init process", FIRMWARE_TIMEOUT);
    // The initramfs loads virtio_mmio and virtio_blk (and the rest fetched, in order); virtio_blk finds the disk
    // in virtio-mmio slot 0: exactly its partition.
    let loaded: Vec<&str> = modules.iter().map(|(name, _)| name.trim_end_matches(".ko")).collect();
    console.expect(&format!("[linux] trapeze-initramfs: modules loaded: {}", loaded.join(" ")), FIRMWARE_TIMEOUT);
    console.expect("[linux] trapeze-initramfs: 1 harts online", FIRMWARE_TIMEOUT);
    // The keyboard to VM 1 (the multiplexer's escape), then commands to its shell.
    console.type_bytes(b"\x011");
    console.expect("console: input to [linux]", FIRMWARE_TIMEOUT);
    console.command_within(FIRMWARE_TIMEOUT, "echo answer=$((6 * 7))", "[linux] answer=42");
    // Short command lines: the multiplexer's input buffer for a VM holds 64 bytes and drops what does not fit
    // (`dev::console_mux`), and a line typed at once arrives faster than the guest reads it.
    console.command_within(FIRMWARE_TIMEOUT, "echo size=$(cat /sys/block/vda/size).", "[linux] size=1024.");
    // `r N`: sector N of the disk (dd's blocks are 512 bytes); `h`: its bytes in hex on one line.
    console.command_within(FIRMWARE_TIMEOUT, "r() { dd if=/dev/vda skip=$1 count=1; }", "~ #");
    console.command_within(FIRMWARE_TIMEOUT, "h() { hexdump -ve '1/1 \"%02x\"'; echo; }", "~ #");
    // Its sectors 0, 1, 512 and 1023 are the image's sectors 2112, 2113, 2624 and 3135, byte for byte; one past
    // its last is nothing.
    let hex = |sector: usize| -> String {
        original[sector * SECTOR..(sector + 1) * SECTOR].iter().map(|byte| format!("{byte:02x}")).collect()
    };
    for sector in [0, 1, LINUX_SECTORS / 2, LINUX_SECTORS - 1] {
        let dump = format!("r {sector} 2>/dev/null | h");
        console.command_within(FIRMWARE_TIMEOUT, &dump, &format!("[linux] {}", hex(LINUX_START + sector)));
    }
    console.command_within(FIRMWARE_TIMEOUT, "echo past=$(r 1024 2>/dev/null | wc -c).", "[linux] past=0.");
    // One sector written through the page cache and flushed: it lands at sector 2112 + 700 of the image.
    console.command_within(FIRMWARE_TIMEOUT, "P=trapeze-linux-wrote-this", "~ #");
    console.command_within(FIRMWARE_TIMEOUT, "yes $P | head -c 512 > /p", "~ #");
    console.command_within(FIRMWARE_TIMEOUT, "echo bytes=$(wc -c < /p).", "[linux] bytes=512.");
    console.command_within(FIRMWARE_TIMEOUT, "dd if=/p of=/dev/vda seek=700 conv=fsync", "records out");
    console.command_within(FIRMWARE_TIMEOUT, "echo written=$?.; sync", "[linux] written=0.");
    console.type_line("poweroff -f");
    console.expect("trapeze: vm \"linux\" powered off", FIRMWARE_TIMEOUT);
    let status = console.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "trapeze up ends with 0 ({status:?}):\n{}", console.output());
    eprintln!("U-Boot and Linux ran in {:?}", started.elapsed());
    drop(console);

    let after = std::fs::read(&image).expect("read the image back");
    let mut expected = original.clone();
    expected[(64 + 3) * SECTOR..(64 + 4) * SECTOR].fill(0xa5);
    let written: Vec<u8> = b"trapeze-linux-wrote-this\n".iter().copied().cycle().take(SECTOR).collect();
    expected[(LINUX_START + 700) * SECTOR..(LINUX_START + 701) * SECTOR].copy_from_slice(&written);
    assert_eq!(after.len(), expected.len(), "the image kept its size");
    if let Some(offset) = after.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("the image differs at byte {offset} (sector {}) from what U-Boot and Linux wrote", offset / SECTOR);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two VMs on one bridge, each running `net-ping` with the other as its peer: each greets by broadcast, the
/// bridge learns both addresses, and each gets the other's unicast frame through its virtio-net NIC. A third VM
/// on the same bridge hears both greetings but none of their unicast frames; a fourth on another network hears
/// nothing (networks are separate).
#[test]
fn two_vms_on_one_bridge_exchange_frames() {
    let dir = scratch("net");
    let guest = env!("TRAPEZE_GUEST_NET_PING");
    let config = write_config(
        &dir,
        &format!(
            r#"
quantum = 5000

[[network]]
name = "lan0"

[[network]]
name = "lan1"

[[vm]]
name = "a"
image = "{guest}"
memory = "16M"
append = "peer=52:54:00:12:34:02"
nic = {{ network = "lan0" }}

[[vm]]
name = "b"
image = "{guest}"
memory = "16M"
engine = "interp"
append = "peer=52:54:00:12:34:01"
nic = {{ network = "lan0" }}

[[vm]]
name = "c"
image = "{guest}"
memory = "16M"
append = "observe"
nic = {{ network = "lan0", mac = "52:54:00:aa:bb:cc" }}

[[vm]]
name = "d"
image = "{guest}"
memory = "16M"
append = "peer=52:54:00:12:34:01"
max-insns = 3000000
nic = {{ network = "lan1" }}
"#
        ),
    );
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(60));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    for tag in ["[a] ", "[b] "] {
        for line in [
            "ok: the NIC offers MAC and STATUS",
            // Trapeze's NIC: no mergeable buffers, and num_buffers 1 in every header (the guest also takes QEMU's 0).
            "net-ping: mergeable buffers not offered",
            "ok: the link is up",
            "ok: heard the peer",
            "ok: sent the peer a unicast frame",
            "ok: got the peer's unicast frame",
            "net-ping: 0 frames with num_buffers 0",
            "ok: every received header is v1 with num_buffers 1 (or QEMU's 0)",
            "net-ping: all 6 checks passed",
        ] {
            assert!(run.stdout.contains(&format!("{tag}{line}\n")), "{tag}{line}:\n{output}");
        }
    }
    assert!(run.stdout.contains("[a] net-ping: mac 52:54:00:12:34:01\n"), "default MACs by position:\n{output}");
    assert!(run.stdout.contains("[b] net-ping: mac 52:54:00:12:34:02\n"), "{output}");
    assert!(run.stdout.contains("[c] net-ping: mac 52:54:00:aa:bb:cc\n"), "{output}");
    // The NIC is in the first slot after the disk's, which the devicetree lists.
    assert!(run.stdout.contains("[a] net-ping: NIC at 0x10002000 (version 2)\n"), "{output}");
    // The observer on lan0 heard both greetings but none of the unicast frames between them.
    for line in [
        "ok: heard two greeters",
        "ok: no unicast frame for another NIC reached this one",
        "net-ping: all 4 checks passed",
    ] {
        assert!(run.stdout.contains(&format!("[c] {line}\n")), "[c] {line}:\n{output}");
    }
    assert!(!run.stdout.contains("[d] ok: heard the peer"), "lan1 is not lan0:\n{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM on a network with a UDP uplink (QEMU's `-netdev dgram` transport) and a peer that is this test: the
/// test answers the VM's broadcast greeting with a unicast frame from the peer's MAC, one Ethernet frame per
/// datagram, and expects the VM's unicast frame back.
#[test]
fn a_vm_exchanges_frames_with_a_udp_peer_over_the_uplink() {
    use std::net::UdpSocket;
    let dir = scratch("udp");
    let guest = env!("TRAPEZE_GUEST_NET_PING");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind the test's socket");
    peer.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // A free port for trapeze: bound and released (another process could take it meanwhile, which is unlikely).
    let local = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"
[[network]]
name = "lan0"
udp = {{ local = "{local}", remote = "{remote}" }}

[[vm]]
name = "a"
image = "{guest}"
memory = "16M"
append = "peer=52:54:00:00:00:99"
nic = {{ network = "lan0" }}
"#,
            remote = peer.local_addr().unwrap()
        ),
    );
    const VM: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x01];
    const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
    let responder = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut greeted, mut answered) = (false, false);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline && !answered {
            let Ok(len) = peer.recv(&mut buf) else { continue };
            let frame = &buf[..len];
            if len < 60 || frame[6..12] != VM || frame[12..14] != [0x88, 0xb5] {
                continue;
            }
            if frame[..6] == [0xff; 6] && frame[14..19] == *b"hello" {
                greeted = true;
                let mut reply = vec![0u8; 60];
                reply[..6].copy_from_slice(&VM);
                reply[6..12].copy_from_slice(&PEER);
                reply[12..14].copy_from_slice(&[0x88, 0xb5]);
                reply[14..21].copy_from_slice(b"unicast");
                peer.send_to(&reply, local).expect("send the reply");
            }
            if frame[..6] == PEER && frame[14..21] == *b"unicast" {
                answered = true;
            }
        }
        (greeted, answered)
    });
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(60));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    let (greeted, answered) = responder.join().expect("the responder");
    assert!(greeted, "the VM's broadcast came out of the uplink:\n{output}");
    assert!(answered, "the VM's unicast to the peer came out of the uplink:\n{output}");
    assert!(run.status.success(), "{output}");
    assert!(run.stdout.contains("[a] net-ping: all 6 checks passed\n"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped `examples/four-kinds.toml`: the four kinds of devices at once. A dedicated host file as one VM's
/// UART (its whole output there, none on the console), that VM's partition of an image, two VMs on a bridge
/// exchanging frames, and a VM printing whole jobs through the spooled printer.
#[test]
fn the_four_kinds_of_devices_run_at_once() {
    let dir = scratch("four-kinds");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/four-kinds.toml");
    let config = write_config(&dir, &std::fs::read_to_string(&example).expect("read the shipped example"));
    let run = common::run_trapeze_command("up", &[&config], Duration::from_secs(120));
    let output = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status.code(), Some(0), "every VM passes:\n{output}");
    let serial = std::fs::read_to_string(dir.join("four-kinds-serial.txt")).expect("the dedicated serial file");
    assert!(
        serial.contains("disk-pattern: all 9 checks passed"),
        "the partitioned disk, on the dedicated serial:\n{serial}"
    );
    assert!(!output.contains("[disk] "), "nothing of the dedicated VM's UART reaches the console:\n{output}");
    for vm in ["[ping-a] ", "[ping-b] "] {
        assert!(output.contains(&format!("{vm}net-ping: all 6 checks passed")), "{vm}over the bridge:\n{output}");
    }
    assert!(output.contains("[printer] print-jobs: all 8 checks passed"), "the printer's guest:\n{output}");
    let printed = std::fs::read_to_string(dir.join("four-kinds-print.out")).expect("the printer's output");
    let starts = printed.matches("=== job ").count();
    let ends = printed.matches("=== end of job ").count();
    assert_eq!((starts, ends), (12, 12), "12 whole jobs printed:\n{printed}");
}
