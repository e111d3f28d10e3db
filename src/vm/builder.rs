//! [`VmBuilder`]: a [`Vm`] from RAM, devices and a clock, with QEMU `virt`'s defaults for everything else.
//!
//! What a host would otherwise write by hand for every VM: the harts (RV64GC, hart `i` with `mhartid` = `i`, all
//! reset to the entry point with QEMU's boot registers: `a0` = hart id, `a1` = devicetree, `a2` = `fw_dynamic`
//! info), the VMM as firmware or not, and the time source. It never allocates and never loads anything into
//! RAM: images and the devicetree are the host's business, placed before [`VmBuilder::build`].

use crate::hart::{Hart, HartConfig};
use crate::mem::{Ram, RAM_BASE};

use super::boot::Boot;
use super::machine::{Clock, Devices, TimeSource, Vm, VmError, MAX_HARTS};
use super::sbi::SbiShared;

/// Builds a [`Vm`]. Defaults: one RV64GC hart, entry at the start of RAM ([`RAM_BASE`]), boot registers zero,
/// the guest's own firmware in M-mode (no built-in SBI), time from the host's clock.
pub struct VmBuilder<'a, D: Devices> {
    ram: Ram<'a>,
    devices: D,
    clock: &'a mut dyn Clock,
    harts: usize,
    config: HartConfig,
    entry: u64,
    devicetree: u64,
    dynamic_info: u64,
    /// `Some(kernel entry)`: the VMM is the firmware and hart 0 enters S-mode there.
    builtin_sbi: Option<u64>,
    time_source: TimeSource,
    /// Build only this one of the machine's harts ([`VmBuilder::only_hart`]).
    only_hart: Option<usize>,
    /// The harts' shared SBI state, for a `Vm` of one hart with the VMM as firmware.
    shared_sbi: Option<&'a SbiShared<'a>>,
}

impl<'a, D: Devices> VmBuilder<'a, D> {
    /// A builder for a VM of `ram`, `devices` and `clock`, with the defaults above.
    pub fn new(ram: Ram<'a>, devices: D, clock: &'a mut dyn Clock) -> Self {
        Self {
            ram,
            devices,
            clock,
            harts: 1,
            config: HartConfig::rv64gc(0),
            entry: RAM_BASE,
            devicetree: 0,
            dynamic_info: 0,
            builtin_sbi: None,
            time_source: TimeSource::Host,
            only_hart: None,
            shared_sbi: None,
        }
    }

    /// The number of harts (1 to [`MAX_HARTS`]; anything else fails at [`build`](Self::build)).
    pub fn harts(mut self, count: usize) -> Self {
        self.harts = count;
        self
    }

    /// Every hart's configuration (its `hart_id` is replaced by the hart's index).
    pub fn hart_config(mut self, config: HartConfig) -> Self {
        self.config = config;
        self
    }

    /// Where every hart starts, in M-mode.
    pub fn entry(mut self, entry: u64) -> Self {
        self.entry = entry;
        self
    }

    /// The devicetree's and the `fw_dynamic` info block's guest addresses, passed in `a1` and `a2`.
    pub fn boot_registers(mut self, devicetree: u64, dynamic_info: u64) -> Self {
        self.devicetree = devicetree;
        self.dynamic_info = dynamic_info;
        self
    }

    /// The VMM is the firmware: hart 0 enters S-mode at `kernel` (see [`Vm::boot_with_builtin_sbi`]).
    pub fn builtin_sbi(mut self, kernel: u64) -> Self {
        self.builtin_sbi = Some(kernel);
        self
    }

    /// Where and how the VM starts, as [`super::boot::place_images`] answered: hart 0's entry, the devicetree in
    /// `a1`, and the VMM as firmware or not.
    pub fn boot(self, boot: &Boot) -> Self {
        let builder = self.entry(boot.entry).boot_registers(boot.devicetree, 0);
        if boot.builtin_sbi {
            builder.builtin_sbi(boot.entry)
        } else {
            builder
        }
    }

    /// Builds a `Vm` of hart `index` alone (with the id and boot registers it has among [`harts`](Self::harts)),
    /// for a runner that gives each hart a thread and a `Vm` of its own ([`super::parallel`]). With
    /// [`builtin_sbi`](Self::builtin_sbi) it needs [`shared_sbi`](Self::shared_sbi).
    pub fn only_hart(mut self, index: usize) -> Self {
        self.only_hart = Some(index);
        self
    }

    /// The SBI state the `Vm`s of one machine's harts share, one hart each ([`only_hart`](Self::only_hart)),
    /// with the VMM as firmware: made for [`harts`](Self::harts) harts with hart 0 started.
    pub fn shared_sbi(mut self, shared: &'a SbiShared<'a>) -> Self {
        self.shared_sbi = Some(shared);
        self
    }

    /// How guest time advances.
    pub fn time_source(mut self, source: TimeSource) -> Self {
        self.time_source = source;
        self
    }

    /// The VM, or why it cannot be built (a hart count outside 1 to [`MAX_HARTS`], RAM the real map cannot
    /// describe).
    pub fn build(self) -> Result<Vm<'a, D>, VmError> {
        if self.harts == 0 || self.harts > MAX_HARTS {
            return Err(VmError::HartCount(self.harts));
        }
        let (config, entry, devicetree, dynamic_info) = (self.config, self.entry, self.devicetree, self.dynamic_info);
        let ids = match self.only_hart {
            Some(index) if index >= self.harts => return Err(VmError::HartCount(index + 1)),
            Some(index) => index as u64..index as u64 + 1,
            None => 0..self.harts as u64,
        };
        let shared_sbi = match (self.only_hart, self.builtin_sbi, self.shared_sbi) {
            // The VMM's SBI (HSM, IPIs, remote fences) needs every hart in the one `Vm`, or a shared state.
            (Some(_), Some(_), None) => return Err(VmError::SbiNeedsEveryHart),
            (Some(index), Some(_), Some(shared)) if shared.harts() != self.harts => {
                return Err(VmError::HartCount(shared.harts().max(index + 1)))
            }
            (Some(index), Some(_), Some(shared)) => Some((shared, index)),
            _ => None,
        };
        let harts = ids.map(|id| {
            let mut hart = Hart::new(HartConfig { hart_id: id, ..config });
            hart.reset(entry);
            // QEMU's boot convention: a0 = hart id, a1 = devicetree, a2 = fw_dynamic info.
            hart.x[10] = id;
            hart.x[11] = devicetree;
            hart.x[12] = dynamic_info;
            hart
        });
        let mut vm = Vm::new(harts, self.ram, self.devices, self.clock)?;
        match (self.builtin_sbi, shared_sbi) {
            (Some(kernel), Some((shared, index))) => vm.boot_with_shared_sbi(shared, index, kernel, devicetree),
            (Some(kernel), None) => vm.boot_with_builtin_sbi(0, kernel, devicetree),
            (None, _) => {}
        }
        vm.set_time_source(self.time_source);
        if self.only_hart.is_some() {
            vm.share_clock();
        }
        Ok(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::NullSerial;
    use crate::hart::Privilege;
    use crate::vm::virt::VirtDevices;

    struct ZeroClock;
    impl Clock for ZeroClock {
        fn now(&mut self) -> u64 {
            0
        }
    }

    fn devices() -> VirtDevices<'static, NullSerial> {
        VirtDevices::new(NullSerial)
    }

    #[test]
    fn builds_harts_with_the_boot_registers() {
        let mut backing = [0u8; 0x4000];
        let mut clock = ZeroClock;
        let vm = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock)
            .harts(3)
            .entry(RAM_BASE + 0x100)
            .boot_registers(RAM_BASE + 0x3000, 7)
            .build()
            .expect("a valid VM");
        assert_eq!(vm.harts.len(), 3);
        for (id, hart) in vm.harts.iter().enumerate() {
            assert_eq!(hart.config.hart_id, id as u64);
            assert_eq!((hart.pc, hart.privilege), (RAM_BASE + 0x100, Privilege::Machine));
            assert_eq!((hart.x[10], hart.x[11], hart.x[12]), (id as u64, RAM_BASE + 0x3000, 7));
        }
        assert!(vm.sbi().is_none());
    }

    #[test]
    fn one_hart_of_several_keeps_the_machines_clock_when_time_is_hidden() {
        struct FixedClock;
        impl Clock for FixedClock {
            fn now(&mut self) -> u64 {
                1_000
            }
        }
        let time_after_hiding = |only_hart: Option<usize>| {
            let mut backing = [0u8; 0x4000];
            let mut clock = FixedClock;
            let builder = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock).harts(2);
            let builder = match only_hart {
                Some(index) => builder.only_hart(index),
                None => builder,
            };
            let mut vm = builder.build().expect("a valid VM");
            vm.hide_time(300);
            // The devices take the VM's time at the slice's start.
            let _ = vm.run_slice(&mut crate::exec::interp::Interpreter, 1);
            vm.time()
        };
        assert_eq!(time_after_hiding(None), 700, "a whole machine's time stands still for what is hidden");
        assert_eq!(time_after_hiding(Some(1)), 1_000, "one hart of several: the machine's one clock");
    }

    #[test]
    fn refuses_a_bad_hart_count_and_boots_the_builtin_sbi() {
        for count in [0, MAX_HARTS + 1] {
            let mut backing = [0u8; 0x1000];
            let mut clock = ZeroClock;
            let result = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock).harts(count).build();
            assert_eq!(result.err(), Some(VmError::HartCount(count)));
        }
        let mut backing = [0u8; 0x1000];
        let mut clock = ZeroClock;
        let vm = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock)
            .harts(2)
            .builtin_sbi(RAM_BASE + 0x200)
            .build()
            .expect("a valid VM");
        assert_eq!((vm.harts[0].pc, vm.harts[0].privilege), (RAM_BASE + 0x200, Privilege::Supervisor));
        assert!(vm.sbi().is_some());
    }

    #[test]
    fn boots_where_the_images_were_placed() {
        let mut backing = [0u8; 0x1000];
        let mut clock = ZeroClock;
        let boot = Boot { entry: RAM_BASE + 0x40, devicetree: RAM_BASE + 0x800, builtin_sbi: false };
        let vm = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock).boot(&boot).build().unwrap();
        assert_eq!((vm.harts[0].pc, vm.harts[0].x[11]), (RAM_BASE + 0x40, RAM_BASE + 0x800));
        assert_eq!(vm.harts[0].privilege, Privilege::Machine);
        assert!(vm.sbi().is_none());
        let mut backing = [0u8; 0x1000];
        let boot = Boot { builtin_sbi: true, ..boot };
        let vm = VmBuilder::new(Ram::new(RAM_BASE, &mut backing), devices(), &mut clock).boot(&boot).build().unwrap();
        assert_eq!((vm.harts[0].pc, vm.harts[0].privilege), (RAM_BASE + 0x40, Privilege::Supervisor));
        assert!(vm.sbi().is_some());
    }
}
