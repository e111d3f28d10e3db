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
