//! The device map: which device answers at which guest real address range.

use super::{MachineRequest, MmioDevice, MmioError};
use crate::mem::Ram;
use crate::snapshot::{LoadMode, Reader, SectionId, SnapshotError, Writer};

/// One device window.
struct Window<'a> {
    base: u64,
    size: u64,
    device: &'a mut dyn MmioDevice,
}

/// A fixed-capacity table of device windows, looked up by guest real address.
pub struct DeviceMap<'a, const CAPACITY: usize = 16> {
    windows: [Option<Window<'a>>; CAPACITY],
}

/// Why a device could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Every slot of the table is taken.
    Full,
    /// The window is empty, wraps around the address space, or overlaps a window already mapped.
    BadWindow { base: u64, size: u64 },
}

impl<'a, const CAPACITY: usize> Default for DeviceMap<'a, CAPACITY> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const CAPACITY: usize> DeviceMap<'a, CAPACITY> {
    pub fn new() -> Self {
        Self { windows: core::array::from_fn(|_| None) }
    }

    /// Maps `device` at `[base, base + size)`.
    pub fn map(&mut self, base: u64, size: u64, device: &'a mut dyn MmioDevice) -> Result<(), MapError> {
        let end = base.checked_add(size).filter(|_| size > 0).ok_or(MapError::BadWindow { base, size })?;
        let overlaps = self.windows.iter().flatten().any(|w| base < w.base + w.size && w.base < end);
        if overlaps {
            return Err(MapError::BadWindow { base, size });
        }
        let slot = self.windows.iter_mut().find(|w| w.is_none()).ok_or(MapError::Full)?;
        *slot = Some(Window { base, size, device });
        Ok(())
    }

    /// The device and offset for an access of `size` bytes at `addr`; the access must lie wholly in one window.
    fn find(&mut self, addr: u64, size: u8) -> Option<(&mut (dyn MmioDevice + 'a), u64)> {
        self.windows.iter_mut().flatten().find_map(|w| {
            let offset = addr.wrapping_sub(w.base);
            (offset < w.size && w.size - offset >= size as u64).then_some((&mut *w.device, offset))
        })
    }

    /// Reads from the device mapped at `addr`; an address no device answers is [`MmioError::Unsupported`].
    pub fn read(&mut self, addr: u64, size: u8) -> Result<u64, MmioError> {
        let (device, offset) = self.find(addr, size).ok_or(MmioError::Unsupported)?;
        device.read(offset, size)
    }

    /// Polls every mapped device (see [`MmioDevice::poll`]).
    pub fn poll(&mut self, now: u64, ram: &mut Ram) {
        for window in self.windows.iter_mut().flatten() {
            window.device.poll(now, ram);
        }
    }

    /// Writes to the device mapped at `addr` and collects the request the write raised, if any.
    pub fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<Option<MachineRequest>, MmioError> {
        let (device, offset) = self.find(addr, size).ok_or(MmioError::Unsupported)?;
        device.write(offset, size, value)?;
        Ok(device.take_request())
    }
}

/// The section of the `index`th window's device in a snapshot.
const fn window_section(index: usize) -> SectionId {
    SectionId::new(*b"XDEV", index as u32)
}

impl<'a, const CAPACITY: usize> DeviceMap<'a, CAPACITY> {
    /// Writes every mapped window (base, size) and its device's state, each in a section of its own.
    pub fn save_state(&self, out: &mut Writer) -> Result<(), SnapshotError> {
        let count = self.windows.iter().flatten().count();
        out.u32(count as u32);
        for (index, window) in self.windows.iter().flatten().enumerate() {
            let section = window_section(index);
            out.section(section, |out| {
                out.u64(window.base);
                out.u64(window.size);
                window.device.save_state(out).map_err(|error| match error {
                    SnapshotError::Unsupported { .. } => SnapshotError::Unsupported { section },
                    other => other,
                })
            })?;
        }
        Ok(())
    }

    /// Reads what [`save_state`](Self::save_state) wrote into a map with the same windows.
    pub fn load_state(&mut self, input: &mut Reader, mode: LoadMode) -> Result<(), SnapshotError> {
        let count = input.count(CAPACITY, "more mapped devices than the map holds")?;
        if count != self.windows.iter().flatten().count() {
            return Err(input.mismatch("the number of mapped devices"));
        }
        for (index, window) in self.windows.iter_mut().flatten().enumerate() {
            input.read_section(window_section(index), |input| {
                if input.u64()? != window.base || input.u64()? != window.size {
                    return Err(input.mismatch("a mapped device's window"));
                }
                window.device.load_state(input, mode)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Register(u64);

    impl MmioDevice for Register {
        fn read(&mut self, offset: u64, _size: u8) -> Result<u64, MmioError> {
            if offset == 0 {
                Ok(self.0)
            } else {
                Err(MmioError::Unsupported)
            }
        }
        fn write(&mut self, offset: u64, _size: u8, value: u64) -> Result<(), MmioError> {
            if offset == 0 {
                self.0 = value;
                Ok(())
            } else {
                Err(MmioError::Unsupported)
            }
        }
    }

    #[test]
    fn accesses_route_by_window_and_unmapped_addresses_fail() {
        let (mut a, mut b) = (Register(1), Register(2));
        let mut map: DeviceMap<'_, 2> = DeviceMap::new();
        map.map(0x1000, 0x100, &mut a).unwrap();
        map.map(0x2000, 0x100, &mut b).unwrap();
        assert_eq!(map.read(0x2000, 4), Ok(2));
        assert_eq!(map.write(0x1000, 4, 9), Ok(None));
        assert_eq!(map.read(0x1000, 4), Ok(9));
        assert_eq!(map.read(0x3000, 4), Err(MmioError::Unsupported));
        assert_eq!(map.read(0x10fe, 4), Err(MmioError::Unsupported), "straddles the end of the window");
        assert_eq!(map.read(u64::MAX, 8), Err(MmioError::Unsupported));
    }

    #[test]
    fn overlapping_or_excess_windows_are_refused() {
        let (mut a, mut b, mut c) = (Register(0), Register(0), Register(0));
        let mut map: DeviceMap<'_, 1> = DeviceMap::new();
        map.map(0x1000, 0x100, &mut a).unwrap();
        assert_eq!(map.map(0x10ff, 1, &mut b), Err(MapError::BadWindow { base: 0x10ff, size: 1 }));
        assert_eq!(map.map(0x5000, 1, &mut c), Err(MapError::Full));
        let mut d = Register(0);
        let mut map: DeviceMap<'_, 1> = DeviceMap::new();
        assert!(map.map(u64::MAX, 2, &mut d).is_err());
    }
}
