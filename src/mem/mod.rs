//! Guest memory: guest real RAM as a host byte slice, with every access bounds-checked.
//!
//! The three levels of page-map tables live in the submodules: [`sv39`] walks the guest's tables (guest virtual ->
//! guest real), [`realmap`] is the VM's real map (guest real -> host), [`tlb`] caches their composition for the
//! emulation engines. This module never allocates on the access path and never lets a guest-supplied address index
//! outside the slice.

pub mod realmap;
pub mod sv39;
pub mod tlb;

pub mod mmu;
pub mod pmp;

/// Guest real address of the first byte of RAM on the QEMU `virt` machine.
pub const RAM_BASE: u64 = 0x8000_0000;

/// Guest real RAM: `bytes.len()` bytes lent by the host, seen by the guest at `[base, base + len)`.
pub struct Ram<'a> {
    base: u64,
    bytes: &'a mut [u8],
}

impl<'a> Ram<'a> {
    pub fn new(base: u64, bytes: &'a mut [u8]) -> Self {
        Self { base, bytes }
    }

    /// Guest real address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Offset into the host slice of `[addr, addr + len)`, or `None` when any byte lies outside RAM.
    #[inline(always)]
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<usize> {
        let offset = addr.wrapping_sub(self.base);
        // `offset <= size - len` also rejects addresses below `base` (they wrap to huge offsets).
        if len <= self.size() && offset <= self.size() - len {
            Some(offset as usize)
        } else {
            None
        }
    }

    /// The bytes `[addr, addr + len)`, or `None` when any lies outside RAM.
    pub fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let offset = self.offset_of(addr, len)?;
        self.bytes.get(offset..offset + len as usize)
    }

    /// The bytes `[addr, addr + len)` for writing, or `None` when any lies outside RAM.
    pub fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        let offset = self.offset_of(addr, len)?;
        self.bytes.get_mut(offset..offset + len as usize)
    }

    /// Little-endian load of `size` (1, 2, 4 or 8) bytes, zero-extended; any alignment.
    #[inline(always)]
    pub fn load(&self, addr: u64, size: u64) -> Option<u64> {
        let offset = self.offset_of(addr, size)?;
        let mut buf = [0u8; 8];
        let len = (size as usize).min(8);
        buf[..len].copy_from_slice(self.bytes.get(offset..offset + len)?);
        Some(u64::from_le_bytes(buf))
    }

    /// Little-endian store of the low `size` (1, 2, 4 or 8) bytes of `value`; any alignment.
    #[inline(always)]
    pub fn store(&mut self, addr: u64, size: u64, value: u64) -> Option<()> {
        let offset = self.offset_of(addr, size)?;
        let len = (size as usize).min(8);
        self.bytes.get_mut(offset..offset + len)?.copy_from_slice(&value.to_le_bytes()[..len]);
        Some(())
    }

    /// Little-endian load of `size` (1, 2, 4 or 8) bytes at `offset` into the slice: the host address a
    /// [`realmap::RealMap::for_ram`] extent or a [`tlb::SoftTlb`] hit yields. `None` when any byte lies outside.
    #[inline(always)]
    pub fn load_at_offset(&self, offset: u64, size: u64) -> Option<u64> {
        self.load(self.base.wrapping_add(offset), size)
    }

    /// Little-endian store of the low `size` (1, 2, 4 or 8) bytes of `value` at `offset` into the slice (see
    /// [`Ram::load_at_offset`]). `None` when any byte lies outside.
    #[inline(always)]
    pub fn store_at_offset(&mut self, offset: u64, size: u64, value: u64) -> Option<()> {
        self.store(self.base.wrapping_add(offset), size, value)
    }

    /// The whole RAM as a slice (for loaders and snapshots).
    pub fn as_slice(&self) -> &[u8] {
        self.bytes
    }

    /// The whole RAM as a mutable slice (for loaders and snapshots).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_ram_are_refused() {
        let mut backing = [0u8; 64];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        assert_eq!(ram.store(RAM_BASE + 60, 4, 0x1122_3344), Some(()));
        assert_eq!(ram.load(RAM_BASE + 60, 4), Some(0x1122_3344));
        assert_eq!(ram.load(RAM_BASE + 61, 4), None);
        assert_eq!(ram.load(RAM_BASE - 1, 1), None);
        assert_eq!(ram.load(u64::MAX, 8), None);
        assert_eq!(ram.store(RAM_BASE + 64, 1, 0), None);
        assert_eq!(ram.load(RAM_BASE + 61, 2), Some(0x2233), "misaligned loads read little-endian bytes");
    }
}
