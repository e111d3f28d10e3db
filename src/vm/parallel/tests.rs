use std::sync::Mutex;
use std::vec::Vec;

use super::*;
use crate::dev::clint::MTIMECMP;
use crate::dev::slots::CLINT;
use crate::dev::NullSerial;
use crate::hart::HartConfig;
use crate::isa::csr::interrupt;
use crate::mem::RAM_BASE;
use crate::vm::virt::VirtDevices;

#[derive(Default)]
struct Wakes(Mutex<Vec<usize>>);

impl HartWaker for Wakes {
    fn wake(&self, index: usize) {
        self.0.lock().unwrap().push(index);
    }
}

impl Wakes {
    fn take(&self) -> Vec<usize> {
        core::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn devices() -> VirtDevices<'static, NullSerial> {
    VirtDevices::new(NullSerial)
}

fn hart(id: u64) -> Hart {
    Hart::new(HartConfig::rv64gc(id))
}

#[test]
fn an_ipi_wakes_its_target_and_drives_only_its_lines() {
    let wakes = Wakes::default();
    let shared: SharedDevices<'_, _> = SharedDevices::new(devices(), 2, &wakes).unwrap();
    let mut backing = [0u8; 64];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (mut zero, mut one) = (shared.hart(0), shared.hart(1));
    let (mut hart0, mut hart1) = ([hart(0)], [hart(1)]);
    // Hart 0 sends hart 1 an IPI through the CLINT.
    zero.write(CLINT.base + 4, 4, 1, &mut ram).unwrap();
    assert_eq!(wakes.take(), [1], "only the IPI's target is woken");
    zero.update(10, &mut hart0, &mut ram);
    one.update(10, &mut hart1, &mut ram);
    assert_eq!(hart0[0].interrupt_lines & interrupt::MSI, 0);
    assert_ne!(hart1[0].interrupt_lines & interrupt::MSI, 0, "each view drives its own hart's lines");
    assert_eq!(wakes.take(), [], "an update that changes nothing wakes nobody");
    // Clearing it wakes nobody either: a lowered line is no reason to run.
    one.write(CLINT.base + 4, 4, 0, &mut ram).unwrap();
    assert_eq!(wakes.take(), []);
}

#[test]
fn a_nearer_timer_wakes_every_hart_and_time_never_goes_back() {
    let wakes = Wakes::default();
    let shared: SharedDevices<'_, _> = SharedDevices::new(devices(), 2, &wakes).unwrap();
    let mut backing = [0u8; 64];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    let (mut zero, mut one) = (shared.hart(0), shared.hart(1));
    let (mut hart0, mut hart1) = ([hart(0)], [hart(1)]);
    zero.update(1_000, &mut hart0, &mut ram);
    // Hart 1's thread read its clock a little earlier but took the lock later.
    one.update(990, &mut hart1, &mut ram);
    assert_eq!(one.mtime(), 1_000, "time never goes back");
    wakes.take();
    // Hart 1 arms its timer: the parked hart 0 must recompute how long it may sleep.
    one.write(CLINT.base + MTIMECMP + 8, 8, 5_000, &mut ram).unwrap();
    assert_eq!(wakes.take(), [0, 1]);
    // A later deadline is no reason to wake anyone.
    zero.write(CLINT.base + MTIMECMP, 8, 9_000, &mut ram).unwrap();
    assert_eq!(wakes.take(), []);
    // Time passing hart 1's deadline raises its timer line, whoever's thread brought time there; it wakes
    // nobody, since a parked hart sleeps no longer than the machine's next deadline.
    zero.update_time(6_000, &mut hart0);
    assert_eq!(wakes.take(), []);
    one.update_time(6_000, &mut hart1);
    assert_ne!(hart1[0].interrupt_lines & interrupt::MTI, 0);
    assert_eq!(hart0[0].interrupt_lines & interrupt::MTI, 0);
    assert_eq!(zero.hart_lines(0).map(|lines| lines.raised & interrupt::MTI), Some(0));
    assert_eq!(one.hart_lines(0).map(|lines| lines.raised & interrupt::MTI), Some(interrupt::MTI));
    assert_eq!(one.hart_lines(1), None, "a view has one hart");
}

#[test]
fn refuses_devices_that_cannot_drive_one_hart() {
    struct Lineless;
    impl Devices for Lineless {
        fn read(&mut self, _: u64, _: u8, _: &mut Ram) -> Result<u64, MmioError> {
            Err(MmioError::Unsupported)
        }
        fn write(&mut self, _: u64, _: u8, _: u64, _: &mut Ram) -> Result<Option<MachineRequest>, MmioError> {
            Err(MmioError::Unsupported)
        }
        fn update(&mut self, _: u64, _: &mut [Hart], _: &mut Ram) {}
        fn update_time(&mut self, _: u64, _: &mut [Hart]) {}
        fn mtime(&self) -> u64 {
            0
        }
        fn ticks_until_deadline(&self) -> Option<u64> {
            None
        }
    }
    let wakes = Wakes::default();
    let refused = SharedDevices::<_, Spin>::new(Lineless, 2, &wakes).err();
    assert_eq!(refused, Some(ParallelError::LinesNotPerHart));
    let refused = SharedDevices::<_, Spin>::new(devices(), MAX_HARTS + 1, &wakes).err();
    assert_eq!(refused, Some(ParallelError::HartCount(MAX_HARTS + 1)));
}

#[test]
fn an_embedders_look_at_the_devices_wakes_the_harts_it_raised() {
    let wakes = Wakes::default();
    let shared: SharedDevices<'_, _> = SharedDevices::new(devices(), 2, &wakes).unwrap();
    let mut backing = [0u8; 64];
    let mut ram = Ram::new(RAM_BASE, &mut backing);
    // A look that changes nothing wakes nobody, and answers what the action answered.
    assert_eq!(shared.with_devices(|devices| devices.mtime()), 0);
    assert_eq!(wakes.take(), []);
    // One that raises hart 1's software interrupt (as a host's own device work might) wakes hart 1 alone.
    shared.with_devices(|devices| devices.write(CLINT.base + 4, 4, 1, &mut ram)).unwrap();
    assert_eq!(wakes.take(), [1]);
}
