//! Physical memory protection: the hart's 16 PMP entries (`pmpcfg0`, `pmpcfg2`, `pmpaddr0..=15`) with their WARL
//! rules, and the check every S- and U-mode access (and M-mode access to a locked region) passes.
//!
//! The check never trusts a guest address range: an access must lie wholly inside the matching entry, and one
//! that straddles an entry's boundary fails, as the specification requires.

use crate::hart::Privilege;

/// Number of PMP entries implemented.
pub const ENTRIES: usize = 16;

/// The kind of access being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    Fetch,
    Load,
    /// Stores and AMOs.
    Store,
}

mod cfg {
    pub const R: u8 = 1 << 0;
    pub const W: u8 = 1 << 1;
    pub const X: u8 = 1 << 2;
    pub const A_SHIFT: u32 = 3;
    pub const A_MASK: u8 = 3 << A_SHIFT;
    pub const L: u8 = 1 << 7;
    pub const TOR: u8 = 1;
    pub const NA4: u8 = 2;
    pub const NAPOT: u8 = 3;
}

/// `pmpaddr` holds bits 55:2 of an address.
const ADDR_MASK: u64 = (1 << 54) - 1;

/// The PMP CSR state of one hart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pmp {
    config: [u8; ENTRIES],
    address: [u64; ENTRIES],
}

impl Pmp {
    /// Reads `pmpcfgN` (`n` = 0..=15); odd numbers do not exist on RV64, entries past 16 read zero.
    pub fn read_cfg(&self, n: usize) -> Option<u64> {
        if !n.is_multiple_of(2) || n >= 16 {
            return None;
        }
        let first = n * 4;
        Some((0..8).fold(0u64, |value, i| value | (self.config.get(first + i).copied().unwrap_or(0) as u64) << (8 * i)))
    }

    /// Writes `pmpcfgN`; locked entries keep their configuration.
    pub fn write_cfg(&mut self, n: usize, value: u64) -> Option<()> {
        if !n.is_multiple_of(2) || n >= 16 {
            return None;
        }
        for i in 0..8 {
            let Some(config) = self.config.get_mut(n * 4 + i) else { break };
            if *config & cfg::L != 0 {
                continue;
            }
            let mut new = (value >> (8 * i)) as u8 & (cfg::R | cfg::W | cfg::X | cfg::A_MASK | cfg::L);
            // R=0, W=1 is reserved: keep such an entry write-less.
            if new & (cfg::R | cfg::W) == cfg::W {
                new &= !cfg::W;
            }
            *config = new;
        }
        Some(())
    }

    /// Reads `pmpaddrN` (`n` = 0..=63); entries past 16 read zero.
    pub fn read_addr(&self, n: usize) -> Option<u64> {
        (n < 64).then(|| self.address.get(n).copied().unwrap_or(0))
    }

    /// Writes `pmpaddrN`; ignored when entry N is locked, or entry N+1 is a locked TOR entry.
    pub fn write_addr(&mut self, n: usize, value: u64) -> Option<()> {
        if n >= 64 {
            return None;
        }
        let locked = |i: usize| self.config.get(i).is_some_and(|c| c & cfg::L != 0);
        let next_is_locked_tor =
            self.config.get(n + 1).is_some_and(|c| c & cfg::L != 0 && (c & cfg::A_MASK) >> cfg::A_SHIFT == cfg::TOR);
        if !locked(n) && !next_is_locked_tor {
            if let Some(address) = self.address.get_mut(n) {
                *address = value & ADDR_MASK;
            }
        }
        Some(())
    }

    /// The raw configuration bytes and addresses of every entry (for snapshots).
    pub fn raw(&self) -> ([u8; ENTRIES], [u64; ENTRIES]) {
        (self.config, self.address)
    }

    /// PMP state from raw configuration bytes and addresses, `None` when any holds a value the WARL rules never
    /// let a write produce (reserved bits, R=0 with W=1, address bits above 55).
    pub fn from_raw(config: [u8; ENTRIES], address: [u64; ENTRIES]) -> Option<Self> {
        let legal_config =
            |c: u8| c & !(cfg::R | cfg::W | cfg::X | cfg::A_MASK | cfg::L) == 0 && c & (cfg::R | cfg::W) != cfg::W;
        (config.iter().all(|&c| legal_config(c)) && address.iter().all(|&a| a & !ADDR_MASK == 0))
            .then_some(Self { config, address })
    }

    /// The byte range `[start, end)` entry `i` covers, or `None` when it is off. `end` may be 2^64 (as u128).
    fn range(&self, i: usize) -> Option<(u128, u128)> {
        let config = *self.config.get(i)?;
        let address = *self.address.get(i)? as u128;
        match (config & cfg::A_MASK) >> cfg::A_SHIFT {
            cfg::TOR => {
                let start = if i == 0 { 0 } else { (*self.address.get(i - 1)? as u128) << 2 };
                Some((start, address << 2))
            }
            cfg::NA4 => Some((address << 2, (address << 2) + 4)),
            cfg::NAPOT => {
                let ones = (address as u64).trailing_ones();
                let size = 1u128 << (ones + 3);
                let start = (address & !((1u128 << ones) - 1)) << 2;
                Some((start, start + size))
            }
            _ => None,
        }
    }

    /// Whether an access of `size` bytes at `addr` in `privilege` (the effective privilege of the access) is
    /// allowed.
    pub fn allows(&self, addr: u64, size: u64, kind: AccessKind, privilege: Privilege) -> bool {
        let start = addr as u128;
        let end = start + size.max(1) as u128;
        for i in 0..ENTRIES {
            let Some((low, high)) = self.range(i) else { continue };
            let overlaps = start < high && low < end;
            if !overlaps {
                continue;
            }
            // The lowest-numbered entry matching any byte decides, and it must match every byte.
            if !(low <= start && end <= high) {
                return false;
            }
            let config = self.config[i];
            if privilege == Privilege::Machine && config & cfg::L == 0 {
                return true;
            }
            let needed = match kind {
                AccessKind::Fetch => cfg::X,
                AccessKind::Load => cfg::R,
                AccessKind::Store => cfg::W,
            };
            return config & needed != 0;
        }
        privilege == Privilege::Machine
    }

    /// True when no entry is locked, so M-mode accesses need no check at all.
    #[inline(always)]
    pub fn machine_unrestricted(&self) -> bool {
        // One test over all 16 configuration bytes: no L bit anywhere (on every access of M-mode).
        u128::from_le_bytes(self.config) & u128::from_le_bytes([cfg::L; ENTRIES]) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAPOT_RWX: u64 = (cfg::NAPOT << cfg::A_SHIFT | cfg::R | cfg::W | cfg::X) as u64;

    #[test]
    fn no_entry_means_supervisor_and_user_are_denied_and_machine_is_not() {
        let pmp = Pmp::default();
        assert!(!pmp.allows(0x8000_0000, 4, AccessKind::Load, Privilege::Supervisor));
        assert!(!pmp.allows(0x8000_0000, 4, AccessKind::Fetch, Privilege::User));
        assert!(pmp.allows(0x8000_0000, 4, AccessKind::Store, Privilege::Machine));
    }

    #[test]
    fn napot_all_ones_covers_the_whole_address_space() {
        let mut pmp = Pmp::default();
        pmp.write_addr(0, u64::MAX).unwrap();
        pmp.write_cfg(0, NAPOT_RWX).unwrap();
        assert!(pmp.allows(0, 8, AccessKind::Store, Privilege::User));
        assert!(pmp.allows((1 << 56) - 8, 8, AccessKind::Fetch, Privilege::Supervisor), "the top of the 56-bit space");
    }

    #[test]
    fn tor_and_na4_ranges_permissions_and_straddling_accesses() {
        let mut pmp = Pmp::default();
        // Entry 0: TOR [0, 0x8000_1000) read-only. Entry 1: NA4 at 0x8000_2000, read-write.
        pmp.write_addr(0, 0x8000_1000 >> 2).unwrap();
        pmp.write_addr(1, 0x8000_2000 >> 2).unwrap();
        let config =
            (cfg::TOR << cfg::A_SHIFT | cfg::R) as u64 | ((cfg::NA4 << cfg::A_SHIFT | cfg::R | cfg::W) as u64) << 8;
        pmp.write_cfg(0, config).unwrap();
        assert!(pmp.allows(0x8000_0ff8, 8, AccessKind::Load, Privilege::Supervisor));
        assert!(!pmp.allows(0x8000_0ff8, 8, AccessKind::Store, Privilege::Supervisor));
        assert!(!pmp.allows(0x8000_0ffc, 8, AccessKind::Load, Privilege::Supervisor), "straddles the TOR end");
        assert!(pmp.allows(0x8000_2000, 4, AccessKind::Store, Privilege::User));
        assert!(!pmp.allows(0x8000_2000, 8, AccessKind::Load, Privilege::User), "NA4 is four bytes");
        assert!(!pmp.allows(0x8000_2004, 4, AccessKind::Load, Privilege::User), "nothing matches there");
    }

    #[test]
    fn locked_entries_bind_machine_mode_and_ignore_writes() {
        let mut pmp = Pmp::default();
        pmp.write_addr(0, 0x1000 >> 2 | 0x1ff).unwrap(); // NAPOT 4 KiB at 0x1000
        pmp.write_cfg(0, (cfg::L | cfg::NAPOT << cfg::A_SHIFT | cfg::R) as u64).unwrap();
        assert!(!pmp.allows(0x1000, 4, AccessKind::Store, Privilege::Machine));
        assert!(pmp.allows(0x1000, 4, AccessKind::Load, Privilege::Machine));
        pmp.write_cfg(0, NAPOT_RWX).unwrap();
        pmp.write_addr(0, 0).unwrap();
        assert_eq!(pmp.read_cfg(0).unwrap() as u8 & cfg::W, 0, "locked configuration is unchanged");
        assert_eq!(pmp.read_addr(0), Some(0x1000 >> 2 | 0x1ff), "locked address is unchanged");
        assert!(!pmp.machine_unrestricted());
    }

    #[test]
    fn warl_rules_of_the_registers() {
        let mut pmp = Pmp::default();
        assert_eq!(pmp.read_cfg(1), None, "odd pmpcfg registers do not exist on RV64");
        pmp.write_cfg(0, 0x02).unwrap();
        assert_eq!(pmp.read_cfg(0), Some(0), "R=0 W=1 is reserved");
        pmp.write_addr(0, u64::MAX).unwrap();
        assert_eq!(pmp.read_addr(0), Some(ADDR_MASK));
        pmp.write_addr(40, 5).unwrap();
        assert_eq!(pmp.read_addr(40), Some(0), "entries past 16 are not implemented");
        assert_eq!(pmp.read_addr(64), None);
        pmp.write_cfg(2, u64::MAX).unwrap();
        assert_eq!(pmp.read_cfg(2), Some(0x9f9f_9f9f_9f9f_9f9f), "reserved bits 5 and 6 read zero");
        assert_eq!(pmp.read_cfg(4), Some(0));
    }
}
