//! Snapshots of a whole VM: [`Vm::save_snapshot`] and [`Vm::restore_snapshot`].
//!
//! The payload (see [`crate::snapshot`] for the header and the encoding) is, in this order: the machine's own
//! section `MACH` (hart count, RAM placement, the run counters, the time, whose turn it is and its spin check,
//! which harts wait in `wfi`, whether the VMM's SBI and HTIF are in use), one `HART` section per hart, the
//! devices' sections ([`Devices::save_state`]), `SBI ` and `HTIF` (each saying whether it is present), and
//! `RAM ` (every page holding a nonzero byte, as runs of whole pages; the others are zero).
//!
//! What is not saved: the soft TLBs (flushed on restore), engine code caches (restoring rewrites all of RAM
//! through [`Ram::as_mut_slice`](crate::mem::Ram::as_mut_slice), which makes every translated block stale, so
//! an engine drops its whole cache before it runs again), device backends (a file, a console: a restored VM
//! keeps its own), the host clock and time source (a restored VM's guest time goes on from the saved time
//! under either), a trap observer, and `last_exit` (a diagnostic, reset to `(0, BudgetExhausted)`).

use super::{Devices, SpinCheck, TimeSource, Turn, Vm, SPIN_PERIOD_MAX};
use crate::mem::PAGE_SIZE;
use crate::snapshot::{self, LoadMode, Reader, SectionId, SnapshotError, Writer};
use crate::trap::Exit;

const MACHINE: SectionId = SectionId::new(*b"MACH", 0);
const SBI: SectionId = SectionId::new(*b"SBI ", 0);
const HTIF: SectionId = SectionId::new(*b"HTIF", 0);
const RAM: SectionId = SectionId::new(*b"RAM ", 0);

const fn hart_section(index: usize) -> SectionId {
    SectionId::new(*b"HART", index as u32)
}

impl<D: Devices> Vm<'_, D> {
    /// Writes a snapshot of the whole machine into `buf` and answers its length. With a buffer too small (an
    /// empty one, say) it answers [`SnapshotError::BufferTooSmall`] with the length needed; a device that cannot
    /// be saved is [`SnapshotError::Unsupported`]. The machine is not changed.
    pub fn save_snapshot(&self, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        snapshot::write_snapshot(buf, |out| {
            out.section(MACHINE, |out| {
                self.save_machine(out);
                Ok(())
            })?;
            for (index, hart) in self.harts.iter().enumerate() {
                out.section(hart_section(index), |out| {
                    hart.save_state(out);
                    Ok(())
                })?;
            }
            self.devices.save_state(out)?;
            out.section(SBI, |out| {
                out.bool(self.sbi.is_some());
                if let Some(sbi) = &self.sbi {
                    sbi.save_state(out);
                }
                Ok(())
            })?;
            out.section(HTIF, |out| {
                out.bool(self.htif.is_some());
                if let Some((htif, _)) = &self.htif {
                    htif.save_state(out);
                }
                Ok(())
            })?;
            out.section(RAM, |out| {
                // Shared RAM (other threads may be writing it) is not snapshotted.
                let bytes = self.ram.as_slice().ok_or(SnapshotError::Unsupported { section: RAM })?;
                save_ram(out, self.ram.base(), bytes);
                Ok(())
            })
        })
    }

    /// The length of a snapshot of the machine as it is now (what [`save_snapshot`](Self::save_snapshot) needs).
    pub fn snapshot_len(&self) -> Result<usize, SnapshotError> {
        match self.save_snapshot(&mut []) {
            Err(SnapshotError::BufferTooSmall { needed }) => Ok(needed),
            other => other,
        }
    }

    /// Restores the machine from a snapshot [`save_snapshot`](Self::save_snapshot) wrote, on a machine built the
    /// same way (harts, RAM, devices attached, firmware and HTIF in use), with its own backends, clock and engine.
    ///
    /// The snapshot is checked whole before anything changes: its header and checksum, then every section,
    /// decoded and validated against this machine. On an error the machine is exactly as it was. Only then is
    /// every component replaced; that pass meets the same bytes the check accepted and so cannot fail (if it ever
    /// did, the error is returned and the machine must be thrown away). Afterwards the soft TLBs are empty, an
    /// engine's code cache is dropped before it runs again (all of RAM counts as written), and guest time goes on
    /// from the saved time: exactly as it would have in the saved machine under the same
    /// [`TimeSource::Instructions`] shift, from the host clock's next tick under [`TimeSource::Host`].
    pub fn restore_snapshot(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        let payload = snapshot::open_snapshot(data)?;
        self.load_all(&mut payload.clone(), LoadMode::Check)?;
        self.load_all(&mut payload.clone(), LoadMode::Apply)?;
        for tlb in &mut self.tlbs {
            tlb.flush_all();
        }
        self.last_exit = (0, Exit::BudgetExhausted);
        if self.time_source == TimeSource::Host {
            // Host time goes on from the saved time (the CLINT ignores a clock behind it, so it would stand still).
            self.time_offset = self.last_now.wrapping_sub(self.clock.now());
        }
        Ok(())
    }

    fn save_machine(&self, out: &mut Writer) {
        out.u32(self.harts.len() as u32);
        out.u64(self.ram.base());
        out.u64(self.ram.size());
        out.u64s(&[self.steps, self.exits, self.yields, self.skipped_ticks, self.last_now]);
        out.u32(self.next_hart as u32);
        for &waiting in self.waiting.iter().take(self.harts.len()) {
            out.bool(waiting);
        }
        out.bool(self.turn.is_some());
        let (hart, remaining, spin) = match &self.turn {
            Some(turn) => (turn.hart, turn.remaining, turn.spin),
            None => (0, 0, SpinCheck { pc: 0, x: [0; 32], since: 0, period: 1 }),
        };
        out.u32(hart as u32);
        out.u64(remaining);
        out.u64(spin.pc);
        out.u64s(&spin.x);
        out.u32(spin.since);
        out.u32(spin.period);
    }

    /// Reads the whole payload: under [`LoadMode::Check`] it only validates, under [`LoadMode::Apply`] it
    /// replaces each component in turn.
    fn load_all(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        input.read_section(MACHINE, |input| self.load_machine(input, mode))?;
        for index in 0..self.harts.len() {
            let hart = &mut self.harts[index];
            input.read_section(hart_section(index), |input| hart.load_state(input, mode))?;
        }
        self.devices.load_state(input, mode)?;
        input.read_section(SBI, |input| {
            if input.bool()? != self.sbi.is_some() {
                return Err(input.mismatch("whether the VMM is the firmware (--bios builtin)"));
            }
            match &mut self.sbi {
                Some(sbi) => sbi.load_state(input, mode),
                None => Ok(()),
            }
        })?;
        input.read_section(HTIF, |input| {
            if input.bool()? != self.htif.is_some() {
                return Err(input.mismatch("whether HTIF is in use"));
            }
            match &mut self.htif {
                Some((htif, _)) => htif.load_state(input, mode),
                None => Ok(()),
            }
        })?;
        let (base, ram) = (self.ram.base(), &mut self.ram);
        input.read_section(RAM, |input| {
            let mut again = input.clone();
            load_ram(input, base, ram.size(), None)?;
            if mode.apply() {
                let bytes = ram.as_mut_slice().ok_or(SnapshotError::Unsupported { section: RAM })?;
                load_ram(&mut again, base, bytes.len() as u64, Some(bytes))?;
            }
            Ok(())
        })?;
        input.finish()
    }

    fn load_machine(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let count = self.harts.len();
        if input.u32()? as usize != count {
            return Err(input.mismatch("the number of harts"));
        }
        if input.u64()? != self.ram.base() || input.u64()? != self.ram.size() {
            return Err(input.mismatch("the RAM's base or size"));
        }
        let [steps, exits, yields, skipped_ticks, last_now] = input.u64s::<5>()?;
        let next_hart = input.u32()? as usize;
        if next_hart >= count {
            return Err(input.invalid("the next hart's turn is a hart the machine does not have"));
        }
        let mut waiting = [false; super::MAX_HARTS];
        for flag in waiting.iter_mut().take(count) {
            *flag = input.bool()?;
        }
        let has_turn = input.bool()?;
        let hart = input.u32()? as usize;
        let remaining = input.u64()?;
        let spin = SpinCheck { pc: input.u64()?, x: input.u64s::<32>()?, since: input.u32()?, period: input.u32()? };
        if has_turn && (hart >= count || spin.period == 0 || spin.period > SPIN_PERIOD_MAX || spin.since >= spin.period)
        {
            return Err(input.invalid("a turn of a hart the machine does not have, or an impossible spin check"));
        }
        if mode.apply() {
            (self.steps, self.exits, self.yields, self.skipped_ticks, self.last_now) =
                (steps, exits, yields, skipped_ticks, last_now);
            self.next_hart = next_hart;
            self.waiting = waiting;
            self.turn = has_turn.then_some(Turn { hart, remaining, spin });
        }
        Ok(())
    }
}

/// Writes RAM as runs of pages holding a nonzero byte: (offset u64, length u64, bytes), ended by a zero length.
fn save_ram(out: &mut Writer, base: u64, bytes: &[u8]) {
    out.u64(base);
    out.u64(bytes.len() as u64);
    let page = PAGE_SIZE as usize;
    let mut run_start = None;
    for (index, chunk) in bytes.chunks(page).enumerate() {
        let used = chunk.iter().any(|&byte| byte != 0);
        match (used, run_start) {
            (true, None) => run_start = Some(index * page),
            (false, Some(start)) => {
                write_run(out, bytes, start, index * page);
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        write_run(out, bytes, start, bytes.len());
    }
    out.u64(0);
    out.u64(0);
}

fn write_run(out: &mut Writer, bytes: &[u8], start: usize, end: usize) {
    out.u64(start as u64);
    out.u64((end - start) as u64);
    out.bytes(bytes.get(start..end).unwrap_or(&[]));
}

/// Reads what [`save_ram`] wrote for RAM of `size` bytes at `base`, checking every run lies inside RAM, after
/// the previous one; with `target`, also writes RAM: the runs' bytes, zero everywhere else.
fn load_ram(input: &mut Reader, base: u64, size: u64, mut target: Option<&mut [u8]>) -> Result<(), SnapshotError> {
    if input.u64()? != base || input.u64()? != size {
        return Err(input.mismatch("the RAM's base or size"));
    }
    let mut end = 0u64;
    loop {
        let (offset, length) = (input.u64()?, input.u64()?);
        if length == 0 {
            if offset != 0 {
                return Err(input.invalid("a RAM run of no bytes"));
            }
            break;
        }
        let run_end = offset.checked_add(length).filter(|&run_end| offset >= end && run_end <= size);
        let Some(run_end) = run_end else {
            return Err(input.invalid("a RAM run outside RAM or before the previous one"));
        };
        let bytes = input.bytes(usize::try_from(length).map_err(|_| input.invalid("a RAM run too long"))?)?;
        if let Some(ram) = target.as_deref_mut() {
            if let Some(gap) = ram.get_mut(end as usize..offset as usize) {
                gap.fill(0);
            }
            if let Some(run) = ram.get_mut(offset as usize..run_end as usize) {
                run.copy_from_slice(bytes);
            }
        }
        end = run_end;
    }
    if let Some(rest) = target.and_then(|ram| ram.get_mut(end as usize..)) {
        rest.fill(0);
    }
    input.finish()
}

#[cfg(test)]
mod tests {
    use super::super::{Clock, TimeSource, Vm};
    use crate::dev::SerialBackend;
    use crate::exec::interp::Interpreter;
    use crate::exec::threaded::Threaded;
    use crate::exec::Engine;
    use crate::hart::{Hart, HartConfig};
    use crate::isa::{self, csr, CsrOp, Inst, OpImmKind, StoreWidth};
    use crate::mem::{Ram, RAM_BASE};
    use crate::snapshot::{checksum, SnapshotError, HEADER_LEN};
    use crate::vm::virt::VirtDevices;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[derive(Default)]
    struct Recorder(Vec<u8>);

    impl SerialBackend for Recorder {
        fn write_byte(&mut self, byte: u8) {
            self.0.push(byte);
        }
        fn read_byte(&mut self) -> Option<u8> {
            None
        }
    }

    struct NoClock;

    impl Clock for NoClock {
        fn now(&mut self) -> u64 {
            0
        }
    }

    const RAM_SIZE: usize = 0x4000;
    const T0: u8 = 5;
    const T1: u8 = 6;
    const S0: u8 = 8;
    const S1: u8 = 9;
    const A0: u8 = 10;
    const A1: u8 = 11;
    const A2: u8 = 12;

    fn addi(rd: u8, rs1: u8, imm: i32) -> Inst {
        Inst::OpImm { op: OpImmKind::Addi, rd, rs1, imm }
    }

    fn csrw(csr: u16, src: u8) -> Inst {
        Inst::Csr { op: CsrOp::Rw, rd: 0, src, csr }
    }

    /// Hart 0: a timer interrupt every 300 instructions (its handler counts them in a2) while a loop prints a
    /// character per round to the UART and writes `mscratch`. Hart 1 counts.
    fn programs() -> [Vec<Inst>; 2] {
        let mut main = vec![
            Inst::Lui { rd: S0, imm: 0x1000_0000 },
            Inst::Lui { rd: S1, imm: 0x0200_4000 },
            Inst::Auipc { rd: T1, imm: 0 },
            addi(T1, T1, 0x100 - 8),
            csrw(csr::MTVEC, T1),
            addi(T0, 0, 2),
            Inst::Store { width: StoreWidth::D, rs1: S1, rs2: T0, offset: 0 },
            addi(T0, 0, 0x80),
            csrw(csr::MIE, T0),
            Inst::Csr { op: CsrOp::Rsi, rd: 0, src: 8, csr: csr::MSTATUS },
        ];
        main.extend([
            addi(A0, A0, 1),
            Inst::OpImm { op: OpImmKind::Andi, rd: A1, rs1: A0, imm: 63 },
            addi(A1, A1, 48),
            Inst::Store { width: StoreWidth::B, rs1: S0, rs2: A1, offset: 0 },
            csrw(csr::MSCRATCH, A0),
            Inst::Jal { rd: 0, offset: -20 },
        ]);
        while main.len() < 0x40 {
            main.push(Inst::Ebreak);
        }
        main.extend([
            addi(A2, A2, 1),
            Inst::Load { width: isa::LoadWidth::D, rd: T0, rs1: S1, offset: 0 },
            addi(T0, T0, 3),
            Inst::Store { width: StoreWidth::D, rs1: S1, rs2: T0, offset: 0 },
            Inst::Mret,
        ]);
        let counter = vec![addi(T1, T1, 1), Inst::Jal { rd: 0, offset: -4 }];
        [main, counter]
    }

    /// Backing memory for a machine: RAM and its code-watch bitmap.
    struct Backing {
        ram: Vec<u8>,
        code_pages: Vec<u64>,
        clock: NoClock,
    }

    impl Backing {
        fn new() -> Self {
            Self { ram: vec![0; RAM_SIZE], code_pages: vec![0; 1], clock: NoClock }
        }
    }

    type TestVm<'a> = Vm<'a, VirtDevices<'static, Recorder>>;

    /// The two-hart machine with the programs loaded (or with RAM left empty: a fresh machine to restore into).
    fn machine(backing: &mut Backing, load: bool) -> TestVm<'_> {
        if load {
            for (index, program) in programs().iter().enumerate() {
                for (at, inst) in program.iter().enumerate() {
                    let offset = index * 0x1000 + 4 * at;
                    backing.ram[offset..offset + 4].copy_from_slice(&isa::encode(inst).to_le_bytes());
                }
            }
        }
        let harts = (0..2u64).map(|index| {
            let mut hart = Hart::new(HartConfig::rv64gc(index));
            hart.reset(RAM_BASE + index * 0x1000);
            hart
        });
        let mut ram = Ram::new(RAM_BASE, &mut backing.ram);
        ram.attach_code_watch(&mut backing.code_pages);
        let mut vm = Vm::new(harts, ram, VirtDevices::new(Recorder::default()), &mut backing.clock).unwrap();
        vm.set_time_source(TimeSource::Instructions { shift: 0 });
        vm
    }

    fn run_for(vm: &mut TestVm<'_>, engine: &mut impl Engine, steps: u64) {
        let limit = vm.steps + steps;
        while vm.steps < limit {
            assert_eq!(vm.run_slice(engine, (limit - vm.steps).min(777)), None);
        }
    }

    fn snapshot(vm: &TestVm<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; vm.snapshot_len().unwrap()];
        let len = vm.save_snapshot(&mut buf).unwrap();
        assert_eq!(len, buf.len());
        buf
    }

    /// Runs the guest a while, snapshots it, restores the snapshot into a fresh machine and runs both on: the
    /// same console output, harts, RAM and devices, on `engine` (a fresh one for the restored machine).
    fn snapshot_and_run_both<E: Engine>(mut new_engine: impl FnMut() -> std::boxed::Box<E>) {
        let mut backing = Backing::new();
        let mut original = machine(&mut backing, true);
        let mut engine = new_engine();
        run_for(&mut original, &mut *engine, 10_007);
        let saved = snapshot(&original);
        let printed_before = original.devices.uart.backend().0.len();
        assert!(printed_before > 100 && original.harts[0].x(A2) > 5, "the guest printed and took timer interrupts");

        let mut fresh_backing = Backing::new();
        let mut restored = machine(&mut fresh_backing, false);
        restored.restore_snapshot(&saved).unwrap();
        assert_eq!(snapshot(&restored), saved, "a restored machine saves the same snapshot");
        let mut restored_engine = new_engine();
        run_for(&mut original, &mut *engine, 20_011);
        run_for(&mut restored, &mut *restored_engine, 20_011);
        assert_eq!(&original.devices.uart.backend().0[printed_before..], &restored.devices.uart.backend().0[..]);
        assert_eq!(original.harts, restored.harts);
        assert_eq!(original.ram.as_slice().unwrap(), restored.ram.as_slice().unwrap());
        assert_eq!(snapshot(&original), snapshot(&restored));
    }

    #[test]
    fn a_restored_machine_runs_on_exactly_as_the_original_on_the_interpreter() {
        snapshot_and_run_both(|| std::boxed::Box::new(Interpreter));
    }

    #[test]
    fn a_restored_machine_runs_on_exactly_as_the_original_on_the_threaded_engine() {
        snapshot_and_run_both(|| std::boxed::Box::new(Threaded::<1024, 64, 128>::new()));
    }

    /// Restoring into a machine that already ran other code (a warm code cache over different RAM) drops what
    /// the engine translated: it runs the restored code, not its stale blocks.
    #[test]
    fn restoring_over_a_running_machine_drops_its_translated_code() {
        let mut backing = Backing::new();
        let mut vm = machine(&mut backing, true);
        let mut engine = std::boxed::Box::new(Threaded::<1024, 64, 128>::new());
        run_for(&mut vm, &mut *engine, 5_000);
        let early = snapshot(&vm);
        run_for(&mut vm, &mut *engine, 5_000);
        let late = snapshot(&vm);
        // Patch the loop's printed offset in RAM (48 -> 65) and run on: the engine must see the new code.
        vm.restore_snapshot(&early).unwrap();
        let addi_at = RAM_BASE + 4 * 12;
        vm.ram.store(addi_at, 4, u64::from(isa::encode(&addi(A1, A1, 65)))).unwrap();
        let before = vm.devices.uart.backend().0.len();
        run_for(&mut vm, &mut *engine, 2_000);
        assert!(vm.devices.uart.backend().0[before..].iter().all(|&byte| byte >= 65), "the patched code ran");
        // And back to the later snapshot, on the same engine.
        vm.restore_snapshot(&late).unwrap();
        assert_eq!(snapshot(&vm), late);
    }

    #[test]
    fn a_machine_built_differently_is_refused_and_unchanged() {
        let mut backing = Backing::new();
        let mut vm = machine(&mut backing, true);
        run_for(&mut vm, &mut Interpreter, 3_000);
        let saved = snapshot(&vm);
        let mut other_ram = vec![0u8; RAM_SIZE * 2];
        let mut clock = NoClock;
        let harts = (0..2u64).map(|index| Hart::new(HartConfig::rv64gc(index)));
        let mut bigger =
            Vm::new(harts, Ram::new(RAM_BASE, &mut other_ram), VirtDevices::<_>::new(Recorder::default()), &mut clock)
                .unwrap();
        let before = snapshot(&bigger);
        assert!(matches!(bigger.restore_snapshot(&saved), Err(SnapshotError::Mismatch { .. })));
        assert_eq!(snapshot(&bigger), before);
        let mut one_hart_ram = vec![0u8; RAM_SIZE];
        let mut clock = NoClock;
        let mut lonely = Vm::new(
            [Hart::new(HartConfig::rv64gc(0))],
            Ram::new(RAM_BASE, &mut one_hart_ram),
            VirtDevices::<_>::new(Recorder::default()),
            &mut clock,
        )
        .unwrap();
        assert!(matches!(lonely.restore_snapshot(&saved), Err(SnapshotError::Mismatch { .. })));
    }

    /// The VMM's own SBI (HSM states, timers) and HTIF (its answer queue) are saved and restored, and a machine
    /// that does not use them refuses a snapshot that does.
    #[test]
    fn firmware_and_htif_state_round_trip() {
        use crate::dev::htif::Htif;
        use crate::vm::sbi::HartState;
        let mut backing = Backing::new();
        let mut vm = machine(&mut backing, true);
        let mut console = Recorder::default();
        vm.boot_with_builtin_sbi(0, RAM_BASE, RAM_BASE + 0x3000);
        vm.attach_htif(Htif::new(RAM_BASE + 0x3800, Some(RAM_BASE + 0x3840)), &mut console);
        let saved = snapshot(&vm);

        let mut fresh_backing = Backing::new();
        let mut restored = machine(&mut fresh_backing, false);
        assert!(matches!(restored.restore_snapshot(&saved), Err(SnapshotError::Mismatch { .. })), "no SBI here");
        restored.boot_with_builtin_sbi(1, RAM_BASE, 0);
        assert_eq!(restored.sbi().and_then(|sbi| sbi.state(0)), Some(HartState::Stopped));
        assert!(matches!(restored.restore_snapshot(&saved), Err(SnapshotError::Mismatch { .. })), "no HTIF here");
        let mut restored_console = Recorder::default();
        restored.attach_htif(Htif::new(RAM_BASE + 0x3800, Some(RAM_BASE + 0x3840)), &mut restored_console);
        restored.restore_snapshot(&saved).unwrap();
        assert_eq!(restored.sbi().and_then(|sbi| sbi.state(0)), Some(HartState::Started));
        assert_eq!(restored.sbi().and_then(|sbi| sbi.state(1)), Some(HartState::Stopped));
        assert_eq!(snapshot(&restored), saved);
    }

    /// A host clock the test moves.
    struct SharedClock(std::rc::Rc<core::cell::Cell<u64>>);

    impl Clock for SharedClock {
        fn now(&mut self) -> u64 {
            self.0.get()
        }
    }

    /// Under the host's clock, a machine restored in a process whose clock starts again from 0 goes on from the
    /// saved time and follows its clock from there.
    #[test]
    fn host_time_goes_on_from_the_saved_time() {
        let ticks = std::rc::Rc::new(core::cell::Cell::new(1_000_000));
        let mut clock = SharedClock(ticks.clone());
        let mut backing = Backing::new();
        let mut program = vec![0u8; RAM_SIZE];
        let mut vm = Vm::new(
            [Hart::new(HartConfig::rv64gc(0))],
            Ram::new(RAM_BASE, &mut backing.ram),
            VirtDevices::<_>::new(Recorder::default()),
            &mut clock,
        )
        .unwrap();
        vm.harts[0].reset(RAM_BASE);
        vm.run_slice(&mut Interpreter, 10);
        assert_eq!(vm.time(), 1_000_000);
        let saved = snapshot(&vm);

        let later = std::rc::Rc::new(core::cell::Cell::new(5));
        let mut restarted_clock = SharedClock(later.clone());
        let mut restored = Vm::new(
            [Hart::new(HartConfig::rv64gc(0))],
            Ram::new(RAM_BASE, &mut program),
            VirtDevices::<_>::new(Recorder::default()),
            &mut restarted_clock,
        )
        .unwrap();
        restored.restore_snapshot(&saved).unwrap();
        restored.run_slice(&mut Interpreter, 10);
        assert_eq!(restored.time(), 1_000_000, "time did not jump back to the new clock's 5");
        later.set(25);
        restored.run_slice(&mut Interpreter, 10);
        assert_eq!(restored.time(), 1_000_020, "and then follows the new clock");
    }

    /// A snapshot with one byte changed and its checksum made right again (a hostile one, not a damaged one):
    /// restoring it never panics, and when it is refused the machine is exactly as it was.
    fn restore_hostile(at: usize, value: u8, saved: &[u8]) {
        let mut backing = Backing::new();
        let mut vm = machine(&mut backing, true);
        run_for(&mut vm, &mut Interpreter, 1_000);
        let before = snapshot(&vm);
        let mut hostile = saved.to_vec();
        let at = HEADER_LEN + at % (hostile.len() - HEADER_LEN);
        hostile[at] = value;
        let sum = checksum(&hostile[HEADER_LEN..]);
        hostile[24..32].copy_from_slice(&sum.to_le_bytes());
        if vm.restore_snapshot(&hostile).is_err() {
            assert_eq!(snapshot(&vm), before, "a refused snapshot changed nothing");
        }
        // Whatever was restored runs without a panic.
        run_for(&mut vm, &mut Interpreter, 500);
    }

    fn saved_snapshot() -> Vec<u8> {
        let mut backing = Backing::new();
        let mut vm = machine(&mut backing, true);
        run_for(&mut vm, &mut Interpreter, 4_321);
        snapshot(&vm)
    }

    #[test]
    fn every_section_refuses_hostile_values_without_a_change() {
        let saved = saved_snapshot();
        // Every byte of the sections before RAM, set to a value that is out of range for most fields.
        let ram_at = saved.windows(4).position(|window| window == b"RAM ").unwrap();
        for at in 0..ram_at - HEADER_LEN {
            restore_hostile(at, 0xff, &saved);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn hostile_snapshots_never_panic(at in any::<usize>(), value in any::<u8>()) {
            restore_hostile(at, value, &saved_snapshot());
        }

        #[test]
        fn random_and_truncated_snapshots_are_refused(data in proptest::collection::vec(any::<u8>(), 0..512),
                                                      cut in any::<usize>()) {
            let mut backing = Backing::new();
            let mut vm = machine(&mut backing, true);
            let before = snapshot(&vm);
            prop_assert!(vm.restore_snapshot(&data).is_err());
            let saved = saved_snapshot();
            prop_assert!(vm.restore_snapshot(&saved[..cut % saved.len()]).is_err());
            prop_assert_eq!(snapshot(&vm), before);
        }
    }
}
