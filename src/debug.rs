//! Debug triggers (the Sdtrig extension of the RISC-V debug specification 1.0) and the host debugger's
//! breakpoints: the trigger CSRs' state with their WARL rules, and the matching every engine consults.
//!
//! A hart owns one [`Triggers`] (`hart.triggers`). The guest programs its triggers through `tselect`,
//! `tdata1..3`, `tinfo` and `tcontrol` (M-mode CSRs; `mcontext`/`scontext` are absent and trap as any absent
//! CSR does). [`TRIGGERS`] triggers are implemented, each an address-match trigger of type 2 (`mcontrol`) or 6
//! (`mcontrol6`) or disabled (type 15): execute, load and store matches on the virtual address (`select` = 0),
//! match types equal, NAPOT, greater-or-equal and less-than, the M/S/U mode bits, action 0 (breakpoint
//! exception, `tval` = the matching address: the pc for an execute match, the accessed address for a load or
//! store). An access of several bytes matches when any of its bytes does (the debug specification requires the
//! lowest and recommends all). Everything else reads back as its legal value: `chain`, `select`, `timing`,
//! `size`, `hit*`, `uncertain*`, `vs`/`vu`, `maskmax` are 0, an unsupported `match` becomes 0 (equal), an
//! unsupported `action` 0, an unsupported type makes the trigger disabled (15), `tdata3` (`textra`) is 0.
//! Action-0 triggers do not fire in M-mode while `tcontrol.mte` is clear; a trap into M-mode saves `mte` in
//! `mpte` and clears it, `mret` restores it, so an M-mode handler does not trip its own breakpoint.
//!
//! Triggers with `dmode` = 1 belong to the host debugger (a gdb stub): a guest can read but never write them,
//! and their action 1 ("enter Debug Mode") makes the engine stop with [`Exit::Debug`] before the instruction,
//! with nothing of it performed. The debugger's software breakpoints live here too, in a fixed-size table that
//! the guest cannot see (its memory is never modified, so the code cache never sees them).
//!
//! Engines pay for all this only through [`Triggers::armed`], one test of a cached mask: when it is false for
//! the current privilege nothing can match and nothing else here is consulted. When it is true, the interpreter
//! checks every fetch ([`Triggers::check_execute`]) and access ([`Triggers::check_access`]), and the threaded
//! engine asks [`Triggers::only_execute_armed`] and [`Triggers::execute_armed_in`] which blocks it may still run.
//! The native engine (`exec::native`, on the board) runs guest code on the real hart and does not honour
//! triggers: there the CSRs read and write as described, but nothing fires.
//! This module never allocates, never modifies guest memory (a software breakpoint is not an `ebreak` written
//! into the guest) and never panics, whatever a guest writes.

use crate::hart::{Exception, Privilege};
use crate::trap::Exit;

/// Triggers implemented per hart.
pub const TRIGGERS: usize = 4;

/// Software breakpoints the debugger may set per hart.
pub const SOFTWARE_BREAKPOINTS: usize = 64;

/// `tdata1` fields (the `mcontrol`/`mcontrol6` layout for XLEN 64).
pub mod tdata1 {
    pub const TYPE_SHIFT: u32 = 60;
    /// Address/data match trigger of debug specification 0.13 (`mcontrol`).
    pub const TYPE_MCONTROL: u64 = 2;
    /// Address/data match trigger of debug specification 1.0 (`mcontrol6`).
    pub const TYPE_MCONTROL6: u64 = 6;
    /// The trigger exists but is disabled.
    pub const TYPE_DISABLED: u64 = 15;
    /// Only Debug Mode (the host debugger) may write this trigger.
    pub const DMODE: u64 = 1 << 59;
    pub const LOAD: u64 = 1 << 0;
    pub const STORE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    pub const U: u64 = 1 << 3;
    pub const S: u64 = 1 << 4;
    pub const M: u64 = 1 << 6;
    pub const MATCH_SHIFT: u32 = 7;
    pub const MATCH_MASK: u64 = 0xf << MATCH_SHIFT;
    pub const MATCH_EQUAL: u64 = 0;
    pub const MATCH_NAPOT: u64 = 1;
    pub const MATCH_GE: u64 = 2;
    pub const MATCH_LT: u64 = 3;
    pub const ACTION_SHIFT: u32 = 12;
    pub const ACTION_MASK: u64 = 0xf << ACTION_SHIFT;
    /// Action 0: raise a breakpoint exception.
    pub const ACTION_BREAKPOINT: u64 = 0;
    /// Action 1: enter Debug Mode (here: stop for the host debugger).
    pub const ACTION_DEBUG_MODE: u64 = 1;
    /// The value of a disabled trigger.
    pub const DISABLED: u64 = TYPE_DISABLED << TYPE_SHIFT;
}

/// `tcontrol` fields.
pub mod tcontrol {
    /// M-mode trigger enable: action-0 triggers fire in M-mode only while it is set.
    pub const MTE: u64 = 1 << 3;
    /// `mte` before the last trap into M-mode.
    pub const MPTE: u64 = 1 << 7;
}

/// `tinfo`: version 1 (debug specification 1.0) and the types each trigger supports (2, 6 and 15).
pub const TINFO_VALUE: u64 =
    (1 << 24) | (1 << tdata1::TYPE_MCONTROL) | (1 << tdata1::TYPE_MCONTROL6) | (1 << tdata1::TYPE_DISABLED);

/// Why an engine stopped for the host debugger ([`Exit::Debug`]). `hart.pc` is at the instruction, nothing of
/// which was performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebugStop {
    /// A software breakpoint ([`Triggers::insert_software_breakpoint`]) at `hart.pc`.
    SoftwareBreakpoint,
    /// A debugger execute trigger at `hart.pc`.
    HardwareBreakpoint { trigger: usize },
    /// A debugger load/store trigger: the instruction at `hart.pc` would access `addr`, the first byte that
    /// is both accessed and watched. `kind` is what the trigger watches (as it was inserted).
    Watchpoint { trigger: usize, addr: u64, kind: WatchKind },
}

/// The accesses a watchpoint stops at (gdb's `Z2`, `Z3`, `Z4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    Write,
    Read,
    Access,
}

/// What a debugger trigger matches (gdb's `Z1`, or a watchpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebuggerTrigger {
    Execute,
    Watch(WatchKind),
}

/// A data access, for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
    /// An AMO: both a load and a store.
    LoadStore,
}

impl Access {
    fn bits(self) -> u64 {
        match self {
            Access::Load => tdata1::LOAD,
            Access::Store => tdata1::STORE,
            Access::LoadStore => tdata1::LOAD | tdata1::STORE,
        }
    }
}

/// The mask bit of a privilege mode in [`Triggers`]' cached masks.
const fn mode_bit(privilege: Privilege) -> u8 {
    1 << privilege as u8
}

/// The trigger state of one hart, and the host debugger's breakpoints on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    tselect: usize,
    tdata1: [u64; TRIGGERS],
    tdata2: [u64; TRIGGERS],
    tcontrol: u64,
    /// The mode bits (`tdata1::S`, `tdata1::U`) the hart implements.
    modes: u64,
    breakpoints: heapless::Vec<u64, SOFTWARE_BREAKPOINTS>,
    /// Privilege modes (see [`mode_bit`]) in which an enabled action-0 trigger may fire.
    native_modes: u8,
    /// Privilege modes in which a debugger trigger or software breakpoint may fire.
    debugger_modes: u8,
}

impl Triggers {
    /// Disabled triggers for a hart with supervisor and/or user mode.
    pub fn new(supervisor: bool, user: bool) -> Self {
        let modes = tdata1::M | if supervisor { tdata1::S } else { 0 } | if user { tdata1::U } else { 0 };
        Self {
            tselect: 0,
            tdata1: [tdata1::DISABLED; TRIGGERS],
            tdata2: [0; TRIGGERS],
            tcontrol: 0,
            modes,
            breakpoints: heapless::Vec::new(),
            native_modes: 0,
            debugger_modes: 0,
        }
    }

    /// The guest's reset: its triggers are disabled and `tselect`/`tcontrol` cleared. The debugger's triggers and
    /// software breakpoints survive (a debugger expects its breakpoints to hold across a guest reboot).
    pub fn reset(&mut self) {
        self.tselect = 0;
        self.tcontrol = 0;
        for index in 0..TRIGGERS {
            if self.tdata1[index] & tdata1::DMODE == 0 {
                self.tdata1[index] = tdata1::DISABLED;
                self.tdata2[index] = 0;
            }
        }
        self.update_masks();
    }

    /// Whether anything may fire in `privilege`: the engines' one check, a load and a test when nothing is armed.
    #[inline(always)]
    pub fn armed(&self, privilege: Privilege) -> bool {
        let bit = mode_bit(privilege);
        self.debugger_modes & bit != 0
            || (self.native_modes & bit != 0 && (privilege != Privilege::Machine || self.tcontrol & tcontrol::MTE != 0))
    }

    /// Whether only execute matches (software breakpoints, execute triggers) may fire in `privilege`: no load or
    /// store trigger is armed there, so an engine may run straight-line code that holds no armed address.
    pub fn only_execute_armed(&self, privilege: Privilege) -> bool {
        let mode = mode_flag(privilege);
        let native_enabled = privilege != Privilege::Machine || self.tcontrol & tcontrol::MTE != 0;
        self.tdata1.iter().all(|&control| {
            !is_address_trigger(control)
                || control & (tdata1::LOAD | tdata1::STORE) == 0
                || control & mode == 0
                || !fires(control, native_enabled)
        })
    }

    /// Whether an instruction starting anywhere in `[start, start + len)` could stop at a software breakpoint
    /// or an execute trigger in `privilege` (conservative: it may say yes for an address that holds no
    /// instruction start).
    pub fn execute_armed_in(&self, start: u64, len: u64, privilege: Privilege) -> bool {
        let len = len.max(1);
        let last = start.saturating_add(len - 1);
        if self.debugger_modes & mode_bit(privilege) != 0
            && self.breakpoints.iter().any(|&pc| pc >= start && pc <= last)
        {
            return true;
        }
        let mode = mode_flag(privilege);
        let native_enabled = privilege != Privilege::Machine || self.tcontrol & tcontrol::MTE != 0;
        (0..TRIGGERS).any(|index| {
            let control = self.tdata1[index];
            is_address_trigger(control)
                && control & tdata1::EXECUTE != 0
                && control & mode != 0
                && fires(control, native_enabled)
                && range_matches(control, self.tdata2[index], start, last)
        })
    }

    /// The exit for the instruction at `pc` about to execute in `privilege`, if a software breakpoint or an
    /// execute trigger matches it. Call only when [`armed`](Self::armed).
    pub fn check_execute(&self, pc: u64, privilege: Privilege) -> Option<Exit> {
        if self.debugger_modes & mode_bit(privilege) != 0 && self.breakpoints.contains(&pc) {
            return Some(Exit::Debug(DebugStop::SoftwareBreakpoint));
        }
        self.check(pc, 1, tdata1::EXECUTE, privilege)
    }

    /// The exit for a data access of `size` bytes at virtual address `addr` in `privilege`, if a load/store
    /// trigger matches it (before anything of the access happens). Call only when [`armed`](Self::armed).
    pub fn check_access(&self, addr: u64, size: u64, access: Access, privilege: Privilege) -> Option<Exit> {
        self.check(addr, size, access.bits(), privilege)
    }

    /// The first trigger of `kind` (execute, load or store bits) matching `[addr, addr + size)`: a debugger
    /// trigger before a native one (entering Debug Mode has priority over a breakpoint exception).
    fn check(&self, addr: u64, size: u64, kind: u64, privilege: Privilege) -> Option<Exit> {
        let mode = mode_flag(privilege);
        let native_enabled = privilege != Privilege::Machine || self.tcontrol & tcontrol::MTE != 0;
        let mut native = None;
        for index in 0..TRIGGERS {
            let control = self.tdata1[index];
            if !is_address_trigger(control) || control & kind == 0 || control & mode == 0 {
                continue;
            }
            let debugger = control & tdata1::DMODE != 0 && action(control) == tdata1::ACTION_DEBUG_MODE;
            if !debugger && (action(control) != tdata1::ACTION_BREAKPOINT || !native_enabled || native.is_some()) {
                continue;
            }
            let Some(hit) = first_match(control, self.tdata2[index], addr, size) else { continue };
            if !debugger {
                native = Some(hit);
                continue;
            }
            let stop = if kind == tdata1::EXECUTE {
                DebugStop::HardwareBreakpoint { trigger: index }
            } else {
                DebugStop::Watchpoint { trigger: index, addr: hit, kind: watch_kind(control) }
            };
            return Some(Exit::Debug(stop));
        }
        // `tval` is the matching address: the pc, or the accessed (virtual) address.
        native.map(|_| Exit::Exception { cause: Exception::Breakpoint, tval: addr })
    }

    /// Reads trigger CSR `number` (`tselect`, `tdata1..3`, `tinfo`, `tcontrol`); `None` for any other number.
    pub fn read_csr(&self, number: u16) -> Option<u64> {
        use crate::isa::csr::*;
        let index = self.tselect.min(TRIGGERS - 1);
        Some(match number {
            TSELECT => self.tselect as u64,
            TDATA1 => self.tdata1[index],
            TDATA2 => self.tdata2[index],
            TDATA3 => 0,
            TINFO => TINFO_VALUE,
            TCONTROL => self.tcontrol,
            _ => return None,
        })
    }

    /// Writes trigger CSR `number` as M-mode does, applying the WARL rules; `None` for any other number. Writes
    /// to the `tdata` registers of a trigger with `dmode` set are ignored.
    pub fn write_csr(&mut self, number: u16, value: u64) -> Option<()> {
        use crate::isa::csr::*;
        let index = self.tselect.min(TRIGGERS - 1);
        let owned_by_debugger = self.tdata1[index] & tdata1::DMODE != 0;
        match number {
            // An index past the last trigger is not kept, so a guest finds the count by writing and reading back.
            TSELECT => {
                if value < TRIGGERS as u64 {
                    self.tselect = value as usize;
                }
            }
            TDATA1 if !owned_by_debugger => {
                self.tdata1[index] = self.legalize(value);
                self.update_masks();
            }
            TDATA2 if !owned_by_debugger => self.tdata2[index] = value,
            TDATA1 | TDATA2 | TDATA3 | TINFO => {}
            TCONTROL => self.tcontrol = value & (tcontrol::MTE | tcontrol::MPTE),
            _ => return None,
        }
        Some(())
    }

    /// The legal `tdata1` value closest to `value` written from M-mode.
    fn legalize(&self, value: u64) -> u64 {
        let kind = value >> tdata1::TYPE_SHIFT;
        if kind != tdata1::TYPE_MCONTROL && kind != tdata1::TYPE_MCONTROL6 {
            return tdata1::DISABLED;
        }
        let matching = match (value & tdata1::MATCH_MASK) >> tdata1::MATCH_SHIFT {
            m @ (tdata1::MATCH_EQUAL | tdata1::MATCH_NAPOT | tdata1::MATCH_GE | tdata1::MATCH_LT) => m,
            _ => tdata1::MATCH_EQUAL,
        };
        // `dmode` is writable from Debug Mode only, and action 1 needs it: both read back 0, as every other
        // action does.
        (kind << tdata1::TYPE_SHIFT)
            | (matching << tdata1::MATCH_SHIFT)
            | (value & self.modes)
            | (value & (tdata1::LOAD | tdata1::STORE | tdata1::EXECUTE))
    }

    /// `mte`/`mpte` on a trap into M-mode.
    pub fn trap_to_machine(&mut self) {
        let mte = self.tcontrol & tcontrol::MTE != 0;
        self.tcontrol = if mte { tcontrol::MPTE } else { 0 };
    }

    /// `mte`/`mpte` on `mret`.
    pub fn mret(&mut self) {
        if self.tcontrol & tcontrol::MPTE != 0 {
            self.tcontrol |= tcontrol::MTE;
        } else {
            self.tcontrol &= !tcontrol::MTE;
        }
    }

    /// `tcontrol`, for the debugger.
    pub fn tcontrol(&self) -> u64 {
        self.tcontrol
    }

    /// Trigger `index`'s `tdata1` and `tdata2`, for the debugger (`None` past the last trigger).
    pub fn trigger(&self, index: usize) -> Option<(u64, u64)> {
        Some((*self.tdata1.get(index)?, *self.tdata2.get(index)?))
    }

    /// Writes the guest's trigger state for a snapshot: `tselect`, each trigger's `tdata1` and `tdata2`,
    /// `tcontrol`. The host debugger's triggers (`dmode`) and software breakpoints are the debugger's, not the
    /// machine's: they are written as disabled triggers.
    pub fn save_state(&self, out: &mut crate::snapshot::Writer) {
        out.u64(self.tselect as u64);
        for index in 0..TRIGGERS {
            let guest = self.tdata1[index] & tdata1::DMODE == 0;
            out.u64(if guest { self.tdata1[index] } else { tdata1::DISABLED });
            out.u64(if guest { self.tdata2[index] } else { 0 });
        }
        out.u64(self.tcontrol);
    }

    /// Reads what [`save_state`](Self::save_state) wrote, refusing any value a guest could not have written;
    /// under [`LoadMode::Apply`](crate::snapshot::LoadMode) replaces the triggers (the debugger's included:
    /// a restored machine starts with no debugger triggers) and keeps the software breakpoints.
    pub fn load_state(
        &mut self,
        input: &mut crate::snapshot::Reader,
        mode: crate::snapshot::LoadMode,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        let tselect = input.u64()?;
        if tselect >= TRIGGERS as u64 {
            return Err(input.invalid("tselect past the last trigger"));
        }
        let (mut data1, mut data2) = ([0u64; TRIGGERS], [0u64; TRIGGERS]);
        for index in 0..TRIGGERS {
            data1[index] = input.u64()?;
            data2[index] = input.u64()?;
            if self.legalize(data1[index]) != data1[index] {
                return Err(input.invalid("a tdata1 value no guest write produces"));
            }
        }
        let control = input.u64()?;
        if control & !(tcontrol::MTE | tcontrol::MPTE) != 0 {
            return Err(input.invalid("tcontrol bits that do not exist"));
        }
        if mode.apply() {
            self.tselect = tselect as usize;
            self.tdata1 = data1;
            self.tdata2 = data2;
            self.tcontrol = control;
            self.update_masks();
        }
        Ok(())
    }

    /// Recomputes the cached masks [`armed`](Self::armed) tests.
    fn update_masks(&mut self) {
        let mut native = 0;
        let mut debugger = if self.breakpoints.is_empty() { 0 } else { u8::MAX };
        for &control in &self.tdata1 {
            if !is_address_trigger(control) || control & (tdata1::LOAD | tdata1::STORE | tdata1::EXECUTE) == 0 {
                continue;
            }
            let mut modes = 0;
            for (bit, privilege) in
                [(tdata1::U, Privilege::User), (tdata1::S, Privilege::Supervisor), (tdata1::M, Privilege::Machine)]
            {
                if control & bit != 0 {
                    modes |= mode_bit(privilege);
                }
            }
            match (control & tdata1::DMODE != 0, action(control)) {
                (true, tdata1::ACTION_DEBUG_MODE) => debugger |= modes,
                (_, tdata1::ACTION_BREAKPOINT) => native |= modes,
                _ => {}
            }
        }
        self.native_modes = native;
        self.debugger_modes = debugger;
    }

    // The host debugger's interface.

    /// Sets a software breakpoint at virtual address `pc`, invisible to the guest (its memory is untouched):
    /// the hart stops with [`DebugStop::SoftwareBreakpoint`] before executing the instruction at `pc`, in any
    /// mode. True when it is set (or already was); false when the table is full.
    pub fn insert_software_breakpoint(&mut self, pc: u64) -> bool {
        if self.breakpoints.contains(&pc) {
            return true;
        }
        let inserted = self.breakpoints.push(pc).is_ok();
        self.update_masks();
        inserted
    }

    /// Removes the software breakpoint at `pc`; false when there was none.
    pub fn remove_software_breakpoint(&mut self, pc: u64) -> bool {
        let Some(position) = self.breakpoints.iter().position(|&at| at == pc) else { return false };
        self.breakpoints.swap_remove(position);
        self.update_masks();
        true
    }

    /// The software breakpoints set.
    pub fn software_breakpoints(&self) -> &[u64] {
        &self.breakpoints
    }

    /// Programs a free trigger (one that is disabled or matches nothing, and not the debugger's) for the debugger:
    /// `dmode` = 1, action 1 (stop with [`Exit::Debug`]), type 6, all modes. An execute trigger matches the
    /// instruction at `addr` (`len` is ignored); a watchpoint matches any access touching `[addr, addr + len)`,
    /// which must be one byte or a naturally aligned power of two (NAPOT). Returns the trigger's index, or
    /// `None` when no trigger is free or the range cannot be expressed.
    pub fn insert_debugger_trigger(&mut self, kind: DebuggerTrigger, addr: u64, len: u64) -> Option<usize> {
        let (control, data) = debugger_trigger_value(kind, addr, len)?;
        let index = (0..TRIGGERS).find(|&index| {
            let control = self.tdata1[index];
            control & tdata1::DMODE == 0
                && (!is_address_trigger(control) || control & (tdata1::LOAD | tdata1::STORE | tdata1::EXECUTE) == 0)
        })?;
        self.tdata1[index] = control | self.modes;
        self.tdata2[index] = data;
        self.update_masks();
        Some(index)
    }

    /// Removes the debugger trigger [`insert_debugger_trigger`](Self::insert_debugger_trigger) programmed with
    /// the same arguments, which becomes disabled (and the guest's again); false when there is none.
    pub fn remove_debugger_trigger(&mut self, kind: DebuggerTrigger, addr: u64, len: u64) -> bool {
        let Some((control, data)) = debugger_trigger_value(kind, addr, len) else { return false };
        let control = control | self.modes;
        let Some(index) = (0..TRIGGERS).find(|&i| self.tdata1[i] == control && self.tdata2[i] == data) else {
            return false;
        };
        self.tdata1[index] = tdata1::DISABLED;
        self.tdata2[index] = 0;
        self.update_masks();
        true
    }

    /// Removes every software breakpoint and debugger trigger (the debugger detached).
    pub fn clear_debugger_state(&mut self) {
        self.breakpoints.clear();
        for index in 0..TRIGGERS {
            if self.tdata1[index] & tdata1::DMODE != 0 {
                self.tdata1[index] = tdata1::DISABLED;
                self.tdata2[index] = 0;
            }
        }
        self.update_masks();
    }
}

/// The `tdata1` mode bit of `privilege`.
const fn mode_flag(privilege: Privilege) -> u64 {
    match privilege {
        Privilege::User => tdata1::U,
        Privilege::Supervisor => tdata1::S,
        Privilege::Machine => tdata1::M,
    }
}

/// Whether a trigger with `control` may fire at all: a debugger trigger always, an action-0 one when native
/// triggers are enabled in the mode (`tcontrol.mte` in M-mode).
fn fires(control: u64, native_enabled: bool) -> bool {
    match (control & tdata1::DMODE != 0, action(control)) {
        (true, tdata1::ACTION_DEBUG_MODE) => true,
        (_, tdata1::ACTION_BREAKPOINT) => native_enabled,
        _ => false,
    }
}

/// Whether the trigger's `tdata2` matches any address of `[start, last]` (`last` >= `start`).
fn range_matches(control: u64, tdata2: u64, start: u64, last: u64) -> bool {
    match (control & tdata1::MATCH_MASK) >> tdata1::MATCH_SHIFT {
        tdata1::MATCH_EQUAL => tdata2 >= start && tdata2 <= last,
        tdata1::MATCH_NAPOT => {
            let ignored = tdata2.trailing_ones().saturating_add(1);
            let mask = if ignored >= 64 { 0 } else { u64::MAX << ignored };
            let (low, high) = (tdata2 & mask, (tdata2 & mask) | !mask);
            low <= last && high >= start
        }
        tdata1::MATCH_GE => last >= tdata2,
        tdata1::MATCH_LT => start < tdata2,
        _ => false,
    }
}

/// Whether `control` is an address-match trigger this module implements (type 2 or 6).
fn is_address_trigger(control: u64) -> bool {
    let kind = control >> tdata1::TYPE_SHIFT;
    kind == tdata1::TYPE_MCONTROL || kind == tdata1::TYPE_MCONTROL6
}

fn action(control: u64) -> u64 {
    (control & tdata1::ACTION_MASK) >> tdata1::ACTION_SHIFT
}

fn watch_kind(control: u64) -> WatchKind {
    match control & (tdata1::LOAD | tdata1::STORE) {
        tdata1::LOAD => WatchKind::Read,
        tdata1::STORE => WatchKind::Write,
        _ => WatchKind::Access,
    }
}

/// The first byte of `[addr, addr + size)` (addresses wrap) that the trigger's `tdata2` matches.
fn first_match(control: u64, tdata2: u64, addr: u64, size: u64) -> Option<u64> {
    let matching = (control & tdata1::MATCH_MASK) >> tdata1::MATCH_SHIFT;
    (0..size.clamp(1, 16)).map(|offset| addr.wrapping_add(offset)).find(|&byte| match matching {
        tdata1::MATCH_EQUAL => byte == tdata2,
        // The bits below the lowest 0 of tdata2, and that 0, are ignored.
        tdata1::MATCH_NAPOT => {
            let ignored = tdata2.trailing_ones().saturating_add(1);
            let mask = if ignored >= 64 { 0 } else { u64::MAX << ignored };
            byte & mask == tdata2 & mask
        }
        tdata1::MATCH_GE => byte >= tdata2,
        tdata1::MATCH_LT => byte < tdata2,
        _ => false,
    })
}

/// `tdata1` (without mode bits) and `tdata2` of a debugger trigger, `None` for a range no trigger expresses.
fn debugger_trigger_value(kind: DebuggerTrigger, addr: u64, len: u64) -> Option<(u64, u64)> {
    let base = (tdata1::TYPE_MCONTROL6 << tdata1::TYPE_SHIFT)
        | tdata1::DMODE
        | (tdata1::ACTION_DEBUG_MODE << tdata1::ACTION_SHIFT);
    let bits = match kind {
        DebuggerTrigger::Execute => return Some((base | tdata1::EXECUTE, addr)),
        DebuggerTrigger::Watch(WatchKind::Write) => tdata1::STORE,
        DebuggerTrigger::Watch(WatchKind::Read) => tdata1::LOAD,
        DebuggerTrigger::Watch(WatchKind::Access) => tdata1::LOAD | tdata1::STORE,
    };
    match len {
        1 => Some((base | bits | (tdata1::MATCH_EQUAL << tdata1::MATCH_SHIFT), addr)),
        2..=0x8000_0000_0000_0000 if len.is_power_of_two() && addr.is_multiple_of(len) => {
            Some((base | bits | (tdata1::MATCH_NAPOT << tdata1::MATCH_SHIFT), addr | (len / 2 - 1)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
