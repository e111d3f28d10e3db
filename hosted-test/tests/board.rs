//! The native VMM board under QEMU: builds `boards/qemu-virt-rv64` for `riscv64gc-unknown-none-elf`, boots it on
//! `qemu-system-riscv64 -M virt -bios none` with a timeout, and checks that each of its eight VMs (guest programs
//! of `guests/`, running natively in U-mode, round-robin) printed exactly its expected output, that a ninth,
//! hostile guest got a fault for every escape attempt and was preempted while it spun with interrupts masked, that
//! the `contain` guest kernel got an access fault for every reach outside its RAM and devices,
//! that U-Boot, on the VMM's own SBI, answered `version`, `sbi` and `sleep 1` at its prompt and read and wrote
//! its virtual disk (a partition of the board's physical virtio-blk disk), that two VMs of the `disk-pattern`
//! guest, each on its own partition of the same disk, filled it with a pattern of their own, read it back and
//! got the virtio error status past its end (the test checks the image afterwards: U-Boot's sector and both
//! patterns at their partitions' offsets, every other byte unchanged), that a third, given a second physical disk
//! whole (a dedicated disk, still served by the VMM), filled every sector of it, that two VMs of the `net-ping`
//! guest exchanged frames over the board's bridge (each a virtio-net NIC on a port of it), that U-Boot got a DHCP
//! lease from QEMU's user-mode network through its NIC on the same bridge and the board's physical NIC (the
//! bridge's uplink), that two VMs of the `print-jobs` guest printed every job of each of their processes whole
//! on the board's printer (the console), none lost or cut, blocking on a full spool rather than dropping a job,
//! that the benchmarks ran (a trap round trip; `bench-int` under the VMM against `bench-int` on QEMU
//! alone),
//! that the board's summary says they all passed, that QEMU's exit status (the board's, through the
//! `sifive,test0` finisher) is 0, and that the board's defmt log decodes on the host.
//!
//! QEMU (`qemu-system-misc`) and `defmt-print` are installed by `./run-tests.sh`; when either is missing this test
//! fails and says how to install it.

#[path = "common/disk_pattern.rs"]
mod disk_pattern;
#[path = "common/isolation.rs"]
mod isolation;
#[path = "common/linux_images.rs"]
mod linux_images;
#[path = "common/print_jobs.rs"]
mod print_jobs;

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disk_pattern::{assert_image, with_patterns, SECTOR};
use linux_images::{guest_images, initramfs, require};

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// One board under QEMU at a time: the benchmark compares wall times, and the machine has two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// The board boots twenty-two guests (one of them U-Boot) and the benchmarks; QEMU needs 20 to 30 s here. Generous
/// for a loaded CI machine.
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("hosted-test lives in the repository").to_path_buf()
}

/// Whether `name`, a variable of the outer `cargo test`, must not reach the board's own build.
fn leaks_into_nested_build(name: &str) -> bool {
    let keep = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_TERM_"];
    name == "RUSTFLAGS"
        || name == "RUSTDOCFLAGS"
        || name == "RUSTC_WORKSPACE_WRAPPER"
        || name.ends_with("MAKEFLAGS")
        || name.starts_with("__CARGO")
        || (name.starts_with("CARGO_") && !keep.iter().any(|prefix| name.starts_with(prefix)))
}

/// Builds the board and returns the path of its ELF.
fn build_board(board: &Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command.current_dir(board).args(["build", "--release"]);
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(leaks_into_nested_build) {
            command.env_remove(&name);
        }
    }
    let output = command.output().unwrap_or_else(|e| panic!("could not run cargo to build the board: {e}"));
    assert!(
        output.status.success(),
        "building the board failed ({}); reproduce with: (cd {} && cargo build --release)\n{}",
        output.status,
        board.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let elf = board.join("target").join(TARGET).join("release").join("trapeze-board");
    assert!(elf.is_file(), "the board build did not produce {}", elf.display());
    elf
}

/// `program` if it runs (`--version`), else a panic saying how to install it.
fn require_tool(program: &Path, install: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !found.is_ok_and(|status| status.success()) {
        panic!("{} is missing: {install} (./run-tests.sh installs it)", program.display());
    }
}

/// `defmt-print`: `$DEFMT_PRINT`, else the copy `./run-tests.sh` installs under `target/tools`, else `PATH`'s.
fn defmt_print() -> PathBuf {
    if let Some(path) = env::var_os("DEFMT_PRINT") {
        return PathBuf::from(path);
    }
    let installed = repository().join("target/tools/bin/defmt-print");
    if installed.is_file() {
        installed
    } else {
        PathBuf::from("defmt-print")
    }
}

struct Boot {
    console: String,
    status: Option<i32>,
    defmt: PathBuf,
}

/// Boots `elf` with the board's runner script (with a Linux boot block when `linux` names one, with a physical
/// virtio-blk disk when `disk` names an image, and a second, dedicated to one VM, when `dedicated` names one),
/// killing QEMU after `timeout`.
fn boot(
    board: &Path,
    elf: &Path,
    linux: Option<&Path>,
    (disk, dedicated): (Option<&Path>, Option<&Path>),
    timeout: Duration,
) -> Boot {
    let name = if linux.is_some() { "linux" } else { "test" };
    let defmt = elf.with_extension(format!("{name}.defmt"));
    let console_path = elf.with_extension(format!("{name}.console"));
    let console_file = std::fs::File::create(&console_path).expect("create the console capture file");
    let mut command = Command::new(board.join("run-qemu.sh"));
    if let Some(block) = linux {
        command.env("LINUX_BLOCK_FILE", block);
    }
    if let Some(image) = disk {
        command.env("DISK_FILE", image);
    }
    if let Some(image) = dedicated {
        command.env("DEDICATED_DISK_FILE", image);
    }
    let mut child = command
        .arg(elf)
        .env("DEFMT_OUT", &defmt)
        .stdin(Stdio::null())
        .stdout(console_file)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start QEMU through run-qemu.sh: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for QEMU") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let console = std::fs::read_to_string(&console_path).unwrap_or_default();
            panic!("the board did not finish within {timeout:?}; its console so far:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = std::fs::read_to_string(&console_path).expect("read the console capture");
    Boot { console, status: status.code(), defmt }
}

/// Boots a `bench-*` guest directly on QEMU (`-bios none -kernel`) and returns the run time it measured itself
/// (its line `NAME: N mtime ticks`), in ticks of the 10 MHz timer.
fn direct_qemu_ticks(elf: &str) -> u64 {
    let output = Command::new("qemu-system-riscv64")
        .args(["-M", "virt", "-m", "512M", "-bios", "none", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-kernel", elf])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run QEMU on {elf}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_suffix(" mtime ticks")?.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{elf} on QEMU printed no run time:\n{stdout}"))
}

/// The lines VM `index` printed, without its prefix.
fn vm_output(console: &str, index: usize) -> String {
    let prefix = format!("[vm{index}] ");
    console.lines().filter_map(|line| line.strip_prefix(&prefix)).flat_map(|line| [line, "\n"]).collect()
}

/// The VM printed `checks` `ok:` lines, no `FAIL`, and ends with the guest's summary line.
fn assert_all_checks_pass(console: &str, index: usize, name: &str, checks: usize) {
    let output = vm_output(console, index);
    let summary = format!("{name}: all {checks} checks passed");
    assert!(
        !output.contains("FAIL") && output.lines().last() == Some(summary.as_str()),
        "vm{index} ({name}) did not end with `{summary}`:\n{output}"
    );
    let oks = output.lines().filter(|line| line.starts_with("ok: ")).count();
    assert_eq!(oks, checks, "vm{index} ({name}): one `ok:` line per check:\n{output}");
}

/// The board test's physical disk: 4 MiB of a background no guest writes by chance, and an MBR of three
/// partitions: U-Boot's (entry 1) at sectors `PARTITION_FIRST..PARTITION_FIRST + PARTITION_SECTORS`, with a
/// pattern at its first sector, another in the sector just before it, one in its last sector and one in the
/// sector just after it; and the two `disk-pattern` VMs' (entries 2 and 3, [`PATTERN_PARTITIONS`]), one below
/// U-Boot's and one above it, with background sectors between all three.
const DISK_SECTORS: usize = 8192;
const PARTITION_FIRST: usize = 2048;
const PARTITION_SECTORS: usize = 4096;
/// The `disk-pattern` VMs' partitions `(first sector, sectors)` and command lines (the board's `PATTERN_SEEDS`).
const PATTERN_PARTITIONS: [(usize, usize, &str); 2] =
    [(256, 512, "board pattern vm21"), (6400, 256, "board pattern vm22")];

fn disk_image() -> Vec<u8> {
    let mut image: Vec<u8> = (0..DISK_SECTORS * SECTOR).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    let partitions = [(PARTITION_FIRST, PARTITION_SECTORS), (PATTERN_PARTITIONS[0].0, PATTERN_PARTITIONS[0].1)];
    let partitions = partitions.into_iter().chain([(PATTERN_PARTITIONS[1].0, PATTERN_PARTITIONS[1].1)]);
    image[446..510].fill(0);
    for (index, (first, sectors)) in partitions.enumerate() {
        let entry = 446 + 16 * index;
        image[entry + 4] = 0x83;
        image[entry + 8..entry + 12].copy_from_slice(&(first as u32).to_le_bytes());
        image[entry + 12..entry + 16].copy_from_slice(&(sectors as u32).to_le_bytes());
    }
    image[510..512].copy_from_slice(&[0x55, 0xaa]);
    let sector = |image: &mut Vec<u8>, index: usize, fill: u8, text: &[u8]| {
        let at = index * SECTOR;
        image[at..at + SECTOR].fill(fill);
        image[at..at + text.len()].copy_from_slice(text);
    };
    sector(&mut image, PARTITION_FIRST - 1, b'B', b"before-partition");
    sector(&mut image, PARTITION_FIRST, b'P', b"trapeze-part-lba");
    sector(&mut image, PARTITION_FIRST + PARTITION_SECTORS - 1, b'L', b"last-of-partitio");
    sector(&mut image, PARTITION_FIRST + PARTITION_SECTORS, b'A', b"after-partition!");
    image
}

/// U-Boot, given the partition as its disk, saw its capacity and first sector, wrote its sector 1 (which landed
/// at the partition's offset + 1 in the image), and got an I/O error for a read and a write straddling its end;
/// the two `disk-pattern` VMs, each on its own partition beside U-Boot's, wrote their patterns across their whole
/// partitions, read them back and got the virtio error status past their ends. Afterwards the image holds
/// U-Boot's sector and both patterns at their partitions' offsets, and every other byte (the MBR, the
/// background between the partitions, the rest of U-Boot's partition) is as it was.
fn check_partition(console: &str, uboot: &str, image: &[u8], written: &[u8]) {
    let disk_line = format!("sectors {PARTITION_FIRST}..{}", PARTITION_FIRST + PARTITION_SECTORS);
    assert!(console.contains(&disk_line), "the board did not find the disk's partition:\n{console}");
    assert!(uboot.contains("Capacity: 2.0 MB = 0.0 GB (4096 x 512)"), "U-Boot's `virtio info`:\n{uboot}");
    assert!(
        uboot.contains("82000000: 74 72 61 70 65 7a 65 2d 70 61 72 74 2d 6c 62 61  trapeze-part-lba"),
        "U-Boot did not read the partition's first sector:\n{uboot}"
    );
    assert!(uboot.contains("virtio write: device 0 block # 1, count 1 ... 1 blocks written: OK"), "{uboot}");
    assert!(uboot.contains("virtio read: device 0 block # 4095, count 2 ... -5 blocks read: ERROR"), "{uboot}");
    assert!(uboot.contains("virtio write: device 0 block # 4095, count 2 ... -5 blocks written: ERROR"), "{uboot}");
    assert!(uboot.contains("=> echo disk done\ndisk done\n"), "{uboot}");
    for (slot, &(first, sectors, seed)) in PATTERN_PARTITIONS.iter().enumerate() {
        let vm = 21 + slot;
        let line =
            format!("board: vm{vm} (disk-pattern) gets partition {}, sectors {first}..{}", slot + 2, first + sectors);
        assert!(console.contains(&line), "the board did not give vm{vm} its partition:\n{console}");
        let output = vm_output(console, vm);
        assert!(output.starts_with("disk-pattern: seed "), "vm{vm}:\n{output}");
        assert!(
            output.contains(&format!(" from {seed:?}\n")),
            "vm{vm} seeds its pattern from its command line:\n{output}"
        );
        assert!(output.contains(&format!("disk-pattern: {sectors} sectors\n")), "vm{vm} sees its partition:\n{output}");
        for check in [
            "ok: the pattern written across the whole disk",
            "ok: the pattern read back",
            "ok: a read past the end gets IOERR",
            "ok: a write straddling the end gets IOERR",
        ] {
            assert!(output.contains(&format!("{check}\n")), "vm{vm} lacks {check:?}:\n{output}");
        }
        assert_all_checks_pass(console, vm, "disk-pattern", 9);
    }
    let mut expected = image.to_vec();
    let target = PARTITION_FIRST + 1;
    expected[target * SECTOR..(target + 1) * SECTOR].fill(0x5a);
    let patterns = PATTERN_PARTITIONS.map(|(first, sectors, seed)| (seed, [(first, sectors)]));
    let patterns: Vec<(&str, &[(usize, usize)])> =
        patterns.iter().map(|(seed, extents)| (*seed, &extents[..])).collect();
    let expected = with_patterns(&expected, &patterns);
    assert_image(written, &expected, "U-Boot's sector 1 and the two patterns over the untouched background");
}

/// The second physical disk, given whole to vm23 (a dedicated DMA-capable device, still served by the VMM).
const DEDICATED_SECTORS: usize = 256;
const DEDICATED_SEED: &str = "board dedicated vm23";

/// vm23 saw the whole second disk as its own, filled it with its pattern and read it back, and was refused past
/// its end; afterwards every sector of that disk holds its pattern, from sector 0 to the last.
fn check_dedicated(console: &str, original: &[u8], written: &[u8]) {
    let line = format!("board: disk at 0x10007000: {DEDICATED_SECTORS} sectors, given whole to vm23 (disk-pattern)");
    assert!(console.contains(&line), "the board did not dedicate the second disk to vm23:\n{console}");
    let output = vm_output(console, 23);
    assert!(output.contains(&format!(" from {DEDICATED_SEED:?}\n")), "vm23's seed:\n{output}");
    assert!(output.contains(&format!("disk-pattern: {DEDICATED_SECTORS} sectors\n")), "vm23's disk:\n{output}");
    assert!(output.contains("ok: a read past the end gets IOERR\n"), "vm23:\n{output}");
    assert_all_checks_pass(console, 23, "disk-pattern", 9);
    let expected = with_patterns(original, &[(DEDICATED_SEED, &[(0, DEDICATED_SECTORS)])]);
    assert_image(written, &expected, "vm23's pattern across the whole dedicated disk");
}

/// The board's network (issue 12): the physical NIC QEMU was given (`run-qemu.sh`, last on its command line) sits
/// in the slot below the two disks' and is the bridge's uplink; vm24 and vm25, each a `net-ping` VM with a
/// virtio-net NIC (slot 1, in its devicetree) on a port of the board's bridge, greeted each other by broadcast
/// and exchanged unicast frames; U-Boot found its NIC in its devicetree and got a DHCP lease from QEMU's
/// user-mode network through the bridge and the physical NIC, whose counters show frames both ways.
fn check_network(console: &str, uboot: &str) {
    let uplink = "board: NIC at 0x10006000 (52:54:00:12:34:56): the bridge's uplink to QEMU's network\n";
    assert!(console.contains(uplink), "the board did not find its NIC below the disks:\n{console}");
    for (vm, mac) in [(24, "52:54:00:12:34:01"), (25, "52:54:00:12:34:02")] {
        let output = vm_output(console, vm);
        assert!(output.starts_with("net-ping: NIC at 0x10002000 (version 2)\n"), "vm{vm}:\n{output}");
        assert!(output.contains(&format!("net-ping: mac {mac}\n")), "vm{vm}'s address:\n{output}");
        for check in ["ok: heard the peer\n", "ok: got the peer's unicast frame\n"] {
            assert!(output.contains(check), "vm{vm} did not say {check:?}:\n{output}");
        }
        assert_all_checks_pass(console, vm, "net-ping", 6);
        // The board's report of its NIC: frames received through the device model, which raised the used-buffer
        // interrupt (net-ping polls and never acknowledges it, so the bit stays set).
        let report = console
            .lines()
            .skip_while(|line| !line.starts_with(&format!("vm{vm} (net-ping): ")))
            .find_map(|line| line.strip_prefix("    nic: "))
            .unwrap_or_else(|| panic!("no NIC report for vm{vm}:\n{console}"));
        // At least the peer's unicast frame: a VM that posted its receive buffers after the peer's greetings were
        // dropped (no buffer yet) hears the peer first through that frame, so one frame may be all it receives.
        let received = report.split_once(" received").and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok());
        assert!(received.is_some_and(|frames: u64| frames >= 1), "vm{vm}'s NIC: {report}");
        assert!(report.contains("interrupt status 0x1;"), "vm{vm}'s NIC raised its interrupt: {report}");
    }
    assert!(uboot.contains("Net:   eth0: virtio-net#1\n"), "U-Boot did not find its NIC:\n{uboot}");
    assert!(uboot.contains("DHCP client bound to address 10.0.2.15 ("), "U-Boot got no lease:\n{uboot}");
    assert!(uboot.contains("\nip=10.0.2.15 net done\n"), "U-Boot's address:\n{uboot}");
    let line = console
        .lines()
        .find_map(|line| line.strip_prefix("board: uplink: "))
        .unwrap_or_else(|| panic!("no uplink counters:\n{console}"));
    let count = |what: &str| -> u64 {
        let before = line.split_once(what).map(|(before, _)| before).unwrap_or_default();
        before.split_whitespace().next_back().unwrap_or_default().parse().unwrap_or(0)
    };
    // At least the offer and the acknowledgement in, the discover and the request out.
    assert!(count(" frames from the network") >= 2 && count(" to it") >= 2, "the uplink's counters: {line}");
    assert!(line.contains(" (0 errors)"), "the uplink's counters: {line}");
}

/// The board's printer (issue 12, the spooled printer) is its console: vm26 and vm27, each running `print-jobs`
/// (three processes, each with a level-1 spool, submitting four whole jobs), passed their checks, blocked on a full
/// level-2 spool at least once rather than lose a job, and every job of theirs is on the console whole: its banner
/// at the start of a line, exactly its LEN bytes, its trailer right after (no VM line inside), ids in submission
/// order per VM, each process's jobs in its order, none lost.
fn check_printer(console: &str) {
    let mut retries = 0;
    for vm in [26, 27] {
        assert_all_checks_pass(console, vm, "print-jobs", 8);
        let output = vm_output(console, vm);
        let line = output.lines().find_map(|line| line.strip_prefix("print-jobs: 12 jobs submitted, "));
        retries += line.and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok()).unwrap_or(0);
    }
    assert!(retries > 0, "no process met a full spool:\n{console}");
    let mut jobs: Vec<(String, u32, &str)> = Vec::new();
    let mut rest = console;
    while let Some(at) = rest.find("\n=== job ") {
        let (header, after) = rest[at + 1..].split_once('\n').expect("a banner line");
        let fields = header.strip_prefix("=== job ").and_then(|h| h.strip_suffix(" bytes ===")).expect(header);
        let (id, of) = fields.split_once(" of ").expect(header);
        let (vm, len) = of.rsplit_once(": ").expect(header);
        let len: usize = len.parse().expect(header);
        let body = after.get(..len).unwrap_or_else(|| panic!("{header}: the console ends inside the job"));
        let mut tail = &after[len..];
        if !body.ends_with('\n') {
            tail = tail.strip_prefix('\n').expect("a newline closes a job without one");
        }
        let trailer = format!("=== end of job {id} of {vm} ===\n");
        assert!(
            tail.starts_with(&trailer),
            "{header}: not whole (no trailer right after its bytes):\n{body}{tail:.300}"
        );
        jobs.push((vm.to_string(), id.parse().expect(header), body));
        rest = &tail[trailer.len() - 1..];
    }
    for vm in ["vm26", "vm27"] {
        let mine: Vec<&(String, u32, &str)> = jobs.iter().filter(|job| job.0 == vm).collect();
        let ids: Vec<u32> = mine.iter().map(|job| job.1).collect();
        let all: Vec<u32> = (1..=(print_jobs::PROCESSES * print_jobs::JOBS) as u32).collect();
        assert_eq!(ids, all, "{vm}: every job printed once, first in first out");
        let mut next = [0usize; print_jobs::PROCESSES];
        for (_, id, body) in mine {
            let first = body.lines().next().unwrap_or_default();
            let process: usize = first
                .strip_prefix("process ")
                .and_then(|rest| rest.split(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{vm} job {id}: {first:?}"));
            assert!(process < print_jobs::PROCESSES, "{vm} job {id}: {first:?}");
            assert_eq!(*body, print_jobs::expected_job(process, next[process]), "{vm} job {id}: whole, in its order");
            next[process] += 1;
        }
        assert_eq!(next, [print_jobs::JOBS; print_jobs::PROCESSES], "{vm}: no job lost");
    }
    assert!(console.contains("board: printer: "), "{console}");
}

/// The board's PMP hits over its whole boot (`board: isolation: N guest entries, M PMP hits`): guest accesses
/// PMP stopped, each one past the shadow tables, so there must be none. Appended to the suite's isolation figures
/// per guest entry first, with the VMM's own panics and traps.
fn assert_no_pmp_hit(console: &str) {
    let (entries, hits) = console
        .lines()
        .find_map(|line| {
            let (entries, rest) = line.strip_prefix("board: isolation: ")?.split_once(" guest entries, ")?;
            Some((entries.parse::<u64>().ok()?, rest.strip_suffix(" PMP hits")?.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no `board: isolation:` line; the console was:\n{console}"));
    let panics = console.matches("board: VMM panic").count() + console.matches("board: VMM trap").count();
    isolation::report("PMP hits (board, per guest entry)", entries, hits, panics as u64);
    assert!(entries > 0 && hits == 0, "{hits} PMP hits in {entries} guest entries:\n{console}");
}

#[test]
fn guest_programs_a_hostile_guest_and_u_boot_run_natively_in_their_own_partitions_under_qemu() {
    require_tool(Path::new("qemu-system-riscv64"), "install QEMU with `apt-get install -y qemu-system-misc`");
    let defmt_print = defmt_print();
    require_tool(
        &defmt_print,
        "install it with `cargo install --locked defmt-print --root target/tools` at the repository root",
    );
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let board = repository().join("boards/qemu-virt-rv64");
    let elf = build_board(&board);
    let disk_path = std::env::temp_dir().join(format!("trapeze-board-disk-{}.img", std::process::id()));
    let image = disk_image();
    std::fs::write(&disk_path, &image).expect("write the disk image");
    let dedicated_path = std::env::temp_dir().join(format!("trapeze-board-dedicated-{}.img", std::process::id()));
    let dedicated: Vec<u8> = (0..DEDICATED_SECTORS * SECTOR).map(|i| (i % 253) as u8 ^ 0xa5).collect();
    std::fs::write(&dedicated_path, &dedicated).expect("write the dedicated disk image");
    let boot = boot(&board, &elf, None, (Some(&disk_path), Some(&dedicated_path)), QEMU_TIMEOUT);
    let written = std::fs::read(&disk_path).expect("read the disk image back");
    let dedicated_written = std::fs::read(&dedicated_path).expect("read the dedicated disk image back");
    let _ = std::fs::remove_file(&disk_path);
    let _ = std::fs::remove_file(&dedicated_path);
    let console = &boot.console;
    println!("{console}");

    // Two copies of `hello` side by side, then the privileged-architecture checks, each in its own VM.
    let hello = include_str!("golden/hello.out");
    assert_eq!(vm_output(console, 0), hello, "vm0 (hello); the console was:\n{console}");
    assert_eq!(vm_output(console, 1), hello, "vm1 (hello); the console was:\n{console}");
    assert_all_checks_pass(console, 2, "sv39", 34);
    assert_all_checks_pass(console, 3, "interrupts", 19);
    assert_eq!(vm_output(console, 4), "idle: woke after timer\n", "vm4 (idle)");
    assert_eq!(vm_output(console, 5), include_str!("golden/amo.out"), "vm5 (amo)");
    assert_all_checks_pass(console, 6, "fpu", 82);
    let digest = format!("arith digest: {:#018x}\n", torture::digest(torture::DEFAULT_OPS));
    assert_eq!(vm_output(console, 7), digest, "vm7 (arith)");
    // The hostile VM: every escape attempt is refused with the fault a guest must get, the VMM reports each
    // device access it refused, and the VM's endless loop with interrupts masked is preempted while the others
    // above ran to their end.
    assert_eq!(vm_output(console, 8), "5\n7\n5\n2\n1\nspinning with interrupts masked\n", "vm8 (hostile)");
    for refused in [
        "board: vm8: load of 0x81000000 refused (no device there): access fault injected\n",
        "board: vm8: store of 0x0 refused (no device there): access fault injected\n",
        "board: vm8: load of 0x10001000 refused (no device there): access fault injected\n",
    ] {
        assert!(console.contains(refused), "the VMM did not report {refused:?}; the console was:\n{console}");
    }
    assert!(
        console.contains("vm8 (hostile): contained: still running, preempted "),
        "the board's verdict on the hostile VM; the console was:\n{console}"
    );
    // U-Boot in virtual S-mode on the VMM's own SBI and devicetree: it reaches its prompt, and the `version` the
    // board types through its console is answered.
    let uboot = vm_output(console, 9);
    let answer = uboot.split_once("=> version\n").map(|(_, after)| after);
    assert!(
        uboot.contains("DRAM:  64 MiB") && answer.is_some_and(|answer| answer.starts_with("U-Boot 20")),
        "U-Boot did not answer `version` at its prompt; it printed:\n{uboot}"
    );
    // Its `sbi` command lists the VMM's SBI, and `sleep 1` runs on the virtual timer.
    assert!(uboot.contains("=> sbi\nSBI 2.0") && uboot.contains("  Hart State Management Extension\n"), "{uboot}");
    assert!(uboot.contains("=> sleep 1; echo slept\nslept\n"), "U-Boot did not sleep and answer:\n{uboot}");
    assert!(console.contains("vm9 (u-boot): script played: true\n"), "{console}");
    check_partition(console, &uboot, &image, &written);
    check_network(console, &uboot);
    check_printer(console);
    check_dedicated(console, &dedicated, &dedicated_written);
    // A guest kernel reaching for what is not its own, from virtual M-mode, from S-mode with paging off and from
    // S-mode through its own Sv39 tables: below its RAM, past its end, far above it (where the VMM's or another
    // VM's memory would be if the shadow tables leaked it) and a virtio slot it was not given. Every attempt gets
    // the access fault the specification names, with the address in `mtval`.
    assert_all_checks_pass(console, 10, "contain", 35);
    // The VMs whose counters are delegated whatever the default (issue 10): their pages are scanned and their
    // counter reads patched into traps (in copies of the pages) before they run. Each reads `time`, `cycle` and
    // `instret` in M-, S- and U-mode (virtual values, `mcounteren`/`scounteren` honoured, `time` without a jump
    // across the 200 ms pause the board gives it), reads its own patched code back as written, rewrites an
    // instruction on a scanned page and runs it, and runs an `rdtime` straddling a page end in compressed code.
    // vm11 patches alone, so every read traps natively at a patched site; vm17 also runs its hot trap sites from
    // the code cache, so most reads are served in excursions without a world switch.
    for vm in [11, 17] {
        assert_all_checks_pass(console, vm, "counters", 23);
        assert!(
            console.contains(&format!("board: vm{vm} paused for 200 ms after 5000 counter reads\n")),
            "the board did not pause vm{vm}:\n{console}"
        );
    }
    let report = |vm: usize, prefix: &str| -> String {
        let summary = format!("vm{vm} (counters): ");
        console
            .lines()
            .skip_while(|line| !line.starts_with(&summary))
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} report for vm{vm}:\n{console}"))
            .to_string()
    };
    // The number just before `what` in a report line.
    let count = |report: &str, what: &str| -> u64 {
        let before = report.split_once(what).map(|(before, _)| before).unwrap_or_default();
        before.split_whitespace().next_back().unwrap_or_default().parse().unwrap_or(0)
    };
    let patching = report(11, "    counters delegated: ");
    assert!(
        count(&patching, " pages scanned") > 0
            && count(&patching, " site traps") >= 30_000
            && count(&patching, " pages dropped when written") > 0,
        "vm11's reads must trap at patched sites (30 000 at least) and its stores drop scanned pages: {patching}"
    );
    assert!(count(&patching, " loads of patched code") > 0, "vm11 read its patched code: {patching}");
    let cached = report(17, "    trap sites cached: ");
    let patched = report(17, "    counters delegated: ");
    assert!(
        count(&patched, " site traps") > 0 && count(&cached, " exits over") >= 30_000,
        "vm17's reads must start at patched sites and then be served in excursions: {patched}; {cached}"
    );
    // A dedicated device (issue 11): QEMU `virt`'s goldfish RTC, given whole to vm19, which reads a plausible time
    // that advances straight from the device (its page mapped into vm19's shadow tables, its PMP letting it
    // through) and cannot execute from it; vm20 was not given it, and its load, store and jump there each get the
    // access fault, the VMM refusing the load and store as accesses to no device of vm20's.
    assert_all_checks_pass(console, 19, "rtc", 4);
    assert!(vm_output(console, 19).starts_with("rtc: the devicetree gives this VM a goldfish RTC at 0x101000\n"));
    assert_all_checks_pass(console, 20, "rtc", 3);
    assert!(vm_output(console, 20).starts_with("rtc: no RTC in the devicetree: 0x101000 must fault\n"));
    for refused in [
        "board: vm20: load of 0x101000 refused (no device there): access fault injected\n",
        "board: vm20: store of 0x101004 refused (no device there): access fault injected\n",
    ] {
        assert!(console.contains(refused), "the VMM did not report {refused:?}; the console was:\n{console}");
    }
    assert!(!console.contains("board: vm19: "), "vm19's RTC accesses never reach the VMM's devices:\n{console}");
    assert!(
        console.contains("    passthrough page 0x101000: 0 accesses served by the VMM\n"),
        "vm19 reads its RTC natively, never through the VMM:\n{console}"
    );
    let walls: Vec<&str> = console.lines().filter(|line| line.ends_with(" walled")).collect();
    assert!(
        walls.len() == 22 && walls.iter().all(|line| line.ends_with(" 0 walled")),
        "the shadow tables map nothing outside a VM, so PMP (the second wall) never fires:\n{console}"
    );
    assert!(console.contains("board: 22 of 22 VMs passed\n"), "the board's summary; the console was:\n{console}");
    // The whole boot's PMP hits: the demo's VMs and the benchmark guests after them.
    assert_no_pmp_hit(console);
    // The board runs on the four real harts `run-qemu.sh` gives QEMU (`-smp 4`), VMs spread over all of them from one
    // run queue: each real hart ran turns of the demo's VMs.
    assert!(console.contains("board: 4 real harts up (mask 0xf)"), "the board did not bring up four harts:\n{console}");
    let harts: Vec<(usize, u64)> = console
        .lines()
        .filter(|line| line.ends_with("(demo):") || line.contains(" VMs (demo): "))
        .filter_map(|line| {
            let rest = line.strip_prefix("board: real hart ")?;
            let (hart, rest) = rest.split_once(" ran ")?;
            let (slices, _) = rest.split_once(" VM slices")?;
            Some((hart.parse().ok()?, slices.parse().ok()?))
        })
        .collect();
    assert_eq!(
        harts.iter().map(|&(hart, _)| hart).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "one summary line per real hart:\n{console}"
    );
    assert!(harts.iter().all(|&(_, slices)| slices > 0), "every real hart ran VMs: {harts:?}");
    // Nothing guards the end of a hart's M-mode stack: each must have used well under half of its own.
    let stacks = console
        .lines()
        .find_map(|line| line.strip_prefix("board: M-mode stack used per real hart: "))
        .unwrap_or_else(|| panic!("no stack report:\n{console}"));
    let stacks: Vec<(u64, u64)> = stacks
        .split(" KiB")
        .filter_map(|part| part.trim().split_once(" of ").and_then(|(u, s)| Some((u.parse().ok()?, s.parse().ok()?))))
        .collect();
    assert!(
        stacks.len() == 4 && stacks.iter().all(|&(used, size)| used > 0 && used * 2 < size),
        "each real hart's stack used, of its size, in KiB: {stacks:?}"
    );
    assert_eq!(boot.status, Some(0), "QEMU's exit status is the board's");

    // The benchmarks: a trap round trip, and a CPU-bound guest under the VMM against the same guest on QEMU alone.
    let wall = console
        .lines()
        .find_map(|line| line.strip_prefix("bench: bench-int under the native VMM: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the board printed no bench-int time; the console was:\n{console}"));
    assert!(
        vm_output(console, 13).contains("bench-int: checksum 0x"),
        "bench-int did not finish under the VMM:\n{console}"
    );
    assert!(console.contains("bench: trap round trip (CSR read emulated by the VMM): "), "{console}");
    // The time loop in the four modes: each reads `time` a million times and powers off; with code caching the
    // reads after the site turned hot cost no world switch.
    let time_loop: Vec<&str> = console.lines().filter(|line| line.starts_with("bench: time loop")).collect();
    assert_eq!(time_loop.len(), 5, "four modes and the speed-ups:\n{console}");
    let switches = |line: &str| count(line, " world switches");
    assert!(switches(time_loop[0]) >= 1_000_000, "trapping: a world switch per read: {}", time_loop[0]);
    assert!(switches(time_loop[1]) >= 1_000_000, "patching: a world switch per read: {}", time_loop[1]);
    for cached in [time_loop[2], time_loop[3]] {
        assert!(switches(cached) < 1_000, "code caching: reads served without world switches: {cached}");
    }
    let direct = direct_qemu_ticks(env!("TRAPEZE_GUEST_BENCH_INT"));
    let ratio = wall as f64 / direct as f64;
    let round_trip = console.lines().find(|line| line.starts_with("bench: trap round trip")).unwrap_or_default();
    let mut figures = format!(
        "native board: {}\nnative board: bench-int {wall} ticks under the native VMM, {direct} ticks on QEMU alone: \
         {ratio:.3}x\n",
        round_trip.trim_start_matches("bench: ")
    );
    for line in &time_loop {
        figures += &format!("native board: {}\n", line.trim_start_matches("bench: "));
    }
    print!("{figures}");
    // `./run-tests.sh` prints this file after the suite, so the figures show without `--nocapture`.
    std::fs::write(repository().join("target/board-bench.txt"), &figures).expect("write target/board-bench.txt");
    // The goal is under 1.05; the bound leaves room for a loaded machine (both runs share it with other work).
    assert!(ratio < 1.5, "bench-int is {ratio:.3}x slower under the native VMM than on QEMU alone");

    let decoded = Command::new(&defmt_print)
        .arg("-e")
        .arg(&elf)
        .stdin(std::fs::File::open(&boot.defmt).expect("open the defmt capture"))
        .output()
        .expect("run defmt-print");
    let log = String::from_utf8_lossy(&decoded.stdout);
    assert!(
        log.contains("board up") && log.contains("vm 7: partition"),
        "the defmt log did not decode to the board's messages: {log:?}"
    );
}

/// Debian's Linux kernel takes about 30 s to reach its shell under the native VMM here; generous for CI.
const LINUX_TIMEOUT: Duration = Duration::from_secs(600);

/// The board's Linux boot block (see `LINUX_BLOCK` in the board's `src/main.rs`): magic, kernel size, initrd
/// size, command line length and text, then the kernel at 4 KiB and the initramfs 4 KiB aligned after it.
fn linux_block(kernel: &[u8], initrd: &[u8], bootargs: &str) -> Vec<u8> {
    let mut block = b"TRPZLNX1".to_vec();
    for value in [kernel.len(), initrd.len(), bootargs.len()] {
        block.extend_from_slice(&(value as u64).to_le_bytes());
    }
    block.extend_from_slice(bootargs.as_bytes());
    block.resize(0x1000, 0);
    block.extend_from_slice(kernel);
    block.resize(block.len().next_multiple_of(0x1000), 0);
    block.extend_from_slice(initrd);
    block
}

/// `text` without the CSI escape sequences (`ESC [` parameters, then a final letter) a shell writes to its terminal.
fn without_terminal_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a guest Linux prints when it or one of its processes went wrong: a stale or torn translation in the VMM
/// (its shadow tables kept a mapping the guest had fenced away) shows as a user process's stack smashed or a
/// segmentation fault, a kernel oops, or a hart stalled (the soft-lockup watchdog, RCU), even when the boot
/// still reaches its shell. The lines of `linux` (the guest's console, prefixes stripped) that say so.
fn linux_faults<'c>(linux: impl IntoIterator<Item = &'c str>) -> Vec<&'c str> {
    const MARKERS: [&str; 8] = [
        "stack smashing detected",
        "Segmentation fault",
        "Aborted",
        "Kernel panic",
        "Oops",
        "Unable to handle kernel",
        "soft lockup",
        "detected stall",
    ];
    linux.into_iter().filter(|line| MARKERS.iter().any(|marker| line.contains(marker))).collect()
}

#[test]
fn debian_linux_boots_natively_on_the_board_to_a_shell() {
    require_tool(Path::new("qemu-system-riscv64"), "install QEMU with `apt-get install -y qemu-system-misc`");
    let fetch = "run tools/fetch-debian-riscv64.sh target/guest-images (./run-tests.sh does)";
    let read = |name: &str| std::fs::read(require(&guest_images().join(name), fetch)).expect("read a guest image");
    let (kernel, busybox) = (read("Image"), read("busybox"));
    let block = linux_block(&kernel, &initramfs(&busybox), "console=ttyS0 earlycon=sbi");
    let block_path = std::env::temp_dir().join(format!("trapeze-board-linux-{}.bin", std::process::id()));
    std::fs::write(&block_path, block).expect("write the Linux boot block");

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let board = repository().join("boards/qemu-virt-rv64");
    let elf = build_board(&board);
    let boot = boot(&board, &elf, Some(&block_path), (None, None), LINUX_TIMEOUT);
    let _ = std::fs::remove_file(&block_path);
    let console = &boot.console;
    println!("{console}");
    // Four boots, one per mode: counters trapping, patched, patched with code caching, trapping with code caching.
    for (mode, prefix) in [
        ("Trapping", "[linux:trapping] "),
        ("Patching", "[linux:patching] "),
        ("PatchingCached", "[linux:cached] "),
        ("TrappingCached", "[linux:trapping-cached] "),
    ] {
        let linux: String =
            console.lines().filter_map(|line| line.strip_prefix(prefix)).flat_map(|line| [line, "\n"]).collect();
        // Busybox's line editor may ask the terminal for the cursor position (`ESC [ 6 n`) before it echoes a line.
        let linux = without_terminal_queries(&linux);
        let mut rest = linux.as_str();
        // In order: the kernel on the VMM's SBI, its initramfs, and the shell answering what the board typed.
        for expected in [
            "Linux version",
            "SBI specification v2.0 detected",
            "SBI implementation ID=0x54524150",
            // Both virtual harts up (through the VMM's SBI HSM), before init runs.
            "smp: Brought up 1 node, 2 CPUs",
            "Run /init as init process",
            "trapeze-initramfs: 2 harts online",
            "# echo answer=$((6 * 7))\nanswer=42\n",
            "# uname -m\nriscv64\n",
            "seq 3000|md5sum& seq 3000|md5sum; wait; echo both done\n",
            "ee9762749fc5338b6c9b0948d14219c7  -\n",
            "ee9762749fc5338b6c9b0948d14219c7  -\n",
            "both done\n",
        ] {
            let Some(at) = rest.find(expected) else {
                panic!("Linux's console ({mode}) lacks {expected:?} (in order); it was:\n{linux}");
            };
            rest = &rest[at + expected.len()..];
        }
        assert!(console.contains(&format!("linux ({mode}): script played: true")), "{console}");
        let faults = linux_faults(linux.lines());
        assert!(faults.is_empty(), "Linux ({mode}) or one of its processes failed: {faults:#?}\n{linux}");
    }
    // In every mode its two harts ran on different real harts at once (a `Vm`, engine and shadow tables per hart,
    // the VMM's SBI across real harts): world switches into one hart while the other ran natively. Where an
    // engine watches pages (code caching keeps code from them, patching scans them), the other hart's shadow
    // tables lost W on each page newly watched (cross-hart write revocations): some were served in those modes,
    // none where nothing is watched.
    for (mode, watches) in [("Trapping", false), ("Patching", true), ("PatchingCached", true), ("TrappingCached", true)]
    {
        let line = console
            .lines()
            .find(|line| line.starts_with(&format!("linux ({mode}): harts on several real harts:")))
            .unwrap_or_else(|| panic!("Linux ({mode}) did not run its harts on several real harts:\n{console}"));
        let parallel = parallel_entries(line);
        assert!(parallel.is_some_and(|entries| entries > 0), "Linux's harts never ran at once ({mode}): {line}");
        let revocations = revocations_served(line);
        assert!(revocations.is_some(), "no revocation count: {line}");
        assert_eq!(revocations.is_some_and(|served| served > 0), watches, "({mode}) {line}");
    }
    // The scaling figures' guest: two harts each hashing its own buffer, both harts in one `Vm`, then a `Vm` per
    // hart on one real hart and on two; every run agrees on the digest, and the run on two real harts ran its
    // harts at once.
    let hashes = console.lines().filter(|line| line.starts_with("[vm24] hash-harts: 2 harts, digest ")).count();
    assert_eq!(hashes, 11, "one run in one `Vm`, five on one real hart, five on two:\n{console}");
    let scaling = console.lines().find(|line| line.starts_with("bench: hash-harts")).expect("the scaling figures");
    let on_two =
        scaling.split("on 2 real harts ").nth(1).and_then(|rest| rest.split_once("us (")).map(|(_, rest)| rest);
    let on_two: Option<u64> = on_two.and_then(|rest| rest.split_once(')')).and_then(|(n, _)| n.parse().ok());
    assert!(on_two.is_some_and(|entries| entries > 0), "hash-harts never ran its harts at once: {scaling}");
    // The figures: world switches and wall time to the shell in each mode.
    let figures: String = console
        .lines()
        .filter(|line| line.starts_with("bench: linux") || line.starts_with("bench: hash-harts"))
        .map(|line| format!("native board: {}\n", line.trim_start_matches("bench: ")))
        .collect();
    let switches = |mode: &str| -> u64 {
        let line = console
            .lines()
            .find_map(|line| line.strip_prefix(&format!("bench: linux boot to its shell, {mode}: ")))
            .unwrap_or_else(|| panic!("no boot figure for {mode}:\n{console}"));
        let before = line.split_once(" world switches").map(|(before, _)| before).unwrap_or_default();
        before.split_whitespace().next_back().unwrap_or_default().parse().unwrap_or(0)
    };
    print!("{figures}");
    std::fs::write(repository().join("target/board-linux-bench.txt"), &figures).expect("write the Linux figures");
    // Code caching merges the traps of the kernel's hot sites (interrupt toggles, trap entry and return, counter
    // reads) into excursions: fewer world switches than with every trap one (a fifth fewer, measured; the bound
    // leaves room for timing, which moves the counts a little). Each mode with caching is compared with the same
    // mode without: with two harts every 100 µs spin-check quantum is a world switch too, so a slower mode
    // (patching scans pages) switches more for its wall time alone. (Every mode runs its two harts on two real
    // harts at once, each with its own world switches, since the cross-hart write revocation: the cached modes
    // still switch a fifth to a quarter less, 0.74x to 0.81x in that change's runs.)
    for (plain, cached_mode) in [("Trapping", "TrappingCached"), ("Patching", "PatchingCached")] {
        let (without, cached) = (switches(plain), switches(cached_mode));
        assert!(
            cached > 0 && cached * 10 <= without * 9,
            "world switches to the shell: {without} {plain}, {cached} {cached_mode}:\n{figures}"
        );
    }
    assert_no_pmp_hit(console);
    assert_eq!(boot.status, Some(0), "QEMU's exit status is the board's");
}

/// The world switches a Linux boot's harts made while its other hart ran natively on another real hart, from
/// the board's line for a boot whose harts run on several real harts at once (`None`: no such line).
fn parallel_entries(line: &str) -> Option<u64> {
    let rest = line.split_once(": harts on several real harts:")?.1;
    let before = rest.split_once(" world switches entered while the VM's other hart ran natively")?.0;
    before.rsplit(' ').next()?.parse().ok()
}

/// The cross-hart write revocations a Linux boot's harts served (pages the other hart started watching, whose
/// write permission they dropped), from the same line as [`parallel_entries`].
fn revocations_served(line: &str) -> Option<u64> {
    let before = line.split_once(" cross-hart write revocations served")?.0;
    before.rsplit(' ').next()?.parse().ok()
}

/// How many times the Linux loop boots two-hart Linux.
const LINUX_LOOP_BOOTS: u64 = 20;

/// The regression loop of the native two-hart lockup (issue 14): the board boots Debian's Linux on two virtual
/// harts (on two real harts at once) [`LINUX_LOOP_BOOTS`] times in a row in its default mode (counters trapping
/// with code caching), each boot to
/// its shell and through the same script as the suite's Linux test (two `md5sum`s in parallel included). Slow
/// (a boot and its script take 20 to 60 s on the board's four real harts here, the loop 10 to 13 minutes), so it
/// runs by hand:
/// `cargo test -p trapeze-hosted --release --test board -- --ignored --nocapture linux_loop`.
#[test]
#[ignore = "boots Linux twenty times (10 to 13 minutes); run by hand, see the boards README"]
fn linux_loop_two_harts_boot_to_their_shell_every_time() {
    require_tool(Path::new("qemu-system-riscv64"), "install QEMU with `apt-get install -y qemu-system-misc`");
    let fetch = "run tools/fetch-debian-riscv64.sh target/guest-images (./run-tests.sh does)";
    let read = |name: &str| std::fs::read(require(&guest_images().join(name), fetch)).expect("read a guest image");
    let (kernel, busybox) = (read("Image"), read("busybox"));
    let mut block = linux_block(&kernel, &initramfs(&busybox), "console=ttyS0 earlycon=sbi");
    // The loop request in the header page (see LINUX_LOOP_MAGIC in the board's src/main.rs).
    block[0x800..0x808].copy_from_slice(b"TRPZLOOP");
    block[0x808..0x810].copy_from_slice(&LINUX_LOOP_BOOTS.to_le_bytes());
    let block_path = std::env::temp_dir().join(format!("trapeze-board-linux-loop-{}.bin", std::process::id()));
    std::fs::write(&block_path, block).expect("write the Linux boot block");

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let board = repository().join("boards/qemu-virt-rv64");
    let elf = build_board(&board);
    let timeout = LINUX_TIMEOUT * LINUX_LOOP_BOOTS as u32 / 2;
    let boot = boot(&board, &elf, Some(&block_path), (None, None), timeout);
    let _ = std::fs::remove_file(&block_path);
    let console = &boot.console;
    let results: Vec<&str> = console.lines().filter(|line| line.starts_with("linux loop: ")).collect();
    for line in &results {
        println!("{line}");
    }
    let summary = format!("linux loop: {LINUX_LOOP_BOOTS} of {LINUX_LOOP_BOOTS} boots reached the shell");
    assert!(console.contains(&summary), "not every boot reached its shell and ran the script:\n{console}");
    let linux: Vec<&str> = console.lines().filter_map(|line| line.strip_prefix("[linux:loop] ")).collect();
    // The board's summary counts boots whose console met each step of the script, which a process that died on
    // the way can still do (the shell echoes "both done" after two `md5sum`s however they ended): every boot
    // must also have brought both virtual harts up, counted them from user space and printed both sums, and no
    // kernel or process may have failed, even in a boot that went on (see `linux_faults`). With the VMM's SBI
    // remote fences kept from the shadow tables (the fault behind the lockup), 6 boots of 20 had a process's
    // stack smashed, 2 of them never getting through the script.
    let count = |text: &str| linux.iter().filter(|line| line.contains(text)).count() as u64;
    assert_eq!(count("smp: Brought up 1 node, 2 CPUs"), LINUX_LOOP_BOOTS, "both harts up in every boot:\n{console}");
    assert_eq!(count("trapeze-initramfs: 2 harts online"), LINUX_LOOP_BOOTS, "{console}");
    assert_eq!(
        count("ee9762749fc5338b6c9b0948d14219c7  -"),
        2 * LINUX_LOOP_BOOTS,
        "both sums in every boot:\n{console}"
    );
    let faults = linux_faults(linux.iter().copied());
    assert!(faults.is_empty(), "a boot's kernel or one of its processes failed: {faults:#?}\n{console}");
    // Every boot ran its two harts on different real harts at once, in the default mode (code caching), each
    // hart's shadow tables losing W on the pages the other's code cache started keeping code from.
    let lines: Vec<&str> = console.lines().filter(|line| line.contains(": harts on several real harts:")).collect();
    assert_eq!(lines.len() as u64, LINUX_LOOP_BOOTS, "{console}");
    assert!(lines.iter().all(|line| line.starts_with("linux (TrappingCached): ")), "{lines:#?}");
    let parallel: Vec<Option<u64>> = lines.iter().map(|line| parallel_entries(line)).collect();
    assert!(
        parallel.iter().all(|entries| entries.is_some_and(|n| n > 0)),
        "a boot's harts never ran at once: {parallel:?}"
    );
    let revocations: Vec<Option<u64>> = lines.iter().map(|line| revocations_served(line)).collect();
    assert!(
        revocations.iter().all(|served| served.is_some_and(|n| n > 0)),
        "a boot served no cross-hart write revocation: {revocations:?}"
    );
    assert_eq!(boot.status, Some(0), "QEMU's exit status is the board's");
}
