//! virtio-blk behind the MMIO transport, driven by a hostile driver: random register writes, descriptor
//! chains and request headers over a small guest RAM. Checks: nothing outside guest RAM changes, the backend is
//! only asked for whole sectors inside the disk (and never to write a read-only disk), and the used ring stays
//! bounded by what the driver made available.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::dev::virtio::blk::{F_FLUSH, F_RO, F_SEG_MAX, SECTOR_SIZE};
use trapeze::dev::virtio::{BlockBackend, BlockError, VirtioBlk, VirtioMmio};
use trapeze_fuzz::virtio::{Driver, Memory};
use trapeze_fuzz::Input;

const SECTORS: u64 = 16;

struct Disk {
    data: Vec<u8>,
    read_only: bool,
    calls: u64,
}

impl Disk {
    fn check(&mut self, sector: u64, len: usize) -> std::ops::Range<usize> {
        self.calls += 1;
        assert!(len > 0 && len.is_multiple_of(SECTOR_SIZE), "the device asked for {len} bytes");
        let end = sector.checked_add((len / SECTOR_SIZE) as u64).expect("sector range overflows");
        assert!(end <= SECTORS, "the device asked for sectors {sector}..{end} of {SECTORS}");
        sector as usize * SECTOR_SIZE..end as usize * SECTOR_SIZE
    }
}

impl BlockBackend for Disk {
    fn capacity_sectors(&self) -> u64 {
        SECTORS
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let range = self.check(sector, buf.len());
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        assert!(!self.read_only, "a write reached a read-only backend");
        let range = self.check(sector, buf.len());
        self.data[range].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.calls += 1;
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let read_only = input.one_in(8);
    let features = match input.u8() % 4 {
        0 => input.u64(),
        _ => F_FLUSH | F_SEG_MAX | if read_only { F_RO } else { 0 },
    };
    let disk = Disk { data: vec![0; SECTORS as usize * SECTOR_SIZE], read_only, calls: 0 };
    let mut dev = VirtioMmio::new(VirtioBlk::with_serial(disk, b"fuzz-disk"));
    let mut memory = Memory::default();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram, 1, features);
    let mut steps = 0;
    while steps < 200 && driver.step(&mut dev, &mut ram, &mut input) {
        steps += 1;
        driver.check(&dev, &ram);
    }
    // The backend is called only while requests are served: a bounded number of calls per step.
    let calls = dev.device().backend().calls;
    assert!(calls <= 64 * (steps + 1), "{calls} backend calls in {steps} steps");
    memory.assert_guards_intact();
});
