//! Code caching of hot trap sites: when the native engine should stop switching worlds for each trap at a guest
//! site and run the code around it emulated, from an emulation engine's code cache, in the VMM.
//!
//! Each trap out of native execution (a privileged instruction, a patched critical one, a device access, an
//! environment call) costs a world switch, microseconds on a real or emulated CPU. Where one site traps again and
//! again (a loop reading `time`, a kernel toggling `sstatus.SIE` around a short critical section, a trap entry and
//! its `sret`), the instructions between the traps are few: running them in the VMM with the threaded engine
//! (`exec::threaded`, whose fixed-size code cache keeps the decoded blocks, chains them and drops them when their
//! page is written) serves consecutive traps without any world switch. Execution returns to the real CPU once
//! the emulated run goes a quiet stretch without an exit ([`QUIET_RUN`], doubling with each exit served).
//!
//! [`TrapSites`] is the policy, portable and host-tested: a small direct-mapped table of trap counts per guest
//! virtual pc, aged so that only sites trapping *often* become hot, and the state of the current excursion (the
//! emulated run that a hot site starts). An excursion that served no further trap was wasted (the site traps
//! rarely after all): its site must earn hotness again, and each wasted excursion in a row doubles what it must
//! earn ([`BACKOFF_MAX`]). The board's engine does the running.
//!
//! It must never decide anything a guest can observe: an excursion runs the guest's instructions with the same
//! semantics (the same dispatcher serves its exits), so only timing and the VMM's statistics tell the modes apart.

/// Traps counted at one site (within the ageing window) before it is hot.
pub const HOT_AFTER: u16 = 4;
/// Each wasted excursion in a row doubles the traps a site needs before the next one, up to `HOT_AFTER` times
/// 2 to this power: a site whose next trap is always far away (a kernel's `sfence.vma` in a loop of a few
/// hundred instructions) stops paying for an emulated quiet run at every fourth trap.
pub const BACKOFF_MAX: u8 = 6;
/// Instructions an excursion first runs without an exit before execution goes back to the real CPU. Each exit
/// it serves doubles the stretch it may run quietly, up to [`QUIET_RUN_MAX`]: a burst of traps (a trap entry and
/// return, a loop around a counter read) stays in the VMM, while code that traps once in a while goes back to the
/// real CPU after a few instructions, since emulating an instruction costs a sizeable fraction of a world switch
/// (on the native board under QEMU, a world switch is worth a few dozen emulated instructions).
pub const QUIET_RUN: u64 = 16;
/// The longest quiet stretch an excursion may run.
pub const QUIET_RUN_MAX: u64 = 256;
/// Exits noted between two halvings of every count.
const AGE_EVERY: u32 = 4096;

/// What the trap-site policy did, for the VMM's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SiteStats {
    /// Excursions started (each at a hot site).
    pub excursions: u64,
    /// Exits served during excursions: each one a world switch saved.
    pub exits_in_excursions: u64,
    /// Instructions emulated in excursions.
    pub emulated: u64,
    /// Excursions that served no exit (the site was demoted).
    pub wasted: u64,
}

/// Trap counts per guest site in `SLOTS` direct-mapped slots (a power of two), and the current excursion.
pub struct TrapSites<const SLOTS: usize> {
    pcs: [u64; SLOTS],
    counts: [u16; SLOTS],
    /// Wasted excursions in a row per slot: the site needs `HOT_AFTER << backoff` traps to be hot.
    backoff: [u8; SLOTS],
    noted: u32,
    /// The current excursion, if any.
    excursion: Option<Excursion>,
    pub stats: SiteStats,
}

impl<const SLOTS: usize> Default for TrapSites<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// An excursion under way: the slot of the site that started it, the exits it has served, and how many
/// instructions it may run without one before it ends.
#[derive(Clone, Copy)]
struct Excursion {
    slot: usize,
    served: u64,
    quiet_limit: u64,
}

/// How an excursion's emulated run ended, as [`TrapSites::after_emulated_run`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// An exit for the dispatcher: the excursion goes on after it.
    Exit,
    /// The run spent the instructions it was given without an exit.
    Budget,
}

impl<const SLOTS: usize> TrapSites<SLOTS> {
    const CHECK: () = assert!(SLOTS.is_power_of_two(), "TrapSites: SLOTS must be a power of two");

    pub const fn new() -> Self {
        let () = Self::CHECK;
        Self {
            pcs: [u64::MAX; SLOTS],
            counts: [0; SLOTS],
            backoff: [0; SLOTS],
            noted: 0,
            excursion: None,
            stats: SiteStats { excursions: 0, exits_in_excursions: 0, emulated: 0, wasted: 0 },
        }
    }

    fn slot(pc: u64) -> usize {
        // Instructions are at least 2 bytes apart; fold in higher bits so sites a page apart do not collide.
        ((pc >> 1) ^ (pc >> 13)) as usize & (SLOTS - 1)
    }

    /// Whether an excursion is under way: the next run is emulated.
    pub fn in_excursion(&self) -> bool {
        self.excursion.is_some()
    }

    /// A trap out of native execution at guest virtual `pc`: counts it, and starts an excursion when the site is
    /// hot (the run after the dispatcher serves this exit is then emulated).
    pub fn note_native_exit(&mut self, pc: u64) {
        self.noted += 1;
        if self.noted >= AGE_EVERY {
            self.noted = 0;
            for count in self.counts.iter_mut() {
                *count /= 2;
            }
        }
        let slot = Self::slot(pc);
        let (Some(site), Some(count), Some(backoff)) =
            (self.pcs.get_mut(slot), self.counts.get_mut(slot), self.backoff.get_mut(slot))
        else {
            return;
        };
        if *site != pc {
            *site = pc;
            *count = 0;
            *backoff = 0;
        }
        *count = count.saturating_add(1);
        if *count >= HOT_AFTER << *backoff {
            self.excursion = Some(Excursion { slot, served: 0, quiet_limit: QUIET_RUN });
            self.stats.excursions += 1;
        }
    }

    /// The instructions to give the next emulated run of the excursion out of `budget`: at most its quiet
    /// limit, so that a quiet stretch hands the hart back to the real CPU.
    pub fn excursion_budget(&self, budget: u64) -> u64 {
        budget.min(self.excursion.map_or(QUIET_RUN, |excursion| excursion.quiet_limit))
    }

    /// An excursion's emulated run, given `given` instructions, retired `retired`, served `served_inline` exits
    /// without leaving the emulation engine (CSR reads it answers itself) and ended as `end`. Returns whether
    /// execution goes back to the real CPU now (the run was quiet: its whole quiet limit without an exit), which
    /// ends the excursion.
    pub fn after_emulated_run(&mut self, given: u64, retired: u64, served_inline: u64, end: RunEnd) -> bool {
        self.stats.emulated += retired;
        let Some(excursion) = self.excursion.as_mut() else { return true };
        let served = served_inline + u64::from(end == RunEnd::Exit);
        if served > 0 {
            if excursion.served == 0 {
                if let Some(backoff) = self.backoff.get_mut(excursion.slot) {
                    *backoff = 0;
                }
            }
            excursion.served += served;
            excursion.quiet_limit = (excursion.quiet_limit * 2).min(QUIET_RUN_MAX);
            self.stats.exits_in_excursions += served;
            return false;
        }
        match end {
            RunEnd::Exit => false,
            RunEnd::Budget if given >= excursion.quiet_limit && retired >= given => {
                if excursion.served == 0 {
                    // Nothing gained: the site has to trap often again before the next excursion.
                    self.stats.wasted += 1;
                    if let Some(count) = self.counts.get_mut(excursion.slot) {
                        *count = 0;
                    }
                    if let Some(backoff) = self.backoff.get_mut(excursion.slot) {
                        *backoff = (*backoff + 1).min(BACKOFF_MAX);
                    }
                }
                self.excursion = None;
                true
            }
            // The caller's budget ran out first: the excursion goes on in the next run.
            RunEnd::Budget => false,
        }
    }

    /// Ends any excursion (the VMM changed something under it, or emulation is not possible now).
    pub fn end_excursion(&mut self) {
        self.excursion = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_becomes_hot_after_repeated_traps_and_a_quiet_run_ends_the_excursion() {
        let mut sites: TrapSites<64> = TrapSites::new();
        for _ in 0..HOT_AFTER - 1 {
            sites.note_native_exit(0x8000_1000);
            assert!(!sites.in_excursion());
        }
        sites.note_native_exit(0x8000_1000);
        assert!(sites.in_excursion(), "the eighth trap at one site starts an excursion");
        // Exits served: the excursion goes on, and may run twice as long quietly after each.
        assert_eq!(sites.excursion_budget(1_000_000), QUIET_RUN);
        for served in 1..=3 {
            let given = sites.excursion_budget(1_000_000);
            assert!(!sites.after_emulated_run(given, 3, 0, RunEnd::Exit));
            assert!(sites.in_excursion());
            assert_eq!(sites.excursion_budget(1_000_000), (QUIET_RUN << served).min(QUIET_RUN_MAX));
        }
        for _ in 0..10 {
            assert!(!sites.after_emulated_run(1, 1, 0, RunEnd::Exit));
        }
        assert_eq!(sites.excursion_budget(1_000_000), QUIET_RUN_MAX, "up to the longest quiet stretch");
        // A budget smaller than a quiet run does not prove quiet.
        assert!(!sites.after_emulated_run(10, 10, 0, RunEnd::Budget));
        assert!(sites.in_excursion());
        assert!(!sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 0, RunEnd::Budget), "not yet the quiet limit");
        assert!(sites.after_emulated_run(QUIET_RUN_MAX, QUIET_RUN_MAX, 0, RunEnd::Budget), "quiet: back to native");
        assert!(!sites.in_excursion());
        assert_eq!(
            sites.stats,
            SiteStats {
                excursions: 1,
                exits_in_excursions: 13,
                emulated: 9 + 10 + 10 + QUIET_RUN + QUIET_RUN_MAX,
                wasted: 0
            }
        );
        // Still hot: the next trap there starts another excursion at once.
        sites.note_native_exit(0x8000_1000);
        assert!(sites.in_excursion());
    }

    #[test]
    fn exits_served_inside_the_emulation_engine_keep_the_excursion_going() {
        let mut sites: TrapSites<64> = TrapSites::new();
        for _ in 0..HOT_AFTER {
            sites.note_native_exit(0x8000_5000);
        }
        // A run that spends its whole quiet limit but answered reads itself was not quiet.
        assert!(!sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 5, RunEnd::Budget));
        assert!(sites.in_excursion());
        assert_eq!(sites.excursion_budget(u64::MAX), 2 * QUIET_RUN);
        assert_eq!(sites.stats.exits_in_excursions, 5);
        // Then a truly quiet stretch ends it, and it was not wasted.
        assert!(sites.after_emulated_run(2 * QUIET_RUN, 2 * QUIET_RUN, 0, RunEnd::Budget));
        assert_eq!(sites.stats.wasted, 0);
    }

    #[test]
    fn a_wasted_excursion_demotes_its_site_and_other_sites_do_not_share_counts() {
        let mut sites: TrapSites<64> = TrapSites::new();
        for _ in 0..HOT_AFTER {
            sites.note_native_exit(0x8000_2000);
        }
        assert!(sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 0, RunEnd::Budget), "quiet at once: back to native");
        assert_eq!(sites.stats.wasted, 1);
        sites.note_native_exit(0x8000_2000);
        assert!(!sites.in_excursion(), "demoted: it must trap often again");
        // Alternating sites in different slots each count on their own.
        for _ in 0..HOT_AFTER - 1 {
            sites.note_native_exit(0x8000_3000);
            sites.note_native_exit(0x8000_3004);
        }
        assert!(!sites.in_excursion());
        sites.note_native_exit(0x8000_3004);
        assert!(sites.in_excursion());
    }

    /// Traps at `pc` until it starts an excursion; answers how many it took.
    fn traps_until_hot(sites: &mut TrapSites<64>, pc: u64) -> u32 {
        let mut traps = 0;
        while !sites.in_excursion() {
            sites.note_native_exit(pc);
            traps += 1;
            assert!(traps <= 10_000, "never hot");
        }
        traps
    }

    #[test]
    fn wasted_excursions_in_a_row_back_off_and_one_that_pays_restores_the_site() {
        let mut sites: TrapSites<64> = TrapSites::new();
        let pc = 0x8000_6000;
        for wasted in 0..BACKOFF_MAX + 3 {
            let expected = u32::from(HOT_AFTER) << wasted.min(BACKOFF_MAX);
            assert_eq!(traps_until_hot(&mut sites, pc), expected, "after {wasted} wasted excursions");
            assert!(sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 0, RunEnd::Budget), "wasted");
        }
        // An excursion that serves an exit pays: the site is hot again after HOT_AFTER traps.
        traps_until_hot(&mut sites, pc);
        assert!(!sites.after_emulated_run(QUIET_RUN, 5, 0, RunEnd::Exit));
        assert!(sites.after_emulated_run(2 * QUIET_RUN, 2 * QUIET_RUN, 0, RunEnd::Budget));
        sites.note_native_exit(pc);
        assert!(sites.in_excursion(), "still hot: its count stands");
        assert!(sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 0, RunEnd::Budget), "wasted once");
        assert_eq!(traps_until_hot(&mut sites, pc), u32::from(HOT_AFTER) << 1, "one wasted excursion in a row");
        // Another site taking the slot starts without the backoff.
        assert!(sites.after_emulated_run(QUIET_RUN, QUIET_RUN, 0, RunEnd::Budget));
        let slot = TrapSites::<64>::slot(pc);
        let other = (0x8000_7000u64..).step_by(2).find(|&o| TrapSites::<64>::slot(o) == slot).unwrap();
        assert_eq!(traps_until_hot(&mut sites, other), u32::from(HOT_AFTER));
    }

    #[test]
    fn rare_traps_age_out_before_they_make_a_site_hot() {
        let mut sites: TrapSites<64> = TrapSites::new();
        let target = 0x8000_4000;
        let mut other = 0x9000_0000u64;
        // One trap at the site per ageing window, among many distinct sites elsewhere (never in its slot, so
        // only ageing can keep its count down).
        for round in 0..4 * HOT_AFTER {
            sites.note_native_exit(target);
            let mut noted = 0;
            while noted < AGE_EVERY {
                other += 4;
                if TrapSites::<64>::slot(other) != TrapSites::<64>::slot(target) {
                    sites.note_native_exit(other);
                    noted += 1;
                }
            }
            assert!(!sites.in_excursion(), "round {round}");
        }
    }
}
