//! A hart's state in a snapshot: every register, CSR, PMP entry and trigger, the counters and the reservation.
//!
//! Restoring refuses any value the hart could never hold (an unimplemented privilege mode, a CSR value its WARL
//! rules never produce, a hart built with other extensions or another id) and changes nothing unless all of the
//! state is valid. Nothing cached outside the hart (soft TLB, translated code) is saved: the VM drops it.

use super::{Csrs, Hart, Privilege, Reservation};
use crate::fpu::FpState;
use crate::isa::csr;
use crate::mem::pmp::{Pmp, ENTRIES};
use crate::snapshot::{LoadMode, Reader, SnapshotError, Writer};

/// The CSRs kept in [`Csrs`], in snapshot order: the CSR number and how to read and write the field.
type Field = (u16, fn(&Csrs) -> u64, fn(&mut Csrs) -> &mut u64);

const FIELDS: [Field; 20] = [
    (csr::MSTATUS, |c| c.mstatus, |c| &mut c.mstatus),
    (csr::MTVEC, |c| c.mtvec, |c| &mut c.mtvec),
    (csr::MEDELEG, |c| c.medeleg, |c| &mut c.medeleg),
    (csr::MIDELEG, |c| c.mideleg, |c| &mut c.mideleg),
    (csr::MIE, |c| c.mie, |c| &mut c.mie),
    (csr::MIP, |c| c.mip, |c| &mut c.mip),
    (csr::MSCRATCH, |c| c.mscratch, |c| &mut c.mscratch),
    (csr::MEPC, |c| c.mepc, |c| &mut c.mepc),
    (csr::MCAUSE, |c| c.mcause, |c| &mut c.mcause),
    (csr::MTVAL, |c| c.mtval, |c| &mut c.mtval),
    (csr::MCOUNTEREN, |c| c.mcounteren, |c| &mut c.mcounteren),
    (csr::MENVCFG, |c| c.menvcfg, |c| &mut c.menvcfg),
    (csr::STVEC, |c| c.stvec, |c| &mut c.stvec),
    (csr::SSCRATCH, |c| c.sscratch, |c| &mut c.sscratch),
    (csr::SEPC, |c| c.sepc, |c| &mut c.sepc),
    (csr::SCAUSE, |c| c.scause, |c| &mut c.scause),
    (csr::STVAL, |c| c.stval, |c| &mut c.stval),
    (csr::SATP, |c| c.satp, |c| &mut c.satp),
    (csr::SCOUNTEREN, |c| c.scounteren, |c| &mut c.scounteren),
    (csr::SENVCFG, |c| c.senvcfg, |c| &mut c.senvcfg),
];

impl Hart {
    /// Writes the hart's architectural state (and the trap count a host's log uses) for a snapshot.
    pub fn save_state(&self, out: &mut Writer) {
        out.u64(self.config.hart_id);
        out.u64(self.config.extensions);
        out.u64s(&self.x);
        out.u64s(&self.fp.f);
        out.u8(self.fp.fflags);
        out.u8(self.fp.frm);
        out.u64(self.pc);
        out.u8(self.privilege as u8);
        for (_, field, _) in FIELDS {
            out.u64(field(&self.csrs));
        }
        let (config, address) = self.pmp.raw();
        out.bytes(&config);
        out.u64s(&address);
        out.u64(self.interrupt_lines);
        out.u64(self.instret);
        out.u64(self.cycle_offset);
        out.bool(self.reservation.is_some());
        let reservation = self.reservation.unwrap_or(Reservation { addr: 0, value: 0 });
        out.u64(reservation.addr);
        out.u64(reservation.value);
        out.u64(self.traps_taken);
        self.triggers.save_state(out);
    }

    /// Reads what [`save_state`](Self::save_state) wrote into a hart built with the same configuration, and
    /// under [`LoadMode::Apply`] replaces this hart's state with it, all of it or (on any error) nothing.
    pub fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        if input.u64()? != self.config.hart_id {
            return Err(input.mismatch("hart id"));
        }
        if input.u64()? != self.config.extensions {
            return Err(input.mismatch("hart extensions (misa)"));
        }
        let x = input.u64s::<32>()?;
        if x[0] != 0 {
            return Err(input.invalid("x0 is not zero"));
        }
        let f = input.u64s::<32>()?;
        let (fflags, frm) = (input.u8()?, input.u8()?);
        if fflags > 0x1f || frm > 7 {
            return Err(input.invalid("fcsr bits that do not exist"));
        }
        let pc = input.u64()?;
        let privilege = Privilege::from_bits(u64::from(input.u8()?))
            .filter(|&mode| self.mode_implemented(Some(mode)))
            .ok_or(input.invalid("a privilege mode the hart does not implement"))?;
        let mut csrs = Csrs::default();
        for (_, _, field) in FIELDS {
            *field(&mut csrs) = input.u64()?;
        }
        self.check_csrs(&csrs).map_err(|what| input.invalid(what))?;
        let config = input.array::<ENTRIES>()?;
        let address = input.u64s::<ENTRIES>()?;
        let pmp = Pmp::from_raw(config, address).ok_or(input.invalid("a PMP entry no write produces"))?;
        let interrupt_lines = input.u64()?;
        if interrupt_lines & !self.implemented_interrupts() != 0 {
            return Err(input.invalid("an interrupt line the hart does not have"));
        }
        let (instret, cycle_offset) = (input.u64()?, input.u64()?);
        let reserved = input.bool()?;
        let reservation = Reservation { addr: input.u64()?, value: input.u64()? };
        let traps_taken = input.u64()?;
        // The triggers are checked, then (once everything else is known valid) read again and applied.
        let mut triggers = input.clone();
        self.triggers.load_state(input, LoadMode::Check)?;
        if !mode.apply() {
            return Ok(());
        }
        self.triggers.load_state(&mut triggers, LoadMode::Apply)?;
        self.x = x;
        self.fp = FpState { f, fflags, frm };
        self.pc = pc;
        self.privilege = privilege;
        self.csrs = csrs;
        self.pmp = pmp;
        self.interrupt_lines = interrupt_lines;
        self.instret = instret;
        self.cycle_offset = cycle_offset;
        self.reservation = reserved.then_some(reservation);
        self.traps_taken = traps_taken;
        Ok(())
    }

    /// Whether every CSR value is one the CSR's WARL rules produce: writing it (as M-mode, to a hart fresh from
    /// reset) leaves exactly it, or it is the reset value of a CSR this hart does not implement.
    fn check_csrs(&self, csrs: &Csrs) -> Result<(), &'static str> {
        let fresh = Hart::new(self.config);
        for (number, get, _) in FIELDS {
            let value = get(csrs);
            let mut probe = fresh.clone();
            let legal = if number == csr::MSTATUS {
                probe.write_mstatus(value);
                probe.csrs.mstatus == value
            } else {
                (probe.debug_write_csr(number, value).is_ok() && get(&probe.csrs) == value) || value == get(&fresh.csrs)
            };
            if !legal {
                return Err(match number {
                    csr::MSTATUS => "an mstatus value no write produces",
                    csr::SATP => "a satp value no write produces",
                    _ => "a CSR value no write produces",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::tdata1;
    use crate::hart::HartConfig;
    use crate::isa::csr::{interrupt, mstatus};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Where the privilege byte and the CSRs lie in a hart's state.
    const PRIVILEGE_AT: usize = 8 + 8 + 256 + 256 + 2 + 8;
    const CSRS_AT: usize = PRIVILEGE_AT + 1;
    const PMP_AT: usize = CSRS_AT + 8 * FIELDS.len();

    /// A hart with something in every part of its state.
    fn busy_hart() -> Hart {
        let mut hart = Hart::new(HartConfig::rv64gc(1));
        for (index, register) in hart.x.iter_mut().enumerate().skip(1) {
            *register = 0x0101_0101_0101_0101 * index as u64;
        }
        for (index, register) in hart.fp.f.iter_mut().enumerate() {
            *register = 0xffff_ffff_0000_0000 | index as u64;
        }
        hart.fp.set_fcsr(0xe5);
        hart.pc = 0x8000_1234;
        let writes = [
            (csr::MSTATUS, (1 << mstatus::MPP_SHIFT) | mstatus::MIE | mstatus::FS),
            (csr::MTVEC, 0x8000_0101),
            (csr::MEDELEG, 0xb1ff),
            (csr::MIDELEG, 0x222),
            (csr::MIE, 0xaaa),
            (csr::MIP, 0x22),
            (csr::MSCRATCH, 7),
            (csr::MEPC, 0x8000_0010),
            (csr::MCOUNTEREN, 7),
            (csr::STVEC, 0x8020_0000),
            (csr::SATP, (8 << 60) | (5 << 44) | 0x1234),
            (csr::PMPCFG0, 0x1f),
            (csr::PMPADDR0, 0x2000_0000 - 1),
            (csr::TSELECT, 1),
            (csr::TDATA1, (tdata1::TYPE_MCONTROL6 << tdata1::TYPE_SHIFT) | tdata1::EXECUTE | tdata1::S),
            (csr::TDATA2, 0x8000_0000),
            (csr::TCONTROL, 8),
        ];
        for (number, value) in writes {
            hart.debug_write_csr(number, value).unwrap();
        }
        hart.privilege = Privilege::Supervisor;
        hart.reservation = Some(Reservation { addr: 0x8000_0040, value: 9 });
        hart.instret = 123_456;
        hart.cycle_offset = 77;
        hart.traps_taken = 3;
        hart.interrupt_lines = interrupt::MTI | interrupt::SEI;
        hart
    }

    fn save(hart: &Hart) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let mut out = Writer::new(&mut buf);
        hart.save_state(&mut out);
        let len = out.finish().unwrap();
        buf.truncate(len);
        buf
    }

    fn load(hart: &mut Hart, data: &[u8], mode: LoadMode) -> Result<(), SnapshotError> {
        let mut input = Reader::new(data);
        hart.load_state(&mut input, mode)?;
        input.finish()
    }

    #[test]
    fn a_hart_round_trips_and_a_check_changes_nothing() {
        let busy = busy_hart();
        let data = save(&busy);
        let mut hart = Hart::new(HartConfig::rv64gc(1));
        let fresh = hart.clone();
        load(&mut hart, &data, LoadMode::Check).unwrap();
        assert_eq!(hart, fresh, "a check only validates");
        load(&mut hart, &data, LoadMode::Apply).unwrap();
        assert_eq!(hart, busy);
        assert!(hart.triggers.armed(Privilege::Supervisor), "the trigger masks were recomputed");
    }

    #[test]
    fn impossible_values_and_other_harts_are_named_and_change_nothing() {
        let data = save(&busy_hart());
        let cases: [(usize, &[u8], &str); 6] = [
            (PRIVILEGE_AT, &[2], "a privilege mode the hart does not implement"),
            (CSRS_AT + 1, &[0x10], "an mstatus value no write produces"),
            (CSRS_AT + 17 * 8 + 7, &[0x90], "a satp value no write produces"),
            (CSRS_AT + 2 * 8, &[0xff, 0xff], "a CSR value no write produces"),
            (PMP_AT, &[0x02], "a PMP entry no write produces"),
            (16, &[1], "x0 is not zero"),
        ];
        for (at, bytes, what) in cases {
            let mut bad = data.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            let mut hart = Hart::new(HartConfig::rv64gc(1));
            let fresh = hart.clone();
            let error = load(&mut hart, &bad, LoadMode::Apply).unwrap_err();
            assert!(matches!(error, SnapshotError::Invalid { what: named, .. } if named == what), "{what}: {error:?}");
            assert_eq!(hart, fresh, "{what}: nothing changed");
        }
        let mut other = Hart::new(HartConfig::rv64gc(2));
        assert!(matches!(load(&mut other, &data, LoadMode::Apply), Err(SnapshotError::Mismatch { .. })));
        let mut smaller = Hart::new(HartConfig::rv64imac_mu(1));
        assert!(matches!(load(&mut smaller, &data, LoadMode::Apply), Err(SnapshotError::Mismatch { .. })));
        assert!(matches!(
            load(&mut Hart::new(HartConfig::rv64gc(1)), &data[..data.len() - 1], LoadMode::Apply),
            Err(SnapshotError::Truncated { .. })
        ));
    }

    #[test]
    fn the_debuggers_triggers_and_breakpoints_are_not_the_machines() {
        let mut busy = busy_hart();
        busy.triggers.insert_software_breakpoint(0x8000_0000);
        let data = save(&busy);
        let mut hart = Hart::new(HartConfig::rv64gc(1));
        hart.triggers.insert_software_breakpoint(0x8000_4444);
        load(&mut hart, &data, LoadMode::Apply).unwrap();
        assert!(hart.triggers.check_execute(0x8000_4444, Privilege::Machine).is_some(), "the restoring side's kept");
        assert!(hart.triggers.check_execute(0x8000_0000, Privilege::Machine).is_none(), "the saving side's not");
    }

    proptest! {
        /// Any bytes, or a good state with one byte changed: never a panic, and a refusal changes nothing.
        #[test]
        fn hostile_hart_states_never_panic(at in 0usize..1000, value in any::<u8>(),
                                           noise in proptest::collection::vec(any::<u8>(), 0..900)) {
            let mut hart = Hart::new(HartConfig::rv64gc(1));
            let fresh = hart.clone();
            if load(&mut hart, &noise, LoadMode::Apply).is_err() {
                prop_assert_eq!(&hart, &fresh);
            }
            let mut data = save(&busy_hart());
            let at = at % data.len();
            data[at] = value;
            let mut hart = Hart::new(HartConfig::rv64gc(1));
            if load(&mut hart, &data, LoadMode::Apply).is_err() {
                prop_assert_eq!(&hart, &fresh);
            }
        }
    }
}
