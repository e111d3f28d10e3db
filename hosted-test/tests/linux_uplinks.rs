//! Debian's Linux in a trapeze VM reaching stations outside the process through a network's uplink (issue 12's
//! hosted acceptance):
//!
//! - **UDP uplink to QEMU**: a `trapeze up` VM (10.0.0.1) and a `qemu-system-riscv64 -M virt` VM (10.0.0.2), both
//!   running the same kernel and initramfs, on one LAN joined by QEMU's `-netdev dgram` transport (one Ethernet
//!   frame per datagram on loopback). Each pings the other; both must get all their replies. QEMU missing fails
//!   the test, naming the package.
//!
//! Each VM's addresses come from its kernel command line (`netme=`, `netpeer=`); the initramfs's `/init` configures
//! `eth0`, pings the peer until it answers (it may still be booting), then `ping -c 3`, and prints `net: ...`
//! lines the test reads from the consoles.

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "common/linux_images.rs"]
mod linux_images;

/// Each step's limit: one Linux VM boots in well under this on trapeze and on QEMU, sharing two cores.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The tests boot Linux; one at a time, so neither starves the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `/init`'s network steps: the address and the peer from the command line, the link up, pings until the peer
/// answers, then three counted.
const SCRIPT: &str = r#"
mkdir -p /tmp
me=$(sed -n 's/.*netme=\([0-9.]*\).*/\1/p' /proc/cmdline)
peer=$(sed -n 's/.*netpeer=\([0-9.]*\).*/\1/p' /proc/cmdline)
echo "net: mac $(cat /sys/class/net/eth0/address)"
ip addr add $me/24 dev eth0
ip link set eth0 up
echo "net: eth0 up as $me"
tries=0
until ping -c 1 -W 1 $peer >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ $tries -ge 60 ] && break
done
echo "net: $peer answered after $tries misses"
ping -c 3 -i 0.5 $peer > /tmp/ping
echo "net: ping status $?"
grep 'packets transmitted' /tmp/ping
"#;

/// A directory of its own for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trapeze-linux-uplinks-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Debian's kernel and an initramfs with its virtio-net modules and [`SCRIPT`], written into `dir`.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let fetch = "run tools/fetch-debian-riscv64.sh target/guest-images (run-tests.sh does)";
    let kernel = linux_images::require(&linux_images::guest_images().join("Image"), fetch);
    let busybox = std::fs::read(linux_images::require(&linux_images::guest_images().join("busybox"), fetch)).unwrap();
    let modules = linux_images::modules();
    for needed in ["virtio_mmio.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"] {
        assert!(modules.iter().any(|(name, _)| name == needed), "no {needed} in target/guest-images/modules: {fetch}");
    }
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, linux_images::initramfs_with_modules_and_script(&busybox, &modules, SCRIPT))
        .expect("write the initramfs");
    (kernel, initramfs)
}

/// A `trapeze up` configuration: `network` (a `[[network]]` table named `lan0`) and one Linux VM `t` on it.
fn trapeze_config(dir: &Path, network: &str, kernel: &Path, initramfs: &Path, append: &str) -> String {
    let config = format!(
        r#"{network}
[[vm]]
name = "t"
bios = "builtin"
kernel = {kernel:?}
initrd = {initramfs:?}
memory = "256M"
append = "console=ttyS0 ipv6.disable=1 {append}"
nic = {{ network = "lan0", mac = "52:54:00:00:00:01" }}
"#,
        kernel = kernel.display().to_string(),
        initramfs = initramfs.display().to_string(),
    );
    let path = dir.join("vms.toml");
    std::fs::write(&path, config).expect("write the configuration");
    path.display().to_string()
}

/// Waits until `text` appears in what `output` gives, and answers all of it.
fn wait_for(what: &str, output: &dyn Fn() -> String, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let now = output();
        if now.contains(text) {
            return now;
        }
        assert!(Instant::now() < deadline, "`{text}` did not appear on {what} within {timeout:?}; it printed:\n{now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `qemu-system-riscv64` process whose console output is collected; killed when dropped.
struct Qemu {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Qemu {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new("qemu-system-riscv64")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-riscv64");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let sink = Arc::clone(&output);
            let mut pipe = pipe;
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(count @ 1..) = pipe.read(&mut buffer) {
                    sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..count]));
                }
            });
        }
        Self { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test, naming the package, when `qemu-system-riscv64` does not run.
fn require_qemu() {
    let found =
        Command::new("qemu-system-riscv64").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "qemu-system-riscv64 is missing: install QEMU with `apt-get install -y qemu-system-misc` (./run-tests.sh \
         installs it)"
    );
}

/// A free UDP port on loopback: bound and released (another process could take it meanwhile, which is unlikely).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|socket| socket.local_addr()).expect("bind a UDP port").port()
}

#[test]
fn a_trapeze_vm_and_a_qemu_vm_ping_each_other_over_the_udp_uplink() {
    require_qemu();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = scratch("qemu");
    let (kernel, initramfs) = images(&dir);
    let (trapeze_port, qemu_port) = (free_udp_port(), free_udp_port());
    assert_ne!(trapeze_port, qemu_port);
    let network = format!(
        "[[network]]\nname = \"lan0\"\nudp = {{ local = \"127.0.0.1:{trapeze_port}\", remote = \"127.0.0.1:{qemu_port}\" }}\n"
    );
    let config = trapeze_config(&dir, &network, &kernel, &initramfs, "netme=10.0.0.1 netpeer=10.0.0.2");
    let started = Instant::now();
    let console = common::Console::spawn_command("up", &[&config]);
    // QEMU's own OpenSBI and the same kernel and initramfs; its virtio-mmio NIC on the modern transport (QEMU
    // 7.2 makes it legacy unless told), one frame per datagram to trapeze's socket.
    let netdev = format!(
        "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={qemu_port},\
         remote.type=inet,remote.host=127.0.0.1,remote.port={trapeze_port}"
    );
    let qemu_args: Vec<String> = [
        "-M",
        "virt",
        "-m",
        "256M",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-global",
        "virtio-mmio.force-legacy=false",
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:00:00:00:02",
        "-append",
        "console=ttyS0 ipv6.disable=1 netme=10.0.0.2 netpeer=10.0.0.1",
    ]
    .into_iter()
    .map(String::from)
    .chain(["-netdev".into(), netdev])
    .chain(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initramfs.display().to_string()])
    .collect();
    let qemu = Qemu::spawn(&qemu_args);
    let trapeze_output = || console.output();
    let qemu_output = || qemu.output();
    // Both NICs found by Linux's virtio-net driver, both links configured.
    wait_for("trapeze's VM", &trapeze_output, "[t] net: mac 52:54:00:00:00:01", TIMEOUT);
    wait_for("QEMU's VM", &qemu_output, "net: mac 52:54:00:00:00:02", TIMEOUT);
    eprintln!("both VMs configured their NICs after {:?}", started.elapsed());
    // Each pinged the other: three echo requests out through its side of the uplink, three replies back.
    for (what, output, prefix) in
        [("trapeze's VM", &trapeze_output as &dyn Fn() -> String, "[t] "), ("QEMU's VM", &qemu_output, "")]
    {
        let status = wait_for(what, output, &format!("{prefix}net: ping status "), TIMEOUT);
        assert!(status.contains(&format!("{prefix}net: ping status 0")), "{what} got its replies:\n{status}");
        let summary = format!("{prefix}3 packets transmitted, 3 packets received, 0% packet loss");
        let output = wait_for(what, output, &summary, TIMEOUT);
        let steps = output.lines().filter(|line| line.contains("net: ") || line.contains("packets transmitted"));
        eprintln!("{what}:\n{}", steps.collect::<Vec<_>>().join("\n"));
    }
    eprintln!("both pinged each other after {:?}", started.elapsed());
    drop(qemu);
    drop(console);
    let _ = std::fs::remove_dir_all(&dir);
}
