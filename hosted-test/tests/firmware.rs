//! Real firmware on the hosted runner: Debian's OpenSBI (generic platform) and U-Boot for `qemu-riscv64_smode`
//! boot unmodified, as on QEMU `virt`, to U-Boot's prompt; commands typed on the console are answered; U-Boot
//! finds and reads (and writes) the virtio disk.
//!
//! The packages `opensbi` and `u-boot-qemu` are installed by `run-tests.sh`; a missing one fails these tests
//! with the command to run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";
const FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn require(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(path.exists(), "{} is missing: install it with `apt-get install -y {package}`", path.display());
    path
}

/// A running `trapeze` whose console the test reads and types into.
struct Console {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
    /// Where the next `expect` starts looking.
    cursor: usize,
}

impl Console {
    fn boot(extra: &[&str]) -> Self {
        let bios = require(FW_JUMP, "opensbi");
        let kernel = require(UBOOT, "u-boot-qemu");
        Self::spawn(&[&["--bios", bios.to_str().unwrap(), "--kernel", kernel.to_str().unwrap()], extra].concat())
    }

    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze"))
            .arg("run")
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
    fn expect(&mut self, text: &str, timeout: Duration) {
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

    fn type_line(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Stops autoboot and waits for the prompt.
    fn reach_prompt(&mut self) {
        self.expect("Hit any key to stop autoboot", BOOT_TIMEOUT);
        self.type_line("");
        self.expect("=> ", COMMAND_TIMEOUT);
    }

    /// Types `command` and waits for its output to contain `answer`.
    fn command(&mut self, command: &str, answer: &str) {
        self.type_line(command);
        self.expect(command, COMMAND_TIMEOUT);
        self.expect(answer, COMMAND_TIMEOUT);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn opensbi_fw_jump_boots_uboot_which_answers_commands() {
    let mut console = Console::boot(&[]);
    console.expect("OpenSBI v", BOOT_TIMEOUT);
    console.expect("Platform Name             : riscv-virtio,qemu", COMMAND_TIMEOUT);
    console.expect("Domain0 Next Mode         : S-mode", COMMAND_TIMEOUT);
    console.expect("U-Boot 20", BOOT_TIMEOUT);
    console.expect("CPU:   rv64imafdc", COMMAND_TIMEOUT);
    console.reach_prompt();
    console.command("version", "U-Boot 20");
    console.command("printenv arch", "arch=riscv");
    console.command("printenv board_name", "board_name=qemu-riscv");
}

#[test]
fn opensbi_fw_dynamic_reports_both_harts_with_smp_2() {
    let bios = require(FW_DYNAMIC, "opensbi");
    let kernel = require(UBOOT, "u-boot-qemu");
    let mut console =
        Console::spawn(&["-smp", "2", "--bios", bios.to_str().unwrap(), "--kernel", kernel.to_str().unwrap()]);
    console.expect("Platform HART Count       : 2", BOOT_TIMEOUT);
    console.expect("Domain0 HARTs             : 0*,1*", COMMAND_TIMEOUT);
    console.reach_prompt();
    console.command("version", "U-Boot 20");
}

/// A 1 MiB disk image with a known pattern in sector 0 and in sector 5.
fn disk_image(dir: &Path) -> PathBuf {
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(b"trapeze-sector-0");
    image[5 * 512..5 * 512 + 16].copy_from_slice(b"trapeze-sector-5");
    let path = dir.join(format!("disk-{}.img", std::process::id()));
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn uboot_finds_reads_and_writes_the_virtio_disk() {
    let dir = std::env::temp_dir();
    let disk = disk_image(&dir);
    let mut console = Console::boot(&["--disk", disk.to_str().unwrap()]);
    console.reach_prompt();
    console.command("virtio scan; virtio info", "Capacity: 1.0 MB = 0.0 GB (2048 x 512)");
    console.command("virtio read 0x84000000 5 1", "1 blocks read: OK");
    console.command("md.b 0x84000000 0x10", "74 72 61 70 65 7a 65 2d 73 65 63 74 6f 72 2d 35");
    console.command("virtio read 0x84000000 0 1", "1 blocks read: OK");
    console.command("md.b 0x84000000 0x10", "trapeze-sector-0");
    // A write reaches the image file before U-Boot is told it is done.
    console.command("mw.b 0x84100000 0x5a 0x200; virtio write 0x84100000 3 1", "1 blocks written: OK");
    let image = std::fs::read(&disk).unwrap();
    assert!(image[3 * 512..4 * 512].iter().all(|&byte| byte == 0x5a), "sector 3 holds what U-Boot wrote");
    assert_eq!(&image[..16], b"trapeze-sector-0", "other sectors are untouched");
    drop(console);
    let _ = std::fs::remove_file(disk);
}
