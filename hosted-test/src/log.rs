//! QEMU's log options for `trapeze run`: `-d ITEM,...` chooses what is logged and `-D FILE` where it goes
//! (stderr by default), so a command line written for QEMU's debugging carries over.
//!
//! Items: `in_asm` logs every instruction as `--trace` does (QEMU logs each translated block once; an
//! interpreter-driven trace of every executed instruction says more and is what `--trace` users know); `int`
//! logs every interrupt and exception a hart takes, one line each in QEMU's own format
//! (`riscv_cpu_do_interrupt: hart:0, async:1, cause:0000000000000007, epc:0x..., tval:0x..., desc=m_timer`), so a
//! trapeze log and a QEMU log of the same guest can be compared line by line. `int` alone keeps the chosen
//! engine at full speed: traps come from the VM's [`TrapObserver`] hook as they are taken.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::rc::Rc;

use trapeze::vm::{TrapObserver, TrapTaken};

/// The log items `-d` accepts, with what each logs (`-d help` prints this).
pub const ITEMS: [(&str, &str); 2] = [
    ("in_asm", "every instruction executed: hart, pc, word, disassembly, the register it changed (as --trace)"),
    ("int", "every interrupt and exception taken: hart, cause, epc, tval, in QEMU's format"),
];

/// What `-d` asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogItems {
    pub in_asm: bool,
    pub int: bool,
    /// `-d help`: list the items and exit.
    pub help: bool,
}

impl LogItems {
    /// Parses `-d`'s comma-separated items; an unknown or empty item is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut items = Self::default();
        for item in text.split(',') {
            match item.trim() {
                "in_asm" => items.in_asm = true,
                "int" => items.int = true,
                "help" => items.help = true,
                "" => return Err(format!("empty log item in `{text}` (`-d help` lists the items)")),
                other => return Err(format!("unknown log item `{other}` (`-d help` lists the items)")),
            }
        }
        Ok(items)
    }
}

/// The text `-d help` prints.
pub fn help() -> String {
    let mut text = String::from("Log items (-d ITEM,...; -D FILE writes the log to FILE):\n");
    for (name, what) in ITEMS {
        text.push_str(&format!("{name:<8} {what}\n"));
    }
    text
}

/// QEMU's name of an interrupt or exception code.
fn trap_name(interrupt: bool, code: u64) -> &'static str {
    const INTERRUPTS: [&str; 12] = [
        "u_software",
        "s_software",
        "vs_software",
        "m_software",
        "u_timer",
        "s_timer",
        "vs_timer",
        "m_timer",
        "u_external",
        "s_external",
        "vs_external",
        "m_external",
    ];
    const EXCEPTIONS: [&str; 16] = [
        "misaligned_fetch",
        "fault_fetch",
        "illegal_instruction",
        "breakpoint",
        "misaligned_load",
        "fault_load",
        "misaligned_store",
        "fault_store",
        "user_ecall",
        "supervisor_ecall",
        "hypervisor_ecall",
        "machine_ecall",
        "exec_page_fault",
        "load_page_fault",
        "reserved",
        "store_page_fault",
    ];
    let names: &[&str] = if interrupt { &INTERRUPTS } else { &EXCEPTIONS };
    usize::try_from(code).ok().and_then(|code| names.get(code)).copied().unwrap_or("reserved")
}

/// One `int` line, in QEMU's format.
pub fn trap_line(trap: &TrapTaken) -> String {
    format!(
        "riscv_cpu_do_interrupt: hart:{}, async:{}, cause:{:016x}, epc:0x{:016x}, tval:0x{:016x}, desc={}",
        trap.hart,
        u8::from(trap.interrupt),
        trap.code,
        trap.epc,
        trap.tval,
        trap_name(trap.interrupt, trap.code)
    )
}

/// Where the log goes (stderr or the `-D` file), and traps held back while an instruction's trace line is
/// being assembled, so that lines come out in the order things happened.
pub struct Log {
    out: Box<dyn Write>,
    pub items: LogItems,
    /// Traps reported while `hold` is set, in order.
    held: Vec<TrapTaken>,
    hold: bool,
}

/// The log as the run loop and the VM's trap observer share it (one thread).
pub type SharedLog = Rc<RefCell<Log>>;

impl Log {
    /// A log of `items` to `file`, or to stderr.
    pub fn open(items: LogItems, file: Option<&Path>) -> Result<SharedLog, String> {
        let out: Box<dyn Write> = match file {
            Some(path) => Box::new(BufWriter::new(
                File::create(path).map_err(|e| format!("cannot create the log file {}: {e}", path.display()))?,
            )),
            None => Box::new(BufWriter::new(std::io::stderr())),
        };
        Ok(Rc::new(RefCell::new(Self { out, items, held: Vec::new(), hold: false })))
    }

    /// Writes one line. A log that cannot be written has nowhere to report it, so the error is dropped.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// Holds traps back (`true`) until [`take_held`](Self::take_held), or writes them as they come (with `int`).
    pub fn hold_traps(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// The traps held back since the last call.
    pub fn take_held(&mut self) -> Vec<TrapTaken> {
        std::mem::take(&mut self.held)
    }

    fn trap(&mut self, trap: &TrapTaken) {
        if self.hold {
            // Held whether or not `int` is logged: the instruction trace needs them to show the right pc.
            self.held.push(*trap);
        } else if self.items.int {
            self.line(&trap_line(trap));
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The VM's [`TrapObserver`] that writes to a [`SharedLog`].
pub struct TrapLogger(pub SharedLog);

impl TrapObserver for TrapLogger {
    fn trap_taken(&mut self, trap: &TrapTaken) {
        // The run loop never holds the log across a VM call, so the borrow always succeeds.
        if let Ok(mut log) = self.0.try_borrow_mut() {
            log.trap(trap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze::hart::Privilege;

    #[test]
    fn items_parse_and_unknown_ones_are_named() {
        assert_eq!(LogItems::parse("in_asm,int"), Ok(LogItems { in_asm: true, int: true, help: false }));
        assert_eq!(LogItems::parse("int"), Ok(LogItems { int: true, ..LogItems::default() }));
        assert_eq!(LogItems::parse("help"), Ok(LogItems { help: true, ..LogItems::default() }));
        let error = LogItems::parse("int,mmu").unwrap_err();
        assert!(error.contains("`mmu`") && error.contains("-d help"), "{error}");
        assert!(LogItems::parse("int,").unwrap_err().contains("empty"));
        assert!(help().contains("in_asm") && help().contains("int "));
    }

    #[test]
    fn trap_lines_follow_qemus_format() {
        let trap = TrapTaken {
            hart: 1,
            interrupt: true,
            code: 7,
            epc: 0x8000_0104,
            tval: 0,
            from: Privilege::Supervisor,
            to: Privilege::Machine,
            handler: 0x8000_0000,
        };
        assert_eq!(
            trap_line(&trap),
            "riscv_cpu_do_interrupt: hart:1, async:1, cause:0000000000000007, epc:0x0000000080000104, \
             tval:0x0000000000000000, desc=m_timer"
        );
        let fault = TrapTaken { interrupt: false, code: 13, tval: 0x1000, ..trap };
        assert!(trap_line(&fault).ends_with(
            "async:0, cause:000000000000000d, epc:0x0000000080000104, tval:0x0000000000001000, desc=load_page_fault"
        ));
        assert!(trap_line(&TrapTaken { code: 99, ..fault }).ends_with("desc=reserved"));
    }
}
