//! `trapeze analyze`: prints the sensitivity table of a native VMM configuration (`trapeze::patch::sensitivity`),
//! its critical set and the Popek–Goldberg verdict. It only reads the core's table; it classifies nothing itself.

use std::fmt::Write as _;
use std::process::ExitCode;

use trapeze::hart::Privilege;
use trapeze::isa::csr;
use trapeze::patch::sensitivity::{
    classify_csr, critical_set, csr_name, CbieMode, Classification, CriticalSet, CsrAccessKind, EnvcfgExposure,
    InstructionClass, VmmConfig, CSR_COUNT, NAMED_CSRS,
};

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Let the guest read cycle, time and instret without trapping (the real mcounteren and scounteren CY, TM,
    /// IR bits set). The hardware performance counters are never delegated. Default: counters trap (the board).
    #[arg(long)]
    delegate_counters: bool,
    /// Each VM has its own time, cycle and instret, which stand still while it is descheduled (the board's
    /// default).
    #[arg(long, overrides_with = "real_time")]
    virtual_time: bool,
    /// VMs see the machine's own time, cycle and instret.
    #[arg(long, overrides_with = "virtual_time")]
    real_time: bool,
    /// The privilege the guest code believes it runs at (it really runs in U-mode).
    #[arg(long, value_enum, default_value_t = VirtualPrivilege::S)]
    virtual_privilege: VirtualPrivilege,
    /// menvcfg features handed to the guest, comma-separated (default: none, menvcfg = 0 as on the board).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FEATURES")]
    envcfg: Vec<EnvcfgFeature>,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum VirtualPrivilege {
    M,
    S,
    U,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum EnvcfgFeature {
    /// FIOM: fences on I/O also order memory.
    Fiom,
    /// CBIE = 01: cbo.inval executes as a flush.
    CbieFlush,
    /// CBIE = 11: cbo.inval invalidates.
    CbieInval,
    /// CBCFE: cbo.clean and cbo.flush.
    Cbcfe,
    /// CBZE: cbo.zero.
    Cbze,
}

impl AnalyzeArgs {
    fn config(&self) -> VmmConfig {
        let mut envcfg = EnvcfgExposure::NONE;
        for feature in &self.envcfg {
            match feature {
                EnvcfgFeature::Fiom => envcfg.fiom = true,
                EnvcfgFeature::CbieFlush => envcfg.cbie = CbieMode::Flush,
                EnvcfgFeature::CbieInval => envcfg.cbie = CbieMode::Invalidate,
                EnvcfgFeature::Cbcfe => envcfg.cbcfe = true,
                EnvcfgFeature::Cbze => envcfg.cbze = true,
            }
        }
        VmmConfig {
            delegate_counters: self.delegate_counters,
            virtual_time: !self.real_time,
            envcfg,
            virtual_privilege: match self.virtual_privilege {
                VirtualPrivilege::M => Privilege::Machine,
                VirtualPrivilege::S => Privilege::Supervisor,
                VirtualPrivilege::U => Privilege::User,
            },
        }
    }
}

pub fn run(args: &AnalyzeArgs) -> ExitCode {
    print!("{}", report(&args.config()));
    ExitCode::SUCCESS
}

fn mode_name(privilege: Privilege) -> &'static str {
    match privilege {
        Privilege::Machine => "M",
        Privilege::Supervisor => "S",
        Privilege::User => "U",
    }
}

/// A table cell: the class, with what a privileged entry traps for.
fn cell(entry: &Classification) -> String {
    use trapeze::patch::sensitivity::Sensitivity;
    match (entry.traps, entry.sensitivity) {
        (true, Sensitivity::Innocuous) => "privileged".into(),
        (true, sensitivity) => format!("privileged, {}", sensitivity.name().trim_end_matches("-sensitive")),
        (false, _) => entry.class().name().into(),
    }
}

/// How a critical CSR access is written in assembly.
fn access_name(number: u16, kind: CsrAccessKind) -> String {
    let name = csr_name(number).map_or_else(|| format!("{number:#05x}"), str::to_string);
    match (number, kind) {
        (csr::CYCLE, CsrAccessKind::Read) => "rdcycle".into(),
        (csr::TIME, CsrAccessKind::Read) => "rdtime".into(),
        (csr::INSTRET, CsrAccessKind::Read) => "rdinstret".into(),
        (_, CsrAccessKind::Read) => format!("csrr {name}"),
        (_, CsrAccessKind::Write) => format!("csrw {name}"),
        (_, CsrAccessKind::SetClear) => format!("csrs/csrc {name}"),
    }
}

fn access_form(kind: CsrAccessKind) -> &'static str {
    match kind {
        CsrAccessKind::Read => "csrrs/csrrc(i) rd, CSR, x0",
        CsrAccessKind::Write => "csrrw(i) rd, CSR, rs1",
        CsrAccessKind::SetClear => "csrrs/csrrc(i) rd, CSR, rs1 != x0",
    }
}

/// The whole report for `config`.
pub fn report(config: &VmmConfig) -> String {
    let mut out = String::new();
    let counteren = config.real_counteren();
    let _ = writeln!(
        out,
        "trapeze analyze: guest code in virtual {}-mode, run natively in real U-mode",
        mode_name(config.virtual_privilege)
    );
    let _ = if config.delegate_counters {
        writeln!(out, "  counters: cycle, time, instret delegated (mcounteren = scounteren = {counteren:#x})")
    } else {
        writeln!(out, "  counters: trap (mcounteren = {counteren:#x})")
    };
    let _ = if config.virtual_time {
        writeln!(out, "  time: virtual (each VM has its own time, cycle and instret)")
    } else {
        writeln!(out, "  time: real (VMs see the machine's time, cycle and instret)")
    };
    let _ = writeln!(out, "  envcfg exposed: menvcfg = senvcfg = {:#x}", config.envcfg.envcfg_bits());
    let _ = writeln!(out, "  host: assumed to implement no more than RV64GC (on QEMU: zba/zbb/zbc/zbs=false)");

    let _ = writeln!(out, "\nInstructions, by class:");
    let _ = writeln!(out, "  {:<36} {:<22} why", "instructions", "class");
    for class in InstructionClass::ALL {
        if class == InstructionClass::Csr {
            let _ = writeln!(out, "  {:<36} {:<22} see the CSR accesses", class.name(), "by CSR and access");
            continue;
        }
        let entry = class.classify(config);
        let _ = writeln!(out, "  {:<36} {:<22} {}", class.name(), cell(&entry), entry.reason);
    }

    let _ = writeln!(
        out,
        "\nCSR accesses (read: csrrs/csrrc with rs1 = x0; write: csrrw; set/clear: csrrs/csrrc otherwise):"
    );
    let _ =
        writeln!(out, "  {:<18} {:<11} {:<22} {:<22} {:<22} why (read)", "csr", "number", "read", "write", "set/clear");
    for &(name, first, last) in NAMED_CSRS {
        let number = if first == last { format!("{first:#05x}") } else { format!("{first:#05x}-{last:#05x}") };
        let entries = CsrAccessKind::ALL.map(|kind| classify_csr(first, kind, config));
        let _ = writeln!(
            out,
            "  {name:<18} {number:<11} {:<22} {:<22} {:<22} {}",
            cell(&entries[0]),
            cell(&entries[1]),
            cell(&entries[2]),
            entries[0].reason
        );
    }
    let others = (0..CSR_COUNT as u16).filter(|&number| csr_name(number).is_none());
    let (count, trapping) = others.fold((0, 0), |(count, trapping), number| {
        let traps = CsrAccessKind::ALL.iter().all(|&kind| classify_csr(number, kind, config).traps);
        (count + 1, trapping + traps as usize)
    });
    let _ = writeln!(
        out,
        "  {:<18} {:<11} {trapping} of {count} trap on every access (illegal in real U-mode)",
        "every other CSR", ""
    );

    let set = critical_set(config);
    write_critical_set(&mut out, &set, config);
    out
}

fn write_critical_set(out: &mut String, set: &CriticalSet, config: &VmmConfig) {
    let _ = writeln!(
        out,
        "\nCritical set (sensitive and not privileged): {}",
        if set.is_empty() { "empty".to_string() } else { set.len().to_string() }
    );
    for class in set.classes() {
        let entry = class.classify(config);
        let _ = writeln!(out, "  {:<12} {:<36} {}: {}", class.name(), "", entry.class(), entry.reason);
    }
    for (number, kind) in set.csr_accesses() {
        let entry = classify_csr(number, kind, config);
        let name = csr_name(number).map_or_else(|| format!("{number:#05x}"), str::to_string);
        let form = access_form(kind).replace("CSR", &name);
        let _ = writeln!(out, "  {:<12} {form:<36} {}: {}", access_name(number, kind), entry.class(), entry.reason);
    }
    if set.virtualizable() {
        let _ = writeln!(out, "\nVerdict: virtualizable by trap-and-emulate alone: every sensitive instruction traps.");
    } else {
        let _ = writeln!(
            out,
            "\nVerdict: not virtualizable by trap-and-emulate alone: {} sensitive instructions or CSR accesses do not \
             trap; they must be found and patched into traps before they run.",
            set.len()
        );
    }
}
