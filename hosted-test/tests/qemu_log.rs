//! QEMU's log options on `trapeze run`: `-d int -D FILE` writes one line per trap the guest takes, in QEMU's
//! format, to FILE (not stderr); `-d in_asm,int` traces every instruction with each trap in its place (an
//! exception right after the instruction that raised it, an interrupt right before the handler's first
//! instruction); an unknown item is refused by name, and `-d help` lists the items.
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::run_trapeze;

fn guest(name: &str) -> String {
    format!("{}/{name}", env!("TRAPEZE_GUESTS_DIR"))
}

/// A log file path of this test process, removed when dropped.
struct TempLog(PathBuf);

impl TempLog {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("trapeze-{name}-{}.log", std::process::id())))
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8 here")
    }
    fn read(&self) -> String {
        std::fs::read_to_string(&self.0).expect("the log file was written")
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One `int` line: (hart, async, cause, epc, tval, desc).
#[derive(Debug)]
struct Trap {
    interrupt: bool,
    cause: u64,
    epc: u64,
    tval: u64,
    desc: String,
}

/// Parses a line of QEMU's format, `riscv_cpu_do_interrupt: hart:0, async:0, cause:..., epc:0x..., tval:0x...,
/// desc=...`; `None` for any other line.
fn parse_trap(line: &str) -> Option<Trap> {
    let rest = line.strip_prefix("riscv_cpu_do_interrupt: hart:0, async:")?;
    let (interrupt, rest) = rest.split_once(", cause:")?;
    let (cause, rest) = rest.split_once(", epc:0x")?;
    let (epc, rest) = rest.split_once(", tval:0x")?;
    let (tval, desc) = rest.split_once(", desc=")?;
    (cause.len() == 16 && epc.len() == 16 && tval.len() == 16).then_some(())?;
    Some(Trap {
        interrupt: match interrupt {
            "0" => false,
            "1" => true,
            _ => return None,
        },
        cause: u64::from_str_radix(cause, 16).ok()?,
        epc: u64::from_str_radix(epc, 16).ok()?,
        tval: u64::from_str_radix(tval, 16).ok()?,
        desc: desc.to_string(),
    })
}

/// The pc of an instruction trace line (`<pc, 16 hex digits>: <word> ...`).
fn trace_pc(line: &str) -> Option<u64> {
    let (pc, _) = line.split_once(": ")?;
    (pc.len() == 16).then_some(())?;
    u64::from_str_radix(pc, 16).ok()
}

#[test]
fn int_log_to_a_file_has_one_line_per_trap_the_guest_takes() {
    let log = TempLog::new("int");
    let run = run_trapeze(&["-d", "int", "-D", log.path(), &guest("traps")], Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("traps: all 36 checks passed"), "the log changes nothing for the guest");
    assert!(!run.stderr.contains("riscv_cpu_do_interrupt"), "-D sends the log to the file:\n{}", run.stderr);
    let text = log.read();
    let traps: Vec<Trap> = text.lines().map(|line| parse_trap(line).expect("every line is a trap line")).collect();
    // The exceptions the `traps` guest causes, in its order (guests/README.md): ecall from M, ebreak and
    // c.ebreak, four illegal instructions, the load/store access faults at 0x0 and 0x0800_0000 and a fetch
    // fault, a misaligned LR, then misaligned SC/AMOs, ecall from U, and an illegal machine CSR access from U.
    let causes: Vec<u64> = traps.iter().map(|trap| trap.cause).collect();
    assert_eq!(causes, [11, 3, 3, 2, 2, 2, 2, 5, 7, 5, 7, 5, 7, 1, 4, 4, 6, 6, 6, 6, 8, 2], "{text}");
    assert!(traps.iter().all(|trap| !trap.interrupt), "{text}");
    // epc is the trapping instruction: in RAM, except for the fetch fault, whose instruction is the target.
    assert!(traps.iter().all(|t| (t.epc >= 0x8000_0000) != (t.cause == 1)), "{text}");
    let names: Vec<&str> = traps.iter().map(|trap| trap.desc.as_str()).take(3).collect();
    assert_eq!(names, ["machine_ecall", "breakpoint", "breakpoint"]);
    // Access faults name the address in tval, as the guest's checks expect.
    let faults: Vec<(u64, u64, &str)> =
        traps.iter().filter(|t| matches!(t.cause, 1 | 5 | 7)).map(|t| (t.cause, t.tval, t.desc.as_str())).collect();
    assert_eq!(
        faults,
        [
            (5, 0, "fault_load"),
            (7, 0, "fault_store"),
            (5, 0x0800_0000, "fault_load"),
            (7, 0x0800_0000, "fault_store"),
            (5, 0x0800_0007, "fault_load"),
            (7, 0x0800_0007, "fault_store"),
            (1, 0x0800_0000, "fault_fetch"),
        ]
    );
}

#[test]
fn in_asm_and_int_put_each_trap_in_its_place_among_the_instructions() {
    // Exceptions: each comes right after the instruction that raised it.
    let log = TempLog::new("in-asm-traps");
    let run = run_trapeze(&["-d", "in_asm,int", "-D", log.path(), &guest("traps")], Duration::from_secs(120));
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    let text = log.read();
    let lines: Vec<&str> = text.lines().collect();
    let mut exceptions = 0;
    for (index, line) in lines.iter().enumerate() {
        let Some(trap) = parse_trap(line) else {
            assert!(trace_pc(line).is_some(), "neither a trace nor a trap line: {line}");
            continue;
        };
        exceptions += 1;
        let previous = index.checked_sub(1).and_then(|i| lines.get(i)).expect("a trap follows an instruction");
        // The instruction that raised it (for a fetch fault, the line of the fetch that faulted).
        assert_eq!(trace_pc(previous), Some(trap.epc), "{previous}\n{line}");
        assert!(previous.contains("    trap "), "the instruction's trace line shows the trap: {previous}");
    }
    assert_eq!(exceptions, 22);
    assert!(lines.len() > 1000, "every instruction is traced");

    // Interrupts: each comes before the handler's first instruction, and the interrupted one runs later.
    let log = TempLog::new("in-asm-interrupts");
    let run = run_trapeze(&["-d", "in_asm,int", "-D", log.path(), &guest("interrupts")], Duration::from_secs(120));
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    let text = log.read();
    let lines: Vec<&str> = text.lines().collect();
    let mut interrupts = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(trap) = parse_trap(line).filter(|trap| trap.interrupt) else { continue };
        let next = lines.get(index + 1).and_then(|next| trace_pc(next));
        assert!(next.is_some_and(|pc| pc != trap.epc), "the handler runs next: {line}");
        let resumed = lines.iter().skip(index + 1).filter_map(|l| trace_pc(l)).any(|pc| pc == trap.epc);
        assert!(resumed, "the interrupted instruction runs after the handler: {line}");
        interrupts.push(trap.desc);
    }
    for desc in ["m_timer", "m_software", "s_timer", "s_software"] {
        assert!(interrupts.iter().any(|d| d == desc), "a {desc} interrupt is logged: {interrupts:?}");
    }
}

#[test]
fn int_alone_logs_interrupts_at_full_speed_to_stderr() {
    let run = run_trapeze(&["-d", "int", &guest("interrupts")], Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    let traps: Vec<Trap> = run.stderr.lines().filter_map(parse_trap).collect();
    let interrupts: Vec<(u64, &str)> =
        traps.iter().filter(|trap| trap.interrupt).map(|trap| (trap.cause, trap.desc.as_str())).collect();
    for expected in [(7, "m_timer"), (3, "m_software"), (5, "s_timer"), (1, "s_software")] {
        assert!(interrupts.contains(&expected), "{expected:?} in {interrupts:?}");
    }
    assert!(!run.stderr.lines().any(|line| trace_pc(line).is_some()), "no instruction trace without in_asm");
}

#[test]
fn unknown_items_are_refused_by_name_and_help_lists_the_items() {
    let run = run_trapeze(&["-d", "int,exec", &guest("hello")], Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("unknown log item `exec`"), "{}", run.stderr);
    assert!(!run.stdout.contains("Hello"), "the guest does not run");
    let run = run_trapeze(&["-d", "help"], Duration::from_secs(30));
    assert!(run.status.success());
    assert!(run.stdout.contains("in_asm") && run.stdout.contains("int "), "{}", run.stdout);
}
