//! Debian's Linux on trapeze's bridge (issue 12's hosted acceptance): three Linux VMs under `trapeze up`, each with
//! a virtio-net NIC on one network (`lan0`), Debian's `virtio_net` loaded from the kernel package's modules. VM
//! "a" (10.0.0.1) and VM "b" (10.0.0.2) each configure an address, ping the other and transfer a file with `nc`
//! (a sends, b receives and prints its size and MD5, which the test compares with the file a sent); VM "c", the
//! observer, has its NIC up in promiscuous mode and counts what it receives: a's and b's broadcasts (ARP) reach
//! it, none of their unicast frames do (the bridge learned both addresses from their first broadcasts).
//!
//! Each VM's role comes from its kernel command line (`role=a`): the initramfs's `/init` does the network steps
//! itself and prints `net: ...` lines, which the test reads from the multiplexed console; the observer's counters
//! are read at the end by typing into its shell (the multiplexer's `Ctrl-A 2`). IPv6 is off
//! (`ipv6.disable=1`), so the only frames a and b send to everyone are their ARP requests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
#[path = "common/linux_images.rs"]
mod linux_images;

/// Each step's limit: Linux boots in tens of seconds here, three VMs share one host thread.
const TIMEOUT: Duration = Duration::from_secs(300);

/// What `/init` does after loading the modules, by the role the kernel command line names. a and b: an address,
/// the link up, pings until the other answers (it may still be booting), then `ping -c 3`; a then generates the
/// file (`seq`) and sends it to b's port 5000 with `nc` (again until b listens), then sends two ARP requests for
/// an address nobody has (broadcasts the observer must hear); b listens with `nc` (its input the console, which
/// stays open: an `nc` whose input ends first would stop at the sender's end of file) and prints what it got. c:
/// its link up in promiscuous mode, no address (it answers nothing), and `/bin/observed` to print its counters.
const SCRIPT: &str = r#"
mkdir -p /tmp
role=$(sed -n 's/.*role=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "net: role $role mac $(cat /sys/class/net/eth0/address)"
case $role in
a) me=10.0.0.1; peer=10.0.0.2 ;;
b) me=10.0.0.2; peer=10.0.0.1 ;;
esac
if [ -n "$peer" ]; then
  ip addr add $me/24 dev eth0
  ip link set eth0 up
  echo "net: eth0 up as $me"
  tries=0
  until ping -c 1 -W 2 $peer >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ $tries -ge 100 ] && break
    sleep 1
  done
  ping -c 3 $peer > /tmp/ping
  echo "net: ping status $?"
  grep 'packets transmitted' /tmp/ping
fi
if [ "$role" = a ]; then
  seq 1 FILE_LINES > /tmp/f
  echo "net: sending $(wc -c < /tmp/f) bytes md5 $(md5sum < /tmp/f | cut -d ' ' -f 1)"
  tries=0
  until nc $peer 5000 < /tmp/f; do
    tries=$((tries + 1))
    [ $tries -ge 100 ] && break
    sleep 1
  done
  echo "net: sent after $tries refusals"
  arping -c 2 -I eth0 10.0.0.99 > /dev/null
  echo "net: a done, tx_packets $(cat /sys/class/net/eth0/statistics/tx_packets)"
fi
if [ "$role" = b ]; then
  nc -l -p 5000 > /tmp/f
  echo "net: received $(wc -c < /tmp/f) bytes md5 $(md5sum < /tmp/f | cut -d ' ' -f 1) last $(tail -n 1 /tmp/f)"
fi
if [ "$role" = c ]; then
  ip link set eth0 promisc on
  ip link set eth0 up
  s=/sys/class/net/eth0/statistics
  echo "echo net: observed \$(cat $s/rx_packets) packets \$(cat $s/rx_bytes) bytes" > /bin/observed
  chmod +x /bin/observed
  echo "net: observing, flags $(cat /sys/class/net/eth0/flags)"
fi
"#;

/// The lines of the file a sends (`seq 1 FILE_LINES`): about 230 kB, some 160 full-size frames.
const FILE_LINES: u32 = 40_000;

/// A directory of its own for this test.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trapeze-linux-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The rest of the first whole line (one its newline ended) of `output` that starts with `prefix`.
fn line_after(output: &str, prefix: &str) -> Option<String> {
    output
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .find_map(|line| line.strip_prefix(prefix))
        .map(|rest| rest.trim_end().to_string())
}

/// Waits until a whole line starting with `prefix` appears anywhere in the console's output, and gives its rest
/// and the output so far.
fn wait_line(console: &common::Console, prefix: &str, timeout: Duration) -> (String, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let output = console.output();
        if let Some(rest) = line_after(&output, prefix) {
            return (rest, output);
        }
        assert!(Instant::now() < deadline, "no line `{prefix}...` within {timeout:?}; console:\n{output}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `text` appears anywhere in the console's output (the VMs' lines interleave in no fixed order).
fn wait_for(console: &common::Console, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let output = console.output();
        if output.contains(text) {
            return output;
        }
        assert!(Instant::now() < deadline, "`{text}` did not appear within {timeout:?}; console:\n{output}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_linux_vms_on_one_bridge_ping_transfer_a_file_and_the_third_sees_no_unicast() {
    let fetch = "run tools/fetch-debian-riscv64.sh (run-tests.sh does)";
    let kernel = linux_images::require(&linux_images::guest_images().join("Image"), fetch);
    let busybox = std::fs::read(linux_images::require(&linux_images::guest_images().join("busybox"), fetch)).unwrap();
    let modules = linux_images::modules();
    for needed in ["virtio_mmio.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"] {
        assert!(modules.iter().any(|(name, _)| name == needed), "no {needed} in target/guest-images/modules: {fetch}");
    }
    let dir = scratch();
    let initramfs = dir.join("initramfs.cpio");
    let script = SCRIPT.replace("FILE_LINES", &FILE_LINES.to_string());
    std::fs::write(&initramfs, linux_images::initramfs_with_modules_and_script(&busybox, &modules, &script))
        .expect("write the initramfs");
    let mut config = String::from("[[network]]\nname = \"lan0\"\n");
    for (index, role) in ["a", "b", "c"].into_iter().enumerate() {
        config.push_str(&format!(
            r#"
[[vm]]
name = "{role}"
bios = "builtin"
kernel = {kernel:?}
initrd = {initramfs:?}
memory = "256M"
append = "console=ttyS0 ipv6.disable=1 role={role}"
nic = {{ network = "lan0", mac = "52:54:00:00:00:0{mac}" }}
"#,
            kernel = kernel.display().to_string(),
            initramfs = initramfs.display().to_string(),
            mac = index + 1,
        ));
    }
    let config_path = dir.join("vms.toml");
    std::fs::write(&config_path, &config).expect("write the configuration");
    let started = Instant::now();
    let mut console = common::Console::spawn_command("up", &[&config_path.display().to_string()]);
    let loaded: Vec<&str> = modules.iter().map(|(name, _)| name.trim_end_matches(".ko")).collect();
    for (index, role) in ["a", "b", "c"].into_iter().enumerate() {
        wait_for(&console, &format!("[{role}] trapeze-initramfs: modules loaded: {}", loaded.join(" ")), TIMEOUT);
        wait_for(&console, &format!("[{role}] net: role {role} mac 52:54:00:00:00:0{}", index + 1), TIMEOUT);
    }
    eprintln!("three Linux VMs booted in {:?}", started.elapsed());
    // IFF_UP | IFF_BROADCAST | IFF_PROMISC | IFF_MULTICAST.
    wait_for(&console, "[c] net: observing, flags 0x1103", TIMEOUT);
    // a and b reach each other: three pings each way, none lost.
    for role in ["a", "b"] {
        wait_for(&console, &format!("[{role}] net: ping status 0"), TIMEOUT);
        wait_for(&console, &format!("[{role}] 3 packets transmitted, 3 packets received, 0% packet loss"), TIMEOUT);
    }
    eprintln!("a and b pinged each other after {:?}", started.elapsed());
    // The file, whole: b got as many bytes as a sent, with the same MD5, ending with the last line.
    let expected_bytes: usize = (1..=FILE_LINES).map(|line| line.to_string().len() + 1).sum();
    let (received, output) = wait_line(&console, "[b] net: received ", TIMEOUT);
    let sent = line_after(&output, &format!("[a] net: sending {expected_bytes} bytes md5 ")).unwrap_or_default();
    assert_eq!(received, format!("{expected_bytes} bytes md5 {sent} last {FILE_LINES}"), "b got a's file:\n{output}");
    let (a_sent, output) = wait_line(&console, "[a] net: a done, tx_packets ", TIMEOUT);
    assert!(output.contains("[a] net: sent after "), "a's nc ended:\n{output}");
    let a_sent: u64 = a_sent.parse().expect("a's tx_packets");
    eprintln!("a sent b {expected_bytes} bytes ({a_sent} frames in all) after {:?}", started.elapsed());
    // The observer's counters, typed into its shell (the keyboard to VM 2 first).
    console.type_bytes(b"\x012");
    console.expect("console: input to [c]", TIMEOUT);
    console.command_within(TIMEOUT, "observed", "[c] net: observed ");
    let (observed, output) = wait_line(&console, "[c] net: observed ", TIMEOUT);
    let (packets, bytes) = observed.split_once(" packets ").expect("packets and bytes");
    let packets: u64 = packets.parse().expect("rx_packets");
    let bytes: u64 = bytes.trim_end_matches(" bytes").parse().expect("rx_bytes");
    eprintln!("c received {packets} frames, {bytes} bytes");
    // At least a's two ARP requests for 10.0.0.99 (broadcasts reach it), and every frame it got was 42 bytes
    // long: an ARP frame. A ping is 98 bytes, a TCP segment at least 54: none of a's and b's unicast frames
    // (hundreds) reached it.
    assert!(packets >= 2, "c heard a's broadcasts ({observed}):\n{output}");
    assert_eq!(bytes, 42 * packets, "c got only ARP frames, no unicast between a and b ({observed}):\n{output}");
    assert!(a_sent > 100 && packets < a_sent / 4, "c got a fraction of what a sent ({a_sent}): {observed}");
    let steps = output.lines().filter(|line| line.contains("] net: ") || line.contains("packets transmitted"));
    eprintln!("{}", steps.collect::<Vec<_>>().join("\n"));
    eprintln!("done after {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
