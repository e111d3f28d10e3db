//! The portable half of the native engine: what a real trap taken while a guest ran natively (in real U-mode,
//! whatever its virtual privilege) means for the virtual machine.
//!
//! A board runs the guest on the processor and gets back the real `mcause`, `mtval` and `mepc`. This module turns
//! them, with the virtual hart and guest memory, into an [`Action`]: the end of the time quantum, a miss in the
//! shadow page tables (the board fills them and resumes, or learns the access is a guest fault or a device
//! access), or the same [`Exit`] the emulation engines return, for the same dispatcher. It holds no state, needs
//! no hardware and is tested on the host; the world switch and the shadow tables stay with the board and
//! [`crate::mem`]. Nothing here trusts the guest: every instruction word it reads is fetched through the guest's
//! own translation and decoded by [`crate::isa::decode`], and anything it cannot serve becomes the exception the
//! guest would see on real hardware, never a panic.

use crate::hart::{Exception, Hart, CAUSE_INTERRUPT};
use crate::isa::{self, Inst, LoadWidth};
use crate::mem::mmu::{Loaded, Memory};
use crate::mem::sv39::{AccessType, PAGE_SIZE};
use crate::patch::table::PatchTable;
use crate::trap::{Exit, MmioAccess, MmioKind};

/// A real trap taken while the guest ran: the three CSRs the trap entry saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTrap {
    pub mcause: u64,
    pub mtval: u64,
    /// The guest's pc at the trap (the engine copies it to `hart.pc` before classifying).
    pub mepc: u64,
}

/// What the native engine does about a real trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The machine timer fired (or another interrupt of the host's own): the quantum is over. The engine returns
    /// [`Exit::BudgetExhausted`], so the virtual machine delivers virtual interrupts and schedules.
    QuantumOver,
    /// A real page fault at guest virtual address `va`: the shadow tables decide whether it is
    /// theirs (fill and resume), the guest's (inject [`Exit::Exception`]) or a device's ([`mmio_exit`]).
    ShadowMiss { va: u64, access: AccessType },
    /// Hand this exit to the dispatcher.
    Exit(Exit),
}

/// Classifies a real trap taken while `hart`'s guest ran natively. `hart.pc` must already be `trap.mepc`.
///
/// - the machine timer (and any other interrupt) ends the quantum;
/// - page faults go to the shadow tables; access faults (PMP, the second wall) are the guest's;
/// - `ecall` (always from real U-mode) is the environment call of the hart's *virtual* privilege;
/// - an illegal instruction is a privileged instruction to emulate, or a truly illegal one: see [`system_exit`];
/// - breakpoints and misaligned accesses are the guest's exceptions, with the guest-visible `tval`;
/// - anything else (a cause the host never expects from U-mode) is reported to the guest as an illegal
///   instruction, which is what it would most likely get from real hardware, and never stops the VMM.
pub fn classify(trap: HostTrap, hart: &Hart, memory: &mut Memory) -> Action {
    if trap.mcause & CAUSE_INTERRUPT != 0 {
        // Only the machine timer (code 7) is enabled; a stray interrupt ends the quantum the same way.
        return Action::QuantumOver;
    }
    let exception = |cause, tval| Action::Exit(Exit::Exception { cause, tval });
    match Exception::from_code(trap.mcause) {
        Some(Exception::InstructionPageFault) => Action::ShadowMiss { va: trap.mtval, access: AccessType::Fetch },
        Some(Exception::LoadPageFault) => Action::ShadowMiss { va: trap.mtval, access: AccessType::Load },
        Some(Exception::StorePageFault) => Action::ShadowMiss { va: trap.mtval, access: AccessType::Store },
        // The shadow tables only map the VM's own RAM, so a real access fault means a wall (PMP) stopped an
        // access the shadow never granted: the guest gets the access fault real hardware would give.
        Some(
            cause @ (Exception::InstructionAccessFault | Exception::LoadAccessFault | Exception::StoreAccessFault),
        ) => exception(cause, trap.mtval),
        Some(Exception::EcallFromU | Exception::EcallFromS | Exception::EcallFromM) => {
            exception(Exception::ecall_from(hart.privilege), 0)
        }
        Some(Exception::IllegalInstruction) => Action::Exit(system_exit(hart, memory, trap.mtval)),
        Some(Exception::Breakpoint) => exception(Exception::Breakpoint, hart.pc),
        Some(Exception::LoadMisaligned) => exception(misaligned_cause(hart, memory), trap.mtval),
        Some(cause @ (Exception::InstructionMisaligned | Exception::StoreMisaligned)) => exception(cause, trap.mtval),
        None => exception(Exception::IllegalInstruction, 0),
    }
}

/// The cause of a real load-address-misaligned trap as the guest must see it: an AMO or SC raises the store/AMO
/// misaligned exception (privileged specification), which some hosts (QEMU 7.2) report as a load misaligned one.
fn misaligned_cause(hart: &Hart, memory: &mut Memory) -> Exception {
    match fetch(hart, memory).map(|word| isa::decode(word).inst) {
        Ok(Inst::Amo { .. } | Inst::Sc { .. }) => Exception::StoreMisaligned,
        _ => Exception::LoadMisaligned,
    }
}

/// The exit for a real illegal-instruction trap at `hart.pc`: the instruction (from `mtval` when the hardware
/// reported it, else fetched through the guest's translation, compressed included), decoded, as
/// [`Exit::System`]. The dispatcher emulates the privileged ones (CSR accesses — including the counters and
/// floating-point CSRs that trap in real U-mode —, `xRET`, `wfi`, `sfence.vma`) by the hart's virtual privilege
/// and raises illegal-instruction for everything else with the word as `tval`, as the emulation engines do.
pub fn system_exit(hart: &Hart, memory: &mut Memory, mtval: u64) -> Exit {
    let word = if mtval != 0 {
        // The hardware reports the instruction's bits (zero-extended; a compressed one in the low 16).
        let low = mtval as u32;
        if low & 3 == 3 {
            low
        } else {
            low & 0xffff
        }
    } else {
        match fetch(hart, memory) {
            Ok(word) => word,
            Err(exit) => return exit,
        }
    };
    let decoded = isa::decode(word);
    let word = if decoded.len == 2 { word & 0xffff } else { word };
    Exit::System { inst: decoded.inst, word, len: decoded.len }
}

/// The exit for a real illegal-instruction trap at a site the patching scanner patched ([`crate::patch`]), to be
/// asked **before** [`classify`] on every illegal-instruction trap (cause 2) from a guest whose pages are scanned.
///
/// `pa` is the guest real address of `hart.pc` (the board translates it as it did for the fetch). `None`: no
/// site there, so the trap is the guest's own illegal instruction (or a privileged one): classify it as usual.
/// Otherwise the original instruction becomes the exit the hardware would have produced had it trapped itself:
/// [`Exit::System`] for the dispatcher to emulate (a critical instruction: a counter read, or an exposed
/// cache-block operation, which the dispatcher answers with the virtual hart's illegal-instruction; or, for a
/// conservatively patched straddling parcel, any SYSTEM instruction), the environment call or breakpoint
/// exception for `ecall`/`ebreak`. For a site straddling a page end the high half
/// comes from `upper_parcel`: the original parcel at `pc + 2` through the guest's *current* translation (the
/// board unpatches it with [`crate::patch::table::PatchTable::unpatch`]), or the exception that fetch raises.
pub fn patched_site_exit<const SITES: usize, const PAGES: usize>(
    table: &PatchTable<SITES, PAGES>,
    hart: &Hart,
    pa: u64,
    upper_parcel: impl FnOnce() -> Result<u16, Exit>,
) -> Option<Exit> {
    let site = table.site(pa)?;
    let word = if site.straddles {
        match upper_parcel() {
            Ok(upper) => site.with_upper(upper),
            Err(exit) => return Some(exit),
        }
    } else {
        site.word
    };
    let decoded = isa::decode(word);
    Some(match decoded.inst {
        Inst::Ecall => Exit::Exception { cause: Exception::ecall_from(hart.privilege), tval: 0 },
        Inst::Ebreak => Exit::Exception { cause: Exception::Breakpoint, tval: hart.pc },
        inst => Exit::System { inst, word, len: decoded.len },
    })
}

/// The exit for a guest access the shadow tables found to fall outside RAM, at guest real address `guest_real`
/// (its page; the offset comes from `va`): the instruction at `hart.pc` is fetched through the guest's
/// translation and decoded; an integer load or store of the same kind becomes [`Exit::Mmio`] (the store value
/// from `hart.x`). A fetch from a device, an AMO, LR/SC or a floating-point access to a device, an access that
/// straddles a page, and an instruction that does not match the trapped access are access faults with `tval` =
/// `va`, as a device that does not decode them would give.
pub fn mmio_exit(hart: &Hart, memory: &mut Memory, guest_real: u64, va: u64, access: AccessType) -> Exit {
    let fault = Exit::Exception { cause: access.access_fault(), tval: va };
    if access == AccessType::Fetch {
        return fault;
    }
    let word = match fetch(hart, memory) {
        Ok(word) => word,
        Err(exit) => return exit,
    };
    let decoded = isa::decode(word);
    let (size, kind) = match (decoded.inst, access) {
        (Inst::Load { width, rd, .. }, AccessType::Load) => {
            let signed = matches!(width, LoadWidth::B | LoadWidth::H | LoadWidth::W | LoadWidth::D);
            (width.bytes(), MmioKind::Load { rd, signed })
        }
        (Inst::Store { width, rs2, .. }, AccessType::Store) => (width.bytes(), MmioKind::Store { value: hart.x(rs2) }),
        _ => return fault,
    };
    if (va & (PAGE_SIZE - 1)) + size > PAGE_SIZE {
        return fault;
    }
    let addr = (guest_real & !(PAGE_SIZE - 1)) | (va & (PAGE_SIZE - 1));
    Exit::Mmio(MmioAccess { addr, size: size as u8, kind, len: decoded.len })
}

/// The instruction at `hart.pc`, read through the guest's translation as the emulation engines fetch it: one
/// 16-bit parcel, and a second one when the first says the instruction is 32 bits long (each translated on its
/// own, so an instruction may straddle a page). A fetch that faults becomes the guest's exception.
fn fetch(hart: &Hart, memory: &mut Memory) -> Result<u32, Exit> {
    let parcel = |memory: &mut Memory, addr: u64| match memory.load(hart, addr, 2, AccessType::Fetch) {
        Ok(Loaded::Value(value)) => Ok(value as u32),
        Ok(Loaded::Device(_)) => Err(Exit::Exception { cause: Exception::InstructionAccessFault, tval: addr }),
        Err(fault) => Err(Exit::Exception { cause: fault.exception, tval: fault.tval }),
    };
    let low = parcel(memory, hart.pc)?;
    if low & 3 != 3 {
        return Ok(low);
    }
    Ok(low | parcel(memory, hart.pc.wrapping_add(2))? << 16)
}

/// Instructions assumed per tick of the machine timer (10 MHz on QEMU `virt`): 100 MIPS, the order of magnitude
/// of a guest under QEMU's JIT.
///
/// The native engine cannot count instructions, so [`quantum_ticks`] turns an instruction budget into a time
/// quantum on the real machine timer at this rate, never more than [`MAX_QUANTUM_TICKS`] (1 ms, so virtual timer
/// deadlines, which the VM delivers between runs, are late by at most that when the caller does not cap the
/// budget at the next deadline itself) and never less than [`MIN_QUANTUM_TICKS`] (so a world switch is not all
/// a quantum does). A board that knows the next deadline passes `ticks * INSTRUCTIONS_PER_TICK`.
pub const INSTRUCTIONS_PER_TICK: u64 = 10;
/// The longest quantum: 1 ms of the 10 MHz timer.
pub const MAX_QUANTUM_TICKS: u64 = 10_000;
/// The shortest quantum: 10 µs.
pub const MIN_QUANTUM_TICKS: u64 = 100;
/// A native run between two spin checks of a hart of a VM with several harts: 100 µs of the machine timer.
/// With [`SPIN_CHECK`](crate::vm::SPIN_CHECK) instructions (the shortest quantum, 10 µs) a two-hart Linux
/// stopped making progress on QEMU: a world switch and the exits served in the quantum's time used up most of
/// it, so that a hart in a syscall-heavy stretch (two `md5sum`s reading pipes) advanced by an exit or two per
/// quantum. Ten times longer, Linux reaches its shell about three times sooner and runs the script; a hart
/// spinning on a lock the other holds wastes at most this before it yields.
pub const SPIN_CHECK_TICKS: u64 = 1_000;

/// The time quantum, in machine timer ticks, for an instruction `budget`.
pub const fn quantum_ticks(budget: u64) -> u64 {
    let ticks = budget.div_ceil(INSTRUCTIONS_PER_TICK);
    if ticks < MIN_QUANTUM_TICKS {
        MIN_QUANTUM_TICKS
    } else if ticks > MAX_QUANTUM_TICKS {
        MAX_QUANTUM_TICKS
    } else {
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::{HartConfig, Privilege};
    use crate::isa::csr;
    use crate::isa::encode;
    use crate::isa::{CsrOp, StoreWidth};
    use crate::mem::mmu::{Tlb, VmRealMap};
    use crate::mem::{Ram, RAM_BASE};

    const UART: u64 = 0x1000_0000;

    /// A hart in virtual `privilege` with paging off, and 64 KiB of RAM holding `code` at its start.
    fn with_machine<R>(privilege: Privilege, code: &[u8], test: impl FnOnce(&mut Hart, &mut Memory) -> R) -> R {
        let mut backing = vec![0u8; 0x10000];
        backing[..code.len()].copy_from_slice(code);
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let realmap = VmRealMap::for_ram(&ram).unwrap();
        let mut tlb = Tlb::new();
        let mut hart = Hart::new(HartConfig::rv64gc(0));
        // PMP entry 0 opens everything to S and U (NAPOT over the whole address space, RWX).
        hart.pmp.write_addr(0, u64::MAX).unwrap();
        hart.pmp.write_cfg(0, 0x1f).unwrap();
        hart.privilege = privilege;
        hart.pc = RAM_BASE;
        let mut memory = Memory { ram: &mut ram, realmap: &realmap, tlb: &mut tlb };
        test(&mut hart, &mut memory)
    }

    fn trap(mcause: u64, mtval: u64) -> HostTrap {
        HostTrap { mcause, mtval, mepc: RAM_BASE }
    }

    fn words(instructions: &[Inst]) -> Vec<u8> {
        instructions.iter().flat_map(|inst| encode(inst).to_le_bytes()).collect()
    }

    #[test]
    fn the_machine_timer_ends_the_quantum() {
        with_machine(Privilege::Supervisor, &[], |hart, memory| {
            assert_eq!(classify(trap(CAUSE_INTERRUPT | 7, 0), hart, memory), Action::QuantumOver);
            assert_eq!(classify(trap(CAUSE_INTERRUPT | 11, 0), hart, memory), Action::QuantumOver);
        });
    }

    #[test]
    fn page_faults_go_to_the_shadow_tables_and_access_faults_to_the_guest() {
        with_machine(Privilege::Supervisor, &[], |hart, memory| {
            for (cause, access) in [(12, AccessType::Fetch), (13, AccessType::Load), (15, AccessType::Store)] {
                assert_eq!(
                    classify(trap(cause, 0x4000_1234), hart, memory),
                    Action::ShadowMiss { va: 0x4000_1234, access },
                    "cause {cause}"
                );
            }
            for cause in [Exception::InstructionAccessFault, Exception::LoadAccessFault, Exception::StoreAccessFault] {
                assert_eq!(
                    classify(trap(cause as u64, 0x9000_0000), hart, memory),
                    Action::Exit(Exit::Exception { cause, tval: 0x9000_0000 })
                );
            }
        });
    }

    #[test]
    fn ecall_is_the_environment_call_of_the_virtual_privilege() {
        for (privilege, cause) in [
            (Privilege::Machine, Exception::EcallFromM),
            (Privilege::Supervisor, Exception::EcallFromS),
            (Privilege::User, Exception::EcallFromU),
        ] {
            with_machine(privilege, &[], |hart, memory| {
                // The hardware always reports an ecall from U-mode: the guest runs there.
                assert_eq!(classify(trap(8, 0), hart, memory), Action::Exit(Exit::Exception { cause, tval: 0 }));
            });
        }
    }

    #[test]
    fn breakpoints_and_misaligned_accesses_are_the_guests_exceptions() {
        with_machine(Privilege::Supervisor, &[], |hart, memory| {
            assert_eq!(
                classify(trap(3, 0), hart, memory),
                Action::Exit(Exit::Exception { cause: Exception::Breakpoint, tval: RAM_BASE })
            );
            assert_eq!(
                classify(trap(4, 0x8000_0101), hart, memory),
                Action::Exit(Exit::Exception { cause: Exception::LoadMisaligned, tval: 0x8000_0101 })
            );
            assert_eq!(
                classify(trap(10, 0), hart, memory),
                Action::Exit(Exit::Exception { cause: Exception::IllegalInstruction, tval: 0 }),
                "a reserved cause never stops the VMM"
            );
        });
    }

    #[test]
    fn a_misaligned_amo_is_a_store_amo_misaligned_exception_whatever_the_host_reports() {
        let amo =
            Inst::Amo { op: isa::AmoOp::Add, width: isa::AmoWidth::W, aq: false, rl: false, rd: 1, rs1: 2, rs2: 3 };
        let lw = Inst::Load { width: LoadWidth::W, rd: 1, rs1: 2, offset: 0 };
        let code = words(&[amo, lw]);
        with_machine(Privilege::Machine, &code, |hart, memory| {
            assert_eq!(
                classify(trap(4, 0x8000_0101), hart, memory),
                Action::Exit(Exit::Exception { cause: Exception::StoreMisaligned, tval: 0x8000_0101 })
            );
            hart.pc += 4;
            assert_eq!(
                classify(trap(4, 0x8000_0101), hart, memory),
                Action::Exit(Exit::Exception { cause: Exception::LoadMisaligned, tval: 0x8000_0101 })
            );
        });
    }

    #[test]
    fn a_privileged_instruction_is_decoded_from_mtval() {
        let csrr = Inst::Csr { op: CsrOp::Rs, rd: 10, src: 0, csr: csr::MSTATUS };
        with_machine(Privilege::Machine, &[], |hart, memory| {
            let word = encode(&csrr);
            assert_eq!(
                classify(trap(2, word as u64), hart, memory),
                Action::Exit(Exit::System { inst: csrr, word, len: 4 })
            );
        });
    }

    #[test]
    fn a_zero_mtval_makes_the_engine_fetch_the_instruction_through_the_guest_translation() {
        let code = words(&[Inst::Mret]);
        with_machine(Privilege::Machine, &code, |hart, memory| {
            assert_eq!(
                system_exit(hart, memory, 0),
                Exit::System { inst: Inst::Mret, word: encode(&Inst::Mret), len: 4 }
            );
        });
        // c.ebreak is 0x9002; a compressed word is reported as its 16-bit parcel, length 2.
        let mut code = vec![0x02, 0x90];
        code.extend_from_slice(&[0xff; 2]);
        with_machine(Privilege::Supervisor, &code, |hart, memory| {
            assert_eq!(system_exit(hart, memory, 0), Exit::System { inst: Inst::Ebreak, word: 0x9002, len: 2 });
            assert_eq!(
                system_exit(hart, memory, 0xffff_0000_9002),
                Exit::System { inst: Inst::Ebreak, word: 0x9002, len: 2 },
                "bits above a compressed parcel are ignored"
            );
        });
    }

    #[test]
    fn a_fetch_that_faults_becomes_the_guests_exception() {
        with_machine(Privilege::Machine, &[], |hart, memory| {
            hart.pc = UART;
            assert_eq!(
                system_exit(hart, memory, 0),
                Exit::Exception { cause: Exception::InstructionAccessFault, tval: UART }
            );
        });
    }

    #[test]
    fn integer_loads_and_stores_to_devices_become_mmio_exits() {
        let lbu = Inst::Load { width: LoadWidth::Bu, rd: 11, rs1: 10, offset: 5 };
        let sw = Inst::Store { width: StoreWidth::W, rs1: 10, rs2: 12, offset: 0 };
        let code = words(&[lbu, sw]);
        with_machine(Privilege::Machine, &code, |hart, memory| {
            assert_eq!(
                mmio_exit(hart, memory, UART, UART + 5, AccessType::Load),
                Exit::Mmio(MmioAccess {
                    addr: UART + 5,
                    size: 1,
                    kind: MmioKind::Load { rd: 11, signed: false },
                    len: 4
                })
            );
            hart.pc += 4;
            hart.set_x(12, 0xdead_beef_1234_5678);
            // The shadow reports the page; the offset comes from the virtual address.
            assert_eq!(
                mmio_exit(hart, memory, UART, 0x4000_0010, AccessType::Store),
                Exit::Mmio(MmioAccess {
                    addr: UART + 0x10,
                    size: 4,
                    kind: MmioKind::Store { value: 0xdead_beef_1234_5678 },
                    len: 4
                })
            );
        });
    }

    #[test]
    fn device_accesses_no_device_decodes_are_access_faults() {
        let amo =
            Inst::Amo { op: isa::AmoOp::Add, width: isa::AmoWidth::D, aq: false, rl: false, rd: 1, rs1: 2, rs2: 3 };
        let fld = Inst::FpLoad { fmt: isa::FpFormat::D, rd: 1, rs1: 2, offset: 0 };
        let ld = Inst::Load { width: LoadWidth::D, rd: 1, rs1: 2, offset: 0 };
        let code = words(&[amo, fld, ld]);
        with_machine(Privilege::Supervisor, &code, |hart, memory| {
            let store_fault = Exit::Exception { cause: Exception::StoreAccessFault, tval: UART };
            let load_fault = Exit::Exception { cause: Exception::LoadAccessFault, tval: UART };
            assert_eq!(mmio_exit(hart, memory, UART, UART, AccessType::Store), store_fault, "AMO");
            hart.pc += 4;
            assert_eq!(mmio_exit(hart, memory, UART, UART, AccessType::Load), load_fault, "FP load");
            hart.pc += 4;
            assert_eq!(mmio_exit(hart, memory, UART, UART, AccessType::Store), store_fault, "load seen as store");
            assert_eq!(
                mmio_exit(hart, memory, UART, UART + 0xffc, AccessType::Load),
                Exit::Exception { cause: Exception::LoadAccessFault, tval: UART + 0xffc },
                "an 8-byte device access straddling a page"
            );
            assert_eq!(
                mmio_exit(hart, memory, UART, UART, AccessType::Fetch),
                Exit::Exception { cause: Exception::InstructionAccessFault, tval: UART }
            );
        });
    }

    #[test]
    fn a_trap_at_a_patched_site_is_the_original_instruction_and_elsewhere_the_guests_own() {
        use crate::patch::scan::{scan, CounterReads, Coverage};
        use crate::patch::table::PAGE_SIZE as PATCH_PAGE;
        let rdtime = Inst::Csr { op: CsrOp::Rs, rd: 10, src: 0, csr: csr::TIME };
        let mut code = words(&[rdtime, Inst::Illegal(0), Inst::Mret]);
        code.resize(2 * PATCH_PAGE as usize, 0);
        // The low parcel of a SYSTEM instruction straddling into the second page, whose high half the scan did
        // not have: patched conservatively.
        code[PATCH_PAGE as usize - 2..PATCH_PAGE as usize].copy_from_slice(&0x0073u16.to_le_bytes());
        with_machine(Privilege::Supervisor, &code, |hart, memory| {
            let mut table: PatchTable<8, 2> = PatchTable::new();
            scan(&mut table, memory.ram, &CounterReads, RAM_BASE, None, Coverage::Guard).unwrap();
            let unreachable = || -> Result<u16, Exit> { unreachable!("not a straddling site") };
            assert_eq!(
                patched_site_exit(&table, hart, RAM_BASE, unreachable),
                Some(Exit::System { inst: rdtime, word: encode(&rdtime), len: 4 })
            );
            assert_eq!(patched_site_exit(&table, hart, RAM_BASE + 4, unreachable), None, "the guest's own");
            // The straddling site takes its high half now: an ecall, or the fault fetching it.
            let end = RAM_BASE + PATCH_PAGE - 2;
            hart.pc = end;
            assert_eq!(
                patched_site_exit(&table, hart, end, || Ok(0)),
                Some(Exit::Exception { cause: Exception::EcallFromS, tval: 0 })
            );
            let fault = Exit::Exception { cause: Exception::InstructionPageFault, tval: end + 2 };
            assert_eq!(patched_site_exit(&table, hart, end, || Err(fault)), Some(fault));
            // Not a valid instruction after all: the dispatcher raises illegal-instruction with the original
            // word, as the hardware would have.
            assert_eq!(
                patched_site_exit(&table, hart, end, || Ok(0xc000)),
                Some(Exit::System { inst: Inst::Illegal(0xc000_0073), word: 0xc000_0073, len: 4 })
            );
        });
    }

    #[test]
    fn quantum_follows_the_budget_within_bounds() {
        assert_eq!(quantum_ticks(0), MIN_QUANTUM_TICKS);
        assert_eq!(quantum_ticks(4096), 410);
        assert_eq!(quantum_ticks(u64::MAX), MAX_QUANTUM_TICKS);
    }
}
