//! `trapeze up FILE`: several VMs from one TOML configuration, run together on this thread under the core's
//! [`Hypervisor`], their consoles multiplexed onto this process's stdin/stdout ([`ConsoleMux`]) and their disks
//! carved out of shared image files ([`DiskLayout`]). Each VM boots an M-mode image, or firmware and kernels
//! (`bios`, `kernel`, `initrd`, `append`), chosen by the same [`boot_plan`] and built by the same
//! [`build_machine_on`] as `trapeze run`'s.
//!
//! The configuration is checked whole before anything runs: a missing or unreadable file, a syntax error, an
//! unknown key, a bad value, a duplicate name or partitions that overlap are refused with a message naming the
//! problem (exit status 2). Paths in the file are relative to the file's directory. The format is described
//! in the README ("Several VMs"); `examples/two-vms.toml` is a complete example.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;
use trapeze::dev::block::{DiskLayout, Extent, LayoutError, LbaMap, Partition};
use trapeze::dev::console_mux::{ConsoleMux, MuxPort, TAG_MAX};
use trapeze::exec::interp::Interpreter;
use trapeze::exec::Engine;
use trapeze::mem::code_watch_words;
use trapeze::mem::mmu::Memory;
use trapeze::net::{Bridge, BridgePort, PortId};

use crate::uplink::{TapUplink, UdpUplink, Uplink};
use trapeze::trap::Exit;
use trapeze::vm::virt::{Backends, VirtDevices};
use trapeze::vm::{Clock, Hypervisor, RunOutcome, SliceOutcome, MAX_HARTS};

use crate::console::{HostClock, Stdio};
use crate::disk::FileDisk;
use crate::host_serial::{HostSerial, VmSerial};
use crate::printer::{PrinterSink, Spools, Throttle};
use crate::{
    boot_plan, build_machine_on, parse_memory_size, BootPlan, BootSpelling, EngineChoice, HostedThreaded, Image,
    ImageSource, RunArgs, BUILTIN_FIRMWARE,
};
use trapeze::dev::printer::Printer;

/// Most VMs one configuration may describe.
pub const MAX_VMS: usize = 8;
/// Most extents of one VM's partition.
pub const MAX_EXTENTS: usize = 8;
/// A VM's turn, in guest instructions, unless the configuration sets `quantum`.
const DEFAULT_QUANTUM: u64 = 100_000;

/// The keys that choose a VM's images, as messages name them.
const UP_SPELLING: BootSpelling = BootSpelling { image: "image", bios: "bios", kernel: "kernel", initrd: "initrd" };

/// Guests built into the binary, named by `image = "bundled:NAME"`.
const BUNDLED: [(&str, &[u8]); 5] = [
    ("demo", crate::DEMO_GUEST),
    ("hello", include_bytes!(env!("TRAPEZE_GUEST_HELLO"))),
    ("disk-pattern", include_bytes!(env!("TRAPEZE_GUEST_DISK_PATTERN"))),
    ("print-jobs", include_bytes!(env!("TRAPEZE_GUEST_PRINT_JOBS"))),
    ("net-ping", include_bytes!(env!("TRAPEZE_GUEST_NET_PING"))),
];

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// The configuration file (TOML) describing the VMs.
    pub config: PathBuf,
}

/// The whole file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A VM's turn in guest instructions.
    quantum: Option<u64>,
    /// Disk images to create (zero-filled) when missing, by path.
    #[serde(default)]
    disks: BTreeMap<String, DiskFile>,
    #[serde(default)]
    vm: Vec<VmConfig>,
    /// The printer the VMs with `printer = true` share.
    printer: Option<PrinterConfig>,
    /// Virtual LANs, each a bridge the VMs' NICs attach to.
    #[serde(default)]
    network: Vec<NetworkConfig>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PrinterConfig {
    /// The file jobs are printed to (relative to the configuration), or `-` for stdout (the default).
    output: Option<String>,
    /// At most this many bytes printed per hypervisor turn: a slow printer (default: as fast as the sink).
    throttle: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NetworkConfig {
    name: String,
    /// An uplink: QEMU's UDP transport (`-netdev dgram`), one frame per datagram.
    udp: Option<UdpConfig>,
    /// An uplink: the Linux TAP device of this name (`/dev/net/tun`), one frame per read or write.
    tap: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct UdpConfig {
    /// `host:port` this process receives on.
    local: String,
    /// `host:port` frames are sent to.
    remote: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NicConfig {
    /// The `[[network]]` the NIC is on.
    network: String,
    /// `52:54:00:12:34:56` style; by default `52:54:00:12:34:NN`, NN the VM's position from 1.
    mac: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DiskFile {
    /// Its size, as `-m` takes it (`1M`, `512K`); a whole number of sectors.
    size: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct VmConfig {
    name: String,
    /// An ELF or raw image run in M-mode (`trapeze run IMAGE`), or `bundled:NAME`.
    image: Option<String>,
    /// Firmware started in M-mode (as `--bios FILE`), or `builtin`: the VMM's own SBI, the kernel in S-mode.
    bios: Option<String>,
    /// The next stage after the firmware (as `--kernel`); without `bios`, like `image`.
    kernel: Option<String>,
    /// An initramfs (as `--initrd`).
    initrd: Option<String>,
    /// Guest RAM, e.g. `64M` (default 128M).
    memory: Option<String>,
    harts: Option<u64>,
    /// `dbt` (x86-64 hosts only, and their default), `threaded` (the default elsewhere) or `interp`.
    engine: Option<String>,
    /// The kernel command line (`/chosen/bootargs`).
    append: Option<String>,
    /// Guest time counts instructions (`--icount SHIFT`).
    icount: Option<u32>,
    /// The VM stops after this many instructions.
    max_insns: Option<u64>,
    /// The tag before each of the VM's console lines (default `[NAME] `).
    console: Option<String>,
    /// A host file or character device the VM's UART is given instead of the console (`host_serial`).
    serial: Option<String>,
    disk: Option<DiskConfig>,
    /// The VM gets the spooled printer (`trapeze,spool-printer`), shared with the other VMs that have it.
    #[serde(default)]
    printer: bool,
    /// A virtio-net NIC on a network.
    nic: Option<NicConfig>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DiskConfig {
    /// The image file this VM's disk is a partition of (several VMs may name the same one).
    image: String,
    /// `[start sector, sectors]` pairs, in the order the VM sees them from its sector 0.
    extents: Vec<[u64; 2]>,
}

/// A VM's engine: the translator or the threaded engine (each VM its own code cache: a cache is keyed by RAM
/// offset), or the interpreter.
enum VmEngine {
    Interp(Interpreter),
    Threaded(Box<HostedThreaded>),
    #[cfg(target_arch = "x86_64")]
    Dbt(Box<crate::jit::HostedDbt>),
}

impl Engine for VmEngine {
    fn run(&mut self, hart: &mut trapeze::hart::Hart, memory: &mut Memory, budget: u64) -> Exit {
        match self {
            VmEngine::Interp(engine) => engine.run(hart, memory, budget),
            VmEngine::Threaded(engine) => engine.run(hart, memory, budget),
            #[cfg(target_arch = "x86_64")]
            VmEngine::Dbt(engine) => engine.run(hart, memory, budget),
        }
    }
}

type Mux = ConsoleMux<Stdio, MAX_VMS>;
type Port<'m> = MuxPort<'m, Stdio, MAX_VMS>;
type VmDisk<'d> = Partition<'d, FileDisk, MAX_EXTENTS>;

/// Ports of a network's bridge: one per VM and one for an uplink.
const BRIDGE_PORTS: usize = MAX_VMS + 1;
/// Frames each bridge port queues each way.
const BRIDGE_DEPTH: usize = 32;
/// Addresses a bridge learns.
const BRIDGE_TABLE: usize = 64;
/// How long a learned address lasts without being seen: 300 s, as Linux bridges default to.
const BRIDGE_AGEING: u64 = 300 * trapeze::vm::TIMEBASE_HZ;
type LanBridge = Bridge<BRIDGE_PORTS, BRIDGE_DEPTH, BRIDGE_TABLE>;
type VmNic<'b> = BridgePort<'b, BRIDGE_PORTS, BRIDGE_DEPTH, BRIDGE_TABLE>;

/// The virtio backends of a VM of `trapeze up`: a partition of a disk image, a port of a bridge.
struct UpBackends<'a>(PhantomData<&'a ()>);

impl<'a> Backends for UpBackends<'a> {
    type Block = VmDisk<'a>;
    type Net = VmNic<'a>;
}

/// A VM as the file describes it, checked, with its images read.
struct Planned {
    name: String,
    args: RunArgs,
    plan: BootPlan,
    tag: String,
    /// Which disk file (index into the opened files) and the VM's map on it.
    disk: Option<(usize, LbaMap<MAX_EXTENTS>)>,
    /// The host file or device its UART is given, opened.
    serial: Option<HostSerial>,
    /// Which network (index into `[[network]]`) and the NIC's MAC.
    nic: Option<(usize, [u8; 6])>,
}

/// `trapeze up FILE`.
pub fn run(args: &UpArgs) -> ExitCode {
    match up(&args.config) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("trapeze: {message}");
            ExitCode::from(2)
        }
    }
}

/// Reads and checks the configuration at `path` and runs its VMs to the end.
fn up(path: &Path) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let at = |name: &str| base.join(name);
    if config.vm.is_empty() {
        return Err(format!("{}: no VM described (add a [[vm]] table)", path.display()));
    }
    if config.vm.len() > MAX_VMS {
        return Err(format!("{}: {} VMs described, at most {MAX_VMS} are supported", path.display(), config.vm.len()));
    }
    let quantum = config.quantum.unwrap_or(DEFAULT_QUANTUM);
    if quantum == 0 {
        return Err(format!("{}: quantum must be at least 1 instruction", path.display()));
    }
    for (name, disk) in &config.disks {
        create_disk(&at(name), &disk.size).map_err(|e| format!("{}: disk {name:?}: {e}", path.display()))?;
    }

    for (index, network) in config.network.iter().enumerate() {
        if network.name.is_empty() || config.network[..index].iter().any(|other| other.name == network.name) {
            return Err(format!("{}: every network needs a name of its own", path.display()));
        }
        let problem = |what: String| format!("{}: network {:?}: {what}", path.display(), network.name);
        // One uplink port per bridge: two uplinks would also make a loop the bridge cannot see.
        if network.udp.is_some() && network.tap.is_some() {
            return Err(problem("one uplink per network: `udp` or `tap`, not both".into()));
        }
        if let Some(tap) = &network.tap {
            if !crate::uplink::valid_tap_name(tap) {
                return Err(problem(format!(
                    "tap {tap:?} is not an interface name (1 to {} printable characters, no '/' or ':')",
                    crate::uplink::TAP_NAME_MAX
                )));
            }
            if config.network[..index].iter().any(|other| other.tap.as_ref() == Some(tap)) {
                return Err(problem(format!("tap {tap:?} is already another network's uplink")));
            }
        }
    }

    // Every VM checked, every image read and every disk file opened before anything runs.
    let mut disk_paths: Vec<PathBuf> = Vec::new();
    let mut disk_files: Vec<RefCell<FileDisk>> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    for vm in &config.vm {
        let problem = |what: String| format!("{}: vm {:?}: {what}", path.display(), vm.name);
        if vm.name.is_empty() || planned.iter().any(|other| other.name == vm.name) {
            return Err(problem("every VM needs a name of its own".into()));
        }
        let mut args = crate::default_run_args();
        if let Some(memory) = &vm.memory {
            args.memory = parse_memory_size(memory).map_err(|e| problem(format!("memory: {e}")))?;
        }
        let harts = vm.harts.unwrap_or(1);
        args.smp = u8::try_from(harts)
            .ok()
            .filter(|&h| h >= 1 && usize::from(h) <= MAX_HARTS)
            .ok_or_else(|| problem(format!("harts = {harts}: between 1 and {MAX_HARTS}")))?;
        args.engine = match vm.engine.as_deref() {
            None => EngineChoice::default(),
            Some("threaded") => EngineChoice::Threaded,
            Some("interp") => EngineChoice::Interp,
            #[cfg(target_arch = "x86_64")]
            Some("dbt") => EngineChoice::Dbt,
            Some(other) => {
                return Err(problem(format!("engine = {other:?}: use \"threaded\", \"interp\" or (x86-64) \"dbt\"")))
            }
        };
        if let Some(shift) = vm.icount {
            if shift > 10 {
                return Err(problem(format!("icount = {shift}: between 0 and 10")));
            }
            args.icount = Some(shift);
        }
        args.append = vm.append.clone();
        args.max_insns = vm.max_insns;
        args.printer = vm.printer;
        let tag = vm.console.clone().unwrap_or_else(|| format!("[{}] ", vm.name));
        if tag.len() > TAG_MAX {
            return Err(problem(format!("console = {tag:?}: a tag has at most {TAG_MAX} bytes")));
        }
        // Paths relative to the file; `bios = "builtin"` is no path.
        let image_file;
        let image = match vm.image.as_deref() {
            None => None,
            Some(image) => match image.strip_prefix("bundled:") {
                Some(name) => match BUNDLED.iter().find(|(bundled, _)| *bundled == name) {
                    Some((_, bytes)) => Some(ImageSource::Loaded(Image { name: image.into(), bytes: bytes.to_vec() })),
                    None => {
                        let names: Vec<&str> = BUNDLED.iter().map(|(name, _)| *name).collect();
                        return Err(problem(format!("no bundled guest {name:?} (there are: {})", names.join(", "))));
                    }
                },
                None => {
                    image_file = at(image);
                    Some(ImageSource::File(&image_file))
                }
            },
        };
        let bios = vm.bios.as_deref().map(|bios| if bios == BUILTIN_FIRMWARE { PathBuf::from(bios) } else { at(bios) });
        let kernel = vm.kernel.as_deref().map(at);
        let initrd = vm.initrd.as_deref().map(at);
        let plan = boot_plan(bios.as_deref(), kernel.as_deref(), image, initrd.as_deref(), None, &UP_SPELLING)
            .map_err(problem)?;
        let disk = match &vm.disk {
            None => None,
            Some(disk) => {
                let extents: Vec<Extent> =
                    disk.extents.iter().map(|&[start, sectors]| Extent::new(start, sectors)).collect();
                let map = LbaMap::new(&extents).map_err(|e| problem(format!("disk extents: {}", layout_error(&e))))?;
                let file = at(&disk.image);
                let canonical =
                    file.canonicalize().map_err(|e| problem(format!("disk image {}: {e}", file.display())))?;
                let index = match disk_paths.iter().position(|known| *known == canonical) {
                    Some(index) => index,
                    None => {
                        disk_files.push(RefCell::new(FileDisk::open(&canonical).map_err(problem)?));
                        disk_paths.push(canonical);
                        disk_paths.len() - 1
                    }
                };
                Some((index, map))
            }
        };
        let serial = match &vm.serial {
            None => None,
            Some(file) => {
                let serial = HostSerial::open(&at(file)).map_err(problem)?;
                let owner = planned.iter().find(|other| other.serial.as_ref().is_some_and(|s| s.path == serial.path));
                if let Some(owner) = owner {
                    return Err(problem(format!("serial {file:?}: already given to vm {:?}", owner.name)));
                }
                Some(serial)
            }
        };
        let nic = match &vm.nic {
            None => None,
            Some(nic) => {
                let network = config.network.iter().position(|n| n.name == nic.network);
                let network = network.ok_or_else(|| problem(format!("nic: no [[network]] named {:?}", nic.network)))?;
                let mac = match &nic.mac {
                    Some(text) => parse_mac(text).ok_or_else(|| {
                        problem(format!("nic: mac = {text:?}: six hex bytes as in \"52:54:00:12:34:56\", unicast"))
                    })?,
                    None => [0x52, 0x54, 0x00, 0x12, 0x34, planned.len() as u8 + 1],
                };
                if planned.iter().any(|other| other.nic.is_some_and(|(_, other)| other == mac)) {
                    return Err(problem(format!("nic: mac {text} is another VM's", text = format_mac(&mac))));
                }
                Some((network, mac))
            }
        };
        planned.push(Planned { name: vm.name.clone(), args, plan, tag, disk, serial, nic });
    }

    // One layout per image file: overlapping partitions, or one past the file's end, are refused here.
    let mut layouts: Vec<DiskLayout<'_, FileDisk, MAX_VMS, MAX_EXTENTS>> = Vec::new();
    for (index, file) in disk_files.iter().enumerate() {
        let mut layout = DiskLayout::new(file).map_err(|e| layout_error(&e))?;
        let users: Vec<&Planned> = planned.iter().filter(|vm| vm.disk.as_ref().is_some_and(|d| d.0 == index)).collect();
        for vm in &users {
            let Some((_, map)) = &vm.disk else { continue };
            layout.add(map.clone()).map_err(|e| {
                let detail = match e {
                    LayoutError::Overlap { extent, other_vm, other_extent, .. } => format!(
                        "extent {extent} overlaps extent {other_extent} of vm {:?}",
                        users.get(other_vm).map_or("?", |other| other.name.as_str())
                    ),
                    other => layout_error(&other),
                };
                format!("{}: vm {:?}: disk {}: {detail}", path.display(), vm.name, disk_paths[index].display())
            })?;
        }
        layouts.push(layout);
    }
    // Hand each VM its partition, in the order the VMs were added to their layout.
    let mut partitions: Vec<std::vec::IntoIter<VmDisk<'_>>> = layouts
        .into_iter()
        .map(|layout| layout.into_partitions().into_iter().collect::<Vec<_>>().into_iter())
        .collect();
    let mut disks: Vec<Option<VmDisk<'_>>> = planned
        .iter()
        .map(|vm| vm.disk.as_ref().and_then(|(index, _)| partitions.get_mut(*index).and_then(|p| p.next())))
        .collect();

    let mux: RefCell<Mux> = RefCell::new(ConsoleMux::new(Stdio::new()));
    {
        let mut mux = mux.borrow_mut();
        for port in 0..MAX_VMS {
            if port < planned.len() && planned[port].serial.is_none() {
                mux.set_tag(port, &planned[port].tag);
            } else {
                mux.detach(port);
            }
        }
    }
    let mut backings: Vec<Vec<u8>> = planned.iter().map(|vm| vec![0u8; vm.args.memory as usize]).collect();
    let mut code_pages: Vec<Vec<u64>> = planned.iter().map(|vm| vec![0u64; code_watch_words(vm.args.memory)]).collect();
    let mut clocks: Vec<HostClock> = planned.iter().map(|_| HostClock::new()).collect();
    let mut htif_ports: Vec<Port<'_>> = (0..planned.len()).map(|port| ConsoleMux::port(&mux, port)).collect();
    let mut serials: Vec<Option<HostSerial>> = planned.iter_mut().map(|vm| vm.serial.take()).collect();
    // The spool set outlives the VMs whose printers hold it; the sink is the one physical printer.
    let spools: Box<RefCell<Spools>> = Box::new(RefCell::new(Spools::new()));
    let mut sink = match &config.printer {
        Some(printer) if printer.output.as_deref() != Some("-") => {
            Some(PrinterSink::open(printer.output.as_deref().map(at).as_deref())?)
        }
        _ => planned.iter().any(|vm| vm.args.printer).then_some(PrinterSink::Stdout),
    };
    let throttle = config.printer.as_ref().and_then(|printer| printer.throttle).unwrap_or(usize::MAX);
    if throttle == 0 {
        return Err(format!("{}: printer throttle must be at least 1 byte", path.display()));
    }
    // One bridge per network, owned here; each VM's NIC holds a port of it.
    let bridges: Vec<RefCell<LanBridge>> =
        config.network.iter().map(|_| RefCell::new(LanBridge::new(BRIDGE_AGEING))).collect();
    let mut nic_ports: Vec<Option<(usize, PortId)>> = vec![None; planned.len()];
    let mut uplinks: Vec<Option<Uplink>> = Vec::new();
    for (network, bridge) in config.network.iter().zip(&bridges) {
        let problem = |e: String| format!("{}: network {:?}: {e}", path.display(), network.name);
        let port = || bridge.borrow_mut().attach().ok_or_else(|| problem("a bridge without ports".into()));
        uplinks.push(match (&network.udp, &network.tap) {
            (Some(udp), _) => Some(Uplink::Udp(UdpUplink::open(&udp.local, &udp.remote, port()?).map_err(problem)?)),
            (None, Some(tap)) => Some(Uplink::Tap(TapUplink::open(tap, port()?).map_err(problem)?)),
            (None, None) => None,
        });
    }
    // While an uplink may deliver, the loop looks at it at least every millisecond, even with every VM idle.
    let idle_cap = if uplinks.iter().any(Option::is_some) { trapeze::vm::TIMEBASE_HZ / 1000 } else { u64::MAX };
    let mut hypervisor =
        Box::new(Hypervisor::<'_, VirtDevices<'_, VmSerial<Port<'_>>, UpBackends<'_>>, VmEngine, MAX_VMS>::new(
            quantum,
        ));
    let storage = backings.iter_mut().zip(&mut code_pages).zip(&mut clocks).zip(&mut htif_ports).zip(&mut disks);
    for (index, ((((backing, pages), clock), htif), disk)) in storage.enumerate() {
        let vm = &planned[index];
        let port = match serials[index].take() {
            Some(serial) => VmSerial::Host(serial),
            None => VmSerial::Console(ConsoleMux::port(&mux, index)),
        };
        let mut devices = VirtDevices::new(port);
        if let Some(disk) = disk.take() {
            devices.attach_disk(disk);
        }
        if let Some((network, mac)) = vm.nic {
            let nic = bridges.get(network).and_then(VmNic::attach);
            let nic = nic.ok_or_else(|| format!("vm {:?}: its network has no free port", vm.name))?;
            nic_ports[index] = Some((network, nic.port()));
            devices.attach_net(nic, mac).map_err(|e| format!("vm {:?}: no virtio slot for its NIC: {e:?}", vm.name))?;
        }
        let mut machine = build_machine_on(&vm.args, &vm.plan, backing, pages, devices, clock, htif)
            .map_err(|e| format!("vm {:?}: {e}", vm.name))?;
        if vm.args.printer {
            spools.borrow_mut().set_name(index, &vm.name);
            machine.devices.printer = Some(Printer::new(&*spools, index));
        }
        let engine = match vm.args.engine {
            EngineChoice::Interp => VmEngine::Interp(Interpreter),
            EngineChoice::Threaded => VmEngine::Threaded(Box::new(HostedThreaded::new())),
            #[cfg(target_arch = "x86_64")]
            EngineChoice::Dbt => VmEngine::Dbt(crate::jit::hosted_dbt().map_err(|e| format!("vm {:?}: {e}", vm.name))?),
        };
        hypervisor.add(machine, engine, vm.args.max_insns).map_err(|e| format!("vm {:?}: {e:?}", vm.name))?;
    }

    let mut host = HostClock::new();
    let mut status: Option<u8> = None;
    loop {
        pump(&spools, &mut sink, &mux, throttle);
        pump_networks(&bridges, &uplinks, &nic_ports, host.now(), |vm| hypervisor.wake(vm));
        match hypervisor.run_slice(host.now()) {
            SliceOutcome::Ran { stopped: None, .. } => {}
            SliceOutcome::Ran { vm, stopped: Some(outcome) } => {
                let name = &planned[vm].name;
                let (code, what) = match outcome {
                    RunOutcome::PowerOff { code: 0 } => (0, "powered off".to_string()),
                    RunOutcome::PowerOff { code } => (
                        u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1),
                        format!("reported failure (code {code})"),
                    ),
                    RunOutcome::InstructionLimit => {
                        (crate::EXIT_INSTRUCTION_LIMIT, "reached its instruction limit".into())
                    }
                    RunOutcome::Reset => (1, "asked for a reset, which `trapeze up` does not do: stopped".into()),
                    RunOutcome::DebugStop { .. } => (2, "stopped for a debugger, but none is attached".into()),
                };
                let mut mux = mux.borrow_mut();
                mux.detach(vm);
                mux.notice(&format!("trapeze: vm {name:?} {what}"));
                if code != 0 {
                    status.get_or_insert(code);
                }
            }
            SliceOutcome::Idle { until } => {
                let mut console = mux.borrow_mut();
                console.flush_all();
                // Typed input goes to its port now (so the wait below is not cut short by it again), and the
                // focused VM gets its turn at once rather than at its next deadline. Only for input that has
                // just arrived: a guest that leaves its input unread must not keep the host busy.
                let focus = console.focus();
                let had_input = console.has_input(focus);
                console.poll_input();
                let typed = !had_input && console.has_input(focus);
                drop(console);
                if typed {
                    hypervisor.wake(focus);
                    continue;
                }
                let now = host.now();
                host.idle(Some(until.saturating_sub(now).min(idle_cap)));
            }
            SliceOutcome::Stopped => break,
        }
    }
    // The VMs are done; their jobs still print, whole.
    while pump(&spools, &mut sink, &mux, throttle) {}
    mux.borrow_mut().flush_all();
    crate::console::flush_stdout();
    Ok(status.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// Prints what the spools hold, at most `throttle` bytes. A failing printer is reported once and dropped (its
/// jobs stay unprinted).
/// Answers whether anything was printed.
fn pump(spools: &RefCell<Spools>, sink: &mut Option<PrinterSink>, mux: &RefCell<Mux>, throttle: usize) -> bool {
    let Some(printer) = sink else { return false };
    let mut spools = spools.borrow_mut();
    if spools.is_idle() {
        return false;
    }
    if matches!(printer, PrinterSink::Stdout) {
        // Whole console lines first, so a job never lands inside one.
        mux.borrow_mut().flush_all();
    }
    let mut throttled = Throttle { sink: printer, left: throttle };
    let result = spools.pump(&mut throttled).and_then(|written| embedded_io::Write::flush(printer).map(|()| written));
    match result {
        Ok(written) => written > 0,
        Err(error) => {
            mux.borrow_mut().notice(&format!("trapeze: the printer failed ({error:?}); nothing more is printed"));
            *sink = None;
            false
        }
    }
}

/// Switches the frames the VMs and uplinks sent since the last call, on every network (the uplink's arrivals in
/// first, its frames out after), and calls `wake` with each VM that got a frame (an idle VM must run
/// to take it: its NIC polls the bridge port when its devices are updated).
fn pump_networks(
    bridges: &[RefCell<LanBridge>],
    uplinks: &[Option<Uplink>],
    nic_ports: &[Option<(usize, PortId)>],
    now: u64,
    mut wake: impl FnMut(usize),
) {
    let queued = |&(network, port): &(usize, PortId)| bridges.get(network).map_or(0, |b| b.borrow().stats(port).queued);
    let before: Vec<u64> = nic_ports.iter().map(|nic| nic.as_ref().map_or(0, queued)).collect();
    for (index, bridge) in bridges.iter().enumerate() {
        let mut bridge = bridge.borrow_mut();
        let uplink = uplinks.get(index).and_then(Option::as_ref);
        if let Some(uplink) = uplink {
            uplink.receive(&mut bridge);
        }
        bridge.pump(now, BRIDGE_PORTS * BRIDGE_DEPTH);
        if let Some(uplink) = uplink {
            uplink.transmit(&mut bridge);
        }
    }
    for (vm, nic) in nic_ports.iter().enumerate() {
        if nic.as_ref().is_some_and(|nic| queued(nic) != before[vm]) {
            wake(vm);
        }
    }
}

/// A MAC address as `52:54:00:12:34:56` (or with `-`): six hex bytes, a unicast address other than 0.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().filter(|part| part.len() == 2)?;
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    let unicast = mac[0] & 1 == 0 && mac != [0; 6];
    (parts.next().is_none() && unicast).then_some(mac)
}

/// `mac` as `52:54:00:12:34:56`.
fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":")
}

/// Creates the disk image `path` of `size`, zero-filled, unless it exists.
fn create_disk(path: &Path, size: &str) -> Result<(), String> {
    let bytes = parse_memory_size(size).map_err(|e| format!("size: {e}"))?;
    if bytes % 512 != 0 {
        return Err(format!("size {size}: not a whole number of 512-byte sectors"));
    }
    if path.exists() {
        return Ok(());
    }
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(bytes).map_err(|e| format!("cannot size {}: {e}", path.display()))
}

/// What a layout error means, in words.
fn layout_error(error: &LayoutError) -> String {
    match *error {
        LayoutError::NoExtents => "no extents: a disk of no sectors".into(),
        LayoutError::TooManyExtents => format!("more than {MAX_EXTENTS} extents"),
        LayoutError::EmptyExtent { extent } => format!("extent {extent} has no sectors"),
        LayoutError::ExtentOverflow { extent } => format!("extent {extent} ends past the largest sector number"),
        LayoutError::TooLarge => "the extents add up to more sectors than can be counted".into(),
        LayoutError::PastEnd { extent, .. } => format!("extent {extent} runs past the end of the image"),
        LayoutError::Overlap { extent, other_extent, .. } => {
            format!("extent {extent} overlaps extent {other_extent}")
        }
        LayoutError::TooManyDisks => format!("more than {MAX_VMS} partitions of one image"),
        LayoutError::DiskBusy => "the image is in use".into(),
    }
}
